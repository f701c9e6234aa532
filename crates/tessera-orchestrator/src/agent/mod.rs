//! Agents: long-lived actors whose state is explicit, each a component
//! exporting `tessera:agent/handler.turn` (see `wit/agent.wit`).
//!
//! An agent is a few records in a store ([`records`]): no instance and no
//! memory in the process while it is idle. A message is delivered into its
//! durable mailbox; the system then runs its turns one message at a time:
//! the turn gets the state the previous turn returned and the message, and
//! returns the new state and a reply. The new state, the advanced mailbox
//! head, the reply and every message the turn sent are written in **one**
//! compare-and-swap of the agent's record (the outbox) — the commit —
//! and only then delivered. After a crash the record says exactly which
//! messages were consumed and which outgoing ones may not have arrived;
//! those are delivered again and de-duplicated by message id at the
//! recipient, so no turn's effects are lost or applied twice inside
//! Tessera.
//!
//! A turn that fails (trap, limit, guest error) is tried again up to the
//! agent's `retries`; then its message becomes a dead letter (listed and
//! re-driven by the user) and its supervisor — the agent that spawned it —
//! applies its `[agent.supervisor]` policy ([`supervise`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tessera_journal::{AgentTurn, Caller, JournalStore};
use tessera_runtime::capability::agent::{ComponentSpec, check_agent_id};
use tessera_runtime::{CallOptions, LoadedComponent};
use tessera_store::{Expect, OrderedWrite, SharedStore, StoreError};
use tokio::sync::{broadcast, oneshot, watch};

use crate::local::Components;
use crate::plan::ComponentRef;

mod link;
pub mod records;
mod supervise;
mod tools;

pub use records::{
    AgentRecord, Approval, DeadLetter, Decision, Envelope, ReplyRecord, Status, TurnRecord,
};

/// How long a message id is remembered for de-duplication.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// How long a reply waits in the store for a sender that asked.
pub const REPLY_TTL: Duration = Duration::from_secs(24 * 3600);

/// The turn function every agent exports.
pub const TURN: &str = "tessera:agent/handler@0.1.0#turn";

/// What went wrong in the agent system.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AgentError {
    /// No agent has this id.
    #[error("no agent `{0}`")]
    NotFound(String),
    /// An agent has this id already.
    #[error("an agent `{0}` exists already")]
    Exists(String),
    /// The id is not valid.
    #[error("{0}")]
    InvalidId(String),
    /// The mailbox is full.
    #[error("the mailbox of `{id}` is full ({capacity} messages): try again when it has drained")]
    MailboxFull {
        /// The agent.
        id: String,
        /// Its capacity.
        capacity: u32,
    },
    /// The agent takes no messages.
    #[error("`{id}` takes no messages: {reason} (restart it with `tessera agents restart {id}`)")]
    Stopped {
        /// The agent.
        id: String,
        /// Why.
        reason: String,
    },
    /// The component cannot be an agent.
    #[error("component `{component}`: {message}")]
    Component {
        /// The component.
        component: String,
        /// What is wrong.
        message: String,
    },
    /// No reply in time.
    #[error("no reply in time")]
    Timeout,
    /// The store failed.
    #[error("agent store: {0}")]
    Store(#[from] StoreError),
    /// A record does not decode.
    #[error("agent store: record `{key}` does not decode: {message}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Something asked for does not exist.
    #[error("{0}")]
    Missing(String),
    /// A request that cannot be done in the agent's current state.
    #[error("{0}")]
    Invalid(String),
}

/// What happens in the agent system, as it happens.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum AgentEvent {
    /// An agent was created.
    Spawned {
        /// Its id.
        agent: String,
        /// Its supervisor.
        parent: Option<String>,
    },
    /// A turn committed.
    Turn {
        /// The agent.
        agent: String,
        /// The turn.
        turn: u64,
        /// The message.
        message: String,
        /// The journal run.
        run: Option<String>,
        /// The reply.
        reply: Option<String>,
        /// Messages sent.
        sent: usize,
        /// How long the commit (the record's compare-and-swap) took, in
        /// microseconds.
        commit_us: u64,
    },
    /// A turn attempt failed.
    AttemptFailed {
        /// The agent.
        agent: String,
        /// The message.
        message: String,
        /// The attempt.
        attempt: u32,
        /// Why.
        error: String,
    },
    /// A message became a dead letter.
    DeadLetter {
        /// The agent.
        agent: String,
        /// The message.
        message: String,
        /// Why.
        error: String,
    },
    /// A turn waits for a person.
    Approval {
        /// The agent.
        agent: String,
        /// The request.
        request: String,
        /// The tool.
        tool: String,
        /// Its arguments.
        arguments: String,
    },
    /// A supervisor restarted agents.
    Restarted {
        /// The supervisor (none: a restart asked by a user).
        supervisor: Option<String>,
        /// The agents restarted.
        agents: Vec<String>,
        /// Why.
        reason: String,
    },
    /// An agent failed for good (its supervisor's intensity was exceeded).
    Failed {
        /// The agent.
        agent: String,
        /// Why.
        reason: String,
    },
}

/// An agent to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnSpec {
    /// Its id.
    pub id: String,
    /// Its component.
    pub component: ComponentSpec,
    /// Its initial state.
    pub state: Option<String>,
    /// Its supervisor (children only).
    pub parent: Option<String>,
    /// Its template (children only).
    pub template: Option<String>,
}

/// An agent as listed: its record and its mailbox depth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentInfo {
    /// The record.
    #[serde(flatten)]
    pub record: AgentRecord,
    /// Messages waiting.
    pub depth: u64,
}

/// How an outside message is sent.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    /// Its id (default: a new one); sending the same id twice delivers once.
    pub id: Option<String>,
    /// Whether the sender will wait for the reply.
    pub expects_reply: bool,
}

