//! Task data on the command line, HTTPie style: `key=value` is a string, `key:=json` a
//! typed JSON value. No guessing: `code=123456` stays the string "123456".

use serde_json::{Map, Value};

/// A command-line mistake: reported with exit code 2, naming the argument.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Reads `key=value` / `key:=json` pairs, on top of an optional `--from-json` object.
pub fn task_data(
    pairs: &[String],
    from_json: Option<&str>,
) -> Result<Map<String, Value>, UsageError> {
    let mut data = match from_json {
        None => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => {
                return Err(UsageError(
                    "--from-json: expected a JSON object `{…}`".into(),
                ));
            }
            Err(e) => return Err(UsageError(format!("--from-json: not valid JSON: {e}"))),
        },
    };
    for pair in pairs {
        let (key, value) = parse_pair(pair)?;
        data.insert(key, value);
    }
    Ok(data)
}

fn parse_pair(pair: &str) -> Result<(String, Value), UsageError> {
    let eq = pair.find('=').ok_or_else(|| {
        UsageError(format!(
            "`{pair}`: expected `key=value` (a string) or `key:=json` (a typed value)"
        ))
    })?;
    let (key, typed) = match pair[..eq].strip_suffix(':') {
        Some(key) => (key, true),
        None => (&pair[..eq], false),
    };
    if key.is_empty() {
        return Err(UsageError(format!("`{pair}`: the key is empty")));
    }
    let raw = &pair[eq + 1..];
    let value = if typed {
        serde_json::from_str(raw)
            .map_err(|e| UsageError(format!("`{pair}`: the value after `:=` is not JSON: {e}")))?
    } else {
        Value::String(raw.to_string())
    };
    Ok((key.to_string(), value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_and_typed_values() {
        let data = task_data(
            &[
                "code=123456".into(),
                "n:=5".into(),
                "list:=[1,2]".into(),
                "eq=a=b".into(),
            ],
            Some(r#"{"x": true}"#),
        )
        .unwrap();
        assert_eq!(
            Value::Object(data),
            json!({"x": true, "code": "123456", "n": 5, "list": [1, 2], "eq": "a=b"})
        );
    }

    #[test]
    fn mistakes_name_the_argument() {
        assert!(
            task_data(&["novalue".into()], None)
                .unwrap_err()
                .0
                .contains("`novalue`")
        );
        assert!(
            task_data(&["=x".into()], None)
                .unwrap_err()
                .0
                .contains("key is empty")
        );
        assert!(
            task_data(&["n:=nope".into()], None)
                .unwrap_err()
                .0
                .contains("not JSON")
        );
        assert!(
            task_data(&[], Some("[1]"))
                .unwrap_err()
                .0
                .contains("--from-json")
        );
    }
}
