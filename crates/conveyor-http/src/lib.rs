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
//! * `GET /` — the dashboard (see `dashboard.rs`).
//!
//! Every response carries security headers, requests for another `Host` are refused
//! (DNS rebinding), and cross-site requests to anything but the task API and direct URLs
//! are refused (`guard.rs`). Connections are served by our own accept loop with timeouts
//! and a cap (`server.rs`); direct URLs and API keys are rate limited (`rate.rs`); used
//! signatures survive a restart (`replay.rs`). What a request does to processes and
//! tasks is a request of the command layer (`conveyor_commands`: `door` for the task
//! API and direct URLs, `run` for the dashboard and `/admin/command`): this crate reads
//! and checks the HTTP, and never reaches the store itself.
//!
//! # Layout
//!
//! - `lib.rs` — the router, the shared state (`AppState`: the runtime, limits,
//!   sessions), `/healthz`, `/metrics` and `/admin/command`;
//! - `task_api.rs` — the task API v2: signature, replay check, ops read into the command
//!   layer's `TaskOp`s and answered in order;
//! - `direct.rs` — direct URLs: hash and rate checked before the body, parameters read
//!   into the command layer's `DirectRequest`;
//! - `dashboard.rs` — the dashboard's pages, its JSON and its actions;
//! - `guard.rs` — what every request passes (Host, cross-site, headers on every answer);
//! - `rate.rs` — token buckets per direct URL and per API key;
//! - `replay.rs` — signatures seen lately, kept on disk across a crash;
//! - `server.rs` — the accept loop with header, body and idle timeouts and a cap.

mod dashboard;
mod direct;
mod guard;
mod rate;
mod replay;
mod server;
mod task_api;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use conveyor_runtime::Runtime;
use serde_json::json;

pub use rate::Rate;
pub use replay::ReplayError;
pub use server::ConnectionLimits;

/// Limits on what a request and a connection may take. The defaults are those
/// documented in `docs/http-api.md`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body (default 1 MiB).
    pub body_bytes: usize,
    /// Most ops in one task API request (default 100).
    pub ops_per_request: usize,
    /// How far a request's time may be from ours (default 300 s).
    pub max_clock_skew_secs: i64,
    /// Time to send a request's headers (default 10 s).
    pub header_timeout: Duration,
    /// Time to send a request's body (default 30 s).
    pub body_timeout: Duration,
    /// Time a kept-alive connection may wait for its next request (default 60 s).
    pub idle_timeout: Duration,
    /// Connections served at once (default 1024).
    pub max_connections: usize,
    /// Request bodies being read at once (default 128, so at most 128 MiB of bodies).
    pub concurrent_bodies: usize,
    /// Requests to one process's direct URL (default 20/s, burst 40).
    pub direct_rate: Rate,
    /// Requests signed by one API key (default 200/s, burst 400).
    pub api_key_rate: Rate,
    /// A dashboard session ends after this long unused (default 30 min)…
    pub session_idle: Duration,
    /// …and this long after its login in any case (default 12 h).
    pub session_lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes: 1024 * 1024,
            ops_per_request: 100,
            max_clock_skew_secs: 300,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            concurrent_bodies: 128,
            direct_rate: Rate {
                per_second: 20.0,
                burst: 40.0,
            },
            api_key_rate: Rate {
                per_second: 200.0,
                burst: 400.0,
            },
            session_idle: Duration::from_secs(30 * 60),
            session_lifetime: Duration::from_secs(12 * 3600),
        }
    }
}

pub struct Config {
    /// The token of `POST /admin/command` (written to the data dir for the CLI).
    pub admin_token: String,
    pub limits: Limits,
    /// Whether `POST /admin/command` runs the CLI's commands (`conveyor serve`: yes).
    pub admin_commands: bool,
    /// Host names (`host` or `host:port`, as clients send them in `Host`) the server
    /// answers to besides its own loopback addresses: `--public-host`, for direct URLs
    /// published behind a proxy.
    pub public_hosts: Vec<String>,
    /// Where the signatures of recent task API requests are kept across restarts
    /// (`DATA/signatures`); in memory only when `None`.
    pub signatures_file: Option<PathBuf>,
}

pub(crate) struct AppState {
    runtime: Arc<Runtime>,
    config: Config,
    /// Signatures seen lately, to refuse replays.
    signatures: replay::Signatures,
    /// Dashboard sessions by their (random) cookie value.
    sessions: Mutex<HashMap<String, dashboard::Session>>,
    /// Values of `Host` the server answers to (lower case).
    allowed_hosts: Vec<String>,
    direct_rate: rate::Buckets,
    api_key_rate: rate::Buckets,
    /// Places for request bodies being read.
    bodies: tokio::sync::Semaphore,
}

/// The `Host` values a server bound to `bound` answers to: its loopback names with its
/// port, the bound address itself, and `public_hosts`.
pub fn allowed_hosts(bound: SocketAddr, public_hosts: &[String]) -> Vec<String> {
    let port = bound.port();
    let mut hosts = vec![
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        bound.to_string(),
    ];
    hosts.extend(public_hosts.iter().map(|h| h.trim().to_string()));
    for h in &mut hosts {
        h.make_ascii_lowercase();
    }
    hosts.sort();
    hosts.dedup();
    hosts
}

