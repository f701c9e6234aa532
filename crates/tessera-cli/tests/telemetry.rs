//! `tessera serve --otlp`: the spans of a call that makes an outgoing HTTP
//! request, received by a real OTLP/HTTP receiver on 127.0.0.1 (decoding
//! with the OpenTelemetry project's `opentelemetry-proto` Python classes),
//! with the right parents from the caller's `traceparent` down to the
//! request the guest sent, which carries the trace on.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Serving, python, register, request_with};
use serde_json::{Value, json};
use tessera_test_support::http_stub;

/// An OTLP/HTTP receiver: every span of every export, one JSON object per
/// line in `out`.
const RECEIVER: &str = r#"
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse)

out = sys.argv[1]

def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        with open(out, "a") as f:
            for rs in req.resource_spans:
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        f.write(json.dumps({
                            "path": self.path,
                            "name": s.name,
                            "trace": s.trace_id.hex(),
                            "span": s.span_id.hex(),
                            "parent": s.parent_span_id.hex(),
                            "kind": s.kind,
                            "attributes": {a.key: value(a.value) for a in s.attributes},
                        }) + "\n")
        reply = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass

server = HTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

struct Receiver {
    child: Child,
    port: u16,
    out: std::path::PathBuf,
}

impl Receiver {
    fn start(dir: &std::path::Path) -> Self {
        let out = dir.join("spans.jsonl");
        let mut child = Command::new(python())
            .args(["-c", RECEIVER])
            .arg(&out)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the receiver's port");
        Self { child, port, out }
    }

    fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn post_with_traceparent(base: &str, path: &str, body: &str, traceparent: &str) -> u16 {
    request_with(base, "POST", path, &[("traceparent", traceparent)], body).0
}

/// The spans `receiver` got, once `n` of them arrived (or 30 s passed).
fn spans_once(receiver: &Receiver, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut spans = receiver.spans();
    while spans.len() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        spans = receiver.spans();
    }
    spans
}

/// The span of `spans` that `pred` picks; the test fails naming them all
/// when there is none.
fn find(spans: &[Value], pred: impl Fn(&Value) -> bool) -> Value {
    spans
        .iter()
        .find(|s| pred(s))
        .cloned()
        .unwrap_or_else(|| panic!("{spans:#?}"))
}

