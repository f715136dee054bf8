//! The token of a process that declares an `authorize:` link (bitrix_oauth, or any other
//! that exchanges a code), in words: received
//! (with a fingerprint, never the token), when it is refreshed next and was last; or
//! escalated, with the reason. And the code out of what a person pastes.

use conveyor_model::NodeKind;
use conveyor_runtime::{Runtime, TaskKey};
use conveyor_store::{EventKind, TaskStatus};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{Caller, CommandError, Reason, resolve};

/// The state of a token task.
#[derive(Debug, Clone, Serialize)]
pub struct TokenState {
    pub task: u64,
    pub node: String,
    /// `waiting_for_code`, `exchanging`, `received`, `escalated`, `failed`.
    pub state: &'static str,
    /// The first 8 hex digits of SHA-1 of the access token: shows that it changed.
    pub fingerprint: Option<String>,
    /// When the next refresh is due (ms), while the token is held.
    pub next_refresh: Option<i64>,
    /// When a token was last received (ms).
    pub last_refresh: Option<i64>,
    pub reason: Reason,
}

/// The first 8 hex digits of SHA-1 of `secret`: tells tokens apart without showing one.
pub fn fingerprint(secret: &str) -> String {
    use sha1::Digest as _;
    let digest = sha1::Sha1::digest(secret.as_bytes());
    hex::encode(digest)[..8].to_string()
}

/// The token task `task` of `process`, in words.
pub fn token_state(
    runtime: &Runtime,
    caller: &Caller,
    process: &str,
    task: &str,
) -> Result<TokenState, CommandError> {
    resolve(runtime, caller, process)?;
    let (loaded, task) = runtime.find_task(process, &TaskKey(task.to_string()))?;
    let (token_key, code_key) = match &loaded.process.authorize {
        Some(a) => (a.token.as_str(), a.code.as_str()),
        None => ("access_token", "code"),
    };
    let node = loaded.process.nodes.get(&task.node);
    let token = text(&task.data, token_key);
    let escalated = node.is_some_and(|n| matches!(n.kind, NodeKind::Escalation { .. }));
    let last_refresh = runtime
        .store()
        .history(task.id)?
        .iter()
        .rev()
        .find(|e| {
            matches!(&e.kind, EventKind::ApiRequest { status: Some(s), .. } if (200..300).contains(s))
        })
        .map(|e| e.at);
    let state = if escalated {
        "escalated"
    } else if task.status == TaskStatus::Failed {
        "failed"
    } else if !token.is_empty() && task.status == TaskStatus::Waiting {
        "received"
    } else if text(&task.data, code_key).is_empty() {
        "waiting_for_code"
    } else {
        "exchanging"
    };
    Ok(TokenState {
        task: task.id,
        node: task.node.clone(),
        state,
        fingerprint: (!token.is_empty()).then(|| fingerprint(token)),
        next_refresh: (state == "received")
            .then(|| task.wake.map(|w| w.at))
            .flatten(),
        last_refresh,
        reason: Reason::of(&task.data),
    })
}

fn text<'a>(data: &'a Map<String, Value>, key: &str) -> &'a str {
    data.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// The code from `6dm7…` or from `https://app/?code=6dm7…&state=…`.
pub fn code_from(pasted: &str) -> Option<String> {
    let pasted = pasted.trim();
    if pasted.is_empty() {
        return None;
    }
    if let Some(start) = pasted.find("code=") {
        let rest = &pasted[start + 5..];
        let code: String = rest
            .chars()
            .take_while(|c| *c != '&' && *c != '#')
            .collect();
        return (!code.is_empty()).then_some(code);
    }
    pasted
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        .then(|| pasted.to_string())
}

#[cfg(test)]
mod tests {
    use super::{code_from, fingerprint};

    #[test]
    fn codes_from_pastes() {
        assert_eq!(code_from("6dm7bdbh\n").as_deref(), Some("6dm7bdbh"));
        assert_eq!(
            code_from("https://app.example/?code=abc123&state=x&domain=d").as_deref(),
            Some("abc123")
        );
        assert_eq!(code_from("  "), None);
        assert_eq!(code_from("not a code!"), None);
    }

    #[test]
    fn fingerprints_are_short_and_stable() {
        assert_eq!(fingerprint("abc"), "a9993e36");
    }
}
