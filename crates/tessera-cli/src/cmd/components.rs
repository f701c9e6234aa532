//! `tessera components`: the registry a server serves (a running server
//! picks changes up within a quarter of a second).

use std::path::PathBuf;

use tessera_server::registry::Registry;

use crate::exit;
use crate::setup::GlobalArgs;

/// Subcommands of `tessera components`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Register a component, or a new version of one (which becomes active).
    Add {
        /// The component file.
        component: PathBuf,
        /// Its name (a-z, 0-9, `-`, `_`).
        #[arg(long)]
        name: String,
        /// Its manifest of grants and limits.
        #[arg(long)]
        manifest: Option<PathBuf>,
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
pub fn run(global: &GlobalArgs, command: Command) -> i32 {
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
        } => (|| {
            let bytes =
                std::fs::read(&component).map_err(|e| format!("{}: {e}", component.display()))?;
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
                .add(&name, &bytes, manifest, &component.display().to_string())
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
    };
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("error: {e}");
            exit::BAD_INPUT
        }
    }
}
