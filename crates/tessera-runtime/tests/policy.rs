//! Boundary policies (Cedar) at every gateway decision: the allowed and the
//! denied case for each capability, quotas spent and reset, failing closed,
//! reloading, and policy files that do not load.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::*;
use serde_json::{Value, json};
use tessera_runtime::audit::MemoryAudit;
use tessera_runtime::capability::llm::{LlmProviders, Provider};
use tessera_runtime::policy::{Caller, Clock, Interaction, Policies, PolicyEngine, PolicyError};
use tessera_runtime::{Decision, HostConfig, Runtime, RuntimeConfig};
use tessera_test_support::{Rule, ScriptedLlm};

const BASE: &str = r#"
@id("base")
permit(principal, action, resource);
"#;

const RULES: &str = r#"
@id("get-public-only")
forbid(principal, action == Tessera::Action::"http.request", resource)
unless { context.method == "GET" && context.path like "/v1/public/*" };

@id("no-token-in-query")
forbid(principal, action == Tessera::Action::"http.request", resource)
when { context.query like "*token=*" };

@id("reports-read-only")
forbid(principal, action == Tessera::Action::"file.write", resource)
when { context.path like "/data/reports/*" };

@id("no-admin-keys")
forbid(principal, action == Tessera::Action::"kv.write", resource == Tessera::Bucket::"notes")
when { context.key like "admin/*" };

@id("big-model-budget")
forbid(principal, action == Tessera::Action::"llm.complete", resource == Tessera::Model::"scripted/big")
unless { context has max_tokens && context.max_tokens <= 100 };
"#;

