//! The OpenAI-compatible endpoint of this host's installed language
//! models: `POST /v1/chat/completions` (whole or streamed as server-sent
//! events, with tools) and `GET /v1/models`, so software written for
//! OpenAI's API can use the local model.
//!
//! Honoured request fields: `model` (`smollm2` or `local/smollm2`),
//! `messages` (text content, or an array of text parts; assistant
//! `tool_calls`; tool `tool_call_id`), `tools` (functions), `tool_choice`,
//! `max_tokens` / `max_completion_tokens`, `temperature`, `top_p`, `seed`,
//! `stop`, `stream`, `stream_options.include_usage`. Fields that would
//! change the answer and are not supported (`n` above 1, `logprobs`, a
//! `response_format` other than `text`, image or audio parts) are refused
//! with a 400 naming the field; other fields (`user`, `metadata`, …) do
//! not change a completion and are accepted. Errors have OpenAI's shape
//! (`{"error": {"message", "type", "param", "code"}}`).
//!
//! These completions are not component calls: they are not journaled; the
//! server's token (scope `call`) guards them.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tessera_runtime::capability::llm::{
    ChatMessage, ChatRequest, ChatResponse, DEFAULT_TIMEOUT_SECS, LOCAL_PROVIDER, LlmError,
    LocalModels, ProviderKind, Role, ToolCall, ToolChoice, ToolDefinition,
};

use crate::Server;

/// An error in OpenAI's shape.
pub(crate) struct OpenAiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<String>,
}

impl OpenAiError {
    fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.into()),
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": Value::Null,
            }})),
        )
            .into_response()
    }
}

fn llm_error(e: LlmError) -> OpenAiError {
    let (status, kind) = match &e {
        LlmError::Rejected(_) | LlmError::Denied(_) | LlmError::BudgetExceeded(_) => {
            (StatusCode::BAD_REQUEST, "invalid_request_error")
        }
        LlmError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
        LlmError::Unavailable(_) | LlmError::InvalidResponse(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "server_error")
        }
    };
    OpenAiError {
        status,
        message: e.to_string(),
        kind,
        param: None,
    }
}

/// The engine and the timeout of the local provider.
fn local(server: &Server) -> Result<(Arc<dyn LocalModels>, Duration), OpenAiError> {
    let providers = server.config.llm.as_ref();
    let engine = providers
        .and_then(|p| p.local().cloned())
        .ok_or_else(|| OpenAiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message:
                "this server has no local models (install one with `tessera models add smollm2`)"
                    .into(),
            kind: "server_error",
            param: None,
        })?;
    let timeout = providers
        .and_then(|p| {
            p.providers
                .values()
                .find(|p| p.kind == ProviderKind::Local)
                .map(|p| p.timeout)
        })
        .unwrap_or(Duration::from_secs(DEFAULT_TIMEOUT_SECS));
    Ok((engine, timeout))
}

/// `GET /v1/models`.
pub(crate) async fn models(State(server): State<Arc<Server>>) -> Response {
    let names = match local(&server) {
        Ok((engine, _)) => engine.names(),
        Err(_) => Vec::new(),
    };
    Json(json!({
        "object": "list",
        "data": names.iter().map(|n| json!({
            "id": n, "object": "model", "created": 0, "owned_by": "tessera"
        })).collect::<Vec<_>>(),
    }))
    .into_response()
}

fn text_of(v: &Value, at: &str) -> Result<String, OpenAiError> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for (i, p) in parts.iter().enumerate() {
                match p["type"].as_str() {
                    Some("text") => out.push_str(p["text"].as_str().unwrap_or_default()),
                    other => {
                        return Err(OpenAiError::invalid(
                            format!("{at}[{i}].type"),
                            format!(
                                "content part type {} is not supported (only text)",
                                other.map_or("(none)".into(), |t| format!("`{t}`"))
                            ),
                        ));
                    }
                }
            }
            Ok(out)
        }
        _ => Err(OpenAiError::invalid(
            at,
            "must be text or an array of parts",
        )),
    }
}

fn u32_field(body: &Value, key: &str) -> Result<Option<u32>, OpenAiError> {
    match &body[key] {
        Value::Null => Ok(None),
        v => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| OpenAiError::invalid(key, "must be a non-negative integer")),
    }
}

