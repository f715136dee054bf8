//! Mandrill: `POST /api/1.0/messages/send.json`, JSON body
//! `{"key":"…","message":{"subject","text","html","from_email","to":[{"email","type"}]}}`.
//! Success 200 with one entry per recipient (`status` sent / queued / scheduled /
//! rejected / invalid — rejected and invalid are failures even though HTTP is 200);
//! errors `{"status":"error","code":…,"name":"…","message":"…"}` with HTTP 500.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::ids::random_hex;
use crate::notify::{Outcome, is_email, run};
use crate::state::{Message, SandboxState, Service};

/// Errors a forced failure may name: `invalid_key` (500 Invalid_Key), `general_error`
/// (500 GeneralError), `rejected` and `invalid` (200, every recipient with that status;
/// `rejected` with `reject_reason` `hard-bounce`).
pub(crate) const ERRORS: &[&str] = &["invalid_key", "general_error", "rejected", "invalid"];

/// A Mandrill error answer (HTTP 500, as Mandrill sends them).
fn error(code: i32, name: &str, message: &str) -> Outcome {
    let status = StatusCode::INTERNAL_SERVER_ERROR;
    let body = json!({"status": "error", "code": code, "name": name, "message": message});
    Outcome::new(status, name, (status, Json(body)).into_response())
}

fn validation_error(detail: Value) -> Outcome {
    error(
        -2,
        "ValidationError",
        &format!("Validation error: {detail}"),
    )
}

/// One answer entry per recipient.
fn results(recipients: &[String], status: &str, reject_reason: Option<&str>) -> Vec<Value> {
    recipients
        .iter()
        .map(|email| {
            json!({
                "email": email,
                "status": status,
                "_id": random_hex(32),
                "reject_reason": reject_reason
            })
        })
        .collect()
}

/// `POST /api/1.0/messages/send.json` (and without `.json`).
pub(crate) async fn handler(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: Option<Value> = serde_json::from_slice(&body).ok();
    let recipients = request
        .as_ref()
        .map(|r| emails(&r["message"]["to"]))
        .unwrap_or_default();
    let forced = |name: &str, _retry_after: Option<u64>| match name {
        "rejected" | "invalid" => {
            let reason = (name == "rejected").then_some("hard-bounce");
            let body = results(&recipients, name, reason);
            Outcome::new(StatusCode::OK, name, Json(body).into_response())
        }
        "general_error" => error(-1, "GeneralError", "An unknown error occurred"),
        _ => error(-1, "Invalid_Key", "Invalid API key"),
    };
    run(&state, Service::Mandrill, forced, || {
        send(&state, request.as_ref())
    })
    .await
}

fn send(state: &SandboxState, request: Option<&Value>) -> Outcome {
    let Some(request) = request.filter(|r| r.is_object()) else {
        return error(-1, "Invalid_Key", "You must specify a key value");
    };
    match request["key"].as_str() {
        None | Some("") => return error(-1, "Invalid_Key", "You must specify a key value"),
        Some(key) if key != state.credentials().mandrill_key => {
            return error(-1, "Invalid_Key", "Invalid API key");
        }
        Some(_) => {}
    }
    let message = &request["message"];
    if !message.is_object() {
        return validation_error(json!({"message": "Please enter an array"}));
    }
    if !message["to"].is_array() {
        return validation_error(json!({"message": {"to": "Please enter an array"}}));
    }
    let recipients = emails(&message["to"]);
    let (valid, invalid): (Vec<String>, Vec<String>) =
        recipients.iter().cloned().partition(|e| is_email(e));
    let mut answer = results(&valid, "sent", None);
    answer.extend(results(&invalid, "invalid", None));
    if let Some(first) = answer.first().and_then(|a| a["_id"].as_str())
        && !valid.is_empty()
    {
        let text = message["text"]
            .as_str()
            .or_else(|| message["html"].as_str())
            .unwrap_or_default();
        state.record_message(Message {
            service: Service::Mandrill,
            id: first.to_owned(),
            at: state.now(),
            to: valid.clone(),
            from: message["from_email"].as_str().map(str::to_owned),
            subject: message["subject"].as_str().map(str::to_owned),
            text: text.to_owned(),
            params: without_key(request),
        });
    }
    let outcome = if valid.is_empty() && !invalid.is_empty() {
        "invalid"
    } else {
        "ok"
    };
    Outcome::new(StatusCode::OK, outcome, Json(answer).into_response())
}

/// The addresses of `message.to` (entries without `email` are skipped).
fn emails(to: &Value) -> Vec<String> {
    to.as_array()
        .map(|list| {
            list.iter()
                .filter_map(|r| r["email"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The request without its API key (what gets recorded).
fn without_key(request: &Value) -> Value {
    let mut copy = request.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("key");
    }
    copy
}
