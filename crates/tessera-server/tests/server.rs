//! The server against real components and a real TCP listener on 127.0.0.1.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tessera_server::{Server, ServerConfig};
use tessera_test_support::component;

/// One HTTP/1.1 request on a fresh connection; returns (status, JSON body).
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let host = addr.to_string();
    let mut headers = vec![
        ("Host", host.as_str()),
        ("Content-Type", "application/json"),
    ];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    let (status, _, body) = raw_request(addr, method, path, &headers, body);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

struct Running {
    addr: SocketAddr,
    server: Arc<Server>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(data: &Path, tweak: impl FnOnce(&mut ServerConfig)) -> Running {
    let mut config = ServerConfig::new(data.to_path_buf());
    // Never the user's own compile cache.
    config.cache_dir = Some(data.join("cache"));
    tweak(&mut config);
    let server = Server::open(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let s = server.clone();
    let task = tokio::spawn(async move {
        s.serve(listener, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Running {
        addr,
        server,
        stop: Some(stop),
        task,
    }
}

impl Running {
    /// Registers `components/<wasm>.wasm` under `name` (by path).
    async fn add(&self, name: &str, wasm: &str) -> (u16, Value) {
        let body = json!({ "name": name, "path": component(wasm).display().to_string() });
        self.call("POST", "/v1/components", body).await
    }

    async fn call(&self, method: &'static str, path: &str, body: Value) -> (u16, Value) {
        let (addr, path, body) = (self.addr, path.to_string(), body.to_string());
        tokio::task::spawn_blocking(move || request(addr, method, &path, None, &body))
            .await
            .unwrap()
    }

    /// Stops the server and waits until every task has let go of it (the
    /// journal database is then closed and can be opened again).
    async fn shutdown(mut self) {
        let weak = Arc::downgrade(&self.server);
        self.stop_only().await;
        drop(self);
        for _ in 0..500 {
            if weak.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the server was not released after shutdown");
    }

    async fn stop_only(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_persists_and_calls_are_journaled() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), |_| {}).await;
    let (status, v) = s.add("hello", "hello").await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = s
        .call(
            "POST",
            "/v1/components/hello/call/greet",
            json!({"name": "Ada"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"], "Hello, Ada!");
    let run_id = v["run_id"].as_str().unwrap().to_string();
    let (status, v) = s
        .call(
            "POST",
            "/v1/components/hello/call/types%23echo-u8",
            json!({"v": 300}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["code"], "bad_arguments");
    assert_eq!(v["error"]["path"], "$.v");
    s.shutdown().await;

    // A restart serves the same registry, and the run is in the journal.
    let s = start(data.path(), |_| {}).await;
    assert_eq!(s.server.active_names(), vec!["hello".to_string()]);
    let (status, v) = s
        .call("GET", &format!("/v1/runs/{run_id}"), json!({}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["header"]["function"], "greet");
    let (status, v) = s
        .call("POST", &format!("/v1/runs/{run_id}/replay"), json!({}))
        .await;
    assert_eq!((status, &v["identical"]), (200, &json!(true)), "{v}");
    let (status, v) = s.call("GET", "/v1/components/hello", json!({})).await;
    assert_eq!(status, 200);
    assert!(
        v["functions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "greet")
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_load_fails_no_call() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), |_| {}).await;
    let addr = s.addr;
    // Two "versions" of one name: hello (greet says Hello) then a second
    // build with different bytes would be ideal; the net-escape component
    // has `wall-clock` too, so version 2 is told apart by what it exports.
    let v1 = s.add("tool", "hello").await;
    assert_eq!(v1.0, 201);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let served_by_v2 = Arc::new(AtomicUsize::new(0));
    let swapped = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..2 {
        let (stop, failures, v2, swapped) = (
            stop.clone(),
            failures.clone(),
            served_by_v2.clone(),
            swapped.clone(),
        );
        load.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 2000 {
                n += 1;
                let after = swapped.load(Ordering::SeqCst);
                let (status, v) =
                    request(addr, "POST", "/v1/components/tool/call/bump", None, "{}");
                if status != 200 {
                    failures.fetch_add(1, Ordering::Relaxed);
                    eprintln!("failed call: {status} {v}");
                }
                if v["version"] == 2 {
                    v2.fetch_add(1, Ordering::Relaxed);
                } else if after {
                    // A call started after the swap finished must be served by v2.
                    failures.fetch_add(1, Ordering::Relaxed);
                    eprintln!("call after the swap served by {}", v["version"]);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Version 2: the same component under a manifest (a new version).
    let body = json!({ "name": "tool", "path": component("hello").display().to_string(),
                       "manifest_path": write_manifest(data.path(), "[limits]\nfuel = 1000000000\n") }).to_string();
    let (status, v) =
        tokio::task::spawn_blocking(move || request(addr, "POST", "/v1/components", None, &body))
            .await
            .unwrap();
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["active_version"], 2);
    swapped.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    assert!(served_by_v2.load(Ordering::Relaxed) > 0);
    // Rollback is one call.
    let (status, v) = s
        .call("POST", "/v1/components/tool/rollback", json!({}))
        .await;
    assert_eq!((status, &v["active_version"]), (200, &json!(1)), "{v}");
    s.shutdown().await;
}

/// The request body registering `spin` with limits roomy enough for long calls.
fn spin_body(data: &Path) -> String {
    json!({ "name": "spin", "path": component("spin").display().to_string(),
            "manifest_path": write_manifest(data, "[limits]\nfuel = 100000000000\ntimeout_ms = 60000\n") })
    .to_string()
}

/// Registers `spin` (see [`spin_body`]).
async fn add_spin(addr: SocketAddr, data: &Path) -> (u16, Value) {
    let body = spin_body(data);
    tokio::task::spawn_blocking(move || request(addr, "POST", "/v1/components", None, &body))
        .await
        .unwrap()
}

/// The caller of a call the test makes on the server directly.
fn in_process() -> tessera_journal::Caller {
    tessera_journal::Caller {
        via: "test".into(),
        token: None,
    }
}

fn write_manifest(dir: &Path, text: &str) -> String {
    let p = dir.join("m.toml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_lets_calls_in_flight_finish() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), |_| {}).await;
    let addr = s.addr;
    assert_eq!(add_spin(addr, data.path()).await.0, 201);
    let running = tokio::task::spawn_blocking(move || {
        request(
            addr,
            "POST",
            "/v1/components/spin/call/count",
            None,
            r#"{"n": 300000000}"#,
        )
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _) = s.call("DELETE", "/v1/components/spin", json!({})).await;
    assert_eq!(status, 204);
    let (status, v) = running.await.unwrap();
    assert_eq!((status, &v["result"]), (200, &json!(300000000)), "{v}");
    let (status, v) = s
        .call("POST", "/v1/components/spin/call/count", json!({"n": 1}))
        .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (404, &json!("no_such_component"))
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_scopes_body_limit_and_overload() {
    let data = tempfile::tempdir().unwrap();
    let tokens = tessera_server::auth::Tokens::open(data.path());
    let (caller, caller_record) = tokens
        .create(vec![tessera_server::auth::Scope::Call], "caller")
        .unwrap();
    let (admin, rec) = tokens
        .create(vec![tessera_server::auth::Scope::Manage], "admin")
        .unwrap();
    assert!(
        !std::fs::read_to_string(data.path().join("tokens.json"))
            .unwrap()
            .contains(&admin),
        "token stored in clear"
    );
    assert_eq!(rec.sha256.len(), 64);
    let s = start(data.path(), |c| {
        c.require_tokens = true;
        c.max_body_bytes = 4096;
        c.max_calls = 1;
    })
    .await;
    let addr = s.addr;
    let body = spin_body(data.path());
    let (c, a) = (caller.clone(), admin.clone());
    let checks = tokio::task::spawn_blocking(move || {
        let no_token = request(addr, "POST", "/v1/components", None, &body);
        let wrong_scope = request(addr, "POST", "/v1/components", Some(&c), &body);
        let bad_token = request(addr, "POST", "/v1/components", Some("tsr_nope"), &body);
        let good = request(addr, "POST", "/v1/components", Some(&a), &body);
        let too_big = request(
            addr,
            "POST",
            "/v1/components/spin/call/count",
            Some(&c),
            &format!("{{\"n\": 1, \"pad\": \"{}\"}}", "x".repeat(5000)),
        );
        let health = request(addr, "GET", "/v1/health", None, "");
        (no_token, wrong_scope, bad_token, good, too_big, health)
    })
    .await
    .unwrap();
    assert_eq!(
        (checks.0.0, &checks.0.1["error"]["code"]),
        (401, &json!("unauthorized"))
    );
    assert_eq!(
        (checks.1.0, &checks.1.1["error"]["code"]),
        (403, &json!("forbidden"))
    );
    assert_eq!(checks.2.0, 401);
    assert_eq!(checks.3.0, 201, "{}", checks.3.1);
    assert_eq!(
        (checks.4.0, &checks.4.1["error"]["code"]),
        (413, &json!("body_too_large"))
    );
    assert_eq!(checks.5.0, 200);
    // Overload: max_calls = 1, one long call running.
    let c = caller.clone();
    let long = tokio::task::spawn_blocking(move || {
        request(
            addr,
            "POST",
            "/v1/components/spin/call/count",
            Some(&c),
            r#"{"n": 300000000}"#,
        )
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let c = caller.clone();
    let (status, v) = tokio::task::spawn_blocking(move || {
        request(
            addr,
            "POST",
            "/v1/components/spin/call/count",
            Some(&c),
            r#"{"n": 1}"#,
        )
    })
    .await
    .unwrap();
    assert_eq!((status, &v["error"]["code"]), (503, &json!("overloaded")));
    assert_eq!(long.await.unwrap().0, 200);
    // The journal names the caller: the HTTP API and the token's id.
    let runs = s.server.journal.list().unwrap();
    let count = runs.iter().find(|r| r.header.function == "count").unwrap();
    assert_eq!(
        count.header.caller,
        Some(tessera_journal::Caller {
            via: "http".into(),
            token: Some(caller_record.id.clone()),
        })
    );
    // Refused requests are audited.
    let audit = std::fs::read_to_string(data.path().join("audit.jsonl")).unwrap();
    assert!(
        audit.lines().any(|l| l.contains("\"capability\":\"auth\"")),
        "{audit}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_matches_the_routes() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), |_| {}).await;
    let (status, doc) = s.call("GET", "/openapi.json", json!({})).await;
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = 0;
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            documented += 1;
            if path == "/v1/audit" || path == "/v1/agents/events" {
                continue; // a stream: checked by its own content type elsewhere
            }
            if path == "/metrics" {
                // Text, parsed by the Prometheus project's own parser in
                // the CLI's metrics test; here: served as documented.
                let text = s.server.metrics().render();
                assert!(text.ends_with("# EOF\n"), "{text}");
                assert!(
                    ops[method]["responses"]["200"]["content"]["application/openmetrics-text"]
                        .is_object()
                );
                continue;
            }
            let concrete = path
                .replace("{name}", "nothing")
                .replace("{function}", "f")
                .replace("{id}", "nope")
                .replace("{bucket}", "nothing")
                .replace("{key}", "nope")
                .replace("{request}", "nope");
            let m: &'static str = match method.as_str() {
                "get" => "GET",
                "post" => "POST",
                "put" => "PUT",
                "delete" => "DELETE",
                other => panic!("unexpected method {other}"),
            };
            let (status, body) = s.call(m, &concrete, json!({})).await;
            // A real route answers with JSON (possibly a typed error) or
            // 204 without a body; an unknown route or method gets
            // `not_found` or `method_not_allowed`.
            let code = &body["error"]["code"];
            assert!(
                status != 405
                    && (body.is_object() || status == 204)
                    && code != "not_found"
                    && code != "method_not_allowed",
                "{m} {path}: {status} {body}"
            );
            // Every answer is documented, with a schema unless it is empty.
            let answer = &ops[method]["responses"][status.to_string()];
            assert!(answer.is_object(), "{m} {path}: {status} undocumented");
            assert!(
                status == 204 || answer["content"]["application/json"]["schema"].is_object(),
                "{m} {path}: {status} has no schema"
            );
        }
    }
    assert_eq!(documented, tessera_server::openapi::ROUTES.len());
    // Unknown routes and methods are typed errors too.
    let (status, v) = s.call("GET", "/v1/nothing", json!({})).await;
    assert_eq!((status, &v["error"]["code"]), (404, &json!("not_found")));
    let (status, v) = s.call("PUT", "/v1/health", json!({})).await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (405, &json!("method_not_allowed"))
    );
    // Every schema reference resolves.
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = r.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling $ref {name}"
        );
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_calls_and_journals() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), |_| {}).await;
    let addr = s.addr;
    assert_eq!(add_spin(addr, data.path()).await.0, 201);
    let running = tokio::task::spawn_blocking(move || {
        request(
            addr,
            "POST",
            "/v1/components/spin/call/count",
            None,
            r#"{"n": 200000000}"#,
        )
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let server = s.server.clone();
    let mut s = s;
    s.stop_only().await;
    let (status, v) = running.await.unwrap();
    assert_eq!(status, 200, "{v}");
    // The journal of the call is complete (serve flushed it durably).
    let runs = server.journal.list().unwrap();
    assert!(
        runs.iter()
            .any(|r| r.header.function == "count" && r.end.is_some()),
        "{runs:?}"
    );
}

/// One raw HTTP/1.1 request with the given headers; returns (status,
/// response head, body text).
fn raw_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    write!(s, "{head}\r\n{body}").unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_string(), body.to_string())
}

/// `tessera_agent_mailbox_depth{agent="<agent>"}` (absent when its mailbox
/// is empty) and `tessera_agent_mailbox_messages` as `GET /metrics` shows
/// them.
async fn mailbox_depth(addr: SocketAddr, agent: &str) -> (Option<i64>, i64) {
    let host = addr.to_string();
    let (status, _, body) = tokio::task::spawn_blocking(move || {
        raw_request(addr, "GET", "/metrics", &[("Host", host.as_str())], "")
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let value = |prefix: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse().ok())
    };
    let one = value(&format!(
        "tessera_agent_mailbox_depth{{agent=\"{agent}\"}} "
    ));
    let total = value("tessera_agent_mailbox_messages ").unwrap_or_else(|| panic!("{body}"));
    (one, total)
}

/// How long a test waits for an event before giving up. Only a guard
/// against hangs: no test relies on how long anything takes.
const EVENT_WAIT: Duration = Duration::from_secs(60);

/// The journal's run of spin's `ticker`, if there is one.
fn ticker_run(server: &Server) -> Option<tessera_journal::RunSummary> {
    let runs = server.journal.list().unwrap();
    runs.into_iter().find(|r| r.header.function == "ticker")
}

/// Waits until spin's `ticker` has made a step. Listing the journal
/// commits what is pending first, so a step seen is the ticker's first
/// tick: it is running, and loops from then on.
async fn until_ticking(server: &Server) {
    let waiting = std::time::Instant::now();
    while ticker_run(server).is_none_or(|r| r.steps == 0) {
        assert!(
            waiting.elapsed() < EVENT_WAIT,
            "the ticker made no step within {EVENT_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// The server runs on the test's one thread here, so a guest that never
// returns must give the thread back for other requests to be served: the
// epoch callback yields at every tick. Were it not to, the ticker would
// hold the thread until its deadline and end before any other call ran.
#[tokio::test(flavor = "current_thread")]
async fn spinning_component_does_not_delay_hello_and_shutdown_cancels_it() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), |c| c.grace = Duration::from_millis(300)).await;
    let addr = s.addr;
    // The deadline ends the test if yielding is broken; otherwise shutdown
    // cancels the call long before.
    let manifest = write_manifest(
        data.path(),
        "[limits]\nfuel = 1000000000000000\ntimeout_ms = 20000\n",
    );
    let body = json!({ "name": "spin", "path": component("spin"), "manifest_path": manifest });
    let (status, v) = s.call("POST", "/v1/components", body).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(s.add("hello", "hello").await.0, 201);
    let ticking = tokio::task::spawn_blocking(move || {
        request(
            addr,
            "POST",
            "/v1/components/spin/call/ticker",
            None,
            r#"{"every": 1000000}"#,
        )
    });
    let server = s.server.clone();
    let ticker_run = move || ticker_run(&server);
    until_ticking(&s.server).await;
    // Few calls: with a task always ready, one thread polls the sockets
    // only every 61 scheduler turns (tokio's `event_interval`), here every
    // 61 ticker slices of 2 ms, so each request takes a few hundred ms.
    for i in 0..5 {
        let (status, v) = s
            .call(
                "POST",
                "/v1/components/hello/call/greet",
                json!({ "name": format!("n{i}") }),
            )
            .await;
        assert_eq!(
            (status, &v["result"]),
            (200, &json!(format!("Hello, n{i}!"))),
            "{v}"
        );
    }
    assert!(
        ticker_run().unwrap().end.is_none(),
        "the ticker ended before the other calls ran: it did not yield"
    );
    // Shutdown: the grace period passes, the ticking call is cancelled and
    // its run is journaled to the end.
    let server = s.server.clone();
    let mut s = s;
    s.stop_only().await;
    let (status, v) = ticking.await.unwrap();
    assert_eq!(
        (status, &v["error"]["code"]),
        (422, &json!("cancelled")),
        "{v}"
    );
    let runs = server.journal.list().unwrap();
    let ticker = runs
        .iter()
        .find(|r| r.header.function == "ticker")
        .expect("ticker run journaled");
    assert!(
        matches!(
            ticker.end.as_ref().map(|e| &e.result),
            Some(tessera_journal::RunResult::Cancelled { .. })
        ),
        "{ticker:?}"
    );
    assert!(runs.iter().all(|r| r.end.is_some()), "{runs:?}");
}

/// A caller that goes away mid-call (its future dropped, as when an HTTP
/// client disconnects): the call runs in the caller's task, so dropping it
/// must cancel the guest and finish the run elsewhere — its run is
/// journaled to its end, as cancelled, and its permit comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_caller_goes_away_is_cancelled_and_journaled_to_its_end() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), |c| c.max_calls = 1).await;
    let (status, v) = add_spin(s.addr, data.path()).await;
    assert_eq!(status, 201, "{v}");
    let server = s.server.clone();
    let args = json!({"every": 1000000});
    {
        let call = server.call("spin", "ticker", &args, None, in_process());
        let mut call = std::pin::pin!(call);
        // Poll the call until the ticker has made a step, then drop it.
        tokio::select! {
            r = &mut call => panic!("the ticker returned: {:?}", r.map(|c| c.outcome.result)),
            () = until_ticking(&server) => {}
        }
    }
    let waiting = std::time::Instant::now();
    let run = loop {
        if let Some(r) = ticker_run(&server).filter(|r| r.end.is_some()) {
            break r;
        }
        assert!(
            waiting.elapsed() < EVENT_WAIT,
            "the dropped call was not journaled to its end within {EVENT_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        matches!(
            run.end.as_ref().map(|e| &e.result),
            Some(tessera_journal::RunResult::Cancelled { .. })
        ),
        "{run:?}"
    );
    // Its permit comes back (the server takes one call at a time here; the
    // run's end is queued a moment before the permit is dropped).
    assert_eq!(s.add("hello", "hello").await.0, 201);
    let waiting = std::time::Instant::now();
    let args = json!({"name": "Ada"});
    let called = loop {
        match server
            .call("hello", "greet", &args, None, in_process())
            .await
        {
            Err(tessera_server::CallError::Overloaded(_)) => {
                assert!(
                    waiting.elapsed() < EVENT_WAIT,
                    "the permit did not come back within {EVENT_WAIT:?}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => break other.unwrap(),
        }
    };
    assert_eq!(called.outcome.result.unwrap(), json!("Hello, Ada!"));
    drop(server);
    s.shutdown().await;
}

/// One `tools/call` of the 2026-07-28 MCP revision (no session: the call
/// carries its protocol version and the client's capabilities): the
/// status, the head and the body of the answer.
async fn sessionless_tools_call(
    addr: SocketAddr,
    id: u64,
    tool: &str,
    arguments: Value,
) -> (u16, String, String) {
    let call = json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {
            "name": tool, "arguments": arguments,
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "0"},
                "io.modelcontextprotocol/clientCapabilities": {}
            }
        }
    })
    .to_string();
    let host = format!("127.0.0.1:{}", addr.port());
    let tool = tool.to_string();
    tokio::task::spawn_blocking(move || {
        raw_request(
            addr,
            "POST",
            "/mcp",
            &[
                ("Host", &host),
                ("Content-Type", "application/json"),
                ("Accept", "application/json, text/event-stream"),
                ("MCP-Protocol-Version", "2026-07-28"),
                ("Mcp-Method", "tools/call"),
                ("Mcp-Name", &tool),
            ],
            &call,
        )
    })
    .await
    .unwrap()
}

/// The 2026-07-28 revision has no session: a `tools/call` carries its
/// protocol version and the client's capabilities, and its one-message
/// answer comes as a plain JSON body, not as a stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_sessionless_call_is_answered_with_a_json_body() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), |_| {}).await;
    let (status, body) = s.add("hello", "hello").await;
    assert_eq!(status, 201, "{body}");
    let (status, head, body) =
        sessionless_tools_call(s.addr, 7, "hello__greet", json!({"name": "Ada"})).await;
    assert_eq!(status, 200, "{head}\n{body}");
    assert_eq!(
        header_value(&head, "content-type").as_deref(),
        Some("application/json"),
        "{head}"
    );
    assert!(header_value(&head, "mcp-session-id").is_none(), "{head}");
    let answer: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(answer["id"], 7, "{answer}");
    assert_eq!(
        answer["result"]["structuredContent"]["result"], "Hello, Ada!",
        "{answer}"
    );
    s.shutdown().await;
}

/// A trap in a component built with DWARF names guest functions with file
/// and line over HTTP, over MCP and in the journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_in_a_component_with_debug_info_names_files_and_lines_everywhere() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), |_| {}).await;
    assert_eq!(s.add("td", "trap-debug").await.0, 201);
    // The innermost frame: `innermost_divide` at src/lib.rs:34, called
    // from `middle_step` (line 25) and `outer_step` (line 20).
    let frames = [
        "innermost_divide",
        "trap-debug/src/lib.rs:34:",
        "middle_step",
        "trap-debug/src/lib.rs:25:",
        "outer_step",
        "trap-debug/src/lib.rs:20:",
    ];
    let in_order = |bt: &str| {
        let mut at = 0;
        for f in frames {
            match bt[at..].find(f) {
                Some(i) => at += i + f.len(),
                None => return false,
            }
        }
        true
    };
    let (status, v) = s
        .call(
            "POST",
            "/v1/components/td/call/divide",
            json!({"a": 6, "b": 0}),
        )
        .await;
    assert_eq!((status, &v["error"]["code"]), (422, &json!("trap")), "{v}");
    let bt = v["error"]["guest"]["backtrace"].as_str().unwrap();
    assert!(in_order(bt), "{bt}");
    // The journal keeps it.
    let run_id = v["error"]["run_id"].as_str().unwrap().to_string();
    let (status, run) = s
        .call("GET", &format!("/v1/runs/{run_id}"), json!({}))
        .await;
    assert_eq!(status, 200, "{run}");
    let recorded = run["end"]["result"]["backtrace"].as_str().unwrap_or("");
    assert!(in_order(recorded), "{run}");
    // MCP: the tool error's text carries the same frames.
    let (status, _, body) =
        sessionless_tools_call(s.addr, 1, "td__divide", json!({"a": 6, "b": 0})).await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    let text = answer["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("guest backtrace:") && in_order(text),
        "{text}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_endpoint_requires_a_call_scope() {
    let data = tempfile::tempdir().unwrap();
    let tokens = tessera_server::auth::Tokens::open(data.path());
    let (caller, _) = tokens
        .create(vec![tessera_server::auth::Scope::Call], "caller")
        .unwrap();
    let (reader, _) = tokens
        .create(vec![tessera_server::auth::Scope::Read], "reader")
        .unwrap();
    let s = start(data.path(), |c| {
        c.require_tokens = true;
        c.allowed_hosts = vec!["tessera.test".into()];
    })
    .await;
    let addr = s.addr;
    let init = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": { "name": "test", "version": "0" }
        }
    })
    .to_string();
    let host = format!("127.0.0.1:{}", addr.port());
    let results = tokio::task::spawn_blocking(move || {
        let post_to = |host: &str, token: Option<&str>| {
            let auth = token.map(|t| format!("Bearer {t}"));
            let mut headers = vec![
                ("Host", host),
                ("Content-Type", "application/json"),
                ("Accept", "application/json, text/event-stream"),
            ];
            if let Some(a) = &auth {
                headers.push(("Authorization", a.as_str()));
            }
            raw_request(addr, "POST", "/mcp", &headers, &init)
        };
        let post = |token: Option<&str>| post_to(&host, token);
        (
            post(None),
            post(Some(&reader)),
            post(Some(&caller)),
            // Host check (DNS rebinding): an added name passes, others not.
            post_to("tessera.test", Some(&caller)),
            post_to("rebound.example", Some(&caller)),
        )
    })
    .await
    .unwrap();
    assert_eq!(results.0.0, 401, "{}", results.0.2);
    assert!(
        results
            .0
            .1
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{}",
        results.0.1
    );
    assert_eq!(results.1.0, 403, "{}", results.1.2);
    assert_eq!(results.2.0, 200, "{}", results.2.2);
    assert!(results.2.2.contains("\"serverInfo\""), "{}", results.2.2);
    assert_eq!(results.3.0, 200, "{}", results.3.2);
    assert_eq!(results.4.0, 403, "{}", results.4.2);
    assert!(
        results.2.2.contains("\"listChanged\":true"),
        "{}",
        results.2.2
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_list_follows_load_swap_and_removal() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), |_| {}).await;
    let mut changes = s.server.tools_changed();
    let names = |server: &Server| -> Vec<String> {
        tessera_server::mcp::tools(server)
            .into_iter()
            .map(|t| t.tool.name.to_string())
            .collect()
    };
    let annotations = |server: &Server, name: &str| {
        tessera_server::mcp::tools(server)
            .into_iter()
            .find(|t| t.tool.name == name)
            .and_then(|t| t.tool.annotations)
            .unwrap()
    };
    assert!(names(&s.server).is_empty());
    // Load.
    assert_eq!(s.add("tool", "hello").await.0, 201);
    assert!(
        changes.has_changed().unwrap(),
        "no change signalled on load"
    );
    changes.mark_unchanged();
    let loaded = names(&s.server);
    assert!(loaded.contains(&"tool__greet".to_string()), "{loaded:?}");
    assert!(
        loaded.contains(&"tool__types__echo-u8".to_string()),
        "{loaded:?}"
    );
    // No network, no writable mount: read-only, not destructive, closed world.
    let a = annotations(&s.server, "tool__greet");
    assert_eq!(
        (a.read_only_hint, a.destructive_hint, a.open_world_hint),
        (Some(true), Some(false), Some(false))
    );
    // An HTTP grant makes a tool open-world and not read-only.
    let body = json!({ "name": "fetch", "path": component("http-fetch").display().to_string(),
        "manifest_path": write_manifest(data.path(), "[http]\nallowed_outbound_hosts = [\"https://example.com\"]\n") });
    let (status, v) = s.call("POST", "/v1/components", body).await;
    assert_eq!(status, 201, "{v}");
    let a = annotations(&s.server, "fetch__fetch");
    assert_eq!(
        (a.read_only_hint, a.open_world_hint),
        (Some(false), Some(true))
    );
    let (status, _) = s.call("DELETE", "/v1/components/fetch", json!({})).await;
    assert_eq!(status, 204);
    changes.mark_unchanged();
    // Swap to another component under the same name.
    assert_eq!(s.add("tool", "spin").await.0, 201);
    assert!(
        changes.has_changed().unwrap(),
        "no change signalled on swap"
    );
    changes.mark_unchanged();
    assert_eq!(
        names(&s.server),
        ["tool__count", "tool__spin", "tool__ticker"]
    );
    assert_eq!(
        tessera_server::mcp::resolve(&s.server, "tool__count"),
        Some(("tool".to_string(), "count".to_string()))
    );
    assert_eq!(tessera_server::mcp::resolve(&s.server, "tool__greet"), None);
    // Removal.
    let (status, _) = s.call("DELETE", "/v1/components/tool", json!({})).await;
    assert_eq!(status, 204);
    assert!(
        changes.has_changed().unwrap(),
        "no change signalled on removal"
    );
    assert!(names(&s.server).is_empty());
    s.shutdown().await;
}

/// Every route with concrete values for its parameters: (method, path,
/// whether it takes a body). `/v1/audit` is a stream and `/mcp` takes MCP
/// messages: both are here too.
fn every_route() -> Vec<(&'static str, String, bool)> {
    let mut routes: Vec<(&'static str, String, bool)> = tessera_server::openapi::ROUTES
        .iter()
        .map(|route| {
            let (method, path) = (route.method, route.path);
            let concrete = if path.contains("{function}") {
                "/v1/components/hello/call/greet".to_string()
            } else {
                path.replace("{name}", "nothing")
                    .replace("{id}", "nope")
                    .replace("{bucket}", "nothing")
                    .replace("{key}", "nope")
                    .replace("{request}", "nope")
            };
            let m: &'static str = match method {
                "get" => "GET",
                "post" => "POST",
                "put" => "PUT",
                "delete" => "DELETE",
                other => panic!("unexpected method {other}"),
            };
            (m, concrete, m == "POST" || m == "PUT")
        })
        .collect();
    routes.push(("POST", "/mcp".into(), true));
    routes.push(("GET", "/mcp".into(), false));
    routes.push(("DELETE", "/mcp".into(), false));
    routes
}

/// Like [`raw_request`], but a stream's answer (`text/event-stream`) is
/// not read past its head.
fn raw_head(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    write!(s, "{head}\r\n").unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let stream = |raw: &[u8]| {
        let text = String::from_utf8_lossy(raw).to_ascii_lowercase();
        text.contains("\r\n\r\n") && text.contains("content-type: text/event-stream")
    };
    while !stream(&raw) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_string(), body.to_string())
}

/// The value of a response header (lower-case name), if present.
fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

fn error_code(body: &str) -> Value {
    serde_json::from_str::<Value>(body).unwrap_or(Value::Null)["error"]["code"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_foreign_hosts_origins_and_content_types() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), |c| {
        c.allowed_origins = vec!["http://localhost:3000".parse().unwrap()];
    })
    .await;
    assert_eq!(s.add("hello", "hello").await.0, 201);
    let addr = s.addr;
    let own_host = format!("127.0.0.1:{}", addr.port());
    let own_origin = format!("http://{own_host}");
    tokio::task::spawn_blocking(move || {
        let mcp_accept = ("Accept", "application/json, text/event-stream");
        for (method, path, has_body) in every_route() {
            let body = if path.contains("/call/") {
                r#"{"name":"Ada"}"#
            } else if path == "/mcp" && method == "POST" {
                r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#
            } else if has_body {
                "{}"
            } else {
                ""
            };
            let send = |extra: &[(&str, &str)], body: &str| {
                let mut headers = vec![mcp_accept];
                headers.extend_from_slice(extra);
                if path == "/v1/audit"
                    || path == "/v1/agents/events"
                    || (path == "/mcp" && method == "GET")
                {
                    raw_head(addr, method, &path, &headers)
                } else {
                    raw_request(addr, method, &path, &headers, body)
                }
            };
            let what = format!("{method} {path}");
            let json = ("Content-Type", "application/json");

            // Refused: a Host this server does not answer to (DNS rebinding).
            let (status, head, text) = send(&[("Host", "rebound.example"), json], body);
            assert_eq!(status, 403, "{what}: {head}\n{text}");
            assert_eq!(error_code(&text), json!("host_not_allowed"), "{what}");
            let (status, _, text) = send(&[json], body);
            assert_eq!(
                (status, error_code(&text)),
                (403, json!("host_not_allowed")),
                "{what}: no Host"
            );

            // Refused: a foreign Origin, whatever the rest.
            for origin in ["http://evil.example", "http://localhost:3001", "null"] {
                let (status, head, text) =
                    send(&[("Host", &own_host), ("Origin", origin), json], body);
                assert_eq!(status, 403, "{what} from {origin}: {head}\n{text}");
                assert_eq!(error_code(&text), json!("origin_not_allowed"), "{what}");
                assert!(header_value(&head, "access-control-allow-origin").is_none());
            }

            // Refused: bodies that are not JSON (what a cross-site form or
            // a `text/plain` fetch sends without a preflight).
            if has_body {
                for ct in [
                    "text/plain",
                    "application/x-www-form-urlencoded",
                    "multipart/form-data; boundary=x",
                ] {
                    let (status, head, text) =
                        send(&[("Host", &own_host), ("Content-Type", ct)], body);
                    assert_eq!(status, 415, "{what} as {ct}: {head}\n{text}");
                    assert_eq!(error_code(&text), json!("unsupported_media_type"));
                }
                let (status, _, text) = send(&[("Host", &own_host)], body);
                assert_eq!(
                    (status, error_code(&text)),
                    (415, json!("unsupported_media_type"))
                );
            }

            // Allowed: loopback names, the server's own origin, and the
            // configured origin (which gets itself back, never `*`).
            for host in [own_host.as_str(), "localhost", "[::1]:1"] {
                let (status, head, text) = send(&[("Host", host), json], body);
                assert!(
                    ![403, 415, 421].contains(&status),
                    "{what} to {host}: {head}\n{text}"
                );
            }
            let (status, head, text) =
                send(&[("Host", &own_host), ("Origin", &own_origin), json], body);
            assert!(![403, 415].contains(&status), "{what}: {head}\n{text}");
            assert!(
                header_value(&head, "access-control-allow-origin").is_none(),
                "{head}"
            );
            let (status, head, text) = send(
                &[
                    ("Host", &own_host),
                    ("Origin", "http://localhost:3000"),
                    json,
                ],
                body,
            );
            assert!(![403, 415].contains(&status), "{what}: {head}\n{text}");
            assert_eq!(
                header_value(&head, "access-control-allow-origin").as_deref(),
                Some("http://localhost:3000"),
                "{what}: {head}"
            );

            // The allowed origin's preflight is answered; others are refused.
            let preflight = |origin: &str| {
                raw_request(
                    addr,
                    "OPTIONS",
                    &path,
                    &[
                        ("Host", &own_host),
                        ("Origin", origin),
                        ("Access-Control-Request-Method", method),
                        (
                            "Access-Control-Request-Headers",
                            "content-type, authorization",
                        ),
                    ],
                    "",
                )
            };
            let (status, head, _) = preflight("http://localhost:3000");
            assert_eq!(status, 204, "{what}: {head}");
            assert_eq!(
                header_value(&head, "access-control-allow-origin").as_deref(),
                Some("http://localhost:3000")
            );
            let methods = header_value(&head, "access-control-allow-methods").unwrap();
            assert!(methods.contains(method), "{methods}");
            let (status, head, _) = preflight("http://evil.example");
            assert_eq!(status, 403, "{what}: {head}");
            assert!(header_value(&head, "access-control-allow-origin").is_none());
        }
    })
    .await
    .unwrap();

    // The attack of the issue: a cross-site `text/plain` POST to a tool.
    // It is refused and the tool does not run.
    let before = s.server.journal.list().unwrap().len();
    let (status, _, text) = tokio::task::spawn_blocking(move || {
        raw_request(
            addr,
            "POST",
            "/v1/components/hello/call/greet",
            &[
                ("Host", &format!("127.0.0.1:{}", addr.port())),
                ("Origin", "http://evil.example"),
                ("Content-Type", "text/plain"),
            ],
            r#"{"name":"Mallory"}"#,
        )
    })
    .await
    .unwrap();
    assert_eq!(
        (status, error_code(&text)),
        (403, json!("origin_not_allowed"))
    );
    assert_eq!(
        s.server.journal.list().unwrap().len(),
        before,
        "the tool ran"
    );

    // Every kind of refusal is in the audit log.
    let audit = std::fs::read_to_string(data.path().join("audit.jsonl")).unwrap();
    for capability in ["host", "origin", "content-type"] {
        assert!(
            audit.lines().any(|l| {
                let e: Value = serde_json::from_str(l).unwrap();
                e["capability"] == capability && e["decision"] == "deny"
            }),
            "no {capability} refusal audited:\n{audit}"
        );
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_cannot_load_is_reported_and_not_served() {
    let data = tempfile::tempdir().unwrap();
    // Registered behind the server's back, with a manifest that does not parse.
    let registry = tessera_server::registry::Registry::open(data.path()).unwrap();
    let bytes = std::fs::read(component("hello")).unwrap();
    registry
        .add(
            "broken",
            &bytes,
            Some(("[limits\n".into(), data.path().to_path_buf())),
            "test",
        )
        .unwrap();
    let s = start(data.path(), |_| {}).await;
    // Not in the compile cache: it loads (and fails) in the background.
    s.server.loaded().await;
    assert!(s.server.active_names().is_empty());
    let failures = s.server.load_failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, "broken");
    assert!(
        matches!(*failures[0].1, tessera_server::LoadError::Manifest(_)),
        "{}",
        failures[0].1
    );
    // Fixed by a new version: served, and no longer reported.
    assert_eq!(s.add("broken", "hello").await.0, 201);
    assert_eq!(s.server.active_names(), ["broken"]);
    assert!(s.server.load_failures().is_empty());
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_secrets_reach_the_guest_but_not_the_runs_api_or_the_audit_log() {
    const SECRET: &str = "srv-secret-Q7v3-value";
    let data = tempfile::tempdir().unwrap();
    let (port, received) = tessera_test_support::http_stub();
    let s = start(data.path(), |c| {
        c.secrets.insert("api_key".into(), SECRET.into());
    })
    .await;
    let manifest = write_manifest(
        data.path(),
        &format!(
            "[config]\nsecrets = [\"api_key\"]\n[http]\nallowed_outbound_hosts = [\"http://127.0.0.1:{port}\"]\n"
        ),
    );
    let (status, v) = s
        .call(
            "POST",
            "/v1/components",
            json!({"name": "tool", "path": component("config-tool").display().to_string(), "manifest_path": manifest}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = s
        .call(
            "POST",
            "/v1/components/tool/call/call-with-key",
            json!({"key": "api_key", "url": format!("http://127.0.0.1:{port}/v1/chat")}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"], json!({"ok": 200}));
    assert!(
        received
            .lock()
            .unwrap()
            .contains(&format!("Bearer {SECRET}"))
    );
    let run_id = v["run_id"].as_str().unwrap().to_string();
    let (status, run) = s
        .call("GET", &format!("/v1/runs/{run_id}"), json!({}))
        .await;
    assert_eq!(status, 200, "{run}");
    let text = run.to_string();
    assert!(!text.contains(SECRET), "{text}");
    assert!(text.contains("hmac-sha256:"), "{text}");
    let (status, v) = s
        .call("POST", &format!("/v1/runs/{run_id}/replay"), json!({}))
        .await;
    assert_eq!((status, &v["identical"]), (200, &json!(true)), "{v}");
    s.shutdown().await;
    let audit = std::fs::read_to_string(data.path().join("audit.jsonl")).unwrap();
    assert!(!audit.contains(SECRET), "{audit}");
    // Without the secret the component does not load, and the server says
    // which field it needs.
    let s = start(data.path(), |_| {}).await;
    assert!(s.server.active_names().is_empty());
    assert!(
        s.server
            .load_failures()
            .iter()
            .any(|(name, e)| name == "tool" && e.to_string().contains("config.secrets[0]")),
        "{:?}",
        s.server.load_failures()
    );
    // Nor does such a server admit another version needing it: refused,
    // naming the field, and the registry keeps its one version.
    let (status, v) = s
        .call(
            "POST",
            "/v1/components",
            json!({"name": "tool", "path": component("hello").display().to_string(), "manifest_path": manifest}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "bad_manifest", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("config.secrets[0]"),
        "{v}"
    );
    let (_, v) = s.call("GET", "/v1/components/tool", Value::Null).await;
    assert_eq!(v["versions"].as_array().unwrap().len(), 1, "{v}");
    assert!(
        v["load_error"]
            .as_str()
            .unwrap()
            .contains("config.secrets[0]"),
        "{v}"
    );
    s.shutdown().await;
}

/// `PUT /v1/components/{name}` with a component's bytes.
async fn upload(s: &Running, name: &str, wasm: &str, manifest: Option<&str>) -> (u16, Value) {
    use base64::Engine as _;
    let bytes = std::fs::read(component(wasm)).unwrap();
    let body = json!({
        "wasm_base64": base64::engine::general_purpose::STANDARD.encode(bytes),
        "manifest": manifest,
    });
    s.call("PUT", &format!("/v1/components/{name}"), body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_that_cannot_link_is_refused_and_the_registry_is_unchanged() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), |_| {}).await;
    assert_eq!(s.add("tool", "hello").await.0, 201);
    let registry_file = data.path().join("components/registry.json");
    let before = std::fs::read(&registry_file).unwrap();

    // By path: an interface no host provides.
    let (status, v) = s.add("tool", "missing-import").await;
    assert_eq!(status, 400, "{v}");
    let e = &v["error"];
    assert_eq!(e["code"], "bad_component", "{v}");
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains("`example:missing/thing`: Tessera does not provide this interface"),
        "{message}"
    );
    assert!(message.contains("exports: add, lookup"), "{message}");
    assert!(!message.contains("wrong type"), "{message}");
    assert_eq!(
        e["unresolved_imports"][0]["import"],
        "example:missing/thing"
    );
    assert_eq!(e["unresolved_imports"][0]["reason"], "not_provided");
    assert_eq!(e["unresolved_imports"][0]["items"], json!(["get"]));
    assert_eq!(e["exports"], json!(["add", "lookup"]));

    // By upload: a WASI interface at a version Tessera does not link.
    let (status, v) = upload(&s, "tool", "wasi-future", None).await;
    assert_eq!(status, 400, "{v}");
    let u = &v["error"]["unresolved_imports"][0];
    assert_eq!(u["import"], "wasi:cli/environment@0.3.0", "{v}");
    assert_eq!(u["reason"], "other_version");
    assert_eq!(u["provided"], json!(["0.2.12"]));
    assert!(
        u["message"]
            .as_str()
            .unwrap()
            .contains("Tessera provides `wasi:cli/environment` only at 0.2.12"),
        "{u}"
    );

    // A new name is not created either.
    assert_eq!(s.add("other", "missing-import").await.0, 400);
    let (status, _) = s.call("GET", "/v1/components/other", Value::Null).await;
    assert_eq!(status, 404);

    // Nothing changed: the file, the active version, what is served.
    assert_eq!(std::fs::read(&registry_file).unwrap(), before);
    let (status, v) = s.call("GET", "/v1/components/tool", Value::Null).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["active_version"], 1);
    assert_eq!(v["versions"].as_array().unwrap().len(), 1);
    let (status, v) = s
        .call(
            "POST",
            "/v1/components/tool/call/greet",
            json!({"name": "Ada"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"], "Hello, Ada!");
    assert!(s.server.load_failures().is_empty());
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspecting_a_component_shows_functions_schemas_grants_and_versions() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), |_| {}).await;
    assert_eq!(s.add("hello", "hello").await.0, 201);
    let manifest = "[config]\nvalues = { greeting = \"Hi\" }\n[limits]\nfuel = 12345678\n";
    assert_eq!(upload(&s, "hello", "hello", Some(manifest)).await.0, 201);
    let (status, v) = s.call("GET", "/v1/components/hello", Value::Null).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["active_version"], 2);
    assert_eq!(v["previous_version"], 1);
    assert_eq!(v["loaded"], 2);
    let versions = v["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[1]["manifest"], manifest);
    // Grants of the active version, parsed, and their effects.
    let grants = &v["grants"];
    assert_eq!(grants["grants"]["limits"]["fuel"], 12345678, "{v}");
    assert_eq!(grants["grants"]["config"]["values"]["greeting"], "Hi");
    assert_eq!(grants["effects"]["network"], false);
    assert_eq!(grants["effects"]["reads"], true, "{grants}");
    // Functions with their schemas.
    let functions = v["functions"].as_array().unwrap();
    let greet = functions.iter().find(|f| f["name"] == "greet").unwrap();
    assert_eq!(greet["parameters"]["properties"]["name"]["type"], "string");
    assert_eq!(greet["result"]["type"], "string", "{greet}");
    assert!(v.get("load_error").is_none(), "{v}");
    // The listing stays short: no functions or grants.
    let (_, list) = s.call("GET", "/v1/components", Value::Null).await;
    assert!(list["components"][0].get("functions").is_none(), "{list}");
    assert!(list["components"][0].get("grants").is_none(), "{list}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_prunes_its_journal_in_the_background_under_continuous_calls() {
    const LIMIT: u64 = 2 << 20;
    const CALLS: usize = 4000;
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), |c| {
        c.retention = tessera_journal::Retention::from_toml(
            &format!("[journal]\nmax_bytes = {LIMIT}"),
            "test",
        )
        .unwrap();
    })
    .await;
    let (status, v) = s.add("hello", "hello").await;
    assert_eq!(status, 201, "{v}");
    let addr = s.addr;
    // The file's size, sampled every millisecond while the calls run.
    let path = s.server.journal.path().to_path_buf();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut largest = 0;
            while sampling.load(Ordering::SeqCst) {
                largest = largest.max(std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(1));
            }
            largest
        })
    };
    // Two callers at once, back to back, for CALLS calls.
    let done = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                while done.fetch_add(1, Ordering::SeqCst) < CALLS {
                    let (status, v) = request(
                        addr,
                        "POST",
                        "/v1/components/hello/call/greet",
                        None,
                        r#"{"name":"Ada"}"#,
                    );
                    assert_eq!(status, 200, "{v}");
                    ids.push(v["run_id"].as_str().unwrap().to_string());
                }
                ids
            })
        })
        .collect();
    let mut first = Vec::new();
    let mut last = String::new();
    for c in callers {
        let ids = c.join().unwrap();
        first.push(ids[0].clone());
        last = ids.last().unwrap().clone();
    }
    s.server.journal.flush();
    sampling.store(false, Ordering::SeqCst);
    let largest = sampler.join().unwrap();
    // The file never grew past the limit.
    assert!(
        largest <= LIMIT,
        "journal reached {largest} bytes (limit {LIMIT})"
    );
    // It pruned as it went: the first runs are gone, the last is there and
    // replays (its component's bytes were kept).
    let (status, stats) = s.call("GET", "/v1/journal", json!({})).await;
    assert_eq!(status, 200, "{stats}");
    let runs = stats["runs"].as_u64().unwrap();
    assert!(runs > 0 && runs < CALLS as u64, "{stats}");
    for id in first {
        let (status, _) = s.call("GET", &format!("/v1/runs/{id}"), json!({})).await;
        assert_eq!(status, 404);
    }
    let (status, v) = s
        .call("POST", &format!("/v1/runs/{last}/replay"), json!({}))
        .await;
    assert_eq!((status, &v["identical"]), (200, &json!(true)), "{v}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_section_curates_listing_calls_and_descriptions() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), |_| {}).await;
    let manifest = write_manifest(
        data.path(),
        "[tools]\nexclude = [\"sub\"]\n\n[tools.functions.add]\ntitle = \"Add two numbers\"\n\
         description = \"Returns a + b.\"\n",
    );
    let body = json!({ "name": "tool", "path": component("toolchain-exports").display().to_string(),
        "manifest_path": manifest });
    let (status, v) = s.call("POST", "/v1/components", body).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(s.add("internals", "toolchain-exports").await.0, 201);

    // MCP lists only what is served, with the override.
    let tools = tessera_server::mcp::tools(&s.server);
    let names: Vec<String> = tools.iter().map(|t| t.tool.name.to_string()).collect();
    assert_eq!(names, ["internals__add", "internals__sub", "tool__add"]);
    let add = &tools[2].tool;
    assert_eq!(add.title.as_deref(), Some("Add two numbers"));
    assert_eq!(add.description.as_deref(), Some("Returns a + b."));
    // Without docs or an override, the description is the signature.
    assert_eq!(
        tools[1].tool.description.as_deref(),
        Some("WIT: sub(a: u32, b: u32) -> u32")
    );
    assert_eq!(tessera_server::mcp::resolve(&s.server, "tool__sub"), None);
    assert_eq!(
        tessera_server::mcp::resolve(&s.server, "internals__exports__init"),
        None
    );

    // The HTTP API says what is served and why not.
    let (status, v) = s.call("GET", "/v1/components/tool", json!({})).await;
    assert_eq!(status, 200, "{v}");
    let by_name = |v: &Value, n: &str| {
        v["functions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["short_name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("{n} not in {v}"))
    };
    let add = by_name(&v, "add");
    assert_eq!(
        (&add["served"], &add["title"], &add["description"]),
        (
            &json!(true),
            &json!("Add two numbers"),
            &json!("Returns a + b.")
        )
    );
    let sub = by_name(&v, "sub");
    assert_eq!(sub["served"], false);
    assert!(
        sub["hidden"].as_str().unwrap().contains("tools.exclude"),
        "{sub}"
    );
    let (_, v) = s.call("GET", "/v1/components/internals", json!({})).await;
    let init = by_name(&v, "exports#init");
    assert_eq!(init["served"], false);
    assert!(
        init["hidden"].as_str().unwrap().contains("componentize-py"),
        "{init}"
    );

    // Calls over HTTP: served functions run, the others are refused
    // before anything runs or is journaled.
    let runs_before = s.server.journal.list().unwrap().len();
    let (status, v) = s
        .call(
            "POST",
            "/v1/components/tool/call/add",
            json!({"a": 2, "b": 3}),
        )
        .await;
    assert_eq!((status, &v["result"]), (200, &json!(5)), "{v}");
    let (status, v) = s
        .call(
            "POST",
            "/v1/components/tool/call/sub",
            json!({"a": 2, "b": 3}),
        )
        .await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["code"], "no_such_function");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not served"),
        "{v}"
    );
    let (status, v) = s
        .call(
            "POST",
            "/v1/components/internals/call/exports%23init",
            json!({"app-name": "a", "symbols": [], "stub-wasi": false}),
        )
        .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (404, &json!("no_such_function")),
        "{v}"
    );
    assert_eq!(s.server.journal.list().unwrap().len(), runs_before + 1);

    // A manifest naming a function the component does not export is
    // refused when it is registered, naming the field.
    let manifest = write_manifest(data.path(), "[tools]\nexclude = [\"substract\"]\n");
    let body = json!({ "name": "typo", "path": component("toolchain-exports").display().to_string(),
        "manifest_path": manifest });
    let (status, v) = s.call("POST", "/v1/components", body).await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (400, &json!("bad_manifest")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tools.exclude[0]"),
        "{v}"
    );
    assert!(s.server.active("typo").is_none());
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_over_http_carries_the_guest_stderr_logs_and_backtrace() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), |_| {}).await;
    assert_eq!(s.add("hello", "hello").await.0, 201);
    let (status, v) = s
        .call(
            "POST",
            "/v1/components/hello/call/types%23fail",
            json!({"msg": "boom-over-http"}),
        )
        .await;
    assert_eq!((status, &v["error"]["code"]), (422, &json!("trap")), "{v}");
    let guest = &v["error"]["guest"];
    let stderr = guest["stderr"].as_str().unwrap();
    assert!(
        stderr.contains("panicked") && stderr.contains("boom-over-http"),
        "{v}"
    );
    assert_eq!(guest["stderr_bytes"], stderr.len() as u64);
    assert_eq!(
        guest["logs"],
        json!([{"level": "error", "context": "fail", "message": "about to fail: boom-over-http"}])
    );
    assert_eq!(guest["log_records"], 1);
    let backtrace = guest["backtrace"].as_str().unwrap();
    assert!(backtrace.contains("fail"), "{backtrace}");

    // Bounded: a 10 000-byte message leaves the last 4096 bytes of stderr
    // and a log message cut to 1024 bytes; the counts say how much there was.
    let long = format!("{}END", "x".repeat(10_000));
    let (status, v) = s
        .call(
            "POST",
            "/v1/components/hello/call/types%23fail",
            json!({"msg": long}),
        )
        .await;
    assert_eq!(status, 422, "{v}");
    let guest = &v["error"]["guest"];
    let stderr = guest["stderr"].as_str().unwrap();
    assert_eq!(stderr.len(), tessera_server::error::STDERR_TAIL_BYTES);
    assert!(stderr.contains("xxxEND"), "the tail is kept: {stderr}");
    assert!(guest["stderr_bytes"].as_u64().unwrap() > 10_000, "{guest}");
    let message = guest["logs"][0]["message"].as_str().unwrap();
    assert!(
        message.ends_with('…') && message.len() <= 1024 + 3,
        "{message}"
    );

    // A call that returns is a 200 with the whole output, as before.
    let (status, v) = s
        .call(
            "POST",
            "/v1/components/hello/call/chatter",
            json!({"msg": "hi"}),
        )
        .await;
    assert_eq!((status, &v["stderr"]), (200, &json!("stderr: hi\n")), "{v}");
    s.shutdown().await;
}

