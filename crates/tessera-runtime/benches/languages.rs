//! The catalog tool (`wit/example/catalog.wit`) in Rust, Python,
//! JavaScript, C and Go, side by side: the same `summarize` call on the same
//! items through `LoadedComponent::call_json` (a fresh instance per call,
//! the whole path), interleaved so every language sees the same machine
//! noise. The baseline is the Rust component.
//!
//! Run: `cargo bench -p tessera-runtime --bench languages` (`BENCH_ROUNDS`:
//! calls per language, default 300). Medians and p99s.

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
    let cache = tempfile::tempdir().expect("temporary directory");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let languages = ["rust", "c", "go", "js", "python"];
    let loaded: Vec<_> = languages
        .iter()
        .map(|l| {
            let file = tessera_test_support::component(&format!("example-{l}"));
            let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            let c = runtime
                .load_file(&file, Grants::deny_all())
                .unwrap_or_else(|e| panic!("{l}: {e}"));
            (*l, size, c)
        })
        .collect();
    let items: Vec<_> = (0..20)
        .map(|i| {
            json!({
                "name": format!("item-{i}"),
                "quantity": i * 7 % 13,
                "price-cents": if i % 3 == 0 { serde_json::Value::Null } else { json!(100 + i) },
                "tags": [format!("t{}", i % 4), "stock"],
            })
        })
        .collect();
    let args = json!({ "items": items });
    let mut times = vec![Vec::with_capacity(rounds); loaded.len()];
    let mut fuel = vec![0u64; loaded.len()];
    rt.block_on(async {
        let expected = loaded[0]
            .2
            .call_json("summarize", &args)
            .await
            .expect("call")
            .result
            .expect("result");
        for (i, (l, _, c)) in loaded.iter().enumerate() {
            for _ in 0..10 {
                let o = c.call_json("summarize", &args).await.expect("call");
                assert_eq!(o.result.as_ref().ok(), Some(&expected), "{l}");
                fuel[i] = o.fuel_consumed;
            }
        }
        for _ in 0..rounds {
            for (i, (_, _, c)) in loaded.iter().enumerate() {
                let start = Instant::now();
                let o = c.call_json("summarize", &args).await.expect("call");
                times[i].push(start.elapsed());
                assert!(o.result.is_ok());
            }
        }
    });
    let mut base = None;
    println!("summarize of 20 items, fresh instance per call ({rounds} rounds, interleaved)");
    for (i, (l, size, _)) in loaded.iter().enumerate() {
        let t = &mut times[i];
        t.sort();
        let (p50, p99) = (percentile(t, 0.5), percentile(t, 0.99));
        let b = *base.get_or_insert(p50);
        println!(
            "  {l:<7} {:>9} bytes   p50 {:>8.1} µs   p99 {:>8.1} µs   {:>5.1}x rust   fuel {}",
            size,
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            p50.as_secs_f64() / b.as_secs_f64(),
            fuel[i]
        );
    }
}
