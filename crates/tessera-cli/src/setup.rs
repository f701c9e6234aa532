//! Options shared by every subcommand, and building a runtime from them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tessera_runtime::audit::JsonLinesAudit;
use tessera_runtime::{
    Error, Grants, Inspection, LoadedComponent, Prepared, Runtime, RuntimeConfig,
};

/// Global options.
#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// Data directory: journal, audit log, component registry and tokens
    /// live here.
    #[arg(
        long,
        global = true,
        env = "TESSERA_DATA",
        default_value = "tessera-data"
    )]
    pub data: PathBuf,
    /// The compile cache: compiled components, shared by every data
    /// directory and process that uses it. Default: `$XDG_CACHE_HOME/tessera`,
    /// or `~/.cache/tessera` when `XDG_CACHE_HOME` is unset.
    #[arg(long, global = true, env = "TESSERA_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Do not read or write the compile cache (overrides `--cache-dir`).
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// Append audit events (JSON lines) to this file instead of
    /// `<data>/audit.jsonl`.
    #[arg(long, global = true, value_name = "FILE")]
    pub audit: Option<PathBuf>,
    /// A `wasi:config` secret the host provides, NAME=VALUE (repeatable).
    /// Components name secrets in their manifest (`[config] secrets`);
    /// values never enter a manifest, a journal or an audit line. Also read
    /// from `TESSERA_SECRET_<NAME>` variables and `--secrets-file`.
    #[arg(long = "secret", global = true, value_name = "NAME=VALUE")]
    pub secrets: Vec<String>,
    /// A TOML file of secrets (`NAME = "value"` lines), the host's side of
    /// `[config] secrets`.
    #[arg(long, global = true, value_name = "FILE")]
    pub secrets_file: Option<PathBuf>,
    /// The trust policy (`trust.toml`, see docs/trust.md): components that
    /// are unsigned, signed by an untrusted key, changed after signing or
    /// not their pinned digest are refused on every load. Default:
    /// `<data>/trust.toml` when it exists; none otherwise.
    #[arg(long, global = true, env = "TESSERA_TRUST", value_name = "FILE")]
    pub trust: Option<PathBuf>,
    /// Boundary policies (a directory of Cedar `*.cedar` files and an
    /// optional `quotas.toml`, see docs/policies.md): every gateway decision
    /// the grants allow is put to them. Default: `<data>/policies` when it
    /// exists; none otherwise.
    #[arg(long, global = true, env = "TESSERA_POLICY", value_name = "DIR")]
    pub policy: Option<PathBuf>,
    /// Export traces over OTLP/HTTP to this collector (`http://host:4318`):
    /// spans of server requests, calls and their host interactions, with
    /// W3C `traceparent` taken from incoming requests and passed on in the
    /// guests' outgoing HTTP requests (docs/telemetry.md). Default: no
    /// traces.
    #[arg(long, global = true, env = "TESSERA_OTLP", value_name = "URL")]
    pub otlp: Option<String>,
    /// The share of traces kept, from 0 to 1 (with `--otlp`): a trace that
    /// starts here is kept with this probability (by its trace id); one
    /// that comes in with a `traceparent` follows the caller's decision.
    /// Default: every trace (or what `OTEL_TRACES_SAMPLER` says).
    #[arg(
        long,
        global = true,
        env = "TESSERA_OTLP_SAMPLE",
        value_name = "RATIO",
        value_parser = parse_ratio
    )]
    pub otlp_sample: Option<f64>,
    /// The policy engine, loaded once per process (quotas count across
    /// every call of the process).
    #[arg(skip)]
    pub policy_engine: std::sync::OnceLock<Option<Arc<tessera_runtime::policy::PolicyEngine>>>,
    /// The trust policy, loaded once per process.
    #[arg(skip)]
    pub trust_policy: std::sync::OnceLock<Option<Arc<tessera_runtime::trust::TrustPolicy>>>,
    /// The data directory's stores, opened once per process (the embedded
    /// store file is held by one opener).
    #[arg(skip)]
    pub stores: std::sync::OnceLock<Arc<tessera_store::Stores>>,
    /// The data directory's models, loaded once per process.
    #[arg(skip)]
    pub models: std::sync::OnceLock<Arc<tessera_models::ModelStore>>,
}

