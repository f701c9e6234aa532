//! The journal format (version 2), documented in `docs/journal.md`.
//!
//! A run's journal is a header, a sequence of steps (one per host
//! interaction, numbered from 0) and, once the run is over, an end record.
//! A run without an end record is *incomplete*: the process stopped while
//! it ran, and the steps written so far are still readable.
//!
//! Byte payloads longer than [`INLINE_LIMIT`] hex characters are stored once
//! in a blob table keyed by their SHA-256 and replaced in the step by
//! `{"blob": "sha256:<hex>"}`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tessera_runtime::Grants;

/// The `format` field of every header.
pub const FORMAT: &str = "tessera-journal";
/// The only version this build reads and writes. Version 2 stores each
/// step as a capability's typed request and response (version 1 had one
/// fixed enum of interactions) and grants per capability.
pub const VERSION: u32 = 2;
/// Hex strings longer than this (in characters) become blobs.
pub const INLINE_LIMIT: usize = 128;

/// Which component ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentRef {
    /// `sha256:<hex>` of the component file; its bytes are a blob under the
    /// same digest.
    pub digest: String,
    /// Where it was loaded from when recorded.
    pub origin: String,
}

/// Engine settings that affect what a guest computes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineSettings {
    /// wasmtime version.
    pub wasmtime: String,
    /// Fuel metering (always on in Tessera).
    pub fuel: bool,
    /// Maximum guest stack in bytes (deep recursion traps past it).
    pub max_wasm_stack: usize,
}

/// The first record of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// Format version; [`VERSION`] for journals this build writes.
    pub version: u32,
    /// The run's id.
    pub run_id: String,
    /// RFC 3339 UTC start time.
    pub started: String,
    /// The component.
    pub component: ComponentRef,
    /// The function's qualified name.
    pub function: String,
    /// The JSON arguments.
    pub args: Value,
    /// The grants and limits in force (shared with the loaded component
    /// that ran under them).
    pub grants: Arc<Grants>,
    /// Engine settings.
    pub engine: EngineSettings,
    /// Who made the call, when it came through a server (absent for runs
    /// recorded by the CLI, and in journals written before this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<Caller>,
    /// The plan step this call was made for (absent for other calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanStep>,
    /// The agent turn this call was (or, for a tool call, was made from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentTurn>,
    /// The session this call ran in (absent for a call in a fresh
    /// instance): its state depends on the session's earlier runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionLink>,
    /// The linked call this run served: a provider's run made for a
    /// consumer's import (`[imports]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linked: Option<LinkedFrom>,
}

/// The consumer's call a provider's run served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedFrom {
    /// The consumer's run.
    pub run: String,
    /// The consumer's step that made the call.
    pub step: u64,
    /// The interface, as the consumer imports it.
    pub interface: String,
}

/// A run's place in a session: the runs before it left the instance in the
/// state this one started from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionLink {
    /// The session's name when the run was recorded.
    pub name: String,
    /// 1-based position in the session's history.
    pub seq: u64,
    /// The run before this one in the history (absent for the first). A
    /// fork's first run names the run of the session it was forked from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
}

/// The agent turn a call belongs to: the turn itself, or a tool call it made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentTurn {
    /// The agent's id.
    pub agent: String,
    /// The turn's number (1-based; the turn being made).
    pub turn: u64,
    /// The message the turn handles.
    pub message: String,
    /// The attempt (1-based).
    pub attempt: u32,
    /// For a tool call: the turn's run and the tool's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<ToolLink>,
}

/// A tool call's place in its turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolLink {
    /// The turn's journal run.
    pub turn_run: String,
    /// The tool (`<grant>__<function>`).
    pub name: String,
}

/// The plan run, step and attempt a call was made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanStep {
    /// The plan run's id.
    pub run: String,
    /// The plan's name.
    pub plan: String,
    /// The step.
    pub step: String,
    /// The item of a fan-out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
    /// The attempt (1-based).
    pub attempt: u32,
    /// The idempotency key the step's calls share.
    pub key: String,
}

