//! The MCP server: every served function of every active component is a
//! tool.
//!
//! - What is served follows the manifest's `[tools]` section
//!   (`tessera_runtime::tools`): `include`/`exclude`, and toolchain
//!   internals (componentize-py's `exports#init`, `wasi:cli/run#run` beside
//!   other exports) hidden by default. A function that is not served is not
//!   listed, and calling it is an unknown tool. The section's title and
//!   description replace the defaults (`<component>: <function>`; the WIT
//!   docs, then `WIT: <signature>`).
//! - Tool names are `<component>__<function>` for functions the world
//!   exports and `<component>__<interface>__<function>` for functions of an
//!   exported interface (`hello__greet`, `hello__types__echo-u8`). They use
//!   only `A-Z a-z 0-9 _ -` and are at most 64 characters, so every MCP host
//!   and LLM API accepts them; a longer name is cut and given a hash suffix,
//!   so it stays stable.
//! - `inputSchema` is the function's argument schema; `outputSchema` is an
//!   object whose `result` property holds the WIT result, and
//!   `structuredContent` matches it. Annotations follow from the grants:
//!   `openWorldHint` when the manifest allows outbound HTTP, `readOnlyHint`
//!   (and not destructive) when it allows neither HTTP nor a writable mount.
//! - A denial, a limit, a trap, bad arguments or a guest `err` is a tool
//!   result with `isError: true` and a message; the session carries on. An
//!   unknown tool is a protocol error (`-32602`), except a tool of a
//!   component still compiling in the background: that is a tool error
//!   saying so and asking to retry once the tool is listed. When the guest ran, the
//!   text goes on with its stderr tail, its last log records and a trap's
//!   backtrace (`GuestDiagnostics`), and `structuredContent` is the HTTP
//!   API's error body (`{"error": {…}}`), or `{"result": {"err": …}}` for a
//!   guest `err`.
//! - The server answers `initialize` and lists tools while components
//!   compile; each joins the list when it is ready.
//! - Loading, swapping or removing a component sends
//!   `notifications/tools/list_changed`: to every session of the
//!   initialize-handshake protocol revisions, and on every
//!   `subscriptions/listen` stream that asked for it (2026-07-28).
//! - Cancelling a call (`notifications/cancelled`, or closing the request's
//!   stream) interrupts the guest at its next epoch tick; the run is
//!   journaled as cancelled.
//! - Every call is journaled like an HTTP call; the result's `_meta` holds
//!   `tessera/run_id`, `tessera/component` and `tessera/version`.
//! - Every registered plan is a tool too, `plan__<name>` (no component may
//!   be named `plan`): its input schema is the plan's inputs, its
//!   description the plan's. `tools/call` runs the plan to its end (a plan
//!   run like one started over HTTP, watchable there), cancelled with the
//!   request, and answers its outputs as `structuredContent` (and as JSON
//!   text), or a tool error naming the step that failed; `_meta` holds
//!   `tessera/plan_run`; with a progress token, each finished step is a
//!   `notifications/progress`. Adding or removing a plan (over HTTP, or
//!   with `tessera plans` beside the server) sends `list_changed`.
//! - Every agent is a tool too, `agent__<id>` (no component may be named
//!   `agent`; an id that is not a valid tool name as it is — one with `.`,
//!   a child's `parent/child`, or too long — gets a hash suffix). Its
//!   input is
//!   `{"message": string | object, "timeout_ms"?: integer}`; `tools/call`
//!   sends the message (an object as its JSON text) and waits for the
//!   reply of its turn, answered as text, and as `structuredContent` when
//!   it is JSON (an object as it is, any other value as `{"reply": …}`);
//!   `_meta` holds `tessera/agent`, `tessera/message`, `tessera/turn` and
//!   `tessera/run_id` (the turn's journal run). A turn that failed for good
//!   (the message is a dead letter), a full mailbox, a stopped agent or no
//!   reply in time is a tool error with the reason. A child `coord/w1` is
//!   `agent__coord-w1-<hash>`, its title naming the id. Spawning or
//!   forking an agent, a child too, sends `list_changed`.
//! - While the server has agents, two more tools decide their tool
//!   calls that wait for a person (`approval` in an agent's manifest; no
//!   component may be named `agents`): `agents__approvals` (`{"agent"?:
//!   string}`; read-only) answers the requests still waiting — of that
//!   agent and its descendants, or of every agent — each `agent`,
//!   `request`, `tool`, `arguments`, `turn`, `asked`, as
//!   `structuredContent` `{"approvals": […]}` and as JSON text;
//!   `agents__decide` (`{"agent": string, "request": string, "approved":
//!   boolean, "reason"?: string}`) decides one, recording the caller's
//!   token id (`mcp` without one) as who decided, and answers `{"approval":
//!   …}` with its decision; the waiting turn then goes on. An unknown agent
//!   or request, or one decided already, is a tool error with the reason.
//!   Both need what every MCP tool needs: over `/mcp`, the `call` scope.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, MetaObject, PaginatedRequestParams, ServerCapabilities, ServerConfig,
    SubscriptionFilter, Tool, ToolAnnotations,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tessera_runtime::FunctionInfo;
use tokio_util::sync::CancellationToken;

use crate::call::Verdict;
use crate::error::{ApiError, ErrorBody, ErrorCode, ErrorDetail, LimitRef};
use crate::{Called, Server};

/// Longest tool name: what the most restrictive LLM APIs accept.
pub const MAX_TOOL_NAME: usize = 64;

/// How long `tools/list` waits for the agents' store before listing the
/// other tools without the agents'.
const AGENT_LIST_WAIT: Duration = Duration::from_secs(5);

/// The MCP tool name of `function` of component `component`.
pub fn tool_name(component: &str, function: &FunctionInfo) -> String {
    name_for(component, function.interface.as_deref(), &function.name)
}

fn name_for(component: &str, interface: Option<&str>, function: &str) -> String {
    let mut name = match interface {
        Some(iface) => format!(
            "{component}__{}__{function}",
            tessera_runtime::schema::interface_short(iface)
        ),
        None => format!("{component}__{function}"),
    };
    name = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.len() > MAX_TOOL_NAME {
        let hash = hex::encode(&Sha256::digest(name.as_bytes())[..4]);
        name.truncate(MAX_TOOL_NAME - hash.len() - 1);
        name.push('-');
        name.push_str(&hash);
    }
    name
}

/// One tool: the MCP definition and what it calls.
#[derive(Debug, Clone)]
pub struct ToolEntry {
    /// The definition sent in `tools/list`.
    pub tool: Tool,
    /// The component name.
    pub component: String,
    /// The function's qualified name.
    pub function: String,
}

fn object(v: Value) -> Arc<Map<String, Value>> {
    Arc::new(match v {
        Value::Object(m) => m,
        _ => Map::new(),
    })
}

