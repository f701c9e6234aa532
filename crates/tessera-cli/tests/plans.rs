//! `tessera plan` end to end, and plans surviving `kill -9`: `tessera plan
//! run` is killed at random points,
//! `tessera plan resume` finishes the run, and an HTTP server on 127.0.0.1
//! counts every side effect the steps make (each step GETs a URL that
//! carries its idempotency key). Checked every round: no step that had
//! finished before a kill is run again, no step is lost, the outputs are
//! right.
//!
//! Rounds: `TESSERA_CRASH_ROUNDS` (default 20; `scripts/plan-crash.sh` runs
//! 100). The kill points come from a generator seeded by
//! `TESSERA_CRASH_SEED` (default: the clock), printed so a failing round
//! can be replayed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

fn tessera(data: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
    c.arg("--data").arg(data);
    c
}

/// An HTTP server that counts the requests to each path and answers
/// `done <path>` after a short pause (so that steps take a while).
struct Counter {
    port: u16,
    counts: Arc<Mutex<BTreeMap<String, u32>>>,
}

impl Counter {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let counts: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
        let c = counts.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let c = c.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(match s.try_clone() {
                        Ok(x) => x,
                        Err(_) => return,
                    });
                    let mut first = String::new();
                    if r.read_line(&mut first).is_err() {
                        return;
                    }
                    let mut line = String::new();
                    while r.read_line(&mut line).unwrap_or(0) > 2 {
                        line.clear();
                    }
                    let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
                    *c.lock().unwrap().entry(path.clone()).or_default() += 1;
                    std::thread::sleep(Duration::from_millis(40));
                    let body = format!("done {path}");
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        Self { port, counts }
    }

    fn counts(&self) -> BTreeMap<String, u32> {
        self.counts.lock().unwrap().clone()
    }
}

const PLAN: &str = r#"
name = "effects"
[inputs.items]
type = "array"

[steps.a]
component = "COMPONENTS/http-fetch.wasm"
manifest = "fetch.toml"
function = "fetch"
args = { url = "BASE/${{ .step.key }}" }

[steps.b]
component = "COMPONENTS/http-fetch.wasm"
manifest = "fetch.toml"
function = "fetch"
args = { url = "BASE/${{ .step.key }}?after=${{ .steps.a.output.status }}" }

[steps.fan]
component = "COMPONENTS/http-fetch.wasm"
manifest = "fetch.toml"
function = "fetch"
for_each = ".inputs.items"
concurrency = 2
needs = ["b"]
args = { url = "BASE/${{ .step.key }}" }

[steps.c]
component = "COMPONENTS/http-fetch.wasm"
manifest = "fetch.toml"
function = "fetch"
needs = ["b"]
args = { url = "BASE/${{ .step.key }}" }

[steps.d]
component = "COMPONENTS/http-fetch.wasm"
manifest = "fetch.toml"
function = "fetch"
args = { url = "BASE/${{ .step.key }}?n=${{ .steps.fan.output | length }}&c=${{ .steps.c.output.status }}" }

[outputs]
bodies = "${{ [.steps.a, .steps.b, .steps.c, .steps.d] | map(.output.body) }}"
fan = "${{ .steps.fan.output | map(.body) }}"
"#;

