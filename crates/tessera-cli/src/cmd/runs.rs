//! `tessera runs`: recorded runs.

use std::io::{BufReader, Write};
use std::path::PathBuf;

use serde_json::json;
use tessera_journal::retention::{format_bytes, parse_age, parse_bytes};
use tessera_journal::{Retention, RunResult};

use crate::exit;
use crate::failure::{Failure, Outcome, finish, journal_failure};
use crate::setup::GlobalArgs;

/// The purpose a signed journal export's signature is made for.
const JOURNAL_EXPORT_PURPOSE: &str = "journal-export";

/// Where the signature of an export goes: `<file>.sig`.
fn signature_path(file: &std::path::Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".sig");
    PathBuf::from(s)
}

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
        /// Sign the export with this secret key (`tessera keys generate`):
        /// the signature goes to `<output>.sig`.
        #[arg(long, value_name = "FILE")]
        sign: Option<PathBuf>,
    },
    /// Import a run exported with `runs export`.
    Import {
        /// The exported file.
        file: PathBuf,
        /// Require a valid signature (`<file>.sig`, or `--signature`) by
        /// one of these public keys (repeatable); exit 8 without one.
        #[arg(long, value_name = "FILE")]
        key: Vec<PathBuf>,
        /// The signature file (default: `<file>.sig`).
        #[arg(long, value_name = "FILE", requires = "key")]
        signature: Option<PathBuf>,
    },
    /// What the journal weighs: the file on disk, runs, bytes per run, and
    /// the same per component.
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove the runs the retention policy does not keep (the `[journal]`
    /// table of `<data>/tessera.toml`, overridden by the flags), the blobs
    /// no run left references, and compact the file. Pinned runs and runs
    /// held by a plan or agent are never removed.
    Prune {
        /// Print what would be removed and the bytes it would free; change
        /// nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Keep at most this many runs (the newest).
        #[arg(long, value_name = "N")]
        max_runs: Option<u64>,
        /// Remove runs older than this (`30d`, `12h`, `90m`).
        #[arg(long, value_name = "AGE")]
        max_age: Option<String>,
        /// Bring the journal file under this size on disk (`256 MiB`, `1GB`).
        #[arg(long, value_name = "SIZE")]
        max_bytes: Option<String>,
    },
    /// Pin a run: retention never removes it until it is unpinned.
    Pin {
        /// Run id (or a unique prefix).
        run: String,
    },
    /// Unpin a run.
    Unpin {
        /// Run id (or a unique prefix).
        run: String,
    },
}

/// The retention policy for `runs prune`: the data directory's settings,
/// with the flags over its global limits.
pub fn policy(
    data: &std::path::Path,
    max_runs: Option<u64>,
    max_age: Option<&str>,
    max_bytes: Option<&str>,
    flag_prefix: &str,
) -> Result<Retention, String> {
    let mut p = Retention::load(data).map_err(|e| e.to_string())?;
    let flag = |name: &str, m: String| format!("--{flag_prefix}{name}: {m}");
    if let Some(n) = max_runs {
        p.global.max_runs = Some(n);
    }
    if let Some(a) = max_age {
        p.global.max_age = Some(parse_age(a).map_err(|m| flag("max-age", m))?);
    }
    if let Some(b) = max_bytes {
        p.global.max_bytes = Some(parse_bytes(b).map_err(|m| flag("max-bytes", m))?);
    }
    Ok(p)
}

fn print_prune(r: &tessera_journal::PruneReport) {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    for p in &r.removed {
        println!(
            "{verb} {:<26} {:<22} {:>10}  {} ({})",
            p.run_id,
            p.started.get(..19).unwrap_or(&p.started),
            format_bytes(p.bytes),
            p.component,
            p.reason
        );
    }
    for h in &r.held {
        println!("kept   {:<26} held by {}", h.run_id, h.held_by.join(", "));
    }
    println!(
        "{verb} {} runs and {} blobs ({}); {} runs kept; journal {} -> {}{} ({} freed)",
        r.removed.len(),
        r.blobs_removed,
        format_bytes(r.blob_bytes_removed),
        r.runs_kept,
        format_bytes(r.file_bytes_before),
        if r.dry_run { "about " } else { "" },
        format_bytes(r.file_bytes_after),
        format_bytes(r.bytes_freed()),
    );
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
        Some(RunResult::Exited { code }) => format!("exit {code}"),
        Some(RunResult::Cancelled { .. }) => "cancelled".into(),
    }
}

