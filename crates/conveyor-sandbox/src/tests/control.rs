//! The control API, configuration (files and credentials) and the server's life cycle.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::json;

use super::{start, start_with, text};
use crate::{Credentials, Sandbox, SandboxConfig, SandboxError, Service, Stats};

#[tokio::test]
async fn overview_apps_and_errors() {
    let h = start().await;
    let (status, overview) = h.get("/sandbox").await;
    assert_eq!(status, 200);
    assert_eq!(overview["url"], h.sandbox.url());
    assert_eq!(
        overview["endpoints"]["token"],
        format!("{}/oauth/token/", h.sandbox.url())
    );
    assert_eq!(
        overview["credentials"]["mandrill_key"],
        Credentials::default().mandrill_key
    );
    assert!(
        overview["apps"].as_array().is_some_and(|apps| apps
            .iter()
            .any(|a| a["client_id"] == crate::DEFAULT_CLIENT_ID)),
        "{overview}"
    );
    let again = h.get("/sandbox/credentials").await.1;
    // The clock moves between the two calls; everything else is the same.
    assert_eq!(again["credentials"], overview["credentials"]);
    assert_eq!(again["endpoints"], overview["endpoints"]);

    // Register an application; ids and secret are generated.
    let (status, app) = h
        .post_json(
            "/sandbox/apps",
            &json!({"redirect_url": "http://127.0.0.1:1/cb", "portal": "acme"}),
        )
        .await;
    assert_eq!(status, 201, "{app}");
    let client_id = text(&app, "client_id");
    assert!(client_id.starts_with("local."));
    assert_eq!(text(&app, "client_secret").len(), 50);
    assert_eq!(app["paid"], true);
    assert_eq!(h.get("/sandbox/apps").await.1.as_array().unwrap().len(), 2);
    assert_eq!(h.get(&format!("/sandbox/apps/{client_id}")).await.1, app);

    // Codes and tokens for a given application, or the default one.
    let (status, code) = h
        .post_json("/sandbox/codes", &json!({"client_id": client_id}))
        .await;
    assert_eq!(status, 200);
    assert!(
        text(&code, "redirect").starts_with("http://127.0.0.1:1/cb?code="),
        "{code}"
    );
    let response = h.http.post(h.url("/sandbox/tokens")).send().await.unwrap();
    let (status, tokens) = super::read(response).await;
    assert_eq!(status, 200);
    assert_eq!(
        h.rest("profile", &text(&tokens, "access_token")).await.0,
        200
    );

    // Errors.
    let (status, body) = h.get("/sandbox/apps/nobody").await;
    assert_eq!(status, 404);
    assert!(text(&body, "error").contains("nobody"));
    let (status, _) = h
        .post_json("/sandbox/codes", &json!({"client_id": "nobody"}))
        .await;
    assert_eq!(status, 404);
    let (status, body) = h
        .post_json(
            "/sandbox/fail",
            &json!({"service": "telegram", "kind": "error", "error": "nope"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(text(&body, "error").contains("chat_not_found"), "{body}");
    let (status, _) = h
        .post_json(
            "/sandbox/fail",
            &json!({"service": "token", "kind": "status", "status": 1000}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = h
        .post_json(
            "/sandbox/fail",
            &json!({"service": "smtp", "kind": "delay", "ms": 1}),
        )
        .await;
    assert_eq!(status, 400);
    let response = h
        .http
        .post(h.url("/sandbox/clock/advance"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(h.get("/sandbox/messages/smtp").await.0, 404);
    assert_eq!(h.get("/nothing/here/at/all").await.0, 404);
}

#[tokio::test]
async fn failures_clock_stats_and_reset() {
    let h = start().await;
    let (status, body) = h
        .post_json(
            "/sandbox/fail",
            &json!({"service": "rest", "times": 3, "kind": "status", "status": 500}),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"service": "rest", "pending": 3}))
    );
    let (_, stats) = h.get("/sandbox/stats").await;
    let stats: Stats = serde_json::from_value(stats).unwrap();
    assert_eq!(stats.pending_failures.get(&Service::Rest), Some(&3));
    assert_eq!(stats.messages.len(), 5, "every notifier listed");
    let response = h.http.delete(h.url("/sandbox/fail")).send().await.unwrap();
    assert_eq!(super::read(response).await.1, json!({"cleared": 3}));

    let (_, clock) = h.get("/sandbox/clock").await;
    assert_eq!(clock["offset_secs"], 0);
    let (_, clock) = h
        .post_json("/sandbox/clock/advance", &json!({"seconds": 3600}))
        .await;
    assert_eq!(clock["offset_secs"], 3600);
    assert!((h.sandbox.now() - clock["now"].as_i64().unwrap()).abs() <= 1);

    // A message, then reset: the record and the clock start over, tokens stay.
    let (_, tokens) = h.tokens().await;
    let path = format!(
        "/bot{}/sendMessage",
        h.sandbox.credentials().telegram_bot_token
    );
    h.post_json(&path, &json!({"chat_id": 1, "text": "x"}))
        .await;
    let (_, messages) = h.get("/sandbox/messages/telegram").await;
    assert_eq!(messages.as_array().unwrap().len(), 1);
    let (status, _) = h.post_json("/sandbox/reset", &json!({})).await;
    assert_eq!(status, 200);
    let stats = h.sandbox.stats();
    assert!(stats.token_requests.is_empty() && stats.notifier_requests.is_empty());
    assert_eq!(stats.clock.offset_secs, 0);
    assert_eq!(
        h.rest("profile", &text(&tokens, "access_token")).await.0,
        200
    );
}

#[tokio::test]
async fn configuration_file_and_custom_credentials() {
    let path = std::env::temp_dir().join(format!(
        "conveyor-sandbox-config-{}.json",
        std::process::id()
    ));
    std::fs::write(
        &path,
        r#"{"credentials": {"telegram_bot_token": "42:custom"},
            "apps": [{"client_id": "local.custom", "client_secret": "s", "portal": "acme"}],
            "code_ttl_secs": 5}"#,
    )
    .unwrap();
    let config = SandboxConfig::load(&path).unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(config.credentials.telegram_bot_token, "42:custom");
    assert_eq!(
        config.credentials.mandrill_key,
        Credentials::default().mandrill_key
    );

    let h = start_with(config).await;
    let app = h.sandbox.default_app().unwrap();
    assert_eq!(app.client_id, "local.custom");
    let code = h.sandbox.issue_code("local.custom").unwrap();
    assert_eq!(code.expires_in, 5);
    h.sandbox.advance_clock(6);
    assert_eq!(h.exchange(&app, &code.code).await.0, 401);

    let request = json!({"chat_id": 1, "text": "x"});
    assert_eq!(
        h.post_json("/bot42:custom/sendMessage", &request).await.0,
        200
    );
    let default_token = Credentials::default().telegram_bot_token;
    assert_eq!(
        h.post_json(&format!("/bot{default_token}/sendMessage"), &request)
            .await
            .0,
        401
    );

    // Bad files are typed errors.
    let missing = SandboxConfig::load(std::path::Path::new("/nonexistent/sandbox.json"));
    assert!(matches!(missing, Err(SandboxError::ReadConfig { .. })));
    let bad =
        std::env::temp_dir().join(format!("conveyor-sandbox-bad-{}.json", std::process::id()));
    std::fs::write(&bad, r#"{"credentials": {"smtp": 1}}"#).unwrap();
    let parsed = SandboxConfig::load(&bad);
    std::fs::remove_file(&bad).ok();
    assert!(matches!(parsed, Err(SandboxError::ParseConfig { .. })));
}

#[tokio::test]
async fn shutdown_and_drop_stop_the_server() {
    let h = start().await;
    let address = h.sandbox.address();
    assert_eq!(h.get("/sandbox/clock").await.0, 200);
    h.sandbox.shutdown().await;
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "closed after shutdown"
    );

    let sandbox = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let address = sandbox.address();
    drop(sandbox);
    let mut closed = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(address).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "closed after drop");

    // A given address; a taken one is a typed error.
    let sandbox = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let taken = SandboxConfig {
        address: sandbox.address(),
        ..SandboxConfig::default()
    };
    assert!(matches!(
        Sandbox::start(taken).await,
        Err(SandboxError::Bind { .. })
    ));
    assert_eq!(sandbox.address().ip(), Ipv4Addr::LOCALHOST);
    let _: SocketAddr = sandbox.address();
    sandbox.shutdown().await;
}
