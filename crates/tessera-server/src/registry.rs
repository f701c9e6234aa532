//! The component registry: named components, their versions and which one
//! is active, persisted in the data directory.
//!
//! Layout: `<data>/components/<digest-hex>.wasm` holds each component's
//! bytes once, by content; `<data>/components/registry.json` maps names to
//! versions (digest, manifest text, when added) and the active version. The
//! JSON file is replaced atomically (write, then rename) under an exclusive
//! lock on `registry.lock`, so the server and the CLI can both change it; the
//! server notices changes and swaps what it serves.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Registry errors.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `registry.json` is damaged.
    #[error("{}: {source}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: serde_json::Error,
    },
    /// No component has that name.
    #[error("no component named `{0}`")]
    NoSuchComponent(String),
    /// The component has no such version.
    #[error("component `{name}` has no version {version} (it has 1..={count})")]
    NoSuchVersion {
        /// The component.
        name: String,
        /// The version asked for.
        version: usize,
        /// How many versions exist.
        count: usize,
    },
    /// A name that cannot be used (tool names must be portable).
    #[error(
        "invalid component name `{0}`: use 1-64 characters from a-z, 0-9, `-` and `_`, starting with a letter, without `__` (it separates names in MCP tool names), and not `plan` (MCP tools `plan__<name>` are plans)"
    )]
    InvalidName(String),
}

/// One version of a named component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// `sha256:<hex>` of the component bytes.
    pub digest: String,
    /// The manifest (TOML), if one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// Where relative paths in the manifest resolve from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_dir: Option<PathBuf>,
    /// Where the bytes came from (a path, or `upload`).
    pub origin: String,
    /// RFC 3339 time it was added.
    pub added: String,
}

/// A named component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Versions, oldest first; numbered from 1.
    pub versions: Vec<Version>,
    /// The active version (1-based).
    pub active: usize,
    /// The version active before the last activation, for rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<usize>,
}

