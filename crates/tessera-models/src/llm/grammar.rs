//! The grammar a completion is decoded under when tools are offered, in
//! llguidance's Lark dialect.
//!
//! - `auto`: any text, in which each `<tool_call>` opens a call that must
//!   be `{"name": <a tool>, "arguments": <valid for that tool's
//!   schema>}` followed by `</tool_call>` (the text trigger is a lazy
//!   lexeme: free text until the model writes it).
//! - `required`: one call and nothing else.
//! - a named tool: one call of that tool and nothing else.
//! - `none`: no grammar, no tools in the prompt.
//!
//! The JSON of a call is generated under the schema `anyOf` one object per
//! tool: `name` a constant, `arguments` the tool's parameters schema, in
//! compact form (no white space but one space after `:` and `,`), so a
//! small model cannot spend its budget on white space.

use llguidance::api::TopLevelGrammar;
use serde_json::{Value, json};
use tessera_runtime::capability::llm::{ChatRequest, LlmError, ToolChoice, ToolDefinition};

use super::prompt::{CALL_CLOSE, CALL_OPEN};

/// A tool's parameters schema (an empty one is an object with no
/// properties).
pub(crate) fn parameters(t: &ToolDefinition) -> Result<Value, String> {
    if t.parameters.trim().is_empty() {
        return Ok(json!({"type": "object", "properties": {}}));
    }
    let v: Value = serde_json::from_str(&t.parameters)
        .map_err(|e| format!("the parameters of tool `{}` are not JSON: {e}", t.name))?;
    if !v.is_object() && !v.is_boolean() {
        return Err(format!(
            "the parameters of tool `{}` are not a JSON Schema (an object)",
            t.name
        ));
    }
    Ok(v)
}

/// The grammar for `request`, or `None` when decoding is free.
pub(crate) fn for_request(request: &ChatRequest) -> Result<Option<TopLevelGrammar>, LlmError> {
    if request.tools.is_empty() || request.tool_choice == ToolChoice::None {
        if let ToolChoice::Tool(name) = &request.tool_choice {
            return Err(LlmError::Rejected(format!(
                "tool_choice names tool `{name}`, and no tools are offered"
            )));
        }
        if request.tool_choice == ToolChoice::Required {
            return Err(LlmError::Rejected(
                "tool_choice is `required`, and no tools are offered".into(),
            ));
        }
        return Ok(None);
    }
    let mut variants = Vec::new();
    for t in &request.tools {
        if let ToolChoice::Tool(name) = &request.tool_choice
            && *name != t.name
        {
            continue;
        }
        let p = parameters(t).map_err(LlmError::Rejected)?;
        variants.push(json!({
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": p},
            "required": ["name", "arguments"],
            "additionalProperties": false,
        }));
    }
    if variants.is_empty() {
        let ToolChoice::Tool(name) = &request.tool_choice else {
            return Ok(None);
        };
        return Err(LlmError::Rejected(format!(
            "tool_choice names tool `{name}`, which is not among the tools offered"
        )));
    }
    // Compact JSON (a space after `:` and `,` allowed): a small model
    // cannot loop on white space inside a call.
    let schema = json!({
        "x-guidance": {"whitespace_flexible": false, "item_separator": ", ?", "key_separator": ": ?"},
        "anyOf": variants,
    });
    let open = lark_string(CALL_OPEN);
    let close = lark_string(CALL_CLOSE);
    let lark = match request.tool_choice {
        ToolChoice::Auto => format!(
            "start: call* rest\n\
             rest: TEXT\n\
             TEXT: /(.|\\n)*/\n\
             head[lazy]: TEXT {open}\n\
             call: head body {close}\n\
             body: %json {schema}\n"
        ),
        _ => format!(
            "start: {open} body {close}\n\
             body: %json {schema}\n"
        ),
    };
    Ok(Some(TopLevelGrammar::from_lark(lark)))
}

/// A Lark string literal.
fn lark_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The tool calls in a completion's text: the text outside the calls, and
/// each call's name and arguments (as JSON text). A call that does not
/// parse (cut short by the token budget) is left out and reported.
pub(crate) fn split_calls(text: &str) -> (String, Vec<(String, String)>, bool) {
    let mut content = String::new();
    let mut calls = Vec::new();
    let mut cut = false;
    let mut rest = text;
    while let Some(at) = rest.find(CALL_OPEN) {
        content.push_str(&rest[..at]);
        let after = &rest[at + CALL_OPEN.len()..];
        // The first closing after which the call is whole JSON (a string
        // inside it may hold the closing text).
        let parsed = after.match_indices(CALL_CLOSE).find_map(|(end, _)| {
            serde_json::from_str::<Value>(after[..end].trim())
                .ok()
                .map(|v| (end, v))
        });
        let Some((end, v)) = parsed else {
            cut = true;
            rest = "";
            break;
        };
        let name = v["name"].as_str().unwrap_or_default().to_string();
        let arguments = v.get("arguments").cloned().unwrap_or(json!({}));
        calls.push((name, arguments.to_string()));
        rest = &after[end + CALL_CLOSE.len()..];
    }
    // The start of an opening cut short by the budget.
    if let Some(n) = (1..CALL_OPEN.len())
        .rev()
        .find(|n| rest.ends_with(&CALL_OPEN[..*n]))
    {
        rest = &rest[..rest.len() - n];
        cut = true;
    }
    content.push_str(rest);
    (content.trim().to_string(), calls, cut)
}