/// A sampling ratio: a number from 0 to 1.
fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        Ok(_) => Err(format!("{s} is not between 0 and 1")),
        Err(_) => Err(format!(
            "{s} is not a number (a ratio from 0 to 1, like 0.1)"
        )),
    }
}

/// The prefix of environment variables that provide secrets.
pub const SECRET_ENV_PREFIX: &str = "TESSERA_SECRET_";

impl GlobalArgs {
    /// The compile cache directory: `--cache-dir` (or `TESSERA_CACHE_DIR`),
    /// else the per-user one; `None` with `--no-cache`, or when no per-user
    /// location is known (a warning says so).
    pub fn cache_dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        let dir = self
            .cache_dir
            .clone()
            .filter(|d| !d.as_os_str().is_empty())
            .or_else(tessera_runtime::cache::default_dir);
        if dir.is_none() {
            eprintln!(
                "warning: no compile cache: neither XDG_CACHE_HOME nor HOME is set; \
                 pass --cache-dir (or set TESSERA_CACHE_DIR) to keep compiled components"
            );
        }
        dir
    }

    /// Builds the runtime, optionally with guest-debug instrumentation.
    pub fn runtime_with(&self, guest_debug: bool) -> Result<Runtime, String> {
        let audit_path = self
            .audit
            .clone()
            .unwrap_or_else(|| self.data.join("audit.jsonl"));
        let audit = JsonLinesAudit::open(&audit_path)
            .map_err(|e| format!("cannot open audit log {}: {e}", audit_path.display()))?;
        let rt = Runtime::new(RuntimeConfig {
            cache_dir: self.cache_dir(),
            audit: Arc::new(audit),
            guest_debug,
            host: self.host_config()?,
            trust: self.trust_policy()?,
            ..RuntimeConfig::default()
        })
        .map_err(|e| e.to_string())?;
        if !rt.pooling() {
            eprintln!("warning: pooling allocator unavailable; using on-demand allocation");
        }
        Ok(rt)
    }

    /// [`GlobalArgs::runtime_with`] for a command: a policy directory or
    /// trust file that does not load is bad input (exit 2), anything else
    /// that fails is internal.
    pub fn runtime_checked(&self, guest_debug: bool) -> Result<Runtime, crate::failure::Failure> {
        use crate::failure::Failure;
        self.policy_engine()
            .map_err(|e| Failure::bad_input("policy", e))?;
        self.trust_policy()
            .map_err(|e| Failure::bad_input("trust", e))?;
        self.runtime_with(guest_debug)
            .map_err(|e| Failure::internal("setup", e))
    }

    /// The trust file in force: `--trust`, else `<data>/trust.toml` if it
    /// exists.
    pub fn trust_file(&self) -> Option<PathBuf> {
        self.trust
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
            .or_else(|| Some(self.data.join("trust.toml")).filter(|p| p.is_file()))
    }

    /// The trust policy in force (see [`GlobalArgs::trust_file`]), sealing
    /// the compile cache with the data directory's seal key
    /// (`<data>/keys/cache-seal.key`, made on first use); loaded on first
    /// use and shared by every runtime of this process.
    pub fn trust_policy(&self) -> Result<Option<Arc<tessera_runtime::trust::TrustPolicy>>, String> {
        use tessera_runtime::trust;
        if let Some(policy) = self.trust_policy.get() {
            return Ok(policy.clone());
        }
        let policy = match self.trust_file() {
            None => None,
            Some(path) => {
                let policy = trust::TrustPolicy::load(&path).map_err(|e| e.to_string())?;
                let seal = trust::seal_key(&self.data.join("keys").join("cache-seal.key"))
                    .map_err(|e| e.to_string())?;
                Some(Arc::new(policy.with_seal_key(seal)))
            }
        };
        Ok(self.trust_policy.get_or_init(|| policy).clone())
    }

    /// The policy directory in force: `--policy`, else `<data>/policies` if
    /// it exists.
    pub fn policy_dir(&self) -> Option<PathBuf> {
        self.policy
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
            .or_else(|| Some(self.data.join("policies")).filter(|p| p.is_dir()))
    }

    /// The boundary policies in force (see [`GlobalArgs::policy_dir`]),
    /// loaded on first use and shared by every runtime of this process.
    pub fn policy_engine(
        &self,
    ) -> Result<Option<Arc<tessera_runtime::policy::PolicyEngine>>, String> {
        if let Some(engine) = self.policy_engine.get() {
            return Ok(engine.clone());
        }
        let engine = match self.policy_dir() {
            None => None,
            Some(dir) => Some(Arc::new(
                tessera_runtime::policy::PolicyEngine::load(&dir).map_err(|e| match e {
                    tessera_runtime::policy::PolicyError::Invalid(_) => {
                        format!("policies {} do not load:\n{e}", dir.display())
                    }
                    other => format!("policies: {other}"),
                })?,
            )),
        };
        Ok(self.policy_engine.get_or_init(|| engine).clone())
    }

    /// The host's side of the capabilities: secrets (from the environment,
    /// the secrets file, then `--secret`, later ones winning), the data
    /// directory's redaction key, its stores (opened on first use) and its
    /// LLM providers.
    pub fn host_config(&self) -> Result<tessera_runtime::HostConfig, String> {
        Ok(tessera_runtime::HostConfig {
            secrets: self.secrets()?,
            redaction_key: self.redaction_key()?,
            stores: Some(self.stores()?),
            llm: self.llm_providers()?,
            nn: Some(self.models()),
            policy: self.policy_engine()?,
        })
    }

    /// The data directory's models (`tessera models`), loaded on first use
    /// and shared by every call of this process.
    pub fn model_store(&self) -> Arc<tessera_models::ModelStore> {
        self.models
            .get_or_init(|| Arc::new(tessera_models::ModelStore::new(&self.data)))
            .clone()
    }

    /// [`GlobalArgs::model_store`] as `wasi:nn`'s models.
    pub fn models(&self) -> Arc<dyn tessera_runtime::capability::nn::NnModels> {
        self.model_store() as Arc<dyn tessera_runtime::capability::nn::NnModels>
    }

    /// The data directory's LLM providers: the `[llm.providers.<name>]`
    /// tables of `<data>/tessera.toml` (their keys read now), and the
    /// provider `local`, which serves the installed GGUF models.
    pub fn llm_providers(
        &self,
    ) -> Result<Option<Arc<tessera_runtime::capability::llm::LlmProviders>>, String> {
        use tessera_runtime::capability::llm::LlmProviders;
        let providers = match LlmProviders::load(&self.data).map_err(|e| e.to_string())? {
            Some(p) => p.with_local(self.model_store()),
            None => LlmProviders::local_only(self.model_store()),
        };
        Ok(Some(Arc::new(providers)))
    }

    /// The data directory's stores (each backend opened on first use),
    /// shared by the runtime and the plan runner.
    pub fn stores(&self) -> Result<Arc<tessera_store::Stores>, String> {
        if let Some(s) = self.stores.get() {
            return Ok(s.clone());
        }
        let s = Arc::new(tessera_store::Stores::new(
            self.store_settings()?,
            &self.data,
        ));
        Ok(self.stores.get_or_init(|| s).clone())
    }

    /// The data directory's `[store]` settings (which backend holds which
    /// bucket).
    pub fn store_settings(&self) -> Result<tessera_store::StoreSettings, String> {
        tessera_store::StoreSettings::load(&self.data).map_err(|e| e.to_string())
    }

    /// The secrets the host provides.
    pub fn secrets(&self) -> Result<std::collections::BTreeMap<String, String>, String> {
        let mut out = std::collections::BTreeMap::new();
        for (k, v) in std::env::vars() {
            if let Some(name) = k.strip_prefix(SECRET_ENV_PREFIX)
                && !name.is_empty()
            {
                out.insert(name.to_ascii_lowercase(), v);
            }
        }
        if let Some(path) = &self.secrets_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read secrets file {}: {e}", path.display()))?;
            let table: std::collections::BTreeMap<String, String> =
                toml::from_str(&text).map_err(|e| {
                    format!(
                        "{}: {}",
                        path.display(),
                        e.message().trim_end().replace('\n', " ")
                    )
                })?;
            out.extend(table);
        }
        for s in &self.secrets {
            let (name, value) = s
                .split_once('=')
                .filter(|(n, _)| !n.is_empty())
                .ok_or_else(|| {
                    format!(
                        "--secret `{}`: expected NAME=VALUE",
                        s.split('=').next().unwrap_or("")
                    )
                })?;
            out.insert(name.to_string(), value.to_string());
        }
        Ok(out)
    }

    /// The data directory's redaction key (`<data>/journal.key`, created on
    /// first use).
    pub fn redaction_key(&self) -> Result<tessera_runtime::gateway::RedactionKey, String> {
        let path = self.data.join("journal.key");
        tessera_runtime::gateway::RedactionKey::load_or_create(&path)
            .map_err(|e| format!("cannot read or create {}: {e}", path.display()))
    }
}

