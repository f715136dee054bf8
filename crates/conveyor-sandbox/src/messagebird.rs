//! MessageBird SMS: `POST /messages`, header `Authorization: AccessKey {KEY}`, fields
//! `originator`, `body`, `recipients` (comma-separated, or a JSON array), form or JSON.
//! Success 201 with the message; errors `{"errors":[{"code":…,"description":"…",
//! "parameter":…}]}` (401 for the key, 422 for validation).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::clock::iso8601;
use crate::ids::random_hex;
use crate::notify::{Outcome, run};
use crate::params::{Params, auth_scheme};
use crate::state::{Message, SandboxState, Service};

/// Errors a forced failure may name: `auth` (code 2, 401), `invalid_recipients`
/// (code 9, 422), `no_balance` (code 25, 422), `internal` (code 99, 500).
pub(crate) const ERRORS: &[&str] = &["auth", "invalid_recipients", "no_balance", "internal"];

/// One entry of `errors`.
fn entry(code: u32, description: &str, parameter: Option<&str>) -> Value {
    json!({"code": code, "description": description, "parameter": parameter})
}

/// A MessageBird error answer; the recorded outcome is the first code.
fn errors(status: StatusCode, entries: Vec<Value>) -> Outcome {
    let first = entries
        .first()
        .and_then(|e| e["code"].as_u64())
        .unwrap_or(0);
    Outcome::new(
        status,
        first.to_string(),
        (status, Json(json!({"errors": entries}))).into_response(),
    )
}

fn auth_error() -> Outcome {
    errors(
        StatusCode::UNAUTHORIZED,
        vec![entry(
            2,
            "Request not allowed (incorrect access_key)",
            Some("access_key"),
        )],
    )
}

fn no_recipients() -> Value {
    entry(9, "no (correct) recipients found", Some("recipients"))
}

fn forced_error(name: &str, _retry_after: Option<u64>) -> Outcome {
    match name {
        "invalid_recipients" => errors(StatusCode::UNPROCESSABLE_ENTITY, vec![no_recipients()]),
        "no_balance" => errors(
            StatusCode::UNPROCESSABLE_ENTITY,
            vec![entry(25, "Not enough balance", None)],
        ),
        "internal" => errors(
            StatusCode::INTERNAL_SERVER_ERROR,
            vec![entry(99, "Internal error", None)],
        ),
        _ => auth_error(),
    }
}

/// `POST /messages`.
pub(crate) async fn handler(
    State(state): State<SandboxState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run(&state, Service::Messagebird, forced_error, || {
        create_message(&state, &headers, &body)
    })
    .await
}

fn create_message(state: &SandboxState, headers: &HeaderMap, body: &[u8]) -> Outcome {
    let key = auth_scheme(headers, "AccessKey");
    if key.as_deref() != Some(state.credentials().messagebird_access_key.as_str()) {
        return auth_error();
    }
    let mut params = Params::default();
    if params.add_body(headers, body).is_err() {
        return errors(
            StatusCode::UNPROCESSABLE_ENTITY,
            vec![entry(21, "JSON is not a valid format", None)],
        );
    }

    // Validation reports every problem at once, as MessageBird does.
    let mut problems = Vec::new();
    let originator = params.non_empty("originator");
    match &originator {
        None => problems.push(entry(9, "originator is required", Some("originator"))),
        Some(o) if !is_originator(o) => {
            problems.push(entry(10, "originator is invalid", Some("originator")));
        }
        Some(_) => {}
    }
    let text = params.non_empty("body");
    if text.is_none() {
        problems.push(entry(9, "body is required", Some("body")));
    }
    let recipients = recipients(params.value("recipients"));
    if recipients.is_empty() {
        problems.push(no_recipients());
    }
    let (Some(originator), Some(text), true) = (originator, text, problems.is_empty()) else {
        return errors(StatusCode::UNPROCESSABLE_ENTITY, problems);
    };

    let now_ms = state.now_ms();
    let id = random_hex(32);
    let date = iso8601(now_ms);
    let base = state
        .public_url()
        .unwrap_or_else(|| "http://127.0.0.1".into());
    let items: Vec<Value> = recipients
        .iter()
        .map(|r| {
            json!({
                "recipient": r,
                "status": "sent",
                "statusDatetime": date,
                "messagePartCount": 1
            })
        })
        .collect();
    let message = json!({
        "id": id,
        "href": format!("{base}/messages/{id}"),
        "direction": "mt",
        "type": "sms",
        "originator": originator,
        "body": text,
        "reference": params.text("reference"),
        "validity": null,
        "gateway": 10,
        "typeDetails": {},
        "datacoding": "plain",
        "mclass": 1,
        "scheduledDatetime": null,
        "createdDatetime": date,
        "recipients": {
            "totalCount": recipients.len(),
            "totalSentCount": recipients.len(),
            "totalDeliveredCount": 0,
            "totalDeliveryFailedCount": 0,
            "items": items
        }
    });
    state.record_message(Message {
        service: Service::Messagebird,
        id,
        at: now_ms.div_euclid(1000),
        to: recipients.iter().map(u64::to_string).collect(),
        from: Some(originator),
        subject: None,
        text,
        params: params.to_json(),
    });
    Outcome::new(
        StatusCode::CREATED,
        "ok",
        (StatusCode::CREATED, Json(message)).into_response(),
    )
}

/// The valid recipients (MSISDNs) of `recipients`: a comma-separated string, a number,
/// or an array of either. Invalid entries are dropped.
fn recipients(value: Option<&Value>) -> Vec<u64> {
    let mut texts = Vec::new();
    match value {
        Some(Value::String(s)) => texts.extend(s.split(',').map(str::to_owned)),
        Some(Value::Number(n)) => texts.push(n.to_string()),
        Some(Value::Array(items)) => {
            for item in items {
                match item {
                    Value::String(s) => texts.extend(s.split(',').map(str::to_owned)),
                    Value::Number(n) => texts.push(n.to_string()),
                    _ => {}
                }
            }
        }
        _ => {}
    }
    texts
        .iter()
        .map(|t| t.trim().trim_start_matches('+'))
        .filter(|t| (7..=15).contains(&t.len()) && t.chars().all(|c| c.is_ascii_digit()))
        .filter_map(|t| t.parse().ok())
        .collect()
}

/// A phone number (up to 17 digits, optional `+`) or an alphanumeric sender of at most
/// 11 characters.
fn is_originator(originator: &str) -> bool {
    let digits = originator.strip_prefix('+').unwrap_or(originator);
    let numeric = (1..=17).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit());
    let alphanumeric = (1..=11).contains(&originator.len())
        && originator
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == ' ');
    numeric || alphanumeric
}
