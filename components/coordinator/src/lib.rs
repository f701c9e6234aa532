//! `coordinator`: an agent that shows supervision and messaging with
//! `worker` children.
//!
//! | body                          | what it does                                         | reply |
//! |-------------------------------|------------------------------------------------------|-------|
//! | `{"texts": ["a b c", "d e"]}` | spawns child `w<i>` (template `worker`) for text *i*, asks it `{"text": ...}`, sums the word counts | `{"total": 5, "parts": [3, 2]}` |
//! | `{"broadcast": "hi"}`         | sends `{"text": "hi"}` to every child, not waiting    | `{"sent": k}` (and `"failed"` if some sends failed) |
//! | `{"fail_child": "w0"}`        | asks that child `{"fail": true}`                      | `{"child": id, "error": "failed: asked to fail"}` (or `"reply"`) |
//!
//! The state is `{"tasks": n}`: how many `texts` messages it has
//! coordinated. A child that cannot be spawned or asked while coordinating
//! texts fails the turn, so the host's retry and supervision apply.
//!
//! Config (`wasi:config`): `ask_timeout_ms`, how long each ask waits
//! (default 10000).

wit_bindgen::generate!({
    world: "coordinator",
    path: "wit",
    generate_all,
});

use exports::tessera::agent::handler::{Guest, Message, TurnOutput};
use serde_json::{Value, json};
use tessera::agent::agents::{self, AskError, ChildSpec, SendError, SpawnError};
use wasi::config::store as config;
use wasi::logging::logging::{Level, log};

/// How long an ask waits for a child's reply when `ask_timeout_ms` is unset.
const DEFAULT_ASK_TIMEOUT_MS: u32 = 10_000;

/// The template children are spawned from.
const WORKER_TEMPLATE: &str = "worker";

/// The logging context of every message this agent logs.
const LOG_CONTEXT: &str = "coordinator";

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
        SpawnError::Denied(t) => format!("denied: template {t}"),
        SpawnError::Exists(id) => format!("exists: {id} (from another template)"),
        SpawnError::InvalidName(n) => format!("invalid name: {n}"),
    }
}

/// The ask timeout from config `ask_timeout_ms`. A config that cannot be
/// read (e.g. not granted) counts as unset; a value that is not a number
/// fails the turn.
fn ask_timeout_ms() -> Result<u32, String> {
    match config::get("ask_timeout_ms") {
        Ok(Some(v)) => v
            .trim()
            .parse()
            .map_err(|_| format!("config `ask_timeout_ms` is not a number of milliseconds: `{v}`")),
        Ok(None) => Ok(DEFAULT_ASK_TIMEOUT_MS),
        Err(e) => {
            let why = match e {
                config::Error::Upstream(m) | config::Error::Io(m) => m,
            };
            log(
                Level::Warn,
                LOG_CONTEXT,
                &format!("reading config `ask_timeout_ms`: {why}; using {DEFAULT_ASK_TIMEOUT_MS}"),
            );
            Ok(DEFAULT_ASK_TIMEOUT_MS)
        }
    }
}

/// The number of tasks coordinated so far, from the previous turn's state.
fn tasks(state: Option<&str>) -> Result<u64, String> {
    let Some(text) = state else { return Ok(0) };
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("the state is not JSON: {e}"))?;
    match value.get("tasks") {
        None | Some(Value::Null) => Ok(0),
        Some(n) => n
            .as_u64()
            .ok_or_else(|| format!("the state's `tasks` is not a count: {n}")),
    }
}

/// The id of this agent's child `name` (an id with a `/` is taken as is).
fn child_id(name: &str) -> String {
    if name.contains('/') {
        name.to_string()
    } else {
        format!("{}/{name}", agents::self_id())
    }
}

