//! `tessera inspect`: exported functions and their JSON Schemas, and the
//! imports Tessera does not provide. A component that compiles is
//! described even when it cannot link: its exports are listed, its
//! unresolved imports named, and the exit code says it cannot load.

use std::path::PathBuf;

use serde_json::json;

use crate::exit;
use crate::failure::{Failure, Outcome, finish, unresolved_json};
use crate::setup::{self, GlobalArgs};

/// Arguments of `tessera inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The component (`.wasm`): a component, or a wasm32-wasip1 core module;
    /// a file, an `https://…#sha256=<hex>` URL or an `oci://host/repo:tag`
    /// reference.
    pub component: PathBuf,
    /// Print JSON (functions with full parameter and result schemas,
    /// imports, unresolved imports); failures are JSON too.
    #[arg(long)]
    pub json: bool,
    /// Where to fetch the component from.
    #[command(flatten)]
    pub source: crate::source::SourceArgs,
}

/// Runs the subcommand and returns the exit code.
pub async fn run(global: &GlobalArgs, args: Args) -> i32 {
    finish(inspect(global, &args).await, args.json)
}

async fn inspect(global: &GlobalArgs, args: &Args) -> Outcome {
    let runtime = global.runtime_checked(false)?;
    let fetched = crate::source::resolve(&args.component, &args.source)
        .await
        .map_err(crate::source::Failure::into_failure)?;
    let prepared = runtime
        .prepare(fetched.bytes, &fetched.origin)
        .map_err(|e| Failure::from_runtime(&e))?;
    let inspection = setup::inspect_prepared(&runtime, prepared, &fetched.origin)
        .await
        .map_err(|e| Failure::from_runtime(&e))?;
    let failure = inspection.link_failure().map(|e| Failure::from_runtime(&e));
    if args.json {
        let mut doc = json!({
            "ok": failure.is_none(),
            "component": args.component.display().to_string(),
            "digest": inspection.digest,
            "adapted_from_core_module": inspection.adapted,
            "links": inspection.links(),
            "functions": inspection.functions.iter().map(|f| f.to_json()).collect::<Vec<_>>(),
            "imports": inspection.imports,
            "unresolved_imports": unresolved_json(&inspection.unresolved),
        });
        if let Some(f) = &failure {
            doc["error"] = f.to_json()["error"].clone();
        }
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(failure.map_or(exit::OK, |f| f.code));
    }
    println!("{}", args.component.display());
    println!("  digest: {}", inspection.digest);
    if inspection.adapted {
        println!("  core module adapted with the WASI preview1 adapter");
    }
    println!();
    for f in &inspection.functions {
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
    if inspection.functions.is_empty() {
        println!("(no exported functions)");
    }
    if !inspection.imports.is_empty() {
        println!();
        println!("imports:");
        for i in &inspection.imports {
            let missing = inspection.unresolved.iter().any(|u| &u.import == i);
            println!("  {i}{}", if missing { "  (NOT PROVIDED)" } else { "" });
        }
    }
    if !inspection.unresolved.is_empty() {
        println!();
        println!("unresolved imports (the component cannot be loaded):");
        for u in &inspection.unresolved {
            println!("  {u}");
        }
    }
    println!();
    println!(
        "Schemas: tessera inspect {} --json",
        args.component.display()
    );
    Ok(match failure {
        None => exit::OK,
        Some(f) => f.emit(false),
    })
}
