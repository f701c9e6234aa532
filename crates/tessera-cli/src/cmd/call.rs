//! `tessera call`: call one function from JSON.

use std::io::Write;
use std::path::PathBuf;

use serde_json::{Value, json};
use tessera_runtime::{CallFailure, CallOutcome};

use crate::exit;
use crate::failure::{Failure, Outcome, finish};
use crate::setup::GlobalArgs;

/// Arguments of `tessera call`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The component: a `.wasm` file, an `https://…#sha256=<hex>` URL or an
    /// `oci://host/repo:tag` reference (see `--digest`).
    pub component: PathBuf,
    /// The function: `name`, `interface#name`, or the full
    /// `package:name/interface@version#name`.
    pub function: String,
    /// Arguments as a JSON object keyed by parameter name.
    #[arg(long, default_value = "{}", conflicts_with = "args_file")]
    pub args: String,
    /// Read the JSON arguments from a file (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    pub args_file: Option<PathBuf>,
    /// The manifest of grants and limits (TOML). Without one, nothing is
    /// granted and default limits apply.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Print one JSON object with the result, captured output, logs, fuel,
    /// memory, duration and audit events.
    #[arg(long)]
    pub json: bool,
    /// Record the run in the journal (`tessera runs show <id>`,
    /// `tessera replay <id>`); the run id is printed on stderr.
    #[arg(long)]
    pub record: bool,
    /// Run deterministically: virtual clocks driven by fuel, random bytes
    /// from a seeded generator, deadline by fuel only (overrides the
    /// manifest's `deterministic`).
    #[arg(long)]
    pub deterministic: bool,
    /// The seed for `--deterministic` (default 0, or the manifest's `seed`).
    #[arg(long, requires = "deterministic")]
    pub seed: Option<u64>,
    /// Where to fetch the component from.
    #[command(flatten)]
    pub source: crate::source::SourceArgs,
}

fn read_args(args: &Args) -> Result<Value, String> {
    let (text, origin) = match &args.args_file {
        Some(p) if p.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| format!("cannot read arguments from stdin: {e}"))?;
            (s, "stdin".to_string())
        }
        Some(p) => (
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?,
            p.display().to_string(),
        ),
        None => (args.args.clone(), "--args".to_string()),
    };
    serde_json::from_str(&text).map_err(|e| {
        format!(
            "{origin}: invalid JSON at line {} column {}: {e}",
            e.line(),
            e.column()
        )
    })
}

/// Runs the subcommand and returns the exit code.
pub async fn run(global: &GlobalArgs, args: Args) -> i32 {
    finish(call(global, &args).await, args.json)
}

async fn call(global: &GlobalArgs, args: &Args) -> Outcome {
    let json_args = read_args(args).map_err(|e| Failure::bad_input("arguments", e))?;
    let runtime = global.runtime_checked(false)?;
    let deterministic = args.deterministic.then(|| args.seed.unwrap_or(0));
    let grants = crate::setup::grants(args.manifest.as_deref(), deterministic)
        .map_err(|e| Failure::from_runtime(&e))?;
    let loaded = crate::source::load(&runtime, &args.component, &args.source, grants)
        .await
        .map_err(crate::source::LoadFailure::into_failure)?;
    let mut run_id = None;
    let called = if args.record {
        let store = global
            .journal()
            .map_err(|e| Failure::internal("journal", e))?;
        match tessera_journal::record_call(&store, &loaded, &args.function, &json_args).await {
            Ok((id, o)) => {
                eprintln!("recorded run {id}");
                run_id = Some(id);
                Ok(o)
            }
            Err(tessera_journal::Error::Runtime(e)) => Err(e),
            Err(e) => return Err(Failure::internal("journal", e.to_string())),
        }
    } else {
        loaded.call_json(&args.function, &json_args).await
    };
    let outcome = called.map_err(|e| Failure::from_runtime(&e))?;
    let code = exit_code(&outcome);
    if args.json {
        let mut v = outcome_json(&outcome);
        if let Some(id) = run_id {
            v["run_id"] = json!(id);
        }
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print_human(&outcome);
    }
    Ok(code)
}

