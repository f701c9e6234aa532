//! `tessera exec`: run Python or JavaScript in a sandbox — a fresh
//! interpreter instance per call, nothing granted unless a manifest
//! grants it, fuel, deadline and memory limits as for any component.

use std::io::Write;
use std::path::PathBuf;

use tessera_runtime::CallOptions;
use tessera_sandbox::{ExecError, Execution, Language, Sandboxes};

use crate::exit;
use crate::failure::{Failure, Outcome, finish};
use crate::setup::GlobalArgs;

/// Arguments of `tessera exec`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The language: `python` (`py`) or `javascript` (`js`).
    pub language: String,
    /// The code (`-` reads it from stdin).
    pub code: String,
    /// A manifest of grants and limits for the sandbox (TOML). Without one,
    /// nothing is granted: no files, network or environment.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Limits over the manifest's.
    #[command(flatten)]
    pub limits: crate::setup::LimitArgs,
    /// The directory holding `py-sandbox.wasm` and `js-sandbox.wasm`
    /// (default: `$TESSERA_SANDBOXES`, then beside the executable, then the
    /// source checkout's `components/`).
    #[arg(long, value_name = "DIR")]
    pub sandboxes: Option<PathBuf>,
    /// Print one JSON object: stdout, stderr, value, text, error, fuel,
    /// memory, duration.
    #[arg(long)]
    pub json: bool,
    /// Record the run in the journal (`tessera replay <id>`); the run id is
    /// printed on stderr.
    #[arg(long)]
    pub record: bool,
    /// Run in the named session: the interpreter keeps what earlier runs
    /// of the session left (names, imports, closures). Created on first
    /// use, with the grants of `--manifest` and the limit flags; kept in
    /// the journal and rebuilt from it by each later `exec` (see
    /// `tessera sessions`). Every run of a session is recorded.
    #[arg(long, value_name = "NAME")]
    pub session: Option<String>,
}

/// Runs the subcommand and returns the exit code.
pub async fn run(global: &GlobalArgs, args: Args) -> i32 {
    finish(exec(global, &args).await, args.json)
}

fn read_code(args: &Args) -> Result<String, Failure> {
    if args.code != "-" {
        return Ok(args.code.clone());
    }
    let mut code = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut code)
        .map_err(|e| Failure::bad_input("code", format!("cannot read the code from stdin: {e}")))?;
    Ok(code)
}

async fn exec(global: &GlobalArgs, args: &Args) -> Outcome {
    let language: Language = args
        .language
        .parse()
        .map_err(|e: tessera_sandbox::SandboxError| Failure::bad_input("usage", e.to_string()))?;
    let code = read_code(args)?;
    let mut grants = crate::setup::grants(args.manifest.as_deref(), None)
        .map_err(|e| Failure::from_runtime(&e))?;
    args.limits.apply(&mut grants);
    let chosen = args.manifest.is_some() || args.limits.any();
    let runtime = global.runtime_checked(false)?;
    let sandboxes = Sandboxes::new(
        runtime,
        tessera_sandbox::search_path(args.sandboxes.as_deref()),
        grants,
    );
    if let Some(name) = &args.session {
        let journal = global
            .journal()
            .map_err(|e| Failure::internal("journal", e))?;
        return exec_in_session(&sandboxes, &journal, name, language, &code, chosen, args).await;
    }
    let journal = if args.record {
        Some(
            global
                .journal()
                .map_err(|e| Failure::internal("journal", e))?,
        )
    } else {
        None
    };
    let execution = sandboxes
        .exec(language, &code, CallOptions::default(), journal.as_ref())
        .await
        .map_err(sandbox_failure)?;
    if let Some(id) = &execution.run_id {
        eprintln!("recorded run {id}");
    }
    Ok(report(&execution, args.json))
}

/// Runs `code` in the stored session `name` (created with the grants given,
/// if it does not exist).
async fn exec_in_session(
    sandboxes: &Sandboxes,
    journal: &std::sync::Arc<tessera_journal::JournalStore>,
    name: &str,
    language: Language,
    code: &str,
    chosen: bool,
    args: &Args,
) -> Outcome {
    let grants = chosen.then(|| sandboxes.grants().clone());
    let exists = journal
        .find_session(name)
        .map_err(|e| crate::failure::journal_failure(&e))?
        .is_some();
    if !exists && let Some(guest) = writable_mount(sandboxes.grants()) {
        return Err(Failure::bad_input(
            "session_not_rebuildable",
            format!(
                "a session from the command line is rebuilt from the journal by each exec, and re-executing its runs would write through the writable mount {guest} again: mount it read-only, or use a server's sessions"
            ),
        )
        .with("session", name));
    }
    let mut session = sandboxes
        .open_session(journal, name, language, grants, None)
        .await
        .map_err(|e| sandbox_failure(e).with("session", name))?;
    let execution = session
        .exec(code, CallOptions::default(), None)
        .await
        .map_err(|e| sandbox_failure(e).with("session", name))?;
    Ok(report(&execution, args.json))
}

fn writable_mount(grants: &tessera_runtime::Grants) -> Option<String> {
    grants
        .files
        .mounts
        .iter()
        .find(|m| m.mode == tessera_runtime::manifest::MountMode::ReadWrite)
        .map(|m| m.guest.clone())
}

/// Prints the execution and returns the exit code.
fn report(execution: &Execution, json: bool) -> i32 {
    let code = exit_code(execution);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&execution.to_json()).unwrap_or_default()
        );
    } else {
        print_human(execution);
    }
    code
}

pub(crate) fn sandbox_failure(e: tessera_sandbox::SandboxError) -> Failure {
    use tessera_sandbox::SandboxError as E;
    match e {
        E::Runtime { source, .. } => Failure::from_runtime(&source),
        E::UnknownLanguage(_) => Failure::bad_input("usage", e.to_string()),
        E::NotFound { .. } => Failure::bad_input("sandbox_not_found", e.to_string()),
        E::Session(j) => crate::failure::journal_failure(&j),
        E::SessionLanguage { .. } => Failure::bad_input("session_language", e.to_string()),
        E::SessionGrants { .. } => Failure::bad_input("session_grants", e.to_string()),
        other => Failure::internal("sandbox", other.to_string()),
    }
}

fn exit_code(e: &Execution) -> i32 {
    match &e.error {
        None => exit::OK,
        Some(ExecError::Raised { .. } | ExecError::Exit { .. }) => exit::GUEST_ERROR,
        Some(ExecError::Diverged { .. }) => exit::DIVERGED,
        Some(_) => exit::TRAP,
    }
}

/// What the code printed, as it printed it; then the value (like a REPL)
/// on stdout, or the error with its traceback on stderr.
fn print_human(e: &Execution) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(e.stdout.as_bytes());
    if let Some(text) = &e.text {
        let _ = writeln!(out, "{text}");
    }
    let _ = out.flush();
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(e.stderr.as_bytes());
    match &e.error {
        Some(ExecError::Raised { traceback, .. }) if !traceback.is_empty() => {
            let _ = write!(err, "{traceback}");
            if !traceback.ends_with('\n') {
                let _ = writeln!(err);
            }
        }
        Some(other) => {
            let _ = writeln!(err, "error: {other}");
        }
        None => {}
    }
}
