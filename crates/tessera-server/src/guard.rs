//! The request guard: one layer in front of every route (the `/v1` API,
//! `/openapi.json` and `/mcp` alike) that refuses what a browser could be
//! tricked into sending.
//!
//! A page on another site can make a browser send "simple" requests to a
//! server on loopback without any preflight: a `POST` with a `text/plain`
//! or form body, a `GET`. And a page whose name is rebound to 127.0.0.1
//! (DNS rebinding) can even read the answers. Tokens stop both when they
//! are required, but on loopback they are optional, so the server checks
//! three things itself, before the token middleware:
//!
//! - **`Host`** must name the server: on loopback one of the loopback names
//!   (`localhost`, `127.0.0.1`, `::1`) or an `--allowed-host`; on any other
//!   address an `--allowed-host`, or anything when none is given (tokens
//!   are required there). A name without a port matches any port. This is
//!   the rule rmcp applies at `/mcp`, now applied to every route.
//! - **`Origin`**, when present, must be an `--allowed-origin` or the
//!   server's own origin (`http://<Host>` or `https://<Host>`, the `Host`
//!   having passed the check above). Browsers send `Origin` on every
//!   cross-origin request and on every non-`GET` one, so a foreign page is
//!   refused whatever it sends.
//! - **`Content-Type`**: every body the API takes is JSON, so a request
//!   with a body, or naming any content type at all, must say
//!   `application/json`. Browsers cannot send that cross-site without a
//!   preflight, which only an allowed origin passes.
//!
//! Refusals are JSON errors (`host_not_allowed`, `origin_not_allowed`: 403;
//! `unsupported_media_type`: 415) and are written to the audit log. No
//! response carries a permissive CORS header: an allowed origin gets its
//! own origin back (and its preflight answered), nobody else gets any.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::Server;
use crate::error::{ApiError, ErrorCode};

/// The names a loopback server answers to, whatever its port.
pub const LOOPBACK_HOSTS: &[&str] = &["localhost", "127.0.0.1", "::1"];

/// A browser origin allowed to call the server: `scheme://host[:port]`,
/// as a browser sends it in `Origin` (`http://localhost:3000`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedOrigin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

/// Why a string is not an origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid origin `{0}`: write it as a browser sends it, scheme://host[:port] without a path (e.g. http://localhost:3000)"
)]
pub struct InvalidOrigin(pub String);

impl AllowedOrigin {
    /// The port the origin names, or its scheme's default.
    fn effective_port(&self) -> Option<u16> {
        self.port.or(default_port(&self.scheme))
    }

    /// Whether two origins are the same (RFC 6454: scheme, host, port).
    fn same_as(&self, other: &AllowedOrigin) -> bool {
        self.scheme == other.scheme
            && self.host == other.host
            && self.effective_port() == other.effective_port()
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl FromStr for AllowedOrigin {
    type Err = InvalidOrigin;

    fn from_str(s: &str) -> Result<Self, InvalidOrigin> {
        let bad = || InvalidOrigin(s.to_string());
        let (scheme, rest) = s.split_once("://").ok_or_else(bad)?;
        let scheme = scheme.to_ascii_lowercase();
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_lowercase())
            && scheme
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
        if !scheme_ok || rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
            return Err(bad());
        }
        let authority = http::uri::Authority::from_str(rest).map_err(|_| bad())?;
        if authority.host().is_empty() {
            return Err(bad());
        }
        Ok(Self {
            scheme,
            host: normalize_host(authority.host()),
            port: authority.port_u16(),
        })
    }
}

impl fmt::Display for AllowedOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(p) if Some(p) != default_port(&self.scheme) => {
                write!(f, "{}://{host}:{p}", self.scheme)
            }
            _ => write!(f, "{}://{host}", self.scheme),
        }
    }
}

/// `Host` without brackets, lower case.
fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

/// A host name (and optionally port) requests may be addressed to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostRule {
    host: String,
    /// `None`: any port.
    port: Option<u16>,
}

impl HostRule {
    fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        Some(match http::uri::Authority::from_str(s) {
            Ok(a) => Self {
                host: normalize_host(a.host()),
                port: a.port_u16(),
            },
            Err(_) => Self {
                host: normalize_host(s),
                port: None,
            },
        })
    }

    fn matches(&self, host: &RequestHost) -> bool {
        self.host == host.host && self.port.is_none_or(|p| host.port == Some(p))
    }
}

