//! The embedded journal store (redb), written append-only as runs proceed.
//!
//! A run's header and its component's bytes are committed before the guest
//! starts. Steps go through a channel to one writer thread, which commits
//! them in batches (every message already queued goes into one
//! transaction), so recording costs the guest a serialization and a channel
//! send, not a disk sync. If the process dies mid-run, every committed step
//! stays readable and the run, lacking its end record, is listed as
//! incomplete.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tessera_runtime::gateway::{Recorded, Step};

use crate::Error;
use crate::format::{End, FORMAT, Header, VERSION, externalize, internalize};

const RUNS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("runs");
const STEPS: TableDefinition<'static, (&str, u64), &[u8]> = TableDefinition::new("steps");
const ENDS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("ends");
const BLOBS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("blobs");

enum Msg {
    Begin(Box<Header>, Option<(String, Vec<u8>)>),
    Steps(Arc<str>, Vec<(u64, Recorded)>),
    End(Arc<str>, Box<End>),
    Flush(mpsc::Sender<()>),
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
}

/// The journal store in a data directory.
pub struct JournalStore {
    db: Arc<Database>,
    path: PathBuf,
    queue: Arc<Mutex<Vec<Msg>>>,
    buffers: Arc<Mutex<Vec<std::sync::Weak<RunBuffer>>>>,
    wake: Mutex<Sender<()>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Component digests already queued for storage by this process.
    components: Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for JournalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn db_err(e: impl Into<redb::Error>) -> Error {
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
            w.commit().map_err(db_err)?;
        }
        let db = Arc::new(db);
        let (wake, woken) = mpsc::channel();
        let queue = Arc::new(Mutex::new(Vec::new()));
        let buffers = Arc::new(Mutex::new(Vec::new()));
        let writer_db = db.clone();
        let writer_queue = queue.clone();
        let writer_buffers = buffers.clone();
        let writer = std::thread::Builder::new()
            .name("tessera-journal".into())
            .spawn(move || write_loop(&writer_db, &writer_queue, &writer_buffers, woken))
            .map_err(|e| Error::Io(PathBuf::from("<journal writer thread>"), e))?;
        Ok(Self {
            db,
            path,
            queue,
            buffers,
            wake: Mutex::new(wake),
            writer: Mutex::new(Some(writer)),
            components: Mutex::new(std::collections::HashSet::new()),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a run's header and (once per process) its component bytes.
    /// The writer commits them before any of the run's steps.
    pub fn begin(&self, header: Header, component: &[u8]) -> Result<(), Error> {
        let digest = &header.component.digest;
        let new = self
            .components
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest.clone());
        let blob = new.then(|| (digest.clone(), component.to_vec()));
        self.send(Msg::Begin(Box::new(header), blob));
        Ok(())
    }

    /// A buffer for one run's steps. The writer drains it every
    /// [`WRITE_EVERY`]; [`JournalStore::finish_run`] queues what is left.
    pub(crate) fn run_buffer(&self, run_id: &str) -> Arc<RunBuffer> {
        let buf = Arc::new(RunBuffer {
            run_id: Arc::from(run_id),
            steps: Mutex::new(Vec::new()),
        });
        let mut list = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&buf));
        buf
    }

    /// Queues a run's remaining steps and its end record.
    pub(crate) fn finish_run(&self, buffer: &RunBuffer, end: &End) {
        let rest = std::mem::take(&mut *buffer.steps.lock().unwrap_or_else(|p| p.into_inner()));
        if !rest.is_empty() {
            self.send(Msg::Steps(buffer.run_id.clone(), rest));
        }
        self.append_end(&buffer.run_id, end);
    }

    /// Queues the end record.
    pub fn append_end(&self, run_id: &str, end: &End) {
        self.send(Msg::End(Arc::from(run_id), Box::new(end.clone())));
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
        let r = self.db.begin_read().map_err(db_err)?;
        let runs = r.open_table(RUNS).map_err(db_err)?;
        let ends = r.open_table(ENDS).map_err(db_err)?;
        let steps = r.open_table(STEPS).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in runs.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            let header = parse_header(k.value(), v.value())?;
            let end =
                match ends.get(k.value()).map_err(db_err)? {
                    Some(e) => Some(serde_json::from_slice(e.value()).map_err(|e| {
                        Error::Corrupt(format!("run {}: end record: {e}", k.value()))
                    })?),
                    None => None,
                };
            let n = steps
                .range((k.value(), 0)..=(k.value(), u64::MAX))
                .map_err(db_err)?
                .count() as u64;
            out.push(RunSummary {
                header,
                end,
                steps: n,
            });
        }
        out.sort_by(|a, b| a.header.started.cmp(&b.header.started));
        Ok(out)
    }

    /// Resolves a run id or a unique prefix of one.
    pub fn resolve(&self, id: &str) -> Result<String, Error> {
        self.flush();
        let r = self.db.begin_read().map_err(db_err)?;
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
        let r = self.db.begin_read().map_err(db_err)?;
        let runs = r.open_table(RUNS).map_err(db_err)?;
        let v = runs
            .get(run_id)
            .map_err(db_err)?
            .ok_or_else(|| Error::NoSuchRun(run_id.to_string()))?;
        parse_header(run_id, v.value())
    }

    /// A run's end record, `None` if it is incomplete.
    pub fn end(&self, run_id: &str) -> Result<Option<End>, Error> {
        self.flush();
        let r = self.db.begin_read().map_err(db_err)?;
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
        let r = self.db.begin_read().map_err(db_err)?;
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
        let r = self.db.begin_read().map_err(db_err)?;
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
        let w = self.db.begin_write().map_err(db_err)?;
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

fn parse_header(run_id: &str, bytes: &[u8]) -> Result<Header, Error> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::Corrupt(format!("run {run_id}: header: {e}")))?;
    check_version(&v)?;
    serde_json::from_value(v).map_err(|e| Error::Corrupt(format!("run {run_id}: header: {e}")))
}

