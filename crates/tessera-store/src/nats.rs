//! The NATS backend: each Tessera bucket is a NATS JetStream key-value
//! bucket, `{prefix}_{bucket}` (stream `KV_{prefix}_{bucket}`), created on
//! the first write with a history of 1 (only the last value of a key is
//! kept) and default limits: the stream async-nats's `create_key_value`
//! would make, made directly because that call first reads the account
//! information in a form NATS 2.9 does not send. Two processes creating a
//! bucket at once both succeed (JetStream accepts creating a stream that
//! exists with the same configuration; on any other refusal the bucket is
//! looked up again). Reading or listing a bucket that does not exist yet
//! finds nothing; it is not an error, and creates nothing.
//!
//! **Revisions** are the stream sequences JetStream gives each write, so
//! they grow within a bucket. Conditional writes go through JetStream's own
//! check, the `Nats-Expected-Last-Subject-Sequence` header: a write expecting
//! a key absent sends the sequence of the key's last message (0: none, else
//! a deletion marker's or an expired value's), a compare-and-swap sends the
//! revision it expects. Another writer in between makes the server refuse
//! the write, which is a [`StoreError::Conflict`]. An increment reads the
//! counter, adds, and writes on that condition, retrying until no other
//! writer came in between; so no increment is lost however many writers
//! there are.
//!
//! **Keys.** NATS keys allow only `-/_=.`, ASCII letters and digits, not
//! starting or ending with `.` nor holding `..`. A Tessera key that is such a
//! key is stored as it is (so other NATS clients see the same names); any
//! other key (a space, `:`, `é`, `*`, `>`…) is stored as `_x.` followed by
//! the unpadded base64url of its UTF-8 bytes, and so is every key that
//! itself starts with `_x.`, so that a stored key decodes to one Tessera key
//! only. Listing decodes the keys; a key another client stored under `_x.`
//! that is not valid base64url of a Tessera key is left out.
//!
//! **TTL.** NATS 2.9 has no per-key expiry (per-message TTLs came with 2.11
//! and this backend does not use them), so a put with a TTL publishes its
//! value with a header, `Tessera-Expires: <milliseconds since the Unix
//! epoch>`, on the key's subject (`$KV.{bucket}.{key}`), and reads, listings
//! and conditions treat a value whose time has passed as absent: [`Store::get`]
//! and [`Store::get_many`] return `None`, [`Store::list`] and
//! [`Store::buckets`] leave it out, [`Expect::Absent`] is met and
//! [`Expect::Revision`] is not, an increment starts from 0. Reads see the
//! header because they fetch the key's last message from the stream (the
//! direct get API), and listings because they read every key's last message
//! headers (a headers-only consumer). Plainly: **an expired value is not
//! removed from the stream**; it stays there, taking space, until the key is
//! written or deleted again, and other NATS clients, which do not know the
//! header, still read it as the key's value. The expiry is judged by the
//! clock of the host that reads, against the clock of the host that wrote.
//! A value written without a TTL is a plain key-value entry (no header, no
//! envelope around the value), readable by any NATS KV client.
//!
//! **Listing** has no ordered index on NATS: every listed page reads the
//! headers of every key of the bucket (a headers-only consumer from the
//! last message of each key), then decodes, filters, sorts and cuts the
//! page; **a page costs a full key scan**. [`Store::buckets`] lists the
//! streams and reads keys of each bucket until it finds a live one.
//!
//! **Deletes** write the KV deletion marker (a `KV-Operation: DEL` message),
//! as NATS KV clients do; with history 1 it replaces the value.
//!
//! **Size.** A value travels in one NATS message, limited by the server's
//! `max_payload` (1 MB by default; it can be raised in the server's
//! configuration, up to 64 MB). A larger value is refused before it is
//! sent, with a [`StoreError::Backend`] naming the limit.
//!
//! **Errors.** A refused condition is a [`StoreError::Conflict`]; when the
//! connection is down or the server does not answer in time, the operation
//! fails with [`StoreError::Unavailable`] (the client keeps reconnecting in
//! the background); anything else the server refuses is a
//! [`StoreError::Backend`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::connection::State;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::context::{CreateStreamErrorKind, GetStreamErrorKind};
use async_nats::jetstream::response::Response;
use async_nats::jetstream::stream::{
    self, DirectGetErrorKind, DiscardPolicy, LastRawMessageErrorKind, StorageType, Stream,
};
use async_nats::jetstream::{self, ErrorCode};
use async_nats::{ConnectOptions, HeaderMap, HeaderValue};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};

