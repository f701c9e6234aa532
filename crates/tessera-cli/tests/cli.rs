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
            .env("TESSERA_CACHE_DIR", self.data.path().join("cache"))
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

/// `tessera --data <data>` with the compile cache settings only from
/// `env` (no `TESSERA_CACHE_DIR`, `XDG_CACHE_HOME` or `HOME` of the
/// test's own).
fn tessera_with_env(data: &Path, env: &[(&str, &Path)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
    c.arg("--data")
        .arg(data)
        .env_remove("TESSERA_CACHE_DIR")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("HOME");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn cwasm_entries(dir: &Path) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect()
}

/// By default the compile cache is the user's (`$XDG_CACHE_HOME/tessera`,
/// else `~/.cache/tessera`), not the data directory's, so a second data
/// directory uses what the first compiled.
#[test]
fn the_compile_cache_is_per_user_and_shared_by_data_directories() {
    let home = tempfile::tempdir().unwrap();
    let xdg = tempfile::tempdir().unwrap();
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let hello = component("hello");
    let inspect = |data: &Path, env: &[(&str, &Path)]| {
        let o = tessera_with_env(data, env)
            .arg("inspect")
            .arg(&hello)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    };
    // XDG_CACHE_HOME wins over HOME.
    inspect(
        one.path(),
        &[("XDG_CACHE_HOME", xdg.path()), ("HOME", home.path())],
    );
    let entries = cwasm_entries(&xdg.path().join("tessera"));
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(cwasm_entries(home.path()).is_empty());
    assert!(!one.path().join("cache").exists());
    let before = std::fs::metadata(&entries[0]).unwrap().modified().unwrap();
    // Another data directory: the same entry is used, not rewritten.
    inspect(two.path(), &[("XDG_CACHE_HOME", xdg.path())]);
    let after = std::fs::metadata(&entries[0]).unwrap().modified().unwrap();
    assert_eq!(before, after, "the entry was compiled again");
    assert_eq!(cwasm_entries(&xdg.path().join("tessera")).len(), 1);
    // Without XDG_CACHE_HOME: ~/.cache/tessera.
    inspect(one.path(), &[("HOME", home.path())]);
    assert_eq!(cwasm_entries(&home.path().join(".cache/tessera")).len(), 1);
    // `--cache-dir` over everything; `--no-cache` writes nothing.
    let flag = tempfile::tempdir().unwrap();
    let o = tessera_with_env(one.path(), &[("XDG_CACHE_HOME", xdg.path())])
        .arg("--cache-dir")
        .arg(flag.path())
        .arg("inspect")
        .arg(&hello)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(cwasm_entries(flag.path()).len(), 1);
    let none = tempfile::tempdir().unwrap();
    let o = tessera_with_env(one.path(), &[("TESSERA_CACHE_DIR", none.path())])
        .args(["--no-cache", "inspect"])
        .arg(&hello)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(walk(none.path()).is_empty());
    // Nowhere to put it: a warning, and the command still works.
    let o = tessera_with_env(one.path(), &[])
        .arg("inspect")
        .arg(&hello)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("no compile cache"), "{}", stderr(&o));
}

