//! A plan run's progress in the store: what survives `kill -9`.
//!
//! Everything lives in one bucket ([`PLANS_BUCKET`] by default) of the
//! host's stores, under these keys (`<id>` is the plan run id):
//!
//! | key | value |
//! | --- | --- |
//! | `run/<id>` | [`RunRecord`]: the plan's text, inputs, status, outputs |
//! | `step/<id>/<step>` | [`StepRecord`]: a finished step (succeeded, failed, skipped, continued) |
//! | `item/<id>/<step>/<index>` | [`StepRecord`] of one call of a fan-out |
//! | `started/<id>/<step>[/<index>]` | [`Started`]: the attempt in flight, with its idempotency key |
//! | `lease/<id>` | [`LeaseHolder`]: who drives the run now (a TTL lease, renewed while it runs) |
//!
//! A step's record is written with "expect absent" before any step that
//! reads it starts: a finished step is never run again, and two processes
//! that both finish it keep the first record.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tessera_store::{Expect, SharedStore, StoreError};

/// The bucket plan runs are kept in.
pub const PLANS_BUCKET: &str = "tessera-plans";

/// How long a lease on a run lasts unless renewed.
pub const LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(15);

/// How often the driver of a run renews its lease.
pub const LEASE_RENEW: std::time::Duration = std::time::Duration::from_secs(5);

/// Who drives a plan run: one process at a time, wherever the progress
/// store is shared (NATS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseHolder {
    /// The host's name.
    pub host: String,
    /// The process.
    pub pid: u32,
    /// Tells apart two drivers in one process.
    pub nonce: String,
    /// When it took the lease (RFC 3339).
    pub since: String,
}

impl LeaseHolder {
    /// This process, with a fresh nonce.
    pub fn here() -> Self {
        Self {
            host: host_name(),
            pid: std::process::id(),
            nonce: new_run_id(),
            since: now(),
        }
    }

    /// Whether the holder is a process of this host that no longer runs
    /// (killed: its lease may be taken over at once).
    pub fn is_dead_here(&self) -> bool {
        self.host == host_name()
            && self.pid != std::process::id()
            && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
            && std::path::Path::new("/proc/self").exists()
    }
}

impl std::fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "process {} on {} (since {})",
            self.pid, self.host, self.since
        )
    }
}

/// The host's name (Linux: the kernel's; else `HOSTNAME`).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// A lease this process holds on a run.
#[derive(Debug)]
pub struct Lease {
    key: String,
    revision: u64,
    holder: LeaseHolder,
}

/// Why a lease could not be had.
#[derive(Debug)]
pub enum LeaseRefused {
    /// Another driver holds it.
    Held(LeaseHolder),
    /// The store failed.
    Store(StoreError),
}

/// Where a plan run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// Started and not finished (or its process died: resume it).
    Running,
    /// Every step done; outputs computed.
    Succeeded,
    /// A step failed and the plan could not go on.
    Failed,
    /// Cancelled (resume goes on).
    Cancelled,
}

/// A plan run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Its id.
    pub id: String,
    /// The plan's name.
    pub plan: String,
    /// Where the plan was read from.
    pub origin: String,
    /// The directory its relative paths resolve against.
    pub base: String,
    /// The plan's text (a resume runs the same plan, whatever the file
    /// says now).
    pub text: String,
    /// The inputs, defaults filled in.
    pub inputs: Value,
    /// Where it is.
    pub status: RunStatus,
    /// Start time, RFC 3339.
    pub started: String,
    /// End time, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// How many times it was resumed.
    #[serde(default)]
    pub resumes: u32,
    /// The outputs, once it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Value>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How a step (or one call of a fan-out) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepState {
    /// Its call returned; `output` holds the result.
    Succeeded,
    /// Every attempt failed and the plan stops.
    Failed,
    /// `when` was false: not run, output null.
    Skipped,
    /// Every attempt failed, `on_error = "continue"`: output null.
    Continued,
    /// Every attempt failed; its fallback step's output stands for it.
    FellBack,
}

/// A finished step, or one finished call of a fan-out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// How it ended.
    pub state: StepState,
    /// Its output (the function's result; the `ok` value of a WIT result;
    /// the list of results of a fan-out).
    #[serde(default)]
    pub output: Value,
    /// Attempts made.
    pub attempts: u32,
    /// The journal runs of its calls.
    #[serde(default)]
    pub runs: Vec<String>,
    /// When its first attempt started (RFC 3339).
    #[serde(default)]
    pub started: String,
    /// When it ended (RFC 3339).
    #[serde(default)]
    pub finished: String,
    /// Milliseconds from start to end.
    #[serde(default)]
    pub duration_ms: u64,
    /// The last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The fan-out's item count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<u64>,
}

