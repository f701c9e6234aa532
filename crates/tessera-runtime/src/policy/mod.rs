//! Boundary policies: what a component may do *now*, decided by Cedar
//! policies at every gateway decision, on top of its grants.
//!
//! Grants (the manifest) say what a component can reach at all; policies,
//! written by whoever runs the host, say which of those requests are
//! allowed, with the request itself as context — an HTTP request's method,
//! host, path, query and headers; a file's path and operation; a bucket
//! and key; an LLM's provider, model and token counts; a tool's name and
//! arguments; a model's name; the calling component, agent, plan and API
//! token. Reference: `docs/policies.md`.
//!
//! A capability asks [`crate::gateway::Gateway::authorize`] once its grant
//! check has passed; the gateway asks the [`PolicyEngine`] of its host.
//! Cedar permits only what a policy permits and a `forbid` overrides any
//! `permit`; on top of that this module fails closed: a policy that
//! cannot be evaluated for a request (an attribute missing, an overflow)
//! denies it, naming the policy and the error. Quotas (`quotas.toml`)
//! are checked after the policies. A denial reaches the guest as the
//! interface's ordinary error and is an audit event naming what decided.
//!
//! The policies of a directory are reloaded without a restart
//! ([`PolicyEngine::reload_if_changed`]); a reload that fails keeps the
//! policies in force.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use cedar_policy::{Authorizer, Decision as CedarDecision};
use serde::Serialize;

mod evaluator;
mod load;
pub mod quota;
mod request;

pub use load::{Policies, PolicyError, Problem, SCHEMA};
pub use quota::Quota;
pub use request::{Caller, Interaction};

/// The call-context key under which a caller names the API token a call
/// was made with (the server sets it; policies see it as `context.token`).
pub const TOKEN_CONTEXT: &str = "tessera.token";

/// A policy decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Whether the interaction may go ahead.
    pub allowed: bool,
    /// The policies (or the quota) that decided: for an allow, the
    /// permitting policies; for a denial, the forbidding policies, the
    /// policy that failed to evaluate, or the spent quota; empty when
    /// nothing permits the request.
    pub policies: Vec<String>,
    /// Why it was denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Verdict {
    fn allow(policies: Vec<String>) -> Self {
        Self {
            allowed: true,
            policies,
            reason: None,
        }
    }

    fn deny(policies: Vec<String>, reason: String) -> Self {
        Self {
            allowed: false,
            policies,
            reason: Some(reason),
        }
    }
}

/// The stack a decision needs (Cedar checks for 100 KiB), and the size of
/// the stack it runs on when the current one cannot be measured.
const EVALUATION_RED_ZONE: usize = 128 << 10;
const EVALUATION_STACK: usize = 1 << 20;

/// What the engine reads the time from (quota windows).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Size and modification time of every file of a policy directory: a
/// reload is due when it changes.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// An interaction seen by a collecting engine ([`PolicyEngine::collector`]).
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    /// Who made it.
    pub caller: Caller,
    /// What it was.
    pub interaction: Interaction,
}

