//! The `tessera` binary as a server: `tessera components --server` managing
//! a running server's registry through its HTTP API with tokens, `serve
//! --stdio` when its client goes away, and the HTTP API fuzzed against its
//! own OpenAPI document with schemathesis (from `scripts/python-env.sh`).

mod common;

use std::process::Output;

use common::{Serving, component, register, tessera};
use tessera_test_support::repo_root as root;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn components_are_managed_through_a_running_server() {
    let data = tempfile::tempdir().unwrap();
    let token = |scope: &str| {
        let o = tessera(data.path())
            .args(["tokens", "create", "--scope", scope])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let (manage, call) = (token("manage"), token("call"));
    let serving = Serving::start(data.path(), &["--require-tokens"]);
    let remote = |token: Option<&str>, args: &[&str]| {
        let mut c = tessera(data.path());
        c.args(["components", "--server", &serving.base]);
        if let Some(t) = token {
            c.args(["--token", t]);
        }
        c.args(args).output().unwrap()
    };
    let hello = component("hello").display().to_string();
    let spin = component("spin").display().to_string();

    // Denied: no token, and a token without the `manage` scope.
    let o = remote(None, &["add", &hello, "--name", "hello"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("unauthorized (401)"), "{}", text(&o));
    let o = remote(Some(&call), &["add", &hello, "--name", "hello"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("forbidden (403)"), "{}", text(&o));

    // Allowed: upload, a second version, list, inspect, rollback, remove.
    let o = remote(Some(&manage), &["add", &hello, "--name", "tool"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("tool v1 active"), "{}", text(&o));
    let o = remote(Some(&manage), &["add", &spin, "--name", "tool"]);
    assert!(text(&o).contains("tool v2 active"), "{}", text(&o));
    let o = remote(Some(&call), &["list"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("tool") && text(&o).contains("v2/2"),
        "{}",
        text(&o)
    );
    let o = remote(Some(&call), &["inspect", "tool"]);
    assert!(text(&o).contains("fn spin"), "{}", text(&o));
    let o = remote(Some(&manage), &["rollback", "tool"]);
    assert!(text(&o).contains("tool v1 active"), "{}", text(&o));
    let o = remote(Some(&call), &["inspect", "tool"]);
    assert!(text(&o).contains("fn greet"), "{}", text(&o));
    let o = remote(Some(&manage), &["remove", "tool"]);
    assert!(text(&o).contains("tool removed"), "{}", text(&o));
    let o = remote(Some(&call), &["inspect", "tool"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no_such_component (404)"), "{}", text(&o));

    // A bad component is refused by the server with its reason.
    let o = remote(
        Some(&manage),
        &[
            "add",
            &data.path().join("tokens.json").display().to_string(),
            "--name",
            "junk",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("bad_component"), "{}", text(&o));

    // So is one that imports an interface Tessera does not provide, with
    // the interface named; as JSON with --json.
    let missing = component("missing-import").display().to_string();
    let o = remote(Some(&manage), &["add", &missing, "--name", "tool"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("`example:missing/thing`: Tessera does not provide this interface"),
        "{}",
        text(&o)
    );
    let o = remote(
        Some(&manage),
        &["add", &missing, "--name", "tool", "--json"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "bad_component", "{v}");
    assert_eq!(v["error"]["context"]["status"], 400, "{v}");
    assert_eq!(
        v["error"]["context"]["unresolved_imports"][0]["import"], "example:missing/thing",
        "{v}"
    );
    assert_eq!(
        v["error"]["context"]["exports"],
        serde_json::json!(["add", "lookup"])
    );
    let o = remote(Some(&call), &["list"]);
    assert!(!text(&o).contains("tool"), "{}", text(&o));
    serving.stop();

    // Not a URL the client speaks.
    let o = tessera(data.path())
        .args(["components", "--server", "https://example.com", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("use http://"), "{}", text(&o));
}

#[test]
fn closing_stdin_cancels_running_mcp_calls_and_journals_them() {
    use std::io::{Read, Write};
    let data = tempfile::tempdir().unwrap();
    register(
        data.path(),
        "spin",
        "spin",
        Some("[limits]\ntimeout_ms = 600000\nfuel = 100000000000000\n"),
    );
    let mut child = tessera(data.path())
        .args(["serve", "--stdio"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for line in [
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"spin__spin","arguments":{}}}"#,
    ] {
        writeln!(stdin, "{line}").unwrap();
    }
    // `spin` never returns and its deadline is ten minutes away; closing
    // stdin must end it.
    drop(stdin);
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(child.wait().unwrap().success());
    let answer = out
        .lines()
        .find(|l| l.contains(r#""id":2"#))
        .unwrap_or_else(|| panic!("no answer to the call: {out}"));
    assert!(
        answer.contains(r#""isError":true"#) && answer.contains("was cancelled"),
        "{answer}"
    );
    let journal = tessera_journal::JournalStore::open(data.path()).unwrap();
    let runs = journal.list().unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(
        matches!(
            runs[0].end.as_ref().map(|e| &e.result),
            Some(tessera_journal::RunResult::Cancelled { .. })
        ),
        "{runs:?}"
    );
}

/// One HTTP/1.1 request; returns the whole response text.
fn http(base: &str, request: &str) -> String {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(request.replace("{addr}", addr).as_bytes())
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn allowed_origin_flag_is_checked_and_applied() {
    let data = tempfile::tempdir().unwrap();
    let o = tessera(data.path())
        .args(["serve", "--allowed-origin", "localhost:3000"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("invalid origin"), "{}", text(&o));

    let serving = Serving::start(data.path(), &["--allowed-origin", "http://localhost:3000"]);
    let get = |origin: &str| {
        http(
            &serving.base,
            &format!(
                "GET /v1/components HTTP/1.1\r\nHost: {{addr}}\r\nOrigin: {origin}\r\nConnection: close\r\n\r\n"
            ),
        )
    };
    let allowed = get("http://localhost:3000");
    assert!(allowed.starts_with("HTTP/1.1 200"), "{allowed}");
    assert!(
        allowed
            .to_ascii_lowercase()
            .contains("access-control-allow-origin: http://localhost:3000"),
        "{allowed}"
    );
    let refused = get("http://evil.example");
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(refused.contains("origin_not_allowed"), "{refused}");
    // A cross-site form post to a tool never reaches it.
    let form = http(
        &serving.base,
        "POST /v1/components/hello/call/greet HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    assert!(form.starts_with("HTTP/1.1 415"), "{form}");
    serving.stop();
}

/// The schemathesis command of the Python environment the interop tests
/// share (`scripts/python-env.sh`, run here if it has not been yet).
fn schemathesis() -> std::process::Command {
    let status = std::process::Command::new("bash")
        .arg(root().join("scripts/python-env.sh"))
        .status()
        .expect("run scripts/python-env.sh");
    assert!(status.success(), "scripts/python-env.sh failed");
    std::process::Command::new(root().join("target/mcp-venv/bin/schemathesis"))
}

/// Every operation of `/openapi.json` (but the endless audit stream) is
/// called with generated valid and invalid requests: no answer may be a
/// 5xx, and every answer must have a documented status, content type and
/// schema. The seed is fixed so a failure reproduces.
#[test]
fn http_api_conforms_to_its_openapi_document() {
    let data = tempfile::tempdir().unwrap();
    register(data.path(), "hello", "hello", None);
    let o = tessera(data.path())
        .args(["tokens", "create", "--scope", "call,manage,read"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let token = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let serving = Serving::start(data.path(), &["--require-tokens"]);
    // A call, so that the run routes have a run to find.
    let greet = http(
        &serving.base,
        &format!(
            "POST /v1/components/hello/call/greet HTTP/1.1\r\nHost: {{addr}}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 14\r\nConnection: close\r\n\r\n{{\"name\":\"Ada\"}}"
        ),
    );
    assert!(greet.starts_with("HTTP/1.1 200"), "{greet}");

    // Its working files (reports, example database) stay in a temp dir.
    let work = tempfile::tempdir().unwrap();
    let out = schemathesis()
        .current_dir(work.path())
        .args(["run", &format!("{}/openapi.json", serving.base)])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
        ])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "30", "--seed", "7"])
        // Event streams never end.
        .args(["--exclude-path", "/v1/audit"])
        .args(["--exclude-path", "/v1/agents/events"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--request-timeout", "20", "--generation-database", "none"])
        .args(["--workers", "1", "--no-color"])
        .output()
        .expect("run schemathesis");
    serving.stop();
    assert!(
        out.status.success(),
        "schemathesis found problems ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