/// An attempt in flight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Started {
    /// Which attempt.
    pub attempt: u32,
    /// The idempotency key the call was given.
    pub key: String,
    /// When (RFC 3339).
    pub at: String,
}

/// The current time, RFC 3339.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A new plan run id: the start time and a random suffix.
pub fn new_run_id() -> String {
    let now = time::OffsetDateTime::now_utc();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut x = (nanos as u64) ^ (u64::from(std::process::id()) << 32);
    // splitmix64: spreads the clock's low bits over the suffix.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    format!(
        "p{:04}{:02}{:02}T{:02}{:02}{:02}-{:08x}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        x as u32
    )
}

/// Plan runs in a store.
#[derive(Clone)]
pub struct Progress {
    store: SharedStore,
    bucket: String,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("backend", &self.store.backend())
            .field("bucket", &self.bucket)
            .finish()
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Backend {
        backend: "plans",
        message: format!("the record at `{key}` does not decode: {e}"),
    })
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn item_key(id: &str, step: &str, index: usize) -> String {
    format!("item/{id}/{step}/{index:08}")
}

impl Progress {
    /// Plan runs in `bucket` of `store`.
    pub fn new(store: SharedStore, bucket: impl Into<String>) -> Self {
        Self {
            store,
            bucket: bucket.into(),
        }
    }

