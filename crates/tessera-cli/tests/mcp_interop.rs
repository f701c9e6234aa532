//! MCP interoperability: the official MCP Python SDK (`tests/interop/`)
//! drives `tessera serve --stdio` and `tessera serve` (streamable HTTP,
//! tokens required), in both of its connection modes. Afterwards the journal must hold every call
//! complete, the cancelled call as cancelled.
//!
//! The Python environment comes from `scripts/python-env.sh` (run here if
//! it has not been yet).

mod common;

use std::path::Path;
use std::process::Command;

use common::{Serving, component, python, register, tessera};
use serde_json::Value;
use tessera_journal::{Caller, JournalStore, RunResult};
use tessera_test_support::repo_root as root;

/// A data directory with the components the Python scenario expects.
fn data_dir() -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    register(d, "hello", "hello", None);
    register(d, "netx", "net-escape", None);
    register(
        d,
        "spin",
        "spin",
        Some("[limits]\nfuel = 1_000_000_000_000\ntimeout_ms = 300_000\nmax_concurrent = 1\n"),
    );
    register(d, "swappy", "hello", None);
    data
}

fn swap_command(data: &Path) -> String {
    serde_json::to_string(&[
        env!("CARGO_BIN_EXE_tessera").to_string(),
        "--data".into(),
        data.display().to_string(),
        "--cache-dir".into(),
        data.join("cache").display().to_string(),
        "components".into(),
        "add".into(),
        component("spin").display().to_string(),
        "--name".into(),
        "swappy".into(),
    ])
    .unwrap()
}

