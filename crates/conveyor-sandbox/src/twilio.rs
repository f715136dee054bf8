//! Twilio Messages: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, HTTP Basic
//! auth `AccountSid:AuthToken`, form fields `To`, `From` (or `MessagingServiceSid`),
//! `Body`. Success 201 with the message resource; errors
//! `{"code":…,"message":"…","more_info":"…","status":…}`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::clock::rfc2822;
use crate::ids::random_hex;
use crate::notify::{Outcome, is_phone, run};
use crate::params::{Params, basic_auth};
use crate::state::{Message, SandboxState, Service};

/// Errors a forced failure may name: `auth` (20003, 401), `invalid_to` (21211, 400),
/// `unverified_to` (21608, 400, a trial account's unverified number),
/// `too_many_requests` (20429, 429), `internal` (20500, 500).
pub(crate) const ERRORS: &[&str] = &[
    "auth",
    "invalid_to",
    "unverified_to",
    "too_many_requests",
    "internal",
];

const MAX_BODY_CHARS: usize = 1600;

/// A Twilio error answer.
fn error(status: StatusCode, code: u32, message: &str) -> Outcome {
    let body = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16()
    });
    let response = if status == StatusCode::UNAUTHORIZED {
        (
            status,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"Twilio API\"")],
            Json(body),
        )
            .into_response()
    } else {
        (status, Json(body)).into_response()
    };
    Outcome::new(status, code.to_string(), response)
}

fn auth_error() -> Outcome {
    error(StatusCode::UNAUTHORIZED, 20003, "Authenticate")
}

fn invalid_to(to: &str) -> Outcome {
    error(
        StatusCode::BAD_REQUEST,
        21211,
        &format!("The 'To' number {to} is not a valid phone number."),
    )
}

/// `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`.
pub(crate) async fn handler(
    State(state): State<SandboxState>,
    Path(account_sid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Twilio reads form fields only; a JSON body is simply no fields.
    let mut params = Params::default();
    if !body.trim_ascii_start().starts_with(b"{") {
        let _ = params.add_body(&HeaderMap::new(), &body);
    }
    let to = params.text("To").unwrap_or_default();
    let forced = |name: &str, _retry_after: Option<u64>| match name {
        "invalid_to" => invalid_to(&to),
        "unverified_to" => error(
            StatusCode::BAD_REQUEST,
            21608,
            &format!(
                "The number {to} is unverified. Trial accounts cannot send messages to unverified numbers; verify {to} at twilio.com/user/account/phone-numbers/verified, or purchase a Twilio number to send messages to unverified numbers."
            ),
        ),
        "too_many_requests" => error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests"),
        "internal" => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            20500,
            "Internal Server Error",
        ),
        _ => auth_error(),
    };
    run(&state, Service::Twilio, forced, || {
        create_message(&state, &account_sid, &headers, &params)
    })
    .await
}

fn create_message(
    state: &SandboxState,
    account_sid: &str,
    headers: &HeaderMap,
    params: &Params,
) -> Outcome {
    let credentials = state.credentials();
    let authenticated = basic_auth(headers).is_some_and(|(user, password)| {
        user == credentials.twilio_account_sid && password == credentials.twilio_auth_token
    });
    if !authenticated {
        return auth_error();
    }
    if account_sid != credentials.twilio_account_sid {
        return error(
            StatusCode::NOT_FOUND,
            20404,
            &format!(
                "The requested resource /2010-04-01/Accounts/{account_sid}/Messages.json was not found"
            ),
        );
    }
    let Some(to) = params.non_empty("To") else {
        return error(
            StatusCode::BAD_REQUEST,
            21604,
            "A 'To' phone number is required.",
        );
    };
    let from = params.non_empty("From");
    let service_sid = params.non_empty("MessagingServiceSid");
    if from.is_none() && service_sid.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            21603,
            "A 'From' phone number is required.",
        );
    }
    let Some(text) = params.non_empty("Body") else {
        return error(StatusCode::BAD_REQUEST, 21602, "Message body is required.");
    };
    if !is_phone(strip_channel(&to)) {
        return invalid_to(&to);
    }
    if let Some(from) = &from
        && !is_sender(strip_channel(from))
    {
        return error(
            StatusCode::BAD_REQUEST,
            21212,
            &format!(
                "The 'From' number {from} is not a valid phone number, shortcode, or alphanumeric sender ID."
            ),
        );
    }
    let chars = text.chars().count();
    if chars > MAX_BODY_CHARS {
        return error(
            StatusCode::BAD_REQUEST,
            21617,
            "The concatenated message body exceeds the 1600 character limit.",
        );
    }

    let now_ms = state.now_ms();
    let sid = format!("SM{}", random_hex(32));
    let date = rfc2822(now_ms);
    let segments = if chars <= 160 { 1 } else { chars.div_ceil(153) };
    // With only a messaging service, Twilio picks the sender later: "accepted".
    let status = if from.is_some() { "queued" } else { "accepted" };
    let uri = format!("/2010-04-01/Accounts/{account_sid}/Messages/{sid}");
    let resource = json!({
        "account_sid": account_sid,
        "api_version": "2010-04-01",
        "body": text,
        "date_created": date,
        "date_sent": null,
        "date_updated": date,
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": from,
        "messaging_service_sid": service_sid,
        "num_media": "0",
        "num_segments": segments.to_string(),
        "price": null,
        "price_unit": "USD",
        "sid": sid,
        "status": status,
        "subresource_uris": {"media": format!("{uri}/Media.json")},
        "to": to,
        "uri": format!("{uri}.json")
    });
    state.record_message(Message {
        service: Service::Twilio,
        id: sid,
        at: now_ms.div_euclid(1000),
        to: vec![to],
        from,
        subject: None,
        text,
        params: params.to_json(),
    });
    Outcome::new(
        StatusCode::CREATED,
        "ok",
        (StatusCode::CREATED, Json(resource)).into_response(),
    )
}

/// `+123` of `whatsapp:+123` (Twilio's channel prefixes).
fn strip_channel(address: &str) -> &str {
    address
        .split_once(':')
        .map_or(address, |(_, number)| number)
}

/// A phone number, a short code (5–6 digits) or an alphanumeric sender id (1–11
/// letters, digits and spaces, at least one letter).
fn is_sender(from: &str) -> bool {
    let short_code = (5..=6).contains(&from.len()) && from.chars().all(|c| c.is_ascii_digit());
    let alphanumeric = (1..=11).contains(&from.len())
        && from.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ')
        && from.chars().any(|c| c.is_ascii_alphabetic());
    is_phone(from) || short_code || alphanumeric
}
