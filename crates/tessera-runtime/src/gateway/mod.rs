//! The gateway: the one interposition layer between a guest and the host.
//!
//! Every host interaction a component can make — clocks, random bytes,
//! stdout/stderr, `wasi:logging`, outbound HTTP, files, environment — is
//! routed through a [`Gateway`] belonging to the call. The gateway
//!
//! * checks the interaction against the component's [`Grants`],
//! * writes an [`AuditEvent`] for every denial, every limit hit and every
//!   outbound request,
//! * reports the interaction to an optional [`InteractionObserver`], which is
//!   where a journal plugs in to record a run (and later to answer from it),
//!   without any capability knowing that a journal exists.
//!
//! Each capability is a small module here with the same shape: a host-side
//! adapter (a `HostWallClock`, an `Rng`, an output stream, an HTTP hook, a
//! logging host) that holds a clone of the call's `Gateway` and calls into it.
//! The store data, [`HostState`], is a plain struct of the per-capability
//! states.

use std::sync::{Arc, Mutex};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::audit::{AuditEvent, AuditSink, Decision};
use crate::manifest::Grants;

pub mod clocks;
pub mod env;
pub mod files;
pub mod http;
pub mod logging;
pub mod random;
pub mod stdio;

/// Who is calling: the component digest and function every event names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallScope {
    /// Content digest of the component (`sha256:…`).
    pub component: String,
    /// The function being called (`name` or `interface#name`).
    pub function: String,
}

/// A `wasi:logging` severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Trace.
    Trace,
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Warn.
    Warn,
    /// Error.
    Error,
    /// Critical.
    Critical,
}

/// One host interaction, as seen by the gateway.
#[derive(Debug, Clone, PartialEq)]
pub enum Interaction<'a> {
    /// `wasi:clocks/wall-clock.now`, nanoseconds since the Unix epoch.
    WallClock {
        /// The time returned.
        nanos: u128,
    },
    /// `wasi:clocks/monotonic-clock.now`, nanoseconds.
    MonotonicClock {
        /// The instant returned.
        nanos: u64,
    },
    /// Random bytes handed to the guest (secure or insecure source).
    Random {
        /// The bytes.
        bytes: &'a [u8],
    },
    /// Bytes the guest wrote to stdout.
    Stdout {
        /// The bytes.
        bytes: &'a [u8],
    },
    /// Bytes the guest wrote to stderr.
    Stderr {
        /// The bytes.
        bytes: &'a [u8],
    },
    /// A `wasi:logging` record.
    Log {
        /// Severity.
        level: LogLevel,
        /// The guest-provided context.
        context: &'a str,
        /// The message.
        message: &'a str,
    },
    /// An outbound HTTP request and the gateway's decision.
    HttpRequest {
        /// Method.
        method: &'a str,
        /// Full URI.
        uri: &'a str,
        /// Whether it was sent.
        allowed: bool,
    },
    /// The environment variables handed to the guest.
    Environment {
        /// Name/value pairs.
        vars: &'a [(String, String)],
    },
    /// The arguments handed to the guest (`argv[0]` is the function name).
    Arguments {
        /// The arguments.
        args: &'a [String],
    },
    /// A path-based file operation and the gateway's decision.
    File {
        /// The operation (`open`, `stat`, `mkdir`, …).
        op: &'a str,
        /// The path as the guest gave it.
        path: &'a str,
        /// Whether it was allowed to proceed.
        allowed: bool,
    },
}

/// Receives every host interaction of a call, in order. This is the plug
/// point for the journal.
pub trait InteractionObserver: Send + Sync {
    /// Called once per interaction, on the thread running the guest.
    fn observe(&self, scope: &CallScope, interaction: &Interaction<'_>);
}

/// A `wasi:logging` record kept with the call's outcome.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogRecord {
    /// Severity.
    pub level: LogLevel,
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

struct GatewayInner {
    scope: CallScope,
    grants: Arc<Grants>,
    audit: Arc<dyn AuditSink>,
    observer: Option<Arc<dyn InteractionObserver>>,
    output: Mutex<CapturedOutput>,
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
            .field("scope", &self.inner.scope)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Creates the gateway for one call.
    pub fn new(
        scope: CallScope,
        grants: Arc<Grants>,
        audit: Arc<dyn AuditSink>,
        observer: Option<Arc<dyn InteractionObserver>>,
    ) -> Self {
        Self {
            inner: Arc::new(GatewayInner {
                scope,
                grants,
                audit,
                observer,
                output: Mutex::new(CapturedOutput::default()),
            }),
        }
    }

    /// The call this gateway serves.
    pub fn scope(&self) -> &CallScope {
        &self.inner.scope
    }

    /// The grants in force.
    pub fn grants(&self) -> &Grants {
        &self.inner.grants
    }

    /// Reports an interaction to the observer, if any.
    pub fn observe(&self, interaction: &Interaction<'_>) {
        if let Some(o) = &self.inner.observer {
            o.observe(&self.inner.scope, interaction);
        }
    }

