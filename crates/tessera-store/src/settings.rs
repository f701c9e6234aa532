//! Which backend serves which bucket: the host's `[store]` settings.
//!
//! A manifest says which buckets a component may use; the host says where
//! they live. The settings are the `[store]` table of the data directory's
//! `tessera.toml` (the file that also holds `[journal]` retention):
//!
//! ```toml
//! [store]
//! default = "embedded"        # backend of buckets not listed below
//! path = "store.redb"         # the embedded file, relative to the data directory
//!
//! [store.nats]
//! url = "nats://127.0.0.1:4222"
//! prefix = "tessera"          # NATS bucket of `notes`: `tessera_notes`
//! credentials = "/etc/tessera/nats.creds"
//!
//! [store.buckets]
//! notes = "nats"
//! ```
//!
//! Backends are opened on first use, so a process that never touches a
//! bucket never opens the store file (which one process at a time may hold)
//! nor connects to NATS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::{Embedded, Nats, NatsOptions, SharedStore, StoreError, check_bucket};

/// A backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// redb in the data directory.
    #[default]
    Embedded,
    /// NATS JetStream key-value buckets.
    Nats,
}

impl BackendKind {
    /// `embedded` or `nats`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Embedded => "embedded",
            BackendKind::Nats => "nats",
        }
    }
}

/// `[store.nats]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSettings {
    /// Server URL.
    #[serde(default = "default_url")]
    pub url: String,
    /// Prefix of the NATS bucket names.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// A credentials file.
    #[serde(default)]
    pub credentials: Option<PathBuf>,
}

fn default_url() -> String {
    NatsOptions::default().url
}

fn default_prefix() -> String {
    NatsOptions::default().prefix
}

/// The host's store settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreSettings {
    /// Backend of the buckets not in `buckets`.
    pub default: BackendKind,
    /// The embedded store's file (relative: to the data directory).
    pub path: Option<PathBuf>,
    /// How to reach NATS, if any bucket lives there.
    pub nats: Option<NatsSettings>,
    /// Backends of named buckets.
    pub buckets: BTreeMap<String, BackendKind>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    default: BackendKind,
    #[serde(default)]
    path: Option<PathBuf>,
    #[serde(default)]
    nats: Option<NatsSettings>,
    #[serde(default)]
    buckets: BTreeMap<String, BackendKind>,
}

/// The embedded store's file name in a data directory.
pub const STORE_FILE: &str = "store.redb";

impl StoreSettings {
    /// Reads `[store]` from a settings document (other tables are ignored:
    /// they belong to others). `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, StoreError> {
        let err = |field: &str, message: String| StoreError::Settings {
            origin: origin.to_string(),
            field: field.to_string(),
            message,
        };
        let doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| err("", e.message().trim_end().to_string()))?;
        let Some(store) = doc.get("store") else {
            return Ok(Self::default());
        };
        let raw: Raw = store.clone().try_into().map_err(|e: toml::de::Error| {
            err("store", e.message().trim_end().replace('\n', " "))
        })?;
        for name in raw.buckets.keys() {
            check_bucket(name).map_err(|e| err(&format!("store.buckets.{name}"), e.to_string()))?;
        }
        let wants_nats = raw.default == BackendKind::Nats
            || raw.buckets.values().any(|b| *b == BackendKind::Nats);
        if wants_nats && raw.nats.is_none() {
            return Err(err(
                "store.nats",
                "a bucket is served by NATS but [store.nats] (at least `url`) is missing".into(),
            ));
        }
        if let Some(n) = &raw.nats {
            if !(n.url.starts_with("nats://")
                || n.url.starts_with("tls://")
                || n.url.starts_with("ws://")
                || n.url.starts_with("wss://"))
            {
                return Err(err(
                    "store.nats.url",
                    format!("`{}` is not a NATS URL (nats://host:port)", n.url),
                ));
            }
            check_bucket(&n.prefix).map_err(|e| err("store.nats.prefix", e.to_string()))?;
            if n.prefix.contains('_') {
                // `{prefix}_{bucket}`: a prefix with `_` could list another
                // prefix's buckets as its own.
                return Err(err(
                    "store.nats.prefix",
                    format!(
                        "`{}` contains `_`, which separates the prefix from bucket names",
                        n.prefix
                    ),
                ));
            }
        }
        Ok(Self {
            default: raw.default,
            path: raw.path,
            nats: raw.nats,
            buckets: raw.buckets,
        })
    }

    /// Reads `<data>/tessera.toml` (no file: the defaults).
    pub fn load(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join("tessera.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_toml(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(StoreError::Settings {
                origin: path.display().to_string(),
                field: String::new(),
                message: e.to_string(),
            }),
        }
    }

    /// The backend of `bucket`.
    pub fn backend_of(&self, bucket: &str) -> BackendKind {
        self.buckets.get(bucket).copied().unwrap_or(self.default)
    }
}

