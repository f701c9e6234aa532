//! The embedded backend: one redb file, written by one thread that commits
//! the writes waiting for it together (group commit), each commit durable.
//!
//! Why a writer thread: redb serializes write transactions and a durable
//! commit costs an fsync, so writers that each committed alone would queue
//! behind one another's fsyncs. The thread takes every write waiting when it
//! starts a transaction, applies them in arrival order (each one's
//! condition checked against the writes before it), commits once, then
//! answers them all. Readers do not wait for it: redb's read transactions
//! see the last commit.
//!
//! Hints ([`Store::put_hint`]) are committed without fsync when a
//! transaction holds nothing else; redb makes them durable with the next
//! durable commit.
//!
//! Tables: `entries` maps (bucket, key) to (revision, expiry in ms since the
//! epoch or 0, value); `revisions` keeps each bucket's last revision (it
//! never goes back, even when keys are deleted); `expiries` indexes keys
//! with a TTL by expiry, so that the thread removes them when idle.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use crate::{Entry, Expect, Page, Store, StoreError, add_to_counter, check_bucket, check_key};

const ENTRIES: TableDefinition<'_, (&str, &str), (u64, u64, &[u8])> =
    TableDefinition::new("entries");
const REVISIONS: TableDefinition<'_, &str, u64> = TableDefinition::new("revisions");
const EXPIRIES: TableDefinition<'_, (u64, &str, &str), ()> = TableDefinition::new("expiries");

/// How long the writer waits for work before it removes expired keys.
const IDLE: Duration = Duration::from_secs(1);

/// Expired keys removed per idle round.
const SWEEP_CHUNK: usize = 1024;

const BACKEND: &str = "embedded";

/// One write.
enum Write {
    Put {
        bucket: String,
        key: String,
        value: Vec<u8>,
        expect: Expect,
        expires: u64,
    },
    Delete {
        bucket: String,
        key: String,
        expect: Expect,
    },
    Increment {
        bucket: String,
        key: String,
        delta: i64,
    },
}

/// What a write returns: the new revision, or the counter's new value.
type Done = Result<i64, StoreError>;

struct Job {
    writes: Vec<Write>,
    /// Whether the caller waits for it to be on disk (false: a hint).
    durable: bool,
    reply: oneshot::Sender<Result<Vec<i64>, StoreError>>,
}