fn exit_code(o: &CallOutcome) -> i32 {
    match &o.result {
        Ok(_) if o.guest_error && o.denied() => exit::DENIED,
        Ok(_) if o.guest_error => exit::GUEST_ERROR,
        Ok(_) => exit::OK,
        Err(_) if o.denied() => exit::DENIED,
        Err(_) => exit::TRAP,
    }
}

fn outcome_json(o: &CallOutcome) -> Value {
    let mut v = json!({
        "function": o.function,
        "ok": o.result.is_ok() && !o.guest_error,
        "stdout": String::from_utf8_lossy(&o.output.stdout),
        "stderr": String::from_utf8_lossy(&o.output.stderr),
        "logs": o.output.logs,
        "fuel_consumed": o.fuel_consumed,
        "peak_memory_bytes": o.peak_memory_bytes,
        "duration_us": o.duration.as_micros() as u64,
        "audit": o.audit,
    });
    match &o.result {
        Ok(r) => v["result"] = r.clone(),
        Err(CallFailure::Limit(l)) => {
            v["error"] =
                json!({ "kind": "limit", "limit": l.capability(), "message": l.to_string() })
        }
        Err(CallFailure::Trap { message, backtrace }) => {
            v["error"] = json!({ "kind": "trap", "message": message, "backtrace": backtrace })
        }
        Err(CallFailure::Diverged(d)) => {
            v["error"] = json!({ "kind": "divergence", "index": d.index, "message": d.to_string() })
        }
        Err(CallFailure::Cancelled) => {
            v["error"] = json!({ "kind": "cancelled", "message": "call cancelled" })
        }
        Err(CallFailure::Exit(code)) => {
            v["error"] = json!({ "kind": "exit", "code": code, "message": format!("exited with status {code}") })
        }
    }
    v
}

fn print_human(o: &CallOutcome) {
    // Guest output is shown as what it is, on stderr, labelled: it is never
    // mixed into the result on stdout.
    let mut err = std::io::stderr().lock();
    for (label, bytes) in [("stdout", &o.output.stdout), ("stderr", &o.output.stderr)] {
        for line in String::from_utf8_lossy(bytes).lines() {
            let _ = writeln!(err, "[guest {label}] {line}");
        }
    }
    for l in &o.output.logs {
        let level = serde_json::to_value(l.level)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let _ = writeln!(err, "[guest log {level} {}] {}", l.context, l.message);
    }
    for a in &o.audit {
        if a.decision != tessera_runtime::Decision::Allow || a.capability == "http" {
            let _ = writeln!(
                err,
                "[audit] {} {} {}{}",
                serde_json::to_value(a.decision)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                a.capability,
                a.target,
                a.detail
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            );
        }
    }
    match &o.result {
        Ok(v) => {
            if o.guest_error {
                let _ = writeln!(err, "guest returned an error");
            }
            // A closed stdout (`| head`) is not an error of the call.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(v).unwrap_or_default()
            );
        }
        Err(CallFailure::Limit(l)) => {
            let _ = writeln!(err, "error: {}: {l}", o.function);
        }
        Err(CallFailure::Diverged(d)) => {
            let _ = writeln!(err, "error: {}: {d}", o.function);
        }
        Err(CallFailure::Cancelled) => {
            let _ = writeln!(err, "error: {}: call cancelled", o.function);
        }
        Err(CallFailure::Exit(code)) => {
            let _ = writeln!(err, "error: {}: exited with status {code}", o.function);
        }
        Err(CallFailure::Trap { message, backtrace }) => {
            let _ = writeln!(err, "error: {message}");
            if let Some(bt) = backtrace {
                let _ = writeln!(err, "{bt}");
            }
        }
    }
}
