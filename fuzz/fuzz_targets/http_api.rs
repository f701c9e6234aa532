//! Arbitrary requests → the server's HTTP API (`tessera_server::router`,
//! with the MCP endpoint), driven in process with `tower::ServiceExt::oneshot`.
//!
//! One server is opened for the whole run on a scratch data directory, with
//! `hello` registered (under tight limits, so a call that loops ends fast)
//! and two recorded `greet` runs to look up and replay (two, so that a
//! prefix of both ids is ambiguous whatever ran before).
//!
//! Input layout (every byte optional; missing ones read as 0):
//!
//! | byte | meaning |
//! | --- | --- |
//! | 0 | route (index into [`ROUTES`], modulo its length) |
//! | 1 | bits 0-2: `Content-Type` (index into [`CONTENT_TYPES`]); bit 3: send an unknown bearer token |
//! | 2 | `{name}`: `hello`, an unknown name, an invalid name, or a raw segment |
//! | 3 | `{function}`: one of `hello`'s functions (below 128) or a raw segment; `{id}` (modulo 5): a run id, a prefix of both runs' ids, a prefix of one, an unknown id, or a raw segment |
//! | 4.. | the body; when a raw segment is chosen, it is the body's first line (percent-encoded) and the rest is the body |
//!
//! No response may have a 5xx status, and nothing may panic. After each
//! input the registry is put back to `hello` alone at its first version, so
//! inputs do not depend on each other through it (the journal keeps
//! growing: every call records a run).
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, header};
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use tessera_runtime::CancellationToken;
use tessera_server::registry::Entry;
use tessera_server::{Server, ServerConfig};
use tower::ServiceExt as _;

/// `hello`'s manifest: limits small enough that `busy-host` with a large
/// round count or any loop ends within a fraction of a second.
const MANIFEST: &str = "[limits]\nfuel = 2000000\ntimeout_ms = 200\n";

/// (method, path template). `{name}`, `{function}` and `{id}` are filled
/// from bytes 2 and 3.
const ROUTES: &[(Method, &str)] = &[
    (Method::GET, "/v1/health"),
    (Method::GET, "/openapi.json"),
    (Method::GET, "/v1/components"),
    (Method::POST, "/v1/components"),
    (Method::GET, "/v1/components/{name}"),
    (Method::PUT, "/v1/components/{name}"),
    (Method::DELETE, "/v1/components/{name}"),
    (Method::POST, "/v1/components/{name}/activate"),
    (Method::POST, "/v1/components/{name}/rollback"),
    (Method::POST, "/v1/components/{name}/call/{function}"),
    (Method::POST, "/v1/components/{name}/call/{function}"),
    (Method::POST, "/v1/components/{name}/call/{function}"),
    (Method::GET, "/v1/runs"),
    (Method::GET, "/v1/runs/{id}"),
    (Method::POST, "/v1/runs/{id}/replay"),
    (Method::GET, "/v1/audit"),
    (Method::POST, "/mcp"),
    (Method::GET, "/mcp"),
    (Method::DELETE, "/mcp"),
    (Method::PATCH, "/v1/components/{name}"),
];

const CONTENT_TYPES: &[Option<&str>] = &[
    Some("application/json"),
    None,
    Some("text/plain"),
    Some("application/json; charset=utf-8"),
    Some("application/x-www-form-urlencoded"),
    Some("multipart/form-data; boundary=x"),
    Some("text/event-stream"),
    Some("a/b/c"),
];

