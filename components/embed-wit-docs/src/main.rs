//! `embed-wit-docs`: native build tool that embeds the `///` doc comments
//! of a component's WIT sources into the built component (see the
//! `tessera-witdocs` crate, which does the work).
//!
//! Usage: `embed-wit-docs <component.wasm> <wit-dir> [<component.wasm> <wit-dir>]...`
//! Each component is rewritten in place; sections from an earlier run are
//! replaced.

use std::path::Path;

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || !args.len().is_multiple_of(2) {
        bail!("usage: embed-wit-docs <component.wasm> <wit-dir> [<component.wasm> <wit-dir>]...");
    }
    for pair in args.chunks(2) {
        let (wasm, wit) = (Path::new(&pair[0]), Path::new(&pair[1]));
        tessera_witdocs::embed(wasm, wit)
            .with_context(|| format!("embedding docs into {}", wasm.display()))?;
    }
    Ok(())
}
