//! What went wrong, for clients: a stable [`ErrorCode`] that fixes the HTTP
//! status, a message and details. The HTTP API sends it as one body for
//! every error of every route, `{"error": {"code": …, "message": …, …}}`,
//! and MCP renders it as a tool error (see `mcp.rs`), so the two cannot
//! disagree about what a failure is. The conversions from the registry's,
//! the runtime's and the journal's errors are here, once; call outcomes
//! are classified in `call.rs`. The same types give the OpenAPI document
//! its `Error` schema.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Serialize;
use tessera_journal::Error as JournalError;
use tessera_runtime::Error as RtError;

use crate::registry::RegistryError;

/// What went wrong, stable across releases. Each code has one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 401: no token, or an unknown one, where a token is required.
    Unauthorized,
    /// 403: the token lacks a scope the route needs.
    Forbidden,
    /// 403: the `Host` header names no host this server answers to.
    HostNotAllowed,
    /// 403: the `Origin` header names a site that may not call the server.
    OriginNotAllowed,
    /// 415: a request body that is not `application/json`.
    UnsupportedMediaType,
    /// 413: a request body over the server's limit.
    BodyTooLarge,
    /// 404: no such route.
    NotFound,
    /// 405: the route does not take this method.
    MethodNotAllowed,
    /// 400: a path parameter that cannot be read.
    BadPath,
    /// 400: a query parameter that cannot be read or is out of range.
    BadQuery,
    /// 503: the server is at its limit of concurrent calls.
    Overloaded,
    /// 503: the component is still being compiled (or loaded) in the
    /// background; retry in a moment (`Retry-After` says when).
    Loading,
    /// 429: the component is at its `max_concurrent` limit.
    ComponentBusy,
    /// 404: no component of that name.
    NoSuchComponent,
    /// 404: the component has no such version.
    NoSuchVersion,
    /// 404: the component exports no such function, the name is
    /// ambiguous, or the manifest's `[tools]` section does not serve it.
    NoSuchFunction,
    /// 404: no run has that id (or id prefix).
    NoSuchRun,
    /// 400: the id prefix matches several runs.
    AmbiguousRun,
    /// 409: the run's component is no longer in the store.
    ComponentMissing,
    /// 400: a bucket name the stores do not accept (1-64 ASCII letters,
    /// digits, `_` and `-`).
    InvalidBucket,
    /// 400: a key the stores do not accept (empty, over 1024 bytes, or
    /// with a control character).
    InvalidKey,
    /// 404: the key has no value in the bucket.
    NoSuchKey,
    /// 409: a conditional write (`expect_revision`, `expect_absent`) found
    /// the key in another state.
    Conflict,
    /// 503: the store cannot be opened or reached (the embedded store held
    /// by another process, NATS down).
    StoreUnavailable,
    /// 400: a component name that cannot be used.
    InvalidName,
    /// 400: the body is not the JSON the route takes.
    BadJson,
    /// 400: the arguments do not fit the function's parameters.
    BadArguments,
    /// 400: the function takes or returns a resource.
    NotCallable,
    /// 400: the manifest cannot be read or is invalid.
    BadManifest,
    /// 400: the component cannot be read, compiled or linked.
    BadComponent,
    /// 403: the trust policy refuses the component (unsigned, signed by an
    /// untrusted key, changed after signing, not its pinned digest).
    Untrusted,
    /// 422: a grant denied something the call needed.
    Denied,
    /// 422: a limit (fuel, deadline, memory, output …) stopped the call.
    Limit,
    /// 422: the guest trapped.
    Trap,
    /// 422: the call was cancelled (client gone, server shutting down).
    Cancelled,
    /// 404: no plan of that name is registered.
    NoSuchPlan,
    /// 404: no plan run has that id.
    NoSuchPlanRun,
    /// 400: the plan cannot be used (TOML, keys, expressions, cycles, a
    /// step given as a file path); `place` names where, `file` the plan.
    BadPlan,
    /// 400: the inputs of a plan run do not fit the plan's inputs
    /// (unknown, missing, wrong type); `place` names the input.
    BadInputs,
    /// 409: the plan run is already running in this server.
    PlanRunActive,
    /// 409: the plan run is not running in this server (it ended, or it
    /// was interrupted and waits for a resume).
    PlanRunNotActive,
    /// 409: the plan run succeeded: there is nothing to resume.
    PlanRunSucceeded,
    /// 404: no agent has that id.
    NoSuchAgent,
    /// 400: an agent id that cannot be used (1-200 characters; segments of
    /// lowercase letters, digits, `-`, `_`, `.` joined by `/`).
    InvalidAgentId,
    /// 409: an agent with that id exists already.
    AgentExists,
    /// 429: the agent's mailbox is full (`limit`: its capacity); send again
    /// once it has drained.
    MailboxFull,
    /// 409: the agent takes no messages (it failed, or its supervisor did):
    /// restart it.
    AgentStopped,
    /// 404: the agent has no such approval request, dead letter or turn.
    NoSuchAgentEntry,
    /// 409: the request does not fit the agent's state (an approval
    /// request already decided).
    AgentConflict,
    /// 422: the message's turn failed for good: the message is a dead
    /// letter (`GET /v1/agents/{id}/dead-letters`).
    TurnFailed,
    /// 504: no reply within the time asked; the message stays delivered and
    /// its turn still runs.
    ReplyTimeout,
    /// 500: the registry could not be read or written.
    Registry,
    /// 500: the journal could not be read or written.
    Journal,
    /// 500: the engine failed.
    Engine,
    /// 500: the tokens file could not be read.
    Tokens,
    /// 500: the store failed an operation.
    Store,
    /// 500: anything else that should not happen.
    Internal,
}

