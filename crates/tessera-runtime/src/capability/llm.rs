//! `tessera:agent/llm`: chat completions with tool calling, from
//! OpenAI-compatible providers the host configures.
//!
//! Manifest key: `[llm]` — the models a component may ask for, as
//! `provider/model` patterns (`"local/*"`: any model of `local`; the first
//! entry is the default for a request that names none), and optional token
//! budgets per call, per turn (one component call) and per agent. Deny by
//! default: without a grant every `chat` answers `llm-error.denied` and
//! writes a `deny` audit event naming the model asked for.
//!
//! Which endpoint serves a provider, with which key, is host configuration
//! ([`LlmProviders`], the `[llm.providers.<name>]` tables of the data
//! directory's `tessera.toml`), never the manifest's business. The key is
//! sent as `Authorization: Bearer …` and never enters a step, an error
//! text, an audit line or a `Debug` rendering.
//!
//! Every `chat` is one step (`llm.chat`), replayed with
//! [`Replay::Answer`](crate::gateway::Replay::Answer): the request records
//! the resolved model, a digest of the whole request, the number of
//! messages, the tool names and the `max_tokens` sent, not the
//! conversation (which the guest holds and can rebuild); the response is
//! the whole answer, errors included. A replay answers from the journal
//! without a provider and diverges when the guest asks for anything else
//! (any change to the conversation changes the digest).
//!
//! Token usage is added to the call's usage counters
//! ([`Gateway::add_usage`], `llm.prompt_tokens` and
//! `llm.completion_tokens`), replayed answers included, so a caller
//! charges a replayed call the same as the recorded one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use wasmtime::component::Linker;
use wasmtime_wasi::WasiCtxBuilder;

use super::agent_wit::bindings::tessera::agent::llm as wit;
use super::{BindError, Capability, Effects, HostConfig, Section};
use crate::audit::Decision;
use crate::gateway::{Gateway, Op, Step};
use crate::host::HostState;
use crate::manifest::ManifestError;
use crate::policy::Interaction;

/// The call-context key through which a caller gives a call what remains
/// of an agent's token budget (a decimal number; absent: unlimited).
pub const AGENT_TOKENS_LEFT: &str = "tessera.agent.tokens_left";

/// The usage counter of prompt tokens ([`crate::CallOutcome::usage`]).
pub const PROMPT_TOKENS: &str = "llm.prompt_tokens";

/// The usage counter of completion tokens ([`crate::CallOutcome::usage`]).
pub const COMPLETION_TOKENS: &str = "llm.completion_tokens";

/// The largest answer read from a provider.
const MAX_ANSWER_BYTES: usize = 16 << 20;

/// The LLM capability.
#[derive(Debug)]
pub struct Llm;

// ------------------------------------------------------------------ grant

/// What a manifest's `[llm]` grants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlmGrant {
    /// `provider/model` patterns (`model` may be `*`), in manifest order;
    /// the first is the default model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// The most tokens one completion may generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens_per_call: Option<u32>,
    /// The most tokens (prompt and completion) the completions of one
    /// component call may use together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens_per_turn: Option<u64>,
    /// The most tokens an agent may use over its life: enforced by the
    /// agent host, which gives each turn what remains
    /// ([`AGENT_TOKENS_LEFT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens_per_agent: Option<u64>,
    /// Set for a replay: the models need no provider on this host.
    #[serde(skip)]
    replay: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLlm {
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    max_tokens_per_call: Option<u32>,
    #[serde(default)]
    max_tokens_per_turn: Option<u64>,
    #[serde(default)]
    max_tokens_per_agent: Option<u64>,
}

/// A granted model pattern, split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pattern<'a> {
    provider: &'a str,
    /// `None`: `*`, any model.
    model: Option<&'a str>,
}

fn pattern(entry: &str) -> Pattern<'_> {
    let (provider, model) = entry.split_once('/').unwrap_or((entry, "*"));
    Pattern {
        provider,
        model: (model != "*").then_some(model),
    }
}

/// A provider name: letters, digits, `-`, `_`, `.`.
fn check_provider_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the provider name is empty".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "provider `{name}` contains {c:?} (use letters, digits, `-`, `_`, `.`)"
        ));
    }
    Ok(())
}

fn check_pattern(entry: &str) -> Result<(), String> {
    let Some((provider, model)) = entry.split_once('/') else {
        return Err(format!(
            "`{entry}` is not `provider/model` (write e.g. `local/{entry}`, or `local/*` for any model of a provider)"
        ));
    };
    check_provider_name(provider)?;
    if model.is_empty() {
        return Err(format!(
            "`{entry}` names no model (write `{provider}/*` for any model)"
        ));
    }
    if model != "*" && model.contains('*') {
        return Err(format!(
            "`{entry}`: a model is a name or `*`, not a pattern"
        ));
    }
    if model.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{entry}`: the model name contains white space"));
    }
    Ok(())
}

/// A resolved model.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelRef {
    provider: String,
    model: String,
}

impl std::fmt::Display for ModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

/// The model a request asks for, checked against the grant: `provider/model`
/// when the part before the first `/` is a granted provider, otherwise a
/// model name matched against the granted patterns' models (an exact name
/// first, then the first `*`). `Err` holds why it is denied.
fn resolve(grant: &LlmGrant, asked: Option<&str>) -> Result<ModelRef, String> {
    if grant.models.is_empty() {
        return Err(format!(
            "{} is not granted: the manifest grants no model (add `[llm] models = [\"provider/model\"]`)",
            asked.map_or("a model".to_string(), |m| format!("model `{m}`"))
        ));
    }
    let patterns: Vec<Pattern<'_>> = grant.models.iter().map(|m| pattern(m)).collect();
    let Some(asked) = asked.filter(|a| !a.is_empty()) else {
        let first = patterns[0];
        return match first.model {
            Some(model) => Ok(ModelRef {
                provider: first.provider.into(),
                model: model.into(),
            }),
            None => Err(format!(
                "the request names no model and the default, `{}`, is a pattern: name a model",
                grant.models[0]
            )),
        };
    };
    let granted = grant.models.join(", ");
    if let Some((provider, model)) = asked.split_once('/')
        && patterns.iter().any(|p| p.provider == provider)
    {
        return if patterns
            .iter()
            .any(|p| p.provider == provider && p.model.is_none_or(|m| m == model))
        {
            Ok(ModelRef {
                provider: provider.into(),
                model: model.into(),
            })
        } else {
            Err(format!(
                "model `{asked}` is not granted (granted: {granted})"
            ))
        };
    }
    let found = patterns
        .iter()
        .find(|p| p.model == Some(asked))
        .or_else(|| patterns.iter().find(|p| p.model.is_none()));
    match found {
        Some(p) => Ok(ModelRef {
            provider: p.provider.into(),
            model: asked.into(),
        }),
        None => Err(format!(
            "model `{asked}` is not granted (granted: {granted})"
        )),
    }
}

// ------------------------------------------------------------------ host configuration

/// An API key: sent to its provider, shown nowhere (its `Debug` is
/// redacted; it is never serialized).
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// A key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key itself, for the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// What serves a provider's models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProviderKind {
    /// An OpenAI-compatible HTTP endpoint.
    #[default]
    OpenAi,
    /// The models installed on this host, run in this process
    /// ([`LocalModels`]).
    Local,
}

