//! `tessera components`: the registry a server serves. Without `--server`
//! it works on the data directory (a running server picks changes up within
//! a quarter of a second); with `--server` it goes through that server's
//! HTTP API.

use std::path::PathBuf;

use tessera_server::registry::Registry;

use crate::cmd::remote::Api;
use crate::exit;
use crate::setup::GlobalArgs;

/// Arguments of `tessera components`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manage a running server's registry through its HTTP API
    /// (`http://host:port`) instead of the local data directory.
    #[arg(long, env = "TESSERA_SERVER", global = true)]
    pub server: Option<String>,
    /// Bearer token for `--server` (scope `manage`; `call` is enough for
    /// `list` and `inspect`).
    #[arg(long, env = "TESSERA_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands of `tessera components`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Register a component, or a new version of one (which becomes active).
    Add {
        /// The component: a file, an `https://…#sha256=<hex>` URL or an
        /// `oci://host/repo:tag` reference (fetched here, also with
        /// `--server`).
        component: PathBuf,
        /// Its name (a-z, 0-9, `-`, `_`).
        #[arg(long)]
        name: String,
        /// Its manifest of grants and limits (sent to a `--server` as text:
        /// relative paths in it then resolve against the server's data
        /// directory).
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Where to fetch the component from.
        #[command(flatten)]
        source: crate::source::SourceArgs,
    },
    /// Publish a component to an OCI registry as a Wasm OCI artifact, and
    /// print the digest-pinned reference that pulls exactly it.
    Push {
        /// A registered component's name (its active version, from the
        /// local data directory), or a component file, URL or reference.
        component: PathBuf,
        /// The target, `oci://host[:port]/repository[:tag]` (tag `latest`
        /// when none is given).
        target: String,
        /// Where to fetch the component from, and the registry's options.
        #[command(flatten)]
        source: crate::source::SourceArgs,
    },
    /// List registered components.
    List,
    /// Show a component's versions and functions.
    Inspect {
        /// The name.
        name: String,
    },
    /// Make a version active.
    Activate {
        /// The name.
        name: String,
        /// The version (1-based).
        version: usize,
    },
    /// Go back to the previously active version.
    Rollback {
        /// The name.
        name: String,
    },
    /// Remove a component.
    Remove {
        /// The name.
        name: String,
    },
}

/// Runs the subcommand and returns the exit code.
pub async fn run(global: &GlobalArgs, args: Args) -> i32 {
    if let Command::Push {
        component,
        target,
        source,
    } = &args.command
    {
        let through_server = args.server.is_some();
        return crate::source::push(global, through_server, component, target, source).await;
    }
    match args.server {
        Some(server) => remote(&server, args.token, args.command).await,
        None => local(global, args.command),
    }
}

