//! Secrets: task keys a process marks secret (its `secrets:` list and params with
//! `secret: true`) are masked as `***` wherever a task is shown, and their values are cut
//! out of any text that is written to history or logs.

use conveyor_model::Process;
use serde_json::{Map, Value};

pub const MASK: &str = "***";

/// The task's data with secret keys masked: those its process declares, and
/// `secret_keys`, the task's own (`TaskRecord::secret_keys`).
pub fn mask_data(
    process: &Process,
    secret_keys: &[String],
    data: &Map<String, Value>,
) -> Map<String, Value> {
    data.iter()
        .map(|(k, v)| {
            if is_secret(process, secret_keys, k) {
                (k.clone(), Value::String(MASK.into()))
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect()
}

/// Whether `key` of a task is secret: declared so by its process, or made so by what
/// the task read.
pub(crate) fn is_secret(process: &Process, secret_keys: &[String], key: &str) -> bool {
    process.is_secret(key) || secret_keys.iter().any(|k| k == key)
}

/// The task keys a process definition marks secret (its `secrets:` list and params with
/// `secret: true`): the policy of `conveyor_store::SealedStore`. A definition that does
/// not check has none (no task of it can run).
pub fn declared_secret_keys(definition: &str) -> Vec<String> {
    let Some(process) = conveyor_model::check("process", definition).process else {
        return Vec::new();
    };
    let mut keys = process.secrets.clone();
    for (name, param) in &process.params {
        if param.secret && !keys.contains(name) {
            keys.push(name.clone());
        }
    }
    keys
}

/// The values of the task's secret keys, as text (empty values are skipped).
pub(crate) fn secret_values(
    process: &Process,
    secret_keys: &[String],
    data: &Map<String, Value>,
    out: &mut Vec<String>,
) {
    for (key, value) in data {
        if is_secret(process, secret_keys, key) {
            collect(value, out);
        }
    }
}

/// `value` with every secret cut out of its texts (keys and values), for what is kept
/// of a response body.
pub(crate) fn mask_value(value: &Value, secrets: &[String]) -> Value {
    match value {
        Value::String(s) => Value::String(mask_text(s, secrets)),
        Value::Array(items) => Value::Array(items.iter().map(|v| mask_value(v, secrets)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (mask_text(k, secrets), mask_value(v, secrets)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// [`mask_value`] of a value the caller gives up: with no secrets to cut (the usual
/// case) it is given back as it is, not copied.
pub(crate) fn mask_owned(value: Value, secrets: &[String]) -> Value {
    if secrets.is_empty() {
        return value;
    }
    mask_value(&value, secrets)
}

/// Whether `value` holds any of `secrets` in a text.
pub(crate) fn contains_secret(value: &Value, secrets: &[String]) -> bool {
    match value {
        Value::String(s) => secrets
            .iter()
            .any(|secret| secret.len() >= 3 && s.contains(secret.as_str())),
        Value::Number(n) => {
            let text = n.to_string();
            secrets.contains(&text)
        }
        Value::Array(items) => items.iter().any(|v| contains_secret(v, secrets)),
        Value::Object(map) => map.values().any(|v| contains_secret(v, secrets)),
        _ => false,
    }
}

pub(crate) fn collect(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) if !s.is_empty() => out.push(s.clone()),
        Value::Number(n) => out.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect(v, out)),
        _ => {}
    }
}

/// `text` with every occurrence of a secret replaced by `***`. Longer secrets first, so
/// that a secret containing another is cut whole.
pub(crate) fn mask_text(text: &str, secrets: &[String]) -> String {
    let mut sorted: Vec<&String> = secrets.iter().filter(|s| maskable(s)).collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_string();
    for secret in sorted {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), MASK);
        }
        // Secrets also travel URL-encoded in query strings.
        let encoded: String = url_encode(secret);
        if encoded != *secret && out.contains(&encoded) {
            out = out.replace(&encoded, MASK);
        }
    }
    out
}

/// [`mask_text`] in place: `text` is left as it is (not copied) when there is no
/// secret to look for, as in most steps.
pub(crate) fn mask_in_place(text: &mut String, secrets: &[String]) {
    if any_secret(secrets) {
        *text = mask_text(text, secrets);
    }
}

/// Whether [`mask_text`] has any secret to look for.
pub(crate) fn any_secret(secrets: &[String]) -> bool {
    secrets.iter().any(|s| maskable(s))
}

/// Secrets shorter than 3 bytes are never cut: they would cut ordinary text apart.
fn maskable(secret: &str) -> bool {
    secret.len() >= 3
}

fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_secret_keys_are_the_secrets_list_and_secret_params() {
        let keys = declared_secret_keys(include_str!("../../../processes/bitrix_oauth.yaml"));
        assert!(keys.contains(&"client_secret".to_string()), "{keys:?}");
        assert!(declared_secret_keys("not: [a process").is_empty());
    }

    #[test]
    fn masks_plain_and_encoded_secrets() {
        let secrets = vec!["s3cr3t/+x".to_string(), "ab".to_string()];
        assert_eq!(
            mask_text("a=s3cr3t/+x&b=s3cr3t%2F%2Bx&c=ab", &secrets),
            "a=***&b=***&c=ab"
        );
    }
}
