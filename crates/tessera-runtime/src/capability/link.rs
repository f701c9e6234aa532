//! Composition: a component's imports served by another component's
//! exports (`[imports]`).
//!
//! ```toml
//! [imports]
//! # a registered component (through a server's registry)
//! "example:text/transform" = "text-provider"
//! # or a file, with the provider's own manifest
//! "example:text/transform" = { component = "text-provider.wasm", manifest = "provider.toml" }
//! ```
//!
//! Each key is an interface the component imports (`namespace:package/name`,
//! a version optional: without one it matches the import at any version).
//! Each value names the provider: a registry name, or a `.wasm` file
//! (relative to the manifest) with an optional manifest of its own. An
//! interface the host provides (`wasi:*`, `tessera:agent/*`) cannot be
//! mapped.
//!
//! How it works. wasmtime links a component's imports by name, so the
//! interface is defined in a linker of the consumer's own (the runtime's
//! linker, cloned) with one dynamic host function per imported function
//! ([`wasmtime::component::LinkerInstance::func_new_async`]). A call of one:
//!
//! 1. turns the arguments into JSON with the consumer's import types;
//! 2. is a gateway step ([`LinkedCallOp`]): replaying, the answer comes from
//!    the journal and no provider is contacted;
//! 3. live, resolves the provider *now* (so a provider swapped in a
//!    registry serves the next call: hot swap), checks its types against
//!    the import (once per provider digest), and calls the function in a
//!    fresh instance of the provider, under the provider's grants and
//!    limits, not the consumer's — through the caller's [`LinkedCalls`] when
//!    one is given (the journal records the provider's call as a run of its
//!    own, linked to the consumer's step), else directly;
//! 4. answers the consumer with the result converted to its result type,
//!    or traps it, naming both sides, when the provider failed.
//!
//! The two components are separate instances in separate stores: no
//! memory, grant or limit crosses the link, only values. Resources
//! (handles) cannot cross it, so an interface with resource types is
//! refused at load. Types are compared structurally (names of fields,
//! cases and parameters included), so the two sides may come from
//! different toolchains and languages.
//!
//! The interface's types are checked when the consumer is loaded (its
//! providers must be there then: a file is loaded with it, a registry name
//! must be registered) and again when a provider first serves it with a
//! different digest; an import whose provider is missing, does not export
//! the interface, or whose types differ is an [`crate::Error::Compose`]
//! naming the consumer, the interface and the provider.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use wasmtime::Engine;
use wasmtime::component::types::{ComponentFunc, ComponentInstance, ComponentItem, Type};
use wasmtime::component::{Component, Linker, Val};
use wasmtime_wasi::WasiCtxBuilder;

use super::agent::ComponentSpec;
use super::{Capability, Effects, Section};
use crate::gateway::{Gateway, Op, Step};
use crate::host::HostState;
use crate::manifest::{Grants, ManifestError};
use crate::schema::wit_type;
use crate::{CallOptions, CallOutcome, LoadedComponent, Runtime};

/// How deep linked calls may nest (a consumer's provider calling its own
/// provider, …): a cycle of registry names ends here instead of recursing.
pub const MAX_LINK_DEPTH: u32 = 8;

/// The composition capability.
#[derive(Debug)]
pub struct Link;

/// What `[imports]` grants: the provider of each imported interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportsGrant {
    /// Provider by interface (`namespace:package/name`, version optional).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub providers: BTreeMap<String, ComponentSpec>,
    /// Set for a replay: every linked call is answered from the journal,
    /// so no provider is resolved or checked. Never serialized.
    #[serde(skip)]
    pub offline: bool,
}

impl ImportsGrant {
    /// Whether nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    component: String,
    #[serde(default)]
    manifest: Option<String>,
}

