//! The versions being served: one compiled, pre-instantiated
//! [`LoadedComponent`] per component name, behind an `Arc` so that a call
//! holds its version to the end while a swap puts another in the map.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use tessera_runtime::{Grants, LoadedComponent, Runtime};

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
/// compile cache first) under the grants of its manifest.
pub(crate) async fn load(
    runtime: &Runtime,
    registry: &Registry,
    name: &str,
    version: usize,
    record: Version,
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
    let loaded = tokio::task::spawn_blocking(move || {
        let prepared = rt.prepare(bytes, &origin)?;
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