/// The `Host` a request was addressed to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RequestHost {
    host: String,
    port: Option<u16>,
}

/// What a server accepts in `Host` and `Origin`.
#[derive(Debug, Clone)]
pub struct RequestGuard {
    /// `None`: any `Host`.
    hosts: Option<Vec<HostRule>>,
    origins: Vec<AllowedOrigin>,
}

/// Why the guard refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    Host(String),
    Origin(String),
    ContentType(String),
}

impl Refusal {
    /// The audit capability and the error.
    fn parts(&self) -> (&'static str, ApiError) {
        match self {
            Refusal::Host(detail) => ("host", ApiError::new(ErrorCode::HostNotAllowed, detail)),
            Refusal::Origin(detail) => {
                ("origin", ApiError::new(ErrorCode::OriginNotAllowed, detail))
            }
            Refusal::ContentType(detail) => (
                "content-type",
                ApiError::new(ErrorCode::UnsupportedMediaType, detail),
            ),
        }
    }
}

/// What the guard decided for a request it lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pass {
    /// No `Origin`, or the server's own.
    Plain,
    /// An `--allowed-origin`: its answer names it in CORS headers.
    Cors(HeaderValue),
}

impl RequestGuard {
    /// The guard of a server listening on `local` with the given
    /// `--allowed-host` and `--allowed-origin` values.
    pub fn new(local: SocketAddr, allowed_hosts: &[String], origins: &[AllowedOrigin]) -> Self {
        let extra = allowed_hosts.iter().filter_map(|h| HostRule::parse(h));
        let hosts = if local.ip().is_loopback() {
            Some(
                LOOPBACK_HOSTS
                    .iter()
                    .filter_map(|h| HostRule::parse(h))
                    .chain(extra)
                    .collect(),
            )
        } else {
            let list: Vec<HostRule> = extra.collect();
            (!list.is_empty()).then_some(list)
        };
        Self {
            hosts,
            origins: origins.to_vec(),
        }
    }

    /// The `Host` values `/mcp` is configured with (rmcp's own check, kept
    /// as a second line behind this guard); empty: any.
    pub fn host_list(&self) -> Vec<String> {
        self.hosts
            .iter()
            .flatten()
            .map(|r| match r.port {
                Some(p) if r.host.contains(':') => format!("[{}]:{p}", r.host),
                Some(p) => format!("{}:{p}", r.host),
                None => r.host.clone(),
            })
            .collect()
    }

    fn request_host(headers: &HeaderMap, uri: &http::Uri) -> Result<Option<RequestHost>, String> {
        let raw = match headers.get(header::HOST) {
            Some(v) => v
                .to_str()
                .map_err(|_| "the Host header is not text".to_string())?
                .to_string(),
            None => match uri.authority() {
                Some(a) => a.as_str().to_string(),
                None => return Ok(None),
            },
        };
        let a = http::uri::Authority::from_str(&raw)
            .map_err(|_| format!("malformed Host header `{raw}`"))?;
        Ok(Some(RequestHost {
            host: normalize_host(a.host()),
            port: a.port_u16(),
        }))
    }

    /// Checks a request's `Host`, `Origin` and (except for HTTP handler
    /// components' routes) `Content-Type`.
    pub(crate) fn check(
        &self,
        method: &Method,
        uri: &http::Uri,
        headers: &HeaderMap,
    ) -> Result<Pass, Refusal> {
        let host = Self::request_host(headers, uri).map_err(Refusal::Host)?;
        if let Some(rules) = &self.hosts {
            let Some(host) = &host else {
                return Err(Refusal::Host("the request names no Host".into()));
            };
            if !rules.iter().any(|r| r.matches(host)) {
                return Err(Refusal::Host(format!(
                    "Host `{}` is not one this server answers to (allowed: {}; add names with --allowed-host)",
                    headers
                        .get(header::HOST)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or(&host.host),
                    self.host_list().join(", ")
                )));
            }
        }
        let pass = match headers.get(header::ORIGIN) {
            None => Pass::Plain,
            Some(value) => self.check_origin(value, host.as_ref())?,
        };
        // An HTTP handler component takes whatever a web application takes
        // (forms, text, binary); the rest of the API takes JSON only.
        if !uri.path().starts_with(crate::http_handlers::PREFIX) {
            check_content_type(method, headers)?;
        }
        Ok(pass)
    }

