//! Agents served by the server: the orchestrator's [`AgentSystem`] on the
//! data directory's stores, reached over HTTP (`/v1/agents…`, see
//! `agent_routes.rs`) and over MCP (each agent a tool `agent__<id>`, see
//! `mcp.rs`).
//!
//! - **One agent system per server**, opened when the server starts, on the
//!   bucket [`records::BUCKET`] of the server's stores — the same records
//!   `tessera agents` reads — and recording every turn in the server's
//!   journal (`via: "http"` in the headers). Opening it resumes the work a
//!   previous process left: undelivered outboxes, unprocessed mail. Turns
//!   are committed before they are acknowledged, so shutting down needs
//!   nothing more: a turn cut short runs again at the next start.
//! - **Components**: a registry name resolves to the component's *active*
//!   version, at every turn ([`ServerComponents`]), so activating a new
//!   version changes an agent's next turn, not the one running; a version
//!   still loading (at start) is waited for. A `.wasm` path — which only a
//!   manifest can name (a tool grant, a child template), never a client —
//!   is loaded with the server's runtime.
//! - **Errors** map once ([`agent_error`]) to the API's codes; MCP renders
//!   the same.
//! - **The tool list** changes when an agent appears (spawned, by a client
//!   or by a turn, or forked): the events of the agent system bump
//!   [`Server::tools_changed`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde_json::Value;
use tessera_orchestrator::agent::{AgentError, AgentEvent, AgentSystem, ReplyRecord, records};
use tessera_orchestrator::local::{Components, FileComponents};
use tessera_orchestrator::plan::ComponentRef;
use tessera_runtime::LoadedComponent;

use crate::active::Active;
use crate::error::{ApiError, ErrorCode};
use crate::plans::store_op;
use crate::{Server, api};

/// How long a turn waits for its component when nothing of it is served
/// yet but a version is being loaded (compiled) in the background.
const LOAD_WAIT: Duration = Duration::from_secs(600);

/// How long opening the agent system may take (it lists the agents with
/// work left).
const OPEN_DEADLINE: Duration = Duration::from_secs(20);

/// The components of agents (and of their tools) in a server: registry
/// names resolve to the active version; `.wasm` paths load with the
/// server's runtime.
pub struct ServerComponents {
    server: Weak<Server>,
    files: FileComponents,
    /// The `Arc` handed out for each active version, so that every turn on
    /// one version shares it.
    shared: Mutex<HashMap<String, Shared>>,
}

/// An active version and the `Arc` handed out for it.
type Shared = (Arc<Active>, Arc<LoadedComponent>);

impl ServerComponents {
    /// The components of `server`.
    pub fn new(server: &Arc<Server>) -> Self {
        Self {
            server: Arc::downgrade(server),
            files: FileComponents::new(server.runtime.clone()),
            shared: Mutex::new(HashMap::new()),
        }
    }

    fn registered(&self, name: &str) -> Result<Arc<LoadedComponent>, String> {
        let server = self
            .server
            .upgrade()
            .ok_or_else(|| "the server has shut down".to_string())?;
        // Nothing served yet but a version loading (at start, or just
        // registered): wait for it. A swap keeps serving the old version
        // meanwhile, so it is not waited for.
        let started = Instant::now();
        while server.active(name).is_none()
            && server.loading_of(name).is_some()
            && started.elapsed() < LOAD_WAIT
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let Some(active) = server.active(name) else {
            if let Some((_, e)) = server.load_failures().into_iter().find(|(n, _)| n == name) {
                return Err(format!(
                    "component `{name}` is registered but could not be loaded: {e}"
                ));
            }
            if server.loading_of(name).is_some() {
                return Err(format!(
                    "component `{name}` is still being compiled; its messages wait for it"
                ));
            }
            return Err(format!(
                "no component `{name}` is registered here: register it (POST /v1/components) first"
            ));
        };
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((a, loaded)) = shared.get(name)
            && Arc::ptr_eq(a, &active)
        {
            return Ok(loaded.clone());
        }
        let loaded = Arc::new(active.loaded.clone());
        shared.insert(name.to_string(), (active, loaded.clone()));
        Ok(loaded)
    }
}

impl Components for ServerComponents {
    fn load(&self, component: &ComponentRef, base: &Path) -> Result<Arc<LoadedComponent>, String> {
        match component {
            ComponentRef::Registry(name) => self.registered(name),
            file @ ComponentRef::File { .. } => self.files.load(file, base),
        }
    }
}

