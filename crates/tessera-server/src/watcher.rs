//! Keeping what is served in line with the registry: [`Server::sync`] after
//! every change made through the server, and a watcher for changes made
//! by another process (`tessera components …`), which notices a new
//! modification time of `registry.json` within a quarter of a second.
//!
//! Every version is loaded by a task of its own, so a component that takes
//! half a minute to compile never holds up the others, nor the server:
//! [`Server::open`] and the watcher wait only for the versions found in the
//! compile cache (they load in milliseconds, all at once, before any
//! compile starts, so nothing competes with them); the rest join when
//! they are ready, each with a bump of `tools_changed` (MCP's
//! `notifications/tools/list_changed`). Until then [`Server::loading`]
//! lists them and a call to one is told it is still compiling.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::active::{self, Loading, Pending};
use crate::registry::Version;
use crate::{Server, ServerError};

/// A load a sync waits for: name, version, record, and its end.
type Wait = (String, usize, Version, watch::Receiver<bool>);

/// What [`Server::begin_sync`] started, for [`Server::finish_sync`].
pub(crate) struct SyncPlan {
    /// `registry.json`'s modification time when it was read.
    seen: Option<std::time::SystemTime>,
    /// The registry as read.
    entries: std::collections::BTreeMap<String, crate::registry::Entry>,
    /// Loads from the compile cache.
    cached: Vec<Wait>,
    /// Compiles.
    compiling: Vec<Wait>,
}

/// A version to load, decided under the `loading` lock.
struct Job {
    id: u64,
    name: String,
    version: usize,
    record: Version,
    compiling: bool,
    done: watch::Sender<bool>,
}

impl Server {
    /// Brings what is served in line with the registry: loads new active
    /// versions (compiling off the async threads), swaps them in, drops
    /// removed components, and waits until every load has ended. Returns
    /// the names that changed. A version that fails to load is not served
    /// (the one before it stays) and is listed by [`Server::load_failures`].
    pub async fn sync(self: &Arc<Self>) -> Result<Vec<String>, ServerError> {
        self.sync_with(true).await
    }

    /// [`Server::sync`], but waiting only for the versions that need no
    /// compiling; the others keep loading in the background.
    pub async fn sync_in_background(self: &Arc<Self>) -> Result<Vec<String>, ServerError> {
        self.sync_with(false).await
    }

    async fn sync_with(
        self: &Arc<Self>,
        wait_for_compiles: bool,
    ) -> Result<Vec<String>, ServerError> {
        let plan = self.begin_sync()?;
        Ok(self.finish_sync(plan, wait_for_compiles).await)
    }

    /// The first half of a sync: reads the registry and starts a load of
    /// every version that is not served yet (compiles after the loads from
    /// the cache). Nothing here waits.
    pub(crate) fn begin_sync(self: &Arc<Self>) -> Result<SyncPlan, ServerError> {
        let seen = self.registry.modified();
        let entries = self.registry.list()?;
        // (name, version, record, done) of every load this sync waits for.
        let mut cached = Vec::new();
        let mut compiling = Vec::new();
        let mut jobs = Vec::new();
        {
            let mut loading = self.loading_mut();
            // A load of a removed component, or of a version no longer
            // active, is forgotten: its task ends without serving it.
            loading.retain(|name, p| {
                entries
                    .get(name)
                    .is_some_and(|e| e.active == p.info.version && *e.active_version() == p.record)
            });
            for (name, entry) in &entries {
                let record = entry.active_version().clone();
                if self
                    .active(name)
                    .is_some_and(|a| a.version == entry.active && a.record == record)
                {
                    continue;
                }
                let (done, is_compiling) = match loading.get(name) {
                    Some(p) => (p.done.clone(), p.info.compiling),
                    None => {
                        let id = self.load_ids.fetch_add(1, Ordering::Relaxed);
                        let is_compiling = !self.runtime.has_compiled(&record.digest);
                        let (tx, rx) = watch::channel(false);
                        loading.insert(
                            name.clone(),
                            Pending {
                                id,
                                info: Loading {
                                    name: name.clone(),
                                    version: entry.active,
                                    started: Instant::now(),
                                    compiling: is_compiling,
                                },
                                record: record.clone(),
                                done: rx.clone(),
                            },
                        );
                        jobs.push(Job {
                            id,
                            name: name.clone(),
                            version: entry.active,
                            record: record.clone(),
                            compiling: is_compiling,
                            done: tx,
                        });
                        (rx, is_compiling)
                    }
                };
                let wait = (name.clone(), entry.active, record, done);
                if is_compiling {
                    compiling.push(wait);
                } else {
                    cached.push(wait);
                }
            }
            // Start every load now, under the lock, so that a load is never
            // recorded as pending without a task to end it (this future may
            // be dropped at any await). Compiles wait for the cached loads
            // of this sync to end first.
            let gate: Vec<watch::Receiver<bool>> =
                cached.iter().map(|(.., done)| done.clone()).collect();
            for job in jobs {
                let gate = if job.compiling {
                    gate.clone()
                } else {
                    Vec::new()
                };
                let server = self.clone();
                tokio::spawn(async move {
                    for mut g in gate {
                        let _ = g.wait_for(|d| *d).await;
                    }
                    server.run_load(job).await;
                });
            }
        }
        Ok(SyncPlan {
            seen,
            entries,
            cached,
            compiling,
        })
    }

