//! Local stand-ins for the outside services Conveyor's shipped processes talk to:
//! Bitrix24 OAuth 2.0 and REST, Telegram, Twilio, MessageBird, Mandrill and UniSender.
//! They speak the real wire formats (`docs/wire-formats.md`) on the
//! paths the real services use, so a process only changes its base URL.
//!
//! One HTTP server serves everything, on distinct paths:
//!
//! | service | routes |
//! |---|---|
//! | Bitrix24 OAuth | `GET /oauth/authorize/`, `GET\|POST /oauth/token/` (also without the slash) |
//! | Bitrix24 REST | `GET\|POST /rest/{method}` and `/rest/{method}.json` |
//! | Telegram | `GET\|POST /bot{TOKEN}/sendMessage` |
//! | Twilio | `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` |
//! | MessageBird | `POST /messages` |
//! | Mandrill | `POST /api/1.0/messages/send.json` (also without `.json`) |
//! | UniSender | `GET\|POST /{lang}/api/sendEmail` |
//! | control API | `/sandbox/…` (see [`router`]) |
//!
//! ```no_run
//! # async fn demo() -> Result<(), conveyor_sandbox::SandboxError> {
//! use conveyor_sandbox::{Failure, Sandbox, SandboxConfig, Service};
//!
//! let sandbox = Sandbox::start(SandboxConfig::default()).await?;
//! let app = sandbox.default_app()?;
//! let code = sandbox.issue_code(&app.client_id)?;            // valid 30 s, once
//! // GET {url}/oauth/token/?grant_type=authorization_code&client_id=…&client_secret=…&code=…
//! sandbox.fail_next(Service::Token, 1, Failure::error("PAYMENT_REQUIRED"))?;
//! sandbox.advance_clock(3601);                                 // tokens expire
//! println!("{}", sandbox.url());
//! sandbox.shutdown().await;
//! # let _ = code; Ok(()) }
//! ```
//!
//! Time is the sandbox's own: system time plus an offset that [`SandboxState::advance_clock`]
//! grows, so codes and tokens expire without sleeping. State lives in memory only.
//!
//! # Layout
//!
//! - `lib.rs` — the router and the entry points that start a sandbox;
//! - `state.rs` — everything a sandbox knows (applications, portals, codes, tokens,
//!   forced failures, the record of what happened), shared by all routes;
//! - `bitrix.rs` — the Bitrix24 OAuth server and REST API;
//! - `telegram.rs`, `twilio.rs`, `messagebird.rs`, `mandrill.rs`, `unisender.rs` — one
//!   notification service each; `notify.rs` — what they share;
//! - `control.rs` — the control API under `/sandbox/…`;
//! - `config.rs`, `clock.rs`, `ids.rs`, `params.rs`, `error.rs` — setup, the sandbox's
//!   own clock, identifiers, request parameters, errors.

mod bitrix;
mod clock;
mod config;
mod control;
mod error;
mod ids;
mod mandrill;
mod messagebird;
mod notify;
mod params;
mod state;
mod telegram;
mod twilio;
mod unisender;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::ops::Deref;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{
    AppRegistration, Credentials, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PORTAL,
    DEFAULT_SCOPE, SandboxConfig,
};
pub use error::SandboxError;
pub use state::{
    App, AppStatePatch, AuthorizationRecord, ClockInfo, Failure, IssuedCode, Message,
    NotifierRequestRecord, RestCallRecord, SandboxState, Service, Stats, TokenRequestRecord,
    TokenResponse,
};

