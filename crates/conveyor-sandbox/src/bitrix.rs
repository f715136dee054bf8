//! Bitrix24: the OAuth 2.0 server (`/oauth/authorize/`, `/oauth/token/`) and the REST
//! API (`/rest/{method}`), as `docs/wire-formats.md` describes them.
//!
//! The sandbox stands in for the portal and for `oauth.bitrix.info` at once, so every
//! domain it reports (`domain`, `server_domain`, `client_endpoint`, …) is its own
//! `host:port`: a process that follows what the responses say stays on this machine.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::clock::iso8601;
use crate::params::Params;
use crate::state::{
    AuthorizationRecord, Interception, RestCallRecord, SandboxState, Service, TokenRequestRecord,
    TokenResponse, bare_outcome, bare_status, secs_to_ms,
};

/// A Bitrix24 error: `{"error":"…","error_description":"…"}` with its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BitrixError {
    pub(crate) status: StatusCode,
    pub(crate) error: String,
    pub(crate) description: Option<String>,
}

impl BitrixError {
    fn new(status: StatusCode, error: &str, description: Option<&str>) -> BitrixError {
        BitrixError {
            status,
            error: error.to_owned(),
            description: description.map(str::to_owned),
        }
    }

    fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("error".into(), Value::String(self.error.clone()));
        if let Some(description) = &self.description {
            body.insert(
                "error_description".into(),
                Value::String(description.clone()),
            );
        }
        Value::Object(body)
    }

    /// As answered by the token endpoint (with `Cache-Control: no-store`).
    fn token_response(&self) -> Response {
        (
            self.status,
            [(header::CACHE_CONTROL, "no-store")],
            Json(self.body()),
        )
            .into_response()
    }

    /// As answered by the REST API.
    fn rest_response(&self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// Description of `expired_token` for an authorization code (the reference's wording).
const CODE_EXPIRED: &str = "The authorization token provided has expired.";
/// Description of `expired_token` for an access token at the REST API.
const ACCESS_EXPIRED: &str = "The access token provided has expired.";
/// Description of `invalid_token` at the REST API.
const ACCESS_INVALID: &str = "The access token provided is invalid.";

/// Bitrix24's errors by name, with their status and description; used for forced
/// failures. `expired_token` depends on where it happens (`rest`). Unknown names get
/// HTTP 400 and no description.
pub(crate) fn named_error(name: &str, rest: bool) -> BitrixError {
    use StatusCode as S;
    let (status, description) = match name {
        // The token endpoint's table.
        "invalid_grant" => (S::BAD_REQUEST, None),
        "expired_token" if rest => (S::UNAUTHORIZED, Some(ACCESS_EXPIRED)),
        "expired_token" => (S::UNAUTHORIZED, Some(CODE_EXPIRED)),
        "invalid_request" => (S::BAD_REQUEST, Some("Invalid request.")),
        "invalid_client" => (S::BAD_REQUEST, Some("The client credentials are invalid.")),
        "PAYMENT_REQUIRED" => (S::UNAUTHORIZED, Some("Payment required.")),
        "NOT_INSTALLED" => (S::UNAUTHORIZED, Some("Application not installed.")),
        // The REST API's.
        "invalid_token" => (S::UNAUTHORIZED, Some(ACCESS_INVALID)),
        "NO_AUTH_FOUND" => (S::UNAUTHORIZED, Some("Wrong authorization data")),
        "insufficient_scope" => (
            S::FORBIDDEN,
            Some("The request requires higher privileges than provided by the access token"),
        ),
        "QUERY_LIMIT_EXCEEDED" => (S::SERVICE_UNAVAILABLE, Some("Too many requests")),
        "OVERLOAD_LIMIT" => (
            S::SERVICE_UNAVAILABLE,
            Some("REST API is blocked due to overload"),
        ),
        "INTERNAL_SERVER_ERROR" => (S::INTERNAL_SERVER_ERROR, Some("Internal server error")),
        "ACCESS_DENIED" => (
            S::FORBIDDEN,
            Some("REST API is available only on commercial plans"),
        ),
        "ERROR_METHOD_NOT_FOUND" => (S::NOT_FOUND, Some("Method not found!")),
        _ => (S::BAD_REQUEST, None),
    };
    BitrixError::new(status, name, description)
}

fn invalid_request(description: &str) -> BitrixError {
    BitrixError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        Some(description),
    )
}