/// An agent system error as an API error.
pub fn agent_error(e: AgentError) -> ApiError {
    let message = e.to_string();
    match e {
        AgentError::NotFound(id) => {
            ApiError::new(ErrorCode::NoSuchAgent, message).with(|d| d.agent = Some(id))
        }
        AgentError::Exists(id) => {
            ApiError::new(ErrorCode::AgentExists, message).with(|d| d.agent = Some(id))
        }
        AgentError::InvalidId(_) => ApiError::new(ErrorCode::InvalidAgentId, message),
        AgentError::MailboxFull { id, capacity } => ApiError::new(ErrorCode::MailboxFull, message)
            .with(|d| {
                d.agent = Some(id);
                d.limit = Some(crate::error::LimitRef::Value(u64::from(capacity)));
            }),
        AgentError::Stopped { id, reason } => ApiError::new(
            ErrorCode::AgentStopped,
            format!(
                "`{id}` takes no messages: {reason} (restart it: POST /v1/agents/{id}/restart)"
            ),
        )
        .with(|d| d.agent = Some(id)),
        AgentError::Component { .. } => ApiError::new(ErrorCode::BadComponent, message),
        AgentError::Timeout => ApiError::new(ErrorCode::ReplyTimeout, message),
        AgentError::Store(s) => s.into(),
        AgentError::Corrupt { .. } => ApiError::new(ErrorCode::Store, message),
        AgentError::Missing(_) => ApiError::new(ErrorCode::NoSuchAgentEntry, message),
        AgentError::Invalid(_) => ApiError::new(ErrorCode::AgentConflict, message),
    }
}

/// Checks the id of a new top-level agent (spawned or forked): a valid
/// agent id without `/` (which joins a parent's id and its child's name).
pub fn check_top_level_id(id: &str) -> Result<(), ApiError> {
    tessera_runtime::capability::agent::check_agent_id(id)
        .map_err(|m| ApiError::new(ErrorCode::InvalidAgentId, m))?;
    if id.contains('/') {
        return Err(ApiError::new(
            ErrorCode::InvalidAgentId,
            format!(
                "agent id `{id}`: a top-level agent's id has no `/` (children are named `parent/child` by their parent)"
            ),
        ));
    }
    Ok(())
}

/// A message body as the agent gets it: a JSON string as that string, any
/// other JSON value as its JSON text.
pub fn body_text(body: &Value) -> String {
    match body {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A reply as JSON: parsed when it is JSON, else the text; `null` for none.
pub fn reply_value(reply: Option<&str>) -> Value {
    match reply {
        None => Value::Null,
        Some(text) => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.into())),
    }
}

/// What a send gave: the message id, and the turn's reply when the sender
/// waited.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The message id.
    pub message: String,
    /// The reply, when the sender waited.
    pub reply: Option<Reply>,
}

/// How the turn that handled a message answered.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The turn.
    pub turn: u64,
    /// Its journal run.
    pub run: Option<String>,
    /// The reply text, if the turn gave one.
    pub text: Option<String>,
}

impl Server {
    /// The agent system, opened on first use (and by [`Server::start`] in
    /// the background, which resumes the agents' pending work).
    pub async fn agents(self: &Arc<Self>) -> Result<AgentSystem, ApiError> {
        self.agents
            .get_or_try_init(|| self.open_agents())
            .await
            .cloned()
    }

