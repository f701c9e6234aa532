//! Where the server's audit events go: the runtime's (grant decisions,
//! limits) and the server's own (refused requests), to the audit log file
//! and to live subscribers (`GET /v1/audit`) alike.

use tessera_runtime::audit::{AuditEvent, AuditSink, JsonLinesAudit};
use tokio::sync::broadcast;

use crate::Server;

/// Sends audit events to the log file and to live subscribers.
pub(crate) struct AuditFanout {
    pub(crate) file: JsonLinesAudit,
    pub(crate) live: broadcast::Sender<AuditEvent>,
}

impl AuditSink for AuditFanout {
    fn record(&self, event: &AuditEvent) {
        self.file.record(event);
        let _ = self.live.send(event.clone());
    }
}

impl Server {
    /// Subscribes to live audit events.
    pub fn audit_events(&self) -> broadcast::Receiver<AuditEvent> {
        self.audit.subscribe()
    }

    /// Audits a request the server refused before it reached a handler
    /// (`capability`: `auth`, `host`, `origin`, `content-type`).
    pub(crate) fn audit_refusal(&self, capability: &str, target: &str, detail: &str) {
        self.audit_sink.record(&AuditEvent::now(
            "-",
            "-",
            capability,
            target,
            tessera_runtime::Decision::Deny,
            Some(detail.to_string()),
        ));
    }
}
