//! What a policy decides on: who asks ([`Caller`]) and what for
//! ([`Interaction`]), and how the two become a Cedar request.

use std::collections::BTreeMap;

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression,
};
use serde::{Deserialize, Serialize};

/// Who makes an interaction: the call it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Caller {
    /// The component's name (its registry name, or the name its file, URL
    /// or OCI reference gives it).
    pub component: String,
    /// The component's content digest (`sha256:…`).
    #[serde(default)]
    pub digest: String,
    /// The function called.
    #[serde(default)]
    pub function: String,
    /// The agent whose turn this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The plan a step of which this call is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// That step's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The id of the API token the call was made with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// A host interaction a policy is asked about, in Tessera's terms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Interaction {
    /// An outgoing HTTP request (`http.request`).
    Http {
        /// The method (`GET`, …).
        method: String,
        /// The absolute URL.
        url: String,
        /// Request headers (names are compared in lower case).
        #[serde(default)]
        headers: BTreeMap<String, String>,
    },
    /// A file operation (`file.read` or `file.write`).
    File {
        /// The operation: `open`, `stat`, `mkdir`, `unlink`, `rename`, …
        operation: String,
        /// The path as the guest sees it.
        path: String,
        /// Whether it changes anything (an open for writing, creating or
        /// truncating; any operation that is not a read).
        #[serde(default)]
        write: bool,
    },
    /// A key-value operation (`kv.read` or `kv.write`).
    Kv {
        /// The operation: `get`, `exists`, `list`, `set`, `delete`, …
        operation: String,
        /// The bucket.
        bucket: String,
        /// The key (`""` for an operation on the whole bucket).
        #[serde(default)]
        key: String,
        /// Whether it changes anything.
        #[serde(default)]
        write: bool,
    },
    /// A completion from an LLM provider (`llm.complete`).
    Llm {
        /// The provider's name.
        provider: String,
        /// The model.
        model: String,
        /// The most tokens the completion may produce, when capped.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_tokens: Option<u64>,
        /// How many messages the request holds.
        #[serde(default)]
        messages: u64,
        /// The names of the tools offered to the model.
        #[serde(default)]
        tools: Vec<String>,
        /// Tokens this call has used so far (prompt and completion).
        #[serde(default)]
        tokens_used: u64,
    },
    /// A `wasi:nn` model load (`nn.load`).
    Nn {
        /// The installed model's name.
        model: String,
    },
    /// A tool call an agent makes (`tool.call`).
    Tool {
        /// The tool's name (`grant__function`).
        name: String,
        /// The arguments, as the JSON text the agent passed.
        #[serde(default)]
        arguments: String,
    },
}

