//! The OpenAPI 3.1 document of the HTTP API, served at `/openapi.json`.
//!
//! [`ROUTES`] lists every operation with its scope, its request body, its
//! success answer and every error status it can give; the document is
//! built from it, and a test checks it against the real router. Body
//! schemas are JSON Schemas (draft 2020-12, which OpenAPI 3.1 uses)
//! derived with `schemars` from the types in [`crate::api`] and
//! [`crate::error`] that the handlers send, so they cannot drift apart.
//! (`schemars` rather than `utoipa`: the handlers stay plain axum
//! functions, and the route table below is the one place that says what
//! a route takes and answers; rmcp already uses `schemars`.)

use schemars::generate::{Contract, SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

use crate::api;
use crate::error::ErrorBody;

/// A body's schema, from its Rust type.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// What a successful answer carries.
#[derive(Debug, Clone, Copy)]
pub enum Success {
    /// A JSON body with this status.
    Json(u16, SchemaFn),
    /// One of two JSON bodies, each with its status (a send answers 202
    /// without `wait`, 200 with the reply with it).
    Either(u16, SchemaFn, u16, SchemaFn),
    /// No body (`204`).
    Empty(u16),
    /// A stream of server-sent events.
    EventStream,
    /// Prometheus metrics, OpenMetrics text.
    Metrics,
}

/// One operation of the API.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// Lower-case HTTP method.
    pub method: &'static str,
    /// Path template, parameters in braces.
    pub path: &'static str,
    /// The token scopes that may use the route, any one suffices (none:
    /// public).
    pub scopes: &'static [&'static str],
    /// One line.
    pub summary: &'static str,
    /// The query parameters it reads (all optional).
    pub query: &'static [QueryParam],
    /// The JSON request body, and whether it is required.
    pub request: Option<(SchemaFn, bool)>,
    /// The answer when it works.
    pub success: Success,
    /// Every error status the route can answer, each with the `Error` body.
    pub errors: &'static [u16],
}

/// An optional query parameter of a route.
#[derive(Debug, Clone, Copy)]
pub struct QueryParam {
    /// Its name.
    pub name: &'static str,
    /// Its JSON Schema type: `string` or `integer`.
    pub kind: &'static str,
    /// The smallest and largest values of an `integer`.
    pub range: Option<(u64, u64)>,
    /// What it does.
    pub description: &'static str,
}

/// The errors answered in OpenAI's shape rather than Tessera's (the
/// OpenAI-compatible endpoint's own refusals; the token, guard and body
/// limit answer in Tessera's shape before it is reached).
const OPENAI_SHAPED: &[(&str, u16)] = &[
    ("/v1/chat/completions", 400),
    ("/v1/chat/completions", 404),
    ("/v1/chat/completions", 503),
    ("/v1/chat/completions", 504),
];

/// OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`.
fn openai_error() -> Schema {
    Schema::try_from(json!({
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }},
    }))
    .unwrap_or_default()
}

/// Statuses any route can answer: a refused `Host` or `Origin` (403), a
/// body over the limit (413), a body that is not JSON (415).
const GUARD: &[u16] = &[403, 413, 415];

