//! The server under load, each figure against a baseline from the same run.
//!
//! 1. `hello.greet` latency, one caller at a time, over three paths:
//!    in-process (`Server::call`: the registry's active version, journaled;
//!    the baseline), the HTTP API (`POST /v1/components/hello/call/greet`
//!    on a keep-alive connection) and MCP over streamable HTTP (`tools/call`
//!    in a session). Rounds are interleaved so all three see the same noise.
//! 2. Throughput with 8 concurrent callers on each path.
//! 3. Throughput of HTTP calls before, during and after hot swaps (the
//!    active version switched every 100 ms), and the failed calls.
//! 4. Server start with 50 registered components: compiling them (cold)
//!    against loading them from the compile cache (warm).
//! 5. Resident memory of a fresh server process before the server opens,
//!    with the 50 components loaded (from the cache), and after calls.
//!
//! The client runs in the same process as the server (on the same two
//! cores), so the HTTP and MCP figures include the client's own cost; the
//! same client against a trivial hyper server, in the same run, shows what
//! the client alone can drive. Latency rounds also time a raw wasmtime call
//! of `hello.greet` (no fuel, epochs, limiter, gateway or journal), the
//! floor the in-process path is compared with.
//!
//! Run: `cargo bench -p tessera-server --bench serve` (`BENCH_ROUNDS`
//! changes the number of latency rounds). For instruction counts,
//! `SERVE_BENCH_PROFILE=in-process|http|mcp|mcp-2026|raw SERVE_BENCH_CALLS=N` makes
//! N calls on one path and exits (run it under `valgrind --tool=callgrind`
//! with two values of N; the difference is the cost of the extra calls).
//! `SERVE_BENCH_LOAD=raw|in-process|http|mcp|mcp-2026 SERVE_BENCH_SECS=S` runs only the
//! 8-caller throughput of one path for S seconds (to sample it with
//! `perf record`).

/// The allocator the `tessera` binary uses (`crates/tessera-cli/src/main.rs`),
/// so the server here runs as it does there; the raw wasmtime baselines
/// share it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tessera_server::{Server, ServerConfig};
use tessera_test_support::component;

/// The server settings for `data`, with the compile cache in
/// `<data>/cache` (never the user's own).
fn config(data: &Path) -> ServerConfig {
    let mut c = ServerConfig::new(data.to_path_buf());
    c.cache_dir = Some(data.join("cache"));
    c
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
        "  {name:<22} n={:<6} p50={:>8.1} µs  p99={:>8.1} µs  ({:>6.0} calls/s one at a time)",
        v.len(),
        us(p50),
        us(percentile(&v, 0.99)),
        1.0 / p50.as_secs_f64()
    );
    p50
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// A keep-alive HTTP/1.1 connection.
struct Conn {
    send: SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Self {
            send,
            host: addr.to_string(),
        }
    }

    /// POSTs JSON; returns the status, the headers and the body.
    async fn post(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> (u16, hyper::HeaderMap, Bytes) {
        let mut req = Request::post(path)
            .header("host", &self.host)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        self.send.ready().await.unwrap();
        let resp = self.send.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, body)
    }
}

/// The JSON-RPC message in an SSE or JSON response body.
fn rpc_message(body: &[u8]) -> Value {
    let text = std::str::from_utf8(body).unwrap();
    if let Ok(v) = serde_json::from_str(text) {
        return v;
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v.get("id").is_some())
        .unwrap_or_else(|| panic!("no JSON-RPC response in {text}"))
}

/// An MCP client over streamable HTTP: a session of the 2025-11-25
/// revision (initialize, then a session id on every request), or, with
/// [`McpSession::stateless`], the 2026-07-28 revision (no handshake, no
/// session: each request carries its protocol version and the client's
/// capabilities).
struct McpSession {
    conn: Conn,
    /// Empty for the stateless revision.
    session: String,
    next_id: u64,
}