/// Two processes compiling the same component into one cache at once both
/// succeed, and leave one whole entry (no temporary files).
#[test]
fn two_processes_compiling_into_one_cache_both_succeed() {
    let cache = tempfile::tempdir().unwrap();
    let datas: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let hello = component("hello");
    let children: Vec<_> = datas
        .iter()
        .map(|d| {
            tessera_with_env(d.path(), &[("TESSERA_CACHE_DIR", cache.path())])
                .arg("call")
                .arg(&hello)
                .args(["greet", "--args", r#"{"name":"Ada"}"#])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(stdout(&o).trim(), "\"Hello, Ada!\"");
    }
    let files = walk(cache.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].extension().is_some_and(|e| e == "cwasm"));
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
        show.contains("stdio.stdout     \"stdout: journal me\""),
        "{show}"
    );
    assert!(
        show.contains("logging.log      Info [hello] journal me"),
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
    assert!(show.contains("stdio.stdout     \"tick "), "{show}");
    assert!(show.contains("INCOMPLETE"), "{show}");
}

/// Every place a run's content can surface: the command's own output, the
/// journal file, `runs list/show/export`, the audit log and a replay. The
/// guest reads an inherited variable and a `wasi:config` secret and sends
/// each to an API as a bearer token.
#[test]
fn secrets_never_reach_a_journal_an_export_an_audit_line_or_a_log() {
    const INHERITED: &str = "inherited-Zq81-value";
    const SECRET: &str = "cfg-secret-Yp27-value";
    let (port, received) = tessera_test_support::http_stub();
    let cli = Cli::new();
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.toml");
    std::fs::write(
        &manifest,
        format!(
            "[env]\ninherit = [\"TESSERA_TEST_INHERITED\"]\n[config]\nvalues = {{ model = \"small\" }}\nsecrets = [\"api_key\"]\n[http]\nallowed_outbound_hosts = [\"http://127.0.0.1:{port}\"]\n"
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tessera"))
            .arg("--data")
            .arg(cli.data.path())
            .env("TESSERA_CACHE_DIR", cli.data.path().join("cache"))
            .args(args)
            .env("TESSERA_TEST_INHERITED", INHERITED)
            .env("TESSERA_SECRET_API_KEY", SECRET)
            .output()
            .expect("run tessera")
    };
    let mut seen = String::new();
    let keep = |seen: &mut String, o: &Output| {
        seen.push_str(&stdout(o));
        seen.push_str(&stderr(o));
    };
    let tool = component("config-tool");
    let url = format!("http://127.0.0.1:{port}/v1/chat");
    let mut runs = Vec::new();
    for (function, args) in [
        (
            "call-with-key",
            format!(r#"{{"key":"api_key","url":"{url}"}}"#),
        ),
        (
            "call-with-env",
            format!(r#"{{"name":"TESSERA_TEST_INHERITED","url":"{url}"}}"#),
        ),
    ] {
        let o = run(&[
            "call",
            tool.to_str().unwrap(),
            function,
            "--manifest",
            manifest.to_str().unwrap(),
            "--args",
            &args,
            "--record",
            "--json",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        keep(&mut seen, &o);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["result"], serde_json::json!({"ok": 200}));
        runs.push(v["run_id"].as_str().unwrap().to_string());
    }
    // The API got both values.
    let got = received.lock().unwrap().clone();
    assert!(got.contains(&format!("Bearer {SECRET}")), "{got}");
    assert!(got.contains(&format!("Bearer {INHERITED}")), "{got}");
    for id in &runs {
        keep(&mut seen, &run(&["runs", "list", "--json"]));
        let show = run(&["runs", "show", id]);
        assert!(stdout(&show).contains("<redacted>"), "{}", stdout(&show));
        keep(&mut seen, &show);
        let out = dir.path().join(format!("{id}.jsonl"));
        let o = run(&["runs", "export", id, "-o", out.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        keep(&mut seen, &o);
        seen.push_str(&std::fs::read_to_string(&out).unwrap());
        // Same host, same values: the replay is identical (offline: the
        // API is not asked again).
        let o = run(&["replay", id]);
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
        keep(&mut seen, &o);
    }
    seen.push_str(
        &std::fs::read_to_string(cli.data.path().join("audit.jsonl")).unwrap_or_default(),
    );
    let journal = std::fs::read(cli.data.path().join("journal.redb")).unwrap();
    for secret in [INHERITED, SECRET] {
        assert!(!seen.contains(secret), "`{secret}` leaked:\n{seen}");
        assert!(
            !journal
                .windows(secret.len())
                .any(|w| w == secret.as_bytes()),
            "`{secret}` is in journal.redb"
        );
    }
    // Other values on the replaying host: divergences that name them.
    for (var, value, name) in [
        ("TESSERA_SECRET_API_KEY", "another value", "api_key"),
        (
            "TESSERA_TEST_INHERITED",
            "another value",
            "TESSERA_TEST_INHERITED",
        ),
    ] {
        let id = if name == "api_key" {
            &runs[0]
        } else {
            &runs[1]
        };
        let o = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .arg("--data")
            .arg(cli.data.path())
            .env("TESSERA_CACHE_DIR", cli.data.path().join("cache"))
            .args(["replay", id])
            .env("TESSERA_TEST_INHERITED", INHERITED)
            .env("TESSERA_SECRET_API_KEY", SECRET)
            .env(var, value)
            .output()
            .unwrap();
        let text = stdout(&o) + &stderr(&o);
        assert_eq!(o.status.code(), Some(6), "{text}");
        assert!(text.contains(&format!("secret `{name}` differs")), "{text}");
    }
}

#[test]
fn runs_prune_pin_stats_and_bad_retention_settings() {
    let cli = Cli::new();
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        let o = cli.run(&[
            "call",
            component("hello").to_str().unwrap(),
            "greet",
            "--args",
            &format!(r#"{{"name":"{name}"}}"#),
            "--record",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        ids.push(
            stderr(&o)
                .lines()
                .find_map(|l| l.strip_prefix("recorded run "))
                .unwrap()
                .trim()
                .to_string(),
        );
    }
    let o = cli.run(&["runs", "stats", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let stats: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(stats["runs"], 3);
    assert_eq!(stats["components"][0]["name"], "hello");
    assert!(stats["bytes_per_run"].as_u64().unwrap() > 0);
    // No policy: a clear refusal.
    let o = cli.run(&["runs", "prune"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no retention limits"), "{}", stderr(&o));
    // Pinned: kept by a prune that keeps no run.
    let o = cli.run(&["runs", "pin", &ids[0]]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = cli.run(&["runs", "prune", "--max-runs", "0", "--dry-run", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let dry: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(dry["dry_run"], true);
    let removed: Vec<&str> = dry["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(removed, vec![ids[1].as_str(), ids[2].as_str()]);
    assert_eq!(dry["held"][0]["run_id"], ids[0].as_str());
    let o = cli.run(&["runs", "prune", "--max-runs", "0"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("removed 2 runs"), "{}", stdout(&o));
    let o = cli.run(&["runs", "list", "--json"]);
    let list: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["holds"], serde_json::json!(["pin"]));
    // A bad setting names the file and the field, for prune and for serve.
    std::fs::write(
        cli.data.path().join("tessera.toml"),
        "[journal.components.hello]\nmax_age = \"7 dayz\"\n",
    )
    .unwrap();
    for args in [
        &["runs", "prune"][..],
        &["serve", "--listen", "127.0.0.1:0"],
    ] {
        let o = cli.run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("tessera.toml: journal.components.hello.max_age: `7 dayz`"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    let o = cli.run(&["runs", "prune", "--max-age", "soon"]);
    assert_eq!(o.status.code(), Some(2));
}

/// The compile cache's entries (`<data>/cache/**.cwasm`) and when each was
/// written.
fn cache_entries(data: &Path) -> Vec<(PathBuf, std::time::SystemTime)> {
    walk(&data.join("cache"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .map(|p| {
            let t = std::fs::metadata(&p).unwrap().modified().unwrap();
            (p, t)
        })
        .collect()
}

fn json_of(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}{}", stdout(o), stderr(o)))
}

#[test]
fn components_add_compiles_and_refuses_a_component_that_cannot_link() {
    let cli = Cli::new();
    let hello = component("hello").display().to_string();
    let missing = component("missing-import").display().to_string();
    let future = component("wasi-future").display().to_string();

    // A good component: compiled into the cache as it is added.
    let o = cli.run(&["components", "add", &hello, "--name", "tool"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("tool v1 active"), "{}", stdout(&o));
    let cached = cache_entries(cli.data.path());
    assert_eq!(cached.len(), 1, "{cached:?}");
    let registry_file = cli.data.path().join("components/registry.json");
    let before = std::fs::read(&registry_file).unwrap();

    // Unprovided interface: refused, naming it, listing the exports.
    let o = cli.run(&["components", "add", &missing, "--name", "tool"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("`example:missing/thing`: Tessera does not provide this interface"),
        "{err}"
    );
    assert!(err.contains("exports: add, lookup"), "{err}");
    assert!(!err.contains("wrong type"), "{err}");
    assert!(!stdout(&o).contains("active"), "{}", stdout(&o));

    // Another WASI version: refused, naming the version Tessera links; as JSON.
    let o = cli.run(&["components", "add", &future, "--name", "tool", "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let v = json_of(&o);
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["kind"], "link", "{v}");
    let u = &v["error"]["context"]["unresolved_imports"][0];
    assert_eq!(u["import"], "wasi:cli/environment@0.3.0", "{v}");
    assert_eq!(u["reason"]["kind"], "other_version", "{v}");
    assert!(
        u["message"]
            .as_str()
            .unwrap()
            .contains("Tessera provides `wasi:cli/environment` only at 0.2.12"),
        "{v}"
    );
    assert_eq!(
        v["error"]["context"]["exports"],
        serde_json::json!(["count"])
    );

    // Nothing changed: the registry file, and the version a server serves.
    assert_eq!(std::fs::read(&registry_file).unwrap(), before);
    let o = cli.run(&["components", "list"]);
    assert!(stdout(&o).contains("v1/1"), "{}", stdout(&o));
    let serving = Serving::start(cli.data.path(), &[]);
    let (status, v) = serving.request(
        "POST",
        "/v1/components/tool/call/greet",
        r#"{"name":"Ada"}"#,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"], "Hello, Ada!");
    serving.stop();
    // The server loaded the compiled code the add left in the cache (the
    // refused components' code is cached too, harmlessly).
    let after = cache_entries(cli.data.path());
    assert!(after.contains(&cached[0]), "{after:?} {cached:?}");
}

#[test]
fn inspect_shows_the_exports_and_unresolved_imports_of_a_component_that_cannot_link() {
    let cli = Cli::new();
    let missing = component("missing-import").display().to_string();
    let o = cli.run(&["inspect", &missing]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("add(a: u32, b: u32) -> u32"), "{out}");
    assert!(out.contains("lookup(key: u32) -> u32"), "{out}");
    assert!(
        out.contains("example:missing/thing  (NOT PROVIDED)"),
        "{out}"
    );
    assert!(
        out.contains("`example:missing/thing`: Tessera does not provide this interface"),
        "{out}"
    );
    assert!(stderr(&o).contains("cannot link"), "{}", stderr(&o));

    let o = cli.run(&["inspect", &missing, "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let v = json_of(&o);
    assert_eq!(v["ok"], false);
    assert_eq!(v["links"], false);
    let names: Vec<&str> = v["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["add", "lookup"]);
    assert_eq!(
        v["functions"][0]["parameters"]["properties"]["a"]["type"],
        "integer"
    );
    assert_eq!(v["imports"], serde_json::json!(["example:missing/thing"]));
    assert_eq!(
        v["unresolved_imports"][0]["import"],
        "example:missing/thing"
    );
    assert_eq!(v["unresolved_imports"][0]["reason"]["kind"], "not_provided");
    assert_eq!(v["error"]["kind"], "link");

    // A component that links: no unresolved imports, exit 0.
    let o = cli.run(&["inspect", component("hello").to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v = json_of(&o);
    assert_eq!(v["ok"], true);
    assert_eq!(v["unresolved_imports"], serde_json::json!([]));
    assert!(v["imports"].as_array().unwrap().len() > 3, "{v}");
}

#[test]
fn every_json_command_prints_json_when_it_fails() {
    let cli = Cli::new();
    let hello = component("hello").display().to_string();
    let nothing = cli.data.path().join("nothing.wasm").display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["inspect", &nothing, "--json"], "read"),
        (vec!["inspect", "--json"], "usage"),
        (vec!["call", &nothing, "f", "--json"], "read"),
        (
            vec!["call", &hello, "greet", "--args", "{", "--json"],
            "arguments",
        ),
        (vec!["call", &hello, "nope", "--json"], "no_such_function"),
        (
            vec!["call", &hello, "greet", "--args", r#"{"name":1}"#, "--json"],
            "bad_arguments",
        ),
        (vec!["runs", "show", "nope", "--json"], "no_such_run"),
        (vec!["replay", "nope", "--json"], "no_such_run"),
        (
            vec!["inspect-run", "nope", "--at", "0", "--json"],
            "no_such_run",
        ),
        (
            vec!["components", "inspect", "nope", "--json"],
            "no_such_component",
        ),
        (
            vec!["components", "--json", "activate", "nope", "1"],
            "no_such_component",
        ),
        (
            vec!["components", "add", &nothing, "--name", "x", "--json"],
            "read",
        ),
        (
            vec!["components", "add", &hello, "--name", "Bad Name", "--json"],
            "invalid_name",
        ),
        (
            vec!["components", "--server", "ftp://x", "list", "--json"],
            "bad_server",
        ),
    ];
    for (args, kind) in cases {
        let o = cli.run(&args);
        assert_ne!(o.status.code(), Some(0), "{args:?}");
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: stdout is not JSON ({e}): {}{}",
                stdout(&o),
                stderr(&o)
            )
        });
        assert_eq!(v["ok"], false, "{args:?}: {v}");
        assert_eq!(v["error"]["kind"], kind, "{args:?}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{args:?}: {v}"
        );
        assert!(v["error"]["context"].is_object(), "{args:?}: {v}");
    }
    // Without --json, the same failure is text on stderr.
    let o = cli.run(&["runs", "show", "nope"]);
    assert!(o.stdout.is_empty());
    assert!(stderr(&o).starts_with("error: "), "{}", stderr(&o));
    // A journal that cannot be opened, with --json.
    let o = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["--data", "/dev/null/x", "runs", "list", "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(json_of(&o)["error"]["kind"], "journal");
}

#[test]
fn components_inspect_shows_functions_schemas_grants_and_versions() {
    let cli = Cli::new();
    let hello = component("hello").display().to_string();
    let manifest = cli.data.path().join("hello.toml");
    std::fs::write(
        &manifest,
        "[config]\nvalues = { greeting = \"Hi\" }\n[limits]\nfuel = 12345678\n",
    )
    .unwrap();
    assert!(
        cli.run(&["components", "add", &hello, "--name", "hello"])
            .status
            .success()
    );
    let o = cli.run(&[
        "components",
        "add",
        &hello,
        "--name",
        "hello",
        "--manifest",
        manifest.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    let o = cli.run(&["components", "inspect", "hello"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("hello: active v2 (previous v1)"), "{out}");
    assert!(
        out.contains("* v2") && out.contains("(with manifest)"),
        "{out}"
    );
    assert!(out.contains("fn greet"), "{out}");
    assert!(out.contains(r#"parameters: {"#), "{out}");
    assert!(out.contains(r#""fuel":12345678"#), "{out}");
    assert!(out.contains(r#""greeting":"Hi""#), "{out}");

    let o = cli.run(&["components", "inspect", "hello", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v = json_of(&o);
    assert_eq!(v["active_version"], 2);
    assert_eq!(v["loaded"], 2);
    assert_eq!(v["versions"].as_array().unwrap().len(), 2);
    assert_eq!(v["grants"]["grants"]["limits"]["fuel"], 12345678);
    assert_eq!(v["grants"]["grants"]["config"]["values"]["greeting"], "Hi");
    let greet = v["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "greet")
        .unwrap();
    assert_eq!(greet["parameters"]["properties"]["name"]["type"], "string");
    assert_eq!(greet["result"]["type"], "string");

    // The same document through a server.
    let serving = Serving::start(cli.data.path(), &[]);
    let o = cli.run(&[
        "components",
        "--server",
        &serving.base,
        "inspect",
        "hello",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let remote = json_of(&o);
    for key in [
        "active_version",
        "versions",
        "grants",
        "functions",
        "loaded",
    ] {
        assert_eq!(remote[key], v[key], "{key}");
    }
    let o = cli.run(&["components", "--server", &serving.base, "inspect", "hello"]);
    assert_eq!(stdout(&o), out);
    serving.stop();
}

/// The exit code, stdout and stderr of a command, for messages.
fn outcome(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(o),
        stderr(o)
    )
}

#[test]
fn kv_put_get_list_delete_and_buckets_on_the_data_directory() {
    let cli = Cli::new();
    let kv = |args: &[&str]| {
        let mut all = vec!["kv"];
        all.extend_from_slice(args);
        cli.run(&all)
    };
    // Nothing yet.
    let o = kv(&["buckets", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", outcome(&o));
    assert_eq!(json_of(&o), serde_json::json!({ "buckets": [] }));

    // Writes print the new revision.
    let o = kv(&["put", "--bucket", "notes", "greeting", "hello"]);
    assert_eq!(o.status.code(), Some(0), "{}", outcome(&o));
    let first: u64 = stdout(&o).trim().parse().expect("a revision");
    let o = kv(&["put", "--bucket", "notes", "a/b c/é", "deep", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", outcome(&o));
    let deep_revision = json_of(&o)["revision"].as_u64().unwrap();
    assert!(deep_revision > first);
    let bin = cli.data.path().join("bytes.bin");
    std::fs::write(&bin, [0u8, 0xff, 0x10]).unwrap();
    let o = kv(&[
        "put",
        "--bucket",
        "notes",
        "bin",
        "--file",
        bin.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", outcome(&o));

    // Reads.
    let o = kv(&["get", "--bucket", "notes", "greeting"]);
    assert_eq!((o.status.code(), stdout(&o)), (Some(0), "hello\n".into()));
    let o = kv(&["get", "--bucket", "notes", "a/b c/é", "--json"]);
    let v = json_of(&o);
    assert_eq!(
        v,
        serde_json::json!({ "bucket": "notes", "key": "a/b c/é", "revision": deep_revision,
                            "value": "deep", "value_base64": "ZGVlcA==" })
    );
    // Binary: told, not printed; `--raw` writes the bytes as they are.
    let o = kv(&["get", "--bucket", "notes", "bin"]);
    assert_eq!(o.status.code(), Some(0), "{}", outcome(&o));
    assert!(o.stdout.is_empty(), "{}", outcome(&o));
    assert!(
        stderr(&o).contains("3 bytes of binary data") && stderr(&o).contains("--raw"),
        "{}",
        outcome(&o)
    );
    let o = kv(&["get", "--bucket", "notes", "bin", "--raw"]);
    assert_eq!(o.stdout, [0u8, 0xff, 0x10]);
    let o = kv(&["get", "--bucket", "notes", "bin", "--json"]);
    assert_eq!(json_of(&o)["value"], Value::Null);
    assert_eq!(json_of(&o)["value_base64"], "AP8Q");
    let o = kv(&["get", "--bucket", "notes", "bin", "--raw", "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", outcome(&o));
    assert_eq!(json_of(&o)["error"]["kind"], "usage");

    // Listing: one key per line, in order; pages; a prefix.
    let o = kv(&["list", "--bucket", "notes"]);
    assert_eq!(stdout(&o), "a/b c/é\nbin\ngreeting\n", "{}", outcome(&o));
    let o = kv(&["list", "--bucket", "notes", "--limit", "2", "--json"]);
    let v = json_of(&o);
    assert_eq!(v["keys"], serde_json::json!(["a/b c/é", "bin"]));
    assert_eq!(v["cursor"], "bin");
    assert_eq!(v["backend"], "embedded");
    let o = kv(&["list", "--bucket", "notes", "--after", "bin"]);
    assert_eq!(stdout(&o), "greeting\n");
    let o = kv(&[
        "list", "--bucket", "notes", "--limit", "1", "--all", "--json",
    ]);
    let v = json_of(&o);
    assert_eq!(v["keys"], serde_json::json!(["a/b c/é", "bin", "greeting"]));
    assert_eq!(v["cursor"], Value::Null);
    let o = kv(&["list", "--bucket", "notes", "--prefix", "a/"]);
    assert_eq!(stdout(&o), "a/b c/é\n");
    let o = kv(&["list", "--bucket", "notes", "--limit", "1001", "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", outcome(&o));
    assert_eq!(json_of(&o)["error"]["kind"], "usage");

    let o = kv(&["buckets"]);
    assert_eq!(o.status.code(), Some(0), "{}", outcome(&o));
    let line = stdout(&o);
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        ["notes", "embedded"]
    );
    let o = kv(&["buckets", "--json"]);
    assert_eq!(
        json_of(&o),
        serde_json::json!({ "buckets": [{ "name": "notes", "backend": "embedded" }] })
    );

    // Conditions: a stale revision and a key that has a value are refused.
    let o = kv(&[
        "put",
        "--bucket",
        "notes",
        "greeting",
        "hi",
        "--expect-revision",
        &first.to_string(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", outcome(&o));
    let second: u64 = stdout(&o).trim().parse().unwrap();
    let o = kv(&[
        "put",
        "--bucket",
        "notes",
        "greeting",
        "lost",
        "--expect-revision",
        &first.to_string(),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", outcome(&o));
    let v = json_of(&o);
    assert_eq!(v["error"]["kind"], "conflict", "{v}");
    assert_eq!(v["error"]["context"]["expected_revision"], first);
    assert_eq!(v["error"]["context"]["found_revision"], second);
    let o = kv(&[
        "put",
        "--bucket",
        "notes",
        "greeting",
        "x",
        "--expect-absent",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", outcome(&o));
    assert!(
        stderr(&o).contains("expected no value, found revision"),
        "{}",
        outcome(&o)
    );
    let o = kv(&["get", "--bucket", "notes", "greeting"]);
    assert_eq!(stdout(&o), "hi\n");

    // A key without a value: exit 2, saying so.
    let o = kv(&["get", "--bucket", "notes", "nothing"]);
    assert_eq!(o.status.code(), Some(2), "{}", outcome(&o));
    assert!(o.stdout.is_empty());
    assert!(
        stderr(&o).contains("has no value at key \"nothing\""),
        "{}",
        outcome(&o)
    );
    let o = kv(&["get", "--bucket", "notes", "nothing", "--json"]);
    assert_eq!(o.status.code(), Some(2));
    let v = json_of(&o);
    assert_eq!(
        (&v["ok"], &v["error"]["kind"]),
        (&Value::Bool(false), &"no_such_key".into())
    );
    assert_eq!(v["error"]["context"]["key"], "nothing");

    // Invalid names: exit 2, naming the problem, as JSON with --json.
    for args in [
        &["get", "--bucket", "bad.name", "k", "--json"][..],
        &["put", "--bucket", "bad name", "k", "v", "--json"],
        &["list", "--bucket", "", "--json"],
        &["delete", "--bucket", "é", "k", "--json"],
    ] {
        let o = kv(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", outcome(&o));
        let v = json_of(&o);
        assert_eq!(v["error"]["kind"], "invalid_bucket", "{args:?}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("invalid bucket name"),
            "{v}"
        );
    }
    let o = kv(&["put", "--bucket", "notes", "a\nb", "v"]);
    assert_eq!(o.status.code(), Some(2), "{}", outcome(&o));
    assert!(stderr(&o).contains("control character"), "{}", outcome(&o));

    // Deletes: conditional, then gone.
    let o = kv(&[
        "delete",
        "--bucket",
        "notes",
        "greeting",
        "--expect-revision",
        &first.to_string(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", outcome(&o));
    let o = kv(&[
        "delete",
        "--bucket",
        "notes",
        "greeting",
        "--expect-revision",
        &second.to_string(),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", outcome(&o));
    assert_eq!(json_of(&o)["deleted"], true);
    let o = kv(&["get", "--bucket", "notes", "greeting"]);
    assert_eq!(o.status.code(), Some(2), "{}", outcome(&o));
    let o = kv(&["delete", "--bucket", "notes", "a/b c/é"]);
    assert_eq!(o.status.code(), Some(0), "{}", outcome(&o));
    let o = kv(&["list", "--bucket", "notes"]);
    assert_eq!(stdout(&o), "bin\n");
}

#[test]
fn kv_through_a_server_and_the_store_it_holds() {
    let cli = Cli::new();
    let data = cli.data.path();
    common::register(
        data,
        "kv",
        "kv-tool",
        Some("[keyvalue]\nbuckets = [\"notes\"]\n"),
    );
    let o = cli.run(&["tokens", "create", "--scope", "read"]);
    assert!(o.status.success(), "{}", outcome(&o));
    let reader = stdout(&o).trim().to_string();
    let serving = Serving::start(data, &[]);
    let base = serving.base.clone();
    let kv = |args: &[&str]| {
        let mut all = vec!["kv", "--server", base.as_str()];
        all.extend_from_slice(args);
        cli.run(&all)
    };

    // The component writes; the server now holds the store.
    let (status, v) = serving.request(
        "POST",
        "/v1/components/kv/call/set",
        r#"{"bucket": "notes", "key": "from tool", "value": "tool wrote this"}"#,
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"], serde_json::json!({"ok": null}), "{v}");

    // Locally, the store is held: the error says so and points at --server.
    let o = cli.run(&["kv", "get", "--bucket", "notes", "from tool"]);
    assert_eq!(o.status.code(), Some(1), "{}", outcome(&o));
    let err = stderr(&o);
    assert!(err.contains("another process has it open"), "{err}");
    assert!(err.contains("--server"), "{err}");
    let o = cli.run(&["kv", "list", "--bucket", "notes", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", outcome(&o));
    let v = json_of(&o);
    assert_eq!(v["error"]["kind"], "store_unavailable", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("--server"),
        "{v}"
    );

    // Through the server: what the component wrote.
    let o = kv(&["get", "--bucket", "notes", "from tool"]);
    assert_eq!(o.status.code(), Some(0), "{}", outcome(&o));
    assert_eq!(stdout(&o), "tool wrote this\n");
    // Writes, read back by the component (the key with `/`, a space, `é`
    // and `%` travels percent-encoded).
    let key = "dir/sub key/é%2F";
    let o = kv(&["put", "--bucket", "notes", key, "via api", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", outcome(&o));
    let revision = json_of(&o)["revision"].as_u64().unwrap();
    let (status, v) = serving.request(
        "POST",
        "/v1/components/kv/call/get",
        &serde_json::json!({"bucket": "notes", "key": key}).to_string(),
    );
    assert_eq!(
        (status, &v["result"]),
        (200, &serde_json::json!({"ok": "via api"})),
        "{v}"
    );
    let o = kv(&["get", "--bucket", "notes", key, "--json"]);
    let v = json_of(&o);
    assert_eq!(
        (&v["key"], &v["revision"]),
        (&key.into(), &revision.into()),
        "{v}"
    );
    let bin = data.join("bytes.bin");
    std::fs::write(&bin, [1u8, 0xfe]).unwrap();
    let o = kv(&[
        "put",
        "--bucket",
        "notes",
        "bin",
        "--file",
        bin.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", outcome(&o));
    let o = kv(&["get", "--bucket", "notes", "bin", "--raw"]);
    assert_eq!(o.stdout, [1u8, 0xfe], "{}", outcome(&o));
    let o = kv(&["list", "--bucket", "notes"]);
    assert_eq!(
        stdout(&o),
        format!("bin\n{key}\nfrom tool\n"),
        "{}",
        outcome(&o)
    );
    let o = kv(&[
        "list", "--bucket", "notes", "--limit", "1", "--all", "--json",
    ]);
    assert_eq!(
        json_of(&o)["keys"],
        serde_json::json!(["bin", key, "from tool"])
    );
    let o = kv(&["list", "--bucket", "notes", "--prefix", "dir/sub "]);
    assert_eq!(stdout(&o), format!("{key}\n"), "{}", outcome(&o));
    let o = kv(&["buckets"]);
    assert_eq!(
        stdout(&o).split_whitespace().collect::<Vec<_>>(),
        ["notes", "embedded"],
        "{}",
        outcome(&o)
    );

    // Refusals: a stale revision, a missing key, an invalid bucket.
    let stale = (revision - 1).to_string();
    let o = kv(&[
        "put",
        "--bucket",
        "notes",
        key,
        "x",
        "--expect-revision",
        &stale,
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", outcome(&o));
    let v = json_of(&o);
    assert_eq!(v["error"]["kind"], "conflict", "{v}");
    assert_eq!(v["error"]["context"]["status"], 409);
    assert_eq!(v["error"]["context"]["expected_revision"], revision - 1);
    assert_eq!(v["error"]["context"]["found_revision"], revision);
    let o = kv(&["get", "--bucket", "notes", "nothing", "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", outcome(&o));
    assert_eq!(json_of(&o)["error"]["kind"], "no_such_key");
    let o = kv(&["get", "--bucket", "bad.name", "k", "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", outcome(&o));
    let v = json_of(&o);
    assert_eq!(v["error"]["kind"], "invalid_bucket", "{v}");
    assert_eq!(v["error"]["context"]["status"], 400);
    // A `read` token reads but cannot write.
    let o = kv(&[
        "get", "--bucket", "notes", "bin", "--token", &reader, "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", outcome(&o));
    let o = kv(&[
        "put", "--bucket", "notes", "k", "v", "--token", &reader, "--json",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", outcome(&o));
    assert_eq!(json_of(&o)["error"]["kind"], "forbidden");

    // Deletes.
    let o = kv(&[
        "delete",
        "--bucket",
        "notes",
        key,
        "--expect-revision",
        &revision.to_string(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", outcome(&o));
    let o = kv(&["get", "--bucket", "notes", key]);
    assert_eq!(o.status.code(), Some(2), "{}", outcome(&o));
    assert!(stderr(&o).contains("no_such_key (404)"), "{}", outcome(&o));
    serving.stop();

    // The server gone, the store is the local command's again.
    let o = cli.run(&["kv", "list", "--bucket", "notes"]);
    assert_eq!(o.status.code(), Some(0), "{}", outcome(&o));
    assert_eq!(stdout(&o), "bin\nfrom tool\n");
}

#[test]
fn plans_add_list_remove_locally_and_through_a_server_which_runs_them() {
    let cli = Cli::new();
    let hello = component("hello").display().to_string();
    let o = cli.run(&["components", "add", &hello, "--name", "hello"]);
    assert_eq!(o.status.code(), Some(0), "{}", outcome(&o));
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("greet.plan.toml");
    std::fs::write(
        &plan,
        r#"description = "Greets someone."
[inputs.who]
type = "string"
[steps.greet]
component = "hello"
function = "greet"
args = { name = "${{ .inputs.who }}" }
[outputs]
greeting = "${{ .steps.greet.output }}"
"#,
    )
    .unwrap();
    let by_path = dir.path().join("by-path.plan.toml");
    std::fs::write(
        &by_path,
        "[steps.greet]\ncomponent = \"hello.wasm\"\nfunction = \"greet\"\n",
    )
    .unwrap();
    let plan = plan.to_str().unwrap();
    let by_path = by_path.to_str().unwrap();

    // Locally, on the data directory: checked against the registered
    // components first (a wrong parameter is refused, nothing stored).
    let wrong = dir.path().join("wrong.plan.toml");
    std::fs::write(
        &wrong,
        "[steps.greet]\ncomponent = \"hello\"\nfunction = \"greet\"\nargs = { nme = \"x\" }\n",
    )
    .unwrap();
    let o = cli.run(&["plans", "add", "wrong", wrong.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", outcome(&o));
    assert!(
        outcome(&o).contains("steps.greet.args.nme"),
        "{}",
        outcome(&o)
    );
    let o = cli.run(&["plans", "add", "greet", plan, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", outcome(&o));
    let v = json_of(&o);
    assert_eq!(
        (&v["name"], &v["tool"]),
        (&"greet".into(), &"plan__greet".into()),
        "{v}"
    );
    let o = cli.run(&["plans", "list"]);
    assert!(
        stdout(&o).contains("greet") && stdout(&o).contains("Greets someone."),
        "{}",
        outcome(&o)
    );
    // A step given as a file path is refused, naming the step and file.
    let o = cli.run(&["plans", "add", "by-path", by_path, "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", outcome(&o));
    let e = &json_of(&o)["error"];
    assert_eq!(e["kind"], "bad_plan", "{e}");
    assert_eq!(
        (&e["context"]["place"], &e["context"]["file"]),
        (&"steps.greet.component".into(), &by_path.into()),
        "{e}"
    );
    let o = cli.run(&["plans", "remove", "nothing", "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", outcome(&o));
    assert_eq!(json_of(&o)["error"]["kind"], "no_such_plan");

    // A server serves the plan added beside it, and its API manages plans.
    let serving = Serving::start(cli.data.path(), &[]);
    let (status, v) = serving.request("POST", "/v1/plans/greet/runs", r#"{"who": "Ada"}"#);
    assert_eq!(status, 202, "{v}");
    let id = v["run"].as_str().unwrap().to_string();
    let waiting = std::time::Instant::now();
    loop {
        let (status, v) = serving.request("GET", &format!("/v1/plan-runs/{id}"), "");
        assert_eq!(status, 200, "{v}");
        if v["status"] != "running" {
            assert_eq!(v["outputs"]["greeting"], "Hello, Ada!", "{v}");
            break;
        }
        assert!(waiting.elapsed() < EVENT_WAIT, "{v}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let remote = |args: &[&str]| {
        let mut all = vec!["plans", "--server", serving.base.as_str()];
        all.extend_from_slice(args);
        cli.run(&all)
    };
    let o = remote(&["add", "greet2", plan, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", outcome(&o));
    assert_eq!(json_of(&o)["text"], std::fs::read_to_string(plan).unwrap());
    let o = remote(&["list", "--json"]);
    let names: Vec<Value> = json_of(&o)["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(names, ["greet", "greet2"], "{}", outcome(&o));
    let o = remote(&["add", "by-path", by_path, "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", outcome(&o));
    let e = &json_of(&o)["error"];
    assert_eq!(
        (&e["kind"], &e["context"]["place"], &e["context"]["status"]),
        (
            &"bad_plan".into(),
            &"steps.greet.component".into(),
            &400.into()
        ),
        "{e}"
    );
    let o = remote(&["remove", "greet2", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", outcome(&o));
    serving.stop();
    let o = cli.run(&["plans", "remove", "greet"]);
    assert_eq!(o.status.code(), Some(0), "{}", outcome(&o));
    let o = cli.run(&["plans", "list", "--json"]);
    assert_eq!(
        json_of(&o)["plans"],
        Value::Array(vec![]),
        "{}",
        outcome(&o)
    );
}

#[test]
fn a_linked_import_is_called_recorded_shown_and_replayed_from_the_cli() {
    let cli = Cli::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("provider.toml"),
        "[env]\nset = { SIGNATURE = \"rust provider\" }\n",
    )
    .unwrap();
    let manifest = dir.path().join("consumer.toml");
    std::fs::write(
        &manifest,
        format!(
            "[imports]\n\"example:text/transform\" = {{ component = \"{}\", manifest = \"provider.toml\" }}\n",
            component("text-provider").display()
        ),
    )
    .unwrap();
    let o = cli.run(&[
        "call",
        component("text-consumer").to_str().unwrap(),
        "report",
        "--args",
        r#"{"text":"a linked call"}"#,
        "--manifest",
        manifest.to_str().unwrap(),
        "--record",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let result: Value = serde_json::from_str(&stdout(&o)).expect("a JSON result");
    assert_eq!(
        result,
        serde_json::json!({
            "shout": "A LINKED CALL!",
            "counts": {"chars": 13, "words": 3},
            "longest": "linked",
            "provider": "rust provider",
            "consumer": null,
        })
    );
    let run_id = stderr(&o)
        .lines()
        .find_map(|l| l.strip_prefix("recorded run "))
        .expect("run id on stderr")
        .trim()
        .to_string();
    let show = stdout(&cli.run(&["runs", "show", &run_id]));
    let line = show
        .lines()
        .find(|l| l.contains("link    example:text/transform@0.1.0#upper"))
        .unwrap_or_else(|| panic!("no linked call shown: {show}"));
    assert!(line.ends_with(": \"A LINKED CALL\""), "{line}");
    let provider_run = line
        .split(" run ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .expect("the provider's run")
        .to_string();
    let provider = stdout(&cli.run(&["runs", "show", &provider_run]));
    assert!(
        provider.contains(&format!(
            "linked    served example:text/transform@0.1.0 for run {run_id} step "
        )),
        "{provider}"
    );
    let o = cli.run(&["replay", &run_id]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).starts_with("identical"), "{}", stdout(&o));
}

/// Runs `tessera audit verify --json` (with `extra` arguments): the exit
/// code and the report.
fn audit_verify(cli: &Cli, extra: &[&str]) -> (Option<i32>, Value) {
    let mut args = vec!["audit", "verify", "--json"];
    args.extend_from_slice(extra);
    let o = cli.run(&args);
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&o), stderr(&o)));
    (o.status.code(), v)
}

#[test]
fn the_audit_log_is_one_hash_chain_and_verify_names_the_first_line_tampered_with() {
    let cli = Cli::new();
    let fetch = component("http-fetch");
    // Four processes at once, each auditing its denied host: one chain
    // across them.
    let children: Vec<_> = (0..4)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_tessera"))
                .arg("--data")
                .arg(cli.data.path())
                .env("TESSERA_CACHE_DIR", cli.data.path().join("cache"))
                .args([
                    "call",
                    fetch.to_str().unwrap(),
                    "fetch",
                    "--args",
                    &format!(r#"{{"url":"http://127.0.0.1:9/{i}"}}"#),
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert_eq!(c.wait().unwrap().code(), Some(5));
    }
    let lines = cli.audit_lines();
    assert!(lines.len() >= 4, "{lines:?}");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["seq"], i as u64, "{l}");
    }
    let (code, v) = audit_verify(&cli, &[]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(
        (v["ok"].as_bool(), v["lines"].as_u64()),
        (Some(true), Some(lines.len() as u64))
    );
    let head = v["head"].as_str().unwrap().to_string();
    assert_eq!(lines.last().unwrap()["hash"], head.as_str());
    // Verifying against the head printed earlier holds while nothing is cut.
    assert_eq!(audit_verify(&cli, &["--head", &head]).0, Some(0));

    let path = cli.data.path().join("audit.jsonl");
    let original = std::fs::read_to_string(&path).unwrap();
    let tampered = |text: String, line: u64, kind: &str| {
        std::fs::write(&path, text).unwrap();
        let (code, v) = audit_verify(&cli, &[]);
        assert_eq!(code, Some(7), "{v}");
        assert_eq!(v["problem"]["line"], line, "{v}");
        assert_eq!(v["problem"]["kind"], kind, "{v}");
        // The text form names the line too.
        let o = cli.run(&["audit", "verify"]);
        assert!(
            stdout(&o).contains(&format!("line {line}: {kind}")),
            "{}",
            stdout(&o)
        );
    };
    let rows: Vec<&str> = original.lines().collect();
    let join = |rows: &[&str]| rows.iter().map(|r| format!("{r}\n")).collect::<String>();
    // A target changed on line 2.
    let mut changed = rows.clone();
    let edited = changed[1].replace("127.0.0.1", "127.0.0.2");
    assert_ne!(edited, changed[1]);
    changed[1] = &edited;
    tampered(join(&changed), 2, "changed");
    // Line 2 removed.
    let mut removed = rows.clone();
    removed.remove(1);
    tampered(join(&removed), 2, "removed");
    // Line 1 copied after line 3.
    let mut inserted = rows.clone();
    inserted.insert(3, rows[0]);
    tampered(join(&inserted), 4, "inserted");
    // Lines 2 and 3 swapped.
    let mut swapped = rows.clone();
    swapped.swap(1, 2);
    tampered(join(&swapped), 2, "reordered");
    // The last line cut: the chain alone holds, the head kept does not.
    std::fs::write(&path, join(&rows[..rows.len() - 1])).unwrap();
    assert_eq!(audit_verify(&cli, &[]).0, Some(0));
    let (code, v) = audit_verify(&cli, &["--head", &head]);
    assert_eq!(
        (code, &v["problem"]["kind"]),
        (Some(7), &Value::from("removed")),
        "{v}"
    );
    // Put back as written: intact again, and new lines go on chaining.
    std::fs::write(&path, &original).unwrap();
    cli.run(&[
        "call",
        fetch.to_str().unwrap(),
        "fetch",
        "--args",
        r#"{"url":"http://127.0.0.1:9/again"}"#,
    ]);
    let (code, v) = audit_verify(&cli, &["--head", &head]);
    assert_eq!(code, Some(0), "{v}");
    assert!(v["lines"].as_u64().unwrap() > rows.len() as u64);
    // No log: a clear error.
    let o = cli.run(&["audit", "verify", "/nonexistent/audit.jsonl"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("/nonexistent/audit.jsonl"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_trap_in_a_component_with_debug_info_shows_files_and_lines_in_call_and_runs_show() {
    let cli = Cli::new();
    let td = component("trap-debug");
    let o = cli.run(&[
        "call",
        td.to_str().unwrap(),
        "divide",
        "--args",
        r#"{"a":6,"b":0}"#,
        "--json",
        "--record",
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let bt = v["error"]["backtrace"].as_str().unwrap();
    assert!(
        bt.contains("innermost_divide") && bt.contains("trap-debug/src/lib.rs:34:"),
        "{bt}"
    );
    // Text mode prints it on stderr, and the journal keeps it.
    let o = cli.run(&[
        "call",
        td.to_str().unwrap(),
        "divide",
        "--args",
        r#"{"a":6,"b":0}"#,
        "--record",
    ]);
    assert_eq!(o.status.code(), Some(4));
    assert!(
        stderr(&o).contains("trap-debug/src/lib.rs:25:"),
        "{}",
        stderr(&o)
    );
    let run_id = stderr(&o)
        .lines()
        .find_map(|l| l.strip_prefix("recorded run "))
        .expect("run id on stderr")
        .trim()
        .to_string();
    let o = cli.run(&["runs", "show", &run_id]);
    let show = stdout(&o);
    assert!(
        show.contains("backtrace") && show.contains("trap-debug/src/lib.rs:20:"),
        "{show}"
    );
    // A component without DWARF names functions but no source lines.
    let o = cli.run(&[
        "call",
        component("hello").to_str().unwrap(),
        "types#fail",
        "--args",
        r#"{"msg":"x"}"#,
        "--json",
    ]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let bt = v["error"]["backtrace"].as_str().unwrap();
    assert!(bt.contains("fail") && !bt.contains("src/lib.rs:"), "{bt}");
}
