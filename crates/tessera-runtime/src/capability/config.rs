//! `wasi:config/store@0.2.0-draft`: configuration values from the manifest,
//! secrets from the host.
//!
//! Manifest key: `[config]` with `values` (a table of plain values) and
//! `secrets` (names only). The host supplies each secret's value
//! ([`HostConfig::secrets`]: the CLI's `--secret NAME=VALUE`, a secrets
//! file, or `TESSERA_SECRET_<NAME>`); a component whose manifest names a
//! secret the host does not provide fails to load, naming the field.
//!
//! Besides its manifest's, a call may be given values by its caller
//! ([`crate::CallOptions::context`]) under keys starting with `tessera.`: a
//! plan step's `tessera.idempotency_key`, `tessera.plan.run`,
//! `tessera.plan.step`, `tessera.plan.attempt`. A manifest cannot set those
//! keys.
//!
//! Every read is a step. Plain values are journaled; a secret is journaled
//! only as a redaction marker with a keyed digest, and a replay takes the
//! value from its own host and checks it against the digest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wasmtime::component::Linker;
use wasmtime_wasi::WasiCtxBuilder;

use super::{BindError, Capability, Effects, HostConfig, Section};
use crate::gateway::{Gateway, Op, Sealed, Step};
use crate::host::HostState;
use crate::manifest::ManifestError;

#[allow(missing_docs)]
mod bindings {
    wasmtime::component::bindgen!({
        inline: "
            package wasi:config@0.2.0-draft;

            interface store {
                variant error {
                    upstream(string),
                    io(string),
                }
                get: func(key: string) -> result<option<string>, error>;
                get-all: func() -> result<list<tuple<string, string>>, error>;
            }

            world host {
                import store;
            }
        ",
        imports: { default: trappable },
    });
}

use bindings::wasi::config::store::Error as StoreError;

/// The configuration capability.
#[derive(Debug)]
pub struct Config;

/// The configuration a component may read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigGrant {
    /// Plain values, by key (from the manifest; journaled as they are).
    #[serde(default)]
    pub values: BTreeMap<String, String>,
    /// Keys whose values the host supplies as secrets.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// The secrets' values, resolved from the host when the component is
    /// loaded. Never serialized.
    #[serde(skip)]
    pub resolved: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    values: BTreeMap<String, String>,
    #[serde(default)]
    secrets: Vec<String>,
}

/// `store.get`.
pub struct Get;
impl Op for Get {
    const CAPABILITY: &'static str = "config";
    const NAME: &'static str = "get";
    type Request = String;
    type Response = Option<Sealed>;
}

/// `store.get-all`.
pub struct GetAll;
impl Op for GetAll {
    const CAPABILITY: &'static str = "config";
    const NAME: &'static str = "get-all";
    type Request = ();
    type Response = Vec<(String, Sealed)>;
}

/// Keys of the values a caller gives one call ([`crate::CallOptions::context`]):
/// reserved, a manifest cannot set them.
pub const CONTEXT_PREFIX: &str = "tessera.";

fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.chars().any(char::is_control) {
        Err(format!("`{key}` is not a valid configuration key"))
    } else if key.starts_with(CONTEXT_PREFIX) {
        Err(format!(
            "`{key}`: keys starting with `{CONTEXT_PREFIX}` are reserved for the values the host gives a call (a plan step's idempotency key)"
        ))
    } else {
        Ok(())
    }
}

impl ConfigGrant {
    fn lookup(&self, gateway: &Gateway, key: &str) -> Option<Sealed> {
        if let Some(v) = self.values.get(key) {
            return Some(Sealed::Plain(v.clone()));
        }
        if key.starts_with(CONTEXT_PREFIX)
            && let Some(v) = gateway.context(key)
        {
            return Some(Sealed::Plain(v.to_string()));
        }
        self.resolved
            .get(key)
            .map(|v| Sealed::secret(&gateway.host().redaction_key, key, v.clone()))
    }

    fn reveal(&self, gateway: &Gateway, key: &str, v: &Sealed) -> Result<String, String> {
        v.reveal(&gateway.host().redaction_key, key, || {
            self.resolved.get(key).cloned()
        })
    }
}

