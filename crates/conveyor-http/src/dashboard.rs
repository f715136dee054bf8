//! The dashboard at `/`: processes with their task counts (escalations stand out), a
//! process's diagram with live counters, the tasks in a node (with why they are in an
//! escalation), a task's data (secrets masked) and history, and a token task's state in
//! words; the templates page (*Use this process*), *Add task*, a new code for a token
//! task, and the task actions (modify, retry, move, delete). Every read and change is a
//! request of the command layer (`conveyor-commands`) with the session as its caller,
//! so a key's session is limited to its processes there; every change carries the
//! session's CSRF token (`x-csrf-token`).
//!
//! Plain HTML, CSS and JS served from the binary (no build step; no inline script, so
//! the Content-Security-Policy allows scripts from the server only). Login (a POST) with
//! the local admin token (`server.json`), which sees everything, or an API key's login
//! and secret, which sees only the key's processes (others answer 404 on every route).
//! The session is a random HttpOnly, SameSite=Strict cookie kept in memory; it ends
//! after `session_idle` unused or `session_lifetime` after the login.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use conveyor_commands::{Answer, Caller, CommandError, Request, Scope};
use conveyor_runtime::random_token;
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
    /// Sent back by the page in `x-csrf-token` with every change: a request another
    /// site makes the browser send carries the cookie, but cannot read this.
    csrf: String,
    created: Instant,
    used: Instant,
}

/// What a session may do (the admin's, or its API key's scope as the key is now); and
/// its CSRF token.
struct Viewer {
    scope: Scope,
    csrf: String,
}