fn f32_field(body: &Value, key: &str) -> Result<Option<f32>, OpenAiError> {
    match &body[key] {
        Value::Null => Ok(None),
        v => v
            .as_f64()
            .map(|f| Some(f as f32))
            .ok_or_else(|| OpenAiError::invalid(key, "must be a number")),
    }
}

/// The request, and whether to stream and to send usage in the stream.
pub(crate) fn parse(body: &Value) -> Result<(String, ChatRequest, bool, bool), OpenAiError> {
    if !body.is_object() {
        return Err(OpenAiError::invalid("", "the body must be a JSON object"));
    }
    let model = body["model"]
        .as_str()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            OpenAiError::invalid("model", "missing: name a model (see GET /v1/models)")
        })?;
    let model = model
        .strip_prefix(&format!("{LOCAL_PROVIDER}/"))
        .unwrap_or(model)
        .to_string();
    if body["n"].as_u64().is_some_and(|n| n != 1) {
        return Err(OpenAiError::invalid(
            "n",
            "only one choice per request is supported",
        ));
    }
    if body["logprobs"].as_bool() == Some(true) {
        return Err(OpenAiError::invalid(
            "logprobs",
            "log probabilities are not supported",
        ));
    }
    if let Some(t) = body["response_format"]["type"].as_str()
        && t != "text"
    {
        return Err(OpenAiError::invalid(
            "response_format.type",
            format!(
                "`{t}` is not supported (only `text`; for structured answers, offer a tool and set tool_choice)"
            ),
        ));
    }
    let raw = body["messages"]
        .as_array()
        .ok_or_else(|| OpenAiError::invalid("messages", "missing: an array of messages"))?;
    let mut messages = Vec::with_capacity(raw.len());
    for (i, m) in raw.iter().enumerate() {
        let at = format!("messages[{i}]");
        let role = match m["role"].as_str() {
            Some("system" | "developer") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some("tool") => Role::Tool,
            other => {
                return Err(OpenAiError::invalid(
                    format!("{at}.role"),
                    format!("unknown role {other:?} (system, developer, user, assistant, tool)"),
                ));
            }
        };
        let mut tool_calls = Vec::new();
        if let Some(calls) = m["tool_calls"].as_array() {
            for (j, c) in calls.iter().enumerate() {
                let name = c["function"]["name"].as_str().ok_or_else(|| {
                    OpenAiError::invalid(format!("{at}.tool_calls[{j}].function.name"), "missing")
                })?;
                let arguments = match &c["function"]["arguments"] {
                    Value::String(s) => s.clone(),
                    Value::Null => "{}".into(),
                    other => other.to_string(),
                };
                tool_calls.push(ToolCall {
                    id: c["id"].as_str().unwrap_or_default().to_string(),
                    name: name.to_string(),
                    arguments,
                });
            }
        }
        messages.push(ChatMessage {
            role,
            content: text_of(&m["content"], &format!("{at}.content"))?,
            tool_calls,
            tool_call_id: m["tool_call_id"].as_str().map(str::to_string),
        });
    }
    let mut tools = Vec::new();
    if let Some(list) = body["tools"].as_array() {
        for (i, t) in list.iter().enumerate() {
            let at = format!("tools[{i}]");
            if t["type"].as_str() != Some("function") {
                return Err(OpenAiError::invalid(
                    format!("{at}.type"),
                    "only `function` tools are supported",
                ));
            }
            let f = &t["function"];
            let name = f["name"]
                .as_str()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| OpenAiError::invalid(format!("{at}.function.name"), "missing"))?;
            let parameters = match &f["parameters"] {
                Value::Null => String::new(),
                p if p.is_object() => p.to_string(),
                _ => {
                    return Err(OpenAiError::invalid(
                        format!("{at}.function.parameters"),
                        "must be a JSON Schema object",
                    ));
                }
            };
            tools.push(ToolDefinition {
                name: name.to_string(),
                description: f["description"].as_str().unwrap_or_default().to_string(),
                parameters,
            });
        }
    }
    let tool_choice = match &body["tool_choice"] {
        Value::Null => ToolChoice::Auto,
        Value::String(s) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(OpenAiError::invalid(
                    "tool_choice",
                    format!("`{other}` is not `auto`, `none`, `required` or a function"),
                ));
            }
        },
        v => match v["function"]["name"].as_str() {
            Some(name) => ToolChoice::Tool(name.to_string()),
            None => {
                return Err(OpenAiError::invalid("tool_choice.function.name", "missing"));
            }
        },
    };
    let stop = match &body["stop"] {
        Value::Null => Vec::new(),
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| OpenAiError::invalid("stop", "must be a string or strings"))?,
        _ => return Err(OpenAiError::invalid("stop", "must be a string or strings")),
    };
    let seed = match &body["seed"] {
        Value::Null => None,
        v => Some(
            v.as_u64()
                .ok_or_else(|| OpenAiError::invalid("seed", "must be a non-negative integer"))?,
        ),
    };
    let max_tokens = match u32_field(body, "max_completion_tokens")? {
        Some(n) => Some(n),
        None => u32_field(body, "max_tokens")?,
    };
    let request = ChatRequest {
        model: Some(model.clone()),
        messages,
        tools,
        max_tokens,
        temperature: f32_field(body, "temperature")?,
        top_p: f32_field(body, "top_p")?,
        seed,
        stop,
        tool_choice,
    };
    let stream = body["stream"].as_bool().unwrap_or(false);
    let usage = body["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    Ok((model, request, stream, usage))
}

