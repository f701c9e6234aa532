//! `tessera inspect`: exported functions and their JSON Schemas.

use std::path::PathBuf;

use serde_json::json;

use crate::exit;
use crate::setup::GlobalArgs;

/// Arguments of `tessera inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The component (`.wasm`): a component, or a wasm32-wasip1 core module;
    /// a file, an `https://…#sha256=<hex>` URL or an `oci://host/repo:tag`
    /// reference.
    pub component: PathBuf,
    /// Print JSON (functions with full parameter and result schemas).
    #[arg(long)]
    pub json: bool,
    /// Where to fetch the component from.
    #[command(flatten)]
    pub source: crate::source::SourceArgs,
}

/// Runs the subcommand and returns the exit code.
pub async fn run(global: &GlobalArgs, args: Args) -> i32 {
    let runtime = match global.open_runtime(false) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let loaded =
        match crate::source::load(&runtime, &args.component, &args.source, None, None).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: {e}");
                return e.code();
            }
        };
    if args.json {
        let doc = json!({
            "component": args.component.display().to_string(),
            "digest": loaded.digest(),
            "adapted_from_core_module": loaded.adapted(),
            "functions": loaded.functions().iter().map(|f| f.to_json()).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return exit::OK;
    }
    println!("{}", args.component.display());
    println!("  digest: {}", loaded.digest());
    if loaded.adapted() {
        println!("  core module adapted with the WASI preview1 adapter");
    }
    println!();
    for f in loaded.functions() {
        println!("{}", f.signature());
        if let Some(d) = &f.docs {
            for line in d.lines() {
                println!("    {line}");
            }
        }
        if let Some(n) = &f.not_callable {
            println!("    (not callable from JSON: {n})");
        }
    }
    println!();
    println!(
        "Schemas: tessera inspect {} --json",
        args.component.display()
    );
    exit::OK
}
