//! `probe-agent`: a test agent. Every message's body is a JSON object whose
//! `"op"` picks what the turn does, so a test can drive each interface an
//! agent imports one turn at a time.
//!
//! The state is JSON text. Ops that do not change it return it unchanged
//! (`null` when the agent has none yet). `append` keeps a list, `ping` keeps
//! `{"pings": k}`. Results of calls that can fail are replied as JSON: the
//! value under a key (`"id"`, `"reply"`, `"result"`) or `{"error": text}`.
//!
//! | op          | fields                                   | reply |
//! |-------------|------------------------------------------|-------|
//! | `noop`      |                                          | none, or `{}` when the sender waits |
//! | `append`    | `value` (any JSON)                       | the list's new length, e.g. `3` |
//! | `state`     |                                          | the state, as is |
//! | `send`      | `to`, `body`                             | `{"id": message-id}` or `{"error": text}` |
//! | `sendn`     | `to`, `n`                                | `{"sent": n}` (or `{"sent": i, "error": text}`) |
//! | `ask`       | `to`, `body`, `timeout_ms` (default 10000) | `{"reply": text}` or `{"error": text}` |
//! | `spawn`     | `name`, `template`, `state` (optional)   | `{"id": child-id}` or `{"error": text}` |
//! | `ping`      | `peer`, `n`                              | `{"pings": k}` |
//! | `fail`      | `message` (optional)                     | the turn fails with `message` |
//! | `trap`      |                                          | the instance traps (a panic) |
//! | `fail_until`| `k`, `key` (optional)                    | fails the first `k` attempts, then `{"attempts": k+1}` |
//! | `spin`      |                                          | loops until a limit (fuel or deadline) stops it |
//! | `grow`      | `mib`                                    | allocates and touches `mib` MiB, then `{"bytes": n}` |
//! | `tool`      | `name`, `args` (default `{}`)            | `{"result": text}` or `{"error": text}` |
//! | `tools`     |                                          | `[{"name", "description", "parameters"}]` |
//! | `llm`       | `prompt`, `model`, `max_tokens`, `tools` (all but `prompt` optional) | `{"content", "tool_calls", "finish_reason", "model", "usage"}` or `{"error": text}` |
//! | `self`      |                                          | `{"id", "parent", "children"}` |
//!
//! A `body`, `args` or `state` field that is a JSON string is passed as
//! that string; any other JSON value is passed as its JSON text. `sendn`
//! sends `{"op": "append", "value": i}` for `i` in `0..n`, in order. `ping`
//! counts the ping in the state and, if `n > 0`, sends
//! `{"op": "ping", "peer": <self-id>, "n": n - 1}` to `peer` (a refused
//! send fails the turn). `fail_until` counts attempts in the
//! `wasi:keyvalue` bucket named by config `attempts_bucket`, under `key`
//! or, without one, the message id (a re-driven message has a new id, so a
//! `key` lets its attempts go on counting). Any other op fails the turn,
//! naming it.

wit_bindgen::generate!({
    world: "probe-agent",
    path: "wit",
    generate_all,
});

use exports::tessera::agent::handler::{Guest, Message, TurnOutput};
use serde_json::{Value, json};
use tessera::agent::agents::{self, AskError, ChildSpec, SendError, SpawnError};
use tessera::agent::llm::{self, ChatMessage, ChatRequest, LlmError, Role, ToolDefinition};
use tessera::agent::tools::{self, ToolError};
use wasi::config::store as config;
use wasi::keyvalue::{atomics, store};
use wasi::logging::logging::{Level, log};

/// How long `ask` waits when the message gives no `timeout_ms`.
const DEFAULT_ASK_TIMEOUT_MS: u32 = 10_000;

/// The component's single implementation type.
struct Component;

fn send_error_text(e: &SendError) -> String {
    match e {
        SendError::NoSuchAgent(id) => format!("no such agent: {id}"),
        SendError::Denied(id) => format!("denied: {id}"),
        SendError::MailboxFull(id) => format!("mailbox full: {id}"),
        SendError::Stopped(id) => format!("stopped: {id}"),
    }
}

