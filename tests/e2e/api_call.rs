//! `api_call` against local servers: replies merged or mapped, Corezoid's error keys,
//! retries of transient failures with backoff, limits, and idempotency keys.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use conveyor_store::{EventKind, TaskStatus};
use serde_json::json;

use crate::engine::Engine;
use crate::support::http_server;

fn process(url: &str, extra: &str) -> String {
    format!(
        r#"
process: api
params:
  api: {{ required: true }}
nodes:
  start: {{ type: start, next: call }}
  call:
    type: api_call
    url: "{{{{api}}}}{url}"
{extra}
    next: done
    on_error: failed
  done: {{ type: final }}
  failed: {{ type: final, status: error }}
"#
    )
}

fn server() -> (String, Arc<AtomicU32>, Arc<Mutex<Vec<String>>>) {
    let hits = Arc::new(AtomicU32::new(0));
    let keys: Arc<Mutex<Vec<String>>> = Arc::default();
    let flaky_hits = hits.clone();
    let seen_keys = keys.clone();
    let router = Router::new()
        .route(
            "/token",
            get(|| async {
                axum::Json(json!({"access_token": "AT", "expires_in": 3600, "extra": 1}))
            }),
        )
        .route("/list", get(|| async { axum::Json(json!([1, 2, 3])) }))
        .route(
            "/denied",
            get(|| async {
                (
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({"error": "invalid_grant"})),
                )
            }),
        )
        .route(
            "/flaky",
            get(move |headers: HeaderMap| {
                let hits = flaky_hits.clone();
                let keys = seen_keys.clone();
                async move {
                    if let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok())
                    {
                        keys.lock().expect("lock").push(key.to_string());
                    }
                    if hits.fetch_add(1, Ordering::SeqCst) < 2 {
                        (StatusCode::SERVICE_UNAVAILABLE, "<html>busy</html>").into_response()
                    } else {
                        axum::Json(json!({"ok": true})).into_response()
                    }
                }
            }),
        )
        .route("/html", get(|| async { "<html>not json</html>" }))
        .route(
            "/soap",
            get(|| async {
                (
                    [("content-type", "application/soap+xml; charset=utf-8")],
                    r#"<?xml version="1.0"?><soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"><soap:Body><balance currency="UAH">12.50</balance><op>a</op><op>b &amp; c</op></soap:Body></soap:Envelope>"#,
                )
            }),
        )
        .route(
            "/xml-root",
            get(|| async {
                (
                    [("content-type", "text/xml")],
                    "<root><token>AT</token><expires_in>3600</expires_in></root>",
                )
            }),
        )
        .route(
            "/xml-bomb",
            get(|| async {
                (
                    [("content-type", "application/xml")],
                    r#"<!DOCTYPE b [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><b>&b;</b>"#,
                )
            }),
        )
        .route(
            "/big",
            get(|| async { axum::Json(json!({"blob": "x".repeat(200_000)})) }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                axum::Json(json!({}))
            }),
        );
    (format!("http://{}", http_server(router)), hits, keys)
}

async fn run_one(e: &Engine, api: &str) -> conveyor_store::TaskRecord {
    e.add("@api", Some("t"), json!({"api": api}));
    e.idle().await;
    e.task("@api", "t")
}

