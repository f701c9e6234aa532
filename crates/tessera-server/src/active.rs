//! The versions being served: one compiled, pre-instantiated
//! [`LoadedComponent`] per component name, behind an `Arc` so that a call
//! holds its version to the end while a swap puts another in the map.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tessera_runtime::{Grants, LoadedComponent, Runtime};
use tokio::sync::watch;

use crate::registry::{Registry, RegistryError, Version};

/// A component version being served.
pub struct Active {
    /// Version number (1-based).
    pub version: usize,
    /// The registry record.
    pub record: Version,
    /// The compiled, pre-instantiated component.
    pub loaded: LoadedComponent,
}

/// Why a registered version could not be loaded (it is not served; the
/// version served before, if any, stays).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Its bytes could not be read from the registry.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Its manifest is invalid.
    #[error(transparent)]
    Manifest(tessera_runtime::manifest::ManifestError),
    /// It could not be compiled or linked.
    #[error(transparent)]
    Runtime(tessera_runtime::Error),
    /// The compiling task failed.
    #[error("compile task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Told when a registered version that is not in the compile cache is
/// compiled, so an operator (or a test) can follow what the server is
/// doing while its tools are not served yet. Set in
/// [`crate::ServerConfig::load_observer`].
pub trait LoadObserver: Send + Sync + std::fmt::Debug {
    /// Version `version` of `name` (`bytes` long) starts compiling. Called
    /// on the compiling thread, not an async one: the compile starts when
    /// this returns.
    fn compiling(&self, name: &str, version: usize, bytes: usize);
    /// A compile announced by [`LoadObserver::compiling`] ended after
    /// `elapsed`: the version is served from now on (`Ok`), or it could not
    /// be loaded (`Err`). Called on an async task: it must not block.
    fn compiled(
        &self,
        name: &str,
        version: usize,
        elapsed: Duration,
        outcome: Result<(), &LoadError>,
    );
}

/// A version being loaded in the background: its tools are not served
/// yet (the version before it, if any, still is).
#[derive(Debug, Clone)]
pub struct Loading {
    /// The component.
    pub name: String,
    /// The version being loaded.
    pub version: usize,
    /// When the load started.
    pub started: Instant,
    /// Whether it is being compiled (no compile cache entry), which can
    /// take many seconds; otherwise it is loaded from the cache.
    pub compiling: bool,
}

/// A load in progress, as the server keeps it.
pub(crate) struct Pending {
    /// Tells this load apart from a later one of the same name.
    pub(crate) id: u64,
    pub(crate) info: Loading,
    pub(crate) record: Version,
    /// Becomes `true` when the load has ended (installed, failed or
    /// superseded).
    pub(crate) done: watch::Receiver<bool>,
}

/// The map of active versions, by component name.
#[derive(Default)]
pub(crate) struct ActiveVersions(RwLock<HashMap<String, Arc<Active>>>);

impl ActiveVersions {
    /// The active version of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<Active>> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Names being served, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Serves `active` under `name` from now on.
    pub(crate) fn insert(&self, name: &str, active: Active) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), Arc::new(active));
    }

    /// Stops serving `names` (calls holding them finish).
    pub(crate) fn remove(&self, names: &[String]) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        for n in names {
            map.remove(n);
        }
    }
}

/// Loads version `version` of `name` (compiling off the async threads, the
/// compile cache first) under the grants of its manifest. `observer` is
/// told before a compile starts.
pub(crate) async fn load(
    runtime: &Runtime,
    registry: &Registry,
    name: &str,
    version: usize,
    record: Version,
    observer: Option<Arc<dyn LoadObserver>>,
) -> Result<Active, LoadError> {
    let bytes = registry.bytes(&record.digest)?;
    let grants = match &record.manifest {
        Some(text) => Grants::from_toml(
            text,
            &format!("manifest of {name} v{version}"),
            record.manifest_dir.as_deref().unwrap_or(Path::new(".")),
        )
        .map_err(LoadError::Manifest)?,
        None => Grants::deny_all(),
    };
    let rt = runtime.clone();
    let origin = format!("{name} v{version}");
    let name = name.to_string();
    let loaded = tokio::task::spawn_blocking(move || {
        let prepared = rt.prepare_named(bytes, &origin, &name)?;
        if let Some(o) = observer {
            o.compiling(&name, version, prepared.component_bytes.len());
        }
        rt.load(&prepared, grants)
    })
    .await?
    .map_err(LoadError::Runtime)?;
    Ok(Active {
        version,
        record,
        loaded,
    })
}
