//! A scripted OpenAI-compatible chat server: what tests use in place of a
//! language model.
//!
//! Tests never call a real model. [`ScriptedLlm`] is a real HTTP server on
//! a free loopback port that speaks the part of the OpenAI API Tessera's
//! `llm` capability uses — `POST /v1/chat/completions` (with `tools`,
//! `stream: true` answered as server-sent events) and `GET /v1/models` —
//! and answers from a script: an ordered list of [`Rule`]s. The first rule
//! whose condition matches the request answers it; a one-shot rule is then
//! used up. A rule answers text, tool calls, or an HTTP error, optionally
//! after a delay (a slow model). Every request is recorded (its JSON body
//! and `Authorization` header) for the test to check.
//!
//! ```no_run
//! use tessera_test_support::{Rule, ScriptedLlm};
//! let llm = ScriptedLlm::start([
//!     Rule::tool_call("get_weather", serde_json::json!({"city": "Oslo"})).when("weather").once(),
//!     Rule::text("It is sunny."),
//! ]);
//! let base_url = llm.base_url(); // http://127.0.0.1:<port>/v1
//! ```
//!
//! Token usage is deterministic: a request's `prompt_tokens` is the number
//! of characters of all its message contents divided by 4 (at least 1),
//! a reply's `completion_tokens` the same count over its text and tool
//! calls (names and arguments). A request with `max_tokens` gets a text
//! reply cut to `4 × max_tokens` characters (`finish_reason: "length"`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// The model name `GET /v1/models` lists.
pub const SCRIPTED_MODEL: &str = "gpt-test";

/// What a rule answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// An assistant message with this text (`finish_reason: "stop"`).
    Text(String),
    /// An assistant message calling these tools, each a name and its
    /// arguments (`finish_reason: "tool_calls"`).
    ToolCalls(Vec<(String, Value)>),
    /// An HTTP error status with this body.
    Error {
        /// The status, e.g. 500.
        status: u16,
        /// The body, sent as is.
        body: String,
    },
}

/// One rule of a script: a condition, a reply, and how often it applies.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Applies only when the last user or tool message contains this
    /// (`None`: to any request).
    pub when: Option<String>,
    /// What it answers.
    pub reply: Reply,
    /// Whether it answers once and is then used up (otherwise it repeats).
    pub once: bool,
    /// How long to wait before answering.
    pub delay: Option<Duration>,
}

impl Rule {
    fn new(reply: Reply) -> Self {
        Self {
            when: None,
            reply,
            once: false,
            delay: None,
        }
    }

    /// Answers `text`.
    pub fn text(text: impl Into<String>) -> Self {
        Self::new(Reply::Text(text.into()))
    }

    /// Answers one tool call.
    pub fn tool_call(name: impl Into<String>, arguments: Value) -> Self {
        Self::new(Reply::ToolCalls(vec![(name.into(), arguments)]))
    }

    /// Answers several tool calls at once.
    pub fn tool_calls(calls: impl IntoIterator<Item = (String, Value)>) -> Self {
        Self::new(Reply::ToolCalls(calls.into_iter().collect()))
    }

    /// Answers an HTTP error.
    pub fn error(status: u16, body: impl Into<String>) -> Self {
        Self::new(Reply::Error {
            status,
            body: body.into(),
        })
    }

    /// Applies only when the last user or tool message contains `text`.
    pub fn when(mut self, text: impl Into<String>) -> Self {
        self.when = Some(text.into());
        self
    }

    /// Answers once, then is used up.
    pub fn once(mut self) -> Self {
        self.once = true;
        self
    }

    /// Waits `delay` before answering.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }
}

/// A request the server received.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptedRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// The path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The JSON body (`null` for none).
    pub body: Value,
}

#[derive(Default)]
struct Shared {
    rules: Mutex<Vec<Rule>>,
    requests: Mutex<Vec<ScriptedRequest>>,
}

/// A running scripted server; stopped by [`ScriptedLlm::stop`] or when
/// dropped. Usable from plain and from tokio tests: it runs on a thread of
/// its own with its own tokio runtime.
pub struct ScriptedLlm {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for ScriptedLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedLlm")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ScriptedLlm {
    /// Starts a server answering from `script`, on a free loopback port.
    /// Panics if it cannot bind.
    pub fn start(script: impl IntoIterator<Item = Rule>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("binding the scripted LLM server: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("the scripted LLM server's address: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("a non-blocking listener: {e}"));
        let shared = Arc::new(Shared {
            rules: Mutex::new(script.into_iter().collect()),
            requests: Mutex::new(Vec::new()),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = shared.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("the scripted LLM server's runtime: {e}"));
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)
                    .unwrap_or_else(|e| panic!("the scripted LLM listener: {e}"));
                let app = axum::Router::new()
                    .route("/v1/chat/completions", post(chat))
                    .route("/v1/models", get(models))
                    .with_state(state);
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime cancels replies still being delayed.
        });
        Self {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The base URL of the API, `http://127.0.0.1:<port>/v1` (what a
    /// provider's `base_url` names).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<ScriptedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// How many requests it has received.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// Adds rules at the end of the script.
    pub fn push(&self, rules: impl IntoIterator<Item = Rule>) {
        lock(&self.shared.rules).extend(rules);
    }

    /// Stops the server: its port refuses connections once this returns.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ScriptedLlm {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn record(shared: &Shared, method: &str, path: &str, headers: &HeaderMap, body: Value) {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    lock(&shared.requests).push(ScriptedRequest {
        method: method.into(),
        path: path.into(),
        authorization,
        body,
    });
}

