//! Replay: a recorded run executed again offline, every host interaction
//! answered from the journal; and time travel, a replay stopped at a step.

use std::path::Path;
use std::sync::Arc;

use tessera_runtime::gateway::{Divergence, ReplaySource, Step};
use tessera_runtime::{CallOptions, CallOutcome, LoadedComponent, Runtime};

use crate::format::{End, Header, RunResult};
use crate::record::end_of;
use crate::{Error, JournalStore};

/// Answers a replayed call from a run's steps.
#[derive(Debug)]
pub struct ReplayCursor {
    steps: std::collections::BTreeMap<u64, Step>,
}

impl ReplayCursor {
    /// A cursor over steps (index, step); gaps answer `None`.
    pub fn new(steps: Vec<(u64, Step)>) -> Self {
        Self {
            steps: steps.into_iter().collect(),
        }
    }
}

impl ReplaySource for ReplayCursor {
    fn recorded(&self, index: u64) -> Option<&Step> {
        self.steps.get(&index)
    }
}

/// What a replay found.
#[derive(Debug, Clone)]
pub struct ReplayReport {
    /// The run.
    pub run_id: String,
    /// Steps in the journal.
    pub recorded_steps: u64,
    /// Whether the run was complete when recorded.
    pub complete: bool,
    /// The first divergence, if any (interactions, result or fuel).
    pub divergence: Option<ReplayDivergence>,
    /// The replayed outcome.
    pub outcome: CallOutcome,
}

/// Where a replay departed from its recording.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplayDivergence {
    /// The guest asked for a different interaction.
    Interaction(Divergence),
    /// Same interactions, different result.
    Result {
        /// Recorded.
        recorded: RunResult,
        /// Replayed.
        replayed: RunResult,
    },
    /// Same interactions and result, different fuel.
    Fuel {
        /// Recorded.
        recorded: u64,
        /// Replayed.
        replayed: u64,
    },
}

impl std::fmt::Display for ReplayDivergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayDivergence::Interaction(d) => write!(f, "{d}"),
            ReplayDivergence::Result { recorded, replayed } => write!(
                f,
                "result differs: recorded {}, replayed {}",
                serde_json::to_string(recorded).unwrap_or_default(),
                serde_json::to_string(replayed).unwrap_or_default()
            ),
            ReplayDivergence::Fuel { recorded, replayed } => {
                write!(f, "fuel differs: recorded {recorded}, replayed {replayed}")
            }
        }
    }
}

/// A recorded run made ready to run again: its component loaded with the
/// recorded grants (mounts rebuilt from the journal in a scratch directory).
struct Prepared {
    run_id: String,
    header: Header,
    end: Option<End>,
    steps: Vec<(u64, Step)>,
    loaded: LoadedComponent,
    _scratch: tempfile::TempDir,
}

