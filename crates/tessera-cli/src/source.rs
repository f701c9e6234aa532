//! Component sources on the command line: the options every command that
//! takes a component shares (`inspect`, `call`, `components add`,
//! `components push`), and turning a source argument — a file, a pinned
//! `https://` URL or an `oci://` reference — into verified bytes through
//! `tessera-source`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tessera_runtime::{LoadedComponent, Runtime};
use tessera_source::{Credentials, Digest, FetchOptions, Fetched, OciRef, Source};

use crate::exit;
use crate::setup::GlobalArgs;

/// Where to fetch a component from, and how.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SourceArgs {
    /// The SHA-256 digest the component's bytes must have. Required for an
    /// `https://` URL that does not end in `#sha256=<hex>`; checked for
    /// any other source too.
    #[arg(long, value_name = "sha256:HEX")]
    pub digest: Option<Digest>,
    /// A PEM file of root certificates to trust, besides the system's, for
    /// `https://` URLs and registries.
    #[arg(long, value_name = "FILE", env = "TESSERA_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// A registry (`host` or `host:port`) to reach over plain HTTP.
    /// Loopback registries (localhost, 127.0.0.1, ::1) always are; any other
    /// is reached over HTTPS unless named here. Repeatable.
    #[arg(
        long,
        value_name = "HOST",
        env = "TESSERA_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure_registry: Vec<String>,
    /// User name for the registry's basic authentication (anonymous
    /// without it); the password comes from `--registry-password` or,
    /// better, `TESSERA_REGISTRY_PASSWORD`.
    #[arg(long, value_name = "USER", env = "TESSERA_REGISTRY_USER")]
    pub registry_user: Option<String>,
    /// Password or token for `--registry-user`. Never written to a
    /// journal, an audit line, a registry entry or a message.
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "TESSERA_REGISTRY_PASSWORD",
        hide_env_values = true
    )]
    pub registry_password: Option<String>,
}

impl SourceArgs {
    /// The fetch options these arguments describe.
    pub fn options(&self) -> Result<FetchOptions, String> {
        let credentials = match (&self.registry_user, &self.registry_password) {
            (Some(u), Some(p)) => Some(Credentials {
                username: u.clone(),
                password: p.clone(),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(
                    "--registry-user needs a password: set TESSERA_REGISTRY_PASSWORD (or --registry-password)"
                        .into(),
                );
            }
            (None, Some(_)) => {
                return Err(
                    "a registry password was given without --registry-user (or TESSERA_REGISTRY_USER)"
                        .into(),
                );
            }
        };
        Ok(FetchOptions {
            digest: self.digest.clone(),
            ca_cert: self.ca_cert.clone(),
            insecure_registries: self.insecure_registry.clone(),
            credentials,
        })
    }
}

/// A failure to resolve a source: the message (without `error: `) and the
/// exit code.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong.
    pub message: String,
    /// The exit code.
    pub code: i32,
    /// A stable name of what went wrong (`read`, `unpinned`,
    /// `digest_mismatch`, `unreachable`, …).
    pub kind: &'static str,
    /// The local file, when one could not be read.
    pub path: Option<PathBuf>,
}

impl Failure {
    /// The failure a command reports.
    pub fn into_failure(self) -> crate::failure::Failure {
        let f = crate::failure::Failure::new(self.code, self.kind, self.message);
        match self.path {
            Some(p) => f.with("path", p.display().to_string()),
            None => f,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<tessera_source::Error> for Failure {
    fn from(e: tessera_source::Error) -> Self {
        use tessera_source::Error as E;
        let (kind, path) = match &e {
            E::Read { path, .. } => ("read", Some(path.clone())),
            E::BadSource { .. } => ("bad_source", None),
            E::Unpinned { .. } => ("unpinned", None),
            E::ConflictingPins { .. } => ("conflicting_pins", None),
            E::DigestMismatch { .. } => ("digest_mismatch", None),
            E::Unreachable { .. } => ("unreachable", None),
            E::Unauthorized { .. } => ("unauthorized", None),
            _ => ("source", None),
        };
        Self {
            code: if e.is_internal() {
                exit::INTERNAL
            } else {
                exit::BAD_INPUT
            },
            message: e.to_string(),
            kind,
            path,
        }
    }
}

fn bad(message: String) -> Failure {
    Failure {
        message,
        code: exit::BAD_INPUT,
        kind: "source",
        path: None,
    }
}

/// Fetches and verifies the component an argument names, with a spinner
/// on stderr while a remote source downloads.
pub async fn resolve(arg: &Path, args: &SourceArgs) -> Result<Fetched, Failure> {
    let options = args.options().map_err(bad)?;
    let source = Source::parse(arg)?;
    let spinner = source.is_remote().then(|| {
        let s = indicatif::ProgressBar::new_spinner();
        s.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        s.set_message(format!("fetching {source}"));
        s.enable_steady_tick(Duration::from_millis(100));
        s
    });
    let fetched = tessera_source::fetch(&source, &options).await;
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    Ok(fetched?)
}

/// A failure to fetch or to load.
pub enum LoadFailure {
    /// The source could not be fetched or verified.
    Source(Failure),
    /// The runtime refused the bytes or the manifest.
    Runtime(tessera_runtime::Error),
}

impl LoadFailure {
    /// The failure a command reports.
    pub fn into_failure(self) -> crate::failure::Failure {
        match self {
            Self::Source(f) => f.into_failure(),
            Self::Runtime(e) => crate::failure::Failure::from_runtime(&e),
        }
    }
}

impl std::fmt::Display for LoadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Source(s) => s.fmt(f),
            Self::Runtime(e) => e.fmt(f),
        }
    }
}

