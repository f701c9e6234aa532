//! `tessera serve`: the long-running server (HTTP API and MCP over
//! streamable HTTP, or MCP over stdio).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tessera_server::{LoadError, LoadObserver, Server, ServerConfig};

use crate::exit;
use crate::setup::GlobalArgs;

/// Arguments of `tessera serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Sign the audit log's head with this secret key
    /// (`tessera keys generate`) every `--audit-sign-every` seconds and when
    /// the server stops; `tessera audit verify --key <pub>` checks the
    /// checkpoints.
    #[arg(long, value_name = "FILE")]
    pub audit_sign_key: Option<std::path::PathBuf>,
    /// Seconds between audit checkpoints (with `--audit-sign-key`).
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub audit_sign_every: u64,
    /// Address to listen on. Any non-loopback address requires tokens.
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub listen: SocketAddr,
    /// Require a bearer token on every request, even on loopback.
    #[arg(long)]
    pub require_tokens: bool,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 16 << 20)]
    pub max_body_bytes: usize,
    /// Calls running at once across all components; more get 503.
    #[arg(long, default_value_t = 256)]
    pub max_calls: usize,
    /// Milliseconds in-flight calls may take to finish after SIGTERM/Ctrl-C.
    #[arg(long, default_value_t = 10_000)]
    pub grace_ms: u64,
    /// Serve MCP over stdin/stdout instead of HTTP (for an MCP host that
    /// spawns Tessera). Nothing but MCP messages is written to stdout.
    #[arg(long, conflicts_with_all = ["listen", "require_tokens", "allowed_host", "allowed_origin"])]
    pub stdio: bool,
    /// A `Host` the server answers to, on every route (repeatable). On
    /// loopback it is added to the loopback names (localhost, 127.0.0.1,
    /// ::1); on another address only the given hosts are accepted (default:
    /// any, since tokens are required there). Other hosts get 403.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub allowed_host: Vec<String>,
    /// A browser origin allowed to call the server (repeatable), exactly as
    /// browsers send it: `http://localhost:3000`. A request carrying any
    /// other `Origin` than these and the server's own is refused with 403;
    /// an allowed origin gets CORS headers naming it (never `*`).
    #[arg(long, value_name = "ORIGIN")]
    pub allowed_origin: Vec<tessera_server::guard::AllowedOrigin>,
    /// Keep at most this many runs in the journal (over `[journal]
    /// max_runs` in `<data>/tessera.toml`); older ones are pruned in the
    /// background.
    #[arg(long, value_name = "N")]
    pub journal_max_runs: Option<u64>,
    /// Prune runs older than this (`30d`, `12h`; over `[journal] max_age`).
    #[arg(long, value_name = "AGE")]
    pub journal_max_age: Option<String>,
    /// Keep the journal file under this size on disk (`256 MiB`; over
    /// `[journal] max_bytes`).
    #[arg(long, value_name = "SIZE")]
    pub journal_max_bytes: Option<String>,
    /// Offer the code sandboxes as MCP tools (`sandbox__python`,
    /// `sandbox__javascript`): their components from DIR, or, without a
    /// value, where `tessera exec` finds them.
    #[arg(long, value_name = "DIR", num_args = 0..=1)]
    pub sandboxes: Option<Option<std::path::PathBuf>>,
    /// Drop a sandbox session's live instance after this many seconds
    /// unused (its history stays in the journal and rebuilds it).
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub session_idle_secs: u64,
    /// Keep at most this many sandbox sessions live.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_sessions: usize,
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    eprintln!("shutting down: no new requests; waiting for calls in flight");
}

/// Says on stderr (where the operator looks; stdout may be MCP's) which
/// components are compiling in the background and when they are served.
#[derive(Debug)]
struct ReportCompiles;

impl LoadObserver for ReportCompiles {
    fn compiling(&self, name: &str, version: usize, bytes: usize) {
        eprintln!(
            "compiling `{name}` v{version} ({:.1} MiB) in the background; its tools are served when it is ready",
            bytes as f64 / (1 << 20) as f64
        );
    }

