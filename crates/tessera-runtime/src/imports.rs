//! Why a component does not link: its imports walked against the linker.
//!
//! wasmtime's own linking error stops at the first problem and speaks of
//! its internals (`instance export get has the wrong type: function
//! implementation is missing` is how it reports a whole interface that
//! the host does not provide). When [`Linker::instantiate_pre`] refuses a
//! component, [`diagnose`] walks every import of the component's type
//! (`Component::component_type().imports()`) and asks the linker itself,
//! item by item, whether it defines it, then words each problem for a
//! person: which interface (and item) is missing, whether Tessera provides
//! the interface at another version, and which manifest grant governs it.
//!
//! The linker cannot list what it defines, so [`PROVIDED`] names the
//! interfaces Tessera links, with their exact versions. A test checks it
//! against the linker (every entry is defined) and against the WIT worlds
//! Tessera links (every interface is listed), so it cannot drift.

use serde::{Deserialize, Serialize};
use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker};

use crate::host::HostState;

/// An interface Tessera's linker provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProvidedInterface {
    /// `package:name/interface`, without a version.
    pub interface: &'static str,
    /// The exact version the linker defines it at.
    pub version: &'static str,
    /// The manifest grant that governs what its functions may do, if one
    /// does (the interface is linked for every component either way; calls
    /// outside the grant are refused and audited).
    pub grant: Option<&'static str>,
}

impl ProvidedInterface {
    /// `package:name/interface@version`, as the linker defines it.
    pub fn name(&self) -> String {
        format!("{}@{}", self.interface, self.version)
    }
}

const fn wasi(interface: &'static str, grant: Option<&'static str>) -> ProvidedInterface {
    ProvidedInterface {
        interface,
        version: WASI_VERSION,
        grant,
    }
}

/// The WASI 0.2 release wasmtime-wasi and wasmtime-wasi-http link. A
/// component built against any 0.2.x release links (the linker matches
/// semver-compatible versions).
pub const WASI_VERSION: &str = "0.2.12";

/// Every interface the linker provides (`wasi:cli/imports` and
/// `wasi:http/proxy` from wasmtime-wasi; `wasi:logging`, `wasi:config`,
/// `wasi:keyvalue` and Tessera's own `tessera:agent` package from its
/// capabilities).
pub const PROVIDED: &[ProvidedInterface] = &[
    wasi("wasi:io/error", None),
    wasi("wasi:io/poll", None),
    wasi("wasi:io/streams", None),
    wasi("wasi:clocks/wall-clock", None),
    wasi("wasi:clocks/monotonic-clock", None),
    wasi("wasi:random/random", None),
    wasi("wasi:random/insecure", None),
    wasi("wasi:random/insecure-seed", None),
    wasi("wasi:filesystem/types", Some("[[files]]")),
    wasi("wasi:filesystem/preopens", Some("[[files]]")),
    wasi("wasi:sockets/network", None),
    wasi("wasi:sockets/instance-network", None),
    wasi("wasi:sockets/udp", None),
    wasi("wasi:sockets/udp-create-socket", None),
    wasi("wasi:sockets/tcp", None),
    wasi("wasi:sockets/tcp-create-socket", None),
    wasi("wasi:sockets/ip-name-lookup", None),
    wasi("wasi:cli/environment", Some("[env] and args")),
    wasi("wasi:cli/exit", None),
    wasi("wasi:cli/stdin", None),
    wasi("wasi:cli/stdout", None),
    wasi("wasi:cli/stderr", None),
    wasi("wasi:cli/terminal-input", None),
    wasi("wasi:cli/terminal-output", None),
    wasi("wasi:cli/terminal-stdin", None),
    wasi("wasi:cli/terminal-stdout", None),
    wasi("wasi:cli/terminal-stderr", None),
    wasi("wasi:http/types", Some("[http] allowed_outbound_hosts")),
    wasi(
        "wasi:http/outgoing-handler",
        Some("[http] allowed_outbound_hosts"),
    ),
    ProvidedInterface {
        interface: "wasi:logging/logging",
        version: "0.1.0-draft",
        grant: None,
    },
    ProvidedInterface {
        interface: "wasi:config/store",
        version: "0.2.0-draft",
        grant: Some("[config]"),
    },
    ProvidedInterface {
        interface: "wasi:keyvalue/store",
        version: "0.2.0-draft2",
        grant: Some("[keyvalue] buckets"),
    },
    ProvidedInterface {
        interface: "wasi:keyvalue/atomics",
        version: "0.2.0-draft2",
        grant: Some("[keyvalue] buckets"),
    },
    ProvidedInterface {
        interface: "wasi:keyvalue/batch",
        version: "0.2.0-draft2",
        grant: Some("[keyvalue] buckets"),
    },
    ProvidedInterface {
        interface: "wasi:keyvalue/store",
        version: "0.2.0-draft",
        grant: Some("[keyvalue] buckets"),
    },
    ProvidedInterface {
        interface: "wasi:keyvalue/atomics",
        version: "0.2.0-draft",
        grant: Some("[keyvalue] buckets"),
    },
    ProvidedInterface {
        interface: "wasi:keyvalue/batch",
        version: "0.2.0-draft",
        grant: Some("[keyvalue] buckets"),
    },
    ProvidedInterface {
        interface: "wasi:nn/tensor",
        version: "0.2.0-rc-2024-10-28",
        grant: Some("[nn] models"),
    },
    ProvidedInterface {
        interface: "wasi:nn/graph",
        version: "0.2.0-rc-2024-10-28",
        grant: Some("[nn] models"),
    },
    ProvidedInterface {
        interface: "wasi:nn/inference",
        version: "0.2.0-rc-2024-10-28",
        grant: Some("[nn] models"),
    },
    ProvidedInterface {
        interface: "wasi:nn/errors",
        version: "0.2.0-rc-2024-10-28",
        grant: Some("[nn] models"),
    },
    ProvidedInterface {
        interface: "tessera:agent/types",
        version: "0.1.0",
        grant: None,
    },
    ProvidedInterface {
        interface: "tessera:agent/agents",
        version: "0.1.0",
        grant: Some("[agent] (answers inside an agent's turn)"),
    },
    ProvidedInterface {
        interface: "tessera:agent/tools",
        version: "0.1.0",
        grant: Some("[agent.tools]"),
    },
    ProvidedInterface {
        interface: "tessera:agent/llm",
        version: "0.1.0",
        grant: Some("[llm] models"),
    },
];

