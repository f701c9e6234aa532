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
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
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

/// Bytes in an interaction, serialized as lowercase hex.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bytes(pub Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(s) if s.len() <= 80 => write!(f, "{s:?}"),
            _ => write!(f, "<{} bytes>", self.0.len()),
        }
    }
}

impl serde::Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> serde::Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        hex::decode(&s).map(Bytes).map_err(serde::de::Error::custom)
    }
}

/// Which `wasi:random` interface was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RandomSource {
    /// `wasi:random/random`.
    Secure,
    /// `wasi:random/insecure`.
    Insecure,
}

/// A recorded HTTP response.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HttpResponseRecord {
    /// Status code.
    pub status: u16,
    /// Header names and values, in received order.
    pub headers: Vec<(String, Bytes)>,
    /// The complete body.
    pub body: Bytes,
}

/// One host interaction: what the guest asked for and what it was given.
/// This is the unit the journal records and replays.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Interaction {
    /// `wasi:clocks/wall-clock.now`.
    WallClock {
        /// Seconds since the Unix epoch.
        seconds: u64,
        /// Nanoseconds within the second.
        nanoseconds: u32,
    },
    /// `wasi:clocks/monotonic-clock.now`, nanoseconds since the call began.
    MonotonicClock {
        /// The instant returned.
        nanos: u64,
    },
    /// Random bytes handed to the guest (`get-random-u64` is 8 bytes, little-endian).
    Random {
        /// Which interface.
        source: RandomSource,
        /// The bytes.
        bytes: Bytes,
    },
    /// `wasi:random/insecure-seed.insecure-seed`.
    InsecureSeed {
        /// The seed returned.
        seed: (u64, u64),
    },
    /// Bytes the guest wrote to stdout.
    Stdout {
        /// The bytes.
        bytes: Bytes,
    },
    /// Bytes the guest wrote to stderr.
    Stderr {
        /// The bytes.
        bytes: Bytes,
    },
    /// A `wasi:logging` record.
    Log {
        /// Severity.
        level: LogLevel,
        /// The guest-provided context.
        context: String,
        /// The message.
        message: String,
    },
    /// The environment variables handed to the guest.
    Environment {
        /// Name/value pairs.
        vars: Vec<(String, String)>,
    },
    /// The arguments handed to the guest (`argv[0]` is the function name).
    Arguments {
        /// The arguments.
        args: Vec<String>,
    },
    /// An outbound HTTP request, the gateway's decision and what came back.
    Http {
        /// Method.
        method: String,
        /// Full URI.
        uri: String,
        /// Whether the grants allowed it.
        allowed: bool,
        /// The response, when one arrived.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        response: Option<HttpResponseRecord>,
        /// The error the guest saw instead of a response.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A path-based file operation and the gateway's decision.
    File {
        /// The operation (`open`, `stat`, `mkdir`, …).
        op: String,
        /// The guest path: the directory's guest path joined with the
        /// relative path the guest gave (not normalized, so `..` shows).
        path: String,
        /// Whether it was allowed to proceed.
        allowed: bool,
        /// Recording: the content of a regular file opened for reading, as
        /// it was when opened (so a replay can run without the file).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<Bytes>,
        /// Recording: the entries of a directory opened, as they were when
        /// opened; subdirectories end in `/`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        entries: Option<Vec<String>>,
    },
}

impl Interaction {
    /// The variant name, as in the journal (`wall-clock`, `http`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Interaction::WallClock { .. } => "wall-clock",
            Interaction::MonotonicClock { .. } => "monotonic-clock",
            Interaction::Random { .. } => "random",
            Interaction::InsecureSeed { .. } => "insecure-seed",
            Interaction::Stdout { .. } => "stdout",
            Interaction::Stderr { .. } => "stderr",
            Interaction::Log { .. } => "log",
            Interaction::Environment { .. } => "environment",
            Interaction::Arguments { .. } => "arguments",
            Interaction::Http { .. } => "http",
            Interaction::File { .. } => "file",
        }
    }

    /// Whether `self` (recorded) answers the request `probe` (made now):
    /// same kind and same request arguments. Values the host supplies
    /// (times, random bytes, environment, responses) are not compared.
    pub fn answers(&self, probe: &Interaction) -> bool {
        use Interaction as I;
        match (self, probe) {
            (I::WallClock { .. }, I::WallClock { .. })
            | (I::MonotonicClock { .. }, I::MonotonicClock { .. })
            | (I::InsecureSeed { .. }, I::InsecureSeed { .. })
            | (I::Environment { .. }, I::Environment { .. })
            | (I::Arguments { .. }, I::Arguments { .. }) => true,
            (
                I::Random {
                    source: a,
                    bytes: x,
                },
                I::Random {
                    source: b,
                    bytes: y,
                },
            ) => a == b && x.0.len() == y.0.len(),
            (
                I::Http {
                    method: m1,
                    uri: u1,
                    ..
                },
                I::Http {
                    method: m2,
                    uri: u2,
                    ..
                },
            ) => m1 == m2 && u1 == u2,
            // A file operation is matched on what was asked; whether it was
            // allowed depends on the files, which replay does not virtualize.
            (
                I::File {
                    op: o1, path: p1, ..
                },
                I::File {
                    op: o2, path: p2, ..
                },
            ) => o1 == o2 && p1 == p2,
            (a, b) => a == b,
        }
    }
}