fn id() -> String {
    format!("chatcmpl-{:016x}", rand_id())
}

fn rand_id() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn calls_json(calls: &[ToolCall], stream: bool) -> Vec<Value> {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut v = json!({"id": c.id, "type": "function",
                "function": {"name": c.name, "arguments": c.arguments}});
            if stream {
                v["index"] = i.into();
            }
            v
        })
        .collect()
}

fn completion_json(id: &str, model: &str, r: &ChatResponse) -> Value {
    let mut message = json!({"role": "assistant", "content": r.message.content});
    if !r.message.tool_calls.is_empty() {
        message["tool_calls"] = calls_json(&r.message.tool_calls, false).into();
        if r.message.content.is_empty() {
            message["content"] = Value::Null;
        }
    }
    json!({
        "id": id, "object": "chat.completion", "created": now(), "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": r.finish_reason}],
        "usage": {
            "prompt_tokens": r.usage.prompt_tokens,
            "completion_tokens": r.usage.completion_tokens,
            "total_tokens": r.usage.prompt_tokens + r.usage.completion_tokens,
        },
    })
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat_completions(State(server): State<Arc<Server>>, body: Bytes) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return OpenAiError::invalid("", format!("the body is not JSON: {e}")).into_response();
        }
    };
    let (model, request, stream, usage) = match parse(&body) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let (engine, timeout) = match local(&server) {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    let installed = engine.names();
    if !installed.contains(&model) {
        return OpenAiError {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "model `{model}` is not installed here (installed: {})",
                installed.join(", ")
            ),
            kind: "invalid_request_error",
            param: Some("model".into()),
        }
        .into_response();
    }
    let cancel = Arc::new(AtomicBool::new(false));
    // Cancels the completion when the client goes away or time runs out.
    let guard = CancelOnDrop(cancel.clone());
    let max_tokens = request.max_tokens;
    if !stream {
        let job = {
            let (engine, cancel, model) = (engine.clone(), cancel.clone(), model.clone());
            tokio::task::spawn_blocking(move || {
                engine.complete(&model, &request, max_tokens, &cancel, &mut |_| {})
            })
        };
        let answer = match tokio::time::timeout(timeout, job).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => Err(LlmError::Unavailable(format!("the completion failed: {e}"))),
            Err(_) => Err(LlmError::Timeout),
        };
        drop(guard);
        return match answer {
            Ok(r) => Json(completion_json(&id(), &model, &r)).into_response(),
            Err(e) => llm_error(e).into_response(),
        };
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Value>(64);
    let id = id();
    let chunk = {
        let (id, model) = (id.clone(), model.clone());
        move |delta: Value, finish: Value| {
            json!({"id": id, "object": "chat.completion.chunk", "created": now(),
                "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        }
    };
    {
        let (engine, cancel, model, tx, chunk) = (
            engine.clone(),
            cancel.clone(),
            model.clone(),
            tx.clone(),
            chunk.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let _ = tx.blocking_send(chunk(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            ));
            let answer = engine.complete(&model, &request, max_tokens, &cancel, &mut |text| {
                if tx
                    .blocking_send(chunk(json!({"content": text}), Value::Null))
                    .is_err()
                {
                    cancel.store(true, Ordering::Relaxed);
                }
            });
            let last = match answer {
                Ok(r) => {
                    let delta = if r.message.tool_calls.is_empty() {
                        json!({})
                    } else {
                        json!({"tool_calls": calls_json(&r.message.tool_calls, true)})
                    };
                    let mut events = vec![chunk(delta, r.finish_reason.clone().into())];
                    if usage {
                        let mut u = chunk(json!({}), Value::Null);
                        u["choices"] = json!([]);
                        u["usage"] = json!({
                            "prompt_tokens": r.usage.prompt_tokens,
                            "completion_tokens": r.usage.completion_tokens,
                            "total_tokens": r.usage.prompt_tokens + r.usage.completion_tokens,
                        });
                        events.push(u);
                    }
                    events
                }
                Err(e) => {
                    let e = llm_error(e);
                    vec![json!({"error": {"message": e.message, "type": e.kind}})]
                }
            };
            for e in last {
                let _ = tx.blocking_send(e);
            }
        });
    }
    drop(tx);
    let deadline = tokio::time::Instant::now() + timeout;
    let events = futures_util::stream::unfold(
        (rx, Some(guard), false),
        move |(mut rx, guard, done)| async move {
            if done {
                return None;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(v)) => Some((
                    Ok::<_, Infallible>(Bytes::from(format!("data: {v}\n\n"))),
                    (rx, guard, false),
                )),
                Ok(None) => Some((
                    Ok(Bytes::from_static(b"data: [DONE]\n\n")),
                    (rx, None, true),
                )),
                Err(_) => {
                    let e = llm_error(LlmError::Timeout);
                    let v = json!({"error": {"message": e.message, "type": e.kind}});
                    // Dropping the guard cancels the completion.
                    Some((Ok(Bytes::from(format!("data: {v}\n\n"))), (rx, None, true)))
                }
            }
        },
    );
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        axum::body::Body::from_stream(events),
    )
        .into_response()
}

