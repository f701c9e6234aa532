//! Admitting a version: a component enters the registry only once it is
//! known to load.
//!
//! [`add_checked`] is what every way of adding goes through — the CLI on a
//! data directory, and the server's HTTP API (which the MCP side serves
//! from). It validates the name and the manifest, compiles the component
//! with the runtime that will serve it (or one configured like it, so the
//! compiled code lands in the same compile cache and serving does not
//! compile again), and checks it against the same linker. Only then is the
//! version written and made active. A component that cannot load is
//! refused with the reason, and the registry — versions and active version
//! — is left exactly as it was.

use std::path::PathBuf;

use tessera_runtime::manifest::ManifestError;
use tessera_runtime::{Grants, Inspection, Prepared, Runtime};

use crate::registry::{Registry, RegistryError, valid_name};

/// Why a version was not admitted. Nothing was registered.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// The name cannot be used, or the registry cannot be written.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The component is not wasm, does not compile, does not link, or its
    /// grants do not fit the host (a secret the host does not provide).
    #[error(transparent)]
    Runtime(#[from] tessera_runtime::Error),
}

/// A version admitted and made active.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The version now active (the active one when the same bytes and
    /// manifest were given again).
    pub version: usize,
    /// What the component exports and imports.
    pub inspection: Inspection,
}

/// How strictly to check a version's grants against the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostCheck {
    /// Also bind the grants to this runtime's host configuration (the
    /// server adding to its own registry: its secrets are the ones that
    /// will serve the component).
    Bind,
    /// Validate the grants only (another process will serve the
    /// component, with its own secrets).
    ValidateOnly,
}

/// A version to add.
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// The component's name.
    pub name: String,
    /// Its bytes (a component, or a core module to adapt).
    pub bytes: Vec<u8>,
    /// Its manifest: the TOML text and the directory its relative paths
    /// resolve from.
    pub manifest: Option<(String, PathBuf)>,
    /// Where the bytes came from (a path, or `upload`).
    pub origin: String,
}

/// Checks that a new version loads under `runtime`, then registers it as
/// the active version of its name. `compiling` is told before the
/// component is compiled, when it is not in the compile cache (for a
/// progress display). CPU-bound: async callers should run it on a
/// blocking thread.
pub fn add_checked(
    runtime: &Runtime,
    registry: &Registry,
    new: NewVersion,
    host: HostCheck,
    compiling: impl FnOnce(&Prepared),
) -> Result<Admitted, AdmitError> {
    let NewVersion {
        name,
        bytes,
        manifest,
        origin,
    } = new;
    let (name, origin) = (name.as_str(), origin.as_str());
    if !valid_name(name) {
        return Err(RegistryError::InvalidName(name.to_string()).into());
    }
    let mut grants = match &manifest {
        Some((text, dir)) => Grants::from_toml(text, &format!("manifest of {name}"), dir)?,
        None => Grants::deny_all(),
    };
    // Errors name the component and where its bytes came from.
    let described = format!("{name} ({origin})");
    let prepared = runtime.prepare_named(bytes, &described, name)?;
    if host == HostCheck::Bind {
        grants
            .bind(runtime.host())
            .map_err(|source| tessera_runtime::Error::Bind {
                origin: described.clone(),
                source,
            })?;
    }
    if !prepared.cached {
        compiling(&prepared);
    }
    let inspection = runtime.check_with(&prepared, &grants)?;
    // `[tools]` names must match the component's exports.
    grants.tools.resolve(&inspection.functions, &described)?;
    let version = registry.add(name, &prepared.source_bytes, manifest, origin)?;
    Ok(Admitted {
        version,
        inspection,
    })
}