/// The policies in force on a host, their quotas' use, and how to reload
/// them. Shared by every call of a runtime (through
/// [`crate::HostConfig::policy`]).
pub struct PolicyEngine {
    current: RwLock<Arc<Policies>>,
    usage: Mutex<quota::Usage>,
    clock: Clock,
    authorizer: Authorizer,
    fingerprint: Mutex<Fingerprint>,
    collected: Option<Mutex<Vec<Seen>>>,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("source", &self.policies().source())
            .finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// Loads the policies of `path` (a directory or one `.cedar` file).
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let policies = Policies::load(path)?;
        let engine = Self::new(policies);
        *engine.lock_fingerprint() = fingerprint(path);
        Ok(engine)
    }

    /// An engine enforcing `policies`.
    pub fn new(policies: Policies) -> Self {
        Self {
            current: RwLock::new(Arc::new(policies)),
            usage: Mutex::new(quota::Usage::default()),
            clock: Arc::new(SystemTime::now),
            authorizer: Authorizer::new(),
            fingerprint: Mutex::new(Vec::new()),
            collected: None,
        }
    }

    /// An engine that decides nothing: it allows every interaction and
    /// keeps it ([`PolicyEngine::take_seen`]), for evaluating policies
    /// against what recorded runs did (`tessera policy what-if`).
    pub fn collector() -> Self {
        let mut engine = Self::new(Policies::empty());
        engine.collected = Some(Mutex::new(Vec::new()));
        engine
    }

    /// The same engine reading the time from `clock` (quota windows).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The policies in force.
    pub fn policies(&self) -> Arc<Policies> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether this engine only collects ([`PolicyEngine::collector`]).
    pub fn collecting(&self) -> bool {
        self.collected.is_some()
    }

    /// Decides `interaction` by `caller`, counting it against the request
    /// quotas that apply when it is allowed.
    pub fn authorize(&self, caller: &Caller, interaction: &Interaction) -> Verdict {
        if let Some(seen) = &self.collected {
            seen.lock().unwrap_or_else(|p| p.into_inner()).push(Seen {
                caller: caller.clone(),
                interaction: interaction.clone(),
            });
            return Verdict::allow(Vec::new());
        }
        let policies = self.policies();
        let verdict = self.decide(&policies, caller, interaction);
        if !verdict.allowed {
            return verdict;
        }
        let now = (self.clock)();
        let admitted = self
            .lock_usage()
            .admit(&policies.quotas, caller, interaction, now);
        match admitted {
            Ok(()) => verdict,
            Err((id, reason)) => Verdict::deny(vec![id], reason),
        }
    }

    /// Charges `tokens` an allowed LLM completion used to the token
    /// quotas that apply.
    pub fn charge(&self, caller: &Caller, interaction: &Interaction, tokens: u64) {
        if self.collected.is_some() || tokens == 0 {
            return;
        }
        let policies = self.policies();
        let now = (self.clock)();
        self.lock_usage()
            .charge(&policies.quotas, caller, interaction, now, tokens);
    }

    /// The Cedar decision alone (no quota), failing closed on errors.
    ///
    /// Cedar refuses to evaluate with less than 100 KiB of stack left, as
    /// `stacker` measures it. A host call of an async wasmtime store runs on
    /// the guest's fiber stack, which `stacker` cannot measure: the decision
    /// is then made on one of the evaluator threads (a round trip of a few
    /// microseconds, where a fresh stack per decision costs tens).
    fn decide(
        &self,
        policies: &Arc<Policies>,
        caller: &Caller,
        interaction: &Interaction,
    ) -> Verdict {
        let measurable = stacker::remaining_stack().is_some_and(|r| r >= EVALUATION_RED_ZONE);
        if measurable {
            return decide_here(&self.authorizer, policies, caller, interaction);
        }
        evaluator::decide(policies.clone(), caller.clone(), interaction.clone())
            // No evaluator thread: a stack of its own, then.
            .unwrap_or_else(|| self.decide_on_own_stack(policies, caller, interaction))
    }

    /// The decision on a fresh stack of [`EVALUATION_STACK`] bytes (when no
    /// evaluator thread can be started).
    fn decide_on_own_stack(
        &self,
        policies: &Policies,
        caller: &Caller,
        interaction: &Interaction,
    ) -> Verdict {
        stacker::grow(EVALUATION_STACK, || {
            decide_here(&self.authorizer, policies, caller, interaction)
        })
    }

    /// Decides `interaction` by `caller` with the policies alone, counting
    /// nothing.
    pub fn evaluate(&self, caller: &Caller, interaction: &Interaction) -> Verdict {
        self.decide(&self.policies(), caller, interaction)
    }

    /// Loads the policies again from where they came from and puts them in
    /// force (quota use carries over for quotas that remain). On error the
    /// policies in force stay.
    pub fn reload(&self) -> Result<Arc<Policies>, PolicyError> {
        let source = self.policies().source().to_path_buf();
        let print = fingerprint(&source);
        let loaded = Arc::new(Policies::load(&source)?);
        self.lock_usage().retain(&loaded.quotas);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = loaded.clone();
        *self.lock_fingerprint() = print;
        Ok(loaded)
    }

    /// Reloads when a file of the policy directory was added, removed or
    /// changed since the last load: `None` when nothing changed. A failed
    /// reload is reported once per change.
    pub fn reload_if_changed(&self) -> Option<Result<Arc<Policies>, PolicyError>> {
        let source = self.policies().source().to_path_buf();
        if source.as_os_str().is_empty() {
            return None;
        }
        let print = fingerprint(&source);
        {
            let mut seen = self.lock_fingerprint();
            if *seen == print {
                return None;
            }
            *seen = print;
        }
        Some(self.reload())
    }

    /// The interactions a collecting engine saw, in order.
    pub fn take_seen(&self) -> Vec<Seen> {
        match &self.collected {
            Some(c) => std::mem::take(&mut *c.lock().unwrap_or_else(|p| p.into_inner())),
            None => Vec::new(),
        }
    }

    fn lock_usage(&self) -> std::sync::MutexGuard<'_, quota::Usage> {
        self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_fingerprint(&self) -> std::sync::MutexGuard<'_, Fingerprint> {
        self.fingerprint.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `file:line` of a policy, or its id.
fn place(policies: &Policies, id: &str) -> String {
    policies.origin(id).unwrap_or(id).to_string()
}

