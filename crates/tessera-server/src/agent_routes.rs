//! The agent routes of the HTTP API (`/v1/agents…`; the agent system
//! itself is in `agents.rs`).
//!
//! An agent id is one path segment: a child's id (`parent/child`) is
//! written with its `/` percent-encoded (`parent%2Fchild`). `GET
//! /v1/agents/events` is the event stream; an agent named `events` is
//! read with its name percent-encoded (`/v1/agents/%65vents`), or from the
//! list.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tessera_orchestrator::agent::records;
use tessera_runtime::capability::agent::ComponentSpec;

use crate::agents::{agent_error, body_text, check_top_level_id, event_concerns, reply_value};
use crate::api;
use crate::auth::Scope;
use crate::error::{ApiError, ErrorCode};
use crate::http::{ApiPath, ApiQuery, ApiResult, Body, page_limit, parse_json};
use crate::plans::store_op;
use crate::{Server, auth};

/// The scopes of the agent routes: `read` to look (and watch events),
/// `call` to send messages, decide approvals and re-drive dead letters,
/// `manage` to spawn, fork and restart agents. `None` for other routes.
pub(crate) fn scopes(method: &Method, path: &str) -> Option<&'static [Scope]> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if segments.len() < 2 || segments[0] != "v1" || segments[1] != "agents" {
        return None;
    }
    let looks = method == Method::GET || method == Method::HEAD;
    Some(match segments.as_slice() {
        _ if looks => &[Scope::Read],
        ["v1", "agents"] | ["v1", "agents", _, "fork" | "restart"] => &[Scope::Manage],
        _ => &[Scope::Call],
    })
}

/// The agent routes.
pub(crate) fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route("/v1/agents", get(list).post(spawn))
        .route("/v1/agents/events", get(events))
        .route("/v1/agents/{id}", get(show))
        .route("/v1/agents/{id}/messages", post(send))
        .route("/v1/agents/{id}/ask", post(ask))
        .route("/v1/agents/{id}/turns", get(turns))
        .route("/v1/agents/{id}/dead-letters", get(dead_letters))
        .route("/v1/agents/{id}/dead-letters/redrive", post(redrive))
        .route("/v1/agents/{id}/approvals", get(approvals))
        .route("/v1/agents/{id}/approvals/{request}", post(decide))
        .route("/v1/agents/{id}/fork", post(fork))
        .route("/v1/agents/{id}/restart", post(restart))
}

fn bad_field(path: &str, message: impl Into<String>) -> ApiError {
    let path = path.to_string();
    ApiError::new(ErrorCode::BadJson, message).with(|d| d.path = Some(path))
}

/// The query of `GET /v1/agents`.
#[derive(serde::Deserialize)]
struct ListQuery {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<String>,
}

