//! `tessera agents`: durable actors — spawn, send, inspect, log, fork,
//! approve, dead letters, restart.
//!
//! Without `--server` the CLI drives agents in its own process on the data
//! directory's store: a command that delivers a message (or decides an
//! approval, re-drives a dead letter, restarts an agent) runs the turns it
//! causes — and those they cause in turn — then exits. Whatever a killed
//! process left undone is picked up by the next command that opens the
//! agents (or by `tessera agents run`).
//!
//! The embedded store is one file that one process at a time may hold: a
//! running `tessera serve` keeps it, and the local command then says so
//! and points at `--server`. With `--server` every subcommand but `run`
//! goes through that server's HTTP API (`/v1/agents…`), whose agent system
//! runs the turns; `run` is refused (the server runs its agents itself),
//! and so is spawning a `.wasm` file (a server runs registered components
//! only).
//!
//! Both modes print the same documents, text and `--json`: each mode
//! produces the HTTP API's documents (`tessera_server::api`, locally from
//! the agent system's records) or the agent system's own records
//! (approvals, dead letters), and `doc` turns the API's documents into
//! what this command prints, once. Failures have the same kinds and exit
//! codes in both modes (`remote_failure` maps the API's error codes).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tessera_orchestrator::agent::{
    AgentError, AgentEvent, AgentSystem, Approval, DeadLetter, ReplyRecord, SendOptions, records,
};
use tessera_runtime::capability::agent::ComponentSpec;
use tessera_server::api;
use tessera_store::StoreError;

use crate::cmd::remote::{Api, ApiFailure};
use crate::exit;
use crate::failure::{Failure, Outcome, finish};
use crate::setup::GlobalArgs;

/// `tessera agents …`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
    /// Go through a running server's HTTP API (`http://host:port`) instead
    /// of opening the data directory's store (which a running server
    /// holds); the server runs the turns.
    #[arg(long, env = "TESSERA_SERVER", global = true)]
    server: Option<String>,
    /// Bearer token for `--server` (scope `read` to look, `call` to send,
    /// decide approvals and re-drive, `manage` to spawn, fork and restart).
    #[arg(long, env = "TESSERA_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
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
        /// The component: a `.wasm` file or a registry name (a registry
        /// name only with `--server`).
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
        /// How long to wait, in seconds (at most 3600 with `--server`).
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
    /// Run the work left by an earlier process until every agent is idle
    /// (not with `--server`: a server runs its agents itself).
    Run,
}

/// Runs an `agents` subcommand.
pub async fn run(global: &GlobalArgs, args: Args) -> i32 {
    let json = args.json;
    let outcome = match args.server {
        Some(server) => remote(&server, args.token, args.command, json).await,
        None => local(global, args.command, json).await,
    };
    finish(outcome, json)
}

async fn local(global: &GlobalArgs, command: Command, json: bool) -> Outcome {
    let agents = Local::open(global, json).await?;
    self::command(&agents, command, json).await
}

async fn remote(server: &str, token: Option<String>, command: Command, json: bool) -> Outcome {
    if let Command::Run = command {
        return Err(Failure::bad_input(
            "usage",
            "`tessera agents run` runs the agents' pending work in this process; a server \
             runs its agents itself: drop --server (with the server stopped) to run them here",
        ));
    }
    let api = Api::new(server, token).map_err(Failure::from)?;
    self::command(&Remote { api }, command, json).await
}

/// A reply to a message sent with `--wait`.
struct Reply {
    message: String,
    turn: u64,
    run: Option<String>,
    /// The reply's text, if the turn gave one.
    text: Option<String>,
}