fn fingerprint(path: &Path) -> Fingerprint {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(path) {
        Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
        Err(_) => vec![path.to_path_buf()],
    };
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).ok();
            let len = meta.as_ref().map_or(0, |m| m.len());
            let modified = meta.and_then(|m| m.modified().ok());
            (p, len, modified)
        })
        .collect()
}

/// The Cedar decision alone (no quota), failing closed on errors, on this
/// thread's stack.
fn decide_here(
    authorizer: &Authorizer,
    policies: &Policies,
    caller: &Caller,
    interaction: &Interaction,
) -> Verdict {
    let (request, entities) = match request::build(caller, interaction) {
        Ok(r) => r,
        Err(e) => {
            return Verdict::deny(
                Vec::new(),
                format!("the request cannot be put to the policies: {e}"),
            );
        }
    };
    let response = authorizer.is_authorized(&request, &policies.set, &entities);
    let diagnostics = response.diagnostics();
    let errors: Vec<(String, String)> = diagnostics
        .errors()
        .map(|e| match e {
            cedar_policy::AuthorizationError::PolicyEvaluationError(p) => {
                (p.policy_id().to_string(), p.inner().to_string())
            }
        })
        .collect();
    if !errors.is_empty() {
        let ids = errors.iter().map(|(id, _)| id.clone()).collect();
        let why = errors
            .iter()
            .map(|(id, e)| format!("`{id}` ({}): {e}", place(policies, id)))
            .collect::<Vec<_>>()
            .join("; ");
        return Verdict::deny(
            ids,
            format!("a policy failed to evaluate, so the request is denied: {why}"),
        );
    }
    let mut ids: Vec<String> = diagnostics.reason().map(ToString::to_string).collect();
    ids.sort();
    match response.decision() {
        CedarDecision::Allow => Verdict::allow(ids),
        CedarDecision::Deny if ids.is_empty() => Verdict::deny(
            ids,
            format!(
                "no policy permits {} on {}",
                interaction.action(),
                interaction.describe()
            ),
        ),
        CedarDecision::Deny => {
            let named = ids
                .iter()
                .map(|id| format!("`{id}` ({})", place(policies, id)))
                .collect::<Vec<_>>()
                .join(", ");
            Verdict::deny(ids, format!("forbidden by policy {named}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"
@id("base")
permit(principal, action, resource);

@id("no-writes")
forbid(principal, action == Tessera::Action::"kv.write", resource);
"#;

    fn engine() -> (tempfile::TempDir, PolicyEngine) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rules.cedar"), RULES).unwrap();
        let engine = PolicyEngine::load(dir.path()).unwrap();
        (dir, engine)
    }

    fn caller() -> Caller {
        Caller {
            component: "notes".into(),
            digest: "sha256:00".into(),
            function: "put".into(),
            agent: None,
            plan: None,
            step: None,
            token: None,
        }
    }

    fn kv(write: bool) -> Interaction {
        Interaction::Kv {
            operation: if write { "set" } else { "get" }.into(),
            bucket: "notes".into(),
            key: "a".into(),
            write,
        }
    }

    /// Runs `f` on a thread whose stack is too small for Cedar to evaluate
    /// on (it wants 100 KiB left).
    fn on_a_small_stack<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
        std::thread::Builder::new()
            .stack_size(96 << 10)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn a_small_stack_fails_closed_when_deciding_in_place() {
        // What the two paths below avoid: evaluating here is refused.
        let (_dir, engine) = engine();
        let engine = Arc::new(engine);
        let verdict = on_a_small_stack(move || {
            decide_here(
                &engine.authorizer,
                &engine.policies(),
                &caller(),
                &kv(false),
            )
        });
        assert!(!verdict.allowed, "{verdict:?}");
    }

    #[test]
    fn decisions_asked_for_on_a_small_stack_go_to_the_evaluator_threads() {
        let (_dir, engine) = engine();
        let engine = Arc::new(engine);
        let (read, write) = on_a_small_stack(move || {
            (
                engine.evaluate(&caller(), &kv(false)),
                engine.evaluate(&caller(), &kv(true)),
            )
        });
        assert!(read.allowed, "{read:?}");
        assert_eq!(read.policies, ["base"]);
        assert!(!write.allowed, "{write:?}");
        assert_eq!(write.policies, ["no-writes"]);
    }

    #[test]
    fn without_evaluator_threads_a_decision_gets_a_stack_of_its_own() {
        let (_dir, engine) = engine();
        let engine = Arc::new(engine);
        let (read, write) = on_a_small_stack(move || {
            let policies = engine.policies();
            (
                engine.decide_on_own_stack(&policies, &caller(), &kv(false)),
                engine.decide_on_own_stack(&policies, &caller(), &kv(true)),
            )
        });
        assert!(read.allowed, "{read:?}");
        assert_eq!(read.policies, ["base"]);
        assert!(!write.allowed, "{write:?}");
        assert_eq!(write.policies, ["no-writes"]);
    }
}
