//! `tessera agents`: durable actors — spawn, send, inspect, log, fork,
//! approve, dead letters, restart.
//!
//! The CLI drives agents in its own process on the data directory's store:
//! a command that delivers a message (or decides an approval, re-drives a
//! dead letter, restarts an agent) runs the turns it causes — and those
//! they cause in turn — then exits. Whatever a killed process left undone
//! is picked up by the next command that opens the agents (or by
//! `tessera agents run`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tessera_orchestrator::agent::{
    AgentError, AgentEvent, AgentInfo, AgentSystem, ReplyRecord, SendOptions, Status, records,
};
use tessera_runtime::capability::agent::ComponentSpec;

use crate::exit;
use crate::failure::{Failure, Outcome, finish};
use crate::setup::GlobalArgs;

/// `tessera agents …`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create a top-level agent from a component that exports
    /// `tessera:agent/handler.turn` (see wit/agent.wit).
    Spawn {
        /// Its id (lowercase letters, digits, `-`, `_`, `.`).
        id: String,
        /// The component: a `.wasm` file or a registry name.
        #[arg(long)]
        component: String,
        /// Its manifest (for a file).
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Its initial state (text; JSON by convention).
        #[arg(long)]
        state: Option<String>,
    },
    /// Send a message (JSON text by convention) and run the turns it
    /// causes; with `--wait`, print the reply of its turn.
    Send {
        /// The agent.
        id: String,
        /// The body.
        body: String,
        /// The message id (default: a new one); the same id is delivered
        /// once.
        #[arg(long = "id")]
        message_id: Option<String>,
        /// Wait for the turn's reply and print it.
        #[arg(long)]
        wait: bool,
        /// How long to wait, in seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Every agent: status, turns, mailbox depth, supervisor.
    List,
    /// One agent: status, state, mailbox depth, turns, tokens, children,
    /// supervisor, last error, approvals waiting.
    Show {
        /// The agent.
        id: String,
    },
    /// Every turn of an agent: the message, the model exchanges, the tool
    /// calls, the messages sent, the reply.
    Log {
        /// The agent.
        id: String,
    },
    /// A new agent with the state after turn `--at` and the turn log up to
    /// there; no turn runs again and no model is called.
    Fork {
        /// The agent.
        id: String,
        /// The turn to fork after (0: its initial state).
        #[arg(long)]
        at: u64,
        /// The new agent's id.
        #[arg(long = "as")]
        as_id: String,
    },
    /// Approval requests of an agent (tool calls waiting for a person).
    Approvals {
        /// The agent.
        id: String,
    },
    /// Approve a waiting tool call; the turn goes on.
    Approve {
        /// The agent.
        id: String,
        /// The request.
        request: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reject a waiting tool call; the tool answers `rejected`.
    Reject {
        /// The agent.
        id: String,
        /// The request.
        request: String,
        /// Why (the agent sees it).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Messages whose turns failed for good.
    DeadLetters {
        /// The agent.
        id: String,
    },
    /// Send dead letters back to the mailbox (all, or one by `--seq`).
    Redrive {
        /// The agent.
        id: String,
        /// The dead letter's sequence.
        #[arg(long)]
        seq: Option<u64>,
    },
    /// Restart an agent and its children: initial state, mailbox kept.
    Restart {
        /// The agent.
        id: String,
    },
    /// Run the work left by an earlier process until every agent is idle.
    Run,
}

/// Runs an `agents` subcommand.
pub async fn run(global: &GlobalArgs, args: Args) -> i32 {
    let json = args.json;
    finish(command(global, args.command, json).await, json)
}

async fn open(global: &GlobalArgs) -> Result<AgentSystem, Failure> {
    let journal = global
        .journal()
        .map_err(|m| Failure::internal("journal", m))?;
    let stores = global
        .stores()
        .map_err(|m| Failure::bad_input("store_settings", m))?;
    let store = stores
        .for_bucket(records::BUCKET)
        .await
        .map_err(|e| Failure::internal("store", e.to_string()))?;
    let components = super::plan::components(global)?;
    AgentSystem::open(store, Arc::new(components), journal, "cli")
        .await
        .map_err(failure)
}

fn failure(e: AgentError) -> Failure {
    let kind = match &e {
        AgentError::NotFound(_) => "no_such_agent",
        AgentError::Exists(_) => "agent_exists",
        AgentError::InvalidId(_) => "invalid_id",
        AgentError::MailboxFull { .. } => "mailbox_full",
        AgentError::Stopped { .. } => "agent_stopped",
        AgentError::Component { .. } => "component",
        AgentError::Timeout => "timeout",
        AgentError::Store(_) | AgentError::Corrupt { .. } => "store",
        AgentError::Missing(_) => "not_found",
        AgentError::Invalid(_) => "invalid",
    };
    let code = match &e {
        AgentError::Store(_) | AgentError::Corrupt { .. } => exit::INTERNAL,
        _ => exit::BAD_INPUT,
    };
    Failure::new(code, kind, e.to_string())
}

fn absolute(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .to_string_lossy()
        .into_owned()
}

fn print(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Prints events as turns commit (text mode), until dropped.
fn narrate(sys: &AgentSystem, json: bool) -> Option<tokio::task::JoinHandle<()>> {
    if json {
        return None;
    }
    let mut rx = sys.events();
    Some(tokio::spawn(async move {
        while let Ok(e) = rx.recv().await {
            let line = match e {
                AgentEvent::Turn {
                    agent,
                    turn,
                    run,
                    sent,
                    ..
                } => format!(
                    "{agent}: turn {turn} committed (run {}){}",
                    run.unwrap_or_default(),
                    if sent > 0 {
                        format!(", {sent} message(s) sent")
                    } else {
                        String::new()
                    }
                ),
                AgentEvent::AttemptFailed {
                    agent,
                    attempt,
                    error,
                    ..
                } => format!("{agent}: attempt {attempt} failed: {error}"),
                AgentEvent::DeadLetter { agent, message, .. } => {
                    format!("{agent}: message {message} moved to the dead letters")
                }
                AgentEvent::Approval {
                    agent,
                    request,
                    tool,
                    arguments,
                } => format!(
                    "{agent}: tool call {tool} {arguments} waits for approval: \
                     `tessera agents approve {agent} {request}` or `reject`"
                ),
                AgentEvent::Restarted {
                    supervisor,
                    agents,
                    reason,
                } => format!(
                    "{}: restarted {} ({reason})",
                    supervisor.unwrap_or_else(|| "user".into()),
                    agents.join(", ")
                ),
                AgentEvent::Failed { agent, reason } => format!("{agent}: failed: {reason}"),
                AgentEvent::Spawned { agent, parent } => match parent {
                    Some(p) => format!("{p}: spawned {agent}"),
                    None => format!("spawned {agent}"),
                },
            };
            eprintln!("{line}");
        }
    }))
}

/// Waits until no agent has work, and for the journal to hold every turn.
async fn settle(sys: &AgentSystem, narrator: Option<tokio::task::JoinHandle<()>>) {
    sys.idle().await;
    sys.journal().flush();
    if let Some(n) = narrator {
        // Let the last events print.
        tokio::time::sleep(Duration::from_millis(20)).await;
        n.abort();
    }
}

fn info_json(i: &AgentInfo) -> Value {
    let r = &i.record;
    json!({
        "id": r.id,
        "status": r.status.name(),
        "reason": match &r.status {
            Status::Failed { reason } | Status::Stopped { reason } => Some(reason.clone()),
            _ => None,
        },
        "waiting_for": match &r.status { Status::Waiting { request } => Some(request.clone()), _ => None },
        "component": r.component.component,
        "parent": r.parent,
        "children": r.children,
        "turns": r.turns,
        "depth": i.depth,
        "tokens": r.tokens,
        "token_budget": r.token_budget,
        "restarts": r.restart_count,
        "last_error": r.last_error,
        "supervisor": r.supervisor,
        "mailbox": r.mailbox,
        "retries": r.retries,
        "state": r.state,
        "created": r.created,
    })
}

async fn command(global: &GlobalArgs, command: Command, json: bool) -> Outcome {
    let sys = open(global).await?;
    let narrator = narrate(&sys, json);
    match command {
        Command::Spawn {
            id,
            component,
            manifest,
            state,
        } => {
            let is_file = component.ends_with(".wasm") || component.contains('/');
            let spec = if is_file {
                ComponentSpec {
                    component: absolute(Path::new(&component)),
                    manifest: manifest.as_deref().map(absolute),
                }
            } else {
                if manifest.is_some() {
                    return Err(Failure::bad_input(
                        "usage",
                        "--manifest goes with a .wasm file; a registered component has its own",
                    ));
                }
                ComponentSpec {
                    component,
                    manifest: None,
                }
            };
            let rec = sys.spawn(&id, spec, state).await.map_err(failure)?;
            settle(&sys, narrator).await;
            if json {
                print(&json!({"ok": true, "agent": rec.id}));
            } else {
                println!("spawned {}", rec.id);
            }
            Ok(0)
        }
        Command::Send {
            id,
            body,
            message_id,
            wait,
            timeout,
        } => {
            let mid = sys
                .send(
                    &id,
                    &body,
                    SendOptions {
                        id: message_id,
                        expects_reply: wait,
                    },
                )
                .await
                .map_err(failure)?;
            if !wait {
                settle(&sys, narrator).await;
                if json {
                    print(&json!({"ok": true, "message": mid}));
                } else {
                    println!("sent {mid}");
                }
                return Ok(0);
            }
            let reply = sys
                .wait_reply(&mid, Duration::from_secs(timeout))
                .await
                .map_err(failure)?;
            settle(&sys, narrator).await;
            reply_outcome(&mid, &reply, json)
        }
        Command::List => {
            let list = sys.list().await.map_err(failure)?;
            settle(&sys, narrator).await;
            if json {
                print(&Value::Array(list.iter().map(info_json).collect()));
            } else if list.is_empty() {
                println!("no agents");
            } else {
                println!(
                    "{:<28} {:<8} {:>6} {:>6} {:>8}  PARENT",
                    "ID", "STATUS", "TURNS", "QUEUED", "TOKENS"
                );
                for i in &list {
                    let r = &i.record;
                    println!(
                        "{:<28} {:<8} {:>6} {:>6} {:>8}  {}",
                        r.id,
                        r.status.name(),
                        r.turns,
                        i.depth,
                        r.tokens,
                        r.parent.as_deref().unwrap_or("-")
                    );
                }
            }
            Ok(0)
        }
        Command::Show { id } => {
            let info = sys.get(&id).await.map_err(failure)?;
            let approvals = sys.approvals(&id).await.map_err(failure)?;
            let dead = sys.dead_letters(&id).await.map_err(failure)?;
            settle(&sys, narrator).await;
            let mut v = info_json(&info);
            v["approvals_waiting"] = json!(
                approvals
                    .iter()
                    .filter(|a| a.decision.is_none())
                    .map(
                        |a| json!({"request": a.request, "tool": a.tool, "arguments": a.arguments})
                    )
                    .collect::<Vec<_>>()
            );
            v["dead_letters"] = json!(dead.len());
            if json {
                print(&v);
            } else {
                let r = &info.record;
                println!("agent      {}", r.id);
                println!("status     {}", r.status.name());
                if let Status::Failed { reason } | Status::Stopped { reason } = &r.status {
                    println!("reason     {reason}");
                }
                println!("component  {}", r.component.component);
                println!("supervisor {}", r.parent.as_deref().unwrap_or("-"));
                if !r.children.is_empty() {
                    println!("children   {}", r.children.join(", "));
                }
                println!(
                    "turns      {}   queued {}   tokens {}{}",
                    r.turns,
                    info.depth,
                    r.tokens,
                    r.token_budget
                        .map(|b| format!(" of {b}"))
                        .unwrap_or_default()
                );
                println!("restarts   {}", r.restart_count);
                if let Some(e) = &r.last_error {
                    println!("last error {e}");
                }
                for a in approvals.iter().filter(|a| a.decision.is_none()) {
                    println!("waiting    {} → {} {}", a.request, a.tool, a.arguments);
                }
                if !dead.is_empty() {
                    println!(
                        "dead       {} (tessera agents dead-letters {id})",
                        dead.len()
                    );
                }
                println!("state      {}", r.state.as_deref().unwrap_or("(none)"));
            }
            Ok(0)
        }
        Command::Log { id } => {
            let turns = sys.turns(&id).await.map_err(failure)?;
            settle(&sys, narrator).await;
            let journal = sys.journal().clone();
            journal.flush();
            let mut out = Vec::new();
            for t in &turns {
                let mut exchanges = Vec::new();
                if let Some(run) = &t.run
                    && let Ok(steps) = journal.steps(run)
                {
                    for (i, s) in steps {
                        if s.capability == "llm" || s.capability == "agent" {
                            exchanges.push(json!({
                                "step": i,
                                "kind": s.kind(),
                                "line": tessera_runtime::capability::describe(&s),
                                "request": s.request,
                                "response": s.response,
                            }));
                        }
                    }
                }
                out.push(json!({
                    "turn": t.turn,
                    "message": t.message,
                    "run": t.run,
                    "earlier_runs": t.earlier_runs,
                    "reply": t.reply,
                    "sent": t.sent,
                    "tokens": t.tokens,
                    "committed": t.committed,
                    "duration_ms": t.duration_ms,
                    "exchanges": exchanges,
                }));
            }
            if json {
                print(&Value::Array(out));
            } else {
                for t in &out {
                    println!(
                        "turn {}  run {}  {} ms  {} tokens",
                        t["turn"],
                        t["run"].as_str().unwrap_or("-"),
                        t["duration_ms"],
                        t["tokens"]
                    );
                    println!(
                        "  in    {} {}",
                        t["message"]["sender"].as_str().unwrap_or("(outside)"),
                        t["message"]["body"].as_str().unwrap_or_default()
                    );
                    for x in t["exchanges"].as_array().into_iter().flatten() {
                        println!(
                            "  {:>3}   {}",
                            x["step"],
                            x["line"].as_str().unwrap_or_default()
                        );
                    }
                    for s in t["sent"].as_array().into_iter().flatten() {
                        println!(
                            "  out   → {} ({})",
                            s[0].as_str().unwrap_or_default(),
                            s[1].as_str().unwrap_or_default()
                        );
                    }
                    if let Some(r) = t["reply"].as_str() {
                        println!("  reply {r}");
                    }
                }
            }
            Ok(0)
        }
        Command::Fork { id, at, as_id } => {
            let rec = sys.fork(&id, at, &as_id).await.map_err(failure)?;
            settle(&sys, narrator).await;
            if json {
                print(&json!({"ok": true, "agent": rec.id, "turns": rec.turns}));
            } else {
                println!("forked {id} after turn {at} as {}", rec.id);
            }
            Ok(0)
        }
        Command::Approvals { id } => {
            let list = sys.approvals(&id).await.map_err(failure)?;
            settle(&sys, narrator).await;
            if json {
                print(&serde_json::to_value(&list).unwrap_or_default());
            } else if list.is_empty() {
                println!("no approval requests");
            } else {
                for a in &list {
                    let state = match &a.decision {
                        None => "waiting".to_string(),
                        Some(d) if d.approved => format!("approved {}", d.at),
                        Some(d) => format!(
                            "rejected {}{}",
                            d.at,
                            d.reason
                                .as_deref()
                                .map(|r| format!(": {r}"))
                                .unwrap_or_default()
                        ),
                    };
                    println!(
                        "{:<10} turn {:<4} {} {}  [{state}]",
                        a.request, a.turn, a.tool, a.arguments
                    );
                }
            }
            Ok(0)
        }
        Command::Approve {
            id,
            request,
            reason,
        } => decide(&sys, narrator, &id, &request, true, reason, json).await,
        Command::Reject {
            id,
            request,
            reason,
        } => decide(&sys, narrator, &id, &request, false, reason, json).await,
        Command::DeadLetters { id } => {
            let list = sys.dead_letters(&id).await.map_err(failure)?;
            settle(&sys, narrator).await;
            if json {
                print(&serde_json::to_value(&list).unwrap_or_default());
            } else if list.is_empty() {
                println!("no dead letters");
            } else {
                for d in &list {
                    println!(
                        "seq {:<6} {}  {} attempt(s): {}\n           {}",
                        d.seq, d.message.id, d.attempts, d.error, d.message.body
                    );
                }
            }
            Ok(0)
        }
        Command::Redrive { id, seq } => {
            let ids = sys.redrive(&id, seq).await.map_err(failure)?;
            settle(&sys, narrator).await;
            if json {
                print(&json!({"ok": true, "messages": ids}));
            } else {
                println!("re-drove {} message(s)", ids.len());
            }
            Ok(0)
        }
        Command::Restart { id } => {
            sys.restart(&id).await.map_err(failure)?;
            settle(&sys, narrator).await;
            if json {
                print(&json!({"ok": true}));
            } else {
                println!("restarted {id}");
            }
            Ok(0)
        }
        Command::Run => {
            settle(&sys, narrator).await;
            if json {
                print(&json!({"ok": true}));
            }
            Ok(0)
        }
    }
}

async fn decide(
    sys: &AgentSystem,
    narrator: Option<tokio::task::JoinHandle<()>>,
    id: &str,
    request: &str,
    approved: bool,
    reason: Option<String>,
    json: bool,
) -> Outcome {
    let a = sys
        .decide(id, request, approved, Some("cli".into()), reason)
        .await
        .map_err(failure)?;
    settle(sys, narrator).await;
    if json {
        print(&json!({"ok": true, "approval": a}));
    } else {
        println!(
            "{} {request}; the turn went on",
            if approved { "approved" } else { "rejected" }
        );
    }
    Ok(0)
}

fn reply_outcome(message: &str, reply: &ReplyRecord, json: bool) -> Outcome {
    match reply {
        ReplyRecord::Replied { reply, turn, run } => {
            if json {
                let parsed = reply
                    .as_deref()
                    .and_then(|r| serde_json::from_str::<Value>(r).ok());
                print(&json!({
                    "ok": true,
                    "message": message,
                    "turn": turn,
                    "run": run,
                    "reply": parsed.unwrap_or_else(|| json!(reply)),
                }));
            } else {
                println!("{}", reply.as_deref().unwrap_or("(no reply)"));
            }
            Ok(0)
        }
        ReplyRecord::Failed { error } => Err(Failure::new(
            exit::GUEST_ERROR,
            "turn_failed",
            format!("the turn failed for good (the message is a dead letter): {error}"),
        )
        .with("message", message)),
    }
}