/// `ns:pkg/name` with an optional `@version`; lowercase kebab-case parts.
fn check_interface(name: &str) -> Result<(), String> {
    let base = base_name(name);
    let part = |s: &str| {
        !s.is_empty()
            && s.split('-').all(|w| {
                !w.is_empty()
                    && w.starts_with(|c: char| c.is_ascii_lowercase())
                    && w.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            })
    };
    let ok = match base.split_once(':') {
        Some((ns, rest)) => match rest.split_once('/') {
            Some((pkg, iface)) => part(ns) && part(pkg) && part(iface),
            None => false,
        },
        None => false,
    };
    if !ok {
        return Err(format!(
            "`{name}` is not an interface name (`namespace:package/interface`, optionally `@version`)"
        ));
    }
    if let Some(v) = name.split_once('@').map(|(_, v)| v)
        && !is_version(v)
    {
        return Err(format!("`{name}`: `{v}` is not a semantic version"));
    }
    if crate::imports::PROVIDED.iter().any(|p| p.interface == base) {
        return Err(format!(
            "`{base}` is provided by the host (its grants govern it); `[imports]` maps only \
             interfaces another component provides"
        ));
    }
    Ok(())
}

/// `major.minor.patch`, with an optional `-pre` and `+build` part.
fn is_version(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// An interface name without its version.
pub fn base_name(name: &str) -> &str {
    name.split_once('@').map_or(name, |(b, _)| b)
}

/// Whether the `[imports]` key `key` names the import `import`.
fn key_matches(key: &str, import: &str) -> bool {
    key == import || (!key.contains('@') && base_name(import) == key)
}

impl Capability for Link {
    const NAME: &'static str = "link";
    const MANIFEST_KEYS: &'static [&'static str] = &["imports"];
    type Grant = ImportsGrant;
    type State = ();

    fn link(_linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        // Per component: see `Bindings::define`.
        Ok(())
    }

    fn grant(section: &Section<'_>) -> Result<ImportsGrant, ManifestError> {
        let Some(value) = section.table.get("imports") else {
            return Ok(ImportsGrant::default());
        };
        let Some(table) = value.as_table() else {
            return Err(section.invalid(
                "imports",
                "expected a table of interface = provider (`[imports]`)",
            ));
        };
        let mut providers = BTreeMap::new();
        for (key, v) in table {
            let field = format!("imports.\"{key}\"");
            check_interface(key).map_err(|m| section.invalid(&field, m))?;
            let raw = match v {
                toml::Value::String(s) => RawProvider {
                    component: s.clone(),
                    manifest: None,
                },
                toml::Value::Table(_) => v.clone().try_into().map_err(|e: toml::de::Error| {
                    section.invalid(&field, e.message().trim_end().replace('\n', " "))
                })?,
                _ => {
                    return Err(section.invalid(
                        &field,
                        "expected a registry name, a `.wasm` path, or { component, manifest }",
                    ));
                }
            };
            let spec = super::agent::component_spec(
                section,
                &field,
                &raw.component,
                raw.manifest.as_deref(),
            )?;
            if spec.is_file() {
                for (what, path) in [
                    ("component", Some(&spec.component)),
                    ("manifest", spec.manifest.as_ref()),
                ] {
                    if let Some(p) = path
                        && !Path::new(p).is_file()
                    {
                        return Err(section
                            .invalid(format!("{field}.{what}"), format!("no such file: {p}")));
                    }
                }
            }
            providers.insert(key.clone(), spec);
        }
        // Two keys for one interface (with and without a version) would
        // leave the choice to the order of the table.
        let mut bases = HashSet::new();
        for key in providers.keys() {
            if !bases.insert(base_name(key)) {
                return Err(section.invalid(
                    format!("imports.\"{key}\""),
                    format!("`{}` is mapped twice", base_name(key)),
                ));
            }
        }
        Ok(ImportsGrant {
            providers,
            offline: false,
        })
    }

    fn state(
        _grant: &ImportsGrant,
        _gateway: &Gateway,
        _wasi: &mut WasiCtxBuilder,
    ) -> Result<(), crate::Error> {
        Ok(())
    }

    /// What a provider does is its grants' business, and a registered
    /// provider can be swapped for one granted more: a component with
    /// `[imports]` is counted as doing anything (no read-only hint).
    fn effects(grant: &ImportsGrant) -> Effects {
        if grant.is_empty() {
            Effects::NONE
        } else {
            Effects {
                reads: true,
                writes: true,
                network: true,
                external: true,
            }
        }
    }

    fn describe(step: &Step) -> String {
        let (Ok(q), Ok(r)) = (
            LinkRequest::deserialize(&step.request),
            LinkResponse::deserialize(&step.response),
        ) else {
            return super::generic_description(step);
        };
        let digest = r.digest.strip_prefix("sha256:").unwrap_or(&r.digest);
        let mut s = format!(
            "link    {}#{} {} -> {} ({})",
            q.interface,
            q.function,
            q.args,
            r.provider,
            digest.chars().take(12).collect::<String>()
        );
        if let Some(run) = &r.run {
            s.push_str(&format!(" run {run}"));
        }
        match &r.result {
            Ok(v) => s.push_str(&format!(": {v}")),
            Err(m) => s.push_str(&format!(": failed: {m}")),
        }
        s
    }

    fn for_replay(
        grant: &ImportsGrant,
        _steps: &[(u64, Step)],
        _scratch: &Path,
    ) -> Result<ImportsGrant, String> {
        Ok(ImportsGrant {
            providers: grant.providers.clone(),
            offline: true,
        })
    }
}