impl ErrorCode {
    /// The HTTP status of this code.
    pub fn status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            Unauthorized => StatusCode::UNAUTHORIZED,
            Forbidden | HostNotAllowed | OriginNotAllowed | Untrusted => StatusCode::FORBIDDEN,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            NotFound | NoSuchComponent | NoSuchVersion | NoSuchFunction | NoSuchRun | NoSuchKey
            | NoSuchPlan | NoSuchPlanRun | NoSuchAgent | NoSuchAgentEntry => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            BadPath | BadQuery | AmbiguousRun | InvalidName | BadJson | BadArguments
            | NotCallable | BadManifest | BadComponent | InvalidBucket | InvalidKey | BadPlan
            | BadInputs | InvalidAgentId => StatusCode::BAD_REQUEST,
            ComponentMissing | Conflict | PlanRunActive | PlanRunNotActive | PlanRunSucceeded
            | AgentExists | AgentStopped | AgentConflict => StatusCode::CONFLICT,
            Overloaded | Loading | StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ComponentBusy | MailboxFull => StatusCode::TOO_MANY_REQUESTS,
            Denied | Limit | Trap | Cancelled | TurnFailed => StatusCode::UNPROCESSABLE_ENTITY,
            ReplyTimeout => StatusCode::GATEWAY_TIMEOUT,
            Registry | Journal | Engine | Tokens | Store | Internal => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

/// A limit named in an error: a number (`body_too_large`,
/// `component_busy`) or the name of the limit that stopped a call
/// (`limit`: `fuel`, `deadline`, `memory`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum LimitRef {
    /// The limit's value.
    Value(u64),
    /// The limit's name.
    Name(String),
}

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(rename = "Error")]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong, with the details that apply to its code.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ErrorDetail {
    /// Stable code; it fixes the HTTP status.
    pub code: ErrorCode,
    /// What happened and what to do, for a person.
    pub message: String,
    /// JSON path of the offending argument or field (`bad_arguments`,
    /// `bad_component`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Line of a JSON syntax error in the body (`bad_json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// Column of a JSON syntax error in the body (`bad_json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u64>,
    /// The limit involved (`body_too_large`, `component_busy`, `mailbox_full`,
    /// `limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<LimitRef>,
    /// The capability whose grant denied (`denied`): `http`, `files`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// What was denied (`denied`): a URL, a path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Why the grant denied it (`denied`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The journal run of a call that failed (`denied`, `limit`, `trap`,
    /// `cancelled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Each import of a component that Tessera does not provide, and why
    /// (`bad_component` when the component does not link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unresolved_imports: Option<Vec<crate::api::UnresolvedImportInfo>>,
    /// The functions the refused component exports (`bad_component` when
    /// the component does not link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exports: Option<Vec<String>>,
    /// What the guest left behind when a call it ran failed (`denied`,
    /// `limit`, `trap`, `cancelled`): the end of its stderr, its last log
    /// records and, for a trap, its backtrace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<GuestDiagnostics>,
    /// The bucket (`invalid_bucket`, `invalid_key`, `no_such_key`,
    /// `conflict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// The key (`invalid_key`, `no_such_key`, `conflict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The revision a conditional write expected (`conflict` of an
    /// `expect_revision` write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_revision: Option<u64>,
    /// `true` when a conditional write expected the key to have no value
    /// (`conflict` of an `expect_absent` write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_absent: Option<bool>,
    /// The key's revision a conditional write found instead (`conflict`);
    /// absent when the key has no value (or the backend did not report
    /// the revision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found_revision: Option<u64>,
    /// Where in a plan the problem is (`bad_plan`, `bad_inputs`):
    /// `steps.fetch.args.url`, `inputs.topic`, `line 3`, or `plan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
    /// The plan file, as it was named when given (`bad_plan`,
    /// `bad_inputs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The plan run (`no_such_plan_run`, `plan_run_active`,
    /// `plan_run_not_active`, `plan_run_succeeded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_run: Option<String>,
    /// The agent (the agent codes, `turn_failed`, `reply_timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The id of the message sent (`turn_failed`, `reply_timeout`): its
    /// turn is in `GET /v1/agents/{id}/turns` once it committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_message: Option<String>,
}

