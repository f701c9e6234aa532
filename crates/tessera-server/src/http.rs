//! The HTTP API (see `openapi.rs` for the document served at
//! `/openapi.json`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use tessera_runtime::{CallFailure, Error as RtError};

use crate::Server;
use crate::auth::Scope;
use crate::registry::RegistryError;

/// A JSON error with a stable code.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    extra: Value,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: json!({}),
        }
    }

    /// The human-readable message.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    fn with(mut self, key: &str, value: Value) -> Self {
        self.extra[key] = value;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Value::Object(extra) = self.extra {
            for (k, v) in extra {
                error[k] = v;
            }
        }
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NoSuchComponent(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "no_such_component", e.to_string())
            }
            RegistryError::NoSuchVersion { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "no_such_version", e.to_string())
            }
            RegistryError::InvalidName(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_name", e.to_string())
            }
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "registry",
                other.to_string(),
            ),
        }
    }
}

fn runtime_error(e: RtError) -> ApiError {
    match e {
        RtError::BadArguments { error, .. } => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_arguments", error.to_string())
                .with("path", json!(error.path))
        }
        RtError::NoSuchFunction { .. } | RtError::Ambiguous { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "no_such_function", e.to_string())
        }
        RtError::NotCallable { .. } => {
            ApiError::new(StatusCode::BAD_REQUEST, "not_callable", e.to_string())
        }
        RtError::Busy { limit } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "component_busy",
            e.to_string(),
        )
        .with("limit", json!(limit)),
        RtError::Manifest(_) | RtError::Grant(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_manifest", e.to_string())
        }
        RtError::Read { .. }
        | RtError::NotWasm { .. }
        | RtError::Adapt { .. }
        | RtError::Compile { .. }
        | RtError::Link { .. } => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_component", e.to_string())
        }
        RtError::Engine(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "engine", e.to_string())
        }
    }
}

fn journal_error(e: tessera_journal::Error) -> ApiError {
    match e {
        tessera_journal::Error::NoSuchRun(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "no_such_run", e.to_string())
        }
        tessera_journal::Error::Runtime(r) => runtime_error(r),
        other => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "journal",
            other.to_string(),
        ),
    }
}

type ApiResult = Result<Response, ApiError>;

/// Parses a JSON request body into `T`, with a typed error naming the place.
fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("request body: {e}"),
        )
        .with("line", json!(e.line()))
        .with("column", json!(e.column()))
    })
}

/// The scopes that may use a route (any one suffices); `None`: public.
fn accepted_scopes(method: &axum::http::Method, path: &str) -> Option<&'static [Scope]> {
    if path == "/openapi.json" || path == "/v1/health" {
        None
    } else if path == "/mcp" || path.starts_with("/mcp/") {
        // MCP: listing and calling tools.
        Some(&[Scope::Call])
    } else if path.starts_with("/v1/runs") || path.starts_with("/v1/audit") {
        Some(&[Scope::Read])
    } else if path.contains("/call/") {
        Some(&[Scope::Call])
    } else if method == axum::http::Method::GET {
        // Listing and inspecting components.
        Some(&[Scope::Call, Scope::Manage])
    } else {
        Some(&[Scope::Manage])
    }
}

async fn authorize(State(server): State<Arc<Server>>, req: Request, next: Next) -> Response {
    let Some(accepted) = accepted_scopes(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let target = format!("{} {}", req.method(), req.uri().path());
    let deny = |status: StatusCode, code: &'static str, message: String| {
        server.audit_refusal("auth", &target, &message);
        let mut response = ApiError::new(status, code, message).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"tessera\""),
            );
        }
        response
    };
    match presented {
        None if !server.config.require_tokens => next.run(req).await,
        None => deny(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a bearer token is required".into(),
        ),
        Some(token) => match server.tokens.check(&token) {
            Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "tokens", e).into_response(),
            Ok(None) => deny(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "unknown token".into(),
            ),
            Ok(Some(record)) if record.scopes.iter().any(|s| accepted.contains(s)) => {
                let mut req = req;
                req.extensions_mut().insert(crate::auth::TokenId(record.id));
                next.run(req).await
            }
            Ok(Some(_)) => deny(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this token lacks a scope for this route (one of: {})",
                    accepted
                        .iter()
                        .filter_map(|s| serde_json::to_value(s).ok())
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        },
    }
}