    fn compiled(
        &self,
        name: &str,
        version: usize,
        elapsed: Duration,
        outcome: Result<(), &LoadError>,
    ) {
        match outcome {
            Ok(()) => eprintln!(
                "`{name}` v{version} compiled in {:.1} s and served",
                elapsed.as_secs_f64()
            ),
            Err(e) => eprintln!("error: cannot load component `{name}` v{version}: {e}"),
        }
    }
}

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn run(global: &GlobalArgs, args: Args) -> i32 {
    let mut config = ServerConfig::new(global.data.clone());
    config.cache_dir = global.cache_dir();
    config.load_observer = Some(Arc::new(ReportCompiles));
    config.listen = args.listen;
    config.require_tokens = args.require_tokens || !args.listen.ip().is_loopback();
    config.max_body_bytes = args.max_body_bytes;
    config.max_calls = args.max_calls;
    config.grace = Duration::from_millis(args.grace_ms);
    config.allowed_hosts = args.allowed_host;
    config.secrets = match global.secrets() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return crate::exit::BAD_INPUT;
        }
    };
    config.allowed_origins = args.allowed_origin;
    config.retention = match crate::cmd::runs::policy(
        &global.data,
        args.journal_max_runs,
        args.journal_max_age.as_deref(),
        args.journal_max_bytes.as_deref(),
        "journal-",
    ) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return crate::exit::BAD_INPUT;
        }
    };
    config.store = match global.store_settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return crate::exit::BAD_INPUT;
        }
    };
    config.llm = match global.llm_providers() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return crate::exit::BAD_INPUT;
        }
    };
    config.models = Some(global.models());
    config.trust = match global.trust_policy() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return crate::exit::BAD_INPUT;
        }
    };
    config.policy = match global.policy_engine() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return crate::exit::BAD_INPUT;
        }
    };
    if let Some(path) = &args.audit_sign_key {
        match tessera_runtime::trust::keys::read_secret(path) {
            Ok(key) => {
                config.audit_signing = Some(tessera_server::AuditSigning {
                    key,
                    every: Duration::from_secs(args.audit_sign_every.max(1)),
                })
            }
            Err(e) => {
                eprintln!("error: {e}");
                return crate::exit::BAD_INPUT;
            }
        }
    }
    config.sandboxes = args
        .sandboxes
        .as_ref()
        .map(|dir| tessera_sandbox::search_path(dir.as_deref()));
    config.session_idle = std::time::Duration::from_secs(args.session_idle_secs.max(1));
    config.max_sessions = args.max_sessions.max(1);
    // Bind first: a taken port is reported before the components load.
    let listener = if args.stdio {
        None
    } else {
        match tokio::net::TcpListener::bind(config.listen).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("error: cannot listen on {}: {e}", config.listen);
                return exit::INTERNAL;
            }
        }
    };
    let require = config.require_tokens;
    // Over stdio the MCP host is waiting for its `initialize` answer: the
    // server answers it while the components load (the tool list waits
    // for the ones in the compile cache). Over HTTP, the port is bound
    // already and requests wait in its backlog until the server opens.
    let opened = if listener.is_none() {
        Server::start(config).await
    } else {
        Server::open(config).await
    };
    let server = match opened {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::INTERNAL;
        }
    };
    let served = match listener {
        None => {
            let started = server.clone();
            tokio::spawn(async move {
                started.started().await;
                eprintln!("tessera serving {} over MCP on stdio", count(&started));
            });
            server.serve_stdio(shutdown_signal()).await
        }
        Some(listener) => {
            let count = count(&server);
            let local = listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            eprintln!(
                "tessera serving {count} on http://{local} (tokens {}); MCP at /mcp, OpenAPI at /openapi.json",
                if require {
                    "required"
                } else {
                    "optional on loopback"
                }
            );
            server.serve(listener, shutdown_signal()).await
        }
    };
    match served {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("error: {e}");
            exit::INTERNAL
        }
    }
}

/// What is being served, for the operator: the number of components, and
/// those still compiling. Says which failed to load too (the server logs
/// through `tracing`; this is where the operator is looking).
fn count(server: &Server) -> String {
    for (name, e) in server.load_failures() {
        eprintln!("error: cannot load component `{name}`: {e}");
    }
    let count = server.active_names().len();
    let compiling = server.loading().len();
    if compiling == 0 {
        format!("{count} component(s)")
    } else {
        format!("{count} component(s) ({compiling} more compiling)")
    }
}
