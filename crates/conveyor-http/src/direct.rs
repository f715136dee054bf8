//! A process's direct URL: `GET|POST /api/1/json/public/{process}/{hash}`.
//!
//! The hash is the secret (`conveyor process url`), but the URL itself is public by
//! nature (browser history, the portal's settings, proxy logs), so what it may do is
//! what the process allows (`Runtime::direct_url`): only params declared with
//! `input: [url]`, only the refs `direct_url.refs` names. Parameters come from the query
//! string and the body (JSON object or form). With a `ref` naming an existing task the
//! request modifies it (waking it if it waits); otherwise it creates a task (with that
//! ref, if given). This lets an OAuth redirect deliver a code straight into a process.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use conveyor_commands::CommandError;
use conveyor_commands::door::{self, DirectRequest};
use conveyor_runtime::RuntimeError;
use serde_json::{Map, Value, json};

use crate::{AppState, error, read_body, too_many};

pub(crate) async fn handle(
    State(state): State<Arc<AppState>>,
    Path((process, hash)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let runtime = state.runtime.clone();
    // The process and its hash are checked before the body is read.
    let id = match door::direct_target(&runtime, &process, &hash) {
        Ok(id) => id,
        Err(e) => return error(StatusCode::NOT_FOUND, &e.to_string()),
    };
    if let Err(wait) = state.direct_rate.take(id, Instant::now()) {
        return too_many(
            &format!("the direct URL of process {id}"),
            state.direct_rate.rate(),
            wait,
        );
    }
    let bytes = match read_body(&state, body).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let mut data = Map::new();
    for (k, v) in form_pairs(query.as_deref().unwrap_or("")) {
        data.insert(k, Value::String(v));
    }
    if !bytes.is_empty() {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if content_type.starts_with("application/x-www-form-urlencoded") {
            for (k, v) in form_pairs(&String::from_utf8_lossy(&bytes)) {
                data.insert(k, Value::String(v));
            }
        } else {
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(map)) => data.extend(map),
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "the body must be a JSON object or a form",
                    );
                }
            }
        }
    }
    let reference = match data.remove("ref") {
        Some(Value::String(r)) if !r.is_empty() => Some(r),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    // `wait` is the door's, like `ref`: Corezoid's Sync API, never a param of the task.
    let wait = match data.remove("wait") {
        None => None,
        Some(value) => match wait_for(&value) {
            Some(wait) => Some(wait),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "wait: expected a number of seconds from 1 to 60 (or `wait` alone for 60)",
                );
            }
        },
    };
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    // Joins the committer's group and is answered once that group is on disk.
    let request = DirectRequest {
        process: id,
        reference,
        data,
        wait,
    };
    let outcome = door::direct_url(&runtime, request).await;
    match outcome {
        Ok(done) => {
            let mut answer = json!({
                "proc": "ok", "action": done.action,
                "obj_id": done.task.to_string(), "ref": done.reference,
            });
            match &done.reply {
                None => {}
                Some(None) => return timed_out(&done, wait.unwrap_or_default(), wants_html),
                Some(Some(reply)) => {
                    answer["reply"] = Value::Object(reply.data.clone());
                    answer["reply_error"] = Value::Bool(reply.error);
                    answer["node"] = Value::String(reply.node.clone());
                    answer["status"] = Value::String(reply.status.as_str().to_string());
                    if wants_html {
                        return Html(answered_page(reply)).into_response();
                    }
                }
            }
            if wants_html {
                Html(format!(
                    "<!doctype html><meta charset=utf-8><title>Conveyor</title>\
                     <p>Conveyor received it (task {}, {}). You can close this tab.</p>",
                    done.task, done.action
                ))
                .into_response()
            } else {
                axum::Json(json!({"request_proc": "ok", "ops": [answer]})).into_response()
            }
        }
        Err(e) => {
            let status = match &e {
                e if door::is_bad_input(e) => StatusCode::BAD_REQUEST,
                CommandError::Runtime(RuntimeError::Refused(_)) => StatusCode::FORBIDDEN,
                e if e.is_not_found() => StatusCode::NOT_FOUND,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            (
                status,
                axum::Json(json!({"request_proc": "ok", "ops": [{"proc": "error", "description": e.to_string()}]})),
            )
                .into_response()
        }
    }
}

/// `a=1&b=x%20y` → pairs, percent- and plus-decoded.
/// `wait`'s value: seconds from 1 to 60; empty or `true` means 60.
fn wait_for(value: &Value) -> Option<std::time::Duration> {
    let seconds = match value {
        Value::String(s) if s.is_empty() || s == "true" => return Some(door::MAX_WAIT),
        Value::Bool(true) => return Some(door::MAX_WAIT),
        Value::String(s) => s.trim().trim_end_matches('s').parse::<u64>().ok()?,
        Value::Number(n) => n.as_u64()?,
        _ => return None,
    };
    let wait = std::time::Duration::from_secs(seconds);
    (seconds > 0 && wait <= door::MAX_WAIT).then_some(wait)
}

