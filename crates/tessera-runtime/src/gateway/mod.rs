//! The gateway: the one interposition layer between a guest and the host.
//!
//! Every host interaction a component can make goes through the
//! [`Gateway`] of its call, by way of the capability that serves it
//! (`crate::capability`). The gateway
//!
//! * writes an [`AuditEvent`] for every denial, every limit hit and every
//!   outbound request the capabilities report,
//! * turns each exchange into a [`Step`] — the capability's typed request
//!   and response, encoded by the capability's own [`Op`] codec — and hands
//!   it to an optional [`InteractionObserver`] (where the journal records),
//! * on replay, answers each exchange from a [`ReplaySource`] instead of the
//!   host, after checking that the guest asked for the same thing.
//!
//! No capability talks to the journal, and the journal knows no capability:
//! both meet here, in [`Gateway::exchange`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::Deserialize;

use crate::audit::{AuditEvent, AuditSink, Decision};
use crate::manifest::Grants;
use crate::policy::{Caller, Interaction};

pub mod step;

use step::to_value;
pub use step::{Bytes, Op, Payload, Recorded, RedactionKey, Replay, Sealed, Step, StepData, Typed};

/// Who is calling: the component digest and function every event names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallScope {
    /// Content digest of the component (`sha256:…`).
    pub component: String,
    /// The component's name (its registry name, or the name its file, URL
    /// or OCI reference gives it): the principal of boundary policies.
    pub name: String,
    /// The function being called (`name` or `interface#name`).
    pub function: String,
}

/// Where a replayed call gets its answers: the recorded steps of a run.
pub trait ReplaySource: Send + Sync {
    /// The recorded step at `index` (0-based), or `None` past the end.
    fn recorded(&self, index: u64) -> Option<&Step>;

    /// How many steps are recorded (the first index past the end).
    fn len(&self) -> u64 {
        let mut n = 0;
        while self.recorded(n).is_some() {
            n += 1;
        }
        n
    }

    /// Whether nothing is recorded.
    fn is_empty(&self) -> bool {
        self.recorded(0).is_none()
    }
}

/// The first point where a replayed call departed from its recording.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("divergence at step {index}: recorded {}, replay asked for {}{}",
    describe(.recorded.as_deref()), describe(.actual.as_deref()),
    .reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default())]
pub struct Divergence {
    /// Index of the first differing step.
    pub index: u64,
    /// What the journal holds at that index (`None`: the recording ended).
    pub recorded: Option<Box<Step>>,
    /// What the replayed guest did (`None`: it finished without it). Its
    /// response is empty: the replay stopped before answering.
    pub actual: Option<Box<Step>>,
    /// Why the steps do not match, when that is not visible in them.
    pub reason: Option<String>,
}

fn describe(step: Option<&Step>) -> String {
    match step {
        None => "nothing".into(),
        Some(s) => crate::capability::describe(s),
    }
}

/// Receives every host interaction of a call, in order. This is the plug
/// point for the journal.
pub trait InteractionObserver: Send + Sync {
    /// Called once per interaction, on the guest's thread: keep the step
    /// (a clone of the `Arc`) and encode it elsewhere. `index` numbers the
    /// call's interactions from 0; an exchange that waits on the host (HTTP)
    /// is reported when it completes, under the index reserved when it
    /// began, so reports can arrive out of order.
    fn observe(&self, scope: &CallScope, index: u64, step: &Recorded);
}

/// A `wasi:logging` record kept with the call's outcome.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogRecord {
    /// Severity.
    pub level: crate::capability::logging::LogLevel,
    /// The guest-provided context.
    pub context: String,
    /// The message.
    pub message: String,
}

/// What the guest wrote during a call.
#[derive(Debug, Default, Clone)]
pub struct CapturedOutput {
    /// Guest stdout.
    pub stdout: Vec<u8>,
    /// Guest stderr.
    pub stderr: Vec<u8>,
    /// `wasi:logging` records.
    pub logs: Vec<LogRecord>,
}

/// What a gateway keeps for the life of its store: the grants and the
/// host configuration, and the part that is one call's (replaced between
/// the calls of a session).
struct GatewayInner {
    grants: Arc<Grants>,
    host: Arc<crate::capability::HostConfig>,
    call: RwLock<Arc<CallPart>>,
}