// ---------------------------------------------------------------------------------
// /oauth/authorize/

/// `GET /oauth/authorize/?client_id=…[&state=…][&response_type=code]`: the user
/// "approves" at once; 302 to the application's redirect URL with `code`, `state`,
/// `domain`, `member_id`, `scope`, `server_domain`. Without a redirect URL the same
/// data comes back as JSON (200), handy in a browser.
pub(crate) async fn authorize(
    State(state): State<SandboxState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = Params::from_query(query.as_deref());
    let client_id = params.non_empty("client_id");
    let base = state.base_url(&headers);
    let now = state.now_ms();
    let issued = client_id.as_deref().and_then(|id| {
        state.inner().issue_code(
            state.settings(),
            now,
            id,
            &base,
            params.text("state").as_deref(),
        )
    });
    let (status, outcome, response) = match issued {
        None => {
            let error = BitrixError::new(
                StatusCode::BAD_REQUEST,
                "invalid_client",
                Some("Application not found."),
            );
            (error.status, error.error.clone(), error.rest_response())
        }
        Some(issued) => match &issued.redirect {
            Some(location) => (
                StatusCode::FOUND,
                "ok".to_owned(),
                (StatusCode::FOUND, [(header::LOCATION, location.clone())]).into_response(),
            ),
            None => {
                let mut body = json!(issued);
                if let (Some(map), Some(s)) = (body.as_object_mut(), params.text("state")) {
                    map.insert("state".into(), Value::String(s));
                }
                (StatusCode::OK, "ok".to_owned(), Json(body).into_response())
            }
        },
    };
    let at = state.now();
    state.inner().log.authorizations.push(AuthorizationRecord {
        at,
        client_id,
        status: status.as_u16(),
        outcome,
    });
    response
}

// ---------------------------------------------------------------------------------
// /oauth/token/

/// `GET|POST /oauth/token/?grant_type=…&client_id=…&client_secret=…&code=…|refresh_token=…`.
/// Parameters are read from the query string only, as the real server does (a POST
/// with its parameters in a form body gets `invalid_request`).
pub(crate) async fn token(
    State(state): State<SandboxState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = Params::from_query(query.as_deref());
    let (status, outcome, forced, response) = match state.intercept(Service::Token).await {
        Interception::Status(status) => (status, bare_outcome(status), true, bare_status(status)),
        Interception::Error { error, .. } => {
            let error = named_error(&error, false);
            (
                error.status,
                error.error.clone(),
                true,
                error.token_response(),
            )
        }
        Interception::Proceed => match exchange(&state, &headers, &params) {
            Ok(tokens) => (
                StatusCode::OK,
                "ok".to_owned(),
                false,
                (
                    StatusCode::OK,
                    [(header::CACHE_CONTROL, "no-store")],
                    Json(tokens),
                )
                    .into_response(),
            ),
            Err(error) => (
                error.status,
                error.error.clone(),
                false,
                error.token_response(),
            ),
        },
    };
    let at = state.now();
    state.inner().log.token_requests.push(TokenRequestRecord {
        at,
        http_method: method.to_string(),
        grant_type: params.non_empty("grant_type"),
        client_id: params.non_empty("client_id"),
        status: status.as_u16(),
        outcome,
        forced,
    });
    response
}

enum Grant {
    Code,
    Refresh,
}