/// One import of a component that the linker does not satisfy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnresolvedImport {
    /// The import as the component names it (`example:missing/thing`,
    /// `wasi:cli/environment@0.3.0`).
    pub import: String,
    /// The item of the interface (a function or resource), when the
    /// interface is provided but that item is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// Why it is not satisfied.
    pub reason: UnresolvedReason,
    /// The items the component imports from it (for a whole interface).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<String>,
}

/// Why an import is not satisfied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UnresolvedReason {
    /// Tessera provides no interface of that name, at any version.
    NotProvided,
    /// Tessera provides the interface, but only at versions the import is
    /// not compatible with.
    OtherVersion {
        /// The versions Tessera provides it at.
        provided: Vec<String>,
        /// The manifest grant that governs it, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grant: Option<String>,
    },
    /// The interface is provided (at `provided`), without this item.
    MissingItem {
        /// The interface as Tessera defines it, with its version.
        provided: String,
    },
    /// The interface and the item are provided, but the item's type
    /// differs from the one the component imports.
    ItemType {
        /// The interface as Tessera defines it, with its version.
        provided: String,
    },
    /// A kind of import Tessera never provides (a core module, a
    /// component, a function or type outside an interface).
    Unsupported {
        /// What kind of item it is.
        what: String,
    },
}

