//! Tessera's server: a long-running runtime with a component registry, hot
//! swap, an HTTP API, tokens and limits.
//!
//! Every loaded component's active version is kept compiled and
//! pre-instantiated. A call takes an `Arc` to the active version and keeps it
//! for the whole call, so activating a new version never affects calls
//! already running: they finish on the old version, new calls get the new
//! one, and nothing waits. Every call is recorded in the journal.
#![deny(missing_docs)]

pub mod auth;
mod http;
pub mod openapi;
pub mod registry;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tessera_journal::JournalStore;
use tessera_runtime::audit::{AuditEvent, AuditSink, JsonLinesAudit};
use tessera_runtime::{Grants, LoadedComponent, Runtime, RuntimeConfig};
use tokio::sync::{Semaphore, broadcast};

pub use http::router;
use registry::{Registry, RegistryError, Version};

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The data directory (registry, journal, compile cache, audit log, tokens).
    pub data: PathBuf,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Require a token on every request (always on for a non-loopback address).
    pub require_tokens: bool,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Calls running at once across all components; more get 503.
    pub max_calls: usize,
    /// How long in-flight calls may finish after a shutdown signal.
    pub grace: Duration,
}

impl ServerConfig {
    /// Defaults for a data directory: loopback on port 7878, no tokens
    /// required, 16 MiB bodies, 256 concurrent calls, 10 s grace.
    pub fn new(data: PathBuf) -> Self {
        Self {
            data,
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            require_tokens: false,
            max_body_bytes: 16 << 20,
            max_calls: 256,
            grace: Duration::from_secs(10),
        }
    }
}

/// A component version being served.
pub struct Active {
    /// Version number (1-based).
    pub version: usize,
    /// The registry record.
    pub record: Version,
    /// The compiled, pre-instantiated component.
    pub loaded: LoadedComponent,
}

/// Sends audit events to the log file and to live subscribers.
struct AuditFanout {
    file: JsonLinesAudit,
    live: broadcast::Sender<AuditEvent>,
}

impl AuditSink for AuditFanout {
    fn record(&self, event: &AuditEvent) {
        self.file.record(event);
        let _ = self.live.send(event.clone());
    }
}

/// Shared state of a running server.
pub struct Server {
    /// Settings.
    pub config: ServerConfig,
    /// The runtime.
    pub runtime: Runtime,
    /// The journal: every call is recorded.
    pub journal: Arc<JournalStore>,
    /// The registry.
    pub registry: Registry,
    /// Tokens.
    pub tokens: auth::Tokens,
    active: RwLock<HashMap<String, Arc<Active>>>,
    registry_seen: std::sync::Mutex<Option<std::time::SystemTime>>,
    calls: Arc<Semaphore>,
    audit: broadcast::Sender<AuditEvent>,
    audit_sink: Arc<dyn AuditSink>,
}