/// The embedded store: a redb file, by default `<data>/store.redb`.
pub struct Embedded {
    db: Arc<Database>,
    jobs: mpsc::Sender<Job>,
    path: PathBuf,
    /// The writer thread, joined on drop: the file is closed when the
    /// store is dropped, and can be opened again at once.
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Embedded {
    fn drop(&mut self) {
        // Closing the queue ends the writer loop once it has committed
        // what was waiting.
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.jobs, closed));
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("path", &self.path)
            .finish()
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend {
        backend: BACKEND,
        message: e.to_string(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn live(expires: u64, now: u64) -> bool {
    expires == 0 || expires > now
}

impl Embedded {
    /// Opens (or creates) the store at `path`. Only one process may have a
    /// store file open at a time: a second one gets
    /// [`StoreError::Unavailable`] saying so.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let unavailable = |message: String| StoreError::Unavailable {
            backend: BACKEND,
            at: path.display().to_string(),
            message,
        };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| unavailable(format!("creating {}: {e}", dir.display())))?;
        }
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => unavailable(
                "another process has it open (a running `tessera serve`? use `--server` to go through it)"
                    .into(),
            ),
            e => unavailable(e.to_string()),
        })?;
        {
            let w = db.begin_write().map_err(backend)?;
            w.open_table(ENTRIES).map_err(backend)?;
            w.open_table(REVISIONS).map_err(backend)?;
            w.open_table(EXPIRIES).map_err(backend)?;
            w.commit().map_err(backend)?;
        }
        let db = Arc::new(db);
        let (jobs, rx) = mpsc::channel();
        let writer = db.clone();
        let writer = std::thread::Builder::new()
            .name("tessera-store".into())
            .spawn(move || write_loop(&writer, &rx))
            .map_err(|e| unavailable(format!("starting the writer thread: {e}")))?;
        Ok(Self {
            db,
            jobs,
            path: path.to_path_buf(),
            writer: Some(writer),
        })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn submit(&self, writes: Vec<Write>) -> Result<Vec<i64>, StoreError> {
        self.submit_as(writes, true).await
    }

    async fn submit_as(&self, writes: Vec<Write>, durable: bool) -> Result<Vec<i64>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                writes,
                durable,
                reply,
            })
            .map_err(|_| backend("the writer thread stopped"))?;
        answer
            .await
            .map_err(|_| backend("the writer thread stopped"))?
    }

    /// One put, durable or lazy.
    async fn put_as(
        &self,
        bucket: &str,
        key: &str,
        value: &[u8],
        expect: Expect,
        ttl: Option<Duration>,
        durable: bool,
    ) -> Result<u64, StoreError> {
        check_bucket(bucket)?;
        check_key(key)?;
        let expires = match ttl {
            None => 0,
            Some(t) => now_ms().saturating_add(t.as_millis().max(1) as u64),
        };
        let done = self
            .submit_as(
                vec![Write::Put {
                    bucket: bucket.into(),
                    key: key.into(),
                    value: value.to_vec(),
                    expect,
                    expires,
                }],
                durable,
            )
            .await?;
        Ok(done.first().copied().unwrap_or_default() as u64)
    }

    fn read_entry(&self, bucket: &str, key: &str) -> Result<Option<Entry>, StoreError> {
        let r = self.db.begin_read().map_err(backend)?;
        let t = r.open_table(ENTRIES).map_err(backend)?;
        let now = now_ms();
        Ok(t.get((bucket, key)).map_err(backend)?.and_then(|g| {
            let (revision, expires, value) = g.value();
            live(expires, now).then(|| Entry {
                value: value.to_vec(),
                revision,
            })
        }))
    }
}

#[async_trait::async_trait]
impl Store for Embedded {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Entry>, StoreError> {
        check_bucket(bucket)?;
        check_key(key)?;
        self.read_entry(bucket, key)
    }

    async fn increment_lazy(&self, bucket: &str, key: &str, delta: i64) -> Result<i64, StoreError> {
        check_bucket(bucket)?;
        check_key(key)?;
        let done = self
            .submit_as(
                vec![Write::Increment {
                    bucket: bucket.into(),
                    key: key.into(),
                    delta,
                }],
                false,
            )
            .await?;
        Ok(done.first().copied().unwrap_or_default())
    }

    async fn put(
        &self,
        bucket: &str,
        key: &str,
        value: &[u8],
        expect: Expect,
        ttl: Option<Duration>,
    ) -> Result<u64, StoreError> {
        self.put_as(bucket, key, value, expect, ttl, true).await
    }

    async fn put_lazy(
        &self,
        bucket: &str,
        key: &str,
        value: &[u8],
        expect: Expect,
        ttl: Option<Duration>,
    ) -> Result<u64, StoreError> {
        self.put_as(bucket, key, value, expect, ttl, false).await
    }

    async fn put_hint(&self, bucket: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.put_hint_with_ttl(bucket, key, value, None).await
    }

    async fn put_hint_with_ttl(
        &self,
        bucket: &str,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        self.put_as(bucket, key, value, Expect::Any, ttl, false)
            .await
            .map(|_| ())
    }

