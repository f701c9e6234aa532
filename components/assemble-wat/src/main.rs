//! `assemble-wat`: native build tool that turns a guest written in the
//! WebAssembly text format (a core module or a component) into its binary
//! form, and refuses it unless it validates.
//!
//! Some test guests need a shape no compiler produces on request, such as
//! a component whose instance has two linear memories (`two-memories`);
//! they are written by hand in text and assembled here.
//!
//! Usage: `assemble-wat <input.wat> <output.wasm>`

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        bail!("usage: assemble-wat <input.wat> <output.wasm>");
    };
    let bytes = wat::parse_file(input).with_context(|| format!("assembling {input}"))?;
    wasmparser::Validator::new()
        .validate_all(&bytes)
        .with_context(|| format!("{input} does not validate"))?;
    std::fs::write(output, &bytes).with_context(|| format!("writing {output}"))?;
    Ok(())
}
