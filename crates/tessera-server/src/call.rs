//! The one call path, shared by the HTTP API and MCP (both transports),
//! and the one place that decides what the end of a call means to a
//! client.
//!
//! [`Server::call`] takes a permit of the server's limit, the `Arc` of the
//! active version, and runs the journaled call in its own task, cancelled
//! when the caller goes away or the server shuts down. [`Called::verdict`]
//! and `ApiError::from(CallError)` classify the result once: the HTTP API
//! sends it as a status and body, MCP as a tool result (`isError` with a
//! message) or, for a server fault, a protocol error. A call that ran and
//! failed carries what the guest left behind ([`GuestDiagnostics`]). A
//! function the manifest's `[tools]` section does not serve is refused
//! here, before anything runs or is journaled.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tessera_runtime::{CallFailure, CallOptions, CallOutcome, Decision};
use tokio_util::sync::CancellationToken;

use crate::Server;
use crate::active::Active;
use crate::error::{ApiError, ErrorCode, GuestDiagnostics, LimitRef};

/// A finished call.
pub struct Called {
    /// The version that served the call.
    pub active: Arc<Active>,
    /// The journal run.
    pub run_id: String,
    /// What came out.
    pub outcome: CallOutcome,
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
    /// The call's task failed.
    #[error("call task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The function is unknown or not served (the manifest's `[tools]`
    /// section): refused before anything ran or was journaled.
    #[error(transparent)]
    NotServed(tessera_runtime::Error),
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
            (CallFailure::Trap { .. } | CallFailure::Diverged(_), None) => {
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

impl Server {
    /// Calls `function` of the active version of component `name`, and
    /// journals the run with `caller` in its header.
    ///
    /// The call runs in its own task: if the caller goes away (its future
    /// is dropped) or `cancel` fires, the guest is interrupted at its next
    /// epoch tick and the run is still journaled to its end, as cancelled.
    /// Shutting the server down cancels every call still running after the
    /// grace period.
    pub async fn call(
        &self,
        name: &str,
        function: &str,
        args: &Value,
        cancel: Option<CancellationToken>,
        caller: tessera_journal::Caller,
    ) -> Result<Called, CallError> {
        let Ok(permit) = self.calls.clone().try_acquire_owned() else {
            return Err(CallError::Overloaded(self.config.max_calls));
        };
        if self.active(name).is_none() {
            self.until_loaded_from_cache(name).await;
        }
        // Hold the version for the whole call: a swap does not touch it.
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
        // Only what the manifest's `[tools]` section serves can be called.
        let function = active
            .loaded
            .served_function(function)
            .map_err(CallError::NotServed)?
            .0
            .qualified_name();
        let token = self.shutdown.child_token();
        // Cancels the call if this future is dropped before it ends.
        let _dropped = token.clone().drop_guard();
        let journal = self.journal.clone();
        let task = {
            let active = active.clone();
            let args = args.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let _permit = permit;
                tessera_journal::record_call_with(
                    &journal,
                    &active.loaded,
                    &function,
                    &args,
                    CallOptions {
                        cancel: Some(token),
                        ..CallOptions::default()
                    },
                    Some(caller),
                )
                .await
            })
        };
        let linked = async {
            match &cancel {
                Some(c) => c.cancelled().await,
                None => std::future::pending().await,
            }
        };
        let mut task = std::pin::pin!(task);
        let joined = tokio::select! {
            biased;
            r = &mut task => r,
            () = linked => {
                token.cancel();
                task.await
            }
        };
        let (run_id, outcome) = joined??;
        Ok(Called {
            active,
            run_id,
            outcome,
        })
    }

    /// Cancels every running call and waits up to `wait` for their journals
    /// to be written, then flushes the journal.
    pub async fn stop_calls(&self, wait: Duration) {
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