/// Hints that follow from the effects every capability declares for its
/// grant, so they are true by construction: a component without network
/// access is not open-world; one whose capabilities can neither write nor
/// cause an external effect cannot change anything outside its sandbox, so
/// it is read-only and not destructive. A capability added later declares
/// its effects too, so it cannot be advertised as read-only by omission.
fn annotations(grants: &tessera_runtime::Grants) -> ToolAnnotations {
    let effects = grants.effects();
    let a = ToolAnnotations::new().open_world(effects.network);
    if effects.read_only() {
        a.read_only(true).destructive(false)
    } else {
        a.read_only(false)
    }
}

/// The tools of every active component, sorted by name: each function the
/// manifest's `[tools]` section serves (see `tessera_runtime::tools`),
/// with its title and description when the section gives them.
pub fn tools(server: &Server) -> Vec<ToolEntry> {
    let mut out = Vec::new();
    for name in server.active_names() {
        let Some(active) = server.active(&name) else {
            continue;
        };
        let hints = annotations(active.loaded.grants());
        for (f, exposure) in active.loaded.exposures() {
            if !exposure.served() {
                continue;
            }
            let output = json!({
                "type": "object",
                "properties": { "result": f.result_schema },
                "required": ["result"],
            });
            let title = exposure
                .title
                .clone()
                .unwrap_or_else(|| format!("{name}: {}", f.short_name()));
            let description = exposure
                .description
                .clone()
                .unwrap_or_else(|| f.tool_description());
            let mut tool =
                Tool::new_with_raw(tool_name(&name, f), None, object(f.params_schema.clone()))
                    .with_raw_output_schema(object(output))
                    .with_title(title);
            tool.description = Some(description.into());
            tool.annotations = Some(hints.clone());
            out.push(ToolEntry {
                tool,
                component: name.clone(),
                function: f.qualified_name(),
            });
        }
    }
    out.sort_by(|a, b| a.tool.name.cmp(&b.tool.name));
    out
}

/// The MCP tool name of registered plan `plan`: `plan__<plan>` (cut to
/// [`MAX_TOOL_NAME`] with a hash suffix, like every tool name). No
/// component can be named `plan` ([`crate::registry::RESERVED_NAMES`]), so
/// plan tools and component tools never share a name.
pub fn plan_tool_name(plan: &str) -> String {
    name_for("plan", None, plan)
}

/// One plan tool: the MCP definition and the plan it runs.
#[derive(Debug, Clone)]
pub struct PlanToolEntry {
    /// The definition sent in `tools/list`.
    pub tool: Tool,
    /// The registered plan.
    pub plan: String,
}

/// The tools of the registered plans, sorted by name: input schema
/// [`Plan::input_schema`](tessera_orchestrator::plan::Plan::input_schema),
/// output schema an object with a property per output, description the
/// plan's. A stored plan that no longer reads is left out (and logged).
pub fn plan_tools(server: &Server) -> Vec<PlanToolEntry> {
    let names = match server.plans.names() {
        Ok(n) => n,
        Err(e) => {
            tracing::error!("listing plans: {e}");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for name in names {
        let plan = match server.plans.get(&name).and_then(|p| p.plan()) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("plan `{name}` is not served: {e}");
                continue;
            }
        };
        let outputs: Map<String, Value> = plan
            .outputs
            .iter()
            .map(|(o, _)| (o.clone(), json!({})))
            .collect();
        let required: Vec<&String> = outputs.keys().collect();
        let output = json!({ "type": "object", "properties": outputs, "required": required });
        let steps: Vec<String> = plan.topological().iter().map(|s| s.name.clone()).collect();
        let description = plan
            .description
            .clone()
            .unwrap_or_else(|| format!("Runs plan `{name}`: steps {}.", steps.join(", ")));
        let mut tool = Tool::new_with_raw(plan_tool_name(&name), None, object(plan.input_schema()))
            .with_raw_output_schema(object(output))
            .with_title(format!("plan: {name}"));
        tool.description = Some(description.into());
        out.push(PlanToolEntry { tool, plan: name });
    }
    out.sort_by(|a, b| a.tool.name.cmp(&b.tool.name));
    out
}

/// The registered plan a tool name runs, if any.
pub fn resolve_plan(server: &Server, tool: &str) -> Option<String> {
    if !tool.starts_with("plan__") {
        return None;
    }
    server
        .plans
        .names()
        .ok()?
        .into_iter()
        .find(|p| plan_tool_name(p) == tool)
}

/// The MCP tool name of agent `id`: `agent__<id>`, or, when that is not a
/// valid tool name (an id with `.` or `/`, or over 57 characters), the
/// valid characters of it cut to [`MAX_TOOL_NAME`] with a hash of the id as
/// suffix, so two ids never share a name. No component can be named
/// `agent` ([`crate::registry::RESERVED_NAMES`]).
pub fn agent_tool_name(id: &str) -> String {
    let plain = format!("agent__{id}");
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if plain.len() <= MAX_TOOL_NAME && plain.chars().all(valid) {
        return plain;
    }
    let hash = hex::encode(&Sha256::digest(id.as_bytes())[..4]);
    let mut name: String = plain
        .chars()
        .map(|c| if valid(c) { c } else { '-' })
        .collect();
    name.truncate(MAX_TOOL_NAME - hash.len() - 1);
    name.push('-');
    name.push_str(&hash);
    name
}

/// One agent tool: the MCP definition and the agent it talks to.
#[derive(Debug, Clone)]
pub struct AgentToolEntry {
    /// The definition sent in `tools/list`.
    pub tool: Tool,
    /// The agent's id.
    pub agent: String,
}