impl McpSession {
    async fn stateless(addr: SocketAddr) -> Self {
        Self {
            conn: Conn::open(addr).await,
            session: String::new(),
            next_id: 1,
        }
    }

    async fn open(addr: SocketAddr) -> Self {
        let mut conn = Conn::open(addr).await;
        let (status, headers, body) = conn
            .post(
                "/mcp",
                &[],
                &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                    "protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": {"name": "bench", "version": "0"}}}),
            )
            .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let session = headers["mcp-session-id"].to_str().unwrap().to_string();
        let (status, _, _) = conn
            .post(
                "/mcp",
                &[
                    ("mcp-session-id", &session),
                    ("mcp-protocol-version", "2025-11-25"),
                ],
                &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            )
            .await;
        assert_eq!(status, 202);
        Self {
            conn,
            session,
            next_id: 1,
        }
    }

    async fn greet(&mut self) {
        self.next_id += 1;
        let (status, _, body) = if self.session.is_empty() {
            self.conn
                .post(
                    "/mcp",
                    &[
                        ("mcp-protocol-version", "2026-07-28"),
                        ("mcp-method", "tools/call"),
                        ("mcp-name", "hello__greet"),
                    ],
                    &json!({"jsonrpc": "2.0", "id": self.next_id, "method": "tools/call",
                            "params": {"name": "hello__greet", "arguments": {"name": "Ada"},
                            "_meta": {
                                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0"},
                                "io.modelcontextprotocol/clientCapabilities": {}}}}),
                )
                .await
        } else {
            self.conn
                .post(
                    "/mcp",
                    &[
                        ("mcp-session-id", &self.session),
                        ("mcp-protocol-version", "2025-11-25"),
                    ],
                    &json!({"jsonrpc": "2.0", "id": self.next_id, "method": "tools/call",
                            "params": {"name": "hello__greet", "arguments": {"name": "Ada"}}}),
                )
                .await
        };
        assert_eq!(status, 200);
        let msg = rpc_message(&body);
        assert_eq!(
            msg["result"]["structuredContent"]["result"], "Hello, Ada!",
            "{msg}"
        );
    }
}

async fn http_greet(conn: &mut Conn) -> bool {
    let (status, _, body) = conn
        .post(
            "/v1/components/hello/call/greet",
            &[],
            &json!({"name": "Ada"}),
        )
        .await;
    status == 200 && body.windows(11).any(|w| w == b"Hello, Ada!")
}

fn in_process() -> tessera_journal::Caller {
    tessera_journal::Caller {
        via: "in-process".into(),
        token: None,
    }
}

async fn in_process_greet(server: &Server) {
    let c = server
        .call(
            "hello",
            "greet",
            &json!({"name": "Ada"}),
            None,
            in_process(),
        )
        .await
        .unwrap();
    assert_eq!(c.outcome.result.unwrap(), json!("Hello, Ada!"));
}

/// The store data of the raw wasmtime baseline.
struct RawState {
    wasi: wasmtime_wasi::WasiCtx,
    table: wasmtime::component::ResourceTable,
}

impl wasmtime_wasi::WasiView for RawState {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        wasmtime_wasi::WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// `hello.greet` on plain wasmtime: pooling allocator, one `InstancePre`,
/// a default WASI context and a fresh instance per call, a typed call. No
/// fuel, epochs, limiter, gateway or journal (the baseline of
/// `crates/tessera-runtime/benches/call.rs`).
///
/// `tuned` gives the pool the slot-reuse settings Tessera's runtime uses
/// (resets in batches of 16; with `PAGEMAP_SCAN`, 1 MiB of each memory and
/// table reset by hand and kept mapped), so the ratio to it is Tessera's
/// own overhead; untuned is wasmtime's default pool.
struct RawWasmtime {
    engine: wasmtime::Engine,
    pre: wasmtime::component::InstancePre<RawState>,
    greet: wasmtime::component::ComponentExportIndex,
}

impl RawWasmtime {
    fn new(tuned: bool) -> Self {
        use wasmtime::component::{Component, Linker};
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        if tuned {
            pool.decommit_batch_size(16);
            if wasmtime::PoolingAllocationConfig::is_pagemap_scan_available() {
                pool.pagemap_scan(wasmtime::Enabled::Yes)
                    .linear_memory_keep_resident(1 << 20)
                    .table_keep_resident(1 << 20);
            }
        }
        let mut cfg = wasmtime::Config::new();
        cfg.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = wasmtime::Engine::new(&cfg).unwrap();
        let bytes = std::fs::read(component("hello")).unwrap();
        let component = Component::from_binary(&engine, &bytes).unwrap();
        let mut linker: Linker<RawState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
        linker
            .instance("wasi:logging/logging@0.1.0-draft")
            .unwrap()
            .func_new("log", |_, _, _, _| Ok(()))
            .unwrap();
        let pre = linker.instantiate_pre(&component).unwrap();
        let greet = component.get_export_index(None, "greet").unwrap();
        Self { engine, pre, greet }
    }

