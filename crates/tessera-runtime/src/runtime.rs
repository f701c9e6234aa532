//! The engine, the linker, the epoch ticker and loading.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::audit::{AuditSink, NoAudit};
use crate::cache::{CacheStatus, ComponentCache};
use crate::call::LoadedComponent;
use crate::capability::HostConfig;
use crate::capability::link::{Bindings, Providers};
use crate::gateway::InteractionObserver;
use crate::host::HostState;
use crate::manifest::{Grants, MAX_MEMORY_MB};
use crate::{Error, schema};

/// How often the epoch ticker advances the engine's epoch. Deadlines are
/// checked (and long-running guests yield to other tasks) at this period.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Settings for a [`Runtime`].
#[derive(Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are cached; `None` disables the cache.
    /// The directory may be shared by any number of runtimes and processes
    /// (see [`crate::cache`]); [`crate::cache::default_dir`] gives the
    /// per-user one the CLI and the server use.
    pub cache_dir: Option<PathBuf>,
    /// Use the pooling allocator (falls back to on-demand allocation with a
    /// warning if the address-space reservation fails).
    pub pooling: bool,
    /// Instances that can exist at once (pool size).
    pub max_instances: u32,
    /// Maximum guest stack, in bytes.
    pub max_wasm_stack: usize,
    /// Where audit events go.
    pub audit: Arc<dyn AuditSink>,
    /// Receives every host interaction of every call (the journal's plug).
    pub observer: Option<Arc<dyn InteractionObserver>>,
    /// Compile with guest-debug instrumentation, so calls can snapshot
    /// memories and globals (`CallOptions::snapshot`). Slower; meant for
    /// inspecting recorded runs.
    pub guest_debug: bool,
    /// How the host provides capabilities: secrets and the redaction key.
    /// Kept apart from grants; never journaled.
    pub host: HostConfig,
    /// The trust policy every component must satisfy before it is
    /// compiled or loaded ([`crate::trust`]); `None`: any component loads.
    /// With a seal key, compile-cache entries are sealed too.
    pub trust: Option<Arc<crate::trust::TrustPolicy>>,
}

impl std::fmt::Debug for RuntimeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeConfig")
            .field("cache_dir", &self.cache_dir)
            .field("pooling", &self.pooling)
            .field("max_instances", &self.max_instances)
            .field("max_wasm_stack", &self.max_wasm_stack)
            .finish_non_exhaustive()
    }
}

impl Default for RuntimeConfig {
    /// No cache, pooling on, 1000 instances, 1 MiB guest stack, no audit sink.
    fn default() -> Self {
        Self {
            cache_dir: None,
            pooling: true,
            max_instances: 1000,
            max_wasm_stack: 1 << 20,
            audit: Arc::new(NoAudit),
            observer: None,
            guest_debug: false,
            host: HostConfig::default(),
            trust: None,
        }
    }
}

/// A compiled component and what was derived from it.
#[derive(Clone)]
struct Compiled {
    component: Component,
    functions: Vec<crate::schema::FunctionInfo>,
}

/// How many compiled components a runtime keeps in memory.
const COMPILED_IN_MEMORY: usize = 256;

pub(crate) struct RuntimeInner {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    pub(crate) cache: Option<ComponentCache>,
    pub(crate) audit: Arc<dyn AuditSink>,
    pub(crate) observer: Option<Arc<dyn InteractionObserver>>,
    pub(crate) host: Arc<HostConfig>,
    trust: Option<Arc<crate::trust::TrustPolicy>>,
    pooling: bool,
    max_wasm_stack: usize,
    /// Compiled components already loaded by this runtime, by digest.
    compiled: std::sync::Mutex<std::collections::HashMap<String, Compiled>>,
    /// Where registry names in `[imports]` resolve (a server's registry).
    providers: std::sync::RwLock<Option<Arc<dyn Providers>>>,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

/// A Tessera runtime: one engine, one linker, one cache. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<RuntimeInner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("pooling", &self.inner.pooling)
            .field("cache", &self.inner.cache)
            .finish_non_exhaustive()
    }
}