/// One call's part of a gateway: its scope, observer, replay source, step
/// counter, divergence, output and usage.
struct CallPart {
    scope: CallScope,
    audit: Arc<dyn AuditSink>,
    observer: Option<Arc<dyn InteractionObserver>>,
    replay: Option<Arc<dyn ReplaySource>>,
    context: Option<Arc<std::collections::BTreeMap<String, String>>>,
    agent: Option<Arc<dyn crate::capability::agent::AgentLink>>,
    terminal: Option<crate::capability::stdio::Terminal>,
    links: Option<Arc<dyn crate::capability::link::LinkedCalls>>,
    link_depth: u32,
    live_after: Option<u64>,
    next_index: AtomicU64,
    divergence: Mutex<Option<Divergence>>,
    started: std::time::Instant,
    prng: Mutex<Option<crate::capability::random::SplitMix64>>,
    output: Mutex<CapturedOutput>,
    usage: Mutex<std::collections::BTreeMap<String, u64>>,
    /// The call's span, when tracing is on (`crate::telemetry`).
    trace: Option<opentelemetry::Context>,
}

/// The per-call interposition layer. Cheap to clone; every capability
/// adapter of one call holds a clone of the same gateway.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<GatewayInner>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("scope", &self.call().scope)
            .finish_non_exhaustive()
    }
}

/// What a call's gateway is made from, besides its scope.
#[derive(Clone)]
pub struct GatewayParts {
    /// The grants in force.
    pub grants: Arc<Grants>,
    /// How the host provides capabilities (secrets, the redaction key).
    pub host: Arc<crate::capability::HostConfig>,
    /// Where audit events go.
    pub audit: Arc<dyn AuditSink>,
    /// Who records the call's steps.
    pub observer: Option<Arc<dyn InteractionObserver>>,
    /// Where a replayed call's answers come from.
    pub replay: Option<Arc<dyn ReplaySource>>,
    /// Values the caller gives this call (a plan step's idempotency key),
    /// read through `wasi:config` under keys starting with `tessera.`.
    pub context: Option<Arc<std::collections::BTreeMap<String, String>>>,
    /// The agent host a turn's `tessera:agent` imports reach.
    pub agent: Option<Arc<dyn crate::capability::agent::AgentLink>>,
    /// With `replay`: answer only the recorded steps, then go on live (a
    /// turn resumed after it stopped to wait for an approval).
    pub continue_live: bool,
    /// The caller's standard streams, connected instead of captured
    /// (`tessera run`).
    pub terminal: Option<crate::capability::stdio::Terminal>,
    /// Who runs the provider side of linked imports (the journal's
    /// recorder); `None`: providers are called directly.
    pub links: Option<Arc<dyn crate::capability::link::LinkedCalls>>,
    /// How many linked calls this call is nested in.
    pub link_depth: u32,
}

impl CallPart {
    fn new(scope: CallScope, parts: GatewayParts) -> Self {
        let prng = Mutex::new(
            parts
                .grants
                .deterministic
                .map(crate::capability::random::SplitMix64::new),
        );
        let live_after = match (&parts.replay, parts.continue_live) {
            (Some(src), true) => Some(src.len()),
            _ => None,
        };
        let trace = crate::telemetry::enabled().then(|| {
            use opentelemetry::KeyValue;
            use opentelemetry::trace::TraceContextExt;
            // Named and given its attributes only once the sampler kept
            // it: a span that is not recorded costs no allocation for them.
            let cx = crate::telemetry::start(
                "call",
                opentelemetry::trace::SpanKind::Internal,
                &opentelemetry::Context::current(),
                Vec::new(),
            );
            let span = cx.span();
            if span.is_recording() {
                span.update_name(format!("call {} {}", scope.name, scope.function));
                span.set_attributes([
                    KeyValue::new("tessera.component", scope.name.clone()),
                    KeyValue::new("tessera.component.digest", scope.component.clone()),
                    KeyValue::new("tessera.function", scope.function.clone()),
                    KeyValue::new("tessera.replay", parts.replay.is_some()),
                ]);
            }
            cx
        });
        Self {
            trace,
            scope,
            audit: parts.audit,
            observer: parts.observer,
            replay: parts.replay,
            context: parts.context,
            live_after,
            agent: parts.agent,
            terminal: parts.terminal,
            links: parts.links,
            link_depth: parts.link_depth,
            next_index: AtomicU64::new(0),
            divergence: Mutex::new(None),
            started: std::time::Instant::now(),
            prng,
            output: Mutex::new(CapturedOutput::default()),
            usage: Mutex::new(std::collections::BTreeMap::new()),
        }
    }
}