    /// The store.
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, u64)>, StoreError> {
        match self.store.get(&self.bucket, key).await? {
            None => Ok(None),
            Some(e) => Ok(Some((decode(key, &e.value)?, e.revision))),
        }
    }

    /// Records a new run.
    pub async fn create_run(&self, rec: &RunRecord) -> Result<u64, StoreError> {
        self.store
            .put(
                &self.bucket,
                &format!("run/{}", rec.id),
                &encode(rec),
                Expect::Absent,
                None,
            )
            .await
    }

    /// A run and its revision.
    pub async fn run(&self, id: &str) -> Result<Option<(RunRecord, u64)>, StoreError> {
        self.get(&format!("run/{id}")).await
    }

    /// Replaces a run's record if it is still at `revision`.
    pub async fn update_run(&self, rec: &RunRecord, revision: u64) -> Result<u64, StoreError> {
        self.store
            .put(
                &self.bucket,
                &format!("run/{}", rec.id),
                &encode(rec),
                Expect::Revision(revision),
                None,
            )
            .await
    }

    /// Runs, newest first (by start time), at most `limit`.
    pub async fn runs(&self, limit: usize) -> Result<Vec<RunRecord>, StoreError> {
        let mut keys = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .list(&self.bucket, "run/", after.as_deref(), 1000)
                .await?;
            keys.extend(page.keys);
            match page.cursor {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        // Ids sort by their start second; within a second, by start time.
        keys.sort();
        keys.reverse();
        let mut out = Vec::new();
        for k in keys {
            if out.len() >= limit
                && let Some(last) = out
                    .last()
                    .map(|r: &RunRecord| r.id.get(..16).unwrap_or("").to_string())
                && !k.get(4..20).unwrap_or("").starts_with(&last)
            {
                break;
            }
            if let Some((r, _)) = self.get::<RunRecord>(&k).await? {
                out.push(r);
            }
        }
        out.sort_by(|a, b| b.started.cmp(&a.started));
        out.truncate(limit);
        Ok(out)
    }

    /// A finished step.
    pub async fn step(&self, id: &str, step: &str) -> Result<Option<StepRecord>, StoreError> {
        Ok(self
            .get(&format!("step/{id}/{step}"))
            .await?
            .map(|(r, _)| r))
    }

    /// Commits a finished step once: if another process committed it
    /// first, its record is the one returned.
    pub async fn commit_step(
        &self,
        id: &str,
        step: &str,
        rec: StepRecord,
    ) -> Result<StepRecord, StoreError> {
        self.commit(&format!("step/{id}/{step}"), rec).await
    }

    /// A finished call of a fan-out.
    pub async fn item(
        &self,
        id: &str,
        step: &str,
        index: usize,
    ) -> Result<Option<StepRecord>, StoreError> {
        Ok(self.get(&item_key(id, step, index)).await?.map(|(r, _)| r))
    }

    /// Commits a finished call of a fan-out once.
    pub async fn commit_item(
        &self,
        id: &str,
        step: &str,
        index: usize,
        rec: StepRecord,
    ) -> Result<StepRecord, StoreError> {
        self.commit(&item_key(id, step, index), rec).await
    }

    async fn commit(&self, key: &str, rec: StepRecord) -> Result<StepRecord, StoreError> {
        match self
            .store
            .put(&self.bucket, key, &encode(&rec), Expect::Absent, None)
            .await
        {
            Ok(_) => Ok(rec),
            Err(StoreError::Conflict { .. }) => match self.get::<StepRecord>(key).await? {
                Some((r, _)) => Ok(r),
                None => Err(StoreError::Backend {
                    backend: "plans",
                    message: format!("`{key}` was committed and then removed"),
                }),
            },
            Err(e) => Err(e),
        }
    }

    /// Takes the lease on run `id`: free, expired, or held by a process of
    /// this host that is gone (killed) — else refused, naming the holder.
    pub async fn acquire_lease(&self, id: &str) -> Result<Lease, LeaseRefused> {
        let key = format!("lease/{id}");
        let holder = LeaseHolder::here();
        let bytes = encode(&holder);
        for _ in 0..3 {
            match self
                .store
                .put(&self.bucket, &key, &bytes, Expect::Absent, Some(LEASE_TTL))
                .await
            {
                Ok(revision) => {
                    return Ok(Lease {
                        key,
                        revision,
                        holder,
                    });
                }
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(LeaseRefused::Store(e)),
            }
            let Some((current, revision)) = self
                .get::<LeaseHolder>(&key)
                .await
                .map_err(LeaseRefused::Store)?
            else {
                continue; // expired in between: try again
            };
            if !current.is_dead_here() {
                return Err(LeaseRefused::Held(current));
            }
            match self
                .store
                .put(
                    &self.bucket,
                    &key,
                    &bytes,
                    Expect::Revision(revision),
                    Some(LEASE_TTL),
                )
                .await
            {
                Ok(revision) => {
                    return Ok(Lease {
                        key,
                        revision,
                        holder,
                    });
                }
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(LeaseRefused::Store(e)),
            }
        }
        match self.get::<LeaseHolder>(&key).await {
            Ok(Some((h, _))) => Err(LeaseRefused::Held(h)),
            Ok(None) => Err(LeaseRefused::Store(StoreError::Backend {
                backend: "plans",
                message: format!("the lease `{key}` keeps changing"),
            })),
            Err(e) => Err(LeaseRefused::Store(e)),
        }
    }

    /// Renews a lease; an error when it was lost (taken over or expired).
    pub async fn renew_lease(&self, lease: &mut Lease) -> Result<(), StoreError> {
        lease.revision = self
            .store
            .put(
                &self.bucket,
                &lease.key,
                &encode(&lease.holder),
                Expect::Revision(lease.revision),
                Some(LEASE_TTL),
            )
            .await?;
        Ok(())
    }

    /// Gives a lease back.
    pub async fn release_lease(&self, lease: Lease) {
        if let Err(e) = self
            .store
            .delete(&self.bucket, &lease.key, Expect::Revision(lease.revision))
            .await
        {
            tracing::warn!("giving back the plan run lease `{}`: {e}", lease.key);
        }
    }

    /// Removes a failed step's record (a resume tries it again).
    pub async fn forget_step(&self, id: &str, step: &str) -> Result<(), StoreError> {
        self.store
            .delete(&self.bucket, &format!("step/{id}/{step}"), Expect::Any)
            .await
    }

    /// Notes an attempt in flight (before its call starts), as a hint that
    /// becomes durable with the next durable write.
    pub async fn mark_started(
        &self,
        id: &str,
        step: &str,
        index: Option<usize>,
        started: &Started,
    ) -> Result<(), StoreError> {
        let key = match index {
            Some(i) => format!("started/{id}/{step}/{i:08}"),
            None => format!("started/{id}/{step}"),
        };
        // A hint: a crash may lose it (then a resume numbers attempts from
        // the last one that was kept), and it costs no fsync of its own.
        self.store
            .put_hint(&self.bucket, &key, &encode(started))
            .await
    }

    /// The attempt last started for a step (or one call of a fan-out).
    pub async fn started(
        &self,
        id: &str,
        step: &str,
        index: Option<usize>,
    ) -> Result<Option<Started>, StoreError> {
        let key = match index {
            Some(i) => format!("started/{id}/{step}/{i:08}"),
            None => format!("started/{id}/{step}"),
        };
        Ok(self.get(&key).await?.map(|(r, _)| r))
    }
}
