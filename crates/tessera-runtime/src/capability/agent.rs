//! `tessera:agent/agents` and `tessera:agent/tools`: what an agent's turn
//! may do beyond computing — message other agents, start children, call
//! other components' functions as tools.
//!
//! Manifest key `[agent]`:
//!
//! ```toml
//! [agent]
//! send = ["coordinator", "workers/*"]   # who it may message besides its parent and children
//! mailbox = 1000                         # capacity of its mailbox
//! retries = 1                            # attempts of a failing turn before it counts as a failure
//!
//! [agent.supervisor]                     # how it supervises its children
//! strategy = "one_for_one"               # or one_for_all, rest_for_one
//! max_restarts = 3
//! within_secs = 60
//!
//! [agent.spawn.worker]                   # a template `spawn` may start
//! component = "worker.wasm"
//! manifest = "worker.toml"
//!
//! [agent.tools.cities]                   # a component's functions as tools
//! component = "city-facts.wasm"
//! functions = ["population"]             # default: every exported function
//! approval = ["compare"]                 # or `true`: calls wait for a person
//! ```
//!
//! Deny by default: with no `[agent]` section a component may message
//! nobody but its parent and children, spawns nothing and has no tools; a
//! refused send or spawn answers `denied` and writes a `deny` audit event.
//!
//! Who carries the messages is the caller's business: the orchestrator
//! hands each turn an [`AgentLink`] ([`crate::CallOptions::agent`]) that
//! puts sends in the turn's outbox, delivers asks, creates children and
//! runs tools as child runs. Every operation is a gateway step answered
//! from the journal on replay, so a replayed turn contacts no agent and no
//! tool. A tool that needs approval makes the link answer
//! [`ToolAnswer::Suspend`]: the turn stops there (the step is not
//! recorded), and the orchestrator runs it again after the decision,
//! answering the steps before it from the journal.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime::component::Linker;
use wasmtime_wasi::WasiCtxBuilder;

use super::agent_wit::bindings::tessera::agent::{agents as wit_agents, tools as wit_tools};
use super::{Capability, Effects, Section};
use crate::audit::Decision;
use crate::gateway::{Gateway, Op, Step};
use crate::host::HostState;
use crate::manifest::ManifestError;
use crate::policy::Interaction;

/// Default mailbox capacity (`[agent] mailbox`).
pub const DEFAULT_MAILBOX: u32 = 1000;

/// The agent capability.
#[derive(Debug)]
pub struct Agent;

/// How a supervisor reacts when a child fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Restart the failed child only.
    #[default]
    OneForOne,
    /// Restart every child.
    OneForAll,
    /// Restart the failed child and the children spawned after it.
    RestForOne,
}

/// `[agent.supervisor]`: how an agent supervises its children.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorPolicy {
    /// What a child's failure restarts.
    #[serde(default)]
    pub strategy: Strategy,
    /// The most restarts within `within_secs`; one more and the supervisor
    /// itself fails (escalation to its own supervisor).
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    /// The window of the restart intensity, in seconds.
    #[serde(default = "default_within_secs")]
    pub within_secs: u64,
}

fn default_max_restarts() -> u32 {
    3
}

fn default_within_secs() -> u64 {
    60
}

impl Default for SupervisorPolicy {
    fn default() -> Self {
        Self {
            strategy: Strategy::default(),
            max_restarts: default_max_restarts(),
            within_secs: default_within_secs(),
        }
    }
}

/// A component, by registry name or by file (resolved against the
/// manifest's directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentSpec {
    /// A registry name, or the absolute path of a `.wasm` file.
    pub component: String,
    /// The absolute path of its manifest, for a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
}

impl ComponentSpec {
    /// Whether `component` is a file path (not a registry name).
    pub fn is_file(&self) -> bool {
        Path::new(&self.component).is_absolute()
    }
}

/// `[agent.tools.<name>]`: a component's functions granted as tools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolGrant {
    /// The component.
    #[serde(flatten)]
    pub component: ComponentSpec,
    /// The functions offered (`None`: every function the component serves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functions: Option<Vec<String>>,
    /// Functions whose calls wait for a person's approval (`["*"]`: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approval: Vec<String>,
}

