//! The embedded journal store (redb), written append-only as runs proceed.
//!
//! A run's header and its component's bytes are committed before the guest
//! starts. Steps go through a channel to one writer thread, which commits
//! them in batches (every message already queued goes into one
//! transaction), so recording costs the guest a serialization and a channel
//! send, not a disk sync. If the process dies mid-run, every committed step
//! stays readable and the run, lacking its end record, is listed as
//! incomplete.

use std::collections::HashSet;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tessera_runtime::gateway::{Recorded, Step};

use crate::Error;
use crate::format::{End, FORMAT, Header, VERSION, externalize, internalize};
use crate::prune::{self, JournalStats, PruneReport};
use crate::retention::{Limits, Retention, format_bytes};

pub(crate) const RUNS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("runs");
pub(crate) const STEPS: TableDefinition<'static, (&str, u64), &[u8]> =
    TableDefinition::new("steps");
pub(crate) const ENDS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("ends");
pub(crate) const BLOBS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("blobs");
/// Holds on runs: (run, holder) → JSON `{"since": RFC 3339}`.
pub(crate) const HOLDS: TableDefinition<'static, (&str, &str), &[u8]> =
    TableDefinition::new("holds");

enum Msg {
    Begin(Box<Header>, Option<(String, Vec<u8>)>),
    Steps(Arc<str>, Vec<(u64, Recorded)>),
    /// The end record; the run's buffer rides along so the run counts as
    /// in progress until its end is stored.
    End(Arc<str>, Box<End>, Option<Arc<RunBuffer>>),
    Flush(mpsc::Sender<()>),
    Prune(Box<PruneJob>),
}

/// A pruning for the writer thread to carry out.
struct PruneJob {
    policy: Retention,
    dry_run: bool,
    reply: mpsc::Sender<Result<PruneReport, Error>>,
}

/// The steps of one run not yet taken by the writer.
pub(crate) struct RunBuffer {
    run_id: Arc<str>,
    steps: Mutex<Vec<(u64, Recorded)>>,
}

impl RunBuffer {
    /// Adds a step (the guest's thread: an uncontended lock and a push).
    pub(crate) fn push(&self, index: u64, step: &Recorded) {
        self.steps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((index, step.clone()));
    }
}

/// One line of `tessera runs list`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// The header.
    pub header: Header,
    /// The end record, `None` for an incomplete run.
    pub end: Option<End>,
    /// Steps stored.
    pub steps: u64,
    /// Bytes of its records as stored (header, steps, end; blobs, which
    /// runs share, are not counted).
    pub bytes: u64,
    /// Who holds it against pruning (`pin`, a plan, an agent), sorted.
    pub holds: Vec<String>,
}

/// A hold on a run: while any exists, retention never removes the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// Who holds it: `pin` for `tessera runs pin`, or a name chosen by the
    /// holder (`plan:<id>`, `agent:<id>`).
    pub holder: String,
    /// RFC 3339 time the hold was taken.
    pub since: String,
}

/// The holder name `tessera runs pin` uses.
pub const PIN: &str = "pin";

/// The journal store in a data directory.
pub struct JournalStore {
    db: Arc<RwLock<Database>>,
    path: PathBuf,
    queue: Arc<Mutex<Vec<Msg>>>,
    buffers: Arc<Mutex<Vec<std::sync::Weak<RunBuffer>>>>,
    wake: Mutex<Sender<()>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Component digests already queued for storage by this process
    /// (pruning forgets those whose blob it removes).
    components: Arc<Mutex<HashSet<String>>>,
    /// The policy the writer applies in the background, if any.
    background: Arc<Mutex<Option<Retention>>>,
    /// Buffers of runs begun and not yet given to their recorder.
    pending: Mutex<std::collections::HashMap<String, Arc<RunBuffer>>>,
}

impl std::fmt::Debug for JournalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

pub(crate) fn db_err(e: impl Into<redb::Error>) -> Error {
    Error::Store(e.into())
}

fn encode_err(what: &'static str) -> impl FnOnce(serde_json::Error) -> Error {
    move |source| Error::Encode { what, source }
}

/// Longest line an export may have: a blob of the largest payload the
/// gateway captures (64 MiB, hex-encoded) with room to spare.
pub const MAX_IMPORT_LINE: u64 = 160 << 20;

/// Highest step index a journal may hold.
pub const MAX_STEP_INDEX: u64 = u32::MAX as u64;

impl JournalStore {
    /// Opens (creating if needed) `<dir>/journal.redb`.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io(dir.to_path_buf(), e))?;
        let path = dir.join("journal.redb");
        let db = Database::create(&path).map_err(db_err)?;
        {
            let w = db.begin_write().map_err(db_err)?;
            w.open_table(RUNS).map_err(db_err)?;
            w.open_table(STEPS).map_err(db_err)?;
            w.open_table(ENDS).map_err(db_err)?;
            w.open_table(BLOBS).map_err(db_err)?;
            w.open_table(HOLDS).map_err(db_err)?;
            w.open_table(crate::session::SESSIONS).map_err(db_err)?;
            w.commit().map_err(db_err)?;
        }
        let db = Arc::new(RwLock::new(db));
        let (wake, woken) = mpsc::channel();
        let queue = Arc::new(Mutex::new(Vec::new()));
        let buffers = Arc::new(Mutex::new(Vec::new()));
        let components = Arc::new(Mutex::new(HashSet::new()));
        let background = Arc::new(Mutex::new(None));
        let shared = Writer {
            db: db.clone(),
            path: path.clone(),
            queue: queue.clone(),
            buffers: buffers.clone(),
            components: components.clone(),
            background: background.clone(),
            blob_removals: std::sync::atomic::AtomicU64::new(0),
        };
        let writer = std::thread::Builder::new()
            .name("tessera-journal".into())
            .spawn(move || write_loop(&shared, woken))
            .map_err(|e| Error::Io(PathBuf::from("<journal writer thread>"), e))?;
        Ok(Self {
            db,
            path,
            queue,
            buffers,
            wake: Mutex::new(wake),
            writer: Mutex::new(Some(writer)),
            components,
            background,
            pending: Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// The database, for one transaction. Never held across
    /// [`JournalStore::flush`]: compaction takes it exclusively.
    pub(crate) fn db(&self) -> RwLockReadGuard<'_, Database> {
        self.db.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a run's header and (once per process) its component bytes.
    /// The writer commits them before any of the run's steps.
    pub fn begin(&self, header: Header, component: &[u8]) -> Result<(), Error> {
        let run_id = header.run_id.clone();
        let buffer = self.begin_run(header, component);
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run_id, buffer);
        Ok(())
    }

    /// [`JournalStore::begin`], returning the run's step buffer instead
    /// of keeping it for [`JournalStore::append_end`].
    pub(crate) fn begin_run(&self, header: Header, component: &[u8]) -> Arc<RunBuffer> {
        let digest = &header.component.digest;
        // Held while queueing, so that pruning (which forgets a digest when
        // it removes the blob) sees this header in the queue or sees the
        // digest forgotten before it is looked up here.
        let mut known = self.components.lock().unwrap_or_else(|p| p.into_inner());
        let blob = if known.contains(digest.as_str()) {
            None
        } else {
            known.insert(digest.clone());
            Some((digest.clone(), component.to_vec()))
        };
        // The run is in progress from now on: its buffer exists (and is
        // registered) before its header can reach the store.
        let buffer = self.new_buffer(&header.run_id);
        self.send(Msg::Begin(Box::new(header), blob));
        buffer
    }

    /// A new run's step buffer, registered with the writer, which drains
    /// it every [`WRITE_EVERY`] (and forgets it once the run is done);
    /// [`JournalStore::finish_run`] queues what is left.
    fn new_buffer(&self, run_id: &str) -> Arc<RunBuffer> {
        let buf = Arc::new(RunBuffer {
            run_id: Arc::from(run_id),
            steps: Mutex::new(Vec::new()),
        });
        self.buffers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::downgrade(&buf));
        buf
    }

