//! The prompt of a chat: the conversation rendered with the chat template
//! the GGUF file carries (`tokenizer.chat_template`, a Jinja template, run
//! by minijinja with Python's string methods), and the tools offered.
//!
//! **Tools.** The templates of small models rarely know about tools, so the
//! tools are described the same way whatever the template: a section
//! appended to the system message lists each tool as JSON and asks for a
//! call as `<tool_call>{"name": …, "arguments": {…}}</tool_call>` (the
//! format of the Hermes and Qwen families). An assistant message that
//! called tools is rendered with its calls in that format, and a tool's
//! answer as a user message holding `<tool_response>…</tool_response>`, so
//! a conversation reads back the way the model wrote it. Decoding enforces
//! the format and each tool's JSON Schema ([`super::grammar`]).

use minijinja::{Environment, Error, ErrorKind, Value, context};
use serde_json::json;
use tessera_runtime::capability::llm::{ChatMessage, ChatRequest, Role, ToolChoice};

/// What opens a tool call.
pub(crate) const CALL_OPEN: &str = "<tool_call>";
/// What closes a tool call.
pub(crate) const CALL_CLOSE: &str = "</tool_call>";

/// A chat template, compiled.
pub(crate) struct Template {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template").finish_non_exhaustive()
    }
}

fn raise_exception(message: String) -> Result<String, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

impl Template {
    /// Compiles `source`; `bos` and `eos` are the texts of those tokens.
    pub fn new(source: String, bos: String, eos: String) -> Result<Self, String> {
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned("chat", source).map_err(|e| {
            format!("the chat template (tokenizer.chat_template) does not compile: {e}")
        })?;
        Ok(Self { env, bos, eos })
    }

    /// The prompt for `request`, ending where the assistant's answer
    /// starts.
    pub fn render(&self, request: &ChatRequest) -> Result<String, String> {
        self.render_parts(request).map(|(full, _)| full)
    }

    /// The prompt, and the rendering of every message but the last (what
    /// the next turn of the same conversation starts with, so its
    /// attention cache can be kept); `None` when there is one message.
    pub fn render_parts(&self, request: &ChatRequest) -> Result<(String, Option<String>), String> {
        let mut messages: Vec<serde_json::Value> = Vec::new();
        let tools = if request.tool_choice == ToolChoice::None {
            String::new()
        } else {
            tool_section(request)?
        };
        let mut system_done = tools.is_empty();
        for m in &request.messages {
            let (role, content) = match m.role {
                Role::System => {
                    let mut c = m.content.clone();
                    if !system_done {
                        c.push_str(&tools);
                        system_done = true;
                    }
                    ("system", c)
                }
                Role::User => ("user", m.content.clone()),
                Role::Assistant => ("assistant", assistant_text(m)),
                Role::Tool => (
                    "user",
                    format!(
                        "<tool_response>\n{}\n</tool_response>",
                        json!({"tool_call_id": m.tool_call_id, "content": m.content})
                    ),
                ),
            };
            messages.push(json!({"role": role, "content": content}));
        }
        if !system_done {
            messages.insert(
                0,
                json!({"role": "system", "content": tools.trim_start().to_string()}),
            );
        }
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| format!("the chat template: {e}"))?;
        let render = |messages: &[serde_json::Value], add_generation_prompt: bool| {
            template
                .render(context! {
                    messages => Value::from_serialize(messages),
                    add_generation_prompt => add_generation_prompt,
                    bos_token => self.bos.clone(),
                    eos_token => self.eos.clone(),
                })
                .map_err(|e| format!("the chat template failed: {e:#}"))
        };
        let full = render(&messages, true)?;
        let prefix = match messages.len() {
            0 | 1 => None,
            n => render(&messages[..n - 1], false).ok(),
        };
        Ok((full, prefix))
    }
}

/// An assistant message as the model wrote it: its text, then its calls.
fn assistant_text(m: &ChatMessage) -> String {
    let mut text = m.content.clone();
    for c in &m.tool_calls {
        let arguments: serde_json::Value =
            serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!(c.arguments));
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(CALL_OPEN);
        text.push_str(&json!({"name": c.name, "arguments": arguments}).to_string());
        text.push_str(CALL_CLOSE);
    }
    text
}

/// The system message's section describing the tools (empty without
/// tools).
fn tool_section(request: &ChatRequest) -> Result<String, String> {
    if request.tools.is_empty() {
        return Ok(String::new());
    }
    let mut list = String::new();
    for t in &request.tools {
        let parameters: serde_json::Value = super::grammar::parameters(t)?;
        list.push_str(
            &json!({"name": t.name, "description": t.description, "parameters": parameters})
                .to_string(),
        );
        list.push('\n');
    }
    let rule = match &request.tool_choice {
        ToolChoice::Required => "You must call one of these tools.".to_string(),
        ToolChoice::Tool(name) => format!("You must call the tool `{name}`."),
        _ => "Call a tool when it helps answer; otherwise answer in plain text.".to_string(),
    };
    Ok(format!(
        "\n\nYou can call these tools:\n<tools>\n{list}</tools>\n{rule} To call a tool, write {CALL_OPEN}{{\"name\": <tool name>, \"arguments\": <arguments as JSON>}}{CALL_CLOSE}"
    ))
}