pub(crate) struct Inner {
    pub(crate) store: SharedStore,
    pub(crate) components: Arc<dyn Components>,
    pub(crate) journal: Arc<JournalStore>,
    /// Agents being driven in this process, and those woken while driven.
    running: Mutex<(HashSet<String>, HashSet<String>)>,
    /// Senders waiting for replies, by message id.
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<ReplyRecord>>>>,
    /// Per-agent locks: a turn cycle and the control operations (restart,
    /// approval, fork) on the same agent never overlap.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Turn permits per component (its `max_concurrent`): a turn waits
    /// rather than fail when many agents share a component.
    permits: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    events: broadcast::Sender<AgentEvent>,
    active: watch::Sender<usize>,
    via: String,
}

/// The agent system of one process: delivers messages, runs turns,
/// supervises. Cheap to clone.
#[derive(Clone)]
pub struct AgentSystem {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AgentSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSystem").finish_non_exhaustive()
    }
}

pub(crate) fn component_ref(spec: &ComponentSpec) -> ComponentRef {
    if spec.is_file() {
        ComponentRef::File {
            path: spec.component.clone().into(),
            manifest: spec.manifest.clone().map(Into::into),
        }
    } else {
        ComponentRef::Registry(spec.component.clone())
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, AgentError> {
    serde_json::from_slice(bytes).map_err(|e| AgentError::Corrupt {
        key: key.to_string(),
        message: e.to_string(),
    })
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

pub(crate) async fn read_counter(store: &SharedStore, key: &str) -> u64 {
    match store.get(records::BUCKET, key).await {
        Ok(Some(e)) => std::str::from_utf8(&e.value)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

pub(crate) fn emit(inner: &Inner, event: AgentEvent) {
    let _ = inner.events.send(event);
}

/// The record of `id` and its revision.
pub(crate) async fn load(
    inner: &Inner,
    id: &str,
) -> Result<Option<(AgentRecord, u64)>, AgentError> {
    let key = records::agent_key(id);
    match inner.store.get(records::BUCKET, &key).await? {
        None => Ok(None),
        Some(e) => Ok(Some((decode(&key, &e.value)?, e.revision))),
    }
}

async fn commit(inner: &Inner, rec: &AgentRecord, revision: u64) -> Result<u64, AgentError> {
    Ok(inner
        .store
        .put(
            records::BUCKET,
            &records::agent_key(&rec.id),
            &encode(rec),
            Expect::Revision(revision),
            None,
        )
        .await?)
}

/// [`commit`] with a record written before the swap (a turn's or a dead
/// letter's: one past the agent's count is ignored, so a refused swap
/// leaves nothing that counts) and the consumed message removed after it.
/// One transaction on the embedded store; in this order on NATS.
async fn commit_with(
    inner: &Inner,
    rec: &AgentRecord,
    revision: u64,
    entry: (String, Vec<u8>),
    consumed: String,
) -> Result<u64, AgentError> {
    let writes = [
        OrderedWrite::Put {
            key: entry.0,
            value: entry.1,
            expect: Expect::Any,
            ttl: None,
        },
        OrderedWrite::Put {
            key: records::agent_key(&rec.id),
            value: encode(rec),
            expect: Expect::Revision(revision),
            ttl: None,
        },
        OrderedWrite::Delete {
            key: consumed,
            expect: Expect::Any,
        },
    ];
    let done = inner.store.write_in_order(records::BUCKET, &writes).await?;
    Ok(done.get(1).copied().unwrap_or_default())
}

fn lock_of(inner: &Inner, id: &str) -> Arc<tokio::sync::Mutex<()>> {
    inner
        .locks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(id.to_string())
        .or_default()
        .clone()
}

/// Drops an idle agent's lock when nobody holds or waits for it: an idle
/// agent keeps nothing in memory.
fn forget_lock(inner: &Inner, id: &str) {
    let mut locks = inner.locks.lock().unwrap_or_else(|p| p.into_inner());
    if locks.get(id).is_some_and(|l| Arc::strong_count(l) == 1) {
        locks.remove(id);
    }
}

/// Creates an agent's record (its component must load and export
/// [`TURN`]).
pub(crate) async fn spawn(inner: &Arc<Inner>, spec: SpawnSpec) -> Result<AgentRecord, AgentError> {
    check_agent_id(&spec.id).map_err(AgentError::InvalidId)?;
    let loaded = tools::load(inner, &spec.component)
        .await
        .map_err(|message| AgentError::Component {
            component: spec.component.component.clone(),
            message,
        })?;
    turn_function(&loaded).map_err(|message| AgentError::Component {
        component: spec.component.component.clone(),
        message,
    })?;
    let g = loaded.grants();
    let rec = AgentRecord {
        id: spec.id.clone(),
        component: spec.component,
        parent: spec.parent.clone(),
        template: spec.template,
        children: Vec::new(),
        status: Status::Active,
        state: spec.state.clone(),
        initial: spec.state,
        head: 0,
        turns: 0,
        tokens: 0,
        token_budget: token_budget(g),
        outbox: Vec::new(),
        suspended: None,
        restarts: Vec::new(),
        restart_count: 0,
        last_error: None,
        mailbox: g.agent.mailbox,
        retries: g.agent.retries,
        supervisor: g.agent.supervisor,
        created: records::now(),
    };
    match inner
        .store
        .put(
            records::BUCKET,
            &records::agent_key(&rec.id),
            &encode(&rec),
            Expect::Absent,
            None,
        )
        .await
    {
        Ok(_) => {}
        Err(StoreError::Conflict { .. }) => return Err(AgentError::Exists(rec.id)),
        Err(e) => return Err(e.into()),
    }
    emit(
        inner,
        AgentEvent::Spawned {
            agent: rec.id.clone(),
            parent: spec.parent,
        },
    );
    Ok(rec)
}

/// The agent token budget its manifest sets.
fn token_budget(g: &tessera_runtime::Grants) -> Option<u64> {
    g.llm.max_tokens_per_agent
}

/// The turn export of a loaded component.
fn turn_function(c: &LoadedComponent) -> Result<String, String> {
    c.functions()
        .iter()
        .find(|f| f.qualified_name() == TURN || f.qualified_name().ends_with("/handler#turn"))
        .map(|f| f.qualified_name())
        .ok_or_else(|| {
            format!(
                "it does not export `{TURN}`: an agent implements the `tessera:agent/agent` world (wit/agent.wit)"
            )
        })
}

/// How a delivery is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// From outside: durable before the sender is answered; the capacity
    /// is checked.
    External,
    /// From a committed outbox (or an ask, which its turn repeats if it
    /// dies): written lazily — the sender's record keeps the message until
    /// a later write, made durable after these, clears it.
    FromTurn,
}

/// Puts a message in `to`'s mailbox (once per message id) and wakes it.
pub(crate) async fn deliver(
    inner: &Arc<Inner>,
    to: &str,
    envelope: Envelope,
    how: Delivery,
) -> Result<(), AgentError> {
    let check_capacity = how == Delivery::External;
    let store = &inner.store;
    let Some((rec, _)) = load(inner, to).await? else {
        return Err(AgentError::NotFound(to.to_string()));
    };
    if !rec.status.takes_messages() {
        return Err(AgentError::Stopped {
            id: to.to_string(),
            reason: match &rec.status {
                Status::Failed { reason } | Status::Stopped { reason } => reason.clone(),
                _ => String::new(),
            },
        });
    }
    if store
        .get(records::BUCKET, &records::seen_key(to, &envelope.id))
        .await?
        .is_some()
    {
        return Ok(());
    }
    if check_capacity {
        let tail = read_counter(store, &records::tail_key(to)).await;
        if tail.saturating_sub(rec.head) >= u64::from(rec.mailbox) {
            return Err(AgentError::MailboxFull {
                id: to.to_string(),
                capacity: rec.mailbox,
            });
        }
    }
    // The work marker first, as a hint: the durable mail write below makes
    // it durable too.
    store
        .put_hint(records::BUCKET, &records::work_key(to), b"1")
        .await?;
    // The counter lazily in any case: the mail write after it makes it
    // durable (writes become durable in order).
    let seq = store
        .increment_lazy(records::BUCKET, &records::tail_key(to), 1)
        .await? as u64;
    let key = records::mail_key(to, seq);
    let bytes = encode(&envelope);
    match how {
        Delivery::External => {
            store
                .put(records::BUCKET, &key, &bytes, Expect::Any, None)
                .await?
        }
        Delivery::FromTurn => {
            store
                .put_lazy(records::BUCKET, &key, &bytes, Expect::Any, None)
                .await?
        }
    };
    wake(inner, to);
    Ok(())
}

/// Runs `id`'s pending work in this process (once: a wake while it runs
/// makes it look again when done).
pub(crate) fn wake(inner: &Arc<Inner>, id: &str) {
    {
        let mut r = inner.running.lock().unwrap_or_else(|p| p.into_inner());
        if r.0.contains(id) {
            r.1.insert(id.to_string());
            return;
        }
        r.0.insert(id.to_string());
        inner.active.send_modify(|n| *n += 1);
    }
    let inner = inner.clone();
    let id = id.to_string();
    tokio::spawn(async move {
        loop {
            if let Err(e) = drive(&inner, &id).await {
                tracing::warn!(agent = %id, error = %e, "agent turn cycle failed; its work stays queued");
            }
            let mut r = inner.running.lock().unwrap_or_else(|p| p.into_inner());
            if !r.1.remove(&id) {
                r.0.remove(&id);
                forget_lock(&inner, &id);
                inner.active.send_modify(|n| *n -= 1);
                break;
            }
        }
    });
}

/// Waits for the reply to `message`.
pub(crate) async fn wait_reply(
    inner: &Arc<Inner>,
    message: &str,
    timeout: Duration,
) -> Result<ReplyRecord, AgentError> {
    let r = wait_reply_registered(inner, message, timeout).await;
    // A waiter that gave up (a timeout, an error) leaves nothing behind.
    let mut waiters = inner.waiters.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(list) = waiters.get_mut(message) {
        list.retain(|w| !w.is_closed());
        if list.is_empty() {
            waiters.remove(message);
        }
    }
    r
}

async fn wait_reply_registered(
    inner: &Arc<Inner>,
    message: &str,
    timeout: Duration,
) -> Result<ReplyRecord, AgentError> {
    let (tx, mut rx) = oneshot::channel();
    inner
        .waiters
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(message.to_string())
        .or_default()
        .push(tx);
    let deadline = Instant::now() + timeout;
    let key = records::reply_key(message);
    loop {
        // The store too: another process may have answered.
        if let Some(e) = inner.store.get(records::BUCKET, &key).await? {
            return decode(&key, &e.value);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(AgentError::Timeout);
        }
        let wait = (deadline - now).min(Duration::from_millis(250));
        match tokio::time::timeout(wait, &mut rx).await {
            Ok(Ok(r)) => return Ok(r),
            Ok(Err(_)) => {
                let (tx, new_rx) = oneshot::channel();
                rx = new_rx;
                inner
                    .waiters
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(message.to_string())
                    .or_default()
                    .push(tx);
            }
            Err(_) => {}
        }
    }
}

/// Writes the reply of a committed turn (lazily: the turn's record holds
/// it until a later durable write) and hands it to waiting senders.
async fn put_reply(
    inner: &Arc<Inner>,
    message: &str,
    reply: &ReplyRecord,
) -> Result<(), AgentError> {
    inner
        .store
        .put_lazy(
            records::BUCKET,
            &records::reply_key(message),
            &encode(reply),
            Expect::Any,
            Some(REPLY_TTL),
        )
        .await?;
    let waiters = inner
        .waiters
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(message);
    for w in waiters.into_iter().flatten() {
        let _ = w.send(reply.clone());
    }
    Ok(())
}

/// Delivers a committed outbox.
async fn deliver_outbox(
    inner: &Arc<Inner>,
    outbox: &[records::Outgoing],
) -> Result<(), AgentError> {
    for o in outbox {
        match o {
            records::Outgoing::Message { to, envelope } => {
                match deliver(inner, to, envelope.clone(), Delivery::FromTurn).await {
                    Ok(()) => {}
                    // The recipient went away or failed after the send was
                    // accepted: the message is dropped, as the turn log says.
                    Err(e @ (AgentError::NotFound(_) | AgentError::Stopped { .. })) => {
                        tracing::warn!(to = %to, message = %envelope.id, error = %e, "message not delivered");
                    }
                    Err(e) => return Err(e),
                }
            }
            records::Outgoing::Reply { message, reply } => put_reply(inner, message, reply).await?,
        }
    }
    Ok(())
}

/// What one attempt of a turn gave.
enum Attempt {
    Committed,
    Failed(String),
    Suspended,
}

/// Processes `id`'s work: the undelivered outbox, then its messages, one
/// turn at a time, until the mailbox is empty (or a turn waits for a
/// person).
async fn drive(inner: &Arc<Inner>, id: &str) -> Result<(), AgentError> {
    // The revision whose outbox this cycle delivered already.
    let mut delivered = None;
    loop {
        let lock = lock_of(inner, id);
        let guard = lock.lock().await;
        let Some((mut rec, mut revision)) = load(inner, id).await? else {
            inner
                .store
                .delete(records::BUCKET, &records::work_key(id), Expect::Any)
                .await?;
            return Ok(());
        };
        if !rec.outbox.is_empty() && delivered != Some(revision) {
            deliver_outbox(inner, &rec.outbox).await?;
        }
        let waiting = matches!(rec.status, Status::Waiting { .. });
        if waiting && !decided(inner, &rec).await? {
            return Ok(());
        }
        if !rec.status.takes_messages() {
            return Ok(());
        }
        let next = rec.head + 1;
        let tail = read_counter(&inner.store, &records::tail_key(id)).await;
        if next > tail {
            if !rec.outbox.is_empty() {
                // Delivered: cleared lazily, after the deliveries (a crash
                // that loses this brings the outbox back, delivered again
                // and de-duplicated).
                rec.outbox.clear();
                inner
                    .store
                    .put_lazy(
                        records::BUCKET,
                        &records::agent_key(id),
                        &encode(&rec),
                        Expect::Revision(revision),
                        None,
                    )
                    .await?;
            }
            // A hint: a marker that comes back after a crash only wakes an
            // agent that finds nothing to do.
            inner
                .store
                .delete_hint(records::BUCKET, &records::work_key(id))
                .await?;
            // A delivery between the read and the delete: its marker may
            // be the one just removed; put it back and go on.
            if read_counter(&inner.store, &records::tail_key(id)).await > rec.head {
                inner
                    .store
                    .put_hint(records::BUCKET, &records::work_key(id), b"1")
                    .await?;
                continue;
            }
            return Ok(());
        }
        let mkey = records::mail_key(id, next);
        let Some(entry) = inner.store.get(records::BUCKET, &mkey).await? else {
            // The tail moved but the message is not written yet (a
            // delivery in flight, or one that died between the two
            // writes and will be sent again under a new sequence).
            drop(guard);
            if mail_gap_expired(inner, id, next).await? {
                rec = load(inner, id)
                    .await?
                    .map(|(r, v)| {
                        revision = v;
                        r
                    })
                    .ok_or_else(|| AgentError::NotFound(id.to_string()))?;
                if rec.head + 1 == next {
                    rec.head = next;
                    commit(inner, &rec, revision).await?;
                }
            }
            continue;
        };
        let envelope: Envelope = decode(&mkey, &entry.value)?;
        // De-duplication: the first sequence to claim a message id handles
        // it; a later copy is skipped.
        let skey = records::seen_key(id, &envelope.id);
        let claimed = match inner.store.get(records::BUCKET, &skey).await? {
            Some(e) => std::str::from_utf8(&e.value)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|s| s != next),
            None => {
                // A hint: the turn's commit makes it durable; if the process
                // dies before, the message is claimed again at the same
                // sequence.
                inner
                    .store
                    .put_hint_with_ttl(
                        records::BUCKET,
                        &skey,
                        next.to_string().as_bytes(),
                        Some(DEDUP_WINDOW),
                    )
                    .await?;
                false
            }
        };
        if claimed {
            rec.head = next;
            rec.outbox.clear();
            commit(inner, &rec, revision).await?;
            inner.store.delete_hint(records::BUCKET, &mkey).await?;
            continue;
        }
        let started = Instant::now();
        let mut runs = Vec::new();
        let mut attempt = rec
            .suspended
            .as_ref()
            .filter(|s| s.seq == next)
            .map_or(0, |s| s.attempt - 1);
        let outcome = loop {
            attempt += 1;
            match run_turn(
                inner,
                &mut rec,
                &mut revision,
                next,
                &envelope,
                attempt,
                &mut runs,
                started,
            )
            .await?
            {
                Attempt::Committed => break None,
                Attempt::Suspended => break Some(None),
                Attempt::Failed(error) if attempt <= rec.retries => {
                    emit(
                        inner,
                        AgentEvent::AttemptFailed {
                            agent: id.to_string(),
                            message: envelope.id.clone(),
                            attempt,
                            error,
                        },
                    );
                }
                Attempt::Failed(error) => break Some(Some(error)),
            }
        };
        match outcome {
            None => {
                let outbox = rec.outbox.clone();
                drop(guard);
                deliver_outbox(inner, &outbox).await?;
                delivered = Some(revision);
            }
            Some(None) => return Ok(()),
            Some(Some(error)) => {
                emit(
                    inner,
                    AgentEvent::AttemptFailed {
                        agent: id.to_string(),
                        message: envelope.id.clone(),
                        attempt,
                        error: error.clone(),
                    },
                );
                dead_letter(
                    inner, &mut rec, revision, next, &envelope, &error, attempt, runs,
                )
                .await?;
                drop(guard);
                if let Some(parent) = rec.parent.clone() {
                    supervise::child_failed(inner, &parent, id, &error).await?;
                }
            }
        }
    }
}

/// Whether the sequence `seq` of `id`'s mailbox has had no message long
/// enough to be skipped.
async fn mail_gap_expired(inner: &Arc<Inner>, id: &str, seq: u64) -> Result<bool, AgentError> {
    const GRACE: Duration = Duration::from_secs(5);
    let started = Instant::now();
    while started.elapsed() < GRACE {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if inner
            .store
            .get(records::BUCKET, &records::mail_key(id, seq))
            .await?
            .is_some()
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether the approval an agent waits for is decided.
async fn decided(inner: &Arc<Inner>, rec: &AgentRecord) -> Result<bool, AgentError> {
    let Status::Waiting { request } = &rec.status else {
        return Ok(true);
    };
    let key = records::approval_key(&rec.id, request);
    Ok(match inner.store.get(records::BUCKET, &key).await? {
        Some(e) => decode::<Approval>(&key, &e.value)?.decision.is_some(),
        None => true,
    })
}

/// Runs one attempt of the turn for message `seq`, and commits it if it
/// succeeds.
#[allow(clippy::too_many_arguments)]
async fn run_turn(
    inner: &Arc<Inner>,
    rec: &mut AgentRecord,
    revision: &mut u64,
    seq: u64,
    envelope: &Envelope,
    attempt: u32,
    runs: &mut Vec<String>,
    started: Instant,
) -> Result<Attempt, AgentError> {
    let loaded = match tools::load(inner, &rec.component).await {
        Ok(c) => c,
        Err(e) => return Ok(Attempt::Failed(e)),
    };
    let function = match turn_function(&loaded) {
        Ok(f) => f,
        Err(e) => return Ok(Attempt::Failed(e)),
    };
    let turn = rec.turns + 1;
    let run_id = tessera_journal::new_run_id();
    let link = Arc::new(link::TurnLink {
        inner: inner.clone(),
        id: rec.id.clone(),
        parent: rec.parent.clone(),
        turn,
        attempt,
        message: envelope.id.clone(),
        run: run_id.clone(),
        grants: loaded.shared_grants(),
        effects: Mutex::new(link::Effects {
            children: rec.children.clone(),
            ..Default::default()
        }),
    });
    let mut context = BTreeMap::new();
    context.insert("tessera.agent.id".to_string(), rec.id.clone());
    context.insert("tessera.agent.turn".to_string(), turn.to_string());
    context.insert("tessera.agent.message".to_string(), envelope.id.clone());
    context.insert("tessera.idempotency_key".to_string(), envelope.id.clone());
    if let Some(budget) = rec.token_budget {
        context.insert(
            "tessera.agent.tokens_left".to_string(),
            budget.saturating_sub(rec.tokens).to_string(),
        );
    }
    // A turn resumed after an approval answers its first steps from the
    // attempt that stopped, then goes on live.
    let resume = match &rec.suspended {
        Some(s) if s.seq == seq => {
            inner.journal.flush();
            let steps = inner.journal.steps(&s.run).map_err(|e| {
                AgentError::Missing(format!("the stopped turn's run `{}`: {e}", s.run))
            })?;
            Some(Arc::new(tessera_journal::ReplayCursor::new(steps))
                as Arc<dyn tessera_runtime::gateway::ReplaySource>)
        }
        _ => None,
    };
    let args = serde_json::json!({
        "state": rec.state,
        "message": {
            "id": envelope.id,
            "sender": envelope.sender,
            "body": envelope.body,
            "expects-reply": envelope.expects_reply,
        },
    });
    let permits = permits_of(inner, &loaded);
    let _permit = permits.acquire_owned().await.ok();
    // With tracing on, a span per turn: the turn's call (and the tools it
    // calls) hang under it.
    let trace = tessera_runtime::telemetry::enabled().then(|| {
        use opentelemetry::KeyValue;
        tessera_runtime::telemetry::start(
            format!("agent turn {} #{turn}", rec.id),
            opentelemetry::trace::SpanKind::Consumer,
            // The sender's trace goes on here.
            &tessera_runtime::telemetry::from_carrier(&envelope.trace),
            vec![
                KeyValue::new("tessera.agent", rec.id.clone()),
                KeyValue::new(
                    "tessera.agent.turn",
                    i64::try_from(turn).unwrap_or(i64::MAX),
                ),
                KeyValue::new("tessera.agent.message", envelope.id.clone()),
                KeyValue::new("tessera.agent.attempt", i64::from(attempt)),
                KeyValue::new("tessera.run", run_id.clone()),
            ],
        )
    });
    let recorded = tessera_journal::record_call_linked(
        &inner.journal,
        &loaded,
        &function,
        &args,
        CallOptions {
            context: Some(Arc::new(context)),
            agent: Some(link.clone()),
            continue_live: resume.is_some(),
            replay: resume,
            ..CallOptions::default()
        },
        Some(Caller {
            via: inner.via.clone(),
            token: None,
        }),
        None,
        Some(AgentTurn {
            agent: rec.id.clone(),
            turn,
            message: envelope.id.clone(),
            attempt,
            tool: None,
        }),
        Some(run_id.clone()),
    );
    let recorded = match &trace {
        Some(cx) => opentelemetry::context::FutureExt::with_context(recorded, cx.clone()).await,
        None => recorded.await,
    };
    if let Some(cx) = &trace {
        tessera_runtime::telemetry::end(cx, Vec::new(), None);
    }
    drop(_permit);
    let (run, outcome) = match recorded {
        Ok(r) => r,
        Err(e) => return Ok(Attempt::Failed(e.to_string())),
    };
    runs.push(run.clone());
    let used = outcome.usage.values().sum::<u64>();
    let suspended = link
        .effects
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .suspended
        .take();
    let output = match &outcome.result {
        Ok(v) if outcome.guest_error => Err(match v.get("err") {
            Some(serde_json::Value::String(s)) => format!("the turn returned an error: {s}"),
            other => format!("the turn returned an error: {}", other.unwrap_or(v)),
        }),
        Ok(v) => Ok(v.get("ok").cloned().unwrap_or_default()),
        // The guest was stopped where a tool call waits for a person.
        Err(_) if suspended.is_some() => {
            let request = suspended.unwrap_or_default();
            return suspend(inner, rec, revision, seq, attempt, &run, request).await;
        }
        Err(f) => Err(f.to_string()),
    };
    let output = match output {
        Ok(o) => o,
        Err(e) => {
            rec.tokens += used;
            return Ok(Attempt::Failed(e));
        }
    };
    let state = output
        .get("state")
        .and_then(|s| s.as_str())
        .map(str::to_string);
    let reply = output
        .get("reply")
        .and_then(|r| r.as_str())
        .map(str::to_string);
    let fx = std::mem::take(&mut *link.effects.lock().unwrap_or_else(|p| p.into_inner()));
    let mut outbox = fx.outbox;
    let sent: Vec<(String, String)> = outbox
        .iter()
        .filter_map(|o| match o {
            records::Outgoing::Message { to, envelope } => Some((to.clone(), envelope.id.clone())),
            records::Outgoing::Reply { .. } => None,
        })
        .collect();
    if envelope.expects_reply {
        outbox.push(records::Outgoing::Reply {
            message: envelope.id.clone(),
            reply: ReplyRecord::Replied {
                reply: reply.clone(),
                turn,
                run: Some(run.clone()),
            },
        });
    }
    let earlier_runs: Vec<String> = runs[..runs.len() - 1].to_vec();
    let record = TurnRecord {
        turn,
        message: envelope.clone(),
        seq,
        run: Some(run.clone()),
        earlier_runs,
        reply: reply.clone(),
        sent: sent.clone(),
        state: state.clone(),
        tokens: used,
        committed: records::now(),
        duration_ms: started.elapsed().as_millis() as u64,
    };
    rec.state = state;
    rec.head = seq;
    rec.turns = turn;
    rec.tokens += used;
    rec.outbox = outbox;
    rec.children = fx.children;
    rec.suspended = None;
    rec.status = Status::Active;
    // The commit: the turn record, the record's compare-and-swap, the
    // consumed message's removal.
    let committing = Instant::now();
    *revision = commit_with(
        inner,
        rec,
        *revision,
        (records::turn_key(&rec.id, turn), encode(&record)),
        records::mail_key(&rec.id, seq),
    )
    .await?;
    let commit_us = committing.elapsed().as_micros() as u64;
    emit(
        inner,
        AgentEvent::Turn {
            agent: rec.id.clone(),
            turn,
            message: envelope.id.clone(),
            run: Some(run),
            reply,
            sent: sent.len(),
            commit_us,
        },
    );
    Ok(Attempt::Committed)
}

/// Records that the turn for `seq` waits for approval `request`.
async fn suspend(
    inner: &Arc<Inner>,
    rec: &mut AgentRecord,
    revision: &mut u64,
    seq: u64,
    attempt: u32,
    run: &str,
    request: String,
) -> Result<Attempt, AgentError> {
    rec.status = Status::Waiting {
        request: request.clone(),
    };
    rec.suspended = Some(records::Suspended {
        seq,
        request,
        run: run.to_string(),
        attempt,
    });
    *revision = commit(inner, rec, *revision).await?;
    Ok(Attempt::Suspended)
}

/// Moves the message of a failed turn to the dead letters, answers a
/// waiting sender, and consumes it.
#[allow(clippy::too_many_arguments)]
async fn dead_letter(
    inner: &Arc<Inner>,
    rec: &mut AgentRecord,
    revision: u64,
    seq: u64,
    envelope: &Envelope,
    error: &str,
    attempts: u32,
    runs: Vec<String>,
) -> Result<(), AgentError> {
    let dead = DeadLetter {
        message: envelope.clone(),
        seq,
        error: error.to_string(),
        attempts,
        runs,
        failed: records::now(),
    };
    rec.head = seq;
    rec.last_error = Some(error.to_string());
    rec.suspended = None;
    rec.status = Status::Active;
    rec.outbox = if envelope.expects_reply {
        vec![records::Outgoing::Reply {
            message: envelope.id.clone(),
            reply: ReplyRecord::Failed {
                error: error.to_string(),
            },
        }]
    } else {
        Vec::new()
    };
    commit_with(
        inner,
        rec,
        revision,
        (records::dead_key(&rec.id, seq), encode(&dead)),
        records::mail_key(&rec.id, seq),
    )
    .await?;
    emit(
        inner,
        AgentEvent::DeadLetter {
            agent: rec.id.clone(),
            message: envelope.id.clone(),
            error: error.to_string(),
        },
    );
    let outbox = rec.outbox.clone();
    deliver_outbox(inner, &outbox).await
}

fn permits_of(inner: &Inner, c: &LoadedComponent) -> Arc<tokio::sync::Semaphore> {
    inner
        .permits
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(c.digest().to_string())
        .or_insert_with(|| {
            Arc::new(tokio::sync::Semaphore::new(
                c.grants().limits.max_concurrent as usize,
            ))
        })
        .clone()
}

fn new_message_id() -> String {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).unwrap_or_default();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl AgentSystem {
    /// Opens the agent system on `store`, running components from
    /// `components` and recording turns in `journal`; resumes the work a
    /// previous process left (undelivered outboxes, unprocessed mail).
    /// `via` names the host in journal headers (`cli`, `http`, …).
    pub async fn open(
        store: SharedStore,
        components: Arc<dyn Components>,
        journal: Arc<JournalStore>,
        via: &str,
    ) -> Result<Self, AgentError> {
        let (events, _) = broadcast::channel(1024);
        let (active, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            store,
            components,
            journal,
            running: Mutex::new((HashSet::new(), HashSet::new())),
            waiters: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            permits: Mutex::new(HashMap::new()),
            events,
            active,
            via: via.to_string(),
        });
        let sys = Self { inner };
        sys.resume().await?;
        Ok(sys)
    }

    /// Wakes every agent with work left in the store.
    pub async fn resume(&self) -> Result<usize, AgentError> {
        let mut n = 0;
        let mut after = None;
        loop {
            let page = self
                .inner
                .store
                .list(records::BUCKET, "w/", after.as_deref(), 1000)
                .await?;
            for k in &page.keys {
                if let Some(id) = k.strip_prefix("w/") {
                    wake(&self.inner, id);
                    n += 1;
                }
            }
            match page.cursor {
                Some(c) => after = Some(c),
                None => return Ok(n),
            }
        }
    }

    /// Creates a top-level agent.
    pub async fn spawn(
        &self,
        id: &str,
        component: ComponentSpec,
        state: Option<String>,
    ) -> Result<AgentRecord, AgentError> {
        spawn(
            &self.inner,
            SpawnSpec {
                id: id.to_string(),
                component,
                state,
                parent: None,
                template: None,
            },
        )
        .await
    }

    /// Sends a message from outside; returns its id.
    pub async fn send(
        &self,
        to: &str,
        body: &str,
        options: SendOptions,
    ) -> Result<String, AgentError> {
        let id = options.id.unwrap_or_else(new_message_id);
        if id.is_empty() || id.len() > 200 || id.chars().any(char::is_control) {
            return Err(AgentError::Invalid(
                "a message id has 1 to 200 characters, none of them control characters".into(),
            ));
        }
        deliver(
            &self.inner,
            to,
            Envelope {
                id: id.clone(),
                sender: None,
                body: body.to_string(),
                expects_reply: options.expects_reply,
                sent: records::now(),
                trace: tessera_runtime::telemetry::carrier(&opentelemetry::Context::current()),
            },
            Delivery::External,
        )
        .await?;
        Ok(id)
    }

    /// Waits for the reply to a message sent with `expects_reply`.
    pub async fn wait_reply(
        &self,
        message: &str,
        timeout: Duration,
    ) -> Result<ReplyRecord, AgentError> {
        wait_reply(&self.inner, message, timeout).await
    }

    /// Sends a message and waits for its turn's reply.
    pub async fn ask(
        &self,
        to: &str,
        body: &str,
        timeout: Duration,
    ) -> Result<(String, ReplyRecord), AgentError> {
        let id = self
            .send(
                to,
                body,
                SendOptions {
                    id: None,
                    expects_reply: true,
                },
            )
            .await?;
        let r = self.wait_reply(&id, timeout).await?;
        Ok((id, r))
    }

    /// An agent and its mailbox depth.
    pub async fn get(&self, id: &str) -> Result<AgentInfo, AgentError> {
        let (record, _) = load(&self.inner, id)
            .await?
            .ok_or_else(|| AgentError::NotFound(id.to_string()))?;
        let tail = read_counter(&self.inner.store, &records::tail_key(id)).await;
        Ok(AgentInfo {
            depth: tail.saturating_sub(record.head),
            record,
        })
    }

    /// Every agent, by id.
    pub async fn list(&self) -> Result<Vec<AgentInfo>, AgentError> {
        let mut out = Vec::new();
        for key in self.keys("a/").await? {
            if let Some(id) = key.strip_prefix("a/")
                && let Ok(info) = self.get(id).await
            {
                out.push(info);
            }
        }
        Ok(out)
    }

    async fn keys(&self, prefix: &str) -> Result<Vec<String>, AgentError> {
        let mut keys = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .inner
                .store
                .list(records::BUCKET, prefix, after.as_deref(), 1000)
                .await?;
            keys.extend(page.keys);
            match page.cursor {
                Some(c) => after = Some(c),
                None => return Ok(keys),
            }
        }
    }

    async fn values<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<T>, AgentError> {
        let mut out = Vec::new();
        for key in self.keys(prefix).await? {
            if let Some(e) = self.inner.store.get(records::BUCKET, &key).await? {
                out.push(decode(&key, &e.value)?);
            }
        }
        Ok(out)
    }

    /// An agent's committed turns, oldest first.
    pub async fn turns(&self, id: &str) -> Result<Vec<TurnRecord>, AgentError> {
        let info = self.get(id).await?;
        let mut turns: Vec<TurnRecord> = self.values(&records::turn_prefix(id)).await?;
        // Records past `turns` belong to attempts that never committed.
        turns.retain(|t| t.turn <= info.record.turns);
        Ok(turns)
    }

    /// An agent's dead letters, oldest first.
    pub async fn dead_letters(&self, id: &str) -> Result<Vec<DeadLetter>, AgentError> {
        let info = self.get(id).await?;
        let mut dead: Vec<DeadLetter> = self.values(&records::dead_prefix(id)).await?;
        // One past the head belongs to a commit that did not happen.
        dead.retain(|d| d.seq <= info.record.head);
        Ok(dead)
    }

    /// Sends dead letters back to the agent's mailbox (all, or the one at
    /// `seq`) under new message ids; returns them.
    pub async fn redrive(&self, id: &str, seq: Option<u64>) -> Result<Vec<String>, AgentError> {
        let mut out = Vec::new();
        for d in self.dead_letters(id).await? {
            if seq.is_some_and(|s| s != d.seq) {
                continue;
            }
            let new_id = format!("{}~redrive{}", d.message.id, d.seq);
            deliver(
                &self.inner,
                id,
                Envelope {
                    id: new_id.clone(),
                    sent: records::now(),
                    ..d.message.clone()
                },
                Delivery::External,
            )
            .await?;
            self.inner
                .store
                .delete(records::BUCKET, &records::dead_key(id, d.seq), Expect::Any)
                .await?;
            out.push(new_id);
        }
        if out.is_empty() && seq.is_some() {
            return Err(AgentError::Missing(format!(
                "`{id}` has no dead letter at sequence {}",
                seq.unwrap_or_default()
            )));
        }
        Ok(out)
    }

    /// An agent's approval requests.
    pub async fn approvals(&self, id: &str) -> Result<Vec<Approval>, AgentError> {
        self.get(id).await?;
        self.values(&records::approval_prefix(id)).await
    }

    /// Decides an approval request; the waiting turn then goes on.
    pub async fn decide(
        &self,
        id: &str,
        request: &str,
        approved: bool,
        by: Option<String>,
        reason: Option<String>,
    ) -> Result<Approval, AgentError> {
        let key = records::approval_key(id, request);
        let Some(e) = self.inner.store.get(records::BUCKET, &key).await? else {
            return Err(AgentError::Missing(format!(
                "`{id}` has no approval request `{request}`"
            )));
        };
        let mut a: Approval = decode(&key, &e.value)?;
        if let Some(d) = &a.decision {
            return Err(AgentError::Invalid(format!(
                "approval request `{request}` was already {} at {}",
                if d.approved { "approved" } else { "rejected" },
                d.at
            )));
        }
        a.decision = Some(Decision {
            approved,
            by,
            reason,
            at: records::now(),
        });
        self.inner
            .store
            .put(
                records::BUCKET,
                &key,
                &encode(&a),
                Expect::Revision(e.revision),
                None,
            )
            .await
            .map_err(|e| match e {
                StoreError::Conflict { .. } => AgentError::Invalid(format!(
                    "approval request `{request}` was decided meanwhile"
                )),
                other => other.into(),
            })?;
        self.inner
            .store
            .put_hint(records::BUCKET, &records::work_key(id), b"1")
            .await?;
        wake(&self.inner, id);
        Ok(a)
    }

    /// A new top-level agent `as_id` with `id`'s component and its state
    /// after turn `at` (0: its initial state), and the turn log up to
    /// there; nothing is run again.
    pub async fn fork(&self, id: &str, at: u64, as_id: &str) -> Result<AgentRecord, AgentError> {
        check_agent_id(as_id).map_err(AgentError::InvalidId)?;
        let info = self.get(id).await?;
        if at > info.record.turns {
            return Err(AgentError::Missing(format!(
                "`{id}` has {} turns; there is no turn {at} to fork at",
                info.record.turns
            )));
        }
        let turns: Vec<TurnRecord> = self
            .turns(id)
            .await?
            .into_iter()
            .filter(|t| t.turn <= at)
            .collect();
        let state = match turns.last() {
            Some(t) if at > 0 => t.state.clone(),
            _ => info.record.initial.clone(),
        };
        let tokens = turns.iter().map(|t| t.tokens).sum();
        let rec = AgentRecord {
            id: as_id.to_string(),
            parent: None,
            template: None,
            children: Vec::new(),
            status: Status::Active,
            state,
            head: 0,
            turns: at,
            tokens,
            outbox: Vec::new(),
            suspended: None,
            restarts: Vec::new(),
            restart_count: 0,
            last_error: None,
            created: records::now(),
            ..info.record
        };
        for t in &turns {
            self.inner
                .store
                .put_hint(
                    records::BUCKET,
                    &records::turn_key(as_id, t.turn),
                    &encode(t),
                )
                .await?;
            for run in t.run.iter().chain(&t.earlier_runs) {
                let _ = self
                    .inner
                    .journal
                    .hold(run, &tessera_journal::agent_holder(as_id));
            }
        }
        match self
            .inner
            .store
            .put(
                records::BUCKET,
                &records::agent_key(as_id),
                &encode(&rec),
                Expect::Absent,
                None,
            )
            .await
        {
            Ok(_) => {}
            Err(StoreError::Conflict { .. }) => return Err(AgentError::Exists(as_id.to_string())),
            Err(e) => return Err(e.into()),
        }
        emit(
            &self.inner,
            AgentEvent::Spawned {
                agent: as_id.to_string(),
                parent: None,
            },
        );
        Ok(rec)
    }

    /// Restarts an agent (and its subtree): state back to its initial
    /// state, status active, mailbox kept.
    pub async fn restart(&self, id: &str) -> Result<(), AgentError> {
        self.get(id).await?;
        supervise::restart(&self.inner, id, "restarted by a user").await?;
        emit(
            &self.inner,
            AgentEvent::Restarted {
                supervisor: None,
                agents: vec![id.to_string()],
                reason: "restarted by a user".into(),
            },
        );
        Ok(())
    }

    /// How many agents this process keeps anything of in memory (a turn
    /// cycle running, a lock) and how many senders wait for replies: 0 once
    /// every agent is idle and nobody waits.
    pub fn resident(&self) -> usize {
        let waiting = self
            .inner
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        let running = self
            .inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .len();
        let locks = self
            .inner
            .locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        running.max(locks) + waiting
    }

    /// Events from now on.
    pub fn events(&self) -> broadcast::Receiver<AgentEvent> {
        self.inner.events.subscribe()
    }

    /// Resolves when no agent has work in this process.
    pub async fn idle(&self) {
        let mut rx = self.inner.active.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// The journal the turns are recorded in.
    pub fn journal(&self) -> &Arc<JournalStore> {
        &self.inner.journal
    }
}
