//! `tessera plans`: the plans a server serves (`<data>/plans`), each one an
//! MCP tool `plan__<name>` and runnable over HTTP. Without `--server` it
//! works on the data directory (a running server tells its MCP sessions
//! within a quarter of a second); with `--server` it goes through that
//! server's HTTP API.
//!
//! A plan is registered only once it reads, and only if every step names
//! a registered component: a server does not call `.wasm` paths (see
//! `tessera_server::plan_registry`).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tessera_server::api::PlanInfo;
use tessera_server::plan_registry::{PlanRegistry, PlanRegistryError};

use crate::cmd::remote::Api;
use crate::exit;
use crate::failure::{Failure, Outcome, finish};
use crate::setup::GlobalArgs;

/// Arguments of `tessera plans`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Manage a running server's plans through its HTTP API
    /// (`http://host:port`) instead of the local data directory.
    #[arg(long, env = "TESSERA_SERVER", global = true)]
    pub server: Option<String>,
    /// Bearer token for `--server` (scope `manage` to add and remove,
    /// `read` to list).
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

/// Subcommands of `tessera plans`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Register a plan (or replace the one of that name) once it reads and
    /// every step names a registered component.
    Add {
        /// Its name (a-z, 0-9, `-`, `_`): the MCP tool is `plan__NAME`.
        name: String,
        /// The plan file (TOML).
        file: PathBuf,
    },
    /// List registered plans.
    List,
    /// Remove a plan (its runs in progress go on).
    Remove {
        /// The name.
        name: String,
    },
}

/// Runs the subcommand and returns the exit code.
pub async fn run(global: &GlobalArgs, args: Args) -> i32 {
    let json = args.json;
    let outcome = match args.server {
        Some(server) => remote(&server, args.token, args.command, json).await,
        None => local(global, args.command, json),
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

fn print_added(v: &Value) {
    let steps = v["steps"].as_array().map_or(0, Vec::len);
    println!(
        "plan {} registered: {steps} steps, MCP tool {}",
        v["name"].as_str().unwrap_or_default(),
        v["tool"].as_str().unwrap_or_default()
    );
}

fn print_list(v: &Value) {
    for p in v["plans"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or_default();
        if let Some(e) = p["error"].as_str() {
            println!("{name:<24} (does not read: {e})");
            continue;
        }
        let inputs = p["input_schema"]["properties"]
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>().join(","))
            .unwrap_or_default();
        println!(
            "{name:<24} {:>2} steps  inputs [{inputs}]  {}",
            p["steps"].as_array().map_or(0, Vec::len),
            p["description"].as_str().unwrap_or_default()
        );
    }
}

fn print_removed(v: &Value) {
    println!("{} removed", v["name"].as_str().unwrap_or_default());
}

/// The plan file's text, the directory its relative paths resolve
/// against, and how errors name it.
fn read_plan_file(file: &Path) -> Result<(String, PathBuf, String), Failure> {
    let origin = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|e| {
        Failure::bad_input("read", format!("{origin}: {e}")).with("file", origin.clone())
    })?;
    let parent = file.parent().filter(|d| !d.as_os_str().is_empty());
    let base = std::fs::canonicalize(parent.unwrap_or(Path::new("."))).unwrap_or_default();
    Ok((text, base, origin))
}

fn registry_failure(e: PlanRegistryError) -> Failure {
    match e {
        PlanRegistryError::Plan(p) => Failure::bad_input("bad_plan", p.to_string())
            .with("file", p.origin.clone())
            .with("place", p.place.clone()),
        e @ PlanRegistryError::InvalidName(_) => Failure::bad_input("invalid_name", e.to_string()),
        PlanRegistryError::NoSuchPlan(name) => {
            Failure::bad_input("no_such_plan", format!("no plan named `{name}`")).with("plan", name)
        }
        e @ (PlanRegistryError::Io { .. } | PlanRegistryError::Corrupt { .. }) => {
            Failure::internal("registry", e.to_string())
        }
    }
}

/// Through a running server's API.
async fn remote(server: &str, token: Option<String>, command: Command, json: bool) -> Outcome {
    let api = Api::new(server, token).map_err(Failure::from)?;
    let (doc, text): (Value, fn(&Value)) = match command {
        Command::Add { name, file } => {
            let (text, base, origin) = read_plan_file(&file)?;
            let v = api
                .request(
                    "PUT",
                    &format!("/v1/plans/{name}"),
                    Some(json!({
                        "text": text,
                        "base": base.display().to_string(),
                        "origin": origin,
                    })),
                )
                .await?;
            (v, print_added)
        }
        Command::List => (api.request("GET", "/v1/plans", None).await?, print_list),
        Command::Remove { name } => {
            api.request("DELETE", &format!("/v1/plans/{name}"), None)
                .await?;
            (json!({ "name": name, "removed": true }), print_removed)
        }
    };
    show(json, &doc, text);
    Ok(exit::OK)
}

/// On the data directory.
fn local(global: &GlobalArgs, command: Command, json: bool) -> Outcome {
    let registry = PlanRegistry::open(&global.data).map_err(registry_failure)?;
    let (doc, text): (Value, fn(&Value)) = match command {
        Command::Add { name, file } => {
            let (text, base, origin) = read_plan_file(&file)?;
            // Checked against the registered components before it is stored.
            let plan = tessera_server::plan_registry::check(&name, &text, &origin, &base)
                .map_err(registry_failure)?;
            crate::cmd::plan::check_components(&plan, &crate::cmd::plan::components(global)?)?;
            registry
                .put(&name, &text, &base, &origin)
                .map_err(registry_failure)?;
            let stored = registry.get(&name).map_err(registry_failure)?;
            (
                serde_json::to_value(PlanInfo::of(&stored, true)).unwrap_or_default(),
                print_added,
            )
        }
        Command::List => {
            let mut plans = Vec::new();
            for name in registry.names().map_err(registry_failure)? {
                match registry.get(&name) {
                    Ok(stored) => plans.push(PlanInfo::of(&stored, false)),
                    Err(PlanRegistryError::NoSuchPlan(_)) => {}
                    Err(e) => return Err(registry_failure(e)),
                }
            }
            (json!({ "plans": plans }), print_list)
        }
        Command::Remove { name } => {
            registry.remove(&name).map_err(registry_failure)?;
            (json!({ "name": name, "removed": true }), print_removed)
        }
    };
    show(json, &doc, text);
    Ok(exit::OK)
}