/// Models run in this process (the local LLM provider's engine; the
/// `tessera-models` crate implements it over the model directory).
pub trait LocalModels: Send + Sync + std::fmt::Debug {
    /// The language models it can serve.
    fn names(&self) -> Vec<String>;

    /// One completion of `model`. `max_tokens` is the cap after budgets;
    /// `on_text` receives the answer's text as it is generated; once
    /// `cancel` is set the completion ends with [`LlmError::Timeout`].
    /// Blocking: callers run it off the async executor.
    fn complete(
        &self,
        model: &str,
        request: &ChatRequest,
        max_tokens: Option<u32>,
        cancel: &std::sync::atomic::AtomicBool,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<ChatResponse, LlmError>;
}

/// The name the local provider has unless the host configuration gives
/// it another ([`LlmProviders::with_local`]).
pub const LOCAL_PROVIDER: &str = "local";

/// How the host reaches one provider: an OpenAI-compatible endpoint, or
/// the models installed on this host.
#[derive(Debug, Clone)]
pub struct Provider {
    /// What serves the models.
    pub kind: ProviderKind,
    /// The API's base URL (`http://127.0.0.1:11434/v1`); requests go to
    /// `{base_url}/chat/completions`. Empty for a local provider.
    pub base_url: String,
    /// Sent as `Authorization: Bearer <key>` when set.
    pub api_key: Option<ApiKey>,
    /// The longest a completion may take, connection and answer included.
    pub timeout: Duration,
    /// Ask for server-sent events and assemble them (the answer recorded
    /// is the same whole completion).
    pub stream: bool,
    /// The models it serves (empty: any the manifest grants).
    pub models: Vec<String>,
}

impl Provider {
    /// A provider at `base_url` with no key, a 120 s timeout, no
    /// streaming, any model.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            kind: ProviderKind::OpenAi,
            base_url: base_url.into(),
            api_key: None,
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            stream: false,
            models: Vec::new(),
        }
    }
}

impl Provider {
    /// The provider of this host's installed models (any of them, a
    /// 120 s timeout).
    pub fn local() -> Self {
        Self {
            kind: ProviderKind::Local,
            ..Self::new("")
        }
    }
}

/// The default `timeout_secs` of a provider.
pub const DEFAULT_TIMEOUT_SECS: u64 = 120;

/// The LLM providers of a host, by name (what `provider/model` names):
/// the `[llm.providers.<name>]` tables of `<data>/tessera.toml`.
///
/// ```toml
/// [llm.providers.local]          # Ollama
/// base_url = "http://127.0.0.1:11434/v1"
/// timeout_secs = 120             # default 120
/// stream = false                 # default false
/// models = ["llama3.2"]          # default: any model the manifest grants
///
/// [llm.providers.openai]
/// base_url = "https://api.openai.com/v1"
/// api_key_env = "OPENAI_API_KEY" # or api_key_file = "openai.key"
///
/// [llm.providers.mine]           # this host's installed models
/// kind = "local"                 # (`local` exists without this table)
/// ```
pub struct LlmProviders {
    /// Provider name → how to reach it.
    pub providers: BTreeMap<String, Provider>,
    local: Option<std::sync::Arc<dyn LocalModels>>,
    /// Whether providers were configured (not only the implicit local
    /// one): then every granted provider must be one of them.
    configured: bool,
    client: OnceLock<Result<reqwest::Client, String>>,
}

impl std::fmt::Debug for LlmProviders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmProviders")
            .field("providers", &self.providers)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

/// A `[llm]` host setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {field}: {message}")]
pub struct LlmSettingsError {
    /// The file (or `<inline>`).
    pub origin: String,
    /// The setting, e.g. `llm.providers.local.base_url`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    api_key_env: Option<String>,
    #[serde(default)]
    api_key_file: Option<PathBuf>,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    models: Vec<String>,
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

impl LlmProviders {
    /// Providers from a map.
    pub fn new(providers: BTreeMap<String, Provider>) -> Self {
        Self {
            configured: true,
            providers,
            local: None,
            client: OnceLock::new(),
        }
    }

    /// Only the local provider (a host with no `[llm]` settings): grants
    /// of other providers load, and answer `unavailable` when called.
    pub fn local_only(engine: std::sync::Arc<dyn LocalModels>) -> Self {
        let mut p = Self::new(BTreeMap::new()).with_local(engine);
        p.configured = false;
        p
    }

    /// Serves this host's installed models through `engine`: every
    /// provider of kind `local`, and a provider named [`LOCAL_PROVIDER`]
    /// unless one of that name is configured.
    pub fn with_local(mut self, engine: std::sync::Arc<dyn LocalModels>) -> Self {
        self.providers
            .entry(LOCAL_PROVIDER.to_string())
            .or_insert_with(Provider::local);
        self.local = Some(engine);
        self
    }

    /// The engine of the local providers, when this host has one.
    pub fn local(&self) -> Option<&std::sync::Arc<dyn LocalModels>> {
        self.local.as_ref()
    }

    /// The provider named `name`.
    pub fn get(&self, name: &str) -> Option<&Provider> {
        self.providers.get(name)
    }

