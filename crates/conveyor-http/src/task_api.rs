//! Corezoid's task API v2: `POST /api/2/json/{login}/{unixtime}/{signature}`.
//!
//! The signature is `hex(sha1(unixtime + secret + body + secret))` over the exact bytes
//! of the body. Refused with a JSON reason: an unknown login (401), a time more than
//! five minutes off (401), a bad signature (403), a signature seen before (403). A body
//! that is not `{"ops": [...]}` gets 400 with `ops[].description` (the swagger's shape);
//! each op is answered in order with `proc: ok` or `proc: error` and a description, and
//! with its own `id` if it had one.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use conveyor_commands::ApiKey;
use conveyor_commands::door;
use conveyor_commands::{Caller, CommandError};
use serde_json::{Value, json};
use sha1::{Digest, Sha1};

use crate::task_ops::{self, OpInputs};
use crate::{AppState, constant_time_eq, error, read_body, too_many};

pub(crate) async fn handle(
    State(state): State<Arc<AppState>>,
    Path((login, time, signature)): Path<(String, String, String)>,
    body: Body,
) -> Response {
    let limits = state.config.limits.clone();
    let runtime = state.runtime.clone();
    // Everything that can be checked without the body is checked before it is read, so
    // strangers cannot make the server hold large bodies.
    let Ok(login_number) = login.parse::<u64>() else {
        return error(StatusCode::UNAUTHORIZED, "unknown login");
    };
    let key = match conveyor_commands::api_key(&runtime, login_number) {
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
    if !within_skew(now, request_time, limits.max_clock_skew_secs) {
        return error(
            StatusCode::UNAUTHORIZED,
            &format!(
                "the request time {request_time} is more than {} seconds from the server's ({now})",
                limits.max_clock_skew_secs
            ),
        );
    }
    let signature = signature.to_ascii_lowercase();
    if signature.len() != 40 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return error(
            StatusCode::FORBIDDEN,
            "bad signature: expected 40 hex digits (sha1)",
        );
    }
    if let Err(wait) = state.api_key_rate.take(key.login, Instant::now()) {
        return too_many(
            &format!("API key {}", key.login),
            state.api_key_rate.rate(),
            wait,
        );
    }
    let bytes = match read_body(&state, body).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let mut hasher = Sha1::new();
    hasher.update(time.as_bytes());
    hasher.update(key.secret.as_bytes());
    hasher.update(&bytes);
    hasher.update(key.secret.as_bytes());
    let expected = hex::encode(hasher.finalize());
    if !constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
        return error(StatusCode::FORBIDDEN, "bad signature");
    }

    let (ops, wait) = match parse_ops(&bytes, limits.ops_per_request) {
        Ok(parsed) => parsed,
        Err(description) => return format_error(&description),
    };
    // An op outside the swagger's fixed values (a `node list` filter) makes the request
    // malformed: 400, and none of its ops runs.
    if let Some((i, mut refusal)) = ops
        .iter()
        .enumerate()
        .find_map(|(i, op)| task_ops::malformed(op).map(|r| (i, r)))
    {
        let description = format!(
            "op {}: {}",
            i + 1,
            refusal["description"].as_str().unwrap_or_default()
        );
        refusal["description"] = json!(description);
        if let (Some(id), Value::Object(map)) = (ops[i].get("id"), &mut refusal) {
            map.insert("id".into(), id.clone());
        }
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({
                "request_proc": "error",
                "description": description,
                "ops": [refusal],
            })),
        )
            .into_response();
    }
    // A signature can be accepted until its time is `max_clock_skew_secs` behind ours.
    let expires = request_time.saturating_add(limits.max_clock_skew_secs);
    let signatures = state.clone();
    let remembered = tokio::task::spawn_blocking(move || {
        // Recorded durably before any op runs: a replay after a crash is refused too.
        match signatures.signatures.remember(&expected, expires, now) {
            Ok(true) => {}
            Ok(false) => {
                return Err(Box::new(error(
                    StatusCode::FORBIDDEN,
                    "this signed request was already used (replay)",
                )));
            }
            Err(e) => {
                return Err(Box::new(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &e.to_string(),
                )));
            }
        }
        Ok(())
    })
    .await;
    match remembered {
        Ok(Ok(())) => {}
        Ok(Err(refusal)) => return *refusal,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
    match run_ops(&runtime, &key, ops, wait).await {
        Ok(answers) => {
            // Corezoid's Sync API: a create that did not answer in time makes it a 504
            // (every op is still listed, the late one with its task id).
            let late = answers.iter().any(|a| a["proc"] == "timeout");
            let status = if late {
                StatusCode::GATEWAY_TIMEOUT
            } else {
                StatusCode::OK
            };
            (
                status,
                axum::Json(json!({"request_proc": "ok", "ops": answers})),
            )
                .into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// The ops of one request, answered in order: each is read here (a malformed op is
/// answered at once, `task_ops::prepare`) and run by the command layer
/// (`conveyor_commands::door::run_ops`), whose creates join the committer's groups.
async fn run_ops(
    runtime: &conveyor_runtime::Runtime,
    key: &ApiKey,
    ops: Vec<Value>,
    wait: Option<std::time::Duration>,
) -> Result<Vec<Value>, CommandError> {
    let mut answers: Vec<Option<Value>> = Vec::with_capacity(ops.len());
    let mut valid = Vec::new();
    // What each answer needs of its op: its own `id` (echoed, as Corezoid does), and
    // where it named its inputs (an error's `key` and `value`).
    let mut inputs = Vec::with_capacity(ops.len());
    for op in ops {
        let mut these = OpInputs::of(&op);
        match task_ops::prepare(op, &mut these) {
            Ok(op) => {
                valid.push(op);
                answers.push(None);
            }
            Err(answer) => answers.push(Some(answer)),
        }
        inputs.push(these);
    }
    let mut done = door::run_ops(runtime, &Caller::api_key(key), valid, wait)
        .await?
        .into_iter();
    Ok(answers
        .into_iter()
        .zip(inputs)
        .map(|(answer, inputs)| {
            let mut answer = match answer {
                Some(refused) => refused,
                None => match done.next() {
                    Some(Ok(answer)) => task_ops::answer(answer, &inputs.obj),
                    Some(Err(e)) => task_ops::command_error(runtime, &e, &inputs),
                    None => task_ops::op_error("the op was not answered"),
                },
            };
            if let (Some(id), Value::Object(map)) = (inputs.id, &mut answer) {
                map.insert("id".into(), id);
            }
            answer
        })
        .collect())
}

/// Whether `request` (s) is at most `skew` seconds from `now` (s); never overflows.
fn within_skew(now: i64, request: i64, skew: i64) -> bool {
    now.abs_diff(request) <= skew.unsigned_abs()
}

/// The ops of a request body, `{"ops": [...]}` with 1 to `max` ops, and its `timeout`
/// (Corezoid's Sync API: seconds to wait for each created task's answer, 1 to 60); else
/// why not.
fn parse_ops(
    bytes: &[u8],
    max: usize,
) -> Result<(Vec<Value>, Option<std::time::Duration>), String> {
    let (ops, wait) = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(mut map)) => {
            let wait = match map.remove("timeout") {
                None => None,
                Some(Value::Number(n)) => match n.as_u64() {
                    Some(secs @ 1..=60) => Some(std::time::Duration::from_secs(secs)),
                    _ => return Err("timeout: expected a number of seconds from 1 to 60".into()),
                },
                Some(_) => return Err("timeout: expected a number of seconds from 1 to 60".into()),
            };
            match map.remove("ops") {
                Some(Value::Array(ops)) => (ops, wait),
                _ => return Err("the body must be {\"ops\": [...]}".into()),
            }
        }
        Ok(_) => return Err("the body must be a JSON object {\"ops\": [...]}".into()),
        Err(e) => return Err(format!("the body is not JSON: {e}")),
    };
    if ops.is_empty() {
        return Err("no ops".into());
    }
    if ops.len() > max {
        return Err(format!(
            "{} ops in one request; the limit is {max}",
            ops.len()
        ));
    }
    Ok((ops, wait))
}

/// A body that is not a request: 400 as Corezoid's swagger answers it (`ops[].description`),
/// with the description also at the top for scripts that read it there.
fn format_error(description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({
            "request_proc": "error",
            "description": description,
            "ops": [{"proc": "error", "description": description}],
        })),
    )
        .into_response()
}