fn collect_blob_refs(v: &Value, out: &mut Vec<String>) {
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

fn write_loop(
    db: &Database,
    queue: &Mutex<Vec<Msg>>,
    buffers: &Mutex<Vec<std::sync::Weak<RunBuffer>>>,
    woken: Receiver<()>,
) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut last_durable = std::time::Instant::now();
    let mut dirty = false;
    loop {
        let stopping = matches!(
            woken.recv_timeout(WRITE_EVERY),
            Err(RecvTimeoutError::Disconnected)
        );
        // Buffers first, then the queue: a run's header is queued before any
        // of its steps exist, so it is always in the same or an earlier batch.
        let mut batch = Vec::new();
        for w in buffers.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if let Some(b) = w.upgrade() {
                let steps = std::mem::take(&mut *b.steps.lock().unwrap_or_else(|p| p.into_inner()));
                if !steps.is_empty() {
                    batch.push(Msg::Steps(b.run_id.clone(), steps));
                }
            }
        }
        batch.append(&mut queue.lock().unwrap_or_else(|p| p.into_inner()));
        let flush = batch.iter().any(|m| matches!(m, Msg::Flush(_)));
        let data = batch.iter().any(|m| !matches!(m, Msg::Flush(_)));
        let durable = flush || stopping || last_durable.elapsed() >= DURABLE_EVERY;
        let mut acks = Vec::new();
        let result = if data {
            write_batch(db, batch, &mut acks, durable)
        } else {
            for m in batch {
                if let Msg::Flush(a) = m {
                    acks.push(a);
                }
            }
            if durable && dirty {
                durable_commit(db)
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
            Err(e) => tracing::error!("journal write failed: {e}"),
        }
        for a in acks {
            let _ = a.send(());
        }
        if stopping {
            return;
        }
    }
}

fn durable_commit(db: &Database) -> Result<(), redb::Error> {
    let mut w = db.begin_write()?;
    w.set_durability(redb::Durability::Immediate)
        .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
    w.commit()?;
    Ok(())
}

fn write_batch(
    db: &Database,
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
        for msg in batch {
            match msg {
                Msg::Begin(header, blob) => {
                    if let Some((d, b)) = blob
                        && blobs.get(d.as_str())?.is_none()
                    {
                        blobs.insert(d.as_str(), b.as_slice())?;
                    }
                    let bytes = serde_json::to_vec(&header).unwrap_or_default();
                    runs.insert(header.run_id.as_str(), bytes.as_slice())?;
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
                Msg::End(run, end) => {
                    let bytes = serde_json::to_vec(&end).unwrap_or_default();
                    ends.insert(&*run, bytes.as_slice())?;
                }
                Msg::Flush(ack) => acks.push(ack),
            }
        }
    }
    w.commit()?;
    Ok(())
}