async fn list(
    State(server): State<Arc<Server>>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<api::AgentList>> {
    let limit = page_limit(
        query.limit.as_deref(),
        api::DEFAULT_AGENT_PAGE,
        api::MAX_AGENT_PAGE,
    )?;
    let sys = server.agents().await?;
    let stores = server.stores().ok_or_else(|| {
        ApiError::new(
            ErrorCode::StoreUnavailable,
            "this server has no agent store",
        )
    })?;
    let store = store_op(stores.for_bucket(records::BUCKET)).await?;
    // The agents' records are `a/<id>`, in id order.
    let after = query
        .after
        .filter(|a| !a.is_empty())
        .map(|a| records::agent_key(&a));
    let page = store_op(store.list(records::BUCKET, "a/", after.as_deref(), limit)).await?;
    let mut agents = Vec::with_capacity(page.keys.len());
    for key in &page.keys {
        let Some(id) = key.strip_prefix("a/") else {
            continue;
        };
        match sys.get(id).await {
            Ok(info) => agents.push(api::AgentInfo::of(&info)),
            // Gone meanwhile.
            Err(tessera_orchestrator::agent::AgentError::NotFound(_)) => {}
            Err(e) => return Err(agent_error(e)),
        }
    }
    Ok(Json(api::AgentList {
        agents,
        cursor: page
            .cursor
            .and_then(|c| c.strip_prefix("a/").map(str::to_string)),
    }))
}

async fn spawn(
    State(server): State<Arc<Server>>,
    Body(body): Body,
) -> ApiResult<(StatusCode, Json<api::AgentInfo>)> {
    let req: api::SpawnAgent = parse_json(&body)?;
    check_top_level_id(&req.id).map_err(|e| e.with(|d| d.path = Some("$.id".into())))?;
    if req.manifest.is_some() {
        return Err(bad_field(
            "$.manifest",
            "a registered component has its own manifest: register the component with the manifest you want (POST /v1/components) and spawn it by name",
        ));
    }
    if !crate::registry::valid_name(&req.component) {
        let looks_like_a_path = req.component.contains('/') || req.component.ends_with(".wasm");
        return Err(if looks_like_a_path {
            ApiError::new(
                ErrorCode::BadComponent,
                format!(
                    "`{}` is a file path; a server runs only registered components: register it (POST /v1/components) and spawn it by name",
                    req.component
                ),
            )
            .with(|d| d.path = Some("$.component".into()))
        } else {
            crate::registry::RegistryError::InvalidName(req.component.clone()).into()
        });
    }
    // Registered (404 otherwise); whether it is an agent is checked when
    // the agent system loads it.
    server.registry.get(&req.component)?;
    let sys = server.agents().await?;
    sys.spawn(
        &req.id,
        ComponentSpec {
            component: req.component,
            manifest: None,
        },
        req.state,
    )
    .await
    .map_err(agent_error)?;
    Ok((
        StatusCode::CREATED,
        Json(server.agent_detail(&req.id).await?),
    ))
}

async fn show(
    State(server): State<Arc<Server>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<api::AgentInfo>> {
    Ok(Json(server.agent_detail(&id).await?))
}

async fn send(
    State(server): State<Arc<Server>>,
    ApiPath(id): ApiPath<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    let req: api::SendMessage = parse_json(&body)?;
    let wait = req.wait;
    deliver(&server, id, req, wait).await
}

async fn ask(
    State(server): State<Arc<Server>>,
    ApiPath(id): ApiPath<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    let req: api::SendMessage = parse_json(&body)?;
    deliver(&server, id, req, true).await
}

/// Checks a reply timeout in milliseconds (default
/// [`api::DEFAULT_REPLY_TIMEOUT_MS`]).
pub(crate) fn reply_timeout(ms: Option<u64>) -> Result<Duration, String> {
    let ms = ms.unwrap_or(api::DEFAULT_REPLY_TIMEOUT_MS);
    if (1..=api::MAX_REPLY_TIMEOUT_MS).contains(&ms) {
        Ok(Duration::from_millis(ms))
    } else {
        Err(format!(
            "timeout_ms: {ms} is not from 1 to {}",
            api::MAX_REPLY_TIMEOUT_MS
        ))
    }
}

async fn deliver(
    server: &Arc<Server>,
    id: String,
    req: api::SendMessage,
    wait: bool,
) -> ApiResult<Response> {
    if let Some(m) = &req.id
        && (m.is_empty() || m.chars().count() > 200 || m.chars().any(char::is_control))
    {
        return Err(bad_field(
            "$.id",
            "id: a message id has 1 to 200 characters, none of them control characters",
        ));
    }
    let timeout = reply_timeout(req.timeout_ms).map_err(|m| bad_field("$.timeout_ms", m))?;
    let sent = server
        .send_to_agent(&id, &body_text(&req.body), req.id, wait.then_some(timeout))
        .await?;
    Ok(match sent.reply {
        None => (
            StatusCode::ACCEPTED,
            Json(api::MessageSent {
                agent: id,
                message: sent.message,
            }),
        )
            .into_response(),
        Some(reply) => Json(api::AgentReply {
            agent: id,
            message: sent.message,
            turn: reply.turn,
            run: reply.run,
            reply: reply_value(reply.text.as_deref()),
        })
        .into_response(),
    })
}

/// The query of `GET /v1/agents/{id}/turns`.
#[derive(serde::Deserialize)]
struct TurnsQuery {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<String>,
}

async fn turns(
    State(server): State<Arc<Server>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<TurnsQuery>,
) -> ApiResult<Json<api::TurnList>> {
    let limit = page_limit(
        query.limit.as_deref(),
        api::DEFAULT_TURN_PAGE,
        api::MAX_TURN_PAGE,
    )?;
    let after = match query.after.as_deref() {
        None | Some("") => 0,
        Some(text) => text.parse::<u64>().map_err(|_| {
            ApiError::new(
                ErrorCode::BadQuery,
                format!("after: `{text}` is not a turn number"),
            )
        })?,
    };
    Ok(Json(server.agent_turns(&id, after, limit).await?))
}

async fn dead_letters(
    State(server): State<Arc<Server>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<api::DeadLetterList>> {
    let sys = server.agents().await?;
    let list = sys.dead_letters(&id).await.map_err(agent_error)?;
    Ok(Json(api::DeadLetterList {
        dead_letters: list.iter().map(api::DeadLetterInfo::from).collect(),
    }))
}

async fn redrive(
    State(server): State<Arc<Server>>,
    ApiPath(id): ApiPath<String>,
    Body(body): Body,
) -> ApiResult<Json<api::Redriven>> {
    let req: api::Redrive = if body.is_empty() {
        api::Redrive::default()
    } else {
        parse_json(&body)?
    };
    let sys = server.agents().await?;
    let messages = sys.redrive(&id, req.seq).await.map_err(agent_error)?;
    Ok(Json(api::Redriven { messages }))
}

async fn approvals(
    State(server): State<Arc<Server>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<api::ApprovalList>> {
    let sys = server.agents().await?;
    let list = sys.approvals(&id).await.map_err(agent_error)?;
    Ok(Json(api::ApprovalList {
        approvals: list.iter().map(api::ApprovalInfo::from).collect(),
    }))
}

async fn decide(
    State(server): State<Arc<Server>>,
    ApiPath((id, request)): ApiPath<(String, String)>,
    token: Option<axum::Extension<auth::TokenId>>,
    Body(body): Body,
) -> ApiResult<Json<api::Decided>> {
    let req: api::Decide = parse_json(&body)?;
    let sys = server.agents().await?;
    // Unknown agent: 404 `no_such_agent` rather than a missing request.
    sys.get(&id).await.map_err(agent_error)?;
    let by = token.map_or_else(|| "http".to_string(), |t| t.0.0);
    let approval = sys
        .decide(&id, &request, req.approved, Some(by), req.reason)
        .await
        .map_err(agent_error)?;
    Ok(Json(api::Decided {
        approval: (&approval).into(),
    }))
}

async fn fork(
    State(server): State<Arc<Server>>,
    ApiPath(id): ApiPath<String>,
    Body(body): Body,
) -> ApiResult<(StatusCode, Json<api::AgentInfo>)> {
    let req: api::ForkAgent = parse_json(&body)?;
    check_top_level_id(&req.as_id).map_err(|e| e.with(|d| d.path = Some("$.as".into())))?;
    let sys = server.agents().await?;
    sys.fork(&id, req.at, &req.as_id)
        .await
        .map_err(agent_error)?;
    Ok((
        StatusCode::CREATED,
        Json(server.agent_detail(&req.as_id).await?),
    ))
}

async fn restart(
    State(server): State<Arc<Server>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<api::AgentInfo>> {
    let sys = server.agents().await?;
    sys.restart(&id).await.map_err(agent_error)?;
    Ok(Json(server.agent_detail(&id).await?))
}

/// The query of `GET /v1/agents/events`.
#[derive(serde::Deserialize)]
struct EventsQuery {
    #[serde(default)]
    agent: Option<String>,
}

async fn events(
    State(server): State<Arc<Server>>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> ApiResult<impl IntoResponse> {
    use futures_util::StreamExt as _;
    use tokio::sync::broadcast::error::RecvError;
    let filter = query.agent.filter(|a| !a.is_empty());
    if let Some(a) = &filter {
        tessera_runtime::capability::agent::check_agent_id(a)
            .map_err(|m| ApiError::new(ErrorCode::BadQuery, format!("agent: {m}")))?;
    }
    let sys = server.agents().await?;
    let rx = sys.events();
    let stopping = server.stopping().clone().cancelled_owned();
    let stream = futures_util::stream::unfold((rx, filter), |(mut rx, filter)| async move {
        loop {
            let event = match rx.recv().await {
                Ok(event) => {
                    if filter
                        .as_deref()
                        .is_some_and(|f| !event_concerns(&event, f))
                    {
                        continue;
                    }
                    let data = serde_json::to_value(&event).unwrap_or_default();
                    let name = data["event"].as_str().unwrap_or("event").to_string();
                    Event::default().event(name).data(data.to_string())
                }
                // The watcher fell behind: it is told how many it missed.
                Err(RecvError::Lagged(missed)) => Event::default()
                    .event("lagged")
                    .data(json!({"event": "lagged", "missed": missed}).to_string()),
                Err(RecvError::Closed) => return None,
            };
            return Some((Ok::<_, std::convert::Infallible>(event), (rx, filter)));
        }
    })
    // The stream ends when the server shuts down.
    .take_until(stopping);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