/// Runs the Python scenario; returns its JSON report.
fn run_client(data: &Path, mode: &str, target: &[&str]) -> Value {
    let out = Command::new(python())
        .arg(root().join("crates/tessera-cli/tests/interop/mcp_client.py"))
        .args(["--mode", mode, "--data"])
        .arg(data)
        .args(["--swap", &swap_command(data)])
        .args(target)
        .output()
        .expect("run the Python MCP client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "Python MCP client ({mode}) failed:\n{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("client report is not JSON ({e}): {stdout}"))
}

/// Checks the journal once the server has exited: every run is complete
/// and names its caller, the scenario's runs are there, and the spin call
/// ended cancelled.
fn check_journal(data: &Path, reports: &[Value], caller: &Caller) {
    let journal = JournalStore::open(data).unwrap();
    let runs = journal.list().unwrap();
    assert!(!runs.is_empty());
    for r in &runs {
        assert!(
            r.end.is_some(),
            "run {} ({}) has no end record",
            r.header.run_id,
            r.header.function
        );
        assert_eq!(
            r.header.caller.as_ref(),
            Some(caller),
            "{}",
            r.header.run_id
        );
    }
    for report in reports {
        for key in ["greet", "denied"] {
            let id = report["run_ids"][key].as_str().unwrap();
            assert!(
                runs.iter().any(|r| r.header.run_id == id),
                "run {id} ({key}) not in the journal"
            );
        }
    }
    let cancelled = runs
        .iter()
        .filter(|r| r.header.function == "spin")
        .filter(|r| {
            matches!(
                r.end.as_ref().map(|e| &e.result),
                Some(RunResult::Cancelled { .. })
            )
        })
        .count();
    assert_eq!(
        cancelled,
        reports.len(),
        "one cancelled spin run per scenario"
    );
}

#[test]
fn python_sdk_over_stdio() {
    let mut reports = Vec::new();
    for mode in ["legacy", "auto"] {
        let data = data_dir();
        let report = run_client(
            data.path(),
            mode,
            &["--tessera", env!("CARGO_BIN_EXE_tessera")],
        );
        let stdio = Caller {
            via: "mcp-stdio".into(),
            token: None,
        };
        check_journal(data.path(), std::slice::from_ref(&report), &stdio);
        reports.push(report);
    }
    // `auto` must have reached the newest revision, `legacy` a handshake one.
    assert!(reports[0]["protocol_version"].as_str().unwrap() < "2026-07-28");
    assert_eq!(reports[1]["protocol_version"], "2026-07-28");
}

#[test]
fn python_sdk_over_streamable_http() {
    let mut reports = Vec::new();
    for mode in ["legacy", "auto"] {
        let data = data_dir();
        // Tokens required: the client presents one with the `call` scope.
        let out = tessera(data.path())
            .args(["tokens", "create", "--scope", "call"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let serving = Serving::start(data.path(), &["--require-tokens"]);
        let report = run_client(
            data.path(),
            mode,
            &["--url", &serving.url, "--token", &token],
        );
        serving.stop();
        let token_id = tessera_server::auth::Tokens::open(data.path())
            .list()
            .unwrap()
            .remove(0)
            .id;
        let http = Caller {
            via: "mcp-http".into(),
            token: Some(token_id),
        };
        check_journal(data.path(), std::slice::from_ref(&report), &http);
        // The client without a token was refused, and that was audited.
        let audit = std::fs::read_to_string(data.path().join("audit.jsonl")).unwrap();
        assert!(
            audit.lines().any(|l| l.contains("\"capability\":\"auth\"")
                && l.contains("POST /mcp")
                && l.contains("\"decision\":\"deny\"")),
            "{audit}"
        );
        reports.push(report);
    }
    assert!(reports[0]["protocol_version"].as_str().unwrap() < "2026-07-28");
    assert_eq!(reports[1]["protocol_version"], "2026-07-28");
}

// ---------------------------------------------------------------------------
// Components built with other languages' toolchains: `components/text-js`
// (JavaScript, componentize-js) and `components/stats-py` (Python,
// componentize-py), built by scripts/build-polyglot.sh. They are 12 and 19
// MB and take tens of seconds each to compile, so one test serves both over
// stdio and then over streamable HTTP from one data directory: each is
// compiled once, by the first `serve`, and the second finds the compile
// cache.

/// Whether a componentize-py component's own build-time export — the
/// package-less interface `exports` with `init: func(app-name: string,
/// symbols: symbols, stub-wasi: bool) -> result<_, string>`, which the
/// toolchain calls while building and which fails when called at run time —
/// is hidden from MCP's `tools/list`. Tool curation hides it by default
/// (docs/manifest.md, `[tools]`); the checks below then require that it is
/// absent and that calling it is an unknown tool. `false` checks the
/// uncurated behaviour (it is listed, with a schema of several KB, and a
/// call of it is a tool error).
fn componentize_py_init_hidden() -> bool {
    true
}

/// A data directory with the JavaScript tool as `js` and the Python tool
/// as `py`, both without grants, and both compiled: a `tessera call` of
/// each fills the compile cache first, so no MCP request waits for a
/// compile of tens of seconds (an MCP host's timeout is not what this
/// test is about).
fn polyglot_data_dir() -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    for (name, wasm, function, args, expected) in [
        ("js", "text-js", "reverse", r#"{"text":"abc"}"#, "\"cba\""),
        (
            "py",
            "stats-py",
            "stats#parse-ints",
            r#"{"texts":["101","x"],"base":2}"#,
            "[5,null]",
        ),
    ] {
        let out = tessera(data.path())
            .arg("call")
            .arg(component(wasm))
            .arg(function)
            .args(["--args", args])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tessera call {wasm} {function}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let result: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(result.to_string(), expected, "{wasm} {function}");
        register(data.path(), name, wasm, None);
    }
    data
}

/// Runs the polyglot scenario against `target`; returns its JSON report.
fn run_polyglot_client(target: &[&str]) -> Value {
    let internal = if componentize_py_init_hidden() {
        "hidden"
    } else {
        "listed"
    };
    let out = Command::new(python())
        .arg(root().join("crates/tessera-cli/tests/interop/polyglot_client.py"))
        .args(["--internal-exports", internal])
        .args(target)
        .output()
        .expect("run the Python MCP client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "Python MCP client (polyglot) failed:\n{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("client report is not JSON ({e}): {stdout}"))
}

/// What the Rust side checks of a polyglot report: the internal export is
/// listed or not as [`componentize_py_init_hidden`] says, and the two
/// thrown exceptions were journaled as traps of their functions.
fn check_polyglot(data: &Path, report: &Value) {
    let tools: Vec<&str> = report["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(
        tools.contains(&"py__exports__init"),
        !componentize_py_init_hidden(),
        "componentize-py's `exports.init` in tools/list: {tools:?}"
    );
    // componentize-js adds no export of its own.
    assert_eq!(
        tools.iter().filter(|t| t.starts_with("js__")).count(),
        7,
        "{tools:?}"
    );
    if !componentize_py_init_hidden() {
        // Listed, it is a tool that cannot work.
        assert_eq!(report["init_call"]["is_error"], true, "{report}");
    }
    let journal = JournalStore::open(data).unwrap();
    let runs = journal.list().unwrap();
    for (key, function) in [
        ("explode", "tessera:text-js/text@0.1.0#explode"),
        ("fail", "tessera:stats-py/stats@0.1.0#fail"),
    ] {
        let id = report["run_ids"][key].as_str().unwrap();
        let run = runs
            .iter()
            .find(|r| r.header.run_id == id)
            .unwrap_or_else(|| panic!("run {id} ({key}) not in the journal"));
        assert_eq!(run.header.function, function);
        assert!(
            matches!(
                run.end.as_ref().map(|e| &e.result),
                Some(RunResult::Trap { .. })
            ),
            "{key}: {:?}",
            run.end
        );
    }
}

#[test]
fn componentize_js_and_py_over_mcp() {
    let data = polyglot_data_dir();

    // stdio: the SDK spawns `tessera serve --stdio`.
    let report = run_polyglot_client(&[
        "--tessera",
        env!("CARGO_BIN_EXE_tessera"),
        "--data",
        &data.path().display().to_string(),
    ]);
    check_polyglot(data.path(), &report);

    // Streamable HTTP, from the same data directory (compiled already).
    let serving = Serving::start(data.path(), &[]);
    let report = run_polyglot_client(&["--url", &serving.url]);
    serving.stop();
    check_polyglot(data.path(), &report);
}

/// `[tools]` curation and guest diagnostics through the Python SDK over
/// stdio (`tests/interop/mcp_curation.py`): an excluded function is not
/// listed nor callable, a title and description override shows, the
/// toolchain internals of `toolchain-exports` are hidden by default and
/// served when included, and a trap's error carries the guest's stderr
/// tail, its log line and its backtrace.
#[test]
fn python_sdk_sees_curated_tools_and_guest_diagnostics() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    register(
        d,
        "tool",
        "toolchain-exports",
        Some(
            "[tools]\nexclude = [\"sub\"]\n\n[tools.functions.add]\ntitle = \"Add two numbers\"\n\
             description = \"Returns a + b, wrapping at 2^32.\"\n",
        ),
    );
    register(d, "internals", "toolchain-exports", None);
    register(
        d,
        "shown",
        "toolchain-exports",
        Some("[tools]\ninclude = [\"add\", \"exports#init\", \"wasi:cli/run#run\"]\n"),
    );
    register(d, "hello", "hello", None);
    let out = Command::new(python())
        .arg(root().join("crates/tessera-cli/tests/interop/mcp_curation.py"))
        .args(["--tessera", env!("CARGO_BIN_EXE_tessera"), "--data"])
        .arg(d)
        .output()
        .expect("run the Python MCP client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "Python MCP client failed:\n{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("client report is not JSON ({e}): {stdout}"));
    let tools: Vec<&str> = report["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter(|t| !t.starts_with("hello__"))
        .collect();
    assert_eq!(
        tools,
        [
            "internals__add",
            "internals__sub",
            "shown__add",
            "shown__exports__init",
            "shown__run__run",
            "tool__add",
        ]
    );
}
