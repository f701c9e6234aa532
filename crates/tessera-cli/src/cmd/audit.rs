//! `tessera audit`: the audit log's hash chain.

use std::path::PathBuf;

use serde_json::json;
use tessera_runtime::audit::chain;

use crate::exit;
use crate::failure::Failure;
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
        /// A public key that signs checkpoints (repeatable): every
        /// checkpoint must verify with one of them, and at least one must
        /// exist; says how many lines follow the last.
        #[arg(long, value_name = "FILE")]
        key: Vec<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Sign the chain's head: append a checkpoint line holding an ed25519
    /// signature of the last line's hash, made with the host's key.
    /// Anyone rewriting the log before it must forge the signature.
    Sign {
        /// The log (default: `--audit`, or `<data>/audit.jsonl`).
        file: Option<PathBuf>,
        /// The secret key (`tessera keys generate`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the subcommand and returns the exit code.
pub fn run(global: &GlobalArgs, command: Command) -> i32 {
    match command {
        Command::Verify {
            file,
            head,
            key,
            json,
        } => {
            let path = file
                .or_else(|| global.audit.clone())
                .unwrap_or_else(|| global.data.join("audit.jsonl"));
            verify(&path, head.as_deref(), &key, json)
        }
        Command::Sign { file, key, json } => {
            let path = file
                .or_else(|| global.audit.clone())
                .unwrap_or_else(|| global.data.join("audit.jsonl"));
            sign(&path, &key, json)
        }
    }
}

fn sign(path: &std::path::Path, key: &std::path::Path, as_json: bool) -> i32 {
    let key = match tessera_runtime::trust::keys::read_secret(key) {
        Ok(k) => k,
        Err(e) => {
            return Failure::bad_input("key", e.to_string())
                .with("path", key.display().to_string())
                .emit(as_json);
        }
    };
    let log = match tessera_runtime::audit::JsonLinesAudit::open(path) {
        Ok(l) => l,
        Err(e) => {
            return Failure::internal("io", format!("cannot open {}: {e}", path.display()))
                .with("path", path.display().to_string())
                .emit(as_json);
        }
    };
    match log.checkpoint(&key) {
        Ok(c) => {
            if as_json {
                println!(
                    "{}",
                    json!({"ok": true, "path": path.display().to_string(), "seq": c.seq,
                           "signed": c.signed, "head": c.hash, "key_id": key.id()})
                );
            } else {
                println!(
                    "{}: checkpoint seq {} signs {} with key {}",
                    path.display(),
                    c.seq,
                    c.signed,
                    key.id()
                );
                println!("head: {}", c.hash);
            }
            exit::OK
        }
        Err(e) => Failure::internal("io", format!("cannot append to {}: {e}", path.display()))
            .with("path", path.display().to_string())
            .emit(as_json),
    }
}

/// The public keys named on the command line, each named by its stem.
pub(crate) fn public_keys(
    paths: &[PathBuf],
) -> Result<Vec<tessera_runtime::trust::PublicKey>, Failure> {
    paths
        .iter()
        .map(|p| {
            let name = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            tessera_runtime::trust::keys::read_public(p, &name).map_err(|e| {
                Failure::bad_input("key", e.to_string()).with("path", p.display().to_string())
            })
        })
        .collect()
}

fn verify(path: &std::path::Path, head: Option<&str>, key_paths: &[PathBuf], as_json: bool) -> i32 {
    let keys = match public_keys(key_paths) {
        Ok(k) => k,
        Err(f) => return f.emit(as_json),
    };
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
    // Checkpoints, once the chain itself holds.
    let checkpoints = if keys.is_empty() || !report.intact() {
        None
    } else {
        match chain::verify_checkpoints(path, &keys) {
            Ok(c) => Some(c),
            Err(e) => {
                return Failure::internal("io", format!("cannot read {}: {e}", path.display()))
                    .with("path", path.display().to_string())
                    .emit(as_json);
            }
        }
    };
    if let Some(p) = checkpoints.as_ref().and_then(|c| c.problem.clone()) {
        report.problem = Some(p);
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
            if let Some(c) = &checkpoints {
                m.insert("checkpoints".into(), json!(c));
            }
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
            if let Some(c) = &checkpoints {
                println!(
                    "checkpoints: {} signed by {}; the last at line {}, {} line(s) after it",
                    c.valid,
                    c.signed_by.join(", "),
                    c.last_line.unwrap_or(0),
                    c.lines_after
                );
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