/// A component's bytes, ready to load: adapted if it was a core module,
/// digested, and checked against the cache.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Where the bytes came from (a path, or a caller-supplied name).
    pub origin: String,
    /// `sha256:<hex>` of the original bytes.
    pub digest: String,
    /// The component bytes (after adaptation).
    pub component_bytes: Arc<Vec<u8>>,
    /// The bytes as given (the core module, if it was adapted).
    pub source_bytes: Arc<Vec<u8>>,
    /// Whether the input was a core module adapted with the preview1 adapter.
    pub adapted: bool,
    /// Whether a cache entry exists (so loading will not compile).
    pub cached: bool,
    /// The name the trust policy judged it by (a registry name, or the
    /// file's stem).
    pub name: String,
    /// What the trust policy found (`None`: no policy in force).
    pub trust: Option<crate::trust::Verdict>,
}

/// What a compiled component offers and needs ([`Runtime::inspect`]),
/// known whether or not it links.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// Where the bytes came from.
    pub origin: String,
    /// `sha256:<hex>` of the bytes as given.
    pub digest: String,
    /// Whether it was a core module adapted to a component.
    pub adapted: bool,
    /// The exported functions, with their schemas.
    pub functions: Vec<crate::schema::FunctionInfo>,
    /// The names of everything it imports.
    pub imports: Vec<String>,
    /// The imports the linker does not satisfy, and why.
    pub unresolved: Vec<crate::UnresolvedImport>,
    /// Why it does not link (as [`Error::Link`] words it), `None` when it
    /// links.
    pub link_error: Option<String>,
    /// Where the compiled code came from.
    pub cache_status: CacheStatus,
}

impl Inspection {
    /// Whether the component links against Tessera's host interfaces.
    pub fn links(&self) -> bool {
        self.link_error.is_none()
    }

    /// The [`Error::Link`] that loading it gives, `None` when it links.
    pub fn link_failure(&self) -> Option<Error> {
        self.link_error.as_ref().map(|message| Error::Link {
            origin: self.origin.clone(),
            message: message.clone(),
            unresolved: self.unresolved.clone(),
            exports: self.functions.iter().map(|f| f.qualified_name()).collect(),
        })
    }
}

/// The name a component from `origin` goes by when it has no registry
/// name: the file's stem for a path or a URL (`tools/hello.wasm`,
/// `https://host/x/hello.wasm#sha256=…` are `hello`), the repository's
/// last segment for an OCI reference (`oci://host/tools/hello:1@sha256:…`
/// is `hello`), and the registry name for the origin a registered version
/// is recorded with (`hello v3` is `hello`).
pub fn name_of(origin: &str) -> String {
    if let Some((name, version)) = origin.split_once(" v")
        && !name.is_empty()
        && !version.is_empty()
        && version.bytes().all(|b| b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return name.to_string();
    }
    let mut s = origin.split('#').next().unwrap_or(origin);
    if let Some(rest) = s.strip_prefix("oci://") {
        s = rest.split('@').next().unwrap_or(rest);
        let last = s.rsplit('/').next().unwrap_or(s);
        return last.split(':').next().unwrap_or(last).to_string();
    }
    Path::new(s)
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| origin.to_string())
}

/// `sha256:<hex>` of some bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn base_config(cfg: &RuntimeConfig) -> Config {
    let mut c = Config::new();
    c.consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(cfg.max_wasm_stack)
        .async_stack_size(cfg.max_wasm_stack + (1 << 20))
        .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Enable)
        .memory_init_cow(true)
        .parallel_compilation(true)
        // Floating point and relaxed SIMD give the same bits on every
        // machine, so any run can be replayed exactly.
        .cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true)
        .guest_debug(cfg.guest_debug);
    // Wasm threads are not compiled into this wasmtime build at all.
    c
}