/// A policy directory holding `files` (name, text).
fn policy_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// A clock the test moves.
fn test_clock() -> (Arc<Mutex<SystemTime>>, Clock) {
    let now = Arc::new(Mutex::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    let read = now.clone();
    (now, Arc::new(move || *read.lock().unwrap()))
}

fn runtime_with(host: HostConfig) -> (Runtime, Arc<MemoryAudit>) {
    let audit = Arc::new(MemoryAudit::default());
    let rt = Runtime::new(RuntimeConfig {
        audit: audit.clone(),
        host,
        ..RuntimeConfig::default()
    })
    .unwrap();
    (rt, audit)
}

fn engine(dir: &Path) -> Arc<PolicyEngine> {
    Arc::new(PolicyEngine::load(dir).expect("policies load"))
}

fn denial(audit: &MemoryAudit, capability: &str) -> Vec<tessera_runtime::AuditEvent> {
    audit
        .take()
        .into_iter()
        .filter(|e| e.capability == capability && e.decision == Decision::Deny)
        .collect()
}

#[tokio::test]
async fn http_requests_are_put_to_the_policies_after_the_grants() {
    let server = TestServer::start("127.0.0.1");
    let dir = policy_dir(&[("base.cedar", BASE), ("rules.cedar", RULES)]);
    let (rt, audit) = runtime_with(HostConfig {
        policy: Some(engine(dir.path())),
        ..Default::default()
    });
    let fetch = load(
        &rt,
        "http-fetch",
        &format!(
            "[http]\nallowed_outbound_hosts = [\"http://127.0.0.1:{}\"]\n",
            server.addr.port()
        ),
    );
    // Allowed: a GET under the prefix.
    let r = call_ok(&fetch, "fetch", json!({"url": server.url("/v1/public/a")})).await;
    assert_eq!(r["ok"]["status"], json!(200), "{r}");
    // Denied: another path; and a token in the query.
    for path in ["/v1/private/a", "/v1/public/a?token=s3cret"] {
        let r = call_ok(&fetch, "fetch", json!({"url": server.url(path)})).await;
        let e = r["err"].as_str().unwrap_or_else(|| panic!("{path}: {r}"));
        assert!(e.contains("HttpRequestDenied"), "{e}");
    }
    assert_eq!(server.requests(), vec!["/v1/public/a".to_string()]);
    let denied = denial(&audit, "http");
    assert_eq!(denied.len(), 2, "{denied:?}");
    let detail = |i: usize| denied[i].detail.clone().unwrap_or_default();
    assert!(detail(0).contains("`get-public-only`"), "{}", detail(0));
    assert!(detail(0).contains("rules.cedar:2"), "{}", detail(0));
    assert!(detail(1).contains("`no-token-in-query`"), "{}", detail(1));
    // Without the policies, the grant alone decides: the same request goes.
    let (plain, _) = runtime_with(HostConfig::default());
    let fetch = load(
        &plain,
        "http-fetch",
        &format!(
            "[http]\nallowed_outbound_hosts = [\"http://127.0.0.1:{}\"]\n",
            server.addr.port()
        ),
    );
    let r = call_ok(&fetch, "fetch", json!({"url": server.url("/v1/private/a")})).await;
    assert_eq!(r["ok"]["status"], json!(200), "{r}");
}

#[tokio::test]
async fn file_writes_under_a_path_are_forbidden_and_never_made() {
    let mount = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(mount.path().join("reports")).unwrap();
    let dir = policy_dir(&[("base.cedar", BASE), ("rules.cedar", RULES)]);
    let (rt, audit) = runtime_with(HostConfig {
        policy: Some(engine(dir.path())),
        ..Default::default()
    });
    let fs = load(
        &rt,
        "fs-tool",
        &format!(
            "[[files]]\nhost = \"{}\"\nguest = \"/data\"\nmode = \"rw\"\n",
            mount.path().display()
        ),
    );
    let r = call_ok(
        &fs,
        "write",
        json!({"path": "/data/notes.txt", "contents": "fine"}),
    )
    .await;
    assert_eq!(r, json!({"ok": null}));
    let r = call_ok(
        &fs,
        "write",
        json!({"path": "/data/reports/q3.txt", "contents": "no"}),
    )
    .await;
    assert!(r.get("err").is_some(), "{r}");
    assert!(!mount.path().join("reports/q3.txt").exists());
    // Reading is another action: allowed.
    assert_eq!(
        call_ok(&fs, "read", json!({"path": "/data/notes.txt"})).await,
        json!({"ok": "fine"})
    );
    let denied = denial(&audit, "files");
    assert!(
        denied.iter().any(|e| e.target == "/data/reports/q3.txt"
            && e.detail
                .as_deref()
                .unwrap_or_default()
                .contains("`reports-read-only`")),
        "{denied:?}"
    );
}

#[tokio::test]
async fn key_value_writes_to_some_keys_are_forbidden_reads_are_not() {
    let store = tempfile::tempdir().unwrap();
    let dir = policy_dir(&[("base.cedar", BASE), ("rules.cedar", RULES)]);
    let (rt, audit) = runtime_with(HostConfig {
        policy: Some(engine(dir.path())),
        stores: Some(Arc::new(tessera_store::Stores::new(
            tessera_store::StoreSettings::default(),
            store.path(),
        ))),
        ..Default::default()
    });
    let kv = load(&rt, "kv-tool", "[keyvalue]\nbuckets = [\"notes\"]\n");
    let set = |k: &str| json!({"bucket": "notes", "key": k, "value": "v"});
    let r = call_ok(&kv, "set", set("user/1")).await;
    assert!(r.get("ok").is_some(), "{r}");
    let r = call_ok(&kv, "set", set("admin/root")).await;
    assert_eq!(r, json!({"err": "access denied"}));
    assert_eq!(
        call_ok(&kv, "get", json!({"bucket": "notes", "key": "admin/root"})).await,
        json!({"ok": null}),
        "the denied write must not have happened; reads stay allowed"
    );
    let denied = denial(&audit, "keyvalue");
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0].target, "set notes/admin/root");
    assert!(
        denied[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("`no-admin-keys`")
    );
}

fn llm_host(llm: &ScriptedLlm, policy: Arc<PolicyEngine>) -> HostConfig {
    let p = Provider::new(llm.base_url());
    HostConfig {
        llm: Some(Arc::new(LlmProviders::new(
            [("scripted".to_string(), p)].into(),
        ))),
        policy: Some(policy),
        ..Default::default()
    }
}