use crate::{Entry, Expect, Page, Store, StoreError, add_to_counter, check_bucket, check_key};

const BACKEND: &str = "nats";

/// How long connecting may take before the server counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a request (a read, a write's acknowledgement, a JetStream API
/// call) may wait for its answer; past it the store is unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The prefix of an encoded key.
const MARKER: &str = "_x.";

/// The header that carries a value's expiry (ms since the Unix epoch).
const EXPIRES: &str = "Tessera-Expires";

/// The header of NATS KV deletion and purge markers.
const KV_OPERATION: &str = "KV-Operation";

/// The header of markers the server itself writes (NATS 2.11+).
const MARKER_REASON: &str = "Nats-Marker-Reason";

/// How many times a write that no stream answered is tried again after
/// opening (or creating) its bucket afresh: a stream created a moment ago
/// by another connection may not be listening on its subjects yet. The
/// waits in between grow from 10 ms to 80 ms.
const STREAM_RETRIES: u32 = 5;

/// Keys read per request while scanning a bucket.
const SCAN_BATCH: usize = 1024;

/// How long the server keeps a scan's consumer if the scan is interrupted.
const SCAN_IDLE: Duration = Duration::from_secs(10);

/// Requests in flight at once in the batch operations.
const CONCURRENCY: usize = 32;

/// How many times an increment reads and writes again after other writers
/// changed the counter in between.
const INCREMENT_ATTEMPTS: u32 = 1000;

/// How many times a write expecting an absent key retries when the key's
/// deletion marker or expired value was replaced in between.
const ABSENT_ATTEMPTS: u32 = 100;

/// How to reach NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsOptions {
    /// Server URL, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// Prefix of the JetStream KV bucket names: Tessera bucket `notes` is
    /// NATS bucket `{prefix}_notes`.
    pub prefix: String,
    /// A NATS credentials file (`.creds`), if the server wants one.
    pub credentials: Option<PathBuf>,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            prefix: "tessera".into(),
            credentials: None,
        }
    }
}

/// The part of JetStream's account information the connection checks.
#[derive(serde::Deserialize)]
struct AccountInfo {
    #[serde(rename = "limits")]
    _limits: serde::de::IgnoredAny,
}

/// An opened NATS bucket: its stream and its subjects' prefix.
struct Bucket {
    stream: Stream,
    /// `$KV.{prefix}_{bucket}.`
    subjects: String,
}

/// The NATS store: JetStream key-value buckets on one connection.
///
/// Tessera bucket `notes` is the NATS KV bucket `{prefix}_notes`, created on
/// its first write. Keys that are not NATS keys are stored as `_x.` and the
/// base64url of their bytes; a TTL is a `Tessera-Expires` header that reads
/// honor (an expired value stays in the stream until the key is written
/// again); listing a page reads every key of the bucket. The module source
/// (`nats.rs`) explains each of these.
pub struct Nats {
    client: async_nats::Client,
    js: jetstream::Context,
    /// The URL without any user or password in it.
    url: String,
    prefix: String,
    has_credentials: bool,
    /// Buckets opened so far (Tessera name → bucket). Absent buckets are
    /// not remembered: another process may create them.
    buckets: Mutex<HashMap<String, Arc<Bucket>>>,
}

impl std::fmt::Debug for Nats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nats")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("credentials", &self.has_credentials)
            .finish()
    }
}

/// Why a publish failed.
enum Failed {
    /// The key's last revision was not the expected one.
    WrongSequence,
    /// Anything else.
    Store(StoreError),
}

impl From<StoreError> for Failed {
    fn from(e: StoreError) -> Self {
        Failed::Store(e)
    }
}

/// The last message of a key.
struct Last {
    /// Its sequence.
    revision: u64,
    /// The value, if the message holds one that has not expired (`None`: a
    /// deletion marker or an expired value).
    value: Option<Bytes>,
}

