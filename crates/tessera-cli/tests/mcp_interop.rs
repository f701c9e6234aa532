//! MCP interoperability: the official MCP Python SDK (`tests/interop/`)
//! drives `tessera serve --stdio` and `tessera serve` (streamable HTTP,
//! tokens required), in both of its connection modes. Afterwards the journal must hold every call
//! complete, the cancelled call as cancelled.
//!
//! The Python environment comes from `scripts/python-env.sh` (run here if
//! it has not been yet).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Serving, component, register, tessera};
use serde_json::Value;
use tessera_journal::{Caller, JournalStore, RunResult};
use tessera_test_support::repo_root as root;

fn python() -> PathBuf {
    let status = Command::new("bash")
        .arg(root().join("scripts/python-env.sh"))
        .status()
        .expect("run scripts/python-env.sh");
    assert!(status.success(), "scripts/python-env.sh failed");
    root().join("target/mcp-venv/bin/python")
}

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
