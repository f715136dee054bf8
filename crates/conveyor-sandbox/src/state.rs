//! Everything a sandbox knows: applications, portals, codes, tokens, pending forced
//! failures and the record of what happened. One [`SandboxState`] is shared by all
//! request handlers and by the Rust API; it is cheap to clone (an `Arc`).
//!
//! The mutable part sits behind one `std::sync::Mutex`, held only for short,
//! non-async sections. That also makes every token operation atomic: of two refreshes
//! racing with the same refresh token exactly one wins.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Clock;
use crate::config::{AppRegistration, Credentials, DEFAULT_PORTAL, DEFAULT_SCOPE, SandboxConfig};
use crate::ids::{random_alnum, random_hex};
use crate::{SandboxError, mandrill, messagebird, telegram, twilio, unisender};

/// A service of the sandbox, as named by the control API (`"token"`, `"telegram"`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    /// Bitrix24 `/oauth/token/`.
    Token,
    /// Bitrix24 `/rest/{method}`.
    Rest,
    Telegram,
    Twilio,
    Messagebird,
    Mandrill,
    Unisender,
}

impl Service {
    /// Every service, in a fixed order.
    pub const ALL: [Service; 7] = [
        Service::Token,
        Service::Rest,
        Service::Telegram,
        Service::Twilio,
        Service::Messagebird,
        Service::Mandrill,
        Service::Unisender,
    ];

    /// The notification services (those that record messages).
    pub const NOTIFIERS: [Service; 5] = [
        Service::Telegram,
        Service::Twilio,
        Service::Messagebird,
        Service::Mandrill,
        Service::Unisender,
    ];

    /// The name used on the wire of the control API.
    pub fn name(self) -> &'static str {
        match self {
            Service::Token => "token",
            Service::Rest => "rest",
            Service::Telegram => "telegram",
            Service::Twilio => "twilio",
            Service::Messagebird => "messagebird",
            Service::Mandrill => "mandrill",
            Service::Unisender => "unisender",
        }
    }

    /// The error names a forced `error` failure may use; `None` = any name (Bitrix24
    /// has many error codes; unknown ones are answered with HTTP 400).
    pub fn error_names(self) -> Option<&'static [&'static str]> {
        match self {
            Service::Token | Service::Rest => None,
            Service::Telegram => Some(telegram::ERRORS),
            Service::Twilio => Some(twilio::ERRORS),
            Service::Messagebird => Some(messagebird::ERRORS),
            Service::Mandrill => Some(mandrill::ERRORS),
            Service::Unisender => Some(unisender::ERRORS),
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Service {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Service::ALL
            .into_iter()
            .find(|service| service.name() == s)
            .ok_or_else(|| format!("unknown service {s:?}"))
    }
}

/// What the next request to a service should suffer instead of (or before) being
/// handled normally. JSON: `{"kind":"error","error":"invalid_grant"}`,
/// `{"kind":"status","status":503}`, `{"kind":"delay","ms":2000}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Failure {
    /// The service's own error, by name: a Bitrix24 error code (`invalid_grant`,
    /// `PAYMENT_REQUIRED`, `QUERY_LIMIT_EXCEEDED`, …) or a notifier's error (see
    /// [`Service::error_names`]). The request is not processed.
    Error {
        error: String,
        /// Seconds to ask the client to wait, for Telegram's `too_many_requests`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
    },
    /// A bare HTTP status with a short text body, as a proxy or load balancer in front
    /// of the service would send (500, 502, 503, 429 with `Retry-After: 1`, …). The
    /// request is not processed.
    Status { status: u16 },
    /// Waits this long, then handles the request normally (for client timeouts: the
    /// request still takes effect, as it would on the real service).
    Delay { ms: u64 },
}

impl Failure {
    /// A forced service error by name.
    pub fn error(name: impl Into<String>) -> Failure {
        Failure::Error {
            error: name.into(),
            retry_after: None,
        }
    }
}

/// A Bitrix24 application as the sandbox knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_url: Option<String>,
    pub portal: String,
    pub scope: String,
    /// The portal's `member_id` (reported in redirects and token responses).
    pub member_id: String,
    /// `false`: the token endpoint answers `NOT_INSTALLED`.
    pub installed: bool,
    /// `false`: the portal's paid period is over; the token endpoint answers
    /// `PAYMENT_REQUIRED`. Belongs to the portal: shared by its applications.
    pub paid: bool,
}

