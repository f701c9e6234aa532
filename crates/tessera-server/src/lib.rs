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
//!
//! Where things are: [`Server`] (this file) holds the shared state and
//! opens it; `config.rs` the settings; `active.rs` the versions being
//! served and how one is loaded; `watcher.rs` keeping them in line with
//! the registry; `call.rs` the one call path and the one classification of
//! its outcome; `serve.rs` serving and shutdown; `guard.rs`, `http.rs`,
//! `api.rs`, `error.rs` and `openapi.rs` the HTTP side; `mcp.rs` the MCP
//! side; `auth.rs` tokens; `registry.rs` the registry on disk;
//! `plan_registry.rs` the registered plans and `plans.rs` running them;
//! `agents.rs` the agents (the orchestrator's agent system) and
//! `agent_routes.rs` their HTTP routes.
#![deny(missing_docs)]

mod active;
pub mod admit;
mod agent_routes;
pub mod agents;
pub mod api;
mod audit;
pub mod auth;
mod call;
mod config;
pub mod error;
pub mod guard;
mod http;
pub mod http_handlers;
mod links;
pub mod mcp;
pub mod metrics;
mod openai;
pub mod openapi;
pub mod plan_registry;
pub mod plans;
pub mod registry;
mod serve;
mod stdio;
mod watcher;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use tessera_journal::JournalStore;
use tessera_runtime::audit::{AuditEvent, AuditSink, JsonLinesAudit};
use tessera_runtime::{Runtime, RuntimeConfig};
use tokio::sync::{Semaphore, broadcast, watch};
use tokio_util::sync::CancellationToken;

pub use active::{Active, LoadError, LoadObserver, Loading};
pub use call::{CallError, Called, PlanCall};
pub use config::{AuditSigning, ServerConfig};
pub use http::router;

use active::{ActiveVersions, Pending};
use registry::{Registry, RegistryError};

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
    /// The registered plans (`<data>/plans`).
    pub plans: plan_registry::PlanRegistry,
    /// The plan runs this server drives.
    plan_runs: plans::PlanRuns,
    /// The agent system (`agents.rs`), opened at start in the background or
    /// on first use.
    agents: tokio::sync::OnceCell<tessera_orchestrator::agent::AgentSystem>,
    /// Tokens.
    pub tokens: auth::Tokens,
    /// The code sandboxes, when the configuration offers them.
    pub(crate) sandboxes: Option<Arc<tessera_sandbox::Sandboxes>>,
    /// The live sandbox sessions, when the configuration offers sandboxes.
    pub(crate) sessions: Option<Arc<tessera_sandbox::SessionPool>>,
    active: ActiveVersions,
    /// Registered versions that failed to load, by component name.
    load_failures: Mutex<HashMap<String, Arc<LoadError>>>,
    /// Versions being loaded in the background, by component name. Lock
    /// order: `loading`, then `active`, then `load_failures`.
    loading: Mutex<HashMap<String, Pending>>,
    /// The id of the next background load.
    load_ids: AtomicU64,
    /// One per core: loads from the compile cache running at once.
    load_slots: Semaphore,
    /// `registry.json`'s modification time at the last sync.
    registry_seen: Mutex<Option<std::time::SystemTime>>,
    calls: Arc<Semaphore>,
    audit: broadcast::Sender<AuditEvent>,
    audit_sink: Arc<dyn AuditSink>,
    metrics: Arc<metrics::Metrics>,
    /// Bumped whenever the set of tools changes (a component loaded,
    /// swapped or removed).
    tools_changed: watch::Sender<u64>,
    /// Set when the loads from the compile cache that [`Server::start`]
    /// began have ended, to the value of `tools_changed` then: the tool
    /// list a client first gets holds those changes already.
    started: watch::Sender<Option<u64>>,
    /// Parent of every call's cancellation token: cancelled at shutdown.
    shutdown: CancellationToken,
    /// Cancelled when shutdown begins.
    stopping: CancellationToken,
}