    /// Reads `[llm]` from `<data>/tessera.toml`: `None` when the file or
    /// the table is missing (the host has no LLM providers). Relative
    /// `api_key_file` paths are relative to `data_dir`.
    pub fn load(data_dir: &Path) -> Result<Option<Self>, LlmSettingsError> {
        let path = data_dir.join("tessera.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_toml(&text, &path.display().to_string(), data_dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(LlmSettingsError {
                origin: path.display().to_string(),
                field: String::new(),
                message: e.to_string(),
            }),
        }
    }

    /// Reads the `[llm]` table of a settings document (other tables are
    /// ignored: they belong to others); keys named by `api_key_env` are
    /// read from the process environment. `origin` names the document in
    /// errors; `base` is what relative `api_key_file` paths are relative to.
    pub fn from_toml(
        text: &str,
        origin: &str,
        base: &Path,
    ) -> Result<Option<Self>, LlmSettingsError> {
        Self::from_toml_with_env(text, origin, base, &|name| std::env::var(name).ok())
    }

    /// [`LlmProviders::from_toml`] with the environment given as a lookup.
    pub fn from_toml_with_env(
        text: &str,
        origin: &str,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, LlmSettingsError> {
        let err = |field: &str, message: String| LlmSettingsError {
            origin: origin.to_string(),
            field: field.to_string(),
            message,
        };
        let doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| err("", e.message().trim_end().to_string()))?;
        let Some(llm) = doc.get("llm") else {
            return Ok(None);
        };
        let toml::Value::Table(llm) = llm else {
            return Err(err(
                "llm",
                "must be a table (`[llm.providers.<name>]`)".into(),
            ));
        };
        let mut providers = BTreeMap::new();
        for (key, value) in llm {
            if key != "providers" {
                return Err(err(
                    &format!("llm.{key}"),
                    "unknown key (known: `providers`; what a component may use is granted in its manifest)".into(),
                ));
            }
            let toml::Value::Table(table) = value else {
                return Err(err(
                    "llm.providers",
                    "must be a table of providers (`[llm.providers.<name>]`)".into(),
                ));
            };
            for (name, raw) in table {
                let field = format!("llm.providers.{name}");
                check_provider_name(name).map_err(|m| err(&field, m))?;
                let raw: RawProvider = raw.clone().try_into().map_err(|e: toml::de::Error| {
                    err(&field, e.message().trim_end().replace('\n', " "))
                })?;
                providers.insert(
                    name.clone(),
                    provider(&raw, &field, base, env).map_err(|(f, m)| err(&f, m))?,
                );
            }
        }
        Ok(Some(Self::new(providers)))
    }

    /// The HTTP client every provider shares (built on first use).
    fn client(&self) -> Result<&reqwest::Client, String> {
        self.client
            .get_or_init(|| {
                // reqwest builds its rustls configuration from the
                // process's default provider: install ring (a second
                // install is refused harmlessly).
                let _ = rustls::crypto::ring::default_provider().install_default();
                reqwest::Client::builder()
                    .user_agent(concat!("tessera/", env!("CARGO_PKG_VERSION")))
                    .connect_timeout(Duration::from_secs(10))
                    .build()
                    .map_err(|e| format!("cannot build the HTTP client: {}", chain(&e)))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

fn provider(
    raw: &RawProvider,
    field: &str,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Provider, (String, String)> {
    let at = |k: &str| format!("{field}.{k}");
    match raw.kind.as_deref() {
        None | Some("openai") => {}
        Some("local") => {
            let set = [
                ("base_url", raw.base_url.is_some()),
                ("api_key_env", raw.api_key_env.is_some()),
                ("api_key_file", raw.api_key_file.is_some()),
                ("stream", raw.stream),
            ];
            if let Some((k, _)) = set.iter().find(|(_, set)| *set) {
                return Err((
                    at(k),
                    "a `local` provider runs this host's installed models: it has no endpoint, key or stream setting".into(),
                ));
            }
            if raw.timeout_secs == 0 {
                return Err((at("timeout_secs"), "must be at least 1".into()));
            }
            return Ok(Provider {
                timeout: Duration::from_secs(raw.timeout_secs),
                models: raw.models.clone(),
                ..Provider::local()
            });
        }
        Some(other) => {
            return Err((
                at("kind"),
                format!("unknown kind `{other}` (known: `openai`, the default, and `local`)"),
            ));
        }
    }
    let Some(base_url) = &raw.base_url else {
        return Err((
            at("base_url"),
            "missing: an `openai` provider needs the URL of its endpoint (or write `kind = \"local\"` for this host's installed models)".into(),
        ));
    };
    let url = base_url.trim_end_matches('/');
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| {
            (
                at("base_url"),
                format!("`{base_url}` is not an http:// or https:// URL"),
            )
        })?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err((at("base_url"), format!("`{base_url}` names no host")));
    }
    if authority.contains('@') {
        return Err((
            at("base_url"),
            "credentials in the URL would be shown in errors; give the key with `api_key_env` or `api_key_file`".into(),
        ));
    }
    if raw.timeout_secs == 0 {
        return Err((at("timeout_secs"), "must be at least 1".into()));
    }
    let api_key = match (&raw.api_key_env, &raw.api_key_file) {
        (Some(_), Some(_)) => {
            return Err((
                at("api_key_file"),
                "give the key through `api_key_env` or `api_key_file`, not both".into(),
            ));
        }
        (Some(var), None) => match env(var) {
            Some(v) if !v.trim().is_empty() => Some(ApiKey::new(v.trim())),
            _ => {
                return Err((
                    at("api_key_env"),
                    format!("the environment variable `{var}` is not set (or empty)"),
                ));
            }
        },
        (None, Some(path)) => {
            let path = base.join(path);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| (at("api_key_file"), format!("{}: {e}", path.display())))?;
            if text.trim().is_empty() {
                return Err((at("api_key_file"), format!("{} is empty", path.display())));
            }
            Some(ApiKey::new(text.trim()))
        }
        (None, None) => None,
    };
    for (i, m) in raw.models.iter().enumerate() {
        if m.is_empty() || m.contains('*') {
            return Err((
                format!("{field}.models[{i}]"),
                format!("`{m}` is not a model name"),
            ));
        }
    }
    Ok(Provider {
        kind: ProviderKind::OpenAi,
        base_url: url.to_string(),
        api_key,
        timeout: Duration::from_secs(raw.timeout_secs),
        stream: raw.stream,
        models: raw.models.clone(),
    })
}

// ------------------------------------------------------------------ steps

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// `system`.
    System,
    /// `user`.
    User,
    /// `assistant`.
    Assistant,
    /// `tool`.
    Tool,
}

/// A tool call the model asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id for the call.
    pub id: String,
    /// The tool.
    pub name: String,
    /// Its arguments, as JSON text.
    pub arguments: String,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// Its text.
    pub content: String,
    /// The tools an assistant message calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a `tool` message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// A tool offered to the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolDefinition {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of its arguments, as JSON text.
    pub parameters: String,
}

/// A completion request, as the guest made it (what the step's digest is
/// computed over, with the model resolved).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The model.
    pub model: Option<String>,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// The tools offered.
    pub tools: Vec<ToolDefinition>,
    /// The most tokens to generate.
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Sampling seed.
    pub seed: Option<u64>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Whether the model may, must or must not call tools (the WIT
    /// interface always asks for `auto`; OpenAI-compatible callers of
    /// `tessera serve` may ask for the others). Not serialized when
    /// `auto`, so the digests of recorded requests do not change.
    #[serde(default, skip_serializing_if = "ToolChoice::is_auto")]
    pub tool_choice: ToolChoice,
}

/// Whether a completion may call tools (OpenAI's `tool_choice`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ToolChoice {
    /// The model chooses between text and calls.
    #[default]
    Auto,
    /// No calls (the tools are not shown to the model).
    None,
    /// At least one call, and no text.
    Required,
    /// Calls of this tool only.
    Tool(String),
}

impl ToolChoice {
    /// Whether this is [`ToolChoice::Auto`].
    pub fn is_auto(&self) -> bool {
        *self == ToolChoice::Auto
    }
}

/// Tokens used by one completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the request.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
}

/// A completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The assistant's message.
    pub message: ChatMessage,
    /// Why generation stopped.
    pub finish_reason: String,
    /// Tokens used.
    pub usage: Usage,
    /// The model that answered, as `provider/model`.
    pub model: String,
}

/// Why there is no completion (`llm-error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LlmError {
    /// The manifest grants no such model.
    Denied(String),
    /// A token budget is used up.
    BudgetExceeded(String),
    /// The provider could not be reached or failed.
    Unavailable(String),
    /// The provider refused the request (4xx).
    Rejected(String),
    /// No answer within the provider's timeout.
    Timeout,
    /// The answer was not a completion.
    InvalidResponse(String),
}

impl std::fmt::Display for LlmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LlmError::Denied(m) => write!(f, "denied: {m}"),
            LlmError::BudgetExceeded(m) => write!(f, "budget-exceeded: {m}"),
            LlmError::Unavailable(m) => write!(f, "unavailable: {m}"),
            LlmError::Rejected(m) => write!(f, "rejected: {m}"),
            LlmError::Timeout => f.write_str("timeout"),
            LlmError::InvalidResponse(m) => write!(f, "invalid-response: {m}"),
        }
    }
}

impl std::error::Error for LlmError {}