impl GlobalArgs {
    /// Opens the journal store in the data directory.
    pub fn journal(&self) -> Result<Arc<tessera_journal::JournalStore>, String> {
        tessera_journal::JournalStore::open(&self.data)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }
}

/// A progress indicator on stderr while a component compiles: what is
/// compiled, its size and the time so far. wasmtime reports no progress
/// while Cranelift compiles, so it shows elapsed time rather than a
/// percentage it would have to invent. Drawn only on a terminal.
pub fn compile_progress(what: &str, bytes: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_message(format!("compiling {what} ({} KiB)", bytes / 1024));
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Loads prepared bytes with a manifest, showing progress while they
/// compile.
pub async fn load_prepared(
    runtime: &Runtime,
    prepared: Prepared,
    grants: Grants,
) -> Result<LoadedComponent, Error> {
    let progress = (!prepared.cached)
        .then(|| compile_progress(&prepared.origin, prepared.component_bytes.len()));
    let rt = runtime.clone();
    let result = tokio::task::spawn_blocking(move || rt.load(&prepared, grants))
        .await
        .map_err(|source| Error::Task {
            what: "the compile task",
            source,
        })?;
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    result
}

/// Limit flags that override a manifest's (`tessera run`, `tessera exec`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LimitArgs {
    /// Fuel budget (default: the manifest's, or 2,000,000,000).
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Wall-clock limit in milliseconds (default: the manifest's, or 10,000).
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// Linear-memory ceiling in MiB (default: the manifest's, or 256).
    #[arg(long, value_name = "MIB")]
    pub memory_mb: Option<u64>,
}

impl LimitArgs {
    /// Whether any limit was given.
    pub fn any(&self) -> bool {
        self.fuel.is_some() || self.timeout_ms.is_some() || self.memory_mb.is_some()
    }

    /// Sets the limits given on `grants`.
    pub fn apply(&self, grants: &mut Grants) {
        if let Some(f) = self.fuel {
            grants.limits.fuel = f;
        }
        if let Some(t) = self.timeout_ms {
            grants.limits.timeout_ms = t;
        }
        if let Some(m) = self.memory_mb {
            grants.limits.memory_mb = m;
        }
    }
}

/// The grants of a manifest file (none: nothing granted), with
/// `deterministic` overriding the manifest's.
pub fn grants(manifest: Option<&Path>, deterministic: Option<u64>) -> Result<Grants, Error> {
    let mut grants = match manifest {
        Some(m) => Grants::from_file(m)?,
        None => Grants::deny_all(),
    };
    if deterministic.is_some() {
        grants.deterministic = deterministic;
    }
    Ok(grants)
}

/// Compiles prepared bytes (showing progress; `what` names them) and
/// reports what they export and import, and whether they link.
pub async fn inspect_prepared(
    runtime: &Runtime,
    prepared: tessera_runtime::Prepared,
    what: &str,
) -> Result<Inspection, Error> {
    let progress =
        (!prepared.cached).then(|| compile_progress(what, prepared.component_bytes.len()));
    let rt = runtime.clone();
    let result = tokio::task::spawn_blocking(move || rt.inspect(&prepared))
        .await
        .map_err(|source| Error::Task {
            what: "the compile task",
            source,
        })?;
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    result
}
