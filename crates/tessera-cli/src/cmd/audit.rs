//! `tessera audit`: the audit log's hash chain.

use std::path::PathBuf;

use serde_json::json;
use tessera_runtime::audit::chain;

use crate::exit;
use crate::setup::GlobalArgs;

/// Subcommands of `tessera audit`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check the audit log's hash chain: exit 0 if every line is as
    /// written, 7 naming the first line changed, removed, inserted or
    /// reordered. Prints the chain's head (the last line's hash): keep it
    /// elsewhere to show later that no line was cut from the end.
    Verify {
        /// The log to check (default: `--audit`, or `<data>/audit.jsonl`).
        file: Option<PathBuf>,
        /// The head an earlier `verify` printed: the chain must still hold
        /// a line with that hash, or lines were cut from its end.
        #[arg(long, value_name = "HASH")]
        head: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the subcommand and returns the exit code.
pub fn run(global: &GlobalArgs, command: Command) -> i32 {
    match command {
        Command::Verify { file, head, json } => {
            let path = file
                .or_else(|| global.audit.clone())
                .unwrap_or_else(|| global.data.join("audit.jsonl"));
            verify(&path, head.as_deref(), json)
        }
    }
}

fn verify(path: &std::path::Path, head: Option<&str>, as_json: bool) -> i32 {
    let mut report = match chain::verify(path) {
        Ok(r) => r,
        Err(e) => {
            let message = format!("cannot read the audit log {}: {e}", path.display());
            if as_json {
                println!(
                    "{}",
                    json!({"ok": false, "error": {"kind": "io", "message": message, "context": {"path": path.display().to_string()}}})
                );
            } else {
                eprintln!("error: {message}");
            }
            return if e.kind() == std::io::ErrorKind::NotFound {
                exit::BAD_INPUT
            } else {
                exit::INTERNAL
            };
        }
    };
    // A head kept from earlier must still be in the chain.
    if let Some(h) = head
        && report.problem.is_none()
        && !chain::holds(path, h).unwrap_or(false)
    {
        report.problem = Some(chain::Problem {
            line: report.lines + 1,
            kind: chain::ProblemKind::Removed,
            detail: format!(
                "no line has the hash {h}: lines were cut from the end, or the log was rewritten"
            ),
        });
    }
    let code = if report.intact() {
        exit::OK
    } else {
        exit::TAMPERED
    };
    if as_json {
        let mut v = serde_json::to_value(&report).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            m.insert("ok".into(), json!(report.intact()));
            m.insert("path".into(), json!(path.display().to_string()));
        }
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return code;
    }
    let before = if report.unchained > 0 {
        format!(
            " ({} line(s) before the chain, written without hashes, not checked)",
            report.unchained
        )
    } else {
        String::new()
    };
    match &report.problem {
        None => {
            println!(
                "{}: {} lines, chain intact{before}",
                path.display(),
                report.lines
            );
            if let (Some(h), Some(s)) = (&report.head, report.last_seq) {
                println!("head: {h} (seq {s})");
            }
        }
        Some(p) => {
            println!(
                "{}: line {}: {}: {}",
                path.display(),
                p.line,
                serde_json::to_value(p.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                p.detail
            );
            if let (Some(h), Some(s)) = (&report.head, report.last_seq) {
                println!("intact up to seq {s}, hash {h}{before}");
            }
        }
    }
    code
}