/// How many instances' memories, tables and stacks the pooling allocator
/// resets in one go. Each reset is an `madvise`, and in a process with
/// several threads every `madvise` makes the kernel interrupt the other
/// cores to flush their TLBs; batched, the kernel does one
/// `process_madvise` and one flush for the whole batch (see
/// `docs/PERFORMANCE.md`, server throughput). A slot waiting in a batch is
/// not reused until the batch is flushed, which happens when a batch is
/// full or when the pool runs out of free slots.
const DECOMMIT_BATCH: usize = 16;

/// How much of a finished instance's linear memory, and of its tables, the
/// pooling allocator resets by hand and keeps mapped, where the kernel can
/// say which pages the instance wrote (`PAGEMAP_SCAN`, Linux 6.7 and
/// later): only the written pages are copied back from the memory image
/// or zeroed, and only what lies beyond this size goes back to the kernel.
/// A small guest's call then costs no `madvise`, no TLB flush on the other
/// cores and no page faults when its slot is reused. The price is that
/// much resident memory, at most, per warm slot (see `docs/PERFORMANCE.md`,
/// server throughput). Without `PAGEMAP_SCAN` the allocator would have to
/// reset the whole size on every call, so then nothing is kept.
const KEEP_RESIDENT: usize = 1 << 20;

fn pooling_config(cfg: &RuntimeConfig) -> PoolingAllocationConfig {
    let n = cfg.max_instances;
    let mut p = PoolingAllocationConfig::default();
    p.total_component_instances(n)
        // An interpreter built by componentize-py is 14 core instances (one
        // per module it links: CPython, libc, the adapter, shims), so an
        // average of 4 would cap live Python sessions at a quarter of the
        // component instances. A core instance slot is a count, not
        // reserved memory.
        .total_core_instances(n.saturating_mul(16))
        .total_memories(n.saturating_mul(2))
        .total_tables(n.saturating_mul(4))
        .total_stacks(n)
        .max_memory_size((MAX_MEMORY_MB as usize) << 20)
        .max_memories_per_component(8)
        .max_tables_per_component(16)
        .max_core_instances_per_component(64)
        .max_component_instance_size(1 << 20)
        .max_core_instance_size(1 << 20)
        .table_elements(100_000)
        .decommit_batch_size(DECOMMIT_BATCH);
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        p.pagemap_scan(wasmtime::Enabled::Yes)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT);
    }
    p
}