/// Refuses bodies over the limit with a JSON 413 before reading them.
async fn limit_body(State(server): State<Arc<Server>>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > server.config.max_body_bytes) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body over {} bytes", server.config.max_body_bytes),
        )
        .with("limit", json!(server.config.max_body_bytes))
        .into_response();
    }
    next.run(req).await
}

impl Server {
    /// Audits a request the server refused before it reached a handler
    /// (`capability`: `auth`, `host`, `origin`, `content-type`).
    pub(crate) fn audit_refusal(&self, capability: &str, target: &str, detail: &str) {
        self.audit_event(&tessera_runtime::AuditEvent::now(
            "-",
            "-",
            capability,
            target,
            tessera_runtime::Decision::Deny,
            Some(detail.to_string()),
        ));
    }
}

/// The API router, with the MCP endpoint at `/mcp`, for a server listening
/// on `local`. Every route, `/mcp` included, is behind the same layers:
/// the request guard (`Host`, `Origin`, `Content-Type`; see `guard.rs`),
/// then the body limit, then the token middleware.
pub fn router(server: Arc<Server>, mcp: crate::mcp::McpHttpService, local: SocketAddr) -> Router {
    let guard = crate::guard::GuardState {
        server: server.clone(),
        guard: Arc::new(server.request_guard(local)),
    };
    Router::new()
        .nest_service("/mcp", mcp)
        .route("/v1/health", get(health))
        .route("/openapi.json", get(openapi))
        .route("/v1/components", get(list_components).post(add_by_path))
        .route(
            "/v1/components/{name}",
            get(inspect_component).put(upload).delete(remove_component),
        )
        .route("/v1/components/{name}/activate", post(activate))
        .route("/v1/components/{name}/rollback", post(rollback))
        .route("/v1/components/{name}/call/{function}", post(call))
        .route("/v1/runs", get(list_runs))
        .route("/v1/runs/{id}", get(show_run))
        .route("/v1/runs/{id}/replay", post(replay_run))
        .route("/v1/audit", get(audit_stream))
        .layer(DefaultBodyLimit::max(server.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(server.clone(), authorize))
        .layer(middleware::from_fn_with_state(server.clone(), limit_body))
        .layer(middleware::from_fn_with_state(guard, crate::guard::guard))
        .with_state(server)
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}

fn component_json(server: &Server, name: &str, schemas: bool) -> Result<Value, ApiError> {
    let entry = server.registry.get(name)?;
    let active = server.active(name);
    let mut v = json!({
        "name": name,
        "active_version": entry.active,
        "previous_version": entry.previous,
        "versions": entry.versions.iter().enumerate().map(|(i, v)| json!({
            "version": i + 1,
            "digest": v.digest,
            "origin": v.origin,
            "added": v.added,
            "manifest": v.manifest,
        })).collect::<Vec<_>>(),
        "loaded": active.as_ref().map(|a| a.version),
    });
    if schemas && let Some(a) = &active {
        v["functions"] = json!(
            a.loaded
                .functions()
                .iter()
                .map(|f| f.to_json())
                .collect::<Vec<_>>()
        );
    }
    Ok(v)
}

async fn list_components(State(server): State<Arc<Server>>) -> ApiResult {
    let names: Vec<String> = server.registry.list()?.into_keys().collect();
    let list = names
        .iter()
        .map(|n| component_json(&server, n, false))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(json!({ "components": list })).into_response())
}

async fn inspect_component(
    State(server): State<Arc<Server>>,
    Path(name): Path<String>,
) -> ApiResult {
    Ok(Json(component_json(&server, &name, true)?).into_response())
}