/// Runs the subcommand and returns the exit code.
pub fn run(global: &GlobalArgs, command: Command) -> i32 {
    let json = matches!(
        command,
        Command::List { json: true }
            | Command::Show { json: true, .. }
            | Command::Stats { json: true }
            | Command::Prune { json: true, .. }
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
                            "bytes": r.bytes,
                            "holds": r.holds,
                            "status": status(r.end.as_ref()),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                for r in &runs {
                    println!(
                        "{:<26} {:<22} {:>6} steps  {:<12} {} ({}){}",
                        r.header.run_id,
                        r.header.started.get(..19).unwrap_or(&r.header.started),
                        r.steps,
                        status(r.end.as_ref()),
                        r.header.function,
                        r.header.component.origin,
                        if r.holds.is_empty() {
                            String::new()
                        } else {
                            format!("  [held: {}]", r.holds.join(", "))
                        }
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
            if let Some(l) = &header.linked {
                let _ = writeln!(
                    out,
                    "linked    served {} for run {} step {}",
                    l.interface, l.run, l.step
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
                    // A trap's backtrace goes on lines of its own below.
                    let (result, backtrace) = match &e.result {
                        RunResult::Trap { message, backtrace } => (
                            RunResult::Trap {
                                message: message.clone(),
                                backtrace: None,
                            },
                            backtrace.as_deref(),
                        ),
                        other => (other.clone(), None),
                    };
                    let _ = writeln!(
                        out,
                        "end       {} ; fuel {} ; peak memory {} bytes ; {} µs",
                        serde_json::to_string(&result).unwrap_or_default(),
                        e.fuel_consumed,
                        e.peak_memory_bytes,
                        e.duration_us
                    );
                    if let Some(bt) = backtrace {
                        let _ = writeln!(out, "backtrace");
                        for line in bt.lines() {
                            let _ = writeln!(out, "  {line}");
                        }
                    }
                }
            }
            Ok(exit::OK)
        }
        Command::Export { run, output, sign } => {
            let key = match &sign {
                Some(p) => Some(tessera_runtime::trust::keys::read_secret(p).map_err(|e| {
                    Failure::bad_input("key", e.to_string()).with("path", p.display().to_string())
                })?),
                None => None,
            };
            let id = store.resolve(&run).map_err(jf)?;
            let mut bytes = Vec::new();
            store.export(&id, &mut bytes).map_err(jf)?;
            let write = |path: &std::path::Path, data: &[u8]| {
                std::fs::write(path, data).map_err(|e| {
                    Failure::bad_input("io", format!("cannot write {}: {e}", path.display()))
                        .with("path", path.display().to_string())
                })
            };
            write(&output, &bytes)?;
            eprintln!("exported run {id} to {}", output.display());
            if let Some(key) = key {
                let sig = tessera_runtime::trust::keys::sign_content(
                    JOURNAL_EXPORT_PURPOSE,
                    &bytes,
                    &key,
                );
                let sig_path = signature_path(&output);
                let text = serde_json::to_string_pretty(&sig).unwrap_or_default();
                write(&sig_path, format!("{text}\n").as_bytes())?;
                eprintln!("signed with key {} in {}", key.id(), sig_path.display());
            }
            Ok(exit::OK)
        }
        Command::Import {
            file,
            key,
            signature,
        } => {
            let bytes = std::fs::read(&file).map_err(|e| {
                Failure::bad_input("io", format!("cannot open {}: {e}", file.display()))
                    .with("path", file.display().to_string())
            })?;
            if !key.is_empty() {
                let keys = crate::cmd::audit::public_keys(&key)?;
                let sig_path = signature.unwrap_or_else(|| signature_path(&file));
                let refused = |why: String| {
                    Failure::new(
                        exit::UNTRUSTED,
                        "untrusted",
                        format!("{}: {why}; nothing imported", file.display()),
                    )
                    .with("path", file.display().to_string())
                    .with("signature", sig_path.display().to_string())
                };
                let text = std::fs::read_to_string(&sig_path)
                    .map_err(|e| refused(format!("no signature ({}: {e})", sig_path.display())))?;
                let sig: tessera_runtime::trust::ContentSignature = serde_json::from_str(&text)
                    .map_err(|e| {
                        refused(format!("{} is not a signature: {e}", sig_path.display()))
                    })?;
                let by = tessera_runtime::trust::keys::verify_content(
                    JOURNAL_EXPORT_PURPOSE,
                    &bytes,
                    &sig,
                    &keys,
                )
                .map_err(refused)?;
                eprintln!("signature by {} ({}) holds", by.name, by.id());
            }
            let id = store
                .import(&mut BufReader::new(&bytes[..]), &file.display().to_string())
                .map_err(jf)?;
            println!("{id}");
            Ok(exit::OK)
        }
        Command::Stats { json } => {
            let s = store.stats().map_err(jf)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
                return Ok(exit::OK);
            }
            println!("journal   {}", store.path().display());
            println!(
                "on disk   {} ({} in allocated pages)",
                format_bytes(s.file_bytes),
                format_bytes(s.allocated_bytes)
            );
            println!(
                "runs      {} ({} incomplete, {} held), {} steps",
                s.runs, s.incomplete, s.held, s.steps
            );
            println!(
                "stored    {} in records ({} headers, {} steps, {} end records), {} in {} blobs",
                format_bytes(s.record_bytes),
                format_bytes(s.header_bytes),
                format_bytes(s.record_bytes - s.header_bytes - s.end_bytes),
                format_bytes(s.end_bytes),
                format_bytes(s.blob_bytes),
                s.blobs
            );
            println!("per run   {} on disk", format_bytes(s.bytes_per_run));
            for c in &s.components {
                println!(
                    "  {:<24} {:>7} runs  {:>10} records  {:>10} blobs  {:>10}/run  {} .. {}",
                    c.name,
                    c.runs,
                    format_bytes(c.record_bytes),
                    format_bytes(c.blob_bytes),
                    format_bytes(c.bytes_per_run),
                    c.oldest.get(..19).unwrap_or(&c.oldest),
                    c.newest.get(..19).unwrap_or(&c.newest),
                );
            }
            Ok(exit::OK)
        }
        Command::Prune {
            dry_run,
            json,
            max_runs,
            max_age,
            max_bytes,
        } => {
            let policy = policy(
                &global.data,
                max_runs,
                max_age.as_deref(),
                max_bytes.as_deref(),
                "",
            )
            .map_err(|m| Failure::bad_input("retention", m))?;
            if policy.is_empty() {
                return Err(Failure::bad_input(
                    "retention",
                    format!(
                        "no retention limits: set them under [journal] in {} or pass --max-runs, --max-age or --max-bytes",
                        global
                            .data
                            .join(tessera_journal::retention::SETTINGS_FILE)
                            .display()
                    ),
                ));
            }
            let report = store.prune(&policy, dry_run).map_err(jf)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print_prune(&report);
            }
            Ok(exit::OK)
        }
        Command::Pin { run } => {
            let id = store
                .resolve(&run)
                .map_err(|e| jf(e).with("run", run.as_str()))?;
            store.pin(&id).map_err(jf)?;
            println!("pinned {id}");
            Ok(exit::OK)
        }
        Command::Unpin { run } => {
            let id = store
                .resolve(&run)
                .map_err(|e| jf(e).with("run", run.as_str()))?;
            if store.unpin(&id).map_err(jf)? {
                println!("unpinned {id}");
            } else {
                println!("{id} was not pinned");
            }
            Ok(exit::OK)
        }
    }
}