/// Holds every compile at its start until the test releases it, and
/// records the compiles announced and ended.
#[derive(Debug, Default)]
struct HoldCompiles {
    state: std::sync::Mutex<HoldState>,
    changed: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct HoldState {
    released: bool,
    compiling: Vec<String>,
    compiled: Vec<(String, bool)>,
}

impl HoldCompiles {
    fn release(&self) {
        self.state.lock().unwrap().released = true;
        self.changed.notify_all();
    }

    /// Waits (on a blocking thread) until a compile of `name` is held.
    async fn wait_held(self: &Arc<Self>, name: &str) {
        let (me, name) = (self.clone(), name.to_string());
        tokio::task::spawn_blocking(move || {
            let mut st = me.state.lock().unwrap();
            while !st.compiling.contains(&name) {
                st = me.changed.wait(st).unwrap();
            }
        })
        .await
        .unwrap();
    }
}

impl tessera_server::LoadObserver for HoldCompiles {
    fn compiling(&self, name: &str, _version: usize, _bytes: usize) {
        let mut st = self.state.lock().unwrap();
        st.compiling.push(name.to_string());
        self.changed.notify_all();
        while !st.released {
            st = self.changed.wait(st).unwrap();
        }
    }

    fn compiled(
        &self,
        name: &str,
        _version: usize,
        _elapsed: Duration,
        outcome: Result<(), &tessera_server::LoadError>,
    ) {
        self.state
            .lock()
            .unwrap()
            .compiled
            .push((name.to_string(), outcome.is_ok()));
    }
}

/// Releases the held compiles when dropped, so a failing test does not
/// leave a blocking thread waiting forever.
struct ReleaseOnDrop(Arc<HoldCompiles>);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// A minimal MCP client over a byte stream (one JSON-RPC message a line).
struct LineClient {
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>>,
    out: tokio::io::WriteHalf<tokio::io::DuplexStream>,
    /// Notifications that arrived while waiting for an answer.
    notifications: Vec<Value>,
}

impl LineClient {
    /// Serves `server` over an in-memory pipe (the stdio handler) and
    /// connects to it.
    fn serve(
        server: &Arc<Server>,
    ) -> (
        Self,
        tokio::task::JoinHandle<Result<(), tessera_server::ServerError>>,
    ) {
        let (client, server_end) = tokio::io::duplex(1 << 16);
        let (server_in, server_out) = tokio::io::split(server_end);
        let serving = tokio::spawn(server.clone().serve_io(
            server_in,
            server_out,
            std::future::pending(),
        ));
        let (client_in, client_out) = tokio::io::split(client);
        let client = LineClient {
            lines: tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(client_in)),
            out: client_out,
            notifications: Vec::new(),
        };
        (client, serving)
    }