/// Every operation.
pub const ROUTES: &[Route] = &[
    Route {
        method: "get",
        path: "/v1/models",
        scopes: &["call"],
        summary: "The language models installed on this host, in OpenAI's list shape (`{\"object\": \"list\", \"data\": [{\"id\": …}]}`)",
        query: &[],
        request: None,
        success: Success::Json(200, schema::<Map<String, Value>>),
        errors: &[401, 403, 413, 415, 500],
    },
    Route {
        method: "post",
        path: "/v1/chat/completions",
        scopes: &["call"],
        summary: "OpenAI-compatible chat completions by this host's installed language models, with tools (calls constrained to their schemas) and streaming (`stream: true`: server-sent `chat.completion.chunk` events, then `[DONE]`); errors in OpenAI's shape. See docs/ai.md",
        query: &[],
        request: Some((schema::<Map<String, Value>>, true)),
        success: Success::Json(200, schema::<Map<String, Value>>),
        errors: &[400, 401, 403, 404, 413, 415, 500, 503, 504],
    },
    Route {
        method: "get",
        path: "/v1/health",
        scopes: &[],
        summary: "Liveness",
        query: &[],
        request: None,
        success: Success::Json(200, schema::<api::Health>),
        errors: GUARD,
    },
    Route {
        method: "get",
        path: "/openapi.json",
        scopes: &[],
        summary: "This document",
        query: &[],
        request: None,
        success: Success::Json(200, schema::<Map<String, Value>>),
        errors: GUARD,
    },
    Route {
        method: "get",
        path: "/v1/components",
        scopes: &["call", "manage"],
        summary: "List components",
        query: &[],
        request: None,
        success: Success::Json(200, schema::<api::ComponentList>),
        errors: &[401, 403, 413, 415, 500],
    },
    Route {
        method: "post",
        path: "/v1/components",
        scopes: &["manage"],
        summary: "Add a component (or a new version) from a server-side path; refused (400 bad_component, with unresolved_imports and exports) unless it compiles and links",
        query: &[],
        request: Some((schema::<api::AddByPath>, true)),
        success: Success::Json(201, schema::<api::Registered>),
        errors: &[400, 401, 403, 413, 415, 500],
    },
    Route {
        method: "get",
        path: "/v1/components/{name}",
        scopes: &["call", "manage"],
        summary: "Inspect a component: versions, function schemas, grants, effects and any load error",
        query: &[],
        request: None,
        success: Success::Json(200, schema::<api::ComponentInfo>),
        errors: &[400, 401, 403, 404, 413, 415, 500],
    },
    Route {
        method: "put",
        path: "/v1/components/{name}",
        scopes: &["manage"],
        summary: "Upload a component (or a new version), base64 in JSON; refused (400 bad_component, with unresolved_imports and exports) unless it compiles and links",
        query: &[],
        request: Some((schema::<api::Upload>, true)),
        success: Success::Json(201, schema::<api::Registered>),
        errors: &[400, 401, 403, 404, 413, 415, 500],
    },
    Route {
        method: "delete",
        path: "/v1/components/{name}",
        scopes: &["manage"],
        summary: "Remove a component; calls in flight finish",
        query: &[],
        request: None,
        success: Success::Empty(204),
        errors: &[400, 401, 403, 404, 413, 415, 500],
    },
    Route {
        method: "post",
        path: "/v1/components/{name}/activate",
        scopes: &["manage"],
        summary: "Activate a version (hot swap)",
        query: &[],
        request: Some((schema::<api::Activate>, true)),
        success: Success::Json(200, schema::<api::ComponentInfo>),
        errors: &[400, 401, 403, 404, 413, 415, 500],
    },
    Route {
        method: "post",
        path: "/v1/components/{name}/rollback",
        scopes: &["manage"],
        summary: "Go back to the previously active version",
        query: &[],
        request: None,
        success: Success::Json(200, schema::<api::ComponentInfo>),
        errors: &[400, 401, 403, 404, 413, 415, 500],
    },
    Route {
        method: "post",
        path: "/v1/components/{name}/call/{function}",
        scopes: &["call"],
        summary: "Call a function with JSON arguments",
        query: &[],
        request: Some((schema::<api::CallArgs>, false)),
        success: Success::Json(200, schema::<api::CallResult>),
        errors: &[400, 401, 403, 404, 413, 415, 422, 429, 500, 503],
    },
    Route {
        method: "get",
        path: "/v1/runs",
        scopes: &["read"],
        summary: "List recorded runs",
        query: &[],
        request: None,
        success: Success::Json(200, schema::<api::RunList>),
        errors: &[401, 403, 413, 415, 500],
    },
    Route {
        method: "get",
        path: "/v1/journal",
        scopes: &["read"],
        summary: "What the journal weighs: file size on disk, runs, bytes per run, per component",
        query: &[],
        request: None,
        success: Success::Json(200, schema::<api::JournalStats>),
        errors: &[401, 403, 413, 415, 500],
    },
    Route {
        method: "get",
        path: "/v1/runs/{id}",
        scopes: &["read"],
        summary: "Show a run's journal (the id or an unambiguous prefix)",
        query: &[],
        request: None,
        success: Success::Json(200, schema::<api::RunDetail>),
        errors: &[400, 401, 403, 404, 413, 415, 500],
    },
    Route {
        method: "post",
        path: "/v1/runs/{id}/replay",
        scopes: &["read"],
        summary: "Replay a run offline",
        query: &[],
        request: None,
        success: Success::Json(200, schema::<api::ReplayResult>),
        errors: &[400, 401, 403, 404, 409, 413, 415, 429, 500],
    },
    Route {
        method: "get",
        path: "/v1/audit",
        scopes: &["read"],
        summary: "Stream audit events (server-sent events, `event: audit`, one JSON event per `data:`)",
        query: &[],
        request: None,
        success: Success::EventStream,
        errors: &[401, 403, 413, 415, 500],
    },
    Route {
        method: "get",
        path: "/metrics",
        scopes: &["read"],
        summary: "Prometheus metrics (OpenMetrics text): calls, errors, durations, fuel, memory, denials and limits by capability, loads by cache status, plan steps, agent events, LLM tokens, the audit chain's state",
        query: &[],
        request: None,
        success: Success::Metrics,
        errors: &[401, 403, 413, 415, 500],
    },
    Route {
        method: "get",
        path: "/v1/plans",
        scopes: &["read"],
        summary: "List registered plans: name, MCP tool, description, input schema, steps, outputs (without their text)",
        query: &[],
        request: None,
        success: Success::Json(200, schema::<api::PlanList>),
        errors: &[401, 403, 413, 415, 500],
    },
    Route {
        method: "get",
        path: "/v1/plans/{name}",
        scopes: &["read"],
        summary: "Show a plan: its text, input schema, steps (in dependency order) and outputs",
        query: &[],
        request: None,
        success: Success::Json(200, schema::<api::PlanInfo>),
        errors: &[400, 401, 403, 404, 413, 415, 500],
    },
    Route {
        method: "put",
        path: "/v1/plans/{name}",
        scopes: &["manage"],
        summary: "Register (or replace) a plan from its TOML text; refused (400 bad_plan, with `place` and `file`) unless it reads and every step names a registered component",
        query: &[],
        request: Some((schema::<api::PlanUpload>, true)),
        success: Success::Json(201, schema::<api::PlanInfo>),
        errors: &[400, 401, 403, 413, 415, 500],
    },
    Route {
        method: "delete",
        path: "/v1/plans/{name}",
        scopes: &["manage"],
        summary: "Remove a plan; its runs in progress go on (each keeps the plan's text)",
        query: &[],
        request: None,
        success: Success::Empty(204),
        errors: &[400, 401, 403, 404, 413, 415, 500],
    },
    Route {
        method: "post",
        path: "/v1/plans/{name}/runs",
        scopes: &["call"],
        summary: "Start a run of a plan with these inputs, in the background; answers its id (watch it at /v1/plan-runs/{id}/events)",
        query: &[],
        request: Some((schema::<api::PlanInputs>, false)),
        success: Success::Json(202, schema::<api::PlanRunStarted>),
        errors: &[400, 401, 403, 404, 413, 415, 500, 503],
    },
    Route {
        method: "get",
        path: "/v1/plan-runs",
        scopes: &["read"],
        summary: "List plan runs, newest first",
        query: &[QueryParam {
            name: "limit",
            kind: "integer",
            range: Some((1, api::MAX_PLAN_RUN_PAGE as u64)),
            description: "At most this many runs (default 50, at most 1000).",
        }],
        request: None,
        success: Success::Json(200, schema::<api::PlanRunList>),
        errors: &[400, 401, 403, 413, 415, 500, 503],
    },
    Route {
        method: "get",
        path: "/v1/plan-runs/{id}",
        scopes: &["read"],
        summary: "Show a plan run: its record (status, inputs, outputs, error) and each step's (state, output, attempts, journal runs, timings)",
        query: &[],
        request: None,
        success: Success::Json(200, schema::<api::PlanRunDetail>),
        errors: &[400, 401, 403, 404, 413, 415, 500, 503],
    },
    Route {
        method: "post",
        path: "/v1/plan-runs/{id}/cancel",
        scopes: &["call"],
        summary: "Cancel a plan run this server drives: calls in flight stop, nothing more starts; answers the run once it stopped (`cancelled`, resumable)",
        query: &[],
        request: None,
        success: Success::Json(200, schema::<api::PlanRunSummary>),
        errors: &[400, 401, 403, 404, 409, 413, 415, 500, 503],
    },
    Route {
        method: "post",
        path: "/v1/plan-runs/{id}/resume",
        scopes: &["call"],
        summary: "Go on with a plan run that stopped (interrupted, cancelled or failed) in the background: finished steps are not run again",
        query: &[],
        request: None,
        success: Success::Json(202, schema::<api::PlanRunStarted>),
        errors: &[400, 401, 403, 404, 409, 413, 415, 500, 503],
    },
    Route {
        method: "get",
        path: "/v1/plan-runs/{id}/events",
        scopes: &["read"],
        summary: "Stream a plan run's events (server-sent events named `started`, `attempt`, `retrying`, `step`, `ended`, one JSON event per `data:`), from its start, ending after `ended`; a run that ended gets its `ended` event alone",
        query: &[],
        request: None,
        success: Success::EventStream,
        errors: &[400, 401, 403, 404, 409, 413, 415, 500, 503],
    },
    Route {
        method: "get",
        path: "/v1/agents",
        scopes: &["read"],
        summary: "List agents by id, a page at a time: status, component, supervisor, turns, mailbox depth, tokens, state",
        query: &[
            QueryParam {
                name: "after",
                kind: "string",
                range: None,
                description: "Only agents after this id: the previous page's `cursor`.",
            },
            QueryParam {
                name: "limit",
                kind: "integer",
                range: Some((1, api::MAX_AGENT_PAGE as u64)),
                description: "Agents per page (default 100, at most 1000).",
            },
        ],
        request: None,
        success: Success::Json(200, schema::<api::AgentList>),
        errors: &[400, 401, 403, 413, 415, 500, 503],
    },
    Route {
        method: "post",
        path: "/v1/agents",
        scopes: &["manage"],
        summary: "Create a top-level agent running a registered component (one that exports `tessera:agent/handler.turn`), with an optional initial state; it becomes the MCP tool `agent__<id>`",
        query: &[],
        request: Some((schema::<api::SpawnAgent>, true)),
        success: Success::Json(201, schema::<api::AgentInfo>),
        errors: &[400, 401, 403, 404, 409, 413, 415, 500, 503],
    },
    Route {
        method: "get",
        path: "/v1/agents/events",
        scopes: &["read"],
        summary: "Stream what happens to agents (server-sent events named `spawned`, `turn`, `attempt-failed`, `dead-letter`, `approval`, `restarted`, `failed`, and `lagged` when the watcher fell behind; one JSON event per `data:`) from now on, of every agent or of `?agent=<id>` and its descendants",
        query: &[QueryParam {
            name: "agent",
            kind: "string",
            range: None,
            description: "Only the events of this agent and its descendants (`parent/child` ids).",
        }],
        request: None,
        success: Success::EventStream,
        errors: &[400, 401, 403, 413, 415, 500, 503],
    },
    Route {
        method: "get",
        path: "/v1/agents/{id}",
        scopes: &["read"],
        summary: "Show an agent: its record (status, state, supervisor, children, turns, tokens, last error), mailbox depth, the approval requests waiting and its dead-letter count; a child's id has its `/` percent-encoded (`parent%2Fchild`)",
        query: &[],
        request: None,
        success: Success::Json(200, schema::<api::AgentInfo>),
        errors: &[400, 401, 403, 404, 413, 415, 500, 503],
    },
    Route {
        method: "post",
        path: "/v1/agents/{id}/messages",
        scopes: &["call"],
        summary: "Send a message: 202 once it is in the mailbox; with `wait`, 200 with the reply of its turn (504 `reply_timeout` when none comes in time, 422 `turn_failed` when the turn failed for good); 429 `mailbox_full`, 409 `agent_stopped`",
        query: &[],
        request: Some((schema::<api::SendMessage>, true)),
        success: Success::Either(
            202,
            schema::<api::MessageSent>,
            200,
            schema::<api::AgentReply>,
        ),
        errors: &[400, 401, 403, 404, 409, 413, 415, 422, 429, 500, 503, 504],
    },
    Route {
        method: "post",
        path: "/v1/agents/{id}/ask",
        scopes: &["call"],
        summary: "Send a message and wait for the reply of its turn (`/messages` with `wait`)",
        query: &[],
        request: Some((schema::<api::SendMessage>, true)),
        success: Success::Json(200, schema::<api::AgentReply>),
        errors: &[400, 401, 403, 404, 409, 413, 415, 422, 429, 500, 503, 504],
    },
    Route {
        method: "get",
        path: "/v1/agents/{id}/turns",
        scopes: &["read"],
        summary: "An agent's turn log, oldest first, a page at a time: each turn's message, journal run, model exchanges and agent operations (the `llm` and `agent` steps of its run), messages sent, reply, state, tokens",
        query: &[
            QueryParam {
                name: "after",
                kind: "integer",
                range: Some((0, u64::MAX)),
                description: "Only turns after this one: the previous page's `cursor`.",
            },
            QueryParam {
                name: "limit",
                kind: "integer",
                range: Some((1, api::MAX_TURN_PAGE as u64)),
                description: "Turns per page (default 100, at most 1000).",
            },
        ],
        request: None,
        success: Success::Json(200, schema::<api::TurnList>),
        errors: &[400, 401, 403, 404, 413, 415, 500, 503],
    },
    Route {
        method: "get",
        path: "/v1/agents/{id}/dead-letters",
        scopes: &["read"],
        summary: "An agent's dead letters: messages whose turns failed for good, with the error, the attempts and their journal runs",
        query: &[],
        request: None,
        success: Success::Json(200, schema::<api::DeadLetterList>),
        errors: &[400, 401, 403, 404, 413, 415, 500, 503],
    },
    Route {
        method: "post",
        path: "/v1/agents/{id}/dead-letters/redrive",
        scopes: &["call"],
        summary: "Send dead letters (all, or the one at `seq`) back to the agent's mailbox under new message ids",
        query: &[],
        request: Some((schema::<api::Redrive>, false)),
        success: Success::Json(200, schema::<api::Redriven>),
        errors: &[400, 401, 403, 404, 409, 413, 415, 429, 500, 503],
    },
    Route {
        method: "get",
        path: "/v1/agents/{id}/approvals",
        scopes: &["read"],
        summary: "An agent's approval requests (tool calls that wait for a person), waiting and decided",
        query: &[],
        request: None,
        success: Success::Json(200, schema::<api::ApprovalList>),
        errors: &[400, 401, 403, 404, 413, 415, 500, 503],
    },
    Route {
        method: "post",
        path: "/v1/agents/{id}/approvals/{request}",
        scopes: &["call"],
        summary: "Approve or reject a waiting tool call (the decider is the token's id); the turn goes on",
        query: &[],
        request: Some((schema::<api::Decide>, true)),
        success: Success::Json(200, schema::<api::Decided>),
        errors: &[400, 401, 403, 404, 409, 413, 415, 500, 503],
    },
    Route {
        method: "post",
        path: "/v1/agents/{id}/fork",
        scopes: &["manage"],
        summary: "Create a top-level agent with this agent's component, its state after turn `at` and its turn log up to there; nothing runs again",
        query: &[],
        request: Some((schema::<api::ForkAgent>, true)),
        success: Success::Json(201, schema::<api::AgentInfo>),
        errors: &[400, 401, 403, 404, 409, 413, 415, 500, 503],
    },
    Route {
        method: "post",
        path: "/v1/agents/{id}/restart",
        scopes: &["manage"],
        summary: "Restart an agent and its subtree: state back to the initial one, status active, mailbox kept",
        query: &[],
        request: None,
        success: Success::Json(200, schema::<api::AgentInfo>),
        errors: &[400, 401, 403, 404, 413, 415, 500, 503],
    },
    Route {
        method: "get",
        path: "/v1/kv",
        scopes: &["read"],
        summary: "List the key-value buckets that hold keys, with their backend (`embedded`, or `nats` when `[store.nats]` is configured)",
        query: &[],
        request: None,
        success: Success::Json(200, schema::<api::BucketList>),
        errors: &[401, 403, 413, 415, 500, 503],
    },
    Route {
        method: "get",
        path: "/v1/kv/{bucket}",
        scopes: &["read"],
        summary: "List a bucket's keys in byte order, a page at a time",
        query: &[
            QueryParam {
                name: "prefix",
                kind: "string",
                range: None,
                description: "Only keys that start with this.",
            },
            QueryParam {
                name: "after",
                kind: "string",
                range: None,
                description: "Only keys after this one: the previous page's `cursor`.",
            },
            QueryParam {
                name: "limit",
                kind: "integer",
                range: Some((1, api::MAX_KEY_PAGE as u64)),
                description: "Keys per page (default 100, at most 1000).",
            },
        ],
        request: None,
        success: Success::Json(200, schema::<api::KeyPage>),
        errors: &[400, 401, 403, 413, 415, 500, 503],
    },
    Route {
        method: "get",
        path: "/v1/kv/{bucket}/{key}",
        scopes: &["read"],
        summary: "Read a key's value (as text when it is UTF-8, and base64) and revision; the key is percent-encoded and may contain `/`",
        query: &[],
        request: None,
        success: Success::Json(200, schema::<api::KvEntry>),
        errors: &[400, 401, 403, 404, 413, 415, 500, 503],
    },
    Route {
        method: "put",
        path: "/v1/kv/{bucket}/{key}",
        scopes: &["manage"],
        summary: "Write a key's value, optionally only at an expected revision or when absent (409 `conflict` otherwise); answers the new revision",
        query: &[],
        request: Some((schema::<api::KvPut>, true)),
        success: Success::Json(200, schema::<api::KvWritten>),
        errors: &[400, 401, 403, 409, 413, 415, 500, 503],
    },
    Route {
        method: "delete",
        path: "/v1/kv/{bucket}/{key}",
        scopes: &["manage"],
        summary: "Remove a key (removing an absent key is not an error), optionally only at an expected revision (409 `conflict` otherwise)",
        query: &[QueryParam {
            name: "expect_revision",
            kind: "integer",
            range: Some((0, u64::MAX)),
            description: "Remove only if the key's value was written at this revision.",
        }],
        request: None,
        success: Success::Empty(204),
        errors: &[400, 401, 403, 409, 413, 415, 500, 503],
    },
];

