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

/// Whether `id` has the shape of a plan run id (`p20261201T120000-…`).
fn is_plan_run(id: &str) -> bool {
    id.strip_prefix('p')
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
}

async fn replay(global: &GlobalArgs, args: &Args) -> Outcome {
    let runtime = global
        .runtime_with(false)
        .map_err(|e| Failure::internal("setup", e))?;
    let store = global
        .journal()
        .map_err(|e| Failure::internal("journal", e))?;
    if is_plan_run(&args.run) {
        return replay_plan(global, &runtime, &store, args).await;
    }
    let run_id = store
        .resolve(&args.run)
        .map_err(|e| journal_failure(&e).with("run", args.run.as_str()))?;
    let in_session = store
        .header(&run_id)
        .map_err(|e| journal_failure(&e).with("run", args.run.as_str()))?
        .session
        .is_some();
    if in_session {
        return replay_in_session(&runtime, &store, &run_id, args).await;
    }
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

/// A run made in a session: the session's runs before it, then it, in one
/// instance.
async fn replay_in_session(
    runtime: &tessera_runtime::Runtime,
    store: &tessera_journal::JournalStore,
    run_id: &str,
    args: &Args,
) -> Outcome {
    if args.component.is_some() {
        return Err(Failure::bad_input(
            "usage",
            "--component is not taken for a session's run: it replays with the component its session recorded",
        ));
    }
    let report = tessera_journal::replay_session_run(runtime, store, run_id)
        .await
        .map_err(|e| journal_failure(&e).with("run", run_id))?;
    let last = report.runs.last();
    let identical = report.first_divergence().is_none() && last.is_some_and(|r| r.run_id == run_id);
    if args.json {
        let v = json!({
            "run_id": run_id,
            "session_runs_replayed": report.runs.len(),
            "identical": identical,
            "divergence": report.first_divergence().map(|(seq, r)| json!({
                "session_run": seq,
                "run_id": r.run_id,
                "message": r.divergence.as_ref().map(ToString::to_string),
            })),
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        match report.first_divergence() {
            None => println!(
                "identical: run {run_id} replayed offline after the {} runs of its session before it, same results, same fuel ({})",
                report.runs.len().saturating_sub(1),
                last.map_or(0, |r| r.outcome.fuel_consumed)
            ),
            Some((seq, r)) => println!(
                "DIVERGED at run {seq} of the session ({}): {}",
                r.run_id,
                r.divergence
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ),
        }
    }
    Ok(if identical { exit::OK } else { exit::DIVERGED })
}

/// A plan run: every call of its finished steps, in order, to the first
/// divergence.
async fn replay_plan(
    global: &GlobalArgs,
    runtime: &tessera_runtime::Runtime,
    journal: &tessera_journal::JournalStore,
    args: &Args,
) -> Outcome {
    use tessera_orchestrator::progress::{PLANS_BUCKET, Progress};
    if args.component.is_some() {
        return Err(Failure::bad_input(
            "usage",
            "--component replays one journal run; a plan run replays each step's own components",
        ));
    }
    let stores = global
        .stores()
        .map_err(|m| Failure::bad_input("store_settings", m))?;
    let store = stores
        .for_bucket(PLANS_BUCKET)
        .await
        .map_err(|e| Failure::internal("store", e.to_string()))?;
    let progress = Progress::new(store, PLANS_BUCKET);
    let report = tessera_orchestrator::replay::replay_run(&progress, journal, runtime, &args.run)
        .await
        .map_err(|e| match e {
            tessera_orchestrator::replay::ReplayError::NoSuchRun(id) => {
                Failure::bad_input("no_such_run", format!("no plan run `{id}`")).with("run", id)
            }
            other => Failure::internal("replay", other.to_string()).with("run", args.run.as_str()),
        })?;
    if args.json {
        let mut v = serde_json::to_value(&report).unwrap_or_default();
        v["identical"] = json!(report.identical());
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        for c in &report.calls {
            let item = c.item.map(|i| format!(" item {i}")).unwrap_or_default();
            println!(
                "  {:<20} {:<28} {}",
                format!("{}{item}", c.step),
                c.run,
                if c.identical { "identical" } else { "DIVERGED" }
            );
        }
        if !report.unfinished.is_empty() {
            println!(
                "  not finished or not run: {}",
                report.unfinished.join(", ")
            );
        }
        match &report.divergence {
            None => println!(
                "identical: plan run {} replayed {} calls offline",
                report.plan_run,
                report.calls.len()
            ),
            Some(d) => println!("DIVERGED at {d}"),
        }
    }
    Ok(if report.identical() {
        exit::OK
    } else {
        exit::DIVERGED
    })
}