impl Runtime {
    /// Creates the engine (pooling if possible), the linker with every host
    /// capability, and starts the epoch ticker.
    pub fn new(cfg: RuntimeConfig) -> Result<Self, Error> {
        let mut pooling = false;
        let engine = if cfg.pooling {
            let mut c = base_config(&cfg);
            c.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(&cfg)));
            match Engine::new(&c) {
                Ok(e) => {
                    pooling = true;
                    e
                }
                Err(e) => {
                    tracing::warn!(
                        "pooling allocator unavailable ({e}); falling back to on-demand allocation"
                    );
                    Engine::new(&base_config(&cfg)).map_err(|source| Error::Engine {
                        what: "creating the engine",
                        source,
                    })?
                }
            }
        } else {
            Engine::new(&base_config(&cfg)).map_err(|source| Error::Engine {
                what: "creating the engine",
                source,
            })?
        };

        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|source| Error::Engine {
            what: "linking WASI",
            source,
        })?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(|source| {
            Error::Engine {
                what: "linking wasi:http",
                source,
            }
        })?;
        crate::capability::link_all(&mut linker)?;

        let stop = Arc::new(AtomicBool::new(false));
        spawn_ticker(engine.weak(), stop.clone())?;

        let cache = cfg
            .cache_dir
            .as_deref()
            .map(|d| ComponentCache::new(d, &engine))
            .map(|c| match cfg.trust.as_ref().and_then(|t| t.seal()) {
                Some(key) => c.with_seal(*key),
                None => c,
            });
        Ok(Self {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                cache,
                audit: cfg.audit,
                observer: cfg.observer,
                host: Arc::new(cfg.host),
                trust: cfg.trust,
                pooling,
                max_wasm_stack: cfg.max_wasm_stack,
                compiled: std::sync::Mutex::new(std::collections::HashMap::new()),
                providers: std::sync::RwLock::new(None),
                stop_ticker: stop,
            }),
        })
    }

    /// Resolves registry names in components' `[imports]` with
    /// `providers` from now on (a server sets its registry here; hold
    /// components in it weakly, as they hold this runtime). Without it,
    /// only `.wasm` files can be providers.
    pub fn set_providers(&self, providers: Option<Arc<dyn Providers>>) {
        *self
            .inner
            .providers
            .write()
            .unwrap_or_else(|p| p.into_inner()) = providers;
    }

    /// Where registry names in `[imports]` resolve, if anywhere.
    pub fn providers(&self) -> Option<Arc<dyn Providers>> {
        self.inner
            .providers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Maximum guest stack, in bytes.
    pub fn max_wasm_stack(&self) -> usize {
        self.inner.max_wasm_stack
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Whether the pooling allocator is in use.
    pub fn pooling(&self) -> bool {
        self.inner.pooling
    }

    /// How the host provides capabilities.
    pub fn host(&self) -> &HostConfig {
        &self.inner.host
    }

    /// The compile cache, if enabled.
    pub fn cache(&self) -> Option<&ComponentCache> {
        self.inner.cache.as_ref()
    }

    /// Whether loading the component with this digest would take no
    /// compiling: this runtime already compiled it, or the compile cache
    /// has an entry for it (which may still turn out to be invalid).
    pub fn has_compiled(&self, digest: &str) -> bool {
        self.inner
            .compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(digest)
            || self
                .inner
                .cache
                .as_ref()
                .is_some_and(|c| c.contains(digest))
    }

    /// Reads a file and prepares it (see [`Runtime::prepare`]).
    pub fn prepare_file(&self, path: &Path) -> Result<Prepared, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.prepare(bytes, &path.display().to_string())
    }

    /// The trust policy in force, if any.
    pub fn trust(&self) -> Option<&Arc<crate::trust::TrustPolicy>> {
        self.inner.trust.as_ref()
    }

    /// [`Runtime::prepare_named`], the name being [`name_of`] the origin
    /// (`tools/hello.wasm` is `hello`).
    pub fn prepare(&self, bytes: Vec<u8>, origin: &str) -> Result<Prepared, Error> {
        self.prepare_named(bytes, origin, &name_of(origin))
    }

    /// Checks the bytes against the trust policy under `name` (refused
    /// with [`Error::Untrusted`] and an audit event), checks that they are
    /// a component or a core module, adapts a core module with the WASI
    /// preview1 adapter, and looks in the cache.
    pub fn prepare_named(
        &self,
        bytes: Vec<u8>,
        origin: &str,
        name: &str,
    ) -> Result<Prepared, Error> {
        let digest = digest_of(&bytes);
        let trust = match &self.inner.trust {
            None => None,
            Some(policy) => match policy.check(name, &bytes, &digest) {
                Ok(v) => Some(v),
                Err(refusal) => {
                    self.inner.audit.record(&crate::AuditEvent::now(
                        &digest,
                        "",
                        "trust",
                        name,
                        crate::Decision::Deny,
                        Some(format!("{refusal} (policy {})", policy.path().display())),
                    ));
                    return Err(Error::Untrusted {
                        origin: origin.to_string(),
                        refusal,
                    });
                }
            },
        };
        let source = Arc::new(bytes);
        let (component_bytes, adapted) = to_component(&source, origin)?;
        let component_bytes = match component_bytes {
            Some(c) => Arc::new(c),
            None => source.clone(),
        };
        let cached = self
            .inner
            .cache
            .as_ref()
            .is_some_and(|c| c.contains(&digest));
        Ok(Prepared {
            origin: origin.to_string(),
            digest,
            component_bytes,
            source_bytes: source,
            adapted,
            cached,
            name: name.to_string(),
            trust,
        })
    }

    /// Compiles (or loads from the cache) and pre-instantiates a prepared
    /// component under `grants`. This is CPU-bound; async callers should run
    /// it on a blocking thread.
    ///
    /// A component that imports something the linker does not provide is
    /// refused with [`Error::Link`], which names each unresolved import
    /// (see [`crate::imports`]) and lists the component's exports.
    ///
    /// Imports mapped in the manifest's `[imports]` are linked to their
    /// providers (loaded now if they are files, resolved through
    /// [`Runtime::set_providers`] if they are registry names) after their
    /// types are checked; see [`crate::capability::link`].
    pub fn load(&self, prepared: &Prepared, grants: Grants) -> Result<LoadedComponent, Error> {
        self.load_nested(prepared, grants, &mut Vec::new())
    }

    /// [`Runtime::load`] inside the loading of the files in `loading` (a
    /// consumer's file providers, so that a cycle of files is refused).
    pub(crate) fn load_nested(
        &self,
        prepared: &Prepared,
        mut grants: Grants,
        loading: &mut Vec<PathBuf>,
    ) -> Result<LoadedComponent, Error> {
        grants
            .bind(&self.inner.host)
            .map_err(|source| Error::Bind {
                origin: prepared.origin.clone(),
                source,
            })?;
        let (compiled, cache_status) = self.compiled(prepared)?;
        let bindings = self.bindings(prepared, &compiled, &grants, loading)?;
        let pre = self.link(prepared, &compiled, bindings.as_ref())?;
        let exposures = grants
            .tools
            .resolve(&compiled.functions, &prepared.origin)?;
        Ok(LoadedComponent::new(
            self.clone(),
            prepared.clone(),
            pre,
            compiled.functions,
            exposures,
            grants,
            cache_status,
        ))
    }

    /// Compiles (or loads from the cache, so a later [`Runtime::load`]
    /// does not compile again) and link-checks a prepared component, without
    /// binding any grants: what a registry checks before it accepts a
    /// version. `Ok` means the component links; [`Error::Link`] names what
    /// it imports that Tessera does not provide.
    pub fn check(&self, prepared: &Prepared) -> Result<Inspection, Error> {
        let inspection = self.inspect(prepared)?;
        match inspection.link_failure() {
            None => Ok(inspection),
            Some(e) => Err(e),
        }
    }

    /// [`Runtime::check`] under `grants`: the imports their `[imports]`
    /// maps must be served by their providers, with the same types
    /// ([`Error::Compose`] otherwise), and the rest by the host.
    pub fn check_with(&self, prepared: &Prepared, grants: &Grants) -> Result<Inspection, Error> {
        if grants.link.is_empty() {
            return self.check(prepared);
        }
        let mut inspection = self.inspect(prepared)?;
        let (compiled, _) = self.compiled(prepared)?;
        let bindings = self.bindings(prepared, &compiled, grants, &mut Vec::new())?;
        self.link(prepared, &compiled, bindings.as_ref())?;
        inspection.link_error = None;
        inspection.unresolved.clear();
        Ok(inspection)
    }

    /// The providers of `grants`' `[imports]`, resolved and checked.
    fn bindings(
        &self,
        prepared: &Prepared,
        compiled: &Compiled,
        grants: &Grants,
        loading: &mut Vec<PathBuf>,
    ) -> Result<Option<Bindings>, Error> {
        Bindings::resolve(
            self,
            &prepared.origin,
            &compiled.component,
            grants,
            &mut |spec| crate::capability::link::load_file_provider(self, spec, loading),
        )
    }

    /// Compiles (or loads from the cache) a prepared component and reports
    /// what it exports and imports, and whether it links: a component that
    /// compiles is described even when it cannot be loaded. Errors only
    /// when it does not compile.
    pub fn inspect(&self, prepared: &Prepared) -> Result<Inspection, Error> {
        let (compiled, cache_status) = self.compiled(prepared)?;
        let engine = &self.inner.engine;
        let imports = compiled
            .component
            .component_type()
            .imports(engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let (link_error, unresolved) = match self.link(prepared, &compiled, None) {
            Ok(_) => (None, Vec::new()),
            Err(Error::Link {
                message,
                unresolved,
                ..
            }) => (Some(message), unresolved),
            Err(e) => return Err(e),
        };
        Ok(Inspection {
            origin: prepared.origin.clone(),
            digest: prepared.digest.clone(),
            adapted: prepared.adapted,
            functions: compiled.functions,
            imports,
            unresolved,
            link_error,
            cache_status,
        })
    }

    /// The compiled component, from memory, the disk cache or Cranelift.
    fn compiled(&self, prepared: &Prepared) -> Result<(Compiled, CacheStatus), Error> {
        let known = self
            .inner
            .compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&prepared.digest)
            .cloned();
        if let Some(c) = known {
            return Ok((c, CacheStatus::Memory));
        }
        let (component, status, docs) = self.compile(prepared)?;
        let docs = docs.unwrap_or_else(|| schema::Docs::of(&prepared.component_bytes));
        let functions = schema::functions_with_docs(&self.inner.engine, &component, &docs);
        let compiled = Compiled {
            component,
            functions,
        };
        let mut map = self
            .inner
            .compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if map.len() >= COMPILED_IN_MEMORY {
            map.clear();
        }
        map.insert(prepared.digest.clone(), compiled.clone());
        Ok((compiled, status))
    }

    /// Pre-instantiates against the linker; on failure, names what is missing.
    fn link(
        &self,
        prepared: &Prepared,
        compiled: &Compiled,
        bindings: Option<&Bindings>,
    ) -> Result<wasmtime::component::InstancePre<HostState>, Error> {
        let own;
        let linker = match bindings {
            None => &self.inner.linker,
            Some(b) => {
                own = b.define(&self.inner.linker).map_err(|e| {
                    self.link_error(prepared, &format!("{e:#}"), Vec::new(), &compiled.functions)
                })?;
                &own
            }
        };
        linker.instantiate_pre(&compiled.component).map_err(|e| {
            let unresolved =
                crate::imports::diagnose(&self.inner.engine, linker, &compiled.component);
            self.link_error(prepared, &format!("{e:#}"), unresolved, &compiled.functions)
        })
    }

    fn link_error(
        &self,
        prepared: &Prepared,
        wasmtime_message: &str,
        unresolved: Vec<crate::UnresolvedImport>,
        functions: &[schema::FunctionInfo],
    ) -> Error {
        let exports: Vec<String> = functions.iter().map(|f| f.qualified_name()).collect();
        let mut message = if unresolved.is_empty() {
            // Nothing narrowed down by name: wasmtime's account is all there is.
            wasmtime_message.to_string()
        } else {
            unresolved
                .iter()
                .map(|u| u.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        };
        if exports.is_empty() {
            message.push_str(" (the component exports no functions)");
        } else {
            message.push_str(&format!(" (the component exports: {})", exports.join(", ")));
        }
        Error::Link {
            origin: prepared.origin.clone(),
            message,
            unresolved,
            exports,
        }
    }

    /// Prepares and loads a file in one step.
    pub fn load_file(&self, path: &Path, grants: Grants) -> Result<LoadedComponent, Error> {
        let prepared = self.prepare_file(path)?;
        let mut loading = vec![std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())];
        self.load_nested(&prepared, grants, &mut loading)
    }

    /// Compiles a component, or loads it from the compile cache with the
    /// doc comments kept beside it (`None`: read them from the bytes).
    fn compile(
        &self,
        p: &Prepared,
    ) -> Result<(Component, CacheStatus, Option<schema::Docs>), Error> {
        let engine = &self.inner.engine;
        let compile = || {
            Component::from_binary(engine, &p.component_bytes).map_err(|e| Error::Compile {
                origin: p.origin.clone(),
                message: format!("{e:#}"),
            })
        };
        let Some(cache) = &self.inner.cache else {
            return Ok((compile()?, CacheStatus::Disabled, None));
        };
        let status = match cache.load(engine, &p.digest) {
            Ok(Some(c)) => {
                let docs = schema::Docs::from_notes(&c.notes);
                return Ok((c.component, CacheStatus::Hit, docs));
            }
            Ok(None) => CacheStatus::Miss,
            Err(reason) => {
                if self.inner.trust.is_some() {
                    self.inner.audit.record(&crate::AuditEvent::now(
                        &p.digest,
                        "",
                        "compile-cache",
                        cache.entry_path(&p.digest).display().to_string(),
                        crate::Decision::Deny,
                        Some(format!("entry refused and compiled again: {reason}")),
                    ));
                }
                CacheStatus::Rejected(reason)
            }
        };
        let component = compile()?;
        let docs = schema::Docs::of(&p.component_bytes);
        if let Err(e) = cache.store(&p.digest, &component, &docs.to_notes()) {
            tracing::warn!("cannot write compile cache entry: {e}");
        }
        Ok((component, status, Some(docs)))
    }
}

