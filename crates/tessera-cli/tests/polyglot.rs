//! `tessera call` gets the same JSON from the catalog example tool
//! (`wit/example/catalog.wit`) in every language
//! (`components/example-<language>`): the answers written out in
//! `crates/tessera-server/tests/polyglot.rs`, whose `CASES` are read from
//! that file, and which checks the same calls over the HTTP API and MCP.
//! (The server's tests cannot run this crate's binary, so this part lives
//! here.)

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use tessera_test_support::{component, components_dir};

/// The languages, as in `components/example-<language>`: every one must be
/// built.
const LANGUAGES: [&str; 5] = ["rust", "python", "js", "c", "go"];

/// The server's polyglot test, which holds the cases and their answers.
const SERVER_TEST: &str = include_str!("../../tessera-server/tests/polyglot.rs");

/// One call of the server test's `CASES`, its `"@<list>"` references
/// replaced.
struct Case {
    name: String,
    function: String,
    args: Value,
    expected: Value,
}

/// The server test's `CASES` (the raw string literal), parsed.
fn cases() -> Vec<Case> {
    let start = "const CASES: &str = r##\"";
    let text = SERVER_TEST
        .split_once(start)
        .and_then(|(_, rest)| rest.split_once("\"##;"))
        .map(|(json, _)| json)
        .expect("crates/tessera-server/tests/polyglot.rs has `const CASES: &str = r##\"…\"##;`");
    let all: Value = serde_json::from_str(text).expect("CASES is JSON");
    let lists = &all["lists"];
    // Replaces a `"@<list>"` string, at any depth, with that list.
    fn expand(v: &Value, lists: &Value) -> Value {
        match v {
            Value::String(s) if s.starts_with('@') => lists
                .get(&s[1..])
                .unwrap_or_else(|| panic!("CASES has no list {s}"))
                .clone(),
            Value::Array(a) => a.iter().map(|v| expand(v, lists)).collect(),
            Value::Object(o) => o
                .iter()
                .map(|(k, v)| (k.clone(), expand(v, lists)))
                .collect(),
            v => v.clone(),
        }
    }
    let cases: Vec<Case> = all["cases"]
        .as_array()
        .expect("CASES has cases")
        .iter()
        .map(|c| Case {
            name: c["case"].as_str().unwrap().to_string(),
            function: c["function"].as_str().unwrap().to_string(),
            args: expand(&c["args"], lists),
            expected: expand(&c["expected"], lists),
        })
        .collect();
    assert!(cases.len() >= 10, "only {} cases", cases.len());
    cases
}

/// The compile cache the polyglot tests share (here and in the server's):
/// the Python and JavaScript guests take tens of seconds each to compile,
/// once. Never the user's own cache.
fn compile_cache() -> PathBuf {
    components_dir().join("target/polyglot-test-cache")
}

/// Every language's component answers every call of the server test's
/// `CASES` with the expected JSON through `tessera call <component>
/// catalog#<function> --args … --json`, and exits 0 (or 3, a guest error,
/// for the `err` case of a `result`).
#[test]
fn every_language_answers_the_same_through_tessera_call() {
    let cases = cases();
    let data = tempfile::tempdir().unwrap();
    let mut wrong = Vec::new();
    for lang in LANGUAGES {
        let name = format!("example-{lang}");
        let wasm = component(&name);
        for case in &cases {
            let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
                .arg("--data")
                .arg(data.path())
                .env("TESSERA_CACHE_DIR", compile_cache())
                .arg("call")
                .arg(&wasm)
                .arg(format!("catalog#{}", case.function))
                .args(["--args", &case.args.to_string(), "--json"])
                .output()
                .expect("run tessera");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let ok = case.expected.get("err").is_none();
            assert_eq!(
                out.status.code(),
                Some(if ok { 0 } else { 3 }),
                "{}: tessera call of {name}: {stdout}\n{stderr}",
                case.name
            );
            let v: Value = serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("{}: {name}: {e}: {stdout}\n{stderr}", case.name));
            assert_eq!(v["ok"], Value::Bool(ok), "{}: {name}: {v}", case.name);
            if v["result"] != case.expected {
                wrong.push(format!("{}: {name}: {}", case.name, v["result"]));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "answers that differ from the expected ones:\n{}\n\nexpected:\n{}",
        wrong.join("\n"),
        cases
            .iter()
            .map(|c| format!("{}: {}", c.name, c.expected))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
