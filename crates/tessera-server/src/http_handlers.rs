//! `/http/<name>/…`: requests routed to components that export
//! `wasi:http/incoming-handler`, each handled in a fresh instance of the
//! active version under its grants, and journaled (the request is the
//! run's arguments, the response its result, so `tessera replay` hands the
//! handler the same request offline).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tessera_runtime::CallOptions;
use tessera_runtime::http_handler::{HttpRequest, HttpResponse};

use crate::Server;
use crate::call::{CallError, Called, Verdict, finish_linked};
use crate::error::{ApiError, ErrorCode};

/// The path prefix of handler routes.
pub const PREFIX: &str = "/http/";

/// The header naming the journal run of a handled request.
pub const RUN_HEADER: &str = "x-tessera-run";

impl Server {
    /// Handles `request` with the active version of the component `name`,
    /// which must export `wasi:http/incoming-handler`: the call (its
    /// outcome and journal run) and the response, if the handler gave one.
    pub async fn handle_http(
        &self,
        name: &str,
        request: HttpRequest,
        cancel: Option<tokio_util::sync::CancellationToken>,
        caller: tessera_journal::Caller,
    ) -> Result<(Called, Option<HttpResponse>), CallError> {
        let (permit, active) = self.permit_and_active(name).await?;
        if active.loaded.http_handler().is_none() {
            return Err(CallError::NotServed(tessera_runtime::Error::NotCallable {
                function: tessera_runtime::http_handler::INCOMING_HANDLER.to_string(),
                reason: format!(
                    "component `{name}` does not export {} (it is not an HTTP handler; call its functions at /v1/components/{name}/call/<function>)",
                    tessera_runtime::http_handler::INCOMING_HANDLER
                ),
            }));
        }
        let token = self.shutdown.child_token();
        let journal = self.journal.clone();
        let run = {
            let active = active.clone();
            let token = token.clone();
            async move {
                let recorded = tessera_journal::record_http(
                    &journal,
                    &active.loaded,
                    &request,
                    CallOptions {
                        cancel: Some(token),
                        ..CallOptions::default()
                    },
                    Some(caller),
                )
                .await;
                // As for every call: the journal before the permit.
                drop(journal);
                drop(permit);
                recorded
            }
        };
        let (run_id, outcome, response) = finish_linked(run, token, cancel).await??;
        Ok((
            Called {
                active,
                run_id,
                outcome,
            },
            response,
        ))
    }
}

/// The request a handler sees: the path below `/http/<name>`, the query,
/// the method, the headers (less the `authorization` that carried a
/// Tessera token, which never reaches a guest or the journal) and the body.
fn to_request(
    rest: &str,
    parts: &axum::http::request::Parts,
    body: Vec<u8>,
    tokens: bool,
) -> HttpRequest {
    let path = match parts.uri.query() {
        Some(q) => format!("/{rest}?{q}"),
        None => format!("/{rest}"),
    };
    let authority = parts
        .headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    HttpRequest {
        method: parts.method.to_string(),
        path,
        scheme: "http".into(),
        authority,
        headers: parts
            .headers
            .iter()
            .filter(|(k, _)| !(tokens && *k == axum::http::header::AUTHORIZATION))
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect(),
        body,
    }
}

/// The route: `/http/<name>` and `/http/<name>/<rest…>`, any method.
pub(crate) async fn route(State(server): State<Arc<Server>>, req: Request) -> Response {
    let token = req
        .extensions()
        .get::<crate::auth::TokenId>()
        .map(|t| t.0.clone());
    let (parts, body) = req.into_parts();
    let tail = parts
        .uri
        .path()
        .strip_prefix(PREFIX)
        .unwrap_or_default()
        .to_string();
    let (name, rest) = tail.split_once('/').unwrap_or((tail.as_str(), ""));
    if name.is_empty() {
        return ApiError::new(
            ErrorCode::NotFound,
            "name the component: /http/<name>/<path>".to_string(),
        )
        .into_response();
    }
    let body = match axum::body::to_bytes(body, server.config.max_body_bytes).await {
        Ok(b) => b.to_vec(),
        Err(e) => {
            return ApiError::new(ErrorCode::BodyTooLarge, format!("request body: {e}"))
                .into_response();
        }
    };
    let request = to_request(rest, &parts, body, server.config.require_tokens);
    let caller = tessera_journal::Caller {
        via: "http".into(),
        token,
    };
    let (mut called, response) = match server.handle_http(name, request, None, caller).await {
        Ok(r) => r,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let run = HeaderValue::from_str(&called.run_id).ok();
    let Some(response) = response else {
        let error = match called.verdict() {
            Verdict::Failed(e) => e,
            Verdict::Returned { .. } => ApiError::new(
                ErrorCode::Trap,
                "the handler returned without setting a response".to_string(),
            ),
        };
        return error.into_response();
    };
    let mut out = Response::new(Body::from(response.body));
    *out.status_mut() = StatusCode::from_u16(response.status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (k, v) in &response.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            out.headers_mut().append(k, v);
        }
    }
    if let Some(run) = run {
        out.headers_mut().insert(RUN_HEADER, run);
    }
    out
}