/// A change to an application's portal: `{"paid":false}`, `{"installed":false}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppStatePatch {
    pub paid: Option<bool>,
    pub installed: Option<bool>,
}

/// An authorization code issued by the sandbox, with everything the authorize redirect
/// carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCode {
    pub code: String,
    pub client_id: String,
    pub domain: String,
    pub member_id: String,
    pub scope: String,
    pub server_domain: String,
    /// Seconds the code stays valid.
    pub expires_in: u64,
    /// Where the authorize page would send the browser (`None` without redirect URL).
    pub redirect: Option<String>,
}

/// The success body of the token endpoint, field for field and in Bitrix24's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    /// Unix time (of the sandbox's clock) when the access token expires.
    pub expires: i64,
    pub expires_in: u64,
    pub scope: String,
    pub domain: String,
    pub server_endpoint: String,
    pub status: String,
    pub client_endpoint: String,
    pub member_id: String,
    pub user_id: u64,
    pub refresh_token: String,
}

/// One visit of `/oauth/authorize/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationRecord {
    pub at: i64,
    pub client_id: Option<String>,
    pub status: u16,
    /// `ok` or the error.
    pub outcome: String,
}

/// One request to the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRequestRecord {
    /// Sandbox time (unix seconds).
    pub at: i64,
    /// `GET` or `POST`.
    pub http_method: String,
    pub grant_type: Option<String>,
    pub client_id: Option<String>,
    pub status: u16,
    /// `ok`, the Bitrix24 error code, or `http_{status}` for a forced bare status.
    pub outcome: String,
    /// The answer was a forced failure.
    pub forced: bool,
}

/// One call of `/rest/{method}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestCallRecord {
    pub at: i64,
    /// The method without `.json` (`crm.deal.list`).
    pub method: String,
    /// The application whose token was used, when the token was known.
    pub client_id: Option<String>,
    pub status: u16,
    pub outcome: String,
    pub forced: bool,
}

/// One request to a notification service (accepted or not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifierRequestRecord {
    pub at: i64,
    pub service: Service,
    pub status: u16,
    /// `ok` or the service's error (`Unauthorized`, `20003`, `invalid_api_key`, …).
    pub outcome: String,
    pub forced: bool,
}

/// A message a notification service accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub service: Service,
    /// The id the service answered with (message_id, SID, `_id`, email_id, …).
    pub id: String,
    pub at: i64,
    /// Chat id, phone numbers or e-mail addresses.
    pub to: Vec<String>,
    pub from: Option<String>,
    pub subject: Option<String>,
    /// The text (or, for e-mail, the text or else the HTML body).
    pub text: String,
    /// Every parameter of the request, as received.
    pub params: Value,
}

/// The sandbox's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockInfo {
    /// Sandbox time, unix seconds.
    pub now: i64,
    /// Seconds the sandbox is ahead of the system clock.
    pub offset_secs: i64,
}

/// What happened so far (`GET /sandbox/stats`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub clock: ClockInfo,
    pub authorizations: Vec<AuthorizationRecord>,
    pub token_requests: Vec<TokenRequestRecord>,
    pub rest_calls: Vec<RestCallRecord>,
    pub notifier_requests: Vec<NotifierRequestRecord>,
    /// Accepted messages of each notification service (every one present, maybe empty).
    pub messages: BTreeMap<Service, Vec<Message>>,
    /// Forced failures not yet used, per service (only those with some).
    pub pending_failures: BTreeMap<Service, usize>,
}

// ---------------------------------------------------------------------------------
// Internal records.

