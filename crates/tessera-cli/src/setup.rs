//! Options shared by every subcommand, and building a runtime from them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tessera_runtime::audit::JsonLinesAudit;
use tessera_runtime::{Error, Grants, LoadedComponent, Runtime, RuntimeConfig};

/// Global options.
#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// Data directory: compile cache, journal, audit log, component
    /// registry and tokens live here.
    #[arg(
        long,
        global = true,
        env = "TESSERA_DATA",
        default_value = "tessera-data"
    )]
    pub data: PathBuf,
    /// Do not read or write the compile cache.
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// Append audit events (JSON lines) to this file instead of
    /// `<data>/audit.jsonl`.
    #[arg(long, global = true, value_name = "FILE")]
    pub audit: Option<PathBuf>,
}

impl GlobalArgs {
    /// Builds the runtime, optionally with guest-debug instrumentation.
    pub fn runtime_with(&self, guest_debug: bool) -> Result<Runtime, String> {
        let audit_path = self
            .audit
            .clone()
            .unwrap_or_else(|| self.data.join("audit.jsonl"));
        let audit = JsonLinesAudit::open(&audit_path)
            .map_err(|e| format!("cannot open audit log {}: {e}", audit_path.display()))?;
        Runtime::new(RuntimeConfig {
            cache_dir: (!self.no_cache).then(|| self.data.join("cache")),
            audit: Arc::new(audit),
            guest_debug,
            ..RuntimeConfig::default()
        })
        .map_err(|e| e.to_string())
    }
}

impl GlobalArgs {
    /// [`GlobalArgs::runtime_with`], printing the error and giving the exit
    /// code on failure.
    pub fn open_runtime(&self, guest_debug: bool) -> Result<Runtime, i32> {
        self.runtime_with(guest_debug).map_err(|e| {
            eprintln!("error: {e}");
            crate::exit::INTERNAL
        })
    }

    /// [`GlobalArgs::journal`], printing the error and giving the exit code
    /// on failure.
    pub fn open_journal(&self) -> Result<Arc<tessera_journal::JournalStore>, i32> {
        self.journal().map_err(|e| {
            eprintln!("error: {e}");
            crate::exit::INTERNAL
        })
    }

    /// Opens the journal store in the data directory.
    pub fn journal(&self) -> Result<Arc<tessera_journal::JournalStore>, String> {
        tessera_journal::JournalStore::open(&self.data)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }
}

/// Loads a component with a manifest, showing a spinner while it compiles.
pub async fn load(
    runtime: &Runtime,
    path: &Path,
    manifest: Option<&Path>,
    deterministic: Option<u64>,
) -> Result<LoadedComponent, Error> {
    let mut grants = match manifest {
        Some(m) => Grants::from_file(m)?,
        None => Grants::deny_all(),
    };
    if deterministic.is_some() {
        grants.deterministic = deterministic;
    }
    let prepared = runtime.prepare_file(path)?;
    let spinner = (!prepared.cached).then(|| {
        let s = indicatif::ProgressBar::new_spinner();
        s.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        s.set_message(format!(
            "compiling {} ({} KiB)",
            path.display(),
            prepared.component_bytes.len() / 1024
        ));
        s.enable_steady_tick(Duration::from_millis(100));
        s
    });
    let rt = runtime.clone();
    let result = tokio::task::spawn_blocking(move || rt.load(&prepared, grants))
        .await
        .map_err(|e| Error::Engine(format!("compile task failed: {e}")))?;
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    result
}
