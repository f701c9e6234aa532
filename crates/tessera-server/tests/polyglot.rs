//! The catalog example tool (`wit/example/catalog.wit`) in every language
//! (`components/example-<language>`) answers the same JSON to the same
//! calls, through the HTTP API and MCP `tools/call`, and that JSON is the
//! one written out in [`CASES`]. `crates/tessera-cli/tests/polyglot.rs`
//! makes the same calls (it reads `CASES` from this file) through
//! `tessera call`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tessera_server::{Server, ServerConfig};
use tessera_test_support::{component, components_dir};

/// The languages, as in `components/example-<language>`: every one must be
/// built.
const LANGUAGES: [&str; 5] = ["rust", "python", "js", "c", "go"];

/// The calls (a function of the `catalog` interface and its arguments) and
/// the answer every language must give: the WIT result as Tessera's JSON
/// (`{"ok": …}` / `{"err": …}` for a `result`). A string `"@<list>"` in
/// `args` or `expected` stands for the list of that name in `lists`.
///
/// `crates/tessera-cli/tests/polyglot.rs` reads this raw string out of
/// this file: keep it a `r##"…"##` literal.
const CASES: &str = r##"{
  "lists": {
    "mixed": [
      {"name": "washer", "quantity": 3, "price-cents": 5, "tags": ["metal"]},
      {"name": "bolt", "quantity": 10, "price-cents": 25, "tags": ["small", "metal", "small"]},
      {"name": "nut", "quantity": 10, "price-cents": null, "tags": ["～", "😀", "é", "Metal", "small"]},
      {"name": "bolt", "quantity": 7, "price-cents": 30, "tags": ["spare", "smaller"]}
    ],
    "crate": [
      {"name": "crate", "quantity": 4294967290, "price-cents": null, "tags": []}
    ]
  },
  "cases": [
    {
      "case": "summarize an empty list",
      "function": "summarize",
      "args": {"items": []},
      "expected": {"items": 0, "units": 0, "value-cents": 0, "largest": null, "tags": []}
    },
    {
      "case": "summarize items with and without prices, duplicate tags and a tie for largest",
      "function": "summarize",
      "args": {"items": "@mixed"},
      "expected": {
        "items": 4, "units": 30, "value-cents": 475, "largest": "bolt",
        "tags": ["Metal", "metal", "small", "smaller", "spare", "é", "～", "😀"]
      }
    },
    {
      "case": "summarize past 2^53 (u64 sums)",
      "function": "summarize",
      "args": {"items": [
        {"name": "a", "quantity": 4294967295, "price-cents": 4294967295, "tags": []},
        {"name": "b", "quantity": 4294967295, "price-cents": null, "tags": []}
      ]},
      "expected": {
        "items": 2, "units": 8589934590, "value-cents": 18446744065119617025,
        "largest": "a", "tags": []
      }
    },
    {
      "case": "summarize past 2^64 (u64 sums wrap)",
      "function": "summarize",
      "args": {"items": [
        {"name": "a", "quantity": 4294967295, "price-cents": 4294967295, "tags": []},
        {"name": "b", "quantity": 4294967295, "price-cents": 4294967295, "tags": []}
      ]},
      "expected": {
        "items": 2, "units": 8589934590, "value-cents": 18446744056529682434,
        "largest": "a", "tags": []
      }
    },
    {
      "case": "summarize one item with nothing in stock",
      "function": "summarize",
      "args": {"items": [{"name": "x", "quantity": 0, "price-cents": null, "tags": []}]},
      "expected": {"items": 1, "units": 0, "value-cents": 0, "largest": "x", "tags": []}
    },
    {
      "case": "filter by a tag",
      "function": "filter",
      "args": {"items": "@mixed", "tag": "small"},
      "expected": [
        {"name": "bolt", "quantity": 10, "price-cents": 25, "tags": ["small", "metal", "small"]},
        {"name": "nut", "quantity": 10, "price-cents": null, "tags": ["～", "😀", "é", "Metal", "small"]}
      ]
    },
    {
      "case": "filter by a tag no item has",
      "function": "filter",
      "args": {"items": "@mixed", "tag": "plastic"},
      "expected": []
    },
    {
      "case": "filter with a null tag",
      "function": "filter",
      "args": {"items": "@mixed", "tag": null},
      "expected": "@mixed"
    },
    {
      "case": "filter an empty list",
      "function": "filter",
      "args": {"items": [], "tag": "metal"},
      "expected": []
    },
    {
      "case": "restock an unknown name",
      "function": "restock",
      "args": {"items": "@mixed", "name": "gear", "units": 1},
      "expected": {"err": {"unknown-item": "gear"}}
    },
    {
      "case": "restock an empty list",
      "function": "restock",
      "args": {"items": [], "name": "bolt", "units": 1},
      "expected": {"err": {"unknown-item": "bolt"}}
    },
    {
      "case": "restock past 4294967295",
      "function": "restock",
      "args": {"items": "@crate", "name": "crate", "units": 6},
      "expected": {"err": "overflow"}
    },
    {
      "case": "restock up to 4294967295",
      "function": "restock",
      "args": {"items": "@crate", "name": "crate", "units": 5},
      "expected": {"ok": [{"name": "crate", "quantity": 4294967295, "price-cents": null, "tags": []}]}
    },
    {
      "case": "restock the first of two items with the name",
      "function": "restock",
      "args": {"items": "@mixed", "name": "bolt", "units": 5},
      "expected": {"ok": [
        {"name": "washer", "quantity": 3, "price-cents": 5, "tags": ["metal"]},
        {"name": "bolt", "quantity": 15, "price-cents": 25, "tags": ["small", "metal", "small"]},
        {"name": "nut", "quantity": 10, "price-cents": null, "tags": ["～", "😀", "é", "Metal", "small"]},
        {"name": "bolt", "quantity": 7, "price-cents": 30, "tags": ["spare", "smaller"]}
      ]}
    }
  ]
}"##;

