//! End-to-end tests of the `tessera` binary against the real example components.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::Serving;
use serde_json::Value;
use tessera_test_support::component;

/// How long a test waits for an event before giving up. Only a guard
/// against hangs: no test relies on how long anything takes.
const EVENT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

struct Cli {
    data: tempfile::TempDir,
}

impl Cli {
    fn new() -> Self {
        Self {
            data: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tessera"))
            .arg("--data")
            .arg(self.data.path())
            .args(args)
            .output()
            .expect("run tessera")
    }

    fn audit_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(self.data.path().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn help_covers_every_command() {
    let cli = Cli::new();
    for args in [&["--help"][..], &["inspect", "--help"], &["call", "--help"]] {
        let o = cli.run(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        assert!(stdout(&o).contains("Usage"), "{args:?}: {}", stdout(&o));
    }
    assert!(stdout(&cli.run(&["--help"])).contains("Exit codes"));
}

#[test]
fn inspect_lists_functions_with_schemas() {
    let cli = Cli::new();
    let hello = component("hello");
    let o = cli.run(&["inspect", hello.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("greet(name: string) -> string"), "{text}");
    assert!(text.contains("Greets"), "{text}");
    let o = cli.run(&["inspect", hello.to_str().unwrap(), "--json"]);
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    let greet = doc["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "greet")
        .unwrap();
    assert_eq!(greet["parameters"]["properties"]["name"]["type"], "string");
    assert_eq!(greet["result"]["type"], "string");
}

#[test]
fn call_prints_the_result_and_keeps_guest_output_off_stdout() {
    let cli = Cli::new();
    let hello = component("hello");
    let o = cli.run(&[
        "call",
        hello.to_str().unwrap(),
        "greet",
        "--args",
        r#"{"name":"Ada"}"#,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "\"Hello, Ada!\"");

    let o = cli.run(&[
        "call",
        hello.to_str().unwrap(),
        "chatter",
        "--args",
        r#"{"msg":"hey"}"#,
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o).trim(), "3", "guest output leaked into stdout");
    assert!(
        stderr(&o).contains("[guest stdout] stdout: hey"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("[guest log info hello] hey"),
        "{}",
        stderr(&o)
    );

    let o = cli.run(&[
        "call",
        hello.to_str().unwrap(),
        "chatter",
        "--args",
        r#"{"msg":"hey"}"#,
        "--json",
    ]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["result"], 3);
    assert_eq!(v["stdout"], "stdout: hey\n");
    assert!(v["fuel_consumed"].as_u64().unwrap() > 0);
}

#[test]
fn exit_codes_distinguish_outcomes() {
    let cli = Cli::new();
    let hello = component("hello");
    let h = hello.to_str().unwrap();
    // 2: bad input (JSON, arguments, function, manifest, component).
    assert_eq!(
        cli.run(&["call", h, "greet", "--args", "{not json"])
            .status
            .code(),
        Some(2)
    );
    let o = cli.run(&["call", h, "types#echo-u8", "--args", r#"{"v":300}"#]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("$.v: expected u8 (0..=255), got 300"),
        "{}",
        stderr(&o)
    );
    assert_eq!(cli.run(&["call", h, "no-such-fn"]).status.code(), Some(2));
    let bad_manifest = cli.data.path().join("bad.toml");
    std::fs::write(&bad_manifest, "[limits]\nfuell = 1\n").unwrap();
    let o = cli.run(&[
        "call",
        h,
        "greet",
        "--manifest",
        bad_manifest.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("fuell"), "{}", stderr(&o));
    let not_wasm = cli.data.path().join("x.wasm");
    std::fs::write(&not_wasm, "nope").unwrap();
    assert_eq!(
        cli.run(&["inspect", not_wasm.to_str().unwrap()])
            .status
            .code(),
        Some(2)
    );
    // 3: guest error.
    assert_eq!(
        cli.run(&["call", h, "divide", "--args", r#"{"a":1,"b":0}"#])
            .status
            .code(),
        Some(3)
    );
    // 4: trap or limit.
    assert_eq!(
        cli.run(&["call", h, "types#fail", "--args", r#"{"msg":"x"}"#])
            .status
            .code(),
        Some(4)
    );
    let o = cli.run(&[
        "call",
        component("deep-recursion").to_str().unwrap(),
        "recurse",
        "--args",
        r#"{"depth":100000000}"#,
    ]);
    assert_eq!(o.status.code(), Some(4));
    assert!(stderr(&o).contains("call stack exhausted"));
    // 5: denied.
    let o = cli.run(&[
        "call",
        component("http-fetch").to_str().unwrap(),
        "fetch",
        "--args",
        r#"{"url":"http://127.0.0.1:9/x"}"#,
    ]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    let audit = cli.audit_lines();
    let denial = audit
        .iter()
        .find(|e| e["decision"] == "deny")
        .expect("denial audited");
    for key in [
        "time",
        "component",
        "function",
        "capability",
        "target",
        "decision",
    ] {
        assert!(
            denial.get(key).is_some(),
            "audit event lacks {key}: {denial}"
        );
    }
    assert_eq!(denial["capability"], "http");
    assert!(denial["component"].as_str().unwrap().starts_with("sha256:"));
}

#[test]
fn deadline_from_manifest_is_enforced() {
    let cli = Cli::new();
    let manifest = cli.data.path().join("spin.toml");
    std::fs::write(
        &manifest,
        "[limits]\ntimeout_ms = 300\nfuel = 1000000000000\n",
    )
    .unwrap();
    let o = cli.run(&[
        "call",
        component("spin").to_str().unwrap(),
        "spin",
        "--manifest",
        manifest.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(4));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["error"]["limit"], "deadline");
    assert_eq!(v["error"]["message"], "deadline exceeded (limit 300 ms)");
}

#[test]
fn second_load_uses_the_compile_cache() {
    let cli = Cli::new();
    let hello = component("hello");
    assert_eq!(
        cli.run(&["inspect", hello.to_str().unwrap()]).status.code(),
        Some(0)
    );
    let cache = cli.data.path().join("cache");
    let entries: Vec<_> = walk(&cache)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let before = std::fs::metadata(&entries[0]).unwrap().modified().unwrap();
    assert_eq!(
        cli.run(&["inspect", hello.to_str().unwrap()]).status.code(),
        Some(0)
    );
    let after = std::fs::metadata(&entries[0]).unwrap().modified().unwrap();
    assert_eq!(before, after, "cache entry was rewritten instead of reused");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn record_show_and_replay_from_the_cli() {
    let cli = Cli::new();
    let o = cli.run(&[
        "call",
        component("hello").to_str().unwrap(),
        "chatter",
        "--args",
        r#"{"msg":"journal me"}"#,
        "--record",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let run_id = stderr(&o)
        .lines()
        .find_map(|l| l.strip_prefix("recorded run "))
        .expect("run id on stderr")
        .trim()
        .to_string();
    let o = cli.run(&["runs", "list"]);
    assert!(stdout(&o).contains(&run_id), "{}", stdout(&o));
    let o = cli.run(&["runs", "show", &run_id]);
    let show = stdout(&o);
    assert!(
        show.contains("stdout          \"stdout: journal me\""),
        "{show}"
    );
    assert!(
        show.contains("log             Info [hello] journal me"),
        "{show}"
    );
    let o = cli.run(&["replay", &run_id]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).starts_with("identical"), "{}", stdout(&o));
    // A different component is refused.
    let o = cli.run(&[
        "replay",
        &run_id,
        "--component",
        component("spin").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("component mismatch"), "{}", stderr(&o));
    // Export, then import into another data directory, then replay there.
    let file = cli.data.path().join("run.jsonl");
    assert_eq!(
        cli.run(&["runs", "export", &run_id, "-o", file.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    let other = Cli::new();
    let o = other.run(&["runs", "import", file.to_str().unwrap()]);
    assert_eq!(stdout(&o).trim(), run_id);
    assert_eq!(other.run(&["replay", &run_id]).status.code(), Some(0));
}

#[test]
fn a_killed_run_leaves_an_incomplete_readable_journal() {
    let cli = Cli::new();
    // The same recorder as `call --record`, in a server: only there can a
    // test see that steps have reached the store before killing the process.
    common::register(
        cli.data.path(),
        "spin",
        "spin",
        Some(
            "[limits]\ntimeout_ms = 600000\nfuel = 1000000000000000\nmax_output_bytes = 100000000\n",
        ),
    );
    let serving = Serving::start(cli.data.path(), &[]);
    let base = serving.base.clone();
    // Never answered: the server is killed under it.
    let calling = std::thread::spawn(move || {
        common::request(
            &base,
            "POST",
            "/v1/components/spin/call/ticker",
            r#"{"every":200000}"#,
        )
    });
    // The server commits pending steps before it lists runs, so a step
    // listed here is in the journal file.
    let waiting = std::time::Instant::now();
    loop {
        let (status, v) = serving.request("GET", "/v1/runs", "");
        assert_eq!(status, 200, "{v}");
        if v["runs"][0]["steps"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            waiting.elapsed() < EVENT_WAIT,
            "no step journaled within {EVENT_WAIT:?}: {v}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    serving.kill(); // SIGKILL: no chance to finish the journal
    calling.join().unwrap();
    let o = cli.run(&["runs", "list", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let runs: Value = serde_json::from_slice(&o.stdout).unwrap();
    let run = &runs[0];
    assert_eq!(run["status"], "incomplete");
    assert!(
        run["steps"].as_u64().unwrap() > 0,
        "no steps were committed: {run}"
    );
    let o = cli.run(&["runs", "show", run["run_id"].as_str().unwrap()]);
    let show = stdout(&o);
    assert!(show.contains("stdout          \"tick "), "{show}");
    assert!(show.contains("INCOMPLETE"), "{show}");
}