    fn check_origin(
        &self,
        value: &HeaderValue,
        host: Option<&RequestHost>,
    ) -> Result<Pass, Refusal> {
        let text = value.to_str().unwrap_or("");
        let refuse = || {
            Refusal::Origin(format!(
                "Origin `{text}` is not allowed to call this server (allow it with --allowed-origin)"
            ))
        };
        let origin = AllowedOrigin::from_str(text).map_err(|_| refuse())?;
        if self.origins.iter().any(|o| o.same_as(&origin)) {
            return Ok(Pass::Cors(value.clone()));
        }
        // The server's own origin: a page it served, or a proxy in front.
        let own = host.is_some_and(|h| {
            matches!(origin.scheme.as_str(), "http" | "https")
                && origin.host == h.host
                && origin.effective_port() == h.port.or(default_port(&origin.scheme))
        });
        if own { Ok(Pass::Plain) } else { Err(refuse()) }
    }
}

/// A request with a body, or naming a content type, must name JSON.
fn check_content_type(method: &Method, headers: &HeaderMap) -> Result<(), Refusal> {
    let declared = headers.get(header::CONTENT_TYPE);
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    match declared {
        None if !has_body => Ok(()),
        None => Err(Refusal::ContentType(format!(
            "{method} with a body needs `Content-Type: application/json`"
        ))),
        Some(v) => {
            let text = v.to_str().unwrap_or("");
            let essence = text.split(';').next().unwrap_or("").trim();
            if essence.eq_ignore_ascii_case("application/json") {
                Ok(())
            } else {
                Err(Refusal::ContentType(format!(
                    "Content-Type `{text}` is not accepted: request bodies are JSON (`application/json`)"
                )))
            }
        }
    }
}

/// State of the guard layer.
#[derive(Clone)]
pub(crate) struct GuardState {
    pub(crate) server: Arc<Server>,
    pub(crate) guard: Arc<RequestGuard>,
}

/// Headers a cross-origin page may send (its preflight asks).
const ALLOW_HEADERS: &str =
    "authorization, content-type, accept, last-event-id, mcp-session-id, mcp-protocol-version";
/// Headers a cross-origin page may read.
const EXPOSE_HEADERS: &str = "mcp-session-id, www-authenticate";

