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
    /// Always `ok`: the server answers from the moment it listens, while
    /// components may still be compiling.
    pub status: HealthStatus,
    /// Components being served.
    pub ready: u64,
    /// Components whose active version is still being loaded (compiled)
    /// in the background; their calls get `503 loading` until they are
    /// served.
    pub loading: u64,
    /// Components whose active version could not be loaded.
    pub failed: u64,
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
    /// The version loaded and serving, `null` when it failed to load or
    /// is still loading.
    pub loaded: Option<u64>,
    /// The version being loaded (compiled) in the background, `null` when
    /// none is. Until it is ready, calls go to `loaded`, or get `503
    /// loading` when nothing is loaded yet.
    pub loading: Option<u64>,
    /// The loaded version's functions, with the JSON Schemas of their
    /// parameters and results (only from `GET /v1/components/{name}`).
    /// Each has `name`, `short_name`, `parameters` and `result`; `served`
    /// (whether the manifest's `[tools]` section offers it over MCP and
    /// HTTP) and, when it does not, `hidden` (why); `description` (the
    /// manifest's, else the WIT docs) and `title` when there is one; and
    /// `not_callable` for a function JSON cannot call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functions: Option<Vec<Map<String, Value>>>,
    /// What the active version is granted and the limits it runs under,
    /// as its manifest says (deny-all defaults without one), and the
    /// effects that follow (only from `GET /v1/components/{name}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<GrantsInfo>,
    /// Why the active version is not loaded, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_error: Option<String>,
}

/// A version's grants, limits and effects.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct GrantsInfo {
    /// One entry per capability (`files`, `http`, `env`, `config`, …) with
    /// what its manifest section grants, plus `limits` and
    /// `deterministic`; secrets appear by name only.
    pub grants: Map<String, Value>,
    /// What the grants let the component do to the world: `reads`,
    /// `writes`, `network`, `external` (from which MCP annotations follow).
    pub effects: Map<String, Value>,
}

