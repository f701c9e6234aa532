//! Journaled sessions: a live instance kept between calls whose history is
//! the journal itself.
//!
//! Each call a session makes is an ordinary run whose header links it to
//! the session ([`SessionLink`]: name, position, previous run). The
//! session's record (its component, its grants and the ids of its runs in
//! order) lives in the journal beside the runs, which it holds against
//! pruning. From that, a session is rebuilt in any process by
//! **re-executing its history**: a fresh instance of the recorded
//! component runs each earlier call again with every host interaction
//! answered from the journal, and must consume the same fuel and return
//! the same result, so the interpreter ends in exactly the state the
//! original left — closures, generators and all. A fork is a new record
//! that shares a prefix of the history.
//!
//! Re-execution costs what the history computed (see
//! `docs/PERFORMANCE.md`); a process that keeps a session live, such as
//! the server, pays it only when the session comes back after being
//! evicted or after a restart.

use std::collections::HashSet;
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tessera_runtime::{CallOptions, CallOutcome, Grants, LoadedComponent, Runtime, Session};

use crate::format::{Caller, ComponentRef, SessionLink};
use crate::record::{Links, Target, record_run};
use crate::replay::{ReplayCursor, ReplayDivergence};
use crate::store::{HOLDS, RUNS, db_err};
use crate::{Error, JournalStore};

pub(crate) const SESSIONS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("sessions");

/// Longest session name.
pub const MAX_SESSION_NAME: usize = 64;

/// The holder under which the journal keeps a session's runs.
pub fn session_holder(name: &str) -> String {
    format!("session:{name}")
}

/// Checks a session name: 1 to 64 letters, digits, `.`, `_` or `-`.
pub fn check_session_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SESSION_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadSessionName(name.to_string()))
    }
}

/// Where a fork started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkPoint {
    /// The session forked.
    pub session: String,
    /// How many of its runs the fork shares.
    pub at: u64,
}

/// A session as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The name.
    pub name: String,
    /// What runs in it, for the program that made it (`python`,
    /// `javascript`, a component's name).
    pub kind: String,
    /// The component, pinned: a session always runs the version it began
    /// with (its bytes are in the journal).
    pub component: ComponentRef,
    /// The grants and limits every run of the session has.
    pub grants: Arc<Grants>,
    /// Who may use it: the id of the token that created it through a
    /// server (absent: anyone with access to the journal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// RFC 3339 UTC creation time.
    pub created: String,
    /// RFC 3339 UTC time of the last run.
    pub updated: String,
    /// The runs, in order.
    pub history: Vec<String>,
    /// The session it was forked from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<ForkPoint>,
    /// Why it can take no more runs (a run trapped or hit a limit, which
    /// can leave the interpreter half way through an update). A fork at
    /// an earlier point goes on from before that run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
}

impl SessionRecord {
    /// A new, empty session of `component` under its grants.
    pub fn new(name: &str, kind: &str, component: &LoadedComponent) -> Self {
        let now = crate::record::now_rfc3339();
        Self {
            name: name.to_string(),
            kind: kind.to_string(),
            component: ComponentRef {
                digest: component.digest().to_string(),
                origin: component.origin().to_string(),
            },
            grants: component.shared_grants(),
            owner: None,
            created: now.clone(),
            updated: now,
            history: Vec::new(),
            forked_from: None,
            ended: None,
        }
    }

    /// A writable mount, if the grants have one: re-executing the history
    /// would write through it again, so such a session cannot be rebuilt.
    pub fn writable_mount(&self) -> Option<String> {
        writable_mount(&self.grants)
    }
}

fn writable_mount(grants: &Grants) -> Option<String> {
    grants
        .files
        .mounts
        .iter()
        .find(|m| m.mode == tessera_runtime::capability::files::MountMode::ReadWrite)
        .map(|m| m.guest.clone())
}

fn encode(record: &SessionRecord) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(record).map_err(|source| Error::Encode {
        what: "a session",
        source,
    })
}