/// Server errors at startup.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The runtime could not start.
    #[error(transparent)]
    Runtime(#[from] tessera_runtime::Error),
    /// The journal could not be opened.
    #[error(transparent)]
    Journal(#[from] tessera_journal::Error),
    /// The registry could not be read.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The audit log could not be opened, or the address not bound.
    #[error("{0}")]
    Io(String),
}

impl Server {
    /// Opens the data directory and loads every registered component.
    pub async fn open(config: ServerConfig) -> Result<Arc<Self>, ServerError> {
        let audit_path = config.data.join("audit.jsonl");
        let file = JsonLinesAudit::open(&audit_path)
            .map_err(|e| ServerError::Io(format!("{}: {e}", audit_path.display())))?;
        let (live, _) = broadcast::channel(1024);
        let audit_sink: Arc<dyn AuditSink> = Arc::new(AuditFanout {
            file,
            live: live.clone(),
        });
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: Some(config.data.join("cache")),
            audit: audit_sink.clone(),
            ..RuntimeConfig::default()
        })?;
        let journal = Arc::new(JournalStore::open(&config.data)?);
        let registry = Registry::open(&config.data)?;
        let tokens = auth::Tokens::open(&config.data);
        let server = Arc::new(Self {
            calls: Arc::new(Semaphore::new(config.max_calls)),
            config,
            runtime,
            journal,
            registry,
            tokens,
            active: RwLock::new(HashMap::new()),
            registry_seen: std::sync::Mutex::new(None),
            audit: live,
            audit_sink,
        });
        server.sync().await?;
        Ok(server)
    }

    /// The active version of a component.
    pub fn active(&self, name: &str) -> Option<Arc<Active>> {
        self.active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Names of the components being served.
    pub fn active_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Subscribes to live audit events.
    pub fn audit_events(&self) -> broadcast::Receiver<AuditEvent> {
        self.audit.subscribe()
    }

    /// Writes a server-level audit event (log file and live stream).
    pub(crate) fn audit_event(&self, event: &AuditEvent) {
        self.audit_sink.record(event);
    }

    pub(crate) fn call_permits(&self) -> Arc<Semaphore> {
        self.calls.clone()
    }

    /// Brings what is served in line with the registry: loads new active
    /// versions (compiling off the async threads), swaps them in, drops
    /// removed components. Returns the names that changed.
    pub async fn sync(&self) -> Result<Vec<String>, ServerError> {
        let seen = self.registry.modified();
        let entries = self.registry.list()?;
        let mut changed = Vec::new();
        for (name, entry) in &entries {
            let record = entry.active_version().clone();
            let current = self.active(name);
            if current
                .as_ref()
                .is_some_and(|a| a.version == entry.active && a.record == record)
            {
                continue;
            }
            match self.load_version(name, entry.active, record).await {
                Ok(active) => {
                    self.active
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(name.clone(), Arc::new(active));
                    changed.push(name.clone());
                }
                Err(e) => {
                    tracing::error!("cannot load component `{name}`: {e}");
                    eprintln!("error: cannot load component `{name}`: {e}");
                }
            }
        }
        let removed: Vec<String> = self
            .active_names()
            .into_iter()
            .filter(|n| !entries.contains_key(n))
            .collect();
        if !removed.is_empty() {
            let mut map = self.active.write().unwrap_or_else(|p| p.into_inner());
            for n in &removed {
                map.remove(n);
            }
        }
        changed.extend(removed);
        *self.registry_seen.lock().unwrap_or_else(|p| p.into_inner()) = seen;
        Ok(changed)
    }

    /// Whether `registry.json` changed since the last [`Server::sync`].
    pub fn registry_changed(&self) -> bool {
        *self.registry_seen.lock().unwrap_or_else(|p| p.into_inner()) != self.registry.modified()
    }

    async fn load_version(
        &self,
        name: &str,
        version: usize,
        record: Version,
    ) -> Result<Active, String> {
        let bytes = self
            .registry
            .bytes(&record.digest)
            .map_err(|e| e.to_string())?;
        let grants = match &record.manifest {
            Some(text) => Grants::from_toml(
                text,
                &format!("manifest of {name} v{version}"),
                record
                    .manifest_dir
                    .as_deref()
                    .unwrap_or(std::path::Path::new(".")),
            )
            .map_err(|e| e.to_string())?,
            None => Grants::deny_all(),
        };
        let rt = self.runtime.clone();
        let origin = format!("{name} v{version}");
        let loaded = tokio::task::spawn_blocking(move || {
            let prepared = rt.prepare(bytes, &origin)?;
            rt.load(&prepared, grants)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        Ok(Active {
            version,
            record,
            loaded,
        })
    }

    /// Serves HTTP until `shutdown` resolves, then stops accepting, gives
    /// in-flight calls up to `grace` to finish, and flushes the journal.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let watcher = {
            let server = self.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    if server.registry_changed()
                        && let Err(e) = server.sync().await
                    {
                        tracing::error!("registry reload failed: {e}");
                    }
                }
            })
        };
        let grace = self.config.grace;
        let app = router(self.clone());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = axum::serve(listener, app).with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop_tx.send(());
        });
        let mut serving = std::pin::pin!(serving.into_future());
        tokio::select! {
            r = &mut serving => r.map_err(|e| ServerError::Io(e.to_string()))?,
            _ = async {
                let _ = stop_rx.await;
                tokio::time::sleep(grace).await;
            } => {
                eprintln!("grace period over: cancelling calls still running");
            }
        }
        watcher.abort();
        self.journal.flush();
        Ok(())
    }
}