/// One function of `ComponentInfo::functions`: its name, schemas and docs
/// ([`tessera_runtime::schema::FunctionInfo::to_json`]) with what the
/// manifest's `[tools]` section makes of it: `title`, `description`,
/// `served` and, when it is not served, `hidden` (why).
pub fn function_doc(
    f: &tessera_runtime::schema::FunctionInfo,
    exposure: &tessera_runtime::tools::Exposure,
) -> Map<String, Value> {
    let mut m = match f.to_json() {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    if let Some(t) = &exposure.title {
        m.insert("title".into(), Value::String(t.clone()));
    }
    if let Some(d) = &exposure.description {
        m.insert("description".into(), Value::String(d.clone()));
    }
    m.insert("served".into(), Value::Bool(exposure.served()));
    if let Some(why) = &exposure.hidden {
        m.insert("hidden".into(), Value::String(why.to_string()));
    }
    m
}

/// A version's manifest parsed into grants (deny-all without one).
pub fn version_grants(
    name: &str,
    version: usize,
    record: &crate::registry::Version,
) -> Result<tessera_runtime::Grants, tessera_runtime::ManifestError> {
    match &record.manifest {
        Some(text) => tessera_runtime::Grants::from_toml(
            text,
            &format!("manifest of {name} v{version}"),
            record
                .manifest_dir
                .as_deref()
                .unwrap_or(std::path::Path::new(".")),
        ),
        None => Ok(tessera_runtime::Grants::deny_all()),
    }
}

impl GrantsInfo {
    /// Parses a version's manifest (the host's secrets are not consulted:
    /// nothing but names comes from the manifest).
    pub fn of(
        name: &str,
        version: usize,
        record: &crate::registry::Version,
    ) -> Result<Self, tessera_runtime::ManifestError> {
        let grants = version_grants(name, version, record)?;
        let object = |v: Value| match v {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        Ok(Self {
            grants: object(serde_json::to_value(&grants).unwrap_or_default()),
            effects: object(serde_json::to_value(grants.effects()).unwrap_or_default()),
        })
    }
}

impl ComponentInfo {
    /// The registry's record of `name`: versions and which is active,
    /// without what only a loaded version knows (`loaded`, `loading`, `functions`,
    /// `grants`, `load_error` are left empty).
    pub fn from_entry(name: &str, entry: &crate::registry::Entry) -> Self {
        Self {
            name: name.to_string(),
            active_version: entry.active as u64,
            previous_version: entry.previous.map(|v| v as u64),
            versions: entry
                .versions
                .iter()
                .enumerate()
                .map(|(i, v)| VersionInfo {
                    version: i as u64 + 1,
                    digest: v.digest.clone(),
                    origin: v.origin.clone(),
                    added: v.added.clone(),
                    manifest: v.manifest.clone(),
                })
                .collect(),
            loaded: None,
            loading: None,
            functions: None,
            grants: None,
            load_error: None,
        }
    }
}

/// An import of a component that Tessera does not provide.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct UnresolvedImportInfo {
    /// The import as the component names it (`example:missing/thing`,
    /// `wasi:cli/environment@0.3.0`).
    pub import: String,
    /// The item of the interface (function or resource), when Tessera
    /// provides the interface but not that item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// Why: `not_provided` (no such interface), `other_version` (Tessera
    /// provides it only at `provided_versions`), `missing_item` (the
    /// interface lacks `item`), `item_type` (`item` has another type), or
    /// `unsupported` (a kind of import Tessera never provides).
    pub reason: String,
    /// The versions Tessera provides the interface at (`other_version`),
    /// or the exact interface it provides (`missing_item`, `item_type`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provided: Vec<String>,
    /// The manifest grant that governs the interface, if one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// The items the component imports from it (a whole interface missing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<String>,
    /// The same, for a person.
    pub message: String,
}

impl From<&tessera_runtime::UnresolvedImport> for UnresolvedImportInfo {
    fn from(u: &tessera_runtime::UnresolvedImport) -> Self {
        use tessera_runtime::UnresolvedReason as R;
        let (reason, provided, grant) = match &u.reason {
            R::NotProvided => ("not_provided", Vec::new(), None),
            R::OtherVersion { provided, grant } => {
                ("other_version", provided.clone(), grant.clone())
            }
            R::MissingItem { provided } => ("missing_item", vec![provided.clone()], None),
            R::ItemType { provided } => ("item_type", vec![provided.clone()], None),
            R::Unsupported { .. } => ("unsupported", Vec::new(), None),
        };
        Self {
            import: u.import.clone(),
            item: u.item.clone(),
            reason: reason.to_string(),
            provided,
            grant,
            items: u.items.clone(),
            message: u.to_string(),
        }
    }
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

impl LogLine {
    /// The name of a level as the API writes it (`info`, `error`, …).
    pub fn level_name(level: tessera_runtime::capability::logging::LogLevel) -> String {
        serde_json::to_value(level)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
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
    /// Bytes of its records as stored (header, steps, end; shared blobs
    /// not counted).
    pub bytes: u64,
    /// Who holds it against pruning (`pin`, a plan, an agent).
    pub holds: Vec<String>,
    /// Whether the run has its end record.
    pub complete: bool,
    /// The end record (how the call ended, fuel, duration), `null` while
    /// running or after a crash.
    pub end: Option<Map<String, Value>>,
}

/// `GET /v1/journal`: what the journal holds and weighs.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct JournalStats {
    /// Size of the journal file on disk.
    pub file_bytes: u64,
    /// Bytes in pages the store has allocated (the rest of the file is
    /// free space it reuses).
    pub allocated_bytes: u64,
    /// Runs stored.
    pub runs: u64,
    /// Runs without an end record.
    pub incomplete: u64,
    /// Runs held against pruning.
    pub held: u64,
    /// Steps stored.
    pub steps: u64,
    /// Bytes of the runs' records.
    pub record_bytes: u64,
    /// Of which headers.
    pub header_bytes: u64,
    /// Of which end records (the rest are steps).
    pub end_bytes: u64,
    /// Blobs stored (component bytes, long payloads).
    pub blobs: u64,
    /// Their bytes.
    pub blob_bytes: u64,
    /// `file_bytes / runs`.
    pub bytes_per_run: u64,
    /// Per component: `name`, `runs`, `record_bytes`, `blob_bytes`,
    /// `bytes_per_run`, `oldest`, `newest`.
    pub components: Vec<Map<String, Value>>,
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

/// Most keys one page of `GET /v1/kv/{bucket}` may ask for (`limit`).
pub const MAX_KEY_PAGE: usize = 1000;

/// Keys in a page of `GET /v1/kv/{bucket}` when `limit` is not given.
pub const DEFAULT_KEY_PAGE: usize = 100;

/// A bucket that holds at least one key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct BucketInfo {
    /// The bucket's name.
    pub name: String,
    /// Where it lives: `embedded` (the data directory's store) or `nats`.
    pub backend: String,
}

/// `GET /v1/kv`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct BucketList {
    /// Buckets holding keys in the embedded store, then (when `[store.nats]`
    /// is configured) in NATS, sorted by name.
    pub buckets: Vec<BucketInfo>,
}

/// `GET /v1/kv/{bucket}`: one page of keys.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct KeyPage {
    /// The bucket.
    pub bucket: String,
    /// Where it lives: `embedded` or `nats`.
    pub backend: String,
    /// Keys in byte order.
    pub keys: Vec<String>,
    /// Pass it as `after` for the next page; `null` on the last page.
    pub cursor: Option<String>,
}

