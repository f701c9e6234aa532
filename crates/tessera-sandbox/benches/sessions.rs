//! Sessions: how many live Python (and JavaScript) sessions fit in a GiB,
//! and what forking a session that holds 50 MB of objects costs.
//!
//! `cargo bench -p tessera-sandbox --bench sessions`
//! (BENCH_SESSIONS: live sessions opened per language, default 400;
//! BENCH_FORKS: forks timed, default 5; BENCH_FORK_MB: the size of the
//! forked session's objects, default 50).
//!
//! Memory is the process's proportional set size (PSS, from
//! `/proc/self/smaps_rollup`) before and after the sessions are opened,
//! divided by their number; the baseline is the PSS of idle native
//! `python3` and `node` processes measured in the same run.
//!
//! A fork is a new session record sharing the history, and the forked
//! session is ready once its instance has re-executed that history with
//! every host interaction answered from the journal. Both are timed, with
//! the baseline of building the same objects from scratch in the sandbox
//! (a fresh session running the same code) and in a native `python3`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_journal::JournalStore;
use tessera_runtime::{CallOptions, Grants, Runtime, RuntimeConfig};
use tessera_sandbox::{Language, Sandboxes};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// PSS of a process in KiB.
fn pss_kib(pid: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// PSS of an idle native interpreter process, KiB.
fn native_pss(program: &str, args: &[&str]) -> Option<u64> {
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(700));
    let pss = pss_kib(&child.id().to_string());
    let _ = child.kill();
    let _ = child.wait();
    Some(pss)
}

fn system(program: &str) -> String {
    ["/usr/bin/", "/usr/local/bin/"]
        .iter()
        .map(|d| format!("{d}{program}"))
        .find(|p| std::path::Path::new(p).is_file())
        .unwrap_or_else(|| program.to_string())
}

fn main() {
    let n = env("BENCH_SESSIONS", 400);
    let forks = env("BENCH_FORKS", 5);
    let fork_mb = env("BENCH_FORK_MB", 50);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cache = tempfile::tempdir().expect("temporary directory");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        max_instances: (n as u32 + 16).max(1000),
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let mut grants = Grants::deny_all();
    grants.limits.max_concurrent = n as u32 + 16;
    grants.limits.fuel = 50_000_000_000;
    grants.limits.timeout_ms = 120_000;
    let sandboxes = Sandboxes::new(runtime, vec![root.join("components")], grants);

    println!("live sessions ({n} per language, each after one run of `x = 1`)");
    for (language, program, args) in [
        (
            Language::Python,
            "python3",
            &["-c", "import sys; sys.stdin.read()"][..],
        ),
        (
            Language::JavaScript,
            "node",
            &["-e", "process.stdin.resume()"][..],
        ),
    ] {
        let per_kib = rt.block_on(async {
            // Loaded, compiled and warmed before the baseline is taken.
            let mut warm = sandboxes.session(language).await.expect("session");
            warm.exec("x = 1", CallOptions::default())
                .await
                .expect("warm-up");
            drop(warm);
            let before = pss_kib("self");
            let mut live = Vec::with_capacity(n);
            for _ in 0..n {
                let mut s = sandboxes.session(language).await.expect("session");
                let e = s.exec("x = 1", CallOptions::default()).await.expect("run");
                assert!(e.ok, "{e:?}");
                live.push(s);
            }
            let after = pss_kib("self");
            let per = (after.saturating_sub(before)) as f64 / n as f64;
            drop(live);
            per
        });
        let per_gib = (1u64 << 20) as f64 / per_kib;
        print!(
            "  {language:<11} {:>8.0} KiB PSS per session   {:>6.0} sessions/GiB",
            per_kib, per_gib
        );
        match native_pss(&system(program), args) {
            Some(k) => println!(
                "   | native {program}: {k} KiB, {:.0}/GiB ({:.1}x as many in Tessera)",
                (1u64 << 20) as f64 / k as f64,
                per_gib / ((1u64 << 20) as f64 / k as f64)
            ),
            None => println!("   | native {program}: not found"),
        }
    }

    println!("fork of a Python session holding {fork_mb} MB of objects ({forks} runs, medians)");
    let data = tempfile::tempdir().expect("temporary directory");
    let journal = Arc::new(JournalStore::open(data.path()).expect("journal"));
    // ~100 bytes per string object and its list slot: MB * 10,000 of them.
    let build = format!(
        "data = [('item %d ' % i) * 6 for i in range({})]\ndef counter():\n    n = 0\n    while True:\n        n += 1\n        yield n\ng = counter(); next(g)",
        fork_mb * 10_000
    );
    let (grown, source) = rt.block_on(async {
        let mut s = sandboxes
            .open_session(&journal, "big", Language::Python, None, None)
            .await
            .expect("session");
        let before = s.memory_bytes();
        let e = s
            .exec(&build, CallOptions::default(), None)
            .await
            .expect("build");
        assert!(e.ok, "{e:?}");
        (s.memory_bytes() - before, s)
    });
    drop(source);
    println!(
        "  the session's linear memory grew by {:.1} MB",
        grown as f64 / 1e6
    );
    let (mut record, mut ready, mut scratch) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..forks {
        let name = format!("fork{i}");
        let start = Instant::now();
        journal
            .fork_session("big", &name, None, None)
            .expect("fork");
        record.push(start.elapsed());
        let start = Instant::now();
        rt.block_on(async {
            let mut f = sandboxes
                .open_session(&journal, &name, Language::Python, None, None)
                .await
                .expect("open fork");
            let e = f
                .exec("len(data), next(g)", CallOptions::default(), None)
                .await
                .expect("use fork");
            assert_eq!(e.value, Some(serde_json::json!([fork_mb * 10_000, 2])));
        });
        ready.push(start.elapsed());
        let start = Instant::now();
        rt.block_on(async {
            let mut s = sandboxes.session(Language::Python).await.expect("session");
            let e = s.exec(&build, CallOptions::default()).await.expect("build");
            assert!(e.ok);
        });
        scratch.push(start.elapsed());
    }
    let native = {
        let py = system("python3");
        let code = format!("{build}\nprint(len(data))");
        let mut t = Vec::new();
        for _ in 0..forks {
            let start = Instant::now();
            let ok = std::process::Command::new(&py)
                .args(["-c", &code])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                t.push(start.elapsed());
            }
        }
        (!t.is_empty()).then(|| median(t))
    };
    println!(
        "  fork (new record sharing the history)      {:>9.3} ms",
        ms(median(record))
    );
    let ready = median(ready);
    println!(
        "  fork ready (history re-executed) + a run   {:>9.3} ms",
        ms(ready)
    );
    let scratch = median(scratch);
    println!(
        "  baseline: the objects built afresh         {:>9.3} ms   ({:.2}x of the fork)",
        ms(scratch),
        scratch.as_secs_f64() / ready.as_secs_f64()
    );
    match native {
        Some(t) => println!(
            "  baseline: native python3 -c, same code     {:>9.3} ms",
            ms(t)
        ),
        None => println!("  baseline: native python3 not found"),
    }
}