/// The recorded request of a `chat` step: what identifies it, not the
/// conversation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatStep {
    /// The resolved model, `provider/model` (for a denied request, the
    /// model as asked; empty when it named none).
    pub model: String,
    /// `sha256:<hex>` of the canonical JSON of the whole request with the
    /// resolved model ([`ChatRequest`]).
    pub digest: String,
    /// How many messages the conversation has.
    pub messages: u64,
    /// The names of the tools offered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// The `max_tokens` sent to the provider: the request's, capped by the
    /// budgets. Not compared on replay (the agent's remaining budget is
    /// the caller's bookkeeping; what the guest asked is in the digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
}

impl PartialEq for ChatStep {
    fn eq(&self, o: &Self) -> bool {
        self.model == o.model
            && self.digest == o.digest
            && self.messages == o.messages
            && self.tools == o.tools
    }
}

/// `llm.chat`.
pub struct Chat;

impl Op for Chat {
    const CAPABILITY: &'static str = "llm";
    const NAME: &'static str = "chat";
    type Request = ChatStep;
    type Response = Result<ChatResponse, LlmError>;
}

// ------------------------------------------------------------------ WIT conversions

fn role_from(r: wit::Role) -> Role {
    match r {
        wit::Role::System => Role::System,
        wit::Role::User => Role::User,
        wit::Role::Assistant => Role::Assistant,
        wit::Role::Tool => Role::Tool,
    }
}

fn role_to(r: Role) -> wit::Role {
    match r {
        Role::System => wit::Role::System,
        Role::User => wit::Role::User,
        Role::Assistant => wit::Role::Assistant,
        Role::Tool => wit::Role::Tool,
    }
}

fn message_from(m: wit::ChatMessage) -> ChatMessage {
    ChatMessage {
        role: role_from(m.role),
        content: m.content,
        tool_calls: m
            .tool_calls
            .into_iter()
            .map(|c| ToolCall {
                id: c.id,
                name: c.name,
                arguments: c.arguments,
            })
            .collect(),
        tool_call_id: m.tool_call_id,
    }
}

fn message_to(m: ChatMessage) -> wit::ChatMessage {
    wit::ChatMessage {
        role: role_to(m.role),
        content: m.content,
        tool_calls: m
            .tool_calls
            .into_iter()
            .map(|c| wit::ToolCall {
                id: c.id,
                name: c.name,
                arguments: c.arguments,
            })
            .collect(),
        tool_call_id: m.tool_call_id,
    }
}

fn request_from(r: wit::ChatRequest) -> ChatRequest {
    ChatRequest {
        model: r.model,
        messages: r.messages.into_iter().map(message_from).collect(),
        tools: r
            .tools
            .into_iter()
            .map(|t| ToolDefinition {
                name: t.name,
                description: t.description,
                parameters: t.parameters,
            })
            .collect(),
        max_tokens: r.max_tokens,
        temperature: r.temperature,
        top_p: r.top_p,
        seed: r.seed,
        stop: r.stop,
        tool_choice: ToolChoice::Auto,
    }
}

fn answer_to(r: Result<ChatResponse, LlmError>) -> Result<wit::ChatResponse, wit::LlmError> {
    match r {
        Ok(r) => Ok(wit::ChatResponse {
            message: message_to(r.message),
            finish_reason: r.finish_reason,
            usage: wit::Usage {
                prompt_tokens: r.usage.prompt_tokens,
                completion_tokens: r.usage.completion_tokens,
            },
            model: r.model,
        }),
        Err(e) => Err(match e {
            LlmError::Denied(m) => wit::LlmError::Denied(m),
            LlmError::BudgetExceeded(m) => wit::LlmError::BudgetExceeded(m),
            LlmError::Unavailable(m) => wit::LlmError::Unavailable(m),
            LlmError::Rejected(m) => wit::LlmError::Rejected(m),
            LlmError::Timeout => wit::LlmError::Timeout,
            LlmError::InvalidResponse(m) => wit::LlmError::InvalidResponse(m),
        }),
    }
}

// ------------------------------------------------------------------ the host call

/// Per-call state: the tokens this call's completions used so far (the
/// turn budget counts against it).
#[derive(Debug, Default)]
pub struct LlmState {
    used: u64,
}

/// The `max_tokens` to send: the request's, capped by the call budget and
/// by what remains of the turn and agent budgets. `Err` says which budget
/// is used up.
fn budget(
    grant: &LlmGrant,
    agent_left: Option<&str>,
    used: u64,
    asked: Option<u32>,
) -> Result<Option<u32>, String> {
    if let Some(limit) = grant.max_tokens_per_turn
        && used >= limit
    {
        return Err(format!(
            "the turn's budget is used up: {used}/{limit} tokens (max_tokens_per_turn)"
        ));
    }
    let agent_left = match agent_left {
        None => None,
        Some(s) => Some(s.trim().parse::<u64>().map_err(|_| {
            format!("the agent's remaining budget ({AGENT_TOKENS_LEFT}) is not a number: `{s}`")
        })?),
    };
    if let Some(left) = agent_left
        && used >= left
    {
        return Err(format!(
            "the agent's budget is used up: {used}/{left} tokens of what it had left at the start of this turn (max_tokens_per_agent)"
        ));
    }
    let caps = [
        asked.map(u64::from),
        grant.max_tokens_per_call.map(u64::from),
        grant.max_tokens_per_turn.map(|l| l - used),
        agent_left.map(|l| l - used),
    ];
    Ok(caps
        .into_iter()
        .flatten()
        .min()
        .map(|c| u32::try_from(c).unwrap_or(u32::MAX)))
}

/// `sha256:<hex>` of the request's canonical JSON (struct field order).
fn digest(request: &ChatRequest) -> String {
    let bytes = serde_json::to_vec(request).unwrap_or_default();
    format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
}

