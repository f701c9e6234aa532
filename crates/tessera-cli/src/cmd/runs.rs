//! `tessera runs`: recorded runs.

use std::io::{BufReader, Write};
use std::path::PathBuf;

use serde_json::json;
use tessera_journal::RunResult;

use crate::exit;
use crate::failure::{Failure, Outcome, finish, journal_failure};
use crate::setup::GlobalArgs;

/// Subcommands of `tessera runs`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List recorded runs, oldest first.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a run's header, every host interaction in order, and its end.
    Show {
        /// Run id (or a unique prefix).
        run: String,
        /// Print the journal as JSON (header, steps, end).
        #[arg(long)]
        json: bool,
    },
    /// Write one run, with its component and payloads, to a single file.
    Export {
        /// Run id (or a unique prefix).
        run: String,
        /// Output file.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Import a run exported with `runs export`.
    Import {
        /// The exported file.
        file: PathBuf,
    },
}

fn status(end: Option<&tessera_journal::End>) -> String {
    match end.map(|e| &e.result) {
        None => "incomplete".into(),
        Some(RunResult::Returned { value }) => {
            if value.get("err").is_some() && value.as_object().is_some_and(|o| o.len() == 1) {
                "guest-error".into()
            } else {
                "ok".into()
            }
        }
        Some(RunResult::Limit { limit, .. }) => format!("limit:{limit}"),
        Some(RunResult::Trap { .. }) => "trap".into(),
        Some(RunResult::Refused { .. }) => "refused".into(),
        Some(RunResult::Cancelled { .. }) => "cancelled".into(),
    }
}

/// Runs the subcommand and returns the exit code.
pub fn run(global: &GlobalArgs, command: Command) -> i32 {
    let json = matches!(
        command,
        Command::List { json: true } | Command::Show { json: true, .. }
    );
    finish(runs(global, command), json)
}

fn runs(global: &GlobalArgs, command: Command) -> Outcome {
    let store = global
        .journal()
        .map_err(|e| Failure::internal("journal", e))?;
    let store = &*store;
    let jf = |e: tessera_journal::Error| journal_failure(&e);
    match command {
        Command::List { json } => {
            let runs = store.list().map_err(jf)?;
            if json {
                let v: Vec<_> = runs
                    .iter()
                    .map(|r| {
                        json!({
                            "run_id": r.header.run_id,
                            "started": r.header.started,
                            "component": r.header.component.digest,
                            "function": r.header.function,
                            "steps": r.steps,
                            "status": status(r.end.as_ref()),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                for r in &runs {
                    println!(
                        "{:<26} {:<22} {:>6} steps  {:<12} {} ({})",
                        r.header.run_id,
                        r.header.started.get(..19).unwrap_or(&r.header.started),
                        r.steps,
                        status(r.end.as_ref()),
                        r.header.function,
                        r.header.component.origin,
                    );
                }
                if runs.is_empty() {
                    eprintln!("no recorded runs (record one with `tessera call ... --record`)");
                }
            }
            Ok(exit::OK)
        }
        Command::Show { run, json } => {
            let id = store
                .resolve(&run)
                .map_err(|e| jf(e).with("run", run.as_str()))?;
            let header = store.header(&id).map_err(jf)?;
            let steps = store.steps(&id).map_err(jf)?;
            let end = store.end(&id).map_err(jf)?;
            if json {
                let v = json!({
                    "header": header,
                    "steps": steps.iter().map(|(i, s)| json!({"index": i, "interaction": s})).collect::<Vec<_>>(),
                    "end": end,
                });
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                return Ok(exit::OK);
            }
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "run       {}", header.run_id);
            let _ = writeln!(out, "started   {}", header.started);
            let _ = writeln!(
                out,
                "component {} ({})",
                header.component.digest, header.component.origin
            );
            let _ = writeln!(out, "call      {} {}", header.function, header.args);
            if let Some(c) = &header.caller {
                let _ = writeln!(
                    out,
                    "caller    {}{}",
                    c.via,
                    c.token
                        .as_deref()
                        .map(|t| format!(" (token {t})"))
                        .unwrap_or_default()
                );
            }
            let _ = writeln!(
                out,
                "engine    wasmtime {}, fuel limit {}, deadline {} ms, memory {} MiB",
                header.engine.wasmtime,
                header.grants.limits.fuel,
                header.grants.limits.timeout_ms,
                header.grants.limits.memory_mb
            );
            let _ = writeln!(out, "steps     {}", steps.len());
            for (i, s) in &steps {
                let _ = writeln!(out, "{}", tessera_journal::describe_step(*i, s));
            }
            match &end {
                None => {
                    let _ = writeln!(
                        out,
                        "end       INCOMPLETE (the process stopped during the run)"
                    );
                }
                Some(e) => {
                    let _ = writeln!(
                        out,
                        "end       {} ; fuel {} ; peak memory {} bytes ; {} µs",
                        serde_json::to_string(&e.result).unwrap_or_default(),
                        e.fuel_consumed,
                        e.peak_memory_bytes,
                        e.duration_us
                    );
                }
            }
            Ok(exit::OK)
        }
        Command::Export { run, output } => {
            let id = store.resolve(&run).map_err(jf)?;
            let f = std::fs::File::create(&output).map_err(|e| {
                Failure::bad_input("io", format!("cannot create {}: {e}", output.display()))
                    .with("path", output.display().to_string())
            })?;
            let mut w = std::io::BufWriter::new(f);
            store.export(&id, &mut w).map_err(jf)?;
            w.flush().map_err(|e| {
                Failure::bad_input("io", format!("{}: {e}", output.display()))
                    .with("path", output.display().to_string())
            })?;
            eprintln!("exported run {id} to {}", output.display());
            Ok(exit::OK)
        }
        Command::Import { file } => {
            let f = std::fs::File::open(&file).map_err(|e| {
                Failure::bad_input("io", format!("cannot open {}: {e}", file.display()))
                    .with("path", file.display().to_string())
            })?;
            let id = store
                .import(&mut BufReader::new(f), &file.display().to_string())
                .map_err(jf)?;
            println!("{id}");
            Ok(exit::OK)
        }
    }
}