    /// Queues a run's remaining steps and its end record.
    pub(crate) fn finish_run(&self, buffer: Arc<RunBuffer>, end: End) {
        let rest = std::mem::take(&mut *buffer.steps.lock().unwrap_or_else(|p| p.into_inner()));
        if !rest.is_empty() {
            self.send(Msg::Steps(buffer.run_id.clone(), rest));
        }
        self.send(Msg::End(buffer.run_id.clone(), Box::new(end), Some(buffer)));
    }

    /// Queues the end record.
    pub fn append_end(&self, run_id: &str, end: &End) {
        let buffer = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(run_id);
        self.send(Msg::End(Arc::from(run_id), Box::new(end.clone()), buffer));
    }

    /// Queues a message. The writer picks the queue up every
    /// [`WRITE_EVERY`], so the guest never pays for waking it.
    fn send(&self, msg: Msg) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(msg);
    }

    /// Waits until everything queued so far is committed durably.
    pub fn flush(&self) {
        let (ack, done) = mpsc::channel();
        self.send(Msg::Flush(ack));
        let _ = self.wake.lock().unwrap_or_else(|p| p.into_inner()).send(());
        let _ = done.recv();
    }

    /// Every run, oldest first.
    pub fn list(&self) -> Result<Vec<RunSummary>, Error> {
        self.flush();
        let db = self.db();
        let r = db.begin_read().map_err(db_err)?;
        let runs = r.open_table(RUNS).map_err(db_err)?;
        let ends = r.open_table(ENDS).map_err(db_err)?;
        let steps = r.open_table(STEPS).map_err(db_err)?;
        let holds = r.open_table(HOLDS).map_err(db_err)?;
        let blobs = r.open_table(BLOBS).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in runs.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            let header = parse_header(k.value(), v.value(), &blobs)?;
            let mut bytes = v.value().len() as u64;
            let end = match ends.get(k.value()).map_err(db_err)? {
                Some(e) => {
                    bytes += e.value().len() as u64;
                    Some(serde_json::from_slice(e.value()).map_err(|e| {
                        Error::Corrupt(format!("run {}: end record: {e}", k.value()))
                    })?)
                }
                None => None,
            };
            let mut n = 0;
            for s in steps
                .range((k.value(), 0)..=(k.value(), u64::MAX))
                .map_err(db_err)?
            {
                let (_, v) = s.map_err(db_err)?;
                n += 1;
                bytes += v.value().len() as u64;
            }
            let mut held = Vec::new();
            for h in holds
                .range((k.value(), "")..=(k.value(), "\u{10ffff}"))
                .map_err(db_err)?
            {
                let (hk, _) = h.map_err(db_err)?;
                held.push(hk.value().1.to_string());
            }
            out.push(RunSummary {
                header,
                end,
                steps: n,
                bytes,
                holds: held,
            });
        }
        out.sort_by(|a, b| a.header.started.cmp(&b.header.started));
        Ok(out)
    }

    /// Holds a run against pruning under `holder` (`pin`, `plan:<id>`, …).
    /// Holding a run already held by the same holder is not an error. The
    /// hold is stored in the journal, so it outlives the process.
    pub fn hold(&self, run_id: &str, holder: &str) -> Result<(), Error> {
        if holder.is_empty() || holder.len() > 128 {
            return Err(Error::Corrupt(format!(
                "holder `{holder}` must be 1 to 128 characters"
            )));
        }
        self.flush();
        let db = self.db();
        let w = db.begin_write().map_err(db_err)?;
        {
            if w.open_table(RUNS)
                .map_err(db_err)?
                .get(run_id)
                .map_err(db_err)?
                .is_none()
            {
                return Err(Error::NoSuchRun(run_id.to_string()));
            }
            let mut holds = w.open_table(HOLDS).map_err(db_err)?;
            if holds.get((run_id, holder)).map_err(db_err)?.is_none() {
                let hold = serde_json::json!({ "since": crate::record::now_rfc3339() });
                let bytes = serde_json::to_vec(&hold).map_err(encode_err("a hold"))?;
                holds
                    .insert((run_id, holder), bytes.as_slice())
                    .map_err(db_err)?;
            }
        }
        w.commit().map_err(db_err)?;
        Ok(())
    }

    /// Releases `holder`'s hold on a run; returns whether there was one.
    pub fn release(&self, run_id: &str, holder: &str) -> Result<bool, Error> {
        self.flush();
        let db = self.db();
        let w = db.begin_write().map_err(db_err)?;
        let had = w
            .open_table(HOLDS)
            .map_err(db_err)?
            .remove((run_id, holder))
            .map_err(db_err)?
            .is_some();
        w.commit().map_err(db_err)?;
        Ok(had)
    }

    /// Releases every hold of `holder` (a plan run's on all its steps'
    /// runs) in one transaction; returns how many there were.
    pub fn release_holder(&self, holder: &str) -> Result<usize, Error> {
        self.flush();
        let db = self.db();
        let w = db.begin_write().map_err(db_err)?;
        let n = {
            let mut holds = w.open_table(HOLDS).map_err(db_err)?;
            let mine: Vec<String> = holds
                .iter()
                .map_err(db_err)?
                .filter_map(Result::ok)
                .filter(|(k, _)| k.value().1 == holder)
                .map(|(k, _)| k.value().0.to_string())
                .collect();
            for run in &mine {
                holds.remove((run.as_str(), holder)).map_err(db_err)?;
            }
            mine.len()
        };
        w.commit().map_err(db_err)?;
        Ok(n)
    }

    /// The holds on a run.
    pub fn holds(&self, run_id: &str) -> Result<Vec<Hold>, Error> {
        self.flush();
        let db = self.db();
        let r = db.begin_read().map_err(db_err)?;
        let holds = r.open_table(HOLDS).map_err(db_err)?;
        let mut out = Vec::new();
        for h in holds
            .range((run_id, "")..=(run_id, "\u{10ffff}"))
            .map_err(db_err)?
        {
            let (k, v) = h.map_err(db_err)?;
            let since = serde_json::from_slice::<Value>(v.value())
                .ok()
                .and_then(|v| v.get("since").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_default();
            out.push(Hold {
                holder: k.value().1.to_string(),
                since,
            });
        }
        Ok(out)
    }

    /// Pins a run: retention never removes it until it is unpinned.
    pub fn pin(&self, run_id: &str) -> Result<(), Error> {
        self.hold(run_id, PIN)
    }

    /// Unpins a run; returns whether it was pinned.
    pub fn unpin(&self, run_id: &str) -> Result<bool, Error> {
        self.release(run_id, PIN)
    }

    /// Removes the runs `policy` does not keep, then every blob no run
    /// left references, then compacts the file so that it shrinks on disk.
    /// Held runs (pinned, held by a plan or agent, or still being recorded
    /// by this process) are never removed; the report lists the ones a
    /// limit would have taken. With `dry_run`, nothing changes and the
    /// report says what would.
    ///
    /// The global `max_bytes` is the size of the journal file on disk
    /// after compaction; a component's `max_bytes` counts its runs' records
    /// and the blobs they reference.
    pub fn prune(&self, policy: &Retention, dry_run: bool) -> Result<PruneReport, Error> {
        let (reply, answer) = mpsc::channel();
        self.send(Msg::Prune(Box::new(PruneJob {
            policy: policy.clone(),
            dry_run,
            reply,
        })));
        let _ = self.wake.lock().unwrap_or_else(|p| p.into_inner()).send(());
        answer
            .recv()
            .map_err(|_| Error::Corrupt("the journal writer stopped".into()))?
    }

    /// Applies `policy` in the background from now on (`None` stops): the
    /// writer prunes as runs are recorded. See `docs/journal.md`
    /// (Retention) for when each limit is checked, and how far the file
    /// can overshoot `max_bytes` under heavy load.
    pub fn set_retention(&self, policy: Option<Retention>) {
        *self.background.lock().unwrap_or_else(|p| p.into_inner()) =
            policy.filter(|p| !p.is_empty());
        let _ = self.wake.lock().unwrap_or_else(|p| p.into_inner()).send(());
    }

    /// What the journal holds and weighs: the file on disk, runs, bytes
    /// per run, and the same per component.
    pub fn stats(&self) -> Result<JournalStats, Error> {
        self.flush();
        let db = self.db();
        let w = db.begin_write().map_err(db_err)?;
        let inv = prune::inventory(&w)?;
        let redb = w.stats().map_err(db_err)?;
        w.abort().map_err(db_err)?;
        drop(db);
        let file_bytes = file_len(&self.path);
        Ok(JournalStats::of(&inv, file_bytes, &redb))
    }

    /// Resolves a run id or a unique prefix of one.
    pub fn resolve(&self, id: &str) -> Result<String, Error> {
        self.flush();
        let db = self.db();
        let r = db.begin_read().map_err(db_err)?;
        let runs = r.open_table(RUNS).map_err(db_err)?;
        if runs.get(id).map_err(db_err)?.is_some() {
            return Ok(id.to_string());
        }
        let matches: Vec<String> = runs
            .iter()
            .map_err(db_err)?
            .filter_map(|e| e.ok().map(|(k, _)| k.value().to_string()))
            .filter(|k| k.starts_with(id))
            .collect();
        match matches.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(Error::NoSuchRun(id.to_string())),
            _ => Err(Error::Ambiguous(id.to_string(), matches.join(", "))),
        }
    }

    /// A run's header.
    pub fn header(&self, run_id: &str) -> Result<Header, Error> {
        self.flush();
        let db = self.db();
        let r = db.begin_read().map_err(db_err)?;
        let runs = r.open_table(RUNS).map_err(db_err)?;
        let blobs = r.open_table(BLOBS).map_err(db_err)?;
        let v = runs
            .get(run_id)
            .map_err(db_err)?
            .ok_or_else(|| Error::NoSuchRun(run_id.to_string()))?;
        parse_header(run_id, v.value(), &blobs)
    }

    /// A run's end record, `None` if it is incomplete.
    pub fn end(&self, run_id: &str) -> Result<Option<End>, Error> {
        self.flush();
        let db = self.db();
        let r = db.begin_read().map_err(db_err)?;
        let ends = r.open_table(ENDS).map_err(db_err)?;
        match ends.get(run_id).map_err(db_err)? {
            Some(e) => serde_json::from_slice(e.value())
                .map(Some)
                .map_err(|e| Error::Corrupt(format!("run {run_id}: end record: {e}"))),
            None => Ok(None),
        }
    }

    /// A run's steps as stored (blobs still referenced), in index order.
    pub fn raw_steps(&self, run_id: &str) -> Result<Vec<(u64, Value)>, Error> {
        self.flush();
        let db = self.db();
        let r = db.begin_read().map_err(db_err)?;
        let steps = r.open_table(STEPS).map_err(db_err)?;
        let mut out = Vec::new();
        for e in steps
            .range((run_id, 0)..=(run_id, u64::MAX))
            .map_err(db_err)?
        {
            let (k, v) = e.map_err(db_err)?;
            let (_, index) = k.value();
            let value: Value = serde_json::from_slice(v.value())
                .map_err(|e| Error::Corrupt(format!("run {run_id} step {index}: {e}")))?;
            out.push((index, value));
        }
        Ok(out)
    }

    /// A run's steps with payloads restored, in index order.
    pub fn steps(&self, run_id: &str) -> Result<Vec<(u64, Step)>, Error> {
        let mut out = Vec::new();
        for (index, mut value) in self.raw_steps(run_id)? {
            internalize(&mut value, &mut |d| self.blob(d).ok().flatten())
                .map_err(|m| Error::Corrupt(format!("run {run_id} step {index}: {m}")))?;
            let step: Step = serde_json::from_value(value)
                .map_err(|e| Error::Corrupt(format!("run {run_id} step {index}: {e}")))?;
            out.push((index, step));
        }
        Ok(out)
    }

    /// A blob by digest.
    pub fn blob(&self, digest: &str) -> Result<Option<Vec<u8>>, Error> {
        let db = self.db();
        let r = db.begin_read().map_err(db_err)?;
        let blobs = r.open_table(BLOBS).map_err(db_err)?;
        Ok(blobs
            .get(digest)
            .map_err(db_err)?
            .map(|v| v.value().to_vec()))
    }

    /// Writes one run as a self-contained JSON-lines file: a header line,
    /// then the component and every blob, then the steps, then the end.
    pub fn export(&self, run_id: &str, out: &mut dyn Write) -> Result<(), Error> {
        let header = self.header(run_id)?;
        let io = |e: std::io::Error| Error::Io(PathBuf::from("<export>"), e);
        let mut line = |v: Value| -> Result<(), Error> {
            serde_json::to_writer(&mut *out, &v).map_err(encode_err("an export line"))?;
            out.write_all(b"\n").map_err(io)
        };
        line(serde_json::json!({ "header": header }))?;
        let mut digests = vec![header.component.digest.clone()];
        let raw = self.raw_steps(run_id)?;
        for (_, v) in &raw {
            collect_blob_refs(v, &mut digests);
        }
        digests.dedup();
        for d in digests {
            let bytes = self
                .blob(&d)?
                .ok_or_else(|| Error::Corrupt(format!("run {run_id}: blob {d} is missing")))?;
            line(serde_json::json!({ "blob": d, "data": hex::encode(bytes) }))?;
        }
        for (index, step) in raw {
            line(serde_json::json!({ "step": index, "interaction": step }))?;
        }
        if let Some(end) = self.end(run_id)? {
            line(serde_json::json!({ "end": end }))?;
        }
        Ok(())
    }

    /// Imports a file written by [`JournalStore::export`]; returns the run id.
    /// The file replaces any run already stored under that id.
    ///
    /// Everything is validated before anything is stored: the header (format,
    /// version, run id), every blob against its digest, every step (index
    /// within bounds and unique, blobs it references present, shape a
    /// [`Step`]), the end record. A line longer than [`MAX_IMPORT_LINE`] is
    /// refused without being read whole.
    pub fn import(&self, input: &mut dyn BufRead, origin: &str) -> Result<String, Error> {
        let mut header: Option<Header> = None;
        let mut blobs: std::collections::HashMap<String, Vec<u8>> = Default::default();
        let mut steps: Vec<(usize, u64, Value)> = Vec::new();
        let mut end: Option<End> = None;
        let mut buf = Vec::new();
        let mut n = 0usize;
        loop {
            n += 1;
            let at = |m: String| Error::Corrupt(format!("{origin}:{n}: {m}"));
            buf.clear();
            let read = (&mut *input)
                .take(MAX_IMPORT_LINE + 1)
                .read_until(b'\n', &mut buf)
                .map_err(|e| at(e.to_string()))?;
            if read == 0 {
                break;
            }
            if buf.len() as u64 > MAX_IMPORT_LINE {
                return Err(at(format!("line longer than {MAX_IMPORT_LINE} bytes")));
            }
            let line = std::str::from_utf8(&buf).map_err(|e| at(format!("not UTF-8: {e}")))?;
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(line).map_err(|e| at(e.to_string()))?;
            if let Some(h) = v.get("header") {
                if header.is_some() {
                    return Err(at("a second header line".into()));
                }
                check_version(h).map_err(|e| at(e.to_string()))?;
                let h: Header =
                    serde_json::from_value(h.clone()).map_err(|e| at(format!("header: {e}")))?;
                check_run_id(&h.run_id).map_err(|m| at(format!("header.run_id: {m}")))?;
                header = Some(h);
            } else if let (Some(Value::String(d)), Some(Value::String(data))) =
                (v.get("blob"), v.get("data"))
            {
                let bytes = hex::decode(data).map_err(|e| at(format!("blob {d}: {e}")))?;
                let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
                if &actual != d {
                    return Err(at(format!(
                        "blob {d} does not match its content ({actual})"
                    )));
                }
                blobs.insert(d.clone(), bytes);
            } else if let (Some(i), Some(step)) = (v.get("step"), v.get("interaction")) {
                let i = i
                    .as_u64()
                    .ok_or_else(|| at(format!("step index {i} is not a non-negative integer")))?;
                if i > MAX_STEP_INDEX {
                    return Err(at(format!(
                        "step index {i} is out of range (at most {MAX_STEP_INDEX})"
                    )));
                }
                steps.push((n, i, step.clone()));
            } else if let Some(e) = v.get("end") {
                if end.is_some() {
                    return Err(at("a second end line".into()));
                }
                end = Some(serde_json::from_value(e.clone()).map_err(|e| at(format!("end: {e}")))?);
            } else {
                return Err(at(
                    "unrecognized line (expected header, blob, step or end)".into()
                ));
            }
        }
        let header = header.ok_or_else(|| Error::Corrupt(format!("{origin}: no header line")))?;
        let run = &header.run_id;
        let mut seen = std::collections::HashSet::new();
        let mut encoded = Vec::with_capacity(steps.len());
        for (line, i, raw) in steps {
            let at =
                |m: String| Error::Corrupt(format!("{origin}:{line}: run {run} step {i}: {m}"));
            if !seen.insert(i) {
                return Err(at("index appears twice".into()));
            }
            if let Some(e) = &end
                && i >= e.steps
            {
                return Err(at(format!(
                    "index past the {} steps the end record counts",
                    e.steps
                )));
            }
            let mut full = raw.clone();
            internalize(&mut full, &mut |d| blobs.get(d).cloned()).map_err(at)?;
            serde_json::from_value::<Step>(full).map_err(|e| at(e.to_string()))?;
            encoded.push((i, serde_json::to_vec(&raw).map_err(encode_err("a step"))?));
        }
        let end = end
            .map(|e| serde_json::to_vec(&e))
            .transpose()
            .map_err(encode_err("an end record"))?;
        let db = self.db();
        let w = db.begin_write().map_err(db_err)?;
        {
            let mut runs = w.open_table(RUNS).map_err(db_err)?;
            let hb = serde_json::to_vec(&header).map_err(encode_err("a header"))?;
            runs.insert(header.run_id.as_str(), hb.as_slice())
                .map_err(db_err)?;
            let mut b = w.open_table(BLOBS).map_err(db_err)?;
            for (d, bytes) in &blobs {
                b.insert(d.as_str(), bytes.as_slice()).map_err(db_err)?;
            }
            // The file replaces any run stored under the same id: no step
            // or end record of an earlier import may outlive it.
            let run = header.run_id.as_str();
            let mut s = w.open_table(STEPS).map_err(db_err)?;
            s.retain_in((run, 0)..=(run, u64::MAX), |_, _| false)
                .map_err(db_err)?;
            for (i, bytes) in &encoded {
                s.insert((run, *i), bytes.as_slice()).map_err(db_err)?;
            }
            let mut ends = w.open_table(ENDS).map_err(db_err)?;
            ends.remove(run).map_err(db_err)?;
            if let Some(e) = &end {
                ends.insert(run, e.as_slice()).map_err(db_err)?;
            }
        }
        w.commit().map_err(db_err)?;
        Ok(header.run_id)
    }
}