/// Turns input bytes into component bytes (`None`: they already are one).
fn to_component(bytes: &[u8], origin: &str) -> Result<(Option<Vec<u8>>, bool), Error> {
    if wasmparser::Parser::is_component(bytes) {
        return Ok((None, false));
    }
    if !wasmparser::Parser::is_core_wasm(bytes) {
        let message = if bytes.len() < 8 {
            format!(
                "file is {} bytes long, too short for a wasm header",
                bytes.len()
            )
        } else if bytes.starts_with(b"\0asm") {
            format!("unsupported wasm version/layer bytes {:02x?}", &bytes[4..8])
        } else {
            "missing the `\\0asm` magic number".to_string()
        };
        return Err(Error::NotWasm {
            origin: origin.to_string(),
            message,
        });
    }
    let adapter = if exports_start(bytes) {
        wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER
    } else {
        wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER
    };
    let adapt_err = |e: wasmtime::Error| Error::Adapt {
        origin: origin.to_string(),
        message: format!("{e:#}"),
    };
    let encoded = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(bytes)
        .map_err(|e| adapt_err(wasmtime::Error::msg(format!("{e:#}"))))?
        .adapter(
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            adapter,
        )
        .map_err(|e| adapt_err(wasmtime::Error::msg(format!("{e:#}"))))?
        .encode()
        .map_err(|e| adapt_err(wasmtime::Error::msg(format!("{e:#}"))))?;
    Ok((Some(encoded), true))
}

/// Whether a core module exports `_start` (a WASI command).
fn exports_start(bytes: &[u8]) -> bool {
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        if let Ok(wasmparser::Payload::ExportSection(reader)) = payload {
            return reader.into_iter().flatten().any(|e| e.name == "_start");
        }
    }
    false
}

fn spawn_ticker(engine: wasmtime::EngineWeak, stop: Arc<AtomicBool>) -> Result<(), Error> {
    std::thread::Builder::new()
        .name("tessera-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                match engine.upgrade() {
                    Some(e) => e.increment_epoch(),
                    None => break,
                }
            }
        })
        .map(drop)
        .map_err(|e| Error::Engine {
            what: "spawning the epoch ticker thread",
            source: wasmtime::Error::new(e),
        })
}