/// `GET /v1/kv/{bucket}/{key}`: a value and its revision.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct KvEntry {
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
    /// The revision of the write that stored the value.
    pub revision: u64,
    /// The value as text, `null` when its bytes are not UTF-8.
    pub value: Option<String>,
    /// The value's bytes, base64 (standard alphabet, padded).
    pub value_base64: String,
}

impl KvEntry {
    /// The document of a stored entry.
    pub fn new(bucket: &str, key: &str, entry: &tessera_store::Entry) -> Self {
        use base64::Engine as _;
        Self {
            bucket: bucket.to_string(),
            key: key.to_string(),
            revision: entry.revision,
            value: String::from_utf8(entry.value.clone()).ok(),
            value_base64: base64::engine::general_purpose::STANDARD.encode(&entry.value),
        }
    }
}

/// `PUT /v1/kv/{bucket}/{key}`: the value (exactly one of `value` and
/// `value_base64`) and, optionally, the state the key must be in for the
/// write to happen (at most one of `expect_revision` and `expect_absent`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KvPut {
    /// The value as text (stored as its UTF-8 bytes).
    #[serde(default)]
    pub value: Option<String>,
    /// The value's bytes, base64 (standard alphabet, padded).
    #[serde(default)]
    pub value_base64: Option<String>,
    /// Write only if the key's current value was written at this revision
    /// (compare-and-swap); otherwise 409 `conflict`.
    #[serde(default)]
    pub expect_revision: Option<u64>,
    /// Write only if the key has no value; otherwise 409 `conflict`.
    #[serde(default)]
    pub expect_absent: bool,
}

/// `200` of `PUT /v1/kv/{bucket}/{key}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct KvWritten {
    /// The revision of this write.
    pub revision: u64,
}

/// Plan runs per `GET /v1/plan-runs` at most.
pub const MAX_PLAN_RUN_PAGE: usize = 1000;
/// Plan runs per `GET /v1/plan-runs` by default.
pub const DEFAULT_PLAN_RUN_PAGE: usize = 50;

/// `PUT /v1/plans/{name}`: register (or replace) a plan.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct PlanUpload {
    /// The plan file's text (TOML; see docs/plans.md). Its `name` key, if
    /// any, must be the name it is registered under, and every step names
    /// a registered component (a server does not call `.wasm` paths).
    pub text: String,
    /// The absolute directory relative paths in the plan resolve against
    /// (kept with each run). Default: the server's data directory.
    #[serde(default)]
    pub base: Option<String>,
    /// What names the plan in errors (the client's file path). Default
    /// `plans/<name>.toml`.
    #[serde(default)]
    #[schemars(length(min = 1, max = 1024))]
    pub origin: Option<String>,
}

/// A step of a registered plan.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PlanStepInfo {
    /// The step's name.
    pub name: String,
    /// The registered component it calls.
    pub component: String,
    /// The function.
    pub function: String,
    /// The steps it waits for (named in `needs` or read by its expressions).
    pub needs: Vec<String>,
    /// The fan-out's list expression.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub for_each: Option<String>,
    /// The condition it runs under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Attempts in all.
    pub max_attempts: u32,
    /// Each attempt's time limit, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// `fail`, `continue` or `fallback`.
    pub on_error: String,
    /// The fallback step (`on_error = "fallback"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

