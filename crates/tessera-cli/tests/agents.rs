//! `tessera agents` end to end, and agents surviving `kill -9`.
//!
//! The kill test sends messages with `tessera agents send` and kills the
//! process at random points — while it delivers, while turns run, while
//! they commit or deliver their outboxes — then sends the same message
//! again under the same id (what a client that saw no answer does) and
//! checks, from the agents' states, that no message was lost and none was
//! handled twice, in order. Rounds: `TESSERA_CRASH_ROUNDS` (default 20;
//! `scripts/agent-crash.sh` runs 100); kill points from
//! `TESSERA_CRASH_SEED` (default: the clock), printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

fn tessera(data: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
    c.arg("--data").arg(data);
    c
}

fn wasm(name: &str) -> String {
    tessera_test_support::component(name)
        .to_string_lossy()
        .into_owned()
}

/// Runs a command that must succeed; its stdout as JSON.
fn ok_json(cmd: &mut Command) -> Value {
    let out = cmd.arg("--json").output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn manifest(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn spawn(data: &Path, id: &str, component: &str, manifest: Option<&Path>) {
    let mut c = tessera(data);
    c.args(["agents", "spawn", id, "--component", &wasm(component)]);
    if let Some(m) = manifest {
        c.arg("--manifest").arg(m);
    }
    ok_json(&mut c);
}

fn state(data: &Path, id: &str) -> Value {
    let v = ok_json(tessera(data).args(["agents", "show", id]));
    serde_json::from_str(v["state"].as_str().unwrap_or("null")).unwrap()
}

#[test]
fn agents_are_spawned_messaged_inspected_forked_and_replayed_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let open = manifest(dir.path(), "open", "[agent]\nsend = [\"*\"]\n");
    spawn(&data, "a", "probe-agent", Some(&open));
    spawn(&data, "b", "probe-agent", Some(&open));
    // A second spawn under the same id is refused.
    let out = tessera(&data)
        .args([
            "agents",
            "spawn",
            "a",
            "--component",
            &wasm("probe-agent"),
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "agent_exists");

    let r = ok_json(tessera(&data).args([
        "agents",
        "send",
        "a",
        r#"{"op":"sendn","to":"b","n":3}"#,
        "--wait",
    ]));
    assert_eq!(r["reply"]["sent"], 3, "{r}");
    let run = r["run"].as_str().unwrap().to_string();
    assert_eq!(state(&data, "b"), json!([0, 1, 2]));
    for v in ["x", "y"] {
        ok_json(tessera(&data).args([
            "agents",
            "send",
            "a",
            &json!({"op": "append", "value": v}).to_string(),
            "--wait",
        ]));
    }

    let list = ok_json(tessera(&data).args(["agents", "list"]));
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    let show = ok_json(tessera(&data).args(["agents", "show", "a"]));
    assert_eq!(
        (show["turns"].as_u64(), show["depth"].as_u64()),
        (Some(3), Some(0))
    );

    let log = ok_json(tessera(&data).args(["agents", "log", "a"]));
    let first = &log[0];
    assert_eq!(first["run"], run.as_str());
    let sends: Vec<&Value> = first["exchanges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["kind"] == "agent.send")
        .collect();
    assert_eq!(sends.len(), 3, "{first}");
    assert_eq!(first["sent"].as_array().unwrap().len(), 3);

    // The turn replays offline, from the journal alone.
    let out = tessera(&data).args(["replay", &run]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // inspect-run works on a turn: stopped where the guest asks for its
    // second send, the steps before it answered from the journal.
    let second = sends[1]["step"].as_u64().unwrap().to_string();
    let third = sends[2]["step"].as_u64().unwrap().to_string();
    let at = ok_json(tessera(&data).args(["inspect-run", &run, "--at", &second, "--strings", "0"]));
    assert_eq!(at["reached"], true, "{at}");
    assert_eq!(at["next"]["kind"], "agent.send", "{at}");
    assert_eq!(at["next"]["request"]["to"], "b", "{at}");
    assert!(
        at["next"]["request"]["body"]
            .as_str()
            .unwrap()
            .contains("\"value\":1"),
        "the second of the three sends: {at}"
    );
    assert!(!at["memories"].as_array().unwrap().is_empty(), "{at}");
    let end = ok_json(tessera(&data).args(["inspect-run", &run, "--at", "999", "--strings", "0"]));
    assert_eq!(end["reached"], false, "the turn has fewer steps: {end}");
    let diff = ok_json(tessera(&data).args(["inspect-run", &run, "--diff", &second, &third]));
    assert!(
        !diff["changes"].as_array().unwrap().is_empty(),
        "building the next message changes the guest's memory: {diff}"
    );

    // Fork after turn 2: the state of then, the log up to then.
    ok_json(tessera(&data).args(["agents", "fork", "a", "--at", "2", "--as", "a2"]));
    assert_eq!(state(&data, "a2"), json!(["x"]));
    assert_eq!(
        ok_json(tessera(&data).args(["agents", "log", "a2"]))
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // A turn that fails for good: exit 3, a dead letter, re-driven.
    let out = tessera(&data)
        .args([
            "agents",
            "send",
            "b",
            r#"{"op":"fail","message":"nope"}"#,
            "--wait",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("nope"),
        "{v}"
    );
    let dead = ok_json(tessera(&data).args(["agents", "dead-letters", "b"]));
    assert_eq!(dead.as_array().unwrap().len(), 1);
    let redriven = ok_json(tessera(&data).args(["agents", "redrive", "b"]));
    assert_eq!(redriven["messages"].as_array().unwrap().len(), 1);

    // Unknown agents are named.
    let out = tessera(&data)
        .args(["agents", "show", "nobody", "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "no_such_agent");
}

#[test]
fn an_approval_requested_in_one_process_is_decided_in_another() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let m = manifest(
        dir.path(),
        "tools",
        &format!(
            "[agent.tools.cities]\ncomponent = \"{}\"\napproval = [\"population\"]\n",
            wasm("city-facts")
        ),
    );
    spawn(&data, "t", "probe-agent", Some(&m));
    ok_json(tessera(&data).args([
        "agents",
        "send",
        "t",
        r#"{"op":"tool","name":"cities__population","args":{"city":"Lyon"}}"#,
        "--id",
        "ask-lyon",
    ]));
    let show = ok_json(tessera(&data).args(["agents", "show", "t"]));
    assert_eq!(show["status"], "waiting");
    let request = show["approvals_waiting"][0]["request"]
        .as_str()
        .unwrap()
        .to_string();
    ok_json(tessera(&data).args(["agents", "approve", "t", &request]));
    let show = ok_json(tessera(&data).args(["agents", "show", "t"]));
    assert_eq!(
        (show["status"].as_str(), show["turns"].as_u64()),
        (Some("active"), Some(1))
    );
    let log = ok_json(tessera(&data).args(["agents", "log", "t"]));
    let tool = log[0]["exchanges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["kind"] == "agent.tool")
        .unwrap();
    assert!(
        tool["response"]["result"]["Ok"]
            .as_str()
            .unwrap()
            .contains("522250"),
        "{tool}"
    );
}

/// Starts `cmd` and kills it with SIGKILL after `after` if it still runs.
fn run_and_kill(mut cmd: Command, after: Duration) -> bool {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    let killed = matches!(child.try_wait(), Ok(None));
    if killed {
        child.kill().unwrap(); // SIGKILL
    }
    child.wait().unwrap();
    killed
}

#[test]
fn agents_killed_at_random_points_lose_no_message_and_apply_no_turn_twice() {
    let mut rng = tessera_test_support::CrashPoints::from_env();
    let (rounds, seed) = (rng.rounds, rng.seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let open = manifest(dir.path(), "open", "[agent]\nsend = [\"*\"]\n");
    spawn(&data, "a", "probe-agent", Some(&open));
    spawn(&data, "b", "probe-agent", Some(&open));
    const N: u64 = 10;
    let mut kills = 0;
    for round in 0..rounds {
        // Two messages to `a` per round: one it appends to its own state,
        // one that makes it send N messages to `b` (an outbox of N).
        let messages = [
            (
                format!("ap-{round}"),
                json!({"op": "append", "value": round}),
            ),
            (
                format!("sn-{round}"),
                json!({"op": "sendn", "to": "b", "n": N}),
            ),
        ];
        for (id, body) in &messages {
            let mut cmd = tessera(&data);
            cmd.args(["agents", "send", "a", &body.to_string(), "--id", id]);
            let after = Duration::from_millis(rng.below(110));
            if run_and_kill(cmd, after) {
                kills += 1;
            }
            // The client saw no answer: it sends again, same id.
            ok_json(tessera(&data).args(["agents", "send", "a", &body.to_string(), "--id", id]));
        }
    }
    ok_json(tessera(&data).args(["agents", "run"]));
    println!("{rounds} rounds, {kills} kills");
    let expected_a: Vec<Value> = (0..rounds).map(|r| json!(r)).collect();
    assert_eq!(state(&data, "a"), Value::Array(expected_a), "seed {seed}");
    let expected_b: Vec<Value> = (0..rounds).flat_map(|_| (0..N).map(|i| json!(i))).collect();
    assert_eq!(state(&data, "b"), Value::Array(expected_b), "seed {seed}");
    let a = ok_json(tessera(&data).args(["agents", "show", "a"]));
    let b = ok_json(tessera(&data).args(["agents", "show", "b"]));
    assert_eq!(a["turns"].as_u64(), Some(2 * rounds), "seed {seed}");
    assert_eq!(b["turns"].as_u64(), Some(N * rounds), "seed {seed}");
    assert_eq!(
        (a["depth"].as_u64(), b["depth"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(
        kills > 0,
        "no kill landed while the process ran (seed {seed})"
    );
}