/// Fuzzing of the request parsing and of each op with proptest: never a panic, always an
/// answer (`proc: ok`, or `proc: error` with a description). `apply` runs against a real
/// runtime over a temporary sled store. Long run:
/// `PROPTEST_CASES=200000 cargo test --release -p conveyor-http fuzz`.
#[cfg(test)]
mod tests {
    use super::within_skew;

    #[test]
    fn the_clock_check_never_overflows() {
        let now = 1_795_885_368;
        assert!(within_skew(now, now, 300));
        assert!(within_skew(now, now - 300, 300));
        assert!(within_skew(now, now + 300, 300));
        assert!(!within_skew(now, now - 301, 300));
        assert!(!within_skew(now, now + 301, 300));
        // `now - 2^63` wrapped around, and the ends of i64: far off, not a panic.
        assert!(!within_skew(now, now.wrapping_add(i64::MIN), 300));
        assert!(!within_skew(now, i64::MIN, 300));
        assert!(!within_skew(now, i64::MAX, 300));
        assert!(!within_skew(i64::MIN, i64::MAX, 300));
        assert!(!within_skew(now, i64::MIN, i64::MAX));
        assert!(within_skew(0, i64::MIN + 1, i64::MAX));
    }
}

#[cfg(test)]
mod fuzz_tests {
    use std::sync::Arc;

