//! Bitrix24 OAuth: authorize, exchange, refresh, rotation, expiry, the error table and
//! forced failures of the token endpoint.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{read, start, text};
use crate::{AppRegistration, AppStatePatch, Failure, Service};

#[tokio::test]
async fn exchange_refresh_and_rotation() {
    let h = start().await;
    let app = h.sandbox.default_app().unwrap();

    // A code from the control API, exchanged the way the seed process does.
    let (status, issued) = h
        .post_json("/sandbox/codes", &json!({"client_id": app.client_id}))
        .await;
    assert_eq!(status, 200, "{issued}");
    let code = text(&issued, "code");
    let before = h.sandbox.now();
    let response = h
        .http
        .get(h.url("/oauth/token/"))
        .query(&[
            ("grant_type", "authorization_code"),
            ("client_id", &app.client_id),
            ("client_secret", &app.client_secret),
            ("code", &code),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["cache-control"].to_str().unwrap(),
        "no-store"
    );
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let (status, tokens) = read(response).await;
    assert_eq!(status, 200, "{tokens}");

    // Exactly Bitrix24's fields, in its order.
    let keys: Vec<&str> = tokens
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "access_token",
            "expires",
            "expires_in",
            "scope",
            "domain",
            "server_endpoint",
            "status",
            "client_endpoint",
            "member_id",
            "user_id",
            "refresh_token"
        ]
    );
    let host = h.sandbox.address().to_string();
    assert_eq!(tokens["expires_in"], 3600);
    let expires = tokens["expires"].as_i64().unwrap();
    assert!(
        (before + 3600..=before + 3602).contains(&expires),
        "{expires}"
    );
    assert_eq!(tokens["scope"], "crm,user");
    assert_eq!(tokens["domain"], host.as_str());
    assert_eq!(
        tokens["client_endpoint"],
        format!("{}/rest/", h.sandbox.url())
    );
    assert_eq!(
        tokens["server_endpoint"],
        format!("{}/rest/", h.sandbox.url())
    );
    assert_eq!(tokens["status"], "L");
    assert_eq!(tokens["member_id"], app.member_id.as_str());
    assert_eq!(tokens["user_id"], 1);
    let access = text(&tokens, "access_token");
    let refresh = text(&tokens, "refresh_token");

    // The code is single-use: invalid_grant, without a description.
    let (status, body) = h.exchange(&app, &code).await;
    assert_eq!((status, body), (400, json!({"error": "invalid_grant"})));

    // The access token works at the REST API.
    let (status, _) = h.rest("profile", &access).await;
    assert_eq!(status, 200);

    // Refresh by POST with the same query string: both tokens rotate.
    let response = h
        .http
        .post(h.url("/oauth/token/"))
        .query(&[
            ("grant_type", "refresh_token"),
            ("client_id", &app.client_id),
            ("client_secret", &app.client_secret),
            ("refresh_token", &refresh),
        ])
        .send()
        .await
        .unwrap();
    let (status, renewed) = read(response).await;
    assert_eq!(status, 200, "{renewed}");
    let new_access = text(&renewed, "access_token");
    let new_refresh = text(&renewed, "refresh_token");
    assert_ne!(new_access, access);
    assert_ne!(new_refresh, refresh);

    // The old pair is dead: the old access token is invalid, the old refresh token a
    // bad grant. The new ones work.
    let (status, body) = h.rest("profile", &access).await;
    assert_eq!((status, &body["error"]), (401, &json!("invalid_token")));
    let (status, body) = h.refresh(&app, &refresh).await;
    assert_eq!((status, body), (400, json!({"error": "invalid_grant"})));
    let (status, _) = h.rest("crm.deal.list", &new_access).await;
    assert_eq!(status, 200);
    let (status, _) = h.refresh(&app, &new_refresh).await;
    assert_eq!(status, 200);

    // Everything was recorded.
    let stats = h.sandbox.stats();
    let outcomes: Vec<(Option<&str>, &str, &str)> = stats
        .token_requests
        .iter()
        .map(|r| {
            (
                r.grant_type.as_deref(),
                r.http_method.as_str(),
                r.outcome.as_str(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (Some("authorization_code"), "GET", "ok"),
            (Some("authorization_code"), "GET", "invalid_grant"),
            (Some("refresh_token"), "POST", "ok"),
            (Some("refresh_token"), "GET", "invalid_grant"),
            (Some("refresh_token"), "GET", "ok"),
        ]
    );
    h.sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_with_one_token_have_one_winner() {
    let h = start().await;
    for _ in 0..5 {
        let (app, tokens) = h.tokens().await;
        let refresh = text(&tokens, "refresh_token");
        let (a, b) = tokio::join!(h.refresh(&app, &refresh), h.refresh(&app, &refresh));
        let mut statuses = [a.0, b.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 400], "{a:?} {b:?}");
        let loser = if a.0 == 400 { a.1 } else { b.1 };
        assert_eq!(loser, json!({"error": "invalid_grant"}));
    }
}

#[tokio::test]
async fn authorize_redirects_with_the_code() {
    let h = start().await;
    let app = h
        .sandbox
        .register_app(AppRegistration {
            redirect_url: Some("http://127.0.0.1:9/callback?process=1".into()),
            portal: Some("mycompany".into()),
            scope: Some("crm".into()),
            ..AppRegistration::default()
        })
        .unwrap();
    let response = h
        .http
        .get(h.url("/oauth/authorize/"))
        .query(&[
            ("client_id", app.client_id.as_str()),
            ("response_type", "code"),
            ("state", "xyz 1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 302);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with("http://127.0.0.1:9/callback?process=1&code="),
        "{location}"
    );
    let query: Vec<(String, String)> =
        crate::params::form_decode(location.split_once('?').unwrap().1.as_bytes());
    let get = |key: &str| {
        query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{key} in {location}"))
    };
    let host = h.sandbox.address().to_string();
    assert_eq!(get("state"), "xyz 1");
    assert_eq!(get("domain"), host);
    assert_eq!(get("member_id"), app.member_id);
    assert_eq!(get("scope"), "crm");
    assert_eq!(get("server_domain"), host);
    let names: Vec<&str> = query.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "process",
            "code",
            "state",
            "domain",
            "member_id",
            "scope",
            "server_domain"
        ]
    );

    // The code of the redirect is a real one.
    let (status, tokens) = h.exchange(&app, &get("code")).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["scope"], "crm");

    // No redirect URL: the code comes back as JSON.
    let default = h.sandbox.default_app().unwrap();
    let (status, body) = h
        .get(&format!(
            "/oauth/authorize?client_id={}&state=s",
            default.client_id
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "s");
    let (status, _) = h.exchange(&default, &text(&body, "code")).await;
    assert_eq!(status, 200);

    // An unknown application.
    let (status, body) = h.get("/oauth/authorize/?client_id=nobody").await;
    assert_eq!((status, &body["error"]), (400, &json!("invalid_client")));
    assert_eq!(h.sandbox.stats().authorizations.len(), 3);
}

#[tokio::test]
async fn codes_expire_after_30_seconds_of_sandbox_time() {
    let h = start().await;
    let app = h.sandbox.default_app().unwrap();

    let young = h.sandbox.issue_code(&app.client_id).unwrap();
    assert_eq!(young.expires_in, 30);
    h.sandbox.advance_clock(29);
    let (status, _) = h.exchange(&app, &young.code).await;
    assert_eq!(status, 200);

    let old = h.sandbox.issue_code(&app.client_id).unwrap();
    let (status, clock) = h
        .post_json("/sandbox/clock/advance", &json!({"seconds": 31}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(clock["offset_secs"], 60);
    let (status, body) = h.exchange(&app, &old.code).await;
    assert_eq!(
        (status, body),
        (
            401,
            json!({"error": "expired_token",
                   "error_description": "The authorization token provided has expired."})
        )
    );
    // Even expired, it was used: now it is simply unknown.
    let (status, body) = h.exchange(&app, &old.code).await;
    assert_eq!((status, body), (400, json!({"error": "invalid_grant"})));
}

#[tokio::test]
async fn the_error_table() {
    let h = start().await;
    let (app, tokens) = h.tokens().await;
    let refresh = text(&tokens, "refresh_token");
    let id = app.client_id.as_str();
    let secret = app.client_secret.as_str();
    let error = |body: &Value| body["error"].as_str().unwrap_or_default().to_owned();

    // invalid_request: grant type missing or unknown, refresh_token or code missing.
    for query in [
        vec![("client_id", id), ("client_secret", secret)],
        vec![
            ("grant_type", "password"),
            ("client_id", id),
            ("client_secret", secret),
        ],
        vec![
            ("grant_type", "refresh_token"),
            ("client_id", id),
            ("client_secret", secret),
        ],
        vec![
            ("grant_type", "authorization_code"),
            ("client_id", id),
            ("client_secret", secret),
        ],
    ] {
        let (status, body) = h.token(&query).await;
        assert_eq!(
            (status, error(&body)),
            (400, "invalid_request".into()),
            "{query:?}"
        );
    }

    // invalid_client: wrong secret, unknown client, no client.
    for query in [
        vec![
            ("grant_type", "refresh_token"),
            ("client_id", id),
            ("client_secret", "wrong"),
            ("refresh_token", refresh.as_str()),
        ],
        vec![
            ("grant_type", "refresh_token"),
            ("client_id", "local.unknown"),
            ("client_secret", secret),
            ("refresh_token", refresh.as_str()),
        ],
        vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
        ],
    ] {
        let (status, body) = h.token(&query).await;
        assert_eq!(
            (status, error(&body)),
            (400, "invalid_client".into()),
            "{query:?}"
        );
    }

    // invalid_grant: an unknown refresh token or code, without description.
    let (status, body) = h.refresh(&app, "nonsense").await;
    assert_eq!((status, body), (400, json!({"error": "invalid_grant"})));
    let (status, body) = h.exchange(&app, "nonsense").await;
    assert_eq!((status, body), (400, json!({"error": "invalid_grant"})));

    // A code of another application is a bad grant too.
    let other = h.sandbox.register_app(AppRegistration::default()).unwrap();
    let foreign = h.sandbox.issue_code(&other.client_id).unwrap();
    let (status, body) = h.exchange(&app, &foreign.code).await;
    assert_eq!((status, body), (400, json!({"error": "invalid_grant"})));

    // PAYMENT_REQUIRED while the portal is unpaid (through the control API).
    let (status, _) = h
        .post_json(
            &format!("/sandbox/apps/{id}/state"),
            &json!({"paid": false}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = h.refresh(&app, &refresh).await;
    assert_eq!((status, error(&body)), (401, "PAYMENT_REQUIRED".into()));
    h.sandbox
        .set_app_state(
            id,
            AppStatePatch {
                paid: Some(true),
                installed: Some(false),
            },
        )
        .unwrap();
    let (status, body) = h.refresh(&app, &refresh).await;
    assert_eq!((status, error(&body)), (401, "NOT_INSTALLED".into()));
    h.sandbox
        .set_app_state(
            id,
            AppStatePatch {
                installed: Some(true),
                ..AppStatePatch::default()
            },
        )
        .unwrap();

    // Those refusals did not use the refresh token up.
    let (status, renewed) = h.refresh(&app, &refresh).await;
    assert_eq!(status, 200, "{renewed}");

    // An expired refresh token (180 days): 401 expired_token.
    h.sandbox.advance_clock(181 * 24 * 3600);
    let (status, body) = h.refresh(&app, &text(&renewed, "refresh_token")).await;
    assert_eq!((status, error(&body)), (401, "expired_token".into()));
}

#[tokio::test]
async fn parameters_come_from_the_query_string_only() {
    let h = start().await;
    let app = h.sandbox.default_app().unwrap();
    let code = h.sandbox.issue_code(&app.client_id).unwrap();
    let response = h
        .http
        .post(h.url("/oauth/token/"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", &app.client_id),
            ("client_secret", &app.client_secret),
            ("code", &code.code),
        ])
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_eq!((status, &body["error"]), (400, &json!("invalid_request")));
    // The route without the trailing slash works too.
    let response = h
        .http
        .get(h.url("/oauth/token"))
        .query(&[
            ("grant_type", "authorization_code"),
            ("client_id", &app.client_id),
            ("client_secret", &app.client_secret),
            ("code", &code.code),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test]
async fn forced_token_failures() {
    let h = start().await;
    let (app, tokens) = h.tokens().await;
    let refresh = text(&tokens, "refresh_token");

    // Two invalid_grant through the control API, then the real answer: forced
    // failures do not consume the refresh token.
    let (status, body) = h
        .post_json(
            "/sandbox/fail",
            &json!({"service": "token", "times": 2, "kind": "error", "error": "invalid_grant"}),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"service": "token", "pending": 2}))
    );
    for _ in 0..2 {
        let (status, body) = h.refresh(&app, &refresh).await;
        assert_eq!((status, body), (400, json!({"error": "invalid_grant"})));
    }

    // Bitrix errors by name, with the table's statuses.
    h.sandbox
        .fail_next(Service::Token, 1, Failure::error("PAYMENT_REQUIRED"))
        .unwrap();
    h.sandbox
        .fail_next(Service::Token, 1, Failure::error("expired_token"))
        .unwrap();
    let (status, body) = h.refresh(&app, &refresh).await;
    assert_eq!((status, &body["error"]), (401, &json!("PAYMENT_REQUIRED")));
    let (status, body) = h.refresh(&app, &refresh).await;
    assert_eq!(
        (status, body),
        (
            401,
            json!({"error": "expired_token",
                   "error_description": "The authorization token provided has expired."})
        )
    );

    // Bare statuses, as from a proxy.
    for code in [500_u16, 503, 429] {
        h.sandbox
            .fail_next(Service::Token, 1, Failure::Status { status: code })
            .unwrap();
        let response = h
            .http
            .get(h.url("/oauth/token/"))
            .query(&[
                ("grant_type", "refresh_token"),
                ("client_id", &app.client_id),
                ("client_secret", &app.client_secret),
                ("refresh_token", &refresh),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), code);
        if code != 500 {
            assert_eq!(response.headers()["retry-after"], "1");
        }
    }

    // A delay: a client with a short timeout gives up, the request still happens.
    h.sandbox
        .fail_next(Service::Token, 1, Failure::Delay { ms: 400 })
        .unwrap();
    let impatient = h
        .http
        .get(h.url("/oauth/token/"))
        .query(&[
            ("grant_type", "refresh_token"),
            ("client_id", &app.client_id),
            ("client_secret", &app.client_secret),
            ("refresh_token", &refresh),
        ])
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(impatient.unwrap_err().is_timeout());
    // Wait (up to 10 s) until the server has finished the abandoned request.
    let recorded = h.sandbox.stats().token_requests.len();
    for _ in 0..200 {
        if h.sandbox.stats().token_requests.len() > recorded {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = h.refresh(&app, &refresh).await;
    assert_eq!(
        (status, body),
        (400, json!({"error": "invalid_grant"})),
        "rotated"
    );

    // A delay with a patient client: the answer is the normal one, late.
    let (app, tokens) = h.tokens().await;
    h.sandbox
        .fail_next(Service::Token, 1, Failure::Delay { ms: 300 })
        .unwrap();
    let started = Instant::now();
    let (status, _) = h.refresh(&app, &text(&tokens, "refresh_token")).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    let stats = h.sandbox.stats();
    let forced: Vec<&str> = stats
        .token_requests
        .iter()
        .filter(|r| r.forced)
        .map(|r| r.outcome.as_str())
        .collect();
    assert_eq!(
        forced,
        [
            "invalid_grant",
            "invalid_grant",
            "PAYMENT_REQUIRED",
            "expired_token",
            "http_500",
            "http_503",
            "http_429"
        ]
    );
    assert!(stats.pending_failures.is_empty());
}
