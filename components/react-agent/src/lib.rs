//! `react-agent`: a ReAct (reason + act) agent.
//!
//! Each message is a task: the `task` of a body `{"task": "..."}`, or the
//! whole body as is for anything else. The turn appends it to the
//! conversation as a user message, then loops, one *step* per model call:
//!
//! 1. `llm.chat` with a system prompt followed by the whole conversation,
//!    and the granted tools (`tools.list`) as tool definitions;
//! 2. if the model's message calls tools, each is called with `tools.call`
//!    and its result (or `error: <why>`, so the model sees failures) is
//!    appended as a `tool` message answering the call; then the next step;
//! 3. otherwise its content is the answer: the reply is
//!    `{"answer": "...", "steps": k}`.
//!
//! After `max_steps` steps without an answer the turn still succeeds, with
//! the reply `{"answer": null, "error": "step limit of N reached", "steps":
//! N}` and the conversation kept. A model error fails the turn
//! (`llm: <why>`), so the host's retries and supervision apply and nothing
//! of the turn is kept.
//!
//! The state is `{"messages": [...], "turns": n}`: the conversation without
//! the system prompt, each message `{"role", "content", "tool_calls",
//! "tool_call_id"}` (`tool_calls` a list of `{"id", "name", "arguments"}`),
//! and the number of turns taken.
//!
//! Config (`wasi:config`), all optional: `system_prompt` (an empty value
//! sends no system message), `model`, `max_tokens`, `temperature`,
//! `max_steps` (default 8). A config that cannot be read (for instance not
//! granted) counts as unset; a value that does not parse fails the turn.
//! Each step is logged through `wasi:logging` with the context `react`.

wit_bindgen::generate!({
    world: "react-agent",
    path: "wit",
    generate_all,
});

use exports::tessera::agent::handler::{Guest, Message, TurnOutput};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tessera::agent::llm::{
    self, ChatMessage, ChatRequest, LlmError, Role, ToolCall, ToolDefinition,
};
use tessera::agent::tools::{self, ToolError};
use wasi::config::store as config;
use wasi::logging::logging::{Level, log};

/// The system prompt when config `system_prompt` is unset.
const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful agent. Use the tools you are given \
whenever they can answer part of the request better than you can: call them with arguments \
that match their JSON schemas, read their results, and call more tools if needed. A failed \
tool call comes back as a message starting with `error:`; correct the call or work around \
it. When you have the answer, reply with it concisely, without calling any tool.";

/// The most model calls per turn when config `max_steps` is unset.
const DEFAULT_MAX_STEPS: u32 = 8;

/// The logging context of every message this agent logs.
const LOG_CONTEXT: &str = "react";

/// The longest text quoted in a log message, in characters.
const LOG_QUOTE_CHARS: usize = 200;

/// The component's single implementation type.
struct Component;

/// The agent's state between turns.
#[derive(Serialize, Deserialize, Default)]
#[serde(default)]
struct State {
    /// The conversation so far, without the system prompt.
    messages: Vec<StoredMessage>,
    /// How many turns the agent has taken.
    turns: u64,
}

/// A chat message as kept in the state.
#[derive(Serialize, Deserialize)]
struct StoredMessage {
    role: StoredRole,
    #[serde(default)]
    content: String,
    #[serde(default)]
    tool_calls: Vec<StoredToolCall>,
    #[serde(default)]
    tool_call_id: Option<String>,
}

/// A message's role as kept in the state.
#[derive(Serialize, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum StoredRole {
    System,
    User,
    Assistant,
    Tool,
}

/// A tool call as kept in the state.
#[derive(Serialize, Deserialize, Clone)]
struct StoredToolCall {
    id: String,
    name: String,
    arguments: String,
}

impl StoredMessage {
    fn new(role: StoredRole, content: String) -> Self {
        StoredMessage {
            role,
            content,
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    fn to_chat(&self) -> ChatMessage {
        ChatMessage {
            role: match self.role {
                StoredRole::System => Role::System,
                StoredRole::User => Role::User,
                StoredRole::Assistant => Role::Assistant,
                StoredRole::Tool => Role::Tool,
            },
            content: self.content.clone(),
            tool_calls: self
                .tool_calls
                .iter()
                .map(|c| ToolCall {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    arguments: c.arguments.clone(),
                })
                .collect(),
            tool_call_id: self.tool_call_id.clone(),
        }
    }
}

/// What the turn reads from config.
struct Settings {
    /// None when `system_prompt` is set but empty.
    system_prompt: Option<String>,
    model: Option<String>,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
    max_steps: u32,
}

/// The value of config `key`; a config that cannot be read counts as unset.
fn config_value(key: &str) -> Option<String> {
    match config::get(key) {
        Ok(value) => value,
        Err(config::Error::Upstream(why) | config::Error::Io(why)) => {
            log(
                Level::Warn,
                LOG_CONTEXT,
                &format!("reading config `{key}`: {why}; treating it as unset"),
            );
            None
        }
    }
}

/// Config `key` parsed as a `T`, if set (an empty value counts as unset).
fn config_parsed<T: std::str::FromStr>(key: &str, what: &str) -> Result<Option<T>, String> {
    config_value(key)
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|_| format!("config `{key}` is not {what}: `{v}`"))
        })
        .transpose()
}

