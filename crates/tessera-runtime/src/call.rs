//! Loaded components and calls from JSON.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use wasmtime::component::{InstancePre, Val};
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::audit::Decision;
use crate::cache::CacheStatus;
use crate::gateway::{
    CallScope, CapturedOutput, Divergence, Gateway, GatewayParts, InteractionObserver, Recorded,
    ReplaySource,
};
use crate::host::HostState;
use crate::json::{ArgError, from_val, to_val};
use crate::limits::LimitHit;
use crate::manifest::Grants;
use crate::runtime::{Prepared, Runtime};
use crate::schema::FunctionInfo;
use crate::tools::Exposure;
use crate::{Error, audit::AuditEvent, audit::MemoryAudit};

/// Extra time allowed past the deadline for a guest blocked in a host call
/// (the epoch check only fires while wasm code runs).
const HOST_WAIT_GRACE: Duration = Duration::from_millis(50);

/// A compiled, pre-instantiated component with its grants. Each call gets a
/// fresh instance, so no state leaks from one call to the next.
#[derive(Clone)]
pub struct LoadedComponent {
    runtime: Runtime,
    prepared: Prepared,
    pub(crate) pre: InstancePre<HostState>,
    functions: Arc<Vec<FunctionInfo>>,
    exposures: Arc<Vec<Exposure>>,
    grants: Arc<Grants>,
    permits: Arc<Semaphore>,
    cache_status: CacheStatus,
}

impl std::fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("origin", &self.prepared.origin)
            .field("digest", &self.prepared.digest)
            .finish_non_exhaustive()
    }
}

/// Per-call options beyond the arguments.
#[derive(Clone, Default)]
pub struct CallOptions {
    /// Receives this call's interactions (in addition to the runtime-wide
    /// observer): the journal's recorder.
    pub observer: Option<Arc<dyn InteractionObserver>>,
    /// Answer every host interaction from a recording instead of the host.
    pub replay: Option<Arc<dyn ReplaySource>>,
    /// Snapshot the guest's memories and globals when the call ends (the
    /// runtime needs `RuntimeConfig::guest_debug`).
    pub snapshot: bool,
    /// Cancelling this token stops the call: a guest running wasm stops at
    /// its next epoch tick, a guest waiting on the host at once. The call
    /// then ends with [`CallFailure::Cancelled`].
    pub cancel: Option<CancellationToken>,
    /// Values this call is given, read by the guest through `wasi:config`
    /// (`get`, `get-all`) besides its manifest's: every key starts with
    /// `tessera.` (a plan step's `tessera.idempotency_key`, …). Reads are
    /// journaled like any configuration read.
    pub context: Option<Arc<std::collections::BTreeMap<String, String>>>,
    /// The agent host an agent's turn reaches through its `tessera:agent`
    /// imports (the orchestrator's; none for any other call).
    pub agent: Option<Arc<dyn crate::capability::agent::AgentLink>>,
    /// With `replay`: answer the recorded steps, then go on live instead of
    /// diverging where the recording ends (a turn that stopped to wait for
    /// an approval, run again after the decision).
    pub continue_live: bool,
    /// Connect the guest's stdin, stdout and stderr to the caller's
    /// (`tessera run`) instead of capturing them: output is written through
    /// as the guest writes it (each write still a step; not held, so
    /// `max_output_bytes` does not apply), and stdin is read from the
    /// caller's, each chunk a step that a replay answers.
    pub terminal: Option<crate::capability::stdio::Terminal>,
    /// Runs the provider side of the call's linked imports (`[imports]`),
    /// recording each as a run of its own (the journal's); `None`: the
    /// providers are called directly.
    pub links: Option<Arc<dyn crate::capability::link::LinkedCalls>>,
    /// How many linked calls this call is nested in (0 for a call made by
    /// a caller; a provider's call is one deeper than its consumer's).
    pub link_depth: u32,
}