    /// The MCP handshake; returns the `initialize` answer.
    async fn initialize(&mut self) -> Value {
        let init = self
            .request(
                1,
                "initialize",
                json!({
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": { "name": "test", "version": "0" }
                }),
            )
            .await;
        assert_eq!(init["result"]["serverInfo"]["name"], "tessera", "{init}");
        self.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        init
    }

    async fn send(&mut self, message: Value) {
        use tokio::io::AsyncWriteExt as _;
        let mut line = message.to_string();
        line.push('\n');
        self.out.write_all(line.as_bytes()).await.unwrap();
    }

    /// Sends a request and returns its answer.
    async fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        loop {
            let line = self
                .lines
                .next_line()
                .await
                .unwrap()
                .expect("server closed");
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["id"] == json!(id) {
                return v;
            }
            self.notifications.push(v);
        }
    }

    /// Waits for a notification of `method` (or finds one already seen).
    async fn notification(&mut self, method: &str) -> Value {
        if let Some(i) = self
            .notifications
            .iter()
            .position(|n| n["method"] == method)
        {
            return self.notifications.remove(i);
        }
        loop {
            let line = self
                .lines
                .next_line()
                .await
                .unwrap()
                .expect("server closed");
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["method"] == method {
                return v;
            }
        }
    }

    async fn tool_names(&mut self, id: u64) -> Vec<String> {
        let v = self.request(id, "tools/list", json!({})).await;
        v["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("{v}"))
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    }
}

