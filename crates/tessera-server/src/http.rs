//! The HTTP API (see `openapi.rs` for the document served at
//! `/openapi.json`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::Value;

use crate::Server;
use crate::api;
use crate::auth::Scope;
use crate::call::Verdict;
use crate::error::{ApiError, ErrorCode, LimitRef};
use crate::registry::RegistryError;
use tessera_store::{BackendKind, Expect, SharedStore, Stores};

/// Path parameters, with a JSON error when they cannot be read.
pub(crate) struct ApiPath<T>(pub(crate) T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| ApiPath(t))
            .map_err(|e| ApiError::new(ErrorCode::BadPath, e.body_text()))
    }
}

/// Query parameters, with a JSON error when they cannot be read.
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| ApiQuery(t))
            .map_err(|e| ApiError::new(ErrorCode::BadQuery, e.body_text()))
    }
}

/// The request body, with a JSON error when it cannot be read (over the
/// limit, connection gone).
pub(crate) struct Body(pub(crate) Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(Body)
            .map_err(|e: BytesRejection| {
                let code = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ErrorCode::BodyTooLarge
                } else {
                    ErrorCode::BadJson
                };
                ApiError::new(code, format!("request body: {}", e.body_text()))
            })
    }
}

/// Parses a JSON request body into `T`, with a typed error naming the place.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(ErrorCode::BadJson, format!("request body: {e}")).with(|d| {
            d.line = Some(e.line() as u64);
            d.column = Some(e.column() as u64);
        })
    })
}

/// The scopes that may use a route (any one suffices); `None`: public.
/// A test checks this against [`crate::openapi::ROUTES`].
fn accepted_scopes(method: &axum::http::Method, path: &str) -> Option<&'static [Scope]> {
    if path == "/openapi.json" || path == "/v1/health" {
        None
    } else if path.starts_with(crate::http_handlers::PREFIX) {
        // Requests for HTTP handler components: calls.
        Some(&[Scope::Call])
    } else if path == "/mcp" || path.starts_with("/mcp/") {
        // MCP: listing and calling tools.
        Some(&[Scope::Call])
    } else if path == "/v1/chat/completions" || path == "/v1/models" {
        // The local models' OpenAI-compatible endpoint: completions.
        Some(&[Scope::Call])
    } else if path.starts_with("/v1/runs")
        || path.starts_with("/v1/audit")
        || path == "/v1/journal"
        || path == "/metrics"
    {
        Some(&[Scope::Read])
    } else if let Some(scopes) = plan_scopes(method, path) {
        Some(scopes)
    } else if let Some(scopes) = crate::agent_routes::scopes(method, path) {
        Some(scopes)
    } else if path == "/v1/kv" || path.starts_with("/v1/kv/") {
        // Key-value stores (before `/call/`: a key may contain it).
        if method == axum::http::Method::GET || method == axum::http::Method::HEAD {
            Some(&[Scope::Read])
        } else {
            Some(&[Scope::Manage])
        }
    } else if path.contains("/call/") {
        Some(&[Scope::Call])
    } else if method == axum::http::Method::GET {
        // Listing and inspecting components.
        Some(&[Scope::Call, Scope::Manage])
    } else {
        Some(&[Scope::Manage])
    }
}