fn chat(model: &str, max_tokens: Option<u32>) -> Value {
    let mut request = json!({
        "messages": [
            {"role": "system", "content": "You are terse.", "tool-calls": []},
            {"role": "user", "content": "hi", "tool-calls": []},
        ],
        "tools": [],
        "stop": [],
        "model": model,
    });
    if let Some(m) = max_tokens {
        request["max-tokens"] = json!(m);
    }
    json!({ "request": request })
}

#[tokio::test]
async fn a_model_above_a_token_budget_is_forbidden() {
    let llm = ScriptedLlm::start([Rule::text("fine")]);
    let dir = policy_dir(&[("base.cedar", BASE), ("rules.cedar", RULES)]);
    let (rt, audit) = runtime_with(llm_host(&llm, engine(dir.path())));
    let c = load(&rt, "llm-probe", "[llm]\nmodels = [\"scripted/*\"]\n");
    let v = call_ok(&c, "chat", chat("scripted/big", Some(50))).await;
    assert!(v.get("ok").is_some(), "{v}");
    assert_eq!(llm.request_count(), 1);
    for asked in [Some(500), None] {
        let v = call_ok(&c, "chat", chat("scripted/big", asked)).await;
        let why = v["err"]["denied"].as_str().unwrap_or_else(|| panic!("{v}"));
        assert!(why.contains("`big-model-budget`"), "{why}");
    }
    // Another model has no such budget.
    let v = call_ok(&c, "chat", chat("scripted/small", Some(500))).await;
    assert!(v.get("ok").is_some(), "{v}");
    assert_eq!(
        llm.request_count(),
        2,
        "a denied completion reached the provider"
    );
    assert_eq!(denial(&audit, "llm").len(), 2);
}

#[tokio::test]
async fn token_quotas_are_spent_then_reset_with_the_window() {
    let llm = ScriptedLlm::start([Rule::text("fine")]);
    let quotas = r#"
[[quota]]
id = "probe-tokens"
actions = ["llm.complete"]
components = ["llm-probe"]
unit = "tokens"
limit = 8
window = "1h"
"#;
    let dir = policy_dir(&[("base.cedar", BASE), ("quotas.toml", quotas)]);
    let (now, clock) = test_clock();
    let policy = Arc::new(PolicyEngine::load(dir.path()).unwrap().with_clock(clock));
    let (rt, audit) = runtime_with(llm_host(&llm, policy));
    let c = load(&rt, "llm-probe", "[llm]\nmodels = [\"scripted/*\"]\n");
    // Each completion uses 5 tokens (4 prompt, 1 completion): two fit in
    // 8, the third finds the window spent.
    for _ in 0..2 {
        let v = call_ok(&c, "chat", chat("scripted/m", None)).await;
        assert!(v.get("ok").is_some(), "{v}");
    }
    let v = call_ok(&c, "chat", chat("scripted/m", None)).await;
    let why = v["err"]["denied"].as_str().unwrap_or_else(|| panic!("{v}"));
    assert!(
        why.contains("quota `probe-tokens` is spent: 10 of 8 tokens"),
        "{why}"
    );
    assert_eq!(llm.request_count(), 2);
    assert_eq!(denial(&audit, "llm").len(), 1);
    // The next window starts afresh.
    *now.lock().unwrap() += Duration::from_secs(3600);
    let v = call_ok(&c, "chat", chat("scripted/m", None)).await;
    assert!(v.get("ok").is_some(), "{v}");
    assert_eq!(llm.request_count(), 3);
}