/// A linked call as the consumer made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRequest {
    /// The interface, as the consumer imports it (with its version).
    pub interface: String,
    /// The function's name in the interface.
    pub function: String,
    /// The arguments, by parameter name, as Tessera's JSON.
    pub args: Value,
}

/// A linked call's answer, with who gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkResponse {
    /// The provider: its registry name or file.
    pub provider: String,
    /// The provider version's digest (`sha256:…`; empty when no provider
    /// could be resolved).
    pub digest: String,
    /// The provider's journal run, when the call was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// The result as Tessera's JSON (`null` for a function without one),
    /// or why the provider gave none (which traps the consumer).
    pub result: Result<Value, String>,
}

/// A call through an import link: one step of the consumer.
pub struct LinkedCallOp;

impl Op for LinkedCallOp {
    const CAPABILITY: &'static str = "link";
    const NAME: &'static str = "call";
    type Request = LinkRequest;
    type Response = LinkResponse;
}

/// A provider's call, as [`LinkedCalls::call`] is given it.
#[derive(Debug, Clone)]
pub struct LinkedCall {
    /// The consumer's component digest.
    pub consumer: String,
    /// The consumer's function being run when it made the call.
    pub consumer_function: String,
    /// The consumer's step index of the call.
    pub step: u64,
    /// The interface, as the consumer imports it.
    pub interface: String,
    /// The provider's function (qualified name).
    pub function: String,
    /// The arguments.
    pub args: Value,
}

/// The future [`LinkedCalls::call`] returns: the provider's journal run,
/// if it recorded one, and the outcome; or why the call could not be made
/// or recorded (the consumer traps with it).
pub type LinkedFuture<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<(Option<String>, CallOutcome), String>> + Send + 'a,
    >,
>;

/// Runs the provider's side of linked calls for a caller that wants them
/// recorded ([`CallOptions::links`]): the journal records each as a run of
/// its own, linked to the consumer's run and step.
pub trait LinkedCalls: Send + Sync {
    /// Calls `call.function` of `provider` with `options` (which carry the
    /// nesting depth; keep it).
    fn call<'a>(
        &'a self,
        provider: &'a LoadedComponent,
        call: LinkedCall,
        options: CallOptions,
    ) -> LinkedFuture<'a>;
}

/// Where registry names in `[imports]` are resolved: a server's registry.
/// Resolved again at every live linked call, so a provider swapped in the
/// registry serves the consumer's next call.
pub trait Providers: Send + Sync {
    /// The component `name` is now; `Ok(None)` when it is registered but
    /// not loaded yet (a server starting): a consumer loaded meanwhile is
    /// checked at its first call instead, and a call meanwhile fails.
    fn provider(&self, name: &str) -> Result<Option<LoadedComponent>, String>;
}

/// One imported interface and its provider, as a consumer was loaded with.
pub(crate) struct Binding {
    /// The consumer (its origin) and digest.
    consumer: String,
    /// The interface as the consumer imports it (with its version).
    import: String,
    /// The consumer's view of the interface.
    ty: ComponentInstance,
    spec: ComponentSpec,
    /// A file provider, loaded with the consumer.
    fixed: Option<LoadedComponent>,
    /// Provider digests whose types were found to match.
    checked: Mutex<HashSet<String>>,
    engine: Engine,
    runtime: Runtime,
    offline: bool,
}

