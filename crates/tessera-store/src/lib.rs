//! One store interface for everything in Tessera that must last: the
//! key-value buckets components use through `wasi:keyvalue`, plan progress,
//! and later agents' mailboxes and state.
//!
//! Components are stateless between calls; what they keep lives here. The
//! interface ([`Store`]) is small on purpose, and every operation means the
//! same on each backend:
//!
//! - a **bucket** holds keys in byte order; bucket names are ASCII letters,
//!   digits, `_` and `-` (the names NATS accepts), 1–64 of them;
//! - every write (a put, a delete, an increment) gives the key a new
//!   **revision**, a number that grows within the bucket;
//! - a write can be made **conditional** on the key's current state
//!   ([`Expect`]): absent, or at a given revision (compare-and-swap);
//!   [`StoreError::Conflict`] when it is not;
//! - **increment** adds to a decimal integer kept as text (`"42"`), atomically;
//! - **listing** returns keys in order, a page at a time, with a cursor
//!   (the last key returned);
//! - a put may carry a **TTL**: once it passes, the key reads as absent;
//! - the batch operations ([`Store::get_many`], [`Store::put_many`],
//!   [`Store::delete_many`]) are not atomic (neither backend promises it).
//!
//! A write is acknowledged only once it is stored: the embedded backend
//! commits with fsync (on disk); JetStream acknowledges once the server
//! holds it — with nats-server's default `sync_interval` (2 minutes) that
//! is the server's page cache, which survives a crash of the server process
//! but not of its machine. Where NATS must match the embedded store, run
//! nats-server 2.10+ with `sync_interval: always`, or replicate the stream.
//!
//! Backends: [`Embedded`] (redb, one file in the data directory; the
//! default, needs nothing running) and [`Nats`] (NATS JetStream key-value
//! buckets). [`Stores`] maps bucket names to backends from the host's
//! settings ([`StoreSettings`], the `[store]` table of `<data>/tessera.toml`).

#![deny(missing_docs)]

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

mod embedded;
mod nats;
mod settings;

pub use embedded::Embedded;
pub use nats::{Nats, NatsOptions};
pub use settings::{BackendKind, NatsSettings, StoreSettings, Stores};

/// A value and the revision that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The bytes.
    pub value: Vec<u8>,
    /// The revision of the write that stored them.
    pub revision: u64,
}

/// The state a conditional write expects its key in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expect {
    /// Whatever it is (an unconditional write).
    #[default]
    Any,
    /// No value (never written, deleted, or expired).
    Absent,
    /// The value written at this revision (compare-and-swap).
    Revision(u64),
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Any => f.write_str("any state"),
            Expect::Absent => f.write_str("no value"),
            Expect::Revision(r) => write!(f, "revision {r}"),
        }
    }
}

/// One write of [`Store::write_in_order`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderedWrite {
    /// A put, as [`Store::put`].
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// The state the key must be in.
        expect: Expect,
        /// Its time to live.
        ttl: Option<Duration>,
    },
    /// A delete, as [`Store::delete`].
    Delete {
        /// The key.
        key: String,
        /// The state the key must be in.
        expect: Expect,
    },
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    /// Keys in byte order.
    pub keys: Vec<String>,
    /// Where the next page starts (pass it as `after`); `None` at the end.
    pub cursor: Option<String>,
}