/// A run id is printed and used as a key: printable ASCII, no spaces, at
/// most 128 characters.
fn check_run_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 {
        return Err(format!("`{id}` must be 1 to 128 characters"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        return Err(format!("`{id}` may hold only letters, digits and -_.:"));
    }
    Ok(())
}

impl Drop for JournalStore {
    fn drop(&mut self) {
        self.flush();
        // Closing the wake channel stops the writer.
        let (dead, _) = mpsc::channel();
        *self.wake.lock().unwrap_or_else(|p| p.into_inner()) = dead;
        if let Some(h) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }
}

fn check_version(h: &Value) -> Result<(), Error> {
    let format = h.get("format").and_then(Value::as_str).unwrap_or("");
    if format != FORMAT {
        return Err(Error::Corrupt(format!(
            "not a Tessera journal (format `{format}`)"
        )));
    }
    match h.get("version").and_then(Value::as_u64) {
        Some(v) if v == u64::from(VERSION) => Ok(()),
        Some(v) => Err(Error::UnsupportedVersion(v)),
        None => Err(Error::Corrupt("header has no version".into())),
    }
}

/// Reads a stored header, putting back its grants when they are stored
/// once as a blob (`"grants": {"blob": "sha256:…"}`).
fn parse_header(
    run_id: &str,
    bytes: &[u8],
    blobs: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Header, Error> {
    let corrupt = |m: String| Error::Corrupt(format!("run {run_id}: header: {m}"));
    let mut v: Value = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    check_version(&v)?;
    if let Some(d) = grants_blob(&v) {
        let g = blobs
            .get(d.as_str())
            .map_err(db_err)?
            .ok_or_else(|| corrupt(format!("grants blob {d} is missing")))?;
        v["grants"] = serde_json::from_slice(g.value()).map_err(|e| corrupt(e.to_string()))?;
    }
    serde_json::from_value(v).map_err(|e| corrupt(e.to_string()))
}

/// The digest a stored header's grants are kept under, if they are.
pub(crate) fn grants_blob(header: &Value) -> Option<String> {
    match header.get("grants") {
        Some(Value::Object(o)) if o.len() == 1 => {
            o.get("blob").and_then(Value::as_str).map(str::to_string)
        }
        _ => None,
    }
}

/// A header's stored form: its grants, the same for every run of a
/// component version, are stored once as a blob under the SHA-256 of
/// their JSON and referenced by digest (`"grants": {"blob": "sha256:…"}`).
#[derive(Serialize)]
struct StoredHeader<'a> {
    format: &'a str,
    version: u32,
    run_id: &'a str,
    started: &'a str,
    component: &'a crate::format::ComponentRef,
    function: &'a str,
    args: &'a Value,
    grants: GrantsRef<'a>,
    engine: &'a crate::format::EngineSettings,
    #[serde(skip_serializing_if = "Option::is_none")]
    caller: Option<&'a crate::format::Caller>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<&'a crate::format::PlanStep>,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<&'a crate::format::AgentTurn>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a crate::format::SessionLink>,
    #[serde(skip_serializing_if = "Option::is_none")]
    linked: Option<&'a crate::format::LinkedFrom>,
}

#[derive(Serialize)]
struct GrantsRef<'a> {
    blob: &'a str,
}