    async fn write_in_order(
        &self,
        bucket: &str,
        writes: &[crate::OrderedWrite],
    ) -> Result<Vec<u64>, StoreError> {
        check_bucket(bucket)?;
        let mut job = Vec::with_capacity(writes.len());
        let now = now_ms();
        for w in writes {
            job.push(match w {
                crate::OrderedWrite::Put {
                    key,
                    value,
                    expect,
                    ttl,
                } => {
                    check_key(key)?;
                    Write::Put {
                        bucket: bucket.into(),
                        key: key.clone(),
                        value: value.clone(),
                        expect: *expect,
                        expires: match ttl {
                            None => 0,
                            Some(t) => now.saturating_add(t.as_millis().max(1) as u64),
                        },
                    }
                }
                crate::OrderedWrite::Delete { key, expect } => {
                    check_key(key)?;
                    Write::Delete {
                        bucket: bucket.into(),
                        key: key.clone(),
                        expect: *expect,
                    }
                }
            });
        }
        let done = self.submit(job).await?;
        Ok(done.into_iter().map(|v| v.max(0) as u64).collect())
    }

    async fn delete_hint(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        check_bucket(bucket)?;
        check_key(key)?;
        self.submit_as(
            vec![Write::Delete {
                bucket: bucket.into(),
                key: key.into(),
                expect: Expect::Any,
            }],
            false,
        )
        .await
        .map(|_| ())
    }

    async fn delete(&self, bucket: &str, key: &str, expect: Expect) -> Result<(), StoreError> {
        check_bucket(bucket)?;
        check_key(key)?;
        self.submit(vec![Write::Delete {
            bucket: bucket.into(),
            key: key.into(),
            expect,
        }])
        .await?;
        Ok(())
    }

    async fn increment(&self, bucket: &str, key: &str, delta: i64) -> Result<i64, StoreError> {
        check_bucket(bucket)?;
        check_key(key)?;
        let done = self
            .submit(vec![Write::Increment {
                bucket: bucket.into(),
                key: key.into(),
                delta,
            }])
            .await?;
        Ok(done.first().copied().unwrap_or_default())
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        check_bucket(bucket)?;
        let r = self.db.begin_read().map_err(backend)?;
        let t = r.open_table(ENTRIES).map_err(backend)?;
        let start = match after {
            Some(a) if a >= prefix => a,
            _ => prefix,
        };
        let now = now_ms();
        let mut page = Page::default();
        for item in t.range((bucket, start)..).map_err(backend)? {
            let (k, v) = item.map_err(backend)?;
            let (b, key) = k.value();
            if b != bucket || !key.starts_with(prefix) {
                break;
            }
            if Some(key) == after || !live(v.value().1, now) {
                continue;
            }
            if page.keys.len() == limit {
                page.cursor = page.keys.last().cloned();
                break;
            }
            page.keys.push(key.to_string());
        }
        Ok(page)
    }

    async fn buckets(&self) -> Result<Vec<String>, StoreError> {
        let r = self.db.begin_read().map_err(backend)?;
        let t = r.open_table(ENTRIES).map_err(backend)?;
        let now = now_ms();
        let mut out: Vec<String> = Vec::new();
        let mut from = String::new();
        loop {
            // One seek per bucket: the first key at or after the next name.
            let next = t
                .range((from.as_str(), "")..)
                .map_err(backend)?
                .next()
                .transpose()
                .map_err(backend)?;
            let Some((k, _)) = next else { break };
            let b = k.value().0.to_string();
            // A bucket whose keys have all expired (and are not swept
            // yet) holds nothing.
            let mut any = false;
            for item in t.range((b.as_str(), "")..).map_err(backend)? {
                let (k, v) = item.map_err(backend)?;
                if k.value().0 != b {
                    break;
                }
                if live(v.value().1, now) {
                    any = true;
                    break;
                }
            }
            // The smallest name after `b`.
            from = format!("{b}\0");
            if any {
                out.push(b);
            }
        }
        Ok(out)
    }

