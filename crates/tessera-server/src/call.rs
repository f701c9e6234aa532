//! The one call path, shared by the HTTP API and MCP (both transports),
//! and the one place that decides what the end of a call means to a
//! client.
//!
//! [`Server::call`] takes a permit of the server's limit, the `Arc` of the
//! active version, and runs the journaled call in the caller's task,
//! cancelled (and finished in a task of its own, so it is journaled to its
//! end) when the caller goes away, and cancelled when the server shuts
//! down. [`Called::verdict`]
//! and `ApiError::from(CallError)` classify the result once: the HTTP API
//! sends it as a status and body, MCP as a tool result (`isError` with a
//! message) or, for a server fault, a protocol error. A call that ran and
//! failed carries what the guest left behind ([`GuestDiagnostics`]). A
//! function the manifest's `[tools]` section does not serve is refused
//! here, before anything runs or is journaled.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt as _;

use serde_json::Value;
use tessera_runtime::{CallFailure, CallOptions, CallOutcome, Decision};
use tokio_util::sync::CancellationToken;

use crate::Server;
use crate::active::Active;
use crate::error::{ApiError, ErrorCode, GuestDiagnostics, LimitRef};

/// What a plan step adds to a call ([`Server::call_for`]).
#[derive(Debug, Clone)]
pub struct PlanCall {
    /// The journal header's link to the plan run, step, item and attempt.
    pub link: tessera_journal::PlanStep,
    /// Values the component reads through `wasi:config` (keys starting with
    /// `tessera.`: the idempotency key, the plan run, step, attempt, item).
    pub context: std::collections::BTreeMap<String, String>,
    /// The digest the active version must have (the step's `digest` pin).
    pub digest: Option<String>,
}

/// A finished call.
pub struct Called {
    /// The version that served the call.
    pub active: Arc<Active>,
    /// The journal run.
    pub run_id: String,
    /// What came out.
    pub outcome: CallOutcome,
}

/// Runs a call's future to its end: cancelled through `token` when
/// `cancel` (the caller's) is, and, if the caller goes away first, finished
/// in a task of its own so its run is journaled to the end. A panic is a
/// [`CallError::Task`].
pub(crate) async fn finish_linked<T: Send + 'static>(
    run: impl Future<Output = T> + Send + 'static,
    token: CancellationToken,
    cancel: Option<CancellationToken>,
) -> Result<T, CallError> {
    let run = std::panic::AssertUnwindSafe(run).catch_unwind();
    let mut run = FinishOnDrop {
        run: Some(Box::pin(run)),
        token: token.clone(),
    };
    let linked = async {
        match &cancel {
            Some(c) => c.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let ended = tokio::select! {
        biased;
        r = &mut run => r,
        () = linked => {
            token.cancel();
            run.await
        }
    };
    ended.map_err(|panic| CallError::Task(panic_message(&*panic)))
}

/// Why a call did not run.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The server is at its limit of concurrent calls.
    #[error("{0} calls already running")]
    Overloaded(usize),
    /// No component of that name is being served.
    #[error("no component named `{0}`")]
    NoSuchComponent(String),
    /// The component is registered but its version is still being
    /// loaded (compiled) in the background; nothing of it is served yet.
    #[error(
        "component `{name}` v{version} is still {} ({:.1} s so far); it is served as soon as it is ready: retry then",
        if *.compiling { "compiling" } else { "loading" },
        .elapsed.as_secs_f64()
    )]
    Loading {
        /// The component.
        name: String,
        /// The version being loaded.
        version: usize,
        /// Whether it is being compiled (rather than read from the cache).
        compiling: bool,
        /// How long it has been loading.
        elapsed: Duration,
    },
    /// The call was refused before the guest ran (bad arguments, no such
    /// function, component busy, …) or could not be journaled.
    #[error(transparent)]
    Journal(#[from] tessera_journal::Error),
    /// The call panicked (a bug in Tessera, never the guest's doing: a
    /// guest's failure is a trap).
    #[error("call failed: {0}")]
    Task(String),
    /// The function is unknown or not served (the manifest's `[tools]`
    /// section): refused before anything ran or was journaled.
    #[error(transparent)]
    NotServed(tessera_runtime::Error),
    /// A plan step pinned the component to a digest its active version
    /// does not have: refused before anything ran or was journaled.
    #[error("{0}")]
    Pinned(String),
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Overloaded(_) => ApiError::new(ErrorCode::Overloaded, e.to_string()),
            CallError::NoSuchComponent(_) => {
                ApiError::new(ErrorCode::NoSuchComponent, e.to_string())
            }
            CallError::Loading { .. } => ApiError::new(ErrorCode::Loading, e.to_string()),
            CallError::Journal(j) => j.into(),
            CallError::Task(_) => ApiError::new(ErrorCode::Internal, e.to_string()),
            CallError::NotServed(r) => r.into(),
            CallError::Pinned(_) => ApiError::new(ErrorCode::BadComponent, e.to_string()),
        }
    }
}