/// Where a replayed call gets its answers: the recorded interactions of a run.
pub trait ReplaySource: Send + Sync {
    /// The recorded interaction at `index` (0-based), or `None` past the end.
    fn recorded(&self, index: u64) -> Option<Interaction>;
}

/// The first point where a replayed call departed from its recording.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("divergence at step {index}: recorded {}, replay asked for {}", describe_step(.recorded.as_deref()), describe_step(.actual.as_deref()))]
pub struct Divergence {
    /// Index of the first differing step.
    pub index: u64,
    /// What the journal holds at that index (`None`: the recording ended).
    pub recorded: Option<Box<Interaction>>,
    /// What the replayed guest did (`None`: it finished without it).
    pub actual: Option<Box<Interaction>>,
}

fn describe_step(i: Option<&Interaction>) -> String {
    match i {
        None => "nothing".into(),
        Some(i) => format!("{i:?}"),
    }
}

/// Receives every host interaction of a call, in order. This is the plug
/// point for the journal.
pub trait InteractionObserver: Send + Sync {
    /// Called once per interaction. `index` numbers the call's interactions
    /// from 0; an HTTP exchange is reported when its response is complete,
    /// under the index reserved when the request was made, so reports can
    /// arrive out of order.
    fn observe(&self, scope: &CallScope, index: u64, interaction: &Interaction);
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
    replay: Option<Arc<dyn ReplaySource>>,
    next_index: std::sync::atomic::AtomicU64,
    divergence: Mutex<Option<Divergence>>,
    started: std::time::Instant,
    prng: Mutex<Option<SplitMix64>>,
    output: Mutex<CapturedOutput>,
}

