//! `worker`: the agent the `coordinator` spawns as its children.
//!
//! | body                | reply            | state after         |
//! |---------------------|------------------|---------------------|
//! | `{"text": "a b c"}` | `{"words": 3}`   | `{"handled": k+1}`  |
//! | `{"fail": true}`    | turn fails with `asked to fail` | unchanged |
//! | `{"trap": true}`    | the instance traps (a panic)    | unchanged |
//!
//! Words are separated by Unicode white space. `handled` counts the
//! messages this worker has handled successfully: a failed or trapped turn
//! commits nothing, so it is not counted. Any other body fails the turn.

wit_bindgen::generate!({
    world: "worker",
    path: "wit",
    generate_all,
});

use exports::tessera::agent::handler::{Guest, Message, TurnOutput};
use serde_json::{Value, json};

/// The component's single implementation type.
struct Component;

/// The number of messages handled so far, from the previous turn's state
/// (none before the first turn, or an object without `handled`: 0).
fn handled(state: Option<&str>) -> Result<u64, String> {
    let Some(text) = state else { return Ok(0) };
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("the state is not JSON: {e}"))?;
    match value.get("handled") {
        None | Some(Value::Null) => Ok(0),
        Some(n) => n
            .as_u64()
            .ok_or_else(|| format!("the state's `handled` is not a count: {n}")),
    }
}

impl Guest for Component {
    fn turn(state: Option<String>, message: Message) -> Result<TurnOutput, String> {
        let body: Value = serde_json::from_str(&message.body)
            .map_err(|e| format!("the body is not JSON: {e}"))?;
        if body.get("trap").and_then(Value::as_bool) == Some(true) {
            panic!("asked to trap");
        }
        if body.get("fail").and_then(Value::as_bool) == Some(true) {
            return Err("asked to fail".into());
        }
        let Some(text) = body.get("text").and_then(Value::as_str) else {
            return Err(
                "expected {\"text\": \"...\"}, {\"fail\": true} or {\"trap\": true}".into(),
            );
        };
        let words = text.split_whitespace().count();
        let handled = handled(state.as_deref())? + 1;
        Ok(TurnOutput {
            state: json!({ "handled": handled }).to_string(),
            reply: Some(json!({ "words": words }).to_string()),
        })
    }
}

export!(Component);
