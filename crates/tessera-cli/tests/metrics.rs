//! `GET /metrics` of a real `tessera serve`, parsed with the Prometheus
//! project's own OpenMetrics parser (the `prometheus_client` Python
//! package).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

use common::{Serving, python, register};
use serde_json::Value;

/// `GET /metrics`: the status, the content type and the body.
fn scrape(base: &str) -> (u16, String, String) {
    let authority = base.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(authority).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let ctype = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    // The body may be chunked.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, ctype, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (len, rest) = s.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(len.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

/// Every sample as `{"name", "labels", "value"}`, through
/// `prometheus_client.openmetrics.parser` (which rejects anything that is
/// not valid OpenMetrics).
fn parse(text: &str) -> Vec<Value> {
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append({"family": family.name, "type": family.type, "name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sample(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s["name"] == name
                && labels
                    .iter()
                    .all(|(k, v)| s["labels"][*k].as_str() == Some(*v))
        })
        .and_then(|s| s["value"].as_f64())
}

#[test]
fn metrics_count_calls_outcomes_denials_loads_and_the_audit_chain() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    register(d, "hello", "hello", None);
    register(d, "fetch", "http-fetch", None);
    let server = Serving::start(d, &[]);
    let call = |path: &str, body: &str| server.request("POST", path, body);
    assert_eq!(
        call("/v1/components/hello/call/greet", r#"{"name":"Ada"}"#).0,
        200
    );
    assert_eq!(
        call("/v1/components/hello/call/greet", r#"{"name":"Bo"}"#).0,
        200
    );
    assert_eq!(
        call("/v1/components/hello/call/types%23fail", r#"{"msg":"x"}"#).0,
        422
    );
    assert_eq!(
        call(
            "/v1/components/fetch/call/fetch",
            r#"{"url":"http://127.0.0.1:9/"}"#
        )
        .0,
        200,
        "the guest returns its own `err`"
    );

    let (status, ctype, text) = scrape(&server.base);
    assert_eq!(status, 200, "{text}");
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let m = parse(&text);
    let calls = |component: &str, outcome: &str| {
        sample(
            &m,
            "tessera_calls_total",
            &[("component", component), ("outcome", outcome)],
        )
    };
    assert_eq!(calls("hello", "ok"), Some(2.0), "{text}");
    assert_eq!(calls("hello", "trap"), Some(1.0), "{text}");
    assert_eq!(calls("fetch", "denied"), Some(1.0), "{text}");
    assert_eq!(
        sample(
            &m,
            "tessera_call_duration_seconds_count",
            &[("component", "hello")]
        ),
        Some(3.0),
        "{text}"
    );
    assert!(
        sample(&m, "tessera_call_fuel_total", &[("component", "hello")]).unwrap() > 0.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &m,
            "tessera_call_peak_memory_bytes_count",
            &[("component", "fetch")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "tessera_audit_decisions_total",
            &[("capability", "http"), ("decision", "deny")]
        ),
        Some(1.0),
        "{text}"
    );
    // Both components were loaded from the compile cache `register` filled.
    assert_eq!(
        sample(&m, "tessera_component_loads_total", &[("cache", "hit")]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(sample(&m, "tessera_audit_chain_intact", &[]), Some(1.0));
    let lines = sample(&m, "tessera_audit_lines", &[]).unwrap();
    assert!(lines >= 1.0, "{text}");

    // A line of the audit log changed: the gauge says so, the server goes on.
    let path = d.join("audit.jsonl");
    let log = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, log.replacen("127.0.0.1:9", "127.0.0.1:8", 1)).unwrap();
    let (_, _, text) = scrape(&server.base);
    let m = parse(&text);
    assert_eq!(
        sample(&m, "tessera_audit_chain_intact", &[]),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        call("/v1/components/hello/call/greet", r#"{"name":"Cy"}"#).0,
        200
    );
    server.stop();
}

#[test]
fn metrics_need_the_read_scope_when_tokens_are_required() {
    let data = tempfile::tempdir().unwrap();
    let server = Serving::start(data.path(), &["--require-tokens"]);
    let (status, _, _) = scrape(&server.base);
    assert_eq!(status, 401);
    server.stop();
}
