//! Traces: OpenTelemetry spans of calls and of the host interactions they
//! make, and W3C `traceparent` propagation across the Wasm boundary.
//!
//! The runtime uses the OpenTelemetry API only: a binary that wants traces
//! installs a tracer provider and a propagator (`tessera --otlp URL` does,
//! with the OTLP/HTTP exporter) and calls [`enable`]. Until then every
//! function here returns at once and no span is made.
//!
//! A call's span is a child of the OpenTelemetry context current when the
//! call starts (`opentelemetry::Context::current()`: a server request's, a
//! plan step's, an agent turn's), so callers attach their context to the
//! future that makes the call (`FutureExt::with_context`). Each policy- or
//! grant-checked host interaction (HTTP, files, key-value, LLM, `wasi:nn`,
//! tool calls) is a child span of its call, and an outgoing HTTP request
//! carries the interaction span's `traceparent`, so a trace goes on in the
//! service the guest calls. Reference: `docs/telemetry.md`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue, global};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// The tracer spans are made with: the global provider's, taken when
/// tracing is enabled (not looked up again for every span).
static TRACER: RwLock<Option<global::BoxedTracer>> = RwLock::new(None);

/// Turns span making on (after a tracer provider and a propagator were
/// installed with `opentelemetry::global`).
pub fn enable() {
    *TRACER.write().unwrap_or_else(PoisonError::into_inner) = Some(global::tracer("tessera"));
    ENABLED.store(true, Ordering::Relaxed);
}

/// Turns span making off again (spans already started still end).
pub fn disable() {
    ENABLED.store(false, Ordering::Relaxed);
}

/// Whether spans are made.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Starts a span named `name` as a child of `parent`; the returned context
/// holds it (it ends when [`end`] is called or the last clone is dropped).
pub fn start(
    name: impl Into<Cow<'static, str>>,
    kind: SpanKind,
    parent: &Context,
    attributes: Vec<KeyValue>,
) -> Context {
    let cached = TRACER.read().unwrap_or_else(PoisonError::into_inner);
    let looked_up;
    let tracer = match cached.as_ref() {
        Some(t) => t,
        None => {
            looked_up = global::tracer("tessera");
            &looked_up
        }
    };
    let span = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attributes)
        .start_with_context(tracer, parent);
    parent.with_span(span)
}

/// Ends the span `cx` holds, with `attributes` added, marked as an error
/// when `error` is given.
pub fn end(cx: &Context, attributes: Vec<KeyValue>, error: Option<String>) {
    let span = cx.span();
    span.set_attributes(attributes);
    if let Some(e) = error {
        span.set_status(Status::error(e));
    }
    span.end();
}

/// Writes `cx`'s `traceparent` (and `tracestate`) into `headers`, through
/// the installed propagator.
pub fn inject(cx: &Context, headers: &mut http::HeaderMap) {
    struct Headers<'a>(&'a mut http::HeaderMap);
    impl Injector for Headers<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(k), Ok(v)) = (
                http::header::HeaderName::from_bytes(key.as_bytes()),
                http::header::HeaderValue::from_str(&value),
            ) {
                self.0.insert(k, v);
            }
        }
    }
    global::get_text_map_propagator(|p| p.inject_context(cx, &mut Headers(headers)));
}

/// The context a request's `traceparent` header names (the current one
/// when it has none, or tracing is off).
pub fn extract(headers: &http::HeaderMap) -> Context {
    struct Headers<'a>(&'a http::HeaderMap);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0
                .keys()
                .map(http::header::HeaderName::as_str)
                .collect()
        }
    }
    if !enabled() {
        return Context::current();
    }
    global::get_text_map_propagator(|p| p.extract(&Headers(headers)))
}

/// `cx`'s trace context as W3C Trace Context fields (`traceparent`, and
/// `tracestate` when there is one), to carry in a message; empty when
/// tracing is off or `cx` holds no span.
pub fn carrier(cx: &Context) -> BTreeMap<String, String> {
    struct Fields(BTreeMap<String, String>);
    impl Injector for Fields {
        fn set(&mut self, key: &str, value: String) {
            self.0.insert(key.to_string(), value);
        }
    }
    let mut fields = Fields(BTreeMap::new());
    if enabled() && cx.has_active_span() {
        global::get_text_map_propagator(|p| p.inject_context(cx, &mut fields));
    }
    fields.0
}

/// The context a message's [`carrier`] fields name (the current one when
/// they name none, or tracing is off).
pub fn from_carrier(fields: &BTreeMap<String, String>) -> Context {
    struct Fields<'a>(&'a BTreeMap<String, String>);
    impl Extractor for Fields<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).map(String::as_str)
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(String::as_str).collect()
        }
    }
    if !enabled() || fields.is_empty() {
        return Context::current();
    }
    global::get_text_map_propagator(|p| p.extract(&Fields(fields)))
}

/// A host interaction's span (none when tracing is off): ended, with the
/// gateway's decision, by [`Interaction::decided`] or when dropped.
#[derive(Debug, Default)]
pub struct Interaction {
    cx: Option<Context>,
    decision: Option<&'static str>,
}

impl Interaction {
    pub(crate) fn start(
        parent: &Context,
        name: impl Into<Cow<'static, str>>,
        attributes: Vec<KeyValue>,
    ) -> Self {
        Self {
            cx: Some(start(name, SpanKind::Client, parent, attributes)),
            decision: None,
        }
    }

    /// The span's context (to propagate), if there is a span.
    pub fn context(&self) -> Option<&Context> {
        self.cx.as_ref()
    }

    /// Records the gateway's decision (`allow`, `deny`, `limit`).
    pub fn decide(&mut self, decision: &'static str) {
        self.decision = Some(decision);
    }

    /// Records the decision and ends the span.
    pub fn decided(mut self, decision: &'static str) {
        self.decide(decision);
    }
}

impl Drop for Interaction {
    fn drop(&mut self) {
        if let Some(cx) = self.cx.take() {
            if !cx.span().is_recording() {
                cx.span().end();
                return;
            }
            let decision = self.decision.unwrap_or("allow");
            end(
                &cx,
                vec![KeyValue::new("tessera.decision", decision)],
                (decision != "allow").then(|| format!("{decision} by the gateway")),
            );
        }
    }
}