/// The links of one consumer.
pub(crate) struct Bindings(Vec<Arc<Binding>>);

impl Binding {
    fn provider_name(&self) -> String {
        self.spec.component.clone()
    }

    fn fail(&self, message: impl Into<String>) -> crate::Error {
        crate::Error::Compose {
            consumer: self.consumer.clone(),
            interface: self.import.clone(),
            provider: self.provider_name(),
            message: message.into(),
        }
    }

    /// The provider now: the file loaded with the consumer, or the
    /// registry's current version.
    fn resolve(&self) -> Result<Option<LoadedComponent>, crate::Error> {
        if let Some(p) = &self.fixed {
            return Ok(Some(p.clone()));
        }
        match self.runtime.providers() {
            Some(p) => p.provider(&self.spec.component).map_err(|m| self.fail(m)),
            None => Err(self.fail(
                "it is a registry name, and this runtime has no registry (outside a server, \
                 name a `.wasm` file: { component = \"provider.wasm\", manifest = \"provider.toml\" })",
            )),
        }
    }

    /// Checks `provider`'s export of the interface against the import,
    /// once per provider digest.
    fn check(&self, provider: &LoadedComponent) -> Result<(), crate::Error> {
        let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        if checked.contains(provider.digest()) {
            return Ok(());
        }
        let component = provider.pre.component();
        let export = component
            .component_type()
            .exports(&self.engine)
            .find(|(n, _)| base_name(n) == base_name(&self.import))
            .map(|(n, item)| (n.to_string(), item.ty));
        let Some((name, item)) = export else {
            let exported: Vec<String> = component
                .component_type()
                .exports(&self.engine)
                .map(|(n, _)| n.to_string())
                .collect();
            return Err(self.fail(format!(
                "{} does not export `{}` (it exports: {})",
                provider.origin(),
                base_name(&self.import),
                if exported.is_empty() {
                    "nothing".to_string()
                } else {
                    exported.join(", ")
                }
            )));
        };
        let ComponentItem::ComponentInstance(theirs) = item else {
            return Err(self.fail(format!(
                "{} exports `{name}`, but not as an interface",
                provider.origin()
            )));
        };
        let problems = compare_instances(&self.engine, &self.ty, &theirs);
        if !problems.is_empty() {
            return Err(self.fail(format!(
                "{} exports `{name}` with other types: {}",
                provider.origin(),
                problems.join("; ")
            )));
        }
        checked.insert(provider.digest().to_string());
        Ok(())
    }

    /// One call of `function`, made by the consumer whose gateway is
    /// `gateway`.
    async fn call(
        &self,
        gateway: &Gateway,
        function: &str,
        ty: ComponentFunc,
        params: &[Val],
        results: &mut [Val],
    ) -> wasmtime::Result<()> {
        let mut args = serde_json::Map::new();
        for ((name, t), v) in ty.params().zip(params) {
            args.insert(name.to_string(), crate::json::from_val(v, &t));
        }
        let request = LinkRequest {
            interface: self.import.clone(),
            function: function.to_string(),
            args: Value::Object(args),
        };
        let index = gateway.reserve_index();
        let response = match gateway.answer::<LinkedCallOp>(index, &request)? {
            Some(r) => r,
            None => self.live(gateway, index, &request).await,
        };
        gateway.report::<LinkedCallOp>(index, &request, &response);
        let value = response.result.map_err(|m| {
            wasmtime::Error::msg(format!(
                "linked call `{}#{function}` to {} failed: {m}",
                self.import, response.provider
            ))
        })?;
        if let (Some(t), Some(slot)) = (ty.results().next(), results.first_mut()) {
            *slot = crate::json::to_val(&value, &t, "result").map_err(|e| {
                wasmtime::Error::msg(format!(
                    "linked call `{}#{function}` to {}: the result does not fit the import: {e}",
                    self.import, response.provider
                ))
            })?;
        }
        Ok(())
    }

