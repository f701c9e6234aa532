//! `tessera plan`: validate, run and resume plans — graphs of component
//! calls with data flowing between them — and list their runs. Progress is
//! kept in the data directory's store, so a run killed at any moment goes
//! on with `plan resume` without running a finished step again.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tessera_orchestrator::local::{FileComponents, LoadedCatalog, LocalCaller};
use tessera_orchestrator::plan::Plan;
use tessera_orchestrator::progress::{PLANS_BUCKET, Progress, RunRecord, RunStatus, StepState};
use tessera_orchestrator::run::{PlanEvent, RunError, Runner, step_records};
use tessera_runtime::{Grants, LoadedComponent};
use tessera_server::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::exit;
use crate::failure::{Failure, Outcome, finish};
use crate::setup::GlobalArgs;

/// `tessera plan …`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check a plan file: its keys, expressions, step references and
    /// cycles, and against its components: functions, parameters, the
    /// types of literal arguments and of references, granted buckets.
    Validate {
        /// The plan file (TOML).
        file: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a plan: prints each step as it finishes, then the outputs.
    Run {
        /// The plan file (TOML).
        file: PathBuf,
        /// The inputs, a JSON object.
        #[arg(long, default_value = "{}")]
        input: String,
        /// Print the finished run as JSON (no live table).
        #[arg(long)]
        json: bool,
    },
    /// Go on with a run that stopped (killed, cancelled or failed):
    /// finished steps are not run again.
    Resume {
        /// The plan run id.
        id: String,
        /// Print the finished run as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Plan runs: list them, or show one.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Draw a plan's graph (steps, needs, fallbacks) as SVG or PNG; with
    /// `--run`, each step's state, duration and attempts in that run.
    Graph {
        /// The plan file (TOML); with `--run` and no file, the run's own plan.
        file: Option<PathBuf>,
        /// A plan run to draw.
        #[arg(long)]
        run: Option<String>,
        /// Where to write: `.svg` or `.png` (by its extension).
        #[arg(short, long)]
        output: PathBuf,
        /// PNG scale (1 = the SVG's size).
        #[arg(long, default_value_t = 2.0)]
        scale: f32,
        /// Print a JSON result.
        #[arg(long)]
        json: bool,
    },
}

/// `tessera plan runs …`.
#[derive(Debug, clap::Subcommand)]
pub enum RunsCommand {
    /// The newest plan runs.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One run: its steps, attempts, timings, results.
    Show {
        /// The plan run id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `plan` subcommand.
pub async fn run(global: &GlobalArgs, command: Command) -> i32 {
    let json = match &command {
        Command::Validate { json, .. }
        | Command::Run { json, .. }
        | Command::Resume { json, .. }
        | Command::Graph { json, .. }
        | Command::Runs(RunsCommand::List { json, .. })
        | Command::Runs(RunsCommand::Show { json, .. }) => *json,
    };
    let outcome = match command {
        Command::Validate { file, json } => validate(global, &file, json),
        Command::Run { file, input, json } => run_plan(global, &file, &input, json).await,
        Command::Resume { id, json } => resume(global, &id, json).await,
        Command::Graph {
            file,
            run,
            output,
            scale,
            json,
        } => {
            graph(
                global,
                file.as_deref(),
                run.as_deref(),
                &output,
                scale,
                json,
            )
            .await
        }
        Command::Runs(RunsCommand::List { limit, json }) => list(global, limit, json).await,
        Command::Runs(RunsCommand::Show { id, json }) => show(global, &id, json).await,
    };
    finish(outcome, json)
}

fn plan_failure(e: &tessera_orchestrator::plan::PlanError) -> Failure {
    Failure::bad_input("bad_plan", e.to_string())
        .with("file", e.origin.clone())
        .with("place", e.place.clone())
}

fn read_plan(file: &std::path::Path) -> Result<Plan, Failure> {
    Plan::from_file(file).map_err(|e| plan_failure(&e))
}

fn validate(global: &GlobalArgs, file: &std::path::Path, json: bool) -> Outcome {
    let plan = read_plan(file)?;
    check_components(&plan, &components(global)?)?;
    if json {
        let steps: Vec<Value> = plan
            .topological()
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "component": s.component.to_string(),
                    "function": s.function,
                    "needs": s.needs,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "valid": true,
                "plan": plan.name,
                "steps": steps,
                "inputs": plan.input_schema(),
            }))
            .unwrap_or_default()
        );
    } else {
        println!(
            "{}: plan `{}` is valid: {} steps, {} inputs",
            file.display(),
            plan.name,
            plan.steps.len(),
            plan.inputs.len()
        );
    }
    Ok(exit::OK)
}