/// Most stderr bytes a failed call's diagnostics carry: the last ones.
pub const STDERR_TAIL_BYTES: usize = 4096;
/// Most `wasi:logging` records a failed call's diagnostics carry: the last ones.
pub const LOG_TAIL_RECORDS: usize = 20;
/// Most bytes of one log record's message in the diagnostics.
pub const LOG_MESSAGE_BYTES: usize = 1024;
/// Most frames of a guest backtrace in the diagnostics: the innermost ones.
pub const BACKTRACE_FRAMES: usize = 64;

/// What a guest left behind in a call that failed, bounded so an error
/// stays small however much the guest wrote: the last
/// [`STDERR_TAIL_BYTES`] bytes of stderr, the last [`LOG_TAIL_RECORDS`]
/// log records (each message cut to [`LOG_MESSAGE_BYTES`]) and the first
/// [`BACKTRACE_FRAMES`] frames of a trap's backtrace. The whole output
/// stays in the journal run.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct GuestDiagnostics {
    /// The end of what the guest wrote to stderr (at most 4096 bytes, lossy
    /// UTF-8, starting at a character boundary); empty if it wrote nothing.
    pub stderr: String,
    /// How many bytes the guest wrote to stderr in all (more than `stderr`
    /// holds when it was cut).
    pub stderr_bytes: u64,
    /// Its last `wasi:logging` records (at most 20, oldest first; each
    /// message at most 1024 bytes).
    pub logs: Vec<crate::api::LogLine>,
    /// How many records it logged in all.
    pub log_records: u64,
    /// The guest backtrace of a trap, innermost frame first (at most 64
    /// frames), with function names and, when the component carries DWARF,
    /// source lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backtrace: Option<String>,
}

