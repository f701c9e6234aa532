//! `tessera serve`: the long-running server (HTTP API).

use std::net::SocketAddr;
use std::time::Duration;

use tessera_server::{Server, ServerConfig};

use crate::exit;
use crate::setup::GlobalArgs;

/// Arguments of `tessera serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
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

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn run(global: &GlobalArgs, args: Args) -> i32 {
    let mut config = ServerConfig::new(global.data.clone());
    config.listen = args.listen;
    config.require_tokens = args.require_tokens || !args.listen.ip().is_loopback();
    config.max_body_bytes = args.max_body_bytes;
    config.max_calls = args.max_calls;
    config.grace = Duration::from_millis(args.grace_ms);
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", config.listen);
            return exit::INTERNAL;
        }
    };
    let require = config.require_tokens;
    let server = match Server::open(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::INTERNAL;
        }
    };
    eprintln!(
        "tessera serving {} component(s) on http://{} (tokens {}); OpenAPI at /openapi.json",
        server.active_names().len(),
        args.listen,
        if require {
            "required"
        } else {
            "optional on loopback"
        }
    );
    match server.serve(listener, shutdown_signal()).await {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("error: {e}");
            exit::INTERNAL
        }
    }
}
