//! The read-only dashboard at `/`: processes with their task counts (escalations stand
//! out), a process's diagram with live counters, the tasks in a node (with why they are
//! in an escalation), and a task's data (secrets masked) and history.
//!
//! Plain HTML, CSS and JS served from the binary (no build step; no inline script, so
//! the Content-Security-Policy allows scripts from the server only). Login (a POST) with
//! the local admin token (`server.json`), which sees everything, or an API key's login
//! and secret, which sees only the key's processes (others answer 404 on every route).
//! The session is a random HttpOnly, SameSite=Strict cookie kept in memory; it ends
//! after `session_idle` unused or `session_lifetime` after the login.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use conveyor_model::NodeKind;
use conveyor_runtime::{TaskKey, mask_data, random_token};
use serde_json::{Map, Value, json};

use crate::{AppState, constant_time_eq, error, read_body};

const PAGE: &str = include_str!("../assets/dashboard.html");
const SCRIPT: &str = include_str!("../assets/dashboard.js");
const STYLE: &str = include_str!("../assets/dashboard.css");
const COOKIE: &str = "conveyor_session";
/// Sessions kept at most; a login beyond them (all still valid) is refused.
const MAX_SESSIONS: usize = 10_000;

/// A logged-in browser. Sessions use real time (they measure people, not tasks).
pub(crate) struct Session {
    /// Who logged in: the admin (everything), or an API key (its processes).
    key: Option<u64>,
    created: Instant,
    used: Instant,
}

/// What a session may see: every process, or these.
struct Viewer {
    processes: Option<Vec<u64>>,
}

impl Viewer {
    fn may_see(&self, process: u64) -> bool {
        self.processes
            .as_ref()
            .is_none_or(|list| list.contains(&process))
    }
}

/// `GET /`: the page (it asks to log in when there is no session).
pub(crate) async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// `GET /ui/dashboard.js`
pub(crate) async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

/// `GET /ui/dashboard.css`
pub(crate) async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

#[derive(serde::Deserialize)]
pub(crate) struct Login {
    token: Option<String>,
    login: Option<String>,
    secret: Option<String>,
}

/// `POST /ui/login` with a JSON object or a form: `token` (the admin token), or `login`
/// and `secret` (an API key). Sets the session cookie; a form is sent back to `/`.
/// There is no GET login: a token in a URL ends up in histories and logs.
pub(crate) async fn login(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let bytes = match read_body(&state, body).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    let login = if is_form {
        let mut login = Login {
            token: None,
            login: None,
            secret: None,
        };
        for (k, v) in crate::direct::form_pairs(&String::from_utf8_lossy(&bytes)) {
            let v = Some(v).filter(|v| !v.is_empty());
            match k.as_str() {
                "token" => login.token = v,
                "login" => login.login = v,
                "secret" => login.secret = v,
                _ => {}
            }
        }
        login
    } else {
        match serde_json::from_slice::<Login>(&bytes) {
            Ok(login) => login,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("the login must be a JSON object or a form: {e}"),
                );
            }
        }
    };
    start_session(&state, login, is_form)
}

fn start_session(state: &AppState, login: Login, redirect: bool) -> Response {
    let admin = login
        .token
        .as_deref()
        .is_some_and(|t| constant_time_eq(t.as_bytes(), state.config.admin_token.as_bytes()));
    let api_key = match (
        login
            .login
            .as_deref()
            .and_then(|l| l.trim().parse::<u64>().ok()),
        &login.secret,
    ) {
        (Some(number), Some(secret)) => state
            .runtime
            .store()
            .api_key(number)
            .ok()
            .flatten()
            .filter(|k| constant_time_eq(k.secret.as_bytes(), secret.as_bytes()))
            .map(|k| k.login),
        _ => None,
    };
    if !admin && api_key.is_none() {
        return error(
            StatusCode::UNAUTHORIZED,
            "wrong token, or wrong login and secret",
        );
    }
    let limits = &state.config.limits;
    let now = Instant::now();
    let session = random_token(20);
    {
        let Ok(mut sessions) = state.sessions.lock() else {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "sessions unavailable");
        };
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, s| !expired(s, now, limits));
        }
        if sessions.len() >= MAX_SESSIONS {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many dashboard sessions; try again later",
            );
        }
        sessions.insert(
            session.clone(),
            Session {
                // An admin token wins over a key given with it.
                key: if admin { None } else { api_key },
                created: now,
                used: now,
            },
        );
    }
    let cookie = format!(
        "{COOKIE}={session}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict",
        limits.session_lifetime.as_secs()
    );
    if redirect {
        ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
    } else {
        (
            [(header::SET_COOKIE, cookie)],
            axum::Json(json!({"ok": true})),
        )
            .into_response()
    }
}