/// A registered plan.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PlanInfo {
    /// Its name.
    pub name: String,
    /// Its MCP tool: `plan__<name>` (cut to 64 characters with a hash
    /// suffix when longer).
    pub tool: String,
    /// What it does.
    pub description: Option<String>,
    /// What names it in errors.
    pub origin: String,
    /// The directory its relative paths resolve against.
    pub base: String,
    /// When it was registered (RFC 3339; empty for a file put in
    /// `<data>/plans` by hand).
    pub added: String,
    /// The JSON Schema of its inputs (the MCP tool's input schema).
    pub input_schema: Value,
    /// Its steps, in dependency order.
    pub steps: Vec<PlanStepInfo>,
    /// Its output names.
    pub outputs: Vec<String>,
    /// The plan's text (`GET /v1/plans/{name}` and the `PUT` answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Why the stored plan no longer reads (edited by hand); the other
    /// fields are then empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl PlanInfo {
    /// The document of a stored plan, with its text when `details`.
    pub fn of(stored: &crate::plan_registry::StoredPlan, details: bool) -> Self {
        use tessera_orchestrator::plan::OnError;
        let mut info = PlanInfo {
            name: stored.name.clone(),
            tool: crate::mcp::plan_tool_name(&stored.name),
            description: None,
            origin: stored.source.origin.clone(),
            base: stored.source.base.display().to_string(),
            added: stored.source.added.clone(),
            input_schema: Value::Null,
            steps: Vec::new(),
            outputs: Vec::new(),
            text: details.then(|| stored.text.clone()),
            error: None,
        };
        let plan = match stored.plan() {
            Ok(p) => p,
            Err(e) => {
                info.error = Some(e.to_string());
                return info;
            }
        };
        info.description = plan.description.clone();
        info.input_schema = plan.input_schema();
        info.outputs = plan.outputs.iter().map(|(n, _)| n.clone()).collect();
        info.steps = plan
            .topological()
            .iter()
            .map(|s| {
                let (on_error, fallback) = match &s.on_error {
                    OnError::Fail => ("fail", None),
                    OnError::Continue => ("continue", None),
                    OnError::Fallback(f) => ("fallback", Some(f.clone())),
                };
                PlanStepInfo {
                    name: s.name.clone(),
                    component: s.component.to_string(),
                    function: s.function.clone(),
                    needs: s.needs.iter().cloned().collect(),
                    for_each: s.for_each.as_ref().map(|e| e.source().to_string()),
                    when: s.when.as_ref().map(|e| e.source().to_string()),
                    max_attempts: s.retry.max_attempts,
                    timeout_ms: s
                        .timeout
                        .map(|t| t.as_millis().min(u128::from(u64::MAX)) as u64),
                    on_error: on_error.to_string(),
                    fallback,
                }
            })
            .collect();
        info
    }
}

/// `GET /v1/plans`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PlanList {
    /// Every registered plan, by name (without their text).
    pub plans: Vec<PlanInfo>,
}

/// `202` of `POST /v1/plans/{name}/runs` and `POST /v1/plan-runs/{id}/resume`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PlanRunStarted {
    /// The plan run's id: watch it at `/v1/plan-runs/{id}/events`.
    pub run: String,
}

/// The inputs of a plan run: one property per input the plan declares
/// (`GET /v1/plans/{name}` gives their schema). An empty body is `{}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct PlanInputs(pub Map<String, Value>);

/// Where a plan run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PlanRunStatus {
    /// Started and not finished (if no process drives it, it was
    /// interrupted: resume it).
    Running,
    /// Every step done; outputs computed.
    Succeeded,
    /// A step failed and the plan could not go on.
    Failed,
    /// Cancelled (resume goes on).
    Cancelled,
}

impl From<tessera_orchestrator::progress::RunStatus> for PlanRunStatus {
    fn from(s: tessera_orchestrator::progress::RunStatus) -> Self {
        use tessera_orchestrator::progress::RunStatus as S;
        match s {
            S::Running => Self::Running,
            S::Succeeded => Self::Succeeded,
            S::Failed => Self::Failed,
            S::Cancelled => Self::Cancelled,
        }
    }
}

