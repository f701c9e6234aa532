//! The plan registry: named plans a server runs, kept in the data
//! directory.
//!
//! Layout: `<data>/plans/<name>.toml` is the plan's text exactly as it was
//! given (so errors name its lines), and `<data>/plans/<name>.json` beside
//! it says where it came from:
//!
//! ```json
//! {"base": "/abs/dir", "origin": "examples/plans/greetings.plan.toml", "added": "2025-01-01T00:00:00Z"}
//! ```
//!
//! `base` is the directory relative paths of the plan resolve against (kept
//! with every run); `origin` names the plan in errors. A plan is
//! registered only once it reads ([`Plan::from_toml`]): its name follows
//! the component names' rule ([`crate::registry::valid_name`]), the
//! plan's own `name` key (if any) is the registered name, and every step
//! calls a registered component by name — a server calls only what its
//! component registry serves (versioned, digest-pinned, hot-swappable), so
//! a step given as a `.wasm` path is refused, naming the step. Each file is
//! replaced atomically (written aside, then renamed), the sidecar first.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tessera_orchestrator::plan::{ComponentRef, Plan, PlanError};

use crate::registry::valid_name;

/// Why a plan could not be registered, read or removed.
#[derive(Debug, thiserror::Error)]
pub enum PlanRegistryError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A plan's sidecar (`<name>.json`) is damaged.
    #[error("{}: {source}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: serde_json::Error,
    },
    /// A name that cannot be used.
    #[error(
        "invalid plan name `{0}`: use 1-64 characters from a-z, 0-9, `-` and `_`, starting with a letter, without `__`, and not `plan` (as for components: MCP tools are named `plan__<name>`)"
    )]
    InvalidName(String),
    /// No plan has that name.
    #[error("no plan named `{0}`")]
    NoSuchPlan(String),
    /// The plan does not read, or cannot be served.
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// Where a registered plan came from: the sidecar `<name>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSource {
    /// The directory relative paths in the plan resolve against.
    pub base: PathBuf,
    /// What names the plan in errors (the file it was read from, as given).
    pub origin: String,
    /// When it was registered (RFC 3339).
    pub added: String,
}

/// A registered plan as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPlan {
    /// Its name.
    pub name: String,
    /// The plan's TOML text.
    pub text: String,
    /// Where it came from.
    pub source: PlanSource,
}

impl StoredPlan {
    /// The plan, read from its text (checked as when it was registered).
    pub fn plan(&self) -> Result<Plan, PlanRegistryError> {
        check(
            &self.name,
            &self.text,
            &self.source.origin,
            &self.source.base,
        )
    }
}

/// Reads `text` as the plan registered under `name`: the name is valid,
/// the plan reads, its own `name` (if any) is `name`, and every step names
/// a registered component.
pub fn check(name: &str, text: &str, origin: &str, base: &Path) -> Result<Plan, PlanRegistryError> {
    if !valid_name(name) {
        return Err(PlanRegistryError::InvalidName(name.to_string()));
    }
    let plan = Plan::from_toml(text, origin, base, name)?;
    if plan.name != name {
        return Err(PlanError {
            origin: origin.to_string(),
            place: "name".into(),
            message: format!(
                "the plan calls itself `{}` but is registered as `{name}`: register it under that name, or drop the `name` key",
                plan.name
            ),
        }
        .into());
    }
    for step in &plan.steps {
        if let ComponentRef::File { path, .. } = &step.component {
            return Err(PlanError {
                origin: origin.to_string(),
                place: format!("steps.{}.component", step.name),
                message: format!(
                    "`{}` is a file path; a server calls only registered components: register it (`tessera components add {} --name NAME`) and name it here",
                    path.display(),
                    path.display()
                ),
            }
            .into());
        }
    }
    Ok(plan)
}

