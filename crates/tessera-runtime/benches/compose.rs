//! What a call across an `[imports]` link costs (`docs/composition.md`).
//!
//! Three calls, interleaved so they see the same machine noise, each in
//! fresh instances through `LoadedComponent::call_json`:
//!
//! * `direct`: the provider's `count`, called by the host (one instance);
//! * `linked`: the consumer's `report`, which makes four linked calls to
//!   the provider (`upper`, `count`, `longest`, `signature`): five
//!   instances in all;
//! * `linked, recorded`: the same through the journal, which records the
//!   consumer's run and each provider call as a run of its own.
//!
//! The baseline is `direct`: a linked call costs about
//! (`linked` − one consumer instance) / 4.
//!
//! Run: `cargo bench -p tessera-runtime --bench compose` (`BENCH_ROUNDS`:
//! calls of each, default 300). Medians and p99s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tessera_runtime::{Grants, Runtime, RuntimeConfig};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir().expect("temporary directory");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.path().join("cache")),
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let provider_file = tessera_test_support::component("text-provider");
    let provider = runtime
        .load_file(&provider_file, Grants::deny_all())
        .expect("provider");
    let manifest = format!(
        "[imports]\n\"example:text/transform\" = \"{}\"\n",
        provider_file.display()
    );
    let grants = Grants::from_toml(&manifest, "consumer.toml", dir.path()).expect("manifest");
    let consumer = runtime
        .load_file(&tessera_test_support::component("text-consumer"), grants)
        .expect("consumer");
    let journal = Arc::new(
        tessera_journal::JournalStore::open(&dir.path().join("journal")).expect("journal"),
    );
    let text = json!({ "text": "Tessera links components together" });
    let names = ["direct", "linked", "linked, recorded"];
    let mut times = vec![Vec::with_capacity(rounds); names.len()];
    rt.block_on(async {
        for _ in 0..10 {
            let o = consumer.call_json("report", &text).await.expect("call");
            assert_eq!(o.result.expect("report")["counts"]["words"], 4);
        }
        for _ in 0..rounds {
            let start = Instant::now();
            let o = provider.call_json("count", &text).await.expect("call");
            times[0].push(start.elapsed());
            assert!(o.result.is_ok());
            let start = Instant::now();
            let o = consumer.call_json("report", &text).await.expect("call");
            times[1].push(start.elapsed());
            assert!(o.result.is_ok());
            let start = Instant::now();
            let (_, o) = tessera_journal::record_call(&journal, &consumer, "report", &text)
                .await
                .expect("record");
            times[2].push(start.elapsed());
            assert!(o.result.is_ok());
        }
    });
    journal.flush();
    let mut base = None;
    println!(
        "text-consumer `report` (4 linked calls) against text-provider `count` ({rounds} rounds, interleaved)"
    );
    for (name, t) in names.iter().zip(times.iter_mut()) {
        t.sort();
        let (p50, p99) = (percentile(t, 0.5), percentile(t, 0.99));
        let b = *base.get_or_insert(p50);
        println!(
            "  {name:<17} p50 {:>8.1} µs   p99 {:>8.1} µs   {:>5.1}x direct",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            p50.as_secs_f64() / b.as_secs_f64(),
        );
    }
}
