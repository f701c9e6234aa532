//! Quotas: how many requests, or how many LLM tokens, a component or an
//! agent may use per window. Declared in a policy directory's
//! `quotas.toml`; counted in fixed windows aligned to the Unix epoch (a
//! `1h` window resets on the hour), in the memory of the process that
//! enforces them.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::{Caller, Interaction};

/// What a quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// Interactions allowed.
    Requests,
    /// LLM tokens used (prompt and completion), charged when a completion
    /// returns; a request is refused once the window's tokens are spent.
    Tokens,
}

/// Whose use a quota counts together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Per {
    /// Each component (an agent's turns count toward its component).
    Component,
    /// Each agent (calls made by no agent count per component).
    Agent,
    /// The whole host.
    Host,
}

/// One `[[quota]]` of `quotas.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Named in denials and audit events.
    pub id: String,
    /// Actions counted: `http.request`, `llm.complete`, … or a group
    /// (`http`, `file`, `kv`).
    pub actions: Vec<String>,
    /// Only these components (by name); all when absent.
    #[serde(default)]
    pub components: Option<Vec<String>>,
    /// Only these agents (by id); all callers when absent.
    #[serde(default)]
    pub agents: Option<Vec<String>>,
    /// Whose use is counted together (default `component`).
    #[serde(default = "default_per")]
    pub per: Per,
    /// What is counted (default `requests`).
    #[serde(default = "default_unit")]
    pub unit: Unit,
    /// How many per window.
    pub limit: u64,
    /// The window: `1m`, `1h`, `1day`, … (at least one second).
    #[serde(with = "humantime_serde_window")]
    pub window: Duration,
}

fn default_per() -> Per {
    Per::Component
}

fn default_unit() -> Unit {
    Unit::Requests
}

mod humantime_serde_window {
    use serde::Deserialize;
    use std::time::Duration;

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        let window = humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("window `{text}`: {e}")))?;
        if window < Duration::from_secs(1) {
            return Err(serde::de::Error::custom(format!(
                "window `{text}` is shorter than one second"
            )));
        }
        Ok(window)
    }
}

/// The actions an action name or group names.
pub(crate) const ACTIONS: &[&str] = &[
    "http",
    "http.request",
    "file",
    "file.read",
    "file.write",
    "kv",
    "kv.read",
    "kv.write",
    "llm.complete",
    "nn.load",
    "tool.call",
];

impl Quota {
    /// Whether this quota counts `interaction` made by `caller`.
    pub fn applies(&self, caller: &Caller, interaction: &Interaction) -> bool {
        let action = interaction.action();
        let named = self
            .actions
            .iter()
            .any(|a| a == action || Some(a.as_str()) == interaction.group());
        if !named {
            return false;
        }
        if self.unit == Unit::Tokens && !matches!(interaction, Interaction::Llm { .. }) {
            return false;
        }
        if let Some(c) = &self.components
            && !c.iter().any(|c| c == &caller.component)
        {
            return false;
        }
        if let Some(a) = &self.agents
            && !caller.agent.as_ref().is_some_and(|id| a.contains(id))
        {
            return false;
        }
        true
    }

    /// The key `caller`'s use is counted under.
    fn key(&self, caller: &Caller) -> String {
        match (self.per, &caller.agent) {
            (Per::Host, _) => String::new(),
            (Per::Agent, Some(a)) => format!("agent:{a}"),
            (Per::Agent, None) | (Per::Component, _) => format!("component:{}", caller.component),
        }
    }

    fn window_index(&self, now: SystemTime) -> u64 {
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        secs / self.window.as_secs().max(1)
    }

    fn resets_in(&self, now: SystemTime) -> Duration {
        let w = self.window.as_secs().max(1);
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        Duration::from_secs(w - secs % w)
    }
}

/// The use counted so far: per quota id and key, the window and its total.
#[derive(Debug, Default)]
pub(crate) struct Usage {
    counts: HashMap<(String, String), (u64, u64)>,
}

impl Usage {
    /// Refuses (with the reason) when a quota that applies is spent;
    /// otherwise counts the request against every request quota that
    /// applies.
    pub(crate) fn admit(
        &mut self,
        quotas: &[Quota],
        caller: &Caller,
        interaction: &Interaction,
        now: SystemTime,
    ) -> Result<(), (String, String)> {
        let applying: Vec<&Quota> = quotas
            .iter()
            .filter(|q| q.applies(caller, interaction))
            .collect();
        for q in &applying {
            let used = self.used(q, caller, now);
            if used >= q.limit {
                let unit = match q.unit {
                    Unit::Requests => "requests",
                    Unit::Tokens => "tokens",
                };
                return Err((
                    q.id.clone(),
                    format!(
                        "quota `{}` is spent: {used} of {} {unit} used in this {} window (it resets in {})",
                        q.id,
                        q.limit,
                        humantime::format_duration(q.window),
                        humantime::format_duration(q.resets_in(now)),
                    ),
                ));
            }
        }
        for q in applying.into_iter().filter(|q| q.unit == Unit::Requests) {
            self.add(q, caller, now, 1);
        }
        Ok(())
    }

    /// Charges `tokens` to every token quota that applies.
    pub(crate) fn charge(
        &mut self,
        quotas: &[Quota],
        caller: &Caller,
        interaction: &Interaction,
        now: SystemTime,
        tokens: u64,
    ) {
        for q in quotas
            .iter()
            .filter(|q| q.unit == Unit::Tokens && q.applies(caller, interaction))
        {
            self.add(q, caller, now, tokens);
        }
    }

    fn used(&self, q: &Quota, caller: &Caller, now: SystemTime) -> u64 {
        let window = q.window_index(now);
        match self.counts.get(&(q.id.clone(), q.key(caller))) {
            Some((w, n)) if *w == window => *n,
            _ => 0,
        }
    }

    fn add(&mut self, q: &Quota, caller: &Caller, now: SystemTime, n: u64) {
        let window = q.window_index(now);
        let entry = self
            .counts
            .entry((q.id.clone(), q.key(caller)))
            .or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        entry.1 = entry.1.saturating_add(n);
    }

    /// Forgets the use of quotas no longer declared.
    pub(crate) fn retain(&mut self, quotas: &[Quota]) {
        self.counts
            .retain(|(id, _), _| quotas.iter().any(|q| &q.id == id));
    }
}
