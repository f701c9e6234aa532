//! What tracing costs a call, against the same call untraced in the same
//! run: `hello.greet` with no span made; with a call span made and
//! exported (OTLP/HTTP, protobuf, batched in the SDK's background thread)
//! to a local HTTP server that answers 200; the same keeping one trace in
//! ten (parent-based ratio sampling, as `--otlp-sample 0.1`); and spans
//! made but exported nowhere (what making a span costs, without the
//! export).
//!
//! Run: `cargo bench -p tessera-runtime --bench telemetry`
//! (`BENCH_ROUNDS` changes the number of interleaved rounds). Medians over
//! interleaved rounds.

use std::time::{Duration, Instant};

use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use serde_json::json;
use tessera_runtime::{Grants, Runtime, RuntimeConfig, telemetry};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A provider exporting to the local server at `port`, keeping `ratio` of
/// new traces (all when `None`).
fn exporting(port: u16, ratio: Option<f64>) -> SdkTracerProvider {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("http://127.0.0.1:{port}/v1/traces"))
        .build()
        .unwrap();
    let mut builder = SdkTracerProvider::builder().with_batch_exporter(exporter);
    if let Some(r) = ratio {
        builder = builder.with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            r,
        ))));
    }
    builder.build()
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (port, _) = tessera_test_support::http_stub();
    let configs = [
        ("every trace exported", exporting(port, None)),
        ("1 trace in 10 exported", exporting(port, Some(0.1))),
        (
            "spans made, no exporter",
            SdkTracerProvider::builder().build(),
        ),
    ];

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
    // `BENCH_ONLY=off|0|1|2`: run only tracing off, or only one of the
    // configurations (to profile it alone).
    if let Ok(only) = std::env::var("BENCH_ONLY") {
        if let Ok(i) = only.parse::<usize>() {
            opentelemetry::global::set_tracer_provider(configs[i].1.clone());
            telemetry::enable();
        }
        let per_call = median((0..rounds).map(|_| calls(2000)).collect());
        telemetry::disable();
        println!("{only}: {:.2} µs per call", per_call.as_secs_f64() * 1e6);
        return;
    }
    calls(500);
    // Measurements: tracing off, each configuration, and tracing off again
    // (a control: how far two measurements of the same thing differ), in
    // an order that rotates each round so no configuration always follows
    // the same one.
    let kinds = configs.len() + 2;
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); kinds];
    for round in 0..rounds {
        for k in 0..kinds {
            let which = (round + k) % kinds;
            match configs.get(which.wrapping_sub(1)) {
                Some((_, provider)) if which > 0 => {
                    opentelemetry::global::set_tracer_provider(provider.clone());
                    telemetry::enable();
                }
                _ => telemetry::disable(),
            }
            samples[which].push(calls(2000));
            telemetry::disable();
        }
    }
    // A call span's own cost: started and ended with the call's attributes
    // (names and digest as long as `hello`'s), no call around it; hot (one
    // span after another), and cold (4 MiB of memory written between two
    // spans, pushing the span's code and data out of the caches as the
    // rest of a call may, less the same writes alone).
    let mut buffer = vec![0u8; 4 << 20];
    let mut spans_alone = |n: u32, make: bool, sweep: bool| {
        use opentelemetry::KeyValue;
        let digest = format!("sha256:{}", "0".repeat(64));
        let t = Instant::now();
        for _ in 0..n {
            if sweep {
                for line in buffer.chunks_mut(64) {
                    line[0] = line[0].wrapping_add(1);
                }
                std::hint::black_box(&buffer);
            }
            if !make {
                continue;
            }
            let mut attributes = Vec::with_capacity(8);
            attributes.extend([
                KeyValue::new("tessera.component", "hello".to_string()),
                KeyValue::new("tessera.component.digest", digest.clone()),
                KeyValue::new("tessera.function", "greet".to_string()),
                KeyValue::new("tessera.replay", false),
            ]);
            let cx = telemetry::start(
                format!("call {} {}", "hello", "greet"),
                opentelemetry::trace::SpanKind::Internal,
                &opentelemetry::Context::current(),
                attributes,
            );
            telemetry::end(
                &cx,
                vec![
                    KeyValue::new("tessera.fuel", 1000_i64),
                    KeyValue::new("tessera.peak_memory_bytes", 65536_i64),
                    KeyValue::new("tessera.interactions", 0_i64),
                    KeyValue::new("tessera.outcome", "ok"),
                ],
                None,
            );
        }
        t.elapsed() / n
    };
    let mut alone = Vec::new();
    let cold_rounds = rounds.min(21);
    for (name, provider) in &configs {
        opentelemetry::global::set_tracer_provider(provider.clone());
        telemetry::enable();
        spans_alone(10_000, true, false);
        let hot = median(
            (0..rounds)
                .map(|_| spans_alone(10_000, true, false))
                .collect(),
        );
        let (mut swept, mut sweeps) = (Vec::new(), Vec::new());
        for _ in 0..cold_rounds {
            swept.push(spans_alone(300, true, true));
            sweeps.push(spans_alone(300, false, true));
        }
        let cold = median(swept).saturating_sub(median(sweeps));
        telemetry::disable();
        alone.push((*name, hot, cold));
    }
    for (_, provider) in &configs {
        let _ = provider.shutdown();
    }
    let mut medians = samples.into_iter().map(median);
    let base = medians.next().unwrap_or_default();
    let pct = |m: Duration| (m.as_secs_f64() / base.as_secs_f64() - 1.0) * 100.0;
    println!("hello.greet per call, medians of {rounds} rounds of 2000 (order rotating):");
    println!(
        "  tracing off                {:>8.2} µs",
        base.as_secs_f64() * 1e6
    );
    let names = configs
        .iter()
        .map(|(name, _)| *name)
        .chain(["tracing off again"]);
    for (name, m) in names.zip(medians) {
        println!(
            "  {name:<26} {:>8.2} µs ({:+.1}%)",
            m.as_secs_f64() * 1e6,
            pct(m)
        );
    }
    println!(
        "a call span alone (start and end, no call): hot, medians of {rounds} rounds of 10000; \
         cold (4 MiB written between spans, less the writes alone), medians of {cold_rounds} rounds of 300:"
    );
    for (name, hot, cold) in alone {
        println!(
            "  {name:<26} {:>8.2} µs hot {:>8.2} µs cold",
            hot.as_secs_f64() * 1e6,
            cold.as_secs_f64() * 1e6
        );
    }
}