    /// The second half of a sync: waits for the loads from the cache (and
    /// the compiles, if asked), forgets removed components, and returns
    /// the names that changed.
    pub(crate) async fn finish_sync(
        self: &Arc<Self>,
        plan: SyncPlan,
        wait_for_compiles: bool,
    ) -> Vec<String> {
        let SyncPlan {
            seen,
            entries,
            cached,
            compiling,
        } = plan;
        let mut changed = Vec::new();
        let mut waits = cached;
        if wait_for_compiles {
            waits.extend(compiling);
        }
        for (name, version, record, mut done) in waits {
            let _ = done.wait_for(|d| *d).await;
            if self
                .active(&name)
                .is_some_and(|a| a.version == version && a.record == record)
            {
                changed.push(name);
            }
        }
        let removed: Vec<String> = self
            .active_names()
            .into_iter()
            .filter(|n| !entries.contains_key(n))
            .collect();
        self.active.remove(&removed);
        self.failures_mut().retain(|n, _| entries.contains_key(n));
        if !removed.is_empty() {
            self.tools_changed.send_modify(|n| *n += 1);
        }
        changed.extend(removed);
        *self.registry_seen.lock().unwrap_or_else(|p| p.into_inner()) = seen;
        changed
    }

    /// If `name` is being loaded from the compile cache (which takes
    /// milliseconds), waits until that load has ended. A compile is not
    /// waited for: it can take many seconds.
    pub(crate) async fn until_loaded_from_cache(&self, name: &str) {
        let pending = self
            .loading_mut()
            .get(name)
            .filter(|p| !p.info.compiling)
            .map(|p| p.done.clone());
        if let Some(mut done) = pending {
            let _ = done.wait_for(|d| *d).await;
        }
    }

    /// Loads one version and, if it is still the one wanted, serves it (or
    /// records why it failed), then bumps `tools_changed`.
    async fn run_load(self: Arc<Self>, job: Job) {
        let Job {
            id,
            name,
            version,
            record,
            compiling,
            done,
        } = job;
        // Ends the load in the map whatever happens to this task.
        let _end = EndLoad {
            server: &self,
            name: &name,
            id,
            done,
        };
        let started = Instant::now();
        let observer = self.config.load_observer.clone().filter(|_| compiling);
        // A load from the compile cache is short and CPU-bound: at most one
        // per core runs at a time (more would only add blocking threads,
        // each with its own stack and allocator arena). A compile takes no
        // slot: wasmtime spreads it over the cores itself, and a long one
        // must not hold cached components back.
        let _slot = if compiling {
            None
        } else {
            self.load_slots.acquire().await.ok()
        };
        let result = active::load(
            &self.runtime,
            &self.registry,
            &name,
            version,
            record,
            observer.clone(),
        )
        .await;
        // Installed under the `loading` lock, so a sync that runs meanwhile
        // sees either this load pending or its version served.
        let mut loading = self.loading_mut();
        let current = loading.get(&name).is_some_and(|p| p.id == id);
        if current {
            loading.remove(&name);
        }
        let result = match result {
            Ok(active) => {
                self.metrics.load(active.loaded.cache_status());
                if current {
                    self.active.insert(&name, active);
                    self.failures_mut().remove(&name);
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(component = %name, version, "cannot load component: {e}");
                let e = Arc::new(e);
                if current {
                    self.failures_mut().insert(name.clone(), e.clone());
                }
                Err(e)
            }
        };
        drop(loading);
        if current && result.is_ok() {
            self.tools_changed.send_modify(|n| *n += 1);
        }
        if let Some(o) = observer {
            o.compiled(
                &name,
                version,
                started.elapsed(),
                result.as_ref().map(|_| ()).map_err(|e| &**e),
            );
        }
    }

    /// Whether `registry.json` changed since the last [`Server::sync`].
    pub fn registry_changed(&self) -> bool {
        *self.registry_seen.lock().unwrap_or_else(|p| p.into_inner()) != self.registry.modified()
    }

    /// Runs [`Server::sync_in_background`] whenever the registry file
    /// changes, and tells MCP sessions when the plan registry changes,
    /// until aborted.
    pub(crate) fn spawn_registry_watcher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let server = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                // Plans added or removed by another process (`tessera
                // plans`): the MCP tool list changed.
                server.notice_plan_changes();
                if server.registry_changed()
                    && let Err(e) = server.sync_in_background().await
                {
                    tracing::error!("registry reload failed: {e}");
                }
            }
        })
    }
}

/// Removes a load from the map (if it is still this load) and tells its
/// waiters it ended, when the loading task ends, even by a panic.
struct EndLoad<'a> {
    server: &'a Server,
    name: &'a str,
    id: u64,
    done: watch::Sender<bool>,
}

impl Drop for EndLoad<'_> {
    fn drop(&mut self) {
        let mut loading = self.server.loading_mut();
        if loading.get(self.name).is_some_and(|p| p.id == self.id) {
            loading.remove(self.name);
        }
        drop(loading);
        let _ = self.done.send(true);
    }
}