impl Viewer {
    /// The session as a caller of the command layer, which limits it to its scope.
    fn caller(&self) -> Caller {
        Caller {
            scope: self.scope.clone(),
            source: "dashboard".into(),
            login: None,
        }
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
        (Some(number), Some(secret)) => conveyor_commands::api_key(&state.runtime, number)
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
                csrf: random_token(20),
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
    if let Err(response) = viewer(&state, &headers).and_then(|v| check_csrf(&v, &headers)) {
        return *response;
    }
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
        (session.key, session.csrf.clone())
    };
    let (key, csrf) = key;
    let Some(login) = key else {
        return Ok(Viewer {
            scope: Scope::Admin,
            csrf,
        });
    };
    // The key as it is now: deleted keys end their sessions, limits apply at once. A
    // key that lists no processes uses them all, and is still not the admin.
    match conveyor_commands::api_key(&state.runtime, login) {
        Ok(Some(key)) => Ok(Viewer {
            scope: Scope::of_key(&key),
            csrf,
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

/// Checks the `x-csrf-token` header of a change against the session's token.
fn check_csrf(viewer: &Viewer, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let given = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if given.is_empty() || !constant_time_eq(given.as_bytes(), viewer.csrf.as_bytes()) {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "this change lacks the page's CSRF token; reload the dashboard",
        )));
    }
    Ok(())
}

/// A command's answer as JSON, or its refusal with a status that says what kind, and
/// the command layer's words (the same as the CLI's).
fn answer(result: Result<Result<Value, CommandError>, tokio::task::JoinError>) -> Response {
    match result {
        Ok(Ok(value)) => axum::Json(value).into_response(),
        Ok(Err(e)) => {
            let status = match &e {
                e if e.is_not_found() => StatusCode::NOT_FOUND,
                CommandError::Usage(_) => StatusCode::BAD_REQUEST,
                CommandError::NotAllowed { .. } | CommandError::AdminOnly { .. } => {
                    StatusCode::FORBIDDEN
                }
                CommandError::Runtime(conveyor_runtime::RuntimeError::Store(_)) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            error(status, &e.to_string())
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// Runs `request` for the viewer on a blocking thread; `shape` makes the JSON answer.
async fn run(
    state: &AppState,
    viewer: Viewer,
    request: Request,
    shape: impl FnOnce(Answer) -> Value + Send + 'static,
) -> Response {
    let runtime = state.runtime.clone();
    answer(
        tokio::task::spawn_blocking(move || {
            conveyor_commands::run(&runtime, &viewer.caller(), request).map(shape)
        })
        .await,
    )
}

fn to_json(value: impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// `GET /ui/api/session`: who is logged in, and the CSRF token changes must carry.
pub(crate) async fn session(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let viewer = guard!(state, headers);
    axum::Json(json!({"admin": viewer.scope == Scope::Admin, "csrf": viewer.csrf})).into_response()
}

/// `GET /ui/api/processes`
pub(crate) async fn processes(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let viewer = guard!(state, headers);
    run(&state, viewer, Request::ProcessList, |a| match a {
        Answer::Processes { processes } => to_json(processes),
        other => to_json(other),
    })
    .await
}

/// `GET /ui/api/processes/{process}`: the process, its nodes with counts, params, its diagram.
pub(crate) async fn process(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(process): Path<String>,
) -> Response {
    let viewer = guard!(state, headers);
    let runtime = state.runtime.clone();
    answer(
        tokio::task::spawn_blocking(move || {
            let caller = viewer.caller();
            let loaded = conveyor_commands::resolve(&runtime, &caller, &process)?;
            let detail = conveyor_commands::process_detail(&runtime, &loaded)?;
            let counts: conveyor_graph::Counts = detail
                .nodes
                .iter()
                .map(|n| (n.id.clone(), (n.now, n.total)))
                .collect();
            let mut value = to_json(&detail);
            value["svg"] = Value::String(conveyor_graph::svg(&loaded.process, Some(&counts)));
            value["title"] = json!(loaded.process.title);
            Ok(value)
        })
        .await,
    )
}

/// `GET /ui/api/processes/{process}/counts`: node → [now, total], for live updates.
pub(crate) async fn counts(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(process): Path<String>,
) -> Response {
    let viewer = guard!(state, headers);
    run(
        &state,
        viewer,
        Request::ProcessShow { process },
        |a| match a {
            Answer::Process(detail) => Value::Object(
                detail
                    .nodes
                    .iter()
                    .map(|n| (n.id.clone(), json!([n.now, n.total])))
                    .collect(),
            ),
            other => to_json(other),
        },
    )
    .await
}

/// `GET /ui/api/processes/{process}/nodes/{node}/tasks`
pub(crate) async fn node_tasks(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((process, node)): Path<(String, String)>,
) -> Response {
    let viewer = guard!(state, headers);
    let runtime = state.runtime.clone();
    answer(
        tokio::task::spawn_blocking(move || {
            let caller = viewer.caller();
            let loaded = conveyor_commands::resolve(&runtime, &caller, &process)?;
            if !loaded.process.nodes.contains_key(&node) {
                return Err(CommandError::Runtime(
                    conveyor_runtime::RuntimeError::NoProcess(format!("{process} node {node}")),
                ));
            }
            let request = Request::TaskList {
                process,
                node: Some(node),
                limit: 200,
            };
            match conveyor_commands::run(&runtime, &caller, request)? {
                Answer::Tasks { tasks } => Ok(Value::Array(
                    tasks
                        .iter()
                        .map(|t| {
                            json!({"id": t.id, "ref": t.reference, "status": t.status,
                                   "changed": t.changed, "reason": t.reason})
                        })
                        .collect(),
                )),
                other => Ok(to_json(other)),
            }
        })
        .await,
    )
}

/// `GET /ui/api/tasks/{process}/{task}`: data (secrets masked), history, and for a
/// token task its state in words.
pub(crate) async fn task(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((process, task)): Path<(String, String)>,
) -> Response {
    let viewer = guard!(state, headers);
    let runtime = state.runtime.clone();
    answer(
        tokio::task::spawn_blocking(move || {
            let caller = viewer.caller();
            let shown = conveyor_commands::run(
                &runtime,
                &caller,
                Request::TaskShow {
                    process: process.clone(),
                    task: task.clone(),
                    reveal: false,
                },
            )?;
            let Answer::Task(view) = shown else {
                return Ok(to_json(shown));
            };
            let history = match conveyor_commands::run(
                &runtime,
                &caller,
                Request::TaskHistory {
                    process: process.clone(),
                    task: view.id.to_string(),
                },
            )? {
                Answer::History { events } => to_json(events),
                _ => Value::Array(Vec::new()),
            };
            let loaded = conveyor_commands::resolve(&runtime, &caller, &process)?;
            let detail = conveyor_commands::process_detail(&runtime, &loaded)?;
            let token = match &detail.authorize {
                Some(_) => to_json(conveyor_commands::token_state(
                    &runtime,
                    &caller,
                    &process,
                    &view.id.to_string(),
                )?),
                None => Value::Null,
            };
            let mut value = to_json(&*view);
            value["history"] = history;
            value["token"] = token;
            value["nodes"] = json!(detail.nodes.iter().map(|n| &n.id).collect::<Vec<_>>());
            Ok(value)
        })
        .await,
    )
}

/// `GET /ui/api/templates`: the shipped templates, their descriptions and params.
pub(crate) async fn templates(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let viewer = guard!(state, headers);
    run(&state, viewer, Request::Templates, |a| match a {
        Answer::Templates { templates } => to_json(templates),
        other => to_json(other),
    })
    .await
}

/// A change's JSON body (after the session and its CSRF token are checked).
async fn change_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Viewer, Map<String, Value>), Box<Response>> {
    let viewer = viewer(state, headers)?;
    check_csrf(&viewer, headers)?;
    let bytes = read_body(state, body).await.map_err(Box::new)?;
    if bytes.is_empty() {
        return Ok((viewer, Map::new()));
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok((viewer, map)),
        _ => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object",
        ))),
    }
}

macro_rules! change {
    ($state:expr, $headers:expr, $body:expr) => {
        match change_body(&$state, &$headers, $body).await {
            Ok(parts) => parts,
            Err(response) => return *response,
        }
    };
}

/// A string field of a change, or `None`.
fn field(body: &Map<String, Value>, key: &str) -> Option<String> {
    body.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// An object field of a change (task data, settings); empty when absent.
fn object(body: &Map<String, Value>, key: &str) -> Result<Map<String, Value>, Box<Response>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map.clone()),
        Some(_) => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            &format!("`{key}` must be a JSON object"),
        ))),
    }
}

