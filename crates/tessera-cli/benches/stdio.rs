//! MCP over stdio: the round trip of `tools/call` for `hello.greet`, with a
//! minimal JSON-RPC client (no MCP SDK), against a same-run baseline.
//!
//! The bench spawns `tessera serve --stdio` on a fresh data directory with
//! `hello` registered, sends `initialize` and `notifications/initialized`,
//! then sends `tools/call` sequentially, one line at a time, and times each
//! round trip until the answer's line is read. The baseline is the same
//! client against `cat`, which echoes each line back: the cost of the pipes
//! and of the client itself.
//!
//! Rounds are interleaved (rotating which peer goes first), so every peer
//! sees the same machine noise. `TESSERA_BASELINE_BIN=<path>[:<path>…]`
//! adds other builds of `tessera` as peers, to compare builds in one run.
//!
//! Run: `cargo bench -p tessera-cli --bench stdio` (`BENCH_CALLS` sets the
//! calls per round, default 2000; `BENCH_ROUNDS` the rounds, default 5).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process spoken to in lines.
struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    line: String,
}

impl Peer {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Self {
            child,
            stdin,
            stdout,
            line: String::new(),
        }
    }

    /// Writes one line and flushes it.
    fn send(&mut self, line: &str) {
        self.stdin.write_all(line.as_bytes()).expect("write");
        self.stdin.write_all(b"\n").expect("write");
        self.stdin.flush().expect("flush");
    }

    /// Reads lines until one contains `needle`; returns it.
    fn until(&mut self, needle: &str) -> &str {
        loop {
            self.line.clear();
            let n = self.stdout.read_line(&mut self.line).expect("read");
            assert!(n > 0, "the peer closed its stdout");
            if self.line.contains(needle) {
                return &self.line;
            }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn summarize(name: &str, mut v: Vec<Duration>) -> Duration {
    v.sort();
    let p50 = percentile(&v, 0.5);
    println!(
        "  {name:<24} n={:<6} p50={:>7.1} µs  p90={:>7.1} µs  p99={:>7.1} µs  max={:>8.1} µs",
        v.len(),
        us(p50),
        us(percentile(&v, 0.9)),
        us(percentile(&v, 0.99)),
        us(*v.last().unwrap_or(&Duration::ZERO)),
    );
    p50
}

fn call_line(id: u64) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"hello__greet","arguments":{{"name":"Ada"}}}}}}"#
    )
}

/// One round of `n` sequential calls; returns each round trip.
fn round(peer: &mut Peer, next_id: &mut u64, n: usize, echo: bool) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        *next_id += 1;
        let line = call_line(*next_id);
        let want = format!(r#""id":{}"#, *next_id);
        let t = Instant::now();
        peer.send(&line);
        let answer = peer.until(&want);
        let d = t.elapsed();
        assert!(
            echo || answer.contains("Hello, Ada!"),
            "unexpected answer: {answer}"
        );
        out.push(d);
    }
    out
}

fn main() {
    let calls: usize = std::env::var("BENCH_CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let data = tempfile::tempdir().expect("tempdir");
    let registry = tessera_server::registry::Registry::open(data.path()).expect("registry");
    let bytes = std::fs::read(tessera_test_support::component("hello")).expect("hello.wasm");
    registry
        .add("hello", &bytes, None, "hello")
        .expect("register hello");

    // Each server gets its own data directory (one journal per process).
    let serve = |bin: &std::ffi::OsStr| {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(
            &data.path().join("components"),
            &dir.path().join("components"),
        );
        let mut cmd = Command::new(bin);
        cmd.arg("--data").arg(dir.path()).args(["serve", "--stdio"]);
        let mut peer = Peer::spawn(cmd);
        peer.send(
            r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"0"}}}"#,
        );
        peer.until(r#""id":0"#);
        peer.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        // `initialize` is answered before a component that is not in the
        // compile cache is compiled: wait until `hello` is served.
        for id in 1_000_000u64.. {
            peer.send(&format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list"}}"#
            ));
            if peer
                .until(&format!(r#""id":{id}"#))
                .contains("hello__greet")
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        (peer, dir)
    };
    // Peers: this build, optionally another build of `tessera` to compare
    // with (`TESSERA_BASELINE_BIN`), and `cat`.
    let mut peers: Vec<(String, Peer, bool, Option<tempfile::TempDir>)> = Vec::new();
    let (p, d) = serve(std::ffi::OsStr::new(env!("CARGO_BIN_EXE_tessera")));
    peers.push(("tessera serve --stdio".into(), p, false, Some(d)));
    if let Some(bins) = std::env::var_os("TESSERA_BASELINE_BIN") {
        for bin in std::env::split_paths(&bins) {
            let (p, d) = serve(bin.as_os_str());
            let name = bin
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            peers.push((name, p, false, Some(d)));
        }
    }
    peers.push((
        "client + pipes (cat)".into(),
        Peer::spawn(Command::new("cat")),
        true,
        None,
    ));
    let mut ids = vec![0u64; peers.len()];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); peers.len()];
    // Warm-up.
    for (i, (_, peer, echo, _)) in peers.iter_mut().enumerate() {
        round(peer, &mut ids[i], 200, *echo);
    }
    for r in 0..rounds {
        // Rotate which peer goes first.
        for k in 0..peers.len() {
            let i = (k + r) % peers.len();
            let (_, peer, echo, _) = &mut peers[i];
            times[i].extend(round(peer, &mut ids[i], calls, *echo));
        }
    }
    println!(
        "MCP stdio round trip, tools/call hello__greet ({rounds} interleaved rounds of {calls}):"
    );
    let mut p50s = Vec::new();
    for (i, (name, ..)) in peers.iter().enumerate() {
        p50s.push(summarize(name, std::mem::take(&mut times[i])));
    }
    let client = *p50s.last().unwrap_or(&Duration::ZERO);
    println!(
        "  tessera minus the client's own round trip, p50: {:.1} µs",
        us(p50s[0]) - us(client)
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}