    /// The live half of a call: the provider resolved, checked and called.
    async fn live(&self, gateway: &Gateway, index: u64, request: &LinkRequest) -> LinkResponse {
        let mut response = LinkResponse {
            provider: self.provider_name(),
            digest: String::new(),
            run: None,
            result: Err(String::new()),
        };
        if self.offline {
            response.result = Err("replaying offline: the journal holds no answer here".into());
            return response;
        }
        let depth = gateway.link_depth();
        if depth >= MAX_LINK_DEPTH {
            response.result = Err(format!(
                "linked calls nest deeper than {MAX_LINK_DEPTH} (do two components import each other?)"
            ));
            return response;
        }
        let resolved = self.resolve().and_then(|p| {
            p.ok_or_else(|| self.fail("it is registered but still being loaded: try again"))
        });
        let provider = match resolved.and_then(|p| self.check(&p).map(|()| p)) {
            Ok(p) => p,
            Err(e) => {
                response.result = Err(e.to_string());
                return response;
            }
        };
        response.digest = provider.digest().to_string();
        let Some(f) = provider.functions().iter().find(|f| {
            f.name == request.function
                && f.interface
                    .as_deref()
                    .is_some_and(|i| base_name(i) == base_name(&self.import))
        }) else {
            response.result = Err(format!("{} lost `{}`", provider.origin(), request.function));
            return response;
        };
        let call = LinkedCall {
            consumer: gateway.scope().component,
            consumer_function: gateway.scope().function,
            step: index,
            interface: self.import.clone(),
            function: f.qualified_name(),
            args: request.args.clone(),
        };
        let options = CallOptions {
            link_depth: depth + 1,
            ..CallOptions::default()
        };
        let outcome = match gateway.links() {
            Some(links) => links.call(&provider, call, options).await,
            None => provider
                .call_json_with(&call.function, &call.args, options)
                .await
                .map(|o| (None, o))
                .map_err(|e| e.to_string()),
        };
        match outcome {
            Ok((run, o)) => {
                response.run = run;
                response.result = o.result.map_err(|e| e.to_string());
            }
            Err(e) => response.result = Err(e),
        }
        response
    }
}

impl Bindings {
    /// Resolves and checks the providers of `grants`' `[imports]` for
    /// `component` (loading file providers with `load`), or `None` when
    /// nothing is mapped.
    pub(crate) fn resolve(
        runtime: &Runtime,
        origin: &str,
        component: &Component,
        grants: &Grants,
        load: &mut dyn FnMut(&ComponentSpec) -> Result<LoadedComponent, crate::Error>,
    ) -> Result<Option<Bindings>, crate::Error> {
        let grant = &grants.link;
        if grant.is_empty() {
            return Ok(None);
        }
        let engine = runtime.engine();
        let imports: Vec<(String, ComponentItem)> = component
            .component_type()
            .imports(engine)
            .map(|(n, item)| (n.to_string(), item.ty))
            .collect();
        let mut out = Vec::new();
        for (key, spec) in &grant.providers {
            let fail = |message: String| crate::Error::Compose {
                consumer: origin.to_string(),
                interface: key.clone(),
                provider: spec.component.clone(),
                message,
            };
            let Some((import, item)) = imports.iter().find(|(n, _)| key_matches(key, n)) else {
                let names: Vec<&str> = imports.iter().map(|(n, _)| n.as_str()).collect();
                return Err(fail(format!(
                    "`[imports]` maps it, but the component does not import it (it imports: {})",
                    if names.is_empty() {
                        "nothing".to_string()
                    } else {
                        names.join(", ")
                    }
                )));
            };
            let ComponentItem::ComponentInstance(ty) = item else {
                return Err(fail(format!("`{import}` is not an interface")));
            };
            if let Some(r) = resources(engine, ty) {
                return Err(fail(format!(
                    "it has the resource type `{r}`; resources cannot cross a link (only values do)"
                )));
            }
            let fixed = if spec.is_file() && !grant.offline {
                Some(load(spec)?)
            } else {
                None
            };
            let binding = Binding {
                consumer: origin.to_string(),
                import: import.clone(),
                ty: ty.clone(),
                spec: spec.clone(),
                fixed,
                checked: Mutex::new(HashSet::new()),
                engine: engine.clone(),
                runtime: runtime.clone(),
                offline: grant.offline,
            };
            if !grant.offline
                && let Some(provider) = binding.resolve()?
            {
                binding.check(&provider)?;
            }
            out.push(Arc::new(binding));
        }
        Ok(Some(Bindings(out)))
    }

