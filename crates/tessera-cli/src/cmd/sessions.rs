//! `tessera sessions`: the sandbox sessions kept in the journal — list,
//! show, fork, replay, remove.

use std::io::Write;

use serde_json::{Value, json};
use tessera_journal::{JournalStore, RunResult, SessionRecord};

use crate::exit;
use crate::failure::{Failure, Outcome, finish, journal_failure};
use crate::setup::GlobalArgs;

/// Subcommands of `tessera sessions`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List the sessions: language, runs, last use, where each was forked
    /// from, and whether it ended.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a session and its runs in order: the code of each, and how it
    /// ended.
    Show {
        /// The session.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start a new session from a session's state after its first `--at`
    /// runs (all of them by default). The runs are shared, not copied; the
    /// new session goes on independently.
    Fork {
        /// The session to fork.
        name: String,
        /// The new session's name.
        #[arg(long = "as", value_name = "NAME")]
        to: String,
        /// How many of its runs the fork starts from.
        #[arg(long, value_name = "RUNS")]
        at: Option<u64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-execute a session's runs offline (up to `--at`, or all), every
    /// host interaction answered from the journal; exit 0 if identical, 6
    /// at the first divergence.
    Replay {
        /// The session.
        name: String,
        /// Replay its first RUNS runs only.
        #[arg(long, value_name = "RUNS")]
        at: Option<u64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a session. Its runs stay in the journal (and replay) until
    /// retention removes them; forks of it are unaffected.
    Rm {
        /// The session.
        name: String,
    },
}

/// Runs the subcommand and returns the exit code.
pub async fn run(global: &GlobalArgs, command: Command) -> i32 {
    let json = match &command {
        Command::List { json }
        | Command::Show { json, .. }
        | Command::Fork { json, .. }
        | Command::Replay { json, .. } => *json,
        Command::Rm { .. } => false,
    };
    finish(dispatch(global, command).await, json)
}

async fn dispatch(global: &GlobalArgs, command: Command) -> Outcome {
    let store = global
        .journal()
        .map_err(|e| Failure::internal("journal", e))?;
    let jf = |e: tessera_journal::Error| journal_failure(&e);
    match command {
        Command::List { json } => {
            let sessions = store.sessions().map_err(jf)?;
            if json {
                let v: Vec<Value> = sessions.iter().map(summary).collect();
                print_json(&json!(v));
            } else if sessions.is_empty() {
                println!("no sessions");
            } else {
                println!(
                    "{:<24} {:<11} {:>5}  {:<30}  NOTE",
                    "NAME", "LANGUAGE", "RUNS", "LAST USED"
                );
                for s in &sessions {
                    println!(
                        "{:<24} {:<11} {:>5}  {:<30}  {}",
                        s.name,
                        s.kind,
                        s.history.len(),
                        s.updated,
                        note(s)
                    );
                }
            }
            Ok(exit::OK)
        }
        Command::Show { name, json } => {
            let s = store
                .session(&name)
                .map_err(|e| jf(e).with("session", name.as_str()))?;
            let runs = history(&store, &s).map_err(jf)?;
            if json {
                let mut v = summary(&s);
                v["component"] = json!(s.component);
                v["grants"] = serde_json::to_value(&*s.grants).unwrap_or_default();
                v["runs"] = json!(runs);
                print_json(&v);
            } else {
                println!("session   {}", s.name);
                println!("language  {}", s.kind);
                println!("component {} ({})", s.component.origin, s.component.digest);
                println!("created   {}", s.created);
                let n = note(&s);
                if !n.is_empty() {
                    println!("note      {n}");
                }
                for r in &runs {
                    println!(
                        "  {:>3}  {}  {:<10}  {}",
                        r["seq"],
                        r["run"].as_str().unwrap_or_default(),
                        r["result"].as_str().unwrap_or_default(),
                        first_line(r["code"].as_str().unwrap_or_default())
                    );
                }
            }
            Ok(exit::OK)
        }
        Command::Fork { name, to, at, json } => {
            let s = store
                .fork_session(&name, &to, at, None)
                .map_err(|e| jf(e).with("session", name.as_str()))?;
            if json {
                print_json(&summary(&s));
            } else {
                println!(
                    "forked {name} at run {} as {to}",
                    s.forked_from.as_ref().map_or(0, |f| f.at)
                );
            }
            Ok(exit::OK)
        }
        Command::Replay { name, at, json } => replay(global, &store, &name, at, json).await,
        Command::Rm { name } => {
            if store
                .remove_session(&name)
                .map_err(|e| jf(e).with("session", name.as_str()))?
            {
                println!("removed session {name}");
                Ok(exit::OK)
            } else {
                Err(
                    Failure::bad_input("no_such_session", format!("no session `{name}`"))
                        .with("session", name),
                )
            }
        }
    }
}

async fn replay(
    global: &GlobalArgs,
    store: &JournalStore,
    name: &str,
    at: Option<u64>,
    json: bool,
) -> Outcome {
    let s = store
        .session(name)
        .map_err(|e| journal_failure(&e).with("session", name))?;
    let n = at.unwrap_or(s.history.len() as u64);
    if n == 0 || n > s.history.len() as u64 {
        return Err(Failure::bad_input(
            "usage",
            format!(
                "session `{name}` has {} runs: replay 1 to {} of them",
                s.history.len(),
                s.history.len()
            ),
        )
        .with("session", name));
    }
    let last = &s.history[n as usize - 1];
    let runtime = global.runtime_checked(false)?;
    let report = tessera_journal::replay_session_run(&runtime, store, last)
        .await
        .map_err(|e| journal_failure(&e).with("session", name))?;
    let diverged = report.first_divergence();
    if json {
        let runs: Vec<Value> = report
            .runs
            .iter()
            .map(|r| {
                json!({
                    "run": r.run_id,
                    "identical": r.divergence.is_none(),
                    "divergence": r.divergence.as_ref().map(ToString::to_string),
                    "fuel": r.outcome.fuel_consumed,
                })
            })
            .collect();
        print_json(&json!({
            "session": name,
            "runs": runs,
            "identical": diverged.is_none() && report.runs.len() as u64 == n,
        }));
    } else {
        for (i, r) in report.runs.iter().enumerate() {
            println!(
                "  {:>3}  {}  {}",
                i + 1,
                r.run_id,
                match &r.divergence {
                    None => "identical".to_string(),
                    Some(d) => format!("DIVERGED: {d}"),
                }
            );
        }
        if diverged.is_none() {
            println!(
                "identical: session {name} replayed {} runs offline, same results, same fuel",
                report.runs.len()
            );
        }
    }
    Ok(if diverged.is_some() {
        exit::DIVERGED
    } else {
        exit::OK
    })
}

/// A session as one JSON object.
fn summary(s: &SessionRecord) -> Value {
    json!({
        "name": s.name,
        "language": s.kind,
        "runs": s.history.len(),
        "created": s.created,
        "updated": s.updated,
        "forked_from": s.forked_from,
        "ended": s.ended,
        "owner": s.owner,
    })
}

fn note(s: &SessionRecord) -> String {
    let mut parts = Vec::new();
    if let Some(f) = &s.forked_from {
        parts.push(format!("forked from {} at {}", f.session, f.at));
    }
    if let Some(e) = &s.ended {
        parts.push(format!("ended: {e}"));
    }
    parts.join("; ")
}

/// Each run of the session: its position, id, code and how it ended.
fn history(store: &JournalStore, s: &SessionRecord) -> Result<Vec<Value>, tessera_journal::Error> {
    let mut out = Vec::new();
    for (i, run) in s.history.iter().enumerate() {
        let header = store.header(run)?;
        let result = match store.end(run)?.map(|e| e.result) {
            None => "incomplete",
            Some(RunResult::Returned { value }) if value.get("err").is_some() => "raised",
            Some(RunResult::Returned { .. }) => "ok",
            Some(RunResult::Limit { .. }) => "limit",
            Some(RunResult::Trap { .. }) => "trap",
            Some(RunResult::Exited { .. }) => "exited",
            Some(RunResult::Cancelled { .. }) => "cancelled",
            Some(RunResult::Refused { .. }) => "refused",
        };
        out.push(json!({
            "seq": i + 1,
            "run": run,
            "code": header.args.get("code").cloned().unwrap_or(Value::Null),
            "result": result,
            "started": header.started,
        }));
    }
    Ok(out)
}

fn first_line(code: &str) -> String {
    let line = code.lines().next().unwrap_or_default();
    let more = code.lines().nth(1).is_some();
    let mut s: String = line.chars().take(60).collect();
    if more || line.chars().count() > 60 {
        s.push_str(" …");
    }
    s
}

fn print_json(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_default()
    );
}
