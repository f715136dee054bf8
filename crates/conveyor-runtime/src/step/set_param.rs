//! `set_param`: keys set from templates and handlebars bodies, with casts.

use super::*;

impl Step<'_> {
    /// Runs a task through this node (see `Step::advance`).
    pub(super) fn set_param(&mut self, node: &SetParam) -> Result<()> {
        let SetParam {
            set, render, next, ..
        } = node;
        let mut values = Vec::with_capacity(set.len());
        let mut tainted = Vec::new();
        for (key, value) in set {
            let before = self.revealed.len();
            let rendered = match self.render_value(&value.value) {
                Ok(v) => v,
                Err(message) => {
                    self.fail(
                        "set_param",
                        "software",
                        "set_param_error",
                        format!("`{key}`: {message}"),
                        None,
                    );
                    return Ok(());
                }
            };
            let cast = match value.cast {
                Some(cast) => match cast_value(rendered, cast) {
                    Ok(v) => v,
                    Err(message) => {
                        self.fail(
                            "set_param",
                            "software",
                            "set_param_bad_type",
                            format!("`{key}`: {message}"),
                            None,
                        );
                        return Ok(());
                    }
                },
                None => rendered,
            };
            if mask::contains_secret(&cast, &self.revealed[before..]) {
                tainted.push(key.clone());
            }
            values.push((key.clone(), cast));
        }
        // Handlebars message bodies: over the task's data as it is before this
        // node (as `set` sees it), with `with`'s values rendered first.
        for (key, value) in render {
            let before = self.revealed.len();
            let mut context = self.task.data.clone();
            for (name, template) in &value.with {
                match self.render_value(template) {
                    Ok(v) => {
                        context.insert(name.clone(), v);
                    }
                    Err(message) => {
                        self.fail(
                            "set_param",
                            "software",
                            "set_param_error",
                            format!("`{key}`: `with.{name}`: {message}"),
                            None,
                        );
                        return Ok(());
                    }
                }
            }
            let rendered = match value.template.render(Value::Object(context)) {
                Ok(text) => Value::String(text),
                Err(e) => {
                    self.fail(
                        "set_param",
                        "software",
                        "set_param_error",
                        format!("`{key}`: {e}"),
                        None,
                    );
                    return Ok(());
                }
            };
            let cast = match value.cast {
                Some(cast) => match cast_value(rendered, cast) {
                    Ok(v) => v,
                    Err(message) => {
                        self.fail(
                            "set_param",
                            "software",
                            "set_param_bad_type",
                            format!("`{key}`: {message}"),
                            None,
                        );
                        return Ok(());
                    }
                },
                None => rendered,
            };
            if mask::contains_secret(&cast, &self.revealed[before..]) {
                tainted.push(key.clone());
            }
            values.push((key.clone(), cast));
        }
        self.taint(tainted);
        // A set that would make the task larger than the limit fails instead.
        let added: usize = values
            .iter()
            .map(|(k, v)| k.len().saturating_add(crate::input::json_size(v)))
            .fold(0usize, usize::saturating_add);
        let size = crate::input::json_size(&self.task.data).saturating_add(added);
        if size > crate::ops::MAX_TASK_BYTES {
            self.fail(
                "set_param",
                "software",
                "task_size_overflow_limit",
                format!(
                    "the task would be about {size} bytes; the limit is {}",
                    crate::ops::MAX_TASK_BYTES
                ),
                None,
            );
            return Ok(());
        }
        self.task.data.extend(values);
        self.goto(next, "next");
        Ok(())
    }
}

/// Converts a rendered value to the type a `set_param` asks for.
pub(super) fn cast_value(value: Value, cast: Cast) -> std::result::Result<Value, String> {
    match (cast, value) {
        (Cast::String, Value::String(s)) => Ok(Value::String(s)),
        (Cast::String, other) => Ok(Value::String(http::text_of(&other))),
        (Cast::Number, Value::Number(n)) => Ok(Value::Number(n)),
        (Cast::Number, Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(|f| {
                if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 {
                    Some(Value::from(f as i64))
                } else {
                    serde_json::Number::from_f64(f).map(Value::Number)
                }
            })
            .ok_or_else(|| format!("`{s}` is not a number")),
        (Cast::Boolean, Value::Bool(b)) => Ok(Value::Bool(b)),
        (Cast::Boolean, Value::String(s)) => match s.trim() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            other => Err(format!("`{other}` is not a boolean")),
        },
        (Cast::Object, v @ Value::Object(_)) | (Cast::Array, v @ Value::Array(_)) => Ok(v),
        (Cast::Object | Cast::Array, Value::String(s)) => match serde_json::from_str::<Value>(&s) {
            Ok(v @ Value::Object(_)) if cast == Cast::Object => Ok(v),
            Ok(v @ Value::Array(_)) if cast == Cast::Array => Ok(v),
            _ => Err(format!(
                "`{s}` is not a JSON {}",
                if cast == Cast::Object {
                    "object"
                } else {
                    "array"
                }
            )),
        },
        (cast, other) => {
            let name = match cast {
                Cast::String => "a string",
                Cast::Number => "a number",
                Cast::Boolean => "a boolean",
                Cast::Object => "an object",
                Cast::Array => "an array",
            };
            Err(format!("cannot make {name} of {other}"))
        }
    }
}