impl wit::Host for HostState {
    async fn chat(
        &mut self,
        request: wit::ChatRequest,
    ) -> wasmtime::Result<Result<wit::ChatResponse, wit::LlmError>> {
        let gateway = self.gateway.clone();
        let grant = &gateway.grants().llm;
        let mut request = request_from(request);
        let resolved = resolve(grant, request.model.as_deref());
        let label = match &resolved {
            Ok(m) => m.to_string(),
            Err(_) => request.model.clone().unwrap_or_default(),
        };
        request.model = Some(label.clone());
        let cap = budget(
            grant,
            gateway.context(AGENT_TOKENS_LEFT).as_deref(),
            self.caps.llm.used,
            request.max_tokens,
        );
        let step = ChatStep {
            model: label.clone(),
            digest: digest(&request),
            messages: request.messages.len() as u64,
            tools: request.tools.iter().map(|t| t.name.clone()).collect(),
            max_tokens: cap.as_ref().map_or(request.max_tokens, |c| *c),
        };
        let target = if label.is_empty() {
            "(default model)".to_string()
        } else {
            label.clone()
        };
        // What the grant allows, the boundary policies may still deny.
        let asked = resolved.as_ref().ok().map(|m| Interaction::Llm {
            provider: m.provider.clone(),
            model: m.model.clone(),
            max_tokens: cap.as_ref().ok().copied().flatten().map(u64::from),
            messages: request.messages.len() as u64,
            tools: request.tools.iter().map(|t| t.name.clone()).collect(),
            tokens_used: self.caps.llm.used,
        });
        let resolved = match (resolved, &cap, &asked) {
            (Ok(m), Ok(_), Some(asked)) => gateway.authorize(asked).map(|()| m),
            (r, _, _) => r,
        };
        let mut span = gateway.interaction_span("llm", "complete", &target);
        span.decide(match (&resolved, &cap) {
            (Err(_), _) => "deny",
            (Ok(_), Err(_)) => "limit",
            (Ok(_), Ok(_)) => "allow",
        });
        match (&resolved, &cap) {
            (Err(reason), _) => gateway.audit("llm", target, Decision::Deny, Some(reason.clone())),
            (Ok(_), Err(why)) => gateway.audit("llm", target, Decision::Limit, Some(why.clone())),
            (Ok(_), Ok(_)) => gateway.audit("llm", target, Decision::Allow, None),
        }
        let index = gateway.reserve_index();
        let response = match gateway.answer::<Chat>(index, &step)? {
            Some(r) => r,
            None => match (resolved, cap) {
                (Err(reason), _) => Err(LlmError::Denied(reason)),
                (Ok(_), Err(why)) => Err(LlmError::BudgetExceeded(why)),
                (Ok(model), Ok(max_tokens)) => {
                    complete(&gateway, &model, &request, max_tokens).await
                }
            },
        };
        gateway.report::<Chat>(index, &step, &response);
        if let Ok(r) = &response {
            let (p, c) = (
                u64::from(r.usage.prompt_tokens),
                u64::from(r.usage.completion_tokens),
            );
            self.caps.llm.used = self.caps.llm.used.saturating_add(p + c);
            if let Some(asked) = &asked {
                gateway.charge_tokens(asked, p + c);
            }
            gateway.add_usage(PROMPT_TOKENS, p);
            gateway.add_usage(COMPLETION_TOKENS, c);
        }
        Ok(answer_to(response))
    }
}

// ------------------------------------------------------------------ the provider client

/// One completion from the provider that serves `model`, with the key
/// scrubbed from whatever comes back.
async fn complete(
    gateway: &Gateway,
    model: &ModelRef,
    request: &ChatRequest,
    max_tokens: Option<u32>,
) -> Result<ChatResponse, LlmError> {
    let Some(providers) = gateway.host().llm.clone() else {
        return Err(LlmError::Unavailable(
            "this host has no LLM providers configured".into(),
        ));
    };
    let Some(provider) = providers.get(&model.provider) else {
        return Err(LlmError::Unavailable(format!(
            "provider `{}` is not configured on this host (add [llm.providers.{}] to the data directory's tessera.toml)",
            model.provider, model.provider
        )));
    };
    if !provider.models.is_empty() && !provider.models.contains(&model.model) {
        return Err(LlmError::Unavailable(format!(
            "provider `{}` does not serve model `{}` (it serves: {})",
            model.provider,
            model.model,
            provider.models.join(", ")
        )));
    }
    if provider.kind == ProviderKind::Local {
        return complete_local(gateway, &providers, provider, model, request, max_tokens).await;
    }
    let client = providers.client().map_err(LlmError::Unavailable)?;
    let answer = post(client, provider, model, request, max_tokens).await;
    match &provider.api_key {
        Some(key) => scrub(answer, key.expose()),
        None => answer,
    }
}

/// One completion from this host's installed models, run off the
/// executor and bounded by the provider's timeout and the call's deadline
/// (past either, the completion is cancelled at its next token).
async fn complete_local(
    gateway: &Gateway,
    providers: &LlmProviders,
    provider: &Provider,
    model: &ModelRef,
    request: &ChatRequest,
    max_tokens: Option<u32>,
) -> Result<ChatResponse, LlmError> {
    let Some(engine) = providers.local().cloned() else {
        return Err(LlmError::Unavailable(format!(
            "provider `{}` runs installed models, and this host has no model directory",
            model.provider
        )));
    };
    let deadline =
        Duration::from_millis(gateway.grants().limits.timeout_ms).saturating_sub(gateway.elapsed());
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let job = {
        let (cancel, request, name) = (cancel.clone(), request.clone(), model.model.clone());
        tokio::task::spawn_blocking(move || {
            engine.complete(&name, &request, max_tokens, &cancel, &mut |_| {})
        })
    };
    let answer = match tokio::time::timeout(provider.timeout.min(deadline), job).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => Err(LlmError::Unavailable(format!(
            "model `{model}`: the completion failed: {e}"
        ))),
        Err(_) => {
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            Err(LlmError::Timeout)
        }
    };
    answer.map(|mut r| {
        r.model = model.to_string();
        r
    })
}

/// Replaces the key wherever a provider echoed it.
fn scrub(answer: Result<ChatResponse, LlmError>, key: &str) -> Result<ChatResponse, LlmError> {
    let clean = |s: String| {
        if s.contains(key) {
            s.replace(key, "<redacted>")
        } else {
            s
        }
    };
    match answer {
        Ok(mut r) => {
            r.message.content = clean(r.message.content);
            for c in &mut r.message.tool_calls {
                c.arguments = clean(std::mem::take(&mut c.arguments));
                c.name = clean(std::mem::take(&mut c.name));
                c.id = clean(std::mem::take(&mut c.id));
            }
            r.model = clean(r.model);
            r.finish_reason = clean(r.finish_reason);
            Ok(r)
        }
        Err(e) => Err(match e {
            LlmError::Denied(m) => LlmError::Denied(clean(m)),
            LlmError::BudgetExceeded(m) => LlmError::BudgetExceeded(clean(m)),
            LlmError::Unavailable(m) => LlmError::Unavailable(clean(m)),
            LlmError::Rejected(m) => LlmError::Rejected(clean(m)),
            LlmError::Timeout => LlmError::Timeout,
            LlmError::InvalidResponse(m) => LlmError::InvalidResponse(clean(m)),
        }),
    }
}

/// The OpenAI chat-completions body of a request.
fn openai_body(
    model: &ModelRef,
    request: &ChatRequest,
    max_tokens: Option<u32>,
    stream: bool,
) -> Result<Value, LlmError> {
    let messages: Vec<Value> = request
        .messages
        .iter()
        .map(|m| match m.role {
            Role::System => json!({"role": "system", "content": m.content}),
            Role::User => json!({"role": "user", "content": m.content}),
            Role::Tool => json!({
                "role": "tool",
                "content": m.content,
                "tool_call_id": m.tool_call_id.clone().unwrap_or_default(),
            }),
            Role::Assistant => {
                let mut v = json!({"role": "assistant", "content": m.content});
                if !m.tool_calls.is_empty() {
                    if m.content.is_empty() {
                        v["content"] = Value::Null;
                    }
                    v["tool_calls"] = m
                        .tool_calls
                        .iter()
                        .map(|c| {
                            json!({"id": c.id, "type": "function",
                                "function": {"name": c.name, "arguments": c.arguments}})
                        })
                        .collect();
                }
                v
            }
        })
        .collect();
    let mut body = json!({"model": model.model, "messages": messages});
    if !request.tools.is_empty() {
        let tools = request
            .tools
            .iter()
            .map(|t| {
                let parameters: Value = if t.parameters.trim().is_empty() {
                    json!({"type": "object", "properties": {}})
                } else {
                    serde_json::from_str(&t.parameters).map_err(|e| {
                        LlmError::Rejected(format!(
                            "the parameters of tool `{}` are not JSON: {e}",
                            t.name
                        ))
                    })?
                };
                Ok(json!({"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": parameters}}))
            })
            .collect::<Result<Vec<_>, LlmError>>()?;
        body["tools"] = Value::Array(tools);
    }
    match &request.tool_choice {
        ToolChoice::Auto => {}
        ToolChoice::None => body["tool_choice"] = "none".into(),
        ToolChoice::Required => body["tool_choice"] = "required".into(),
        ToolChoice::Tool(name) => {
            body["tool_choice"] = json!({"type": "function", "function": {"name": name}});
        }
    }
    if let Some(n) = max_tokens {
        body["max_tokens"] = n.into();
    }
    if let Some(t) = request.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(p) = request.top_p {
        body["top_p"] = json!(p);
    }
    if let Some(s) = request.seed {
        body["seed"] = s.into();
    }
    if !request.stop.is_empty() {
        body["stop"] = json!(request.stop);
    }
    if stream {
        body["stream"] = true.into();
        body["stream_options"] = json!({"include_usage": true});
    }
    Ok(body)
}