/// The writer's memory of the grants it has encoded, by the address of
/// their `Arc` (kept alive here, so the address stays theirs): every run
/// of a loaded component shares one `Arc<Grants>`, so their JSON and
/// digest are computed once, not per run.
/// A pruning that removes blobs may remove grants blobs: the memory is
/// then cleared ([`GrantsDigests::check`]).
#[derive(Default)]
struct GrantsDigests {
    known: std::collections::HashMap<usize, (Arc<tessera_runtime::Grants>, String)>,
    /// The writer's count of blob-removing prunings when last checked.
    removals: u64,
}

impl GrantsDigests {
    /// Entries kept before the memory starts over (versions come and go).
    const MAX: usize = 256;

    /// Forgets everything if blobs were removed since the last check.
    fn check(&mut self, removals: u64) {
        if removals != self.removals {
            self.known.clear();
            self.removals = removals;
        }
    }

    /// The digest of `grants`, with their JSON the first time they are
    /// seen.
    fn of(&mut self, grants: &Arc<tessera_runtime::Grants>) -> (String, Option<Vec<u8>>) {
        let key = Arc::as_ptr(grants) as usize;
        if let Some((_, d)) = self.known.get(&key) {
            return (d.clone(), None);
        }
        let json = serde_json::to_vec(&**grants).unwrap_or_default();
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&json)));
        if self.known.len() >= Self::MAX {
            self.known.clear();
        }
        self.known.insert(key, (grants.clone(), digest.clone()));
        (digest, Some(json))
    }
}

