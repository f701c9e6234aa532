//! Tessera's server: a long-running runtime with a component registry, hot
//! swap, an HTTP API, tokens and limits.
//!
//! Every loaded component's active version is kept compiled and
//! pre-instantiated. A call takes an `Arc` to the active version and keeps it
//! for the whole call, so activating a new version never affects calls
//! already running: they finish on the old version, new calls get the new
//! one, and nothing waits. Every call is recorded in the journal.
//!
//! The same calls are served over the HTTP API (`/v1/...`) and over MCP:
//! streamable HTTP at `/mcp` and stdio ([`Server::serve_stdio`]).
#![deny(missing_docs)]

pub mod api;
pub mod auth;
pub mod error;
pub mod guard;
mod http;
pub mod mcp;
pub mod openapi;
pub mod registry;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;
use tessera_journal::JournalStore;
use tessera_runtime::audit::{AuditEvent, AuditSink, JsonLinesAudit};
use tessera_runtime::{CallOptions, CallOutcome, Grants, LoadedComponent, Runtime, RuntimeConfig};
use tokio::sync::{Semaphore, broadcast, watch};
use tokio_util::sync::CancellationToken;

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
    /// `Host` values every route (API and MCP) accepts. On loopback they
    /// are added to the loopback names (the only ones accepted otherwise,
    /// against DNS rebinding); on any other address they are the only ones
    /// accepted, and when empty any `Host` is (tokens are required there
    /// anyway).
    pub allowed_hosts: Vec<String>,
    /// Browser origins allowed to call the server (`Origin` header), besides
    /// the server's own. A request from any other origin is refused.
    pub allowed_origins: Vec<guard::AllowedOrigin>,
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
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
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
    /// Bumped whenever the set of tools changes (a component loaded,
    /// swapped or removed).
    tools_changed: watch::Sender<u64>,
    /// Parent of every call's cancellation token: cancelled at shutdown.
    shutdown: CancellationToken,
    /// Cancelled when shutdown begins.
    stopping: CancellationToken,
}

/// A finished call.
pub struct Called {
    /// The version that served the call.
    pub active: Arc<Active>,
    /// The journal run.
    pub run_id: String,
    /// What came out.
    pub outcome: CallOutcome,
}

