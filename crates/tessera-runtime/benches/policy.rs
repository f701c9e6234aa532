//! What boundary policies cost, each against a baseline in the same run.
//!
//! * `hello.greet`: a call that makes no host interaction, without and
//!   with 20 policies in force (the call path itself).
//! * `kv-tool get`: a call that makes one policy-checked interaction
//!   (`kv.read` on an embedded bucket), without and with the 20 policies:
//!   the difference is the cost of one policy-checked interaction.
//! * `authorize`: the engine alone deciding that interaction (request and
//!   entities built, 20 policies evaluated, quotas checked).
//!
//! Run: `cargo bench -p tessera-runtime --bench policy` (`BENCH_ROUNDS`
//! changes the number of interleaved rounds). Medians over interleaved
//! rounds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tessera_runtime::policy::{Caller, Interaction, PolicyEngine};
use tessera_runtime::{Grants, HostConfig, LoadedComponent, Runtime, RuntimeConfig};

/// A base `permit` and 19 `forbid` policies over every kind of attribute,
/// none of which matches the benchmark's requests (so every one is
/// evaluated).
const POLICIES: &str = r#"
@id("base") permit(principal, action, resource);
@id("p1") forbid(principal, action == Tessera::Action::"http.request", resource) unless { context.method == "GET" && context.path like "/v1/public/*" };
@id("p2") forbid(principal, action == Tessera::Action::"http.request", resource) when { context.query like "*token=*" };
@id("p3") forbid(principal, action == Tessera::Action::"http.request", resource) when { resource.hasTag("x-impersonate") };
@id("p4") forbid(principal, action in Tessera::Action::"file", resource) when { context.path like "/secrets/*" };
@id("p5") forbid(principal, action == Tessera::Action::"file.write", resource) when { context.operation == "unlink" };
@id("p6") forbid(principal, action in Tessera::Action::"kv", resource == Tessera::Bucket::"vault");
@id("p7") forbid(principal, action == Tessera::Action::"kv.write", resource) when { context.key like "lock/*" };
@id("p8") forbid(principal, action in Tessera::Action::"kv", resource) when { context.operation == "list" && context.bucket == "users" };
@id("p9") forbid(principal, action in Tessera::Action::"kv", resource) when { context.key like "admin/*" };
@id("p10") forbid(principal, action == Tessera::Action::"llm.complete", resource) when { context.provider == "untrusted" };
@id("p11") forbid(principal, action == Tessera::Action::"llm.complete", resource) when { context has max_tokens && context.max_tokens > 4000 };
@id("p12") forbid(principal, action == Tessera::Action::"llm.complete", resource) when { context.tools.contains("shell") };
@id("p13") forbid(principal, action == Tessera::Action::"nn.load", resource == Tessera::Model::"face-id");
@id("p14") forbid(principal, action == Tessera::Action::"tool.call", resource) when { resource.hasTag("sql") && resource.getTag("sql") like "*DROP *" };
@id("p15") forbid(principal == Tessera::Component::"quarantined", action, resource);
@id("p16") forbid(principal, action, resource) when { context.function == "purge" };
@id("p17") forbid(principal, action, resource) when { context has agent && context.agent == "rogue" };
@id("p18") forbid(principal, action, resource) when { context has plan && context.plan == "frozen" };
@id("p19") forbid(principal, action, resource) when { context has token && context.token == "readonly" };
"#;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn runtime(
    rt: &tokio::runtime::Runtime,
    store: &std::path::Path,
    policy: bool,
    dir: &std::path::Path,
) -> Runtime {
    let _guard = rt.enter();
    Runtime::new(RuntimeConfig {
        host: HostConfig {
            stores: Some(Arc::new(tessera_store::Stores::new(
                tessera_store::StoreSettings::default(),
                store,
            ))),
            policy: policy.then(|| Arc::new(PolicyEngine::load(dir).unwrap())),
            ..HostConfig::default()
        },
        ..RuntimeConfig::default()
    })
    .unwrap()
}