struct Fixture {
    runtime: tokio::runtime::Runtime,
    server: Arc<Server>,
    app: axum::Router,
    hello: Vec<u8>,
    /// `hello`'s registry entry as the fixture left it.
    baseline: Mutex<Entry>,
    /// Candidates for `{function}`: every short and qualified name, and one
    /// that does not exist.
    functions: Vec<String>,
    /// The first of the two recorded runs.
    run_id: String,
    _data: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let data = tessera_fuzz::scratch("tessera-fuzz-http");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("cannot start tokio");
        let hello = std::fs::read(tessera_fuzz::component("hello")).expect("cannot read hello");
        let mut config = ServerConfig::new(data.path().to_path_buf());
        config.cache_dir = Some(data.path().join("cache"));
        let server = runtime
            .block_on(Server::open(config))
            .expect("cannot open the server");
        let app = tessera_server::router(
            server.clone(),
            tessera_server::mcp::http_service(
                server.clone(),
                ([127, 0, 0, 1], 7878).into(),
                CancellationToken::new(),
            ),
        );
        let fixture = Self {
            runtime,
            server,
            app,
            hello,
            baseline: Mutex::new(Entry {
                versions: Vec::new(),
                active: 0,
                previous: None,
            }),
            functions: Vec::new(),
            run_id: String::new(),
            _data: data,
        };
        fixture.restore(true);
        let active = fixture.server.active("hello").expect("hello is served");
        let mut functions: Vec<String> = active
            .loaded
            .functions()
            .iter()
            .flat_map(|f| [f.short_name(), f.qualified_name()])
            .collect();
        functions.push("nope".into());
        let mut runs = Vec::new();
        for _ in 0..2 {
            let called = fixture
                .runtime
                .block_on(fixture.server.call(
                    "hello",
                    "greet",
                    &json!({ "name": "fuzz" }),
                    None,
                    tessera_journal::Caller {
                        via: "fuzz".into(),
                        token: None,
                    },
                ))
                .expect("greet runs");
            assert!(
                called.outcome.result.is_ok(),
                "greet fails under the fixture's limits"
            );
            runs.push(called.run_id);
        }
        // Ids start with the UTC time: the year is a prefix of both.
        assert_eq!(runs[0][..4], runs[1][..4]);
        Self {
            functions,
            run_id: runs.swap_remove(0),
            ..fixture
        }
    }

    /// Puts the registry back to `hello` alone at its first version (or
    /// registers it the first time) and brings what is served in line.
    fn restore(&self, first: bool) {
        let registry = &self.server.registry;
        let list = registry.list().expect("the registry reads");
        let mut baseline = self.baseline.lock().unwrap_or_else(|p| p.into_inner());
        if !first && list.len() == 1 && list.get("hello") == Some(&*baseline) {
            return;
        }
        for name in list.keys() {
            registry
                .remove(name)
                .expect("a listed component is removed");
        }
        let dir = self._data.path().to_path_buf();
        registry
            .add(
                "hello",
                &self.hello,
                Some((MANIFEST.into(), dir)),
                "hello.wasm",
            )
            .expect("hello registers");
        *baseline = registry.get("hello").expect("hello is registered");
        self.runtime
            .block_on(self.server.sync())
            .expect("the server syncs");
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(Fixture::new)
}

/// Percent-encodes every byte that is not unreserved, so any bytes make a
/// valid path segment (decoding is the server's job).
fn segment(raw: &[u8]) -> String {
    let mut s = String::new();
    for &b in raw {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    if s.is_empty() { "%20".into() } else { s }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    let (method, template) = &ROUTES[byte(0) as usize % ROUTES.len()];
    let content_type = CONTENT_TYPES[(byte(1) & 7) as usize];
    let bogus_token = byte(1) & 8 != 0;
    let mut body = data.get(4..).unwrap_or(&[]);
    let mut raw = || {
        let (first, rest) = match body.iter().position(|b| *b == b'\n') {
            Some(n) => (&body[..n], &body[n + 1..]),
            None => (body, &[][..]),
        };
        body = rest;
        segment(first)
    };
    let pick = byte(3) as usize;
    let mut path = template.to_string();
    if path.contains("{name}") {
        let name = match byte(2) % 4 {
            0 => "hello".to_string(),
            1 => "nope".to_string(),
            2 => "Not%20Valid".to_string(),
            _ => raw(),
        };
        path = path.replace("{name}", &name);
    }
    if path.contains("{function}") {
        let function = if pick < 128 {
            segment(f.functions[pick % f.functions.len()].as_bytes())
        } else {
            raw()
        };
        path = path.replace("{function}", &function);
    }
    if path.contains("{id}") {
        let id = match pick % 5 {
            0 => f.run_id.clone(),
            1 => f.run_id[..4].to_string(),
            2 => f.run_id[..f.run_id.len() - 1].to_string(),
            3 => "nope".to_string(),
            _ => raw(),
        };
        path = path.replace("{id}", &id);
    }

    let mut req = Request::builder()
        .method(method.clone())
        .uri(&path)
        .header(header::HOST, "localhost")
        .header(header::ACCEPT, "application/json, text/event-stream")
        .header(header::CONTENT_LENGTH, body.len());
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    if bogus_token {
        req = req.header(header::AUTHORIZATION, "Bearer tsk_not_a_real_token");
    }
    let req = req
        .body(Body::from(body.to_vec()))
        .expect("the request is well formed");

    let streaming = *template == "/v1/audit";
    let (status, text) = f.runtime.block_on(async {
        let response = f
            .app
            .clone()
            .oneshot(req)
            .await
            .expect("the router is infallible");
        let status = response.status();
        // The audit stream and MCP event streams do not end by themselves.
        if streaming {
            return (status, String::new());
        }
        let read = axum::body::to_bytes(response.into_body(), 64 << 20);
        let text = match tokio::time::timeout(Duration::from_secs(2), read).await {
            Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
            Ok(Err(e)) => format!("<body error: {e}>"),
            Err(_) => "<body still streaming>".into(),
        };
        (status, text)
    });
    assert!(
        !status.is_server_error(),
        "{method} {path} ({} body bytes) answered {status}: {text}",
        body.len()
    );
    f.restore(false);
});
