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
    pub(crate) metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl AuditSink for AuditFanout {
    fn record(&self, event: &AuditEvent) {
        self.file.record(event);
        self.metrics.audit(event);
        let _ = self.live.send(event.clone());
    }
}

impl Server {
    /// The server's metrics (what `GET /metrics` renders).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

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

/// Appends a signed checkpoint to the audit log every `signing.every`
/// when lines were added since the last, and once more when `stopping`
/// fires.
pub(crate) async fn sign_periodically(
    log: JsonLinesAudit,
    path: std::path::PathBuf,
    signing: crate::config::AuditSigning,
    stopping: tokio_util::sync::CancellationToken,
) {
    let log = std::sync::Arc::new(log);
    let mut signed_len = None;
    loop {
        let stop = tokio::select! {
            _ = tokio::time::sleep(signing.every) => false,
            _ = stopping.cancelled() => true,
        };
        let len = std::fs::metadata(&path).map(|m| m.len()).ok();
        if len.is_some() && len != signed_len && len != Some(0) {
            let (log, key) = (log.clone(), signing.key.clone());
            let done = tokio::task::spawn_blocking(move || log.checkpoint(&key)).await;
            match done {
                Ok(Ok(_)) => signed_len = std::fs::metadata(&path).map(|m| m.len()).ok(),
                Ok(Err(e)) => tracing::warn!("cannot sign the audit log {}: {e}", path.display()),
                Err(e) => tracing::warn!("audit signing task failed: {e}"),
            }
        }
        if stop {
            return;
        }
    }
}

/// Reloads the boundary policies whenever a file of their directory
/// changes, until `stopping` fires. Each reload is an audit event
/// (`capability: policy`): `allow` when the new policies are in force,
/// `deny` when they do not load (the previous ones stay, and the event
/// says why, with file and position).
pub(crate) async fn reload_policies(
    engine: std::sync::Arc<tessera_runtime::policy::PolicyEngine>,
    sink: std::sync::Arc<dyn AuditSink>,
    every: std::time::Duration,
    stopping: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopping.cancelled() => return,
        }
        let engine = engine.clone();
        let Ok(Some(reloaded)) =
            tokio::task::spawn_blocking(move || engine.reload_if_changed()).await
        else {
            continue;
        };
        let event = match reloaded {
            Ok(p) => AuditEvent::now(
                "-",
                "-",
                "policy",
                p.source().display().to_string(),
                tessera_runtime::Decision::Allow,
                Some(format!(
                    "reloaded: {} policies, {} quotas in force",
                    p.len(),
                    p.quotas().len()
                )),
            ),
            Err(e) => {
                tracing::warn!("policies not reloaded: {e}");
                AuditEvent::now(
                    "-",
                    "-",
                    "policy",
                    "reload",
                    tessera_runtime::Decision::Deny,
                    Some(format!("the previous policies stay in force: {e}")),
                )
            }
        };
        sink.record(&event);
    }
}
