//! The runner's HTTP API (axum): routes, bearer-token authentication, the
//! follow-mode log stream, and [`AppError`], the one error response type.
//!
//! | method | path | |
//! |---|---|---|
//! | POST | `/run_playbook` | [`RunRequest`] → 202 [`super::api::RunAccepted`] |
//! | GET | `/playbook_status/{id}` | [`super::api::RunStatus`] |
//! | GET | `/playbook_logs/{id}[?follow=true]` | the run's log (text); follow streams until the run ends |
//! | POST | `/cancel/{id}` | [`super::api::RunStatus`] |
//! | POST | `/host_logs/list` | [`HostLogsRequest`] → [`super::api::LogFileList`] |
//! | POST | `/host_logs/read` | [`HostLogsRequest`] with `file` → the file (bytes) |
//! | GET | `/metrics` | OpenMetrics text |
//! | GET | `/healthz` | `ok`, without authentication |

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::RunnerError;
use super::api::{ErrorBody, HostLogsRequest, RunRequest};
use super::service::Runner;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The runner.
    pub runner: Arc<Runner>,
    /// The bearer token every request but `/healthz` must carry.
    pub token: Arc<String>,
}

/// An error answer: a status code and `{"error": message}`.
#[derive(Debug)]
pub struct AppError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong.
    pub message: String,
}

impl AppError {
    fn new(status: StatusCode, message: impl Into<String>) -> AppError {
        AppError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

impl From<RunnerError> for AppError {
    fn from(e: RunnerError) -> AppError {
        let status = match &e {
            RunnerError::Invalid(_) => StatusCode::BAD_REQUEST,
            RunnerError::NotFound(_) => StatusCode::NOT_FOUND,
            RunnerError::HostLogs(_) => StatusCode::BAD_GATEWAY,
            RunnerError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        AppError::new(status, e.to_string())
    }
}

/// The router, without a listener (tests may call it directly).
pub fn app(state: AppState) -> Router {
    let protected = Router::new()
        .route("/run_playbook", post(run_playbook))
        .route("/playbook_status/{id}", get(playbook_status))
        .route("/playbook_logs/{id}", get(playbook_logs))
        .route("/cancel/{id}", post(cancel))
        .route("/host_logs/list", post(host_logs_list))
        .route("/host_logs/read", post(host_logs_read))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(protected)
        .with_state(state)
}

fn same(a: &[u8], b: &[u8]) -> bool {
    // Length leaks, content does not.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authenticate(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Result<Response, AppError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if same(token.as_bytes(), state.token.as_bytes()) => {
            Ok(next.run(request).await)
        }
        _ => Err(AppError::new(
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is required",
        )),
    }
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, AppError> {
    serde_json::from_slice(body).map_err(|e| {
        AppError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {e}"),
        )
    })
}

fn check_id(id: &str) -> Result<(), AppError> {
    uuid::Uuid::parse_str(id)
        .map(|_| ())
        .map_err(|_| AppError::new(StatusCode::NOT_FOUND, format!("no run {id}")))
}

async fn run_playbook(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<impl IntoResponse, AppError> {
    let request: RunRequest = parse(&body)?;
    let accepted = state.runner.submit(request)?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

async fn playbook_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, AppError> {
    check_id(&id)?;
    state
        .runner
        .status(&id)
        .map(Json)
        .ok_or_else(|| AppError::from(RunnerError::NotFound(id)))
}

async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, AppError> {
    check_id(&id)?;
    Ok(Json(state.runner.cancel(&id)?))
}

/// Query of `/playbook_logs/{id}`.
#[derive(Debug, Deserialize)]
struct LogsQuery {
    #[serde(default)]
    follow: bool,
}

async fn read_from(path: &std::path::Path, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut buf = Vec::new();
    file.take(1 << 20).read_to_end(&mut buf).await?;
    Ok(buf)
}

async fn playbook_logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<LogsQuery>,
) -> Result<Response, AppError> {
    check_id(&id)?;
    let path = state
        .runner
        .log_path(&id)
        .ok_or_else(|| AppError::from(RunnerError::NotFound(id.clone())))?;
    let text = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !query.follow {
        let body = tokio::fs::read(&path).await.unwrap_or_default();
        return Ok((text, body).into_response());
    }
    let runner = state.runner.clone();
    // Poll the file: it is the single source for live and finished runs, and
    // for runs from before a restart.
    let stream = futures::stream::unfold((0u64, false), move |(offset, ended)| {
        let runner = runner.clone();
        let path = path.clone();
        let id = id.clone();
        async move {
            let mut ended = ended;
            loop {
                match read_from(&path, offset).await {
                    Ok(chunk) if !chunk.is_empty() => {
                        let next = offset + chunk.len() as u64;
                        return Some((Ok(Bytes::from(chunk)), (next, ended)));
                    }
                    Ok(_) => {}
                    Err(e) => return Some((Err(e), (offset, true))).filter(|_| !ended),
                }
                if ended {
                    return None;
                }
                if runner.status(&id).is_none_or(|s| s.state.is_terminal()) {
                    // One more read catches the last lines.
                    ended = true;
                    continue;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    Ok((text, Body::from_stream(stream)).into_response())
}

async fn host_logs_list(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<impl IntoResponse, AppError> {
    let request: HostLogsRequest = parse(&body)?;
    Ok(Json(state.runner.list_host_logs(&request).await?))
}

async fn host_logs_read(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<impl IntoResponse, AppError> {
    let request: HostLogsRequest = parse(&body)?;
    let bytes = state.runner.read_host_log(&request).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.runner.metrics.encode(),
    )
}
