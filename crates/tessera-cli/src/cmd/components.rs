//! `tessera components`: the registry a server serves. Without `--server`
//! it works on the data directory (a running server picks changes up within
//! a quarter of a second); with `--server` it goes through that server's
//! HTTP API.
//!
//! `add` admits a version only once it is known to load: it is compiled
//! (into the compile cache the server reads, so serving it does not compile
//! again) and checked against Tessera's linker first; a component that
//! cannot load is refused with the reason and the registry is unchanged.
//! `inspect` shows the same document locally and through `--server`: the
//! versions, the active version's grants, limits and effects, and its
//! functions with their JSON Schemas.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tessera_server::admit::{self, AdmitError, HostCheck, NewVersion};
use tessera_server::api::{ComponentInfo, GrantsInfo};
use tessera_server::registry::Registry;

use crate::cmd::remote::Api;
use crate::exit;
use crate::failure::{Failure, Outcome, finish};
use crate::setup::{self, GlobalArgs};

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
    /// Print JSON (the same documents the HTTP API answers); failures are
    /// JSON too.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands of `tessera components`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Register a component, or a new version of one (which becomes
    /// active), once it compiles and links; a component that cannot load
    /// is refused with the reason and nothing changes.
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
    /// Show a component's versions, the active version's grants, limits
    /// and effects, and its functions with their JSON Schemas.
    Inspect {
        /// The name.
        name: String,
    },
    /// Make a version active.
    Activate {
        /// The name.
        name: String,
        /// The version (1-based). (Its id differs from the name so it does
        /// not clash with the global `--version` flag.)
        #[arg(id = "target_version", value_name = "VERSION")]
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
    let json = args.json;
    let outcome = match args.server {
        Some(server) => remote(&server, args.token, args.command, json).await,
        None => local(global, args.command, json).await,
    };
    finish(outcome, json)
}

/// Prints a document: as JSON with `--json`, otherwise with `text`.
fn show(json: bool, doc: &Value, text: impl FnOnce(&Value)) {
    if json {
        println!("{}", serde_json::to_string_pretty(doc).unwrap_or_default());
    } else {
        text(doc);
    }
}

fn print_registered(v: &Value) {
    println!(
        "{} v{} active",
        v["name"].as_str().unwrap_or_default(),
        v["active_version"]
    );
}

fn print_list(v: &Value) {
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
}