#[test]
fn a_trace_crosses_the_server_the_wasm_boundary_and_the_network() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let receiver = Receiver::start(d);
    let (port, seen) = http_stub();
    register(
        d,
        "fetch",
        "http-fetch",
        Some(&format!(
            "[http]\nallowed_outbound_hosts = [\"http://127.0.0.1:{port}\"]\n"
        )),
    );
    let otlp = format!("http://127.0.0.1:{}", receiver.port);
    let server = Serving::start(d, &["--otlp", &otlp]);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let status = post_with_traceparent(
        &server.base,
        "/v1/components/fetch/call/fetch",
        &format!("{{\"url\":\"http://127.0.0.1:{port}/v1/items\"}}"),
        &format!("00-{trace}-{caller_span}-01"),
    );
    assert_eq!(status, 200);
    // The export is batched: stopping the server flushes it.
    server.stop();
    let spans = spans_once(&receiver, 3);
    let request = find(&spans, |s| {
        s["name"] == "POST /v1/components/fetch/call/fetch"
    });
    let call = find(&spans, |s| s["name"] == "call fetch fetch");
    let http = find(&spans, |s| s["name"] == "http.GET");
    assert_eq!(request["path"], "/v1/traces");
    for s in [&request, &call, &http] {
        assert_eq!(s["trace"], trace, "{s}");
    }
    assert_eq!(request["parent"], caller_span);
    assert_eq!(request["kind"], 2, "SPAN_KIND_SERVER");
    assert_eq!(request["attributes"]["http.response.status_code"], 200);
    assert_eq!(call["parent"], request["span"]);
    assert_eq!(call["attributes"]["tessera.component"], "fetch");
    assert_eq!(call["attributes"]["tessera.function"], "fetch");
    assert!(
        call["attributes"]["tessera.component.digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(call["attributes"]["tessera.fuel"].as_i64().unwrap() > 0);
    assert!(
        call["attributes"]["tessera.peak_memory_bytes"]
            .as_i64()
            .unwrap()
            > 0
    );
    assert_eq!(call["attributes"]["tessera.outcome"], "ok");
    assert_eq!(http["parent"], call["span"]);
    assert_eq!(http["kind"], 3, "SPAN_KIND_CLIENT");
    assert_eq!(http["attributes"]["tessera.decision"], "allow");
    assert_eq!(
        http["attributes"]["tessera.target"],
        format!("http://127.0.0.1:{port}/v1/items")
    );
    // The request the guest sent carries the trace on, under its span.
    let heads = seen.lock().unwrap().to_ascii_lowercase();
    let sent = heads
        .lines()
        .find_map(|l| l.strip_prefix("traceparent: "))
        .unwrap_or_else(|| panic!("{heads}"))
        .trim()
        .to_string();
    let http_span = http["span"].as_str().unwrap();
    assert_eq!(sent, format!("00-{trace}-{http_span}-01"));
}

#[test]
fn without_otlp_no_traceparent_leaves_the_guest() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let (port, seen) = http_stub();
    register(
        d,
        "fetch",
        "http-fetch",
        Some(&format!(
            "[http]\nallowed_outbound_hosts = [\"http://127.0.0.1:{port}\"]\n"
        )),
    );
    let server = Serving::start(d, &[]);
    let status = post_with_traceparent(
        &server.base,
        "/v1/components/fetch/call/fetch",
        &format!("{{\"url\":\"http://127.0.0.1:{port}/x\"}}"),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    );
    assert_eq!(status, 200);
    server.stop();
    let heads = seen.lock().unwrap().to_ascii_lowercase();
    assert!(heads.contains("get /x"), "{heads}");
    assert!(!heads.contains("traceparent"), "{heads}");
}

