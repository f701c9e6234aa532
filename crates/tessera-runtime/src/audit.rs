//! Audit events: one JSON line for every denial, every limit hit and every
//! outbound request a component makes.
//!
//! Auditors read these without reading code, so each event is flat and
//! self-contained: when, which component (by content digest), which function,
//! which capability, what target, and the decision.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

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

/// Appends events as JSON lines to a file.
#[derive(Debug)]
pub struct JsonLinesAudit {
    file: Mutex<File>,
}

impl JsonLinesAudit {
    /// Opens (creating if needed) the file for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            file: Mutex::new(file),
        })
    }
}

impl AuditSink for JsonLinesAudit {
    fn record(&self, event: &AuditEvent) {
        if let Ok(mut line) = serde_json::to_vec(event) {
            line.push(b'\n');
            let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = f.write_all(&line) {
                tracing::warn!("cannot write audit event: {e}");
            }
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
