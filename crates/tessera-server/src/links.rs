//! Registry names in a manifest's `[imports]`: the provider of a
//! consumer's import is the version of that name the server serves at the
//! moment of each call, so activating a new version of a provider changes
//! what its consumers get from their next call, without touching them
//! (see `tessera_runtime::capability::link`).

use std::sync::Weak;

use tessera_runtime::LoadedComponent;
use tessera_runtime::capability::link::Providers;

use crate::Server;

/// The server's registry as the runtime's [`Providers`]. Holds the server
/// weakly: the server holds the runtime.
pub(crate) struct RegistryProviders(pub(crate) Weak<Server>);

impl Providers for RegistryProviders {
    fn provider(&self, name: &str) -> Result<Option<LoadedComponent>, String> {
        let server = self
            .0
            .upgrade()
            .ok_or_else(|| "the server has shut down".to_string())?;
        if let Some(active) = server.active(name) {
            return Ok(Some(active.loaded.clone()));
        }
        if server.loading_of(name).is_some() {
            return Ok(None);
        }
        if let Some((_, e)) = server.load_failures().into_iter().find(|(n, _)| n == name) {
            return Err(format!(
                "component `{name}` is registered but could not be loaded: {e}"
            ));
        }
        Err(format!(
            "no component `{name}` is registered here: register the provider first"
        ))
    }
}
