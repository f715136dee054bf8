//! Corezoid's task API v2: `POST /api/2/json/{login}/{unixtime}/{signature}`.
//!
//! The signature is `hex(sha1(unixtime + secret + body + secret))` over the exact bytes
//! of the body. Refused with a JSON reason: an unknown login (401), a time more than
//! five minutes off (401), a bad signature (403), a signature seen before (403). A body
//! that is not `{"ops": [...]}` gets `request_proc: format_error`; each op is answered in
//! order with `proc: ok` or `proc: error` and a description.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use conveyor_runtime::{RuntimeError, TaskKey, mask_data};
use conveyor_store::ApiKey;
use serde_json::{Map, Value, json};
use sha1::{Digest, Sha1};

use crate::{AppState, constant_time_eq, error, read_body};

pub(crate) async fn handle(
    State(state): State<Arc<AppState>>,
    Path((login, time, signature)): Path<(String, String, String)>,
    body: Body,
) -> Response {
    let limits = state.config.limits.clone();
    let bytes = match read_body(body, limits.body_bytes).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let runtime = state.runtime.clone();
    let Ok(login_number) = login.parse::<u64>() else {
        return error(StatusCode::UNAUTHORIZED, "unknown login");
    };
    let key = match runtime.store().api_key(login_number) {
        Ok(Some(key)) => key,
        Ok(None) => return error(StatusCode::UNAUTHORIZED, "unknown login"),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let Ok(request_time) = time.parse::<i64>() else {
        return error(
            StatusCode::UNAUTHORIZED,
            "the time in the URL is not a unix time",
        );
    };
    let now = runtime.now().div_euclid(1000);
    if (now - request_time).abs() > limits.max_clock_skew_secs {
        return error(
            StatusCode::UNAUTHORIZED,
            &format!(
                "the request time {request_time} is more than {} seconds from the server's ({now})",
                limits.max_clock_skew_secs
            ),
        );
    }
    let mut hasher = Sha1::new();
    hasher.update(time.as_bytes());
    hasher.update(key.secret.as_bytes());
    hasher.update(&bytes);
    hasher.update(key.secret.as_bytes());
    let expected = hex::encode(hasher.finalize());
    if !constant_time_eq(
        expected.as_bytes(),
        signature.to_ascii_lowercase().as_bytes(),
    ) {
        return error(StatusCode::FORBIDDEN, "bad signature");
    }
    if let Ok(mut seen) = state.seen.lock() {
        seen.retain(|_, t| (now - *t).abs() <= 2 * limits.max_clock_skew_secs);
        if seen.insert(expected, request_time).is_some() {
            return error(
                StatusCode::FORBIDDEN,
                "this signed request was already used (replay)",
            );
        }
    }

    let ops = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(mut map)) => match map.remove("ops") {
            Some(Value::Array(ops)) => ops,
            _ => return format_error("the body must be {\"ops\": [...]}"),
        },
        Ok(_) => return format_error("the body must be a JSON object {\"ops\": [...]}"),
        Err(e) => return format_error(&format!("the body is not JSON: {e}")),
    };
    if ops.is_empty() {
        return format_error("no ops");
    }
    if ops.len() > limits.ops_per_request {
        return format_error(&format!(
            "{} ops in one request; the limit is {}",
            ops.len(),
            limits.ops_per_request
        ));
    }
    let answers = tokio::task::spawn_blocking(move || {
        let answers: Vec<Value> = ops
            .into_iter()
            .map(|op| apply(&runtime, &key, op))
            .collect();
        // What was acknowledged is on disk.
        let _ = runtime.store().flush();
        answers
    })
    .await;
    match answers {
        Ok(answers) => axum::Json(json!({"request_proc": "ok", "ops": answers})).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn format_error(description: &str) -> Response {
    (
        StatusCode::OK,
        axum::Json(json!({"request_proc": "format_error", "description": description})),
    )
        .into_response()
}

fn op_error(description: impl Into<String>) -> Value {
    json!({"proc": "error", "description": description.into()})
}

/// One op; its failure is its own answer, not the request's.
fn apply(runtime: &conveyor_runtime::Runtime, key: &ApiKey, op: Value) -> Value {
    let Value::Object(op) = op else {
        return op_error("an op is a JSON object");
    };
    let kind = op.get("type").and_then(Value::as_str).unwrap_or("");
    if let Some(obj) = op.get("obj").and_then(Value::as_str)
        && obj != "task"
    {
        return op_error(format!("unknown obj `{obj}` (only `task`)"));
    }
    let process = match (op.get("conv_id"), op.get("obj_alias")) {
        (Some(Value::Number(n)), _) => n.to_string(),
        (Some(Value::String(s)), _) => s.clone(),
        (None, Some(Value::String(alias))) => format!("@{}", alias.trim_start_matches('@')),
        _ => return op_error("`conv_id` (or `obj_alias`) is required"),
    };
    let loaded = match runtime.resolve(&process) {
        Ok(l) => l,
        Err(e) => return op_error(e.to_string()),
    };
    if !key.processes.is_empty() && !key.processes.contains(&loaded.record.id) {
        return op_error(format!(
            "this API key may not use process {}",
            loaded.record.id
        ));
    }
    let process = loaded.record.id.to_string();
    let reference = op.get("ref").and_then(|r| match r {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    });
    let task_key = || -> Option<TaskKey> {
        match (&reference, op.get("obj_id")) {
            (Some(r), _) => Some(TaskKey(r.clone())),
            (None, Some(Value::String(id))) => Some(TaskKey(id.clone())),
            (None, Some(Value::Number(id))) => Some(TaskKey(id.to_string())),
            _ => None,
        }
    };
    let data = match op.get("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => return op_error("`data` must be an object"),
    };
    match kind {
        "create" => match runtime.add_task(&process, reference.as_deref(), data) {
            Ok(task) => {
                json!({"proc": "ok", "obj": "task", "ref": task.reference, "obj_id": task.id.to_string()})
            }
            Err(RuntimeError::Refused(m)) if m.contains("already exists") => {
                json!({"proc": "error", "tag": "not_unical_ref", "description": m})
            }
            Err(e) => op_error(e.to_string()),
        },
        "modify" => {
            let Some(task) = task_key() else {
                return op_error("`ref` or `obj_id` is required");
            };
            match runtime.modify_task(&process, &task, data, &format!("api key {}", key.login)) {
                Ok(outcome) => {
                    json!({"proc": "ok", "obj": "task", "ref": reference, "obj_id": outcome.task.to_string()})
                }
                Err(e) => op_error(e.to_string()),
            }
        }
        "show" => {
            let Some(task) = task_key() else {
                return op_error("`ref` or `obj_id` is required");
            };
            match runtime.find_task(&process, &task) {
                Ok((loaded, task)) => json!({
                    "proc": "ok",
                    "obj": "task",
                    "obj_id": task.id.to_string(),
                    "ref": task.reference,
                    "node": task.node,
                    "status": task.status.as_str(),
                    "create_time": task.created.div_euclid(1000),
                    "change_time": task.changed.div_euclid(1000),
                    "data": mask_data(&loaded.process, &task.data),
                }),
                Err(e) => op_error(e.to_string()),
            }
        }
        "delete" => {
            let Some(task) = task_key() else {
                return op_error("`ref` or `obj_id` is required");
            };
            match runtime.delete_task(&process, &task) {
                Ok(task) => {
                    json!({"proc": "ok", "obj": "task", "ref": task.reference, "obj_id": task.id.to_string()})
                }
                Err(e) => op_error(e.to_string()),
            }
        }
        "" => op_error("`type` is required (create, modify, show or delete)"),
        other => op_error(format!(
            "unknown op type `{other}` (create, modify, show or delete)"
        )),
    }
}