/// A header's stored form, and the grants' blob when this writer has not
/// stored it yet (it may exist already: the caller checks).
fn encode_header(
    header: &Header,
    digests: &mut GrantsDigests,
) -> (Vec<u8>, String, Option<Vec<u8>>) {
    let (digest, grants) = digests.of(&header.grants);
    let stored = StoredHeader {
        format: &header.format,
        version: header.version,
        run_id: &header.run_id,
        started: &header.started,
        component: &header.component,
        function: &header.function,
        args: &header.args,
        grants: GrantsRef { blob: &digest },
        engine: &header.engine,
        caller: header.caller.as_ref(),
        plan: header.plan.as_ref(),
        agent: header.agent.as_ref(),
        session: header.session.as_ref(),
        linked: header.linked.as_ref(),
    };
    (
        serde_json::to_vec(&stored).unwrap_or_default(),
        digest,
        grants,
    )
}

pub(crate) fn collect_blob_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            if o.len() == 1
                && let Some(Value::String(d)) = o.get("blob")
            {
                out.push(d.clone());
            }
            o.values().for_each(|x| collect_blob_refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_blob_refs(x, out)),
        _ => {}
    }
}

/// A step's stored form: JSON, with long payloads moved to blobs.
fn encode_step(step: &Step) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let bytes = serde_json::to_vec(step).unwrap_or_default();
    if bytes.len() <= crate::format::INLINE_LIMIT {
        return (bytes, Vec::new());
    }
    let mut value = serde_json::to_value(step).unwrap_or_default();
    let blobs = externalize(&mut value);
    if blobs.is_empty() {
        return (bytes, blobs);
    }
    (serde_json::to_vec(&value).unwrap_or_default(), blobs)
}