fn decode(name: &str, bytes: &[u8]) -> Result<SessionRecord, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt(format!("session {name}: {e}")))
}

fn hold_all<'a>(
    w: &redb::WriteTransaction,
    runs: impl IntoIterator<Item = &'a String>,
    holder: &str,
) -> Result<(), Error> {
    let table = w.open_table(RUNS).map_err(db_err)?;
    let mut holds = w.open_table(HOLDS).map_err(db_err)?;
    let since = serde_json::to_vec(&serde_json::json!({ "since": crate::record::now_rfc3339() }))
        .map_err(|source| Error::Encode {
        what: "a hold",
        source,
    })?;
    for run in runs {
        if table.get(run.as_str()).map_err(db_err)?.is_none() {
            return Err(Error::NoSuchRun(run.clone()));
        }
        if holds.get((run.as_str(), holder)).map_err(db_err)?.is_none() {
            holds
                .insert((run.as_str(), holder), since.as_slice())
                .map_err(db_err)?;
        }
    }
    Ok(())
}

impl JournalStore {
    /// Stores a new session; refused if the name is taken.
    pub fn create_session(&self, record: &SessionRecord) -> Result<(), Error> {
        check_session_name(&record.name)?;
        self.flush();
        let db = self.db();
        let w = db.begin_write().map_err(db_err)?;
        {
            let mut t = w.open_table(SESSIONS).map_err(db_err)?;
            if t.get(record.name.as_str()).map_err(db_err)?.is_some() {
                return Err(Error::SessionExists(record.name.clone()));
            }
            t.insert(record.name.as_str(), encode(record)?.as_slice())
                .map_err(db_err)?;
        }
        hold_all(&w, &record.history, &session_holder(&record.name))?;
        w.commit().map_err(db_err)?;
        Ok(())
    }

    /// A session by name.
    pub fn session(&self, name: &str) -> Result<SessionRecord, Error> {
        self.find_session(name)?
            .ok_or_else(|| Error::NoSuchSession(name.to_string()))
    }

    /// A session by name, `None` if there is none.
    pub fn find_session(&self, name: &str) -> Result<Option<SessionRecord>, Error> {
        self.flush();
        let db = self.db();
        let r = db.begin_read().map_err(db_err)?;
        let t = match r.open_table(SESSIONS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(db_err(e)),
        };
        match t.get(name).map_err(db_err)? {
            Some(v) => Ok(Some(decode(name, v.value())?)),
            None => Ok(None),
        }
    }

