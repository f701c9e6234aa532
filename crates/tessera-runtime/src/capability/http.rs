//! Outbound `wasi:http` through the gateway.
//!
//! Manifest key: `[http]` (`allowed_outbound_hosts`). Only targets matching
//! it are sent. A refused request fails inside the guest with
//! `HTTP-request-denied` and never leaves the process. Redirects are never
//! followed by the host: a guest that follows one issues a new request,
//! which is checked again.
//!
//! Each exchange is one step. The request is recorded as method, URI,
//! headers and a keyed digest of the body (credential headers such as
//! `authorization` as keyed digests too), so a replay whose guest sends a
//! different body or header diverges at that step; the response is
//! recorded whole and answers the replay.

use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use wasmtime::component::Linker;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::{Capability, Effects, Section};
use crate::audit::Decision;
use crate::gateway::{Bytes, Gateway, Op, Sealed, Step};
use crate::host::HostState;
use crate::manifest::ManifestError;
use crate::policy::Interaction;

/// The outbound HTTP capability.
#[derive(Debug)]
pub struct Http;

/// Where a component may send requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpGrant {
    /// The allow-list; empty means no outbound HTTP.
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<HostPattern>,
}

impl HttpGrant {
    /// The allow-list entry that lets a request to `scheme://host:port`
    /// through, preferring an entry that names the host exactly.
    pub fn outbound_match(&self, scheme: &str, host: &str, port: u16) -> Option<&HostPattern> {
        let host = host.to_ascii_lowercase();
        let mut matching = self
            .allowed_outbound_hosts
            .iter()
            .filter(|p| p.matches(scheme, &host, port));
        let first = matching.next()?;
        if !first.is_wildcard() {
            return Some(first);
        }
        Some(matching.find(|p| !p.is_wildcard()).unwrap_or(first))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
}

/// A recorded HTTP response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpResponseRecord {
    /// Status code.
    pub status: u16,
    /// Header names and values, in received order.
    pub headers: Vec<(String, Bytes)>,
    /// The complete body.
    pub body: Bytes,
}

/// An outbound request as the guest made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Method.
    pub method: String,
    /// Full URI.
    pub uri: String,
    /// Header names and values, in the guest's order; credential headers
    /// are sealed.
    pub headers: Vec<(String, Sealed)>,
    /// Body length in bytes.
    pub body_len: u64,
    /// Keyed digest of the body.
    pub body_digest: String,
}

/// What came of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeRecord {
    /// Whether the grants allowed it.
    pub allowed: bool,
    /// The response, when one arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HttpResponseRecord>,
    /// The error the guest saw instead of a response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `outgoing-handler.handle`.
pub struct Request;
impl Op for Request {
    const CAPABILITY: &'static str = "http";
    const NAME: &'static str = "request";
    type Request = RequestRecord;
    type Response = ExchangeRecord;
}

/// Request headers whose values are credentials: journaled only as keyed
/// digests.
pub const SEALED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "api-key",
];

/// Largest request body the gateway buffers (a request is one step: its
/// body is digested whole before it is sent).
pub const MAX_REQUEST_BODY: usize = 64 << 20;

impl Capability for Http {
    const NAME: &'static str = "http";
    const MANIFEST_KEYS: &'static [&'static str] = &["http"];
    type Grant = HttpGrant;
    type State = HttpGate;

    fn link(_: &mut Linker<HostState>) -> wasmtime::Result<()> {
        // `wasi:http/outgoing-handler` is wasmtime-wasi-http's; every request
        // it makes goes through `HttpGate::send_request`.
        Ok(())
    }

    fn grant(section: &Section<'_>) -> Result<HttpGrant, ManifestError> {
        let mut grant = HttpGrant::default();
        if let Some(raw) = section.parse::<RawHttp>("http")? {
            for (i, p) in raw.allowed_outbound_hosts.iter().enumerate() {
                grant
                    .allowed_outbound_hosts
                    .push(HostPattern::parse(p).map_err(|m| {
                        section.invalid(format!("http.allowed_outbound_hosts[{i}]"), m)
                    })?);
            }
        }
        Ok(grant)
    }

    fn state(
        _: &HttpGrant,
        gateway: &Gateway,
        _: &mut WasiCtxBuilder,
    ) -> Result<HttpGate, crate::Error> {
        Ok(HttpGate::new(gateway.clone()))
    }

    fn effects(grant: &HttpGrant) -> Effects {
        let any = !grant.allowed_outbound_hosts.is_empty();
        Effects {
            network: any,
            external: any,
            ..Effects::NONE
        }
    }

    fn describe(step: &Step) -> String {
        let (Ok(req), Ok(ex)) = (
            RequestRecord::deserialize(&step.request),
            ExchangeRecord::deserialize(&step.response),
        ) else {
            return super::generic_description(step);
        };
        let outcome = match (ex.allowed, &ex.response, &ex.error) {
            (false, _, _) => "DENIED".to_string(),
            (_, Some(r), _) => format!("{} ({} bytes)", r.status, r.body.0.len()),
            (_, None, Some(e)) => format!("error {e}"),
            _ => "no response".to_string(),
        };
        let body = if req.body_len > 0 {
            format!(" [{} byte body {}]", req.body_len, req.body_digest)
        } else {
            String::new()
        };
        format!(
            "{:<16} {} {}{body} -> {outcome}",
            step.kind(),
            req.method,
            req.uri
        )
    }
}