/// A grant's denial during a call, from its audit event.
#[derive(Debug, Clone)]
pub(crate) struct Denial {
    /// The capability: `http`, `files`, …
    pub(crate) capability: String,
    /// What was denied: a URL, a path.
    pub(crate) target: String,
    /// Why, as the grant said.
    pub(crate) reason: Option<String>,
}

/// How a call ended, for every transport.
pub(crate) enum Verdict {
    /// The function returned; `ok` is false when it returned its WIT `err`
    /// case (after a denial, if one happened).
    Returned {
        value: Value,
        ok: bool,
        denial: Option<Denial>,
    },
    /// It ran and did not return: `denied`, `limit`, `trap` or `cancelled`,
    /// with the run's id.
    Failed(ApiError),
}

impl Called {
    /// The first denial of the call, if any.
    fn denial(&self) -> Option<Denial> {
        self.outcome
            .audit
            .iter()
            .find(|e| e.decision == Decision::Deny)
            .map(|d| Denial {
                capability: d.capability.clone(),
                target: d.target.clone(),
                reason: d.detail.clone(),
            })
    }

    /// Classifies the call's end. The returned value is taken out of the
    /// outcome (it may be large); the rest of the outcome stays.
    pub(crate) fn verdict(&mut self) -> Verdict {
        let denial = self.denial();
        let result = std::mem::replace(&mut self.outcome.result, Ok(Value::Null));
        let failure = match result {
            Ok(value) => {
                return Verdict::Returned {
                    value,
                    ok: !self.outcome.guest_error,
                    denial,
                };
            }
            Err(failure) => failure,
        };
        let message = failure.to_string();
        let error = match (&failure, denial) {
            (_, Some(d)) => ApiError::new(ErrorCode::Denied, message).with(|e| {
                e.grant = Some(d.capability);
                e.target = Some(d.target);
                e.reason = d.reason;
            }),
            (CallFailure::Limit(l), None) => ApiError::new(ErrorCode::Limit, message)
                .with(|e| e.limit = Some(LimitRef::Name(l.capability().to_string()))),
            (CallFailure::Trap { .. } | CallFailure::Diverged(_) | CallFailure::Exit(_), None) => {
                ApiError::new(ErrorCode::Trap, message)
            }
            (CallFailure::Cancelled, None) => ApiError::new(ErrorCode::Cancelled, message),
        };
        let run_id = self.run_id.clone();
        let backtrace = match &failure {
            CallFailure::Trap { backtrace, .. } => backtrace.as_deref(),
            _ => None,
        };
        let guest = GuestDiagnostics::new(&self.outcome.output, backtrace);
        // Put the failure back: the outcome stays whole for any reader.
        self.outcome.result = Err(failure);
        Verdict::Failed(error.with(|e| {
            e.run_id = Some(run_id);
            e.guest = Some(guest);
        }))
    }

    /// The guest's stderr tail and last log records (no backtrace: the
    /// call returned), for a function that returned its `err` case.
    pub(crate) fn diagnostics(&self) -> GuestDiagnostics {
        GuestDiagnostics::new(&self.outcome.output, None)
    }
}

/// A call run in the caller's task, finished in a task of its own if the
/// caller goes away first.
///
/// Running the call where it was asked for saves a task hand-off per call:
/// a spawned call task and its caller wake each other in turn, and after
/// three such turns tokio stops favouring the waker's own thread and wakes
/// another worker to steal one of them — a cross-thread wake-up and a
/// migration every other call, which cost the one-caller latency more than
/// anything Tessera does in the call. If the caller's future is dropped
/// before the call ends (a client that went away), the call is cancelled
/// (the guest stops at its next epoch tick) and what is left of it is
/// spawned, so its run is still journaled to its end.
struct FinishOnDrop<F: Future<Output: Send> + Send + 'static> {
    run: Option<Pin<Box<F>>>,
    token: CancellationToken,
}

impl<F: Future<Output: Send> + Send + 'static> Future for FinishOnDrop<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let Some(run) = this.run.as_mut() else {
            // Polled after it ended: it never ends again.
            return Poll::Pending;
        };
        let out = std::task::ready!(run.as_mut().poll(cx));
        this.run = None;
        Poll::Ready(out)
    }
}

impl<F: Future<Output: Send> + Send + 'static> Drop for FinishOnDrop<F> {
    fn drop(&mut self) {
        if let Some(run) = self.run.take() {
            self.token.cancel();
            // Outside a runtime (it is shutting down) nothing can run it.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = run.await;
                });
            }
        }
    }
}

/// The message a panic carried.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => format!("panicked: {s}"),
        (_, Some(s)) => format!("panicked: {s}"),
        _ => "panicked".to_string(),
    }
}