    /// Every session, by name.
    pub fn sessions(&self) -> Result<Vec<SessionRecord>, Error> {
        self.flush();
        let db = self.db();
        let r = db.begin_read().map_err(db_err)?;
        let t = match r.open_table(SESSIONS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(db_err(e)),
        };
        let mut out = Vec::new();
        for e in t.iter().map_err(db_err)? {
            let (k, v) = e.map_err(db_err)?;
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Appends a finished run to a session's history (and holds it), or
    /// marks the session ended; `expected` is the history length the run
    /// started from, so two writers cannot interleave their runs.
    fn advance_session(
        &self,
        name: &str,
        expected: usize,
        run: Option<&str>,
        ended: Option<String>,
    ) -> Result<SessionRecord, Error> {
        self.flush();
        let db = self.db();
        let w = db.begin_write().map_err(db_err)?;
        let record = {
            let mut t = w.open_table(SESSIONS).map_err(db_err)?;
            let mut record = match t.get(name).map_err(db_err)? {
                Some(v) => decode(name, v.value())?,
                None => return Err(Error::NoSuchSession(name.to_string())),
            };
            if record.history.len() != expected {
                return Err(Error::SessionMoved {
                    name: name.to_string(),
                    expected: expected as u64,
                    found: record.history.len() as u64,
                });
            }
            if let Some(run) = run {
                record.history.push(run.to_string());
            }
            if ended.is_some() {
                record.ended = ended;
            }
            record.updated = crate::record::now_rfc3339();
            t.insert(name, encode(&record)?.as_slice())
                .map_err(db_err)?;
            record
        };
        if let Some(run) = run {
            hold_all(&w, [&run.to_string()], &session_holder(name))?;
        }
        w.commit().map_err(db_err)?;
        Ok(record)
    }

    /// A new session `to` with the first `at` runs of `from` (all of them
    /// when `at` is `None`). The runs are shared, not copied.
    pub fn fork_session(
        &self,
        from: &str,
        to: &str,
        at: Option<u64>,
        owner: Option<&str>,
    ) -> Result<SessionRecord, Error> {
        let source = self.session(from)?;
        if source.owner.is_some() && source.owner.as_deref() != owner {
            return Err(Error::NoSuchSession(from.to_string()));
        }
        let len = source.history.len() as u64;
        let at = at.unwrap_or(len);
        if at > len {
            return Err(Error::ForkBeyondHistory {
                name: from.to_string(),
                at,
                runs: len,
            });
        }
        // Forking before the run that ended the session goes on from a
        // good state; forking at the end keeps the end.
        let ended = if at == len {
            source.ended.clone()
        } else {
            None
        };
        let now = crate::record::now_rfc3339();
        let record = SessionRecord {
            name: to.to_string(),
            created: now.clone(),
            updated: now,
            history: source.history[..at as usize].to_vec(),
            forked_from: Some(ForkPoint {
                session: from.to_string(),
                at,
            }),
            ended,
            ..source
        };
        self.create_session(&record)?;
        Ok(record)
    }

    /// Removes a session and its holds; its runs stay in the journal until
    /// retention removes them. Returns whether there was one.
    pub fn remove_session(&self, name: &str) -> Result<bool, Error> {
        self.flush();
        let db = self.db();
        let w = db.begin_write().map_err(db_err)?;
        let had = match w.open_table(SESSIONS) {
            Ok(mut t) => t.remove(name).map_err(db_err)?.is_some(),
            Err(e) => return Err(db_err(e)),
        };
        w.commit().map_err(db_err)?;
        drop(db);
        self.release_holder(&session_holder(name))?;
        Ok(had)
    }

    /// The runs of the session `run_id` belongs to, from the first up to
    /// and including `run_id`, followed through the headers' links (so it
    /// works for a run whose session was removed or forked since).
    pub fn session_chain(&self, run_id: &str) -> Result<Vec<String>, Error> {
        let mut chain = vec![run_id.to_string()];
        let mut seen = HashSet::from([run_id.to_string()]);
        let mut at = self.header(run_id)?;
        while let Some(previous) = at.session.as_ref().and_then(|s| s.previous.clone()) {
            if !seen.insert(previous.clone()) {
                return Err(Error::Corrupt(format!(
                    "run {run_id}: its session's runs link back in a loop at {previous}"
                )));
            }
            at = self.header(&previous)?;
            chain.push(previous);
        }
        chain.reverse();
        Ok(chain)
    }
}

/// One earlier run re-executed in a session's instance: what it replayed
/// to, and where it departed, if it did.
#[derive(Debug, Clone)]
pub struct Reexecuted {
    /// The run.
    pub run_id: String,
    /// Its outcome, replayed.
    pub outcome: CallOutcome,
    /// Where it departed from its recording.
    pub divergence: Option<ReplayDivergence>,
}

/// Runs `run_id` again in `session` with every host interaction answered
/// from the journal, and compares the result and fuel with the recording.
pub(crate) async fn reexecute(
    store: &JournalStore,
    session: &mut Session,
    run_id: &str,
) -> Result<Reexecuted, Error> {
    let header = store.header(run_id)?;
    let end = store.end(run_id)?;
    let steps = store.steps(run_id)?;
    let cursor = Arc::new(ReplayCursor::new(steps));
    let outcome = session
        .call_json_with(
            &header.function,
            &header.args,
            CallOptions {
                replay: Some(cursor),
                ..CallOptions::default()
            },
        )
        .await?;
    let divergence = crate::replay::compare(&outcome, end.as_ref());
    Ok(Reexecuted {
        run_id: run_id.to_string(),
        outcome,
        divergence,
    })
}

/// Loads a recorded component's bytes under `grants`, off the async
/// threads (compiling, or reading the compile cache, blocks).
async fn load_recorded(
    runtime: &Runtime,
    bytes: Vec<u8>,
    origin: &str,
    grants: Grants,
) -> Result<LoadedComponent, Error> {
    let rt = runtime.clone();
    let origin = origin.to_string();
    tokio::task::spawn_blocking(move || {
        let prepared = rt.prepare(bytes, &origin)?;
        rt.load(&prepared, grants)
    })
    .await
    .map_err(|source| Error::Task {
        what: "the load task",
        source,
    })?
    .map_err(Error::from)
}

/// A session open in this process: its live instance, rebuilt from the
/// journal when it had a history, and each new call recorded into it.
pub struct JournaledSession {
    store: Arc<JournalStore>,
    record: SessionRecord,
    session: Session,
}

impl std::fmt::Debug for JournaledSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournaledSession")
            .field("name", &self.record.name)
            .field("runs", &self.record.history.len())
            .finish_non_exhaustive()
    }
}