type Caller = LocalCaller<FileComponents>;

/// The runner of this process: components by path or from the registry,
/// calls recorded in the journal, progress in the store.
async fn runner(global: &GlobalArgs) -> Result<(Runner, Arc<Caller>), Failure> {
    let journal = global
        .journal()
        .map_err(|m| Failure::internal("journal", m))?;
    let stores = global
        .stores()
        .map_err(|m| Failure::bad_input("store_settings", m))?;
    let store = stores
        .for_bucket(PLANS_BUCKET)
        .await
        .map_err(|e| Failure::internal("store", e.to_string()))?;
    let caller = Arc::new(LocalCaller::new(components(global)?, journal));
    Ok((
        Runner::new(Progress::new(store, PLANS_BUCKET), caller.clone()),
        caller,
    ))
}

/// Components by path (relative to the plan) or by registry name (the
/// active version, under its manifest), each loaded once.
pub(crate) fn components(global: &GlobalArgs) -> Result<FileComponents, Failure> {
    let runtime = global.runtime_checked(false)?;
    let registry_dir = global.data.clone();
    let rt = runtime.clone();
    let loaded: Mutex<HashMap<String, Arc<LoadedComponent>>> = Mutex::new(HashMap::new());
    let from_registry = move |name: &str| -> Result<Arc<LoadedComponent>, String> {
        if let Some(c) = loaded.lock().unwrap_or_else(|p| p.into_inner()).get(name) {
            return Ok(c.clone());
        }
        let registry = Registry::open(&registry_dir).map_err(|e| e.to_string())?;
        let entry = registry
            .get(name)
            .map_err(|e| format!("component `{name}`: {e}"))?;
        let version = entry.active_version();
        let bytes = registry.bytes(&version.digest).map_err(|e| e.to_string())?;
        let grants = match &version.manifest {
            Some(text) => Grants::from_toml(
                text,
                &format!("manifest of {name} v{}", entry.active),
                version
                    .manifest_dir
                    .as_deref()
                    .unwrap_or(std::path::Path::new(".")),
            )
            .map_err(|e| e.to_string())?,
            None => Grants::deny_all(),
        };
        let prepared = rt
            .prepare_named(bytes, &format!("{name} v{}", entry.active), name)
            .map_err(|e| e.to_string())?;
        let c = Arc::new(rt.load(&prepared, grants).map_err(|e| e.to_string())?);
        loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), c.clone());
        Ok(c)
    };
    Ok(FileComponents::new(runtime).with_registry(Box::new(from_registry)))
}

/// Checks the plan against its components: every problem, or none.
pub(crate) fn check_components(plan: &Plan, components: &FileComponents) -> Result<(), Failure> {
    let errors = tessera_orchestrator::validate::check(plan, &LoadedCatalog(components));
    let Some(first) = errors.first() else {
        return Ok(());
    };
    let list: Vec<Value> = errors
        .iter()
        .map(|e| json!({"place": e.place, "message": e.message}))
        .collect();
    let message = if errors.len() == 1 {
        first.to_string()
    } else {
        let mut m = format!("{}: {} problems:", first.origin, errors.len());
        for e in &errors {
            m.push_str(&format!("\n  {}: {}", e.place, e.message));
        }
        m
    };
    Err(Failure::bad_input("bad_plan", message)
        .with("file", first.origin.clone())
        .with("place", first.place.clone())
        .with("errors", Value::Array(list)))
}