/// Through a running server's API.
async fn remote(server: &str, token: Option<String>, command: Command) -> i32 {
    use base64::Engine as _;
    use serde_json::json;
    let api = match Api::new(server, token) {
        Ok(a) => a,
        Err(f) => {
            eprintln!("error: {}", f.message);
            return f.code;
        }
    };
    let result = match command {
        Command::Add {
            component,
            name,
            manifest,
            source,
        } => {
            let read = || -> Result<(Vec<u8>, Option<String>, String), String> {
                let fetched =
                    crate::source::resolve_blocking(&component, &source).map_err(|f| f.message)?;
                let manifest = manifest
                    .map(|m| {
                        std::fs::read_to_string(&m).map_err(|e| format!("{}: {e}", m.display()))
                    })
                    .transpose()?;
                Ok((fetched.bytes, manifest, fetched.origin))
            };
            match read() {
                Err(e) => {
                    eprintln!("error: {e}");
                    return exit::BAD_INPUT;
                }
                Ok((bytes, manifest, origin)) => api
                    .request(
                        "PUT",
                        &format!("/v1/components/{name}"),
                        Some(json!({
                            "wasm_base64": base64::engine::general_purpose::STANDARD.encode(bytes),
                            "manifest": manifest,
                            "origin": origin,
                        })),
                    )
                    .await
                    .map(|v| println!("{name} v{} active", v["active_version"])),
            }
        }
        Command::List => api.request("GET", "/v1/components", None).await.map(|v| {
            for c in v["components"].as_array().into_iter().flatten() {
                let active = c["active_version"].as_u64().unwrap_or(0) as usize;
                let versions = c["versions"].as_array().cloned().unwrap_or_default();
                let a = versions
                    .get(active.saturating_sub(1))
                    .cloned()
                    .unwrap_or_default();
                println!(
                    "{:<24} v{active}/{}  {}  {}",
                    c["name"].as_str().unwrap_or_default(),
                    versions.len(),
                    a["digest"].as_str().unwrap_or_default(),
                    a["origin"].as_str().unwrap_or_default()
                );
            }
        }),
        Command::Inspect { name } => api
            .request("GET", &format!("/v1/components/{name}"), None)
            .await
            .map(|c| {
                println!("{name}: active v{}", c["active_version"]);
                for v in c["versions"].as_array().into_iter().flatten() {
                    println!(
                        "  v{} {} {} {}{}",
                        v["version"],
                        v["digest"].as_str().unwrap_or_default(),
                        v["added"].as_str().unwrap_or_default(),
                        v["origin"].as_str().unwrap_or_default(),
                        if v["manifest"].is_string() {
                            " (with manifest)"
                        } else {
                            ""
                        }
                    );
                }
                for f in c["functions"].as_array().into_iter().flatten() {
                    println!("  fn {}", f["name"].as_str().unwrap_or_default());
                }
            }),
        Command::Activate { name, version } => api
            .request(
                "POST",
                &format!("/v1/components/{name}/activate"),
                Some(json!({ "version": version })),
            )
            .await
            .map(|_| println!("{name} v{version} active")),
        Command::Rollback { name } => api
            .request("POST", &format!("/v1/components/{name}/rollback"), None)
            .await
            .map(|v| println!("{name} v{} active", v["active_version"])),
        Command::Remove { name } => api
            .request("DELETE", &format!("/v1/components/{name}"), None)
            .await
            .map(|_| println!("{name} removed")),
        Command::Push { .. } => unreachable!("`push` is dispatched by `run`"),
    };
    match result {
        Ok(()) => exit::OK,
        Err(f) => {
            eprintln!("error: {}", f.message);
            f.code
        }
    }
}

/// On the data directory.
fn local(global: &GlobalArgs, command: Command) -> i32 {
    let registry = match Registry::open(&global.data) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::INTERNAL;
        }
    };
    let result = match command {
        Command::Add {
            component,
            name,
            manifest,
            source,
        } => (|| {
            let fetched =
                crate::source::resolve_blocking(&component, &source).map_err(|f| f.message)?;
            let manifest = match manifest {
                Some(m) => {
                    tessera_runtime::Grants::from_file(&m).map_err(|e| e.to_string())?;
                    let text =
                        std::fs::read_to_string(&m).map_err(|e| format!("{}: {e}", m.display()))?;
                    let dir = m
                        .parent()
                        .and_then(|d| {
                            std::fs::canonicalize(if d.as_os_str().is_empty() {
                                std::path::Path::new(".")
                            } else {
                                d
                            })
                            .ok()
                        })
                        .unwrap_or_default();
                    Some((text, dir))
                }
                None => None,
            };
            let v = registry
                .add(&name, &fetched.bytes, manifest, &fetched.origin)
                .map_err(|e| e.to_string())?;
            println!("{name} v{v} active");
            Ok(())
        })(),
        Command::List => registry.list().map_err(|e| e.to_string()).map(|list| {
            for (name, e) in list {
                let a = e.active_version();
                println!(
                    "{name:<24} v{}/{}  {}  {}",
                    e.active,
                    e.versions.len(),
                    a.digest,
                    a.origin
                );
            }
        }),
        Command::Inspect { name } => registry.get(&name).map_err(|e| e.to_string()).map(|e| {
            println!("{name}: active v{}", e.active);
            for (i, v) in e.versions.iter().enumerate() {
                println!(
                    "  v{} {} {} {}{}",
                    i + 1,
                    v.digest,
                    v.added,
                    v.origin,
                    if v.manifest.is_some() {
                        " (with manifest)"
                    } else {
                        ""
                    }
                );
            }
        }),
        Command::Activate { name, version } => registry
            .activate(&name, version)
            .map_err(|e| e.to_string())
            .map(|()| println!("{name} v{version} active")),
        Command::Rollback { name } => registry
            .rollback(&name)
            .map_err(|e| e.to_string())
            .map(|v| println!("{name} v{v} active")),
        Command::Remove { name } => registry
            .remove(&name)
            .map_err(|e| e.to_string())
            .map(|()| println!("{name} removed")),
        Command::Push { .. } => unreachable!("`push` is dispatched by `run`"),
    };
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("error: {e}");
            exit::BAD_INPUT
        }
    }
}