#[derive(Deserialize)]
struct AddByPath {
    name: String,
    path: String,
    #[serde(default)]
    manifest_path: Option<String>,
}

/// Validates a new version by loading it before it is registered.
async fn check_loadable(
    server: &Server,
    bytes: &[u8],
    manifest: Option<&(String, std::path::PathBuf)>,
) -> Result<(), ApiError> {
    if let Some((text, dir)) = manifest {
        tessera_runtime::Grants::from_toml(text, "manifest", dir)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_manifest", e.to_string()))?;
    }
    let rt = server.runtime.clone();
    let bytes = bytes.to_vec();
    tokio::task::spawn_blocking(move || {
        let p = rt.prepare(bytes, "upload")?;
        rt.load(&p, tessera_runtime::Grants::deny_all()).map(|_| ())
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "engine", e.to_string()))?
    .map_err(runtime_error)
}

async fn register(
    server: &Server,
    name: &str,
    bytes: Vec<u8>,
    manifest: Option<(String, std::path::PathBuf)>,
    origin: &str,
) -> ApiResult {
    check_loadable(server, &bytes, manifest.as_ref()).await?;
    let version = server.registry.add(name, &bytes, manifest, origin)?;
    server
        .sync()
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "registry", e.to_string()))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "name": name, "active_version": version })),
    )
        .into_response())
}

async fn add_by_path(State(server): State<Arc<Server>>, body: Bytes) -> ApiResult {
    let req: AddByPath = parse_json(&body)?;
    let bytes = std::fs::read(&req.path).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_component",
            format!("{}: {e}", req.path),
        )
    })?;
    let manifest = match &req.manifest_path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_manifest", format!("{p}: {e}"))
            })?;
            let dir = std::path::Path::new(p)
                .parent()
                .map(|d| d.canonicalize().unwrap_or_else(|_| d.to_path_buf()))
                .unwrap_or_default();
            Some((text, dir))
        }
        None => None,
    };
    register(&server, &req.name, bytes, manifest, &req.path).await
}

#[derive(Deserialize)]
struct Upload {
    wasm_base64: String,
    #[serde(default)]
    manifest: Option<String>,
}

async fn upload(
    State(server): State<Arc<Server>>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let req: Upload = parse_json(&body)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(req.wasm_base64.as_bytes())
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_component",
                format!("wasm_base64: {e}"),
            )
            .with("path", json!("$.wasm_base64"))
        })?;
    let manifest = req.manifest.map(|m| (m, server.config.data.clone()));
    register(&server, &name, bytes, manifest, "upload").await
}

#[derive(Deserialize)]
struct Activate {
    version: usize,
}

async fn activate(
    State(server): State<Arc<Server>>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let req: Activate = parse_json(&body)?;
    server.registry.activate(&name, req.version)?;
    server
        .sync()
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "registry", e.to_string()))?;
    Ok(Json(component_json(&server, &name, false)?).into_response())
}

async fn rollback(State(server): State<Arc<Server>>, Path(name): Path<String>) -> ApiResult {
    server.registry.rollback(&name)?;
    server
        .sync()
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "registry", e.to_string()))?;
    Ok(Json(component_json(&server, &name, false)?).into_response())
}