/// The random generator of deterministic mode: SplitMix64, seeded from the
/// manifest. Reproducible by design, and therefore not secret: a component
/// that needs unpredictable secrets must not run deterministically.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Fills `buf`.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Where deterministic mode's virtual wall clock starts:
/// 2024-01-01T00:00:00Z. It then advances one nanosecond per unit of fuel.
pub const VIRTUAL_EPOCH_SECONDS: u64 = 1_704_067_200;

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
    /// Creates the gateway for one call. With `replay`, every value the
    /// host would supply is answered from the recording instead, and every
    /// request is checked against it.
    pub fn new(
        scope: CallScope,
        grants: Arc<Grants>,
        audit: Arc<dyn AuditSink>,
        observer: Option<Arc<dyn InteractionObserver>>,
        replay: Option<Arc<dyn ReplaySource>>,
    ) -> Self {
        let prng = Mutex::new(grants.deterministic.map(SplitMix64::new));
        Self {
            inner: Arc::new(GatewayInner {
                scope,
                grants,
                audit,
                observer,
                replay,
                next_index: std::sync::atomic::AtomicU64::new(0),
                divergence: Mutex::new(None),
                started: std::time::Instant::now(),
                prng,
                output: Mutex::new(CapturedOutput::default()),
            }),
        }
    }

    /// Deterministic mode: the seeded generator fills `buf` (returns false
    /// when the call is not deterministic).
    pub fn seeded_random(&self, buf: &mut [u8]) -> bool {
        match &mut *self.inner.prng.lock().unwrap_or_else(|p| p.into_inner()) {
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
        self.inner.started.elapsed()
    }

    /// Whether this call is a replay.
    pub fn replaying(&self) -> bool {
        self.inner.replay.is_some()
    }

    /// Reserves the next interaction index.
    pub fn reserve_index(&self) -> u64 {
        self.inner
            .next_index
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    }

    /// How many interactions the call has made so far.
    pub fn interaction_count(&self) -> u64 {
        self.inner
            .next_index
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The one way a capability performs a host interaction.
    ///
    /// Live: runs `live` and reports its result. Replay: takes the recorded
    /// interaction at the next index, checks that it answers `probe` (same
    /// kind, same request), and returns it instead of touching the host.
    pub fn exchange(
        &self,
        probe: Interaction,
        live: impl FnOnce(Interaction) -> Interaction,
    ) -> Result<Interaction, Divergence> {
        let index = self.reserve_index();
        self.exchange_at(index, probe, live)
    }

    /// [`Gateway::exchange`] at an index reserved earlier.
    pub fn exchange_at(
        &self,
        index: u64,
        probe: Interaction,
        live: impl FnOnce(Interaction) -> Interaction,
    ) -> Result<Interaction, Divergence> {
        let value = match &self.inner.replay {
            None => live(probe),
            Some(src) => match src.recorded(index) {
                Some(rec) if rec.answers(&probe) => rec,
                recorded => return Err(self.diverge(index, recorded, Some(probe))),
            },
        };
        self.observe(index, &value);
        Ok(value)
    }

    /// Records (and returns) a divergence; the first one is kept.
    pub fn diverge(
        &self,
        index: u64,
        recorded: Option<Interaction>,
        actual: Option<Interaction>,
    ) -> Divergence {
        let d = Divergence {
            index,
            recorded: recorded.map(Box::new),
            actual: actual.map(Box::new),
        };
        let mut slot = self
            .inner
            .divergence
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert_with(|| d.clone()).clone()
    }

    /// The divergence recorded so far, without the end-of-recording check.
    pub fn pending_divergence(&self) -> Option<Divergence> {
        self.inner
            .divergence
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The first divergence seen, if any. After a replayed call returns, a
    /// recording with steps left over is a divergence too.
    pub fn divergence(&self) -> Option<Divergence> {
        if let Some(d) = self
            .inner
            .divergence
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Some(d);
        }
        let src = self.inner.replay.as_ref()?;
        let n = self.interaction_count();
        src.recorded(n).map(|rec| self.diverge(n, Some(rec), None))
    }

    /// The call this gateway serves.
    pub fn scope(&self) -> &CallScope {
        &self.inner.scope
    }

    /// The grants in force.
    pub fn grants(&self) -> &Grants {
        &self.inner.grants
    }

    /// Whether interactions are being observed (recorded).
    pub fn recording(&self) -> bool {
        self.inner.observer.is_some()
    }

    /// Reports an interaction to the observer, if any.
    pub fn observe(&self, index: u64, interaction: &Interaction) {
        if let Some(o) = &self.inner.observer {
            o.observe(&self.inner.scope, index, interaction);
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

/// Enforces the memory ceiling of one instance: all its linear memories
/// together.
#[derive(Debug)]
pub struct MemoryLimiter {
    limit_bytes: usize,
    limit_mb: u64,
    /// Current size of all the instance's linear memories together.
    total_bytes: usize,
    peak_bytes: usize,
    gateway: Gateway,
}

impl MemoryLimiter {
    fn new(limit_mb: u64, gateway: Gateway) -> Self {
        Self {
            limit_bytes: usize::try_from(limit_mb.saturating_mul(1024 * 1024))
                .unwrap_or(usize::MAX),
            limit_mb,
            total_bytes: 0,
            peak_bytes: 0,
            gateway,
        }
    }

    /// The peak size of the instance's linear memories, all of them
    /// together, in bytes.
    pub fn peak_bytes(&self) -> usize {
        self.peak_bytes
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Beyond the memory's own maximum wasmtime refuses the growth after
        // asking here (`memory.grow` returns -1): refuse it first, so it is
        // never counted.
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        // The limit is on all memories together: `current` and `desired`
        // are the sizes of the one memory growing.
        let total = self
            .total_bytes
            .saturating_add(desired.saturating_sub(current));
        if total > self.limit_bytes {
            let hit = LimitHit::Memory(self.limit_mb);
            self.gateway.audit(
                hit.capability(),
                format!("{total} bytes"),
                Decision::Limit,
                Some(format!(
                    "memory.grow from {current} to {desired} bytes (all memories {total} bytes) refused: {hit}"
                )),
            );
            return Err(hit.into());
        }
        self.total_bytes = total;
        self.peak_bytes = self.peak_bytes.max(total);
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
    /// Guest paths of directory descriptors, by resource handle.
    pub(crate) dir_paths: std::collections::HashMap<u32, String>,
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
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        // Environment and arguments are not put in the context: the
        // gateway answers `wasi:cli/environment` itself (see `env.rs`).
        files::preopen(&mut b, &grants.mounts)?;
        Ok(Self {
            wasi: b.build(),
            http: WasiHttpCtx::new(),
            http_gate: http::HttpGate::new(gateway.clone()),
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(grants.limits.memory_mb, gateway.clone()),
            gateway,
            dir_paths: std::collections::HashMap::new(),
        })
    }

    /// The call's gateway.
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// Peak linear memory seen during the call (all memories together), in
    /// bytes.
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