    async fn greet(&self) {
        let mut store = wasmtime::Store::new(
            &self.engine,
            RawState {
                wasi: wasmtime_wasi::WasiCtx::builder().build(),
                table: wasmtime::component::ResourceTable::new(),
            },
        );
        let instance = self.pre.instantiate_async(&mut store).await.unwrap();
        let f = instance
            .get_typed_func::<(&str,), (String,)>(&mut store, &self.greet)
            .unwrap();
        let (out,) = f.call_async(&mut store, ("Ada",)).await.unwrap();
        assert_eq!(out, "Hello, Ada!");
    }
}

/// A trivial native HTTP/1.1 server (hyper, no framework) that answers every
/// request with a fixed JSON body the size of a `hello.greet` answer: what
/// the load generator alone can drive, measured in the same run.
async fn trivial_server() -> SocketAddr {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = Bytes::from(
        json!({"ok": true, "result": "Hello, Ada!", "component": "hello", "version": 2,
               "function": "greet", "run_id": "20261125T000000-00000000",
               "fuel_consumed": 12345, "duration_us": 20, "stdout": "", "stderr": "",
               "logs": []})
        .to_string(),
    );
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let _ = tcp.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let body = body.clone();
                    async move {
                        let _ = req.into_body().collect().await;
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(body))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// Calls per second the load generator reaches against the trivial server.
async fn trivial_throughput(addr: SocketAddr, clients: usize, for_how_long: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (done, stop) = (done.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(addr).await;
            while !stop.load(Ordering::Relaxed) {
                assert!(http_greet(&mut c).await);
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(for_how_long).await;
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / elapsed.as_secs_f64()
}

/// For instruction counts under `valgrind --tool=callgrind`:
/// `SERVE_BENCH_PROFILE=in-process|http|mcp|mcp-2026|raw` makes `SERVE_BENCH_CALLS`
/// sequential calls on that path (after 50 warm-up calls) and exits. The
/// cost of one call is the difference between two runs with different
/// counts, divided by the difference in calls.
async fn profile(data: &Path, path: &str, calls: usize) {
    let (server, addr, stop) = start(data).await;
    match path {
        "in-process" => {
            for _ in 0..calls + 50 {
                in_process_greet(&server).await;
            }
        }
        "http" => {
            let mut c = Conn::open(addr).await;
            for _ in 0..calls + 50 {
                assert!(http_greet(&mut c).await);
            }
        }
        "mcp" | "mcp-2026" => {
            let mut s = if path == "mcp" {
                McpSession::open(addr).await
            } else {
                McpSession::stateless(addr).await
            };
            for _ in 0..calls + 50 {
                s.greet().await;
            }
        }
        "raw" => {
            let raw = RawWasmtime::new(true);
            for _ in 0..calls + 50 {
                raw.greet().await;
            }
        }
        other => panic!("SERVE_BENCH_PROFILE: unknown path `{other}`"),
    }
    server.journal.flush();
    let _ = stop.send(());
}

/// `SERVE_BENCH_PROFILE=start`: opens a server with the 50 components of
/// [`register_fifty`], all in the compile cache, `SERVE_BENCH_CALLS` times
/// (after one open that fills the cache), printing the median time to
/// ready and to the moment every load has begun (`Server::start`
/// returned): what a sampling profiler should watch for start-up costs.
async fn profile_start(opens: usize) {
    let data = tempfile::tempdir().unwrap();
    register_fifty(data.path());
    let mut times = Vec::new();
    let mut begun = Vec::new();
    for i in 0..opens + 1 {
        let t = Instant::now();
        let server = Server::start(config(data.path())).await.unwrap();
        let b = t.elapsed();
        server.started().await;
        server.loaded().await;
        if i > 0 {
            times.push(t.elapsed());
            begun.push(b);
        }
        assert_eq!(server.active_names().len(), 50);
        let weak = Arc::downgrade(&server);
        drop(server);
        while weak.strong_count() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // The last owner may still be closing the journal.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    times.sort();
    begun.sort();
    println!(
        "start with 50 cached components: p50 {:.1} ms over {} opens (loads begun after {:.1} ms)",
        times[times.len() / 2].as_secs_f64() * 1e3,
        times.len(),
        begun[begun.len() / 2].as_secs_f64() * 1e3,
    );
}

#[derive(Clone, Copy)]
enum Path3 {
    /// Plain wasmtime with Tessera's pool settings, no server.
    Raw,
    InProcess,
    Http,
    Mcp,
    /// MCP, 2026-07-28 revision (stateless).
    McpStateless,
}

/// Calls per second with `clients` concurrent callers for `for_how_long`.
async fn throughput(
    server: &Arc<Server>,
    addr: SocketAddr,
    path: Path3,
    clients: usize,
    for_how_long: Duration,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let raw = matches!(path, Path3::Raw).then(|| Arc::new(RawWasmtime::new(true)));
    for _ in 0..clients {
        let (server, done, stop) = (server.clone(), done.clone(), stop.clone());
        let raw = raw.clone();
        tasks.push(tokio::spawn(async move {
            match path {
                Path3::Raw => {
                    let raw = raw.expect("raw wasmtime");
                    while !stop.load(Ordering::Relaxed) {
                        raw.greet().await;
                        done.fetch_add(1, Ordering::Relaxed);
                        // A raw call never waits, so give the workers
                        // back to the scheduler (its timers) each time.
                        tokio::task::yield_now().await;
                    }
                }
                Path3::InProcess => {
                    while !stop.load(Ordering::Relaxed) {
                        in_process_greet(&server).await;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Path3::Http => {
                    let mut c = Conn::open(addr).await;
                    while !stop.load(Ordering::Relaxed) {
                        assert!(http_greet(&mut c).await);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Path3::Mcp | Path3::McpStateless => {
                    let mut s = if matches!(path, Path3::Mcp) {
                        McpSession::open(addr).await
                    } else {
                        McpSession::stateless(addr).await
                    };
                    while !stop.load(Ordering::Relaxed) {
                        s.greet().await;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(for_how_long).await;
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / elapsed.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn start(data: &Path) -> (Arc<Server>, SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let server = Server::open(config(data)).await.unwrap();
    server.loaded().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.clone().serve(listener, async move {
        let _ = stopped.await;
    }));
    (server, addr, stop)
}

/// One caller at a time on each path, rounds interleaved. Runs in a task
/// of the runtime, as the server's own HTTP and MCP handlers do (a call
/// made from outside the runtime's worker threads pays two extra thread
/// wake-ups: see [`latency_and_throughput`]).
async fn latency(server: Arc<Server>, addr: SocketAddr, rounds: usize, per_round: usize) {
    let mut http = Conn::open(addr).await;
    let mut mcp = McpSession::open(addr).await;
    let mut mcp_2026 = McpSession::stateless(addr).await;
    let raw = RawWasmtime::new(false);
    let tuned = RawWasmtime::new(true);
    let (mut a, mut b, mut c, mut r) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut rt, mut s) = (Vec::new(), Vec::new());
    // `per_round` calls of `$call`, each timed into `$into` (not in the
    // warm-up round).
    macro_rules! timed {
        ($round:expr, $into:expr, $call:expr) => {
            for _ in 0..per_round {
                let t = Instant::now();
                $call;
                let d = t.elapsed();
                if $round > 0 {
                    $into.push(d);
                }
            }
        };
    }
    for round in 0..rounds {
        timed!(round, r, raw.greet().await);
        timed!(round, rt, tuned.greet().await);
        timed!(round, a, in_process_greet(&server).await);
        timed!(round, b, assert!(http_greet(&mut http).await));
        timed!(round, c, mcp.greet().await);
        timed!(round, s, mcp_2026.greet().await);
    }
    println!(
        "hello.greet latency, one caller ({} interleaved rounds of {per_round}, first dropped):",
        rounds - 1
    );
    let raw_default = summarize("raw wasmtime (default pool)", r);
    let raw_p50 = summarize("raw wasmtime (Tessera's pool settings)", rt);
    let base = summarize("in-process (journaled)", a);
    let h = summarize("HTTP API", b);
    let m = summarize("MCP streamable HTTP", c);
    let m2 = summarize("MCP streamable HTTP, 2026-07-28", s);
    println!(
        "  ratio p50: in-process {:.2}x of raw wasmtime with the same pool settings ({:.2}x of the default pool); HTTP {:.2}x, MCP {:.2}x (2026-07-28 {:.2}x) of in-process",
        us(base) / us(raw_p50),
        us(base) / us(raw_default),
        us(h) / us(base),
        us(m) / us(base),
        us(m2) / us(base)
    );
}

async fn latency_and_throughput(data: &Path, rounds: usize) {
    let (server, addr, stop) = start(data).await;
    let per_round = 200;
    tokio::spawn(latency(server.clone(), addr, rounds, per_round))
        .await
        .unwrap();
    // The same in-process call made from the thread that runs `block_on`,
    // outside the worker threads: the call's task is handed to a worker
    // and its end handed back, two thread wake-ups per call.
    let mut outside = Vec::new();
    for round in 0..rounds {
        for _ in 0..per_round {
            let t = Instant::now();
            in_process_greet(&server).await;
            if round > 0 {
                outside.push(t.elapsed());
            }
        }
    }
    summarize("in-process, from outside the runtime's workers", outside);

    let clients = 8;
    let window = Duration::from_millis(1500);
    let trivial = trivial_server().await;
    let (mut ta, mut tb, mut tc, mut tt) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut tr, mut ts) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        tr.push(throughput(&server, addr, Path3::Raw, clients, window).await);
        ta.push(throughput(&server, addr, Path3::InProcess, clients, window).await);
        tb.push(throughput(&server, addr, Path3::Http, clients, window).await);
        tc.push(throughput(&server, addr, Path3::Mcp, clients, window).await);
        ts.push(throughput(&server, addr, Path3::McpStateless, clients, window).await);
        tt.push(trivial_throughput(trivial, clients, window).await);
    }
    let (ta, tb, tc, tt, tr) = (median(ta), median(tb), median(tc), median(tt), median(tr));
    let ts = median(ts);
    println!("\nhello.greet throughput, {clients} concurrent callers (median of 3 × 1.5 s):");
    println!(
        "  load generator alone   {tt:>8.0} calls/s  (the same HTTP client against a trivial hyper server)"
    );
    println!(
        "  raw wasmtime           {tr:>8.0} calls/s  (Tessera's pool settings; no server, no journal)"
    );
    println!(
        "  in-process (journaled) {ta:>8.0} calls/s  ({:.2}x of raw wasmtime)",
        ta / tr
    );
    println!(
        "  HTTP API               {tb:>8.0} calls/s  ({:.2}x of in-process)",
        tb / ta
    );
    println!(
        "  MCP streamable HTTP    {tc:>8.0} calls/s  ({:.2}x of in-process; 2025-11-25, a session)",
        tc / ta
    );
    println!(
        "  MCP, 2026-07-28        {ts:>8.0} calls/s  ({:.2}x of in-process; stateless, no session)",
        ts / ta
    );

    // Hot swap: 8 HTTP callers; versions 1 and 2 of `hello` alternate every
    // 100 ms during the middle phase.
    let failed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let stop_callers = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (failed, done, stop_callers) = (failed.clone(), done.clone(), stop_callers.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(addr).await;
            while !stop_callers.load(Ordering::Relaxed) {
                if http_greet(&mut c).await {
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let phase = Duration::from_secs(2);
    let mut rates = Vec::new();
    let mut swaps = 0;
    for swapping in [false, true, false] {
        let before = done.load(Ordering::Relaxed);
        let t = Instant::now();
        while t.elapsed() < phase {
            if swapping {
                swaps += 1;
                server.registry.activate("hello", 1 + swaps % 2).unwrap();
                server.sync().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        rates.push((done.load(Ordering::Relaxed) - before) as f64 / t.elapsed().as_secs_f64());
    }
    stop_callers.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    println!("\nHTTP throughput around hot swaps ({clients} callers, 2 s per phase):");
    println!("  before       {:>8.0} calls/s", rates[0]);
    println!(
        "  during       {:>8.0} calls/s  ({swaps} swaps; {:.2}x of before)",
        rates[1],
        rates[1] / rates[0]
    );
    println!("  after        {:>8.0} calls/s", rates[2]);
    println!("  failed calls {}", failed.load(Ordering::Relaxed));
    let _ = stop.send(());
    // Let the server task release the data directory.
    let weak = Arc::downgrade(&server);
    drop(server);
    while weak.strong_count() > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

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
    let payload = tag.to_le_bytes();
    let mut body = Vec::new();
    leb(name.len(), &mut body);
    body.extend_from_slice(name);
    body.extend_from_slice(&payload);
    let mut out = bytes.to_vec();
    out.push(0);
    leb(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

/// Registers 50 distinct components (the example components, each copy
/// made distinct), half of them with manifests, as a real registry would be.
fn register_fifty(data: &Path) {
    let registry = tessera_server::registry::Registry::open(data).unwrap();
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
    }
}

async fn restart(data: &Path) {
    register_fifty(data);
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for i in 0..6 {
        if i % 3 == 0 {
            // Cold: no compile cache on disk.
            let _ = std::fs::remove_dir_all(data.join("cache"));
        }
        let t = Instant::now();
        let server = Server::open(config(data)).await.unwrap();
        // Components not in the cache compile in the background.
        server.loaded().await;
        let d = t.elapsed();
        assert_eq!(server.active_names().len(), 50);
        if i % 3 == 0 {
            cold.push(d);
        } else {
            warm.push(d);
        }
        server.journal.flush();
        // The load tasks may still hold the server for a moment; the next
        // round opens the same journal.
        let weak = Arc::downgrade(&server);
        drop(server);
        while weak.strong_count() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    cold.sort();
    warm.sort();
    let (c, w) = (cold[cold.len() / 2], warm[warm.len() / 2]);
    println!("\nServer start with 50 registered components (ready to call):");
    println!(
        "  cold (compiling)           p50 {:>8.1} ms  (n={})",
        c.as_secs_f64() * 1e3,
        cold.len()
    );
    println!(
        "  warm (compile cache)       p50 {:>8.1} ms  (n={}; {:.0}x faster)",
        w.as_secs_f64() * 1e3,
        warm.len(),
        c.as_secs_f64() / w.as_secs_f64()
    );
}

/// In a fresh process (this bench run again with `SERVE_BENCH_MEMORY` set):
/// resident memory before the server opens, with the 50 components of
/// `data` loaded from the compile cache, and after a call to each `hello`.
async fn memory_child(data: &Path) {
    let empty = rss_mib();
    let server = Server::open(config(data)).await.unwrap();
    server.loaded().await;
    let loaded = rss_mib();
    for name in server.active_names() {
        if name.ends_with("-hello") {
            let c = server
                .call(&name, "greet", &json!({"name": "x"}), None, in_process())
                .await
                .unwrap();
            assert!(c.outcome.result.is_ok());
        }
    }
    let called = rss_mib();
    println!(
        "{}",
        json!({"empty": empty, "loaded": loaded, "called": called})
    );
}

fn memory(data: &Path) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("SERVE_BENCH_MEMORY", data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (empty, loaded, called) = (
        v["empty"].as_f64().unwrap(),
        v["loaded"].as_f64().unwrap(),
        v["called"].as_f64().unwrap(),
    );
    println!("\nResident memory of a fresh server process:");
    println!("  before the server opens         {empty:>7.1} MiB");
    println!(
        "  50 components loaded            {loaded:>7.1} MiB  (+{:.1} MiB, {:.2} MiB per component)",
        loaded - empty,
        (loaded - empty) / 50.0
    );
    println!("  after a call to each `hello`    {called:>7.1} MiB");
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Ok(path) = std::env::var("SERVE_BENCH_PROFILE") {
        let calls: usize = std::env::var("SERVE_BENCH_CALLS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1000);
        if path == "start" {
            rt.block_on(profile_start(calls));
            return;
        }
        rt.block_on(async {
            let data = tempfile::tempdir().unwrap();
            let registry = tessera_server::registry::Registry::open(data.path()).unwrap();
            let bytes = std::fs::read(component("hello")).unwrap();
            registry.add("hello", &bytes, None, "hello").unwrap();
            let dir = data.path().to_path_buf();
            // In a task, as the server's own handlers call.
            tokio::spawn(async move { profile(&dir, &path, calls).await })
                .await
                .unwrap();
        });
        return;
    }
    if let Ok(path) = std::env::var("SERVE_BENCH_LOAD") {
        let secs: f64 = std::env::var("SERVE_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5.0);
        rt.block_on(async {
            let data = tempfile::tempdir().unwrap();
            let registry = tessera_server::registry::Registry::open(data.path()).unwrap();
            let bytes = std::fs::read(component("hello")).unwrap();
            registry.add("hello", &bytes, None, "hello").unwrap();
            let (server, addr, stop) = start(data.path()).await;
            let which = match path.as_str() {
                "raw" => Path3::Raw,
                "in-process" => Path3::InProcess,
                "http" => Path3::Http,
                "mcp" => Path3::Mcp,
                "mcp-2026" => Path3::McpStateless,
                other => panic!("SERVE_BENCH_LOAD: unknown path `{other}`"),
            };
            let n = throughput(&server, addr, which, 8, Duration::from_secs_f64(secs)).await;
            println!("{path}: {n:.0} calls/s with 8 callers for {secs} s");
            server.journal.flush();
            let _ = stop.send(());
        });
        return;
    }
    if let Some(data) = std::env::var_os("SERVE_BENCH_MEMORY") {
        rt.block_on(memory_child(Path::new(&data)));
        return;
    }
    let data = rt.block_on(async {
        let data = tempfile::tempdir().unwrap();
        {
            let registry = tessera_server::registry::Registry::open(data.path()).unwrap();
            let bytes = std::fs::read(component("hello")).unwrap();
            registry.add("hello", &bytes, None, "hello").unwrap();
            // Version 2: the same code with other limits (a real new version
            // for the registry, compiled once).
            registry
                .add(
                    "hello",
                    &bytes,
                    Some((
                        "[limits]\ntimeout_ms = 5000\n".into(),
                        data.path().to_path_buf(),
                    )),
                    "hello",
                )
                .unwrap();
        }
        latency_and_throughput(data.path(), rounds.max(2)).await;
        let data = tempfile::tempdir().unwrap();
        restart(data.path()).await;
        data
    });
    memory(data.path());
}