impl Server {
    /// Calls `function` of the active version of component `name`, and
    /// journals the run with `caller` in its header.
    ///
    /// The call runs in the caller's task; if the caller goes away (its
    /// future is dropped) or `cancel` fires, the guest is interrupted at its
    /// next epoch tick and the run is still journaled to its end, as
    /// cancelled (a dropped call finishes in a task of its own). Shutting
    /// the server down cancels every call still running after the grace
    /// period.
    pub async fn call(
        &self,
        name: &str,
        function: &str,
        args: &Value,
        cancel: Option<CancellationToken>,
        caller: tessera_journal::Caller,
    ) -> Result<Called, CallError> {
        self.call_for(name, function, args, cancel, caller, None)
            .await
    }

    /// [`Server::call`] for a call a plan step makes: the same path
    /// (permit, active version, `[tools]` curation, journal, cancellation),
    /// with `plan` linking the journal run to the plan run, step, item and
    /// attempt in its header, and giving the component the step's values
    /// (its idempotency key, …) through `wasi:config`.
    pub async fn call_for(
        &self,
        name: &str,
        function: &str,
        args: &Value,
        cancel: Option<CancellationToken>,
        caller: tessera_journal::Caller,
        plan: Option<PlanCall>,
    ) -> Result<Called, CallError> {
        let (permit, active) = self.permit_and_active(name).await?;
        if let Some(pin) = plan.as_ref().and_then(|p| p.digest.as_deref())
            && active.loaded.digest() != pin
        {
            return Err(CallError::Pinned(
                tessera_orchestrator::local::pin_mismatch(
                    &tessera_orchestrator::plan::ComponentRef::Registry(name.to_string()),
                    pin,
                    active.loaded.digest(),
                ),
            ));
        }
        // Only what the manifest's `[tools]` section serves can be called.
        let function = active
            .loaded
            .served_function(function)
            .map_err(CallError::NotServed)?
            .0
            .qualified_name();
        let token = self.shutdown.child_token();
        let journal = self.journal.clone();
        let is_plan_step = plan.is_some();
        let (link, mut context) = match plan {
            Some(p) => (Some(p.link), Some(p.context)),
            None => (None, None),
        };
        // Boundary policies see the token the request presented.
        if let Some(id) = &caller.token {
            context.get_or_insert_with(Default::default).insert(
                tessera_runtime::policy::TOKEN_CONTEXT.to_string(),
                id.clone(),
            );
        }
        let context = context.map(Arc::new);
        let run = {
            let active = active.clone();
            let args = args.clone();
            let token = token.clone();
            async move {
                let recorded = tessera_journal::record_call_for(
                    &journal,
                    &active.loaded,
                    &function,
                    &args,
                    CallOptions {
                        cancel: Some(token),
                        context,
                        ..CallOptions::default()
                    },
                    Some(caller),
                    link,
                )
                .await;
                // The journal is let go before the permit: a shutdown that
                // saw every permit back finds no call holding the journal
                // open (a call finished in a task of its own holds no
                // reference to the server that would show it).
                drop(journal);
                drop(permit);
                recorded
            }
        };
        // The call runs in a task of its own if its caller goes away: it
        // keeps the caller's trace context.
        let run =
            opentelemetry::context::FutureExt::with_context(run, opentelemetry::Context::current());
        let ended = finish_linked(run, token, cancel).await;
        let (run_id, outcome) = ended??;
        self.metrics.call(name, &outcome, is_plan_step);
        Ok(Called {
            active,
            run_id,
            outcome,
        })
    }

    /// One of the server's call permits, and the active version of `name`
    /// (waiting for a load from the compile cache under way), held for the
    /// whole call: a swap does not touch it.
    pub(crate) async fn permit_and_active(
        &self,
        name: &str,
    ) -> Result<(tokio::sync::OwnedSemaphorePermit, Arc<Active>), CallError> {
        let Ok(permit) = self.calls.clone().try_acquire_owned() else {
            return Err(CallError::Overloaded(self.config.max_calls));
        };
        if self.active(name).is_none() {
            self.until_loaded_from_cache(name).await;
        }
        let active = self
            .active(name)
            .ok_or_else(|| match self.loading_of(name) {
                Some(l) => CallError::Loading {
                    name: l.name,
                    version: l.version,
                    compiling: l.compiling,
                    elapsed: l.started.elapsed(),
                },
                None => CallError::NoSuchComponent(name.to_string()),
            })?;
        Ok((permit, active))
    }

    /// Cancels every plan run and every running call and waits up to
    /// `wait` for their records and journals to be written, then flushes
    /// the journal.
    pub async fn stop_calls(&self, wait: Duration) {
        // Plan runs first: cancelled, each records how it stopped
        // (`cancelled`, resumable) while the store and journal are there.
        self.stop_plan_runs(wait).await;
        self.shutdown.cancel();
        self.calls_finished(wait).await;
        self.journal.flush();
    }

    /// Waits up to `wait` until no call is running (every permit is back).
    pub(crate) async fn calls_finished(&self, wait: Duration) -> bool {
        let all = u32::try_from(self.config.max_calls).unwrap_or(u32::MAX);
        tokio::time::timeout(wait, self.calls.acquire_many(all))
            .await
            .is_ok()
    }
}