/// How a function appears in a tool's name (`<grant>__<this>`): its short
/// name (`population`, or `vector-index#query` for a function of an
/// exported interface) with `#` as `_`, since tool names allow only
/// letters, digits, `_` and `-`.
pub fn tool_function_name(short: &str) -> String {
    short.replace('#', "_")
}

impl ToolGrant {
    /// Whether calls of `function` need approval. `function` is a short
    /// name or its tool-name form ([`tool_function_name`]).
    pub fn needs_approval(&self, function: &str) -> bool {
        self.approval.iter().any(|f| {
            f == "*" || f == function || tool_function_name(f) == tool_function_name(function)
        })
    }

    /// Whether the grant offers `function` (a short name or its tool-name
    /// form): every function when `functions` is absent.
    pub fn offers(&self, function: &str) -> bool {
        self.functions.as_ref().is_none_or(|fs| {
            fs.iter()
                .any(|f| f == function || tool_function_name(f) == tool_function_name(function))
        })
    }
}

/// What `[agent]` grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentGrant {
    /// Whether the manifest has an `[agent]` section.
    #[serde(default)]
    pub present: bool,
    /// Whom it may message besides its parent and children: ids, or
    /// prefixes ending in `*`.
    #[serde(default)]
    pub send: Vec<String>,
    /// Its mailbox capacity.
    #[serde(default = "default_mailbox")]
    pub mailbox: u32,
    /// Attempts of a failing turn before it counts as a failure (0: none).
    #[serde(default)]
    pub retries: u32,
    /// How it supervises its children.
    #[serde(default)]
    pub supervisor: SupervisorPolicy,
    /// The templates `spawn` may start, by name.
    #[serde(default)]
    pub spawn: BTreeMap<String, ComponentSpec>,
    /// Its tools, by grant name.
    #[serde(default)]
    pub tools: BTreeMap<String, ToolGrant>,
}

fn default_mailbox() -> u32 {
    DEFAULT_MAILBOX
}

impl Default for AgentGrant {
    fn default() -> Self {
        Self {
            present: false,
            send: Vec::new(),
            mailbox: DEFAULT_MAILBOX,
            retries: 0,
            supervisor: SupervisorPolicy::default(),
            spawn: BTreeMap::new(),
            tools: BTreeMap::new(),
        }
    }
}

impl AgentGrant {
    /// Whether the grant lets the agent message `to` (its parent and
    /// children are checked by the link, which knows them).
    pub fn may_send(&self, to: &str) -> bool {
        self.send.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => to.starts_with(prefix),
            None => p == to,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    #[serde(default)]
    send: Vec<String>,
    #[serde(default)]
    mailbox: Option<u32>,
    #[serde(default)]
    retries: Option<u32>,
    #[serde(default)]
    supervisor: Option<SupervisorPolicy>,
    #[serde(default)]
    spawn: BTreeMap<String, RawComponent>,
    #[serde(default)]
    tools: BTreeMap<String, RawTool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    component: String,
    #[serde(default)]
    manifest: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTool {
    component: String,
    #[serde(default)]
    manifest: Option<String>,
    #[serde(default)]
    functions: Option<Vec<String>>,
    #[serde(default)]
    approval: Option<Approval>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Approval {
    All(bool),
    Some(Vec<String>),
}

/// Checks an agent id: segments of lowercase letters, digits, `-`, `_` and
/// `.` (starting with a letter or digit), joined by `/`.
pub fn check_agent_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 200 {
        return Err("an agent id has 1 to 200 characters".into());
    }
    for seg in id.split('/') {
        check_segment(seg).map_err(|e| format!("agent id `{id}`: {e}"))?;
    }
    Ok(())
}

/// Checks one segment of an agent id (a child's name).
pub fn check_segment(seg: &str) -> Result<(), String> {
    let mut chars = seg.chars();
    match chars.next() {
        None => Err("a name segment is empty".into()),
        Some(c) if !(c.is_ascii_lowercase() || c.is_ascii_digit()) => Err(format!(
            "`{seg}` must start with a lowercase letter or a digit"
        )),
        _ if seg.len() > 64 => Err(format!("`{seg}` is longer than 64 characters")),
        _ => match seg
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(*c)))
        {
            Some(c) => Err(format!(
                "`{seg}` holds `{c}`: use lowercase letters, digits, `-`, `_` and `.`"
            )),
            None => Ok(()),
        },
    }
}