impl JournaledSession {
    /// Starts a new session of `component` named `name` (stored in the
    /// journal at once, so the name is taken).
    pub async fn create(
        store: &Arc<JournalStore>,
        component: &LoadedComponent,
        name: &str,
        kind: &str,
        owner: Option<&str>,
    ) -> Result<Self, Error> {
        check_session_name(name)?;
        let mut record = SessionRecord::new(name, kind, component);
        record.owner = owner.map(str::to_string);
        let session = component.session().await?;
        store.create_session(&record)?;
        Ok(Self {
            store: store.clone(),
            record,
            session,
        })
    }

    /// Opens the stored session `name`: its recorded component (from the
    /// journal) under its grants, in a fresh instance that re-executes the
    /// history. Fails if a run departs from its recording, if the session
    /// has a writable mount, or if `owner` is not the session's owner.
    pub async fn resume(
        runtime: &Runtime,
        store: &Arc<JournalStore>,
        name: &str,
        owner: Option<&str>,
    ) -> Result<Self, Error> {
        let record = store.session(name)?;
        if record.owner.is_some() && record.owner.as_deref() != owner {
            return Err(Error::NoSuchSession(name.to_string()));
        }
        if let Some(ended) = &record.ended {
            return Err(Error::SessionEnded {
                name: name.to_string(),
                reason: ended.clone(),
                runs: record.history.len() as u64,
            });
        }
        if !record.history.is_empty()
            && let Some(guest) = record.writable_mount()
        {
            return Err(Error::SessionNotRebuildable {
                name: name.to_string(),
                reason: format!(
                    "it has a writable mount ({guest}), and re-executing its history would write through it again"
                ),
            });
        }
        let bytes = store
            .blob(&record.component.digest)?
            .ok_or_else(|| Error::ComponentMissing(record.component.digest.clone()))?;
        let loaded = load_recorded(
            runtime,
            bytes,
            &record.component.origin,
            (*record.grants).clone(),
        )
        .await?;
        if loaded.digest() != record.component.digest {
            return Err(Error::ComponentMismatch {
                recorded: record.component.digest.clone(),
                given: "the stored component".into(),
                actual: loaded.digest().to_string(),
            });
        }
        let mut session = loaded.session().await?;
        for (i, run) in record.history.iter().enumerate() {
            let done = reexecute(store, &mut session, run).await?;
            if let Some(d) = done.divergence {
                return Err(Error::SessionDiverged {
                    name: name.to_string(),
                    seq: i as u64 + 1,
                    run: run.clone(),
                    divergence: d.to_string(),
                });
            }
        }
        Ok(Self {
            store: store.clone(),
            record,
            session,
        })
    }