/// The token endpoint's logic, atomic under the state's lock. Checks, in order: grant
/// type, client credentials, the grant's own parameter, the portal (paid, installed),
/// then the code or refresh token itself.
fn exchange(
    state: &SandboxState,
    headers: &HeaderMap,
    params: &Params,
) -> Result<TokenResponse, BitrixError> {
    let grant = match params.non_empty("grant_type").as_deref() {
        Some("authorization_code") => Grant::Code,
        Some("refresh_token") => Grant::Refresh,
        Some(other) => {
            return Err(invalid_request(&format!(
                "Grant type \"{other}\" not supported"
            )));
        }
        None => {
            return Err(invalid_request(
                "The grant type was not specified in the request",
            ));
        }
    };
    let base = state.base_url(headers);
    let now = state.now_ms();
    let settings = state.settings();
    let mut inner = state.inner();

    let secret = params.non_empty("client_secret");
    let app = params
        .non_empty("client_id")
        .and_then(|id| inner.app(&id).cloned())
        .filter(|app| secret.as_deref() == Some(app.client_secret.as_str()))
        .ok_or_else(|| named_error("invalid_client", false))?;

    let (name, key) = match grant {
        Grant::Code => ("code", params.non_empty("code")),
        Grant::Refresh => ("refresh_token", params.non_empty("refresh_token")),
    };
    let key =
        key.ok_or_else(|| invalid_request(&format!("Missing parameter: \"{name}\" is required")))?;

    if inner.portal(&app.portal).is_some_and(|p| !p.paid) {
        return Err(named_error("PAYMENT_REQUIRED", false));
    }
    if !app.installed {
        return Err(named_error("NOT_INSTALLED", false));
    }

    let invalid_grant = || BitrixError::new(StatusCode::BAD_REQUEST, "invalid_grant", None);
    match grant {
        Grant::Code => {
            if inner
                .codes
                .get(&key)
                .is_none_or(|code| code.client_id != app.client_id)
            {
                return Err(invalid_grant());
            }
            // Single use: whatever happens next, the code is gone.
            let code = inner.codes.remove(&key).ok_or_else(invalid_grant)?;
            if now.saturating_sub(code.issued_ms) > secs_to_ms(settings.code_ttl_secs) {
                return Err(named_error("expired_token", false));
            }
        }
        Grant::Refresh => {
            if inner
                .refresh_tokens
                .get(&key)
                .is_none_or(|token| token.client_id != app.client_id)
            {
                return Err(invalid_grant());
            }
            // Rotation: the old refresh token and the access token issued with it die
            // now, so a second refresh racing with the same token gets invalid_grant.
            let old = inner
                .refresh_tokens
                .remove(&key)
                .ok_or_else(invalid_grant)?;
            inner.access_tokens.remove(&old.access_token);
            if now >= old.expires_ms {
                return Err(BitrixError::new(
                    StatusCode::UNAUTHORIZED,
                    "expired_token",
                    None,
                ));
            }
        }
    }
    inner
        .issue_tokens(settings, now, &app.client_id, &base)
        .ok_or_else(|| named_error("invalid_client", false))
}

// ---------------------------------------------------------------------------------
// /rest/{method}

/// `GET|POST /rest/{method}[.json]?auth=…` (auth also in a form or JSON body).
/// Methods: `crm.deal.list` (scope `crm`) and `profile`; others get
/// `ERROR_METHOD_NOT_FOUND`.
pub(crate) async fn rest(
    State(state): State<SandboxState>,
    Path(method): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let started_ms = state.now_ms();
    let method = method
        .strip_suffix(".json")
        .unwrap_or(method.as_str())
        .to_owned();
    let mut params = Params::from_query(query.as_deref());
    let mut client_id = None;
    let (status, outcome, forced, response) = match state.intercept(Service::Rest).await {
        Interception::Status(status) => (status, bare_outcome(status), true, bare_status(status)),
        Interception::Error { error, .. } => {
            let error = named_error(&error, true);
            (
                error.status,
                error.error.clone(),
                true,
                error.rest_response(),
            )
        }
        Interception::Proceed => {
            let result = match params.add_body(&headers, &body) {
                Err(_) => Err(BitrixError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REQUEST",
                    Some("Request body is not valid JSON"),
                )),
                Ok(()) => call(&state, &method, &params, &mut client_id, started_ms),
            };
            match result {
                Ok(body) => (
                    StatusCode::OK,
                    "ok".to_owned(),
                    false,
                    Json(body).into_response(),
                ),
                Err(error) => (
                    error.status,
                    error.error.clone(),
                    false,
                    error.rest_response(),
                ),
            }
        }
    };
    let at = state.now();
    state.inner().log.rest_calls.push(RestCallRecord {
        at,
        method,
        client_id,
        status: status.as_u16(),
        outcome,
        forced,
    });
    response
}