fn run_failure(e: RunError) -> Failure {
    match e {
        RunError::Plan(p) => plan_failure(&p),
        RunError::NoSuchRun(id) => {
            Failure::bad_input("no_such_run", format!("no plan run `{id}`")).with("run", id)
        }
        e @ RunError::Ended { .. } => Failure::bad_input("run_ended", e.to_string()),
        e @ RunError::Busy { .. } => Failure::bad_input("run_busy", e.to_string()),
        RunError::Store(s) => Failure::internal("store", s.to_string()),
    }
}

/// Prints events as they come: a line per finished step (a live line per
/// step on a terminal).
fn printer(
    json: bool,
) -> (
    Option<tokio::sync::mpsc::UnboundedSender<PlanEvent>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PlanEvent>();
    let live = !json && std::io::stderr().is_terminal();
    let handle = tokio::spawn(async move {
        let bars = indicatif::MultiProgress::new();
        let mut lines: HashMap<String, indicatif::ProgressBar> = HashMap::new();
        let style = indicatif::ProgressStyle::with_template("{spinner} {prefix:<20} {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
        while let Some(ev) = rx.recv().await {
            if json {
                continue;
            }
            match ev {
                PlanEvent::Started {
                    run,
                    plan,
                    steps,
                    finished,
                } => {
                    eprintln!("plan `{plan}`, run {run}");
                    if live {
                        for s in steps {
                            let bar = bars.add(indicatif::ProgressBar::new_spinner());
                            bar.set_style(style.clone());
                            bar.set_prefix(s.clone());
                            if finished.contains(&s) {
                                bar.finish_with_message("done before (resumed)");
                            } else {
                                bar.set_message("waiting");
                            }
                            lines.insert(s, bar);
                        }
                    } else if !finished.is_empty() {
                        eprintln!("  already finished: {}", finished.join(", "));
                    }
                }
                PlanEvent::Attempt {
                    step,
                    item,
                    attempt,
                } => {
                    let what = match item {
                        Some(i) => format!("running item {i} (attempt {attempt})"),
                        None => format!("running (attempt {attempt})"),
                    };
                    if let Some(b) = lines.get(&step) {
                        b.set_message(what);
                        b.enable_steady_tick(std::time::Duration::from_millis(120));
                    }
                }
                PlanEvent::Retrying {
                    step,
                    item,
                    attempt,
                    error,
                    wait_ms,
                } => {
                    let item = item.map(|i| format!(" item {i}")).unwrap_or_default();
                    let msg =
                        format!("attempt {attempt}{item} failed: {error}; again in {wait_ms} ms");
                    match lines.get(&step) {
                        Some(b) => b.set_message(msg),
                        None => eprintln!("  {step:<20} {msg}"),
                    }
                }
                PlanEvent::Step { step, record } => {
                    let state = match record.state {
                        StepState::Succeeded => "ok",
                        StepState::Failed => "FAILED",
                        StepState::Skipped => "skipped",
                        StepState::Continued => "failed, continued",
                        StepState::FellBack => "failed, fell back",
                    };
                    let items = record
                        .items
                        .map(|n| format!(", {n} items"))
                        .unwrap_or_default();
                    let mut msg = format!(
                        "{state}  {} ms, {} attempt{}{items}",
                        record.duration_ms,
                        record.attempts,
                        if record.attempts == 1 { "" } else { "s" }
                    );
                    if let Some(e) = &record.error {
                        msg.push_str(&format!("  ({e})"));
                    }
                    match lines.get(&step) {
                        Some(b) => b.finish_with_message(msg),
                        None => eprintln!("  {step:<20} {msg}"),
                    }
                }
                PlanEvent::Ended { .. } => {
                    for b in lines.values() {
                        if !b.is_finished() {
                            b.finish_with_message("not run");
                        }
                    }
                }
            }
        }
    });
    (Some(tx), handle)
}

/// Ctrl-C cancels the run (steps in flight stop; `plan resume` goes on).
fn cancel_on_ctrl_c() -> CancellationToken {
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            c.cancel();
        }
    });
    cancel
}

