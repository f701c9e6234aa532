//! `tessera replay`: re-execute a recorded run offline.

use std::path::PathBuf;

use serde_json::json;

use crate::exit;
use crate::failure::{Failure, Outcome, finish, journal_failure};
use crate::setup::GlobalArgs;

/// Arguments of `tessera replay`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run id (or a unique prefix).
    pub run: String,
    /// Use this component file instead of the stored copy; refused unless it
    /// is byte-for-byte the recorded component.
    #[arg(long, value_name = "FILE")]
    pub component: Option<PathBuf>,
    /// Print a JSON report.
    #[arg(long)]
    pub json: bool,
}

/// Runs the subcommand and returns the exit code.
pub async fn run(global: &GlobalArgs, args: Args) -> i32 {
    finish(replay(global, &args).await, args.json)
}

async fn replay(global: &GlobalArgs, args: &Args) -> Outcome {
    let runtime = global
        .runtime_with(false)
        .map_err(|e| Failure::internal("setup", e))?;
    let store = global
        .journal()
        .map_err(|e| Failure::internal("journal", e))?;
    let report = tessera_journal::replay(&runtime, &store, &args.run, args.component.as_deref())
        .await
        .map_err(|e| journal_failure(&e).with("run", args.run.as_str()))?;
    if args.json {
        let mut v = json!({
            "run_id": report.run_id,
            "recorded_steps": report.recorded_steps,
            "replayed_steps": report.outcome.interactions,
            "complete": report.complete,
            "identical": report.divergence.is_none(),
        });
        if let Some(d) = &report.divergence {
            v["divergence"] = json!({ "message": d.to_string() });
            if let tessera_journal::ReplayDivergence::Interaction(i) = d {
                v["divergence"]["index"] = json!(i.index);
                v["divergence"]["recorded"] = json!(i.recorded);
                v["divergence"]["replayed"] = json!(i.actual);
                v["divergence"]["reason"] = json!(i.reason);
            }
        }
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        match &report.divergence {
            None => println!(
                "identical: run {} replayed {} steps offline, same result, same fuel ({})",
                report.run_id, report.recorded_steps, report.outcome.fuel_consumed
            ),
            Some(tessera_journal::ReplayDivergence::Interaction(d)) => {
                println!("DIVERGED at step {}", d.index);
                println!(
                    "  recorded: {}",
                    d.recorded
                        .as_deref()
                        .map(|s| tessera_journal::describe_step(d.index, s)
                            .trim_start()
                            .to_string())
                        .unwrap_or_else(|| "(end of recording)".into())
                );
                // The replayed step was not answered: show what it asked.
                println!(
                    "  replayed: {}",
                    d.actual
                        .as_deref()
                        .map(|s| format!(
                            "{}  {}",
                            d.index,
                            tessera_runtime::capability::generic_description(s)
                        ))
                        .unwrap_or_else(|| "(the guest finished)".into())
                );
                if let Some(reason) = &d.reason {
                    println!("  because:  {reason}");
                }
            }
            Some(other) => println!("DIVERGED: {other}"),
        }
        if !report.complete {
            println!("note: the recording is incomplete (the process stopped during the run)");
        }
    }
    Ok(if report.divergence.is_some() {
        exit::DIVERGED
    } else {
        exit::OK
    })
}