    /// A linker for the consumer: the runtime's, with each linked
    /// interface defined by dynamic functions that call its provider.
    pub(crate) fn define(&self, base: &Linker<HostState>) -> wasmtime::Result<Linker<HostState>> {
        let mut linker = base.clone();
        for b in &self.0 {
            let engine = b.engine.clone();
            let mut inst = linker.instance(&b.import)?;
            for (name, item) in b.ty.exports(&engine) {
                if !matches!(item.ty, ComponentItem::ComponentFunc(_)) {
                    continue;
                }
                let binding = b.clone();
                let function = name.to_string();
                inst.func_new_async(name, move |store, ty, params, results| {
                    let binding = binding.clone();
                    let function = function.clone();
                    let gateway = store.data().gateway.clone();
                    Box::new(
                        async move { binding.call(&gateway, &function, ty, params, results).await },
                    )
                })?;
            }
        }
        Ok(linker)
    }
}

/// The first resource type an interface exports, if any.
fn resources(engine: &Engine, ty: &ComponentInstance) -> Option<String> {
    ty.exports(engine).find_map(|(n, item)| match item.ty {
        ComponentItem::Resource(_) => Some(n.to_string()),
        _ => None,
    })
}

/// What differs between the consumer's view of an interface (`ours`) and
/// the provider's (`theirs`): each function the consumer imports must be
/// exported with the same parameter names and types and the same result.
fn compare_instances(
    engine: &Engine,
    ours: &ComponentInstance,
    theirs: &ComponentInstance,
) -> Vec<String> {
    let provided: BTreeMap<String, ComponentFunc> = theirs
        .exports(engine)
        .filter_map(|(n, item)| match item.ty {
            ComponentItem::ComponentFunc(f) => Some((n.to_string(), f)),
            _ => None,
        })
        .collect();
    let mut problems = Vec::new();
    for (name, item) in ours.exports(engine) {
        let ComponentItem::ComponentFunc(want) = item.ty else {
            continue;
        };
        let Some(have) = provided.get(name) else {
            problems.push(format!("no function `{name}`"));
            continue;
        };
        let wp: Vec<(&str, Type)> = want.params().collect();
        let hp: Vec<(&str, Type)> = have.params().collect();
        let sig = |ps: &[(&str, Type)]| {
            ps.iter()
                .map(|(n, t)| format!("{n}: {}", wit_type(t)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if wp.len() != hp.len() || wp.iter().zip(&hp).any(|((a, _), (b, _))| a != b) {
            problems.push(format!(
                "`{name}`: the consumer passes ({}), the provider takes ({})",
                sig(&wp),
                sig(&hp)
            ));
        } else {
            for ((pname, a), (_, b)) in wp.iter().zip(&hp) {
                if let Err(m) = same_type(a, b) {
                    problems.push(format!(
                        "`{name}` parameter `{pname}`: the consumer passes {}, the provider takes {} ({m})",
                        wit_type(a),
                        wit_type(b)
                    ));
                }
            }
        }
        let (wr, hr) = (want.results().next(), have.results().next());
        let describe = |t: &Option<Type>| t.as_ref().map_or("nothing".to_string(), wit_type);
        let differs = match (&wr, &hr) {
            (None, None) => None,
            (Some(a), Some(b)) => same_type(a, b).err(),
            _ => Some("one returns nothing".to_string()),
        };
        if let Some(m) = differs {
            problems.push(format!(
                "`{name}` result: the consumer expects {}, the provider returns {} ({m})",
                describe(&wr),
                describe(&hr)
            ));
        }
    }
    problems
}

/// Whether two types have the same shape: the same kinds, names of fields,
/// cases and flags, in the same order, all the way down.
fn same_type(a: &Type, b: &Type) -> Result<(), String> {
    let names = |x: Vec<String>, y: Vec<String>, what: &str| {
        if x == y {
            Ok(())
        } else {
            Err(format!("{what} {} vs {}", x.join(", "), y.join(", ")))
        }
    };
    let opt = |x: Option<Type>, y: Option<Type>| match (x, y) {
        (None, None) => Ok(()),
        (Some(x), Some(y)) => same_type(&x, &y),
        _ => Err("a payload on one side only".to_string()),
    };
    match (a, b) {
        (Type::List(x), Type::List(y)) => same_type(&x.ty(), &y.ty()),
        (Type::Option(x), Type::Option(y)) => same_type(&x.ty(), &y.ty()),
        (Type::Result(x), Type::Result(y)) => {
            opt(x.ok(), y.ok())?;
            opt(x.err(), y.err())
        }
        (Type::Record(x), Type::Record(y)) => {
            names(
                x.fields().map(|f| f.name.to_string()).collect(),
                y.fields().map(|f| f.name.to_string()).collect(),
                "fields",
            )?;
            for (f, g) in x.fields().zip(y.fields()) {
                same_type(&f.ty, &g.ty).map_err(|m| format!("field `{}`: {m}", f.name))?;
            }
            Ok(())
        }
        (Type::Tuple(x), Type::Tuple(y)) => {
            if x.types().len() != y.types().len() {
                return Err("tuples of different lengths".into());
            }
            for (s, t) in x.types().zip(y.types()) {
                same_type(&s, &t)?;
            }
            Ok(())
        }
        (Type::Variant(x), Type::Variant(y)) => {
            names(
                x.cases().map(|c| c.name.to_string()).collect(),
                y.cases().map(|c| c.name.to_string()).collect(),
                "cases",
            )?;
            for (c, d) in x.cases().zip(y.cases()) {
                opt(c.ty, d.ty).map_err(|m| format!("case `{}`: {m}", c.name))?;
            }
            Ok(())
        }
        (Type::Enum(x), Type::Enum(y)) => names(
            x.names().map(str::to_string).collect(),
            y.names().map(str::to_string).collect(),
            "enum cases",
        ),
        (Type::Flags(x), Type::Flags(y)) => names(
            x.names().map(str::to_string).collect(),
            y.names().map(str::to_string).collect(),
            "flags",
        ),
        (Type::Own(_) | Type::Borrow(_), _) | (_, Type::Own(_) | Type::Borrow(_)) => {
            Err("resources cannot cross a link".into())
        }
        (
            Type::Future(_)
            | Type::Stream(_)
            | Type::ErrorContext
            | Type::Map(_)
            | Type::FixedLengthList(_),
            _,
        ) => Err(format!("{} cannot cross a link yet", wit_type(a))),
        _ if std::mem::discriminant(a) == std::mem::discriminant(b) => Ok(()),
        _ => Err("different kinds".into()),
    }
}

/// The file providers of a consumer being loaded: each loaded with its own
/// manifest (or none: deny by default), refusing a cycle of files.
pub(crate) fn load_file_provider(
    runtime: &Runtime,
    spec: &ComponentSpec,
    loading: &mut Vec<PathBuf>,
) -> Result<LoadedComponent, crate::Error> {
    let given = PathBuf::from(&spec.component);
    let path = std::fs::canonicalize(&given).unwrap_or(given);
    if loading.contains(&path) {
        let mut chain: Vec<String> = loading.iter().map(|p| p.display().to_string()).collect();
        chain.push(path.display().to_string());
        return Err(crate::Error::Compose {
            consumer: loading
                .last()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            interface: String::new(),
            provider: spec.component.clone(),
            message: format!("the files import each other: {}", chain.join(" -> ")),
        });
    }
    let grants = match &spec.manifest {
        Some(m) => Grants::from_file(Path::new(m))?,
        None => Grants::deny_all(),
    };
    let prepared = runtime.prepare_file(&path)?;
    loading.push(path);
    let loaded = runtime.load_nested(&prepared, grants, loading);
    loading.pop();
    loaded
}