macro_rules! object {
    ($body:expr, $key:expr) => {
        match object(&$body, $key) {
            Ok(map) => map,
            Err(response) => return *response,
        }
    };
}

/// `POST /ui/api/clone` `{"template", "alias", "settings"}`: *Use this process*.
pub(crate) async fn clone(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (viewer, body) = change!(state, headers, body);
    let settings = object!(body, "settings");
    let Some(template) = field(&body, "template") else {
        return error(StatusCode::BAD_REQUEST, "`template` is required");
    };
    let Some(definition) = conveyor_commands::templates::find(&template) else {
        return error(StatusCode::NOT_FOUND, &format!("no template `{template}`"));
    };
    let request = Request::ProcessClone {
        source: template,
        definition: definition.to_string(),
        alias: field(&body, "alias"),
        settings,
    };
    run(&state, viewer, request, to_json).await
}

/// `POST /ui/api/processes/{process}/tasks` `{"ref", "data"}`: *Add task*.
pub(crate) async fn add_task(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(process): Path<String>,
    body: Body,
) -> Response {
    let (viewer, body) = change!(state, headers, body);
    let data = object!(body, "data");
    let request = Request::TaskAdd {
        process,
        reference: field(&body, "ref"),
        data,
    };
    run(&state, viewer, request, to_json).await
}

/// `POST /ui/api/processes/{process}/code` `{"ref", "code", "data"}`: the code (or the
/// whole redirect address) into the code param the process's `authorize:` link names,
/// for the token task, created with `data` if it does not exist.
pub(crate) async fn code(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(process): Path<String>,
    body: Body,
) -> Response {
    let (viewer, body) = change!(state, headers, body);
    let request = Request::AuthorizeCode {
        process,
        reference: field(&body, "ref").unwrap_or_else(|| "token".into()),
        pasted: field(&body, "code").unwrap_or_default(),
        data: object!(body, "data"),
    };
    run(&state, viewer, request, to_json).await
}

/// `POST /ui/api/processes/{process}/authorize-link` `{"ref", "values", "page"}`: the
/// authorize page the process declares, filled from `values`, else the task `ref`, the
/// process's settings and defaults (the same address `conveyor bitrix authorize` prints).
pub(crate) async fn authorize_link(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(process): Path<String>,
    body: Body,
) -> Response {
    let (viewer, body) = change!(state, headers, body);
    let request = Request::AuthorizeLink {
        process,
        reference: field(&body, "ref"),
        values: object!(body, "values"),
        page: field(&body, "page"),
    };
    run(&state, viewer, request, to_json).await
}

/// `POST /ui/api/tasks/{process}/{task}/{action}`: `modify` `{"data", "force"}`,
/// `retry` `{"data"}`, `goto` `{"node", "data"}`, `delete`.
pub(crate) async fn task_action(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((process, task, action)): Path<(String, String, String)>,
    body: Body,
) -> Response {
    let (viewer, body) = change!(state, headers, body);
    let data = object!(body, "data");
    let request = match action.as_str() {
        "modify" => Request::TaskModify {
            process,
            task,
            data,
            force: body.get("force").and_then(Value::as_bool).unwrap_or(false),
        },
        "retry" => Request::TaskRetry {
            process,
            task,
            data,
        },
        "goto" => {
            let Some(node) = field(&body, "node") else {
                return error(StatusCode::BAD_REQUEST, "`node` is required");
            };
            Request::TaskGoto {
                process,
                task,
                node,
                data,
            }
        }
        "delete" => Request::TaskDelete { process, task },
        _ => return error(StatusCode::NOT_FOUND, &format!("no action `{action}`")),
    };
    run(&state, viewer, request, to_json).await
}