    async fn get_many(
        &self,
        bucket: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Entry>>, StoreError> {
        check_bucket(bucket)?;
        for k in keys {
            check_key(k)?;
        }
        let r = self.db.begin_read().map_err(backend)?;
        let t = r.open_table(ENTRIES).map_err(backend)?;
        let now = now_ms();
        keys.iter()
            .map(|k| {
                Ok(t.get((bucket, k.as_str())).map_err(backend)?.and_then(|g| {
                    let (revision, expires, value) = g.value();
                    live(expires, now).then(|| Entry {
                        value: value.to_vec(),
                        revision,
                    })
                }))
            })
            .collect()
    }

    async fn put_many(
        &self,
        bucket: &str,
        entries: &[(String, Vec<u8>)],
    ) -> Result<(), StoreError> {
        check_bucket(bucket)?;
        for (k, _) in entries {
            check_key(k)?;
        }
        let writes = entries
            .iter()
            .map(|(k, v)| Write::Put {
                bucket: bucket.into(),
                key: k.clone(),
                value: v.clone(),
                expect: Expect::Any,
                expires: 0,
            })
            .collect();
        self.submit(writes).await?;
        Ok(())
    }

    async fn delete_many(&self, bucket: &str, keys: &[String]) -> Result<(), StoreError> {
        check_bucket(bucket)?;
        for k in keys {
            check_key(k)?;
        }
        let writes = keys
            .iter()
            .map(|k| Write::Delete {
                bucket: bucket.into(),
                key: k.clone(),
                expect: Expect::Any,
            })
            .collect();
        self.submit(writes).await?;
        Ok(())
    }
}

fn write_loop(db: &Database, jobs: &mpsc::Receiver<Job>) {
    loop {
        let first = match jobs.recv_timeout(IDLE) {
            Ok(j) => j,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(e) = sweep(db) {
                    tracing::warn!("store: removing expired keys failed: {e}");
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = vec![first];
        batch.extend(jobs.try_iter());
        let result = apply(db, &batch);
        match result {
            Ok(answers) => {
                for (job, answer) in batch.into_iter().zip(answers) {
                    let _ = job.reply.send(answer);
                }
            }
            Err(e) => {
                for job in batch {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Applies the jobs in one durable transaction: each job's answer, or an
/// error for them all when the transaction itself fails.
fn apply(db: &Database, batch: &[Job]) -> Result<Vec<Result<Vec<i64>, StoreError>>, StoreError> {
    let mut w = db.begin_write().map_err(backend)?;
    if !batch.iter().any(|j| j.durable) {
        // Only hints: on disk with the next durable commit.
        w.set_durability(redb::Durability::None).map_err(backend)?;
    }
    let now = now_ms();
    let mut answers = Vec::with_capacity(batch.len());
    {
        // Opened once for the whole transaction.
        let mut tables = Tables {
            entries: w.open_table(ENTRIES).map_err(backend)?,
            revisions: w.open_table(REVISIONS).map_err(backend)?,
            expiries: w.open_table(EXPIRIES).map_err(backend)?,
        };
        for job in batch {
            let mut out = Vec::with_capacity(job.writes.len());
            let mut failed = None;
            for write in &job.writes {
                match one(&mut tables, write, now)? {
                    Ok(v) => out.push(v),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            answers.push(match failed {
                Some(e) => Err(e),
                None => Ok(out),
            });
        }
    }
    w.commit().map_err(backend)?;
    Ok(answers)
}

/// The tables of one write transaction.
struct Tables<'t> {
    entries: redb::Table<'t, (&'static str, &'static str), (u64, u64, &'static [u8])>,
    revisions: redb::Table<'t, &'static str, u64>,
    expiries: redb::Table<'t, (u64, &'static str, &'static str), ()>,
}

/// One write inside the transaction. The outer error fails the whole
/// transaction; the inner one only this write (a condition not met).
fn one(t: &mut Tables<'_>, write: &Write, now: u64) -> Result<Done, StoreError> {
    let Tables {
        entries,
        revisions,
        expiries,
    } = t;
    let (bucket, key) = match write {
        Write::Put { bucket, key, .. }
        | Write::Delete { bucket, key, .. }
        | Write::Increment { bucket, key, .. } => (bucket.as_str(), key.as_str()),
    };
    let current = entries.get((bucket, key)).map_err(backend)?.map(|g| {
        let (rev, exp, v) = g.value();
        (rev, exp, v.to_vec())
    });
    let present = current.as_ref().filter(|(_, exp, _)| live(*exp, now));
    let expect = match write {
        Write::Put { expect, .. } | Write::Delete { expect, .. } => *expect,
        Write::Increment { .. } => Expect::Any,
    };
    let met = match expect {
        Expect::Any => true,
        Expect::Absent => present.is_none(),
        Expect::Revision(r) => present.is_some_and(|(rev, _, _)| *rev == r),
    };
    if !met {
        return Ok(Err(StoreError::Conflict {
            bucket: bucket.into(),
            key: key.into(),
            expected: expect,
            found: present.map(|(rev, _, _)| *rev),
        }));
    }
    if let Some((_, exp, _)) = &current
        && *exp != 0
    {
        expiries.remove((*exp, bucket, key)).map_err(backend)?;
    }
    let revision = revisions
        .get(bucket)
        .map_err(backend)?
        .map(|g| g.value())
        .unwrap_or(0)
        + 1;
    let answer = match write {
        Write::Put { value, expires, .. } => {
            entries
                .insert((bucket, key), (revision, *expires, value.as_slice()))
                .map_err(backend)?;
            if *expires != 0 {
                expiries
                    .insert((*expires, bucket, key), ())
                    .map_err(backend)?;
            }
            revision as i64
        }
        Write::Delete { .. } => {
            if current.is_none() {
                return Ok(Ok(0));
            }
            entries.remove((bucket, key)).map_err(backend)?;
            revision as i64
        }
        Write::Increment { delta, .. } => {
            let n = match add_to_counter(bucket, key, present.map(|(_, _, v)| v.as_slice()), *delta)
            {
                Ok(n) => n,
                Err(e) => return Ok(Err(e)),
            };
            entries
                .insert((bucket, key), (revision, 0, n.to_string().as_bytes()))
                .map_err(backend)?;
            n
        }
    };
    revisions.insert(bucket, revision).map_err(backend)?;
    Ok(Ok(answer))
}

/// Removes keys whose TTL has passed (at most [`SWEEP_CHUNK`] per round).
fn sweep(db: &Database) -> Result<(), StoreError> {
    let now = now_ms();
    let due: Vec<(u64, String, String)> = {
        let r = db.begin_read().map_err(backend)?;
        let t = r.open_table(EXPIRIES).map_err(backend)?;
        let mut due = Vec::new();
        for item in t.range((0, "", "")..(now, "", "")).map_err(backend)? {
            let (k, _) = item.map_err(backend)?;
            let (exp, b, key) = k.value();
            due.push((exp, b.to_string(), key.to_string()));
            if due.len() == SWEEP_CHUNK {
                break;
            }
        }
        due
    };
    if due.is_empty() {
        return Ok(());
    }
    let w = db.begin_write().map_err(backend)?;
    {
        let mut entries = w.open_table(ENTRIES).map_err(backend)?;
        let mut expiries = w.open_table(EXPIRIES).map_err(backend)?;
        for (exp, b, key) in &due {
            expiries
                .remove((*exp, b.as_str(), key.as_str()))
                .map_err(backend)?;
            let still = entries
                .get((b.as_str(), key.as_str()))
                .map_err(backend)?
                .is_some_and(|g| g.value().1 == *exp);
            if still {
                entries
                    .remove((b.as_str(), key.as_str()))
                    .map_err(backend)?;
            }
        }
    }
    w.commit().map_err(backend)?;
    Ok(())
}
