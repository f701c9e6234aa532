//! `--otlp URL`: traces exported over OTLP/HTTP (protobuf), batched, with
//! W3C trace-context propagation (docs/telemetry.md).

use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

/// Installed tracing; flushes what is left when dropped.
pub struct Telemetry(SdkTracerProvider);

impl Drop for Telemetry {
    fn drop(&mut self) {
        // Exports the last batch (a short-lived `tessera call` ends here).
        let _ = self.0.shutdown();
    }
}

/// The traces endpoint for a collector's base URL: `http://host:4318`
/// becomes `http://host:4318/v1/traces`; a URL with a path is used as is.
fn traces_endpoint(url: &str) -> String {
    let trimmed = url.trim_end_matches('/');
    let has_path = trimmed
        .split_once("://")
        .is_some_and(|(_, rest)| rest.contains('/'));
    if has_path {
        trimmed.to_string()
    } else {
        format!("{trimmed}/v1/traces")
    }
}

/// Installs the OTLP exporter, the tracer provider (keeping the share
/// `sample` of new traces, when given) and the propagator, and turns span
/// making on in the runtime.
pub fn init(url: &str, sample: Option<f64>) -> Result<Telemetry, String> {
    // The exporter's reqwest client builds its TLS configuration from the
    // process's default rustls provider: ring, as everywhere in Tessera
    // (a second install is refused harmlessly).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(traces_endpoint(url))
        .build()
        .map_err(|e| format!("--otlp {url}: {e}"))?;
    let mut builder = SdkTracerProvider::builder();
    if let Some(ratio) = sample {
        // Parent-based: a trace a caller started keeps the caller's
        // decision, so a trace is whole or absent.
        builder = builder.with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))));
    }
    let provider = builder
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("tessera")
                .build(),
        )
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    tessera_runtime::telemetry::enable();
    Ok(Telemetry(provider))
}

#[cfg(test)]
mod tests {
    use super::traces_endpoint;

    #[test]
    fn a_base_url_gets_the_traces_path() {
        assert_eq!(
            traces_endpoint("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_endpoint("http://127.0.0.1:4318/"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_endpoint("https://c.example/otlp/v1/traces"),
            "https://c.example/otlp/v1/traces"
        );
    }
}