/// An outbound HTTP allow-list entry: `scheme://host[:port]`.
///
/// `host` may start with `*.` to match any subdomain (not the bare domain),
/// or be `*` alone to match any host name (IP literals and `localhost` must
/// always be listed explicitly). `port` may be `*` for any port. A
/// pattern without a port matches the scheme's default port only.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostPattern {
    /// `http` or `https`.
    pub scheme: String,
    /// The host, lower-cased; may start with `*.` or be `*`.
    pub host: String,
    /// `None` means any port.
    pub port: Option<u16>,
    /// The pattern as written.
    pub source: String,
}

impl HostPattern {
    /// Parses a pattern, explaining what is wrong with a bad one.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("`{text}` must look like scheme://host[:port]"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            other => return Err(format!("`{text}`: scheme `{other}` is not http or https")),
        };
        if rest.is_empty() {
            return Err(format!("`{text}`: missing host"));
        }
        if rest.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "`{text}`: only scheme://host[:port] is allowed (no path, query or user info)"
            ));
        }
        let (host, port) = split_host_port(rest).map_err(|m| format!("`{text}`: {m}"))?;
        let port = match port {
            None => Some(default_port),
            Some("*") => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("`{text}`: port `{p}` is not a number 0-65535 or `*`"))?,
            ),
        };
        let host = host.to_ascii_lowercase();
        if host.is_empty() {
            return Err(format!("`{text}`: missing host"));
        }
        let bare = host.strip_prefix("*.").unwrap_or(&host);
        if host != "*" && (bare.contains('*') || bare.is_empty()) {
            return Err(format!(
                "`{text}`: `*` is only allowed as the whole host or as a leading `*.` label"
            ));
        }
        if host != "*"
            && !bare.starts_with('[')
            && !bare
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
        {
            return Err(format!("`{text}`: `{host}` is not a valid host name"));
        }
        Ok(Self {
            scheme,
            host,
            port,
            source: text.to_string(),
        })
    }

    /// Whether the host part is a wildcard (`*` or `*.domain`).
    pub fn is_wildcard(&self) -> bool {
        self.host.starts_with('*')
    }

    /// Whether a request to `scheme://host:port` matches this pattern.
    ///
    /// `host` must already be lower-case and, for IPv6, bracketed.
    pub fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        if !self.scheme.eq_ignore_ascii_case(scheme) {
            return false;
        }
        if let Some(p) = self.port
            && p != port
        {
            return false;
        }
        if self.host == "*" {
            // IP literals and localhost are reachable only when listed.
            return !is_ip_or_localhost(host);
        }
        match self.host.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|prefix| prefix.ends_with('.') && prefix.len() > 1),
            None => self.host == host,
        }
    }
}

/// Whether `host` is an IP literal or a localhost name, including the
/// numeric spellings the system resolver accepts (`127.1`, `2130706433`,
/// `0x7f000001`, `0177.0.0.1`): a host name's last label is never numeric.
pub fn is_ip_or_localhost(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        return true;
    }
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    let last = host.rsplit('.').next().unwrap_or(host);
    let numeric = !last.is_empty() && last.chars().all(|c| c.is_ascii_digit());
    let hex = last
        .strip_prefix("0x")
        .or_else(|| last.strip_prefix("0X"))
        .is_some_and(|h| h.chars().all(|c| c.is_ascii_hexdigit()));
    numeric || hex
}