/// `components inspect` as text, from the [`ComponentInfo`] document.
fn print_info(c: &Value) {
    let active = c["active_version"].as_u64().unwrap_or(0);
    print!(
        "{}: active v{active}",
        c["name"].as_str().unwrap_or_default()
    );
    if let Some(p) = c["previous_version"].as_u64() {
        print!(" (previous v{p})");
    }
    println!();
    println!("versions:");
    for v in c["versions"].as_array().into_iter().flatten() {
        let n = v["version"].as_u64().unwrap_or(0);
        println!(
            "  {} v{n} {} {} {}{}",
            if n == active { "*" } else { " " },
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
    if let Some(g) = c["grants"].as_object() {
        println!("grants of v{active}:");
        for (capability, grant) in g["grants"].as_object().into_iter().flatten() {
            println!("  {capability:<14} {}", compact(grant));
        }
        let effects: Vec<&str> = g["effects"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| v.as_bool() == Some(true))
            .map(|(k, _)| k.as_str())
            .collect();
        println!(
            "  {:<14} {}",
            "effects",
            if effects.is_empty() {
                "none".to_string()
            } else {
                effects.join(", ")
            }
        );
    }
    if let Some(e) = c["load_error"].as_str() {
        println!("not loaded: {e}");
    }
    let functions = c["functions"].as_array();
    if let Some(functions) = functions {
        println!("functions:");
        for f in functions {
            println!("  fn {}", f["name"].as_str().unwrap_or_default());
            if let Some(d) = f["description"].as_str() {
                for line in d.lines() {
                    println!("      {line}");
                }
            }
            if let Some(n) = f["not_callable"].as_str() {
                println!("      (not callable from JSON: {n})");
            }
            println!("      parameters: {}", compact(&f["parameters"]));
            println!("      result:     {}", compact(&f["result"]));
        }
    }
}

/// One line of JSON.
fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Through a running server's API.
async fn remote(server: &str, token: Option<String>, command: Command, json: bool) -> Outcome {
    use base64::Engine as _;
    let api = Api::new(server, token).map_err(Failure::from)?;
    let (doc, text): (Value, fn(&Value)) = match command {
        Command::Add {
            component,
            name,
            manifest,
            source,
        } => {
            let fetched = crate::source::resolve(&component, &source)
                .await
                .map_err(crate::source::Failure::into_failure)?;
            let manifest = manifest
                .map(|m| {
                    std::fs::read_to_string(&m).map_err(|e| {
                        Failure::bad_input("manifest", format!("{}: {e}", m.display()))
                            .with("manifest", m.display().to_string())
                    })
                })
                .transpose()?;
            let v = api
                .request(
                    "PUT",
                    &format!("/v1/components/{name}"),
                    Some(json!({
                        "wasm_base64": base64::engine::general_purpose::STANDARD.encode(fetched.bytes),
                        "manifest": manifest,
                        "origin": fetched.origin,
                    })),
                )
                .await?;
            (v, print_registered)
        }
        Command::List => (
            api.request("GET", "/v1/components", None).await?,
            print_list,
        ),
        Command::Inspect { name } => (
            api.request("GET", &format!("/v1/components/{name}"), None)
                .await?,
            print_info,
        ),
        Command::Activate { name, version } => {
            let v = api
                .request(
                    "POST",
                    &format!("/v1/components/{name}/activate"),
                    Some(json!({ "version": version })),
                )
                .await?;
            (v, print_registered)
        }
        Command::Rollback { name } => (
            api.request("POST", &format!("/v1/components/{name}/rollback"), None)
                .await?,
            print_registered,
        ),
        Command::Remove { name } => {
            api.request("DELETE", &format!("/v1/components/{name}"), None)
                .await?;
            (json!({ "name": name, "removed": true }), |v: &Value| {
                println!("{} removed", v["name"].as_str().unwrap_or_default())
            })
        }
        Command::Push { .. } => {
            return Err(Failure::internal(
                "usage",
                "`components push` is handled before a registry is opened",
            ));
        }
    };
    show(json, &doc, text);
    Ok(exit::OK)
}

fn admit_failure(e: &AdmitError) -> Failure {
    match e {
        AdmitError::Runtime(r) => Failure::from_runtime(r),
        AdmitError::Manifest(m) => Failure::from_manifest(m),
        AdmitError::Registry(r) => {
            let kind = match r {
                tessera_server::registry::RegistryError::InvalidName(_) => "invalid_name",
                tessera_server::registry::RegistryError::NoSuchComponent(_) => "no_such_component",
                tessera_server::registry::RegistryError::NoSuchVersion { .. } => "no_such_version",
                _ => "registry",
            };
            Failure::bad_input(kind, r.to_string())
        }
    }
}

fn registry_failure(e: tessera_server::registry::RegistryError) -> Failure {
    admit_failure(&AdmitError::Registry(e))
}

/// Reads a manifest for the registry: its text, and the folder its
/// relative paths resolve from.
fn read_manifest(m: &Path) -> Result<(String, PathBuf), Failure> {
    // Validated from the file first, so errors name it.
    tessera_runtime::Grants::from_file(m).map_err(|e| Failure::from_manifest(&e))?;
    let text = std::fs::read_to_string(m).map_err(|e| {
        Failure::bad_input(
            "manifest",
            format!("cannot read manifest {}: {e}", m.display()),
        )
        .with("manifest", m.display().to_string())
    })?;
    let parent = m.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = std::fs::canonicalize(parent.unwrap_or(Path::new("."))).unwrap_or_default();
    Ok((text, dir))
}

/// The local `inspect` document: the registry's record, and what compiling
/// the active version shows (functions even when it cannot link).
async fn local_info(
    global: &GlobalArgs,
    registry: &Registry,
    name: &str,
) -> Result<ComponentInfo, Failure> {
    let entry = registry.get(name).map_err(registry_failure)?;
    let mut info = ComponentInfo::from_entry(name, &entry);
    let record = entry.active_version();
    let grants = GrantsInfo::of(name, entry.active, record);
    let bytes = registry.bytes(&record.digest).map_err(registry_failure)?;
    let runtime = global.runtime_checked(false)?;
    let what = format!("{name} v{}", entry.active);
    let prepared = runtime
        .prepare(bytes, &what)
        .map_err(|e| Failure::from_runtime(&e))?;
    match setup::inspect_prepared(&runtime, prepared, &what).await {
        Ok(inspection) => {
            // As the server shows them: with what `[tools]` makes of each.
            let exposures = tessera_server::api::version_grants(name, entry.active, record)
                .and_then(|g| g.tools.resolve(&inspection.functions, &what));
            info.functions = Some(match &exposures {
                Ok(exposures) => inspection
                    .functions
                    .iter()
                    .zip(exposures)
                    .map(|(f, e)| tessera_server::api::function_doc(f, e))
                    .collect(),
                Err(_) => inspection
                    .functions
                    .iter()
                    .map(|f| match f.to_json() {
                        Value::Object(m) => m,
                        _ => serde_json::Map::new(),
                    })
                    .collect(),
            });
            match inspection.link_failure() {
                None => info.loaded = Some(entry.active as u64),
                Some(e) => info.load_error = Some(e.to_string()),
            }
        }
        Err(e) => info.load_error = Some(e.to_string()),
    }
    match grants {
        Ok(g) => info.grants = Some(g),
        Err(e) => {
            // It would not load: the manifest is the first reason.
            info.loaded = None;
            info.load_error = Some(e.to_string());
        }
    }
    Ok(info)
}

/// On the data directory.
async fn local(global: &GlobalArgs, command: Command, json: bool) -> Outcome {
    let registry =
        Registry::open(&global.data).map_err(|e| Failure::internal("registry", e.to_string()))?;
    let (doc, text): (Value, fn(&Value)) = match command {
        Command::Add {
            component,
            name,
            manifest,
            source,
        } => {
            let fetched = crate::source::resolve(&component, &source)
                .await
                .map_err(crate::source::Failure::into_failure)?;
            let manifest = manifest.as_deref().map(read_manifest).transpose()?;
            let runtime = global.runtime_checked(false)?;
            let origin = fetched.origin;
            let new = NewVersion {
                name: name.clone(),
                bytes: fetched.bytes,
                manifest,
                origin: origin.clone(),
            };
            let progress = std::sync::Arc::new(std::sync::Mutex::new(None));
            let shown = progress.clone();
            let task_registry = registry.clone();
            let admitted = tokio::task::spawn_blocking(move || {
                // The server that serves it binds its own secrets.
                admit::add_checked(
                    &runtime,
                    &task_registry,
                    new,
                    HostCheck::ValidateOnly,
                    |p| {
                        let bar = setup::compile_progress(&origin, p.component_bytes.len());
                        *shown.lock().unwrap_or_else(|p| p.into_inner()) = Some(bar);
                    },
                )
            })
            .await;
            if let Some(bar) = progress.lock().unwrap_or_else(|p| p.into_inner()).take() {
                bar.finish_and_clear();
            }
            let admitted = admitted
                .map_err(|e| Failure::internal("task", format!("compile task failed: {e}")))?
                .map_err(|e| admit_failure(&e))?;
            (
                json!({ "name": name, "active_version": admitted.version }),
                print_registered,
            )
        }
        Command::List => {
            let list = registry.list().map_err(registry_failure)?;
            let components: Vec<ComponentInfo> = list
                .iter()
                .map(|(n, e)| ComponentInfo::from_entry(n, e))
                .collect();
            (json!({ "components": components }), print_list)
        }
        Command::Inspect { name } => {
            let info = local_info(global, &registry, &name).await?;
            (serde_json::to_value(info).unwrap_or_default(), print_info)
        }
        Command::Activate { name, version } => {
            registry
                .activate(&name, version)
                .map_err(registry_failure)?;
            (
                json!({ "name": name, "active_version": version }),
                print_registered,
            )
        }
        Command::Rollback { name } => {
            let v = registry.rollback(&name).map_err(registry_failure)?;
            (
                json!({ "name": name, "active_version": v }),
                print_registered,
            )
        }
        Command::Remove { name } => {
            registry.remove(&name).map_err(registry_failure)?;
            (json!({ "name": name, "removed": true }), |v: &Value| {
                println!("{} removed", v["name"].as_str().unwrap_or_default())
            })
        }
        Command::Push { .. } => {
            return Err(Failure::internal(
                "usage",
                "`components push` is handled before a registry is opened",
            ));
        }
    };
    show(json, &doc, text);
    Ok(exit::OK)
}