/// One call of [`CASES`], its `"@<list>"` references replaced.
struct Case {
    name: String,
    function: String,
    args: Value,
    expected: Value,
}

/// [`CASES`], parsed.
fn cases() -> Vec<Case> {
    let all: Value = serde_json::from_str(CASES).expect("CASES is JSON");
    let lists = &all["lists"];
    // Replaces a `"@<list>"` string, at any depth, with that list.
    fn expand(v: &Value, lists: &Value) -> Value {
        match v {
            Value::String(s) if s.starts_with('@') => lists
                .get(&s[1..])
                .unwrap_or_else(|| panic!("CASES has no list {s}"))
                .clone(),
            Value::Array(a) => a.iter().map(|v| expand(v, lists)).collect(),
            Value::Object(o) => o
                .iter()
                .map(|(k, v)| (k.clone(), expand(v, lists)))
                .collect(),
            v => v.clone(),
        }
    }
    all["cases"]
        .as_array()
        .expect("CASES has cases")
        .iter()
        .map(|c| Case {
            name: c["case"].as_str().unwrap().to_string(),
            function: c["function"].as_str().unwrap().to_string(),
            args: expand(&c["args"], lists),
            expected: expand(&c["expected"], lists),
        })
        .collect()
}

/// Whether a function's answer is a success: everything but the `err`
/// case of a `result`.
fn is_ok(expected: &Value) -> bool {
    expected.get("err").is_none()
}

/// The compile cache the polyglot tests share (here and in the CLI's): the
/// Python and JavaScript guests take tens of seconds each to compile, once.
/// Never the user's own cache.
fn compile_cache() -> PathBuf {
    components_dir().join("target/polyglot-test-cache")
}

/// One HTTP/1.1 request on a fresh connection; returns (status, JSON body).
fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

struct Running {
    addr: SocketAddr,
    server: Arc<Server>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(data: &Path) -> Running {
    let mut config = ServerConfig::new(data.to_path_buf());
    config.cache_dir = Some(compile_cache());
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
        stop,
        task,
    }
}

impl Running {
    async fn call(&self, method: &'static str, path: &str, body: Value) -> (u16, Value) {
        let (addr, path, body) = (self.addr, path.to_string(), body.to_string());
        tokio::task::spawn_blocking(move || request(addr, method, &path, &body))
            .await
            .unwrap()
    }

    async fn shutdown(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

/// A minimal MCP client over the server's stdio handler, through an
/// in-memory pipe (one JSON-RPC message a line).
struct LineClient {
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>>,
    out: tokio::io::WriteHalf<tokio::io::DuplexStream>,
    next_id: u64,
}

impl LineClient {
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
            next_id: 1,
        };
        (client, serving)
    }