/// What the subcommands do, on the data directory ([`Local`]) or through a
/// server ([`Remote`]). Agents are documents as [`doc::agent`] (and
/// [`doc::shown`], [`doc::turn`]) make them from the HTTP API's.
trait Agents {
    /// Spawns an agent; its id.
    async fn spawn(
        &self,
        id: &str,
        component: String,
        manifest: Option<PathBuf>,
        state: Option<String>,
    ) -> Result<String, Failure>;
    /// Sends a message; its id.
    async fn send(&self, id: &str, body: &str, message: Option<String>) -> Result<String, Failure>;
    /// Sends a message and waits for the reply of its turn (a turn that
    /// failed for good is `turn_failed`, exit 3).
    async fn ask(
        &self,
        id: &str,
        body: &str,
        message: Option<String>,
        timeout: u64,
    ) -> Result<Reply, Failure>;
    async fn list(&self) -> Result<Vec<Value>, Failure>;
    async fn show(&self, id: &str) -> Result<Value, Failure>;
    async fn log(&self, id: &str) -> Result<Vec<Value>, Failure>;
    /// Forks an agent; the new one.
    async fn fork(&self, id: &str, at: u64, as_id: &str) -> Result<Value, Failure>;
    async fn approvals(&self, id: &str) -> Result<Vec<Approval>, Failure>;
    async fn decide(
        &self,
        id: &str,
        request: &str,
        approved: bool,
        reason: Option<String>,
    ) -> Result<Approval, Failure>;
    async fn dead_letters(&self, id: &str) -> Result<Vec<DeadLetter>, Failure>;
    /// Re-drives dead letters; the ids they were sent again under.
    async fn redrive(&self, id: &str, seq: Option<u64>) -> Result<Vec<String>, Failure>;
    async fn restart(&self, id: &str) -> Result<(), Failure>;
    /// Runs the work left until every agent is idle.
    async fn run_pending(&self) -> Result<(), Failure>;
}