impl Interaction {
    /// The Cedar action: `http.request`, `file.read`, `file.write`,
    /// `kv.read`, `kv.write`, `llm.complete`, `nn.load` or `tool.call`.
    pub fn action(&self) -> &'static str {
        match self {
            Self::Http { .. } => "http.request",
            Self::File { write: false, .. } => "file.read",
            Self::File { write: true, .. } => "file.write",
            Self::Kv { write: false, .. } => "kv.read",
            Self::Kv { write: true, .. } => "kv.write",
            Self::Llm { .. } => "llm.complete",
            Self::Nn { .. } => "nn.load",
            Self::Tool { .. } => "tool.call",
        }
    }

    /// The group its action belongs to, if any (`http`, `file`, `kv`).
    pub fn group(&self) -> Option<&'static str> {
        match self {
            Self::Http { .. } => Some("http"),
            Self::File { .. } => Some("file"),
            Self::Kv { .. } => Some("kv"),
            _ => None,
        }
    }

    /// The capability whose audit events it appears in.
    pub fn capability(&self) -> &'static str {
        match self {
            Self::Http { .. } => "http",
            Self::File { .. } => "files",
            Self::Kv { .. } => "keyvalue",
            Self::Llm { .. } => "llm",
            Self::Nn { .. } => "nn",
            Self::Tool { .. } => "agent",
        }
    }

    /// A one-line description: `GET https://…`, `file.write /data/x`, …
    pub fn describe(&self) -> String {
        match self {
            Self::Http { method, url, .. } => format!("{method} {url}"),
            Self::File {
                operation, path, ..
            } => format!("{operation} {path}"),
            Self::Kv {
                operation,
                bucket,
                key,
                ..
            } => format!("{operation} {bucket}/{key}"),
            Self::Llm {
                provider, model, ..
            } => format!("complete {provider}/{model}"),
            Self::Nn { model } => format!("load {model}"),
            Self::Tool { name, arguments } => format!("tool {name} {arguments}"),
        }
    }

    /// The resource entity: its type, id and tags.
    fn resource(&self) -> (&'static str, String, Vec<(String, String)>) {
        match self {
            Self::Http { url, headers, .. } => {
                let uri: Option<http::Uri> = url.parse().ok();
                let host = uri
                    .as_ref()
                    .and_then(|u| u.host())
                    .unwrap_or_default()
                    .to_string();
                let tags = headers
                    .iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                    .collect();
                ("Host", host, tags)
            }
            Self::File { path, .. } => ("File", path.clone(), Vec::new()),
            Self::Kv { bucket, .. } => ("Bucket", bucket.clone(), Vec::new()),
            Self::Llm {
                provider, model, ..
            } => ("Model", format!("{provider}/{model}"), Vec::new()),
            Self::Nn { model } => ("Model", model.clone(), Vec::new()),
            Self::Tool { name, arguments } => ("Tool", name.clone(), argument_tags(arguments)),
        }
    }

    /// The interaction's own context fields.
    fn context(&self, out: &mut Vec<(String, RestrictedExpression)>) {
        let s = |v: &str| RestrictedExpression::new_string(v.to_string());
        let mut put = |k: &str, v: RestrictedExpression| out.push((k.to_string(), v));
        match self {
            Self::Http { method, url, .. } => {
                let uri: Option<http::Uri> = url.parse().ok();
                let scheme = uri
                    .as_ref()
                    .and_then(|u| u.scheme_str())
                    .unwrap_or_default();
                let port = uri
                    .as_ref()
                    .and_then(|u| u.port_u16())
                    .unwrap_or(if scheme == "http" { 80 } else { 443 });
                put("method", s(&method.to_ascii_uppercase()));
                put("scheme", s(scheme));
                put(
                    "host",
                    s(uri.as_ref().and_then(|u| u.host()).unwrap_or_default()),
                );
                put("port", RestrictedExpression::new_long(i64::from(port)));
                put("path", s(uri.as_ref().map_or("", |u| u.path())));
                put(
                    "query",
                    s(uri.as_ref().and_then(|u| u.query()).unwrap_or_default()),
                );
                put("url", s(url));
            }
            Self::File {
                operation, path, ..
            } => {
                put("path", s(path));
                put("operation", s(operation));
            }
            Self::Kv {
                operation,
                bucket,
                key,
                ..
            } => {
                put("bucket", s(bucket));
                put("key", s(key));
                put("operation", s(operation));
            }
            Self::Llm {
                provider,
                model,
                max_tokens,
                messages,
                tools,
                tokens_used,
            } => {
                put("provider", s(provider));
                put("model", s(model));
                if let Some(m) = max_tokens {
                    put("max_tokens", long(*m));
                }
                put("messages", long(*messages));
                put(
                    "tools",
                    RestrictedExpression::new_set(tools.iter().map(|t| s(t))),
                );
                put("tokens_used", long(*tokens_used));
            }
            Self::Nn { model } => put("model", s(model)),
            Self::Tool { name, arguments } => {
                put("tool", s(name));
                put("arguments", s(arguments));
            }
        }
    }
}

fn long(n: u64) -> RestrictedExpression {
    RestrictedExpression::new_long(i64::try_from(n).unwrap_or(i64::MAX))
}