/// MCP (the stdio handler, over an in-memory pipe) and the HTTP API answer
/// while a component is still compiling: the components found in the
/// compile cache are listed at once; the compiling one is reported as
/// loading, a call to it is told to retry, and when its compile ends it
/// joins the tool list with `notifications/tools/list_changed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_answers_while_a_component_compiles_and_it_joins_later() {
    let data = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    // `hello` is in the compile cache already; `slow` (spin) is not.
    tessera_runtime::Runtime::new(tessera_runtime::RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..tessera_runtime::RuntimeConfig::default()
    })
    .unwrap()
    .load_file(&component("hello"), tessera_runtime::Grants::deny_all())
    .unwrap();
    let registry = tessera_server::registry::Registry::open(data.path()).unwrap();
    for (name, file) in [("hello", "hello"), ("slow", "spin")] {
        let bytes = std::fs::read(component(file)).unwrap();
        registry.add(name, &bytes, None, file).unwrap();
    }
    let hold = Arc::new(HoldCompiles::default());
    let _release = ReleaseOnDrop(hold.clone());
    let observer: Arc<dyn tessera_server::LoadObserver> = hold.clone();
    let s = start(data.path(), |c| {
        c.cache_dir = Some(cache.path().to_path_buf());
        c.load_observer = Some(observer);
    })
    .await;
    // The server is up with `hello`; `slow` is held in its compile.
    hold.wait_held("slow").await;
    assert_eq!(s.server.active_names(), ["hello"]);
    assert_eq!(
        s.server.active("hello").unwrap().loaded.cache_status(),
        &tessera_runtime::CacheStatus::Hit
    );
    let loading = s.server.loading_of("slow").expect("slow is loading");
    assert!(loading.compiling && loading.version == 1, "{loading:?}");
    assert_eq!(hold.state.lock().unwrap().compiling, ["slow"]);

    let (mut mcp, serving) = LineClient::serve(&s.server);
    let init = mcp.initialize().await;
    assert_eq!(
        init["result"]["capabilities"]["tools"]["listChanged"], true,
        "{init}"
    );
    let tools = mcp.tool_names(2).await;
    assert!(tools.contains(&"hello__greet".to_string()), "{tools:?}");
    assert!(!tools.iter().any(|t| t.starts_with("slow__")), "{tools:?}");
    // A call to the compiling component: a tool error saying to retry,
    // not "unknown tool".
    let v = mcp
        .request(
            3,
            "tools/call",
            json!({"name": "slow__count", "arguments": {"n": 1}}),
        )
        .await;
    assert_eq!(v["result"]["isError"], true, "{v}");
    let text = v["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        text.contains("`slow` v1 is still compiling") && text.contains("retry"),
        "{v}"
    );
    // A tool of no component at all is still a protocol error.
    let v = mcp
        .request(
            4,
            "tools/call",
            json!({"name": "nothing__x", "arguments": {}}),
        )
        .await;
    assert_eq!(v["error"]["code"], -32602, "{v}");
    let v = mcp
        .request(
            5,
            "tools/call",
            json!({"name": "hello__greet", "arguments": {"name": "Ada"}}),
        )
        .await;
    assert_eq!(
        v["result"]["structuredContent"]["result"], "Hello, Ada!",
        "{v}"
    );

    // The HTTP API says the same.
    let (status, v) = s.call("GET", "/v1/health", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            v["ready"].clone(),
            v["loading"].clone(),
            v["failed"].clone()
        ),
        (json!(1), json!(1), json!(0)),
        "{v}"
    );
    let (_, v) = s.call("GET", "/v1/components", json!({})).await;
    let slow = v["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "slow")
        .unwrap()
        .clone();
    assert_eq!(
        (slow["loaded"].clone(), slow["loading"].clone()),
        (Value::Null, json!(1)),
        "{slow}"
    );
    let addr = s.addr;
    let host = addr.to_string();
    let (status, head, body) = tokio::task::spawn_blocking(move || {
        raw_request(
            addr,
            "POST",
            "/v1/components/slow/call/count",
            &[
                ("Host", host.as_str()),
                ("Content-Type", "application/json"),
            ],
            "{\"n\": 1}",
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(error_code(&body), "loading", "{body}");
    assert_eq!(
        header_value(&head, "retry-after").as_deref(),
        Some("1"),
        "{head}"
    );

    // The compile ends: the tools change, and `slow` is served.
    hold.release();
    let n = mcp.notification("notifications/tools/list_changed").await;
    assert_eq!(n["jsonrpc"], "2.0");
    let tools = mcp.tool_names(6).await;
    assert!(tools.contains(&"slow__count".to_string()), "{tools:?}");
    let v = mcp
        .request(
            7,
            "tools/call",
            json!({"name": "slow__count", "arguments": {"n": 3}}),
        )
        .await;
    assert_ne!(v["result"]["isError"], true, "{v}");
    assert_eq!(
        hold.state.lock().unwrap().compiled,
        [("slow".to_string(), true)]
    );
    let (_, v) = s.call("GET", "/v1/health", json!({})).await;
    assert_eq!(
        (v["ready"].clone(), v["loading"].clone()),
        (json!(2), json!(0)),
        "{v}"
    );
    let (status, v) = s
        .call("POST", "/v1/components/slow/call/count", json!({"n": 2}))
        .await;
    assert_eq!(status, 200, "{v}");

    drop(mcp);
    serving.await.unwrap().unwrap();
    s.shutdown().await;
}

/// `bytes` with a custom section appended: the same code, another
/// component (its own digest and compile cache entry).
fn distinct(bytes: &[u8], tag: u8) -> Vec<u8> {
    let name = b"tessera-test";
    let mut out = bytes.to_vec();
    out.push(0); // custom section
    out.push((1 + name.len() + 1) as u8); // its size (one LEB128 byte)
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.push(tag);
    out
}

/// A server started without waiting (`Server::start`, what `serve --stdio`
/// does) answers MCP `initialize` while its components are still loading
/// from the compile cache; its first `tools/list` waits for those loads and
/// lists them all, and a call to one of them waits for its load instead of
/// being told to retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_server_answers_at_once_and_lists_every_cached_component() {
    let cache = tempfile::tempdir().unwrap();
    let hello = std::fs::read(component("hello")).unwrap();
    let names: Vec<String> = (0..12).map(|i| format!("hello{i:02}")).collect();
    // A data directory with the twelve components registered, all served
    // from the one compile cache.
    let registered = || {
        let data = tempfile::tempdir().unwrap();
        let registry = tessera_server::registry::Registry::open(data.path()).unwrap();
        for (i, name) in names.iter().enumerate() {
            registry
                .add(name, &distinct(&hello, i as u8), None, "hello")
                .unwrap();
        }
        let mut config = ServerConfig::new(data.path().to_path_buf());
        config.cache_dir = Some(cache.path().to_path_buf());
        (data, config)
    };
    // Fill the compile cache, as an earlier run of the server would have.
    let (_first_data, config) = registered();
    let first = Server::open(config).await.unwrap();
    first.loaded().await;
    assert_eq!(first.active_names(), names);
    first.stop_calls(Duration::from_secs(1)).await;

    let (_data, config) = registered();
    let server = Server::start(config).await.unwrap();
    // Returned before the loads ended: they are all from the cache.
    let loading = server.loading();
    assert!(!loading.is_empty(), "start waited for the loads");
    assert!(loading.iter().all(|l| !l.compiling), "{loading:?}");

    let (mut mcp, serving) = LineClient::serve(&server);
    mcp.initialize().await;
    let tools = mcp.tool_names(2).await;
    for name in &names {
        assert!(
            tools.contains(&format!("{name}__greet")),
            "{name} missing from the first tool list: {tools:?}"
        );
    }
    assert!(server.loading().is_empty());
    assert!(server.load_failures().is_empty());
    // Those loads are no news to the session: its first list held them.
    let again = mcp.tool_names(3).await;
    assert_eq!(again, tools);
    assert!(
        !mcp.notifications
            .iter()
            .any(|n| n["method"] == "notifications/tools/list_changed"),
        "list_changed for the loads the first list held: {:?}",
        mcp.notifications
    );
    drop(mcp);
    serving.await.unwrap().unwrap();

    // Another server, and a call right away to the component loaded last.
    let (_data, config) = registered();
    let server = Server::start(config).await.unwrap();
    let last = names.last().unwrap();
    assert!(
        server.loading_of(last).is_some(),
        "start waited for the loads"
    );
    let called = server
        .call(last, "greet", &json!({"name": "Ada"}), None, in_process())
        .await
        .unwrap_or_else(|e| panic!("a call during the load from the cache: {e}"));
    assert_eq!(called.outcome.result.unwrap(), json!("Hello, Ada!"));
}

/// The compile cache lives outside the data directory: a server on a
/// second data directory loads, from the entry the first one compiled, a
/// component registered there (a cache hit, no compiling).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_data_directory_reuses_what_the_first_compiled() {
    let cache = tempfile::tempdir().unwrap();
    let first = tempfile::tempdir().unwrap();
    let s = start(first.path(), |c| {
        c.cache_dir = Some(cache.path().to_path_buf());
    })
    .await;
    assert_eq!(s.add("hello", "hello").await.0, 201);
    assert_ne!(
        s.server.active("hello").unwrap().loaded.cache_status(),
        &tessera_runtime::CacheStatus::Hit
    );
    s.shutdown().await;

    let second = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(component("hello")).unwrap();
    tessera_server::registry::Registry::open(second.path())
        .unwrap()
        .add("greeter", &bytes, None, "hello")
        .unwrap();
    let hold = Arc::new(HoldCompiles::default());
    let _release = ReleaseOnDrop(hold.clone());
    let observer: Arc<dyn tessera_server::LoadObserver> = hold.clone();
    let s = start(second.path(), |c| {
        c.cache_dir = Some(cache.path().to_path_buf());
        c.load_observer = Some(observer);
    })
    .await;
    // Served as soon as the server opened, from the cache.
    assert_eq!(s.server.active_names(), ["greeter"]);
    assert_eq!(
        s.server.active("greeter").unwrap().loaded.cache_status(),
        &tessera_runtime::CacheStatus::Hit
    );
    assert!(hold.state.lock().unwrap().compiling.is_empty());
    assert!(!first.path().join("cache").exists() && !second.path().join("cache").exists());
    s.shutdown().await;
}

/// Registers `kv-tool` as `kv`, granted the bucket `notes`.
async fn add_kv_tool(s: &Running, data: &Path) -> (u16, Value) {
    let body = json!({ "name": "kv", "path": component("kv-tool").display().to_string(),
                       "manifest_path": write_manifest(data, "[keyvalue]\nbuckets = [\"notes\"]\n") });
    s.call("POST", "/v1/components", body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_routes_read_and_edit_what_a_component_stored() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), |_| {}).await;
    let (status, v) = add_kv_tool(&s, data.path()).await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = s.call("GET", "/v1/kv", json!({})).await;
    assert_eq!((status, &v), (200, &json!({ "buckets": [] })), "{v}");

    // The component writes through wasi:keyvalue.
    let tool = |f: &str| format!("/v1/components/kv/call/{f}");
    let (status, v) = s
        .call(
            "POST",
            &tool("set"),
            json!({"bucket": "notes", "key": "greeting", "value": "hello"}),
        )
        .await;
    assert_eq!((status, &v["result"]), (200, &json!({"ok": null})), "{v}");
    let (status, v) = s
        .call(
            "POST",
            &tool("increment"),
            json!({"bucket": "notes", "key": "visits", "delta": 2}),
        )
        .await;
    assert_eq!((status, &v["result"]), (200, &json!({"ok": 2})), "{v}");
    let deep = "a/b c/é";
    let (status, v) = s
        .call(
            "POST",
            &tool("set"),
            json!({"bucket": "notes", "key": deep, "value": "deep"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");

    // The API reads it.
    let (status, v) = s.call("GET", "/v1/kv", json!({})).await;
    assert_eq!(
        (status, &v),
        (
            200,
            &json!({ "buckets": [{ "name": "notes", "backend": "embedded" }] })
        ),
        "{v}"
    );
    let (status, v) = s.call("GET", "/v1/kv/notes", json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v,
        json!({ "bucket": "notes", "backend": "embedded",
                "keys": [deep, "greeting", "visits"], "cursor": null })
    );
    // Pages, and a prefix (percent-encoded in the query).
    let (_, v) = s.call("GET", "/v1/kv/notes?limit=2", json!({})).await;
    assert_eq!(v["keys"], json!([deep, "greeting"]), "{v}");
    assert_eq!(v["cursor"], "greeting");
    let (_, v) = s
        .call("GET", "/v1/kv/notes?limit=2&after=greeting", json!({}))
        .await;
    assert_eq!(
        (&v["keys"], &v["cursor"]),
        (&json!(["visits"]), &json!(null))
    );
    let (_, v) = s
        .call("GET", "/v1/kv/notes?prefix=a%2Fb%20", json!({}))
        .await;
    assert_eq!(v["keys"], json!([deep]), "{v}");
    let (status, v) = s.call("GET", "/v1/kv/notes?limit=1001", json!({})).await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (400, &json!("bad_query")),
        "{v}"
    );
    let (status, v) = s.call("GET", "/v1/kv/notes/greeting", json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["value"], "hello");
    assert_eq!(v["value_base64"], "aGVsbG8=");
    assert_eq!(
        (&v["bucket"], &v["key"]),
        (&json!("notes"), &json!("greeting"))
    );
    let first = v["revision"].as_u64().unwrap();
    let (_, v) = s.call("GET", "/v1/kv/notes/visits", json!({})).await;
    assert_eq!(v["value"], "2", "{v}");
    // A key with `/`, a space and `é`: the slashes as they are, or encoded.
    for path in [
        "/v1/kv/notes/a/b%20c/%C3%A9",
        "/v1/kv/notes/a%2Fb%20c%2F%C3%A9",
    ] {
        let (status, v) = s.call("GET", path, json!({})).await;
        assert_eq!(status, 200, "{path}: {v}");
        assert_eq!(
            (&v["key"], &v["value"]),
            (&json!(deep), &json!("deep")),
            "{path}"
        );
    }

    // Writes: compare-and-swap on the revision read.
    let (status, v) = s
        .call(
            "PUT",
            "/v1/kv/notes/greeting",
            json!({"value": "hi", "expect_revision": first}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let second = v["revision"].as_u64().unwrap();
    assert!(second > first, "{first} then {second}");
    // A stale revision: refused, naming what was expected and found.
    let (status, v) = s
        .call(
            "PUT",
            "/v1/kv/notes/greeting",
            json!({"value": "lost", "expect_revision": first}),
        )
        .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (409, &json!("conflict")),
        "{v}"
    );
    assert_eq!(v["error"]["expected_revision"], first);
    assert_eq!(v["error"]["found_revision"], second);
    assert_eq!(v["error"]["key"], "greeting");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "expected revision {first}, found revision {second}"
        )),
        "{message}"
    );
    // The component sees the write that won.
    let (_, v) = s
        .call(
            "POST",
            &tool("get"),
            json!({"bucket": "notes", "key": "greeting"}),
        )
        .await;
    assert_eq!(v["result"], json!({"ok": "hi"}), "{v}");
    // Absent: refused for a key that has a value, allowed for a new one.
    let (status, v) = s
        .call(
            "PUT",
            "/v1/kv/notes/greeting",
            json!({"value": "x", "expect_absent": true}),
        )
        .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (409, &json!("conflict")),
        "{v}"
    );
    assert_eq!(v["error"]["expected_absent"], true);
    assert_eq!(v["error"]["found_revision"], second);
    let (status, v) = s
        .call(
            "PUT",
            "/v1/kv/notes/fresh",
            json!({"value": "new", "expect_absent": true}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    // Bytes that are not UTF-8.
    let (status, v) = s
        .call("PUT", "/v1/kv/notes/bin", json!({"value_base64": "AP8="}))
        .await;
    assert_eq!(status, 200, "{v}");
    let (_, v) = s.call("GET", "/v1/kv/notes/bin", json!({})).await;
    assert_eq!(
        (&v["value"], &v["value_base64"]),
        (&json!(null), &json!("AP8="))
    );
    // A key with slashes written through the API, read by the component.
    let (status, v) = s
        .call("PUT", "/v1/kv/notes/x/y%20z", json!({"value": "slashed"}))
        .await;
    assert_eq!(status, 200, "{v}");
    let (_, v) = s
        .call(
            "POST",
            &tool("get"),
            json!({"bucket": "notes", "key": "x/y z"}),
        )
        .await;
    assert_eq!(v["result"], json!({"ok": "slashed"}), "{v}");

    // Bad requests.
    for (body, path) in [
        (json!({}), "$.value"),
        (
            json!({"value": "a", "value_base64": "YQ=="}),
            "$.value_base64",
        ),
        (json!({"value_base64": "not base64!"}), "$.value_base64"),
        (
            json!({"value": "a", "expect_revision": 1, "expect_absent": true}),
            "$.expect_absent",
        ),
    ] {
        let (status, v) = s.call("PUT", "/v1/kv/notes/k", body.clone()).await;
        assert_eq!(
            (status, &v["error"]["code"]),
            (400, &json!("bad_json")),
            "{body}: {v}"
        );
        assert_eq!(v["error"]["path"], path, "{body}: {v}");
    }
    let (status, v) = s
        .call("PUT", "/v1/kv/notes/k", json!({"value": "a", "ttl": 1}))
        .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (400, &json!("bad_json")),
        "{v}"
    );
    for (method, path) in [
        ("GET", "/v1/kv/bad.name"),
        ("GET", "/v1/kv/bad%20name/k"),
        ("PUT", "/v1/kv/bad.name/k"),
        ("DELETE", "/v1/kv/bad.name/k"),
    ] {
        let (status, v) = s.call(method, path, json!({"value": "a"})).await;
        assert_eq!(
            (status, &v["error"]["code"]),
            (400, &json!("invalid_bucket")),
            "{method} {path}: {v}"
        );
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("invalid bucket name `bad"), "{message}");
        assert!(message.contains("is not allowed"), "{message}");
    }
    let (status, v) = s.call("GET", "/v1/kv/notes/a%0Ab", json!({})).await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (400, &json!("invalid_key")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("control character")
    );
    // A key without a value.
    let (status, v) = s.call("GET", "/v1/kv/notes/nothing", json!({})).await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (404, &json!("no_such_key")),
        "{v}"
    );
    assert_eq!(
        (&v["error"]["bucket"], &v["error"]["key"]),
        (&json!("notes"), &json!("nothing"))
    );

    // Deletes: conditional, then unconditional.
    let (status, v) = s
        .call(
            "DELETE",
            &format!("/v1/kv/notes/greeting?expect_revision={first}"),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (409, &json!("conflict")),
        "{v}"
    );
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/v1/kv/notes/greeting?expect_revision={second}"),
            json!({}),
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = s.call("GET", "/v1/kv/notes/greeting", json!({})).await;
    assert_eq!(status, 404);
    let (_, v) = s
        .call(
            "POST",
            &tool("get"),
            json!({"bucket": "notes", "key": "greeting"}),
        )
        .await;
    assert_eq!(v["result"], json!({"ok": null}), "{v}");
    let (status, _) = s
        .call("DELETE", "/v1/kv/notes/a/b%20c/%C3%A9", json!({}))
        .await;
    assert_eq!(status, 204);
    let (status, v) = s
        .call("DELETE", "/v1/kv/notes/x?expect_revision=no", json!({}))
        .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (400, &json!("bad_query")),
        "{v}"
    );
    let (_, v) = s.call("GET", "/v1/kv/notes", json!({})).await;
    assert_eq!(v["keys"], json!(["bin", "fresh", "visits", "x/y z"]), "{v}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_reads_need_the_read_scope_and_writes_the_manage_scope() {
    use tessera_server::auth::Scope;
    let data = tempfile::tempdir().unwrap();
    let tokens = tessera_server::auth::Tokens::open(data.path());
    let (reader, _) = tokens.create(vec![Scope::Read], "reader").unwrap();
    let (admin, _) = tokens.create(vec![Scope::Manage], "admin").unwrap();
    let (caller, _) = tokens.create(vec![Scope::Call], "caller").unwrap();
    let s = start(data.path(), |c| c.require_tokens = true).await;
    let addr = s.addr;
    let results = tokio::task::spawn_blocking(move || {
        let put = |t: Option<&str>| request(addr, "PUT", "/v1/kv/notes/k", t, r#"{"value":"v"}"#);
        let get = |t: Option<&str>| request(addr, "GET", "/v1/kv/notes/k", t, "");
        let list = |t: Option<&str>| request(addr, "GET", "/v1/kv", t, "");
        let delete = |t: Option<&str>| request(addr, "DELETE", "/v1/kv/notes/k", t, "");
        vec![
            ("put without a token", put(None), 401),
            ("put with read", put(Some(&reader)), 403),
            ("put with call", put(Some(&caller)), 403),
            ("put with manage", put(Some(&admin)), 200),
            ("get with manage", get(Some(&admin)), 403),
            ("get with call", get(Some(&caller)), 403),
            ("get with read", get(Some(&reader)), 200),
            ("list with read", list(Some(&reader)), 200),
            ("list without a token", list(None), 401),
            ("delete with read", delete(Some(&reader)), 403),
            ("delete with manage", delete(Some(&admin)), 204),
            ("get after delete", get(Some(&reader)), 404),
        ]
    })
    .await
    .unwrap();
    for (what, (status, v), expected) in results {
        assert_eq!(status, expected, "{what}: {v}");
        if expected == 403 {
            assert_eq!(v["error"]["code"], "forbidden", "{what}: {v}");
        }
        if what == "get with read" {
            assert_eq!(v["value"], "v", "{what}: {v}");
        }
    }
    s.shutdown().await;
}

/// `[store]` settings serving the bucket `shared` from NATS at `url`.
fn nats_settings(url: &str) -> tessera_store::StoreSettings {
    tessera_store::StoreSettings::from_toml(
        &format!("[store.nats]\nurl = \"{url}\"\n[store.buckets]\nshared = \"nats\"\n"),
        "test settings",
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_routes_list_nats_buckets_and_answer_503_when_nats_is_down() {
    let nats = tessera_test_support::NatsServer::start();
    let data = tempfile::tempdir().unwrap();
    let url = nats.url().to_string();
    let s = start(data.path(), |c| c.store = nats_settings(&url)).await;
    let (status, v) = s
        .call("PUT", "/v1/kv/shared/k%2F1", json!({"value": "in nats"}))
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = s
        .call("PUT", "/v1/kv/notes/k", json!({"value": "embedded"}))
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = s.call("GET", "/v1/kv", json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["buckets"],
        json!([{ "name": "notes", "backend": "embedded" },
               { "name": "shared", "backend": "nats" }])
    );
    let (_, v) = s.call("GET", "/v1/kv/shared", json!({})).await;
    assert_eq!(
        (&v["backend"], &v["keys"]),
        (&json!("nats"), &json!(["k/1"])),
        "{v}"
    );
    let (_, v) = s.call("GET", "/v1/kv/shared/k%2F1", json!({})).await;
    assert_eq!(v["value"], "in nats", "{v}");
    s.shutdown().await;

    // NATS configured where nothing listens: a clear 503, not a hang, and
    // the embedded buckets still answer.
    let dead = format!("nats://127.0.0.1:{}", tessera_test_support::free_port());
    let data = tempfile::tempdir().unwrap();
    let d = dead.clone();
    let s = start(data.path(), |c| c.store = nats_settings(&d)).await;
    for path in ["/v1/kv", "/v1/kv/shared", "/v1/kv/shared/k"] {
        let began = std::time::Instant::now();
        let (status, v) = s.call("GET", path, json!({})).await;
        assert_eq!(
            (status, &v["error"]["code"]),
            (503, &json!("store_unavailable")),
            "{path}: {v}"
        );
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("nats") && message.contains(&dead),
            "{message}"
        );
        assert!(
            began.elapsed() < Duration::from_secs(25),
            "{path}: {:?}",
            began.elapsed()
        );
    }
    let (status, v) = s
        .call("PUT", "/v1/kv/notes/k", json!({"value": "still here"}))
        .await;
    assert_eq!(status, 200, "{v}");
    s.shutdown().await;
    drop(nats);
}

// ---------------------------------------------------------------------
// Plans served by the server.

/// Greets every name (a fan-out) and divides 100 by the divisor with a
/// retry; the default divisor is 0, so every attempt fails and the
/// fallback answers.
const GREETINGS_PLAN: &str = r#"
description = "Greets every name and divides with a retry and a fallback."

[inputs.names]
type = "array"
description = "Who to greet."

[inputs.divisor]
type = "integer"
default = 0

[steps.greet]
component = "hello"
function = "greet"
for_each = ".inputs.names"
concurrency = 2
args = { name = "${{ .item }}" }

[steps.share]
component = "hello"
function = "types#divide"
args = { a = 100, b = "${{ .inputs.divisor }}" }
retry = { max_attempts = 3, backoff = "10ms" }
on_error = "fallback"
fallback = "whole"

[steps.whole]
component = "hello"
function = "types#divide"
args = { a = 100, b = 1 }

[outputs]
greetings = "${{ .steps.greet.output }}"
share = "${{ .steps.share.output }}"
"#;

/// A quick step, then a long one (spin's `count` of `n`).
const LONG_PLAN: &str = r#"
description = "Counts a little, then a lot."

[inputs.n]
type = "integer"

[steps.quick]
component = "spin"
function = "count"
args = { n = 3 }

[steps.long]
component = "spin"
function = "count"
needs = ["quick"]
args = { n = "${{ .inputs.n }}" }

[outputs]
counted = "${{ .steps.long.output }}"
"#;

/// More iterations than spin's `count` finishes before the test cancels
/// it (its fuel and deadline are roomy: see [`spin_body`]).
const HUGE_N: u64 = 1 << 50;

fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads server-sent events from `path` (blocking), each `(event, data)`,
/// until `stop` says so for one or the stream ends; an answer other than
/// 200 is `Err((status, body))`.
fn read_events(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    mut stop: impl FnMut(&str, &Value) -> bool,
) -> Result<Vec<(String, Value)>, (u16, Value)> {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(EVENT_WAIT)).unwrap();
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nConnection: close\r\n"
    );
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    write!(s, "{head}\r\n").unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find_bytes(&raw, b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "closed before the head: {}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let chunked = head.contains("transfer-encoding: chunked");
    let mut rest = raw[head_end + 4..].to_vec();
    // Decodes the complete chunks at the start of `rest` into `out`;
    // true at the last chunk.
    let dechunk = |rest: &mut Vec<u8>, out: &mut Vec<u8>| -> bool {
        loop {
            let Some(eol) = find_bytes(rest, b"\r\n") else {
                return false;
            };
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16).unwrap();
            if size == 0 {
                return true;
            }
            if rest.len() < eol + 2 + size + 2 {
                return false;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest.drain(..eol + 2 + size + 2);
        }
    };
    if status != 200 {
        let _ = s.read_to_end(&mut rest);
        let mut body = Vec::new();
        if chunked {
            dechunk(&mut rest, &mut body);
        } else {
            body = rest;
        }
        return Err((status, serde_json::from_slice(&body).unwrap_or(Value::Null)));
    }
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(chunked, "{head}");
    let mut text = Vec::new();
    let mut events = Vec::new();
    loop {
        let last = dechunk(&mut rest, &mut text);
        while let Some(i) = find_bytes(&text, b"\n\n") {
            let block: Vec<u8> = text.drain(..i + 2).collect();
            let block = String::from_utf8(block).unwrap();
            let (mut name, mut data) = ("message".to_string(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            if data.is_empty() {
                continue; // a keep-alive comment
            }
            let v: Value = serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {data}"));
            let done = stop(&name, &v);
            events.push((name, v));
            if done {
                return Ok(events);
            }
        }
        if last {
            return Ok(events);
        }
        let n = s.read(&mut buf).unwrap_or(0);
        if n == 0 {
            return Ok(events);
        }
        rest.extend_from_slice(&buf[..n]);
    }
}

impl Running {
    /// Registers plan `name` with `text` over HTTP.
    async fn put_plan(&self, name: &str, text: &str) -> (u16, Value) {
        self.call("PUT", &format!("/v1/plans/{name}"), json!({ "text": text }))
            .await
    }

    /// A plan run's events until `stop` says so or the stream ends.
    async fn events(
        &self,
        id: &str,
        stop: impl FnMut(&str, &Value) -> bool + Send + 'static,
    ) -> Result<Vec<(String, Value)>, (u16, Value)> {
        let (addr, path) = (self.addr, format!("/v1/plan-runs/{id}/events"));
        tokio::task::spawn_blocking(move || read_events(addr, &path, None, stop))
            .await
            .unwrap()
    }

    /// A plan run's record and steps.
    async fn plan_run(&self, id: &str) -> Value {
        let (status, v) = self
            .call("GET", &format!("/v1/plan-runs/{id}"), json!({}))
            .await;
        assert_eq!(status, 200, "{v}");
        v
    }
}

/// The record of `step` in a plan run's detail.
fn step_record<'a>(run: &'a Value, step: &str) -> &'a Value {
    &run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == step)
        .unwrap_or_else(|| panic!("no step {step}: {run}"))["record"]
}