/// An error and its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        source = c.source();
    }
    s
}

/// The first 300 characters of a body, on one line.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > 300 {
        format!("{}…", line.chars().take(300).collect::<String>())
    } else {
        line
    }
}

async fn post(
    client: &reqwest::Client,
    provider: &Provider,
    model: &ModelRef,
    request: &ChatRequest,
    max_tokens: Option<u32>,
) -> Result<ChatResponse, LlmError> {
    let body = openai_body(model, request, max_tokens, provider.stream)?;
    let url = format!("{}/chat/completions", provider.base_url);
    let mut req = client
        .post(&url)
        .timeout(provider.timeout)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&body).unwrap_or_default());
    if let Some(key) = &provider.api_key {
        req = req.bearer_auth(key.expose());
    }
    let who = format!("provider `{}` ({url})", model.provider);
    let failed = |e: reqwest::Error| {
        if e.is_timeout() {
            LlmError::Timeout
        } else {
            LlmError::Unavailable(format!("{who}: {}", chain(&e)))
        }
    };
    let mut response = req.send().await.map_err(failed)?;
    let status = response.status();
    // Events only when the provider sends them (one that ignores `stream`
    // answers a whole completion).
    let streaming = status.is_success()
        && response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
    let mut bytes = Vec::new();
    let mut events = Events::default();
    let mut total = 0usize;
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        total += chunk.len();
        if total > MAX_ANSWER_BYTES {
            return Err(LlmError::InvalidResponse(format!(
                "{who}: the answer is larger than {MAX_ANSWER_BYTES} bytes"
            )));
        }
        bytes.extend_from_slice(&chunk);
        if streaming {
            events.feed(&mut bytes, &who)?;
            if events.done {
                break;
            }
        }
    }
    if !status.is_success() {
        let message = format!(
            "{who} answered status {}: {}",
            status.as_u16(),
            excerpt(&bytes)
        );
        return Err(if status.is_client_error() {
            LlmError::Rejected(message)
        } else {
            LlmError::Unavailable(message)
        });
    }
    let parsed = if streaming {
        if !events.done {
            // A last line without its newline.
            bytes.push(b'\n');
            events.feed(&mut bytes, &who)?;
        }
        if !events.seen {
            return Err(LlmError::InvalidResponse(format!(
                "{who}: the event stream held no completion"
            )));
        }
        events.finish()
    } else {
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            LlmError::InvalidResponse(format!(
                "{who}: the answer is not JSON ({e}): {}",
                excerpt(&bytes)
            ))
        })?;
        parse_completion(&v, &who)?
    };
    Ok(ChatResponse {
        model: match parsed.model {
            Some(m) if !m.is_empty() => format!("{}/{m}", model.provider),
            _ => model.to_string(),
        },
        message: ChatMessage {
            role: Role::Assistant,
            content: parsed.content,
            tool_calls: parsed.tool_calls,
            tool_call_id: None,
        },
        finish_reason: parsed.finish_reason,
        usage: parsed.usage,
    })
}

/// A completion as read from a provider.
struct Parsed {
    content: String,
    tool_calls: Vec<ToolCall>,
    finish_reason: String,
    usage: Usage,
    model: Option<String>,
}

fn clamp(v: &Value) -> u32 {
    v.as_u64()
        .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

fn usage_of(v: &Value) -> Usage {
    Usage {
        prompt_tokens: clamp(&v["prompt_tokens"]),
        completion_tokens: clamp(&v["completion_tokens"]),
    }
}

/// Tool arguments as JSON text (some servers send an object).
fn arguments_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn finish_reason(reason: Option<&str>, calls: &[ToolCall]) -> String {
    match reason {
        Some(r) if !r.is_empty() => r.to_string(),
        _ if calls.is_empty() => "stop".into(),
        _ => "tool_calls".into(),
    }
}

/// A whole (non-streamed) chat completion.
fn parse_completion(v: &Value, who: &str) -> Result<Parsed, LlmError> {
    if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
        return Err(LlmError::Unavailable(format!(
            "{who} answered an error: {}",
            excerpt(e.to_string().as_bytes())
        )));
    }
    let bad = |what: &str| {
        LlmError::InvalidResponse(format!(
            "{who}: {what}: {}",
            excerpt(v.to_string().as_bytes())
        ))
    };
    let choice = v["choices"]
        .as_array()
        .and_then(|c| c.first())
        .ok_or_else(|| bad("the answer has no `choices`"))?;
    let message = choice
        .get("message")
        .filter(|m| m.is_object())
        .ok_or_else(|| bad("the first choice has no `message`"))?;
    let content = match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => return Err(bad("the message's `content` is not text")),
    };
    let mut tool_calls = Vec::new();
    if let Some(calls) = message["tool_calls"].as_array() {
        for (i, c) in calls.iter().enumerate() {
            let name = c["function"]["name"]
                .as_str()
                .ok_or_else(|| bad("a tool call has no function name"))?;
            tool_calls.push(ToolCall {
                id: c["id"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map_or_else(|| format!("call_{i}"), str::to_string),
                name: name.to_string(),
                arguments: arguments_text(&c["function"]["arguments"]),
            });
        }
    }
    Ok(Parsed {
        finish_reason: finish_reason(choice["finish_reason"].as_str(), &tool_calls),
        content,
        tool_calls,
        usage: usage_of(&v["usage"]),
        model: v["model"].as_str().map(str::to_string),
    })
}

/// A streamed completion being assembled from its server-sent events:
/// content deltas appended, tool-call deltas merged by index.
#[derive(Default)]
struct Events {
    content: String,
    /// index → (id, name, arguments).
    calls: BTreeMap<u64, (String, String, String)>,
    finish: Option<String>,
    usage: Usage,
    model: Option<String>,
    /// `data: [DONE]` arrived.
    done: bool,
    /// At least one chunk arrived.
    seen: bool,
}