    /// Calls `function` in the session and records the run, linked to the
    /// run before it. A trap or a limit ends the session (recorded in the
    /// journal); an error the function returns does not.
    pub async fn call(
        &mut self,
        function: &str,
        args: &Value,
        options: CallOptions,
        caller: Option<Caller>,
    ) -> Result<(String, CallOutcome), Error> {
        if let Some(ended) = &self.record.ended {
            return Err(Error::SessionEnded {
                name: self.record.name.clone(),
                reason: ended.clone(),
                runs: self.record.history.len() as u64,
            });
        }
        let expected = self.record.history.len();
        let links = Links {
            caller,
            session: Some(SessionLink {
                name: self.record.name.clone(),
                seq: expected as u64 + 1,
                previous: self.record.history.last().cloned(),
            }),
            ..Links::default()
        };
        let (run_id, outcome) = record_run(
            &self.store,
            Target::Session(&mut self.session),
            function,
            args,
            options,
            links,
        )
        .await?;
        let ended = self.session.ended().map(str::to_string);
        self.record =
            self.store
                .advance_session(&self.record.name, expected, Some(&run_id), ended)?;
        Ok((run_id, outcome))
    }

    /// The session's record as of its last run.
    pub fn record(&self) -> &SessionRecord {
        &self.record
    }

    /// The live instance's linear memory, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.session.memory_bytes()
    }

    /// Why the session ended, if it has.
    pub fn ended(&self) -> Option<&str> {
        self.record.ended.as_deref()
    }
}

/// What replaying a session's run offline found: the run and every run
/// before it in its session, each re-executed in one instance.
#[derive(Debug, Clone)]
pub struct SessionReplay {
    /// The runs, first to last (the last is the one asked for).
    pub runs: Vec<Reexecuted>,
}

impl SessionReplay {
    /// The first divergence, with the run's position (1-based).
    pub fn first_divergence(&self) -> Option<(u64, &Reexecuted)> {
        self.runs
            .iter()
            .enumerate()
            .find(|(_, r)| r.divergence.is_some())
            .map(|(i, r)| (i as u64 + 1, r))
    }
}

/// Replays a session run offline: the runs before it in its session (from
/// the headers' links), then it, in one instance of the recorded component;
/// nothing on the host is touched (mounts are rebuilt in a scratch
/// directory from what the runs read). Stops at the first divergence.
pub async fn replay_session_run(
    runtime: &Runtime,
    store: &JournalStore,
    run_id: &str,
) -> Result<SessionReplay, Error> {
    let run_id = store.resolve(run_id)?;
    let chain = store.session_chain(&run_id)?;
    let first = store.header(&chain[0])?;
    let mut all_steps = Vec::new();
    for run in &chain {
        all_steps.extend(store.steps(run)?);
    }
    let bytes = store
        .blob(&first.component.digest)?
        .ok_or_else(|| Error::ComponentMissing(first.component.digest.clone()))?;
    let scratch = tempfile::Builder::new()
        .prefix("tessera-replay-")
        .tempdir()
        .map_err(|e| Error::Io(std::env::temp_dir(), e))?;
    let grants = first
        .grants
        .for_replay(&all_steps, scratch.path())
        .map_err(|m| Error::Corrupt(format!("run {run_id}: rebuilding the mounts: {m}")))?;
    drop(all_steps);
    let loaded = load_recorded(runtime, bytes, &first.component.origin, grants).await?;
    let mut session = loaded.session().await?;
    let mut runs = Vec::new();
    for run in &chain {
        let done = reexecute(store, &mut session, run).await?;
        let diverged = done.divergence.is_some();
        runs.push(done);
        if diverged {
            break;
        }
    }
    Ok(SessionReplay { runs })
}
