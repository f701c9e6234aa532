//! Fresh-sandbox latency: `print(1+1)` in Python and `console.log(1+1)` in
//! JavaScript, each in a new instance, through [`Sandboxes::exec`] (the
//! whole path: arguments, instantiation, the run, the result), against a
//! native `python3 -c` and `node -e` process measured in the same run.
//!
//! `cargo bench -p tessera-sandbox --bench sandbox` (BENCH_RUNS: runs per
//! language, default 300; BENCH_NATIVE_RUNS: native processes, default 30).

use std::time::{Duration, Instant};

use tessera_runtime::{CallOptions, Grants, Runtime, RuntimeConfig};
use tessera_sandbox::{Language, Sandboxes};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(what: &str, mut times: Vec<Duration>) -> Duration {
    times.sort();
    let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
    println!(
        "{what:<44} p50 {:>9.3} ms   p99 {:>9.3} ms   ({} runs)",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        times.len()
    );
    p50
}

fn native(program: &str, args: &[&str], runs: usize) -> Option<Vec<Duration>> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let out = std::process::Command::new(program)
            .args(args)
            .output()
            .ok()?;
        times.push(start.elapsed());
        assert!(out.status.success());
    }
    Some(times)
}

fn main() {
    let runs = env("BENCH_RUNS", 300);
    let native_runs = env("BENCH_NATIVE_RUNS", 30);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cache = tempfile::tempdir().expect("temporary directory");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let sandboxes = Sandboxes::new(runtime, vec![root.join("components")], Grants::deny_all());
    for (language, code, program, args) in [
        (
            Language::Python,
            "print(1+1)",
            "python3",
            ["-c", "print(1+1)"],
        ),
        (
            Language::JavaScript,
            "console.log(1+1)",
            "node",
            ["-e", "console.log(1+1)"],
        ),
    ] {
        let times = rt.block_on(async {
            // Loaded and compiled once, then warmed up.
            for _ in 0..20 {
                let e = sandboxes
                    .exec(language, code, CallOptions::default(), None)
                    .await
                    .expect("exec");
                assert_eq!(e.stdout, "2\n");
            }
            let mut times = Vec::with_capacity(runs);
            for _ in 0..runs {
                let start = Instant::now();
                let e = sandboxes
                    .exec(language, code, CallOptions::default(), None)
                    .await
                    .expect("exec");
                times.push(start.elapsed());
                assert!(e.ok);
            }
            times
        });
        let ours = report(
            &format!("{language} sandbox, fresh instance: {code}"),
            times,
        );
        // The system's interpreter, not a version manager's shim script.
        let program = ["/usr/bin/", "/usr/local/bin/"]
            .iter()
            .map(|d| format!("{d}{program}"))
            .find(|p| std::path::Path::new(p).is_file())
            .unwrap_or_else(|| program.to_string());
        match native(&program, &args, native_runs) {
            Some(t) => {
                let theirs = report(&format!("native {program} {}", args.join(" ")), t);
                println!(
                    "{:<44} {:.1}x faster than the native process",
                    "",
                    theirs.as_secs_f64() / ours.as_secs_f64()
                );
            }
            None => println!("native {program}: not found"),
        }
    }
}