/// How often the writer takes the queue and commits it. Steps reach the
/// store at most this long after the guest made them.
pub const WRITE_EVERY: std::time::Duration = std::time::Duration::from_millis(5);

/// How long committed steps may stay non-durable (lost only if the machine,
/// not just the process, stops) before a durable commit.
const DURABLE_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// What the writer thread shares with the store.
struct Writer {
    db: Arc<RwLock<Database>>,
    path: PathBuf,
    queue: Arc<Mutex<Vec<Msg>>>,
    buffers: Arc<Mutex<Vec<std::sync::Weak<RunBuffer>>>>,
    components: Arc<Mutex<HashSet<String>>>,
    background: Arc<Mutex<Option<Retention>>>,
    /// Counts the prunings that removed blobs: the writer's memory of
    /// stored grants ([`GrantsDigests`]) is void when it changes.
    blob_removals: std::sync::atomic::AtomicU64,
}

/// The writer's bookkeeping for background pruning.
#[derive(Default)]
struct Watch {
    /// No full pruning (age, count, per component) before this.
    next_full: Option<Instant>,
    /// No size pruning before this (the last one could not get under).
    next_size: Option<Instant>,
}

/// Size pruning brings the journal down to this share of `max_bytes` when
/// the file passes a quarter of it. redb grows its file by doubling it,
/// and the transaction that deletes runs copies the pages it touches
/// before it frees them, so the file needs room for two doublings past
/// the point where pruning starts.
const SIZE_LOW: (u64, u64) = (12, 100);

/// Where pruning for size aims, and when it is done.
#[derive(Clone, Copy, Debug)]
struct SizeGoal {
    /// The size on disk each round estimates its removals for.
    aim: u64,
    /// Rounds go on while the file is larger than this (at least `aim`).
    enough: u64,
    /// The newest run stays whatever the estimate says (background
    /// pruning: a server kept under its limit still shows its last call).
    keep_newest: bool,
}

/// How many times pruning for size removes runs by its estimate, compacts
/// and measures again before it gives up on getting under the limit (each
/// round corrects the estimate of the bytes a run takes on disk).
const PRUNE_ROUNDS: usize = 16;

/// Runs deleted per transaction when pruning.
const DELETE_CHUNK: usize = 256;

/// Messages (headers, step lists, end records) written per transaction.
const WRITE_CHUNK: usize = 1024;

fn share(n: u64, (a, b): (u64, u64)) -> u64 {
    (u128::from(n) * u128::from(a) / u128::from(b)) as u64
}

/// The journal file's size on disk (0 if it cannot be read).
pub(crate) fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

impl Writer {
    fn read(&self) -> RwLockReadGuard<'_, Database> {
        self.db.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs this process is still recording.
    fn live(&self) -> HashSet<String> {
        self.buffers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .map(|b| b.run_id.to_string())
            .collect()
    }

    /// Compacts the file so that it shrinks on disk.
    fn compact(&self) -> Result<(), Error> {
        let mut db = self.db.write().unwrap_or_else(|p| p.into_inner());
        db.compact().map_err(db_err)?;
        Ok(())
    }