/// `tessera plan run --otlp`: a span per step attempt, its call under it.
#[test]
fn plan_steps_are_spans_with_their_calls_under_them() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let receiver = Receiver::start(d);
    let plan = d.join("hi.plan.toml");
    std::fs::write(
        &plan,
        format!(
            "name = \"hi\"\n[steps.greet]\ncomponent = \"{}\"\nfunction = \"greet\"\nargs = {{ name = \"Ada\" }}\n",
            tessera_test_support::component("hello").display()
        ),
    )
    .unwrap();
    let out = common::tessera(d)
        .args(["plan", "run"])
        .arg(&plan)
        .args(["--otlp", &format!("http://127.0.0.1:{}", receiver.port)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The process flushed its spans before it exited.
    let spans = receiver.spans();
    let step = find(&spans, |s| s["name"] == "plan step greet");
    let call = find(&spans, |s| s["name"] == "call hello greet");
    assert_eq!(step["attributes"]["tessera.plan"], "hi");
    assert_eq!(step["attributes"]["tessera.plan.attempt"], 1);
    assert_eq!(call["trace"], step["trace"]);
    assert_eq!(call["parent"], step["span"]);
}

/// A message carries its sender's trace: the request that sends it to `a`,
/// `a`'s turn and its call, the message that call sends to `b`, `b`'s turn
/// and its call are one trace, each the child of the one before.
#[test]
fn agent_turns_are_spans_and_messages_carry_the_trace_on() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let receiver = Receiver::start(d);
    register(d, "probe", "probe-agent", Some("[agent]\nsend = [\"*\"]\n"));
    let otlp = format!("http://127.0.0.1:{}", receiver.port);
    let server = Serving::start(d, &["--otlp", &otlp]);
    for id in ["a", "b"] {
        let (status, v) = server.request(
            "POST",
            "/v1/agents",
            &json!({"id": id, "component": "probe"}).to_string(),
        );
        assert_eq!(status, 201, "{v}");
    }
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let caller_span = "b7ad6b7169203331";
    let relayed = json!({"op": "append", "value": "hi"}).to_string();
    let (status, v) = request_with(
        &server.base,
        "POST",
        "/v1/agents/a/messages",
        &[("traceparent", &format!("00-{trace}-{caller_span}-01"))],
        &json!({"body": {"op": "send", "to": "b", "body": relayed}, "wait": true}).to_string(),
    );
    assert_eq!(status, 200, "{v}");
    assert!(v["reply"]["id"].is_string(), "{v}");
    // `b` takes the message after `a`'s turn: wait for its turn.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, b) = server.request("GET", "/v1/agents/b", "");
        if b["turns"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "b took no turn: {b}");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.stop();
    let spans = spans_once(&receiver, 5);
    let request = find(&spans, |s| s["name"] == "POST /v1/agents/a/messages");
    let turn_a = find(&spans, |s| s["name"] == "agent turn a #1");
    let call_a = find(&spans, |s| {
        s["name"].as_str().is_some_and(|n| n.starts_with("call ")) && s["parent"] == turn_a["span"]
    });
    let turn_b = find(&spans, |s| s["name"] == "agent turn b #1");
    let call_b = find(&spans, |s| {
        s["name"].as_str().is_some_and(|n| n.starts_with("call ")) && s["parent"] == turn_b["span"]
    });
    for s in [&request, &turn_a, &call_a, &turn_b, &call_b] {
        assert_eq!(s["trace"], trace, "{s}");
    }
    assert_eq!(request["parent"], caller_span);
    assert_eq!(turn_a["parent"], request["span"]);
    assert_eq!(turn_a["kind"], 5, "SPAN_KIND_CONSUMER");
    assert_eq!(turn_a["attributes"]["tessera.agent"], "a");
    assert_eq!(turn_a["attributes"]["tessera.agent.turn"], 1);
    assert_eq!(turn_a["attributes"]["tessera.agent.attempt"], 1);
    assert!(turn_a["attributes"]["tessera.run"].is_string(), "{turn_a}");
    // The message `a`'s call sent: `b`'s turn continues from that call.
    assert_eq!(turn_b["parent"], call_a["span"]);
    assert_eq!(turn_b["attributes"]["tessera.agent"], "b");
    assert_eq!(
        turn_b["attributes"]["tessera.agent.message"],
        v["reply"]["id"]
    );
}

/// `--otlp-sample 0`: no trace that starts here is kept; one that comes in
/// sampled by its caller is (parent-based sampling).
#[test]
fn sampling_keeps_a_share_of_new_traces_and_follows_the_callers_decision() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let receiver = Receiver::start(d);
    register(d, "hello", "hello", None);
    let otlp = format!("http://127.0.0.1:{}", receiver.port);
    let server = Serving::start(d, &["--otlp", &otlp, "--otlp-sample", "0"]);
    let path = "/v1/components/hello/call/greet";
    let body = json!({"name": "Ada"}).to_string();
    for _ in 0..5 {
        let (status, v) = server.request("POST", path, &body);
        assert_eq!(status, 200, "{v}");
    }
    let trace = "5bf92f3577b34da6a3ce929d0e0e4736";
    let sampled = format!("00-{trace}-00f067aa0ba902b7-01");
    assert_eq!(
        post_with_traceparent(&server.base, path, &body, &sampled),
        200
    );
    let unsampled = "00-6bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    assert_eq!(
        post_with_traceparent(&server.base, path, &body, unsampled),
        200
    );
    server.stop();
    let spans = spans_once(&receiver, 2);
    assert!(!spans.is_empty());
    for s in &spans {
        assert_eq!(
            s["trace"], trace,
            "only the caller's sampled trace: {spans:#?}"
        );
    }
    find(&spans, |s| s["name"] == "call hello greet");

    // A ratio out of range is refused before anything starts.
    let out = common::tessera(d)
        .args([
            "--otlp",
            &otlp,
            "--otlp-sample",
            "1.5",
            "components",
            "list",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1.5 is not between 0 and 1"), "{err}");
}