impl bindings::wasi::config::store::Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, StoreError>> {
        let gateway = &self.gateway;
        let grant = &gateway.grants().config;
        let index = gateway.reserve_index();
        let got = gateway.exchange_at::<Get>(index, key.clone(), |k| grant.lookup(gateway, k))?;
        match got {
            None => Ok(Ok(None)),
            Some(v) => {
                let value = grant
                    .reveal(gateway, &key, &v)
                    .map_err(|reason| gateway.diverge_at::<Get>(index, &key, reason))?;
                Ok(Ok(Some(value)))
            }
        }
    }

    fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, StoreError>> {
        let gateway = &self.gateway;
        let grant = &gateway.grants().config;
        let index = gateway.reserve_index();
        let context = gateway.context_values();
        let all = gateway.exchange_at::<GetAll>(index, (), |_| {
            let mut keys: Vec<&String> = grant
                .values
                .keys()
                .chain(grant.resolved.keys())
                .chain(
                    context
                        .iter()
                        .map(|(k, _)| k)
                        .filter(|k| k.starts_with(CONTEXT_PREFIX)),
                )
                .collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .filter_map(|k| grant.lookup(gateway, k).map(|v| (k.clone(), v)))
                .collect()
        })?;
        let mut out = Vec::with_capacity(all.len());
        for (k, v) in all {
            let value = grant
                .reveal(gateway, &k, &v)
                .map_err(|reason| gateway.diverge_at::<GetAll>(index, &(), reason))?;
            out.push((k, value));
        }
        Ok(Ok(out))
    }
}

impl Capability for Config {
    const NAME: &'static str = "config";
    const MANIFEST_KEYS: &'static [&'static str] = &["config"];
    type Grant = ConfigGrant;
    type State = ();

    fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        bindings::wasi::config::store::add_to_linker::<
            HostState,
            wasmtime::component::HasSelf<HostState>,
        >(linker, |s| s)
    }

    fn grant(section: &Section<'_>) -> Result<ConfigGrant, ManifestError> {
        let Some(raw) = section.parse::<RawConfig>("config")? else {
            return Ok(ConfigGrant::default());
        };
        for key in raw.values.keys() {
            check_key(key).map_err(|m| section.invalid(format!("config.values.{key}"), m))?;
        }
        let mut secrets: Vec<String> = Vec::new();
        for (i, key) in raw.secrets.into_iter().enumerate() {
            let field = format!("config.secrets[{i}]");
            check_key(&key).map_err(|m| section.invalid(field.clone(), m))?;
            if raw.values.contains_key(&key) {
                return Err(section.invalid(field, format!("`{key}` is also in config.values")));
            }
            if secrets.contains(&key) {
                return Err(section.invalid(field, format!("`{key}` is listed twice")));
            }
            secrets.push(key);
        }
        Ok(ConfigGrant {
            values: raw.values,
            secrets,
            resolved: BTreeMap::new(),
        })
    }

    fn bind(grant: &mut ConfigGrant, host: &HostConfig) -> Result<(), BindError> {
        grant.resolved.clear();
        for (i, key) in grant.secrets.iter().enumerate() {
            match host.secrets.get(key) {
                Some(v) => {
                    grant.resolved.insert(key.clone(), v.clone());
                }
                None => {
                    return Err(BindError {
                        field: format!("config.secrets[{i}]"),
                        message: format!(
                            "secret `{key}` is not provided by the host (give it with --secret {key}=… or a secrets file)"
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    fn state(_: &ConfigGrant, _: &Gateway, _: &mut WasiCtxBuilder) -> Result<(), crate::Error> {
        Ok(())
    }

    fn effects(grant: &ConfigGrant) -> Effects {
        Effects {
            reads: !grant.values.is_empty() || !grant.secrets.is_empty(),
            ..Effects::NONE
        }
    }

    fn describe(step: &Step) -> String {
        let show = |v: &Sealed| match v {
            Sealed::Plain(v) => format!("{v:?}"),
            Sealed::Secret { .. } => "<redacted>".to_string(),
        };
        let what = match &*step.op {
            "get" => match <Option<Sealed>>::deserialize(&step.response) {
                Ok(v) => format!(
                    "{} -> {}",
                    step.request.as_str().unwrap_or("?"),
                    v.as_ref().map(show).unwrap_or_else(|| "none".into())
                ),
                Err(_) => return super::generic_description(step),
            },
            "get-all" => match <Vec<(String, Sealed)>>::deserialize(&step.response) {
                Ok(all) => all
                    .iter()
                    .map(|(k, v)| format!("{k}={}", show(v)))
                    .collect::<Vec<_>>()
                    .join(" "),
                Err(_) => return super::generic_description(step),
            },
            _ => return super::generic_description(step),
        };
        format!("{:<16} {what}", step.kind())
    }
}
