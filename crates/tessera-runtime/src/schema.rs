//! Exported functions and the JSON Schema of their parameters and results.
//!
//! Functions are discovered from the component's type (top-level exports and
//! functions inside exported interfaces). Documentation comes from the WIT
//! the component carries: `wit-bindgen` embeds the WIT docs in a
//! `package-docs` custom section, which `wit-component` decodes; a component
//! without docs simply has no descriptions.
//!
//! The schemas describe exactly the JSON accepted by [`crate::json::to_val`]
//! and produced by [`crate::json::from_val`].

use std::collections::HashMap;

use serde_json::{Value, json};
use wasmtime::Engine;
use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{Component, ComponentExportIndex, Type};

use crate::json::{can_be_null, not_json_callable};

/// One exported function.
#[derive(Debug, Clone)]
pub struct FunctionInfo {
    /// The exporting interface (`tessera:hello/types@0.1.0`), or `None` for a
    /// function exported directly by the world.
    pub interface: Option<String>,
    /// The function name (`greet`, `[constructor]counter`, …).
    pub name: String,
    /// WIT doc comment, if the component carries one.
    pub docs: Option<String>,
    /// Parameter names and types, in order.
    pub params: Vec<(String, Type)>,
    /// The result type, if any.
    pub result: Option<Type>,
    /// Why the function cannot be called from JSON, if it cannot.
    pub not_callable: Option<String>,
    /// JSON Schema of the argument object.
    pub params_schema: Value,
    /// JSON Schema of the result.
    pub result_schema: Value,
    pub(crate) export: ComponentExportIndex,
    /// `qualified_name()`, computed once for lookups.
    pub(crate) qualified: String,
    /// `short_name()`, computed once for lookups.
    pub(crate) short: String,
}

impl FunctionInfo {
    /// The function's full name: `name`, or `interface#name`.
    pub fn qualified_name(&self) -> String {
        self.qualified.clone()
    }

    /// A short name: `name` or `iface#name`, where `iface` is the interface
    /// name without package and version (`types#echo-u8`).
    pub fn short_name(&self) -> String {
        self.short.clone()
    }

    /// Whether the result is a WIT `result` (its JSON is `{"ok": …}` or
    /// `{"err": …}`).
    pub fn returns_result(&self) -> bool {
        matches!(self.result, Some(Type::Result(_)))
    }

    /// The listing entry as JSON (`--json` output of `inspect`).
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "name": self.qualified_name(),
            "short_name": self.short_name(),
            "parameters": self.params_schema,
            "result": self.result_schema,
        });
        if let Some(d) = &self.docs {
            v["description"] = Value::String(d.clone());
        }
        if let Some(n) = &self.not_callable {
            v["not_callable"] = Value::String(n.clone());
        }
        v
    }
}

/// Finds a function by qualified name (`ns:pkg/iface@ver#name`, also
/// without the version), short name (`iface#name`, also `iface.name`) or
/// bare name when unambiguous.
pub fn find<'a>(
    functions: &'a [FunctionInfo],
    name: &str,
) -> Result<&'a FunctionInfo, crate::Error> {
    if let Some(f) = functions.iter().find(|f| f.qualified == name) {
        return Ok(f);
    }
    if let Some(f) = functions.iter().find(|f| f.short == name) {
        return Ok(f);
    }
    // `wasi:cli/run#run` for `wasi:cli/run@0.2.0#run`.
    if let Some(f) = functions.iter().find(|f| {
        f.interface.as_deref().is_some_and(|i| {
            i.split_once('@')
                .is_some_and(|(unversioned, _)| name == format!("{unversioned}#{}", f.name))
        })
    }) {
        return Ok(f);
    }
    let dotted = name.replacen('.', "#", 1);
    if let Some(f) = functions
        .iter()
        .find(|f| f.interface.is_some() && f.short == dotted)
    {
        return Ok(f);
    }
    let bare: Vec<&FunctionInfo> = functions.iter().filter(|f| f.name == name).collect();
    let names = |fs: &mut dyn Iterator<Item = &FunctionInfo>| {
        fs.map(|f| f.short_name()).collect::<Vec<_>>().join(", ")
    };
    match bare.as_slice() {
        [one] => Ok(one),
        [] => Err(crate::Error::NoSuchFunction {
            name: name.to_string(),
            available: names(&mut functions.iter()),
        }),
        many => Err(crate::Error::Ambiguous {
            name: name.to_string(),
            candidates: names(&mut many.iter().copied()),
        }),
    }
}

