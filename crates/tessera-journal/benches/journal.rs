//! Recording overhead and replay time, each against the unrecorded call in
//! the same run.
//!
//! * `hello.greet`: a pure function (no host interaction): the fixed cost
//!   of recording a run (header, end record).
//! * `hello.busy-host(2500)`: 10,000 host interactions per call (wall clock,
//!   monotonic clock, random, log — 2,500 rounds of 4).
//!
//! For each: unrecorded call, recorded call (journal on disk, redb, written
//! by the background writer), and offline replay of a recorded run.
//!
//! Overhead is the median of per-pair ratios (each iteration runs the plain
//! and the recorded call back to back, alternating which goes first).
//!
//! Run: `cargo bench -p tessera-journal --bench journal`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tessera_journal::{JournalStore, ReplayCursor, record_call, replay};
use tessera_runtime::{CallOptions, Grants, LoadedComponent, Runtime, RuntimeConfig};

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

struct Case {
    name: &'static str,
    function: &'static str,
    args: Value,
    rounds: usize,
    per_round: usize,
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let path = tessera_test_support::component("hello");
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let hello: LoadedComponent = runtime.load_file(&path, Grants::deny_all()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(JournalStore::open(dir.path()).unwrap());

    let cases = [
        Case {
            name: "hello.greet",
            function: "greet",
            args: json!({"name": "Ada"}),
            rounds: 20,
            per_round: 250,
        },
        Case {
            name: "hello.busy-host(10k calls)",
            function: "busy-host",
            args: json!({"rounds": 2500}),
            rounds: 10,
            per_round: 10,
        },
    ];
    println!(
        "{:<28} {:>12} {:>13} {:>9} {:>13} {:>8} {:>13} {:>8}",
        "case",
        "plain p50",
        "recorded p50",
        "overhead",
        "replay-exec",
        "/plain",
        "replay-e2e",
        "/plain"
    );
    for case in cases {
        let (plain, recorded, executed, replayed) = rt.block_on(async {
            let mut plain = Vec::new();
            let mut recorded = Vec::new();
            let mut executed = Vec::new();
            let mut replayed = Vec::new();
            let mut run_ids = Vec::new();
            // Warm-up.
            for _ in 0..5 {
                hello.call_json(case.function, &case.args).await.unwrap();
                let (id, _) = record_call(&store, &hello, case.function, &case.args)
                    .await
                    .unwrap();
                run_ids.push(id);
            }
            store.flush();
            // Paired samples: each iteration runs both, in alternating order,
            // so both see the same moment of machine noise.
            for i in 0..case.rounds * case.per_round {
                for side in [i % 2, 1 - i % 2] {
                    let t = Instant::now();
                    if side == 0 {
                        let o = hello.call_json(case.function, &case.args).await.unwrap();
                        plain.push(t.elapsed());
                        assert!(o.result.is_ok());
                    } else {
                        let (id, o) = record_call(&store, &hello, case.function, &case.args)
                            .await
                            .unwrap();
                        recorded.push(t.elapsed());
                        assert!(o.result.is_ok());
                        run_ids.push(id);
                    }
                }
                if i % case.per_round == case.per_round - 1 {
                    // Let the writer catch up outside the timed region.
                    store.flush();
                }
            }
            // Replay execution: the loaded component, answers from a journal
            // already read into memory (what replay itself costs).
            let steps = store.steps(run_ids.last().unwrap()).unwrap();
            for _ in 0..case.rounds * case.per_round {
                let cursor = Arc::new(ReplayCursor::new(steps.clone()));
                let t = Instant::now();
                let o = hello
                    .call_json_with(
                        case.function,
                        &case.args,
                        CallOptions {
                            replay: Some(cursor),
                            ..CallOptions::default()
                        },
                    )
                    .await
                    .unwrap();
                executed.push(t.elapsed());
                assert!(o.divergence.is_none(), "{:?}", o.divergence);
            }
            // Replay end to end: read the journal from the store, rebuild
            // mounts, load (compiled component kept in memory), run.
            for id in run_ids.iter().rev().take(case.rounds * 2) {
                let t = Instant::now();
                let r = replay(&runtime, &store, id, None).await.unwrap();
                replayed.push(t.elapsed());
                assert!(r.divergence.is_none(), "{:?}", r.divergence);
            }
            (plain, recorded, executed, replayed)
        });
        let ratios: Vec<Duration> = plain
            .iter()
            .zip(&recorded)
            .map(|(p, r)| Duration::from_nanos((r.as_secs_f64() / p.as_secs_f64() * 1e6) as u64))
            .collect();
        let paired = p50(ratios).as_nanos() as f64 / 1e6;
        let (p, r, x, y) = (p50(plain), p50(recorded), p50(executed), p50(replayed));
        println!(
            "{:<28} {:>9.1} µs {:>10.1} µs {:>8.1}% {:>10.1} µs {:>7.2}x {:>10.1} µs {:>7.2}x",
            case.name,
            us(p),
            us(r),
            (paired - 1.0) * 100.0,
            us(x),
            x.as_secs_f64() / p.as_secs_f64(),
            us(y),
            y.as_secs_f64() / p.as_secs_f64()
        );
    }
}