    use conveyor_runtime::{ManualClock, Runtime, Settings};
    use conveyor_store::ApiKey;
    use proptest::prelude::*;
    use serde_json::{Map, Number, Value, json};

    use super::{parse_ops, run_ops};

    /// `default` cases; proptest takes `PROPTEST_CASES` over it.
    fn config(default: u32) -> ProptestConfig {
        ProptestConfig {
            cases: default,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    const PROCESS: &str = r#"
process: fuzz
params:
  code: { required: true, pattern: '^[a-z0-9]{1,8}$' }
  n: { default: 1 }
  token: { secret: true }
secrets: [token]
nodes:
  start: { type: start, next: wait }
  wait: { type: wait_callback, timeout: "1h -> done", next: done }
  done: { type: final }
"#;

    /// A runtime with process `@p` (and its id), and two API keys: one for every
    /// process, one for another process only.
    fn runtime() -> (tempfile::TempDir, Arc<Runtime>, u64, [ApiKey; 2]) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = conveyor_store::open(dir.path(), Default::default()).expect("store");
        let runtime = Runtime::new(
            store,
            Arc::new(ManualClock::new(1_764_345_600_000)),
            Settings::default(),
        );
        let id = runtime
            .clone_process("fuzz.yaml", PROCESS, Some("p"), Map::new())
            .expect("clone")
            .id;
        let key = |login, processes| ApiKey {
            login,
            name: "fuzz".into(),
            secret: "s".into(),
            processes,
            created: 0,
        };
        (dir, runtime, id, [key(1, vec![]), key(2, vec![id + 1000])])
    }

    /// Any JSON value, nested a few levels.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".{0,20}".prop_map(Value::String),
        ];
        let leaf = prop_oneof![
            20 => leaf,
            1 => (0usize..100_000).prop_map(|n| Value::String("x".repeat(n))),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::vec((".{0,8}", inner), 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Mostly a sensible value, sometimes an odd one, now and then any JSON at all.
    fn one_of(good: Vec<Value>, odd: Vec<Value>) -> impl Strategy<Value = Value> {
        prop_oneof![
            12 => prop::sample::select(good),
            3 => prop::sample::select(odd),
            1 => json_value(),
        ]
    }

    /// An op: the fields of the task API, each usually sensible, sometimes anything.
    fn op(process: u64) -> impl Strategy<Value = Value> {
        let kind = one_of(
            ["create", "modify", "show", "delete"]
                .map(Value::from)
                .to_vec(),
            [
                "",
                "launch",
                "CREATE",
                "list",
                "step_next",
                "step_goto",
                "check",
                "validate",
                "reset",
                "link",
            ]
            .map(Value::from)
            .to_vec(),
        );
        let obj = one_of(
            vec![json!("task")],
            vec![
                json!("conv"),
                json!(""),
                json!("node"),
                json!("obj_scheme"),
                json!("task_history"),
            ],
        );
        let conv = one_of(
            vec![json!(process), json!(process.to_string()), json!("@p")],
            vec![
                json!("p"),
                json!(u64::MAX),
                json!(-1),
                json!(1.5),
                json!("999999999999999999999999"),
                json!(""),
            ],
        );
        let alias = one_of(vec![json!("p"), json!("@p")], vec![json!("@@p"), json!("")]);
        let reference = one_of(
            vec![json!("r1"), json!("r2"), json!(7)],
            vec![
                json!(""),
                json!(-7),
                json!(1e300),
                json!("x".repeat(10_000)),
            ],
        );
        let obj_id = one_of(
            vec![json!("1"), json!(1), json!("2")],
            vec![
                json!("0"),
                json!("-1"),
                json!("abc"),
                json!("wait"),
                json!(process),
            ],
        );
        // The fields of the process and node ops.
        let title = one_of(
            vec![json!("A title"), json!("")],
            vec![json!("x".repeat(300)), json!(5), json!("a\u{0}b")],
        );
        let filters = one_of(
            vec![json!([{"name": "ref", "value": "r1", "fun": "eq"}])],
            vec![
                json!([{"name": "status", "value": "x"}]),
                json!("ref=r1"),
                json!([{"name": "ref", "value": {"a": 1}}]),
                json!([]),
            ],
        );
        let sort = one_of(
            vec![json!("ASC"), json!("DESC")],
            vec![json!("up"), json!(1)],
        );
        let text = || {
            one_of(
                vec![json!("abc"), json!("x1")],
                vec![json!("ABC!"), json!(""), json!(5), json!("123456789")],
            )
        };
        let data = prop_oneof![
            8 => (
                prop::option::weighted(0.8, text()),
                prop::collection::vec(
                    (
                        prop_oneof![
                            prop::sample::select(vec!["n", "token", "ref", "x"])
                                .prop_map(str::to_string),
                            ".{0,8}",
                        ],
                        text(),
                    ),
                    0..4,
                ),
            )
                .prop_map(|(code, rest)| {
                    let mut map: Map<String, Value> = rest.into_iter().collect();
                    if let Some(code) = code {
                        map.insert("code".into(), code);
                    }
                    Value::Object(map)
                }),
            1 => json_value(),
        ];
        (
            prop::option::weighted(0.95, kind),
            prop::option::weighted(0.3, obj),
            prop::option::weighted(0.9, conv),
            prop::option::weighted(0.2, alias),
            prop::option::weighted(0.8, reference),
            prop::option::weighted(0.2, obj_id),
            prop::option::weighted(0.9, data),
            prop::option::weighted(0.2, title),
            prop::option::weighted(0.2, filters),
            prop::option::weighted(0.2, sort),
        )
            .prop_map(
                |(kind, obj, conv, alias, reference, obj_id, data, title, filters, sort)| {
                    let mut op = Map::new();
                    for (k, v) in [
                        ("type", kind),
                        ("obj", obj),
                        ("conv_id", conv),
                        ("obj_alias", alias),
                        ("ref", reference),
                        ("obj_id", obj_id),
                        ("data", data),
                        ("title", title),
                        ("filters", filters),
                        ("sort", sort),
                    ] {
                        if let Some(v) = v {
                            op.insert(k.into(), v);
                        }
                    }
                    Value::Object(op)
                },
            )
    }

    /// An answer is `proc: ok`, or `proc: error` with a description.
    fn assert_answer(op: &Value, answer: &Value) {
        match answer["proc"].as_str() {
            Some("ok") => {}
            Some("error") => assert!(
                answer["description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "{op} → {answer}"
            ),
            _ => panic!("{op} → {answer}"),
        }
    }

    /// Found by `fuzz_op_parsing_of_json_bodies`: a float in an op came back one unit
    /// in the last place off (serde_json's fast float parsing; now `float_roundtrip`).
    #[test]
    fn regression_floats_in_ops_are_read_exactly() {
        let ops = vec![
            json!([-9.117876356572441e-176]),
            json!({"price": 0.1 + 0.2}),
        ];
        let text = json!({ "ops": ops }).to_string();
        assert_eq!(parse_ops(text.as_bytes(), 100), Ok((ops, None)));
    }

    #[test]
    fn the_sync_timeout_is_seconds_from_1_to_60() {
        let ops = vec![json!({"type": "create"})];
        let with = |timeout: Value| json!({"ops": ops, "timeout": timeout}).to_string();
        assert_eq!(
            parse_ops(with(json!(30)).as_bytes(), 100),
            Ok((ops.clone(), Some(std::time::Duration::from_secs(30))))
        );
        for bad in [json!(0), json!(61), json!("30"), json!(1.5), json!(-1)] {
            let refused = parse_ops(with(bad.clone()).as_bytes(), 100);
            assert!(
                refused.as_ref().is_err_and(|e| e.starts_with("timeout:")),
                "{bad}: {refused:?}"
            );
        }
    }

    #[test]
    fn fuzz_op_parsing_of_arbitrary_bytes() {
        proptest!(config(500), |(bytes in prop::collection::vec(any::<u8>(), 0..300))| {
            let _ = parse_ops(&bytes, 100);
        });
    }

    #[test]
    fn fuzz_op_parsing_of_json_bodies() {
        // Up to 120 ops of any JSON per case: fewer cases by default.
        proptest!(config(150), |(body in json_value(), ops in prop::collection::vec(json_value(), 0..120))| {
            let _ = parse_ops(body.to_string().as_bytes(), 100);
            let text = json!({"ops": ops}).to_string();
            match parse_ops(text.as_bytes(), 100) {
                Ok(parsed) => prop_assert_eq!(parsed, (ops, None)),
                Err(e) => prop_assert!(ops.is_empty() || ops.len() > 100, "{}", e),
            }
        });
    }

    #[test]
    fn fuzz_apply_arbitrary_ops() {
        let (_dir, runtime, process, keys) = runtime();
        let tokio = current_thread();
        // Mostly the key that may use every process.
        proptest!(config(500), |(op in op(process), key in prop::sample::select(vec![0, 0, 0, 1]))| {
            let answers = tokio.block_on(run_ops(&runtime, &keys[key], vec![op.clone()], None));
            assert_answer(&op, &answers.expect("the request is answered")[0]);
        });
    }

    #[test]
    fn fuzz_apply_any_json_as_an_op() {
        let (_dir, runtime, _, keys) = runtime();
        let tokio = current_thread();
        proptest!(config(500), |(op in json_value())| {
            let answers = tokio.block_on(run_ops(&runtime, &keys[0], vec![op.clone()], None));
            assert_answer(&op, &answers.expect("the request is answered")[0]);
        });
    }

    fn current_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    }
}