/// Why a call did not run.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The server is at its limit of concurrent calls.
    #[error("{0} calls already running")]
    Overloaded(usize),
    /// No component of that name is being served.
    #[error("no component named `{0}`")]
    NoSuchComponent(String),
    /// The call was refused before the guest ran (bad arguments, no such
    /// function, component busy, …) or could not be journaled.
    #[error(transparent)]
    Journal(#[from] tessera_journal::Error),
    /// The call's task failed.
    #[error("call task failed: {0}")]
    Task(String),
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
            tools_changed: watch::channel(0).0,
            shutdown: CancellationToken::new(),
            stopping: CancellationToken::new(),
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

    /// Watches the set of tools: the value changes whenever a component is
    /// loaded, swapped or removed.
    pub fn tools_changed(&self) -> watch::Receiver<u64> {
        self.tools_changed.subscribe()
    }

    /// Calls `function` of the active version of component `name`, and
    /// journals the run with `caller` in its header.
    ///
    /// The call runs in its own task: if the caller goes away (its future
    /// is dropped) or `cancel` fires, the guest is interrupted at its next
    /// epoch tick and the run is still journaled to its end, as cancelled.
    /// Shutting the server down cancels every call still running after the
    /// grace period.
    pub async fn call(
        &self,
        name: &str,
        function: &str,
        args: &Value,
        cancel: Option<CancellationToken>,
        caller: tessera_journal::Caller,
    ) -> Result<Called, CallError> {
        let Ok(permit) = self.calls.clone().try_acquire_owned() else {
            return Err(CallError::Overloaded(self.config.max_calls));
        };
        // Hold the version for the whole call: a swap does not touch it.
        let active = self
            .active(name)
            .ok_or_else(|| CallError::NoSuchComponent(name.to_string()))?;
        let token = self.shutdown.child_token();
        // Cancels the call if this future is dropped before it ends.
        let _dropped = token.clone().drop_guard();
        let journal = self.journal.clone();
        let task = {
            let active = active.clone();
            let function = function.to_string();
            let args = args.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let _permit = permit;
                tessera_journal::record_call_with(
                    &journal,
                    &active.loaded,
                    &function,
                    &args,
                    CallOptions {
                        cancel: Some(token),
                        ..CallOptions::default()
                    },
                    Some(caller),
                )
                .await
            })
        };
        let linked = async {
            match &cancel {
                Some(c) => c.cancelled().await,
                None => std::future::pending().await,
            }
        };
        let mut task = std::pin::pin!(task);
        let joined = tokio::select! {
            biased;
            r = &mut task => r,
            () = linked => {
                token.cancel();
                task.await
            }
        };
        let (run_id, outcome) = joined.map_err(|e| CallError::Task(e.to_string()))??;
        Ok(Called {
            active,
            run_id,
            outcome,
        })
    }

    /// Cancels every running call and waits up to `wait` for their journals
    /// to be written, then flushes the journal.
    pub async fn stop_calls(&self, wait: Duration) {
        self.shutdown.cancel();
        self.calls_finished(wait).await;
        self.journal.flush();
    }

    /// Waits up to `wait` until no call is running (every permit is back).
    async fn calls_finished(&self, wait: Duration) -> bool {
        let all = u32::try_from(self.config.max_calls).unwrap_or(u32::MAX);
        tokio::time::timeout(wait, self.calls.acquire_many(all))
            .await
            .is_ok()
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
        if !changed.is_empty() {
            self.tools_changed.send_modify(|n| *n += 1);
        }
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

    fn spawn_registry_watcher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
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
    }

    /// The request guard of this server listening on `local`.
    pub fn request_guard(&self, local: SocketAddr) -> guard::RequestGuard {
        guard::RequestGuard::new(
            local,
            &self.config.allowed_hosts,
            &self.config.allowed_origins,
        )
    }

    /// Whether the server is shutting down (streams end, no new sessions).
    pub(crate) fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    /// Lets calls in flight finish within the grace period, then cancels
    /// the rest and waits for their journals.
    async fn drain(&self) {
        if !self.calls_finished(self.config.grace).await {
            eprintln!("grace period over: cancelling calls still running");
        }
        self.stop_calls(Duration::from_secs(5)).await;
    }

    /// Serves the HTTP API and MCP over streamable HTTP (at `/mcp`) until
    /// `shutdown` resolves. Then it stops accepting connections, gives calls
    /// in flight up to the grace period to finish, cancels the rest (their
    /// runs are journaled as cancelled), closes MCP sessions and flushes the
    /// journal.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let watcher = self.spawn_registry_watcher();
        let sessions = CancellationToken::new();
        let local = listener
            .local_addr()
            .map_err(|e| ServerError::Io(e.to_string()))?;
        let app = router(
            self.clone(),
            mcp::http_service(self.clone(), local, sessions.clone()),
            local,
        );
        let stopping = self.stopping.clone();
        // No Nagle delay: streamed (SSE) responses are written in several
        // small pieces.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let mut serving = tokio::spawn(
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopping.cancelled().await })
                .into_future(),
        );
        let ended_early = tokio::select! {
            r = &mut serving => Some(r),
            () = shutdown => None,
        };
        self.stopping.cancel();
        if let Some(r) = ended_early {
            watcher.abort();
            self.stop_calls(Duration::from_secs(5)).await;
            return match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(ServerError::Io(e.to_string())),
                Err(e) => Err(ServerError::Io(e.to_string())),
            };
        }
        self.drain().await;
        sessions.cancel();
        if tokio::time::timeout(Duration::from_secs(2), &mut serving)
            .await
            .is_err()
        {
            serving.abort();
        }
        watcher.abort();
        self.journal.flush();
        Ok(())
    }

    /// Serves MCP over stdin and stdout (for an MCP host that spawns
    /// Tessera) until the client closes stdin or `shutdown` resolves. On a
    /// signal it drains calls like [`Server::serve`]; when stdin closes, calls
    /// still running are cancelled at once (the client can no longer want
    /// them) and journaled. Nothing but MCP messages is written to stdout.
    pub async fn serve_stdio(
        self: Arc<Self>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        use rmcp::ServiceExt as _;
        let mut shutdown = std::pin::pin!(shutdown);
        let running = tokio::select! {
            // When the client closes stdin it can no longer ask for
            // anything: calls still running are cancelled (and journaled)
            // at once rather than left to run out their deadlines.
            r = mcp::McpService::new(self.clone()).serve((
                CancelOnEof {
                    inner: tokio::io::stdin(),
                    on_eof: self.shutdown.clone(),
                },
                tokio::io::stdout(),
            )) => {
                r.map_err(|e| ServerError::Io(format!("MCP over stdio: {e}")))?
            }
            // A signal before the client even connected.
            () = &mut shutdown => return Ok(()),
        };
        let watcher = self.spawn_registry_watcher();
        let cancel = running.cancellation_token();
        let mut waiting = std::pin::pin!(running.waiting());
        tokio::select! {
            // Stdin closed: its calls were cancelled (`CancelOnEof`).
            _ = &mut waiting => {
                self.stopping.cancel();
                self.stop_calls(Duration::from_secs(5)).await;
            }
            () = shutdown => {
                self.stopping.cancel();
                self.drain().await;
                cancel.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(2), waiting).await;
            }
        }
        watcher.abort();
        self.journal.flush();
        Ok(())
    }
}

/// A reader that cancels a token when it reaches end of file.
struct CancelOnEof<R> {
    inner: R,
    on_eof: CancellationToken,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for CancelOnEof<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = polled
            && buf.filled().len() == before
            && buf.remaining() > 0
        {
            self.on_eof.cancel();
        }
        polled
    }
}
