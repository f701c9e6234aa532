//! `wasi:cli/environment`: environment variables, arguments and the initial
//! working directory, answered by the gateway.
//!
//! Manifest keys: `[env]` (`set`, `inherit`) and `args`. The guest sees
//! exactly the granted variables. Values set in the manifest are journaled
//! as they are; values inherited from the host environment are resolved
//! when the component is loaded and are treated as secrets: a journal holds
//! only a redaction marker and a keyed digest, and a replay takes the value
//! from its own host environment and checks it against the digest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wasmtime::StoreContextMut;
use wasmtime::component::Linker;
use wasmtime_wasi::WasiCtxBuilder;

use super::{BindError, Capability, Effects, HostConfig, Section};
use crate::gateway::{Gateway, Op, Sealed, Step};
use crate::host::HostState;
use crate::manifest::ManifestError;

/// The `wasi:cli/environment` instance whose functions are replaced.
/// Guests importing any `0.2.x` version link against it.
pub const CLI_ENVIRONMENT: &str = "wasi:cli/environment@0.2.12";

/// The environment capability.
#[derive(Debug)]
pub struct Env;

/// Environment variables and arguments the guest may see.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvGrant {
    /// Variables set by the manifest, by name.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Names of host variables passed through (a name unset on the host is
    /// simply not passed).
    #[serde(default)]
    pub inherit: Vec<String>,
    /// Command-line arguments (`argv[1..]`).
    #[serde(default)]
    pub args: Vec<String>,
    /// The program name the guest sees as `argv[0]` (`tessera run` sets
    /// the component's file name); by default the function's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// The inherited values, resolved from the host when the component is
    /// loaded. Never serialized.
    #[serde(skip)]
    pub inherited: BTreeMap<String, String>,
}

impl EnvGrant {
    /// Every variable the guest sees, in name order, with its value.
    pub fn vars(&self) -> BTreeMap<&str, &str> {
        self.set
            .iter()
            .chain(self.inherited.iter())
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnv {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    inherit: Vec<String>,
}

/// `get-environment`: name/value pairs; inherited values are sealed.
pub struct Environment;
impl Op for Environment {
    const CAPABILITY: &'static str = "env";
    const NAME: &'static str = "environment";
    type Request = ();
    type Response = Vec<(String, Sealed)>;
}

/// `get-arguments` (`argv[0]` is the function name).
pub struct Arguments;
impl Op for Arguments {
    const CAPABILITY: &'static str = "env";
    const NAME: &'static str = "arguments";
    type Request = ();
    type Response = Vec<String>;
}

/// `initial-cwd`: always none (a guest has no working directory on the host).
pub struct InitialCwd;
impl Op for InitialCwd {
    const CAPABILITY: &'static str = "env";
    const NAME: &'static str = "initial-cwd";
    type Request = ();
    type Response = Option<String>;
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains(['=', '\0']) {
        Err(format!("`{name}` is not a valid environment variable name"))
    } else {
        Ok(())
    }
}

type Store<'a> = StoreContextMut<'a, HostState>;

fn environment(store: Store<'_>) -> wasmtime::Result<Vec<(String, String)>> {
    let gateway = &store.data().gateway;
    let grant = &gateway.grants().env;
    let key = &gateway.host().redaction_key;
    let index = gateway.reserve_index();
    let sealed = gateway.exchange_at::<Environment>(index, (), |_| {
        let mut vars: Vec<(String, Sealed)> = grant
            .set
            .iter()
            .map(|(k, v)| (k.clone(), Sealed::Plain(v.clone())))
            .chain(
                grant
                    .inherited
                    .iter()
                    .map(|(k, v)| (k.clone(), Sealed::secret(key, k, v.clone()))),
            )
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    })?;
    let mut out = Vec::with_capacity(sealed.len());
    for (name, value) in sealed {
        let v = value
            .reveal(key, &name, || grant.inherited.get(&name).cloned())
            .map_err(|reason| gateway.diverge_at::<Environment>(index, &(), reason))?;
        out.push((name, v));
    }
    Ok(out)
}

impl Capability for Env {
    const NAME: &'static str = "env";
    const MANIFEST_KEYS: &'static [&'static str] = &["env", "args"];
    type Grant = EnvGrant;
    type State = ();

    fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        let mut inst = super::shadowing(
            linker,
            CLI_ENVIRONMENT,
            &["get-environment", "get-arguments", "initial-cwd"],
        )?;
        inst.func_wrap("get-environment", |store: Store<'_>, (): ()| {
            Ok((environment(store)?,))
        })?;
        inst.func_wrap("get-arguments", |store: Store<'_>, (): ()| {
            let gateway = &store.data().gateway;
            let args = gateway.exchange::<Arguments>((), |_| {
                let grant = &gateway.grants().env;
                let argv0 = grant.program.clone();
                let mut args = vec![argv0.unwrap_or_else(|| gateway.scope().function.clone())];
                args.extend(grant.args.iter().cloned());
                args
            })?;
            Ok((args,))
        })?;
        inst.func_wrap("initial-cwd", |store: Store<'_>, (): ()| {
            Ok((store.data().gateway.exchange::<InitialCwd>((), |_| None)?,))
        })?;
        linker.allow_shadowing(false);
        Ok(())
    }

    fn grant(section: &Section<'_>) -> Result<EnvGrant, ManifestError> {
        let mut grant = EnvGrant {
            args: section.parse::<Vec<String>>("args")?.unwrap_or_default(),
            ..EnvGrant::default()
        };
        if let Some(raw) = section.parse::<RawEnv>("env")? {
            for (name, value) in raw.set {
                check_name(&name).map_err(|m| section.invalid(format!("env.set.{name}"), m))?;
                grant.set.insert(name, value);
            }
            for (i, name) in raw.inherit.into_iter().enumerate() {
                let field = format!("env.inherit[{i}]");
                check_name(&name).map_err(|m| section.invalid(field.clone(), m))?;
                if grant.set.contains_key(&name) {
                    return Err(section.invalid(field, format!("`{name}` is also in env.set")));
                }
                if !grant.inherit.contains(&name) {
                    grant.inherit.push(name);
                }
            }
        }
        Ok(grant)
    }

    fn bind(grant: &mut EnvGrant, _host: &HostConfig) -> Result<(), BindError> {
        grant.inherited = grant
            .inherit
            .iter()
            .filter_map(|name| std::env::var(name).ok().map(|v| (name.clone(), v)))
            .collect();
        Ok(())
    }

    fn state(_: &EnvGrant, _: &Gateway, _: &mut WasiCtxBuilder) -> Result<(), crate::Error> {
        Ok(())
    }

    fn effects(grant: &EnvGrant) -> Effects {
        Effects {
            reads: !grant.inherit.is_empty(),
            ..Effects::NONE
        }
    }

    fn describe(step: &Step) -> String {
        match &*step.op {
            "environment" => match <Vec<(String, Sealed)>>::deserialize(&step.response) {
                Ok(vars) => format!(
                    "{:<16} {}",
                    step.kind(),
                    vars.iter()
                        .map(|(k, v)| match v {
                            Sealed::Plain(v) => format!("{k}={v}"),
                            Sealed::Secret { .. } => format!("{k}=<redacted>"),
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
                Err(_) => super::generic_description(step),
            },
            _ => super::generic_description(step),
        }
    }
}