/// The run's finished steps and fan-out items, from the store, as the
/// idempotency keys their calls carried.
fn finished(data: &Path, run: &str) -> BTreeSet<String> {
    let out = tessera(data)
        .args(["plan", "runs", "show", run, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut keys = BTreeSet::new();
    for s in v["steps"].as_array().unwrap() {
        if !s["record"].is_null() {
            keys.insert(format!("{run}/{}", s["step"].as_str().unwrap()));
        }
    }
    let out = tessera(data)
        .args([
            "kv",
            "list",
            "--bucket",
            "tessera-plans",
            "--prefix",
            &format!("item/{run}/"),
            "--all",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in v["keys"].as_array().unwrap() {
        // item/<run>/<step>/<index, 8 digits>
        let k = k.as_str().unwrap();
        let mut parts = k.rsplitn(3, '/');
        let index: usize = parts.next().unwrap().parse().unwrap();
        let step = parts.next().unwrap();
        keys.insert(format!("{run}/{step}/{index}"));
    }
    keys
}

/// Requests per idempotency key (the path without its query).
fn by_key(counts: &BTreeMap<String, u32>, run: &str) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for (path, n) in counts {
        let key = path.trim_start_matches('/').split('?').next().unwrap_or("");
        if key.starts_with(run) {
            *out.entry(key.to_string()).or_default() += n;
        }
    }
    out
}

fn status(data: &Path, run: &str) -> String {
    let out = tessera(data)
        .args(["plan", "runs", "show", run, "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["status"].as_str().unwrap_or("").to_string()
}

/// Starts `args`, reads the plan run id from its first stderr line, and
/// kills it with SIGKILL after `after` (if it is still running).
fn run_and_kill(mut cmd: Command, after: Duration) -> (String, bool) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    let id = first
        .strip_prefix("plan run ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no run id in {first:?}"))
        .to_string();
    // Keep draining stderr so the child never blocks on it.
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = err.read_to_end(&mut sink);
    });
    std::thread::sleep(after);
    let killed = matches!(child.try_wait(), Ok(None));
    if killed {
        child.kill().unwrap(); // SIGKILL
    }
    child.wait().unwrap();
    (id, killed)
}

#[test]
fn plans_killed_at_random_points_resume_without_rerunning_or_losing_steps() {
    let mut rng = tessera_test_support::CrashPoints::from_env();
    let (rounds, seed) = (rng.rounds, rng.seed);
    tessera_test_support::component("http-fetch");
    let counter = Counter::start();
    let dir = tempfile::tempdir().unwrap();
    let components = tessera_test_support::components_dir();
    let plan_path = dir.path().join("effects.plan.toml");
    std::fs::write(
        &plan_path,
        PLAN.replace("COMPONENTS", components.to_str().unwrap())
            .replace("BASE", &format!("http://127.0.0.1:{}", counter.port)),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("fetch.toml"),
        format!(
            "[http]\nallowed_outbound_hosts = [\"http://127.0.0.1:{}\"]\n",
            counter.port
        ),
    )
    .unwrap();
    let items = json!({"items": ["x", "y", "z", "w"]});
    // How long one run takes here, unkilled: the kill points spread over it
    // (not a timing check; it only places the kills).
    let calibration = dir.path().join("data-calibration");
    let started = std::time::Instant::now();
    let out = tessera(&calibration)
        .args(["plan", "run"])
        .arg(&plan_path)
        .args(["--input", &items.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let span = (started.elapsed().as_millis() as u64).max(50);
    println!("an unkilled run took {span} ms");
    let mut kills = 0;
    let mut rerun_checked = 0;
    for round in 0..rounds {
        let data = dir.path().join(format!("data-{round}"));
        // The first kill anywhere from the start to the end of a run.
        let mut cmd = tessera(&data);
        cmd.args(["plan", "run"])
            .arg(&plan_path)
            .args(["--input", &items.to_string()]);
        let (run, killed) = run_and_kill(cmd, Duration::from_millis(rng.below(span)));
        kills += u32::from(killed);
        // Resume, possibly killed again, until it has finished.
        let mut tries = 0;
        loop {
            let done_before = finished(&data, &run);
            let counts_before = by_key(&counter.counts(), &run);
            if status(&data, &run) == "succeeded" {
                break;
            }
            tries += 1;
            assert!(tries < 20, "round {round}: run {run} never finished");
            let again = rng.below(2) == 0 && tries < 4;
            let mut cmd = tessera(&data);
            cmd.args(["plan", "resume", &run]);
            let killed = if again {
                // run_and_kill reads the run id from `plan resume`'s first
                // line too ("plan `effects`, run ID" comes after it).
                let mut child = cmd
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                std::thread::sleep(Duration::from_millis(rng.below(span)));
                let running = matches!(child.try_wait(), Ok(None));
                if running {
                    child.kill().unwrap();
                }
                child.wait().unwrap();
                running
            } else {
                let out = cmd.output().unwrap();
                assert!(
                    out.status.success(),
                    "round {round}: resume of {run} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                false
            };
            kills += u32::from(killed);
            // No step finished before this attempt made another request.
            let counts_after = by_key(&counter.counts(), &run);
            for key in &done_before {
                assert_eq!(
                    counts_after.get(key),
                    counts_before.get(key),
                    "round {round} (seed {seed}): finished step {key} ran again"
                );
                rerun_checked += 1;
            }
        }
        // Nothing lost: every step and item made its request and the
        // outputs are the responses.
        let counts = by_key(&counter.counts(), &run);
        let mut expected: Vec<String> = ["a", "b", "c", "d"]
            .iter()
            .map(|s| format!("{run}/{s}"))
            .collect();
        expected.extend((0..4).map(|i| format!("{run}/fan/{i}")));
        for key in &expected {
            assert!(
                counts.get(key).copied().unwrap_or(0) >= 1,
                "round {round} (seed {seed}): {key} never ran: {counts:?}"
            );
        }
        let out = tessera(&data)
            .args(["plan", "runs", "show", &run, "--json"])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["status"], "succeeded", "round {round}: {v}");
        let fan = &v["outputs"]["fan"];
        for i in 0..4 {
            assert_eq!(fan[i], json!(format!("done /{run}/fan/{i}")), "{v}");
        }
        assert_eq!(
            v["outputs"]["bodies"][3],
            json!(format!("done /{run}/d?n=4&c=200"))
        );
    }
    println!("{rounds} rounds, {kills} kills, {rerun_checked} finished steps checked not to rerun");
    assert!(
        kills > 0,
        "no round was killed while running: the kill points missed"
    );
}

/// `validate`, `run`, `runs show`, `graph` and `replay` of the example plan,
/// and plan errors as JSON.
#[test]
fn the_example_plan_validates_runs_draws_and_replays() {
    let data = tempfile::tempdir().unwrap();
    for c in ["hello", "kv-tool"] {
        tessera_test_support::component(c);
    }
    let example = tessera_test_support::repo_root().join("examples/plans/greetings.plan.toml");
    let out = tessera(data.path())
        .args(["plan", "validate", "--json"])
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["valid"].clone(), v["steps"].as_array().unwrap().len()),
        (json!(true), 5)
    );
    let out = tessera(data.path())
        .args([
            "plan",
            "run",
            "--json",
            "--input",
            r#"{"names": ["Ada", "Grace"]}"#,
        ])
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["status"], "succeeded");
    assert_eq!(
        run["outputs"],
        json!({"greetings": ["Hello, Ada!", "Hello, Grace!"], "share": 100, "total": 2})
    );
    let id = run["id"].as_str().unwrap();
    // The key-value step wrote to the data directory's store.
    let out = tessera(data.path())
        .args(["kv", "get", "--bucket", "greetings", "last"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Hello, Ada! Hello, Grace!"
    );
    // The fallback took over after three attempts.
    let out = tessera(data.path())
        .args(["plan", "runs", "show", id, "--json"])
        .output()
        .unwrap();
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    let share = shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "share")
        .unwrap();
    assert_eq!(share["record"]["state"], "fell-back");
    assert_eq!(share["record"]["attempts"], 3);
    // A picture of the run.
    let svg = data.path().join("run.svg");
    let out = tessera(data.path())
        .args(["plan", "graph", "--run", id, "-o"])
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.contains("fell back") && text.contains("remember"),
        "{text}"
    );
    // Offline replay, call by call.
    let out = tessera(data.path())
        .args(["replay", id, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["identical"], true);
    assert_eq!(r["calls"].as_array().unwrap().len(), 2 + 3 + 1 + 2);
    // A bad plan: every problem, with its place, as JSON; exit 2.
    let bad = data.path().join("bad.plan.toml");
    std::fs::write(
        &bad,
        format!(
            "[steps.a]\ncomponent = {:?}\nfunction = \"greet\"\nargs = {{ nme = 1 }}\n",
            tessera_test_support::component("hello")
                .display()
                .to_string()
        ),
    )
    .unwrap();
    let out = tessera(data.path())
        .args(["plan", "validate", "--json"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        e["error"]["kind"].as_str().or(e["kind"].as_str()),
        Some("bad_plan"),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains("steps.a.args.nme") && text.contains("steps.a.args"),
        "{text}"
    );
    let out = tessera(data.path())
        .args(["plan", "run"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "a plan that does not validate does not run"
    );
}

/// The published JSON Schema of plan files (docs/plan.schema.json) accepts
/// the example plans and refuses what the parser refuses, checked with
/// Python's `jsonschema` (installed by scripts/python-env.sh).
#[test]
fn the_plan_schema_accepts_the_examples_and_refuses_unknown_keys() {
    let root = tessera_test_support::repo_root();
    let python = root.join("target/mcp-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/python-env.sh",
        python.display()
    );
    let script = r#"
import json, sys, tomllib, pathlib, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
v = jsonschema.Draft202012Validator(schema)
examples = sorted(pathlib.Path(sys.argv[2]).glob("*.plan.toml"))
assert examples, "no example plans"
for p in examples:
    errors = list(v.iter_errors(tomllib.load(open(p, "rb"))))
    assert not errors, f"{p}: {[e.message for e in errors]}"
bad = [
    {"steps": {"a": {"component": "h", "function": "f", "retires": 3}}},
    {"steps": {}},
    {"bogus": 1, "steps": {"a": {"component": "h", "function": "f"}}},
    {"steps": {"a-b": {"component": "h", "function": "f"}}},
    {"steps": {"a": {"component": "h", "function": "f", "on_error": "explode"}}},
    {"steps": {"a": {"function": "f"}}},
]
for doc in bad:
    assert list(v.iter_errors(doc)), f"accepted: {doc}"
print(len(examples), "examples valid,", len(bad), "bad documents refused")
"#;
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(root.join("docs/plan.schema.json"))
        .arg(root.join("examples/plans"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