/// 504: the task did not answer in time; it goes on, and the caller has its id.
fn timed_out(done: &door::DirectAnswer, wait: std::time::Duration, html: bool) -> Response {
    let description = format!(
        "task {} did not answer within {} s (it goes on: look it up by its id)",
        done.task,
        wait.as_secs()
    );
    if html {
        return (
            StatusCode::GATEWAY_TIMEOUT,
            Html(format!(
                "<!doctype html><meta charset=utf-8><title>Conveyor</title><p>Conveyor received it (task {}, {}), but {}. You can close this tab.</p>",
                done.task,
                done.action,
                conveyor_graph::xml_escape(&description)
            )),
        )
            .into_response();
    }
    (
        StatusCode::GATEWAY_TIMEOUT,
        axum::Json(json!({"request_proc": "ok", "ops": [{
            "proc": "timeout", "action": done.action, "obj_id": done.task.to_string(),
            "ref": done.reference, "description": description,
        }]})),
    )
        .into_response()
}

/// The page a browser gets when the task answered: its `message`, if the answer has
/// one, else what it did.
fn answered_page(reply: &conveyor_runtime::Answer) -> String {
    let message = match reply.data.get("message") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ if reply.error => format!("task {} failed in {}", reply.task, reply.node),
        _ => format!("task {} answered ({})", reply.task, reply.status.as_str()),
    };
    format!(
        "<!doctype html><meta charset=utf-8><title>Conveyor</title><p{}>{}</p><p>You can close this tab.</p>",
        if reply.error { " class=error" } else { "" },
        conveyor_graph::xml_escape(&message)
    )
}

pub(crate) fn form_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            // Two hex digits exactly: `u8::from_str_radix` alone would also take `+A`.
            b'%' if i + 2 < bytes.len()
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit() =>
            {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn form_decoding() {
        assert_eq!(
            form_pairs("code=6dm7&state=a%20b&domain=x.bitrix24.ru&plus=a+b&bad=%zz&end=%4"),
            vec![
                ("code".into(), "6dm7".into()),
                ("state".into(), "a b".into()),
                ("domain".into(), "x.bitrix24.ru".into()),
                ("plus".into(), "a b".into()),
                ("bad".into(), "%zz".into()),
                ("end".into(), "%4".into()),
            ]
        );
    }

    /// Found by `fuzz_decode_agrees_with_the_plain_reading`: `%+A` decoded to byte 0x0A,
    /// because `u8::from_str_radix` accepts a leading `+`.
    #[test]
    fn regression_a_sign_is_not_a_hex_digit() {
        assert_eq!(decode("%+A"), "%+A".replace('+', " "));
        assert_eq!(decode("%+1x"), "% 1x");
        assert_eq!(decode("%-1"), "%-1");
        assert_eq!(
            form_pairs("code=%+Ab"),
            vec![("code".into(), "% Ab".into())]
        );
    }

    /// `default` cases; proptest takes `PROPTEST_CASES` over it.
    fn config(default: u32) -> ProptestConfig {
        ProptestConfig {
            cases: default,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// What `decode` must do, written plainly: `+` is a space, `%` and two hex digits
    /// a byte, anything else itself.
    fn reference_decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'+' {
                out.push(b' ');
            } else if bytes[i] == b'%'
                && i + 2 < bytes.len()
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit()
            {
                let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
                out.push(hex(bytes[i + 1]) * 16 + hex(bytes[i + 2]));
                i += 2;
            } else {
                out.push(bytes[i]);
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn percent_encode(text: &str) -> String {
        text.bytes().map(|b| format!("%{b:02X}")).collect()
    }

    proptest! {
        #![proptest_config(config(500))]

        #[test]
        fn fuzz_decode_and_form_pairs_of_arbitrary_text(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = decode(&text);
            let _ = form_pairs(&text);
        }

        #[test]
        fn fuzz_decode_agrees_with_the_plain_reading(text in "[%+0-9a-fA-FgxZ=&\\-]{0,24}") {
            prop_assert_eq!(decode(&text), reference_decode(&text));
        }

        #[test]
        fn fuzz_encoded_text_decodes_back(text in "(?s).{0,40}") {
            prop_assert_eq!(decode(&percent_encode(&text)), text.clone());
            let pairs = form_pairs(&format!("k={}&{}=v", percent_encode(&text), percent_encode(&text)));
            prop_assert_eq!(pairs, vec![("k".to_string(), text.clone()), (text, "v".to_string())]);
        }
    }
}