/// Checks the token and runs the method.
fn call(
    state: &SandboxState,
    method: &str,
    params: &Params,
    client_id: &mut Option<String>,
    started_ms: i64,
) -> Result<Value, BitrixError> {
    let auth = params
        .non_empty("auth")
        .ok_or_else(|| named_error("NO_AUTH_FOUND", true))?;
    let now = state.now_ms();
    let token = state
        .inner()
        .access_tokens
        .get(&auth)
        .cloned()
        .ok_or_else(|| named_error("invalid_token", true))?;
    *client_id = Some(token.client_id.clone());
    if now >= token.expires_ms {
        return Err(named_error("expired_token", true));
    }
    let has_scope = |wanted: &str| token.scope.split(',').any(|s| s.trim() == wanted);
    let mut body = Map::new();
    match method {
        "crm.deal.list" => {
            if !has_scope("crm") {
                return Err(named_error("insufficient_scope", true));
            }
            let deals = deals();
            let total = deals.len();
            body.insert("result".into(), Value::Array(deals));
            body.insert("total".into(), json!(total));
        }
        "profile" => {
            body.insert("result".into(), profile());
        }
        _ => return Err(named_error("ERROR_METHOD_NOT_FOUND", true)),
    }
    body.insert("time".into(), time(started_ms, state.now_ms()));
    Ok(Value::Object(body))
}

/// The `time` object of a REST answer.
fn time(start_ms: i64, finish_ms: i64) -> Value {
    let seconds = |ms: i64| ms as f64 / 1000.0;
    let duration = seconds(finish_ms.saturating_sub(start_ms));
    json!({
        "start": seconds(start_ms),
        "finish": seconds(finish_ms),
        "duration": duration,
        "processing": duration,
        "date_start": iso8601(start_ms),
        "date_finish": iso8601(finish_ms),
        "operating_reset_at": finish_ms.div_euclid(1000) + 600,
        "operating": 0
    })
}

/// The fixed deals of `crm.deal.list` (Bitrix24 writes every value as a string).
fn deals() -> Vec<Value> {
    let deal = |id: &str, title: &str, stage: &str, amount: &str, closed: &str, created: &str| {
        json!({
            "ID": id,
            "TITLE": title,
            "TYPE_ID": "SALE",
            "STAGE_ID": stage,
            "PROBABILITY": null,
            "CURRENCY_ID": "RUB",
            "OPPORTUNITY": amount,
            "IS_MANUAL_OPPORTUNITY": "N",
            "TAX_VALUE": "0.00",
            "LEAD_ID": null,
            "COMPANY_ID": "0",
            "CONTACT_ID": "0",
            "BEGINDATE": created,
            "CLOSEDATE": created,
            "OPENED": "Y",
            "CLOSED": closed,
            "ASSIGNED_BY_ID": "1",
            "CREATED_BY_ID": "1",
            "MODIFY_BY_ID": "1",
            "DATE_CREATE": created,
            "DATE_MODIFY": created,
            "CATEGORY_ID": "0",
            "STAGE_SEMANTIC_ID": if closed == "Y" { "S" } else { "P" },
            "SOURCE_ID": "WEB"
        })
    };
    vec![
        deal(
            "1",
            "Website redesign",
            "NEW",
            "150000.00",
            "N",
            "2024-10-01T10:00:00+03:00",
        ),
        deal(
            "2",
            "CRM integration",
            "PREPARATION",
            "320000.00",
            "N",
            "2024-10-03T12:30:00+03:00",
        ),
        deal(
            "3",
            "Support contract 2025",
            "WON",
            "96000.00",
            "Y",
            "2024-10-05T09:15:00+03:00",
        ),
    ]
}

/// The user of `profile`.
fn profile() -> Value {
    json!({
        "ID": "1",
        "ADMIN": true,
        "NAME": "Sandbox",
        "LAST_NAME": "User",
        "PERSONAL_GENDER": "",
        "PERSONAL_PHOTO": "",
        "TIME_ZONE": "",
        "TIME_ZONE_OFFSET": 10800
    })
}
