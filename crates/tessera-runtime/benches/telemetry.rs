//! What tracing costs a call, against the same call untraced in the same
//! run: `hello.greet` with no span made, and with a call span made and
//! exported (OTLP/HTTP, protobuf, batched in the SDK's background thread)
//! to a local HTTP server that answers 200.
//!
//! Run: `cargo bench -p tessera-runtime --bench telemetry`
//! (`BENCH_ROUNDS` changes the number of interleaved rounds). Medians over
//! interleaved rounds.

use std::time::{Duration, Instant};

use opentelemetry_otlp::WithExportConfig;
use serde_json::json;
use tessera_runtime::{Grants, Runtime, RuntimeConfig, telemetry};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (port, _) = tessera_test_support::http_stub();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("http://127.0.0.1:{port}/v1/traces"))
        .build()
        .unwrap();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tessera = {
        let _guard = rt.enter();
        Runtime::new(RuntimeConfig::default()).unwrap()
    };
    let hello = tessera
        .load_file(
            &tessera_test_support::component("hello"),
            Grants::deny_all(),
        )
        .unwrap();
    let args = json!({"name": "Ada"});
    let calls = |n: usize| {
        rt.block_on(async {
            let t = Instant::now();
            for _ in 0..n {
                let o = hello.call_json("greet", &args).await.unwrap();
                assert_eq!(o.result.unwrap(), json!("Hello, Ada!"));
            }
            t.elapsed() / n as u32
        })
    };
    calls(500);
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        telemetry::disable();
        off.push(calls(2000));
        telemetry::enable();
        on.push(calls(2000));
    }
    telemetry::disable();
    let _ = provider.shutdown();
    let (a, b) = (median(off), median(on));
    println!("hello.greet per call, medians of {rounds} interleaved rounds of 2000:");
    println!("  tracing off   {:>8.2} µs", a.as_secs_f64() * 1e6);
    println!(
        "  tracing on    {:>8.2} µs ({:+.1}%; a call span exported over OTLP/HTTP in batches)",
        b.as_secs_f64() * 1e6,
        (b.as_secs_f64() / a.as_secs_f64() - 1.0) * 100.0
    );
}