    /// One pruning. `size`: the global size limit to bring the file under,
    /// when it applies. `compact`: compact after removing. `in_hand`:
    /// component digests of headers the writer holds but has not written
    /// yet (their bytes stay).
    fn prune(
        &self,
        policy: &Retention,
        dry_run: bool,
        size: Option<SizeGoal>,
        compact: bool,
        in_hand: &HashSet<String>,
    ) -> Result<PruneReport, Error> {
        let before = file_len(&self.path);
        let mut report = PruneReport {
            dry_run,
            file_bytes_before: before,
            file_bytes_after: before,
            ..PruneReport::default()
        };
        let mut compacted = false;
        for round in 0..PRUNE_ROUNDS {
            let live = self.live();
            let db = self.read();
            let w = db.begin_write().map_err(db_err)?;
            let inv = prune::inventory(&w)?;
            let disk = match size {
                Some(goal) if file_len(&self.path) > goal.aim => {
                    let allocated = {
                        let s = w.stats().map_err(db_err)?;
                        s.allocated_pages() * s.page_size() as u64
                    };
                    // Once compacted, the file's own size is what its
                    // runs cost on disk (it can be more than the pages in
                    // use); before, it is mostly free pages.
                    let on_disk = if compacted {
                        allocated.max(file_len(&self.path))
                    } else {
                        allocated
                    };
                    let stored = prune::stored_bytes(&inv).max(1);
                    Some(prune::DiskAim {
                        target: goal.aim,
                        ratio: (on_disk as f64 / stored as f64).max(1.0),
                        // The first estimate comes from the pages in use;
                        // later ones from a compacted file, whose fixed
                        // overhead weighs more the fewer runs are left.
                        most: if round == 0 {
                            usize::MAX
                        } else {
                            inv.runs.len().div_ceil(2)
                        },
                        spare_newest: goal.keep_newest,
                        // Compacted and still above the aim: the runs
                        // that many bytes are at the file's average size
                        // per run (which counts the overhead too, so this
                        // takes too few rather than too many; later rounds
                        // take more).
                        at_least: if compacted && !inv.runs.is_empty() {
                            let file = file_len(&self.path);
                            let per_run = (file / inv.runs.len() as u64).max(1);
                            file.saturating_sub(goal.aim).div_ceil(per_run) as usize
                        } else {
                            0
                        },
                    })
                }
                _ => None,
            };
            let plan = prune::plan(&inv, policy, &live, now_utc(), disk);
            report.held = prune::held(&inv, &plan);
            report.runs_kept = (inv.runs.len() - plan.remove.len()) as u64;
            if dry_run {
                report.removed = prune::removed(&inv, &plan);
                let (n, b) = prune::unreferenced_blobs(&inv, &plan);
                report.blobs_removed = n;
                report.blob_bytes_removed = b;
                if !plan.remove.is_empty() || n > 0 {
                    // After compaction, at the page overhead measured now.
                    let s = w.stats().map_err(db_err)?;
                    let allocated = s.allocated_pages() * s.page_size() as u64;
                    let ratio = allocated as f64 / prune::stored_bytes(&inv).max(1) as f64;
                    let after = (prune::remaining_bytes(&inv, &plan) as f64 * ratio) as u64;
                    report.file_bytes_after = after.min(before);
                }
                w.abort().map_err(db_err)?;
                return Ok(report);
            }
            // The runs go in transactions of at most DELETE_CHUNK runs,
            // each durable: a transaction copies every page it changes
            // before freeing it, so one that deleted most of the journal
            // would first make the file grow, and pages freed by a durable
            // commit are reused by the next transactions.
            let ids: Vec<usize> = plan.remove.keys().copied().collect();
            let mut chunks = ids.chunks(DELETE_CHUNK);
            let mut w = Some(w);
            let last = chunks.next_back().unwrap_or(&[]);
            for chunk in chunks {
                let t = match w.take() {
                    Some(t) => t,
                    None => db.begin_write().map_err(db_err)?,
                };
                prune::execute(&t, &inv, &plan, chunk, None)?;
                t.commit().map_err(db_err)?;
            }
            let w = match w.take() {
                Some(t) => t,
                None => db.begin_write().map_err(db_err)?,
            };
            let gone = {
                // Held from choosing the blobs to keep until the digests
                // removed are forgotten: `begin` queues a header without
                // its component's bytes only for a digest in this set.
                let mut known = self.components.lock().unwrap_or_else(|p| p.into_inner());
                let mut keep = begun_digests(&self.queue.lock().unwrap_or_else(|p| p.into_inner()));
                keep.extend(in_hand.iter().cloned());
                let gone = prune::execute(&w, &inv, &plan, last, Some(&keep))?;
                for (d, _) in &gone {
                    known.remove(d);
                }
                if !gone.is_empty() {
                    self.blob_removals
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                gone
            };
            w.commit().map_err(db_err)?;
            drop(db);
            let progress = !plan.remove.is_empty() || !gone.is_empty();
            report.removed.extend(prune::removed(&inv, &plan));
            report.blobs_removed += gone.len() as u64;
            report.blob_bytes_removed += gone.iter().map(|(_, n)| n).sum::<u64>();
            let over = size.is_some_and(|g| file_len(&self.path) > g.aim);
            if (progress || over) && compact {
                self.compact()?;
                compacted = true;
            }
            report.file_bytes_after = file_len(&self.path);
            match size {
                Some(g) if progress && report.file_bytes_after > g.enough => continue,
                _ => break,
            }
        }
        Ok(report)
    }

    /// Prunes in the background when the policy asks for it.
    fn background(&self, watch: &mut Watch) {
        let Some(policy) = self.policy() else {
            *watch = Watch::default();
            return;
        };
        self.background_size(&policy, watch, &HashSet::new());
        let rest = Retention {
            global: Limits {
                max_bytes: None,
                ..policy.global.clone()
            },
            components: policy.components.clone(),
        };
        let now = Instant::now();
        if !rest.is_empty() && watch.next_full.is_none_or(|t| now >= t) {
            let started = Instant::now();
            if let Err(e) = self.prune(&rest, false, None, false, &HashSet::new()) {
                tracing::error!("journal pruning failed: {e}");
            }
            watch.next_full = Some(Instant::now() + prune::next_interval(started.elapsed()));
        }
    }

    /// The background policy, if any.
    fn policy(&self) -> Option<Retention> {
        self.background
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The global size limit of the background policy: past a quarter of
    /// `max_bytes`, removes the oldest runs down to [`SIZE_LOW`] of it and
    /// compacts.
    fn background_size(&self, policy: &Retention, watch: &mut Watch, in_hand: &HashSet<String>) {
        let now = Instant::now();
        if let Some(max) = policy.global.max_bytes
            && watch.next_size.is_none_or(|t| now >= t)
            // redb grows its file by doubling it, and a transaction that
            // deletes runs first copies the pages it changes: past a
            // quarter of the limit, the next growths could pass it.
            && 4 * file_len(&self.path) > max
        {
            let low = share(max, SIZE_LOW);
            let sized = Retention {
                global: Limits {
                    max_bytes: Some(low),
                    ..Limits::default()
                },
                components: Default::default(),
            };
            // Aims at the low mark; another round only while the file is
            // still past the level that started this pruning.
            let goal = SizeGoal {
                aim: low,
                enough: max / 4,
                keep_newest: true,
            };
            match self.prune(&sized, false, Some(goal), true, in_hand) {
                Ok(r) if 4 * r.file_bytes_after > max => {
                    tracing::warn!(
                        "journal: {} on disk is near its limit of {} with only held runs and the newest left",
                        format_bytes(r.file_bytes_after),
                        format_bytes(max)
                    );
                    watch.next_size = Some(now + Duration::from_secs(1));
                }
                Ok(_) => {}
                Err(e) => tracing::error!("journal pruning failed: {e}"),
            }
        }
    }
}

/// The component digests of the headers among `msgs`.
fn begun_digests(msgs: &[Msg]) -> HashSet<String> {
    msgs.iter()
        .filter_map(|m| match m {
            Msg::Begin(h, _) => Some(h.component.digest.clone()),
            _ => None,
        })
        .collect()
}

fn now_utc() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn write_loop(w: &Writer, woken: Receiver<()>) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut last_durable = std::time::Instant::now();
    let mut dirty = false;
    let mut watch = Watch::default();
    let mut digests = GrantsDigests::default();
    loop {
        let stopping = matches!(
            woken.recv_timeout(WRITE_EVERY),
            Err(RecvTimeoutError::Disconnected)
        );
        // Buffers first, then the queue: a run's header is queued before any
        // of its steps exist, so it is always in the same or an earlier batch.
        let mut batch = Vec::new();
        // Runs that are done (their buffers dropped) are forgotten here,
        // not on the callers' path.
        w.buffers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|b| match b.upgrade() {
                Some(b) => {
                    let steps =
                        std::mem::take(&mut *b.steps.lock().unwrap_or_else(|p| p.into_inner()));
                    if !steps.is_empty() {
                        batch.push(Msg::Steps(b.run_id.clone(), steps));
                    }
                    true
                }
                None => false,
            });
        batch.append(&mut w.queue.lock().unwrap_or_else(|p| p.into_inner()));
        let (prunes, batch): (Vec<Msg>, Vec<Msg>) =
            batch.into_iter().partition(|m| matches!(m, Msg::Prune(_)));
        let flush = batch.iter().any(|m| matches!(m, Msg::Flush(_)));
        let data = batch.iter().any(|m| !matches!(m, Msg::Flush(_)));
        let durable = flush || stopping || last_durable.elapsed() >= DURABLE_EVERY;
        let mut acks = Vec::new();
        let result = if data {
            // At most WRITE_CHUNK messages per transaction: what queued up
            // while the writer was busy (a compaction, a slow disk) is not
            // written in one growth of the file, and the size limit is
            // checked between them.
            let mut result = Ok(());
            let mut batch = batch;
            while !batch.is_empty() {
                let rest = batch.split_off(batch.len().min(WRITE_CHUNK));
                digests.check(w.blob_removals.load(std::sync::atomic::Ordering::Relaxed));
                let last = rest.is_empty();
                result = write_batch(&w.read(), &mut digests, batch, &mut acks, durable && last);
                if result.is_err() {
                    break;
                }
                if !last && let Some(policy) = w.policy() {
                    // The components of the headers still in hand keep
                    // their bytes, as those of headers in the queue do.
                    let in_hand = begun_digests(&rest);
                    w.background_size(&policy, &mut watch, &in_hand);
                }
                batch = rest;
            }
            result
        } else {
            for m in batch {
                if let Msg::Flush(a) = m {
                    acks.push(a);
                }
            }
            if durable && dirty {
                durable_commit(&w.read())
            } else {
                Ok(())
            }
        };
        match result {
            Ok(()) if durable => {
                dirty = false;
                last_durable = std::time::Instant::now();
            }
            Ok(()) => dirty |= data,
            Err(e) => {
                // What the failed transaction stored is not there.
                digests = GrantsDigests::default();
                tracing::error!("journal write failed: {e}");
            }
        }
        for a in acks {
            let _ = a.send(());
        }
        for m in prunes {
            if let Msg::Prune(job) = m {
                let disk = job.policy.global.max_bytes.map(|m| SizeGoal {
                    aim: m,
                    enough: m,
                    keep_newest: false,
                });
                let _ =
                    job.reply
                        .send(w.prune(&job.policy, job.dry_run, disk, true, &HashSet::new()));
            }
        }
        if stopping {
            return;
        }
        w.background(&mut watch);
    }
}