/// Fetches a component from its source and loads it under `grants`
/// ([`crate::setup::load_prepared`]).
pub async fn load(
    runtime: &Runtime,
    arg: &Path,
    args: &SourceArgs,
    grants: tessera_runtime::Grants,
) -> Result<LoadedComponent, LoadFailure> {
    let fetched = resolve(arg, args).await.map_err(LoadFailure::Source)?;
    let prepared = runtime
        .prepare(fetched.bytes, &fetched.origin)
        .map_err(LoadFailure::Runtime)?;
    crate::setup::load_prepared(runtime, prepared, grants)
        .await
        .map_err(LoadFailure::Runtime)
}

/// `tessera components push NAME|SOURCE oci://…`: publishes a registered
/// component's active version (by name, from the local data directory) or
/// any component source as a Wasm OCI artifact, and prints the pinned
/// reference that pulls exactly it.
pub async fn push(
    global: &GlobalArgs,
    through_server: bool,
    component: &Path,
    target: &str,
    args: &SourceArgs,
) -> i32 {
    match push_inner(global, through_server, component, target, args).await {
        Ok(()) => exit::OK,
        Err(f) => {
            eprintln!("error: {f}");
            f.code
        }
    }
}

async fn push_inner(
    global: &GlobalArgs,
    through_server: bool,
    component: &Path,
    target: &str,
    args: &SourceArgs,
) -> Result<(), Failure> {
    let Some(rest) = target.strip_prefix("oci://") else {
        return Err(bad(format!(
            "{target}: a push target is an OCI reference, oci://host[:port]/repository[:tag]"
        )));
    };
    let target = OciRef::parse(rest)?;
    let options = args.options().map_err(bad)?;
    let name = component
        .to_str()
        .filter(|n| tessera_server::registry::valid_name(n) && !component.exists());
    let registered = match name {
        Some(n) if through_server => {
            return Err(bad(format!(
                "{n}: push reads registered components from the local data directory, not through --server; push the component's file, URL or reference instead"
            )));
        }
        Some(n) => {
            let registry =
                tessera_server::registry::Registry::open(&global.data).map_err(|e| Failure {
                    message: e.to_string(),
                    code: exit::INTERNAL,
                    kind: "registry",
                    path: None,
                })?;
            registry.get(n).ok().map(|entry| (registry, entry, n))
        }
        None => None,
    };
    let (bytes, origin) = match registered {
        Some((registry, entry, n)) => {
            let v = entry.active_version();
            let bytes = registry.bytes(&v.digest).map_err(|e| Failure {
                message: e.to_string(),
                code: exit::INTERNAL,
                kind: "registry",
                path: None,
            })?;
            if let Some(expected) = &options.digest
                && expected.as_str() != v.digest
            {
                return Err(bad(format!(
                    "{n} v{}: digest mismatch: expected {expected}, got {}; refused",
                    entry.active, v.digest
                )));
            }
            (bytes, format!("{n} v{}", entry.active))
        }
        None => {
            let fetched = resolve(component, args).await?;
            (fetched.bytes, fetched.origin)
        }
    };
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    spinner.set_message(format!("pushing {origin} to {target}"));
    spinner.enable_steady_tick(Duration::from_millis(100));
    let pushed = tessera_source::push(bytes, &origin, &target, &options).await;
    spinner.finish_and_clear();
    let pushed = pushed?;
    println!("{}", pushed.reference);
    eprintln!(
        "pushed {origin}: component {}, manifest {}",
        pushed.layer_digest, pushed.manifest_digest
    );
    Ok(())
}
