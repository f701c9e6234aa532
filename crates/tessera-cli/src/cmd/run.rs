//! `tessera run`: run a command — a component exporting `wasi:cli/run`, or
//! a WASI preview 1 command module (adapted on load) — with the terminal's
//! stdin, stdout and stderr connected, its arguments after `--`, and the
//! directories and environment variables the flags (or a manifest) grant.
//! Tessera exits with the guest's exit status.

use std::path::{Path, PathBuf};

use tessera_runtime::capability::stdio::Terminal;
use tessera_runtime::manifest::{Mount, MountMode};
use tessera_runtime::{CallFailure, CallOptions, Decision, Grants};

use crate::failure::Failure;
use crate::setup::GlobalArgs;

/// Tessera could not start the command (bad flags, manifest, component).
pub const NOT_RUN: i32 = 125;
/// The command trapped, hit a limit or was cancelled.
pub const ABORTED: i32 = 134;
/// The command was interrupted (Ctrl-C).
pub const INTERRUPTED: i32 = 130;

/// Arguments of `tessera run`.
#[derive(Debug, clap::Args)]
#[command(after_help = RUN_EXIT_CODES)]
pub struct Args {
    /// The command: a component exporting `wasi:cli/run` or a preview 1
    /// command module (`.wasm` file, URL or `oci://` reference).
    pub component: PathBuf,
    /// Arguments given to the command (`argv[1..]`; put them after `--`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// Grant a host directory: `HOST::GUEST` (read-write), `HOST::GUEST:ro`
    /// (read-only), or `HOST` alone (at the same path). Repeatable.
    #[arg(long = "dir", value_name = "HOST::GUEST[:ro]")]
    pub dirs: Vec<String>,
    /// Set an environment variable (`NAME=VALUE`), or pass the host's
    /// (`NAME`). Repeatable.
    #[arg(long = "env", value_name = "NAME[=VALUE]")]
    pub envs: Vec<String>,
    /// A manifest of grants and limits (TOML); the flags add to it.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Limits over the manifest's.
    #[command(flatten)]
    pub limits: crate::setup::LimitArgs,
    /// Record the run in the journal (its stdin, output, files and exit
    /// status): `tessera replay <id>` re-runs it offline. The run id is
    /// printed on stderr.
    #[arg(long)]
    pub record: bool,
    /// Where to fetch the component from.
    #[command(flatten)]
    pub source: crate::source::SourceArgs,
}

const RUN_EXIT_CODES: &str = "Exit codes:
  the command's own exit status (0 on success; 1 when `run` returns an error)
  125  Tessera could not start it (flags, manifest, component, not a command)
  130  interrupted (Ctrl-C)
  134  it trapped or hit a limit (fuel, deadline, memory, stack)";

/// Runs the subcommand and returns the exit code.
pub async fn run(global: &GlobalArgs, args: Args) -> i32 {
    match run_command(global, &args).await {
        Ok(code) => code,
        Err(f) => {
            eprintln!("error: {}", f.message);
            NOT_RUN
        }
    }
}

/// A `--dir` value: `HOST::GUEST[:ro|:rw]` or `HOST`.
pub fn parse_dir(spec: &str) -> Result<Mount, String> {
    let (host, rest) = match spec.split_once("::") {
        Some((h, g)) => (h, Some(g)),
        None => (spec, None),
    };
    let (guest, mode) = match rest {
        Some(g) => match g.rsplit_once(':') {
            Some((g, "ro")) => (g.to_string(), MountMode::ReadOnly),
            Some((g, "rw")) => (g.to_string(), MountMode::ReadWrite),
            _ => (g.to_string(), MountMode::ReadWrite),
        },
        None => {
            let absolute = std::path::absolute(host)
                .map_err(|e| format!("--dir {spec}: {e}"))?
                .canonicalize()
                .map_err(|e| format!("--dir {spec}: directory {host} cannot be used: {e}"))?;
            (absolute.display().to_string(), MountMode::ReadWrite)
        }
    };
    Mount::new(Path::new(host), &guest, mode).map_err(|(_, m)| format!("--dir {spec}: {m}"))
}