/// One plan run in a list.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PlanRunSummary {
    /// Its id.
    pub id: String,
    /// The plan.
    pub plan: String,
    /// Where it is.
    pub status: PlanRunStatus,
    /// Start time, RFC 3339.
    pub started: String,
    /// End time, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// How many times it was resumed.
    pub resumes: u32,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether this server is driving it now.
    pub active: bool,
}

/// `GET /v1/plan-runs`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PlanRunList {
    /// The newest runs first.
    pub runs: Vec<PlanRunSummary>,
}

/// How a step (or one call of a fan-out) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PlanStepState {
    /// Its call returned; `output` holds the result.
    Succeeded,
    /// Every attempt failed and the plan stopped.
    Failed,
    /// `when` was false: not run, output null.
    Skipped,
    /// Every attempt failed, `on_error = "continue"`: output null.
    Continued,
    /// Every attempt failed; its fallback step's output stands for it.
    FellBack,
}

/// A finished step.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PlanStepRecord {
    /// How it ended.
    pub state: PlanStepState,
    /// Its output (the `ok` value of a WIT result; a fan-out's list).
    pub output: Value,
    /// Attempts made.
    pub attempts: u32,
    /// The journal runs of its calls (`/v1/runs/{id}`).
    pub runs: Vec<String>,
    /// When its first attempt started (RFC 3339).
    pub started: String,
    /// When it ended (RFC 3339).
    pub finished: String,
    /// Milliseconds from start to end.
    pub duration_ms: u64,
    /// The last error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The fan-out's item count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<u64>,
}

impl From<&tessera_orchestrator::progress::StepRecord> for PlanStepRecord {
    fn from(r: &tessera_orchestrator::progress::StepRecord) -> Self {
        use tessera_orchestrator::progress::StepState as S;
        Self {
            state: match r.state {
                S::Succeeded => PlanStepState::Succeeded,
                S::Failed => PlanStepState::Failed,
                S::Skipped => PlanStepState::Skipped,
                S::Continued => PlanStepState::Continued,
                S::FellBack => PlanStepState::FellBack,
            },
            output: r.output.clone(),
            attempts: r.attempts,
            runs: r.runs.clone(),
            started: r.started.clone(),
            finished: r.finished.clone(),
            duration_ms: r.duration_ms,
            error: r.error.clone(),
            items: r.items,
        }
    }
}

/// A step of a plan run and its record (`null` while not finished).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PlanRunStep {
    /// The step.
    pub step: String,
    /// How it ended.
    pub record: Option<PlanStepRecord>,
}

/// A plan run: its record (as `tessera plan runs show --json` prints it)
/// and each step's, in dependency order.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PlanRunDetail {
    /// Its id.
    pub id: String,
    /// The plan.
    pub plan: String,
    /// What named the plan in errors.
    pub origin: String,
    /// The directory its relative paths resolve against.
    pub base: String,
    /// The plan's text (a resume runs this, whatever the registry holds now).
    pub text: String,
    /// The inputs, defaults filled in.
    pub inputs: Value,
    /// Where it is.
    pub status: PlanRunStatus,
    /// Start time, RFC 3339.
    pub started: String,
    /// End time, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// How many times it was resumed.
    pub resumes: u32,
    /// The outputs, once it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Value>,
    /// Why it failed (or `cancelled`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether this server is driving it now.
    pub active: bool,
    /// Every step, in dependency order.
    pub steps: Vec<PlanRunStep>,
}

impl PlanRunDetail {
    /// The detail of `rec`, with its steps' records.
    pub fn new(
        rec: &tessera_orchestrator::progress::RunRecord,
        steps: Vec<PlanRunStep>,
        active: bool,
    ) -> Self {
        Self {
            id: rec.id.clone(),
            plan: rec.plan.clone(),
            origin: rec.origin.clone(),
            base: rec.base.clone(),
            text: rec.text.clone(),
            inputs: rec.inputs.clone(),
            status: rec.status.into(),
            started: rec.started.clone(),
            finished: rec.finished.clone(),
            resumes: rec.resumes,
            outputs: rec.outputs.clone(),
            error: rec.error.clone(),
            active,
            steps,
        }
    }
}

impl PlanRunSummary {
    /// The summary of `rec`.
    pub fn new(rec: &tessera_orchestrator::progress::RunRecord, active: bool) -> Self {
        Self {
            id: rec.id.clone(),
            plan: rec.plan.clone(),
            status: rec.status.into(),
            started: rec.started.clone(),
            finished: rec.finished.clone(),
            resumes: rec.resumes,
            error: rec.error.clone(),
            active,
        }
    }
}