/// The scopes of the plan routes: `read` to look, `call` to start,
/// resume and cancel runs, `manage` to add and remove plans. `None` for
/// other routes.
fn plan_scopes(method: &axum::http::Method, path: &str) -> Option<&'static [Scope]> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let looks = method == axum::http::Method::GET || method == axum::http::Method::HEAD;
    match segments.as_slice() {
        ["v1", "plans", ..] | ["v1", "plan-runs", ..] if looks => Some(&[Scope::Read]),
        ["v1", "plans", _, "runs"] | ["v1", "plan-runs", ..] => Some(&[Scope::Call]),
        ["v1", "plans", ..] => Some(&[Scope::Manage]),
        _ => None,
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
    let deny = |code: ErrorCode, message: String| {
        server.audit_refusal("auth", &target, &message);
        let mut response = ApiError::new(code, message).into_response();
        if code == ErrorCode::Unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"tessera\""),
            );
        }
        response
    };
    match presented {
        None if !server.config.require_tokens => next.run(req).await,
        None => deny(ErrorCode::Unauthorized, "a bearer token is required".into()),
        Some(token) => match server.tokens.check(&token) {
            Err(e) => ApiError::from(e).into_response(),
            Ok(None) => deny(ErrorCode::Unauthorized, "unknown token".into()),
            Ok(Some(record)) if record.scopes.iter().any(|s| accepted.contains(s)) => {
                let mut req = req;
                req.extensions_mut().insert(crate::auth::TokenId(record.id));
                next.run(req).await
            }
            Ok(Some(_)) => deny(
                ErrorCode::Forbidden,
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
        let limit = server.config.max_body_bytes as u64;
        return ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("request body over {limit} bytes"),
        )
        .with(|d| d.limit = Some(LimitRef::Value(limit)))
        .into_response();
    }
    next.run(req).await
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
        .route("/v1/journal", get(journal_stats))
        .route("/v1/runs/{id}", get(show_run))
        .route("/v1/runs/{id}/replay", post(replay_run))
        .route("/v1/audit", get(audit_stream))
        .route("/metrics", get(metrics))
        .route("/v1/plans", get(list_plans))
        .route(
            "/v1/plans/{name}",
            get(show_plan).put(put_plan).delete(remove_plan),
        )
        .route("/v1/plans/{name}/runs", post(start_plan_run))
        .route("/v1/plan-runs", get(list_plan_runs))
        .route("/v1/plan-runs/{id}", get(show_plan_run))
        .route("/v1/plan-runs/{id}/cancel", post(cancel_plan_run))
        .route("/v1/plan-runs/{id}/resume", post(resume_plan_run))
        .route("/v1/plan-runs/{id}/events", get(plan_run_events))
        .merge(crate::agent_routes::routes())
        .route("/v1/models", get(crate::openai::models))
        .route(
            "/v1/chat/completions",
            post(crate::openai::chat_completions),
        )
        // Components that export wasi:http/incoming-handler, any method.
        .route(
            "/http/{name}",
            axum::routing::any(crate::http_handlers::route),
        )
        .route(
            "/http/{name}/",
            axum::routing::any(crate::http_handlers::route),
        )
        .route(
            "/http/{name}/{*rest}",
            axum::routing::any(crate::http_handlers::route),
        )
        .route("/v1/kv", get(kv_buckets))
        .route("/v1/kv/{bucket}", get(kv_keys))
        // A wildcard: a key may contain `/` (as is, or as `%2F`).
        .route(
            "/v1/kv/{bucket}/{*key}",
            get(kv_get).put(kv_put).delete(kv_delete),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(server.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(server.clone(), authorize))
        .layer(middleware::from_fn_with_state(server.clone(), limit_body))
        .layer(middleware::from_fn_with_state(guard, crate::guard::guard))
        .layer(middleware::from_fn(trace_request))
        .with_state(server)
}

/// With tracing on, a server span per request, the child of the request's
/// `traceparent` when it has one; the handler runs in its context, so the
/// call it makes hangs under it.
async fn trace_request(req: Request, next: Next) -> Response {
    use opentelemetry::KeyValue;
    use tessera_runtime::telemetry;
    if !telemetry::enabled() {
        return next.run(req).await;
    }
    let parent = telemetry::extract(req.headers());
    let cx = telemetry::start(
        format!("{} {}", req.method(), req.uri().path()),
        opentelemetry::trace::SpanKind::Server,
        &parent,
        vec![
            KeyValue::new("http.request.method", req.method().to_string()),
            KeyValue::new("url.path", req.uri().path().to_string()),
        ],
    );
    let response = opentelemetry::context::FutureExt::with_context(next.run(req), cx.clone()).await;
    let status = response.status();
    telemetry::end(
        &cx,
        vec![KeyValue::new(
            "http.response.status_code",
            i64::from(status.as_u16()),
        )],
        status.is_server_error().then(|| status.to_string()),
    );
    response
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("no route {} (see /openapi.json)", req.uri().path()),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{} does not take {}", req.uri().path(), req.method()),
    )
}

