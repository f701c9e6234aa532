//! Capabilities: every host interface a guest can import, each one module
//! with the same lifecycle.
//!
//! A capability (the [`Capability`] trait) is modelled on Spin's factors and
//! wasmtime's `WasiCtx`, with Tessera's one gateway in the middle:
//!
//! | step | what the capability provides |
//! | --- | --- |
//! | link | [`Capability::link`]: its WIT bindings, added to the one linker once |
//! | grant | [`Capability::grant`]: parses and validates its own manifest keys into a typed grant (unknown keys are load errors naming the field) |
//! | host | [`Capability::bind`]: checks the grant against the [`HostConfig`] — how the host provides it (secrets, backends); credentials live only there |
//! | state | [`Capability::state`]: the per-instance state built from the grant; it sees only its own |
//! | effects | [`Capability::effects`]: what the grant lets the guest do to the world, from which MCP annotations and policy context are derived |
//! | interactions | one [`Op`](crate::gateway::Op) per host operation, exchanged through the [`Gateway`]; [`Capability::describe`] renders its steps |
//!
//! The list in [`registry!`] below is the one registration point: adding a
//! capability is its module, one line there, its doc section and its tests.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use wasmtime::component::Linker;
use wasmtime_wasi::WasiCtxBuilder;

use crate::gateway::{Gateway, RedactionKey, Step};
use crate::host::HostState;
use crate::manifest::{Limits, ManifestError};

pub mod agent;
pub mod agent_wit;
pub mod clocks;
pub mod config;
pub mod coverage;
pub mod env;
pub mod files;
pub mod http;
pub mod keyvalue;
pub mod link;
pub mod llm;
pub mod logging;
pub mod nn;
pub mod random;
pub mod sockets;
pub mod stdio;

/// What a capability's grant lets a guest do to the world.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effects {
    /// Reads host state (files, configuration, environment).
    pub reads: bool,
    /// Changes host state (writable files, key-value writes).
    pub writes: bool,
    /// Reaches the network.
    pub network: bool,
    /// Causes side effects outside the host that cannot be undone or are
    /// not idempotent (an outbound request, a message, a paid model call).
    pub external: bool,
}

impl Effects {
    /// Nothing.
    pub const NONE: Effects = Effects {
        reads: false,
        writes: false,
        network: false,
        external: false,
    };

    /// Both sets of effects.
    pub fn union(self, o: Effects) -> Effects {
        Effects {
            reads: self.reads || o.reads,
            writes: self.writes || o.writes,
            network: self.network || o.network,
            external: self.external || o.external,
        }
    }

    /// Whether calls leave the world as they found it (MCP `readOnlyHint`).
    pub fn read_only(&self) -> bool {
        !self.writes && !self.external
    }
}

/// How the host provides capabilities: kept apart from grants. A manifest
/// says what a component may use; this says where it comes from. Nothing
/// here is ever written to a journal, an export or an audit line.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Values of `wasi:config` secrets, by name (`[config] secrets` in a
    /// manifest names them; the host supplies them).
    pub secrets: BTreeMap<String, String>,
    /// The key of the digests that stand in for secrets in journals.
    pub redaction_key: RedactionKey,
    /// Where key-value buckets live (`wasi:keyvalue`); `None`: no store,
    /// and a live bucket operation answers an error (a replay needs none).
    pub stores: Option<std::sync::Arc<tessera_store::Stores>>,
    /// The LLM providers that serve `tessera:agent/llm` (the `[llm]`
    /// settings of the data directory, keys included); `None`: none, and a
    /// live `chat` answers `unavailable` (a replay needs none).
    pub llm: Option<std::sync::Arc<llm::LlmProviders>>,
    /// The models that serve `wasi:nn` (`tessera models`); `None`: none,
    /// and a live load answers `not-found` (a replay needs none).
    pub nn: Option<std::sync::Arc<dyn nn::NnModels>>,
    /// The boundary policies every gateway decision consults after the
    /// grants (`crate::policy`); `None`: the grants alone decide.
    pub policy: Option<std::sync::Arc<crate::policy::PolicyEngine>>,
}

impl Default for HostConfig {
    /// No secrets; a random redaction key; no key-value store; no LLM
    /// providers; no models.
    fn default() -> Self {
        Self {
            secrets: BTreeMap::new(),
            redaction_key: RedactionKey::random(),
            stores: None,
            llm: None,
            nn: None,
            policy: None,
        }
    }
}

/// The manifest as a capability sees it: the whole top-level table, of
/// which it reads only the keys it declared.
pub struct Section<'a> {
    pub(crate) origin: &'a str,
    pub(crate) base: &'a Path,
    pub(crate) table: &'a toml::Table,
}

