//! The same component runs in a browser: `hello` and the catalog example
//! tool (`components/example-rust`, `wit/example/catalog.wit`) are
//! transpiled with jco and called in headless Chromium by
//! `browser/run.mjs`, and every call answers there the same JSON as
//! through `tessera call --json`: the result (records, lists, options,
//! variants, flags, 64-bit integers, floats, a `result`'s `err`), whether it
//! succeeded, a trap as a trap, and what the guest wrote to stdout and
//! stderr and logged. The expected answers are also written out here, so
//! that both sides going wrong the same way still fails.
//!
//! Needs Chromium, Node.js and the npm packages of `browser/`:
//! `scripts/browser.sh` installs them (`scripts/test.sh` runs it). Without
//! them the test fails, saying so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::{Value, json};
use tessera_test_support::{component, components_dir, repo_root};

/// What a call must answer, on both sides.
enum Expect {
    /// `ok: true` with this result.
    Ok(Value),
    /// `ok: false` with this result: the `err` of a returned `result`.
    GuestError(Value),
    /// A trap (`error.kind` "trap"), with no result.
    Trap,
}

/// One call: a component of [`COMPONENTS`], a function named as `tessera
/// call` names it, its JSON arguments, and the answer.
struct Case {
    component: &'static str,
    function: &'static str,
    args: Value,
    expect: Expect,
}

/// The components: name in the calls file, built component, WIT folder
/// (from the repository root) and world.
const COMPONENTS: [(&str, &str, &str, &str); 2] = [
    ("hello", "hello", "components/hello/wit", "hello"),
    ("catalog", "example-rust", "wit/example", "tool"),
];

fn ok(component: &'static str, function: &'static str, args: Value, result: Value) -> Case {
    Case {
        component,
        function,
        args,
        expect: Expect::Ok(result),
    }
}

fn guest_error(component: &'static str, function: &'static str, args: Value, err: Value) -> Case {
    Case {
        component,
        function,
        args,
        expect: Expect::GuestError(json!({ "err": err })),
    }
}

/// The items of the catalog calls: prices and none, repeated tags,
/// non-ASCII tags, a tie for the most units.
fn stock() -> Value {
    json!([
        {"name": "washer", "quantity": 3, "price-cents": 5, "tags": ["metal"]},
        {"name": "bolt", "quantity": 10, "price-cents": 25, "tags": ["small", "metal", "small"]},
        {"name": "nut", "quantity": 10, "price-cents": null, "tags": ["～", "😀", "é", "Metal", "small"]},
        {"name": "bolt", "quantity": 7, "price-cents": 30, "tags": ["spare"]}
    ])
}