/// The errors of `Server::sync` after a registry change.
fn sync_error(e: crate::ServerError) -> ApiError {
    ApiError::new(ErrorCode::Registry, e.to_string())
}

async fn health(State(server): State<Arc<Server>>) -> Json<api::Health> {
    let loading = server.loading();
    let ready = server.active_names();
    let failed = server
        .load_failures()
        .iter()
        .filter(|(n, _)| !ready.contains(n) && !loading.iter().any(|l| &l.name == n))
        .count();
    Json(api::Health {
        status: api::HealthStatus::Ok,
        ready: ready.len() as u64,
        loading: loading.len() as u64,
        failed: failed as u64,
    })
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}

fn component_info(
    server: &Server,
    name: &str,
    details: bool,
) -> Result<api::ComponentInfo, ApiError> {
    let entry = server.registry.get(name)?;
    let active = server.active(name);
    let mut info = api::ComponentInfo::from_entry(name, &entry);
    info.loaded = active.as_ref().map(|a| a.version as u64);
    if details {
        info.functions = active.as_ref().map(|a| {
            a.loaded
                .exposures()
                .map(|(f, exposure)| api::function_doc(f, exposure))
                .collect()
        });
        // A manifest that no longer parses is reported by `load_error`.
        info.grants = api::GrantsInfo::of(name, entry.active, entry.active_version()).ok();
    }
    if info.loaded != Some(entry.active as u64) {
        info.load_error = server
            .load_failures()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, e)| e.to_string());
    }
    info.loading = server.loading_of(name).map(|l| l.version as u64);
    Ok(info)
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

async fn list_components(State(server): State<Arc<Server>>) -> ApiResult<Json<api::ComponentList>> {
    let names: Vec<String> = server.registry.list()?.into_keys().collect();
    let components = names
        .iter()
        .map(|n| component_info(&server, n, false))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(api::ComponentList { components }))
}

async fn inspect_component(
    State(server): State<Arc<Server>>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<api::ComponentInfo>> {
    Ok(Json(component_info(&server, &name, true)?))
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if crate::registry::valid_name(name) {
        Ok(())
    } else {
        Err(RegistryError::InvalidName(name.to_string()).into())
    }
}

async fn register(
    server: &Arc<Server>,
    name: &str,
    bytes: Vec<u8>,
    manifest: Option<(String, std::path::PathBuf)>,
    origin: &str,
) -> ApiResult<(StatusCode, Json<api::Registered>)> {
    // Compiled and link-checked (with this server's runtime, so the
    // compiled code is ready to serve) before anything is registered.
    let new = crate::admit::NewVersion {
        name: name.to_string(),
        bytes,
        manifest,
        origin: origin.to_string(),
    };
    let (rt, registry) = (server.runtime.clone(), server.registry.clone());
    let admitted = tokio::task::spawn_blocking(move || {
        crate::admit::add_checked(&rt, &registry, new, crate::admit::HostCheck::Bind, |_| {})
    })
    .await
    .map_err(|e| ApiError::new(ErrorCode::Engine, format!("compile task failed: {e}")))??;
    let version = admitted.version;
    server.sync().await.map_err(sync_error)?;
    Ok((
        StatusCode::CREATED,
        Json(api::Registered {
            name: name.to_string(),
            active_version: version as u64,
        }),
    ))
}

/// Reads a regular file the server can see (never a device or a pipe,
/// which could block or never end).
async fn read_server_file(path: &str, code: ErrorCode) -> Result<Vec<u8>, ApiError> {
    let fail = |e: String| ApiError::new(code, format!("{path}: {e}"));
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail("not a regular file".into()));
    }
    tokio::fs::read(path).await.map_err(|e| fail(e.to_string()))
}

