//! What an agent system keeps in its store, and under which keys.
//!
//! Everything lives in one bucket ([`BUCKET`]). An agent id may hold `/`
//! (children are `parent/child`), so per-agent lists use `#`, which ids
//! never hold, between the id and the entry:
//!
//! | key | value |
//! | --- | --- |
//! | `a/<id>` | [`AgentRecord`]: state, mailbox head, pending outbox, tree links — the one key a turn commits (compare-and-swap on its revision) |
//! | `q/<id>` | the mailbox's tail: a counter each delivery increments |
//! | `m/<id>#<seq>` | [`Envelope`]: one message, at its mailbox sequence |
//! | `s/<id>#<message id>` | the sequence that claimed a message id (de-duplication; kept for the de-duplication window) |
//! | `t/<id>#<turn>` | [`TurnRecord`]: one committed turn |
//! | `d/<id>#<seq>` | [`DeadLetter`]: a message whose turn failed |
//! | `p/<id>#<request>` | [`Approval`]: a tool call waiting for a person, or decided |
//! | `r/<message id>` | [`ReplyRecord`]: the reply to a message whose sender waits |
//! | `w/<id>` | present while the agent has work (mail or an undelivered outbox): what a restarted host resumes |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tessera_runtime::capability::agent::{ComponentSpec, SupervisorPolicy};

/// The bucket of every agent system record.
pub const BUCKET: &str = "tessera-agents";

/// `a/<id>`.
pub fn agent_key(id: &str) -> String {
    format!("a/{id}")
}

/// `q/<id>`.
pub fn tail_key(id: &str) -> String {
    format!("q/{id}")
}

/// `m/<id>#<seq>`.
pub fn mail_key(id: &str, seq: u64) -> String {
    format!("m/{id}#{seq:012}")
}

/// `s/<id>#<message>`.
pub fn seen_key(id: &str, message: &str) -> String {
    format!("s/{id}#{message}")
}

/// `t/<id>#<turn>`.
pub fn turn_key(id: &str, turn: u64) -> String {
    format!("t/{id}#{turn:010}")
}

/// The prefix of an agent's turn records.
pub fn turn_prefix(id: &str) -> String {
    format!("t/{id}#")
}

/// `d/<id>#<seq>`.
pub fn dead_key(id: &str, seq: u64) -> String {
    format!("d/{id}#{seq:012}")
}

/// The prefix of an agent's dead letters.
pub fn dead_prefix(id: &str) -> String {
    format!("d/{id}#")
}

/// `p/<id>#<request>`.
pub fn approval_key(id: &str, request: &str) -> String {
    format!("p/{id}#{request}")
}

/// The prefix of an agent's approval requests.
pub fn approval_prefix(id: &str) -> String {
    format!("p/{id}#")
}

/// `r/<message>`.
pub fn reply_key(message: &str) -> String {
    format!("r/{message}")
}

/// `w/<id>`.
pub fn work_key(id: &str) -> String {
    format!("w/{id}")
}

/// Where an agent is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Status {
    /// Takes messages (idle or in a turn).
    Active,
    /// A turn waits for a person to decide an approval request; messages
    /// queue behind it.
    Waiting {
        /// The request.
        request: String,
    },
    /// Failed for good (its supervisor gave up, or it has none and its
    /// children's restarts exceeded its intensity): takes no messages
    /// until restarted.
    Failed {
        /// Why.
        reason: String,
    },
    /// Stopped with its failed supervisor.
    Stopped {
        /// Why.
        reason: String,
    },
}

impl Status {
    /// Whether it takes messages.
    pub fn takes_messages(&self) -> bool {
        matches!(self, Status::Active | Status::Waiting { .. })
    }

    /// A short name (`active`, `waiting`, `failed`, `stopped`).
    pub fn name(&self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Waiting { .. } => "waiting",
            Status::Failed { .. } => "failed",
            Status::Stopped { .. } => "stopped",
        }
    }
}

/// A message leaving a committed turn, delivered after the commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Outgoing {
    /// A message to an agent.
    Message {
        /// The recipient.
        to: String,
        /// The envelope.
        envelope: Envelope,
    },
    /// The reply to a message whose sender waits.
    Reply {
        /// The message it answers.
        message: String,
        /// The reply.
        reply: ReplyRecord,
    },
}