impl Section<'_> {
    /// Where the manifest came from (a path, or `<inline>`).
    pub fn origin(&self) -> &str {
        self.origin
    }

    /// The directory relative host paths resolve against.
    pub fn base(&self) -> &Path {
        self.base
    }

    /// A top-level key, deserialized (with unknown fields refused).
    pub fn parse<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, ManifestError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(v) => v
                .clone()
                .try_into()
                .map(Some)
                .map_err(|e: toml::de::Error| {
                    self.invalid(key, e.message().trim_end().replace('\n', " "))
                }),
        }
    }

    /// An error naming `field` (a dotted path such as `http.allowed_outbound_hosts[2]`).
    pub fn invalid(&self, field: impl Into<String>, message: impl Into<String>) -> ManifestError {
        ManifestError::Invalid {
            origin: self.origin.to_string(),
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A problem binding a grant to the host, naming the field of the grant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct BindError {
    /// The manifest field, e.g. `config.secrets[0]`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// One host capability. See the module documentation for the lifecycle.
pub trait Capability {
    /// The name in steps, audit events and docs.
    const NAME: &'static str;
    /// The top-level manifest keys it owns.
    const MANIFEST_KEYS: &'static [&'static str];
    /// What a manifest grants it.
    type Grant: std::fmt::Debug
        + Clone
        + Default
        + PartialEq
        + Serialize
        + serde::de::DeserializeOwned
        + Send
        + Sync;
    /// Its per-instance state.
    type State: Send;

    /// Adds its bindings to the linker (after wasmtime-wasi's, which it may
    /// shadow only through [`shadow`]).
    fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()>;

    /// Parses its manifest keys.
    fn grant(section: &Section<'_>) -> Result<Self::Grant, ManifestError>;

    /// Checks the grant against the host configuration at load time and
    /// resolves what the host supplies.
    fn bind(_grant: &mut Self::Grant, _host: &HostConfig) -> Result<(), BindError> {
        Ok(())
    }

    /// Builds the per-instance state.
    fn state(
        grant: &Self::Grant,
        gateway: &Gateway,
        wasi: &mut WasiCtxBuilder,
    ) -> Result<Self::State, crate::Error>;

    /// What the grant lets the guest do to the world.
    fn effects(grant: &Self::Grant) -> Effects;

    /// One line for a step of this capability (`tessera runs show`).
    fn describe(step: &Step) -> String {
        generic_description(step)
    }

    /// The grant to replay a run under, given its recorded steps and a
    /// scratch directory (files rebuild the mounts there).
    fn for_replay(
        grant: &Self::Grant,
        _steps: &[(u64, Step)],
        _scratch: &Path,
    ) -> Result<Self::Grant, String> {
        Ok(grant.clone())
    }
}

/// Step rendering for a capability without its own: `op request -> response`.
pub fn generic_description(step: &Step) -> String {
    let mut s = format!("{:<16}", step.kind());
    if !step.request.is_null() {
        s.push(' ');
        s.push_str(&compact(&step.request));
    }
    if !step.response.is_null() {
        s.push_str(" -> ");
        s.push_str(&compact(&step.response));
    }
    s
}

fn compact(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 120 {
        format!("{}…", s.chars().take(120).collect::<String>())
    } else {
        s
    }
}

/// The manifest keys that belong to the runtime, not to a capability.
pub(crate) const RUNTIME_KEYS: &[&str] = &["limits", "deterministic", "seed", "tools"];

/// Declares the capabilities: the one list every lifecycle step iterates.
macro_rules! registry {
    ($($field:ident: $cap:ty),* $(,)?) => {
        /// Everything a component is granted, validated and resolved: one
        /// typed grant per capability, the limits, and the deterministic
        /// switch.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        pub struct Grants {
            $(
                #[doc = concat!("The `", stringify!($field), "` capability's grant.")]
                #[serde(default)]
                pub $field: <$cap as Capability>::Grant,
            )*
            /// Limits.
            #[serde(default)]
            pub limits: Limits,
            /// Deterministic execution: `Some(seed)` makes clocks virtual
            /// (driven by fuel), random bytes a PRNG seeded with `seed`, and
            /// the deadline a fuel deadline only.
            #[serde(default)]
            pub deterministic: Option<u64>,
            /// Which functions a server offers and how it presents them
            /// (`[tools]`): not a grant, but read from the same manifest.
            #[serde(default, skip_serializing_if = "crate::tools::ToolCuration::is_default")]
            pub tools: crate::tools::ToolCuration,
        }

        /// The per-instance states of every capability (`()` for those
        /// that need none, which nothing reads).
        #[allow(dead_code)]
        pub struct States {
            $(pub(crate) $field: <$cap as Capability>::State,)*
        }

        /// The names of the registered capabilities, in registration order.
        pub const NAMES: &[&str] = &[$(<$cap as Capability>::NAME,)*];

        pub(crate) fn manifest_keys() -> Vec<&'static str> {
            let mut keys: Vec<&'static str> = RUNTIME_KEYS.to_vec();
            $(keys.extend_from_slice(<$cap as Capability>::MANIFEST_KEYS);)*
            keys
        }

        impl Grants {
            pub(crate) fn parse_capabilities(
                section: &Section<'_>,
                limits: Limits,
                deterministic: Option<u64>,
                tools: crate::tools::ToolCuration,
            ) -> Result<Self, ManifestError> {
                Ok(Self {
                    $($field: <$cap as Capability>::grant(section)?,)*
                    limits,
                    deterministic,
                    tools,
                })
            }

            /// What these grants let a guest do to the world.
            pub fn effects(&self) -> Effects {
                Effects::NONE $(.union(<$cap as Capability>::effects(&self.$field)))*
            }

            /// Checks every grant against the host and resolves what the
            /// host supplies (inherited environment values, secrets).
            pub fn bind(&mut self, host: &HostConfig) -> Result<(), BindError> {
                $(<$cap as Capability>::bind(&mut self.$field, host)?;)*
                Ok(())
            }

            /// The grants to replay a run under: each capability adapts its
            /// own (files rebuild their mounts under `scratch`).
            pub fn for_replay(&self, steps: &[(u64, Step)], scratch: &Path) -> Result<Self, String> {
                Ok(Self {
                    $($field: <$cap as Capability>::for_replay(&self.$field, steps, scratch)?,)*
                    limits: self.limits,
                    deterministic: self.deterministic,
                    tools: self.tools.clone(),
                })
            }
        }

        impl States {
            pub(crate) fn new(
                grants: &Grants,
                gateway: &Gateway,
                wasi: &mut WasiCtxBuilder,
            ) -> Result<Self, crate::Error> {
                Ok(Self {
                    $($field: <$cap as Capability>::state(&grants.$field, gateway, wasi)?,)*
                })
            }
        }

        /// Links every capability into `linker`.
        pub(crate) fn link_all(linker: &mut Linker<HostState>) -> Result<(), crate::Error> {
            $(
                <$cap as Capability>::link(linker).map_err(|e| crate::Error::Link {
                    origin: "<host>".into(),
                    message: format!("linking the `{}` capability: {e:#}", <$cap as Capability>::NAME),
                    unresolved: Vec::new(),
                    exports: Vec::new(),
                })?;
            )*
            Ok(())
        }

        /// One line for a step, rendered by the capability that made it.
        pub fn describe(step: &Step) -> String {
            $(
                if step.capability == <$cap as Capability>::NAME {
                    return <$cap as Capability>::describe(step);
                }
            )*
            generic_description(step)
        }
    };
}

registry! {
    clocks: clocks::Clocks,
    random: random::Random,
    env: env::Env,
    stdio: stdio::Stdio,
    logging: logging::Logging,
    files: files::Files,
    http: http::Http,
    sockets: sockets::Sockets,
    config: config::Config,
    keyvalue: keyvalue::KeyValue,
    llm: llm::Llm,
    nn: nn::Nn,
    agent: agent::Agent,
    link: link::Link,
}

/// Opens `instance` for replacing the functions `names` that wasmtime-wasi
/// (or wasmtime-wasi-http) defined with the gateway's own. Refuses a name
/// that was not defined before: if a wasmtime upgrade moves an interface to
/// another version, linking fails at startup instead of leaving the
/// original in place as a bypass. Call `linker.allow_shadowing(false)` when
/// done.
pub(crate) fn shadowing<'a>(
    linker: &'a mut Linker<HostState>,
    instance: &str,
    names: &[&str],
) -> wasmtime::Result<wasmtime::component::LinkerInstance<'a, HostState>> {
    linker.allow_shadowing(false);
    for name in names {
        let mut inst = linker.instance(instance)?;
        let probe = inst.func_wrap(
            name,
            |_: wasmtime::StoreContextMut<'_, HostState>, (): ()| Ok(()),
        );
        if probe.is_ok() {
            wasmtime::bail!(
                "`{instance}#{name}` was not defined before the gateway replaced it; \
                 the WASI version Tessera wraps must match the one wasmtime-wasi provides"
            );
        }
    }
    linker.allow_shadowing(true);
    linker.instance(instance)
}