fn split_host_port(rest: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(after) = rest.strip_prefix('[') {
        let end = after
            .find(']')
            .ok_or_else(|| "unterminated IPv6 literal".to_string())?;
        let host = &rest[..end + 2];
        let tail = &after[end + 1..];
        return match tail.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if tail.is_empty() => Ok((host, None)),
            None => Err("unexpected text after IPv6 literal".into()),
        };
    }
    Ok(match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    })
}

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
        match self
            .gateway
            .grants()
            .http
            .outbound_match(&scheme, &host, port)
        {
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
        "ConnectionReadTimeout" => HttpError::ConnectionReadTimeout,
        "ConnectionWriteTimeout" => HttpError::ConnectionWriteTimeout,
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

/// The request as the journal holds it, and the request to send (with
/// its body buffered).
async fn record_request(
    gateway: &Gateway,
    request: http::Request<WasiBody>,
) -> Result<(RequestRecord, http::Request<WasiBody>), HttpError> {
    let (parts, body) = request.into_parts();
    let body = http_body_util::Limited::new(body, MAX_REQUEST_BODY)
        .collect()
        .await
        .map_err(|e| match e.downcast::<HttpError>() {
            Ok(e) => *e,
            Err(_) => HttpError::InternalError(Some(format!(
                "request body larger than {MAX_REQUEST_BODY} bytes"
            ))),
        })?
        .to_bytes();
    let key = &gateway.host().redaction_key;
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            let name = k.as_str().to_string();
            let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
            let sealed = if SEALED_HEADERS.contains(&name.as_str()) {
                Sealed::secret(key, &name, value)
            } else {
                Sealed::Plain(value)
            };
            (name, sealed)
        })
        .collect();
    let record = RequestRecord {
        method: parts.method.as_str().to_string(),
        uri: parts.uri.to_string(),
        headers,
        body_len: body.len() as u64,
        body_digest: key.digest("http.body", &hex::encode(&body)),
    };
    let request = http::Request::from_parts(
        parts,
        http_body_util::Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    Ok((record, request))
}

impl WasiHttpHooks for HttpGate {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        drop(fut);
        let verdict = self.allows(request.uri());
        let gateway = self.gateway.clone();
        let index = gateway.reserve_index();
        let mut span = gateway.interaction_span(
            "http",
            request.method().as_str(),
            &request.uri().to_string(),
        );
        let host = request.uri().host().unwrap_or_default().to_string();
        let mut headers = std::collections::BTreeMap::<String, String>::new();
        for (name, value) in request.headers() {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            headers
                .entry(name.as_str().to_string())
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert(value);
        }
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
            let (record, mut request) = match record_request(&gateway, request).await {
                Ok(r) => r,
                Err(e) => {
                    // The step is still taken, so the indices that follow
                    // stay where a replay expects them.
                    gateway.diverge(
                        index,
                        None,
                        None,
                        Some(format!("request not recorded: {e:?}")),
                    );
                    return Err(e);
                }
            };
            let target = format!("{} {}", record.method, record.uri);
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
            // What the grants allow, the boundary policies may still deny.
            let decision = decision.and_then(|()| {
                gateway.authorize(&Interaction::Http {
                    method: record.method.clone(),
                    url: record.uri.clone(),
                    headers,
                })
            });
            let allowed = decision.is_ok();
            span.decide(if allowed { "allow" } else { "deny" });
            // The trace goes on where the request goes (after the request
            // was recorded: the header is not the guest's).
            if let Some(cx) = span.context() {
                crate::telemetry::inject(cx, request.headers_mut());
            }
            match &decision {
                Err(reason) => gateway.audit("http", &target, Decision::Deny, Some(reason.clone())),
                Ok(()) => gateway.audit("http", &target, Decision::Allow, None),
            }
            let exchange = match gateway.answer::<Request>(index, &record) {
                Err(d) => return Err(HttpError::InternalError(Some(d.to_string()))),
                Ok(Some(recorded)) => recorded,
                Ok(None) => {
                    let outcome = match decision {
                        Err(_) => Err(HttpError::HttpRequestDenied),
                        // In deterministic mode the call has no wall-clock
                        // deadline; each wait on the network has one.
                        Ok(()) if gateway.deterministic() => {
                            let limit = gateway.grants().limits.timeout_ms;
                            match tokio::time::timeout(
                                std::time::Duration::from_millis(limit),
                                send_live(request, options),
                            )
                            .await
                            {
                                Ok(r) => r,
                                Err(_) => {
                                    gateway.audit(
                                        "deadline",
                                        &target,
                                        Decision::Limit,
                                        Some(format!(
                                            "waiting on the host for more than {limit} ms"
                                        )),
                                    );
                                    Err(HttpError::ConnectionReadTimeout)
                                }
                            }
                        }
                        Ok(()) => send_live(request, options).await,
                    };
                    ExchangeRecord {
                        allowed,
                        response: outcome.as_ref().ok().cloned(),
                        error: outcome.as_ref().err().map(|e| format!("{e:?}")),
                    }
                }
            };
            gateway.report::<Request>(index, &record, &exchange);
            match (exchange.response, exchange.error) {
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