impl Events {
    /// Consumes the complete lines at the start of `buf`.
    fn feed(&mut self, buf: &mut Vec<u8>, who: &str) -> Result<(), LlmError> {
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let Some(data) = line.trim_end_matches(['\n', '\r']).strip_prefix("data:") else {
                continue;
            };
            let data = data.trim();
            if data == "[DONE]" {
                self.done = true;
                return Ok(());
            }
            if data.is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(data).map_err(|e| {
                LlmError::InvalidResponse(format!(
                    "{who}: an event is not JSON ({e}): {}",
                    excerpt(data.as_bytes())
                ))
            })?;
            self.apply(&v, who)?;
        }
        Ok(())
    }

    fn apply(&mut self, v: &Value, who: &str) -> Result<(), LlmError> {
        if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
            return Err(LlmError::Unavailable(format!(
                "{who} reported an error while streaming: {}",
                excerpt(e.to_string().as_bytes())
            )));
        }
        self.seen = true;
        if let Some(m) = v["model"].as_str() {
            self.model = Some(m.to_string());
        }
        if v["usage"].is_object() {
            self.usage = usage_of(&v["usage"]);
        }
        let choice = &v["choices"][0];
        if let Some(f) = choice["finish_reason"].as_str() {
            self.finish = Some(f.to_string());
        }
        let delta = &choice["delta"];
        if let Some(c) = delta["content"].as_str() {
            self.content.push_str(c);
        }
        if let Some(calls) = delta["tool_calls"].as_array() {
            for (pos, c) in calls.iter().enumerate() {
                let index = c["index"].as_u64().unwrap_or(pos as u64);
                let entry = self.calls.entry(index).or_default();
                if let Some(id) = c["id"].as_str().filter(|s| !s.is_empty()) {
                    entry.0 = id.to_string();
                }
                if let Some(n) = c["function"]["name"].as_str() {
                    entry.1.push_str(n);
                }
                entry
                    .2
                    .push_str(&arguments_text(&c["function"]["arguments"]));
            }
        }
        Ok(())
    }

    fn finish(self) -> Parsed {
        let tool_calls: Vec<ToolCall> = self
            .calls
            .into_values()
            .enumerate()
            .map(|(i, (id, name, arguments))| ToolCall {
                id: if id.is_empty() {
                    format!("call_{i}")
                } else {
                    id
                },
                name,
                arguments,
            })
            .collect();
        Parsed {
            finish_reason: finish_reason(self.finish.as_deref(), &tool_calls),
            content: self.content,
            tool_calls,
            usage: self.usage,
            model: self.model,
        }
    }
}

// ------------------------------------------------------------------ the capability

impl Capability for Llm {
    const NAME: &'static str = "llm";
    const MANIFEST_KEYS: &'static [&'static str] = &["llm"];
    type Grant = LlmGrant;
    type State = LlmState;

    fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        type Me = wasmtime::component::HasSelf<HostState>;
        wit::add_to_linker::<HostState, Me>(linker, |s| s)
    }

    fn grant(section: &Section<'_>) -> Result<LlmGrant, ManifestError> {
        let Some(raw) = section.parse::<RawLlm>("llm")? else {
            return Ok(LlmGrant::default());
        };
        for (i, entry) in raw.models.iter().enumerate() {
            let field = format!("llm.models[{i}]");
            check_pattern(entry).map_err(|m| section.invalid(field.clone(), m))?;
            if raw.models[..i].contains(entry) {
                return Err(section.invalid(field, format!("`{entry}` is listed twice")));
            }
        }
        for (field, zero) in [
            (
                "llm.max_tokens_per_call",
                raw.max_tokens_per_call == Some(0),
            ),
            (
                "llm.max_tokens_per_turn",
                raw.max_tokens_per_turn == Some(0),
            ),
            (
                "llm.max_tokens_per_agent",
                raw.max_tokens_per_agent == Some(0),
            ),
        ] {
            if zero {
                return Err(
                    section.invalid(field, "must be at least 1 (leave it out for no limit)")
                );
            }
        }
        Ok(LlmGrant {
            models: raw.models,
            max_tokens_per_call: raw.max_tokens_per_call,
            max_tokens_per_turn: raw.max_tokens_per_turn,
            max_tokens_per_agent: raw.max_tokens_per_agent,
            replay: false,
        })
    }

    /// With providers configured, every granted provider must be one of
    /// them (and a named model one it serves). A host with no `[llm]`
    /// settings loads any grant: a replay needs no provider, and a live
    /// call answers `unavailable`.
    fn bind(grant: &mut LlmGrant, host: &HostConfig) -> Result<(), BindError> {
        let Some(providers) = &host.llm else {
            return Ok(());
        };
        if grant.replay {
            return Ok(());
        }
        for (i, entry) in grant.models.iter().enumerate() {
            let p = pattern(entry);
            let field = format!("llm.models[{i}]");
            let provider = match providers.get(p.provider) {
                // Only the implicit local provider: other grants load as
                // on a host with no `[llm]` settings.
                None if !providers.configured => continue,
                Some(provider) => provider,
                None => {
                    let configured: Vec<&str> =
                        providers.providers.keys().map(String::as_str).collect();
                    return Err(BindError {
                        field,
                        message: format!(
                            "provider `{}` is not configured on this host (configured: {}; add [llm.providers.{}] to the data directory's tessera.toml)",
                            p.provider,
                            if configured.is_empty() {
                                "none".to_string()
                            } else {
                                configured.join(", ")
                            },
                            p.provider
                        ),
                    });
                }
            };
            if provider.kind == ProviderKind::Local
                && let (Some(model), Some(engine)) = (p.model, providers.local())
            {
                let installed = engine.names();
                if !installed.iter().any(|m| m == model) {
                    return Err(BindError {
                        field,
                        message: format!(
                            "model `{model}` of provider `{}` is not installed on this host (installed: {}; add it with `tessera models add {model}`)",
                            p.provider,
                            if installed.is_empty() {
                                "none".to_string()
                            } else {
                                installed.join(", ")
                            }
                        ),
                    });
                }
            }
            if let Some(model) = p.model
                && !provider.models.is_empty()
                && !provider.models.iter().any(|m| m == model)
            {
                return Err(BindError {
                    field,
                    message: format!(
                        "provider `{}` does not serve model `{model}` on this host (it serves: {})",
                        p.provider,
                        provider.models.join(", ")
                    ),
                });
            }
        }
        Ok(())
    }

    fn state(_: &LlmGrant, _: &Gateway, _: &mut WasiCtxBuilder) -> Result<LlmState, crate::Error> {
        Ok(LlmState::default())
    }

    fn effects(grant: &LlmGrant) -> Effects {
        let any = !grant.models.is_empty();
        Effects {
            network: any,
            external: any,
            ..Effects::NONE
        }
    }

    fn describe(step: &Step) -> String {
        describe(step).unwrap_or_else(|| super::generic_description(step))
    }

    /// A replay answers every completion from the journal: its models need
    /// no provider on the replaying host.
    fn for_replay(grant: &LlmGrant, _: &[(u64, Step)], _: &Path) -> Result<LlmGrant, String> {
        Ok(LlmGrant {
            replay: true,
            ..grant.clone()
        })
    }
}

/// At most `n` characters of `s` on one line, with `…` when cut.
fn short(s: &str, n: usize) -> String {
    let line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > n {
        format!("{}…", line.chars().take(n).collect::<String>())
    } else {
        line
    }
}