/// The plans of a data directory.
#[derive(Debug, Clone)]
pub struct PlanRegistry {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PlanRegistryError + '_ {
    move |source| PlanRegistryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` atomically: to a file beside it, then renamed.
fn replace(path: &Path, bytes: &[u8]) -> Result<(), PlanRegistryError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = path.with_extension(format!(
        "tmp-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(path)(e)
    })
}

impl PlanRegistry {
    /// The plans under `<data>/plans` (created if missing).
    pub fn open(data: &Path) -> Result<Self, PlanRegistryError> {
        let dir = data.join("plans");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(Self { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn text_file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.toml"))
    }

    fn source_file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// When a plan was last added or removed (the directory's modification
    /// time), to notice changes made by another process.
    pub fn modified(&self) -> Option<std::time::SystemTime> {
        std::fs::metadata(&self.dir).and_then(|m| m.modified()).ok()
    }

    /// The names of the registered plans, sorted.
    pub fn names(&self) -> Result<Vec<String>, PlanRegistryError> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            let file = entry.file_name();
            let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".toml")) else {
                continue;
            };
            if valid_name(name) {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// A registered plan.
    pub fn get(&self, name: &str) -> Result<StoredPlan, PlanRegistryError> {
        if !valid_name(name) {
            return Err(PlanRegistryError::NoSuchPlan(name.to_string()));
        }
        let text_file = self.text_file(name);
        let text = match std::fs::read_to_string(&text_file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PlanRegistryError::NoSuchPlan(name.to_string()));
            }
            Err(e) => return Err(io(&text_file)(e)),
        };
        let source_file = self.source_file(name);
        let source = match std::fs::read(&source_file) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| PlanRegistryError::Corrupt {
                    path: source_file.clone(),
                    source,
                })?
            }
            // A plan file put there by hand: relative to its folder.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => PlanSource {
                base: self.dir.clone(),
                origin: text_file.display().to_string(),
                added: String::new(),
            },
            Err(e) => return Err(io(&source_file)(e)),
        };
        Ok(StoredPlan {
            name: name.to_string(),
            text,
            source,
        })
    }

    /// Registers (or replaces) plan `name` once it reads (see [`check`]);
    /// returns the plan and whether one of that name was replaced.
    pub fn put(
        &self,
        name: &str,
        text: &str,
        base: &Path,
        origin: &str,
    ) -> Result<(Plan, bool), PlanRegistryError> {
        let plan = check(name, text, origin, base)?;
        let source = PlanSource {
            base: base.to_path_buf(),
            origin: origin.to_string(),
            added: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        };
        let text_file = self.text_file(name);
        let replaced = text_file.exists();
        let json =
            serde_json::to_vec_pretty(&source).map_err(|source| PlanRegistryError::Corrupt {
                path: self.source_file(name),
                source,
            })?;
        replace(&self.source_file(name), &json)?;
        replace(&text_file, text.as_bytes())?;
        Ok((plan, replaced))
    }

    /// Removes plan `name` (runs of it go on: each keeps the plan's text).
    pub fn remove(&self, name: &str) -> Result<(), PlanRegistryError> {
        if !valid_name(name) {
            return Err(PlanRegistryError::NoSuchPlan(name.to_string()));
        }
        let text_file = self.text_file(name);
        match std::fs::remove_file(&text_file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PlanRegistryError::NoSuchPlan(name.to_string()));
            }
            Err(e) => return Err(io(&text_file)(e)),
        }
        let source_file = self.source_file(name);
        match std::fs::remove_file(&source_file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&source_file)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = r#"
description = "Greets."
[inputs.who]
type = "string"
[steps.greet]
component = "hello"
function = "greet"
args = { name = "${{ .inputs.who }}" }
[outputs]
greeting = "${{ .steps.greet.output }}"
"#;

    #[test]
    fn the_served_example_plan_registers_and_the_file_example_is_refused() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/plans");
        let read = |f: &str| std::fs::read_to_string(examples.join(f)).unwrap();
        let plan = check("greetings", &read("served.plan.toml"), "served", &examples).unwrap();
        assert_eq!(plan.steps.len(), 3);
        // Its steps are `.wasm` paths: a server does not call them.
        assert!(matches!(
            check("greetings", &read("greetings.plan.toml"), "g", &examples),
            Err(PlanRegistryError::Plan(p)) if p.place.ends_with(".component")
        ));
    }

    #[test]
    fn plans_are_checked_stored_listed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let r = PlanRegistry::open(dir.path()).unwrap();
        assert!(r.names().unwrap().is_empty());
        let (plan, replaced) = r.put("greet", PLAN, dir.path(), "greet.toml").unwrap();
        assert_eq!((plan.name.as_str(), replaced), ("greet", false));
        assert!(r.put("greet", PLAN, dir.path(), "greet.toml").unwrap().1);
        assert_eq!(r.names().unwrap(), ["greet"]);
        let stored = r.get("greet").unwrap();
        assert_eq!(stored.text, PLAN);
        assert_eq!(stored.source.base, dir.path());
        assert_eq!(stored.plan().unwrap().steps.len(), 1);
        // Refusals name the place.
        let e = r
            .put(
                "files",
                &PLAN.replace("\"hello\"", "\"../hello.wasm\""),
                dir.path(),
                "f.toml",
            )
            .unwrap_err();
        match e {
            PlanRegistryError::Plan(p) => {
                assert_eq!(
                    (p.origin.as_str(), p.place.as_str()),
                    ("f.toml", "steps.greet.component")
                )
            }
            other => panic!("{other}"),
        }
        let e = r
            .put(
                "other",
                &format!("name = \"x\"\n{PLAN}"),
                dir.path(),
                "o.toml",
            )
            .unwrap_err();
        assert!(
            matches!(e, PlanRegistryError::Plan(ref p) if p.place == "name"),
            "{e}"
        );
        assert!(matches!(
            r.put("Bad", PLAN, dir.path(), "b.toml"),
            Err(PlanRegistryError::InvalidName(_))
        ));
        assert!(matches!(
            r.put("plan", PLAN, dir.path(), "b.toml"),
            Err(PlanRegistryError::InvalidName(_))
        ));
        assert_eq!(r.names().unwrap(), ["greet"], "refused plans left files");
        r.remove("greet").unwrap();
        assert!(matches!(
            r.get("greet"),
            Err(PlanRegistryError::NoSuchPlan(_))
        ));
        assert!(matches!(
            r.remove("greet"),
            Err(PlanRegistryError::NoSuchPlan(_))
        ));
    }
}