impl Settings {
    fn read() -> Result<Self, String> {
        let system_prompt = match config_value("system_prompt") {
            None => Some(DEFAULT_SYSTEM_PROMPT.to_string()),
            Some(p) if p.trim().is_empty() => None,
            Some(p) => Some(p),
        };
        let temperature = config_parsed::<f32>("temperature", "a number")?;
        if temperature.is_some_and(|t| !t.is_finite() || t < 0.0) {
            return Err("config `temperature` must be a finite number, at least 0".into());
        }
        Ok(Settings {
            system_prompt,
            model: config_value("model").filter(|m| !m.trim().is_empty()),
            max_tokens: config_parsed("max_tokens", "a whole number")?,
            temperature,
            max_steps: config_parsed("max_steps", "a whole number")?.unwrap_or(DEFAULT_MAX_STEPS),
        })
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

fn tool_error_text(e: &ToolError) -> String {
    match e {
        ToolError::Unknown(m) => format!("unknown tool: {m}"),
        ToolError::InvalidArguments(m) => format!("invalid arguments: {m}"),
        ToolError::Failed(m) => format!("failed: {m}"),
        ToolError::Rejected(m) => format!("rejected: {m}"),
    }
}

/// `text` cut to `LOG_QUOTE_CHARS` characters, for logging.
fn quote(text: &str) -> String {
    match text.char_indices().nth(LOG_QUOTE_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// The task a message carries: `task` of `{"task": "..."}`, else the body.
fn task_of(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("task").and_then(Value::as_str).map(String::from))
        .unwrap_or_else(|| body.to_string())
}

/// Runs the ReAct loop over `state.messages`, which ends with the task,
/// and returns the reply.
fn react(state: &mut State, settings: &Settings) -> Result<Value, String> {
    let tools: Vec<ToolDefinition> = tools::list()
        .into_iter()
        .map(|t| ToolDefinition {
            name: t.name,
            description: t.description,
            parameters: t.parameters,
        })
        .collect();
    for step in 1..=settings.max_steps {
        let mut messages = Vec::with_capacity(state.messages.len() + 1);
        if let Some(prompt) = &settings.system_prompt {
            messages.push(StoredMessage::new(StoredRole::System, prompt.clone()).to_chat());
        }
        messages.extend(state.messages.iter().map(StoredMessage::to_chat));
        log(
            Level::Debug,
            LOG_CONTEXT,
            &format!(
                "step {step}: asking the model ({} messages, {} tools)",
                messages.len(),
                tools.len()
            ),
        );
        let request = ChatRequest {
            model: settings.model.clone(),
            messages,
            tools: tools.clone(),
            max_tokens: settings.max_tokens,
            temperature: settings.temperature,
            top_p: None,
            seed: None,
            stop: Vec::new(),
        };
        let response = llm::chat(&request).map_err(|e| format!("llm: {}", llm_error_text(&e)))?;
        let reply = response.message;
        let calls: Vec<StoredToolCall> = reply
            .tool_calls
            .into_iter()
            .map(|c| StoredToolCall {
                id: c.id,
                name: c.name,
                arguments: c.arguments,
            })
            .collect();
        state.messages.push(StoredMessage {
            role: StoredRole::Assistant,
            content: reply.content.clone(),
            tool_calls: calls.clone(),
            tool_call_id: None,
        });
        if calls.is_empty() {
            log(
                Level::Info,
                LOG_CONTEXT,
                &format!(
                    "step {step}: answer from {} ({}): {}",
                    response.model,
                    response.finish_reason,
                    quote(&reply.content)
                ),
            );
            return Ok(json!({ "answer": reply.content, "steps": step }));
        }
        for call in &calls {
            log(
                Level::Info,
                LOG_CONTEXT,
                &format!(
                    "step {step}: calling tool {} with {}",
                    call.name,
                    quote(&call.arguments)
                ),
            );
            // Some models send no arguments at all for a tool without any.
            let arguments = if call.arguments.trim().is_empty() {
                "{}"
            } else {
                &call.arguments
            };
            let content = match tools::call(&call.name, arguments) {
                Ok(result) => {
                    log(
                        Level::Debug,
                        LOG_CONTEXT,
                        &format!("step {step}: {} returned {}", call.name, quote(&result)),
                    );
                    result
                }
                Err(e) => {
                    let error = format!("error: {}", tool_error_text(&e));
                    log(
                        Level::Info,
                        LOG_CONTEXT,
                        &format!("step {step}: {}: {}", call.name, quote(&error)),
                    );
                    error
                }
            };
            state.messages.push(StoredMessage {
                role: StoredRole::Tool,
                content,
                tool_calls: Vec::new(),
                tool_call_id: Some(call.id.clone()),
            });
        }
    }
    let limit = settings.max_steps;
    log(
        Level::Warn,
        LOG_CONTEXT,
        &format!("step limit of {limit} reached without an answer"),
    );
    Ok(json!({
        "answer": null,
        "error": format!("step limit of {limit} reached"),
        "steps": limit,
    }))
}

impl Guest for Component {
    fn turn(state: Option<String>, message: Message) -> Result<TurnOutput, String> {
        let mut state: State = match state.as_deref() {
            None => State::default(),
            Some(text) => serde_json::from_str(text).map_err(|e| {
                format!("the state is not {{\"messages\": [...], \"turns\": n}}: {e}")
            })?,
        };
        let settings = Settings::read()?;
        let task = task_of(&message.body);
        state.turns += 1;
        log(
            Level::Info,
            LOG_CONTEXT,
            &format!("turn {}: task {}", state.turns, quote(&task)),
        );
        state
            .messages
            .push(StoredMessage::new(StoredRole::User, task));
        let reply = react(&mut state, &settings)?;
        let state = serde_json::to_string(&state).map_err(|e| format!("saving the state: {e}"))?;
        Ok(TurnOutput {
            state,
            reply: Some(reply.to_string()),
        })
    }
}

export!(Component);