fn cases() -> Vec<Case> {
    let items = json!([
        {"id": 1, "name": "pen", "tags": ["office", "blue"], "color": "blue"},
        {"id": 255, "name": "ünï", "tags": [], "color": null}
    ]);
    let stock = stock();
    vec![
        // hello: the world's own functions.
        ok(
            "hello",
            "greet",
            json!({"name": "browser"}),
            json!("Hello, browser!"),
        ),
        ok("hello", "chatter", json!({"msg": "héllo"}), json!(6)),
        // A fresh instance per call, on both sides.
        ok("hello", "bump", json!({}), json!(1)),
        ok("hello", "bump", json!({}), json!(1)),
        // hello: every kind of WIT value.
        ok("hello", "types#echo-bool", json!({"v": true}), json!(true)),
        ok("hello", "types#echo-s8", json!({"v": -128}), json!(-128)),
        ok("hello", "types#echo-u16", json!({"v": 65535}), json!(65535)),
        ok(
            "hello",
            "types#echo-s32",
            json!({"v": -2147483648i64}),
            json!(-2147483648i64),
        ),
        ok(
            "hello",
            "types#echo-u32",
            json!({"v": 4294967295u32}),
            json!(4294967295u32),
        ),
        ok(
            "hello",
            "types#echo-s64",
            json!({"v": i64::MIN}),
            json!(i64::MIN),
        ),
        ok(
            "hello",
            "types#echo-u64",
            json!({"v": u64::MAX}),
            json!(u64::MAX),
        ),
        ok("hello", "types#echo-f32", json!({"v": 0.1}), json!(0.1)),
        ok("hello", "types#echo-f32", json!({"v": 1e30}), json!(1e30)),
        ok(
            "hello",
            "types#echo-f64",
            json!({"v": -2.5e-300}),
            json!(-2.5e-300),
        ),
        ok("hello", "types#echo-f64", json!({"v": 3.0}), json!(3.0)),
        ok("hello", "types#echo-f64", json!({"v": "NaN"}), json!("NaN")),
        ok(
            "hello",
            "types#echo-f64",
            json!({"v": "-Infinity"}),
            json!("-Infinity"),
        ),
        ok("hello", "types#echo-char", json!({"v": "😀"}), json!("😀")),
        ok(
            "hello",
            "types#echo-string",
            json!({"v": "tab\t\"quote\" ～"}),
            json!("tab\t\"quote\" ～"),
        ),
        ok(
            "hello",
            "types#echo-list",
            json!({"v": [0, 1, 4294967295u32]}),
            json!([0, 1, 4294967295u32]),
        ),
        ok(
            "hello",
            "types#echo-bytes",
            json!({"v": [0, 127, 255]}),
            json!([0, 127, 255]),
        ),
        ok(
            "hello",
            "types#echo-tuple",
            json!({"v": [7, "seven", false]}),
            json!([7, "seven", false]),
        ),
        ok(
            "hello",
            "types#echo-point",
            json!({"v": {"x": -1, "y": 2}}),
            json!({"x": -1, "y": 2}),
        ),
        ok(
            "hello",
            "types#echo-items",
            json!({"items": items}),
            items.clone(),
        ),
        // An option field left out comes back as null.
        ok(
            "hello",
            "types#echo-items",
            json!({"items": [{"id": 3, "name": "x", "tags": ["t"]}]}),
            json!([{"id": 3, "name": "x", "tags": ["t"], "color": null}]),
        ),
        ok(
            "hello",
            "types#echo-shape",
            json!({"v": {"circle": 1.5}}),
            json!({"circle": 1.5}),
        ),
        ok(
            "hello",
            "types#echo-shape",
            json!({"v": {"rect": {"x": 3, "y": 4}}}),
            json!({"rect": {"x": 3, "y": 4}}),
        ),
        ok(
            "hello",
            "types#echo-shape",
            json!({"v": "empty"}),
            json!("empty"),
        ),
        ok(
            "hello",
            "types#echo-color",
            json!({"v": "green"}),
            json!("green"),
        ),
        ok(
            "hello",
            "types#echo-option",
            json!({"v": null}),
            json!(null),
        ),
        ok("hello", "types#echo-option", json!({"v": "x"}), json!("x")),
        ok(
            "hello",
            "types#echo-nested-option",
            json!({"v": {"some": null}}),
            json!({"some": null}),
        ),
        ok(
            "hello",
            "types#echo-nested-option",
            json!({"v": {"some": 5}}),
            json!({"some": 5}),
        ),
        ok(
            "hello",
            "types#echo-nested-option",
            json!({"v": null}),
            json!(null),
        ),
        ok(
            "hello",
            "types#echo-result",
            json!({"v": {"ok": 9}}),
            json!({"ok": 9}),
        ),
        guest_error(
            "hello",
            "types#echo-result",
            json!({"v": {"err": "no"}}),
            json!("no"),
        ),
        ok(
            "hello",
            "types#echo-unit-result",
            json!({"v": {"ok": null}}),
            json!({"ok": null}),
        ),
        guest_error(
            "hello",
            "types#echo-unit-result",
            json!({"v": {"err": null}}),
            json!(null),
        ),
        ok(
            "hello",
            "types#echo-perms",
            json!({"v": ["read", "exec"]}),
            json!(["read", "exec"]),
        ),
        ok("hello", "types#echo-perms", json!({"v": []}), json!([])),
        ok("hello", "types#no-result", json!({"v": 1}), json!(null)),
        ok(
            "hello",
            "types#divide",
            json!({"a": -7, "b": 2}),
            json!({"ok": -3}),
        ),
        guest_error(
            "hello",
            "types#divide",
            json!({"a": 1, "b": 0}),
            json!("division by zero"),
        ),
        Case {
            component: "hello",
            function: "types#fail",
            args: json!({"msg": "on purpose"}),
            expect: Expect::Trap,
        },
        // The catalog tool.
        ok(
            "catalog",
            "catalog#summarize",
            json!({"items": []}),
            json!({"items": 0, "units": 0, "value-cents": 0, "largest": null, "tags": []}),
        ),
        ok(
            "catalog",
            "catalog#summarize",
            json!({"items": stock}),
            json!({
                "items": 4, "units": 30, "value-cents": 475, "largest": "bolt",
                "tags": ["Metal", "metal", "small", "spare", "é", "～", "😀"]
            }),
        ),
        // u64 sums past 2^53 and past 2^64 (wrapping).
        ok(
            "catalog",
            "catalog#summarize",
            json!({"items": [
                {"name": "a", "quantity": 4294967295u32, "price-cents": 4294967295u32, "tags": []},
                {"name": "b", "quantity": 4294967295u32, "price-cents": null, "tags": []}
            ]}),
            json!({
                "items": 2, "units": 8589934590u64, "value-cents": 18446744065119617025u64,
                "largest": "a", "tags": []
            }),
        ),
        ok(
            "catalog",
            "catalog#summarize",
            json!({"items": [
                {"name": "a", "quantity": 4294967295u32, "price-cents": 4294967295u32, "tags": []},
                {"name": "b", "quantity": 4294967295u32, "price-cents": 4294967295u32, "tags": []}
            ]}),
            json!({
                "items": 2, "units": 8589934590u64, "value-cents": 18446744056529682434u64,
                "largest": "a", "tags": []
            }),
        ),
        ok(
            "catalog",
            "catalog#filter",
            json!({"items": stock, "tag": "small"}),
            json!([stock[1], stock[2]]),
        ),
        ok(
            "catalog",
            "catalog#filter",
            json!({"items": stock, "tag": null}),
            stock.clone(),
        ),
        ok(
            "catalog",
            "catalog#filter",
            json!({"items": stock, "tag": "plastic"}),
            json!([]),
        ),
        ok(
            "catalog",
            "catalog#restock",
            json!({"items": stock, "name": "bolt", "units": 5}),
            json!({"ok": [
                stock[0],
                {"name": "bolt", "quantity": 15, "price-cents": 25, "tags": ["small", "metal", "small"]},
                stock[2],
                stock[3]
            ]}),
        ),
        guest_error(
            "catalog",
            "catalog#restock",
            json!({"items": stock, "name": "screw", "units": 1}),
            json!({"unknown-item": "screw"}),
        ),
        guest_error(
            "catalog",
            "catalog#restock",
            json!({
                "items": [{"name": "crate", "quantity": 4294967290u32, "price-cents": null, "tags": []}],
                "name": "crate",
                "units": 6
            }),
            json!("overflow"),
        ),
    ]
}