/// Who made a call that came through a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// How it arrived: `http` (the HTTP API), `mcp-http` (MCP over
    /// streamable HTTP), `mcp-stdio`, or a label chosen by a program that
    /// embeds the server.
    pub via: String,
    /// The id of the token the request presented, if any (never the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// How the run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum RunResult {
    /// The function returned (possibly a WIT `result` in its `err` case).
    Returned {
        /// The JSON result.
        value: Value,
    },
    /// A limit stopped the guest.
    Limit {
        /// The limit (`fuel`, `deadline`, `memory`, …).
        limit: String,
        /// The message.
        message: String,
    },
    /// The guest trapped.
    Trap {
        /// The trap message.
        message: String,
        /// The guest backtrace, with source files and lines when the
        /// component carries DWARF (absent in journals written before it
        /// was recorded, and for a divergence).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        backtrace: Option<String>,
    },
    /// The guest exited with a non-zero status (`wasi:cli/exit`,
    /// `proc_exit`).
    Exited {
        /// The status.
        code: i32,
    },
    /// The caller cancelled the call while the guest ran (an MCP
    /// cancellation, a client that went away, a server shutting down).
    Cancelled {
        /// Why.
        message: String,
    },
    /// The call was refused before the guest ran (bad arguments, busy).
    Refused {
        /// Why.
        message: String,
    },
}

/// The last record of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct End {
    /// How the call ended.
    pub result: RunResult,
    /// Fuel consumed.
    pub fuel_consumed: u64,
    /// Peak linear memory, bytes.
    pub peak_memory_bytes: u64,
    /// Wall-clock duration, microseconds.
    pub duration_us: u64,
    /// Number of steps.
    pub steps: u64,
}

/// Moves long hex payloads out of a step: returns the rewritten step and
/// the blobs (digest, bytes) it referenced.
pub fn externalize(step: &mut Value) -> Vec<(String, Vec<u8>)> {
    let mut blobs = Vec::new();
    walk(step, &mut |v| {
        if let Value::String(s) = v
            && s.len() > INLINE_LIMIT
            && s.len() % 2 == 0
            && s.bytes().all(|b| b.is_ascii_hexdigit())
            && let Ok(bytes) = hex::decode(s.as_str())
        {
            let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
            *v = serde_json::json!({ "blob": digest });
            blobs.push((digest, bytes));
        }
    });
    blobs
}

/// Puts blobs back into a step. `fetch` returns a blob's bytes by digest.
pub fn internalize(
    step: &mut Value,
    fetch: &mut dyn FnMut(&str) -> Option<Vec<u8>>,
) -> Result<(), String> {
    let mut missing = None;
    walk(step, &mut |v| {
        if let Value::Object(o) = v
            && o.len() == 1
            && let Some(Value::String(d)) = o.get("blob")
        {
            match fetch(d) {
                Some(bytes) => *v = Value::String(hex::encode(bytes)),
                None => missing = Some(d.clone()),
            }
        }
    });
    match missing {
        Some(d) => Err(format!("blob {d} is missing")),
        None => Ok(()),
    }
}

fn walk(v: &mut Value, f: &mut dyn FnMut(&mut Value)) {
    f(v);
    match v {
        Value::Array(a) => a.iter_mut().for_each(|x| walk(x, f)),
        Value::Object(o) => o.values_mut().for_each(|x| walk(x, f)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_payloads_become_blobs_and_come_back() {
        let long = "ab".repeat(200);
        let mut step = serde_json::json!({"kind": "stdout", "bytes": long});
        let blobs = externalize(&mut step);
        assert_eq!(blobs.len(), 1);
        assert!(
            step["bytes"]["blob"]
                .as_str()
                .unwrap()
                .starts_with("sha256:")
        );
        let mut store: std::collections::HashMap<String, Vec<u8>> = blobs.into_iter().collect();
        internalize(&mut step, &mut |d| store.remove(d)).unwrap();
        assert_eq!(step["bytes"], serde_json::json!("ab".repeat(200)));
        let mut short = serde_json::json!({"kind": "stdout", "bytes": "6869"});
        assert!(externalize(&mut short).is_empty());
    }
}