impl std::fmt::Debug for CallOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallOptions")
            .field("observer", &self.observer.is_some())
            .field("replay", &self.replay.is_some())
            .field("snapshot", &self.snapshot)
            .field("cancel", &self.cancel.is_some())
            .field("context", &self.context)
            .field("agent", &self.agent.as_ref().map(|a| a.id()))
            .field("continue_live", &self.continue_live)
            .field("terminal", &self.terminal.is_some())
            .field("links", &self.links.is_some())
            .field("link_depth", &self.link_depth)
            .finish()
    }
}

/// Reports to two observers.
struct TeeObserver(Arc<dyn InteractionObserver>, Arc<dyn InteractionObserver>);

impl InteractionObserver for TeeObserver {
    fn observe(&self, scope: &CallScope, index: u64, step: &Recorded) {
        self.0.observe(scope, index, step);
        self.1.observe(scope, index, step);
    }
}

/// How a call ended when it did not return normally.
#[derive(Debug, Clone, PartialEq)]
pub enum CallFailure {
    /// A limit stopped the guest.
    Limit(LimitHit),
    /// Replaying, the guest asked for something the recording does not hold.
    Diverged(Divergence),
    /// The caller cancelled the call (an MCP cancellation, a client that
    /// went away, a server shutting down).
    Cancelled,
    /// The guest exited with a non-zero status (`wasi:cli/exit`, a
    /// preview 1 `proc_exit`). Exiting with 0 is a normal return.
    Exit(i32),
    /// The guest trapped (panic, `unreachable`, out-of-bounds access, …).
    Trap {
        /// The trap message, naming the component and function.
        message: String,
        /// The guest backtrace, with source lines if the component has DWARF.
        backtrace: Option<String>,
    },
}

impl std::fmt::Display for CallFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallFailure::Limit(l) => write!(f, "{l}"),
            CallFailure::Diverged(d) => write!(f, "{d}"),
            CallFailure::Cancelled => f.write_str("call cancelled"),
            CallFailure::Exit(code) => write!(f, "exited with status {code}"),
            CallFailure::Trap { message, .. } => write!(f, "{message}"),
        }
    }
}

/// Everything that came out of a call.
#[derive(Debug, Clone)]
pub struct CallOutcome {
    /// The function's qualified name.
    pub function: String,
    /// The JSON result, or how the call failed.
    pub result: Result<Value, CallFailure>,
    /// Whether the result is a WIT `result` in its `err` case (a guest error).
    pub guest_error: bool,
    /// Guest stdout, stderr and logs.
    pub output: CapturedOutput,
    /// Fuel consumed.
    pub fuel_consumed: u64,
    /// Peak total linear memory of the instance (all its memories), in bytes.
    pub peak_memory_bytes: usize,
    /// Wall-clock duration of the call, instantiation included.
    pub duration: Duration,
    /// Audit events this call produced (denials, limit hits, outbound requests).
    pub audit: Vec<AuditEvent>,
    /// Number of host interactions the call made.
    pub interactions: u64,
    /// Replaying: the first departure from the recording, if any.
    pub divergence: Option<Divergence>,
    /// The guest's state when the call ended, if asked for.
    pub snapshot: Option<crate::Snapshot>,
    /// What the call consumed, by counter (`llm.prompt_tokens`,
    /// `llm.completion_tokens`): the sums the capabilities added through
    /// [`Gateway::add_usage`], recorded and replayed calls alike.
    pub usage: std::collections::BTreeMap<String, u64>,
}

impl CallOutcome {
    /// Whether any interaction of this call was denied.
    pub fn denied(&self) -> bool {
        self.audit.iter().any(|e| e.decision == Decision::Deny)
    }
}

/// Sends each event to both the runtime's sink and the call's own list.
struct TeeAudit {
    runtime: Arc<dyn crate::AuditSink>,
    call: Arc<MemoryAudit>,
}

impl crate::AuditSink for TeeAudit {
    fn record(&self, event: &AuditEvent) {
        self.runtime.record(event);
        self.call.record(event);
    }
}