/// A tool's top-level arguments as tags: a string as is, any other value
/// as its JSON text. Arguments that are not a JSON object give none.
fn argument_tags(arguments: &str) -> Vec<(String, String)> {
    match serde_json::from_str::<serde_json::Value>(arguments) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| {
                let text = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, text)
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The entity types requests use, parsed once (Cedar parses a type name
/// with its full grammar: too slow to repeat for every decision).
const KINDS: &[&str] = &[
    "Component",
    "Agent",
    "Action",
    "Host",
    "File",
    "Bucket",
    "Model",
    "Tool",
];

fn kind_name(kind: &str) -> Result<EntityTypeName, String> {
    static PARSED: std::sync::OnceLock<Vec<Result<EntityTypeName, String>>> =
        std::sync::OnceLock::new();
    let parsed = PARSED.get_or_init(|| {
        KINDS
            .iter()
            .map(|k| {
                format!("Tessera::{k}")
                    .parse()
                    .map_err(|e| format!("entity type Tessera::{k}: {e}"))
            })
            .collect()
    });
    match KINDS.iter().position(|k| *k == kind) {
        Some(i) => parsed[i].clone(),
        None => Err(format!("no entity type Tessera::{kind}")),
    }
}

/// `Tessera::<kind>::"<id>"`.
pub(crate) fn uid(kind: &str, id: &str) -> Result<EntityUid, String> {
    Ok(EntityUid::from_type_name_and_id(
        kind_name(kind)?,
        EntityId::new(id),
    ))
}

impl Caller {
    /// The principal: the agent (in its component) or the component.
    pub fn principal(&self) -> Result<EntityUid, String> {
        match &self.agent {
            Some(a) => uid("Agent", a),
            None => uid("Component", &self.component),
        }
    }

    fn context(&self, out: &mut Vec<(String, RestrictedExpression)>) {
        let s = |v: &str| RestrictedExpression::new_string(v.to_string());
        out.push(("component".into(), s(&self.component)));
        out.push(("digest".into(), s(&self.digest)));
        out.push(("function".into(), s(&self.function)));
        for (k, v) in [
            ("agent", &self.agent),
            ("plan", &self.plan),
            ("step", &self.step),
            ("token", &self.token),
        ] {
            if let Some(v) = v {
                out.push((k.into(), s(v)));
            }
        }
    }
}

/// The Cedar request and entities for `caller` making `interaction`.
pub(crate) fn build(
    caller: &Caller,
    interaction: &Interaction,
) -> Result<(Request, Entities), String> {
    let component = uid("Component", &caller.component)?;
    let principal = caller.principal()?;
    let action = uid("Action", interaction.action())?;
    let (kind, id, tags) = interaction.resource();
    let resource = uid(kind, &id)?;

    let mut entities = vec![Entity::new_no_attrs(component.clone(), Default::default())];
    if principal != component {
        entities.push(Entity::new_no_attrs(
            principal.clone(),
            [component].into_iter().collect(),
        ));
    }
    let groups = interaction
        .group()
        .map(|g| uid("Action", g))
        .transpose()?
        .into_iter()
        .collect();
    entities.push(Entity::new_no_attrs(action.clone(), groups));
    entities.push(
        Entity::new_with_tags(
            resource.clone(),
            [],
            [],
            tags.into_iter()
                .map(|(k, v)| (k, RestrictedExpression::new_string(v))),
        )
        .map_err(|e| format!("resource {kind}::{id:?}: {e}"))?,
    );
    let entities = Entities::from_entities(entities, None).map_err(|e| format!("entities: {e}"))?;

    let mut pairs = Vec::with_capacity(16);
    caller.context(&mut pairs);
    interaction.context(&mut pairs);
    let context = Context::from_pairs(pairs).map_err(|e| format!("context: {e}"))?;
    let request = Request::new(principal, action, resource, context, None)
        .map_err(|e| format!("request: {e}"))?;
    Ok((request, entities))
}
