//! The read-only dashboard at `/`: processes with their task counts (escalations stand
//! out), a process's diagram with live counters, the tasks in a node (with why they are
//! in an escalation), and a task's data (secrets masked) and history.
//!
//! Plain HTML, CSS and JS served from the binary (no build step). Login with the local
//! admin token (`server.json`) or an API key's login and secret; the session is a random
//! cookie kept in memory.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use conveyor_model::NodeKind;
use conveyor_runtime::{TaskKey, mask_data, random_token};
use serde_json::{Map, Value, json};

use crate::{AppState, constant_time_eq, error};

const PAGE: &str = include_str!("../assets/dashboard.html");
const COOKIE: &str = "conveyor_session";

/// `GET /`: the page (it asks to log in when there is no session).
pub(crate) async fn page() -> Html<&'static str> {
    Html(PAGE)
}

#[derive(serde::Deserialize)]
pub(crate) struct Login {
    token: Option<String>,
    login: Option<String>,
    secret: Option<String>,
}

/// `POST /ui/login` (JSON) or `GET /ui/login?token=…`: checks the credential and sets the
/// session cookie.
pub(crate) async fn login(
    State(state): State<Arc<AppState>>,
    Query(query): Query<Login>,
) -> Response {
    start_session(&state, query, true)
}

pub(crate) async fn login_post(
    State(state): State<Arc<AppState>>,
    axum::Json(body): axum::Json<Login>,
) -> Response {
    start_session(&state, body, false)
}

fn start_session(state: &AppState, login: Login, redirect: bool) -> Response {
    let admin = login
        .token
        .as_deref()
        .is_some_and(|t| constant_time_eq(t.as_bytes(), state.config.admin_token.as_bytes()));
    let api_key = match (
        login.login.as_deref().and_then(|l| l.parse::<u64>().ok()),
        &login.secret,
    ) {
        (Some(number), Some(secret)) => state
            .runtime
            .store()
            .api_key(number)
            .ok()
            .flatten()
            .is_some_and(|k| constant_time_eq(k.secret.as_bytes(), secret.as_bytes())),
        _ => false,
    };
    if !admin && !api_key {
        return error(
            StatusCode::UNAUTHORIZED,
            "wrong token, or wrong login and secret",
        );
    }
    let session = random_token(20);
    if let Ok(mut sessions) = state.sessions.lock() {
        sessions.insert(session.clone());
    }
    let cookie = format!("{COOKIE}={session}; Path=/; Max-Age=43200; HttpOnly; SameSite=Strict");
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

fn signed_in(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(cookies) = headers.get(header::COOKIE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Ok(sessions) = state.sessions.lock() else {
        return false;
    };
    cookies
        .split(';')
        .filter_map(|c| c.trim().strip_prefix(&format!("{COOKIE}=")))
        .any(|s| sessions.contains(s))
}

macro_rules! guard {
    ($state:expr, $headers:expr) => {
        if !signed_in(&$state, &$headers) {
            return error(StatusCode::UNAUTHORIZED, "log in first");
        }
    };
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
    guard!(state, headers);
    let runtime = state.runtime.clone();
    let answer = tokio::task::spawn_blocking(move || -> Result<Value, String> {
        let mut list = Vec::new();
        for record in runtime.store().processes().map_err(|e| e.to_string())? {
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
    guard!(state, headers);
    let runtime = state.runtime.clone();
    let answer = tokio::task::spawn_blocking(move || -> Result<Value, String> {
        let loaded = runtime.resolve(&process).map_err(|e| e.to_string())?;
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
    guard!(state, headers);
    let runtime = state.runtime.clone();
    let answer = tokio::task::spawn_blocking(move || -> Result<Value, String> {
        let loaded = runtime.resolve(&process).map_err(|e| e.to_string())?;
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
    guard!(state, headers);
    let runtime = state.runtime.clone();
    let answer = tokio::task::spawn_blocking(move || -> Result<Value, String> {
        let loaded = runtime.resolve(&process).map_err(|e| e.to_string())?;
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
    guard!(state, headers);
    let runtime = state.runtime.clone();
    let answer = tokio::task::spawn_blocking(move || -> Result<Value, String> {
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