async fn remove_component(
    State(server): State<Arc<Server>>,
    Path(name): Path<String>,
) -> ApiResult {
    server.registry.remove(&name)?;
    server
        .sync()
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "registry", e.to_string()))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn call(
    State(server): State<Arc<Server>>,
    Path((name, function)): Path<(String, String)>,
    token: Option<axum::Extension<crate::auth::TokenId>>,
    body: Bytes,
) -> ApiResult {
    let args: Value = if body.is_empty() {
        json!({})
    } else {
        parse_json(&body)?
    };
    let caller = tessera_journal::Caller {
        via: "http".into(),
        token: token.map(|t| t.0.0),
    };
    let called = server
        .call(&name, &function, &args, None, caller)
        .await
        .map_err(|e| match e {
            crate::CallError::Overloaded(n) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                format!("{n} calls already running"),
            ),
            crate::CallError::NoSuchComponent(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "no_such_component", e.to_string())
            }
            crate::CallError::Journal(j) => journal_error(j),
            crate::CallError::Task(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
        })?;
    let crate::Called {
        active,
        run_id,
        outcome,
    } = called;
    let base = json!({
        "component": name,
        "version": active.version,
        "function": outcome.function,
        "run_id": run_id,
        "fuel_consumed": outcome.fuel_consumed,
        "duration_us": outcome.duration.as_micros() as u64,
        "stdout": String::from_utf8_lossy(&outcome.output.stdout),
        "stderr": String::from_utf8_lossy(&outcome.output.stderr),
        "logs": outcome.output.logs,
    });
    match outcome.result {
        Ok(result) => {
            let mut v = base;
            v["ok"] = json!(!outcome.guest_error);
            v["result"] = result;
            Ok(Json(v).into_response())
        }
        Err(failure) => {
            let denied = outcome
                .audit
                .iter()
                .find(|e| e.decision == tessera_runtime::Decision::Deny);
            let (code, extra) = match (&failure, denied) {
                (_, Some(d)) => (
                    "denied",
                    json!({ "grant": d.capability, "target": d.target }),
                ),
                (CallFailure::Limit(l), None) => ("limit", json!({ "limit": l.capability() })),
                (CallFailure::Trap { .. }, None) => ("trap", json!({})),
                (CallFailure::Diverged(_), None) => ("trap", json!({})),
                (CallFailure::Cancelled, None) => ("cancelled", json!({})),
            };
            let mut err =
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, failure.to_string())
                    .with("run_id", json!(run_id));
            if let Value::Object(m) = extra {
                for (k, v) in m {
                    err = err.with(&k, v);
                }
            }
            Err(err)
        }
    }
}

async fn list_runs(State(server): State<Arc<Server>>) -> ApiResult {
    let runs = server.journal.list().map_err(journal_error)?;
    let v: Vec<Value> = runs
        .iter()
        .map(|r| {
            json!({
                "run_id": r.header.run_id,
                "started": r.header.started,
                "component": r.header.component,
                "function": r.header.function,
                "steps": r.steps,
                "complete": r.end.is_some(),
                "end": r.end,
            })
        })
        .collect();
    Ok(Json(json!({ "runs": v })).into_response())
}

async fn show_run(State(server): State<Arc<Server>>, Path(id): Path<String>) -> ApiResult {
    let id = server.journal.resolve(&id).map_err(journal_error)?;
    let header = server.journal.header(&id).map_err(journal_error)?;
    let steps = server.journal.steps(&id).map_err(journal_error)?;
    let end = server.journal.end(&id).map_err(journal_error)?;
    Ok(Json(json!({
        "header": header,
        "steps": steps.iter().map(|(i, s)| json!({ "index": i, "interaction": s })).collect::<Vec<_>>(),
        "end": end,
    }))
    .into_response())
}

async fn replay_run(State(server): State<Arc<Server>>, Path(id): Path<String>) -> ApiResult {
    let report = tessera_journal::replay(&server.runtime, &server.journal, &id, None)
        .await
        .map_err(journal_error)?;
    Ok(Json(json!({
        "run_id": report.run_id,
        "identical": report.divergence.is_none(),
        "recorded_steps": report.recorded_steps,
        "divergence": report.divergence.as_ref().map(|d| d.to_string()),
    }))
    .into_response())
}

async fn audit_stream(State(server): State<Arc<Server>>) -> impl IntoResponse {
    use futures_util::StreamExt as _;
    let rx = server.audit_events();
    let stopping = server.stopping().clone().cancelled_owned();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(event) => {
                    let data = serde_json::to_string(&event).unwrap_or_default();
                    return Some((
                        Ok::<_, std::convert::Infallible>(
                            Event::default().event("audit").data(data),
                        ),
                        rx,
                    ));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    // The stream ends when the server shuts down.
    .take_until(stopping);
    Sse::new(stream).keep_alive(KeepAlive::default())
}
