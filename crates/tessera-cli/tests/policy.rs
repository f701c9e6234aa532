//! Boundary policies from the command line: `policy validate`, `policy
//! test` (the example policies, and an allowed and a denied case for every
//! context attribute), `--policy` on a call, `policy what-if` against
//! recorded runs, and `replay --with-version`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{err, json, out, run};
use tessera_test_support::{component, http_stub, repo_root};

fn examples() -> PathBuf {
    repo_root().join("examples/policies")
}

fn here(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/policies")
        .join(rel)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn validate_reports_every_problem_with_its_position() {
    let data = tempfile::tempdir().unwrap();
    let o = run(data.path(), &["policy", "validate", s(&examples())]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    assert!(
        out(&o).contains("ok: 6 policies and 2 quotas"),
        "{}",
        out(&o)
    );

    let bad = data.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("a.cedar"),
        "permit(principal, action, resource);\nforbid(principal, action == Tessera::Action::\"http.request\", resource)\nwhen { context.verb == \"POST\" };\n",
    )
    .unwrap();
    std::fs::write(
        bad.join("b.cedar"),
        "permit(principal,, action, resource);\n",
    )
    .unwrap();
    let o = run(data.path(), &["policy", "validate", s(&bad), "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    let v = json(&o);
    assert_eq!(v["ok"], false);
    let problems = v["error"]["context"]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{v}");
    assert!(
        problems[0]["file"].as_str().unwrap().ends_with("b.cedar"),
        "{v}"
    );
    assert_eq!(problems[0]["line"], 1);
    assert!(
        problems[1]["file"].as_str().unwrap().ends_with("a.cedar"),
        "{v}"
    );
    assert_eq!(problems[1]["line"], 3, "{v}");
    assert!(
        problems[1]["message"].as_str().unwrap().contains("verb"),
        "{v}"
    );
}

#[test]
fn the_example_policies_pass_their_tests() {
    let data = tempfile::tempdir().unwrap();
    let tests = examples().join("tests.yaml");
    let o = run(data.path(), &["policy", "test", s(&examples()), s(&tests)]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    assert!(
        out(&o).contains("18 tests: 18 passed, 0 failed"),
        "{}",
        out(&o)
    );
}

#[test]
fn every_context_attribute_has_an_allowed_and_a_denied_case() {
    let data = tempfile::tempdir().unwrap();
    let o = run(
        data.path(),
        &[
            "policy",
            "test",
            s(&here("attributes")),
            s(&here("attributes.yaml")),
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    let v = json(&o);
    assert_eq!(v["failed"], 0, "{v}");
    let results = v["results"].as_array().unwrap();
    let allowed = results
        .iter()
        .filter(|r| r["verdict"]["allowed"] == true)
        .count();
    assert_eq!(allowed * 2, results.len(), "{v}");
    assert_eq!(results.len(), 62, "{v}");
}

#[test]
fn a_wrong_expectation_fails_and_a_bad_test_file_is_named() {
    let data = tempfile::tempdir().unwrap();
    let tests = data.path().join("t.yaml");
    std::fs::write(
        &tests,
        "- name: POST is fine\n  caller: {component: fetch}\n  http: {method: POST, url: \"https://api.example.com/v1/public/x\"}\n  expect: allow\n",
    )
    .unwrap();
    let o = run(data.path(), &["policy", "test", s(&examples()), s(&tests)]);
    assert_eq!(o.status.code(), Some(9), "{}", out(&o));
    assert!(
        out(&o).contains("FAIL    1 POST is fine: expected allow, got deny"),
        "{}",
        out(&o)
    );
    assert!(out(&o).contains("`fetch-get-public-only`"), "{}", out(&o));

    std::fs::write(
        &tests,
        "- name: typo\n  caller: {component: fetch}\n  htp: {method: GET, url: \"https://x\"}\n  expect: allow\n",
    )
    .unwrap();
    let o = run(data.path(), &["policy", "test", s(&examples()), s(&tests)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err(&o).contains("test 1 (`typo`): unknown key `htp`"),
        "{}",
        err(&o)
    );
}

/// A call through `--policy`: the grant allows the host, a policy forbids
/// the path; the request never leaves and the audit log names the policy.
#[test]
fn a_call_under_policies_is_denied_by_them() {
    let data = tempfile::tempdir().unwrap();
    let (port, seen) = http_stub();
    let manifest = fetch_manifest(data.path(), port);
    let policies = data.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::copy(examples().join("base.cedar"), policies.join("base.cedar")).unwrap();
    std::fs::write(
        policies.join("fetch.cedar"),
        std::fs::read_to_string(examples().join("http.cedar"))
            .unwrap()
            .replace(
                "Tessera::Component::\"fetch\"",
                "Tessera::Component::\"http-fetch\"",
            ),
    )
    .unwrap();
    let fetch = component("http-fetch");
    let call = |path: &str| {
        run(
            data.path(),
            &[
                "call",
                s(&fetch),
                "fetch",
                "--args",
                &format!("{{\"url\":\"http://127.0.0.1:{port}{path}\"}}"),
                "--manifest",
                s(&manifest),
                "--policy",
                s(&policies),
            ],
        )
    };
    let o = call("/v1/public/a");
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    let o = call("/v1/private/a");
    // The guest's `err`, with a denial during the call: exit 5.
    assert_eq!(o.status.code(), Some(5), "{}{}", out(&o), err(&o));
    assert!(out(&o).contains("HttpRequestDenied"), "{}", out(&o));
    let heads = seen.lock().unwrap().clone();
    assert!(heads.contains("GET /v1/public/a"), "{heads}");
    assert!(!heads.contains("/v1/private/a"), "{heads}");
    let audit = std::fs::read_to_string(data.path().join("audit.jsonl")).unwrap();
    let denial = audit
        .lines()
        .find(|l| l.contains("\"deny\"") && l.contains("/v1/private/a"))
        .unwrap_or_else(|| panic!("{audit}"));
    assert!(denial.contains("fetch-get-public-only"), "{denial}");
    // A policy directory that does not load stops the call before it runs.
    std::fs::write(policies.join("broken.cedar"), "forbid(principal").unwrap();
    let o = call("/v1/public/a");
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("broken.cedar:1:"), "{}", err(&o));
}

/// A manifest granting HTTP to 127.0.0.1:`port`.
fn fetch_manifest(data: &Path, port: u16) -> PathBuf {
    let manifest = data.join("fetch.toml");
    std::fs::write(
        &manifest,
        format!("[http]\nallowed_outbound_hosts = [\"http://127.0.0.1:{port}\"]\n"),
    )
    .unwrap();
    manifest
}

fn recorded(o: &Output) -> String {
    err(o)
        .lines()
        .find_map(|l| l.strip_prefix("recorded run "))
        .unwrap_or_else(|| panic!("no run id: {}", err(o)))
        .trim()
        .to_string()
}

/// `policy what-if`: recorded runs replayed offline against a stricter
/// policy set: the requests it would deny are listed; the world is not
/// contacted.
#[test]
fn what_if_lists_the_decisions_a_new_policy_set_would_change() {
    let data = tempfile::tempdir().unwrap();
    let (port, seen) = http_stub();
    let manifest = fetch_manifest(data.path(), port);
    let fetch = component("http-fetch");
    let mut runs = Vec::new();
    for path in ["/v1/public/a", "/v1/admin/b"] {
        let o = run(
            data.path(),
            &[
                "call",
                s(&fetch),
                "fetch",
                "--args",
                &format!("{{\"url\":\"http://127.0.0.1:{port}{path}\"}}"),
                "--manifest",
                s(&manifest),
                "--record",
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{}", err(&o));
        runs.push(recorded(&o));
    }
    let before = seen.lock().unwrap().matches("GET ").count();
    assert_eq!(before, 2);

    let stricter = data.path().join("stricter");
    std::fs::create_dir_all(&stricter).unwrap();
    std::fs::copy(examples().join("base.cedar"), stricter.join("base.cedar")).unwrap();
    std::fs::write(
        stricter.join("admin.cedar"),
        "@id(\"no-admin\")\nforbid(principal == Tessera::Component::\"http-fetch\", action == Tessera::Action::\"http.request\", resource)\nwhen { context.path like \"/v1/admin/*\" };\n",
    )
    .unwrap();
    let o = run(data.path(), &["policy", "what-if", s(&stricter), "--json"]);
    assert_eq!(o.status.code(), Some(9), "{}{}", out(&o), err(&o));
    let v = json(&o);
    assert_eq!(v["runs"], 2, "{v}");
    assert_eq!(v["interactions"], 2, "{v}");
    let changes = v["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{v}");
    assert_eq!(changes[0]["run"], runs[1].as_str());
    assert_eq!(changes[0]["before"]["allowed"], true);
    assert_eq!(changes[0]["after"]["allowed"], false);
    assert_eq!(changes[0]["after"]["policies"][0], "no-admin");
    assert!(
        changes[0]["request"]
            .as_str()
            .unwrap()
            .ends_with("/v1/admin/b"),
        "{v}"
    );
    // Offline: nothing more reached the server.
    assert_eq!(seen.lock().unwrap().matches("GET ").count(), before);

    // Against itself as the baseline, nothing changes; one run at a time.
    let o = run(
        data.path(),
        &[
            "policy",
            "what-if",
            s(&stricter),
            "--baseline",
            s(&stricter),
            "--run",
            &runs[1],
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    assert!(
        out(&o).contains("1 runs, 1 policy-checked interactions: 0 decisions would change"),
        "{}",
        out(&o)
    );
}

/// `replay --with-version`: the same behaviour from a re-signed copy; a
/// different result; different interactions.
#[test]
fn replay_with_another_version_reports_where_it_departs() {
    let data = tempfile::tempdir().unwrap();
    // A result: `count` of the composition example's provider.
    let provider = component("text-provider");
    let o = run(
        data.path(),
        &[
            "call",
            s(&provider),
            "count",
            "--args",
            r#"{"text":"two words"}"#,
            "--record",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let counted = recorded(&o);
    // The same component with a signature section: other bytes, same code.
    let keys = data.path().join("k");
    assert_eq!(
        run(data.path(), &["keys", "generate", "--out", s(&keys)])
            .status
            .code(),
        Some(0)
    );
    let signed = data.path().join("signed.wasm");
    let o = run(
        data.path(),
        &[
            "sign",
            s(&provider),
            "--key",
            &format!("{}.key", s(&keys)),
            "--out",
            s(&signed),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let o = run(
        data.path(),
        &["replay", &counted, "--with-version", s(&signed)],
    );
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    assert!(out(&o).contains("same behaviour"), "{}", out(&o));
    // A version whose `count` returns a bare number.
    let wrong = component("text-provider-wrong");
    let o = run(
        data.path(),
        &["replay", &counted, "--with-version", s(&wrong), "--json"],
    );
    assert_eq!(o.status.code(), Some(6), "{}{}", out(&o), err(&o));
    let v = json(&o);
    assert_eq!(v["same_behaviour"], false, "{v}");
    assert_eq!(
        v["recorded_result"]["value"],
        serde_json::json!({"chars": 9, "words": 2}),
        "{v}"
    );
    assert_eq!(v["new_result"]["value"], serde_json::json!(9), "{v}");

    // Interactions: the Rust catalog makes none; the Python one asks the
    // host for things the recording does not hold.
    let rust = component("example-rust");
    let args = r#"{"items":[{"name":"a","quantity":2,"price-cents":5,"tags":[]}]}"#;
    let o = run(
        data.path(),
        &["call", s(&rust), "summarize", "--args", args, "--record"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let summarized = recorded(&o);
    let python = component("example-python");
    let o = run(
        data.path(),
        &[
            "replay",
            &summarized,
            "--with-version",
            s(&python),
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(6), "{}{}", out(&o), err(&o));
    let v = json(&o);
    assert_eq!(v["departs_at"], 0, "{v}");
    assert!(v["recorded"].is_null(), "{v}");
    assert!(v["new_version"].is_object(), "{v}");
}
