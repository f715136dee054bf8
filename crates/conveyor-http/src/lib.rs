//! Conveyor's HTTP API, served by `conveyor serve` (127.0.0.1:7878 by default):
//!
//! * `POST /api/2/json/{login}/{unixtime}/{signature}` — Corezoid's task API v2, signed
//!   `hex(sha1(unixtime + secret + body + secret))`; ops `create`, `modify`, `show`,
//!   `delete`, answered in order;
//! * `GET|POST /api/1/json/public/{process}/{hash}` — a process's direct URL: creates a
//!   task from any request, or modifies the task named by its `ref` parameter;
//! * `GET /healthz`, `GET /metrics` (Prometheus text);
//! * `POST /admin/command` — the CLI's commands, run by the server for a `conveyor`
//!   client, authorized by the local admin token the server writes into the data dir;
//! * `GET /` — the read-only dashboard (see `dashboard.rs`).

mod dashboard;
mod direct;
mod task_api;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use conveyor_runtime::Runtime;
use serde_json::{Value, json};

/// Runs one CLI command on the server: takes the command as JSON, gives back
/// `{"stdout": …, "stderr": …, "code": …}`. Supplied by the binary, which owns the CLI.
pub type CommandHandler = Arc<dyn Fn(Value) -> Value + Send + Sync>;

/// Limits on what a request may carry.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body (default 1 MiB).
    pub body_bytes: usize,
    /// Most ops in one task API request (default 100).
    pub ops_per_request: usize,
    /// How far a request's time may be from ours (default 300 s).
    pub max_clock_skew_secs: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes: 1024 * 1024,
            ops_per_request: 100,
            max_clock_skew_secs: 300,
        }
    }
}

pub struct Config {
    /// The token of `POST /admin/command` (written to the data dir for the CLI).
    pub admin_token: String,
    pub limits: Limits,
    pub command: Option<CommandHandler>,
}

pub(crate) struct AppState {
    runtime: Arc<Runtime>,
    config: Config,
    /// Signatures seen lately (signature → request time), to refuse replays.
    seen: Mutex<HashMap<String, i64>>,
    /// Dashboard sessions (random cookie values).
    sessions: Mutex<std::collections::HashSet<String>>,
}

/// The API's routes over `runtime`.
pub fn router(runtime: Arc<Runtime>, config: Config) -> Router {
    let state = Arc::new(AppState {
        runtime,
        config,
        seen: Mutex::new(HashMap::new()),
        sessions: Mutex::new(std::collections::HashSet::new()),
    });
    Router::new()
        .route(
            "/api/2/json/{login}/{time}/{signature}",
            post(task_api::handle),
        )
        .route(
            "/api/1/json/public/{process}/{hash}",
            get(direct::handle).post(direct::handle),
        )
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .route("/admin/command", post(admin_command))
        .route("/", get(dashboard::page))
        .route(
            "/ui/login",
            get(dashboard::login).post(dashboard::login_post),
        )
        .route("/ui/api/processes", get(dashboard::processes))
        .route("/ui/api/processes/{process}", get(dashboard::process))
        .route("/ui/api/processes/{process}/counts", get(dashboard::counts))
        .route(
            "/ui/api/processes/{process}/nodes/{node}/tasks",
            get(dashboard::node_tasks),
        )
        .route("/ui/api/tasks/{process}/{task}", get(dashboard::task))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` completes, then finishes the requests
/// in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    runtime: Arc<Runtime>,
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(runtime, config))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Records each request's duration by route and status.
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let response = next.run(request).await;
    state.runtime.metrics().http_request(
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

async fn health() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let runtime = state.runtime.clone();
    match tokio::task::spawn_blocking(move || runtime.metrics_text()).await {
        Ok(Ok(text)) => {
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn admin_command(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let expected = format!("Bearer {}", state.config.admin_token);
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        return error(StatusCode::UNAUTHORIZED, "a valid admin token is required");
    }
    let Some(handler) = state.config.command.clone() else {
        return error(StatusCode::NOT_FOUND, "this server runs no commands");
    };
    let bytes = match read_body(body, state.config.limits.body_bytes).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let command: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("the command is not JSON: {e}"),
            );
        }
    };
    match tokio::task::spawn_blocking(move || handler(command)).await {
        Ok(reply) => axum::Json(reply).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("the command failed: {e}"),
        ),
    }
}

/// Reads a body up to `limit` bytes; a larger one is refused with 413 and a reason.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, Response> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            axum::Json(json!({
                "request_proc": "error",
                "description": format!("the request body is larger than the {limit} bytes allowed"),
            })),
        )
            .into_response()
    })
}

pub(crate) fn error(status: StatusCode, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"request_proc": "error", "description": description})),
    )
        .into_response()
}

/// Compares secrets without leaking where they differ through timing.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
