//! Components that export `wasi:http/incoming-handler` (the `wasi:http/proxy`
//! world, as Spin and wasmCloud components do): one HTTP request handled
//! in a fresh instance, under the component's grants and limits, its
//! outgoing calls through the gateway like any call's.
//!
//! The request and the response are plain values ([`HttpRequest`],
//! [`HttpResponse`]) so that a caller can journal them: the request is what
//! a replay gives the handler again, the response what it must answer.

use std::sync::Arc;
use std::time::Instant;

use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use wasmtime::component::Val;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::Proxy;

use crate::audit::{Decision, MemoryAudit};
use crate::call::{CallFailure, CallOptions, CallOutcome, LoadedComponent, Ran};
use crate::gateway::Gateway;
use crate::limits::LimitHit;
use crate::{Error, schema::FunctionInfo};

/// The interface (without its version) an HTTP handler exports.
pub const INCOMING_HANDLER: &str = "wasi:http/incoming-handler";

/// An HTTP request for a handler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path and query the handler sees (`/items?x=1`).
    pub path: String,
    /// `http` or `https`.
    pub scheme: String,
    /// The authority (`127.0.0.1:7878`).
    pub authority: String,
    /// The headers, in order (names lower-case).
    pub headers: Vec<(String, String)>,
    /// The body.
    #[serde(with = "body_b64")]
    pub body: Vec<u8>,
}

/// What a handler answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    #[serde(with = "body_b64")]
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The response as the JSON a journal's end record holds.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Bodies as base64 in JSON (they are bytes).
mod body_b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

impl LoadedComponent {
    /// The handler function, if the component exports
    /// `wasi:http/incoming-handler`.
    pub fn http_handler(&self) -> Option<&FunctionInfo> {
        self.functions().iter().find(|f| {
            f.name == "handle"
                && f.interface
                    .as_deref()
                    .is_some_and(|i| i.split('@').next() == Some(INCOMING_HANDLER))
        })
    }

    /// Handles `request` in a fresh instance: the outcome (its `result`
    /// is the response as JSON, [`HttpResponse::to_json`]) and the
    /// response, when the handler gave one. A handler that traps, hits a
    /// limit or never sets a response has no response; the outcome says
    /// why.
    pub async fn handle_http(
        &self,
        request: &HttpRequest,
        options: CallOptions,
    ) -> Result<(CallOutcome, Option<HttpResponse>), Error> {
        let f = self.http_handler().ok_or_else(|| Error::NotCallable {
            function: INCOMING_HANDLER.to_string(),
            reason: format!(
                "the component does not export {INCOMING_HANDLER} (it is not an HTTP handler)"
            ),
        })?;
        let hyper_request = to_hyper(request)?;
        let scheme = if request.scheme == "https" {
            wasmtime_wasi_http::p2::bindings::http::types::Scheme::Https
        } else {
            wasmtime_wasi_http::p2::bindings::http::types::Scheme::Http
        };
        let call_audit = Arc::new(MemoryAudit::default());
        let (gateway, cancel, snapshot) = {
            let (scope, parts, cancel, snapshot) = self.call_parts(f, options, &call_audit);
            (Gateway::new(scope, parts), cancel, snapshot)
        };
        let _permit = self.permit(&gateway)?;
        let started = Instant::now();
        let mut store = self.new_store(&gateway)?;
        let limit = self.grants().limits.max_output_bytes;
        let (sender, receiver) = tokio::sync::oneshot::channel::<
            Result<
                hyper::Response<wasmtime_wasi_http::p2::body::HyperOutgoingBody>,
                wasmtime_wasi_http::p2::bindings::http::types::ErrorCode,
            >,
        >();
        // The response's body is read while the handler writes it (the
        // stream between them is bounded), up to the output limit.
        let collector = tokio::spawn(async move {
            let Ok(Ok(response)) = receiver.await else {
                return Ok(None);
            };
            let (parts, body) = response.into_parts();
            let mut body = body;
            let mut bytes = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| format!("the response body: {e}"))?;
                if let Ok(data) = frame.into_data() {
                    if bytes.len() + data.len() > limit as usize {
                        return Err(format!("the response body exceeds {limit} bytes"));
                    }
                    bytes.extend_from_slice(&data);
                }
            }
            Ok(Some(HttpResponse {
                status: parts.status.as_u16(),
                headers: parts
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                    .collect(),
                body: bytes,
            }))
        });
        let pre = &self.pre;
        let raw = self
            .guarded(&mut store, &gateway, cancel, started, |store| async move {
                let instance = pre.instantiate_async(&mut *store).await?;
                let proxy = Proxy::new(&mut *store, &instance)?;
                let req = store
                    .data_mut()
                    .http()
                    .new_incoming_request(scheme, hyper_request)?;
                let out = store.data_mut().http().new_response_outparam(sender)?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut *store, req, out)
                    .await?;
                wasmtime::Result::<Vec<Val>>::Ok(Vec::new())
            })
            .await;
        let ran = Ran::measure(&mut store, self.grants().limits, started, snapshot);
        // Dropping the store ends a body the handler left open.
        drop(store);
        let collected = collector
            .await
            .map_err(|e| format!("the response collector: {e}"));
        let mut outcome = self.outcome(f, &gateway, &call_audit, raw, ran);
        let response = match collected {
            Ok(Ok(r)) => r,
            Ok(Err(m)) | Err(m) => {
                if outcome.result.is_ok() {
                    let hit = LimitHit::Output {
                        stream: "response",
                        limit,
                    };
                    gateway.audit(hit.capability(), "response", Decision::Limit, Some(m));
                    outcome.result = Err(CallFailure::Limit(hit));
                }
                None
            }
        };
        if outcome.result.is_ok() {
            outcome.result = match &response {
                Some(r) => Ok(r.to_json()),
                None => Err(CallFailure::Trap {
                    message: "the handler returned without setting a response".into(),
                    backtrace: None,
                }),
            };
        }
        let response = response.filter(|_| outcome.result.is_ok());
        Ok((outcome, response))
    }
}

/// The request as hyper's, with its body.
fn to_hyper(r: &HttpRequest) -> Result<hyper::Request<http_body_util::Full<bytes::Bytes>>, Error> {
    let bad = |message: String| Error::BadHttpRequest { message };
    let uri = format!("{}://{}{}", r.scheme, r.authority, r.path);
    let mut b = hyper::Request::builder()
        .method(r.method.as_str())
        .uri(&uri);
    for (k, v) in &r.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(http_body_util::Full::new(bytes::Bytes::from(
        r.body.clone(),
    )))
    .map_err(|e| bad(format!("the request {} {uri}: {e}", r.method)))
}