    async fn open_agents(self: &Arc<Self>) -> Result<AgentSystem, ApiError> {
        let stores = self.stores().ok_or_else(|| {
            ApiError::new(
                ErrorCode::StoreUnavailable,
                "this server has no store to keep agents in",
            )
        })?;
        let store = store_op(stores.for_bucket(records::BUCKET)).await?;
        let components = Arc::new(ServerComponents::new(self));
        let opened = tokio::time::timeout(
            OPEN_DEADLINE,
            AgentSystem::open(store, components, self.journal.clone(), "http"),
        )
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::StoreUnavailable,
                format!(
                    "the agents' store did not answer within {} s",
                    OPEN_DEADLINE.as_secs()
                ),
            )
        })?;
        let sys = opened.map_err(agent_error)?;
        self.follow_agent_events(&sys);
        Ok(sys)
    }

    /// Opens the agent system in the background once the loads from the
    /// compile cache have ended, so that agents with work left resume;
    /// gives up when the server stops. A store that is not available yet
    /// (the embedded store of a server that just stopped in this process
    /// is closed by its writer thread a moment later) is tried again for a
    /// few seconds.
    pub(crate) fn open_agents_in_background(self: &Arc<Self>) {
        let server = self.clone();
        let stopping = self.stopping().clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stopping.cancelled() => {}
                r = async {
                    server.started().await;
                    let mut tries = 0;
                    loop {
                        match server.agents().await {
                            Err(e) if e.code() == ErrorCode::StoreUnavailable && tries < 100 => {
                                tries += 1;
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            r => break r,
                        }
                    }
                } => {
                    if let Err(e) = r {
                        tracing::warn!("agents: {} (retried on first use)", e.message());
                    }
                }
            }
        });
    }

    /// Tells MCP sessions the tool list changed when an agent appears.
    fn follow_agent_events(self: &Arc<Self>, sys: &AgentSystem) {
        let mut events = sys.events();
        let server = Arc::downgrade(self);
        let stopping = self.stopping().clone();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    () = stopping.cancelled() => return,
                    e = events.recv() => e,
                };
                if let (Ok(e), Some(server)) = (&event, server.upgrade()) {
                    let kind = match e {
                        AgentEvent::Turn { .. } => Some("turn"),
                        AgentEvent::AttemptFailed { .. } => Some("attempt_failed"),
                        AgentEvent::DeadLetter { .. } => Some("dead_letter"),
                        AgentEvent::Restarted { .. } => Some("restarted"),
                        AgentEvent::Failed { .. } => Some("failed"),
                        _ => None,
                    };
                    if let Some(kind) = kind {
                        server.metrics.agent_event(kind);
                    }
                }
                let changed = match event {
                    Ok(AgentEvent::Spawned { .. }) => true,
                    Ok(_) => false,
                    // Missed events may have held a spawn.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                if changed {
                    let Some(server) = server.upgrade() else {
                        return;
                    };
                    server.tools_changed.send_modify(|n| *n += 1);
                }
            }
        });
    }

    /// Sends `body` to agent `to` from outside; with `wait`, waits up to
    /// that long for its turn's reply. A turn that failed for good is
    /// `turn_failed`; no reply in time is `reply_timeout` (the message stays
    /// delivered).
    pub async fn send_to_agent(
        self: &Arc<Self>,
        to: &str,
        body: &str,
        id: Option<String>,
        wait: Option<Duration>,
    ) -> Result<Sent, ApiError> {
        let sys = self.agents().await?;
        let message = sys
            .send(
                to,
                body,
                tessera_orchestrator::agent::SendOptions {
                    id,
                    expects_reply: wait.is_some(),
                },
            )
            .await
            .map_err(agent_error)?;
        let Some(timeout) = wait else {
            return Ok(Sent {
                message,
                reply: None,
            });
        };
        let with = |e: ApiError, message: &str| {
            let (agent, message) = (to.to_string(), message.to_string());
            e.with(|d| {
                d.agent = Some(agent);
                d.agent_message = Some(message);
            })
        };
        match sys.wait_reply(&message, timeout).await {
            Ok(ReplyRecord::Replied { reply, turn, run }) => Ok(Sent {
                message,
                reply: Some(Reply {
                    turn,
                    run,
                    text: reply,
                }),
            }),
            Ok(ReplyRecord::Failed { error }) => Err(with(
                ApiError::new(
                    ErrorCode::TurnFailed,
                    format!(
                        "the turn of `{to}` failed for good; the message `{message}` is a dead letter (GET /v1/agents/{}/dead-letters): {error}",
                        encode_id(to)
                    ),
                ),
                &message,
            )),
            Err(AgentError::Timeout) => Err(with(
                ApiError::new(
                    ErrorCode::ReplyTimeout,
                    format!(
                        "no reply from `{to}` within {} ms; the message `{message}` is delivered and its turn still runs (GET /v1/agents/{}/turns)",
                        timeout.as_millis(),
                        encode_id(to)
                    ),
                ),
                &message,
            )),
            Err(e) => Err(with(agent_error(e), &message)),
        }
    }

    /// An agent as `GET /v1/agents/{id}` shows it: its record, its depth,
    /// the approval requests waiting and its dead-letter count.
    pub async fn agent_detail(self: &Arc<Self>, id: &str) -> Result<api::AgentInfo, ApiError> {
        let sys = self.agents().await?;
        let info = sys.get(id).await.map_err(agent_error)?;
        let approvals = sys.approvals(id).await.map_err(agent_error)?;
        let dead = sys.dead_letters(id).await.map_err(agent_error)?;
        let mut out = api::AgentInfo::of(&info);
        out.approvals_waiting = Some(
            approvals
                .iter()
                .filter(|a| a.decision.is_none())
                .map(api::ApprovalInfo::from)
                .collect(),
        );
        out.dead_letters = Some(dead.len() as u64);
        Ok(out)
    }

    /// A page of an agent's turn log: the turns after turn `after`, at most
    /// `limit`, each with the `llm` and `agent` steps of its journal run.
    pub async fn agent_turns(
        self: &Arc<Self>,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<api::TurnList, ApiError> {
        let sys = self.agents().await?;
        let all = sys.turns(id).await.map_err(agent_error)?;
        let mut page: Vec<_> = all.into_iter().filter(|t| t.turn > after).collect();
        let more = page.len() > limit;
        page.truncate(limit);
        let cursor = if more {
            page.last().map(|t| t.turn)
        } else {
            None
        };
        let journal = self.journal.clone();
        let turns = tokio::task::spawn_blocking(move || {
            // Steps are written in the background: those of the last turns
            // may not be on disk yet.
            journal.flush();
            page.iter()
                .map(|t| render_turn(&journal, t))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("reading the journal: {e}")))?;
        Ok(api::TurnList {
            agent: id.to_string(),
            turns,
            cursor,
        })
    }
}

