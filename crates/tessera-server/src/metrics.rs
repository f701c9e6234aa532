//! Prometheus metrics at `GET /metrics` (OpenMetrics text).
//!
//! The server counts what passes through it: calls and their outcomes,
//! durations, fuel and peak memory per component, every audit decision
//! that is not an `allow` (denials and limits, by capability), component
//! loads by compile-cache status, plan steps, agent turns and their
//! failures, and LLM tokens. The audit chain's state is measured at
//! scrape time (verified again only when the log's length or modification
//! time changed). Names and labels are
//! listed in `docs/metrics.md`.

use std::path::PathBuf;
use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tessera_runtime::{AuditEvent, CacheStatus, CallFailure, CallOutcome, Decision};

type Labels = Vec<(String, String)>;
type AuditStamp = (u64, Option<std::time::SystemTime>);
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 50 µs to ~26 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

fn memory_histogram() -> Histogram {
    // 64 KiB to 4 GiB.
    Histogram::new(exponential_buckets(65_536.0, 2.0, 17))
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    calls: Family<Labels, Counter>,
    duration: Histograms,
    fuel: Family<Labels, Counter>,
    memory: Histograms,
    decisions: Family<Labels, Counter>,
    loads: Family<Labels, Counter>,
    plan_steps: Family<Labels, Counter>,
    agent_events: Family<Labels, Counter>,
    mailboxes: Family<Labels, Gauge>,
    mailbox_total: Gauge,
    llm_tokens: Family<Labels, Counter>,
    audit_intact: Gauge,
    audit_lines: Gauge,
    audit_path: PathBuf,
    /// The audit log's length and modification time at the last check,
    /// and what it found.
    audit_checked: Mutex<Option<(AuditStamp, bool, u64)>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Metrics of a server whose audit log is `audit_path`.
    pub fn new(audit_path: PathBuf) -> Self {
        let mut registry = Registry::with_prefix("tessera");
        let calls = Family::<Labels, Counter>::default();
        registry.register(
            "calls",
            "Component calls, by component and outcome (ok, guest_error, trap, limit, denied, exited, cancelled)",
            calls.clone(),
        );
        let duration: Histograms = Family::new_with_constructor(duration_histogram);
        registry.register(
            "call_duration_seconds",
            "Wall time of a call inside the runtime, by component",
            duration.clone(),
        );
        let fuel = Family::<Labels, Counter>::default();
        registry.register(
            "call_fuel",
            "Fuel consumed by calls, by component",
            fuel.clone(),
        );
        let memory: Histograms = Family::new_with_constructor(memory_histogram);
        registry.register(
            "call_peak_memory_bytes",
            "Peak linear memory of a call, by component",
            memory.clone(),
        );
        let decisions = Family::<Labels, Counter>::default();
        registry.register(
            "audit_decisions",
            "Audit events other than allow: denials and limits, by capability and decision",
            decisions.clone(),
        );
        let loads = Family::<Labels, Counter>::default();
        registry.register(
            "component_loads",
            "Component loads, by compile-cache status (hit, miss, rejected, memory, disabled)",
            loads.clone(),
        );
        let plan_steps = Family::<Labels, Counter>::default();
        registry.register(
            "plan_steps",
            "Plan step calls, by outcome",
            plan_steps.clone(),
        );
        let agent_events = Family::<Labels, Counter>::default();
        registry.register(
            "agent_events",
            "Agent events: committed turns, failed attempts, dead letters, restarts, agents failed for good",
            agent_events.clone(),
        );
        let mailboxes = Family::<Labels, Gauge>::default();
        registry.register(
            "agent_mailbox_depth",
            "Messages waiting in the mailbox of each agent that has any, read when scraped",
            mailboxes.clone(),
        );
        let mailbox_total = Gauge::default();
        registry.register(
            "agent_mailbox_messages",
            "Messages waiting in all agents' mailboxes, read when scraped",
            mailbox_total.clone(),
        );
        let llm_tokens = Family::<Labels, Counter>::default();
        registry.register(
            "llm_tokens",
            "LLM tokens used by calls, by component and kind (prompt, completion)",
            llm_tokens.clone(),
        );
        let audit_intact = Gauge::default();
        registry.register(
            "audit_chain_intact",
            "1 when the audit log's hash chain verifies, 0 when a line was changed, removed, inserted or reordered",
            audit_intact.clone(),
        );
        let audit_lines = Gauge::default();
        registry.register(
            "audit_lines",
            "Lines in the audit log at the last check",
            audit_lines.clone(),
        );
        Self {
            registry,
            calls,
            duration,
            fuel,
            memory,
            decisions,
            loads,
            plan_steps,
            agent_events,
            mailboxes,
            mailbox_total,
            llm_tokens,
            audit_intact,
            audit_lines,
            audit_path,
            audit_checked: Mutex::new(None),
        }
    }

    /// Counts a finished call of `component` (a plan step when `plan`).
    pub fn call(&self, component: &str, outcome: &CallOutcome, plan: bool) {
        let kind = outcome_kind(outcome);
        self.calls
            .get_or_create(&labels(&[("component", component), ("outcome", kind)]))
            .inc();
        let c = labels(&[("component", component)]);
        self.duration
            .get_or_create(&c)
            .observe(outcome.duration.as_secs_f64());
        self.fuel.get_or_create(&c).inc_by(outcome.fuel_consumed);
        self.memory
            .get_or_create(&c)
            .observe(outcome.peak_memory_bytes as f64);
        for (key, kind) in [
            (tessera_runtime::capability::llm::PROMPT_TOKENS, "prompt"),
            (
                tessera_runtime::capability::llm::COMPLETION_TOKENS,
                "completion",
            ),
        ] {
            if let Some(n) = outcome.usage.get(key).copied().filter(|n| *n > 0) {
                self.llm_tokens
                    .get_or_create(&labels(&[("component", component), ("kind", kind)]))
                    .inc_by(n);
            }
        }
        if plan {
            self.plan_steps
                .get_or_create(&labels(&[("outcome", kind)]))
                .inc();
        }
    }

    /// Counts an audit event that is not an `allow`.
    pub fn audit(&self, event: &AuditEvent) {
        let decision = match event.decision {
            Decision::Allow => return,
            Decision::Deny => "deny",
            Decision::Limit => "limit",
        };
        self.decisions
            .get_or_create(&labels(&[
                ("capability", &event.capability),
                ("decision", decision),
            ]))
            .inc();
    }

    /// Counts a component load.
    pub fn load(&self, status: &CacheStatus) {
        let s = match status {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Rejected(_) => "rejected",
            CacheStatus::Disabled => "disabled",
            CacheStatus::Memory => "memory",
        };
        self.loads.get_or_create(&labels(&[("cache", s)])).inc();
    }

    /// Sets the mailbox depths: a gauge for each agent with messages
    /// waiting (an agent with none has no series, so a server holding many
    /// dormant agents exports few), and the total.
    pub fn set_mailboxes(&self, depths: &[(String, u64)]) {
        self.mailboxes.clear();
        let mut total = 0u64;
        for (agent, depth) in depths.iter().filter(|(_, d)| *d > 0) {
            total = total.saturating_add(*depth);
            self.mailboxes
                .get_or_create(&labels(&[("agent", agent)]))
                .set(i64::try_from(*depth).unwrap_or(i64::MAX));
        }
        self.mailbox_total
            .set(i64::try_from(total).unwrap_or(i64::MAX));
    }

    /// Counts an agent event (`turn`, `attempt_failed`, `dead_letter`,
    /// `restarted`, `failed`).
    pub fn agent_event(&self, kind: &str) {
        self.agent_events
            .get_or_create(&labels(&[("event", kind)]))
            .inc();
    }

    /// The metrics as OpenMetrics text; checks the audit chain first if
    /// the log grew since the last check.
    pub fn render(&self) -> String {
        self.check_audit_chain();
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    fn check_audit_chain(&self) {
        let stamp: AuditStamp = std::fs::metadata(&self.audit_path)
            .map(|m| (m.len(), m.modified().ok()))
            .unwrap_or((0, None));
        let mut checked = self.audit_checked.lock().unwrap_or_else(|p| p.into_inner());
        let (intact, lines) = match *checked {
            Some((s, intact, lines)) if s == stamp => (intact, lines),
            _ => {
                let (intact, lines) = match tessera_runtime::audit::chain::verify(&self.audit_path)
                {
                    Ok(r) => (r.intact(), r.lines),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => (true, 0),
                    Err(_) => (false, 0),
                };
                *checked = Some((stamp, intact, lines));
                (intact, lines)
            }
        };
        self.audit_intact.set(i64::from(intact));
        self.audit_lines
            .set(i64::try_from(lines).unwrap_or(i64::MAX));
    }
}

fn outcome_kind(outcome: &CallOutcome) -> &'static str {
    // A failed call (a trap, a limit, or the guest's own `err`) during
    // which a grant denied something counts as denied, as the CLI's exit
    // code 5 does.
    let failed = outcome.guest_error || outcome.result.is_err();
    if failed && outcome.audit.iter().any(|e| e.decision == Decision::Deny) {
        return "denied";
    }
    match &outcome.result {
        Ok(_) if outcome.guest_error => "guest_error",
        Ok(_) => "ok",
        Err(CallFailure::Limit(_)) => "limit",
        Err(CallFailure::Exit(_)) => "exited",
        Err(CallFailure::Cancelled) => "cancelled",
        Err(CallFailure::Trap { .. } | CallFailure::Diverged(_)) => "trap",
    }
}
