//! How a sandbox is set up: where it listens, which credentials the fake services
//! accept, which Bitrix24 applications exist and how long codes and tokens live.
//!
//! Everything has a default, so `SandboxConfig::default()` is a working sandbox on a
//! free port of 127.0.0.1. The same structure can be read from a JSON file (any field
//! may be left out):
//!
//! ```json
//! {
//!   "address": "127.0.0.1:8089",
//!   "credentials": { "telegram_bot_token": "123:abc", "mandrill_key": "md-key" },
//!   "apps": [{ "client_id": "local.1", "client_secret": "s3cret",
//!              "redirect_url": "http://127.0.0.1:8080/api/1/json/public/1/hash",
//!              "portal": "mycompany", "scope": "crm" }]
//! }
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::SandboxError;

/// Client id of the application every default sandbox has.
pub const DEFAULT_CLIENT_ID: &str = "local.sandbox0000000.00000001";
/// Client secret of the default application.
pub const DEFAULT_CLIENT_SECRET: &str = "sandbox-client-secret";
/// Portal name of the default application.
pub const DEFAULT_PORTAL: &str = "sandbox";
/// Scope of the default application.
pub const DEFAULT_SCOPE: &str = "crm,user";

/// The whole configuration of a sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// Where to listen; `127.0.0.1:0` (a free port) by default.
    pub address: SocketAddr,
    /// The credentials the notification services accept.
    pub credentials: Credentials,
    /// Bitrix24 applications; the first one is the default application.
    pub apps: Vec<AppRegistration>,
    /// How long an authorization code is valid (Bitrix24: 30 s).
    pub code_ttl_secs: u64,
    /// How long an access token is valid (Bitrix24: 1 hour).
    pub access_token_ttl_secs: u64,
    /// How long a refresh token is valid (Bitrix24: 180 days in current docs).
    pub refresh_token_ttl_secs: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            address: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            credentials: Credentials::default(),
            apps: vec![AppRegistration::default_app()],
            code_ttl_secs: 30,
            access_token_ttl_secs: 3600,
            refresh_token_ttl_secs: 180 * 24 * 3600,
        }
    }
}

impl SandboxConfig {
    /// Reads a configuration from a JSON file; missing fields keep their defaults.
    pub fn load(path: &Path) -> Result<SandboxConfig, SandboxError> {
        let text = std::fs::read_to_string(path).map_err(|source| SandboxError::ReadConfig {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| SandboxError::ParseConfig {
            path: path.to_owned(),
            source,
        })
    }
}

/// The credentials the fake notification services accept; anything else gets each
/// service's own authentication error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Credentials {
    /// Telegram: the `{TOKEN}` of `/bot{TOKEN}/sendMessage`.
    pub telegram_bot_token: String,
    /// Twilio: the account SID (Basic auth user and URL segment).
    pub twilio_account_sid: String,
    /// Twilio: the auth token (Basic auth password).
    pub twilio_auth_token: String,
    /// MessageBird: the key of `Authorization: AccessKey {KEY}`.
    pub messagebird_access_key: String,
    /// Mandrill: the `key` of the JSON body.
    pub mandrill_key: String,
    /// UniSender: the `api_key` parameter.
    pub unisender_api_key: String,
}

impl Default for Credentials {
    fn default() -> Self {
        Credentials {
            telegram_bot_token: "123456789:SANDBOX-telegram-bot-token-0000000".into(),
            twilio_account_sid: "AC0000000000000000000000000sandbox".into(),
            twilio_auth_token: "sandbox-twilio-auth-token".into(),
            messagebird_access_key: "sandbox-messagebird-access-key".into(),
            mandrill_key: "sandbox-mandrill-key".into(),
            unisender_api_key: "sandbox-unisender-api-key".into(),
        }
    }
}

/// A Bitrix24 application to register. Missing fields are generated (ids and secret)
/// or defaulted (portal `sandbox`, scope `crm,user`, no redirect URL).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppRegistration {
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    /// Where `/oauth/authorize/` sends the browser with the code. Without one the
    /// authorize page answers with the code as JSON instead of redirecting.
    pub redirect_url: Option<String>,
    /// The portal the application is installed on (`mycompany` of
    /// `mycompany.bitrix24.ru`).
    pub portal: Option<String>,
    pub scope: Option<String>,
}

impl AppRegistration {
    /// The application a default sandbox has ([`DEFAULT_CLIENT_ID`], …).
    pub fn default_app() -> AppRegistration {
        AppRegistration {
            client_id: Some(DEFAULT_CLIENT_ID.into()),
            client_secret: Some(DEFAULT_CLIENT_SECRET.into()),
            redirect_url: None,
            portal: Some(DEFAULT_PORTAL.into()),
            scope: Some(DEFAULT_SCOPE.into()),
        }
    }
}