fn print(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// One subcommand, printed the same way whichever way it went.
async fn command(agents: &impl Agents, command: Command, json: bool) -> Outcome {
    match command {
        Command::Spawn {
            id,
            component,
            manifest,
            state,
        } => {
            let id = agents.spawn(&id, component, manifest, state).await?;
            if json {
                print(&json!({"ok": true, "agent": id}));
            } else {
                println!("spawned {id}");
            }
        }
        Command::Send {
            id,
            body,
            message_id,
            wait,
            timeout,
        } => {
            if wait {
                let reply = agents.ask(&id, &body, message_id, timeout).await?;
                print_reply(&reply, json);
            } else {
                let mid = agents.send(&id, &body, message_id).await?;
                if json {
                    print(&json!({"ok": true, "message": mid}));
                } else {
                    println!("sent {mid}");
                }
            }
        }
        Command::List => {
            let list = agents.list().await?;
            if json {
                print(&Value::Array(list));
            } else {
                print_list(&list);
            }
        }
        Command::Show { id } => {
            let v = agents.show(&id).await?;
            if json {
                print(&v);
            } else {
                print_show(&v);
            }
        }
        Command::Log { id } => {
            let turns = agents.log(&id).await?;
            if json {
                print(&Value::Array(turns));
            } else {
                print_log(&turns);
            }
        }
        Command::Fork { id, at, as_id } => {
            let v = agents.fork(&id, at, &as_id).await?;
            if json {
                print(&json!({"ok": true, "agent": v["id"], "turns": v["turns"]}));
            } else {
                println!(
                    "forked {id} after turn {at} as {}",
                    v["id"].as_str().unwrap_or_default()
                );
            }
        }
        Command::Approvals { id } => {
            let list = agents.approvals(&id).await?;
            if json {
                print(&serde_json::to_value(&list).unwrap_or_default());
            } else {
                print_approvals(&list);
            }
        }
        Command::Approve {
            id,
            request,
            reason,
        } => decide(agents, &id, &request, true, reason, json).await?,
        Command::Reject {
            id,
            request,
            reason,
        } => decide(agents, &id, &request, false, reason, json).await?,
        Command::DeadLetters { id } => {
            let list = agents.dead_letters(&id).await?;
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
        }
        Command::Redrive { id, seq } => {
            let ids = agents.redrive(&id, seq).await?;
            if json {
                print(&json!({"ok": true, "messages": ids}));
            } else {
                println!("re-drove {} message(s)", ids.len());
            }
        }
        Command::Restart { id } => {
            agents.restart(&id).await?;
            if json {
                print(&json!({"ok": true}));
            } else {
                println!("restarted {id}");
            }
        }
        Command::Run => {
            agents.run_pending().await?;
            if json {
                print(&json!({"ok": true}));
            }
        }
    }
    Ok(exit::OK)
}

async fn decide(
    agents: &impl Agents,
    id: &str,
    request: &str,
    approved: bool,
    reason: Option<String>,
    json: bool,
) -> Result<(), Failure> {
    let a = agents.decide(id, request, approved, reason).await?;
    if json {
        print(&json!({"ok": true, "approval": a}));
    } else {
        println!(
            "{} {request}; the turn went on",
            if approved { "approved" } else { "rejected" }
        );
    }
    Ok(())
}

fn print_reply(r: &Reply, json: bool) {
    if json {
        print(&json!({
            "ok": true,
            "message": r.message,
            "turn": r.turn,
            "run": r.run,
            "reply": tessera_server::agents::reply_value(r.text.as_deref()),
        }));
    } else {
        println!("{}", r.text.as_deref().unwrap_or("(no reply)"));
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// A count (a JSON value's `Display` ignores widths).
fn number(v: &Value) -> u64 {
    v.as_u64().unwrap_or_default()
}

fn print_list(list: &[Value]) {
    if list.is_empty() {
        println!("no agents");
        return;
    }
    println!(
        "{:<28} {:<8} {:>6} {:>6} {:>8}  PARENT",
        "ID", "STATUS", "TURNS", "QUEUED", "TOKENS"
    );
    for a in list {
        println!(
            "{:<28} {:<8} {:>6} {:>6} {:>8}  {}",
            text(&a["id"]),
            text(&a["status"]),
            number(&a["turns"]),
            number(&a["depth"]),
            number(&a["tokens"]),
            a["parent"].as_str().unwrap_or("-")
        );
    }
}

fn print_show(v: &Value) {
    let id = text(&v["id"]);
    println!("agent      {id}");
    println!("status     {}", text(&v["status"]));
    if let Some(reason) = v["reason"].as_str() {
        println!("reason     {reason}");
    }
    println!("component  {}", text(&v["component"]));
    println!("supervisor {}", v["parent"].as_str().unwrap_or("-"));
    let children: Vec<&str> = v["children"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    if !children.is_empty() {
        println!("children   {}", children.join(", "));
    }
    println!(
        "turns      {}   queued {}   tokens {}{}",
        v["turns"],
        v["depth"],
        v["tokens"],
        v["token_budget"]
            .as_u64()
            .map(|b| format!(" of {b}"))
            .unwrap_or_default()
    );
    println!("restarts   {}", v["restarts"]);
    if let Some(e) = v["last_error"].as_str() {
        println!("last error {e}");
    }
    for a in v["approvals_waiting"].as_array().into_iter().flatten() {
        println!(
            "waiting    {} → {} {}",
            text(&a["request"]),
            text(&a["tool"]),
            text(&a["arguments"])
        );
    }
    let dead = v["dead_letters"].as_u64().unwrap_or_default();
    if dead > 0 {
        println!("dead       {dead} (tessera agents dead-letters {id})");
    }
    println!("state      {}", v["state"].as_str().unwrap_or("(none)"));
}

fn print_log(turns: &[Value]) {
    for t in turns {
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
            text(&t["message"]["body"])
        );
        for x in t["exchanges"].as_array().into_iter().flatten() {
            println!("  {:>3}   {}", x["step"], text(&x["line"]));
        }
        for s in t["sent"].as_array().into_iter().flatten() {
            println!("  out   → {} ({})", text(&s[0]), text(&s[1]));
        }
        if let Some(r) = t["reply"].as_str() {
            println!("  reply {r}");
        }
    }
}

fn print_approvals(list: &[Approval]) {
    if list.is_empty() {
        println!("no approval requests");
        return;
    }
    for a in list {
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

/// The documents this command prints, made from the HTTP API's documents
/// (which the local mode makes from the agent system's records with the
/// server's own conversions): the one place where the two shapes meet.
mod doc {
    use serde_json::{Map, Value, json};

    /// The fields of an agent (`list`, `show`, `fork`), in order; those the
    /// API leaves out when empty are `null`.
    const AGENT: [&str; 18] = [
        "id",
        "status",
        "reason",
        "waiting_for",
        "component",
        "parent",
        "children",
        "turns",
        "depth",
        "tokens",
        "token_budget",
        "restarts",
        "last_error",
        "supervisor",
        "mailbox",
        "retries",
        "state",
        "created",
    ];

    /// The fields of a turn (`log`), in order.
    const TURN: [&str; 10] = [
        "turn",
        "message",
        "run",
        "earlier_runs",
        "reply",
        "sent",
        "tokens",
        "committed",
        "duration_ms",
        "exchanges",
    ];

    fn pick(v: &Value, fields: &[&str]) -> Map<String, Value> {
        fields
            .iter()
            .map(|f| ((*f).to_string(), v.get(*f).cloned().unwrap_or(Value::Null)))
            .collect()
    }

    /// An agent, from an `AgentInfo`.
    pub fn agent(info: &Value) -> Value {
        Value::Object(pick(info, &AGENT))
    }

    /// An agent as `show` prints it, from the `AgentInfo` of `GET
    /// /v1/agents/{id}`: with the approval requests waiting (request, tool,
    /// arguments) and the dead-letter count.
    pub fn shown(info: &Value) -> Value {
        let mut v = pick(info, &AGENT);
        let waiting: Vec<Value> = info["approvals_waiting"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| json!({"request": a["request"], "tool": a["tool"], "arguments": a["arguments"]}))
            .collect();
        v.insert("approvals_waiting".into(), Value::Array(waiting));
        v.insert(
            "dead_letters".into(),
            json!(info["dead_letters"].as_u64().unwrap_or_default()),
        );
        Value::Object(v)
    }

    /// A turn, from an `AgentTurn`: the messages it sent as `[to, id]`.
    pub fn turn(t: &Value) -> Value {
        let mut v = pick(t, &TURN);
        let sent: Vec<Value> = t["sent"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| json!([s["to"], s["message"]]))
            .collect();
        v.insert("sent".into(), Value::Array(sent));
        if v["earlier_runs"].is_null() {
            v.insert("earlier_runs".into(), json!([]));
        }
        if v["exchanges"].is_null() {
            v.insert("exchanges".into(), json!([]));
        }
        Value::Object(v)
    }
}

/// On the data directory: the agent system in this process, which runs
/// the turns a command causes before the command prints.
struct Local {
    sys: AgentSystem,
    /// Prints events as turns commit (text mode), until settled.
    narrator: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Local {
    async fn open(global: &GlobalArgs, json: bool) -> Result<Self, Failure> {
        let stores = global
            .stores()
            .map_err(|m| Failure::bad_input("store_settings", m))?;
        // The store before the journal: a running server holds both, and
        // the store's error says so and points at `--server`.
        let store = stores
            .for_bucket(records::BUCKET)
            .await
            .map_err(|e| store_failure(&e))?;
        let journal = global.journal().map_err(journal_failure)?;
        let components = super::plan::components(global)?;
        let sys = AgentSystem::open(store, Arc::new(components), journal, "cli")
            .await
            .map_err(failure)?;
        let narrator = Mutex::new(narrate(&sys, json));
        Ok(Self { sys, narrator })
    }

    /// Waits until no agent has work, and for the journal to hold every
    /// turn.
    async fn settle(&self) {
        self.sys.idle().await;
        self.sys.journal().flush();
        let narrator = self
            .narrator
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(n) = narrator {
            // Let the last events print.
            tokio::time::sleep(Duration::from_millis(20)).await;
            n.abort();
        }
    }

    /// An agent's `AgentInfo` as `GET /v1/agents/{id}` answers it.
    async fn detail(&self, id: &str) -> Result<Value, Failure> {
        let info = self.sys.get(id).await.map_err(failure)?;
        let approvals = self.sys.approvals(id).await.map_err(failure)?;
        let dead = self.sys.dead_letters(id).await.map_err(failure)?;
        self.settle().await;
        let mut out = api::AgentInfo::of(&info);
        out.approvals_waiting = Some(
            approvals
                .iter()
                .filter(|a| a.decision.is_none())
                .map(api::ApprovalInfo::from)
                .collect(),
        );
        out.dead_letters = Some(dead.len() as u64);
        Ok(serde_json::to_value(out).unwrap_or_default())
    }
}

/// Whether `--component` names a file rather than a registered component.
fn is_file(component: &str) -> bool {
    component.ends_with(".wasm") || component.contains('/')
}

fn absolute(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .to_string_lossy()
        .into_owned()
}

impl Agents for Local {
    async fn spawn(
        &self,
        id: &str,
        component: String,
        manifest: Option<PathBuf>,
        state: Option<String>,
    ) -> Result<String, Failure> {
        let spec = if is_file(&component) {
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
        let rec = self.sys.spawn(id, spec, state).await.map_err(failure)?;
        self.settle().await;
        Ok(rec.id)
    }

    async fn send(&self, id: &str, body: &str, message: Option<String>) -> Result<String, Failure> {
        let options = SendOptions {
            id: message,
            expects_reply: false,
        };
        let mid = self.sys.send(id, body, options).await.map_err(failure)?;
        self.settle().await;
        Ok(mid)
    }

    async fn ask(
        &self,
        id: &str,
        body: &str,
        message: Option<String>,
        timeout: u64,
    ) -> Result<Reply, Failure> {
        let options = SendOptions {
            id: message,
            expects_reply: true,
        };
        let mid = self.sys.send(id, body, options).await.map_err(failure)?;
        let reply = self
            .sys
            .wait_reply(&mid, Duration::from_secs(timeout))
            .await
            .map_err(failure)?;
        self.settle().await;
        match reply {
            ReplyRecord::Replied { reply, turn, run } => Ok(Reply {
                message: mid,
                turn,
                run,
                text: reply,
            }),
            ReplyRecord::Failed { error } => Err(Failure::new(
                exit::GUEST_ERROR,
                "turn_failed",
                format!("the turn failed for good (the message is a dead letter): {error}"),
            )
            .with("message", mid)),
        }
    }

    async fn list(&self) -> Result<Vec<Value>, Failure> {
        let list = self.sys.list().await.map_err(failure)?;
        self.settle().await;
        Ok(list
            .iter()
            .map(|i| doc::agent(&serde_json::to_value(api::AgentInfo::of(i)).unwrap_or_default()))
            .collect())
    }

    async fn show(&self, id: &str) -> Result<Value, Failure> {
        Ok(doc::shown(&self.detail(id).await?))
    }

    async fn log(&self, id: &str) -> Result<Vec<Value>, Failure> {
        let turns = self.sys.turns(id).await.map_err(failure)?;
        self.settle().await;
        let journal = self.sys.journal().clone();
        journal.flush();
        let mut out = Vec::new();
        for t in &turns {
            let turn = tessera_server::agents::render_turn(&journal, t);
            out.push(doc::turn(&serde_json::to_value(turn).unwrap_or_default()));
        }
        Ok(out)
    }

    async fn fork(&self, id: &str, at: u64, as_id: &str) -> Result<Value, Failure> {
        let rec = self.sys.fork(id, at, as_id).await.map_err(failure)?;
        self.settle().await;
        Ok(json!({"id": rec.id, "turns": rec.turns}))
    }

    async fn approvals(&self, id: &str) -> Result<Vec<Approval>, Failure> {
        let list = self.sys.approvals(id).await.map_err(failure)?;
        self.settle().await;
        Ok(list)
    }

    async fn decide(
        &self,
        id: &str,
        request: &str,
        approved: bool,
        reason: Option<String>,
    ) -> Result<Approval, Failure> {
        let a = self
            .sys
            .decide(id, request, approved, Some("cli".into()), reason)
            .await
            .map_err(failure)?;
        self.settle().await;
        Ok(a)
    }

    async fn dead_letters(&self, id: &str) -> Result<Vec<DeadLetter>, Failure> {
        let list = self.sys.dead_letters(id).await.map_err(failure)?;
        self.settle().await;
        Ok(list)
    }

    async fn redrive(&self, id: &str, seq: Option<u64>) -> Result<Vec<String>, Failure> {
        let ids = self.sys.redrive(id, seq).await.map_err(failure)?;
        self.settle().await;
        Ok(ids)
    }

    async fn restart(&self, id: &str) -> Result<(), Failure> {
        self.sys.restart(id).await.map_err(failure)?;
        self.settle().await;
        Ok(())
    }

    async fn run_pending(&self) -> Result<(), Failure> {
        self.settle().await;
        Ok(())
    }
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
        AgentError::Store(s) => return store_failure(s),
        AgentError::Corrupt { .. } => "store",
        AgentError::Missing(_) => "not_found",
        AgentError::Invalid(_) => "invalid",
    };
    let code = match &e {
        AgentError::Corrupt { .. } => exit::INTERNAL,
        _ => exit::BAD_INPUT,
    };
    Failure::new(code, kind, e.to_string())
}

/// A store error: `store_unavailable` when the store cannot be opened or
/// reached (the embedded store held by a running server: its message
/// points at `--server`), `store` otherwise; exit 1.
fn store_failure(e: &StoreError) -> Failure {
    let kind = match e {
        StoreError::Unavailable { .. } | StoreError::Settings { .. } => "store_unavailable",
        _ => "store",
    };
    Failure::internal(kind, e.to_string())
}

/// The journal cannot be opened. Held by another process (a running server
/// holds it as it holds the embedded store: redb says "Database already
/// open"), the message points at `--server` too.
fn journal_failure(message: String) -> Failure {
    if message.contains("already open") {
        Failure::internal(
            "journal",
            format!(
                "{message} (another process has it open: a running `tessera serve`? use \
                 `--server` to go through it)"
            ),
        )
    } else {
        Failure::internal("journal", message)
    }
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

/// Through a running server's HTTP API; the server runs the turns.
struct Remote {
    api: Api,
}

/// A path segment: an agent id (`a/b` as `a%2Fb`), a request id. `events`
/// is written `%65vents` (`GET /v1/agents/events` is the event stream).
fn segment(s: &str) -> String {
    if s == "events" {
        return "%65vents".into();
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An API error with the kind and exit code the local mode gives the same
/// failure: the API's codes that name an agent error differently are
/// renamed (`invalid_agent_id` → `invalid_id`, `reply_timeout` →
/// `timeout`, …), a turn that failed for good is exit 3 with the message
/// id in `message`, and a timeout is bad input as locally.
fn remote_failure(f: ApiFailure) -> Failure {
    let mut f = Failure::from(f);
    let (kind, code) = match f.kind.as_str() {
        "invalid_agent_id" => ("invalid_id", exit::BAD_INPUT),
        "bad_component" | "no_such_component" => ("component", exit::BAD_INPUT),
        "reply_timeout" => ("timeout", exit::BAD_INPUT),
        "no_such_agent_entry" => ("not_found", exit::BAD_INPUT),
        "agent_conflict" => ("invalid", exit::BAD_INPUT),
        "turn_failed" => ("turn_failed", exit::GUEST_ERROR),
        _ => return f,
    };
    f.kind = kind.into();
    f.code = code;
    if let Some(m) = f.context.remove("agent_message") {
        f.context.insert("message".into(), m);
    }
    f
}

impl Remote {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Failure> {
        self.api
            .request(method, path, body)
            .await
            .map_err(remote_failure)
    }

    /// A part of the server's answer that does not read as the agent
    /// system's record.
    fn unreadable(what: &'static str) -> impl FnOnce(serde_json::Error) -> Failure {
        move |e| {
            Failure::internal(
                "bad_answer",
                format!("the server's {what} does not read: {e}"),
            )
        }
    }
}

impl Agents for Remote {
    async fn spawn(
        &self,
        id: &str,
        component: String,
        manifest: Option<PathBuf>,
        state: Option<String>,
    ) -> Result<String, Failure> {
        if is_file(&component) {
            return Err(Failure::bad_input(
                "component",
                format!(
                    "`{component}` is a file path; a server runs only registered components: \
                     register it (`tessera components add {component} --name NAME --server …`, \
                     with its `--manifest`) and spawn it by name"
                ),
            )
            .with("component", component));
        }
        if manifest.is_some() {
            return Err(Failure::bad_input(
                "usage",
                "--manifest goes with a .wasm file; a registered component has its own \
                 (register it with the manifest you want: `tessera components add … --manifest`)",
            ));
        }
        let v = self
            .call(
                "POST",
                "/v1/agents",
                Some(json!({"id": id, "component": component, "state": state})),
            )
            .await?;
        Ok(v["id"].as_str().unwrap_or(id).to_string())
    }

    async fn send(&self, id: &str, body: &str, message: Option<String>) -> Result<String, Failure> {
        let v = self
            .call(
                "POST",
                &format!("/v1/agents/{}/messages", segment(id)),
                Some(json!({"body": body, "id": message})),
            )
            .await?;
        Ok(text(&v["message"]).to_string())
    }

    async fn ask(
        &self,
        id: &str,
        body: &str,
        message: Option<String>,
        timeout: u64,
    ) -> Result<Reply, Failure> {
        let most = api::MAX_REPLY_TIMEOUT_MS / 1000;
        if !(1..=most).contains(&timeout) {
            return Err(Failure::bad_input(
                "usage",
                format!("--timeout {timeout}: a server waits 1 to {most} seconds for a reply"),
            ));
        }
        let v = self
            .call(
                "POST",
                &format!("/v1/agents/{}/messages", segment(id)),
                Some(json!({
                    "body": body,
                    "id": message,
                    "wait": true,
                    "timeout_ms": timeout * 1000,
                })),
            )
            .await?;
        // The API answers the reply parsed when it is JSON.
        let text = match &v["reply"] {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        };
        Ok(Reply {
            message: self::text(&v["message"]).to_string(),
            turn: v["turn"].as_u64().unwrap_or_default(),
            run: v["run"].as_str().map(str::to_string),
            text,
        })
    }

    async fn list(&self) -> Result<Vec<Value>, Failure> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = format!("/v1/agents?limit={}", api::MAX_AGENT_PAGE);
            if let Some(a) = &after {
                path.push_str(&format!("&after={}", segment(a)));
            }
            let v = self.call("GET", &path, None).await?;
            out.extend(v["agents"].as_array().into_iter().flatten().map(doc::agent));
            match v["cursor"].as_str() {
                Some(c) if after.as_deref() != Some(c) => after = Some(c.to_string()),
                _ => return Ok(out),
            }
        }
    }

    async fn show(&self, id: &str) -> Result<Value, Failure> {
        let v = self
            .call("GET", &format!("/v1/agents/{}", segment(id)), None)
            .await?;
        Ok(doc::shown(&v))
    }

    async fn log(&self, id: &str) -> Result<Vec<Value>, Failure> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let v = self
                .call(
                    "GET",
                    &format!(
                        "/v1/agents/{}/turns?limit={}&after={after}",
                        segment(id),
                        api::MAX_TURN_PAGE
                    ),
                    None,
                )
                .await?;
            out.extend(v["turns"].as_array().into_iter().flatten().map(doc::turn));
            match v["cursor"].as_u64() {
                Some(c) if c > after => after = c,
                _ => return Ok(out),
            }
        }
    }

    async fn fork(&self, id: &str, at: u64, as_id: &str) -> Result<Value, Failure> {
        let v = self
            .call(
                "POST",
                &format!("/v1/agents/{}/fork", segment(id)),
                Some(json!({"at": at, "as": as_id})),
            )
            .await?;
        Ok(doc::agent(&v))
    }

    async fn approvals(&self, id: &str) -> Result<Vec<Approval>, Failure> {
        let mut v = self
            .call(
                "GET",
                &format!("/v1/agents/{}/approvals", segment(id)),
                None,
            )
            .await?;
        serde_json::from_value(v["approvals"].take()).map_err(Self::unreadable("approval list"))
    }

    async fn decide(
        &self,
        id: &str,
        request: &str,
        approved: bool,
        reason: Option<String>,
    ) -> Result<Approval, Failure> {
        let mut v = self
            .call(
                "POST",
                &format!("/v1/agents/{}/approvals/{}", segment(id), segment(request)),
                Some(json!({"approved": approved, "reason": reason})),
            )
            .await?;
        serde_json::from_value(v["approval"].take()).map_err(Self::unreadable("approval"))
    }

    async fn dead_letters(&self, id: &str) -> Result<Vec<DeadLetter>, Failure> {
        let mut v = self
            .call(
                "GET",
                &format!("/v1/agents/{}/dead-letters", segment(id)),
                None,
            )
            .await?;
        serde_json::from_value(v["dead_letters"].take())
            .map_err(Self::unreadable("dead-letter list"))
    }

    async fn redrive(&self, id: &str, seq: Option<u64>) -> Result<Vec<String>, Failure> {
        let mut v = self
            .call(
                "POST",
                &format!("/v1/agents/{}/dead-letters/redrive", segment(id)),
                Some(json!({ "seq": seq })),
            )
            .await?;
        serde_json::from_value(v["messages"].take()).map_err(Self::unreadable("re-driven messages"))
    }

    async fn restart(&self, id: &str) -> Result<(), Failure> {
        self.call("POST", &format!("/v1/agents/{}/restart", segment(id)), None)
            .await?;
        Ok(())
    }

    async fn run_pending(&self) -> Result<(), Failure> {
        // Refused before a request is made (see `remote`).
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_one_path_segment() {
        assert_eq!(segment("a/b"), "a%2Fb");
        assert_eq!(segment("w-1.x_y"), "w-1.x_y");
        assert_eq!(segment("events"), "%65vents");
        assert_eq!(segment("a b%"), "a%20b%25");
    }

    #[test]
    fn api_documents_read_as_the_local_ones() {
        // An `AgentInfo` leaves empty fields out and has fields the CLI
        // does not print.
        let info = json!({
            "id": "a", "status": "active", "component": "probe", "tool": "agent__a",
            "children": [], "turns": 2, "depth": 0, "mailbox": 100, "retries": 3,
            "tokens": 0, "restarts": 0, "supervisor": {"strategy": "one_for_one"},
            "created": "now",
            "approvals_waiting": [{"request": "r1", "agent": "a", "tool": "t__f",
                "arguments": "{}", "turn": 3, "asked": "now"}],
            "dead_letters": 2,
        });
        let v = doc::agent(&info);
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys[..3], ["id", "status", "reason"]);
        assert_eq!(v["reason"], Value::Null);
        assert!(v.get("tool").is_none() && v.get("dead_letters").is_none());
        let v = doc::shown(&info);
        assert_eq!(
            v["approvals_waiting"],
            json!([{"request": "r1", "tool": "t__f", "arguments": "{}"}])
        );
        assert_eq!(v["dead_letters"], 2);
        let t = doc::turn(&json!({
            "turn": 1, "message": {"id": "m", "body": "{}", "expects_reply": false, "sent": "now"},
            "seq": 1, "earlier_runs": [], "sent": [{"to": "b", "message": "m1"}], "tokens": 0,
            "committed": "now", "duration_ms": 1, "exchanges": [],
        }));
        assert_eq!(t["sent"], json!([["b", "m1"]]));
        assert_eq!(t["run"], Value::Null);
        assert!(t.get("seq").is_none());
    }

    /// What the local mode prints for an agent and a turn (key order
    /// included), made from the agent system's records through the API's
    /// documents.
    #[test]
    fn local_records_print_as_before() {
        let info = tessera_orchestrator::agent::AgentInfo {
            record: serde_json::from_value(json!({
                "id": "p/c", "component": {"component": "/w.wasm"}, "parent": "p",
                "status": "failed", "reason": "boom", "head": 3, "turns": 3, "tokens": 10,
                "token_budget": 100, "restart_count": 2, "last_error": "x", "mailbox": 5,
                "retries": 1, "supervisor": {}, "created": "t0", "state": "{}",
            }))
            .unwrap(),
            depth: 4,
        };
        let supervisor = serde_json::to_value(info.record.supervisor).unwrap();
        let v = doc::agent(&serde_json::to_value(api::AgentInfo::of(&info)).unwrap());
        let expected = json!({
            "id": "p/c", "status": "failed", "reason": "boom", "waiting_for": null,
            "component": "/w.wasm", "parent": "p", "children": [], "turns": 3, "depth": 4,
            "tokens": 10, "token_budget": 100, "restarts": 2, "last_error": "x",
            "supervisor": supervisor, "mailbox": 5, "retries": 1, "state": "{}",
            "created": "t0",
        });
        assert_eq!(v.to_string(), expected.to_string());

        let t: tessera_orchestrator::agent::TurnRecord = serde_json::from_value(json!({
            "turn": 1, "message": {"id": "m", "body": "hi", "sent": "t1"}, "seq": 1,
            "sent": [["b", "m1"]], "committed": "t2", "duration_ms": 7,
        }))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let journal = tessera_journal::JournalStore::open(dir.path()).unwrap();
        let rendered = tessera_server::agents::render_turn(&journal, &t);
        let v = doc::turn(&serde_json::to_value(rendered).unwrap());
        let expected = json!({
            "turn": 1,
            "message": {"id": "m", "body": "hi", "expects_reply": false, "sent": "t1"},
            "run": null, "earlier_runs": [], "reply": null, "sent": [["b", "m1"]],
            "tokens": 0, "committed": "t2", "duration_ms": 7, "exchanges": [],
        });
        assert_eq!(v.to_string(), expected.to_string());
    }

    #[test]
    fn a_journal_held_elsewhere_points_at_the_server() {
        let f =
            journal_failure("journal store: Database already open. Cannot acquire lock.".into());
        assert_eq!((f.kind.as_str(), f.code), ("journal", exit::INTERNAL));
        assert!(f.message.contains("use `--server`"), "{}", f.message);
        let f = journal_failure("journal store: disk full".into());
        assert!(!f.message.contains("--server"), "{}", f.message);
    }

    #[test]
    fn api_errors_get_the_local_kinds_and_exit_codes() {
        let api = |kind: &str, status: u16, context: Value| ApiFailure {
            message: format!("{kind} ({status}): …"),
            code: if status < 500 {
                exit::BAD_INPUT
            } else {
                exit::INTERNAL
            },
            kind: kind.into(),
            context: Box::new(context.as_object().unwrap().clone()),
        };
        let f = remote_failure(api("turn_failed", 422, json!({"agent_message": "m1"})));
        assert_eq!(
            (f.kind.as_str(), f.code),
            ("turn_failed", exit::GUEST_ERROR)
        );
        assert_eq!(f.context["message"], "m1");
        let f = remote_failure(api("reply_timeout", 504, json!({})));
        assert_eq!((f.kind.as_str(), f.code), ("timeout", exit::BAD_INPUT));
        let f = remote_failure(api("no_such_agent", 404, json!({})));
        assert_eq!(
            (f.kind.as_str(), f.code),
            ("no_such_agent", exit::BAD_INPUT)
        );
        let f = remote_failure(api("mailbox_full", 429, json!({})));
        assert_eq!((f.kind.as_str(), f.code), ("mailbox_full", exit::BAD_INPUT));
        let f = remote_failure(api("store", 500, json!({})));
        assert_eq!((f.kind.as_str(), f.code), ("store", exit::INTERNAL));
    }
}