/// A turn with its model exchanges and agent operations (the `llm` and
/// `agent` steps of its journal run), as `GET /v1/agents/{id}/turns`
/// answers it and `tessera agents log` prints it.
pub fn render_turn(
    journal: &tessera_journal::JournalStore,
    t: &tessera_orchestrator::agent::TurnRecord,
) -> api::AgentTurn {
    let mut exchanges = Vec::new();
    if let Some(run) = &t.run
        && let Ok(steps) = journal.steps(run)
    {
        for (i, s) in steps {
            if s.capability == "llm" || s.capability == "agent" {
                exchanges.push(api::TurnExchange {
                    step: i,
                    kind: s.kind(),
                    line: tessera_runtime::capability::describe(&s),
                    request: s.request.clone(),
                    response: s.response.clone(),
                });
            }
        }
    }
    api::AgentTurn {
        turn: t.turn,
        message: (&t.message).into(),
        seq: t.seq,
        run: t.run.clone(),
        earlier_runs: t.earlier_runs.clone(),
        reply: t.reply.clone(),
        sent: t
            .sent
            .iter()
            .map(|(to, message)| api::SentMessage {
                to: to.clone(),
                message: message.clone(),
            })
            .collect(),
        state: t.state.clone(),
        tokens: t.tokens,
        committed: t.committed.clone(),
        duration_ms: t.duration_ms,
        exchanges,
    }
}

/// An agent id as one path segment: `/` written `%2F`.
pub fn encode_id(id: &str) -> String {
    id.replace('%', "%25").replace('/', "%2F")
}

/// Whether agent `id` is agent `root` or one of its descendants
/// (`root/child`, `root/child/grandchild`, …).
pub fn within(id: &str, root: &str) -> bool {
    id == root
        || id
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Whether `event` concerns agent `root` or one of its descendants.
pub fn event_concerns(event: &AgentEvent, root: &str) -> bool {
    let within = |id: &str| within(id, root);
    match event {
        AgentEvent::Spawned { agent, .. }
        | AgentEvent::Turn { agent, .. }
        | AgentEvent::AttemptFailed { agent, .. }
        | AgentEvent::DeadLetter { agent, .. }
        | AgentEvent::Approval { agent, .. }
        | AgentEvent::Failed { agent, .. } => within(agent),
        AgentEvent::Restarted {
            supervisor, agents, ..
        } => supervisor.as_deref().is_some_and(within) || agents.iter().any(|a| within(a)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_takes_an_agent_and_its_subtree_only() {
        let turn = |agent: &str| AgentEvent::Failed {
            agent: agent.into(),
            reason: String::new(),
        };
        assert!(event_concerns(&turn("a"), "a"));
        assert!(event_concerns(&turn("a/b"), "a"));
        assert!(event_concerns(&turn("a/b/c"), "a/b"));
        assert!(!event_concerns(&turn("ab"), "a"));
        assert!(!event_concerns(&turn("b/a"), "a"));
        let restarted = AgentEvent::Restarted {
            supervisor: Some("p".into()),
            agents: vec!["p/x".into()],
            reason: String::new(),
        };
        assert!(event_concerns(&restarted, "p/x"));
        assert!(!event_concerns(&restarted, "q"));
    }

    #[test]
    fn bodies_and_replies_keep_text_and_json_apart() {
        assert_eq!(body_text(&Value::String("hi".into())), "hi");
        assert_eq!(
            body_text(&serde_json::json!({"op": "noop"})),
            r#"{"op":"noop"}"#
        );
        assert_eq!(reply_value(Some("[1,2]")), serde_json::json!([1, 2]));
        assert_eq!(reply_value(Some("plain")), serde_json::json!("plain"));
        assert_eq!(reply_value(None), Value::Null);
        assert_eq!(encode_id("a/b"), "a%2Fb");
    }
}