/// A plan step pinned to a digest runs only against a component with
/// those bytes: after a swap to other bytes the step fails, naming both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_step_pinned_to_a_digest_refuses_another_active_version() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), |_| {}).await;
    assert_eq!(s.add("hello", "hello").await.0, 201);
    let pinned = tessera_runtime::digest_of(&std::fs::read(component("hello")).unwrap());
    let plan = format!(
        "[steps.greet]\ncomponent = \"hello\"\nfunction = \"greet\"\ndigest = \"{pinned}\"\nargs = {{ name = \"Ada\" }}\n"
    );
    assert_eq!(s.put_plan("pinned", &plan).await.0, 201);
    let (status, v) = s.call("POST", "/v1/plans/pinned/runs", json!({})).await;
    assert_eq!(status, 202, "{v}");
    let id = v["run"].as_str().unwrap().to_string();
    let events = s.events(&id, |_, _| false).await.unwrap();
    assert_eq!(events.last().unwrap().1["record"]["status"], "succeeded");
    // Another version (other bytes) becomes active.
    assert_eq!(s.add("hello", "example-rust").await.0, 201);
    let swapped = tessera_runtime::digest_of(&std::fs::read(component("example-rust")).unwrap());
    let (status, v) = s.call("POST", "/v1/plans/pinned/runs", json!({})).await;
    assert_eq!(status, 202, "{v}");
    let id = v["run"].as_str().unwrap().to_string();
    let events = s.events(&id, |_, _| false).await.unwrap();
    let record = &events.last().unwrap().1["record"];
    assert_eq!(record["status"], "failed", "{record}");
    let detail = s.plan_run(&id).await;
    let error = step_record(&detail, "greet")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("pinned to") && error.contains(&pinned) && error.contains(&swapped),
        "{error}"
    );
    s.shutdown().await;
}