/// The middleware.
pub(crate) async fn guard(State(state): State<GuardState>, req: Request, next: Next) -> Response {
    match state.guard.check(req.method(), req.uri(), req.headers()) {
        Err(refusal) => {
            let (capability, error) = refusal.parts();
            let target = format!("{} {}", req.method(), req.uri().path());
            state
                .server
                .audit_refusal(capability, &target, error.message());
            error.into_response()
        }
        Ok(Pass::Plain) => next.run(req).await,
        Ok(Pass::Cors(origin)) => {
            let preflight = req.method() == Method::OPTIONS
                && req
                    .headers()
                    .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
            let mut response = if preflight {
                let mut r = StatusCode::NO_CONTENT.into_response();
                let h = r.headers_mut();
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static("GET, POST, PUT, DELETE"),
                );
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static(ALLOW_HEADERS),
                );
                h.insert(
                    header::ACCESS_CONTROL_MAX_AGE,
                    HeaderValue::from_static("600"),
                );
                r
            } else {
                let mut r = next.run(req).await;
                r.headers_mut().insert(
                    header::ACCESS_CONTROL_EXPOSE_HEADERS,
                    HeaderValue::from_static(EXPOSE_HEADERS),
                );
                r
            };
            let h = response.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            h.append(header::VARY, HeaderValue::from_static("origin"));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                header::HeaderName::from_str(k).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn check(g: &RequestGuard, method: Method, pairs: &[(&str, &str)]) -> Result<Pass, Refusal> {
        g.check(
            &method,
            &http::Uri::from_static("/v1/health"),
            &headers(pairs),
        )
    }

    #[test]
    fn origins_parse_as_browsers_send_them() {
        let o: AllowedOrigin = "HTTP://LocalHost:3000".parse().unwrap();
        assert_eq!(o.to_string(), "http://localhost:3000");
        assert_eq!(
            "https://app.example:443"
                .parse::<AllowedOrigin>()
                .unwrap()
                .to_string(),
            "https://app.example"
        );
        assert_eq!(
            "http://[::1]:8080"
                .parse::<AllowedOrigin>()
                .unwrap()
                .to_string(),
            "http://[::1]:8080"
        );
        for bad in [
            "localhost:3000",
            "http://",
            "http://x/path",
            "http://u@x",
            "*",
            "null",
        ] {
            assert!(bad.parse::<AllowedOrigin>().is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_accepts_loopback_names_and_added_hosts() {
        let local: SocketAddr = "127.0.0.1:7878".parse().unwrap();
        let g = RequestGuard::new(local, &["tessera.test".into()], &[]);
        for ok in ["localhost:7878", "127.0.0.1", "[::1]:7878", "tessera.test"] {
            assert_eq!(check(&g, Method::GET, &[("host", ok)]), Ok(Pass::Plain));
        }
        for refused in ["rebound.example:7878", "127.0.0.2", "localhost.evil"] {
            assert!(matches!(
                check(&g, Method::GET, &[("host", refused)]),
                Err(Refusal::Host(_))
            ));
        }
        assert!(matches!(check(&g, Method::GET, &[]), Err(Refusal::Host(_))));
    }

    #[test]
    fn elsewhere_only_added_hosts_or_any() {
        let local: SocketAddr = "10.1.2.3:7878".parse().unwrap();
        let any = RequestGuard::new(local, &[], &[]);
        assert_eq!(
            check(&any, Method::GET, &[("host", "whatever.example")]),
            Ok(Pass::Plain)
        );
        let some = RequestGuard::new(local, &["api.example:7878".into()], &[]);
        assert_eq!(
            check(&some, Method::GET, &[("host", "api.example:7878")]),
            Ok(Pass::Plain)
        );
        for refused in ["api.example:9999", "localhost:7878", "10.1.2.3:7878"] {
            assert!(matches!(
                check(&some, Method::GET, &[("host", refused)]),
                Err(Refusal::Host(_))
            ));
        }
    }

    #[test]
    fn origins_own_configured_or_refused() {
        let local: SocketAddr = "127.0.0.1:7878".parse().unwrap();
        let app: AllowedOrigin = "http://localhost:3000".parse().unwrap();
        let g = RequestGuard::new(local, &[], &[app]);
        let host = ("host", "localhost:7878");
        assert_eq!(
            check(
                &g,
                Method::GET,
                &[host, ("origin", "http://localhost:7878")]
            ),
            Ok(Pass::Plain)
        );
        assert_eq!(
            check(
                &g,
                Method::GET,
                &[host, ("origin", "http://localhost:3000")]
            ),
            Ok(Pass::Cors(HeaderValue::from_static(
                "http://localhost:3000"
            )))
        );
        for refused in [
            "http://evil.example",
            "http://localhost:3001",
            "http://127.0.0.1:7878", // another name than the Host: another origin
            "null",
            "garbage",
        ] {
            assert!(
                matches!(
                    check(&g, Method::GET, &[host, ("origin", refused)]),
                    Err(Refusal::Origin(_))
                ),
                "{refused}"
            );
        }
    }

    #[test]
    fn bodies_must_be_json() {
        let local: SocketAddr = "127.0.0.1:7878".parse().unwrap();
        let g = RequestGuard::new(local, &[], &[]);
        let host = ("host", "127.0.0.1:7878");
        let ok = [
            vec![host],
            vec![host, ("content-length", "0")],
            vec![
                host,
                ("content-type", "application/json"),
                ("content-length", "2"),
            ],
            vec![
                host,
                ("content-type", "Application/JSON; charset=utf-8"),
                ("transfer-encoding", "chunked"),
            ],
        ];
        for pairs in ok {
            assert_eq!(
                check(&g, Method::POST, &pairs),
                Ok(Pass::Plain),
                "{pairs:?}"
            );
        }
        let refused = [
            vec![host, ("content-length", "2")],
            vec![
                host,
                ("content-type", "text/plain"),
                ("content-length", "2"),
            ],
            vec![host, ("content-type", "application/x-www-form-urlencoded")],
            vec![host, ("content-type", "multipart/form-data; boundary=x")],
            vec![host, ("content-type", "application/jsonx")],
        ];
        for pairs in refused {
            assert!(
                matches!(
                    check(&g, Method::POST, &pairs),
                    Err(Refusal::ContentType(_))
                ),
                "{pairs:?}"
            );
        }
    }
}
