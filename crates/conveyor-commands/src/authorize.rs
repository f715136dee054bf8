//! The authorize page's address of a process that declares an `authorize:` link: its
//! `{{param}}` placeholders filled, URL-encoded, from the values given (a form, the CLI's
//! flags), else the token task's data, else the process's settings, else the params'
//! defaults. One function for `conveyor bitrix authorize` and the dashboard's *Get the
//! code*, so both open the address the process declares.

use conveyor_model::Authorize;
use serde_json::{Map, Value};

use crate::CommandError;

/// `authorize.url` filled from `value_of` (each value URL-encoded). `other_page`, when
/// given, replaces everything before the `?` (another portal's authorize page for the
/// same application); the query stays the declared one. `process` names the process in
/// the refusal when a value is missing.
pub fn authorize_url(
    process: &str,
    authorize: &Authorize,
    value_of: impl Fn(&str) -> Option<String>,
    other_page: Option<&str>,
) -> Result<String, CommandError> {
    let mut url = String::with_capacity(authorize.url.len() + 32);
    let mut rest = authorize.url.as_str();
    // The model checked the address: every `{{` is closed and names a declared param.
    while let Some(open) = rest.find("{{") {
        url.push_str(&rest[..open]);
        let Some(close) = rest[open + 2..].find("}}") else {
            url.push_str(&rest[open..]);
            rest = "";
            break;
        };
        let name = rest[open + 2..open + 2 + close].trim();
        match value_of(name).filter(|v| !v.is_empty()) {
            Some(value) => url.push_str(&encode_component(&value)),
            None => {
                return Err(CommandError::AuthorizeNeeds {
                    process: process.to_string(),
                    param: name.to_string(),
                });
            }
        }
        rest = &rest[open + 2 + close + 2..];
    }
    url.push_str(rest);
    if let Some(page) = other_page.map(str::trim).filter(|p| !p.is_empty()) {
        let (before, query) = match url.find('?') {
            Some(at) => url.split_at(at),
            None => (url.as_str(), ""),
        };
        let slash = if query.is_empty() || !before.ends_with('/') {
            ""
        } else {
            "/"
        };
        url = format!("{}{slash}{query}", page.trim_end_matches('/'));
    }
    Ok(url)
}

/// The value `name` takes in the authorize address: `given`, else the task's data, else
/// the process's settings, else the param's default. Strings as they are, other JSON
/// values as JSON.
pub(crate) fn value_from(
    name: &str,
    sources: &[&Map<String, Value>],
    default: Option<&Value>,
) -> Option<String> {
    sources
        .iter()
        .find_map(|map| map.get(name))
        .or(default)
        .and_then(|v| match v {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        })
}

/// Percent-encodes as JavaScript's `encodeURIComponent` does: all but letters, digits
/// and `-_.!~*'()`.
fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(url: &str) -> Authorize {
        Authorize {
            url: url.into(),
            uses: vec![],
            code: "code".into(),
            token: "access_token".into(),
            code_lifetime: None,
        }
    }

    #[test]
    fn placeholders_are_filled_encoded_and_another_page_keeps_the_query() {
        let a = declared("https://{{portal}}.example/oauth/authorize/?client_id={{ id }}&x=1");
        let value = |n: &str| match n {
            "portal" => Some("acme".to_string()),
            "id" => Some("a b&c/é".to_string()),
            _ => None,
        };
        assert_eq!(
            authorize_url("@p", &a, value, None).expect("filled"),
            "https://acme.example/oauth/authorize/?client_id=a%20b%26c%2F%C3%A9&x=1"
        );
        assert_eq!(
            authorize_url("@p", &a, value, Some("http://127.0.0.1:9/oauth/authorize/"))
                .expect("filled"),
            "http://127.0.0.1:9/oauth/authorize/?client_id=a%20b%26c%2F%C3%A9&x=1"
        );
        let e = authorize_url("@p", &a, |_| None, None).expect_err("missing");
        assert_eq!(
            e.to_string(),
            "the authorize link of process @p uses `portal`: give its value"
        );
    }
}