/// The tools of the agents, children included, sorted by name (none when
/// the agent system cannot be opened: the store is down; logged).
pub async fn agent_tools(server: &Arc<Server>) -> Vec<AgentToolEntry> {
    let list = match server.agents().await {
        Ok(sys) => sys.list().await.map_err(crate::agents::agent_error),
        Err(e) => Err(e),
    };
    let list = match list {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("agent tools are not listed: {}", e.message());
            return Vec::new();
        }
    };
    let schema = json!({
        "type": "object",
        "properties": {
            "message": {
                "type": ["string", "object"],
                "description": "The message: text, or a JSON object (sent as its JSON text).",
            },
            "timeout_ms": {
                "type": "integer",
                "minimum": 1,
                "maximum": crate::api::MAX_REPLY_TIMEOUT_MS,
                "description": "How long to wait for the reply, in milliseconds (default 60000).",
            },
        },
        "required": ["message"],
    });
    let mut out: Vec<AgentToolEntry> = list
        .iter()
        .map(|i| &i.record)
        .map(|r| {
            let mut tool = Tool::new_with_raw(agent_tool_name(&r.id), None, object(schema.clone()))
                .with_title(format!("agent: {}", r.id));
            tool.description = Some(
                format!(
                    "Sends a message to agent `{}` (component `{}`) and answers the reply of the turn that handles it. The agent keeps its state from one message to the next.",
                    r.id, r.component.component
                )
                .into(),
            );
            tool.annotations = Some(ToolAnnotations::new().read_only(false).open_world(true));
            AgentToolEntry {
                tool,
                agent: r.id.clone(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.tool.name.cmp(&b.tool.name));
    out
}

/// The agent a tool name talks to, if any.
pub async fn resolve_agent(server: &Arc<Server>, tool: &str) -> Option<String> {
    let id = tool.strip_prefix("agent__")?;
    // The common case, an id that is its own tool name, without a listing.
    if agent_tool_name(id) == tool
        && let Ok(sys) = server.agents().await
        && let Ok(info) = sys.get(id).await
    {
        return Some(info.record.id);
    }
    agent_tools(server)
        .await
        .into_iter()
        .find(|t| t.tool.name == tool)
        .map(|t| t.agent)
}

/// The tool that lists the approval requests still waiting. No component
/// can be named `agents` ([`crate::registry::RESERVED_NAMES`]).
pub const APPROVALS_TOOL: &str = "agents__approvals";

/// The tool that approves or rejects an approval request.
pub const DECIDE_TOOL: &str = "agents__decide";

/// The JSON Schema of an approval request as the approval tools answer it
/// ([`approval_value`]); `decided`: with its decision.
fn approval_schema(decided: bool) -> Value {
    let mut schema = json!({
        "type": "object",
        "properties": {
            "agent": {
                "type": "string",
                "description": "The agent whose turn waits (`parent/child` for a child).",
            },
            "request": {
                "type": "string",
                "description": "The request's id (what `agents__decide` takes).",
            },
            "tool": {
                "type": "string",
                "description": "The tool the agent called (`<grant>__<function>`).",
            },
            "arguments": {
                "description": "Its arguments: a JSON object (the JSON text as a string if it does not parse).",
            },
            "turn": { "type": "integer", "minimum": 0, "description": "The turn that asked." },
            "asked": { "type": "string", "description": "When it was asked (RFC 3339)." },
            "decision": {
                "type": "object",
                "properties": {
                    "approved": { "type": "boolean" },
                    "by": { "type": "string", "description": "Who decided: a token id, `mcp`, `http`, `cli`, …" },
                    "reason": { "type": "string" },
                    "at": { "type": "string", "description": "When (RFC 3339)." },
                },
                "required": ["approved", "at"],
            },
        },
        "required": ["agent", "request", "tool", "arguments", "turn", "asked"],
    });
    if decided {
        schema["required"] = json!([
            "agent",
            "request",
            "tool",
            "arguments",
            "turn",
            "asked",
            "decision"
        ]);
    }
    schema
}

/// An approval request as the approval tools answer it: the HTTP API's
/// `ApprovalInfo`, with the arguments as JSON rather than JSON text.
fn approval_value(a: &tessera_orchestrator::agent::Approval) -> Value {
    let mut v = json!({
        "agent": a.agent,
        "request": a.request,
        "tool": a.tool,
        "arguments": serde_json::from_str::<Value>(&a.arguments)
            .unwrap_or_else(|_| Value::String(a.arguments.clone())),
        "turn": a.turn,
        "asked": a.asked,
    });
    if let Some(d) = &a.decision {
        let mut decision = json!({ "approved": d.approved, "at": d.at });
        if let Some(by) = &d.by {
            decision["by"] = json!(by);
        }
        if let Some(reason) = &d.reason {
            decision["reason"] = json!(reason);
        }
        v["decision"] = decision;
    }
    v
}

/// The approval tools, listed while the server has agents:
/// [`APPROVALS_TOOL`] (read-only) and [`DECIDE_TOOL`].
pub fn approval_tools() -> Vec<Tool> {
    let approvals_input = json!({
        "type": "object",
        "properties": {
            "agent": {
                "type": "string",
                "description": "An agent's id (`parent/child` for a child): the requests of that agent and its descendants. Absent: those of every agent.",
            },
        },
    });
    let approvals_output = json!({
        "type": "object",
        "properties": {
            "approvals": { "type": "array", "items": approval_schema(false) },
        },
        "required": ["approvals"],
    });
    let mut approvals = Tool::new_with_raw(APPROVALS_TOOL, None, object(approvals_input))
        .with_raw_output_schema(object(approvals_output))
        .with_title("agents: approvals waiting");
    approvals.description = Some(
        "Lists the approval requests still waiting: tool calls of agents, listed under `approval` in their manifests, that stopped their turns until a person approves or rejects them (with `agents__decide`). Each names the agent, the request, the tool, its arguments, the turn and when it was asked."
            .into(),
    );
    approvals.annotations = Some(
        ToolAnnotations::new()
            .read_only(true)
            .destructive(false)
            .open_world(false),
    );
    let decide_input = json!({
        "type": "object",
        "properties": {
            "agent": {
                "type": "string",
                "description": "The agent whose turn waits (`parent/child` for a child).",
            },
            "request": {
                "type": "string",
                "description": "The approval request's id (from `agents__approvals`).",
            },
            "approved": {
                "type": "boolean",
                "description": "true: the tool call runs and the turn goes on; false: the tool answers `rejected` with the reason and the agent carries on.",
            },
            "reason": { "type": "string", "description": "Why (the agent sees it when rejected)." },
        },
        "required": ["agent", "request", "approved"],
    });
    let decide_output = json!({
        "type": "object",
        "properties": { "approval": approval_schema(true) },
        "required": ["approval"],
    });
    let mut decide = Tool::new_with_raw(DECIDE_TOOL, None, object(decide_input))
        .with_raw_output_schema(object(decide_output))
        .with_title("agents: decide an approval");
    decide.description = Some(
        "Approves or rejects an approval request of an agent (see `agents__approvals`); the turn that waits for it then goes on. A request is decided once. Answers the request with its decision."
            .into(),
    );
    decide.annotations = Some(
        ToolAnnotations::new()
            .read_only(false)
            .idempotent(false)
            .open_world(false),
    );
    vec![approvals, decide]
}

/// Who makes an MCP request, for the journal. Over streamable HTTP the
/// request's parts (with the token the middleware checked) come along;
/// over stdio there are none.
fn mcp_caller(context: &RequestContext<RoleServer>) -> tessera_journal::Caller {
    let parts = context.extensions.get::<http::request::Parts>();
    tessera_journal::Caller {
        via: if parts.is_some() {
            "mcp-http"
        } else {
            "mcp-stdio"
        }
        .into(),
        token: parts
            .and_then(|p| p.extensions.get::<crate::auth::TokenId>())
            .map(|t| t.0.clone()),
    }
}

/// The prefix of the code sandboxes' tools: `sandbox__python`,
/// `sandbox__javascript`. No component can be named `sandbox`.
pub const SANDBOX_PREFIX: &str = "sandbox__";

/// The code sandboxes' tools, one per language whose component is there,
/// when the server offers sandboxes.
pub fn sandbox_tools(server: &Server) -> Vec<Tool> {
    let Some(sandboxes) = &server.sandboxes else {
        return Vec::new();
    };
    let mut tools: Vec<Tool> = sandboxes
        .available()
        .into_iter()
        .map(|language| {
            let (lang, value_note) = match language {
                tessera_sandbox::Language::Python => (
                    "Python (CPython 3.14, the standard library's common modules pre-imported)",
                    "`repr`",
                ),
                tessera_sandbox::Language::JavaScript => (
                    "JavaScript (SpiderMonkey; `console.log` is captured)",
                    "`String`, or JSON for plain objects",
                ),
            };
            let input = json!({
                "type": "object",
                "properties": {
                    "code": { "type": "string", "description": "The code to run." },
                    "session": {
                        "type": "string",
                        "pattern": "^[A-Za-z0-9._-]{1,64}$",
                        "description": "Run in this named session: the interpreter keeps the names, imports and objects earlier runs in the session left. Created on first use. Without it, a fresh interpreter runs the code and nothing is kept.",
                    },
                },
                "required": ["code"],
            });
            let output = json!({
                "type": "object",
                "properties": {
                    "stdout": { "type": "string" },
                    "stderr": { "type": "string" },
                    "value": { "description": "The last expression's value as JSON, when JSON can represent it." },
                    "text": { "type": ["string", "null"], "description": format!("The last expression's value as the language shows it ({value_note}).") },
                    "ok": { "type": "boolean" },
                    "error": { "description": "Why it stopped: `{kind: \"raised\", type, message, line, column, traceback}` for an exception, or `{kind: \"limit\" | \"trap\" | \"cancelled\", …}`." },
                },
                "required": ["stdout", "stderr", "ok"],
            });
            let name = format!("{SANDBOX_PREFIX}{}", language.name());
            let mut tool = Tool::new_with_raw(name, None, object(input))
                .with_raw_output_schema(object(output))
                .with_title(format!("run {}", language.name()));
            tool.description = Some(std::borrow::Cow::Owned(format!(
                "Runs {lang} code in a sandboxed interpreter: no files, network or environment; fuel, time and memory limits. Answers what it printed, and the value of its last expression, or the exception with its line, column and traceback. A fresh interpreter per call, unless `session` names one whose state earlier calls left (see `{SANDBOX_PREFIX}fork`)."
            )));
            tool.annotations = Some(
                ToolAnnotations::new()
                    .read_only(true)
                    .destructive(false)
                    .idempotent(false)
                    .open_world(false),
            );
            tool
        })
        .collect();
    if !tools.is_empty() {
        tools.push(fork_tool());
    }
    tools
}

/// `sandbox__fork`: a new session from a session's state.
fn fork_tool() -> Tool {
    let input = json!({
        "type": "object",
        "properties": {
            "session": { "type": "string", "description": "The session to fork." },
            "as": { "type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$", "description": "The new session's name." },
            "at": { "type": "integer", "minimum": 0, "description": "Start from the state after this many of its runs (default: all)." },
        },
        "required": ["session", "as"],
    });
    let output = json!({
        "type": "object",
        "properties": {
            "name": { "type": "string" },
            "language": { "type": "string" },
            "runs": { "type": "integer" },
            "forked_from": { "type": "object" },
        },
        "required": ["name", "language", "runs"],
    });
    let mut tool = Tool::new_with_raw(format!("{SANDBOX_PREFIX}fork"), None, object(input))
        .with_raw_output_schema(object(output))
        .with_title("fork a sandbox session");
    tool.description = Some(std::borrow::Cow::Borrowed(
        "Starts a new sandbox session from the exact interpreter state of another (after all its runs, or the first `at`): names, objects, closures and generators included. The two go on independently; use the new name as the `session` of the sandbox tools.",
    ));
    tool.annotations = Some(
        ToolAnnotations::new()
            .read_only(false)
            .destructive(false)
            .idempotent(false)
            .open_world(false),
    );
    tool
}

/// The tools of the agent system, sorted by name: every agent's and, once
/// there is one, the approval tools (spawning or forking an agent sends
/// `list_changed`). A
/// server without agents lists neither, nor when the agent system cannot
/// be opened (the server has no store, or it is down; logged).
pub async fn agent_system_tools(server: &Arc<Server>) -> Vec<Tool> {
    let agents = agent_tools(server).await;
    if agents.is_empty() {
        return Vec::new();
    }
    let mut all = approval_tools();
    all.extend(agents.into_iter().map(|t| t.tool));
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all
}

/// Every tool: the components' and the plans', sorted by name (the
/// agents' are added by `tools/list`: see [`agent_tools`]).
pub fn all_tools(server: &Server) -> Vec<Tool> {
    let mut all: Vec<Tool> = plan_tools(server).into_iter().map(|t| t.tool).collect();
    all.extend(tools(server).into_iter().map(|t| t.tool));
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all
}

/// The component and function a tool name calls, if it names one that is
/// served.
pub fn resolve(server: &Server, tool: &str) -> Option<(String, String)> {
    let find = |component: &str| {
        let active = server.active(component)?;
        active
            .loaded
            .exposures()
            .filter(|(_, x)| x.served())
            .find(|(f, _)| tool_name(component, f) == tool)
            .map(|(f, _)| (component.to_string(), f.qualified_name()))
    };
    // The component name is the part before the first `__`, unless the
    // tool name was cut to length: then look through every component.
    tool.split("__")
        .next()
        .and_then(find)
        .or_else(|| server.active_names().iter().find_map(|c| find(c)))
}

/// The MCP handler. Cheap to clone: one per session.
#[derive(Clone)]
pub struct McpService {
    server: Arc<Server>,
}

impl McpService {
    /// A handler serving `server`'s components.
    pub fn new(server: Arc<Server>) -> Self {
        Self { server }
    }
}

fn text_error(message: impl Into<String>) -> CallToolResult {
    let mut r = CallToolResult::error(vec![ContentBlock::text(message.into())]);
    r.structured_content = None;
    r
}

/// A tool error for a call the guest ran: the message, then what the
/// guest left behind (stderr tail, last logs, backtrace) in the text, and
/// the same as `structuredContent.error` (the HTTP API's error object).
fn guest_error(message: String, detail: &ErrorDetail) -> CallToolResult {
    let text = match &detail.guest {
        Some(g) if !g.is_empty() => format!("{message}\n\n{}", g.render()),
        _ => message,
    };
    let mut r = text_error(text);
    r.structured_content = serde_json::to_value(ErrorBody {
        error: detail.clone(),
    })
    .ok();
    r
}

fn meta(called: &Called) -> MetaObject {
    let mut m = Map::new();
    m.insert("tessera/run_id".into(), json!(called.run_id));
    m.insert(
        "tessera/component".into(),
        json!(called.active.record.digest),
    );
    m.insert("tessera/version".into(), json!(called.active.version));
    MetaObject(m)
}

/// The tool result for a finished call (classified in `call.rs`).
fn tool_result(tool: &str, called: &mut Called) -> Result<CallToolResult, ErrorData> {
    let mut result = match called.verdict() {
        Verdict::Returned {
            value, ok: true, ..
        } => {
            let text = match &value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let mut r = CallToolResult::structured(json!({ "result": value }));
            r.content = vec![ContentBlock::text(text)];
            r
        }
        Verdict::Returned {
            value, denial: d, ..
        } => {
            let message = match d {
                Some(d) => format!(
                    "`{tool}` returned an error after {}: {}",
                    denial(&d.capability, &d.target, d.reason.as_deref()),
                    error_text(&value)
                ),
                None => format!("`{tool}` returned an error: {}", error_text(&value)),
            };
            let guest = called.diagnostics();
            let mut r = text_error(if guest.is_empty() {
                message
            } else {
                format!("{message}\n\n{}", guest.render())
            });
            // The guest's `err` case fits the output schema as it is.
            r.structured_content = Some(json!({ "result": value }));
            r
        }
        Verdict::Failed(e) => guest_error(failure_text(tool, &e)?, e.detail()),
    };
    result.meta = Some(meta(called));
    Ok(result)
}

/// The message of a tool error, from the classification shared with the
/// HTTP API; a server fault is a protocol error instead.
fn failure_text(tool: &str, e: &ApiError) -> Result<String, ErrorData> {
    let d = e.detail();
    let message = &d.message;
    Ok(match e.code() {
        ErrorCode::Denied => format!(
            "`{tool}` failed after {}: {message}",
            denial(
                d.grant.as_deref().unwrap_or("-"),
                d.target.as_deref().unwrap_or("-"),
                d.reason.as_deref()
            )
        ),
        ErrorCode::Limit => {
            let limit = match &d.limit {
                Some(LimitRef::Name(n)) => n.clone(),
                Some(LimitRef::Value(v)) => v.to_string(),
                None => "a".into(),
            };
            format!("`{tool}` stopped: {limit} limit: {message}")
        }
        ErrorCode::Cancelled => format!("`{tool}` was cancelled"),
        ErrorCode::Trap => format!("`{tool}` failed: {message}"),
        ErrorCode::Overloaded => format!("server overloaded: {message}"),
        ErrorCode::Loading => format!("`{tool}`: {message}"),
        ErrorCode::NoSuchComponent => {
            format!("`{tool}`: {message}: it was removed; list the tools again")
        }
        code if code.status().is_server_error() => {
            return Err(ErrorData::internal_error(message.clone(), None));
        }
        _ => format!("`{tool}`: {message}"),
    })
}

/// A denied request, with the reason the grants gave.
fn denial(capability: &str, target: &str, reason: Option<&str>) -> String {
    format!(
        "a denied {capability} request to {target} ({})",
        reason.unwrap_or("not granted")
    )
}

/// A guest `err` payload as text: a string as is, anything else as JSON.
fn error_text(v: &Value) -> String {
    let inner = v.get("err").unwrap_or(v);
    match inner {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The id of the token the request presented (over streamable HTTP).
fn token_id(context: &RequestContext<RoleServer>) -> Option<String> {
    context
        .extensions
        .get::<http::request::Parts>()
        .and_then(|p| p.extensions.get::<crate::auth::TokenId>())
        .map(|t| t.0.clone())
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl McpService {
    /// Sends `notifications/progress` for a plan run a tool call runs: one
    /// per finished step (`progress` the steps finished, `total` the
    /// plan's steps, `message` the step and how it ended).
    async fn plan_progress(
        &self,
        id: &str,
        token: rmcp::model::ProgressToken,
        context: &RequestContext<RoleServer>,
    ) -> Option<AbortOnDrop> {
        use futures_util::StreamExt as _;
        use tessera_orchestrator::run::PlanEvent;
        let mut events = self.server.plan_run_events(id).await.ok()?;
        let peer = context.peer.clone();
        Some(AbortOnDrop(tokio::spawn(async move {
            let (mut done, mut total) = (0u64, None);
            while let Some(event) = events.next().await {
                match event {
                    PlanEvent::Started {
                        steps, finished, ..
                    } => {
                        total = Some(steps.len() as f64);
                        done = finished.len() as u64;
                    }
                    PlanEvent::Step { step, record } => {
                        done += 1;
                        let state = serde_json::to_value(record.state)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default();
                        let mut p =
                            rmcp::model::ProgressNotificationParam::new(token.clone(), done as f64)
                                .with_message(format!("step `{step}`: {state}"));
                        p.total = total;
                        if peer.notify_progress(p).await.is_err() {
                            return;
                        }
                    }
                    _ => {}
                }
            }
        })))
    }

    /// Runs a plan tool to its end: a plan run like one started over HTTP
    /// (watchable and cancellable there too), cancelled when the request
    /// is, with a progress notification per finished step when the request
    /// has a progress token; its outputs as `structuredContent`, or a tool
    /// error naming the step that failed.
    async fn call_plan(
        &self,
        tool: &str,
        plan: &str,
        args: Value,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let mut handle = match self
            .server
            .start_plan(plan, &args, token_id(&context))
            .await
        {
            Ok(h) => h,
            Err(e) => return Ok(text_error(failure_text(tool, &e)?).into()),
        };
        let id = handle.id.clone();
        // A request that goes away (its future dropped) cancels the run.
        let _cancel_on_drop = handle.cancel_on_drop();
        let progress = match context.meta.get_progress_token() {
            Some(token) => self.plan_progress(&id, token, &context).await,
            None => None,
        };
        let stop = handle.canceller();
        let ended = {
            let wait = handle.ended();
            tokio::pin!(wait);
            tokio::select! {
                r = &mut wait => r,
                () = context.ct.cancelled() => {
                    stop.cancel();
                    wait.await
                }
            }
        };
        if let Some(mut p) = progress {
            // The last step's notification goes before the answer.
            if tokio::time::timeout(Duration::from_secs(5), &mut p.0)
                .await
                .is_err()
            {
                p.0.abort();
            }
        }
        let rec = match ended {
            Ok(rec) => rec,
            Err(e) => return Ok(text_error(failure_text(tool, &e)?).into()),
        };
        use tessera_orchestrator::progress::RunStatus;
        let mut result = match rec.status {
            RunStatus::Succeeded => {
                let outputs = rec.outputs.clone().unwrap_or_else(|| json!({}));
                let text = serde_json::to_string_pretty(&outputs).unwrap_or_default();
                let mut r = CallToolResult::structured(outputs);
                r.content = vec![ContentBlock::text(text)];
                r
            }
            RunStatus::Cancelled => text_error(format!(
                "`{tool}` was cancelled (plan run {id}; POST /v1/plan-runs/{id}/resume goes on with it)"
            )),
            RunStatus::Failed | RunStatus::Running => text_error(format!(
                "`{tool}` failed: {} (plan run {id}; POST /v1/plan-runs/{id}/resume tries the failed steps again)",
                rec.error.as_deref().unwrap_or("unknown error")
            )),
        };
        let mut m = Map::new();
        m.insert("tessera/plan_run".into(), json!(id));
        m.insert("tessera/plan".into(), json!(plan));
        result.meta = Some(MetaObject(m));
        Ok(result.into())
    }
}

impl McpService {
    /// Sends a message to an agent and waits for its turn's reply.
    async fn call_agent(
        &self,
        tool: &str,
        agent: &str,
        args: Map<String, Value>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let message = match args.get("message") {
            Some(Value::String(s)) => s.clone(),
            Some(v @ Value::Object(_)) => v.to_string(),
            _ => {
                return Ok(text_error(format!(
                    "`{tool}`: `message` is required: a string, or an object (sent as its JSON text)"
                ))
                .into());
            }
        };
        let timeout = match args.get("timeout_ms") {
            None | Some(Value::Null) => crate::agent_routes::reply_timeout(None),
            Some(v) => v
                .as_u64()
                .ok_or_else(|| "timeout_ms: a whole number of milliseconds".to_string())
                .and_then(|ms| crate::agent_routes::reply_timeout(Some(ms))),
        };
        let timeout = match timeout {
            Ok(t) => t,
            Err(m) => return Ok(text_error(format!("`{tool}`: {m}")).into()),
        };
        let sent = tokio::select! {
            r = self.server.send_to_agent(agent, &message, None, Some(timeout)) => r,
            () = context.ct.cancelled() => {
                return Ok(text_error(format!(
                    "`{tool}` was cancelled (a message already delivered stays in the mailbox)"
                ))
                .into());
            }
        };
        let mut m = Map::new();
        m.insert("tessera/agent".into(), json!(agent));
        let mut result = match sent {
            Ok(crate::agents::Sent {
                message,
                reply: Some(reply),
            }) => {
                m.insert("tessera/message".into(), json!(message));
                m.insert("tessera/turn".into(), json!(reply.turn));
                m.insert("tessera/run_id".into(), json!(reply.run));
                let mut r = CallToolResult::success(vec![ContentBlock::text(
                    reply.text.clone().unwrap_or_default(),
                )]);
                r.structured_content = reply
                    .text
                    .as_deref()
                    .and_then(|t| serde_json::from_str::<Value>(t).ok())
                    .map(|v| match v {
                        Value::Object(_) => v,
                        other => json!({ "reply": other }),
                    });
                r
            }
            Ok(crate::agents::Sent { message, .. }) => {
                m.insert("tessera/message".into(), json!(message));
                text_error(format!("`{tool}`: no reply"))
            }
            // Gone since it was listed.
            Err(e) if e.code() == ErrorCode::NoSuchAgent => {
                return Err(ErrorData::invalid_params(
                    format!("unknown tool `{tool}`: {}", e.message()),
                    Some(json!({ "tool": tool })),
                ));
            }
            Err(e) => {
                if let Some(message) = &e.detail().agent_message {
                    m.insert("tessera/message".into(), json!(message));
                }
                text_error(failure_text(tool, &e)?)
            }
        };
        result.meta = Some(MetaObject(m));
        Ok(result.into())
    }
}

/// A tool result whose structured content is `value`, and whose text is
/// the same as JSON.
fn json_result(value: Value) -> CallToolResult {
    let text = serde_json::to_string_pretty(&value).unwrap_or_default();
    let mut r = CallToolResult::structured(value);
    r.content = vec![ContentBlock::text(text)];
    r
}

/// A string argument: `Ok(None)` when absent or null, a message when it
/// is something else.
fn string_arg<'a>(args: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("`{key}` must be a string")),
    }
}

impl McpService {
    /// `agents__approvals`: the approval requests still waiting, of one
    /// agent and its descendants or of every agent, by agent and turn.
    /// A code sandbox's tool: the code run in a fresh instance, journaled
    /// with the caller; an exception or a limit is a tool error whose text
    /// is the traceback or the limit, with the whole execution as
    /// structured content.
    async fn call_sandbox(
        &self,
        tool: &str,
        language: &str,
        args: Map<String, Value>,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let unknown = || {
            ErrorData::invalid_params(
                format!("unknown tool `{tool}`"),
                Some(json!({ "tool": tool })),
            )
        };
        let Some(sandboxes) = &self.server.sandboxes else {
            return Err(unknown());
        };
        if language == "fork" {
            return Ok(self.call_fork(tool, &args, context));
        }
        let Ok(language) = language.parse::<tessera_sandbox::Language>() else {
            return Err(unknown());
        };
        if language.name() != tool.trim_start_matches(SANDBOX_PREFIX) {
            return Err(unknown());
        }
        let code = match args.get("code") {
            Some(Value::String(c)) => c.clone(),
            _ => {
                return Ok(text_error(format!(
                    "`{tool}`: `code` must be a string of {language} code"
                ))
                .into());
            }
        };
        let session = match string_arg(&args, "session") {
            Ok(s) => s.map(str::to_string),
            Err(m) => return Ok(text_error(format!("`{tool}`: {m} (a session's name)")).into()),
        };
        let caller = mcp_caller(context);
        let options = tessera_runtime::CallOptions {
            cancel: Some(self.server.shutdown.child_token()),
            ..tessera_runtime::CallOptions::default()
        };
        let ran = match (&session, &self.server.sessions) {
            (Some(name), Some(pool)) => {
                pool.exec(name, language, &code, options, Some(caller))
                    .await
            }
            _ => {
                sandboxes
                    .exec_by(
                        language,
                        &code,
                        options,
                        Some(&self.server.journal),
                        Some(caller),
                    )
                    .await
            }
        };
        let execution = match ran {
            Ok(e) => e,
            Err(e) => return Ok(text_error(format!("`{tool}`: {e}")).into()),
        };
        let value = execution.to_json();
        if execution.ok {
            return Ok(json_result(value).into());
        }
        let mut text = execution.stderr.clone();
        match &execution.error {
            Some(tessera_sandbox::ExecError::Raised { traceback, .. }) if !traceback.is_empty() => {
                text.push_str(traceback)
            }
            Some(e) => text.push_str(&format!("{e}\n")),
            None => {}
        }
        let mut r = CallToolResult::error(vec![ContentBlock::text(text)]);
        r.structured_content = Some(value);
        Ok(r.into())
    }

    /// `sandbox__fork`: a new session record sharing a prefix of another's
    /// runs (the caller must own the session forked, if it has an owner).
    fn call_fork(
        &self,
        tool: &str,
        args: &Map<String, Value>,
        context: &RequestContext<RoleServer>,
    ) -> CallToolResponse {
        let (from, to) = match (string_arg(args, "session"), string_arg(args, "as")) {
            (Ok(Some(f)), Ok(Some(t))) => (f, t),
            _ => {
                return text_error(format!(
                    "`{tool}`: `session` and `as` must be session names"
                ))
                .into();
            }
        };
        let at = match args.get("at") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) => Some(n),
                None => {
                    return text_error(format!(
                        "`{tool}`: `at` must be a number of runs (0 or more)"
                    ))
                    .into();
                }
            },
        };
        let owner = mcp_caller(context).token;
        match self
            .server
            .journal
            .fork_session(from, to, at, owner.as_deref())
        {
            Ok(r) => json_result(json!({
                "name": r.name,
                "language": r.kind,
                "runs": r.history.len(),
                "forked_from": r.forked_from,
            }))
            .into(),
            Err(e) => text_error(format!("`{tool}`: {e}")).into(),
        }
    }

    async fn call_approvals(
        &self,
        tool: &str,
        args: Map<String, Value>,
    ) -> Result<CallToolResponse, ErrorData> {
        use crate::agents::{agent_error, within};
        let root = match string_arg(&args, "agent") {
            Ok(r) => r,
            Err(m) => return Ok(text_error(format!("`{tool}`: {m} (an agent's id)")).into()),
        };
        let sys = match self.server.agents().await {
            Ok(sys) => sys,
            Err(e) => return Ok(text_error(failure_text(tool, &e)?).into()),
        };
        if let Some(root) = root
            && let Err(e) = sys.get(root).await
        {
            return Ok(text_error(failure_text(tool, &agent_error(e))?).into());
        }
        let agents = match sys.list().await {
            Ok(l) => l,
            Err(e) => return Ok(text_error(failure_text(tool, &agent_error(e))?).into()),
        };
        let mut waiting = Vec::new();
        for info in agents {
            let id = &info.record.id;
            if root.is_some_and(|root| !within(id, root)) {
                continue;
            }
            match sys.approvals(id).await {
                Ok(list) => waiting.extend(list.into_iter().filter(|a| a.decision.is_none())),
                // Gone since it was listed.
                Err(tessera_orchestrator::agent::AgentError::NotFound(_)) => {}
                Err(e) => return Ok(text_error(failure_text(tool, &agent_error(e))?).into()),
            }
        }
        waiting.sort_by(|a, b| {
            (&a.agent, a.turn, &a.asked, &a.request).cmp(&(&b.agent, b.turn, &b.asked, &b.request))
        });
        let approvals: Vec<Value> = waiting.iter().map(approval_value).collect();
        Ok(json_result(json!({ "approvals": approvals })).into())
    }

    /// `agents__decide`: approves or rejects an approval request, decided
    /// by the caller's token id (`mcp` without one); the waiting turn then
    /// goes on.
    async fn call_decide(
        &self,
        tool: &str,
        args: Map<String, Value>,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        use crate::agents::agent_error;
        let required = |key: &str| match string_arg(&args, key) {
            Ok(Some(v)) => Ok(v.to_string()),
            Ok(None) => Err(format!("`{key}` is required")),
            Err(m) => Err(m),
        };
        let parsed = (|| {
            let agent = required("agent")?;
            let request = required("request")?;
            let approved = match args.get("approved") {
                Some(Value::Bool(b)) => *b,
                _ => return Err("`approved` is required: true or false".to_string()),
            };
            let reason = string_arg(&args, "reason")?.map(str::to_string);
            Ok((agent, request, approved, reason))
        })();
        let (agent, request, approved, reason) = match parsed {
            Ok(p) => p,
            Err(m) => return Ok(text_error(format!("`{tool}`: {m}")).into()),
        };
        let sys = match self.server.agents().await {
            Ok(sys) => sys,
            Err(e) => return Ok(text_error(failure_text(tool, &e)?).into()),
        };
        // An unknown agent says so, rather than that it has no such request.
        if let Err(e) = sys.get(&agent).await {
            return Ok(text_error(failure_text(tool, &agent_error(e))?).into());
        }
        let by = token_id(context).unwrap_or_else(|| "mcp".to_string());
        let mut result = match sys
            .decide(&agent, &request, approved, Some(by), reason)
            .await
        {
            Ok(a) => json_result(json!({ "approval": approval_value(&a) })),
            Err(e) => text_error(failure_text(tool, &agent_error(e))?),
        };
        let mut m = Map::new();
        m.insert("tessera/agent".into(), json!(agent));
        m.insert("tessera/request".into(), json!(request));
        result.meta = Some(MetaObject(m));
        Ok(result.into())
    }
}