fn ask_error_text(e: &AskError) -> String {
    match e {
        AskError::Send(e) => format!("send: {}", send_error_text(e)),
        AskError::Timeout => "timeout".into(),
        AskError::Failed(m) => format!("failed: {m}"),
        AskError::NoReply => "no reply".into(),
    }
}

fn spawn_error_text(e: &SpawnError) -> String {
    match e {
        SpawnError::Denied(t) => format!("denied: {t}"),
        SpawnError::Exists(id) => format!("exists: {id}"),
        SpawnError::InvalidName(n) => format!("invalid name: {n}"),
    }
}

fn tool_error_text(e: &ToolError) -> String {
    match e {
        ToolError::Unknown(m) => format!("unknown: {m}"),
        ToolError::InvalidArguments(m) => format!("invalid arguments: {m}"),
        ToolError::Failed(m) => format!("failed: {m}"),
        ToolError::Rejected(m) => format!("rejected: {m}"),
    }
}

fn llm_error_text(e: &LlmError) -> String {
    match e {
        LlmError::Denied(m) => format!("denied: {m}"),
        LlmError::BudgetExceeded(m) => format!("budget exceeded: {m}"),
        LlmError::Unavailable(m) => format!("unavailable: {m}"),
        LlmError::Rejected(m) => format!("rejected: {m}"),
        LlmError::Timeout => "timeout".into(),
        LlmError::InvalidResponse(m) => format!("invalid response: {m}"),
    }
}

fn store_error_text(e: store::Error) -> String {
    match e {
        store::Error::NoSuchStore => "no such store".into(),
        store::Error::AccessDenied => "access denied".into(),
        store::Error::Other(m) => m,
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

/// The body of one message, with typed access to its fields.
struct Body<'a> {
    op: &'a str,
    fields: &'a Value,
}

impl Body<'_> {
    fn field(&self, key: &str) -> Option<&Value> {
        self.fields.get(key).filter(|v| !v.is_null())
    }

    fn str(&self, key: &str) -> Result<&str, String> {
        self.field(key)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("op `{}` needs a string `{key}`", self.op))
    }

    fn u64(&self, key: &str) -> Result<u64, String> {
        self.field(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("op `{}` needs a whole number `{key}`", self.op))
    }

    /// An optional field that must fit a `u32` when present.
    fn u32_opt(&self, key: &str) -> Result<Option<u32>, String> {
        self.field(key)
            .map(|v| {
                v.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| format!("op `{}`: `{key}` is not a 32-bit count", self.op))
            })
            .transpose()
    }

    /// A field passed on as text: a JSON string as that string, any other
    /// value as its JSON text, none if absent or null.
    fn text(&self, key: &str) -> Option<String> {
        self.field(key).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    fn required_text(&self, key: &str) -> Result<String, String> {
        self.text(key)
            .ok_or_else(|| format!("op `{}` needs `{key}`", self.op))
    }
}

/// Parses the state as JSON; none or `null` is `None`.
fn parse_state(state: Option<&str>) -> Result<Option<Value>, String> {
    match state {
        None => Ok(None),
        Some(text) => match serde_json::from_str(text) {
            Ok(Value::Null) => Ok(None),
            Ok(v) => Ok(Some(v)),
            Err(e) => Err(format!("the state is not JSON: {e}")),
        },
    }
}

/// What a turn returns when only `reply` is new.
fn output(state: String, reply: Option<Value>) -> TurnOutput {
    TurnOutput {
        state,
        reply: reply.map(|v| v.to_string()),
    }
}

fn op_append(state: Option<&str>, body: &Body) -> Result<TurnOutput, String> {
    // `null` is a value like any other here.
    let value = body
        .fields
        .get("value")
        .cloned()
        .ok_or("op `append` needs a `value`")?;
    let mut list = match parse_state(state)? {
        None => Vec::new(),
        Some(Value::Array(list)) => list,
        Some(_) => return Err("op `append`: the state is not a list".into()),
    };
    list.push(value);
    let len = list.len();
    Ok(output(Value::Array(list).to_string(), Some(json!(len))))
}

fn op_send(body: &Body) -> Result<Value, String> {
    let to = body.str("to")?;
    let payload = body.required_text("body")?;
    Ok(match agents::send(to, &payload) {
        Ok(id) => json!({ "id": id }),
        Err(e) => json!({ "error": send_error_text(&e) }),
    })
}