/// The last `max` bytes of `bytes` as text, starting at a character
/// boundary.
fn tail_text(bytes: &[u8], max: usize) -> String {
    let mut start = bytes.len().saturating_sub(max);
    // Skip UTF-8 continuation bytes of a character cut in two.
    while start < bytes.len() && start > 0 && (bytes[start] & 0xC0) == 0x80 {
        start += 1;
    }
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// At most `max` bytes of `s`, cut at a character boundary, with `…` when cut.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Whether a backtrace line starts a frame (`  12: 0x1f - …`); the source
/// lines under a frame belong to it.
fn is_frame(line: &str) -> bool {
    line.trim_start()
        .split(':')
        .next()
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
}

/// The first [`BACKTRACE_FRAMES`] frames of a backtrace, and how many more
/// there were.
fn first_frames(backtrace: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let mut frames = 0;
    let mut more = 0;
    for line in backtrace.lines() {
        if is_frame(line) {
            frames += 1;
        }
        if frames > BACKTRACE_FRAMES {
            more += usize::from(is_frame(line));
        } else {
            kept.push(line);
        }
    }
    let mut text = kept.join("\n");
    if more > 0 {
        text.push_str(&format!("\n  … {more} more frames"));
    }
    text
}

impl GuestDiagnostics {
    /// The diagnostics of a call's output; `backtrace` from its trap.
    pub fn new(output: &tessera_runtime::gateway::CapturedOutput, backtrace: Option<&str>) -> Self {
        let skip = output.logs.len().saturating_sub(LOG_TAIL_RECORDS);
        Self {
            stderr: tail_text(&output.stderr, STDERR_TAIL_BYTES),
            stderr_bytes: output.stderr.len() as u64,
            logs: output.logs[skip..]
                .iter()
                .map(|l| crate::api::LogLine {
                    level: crate::api::LogLine::level_name(l.level),
                    context: cut(&l.context, LOG_MESSAGE_BYTES),
                    message: cut(&l.message, LOG_MESSAGE_BYTES),
                })
                .collect(),
            log_records: output.logs.len() as u64,
            backtrace: backtrace.map(first_frames),
        }
    }

    /// Whether there is nothing to show.
    pub fn is_empty(&self) -> bool {
        self.stderr.is_empty() && self.logs.is_empty() && self.backtrace.is_none()
    }

    /// The diagnostics as text, one section each for stderr, logs and the
    /// backtrace (absent sections left out), for a tool error's content.
    pub fn render(&self) -> String {
        let mut sections = Vec::new();
        if !self.stderr.is_empty() {
            let head = if (self.stderr.len() as u64) < self.stderr_bytes {
                format!(
                    "guest stderr (last {} of {} bytes):",
                    self.stderr.len(),
                    self.stderr_bytes
                )
            } else {
                "guest stderr:".to_string()
            };
            sections.push(format!("{head}\n{}", self.stderr.trim_end()));
        }
        if !self.logs.is_empty() {
            let head = if (self.logs.len() as u64) < self.log_records {
                format!(
                    "guest logs (last {} of {} records):",
                    self.logs.len(),
                    self.log_records
                )
            } else {
                "guest logs:".to_string()
            };
            let lines: Vec<String> = self
                .logs
                .iter()
                .map(|l| format!("[{}] {}: {}", l.level, l.context, l.message))
                .collect();
            sections.push(format!("{head}\n{}", lines.join("\n")));
        }
        if let Some(b) = &self.backtrace {
            sections.push(format!("guest backtrace:\n{}", b.trim_end()));
        }
        sections.join("\n\n")
    }
}

/// An error answer: a code, a message and details, sent as [`ErrorBody`]
/// with the code's status.
#[derive(Debug, Clone)]
pub struct ApiError(Box<ErrorDetail>);

impl ApiError {
    /// An error with no details.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(Box::new(ErrorDetail {
            code,
            message: message.into(),
            path: None,
            line: None,
            column: None,
            limit: None,
            grant: None,
            target: None,
            reason: None,
            run_id: None,
            unresolved_imports: None,
            exports: None,
            guest: None,
            bucket: None,
            key: None,
            expected_revision: None,
            expected_absent: None,
            found_revision: None,
            place: None,
            file: None,
            plan_run: None,
            agent: None,
            agent_message: None,
        }))
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.0.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The details.
    pub fn detail(&self) -> &ErrorDetail {
        &self.0
    }

    /// Adds details.
    pub fn with(mut self, f: impl FnOnce(&mut ErrorDetail)) -> Self {
        f(&mut self.0);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.0.code;
        let mut response = (code.status(), Json(ErrorBody { error: *self.0 })).into_response();
        if code == ErrorCode::Loading {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let code = match &e {
            RegistryError::NoSuchComponent(_) => ErrorCode::NoSuchComponent,
            RegistryError::NoSuchVersion { .. } => ErrorCode::NoSuchVersion,
            RegistryError::InvalidName(_) => ErrorCode::InvalidName,
            RegistryError::Io { .. } | RegistryError::Corrupt { .. } => ErrorCode::Registry,
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<RtError> for ApiError {
    fn from(e: RtError) -> Self {
        let code = match &e {
            RtError::BadArguments { error, .. } => {
                let path = error.path.clone();
                return ApiError::new(ErrorCode::BadArguments, e.to_string())
                    .with(|d| d.path = Some(path));
            }
            RtError::Busy { limit } => {
                let limit = u64::from(*limit);
                return ApiError::new(ErrorCode::ComponentBusy, e.to_string())
                    .with(|d| d.limit = Some(LimitRef::Value(limit)));
            }
            RtError::Link {
                unresolved,
                exports,
                ..
            } => {
                let unresolved: Vec<_> = unresolved
                    .iter()
                    .map(crate::api::UnresolvedImportInfo::from)
                    .collect();
                let exports = exports.clone();
                return ApiError::new(ErrorCode::BadComponent, e.to_string()).with(|d| {
                    d.unresolved_imports = Some(unresolved);
                    d.exports = Some(exports);
                });
            }
            RtError::NoSuchFunction { .. }
            | RtError::Ambiguous { .. }
            | RtError::NotServed { .. } => ErrorCode::NoSuchFunction,
            RtError::NotCallable { .. } => ErrorCode::NotCallable,
            RtError::BadHttpRequest { .. } => ErrorCode::BadArguments,
            RtError::Manifest(_) | RtError::Grant { .. } | RtError::Bind { .. } => {
                ErrorCode::BadManifest
            }
            RtError::Read { .. }
            | RtError::NotWasm { .. }
            | RtError::Adapt { .. }
            | RtError::Compile { .. }
            | RtError::Compose { .. } => ErrorCode::BadComponent,
            RtError::Engine { .. } | RtError::Task { .. } => ErrorCode::Engine,
            RtError::Instantiate { .. } | RtError::SessionEnded { .. } => ErrorCode::Trap,
            RtError::Untrusted { .. } => ErrorCode::Untrusted,
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<JournalError> for ApiError {
    fn from(e: JournalError) -> Self {
        let code = match e {
            JournalError::Runtime(r) => return r.into(),
            JournalError::NoSuchRun(_) => ErrorCode::NoSuchRun,
            JournalError::Ambiguous(..) => ErrorCode::AmbiguousRun,
            JournalError::ComponentMissing(_) => ErrorCode::ComponentMissing,
            _ => ErrorCode::Journal,
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<crate::admit::AdmitError> for ApiError {
    fn from(e: crate::admit::AdmitError) -> Self {
        use crate::admit::AdmitError;
        match e {
            AdmitError::Registry(r) => r.into(),
            AdmitError::Manifest(m) => ApiError::new(ErrorCode::BadManifest, m.to_string()),
            AdmitError::Runtime(r) => r.into(),
        }
    }
}

impl From<tessera_store::StoreError> for ApiError {
    fn from(e: tessera_store::StoreError) -> Self {
        use tessera_store::{Expect, StoreError as S};
        let message = e.to_string();
        match e {
            S::InvalidBucket { name, .. } => {
                ApiError::new(ErrorCode::InvalidBucket, message).with(|d| d.bucket = Some(name))
            }
            S::InvalidKey { key, .. } => {
                ApiError::new(ErrorCode::InvalidKey, message).with(|d| d.key = Some(key))
            }
            S::Conflict {
                bucket,
                key,
                expected,
                found,
            } => ApiError::new(ErrorCode::Conflict, message).with(|d| {
                d.bucket = Some(bucket);
                d.key = Some(key);
                match expected {
                    Expect::Revision(r) => d.expected_revision = Some(r),
                    Expect::Absent => d.expected_absent = Some(true),
                    Expect::Any => {}
                }
                d.found_revision = found;
            }),
            // No route increments; should one, these are the value's fault.
            S::NotAnInteger { bucket, key } | S::Overflow { bucket, key } => {
                ApiError::new(ErrorCode::Conflict, message).with(|d| {
                    d.bucket = Some(bucket);
                    d.key = Some(key);
                })
            }
            S::Unavailable { .. } | S::Settings { .. } => {
                ApiError::new(ErrorCode::StoreUnavailable, message)
            }
            S::Backend { .. } => ApiError::new(ErrorCode::Store, message),
        }
    }
}

impl From<crate::auth::TokenError> for ApiError {
    fn from(e: crate::auth::TokenError) -> Self {
        ApiError::new(ErrorCode::Tokens, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_serializes_to_its_documented_name() {
        let schema = schemars::schema_for!(ErrorCode);
        let names: Vec<String> = schema
            .as_value()
            .pointer("/oneOf")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.pointer("/const").and_then(|c| c.as_str()))
                    .map(str::to_string)
                    .collect()
            })
            .or_else(|| {
                schema.as_value().pointer("/enum").and_then(|v| {
                    v.as_array().map(|a| {
                        a.iter()
                            .filter_map(|c| c.as_str().map(str::to_string))
                            .collect()
                    })
                })
            })
            .unwrap_or_default();
        assert!(names.contains(&"host_not_allowed".to_string()), "{names:?}");
        assert_eq!(
            serde_json::to_value(ErrorCode::UnsupportedMediaType).unwrap(),
            "unsupported_media_type"
        );
    }
}
