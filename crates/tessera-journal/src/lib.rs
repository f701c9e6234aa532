//! Tessera's journal: every run recorded, any run replayed.
//!
//! Recording plugs into the runtime's gateway as an
//! [`InteractionObserver`]: every host interaction of a call (clock reads,
//! random bytes, environment, stdout/stderr, logs, HTTP exchanges with full
//! responses, file operations) becomes a step in the run's journal, written
//! append-only to the embedded store while the call runs.
//!
//! Replaying plugs into the same gateway as a [`ReplaySource`]: the same
//! component bytes run again, and every value the host would have supplied
//! comes from the journal instead. The gateway checks that the guest asks
//! for the same interactions in the same order with the same arguments; the
//! replay then checks the result and the fuel consumed.
#![deny(missing_docs)]

pub mod format;
mod prune;
mod record;
mod replay;
pub mod retention;
mod session;
mod store;

use std::path::PathBuf;

use tessera_runtime::gateway::Step;

pub use format::{
    AgentTurn, Caller, ComponentRef, End, EngineSettings, Header, LinkedFrom, PlanStep, RunResult,
    SessionLink, ToolLink,
};
pub use prune::{ComponentStats, HeldRun, JournalStats, PruneReport, PrunedRun, component_name};
pub use record::{
    end_of, new_run_id, record_call, record_call_for, record_call_linked, record_call_with,
    record_http,
};
pub use replay::{
    ReplayCursor, ReplayDivergence, ReplayReport, StepState, replay, replay_version, state_at,
};
pub use retention::{Limits, Retention, RetentionError};
pub use session::{
    ForkPoint, JournaledSession, MAX_SESSION_NAME, Reexecuted, SessionRecord, SessionReplay,
    check_session_name, replay_session_run, session_holder,
};
pub use store::{
    Hold, JournalStore, MAX_IMPORT_LINE, MAX_STEP_INDEX, PIN, RunSummary, agent_holder, plan_holder,
};

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store could not be read or written.
    #[error("journal store: {0}")]
    Store(#[from] redb::Error),
    /// A record could not be encoded.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The serializer's error.
        source: serde_json::Error,
    },
    /// A background task (loading the component to replay) failed.
    #[error("{what} failed: {source}")]
    Task {
        /// What the task was doing.
        what: &'static str,
        /// Why it ended.
        source: tokio::task::JoinError,
    },
    /// Time travel needs a runtime created with `guest_debug`.
    #[error("no guest state available: the runtime was not created with guest_debug")]
    NoGuestState,
    /// A file could not be read or written.
    #[error("{path}: {source}", path = .0.display(), source = .1)]
    Io(PathBuf, std::io::Error),
    /// A journal (or export file) is damaged.
    #[error("corrupt journal: {0}")]
    Corrupt(String),
    /// The journal was written by a newer (or unknown) format version.
    #[error("journal format version {0} is not supported (this build reads version {supported})", supported = format::VERSION)]
    UnsupportedVersion(u64),
    /// No run has that id.
    #[error("no run `{0}`")]
    NoSuchRun(String),
    /// The prefix matches several runs.
    #[error("`{0}` matches several runs: {1}")]
    Ambiguous(String, String),
    /// The component to replay is not the one recorded.
    #[error("component mismatch: the run recorded {recorded}, but {given} is {actual}")]
    ComponentMismatch {
        /// The recorded digest.
        recorded: String,
        /// Where the offered component came from.
        given: String,
        /// Its digest.
        actual: String,
    },
    /// The recorded component's bytes are not in the store.
    #[error("the component {0} of this run is not in the store; pass it with --component")]
    ComponentMissing(String),
    /// Not a session name.
    #[error("`{0}` is not a session name: use 1 to 64 letters, digits, `.`, `_` or `-`")]
    BadSessionName(String),
    /// A session of that name exists.
    #[error("a session named `{0}` exists already")]
    SessionExists(String),
    /// No session has that name (or it belongs to someone else).
    #[error("no session `{0}`")]
    NoSuchSession(String),
    /// Another process or task added a run to the session meanwhile.
    #[error(
        "session `{name}` moved on while this run ran: it had {expected} runs, it now has {found}; open it again"
    )]
    SessionMoved {
        /// The session.
        name: String,
        /// Runs when this run started.
        expected: u64,
        /// Runs now.
        found: u64,
    },
    /// A fork point past the end of the history.
    #[error("session `{name}` has {runs} runs: cannot fork it at {at}")]
    ForkBeyondHistory {
        /// The session.
        name: String,
        /// The point asked for.
        at: u64,
        /// Its runs.
        runs: u64,
    },
    /// The session can take no more runs.
    #[error("session `{name}` ended at run {runs}: {reason}; a fork at {at} goes on from before that run", at = .runs.saturating_sub(1))]
    SessionEnded {
        /// The session.
        name: String,
        /// Why.
        reason: String,
        /// Runs in its history (the last one ended it).
        runs: u64,
    },
    /// The session cannot be rebuilt from its history.
    #[error("session `{name}` cannot be rebuilt from the journal: {reason}")]
    SessionNotRebuildable {
        /// The session.
        name: String,
        /// Why.
        reason: String,
    },
    /// Re-executing the session's history departed from the recording.
    #[error(
        "session `{name}`: re-executing run {seq} ({run}) departed from its recording: {divergence}"
    )]
    SessionDiverged {
        /// The session.
        name: String,
        /// The run's position (1-based).
        seq: u64,
        /// The run.
        run: String,
        /// How.
        divergence: String,
    },
    /// The runtime refused to load or call.
    #[error(transparent)]
    Runtime(#[from] tessera_runtime::Error),
}

/// One human-readable line for a step (`tessera runs show`), rendered by
/// the capability that made it.
pub fn describe_step(index: u64, step: &Step) -> String {
    format!(
        "{index:>6}  {}",
        tessera_runtime::capability::describe(step)
    )
}