/// `tessera:hello/types@0.1.0` → `types`.
pub fn interface_short(iface: &str) -> &str {
    let no_version = iface.split('@').next().unwrap_or(iface);
    no_version.rsplit('/').next().unwrap_or(no_version)
}

/// Lists every exported function of `component` with its schemas, and the
/// doc comments `bytes` (the component's own bytes) carry.
pub fn functions(engine: &Engine, component: &Component, bytes: &[u8]) -> Vec<FunctionInfo> {
    functions_with_docs(engine, component, &Docs::of(bytes))
}

/// [`functions`] with the doc comments already read (see [`Docs`]).
pub fn functions_with_docs(
    engine: &Engine,
    component: &Component,
    docs: &Docs,
) -> Vec<FunctionInfo> {
    let docs = &docs.0;
    let ty = component.component_type();
    let mut out = Vec::new();
    for (name, item) in ty.exports(engine) {
        match item.ty {
            ComponentItem::ComponentFunc(f) => {
                if let Some(export) = component.get_export_index(None, name) {
                    out.push(describe(None, name, &f, export, docs));
                }
            }
            ComponentItem::ComponentInstance(inst) => {
                let Some(iface_index) = component.get_export_index(None, name) else {
                    continue;
                };
                for (fname, fitem) in inst.exports(engine) {
                    if let ComponentItem::ComponentFunc(f) = fitem.ty
                        && let Some(export) = component.get_export_index(Some(&iface_index), fname)
                    {
                        out.push(describe(Some(name), fname, &f, export, docs));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn describe(
    interface: Option<&str>,
    name: &str,
    f: &ComponentFunc,
    export: ComponentExportIndex,
    docs: &HashMap<(Option<String>, String), String>,
) -> FunctionInfo {
    let params: Vec<(String, Type)> = f.params().map(|(n, t)| (n.to_string(), t)).collect();
    let result = f.results().next();
    let not_callable = if f.async_() {
        Some("async functions are not callable from JSON yet".to_string())
    } else {
        params
            .iter()
            .find_map(|(n, t)| not_json_callable(t).map(|r| format!("parameter `{n}`: {r}")))
            .or_else(|| {
                result
                    .as_ref()
                    .and_then(not_json_callable)
                    .map(|r| format!("result: {r}"))
            })
    };
    let mut props = serde_json::Map::new();
    let mut required = Vec::new();
    for (n, t) in &params {
        props.insert(n.clone(), type_schema(t));
        if !matches!(t, Type::Option(_)) {
            required.push(Value::String(n.clone()));
        }
    }
    let params_schema = json!({
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": false,
    });
    let result_schema = match &result {
        Some(t) => type_schema(t),
        None => json!({ "type": "null" }),
    };
    let key = (interface.map(str::to_string), name.to_string());
    let (qualified, short) = match interface {
        Some(i) => (
            format!("{i}#{name}"),
            format!("{}#{name}", interface_short(i)),
        ),
        None => (name.to_string(), name.to_string()),
    };
    FunctionInfo {
        qualified,
        short,
        interface: interface.map(str::to_string),
        name: name.to_string(),
        docs: docs.get(&key).cloned(),
        params,
        result,
        not_callable,
        params_schema,
        result_schema,
        export,
    }
}

/// JSON Schema for one component type.
pub fn type_schema(ty: &Type) -> Value {
    fn int(min: i128, max: i128, name: &str) -> Value {
        json!({ "type": "integer", "minimum": num(min), "maximum": num(max), "format": name })
    }
    fn num(n: i128) -> Value {
        if let Ok(i) = i64::try_from(n) {
            i.into()
        } else {
            u64::try_from(n).map(Value::from).unwrap_or(Value::Null)
        }
    }
    match ty {
        Type::Bool => json!({ "type": "boolean" }),
        Type::S8 => int(i8::MIN.into(), i8::MAX.into(), "int8"),
        Type::U8 => int(0, u8::MAX.into(), "uint8"),
        Type::S16 => int(i16::MIN.into(), i16::MAX.into(), "int16"),
        Type::U16 => int(0, u16::MAX.into(), "uint16"),
        Type::S32 => int(i32::MIN.into(), i32::MAX.into(), "int32"),
        Type::U32 => int(0, u32::MAX.into(), "uint32"),
        Type::S64 => int(i64::MIN.into(), i64::MAX.into(), "int64"),
        Type::U64 => int(0, u64::MAX.into(), "uint64"),
        Type::Float32 | Type::Float64 => json!({
            "anyOf": [
                { "type": "number" },
                { "enum": ["NaN", "Infinity", "-Infinity"] }
            ],
            "format": if matches!(ty, Type::Float32) { "float" } else { "double" },
        }),
        Type::Char => json!({ "type": "string", "minLength": 1, "maxLength": 1 }),
        Type::String => json!({ "type": "string" }),
        Type::List(l) => json!({ "type": "array", "items": type_schema(&l.ty()) }),
        Type::FixedLengthList(l) => json!({
            "type": "array", "items": type_schema(&l.ty()),
            "minItems": l.len(), "maxItems": l.len(),
        }),
        Type::Map(m) => json!({
            "type": "array",
            "items": {
                "type": "array",
                "prefixItems": [type_schema(&m.key()), type_schema(&m.value())],
                "minItems": 2, "maxItems": 2,
            },
        }),
        Type::Record(r) => {
            let mut props = serde_json::Map::new();
            let mut required = Vec::new();
            for f in r.fields() {
                props.insert(f.name.to_string(), type_schema(&f.ty));
                if !matches!(f.ty, Type::Option(_)) {
                    required.push(Value::String(f.name.to_string()));
                }
            }
            json!({
                "type": "object", "properties": props,
                "required": required, "additionalProperties": false,
            })
        }
        Type::Tuple(t) => {
            let items: Vec<Value> = t.types().map(|t| type_schema(&t)).collect();
            let n = items.len();
            json!({ "type": "array", "prefixItems": items, "minItems": n, "maxItems": n })
        }
        Type::Variant(v) => {
            let cases: Vec<Value> = v
                .cases()
                .map(|c| match &c.ty {
                    None => json!({ "const": c.name }),
                    Some(t) => tagged(c.name, type_schema(t)),
                })
                .collect();
            json!({ "oneOf": cases })
        }
        Type::Enum(e) => json!({ "type": "string", "enum": e.names().collect::<Vec<_>>() }),
        Type::Option(o) => {
            let inner = o.ty();
            let some = if can_be_null(&inner) {
                tagged("some", type_schema(&inner))
            } else {
                type_schema(&inner)
            };
            json!({ "anyOf": [ { "type": "null" }, some ] })
        }
        Type::Result(r) => {
            let payload = |t: Option<Type>| {
                t.map(|t| type_schema(&t))
                    .unwrap_or(json!({ "type": "null" }))
            };
            json!({ "oneOf": [ tagged("ok", payload(r.ok())), tagged("err", payload(r.err())) ] })
        }
        Type::Flags(f) => json!({
            "type": "array",
            "items": { "type": "string", "enum": f.names().collect::<Vec<_>>() },
            "uniqueItems": true,
        }),
        Type::Own(_) | Type::Borrow(_) => json!({
            "description": "resource handle (not callable from JSON)",
            "not": {},
        }),
        Type::Future(_) | Type::Stream(_) | Type::ErrorContext => json!({
            "description": "async value (not callable from JSON)",
            "not": {},
        }),
    }
}

fn tagged(name: &str, schema: Value) -> Value {
    json!({
        "type": "object",
        "properties": { name: schema },
        "required": [name],
        "additionalProperties": false,
    })
}

/// The doc comments of a component's exported functions, keyed by
/// (interface, function).
///
/// Reading them decodes the component's WIT, which takes longer than
/// loading its compiled artifact; so the runtime keeps them with the
/// artifact in the compile cache ([`Docs::to_notes`], [`Docs::from_notes`])
/// and reads them from the bytes only when it compiles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Docs(HashMap<(Option<String>, String), String>);

/// How [`Docs`] are kept in a compile cache entry's notes. A change to what
/// [`Docs::of`] reads bumps `version`, so notes written by an older build
/// are read from the bytes again instead of believed.
#[derive(serde::Serialize, serde::Deserialize)]
struct DocsNotes {
    docs_version: u32,
    docs: Vec<DocNote>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct DocNote {
    interface: Option<String>,
    function: String,
    text: String,
}

/// The version of what [`Docs::of`] reads.
const DOCS_VERSION: u32 = 1;

impl Docs {
    /// Reads the doc comments from a component's bytes.
    ///
    /// Two sources, both produced by standard tooling: the `package-docs`
    /// section (world-level docs, read by `wit_component::decode`), and a
    /// `wit-package` custom section holding the component's whole WIT
    /// package in binary form (as `wasm-tools component wit --wasm` writes
    /// it), which also carries docs of functions inside exported interfaces.
    pub fn of(bytes: &[u8]) -> Self {
        Self(wit_docs(bytes))
    }

    /// The docs as compile cache notes (JSON).
    pub fn to_notes(&self) -> Vec<u8> {
        let mut docs: Vec<DocNote> = self
            .0
            .iter()
            .map(|((interface, function), text)| DocNote {
                interface: interface.clone(),
                function: function.clone(),
                text: text.clone(),
            })
            .collect();
        docs.sort_by(|a, b| (&a.interface, &a.function).cmp(&(&b.interface, &b.function)));
        serde_json::to_vec(&DocsNotes {
            docs_version: DOCS_VERSION,
            docs,
        })
        .unwrap_or_default()
    }

    /// The docs kept in compile cache notes, or `None` when the notes hold
    /// none of this version (an entry of an older format or build).
    pub fn from_notes(notes: &[u8]) -> Option<Self> {
        let n: DocsNotes = serde_json::from_slice(notes).ok()?;
        (n.docs_version == DOCS_VERSION).then(|| {
            Self(
                n.docs
                    .into_iter()
                    .map(|d| ((d.interface, d.function), d.text))
                    .collect(),
            )
        })
    }
}

fn wit_docs(bytes: &[u8]) -> HashMap<(Option<String>, String), String> {
    use wit_parser::{WorldItem, WorldKey};
    let mut out = HashMap::new();
    if let Ok(wit_component::DecodedWasm::Component(resolve, world)) = wit_component::decode(bytes)
    {
        let world = &resolve.worlds[world];
        for (key, item) in &world.exports {
            match item {
                WorldItem::Function(f) => {
                    if let Some(d) = &f.docs.contents {
                        out.insert((None, f.name.clone()), d.trim().to_string());
                    }
                }
                WorldItem::Interface { id, .. } => {
                    let iface_name = match key {
                        WorldKey::Name(n) => n.clone(),
                        WorldKey::Interface(_) => resolve.name_world_key(key),
                    };
                    collect_interface_docs(&resolve, *id, &iface_name, &mut out);
                }
                WorldItem::Type { .. } => {}
            }
        }
    }
    if let Some(section) = custom_section(bytes, "wit-package")
        && let Ok(wit_component::DecodedWasm::WitPackage(resolve, pkg)) =
            wit_component::decode(section)
    {
        for (_, id) in &resolve.packages[pkg].interfaces {
            let Some(name) = resolve.id_of(*id) else {
                continue;
            };
            collect_interface_docs(&resolve, *id, &name, &mut out);
        }
        for (_, w) in &resolve.packages[pkg].worlds {
            for (_, item) in &resolve.worlds[*w].exports {
                if let WorldItem::Function(f) = item
                    && let Some(d) = &f.docs.contents
                {
                    out.entry((None, f.name.clone()))
                        .or_insert_with(|| d.trim().to_string());
                }
            }
        }
    }
    out
}

fn collect_interface_docs(
    resolve: &wit_parser::Resolve,
    id: wit_parser::InterfaceId,
    iface_name: &str,
    out: &mut HashMap<(Option<String>, String), String>,
) {
    for (fname, f) in &resolve.interfaces[id].functions {
        if let Some(d) = &f.docs.contents {
            out.entry((Some(iface_name.to_string()), fname.clone()))
                .or_insert_with(|| d.trim().to_string());
        }
    }
}

/// The payload of the first top-level custom section called `name`.
fn custom_section<'a>(bytes: &'a [u8], name: &str) -> Option<&'a [u8]> {
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload {
            Ok(wasmparser::Payload::CustomSection(c)) if c.name() == name => return Some(c.data()),
            // Only the outer component's sections: skip nested modules/components.
            Ok(wasmparser::Payload::ModuleSection { .. })
            | Ok(wasmparser::Payload::ComponentSection { .. }) => {}
            Err(_) => return None,
            _ => {}
        }
    }
    None
}

/// A WIT-like rendering of a type, for human output.
pub fn wit_type(ty: &Type) -> String {
    let list = |it: Vec<String>| it.join(", ");
    match ty {
        Type::Bool => "bool".into(),
        Type::S8 => "s8".into(),
        Type::U8 => "u8".into(),
        Type::S16 => "s16".into(),
        Type::U16 => "u16".into(),
        Type::S32 => "s32".into(),
        Type::U32 => "u32".into(),
        Type::S64 => "s64".into(),
        Type::U64 => "u64".into(),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::List(l) => format!("list<{}>", wit_type(&l.ty())),
        Type::FixedLengthList(l) => format!("list<{}, {}>", wit_type(&l.ty()), l.len()),
        Type::Map(m) => format!("map<{}, {}>", wit_type(&m.key()), wit_type(&m.value())),
        Type::Record(r) => format!(
            "record {{ {} }}",
            list(
                r.fields()
                    .map(|f| format!("{}: {}", f.name, wit_type(&f.ty)))
                    .collect()
            )
        ),
        Type::Tuple(t) => format!("tuple<{}>", list(t.types().map(|t| wit_type(&t)).collect())),
        Type::Variant(v) => format!(
            "variant {{ {} }}",
            list(
                v.cases()
                    .map(|c| match &c.ty {
                        Some(t) => format!("{}({})", c.name, wit_type(t)),
                        None => c.name.to_string(),
                    })
                    .collect()
            )
        ),
        Type::Enum(e) => format!(
            "enum {{ {} }}",
            list(e.names().map(str::to_string).collect())
        ),
        Type::Option(o) => format!("option<{}>", wit_type(&o.ty())),
        Type::Result(r) => match (r.ok(), r.err()) {
            (None, None) => "result".into(),
            (Some(o), None) => format!("result<{}>", wit_type(&o)),
            (None, Some(e)) => format!("result<_, {}>", wit_type(&e)),
            (Some(o), Some(e)) => format!("result<{}, {}>", wit_type(&o), wit_type(&e)),
        },
        Type::Flags(f) => format!(
            "flags {{ {} }}",
            list(f.names().map(str::to_string).collect())
        ),
        Type::Own(_) => "own<resource>".into(),
        Type::Borrow(_) => "borrow<resource>".into(),
        Type::Future(_) => "future".into(),
        Type::Stream(_) => "stream".into(),
        Type::ErrorContext => "error-context".into(),
    }
}

impl FunctionInfo {
    /// A tool's default description: the WIT docs if the component carries
    /// them, and the signature (what MCP clients and agents' models see).
    pub fn tool_description(&self) -> String {
        let signature = self.signature();
        match &self.docs {
            Some(d) => format!("{}\n\nWIT: {signature}", d.trim()),
            None => format!("WIT: {signature}"),
        }
    }

    /// `name(a: t, b: u) -> r`, WIT style.
    pub fn signature(&self) -> String {
        let params = self
            .params
            .iter()
            .map(|(n, t)| format!("{n}: {}", wit_type(t)))
            .collect::<Vec<_>>()
            .join(", ");
        match &self.result {
            Some(r) => format!("{}({params}) -> {}", self.short_name(), wit_type(r)),
            None => format!("{}({params})", self.short_name()),
        }
    }
}