/// Fails, naming the setup script, unless Node.js, the npm packages of
/// `browser/` (installed from the current lock file) and Chromium are
/// there.
fn check_setup(root: &Path) {
    let fix = "run `bash scripts/browser.sh` (it installs Debian's chromium, Node.js and the \
               npm packages of browser/; scripts/test.sh runs it)";
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "the browser test needs Node.js (`node` on PATH): {fix}"
    );
    let lock = std::fs::read(root.join("browser/package-lock.json"))
        .expect("browser/package-lock.json exists");
    let installed = std::fs::read(root.join("browser/node_modules/.tessera-package-lock.json"));
    assert!(
        installed.is_ok_and(|i| i == lock),
        "the npm packages of browser/ are missing or were installed from another \
         package-lock.json: {fix}"
    );
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        chromium.is_file(),
        "the browser test needs Chromium at {} (or $CHROMIUM): {fix}",
        chromium.display()
    );
}

/// Runs `case` through `tessera call --json` and returns its JSON.
fn tessera_call(data: &Path, wasm: &Path, case: &Case) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("--data")
        .arg(data)
        .env(
            "TESSERA_CACHE_DIR",
            components_dir().join("target/browser-test-cache"),
        )
        .arg("call")
        .arg(wasm)
        .arg(case.function)
        .args(["--args", &case.args.to_string(), "--json"])
        .output()
        .expect("run tessera");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "tessera call {} {}: {e}: {stdout}\n{}",
            case.component,
            case.function,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Runs every case in Chromium through `browser/run.mjs` and returns its
