//! Bitrix24 REST: valid, expired and invalid tokens, the ways to pass `auth`, methods,
//! scope and forced failures.

use serde_json::json;

use super::{read, start, text};
use crate::{AppRegistration, Failure, Service};

#[tokio::test]
async fn calls_with_a_valid_token() {
    let h = start().await;
    let (_, tokens) = h.tokens().await;
    let access = text(&tokens, "access_token");

    let (status, body) = h.rest("crm.deal.list", &access).await;
    assert_eq!(status, 200, "{body}");
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["result", "total", "time"]);
    let deals = body["result"].as_array().unwrap();
    assert_eq!(deals.len(), 3);
    assert_eq!(body["total"], 3);
    assert_eq!(deals[0]["ID"], "1");
    assert!(deals[0]["TITLE"].is_string());
    for key in [
        "start",
        "finish",
        "duration",
        "processing",
        "date_start",
        "date_finish",
    ] {
        assert!(!body["time"][key].is_null(), "time.{key}");
    }

    // `.json` suffix, form POST and JSON POST.
    let (status, body) = h.rest("profile.json", &access).await;
    assert_eq!(status, 200);
    assert_eq!(body["result"]["ID"], "1");
    assert_eq!(body["result"]["ADMIN"], true);
    let response = h
        .http
        .post(h.url("/rest/crm.deal.list.json"))
        .form(&[("auth", access.as_str()), ("start", "0")])
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_eq!((status, &body["total"]), (200, &json!(3)));
    let response = h
        .http
        .post(h.url("/rest/crm.deal.list"))
        .json(&json!({"auth": access, "select": ["ID", "TITLE"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);

    let calls = h.sandbox.stats().rest_calls;
    assert_eq!(calls.len(), 4);
    assert!(calls.iter().all(|c| c.outcome == "ok"));
    assert_eq!(calls[1].method, "profile");
    assert_eq!(
        calls[0].client_id.as_deref(),
        Some(crate::DEFAULT_CLIENT_ID)
    );
}

#[tokio::test]
async fn expired_invalid_and_missing_tokens() {
    let h = start().await;
    let (app, tokens) = h.tokens().await;
    let access = text(&tokens, "access_token");

    let (status, body) = h.rest("crm.deal.list", "not-a-token").await;
    assert_eq!(
        (status, body),
        (
            401,
            json!({"error": "invalid_token",
                   "error_description": "The access token provided is invalid."})
        )
    );
    let (status, body) = h.get("/rest/crm.deal.list").await;
    assert_eq!(
        (status, body),
        (
            401,
            json!({"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"})
        )
    );

    // One hour later the access token has expired; refreshing gives a working one.
    h.sandbox.advance_clock(3599);
    assert_eq!(h.rest("crm.deal.list", &access).await.0, 200);
    h.sandbox.advance_clock(2);
    let (status, body) = h.rest("crm.deal.list", &access).await;
    assert_eq!(
        (status, body),
        (
            401,
            json!({"error": "expired_token",
                   "error_description": "The access token provided has expired."})
        )
    );
    let (status, renewed) = h.refresh(&app, &text(&tokens, "refresh_token")).await;
    assert_eq!(status, 200);
    let (status, _) = h
        .rest("crm.deal.list", &text(&renewed, "access_token"))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn unknown_methods_scope_and_forced_failures() {
    let h = start().await;
    let (_, tokens) = h.tokens().await;
    let access = text(&tokens, "access_token");

    let (status, body) = h.rest("crm.nothing", &access).await;
    assert_eq!(
        (status, body),
        (
            404,
            json!({"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"})
        )
    );

    // An application without the crm scope.
    let app = h
        .sandbox
        .register_app(AppRegistration {
            scope: Some("user".into()),
            ..AppRegistration::default()
        })
        .unwrap();
    let user_only = h.sandbox.issue_tokens(&app.client_id).unwrap();
    let (status, body) = h.rest("crm.deal.list", &user_only.access_token).await;
    assert_eq!(
        (status, &body["error"]),
        (403, &json!("insufficient_scope"))
    );
    assert_eq!(h.rest("profile", &user_only.access_token).await.0, 200);

    // Forced: QUERY_LIMIT_EXCEEDED (503), then a bare 502, then normal again.
    h.sandbox
        .fail_next(Service::Rest, 1, Failure::error("QUERY_LIMIT_EXCEEDED"))
        .unwrap();
    h.sandbox
        .fail_next(Service::Rest, 1, Failure::Status { status: 502 })
        .unwrap();
    let (status, body) = h.rest("crm.deal.list", &access).await;
    assert_eq!(
        (status, body),
        (
            503,
            json!({"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"})
        )
    );
    let (status, body) = h.rest("crm.deal.list", &access).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(h.rest("crm.deal.list", &access).await.0, 200);

    let outcomes: Vec<(String, bool)> = h
        .sandbox
        .stats()
        .rest_calls
        .into_iter()
        .map(|c| (c.outcome, c.forced))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("ERROR_METHOD_NOT_FOUND".to_owned(), false),
            ("insufficient_scope".to_owned(), false),
            ("ok".to_owned(), false),
            ("QUERY_LIMIT_EXCEEDED".to_owned(), true),
            ("http_502".to_owned(), true),
            ("ok".to_owned(), false),
        ]
    );
}
