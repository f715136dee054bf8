//! UniSender: `POST /{lang}/api/sendEmail?format=json&api_key=KEY` (GET works too)
//! with `email`, `sender_name`, `sender_email`, `subject`, `body`, `list_id` in the
//! query or a form body. Success `{"result":{"email_id":"…"}}`. Errors are **HTTP 200**
//! with `{"error":"…","code":"…"}`: a client must read the body, not only the status.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::notify::{Outcome, is_email, run};
use crate::params::Params;
use crate::state::{Message, SandboxState, Service};

/// Errors a forced failure may name (the codes themselves).
pub(crate) const ERRORS: &[&str] = &[
    "invalid_api_key",
    "invalid_arg",
    "not_enough_money",
    "retry_later",
    "api_call_limit_exceeded_for_api_key",
];

/// A UniSender error answer: HTTP 200.
fn error(code: &str, message: &str) -> Outcome {
    let body = json!({"error": message, "code": code});
    Outcome::new(StatusCode::OK, code, Json(body).into_response())
}

fn forced_error(name: &str, _retry_after: Option<u64>) -> Outcome {
    match name {
        "invalid_arg" => error("invalid_arg", "Invalid argument"),
        "not_enough_money" => error("not_enough_money", "Not enough money on the account"),
        "retry_later" => error("retry_later", "Temporary error, please retry later"),
        "api_call_limit_exceeded_for_api_key" => error(
            "api_call_limit_exceeded_for_api_key",
            "API call limit exceeded for this API key",
        ),
        _ => error("invalid_api_key", "Invalid API key"),
    }
}

/// `GET|POST /{lang}/api/sendEmail`.
pub(crate) async fn handler(
    State(state): State<SandboxState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    run(&state, Service::Unisender, forced_error, || {
        send_email(&state, query.as_deref(), &headers, &body)
    })
    .await
}

fn send_email(
    state: &SandboxState,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Outcome {
    let mut params = Params::from_query(query);
    // UniSender reads form fields; a body that is not a form adds nothing.
    let _ = params.add_body(headers, body);
    if params.non_empty("api_key").as_deref()
        != Some(state.credentials().unisender_api_key.as_str())
    {
        return error("invalid_api_key", "Invalid API key");
    }
    for name in [
        "email",
        "sender_name",
        "sender_email",
        "subject",
        "body",
        "list_id",
    ] {
        if params.non_empty(name).is_none() {
            return error(
                "invalid_arg",
                &format!("Required argument \"{name}\" is missing or empty"),
            );
        }
    }
    let email = params.non_empty("email").unwrap_or_default();
    if !is_email(&email) {
        return error("invalid_arg", &format!("Invalid email address \"{email}\""));
    }
    let sender_email = params.non_empty("sender_email").unwrap_or_default();
    if !is_email(&sender_email) {
        return error(
            "invalid_arg",
            &format!("Invalid sender email address \"{sender_email}\""),
        );
    }
    let list_id = params.non_empty("list_id").unwrap_or_default();
    if list_id.parse::<u64>().is_err() {
        return error("invalid_arg", &format!("Invalid list_id \"{list_id}\""));
    }

    let email_id = (state.inner().next_message_id() + 10_000_000).to_string();
    let mut recorded = params.to_json();
    if let Some(map) = recorded.as_object_mut() {
        map.remove("api_key");
    }
    state.record_message(Message {
        service: Service::Unisender,
        id: email_id.clone(),
        at: state.now(),
        to: vec![email],
        from: Some(sender_email),
        subject: params.text("subject"),
        text: params.text("body").unwrap_or_default(),
        params: recorded,
    });
    let body: Value = json!({"result": {"email_id": email_id}});
    Outcome::new(StatusCode::OK, "ok", Json(body).into_response())
}