fn durable_commit(db: &Database) -> Result<(), redb::Error> {
    let mut w = db.begin_write()?;
    w.set_durability(redb::Durability::Immediate)
        .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
    w.commit()?;
    Ok(())
}

/// The holder under which a plan run holds its steps' journal runs.
pub fn plan_holder(plan_run: &str) -> String {
    format!("plan:{plan_run}")
}

/// The holder under which the journal keeps an agent's turn runs.
pub fn agent_holder(agent: &str) -> String {
    format!("agent:{agent}")
}

fn write_batch(
    db: &Database,
    digests: &mut GrantsDigests,
    batch: Vec<Msg>,
    acks: &mut Vec<mpsc::Sender<()>>,
    durable: bool,
) -> Result<(), redb::Error> {
    let mut w = db.begin_write()?;
    if !durable {
        w.set_durability(redb::Durability::None)
            .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
    }
    {
        let mut runs = w.open_table(RUNS)?;
        let mut steps = w.open_table(STEPS)?;
        let mut ends = w.open_table(ENDS)?;
        let mut blobs = w.open_table(BLOBS)?;
        let mut holds = w.open_table(HOLDS)?;
        for msg in batch {
            match msg {
                Msg::Begin(header, blob) => {
                    if let Some((d, b)) = blob
                        && blobs.get(d.as_str())?.is_none()
                    {
                        blobs.insert(d.as_str(), b.as_slice())?;
                    }
                    let (bytes, d, grants) = encode_header(&header, digests);
                    // New to this writer: stored unless the journal has it.
                    if let Some(g) = grants
                        && blobs.get(d.as_str())?.is_none()
                    {
                        blobs.insert(d.as_str(), g.as_slice())?;
                    }
                    runs.insert(header.run_id.as_str(), bytes.as_slice())?;
                    // A plan step's run is held for its plan run from the
                    // moment it exists (released when the plan run ends).
                    if let Some(p) = &header.plan {
                        let holder = plan_holder(&p.run);
                        let since = serde_json::json!({ "since": header.started });
                        let bytes = serde_json::to_vec(&since).unwrap_or_default();
                        holds
                            .insert((header.run_id.as_str(), holder.as_str()), bytes.as_slice())?;
                    }
                    // So is an agent's turn (and its tool calls): its log
                    // and its forks read it (released when the agent is
                    // removed).
                    if let Some(a) = &header.agent {
                        let holder = agent_holder(&a.agent);
                        let since = serde_json::json!({ "since": header.started });
                        let bytes = serde_json::to_vec(&since).unwrap_or_default();
                        holds
                            .insert((header.run_id.as_str(), holder.as_str()), bytes.as_slice())?;
                    }
                }
                Msg::Steps(run, list) => {
                    for (i, step) in list {
                        // Encoded here, on the writer thread, not the guest's.
                        let (bytes, bs) = encode_step(&step.to_step());
                        for (d, b) in bs {
                            if blobs.get(d.as_str())?.is_none() {
                                blobs.insert(d.as_str(), b.as_slice())?;
                            }
                        }
                        steps.insert((&*run, i), bytes.as_slice())?;
                    }
                }
                Msg::End(run, end, _buffer) => {
                    let bytes = serde_json::to_vec(&end).unwrap_or_default();
                    ends.insert(&*run, bytes.as_slice())?;
                }
                Msg::Flush(ack) => acks.push(ack),
                Msg::Prune(_) => {}
            }
        }
    }
    w.commit()?;
    Ok(())
}