/// Every route of the sandbox over `state`: the services and the control API.
///
/// Mount it at the root of a server (the services' paths are absolute). Token
/// responses and redirects name the URL set with [`SandboxState::set_public_url`], or
/// else the request's `Host`.
///
/// Control API (JSON in and out):
///
/// | method and path | body | answer |
/// |---|---|---|
/// | `GET /sandbox`, `GET /sandbox/credentials` | | endpoints, credentials, apps, clock |
/// | `GET /sandbox/apps` | | `[App]` |
/// | `POST /sandbox/apps` | [`AppRegistration`] | 201 [`App`] |
/// | `GET /sandbox/apps/{client_id}` | | [`App`] |
/// | `POST /sandbox/apps/{client_id}/state` | `{"paid"?:bool,"installed"?:bool}` | [`App`] |
/// | `POST /sandbox/codes` | `{"client_id"?}` | [`IssuedCode`] |
/// | `POST /sandbox/tokens` | `{"client_id"?}` | [`TokenResponse`] |
/// | `POST /sandbox/fail` | `{"service","times"?:1,"kind":"error","error"[,"retry_after"]}`, `{…"kind":"status","status"}`, `{…"kind":"delay","ms"}` | `{"service","pending"}` |
/// | `DELETE /sandbox/fail` | | `{"cleared"}` |
/// | `GET /sandbox/clock` | | [`ClockInfo`] |
/// | `POST /sandbox/clock/advance` | `{"seconds"}` | [`ClockInfo`] |
/// | `GET /sandbox/stats` | | [`Stats`] |
/// | `GET /sandbox/messages/{service}` | | `[Message]` |
/// | `POST /sandbox/reset` | | `{"ok":true}` |
pub fn router(state: SandboxState) -> Router {
    Router::new()
        // Bitrix24 OAuth: with and without the trailing slash clients differ on.
        .route("/oauth/authorize/", get(bitrix::authorize))
        .route("/oauth/authorize", get(bitrix::authorize))
        .route("/oauth/token/", get(bitrix::token).post(bitrix::token))
        .route("/oauth/token", get(bitrix::token).post(bitrix::token))
        .route("/rest/{method}", get(bitrix::rest).post(bitrix::rest))
        // `/{first}/…`: Telegram's `/bot{TOKEN}/{method}` and UniSender's
        // `/{lang}/api/sendEmail` share the first segment's parameter name.
        .route(
            "/{first}/{method}",
            get(telegram::handler).post(telegram::handler),
        )
        .route(
            "/{first}/api/sendEmail",
            get(unisender::handler).post(unisender::handler),
        )
        .route(
            "/2010-04-01/Accounts/{account_sid}/Messages.json",
            post(twilio::handler),
        )
        .route("/messages", post(messagebird::handler))
        .route("/api/1.0/messages/send.json", post(mandrill::handler))
        .route("/api/1.0/messages/send", post(mandrill::handler))
        .merge(control::routes())
        .fallback(|| async { (StatusCode::NOT_FOUND, "Not Found\n") })
        .layer(middleware::from_fn(detach))
        .with_state(state)
}

/// Runs each request in its own task, so that a client that gives up (a timeout)
/// does not cancel it: like a real server, the sandbox still completes a request whose
/// answer nobody reads (a token rotated during a forced delay stays rotated).
async fn detach(request: Request, next: Next) -> Response {
    tokio::spawn(next.run(request))
        .await
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A running sandbox server. Dereferences to its [`SandboxState`], whose methods are
/// the typed mirror of the control API (`issue_code`, `fail_next`, `advance_clock`,
/// `stats`, …). Dropping it stops the server (without waiting); prefer
/// [`Sandbox::shutdown`] to wait for it.
#[derive(Debug)]
pub struct Sandbox {
    state: SandboxState,
    address: SocketAddr,
    url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Sandbox {
    /// Binds `config.address` (127.0.0.1, free port by default) and serves. Returns
    /// once the socket listens, so requests may be sent at once. Needs a Tokio runtime.
    pub async fn start(config: SandboxConfig) -> Result<Sandbox, SandboxError> {
        let state = SandboxState::new(&config)?;
        let bind = |source| SandboxError::Bind {
            address: config.address,
            source,
        };
        let listener = tokio::net::TcpListener::bind(config.address)
            .await
            .map_err(bind)?;
        let address = listener.local_addr().map_err(bind)?;
        let url = format!("http://{address}");
        state.set_public_url(url.clone());

        let (stop, stopped) = oneshot::channel::<()>();
        let app = router(state.clone());
        let task = tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(async {
                // A dropped sender stops the server too.
                let _ = stopped.await;
            });
            // An accept loop error ends the server; there is nobody to report it to.
            let _ = server.await;
        });
        Ok(Sandbox {
            state,
            address,
            url,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The base URL, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address the server listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The shared state (also reachable through `Deref`).
    pub fn state(&self) -> &SandboxState {
        &self.state
    }

    /// Stops accepting connections, lets requests in flight finish (at most 5 s, then
    /// they are cut) and waits for the server to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Deref for Sandbox {
    type Target = SandboxState;

    fn deref(&self) -> &SandboxState {
        &self.state
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