/// Agents per `GET /v1/agents` page at most.
pub const MAX_AGENT_PAGE: usize = 1000;
/// Agents per `GET /v1/agents` page by default.
pub const DEFAULT_AGENT_PAGE: usize = 100;
/// Turns per `GET /v1/agents/{id}/turns` page at most.
pub const MAX_TURN_PAGE: usize = 1000;
/// Turns per `GET /v1/agents/{id}/turns` page by default.
pub const DEFAULT_TURN_PAGE: usize = 100;
/// How long a send with `wait` (and `ask`, and an MCP agent tool) waits
/// for the reply by default, in milliseconds.
pub const DEFAULT_REPLY_TIMEOUT_MS: u64 = 60_000;
/// The longest wait for a reply, in milliseconds (one hour).
pub const MAX_REPLY_TIMEOUT_MS: u64 = 3_600_000;

/// `POST /v1/agents`: create a top-level agent.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct SpawnAgent {
    /// Its id: 1-64 characters from `a-z 0-9 - _ .`, starting with a
    /// letter or a digit (top-level agents have no `/`: that joins a
    /// parent's id and its child's name).
    pub id: String,
    /// The registered component it runs (a registry name; the component
    /// must export `tessera:agent/handler.turn`). A server runs only what
    /// its registry serves: a `.wasm` path is refused, and the component's
    /// manifest is the one it was registered with.
    pub component: String,
    /// Refused when given: a registered component has its own manifest
    /// (register it again with another manifest, under another name).
    #[serde(default)]
    pub manifest: Option<String>,
    /// Its initial state (text; JSON by convention). Default none.
    #[serde(default)]
    pub state: Option<String>,
}

/// `POST /v1/agents/{id}/messages` and `POST /v1/agents/{id}/ask`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct SendMessage {
    /// The message's body: a string is sent as it is, any other JSON value
    /// as its JSON text.
    pub body: Value,
    /// The message id (default: a new one): sending the same id twice
    /// delivers it once. 1-200 characters, no control characters.
    #[serde(default)]
    #[schemars(length(min = 1, max = 200))]
    pub id: Option<String>,
    /// Wait for the turn's reply and answer it (200) instead of answering
    /// 202 once the message is in the mailbox. Implied by `/ask`.
    #[serde(default)]
    pub wait: bool,
    /// How long to wait for the reply, in milliseconds (default 60000, at
    /// most 3600000).
    #[serde(default)]
    #[schemars(range(min = 1, max = 3_600_000))]
    pub timeout_ms: Option<u64>,
}

/// `202` of `POST /v1/agents/{id}/messages` without `wait`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MessageSent {
    /// The agent.
    pub agent: String,
    /// The message id.
    pub message: String,
}

/// `200` of a send that waited (`wait`, `/ask`): the turn's reply.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct AgentReply {
    /// The agent.
    pub agent: String,
    /// The message id.
    pub message: String,
    /// The turn that handled it.
    pub turn: u64,
    /// The journal run of the turn (`/v1/runs/{id}`).
    pub run: Option<String>,
    /// The reply: parsed when it is JSON, else the text; `null` when the
    /// turn gave none.
    pub reply: Value,
}

/// A message in a mailbox or a turn log.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct AgentMessage {
    /// Its id.
    pub id: String,
    /// The agent that sent it; absent: from outside (HTTP, MCP, CLI).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// The body (text; JSON by convention).
    pub body: String,
    /// Whether its sender waits for the reply.
    pub expects_reply: bool,
    /// When it was sent (RFC 3339).
    pub sent: String,
}

impl From<&tessera_orchestrator::agent::Envelope> for AgentMessage {
    fn from(e: &tessera_orchestrator::agent::Envelope) -> Self {
        Self {
            id: e.id.clone(),
            sender: e.sender.clone(),
            body: e.body.clone(),
            expects_reply: e.expects_reply,
            sent: e.sent.clone(),
        }
    }
}

/// A person's decision on an approval request.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ApprovalDecision {
    /// Approved or rejected.
    pub approved: bool,
    /// Who decided: the id of the token presented, `http` without one,
    /// `cli` from the command line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Why (a rejected tool call answers it to the agent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When (RFC 3339).
    pub at: String,
}