/// Spawns (or finds) a worker per text, asks each for its word count and
/// returns the reply `{"total": n, "parts": [...]}`.
fn coordinate(texts: &[Value]) -> Result<Value, String> {
    let timeout = ask_timeout_ms()?;
    let mut parts = Vec::with_capacity(texts.len());
    for (i, text) in texts.iter().enumerate() {
        let text = text
            .as_str()
            .ok_or_else(|| format!("texts[{i}] is not a string"))?;
        let name = format!("w{i}");
        let id = agents::spawn(&ChildSpec {
            name: name.clone(),
            template: WORKER_TEMPLATE.into(),
            state: None,
        })
        .map_err(|e| format!("spawning {name}: {}", spawn_error_text(&e)))?;
        log(
            Level::Debug,
            LOG_CONTEXT,
            &format!("asking {id} for text {i}"),
        );
        let reply = agents::ask(&id, &json!({ "text": text }).to_string(), timeout)
            .map_err(|e| format!("asking {id}: {}", ask_error_text(&e)))?;
        let words = serde_json::from_str::<Value>(&reply)
            .ok()
            .and_then(|v| v.get("words").and_then(Value::as_u64))
            .ok_or_else(|| format!("{id} replied `{reply}`, not {{\"words\": n}}"))?;
        parts.push(words);
    }
    let total: u64 = parts.iter().sum();
    log(
        Level::Info,
        LOG_CONTEXT,
        &format!("{} texts, {total} words", parts.len()),
    );
    Ok(json!({ "total": total, "parts": parts }))
}

/// Sends `{"text": text}` to every child and returns `{"sent": k}`, with
/// `"failed": [{"to", "error"}]` when some sends were refused.
fn broadcast(text: &str) -> Value {
    let body = json!({ "text": text }).to_string();
    let mut sent = 0u64;
    let mut failed = Vec::new();
    for child in agents::children() {
        match agents::send(&child, &body) {
            Ok(_) => sent += 1,
            Err(e) => {
                let error = send_error_text(&e);
                log(
                    Level::Warn,
                    LOG_CONTEXT,
                    &format!("broadcast to {child}: {error}"),
                );
                failed.push(json!({ "to": child, "error": error }));
            }
        }
    }
    if failed.is_empty() {
        json!({ "sent": sent })
    } else {
        json!({ "sent": sent, "failed": failed })
    }
}

/// Asks the child `name` to fail and returns what came back:
/// `{"child": id, "error": text}` or, should it answer, `{"child": id,
/// "reply": text}`.
fn fail_child(name: &str) -> Result<Value, String> {
    let timeout = ask_timeout_ms()?;
    let id = child_id(name);
    let body = json!({ "fail": true }).to_string();
    Ok(match agents::ask(&id, &body, timeout) {
        Ok(reply) => json!({ "child": id, "reply": reply }),
        Err(e) => {
            let error = ask_error_text(&e);
            log(Level::Info, LOG_CONTEXT, &format!("{id}: {error}"));
            json!({ "child": id, "error": error })
        }
    })
}

impl Guest for Component {
    fn turn(state: Option<String>, message: Message) -> Result<TurnOutput, String> {
        let mut tasks = tasks(state.as_deref())?;
        let body: Value = serde_json::from_str(&message.body)
            .map_err(|e| format!("the body is not JSON: {e}"))?;
        let reply = if let Some(texts) = body.get("texts") {
            let texts = texts.as_array().ok_or("`texts` is not a list")?;
            let reply = coordinate(texts)?;
            tasks += 1;
            reply
        } else if let Some(text) = body.get("broadcast") {
            broadcast(text.as_str().ok_or("`broadcast` is not a string")?)
        } else if let Some(name) = body.get("fail_child") {
            fail_child(name.as_str().ok_or("`fail_child` is not a string")?)?
        } else {
            return Err(
                "expected {\"texts\": [...]}, {\"broadcast\": \"...\"} or {\"fail_child\": \"...\"}"
                    .into(),
            );
        };
        Ok(TurnOutput {
            state: json!({ "tasks": tasks }).to_string(),
            reply: Some(reply.to_string()),
        })
    }
}

export!(Component);