#[derive(Debug, Clone)]
pub(crate) struct AppRecord {
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) redirect_url: Option<String>,
    pub(crate) portal: String,
    pub(crate) scope: String,
    pub(crate) installed: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct PortalRecord {
    pub(crate) member_id: String,
    pub(crate) paid: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct CodeRecord {
    pub(crate) client_id: String,
    pub(crate) issued_ms: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct AccessRecord {
    pub(crate) client_id: String,
    pub(crate) scope: String,
    pub(crate) expires_ms: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct RefreshRecord {
    pub(crate) client_id: String,
    pub(crate) expires_ms: i64,
    /// The access token issued together with this refresh token (revoked on rotation).
    pub(crate) access_token: String,
}

#[derive(Debug, Default)]
pub(crate) struct Log {
    pub(crate) authorizations: Vec<AuthorizationRecord>,
    pub(crate) token_requests: Vec<TokenRequestRecord>,
    pub(crate) rest_calls: Vec<RestCallRecord>,
    pub(crate) notifier_requests: Vec<NotifierRequestRecord>,
    pub(crate) messages: Vec<Message>,
}

/// The mutable part of the state.
#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub(crate) apps: Vec<AppRecord>,
    pub(crate) portals: HashMap<String, PortalRecord>,
    pub(crate) codes: HashMap<String, CodeRecord>,
    pub(crate) access_tokens: HashMap<String, AccessRecord>,
    pub(crate) refresh_tokens: HashMap<String, RefreshRecord>,
    pub(crate) failures: HashMap<Service, VecDeque<Failure>>,
    pub(crate) log: Log,
    /// Last numeric message id handed out (Telegram message_id, UniSender email_id).
    pub(crate) last_message_id: u64,
}

impl Inner {
    pub(crate) fn app(&self, client_id: &str) -> Option<&AppRecord> {
        self.apps.iter().find(|app| app.client_id == client_id)
    }

    pub(crate) fn portal(&self, name: &str) -> Option<&PortalRecord> {
        self.portals.get(name)
    }

    pub(crate) fn next_message_id(&mut self) -> u64 {
        self.last_message_id += 1;
        self.last_message_id
    }

    fn app_view(&self, app: &AppRecord) -> App {
        let portal = self.portal(&app.portal);
        App {
            client_id: app.client_id.clone(),
            client_secret: app.client_secret.clone(),
            redirect_url: app.redirect_url.clone(),
            portal: app.portal.clone(),
            scope: app.scope.clone(),
            member_id: portal.map(|p| p.member_id.clone()).unwrap_or_default(),
            installed: app.installed,
            paid: portal.is_none_or(|p| p.paid),
        }
    }

    /// Issues an access + refresh token pair for `app`.
    pub(crate) fn issue_tokens(
        &mut self,
        settings: &Settings,
        now_ms: i64,
        client_id: &str,
        base_url: &str,
    ) -> Option<TokenResponse> {
        let app = self.app(client_id)?.clone();
        let member_id = self
            .portal(&app.portal)
            .map(|p| p.member_id.clone())
            .unwrap_or_default();
        let access_token = random_hex(70);
        let refresh_token = random_hex(70);
        let access_ms = secs_to_ms(settings.access_token_ttl_secs);
        let expires_ms = now_ms.saturating_add(access_ms);
        self.access_tokens.insert(
            access_token.clone(),
            AccessRecord {
                client_id: app.client_id.clone(),
                scope: app.scope.clone(),
                expires_ms,
            },
        );
        self.refresh_tokens.insert(
            refresh_token.clone(),
            RefreshRecord {
                client_id: app.client_id.clone(),
                expires_ms: now_ms.saturating_add(secs_to_ms(settings.refresh_token_ttl_secs)),
                access_token: access_token.clone(),
            },
        );
        Some(TokenResponse {
            access_token,
            expires: expires_ms.div_euclid(1000),
            expires_in: settings.access_token_ttl_secs,
            scope: app.scope,
            domain: host_of(base_url),
            server_endpoint: format!("{base_url}/rest/"),
            status: "L".into(),
            client_endpoint: format!("{base_url}/rest/"),
            member_id,
            user_id: 1,
            refresh_token,
        })
    }

    /// Issues an authorization code for `client_id`.
    pub(crate) fn issue_code(
        &mut self,
        settings: &Settings,
        now_ms: i64,
        client_id: &str,
        base_url: &str,
        state: Option<&str>,
    ) -> Option<IssuedCode> {
        let app = self.app(client_id)?.clone();
        let member_id = self
            .portal(&app.portal)
            .map(|p| p.member_id.clone())
            .unwrap_or_default();
        let code = random_hex(70);
        self.codes.insert(
            code.clone(),
            CodeRecord {
                client_id: app.client_id.clone(),
                issued_ms: now_ms,
            },
        );
        let host = host_of(base_url);
        let redirect = app.redirect_url.as_deref().map(|url| {
            let mut query = vec![("code", code.as_str())];
            if let Some(state) = state {
                query.push(("state", state));
            }
            query.extend([
                ("domain", host.as_str()),
                ("member_id", member_id.as_str()),
                ("scope", app.scope.as_str()),
                ("server_domain", host.as_str()),
            ]);
            append_query(url, &query)
        });
        Some(IssuedCode {
            code,
            client_id: app.client_id,
            domain: host.clone(),
            member_id,
            scope: app.scope,
            server_domain: host,
            expires_in: settings.code_ttl_secs,
            redirect,
        })
    }
}

/// Code and token lifetimes, and the credentials: fixed for a sandbox's life.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) credentials: Credentials,
    pub(crate) code_ttl_secs: u64,
    pub(crate) access_token_ttl_secs: u64,
    pub(crate) refresh_token_ttl_secs: u64,
}

#[derive(Debug)]
struct Shared {
    settings: Settings,
    clock: Clock,
    /// Base URL of the server (`http://127.0.0.1:PORT`), when known; otherwise each
    /// request's `Host` header is used.
    public_url: Mutex<Option<String>>,
    inner: Mutex<Inner>,
}

/// The shared state of a sandbox: what the servers serve and what the control API and
/// the Rust API steer. Clone it freely.
#[derive(Debug, Clone)]
pub struct SandboxState {
    shared: Arc<Shared>,
}

/// What a handler must do after [`SandboxState::intercept`].
pub(crate) enum Interception {
    /// Handle the request normally.
    Proceed,
    /// Answer with this bare status.
    Status(StatusCode),
    /// Answer with the service's error of this name.
    Error {
        error: String,
        retry_after: Option<u64>,
    },
}

impl SandboxState {
    /// A state set up from `config` (applications registered, clock at system time).
    pub fn new(config: &SandboxConfig) -> Result<SandboxState, SandboxError> {
        let state = SandboxState {
            shared: Arc::new(Shared {
                settings: Settings {
                    credentials: config.credentials.clone(),
                    code_ttl_secs: config.code_ttl_secs,
                    access_token_ttl_secs: config.access_token_ttl_secs,
                    refresh_token_ttl_secs: config.refresh_token_ttl_secs,
                },
                clock: Clock::default(),
                public_url: Mutex::new(None),
                inner: Mutex::new(Inner::default()),
            }),
        };
        for app in &config.apps {
            state.register_app(app.clone())?;
        }
        Ok(state)
    }

    /// Sets the base URL the sandbox reports in token responses and redirects
    /// (`http://127.0.0.1:8089`, no trailing slash). [`crate::Sandbox::start`] does it;
    /// a router mounted elsewhere without it uses each request's `Host` header.
    pub fn set_public_url(&self, url: impl Into<String>) {
        let url = url.into().trim_end_matches('/').to_owned();
        *lock(&self.shared.public_url) = Some(url);
    }

    /// The base URL as configured, if it is.
    pub fn public_url(&self) -> Option<String> {
        lock(&self.shared.public_url).clone()
    }

    /// The base URL for a request: the configured one, or `http://{Host}`.
    pub(crate) fn base_url(&self, headers: &HeaderMap) -> String {
        if let Some(url) = self.public_url() {
            return url;
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1");
        format!("http://{host}")
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    pub(crate) fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.shared.inner)
    }

    /// The credentials the notification services accept.
    pub fn credentials(&self) -> &Credentials {
        &self.shared.settings.credentials
    }

    // --- clock -------------------------------------------------------------------

    /// Sandbox time, unix seconds.
    pub fn now(&self) -> i64 {
        self.shared.clock.now()
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.shared.clock.now_ms()
    }

    /// The sandbox's clock.
    pub fn clock(&self) -> ClockInfo {
        ClockInfo {
            now: self.shared.clock.now(),
            offset_secs: self.shared.clock.offset_secs(),
        }
    }

    /// Moves the sandbox's clock forward by `seconds` (codes and tokens age with it).
    pub fn advance_clock(&self, seconds: u64) -> ClockInfo {
        self.shared.clock.advance(seconds);
        self.clock()
    }

    // --- applications ------------------------------------------------------------

    /// Registers an application (or replaces the one with the same client id).
    /// Generates what is missing: `local.{14 hex}.{8 digits}` client id, a 50-character
    /// secret. The portal is created (paid, with a fresh `member_id`) if new.
    pub fn register_app(&self, registration: AppRegistration) -> Result<App, SandboxError> {
        let client_id = registration.client_id.unwrap_or_else(|| {
            format!(
                "local.{}.{:08}",
                random_hex(14),
                crate::ids::random_u64() % 100_000_000
            )
        });
        if client_id.is_empty() || client_id.chars().any(char::is_whitespace) {
            return Err(SandboxError::InvalidApp(format!(
                "client_id {client_id:?} is empty or has spaces"
            )));
        }
        let client_secret = registration
            .client_secret
            .unwrap_or_else(|| random_alnum(50));
        if client_secret.is_empty() {
            return Err(SandboxError::InvalidApp("client_secret is empty".into()));
        }
        if let Some(url) = &registration.redirect_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(SandboxError::InvalidApp(format!(
                "redirect_url {url:?} is not an http(s) URL"
            )));
        }
        let portal = registration.portal.unwrap_or_else(|| DEFAULT_PORTAL.into());
        if portal.is_empty() {
            return Err(SandboxError::InvalidApp("portal is empty".into()));
        }
        let record = AppRecord {
            client_id: client_id.clone(),
            client_secret,
            redirect_url: registration.redirect_url,
            portal: portal.clone(),
            scope: registration.scope.unwrap_or_else(|| DEFAULT_SCOPE.into()),
            installed: true,
        };
        let mut inner = self.inner();
        inner.portals.entry(portal).or_insert_with(|| PortalRecord {
            member_id: random_hex(32),
            paid: true,
        });
        match inner.apps.iter_mut().find(|a| a.client_id == client_id) {
            Some(existing) => *existing = record.clone(),
            None => inner.apps.push(record.clone()),
        }
        Ok(inner.app_view(&record))
    }

    /// Every application, the default one first.
    pub fn apps(&self) -> Vec<App> {
        let inner = self.inner();
        inner.apps.iter().map(|app| inner.app_view(app)).collect()
    }

    /// The application with this client id.
    pub fn app(&self, client_id: &str) -> Result<App, SandboxError> {
        let inner = self.inner();
        inner
            .app(client_id)
            .map(|app| inner.app_view(app))
            .ok_or_else(|| SandboxError::UnknownApp(client_id.to_owned()))
    }

    /// The default application (the first one registered).
    pub fn default_app(&self) -> Result<App, SandboxError> {
        let inner = self.inner();
        inner
            .apps
            .first()
            .map(|app| inner.app_view(app))
            .ok_or(SandboxError::NoApp)
    }

    /// Marks the application's portal as paid or unpaid, the application as installed
    /// or not.
    pub fn set_app_state(
        &self,
        client_id: &str,
        patch: AppStatePatch,
    ) -> Result<App, SandboxError> {
        let mut inner = self.inner();
        let index = inner
            .apps
            .iter()
            .position(|a| a.client_id == client_id)
            .ok_or_else(|| SandboxError::UnknownApp(client_id.to_owned()))?;
        if let Some(installed) = patch.installed {
            inner.apps[index].installed = installed;
        }
        let portal = inner.apps[index].portal.clone();
        if let Some(paid) = patch.paid
            && let Some(record) = inner.portals.get_mut(&portal)
        {
            record.paid = paid;
        }
        let app = inner.apps[index].clone();
        Ok(inner.app_view(&app))
    }

    /// Issues an authorization code for the application, as if its user had just
    /// approved it in the browser. It lives `code_ttl_secs` (30 s) of sandbox time.
    pub fn issue_code(&self, client_id: &str) -> Result<IssuedCode, SandboxError> {
        let base = self
            .public_url()
            .unwrap_or_else(|| "http://127.0.0.1".into());
        let now = self.now_ms();
        self.inner()
            .issue_code(self.settings(), now, client_id, &base, None)
            .ok_or_else(|| SandboxError::UnknownApp(client_id.to_owned()))
    }

    /// Issues a token pair for the application directly (no code, no request), exactly
    /// as the token endpoint would.
    pub fn issue_tokens(&self, client_id: &str) -> Result<TokenResponse, SandboxError> {
        let base = self
            .public_url()
            .unwrap_or_else(|| "http://127.0.0.1".into());
        let now = self.now_ms();
        self.inner()
            .issue_tokens(self.settings(), now, client_id, &base)
            .ok_or_else(|| SandboxError::UnknownApp(client_id.to_owned()))
    }

    // --- forced failures ---------------------------------------------------------

    /// Makes the next `times` requests to `service` fail with `failure` (queued after
    /// those already pending). Returns how many are now pending for the service.
    pub fn fail_next(
        &self,
        service: Service,
        times: usize,
        failure: Failure,
    ) -> Result<usize, SandboxError> {
        match &failure {
            Failure::Error { error, .. } => {
                if let Some(known) = service.error_names()
                    && !known.contains(&error.as_str())
                {
                    return Err(SandboxError::UnknownError {
                        service,
                        error: error.clone(),
                        known: known.join(", "),
                    });
                }
            }
            Failure::Status { status } => {
                StatusCode::from_u16(*status).map_err(|_| SandboxError::InvalidStatus(*status))?;
            }
            Failure::Delay { .. } => {}
        }
        let mut inner = self.inner();
        let queue = inner.failures.entry(service).or_default();
        queue.extend(std::iter::repeat_n(failure, times));
        Ok(queue.len())
    }

    /// Forgets every pending forced failure; returns how many there were.
    pub fn clear_failures(&self) -> usize {
        let mut inner = self.inner();
        let count = inner.failures.values().map(VecDeque::len).sum();
        inner.failures.clear();
        count
    }

    /// Takes the next forced failure of `service`; sleeps through a delay.
    pub(crate) async fn intercept(&self, service: Service) -> Interception {
        let failure = self
            .inner()
            .failures
            .get_mut(&service)
            .and_then(VecDeque::pop_front);
        match failure {
            None => Interception::Proceed,
            Some(Failure::Delay { ms }) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Interception::Proceed
            }
            Some(Failure::Status { status }) => Interception::Status(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            ),
            Some(Failure::Error { error, retry_after }) => {
                Interception::Error { error, retry_after }
            }
        }
    }

    // --- records -----------------------------------------------------------------

    pub(crate) fn record_notifier(
        &self,
        service: Service,
        status: StatusCode,
        outcome: &str,
        forced: bool,
    ) {
        let at = self.now();
        self.inner()
            .log
            .notifier_requests
            .push(NotifierRequestRecord {
                at,
                service,
                status: status.as_u16(),
                outcome: outcome.to_owned(),
                forced,
            });
    }

    pub(crate) fn record_message(&self, message: Message) {
        self.inner().log.messages.push(message);
    }

    /// What happened so far.
    pub fn stats(&self) -> Stats {
        let clock = self.clock();
        let inner = self.inner();
        let mut messages: BTreeMap<Service, Vec<Message>> = Service::NOTIFIERS
            .into_iter()
            .map(|s| (s, Vec::new()))
            .collect();
        for message in &inner.log.messages {
            messages
                .entry(message.service)
                .or_default()
                .push(message.clone());
        }
        Stats {
            clock,
            authorizations: inner.log.authorizations.clone(),
            token_requests: inner.log.token_requests.clone(),
            rest_calls: inner.log.rest_calls.clone(),
            notifier_requests: inner.log.notifier_requests.clone(),
            messages,
            pending_failures: inner
                .failures
                .iter()
                .filter(|(_, queue)| !queue.is_empty())
                .map(|(service, queue)| (*service, queue.len()))
                .collect(),
        }
    }

    /// The messages a notification service accepted, oldest first.
    pub fn messages(&self, service: Service) -> Vec<Message> {
        self.inner()
            .log
            .messages
            .iter()
            .filter(|m| m.service == service)
            .cloned()
            .collect()
    }

    /// Forgets the record of what happened and every pending forced failure, and sets
    /// the clock back to system time. Applications, codes and tokens stay.
    pub fn reset(&self) {
        let mut inner = self.inner();
        inner.log = Log::default();
        inner.failures.clear();
        self.shared.clock.reset();
    }
}

/// Locks a mutex, recovering from poisoning (a panicking handler must not take the
/// whole sandbox down; the data is plain records).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000)
}

/// `127.0.0.1:8089` of `http://127.0.0.1:8089`.
pub(crate) fn host_of(base_url: &str) -> String {
    let rest = base_url
        .split_once("://")
        .map_or(base_url, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// `url` with `pairs` added to its query string.
pub(crate) fn append_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let encoded: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                crate::params::percent_encode(k),
                crate::params::percent_encode(v)
            )
        })
        .collect();
    let separator = if !url.contains('?') {
        "?"
    } else if url.ends_with('?') || url.ends_with('&') {
        ""
    } else {
        "&"
    };
    format!("{url}{separator}{}", encoded.join("&"))
}

/// A bare status response, as a proxy would send it (`503 Service Unavailable`).
pub(crate) fn bare_status(status: StatusCode) -> Response {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        (status, [(header::RETRY_AFTER, "1")], text).into_response()
    } else {
        (status, text).into_response()
    }
}

/// The record name of a bare status (`http_503`).
pub(crate) fn bare_outcome(status: StatusCode) -> String {
    format!("http_{}", status.as_u16())
}