#[tokio::test]
async fn a_json_object_reply_is_merged_and_a_mapping_picks_keys() {
    let (api, _, _) = server();
    let e = Engine::new();
    e.clone_process(&process("/token", ""), Some("api"));
    let task = run_one(&e, &api).await;
    assert_eq!(task.node, "done");
    assert_eq!(
        (
            task.data["access_token"].as_str(),
            task.data["extra"].as_i64()
        ),
        (Some("AT"), Some(1))
    );

    let e = Engine::new();
    e.clone_process(
        &process(
            "/token",
            "    response:\n      token: \"{{body.access_token}}\"\n      code: \"{{status}}\"",
        ),
        Some("api"),
    );
    let task = run_one(&e, &api).await;
    assert_eq!(task.data["token"], "AT");
    assert_eq!(task.data["code"], 200);
    assert!(
        task.data.get("extra").is_none(),
        "a mapping writes only its keys"
    );

    // The reply's headers are copied out only for a mapping that reads them.
    let e = Engine::new();
    e.clone_process(
        &process(
            "/token",
            "    response:\n      kind: \"{{headers.content-type}}\"\n      all: \"{{headers}}\"",
        ),
        Some("api"),
    );
    let task = run_one(&e, &api).await;
    assert_eq!(task.node, "done", "{:?}", task.data);
    assert_eq!(task.data["kind"], "application/json");
    assert_eq!(
        task.data["all"]["content-type"], "application/json",
        "{:?}",
        task.data
    );
}

#[tokio::test]
async fn an_array_reply_goes_to_conveyor_api_array() {
    let (api, _, _) = server();
    let e = Engine::new();
    e.clone_process(&process("/list", ""), Some("api"));
    let task = run_one(&e, &api).await;
    assert_eq!(task.data["__conveyor_api_array__"], json!([1, 2, 3]));
}

#[tokio::test]
async fn a_refusal_routes_to_on_error_with_corezoid_keys() {
    let (api, _, _) = server();
    let e = Engine::new();
    e.clone_process(
        &process("/denied", "    retry: { attempts: 3, backoff: 1s }"),
        Some("api"),
    );
    let task = run_one(&e, &api).await;
    assert_eq!(
        (task.node.as_str(), task.status),
        ("failed", TaskStatus::Failed)
    );
    assert_eq!(task.data["__conveyor_api_return_type_error__"], "software");
    assert_eq!(
        task.data["__conveyor_api_return_type_tag__"],
        "api_bad_answer"
    );
    assert_eq!(task.data["__conveyor_api_return_http_code__"], 400);
    assert_eq!(
        task.data["__conveyor_api_return_description__"],
        "HTTP 400: invalid_grant"
    );
    assert_eq!(
        task.data["__conveyor_api_return_body__"],
        json!({"error": "invalid_grant"})
    );
}

#[tokio::test]
async fn transient_failures_are_retried_with_backoff_and_the_same_idempotency_key() {
    let (api, hits, keys) = server();
    let e = Engine::new();
    e.clone_process(
        &process(
            "/flaky",
            "    retry: { attempts: 3, backoff: 10s, max: 1m }\n    idempotency_key: \"{{root.task_id}}-call\"",
        ),
        Some("api"),
    );
    let task = run_one(&e, &api).await;
    assert_eq!(
        (task.node.as_str(), task.status),
        ("call", TaskStatus::Waiting)
    );
    assert_eq!(task.wake.map(|w| w.at), Some(crate::engine::T0 + 10_000));
    e.advance(Duration::from_secs(9)).await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "no retry before the backoff"
    );
    e.advance(Duration::from_secs(1)).await;
    let task = e.task("@api", "t");
    assert_eq!(
        task.wake.map(|w| w.at),
        Some(crate::engine::T0 + 30_000),
        "backoff doubles"
    );
    e.advance(Duration::from_secs(20)).await;
    let task = e.task("@api", "t");
    assert_eq!(task.node, "done");
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    let keys = keys.lock().expect("lock").clone();
    assert_eq!(keys.len(), 3);
    assert!(
        keys.iter().all(|k| *k == format!("{}-call", task.id)),
        "{keys:?}"
    );
    let attempts: Vec<(u32, Option<u16>)> = e
        .runtime
        .store()
        .history(task.id)
        .expect("history")
        .into_iter()
        .filter_map(|h| match h.kind {
            EventKind::ApiRequest {
                attempt, status, ..
            } => Some((attempt, status)),
            _ => None,
        })
        .collect();
    assert_eq!(
        attempts,
        vec![(1, Some(503)), (2, Some(503)), (3, Some(200))]
    );
}