impl std::fmt::Display for UnresolvedImport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match &self.item {
            Some(item) => format!("`{}#{item}`", self.import),
            None => format!("`{}`", self.import),
        };
        match &self.reason {
            UnresolvedReason::NotProvided => {
                write!(f, "{what}: Tessera does not provide this interface")?;
                if !self.items.is_empty() {
                    write!(f, " (the component imports {})", self.items.join(", "))?;
                }
                write!(
                    f,
                    "; a component exporting it can serve it, named in the manifest's `[imports]`"
                )
            }
            UnresolvedReason::OtherVersion { provided, grant } => {
                write!(
                    f,
                    "{what}: Tessera provides `{}` only at {} — rebuild the component against {}",
                    unversioned(&self.import),
                    provided.join(", "),
                    if provided.len() == 1 {
                        "that version"
                    } else {
                        "one of them"
                    }
                )?;
                if let Some(g) = grant {
                    write!(f, " (what it may do is granted by the manifest's {g})")?;
                }
                Ok(())
            }
            UnresolvedReason::MissingItem { provided } => write!(
                f,
                "{what}: Tessera provides `{provided}`, which has no `{}`",
                self.item.as_deref().unwrap_or("?")
            ),
            UnresolvedReason::ItemType { provided } => write!(
                f,
                "{what}: Tessera's `{provided}` defines `{}` with another type than the component expects",
                self.item.as_deref().unwrap_or("?")
            ),
            UnresolvedReason::Unsupported { what: kind } => {
                write!(f, "{what}: Tessera provides no imported {kind}")
            }
        }
    }
}

/// `a:b/c@1.2.3` → `a:b/c`.
pub fn unversioned(name: &str) -> &str {
    name.split_once('@').map_or(name, |(n, _)| n)
}

/// The key under which the linker matches semver-compatible versions
/// (`a:b/c@0.2.3` → `a:b/c@0.2`, `a:b/c@1.2.3` → `a:b/c@1`; none for a
/// prerelease or a `0.0.x` version), as wasmtime's name map does.
fn compatible_key(name: &str) -> Option<String> {
    let (base, version) = name.split_once('@')?;
    let core = version.split('+').next().unwrap_or(version);
    if core.contains('-') {
        return None;
    }
    let mut parts = core.split('.');
    let major: u64 = parts.next()?.parse().ok()?;
    let minor: u64 = parts.next()?.parse().ok()?;
    let _patch: u64 = parts.next()?.parse().ok()?;
    if major != 0 {
        Some(format!("{base}@{major}"))
    } else if minor != 0 {
        Some(format!("{base}@0.{minor}"))
    } else {
        None
    }
}

/// The provided interface an import named `name` resolves to: the exact
/// name, or a semver-compatible one.
pub fn resolve(name: &str) -> Option<&'static ProvidedInterface> {
    PROVIDED.iter().find(|p| p.name() == name).or_else(|| {
        let key = compatible_key(name)?;
        PROVIDED
            .iter()
            .find(|p| compatible_key(&p.name()).as_deref() == Some(&key))
    })
}

/// Whether the linker defines `item` in the instance named exactly
/// `instance` (or at the root when `instance` is `None`). Probes a clone:
/// with shadowing off, defining a name that exists fails.
fn defines(linker: &Linker<HostState>, instance: Option<&str>, item: &str) -> bool {
    let mut probe = linker.clone();
    probe.allow_shadowing(false);
    let stub = |_: wasmtime::StoreContextMut<'_, HostState>,
                _: wasmtime::component::types::ComponentFunc,
                _: &[wasmtime::component::Val],
                _: &mut [wasmtime::component::Val]| Ok(());
    let defined = match instance {
        None => probe.root().func_new(item, stub),
        Some(i) => match probe.instance(i) {
            Ok(mut inst) => inst.func_new(item, stub),
            // The name exists as something other than an instance.
            Err(_) => return false,
        },
    };
    defined.is_err()
}

/// Whether the component type-checks against `linker` with the functions
/// `stubbed` (instance, item) replaced by untyped stubs.
fn links_with_stubs(
    linker: &Linker<HostState>,
    component: &Component,
    stubbed: &[(String, String)],
) -> bool {
    let mut probe = linker.clone();
    probe.allow_shadowing(true);
    for (instance, item) in stubbed {
        let Ok(mut inst) = probe.instance(instance) else {
            return false;
        };
        if inst
            .func_new(item, |_, _, _, _| {
                Err(wasmtime::Error::msg("link probe stub called"))
            })
            .is_err()
        {
            return false;
        }
    }
    probe.substituted_component_type(component).is_ok()
}