/// Checks a registry name (as `tessera components add` accepts them).
fn check_registry_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= 64
        && !name.contains("__")
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is neither a `.wasm` path nor a registry name (lowercase letters, digits, `-`, `_`)"
        ))
    }
}

pub(crate) fn component_spec(
    section: &Section<'_>,
    field: &str,
    component: &str,
    manifest: Option<&str>,
) -> Result<ComponentSpec, ManifestError> {
    let is_path = component.ends_with(".wasm") || component.contains('/');
    if !is_path {
        if manifest.is_some() {
            return Err(section.invalid(
                format!("{field}.manifest"),
                format!("`{component}` is a registry name; a registered component has its manifest already"),
            ));
        }
        check_registry_name(component)
            .map_err(|e| section.invalid(format!("{field}.component"), e))?;
        return Ok(ComponentSpec {
            component: component.to_string(),
            manifest: None,
        });
    }
    let abs = |p: &str| {
        normalize(&section.base().join(p))
            .to_string_lossy()
            .into_owned()
    };
    Ok(ComponentSpec {
        component: abs(component),
        manifest: manifest.map(abs),
    })
}

/// `a/b/../c` as `a/c`, without touching the file system.
fn normalize(path: &Path) -> std::path::PathBuf {
    let mut out = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// A tool as the guest and the model see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// `<grant>__<function>`.
    pub name: String,
    /// The function's docs and signature.
    pub description: String,
    /// JSON Schema of its arguments, as JSON text.
    pub parameters: String,
}

/// Why a send failed (`agents.send-error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "kebab-case")]
pub enum SendError {
    /// No agent has this id.
    #[error("no agent `{0}`")]
    NoSuchAgent(String),
    /// Not granted.
    #[error("sending to `{0}` is not granted")]
    Denied(String),
    /// The mailbox is full.
    #[error("the mailbox of `{0}` is full")]
    MailboxFull(String),
    /// The recipient has failed.
    #[error("`{0}` has stopped")]
    Stopped(String),
}

/// Why an ask has no reply (`agents.ask-error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "kebab-case")]
pub enum AskError {
    /// The message could not be sent.
    #[error("{0}")]
    Send(SendError),
    /// No reply in time.
    #[error("no reply in time")]
    Timeout,
    /// The recipient's turn failed.
    #[error("the turn failed: {0}")]
    Failed(String),
    /// The recipient's turn gave no reply.
    #[error("the turn gave no reply")]
    NoReply,
}

/// Why a spawn failed (`agents.spawn-error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "kebab-case")]
pub enum SpawnError {
    /// No such template is granted.
    #[error("template `{0}` is not granted")]
    Denied(String),
    /// A child of that name runs another template.
    #[error("`{0}` exists with another template")]
    Exists(String),
    /// The name is not valid.
    #[error("{0}")]
    InvalidName(String),
}

/// Why a tool call gave no result (`tools.tool-error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "kebab-case")]
pub enum ToolError {
    /// No such tool is granted.
    #[error("no tool `{0}`")]
    Unknown(String),
    /// Bad arguments.
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// The tool failed.
    #[error("{0}")]
    Failed(String),
    /// A person rejected the call.
    #[error("rejected: {0}")]
    Rejected(String),
}

/// What the link answers for a tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolAnswer {
    /// The call happened (or was refused).
    Done {
        /// Its result as JSON text, or why not.
        result: Result<String, ToolError>,
        /// The journal run of the tool's call, if it ran.
        run: Option<String>,
    },
    /// The call waits for a person: the turn stops here and runs again
    /// once the approval request is decided.
    Suspend {
        /// The approval request.
        request: String,
    },
}

/// What a turn's host calls reach: provided by the orchestrator for each
/// turn it runs ([`crate::CallOptions::agent`]).
#[async_trait::async_trait]
pub trait AgentLink: Send + Sync {
    /// The agent's id.
    fn id(&self) -> String;
    /// Its supervisor.
    fn parent(&self) -> Option<String>;
    /// Its children, in spawn order (this turn's spawns included).
    fn children(&self) -> Vec<String>;
    /// Puts a message in the turn's outbox; returns its id. The grant was
    /// checked; parent and children are always allowed.
    async fn send(&self, to: &str, body: &str) -> Result<String, SendError>;
    /// Sends at once and waits for the reply.
    async fn ask(&self, to: &str, body: &str, timeout: Duration) -> Result<String, AskError>;
    /// Starts (or finds) a child.
    async fn spawn(
        &self,
        name: &str,
        template: &str,
        state: Option<&str>,
    ) -> Result<String, SpawnError>;
    /// The granted tools.
    async fn tools(&self) -> Vec<ToolSpec>;
    /// Calls a tool.
    async fn call_tool(&self, name: &str, arguments: &str) -> ToolAnswer;
    /// Whether `to` is this agent's parent or one of its children.
    fn is_kin(&self, to: &str) -> bool {
        self.parent().as_deref() == Some(to) || self.children().iter().any(|c| c == to)
    }
}

