//! The control API under `/sandbox/…`: JSON endpoints for tests and for people trying
//! the sandbox. Each mirrors a method of [`SandboxState`]. Errors are
//! `{"error":"…"}` with 400 (bad request) or 404 (unknown application or service).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::state::{AppStatePatch, Failure, SandboxState, Service};
use crate::{AppRegistration, SandboxError};

/// The `/sandbox/…` routes.
pub(crate) fn routes() -> Router<SandboxState> {
    Router::new()
        .route("/sandbox", get(overview))
        .route("/sandbox/", get(overview))
        .route("/sandbox/credentials", get(overview))
        .route("/sandbox/apps", get(apps).post(register_app))
        .route("/sandbox/apps/{client_id}", get(app))
        .route("/sandbox/apps/{client_id}/state", post(set_app_state))
        .route("/sandbox/codes", post(issue_code))
        .route("/sandbox/tokens", post(issue_tokens))
        .route("/sandbox/fail", post(fail_next).delete(clear_failures))
        .route("/sandbox/clock", get(clock))
        .route("/sandbox/clock/advance", post(advance_clock))
        .route("/sandbox/stats", get(stats))
        .route("/sandbox/messages/{service}", get(messages))
        .route("/sandbox/reset", post(reset))
}

/// An error of the control API.
struct ControlError(StatusCode, String);

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

impl From<SandboxError> for ControlError {
    fn from(error: SandboxError) -> Self {
        let status = match error {
            SandboxError::UnknownApp(_) | SandboxError::NoApp => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        };
        ControlError(status, error.to_string())
    }
}

type Answer = Result<Response, ControlError>;

/// Parses a JSON request body; an empty body is `T::default()`.
fn parse_or_default<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ControlError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse(body)
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ControlError> {
    serde_json::from_slice(body)
        .map_err(|e| ControlError(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
}

fn ok(value: impl serde::Serialize) -> Answer {
    Ok(Json(json!(value)).into_response())
}

/// `GET /sandbox`, `GET /sandbox/credentials`: base URL, every service's endpoint,
/// the credentials, the applications and the clock.
async fn overview(State(state): State<SandboxState>, headers: HeaderMap) -> Answer {
    ok(state.overview(&state.base_url(&headers)))
}

async fn apps(State(state): State<SandboxState>) -> Answer {
    ok(state.apps())
}

async fn app(State(state): State<SandboxState>, Path(client_id): Path<String>) -> Answer {
    ok(state.app(&client_id)?)
}

/// `POST /sandbox/apps` with an [`AppRegistration`] (every field optional).
async fn register_app(State(state): State<SandboxState>, body: Bytes) -> Answer {
    let registration: AppRegistration = parse_or_default(&body)?;
    let app = state.register_app(registration)?;
    Ok((StatusCode::CREATED, Json(app)).into_response())
}

/// `POST /sandbox/apps/{client_id}/state` with `{"paid":bool,"installed":bool}`.
async fn set_app_state(
    State(state): State<SandboxState>,
    Path(client_id): Path<String>,
    body: Bytes,
) -> Answer {
    let patch: AppStatePatch = parse_or_default(&body)?;
    ok(state.set_app_state(&client_id, patch)?)
}

/// `{"client_id":"…"}`; without it, the default application.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ForApp {
    client_id: Option<String>,
}

impl ForApp {
    fn client_id(self, state: &SandboxState) -> Result<String, SandboxError> {
        match self.client_id {
            Some(id) => Ok(id),
            None => state.default_app().map(|app| app.client_id),
        }
    }
}

/// `POST /sandbox/codes` `{"client_id"?}` → an [`crate::IssuedCode`].
async fn issue_code(State(state): State<SandboxState>, headers: HeaderMap, body: Bytes) -> Answer {
    let client_id = parse_or_default::<ForApp>(&body)?.client_id(&state)?;
    with_base_url(&state, &headers);
    ok(state.issue_code(&client_id)?)
}

/// `POST /sandbox/tokens` `{"client_id"?}` → a [`crate::TokenResponse`].
async fn issue_tokens(
    State(state): State<SandboxState>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let client_id = parse_or_default::<ForApp>(&body)?.client_id(&state)?;
    with_base_url(&state, &headers);
    ok(state.issue_tokens(&client_id)?)
}

/// A router mounted without a public URL learns it from the first control request that
/// needs it, so that codes and tokens issued here name the right server.
fn with_base_url(state: &SandboxState, headers: &HeaderMap) {
    if state.public_url().is_none() {
        state.set_public_url(state.base_url(headers));
    }
}

/// `{"service":"token","times":2,"kind":"error","error":"invalid_grant"}`.
#[derive(Debug, Deserialize)]
struct FailRequest {
    service: Service,
    #[serde(default = "one")]
    times: usize,
    #[serde(flatten)]
    failure: Failure,
}

fn one() -> usize {
    1
}

/// `POST /sandbox/fail` → `{"service":…,"pending":N}`.
async fn fail_next(State(state): State<SandboxState>, body: Bytes) -> Answer {
    let request: FailRequest = parse(&body)?;
    let pending = state.fail_next(request.service, request.times, request.failure)?;
    ok(json!({"service": request.service, "pending": pending}))
}

/// `DELETE /sandbox/fail` → `{"cleared":N}`.
async fn clear_failures(State(state): State<SandboxState>) -> Answer {
    ok(json!({"cleared": state.clear_failures()}))
}

async fn clock(State(state): State<SandboxState>) -> Answer {
    ok(state.clock())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Advance {
    seconds: u64,
}

/// `POST /sandbox/clock/advance` `{"seconds":N}` → the clock.
async fn advance_clock(State(state): State<SandboxState>, body: Bytes) -> Answer {
    let advance: Advance = parse(&body)?;
    ok(state.advance_clock(advance.seconds))
}

async fn stats(State(state): State<SandboxState>) -> Answer {
    ok(state.stats())
}

/// `GET /sandbox/messages/{service}` → the accepted messages.
async fn messages(State(state): State<SandboxState>, Path(service): Path<String>) -> Answer {
    let service: Service = service
        .parse()
        .map_err(|e| ControlError(StatusCode::NOT_FOUND, e))?;
    ok(state.messages(service))
}

async fn reset(State(state): State<SandboxState>) -> Answer {
    state.reset();
    ok(json!({"ok": true}))
}

impl SandboxState {
    /// Base URL, every service's endpoint, the credentials, the applications and the
    /// clock — what a person needs to point a process at the sandbox.
    pub fn overview(&self, base_url: &str) -> Value {
        let c = self.credentials();
        json!({
            "url": base_url,
            "endpoints": {
                "authorize": format!("{base_url}/oauth/authorize/"),
                "token": format!("{base_url}/oauth/token/"),
                "rest": format!("{base_url}/rest/"),
                "telegram": format!("{base_url}/bot{}/sendMessage", c.telegram_bot_token),
                "twilio": format!("{base_url}/2010-04-01/Accounts/{}/Messages.json", c.twilio_account_sid),
                "messagebird": format!("{base_url}/messages"),
                "mandrill": format!("{base_url}/api/1.0/messages/send.json"),
                "unisender": format!("{base_url}/en/api/sendEmail"),
                "control": format!("{base_url}/sandbox/")
            },
            "credentials": c,
            "apps": self.apps(),
            "clock": self.clock()
        })
    }
}