impl Entry {
    /// The active version.
    pub fn active_version(&self) -> &Version {
        &self.versions[self.active - 1]
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RegistryFile {
    version: u32,
    components: BTreeMap<String, Entry>,
}

/// The registry in a data directory.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Names no component may take: MCP tools named `plan__<name>` are the
/// registered plans (see `plans.rs`), those named `agent__<id>` the
/// agents (see `agents.rs`), and `agents__approvals` and `agents__decide`
/// the server's approval tools (see `mcp.rs`), so a component named
/// `plan`, `agent` or `agents` would collide with them.
pub const RESERVED_NAMES: &[&str] = &["plan", "agent", "agents", "sandbox"];

/// Whether `name` is a valid component (or plan) name. `__` is reserved: it
/// joins the component and function names in MCP tool names; so are
/// [`RESERVED_NAMES`].
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.contains("__")
        && !RESERVED_NAMES.contains(&name)
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

impl Registry {
    /// The registry under `<data>/components`.
    pub fn open(data: &Path) -> Result<Self, RegistryError> {
        let dir = data.join("components");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(Self { dir })
    }

    fn file(&self) -> PathBuf {
        self.dir.join("registry.json")
    }

    /// When `registry.json` last changed (to notice changes made elsewhere).
    pub fn modified(&self) -> Option<std::time::SystemTime> {
        std::fs::metadata(self.file())
            .and_then(|m| m.modified())
            .ok()
    }

    /// The bytes of a stored component.
    pub fn bytes(&self, digest: &str) -> Result<Vec<u8>, RegistryError> {
        let p = self.blob_path(digest);
        std::fs::read(&p).map_err(io(&p))
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir.join(format!("{hex}.wasm"))
    }

    fn read(&self) -> Result<RegistryFile, RegistryError> {
        let path = self.file();
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| RegistryError::Corrupt {
                path: path.clone(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RegistryFile {
                version: 1,
                components: BTreeMap::new(),
            }),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Every component, by name.
    pub fn list(&self) -> Result<BTreeMap<String, Entry>, RegistryError> {
        Ok(self.read()?.components)
    }

    /// One component.
    pub fn get(&self, name: &str) -> Result<Entry, RegistryError> {
        self.read()?
            .components
            .remove(name)
            .ok_or_else(|| RegistryError::NoSuchComponent(name.to_string()))
    }

    /// Applies `change` under the registry lock and writes the result.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut RegistryFile) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let lock_path = self.dir.join("registry.lock");
        let lock = File::create(&lock_path).map_err(io(&lock_path))?;
        lock.lock().map_err(io(&lock_path))?;
        let mut file = self.read()?;
        let out = change(&mut file)?;
        file.version = 1;
        let path = self.file();
        let tmp = self
            .dir
            .join(format!("registry.json.tmp{}", std::process::id()));
        let bytes = serde_json::to_vec_pretty(&file).map_err(|source| RegistryError::Corrupt {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        drop(lock);
        Ok(out)
    }

    /// Adds a version of `name` (creating the component) and makes it
    /// active. Adding bytes identical to the active version with the same
    /// manifest changes nothing. Returns the version number.
    pub fn add(
        &self,
        name: &str,
        bytes: &[u8],
        manifest: Option<(String, PathBuf)>,
        origin: &str,
    ) -> Result<usize, RegistryError> {
        if !valid_name(name) {
            return Err(RegistryError::InvalidName(name.to_string()));
        }
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        let blob = self.blob_path(&digest);
        if !blob.exists() {
            let tmp = blob.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
            std::fs::rename(&tmp, &blob).map_err(io(&blob))?;
        }
        let (manifest, manifest_dir) = match manifest {
            Some((m, d)) => (Some(m), Some(d)),
            None => (None, None),
        };
        let version = Version {
            digest,
            manifest,
            manifest_dir,
            origin: origin.to_string(),
            added: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        };
        self.update(|f| {
            let entry = f.components.entry(name.to_string()).or_insert(Entry {
                versions: Vec::new(),
                active: 0,
                previous: None,
            });
            if entry.active > 0 {
                let a = entry.active_version();
                if a.digest == version.digest && a.manifest == version.manifest {
                    return Ok(entry.active);
                }
            }
            entry.versions.push(version);
            if entry.active > 0 {
                entry.previous = Some(entry.active);
            }
            entry.active = entry.versions.len();
            Ok(entry.active)
        })
    }

    /// Makes `version` (1-based) the active one.
    pub fn activate(&self, name: &str, version: usize) -> Result<(), RegistryError> {
        self.update(|f| {
            let entry = f
                .components
                .get_mut(name)
                .ok_or_else(|| RegistryError::NoSuchComponent(name.to_string()))?;
            if version == 0 || version > entry.versions.len() {
                return Err(RegistryError::NoSuchVersion {
                    name: name.to_string(),
                    version,
                    count: entry.versions.len(),
                });
            }
            if entry.active != version {
                entry.previous = Some(entry.active);
                entry.active = version;
            }
            Ok(())
        })
    }

    /// Goes back to the previously active version; returns it.
    pub fn rollback(&self, name: &str) -> Result<usize, RegistryError> {
        let entry = self.get(name)?;
        let target = entry
            .previous
            .or_else(|| entry.active.checked_sub(1).filter(|v| *v > 0))
            .ok_or(RegistryError::NoSuchVersion {
                name: name.to_string(),
                version: 0,
                count: entry.versions.len(),
            })?;
        self.activate(name, target)?;
        Ok(target)
    }

    /// Removes a component (its bytes stay; other names may share them).
    pub fn remove(&self, name: &str) -> Result<(), RegistryError> {
        self.update(|f| {
            f.components
                .remove(name)
                .map(|_| ())
                .ok_or_else(|| RegistryError::NoSuchComponent(name.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_activation_rollback_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(dir.path()).unwrap();
        assert_eq!(r.add("fetch", b"one", None, "a.wasm").unwrap(), 1);
        assert_eq!(
            r.add("fetch", b"one", None, "a.wasm").unwrap(),
            1,
            "same bytes: no new version"
        );
        assert_eq!(r.add("fetch", b"two", None, "b.wasm").unwrap(), 2);
        assert_eq!(r.rollback("fetch").unwrap(), 1);
        assert_eq!(r.get("fetch").unwrap().active, 1);
        r.activate("fetch", 2).unwrap();
        // A fresh handle (a restart) sees the same state.
        let again = Registry::open(dir.path()).unwrap();
        let e = again.get("fetch").unwrap();
        assert_eq!((e.active, e.versions.len()), (2, 2));
        assert_eq!(again.bytes(&e.active_version().digest).unwrap(), b"two");
        assert!(matches!(
            again.activate("fetch", 3),
            Err(RegistryError::NoSuchVersion { .. })
        ));
        assert!(matches!(
            again.add("Bad Name", b"x", None, "x"),
            Err(RegistryError::InvalidName(_))
        ));
        // `plan__<name>` tools are plans, `agent__<id>` agents and
        // `agents__…` the approval tools.
        for reserved in ["plan", "agent", "agents"] {
            assert!(
                matches!(
                    again.add(reserved, b"x", None, "x"),
                    Err(RegistryError::InvalidName(_))
                ),
                "{reserved}"
            );
        }
        again.remove("fetch").unwrap();
        assert!(matches!(
            again.get("fetch"),
            Err(RegistryError::NoSuchComponent(_))
        ));
    }
}
