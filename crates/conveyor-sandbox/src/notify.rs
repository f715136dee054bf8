//! What the five notification services share: a request's way through a forced
//! failure, and the record of its outcome.

use axum::http::StatusCode;
use axum::response::Response;

use crate::state::{Interception, SandboxState, Service, bare_outcome, bare_status};

/// How a notifier request ended: what to record and what to answer.
pub(crate) struct Outcome {
    pub(crate) status: StatusCode,
    /// `ok` or the service's error (`Unauthorized`, `20003`, `invalid_api_key`, …).
    pub(crate) outcome: String,
    pub(crate) response: Response,
}

impl Outcome {
    pub(crate) fn new(status: StatusCode, outcome: impl Into<String>, response: Response) -> Self {
        Outcome {
            status,
            outcome: outcome.into(),
            response,
        }
    }
}

/// Runs a notifier request: a forced failure first (bare status, or the service's own
/// error from `forced_error`), otherwise `handle`. Records the outcome either way.
pub(crate) async fn run(
    state: &SandboxState,
    service: Service,
    forced_error: impl FnOnce(&str, Option<u64>) -> Outcome,
    handle: impl FnOnce() -> Outcome,
) -> Response {
    let (outcome, forced) = match state.intercept(service).await {
        Interception::Proceed => (handle(), false),
        Interception::Status(status) => (
            Outcome::new(status, bare_outcome(status), bare_status(status)),
            true,
        ),
        Interception::Error { error, retry_after } => (forced_error(&error, retry_after), true),
    };
    state.record_notifier(service, outcome.status, &outcome.outcome, forced);
    outcome.response
}

/// `true` for something that looks like a phone number: an optional `+`, then 7–15
/// digits (spaces, dashes, dots and parentheses ignored).
pub(crate) fn is_phone(text: &str) -> bool {
    let digits: String = text
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    let digits = digits.strip_prefix('+').unwrap_or(&digits);
    (7..=15).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit())
        && !digits.starts_with('0')
}

/// `true` for something that looks like an e-mail address (`x@y.z`, no spaces).
pub(crate) fn is_email(text: &str) -> bool {
    match text.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && !text.chars().any(char::is_whitespace)
        }
        None => false,
    }
}
