//! Telegram Bot API: `/bot{TOKEN}/sendMessage` (GET or POST; JSON, form or query
//! parameters). Errors: HTTP status = `error_code`, body
//! `{"ok":false,"error_code":…,"description":"…"}`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::notify::{Outcome, run};
use crate::params::Params;
use crate::state::{Message, SandboxState, Service};

/// Errors a forced failure may name: `chat_not_found` (400), `blocked` (403, bot
/// blocked by the user), `too_many_requests` (429 with `retry_after`), `unauthorized`
/// (401).
pub(crate) const ERRORS: &[&str] = &[
    "chat_not_found",
    "blocked",
    "too_many_requests",
    "unauthorized",
];

const MAX_TEXT_CHARS: usize = 4096;

/// A Telegram error answer.
fn error(code: u16, description: &str) -> Outcome {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    let body = json!({"ok": false, "error_code": code, "description": description});
    Outcome::new(status, description, (status, Json(body)).into_response())
}

fn too_many_requests(retry_after: u64) -> Outcome {
    let description = format!("Too Many Requests: retry after {retry_after}");
    let body = json!({
        "ok": false,
        "error_code": 429,
        "description": description,
        "parameters": {"retry_after": retry_after}
    });
    Outcome::new(
        StatusCode::TOO_MANY_REQUESTS,
        description,
        (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response(),
    )
}

fn forced_error(name: &str, retry_after: Option<u64>) -> Outcome {
    match name {
        "blocked" => error(403, "Forbidden: bot was blocked by the user"),
        "too_many_requests" => too_many_requests(retry_after.unwrap_or(5)),
        "unauthorized" => error(401, "Unauthorized"),
        _ => error(400, "Bad Request: chat not found"),
    }
}

/// `/{first}/{method}`: Telegram when `first` is `bot{TOKEN}`.
pub(crate) async fn handler(
    State(state): State<SandboxState>,
    Path((first, method)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let Some(token) = first.strip_prefix("bot").map(str::to_owned) else {
        return (StatusCode::NOT_FOUND, "Not Found\n").into_response();
    };
    run(&state, Service::Telegram, forced_error, || {
        send_message(&state, &token, &method, query.as_deref(), &headers, &body)
    })
    .await
}

fn send_message(
    state: &SandboxState,
    token: &str,
    method: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Outcome {
    if token != state.credentials().telegram_bot_token {
        return error(401, "Unauthorized");
    }
    // Method names are case-insensitive on the Bot API.
    if !method.eq_ignore_ascii_case("sendMessage") {
        return error(404, "Not Found");
    }
    let mut params = Params::from_query(query);
    if params.add_body(headers, body).is_err() {
        return error(400, "Bad Request: can't parse JSON object");
    }
    let Some(chat_id) = params.non_empty("chat_id") else {
        return error(400, "Bad Request: chat_id is empty");
    };
    let Some(text) = params.text("text").filter(|t| !t.trim().is_empty()) else {
        return error(400, "Bad Request: message text is empty");
    };
    if text.chars().count() > MAX_TEXT_CHARS {
        return error(400, "Bad Request: message is too long");
    }
    if let Some(mode) = params.non_empty("parse_mode")
        && !["markdown", "markdownv2", "html"].contains(&mode.to_ascii_lowercase().as_str())
    {
        return error(
            400,
            &format!("Bad Request: unsupported parse_mode \"{mode}\""),
        );
    }
    let Some(chat) = chat(&chat_id) else {
        return error(400, "Bad Request: chat not found");
    };

    let date = state.now();
    let message_id = state.inner().next_message_id();
    let bot_id: i64 = token
        .split(':')
        .next()
        .and_then(|id| id.parse().ok())
        .unwrap_or(1);
    let mut result = json!({"message_id": message_id});
    if let Some(map) = result.as_object_mut() {
        if chat["type"] == "channel" {
            map.insert("sender_chat".into(), chat.clone());
        } else {
            map.insert(
                "from".into(),
                json!({"id": bot_id, "is_bot": true, "first_name": "Sandbox Bot", "username": "sandbox_bot"}),
            );
        }
        map.insert("chat".into(), chat);
        map.insert("date".into(), json!(date));
        map.insert("text".into(), Value::String(text.clone()));
    }
    state.record_message(Message {
        service: Service::Telegram,
        id: message_id.to_string(),
        at: date,
        to: vec![chat_id],
        from: None,
        subject: None,
        text,
        params: params.to_json(),
    });
    Outcome::new(
        StatusCode::OK,
        "ok",
        Json(json!({"ok": true, "result": result})).into_response(),
    )
}

/// The `chat` object for a `chat_id`: a number (private chat if positive, group or
/// supergroup if negative) or `@channelusername`. Anything else is not a chat.
fn chat(chat_id: &str) -> Option<Value> {
    if let Ok(id) = chat_id.parse::<i64>() {
        return Some(if id > 0 {
            json!({"id": id, "first_name": "Sandbox", "type": "private"})
        } else if id <= -1_000_000_000_000 {
            json!({"id": id, "title": "Sandbox supergroup", "type": "supergroup"})
        } else {
            json!({"id": id, "title": "Sandbox group", "type": "group"})
        });
    }
    let username = chat_id.strip_prefix('@')?;
    let valid = (5..=32).contains(&username.len())
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        && username.starts_with(|c: char| c.is_ascii_alphabetic());
    if !valid {
        return None;
    }
    // A stable negative id per channel name.
    let hash = username
        .bytes()
        .fold(0_i64, |h, b| (h * 31 + i64::from(b)) % 1_000_000_000);
    Some(json!({
        "id": -1_001_000_000_000 - hash,
        "title": username,
        "username": username,
        "type": "channel"
    }))
}
