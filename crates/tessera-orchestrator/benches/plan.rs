//! What a plan adds to the calls it makes, measured against the same calls
//! made directly in the same run.
//!
//! * **direct**: `hello.greet` called N times in a row, each call journaled
//!   (`record_call`), as a program that chains them itself would.
//! * **plan chain**: a plan of N steps, each `hello.greet` of the previous
//!   step's output — so each step waits for the one before: its result
//!   committed durably to the embedded store, its journal run held, the
//!   next step's arguments computed by a jq template.
//! * **plan fan-out**: one step with `for_each` over N items (concurrency 8):
//!   one durable commit per item.
//! * **a 1,000-step plan end to end**: the chain with N = 1,000, from
//!   `Runner::run` to the finished record (parsing and validation
//!   included, as `plan run` does it).
//!
//! Per-step overhead = (plan − direct) / N, medians of `BENCH_ROUNDS`
//! rounds (default 5). Run: `cargo bench -p tessera-orchestrator --bench plan`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tessera_journal::{JournalStore, record_call};
use tessera_orchestrator::local::{FileComponents, LocalCaller};
use tessera_orchestrator::plan::Plan;
use tessera_orchestrator::progress::{PLANS_BUCKET, Progress, RunStatus};
use tessera_orchestrator::run::Runner;
use tessera_runtime::{Grants, Runtime, RuntimeConfig};
use tessera_store::Embedded;
use tokio_util::sync::CancellationToken;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn chain(n: usize) -> String {
    let mut s = String::from(
        "[steps.s0]\ncomponent = \"hello.wasm\"\nfunction = \"greet\"\nargs = { name = \"x\" }\n",
    );
    for i in 1..n {
        s.push_str(&format!(
            "[steps.s{i}]\ncomponent = \"hello.wasm\"\nfunction = \"greet\"\nargs = {{ name = \"${{{{ .steps.s{}.output | .[0:8] }}}}\" }}\n",
            i - 1
        ));
    }
    s
}

fn fan_out() -> &'static str {
    "[inputs.items]\ntype = \"array\"\n[steps.each]\ncomponent = \"hello.wasm\"\nfunction = \"greet\"\n\
     for_each = \".inputs.items\"\nconcurrency = 8\nargs = { name = \"${{ .item }}\" }\n"
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let n: usize = std::env::var("BENCH_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let hello_path = tessera_test_support::component("hello");
    let components = tessera_test_support::components_dir();
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(JournalStore::open(dir.path()).unwrap());
    let store = Arc::new(Embedded::open(&dir.path().join("store.redb")).unwrap());
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let hello = runtime.load_file(&hello_path, Grants::deny_all()).unwrap();
    let caller = LocalCaller::new(FileComponents::new(runtime.clone()), journal.clone());
    let runner = Runner::new(Progress::new(store, PLANS_BUCKET), Arc::new(caller));
    let chain_plan = Plan::from_toml(&chain(n), "chain", &components, "chain").unwrap();
    let fan_plan = Plan::from_toml(fan_out(), "fan", &components, "fan").unwrap();
    let items: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();

    let (mut direct, mut planned, mut fanned) = (Vec::new(), Vec::new(), Vec::new());
    rt.block_on(async {
        // Warm-up: the component's first instances, the store's first pages.
        for _ in 0..20 {
            record_call(&journal, &hello, "greet", &json!({"name": "w"}))
                .await
                .unwrap();
        }
        for _ in 0..rounds {
            let t = Instant::now();
            let mut name = "x".to_string();
            for _ in 0..n {
                let (_, o) = record_call(&journal, &hello, "greet", &json!({ "name": name }))
                    .await
                    .unwrap();
                let out = o.result.unwrap();
                name = out.as_str().unwrap_or("").chars().take(8).collect();
            }
            direct.push(t.elapsed());

            let t = Instant::now();
            let rec = runner
                .run(&chain_plan, &json!({}), None, CancellationToken::new())
                .await
                .unwrap();
            planned.push(t.elapsed());
            assert_eq!(rec.status, RunStatus::Succeeded);

            let t = Instant::now();
            let rec = runner
                .run(
                    &fan_plan,
                    &json!({ "items": items }),
                    None,
                    CancellationToken::new(),
                )
                .await
                .unwrap();
            fanned.push(t.elapsed());
            assert_eq!(rec.status, RunStatus::Succeeded);
        }
    });
    let (d, p, f) = (median(direct), median(planned), median(fanned));
    println!("{n} steps, {rounds} rounds (medians)\n");
    println!("| path | total | per call or step |");
    println!("| --- | --- | --- |");
    println!(
        "| direct journaled calls | {:.1} ms | {:.3} ms |",
        ms(d),
        ms(d) / n as f64
    );
    println!(
        "| plan, chain of {n} steps | {:.1} ms | {:.3} ms |",
        ms(p),
        ms(p) / n as f64
    );
    println!(
        "| plan, fan-out of {n} items (concurrency 8) | {:.1} ms | {:.3} ms |",
        ms(f),
        ms(f) / n as f64
    );
    println!(
        "\nper-step overhead of the chain: {:.3} ms ({:.1}x the direct call)",
        (ms(p) - ms(d)) / n as f64,
        ms(p) / ms(d)
    );

    // A 1,000-step plan end to end, parsing included.
    let text = chain(1000);
    let big: Vec<Duration> = (0..rounds.min(3))
        .map(|_| {
            rt.block_on(async {
                let t = Instant::now();
                let plan = Plan::from_toml(&text, "big", &components, "big").unwrap();
                let parsed = t.elapsed();
                let rec = runner
                    .run(&plan, &json!({}), None, CancellationToken::new())
                    .await
                    .unwrap();
                assert_eq!(rec.status, RunStatus::Succeeded);
                println!(
                    "1,000-step plan: parsed in {:.0} ms, ran in {:.0} ms",
                    ms(parsed),
                    ms(t.elapsed() - parsed)
                );
                t.elapsed()
            })
        })
        .collect();
    println!(
        "1,000-step plan end to end: {:.0} ms (median)",
        ms(median(big))
    );
}