/// The stores of a process: each bucket's backend, opened on first use.
pub struct Stores {
    settings: StoreSettings,
    embedded_path: PathBuf,
    embedded: OnceCell<SharedStore>,
    nats: OnceCell<SharedStore>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("default", &self.settings.default)
            .field("embedded_path", &self.embedded_path)
            .field("buckets", &self.settings.buckets)
            .finish()
    }
}

impl Stores {
    /// The stores of a data directory under `settings`.
    pub fn new(settings: StoreSettings, data_dir: &Path) -> Self {
        let embedded_path = match &settings.path {
            Some(p) if p.is_absolute() => p.clone(),
            Some(p) => data_dir.join(p),
            None => data_dir.join(STORE_FILE),
        };
        Self {
            settings,
            embedded_path,
            embedded: OnceCell::new(),
            nats: OnceCell::new(),
        }
    }

    /// Stores whose every bucket lives in one given store (tests, embedders).
    pub fn single(store: SharedStore) -> Self {
        let kind = match store.backend() {
            "nats" => BackendKind::Nats,
            _ => BackendKind::Embedded,
        };
        let s = Self {
            settings: StoreSettings {
                default: kind,
                ..StoreSettings::default()
            },
            embedded_path: PathBuf::new(),
            embedded: OnceCell::new(),
            nats: OnceCell::new(),
        };
        let cell = match kind {
            BackendKind::Embedded => &s.embedded,
            BackendKind::Nats => &s.nats,
        };
        // A fresh cell: setting it cannot fail.
        let _ = cell.set(store);
        s
    }

    /// The settings.
    pub fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    /// The embedded store's file.
    pub fn embedded_path(&self) -> &Path {
        &self.embedded_path
    }

    /// The store that holds `bucket`, opened (or connected) if it is not yet.
    pub async fn for_bucket(&self, bucket: &str) -> Result<SharedStore, StoreError> {
        check_bucket(bucket)?;
        self.backend(self.settings.backend_of(bucket)).await
    }

    /// A backend, opened (or connected) if it is not yet.
    pub async fn backend(&self, kind: BackendKind) -> Result<SharedStore, StoreError> {
        match kind {
            BackendKind::Embedded => self
                .embedded
                .get_or_try_init(|| async {
                    let path = self.embedded_path.clone();
                    let e = tokio::task::spawn_blocking(move || Embedded::open(&path))
                        .await
                        .map_err(|e| StoreError::Backend {
                            backend: "embedded",
                            message: e.to_string(),
                        })??;
                    Ok(Arc::new(e) as SharedStore)
                })
                .await
                .cloned(),
            BackendKind::Nats => self
                .nats
                .get_or_try_init(|| async {
                    let n = self
                        .settings
                        .nats
                        .clone()
                        .ok_or_else(|| StoreError::Settings {
                            origin: "tessera.toml".into(),
                            field: "store.nats".into(),
                            message: "no NATS server is configured".into(),
                        })?;
                    let nats = Nats::connect(NatsOptions {
                        url: n.url,
                        prefix: n.prefix,
                        credentials: n.credentials,
                    })
                    .await?;
                    Ok(Arc::new(nats) as SharedStore)
                })
                .await
                .cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_name_the_field() {
        let s = StoreSettings::from_toml(
            "[journal]\nmax_runs = 3\n[store]\n[store.nats]\nurl = \"nats://h:1\"\n[store.buckets]\nnotes = \"nats\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(s.backend_of("notes"), BackendKind::Nats);
        assert_eq!(s.backend_of("other"), BackendKind::Embedded);
        assert_eq!(s.nats.unwrap().prefix, "tessera");
        for (text, field) in [
            ("[store]\nbogus = 1\n", "store"),
            (
                "[store.buckets]\n\"a.b\" = \"embedded\"\n",
                "store.buckets.a.b",
            ),
            ("[store.buckets]\nnotes = \"nats\"\n", "store.nats"),
            ("[store.nats]\nurl = \"http://x\"\n", "store.nats.url"),
            ("[store.nats]\nprefix = \"a.b\"\n", "store.nats.prefix"),
        ] {
            match StoreSettings::from_toml(text, "t.toml") {
                Err(StoreError::Settings {
                    field: f, origin, ..
                }) => {
                    assert_eq!((f.as_str(), origin.as_str()), (field, "t.toml"), "{text}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