fn op_sendn(body: &Body) -> Result<Value, String> {
    let to = body.str("to")?;
    let n = body.u64("n")?;
    for i in 0..n {
        let payload = json!({ "op": "append", "value": i }).to_string();
        if let Err(e) = agents::send(to, &payload) {
            return Ok(json!({ "sent": i, "error": send_error_text(&e) }));
        }
    }
    Ok(json!({ "sent": n }))
}

fn op_ask(body: &Body) -> Result<Value, String> {
    let to = body.str("to")?;
    let payload = body.required_text("body")?;
    let timeout = body
        .u32_opt("timeout_ms")?
        .unwrap_or(DEFAULT_ASK_TIMEOUT_MS);
    Ok(match agents::ask(to, &payload, timeout) {
        Ok(reply) => json!({ "reply": reply }),
        Err(e) => json!({ "error": ask_error_text(&e) }),
    })
}

fn op_spawn(body: &Body) -> Result<Value, String> {
    let spec = ChildSpec {
        name: body.str("name")?.to_string(),
        template: body.str("template")?.to_string(),
        state: body.text("state"),
    };
    Ok(match agents::spawn(&spec) {
        Ok(id) => json!({ "id": id }),
        Err(e) => json!({ "error": spawn_error_text(&e) }),
    })
}

fn op_ping(state: Option<&str>, body: &Body) -> Result<TurnOutput, String> {
    let peer = body.str("peer")?;
    let n = body.u64("n")?;
    let pings = match parse_state(state)? {
        None => 0,
        Some(v) => v
            .get("pings")
            .and_then(Value::as_u64)
            .ok_or("op `ping`: the state is not {\"pings\": k}")?,
    } + 1;
    if n > 0 {
        let payload = json!({ "op": "ping", "peer": agents::self_id(), "n": n - 1 });
        agents::send(peer, &payload.to_string())
            .map_err(|e| format!("ping: sending to {peer}: {}", send_error_text(&e)))?;
    }
    Ok(output(
        json!({ "pings": pings }).to_string(),
        Some(json!({ "pings": pings })),
    ))
}

/// Counts this attempt at `message_id` in the bucket named by config
/// `attempts_bucket` and fails while fewer than `k` attempts came before.
fn op_fail_until(body: &Body, message_id: &str) -> Result<Value, String> {
    let k = body.u64("k")?;
    let key = body
        .field("key")
        .and_then(Value::as_str)
        .unwrap_or(message_id);
    let bucket_name = match config::get("attempts_bucket") {
        Ok(Some(name)) => name,
        Ok(None) => return Err("op `fail_until` needs config `attempts_bucket`".into()),
        Err(config::Error::Upstream(m) | config::Error::Io(m)) => {
            return Err(format!("reading config `attempts_bucket`: {m}"));
        }
    };
    let bucket = store::open(&bucket_name)
        .map_err(|e| format!("opening bucket `{bucket_name}`: {}", store_error_text(e)))?;
    let attempts = atomics::increment(&bucket, key, 1).map_err(|e| {
        format!(
            "counting attempts in `{bucket_name}`: {}",
            store_error_text(e)
        )
    })?;
    let before = u64::try_from(attempts.saturating_sub(1)).unwrap_or(0);
    if before < k {
        return Err(format!(
            "fail_until: attempt {attempts} fails (the first {k} do)"
        ));
    }
    Ok(json!({ "attempts": attempts }))
}

/// Runs until the call's fuel or deadline stops it.
fn op_spin() -> Value {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        if x == u64::MAX {
            return json!({ "x": x });
        }
    }
}

/// Allocates `mib` MiB and touches every page, so the memory is really
/// grown (and a memory limit stops it).
fn op_grow(body: &Body) -> Result<Value, String> {
    let mib = usize::try_from(body.u64("mib")?).map_err(|_| "`mib` is too large")?;
    let mut v: Vec<u8> = Vec::new();
    v.try_reserve_exact(mib << 20)
        .map_err(|e| format!("allocating {mib} MiB: {e}"))?;
    v.resize(mib << 20, 1);
    let touched: usize = v.iter().step_by(4096).map(|b| *b as usize).sum();
    Ok(json!({ "bytes": v.len(), "pages": touched }))
}