async fn add_by_path(
    State(server): State<Arc<Server>>,
    Body(body): Body,
) -> ApiResult<(StatusCode, Json<api::Registered>)> {
    let req: api::AddByPath = parse_json(&body)?;
    check_name(&req.name)?;
    let bytes = read_server_file(&req.path, ErrorCode::BadComponent).await?;
    let manifest = match &req.manifest_path {
        Some(p) => {
            let bytes = read_server_file(p, ErrorCode::BadManifest).await?;
            let text = String::from_utf8(bytes).map_err(|_| {
                ApiError::new(ErrorCode::BadManifest, format!("{p}: not UTF-8 text"))
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

async fn upload(
    State(server): State<Arc<Server>>,
    ApiPath(name): ApiPath<String>,
    Body(body): Body,
) -> ApiResult<(StatusCode, Json<api::Registered>)> {
    let req: api::Upload = parse_json(&body)?;
    check_name(&name)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(req.wasm_base64.as_bytes())
        .map_err(|e| {
            ApiError::new(ErrorCode::BadComponent, format!("wasm_base64: {e}"))
                .with(|d| d.path = Some("$.wasm_base64".into()))
        })?;
    let origin = match req.origin.as_deref() {
        None => "upload",
        Some(o)
            if !o.is_empty() && o.chars().count() <= 1024 && !o.chars().any(char::is_control) =>
        {
            o
        }
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::BadJson,
                "origin: 1 to 1024 characters without control characters",
            )
            .with(|d| d.path = Some("$.origin".into())));
        }
    };
    let manifest = req.manifest.map(|m| (m, server.config.data.clone()));
    register(&server, &name, bytes, manifest, origin).await
}

async fn activate(
    State(server): State<Arc<Server>>,
    ApiPath(name): ApiPath<String>,
    Body(body): Body,
) -> ApiResult<Json<api::ComponentInfo>> {
    let req: api::Activate = parse_json(&body)?;
    let version = usize::try_from(req.version).unwrap_or(usize::MAX);
    server.registry.activate(&name, version)?;
    server.sync().await.map_err(sync_error)?;
    Ok(Json(component_info(&server, &name, false)?))
}

async fn rollback(
    State(server): State<Arc<Server>>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<api::ComponentInfo>> {
    server.registry.rollback(&name)?;
    server.sync().await.map_err(sync_error)?;
    Ok(Json(component_info(&server, &name, false)?))
}

async fn remove_component(
    State(server): State<Arc<Server>>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    server.registry.remove(&name)?;
    server.sync().await.map_err(sync_error)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn call(
    State(server): State<Arc<Server>>,
    ApiPath((name, function)): ApiPath<(String, String)>,
    token: Option<axum::Extension<crate::auth::TokenId>>,
    Body(body): Body,
) -> ApiResult<Json<api::CallResult>> {
    let args = if body.is_empty() {
        serde_json::Map::new()
    } else {
        parse_json::<api::CallArgs>(&body)?.0
    };
    let caller = tessera_journal::Caller {
        via: "http".into(),
        token: token.map(|t| t.0.0),
    };
    let mut called = server
        .call(&name, &function, &Value::Object(args), None, caller)
        .await?;
    let (result, ok) = match called.verdict() {
        Verdict::Returned { value, ok, .. } => (value, ok),
        Verdict::Failed(error) => return Err(error),
    };
    let outcome = called.outcome;
    Ok(Json(api::CallResult {
        ok,
        result,
        component: name,
        version: called.active.version as u64,
        function: outcome.function,
        run_id: called.run_id,
        fuel_consumed: outcome.fuel_consumed,
        duration_us: outcome.duration.as_micros() as u64,
        stdout: String::from_utf8_lossy(&outcome.output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&outcome.output.stderr).into_owned(),
        logs: outcome
            .output
            .logs
            .iter()
            .map(|l| api::LogLine {
                level: api::LogLine::level_name(l.level),
                context: l.context.clone(),
                message: l.message.clone(),
            })
            .collect(),
    }))
}

fn object(v: impl serde::Serialize) -> serde_json::Map<String, Value> {
    match serde_json::to_value(v) {
        Ok(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}

async fn journal_stats(State(server): State<Arc<Server>>) -> ApiResult<Json<api::JournalStats>> {
    let s = server.journal.stats().map_err(ApiError::from)?;
    Ok(Json(api::JournalStats {
        file_bytes: s.file_bytes,
        allocated_bytes: s.allocated_bytes,
        runs: s.runs,
        incomplete: s.incomplete,
        held: s.held,
        steps: s.steps,
        record_bytes: s.record_bytes,
        header_bytes: s.header_bytes,
        end_bytes: s.end_bytes,
        blobs: s.blobs,
        blob_bytes: s.blob_bytes,
        bytes_per_run: s.bytes_per_run,
        components: s.components.iter().map(object).collect(),
    }))
}

async fn list_runs(State(server): State<Arc<Server>>) -> ApiResult<Json<api::RunList>> {
    let runs = server.journal.list().map_err(ApiError::from)?;
    Ok(Json(api::RunList {
        runs: runs
            .iter()
            .map(|r| api::RunSummary {
                run_id: r.header.run_id.clone(),
                started: r.header.started.clone(),
                component: serde_json::to_value(&r.header.component).unwrap_or_default(),
                function: r.header.function.clone(),
                steps: r.steps,
                bytes: r.bytes,
                holds: r.holds.clone(),
                complete: r.end.is_some(),
                end: r.end.as_ref().map(object),
            })
            .collect(),
    }))
}

async fn show_run(
    State(server): State<Arc<Server>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<api::RunDetail>> {
    let id = server.journal.resolve(&id).map_err(ApiError::from)?;
    let header = server.journal.header(&id).map_err(ApiError::from)?;
    let steps = server.journal.steps(&id).map_err(ApiError::from)?;
    let end = server.journal.end(&id).map_err(ApiError::from)?;
    Ok(Json(api::RunDetail {
        header: object(&header),
        steps: steps
            .iter()
            .map(|(i, s)| api::RunStep {
                index: *i,
                interaction: serde_json::to_value(s).unwrap_or_default(),
            })
            .collect(),
        end: end.as_ref().map(object),
    }))
}

async fn replay_run(
    State(server): State<Arc<Server>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<api::ReplayResult>> {
    let report = tessera_journal::replay(&server.runtime, &server.journal, &id, None)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(api::ReplayResult {
        run_id: report.run_id,
        identical: report.divergence.is_none(),
        recorded_steps: report.recorded_steps,
        divergence: report.divergence.as_ref().map(|d| d.to_string()),
    }))
}

/// `GET /metrics`: the server's metrics as OpenMetrics text (Prometheus
/// scrapes it); the audit chain is checked if the log grew.
async fn metrics(State(server): State<Arc<Server>>) -> Response {
    // Mailbox depths are read now: one record and one counter per agent.
    if let Some(system) = server.agents.get()
        && let Ok(agents) = system.list().await
    {
        let depths: Vec<(String, u64)> =
            agents.into_iter().map(|a| (a.record.id, a.depth)).collect();
        server.metrics.set_mailboxes(&depths);
    }
    let m = server.metrics.clone();
    match tokio::task::spawn_blocking(move || m.render()).await {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => ApiError::new(ErrorCode::Internal, format!("metrics: {e}")).into_response(),
    }
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

async fn list_plans(State(server): State<Arc<Server>>) -> ApiResult<Json<api::PlanList>> {
    let mut plans = Vec::new();
    for name in server.plans.names()? {
        match server.plans.get(&name) {
            Ok(stored) => plans.push(api::PlanInfo::of(&stored, false)),
            // Removed meanwhile.
            Err(crate::plan_registry::PlanRegistryError::NoSuchPlan(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Json(api::PlanList { plans }))
}

async fn show_plan(
    State(server): State<Arc<Server>>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<api::PlanInfo>> {
    let stored = server.stored_plan(&name)?;
    Ok(Json(api::PlanInfo::of(&stored, true)))
}

async fn put_plan(
    State(server): State<Arc<Server>>,
    ApiPath(name): ApiPath<String>,
    Body(body): Body,
) -> ApiResult<(StatusCode, Json<api::PlanInfo>)> {
    let req: api::PlanUpload = parse_json(&body)?;
    let bad = |path: &str, message: &str| {
        let path = path.to_string();
        ApiError::new(ErrorCode::BadJson, message).with(|d| d.path = Some(path))
    };
    let base = match req.base.as_deref() {
        None => server.config.data.clone(),
        Some(b) if std::path::Path::new(b).is_absolute() => std::path::PathBuf::from(b),
        Some(_) => return Err(bad("$.base", "base: an absolute directory")),
    };
    let origin = match req.origin {
        None => format!("plans/{name}.toml"),
        Some(o) if !o.is_empty() && o.len() <= 1024 && !o.chars().any(char::is_control) => o,
        Some(_) => {
            return Err(bad(
                "$.origin",
                "origin: 1 to 1024 characters without control characters",
            ));
        }
    };
    // Read and checked against the components served here before it is
    // stored: a plan that cannot run is refused with every problem.
    let plan = crate::plan_registry::check(&name, &req.text, &origin, &base)?;
    crate::plans::check_against_active(&server, &plan)?;
    server.plans.put(&name, &req.text, &base, &origin)?;
    server.plans_changed();
    let stored = server.stored_plan(&name)?;
    Ok((StatusCode::CREATED, Json(api::PlanInfo::of(&stored, true))))
}

async fn remove_plan(
    State(server): State<Arc<Server>>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    server.plans.remove(&name)?;
    server.plans_changed();
    Ok(StatusCode::NO_CONTENT)
}

async fn start_plan_run(
    State(server): State<Arc<Server>>,
    ApiPath(name): ApiPath<String>,
    token: Option<axum::Extension<crate::auth::TokenId>>,
    Body(body): Body,
) -> ApiResult<(StatusCode, Json<api::PlanRunStarted>)> {
    let inputs = if body.is_empty() {
        serde_json::Map::new()
    } else {
        parse_json::<api::PlanInputs>(&body)?.0
    };
    let handle = server
        .start_plan(&name, &Value::Object(inputs), token.map(|t| t.0.0))
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(api::PlanRunStarted { run: handle.id }),
    ))
}

/// A page size from a `limit` query parameter: `default` when absent,
/// else 1 to `max`.
pub(crate) fn page_limit(text: Option<&str>, default: usize, max: usize) -> ApiResult<usize> {
    match text {
        None | Some("") => Ok(default),
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::BadQuery,
                    format!("limit: `{text}` is not a number from 1 to {max}"),
                )
                .with(|d| d.limit = Some(LimitRef::Value(max as u64)))
            }),
    }
}

/// The query of `GET /v1/plan-runs`.
#[derive(serde::Deserialize)]
struct PlanRunsQuery {
    #[serde(default)]
    limit: Option<String>,
}

async fn list_plan_runs(
    State(server): State<Arc<Server>>,
    ApiQuery(query): ApiQuery<PlanRunsQuery>,
) -> ApiResult<Json<api::PlanRunList>> {
    let limit = page_limit(
        query.limit.as_deref(),
        api::DEFAULT_PLAN_RUN_PAGE,
        api::MAX_PLAN_RUN_PAGE,
    )?;
    let progress = server.plan_progress().await?;
    let active = server.active_plan_runs();
    // Newest first, by start time (`Progress::runs` orders them).
    let runs = store_op(progress.runs(limit)).await?;
    Ok(Json(api::PlanRunList {
        runs: runs
            .iter()
            .map(|r| api::PlanRunSummary::new(r, active.contains(&r.id)))
            .collect(),
    }))
}

async fn show_plan_run(
    State(server): State<Arc<Server>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<api::PlanRunDetail>> {
    let progress = server.plan_progress().await?;
    let (rec, _) = store_op(progress.run(&id)).await?.ok_or_else(|| {
        ApiError::new(ErrorCode::NoSuchPlanRun, format!("no plan run `{id}`"))
            .with(|d| d.plan_run = Some(id.clone()))
    })?;
    let plan = tessera_orchestrator::plan::Plan::from_toml(
        &rec.text,
        &rec.origin,
        std::path::Path::new(&rec.base),
        &rec.plan,
    )
    .map_err(|e| crate::plans::plan_error(ErrorCode::BadPlan, e))?;
    let steps = store_op(tessera_orchestrator::run::step_records(
        &progress, &plan, &rec.id,
    ))
    .await?
    .into_iter()
    .map(|(step, r)| api::PlanRunStep {
        step,
        record: r.as_ref().map(api::PlanStepRecord::from),
    })
    .collect();
    let active = server.active_plan_runs().contains(&rec.id);
    Ok(Json(api::PlanRunDetail::new(&rec, steps, active)))
}

async fn cancel_plan_run(
    State(server): State<Arc<Server>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<api::PlanRunSummary>> {
    let rec = server.cancel_plan_run(&id).await?;
    let active = server.active_plan_runs().contains(&rec.id);
    Ok(Json(api::PlanRunSummary::new(&rec, active)))
}

async fn resume_plan_run(
    State(server): State<Arc<Server>>,
    ApiPath(id): ApiPath<String>,
    token: Option<axum::Extension<crate::auth::TokenId>>,
) -> ApiResult<(StatusCode, Json<api::PlanRunStarted>)> {
    let handle = server.resume_plan(&id, token.map(|t| t.0.0)).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(api::PlanRunStarted { run: handle.id }),
    ))
}

async fn plan_run_events(
    State(server): State<Arc<Server>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    use futures_util::StreamExt as _;
    let events = server.plan_run_events(&id).await?;
    let stream = events.map(|event| {
        let data = serde_json::to_value(&event).unwrap_or_default();
        let name = data["event"].as_str().unwrap_or("event").to_string();
        Ok::<_, std::convert::Infallible>(Event::default().event(name).data(data.to_string()))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// How long a store operation may take before the API gives up with 503
/// `store_unavailable` (a NATS server that accepts connections but does
/// not answer).
const STORE_DEADLINE: Duration = Duration::from_secs(20);

/// Runs a store operation under [`STORE_DEADLINE`].
async fn store_op<T>(
    op: impl std::future::Future<Output = Result<T, tessera_store::StoreError>>,
) -> ApiResult<T> {
    match tokio::time::timeout(STORE_DEADLINE, op).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(_) => Err(ApiError::new(
            ErrorCode::StoreUnavailable,
            format!(
                "the store did not answer within {} s",
                STORE_DEADLINE.as_secs()
            ),
        )),
    }
}

fn stores(server: &Server) -> ApiResult<&Arc<Stores>> {
    server.stores().ok_or_else(|| {
        ApiError::new(
            ErrorCode::StoreUnavailable,
            "this server has no key-value stores",
        )
    })
}

/// Checks the names, then opens (or connects to) the bucket's backend.
async fn open_bucket(server: &Server, bucket: &str, key: Option<&str>) -> ApiResult<SharedStore> {
    tessera_store::check_bucket(bucket)?;
    if let Some(key) = key {
        tessera_store::check_key(key)?;
    }
    let stores = stores(server)?;
    store_op(stores.for_bucket(bucket)).await
}

async fn kv_buckets(State(server): State<Arc<Server>>) -> ApiResult<Json<api::BucketList>> {
    let stores = stores(&server)?;
    let settings = stores.settings();
    // The embedded store is listed when buckets live there (or it holds
    // some from before); NATS when it is configured.
    let mut kinds = Vec::new();
    if settings.default == BackendKind::Embedded
        || settings
            .buckets
            .values()
            .any(|b| *b == BackendKind::Embedded)
        || stores.embedded_path().exists()
    {
        kinds.push(BackendKind::Embedded);
    }
    if settings.nats.is_some() {
        kinds.push(BackendKind::Nats);
    }
    let mut buckets = Vec::new();
    for kind in kinds {
        let store = store_op(stores.backend(kind)).await?;
        for name in store_op(store.buckets()).await? {
            buckets.push(api::BucketInfo {
                name,
                backend: kind.name().to_string(),
            });
        }
    }
    buckets.sort();
    Ok(Json(api::BucketList { buckets }))
}

/// The query of `GET /v1/kv/{bucket}` (empty values count as absent).
#[derive(serde::Deserialize)]
struct KeysQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<String>,
}

/// The query of `DELETE /v1/kv/{bucket}/{key}`.
#[derive(serde::Deserialize)]
struct DeleteQuery {
    #[serde(default)]
    expect_revision: Option<String>,
}

async fn kv_keys(
    State(server): State<Arc<Server>>,
    ApiPath(bucket): ApiPath<String>,
    ApiQuery(query): ApiQuery<KeysQuery>,
) -> ApiResult<Json<api::KeyPage>> {
    let limit = page_limit(
        query.limit.as_deref(),
        api::DEFAULT_KEY_PAGE,
        api::MAX_KEY_PAGE,
    )?;
    let after = query.after.filter(|a| !a.is_empty());
    let store = open_bucket(&server, &bucket, None).await?;
    let page = store_op(store.list(&bucket, &query.prefix, after.as_deref(), limit)).await?;
    Ok(Json(api::KeyPage {
        backend: store.backend().to_string(),
        bucket,
        keys: page.keys,
        cursor: page.cursor,
    }))
}

/// The error of a key without a value.
fn no_such_key(bucket: String, key: String) -> ApiError {
    ApiError::new(
        ErrorCode::NoSuchKey,
        format!("bucket `{bucket}` has no value at key {key:?}"),
    )
    .with(|d| {
        d.bucket = Some(bucket);
        d.key = Some(key);
    })
}

async fn kv_get(
    State(server): State<Arc<Server>>,
    ApiPath((bucket, key)): ApiPath<(String, String)>,
) -> ApiResult<Json<api::KvEntry>> {
    let store = open_bucket(&server, &bucket, Some(&key)).await?;
    match store_op(store.get(&bucket, &key)).await? {
        Some(entry) => Ok(Json(api::KvEntry::new(&bucket, &key, &entry))),
        None => Err(no_such_key(bucket, key)),
    }
}

async fn kv_put(
    State(server): State<Arc<Server>>,
    ApiPath((bucket, key)): ApiPath<(String, String)>,
    Body(body): Body,
) -> ApiResult<Json<api::KvWritten>> {
    tessera_store::check_bucket(&bucket)?;
    tessera_store::check_key(&key)?;
    let req: api::KvPut = parse_json(&body)?;
    let bad = |path: &str, message: String| {
        let path = path.to_string();
        ApiError::new(ErrorCode::BadJson, message).with(|d| d.path = Some(path))
    };
    let value = match (req.value, req.value_base64) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| bad("$.value_base64", format!("value_base64: {e}")))?,
        (Some(_), Some(_)) => {
            return Err(bad(
                "$.value_base64",
                "give `value` (text) or `value_base64` (bytes), not both".into(),
            ));
        }
        (None, None) => {
            return Err(bad(
                "$.value",
                "the value is missing: give `value` (text) or `value_base64` (bytes)".into(),
            ));
        }
    };
    let expect = match (req.expect_revision, req.expect_absent) {
        (Some(_), true) => {
            return Err(bad(
                "$.expect_absent",
                "give `expect_revision` or `expect_absent`, not both".into(),
            ));
        }
        (Some(revision), false) => Expect::Revision(revision),
        (None, true) => Expect::Absent,
        (None, false) => Expect::Any,
    };
    let store = open_bucket(&server, &bucket, Some(&key)).await?;
    let revision = store_op(store.put(&bucket, &key, &value, expect, None)).await?;
    Ok(Json(api::KvWritten { revision }))
}

async fn kv_delete(
    State(server): State<Arc<Server>>,
    ApiPath((bucket, key)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<DeleteQuery>,
) -> ApiResult<StatusCode> {
    let expect = match query.expect_revision.as_deref() {
        None | Some("") => Expect::Any,
        Some(text) => Expect::Revision(text.parse::<u64>().map_err(|_| {
            ApiError::new(
                ErrorCode::BadQuery,
                format!("expect_revision: `{text}` is not a revision (a whole number)"),
            )
        })?),
    };
    let store = open_bucket(&server, &bucket, Some(&key)).await?;
    store_op(store.delete(&bucket, &key, expect)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_enforced_are_the_scopes_documented() {
        for route in crate::openapi::ROUTES {
            let method: axum::http::Method = route.method.to_uppercase().parse().unwrap();
            let path = route
                .path
                .replace("{name}", "n")
                .replace("{function}", "f")
                .replace("{id}", "i")
                .replace("{bucket}", "b")
                .replace("{key}", "k/call/x")
                .replace("{request}", "r");
            let enforced: Vec<&str> = accepted_scopes(&method, &path)
                .unwrap_or_default()
                .iter()
                .map(|s| match s {
                    Scope::Call => "call",
                    Scope::Manage => "manage",
                    Scope::Read => "read",
                })
                .collect();
            assert_eq!(enforced, route.scopes, "{} {}", route.method, route.path);
        }
    }
}