impl ServerHandler for McpService {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(
            Implementation::new("tessera", env!("CARGO_PKG_VERSION")).with_title("Tessera"),
        )
        .with_instructions(
            "Each tool is an exported function of a WebAssembly component, run sandboxed \
             under the grants of its manifest. Tool names are <component>__<function>; \
             a tool named plan__<name> runs a registered plan (a graph of such calls) to \
             its end and answers its outputs; a tool named agent__<id> sends a message to \
             a long-lived agent and answers its reply; agents__approvals lists the tool \
             calls of agents that wait for a person's approval, and agents__decide \
             approves or rejects one; sandbox__python and sandbox__javascript, when \
             offered, run code in a fresh sandbox. Every call is journaled and can be \
             replayed.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        // A server started without waiting lists the components of the
        // compile cache once they are loaded (milliseconds after start).
        self.server.started().await;
        let mut all = all_tools(&self.server);
        all.extend(sandbox_tools(&self.server));
        // The agents' store may be slow to answer (NATS down): the other
        // tools are listed all the same.
        match tokio::time::timeout(AGENT_LIST_WAIT, agent_system_tools(&self.server)).await {
            Ok(agents) => all.extend(agents),
            Err(_) => tracing::warn!(
                "agent tools are not listed: the agents' store did not answer within {} s",
                AGENT_LIST_WAIT.as_secs()
            ),
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ListToolsResult::with_all_items(all))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.to_string();
        if name == APPROVALS_TOOL {
            return self
                .call_approvals(&name, request.arguments.unwrap_or_default())
                .await;
        }
        if name == DECIDE_TOOL {
            return self
                .call_decide(&name, request.arguments.unwrap_or_default(), &context)
                .await;
        }
        if let Some(language) = name.strip_prefix(SANDBOX_PREFIX)
            && self.server.sandboxes.is_some()
        {
            return self
                .call_sandbox(
                    &name,
                    language,
                    request.arguments.unwrap_or_default(),
                    &context,
                )
                .await;
        }
        if let Some(plan) = resolve_plan(&self.server, &name) {
            let args = Value::Object(request.arguments.unwrap_or_default());
            return self.call_plan(&name, &plan, args, context).await;
        }
        if name.starts_with("agent__") {
            return match resolve_agent(&self.server, &name).await {
                Some(agent) => {
                    self.call_agent(
                        &name,
                        &agent,
                        request.arguments.unwrap_or_default(),
                        context,
                    )
                    .await
                }
                None => Err(ErrorData::invalid_params(
                    format!("unknown tool `{name}`"),
                    Some(json!({ "tool": name })),
                )),
            };
        }
        self.server.started().await;
        if let Some((component, _)) = name.split_once("__")
            && self.server.active(component).is_none()
        {
            self.server.until_loaded_from_cache(component).await;
        }
        let Some((component, function)) = resolve(&self.server, &name) else {
            let component = name.split("__").next().unwrap_or_default();
            if self.server.active(component).is_none()
                && let Some(l) = self.server.loading_of(component)
            {
                let e = crate::CallError::Loading {
                    name: l.name,
                    version: l.version,
                    compiling: l.compiling,
                    elapsed: l.started.elapsed(),
                };
                return Ok(
                    text_error(format!("`{name}`: {e} (the tool list changes when it is)")).into(),
                );
            }
            return Err(ErrorData::invalid_params(
                format!("unknown tool `{name}`"),
                Some(json!({ "tool": name })),
            ));
        };
        let args = Value::Object(request.arguments.unwrap_or_default());
        let caller = mcp_caller(&context);
        let call = self.server.call(
            &component,
            &function,
            &args,
            Some(context.ct.clone()),
            caller,
        );
        // Over HTTP, the request's `traceparent` is the call's parent.
        let called = match context
            .extensions
            .get::<http::request::Parts>()
            .filter(|_| tessera_runtime::telemetry::enabled())
        {
            Some(parts) => {
                let parent = tessera_runtime::telemetry::extract(&parts.headers);
                let cx = tessera_runtime::telemetry::start(
                    format!("tools/call {name}"),
                    opentelemetry::trace::SpanKind::Server,
                    &parent,
                    vec![opentelemetry::KeyValue::new("mcp.tool", name.to_string())],
                );
                let called =
                    opentelemetry::context::FutureExt::with_context(call, cx.clone()).await;
                tessera_runtime::telemetry::end(&cx, Vec::new(), None);
                called
            }
            None => call.await,
        };
        let result = match called {
            Ok(mut c) => tool_result(&name, &mut c)?,
            Err(e) => text_error(failure_text(&name, &ApiError::from(e))?),
        };
        Ok(result.into())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let stopping = self.server.stopping().clone();
        let mut changes = tokio::select! {
            () = context.cancelled() => return Ok(()),
            () = stopping.cancelled() => return Ok(()),
            news = ToolNews::new(&self.server) => news,
        };
        loop {
            tokio::select! {
                () = context.cancelled() => return Ok(()),
                () = stopping.cancelled() => return Ok(()),
                r = changes.next() => {
                    if r.is_err() {
                        return Ok(());
                    }
                    if context.sink().notify_tool_list_changed().await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        // Sessions of the initialize-handshake revisions get list_changed
        // as plain notifications for as long as they are open.
        let server = self.server.clone();
        let stopping = self.server.stopping().clone();
        let peer = context.peer;
        tokio::spawn(async move {
            let mut changes = tokio::select! {
                () = stopping.cancelled() => return,
                news = ToolNews::new(&server) => news,
            };
            drop(server);
            let mut check = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    () = stopping.cancelled() => return,
                    _ = check.tick() => {
                        if peer.is_transport_closed() {
                            return;
                        }
                    }
                    r = changes.next() => {
                        if r.is_err() || peer.notify_tool_list_changed().await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// The changes of the tool list a session has not heard of: those after it
/// subscribed, and after the loads from the compile cache at the server's
/// start (its first `tools/list` waited for those and holds them).
struct ToolNews {
    changes: tokio::sync::watch::Receiver<u64>,
    seen: u64,
}

impl ToolNews {
    /// Subscribes, then waits until the server has started.
    async fn new(server: &Server) -> Self {
        let mut changes = server.tools_changed();
        let subscribed = *changes.borrow_and_update();
        let started = server.started_at().await;
        Self {
            changes,
            seen: subscribed.max(started),
        }
    }

    /// Waits for the next change; an error when the server is gone.
    async fn next(&mut self) -> Result<(), tokio::sync::watch::error::RecvError> {
        loop {
            self.changes.changed().await?;
            let now = *self.changes.borrow_and_update();
            if now > self.seen {
                self.seen = now;
                return Ok(());
            }
        }
    }
}

/// The streamable HTTP service mounted at `/mcp`.
pub type McpHttpService = StreamableHttpService<McpService, LocalSessionManager>;

/// The streamable HTTP MCP endpoint for a server listening on `local`.
/// Cancelling `sessions` closes every session.
///
/// The router's request guard checks `Host`, `Origin` and `Content-Type`
/// in front of every route, `/mcp` included; rmcp's own `Host` check is
/// given the same names, as a second line.
pub fn http_service(
    server: Arc<Server>,
    local: SocketAddr,
    sessions: CancellationToken,
) -> McpHttpService {
    let hosts = server.request_guard(local).host_list();
    // Sessions for the revisions that have them (2025-11-25 and before:
    // `list_changed` reaches a client on its session's stream). A request
    // of the sessionless 2026-07-28 revision whose answer is a single
    // message gets it as a plain JSON body, not a one-event SSE stream.
    let config = StreamableHttpServerConfig::default()
        .with_json_response(true)
        .with_cancellation_token(sessions)
        .with_max_request_body_bytes(server.config.max_body_bytes);
    let config = if hosts.is_empty() {
        config.disable_allowed_hosts()
    } else {
        config.with_allowed_hosts(hosts)
    };
    let handler = McpService::new(server);
    StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= MAX_TOOL_NAME
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }

    #[test]
    fn tool_names_are_valid_stable_and_distinct() {
        assert_eq!(name_for("hello", None, "greet"), "hello__greet");
        assert_eq!(
            name_for("hello", Some("tessera:hello/types@0.1.0"), "echo-u8"),
            "hello__types__echo-u8"
        );
        let long_component = "c".repeat(64);
        let a = name_for(
            &long_component,
            Some("wasi:x/long-interface@1.0.0"),
            "first",
        );
        let b = name_for(
            &long_component,
            Some("wasi:x/long-interface@1.0.0"),
            "second",
        );
        assert!(valid(&a) && valid(&b), "{a} {b}");
        assert_ne!(a, b);
        assert_eq!(
            a,
            name_for(
                &long_component,
                Some("wasi:x/long-interface@1.0.0"),
                "first"
            )
        );
        // Nothing outside [A-Za-z0-9_-] survives.
        assert!(valid(&name_for("c", Some("ns:pkg/odd.name"), "f")));
    }

    #[test]
    fn approval_tools_are_valid_and_no_component_can_take_their_names() {
        let tools = approval_tools();
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(names, [APPROVALS_TOOL, DECIDE_TOOL]);
        for name in names {
            assert!(valid(name), "{name}");
            let (component, _) = name.split_once("__").unwrap();
            assert!(!crate::registry::valid_name(component), "{name}");
        }
    }

    #[test]
    fn agent_tool_names_are_valid_and_distinct() {
        assert_eq!(agent_tool_name("a"), "agent__a");
        assert_eq!(agent_tool_name("a-b"), "agent__a-b");
        let dotted = agent_tool_name("a.b");
        assert!(
            valid(&dotted) && dotted.starts_with("agent__a-b-"),
            "{dotted}"
        );
        assert_ne!(dotted, agent_tool_name("a-b"));
        let child = agent_tool_name("coord/w1");
        assert!(
            valid(&child) && child.starts_with("agent__coord-w1-"),
            "{child}"
        );
        assert_ne!(child, agent_tool_name("coord-w1"));
        let long = "x".repeat(64);
        let (a, b) = (agent_tool_name(&long), agent_tool_name(&format!("{long}y")));
        assert!(valid(&a) && valid(&b), "{a} {b}");
        assert_ne!(a, b);
        assert_eq!(a, agent_tool_name(&long));
    }
}
