//! What a vector query costs (`docs/retrieval.md`): the `vector-index`
//! component over 10,000 384-dimensional vectors (MiniLM's size) in the
//! embedded store, each query a fresh instance that reads the index from
//! `wasi:keyvalue`.
//!
//! Measured, interleaved so they see the same machine noise:
//!
//! * `component`: `vector-index#query`, k = 5, through
//!   `LoadedComponent::call_json`;
//! * `component, recorded`: the same through the journal (the blocks it
//!   reads are recorded, so a replay needs no store);
//! * `native scan` (the baseline): the exact cosine top 5 over the same
//!   vectors held in memory as f32, in this process — what a search costs
//!   with nothing to load.
//!
//! Run: `cargo bench -p tessera-runtime --bench retrieval` (`BENCH_ROUNDS`:
//! queries of each, default 200; `BENCH_VECTORS`, default 10000).
//! Medians and p95s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tessera_runtime::{Grants, HostConfig, Runtime, RuntimeConfig};

const DIMS: usize = 384;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// A deterministic pseudo-random vector.
fn vector(seed: u64) -> Vec<f32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..DIMS)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) as f64 / (1u64 << 31) as f64 - 0.5) as f32
        })
        .collect()
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let count: usize = std::env::var("BENCH_VECTORS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().expect("temporary directory");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.path().join("cache")),
        host: HostConfig {
            stores: Some(Arc::new(tessera_store::Stores::new(
                tessera_store::StoreSettings::default(),
                dir.path(),
            ))),
            ..Default::default()
        },
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let grants = Grants::from_toml(
        "[keyvalue]\nbuckets = [\"bench\"]\n[limits]\ntimeout_ms = 600000\n",
        "bench.toml",
        dir.path(),
    )
    .expect("manifest");
    let index = runtime
        .load_file(&tessera_test_support::component("vector-index"), grants)
        .expect("vector-index");
    let journal = Arc::new(
        tessera_journal::JournalStore::open(&dir.path().join("journal")).expect("journal"),
    );
    let vectors: Vec<Vec<f32>> = (0..count as u64).map(vector).collect();
    let units: Vec<Vec<f32>> = vectors.iter().map(|v| unit(v)).collect();
    let names = ["component", "component, recorded", "native scan"];
    let mut times = vec![Vec::with_capacity(rounds); names.len()];
    rt.block_on(async {
        let start = Instant::now();
        for (b, chunk) in vectors.chunks(500).enumerate() {
            let entries: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(i, v)| json!({"id": format!("p{}", b * 500 + i), "vector": v}))
                .collect();
            let o = index
                .call_json(
                    "vector-index#upsert",
                    &json!({"bucket": "bench", "index": "b", "entries": entries}),
                )
                .await
                .expect("upsert");
            o.result.expect("upsert result");
        }
        println!(
            "indexed {count} vectors of {DIMS} dimensions in {:.1} s",
            start.elapsed().as_secs_f64()
        );
        for r in 0..rounds + 10 {
            let query = vector(1_000_000 + r as u64);
            let args = json!({"bucket": "bench", "index": "b", "vector": query, "k": 5});

            let start = Instant::now();
            let o = index
                .call_json("vector-index#query", &args)
                .await
                .expect("query");
            let component = start.elapsed();
            let hits = o.result.expect("query result");

            let start = Instant::now();
            let (_, o) =
                tessera_journal::record_call(&journal, &index, "vector-index#query", &args)
                    .await
                    .expect("record");
            let recorded = start.elapsed();
            assert_eq!(o.result.expect("recorded result"), hits);

            let start = Instant::now();
            let q = unit(&query);
            let mut scored: Vec<(f32, usize)> = units
                .iter()
                .enumerate()
                .map(|(i, v)| (v.iter().zip(&q).map(|(a, b)| a * b).sum(), i))
                .collect();
            scored.select_nth_unstable_by(5, |a, b| b.0.total_cmp(&a.0));
            scored.truncate(5);
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            let native = start.elapsed();
            // The component answers the exact top 5.
            let ids: Vec<String> = scored.iter().map(|(_, i)| format!("p{i}")).collect();
            let got: Vec<String> = hits["ok"]
                .as_array()
                .expect("hits")
                .iter()
                .map(|h| h["id"].as_str().expect("id").to_string())
                .collect();
            assert_eq!(got, ids, "query {r}");
            if r >= 10 {
                times[0].push(component);
                times[1].push(recorded);
                times[2].push(native);
            }
        }
    });
    println!("{rounds} queries, k = 5, over {count} vectors:");
    let base = {
        let mut t = times[2].clone();
        t.sort();
        percentile(&t, 0.5)
    };
    for (name, mut t) in names.iter().zip(times) {
        t.sort();
        let (p50, p95) = (percentile(&t, 0.5), percentile(&t, 0.95));
        println!(
            "  {name:<22} p50 {:>8.3} ms  p95 {:>8.3} ms  ({:.1}x the native scan's median)",
            p50.as_secs_f64() * 1e3,
            p95.as_secs_f64() * 1e3,
            p50.as_secs_f64() / base.as_secs_f64()
        );
    }
}