/// Corezoid reads XML replies into JSON and merges them: `@name` for attributes,
/// `#value` for the text beside them, repeated elements as lists, `<root>` unwrapped.
#[tokio::test]
async fn an_xml_reply_is_read_into_json_and_merged_or_mapped() {
    let (api, _, _) = server();
    let e = Engine::new();
    e.clone_process(&process("/soap", ""), Some("api"));
    let task = run_one(&e, &api).await;
    assert_eq!(task.node, "done", "{:?}", task.data);
    assert_eq!(
        task.data["soap:Envelope"]["soap:Body"],
        json!({"balance": {"@currency": "UAH", "#value": "12.50"}, "op": ["a", "b & c"]})
    );

    let e = Engine::new();
    e.clone_process(&process("/xml-root", ""), Some("api"));
    let task = run_one(&e, &api).await;
    assert_eq!(
        (
            task.data["token"].as_str(),
            task.data["expires_in"].as_str()
        ),
        (Some("AT"), Some("3600")),
        "{:?}",
        task.data
    );

    let e = Engine::new();
    e.clone_process(
        &process(
            "/soap",
            "    response:\n      balance: \"{{body.soap:Envelope.soap:Body.balance.#value}}\"",
        ),
        Some("api"),
    );
    let task = run_one(&e, &api).await;
    assert_eq!(task.node, "done", "{:?}", task.data);
    assert_eq!(task.data["balance"], "12.50");

    // Entities a DTD declares are never expanded: the reply is refused, with why.
    let e = Engine::new();
    e.clone_process(&process("/xml-bomb", ""), Some("api"));
    let task = run_one(&e, &api).await;
    assert_eq!(task.node, "failed");
    assert_eq!(
        task.data["__conveyor_api_return_type_tag__"],
        "api_no_valid_json"
    );
    let description = task.data["__conveyor_api_return_description__"]
        .as_str()
        .unwrap_or_default();
    assert!(
        description
            .starts_with("the reply is XML that cannot be read (it is not well-formed XML: "),
        "{description}"
    );
}

#[tokio::test]
async fn bad_replies_and_dead_servers_are_errors_with_reasons() {
    let (api, _, _) = server();
    let cases = [
        (
            "/html",
            "",
            "software",
            "api_no_valid_json",
            "the reply is not JSON: <html>not json</html>",
        ),
        (
            "/big",
            "",
            "software",
            "api_task_size_overflow_limit",
            "the reply is larger than the 131072 bytes allowed",
        ),
        (
            "/slow",
            "    request_timeout: 200ms",
            "hardware",
            "api_bad_answer",
            "no complete answer within 200ms",
        ),
    ];
    for (path, extra, type_error, tag, description) in cases {
        let e = Engine::new();
        e.clone_process(&process(path, extra), Some("api"));
        let task = run_one(&e, &api).await;
        assert_eq!(task.node, "failed", "{path}");
        assert_eq!(
            task.data["__conveyor_api_return_type_error__"], type_error,
            "{path}"
        );
        assert_eq!(task.data["__conveyor_api_return_type_tag__"], tag, "{path}");
        assert_eq!(
            task.data["__conveyor_api_return_description__"], description,
            "{path}"
        );
    }
    // Nobody listens on this port (bound, then closed).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}", closed.local_addr().expect("address"));
    drop(closed);
    let e = Engine::new();
    e.clone_process(&process("/token", ""), Some("api"));
    let task = run_one(&e, &dead).await;
    assert_eq!(task.node, "failed");
    assert_eq!(task.data["__conveyor_api_return_type_error__"], "hardware");
    let description = task.data["__conveyor_api_return_description__"]
        .as_str()
        .expect("text");
    assert!(description.contains("Connection refused"), "{description}");
    // A URL that is not one is a bind error, not a crash.
    let e = Engine::new();
    e.clone_process(&process("/token", ""), Some("api"));
    let task = run_one(&e, "not a url").await;
    assert_eq!(
        task.data["__conveyor_api_return_type_tag__"],
        "api_bind_error"
    );
}
