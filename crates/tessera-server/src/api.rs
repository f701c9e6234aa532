//! The bodies the HTTP API takes and returns. Handlers build these types
//! and the OpenAPI document derives its schemas from them (with
//! `schemars`), so what is documented is what is sent.
//!
//! Journal records (run headers, steps, end records) are passed through as
//! the journal writes them; their format is the journal's (see
//! docs/journal.md) and is described here only as objects.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `GET /v1/health`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: HealthStatus,
}

/// The only health status: the server answers.
#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// The server is up.
    Ok,
}

/// `POST /v1/components`: register a component file the server can read.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct AddByPath {
    /// The component's name: 1-64 characters from `a-z 0-9 - _`,
    /// starting with a letter, without `__`.
    pub name: String,
    /// Path of the `.wasm` file on the server.
    pub path: String,
    /// Path of its manifest (TOML) on the server; relative paths in the
    /// manifest resolve from its folder.
    #[serde(default)]
    pub manifest_path: Option<String>,
}

/// `PUT /v1/components/{name}`: upload a component.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct Upload {
    /// The component's bytes, base64 (standard alphabet, padded).
    pub wasm_base64: String,
    /// Its manifest (TOML text); relative paths resolve from the data
    /// directory.
    #[serde(default)]
    pub manifest: Option<String>,
    /// Where the bytes came from, as the client reports it (the CLI sends
    /// the file path, or the digest-pinned URL or OCI reference it fetched
    /// them from); recorded as the version's `origin`. Default `upload`.
    #[serde(default)]
    #[schemars(length(min = 1, max = 1024))]
    pub origin: Option<String>,
}

/// `POST /v1/components/{name}/activate`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct Activate {
    /// The version to serve (1-based).
    #[schemars(range(min = 1))]
    pub version: u64,
}

/// The arguments of a call: one property per WIT parameter, as the
/// function's schema (`GET /v1/components/{name}`) says. An empty body is
/// the same as `{}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct CallArgs(pub Map<String, Value>);

/// `201` of the registering routes.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Registered {
    /// The component.
    pub name: String,
    /// The version now active: a new one, or the active one when the
    /// same bytes and manifest were given again.
    pub active_version: u64,
}

/// One version of a component.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct VersionInfo {
    /// Version number (1-based).
    pub version: u64,
    /// `sha256:<hex>` of the component's bytes.
    pub digest: String,
    /// Where the bytes came from: a path, or `upload`.
    pub origin: String,
    /// RFC 3339 time it was added.
    pub added: String,
    /// The manifest (TOML), if one was given.
    pub manifest: Option<String>,
}

/// A registered component.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ComponentInfo {
    /// The name.
    pub name: String,
    /// The version served to new calls.
    pub active_version: u64,
    /// The version active before the last switch (where `rollback` goes).
    pub previous_version: Option<u64>,
    /// Every version, oldest first.
    pub versions: Vec<VersionInfo>,
    /// The version loaded and serving, `null` when it failed to load.
    pub loaded: Option<u64>,
    /// The loaded version's functions, with the JSON Schemas of their
    /// parameters and results (only from `GET /v1/components/{name}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functions: Option<Vec<Map<String, Value>>>,
}

/// `GET /v1/components`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ComponentList {
    /// Every registered component, by name.
    pub components: Vec<ComponentInfo>,
}

/// A `wasi:logging` record the guest wrote.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LogLine {
    /// `trace`, `debug`, `info`, `warn`, `error` or `critical`.
    pub level: String,
    /// The guest's context string.
    pub context: String,
    /// The message.
    pub message: String,
}

/// `200` of a call: the function returned.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CallResult {
    /// `false` when the function returned a WIT `result` in its `err` case.
    pub ok: bool,
    /// What the function returned, as its result schema says.
    pub result: Value,
    /// The component.
    pub component: String,
    /// The version that served the call.
    pub version: u64,
    /// The function's qualified name.
    pub function: String,
    /// The journal run.
    pub run_id: String,
    /// Fuel consumed.
    pub fuel_consumed: u64,
    /// Wall-clock duration, microseconds.
    pub duration_us: u64,
    /// What the guest wrote to stdout (lossy UTF-8).
    pub stdout: String,
    /// What the guest wrote to stderr (lossy UTF-8).
    pub stderr: String,
    /// `wasi:logging` records.
    pub logs: Vec<LogLine>,
}

/// One recorded run.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RunSummary {
    /// The run's id.
    pub run_id: String,
    /// RFC 3339 start time.
    pub started: String,
    /// The component, as the journal records it (digest and origin).
    pub component: Value,
    /// The function's qualified name.
    pub function: String,
    /// Host interactions recorded.
    pub steps: u64,
    /// Whether the run has its end record.
    pub complete: bool,
    /// The end record (how the call ended, fuel, duration), `null` while
    /// running or after a crash.
    pub end: Option<Map<String, Value>>,
}

/// `GET /v1/runs`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RunList {
    /// Every run, oldest first.
    pub runs: Vec<RunSummary>,
}

/// One host interaction of a run.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RunStep {
    /// Its index in the run.
    pub index: u64,
    /// The interaction, as the journal records it.
    pub interaction: Value,
}

/// `GET /v1/runs/{id}`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RunDetail {
    /// The run's header: component, function, arguments, grants, caller.
    pub header: Map<String, Value>,
    /// Every host interaction, in order.
    pub steps: Vec<RunStep>,
    /// The end record, `null` for an incomplete run.
    pub end: Option<Map<String, Value>>,
}

/// `POST /v1/runs/{id}/replay`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ReplayResult {
    /// The run.
    pub run_id: String,
    /// Whether the replay matched the recording step for step.
    pub identical: bool,
    /// Steps in the recording.
    pub recorded_steps: u64,
    /// The first divergence, `null` when identical.
    pub divergence: Option<String>,
}