#[tokio::test]
async fn request_quotas_count_per_component() {
    let server = TestServer::start("127.0.0.1");
    let quotas = r#"
[[quota]]
id = "two-per-minute"
actions = ["http"]
limit = 2
window = "1m"
"#;
    let dir = policy_dir(&[("base.cedar", BASE), ("quotas.toml", quotas)]);
    let (now, clock) = test_clock();
    let policy = Arc::new(PolicyEngine::load(dir.path()).unwrap().with_clock(clock));
    let (rt, _) = runtime_with(HostConfig {
        policy: Some(policy),
        ..Default::default()
    });
    let grant = format!(
        "[http]\nallowed_outbound_hosts = [\"http://127.0.0.1:{}\"]\n",
        server.addr.port()
    );
    let fetch = load(&rt, "http-fetch", &grant);
    let status = |r: Value| r["ok"]["status"].clone();
    for _ in 0..2 {
        let r = call_ok(&fetch, "fetch", json!({"url": server.url("/a")})).await;
        assert_eq!(status(r), json!(200));
    }
    let r = call_ok(&fetch, "fetch", json!({"url": server.url("/a")})).await;
    assert!(
        r["err"].as_str().unwrap().contains("HttpRequestDenied"),
        "{r}"
    );
    assert_eq!(server.requests().len(), 2);
    *now.lock().unwrap() += Duration::from_secs(60);
    let r = call_ok(&fetch, "fetch", json!({"url": server.url("/a")})).await;
    assert_eq!(status(r), json!(200));
}

fn caller(component: &str) -> Caller {
    Caller {
        component: component.into(),
        digest: "sha256:00".into(),
        function: "run".into(),
        agent: None,
        plan: None,
        step: None,
        token: None,
    }
}

fn get(url: &str) -> Interaction {
    Interaction::Http {
        method: "GET".into(),
        url: url.into(),
        headers: Default::default(),
    }
}

#[test]
fn nothing_is_allowed_that_no_policy_permits() {
    let only_fetch = r#"
@id("fetch-may-get")
permit(principal == Tessera::Component::"fetch", action == Tessera::Action::"http.request", resource);
"#;
    let dir = policy_dir(&[("p.cedar", only_fetch)]);
    let e = PolicyEngine::load(dir.path()).unwrap();
    let v = e.authorize(&caller("fetch"), &get("https://a.example/x"));
    assert!(v.allowed);
    assert_eq!(v.policies, vec!["fetch-may-get".to_string()]);
    let v = e.authorize(&caller("other"), &get("https://a.example/x"));
    assert!(!v.allowed);
    assert!(v.reason.unwrap().contains("no policy permits http.request"));
}

#[test]
fn a_policy_that_fails_to_evaluate_denies_and_says_why() {
    // Validates (types are right) but overflows when evaluated.
    let overflowing = r#"
@id("overflows")
forbid(principal, action == Tessera::Action::"llm.complete", resource)
when { context has max_tokens && context.max_tokens * 9223372036854775807 < 0 };
"#;
    let dir = policy_dir(&[("base.cedar", BASE), ("o.cedar", overflowing)]);
    let e = PolicyEngine::load(dir.path()).unwrap();
    let asked = |max_tokens| Interaction::Llm {
        provider: "p".into(),
        model: "m".into(),
        max_tokens,
        messages: 1,
        tools: vec![],
        tokens_used: 0,
    };
    let v = e.authorize(&caller("c"), &asked(Some(3)));
    assert!(!v.allowed, "an evaluation error must deny");
    assert_eq!(v.policies, vec!["overflows".to_string()]);
    let why = v.reason.unwrap();
    assert!(why.contains("failed to evaluate"), "{why}");
    assert!(why.contains("o.cedar:2"), "{why}");
    // Where the policy does not reach the overflow, it decides normally.
    assert!(e.authorize(&caller("c"), &asked(None)).allowed);
}

#[test]
fn agents_are_in_their_component() {
    let policies = r#"
@id("base")
permit(principal, action, resource);

@id("planner-agents-no-tools")
forbid(principal in Tessera::Component::"planner", action == Tessera::Action::"tool.call", resource);
"#;
    let dir = policy_dir(&[("p.cedar", policies)]);
    let e = PolicyEngine::load(dir.path()).unwrap();
    let tool = Interaction::Tool {
        name: "db__query".into(),
        arguments: "{}".into(),
    };
    let mut agent = caller("planner");
    agent.agent = Some("planner-7".into());
    assert!(!e.authorize(&agent, &tool).allowed);
    assert!(!e.authorize(&caller("planner"), &tool).allowed);
    assert!(e.authorize(&caller("writer"), &tool).allowed);
}

