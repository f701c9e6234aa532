//! A small client of a running server's HTTP API (plain `http://`; put a
//! TLS-terminating proxy in front of a server reached over a network).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::exit;

/// A server's API at `http://host:port`, with an optional bearer token.
pub struct Api {
    authority: String,
    token: Option<String>,
}

/// A failed request: the message to print and the exit code.
pub struct ApiFailure {
    /// `error: …` text.
    pub message: String,
    /// Exit code: bad input for 4xx answers, internal otherwise.
    pub code: i32,
    /// The server's error code (`bad_component`, …), or `unreachable`
    /// when no answer came, or `bad_server` for an unusable `--server`.
    pub kind: String,
    /// The server's error details and the HTTP status, when it answered
    /// (boxed to keep `Result<_, ApiFailure>` small).
    pub context: Box<serde_json::Map<String, Value>>,
}

impl From<ApiFailure> for crate::failure::Failure {
    fn from(f: ApiFailure) -> Self {
        Self {
            code: f.code,
            kind: f.kind,
            message: f.message,
            context: f.context,
        }
    }
}

impl Api {
    /// Parses `http://host:port` (a trailing `/` is allowed).
    pub fn new(server: &str, token: Option<String>) -> Result<Self, ApiFailure> {
        let bad = |why: &str| ApiFailure {
            message: format!("--server {server}: {why}"),
            code: exit::BAD_INPUT,
            kind: "bad_server".into(),
            context: Box::default(),
        };
        let rest = match server.split_once("://") {
            Some(("http", rest)) => rest,
            Some((scheme, _)) => {
                return Err(bad(&format!(
                    "`{scheme}` is not supported: use http:// (behind a TLS proxy for remote servers)"
                )));
            }
            None => return Err(bad("expected http://host:port")),
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(bad("expected http://host:port, without a path"));
        }
        Ok(Self {
            authority: authority.to_string(),
            token,
        })
    }

    /// Sends one request; returns the JSON body of a 2xx answer (`null`
    /// when empty), or the server's typed error.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ApiFailure> {
        let unreachable = |e: String| ApiFailure {
            message: format!("http://{}{path}: {e}", self.authority),
            code: exit::INTERNAL,
            kind: "unreachable".into(),
            context: Box::new(serde_json::Map::from_iter([(
                "server".to_string(),
                Value::String(format!("http://{}", self.authority)),
            )])),
        };
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.authority)
            .header("content-type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| unreachable(e.to_string()))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        let json: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| {
                unreachable(format!(
                    "answer {status} is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                ))
            })?
        };
        if status.is_success() {
            return Ok(json);
        }
        let err = &json["error"];
        let mut context = match err {
            Value::Object(m) => m.clone(),
            _ => serde_json::Map::new(),
        };
        context.remove("code");
        context.remove("message");
        context.insert("status".into(), Value::from(status.as_u16()));
        Err(ApiFailure {
            message: format!(
                "{} ({}): {}",
                err["code"].as_str().unwrap_or("error"),
                status.as_u16(),
                err["message"].as_str().unwrap_or("no message")
            ),
            code: if status.is_client_error() {
                exit::BAD_INPUT
            } else {
                exit::INTERNAL
            },
            kind: err["code"].as_str().unwrap_or("error").to_string(),
            context: Box::new(context),
        })
    }
}