/// `POST /ui/logout`: ends the session.
pub(crate) async fn logout(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers)
        && let Ok(mut sessions) = state.sessions.lock()
    {
        sessions.remove(&id);
    }
    (
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"),
        )],
        axum::Json(json!({"ok": true})),
    )
        .into_response()
}

fn expired(session: &Session, now: Instant, limits: &crate::Limits) -> bool {
    now.saturating_duration_since(session.used) > limits.session_idle
        || now.saturating_duration_since(session.created) > limits.session_lifetime
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    let prefix = format!("{COOKIE}=");
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(&prefix).map(str::to_string))
}

/// The session's viewer, or 401 with why (none, expired, its key deleted).
fn viewer(state: &AppState, headers: &HeaderMap) -> Result<Viewer, Box<Response>> {
    let login_first = || Box::new(error(StatusCode::UNAUTHORIZED, "log in first"));
    let id = session_id(headers).ok_or_else(login_first)?;
    let now = Instant::now();
    let key = {
        let mut sessions = state.sessions.lock().map_err(|_| login_first())?;
        let session = sessions.get_mut(&id).ok_or_else(login_first)?;
        if expired(session, now, &state.config.limits) {
            sessions.remove(&id);
            return Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                "your session expired; log in again",
            )));
        }
        session.used = now;
        session.key
    };
    let Some(login) = key else {
        return Ok(Viewer { processes: None });
    };
    // The key as it is now: deleted keys end their sessions, limits apply at once.
    match state.runtime.store().api_key(login) {
        Ok(Some(key)) if key.processes.is_empty() => Ok(Viewer { processes: None }),
        Ok(Some(key)) => Ok(Viewer {
            processes: Some(key.processes),
        }),
        _ => {
            if let Ok(mut sessions) = state.sessions.lock() {
                sessions.remove(&id);
            }
            Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                "the API key of this session was deleted; log in again",
            )))
        }
    }
}

macro_rules! guard {
    ($state:expr, $headers:expr) => {
        match viewer(&$state, &$headers) {
            Ok(viewer) => viewer,
            Err(response) => return *response,
        }
    };
}

/// The process `name` if this viewer may see it; the same "no process" otherwise.
fn visible(
    runtime: &conveyor_runtime::Runtime,
    viewer: &Viewer,
    name: &str,
) -> Result<Arc<conveyor_runtime::LoadedProcess>, String> {
    match runtime.resolve(name) {
        Ok(loaded) if viewer.may_see(loaded.record.id) => Ok(loaded),
        _ => Err(format!("no process `{name}`")),
    }
}

/// The escalation nodes of a process.
fn escalations(process: &conveyor_model::Process) -> Vec<String> {
    process
        .nodes
        .values()
        .filter(|n| matches!(n.kind, NodeKind::Escalation { .. }))
        .map(|n| n.id.clone())
        .collect()
}

/// `GET /ui/api/processes`
pub(crate) async fn processes(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let viewer = guard!(state, headers);
    let runtime = state.runtime.clone();
    let answer = tokio::task::spawn_blocking(move || -> Result<Value, String> {
        let mut list = Vec::new();
        for record in runtime.store().processes().map_err(|e| e.to_string())? {
            if !viewer.may_see(record.id) {
                continue;
            }
            let counters = runtime.store().counters(record.id).map_err(|e| e.to_string())?;
            let (title, escalation_nodes) = match runtime.loaded(record.id) {
                Ok(l) => (
                    l.process.title.clone().unwrap_or_else(|| l.process.name.clone()),
                    escalations(&l.process),
                ),
                Err(_) => (String::new(), Vec::new()),
            };
            let tasks: i64 = counters.iter().map(|(_, c)| c.now).sum();
            let escalated: i64 = counters
                .iter()
                .filter(|(n, _)| escalation_nodes.contains(n))
                .map(|(_, c)| c.now)
                .sum();
            list.push(json!({"id": record.id, "alias": record.alias, "title": title, "tasks": tasks, "in_escalation": escalated}));
        }
        Ok(Value::Array(list))
    })
    .await;
    reply(answer)
}