/// A tool call that waits (or waited) for a person's decision.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ApprovalInfo {
    /// The request's id (`POST /v1/agents/{id}/approvals/{request}`).
    pub request: String,
    /// The agent.
    pub agent: String,
    /// The tool (`<grant>__<function>`).
    pub tool: String,
    /// Its arguments (JSON text).
    pub arguments: String,
    /// The turn that asked.
    pub turn: u64,
    /// When it was asked (RFC 3339).
    pub asked: String,
    /// The decision; absent while it waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<ApprovalDecision>,
}

impl From<&tessera_orchestrator::agent::Approval> for ApprovalInfo {
    fn from(a: &tessera_orchestrator::agent::Approval) -> Self {
        Self {
            request: a.request.clone(),
            agent: a.agent.clone(),
            tool: a.tool.clone(),
            arguments: a.arguments.clone(),
            turn: a.turn,
            asked: a.asked.clone(),
            decision: a.decision.as_ref().map(|d| ApprovalDecision {
                approved: d.approved,
                by: d.by.clone(),
                reason: d.reason.clone(),
                at: d.at.clone(),
            }),
        }
    }
}

/// `GET /v1/agents/{id}/approvals`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ApprovalList {
    /// Every approval request of the agent, waiting and decided.
    pub approvals: Vec<ApprovalInfo>,
}

/// `POST /v1/agents/{id}/approvals/{request}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct Decide {
    /// Approve (the tool call runs) or reject (the tool answers
    /// `rejected` with the reason).
    pub approved: bool,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `200` of `POST /v1/agents/{id}/approvals/{request}`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Decided {
    /// The request, with its decision; the waiting turn goes on.
    pub approval: ApprovalInfo,
}

/// An agent: its record and its mailbox depth; `GET /v1/agents/{id}` adds
/// the approval requests waiting and the dead-letter count.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct AgentInfo {
    /// Its id (`parent/child` for a child).
    pub id: String,
    /// `active` (takes messages), `waiting` (a turn waits for an approval;
    /// messages queue), `failed` or `stopped` (takes no messages until
    /// restarted).
    pub status: String,
    /// Why it failed or stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The approval request a `waiting` agent waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// The registered component it runs (or, for an agent spawned with the
    /// CLI, a `.wasm` path).
    pub component: String,
    /// Its MCP tool (`agent__<id>`, with a hash suffix when the id is not
    /// a valid tool name as it is: a child's, or one with `.`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// Its supervisor (children only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The template it was spawned from (children only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Its children's ids, in spawn order.
    pub children: Vec<String>,
    /// Committed turns.
    pub turns: u64,
    /// Messages waiting in its mailbox.
    pub depth: u64,
    /// Mailbox capacity.
    pub mailbox: u32,
    /// Attempts of a failing turn before its message is a dead letter.
    pub retries: u32,
    /// LLM tokens its turns used.
    pub tokens: u64,
    /// Its token budget, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_budget: Option<u64>,
    /// How many times it was restarted.
    pub restarts: u64,
    /// The last failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// How it supervises its children (`strategy`, `max_restarts`,
    /// `within_secs`).
    pub supervisor: Value,
    /// The state its last turn returned (text; JSON by convention).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// When it was created (RFC 3339).
    pub created: String,
    /// The approval requests waiting for a decision (`GET
    /// /v1/agents/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approvals_waiting: Option<Vec<ApprovalInfo>>,
    /// How many dead letters it has (`GET /v1/agents/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letters: Option<u64>,
}

impl AgentInfo {
    /// The document of an agent as the agent system lists it.
    pub fn of(info: &tessera_orchestrator::agent::AgentInfo) -> Self {
        use tessera_orchestrator::agent::Status;
        let r = &info.record;
        Self {
            id: r.id.clone(),
            status: r.status.name().to_string(),
            reason: match &r.status {
                Status::Failed { reason } | Status::Stopped { reason } => Some(reason.clone()),
                _ => None,
            },
            waiting_for: match &r.status {
                Status::Waiting { request } => Some(request.clone()),
                _ => None,
            },
            component: r.component.component.clone(),
            tool: Some(crate::mcp::agent_tool_name(&r.id)),
            parent: r.parent.clone(),
            template: r.template.clone(),
            children: r.children.clone(),
            turns: r.turns,
            depth: info.depth,
            mailbox: r.mailbox,
            retries: r.retries,
            tokens: r.tokens,
            token_budget: r.token_budget,
            restarts: r.restart_count,
            last_error: r.last_error.clone(),
            supervisor: serde_json::to_value(r.supervisor).unwrap_or_default(),
            state: r.state.clone(),
            created: r.created.clone(),
            approvals_waiting: None,
            dead_letters: None,
        }
    }
}

