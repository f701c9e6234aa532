//! `cli-tool`: a `wasi:cli/run` command (a Rust binary built for
//! `wasm32-wasip2`) used by the tests of `tessera run`. The first argument
//! picks what it does:
//!
//! - `upper`: copies stdin to stdout upper-cased, a line at a time, flushing
//!   after each line (so a caller sees each line before stdin ends);
//! - `args`: prints each argument after `args`, one per line, then `argv[0]`
//!   on stderr;
//! - `env NAME`: prints the variable's value, or `NAME unset` and exits 3;
//! - `cat PATH`: prints the file; on failure, an error on stderr and exit 1;
//! - `write PATH TEXT`: writes TEXT to the file;
//! - `ls PATH`: prints the directory's entries, sorted;
//! - `exit N`: exits with status N;
//! - `fail`: returns an error from `main` (exit status 1).

use std::io::{BufRead, Write};
use std::process::ExitCode;

fn main() -> Result<ExitCode, String> {
    let args: Vec<String> = std::env::args().collect();
    let word = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    match word(1) {
        "upper" => {
            let stdin = std::io::stdin();
            let mut out = std::io::stdout();
            for line in stdin.lock().lines() {
                let line = line.map_err(|e| format!("reading stdin: {e}"))?;
                writeln!(out, "{}", line.to_uppercase()).map_err(|e| e.to_string())?;
                out.flush().map_err(|e| e.to_string())?;
            }
        }
        "args" => {
            for a in &args[2..] {
                println!("{a}");
            }
            eprintln!("argv0={}", word(0));
        }
        "env" => match std::env::var(word(2)) {
            Ok(v) => println!("{v}"),
            Err(_) => {
                println!("{} unset", word(2));
                return Ok(ExitCode::from(3));
            }
        },
        "cat" => match std::fs::read_to_string(word(2)) {
            Ok(text) => print!("{text}"),
            Err(e) => {
                eprintln!("cat: {}: {e}", word(2));
                return Ok(ExitCode::from(1));
            }
        },
        "write" => {
            if let Err(e) = std::fs::write(word(2), word(3)) {
                eprintln!("write: {}: {e}", word(2));
                return Ok(ExitCode::from(1));
            }
        }
        "ls" => {
            let mut names: Vec<String> = std::fs::read_dir(word(2))
                .map_err(|e| format!("ls: {}: {e}", word(2)))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for n in names {
                println!("{n}");
            }
        }
        "exit" => {
            let code: i32 = word(2).parse().map_err(|_| "exit: not a number".to_string())?;
            std::process::exit(code);
        }
        "fail" => return Err("failed as asked".into()),
        other => {
            eprintln!("usage: cli-tool upper|args|env|cat|write|ls|exit|fail (got `{other}`)");
            return Ok(ExitCode::from(2));
        }
    }
    Ok(ExitCode::SUCCESS)
}