fn reply(answer: Result<Result<Value, String>, tokio::task::JoinError>) -> Response {
    match answer {
        Ok(Ok(value)) => axum::Json(value).into_response(),
        Ok(Err(e)) => error(StatusCode::NOT_FOUND, &e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn counts_of(
    runtime: &conveyor_runtime::Runtime,
    id: u64,
) -> Result<HashMap<String, (i64, u64)>, String> {
    Ok(runtime
        .store()
        .counters(id)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(node, c)| (node, (c.now, c.total)))
        .collect())
}

/// `GET /ui/api/processes/{process}`: the process, its nodes with counts, its diagram.
pub(crate) async fn process(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(process): Path<String>,
) -> Response {
    let viewer = guard!(state, headers);
    let runtime = state.runtime.clone();
    let answer = tokio::task::spawn_blocking(move || -> Result<Value, String> {
        let loaded = visible(&runtime, &viewer, &process)?;
        let counts = counts_of(&runtime, loaded.record.id)?;
        let p = &loaded.process;
        let escalation_nodes = escalations(p);
        let nodes: Vec<Value> = p
            .nodes
            .values()
            .map(|n| {
                let (now, total) = counts.get(&n.id).copied().unwrap_or_default();
                json!({"id": n.id, "kind": n.kind.name(), "title": n.title, "now": now, "total": total,
                       "escalation": escalation_nodes.contains(&n.id)})
            })
            .collect();
        Ok(json!({
            "id": loaded.record.id, "alias": loaded.record.alias, "name": p.name, "title": p.title,
            "version": loaded.record.version, "nodes": nodes,
            "svg": conveyor_graph::svg(p, Some(&counts)),
        }))
    })
    .await;
    reply(answer)
}

/// `GET /ui/api/processes/{process}/counts`: node → [now, total], for live updates.
pub(crate) async fn counts(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(process): Path<String>,
) -> Response {
    let viewer = guard!(state, headers);
    let runtime = state.runtime.clone();
    let answer = tokio::task::spawn_blocking(move || -> Result<Value, String> {
        let loaded = visible(&runtime, &viewer, &process)?;
        let counts = counts_of(&runtime, loaded.record.id)?;
        Ok(json!(counts))
    })
    .await;
    reply(answer)
}

/// Why a task is where it is: the error keys nodes leave (`__conveyor_…_return_…__`) and
/// the `error`/`failure` keys processes such as bitrix_oauth set.
fn reason(data: &Map<String, Value>) -> Value {
    let mut tag = None;
    let mut description = None;
    for (key, value) in data {
        if key.ends_with("_return_type_tag__") {
            tag = value.as_str().map(str::to_string);
        }
        if key.ends_with("_return_description__") {
            description = value.as_str().map(str::to_string);
        }
    }
    if let Some(Value::String(e)) = data.get("error")
        && !e.is_empty()
    {
        tag = Some(e.clone());
    }
    if let Some(Value::String(f)) = data.get("failure")
        && !f.is_empty()
    {
        description = Some(f.clone());
    }
    json!({"tag": tag, "description": description})
}

/// `GET /ui/api/processes/{process}/nodes/{node}/tasks`
pub(crate) async fn node_tasks(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((process, node)): Path<(String, String)>,
) -> Response {
    let viewer = guard!(state, headers);
    let runtime = state.runtime.clone();
    let answer = tokio::task::spawn_blocking(move || -> Result<Value, String> {
        let loaded = visible(&runtime, &viewer, &process)?;
        if !loaded.process.nodes.contains_key(&node) {
            return Err(format!("no node `{node}`"));
        }
        let tasks = runtime
            .store()
            .tasks(loaded.record.id, Some(&node), 200)
            .map_err(|e| e.to_string())?;
        Ok(Value::Array(
            tasks
                .iter()
                .map(|t| {
                    json!({"id": t.id, "ref": t.reference, "status": t.status.as_str(), "changed": t.changed,
                           "reason": reason(&t.data)})
                })
                .collect(),
        ))
    })
    .await;
    reply(answer)
}

/// `GET /ui/api/tasks/{process}/{task}`: data (secrets masked) and history.
pub(crate) async fn task(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((process, task)): Path<(String, String)>,
) -> Response {
    let viewer = guard!(state, headers);
    let runtime = state.runtime.clone();
    let answer = tokio::task::spawn_blocking(move || -> Result<Value, String> {
        visible(&runtime, &viewer, &process)?;
        let (loaded, task) = runtime
            .find_task(&process, &TaskKey(task))
            .map_err(|e| e.to_string())?;
        let history = runtime
            .store()
            .history(task.id)
            .map_err(|e| e.to_string())?;
        Ok(json!({
            "id": task.id, "process": task.process, "ref": task.reference, "node": task.node,
            "status": task.status.as_str(), "created": task.created, "changed": task.changed,
            "wake_at": task.wake.map(|w| w.at), "data": mask_data(&loaded.process, &task.secret_keys, &task.data),
            "reason": reason(&task.data), "history": history,
        }))
    })
    .await;
    reply(answer)
}