/// `GET /v1/agents`: a page of agents, by id.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct AgentList {
    /// The agents of this page (without approvals and dead-letter counts).
    pub agents: Vec<AgentInfo>,
    /// Where the next page starts (pass it as `after`); absent at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// A message a turn sent.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SentMessage {
    /// The recipient.
    pub to: String,
    /// The message id.
    pub message: String,
}

/// A model exchange or an agent operation of a turn: a step of its journal
/// run whose capability is `llm` or `agent`, rendered as `tessera agents
/// log` prints it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TurnExchange {
    /// The step's index in the run.
    pub step: u64,
    /// `capability.op` (`llm.chat`, `agent.send`, `agent.tool`, …).
    pub kind: String,
    /// One line saying what happened.
    pub line: String,
    /// The request, as journaled.
    pub request: Value,
    /// The response, as journaled.
    pub response: Value,
}

/// One committed turn.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct AgentTurn {
    /// Its number (1-based).
    pub turn: u64,
    /// The message it handled.
    pub message: AgentMessage,
    /// The message's mailbox sequence.
    pub seq: u64,
    /// The journal run of the attempt that committed (`/v1/runs/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// Journal runs of attempts that failed or stopped before it.
    pub earlier_runs: Vec<String>,
    /// The reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// Messages it sent.
    pub sent: Vec<SentMessage>,
    /// The state it returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// LLM tokens it used.
    pub tokens: u64,
    /// When it committed (RFC 3339).
    pub committed: String,
    /// How long it took, attempts included, in milliseconds.
    pub duration_ms: u64,
    /// Its model exchanges and agent operations (sends, asks, spawns, tool
    /// calls), in order.
    pub exchanges: Vec<TurnExchange>,
}

/// `GET /v1/agents/{id}/turns`: a page of an agent's turn log, oldest
/// first.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TurnList {
    /// The agent.
    pub agent: String,
    /// The turns of this page.
    pub turns: Vec<AgentTurn>,
    /// Where the next page starts (pass it as `after`); absent at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<u64>,
}

/// A message whose turn failed for good.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DeadLetterInfo {
    /// The message.
    pub message: AgentMessage,
    /// Its mailbox sequence (`POST …/dead-letters/redrive` with `seq`).
    pub seq: u64,
    /// The last error.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// The journal runs of the attempts.
    pub runs: Vec<String>,
    /// When it failed (RFC 3339).
    pub failed: String,
}

impl From<&tessera_orchestrator::agent::DeadLetter> for DeadLetterInfo {
    fn from(d: &tessera_orchestrator::agent::DeadLetter) -> Self {
        Self {
            message: (&d.message).into(),
            seq: d.seq,
            error: d.error.clone(),
            attempts: d.attempts,
            runs: d.runs.clone(),
            failed: d.failed.clone(),
        }
    }
}

/// `GET /v1/agents/{id}/dead-letters`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DeadLetterList {
    /// The agent's dead letters, oldest first.
    pub dead_letters: Vec<DeadLetterInfo>,
}

/// `POST /v1/agents/{id}/dead-letters/redrive`. An empty body re-drives
/// every dead letter.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct Redrive {
    /// Only the dead letter at this mailbox sequence.
    #[serde(default)]
    pub seq: Option<u64>,
}

/// `200` of `POST /v1/agents/{id}/dead-letters/redrive`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Redriven {
    /// The ids the messages were sent again under
    /// (`<id>~redrive<seq>`), in order.
    pub messages: Vec<String>,
}

/// `POST /v1/agents/{id}/fork`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ForkAgent {
    /// The turn to fork after (0: the agent's initial state).
    pub at: u64,
    /// The new top-level agent's id.
    #[serde(rename = "as")]
    pub as_id: String,
}