    /// Writes an audit event for this call.
    pub fn audit(
        &self,
        capability: &str,
        target: impl Into<String>,
        decision: Decision,
        detail: Option<String>,
    ) {
        let scope = &self.inner.scope;
        self.inner.audit.record(&AuditEvent::now(
            &scope.component,
            &scope.function,
            capability,
            target,
            decision,
            detail,
        ));
    }

    /// Runs `f` with the call's captured output.
    pub(crate) fn with_output<R>(&self, f: impl FnOnce(&mut CapturedOutput) -> R) -> R {
        f(&mut self.inner.output.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Takes what the guest wrote so far.
    pub fn take_output(&self) -> CapturedOutput {
        self.with_output(std::mem::take)
    }
}

/// A limit that stopped a call. Carried as the error of the trap so the
/// caller can tell which limit it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitHit {
    /// The fuel budget ran out.
    #[error("fuel exhausted (limit {0})")]
    Fuel(u64),
    /// The wall-clock deadline passed.
    #[error("deadline exceeded (limit {0} ms)")]
    Deadline(u64),
    /// Linear memory would grow past the ceiling.
    #[error("memory limit {0} MiB exceeded")]
    Memory(u64),
    /// A table would grow past the ceiling.
    #[error("table limit {0} elements exceeded")]
    Table(usize),
    /// Output (stdout, stderr or the result) exceeded its ceiling.
    #[error("output limit {limit} bytes exceeded on {stream}")]
    Output {
        /// `stdout`, `stderr`, `logs` or `result`.
        stream: &'static str,
        /// The ceiling.
        limit: u64,
    },
    /// The guest's call stack overflowed.
    #[error("call stack exhausted")]
    Stack,
}

impl LimitHit {
    /// The capability name used in audit events.
    pub fn capability(&self) -> &'static str {
        match self {
            LimitHit::Fuel(_) => "fuel",
            LimitHit::Deadline(_) => "deadline",
            LimitHit::Memory(_) => "memory",
            LimitHit::Table(_) => "table",
            LimitHit::Output { .. } => "output",
            LimitHit::Stack => "stack",
        }
    }
}

/// Largest table a guest may grow to.
pub const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// Enforces the memory ceiling of one instance.
#[derive(Debug)]
pub struct MemoryLimiter {
    limit_bytes: usize,
    limit_mb: u64,
    peak_bytes: usize,
    gateway: Gateway,
}

impl MemoryLimiter {
    fn new(limit_mb: u64, gateway: Gateway) -> Self {
        Self {
            limit_bytes: usize::try_from(limit_mb.saturating_mul(1024 * 1024))
                .unwrap_or(usize::MAX),
            limit_mb,
            peak_bytes: 0,
            gateway,
        }
    }

    /// The largest total linear memory size seen (per memory), in bytes.
    pub fn peak_bytes(&self) -> usize {
        self.peak_bytes
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit_bytes {
            let hit = LimitHit::Memory(self.limit_mb);
            self.gateway.audit(
                hit.capability(),
                format!("{desired} bytes"),
                Decision::Limit,
                Some(format!(
                    "memory.grow from {current} to {desired} bytes refused: {hit}"
                )),
            );
            return Err(hit.into());
        }
        self.peak_bytes = self.peak_bytes.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            let hit = LimitHit::Table(MAX_TABLE_ELEMENTS);
            self.gateway
                .audit(hit.capability(), desired.to_string(), Decision::Limit, None);
            return Err(hit.into());
        }
        Ok(true)
    }
}

/// The data of one store: the per-capability states of one call.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) http_gate: http::HttpGate,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) gateway: Gateway,
}

impl HostState {
    /// Builds the per-call state: WASI context from the grants, with every
    /// host-facing hook routed through `gateway`.
    pub fn new(gateway: Gateway) -> Result<Self, crate::Error> {
        let grants = gateway.grants().clone();
        let mut b = WasiCtx::builder();
        b.stdin(tokio::io::empty())
            .stdout(stdio::CapturedStream::stdout(gateway.clone()))
            .stderr(stdio::CapturedStream::stderr(gateway.clone()))
            .wall_clock(clocks::GatewayWallClock::new(gateway.clone()))
            .monotonic_clock(clocks::GatewayMonotonicClock::new(gateway.clone()))
            .secure_random(random::GatewayRng::secure(gateway.clone()))
            .insecure_random(random::GatewayRng::insecure(gateway.clone()))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        // Environment and arguments are answered by the gateway (see
        // `env.rs`); the context keeps a copy for the preview1 adapter's
        // benefit and for completeness.
        b.arg(&gateway.scope().function);
        b.args(&grants.args);
        for (k, v) in &grants.env.vars {
            b.env(k, v);
        }
        files::preopen(&mut b, &grants.mounts)?;
        Ok(Self {
            wasi: b.build(),
            http: WasiHttpCtx::new(),
            http_gate: http::HttpGate::new(gateway.clone()),
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(grants.limits.memory_mb, gateway.clone()),
            gateway,
        })
    }

    /// The call's gateway.
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// Peak linear memory seen during the call, in bytes.
    pub fn peak_memory_bytes(&self) -> usize {
        self.limiter.peak_bytes()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_gate,
        }
    }
}
