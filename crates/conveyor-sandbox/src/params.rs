//! Request parameters the way the real services read them: from the query string, from
//! an `application/x-www-form-urlencoded` body or from a JSON body, merged into one map.

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use serde_json::{Map, Value};

/// Named request parameters. Later sources override earlier ones.
#[derive(Debug, Default, Clone)]
pub(crate) struct Params(Map<String, Value>);

/// The body claimed to be JSON (or looked like it) but did not parse as an object.
#[derive(Debug)]
pub(crate) struct BadJson;

impl Params {
    /// Parameters of a query string (`None` = no query string).
    pub(crate) fn from_query(query: Option<&str>) -> Params {
        let mut params = Params::default();
        if let Some(query) = query {
            params.add_form(query.as_bytes());
        }
        params
    }

    /// Adds the parameters of a request body: JSON when the content type says so (or,
    /// with no usable content type, when the body starts with `{`), otherwise form
    /// fields. An empty body adds nothing.
    pub(crate) fn add_body(&mut self, headers: &HeaderMap, body: &[u8]) -> Result<(), BadJson> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let looks_json = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        let is_form = content_type.starts_with("application/x-www-form-urlencoded");
        if content_type.contains("json") || (!is_form && looks_json) {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(map)) => self.0.extend(map),
                _ => return Err(BadJson),
            }
        } else {
            self.add_form(body);
        }
        Ok(())
    }

    fn add_form(&mut self, text: &[u8]) {
        for (key, value) in form_decode(text) {
            self.0.insert(key, Value::String(value));
        }
    }

    /// A parameter as text: strings as they are, numbers and booleans written out;
    /// `null`, arrays and objects are `None`.
    pub(crate) fn text(&self, key: &str) -> Option<String> {
        match self.0.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// A parameter as text, `None` when absent or empty.
    pub(crate) fn non_empty(&self, key: &str) -> Option<String> {
        self.text(key).filter(|s| !s.is_empty())
    }

    /// A parameter as it came (JSON value).
    pub(crate) fn value(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// All parameters as a JSON object (what gets recorded).
    pub(crate) fn to_json(&self) -> Value {
        Value::Object(self.0.clone())
    }
}

/// Decodes `a=1&b=x+y%21` into pairs. Malformed escapes are kept as written.
pub(crate) fn form_decode(text: &[u8]) -> Vec<(String, String)> {
    text.split(|b| *b == b'&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (key, value) = match part.iter().position(|b| *b == b'=') {
                Some(i) => (&part[..i], &part[i + 1..]),
                None => (part, &b""[..]),
            };
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let byte = raw[i];
        if byte == b'+' {
            out.push(b' ');
        } else if byte == b'%'
            && let (Some(hi), Some(lo)) = (
                raw.get(i + 1).and_then(|b| hex_value(*b)),
                raw.get(i + 2).and_then(|b| hex_value(*b)),
            )
        {
            out.push(hi * 16 + lo);
            i += 2;
        } else {
            out.push(byte);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(byte: u8) -> Option<u8> {
    char::from(byte)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Encodes one query-string value: everything but `A-Za-z0-9-._~` as `%XX`.
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `user` and `password` of an `Authorization: Basic …` header.
pub(crate) fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The credentials of an `Authorization: {scheme} {credentials}` header, when the
/// scheme matches (case-insensitively).
pub(crate) fn auth_scheme(headers: &HeaderMap, scheme: &str) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (found, rest) = value.trim().split_once(' ')?;
    found
        .eq_ignore_ascii_case(scheme)
        .then(|| rest.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_forms() {
        let pairs = form_decode(b"a=1&b=x+y%21&c&d=%zz&e=%C3%A9");
        assert_eq!(
            pairs,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y!".into()),
                ("c".into(), "".into()),
                ("d".into(), "%zz".into()),
                ("e".into(), "é".into()),
            ]
        );
    }

    #[test]
    fn encodes_values() {
        assert_eq!(percent_encode("a b&c=é"), "a%20b%26c%3D%C3%A9");
    }
}
