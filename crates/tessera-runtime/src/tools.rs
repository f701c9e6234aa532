//! Tool curation: which exported functions a server offers, and how it
//! presents them.
//!
//! A component built by someone else exports more than its author meant to
//! offer: toolchains add their own entry points (componentize-py's
//! `exports#init`, which the toolchain calls once at build time and which
//! traps when called later), and most toolchains embed no WIT docs, so a
//! tool is described only by its signature. The `[tools]` manifest section
//! fixes both: `include` and `exclude` choose the functions, and
//! `[tools.functions.<name>]` gives one a title and a description.
//!
//! Curation decides what the server (MCP and HTTP) lists and lets clients
//! call. It is not a grant: the runtime itself ([`crate::LoadedComponent::call_json`],
//! and so `tessera call` on a file) calls any export, and what a function
//! may do is still decided by the capability grants alone. The names in the
//! section are checked against the component's exports when it is loaded
//! ([`ToolCuration::resolve`]); a name that matches no export is a load
//! error naming the field. The format is documented in `docs/manifest.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::capability::Section;
use crate::manifest::ManifestError;
use crate::schema::FunctionInfo;

/// The `[tools]` section of a manifest, validated on its own; checked
/// against the component's exports by [`ToolCuration::resolve`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCuration {
    /// `tools.include`: when present, only these functions are served
    /// (toolchain internals among them too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
    /// `tools.exclude`: functions never served.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// `tools.functions.<name>`: title and description overrides, by the
    /// function name as written in the manifest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub functions: BTreeMap<String, ToolOverride>,
    /// Where the manifest came from, for errors found when the component
    /// is loaded (not journaled).
    #[serde(skip)]
    origin: Option<String>,
}

/// A title and description for one function (`[tools.functions.<name>]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolOverride {
    /// Replaces the default title (`<component>: <function>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Replaces the description (the WIT docs and signature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTools {
    include: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    functions: Option<BTreeMap<String, ToolOverride>>,
}

/// Why a function is not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hidden {
    /// It takes or returns something JSON cannot carry (a resource, a
    /// stream): it is never served.
    NotCallable(String),
    /// Listed in `tools.exclude`.
    Excluded,
    /// `tools.include` is given and does not list it.
    NotIncluded,
    /// A toolchain's internal export, hidden unless `tools.include` lists
    /// it; the text says which.
    Internal(&'static str),
}

impl std::fmt::Display for Hidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hidden::NotCallable(reason) => write!(f, "not callable from JSON: {reason}"),
            Hidden::Excluded => f.write_str("excluded by the manifest (`tools.exclude`)"),
            Hidden::NotIncluded => f.write_str("not listed in the manifest's `tools.include`"),
            Hidden::Internal(what) => write!(
                f,
                "hidden by default as {what}; list it in the manifest's `tools.include` to serve it"
            ),
        }
    }
}

/// How one exported function is offered, after curation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exposure {
    /// Why it is not served; `None` when it is.
    pub hidden: Option<Hidden>,
    /// The manifest's title for it.
    pub title: Option<String>,
    /// The manifest's description for it.
    pub description: Option<String>,
}

impl Exposure {
    /// Whether the server lists it and lets clients call it.
    pub fn served(&self) -> bool {
        self.hidden.is_none()
    }
}

/// componentize-py's initializer: `init` in the inline interface `exports`
/// of its `componentize-py:init` world, taking `app-name` and `symbols`.
/// The toolchain calls it once while building; afterwards it traps.
fn componentize_py_init(f: &FunctionInfo) -> bool {
    f.interface.as_deref() == Some("exports")
        && f.name == "init"
        && f.params.len() >= 2
        && f.params[0].0 == "app-name"
        && f.params[1].0 == "symbols"
}

/// `wasi:cli/run#run`: a command's `main`.
fn cli_run(f: &FunctionInfo) -> bool {
    f.name == "run"
        && f.interface.as_deref().is_some_and(|i| {
            let unversioned = i.split('@').next().unwrap_or(i);
            unversioned == "wasi:cli/run"
        })
}

/// Why `f` is hidden by default, if it is a known toolchain internal.
/// `others` says whether the component exports other callable functions
/// that are not internals themselves.
fn internal(f: &FunctionInfo, others: bool) -> Option<&'static str> {
    if componentize_py_init(f) {
        Some("componentize-py's build-time initializer, which traps when called")
    } else if cli_run(f) && others {
        Some(
            "the `wasi:cli/run` entry point of a component that exports other functions \
             (a toolchain's `main`, such as TinyGo's)",
        )
    } else {
        None
    }
}

fn nonempty(
    section: &Section<'_>,
    field: &str,
    value: Option<String>,
) -> Result<Option<String>, ManifestError> {
    match value {
        Some(v) if v.trim().is_empty() => Err(section.invalid(field, "must not be empty")),
        Some(v) => Ok(Some(v.trim().to_string())),
        None => Ok(None),
    }
}

