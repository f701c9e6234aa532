//! `tessera inspect-run`: a recorded run's guest state at a step.

use std::path::PathBuf;

use serde_json::json;
use tessera_journal::StepState;

use crate::exit;
use crate::failure::{Failure, Outcome, finish, journal_failure};
use crate::setup::GlobalArgs;

/// Arguments of `tessera inspect-run`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("when").required(true).args(["at", "diff"])))]
pub struct Args {
    /// Run id (or a unique prefix).
    pub run: String,
    /// Show the state when the guest asks for step N (steps 0..N answered).
    #[arg(long, value_name = "N")]
    pub at: Option<u64>,
    /// List the memory ranges that changed between step N and step M.
    #[arg(long, num_args = 2, value_names = ["N", "M"])]
    pub diff: Option<Vec<u64>>,
    /// Write the main linear memory at `--at N` to this file.
    #[arg(long, value_name = "FILE", requires = "at")]
    pub dump: Option<PathBuf>,
    /// How many readable strings to list (`0` for none).
    #[arg(long, default_value_t = 20)]
    pub strings: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs the subcommand and returns the exit code.
pub async fn run(global: &GlobalArgs, args: Args) -> i32 {
    finish(inspect_run(global, &args).await, args.json)
}

async fn inspect_run(global: &GlobalArgs, args: &Args) -> Outcome {
    let runtime = global.runtime_checked(true)?;
    let store = global
        .journal()
        .map_err(|e| Failure::internal("journal", e))?;
    let state = |at| {
        let runtime = runtime.clone();
        let store = store.clone();
        let run = args.run.clone();
        async move { tessera_journal::state_at(&runtime, &store, &run, at).await }
    };
    if let Some(pair) = &args.diff {
        let (a, b) = match (state(pair[0]).await, state(pair[1]).await) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                return Err(journal_failure(&e).with("run", args.run.as_str()));
            }
        };
        let changes = a.snapshot.changes(&b.snapshot);
        if args.json {
            let v: Vec<_> = changes
                .iter()
                .map(|c| json!({"instance": c.instance, "memory": c.index, "start": c.start, "end": c.end}))
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({"from": a.at, "to": b.at, "changes": v}))
                    .unwrap_or_default()
            );
        } else {
            println!(
                "memory changes from step {} to step {}: {} ranges",
                a.at,
                b.at,
                changes.len()
            );
            for c in &changes {
                println!(
                    "  instance {} memory {}: {:#010x}..{:#010x} ({} bytes; pages {}..={})",
                    c.instance,
                    c.index,
                    c.start,
                    c.end,
                    c.end - c.start,
                    c.start / tessera_runtime::snapshot::PAGE,
                    (c.end - 1) / tessera_runtime::snapshot::PAGE
                );
            }
        }
        return Ok(exit::OK);
    }
    let at = args.at.unwrap_or(0);
    let s = state(at)
        .await
        .map_err(|e| journal_failure(&e).with("run", args.run.as_str()))?;
    if let Some(path) = &args.dump {
        let main = s.snapshot.memories.iter().max_by_key(|m| m.bytes.len());
        if let Some(m) = main
            && let Err(e) = std::fs::write(path, &m.bytes)
        {
            return Err(
                Failure::internal("io", format!("cannot write {}: {e}", path.display()))
                    .with("path", path.display().to_string()),
            );
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&state_json(&s, args.strings)).unwrap_or_default()
        );
    } else {
        print_state(&s, args.strings);
    }
    Ok(exit::OK)
}

fn state_json(s: &StepState, strings: usize) -> serde_json::Value {
    json!({
        "run_id": s.run_id,
        "at": s.at,
        "reached": s.reached,
        // The interaction the guest was about to make: `kind` and the request.
        "next": s.next.as_ref().map(|n| json!({"kind": n.kind(), "request": n.request})),
        "memories": s.snapshot.memories.iter().map(|m| json!({
            "instance": m.instance,
            "index": m.index,
            "size": m.bytes.len(),
            "digest": m.digest(),
            "strings": m.strings(6).into_iter().take(strings).map(|(o, t)| json!({"offset": o, "text": t})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "globals": s.snapshot.globals.iter().map(|g| json!({"instance": g.instance, "index": g.index, "value": g.value})).collect::<Vec<_>>(),
    })
}

fn print_state(s: &StepState, strings: usize) {
    println!("run {} at step {}", s.run_id, s.at);
    match &s.next {
        Some(n) => println!(
            "  stopped as the guest asked for a `{}` interaction",
            n.kind()
        ),
        None if !s.reached => println!(
            "  the run ended before step {}; showing its final state",
            s.at
        ),
        None => {}
    }
    for m in &s.snapshot.memories {
        println!(
            "memory {} of instance {}: {} bytes ({} pages), {}",
            m.index,
            m.instance,
            m.bytes.len(),
            m.bytes.len() / tessera_runtime::snapshot::PAGE,
            m.digest()
        );
        for (offset, text) in m.strings(6).into_iter().take(strings) {
            let text: String = text.chars().take(100).collect();
            println!("  {offset:#010x}  {text:?}");
        }
    }
    println!("globals:");
    for g in &s.snapshot.globals {
        println!("  instance {} global {}: {}", g.instance, g.index, g.value);
    }
}
