//! Templates inside structured values: the `body`, `query`, `data` and `set` maps of
//! process files, where every string leaf is a template and everything else is kept.

use indexmap::IndexMap;
use serde_json::Value;

use crate::{Env, ParseError, RenderError, Template};

/// A JSON value whose strings are templates.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueTemplate {
    /// `null`, booleans and numbers: copied as they are.
    Plain(Value),
    Template(Template),
    Array(Vec<ValueTemplate>),
    Object(IndexMap<String, ValueTemplate>),
}

/// A string leaf that did not parse: where it is (a JSON pointer such as `/auth/token`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at `{pointer}`: {error}")]
pub struct ValueParseError {
    pub pointer: String,
    pub error: ParseError,
}

impl ValueTemplate {
    /// Parses every string in `value` as a template; reports every string that fails.
    pub fn parse(value: &Value) -> Result<ValueTemplate, Vec<ValueParseError>> {
        let mut errors = Vec::new();
        let parsed = parse_at(value, &mut String::new(), &mut errors);
        if errors.is_empty() {
            Ok(parsed)
        } else {
            Err(errors)
        }
    }

    /// Renders every template; an object's keys are kept in order.
    pub fn render(&self, data: &Value, env: &dyn Env) -> Result<Value, RenderError> {
        Ok(match self {
            ValueTemplate::Plain(value) => value.clone(),
            ValueTemplate::Template(template) => template.render(data, env)?,
            ValueTemplate::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| item.render(data, env))
                    .collect::<Result<_, _>>()?,
            ),
            ValueTemplate::Object(map) => {
                let mut out = serde_json::Map::with_capacity(map.len());
                for (key, value) in map {
                    out.insert(key.clone(), value.render(data, env)?);
                }
                Value::Object(out)
            }
        })
    }

    /// Calls `visit` on every template inside.
    pub fn visit_templates<'a>(&'a self, visit: &mut dyn FnMut(&'a Template)) {
        match self {
            ValueTemplate::Plain(_) => {}
            ValueTemplate::Template(template) => visit(template),
            ValueTemplate::Array(items) => items.iter().for_each(|i| i.visit_templates(visit)),
            ValueTemplate::Object(map) => map.values().for_each(|v| v.visit_templates(visit)),
        }
    }
}

fn parse_at(
    value: &Value,
    pointer: &mut String,
    errors: &mut Vec<ValueParseError>,
) -> ValueTemplate {
    match value {
        Value::String(text) => match Template::parse(text) {
            Ok(template) => ValueTemplate::Template(template),
            Err(error) => {
                errors.push(ValueParseError {
                    pointer: if pointer.is_empty() {
                        "/".into()
                    } else {
                        pointer.clone()
                    },
                    error,
                });
                ValueTemplate::Plain(Value::Null)
            }
        },
        Value::Array(items) => ValueTemplate::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let len = pointer.len();
                    pointer.push_str(&format!("/{i}"));
                    let parsed = parse_at(item, pointer, errors);
                    pointer.truncate(len);
                    parsed
                })
                .collect(),
        ),
        Value::Object(map) => ValueTemplate::Object(
            map.iter()
                .map(|(key, item)| {
                    let len = pointer.len();
                    pointer.push('/');
                    pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
                    let parsed = parse_at(item, pointer, errors);
                    pointer.truncate(len);
                    (key.clone(), parsed)
                })
                .collect(),
        ),
        other => ValueTemplate::Plain(other.clone()),
    }
}