impl LoadedComponent {
    pub(crate) fn new(
        runtime: Runtime,
        prepared: Prepared,
        pre: InstancePre<HostState>,
        functions: Vec<FunctionInfo>,
        exposures: Vec<Exposure>,
        grants: Grants,
        cache_status: CacheStatus,
    ) -> Self {
        let permits = Arc::new(Semaphore::new(grants.limits.max_concurrent as usize));
        Self {
            runtime,
            prepared,
            pre,
            functions: Arc::new(functions),
            exposures: Arc::new(exposures),
            grants: Arc::new(grants),
            permits,
            cache_status,
        }
    }

    /// The names of what it imports (`wasi:keyvalue/store@0.2.0-draft2`, …).
    pub fn imports(&self) -> Vec<String> {
        let c = self.pre.component();
        c.component_type()
            .imports(c.engine())
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// `sha256:<hex>` of the component file.
    pub fn digest(&self) -> &str {
        &self.prepared.digest
    }

    /// Where the component came from.
    pub fn origin(&self) -> &str {
        &self.prepared.origin
    }

    /// The runtime it was loaded into.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The bytes it was loaded from (the core module, if adapted).
    pub fn source_bytes(&self) -> &[u8] {
        &self.prepared.source_bytes
    }

    /// Whether it was a core module adapted with the preview1 adapter.
    pub fn adapted(&self) -> bool {
        self.prepared.adapted
    }

    /// What the compile cache did when this component was loaded.
    pub fn cache_status(&self) -> &CacheStatus {
        &self.cache_status
    }

    /// The grants every call runs under.
    pub fn grants(&self) -> &Grants {
        &self.grants
    }

    /// The same grants, shared (what a journal header keeps without
    /// copying them for every call).
    pub fn shared_grants(&self) -> Arc<Grants> {
        self.grants.clone()
    }

    /// Every exported function with its schemas.
    pub fn functions(&self) -> &[FunctionInfo] {
        &self.functions
    }

    /// Finds a function by qualified name (`iface@ver#name`), short name
    /// (`iface#name`, also `iface.name`) or bare name when unambiguous.
    pub fn function(&self, name: &str) -> Result<&FunctionInfo, Error> {
        crate::schema::find(&self.functions, name)
    }

    /// Every exported function with how the manifest's `[tools]` section
    /// offers it (see [`crate::tools`]), in export order.
    pub fn exposures(&self) -> impl Iterator<Item = (&FunctionInfo, &Exposure)> {
        self.functions.iter().zip(self.exposures.iter())
    }

    /// Finds a function as [`LoadedComponent::function`] does, and refuses
    /// one that is not served (`Error::NotServed`). Servers call this;
    /// [`LoadedComponent::call_json`] does not, so the runtime can call any
    /// export. An unknown name's error lists only the served functions.
    pub fn served_function(&self, name: &str) -> Result<(&FunctionInfo, &Exposure), Error> {
        let found = crate::schema::find(&self.functions, name).map_err(|e| match e {
            Error::NoSuchFunction { name, .. } => Error::NoSuchFunction {
                name,
                available: self
                    .exposures()
                    .filter(|(_, x)| x.served())
                    .map(|(f, _)| f.short_name())
                    .collect::<Vec<_>>()
                    .join(", "),
            },
            other => other,
        })?;
        let (f, x) = self
            .exposures()
            .find(|(g, _)| std::ptr::eq(*g, found))
            .ok_or_else(|| Error::NoSuchFunction {
                name: name.to_string(),
                available: String::new(),
            })?;
        match &x.hidden {
            None => Ok((f, x)),
            Some(why) => Err(Error::NotServed {
                function: f.short_name(),
                reason: why.to_string(),
            }),
        }
    }

    /// Converts a JSON argument object into parameter values, validating
    /// every value against its WIT type.
    pub fn arguments(&self, f: &FunctionInfo, args: &Value) -> Result<Vec<Val>, Error> {
        let bad = |error: ArgError| Error::BadArguments {
            function: f.short_name(),
            error,
        };
        let empty = serde_json::Map::new();
        let obj = match args {
            Value::Object(o) => o,
            Value::Null => &empty,
            other => {
                return Err(bad(ArgError {
                    path: "$".into(),
                    message: format!(
                        "arguments must be a JSON object keyed by parameter name, got {}",
                        match other {
                            Value::Array(_) => "an array",
                            Value::String(_) => "a string",
                            Value::Number(_) => "a number",
                            _ => "a boolean",
                        }
                    ),
                }));
            }
        };
        if let Some(extra) = obj.keys().find(|k| !f.params.iter().any(|(n, _)| n == *k)) {
            return Err(bad(ArgError {
                path: format!("$.{extra}"),
                message: format!(
                    "unknown parameter; `{}` takes {}",
                    f.short_name(),
                    if f.params.is_empty() {
                        "no parameters".to_string()
                    } else {
                        f.params
                            .iter()
                            .map(|(n, _)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
            }));
        }
        f.params
            .iter()
            .map(|(name, ty)| {
                let path = format!("$.{name}");
                match obj.get(name) {
                    Some(v) => to_val(v, ty, &path),
                    None if matches!(ty, wasmtime::component::Type::Option(_)) => {
                        Ok(Val::Option(None))
                    }
                    None => Err(ArgError {
                        path,
                        message: format!(
                            "missing parameter of type {}",
                            crate::json::type_name(ty)
                        ),
                    }),
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)
    }

    /// Calls `function` with a JSON argument object, in a fresh instance,
    /// under the component's grants and limits.
    pub async fn call_json(&self, function: &str, args: &Value) -> Result<CallOutcome, Error> {
        self.call_json_with(function, args, CallOptions::default())
            .await
    }

    /// [`LoadedComponent::call_json`] with an observer or a replay source.
    pub async fn call_json_with(
        &self,
        function: &str,
        args: &Value,
        options: CallOptions,
    ) -> Result<CallOutcome, Error> {
        let (f, params) = self.callable(function, args)?;
        let call_audit = Arc::new(MemoryAudit::default());
        let (gateway, cancel, snapshot) = {
            let (scope, parts, cancel, snapshot) = self.call_parts(f, options, &call_audit);
            (Gateway::new(scope, parts), cancel, snapshot)
        };
        let _permit = self.permit(&gateway)?;
        let started = Instant::now();
        let mut store = self.new_store(&gateway)?;
        let pre = &self.pre;
        let export = f.export;
        let result_count = usize::from(f.result.is_some());
        let raw = self
            .guarded(&mut store, &gateway, cancel, started, |store| async move {
                let instance = pre.instantiate_async(&mut *store).await?;
                call_export(store, instance, export, &params, result_count).await
            })
            .await;
        let ran = Ran::measure(&mut store, self.grants.limits, started, snapshot);
        drop(store);
        Ok(self.outcome(f, &gateway, &call_audit, raw, ran))
    }

    /// The function `function` names, checked callable, and its arguments.
    fn callable(&self, function: &str, args: &Value) -> Result<(&FunctionInfo, Vec<Val>), Error> {
        let f = self.function(function)?;
        if let Some(reason) = &f.not_callable {
            return Err(Error::NotCallable {
                function: f.short_name(),
                reason: reason.clone(),
            });
        }
        let params = self.arguments(f, args)?;
        Ok((f, params))
    }

    /// A call's scope and gateway parts from its options, with what the
    /// caller keeps: its cancellation token and whether to snapshot.
    pub(crate) fn call_parts(
        &self,
        f: &FunctionInfo,
        options: CallOptions,
        call_audit: &Arc<MemoryAudit>,
    ) -> (CallScope, GatewayParts, Option<CancellationToken>, bool) {
        let scope = CallScope {
            component: self.prepared.digest.clone(),
            name: self.prepared.name.clone(),
            function: f.qualified_name(),
        };
        let parts = GatewayParts {
            grants: self.grants.clone(),
            host: self.runtime.inner.host.clone(),
            audit: Arc::new(TeeAudit {
                runtime: self.runtime.inner.audit.clone(),
                call: call_audit.clone(),
            }),
            observer: match (self.runtime.inner.observer.clone(), options.observer) {
                (Some(a), Some(b)) => Some(Arc::new(TeeObserver(a, b))),
                (a, b) => a.or(b),
            },
            replay: options.replay,
            context: options.context,
            agent: options.agent,
            continue_live: options.continue_live,
            terminal: options.terminal,
            links: options.links,
            link_depth: options.link_depth,
        };
        (scope, parts, options.cancel, options.snapshot)
    }

    /// A permit of the component's concurrency limit, or `Busy` (audited).
    pub(crate) fn permit(
        &self,
        gateway: &Gateway,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, Error> {
        let limits = self.grants.limits;
        self.permits.clone().try_acquire_owned().map_err(|_| {
            gateway.audit(
                "instances",
                format!("max_concurrent={}", limits.max_concurrent),
                Decision::Limit,
                Some("call refused: component at its concurrency limit".into()),
            );
            Error::Busy {
                limit: limits.max_concurrent,
            }
        })
    }

    /// A store for `gateway`'s call (or session), with the memory limiter.
    pub(crate) fn new_store(&self, gateway: &Gateway) -> Result<Store<HostState>, Error> {
        let state = HostState::new(gateway.clone())?;
        let mut store = Store::new(&self.runtime.inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        Ok(store)
    }

    /// Runs `work` in `store` under the call's limits: the fuel budget, the
    /// wall-clock deadline (epoch ticks while wasm runs, a host timeout
    /// while the guest waits on the host), and cancellation.
    pub(crate) async fn guarded<'s, W, F>(
        &self,
        store: &'s mut Store<HostState>,
        gateway: &Gateway,
        cancel: Option<CancellationToken>,
        started: Instant,
        work: W,
    ) -> wasmtime::Result<Vec<Val>>
    where
        W: FnOnce(&'s mut Store<HostState>) -> F,
        F: std::future::Future<Output = wasmtime::Result<Vec<Val>>> + 's,
    {
        let limits = self.grants.limits;
        if let Err(e) = store.set_fuel(limits.fuel) {
            return Err(e.context("setting the fuel budget"));
        }
        let timeout = Duration::from_millis(limits.timeout_ms);
        let deadline = started + timeout;
        let deadline_gateway = gateway.clone();
        store.set_epoch_deadline(1);
        let deterministic = self.grants.deterministic.is_some();
        let tick_cancel = cancel.clone();
        // When the guest last ran wasm (its latest epoch tick): in
        // deterministic runs the host-wait guard below counts from there.
        let last_tick = Arc::new(std::sync::Mutex::new(started));
        let tick_seen = last_tick.clone();
        store.epoch_deadline_callback(move |_| {
            if tick_cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
                return Err(Cancelled.into());
            }
            // Deterministic runs stop on fuel only: where an epoch lands
            // depends on the machine, so it may yield but never decide.
            // A divergence found where the guest could not be trapped (an
            // HTTP exchange) stops it at the next tick.
            if let Some(d) = deadline_gateway.pending_divergence() {
                return Err(d.into());
            }
            if !deterministic && Instant::now() >= deadline {
                let hit = LimitHit::Deadline(limits.timeout_ms);
                deadline_gateway.audit(
                    hit.capability(),
                    format!("{} ms", limits.timeout_ms),
                    Decision::Limit,
                    Some(hit.to_string()),
                );
                Err(hit.into())
            } else {
                if deterministic {
                    *tick_seen.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                }
                // Yield to other tasks at every tick: a spinning guest cannot
                // starve concurrent calls on the same executor thread.
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let run = work(store);
        // With tracing on, the call's span is the current context while
        // the guest runs: what its host calls start (a message an agent
        // sends, a tool call) hangs under it.
        let trace = gateway.trace_context();
        let run = async move {
            match trace {
                Some(cx) => opentelemetry::context::FutureExt::with_context(run, cx).await,
                None => run.await,
            }
        };
        let cancelled = async {
            match &cancel {
                Some(c) => c.cancelled().await,
                None => std::future::pending().await,
            }
        };
        // Ends the wait for a guest blocked on the host, where epoch checks
        // do not fire: `timeout` plus a grace after the start of the call or,
        // in a deterministic run (whose deadline is fuel only), after the
        // guest last ran wasm.
        let host_wait_guard = async {
            let mut since = started;
            loop {
                tokio::time::sleep_until((since + timeout + HOST_WAIT_GRACE).into()).await;
                let latest = *last_tick.lock().unwrap_or_else(|p| p.into_inner());
                if !deterministic || latest == since {
                    return;
                }
                since = latest;
            }
        };
        let timed = tokio::select! {
            biased;
            r = run => Ok(r),
            () = host_wait_guard => Err(()),
            // A guest running wasm stops at its next epoch tick (above); one
            // waiting on the host stops here.
            () = cancelled => Ok(Err(Cancelled.into())),
        };
        match timed {
            Ok(r) => r,
            Err(()) => {
                let hit = LimitHit::Deadline(limits.timeout_ms);
                gateway.audit(
                    hit.capability(),
                    format!("{} ms", limits.timeout_ms),
                    Decision::Limit,
                    Some(format!("{hit} while waiting on the host")),
                );
                Err(hit.into())
            }
        }
    }

    /// The outcome of a call that ran: its result read (an exit with 0 is
    /// a return; the result's size limit applied; a failure classified),
    /// with the gateway's output, audit, steps and usage.
    pub(crate) fn outcome(
        &self,
        f: &FunctionInfo,
        gateway: &Gateway,
        call_audit: &MemoryAudit,
        raw: wasmtime::Result<Vec<Val>>,
        ran: Ran,
    ) -> CallOutcome {
        let limits = self.grants.limits;
        let mut guest_error = false;
        // A guest that exits with 0 (a command calling `exit(0)`) returned;
        // what it would have returned is its success (`ok` of a `result`).
        let raw = match raw {
            Err(e)
                if e.downcast_ref::<wasmtime_wasi::I32Exit>()
                    .is_some_and(|x| x.0 == 0) =>
            {
                Ok(match &f.result {
                    Some(wasmtime::component::Type::Result(_)) => vec![Val::Result(Ok(None))],
                    _ => Vec::new(),
                })
            }
            other => other,
        };
        let result = match raw {
            Ok(vals) => {
                let json = match (vals.first(), &f.result) {
                    (Some(v), Some(ty)) => {
                        guest_error = matches!(v, Val::Result(Err(_)));
                        from_val(v, ty)
                    }
                    _ => Value::Null,
                };
                let size = json_len(&json);
                if size > limits.max_output_bytes {
                    let hit = LimitHit::Output {
                        stream: "result",
                        limit: limits.max_output_bytes,
                    };
                    gateway.audit(
                        hit.capability(),
                        "result",
                        Decision::Limit,
                        Some(hit.to_string()),
                    );
                    Err(CallFailure::Limit(hit))
                } else {
                    Ok(json)
                }
            }
            Err(e) => Err(classify(
                e,
                &limits,
                gateway,
                &f.short_name(),
                &self.prepared.origin,
            )),
        };
        let outcome = CallOutcome {
            function: f.qualified_name(),
            interactions: gateway.interaction_count(),
            divergence: gateway.divergence(),
            snapshot: ran.snapshot,
            result,
            guest_error,
            output: gateway.take_output(),
            fuel_consumed: ran.fuel_consumed,
            peak_memory_bytes: ran.peak_memory_bytes,
            duration: ran.duration,
            audit: call_audit.take(),
            usage: gateway.usage(),
        };
        gateway.end_trace(&outcome);
        outcome
    }

    /// Opens a session: one instance kept live for several calls, so that
    /// what one call leaves in the guest (a Python namespace, a cache) is
    /// there for the next. It holds one of the component's concurrency
    /// permits until dropped. Each call has its own scope, observer,
    /// replay source, limits and outcome, as a call of its own would.
    pub async fn session(&self) -> Result<Session, Error> {
        let call_audit = Arc::new(MemoryAudit::default());
        let scope = CallScope {
            component: self.prepared.digest.clone(),
            name: self.prepared.name.clone(),
            function: "[session]".to_string(),
        };
        let parts = GatewayParts {
            grants: self.grants.clone(),
            host: self.runtime.inner.host.clone(),
            audit: Arc::new(TeeAudit {
                runtime: self.runtime.inner.audit.clone(),
                call: call_audit,
            }),
            observer: None,
            replay: None,
            context: None,
            agent: None,
            continue_live: false,
            terminal: None,
            links: None,
            link_depth: 0,
        };
        let gateway = Gateway::new(scope, parts);
        let permit = self.permit(&gateway)?;
        let started = Instant::now();
        let mut store = self.new_store(&gateway)?;
        let pre = &self.pre;
        let mut instance = None;
        let slot = &mut instance;
        let raw = self
            .guarded(&mut store, &gateway, None, started, |store| async move {
                *slot = Some(pre.instantiate_async(&mut *store).await?);
                wasmtime::Result::Ok(Vec::new())
            })
            .await;
        let instance = match (raw, instance) {
            (Ok(_), Some(i)) => i,
            (Err(e), _) => {
                return Err(Error::Instantiate {
                    origin: self.prepared.origin.clone(),
                    message: classify(
                        e,
                        &self.grants.limits,
                        &gateway,
                        "[session]",
                        &self.prepared.origin,
                    )
                    .to_string(),
                });
            }
            (Ok(_), None) => {
                return Err(Error::Instantiate {
                    origin: self.prepared.origin.clone(),
                    message: "no instance".into(),
                });
            }
        };
        Ok(Session {
            component: self.clone(),
            store,
            instance,
            gateway,
            ended: None,
            calls: 0,
            _permit: permit,
        })
    }
}

/// Calls the export `export` of `instance` with `params`.
async fn call_export(
    store: &mut Store<HostState>,
    instance: wasmtime::component::Instance,
    export: wasmtime::component::ComponentExportIndex,
    params: &[Val],
    result_count: usize,
) -> wasmtime::Result<Vec<Val>> {
    let func = instance
        .get_func(&mut *store, export)
        .ok_or_else(|| wasmtime::Error::msg("export not found in the instance"))?;
    let mut results = vec![Val::Bool(false); result_count];
    func.call_async(&mut *store, params, &mut results).await?;
    Ok(results)
}

/// What the store says about a call once it has run.
pub(crate) struct Ran {
    duration: Duration,
    fuel_consumed: u64,
    peak_memory_bytes: usize,
    snapshot: Option<crate::Snapshot>,
}

impl Ran {
    pub(crate) fn measure(
        store: &mut Store<HostState>,
        limits: crate::Limits,
        started: Instant,
        snapshot: bool,
    ) -> Self {
        Self {
            duration: started.elapsed(),
            fuel_consumed: limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0)),
            peak_memory_bytes: store.data().peak_memory_bytes(),
            snapshot: snapshot.then(|| crate::Snapshot::take(store)),
        }
    }
}

/// A live instance of a component kept for several calls
/// ([`LoadedComponent::session`]).
///
/// A call that traps or hits a limit ends the session: wasmtime does not
/// enter an instance again after a trap, and its state may be half
/// updated. Later calls are refused with [`Error::SessionEnded`].
pub struct Session {
    component: LoadedComponent,
    store: Store<HostState>,
    instance: wasmtime::component::Instance,
    gateway: Gateway,
    ended: Option<String>,
    calls: u64,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("component", &self.component.digest())
            .field("calls", &self.calls)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Calls `function` in the session's instance.
    pub async fn call_json(&mut self, function: &str, args: &Value) -> Result<CallOutcome, Error> {
        self.call_json_with(function, args, CallOptions::default())
            .await
    }

    /// [`Session::call_json`] with an observer, a replay source, a
    /// cancellation token or a snapshot (the component's limits apply to
    /// each call: fuel, deadline; memory counts what the instance holds).
    pub async fn call_json_with(
        &mut self,
        function: &str,
        args: &Value,
        options: CallOptions,
    ) -> Result<CallOutcome, Error> {
        if let Some(why) = &self.ended {
            return Err(Error::SessionEnded {
                reason: why.clone(),
            });
        }
        let component = self.component.clone();
        let (f, params) = component.callable(function, args)?;
        let call_audit = Arc::new(MemoryAudit::default());
        let (scope, parts, cancel, snapshot) = component.call_parts(f, options, &call_audit);
        self.gateway.next_call(scope, parts);
        let started = Instant::now();
        let instance = self.instance;
        let export = f.export;
        let result_count = usize::from(f.result.is_some());
        let raw =
            component
                .guarded(
                    &mut self.store,
                    &self.gateway,
                    cancel,
                    started,
                    |store| async move {
                        call_export(store, instance, export, &params, result_count).await
                    },
                )
                .await;
        let ran = Ran::measure(&mut self.store, component.grants.limits, started, snapshot);
        self.calls += 1;
        let outcome = component.outcome(f, &self.gateway, &call_audit, raw, ran);
        if let Err(e) = &outcome.result {
            self.ended = Some(e.to_string());
        }
        Ok(outcome)
    }

    /// How many calls the session has made.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Why the session ended (a call trapped or hit a limit), if it has.
    pub fn ended(&self) -> Option<&str> {
        self.ended.as_deref()
    }

    /// The linear memory the instance holds now, in bytes (all its
    /// memories).
    pub fn memory_bytes(&self) -> usize {
        self.store.data().limiter.current_bytes()
    }

    /// The component the session runs.
    pub fn component(&self) -> &LoadedComponent {
        &self.component
    }
}

/// The length of `value` as JSON, counted without writing it anywhere.
fn json_len(value: &Value) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    // Writing to a counter cannot fail, and a `Value` always serializes.
    let _ = serde_json::to_writer(&mut n, value);
    n.0
}

/// The error a cancelled call stops with.
#[derive(Debug, thiserror::Error)]
#[error("call cancelled")]
struct Cancelled;

/// Sorts a failed call into a limit hit, a cancellation or a trap.
fn classify(
    e: wasmtime::Error,
    limits: &crate::Limits,
    gateway: &Gateway,
    function: &str,
    origin: &str,
) -> CallFailure {
    if let Some(hit) = e.downcast_ref::<LimitHit>() {
        return CallFailure::Limit(hit.clone());
    }
    if let Some(d) = e.downcast_ref::<Divergence>() {
        return CallFailure::Diverged(d.clone());
    }
    if e.downcast_ref::<Cancelled>().is_some() {
        return CallFailure::Cancelled;
    }
    if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return CallFailure::Exit(exit.0);
    }
    let backtrace = e
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|bt| bt.to_string());
    if let Some(trap) = e.downcast_ref::<Trap>() {
        let hit = match trap {
            Trap::OutOfFuel => Some(LimitHit::Fuel(limits.fuel)),
            Trap::StackOverflow => Some(LimitHit::Stack),
            Trap::Interrupt => Some(LimitHit::Deadline(limits.timeout_ms)),
            _ => None,
        };
        if let Some(hit) = hit {
            gateway.audit(
                hit.capability(),
                match &hit {
                    LimitHit::Fuel(n) => format!("{n} fuel"),
                    _ => hit.to_string(),
                },
                Decision::Limit,
                Some(hit.to_string()),
            );
            return CallFailure::Limit(hit);
        }
    }
    // Walk the chain for the most specific message (the guest's own panic
    // message arrives on stderr; the trap says what the machine saw).
    let root = e
        .chain()
        .last()
        .map(|c| c.to_string())
        .unwrap_or_else(|| e.to_string());
    let message = format!("{origin}: `{function}` trapped: {root}");
    CallFailure::Trap { message, backtrace }
}