fn report(rec: &RunRecord, json: bool) -> Outcome {
    if json {
        println!("{}", serde_json::to_string_pretty(rec).unwrap_or_default());
    } else {
        match rec.status {
            RunStatus::Succeeded => println!(
                "{}",
                serde_json::to_string_pretty(rec.outputs.as_ref().unwrap_or(&Value::Null))
                    .unwrap_or_default()
            ),
            status => eprintln!(
                "plan run {} {}: {} (go on with `tessera plan resume {}`)",
                rec.id,
                serde_json::to_value(status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                rec.error.as_deref().unwrap_or(""),
                rec.id
            ),
        }
    }
    Ok(match rec.status {
        RunStatus::Succeeded => exit::OK,
        RunStatus::Cancelled => exit::TRAP,
        _ => exit::GUEST_ERROR,
    })
}

async fn run_plan(global: &GlobalArgs, file: &std::path::Path, input: &str, json: bool) -> Outcome {
    let plan = read_plan(file)?;
    let inputs: Value = serde_json::from_str(input)
        .map_err(|e| Failure::bad_input("bad_json", format!("--input: {e}")))?;
    let (runner, caller) = runner(global).await?;
    check_components(&plan, caller.components())?;
    let created = runner.create(&plan, &inputs).await.map_err(run_failure)?;
    if !json {
        eprintln!(
            "plan run {} (resume with `tessera plan resume {}`)",
            created.id, created.id
        );
    }
    let (events, printing) = printer(json);
    let rec = runner
        .resume(&created.id, events, cancel_on_ctrl_c())
        .await
        .map_err(run_failure)?;
    let _ = printing.await;
    report(&rec, json)
}

async fn resume(global: &GlobalArgs, id: &str, json: bool) -> Outcome {
    let (runner, _) = runner(global).await?;
    let (events, printing) = printer(json);
    let rec = runner
        .resume(id, events, cancel_on_ctrl_c())
        .await
        .map_err(run_failure)?;
    let _ = printing.await;
    report(&rec, json)
}

async fn progress(global: &GlobalArgs) -> Result<Progress, Failure> {
    let stores = global
        .stores()
        .map_err(|m| Failure::bad_input("store_settings", m))?;
    let store = stores
        .for_bucket(PLANS_BUCKET)
        .await
        .map_err(|e| Failure::internal("store", e.to_string()))?;
    Ok(Progress::new(store, PLANS_BUCKET))
}

fn status_name(s: RunStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

async fn list(global: &GlobalArgs, limit: usize, json: bool) -> Outcome {
    let p = progress(global).await?;
    let runs = p
        .runs(limit)
        .await
        .map_err(|e| Failure::internal("store", e.to_string()))?;
    if json {
        let v: Vec<Value> = runs
            .iter()
            .map(|r| {
                json!({"id": r.id, "plan": r.plan, "status": r.status, "started": r.started,
                       "finished": r.finished, "resumes": r.resumes})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        for r in runs {
            println!(
                "{:<28} {:<20} {:<10} {}",
                r.id,
                r.plan,
                status_name(r.status),
                r.started
            );
        }
    }
    Ok(exit::OK)
}

async fn show(global: &GlobalArgs, id: &str, json: bool) -> Outcome {
    let p = progress(global).await?;
    let (rec, _) = p
        .run(id)
        .await
        .map_err(|e| Failure::internal("store", e.to_string()))?
        .ok_or_else(|| Failure::bad_input("no_such_run", format!("no plan run `{id}`")))?;
    let plan = Plan::from_toml(
        &rec.text,
        &rec.origin,
        std::path::Path::new(&rec.base),
        &rec.plan,
    )
    .map_err(|e| plan_failure(&e))?;
    let steps = step_records(&p, &plan, id)
        .await
        .map_err(|e| Failure::internal("store", e.to_string()))?;
    if json {
        let steps: Vec<Value> = steps
            .iter()
            .map(|(name, r)| json!({"step": name, "record": r}))
            .collect();
        let mut v = serde_json::to_value(&rec).unwrap_or(Value::Null);
        v["steps"] = Value::Array(steps);
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(exit::OK);
    }
    println!(
        "plan run {} of `{}`: {}",
        rec.id,
        rec.plan,
        status_name(rec.status)
    );
    println!(
        "  started {}{}",
        rec.started,
        rec.finished
            .as_ref()
            .map(|f| format!(", finished {f}"))
            .unwrap_or_default()
    );
    if rec.resumes > 0 {
        println!("  resumed {} time(s)", rec.resumes);
    }
    println!("  inputs {}", rec.inputs);
    for (name, r) in steps {
        match r {
            None => println!("  {name:<20} not finished"),
            Some(r) => println!(
                "  {name:<20} {:<10} {:>6} ms  {} attempt(s)  runs {}{}",
                serde_json::to_value(r.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                r.duration_ms,
                r.attempts,
                if r.runs.is_empty() {
                    "-".to_string()
                } else {
                    r.runs.join(",")
                },
                r.error.map(|e| format!("  error: {e}")).unwrap_or_default()
            ),
        }
    }
    if let Some(o) = &rec.outputs {
        println!("  outputs {o}");
    }
    if let Some(e) = &rec.error {
        println!("  error {e}");
    }
    Ok(exit::OK)
}

async fn graph(
    global: &GlobalArgs,
    file: Option<&std::path::Path>,
    run: Option<&str>,
    output: &std::path::Path,
    scale: f32,
    json: bool,
) -> Outcome {
    use tessera_orchestrator::graph;
    let png = match output.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("png") => true,
        Some(e) if e.eq_ignore_ascii_case("svg") => false,
        _ => {
            return Err(Failure::bad_input(
                "usage",
                format!("{}: the output is a .svg or .png file", output.display()),
            ));
        }
    };
    let (plan, records) = match run {
        None => {
            let file = file.ok_or_else(|| {
                Failure::bad_input("usage", "give a plan file, or --run with a plan run id")
            })?;
            (read_plan(file)?, None)
        }
        Some(id) => {
            let p = progress(global).await?;
            let (rec, _) = p
                .run(id)
                .await
                .map_err(|e| Failure::internal("store", e.to_string()))?
                .ok_or_else(|| Failure::bad_input("no_such_run", format!("no plan run `{id}`")))?;
            let plan = match file {
                Some(f) => read_plan(f)?,
                None => Plan::from_toml(
                    &rec.text,
                    &rec.origin,
                    std::path::Path::new(&rec.base),
                    &rec.plan,
                )
                .map_err(|e| plan_failure(&e))?,
            };
            let steps = step_records(&p, &plan, id)
                .await
                .map_err(|e| Failure::internal("store", e.to_string()))?;
            (plan, Some(steps))
        }
    };
    let svg = graph::svg(&plan, records.as_deref())
        .map_err(|e| Failure::internal("graph", e.to_string()))?;
    let bytes = if png {
        graph::png(&svg, scale).map_err(|e| Failure::bad_input("graph", e.to_string()))?
    } else {
        svg.into_bytes()
    };
    std::fs::write(output, &bytes).map_err(|e| {
        Failure::internal("write", format!("{}: {e}", output.display()))
            .with("file", output.display().to_string())
    })?;
    if json {
        println!(
            "{}",
            json!({"plan": plan.name, "run": run, "file": output.display().to_string(), "bytes": bytes.len()})
        );
    } else {
        eprintln!("wrote {} ({} bytes)", output.display(), bytes.len());
    }
    Ok(exit::OK)
}
