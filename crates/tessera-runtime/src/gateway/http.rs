//! Outbound `wasi:http` through the gateway.
//!
//! Only targets matching the manifest's `allowed_outbound_hosts` are sent.
//! A refused request fails inside the guest with `HTTP-request-denied` and
//! never leaves the process. Redirects are never followed by the host: a
//! guest that follows one issues a new request, which is checked again.

use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::{Bytes, Gateway, HttpResponseRecord, Interaction};
use crate::audit::Decision;

/// The `wasi:http` hooks of one call.
#[derive(Debug)]
pub struct HttpGate {
    gateway: Gateway,
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl HttpGate {
    /// The hooks for one call.
    pub fn new(gateway: Gateway) -> Self {
        Self { gateway }
    }

    /// Decides whether `uri` may be requested. `Ok(Some(pattern))` means it
    /// was allowed by a wildcard pattern, so the resolved addresses must be
    /// checked too.
    pub fn allows(&self, uri: &http::Uri) -> Result<Option<String>, String> {
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let host = uri
            .host()
            .ok_or_else(|| "request has no host".to_string())?
            .to_ascii_lowercase();
        let port = match uri.port_u16() {
            Some(p) => p,
            None => match scheme.as_str() {
                "http" => 80,
                "https" => 443,
                other => return Err(format!("scheme `{other}` is not supported")),
            },
        };
        match self.gateway.grants().outbound_match(&scheme, &host, port) {
            Some(p) if p.is_wildcard() => Ok(Some(p.source.clone())),
            Some(_) => Ok(None),
            None => Err(format!(
                "{scheme}://{host}:{port} is not in http.allowed_outbound_hosts"
            )),
        }
    }
}

/// Largest response body the gateway buffers (responses are read whole so
/// that each exchange is one journal step).
pub const MAX_RESPONSE_BODY: usize = 64 << 20;

/// What the guest will see for a recorded transport error.
fn replayed_error(recorded: &str) -> HttpError {
    let name = recorded.split(['(', ' ', '{']).next().unwrap_or(recorded);
    match name {
        "HttpRequestDenied" => HttpError::HttpRequestDenied,
        "Connect" | "ConnectionRefused" => HttpError::ConnectionRefused,
        "ConnectionTimeout" => HttpError::ConnectionTimeout,
        "ConnectionTerminated" => HttpError::ConnectionTerminated,
        "DnsTimeout" => HttpError::DnsTimeout,
        "Tls" | "TlsProtocolError" => HttpError::TlsProtocolError,
        "Hyper" | "HttpProtocolError" => HttpError::HttpProtocolError,
        "HttpResponseBodySize" => HttpError::HttpResponseBodySize(None),
        _ => HttpError::InternalError(Some(recorded.to_string())),
    }
}

fn response_from(rec: &HttpResponseRecord) -> Result<http::Response<WasiBody>, HttpError> {
    let mut b = http::Response::builder().status(rec.status);
    for (name, value) in &rec.headers {
        b = b.header(name.as_str(), value.0.as_slice());
    }
    b.body(
        http_body_util::Full::new(bytes::Bytes::from(rec.body.0.clone()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    )
    .map_err(|e| HttpError::InternalError(Some(format!("recorded response: {e}"))))
}

/// Sends a request and reads the whole response.
async fn send_live(
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<HttpResponseRecord, HttpError> {
    let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
    // The connection future must run while the body is read.
    let io = tokio::spawn(io);
    let (parts, body) = res.into_parts();
    let collected = http_body_util::Limited::new(body, MAX_RESPONSE_BODY)
        .collect()
        .await
        .map_err(|e| match e.downcast::<HttpError>() {
            Ok(e) => *e,
            Err(_) => HttpError::HttpResponseBodySize(Some(MAX_RESPONSE_BODY as u64)),
        })?;
    io.abort();
    Ok(HttpResponseRecord {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), Bytes(v.as_bytes().to_vec())))
            .collect(),
        body: Bytes(collected.to_bytes().to_vec()),
    })
}

impl WasiHttpHooks for HttpGate {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        drop(fut);
        let uri = request.uri().to_string();
        let method = request.method().as_str().to_string();
        let verdict = self.allows(request.uri());
        let gateway = self.gateway.clone();
        let index = gateway.reserve_index();
        let host = request.uri().host().unwrap_or_default().to_string();
        let port =
            request
                .uri()
                .port_u16()
                .unwrap_or(if request.uri().scheme_str() == Some("http") {
                    80
                } else {
                    443
                });
        Box::new(async move {
            let target = format!("{method} {uri}");
            // The decision, including the address check for wildcard grants.
            let decision = match verdict {
                Err(reason) => Err(reason),
                Ok(Some(pattern)) if !gateway.replaying() => {
                    match private_target(&host, port, &pattern).await {
                        Some(reason) => Err(reason),
                        None => Ok(()),
                    }
                }
                Ok(_) => Ok(()),
            };
            let allowed = decision.is_ok();
            match &decision {
                Err(reason) => gateway.audit("http", &target, Decision::Deny, Some(reason.clone())),
                Ok(()) => gateway.audit("http", &target, Decision::Allow, None),
            }
            let probe = Interaction::Http {
                method: method.clone(),
                uri: uri.clone(),
                allowed,
                response: None,
                error: None,
            };
            let recorded = if gateway.replaying() {
                gateway.exchange_at(index, probe, |p| p)
            } else {
                let outcome = match decision {
                    Err(_) => Err(HttpError::HttpRequestDenied),
                    Ok(()) => send_live(request, options).await,
                };
                gateway.exchange_at(index, probe, |_| Interaction::Http {
                    method,
                    uri,
                    allowed,
                    response: outcome.as_ref().ok().cloned(),
                    error: outcome.as_ref().err().map(|e| format!("{e:?}")),
                })
            };
            let (response, error) = match recorded {
                Ok(Interaction::Http {
                    response, error, ..
                }) => (response, error),
                Ok(_) => unreachable!("exchange returns the probe's kind"),
                Err(d) => return Err(HttpError::InternalError(Some(d.to_string()))),
            };
            match (response, error) {
                (Some(rec), _) => Ok((
                    response_from(&rec)?,
                    Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>,
                )),
                (None, Some(e)) => Err(replayed_error(&e)),
                (None, None) => Err(HttpError::InternalError(Some(
                    "recorded exchange has neither response nor error".into(),
                ))),
            }
        })
    }
}

/// For a request allowed only by a wildcard pattern: refuses targets that
/// resolve to loopback, private, link-local or otherwise non-public
/// addresses. Such addresses must be listed explicitly.
async fn private_target(host: &str, port: u16, pattern: &str) -> Option<String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<std::net::IpAddr> = match tokio::net::lookup_host((bare, port)).await {
        Ok(it) => it.map(|a| a.ip()).collect(),
        Err(e) => return Some(format!("cannot resolve {host}: {e}")),
    };
    addrs.into_iter().find(|ip| !is_public(ip)).map(|ip| {
        format!(
            "{host} resolves to non-public address {ip}; wildcard `{pattern}` does not cover it (list it explicitly)"
        )
    })
}

/// Whether an address is globally routable (not loopback, private,
/// link-local, CGNAT, unspecified, multicast, documentation or ULA).
pub fn is_public(ip: &std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64))
        }
        std::net::IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(&std::net::IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80)
        }
    }
}