/// The API's routes over `runtime`, for a server bound to `bound`.
pub fn router(
    runtime: Arc<Runtime>,
    config: Config,
    bound: SocketAddr,
) -> Result<Router, ReplayError> {
    let signatures = match &config.signatures_file {
        Some(path) => replay::Signatures::open(path, runtime.now().div_euclid(1000))?,
        None => replay::Signatures::in_memory(),
    };
    let limits = config.limits.clone();
    let state = Arc::new(AppState {
        runtime,
        allowed_hosts: allowed_hosts(bound, &config.public_hosts),
        config,
        signatures,
        sessions: Mutex::new(HashMap::new()),
        direct_rate: rate::Buckets::new(limits.direct_rate),
        api_key_rate: rate::Buckets::new(limits.api_key_rate),
        bodies: tokio::sync::Semaphore::new(limits.concurrent_bodies.max(1)),
    });
    Ok(Router::new()
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
        .route("/ui/dashboard.js", get(dashboard::script))
        .route("/ui/dashboard.css", get(dashboard::style))
        .route("/ui/login", post(dashboard::login))
        .route("/ui/logout", post(dashboard::logout))
        .route("/ui/api/processes", get(dashboard::processes))
        .route("/ui/api/processes/{process}", get(dashboard::process))
        .route("/ui/api/processes/{process}/counts", get(dashboard::counts))
        .route(
            "/ui/api/processes/{process}/nodes/{node}/tasks",
            get(dashboard::node_tasks),
        )
        .route("/ui/api/tasks/{process}/{task}", get(dashboard::task))
        .route("/ui/api/session", get(dashboard::session))
        .route("/ui/api/templates", get(dashboard::templates))
        .route("/ui/api/clone", post(dashboard::clone))
        .route(
            "/ui/api/processes/{process}/tasks",
            post(dashboard::add_task),
        )
        .route("/ui/api/processes/{process}/code", post(dashboard::code))
        .route(
            "/ui/api/processes/{process}/authorize-link",
            post(dashboard::authorize_link),
        )
        .route(
            "/ui/api/tasks/{process}/{task}/{action}",
            post(dashboard::task_action),
        )
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn_with_state(state.clone(), guard::guard))
        .with_state(state))
}

/// Serves the API on `listener` until `shutdown` completes, then finishes the requests
/// in flight. Connections are limited as `config.limits` says (see `server.rs`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    runtime: Arc<Runtime>,
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let bound = listener.local_addr()?;
    let limits = ConnectionLimits {
        header_timeout: config.limits.header_timeout,
        idle_timeout: config.limits.idle_timeout,
        max_connections: config.limits.max_connections,
    };
    let router = router(runtime, config, bound).map_err(std::io::Error::other)?;
    server::run(listener, router, limits, shutdown).await
}

/// Serves any `router` with the same connection handling as [`serve`] (its own accept
/// loop, timeouts and cap): `conveyor-bench intake` measures the server's own floor with
/// a handler that does nothing.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::run(listener, router, limits, shutdown).await
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

/// Past this, a group still in the store means the store is stuck, not slow.
const STUCK_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// `ok`, or 503 when the store has not returned from a commit for `STUCK_AFTER`: then
/// nothing moves any more, and a supervisor should restart the engine (acknowledged
/// work is on disk; see docs/reliability.md on a known sled deadlock).
async fn health(State(state): State<Arc<AppState>>) -> Response {
    match state.runtime.commit_in_store_for() {
        Some(stuck) if stuck >= STUCK_AFTER => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({
                "status": "stuck",
                "reason": format!(
                    "the store has not returned from a commit for {} s",
                    stuck.as_secs()
                ),
            })),
        )
            .into_response(),
        _ => axum::Json(json!({"status": "ok"})).into_response(),
    }
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
    if !state.config.admin_commands {
        return error(StatusCode::NOT_FOUND, "this server runs no commands");
    }
    let bytes = match read_body(&state, body).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let reply = match serde_json::from_slice::<AdminCommand>(&bytes) {
        Ok(command) => run_admin(&state, command).await,
        Err(e) => conveyor_commands::Reply::failed(
            2,
            format!("the server does not understand this command: {e}"),
        ),
    };
    axum::Json(reply).into_response()
}

/// What a `conveyor` client sends to `POST /admin/command`.
#[derive(serde::Deserialize)]
struct AdminCommand {
    request: conveyor_commands::Request,
    #[serde(default)]
    json: bool,
}

/// Runs a client's command with the admin's rights, as the CLI would run it itself.
async fn run_admin(state: &AppState, command: AdminCommand) -> conveyor_commands::Reply {
    use conveyor_commands::{Reply, Request, render::render};
    let runtime = state.runtime.clone();
    let as_json = command.json;
    if let Request::WaitIdle { wait_millis } = command.request {
        return match conveyor_commands::wait_idle(&runtime, wait_millis).await {
            Ok(answer) => render(&answer, as_json),
            Err(e) => Reply::failed(e.exit_code(), e),
        };
    }
    let request = command.request;
    match tokio::task::spawn_blocking(move || {
        conveyor_commands::execute(&runtime, request, as_json)
    })
    .await
    {
        Ok(reply) => reply,
        Err(e) => Reply::failed(1, format!("the command failed: {e}")),
    }
}

/// Reads a body up to `limit` bytes within the body timeout, holding one of the places
/// for bodies meanwhile; a larger body is refused with 413, a slow one with 408.
pub(crate) async fn read_body(state: &AppState, body: Body) -> Result<axum::body::Bytes, Response> {
    let limit = state.config.limits.body_bytes;
    let timeout = state.config.limits.body_timeout;
    let Ok(_place) = state.bodies.acquire().await else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is stopping",
        ));
    };
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request body is larger than the {limit} bytes allowed (or was cut off)"),
        )),
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            &format!(
                "the request body did not arrive within {} s",
                timeout.as_secs()
            ),
        )),
    }
}

/// 429 with `Retry-After` (whole seconds, at least 1) and a JSON reason.
pub(crate) fn too_many(what: &str, rate: Rate, wait: Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        &format!(
            "too many requests for {what}: the limit is {} per second (bursts of {}); retry after {secs} s",
            rate.per_second, rate.burst
        ),
    );
    if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
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
