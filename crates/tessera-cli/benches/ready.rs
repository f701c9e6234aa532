//! How soon `tessera serve --stdio` is useful to an MCP host: the time from
//! spawning the process to the `initialize` answer, to the first
//! `tools/list` answer, and to the moment every registered component's
//! tools are listed (after the `notifications/tools/list_changed` of the
//! components that compiled in the background).
//!
//! Scenarios, each on its own data directory and compile cache:
//!
//! - **6 cold**: six different components, none in the compile cache.
//! - **50 cached**: fifty distinct components, all in the compile cache.
//! - **50 cached + 6 cold**: both at once.
//!
//! Baselines from the same run: the bare process (`tessera --version`,
//! spawn to exit), and, for the cold scenarios, the time until every tool
//! is listed — when a server that compiles everything before answering
//! would have answered `initialize`.
//!
//! The client is a minimal JSON-RPC client (one message a line) in this
//! process; rounds of the scenarios are interleaved. Each cold round gets
//! an empty compile cache.
//!
//! Run: `cargo bench -p tessera-cli --bench ready` (`BENCH_ROUNDS` sets the
//! rounds, default 7).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tessera_server::registry::Registry;
use tessera_server::{Server, ServerConfig};
use tessera_test_support::component;

/// The six cold components: different real components.
const COLD: [&str; 6] = [
    "hello",
    "spin",
    "http-fetch",
    "fs-tool",
    "net-escape",
    "p1-command",
];

/// `bytes` with a custom section appended: the same code, a distinct
/// component (its own digest, compiled and cached on its own).
fn distinct(bytes: &[u8], tag: usize) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"tessera-bench";
    let mut body = Vec::new();
    leb(name.len(), &mut body);
    body.extend_from_slice(name);
    body.extend_from_slice(&tag.to_le_bytes());
    let mut out = bytes.to_vec();
    out.push(0);
    leb(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

/// Registers fifty distinct components (the example components, each copy
/// made distinct), half with manifests, and the six cold ones if asked.
/// Returns how many components are registered.
fn register(data: &Path, fifty: bool, cold: bool, round: usize) -> usize {
    let registry = Registry::open(data).unwrap();
    let files = [
        "hello",
        "spin",
        "http-fetch",
        "fs-tool",
        "net-escape",
        "memory-hog",
        "deep-recursion",
        "fs-escape",
        "p1-command",
    ];
    let mut n = 0;
    if fifty {
        for i in 0..50 {
            let file = files[i % files.len()];
            let bytes = distinct(&std::fs::read(component(file)).unwrap(), i);
            let manifest = (i % 2 == 0).then(|| {
                (
                    format!("[limits]\ntimeout_ms = {}\n", 1000 + i),
                    data.to_path_buf(),
                )
            });
            registry
                .add(&format!("c{i:02}-{file}"), &bytes, manifest, file)
                .unwrap();
            n += 1;
        }
    }
    if cold {
        for (i, file) in COLD.iter().enumerate() {
            // Distinct per round too, so nothing of an earlier round helps.
            let bytes = distinct(
                &std::fs::read(component(file)).unwrap(),
                1_000_000 + round * 100 + i,
            );
            registry
                .add(&format!("cold{i}-{file}"), &bytes, None, file)
                .unwrap();
            n += 1;
        }
    }
    n
}

/// Compiles everything registered in `data` into `cache` (in this process,
/// with the settings `tessera serve` uses).
fn warm(rt: &tokio::runtime::Runtime, data: &Path, cache: &Path) {
    rt.block_on(async {
        let mut config = ServerConfig::new(data.to_path_buf());
        config.cache_dir = Some(cache.to_path_buf());
        let server = Server::open(config).await.unwrap();
        server.loaded().await;
        assert!(server.load_failures().is_empty());
        server.journal.flush();
    });
}

struct Ready {
    initialize: Duration,
    listed: Duration,
    listed_components: usize,
    all: Duration,
}

/// The client's side of the pipes.
struct Conn {
    stdin: std::process::ChildStdin,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    /// A `list_changed` arrived that no `tools/list` has followed yet.
    changed: bool,
}

impl Conn {
    fn send(&mut self, v: Value) {
        let mut line = v.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).unwrap();
        self.stdin.flush().unwrap();
    }

    fn next(&mut self) -> Value {
        let line = self.lines.next().expect("server closed stdout").unwrap();
        serde_json::from_str(&line).unwrap()
    }

    /// Reads up to the answer to `id`, noting a `list_changed` on the way.
    fn answer(&mut self, id: u64) -> Value {
        loop {
            let v = self.next();
            if v["id"] == json!(id) {
                return v;
            }
            if v["method"] == "notifications/tools/list_changed" {
                self.changed = true;
            }
        }
    }

    /// Returns at once if a `list_changed` is unanswered, else reads up to
    /// the next one.
    fn list_changed(&mut self) {
        if !std::mem::take(&mut self.changed) {
            while self.next()["method"] != "notifications/tools/list_changed" {}
        }
    }
}

