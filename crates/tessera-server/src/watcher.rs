//! Keeping what is served in line with the registry: [`Server::sync`] after
//! every change made through the server, and a watcher for changes made
//! by another process (`tessera components …`), which notices a new
//! modification time of `registry.json` within a quarter of a second.

use std::sync::Arc;
use std::time::Duration;

use crate::{Server, ServerError, active};

impl Server {
    /// Brings what is served in line with the registry: loads new active
    /// versions (compiling off the async threads), swaps them in, drops
    /// removed components. Returns the names that changed. A version that
    /// fails to load is not served (the one before it stays) and is listed
    /// by [`Server::load_failures`].
    pub async fn sync(&self) -> Result<Vec<String>, ServerError> {
        let seen = self.registry.modified();
        let entries = self.registry.list()?;
        let mut changed = Vec::new();
        for (name, entry) in &entries {
            let record = entry.active_version().clone();
            if self
                .active(name)
                .is_some_and(|a| a.version == entry.active && a.record == record)
            {
                continue;
            }
            match active::load(&self.runtime, &self.registry, name, entry.active, record).await {
                Ok(loaded) => {
                    self.active.insert(name, loaded);
                    self.failures_mut().remove(name);
                    changed.push(name.clone());
                }
                Err(e) => {
                    tracing::error!(component = %name, version = entry.active, "cannot load component: {e}");
                    self.failures_mut().insert(name.clone(), Arc::new(e));
                }
            }
        }
        let removed: Vec<String> = self
            .active_names()
            .into_iter()
            .filter(|n| !entries.contains_key(n))
            .collect();
        self.active.remove(&removed);
        self.failures_mut().retain(|n, _| entries.contains_key(n));
        changed.extend(removed);
        *self.registry_seen.lock().unwrap_or_else(|p| p.into_inner()) = seen;
        if !changed.is_empty() {
            self.tools_changed.send_modify(|n| *n += 1);
        }
        Ok(changed)
    }

    /// Whether `registry.json` changed since the last [`Server::sync`].
    pub fn registry_changed(&self) -> bool {
        *self.registry_seen.lock().unwrap_or_else(|p| p.into_inner()) != self.registry.modified()
    }

    /// Runs [`Server::sync`] whenever the registry file changes, until
    /// aborted.
    pub(crate) fn spawn_registry_watcher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let server = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if server.registry_changed()
                    && let Err(e) = server.sync().await
                {
                    tracing::error!("registry reload failed: {e}");
                }
            }
        })
    }
}