/// Sets the flag when dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_and_unsupported_fields_refused() {
        let (model, r, stream, usage) = parse(&json!({
            "model": "local/smollm2",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"}
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "max_completion_tokens": 12, "temperature": 0.5, "seed": 3, "stop": "END",
            "stream": true, "stream_options": {"include_usage": true}, "user": "x"
        }))
        .unwrap_or_else(|e| panic!("{}", e.message));
        assert_eq!(model, "smollm2");
        assert_eq!(r.messages.len(), 4);
        assert_eq!(r.messages[1].content, "Hi");
        assert_eq!(r.messages[2].tool_calls[0].name, "f");
        assert_eq!(r.messages[3].tool_call_id.as_deref(), Some("c1"));
        assert_eq!(r.tool_choice, ToolChoice::Tool("f".into()));
        assert_eq!((r.max_tokens, r.seed), (Some(12), Some(3)));
        assert_eq!(r.stop, vec!["END".to_string()]);
        assert!(stream && usage);

        for (body, param) in [
            (json!({"messages": []}), "model"),
            (json!({"model": "m", "messages": [], "n": 2}), "n"),
            (
                json!({"model": "m", "messages": [], "logprobs": true}),
                "logprobs",
            ),
            (
                json!({"model": "m", "messages": [], "response_format": {"type": "json_object"}}),
                "response_format.type",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
                "messages[0].content[0].type",
            ),
            (
                json!({"model": "m", "messages": [{"role": "robot"}]}),
                "messages[0].role",
            ),
            (
                json!({"model": "m", "messages": [], "tool_choice": "always"}),
                "tool_choice",
            ),
            (
                json!({"model": "m", "messages": [], "max_tokens": -1}),
                "max_tokens",
            ),
        ] {
            let e = parse(&body)
                .err()
                .unwrap_or_else(|| panic!("{body} was accepted"));
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }
    }
}