#[test]
fn policies_reload_when_their_files_change_and_a_bad_reload_keeps_them() {
    let dir = policy_dir(&[("base.cedar", BASE)]);
    let e = PolicyEngine::load(dir.path()).unwrap();
    let url = "https://api.example/v1/private";
    assert!(e.authorize(&caller("c"), &get(url)).allowed);
    assert!(e.reload_if_changed().is_none(), "nothing changed yet");
    std::fs::write(dir.path().join("rules.cedar"), RULES).unwrap();
    let reloaded = e.reload_if_changed().expect("a change is seen").unwrap();
    assert_eq!(reloaded.len(), 6);
    assert!(!e.authorize(&caller("c"), &get(url)).allowed);
    // A broken file: the reload fails, naming it, and the rules stay.
    std::fs::write(dir.path().join("broken.cedar"), "permit(principal, action").unwrap();
    let err = e
        .reload_if_changed()
        .expect("a change is seen")
        .unwrap_err();
    assert!(err.to_string().contains("broken.cedar:1:"), "{err}");
    assert!(!e.authorize(&caller("c"), &get(url)).allowed);
    assert!(e.reload_if_changed().is_none(), "reported once per change");
}

#[test]
fn policy_files_that_do_not_load_name_the_file_and_position() {
    // A syntax error.
    let dir = policy_dir(&[(
        "a.cedar",
        "permit(principal, action, resource);\nforbid(principal action, resource);\n",
    )]);
    let e = Policies::load(dir.path()).unwrap_err();
    let PolicyError::Invalid(problems) = &e else {
        panic!("{e}")
    };
    assert!(problems[0].file.ends_with("a.cedar"));
    assert_eq!(problems[0].line, 2, "{e}");
    assert!(problems[0].column > 0, "{e}");
    // Not in the schema: a misspelt attribute, an unknown action.
    let dir = policy_dir(&[(
        "b.cedar",
        "permit(principal, action, resource);\n\nforbid(principal, action == Tessera::Action::\"http.request\", resource)\nwhen { context.mehtod == \"POST\" };\n",
    )]);
    let e = Policies::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("b.cedar:4:"), "{e}");
    assert!(e.contains("mehtod"), "{e}");
    let dir = policy_dir(&[(
        "c.cedar",
        "forbid(principal, action == Tessera::Action::\"http.send\", resource);\n",
    )]);
    let e = Policies::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("c.cedar:1:"), "{e}");
    assert!(e.contains("http.send"), "{e}");
    // Quotas: a bad window, an unknown action, a duplicate id.
    let dir = policy_dir(&[
        ("base.cedar", BASE),
        (
            "quotas.toml",
            "[[quota]]\nid = \"q\"\nactions = [\"http\"]\nlimit = 1\nwindow = \"soon\"\n",
        ),
    ]);
    let e = Policies::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("quotas.toml:5:"), "{e}");
    assert!(e.contains("window `soon`"), "{e}");
    let dir = policy_dir(&[
        ("base.cedar", BASE),
        (
            "quotas.toml",
            "[[quota]]\nid = \"q\"\nactions = [\"htp\"]\nlimit = 1\nwindow = \"1m\"\n[[quota]]\nid = \"q\"\nactions = [\"http\"]\nlimit = 1\nwindow = \"1m\"\n",
        ),
    ]);
    let e = Policies::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("unknown action `htp`"), "{e}");
    assert!(e.contains("the id is used twice"), "{e}");
    // Two policies with one id.
    let dir = policy_dir(&[
        (
            "a.cedar",
            "@id(\"x\")\npermit(principal, action, resource);\n",
        ),
        (
            "b.cedar",
            "@id(\"x\")\nforbid(principal, action, resource);\n",
        ),
    ]);
    let e = Policies::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("policy id `x` is already used"), "{e}");
    // An empty directory.
    let dir = policy_dir(&[]);
    let e = Policies::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("no `*.cedar` policy files"), "{e}");
}

#[test]
fn the_example_policies_load() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies");
    let p = Policies::load(&examples).unwrap_or_else(|e| panic!("{e}"));
    assert!(p.len() >= 4, "{:?}", p.ids());
    assert!(!p.quotas().is_empty());
}
