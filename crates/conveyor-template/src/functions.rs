//! The `$.` functions.

use base64::Engine as _;
use md5::Digest as _;
use serde_json::Value;

use crate::render::{Env, RenderError, write_value};
use crate::{Template, math};

/// A `$.name(…)` function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Math,
    Unixtime,
    Date,
    Random,
    Sha1Hex,
    Md5Hex,
    Base64Encode,
    ToNumber,
    ToString,
    ToObject,
    ToArray,
}

/// Numbers above this lose precision in JSON clients (Corezoid's limit too).
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_992.0;

impl Function {
    pub const ALL: [Function; 11] = [
        Function::Math,
        Function::Unixtime,
        Function::Date,
        Function::Random,
        Function::Sha1Hex,
        Function::Md5Hex,
        Function::Base64Encode,
        Function::ToNumber,
        Function::ToString,
        Function::ToObject,
        Function::ToArray,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Function::Math => "math",
            Function::Unixtime => "unixtime",
            Function::Date => "date",
            Function::Random => "random",
            Function::Sha1Hex => "sha1_hex",
            Function::Md5Hex => "md5_hex",
            Function::Base64Encode => "base64_encode",
            Function::ToNumber => "to_number",
            Function::ToString => "to_string",
            Function::ToObject => "to_object",
            Function::ToArray => "to_array",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Function> {
        Function::ALL.into_iter().find(|f| f.name() == name)
    }

    fn fail(self, reason: impl Into<String>) -> RenderError {
        RenderError::Function {
            function: self.name(),
            reason: reason.into(),
        }
    }

    pub(crate) fn call(
        self,
        argument: &Template,
        data: &Value,
        env: &dyn Env,
    ) -> Result<Value, RenderError> {
        match self {
            Function::Math => {
                let text = argument.render_text(data, env)?;
                let result = math::eval(&text).map_err(|reason| self.fail(reason))?;
                number(result).ok_or_else(|| self.fail("result is not a finite number"))
            }
            Function::Unixtime => {
                let now = env.now_millis();
                match argument.render_text(data, env)?.trim() {
                    "" | "s" => Ok(Value::from(now.div_euclid(1000))),
                    "ms" => Ok(Value::from(now)),
                    other => Err(self.fail(format!(
                        "unknown unit `{other}` (use `$.unixtime()` or `$.unixtime(ms)`)"
                    ))),
                }
            }
            Function::Date => {
                let format = argument.render_text(data, env)?;
                let format = if format.trim().is_empty() {
                    "%Y-%m-%dT%H:%M:%SZ".to_string()
                } else {
                    format
                };
                format_date(env.now_millis(), &format).map_err(|reason| self.fail(reason))
            }
            Function::Random => {
                let text = argument.render_text(data, env)?;
                let bound = text
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        self.fail(format!("expected a positive whole number, got `{text}`"))
                    })?;
                Ok(Value::from(env.random_below(bound)))
            }
            Function::Sha1Hex => {
                let text = argument.render_text(data, env)?;
                Ok(Value::String(hex::encode(sha1::Sha1::digest(
                    text.as_bytes(),
                ))))
            }
            Function::Md5Hex => {
                let text = argument.render_text(data, env)?;
                Ok(Value::String(hex::encode(md5::Md5::digest(
                    text.as_bytes(),
                ))))
            }
            Function::Base64Encode => {
                let text = argument.render_text(data, env)?;
                Ok(Value::String(
                    base64::engine::general_purpose::STANDARD.encode(text.as_bytes()),
                ))
            }
            Function::ToNumber => match argument.render(data, env)? {
                Value::Number(n) => Ok(Value::Number(n)),
                Value::String(text) => text
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .and_then(number)
                    .ok_or_else(|| self.fail(format!("`{text}` is not a number"))),
                other => Err(self.fail(format!("cannot make a number of {}", kind(&other)))),
            },
            Function::ToString => {
                let value = argument.render(data, env)?;
                let mut text = String::new();
                write_value(&mut text, &value);
                Ok(Value::String(text))
            }
            Function::ToObject => match argument.render(data, env)? {
                Value::Object(map) => Ok(Value::Object(map)),
                Value::String(text) => match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(map)) => Ok(Value::Object(map)),
                    _ => Err(self.fail(format!("`{}` is not a JSON object", shorten(&text)))),
                },
                other => Err(self.fail(format!("cannot make an object of {}", kind(&other)))),
            },
            Function::ToArray => match argument.render(data, env)? {
                Value::Array(items) => Ok(Value::Array(items)),
                Value::String(text) => match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Array(items)) => Ok(Value::Array(items)),
                    _ => Err(self.fail(format!("`{}` is not a JSON array", shorten(&text)))),
                },
                other => Err(self.fail(format!("cannot make an array of {}", kind(&other)))),
            },
        }
    }
}

/// A JSON number for `value`: an integer when it is whole and within 2^53.
pub(crate) fn number(value: f64) -> Option<Value> {
    if !value.is_finite() {
        return None;
    }
    if value.fract() == 0.0 && value.abs() <= MAX_SAFE_INTEGER {
        // Exact: the value is whole and within i64's range.
        return Some(Value::from(value as i64));
    }
    serde_json::Number::from_f64(value).map(Value::Number)
}

fn format_date(now_millis: i64, format: &str) -> Result<Value, String> {
    use chrono::format::{Item, StrftimeItems};
    let items: Vec<Item<'_>> = StrftimeItems::new(format).collect();
    if items.iter().any(|item| matches!(item, Item::Error)) {
        return Err(format!("bad date format `{format}`"));
    }
    let time = chrono::DateTime::from_timestamp_millis(now_millis)
        .ok_or_else(|| "the clock is out of range".to_string())?;
    Ok(Value::String(
        time.format_with_items(items.into_iter()).to_string(),
    ))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn shorten(text: &str) -> String {
    if text.chars().count() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text.to_string()
    }
}