/// JSON document.
fn browser_calls(root: &Path, dir: &Path, wasm: &[PathBuf], cases: &[Case]) -> Value {
    let components: serde_json::Map<String, Value> = COMPONENTS
        .iter()
        .zip(wasm)
        .map(|((name, _, wit, world), wasm)| {
            (
                name.to_string(),
                json!({"wasm": wasm, "wit": root.join(wit), "world": world}),
            )
        })
        .collect();
    let calls: Vec<Value> = cases
        .iter()
        .map(|c| json!({"component": c.component, "function": c.function, "args": c.args}))
        .collect();
    let file = dir.join("calls.json");
    std::fs::write(
        &file,
        serde_json::to_string_pretty(&json!({"components": components, "calls": calls})).unwrap(),
    )
    .unwrap();
    let out = Command::new("node")
        .arg(root.join("browser/run.mjs"))
        .arg(&file)
        .output()
        .expect("run node browser/run.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "node browser/run.mjs failed ({}); if Chromium or the npm packages are missing, \
         run `bash scripts/browser.sh`:\n{stdout}\n{stderr}",
        out.status
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("browser/run.mjs printed no JSON: {e}\n{stdout}\n{stderr}"))
}

/// The part of a call's JSON both sides must agree on: `ok`, `result`,
/// the kind of `error`, and what the guest wrote and logged.
fn comparable(v: &Value) -> Value {
    json!({
        "ok": v["ok"],
        "result": v.get("result"),
        "error": v["error"]["kind"],
        "stdout": v["stdout"],
        "stderr": v["stderr"],
        "logs": v["logs"],
    })
}

/// What [`comparable`] must be for `case`, as far as the case says.
fn expected(case: &Case) -> (Value, Option<&Value>, Value) {
    match &case.expect {
        Expect::Ok(r) => (json!(true), Some(r), Value::Null),
        Expect::GuestError(r) => (json!(false), Some(r), Value::Null),
        Expect::Trap => (json!(false), None, json!("trap")),
    }
}

#[test]
fn components_answer_the_same_in_chromium_as_through_tessera_call() {
    let root = repo_root();
    check_setup(&root);
    let cases = cases();
    let wasm: Vec<PathBuf> = COMPONENTS
        .iter()
        .map(|(_, built, _, _)| component(built))
        .collect();
    let tmp = tempfile::tempdir().unwrap();

    let started = Instant::now();
    let browser = browser_calls(&root, tmp.path(), &wasm, &cases);
    let browser_time = started.elapsed();
    assert!(
        browser["browser"]
            .as_str()
            .is_some_and(|b| b.starts_with("Chromium ")),
        "not run in Chromium: {}",
        browser["browser"]
    );
    let answers = browser["calls"].as_array().expect("calls in the output");
    assert_eq!(answers.len(), cases.len(), "one answer per call: {browser}");

    let started = Instant::now();
    let data = tmp.path().join("data");
    let mut wrong = Vec::new();
    for (i, (case, in_browser)) in cases.iter().zip(answers).enumerate() {
        let which = COMPONENTS
            .iter()
            .position(|(name, ..)| *name == case.component)
            .unwrap();
        let tessera = tessera_call(&data, &wasm[which], case);
        let label = format!("#{i} {} {} {}", case.component, case.function, case.args);
        let (t, b) = (comparable(&tessera), comparable(in_browser));
        if t != b {
            wrong.push(format!(
                "{label}: the browser differs from tessera call\n  tessera: {t}\n  browser: {b}"
            ));
        }
        let (ok, result, error) = expected(case);
        for (side, v) in [("tessera", &t), ("browser", &b)] {
            if v["ok"] != ok || v["error"] != error {
                wrong.push(format!(
                    "{label}: {side} answered {v}, expected ok={ok} and error kind {error}"
                ));
            } else if let Some(r) = result
                && v["result"] != *r
            {
                wrong.push(format!(
                    "{label}: {side} answered {}, expected {r}",
                    v["result"]
                ));
            }
        }
        // What `chatter` writes and logs, written out: the page's stdout,
        // stderr and `wasi:logging` capture must match Tessera's.
        if case.function == "chatter" {
            let io = json!({
                "stdout": "stdout: héllo\n",
                "stderr": "stderr: héllo\n",
                "logs": [{"level": "info", "context": "hello", "message": "héllo"}],
            });
            for (side, v) in [("tessera", &t), ("browser", &b)] {
                let got = json!({"stdout": v["stdout"], "stderr": v["stderr"], "logs": v["logs"]});
                if got != io {
                    wrong.push(format!(
                        "{label}: {side} wrote and logged {got}, expected {io}"
                    ));
                }
            }
        }
    }
    let tessera_time = started.elapsed();
    eprintln!(
        "{} calls: Chromium {:.1} s (transpiling, starting the browser and every call), \
         tessera call {:.1} s",
        cases.len(),
        browser_time.as_secs_f64(),
        tessera_time.as_secs_f64()
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