/// A turn being resumed after an approval decision: the message it
/// handles and the journal run whose steps it replays first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspended {
    /// The mailbox sequence of the message.
    pub seq: u64,
    /// The approval request.
    pub request: String,
    /// The journal run of the attempt that stopped.
    pub run: String,
    /// Its attempt number.
    pub attempt: u32,
}

/// `a/<id>`: everything a turn needs and commits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Its id.
    pub id: String,
    /// Its component.
    pub component: ComponentSpec,
    /// Its supervisor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The template it was spawned from (children).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Its children, in spawn order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<String>,
    /// Where it is in its life.
    #[serde(flatten)]
    pub status: Status,
    /// The state its last turn returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The state it starts from (and restarts to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<String>,
    /// The last mailbox sequence consumed.
    pub head: u64,
    /// Committed turns.
    pub turns: u64,
    /// LLM tokens used by its turns.
    #[serde(default)]
    pub tokens: u64,
    /// Its token budget (`[llm] max_tokens_per_agent`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_budget: Option<u64>,
    /// Messages and replies of the last turn not yet known delivered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<Outgoing>,
    /// A turn stopped for an approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended: Option<Suspended>,
    /// When its children were restarted (Unix ms), for the intensity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restarts: Vec<i64>,
    /// How many times it was restarted.
    #[serde(default)]
    pub restart_count: u64,
    /// The last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Mailbox capacity.
    pub mailbox: u32,
    /// Attempts of a failing turn before it counts as failed.
    pub retries: u32,
    /// How it supervises its children.
    pub supervisor: SupervisorPolicy,
    /// When it was created (RFC 3339).
    pub created: String,
}

/// One message in a mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique id (de-duplication).
    pub id: String,
    /// The sending agent (none: from outside).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// The body.
    pub body: String,
    /// Whether the sender waits for the reply.
    #[serde(default)]
    pub expects_reply: bool,
    /// When it was sent (RFC 3339).
    pub sent: String,
    /// The sender's trace context (W3C `traceparent`, `tracestate`) when
    /// tracing was on: the turn that takes the message continues that
    /// trace. Never shown to the agent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub trace: BTreeMap<String, String>,
}

/// `r/<message>`: how a turn answered a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum ReplyRecord {
    /// The turn committed, with or without a reply.
    Replied {
        /// The reply.
        reply: Option<String>,
        /// The turn.
        turn: u64,
        /// Its journal run.
        run: Option<String>,
    },
    /// The turn failed for good (the message is a dead letter).
    Failed {
        /// Why.
        error: String,
    },
}

/// `t/<id>#<turn>`: one committed turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnRecord {
    /// The turn's number (1-based).
    pub turn: u64,
    /// The message it handled.
    pub message: Envelope,
    /// Its mailbox sequence.
    pub seq: u64,
    /// The journal run of the committed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// Journal runs of attempts that failed or stopped before it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_runs: Vec<String>,
    /// The reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// Messages it sent: (recipient, message id).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sent: Vec<(String, String)>,
    /// The state it returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// LLM tokens it used.
    #[serde(default)]
    pub tokens: u64,
    /// When it committed (RFC 3339).
    pub committed: String,
    /// How long it took, attempts included (ms).
    pub duration_ms: u64,
}

/// `d/<id>#<seq>`: a message whose turn failed for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The message.
    pub message: Envelope,
    /// Its mailbox sequence.
    pub seq: u64,
    /// The last error.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// The journal runs of the attempts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<String>,
    /// When (RFC 3339).
    pub failed: String,
}

/// `p/<id>#<request>`: a tool call that needs a person's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Its id.
    pub request: String,
    /// The agent.
    pub agent: String,
    /// The tool.
    pub tool: String,
    /// Its arguments (JSON text).
    pub arguments: String,
    /// The turn that asked.
    pub turn: u64,
    /// When it was asked (RFC 3339).
    pub asked: String,
    /// The decision, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

/// A person's decision on an approval request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Approved or not.
    pub approved: bool,
    /// Who decided (a token id, `cli`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When (RFC 3339).
    pub at: String,
}

/// Now, as RFC 3339.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}