impl Gateway {
    /// Creates the gateway for one call. With `parts.replay`, every value
    /// the host would supply is answered from the recording instead, and
    /// every request is checked against it.
    pub fn new(scope: CallScope, parts: GatewayParts) -> Self {
        let (grants, host) = (parts.grants.clone(), parts.host.clone());
        Self {
            inner: Arc::new(GatewayInner {
                grants,
                host,
                call: RwLock::new(Arc::new(CallPart::new(scope, parts))),
            }),
        }
    }

    /// Starts the next call of a session on this gateway: a new scope,
    /// observer, replay source, step counter, output and usage. The grants
    /// and host configuration stay those the gateway was made with (the
    /// store's capabilities were built from them), whatever `parts` holds.
    pub fn next_call(&self, scope: CallScope, parts: GatewayParts) {
        let part = Arc::new(CallPart::new(scope, parts));
        *self.inner.call.write().unwrap_or_else(|p| p.into_inner()) = part;
    }

    /// The current call's part.
    fn call(&self) -> Arc<CallPart> {
        self.inner
            .call
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Deterministic mode: the seeded generator fills `buf` (returns false
    /// when the call is not deterministic).
    pub fn seeded_random(&self, buf: &mut [u8]) -> bool {
        match &mut *self.call().prng.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(rng) => {
                rng.fill(buf);
                true
            }
            None => false,
        }
    }

    /// Whether the call runs in deterministic mode.
    pub fn deterministic(&self) -> bool {
        self.inner.grants.deterministic.is_some()
    }

    /// Time since the call's gateway was made (the monotonic clock's zero).
    pub fn elapsed(&self) -> std::time::Duration {
        self.call().started.elapsed()
    }

    /// Whether this call is a replay (for a resumed call: whether its
    /// recorded steps are not all answered yet).
    pub fn replaying(&self) -> bool {
        match self.call().live_after {
            Some(n) => self.interaction_count() < n,
            None => self.call().replay.is_some(),
        }
    }

    /// The caller's standard streams, when the call's are connected to
    /// them instead of captured.
    pub fn terminal(&self) -> Option<crate::capability::stdio::Terminal> {
        self.call().terminal.clone()
    }

    /// The agent host of a turn.
    pub fn agent(&self) -> Option<Arc<dyn crate::capability::agent::AgentLink>> {
        self.call().agent.clone()
    }

    /// Who runs the provider side of the call's linked imports.
    pub fn links(&self) -> Option<Arc<dyn crate::capability::link::LinkedCalls>> {
        self.call().links.clone()
    }

    /// How many linked calls this call is nested in.
    pub fn link_depth(&self) -> u32 {
        self.call().link_depth
    }

    /// Reserves the next interaction index.
    pub fn reserve_index(&self) -> u64 {
        self.call().next_index.fetch_add(1, Ordering::SeqCst)
    }

    /// Replaying: whether the next recorded step is an `O` (a recording
    /// holds some operations only when they happened, such as reads of a
    /// connected stdin).
    pub fn next_recorded_is<O: Op>(&self) -> bool {
        self.call().replay.as_ref().is_some_and(|src| {
            src.recorded(self.interaction_count())
                .is_some_and(|s| s.capability == O::CAPABILITY && s.op == O::NAME)
        })
    }

    /// How many interactions the call has made so far.
    pub fn interaction_count(&self) -> u64 {
        self.call().next_index.load(Ordering::SeqCst)
    }

    /// The one way a capability performs a host interaction.
    ///
    /// Live: runs `live` and reports the exchange. Replay: takes the
    /// recorded step at the next index, checks that it answers `request`
    /// (same capability, operation and request), and returns the recorded
    /// response instead of touching the host ([`Replay::Answer`]), or runs
    /// `live` against the replay's sandbox ([`Replay::Perform`]).
    pub fn exchange<O: Op>(
        &self,
        request: O::Request,
        live: impl FnOnce(&O::Request) -> O::Response,
    ) -> Result<O::Response, Divergence> {
        let index = self.reserve_index();
        self.exchange_at::<O>(index, request, live)
    }

    /// [`Gateway::exchange`] at an index reserved earlier.
    pub fn exchange_at<O: Op>(
        &self,
        index: u64,
        request: O::Request,
        live: impl FnOnce(&O::Request) -> O::Response,
    ) -> Result<O::Response, Divergence> {
        let response = match self.answer::<O>(index, &request)? {
            Some(r) => r,
            None => live(&request),
        };
        if O::REPLAY == Replay::Verify
            && self.call().live_after.is_none_or(|n| index < n)
            && let Some(src) = &self.call().replay
            && let Some(rec) = src.recorded(index)
            && rec.decode::<O>().ok().as_ref() != Some(&response)
        {
            let mut actual = probe::<O>(&request);
            actual.response = to_value(&response);
            return Err(self.diverge(
                index,
                Some(rec.clone()),
                Some(actual),
                Some("the host answered differently".into()),
            ));
        }
        self.report::<O>(index, &request, &response);
        Ok(response)
    }

    /// [`Gateway::exchange`] for an operation whose live half waits on the
    /// host (a store, another agent, a model): replaying, answers from the
    /// recording; live, awaits `live` (which may fail the call with a trap)
    /// and reports the exchange.
    pub async fn exchange_async<O, F, Fut>(
        &self,
        request: O::Request,
        live: F,
    ) -> wasmtime::Result<O::Response>
    where
        O: Op,
        F: FnOnce(Gateway, O::Request) -> Fut,
        Fut: std::future::Future<Output = wasmtime::Result<O::Response>>,
    {
        let index = self.reserve_index();
        let response = match self.answer::<O>(index, &request)? {
            Some(r) => r,
            None => live(self.clone(), request.clone()).await?,
        };
        self.report::<O>(index, &request, &response);
        Ok(response)
    }

    /// The first half of an exchange that waits on the host: replaying,
    /// checks `request` against the step at `index` and returns the
    /// recorded response for an [`Replay::Answer`] operation; live (or for a
    /// [`Replay::Perform`] operation) returns `None`. Finish with
    /// [`Gateway::report`].
    pub fn answer<O: Op>(
        &self,
        index: u64,
        request: &O::Request,
    ) -> Result<Option<O::Response>, Divergence> {
        let Some(src) = &self.call().replay else {
            return Ok(None);
        };
        if self.call().live_after.is_some_and(|n| index >= n) {
            return Ok(None);
        }
        let rec = src.recorded(index);
        let same = rec.is_some_and(|r| {
            r.capability == O::CAPABILITY
                && r.op == O::NAME
                && O::Request::deserialize(&r.request).is_ok_and(|q| q == *request)
        });
        if !same {
            return Err(self.diverge(index, rec.cloned(), Some(probe::<O>(request)), None));
        }
        let rec = rec.unwrap_or_else(|| unreachable!("checked above"));
        match O::REPLAY {
            Replay::Perform | Replay::Verify => Ok(None),
            Replay::Answer => rec.decode::<O>().map(Some).map_err(|m| {
                self.diverge(index, Some(rec.clone()), Some(probe::<O>(request)), Some(m))
            }),
        }
    }

    /// Reports a finished exchange to the observer, if any.
    pub fn report<O: Op>(&self, index: u64, request: &O::Request, response: &O::Response) {
        if let Some(o) = &self.call().observer {
            let step: Recorded = std::sync::Arc::new(Typed::<O> {
                request: request.clone(),
                response: response.clone(),
            });
            o.observe(&self.call().scope, index, &step);
        }
    }

    /// Records (and returns) a divergence; the first one is kept.
    pub fn diverge(
        &self,
        index: u64,
        recorded: Option<Step>,
        actual: Option<Step>,
        reason: Option<String>,
    ) -> Divergence {
        let d = Divergence {
            index,
            recorded: recorded.map(Box::new),
            actual: actual.map(Box::new),
            reason,
        };
        let call = self.call();
        let mut slot = call.divergence.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert_with(|| d.clone()).clone()
    }

    /// A divergence found after a step was answered (a secret that no
    /// longer matches): the step itself is the recorded one.
    pub fn diverge_at<O: Op>(
        &self,
        index: u64,
        request: &O::Request,
        reason: String,
    ) -> Divergence {
        let probe = probe::<O>(request);
        let recorded = self
            .call()
            .replay
            .as_ref()
            .and_then(|s| s.recorded(index).cloned());
        self.diverge(index, recorded, Some(probe), Some(reason))
    }

    /// The divergence recorded so far, without the end-of-recording check.
    pub fn pending_divergence(&self) -> Option<Divergence> {
        self.call()
            .divergence
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The first divergence seen, if any. After a replayed call returns, a
    /// recording with steps left over is a divergence too.
    pub fn divergence(&self) -> Option<Divergence> {
        if let Some(d) = self.pending_divergence() {
            return Some(d);
        }
        let call = self.call();
        let src = call.replay.as_ref()?;
        let n = self.interaction_count();
        src.recorded(n)
            .map(|rec| self.diverge(n, Some(rec.clone()), None, None))
    }

    /// A value the caller gave this call ([`GatewayParts::context`]).
    pub fn context(&self, key: &str) -> Option<String> {
        self.call().context.as_ref()?.get(key).cloned()
    }

    /// Every value the caller gave this call.
    pub fn context_values(&self) -> Vec<(String, String)> {
        self.call()
            .context
            .iter()
            .flat_map(|c| c.iter())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The call this gateway serves.
    pub fn scope(&self) -> CallScope {
        self.call().scope.clone()
    }

    /// The grants in force.
    pub fn grants(&self) -> &Grants {
        &self.inner.grants
    }

    /// How the host provides capabilities.
    pub fn host(&self) -> &crate::capability::HostConfig {
        &self.inner.host
    }

    /// Whether interactions are being observed (recorded).
    pub fn recording(&self) -> bool {
        self.call().observer.is_some()
    }

    /// Writes an audit event for this call.
    pub fn audit(
        &self,
        capability: &str,
        target: impl Into<String>,
        decision: Decision,
        detail: Option<String>,
    ) {
        let scope = &self.call().scope;
        self.call().audit.record(&AuditEvent::now(
            &scope.component,
            &scope.function,
            capability,
            target,
            decision,
            detail,
        ));
    }

    /// Who this call is, as boundary policies see it: the component, the
    /// function, and the agent, plan step and API token the caller named
    /// in the call's context.
    pub fn caller(&self) -> Caller {
        let call = self.call();
        let context = |key: &str| call.context.as_ref().and_then(|c| c.get(key).cloned());
        Caller {
            component: call.scope.name.clone(),
            digest: call.scope.component.clone(),
            function: call.scope.function.clone(),
            agent: context("tessera.agent.id"),
            plan: context("tessera.plan.name"),
            step: context("tessera.plan.step"),
            token: context(crate::policy::TOKEN_CONTEXT),
        }
    }

    /// Puts `interaction` to the host's boundary policies, once the
    /// capability's grant check has allowed it: `Err` carries why a policy
    /// or quota denied it (the capability audits it and answers the guest
    /// with its interface's ordinary error). With no policies in force,
    /// and on replay (the recording holds the answers), everything the
    /// grants allow is allowed; a collecting engine sees the interaction
    /// either way.
    pub fn authorize(&self, interaction: &Interaction) -> Result<(), String> {
        let Some(engine) = self.inner.host.policy.as_ref() else {
            return Ok(());
        };
        if self.replaying() && !engine.collecting() {
            return Ok(());
        }
        let verdict = engine.authorize(&self.caller(), interaction);
        match verdict.reason {
            Some(reason) if !verdict.allowed => Err(reason),
            _ => Ok(()),
        }
    }

    /// Charges the LLM tokens an allowed completion used to the host's
    /// token quotas.
    pub fn charge_tokens(&self, interaction: &Interaction, tokens: u64) {
        if let Some(engine) = self.inner.host.policy.as_ref()
            && !self.replaying()
        {
            engine.charge(&self.caller(), interaction, tokens);
        }
    }

    /// Starts the span of a host interaction (`<capability>.<op>`, child
    /// of the call's span; none when tracing is off). The capability
    /// records the gateway's decision on it.
    pub fn interaction_span(
        &self,
        capability: &str,
        op: &str,
        target: &str,
    ) -> crate::telemetry::Interaction {
        let call = self.call();
        let Some(cx) = &call.trace else {
            return crate::telemetry::Interaction::default();
        };
        use opentelemetry::KeyValue;
        use opentelemetry::trace::TraceContextExt;
        if !cx.span().is_recording() {
            // A trace that is not kept: a span only to pass its (unsampled)
            // context on.
            return crate::telemetry::Interaction::start(cx, "interaction", Vec::new());
        }
        crate::telemetry::Interaction::start(
            cx,
            format!("{capability}.{op}"),
            vec![
                KeyValue::new("tessera.capability", capability.to_string()),
                KeyValue::new("tessera.target", target.to_string()),
                KeyValue::new("tessera.component.digest", call.scope.component.clone()),
                KeyValue::new("tessera.function", call.scope.function.clone()),
            ],
        )
    }

    /// The call's span context, when tracing is on: what work the call
    /// starts on the host (a tool's call) hangs under.
    pub fn trace_context(&self) -> Option<opentelemetry::Context> {
        self.call().trace.clone()
    }

    /// Ends the call's span with what the call used and how it ended.
    pub(crate) fn end_trace(&self, outcome: &crate::CallOutcome) {
        let call = self.call();
        let Some(cx) = &call.trace else { return };
        use opentelemetry::KeyValue;
        use opentelemetry::trace::TraceContextExt;
        if !cx.span().is_recording() {
            cx.span().end();
            return;
        }
        let ended = match &outcome.result {
            Ok(_) if outcome.guest_error => "guest_error",
            Ok(_) => "ok",
            Err(crate::CallFailure::Limit(_)) => "limit",
            Err(_) => "trap",
        };
        crate::telemetry::end(
            cx,
            vec![
                KeyValue::new(
                    "tessera.fuel",
                    i64::try_from(outcome.fuel_consumed).unwrap_or(i64::MAX),
                ),
                KeyValue::new(
                    "tessera.peak_memory_bytes",
                    i64::try_from(outcome.peak_memory_bytes).unwrap_or(i64::MAX),
                ),
                KeyValue::new(
                    "tessera.interactions",
                    i64::try_from(outcome.interactions).unwrap_or(i64::MAX),
                ),
                KeyValue::new("tessera.outcome", ended),
            ],
            outcome.result.as_ref().err().map(ToString::to_string),
        );
    }

    /// Runs `f` with the call's captured output.
    pub(crate) fn with_output<R>(&self, f: impl FnOnce(&mut CapturedOutput) -> R) -> R {
        f(&mut self.call().output.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Adds `n` to the call's usage counter `key` (`llm.prompt_tokens`,
    /// …): what the call consumed that a caller may charge for, reported in
    /// [`crate::CallOutcome::usage`]. Capabilities add it for replayed
    /// answers too, so a replay reports the recorded call's usage.
    pub fn add_usage(&self, key: &str, n: u64) {
        let call = self.call();
        let mut usage = call.usage.lock().unwrap_or_else(|p| p.into_inner());
        match usage.get_mut(key) {
            Some(v) => *v = v.saturating_add(n),
            None => {
                usage.insert(key.to_string(), n);
            }
        }
    }

    /// The call's usage counters so far.
    pub fn usage(&self) -> std::collections::BTreeMap<String, u64> {
        self.call()
            .usage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Takes what the guest wrote so far.
    pub fn take_output(&self) -> CapturedOutput {
        self.with_output(std::mem::take)
    }
}

/// The step a request would make, with no response yet.
fn probe<O: Op>(request: &O::Request) -> Step {
    Step {
        capability: O::CAPABILITY.into(),
        op: O::NAME.into(),
        request: to_value(request),
        response: serde_json::Value::Null,
    }
}