/// Walks the imports of `component` against `linker` and says what is not
/// satisfied. Empty when every import resolves by name and type.
pub(crate) fn diagnose(
    engine: &Engine,
    linker: &Linker<HostState>,
    component: &Component,
) -> Vec<UnresolvedImport> {
    let mut out = Vec::new();
    // Functions of provided interfaces, for finding type mismatches.
    let mut provided_functions: Vec<(String, String)> = Vec::new();
    let ty = component.component_type();
    for (name, item) in ty.imports(engine) {
        let instance = match item.ty {
            ComponentItem::ComponentInstance(i) => i,
            ComponentItem::ComponentFunc(_) => {
                if !defines(linker, None, name) {
                    out.push(UnresolvedImport {
                        import: name.to_string(),
                        item: None,
                        reason: UnresolvedReason::Unsupported {
                            what: "function outside an interface".into(),
                        },
                        items: Vec::new(),
                    });
                }
                continue;
            }
            ComponentItem::Type(_) => continue,
            other => {
                let what = match other {
                    ComponentItem::Module(_) => "core module",
                    ComponentItem::Component(_) => "component",
                    ComponentItem::CoreFunc(_) => "core function",
                    ComponentItem::Resource(_) => "resource outside an interface",
                    _ => "item of this kind",
                };
                out.push(UnresolvedImport {
                    import: name.to_string(),
                    item: None,
                    reason: UnresolvedReason::Unsupported { what: what.into() },
                    items: Vec::new(),
                });
                continue;
            }
        };
        // The items the linker must define (interface types are only names).
        let items: Vec<(String, bool)> = instance
            .exports(engine)
            .filter_map(|(n, i)| match i.ty {
                ComponentItem::Type(_) => None,
                ComponentItem::ComponentFunc(_) => Some((n.to_string(), true)),
                _ => Some((n.to_string(), false)),
            })
            .collect();
        if items.is_empty() {
            continue;
        }
        let Some(provided) = resolve(name) else {
            let base = unversioned(name);
            let versions: Vec<&ProvidedInterface> =
                PROVIDED.iter().filter(|p| p.interface == base).collect();
            let reason = if versions.is_empty() {
                UnresolvedReason::NotProvided
            } else {
                UnresolvedReason::OtherVersion {
                    provided: versions.iter().map(|p| p.version.to_string()).collect(),
                    grant: versions[0].grant.map(str::to_string),
                }
            };
            out.push(UnresolvedImport {
                import: name.to_string(),
                item: None,
                reason,
                items: items.into_iter().map(|(n, _)| n).collect(),
            });
            continue;
        };
        let exact = provided.name();
        for (item, is_function) in items {
            if !defines(linker, Some(&exact), &item) {
                out.push(UnresolvedImport {
                    import: name.to_string(),
                    item: Some(item),
                    reason: UnresolvedReason::MissingItem {
                        provided: exact.clone(),
                    },
                    items: Vec::new(),
                });
            } else if is_function {
                provided_functions.push((exact.clone(), item));
            }
        }
    }
    // Every name resolves: what remains are functions of another type.
    // Stubbing a function with an untyped one makes its type check pass;
    // one whose stub is needed for the component to link is a mismatch.
    let missing: Vec<(String, String)> = out
        .iter()
        .filter_map(|u| match (&u.reason, &u.item) {
            (UnresolvedReason::MissingItem { provided }, Some(item)) => {
                Some((provided.clone(), item.clone()))
            }
            _ => None,
        })
        .collect();
    let only_missing_or_types = out
        .iter()
        .all(|u| matches!(u.reason, UnresolvedReason::MissingItem { .. }));
    if only_missing_or_types && !provided_functions.is_empty() {
        let mut all = missing.clone();
        all.extend(provided_functions.iter().cloned());
        if !links_with_stubs(linker, component, &missing)
            && links_with_stubs(linker, component, &all)
        {
            for (i, f) in provided_functions.iter().enumerate() {
                let mut without: Vec<(String, String)> = missing.clone();
                without.extend(
                    provided_functions
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .map(|(_, p)| p.clone()),
                );
                if !links_with_stubs(linker, component, &without) {
                    let import = ty
                        .imports(engine)
                        .map(|(n, _)| n)
                        .find(|n| resolve(n).is_some_and(|p| p.name() == f.0))
                        .unwrap_or(&f.0)
                        .to_string();
                    out.push(UnresolvedImport {
                        import,
                        item: Some(f.1.clone()),
                        reason: UnresolvedReason::ItemType {
                            provided: f.0.clone(),
                        },
                        items: Vec::new(),
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Runtime, RuntimeConfig};

    fn runtime() -> Runtime {
        Runtime::new(RuntimeConfig {
            pooling: false,
            ..RuntimeConfig::default()
        })
        .unwrap()
    }

    /// What the walk says about a component written in text, which must
    /// not link.
    fn diagnose_wat(wat: &str) -> Vec<UnresolvedImport> {
        let rt = runtime();
        let c = Component::new(rt.engine(), wat).unwrap();
        assert!(rt.inner.linker.instantiate_pre(&c).is_err());
        diagnose(rt.engine(), &rt.inner.linker, &c)
    }

    #[test]
    fn every_provided_interface_is_defined_by_the_linker() {
        let rt = runtime();
        for p in PROVIDED {
            assert!(
                defines(&rt.inner.linker, None, &p.name()),
                "{} is listed as provided but the linker does not define it",
                p.name()
            );
        }
        assert!(!defines(&rt.inner.linker, None, "example:missing/thing"));
        assert!(!defines(
            &rt.inner.linker,
            Some("wasi:cli/environment@0.2.12"),
            "get-everything"
        ));
        assert!(defines(
            &rt.inner.linker,
            Some("wasi:cli/environment@0.2.12"),
            "get-arguments"
        ));
    }

    #[test]
    fn a_missing_function_of_a_provided_interface_is_named() {
        let found = diagnose_wat(
            r#"(component
                (import "wasi:cli/environment@0.2.0" (instance
                  (export "get-arguments" (func (result (list string))))
                  (export "get-everything" (func)))))"#,
        );
        assert_eq!(
            found,
            [UnresolvedImport {
                import: "wasi:cli/environment@0.2.0".into(),
                item: Some("get-everything".into()),
                reason: UnresolvedReason::MissingItem {
                    provided: "wasi:cli/environment@0.2.12".into()
                },
                items: Vec::new(),
            }]
        );
        assert_eq!(
            found[0].to_string(),
            "`wasi:cli/environment@0.2.0#get-everything`: Tessera provides \
             `wasi:cli/environment@0.2.12`, which has no `get-everything`"
        );
    }

    #[test]
    fn a_function_of_another_type_is_named() {
        let found = diagnose_wat(
            r#"(component
                (import "wasi:cli/environment@0.2.3" (instance
                  (export "get-arguments" (func (result u32)))
                  (export "initial-cwd" (func (result (option string)))))))"#,
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].item.as_deref(), Some("get-arguments"));
        assert_eq!(
            found[0].reason,
            UnresolvedReason::ItemType {
                provided: "wasi:cli/environment@0.2.12".into()
            }
        );
        assert_eq!(found[0].import, "wasi:cli/environment@0.2.3");
    }

    #[test]
    fn another_version_of_a_provided_interface_names_the_version_and_its_grant() {
        let found = diagnose_wat(
            r#"(component
                (import "wasi:config/store@0.2.0-rc.1" (instance
                  (export "get" (func (param "key" string) (result (option string)))))))"#,
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].reason,
            UnresolvedReason::OtherVersion {
                provided: vec!["0.2.0-draft".into()],
                grant: Some("[config]".into()),
            }
        );
        let text = found[0].to_string();
        assert!(
            text.contains("Tessera provides `wasi:config/store` only at 0.2.0-draft"),
            "{text}"
        );
        assert!(
            text.contains("granted by the manifest's [config]"),
            "{text}"
        );
    }

    #[test]
    fn compatible_versions_follow_semver_like_the_linker() {
        assert_eq!(
            compatible_key("wasi:cli/environment@0.2.3").as_deref(),
            Some("wasi:cli/environment@0.2")
        );
        assert_eq!(compatible_key("a:b/c@1.4.0").as_deref(), Some("a:b/c@1"));
        assert_eq!(compatible_key("a:b/c@0.2.0-draft"), None);
        assert_eq!(compatible_key("a:b/c@0.0.1"), None);
        assert_eq!(compatible_key("a:b/c"), None);
        assert_eq!(
            resolve("wasi:cli/environment@0.2.0").map(|p| p.name()),
            Some("wasi:cli/environment@0.2.12".to_string())
        );
        assert!(resolve("wasi:cli/environment@0.3.0").is_none());
        assert!(resolve("wasi:config/store@0.2.0-rc.1").is_none());
        assert!(resolve("wasi:config/store@0.2.0-draft").is_some());
    }
}