/// The revision of a key that has a value.
fn live_revision(last: &Option<Last>) -> Option<u64> {
    last.as_ref()
        .and_then(|l| l.value.as_ref().map(|_| l.revision))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Whether a message with these headers holds a value at `now`.
fn holds_value(headers: &HeaderMap, now: u64) -> bool {
    if headers
        .get(KV_OPERATION)
        .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"))
        || headers.get(MARKER_REASON).is_some()
    {
        return false;
    }
    match headers.get(EXPIRES) {
        None => true,
        // A header this backend did not write: ignored rather than
        // hiding the value.
        Some(v) => v.as_str().trim().parse::<u64>().map_or(true, |e| e > now),
    }
}

/// Whether `key` can be a NATS key as it is.
fn nats_safe(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && !key.contains("..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'=' | b'.'))
}

/// The NATS key of a Tessera key.
fn encode_key(key: &str) -> String {
    if nats_safe(key) && !key.starts_with(MARKER) {
        key.to_string()
    } else {
        format!("{MARKER}{}", URL_SAFE_NO_PAD.encode(key.as_bytes()))
    }
}

/// The Tessera key of a NATS key (`None`: it stands for no Tessera key).
fn decode_key(nats_key: &str) -> Option<String> {
    let key = match nats_key.strip_prefix(MARKER) {
        None => nats_key.to_string(),
        Some(encoded) => String::from_utf8(URL_SAFE_NO_PAD.decode(encoded).ok()?).ok()?,
    };
    check_key(&key).ok()?;
    Some(key)
}

/// `url` without the user and password it may carry.
fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r),
        None => (String::new(), url),
    };
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rfind('@') {
        Some(at) => format!("{scheme}***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

fn conflict(bucket: &str, key: &str, expected: Expect, found: Option<u64>) -> StoreError {
    StoreError::Conflict {
        bucket: bucket.to_string(),
        key: key.to_string(),
        expected,
        found,
    }
}

/// A short pause that grows with the attempts and varies between callers,
/// so that writers contending for one key do not retry in lockstep.
async fn back_off(attempt: u32) {
    if attempt < 3 {
        tokio::task::yield_now().await;
        return;
    }
    let jitter = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let max_us = 200 * attempt.min(50);
    tokio::time::sleep(Duration::from_micros(u64::from(jitter % max_us))).await;
}

impl Nats {
    /// Connects to the server at `options.url` (giving up after 5 s: an
    /// unreachable server is a [`StoreError::Unavailable`] naming the URL)
    /// and checks that it has JetStream.
    pub async fn connect(options: NatsOptions) -> Result<Nats, StoreError> {
        let url = redact(&options.url);
        let unavailable = |message: String| StoreError::Unavailable {
            backend: BACKEND,
            at: url.clone(),
            message,
        };
        check_bucket(&options.prefix).map_err(|e| StoreError::Settings {
            origin: "NATS options".into(),
            field: "prefix".into(),
            message: e.to_string(),
        })?;
        let mut connect = ConnectOptions::new()
            .name("tessera")
            .connection_timeout(CONNECT_TIMEOUT)
            .request_timeout(Some(REQUEST_TIMEOUT));
        if let Some(path) = &options.credentials {
            connect = connect.credentials_file(path).await.map_err(|e| {
                unavailable(format!(
                    "cannot use the credentials file {}: {e}",
                    path.display()
                ))
            })?;
        }
        // The client bounds each attempt; this bounds the whole of it.
        let client = match tokio::time::timeout(
            CONNECT_TIMEOUT + Duration::from_secs(1),
            connect.connect(options.url.as_str()),
        )
        .await
        {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(unavailable(format!("cannot connect: {e}"))),
            Err(_) => {
                return Err(unavailable(format!(
                    "cannot connect: no answer within {} s",
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
        };
        let js = jetstream::new(client.clone());
        // The account information, read loosely (`query_account` expects
        // fields NATS 2.9 does not send).
        let no_jetstream = |e: &dyn std::fmt::Display| {
            unavailable(format!(
                "connected, but JetStream does not answer (is the server started with JetStream enabled, `-js`?): {e}"
            ))
        };
        match js.request::<_, _, Response<AccountInfo>>("INFO", b"").await {
            Ok(Response::Ok(_)) => {}
            Ok(Response::Err { error }) => return Err(no_jetstream(&error)),
            Err(e) => return Err(no_jetstream(&e)),
        }
        Ok(Nats {
            client,
            js,
            url,
            prefix: options.prefix,
            has_credentials: options.credentials.is_some(),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// The NATS bucket of a Tessera bucket.
    fn nats_bucket(&self, bucket: &str) -> String {
        format!("{}_{bucket}", self.prefix)
    }

    /// An error of an operation: [`StoreError::Unavailable`] when it timed
    /// out or the connection is down, else [`StoreError::Backend`].
    fn failure(&self, what: &str, e: impl std::fmt::Display, timed_out: bool) -> StoreError {
        if timed_out || self.client.connection_state() != State::Connected {
            StoreError::Unavailable {
                backend: BACKEND,
                at: self.url.clone(),
                message: format!("{what}: {e}"),
            }
        } else {
            StoreError::Backend {
                backend: BACKEND,
                message: format!("{what}: {e}"),
            }
        }
    }

    fn remembered(&self, bucket: &str) -> Option<Arc<Bucket>> {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(bucket)
            .cloned()
    }

    fn remember(&self, bucket: &str, stream: Stream, subjects: String) -> Arc<Bucket> {
        let b = Arc::new(Bucket { stream, subjects });
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(bucket.to_string(), b.clone());
        b
    }

    fn forget(&self, bucket: &str) {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(bucket);
    }

    /// The bucket, if it exists.
    async fn open(&self, bucket: &str) -> Result<Option<Arc<Bucket>>, StoreError> {
        if let Some(b) = self.remembered(bucket) {
            return Ok(Some(b));
        }
        let name = self.nats_bucket(bucket);
        match self.js.get_stream(format!("KV_{name}")).await {
            Ok(stream) => Ok(Some(self.remember(bucket, stream, format!("$KV.{name}.")))),
            Err(e) => match e.kind() {
                GetStreamErrorKind::JetStream(j)
                    if j.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(None)
                }
                GetStreamErrorKind::Request => Err(self.failure(
                    &format!("opening bucket `{bucket}` (NATS bucket `{name}`)"),
                    e,
                    true,
                )),
                _ => Err(self.failure(
                    &format!("opening bucket `{bucket}` (NATS bucket `{name}`)"),
                    e,
                    false,
                )),
            },
        }
    }

    /// The bucket, created if it does not exist yet.
    async fn open_or_create(&self, bucket: &str) -> Result<Arc<Bucket>, StoreError> {
        if let Some(b) = self.open(bucket).await? {
            return Ok(b);
        }
        let name = self.nats_bucket(bucket);
        // The stream `create_key_value` makes for a bucket with a history of
        // 1; made here because `create_key_value` first asks for the account
        // information in a form that NATS 2.9 does not give.
        let created = self
            .js
            .create_stream(stream::Config {
                name: format!("KV_{name}"),
                description: Some(format!("Tessera bucket `{bucket}`")),
                subjects: vec![format!("$KV.{name}.>")],
                max_messages_per_subject: 1,
                discard: DiscardPolicy::New,
                allow_rollup: true,
                deny_delete: true,
                deny_purge: false,
                allow_direct: true,
                storage: StorageType::File,
                num_replicas: 1,
                ..Default::default()
            })
            .await;
        match created {
            Ok(stream) => Ok(self.remember(bucket, stream, format!("$KV.{name}."))),
            // Another process (or task) may have created it first, with a
            // configuration of its own: then it is there to be opened.
            Err(e) => match self.open(bucket).await? {
                Some(b) => Ok(b),
                None => Err(self.failure(
                    &format!("creating bucket `{bucket}` (NATS bucket `{name}`)"),
                    &e,
                    e.kind() == CreateStreamErrorKind::TimedOut,
                )),
            },
        }
    }

    /// The last message of a key (`None`: the key never had one).
    async fn last(&self, bucket: &str, b: &Bucket, nkey: &str) -> Result<Option<Last>, StoreError> {
        let subject = format!("{}{nkey}", b.subjects);
        let what = || format!("reading key {nkey:?} of bucket `{bucket}`");
        let message = if b.stream.cached_info().config.allow_direct {
            match b.stream.direct_get_last_for_subject(subject).await {
                Ok(m) => m,
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(None),
                Err(e) => {
                    self.forget(bucket);
                    let timed_out = e.kind() == DirectGetErrorKind::TimedOut;
                    return Err(self.failure(&what(), e, timed_out));
                }
            }
        } else {
            match b.stream.get_last_raw_message_by_subject(&subject).await {
                Ok(m) => m,
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
                Err(e) => {
                    self.forget(bucket);
                    return Err(self.failure(&what(), e, false));
                }
            }
        };
        let value = holds_value(&message.headers, now_ms()).then_some(message.payload);
        Ok(Some(Last {
            revision: message.sequence,
            value,
        }))
    }

    /// Refuses a value the server would not take in one message.
    fn check_size(&self, bucket: &str, key: &str, len: usize) -> Result<(), StoreError> {
        let max = self.client.max_payload();
        if len > max {
            return Err(self.too_large(bucket, key, &format!("{len} bytes"), max));
        }
        Ok(())
    }

    fn too_large(&self, bucket: &str, key: &str, size: &str, max: usize) -> StoreError {
        StoreError::Backend {
            backend: BACKEND,
            message: format!(
                "bucket `{bucket}`, key {key:?}: the value ({size}) is larger than the NATS server's max_payload ({max} bytes); \
                 raise max_payload in the server's configuration or store smaller values"
            ),
        }
    }

    /// Publishes one message on a key's subject: a value (with its expiry,
    /// if any) or a deletion marker, on the condition that the key's last
    /// message is `expected` (0: none). A bucket removed behind this
    /// process's back is created again; a write that finds no stream
    /// listening is tried again, up to [`STREAM_RETRIES`] times in all.
    #[allow(clippy::too_many_arguments)]
    async fn publish(
        &self,
        bucket: &str,
        key: &str,
        b: &Arc<Bucket>,
        nkey: &str,
        payload: Bytes,
        expected: Option<u64>,
        expires: Option<u64>,
        delete: bool,
    ) -> Result<u64, Failed> {
        let mut headers = HeaderMap::new();
        if let Some(r) = expected {
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                HeaderValue::from(r),
            );
        }
        if let Some(e) = expires {
            headers.insert(EXPIRES, HeaderValue::from(e));
        }
        if delete {
            headers.insert(KV_OPERATION, "DEL");
        }
        let mut b = b.clone();
        let mut reopened = 0u32;
        loop {
            let subject = format!("{}{nkey}", b.subjects);
            let sent = if headers.is_empty() {
                self.js.publish(subject, payload.clone()).await
            } else {
                self.js
                    .publish_with_headers(subject, headers.clone(), payload.clone())
                    .await
            };
            let acked = match sent {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            let e = match acked {
                Ok(ack) => return Ok(ack.sequence),
                Err(e) => e,
            };
            let what = || format!("writing key {key:?} of bucket `{bucket}`");
            return Err(match e.kind() {
                PublishErrorKind::WrongLastSequence => Failed::WrongSequence,
                // No stream answered: the bucket was removed behind this
                // process's back (it is created again), or it was created
                // a moment ago and the server is not yet listening on its
                // subjects (a short wait, then the write again).
                PublishErrorKind::StreamNotFound if reopened < STREAM_RETRIES => {
                    self.forget(bucket);
                    if reopened > 0 {
                        tokio::time::sleep(Duration::from_millis(5 << reopened)).await;
                    }
                    b = self.open_or_create(bucket).await?;
                    reopened += 1;
                    continue;
                }
                PublishErrorKind::MaxPayloadExceeded => {
                    let size = format!("{} bytes, plus its headers", payload.len());
                    Failed::Store(self.too_large(bucket, key, &size, self.client.max_payload()))
                }
                PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {
                    Failed::Store(self.failure(&what(), e, true))
                }
                _ => Failed::Store(self.failure(&what(), e, false)),
            });
        }
    }

    /// Reads the headers of the last message of every key of a bucket and
    /// calls `visit` with each Tessera key and whether it holds a value,
    /// until `visit` returns false. A key written during the scan may be
    /// visited again, later, with its newer state.
    async fn scan(
        &self,
        bucket: &str,
        b: &Bucket,
        mut visit: impl FnMut(String, bool) -> bool + Send,
    ) -> Result<(), StoreError> {
        let what = format!("listing the keys of bucket `{bucket}`");
        let consumer: PullConsumer = b
            .stream
            .create_consumer(pull::Config {
                description: Some("tessera key listing".into()),
                deliver_policy: DeliverPolicy::LastPerSubject,
                ack_policy: AckPolicy::None,
                headers_only: true,
                filter_subject: format!("{}>", b.subjects),
                inactive_threshold: SCAN_IDLE,
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(|e| self.failure(&what, e, false))?;
        let result = async {
            if consumer.cached_info().num_pending == 0 {
                return Ok(());
            }
            let now = now_ms();
            loop {
                let mut batch = consumer
                    .fetch()
                    .max_messages(SCAN_BATCH)
                    .messages()
                    .await
                    .map_err(|e| self.failure(&what, e, false))?;
                let mut got = 0usize;
                let mut pending = None;
                loop {
                    let next = tokio::time::timeout(REQUEST_TIMEOUT, batch.next())
                        .await
                        .map_err(|_| self.failure(&what, "no answer", true))?;
                    let Some(message) = next else { break };
                    let message = message.map_err(|e| self.failure(&what, e, false))?;
                    got += 1;
                    pending = message.info().ok().map(|i| i.pending);
                    let holds = message.headers.as_ref().is_none_or(|h| holds_value(h, now));
                    let Some(key) = message
                        .subject
                        .as_str()
                        .strip_prefix(b.subjects.as_str())
                        .and_then(decode_key)
                    else {
                        continue;
                    };
                    if !visit(key, holds) {
                        return Ok(());
                    }
                }
                if got == 0 || pending == Some(0) {
                    return Ok(());
                }
            }
        }
        .await;
        // The consumer would go away by itself after SCAN_IDLE; removing it
        // now keeps the server tidy without making the caller wait.
        let stream = b.stream.clone();
        let name = consumer.cached_info().name.clone();
        tokio::spawn(async move {
            let _ = stream.delete_consumer(&name).await;
        });
        result
    }

    async fn get_in(
        &self,
        bucket: &str,
        b: &Bucket,
        key: &str,
    ) -> Result<Option<Entry>, StoreError> {
        let last = self.last(bucket, b, &encode_key(key)).await?;
        Ok(last.and_then(|l| {
            l.value.map(|v| Entry {
                value: v.to_vec(),
                revision: l.revision,
            })
        }))
    }
}

#[async_trait::async_trait]
impl Store for Nats {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Entry>, StoreError> {
        check_bucket(bucket)?;
        check_key(key)?;
        match self.open(bucket).await? {
            None => Ok(None),
            Some(b) => self.get_in(bucket, &b, key).await,
        }
    }

    async fn put(
        &self,
        bucket: &str,
        key: &str,
        value: &[u8],
        expect: Expect,
        ttl: Option<Duration>,
    ) -> Result<u64, StoreError> {
        check_bucket(bucket)?;
        check_key(key)?;
        self.check_size(bucket, key, value.len())?;
        let nkey = encode_key(key);
        let expires = ttl.map(|t| {
            now_ms().saturating_add(u64::try_from(t.as_millis().max(1)).unwrap_or(u64::MAX))
        });
        let b = self.open_or_create(bucket).await?;
        let payload = Bytes::copy_from_slice(value);
        let publish = |expected| {
            self.publish(
                bucket,
                key,
                &b,
                &nkey,
                payload.clone(),
                expected,
                expires,
                false,
            )
        };
        match expect {
            Expect::Any => match publish(None).await {
                Ok(r) => Ok(r),
                Err(Failed::Store(e)) => Err(e),
                // No condition was sent.
                Err(Failed::WrongSequence) => Err(conflict(bucket, key, expect, None)),
            },
            Expect::Absent => {
                // First as a key never written, the common case; then on
                // the deletion marker or expired value found.
                let mut expected = 0;
                for attempt in 0..ABSENT_ATTEMPTS {
                    match publish(Some(expected)).await {
                        Ok(r) => return Ok(r),
                        Err(Failed::Store(e)) => return Err(e),
                        Err(Failed::WrongSequence) => {}
                    }
                    match self.last(bucket, &b, &nkey).await? {
                        Some(Last {
                            revision,
                            value: Some(_),
                        }) => return Err(conflict(bucket, key, expect, Some(revision))),
                        Some(Last { revision, .. }) => expected = revision,
                        None => expected = 0,
                    }
                    if attempt > 0 {
                        back_off(attempt).await;
                    }
                }
                Err(conflict(bucket, key, expect, None))
            }
            Expect::Revision(r) => {
                // Read first: the value at `r` may have expired, and then
                // the key is absent, not at `r`.
                let last = self.last(bucket, &b, &nkey).await?;
                if live_revision(&last) != Some(r) {
                    return Err(conflict(bucket, key, expect, live_revision(&last)));
                }
                match publish(Some(r)).await {
                    Ok(rev) => Ok(rev),
                    Err(Failed::Store(e)) => Err(e),
                    Err(Failed::WrongSequence) => {
                        let last = self.last(bucket, &b, &nkey).await?;
                        Err(conflict(bucket, key, expect, live_revision(&last)))
                    }
                }
            }
        }
    }

    async fn delete(&self, bucket: &str, key: &str, expect: Expect) -> Result<(), StoreError> {
        check_bucket(bucket)?;
        check_key(key)?;
        let nkey = encode_key(key);
        let Some(b) = self.open(bucket).await? else {
            return match expect {
                Expect::Revision(_) => Err(conflict(bucket, key, expect, None)),
                Expect::Any | Expect::Absent => Ok(()),
            };
        };
        let expected = match expect {
            Expect::Any => None,
            Expect::Absent => {
                let last = self.last(bucket, &b, &nkey).await?;
                return match live_revision(&last) {
                    Some(r) => Err(conflict(bucket, key, expect, Some(r))),
                    None => Ok(()),
                };
            }
            Expect::Revision(r) => {
                let last = self.last(bucket, &b, &nkey).await?;
                if live_revision(&last) != Some(r) {
                    return Err(conflict(bucket, key, expect, live_revision(&last)));
                }
                Some(r)
            }
        };
        match self
            .publish(bucket, key, &b, &nkey, Bytes::new(), expected, None, true)
            .await
        {
            Ok(_) => Ok(()),
            Err(Failed::Store(e)) => Err(e),
            Err(Failed::WrongSequence) => {
                let last = self.last(bucket, &b, &nkey).await?;
                Err(conflict(bucket, key, expect, live_revision(&last)))
            }
        }
    }

    async fn increment(&self, bucket: &str, key: &str, delta: i64) -> Result<i64, StoreError> {
        check_bucket(bucket)?;
        check_key(key)?;
        let nkey = encode_key(key);
        let b = self.open_or_create(bucket).await?;
        for attempt in 0..INCREMENT_ATTEMPTS {
            let last = self.last(bucket, &b, &nkey).await?;
            let (current, expected) = match &last {
                None => (None, 0),
                Some(l) => (l.value.as_deref(), l.revision),
            };
            let n = add_to_counter(bucket, key, current, delta)?;
            let payload = Bytes::from(n.to_string());
            match self
                .publish(bucket, key, &b, &nkey, payload, Some(expected), None, false)
                .await
            {
                Ok(_) => return Ok(n),
                Err(Failed::Store(e)) => return Err(e),
                Err(Failed::WrongSequence) => back_off(attempt).await,
            }
        }
        Err(StoreError::Backend {
            backend: BACKEND,
            message: format!(
                "bucket `{bucket}`, key {key:?}: the increment gave up after {INCREMENT_ATTEMPTS} attempts, each overtaken by another writer"
            ),
        })
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        check_bucket(bucket)?;
        let Some(b) = self.open(bucket).await? else {
            return Ok(Page::default());
        };
        // Each key's latest state seen (a key written during the scan comes
        // again with its newer state).
        let mut seen: BTreeMap<String, bool> = BTreeMap::new();
        self.scan(bucket, &b, |key, holds| {
            if key.starts_with(prefix) && after.is_none_or(|a| key.as_str() > a) {
                seen.insert(key, holds);
            }
            true
        })
        .await?;
        let mut live = seen.into_iter().filter(|(_, holds)| *holds).map(|(k, _)| k);
        let keys: Vec<String> = live.by_ref().take(limit).collect();
        let more = live.next().is_some();
        Ok(Page {
            cursor: if more { keys.last().cloned() } else { None },
            keys,
        })
    }

    async fn buckets(&self) -> Result<Vec<String>, StoreError> {
        let what = "listing the buckets";
        let ours = format!("KV_{}_", self.prefix);
        let mut candidates = Vec::new();
        let mut streams = self.js.streams();
        while let Some(info) = streams.next().await {
            let info = info.map_err(|e| self.failure(what, e, false))?;
            if let Some(name) = info.config.name.strip_prefix(ours.as_str())
                && check_bucket(name).is_ok()
                && info.state.messages > 0
            {
                candidates.push(name.to_string());
            }
        }
        let mut out = Vec::new();
        for name in candidates {
            let Some(b) = self.open(&name).await? else {
                continue;
            };
            let mut any = false;
            self.scan(&name, &b, |_, holds| {
                any = holds;
                !holds
            })
            .await?;
            if any {
                out.push(name);
            }
        }
        out.sort();
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
        let Some(b) = self.open(bucket).await? else {
            return Ok(vec![None; keys.len()]);
        };
        // The futures made first: a closure mapping a stream of borrowed
        // keys does not satisfy the `Send` check of `async_trait`.
        let reads: Vec<_> = keys.iter().map(|k| self.get_in(bucket, &b, k)).collect();
        futures_util::stream::iter(reads)
            .buffered(CONCURRENCY)
            .try_collect()
            .await
    }

    async fn put_many(
        &self,
        bucket: &str,
        entries: &[(String, Vec<u8>)],
    ) -> Result<(), StoreError> {
        check_bucket(bucket)?;
        for (k, v) in entries {
            check_key(k)?;
            self.check_size(bucket, k, v.len())?;
        }
        if entries.is_empty() {
            return Ok(());
        }
        let b = self.open_or_create(bucket).await?;
        let b = &b;
        let writes: Vec<_> = entries
            .iter()
            .map(|(k, v)| async move {
                let nkey = encode_key(k);
                let payload = Bytes::copy_from_slice(v);
                match self
                    .publish(bucket, k, b, &nkey, payload, None, None, false)
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(Failed::Store(e)) => Err(e),
                    Err(Failed::WrongSequence) => Err(conflict(bucket, k, Expect::Any, None)),
                }
            })
            .collect();
        futures_util::stream::iter(writes)
            .buffer_unordered(CONCURRENCY)
            .try_collect::<()>()
            .await
    }

    async fn delete_many(&self, bucket: &str, keys: &[String]) -> Result<(), StoreError> {
        check_bucket(bucket)?;
        for k in keys {
            check_key(k)?;
        }
        let Some(b) = self.open(bucket).await? else {
            return Ok(());
        };
        let b = &b;
        let writes: Vec<_> = keys
            .iter()
            .map(|k| async move {
                let nkey = encode_key(k);
                match self
                    .publish(bucket, k, b, &nkey, Bytes::new(), None, None, true)
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(Failed::Store(e)) => Err(e),
                    Err(Failed::WrongSequence) => Err(conflict(bucket, k, Expect::Any, None)),
                }
            })
            .collect();
        futures_util::stream::iter(writes)
            .buffer_unordered(CONCURRENCY)
            .try_collect::<()>()
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        for key in [
            "plain",
            "a/b.c-d_e=f",
            "with space",
            "é",
            "a:b",
            "*",
            ">",
            "a.*.>",
            ".dot",
            "dot.",
            "a..b",
            "_x.abc",
            "_x.",
            "_x",
            "_xabc",
        ] {
            let n = encode_key(key);
            assert!(nats_safe(&n), "{key:?} -> {n:?}");
            assert_eq!(decode_key(&n).as_deref(), Some(key), "{key:?} -> {n:?}");
        }
        assert_eq!(encode_key("a/b.c"), "a/b.c");
        assert_eq!(encode_key("_xabc"), "_xabc");
        assert!(encode_key("_x.abc").starts_with(MARKER));
        assert!(encode_key("a b").starts_with(MARKER));
        // Not base64url, or not a Tessera key: no key.
        assert_eq!(decode_key("_x.!!"), None);
        assert_eq!(
            decode_key(&format!("{MARKER}{}", URL_SAFE_NO_PAD.encode("a\nb"))),
            None
        );
    }

    #[test]
    fn expiry_and_markers() {
        let mut h = HeaderMap::new();
        assert!(holds_value(&h, 10));
        h.insert(EXPIRES, "11");
        assert!(holds_value(&h, 10));
        assert!(!holds_value(&h, 11));
        let mut d = HeaderMap::new();
        d.insert(KV_OPERATION, "DEL");
        assert!(!holds_value(&d, 0));
        let mut p = HeaderMap::new();
        p.insert(KV_OPERATION, "PURGE");
        assert!(!holds_value(&p, 0));
    }

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redact("nats://u:p@h:4222"), "nats://***@h:4222");
        assert_eq!(redact("h:4222"), "h:4222");
    }
}
