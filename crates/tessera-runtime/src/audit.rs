//! Audit events: one JSON line for every denial, every limit hit and every
//! outbound request a component makes.
//!
//! Auditors read these without reading code, so each event is flat and
//! self-contained: when, which component (by content digest), which function,
//! which capability, what target, and the decision. The log file is a hash
//! chain ([`chain`]): `tessera audit verify` finds a line changed, removed,
//! inserted or reordered after it was written.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

pub mod chain;

use serde::{Deserialize, Serialize};

/// What the gateway decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// The interaction was allowed by a grant.
    Allow,
    /// The interaction was refused: nothing grants it.
    Deny,
    /// A limit stopped the call.
    Limit,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// RFC 3339 UTC time.
    pub time: String,
    /// The component's content digest (`sha256:…`).
    pub component: String,
    /// The function being called.
    pub function: String,
    /// The capability involved: `http`, `files`, `fuel`, `deadline`, `memory`, `output`, `instances`.
    pub capability: String,
    /// What was asked for: a URL, a path, a limit value.
    pub target: String,
    /// The decision.
    pub decision: Decision,
    /// A human-readable explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AuditEvent {
    /// Builds an event stamped with the current time.
    pub fn now(
        component: &str,
        function: &str,
        capability: &str,
        target: impl Into<String>,
        decision: Decision,
        detail: Option<String>,
    ) -> Self {
        let time = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        Self {
            time,
            component: component.to_string(),
            function: function.to_string(),
            capability: capability.to_string(),
            target: target.into(),
            decision,
            detail,
        }
    }
}

/// Where audit events go. Implementations must be cheap and never fail the
/// call that produced the event.
pub trait AuditSink: Send + Sync {
    /// Records one event.
    fn record(&self, event: &AuditEvent);
}

/// Appends events as JSON lines to a file, each line chained to the one
/// before by its hash ([`chain`]). Several writers — in this process or
/// others — may share the file: each append holds an exclusive lock on it
/// and chains to the file's real last line.
#[derive(Debug)]
pub struct JsonLinesAudit {
    state: Mutex<Appender>,
}

#[derive(Debug)]
struct Appender {
    file: File,
    /// The file's length after this writer's last append (or the open).
    len: u64,
    head: chain::Head,
}

impl Appender {
    /// Reads the file's last line again when another writer appended.
    fn catch_up(&mut self) -> std::io::Result<()> {
        let len = self.file.metadata()?.len();
        if len == self.len {
            return Ok(());
        }
        let last = chain::last_line(&self.file, len)?;
        if let Some((_, false)) = &last {
            // A line cut short (a writer died mid-line): end it, so the
            // next line is whole; `audit verify` reports the cut one.
            self.file.write_all(b"\n")?;
        }
        self.head = chain::head_after(last.as_ref().map(|(l, _)| l.as_slice()));
        self.len = self.file.metadata()?.len();
        Ok(())
    }

    fn append(&mut self, event: &AuditEvent) -> std::io::Result<()> {
        self.append_with(|_| event.clone()).map(|_| ())
    }

    /// Appends the event `make` builds from the chain's current head (the
    /// hash of the last line, [`chain::GENESIS`] for an empty log), under
    /// the file lock, so no other writer's line comes between. Returns the
    /// new line's hash.
    fn append_with(
        &mut self,
        make: impl FnOnce(&chain::Head) -> AuditEvent,
    ) -> std::io::Result<String> {
        self.file.lock()?;
        let written = self.catch_up().and_then(|()| {
            let serde_json::Value::Object(fields) = serde_json::to_value(make(&self.head))? else {
                return Err(std::io::Error::other("an audit event is not a JSON object"));
            };
            let (mut line, hash) = chain::seal(fields, &self.head);
            line.push('\n');
            self.file.write_all(line.as_bytes())?;
            self.len += line.len() as u64;
            self.head = chain::Head {
                seq: self.head.seq + 1,
                prev: hash.clone(),
            };
            Ok(hash)
        });
        let unlocked = self.file.unlock();
        written.and_then(|h| unlocked.map(|()| h))
    }
}

impl JsonLinesAudit {
    /// Opens (creating if needed) the file for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        // Nothing is read until the first append: its `catch_up` finds the
        // file's last line then (no length equals `u64::MAX`).
        Ok(Self {
            state: Mutex::new(Appender {
                file,
                len: u64::MAX,
                head: chain::Head::start(),
            }),
        })
    }
}