async fn models(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    record(&shared, "GET", "/v1/models", &headers, Value::Null);
    axum::Json(json!({
        "object": "list",
        "data": [{"id": SCRIPTED_MODEL, "object": "model", "owned_by": "scripted"}],
    }))
    .into_response()
}

/// The text of a message's `content` (a string, or an array of text parts).
fn content_text(message: &Value) -> String {
    match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// Characters / 4, at least 1.
fn tokens(chars: usize) -> u64 {
    (chars as u64 / 4).max(1)
}

async fn chat(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            record(
                &shared,
                "POST",
                "/v1/chat/completions",
                &headers,
                Value::Null,
            );
            return (
                StatusCode::BAD_REQUEST,
                format!("the body is not JSON: {e}"),
            )
                .into_response();
        }
    };
    record(
        &shared,
        "POST",
        "/v1/chat/completions",
        &headers,
        request.clone(),
    );
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let last = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user" || m["role"] == "tool")
        .map(content_text)
        .unwrap_or_default();
    let rule = {
        let mut rules = lock(&shared.rules);
        let found = rules
            .iter()
            .position(|r| r.when.as_ref().is_none_or(|w| last.contains(w.as_str())));
        match found {
            Some(i) if rules[i].once => Some(rules.remove(i)),
            Some(i) => Some(rules[i].clone()),
            None => None,
        }
    };
    let Some(rule) = rule else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("scripted LLM: no rule matches the last message {last:?}"),
        )
            .into_response();
    };
    if let Some(d) = rule.delay {
        tokio::time::sleep(d).await;
    }
    let model = request["model"]
        .as_str()
        .unwrap_or(SCRIPTED_MODEL)
        .to_string();
    let prompt_chars: usize = messages
        .iter()
        .map(|m| content_text(m).chars().count())
        .sum();
    let max_tokens = request["max_tokens"]
        .as_u64()
        .or_else(|| request["max_completion_tokens"].as_u64());
    let (content, calls) = match rule.reply {
        Reply::Error { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, body).into_response();
        }
        Reply::Text(t) => (Some(t), Vec::new()),
        Reply::ToolCalls(c) => (None, c),
    };
    let mut finish = if calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    let content = content.map(|t| match max_tokens {
        Some(n) if tokens(t.chars().count()) > n => {
            finish = "length";
            t.chars().take((n as usize).saturating_mul(4)).collect()
        }
        _ => t,
    });
    let calls: Vec<(String, String, String)> = calls
        .into_iter()
        .enumerate()
        .map(|(i, (name, args))| (format!("call_{i}"), name, args.to_string()))
        .collect();
    let completion_chars = content.as_ref().map_or(0, |c| c.chars().count())
        + calls
            .iter()
            .map(|(_, n, a)| n.chars().count() + a.chars().count())
            .sum::<usize>();
    let usage = json!({
        "prompt_tokens": tokens(prompt_chars),
        "completion_tokens": tokens(completion_chars),
        "total_tokens": tokens(prompt_chars) + tokens(completion_chars),
    });
    if request["stream"] == true {
        let include_usage = request["stream_options"]["include_usage"] == true;
        return stream(
            &model,
            content,
            &calls,
            finish,
            include_usage.then_some(usage),
        );
    }
    let tool_calls: Vec<Value> = calls
        .iter()
        .map(|(id, name, args)| {
            json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}})
        })
        .collect();
    let mut message = json!({"role": "assistant", "content": content});
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    axum::Json(json!({
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }))
    .into_response()
}

/// Pieces of at most `n` characters.
fn pieces(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars.chunks(n).map(|c| c.iter().collect()).collect()
}

/// The reply as OpenAI streams it: a role chunk, the content in pieces,
/// each tool call's id and name then its arguments in pieces (by index),
/// a chunk with the finish reason, the usage when asked for, `[DONE]`.
/// The body itself is sent in small pieces that cut through lines.
fn stream(
    model: &str,
    content: Option<String>,
    calls: &[(String, String, String)],
    finish: &str,
    usage: Option<Value>,
) -> Response {
    let chunk = |delta: Value, finish: Option<&str>| {
        json!({
            "id": "chatcmpl-scripted",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    for piece in pieces(content.as_deref().unwrap_or(""), 5) {
        events.push(chunk(json!({"content": piece}), None));
    }
    for (i, (id, name, args)) in calls.iter().enumerate() {
        events.push(chunk(
            json!({"tool_calls": [{"index": i, "id": id, "type": "function",
                "function": {"name": name, "arguments": ""}}]}),
            None,
        ));
        for piece in pieces(args, 4) {
            events.push(chunk(
                json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}),
                None,
            ));
        }
    }
    events.push(chunk(json!({}), Some(finish)));
    if let Some(usage) = usage {
        events.push(json!({
            "id": "chatcmpl-scripted",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [],
            "usage": usage,
        }));
    }
    let mut text: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    text.push_str("data: [DONE]\n\n");
    let parts: Vec<Result<String, Infallible>> = pieces(&text, 7).into_iter().map(Ok).collect();
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(futures_util::stream::iter(parts)))
        .unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
}
