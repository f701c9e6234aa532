//! The `tessera` binary as a server: `tessera components --server` managing
//! a running server's registry through its HTTP API with tokens, `tessera
//! agents --server` driving its agents, `serve --stdio` when its client
//! goes away, and the HTTP API fuzzed against its own OpenAPI document with
//! schemathesis (from `scripts/python-env.sh`).

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

/// Stdout as JSON.
fn json_of(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}

/// Waits (up to a minute) until `done` holds.
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `tessera agents --server` drives the agents of a running server through
/// its HTTP API, with the local mode's output (compared once the server
/// has stopped and the local mode can open the store), failure kinds and
/// exit codes, and the tokens' scopes.
#[test]
fn agents_are_driven_through_a_running_server() {
    use serde_json::json;
    let data = tempfile::tempdir().unwrap();
    register(
        data.path(),
        "probe-agent",
        "probe-agent",
        Some("[agent]\nsend = [\"*\"]\n"),
    );
    register(data.path(), "cities", "city-facts", None);
    // An agent whose `cities__population` tool waits for a person, with a
    // mailbox of two messages.
    register(
        data.path(),
        "tooled",
        "probe-agent",
        Some(
            "[agent]\nmailbox = 2\n\n[agent.tools.cities]\ncomponent = \"cities\"\napproval = [\"population\"]\n",
        ),
    );
    let token = |scope: &str| {
        let o = tessera(data.path())
            .args(["tokens", "create", "--scope", scope])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let (all, reader) = (token("call,manage,read"), token("read"));
    let serving = Serving::start(data.path(), &["--require-tokens"]);
    let base = serving.base.clone();
    let with = |token: &str, args: &[&str]| {
        tessera(data.path())
            .args(["agents", "--server", &base, "--token", token])
            .args(args)
            .output()
            .unwrap()
    };
    let agents = |args: &[&str]| with(&all, args);
    let ok = |args: &[&str]| {
        let o = agents(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
        o
    };
    let ok_json = |args: &[&str]| {
        let mut args = args.to_vec();
        args.push("--json");
        json_of(&ok(&args))
    };
    let stdout = |o: &Output| String::from_utf8_lossy(&o.stdout).into_owned();

    // Spawned by registry name.
    assert_eq!(
        ok_json(&["spawn", "a", "--component", "probe-agent"]),
        json!({"ok": true, "agent": "a"})
    );
    assert_eq!(
        stdout(&ok(&["spawn", "b", "--component", "probe-agent"])),
        "spawned b\n"
    );
    // The id is taken: 409, the local kind.
    let o = agents(&["spawn", "b", "--component", "probe-agent", "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(json_of(&o)["error"]["kind"], "agent_exists");
    // A file is refused, as the server refuses it; so is a manifest.
    let wasm = component("probe-agent").display().to_string();
    let o = agents(&["spawn", "c", "--component", &wasm]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("a server runs only registered components"),
        "{}",
        text(&o)
    );
    let manifest = data.path().join("probe-agent.toml").display().to_string();
    let o = agents(&[
        "spawn",
        "c",
        "--component",
        "probe-agent",
        "--manifest",
        &manifest,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--manifest"), "{}", text(&o));
    // An unregistered component: the local kind.
    let o = agents(&["spawn", "c", "--component", "nothere", "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(json_of(&o)["error"]["kind"], "component");

    // A turn that sends three messages, its reply as JSON.
    let r = ok_json(&["send", "a", r#"{"op":"sendn","to":"b","n":3}"#, "--wait"]);
    assert_eq!(
        (r["ok"].clone(), r["turn"].clone()),
        (json!(true), json!(1)),
        "{r}"
    );
    assert_eq!(r["reply"], json!({"sent": 3}), "{r}");
    let run = r["run"].as_str().expect("the turn's run").to_string();
    // `b` gets them from the server's outbox delivery; then its state, as
    // text.
    until("b's three turns", || {
        ok_json(&["show", "b"])["turns"] == json!(3)
    });
    let o = ok(&["send", "b", r#"{"op":"state"}"#, "--wait"]);
    assert_eq!(stdout(&o), "[0,1,2]\n", "{}", text(&o));
    // Without --wait: the message id, once delivered.
    let v = ok_json(&["send", "a", r#"{"op":"append","value":"x"}"#, "--id", "m-x"]);
    assert_eq!(v, json!({"ok": true, "message": "m-x"}));
    until("a's second turn", || {
        ok_json(&["show", "a"])["turns"] == json!(2)
    });

    // List, show, log.
    let list = ok_json(&["list"]);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"], "{list}");
    assert_eq!(list[1]["turns"], 4, "{list}");
    assert_eq!(list[0]["reason"], serde_json::Value::Null, "{list}");
    let o = ok(&["list"]);
    assert!(stdout(&o).starts_with("ID "), "{}", text(&o));
    assert!(
        stdout(&o).lines().any(|l| l.starts_with("b ")
            && l.split_whitespace().collect::<Vec<_>>()[..4] == ["b", "active", "4", "0"]),
        "{}",
        text(&o)
    );
    let show = ok_json(&["show", "a"]);
    assert_eq!(
        (
            &show["status"],
            &show["component"],
            &show["turns"],
            &show["depth"],
            &show["dead_letters"],
            &show["approvals_waiting"]
        ),
        (
            &json!("active"),
            &json!("probe-agent"),
            &json!(2),
            &json!(0),
            &json!(0),
            &json!([])
        ),
        "{show}"
    );
    assert_eq!(show["state"], r#"["x"]"#, "{show}");
    let o = ok(&["show", "a"]);
    assert!(
        stdout(&o).contains("turns      2   queued 0"),
        "{}",
        text(&o)
    );
    let log = ok_json(&["log", "a"]);
    assert_eq!(log.as_array().unwrap().len(), 2, "{log}");
    let first = &log[0];
    assert_eq!(first["run"], run.as_str(), "{first}");
    let sends = first["exchanges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["kind"] == "agent.send")
        .count();
    assert_eq!(sends, 3, "{first}");
    // The messages sent, as the local mode prints them: [to, id].
    assert_eq!(first["sent"].as_array().unwrap().len(), 3, "{first}");
    assert_eq!(first["sent"][0][0], "b", "{first}");
    let o = ok(&["log", "a"]);
    assert_eq!(
        stdout(&o).matches("  out   → b (").count(),
        3,
        "{}",
        text(&o)
    );

    // A turn that fails for good: exit 3 as locally, a dead letter,
    // re-driven (and failing again).
    let o = agents(&[
        "send",
        "b",
        r#"{"op":"fail","message":"nope"}"#,
        "--wait",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let v = json_of(&o);
    assert_eq!(v["error"]["kind"], "turn_failed", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("nope"),
        "{v}"
    );
    assert!(v["error"]["context"]["message"].is_string(), "{v}");
    let dead = ok_json(&["dead-letters", "b"]);
    assert_eq!(dead.as_array().unwrap().len(), 1, "{dead}");
    assert!(
        dead[0]["message"]["body"]
            .as_str()
            .unwrap()
            .contains("fail"),
        "{dead}"
    );
    assert!(
        stdout(&ok(&["dead-letters", "b"])).starts_with("seq "),
        "dead-letters text"
    );
    let redriven = ok_json(&["redrive", "b"]);
    assert_eq!(
        redriven["messages"].as_array().unwrap().len(),
        1,
        "{redriven}"
    );
    until("the re-driven message to fail again", || {
        let dead = ok_json(&["dead-letters", "b"]);
        dead.as_array().unwrap().len() == 1 && dead[0]["message"]["id"] == redriven["messages"][0]
    });
    assert_eq!(ok_json(&["show", "b"])["dead_letters"], 1);

    // Fork after turn 1 (a's state then: none yet).
    assert_eq!(
        ok_json(&["fork", "a", "--at", "1", "--as", "a1"]),
        json!({"ok": true, "agent": "a1", "turns": 1})
    );
    let a1 = ok_json(&["show", "a1"]);
    assert_eq!(
        (&a1["turns"], &a1["state"]),
        (&json!(1), &json!("null")),
        "{a1}"
    );
    assert_eq!(ok_json(&["log", "a1"]).as_array().unwrap().len(), 1);
    assert_eq!(
        stdout(&ok(&["fork", "a", "--at", "2", "--as", "a2"])),
        "forked a after turn 2 as a2\n"
    );
    assert_eq!(ok_json(&["show", "a2"])["state"], r#"["x"]"#);

    // Restart: b's initial state (none), its restarts counted.
    assert_eq!(stdout(&ok(&["restart", "b"])), "restarted b\n");
    let b = ok_json(&["show", "b"]);
    assert_eq!(
        (&b["state"], &b["restarts"]),
        (&json!(null), &json!(1)),
        "{b}"
    );

    // A tool call waiting for approval; meanwhile a message with --wait
    // times out (504, the local kind), and the mailbox fills (429).
    ok(&["spawn", "t", "--component", "tooled"]);
    ok(&[
        "send",
        "t",
        r#"{"op":"tool","name":"cities__population","args":{"city":"Lyon"}}"#,
    ]);
    until("t to wait for approval", || {
        ok_json(&["show", "t"])["status"] == "waiting"
    });
    let o = agents(&[
        "send",
        "t",
        r#"{"op":"noop"}"#,
        "--wait",
        "--timeout",
        "1",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(json_of(&o)["error"]["kind"], "timeout", "{}", text(&o));
    let o = agents(&["send", "t", r#"{"op":"noop"}"#, "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(json_of(&o)["error"]["kind"], "mailbox_full", "{}", text(&o));
    let o = agents(&["send", "t", "{}", "--wait", "--timeout", "7200"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("1 to 3600 seconds"), "{}", text(&o));
    let approvals = ok_json(&["approvals", "t"]);
    assert_eq!(approvals.as_array().unwrap().len(), 1, "{approvals}");
    assert_eq!(approvals[0]["tool"], "cities__population", "{approvals}");
    let request = approvals[0]["request"].as_str().unwrap().to_string();
    assert_eq!(
        ok_json(&["show", "t"])["approvals_waiting"][0]["request"],
        request.as_str()
    );
    let decided = ok_json(&["approve", "t", &request, "--reason", "fine"]);
    assert_eq!(
        decided["approval"]["decision"]["approved"], true,
        "{decided}"
    );
    assert_eq!(
        decided["approval"]["decision"]["reason"], "fine",
        "{decided}"
    );
    // Deciding again: 409, the local kind.
    let o = agents(&["reject", "t", &request, "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(json_of(&o)["error"]["kind"], "invalid", "{}", text(&o));
    until("t's turns", || ok_json(&["show", "t"])["turns"] == json!(2));
    let log = ok_json(&["log", "t"]);
    let tool = log[0]["exchanges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["kind"] == "agent.tool")
        .unwrap_or_else(|| panic!("no tool call: {log}"))
        .clone();
    assert!(tool.to_string().contains("522250"), "{tool}");

    // Unknown agents: 404, exit 2, the local kind.
    let o = agents(&["show", "nobody", "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(json_of(&o)["error"]["kind"], "no_such_agent");
    let o = agents(&["send", "nobody", "{}"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no_such_agent (404)"), "{}", text(&o));

    // `run` has nothing to do through a server.
    let o = agents(&["run"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("a server runs its agents itself"),
        "{}",
        text(&o)
    );

    // Scopes: `read` looks but does not send; no token at all is refused.
    let o = with(&reader, &["list", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(json_of(&o).as_array().unwrap().len(), 5);
    let o = with(&reader, &["send", "a", r#"{"op":"noop"}"#, "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(json_of(&o)["error"]["kind"], "forbidden", "{}", text(&o));
    let o = with(&reader, &["restart", "a"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("forbidden (403)"), "{}", text(&o));
    let o = tessera(data.path())
        .args(["agents", "list", "--server", &base])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("unauthorized (401)"), "{}", text(&o));
    // The environment variables of `kv` and `plans`.
    let o = tessera(data.path())
        .args(["agents", "show", "a", "--json"])
        .env("TESSERA_SERVER", &base)
        .env("TESSERA_TOKEN", &reader)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(json_of(&o)["id"], "a");

    // What the server printed, the local mode prints, once it can open the
    // store.
    let looks: [&[&str]; 9] = [
        &["list"],
        &["show", "a"],
        &["show", "b"],
        &["show", "t"],
        &["log", "a"],
        &["log", "t"],
        &["approvals", "t"],
        &["dead-letters", "b"],
        &["show", "a1"],
    ];
    let mut through_server = Vec::new();
    for look in looks {
        for json in [false, true] {
            let mut args = look.to_vec();
            if json {
                args.push("--json");
            }
            through_server.push((args.clone(), stdout(&ok(&args))));
        }
    }
    serving.stop();
    for (args, remote) in through_server {
        let o = tessera(data.path())
            .arg("agents")
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o));
        assert_eq!(stdout(&o), remote, "{args:?}");
    }
}

/// While a server holds the store, the local mode says so and points at
/// `--server`.
#[test]
fn agents_point_at_the_server_that_holds_the_store() {
    let data = tempfile::tempdir().unwrap();
    let serving = Serving::start(data.path(), &[]);
    // The server has opened its agents, and so the store.
    let (status, v) = serving.request("GET", "/v1/agents", "");
    assert_eq!(status, 200, "{v}");
    let o = tessera(data.path())
        .args(["agents", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains("another process has it open"), "{err}");
    assert!(err.contains("--server"), "{err}");
    let o = tessera(data.path())
        .args(["agents", "show", "a", "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v = json_of(&o);
    assert_eq!(v["error"]["kind"], "store_unavailable", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("--server"),
        "{v}"
    );
    // As it says, through the server.
    let o = tessera(data.path())
        .args(["agents", "list", "--server", &serving.base])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "no agents\n");
    serving.stop();
    let o = tessera(data.path())
        .args(["agents", "list"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}