fn components_listed(answer: &Value) -> usize {
    let mut names: Vec<&str> = answer["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("tools/list: {answer}"))
        .iter()
        .filter_map(|t| t["name"].as_str()?.split("__").next())
        .collect();
    names.sort();
    names.dedup();
    names.len()
}

/// One run of `tessera serve --stdio` until all `expected` components are
/// listed.
fn run(data: &Path, cache: &Path, expected: usize) -> Ready {
    let t = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("--data")
        .arg(data)
        .arg("--cache-dir")
        .arg(cache)
        .args(["serve", "--stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut c = Conn {
        stdin: child.stdin.take().unwrap(),
        lines: BufReader::new(child.stdout.take().unwrap()).lines(),
        changed: false,
    };
    c.send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "ready-bench", "version": "0"}}}),
    );
    let init = c.answer(1);
    let initialize = t.elapsed();
    assert_eq!(init["result"]["serverInfo"]["name"], "tessera", "{init}");
    c.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    c.send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
    let list = c.answer(2);
    let listed = t.elapsed();
    let listed_components = components_listed(&list);
    let mut seen = listed_components;
    let mut id = 3;
    while seen < expected {
        c.list_changed();
        c.send(json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"}));
        seen = components_listed(&c.answer(id));
        id += 1;
    }
    let all = t.elapsed();
    drop(c);
    let _ = child.wait();
    Ready {
        initialize,
        listed,
        listed_components,
        all,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // 50 cached: one data directory and cache, compiled once.
    let cached_data = tempfile::tempdir().unwrap();
    let cached_cache = tempfile::tempdir().unwrap();
    let fifty = register(cached_data.path(), true, false, 0);
    warm(&rt, cached_data.path(), cached_cache.path());

    let (mut bare, mut cold, mut cached, mut mixed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let t = Instant::now();
        let ok = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok);
        bare.push(ms(t.elapsed()));

        cached.push(run(cached_data.path(), cached_cache.path(), fifty));

        let data = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let n = register(data.path(), false, true, round);
        cold.push(run(data.path(), cache.path(), n));

        // 50 cached + 6 cold: the fifty's cache entries, copied.
        let data = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let n = register(data.path(), true, true, round);
        copy_dir(cached_cache.path(), cache.path());
        mixed.push(run(data.path(), cache.path(), n));
    }

    println!("tessera serve --stdio: spawn → answer ({rounds} rounds, medians)\n");
    println!(
        "  bare process (tessera --version, spawn to exit)  {:>8.1} ms",
        median(bare)
    );
    println!(
        "\n  {:<22} {:>12} {:>14} {:>10} {:>18}",
        "scenario", "initialize", "tools/list", "listed", "all tools listed"
    );
    for (name, runs, expected) in [
        ("6 cold", &cold, COLD.len()),
        ("50 cached", &cached, fifty),
        ("50 cached + 6 cold", &mixed, fifty + COLD.len()),
    ] {
        let listed: Vec<usize> = runs.iter().map(|r| r.listed_components).collect();
        println!(
            "  {name:<22} {:>9.1} ms {:>11.1} ms {:>4}-{:<2}/{expected:<2} {:>15.1} ms",
            median(runs.iter().map(|r| ms(r.initialize)).collect()),
            median(runs.iter().map(|r| ms(r.listed)).collect()),
            listed.iter().min().unwrap(),
            listed.iter().max().unwrap(),
            median(runs.iter().map(|r| ms(r.all)).collect()),
        );
    }
    println!(
        "\n  (\"listed\": components whose tools the first tools/list held, min-max over rounds)"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}