fn op_tool(body: &Body) -> Result<Value, String> {
    let name = body.str("name")?;
    let args = body.text("args").unwrap_or_else(|| "{}".into());
    Ok(match tools::call(name, &args) {
        Ok(result) => json!({ "result": result }),
        Err(e) => json!({ "error": tool_error_text(&e) }),
    })
}

fn op_tools() -> Value {
    tools::list()
        .into_iter()
        .map(|t| {
            let parameters =
                serde_json::from_str(&t.parameters).unwrap_or(Value::String(t.parameters));
            json!({ "name": t.name, "description": t.description, "parameters": parameters })
        })
        .collect()
}

fn op_llm(body: &Body) -> Result<Value, String> {
    let prompt = body.str("prompt")?;
    let max_tokens = body.u32_opt("max_tokens")?;
    let offer_tools = body.field("tools").and_then(Value::as_bool) == Some(true);
    let tool_definitions = if offer_tools {
        tools::list()
            .into_iter()
            .map(|t| ToolDefinition {
                name: t.name,
                description: t.description,
                parameters: t.parameters,
            })
            .collect()
    } else {
        Vec::new()
    };
    let request = ChatRequest {
        model: body
            .field("model")
            .and_then(Value::as_str)
            .map(String::from),
        messages: vec![ChatMessage {
            role: Role::User,
            content: prompt.to_string(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }],
        tools: tool_definitions,
        max_tokens,
        temperature: None,
        top_p: None,
        seed: None,
        stop: Vec::new(),
    };
    Ok(match llm::chat(&request) {
        Ok(response) => {
            let calls: Vec<Value> = response
                .message
                .tool_calls
                .iter()
                .map(|c| json!({ "id": c.id, "name": c.name, "arguments": c.arguments }))
                .collect();
            json!({
                "role": role_name(response.message.role),
                "content": response.message.content,
                "tool_calls": calls,
                "finish_reason": response.finish_reason,
                "model": response.model,
                "usage": {
                    "prompt_tokens": response.usage.prompt_tokens,
                    "completion_tokens": response.usage.completion_tokens,
                },
            })
        }
        Err(e) => json!({ "error": llm_error_text(&e) }),
    })
}

fn op_self() -> Value {
    json!({
        "id": agents::self_id(),
        "parent": agents::parent(),
        "children": agents::children(),
    })
}

impl Guest for Component {
    fn turn(state: Option<String>, message: Message) -> Result<TurnOutput, String> {
        let fields: Value = serde_json::from_str(&message.body)
            .map_err(|e| format!("the body is not JSON: {e}"))?;
        let op = fields
            .get("op")
            .and_then(Value::as_str)
            .ok_or("the body has no string `op`")?;
        let body = Body {
            op,
            fields: &fields,
        };
        log(
            Level::Debug,
            "probe",
            &format!("message {}: op `{op}`", message.id),
        );
        // The state as it is, for the ops that leave it unchanged.
        let kept = state.clone().unwrap_or_else(|| "null".into());
        let reply = match op {
            "noop" => {
                let reply = message.expects_reply.then(|| json!({}));
                return Ok(output(kept, reply));
            }
            "append" => return op_append(state.as_deref(), &body),
            "ping" => return op_ping(state.as_deref(), &body),
            "state" => {
                return Ok(TurnOutput {
                    reply: Some(kept.clone()),
                    state: kept,
                });
            }
            "fail" => {
                let why = body.field("message").and_then(Value::as_str);
                return Err(why.unwrap_or("asked to fail").to_string());
            }
            "trap" => panic!("asked to trap"),
            "send" => op_send(&body)?,
            "sendn" => op_sendn(&body)?,
            "ask" => op_ask(&body)?,
            "spawn" => op_spawn(&body)?,
            "fail_until" => op_fail_until(&body, &message.id)?,
            "tool" => op_tool(&body)?,
            "tools" => op_tools(),
            "spin" => op_spin(),
            "grow" => op_grow(&body)?,
            "llm" => op_llm(&body)?,
            "self" => op_self(),
            other => return Err(format!("unknown op `{other}`")),
        };
        Ok(output(kept, Some(reply)))
    }
}

export!(Component);