fn calls(
    rt: &tokio::runtime::Runtime,
    c: &LoadedComponent,
    f: &str,
    args: &serde_json::Value,
    n: usize,
) -> Duration {
    rt.block_on(async {
        let t = Instant::now();
        for _ in 0..n {
            let o = c.call_json(f, args).await.unwrap();
            assert!(o.result.is_ok());
        }
        t.elapsed() / n as u32
    })
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let tokio_rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bench.cedar"), POLICIES).unwrap();
    let store = tempfile::tempdir().unwrap();
    let engine = PolicyEngine::load(dir.path()).unwrap();
    assert_eq!(engine.policies().len(), 20);

    let plain = runtime(&tokio_rt, store.path(), false, dir.path());
    let governed = runtime(&tokio_rt, store.path(), true, dir.path());
    let hello = tessera_test_support::component("hello");
    let kv = tessera_test_support::component("kv-tool");
    let kv_grants = || {
        Grants::from_toml(
            "[keyvalue]\nbuckets = [\"notes\"]\n",
            "bench",
            std::path::Path::new("."),
        )
        .unwrap()
    };
    let (h0, h1) = (
        plain.load_file(&hello, Grants::deny_all()).unwrap(),
        governed.load_file(&hello, Grants::deny_all()).unwrap(),
    );
    let (k0, k1) = (
        plain.load_file(&kv, kv_grants()).unwrap(),
        governed.load_file(&kv, kv_grants()).unwrap(),
    );
    let greet = json!({"name": "bench"});
    let get = json!({"bucket": "notes", "key": "user/1"});
    // Warm up both paths (instance pools, the store file).
    for c in [&h0, &h1] {
        calls(&tokio_rt, c, "greet", &greet, 200);
    }
    for c in [&k0, &k1] {
        calls(&tokio_rt, c, "get", &get, 100);
    }
    let caller = Caller {
        component: "kv-tool".into(),
        digest: "sha256:00".into(),
        function: "get".into(),
        agent: None,
        plan: None,
        step: None,
        token: None,
    };
    let asked = Interaction::Kv {
        operation: "get".into(),
        bucket: "notes".into(),
        key: "user/1".into(),
        write: false,
    };
    assert!(engine.authorize(&caller, &asked).allowed);

    let (mut hp, mut hg, mut kp, mut kg, mut auth) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        hp.push(calls(&tokio_rt, &h0, "greet", &greet, 1000));
        hg.push(calls(&tokio_rt, &h1, "greet", &greet, 1000));
        kp.push(calls(&tokio_rt, &k0, "get", &get, 300));
        kg.push(calls(&tokio_rt, &k1, "get", &get, 300));
        let t = Instant::now();
        for _ in 0..2000 {
            std::hint::black_box(engine.authorize(&caller, &asked));
        }
        auth.push(t.elapsed() / 2000);
    }
    let (hp, hg, kp, kg, auth) = (median(hp), median(hg), median(kp), median(kg), median(auth));
    let pct = |a: Duration, b: Duration| (b.as_secs_f64() / a.as_secs_f64() - 1.0) * 100.0;
    println!("medians of {rounds} interleaved rounds; 20 policies in force in `with`");
    println!("                                  without       with      added");
    println!(
        "hello.greet (no interaction)   {:>9.1} µs {:>9.1} µs  {:+.1}%",
        us(hp),
        us(hg),
        pct(hp, hg)
    );
    println!(
        "kv-tool get (1 kv.read)        {:>9.1} µs {:>9.1} µs  {:+.1} µs per policy-checked interaction ({:+.1}%)",
        us(kp),
        us(kg),
        us(kg) - us(kp),
        pct(kp, kg)
    );
    println!(
        "authorize alone (20 policies)                {:>9.2} µs",
        us(auth)
    );
}
