//! `tessera`: load WebAssembly components, inspect their typed interfaces as
//! JSON Schema, and call them from JSON under deny-by-default grants.

mod cmd;
mod exit;
mod setup;

use clap::{Parser, Subcommand};

/// Tessera: a WebAssembly runtime for agent tools.
///
/// Every component is sandboxed: it gets only what its manifest grants
/// (files, outbound HTTP hosts, environment variables) and runs under fuel,
/// wall-clock, memory, concurrency and output limits.
#[derive(Debug, Parser)]
#[command(name = "tessera", version, propagate_version = true)]
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
    Call(cmd::call::Args),
}

fn main() {
    let cli = Cli::parse();
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
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Inspect(args) => cmd::inspect::run(&cli.global, args).await,
            Command::Call(args) => cmd::call::run(&cli.global, args).await,
        }
    });
    std::process::exit(code);
}