/// `"types#echo-u8"` as a TOML key in a dotted field path.
fn key(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

impl ToolCuration {
    /// The manifest key.
    pub const KEY: &'static str = "tools";

    /// Whether the section is absent or empty: every callable function is
    /// served except the toolchain internals.
    pub fn is_default(&self) -> bool {
        self.include.is_none() && self.exclude.is_empty() && self.functions.is_empty()
    }

    /// Parses and validates `[tools]` as far as it can be without the
    /// component: names must be non-empty and not both included and
    /// excluded; an override must give a non-empty title or description.
    pub(crate) fn parse(section: &Section<'_>) -> Result<Self, ManifestError> {
        let Some(raw) = section.parse::<RawTools>(Self::KEY)? else {
            return Ok(Self::default());
        };
        let names = |list: &Option<Vec<String>>, field: &str| -> Result<(), ManifestError> {
            let mut seen = std::collections::BTreeSet::new();
            for (i, n) in list.iter().flatten().enumerate() {
                if n.trim().is_empty() {
                    return Err(section.invalid(format!("tools.{field}[{i}]"), "empty name"));
                }
                if !seen.insert(n) {
                    return Err(section.invalid(
                        format!("tools.{field}[{i}]"),
                        format!("`{n}` is listed twice"),
                    ));
                }
            }
            Ok(())
        };
        names(&raw.include, "include")?;
        names(&raw.exclude, "exclude")?;
        let exclude = raw.exclude.unwrap_or_default();
        if let Some(include) = &raw.include
            && let Some((i, n)) = exclude
                .iter()
                .enumerate()
                .find(|(_, n)| include.contains(n))
        {
            return Err(section.invalid(
                format!("tools.exclude[{i}]"),
                format!("`{n}` is also in tools.include"),
            ));
        }
        let mut functions = BTreeMap::new();
        for (name, o) in raw.functions.unwrap_or_default() {
            let field = format!("tools.functions.{}", key(&name));
            let title = nonempty(section, &format!("{field}.title"), o.title)?;
            let description = nonempty(section, &format!("{field}.description"), o.description)?;
            if title.is_none() && description.is_none() {
                return Err(section.invalid(field, "give a `title`, a `description` or both"));
            }
            functions.insert(name, ToolOverride { title, description });
        }
        Ok(Self {
            include: raw.include,
            exclude,
            functions,
            origin: Some(section.origin().to_string()),
        })
    }

    /// Decides, for each of `functions` (in order), whether it is served
    /// and how it is presented. Every name in the section must match one
    /// exported function (by qualified name, short name, `iface.name` or
    /// an unambiguous bare name, as calls do), an included or described
    /// function must be callable from JSON, and a described one must be
    /// served. `origin` names the component in errors when the manifest's
    /// own origin is not known (grants read back from a journal).
    pub fn resolve(
        &self,
        functions: &[FunctionInfo],
        origin: &str,
    ) -> Result<Vec<Exposure>, ManifestError> {
        let origin = self.origin.as_deref().unwrap_or(origin);
        let invalid = |field: String, message: String| ManifestError::Invalid {
            origin: origin.to_string(),
            field,
            message,
        };
        let find = |field: String, name: &str| -> Result<usize, ManifestError> {
            crate::schema::find(functions, name)
                .map_err(|e| invalid(field, e.to_string()))
                .and_then(|f| {
                    functions
                        .iter()
                        .position(|g| std::ptr::eq(g, f))
                        .ok_or_else(|| invalid(String::new(), "lookup failed".into()))
                })
        };
        let mut included = vec![false; functions.len()];
        let mut excluded = vec![false; functions.len()];
        for (i, n) in self.include.iter().flatten().enumerate() {
            let field = format!("tools.include[{i}]");
            let at = find(field.clone(), n)?;
            if let Some(reason) = &functions[at].not_callable {
                return Err(invalid(
                    field,
                    format!(
                        "`{}` cannot be served: not callable from JSON: {reason}",
                        functions[at].short_name()
                    ),
                ));
            }
            included[at] = true;
        }
        for (i, n) in self.exclude.iter().enumerate() {
            let field = format!("tools.exclude[{i}]");
            let at = find(field.clone(), n)?;
            if included[at] {
                return Err(invalid(
                    field,
                    format!(
                        "`{n}` names `{}`, which tools.include also names",
                        functions[at].short_name()
                    ),
                ));
            }
            excluded[at] = true;
        }
        // Whether the component exports callable functions besides the
        // internals (which decides whether `wasi:cli/run` is its main).
        let others = functions
            .iter()
            .any(|f| f.not_callable.is_none() && !componentize_py_init(f) && !cli_run(f));
        let mut out: Vec<Exposure> = functions
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let hidden = if let Some(reason) = &f.not_callable {
                    Some(Hidden::NotCallable(reason.clone()))
                } else if excluded[i] {
                    Some(Hidden::Excluded)
                } else if self.include.is_some() {
                    (!included[i]).then_some(Hidden::NotIncluded)
                } else {
                    internal(f, others).map(Hidden::Internal)
                };
                Exposure {
                    hidden,
                    title: None,
                    description: None,
                }
            })
            .collect();
        let mut described: Vec<Option<&str>> = vec![None; functions.len()];
        for (name, o) in &self.functions {
            let field = format!("tools.functions.{}", key(name));
            let at = find(field.clone(), name)?;
            if let Some(other) = described[at] {
                return Err(invalid(
                    field,
                    format!(
                        "`{name}` and `{other}` both name `{}`",
                        functions[at].short_name()
                    ),
                ));
            }
            described[at] = Some(name);
            if let Some(why) = &out[at].hidden {
                return Err(invalid(
                    field,
                    format!(
                        "`{}` is not served ({why}), so its title and description would never be shown",
                        functions[at].short_name()
                    ),
                ));
            }
            out[at].title.clone_from(&o.title);
            out[at].description.clone_from(&o.description);
        }
        Ok(out)
    }
}