    async fn send(&mut self, message: Value) {
        use tokio::io::AsyncWriteExt as _;
        let mut line = message.to_string();
        line.push('\n');
        self.out.write_all(line.as_bytes()).await.unwrap();
    }

    /// Sends a request and returns its answer (notifications are skipped).
    async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
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
        }
    }

    async fn initialize(&mut self) {
        let init = self
            .request(
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
    }
}

/// Every language's component, registered over HTTP, lists the same three
/// MCP tools (names, descriptions and schemas alike but for the component's
/// name), and answers every call of [`CASES`] with the expected JSON, over
/// `POST /v1/components/{name}/call/catalog%23{function}` and MCP
/// `tools/call` of `{name}__catalog__{function}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_language_answers_the_same_over_http_and_mcp() {
    let cases = cases();
    let data = tempfile::tempdir().unwrap();
    let s = start(data.path()).await;
    for lang in LANGUAGES {
        let name = format!("example-{lang}");
        let body = json!({ "name": name, "path": component(&name).display().to_string() });
        let (status, v) = s.call("POST", "/v1/components", body).await;
        assert_eq!(status, 201, "registering {name}: {v}");
    }
    let (mut mcp, serving) = LineClient::serve(&s.server);
    mcp.initialize().await;

    // The tools: the same for every language once its name is taken out
    // (componentize-py's own `exports#init` is not served).
    let listed = mcp.request("tools/list", json!({})).await;
    let tools = listed["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"));
    let mut by_language = BTreeMap::new();
    for lang in LANGUAGES {
        let name = format!("example-{lang}");
        let mut mine: Vec<Value> = tools
            .iter()
            .filter(|t| {
                t["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(&format!("{name}__")))
            })
            .map(|t| serde_json::from_str(&t.to_string().replace(&name, "example-*")).unwrap())
            .collect();
        mine.sort_by_key(|t| t["name"].as_str().unwrap_or_default().to_string());
        let names: Vec<&str> = mine.iter().filter_map(|t| t["name"].as_str()).collect();
        assert_eq!(
            names,
            [
                "example-*__catalog__filter",
                "example-*__catalog__restock",
                "example-*__catalog__summarize"
            ],
            "the tools of {name}"
        );
        by_language.insert(lang, mine);
    }
    let first = &by_language[LANGUAGES[0]];
    assert!(
        first.iter().all(|t| t["description"]
            .as_str()
            .is_some_and(|d| d.contains("items"))),
        "the tools carry the WIT docs: {first:?}"
    );
    for (lang, tools) in &by_language {
        assert_eq!(
            tools, first,
            "the tools of example-{lang} differ from example-{}'s",
            LANGUAGES[0]
        );
    }

    // The calls.
    let mut wrong = Vec::new();
    for case in &cases {
        let ok = is_ok(&case.expected);
        for lang in LANGUAGES {
            let name = format!("example-{lang}");
            let (status, v) = s
                .call(
                    "POST",
                    &format!("/v1/components/{name}/call/catalog%23{}", case.function),
                    case.args.clone(),
                )
                .await;
            assert_eq!(status, 200, "{}: HTTP call of {name}: {v}", case.name);
            assert_eq!(
                v["ok"],
                json!(ok),
                "{}: HTTP call of {name}: {v}",
                case.name
            );
            if v["result"] != case.expected {
                wrong.push(format!("{}: {name} over HTTP: {}", case.name, v["result"]));
            }

            let tool = format!("{name}__catalog__{}", case.function);
            let v = mcp
                .request("tools/call", json!({"name": tool, "arguments": case.args}))
                .await;
            let result = &v["result"];
            assert_eq!(
                result["isError"] == json!(true),
                !ok,
                "{}: MCP call of {tool}: {v}",
                case.name
            );
            let answer = &result["structuredContent"]["result"];
            if *answer != case.expected {
                wrong.push(format!("{}: {name} over MCP: {answer}", case.name));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "answers that differ from the expected ones:\n{}\n\nexpected:\n{}",
        wrong.join("\n"),
        cases
            .iter()
            .map(|c| format!("{}: {}", c.name, c.expected))
            .collect::<Vec<_>>()
            .join("\n")
    );

    drop(mcp);
    serving.await.unwrap().unwrap();
    s.shutdown().await;
}
