//! Tests that drive the real server over HTTP on 127.0.0.1 with reqwest.

mod control;
mod notifiers;
mod oauth;
mod rest;

use reqwest::redirect::Policy;
use reqwest::{Client, Response};
use serde_json::Value;

use crate::{App, Sandbox, SandboxConfig};

/// A running sandbox and a client that does not follow redirects or use proxies.
pub(crate) struct Harness {
    pub(crate) sandbox: Sandbox,
    pub(crate) http: Client,
}

pub(crate) async fn start() -> Harness {
    start_with(SandboxConfig::default()).await
}

pub(crate) async fn start_with(config: SandboxConfig) -> Harness {
    // reqwest's rustls needs a crypto provider; installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sandbox = Sandbox::start(config).await.expect("sandbox starts");
    let http = Client::builder()
        .redirect(Policy::none())
        .no_proxy()
        .build()
        .expect("http client");
    Harness { sandbox, http }
}

/// Status and body (JSON, or the text as a JSON string when it is not JSON).
pub(crate) async fn read(response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

impl Harness {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sandbox.url())
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        read(self.http.get(self.url(path)).send().await.expect("GET")).await
    }

    pub(crate) async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        read(
            self.http
                .post(self.url(path))
                .json(body)
                .send()
                .await
                .expect("POST"),
        )
        .await
    }

    /// `GET /oauth/token/?{pairs}`.
    pub(crate) async fn token(&self, pairs: &[(&str, &str)]) -> (u16, Value) {
        read(
            self.http
                .get(self.url("/oauth/token/"))
                .query(pairs)
                .send()
                .await
                .expect("token request"),
        )
        .await
    }

    pub(crate) async fn exchange(&self, app: &App, code: &str) -> (u16, Value) {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("client_id", &app.client_id),
            ("client_secret", &app.client_secret),
            ("code", code),
        ])
        .await
    }

    pub(crate) async fn refresh(&self, app: &App, refresh_token: &str) -> (u16, Value) {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("client_id", &app.client_id),
            ("client_secret", &app.client_secret),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    /// A fresh token pair of the default application, the way a process gets one.
    pub(crate) async fn tokens(&self) -> (App, Value) {
        let app = self.sandbox.default_app().expect("default app");
        let code = self.sandbox.issue_code(&app.client_id).expect("code");
        let (status, body) = self.exchange(&app, &code.code).await;
        assert_eq!(status, 200, "{body}");
        (app, body)
    }

    /// `GET /rest/{method}?auth={token}`.
    pub(crate) async fn rest(&self, method: &str, token: &str) -> (u16, Value) {
        read(
            self.http
                .get(self.url(&format!("/rest/{method}")))
                .query(&[("auth", token)])
                .send()
                .await
                .expect("REST call"),
        )
        .await
    }
}

/// A string field of a JSON body.
pub(crate) fn text(body: &Value, key: &str) -> String {
    body[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in {body}"))
        .to_owned()
}