/// `llm.chat  scripted/gpt-test 3 messages, tools [a, b], max 100 -> stop,
/// 12+5 tokens: "Hello…"`.
fn describe(step: &Step) -> Option<String> {
    if step.op != "chat" {
        return None;
    }
    let q = ChatStep::deserialize(&step.request).ok()?;
    let mut s = format!(
        "{:<16} {} {} message{}",
        step.kind(),
        if q.model.is_empty() {
            "(default model)"
        } else {
            &q.model
        },
        q.messages,
        if q.messages == 1 { "" } else { "s" }
    );
    if !q.tools.is_empty() {
        s.push_str(&format!(", tools [{}]", q.tools.join(", ")));
    }
    if let Some(m) = q.max_tokens {
        s.push_str(&format!(", max {m}"));
    }
    if step.response.is_null() {
        return Some(s);
    }
    let answer = <Result<ChatResponse, LlmError>>::deserialize(&step.response).ok()?;
    match answer {
        Err(e) => s.push_str(&format!(" -> error: {}", short(&e.to_string(), 100))),
        Ok(r) => {
            s.push_str(&format!(
                " -> {}, {}+{} tokens",
                r.finish_reason, r.usage.prompt_tokens, r.usage.completion_tokens
            ));
            if !r.message.tool_calls.is_empty() {
                let calls: Vec<String> = r
                    .message
                    .tool_calls
                    .iter()
                    .map(|c| format!("{}({})", c.name, short(&c.arguments, 60)))
                    .collect();
                s.push_str(&format!(": {}", calls.join(", ")));
            } else {
                s.push_str(&format!(": {:?}", short(&r.message.content, 80)));
            }
        }
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(models: &[&str]) -> LlmGrant {
        LlmGrant {
            models: models.iter().map(|m| m.to_string()).collect(),
            ..LlmGrant::default()
        }
    }

    #[test]
    fn models_resolve_against_the_granted_patterns() {
        let g = grant(&["scripted/gpt-test", "local/*"]);
        let r = |m: Option<&str>| resolve(&g, m).map(|m| m.to_string());
        assert_eq!(r(None), Ok("scripted/gpt-test".into()));
        assert_eq!(r(Some("gpt-test")), Ok("scripted/gpt-test".into()));
        assert_eq!(r(Some("llama3")), Ok("local/llama3".into()));
        assert_eq!(r(Some("local/qwen")), Ok("local/qwen".into()));
        assert_eq!(
            r(Some("local/meta-llama/Llama-3")),
            Ok("local/meta-llama/Llama-3".into())
        );
        assert!(r(Some("scripted/other")).is_err());
        assert!(r(Some("openai/gpt-4o")).is_ok_and(|m| m == "local/openai/gpt-4o"));
        let only = grant(&["scripted/gpt-test"]);
        assert!(resolve(&only, Some("gpt-4o")).is_err());
        assert!(resolve(&grant(&[]), None).is_err());
        assert!(resolve(&grant(&["local/*"]), None).is_err());
    }

    #[test]
    fn budgets_cap_max_tokens_and_refuse_when_used_up() {
        let mut g = grant(&["a/b"]);
        assert_eq!(budget(&g, None, 0, None), Ok(None));
        assert_eq!(budget(&g, None, 0, Some(50)), Ok(Some(50)));
        g.max_tokens_per_call = Some(40);
        assert_eq!(budget(&g, None, 0, Some(50)), Ok(Some(40)));
        g.max_tokens_per_turn = Some(100);
        assert_eq!(budget(&g, None, 70, Some(50)), Ok(Some(30)));
        assert!(budget(&g, None, 100, None).unwrap_err().contains("100/100"));
        assert_eq!(budget(&g, Some("80"), 70, None), Ok(Some(10)));
        assert!(
            budget(&g, Some("70"), 70, None)
                .unwrap_err()
                .contains("agent")
        );
        assert!(budget(&g, Some("x"), 0, None).is_err());
    }

    #[test]
    fn streamed_events_assemble_split_tool_calls() {
        let mut e = Events::default();
        let text = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"lo\",\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\"}}]}}]}\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\":1}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n",
            "data: [DONE]\n",
        );
        let mut buf = Vec::new();
        for piece in text.as_bytes().chunks(3) {
            buf.extend_from_slice(piece);
            e.feed(&mut buf, "p").unwrap();
        }
        assert!(e.done);
        let p = e.finish();
        assert_eq!(p.content, "Hello");
        assert_eq!(p.finish_reason, "tool_calls");
        assert_eq!(p.tool_calls.len(), 1);
        assert_eq!(p.tool_calls[0].arguments, "{\"a\":1}");
        assert_eq!(p.usage.completion_tokens, 4);
    }

    #[test]
    fn host_settings_name_the_field_and_hide_the_key() {
        let env = |name: &str| (name == "K").then(|| "sk-secret-1".to_string());
        let p = LlmProviders::from_toml_with_env(
            "[store]\ndefault = \"embedded\"\n[llm.providers.openai]\nbase_url = \"https://api.example/v1/\"\napi_key_env = \"K\"\n",
            "t.toml",
            Path::new("."),
            &env,
        )
        .unwrap()
        .unwrap();
        let o = p.get("openai").unwrap();
        assert_eq!(o.base_url, "https://api.example/v1");
        assert_eq!(o.api_key.as_ref().unwrap().expose(), "sk-secret-1");
        assert!(!format!("{p:?}").contains("sk-secret"));
        for (text, field) in [
            (
                "[llm.providers.x]\nbase_url = \"ftp://h\"\n",
                "llm.providers.x.base_url",
            ),
            (
                "[llm.providers.x]\nbase_url = \"http://h\"\nkey = 1\n",
                "llm.providers.x",
            ),
            (
                "[llm.providers.x]\nbase_url = \"http://h\"\napi_key_env = \"NOPE\"\n",
                "llm.providers.x.api_key_env",
            ),
            (
                "[llm.providers.x]\nbase_url = \"http://h\"\ntimeout_secs = 0\n",
                "llm.providers.x.timeout_secs",
            ),
            ("[llm]\nmodels = []\n", "llm.models"),
            (
                "[llm.providers.x]\ntimeout_secs = 5\n",
                "llm.providers.x.base_url",
            ),
            (
                "[llm.providers.x]\nkind = \"local\"\nbase_url = \"http://h\"\n",
                "llm.providers.x.base_url",
            ),
            (
                "[llm.providers.x]\nkind = \"local\"\nstream = true\n",
                "llm.providers.x.stream",
            ),
            (
                "[llm.providers.x]\nkind = \"gpu\"\n",
                "llm.providers.x.kind",
            ),
        ] {
            let e =
                LlmProviders::from_toml_with_env(text, "t.toml", Path::new("."), &env).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
        assert!(
            LlmProviders::from_toml("[store]\n", "t", Path::new("."))
                .unwrap()
                .is_none()
        );
        // A local provider: no endpoint, its own timeout and models.
        let p = LlmProviders::from_toml(
            "[llm.providers.onbox]\nkind = \"local\"\ntimeout_secs = 9\nmodels = [\"smollm2\"]\n",
            "t",
            Path::new("."),
        )
        .unwrap()
        .unwrap();
        let o = p.get("onbox").unwrap();
        assert_eq!(o.kind, ProviderKind::Local);
        assert_eq!(o.timeout, Duration::from_secs(9));
        assert_eq!(o.models, vec!["smollm2".to_string()]);
    }
}