/// What went wrong in a store operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A bucket name the stores do not accept.
    #[error("invalid bucket name `{name}`: {reason}")]
    InvalidBucket {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A key the stores do not accept.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A conditional write found its key in another state.
    #[error("bucket `{bucket}`, key {key:?}: expected {expected}, found {}", found_text(.found))]
    Conflict {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// What the write expected.
        expected: Expect,
        /// The key's revision (`None`: absent, or the backend did not say).
        found: Option<u64>,
    },
    /// An increment of a value that is not a decimal integer.
    #[error("bucket `{bucket}`, key {key:?}: the value is not a decimal integer")]
    NotAnInteger {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// An increment past the range of a 64-bit integer.
    #[error("bucket `{bucket}`, key {key:?}: the increment overflows a 64-bit integer")]
    Overflow {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// The backend cannot be reached or opened.
    #[error("{backend} store {at}: {message}")]
    Unavailable {
        /// `embedded` or `nats`.
        backend: &'static str,
        /// The file or URL.
        at: String,
        /// What happened.
        message: String,
    },
    /// The backend failed an operation.
    #[error("{backend} store: {message}")]
    Backend {
        /// `embedded` or `nats`.
        backend: &'static str,
        /// What happened.
        message: String,
    },
    /// A store setting that cannot be used.
    #[error("{origin}: {field}: {message}")]
    Settings {
        /// The settings file.
        origin: String,
        /// The setting (`store.nats.url`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

fn found_text(found: &Option<u64>) -> String {
    match found {
        Some(r) => format!("revision {r}"),
        None => "no value (or a revision the backend did not report)".into(),
    }
}

/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// Checks a bucket name: 1–64 ASCII letters, digits, `_` and `-`.
pub fn check_bucket(name: &str) -> Result<(), StoreError> {
    let reason = if name.is_empty() {
        Some("it is empty".to_string())
    } else if name.len() > 64 {
        Some("it is longer than 64 characters".to_string())
    } else {
        name.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
            .map(|c| format!("{c:?} is not allowed (ASCII letters, digits, `_` and `-` only)"))
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(StoreError::InvalidBucket {
            name: name.to_string(),
            reason,
        }),
    }
}

/// Checks a key: a non-empty string of at most [`MAX_KEY_BYTES`] bytes
/// without control characters.
pub fn check_key(key: &str) -> Result<(), StoreError> {
    let reason = if key.is_empty() {
        Some("it is empty".to_string())
    } else if key.len() > MAX_KEY_BYTES {
        Some(format!("it is longer than {MAX_KEY_BYTES} bytes"))
    } else if key.chars().any(char::is_control) {
        Some("it contains a control character".to_string())
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(StoreError::InvalidKey {
            key: key.to_string(),
            reason,
        }),
    }
}

/// Parses a stored counter (decimal text, surrounding ASCII space allowed;
/// an absent value counts as 0) and adds `delta`.
pub fn add_to_counter(
    bucket: &str,
    key: &str,
    current: Option<&[u8]>,
    delta: i64,
) -> Result<i64, StoreError> {
    let now = match current {
        None => 0,
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.trim_ascii().parse::<i64>().ok())
            .ok_or_else(|| StoreError::NotAnInteger {
                bucket: bucket.to_string(),
                key: key.to_string(),
            })?,
    };
    now.checked_add(delta).ok_or_else(|| StoreError::Overflow {
        bucket: bucket.to_string(),
        key: key.to_string(),
    })
}

/// A store: buckets of keys with revisions. See the crate documentation
/// for what each operation means on every backend.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// `embedded` or `nats`.
    fn backend(&self) -> &'static str;

    /// The value of `key`, if it has one.
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Entry>, StoreError>;

    /// Writes `value` if the key is in the `expect`ed state, with an
    /// optional time to live; returns the new revision.
    async fn put(
        &self,
        bucket: &str,
        key: &str,
        value: &[u8],
        expect: Expect,
        ttl: Option<Duration>,
    ) -> Result<u64, StoreError>;

    /// Removes `key` if it is in the `expect`ed state (removing an absent
    /// key with [`Expect::Any`] is not an error).
    async fn delete(&self, bucket: &str, key: &str, expect: Expect) -> Result<(), StoreError>;

    /// Writes `value` unconditionally without waiting for it to be durable:
    /// a crash may lose it; it is durable once any later write is. For
    /// progress hints that are not worth an fsync of their own. A backend
    /// without the distinction writes it durably (the default).
    async fn put_hint(&self, bucket: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.put(bucket, key, value, Expect::Any, None)
            .await
            .map(|_| ())
    }

    /// [`Store::put_hint`] with a time to live.
    async fn put_hint_with_ttl(
        &self,
        bucket: &str,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        self.put(bucket, key, value, Expect::Any, ttl)
            .await
            .map(|_| ())
    }

    /// Applies `writes` to `bucket` in order and stops at the first whose
    /// condition is not met (its error is returned; the writes before it
    /// stay applied). Durable when it returns. Returns each put's revision
    /// (0 for a delete). The embedded store makes them one transaction, so
    /// a batch whose only condition is on its first write is all or
    /// nothing; on NATS they are separate requests.
    async fn write_in_order(
        &self,
        bucket: &str,
        writes: &[OrderedWrite],
    ) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::with_capacity(writes.len());
        for w in writes {
            out.push(match w {
                OrderedWrite::Put {
                    key,
                    value,
                    expect,
                    ttl,
                } => self.put(bucket, key, value, *expect, *ttl).await?,
                OrderedWrite::Delete { key, expect } => {
                    self.delete(bucket, key, *expect).await?;
                    0
                }
            });
        }
        Ok(out)
    }

    /// [`Store::put`] without waiting for the write to be durable: the
    /// condition is checked and the revision returned as for `put`, but a
    /// crash may lose the write; it is durable once any later write is
    /// (writes become durable in the order they were made). For a write
    /// whose loss a later durable write would repair or make moot.
    async fn put_lazy(
        &self,
        bucket: &str,
        key: &str,
        value: &[u8],
        expect: Expect,
        ttl: Option<Duration>,
    ) -> Result<u64, StoreError> {
        self.put(bucket, key, value, expect, ttl).await
    }

    /// [`Store::increment`] without waiting for it to be durable, as
    /// [`Store::put_lazy`].
    async fn increment_lazy(&self, bucket: &str, key: &str, delta: i64) -> Result<i64, StoreError> {
        self.increment(bucket, key, delta).await
    }

    /// Removes `key` (if present) without waiting for it to be durable, as
    /// [`Store::put_hint`] writes: a crash may bring it back; it is gone for
    /// good once any later write is durable.
    async fn delete_hint(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        self.delete(bucket, key, Expect::Any).await
    }

    /// Adds `delta` to the decimal integer at `key` (absent: 0) atomically
    /// and returns the result.
    async fn increment(&self, bucket: &str, key: &str, delta: i64) -> Result<i64, StoreError>;

    /// Up to `limit` keys that start with `prefix`, in order, after the key
    /// `after` (a previous page's cursor).
    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError>;

    /// The buckets that hold at least one key.
    async fn buckets(&self) -> Result<Vec<String>, StoreError>;

    /// The values of several keys, in the order asked (not atomic).
    async fn get_many(
        &self,
        bucket: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Entry>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.get(bucket, k).await?);
        }
        Ok(out)
    }

    /// Writes several keys unconditionally (not atomic).
    async fn put_many(
        &self,
        bucket: &str,
        entries: &[(String, Vec<u8>)],
    ) -> Result<(), StoreError> {
        for (k, v) in entries {
            self.put(bucket, k, v, Expect::Any, None).await?;
        }
        Ok(())
    }

    /// Removes several keys (not atomic).
    async fn delete_many(&self, bucket: &str, keys: &[String]) -> Result<(), StoreError> {
        for k in keys {
            self.delete(bucket, k, Expect::Any).await?;
        }
        Ok(())
    }
}

/// A shared store.
pub type SharedStore = Arc<dyn Store>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys() {
        assert!(check_bucket("notes_2-a").is_ok());
        for bad in ["", "a.b", "a b", "é", &"x".repeat(65)] {
            assert!(check_bucket(bad).is_err(), "{bad:?}");
        }
        assert!(check_key("a/b.c d:é").is_ok());
        for bad in ["", "a\nb", &"x".repeat(MAX_KEY_BYTES + 1)] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn counters() {
        assert_eq!(add_to_counter("b", "k", None, 5), Ok(5));
        assert_eq!(add_to_counter("b", "k", Some(b" 41\n"), 1), Ok(42));
        assert!(matches!(
            add_to_counter("b", "k", Some(b"x"), 1),
            Err(StoreError::NotAnInteger { .. })
        ));
        assert!(matches!(
            add_to_counter("b", "k", Some(i64::MAX.to_string().as_bytes()), 1),
            Err(StoreError::Overflow { .. })
        ));
    }
}