/// Why the server could not start or stopped serving.
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
    /// The plan registry could not be opened.
    #[error(transparent)]
    Plans(#[from] plan_registry::PlanRegistryError),
    /// The audit log could not be opened.
    #[error("{}: {source}", path.display())]
    Audit {
        /// The audit log.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The data directory's redaction key could not be read or created.
    #[error("{}: {source}", path.display())]
    Key {
        /// `<data>/journal.key`.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The listener has no local address.
    #[error("listener: {0}")]
    Listen(#[source] std::io::Error),
    /// Serving HTTP failed.
    #[error("serving HTTP: {0}")]
    Serve(#[source] std::io::Error),
    /// The serving task failed.
    #[error("serving task: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// MCP over stdio could not start (the client's `initialize` failed).
    #[error("MCP over stdio: {0}")]
    Stdio(#[source] Box<rmcp::service::ServerInitializeError>),
}

impl Server {
    /// Opens the data directory and starts loading every registered
    /// component. It returns once the components found in the compile
    /// cache are loaded (milliseconds each); the others compile in the
    /// background and are served when ready (see [`Server::loading`],
    /// [`Server::loaded`]), each announced through
    /// [`Server::tools_changed`].
    pub async fn open(config: ServerConfig) -> Result<Arc<Self>, ServerError> {
        let server = Self::start(config).await?;
        server.started().await;
        Ok(server)
    }

    /// [`Server::open`], returning as soon as the data directory is open
    /// and every load has begun, before any has ended: what an MCP server
    /// on stdio does, so that it answers `initialize` at once. Until the
    /// loads from the compile cache have ended ([`Server::started`]), the
    /// MCP tool list waits for them, and a call to a component being loaded
    /// from the cache waits for its load; compiles are never waited for.
    pub async fn start(config: ServerConfig) -> Result<Arc<Self>, ServerError> {
        let audit_path = config.data.join("audit.jsonl");
        let file = JsonLinesAudit::open(&audit_path).map_err(|source| ServerError::Audit {
            path: audit_path.clone(),
            source,
        })?;
        let (live, _) = broadcast::channel(1024);
        let metrics = Arc::new(metrics::Metrics::new(audit_path.clone()));
        let audit_sink: Arc<dyn AuditSink> = Arc::new(audit::AuditFanout {
            file,
            live: live.clone(),
            metrics: metrics.clone(),
        });
        let key_path = config.data.join("journal.key");
        let redaction_key = tessera_runtime::gateway::RedactionKey::load_or_create(&key_path)
            .map_err(|source| ServerError::Key {
                path: key_path.clone(),
                source,
            })?;
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: config.cache_dir.clone(),
            audit: audit_sink.clone(),
            host: tessera_runtime::HostConfig {
                secrets: config.secrets.clone(),
                redaction_key,
                stores: Some(Arc::new(tessera_store::Stores::new(
                    config.store.clone(),
                    &config.data,
                ))),
                llm: config.llm.clone(),
                nn: config.models.clone(),
                policy: config.policy.clone(),
            },
            trust: config.trust.clone(),
            ..RuntimeConfig::default()
        })?;
        let journal = Arc::new(JournalStore::open(&config.data)?);
        journal.set_retention(Some(config.retention.clone()));
        let registry = Registry::open(&config.data)?;
        let plans = plan_registry::PlanRegistry::open(&config.data)?;
        let plan_runs = plans::PlanRuns::new(plans.modified());
        let tokens = auth::Tokens::open(&config.data);
        // Code from an LLM gets nothing but the default limits.
        let sandboxes = config.sandboxes.clone().map(|dirs| {
            Arc::new(tessera_sandbox::Sandboxes::new(
                runtime.clone(),
                dirs,
                tessera_runtime::Grants::deny_all(),
            ))
        });
        let sessions = sandboxes.as_ref().map(|s| {
            Arc::new(tessera_sandbox::SessionPool::new(
                s.clone(),
                journal.clone(),
                config.session_idle,
                config.max_sessions,
            ))
        });
        let server = Arc::new(Self {
            sandboxes,
            sessions,
            calls: Arc::new(Semaphore::new(config.max_calls)),
            config,
            runtime,
            journal,
            registry,
            plans,
            plan_runs,
            agents: tokio::sync::OnceCell::new(),
            tokens,
            active: ActiveVersions::default(),
            load_failures: Mutex::new(HashMap::new()),
            loading: Mutex::new(HashMap::new()),
            load_ids: AtomicU64::new(0),
            load_slots: Semaphore::new(
                std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
            ),
            registry_seen: Mutex::new(None),
            audit: live,
            audit_sink,
            metrics,
            tools_changed: watch::channel(0).0,
            started: watch::channel(None).0,
            shutdown: CancellationToken::new(),
            stopping: CancellationToken::new(),
        });
        server
            .runtime
            .set_providers(Some(Arc::new(links::RegistryProviders(Arc::downgrade(
                &server,
            )))));
        let plan = server.begin_sync()?;
        let first = server.clone();
        tokio::spawn(async move {
            first.finish_sync(plan, false).await;
            let changes = *first.tools_changed.borrow();
            first.started.send_replace(Some(changes));
        });
        if let Some(pool) = &server.sessions {
            tokio::spawn(pool.clone().sweep(server.stopping.clone()));
        }
        if let Some(signing) = server.config.audit_signing.clone() {
            // A writer of its own: the log takes any number of them.
            let log = JsonLinesAudit::open(&audit_path).map_err(|source| ServerError::Audit {
                path: audit_path.clone(),
                source,
            })?;
            tokio::spawn(audit::sign_periodically(
                log,
                audit_path.clone(),
                signing,
                server.stopping.clone(),
            ));
        }
        if let Some(engine) = server.config.policy.clone() {
            tokio::spawn(audit::reload_policies(
                engine,
                server.audit_sink.clone(),
                server.config.policy_poll,
                server.stopping.clone(),
            ));
        }
        // Agents with work left by a previous process resume.
        server.open_agents_in_background();
        Ok(server)
    }

    /// Waits until the loads [`Server::start`] began from the compile cache
    /// have ended (each served, or failed and listed by
    /// [`Server::load_failures`]). Returns at once after [`Server::open`].
    pub async fn started(&self) {
        self.started_at().await;
    }

    /// [`Server::started`], returning the value [`Server::tools_changed`]
    /// had then.
    pub(crate) async fn started_at(&self) -> u64 {
        let mut started = self.started.subscribe();
        let at = started
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|v| *v);
        // The sender lives as long as `self`: the wait cannot fail.
        at.unwrap_or_default()
    }

    /// The active version of a component.
    pub fn active(&self, name: &str) -> Option<Arc<Active>> {
        self.active.get(name)
    }

    /// Names of the components being served.
    pub fn active_names(&self) -> Vec<String> {
        self.active.names()
    }

    /// Registered components whose active version could not be loaded, and
    /// why (sorted by name). Cleared for a name when a version of it loads
    /// or it is removed.
    pub fn load_failures(&self) -> Vec<(String, Arc<LoadError>)> {
        let mut v: Vec<_> = self
            .failures_mut()
            .iter()
            .map(|(n, e)| (n.clone(), e.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The versions being loaded in the background (sorted by name). Their
    /// components' tools are not served until they are ready; the version
    /// served before, if any, still is.
    pub fn loading(&self) -> Vec<Loading> {
        let mut v: Vec<Loading> = self
            .loading_mut()
            .values()
            .map(|p| p.info.clone())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The version of `name` being loaded in the background, if any.
    pub fn loading_of(&self, name: &str) -> Option<Loading> {
        self.loading_mut().get(name).map(|p| p.info.clone())
    }

    /// Waits until no version is being loaded in the background (each has
    /// been served, or has failed and is listed by
    /// [`Server::load_failures`]).
    pub async fn loaded(&self) {
        loop {
            let pending: Vec<_> = self
                .loading_mut()
                .values()
                .map(|p| p.done.clone())
                .collect();
            if pending.is_empty() {
                return;
            }
            for mut done in pending {
                let _ = done.wait_for(|d| *d).await;
            }
        }
    }

    fn loading_mut(&self) -> MutexGuard<'_, HashMap<String, Pending>> {
        self.loading.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn failures_mut(&self) -> MutexGuard<'_, HashMap<String, Arc<LoadError>>> {
        self.load_failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Watches the set of tools: the value changes whenever a component is
    /// loaded, swapped or removed.
    pub fn tools_changed(&self) -> watch::Receiver<u64> {
        self.tools_changed.subscribe()
    }

    /// The stores of the key-value buckets components use through
    /// `wasi:keyvalue` (the `[store]` settings; each backend opened on
    /// first use). `None` only for a runtime built without stores.
    pub fn stores(&self) -> Option<&Arc<tessera_store::Stores>> {
        self.runtime.host().stores.as_ref()
    }

    /// The request guard of this server listening on `local`.
    pub fn request_guard(&self, local: SocketAddr) -> guard::RequestGuard {
        guard::RequestGuard::new(
            local,
            &self.config.allowed_hosts,
            &self.config.allowed_origins,
        )
    }
}
