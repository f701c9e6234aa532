//! Server settings, kept apart from the state they configure so the CLI
//! and the tests can build them field by field.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::active::LoadObserver;
use crate::guard::AllowedOrigin;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The data directory (registry, journal, audit log, tokens).
    pub data: PathBuf,
    /// The compile cache, shared with every other data directory and
    /// process that names the same directory; `None` disables it (every
    /// start compiles every component).
    pub cache_dir: Option<PathBuf>,
    /// Told when a component is compiled (not found in the compile cache),
    /// which happens in the background while the server already serves.
    pub load_observer: Option<Arc<dyn LoadObserver>>,
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
    pub allowed_origins: Vec<AllowedOrigin>,
    /// Values of `wasi:config` secrets the served components may name
    /// (host configuration: never journaled, never in a manifest).
    pub secrets: std::collections::BTreeMap<String, String>,
    /// How much of the journal to keep. The server prunes in the
    /// background as runs are recorded (see `docs/journal.md`,
    /// Retention); an empty policy keeps everything.
    pub retention: tessera_journal::Retention,
    /// Where the key-value buckets of `wasi:keyvalue` live (the `[store]`
    /// settings; by default the embedded store in the data directory).
    pub store: tessera_store::StoreSettings,
    /// The LLM providers that serve `tessera:agent/llm` (the `[llm]`
    /// settings, keys included; never journaled); `None`: none.
    pub llm: Option<Arc<tessera_runtime::capability::llm::LlmProviders>>,
    /// The models that serve `wasi:nn` (the data directory's `tessera
    /// models`); `None`: none.
    pub models: Option<Arc<dyn tessera_runtime::capability::nn::NnModels>>,
    /// The code sandboxes offered as MCP tools (`sandbox__python`,
    /// `sandbox__javascript`): the directories their components are
    /// looked for in ([`tessera_sandbox::search_path`]); `None`: none.
    pub sandboxes: Option<Vec<PathBuf>>,
    /// How long a sandbox session (the `session` argument of the sandbox
    /// tools) stays live unused before its instance is dropped; its history
    /// stays in the journal and rebuilds it when it is used again.
    pub session_idle: Duration,
    /// How many sandbox sessions are live at once; past it the least
    /// recently used idle one is dropped (and rebuilt when used again).
    pub max_sessions: usize,
    /// The trust policy every component must satisfy on registry add and
    /// on every load ([`tessera_runtime::trust`]); `None`: any component.
    pub trust: Option<Arc<tessera_runtime::trust::TrustPolicy>>,
    /// The boundary policies every gateway decision consults after the
    /// grants ([`tessera_runtime::policy`]); `None`: the grants alone.
    /// Policies loaded from a directory are reloaded when a file in it
    /// changes (checked every [`ServerConfig::policy_poll`]).
    pub policy: Option<Arc<tessera_runtime::policy::PolicyEngine>>,
    /// How often the policy directory is checked for changes.
    pub policy_poll: std::time::Duration,
    /// Sign the audit chain's head with this key at this period, and once
    /// more when the server stops (`None`: no checkpoints).
    pub audit_signing: Option<AuditSigning>,
}

/// Periodic signed checkpoints of the audit log
/// ([`tessera_runtime::audit::JsonLinesAudit::checkpoint`]).
#[derive(Debug, Clone)]
pub struct AuditSigning {
    /// The host's secret key.
    pub key: tessera_runtime::trust::SecretKey,
    /// How often to sign (a checkpoint is written only when lines were
    /// added since the last one).
    pub every: Duration,
}

impl ServerConfig {
    /// Defaults for a data directory: the per-user compile cache
    /// ([`tessera_runtime::cache::default_dir`]; none when it has no
    /// location), loopback on port 7878, no tokens required, 16 MiB bodies,
    /// 256 concurrent calls, 10 s grace, no extra hosts or origins, no
    /// retention limit, every bucket in the embedded store, no LLM
    /// providers, no code sandboxes (sessions idle for 10 minutes dropped,
    /// at most 64 live).
    pub fn new(data: PathBuf) -> Self {
        Self {
            data,
            cache_dir: tessera_runtime::cache::default_dir(),
            load_observer: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            require_tokens: false,
            max_body_bytes: 16 << 20,
            max_calls: 256,
            grace: Duration::from_secs(10),
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            secrets: std::collections::BTreeMap::new(),
            retention: tessera_journal::Retention::default(),
            store: tessera_store::StoreSettings::default(),
            llm: None,
            models: None,
            sandboxes: None,
            session_idle: Duration::from_secs(600),
            max_sessions: 64,
            trust: None,
            policy: None,
            policy_poll: std::time::Duration::from_millis(500),
            audit_signing: None,
        }
    }
}
