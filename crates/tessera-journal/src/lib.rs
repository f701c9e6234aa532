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
mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use tessera_runtime::gateway::{CallScope, Divergence, InteractionObserver, ReplaySource, Step};
use tessera_runtime::{CallFailure, CallOptions, CallOutcome, LoadedComponent, Runtime};

pub use format::{Caller, ComponentRef, End, EngineSettings, Header, RunResult};
pub use store::{JournalStore, RunSummary};

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
    /// A background task failed.
    #[error("{0}")]
    Task(String),
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
    /// The runtime refused to load or call.
    #[error(transparent)]
    Runtime(#[from] tessera_runtime::Error),
}

/// A new run id: UTC time, then random hex (sorts by start time).
pub fn new_run_id() -> String {
    let now = time::OffsetDateTime::now_utc();
    let mut r = [0u8; 4];
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(now.unix_timestamp_nanos() as u128);
    r.copy_from_slice(&h.finish().to_le_bytes()[..4]);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}-{}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        hex::encode(r)
    )
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Streams one run's steps into the store.
struct Recorder {
    buffer: Arc<store::RunBuffer>,
    also: Option<Arc<dyn InteractionObserver>>,
}

impl InteractionObserver for Recorder {
    fn observe(&self, scope: &CallScope, index: u64, step: &Step) {
        self.buffer.push(index, step);
        if let Some(o) = &self.also {
            o.observe(scope, index, step);
        }
    }
}

fn engine_settings(runtime: &Runtime) -> EngineSettings {
    EngineSettings {
        wasmtime: tessera_runtime::WASMTIME_VERSION.to_string(),
        fuel: true,
        max_wasm_stack: runtime.max_wasm_stack(),
    }
}

/// The end record for an outcome.
pub fn end_of(outcome: &CallOutcome) -> End {
    let result = match &outcome.result {
        Ok(v) => RunResult::Returned { value: v.clone() },
        Err(CallFailure::Limit(l)) => RunResult::Limit {
            limit: l.capability().to_string(),
            message: l.to_string(),
        },
        Err(CallFailure::Trap { message, .. }) => RunResult::Trap {
            message: message.clone(),
        },
        Err(CallFailure::Diverged(d)) => RunResult::Trap {
            message: d.to_string(),
        },
        Err(CallFailure::Cancelled) => RunResult::Cancelled {
            message: "call cancelled".into(),
        },
    };
    End {
        result,
        fuel_consumed: outcome.fuel_consumed,
        peak_memory_bytes: outcome.peak_memory_bytes as u64,
        duration_us: outcome.duration.as_micros() as u64,
        steps: outcome.interactions,
    }
}

/// Calls `function` and records the run. Returns the run id with the outcome.
pub async fn record_call(
    store: &Arc<JournalStore>,
    component: &LoadedComponent,
    function: &str,
    args: &Value,
) -> Result<(String, CallOutcome), Error> {
    record_call_with(
        store,
        component,
        function,
        args,
        CallOptions::default(),
        None,
    )
    .await
}

/// [`record_call`] with call options (a cancellation token, a snapshot, an
/// extra observer, which sees every step the journal records) and the
/// caller to name in the header.
pub async fn record_call_with(
    store: &Arc<JournalStore>,
    component: &LoadedComponent,
    function: &str,
    args: &Value,
    options: CallOptions,
    caller: Option<Caller>,
) -> Result<(String, CallOutcome), Error> {
    let f = component.function(function)?;
    let run_id = new_run_id();
    let header = Header {
        format: format::FORMAT.to_string(),
        version: format::VERSION,
        run_id: run_id.clone(),
        started: now_rfc3339(),
        component: ComponentRef {
            digest: component.digest().to_string(),
            origin: component.origin().to_string(),
        },
        function: f.qualified_name(),
        args: args.clone(),
        grants: component.grants().clone(),
        engine: engine_settings(component.runtime()),
        caller,
    };
    let function = header.function.clone();
    let args_owned = header.args.clone();
    store.begin(header, component.source_bytes())?;
    let buffer = store.run_buffer(&run_id);
    let recorder = Arc::new(Recorder {
        buffer: buffer.clone(),
        also: options.observer.clone(),
    });
    let outcome = component
        .call_json_with(
            &function,
            &args_owned,
            CallOptions {
                observer: Some(recorder),
                ..options
            },
        )
        .await;
    match outcome {
        Ok(o) => {
            // Queued, not awaited: the writer commits in the background.
            // `JournalStore::flush` (or dropping the store) waits for it.
            store.finish_run(&buffer, &end_of(&o));
            Ok((run_id, o))
        }
        Err(e) => {
            store.finish_run(
                &buffer,
                &End {
                    result: RunResult::Refused {
                        message: e.to_string(),
                    },
                    fuel_consumed: 0,
                    peak_memory_bytes: 0,
                    duration_us: 0,
                    steps: 0,
                },
            );
            Err(e.into())
        }
    }
}

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
    fn recorded(&self, index: u64) -> Option<Step> {
        self.steps.get(&index).cloned()
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

async fn prepare(
    runtime: &Runtime,
    store: &JournalStore,
    run_id: &str,
    component: Option<&Path>,
) -> Result<Prepared, Error> {
    let run_id = store.resolve(run_id)?;
    let header = store.header(&run_id)?;
    let end = store.end(&run_id)?;
    let steps = store.steps(&run_id)?;
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
        .map_err(|e| Error::Task(format!("load task failed: {e}")))??;
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
    let recorded_steps = p.steps.len() as u64;
    let cursor = Arc::new(ReplayCursor::new(p.steps));
    let outcome = p
        .loaded
        .call_json_with(
            &p.header.function,
            &p.header.args,
            CallOptions {
                replay: Some(cursor),
                ..CallOptions::default()
            },
        )
        .await?;
    let replayed = end_of(&outcome);
    let divergence = if let Some(d) = outcome.divergence.clone() {
        Some(ReplayDivergence::Interaction(d))
    } else if let Some(end) = &p.end {
        if end.result != replayed.result {
            Some(ReplayDivergence::Result {
                recorded: end.result.clone(),
                replayed: replayed.result.clone(),
            })
        } else if end.fuel_consumed != replayed.fuel_consumed {
            Some(ReplayDivergence::Fuel {
                recorded: end.fuel_consumed,
                replayed: replayed.fuel_consumed,
            })
        } else {
            None
        }
    } else {
        None
    };
    Ok(ReplayReport {
        run_id: p.run_id,
        recorded_steps,
        complete: p.end.is_some(),
        divergence,
        outcome,
    })
}

/// Answers steps before `stop` and nothing from `stop` on, so a replay halts
/// when the guest asks for step `stop`.
struct StopAt {
    cursor: ReplayCursor,
    stop: u64,
}

impl ReplaySource for StopAt {
    fn recorded(&self, index: u64) -> Option<Step> {
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

/// One human-readable line for a step (`tessera runs show`), rendered by
/// the capability that made it.
pub fn describe_step(index: u64, step: &Step) -> String {
    format!(
        "{index:>6}  {}",
        tessera_runtime::capability::describe(step)
    )
}