/// The error a turn stops with while a tool call waits for approval.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the turn waits for approval request `{request}` (tool `{tool}`)")]
pub struct AwaitingApproval {
    /// The approval request.
    pub request: String,
    /// The tool.
    pub tool: String,
}

/// A `send` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRequest {
    /// The recipient.
    pub to: String,
    /// The body.
    pub body: String,
}

/// An `ask` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AskRequest {
    /// The recipient.
    pub to: String,
    /// The body.
    pub body: String,
    /// How long to wait.
    pub timeout_ms: u32,
}

/// A `spawn` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnRequest {
    /// The child's name.
    pub name: String,
    /// The template.
    pub template: String,
    /// Its initial state.
    pub state: Option<String>,
}

/// A tool call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolRequest {
    /// The tool.
    pub name: String,
    /// Its arguments (JSON text).
    pub arguments: String,
}

/// A tool call's answer, with the run that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolResponse {
    /// The result (JSON text) or why not.
    pub result: Result<String, ToolError>,
    /// The tool's journal run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
}

macro_rules! ops {
    ($($(#[$doc:meta])* $ty:ident $name:literal: $req:ty => $resp:ty;)*) => {
        $(
            $(#[$doc])*
            pub struct $ty;
            impl Op for $ty {
                const CAPABILITY: &'static str = "agent";
                const NAME: &'static str = $name;
                type Request = $req;
                type Response = $resp;
            }
        )*
    };
}

ops! {
    /// `agents.self-id`.
    SelfId "self-id": () => String;
    /// `agents.parent`.
    Parent "parent": () => Option<String>;
    /// `agents.children`.
    Children "children": () => Vec<String>;
    /// `agents.send`.
    SendMessage "send": SendRequest => Result<String, SendError>;
    /// `agents.ask`.
    Ask "ask": AskRequest => Result<String, AskError>;
    /// `agents.spawn`.
    Spawn "spawn": SpawnRequest => Result<String, SpawnError>;
    /// `tools.list`.
    ListTools "tools": () => Vec<ToolSpec>;
    /// `tools.call`.
    CallTool "tool": ToolRequest => ToolResponse;
}

/// The link of the call, or a trap: agent imports answer only inside a
/// turn (or from the journal).
fn link(gateway: &Gateway) -> wasmtime::Result<Arc<dyn AgentLink>> {
    gateway.agent().ok_or_else(|| {
        wasmtime::Error::msg(
            "`tessera:agent` imports answer only inside an agent's turn: \
             this call was not made by an agent host",
        )
    })
}

fn wit_send_error(e: SendError) -> wit_agents::SendError {
    match e {
        SendError::NoSuchAgent(a) => wit_agents::SendError::NoSuchAgent(a),
        SendError::Denied(a) => wit_agents::SendError::Denied(a),
        SendError::MailboxFull(a) => wit_agents::SendError::MailboxFull(a),
        SendError::Stopped(a) => wit_agents::SendError::Stopped(a),
    }
}

impl wit_agents::Host for HostState {
    async fn self_id(&mut self) -> wasmtime::Result<String> {
        self.gateway
            .exchange_async::<SelfId, _, _>((), |g, ()| async move { Ok(link(&g)?.id()) })
            .await
    }

    async fn parent(&mut self) -> wasmtime::Result<Option<String>> {
        self.gateway
            .exchange_async::<Parent, _, _>((), |g, ()| async move { Ok(link(&g)?.parent()) })
            .await
    }

    async fn children(&mut self) -> wasmtime::Result<Vec<String>> {
        self.gateway
            .exchange_async::<Children, _, _>((), |g, ()| async move { Ok(link(&g)?.children()) })
            .await
    }

    async fn send(
        &mut self,
        to: String,
        body: String,
    ) -> wasmtime::Result<Result<String, wit_agents::SendError>> {
        let r = self
            .gateway
            .exchange_async::<SendMessage, _, _>(SendRequest { to, body }, |g, q| async move {
                let link = link(&g)?;
                if !link.is_kin(&q.to) && !g.grants().agent.may_send(&q.to) {
                    deny(&g, "send", &q.to);
                    return Ok(Err(SendError::Denied(q.to)));
                }
                Ok(link.send(&q.to, &q.body).await)
            })
            .await?;
        Ok(r.map_err(wit_send_error))
    }

    async fn ask(
        &mut self,
        to: String,
        body: String,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<String, wit_agents::AskError>> {
        let request = AskRequest {
            to,
            body,
            timeout_ms,
        };
        let r = self
            .gateway
            .exchange_async::<Ask, _, _>(request, |g, q| async move {
                let link = link(&g)?;
                if !link.is_kin(&q.to) && !g.grants().agent.may_send(&q.to) {
                    deny(&g, "ask", &q.to);
                    return Ok(Err(AskError::Send(SendError::Denied(q.to))));
                }
                Ok(link
                    .ask(&q.to, &q.body, Duration::from_millis(q.timeout_ms.into()))
                    .await)
            })
            .await?;
        Ok(r.map_err(|e| match e {
            AskError::Send(s) => wit_agents::AskError::Send(wit_send_error(s)),
            AskError::Timeout => wit_agents::AskError::Timeout,
            AskError::Failed(m) => wit_agents::AskError::Failed(m),
            AskError::NoReply => wit_agents::AskError::NoReply,
        }))
    }

    async fn spawn(
        &mut self,
        spec: wit_agents::ChildSpec,
    ) -> wasmtime::Result<Result<String, wit_agents::SpawnError>> {
        let request = SpawnRequest {
            name: spec.name,
            template: spec.template,
            state: spec.state,
        };
        let r = self
            .gateway
            .exchange_async::<Spawn, _, _>(request, |g, q| async move {
                let link = link(&g)?;
                if let Err(e) = check_segment(&q.name) {
                    return Ok(Err(SpawnError::InvalidName(e)));
                }
                if !g.grants().agent.spawn.contains_key(&q.template) {
                    deny(&g, "spawn", &q.template);
                    return Ok(Err(SpawnError::Denied(q.template)));
                }
                Ok(link.spawn(&q.name, &q.template, q.state.as_deref()).await)
            })
            .await?;
        Ok(r.map_err(|e| match e {
            SpawnError::Denied(t) => wit_agents::SpawnError::Denied(t),
            SpawnError::Exists(a) => wit_agents::SpawnError::Exists(a),
            SpawnError::InvalidName(m) => wit_agents::SpawnError::InvalidName(m),
        }))
    }
}

fn deny(gateway: &Gateway, what: &str, target: &str) {
    gateway.audit(
        "agent",
        format!("{what} {target}"),
        Decision::Deny,
        Some(match what {
            "spawn" => format!(
                "template `{target}` is not granted (add `[agent.spawn.{target}]` to the manifest)"
            ),
            _ => format!(
                "messaging `{target}` is not granted (it is not this agent's parent or child; add it to `[agent] send`)"
            ),
        }),
    );
}

impl wit_tools::Host for HostState {
    async fn list(&mut self) -> wasmtime::Result<Vec<wit_tools::Tool>> {
        let tools = self
            .gateway
            .exchange_async::<ListTools, _, _>((), |g, ()| async move {
                if g.grants().agent.tools.is_empty() {
                    return Ok(Vec::new());
                }
                Ok(link(&g)?.tools().await)
            })
            .await?;
        Ok(tools
            .into_iter()
            .map(|t| wit_tools::Tool {
                name: t.name,
                description: t.description,
                parameters: t.parameters,
            })
            .collect())
    }

    async fn call(
        &mut self,
        name: String,
        arguments: String,
    ) -> wasmtime::Result<Result<String, wit_tools::ToolError>> {
        let gateway = self.gateway.clone();
        let mut span = gateway.interaction_span("agent", "tool.call", &name);
        let request = ToolRequest { name, arguments };
        let index = gateway.reserve_index();
        let response = match gateway.answer::<CallTool>(index, &request)? {
            Some(r) => r,
            None => {
                let granted = request
                    .name
                    .split_once("__")
                    .is_some_and(|(grant, _)| gateway.grants().agent.tools.contains_key(grant));
                if !granted {
                    gateway.audit(
                        "agent",
                        format!("tool {}", request.name),
                        Decision::Deny,
                        Some(format!(
                            "tool `{}` is not granted (add it under `[agent.tools]` in the manifest)",
                            request.name
                        )),
                    );
                    span.decide("deny");
                    ToolResponse {
                        result: Err(ToolError::Unknown(request.name.clone())),
                        run: None,
                    }
                } else if let Err(reason) = gateway.authorize(&Interaction::Tool {
                    name: request.name.clone(),
                    arguments: request.arguments.clone(),
                }) {
                    gateway.audit(
                        "agent",
                        format!("tool {}", request.name),
                        Decision::Deny,
                        Some(reason.clone()),
                    );
                    span.decide("deny");
                    ToolResponse {
                        result: Err(ToolError::Rejected(reason)),
                        run: None,
                    }
                } else {
                    // The tool's own call hangs under this span.
                    let tools = link(&gateway)?;
                    let called = tools.call_tool(&request.name, &request.arguments);
                    let called = match span.context() {
                        Some(cx) => {
                            opentelemetry::context::FutureExt::with_context(called, cx.clone())
                                .await
                        }
                        None => called.await,
                    };
                    match called {
                        ToolAnswer::Done { result, run } => ToolResponse { result, run },
                        ToolAnswer::Suspend { request: id } => {
                            return Err(AwaitingApproval {
                                request: id,
                                tool: request.name,
                            }
                            .into());
                        }
                    }
                }
            }
        };
        gateway.report::<CallTool>(index, &request, &response);
        Ok(response.result.map_err(|e| match e {
            ToolError::Unknown(n) => wit_tools::ToolError::Unknown(n),
            ToolError::InvalidArguments(m) => wit_tools::ToolError::InvalidArguments(m),
            ToolError::Failed(m) => wit_tools::ToolError::Failed(m),
            ToolError::Rejected(m) => wit_tools::ToolError::Rejected(m),
        }))
    }
}

impl Capability for Agent {
    const NAME: &'static str = "agent";
    const MANIFEST_KEYS: &'static [&'static str] = &["agent"];
    type Grant = AgentGrant;
    type State = ();

    fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        type Me = wasmtime::component::HasSelf<HostState>;
        // The types-only interface the others `use`: components import it
        // as an instance with no functions.
        linker.instance("tessera:agent/types@0.1.0")?;
        wit_agents::add_to_linker::<HostState, Me>(linker, |s| s)?;
        wit_tools::add_to_linker::<HostState, Me>(linker, |s| s)
    }

    fn grant(section: &Section<'_>) -> Result<AgentGrant, ManifestError> {
        let Some(raw) = section.parse::<RawAgent>("agent")? else {
            return Ok(AgentGrant::default());
        };
        for (i, p) in raw.send.iter().enumerate() {
            let id = p.strip_suffix('*').unwrap_or(p);
            let id = id.strip_suffix('/').unwrap_or(id);
            if !(p == "*" || id.is_empty() && p.ends_with('*')) {
                check_agent_id(id).map_err(|e| section.invalid(format!("agent.send[{i}]"), e))?;
            }
        }
        if raw.mailbox == Some(0) {
            return Err(section.invalid("agent.mailbox", "a mailbox holds at least 1 message"));
        }
        if let Some(s) = &raw.supervisor
            && s.within_secs == 0
        {
            return Err(section.invalid(
                "agent.supervisor.within_secs",
                "the restart window is at least 1 second",
            ));
        }
        let mut spawn = BTreeMap::new();
        for (name, c) in &raw.spawn {
            let field = format!("agent.spawn.{name}");
            check_segment(name).map_err(|e| section.invalid(field.clone(), e))?;
            spawn.insert(
                name.clone(),
                component_spec(section, &field, &c.component, c.manifest.as_deref())?,
            );
        }
        let mut tools = BTreeMap::new();
        for (name, t) in &raw.tools {
            let field = format!("agent.tools.{name}");
            if name.is_empty()
                || name.contains("__")
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(section.invalid(
                    field,
                    "a tool grant's name uses letters, digits, `-` and `_` (no `__`)",
                ));
            }
            let approval = match &t.approval {
                None | Some(Approval::All(false)) => Vec::new(),
                Some(Approval::All(true)) => vec!["*".to_string()],
                Some(Approval::Some(fs)) => fs.clone(),
            };
            if let (Some(fs), false) = (&t.functions, approval.iter().any(|a| a == "*")) {
                for (i, a) in approval.iter().enumerate() {
                    if !fs.contains(a) {
                        return Err(section.invalid(
                            format!("{field}.approval[{i}]"),
                            format!("`{a}` is not among the tool's `functions`"),
                        ));
                    }
                }
            }
            tools.insert(
                name.clone(),
                ToolGrant {
                    component: component_spec(
                        section,
                        &field,
                        &t.component,
                        t.manifest.as_deref(),
                    )?,
                    functions: t.functions.clone(),
                    approval,
                },
            );
        }
        Ok(AgentGrant {
            present: true,
            send: raw.send,
            mailbox: raw.mailbox.unwrap_or(DEFAULT_MAILBOX),
            retries: raw.retries.unwrap_or(0),
            supervisor: raw.supervisor.unwrap_or_default(),
            spawn,
            tools,
        })
    }

    fn state(
        _grant: &AgentGrant,
        _gateway: &Gateway,
        _wasi: &mut WasiCtxBuilder,
    ) -> Result<(), crate::Error> {
        Ok(())
    }

    fn effects(grant: &AgentGrant) -> Effects {
        let acts = !grant.send.is_empty() || !grant.spawn.is_empty() || !grant.tools.is_empty();
        Effects {
            writes: acts,
            external: !grant.tools.is_empty(),
            ..Effects::NONE
        }
    }

    fn describe(step: &Step) -> String {
        let s = |v: &serde_json::Value, k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let short = |t: String| {
            if t.chars().count() > 80 {
                format!("{}…", t.chars().take(80).collect::<String>())
            } else {
                t
            }
        };
        let q = &step.request;
        let r = &step.response;
        let outcome = |r: &serde_json::Value| match (r.get("Ok"), r.get("Err")) {
            (Some(ok), _) => short(ok.as_str().map(str::to_string).unwrap_or(ok.to_string())),
            (_, Some(e)) => format!("error {}", short(e.to_string())),
            _ => short(r.to_string()),
        };
        match step.op.as_ref() {
            "send" => format!(
                "agent.send       to {} {} -> {}",
                s(q, "to"),
                short(s(q, "body")),
                outcome(r)
            ),
            "ask" => format!(
                "agent.ask        {} {} -> {}",
                s(q, "to"),
                short(s(q, "body")),
                outcome(r)
            ),
            "spawn" => format!(
                "agent.spawn      {} ({}) -> {}",
                s(q, "name"),
                s(q, "template"),
                outcome(r)
            ),
            "tool" => format!(
                "agent.tool       {} {} -> {}{}",
                s(q, "name"),
                short(s(q, "arguments")),
                outcome(r.get("result").unwrap_or(r)),
                r.get("run")
                    .and_then(|x| x.as_str())
                    .map(|run| format!(" (run {run})"))
                    .unwrap_or_default()
            ),
            _ => super::generic_description(step),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(functions: Option<&[&str]>, approval: &[&str]) -> ToolGrant {
        ToolGrant {
            component: ComponentSpec {
                component: "vectors".into(),
                manifest: None,
            },
            functions: functions.map(|fs| fs.iter().map(|f| f.to_string()).collect()),
            approval: approval.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn an_interface_function_is_offered_and_approved_under_its_tool_name() {
        assert_eq!(
            tool_function_name("vector-index#query"),
            "vector-index_query"
        );
        assert_eq!(tool_function_name("population"), "population");
        let g = grant(Some(&["vector-index#query"]), &["vector-index#remove"]);
        // Both the short name and the tool name's form.
        assert!(g.offers("vector-index#query"));
        assert!(g.offers("vector-index_query"));
        assert!(!g.offers("vector-index#remove"));
        assert!(!g.offers("vector-index_upsert"));
        assert!(g.needs_approval("vector-index_remove"));
        assert!(g.needs_approval("vector-index#remove"));
        assert!(!g.needs_approval("vector-index_query"));
        // No list: every function; `*`: every call waits.
        let all = grant(None, &["*"]);
        assert!(all.offers("anything_at_all"));
        assert!(all.needs_approval("vector-index_query"));
    }
}