/// The sum of the samples of `/metrics` whose line starts with `prefix`.
fn metric_sum(s: &Running, prefix: &str) -> f64 {
    s.server
        .metrics()
        .render()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Whether an event is the attempt of `step`.
fn attempt_of(name: &str, v: &Value, step: &str) -> bool {
    name == "attempt" && v["step"] == step
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_registered_over_http_runs_watched_through_sse_and_its_calls_carry_the_plan_link() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), |_| {}).await;
    assert_eq!(s.add("hello", "hello").await.0, 201);
    let (status, v) = s.put_plan("greetings", GREETINGS_PLAN).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["tool"], "plan__greetings");
    assert!(
        data.path().join("plans/greetings.toml").is_file(),
        "not in the data directory"
    );
    // Listed and shown: text, input schema, steps in dependency order.
    let (status, v) = s.call("GET", "/v1/plans", json!({})).await;
    assert_eq!(status, 200, "{v}");
    let names: Vec<&str> = v["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["greetings"]);
    let (status, v) = s.call("GET", "/v1/plans/greetings", json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["text"], GREETINGS_PLAN);
    assert_eq!(v["input_schema"]["required"], json!(["names"]), "{v}");
    assert_eq!(v["input_schema"]["properties"]["divisor"]["default"], 0);
    let steps: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["greet", "share", "whole"], "{v}");
    assert_eq!(v["steps"][1]["fallback"], "whole");

    // Started over HTTP, in the background.
    let names = json!(["Ada", "Grace", "Linus"]);
    let (status, v) = s
        .call(
            "POST",
            "/v1/plans/greetings/runs",
            json!({ "names": names }),
        )
        .await;
    assert_eq!(status, 202, "{v}");
    let id = v["run"].as_str().unwrap().to_string();
    // Watched through SSE until `ended` (the stream ends there), from its
    // start whenever the watcher comes.
    let events = s.events(&id, |_, _| false).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"ended"), "{kinds:?}");
    for (name, v) in &events {
        assert_eq!(v["event"], name.as_str(), "event name is the tag");
    }
    assert_eq!(events[0].1["run"], id.as_str());
    // 3 greetings + 3 divisions + the fallback.
    assert_eq!(
        kinds.iter().filter(|k| **k == "attempt").count(),
        7,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "retrying").count(),
        2,
        "{kinds:?}"
    );
    let stepped: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "step")
        .map(|(_, v)| &v["step"])
        .collect();
    assert_eq!(stepped.len(), 3, "{stepped:?}");
    let ended = &events.last().unwrap().1["record"];
    assert_eq!(ended["status"], "succeeded", "{ended}");
    let expected = json!(["Hello, Ada!", "Hello, Grace!", "Hello, Linus!"]);
    assert_eq!(
        ended["outputs"],
        json!({"greetings": expected, "share": 100})
    );
    // `/metrics` counted every attempt as a plan step.
    assert_eq!(metric_sum(&s, "tessera_plan_steps_total{"), 7.0);

    // Its record and every step's.
    let run = s.plan_run(&id).await;
    assert_eq!(
        (&run["status"], &run["plan"], &run["active"]),
        (&json!("succeeded"), &json!("greetings"), &json!(false)),
        "{run}"
    );
    assert_eq!(run["inputs"], json!({"names": names, "divisor": 0}));
    assert_eq!(run["outputs"]["share"], 100);
    let greet = step_record(&run, "greet");
    assert_eq!(
        (&greet["state"], &greet["items"]),
        (&json!("succeeded"), &json!(3))
    );
    assert_eq!(greet["output"], expected);
    let share = step_record(&run, "share");
    assert_eq!(
        (&share["state"], &share["attempts"], &share["output"]),
        (&json!("fell-back"), &json!(3), &json!(100)),
        "{share}"
    );
    assert!(
        share["error"]
            .as_str()
            .unwrap()
            .contains("division by zero"),
        "{share}"
    );
    let whole = step_record(&run, "whole");
    assert_eq!(whole["state"], "succeeded");

    // Every step call is journaled through the server's call path, with
    // the plan link in its header, and released once the run ended.
    let (_, journal) = s.call("GET", "/v1/runs", json!({})).await;
    let mut calls = 0;
    for (step, rec) in [("greet", greet), ("share", share), ("whole", whole)] {
        let runs = rec["runs"].as_array().unwrap();
        assert_eq!(
            runs.len(),
            match step {
                "greet" | "share" => 3,
                _ => 1,
            },
            "{step}: {rec}"
        );
        for (i, r) in runs.iter().enumerate() {
            let r = r.as_str().unwrap();
            let (status, v) = s.call("GET", &format!("/v1/runs/{r}"), json!({})).await;
            assert_eq!(status, 200, "{v}");
            let h = &v["header"];
            assert_eq!(h["caller"]["via"], "plan", "{h}");
            assert_eq!(h["plan"]["run"], id.as_str(), "{h}");
            assert_eq!(h["plan"]["plan"], "greetings", "{h}");
            assert_eq!(h["plan"]["step"], step, "{h}");
            match step {
                "greet" => {
                    let item = h["plan"]["item"].as_u64().unwrap();
                    assert_eq!(h["plan"]["key"], format!("{id}/greet/{item}"));
                    assert_eq!(h["args"]["name"], names[item as usize]);
                }
                "share" => {
                    assert_eq!(h["plan"]["attempt"], i as u64 + 1, "{h}");
                    assert_eq!(h["plan"]["key"], format!("{id}/share"));
                }
                _ => assert_eq!(h["function"], "tessera:hello/types@0.1.0#divide", "{h}"),
            }
            let summary = journal["runs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["run_id"] == r)
                .unwrap_or_else(|| panic!("{r} not listed"));
            assert_eq!(summary["holds"], json!([]), "still held: {summary}");
            calls += 1;
        }
    }
    assert_eq!(calls, 7);

    // Listed newest first; a run that ended streams its `ended` alone; it
    // succeeded, so there is nothing to resume.
    let (status, second) = s
        .call(
            "POST",
            "/v1/plans/greetings/runs",
            json!({ "names": ["Ada"], "divisor": 4 }),
        )
        .await;
    assert_eq!(status, 202, "{second}");
    let second = second["run"].as_str().unwrap().to_string();
    let events = s.events(&second, |_, _| false).await.unwrap();
    assert_eq!(events.last().unwrap().1["record"]["outputs"]["share"], 25);
    let (status, v) = s.call("GET", "/v1/plan-runs", json!({})).await;
    assert_eq!(status, 200, "{v}");
    let ids: Vec<&str> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str(), id.as_str()], "{v}");
    let events = s.events(&id, |_, _| false).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].0.as_str(), &events[0].1["record"]["status"]),
        ("ended", &json!("succeeded"))
    );
    let (status, v) = s
        .call("POST", &format!("/v1/plan-runs/{id}/resume"), json!({}))
        .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (409, &json!("plan_run_succeeded")),
        "{v}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_plan_run_is_cancelled_over_http_and_resumed_without_repeating_finished_steps() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), |_| {}).await;
    assert_eq!(add_spin(s.addr, data.path()).await.0, 201);
    let (status, v) = s.put_plan("counting", LONG_PLAN).await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = s
        .call("POST", "/v1/plans/counting/runs", json!({ "n": HUGE_N }))
        .await;
    assert_eq!(status, 202, "{v}");
    let id = v["run"].as_str().unwrap().to_string();
    // Until the long step is running.
    let events = s
        .events(&id, |n, v| attempt_of(n, v, "long"))
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|(n, v)| n == "step" && v["step"] == "quick"),
        "{events:?}"
    );
    let run = s.plan_run(&id).await;
    assert_eq!(
        (&run["status"], &run["active"]),
        (&json!("running"), &json!(true))
    );
    let quick_runs = step_record(&run, "quick")["runs"].clone();
    let quick_run = quick_runs[0].as_str().unwrap().to_string();
    // While the plan runs, its finished step's journal run is held.
    let (_, journal) = s.call("GET", "/v1/runs", json!({})).await;
    let held = journal["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["run_id"] == quick_run.as_str())
        .unwrap()["holds"]
        .clone();
    assert_eq!(held, json!([format!("plan:{id}")]));
    // A run already driven is not resumed twice.
    let (status, v) = s
        .call("POST", &format!("/v1/plan-runs/{id}/resume"), json!({}))
        .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (409, &json!("plan_run_active")),
        "{v}"
    );

    // Cancelled over HTTP: answered once it stopped.
    let (status, v) = s
        .call("POST", &format!("/v1/plan-runs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (&v["status"], &v["active"]),
        (&json!("cancelled"), &json!(false)),
        "{v}"
    );
    let run = s.plan_run(&id).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert!(step_record(&run, "long").is_null(), "{run}");
    // The long call was cancelled, and journaled as such; the holds are
    // released.
    let (_, journal) = s.call("GET", "/v1/runs", json!({})).await;
    let runs = journal["runs"].as_array().unwrap();
    let long = runs
        .iter()
        .find(|r| r["run_id"] != quick_run.as_str())
        .unwrap_or_else(|| panic!("{journal}"));
    assert_eq!(long["end"]["result"]["status"], "cancelled", "{long}");
    assert!(runs.iter().all(|r| r["holds"] == json!([])), "{journal}");
    let (status, v) = s
        .call("POST", &format!("/v1/plan-runs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (409, &json!("plan_run_not_active")),
        "{v}"
    );

    // Resumed: the finished step is not run again.
    let (status, v) = s
        .call("POST", &format!("/v1/plan-runs/{id}/resume"), json!({}))
        .await;
    assert_eq!((status, &v["run"]), (202, &json!(id)), "{v}");
    let events = s
        .events(&id, |n, v| attempt_of(n, v, "long"))
        .await
        .unwrap();
    assert_eq!(events[0].0, "started");
    assert_eq!(events[0].1["finished"], json!(["quick"]), "{events:?}");
    assert!(
        !events.iter().any(|(n, v)| attempt_of(n, v, "quick")),
        "{events:?}"
    );
    let run = s.plan_run(&id).await;
    assert_eq!(
        (&run["status"], &run["resumes"]),
        (&json!("running"), &json!(1))
    );
    assert_eq!(step_record(&run, "quick")["runs"], quick_runs);
    let (status, v) = s
        .call("POST", &format!("/v1/plan-runs/{id}/cancel"), json!({}))
        .await;
    assert_eq!((status, &v["status"]), (200, &json!("cancelled")), "{v}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_shutdown_cancels_plan_runs_and_a_restarted_server_resumes_them() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), |_| {}).await;
    assert_eq!(add_spin(s.addr, data.path()).await.0, 201);
    assert_eq!(s.put_plan("counting", LONG_PLAN).await.0, 201);
    let (status, v) = s
        .call("POST", "/v1/plans/counting/runs", json!({ "n": HUGE_N }))
        .await;
    assert_eq!(status, 202, "{v}");
    let id = v["run"].as_str().unwrap().to_string();
    let (addr, path) = (s.addr, format!("/v1/plan-runs/{id}/events"));
    // A watcher that stays until the end.
    let watcher = tokio::task::spawn_blocking(move || read_events(addr, &path, None, |_, _| false));
    s.events(&id, |n, v| attempt_of(n, v, "long"))
        .await
        .unwrap();
    // Shutting down does not wait for the long call: the run is cancelled.
    let stopping = std::time::Instant::now();
    s.shutdown().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "shutdown waited for the plan: {:?}",
        stopping.elapsed()
    );
    let events = watcher.await.unwrap().unwrap();
    let (last, v) = events.last().unwrap();
    assert_eq!(
        (last.as_str(), &v["record"]["status"]),
        ("ended", &json!("cancelled")),
        "{events:?}"
    );

    // After a restart: cancelled, not driven, resumable.
    let s = start(data.path(), |_| {}).await;
    let run = s.plan_run(&id).await;
    assert_eq!(
        (&run["status"], &run["active"]),
        (&json!("cancelled"), &json!(false)),
        "{run}"
    );
    let (status, v) = s
        .call("POST", &format!("/v1/plan-runs/{id}/resume"), json!({}))
        .await;
    assert_eq!(status, 202, "{v}");
    let events = s
        .events(&id, |n, v| attempt_of(n, v, "long"))
        .await
        .unwrap();
    assert_eq!(events[0].1["finished"], json!(["quick"]), "{events:?}");
    let (status, v) = s
        .call("POST", &format!("/v1/plan-runs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(
        (status, &v["status"], &v["resumes"]),
        (200, &json!("cancelled"), &json!(1)),
        "{v}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_are_mcp_tools_with_their_input_schema_called_to_their_outputs_and_cancelled() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), |_| {}).await;
    assert_eq!(s.add("hello", "hello").await.0, 201);
    assert_eq!(add_spin(s.addr, data.path()).await.0, 201);
    assert_eq!(s.put_plan("greetings", GREETINGS_PLAN).await.0, 201);
    let (mut mcp, serving) = LineClient::serve(&s.server);
    mcp.initialize().await;
    let v = mcp.request(2, "tools/list", json!({})).await;
    let tools = v["result"]["tools"].as_array().unwrap();
    let tool = tools
        .iter()
        .find(|t| t["name"] == "plan__greetings")
        .unwrap_or_else(|| panic!("{v}"));
    assert!(tools.iter().any(|t| t["name"] == "hello__greet"), "{v}");
    let (_, shown) = s.call("GET", "/v1/plans/greetings", json!({})).await;
    assert_eq!(tool["inputSchema"], shown["input_schema"], "{tool}");
    assert_eq!(tool["inputSchema"]["required"], json!(["names"]));
    assert_eq!(
        tool["description"],
        "Greets every name and divides with a retry and a fallback."
    );
    // Called to its end: the outputs, structured and as text, after a
    // progress notification per finished step.
    let v = mcp
        .request(
            3,
            "tools/call",
            json!({"name": "plan__greetings", "arguments": {"names": ["Ada"], "divisor": 5},
                   "_meta": {"progressToken": "greet-1"}}),
        )
        .await;
    let progress: Vec<&Value> = mcp
        .notifications
        .iter()
        .filter(|n| n["method"] == "notifications/progress")
        .map(|n| &n["params"])
        .collect();
    assert_eq!(progress.len(), 2, "{progress:?}");
    for (i, p) in progress.iter().enumerate() {
        assert_eq!(
            (&p["progressToken"], p["progress"].as_f64(), &p["total"]),
            (&json!("greet-1"), Some(i as f64 + 1.0), &json!(3.0)),
            "{p}"
        );
    }
    // `greet` and `share` run at once: either may finish first.
    let mut messages: Vec<&str> = progress
        .iter()
        .map(|p| p["message"].as_str().unwrap())
        .collect();
    messages.sort();
    assert_eq!(
        messages,
        ["step `greet`: succeeded", "step `share`: succeeded"]
    );
    let result = &v["result"];
    assert_ne!(result["isError"], true, "{v}");
    assert_eq!(
        result["structuredContent"],
        json!({"greetings": ["Hello, Ada!"], "share": 20}),
        "{v}"
    );
    let text: Value = serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(text, result["structuredContent"]);
    let run_id = result["_meta"]["tessera/plan_run"]
        .as_str()
        .unwrap()
        .to_string();
    let run = s.plan_run(&run_id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let greet_run = step_record(&run, "greet")["runs"][0]
        .as_str()
        .unwrap()
        .to_string();
    let (_, v) = s
        .call("GET", &format!("/v1/runs/{greet_run}"), json!({}))
        .await;
    assert_eq!(v["header"]["plan"]["run"], run_id.as_str(), "{v}");
    // Bad inputs: a tool error naming the input.
    let v = mcp
        .request(
            4,
            "tools/call",
            json!({"name": "plan__greetings", "arguments": {"names": "Ada"}}),
        )
        .await;
    assert_eq!(v["result"]["isError"], true, "{v}");
    assert!(
        v["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("inputs.names"),
        "{v}"
    );

    // Adding a plan changes the tool list.
    let failing = r#"
[steps.share]
component = "hello"
function = "types#divide"
args = { a = 1, b = 0 }
"#;
    assert_eq!(s.put_plan("failing", failing).await.0, 201);
    tokio::time::timeout(
        EVENT_WAIT,
        mcp.notification("notifications/tools/list_changed"),
    )
    .await
    .expect("no list_changed");
    assert!(
        mcp.tool_names(5)
            .await
            .contains(&"plan__failing".to_string())
    );
    // A plan that fails is a tool error naming the step.
    let v = mcp
        .request(
            6,
            "tools/call",
            json!({"name": "plan__failing", "arguments": {}}),
        )
        .await;
    assert_eq!(v["result"]["isError"], true, "{v}");
    let text = v["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("step `share` failed") && text.contains("division by zero"),
        "{v}"
    );

    // MCP cancellation cancels the plan run.
    assert_eq!(s.put_plan("counting", LONG_PLAN).await.0, 201);
    tokio::time::timeout(
        EVENT_WAIT,
        mcp.notification("notifications/tools/list_changed"),
    )
    .await
    .expect("no list_changed");
    mcp.send(json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                    "params": {"name": "plan__counting", "arguments": {"n": HUGE_N}}}))
        .await;
    let waiting = std::time::Instant::now();
    let counting = loop {
        let (_, v) = s.call("GET", "/v1/plan-runs", json!({})).await;
        let found = v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["plan"] == "counting")
            .map(|r| r["id"].as_str().unwrap().to_string());
        if let Some(id) = found {
            break id;
        }
        assert!(
            waiting.elapsed() < EVENT_WAIT,
            "the plan tool never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    s.events(&counting, |n, v| attempt_of(n, v, "long"))
        .await
        .unwrap();
    mcp.send(
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                    "params": {"requestId": 7, "reason": "test"}}),
    )
    .await;
    let events = s.events(&counting, |_, _| false).await.unwrap();
    let (last, v) = events.last().unwrap();
    assert_eq!(
        (last.as_str(), &v["record"]["status"]),
        ("ended", &json!("cancelled")),
        "{events:?}"
    );

    // Removing a plan changes the tool list too.
    let (status, _) = s.call("DELETE", "/v1/plans/failing", json!({})).await;
    assert_eq!(status, 204);
    tokio::time::timeout(
        EVENT_WAIT,
        mcp.notification("notifications/tools/list_changed"),
    )
    .await
    .expect("no list_changed");
    let names = mcp.tool_names(8).await;
    assert!(!names.contains(&"plan__failing".to_string()), "{names:?}");
    let v = mcp
        .request(
            9,
            "tools/call",
            json!({"name": "plan__failing", "arguments": {}}),
        )
        .await;
    assert_eq!(v["error"]["code"], -32602, "{v}");
    // A plan added beside the server (as `tessera plans add` does) is
    // noticed too.
    mcp.notifications.clear();
    tessera_server::plan_registry::PlanRegistry::open(data.path())
        .unwrap()
        .put("beside", failing, data.path(), "beside.toml")
        .unwrap();
    tokio::time::timeout(
        EVENT_WAIT,
        mcp.notification("notifications/tools/list_changed"),
    )
    .await
    .expect("no list_changed");
    assert!(
        mcp.tool_names(10)
            .await
            .contains(&"plan__beside".to_string())
    );
    drop(mcp);
    serving.await.unwrap().unwrap();
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_routes_need_their_scopes_and_an_invalid_plan_is_refused_with_its_place() {
    use tessera_server::auth::Scope;
    let data = tempfile::tempdir().unwrap();
    let tokens = tessera_server::auth::Tokens::open(data.path());
    let (reader, _) = tokens.create(vec![Scope::Read], "reader").unwrap();
    let (caller, caller_record) = tokens.create(vec![Scope::Call], "caller").unwrap();
    let (admin, _) = tokens.create(vec![Scope::Manage], "admin").unwrap();
    let s = start(data.path(), |c| c.require_tokens = true).await;
    let addr = s.addr;
    let path = component("hello").display().to_string();
    let valid = json!({ "text": GREETINGS_PLAN }).to_string();
    let bad_expression = json!({
        "text": GREETINGS_PLAN.replace(r#"for_each = ".inputs.names""#, r#"for_each = ".inputs.names |""#),
        "origin": "greetings.plan.toml",
    })
    .to_string();
    let file_path = json!({ "text": GREETINGS_PLAN.replacen(r#"component = "hello""#, r#"component = "../hello.wasm""#, 1) })
        .to_string();
    let (r, c, a) = (reader.clone(), caller.clone(), admin.clone());
    let answers = tokio::task::spawn_blocking(move || {
        let add = json!({ "name": "hello", "path": path }).to_string();
        let added = request(addr, "POST", "/v1/components", Some(&a), &add);
        let put = |token: &str, body: &str| {
            request(addr, "PUT", "/v1/plans/greetings", Some(token), body)
        };
        let runs = "/v1/plans/greetings/runs";
        let inputs = r#"{"names": ["Ada"], "divisor": 2}"#;
        (
            added,
            put(&c, &valid),
            put(&r, &valid),
            put(&a, &bad_expression),
            put(&a, &file_path),
            request(addr, "PUT", "/v1/plans/Bad", Some(&a), &valid),
            put(&a, &valid),
            request(addr, "POST", runs, Some(&r), inputs),
            request(addr, "POST", runs, Some(&a), inputs),
            request(
                addr,
                "POST",
                runs,
                Some(&c),
                r#"{"names": ["Ada"], "nope": 1}"#,
            ),
            request(addr, "POST", "/v1/plans/nothing/runs", Some(&c), "{}"),
            request(addr, "POST", runs, Some(&c), inputs),
            request(addr, "GET", "/v1/plans", Some(&c), ""),
            request(addr, "GET", "/v1/plans", Some(&r), ""),
            request(addr, "GET", "/v1/plan-runs/nope", Some(&r), ""),
            request(addr, "DELETE", "/v1/plans/greetings", Some(&c), ""),
        )
    })
    .await
    .unwrap();
    let code = |a: &(u16, Value)| (a.0, a.1["error"]["code"].clone());
    assert_eq!(answers.0.0, 201, "{}", answers.0.1);
    assert_eq!(
        code(&answers.1),
        (403, json!("forbidden")),
        "call cannot add plans"
    );
    assert_eq!(
        code(&answers.2),
        (403, json!("forbidden")),
        "read cannot add plans"
    );
    // An invalid plan: refused with the place and the file.
    let e = &answers.3.1["error"];
    assert_eq!((answers.3.0, &e["code"]), (400, &json!("bad_plan")), "{e}");
    assert_eq!(
        (&e["place"], &e["file"]),
        (
            &json!("steps.greet.for_each"),
            &json!("greetings.plan.toml")
        ),
        "{e}"
    );
    // A step given as a file: refused, naming it.
    let e = &answers.4.1["error"];
    assert_eq!((answers.4.0, &e["code"]), (400, &json!("bad_plan")), "{e}");
    assert_eq!(e["place"], "steps.greet.component", "{e}");
    assert_eq!(code(&answers.5), (400, json!("invalid_name")));
    assert_eq!(answers.6.0, 201, "{}", answers.6.1);
    assert!(!data.path().join("plans/Bad.toml").exists());
    // Checked against the components served here, every problem at once:
    // a component not registered, an argument of the wrong type.
    let mismatched = json!({ "text": GREETINGS_PLAN
        .replacen(r#"component = "hello""#, r#"component = "nope""#, 1)
        .replace(r#"args = { a = 100, b = 1 }"#, r#"args = { a = "x", b = 1 }"#) })
    .to_string();
    let admin_token = admin.clone();
    let (status, v) = tokio::task::spawn_blocking(move || {
        request(
            addr,
            "PUT",
            "/v1/plans/mismatched",
            Some(&admin_token),
            &mismatched,
        )
    })
    .await
    .unwrap();
    let e = &v["error"];
    assert_eq!(
        (status, &e["code"], &e["place"]),
        (400, &json!("bad_plan"), &json!("steps.greet.component")),
        "{e}"
    );
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains("`nope` is not registered") && message.contains("steps.whole.args.a"),
        "{message}"
    );
    assert!(!data.path().join("plans/mismatched.toml").exists());
    // Starting a run needs `call`.
    assert_eq!(
        code(&answers.7),
        (403, json!("forbidden")),
        "read cannot start a run"
    );
    assert_eq!(
        code(&answers.8),
        (403, json!("forbidden")),
        "manage cannot start a run"
    );
    let e = &answers.9.1["error"];
    assert_eq!(
        (answers.9.0, &e["code"], &e["place"]),
        (400, &json!("bad_inputs"), &json!("inputs.nope")),
        "{e}"
    );
    assert_eq!(code(&answers.10), (404, json!("no_such_plan")));
    assert_eq!(answers.11.0, 202, "{}", answers.11.1);
    assert_eq!(
        code(&answers.12),
        (403, json!("forbidden")),
        "reading plans needs `read`"
    );
    assert_eq!(answers.13.0, 200, "{}", answers.13.1);
    assert_eq!(code(&answers.14), (404, json!("no_such_plan_run")));
    assert_eq!(
        code(&answers.15),
        (403, json!("forbidden")),
        "call cannot remove plans"
    );
    // The run a `call` token started: watched with `read`, its calls name
    // the token.
    let id = answers.11.1["run"].as_str().unwrap().to_string();
    let (r, path) = (reader.clone(), format!("/v1/plan-runs/{id}/events"));
    let events =
        tokio::task::spawn_blocking(move || read_events(addr, &path, Some(&r), |_, _| false))
            .await
            .unwrap()
            .unwrap();
    let ended = &events.last().unwrap().1["record"];
    assert_eq!(ended["outputs"]["share"], 50, "{ended}");
    let (c, path) = (caller.clone(), format!("/v1/plan-runs/{id}/events"));
    let refused =
        tokio::task::spawn_blocking(move || read_events(addr, &path, Some(&c), |_, _| false))
            .await
            .unwrap();
    assert_eq!(refused.unwrap_err().0, 403, "events need `read`");
    s.server.journal.flush();
    let runs = s.server.journal.list().unwrap();
    let linked: Vec<_> = runs.iter().filter(|r| r.header.plan.is_some()).collect();
    assert_eq!(linked.len(), 2, "{runs:?}");
    for r in linked {
        assert_eq!(
            r.header.caller,
            Some(tessera_journal::Caller {
                via: "plan".into(),
                token: Some(caller_record.id.clone()),
            })
        );
    }
    s.shutdown().await;
}

// Agents.

/// The manifest of the `probe` agent: it may send to any agent and spawn
/// `kid` children (itself).
const PROBE_MANIFEST: &str = "[agent]\nsend = [\"*\"]\n[agent.spawn.kid]\ncomponent = \"probe\"\n";

/// A probe agent with a one-message mailbox whose `cities` tool waits for
/// a person's approval: a tool call holds it.
const HELD_MANIFEST: &str =
    "[agent]\nmailbox = 1\n[agent.tools.cities]\ncomponent = \"city-facts\"\napproval = true\n";

impl Running {
    /// A request with a token (or none).
    async fn call_as(
        &self,
        method: &'static str,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
        let (addr, path, body) = (self.addr, path.to_string(), body.to_string());
        let token = token.map(str::to_string);
        tokio::task::spawn_blocking(move || request(addr, method, &path, token.as_deref(), &body))
            .await
            .unwrap()
    }

    /// Registers `components/<wasm>.wasm` under `name` with a manifest.
    async fn add_with_manifest(
        &self,
        name: &str,
        wasm: &str,
        manifest: &str,
        dir: &Path,
        token: Option<&str>,
    ) -> (u16, Value) {
        let manifest_dir = dir.join(format!("manifest-{name}"));
        std::fs::create_dir_all(&manifest_dir).unwrap();
        let body = json!({ "name": name, "path": component(wasm).display().to_string(),
                           "manifest_path": write_manifest(&manifest_dir, manifest) });
        self.call_as("POST", "/v1/components", token, body).await
    }

    /// Polls `GET /v1/agents/{id}` until `done` holds for it.
    async fn agent_until(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let started = std::time::Instant::now();
        loop {
            let (status, v) = self
                .call("GET", &format!("/v1/agents/{id}"), json!({}))
                .await;
            assert_eq!(status, 200, "{v}");
            if done(&v) {
                return v;
            }
            assert!(started.elapsed() < EVENT_WAIT, "agent {id} stays at {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_are_spawned_messaged_inspected_forked_and_restarted_over_http() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), |_| {}).await;
    let (status, v) = s
        .add_with_manifest("probe", "probe-agent", PROBE_MANIFEST, data.path(), None)
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(s.add("hello", "hello").await.0, 201);

    // Spawned from the registry: two agents.
    for id in ["a", "b"] {
        let (status, v) = s
            .call(
                "POST",
                "/v1/agents",
                json!({"id": id, "component": "probe"}),
            )
            .await;
        assert_eq!(status, 201, "{v}");
        assert_eq!(
            (&v["id"], &v["status"], &v["component"], &v["turns"]),
            (&json!(id), &json!("active"), &json!("probe"), &json!(0)),
            "{v}"
        );
        assert_eq!(v["tool"], format!("agent__{id}"), "{v}");
    }
    // Refused: an id taken, a component not registered, one that is no
    // agent, a path, an id with `/`, a manifest.
    let refusals = [
        (
            json!({"id": "a", "component": "probe"}),
            409,
            "agent_exists",
        ),
        (
            json!({"id": "c", "component": "nothing"}),
            404,
            "no_such_component",
        ),
        (
            json!({"id": "c", "component": "hello"}),
            400,
            "bad_component",
        ),
        (
            json!({"id": "c", "component": component("probe-agent").display().to_string()}),
            400,
            "bad_component",
        ),
        (
            json!({"id": "c/d", "component": "probe"}),
            400,
            "invalid_agent_id",
        ),
        (
            json!({"id": "C", "component": "probe"}),
            400,
            "invalid_agent_id",
        ),
        (
            json!({"id": "c", "component": "probe", "manifest": "/m.toml"}),
            400,
            "bad_json",
        ),
    ];
    for (body, status, code) in refusals {
        let (got, v) = s.call("POST", "/v1/agents", body.clone()).await;
        assert_eq!(
            (got, &v["error"]["code"]),
            (status, &json!(code)),
            "{body}: {v}"
        );
    }
    assert!(
        s.server.agents().await.unwrap().get("c").await.is_err(),
        "a refused spawn created the agent"
    );

    // A message with wait: the reply of its turn, and its journal run.
    let (status, v) = s
        .call(
            "POST",
            "/v1/agents/a/messages",
            json!({"body": {"op": "append", "value": 7}, "wait": true}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (&v["reply"], &v["turn"], &v["agent"]),
        (&json!(1), &json!(1), &json!("a")),
        "{v}"
    );
    let run = v["run"].as_str().unwrap().to_string();
    let (status, journaled) = s.call("GET", &format!("/v1/runs/{run}"), json!({})).await;
    assert_eq!(status, 200, "{journaled}");
    assert_eq!(journaled["header"]["caller"]["via"], "http", "{journaled}");
    // The committed turn is counted by `/metrics` (its event arrives just
    // after the reply).
    let mut turns = 0.0;
    for _ in 0..200 {
        turns = metric_sum(&s, "tessera_agent_events_total{event=\"turn\"}");
        if turns >= 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(turns, 1.0);
    // Without wait: 202 once it is in the mailbox. `a` sends three
    // messages to `b`, delivered after its turn commits.
    let (status, v) = s
        .call(
            "POST",
            "/v1/agents/a/messages",
            json!({"body": {"op": "sendn", "to": "b", "n": 3}, "id": "fan-out"}),
        )
        .await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["message"], "fan-out", "{v}");
    s.agent_until("b", |v| v["turns"] == 3 && v["depth"] == 0)
        .await;
    let (status, v) = s
        .call(
            "POST",
            "/v1/agents/b/ask",
            json!({"body": "{\"op\":\"state\"}"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["reply"], json!([0, 1, 2]), "{v}");
    // The same message id again is delivered once.
    let (status, _) = s
        .call(
            "POST",
            "/v1/agents/a/messages",
            json!({"body": {"op": "sendn", "to": "b", "n": 3}, "id": "fan-out"}),
        )
        .await;
    assert_eq!(status, 202);

    // Listed and shown.
    let (status, v) = s.call("GET", "/v1/agents", json!({})).await;
    assert_eq!(status, 200, "{v}");
    let ids: Vec<&str> = v["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"], "{v}");
    let (_, page) = s.call("GET", "/v1/agents?limit=1", json!({})).await;
    assert_eq!(page["agents"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["cursor"], "a", "{page}");
    let (_, page) = s.call("GET", "/v1/agents?after=a", json!({})).await;
    assert_eq!(page["agents"][0]["id"], "b", "{page}");
    assert!(page["cursor"].is_null(), "{page}");
    let a = s.agent_until("a", |v| v["turns"] == 2).await;
    assert_eq!(
        (
            &a["depth"],
            &a["dead_letters"],
            &a["approvals_waiting"],
            &a["state"]
        ),
        (&json!(0), &json!(0), &json!([]), &json!("[7]")),
        "{a}"
    );

    // The turn log: messages, replies, sends, and the agent operations of
    // each turn's journal run.
    let (status, log) = s.call("GET", "/v1/agents/a/turns", json!({})).await;
    assert_eq!(status, 200, "{log}");
    let turns = log["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 2, "{log}");
    assert_eq!(turns[0]["reply"], "1", "{log}");
    assert_eq!(turns[0]["run"], run.as_str(), "{log}");
    assert_eq!(turns[1]["message"]["id"], "fan-out", "{log}");
    let sent = turns[1]["sent"].as_array().unwrap();
    assert_eq!(sent.len(), 3, "{log}");
    assert!(sent.iter().all(|m| m["to"] == "b"), "{log}");
    let exchanges = turns[1]["exchanges"].as_array().unwrap();
    assert_eq!(exchanges.len(), 3, "{log}");
    assert!(
        exchanges
            .iter()
            .all(|x| x["kind"] == "agent.send" && x["line"].as_str().unwrap().contains("to b")),
        "{log}"
    );
    assert!(
        turns[0]["exchanges"].as_array().unwrap().is_empty(),
        "{log}"
    );
    let (_, page) = s.call("GET", "/v1/agents/a/turns?limit=1", json!({})).await;
    assert_eq!(
        (page["turns"].as_array().unwrap().len(), &page["cursor"]),
        (1, &json!(1))
    );
    let (_, page) = s.call("GET", "/v1/agents/a/turns?after=1", json!({})).await;
    assert_eq!(page["turns"][0]["turn"], 2, "{page}");

    // An unknown agent.
    for (method, path, body) in [
        ("GET", "/v1/agents/nobody", json!({})),
        ("GET", "/v1/agents/nobody/turns", json!({})),
        ("POST", "/v1/agents/nobody/messages", json!({"body": "hi"})),
        ("POST", "/v1/agents/nobody/ask", json!({"body": "hi"})),
        ("POST", "/v1/agents/nobody/restart", json!({})),
    ] {
        let (status, v) = s.call(method, path, body).await;
        assert_eq!(
            (status, &v["error"]["code"], &v["error"]["agent"]),
            (404, &json!("no_such_agent"), &json!("nobody")),
            "{method} {path}: {v}"
        );
    }

    // A child: its id has a `/`, percent-encoded in paths; it is no MCP
    // tool.
    let (status, v) = s
        .call(
            "POST",
            "/v1/agents/a/ask",
            json!({"body": {"op": "spawn", "name": "kid", "template": "kid"}}),
        )
        .await;
    assert_eq!((status, &v["reply"]["id"]), (200, &json!("a/kid")), "{v}");
    let (status, kid) = s.call("GET", "/v1/agents/a%2Fkid", json!({})).await;
    assert_eq!((status, &kid["parent"]), (200, &json!("a")), "{kid}");
    assert!(
        kid["tool"].as_str().unwrap().starts_with("agent__a-kid-"),
        "{kid}"
    );
    let (status, v) = s
        .call(
            "POST",
            "/v1/agents/a%2Fkid/ask",
            json!({"body": {"op": "append", "value": "k"}}),
        )
        .await;
    assert_eq!(
        (status, &v["reply"], &v["agent"]),
        (200, &json!(1), &json!("a/kid")),
        "{v}"
    );

    // A turn that fails for good: 422, and its message is a dead letter
    // that can be re-driven.
    let (status, v) = s
        .call(
            "POST",
            "/v1/agents/b/ask",
            json!({"body": {"op": "fail", "message": "boom"}, "id": "doomed"}),
        )
        .await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(
        (
            &v["error"]["code"],
            &v["error"]["agent"],
            &v["error"]["agent_message"]
        ),
        (&json!("turn_failed"), &json!("b"), &json!("doomed")),
        "{v}"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("boom"),
        "{v}"
    );
    let (status, dead) = s.call("GET", "/v1/agents/b/dead-letters", json!({})).await;
    assert_eq!(status, 200, "{dead}");
    let letters = dead["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{dead}");
    assert_eq!(letters[0]["message"]["id"], "doomed", "{dead}");
    assert!(
        letters[0]["error"].as_str().unwrap().contains("boom"),
        "{dead}"
    );
    assert!(!letters[0]["runs"].as_array().unwrap().is_empty(), "{dead}");
    let seq = letters[0]["seq"].as_u64().unwrap();
    let b = s.agent_until("b", |_| true).await;
    assert_eq!(b["dead_letters"], 1, "{b}");
    let (status, v) = s
        .call(
            "POST",
            "/v1/agents/b/dead-letters/redrive",
            json!({"seq": seq + 100}),
        )
        .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (404, &json!("no_such_agent_entry")),
        "{v}"
    );
    let (status, v) = s
        .call("POST", "/v1/agents/b/dead-letters/redrive", json!({}))
        .await;
    assert_eq!(status, 200, "{v}");
    let redriven = format!("doomed~redrive{seq}");
    assert_eq!(v["messages"], json!([redriven]), "{v}");
    // It runs again (and fails again): the dead letter is the new one.
    let started = std::time::Instant::now();
    loop {
        let (_, dead) = s.call("GET", "/v1/agents/b/dead-letters", json!({})).await;
        let ids: Vec<&Value> = dead["dead_letters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| &d["message"]["id"])
            .collect();
        if ids == [&json!(redriven)] {
            break;
        }
        assert!(
            ids.is_empty() && started.elapsed() < EVENT_WAIT,
            "after the redrive: {dead}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Forked after turn 1: the state then, the log up to there.
    let (status, v) = s
        .call("POST", "/v1/agents/a/fork", json!({"at": 1, "as": "a2"}))
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(
        (&v["id"], &v["turns"], &v["state"]),
        (&json!("a2"), &json!(1), &json!("[7]")),
        "{v}"
    );
    let (status, v) = s
        .call("POST", "/v1/agents/a/fork", json!({"at": 99, "as": "a3"}))
        .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (404, &json!("no_such_agent_entry")),
        "{v}"
    );
    let (status, v) = s
        .call(
            "POST",
            "/v1/agents/a2/ask",
            json!({"body": {"op": "append", "value": 8}}),
        )
        .await;
    assert_eq!(
        (status, &v["reply"], &v["turn"]),
        (200, &json!(2), &json!(2)),
        "{v}"
    );

    // Restarted: back to its initial state (none).
    let (status, v) = s.call("POST", "/v1/agents/a/restart", json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (&v["status"], &v["restarts"]),
        (&json!("active"), &json!(1)),
        "{v}"
    );
    assert!(v["state"].is_null(), "{v}");
    let (_, v) = s
        .call(
            "POST",
            "/v1/agents/a/ask",
            json!({"body": {"op": "append", "value": 9}}),
        )
        .await;
    assert_eq!(v["reply"], 1, "{v}");

    // An agent named `events` is shown with its name percent-encoded.
    let (status, v) = s
        .call(
            "POST",
            "/v1/agents",
            json!({"id": "events", "component": "probe"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = s.call("GET", "/v1/agents/%65vents", json!({})).await;
    assert_eq!((status, &v["id"]), (200, &json!("events")), "{v}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_held_by_an_approval_fills_its_mailbox_and_goes_on_once_approved_over_http() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), |_| {}).await;
    assert_eq!(s.add("city-facts", "city-facts").await.0, 201);
    let (status, v) = s
        .add_with_manifest("held", "probe-agent", HELD_MANIFEST, data.path(), None)
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = s
        .call(
            "POST",
            "/v1/agents",
            json!({"id": "h", "component": "held"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["mailbox"], 1, "{v}");
    // Its tool call waits for a person; the sender waits for the reply.
    let addr = s.addr;
    let asking = tokio::task::spawn_blocking(move || {
        let body = json!({"body": {"op": "tool", "name": "cities__cities", "args": {"country": null}},
                          "timeout_ms": 120_000});
        request(addr, "POST", "/v1/agents/h/ask", None, &body.to_string())
    });
    let h = s.agent_until("h", |v| v["status"] == "waiting").await;
    let waiting = h["approvals_waiting"].as_array().unwrap();
    assert_eq!(waiting.len(), 1, "{h}");
    assert_eq!(waiting[0]["tool"], "cities__cities", "{h}");
    let request_id = h["waiting_for"].as_str().unwrap().to_string();
    assert_eq!(waiting[0]["request"], request_id.as_str(), "{h}");
    // The held message fills the one-message mailbox.
    let (status, v) = s
        .call(
            "POST",
            "/v1/agents/h/messages",
            json!({"body": {"op": "noop"}}),
        )
        .await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(
        (
            &v["error"]["code"],
            &v["error"]["limit"],
            &v["error"]["agent"]
        ),
        (&json!("mailbox_full"), &json!(1), &json!("h")),
        "{v}"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("full"),
        "{v}"
    );
    // `/metrics` shows the held message.
    assert_eq!(mailbox_depth(s.addr, "h").await, (Some(1), 1));
    let (status, v) = s.call("GET", "/v1/agents/h/approvals", json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["approvals"].as_array().unwrap().len(), 1, "{v}");
    assert!(v["approvals"][0]["decision"].is_null(), "{v}");
    let (status, v) = s
        .call(
            "POST",
            "/v1/agents/h/approvals/nope",
            json!({"approved": true}),
        )
        .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (404, &json!("no_such_agent_entry")),
        "{v}"
    );
    // Approved over HTTP: the held turn goes on and the sender gets its
    // reply.
    let path = format!("/v1/agents/h/approvals/{request_id}");
    let (status, v) = s
        .call("POST", &path, json!({"approved": true, "reason": "fine"}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (
            &v["approval"]["decision"]["approved"],
            &v["approval"]["decision"]["by"]
        ),
        (&json!(true), &json!("http")),
        "{v}"
    );
    let (status, v) = asking.await.unwrap();
    assert_eq!(status, 200, "{v}");
    let result = v["reply"]["result"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"));
    assert!(!result.is_empty(), "{v}");
    let (status, v) = s.call("POST", &path, json!({"approved": false})).await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (409, &json!("agent_conflict")),
        "{v}"
    );
    let h = s.agent_until("h", |v| v["status"] == "active").await;
    assert_eq!((&h["turns"], &h["depth"]), (&json!(1), &json!(0)), "{h}");
    assert_eq!(mailbox_depth(s.addr, "h").await, (None, 0));
    // Room again.
    let (status, v) = s
        .call(
            "POST",
            "/v1/agents/h/messages",
            json!({"body": {"op": "noop"}}),
        )
        .await;
    assert_eq!(status, 202, "{v}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_routes_need_their_scopes_and_events_stream_over_sse() {
    use tessera_server::auth::Scope;
    let data = tempfile::tempdir().unwrap();
    let tokens = tessera_server::auth::Tokens::open(data.path());
    let (reader, _) = tokens.create(vec![Scope::Read], "reader").unwrap();
    let (caller, caller_record) = tokens.create(vec![Scope::Call], "caller").unwrap();
    let (admin, _) = tokens.create(vec![Scope::Manage], "admin").unwrap();
    let s = start(data.path(), |c| c.require_tokens = true).await;
    let (status, v) = s
        .add_with_manifest(
            "probe",
            "probe-agent",
            PROBE_MANIFEST,
            data.path(),
            Some(&admin),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let spawn = |id: &str| json!({"id": id, "component": "probe"});
    for token in [&reader, &caller] {
        let (status, v) = s
            .call_as("POST", "/v1/agents", Some(token), spawn("a"))
            .await;
        assert_eq!(
            (status, &v["error"]["code"]),
            (403, &json!("forbidden")),
            "{v}"
        );
    }
    let (status, v) = s.call_as("POST", "/v1/agents", None, spawn("a")).await;
    assert_eq!(status, 401, "{v}");
    for id in ["a", "b"] {
        let (status, v) = s
            .call_as("POST", "/v1/agents", Some(&admin), spawn(id))
            .await;
        assert_eq!(status, 201, "{v}");
    }
    // Reading needs `read`; sending `call`.
    let noop = json!({"body": {"op": "noop"}});
    let (status, v) = s
        .call_as("POST", "/v1/agents/a/messages", Some(&reader), noop.clone())
        .await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (403, &json!("forbidden")),
        "{v}"
    );
    let (status, v) = s
        .call_as("POST", "/v1/agents/a/ask", Some(&admin), noop.clone())
        .await;
    assert_eq!(status, 403, "{v}");
    let (status, v) = s
        .call_as("GET", "/v1/agents", Some(&caller), json!({}))
        .await;
    assert_eq!(status, 403, "{v}");
    let (status, v) = s
        .call_as("GET", "/v1/agents", Some(&reader), json!({}))
        .await;
    assert_eq!(
        (status, v["agents"].as_array().map(Vec::len)),
        (200, Some(2)),
        "{v}"
    );
    let (status, v) = s
        .call_as("POST", "/v1/agents/a/restart", Some(&caller), json!({}))
        .await;
    assert_eq!(status, 403, "{v}");

    // The events of `a` (and its subtree), as server-sent events: one
    // reader watches while messages go to `b`, then to `a`, until it sees
    // a turn of `a`.
    let addr = s.addr;
    let r = reader.clone();
    let watching = tokio::task::spawn_blocking(move || {
        read_events(addr, "/v1/agents/events?agent=a", Some(&r), |name, v| {
            name == "turn" && v["agent"] == "a"
        })
    });
    let mut sent = Vec::new();
    let started = std::time::Instant::now();
    while !watching.is_finished() {
        assert!(started.elapsed() < EVENT_WAIT, "no turn event");
        for to in ["b", "a"] {
            let (status, v) = s
                .call_as(
                    "POST",
                    &format!("/v1/agents/{to}/messages"),
                    Some(&caller),
                    noop.clone(),
                )
                .await;
            assert_eq!(status, 202, "{v}");
            sent.push(v["message"].as_str().unwrap().to_string());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = watching.await.unwrap().unwrap();
    assert!(
        events.iter().all(|(_, v)| v["agent"] == "a"),
        "the filter let other agents through: {events:?}"
    );
    let (name, turn) = events.last().unwrap();
    assert_eq!(name, "turn");
    assert_eq!(turn["event"], "turn", "{turn}");
    assert!(
        sent.contains(&turn["message"].as_str().unwrap().to_string()),
        "{turn}"
    );
    let run = turn["run"].as_str().unwrap().to_string();
    // Its run names the HTTP agent system; a reader may read it.
    let (status, v) = s
        .call_as("GET", &format!("/v1/runs/{run}"), Some(&reader), json!({}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["header"]["caller"]["via"], "http", "{v}");
    // Events need `read`.
    let c = caller.clone();
    let refused = tokio::task::spawn_blocking(move || {
        read_events(addr, "/v1/agents/events", Some(&c), |_, _| true)
    })
    .await
    .unwrap();
    assert_eq!(refused.unwrap_err().0, 403, "events need `read`");
    // An approval decided with a token names it.
    let (status, v) = s
        .add_with_manifest("city-facts", "city-facts", "", data.path(), Some(&admin))
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = s
        .add_with_manifest(
            "held",
            "probe-agent",
            HELD_MANIFEST,
            data.path(),
            Some(&admin),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = s
        .call_as(
            "POST",
            "/v1/agents",
            Some(&admin),
            json!({"id": "h", "component": "held"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, _) = s
        .call_as(
            "POST",
            "/v1/agents/h/messages",
            Some(&caller),
            json!({"body": {"op": "tool", "name": "cities__cities", "args": {"country": null}}}),
        )
        .await;
    assert_eq!(status, 202);
    let started = std::time::Instant::now();
    let request_id = loop {
        let (_, v) = s
            .call_as("GET", "/v1/agents/h/approvals", Some(&reader), json!({}))
            .await;
        if let Some(r) = v["approvals"][0]["request"].as_str() {
            break r.to_string();
        }
        assert!(started.elapsed() < EVENT_WAIT, "no approval request: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let path = format!("/v1/agents/h/approvals/{request_id}");
    let (status, _) = s
        .call_as("POST", &path, Some(&reader), json!({"approved": true}))
        .await;
    assert_eq!(status, 403);
    let (status, v) = s
        .call_as(
            "POST",
            &path,
            Some(&caller),
            json!({"approved": false, "reason": "no"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["approval"]["decision"]["by"],
        caller_record.id.as_str(),
        "{v}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_and_their_children_are_mcp_tools_that_answer_their_replies() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), |_| {}).await;
    let (status, v) = s
        .add_with_manifest("probe", "probe-agent", PROBE_MANIFEST, data.path(), None)
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = s
        .call(
            "POST",
            "/v1/agents",
            json!({"id": "a", "component": "probe"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let (mut mcp, serving) = LineClient::serve(&s.server);
    mcp.initialize().await;
    let v = mcp.request(2, "tools/list", json!({})).await;
    let tools = v["result"]["tools"].as_array().unwrap();
    let tool = tools
        .iter()
        .find(|t| t["name"] == "agent__a")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(
        tool["inputSchema"]["required"],
        json!(["message"]),
        "{tool}"
    );
    assert_eq!(
        tool["inputSchema"]["properties"]["message"]["type"],
        json!(["string", "object"]),
        "{tool}"
    );
    assert_eq!(
        (
            &tool["annotations"]["readOnlyHint"],
            &tool["annotations"]["openWorldHint"]
        ),
        (&json!(false), &json!(true)),
        "{tool}"
    );
    // An object message: sent as its JSON text; the reply as text and,
    // being JSON, structured.
    let v = mcp
        .request(
            3,
            "tools/call",
            json!({"name": "agent__a", "arguments": {"message": {"op": "append", "value": "x"}}}),
        )
        .await;
    let result = &v["result"];
    assert_ne!(result["isError"], true, "{v}");
    assert_eq!(result["content"][0]["text"], "1", "{v}");
    assert_eq!(result["structuredContent"], json!({"reply": 1}), "{v}");
    assert_eq!(
        (
            &result["_meta"]["tessera/agent"],
            &result["_meta"]["tessera/turn"]
        ),
        (&json!("a"), &json!(1)),
        "{v}"
    );
    let run = result["_meta"]["tessera/run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = s.call("GET", &format!("/v1/runs/{run}"), json!({})).await;
    assert_eq!(status, 200);
    // A text message; a reply that is an object is the structured content.
    let v = mcp
        .request(
            4,
            "tools/call",
            json!({"name": "agent__a", "arguments": {"message": "{\"op\":\"self\"}"}}),
        )
        .await;
    assert_ne!(v["result"]["isError"], true, "{v}");
    assert_eq!(v["result"]["structuredContent"]["id"], "a", "{v}");
    let text: Value =
        serde_json::from_str(v["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(text, v["result"]["structuredContent"], "{v}");
    // The agent kept its state across calls.
    let v = mcp
        .request(
            5,
            "tools/call",
            json!({"name": "agent__a", "arguments": {"message": {"op": "state"}}}),
        )
        .await;
    assert_eq!(
        v["result"]["structuredContent"],
        json!({"reply": ["x"]}),
        "{v}"
    );
    // A turn that fails for good is a tool error with its error.
    let v = mcp
        .request(
            6,
            "tools/call",
            json!({"name": "agent__a", "arguments": {"message": {"op": "fail", "message": "kaput"}}}),
        )
        .await;
    assert_eq!(v["result"]["isError"], true, "{v}");
    let text = v["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("kaput") && text.contains("dead letter"),
        "{v}"
    );
    // No message: a tool error; an unknown agent: an unknown tool.
    let v = mcp
        .request(
            7,
            "tools/call",
            json!({"name": "agent__a", "arguments": {}}),
        )
        .await;
    assert_eq!(v["result"]["isError"], true, "{v}");
    let v = mcp
        .request(
            8,
            "tools/call",
            json!({"name": "agent__nobody", "arguments": {"message": "hi"}}),
        )
        .await;
    assert_eq!(v["error"]["code"], -32602, "{v}");

    // Spawning an agent changes the tool list, a child's spawn by a turn
    // too; the child is a tool of its own.
    mcp.notifications.clear();
    let (status, v) = s
        .call(
            "POST",
            "/v1/agents",
            json!({"id": "b.two", "component": "probe"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let b_tool = v["tool"].as_str().unwrap().to_string();
    assert!(b_tool.starts_with("agent__b-two-"), "{v}");
    tokio::time::timeout(
        EVENT_WAIT,
        mcp.notification("notifications/tools/list_changed"),
    )
    .await
    .expect("no list_changed after a spawn");
    mcp.notifications.clear();
    let (status, v) = s
        .call(
            "POST",
            "/v1/agents/a/ask",
            json!({"body": {"op": "spawn", "name": "kid", "template": "kid"}}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    tokio::time::timeout(
        EVENT_WAIT,
        mcp.notification("notifications/tools/list_changed"),
    )
    .await
    .expect("no list_changed after a child's spawn");
    let (status, kid) = s.call("GET", "/v1/agents/a%2Fkid", json!({})).await;
    assert_eq!(status, 200, "{kid}");
    let kid_tool = kid["tool"].as_str().unwrap().to_string();
    assert!(kid_tool.starts_with("agent__a-kid-"), "{kid}");
    let names = mcp.tool_names(9).await;
    assert!(names.contains(&b_tool), "{names:?}");
    assert!(names.contains(&kid_tool), "{names:?}");
    let agents: Vec<&String> = names.iter().filter(|n| n.starts_with("agent__")).collect();
    assert_eq!(agents.len(), 3, "{names:?}");
    let v = mcp
        .request(
            11,
            "tools/call",
            json!({"name": kid_tool, "arguments": {"message": {"op": "self"}}}),
        )
        .await;
    let text = v["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    let me: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    assert_eq!(
        (&me["id"], &me["parent"]),
        (&json!("a/kid"), &json!("a")),
        "{v}"
    );
    let v = mcp
        .request(
            10,
            "tools/call",
            json!({"name": b_tool, "arguments": {"message": {"op": "append", "value": 2}}}),
        )
        .await;
    assert_eq!(v["result"]["content"][0]["text"], "1", "{v}");
    drop(mcp);
    serving.await.unwrap().unwrap();
    s.shutdown().await;
}

/// A sessionless (2026-07-28) MCP `tools/call` over HTTP with a token;
/// returns the JSON-RPC answer.
async fn mcp_http_call(addr: SocketAddr, token: &str, name: &str, arguments: Value) -> Value {
    let call = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {
            "name": name, "arguments": arguments,
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "0"},
                "io.modelcontextprotocol/clientCapabilities": {}
            }
        }
    })
    .to_string();
    let (name, auth) = (name.to_string(), format!("Bearer {token}"));
    let (status, head, body) = tokio::task::spawn_blocking(move || {
        let host = addr.to_string();
        raw_request(
            addr,
            "POST",
            "/mcp",
            &[
                ("Host", &host),
                ("Content-Type", "application/json"),
                ("Accept", "application/json, text/event-stream"),
                ("MCP-Protocol-Version", "2026-07-28"),
                ("Mcp-Method", "tools/call"),
                ("Mcp-Name", &name),
                ("Authorization", &auth),
            ],
            &call,
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{head}\n{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The approval requests `agents__approvals` answers for `args`, checked
/// against its text.
async fn mcp_approvals(mcp: &mut LineClient, id: u64, args: Value) -> Vec<Value> {
    let v = mcp
        .request(
            id,
            "tools/call",
            json!({"name": "agents__approvals", "arguments": args}),
        )
        .await;
    assert_ne!(v["result"]["isError"], true, "{v}");
    let text: Value =
        serde_json::from_str(v["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(text, v["result"]["structuredContent"], "{v}");
    v["result"]["structuredContent"]["approvals"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_listed_and_decided_over_mcp_and_the_held_turns_go_on() {
    let data = tempfile::tempdir().unwrap();
    let tokens = tessera_server::auth::Tokens::open(data.path());
    let (caller, caller_record) = tokens
        .create(vec![tessera_server::auth::Scope::Call], "caller")
        .unwrap();
    let s = start(data.path(), |_| {}).await;
    assert_eq!(s.add("city-facts", "city-facts").await.0, 201);
    let (status, v) = s
        .add_with_manifest("held", "probe-agent", HELD_MANIFEST, data.path(), None)
        .await;
    assert_eq!(status, 201, "{v}");
    // `agents` is reserved: its tools are the server's.
    let (status, v) = s.add("agents", "city-facts").await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (400, &json!("invalid_name")),
        "{v}"
    );
    // Listed once there are agents.
    let (mut mcp, serving) = LineClient::serve(&s.server);
    mcp.initialize().await;
    let names = mcp.tool_names(2).await;
    assert!(
        names.contains(&"city-facts__cities".to_string())
            && !names.iter().any(|n| n.starts_with("agents__")),
        "{names:?}"
    );
    for id in ["h", "g"] {
        let (status, v) = s
            .call("POST", "/v1/agents", json!({"id": id, "component": "held"}))
            .await;
        assert_eq!(status, 201, "{v}");
    }
    tokio::time::timeout(
        EVENT_WAIT,
        mcp.notification("notifications/tools/list_changed"),
    )
    .await
    .expect("no list_changed after a spawn");
    let v = mcp.request(3, "tools/list", json!({})).await;
    let tools = v["result"]["tools"].as_array().unwrap();
    let tool = |name: &str| {
        tools
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no {name}: {v}"))
    };
    let (approvals, decide) = (tool("agents__approvals"), tool("agents__decide"));
    assert_eq!(
        (
            &approvals["annotations"]["readOnlyHint"],
            &approvals["annotations"]["openWorldHint"]
        ),
        (&json!(true), &json!(false)),
        "{approvals}"
    );
    assert!(
        approvals["inputSchema"]["required"].is_null(),
        "{approvals}"
    );
    assert_eq!(
        (
            &decide["annotations"]["readOnlyHint"],
            &decide["annotations"]["openWorldHint"]
        ),
        (&json!(false), &json!(false)),
        "{decide}"
    );
    assert_eq!(
        decide["inputSchema"]["required"],
        json!(["agent", "request", "approved"]),
        "{decide}"
    );
    assert!(mcp_approvals(&mut mcp, 30, json!({})).await.is_empty());

    // `h`'s tool call, made through its MCP tool on another session, waits
    // for a person; so does `g`'s, sent over HTTP.
    let (mut other, other_serving) = LineClient::serve(&s.server);
    other.initialize().await;
    let asking = tokio::spawn(async move {
        let v = other
            .request(
                2,
                "tools/call",
                json!({"name": "agent__h", "arguments": {
                    "message": {"op": "tool", "name": "cities__cities", "args": {"country": null}},
                    "timeout_ms": 120_000,
                }}),
            )
            .await;
        // Kept open: the end of a stdio session's input stops the server.
        (other, v)
    });
    let (status, v) = s
        .call(
            "POST",
            "/v1/agents/g/messages",
            json!({"body": {"op": "tool", "name": "cities__cities", "args": {"country": "FR"}}}),
        )
        .await;
    assert_eq!(status, 202, "{v}");
    let h = s.agent_until("h", |v| v["status"] == "waiting").await;
    let g = s.agent_until("g", |v| v["status"] == "waiting").await;
    let (h_request, g_request) = (
        h["waiting_for"].as_str().unwrap().to_string(),
        g["waiting_for"].as_str().unwrap().to_string(),
    );

    // Listed: every agent's, or one agent's (and its subtree's).
    let all = mcp_approvals(&mut mcp, 4, json!({})).await;
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(
        (&all[0]["agent"], &all[0]["request"], &all[0]["tool"]),
        (&json!("g"), &json!(g_request), &json!("cities__cities")),
        "{all:?}"
    );
    assert_eq!(all[0]["arguments"], json!({"country": "FR"}), "{all:?}");
    assert_eq!(
        (&all[1]["agent"], &all[1]["request"], &all[1]["turn"]),
        (&json!("h"), &json!(h_request), &json!(1)),
        "{all:?}"
    );
    assert!(
        all.iter()
            .all(|a| a["asked"].is_string() && a["decision"].is_null()),
        "{all:?}"
    );
    let of_h = mcp_approvals(&mut mcp, 5, json!({"agent": "h"})).await;
    assert_eq!(of_h, all[1..], "{of_h:?}");

    // Refusals are tool errors with the reason.
    let refused = [
        (
            "agents__approvals",
            json!({"agent": "nobody"}),
            "no agent `nobody`",
        ),
        ("agents__approvals", json!({"agent": 7}), "`agent`"),
        (
            "agents__decide",
            json!({"agent": "nobody", "request": h_request, "approved": true}),
            "no agent `nobody`",
        ),
        (
            "agents__decide",
            json!({"agent": "h", "request": "nope", "approved": true}),
            "no approval request `nope`",
        ),
        (
            "agents__decide",
            json!({"agent": "h", "request": h_request}),
            "`approved`",
        ),
    ];
    for (i, (name, args, says)) in refused.iter().enumerate() {
        let v = mcp
            .request(
                10 + i as u64,
                "tools/call",
                json!({"name": name, "arguments": args}),
            )
            .await;
        assert_eq!(v["result"]["isError"], true, "{name} {args}: {v}");
        let text = v["result"]["content"][0]["text"].as_str().unwrap();
        assert!(text.contains(says), "{name} {args}: {v}");
    }
    assert_eq!(mcp_approvals(&mut mcp, 20, json!({})).await, all);

    // Approved over MCP: decided by `mcp` (no token on stdio); the held
    // `agent__h` call gets its reply.
    let v = mcp
        .request(
            21,
            "tools/call",
            json!({"name": "agents__decide", "arguments": {
                "agent": "h", "request": h_request, "approved": true, "reason": "fine",
            }}),
        )
        .await;
    assert_ne!(v["result"]["isError"], true, "{v}");
    let approval = &v["result"]["structuredContent"]["approval"];
    assert_eq!(
        (&approval["agent"], &approval["request"]),
        (&json!("h"), &json!(h_request)),
        "{v}"
    );
    assert_eq!(
        approval["decision"]
            .as_object()
            .map(|d| (&d["approved"], &d["by"], &d["reason"])),
        Some((&json!(true), &json!("mcp"), &json!("fine"))),
        "{v}"
    );
    let (other, replied) = tokio::time::timeout(EVENT_WAIT, asking)
        .await
        .expect("no reply after the approval")
        .unwrap();
    assert_ne!(replied["result"]["isError"], true, "{replied}");
    let result = replied["result"]["structuredContent"]["result"]
        .as_str()
        .unwrap_or_else(|| panic!("{replied}"));
    assert!(!result.is_empty(), "{replied}");
    assert_eq!(replied["result"]["_meta"]["tessera/turn"], 1, "{replied}");
    // Decided once.
    let v = mcp
        .request(
            22,
            "tools/call",
            json!({"name": "agents__decide", "arguments": {
                "agent": "h", "request": h_request, "approved": false,
            }}),
        )
        .await;
    assert_eq!(v["result"]["isError"], true, "{v}");
    assert!(
        v["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("already approved"),
        "{v}"
    );
    let left = mcp_approvals(&mut mcp, 23, json!({})).await;
    assert_eq!(left, all[..1], "{left:?}");

    // Rejected over MCP on HTTP with a token: decided by the token; the
    // tool answers `rejected` with the reason, and `g`'s turn goes on with
    // it.
    let v = mcp_http_call(
        s.addr,
        &caller,
        "agents__decide",
        json!({"agent": "g", "request": g_request, "approved": false, "reason": "not today"}),
    )
    .await;
    assert_ne!(v["result"]["isError"], true, "{v}");
    let decision = &v["result"]["structuredContent"]["approval"]["decision"];
    assert_eq!(
        (&decision["approved"], &decision["by"]),
        (&json!(false), &json!(caller_record.id)),
        "{v}"
    );
    s.agent_until("g", |v| v["status"] == "active" && v["turns"] == 1)
        .await;
    let (status, log) = s.call("GET", "/v1/agents/g/turns", json!({})).await;
    assert_eq!(status, 200, "{log}");
    let reply: Value = serde_json::from_str(log["turns"][0]["reply"].as_str().unwrap()).unwrap();
    assert_eq!(reply, json!({"error": "rejected: not today"}), "{log}");
    assert!(mcp_approvals(&mut mcp, 24, json!({})).await.is_empty());
    drop((mcp, other));
    serving.await.unwrap().unwrap();
    other_serving.await.unwrap().unwrap();
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_resumes_the_agent_work_left_in_the_store() {
    use tessera_orchestrator::agent::{AgentRecord, Envelope, records};
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), |_| {}).await;
    let (status, v) = s
        .add_with_manifest("probe", "probe-agent", PROBE_MANIFEST, data.path(), None)
        .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = s
        .call(
            "POST",
            "/v1/agents",
            json!({"id": "a", "component": "probe"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    s.shutdown().await;

    // What a process that died right after a delivery leaves: the message
    // in the mailbox, the tail moved, the work marker set.
    {
        // The stopped server's store closes a moment after it is dropped.
        let started = std::time::Instant::now();
        let (_stores, store) = loop {
            let stores =
                tessera_store::Stores::new(tessera_store::StoreSettings::default(), data.path());
            match stores.for_bucket(records::BUCKET).await {
                Ok(store) => break (stores, store),
                Err(e) => assert!(started.elapsed() < EVENT_WAIT, "{e}"),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let envelope = Envelope {
            id: "left-over".into(),
            sender: None,
            body: json!({"op": "append", "value": "resumed"}).to_string(),
            expects_reply: false,
            sent: records::now(),
            trace: Default::default(),
        };
        let seq = store
            .increment(records::BUCKET, &records::tail_key("a"), 1)
            .await
            .unwrap() as u64;
        store
            .put(
                records::BUCKET,
                &records::mail_key("a", seq),
                &serde_json::to_vec(&envelope).unwrap(),
                tessera_store::Expect::Any,
                None,
            )
            .await
            .unwrap();
        store
            .put_hint(records::BUCKET, &records::work_key("a"), b"1")
            .await
            .unwrap();
    }

    // The restarted server picks it up by itself: nothing asks for agent
    // `a` (the record is read from the store, not through the API).
    let s = start(data.path(), |_| {}).await;
    let started = std::time::Instant::now();
    let store = loop {
        match s.server.stores().unwrap().for_bucket(records::BUCKET).await {
            Ok(store) => break store,
            Err(e) => assert!(started.elapsed() < EVENT_WAIT, "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let record = loop {
        let entry = store
            .get(records::BUCKET, &records::agent_key("a"))
            .await
            .unwrap()
            .unwrap();
        let record: AgentRecord = serde_json::from_slice(&entry.value).unwrap();
        if record.turns == 1 {
            break record;
        }
        assert!(started.elapsed() < EVENT_WAIT, "not resumed: {record:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(record.state.as_deref(), Some("[\"resumed\"]"));
    let (_, log) = s.call("GET", "/v1/agents/a/turns", json!({})).await;
    assert_eq!(log["turns"][0]["message"]["id"], "left-over", "{log}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_sandboxes_are_mcp_tools_only_when_offered_and_their_runs_are_journaled() {
    let dir = component("py-sandbox").parent().unwrap().to_path_buf();
    assert!(component("js-sandbox").is_file());

    // Not offered: not listed, not callable, and the name stays reserved.
    let plain = tempfile::tempdir().unwrap();
    let s = start(plain.path(), |_| {}).await;
    let (mut mcp, serving) = LineClient::serve(&s.server);
    mcp.initialize().await;
    let v = mcp.request(2, "tools/list", json!({})).await;
    let names: Vec<&str> = v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with("sandbox__")), "{v}");
    let v = mcp
        .request(
            3,
            "tools/call",
            json!({"name": "sandbox__python", "arguments": {"code": "1"}}),
        )
        .await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("unknown tool"),
        "{v}"
    );
    assert_eq!(s.add("sandbox", "hello").await.0, 400);
    drop(mcp);
    serving.await.unwrap().unwrap();
    s.shutdown().await;

    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), |c| c.sandboxes = Some(vec![dir.clone()])).await;
    let (mut mcp, serving) = LineClient::serve(&s.server);
    mcp.initialize().await;
    let v = mcp.request(2, "tools/list", json!({})).await;
    let tools = v["result"]["tools"].as_array().unwrap();
    for name in ["sandbox__python", "sandbox__javascript"] {
        let tool = tools
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name}: {v}"));
        assert_eq!(tool["inputSchema"]["required"], json!(["code"]), "{tool}");
    }
    let v = mcp
        .request(
            3,
            "tools/call",
            json!({"name": "sandbox__python", "arguments": {"code": "print('hi')\n6 * 7"}}),
        )
        .await;
    let result = &v["result"];
    assert_ne!(result["isError"], true, "{v}");
    assert_eq!(
        (
            &result["structuredContent"]["stdout"],
            &result["structuredContent"]["value"]
        ),
        (&json!("hi\n"), &json!(42)),
        "{v}"
    );
    let v = mcp
        .request(
            4,
            "tools/call",
            json!({"name": "sandbox__javascript", "arguments": {"code": "let a = 1;\nnull.x"}}),
        )
        .await;
    let result = &v["result"];
    assert_eq!(result["isError"], true, "{v}");
    assert_eq!(
        (
            &result["structuredContent"]["error"]["type"],
            &result["structuredContent"]["error"]["line"]
        ),
        (&json!("TypeError"), &json!(2)),
        "{v}"
    );
    assert!(
        result["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("TypeError"),
        "{v}"
    );
    let v = mcp
        .request(
            5,
            "tools/call",
            json!({"name": "sandbox__python", "arguments": {"code": 3}}),
        )
        .await;
    assert_eq!(v["result"]["isError"], true, "{v}");
    // Each run is in the journal, with the MCP caller.
    let runs = s.server.journal.list().unwrap();
    let sandboxed: Vec<_> = runs
        .iter()
        .filter(|r| r.header.function == tessera_sandbox::RUN)
        .collect();
    assert_eq!(sandboxed.len(), 2, "{runs:?}");
    assert!(sandboxed.iter().all(|r| {
        r.header
            .caller
            .as_ref()
            .is_some_and(|c| c.via == "mcp-stdio")
    }));

    // Sessions: state kept between calls, forked with `sandbox__fork`, and
    // rebuilt from the journal by a server started afresh.
    let mut id = 10;
    let mut ask = async |mcp: &mut LineClient, name: &str, args: Value| {
        id += 1;
        mcp.request(id, "tools/call", json!({"name": name, "arguments": args}))
            .await
    };
    let v = ask(
        &mut mcp,
        "sandbox__python",
        json!({"code": "def f():\n    yield from range(5)\ng = f()\nnext(g)", "session": "s1"}),
    )
    .await;
    assert_eq!(v["result"]["structuredContent"]["value"], json!(0), "{v}");
    let v = ask(
        &mut mcp,
        "sandbox__python",
        json!({"code": "next(g)", "session": "s1"}),
    )
    .await;
    assert_eq!(v["result"]["structuredContent"]["value"], json!(1), "{v}");
    let v = ask(
        &mut mcp,
        "sandbox__fork",
        json!({"session": "s1", "as": "s2"}),
    )
    .await;
    assert_eq!(v["result"]["structuredContent"]["runs"], json!(2), "{v}");
    let v = ask(
        &mut mcp,
        "sandbox__python",
        json!({"code": "next(g)", "session": "s2"}),
    )
    .await;
    assert_eq!(v["result"]["structuredContent"]["value"], json!(2), "{v}");
    let v = ask(
        &mut mcp,
        "sandbox__python",
        json!({"code": "next(g)", "session": "s2"}),
    )
    .await;
    assert_eq!(v["result"]["structuredContent"]["value"], json!(3), "{v}");
    // Without a session, nothing is kept.
    let v = ask(&mut mcp, "sandbox__python", json!({"code": "g"})).await;
    assert_eq!(
        v["result"]["structuredContent"]["error"]["type"],
        json!("NameError"),
        "{v}"
    );
    let v = ask(
        &mut mcp,
        "sandbox__python",
        json!({"code": "1", "session": "no/such"}),
    )
    .await;
    assert_eq!(v["result"]["isError"], true, "{v}");
    let v = ask(
        &mut mcp,
        "sandbox__javascript",
        json!({"code": "1", "session": "s1"}),
    )
    .await;
    assert!(
        v["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or("")
            .contains("runs python, not javascript"),
        "{v}"
    );
    let v = ask(
        &mut mcp,
        "sandbox__fork",
        json!({"session": "nope", "as": "s3"}),
    )
    .await;
    assert!(
        v["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or("")
            .contains("no session `nope`"),
        "{v}"
    );
    drop(mcp);
    serving.await.unwrap().unwrap();
    s.shutdown().await;

    let s = start(data.path(), |c| c.sandboxes = Some(vec![dir.clone()])).await;
    let (mut mcp, serving) = LineClient::serve(&s.server);
    mcp.initialize().await;
    let v = ask(
        &mut mcp,
        "sandbox__python",
        json!({"code": "[next(g), next(g)]", "session": "s1"}),
    )
    .await;
    assert_eq!(
        v["result"]["structuredContent"]["value"],
        json!([2, 3]),
        "{v}"
    );
    let v = ask(
        &mut mcp,
        "sandbox__python",
        json!({"code": "next(g)", "session": "s2"}),
    )
    .await;
    assert_eq!(v["result"]["structuredContent"]["value"], json!(4), "{v}");
    drop(mcp);
    serving.await.unwrap().unwrap();
    s.shutdown().await;
}

/// A component of the `wasi:http/proxy` world, written against the standard
/// interfaces only, served at `/http/<name>/…`: each request handled under
/// its grants (a variable granted and one not, an outbound host allowed and
/// one not), bodies and headers both ways, a trap a 500 with the run named,
/// every request journaled and replayed offline with the same response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_handler_components_serve_requests_under_their_grants_and_are_journaled() {
    let data = tempfile::tempdir().unwrap();
    let (port, seen) = tessera_test_support::http_stub();
    let s = start(data.path(), |_| {}).await;
    let manifest = format!(
        "[env.set]\nCITY = \"Lyon\"\n\n[http]\nallowed_outbound_hosts = [\"http://127.0.0.1:{port}\"]\n"
    );
    let (status, v) = s
        .add_with_manifest("web", "http-handler", &manifest, data.path(), None)
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(s.add("hello", "hello").await.0, 201);
    let addr = s.addr;
    let host = addr.to_string();
    let get = move |path: &str, body: &str, method: &str| {
        let (path, body, method, host) = (
            path.to_string(),
            body.to_string(),
            method.to_string(),
            host.clone(),
        );
        tokio::task::spawn_blocking(move || {
            raw_request(
                addr,
                &method,
                &path,
                &[("Host", host.as_str()), ("Content-Type", "text/x-test")],
                &body,
            )
        })
    };
    let (status, head, body) = get("/http/web/hello/ada", "", "GET").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "hello, ada"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("x-handled-by: tessera-example"),
        "{head}"
    );
    let run = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("x-tessera-run:"))
        .and_then(|l| l.split_once(':'))
        .expect("the run header")
        .1
        .trim()
        .to_string();
    let (status, head, body) = get("/http/web/echo", "a body ✓", "POST").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "a body ✓"));
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/x-test"),
        "{head}"
    );
    assert!(
        head.contains(&format!("x-body-length: {}", "a body ✓".len())),
        "{head}"
    );
    // Grants: the variable granted, not another; the host allowed, not another.
    let (status, _, body) = get("/http/web/env/CITY", "", "GET").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "Lyon"));
    let (status, _, _) = get("/http/web/env/HOME", "", "GET").await.unwrap();
    assert_eq!(status, 404);
    let url = format!("http://127.0.0.1:{port}/outbound");
    let (status, _, body) = get(&format!("/http/web/fetch?{url}"), "", "GET")
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "200 "));
    assert!(seen.lock().unwrap().contains("GET /outbound"));
    let (status, _, body) = get("/http/web/fetch?http://127.0.0.1:9/x", "", "GET")
        .await
        .unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("HttpRequestDenied"), "{body}");
    // A trap is the API's error (as for any call), naming the run, with
    // what the guest printed.
    let (status, _, body) = get("/http/web/trap", "", "GET").await.unwrap();
    assert_eq!(status, 422, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "trap", "{v}");
    assert!(v["error"]["run_id"].is_string(), "{v}");
    assert!(
        v["error"]["guest"]["stderr"]
            .as_str()
            .unwrap()
            .contains("asked to trap"),
        "{v}"
    );
    // Not a handler, and no such component.
    let (status, _, body) = get("/http/hello/", "", "GET").await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not an HTTP handler"), "{body}");
    let (status, _, _) = get("/http/nobody/x", "", "GET").await.unwrap();
    assert_eq!(status, 404);

    // Journaled: the request as the arguments, the response as the result,
    // and a replay answers the same offline.
    let header = s.server.journal.header(&run).unwrap();
    assert!(header.function.ends_with("#handle"), "{}", header.function);
    assert_eq!(header.args["method"], "GET");
    assert_eq!(header.args["path"], "/hello/ada");
    let fetched = s
        .server
        .journal
        .list()
        .unwrap()
        .into_iter()
        .find(|r| r.header.args["path"] == format!("/fetch?{url}").as_str())
        .expect("the fetch run");
    // The server's replay (its runtime has the journal's HMAC key).
    for id in [run.as_str(), fetched.header.run_id.as_str()] {
        let (status, v) = s
            .call("POST", &format!("/v1/runs/{id}/replay"), json!({}))
            .await;
        assert_eq!((status, &v["identical"]), (200, &json!(true)), "{v}");
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_uses_the_provider_version_served_now_and_replays_the_one_it_linked() {
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path(), |_| {}).await;
    let imports = "[imports]\n\"example:text/transform\" = \"text\"\n";
    // No provider registered: refused, naming both sides.
    let (status, v) = upload(&s, "report", "text-consumer", Some(imports)).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "bad_component", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("report") && msg.contains("example:text/transform") && msg.contains("`text`"),
        "{msg}"
    );

    let signed = |sig: &str| format!("[env]\nset = {{ SIGNATURE = \"{sig}\" }}\n");
    let (status, v) = upload(&s, "text", "text-provider", Some(&signed("v1"))).await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = upload(&s, "report", "text-consumer", Some(imports)).await;
    assert_eq!(status, 201, "{v}");
    let call = || {
        s.call(
            "POST",
            "/v1/components/report/call/report",
            json!({"text": "swap me"}),
        )
    };
    let (status, first) = call().await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["result"]["provider"], "v1");
    assert_eq!(first["result"]["shout"], "SWAP ME!");

    // A new version of the provider: the consumer, untouched, uses it.
    let (status, v) = upload(&s, "text", "text-provider", Some(&signed("v2"))).await;
    assert_eq!(status, 201, "{v}");
    let (status, second) = call().await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["result"]["provider"], "v2");

    // The first run's linked calls are in its steps, and it replays with
    // v1's answers.
    let run = first["run_id"].as_str().unwrap();
    let (status, v) = s.call("GET", &format!("/v1/runs/{run}"), json!({})).await;
    assert_eq!(status, 200, "{v}");
    let links: Vec<&Value> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["interaction"]["capability"] == "link")
        .collect();
    assert_eq!(links.len(), 4, "{v}");
    assert_eq!(links[3]["interaction"]["response"]["result"]["Ok"], "v1");
    let (status, v) = s
        .call("POST", &format!("/v1/runs/{run}/replay"), json!({}))
        .await;
    assert_eq!((status, &v["identical"]), (200, &json!(true)), "{v}");

    // A version with other types: the consumer's call fails, naming both.
    let (status, v) = upload(&s, "text", "text-provider-wrong", None).await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = call().await;
    assert_ne!(status, 200, "{v}");
    let text = v.to_string();
    assert!(
        text.contains("example:text/transform") && text.contains("`count` result"),
        "{text}"
    );
    s.shutdown().await;
}

/// Boundary policies on a server: a forbidden key-value write is refused;
/// editing the policy file puts the new policies in force without a
/// restart (an audit event says so); a policy file that no longer loads
/// is reported and the policies in force stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_decide_and_reload_without_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let policies = data.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("base.cedar"),
        "@id(\"base\")\npermit(principal, action, resource);\n",
    )
    .unwrap();
    let forbid = "@id(\"no-admin-keys\")\nforbid(principal == Tessera::Component::\"kv\", action == Tessera::Action::\"kv.write\", resource)\nwhen { context.key like \"admin/*\" };\n";
    std::fs::write(policies.join("kv.cedar"), forbid).unwrap();
    let engine = Arc::new(tessera_runtime::policy::PolicyEngine::load(&policies).unwrap());
    let s = start(data.path(), |c| {
        c.policy = Some(engine);
        c.policy_poll = Duration::from_millis(50);
    })
    .await;
    let (status, v) = add_kv_tool(&s, data.path()).await;
    assert_eq!(status, 201, "{v}");
    let set = |key: &str| json!({"bucket": "notes", "key": key, "value": "v"});
    let path = "/v1/components/kv/call/set";
    let (status, v) = s.call("POST", path, set("admin/root")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"], json!({"err": "access denied"}), "{v}");
    let (_, v) = s.call("POST", path, set("user/1")).await;
    assert_eq!(v["result"], json!({"ok": null}), "{v}");

    let events = s.server.audit_events();
    // Waits for the next `policy` audit event (subscribed before the edit).
    let reloaded = |events: &tokio::sync::broadcast::Receiver<tessera_runtime::AuditEvent>| {
        let mut events = events.resubscribe();
        tokio::spawn(async move {
            loop {
                let e = events.recv().await.unwrap();
                if e.capability == "policy" {
                    return e;
                }
            }
        })
    };
    // Lift the rule.
    let waiting = reloaded(&events);
    std::fs::write(policies.join("kv.cedar"), "// lifted\n").unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("a reload event")
        .unwrap();
    assert_eq!(e.decision, tessera_runtime::Decision::Allow, "{e:?}");
    assert!(e.detail.unwrap().contains("1 policies"));
    let (_, v) = s.call("POST", path, set("admin/root")).await;
    assert_eq!(v["result"], json!({"ok": null}), "{v}");

    // A broken file: reported, and the policies in force stay.
    let waiting = reloaded(&events);
    std::fs::write(policies.join("kv.cedar"), "forbid(principal,").unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("a reload event")
        .unwrap();
    assert_eq!(e.decision, tessera_runtime::Decision::Deny, "{e:?}");
    assert!(e.detail.unwrap().contains("kv.cedar:1:"));
    let (_, v) = s.call("POST", path, set("admin/other")).await;
    assert_eq!(v["result"], json!({"ok": null}), "{v}");
    s.shutdown().await;
}
