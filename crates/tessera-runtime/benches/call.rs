//! Per-call latency and load time, each against a baseline in the same run.
//!
//! * `full path`: JSON arguments → validation → fresh sandboxed instance with
//!   grants, fuel, deadline and memory limiter → call → JSON result, through
//!   `LoadedComponent::call_json`.
//! * `raw wasmtime`: the same component in a plain wasmtime setup (pooling
//!   allocator, one `InstancePre`, default WASI context), a fresh instance
//!   per call and a typed call of the same function.
//! * `compile` vs `cached load`: Cranelift compilation of the component vs
//!   loading it from Tessera's compile cache.
//!
//! Run: `cargo bench -p tessera-runtime --bench call` (set `BENCH_ROUNDS` to
//! change the number of interleaved rounds). Results are medians over
//! interleaved rounds, so both sides see the same machine noise.

use std::time::{Duration, Instant};

use serde_json::json;
use tessera_runtime::{Grants, Runtime, RuntimeConfig};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

struct RawState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for RawState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn summarize(name: &str, mut v: Vec<Duration>) -> Duration {
    v.sort();
    let p50 = percentile(&v, 0.5);
    println!(
        "{name:<28} n={:<7} p50={:>9.2} µs  p90={:>9.2} µs  p99={:>9.2} µs",
        v.len(),
        us(p50),
        us(percentile(&v, 0.9)),
        us(percentile(&v, 0.99))
    );
    p50
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let per_round = 500;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let hello_path = tessera_test_support::component("hello");
    let bytes = std::fs::read(&hello_path).unwrap();

    // ---- Tessera full path.
    let tessera = Runtime::new(RuntimeConfig::default()).unwrap();
    assert!(tessera.pooling(), "pooling allocator unavailable");
    let loaded = tessera.load_file(&hello_path, Grants::deny_all()).unwrap();
    let args = json!({"name": "Ada"});

    // ---- Raw wasmtime baseline.
    let mut cfg = Config::new();
    cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(
        PoolingAllocationConfig::default(),
    ));
    let engine = Engine::new(&cfg).unwrap();
    let component = Component::from_binary(&engine, &bytes).unwrap();
    let mut linker: Linker<RawState> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    // hello imports wasi:logging; the baseline satisfies it with a no-op.
    linker
        .instance("wasi:logging/logging@0.1.0-draft")
        .unwrap()
        .func_new("log", |_, _, _, _| Ok(()))
        .unwrap();
    let pre = linker.instantiate_pre(&component).unwrap();
    let greet_idx = component.get_export_index(None, "greet").unwrap();

    let raw_call = || async {
        let mut store = Store::new(
            &engine,
            RawState {
                wasi: WasiCtx::builder().build(),
                table: ResourceTable::new(),
            },
        );
        let instance = pre.instantiate_async(&mut store).await.unwrap();
        let f = instance
            .get_typed_func::<(&str,), (String,)>(&mut store, &greet_idx)
            .unwrap();
        let (out,) = f.call_async(&mut store, ("Ada",)).await.unwrap();
        assert_eq!(out, "Hello, Ada!");
    };
    let full_call = || async {
        let o = loaded.call_json("greet", &args).await.unwrap();
        assert_eq!(o.result.unwrap(), json!("Hello, Ada!"));
    };

    // Warm up both.
    rt.block_on(async {
        for _ in 0..200 {
            raw_call().await;
            full_call().await;
        }
    });

    let mut raw = Vec::with_capacity(rounds * per_round);
    let mut full = Vec::with_capacity(rounds * per_round);
    rt.block_on(async {
        for round in 0..rounds {
            // Alternate which side goes first in each round.
            for side in [round % 2, 1 - round % 2] {
                for _ in 0..per_round {
                    let t = Instant::now();
                    if side == 0 {
                        raw_call().await;
                        raw.push(t.elapsed());
                    } else {
                        full_call().await;
                        full.push(t.elapsed());
                    }
                }
            }
        }
    });
    println!("hello.greet per call ({rounds} interleaved rounds of {per_round}):");
    let raw_p50 = summarize("raw wasmtime", raw);
    let full_p50 = summarize("tessera full path", full);
    println!(
        "ratio full/raw (p50): {:.2}x",
        full_p50.as_secs_f64() / raw_p50.as_secs_f64()
    );

    // ---- Compile vs cached load.
    let cache_dir = tempfile::tempdir().unwrap();
    let cached = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache_dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let prepared = cached.prepare(bytes.clone(), "hello.wasm").unwrap();
    cached.load(&prepared, Grants::deny_all()).unwrap(); // populate
    let cache = cached.cache().unwrap();
    let load_rounds = 15;
    let mut compile = Vec::new();
    let mut from_cache = Vec::new();
    let mut full_load = Vec::new();
    for _ in 0..load_rounds {
        let t = Instant::now();
        let c = Component::from_binary(cached.engine(), &bytes).unwrap();
        compile.push(t.elapsed());
        drop(c);
        let t = Instant::now();
        let c = cache
            .load(cached.engine(), &prepared.digest)
            .unwrap()
            .unwrap();
        from_cache.push(t.elapsed());
        drop(c);
        let t = Instant::now();
        let l = cached.load(&prepared, Grants::deny_all()).unwrap();
        full_load.push(t.elapsed());
        drop(l);
    }
    println!("\nhello.wasm load ({load_rounds} rounds):");
    let c = summarize("compile (Cranelift)", compile);
    let h = summarize("cached load (artifact)", from_cache);
    summarize("Runtime::load, in memory", full_load);
    println!(
        "ratio compile/cached (p50): {:.0}x",
        c.as_secs_f64() / h.as_secs_f64()
    );
}