/// What an error status means, in the document.
fn error_description(status: u16) -> &'static str {
    match status {
        400 => {
            "Bad request: `bad_json`, `bad_path`, `bad_query`, `bad_arguments`, `invalid_name`, `bad_component`, `bad_manifest`, `not_callable`, `ambiguous_run`, `invalid_bucket`, `invalid_key`, `bad_plan` and `bad_inputs` (with `place` and `file`), `invalid_agent_id`"
        }
        401 => "`unauthorized`: a token is required, or the token is unknown",
        403 => {
            "`forbidden` (the token lacks the scope), `host_not_allowed` or `origin_not_allowed`"
        }
        404 => {
            "Not found: `no_such_component`, `no_such_version`, `no_such_function`, `no_such_run`, `no_such_key`, `no_such_plan`, `no_such_plan_run`, `no_such_agent`, `no_such_agent_entry` (the agent has no such approval request, dead letter or turn), `not_found`"
        }
        409 => {
            "`component_missing` (the run's component is no longer stored), `conflict` (a conditional write found the key in another state: `expected_revision` or `expected_absent`, and `found_revision`), `plan_run_active` (the plan run is already running here), `plan_run_not_active` (the plan run is not running here: ended, or interrupted), `plan_run_succeeded` (nothing to resume), `agent_exists`, `agent_stopped` (the agent takes no messages until restarted), `agent_conflict` (an approval request already decided)"
        }
        413 => "`body_too_large`",
        415 => "`unsupported_media_type`: request bodies are `application/json`",
        422 => {
            "The call ran and failed: `denied`, `limit`, `trap`, `cancelled` (with its `run_id`); `turn_failed`: an agent's turn failed for good (the message is a dead letter)"
        }
        429 => {
            "`component_busy`: the component is at its `max_concurrent` limit; `mailbox_full`: the agent's mailbox is full (`limit`: its capacity)"
        }
        500 => "Server fault: `registry`, `journal`, `engine`, `tokens`, `store`, `internal`",
        503 => {
            "`overloaded` (the server is at `--max-calls`), `loading` (the component is still compiling), `store_unavailable` (the store cannot be opened or reached)"
        }
        504 => {
            "`reply_timeout`: no reply from the agent in time; the message stays delivered and its turn still runs (`agent_message`)"
        }
        _ => "Error",
    }
}