/// Which component a replay runs.
enum Which<'a> {
    /// The recorded one: the stored copy, or this file (refused unless it
    /// is byte-for-byte the recorded component).
    Recorded(Option<&'a Path>),
    /// Another version: these bytes, whatever their digest.
    Other(Vec<u8>, &'a str),
}

async fn prepare(
    runtime: &Runtime,
    store: &JournalStore,
    run_id: &str,
    component: Option<&Path>,
) -> Result<Prepared, Error> {
    prepare_which(runtime, store, run_id, Which::Recorded(component)).await
}

async fn prepare_which(
    runtime: &Runtime,
    store: &JournalStore,
    run_id: &str,
    which: Which<'_>,
) -> Result<Prepared, Error> {
    let run_id = store.resolve(run_id)?;
    let header = store.header(&run_id)?;
    let end = store.end(&run_id)?;
    let steps = store.steps(&run_id)?;
    let component = match which {
        Which::Recorded(c) => c,
        Which::Other(bytes, origin) => {
            // Judged (trust policy) and named as the recorded component.
            let name = tessera_runtime::name_of(&header.component.origin);
            let prepared = runtime.prepare_named(bytes, origin, &name)?;
            return finish_prepare(runtime, run_id, header, end, steps, prepared).await;
        }
    };
    let bytes = match component {
        Some(p) => {
            let b = std::fs::read(p).map_err(|e| Error::Io(p.to_path_buf(), e))?;
            let actual = tessera_runtime::digest_of(&b);
            if actual != header.component.digest {
                return Err(Error::ComponentMismatch {
                    recorded: header.component.digest.clone(),
                    given: p.display().to_string(),
                    actual,
                });
            }
            b
        }
        None => store
            .blob(&header.component.digest)?
            .ok_or_else(|| Error::ComponentMissing(header.component.digest.clone()))?,
    };
    let prepared = runtime.prepare(bytes, &header.component.origin)?;
    if prepared.digest != header.component.digest {
        return Err(Error::ComponentMismatch {
            recorded: header.component.digest.clone(),
            given: "the stored component".into(),
            actual: prepared.digest,
        });
    }
    finish_prepare(runtime, run_id, header, end, steps, prepared).await
}

/// Loads `prepared` with the run's grants, its mounts rebuilt.
async fn finish_prepare(
    runtime: &Runtime,
    run_id: String,
    header: Header,
    end: Option<End>,
    steps: Vec<(u64, Step)>,
    prepared: tessera_runtime::Prepared,
) -> Result<Prepared, Error> {
    // Replay touches no host resource: each capability adapts its grant
    // (files rebuild each mount in a scratch directory from the contents
    // and listings the journal captured, so the guest reads what it read
    // when recorded).
    let scratch = tempfile::Builder::new()
        .prefix("tessera-replay-")
        .tempdir()
        .map_err(|e| Error::Io(std::env::temp_dir(), e))?;
    let grants = header
        .grants
        .for_replay(&steps, scratch.path())
        .map_err(|m| Error::Corrupt(format!("run {run_id}: rebuilding the mounts: {m}")))?;
    let rt = runtime.clone();
    let loaded = tokio::task::spawn_blocking(move || rt.load(&prepared, grants))
        .await
        .map_err(|source| Error::Task {
            what: "the load task",
            source,
        })??;
    Ok(Prepared {
        run_id,
        header,
        end,
        steps,
        loaded,
        _scratch: scratch,
    })
}

/// Re-executes a recorded run offline: the same component bytes (from the
/// store, or `component` if given — refused unless its digest matches),
/// every host interaction answered from the journal.
pub async fn replay(
    runtime: &Runtime,
    store: &JournalStore,
    run_id: &str,
    component: Option<&Path>,
) -> Result<ReplayReport, Error> {
    let p = prepare(runtime, store, run_id, component).await?;
    replay_prepared(p).await
}

/// Runs another version of a recorded run's component (`bytes`, from
/// `origin`) against the recording, offline: the same function, arguments
/// and grants, every host interaction the new version asks for answered
/// from the journal while it asks for what the recorded version did. The
/// report's divergence says where it departs: the first interaction it
/// asks for differently, else its result, else its fuel.
pub async fn replay_version(
    runtime: &Runtime,
    store: &JournalStore,
    run_id: &str,
    bytes: Vec<u8>,
    origin: &str,
) -> Result<ReplayReport, Error> {
    let p = prepare_which(runtime, store, run_id, Which::Other(bytes, origin)).await?;
    replay_prepared(p).await
}

async fn replay_prepared(p: Prepared) -> Result<ReplayReport, Error> {
    let recorded_steps = p.steps.len() as u64;
    let cursor = Arc::new(ReplayCursor::new(p.steps));
    let options = CallOptions {
        replay: Some(cursor),
        ..CallOptions::default()
    };
    let handler = p.loaded.http_handler().map(|f| f.qualified_name());
    let outcome = if handler.as_deref() == Some(p.header.function.as_str()) {
        // An HTTP handler's run: the request it was given, again.
        let request: tessera_runtime::http_handler::HttpRequest =
            serde_json::from_value(p.header.args.clone())
                .map_err(|e| Error::Corrupt(format!("run {}: the HTTP request: {e}", p.run_id)))?;
        p.loaded.handle_http(&request, options).await?.0
    } else {
        p.loaded
            .call_json_with(&p.header.function, &p.header.args, options)
            .await?
    };
    let divergence = compare(&outcome, p.end.as_ref());
    Ok(ReplayReport {
        run_id: p.run_id,
        recorded_steps,
        complete: p.end.is_some(),
        divergence,
        outcome,
    })
}

/// Where a replayed outcome departs from the recorded end: first the
/// interactions, then the result, then the fuel.
pub(crate) fn compare(outcome: &CallOutcome, end: Option<&End>) -> Option<ReplayDivergence> {
    if let Some(d) = outcome.divergence.clone() {
        return Some(ReplayDivergence::Interaction(d));
    }
    let end = end?;
    let replayed = end_of(outcome);
    if end.result != replayed.result {
        Some(ReplayDivergence::Result {
            recorded: end.result.clone(),
            replayed: replayed.result,
        })
    } else if end.fuel_consumed != replayed.fuel_consumed {
        Some(ReplayDivergence::Fuel {
            recorded: end.fuel_consumed,
            replayed: replayed.fuel_consumed,
        })
    } else {
        None
    }
}

/// Answers steps before `stop` and nothing from `stop` on, so a replay halts
/// when the guest asks for step `stop`.
struct StopAt {
    cursor: ReplayCursor,
    stop: u64,
}

impl ReplaySource for StopAt {
    fn recorded(&self, index: u64) -> Option<&Step> {
        if index >= self.stop {
            None
        } else {
            self.cursor.recorded(index)
        }
    }
}

/// The guest's state at one step of a recorded run.
#[derive(Debug, Clone)]
pub struct StepState {
    /// The run.
    pub run_id: String,
    /// The step asked for.
    pub at: u64,
    /// Whether the guest reached that step (`false`: the run ended first,
    /// and the state is the final one).
    pub reached: bool,
    /// The interaction the guest was about to make at `at`, if it reached it.
    pub next: Option<Step>,
    /// Memories and globals.
    pub snapshot: tessera_runtime::Snapshot,
}

/// Replays a run until the guest asks for step `at` (steps `0..at` are
/// answered), stops it there and snapshots its memories and globals.
/// `runtime` must be created with `RuntimeConfig::guest_debug`.
pub async fn state_at(
    runtime: &Runtime,
    store: &JournalStore,
    run_id: &str,
    at: u64,
) -> Result<StepState, Error> {
    let p = prepare(runtime, store, run_id, None).await?;
    let source = Arc::new(StopAt {
        cursor: ReplayCursor::new(p.steps),
        stop: at,
    });
    let outcome = p
        .loaded
        .call_json_with(
            &p.header.function,
            &p.header.args,
            CallOptions {
                replay: Some(source),
                snapshot: true,
                ..CallOptions::default()
            },
        )
        .await?;
    let stopped = outcome.divergence.as_ref().filter(|d| d.index == at);
    let snapshot = outcome.snapshot.clone().unwrap_or_default();
    if snapshot.memories.is_empty() {
        return Err(Error::NoGuestState);
    }
    Ok(StepState {
        run_id: p.run_id,
        at,
        reached: stopped.is_some(),
        next: stopped.and_then(|d| d.actual.as_deref().cloned()),
        snapshot,
    })
}