/// Adds the flags' grants to the manifest's.
fn apply_flags(grants: &mut Grants, args: &Args) -> Result<(), String> {
    for spec in &args.dirs {
        let mount = parse_dir(spec)?;
        if grants.files.mounts.iter().any(|m| m.guest == mount.guest) {
            return Err(format!("--dir {spec}: `{}` is mounted twice", mount.guest));
        }
        grants.files.mounts.push(mount);
    }
    for spec in &args.envs {
        let (name, value) = match spec.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (spec.as_str(), None),
        };
        if name.is_empty() || name.contains('\0') {
            return Err(format!("--env {spec}: `{name}` is not a variable name"));
        }
        match value {
            Some(v) => {
                grants.env.inherit.retain(|n| n != name);
                grants.env.set.insert(name.to_string(), v.to_string());
            }
            None => {
                grants.env.set.remove(name);
                if !grants.env.inherit.iter().any(|n| n == name) {
                    grants.env.inherit.push(name.to_string());
                }
            }
        }
    }
    if !args.args.is_empty() {
        grants.env.args = args.args.clone();
    }
    grants.env.program = Some(
        args.component
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| args.component.display().to_string()),
    );
    args.limits.apply(grants);
    Ok(())
}

async fn run_command(global: &GlobalArgs, args: &Args) -> Result<i32, Failure> {
    let mut grants = crate::setup::grants(args.manifest.as_deref(), None)
        .map_err(|e| Failure::from_runtime(&e))?;
    apply_flags(&mut grants, args).map_err(|m| Failure::bad_input("usage", m))?;
    let runtime = global.runtime_checked(false)?;
    let loaded = crate::source::load(&runtime, &args.component, &args.source, grants)
        .await
        .map_err(crate::source::LoadFailure::into_failure)?;
    let Some(function) = loaded
        .functions()
        .iter()
        .find(|f| {
            f.name == "run"
                && f.interface
                    .as_deref()
                    .is_some_and(|i| i.starts_with("wasi:cli/run@"))
        })
        .map(|f| f.qualified_name())
    else {
        let exported: Vec<String> = loaded.functions().iter().map(|f| f.short_name()).collect();
        return Err(Failure::bad_input(
            "not_a_command",
            format!(
                "{} is not a command: it exports no `wasi:cli/run` (it exports {}); call a function with `tessera call`",
                args.component.display(),
                if exported.is_empty() {
                    "nothing".to_string()
                } else {
                    exported.join(", ")
                }
            ),
        ));
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let interrupted = cancel.clone();
    let interrupt = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            interrupted.cancel();
        }
    });
    let options = CallOptions {
        terminal: Some(Terminal::process()),
        cancel: Some(cancel.clone()),
        ..CallOptions::default()
    };
    let no_args = serde_json::json!({});
    let called = if args.record {
        let store = global
            .journal()
            .map_err(|e| Failure::internal("journal", e))?;
        match tessera_journal::record_call_for(
            &store, &loaded, &function, &no_args, options, None, None,
        )
        .await
        {
            Ok((id, o)) => {
                eprintln!("recorded run {id}");
                Ok(o)
            }
            Err(tessera_journal::Error::Runtime(e)) => Err(e),
            Err(e) => return Err(Failure::internal("journal", e.to_string())),
        }
    } else {
        loaded.call_json_with(&function, &no_args, options).await
    };
    interrupt.abort();
    let outcome = called.map_err(|e| Failure::from_runtime(&e))?;
    for a in outcome
        .audit
        .iter()
        .filter(|a| a.decision == Decision::Deny)
    {
        eprintln!(
            "[tessera] denied {} {}{}",
            a.capability,
            a.target,
            a.detail
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        );
    }
    Ok(match &outcome.result {
        Ok(_) if outcome.guest_error => 1,
        Ok(_) => 0,
        Err(CallFailure::Exit(code)) => *code,
        Err(CallFailure::Cancelled) if cancel.is_cancelled() => INTERRUPTED,
        Err(e) => {
            eprintln!("error: {}: {e}", args.component.display());
            if let CallFailure::Trap {
                backtrace: Some(bt),
                ..
            } = e
            {
                eprintln!("{bt}");
            }
            ABORTED
        }
    })
}