fn json_content(schema: Schema) -> Value {
    json!({ "application/json": { "schema": schema } })
}

/// The document.
pub fn document() -> Value {
    // Requests are described as they are read, answers as they are written.
    let settings = |contract| {
        SchemaSettings::draft2020_12().with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
            s.contract = contract;
        })
    };
    let mut requests = settings(Contract::Deserialize).into_generator();
    let mut answers = settings(Contract::Serialize).into_generator();
    let error = answers.subschema_for::<ErrorBody>();

    let mut paths = Map::new();
    for route in ROUTES {
        let mut params: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        params.extend(route.query.iter().map(|q| {
            let mut schema = json!({ "type": q.kind });
            if let Some((min, max)) = q.range {
                schema["minimum"] = json!(min);
                schema["maximum"] = json!(max);
            }
            json!({
                "name": q.name,
                "in": "query",
                "required": false,
                "description": q.description,
                "schema": schema,
            })
        }));
        let mut responses = Map::new();
        match route.success {
            Success::Json(status, schema) => {
                responses.insert(
                    status.to_string(),
                    json!({ "description": "Success", "content": json_content(schema(&mut answers)) }),
                );
            }
            Success::Either(first, first_schema, second, second_schema) => {
                for (status, schema) in [(first, first_schema), (second, second_schema)] {
                    responses.insert(
                        status.to_string(),
                        json!({ "description": "Success", "content": json_content(schema(&mut answers)) }),
                    );
                }
            }
            Success::Empty(status) => {
                responses.insert(status.to_string(), json!({ "description": "Done" }));
            }
            Success::Metrics => {
                responses.insert(
                    "200".into(),
                    json!({
                        "description": "The server's metrics in the OpenMetrics text format (see docs/metrics.md)",
                        "content": { "application/openmetrics-text": { "schema": { "type": "string" } } }
                    }),
                );
            }
            Success::EventStream => {
                responses.insert(
                    "200".into(),
                    json!({
                        "description": "A stream of server-sent events (see the summary); an audit stream and the agents' stream end when the server shuts down, a plan run's after its `ended` event",
                        "content": { "text/event-stream": { "schema": { "type": "string" } } }
                    }),
                );
            }
        }
        for status in route.errors {
            let schema = if OPENAI_SHAPED.contains(&(route.path, *status)) {
                openai_error()
            } else {
                error.clone()
            };
            responses.insert(
                status.to_string(),
                json!({
                    "description": error_description(*status),
                    "content": json_content(schema),
                }),
            );
        }
        let method = route.method;
        let mut op = json!({
            "summary": route.summary,
            "operationId": format!("{method}{}", route.path.replace(['/', '{', '}', '.'], "_")),
            "parameters": params,
            "responses": responses,
        });
        // Any one of the scopes: one security requirement each.
        op["security"] = route
            .scopes
            .iter()
            .map(|scope| json!({ "bearer": [scope] }))
            .collect();
        op["x-tessera-scopes"] = json!(route.scopes);
        if let Some((schema, required)) = route.request {
            op["requestBody"] = json!({
                "required": required,
                "content": json_content(schema(&mut requests)),
            });
        }
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        entry[method] = op;
    }
    let mut schemas = answers.take_definitions(true);
    schemas.extend(requests.take_definitions(true));
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Tessera API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Components as typed tools: register, hot-swap, call from JSON, read the journal and audit stream, inspect and edit the key-value buckets components use (wasi:keyvalue), register, run, watch, cancel and resume plans (graphs of component calls), and spawn, message, inspect and watch long-lived agents (durable actors; `/v1/agents`, a child's id with its `/` percent-encoded). The same tools are served over MCP (streamable HTTP) at /mcp, with the `call` scope (plans as `plan__<name>`, every agent as `agent__<id>`, their approvals as `agents__approvals` and `agents__decide`). Every route refuses a Host it does not answer to and an Origin it does not allow (403), and request bodies must be application/json (415). See docs/http-api.md."
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } }
        }
    })
}
