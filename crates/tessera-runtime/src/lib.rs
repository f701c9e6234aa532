//! Tessera's runtime layer.
//!
//! This crate turns a `.wasm` file and a manifest into something that can be
//! called from JSON, safely and fast:
//!
//! * [`Runtime`] owns one wasmtime [`Engine`](wasmtime::Engine) configured for
//!   untrusted code (fuel, epoch interruption, pooling allocation with
//!   copy-on-write memory images), one linker with every host capability,
//!   the epoch ticker and the on-disk [`ComponentCache`].
//! * [`Runtime::load`] accepts a component or a plain `wasm32-wasip1` core
//!   module (adapted to a component with the WASI preview1 adapter), compiles
//!   it once (or takes it from the cache) and pre-instantiates it.
//! * [`LoadedComponent::call_json`] validates JSON arguments against the
//!   function's WIT types, makes a fresh instance under the component's
//!   [`Grants`], runs the call under its limits and returns JSON.
//! * Every host interaction passes through the per-call [`gateway::Gateway`],
//!   which enforces grants, writes [`audit`] events and reports interactions
//!   to an optional observer (where a journal plugs in).
#![deny(missing_docs)]

pub mod audit;
pub mod cache;
mod call;
pub mod capability;
pub mod gateway;
mod host;
pub mod http_handler;
pub mod imports;
pub mod json;
pub mod limits;
pub mod manifest;
pub mod policy;
mod runtime;
pub mod schema;
pub mod snapshot;
pub mod telemetry;
pub mod tools;
pub mod trust;

pub use audit::{AuditEvent, AuditSink, Decision};
pub use cache::{CacheStatus, CachedComponent, ComponentCache};
pub use call::{CallFailure, CallOptions, CallOutcome, LoadedComponent, Session};
pub use capability::{Effects, HostConfig};
pub use host::HostState;
pub use imports::{UnresolvedImport, UnresolvedReason};
pub use json::ArgError;
pub use limits::LimitHit;
pub use manifest::{Grants, Limits, ManifestError};
pub use runtime::{Inspection, Prepared, Runtime, RuntimeConfig, digest_of, name_of};
pub use schema::FunctionInfo;
pub use snapshot::Snapshot;
pub use tokio_util::sync::CancellationToken;
pub use tools::{Exposure, Hidden, ToolCuration};

/// The wasmtime version this runtime embeds (recorded in journals).
pub const WASMTIME_VERSION: &str = "48.0.8";

/// Errors at the runtime's boundary.
///
/// Loading errors (`Read`, `NotWasm`, `Adapt`, `Compile`, `Manifest`,
/// `Grant`) happen before any guest code runs. `BadArguments`,
/// `NoSuchFunction`, `NotServed`, `NotCallable` and `Busy` are refusals of a call before
/// it starts. What happens once the guest runs is reported in
/// [`CallOutcome`], not here, because a trap is a result of the call, not a
/// failure of the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are neither a component nor a core module.
    #[error("{origin}: not a WebAssembly component or module: {message}")]
    NotWasm {
        /// Where the bytes came from.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A core module could not be turned into a component.
    #[error("{origin}: cannot adapt core module to a component: {message}")]
    Adapt {
        /// Where the bytes came from.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// Validation or compilation failed.
    #[error("{origin}: invalid component: {message}")]
    Compile {
        /// Where the bytes came from.
        origin: String,
        /// wasmtime's explanation.
        message: String,
    },
    /// The component imports something Tessera does not provide.
    #[error("{origin}: cannot link: {message}")]
    Link {
        /// Where the bytes came from.
        origin: String,
        /// What is missing, for a person: each unresolved import and why,
        /// and the functions the component exports.
        message: String,
        /// Each import the linker does not satisfy (empty when the
        /// problem is on the host's side, or could not be narrowed down).
        unresolved: Vec<UnresolvedImport>,
        /// The functions the component exports (qualified names), which
        /// it would serve if it linked.
        exports: Vec<String>,
    },
    /// The manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A grant could not be applied when a call started (a granted
    /// directory vanished or cannot be opened).
    #[error("grant cannot be applied: cannot open {}: {source}", path.display())]
    Grant {
        /// The host directory.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A grant does not fit the host (a secret the host does not provide).
    #[error("{origin}: {source}")]
    Bind {
        /// Where the component came from.
        origin: String,
        /// The field and the problem.
        source: capability::BindError,
    },
    /// The engine or a store could not be set up.
    #[error("engine: {what}: {source}")]
    Engine {
        /// What was being set up.
        what: &'static str,
        /// wasmtime's error.
        source: wasmtime::Error,
    },
    /// A background task (a compile on a blocking thread) failed.
    #[error("{what} failed: {source}")]
    Task {
        /// What the task was doing.
        what: &'static str,
        /// Why it ended.
        source: tokio::task::JoinError,
    },
    /// No exported function has that name.
    #[error("no function `{name}`; available: {available}")]
    NoSuchFunction {
        /// The name asked for.
        name: String,
        /// The callable names.
        available: String,
    },
    /// The function exists but is not offered to the server's clients
    /// (see [`tools`]); the runtime itself can still call it.
    #[error("function `{function}` is not served: {reason}")]
    NotServed {
        /// The function's short name.
        function: String,
        /// Why: excluded, not included, a toolchain internal, not callable.
        reason: String,
    },
    /// The name matches several functions.
    #[error("`{name}` is ambiguous; use one of: {candidates}")]
    Ambiguous {
        /// The name asked for.
        name: String,
        /// The matching qualified names.
        candidates: String,
    },
    /// The function's signature cannot be expressed in JSON.
    #[error("function `{function}` is not callable from JSON: {reason}")]
    NotCallable {
        /// The function.
        function: String,
        /// Why.
        reason: String,
    },
    /// An HTTP request for a handler that cannot be made (a method, header
    /// or path that is not valid HTTP).
    #[error("bad HTTP request: {message}")]
    BadHttpRequest {
        /// What is wrong.
        message: String,
    },
    /// The arguments do not match the parameter types.
    #[error("bad arguments for `{function}`: {error}")]
    BadArguments {
        /// The function.
        function: String,
        /// The first mismatch, with its JSON path.
        error: ArgError,
    },
    /// The component is already running `max_concurrent` calls.
    #[error("component is busy: {limit} calls already running (limits.max_concurrent)")]
    Busy {
        /// The limit.
        limit: u32,
    },
    /// An import mapped in `[imports]` cannot be served by its provider:
    /// the provider is missing, does not export the interface, or exports
    /// it with other types.
    #[error("{consumer}: its import `{interface}` cannot be linked to `{provider}`: {message}")]
    Compose {
        /// The consumer (where its bytes came from).
        consumer: String,
        /// The interface, as `[imports]` or the consumer names it.
        interface: String,
        /// The provider, as `[imports]` names it.
        provider: String,
        /// What is wrong.
        message: String,
    },
    /// The trust policy refuses the component (unsigned, signed by an
    /// untrusted key, changed after signing, or not the pinned digest).
    #[error("{origin}: refused by the trust policy: {refusal}")]
    Untrusted {
        /// Where the bytes came from.
        origin: String,
        /// Why.
        refusal: trust::Refusal,
    },
    /// A session's instance could not be made.
    #[error("{origin}: cannot start a session: {message}")]
    Instantiate {
        /// Where the component came from.
        origin: String,
        /// Why.
        message: String,
    },
    /// A call of a session that an earlier call ended (a trap or a limit).
    #[error("the session has ended: {reason}")]
    SessionEnded {
        /// What ended it.
        reason: String,
    },
}
