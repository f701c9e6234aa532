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
    #[arg(long, value_name = "FILE", conflicts_with = "with_version")]
    pub component: Option<PathBuf>,
    /// Run this other version of the component against the recording
    /// instead (offline: every host interaction answered from the
    /// journal) and report where it departs from the recorded behaviour:
    /// the first interaction it asks for differently, or its result.
    #[arg(long, value_name = "FILE")]
    pub with_version: Option<PathBuf>,
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
    let runtime = global.runtime_checked(false)?;
    let store = global
        .journal()
        .map_err(|e| Failure::internal("journal", e))?;
    if is_plan_run(&args.run) {
        return replay_plan(global, &runtime, &store, args).await;
    }
    if is_plan_run(&args.run) && args.with_version.is_some() {
        return Err(Failure::bad_input(
            "usage",
            "--with-version replays one journal run; give the run of a plan step",
        ));
    }
    let run_id = store
        .resolve(&args.run)
        .map_err(|e| journal_failure(&e).with("run", args.run.as_str()))?;
    if let Some(file) = &args.with_version {
        return replay_version(&runtime, &store, &run_id, file, args.json).await;
    }
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
                print_departure(d, "replayed", "(the guest finished)");
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

/// The recorded step and the one the replay asked for instead (not
/// answered: what it asked), and why they differ when that is not visible.
fn print_departure(d: &tessera_runtime::gateway::Divergence, label: &str, finished: &str) {
    let width = label.len().max("recorded".len()) + 1;
    println!(
        "  {:<width$} {}",
        "recorded:",
        d.recorded
            .as_deref()
            .map(|s| tessera_journal::describe_step(d.index, s)
                .trim_start()
                .to_string())
            .unwrap_or_else(|| "(end of recording)".into())
    );
    println!(
        "  {:<width$} {}",
        format!("{label}:"),
        d.actual
            .as_deref()
            .map(|s| format!(
                "{}  {}",
                d.index,
                tessera_runtime::capability::generic_description(s)
            ))
            .unwrap_or_else(|| finished.to_string())
    );
    if let Some(reason) = &d.reason {
        println!("  {:<width$} {reason}", "because:");
    }
}

/// `--with-version`: another version of the component against the
/// recording.
async fn replay_version(
    runtime: &tessera_runtime::Runtime,
    store: &tessera_journal::JournalStore,
    run_id: &str,
    file: &std::path::Path,
    json: bool,
) -> Outcome {
    let header = store
        .header(run_id)
        .map_err(|e| journal_failure(&e).with("run", run_id))?;
    if header.session.is_some() {
        return Err(Failure::bad_input(
            "usage",
            "--with-version is not taken for a session's run: its state depends on the session's earlier runs",
        ));
    }
    let bytes = std::fs::read(file).map_err(|e| {
        Failure::bad_input("component", format!("cannot read {}: {e}", file.display()))
    })?;
    let origin = file.display().to_string();
    let new_digest = tessera_runtime::digest_of(&bytes);
    let report = tessera_journal::replay_version(runtime, store, run_id, bytes, &origin)
        .await
        .map_err(|e| journal_failure(&e).with("run", run_id))?;
    let (same, what) = match &report.divergence {
        None => (true, "same interactions, result and fuel".to_string()),
        Some(tessera_journal::ReplayDivergence::Fuel { recorded, replayed }) => (
            true,
            format!("same interactions and result; fuel {recorded} -> {replayed}"),
        ),
        Some(other) => (false, other.to_string()),
    };
    if json {
        let mut v = json!({
            "run_id": report.run_id,
            "recorded_component": header.component.digest,
            "new_component": new_digest,
            "recorded_steps": report.recorded_steps,
            "replayed_steps": report.outcome.interactions,
            "same_behaviour": same,
            "summary": what,
        });
        if let Some(tessera_journal::ReplayDivergence::Interaction(d)) = &report.divergence {
            v["departs_at"] = json!(d.index);
            v["recorded"] = json!(d.recorded);
            v["new_version"] = json!(d.actual);
            v["reason"] = json!(d.reason);
        }
        if let Some(tessera_journal::ReplayDivergence::Result { recorded, replayed }) =
            &report.divergence
        {
            v["recorded_result"] = json!(recorded);
            v["new_result"] = json!(replayed);
        }
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        println!(
            "run {} recorded with {}; replayed with {} ({})",
            report.run_id, header.component.digest, new_digest, origin
        );
        match &report.divergence {
            Some(tessera_journal::ReplayDivergence::Interaction(d)) => {
                println!("DEPARTS at step {}", d.index);
                print_departure(d, "new version", "(it finished)");
            }
            _ if same => println!("same behaviour: {what}"),
            _ => println!("DEPARTS: {what}"),
        }
    }
    Ok(if same { exit::OK } else { exit::DIVERGED })
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