/// The `capability` of a checkpoint line ([`JsonLinesAudit::checkpoint`]).
pub const CHECKPOINT: &str = "audit-checkpoint";

/// The purpose a checkpoint's [`ContentSignature`](crate::trust::ContentSignature)
/// is made for.
pub const CHECKPOINT_PURPOSE: &str = "audit-head";

/// A checkpoint just written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The `seq` of the checkpoint line.
    pub seq: u64,
    /// The hash it signs: the line before it (the chain's head then).
    pub signed: String,
    /// The checkpoint line's own hash (the new head).
    pub hash: String,
}

impl JsonLinesAudit {
    /// Signs the chain's head with `key` and appends the signature as a
    /// checkpoint line: `capability` [`CHECKPOINT`], `target` the hash
    /// signed (the line before's), `detail` the
    /// [`ContentSignature`](crate::trust::ContentSignature) as JSON, made
    /// for [`CHECKPOINT_PURPOSE`] over that hash. Whoever rewrites the log
    /// before a checkpoint must forge the signature; `audit verify --key`
    /// checks every checkpoint and says how many lines follow the last.
    pub fn checkpoint(&self, key: &crate::trust::SecretKey) -> std::io::Result<Checkpoint> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut signed = (0, String::new());
        let hash = state.append_with(|head| {
            let sig =
                crate::trust::keys::sign_content(CHECKPOINT_PURPOSE, head.prev.as_bytes(), key);
            signed = (head.seq, head.prev.clone());
            AuditEvent::now(
                "",
                "",
                CHECKPOINT,
                head.prev.clone(),
                Decision::Allow,
                serde_json::to_string(&sig).ok(),
            )
        })?;
        Ok(Checkpoint {
            seq: signed.0,
            signed: signed.1,
            hash,
        })
    }
}

impl AuditSink for JsonLinesAudit {
    fn record(&self, event: &AuditEvent) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = state.append(event) {
            tracing::warn!("cannot write audit event: {e}");
        }
    }
}

/// Keeps events in memory; each call's outcome carries the events it caused.
#[derive(Debug, Default)]
pub struct MemoryAudit {
    events: Mutex<Vec<AuditEvent>>,
}

impl MemoryAudit {
    /// Takes the events recorded so far.
    pub fn take(&self) -> Vec<AuditEvent> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl AuditSink for MemoryAudit {
    fn record(&self, event: &AuditEvent) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event.clone());
    }
}

/// Discards events.
#[derive(Debug, Default)]
pub struct NoAudit;

impl AuditSink for NoAudit {
    fn record(&self, _event: &AuditEvent) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u32) -> AuditEvent {
        AuditEvent::now(
            "sha256:abc",
            "f",
            "http",
            format!("https://example.com/{n}"),
            Decision::Deny,
            None,
        )
    }

    #[test]
    fn writers_sharing_a_file_keep_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        // Two writers (as the CLI and a server would be), interleaved.
        let a = JsonLinesAudit::open(&path).unwrap();
        let b = JsonLinesAudit::open(&path).unwrap();
        for i in 0..10 {
            a.record(&event(i));
            b.record(&event(100 + i));
        }
        let r = chain::verify(&path).unwrap();
        assert!(r.intact(), "{r:?}");
        assert_eq!((r.lines, r.last_seq), (20, Some(19)));
        // A writer opened later goes on from the last line.
        JsonLinesAudit::open(&path).unwrap().record(&event(200));
        let r = chain::verify(&path).unwrap();
        assert!(r.intact(), "{r:?}");
        assert_eq!(r.last_seq, Some(20));
        // Every line is still the event as JSON.
        let text = std::fs::read_to_string(&path).unwrap();
        let last: AuditEvent = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(last.target, "https://example.com/200");
    }

    #[test]
    fn a_line_cut_short_is_ended_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let a = JsonLinesAudit::open(&path).unwrap();
        a.record(&event(1));
        // Another writer died in the middle of a line.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"time\":\"2026")
            .unwrap();
        a.record(&event(2));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.lines().last().unwrap().contains("example.com/2"));
        let r = chain::verify(&path).unwrap();
        let p = r.problem.unwrap();
        assert_eq!(
            (p.line, p.kind),
            (2, chain::ProblemKind::Malformed),
            "{}",
            p.detail
        );
    }
}
