//! `condition`: the first branch whose checks all hold, else `else`.

use super::*;

impl Step<'_> {
    /// Runs a task through this node (see `Step::advance`).
    pub(super) fn condition(&mut self, node: &Condition) -> Result<()> {
        let Condition {
            branches,
            otherwise,
            ..
        } = node;
        let mut target = None;
        'branches: for (i, branch) in branches.iter().enumerate() {
            for check in &branch.when {
                match self.check(check) {
                    Ok(true) => {}
                    Ok(false) => continue 'branches,
                    Err(message) => {
                        self.fail("condition", "software", "condition_error", message, None);
                        return Ok(());
                    }
                }
            }
            let label = branch
                .label
                .clone()
                .unwrap_or_else(|| format!("branch {}", i + 1));
            target = Some((branch.next.clone(), label));
            break;
        }
        let (target, via) = target.unwrap_or_else(|| (otherwise.to_string(), "else".into()));
        self.goto(&target, via);
        Ok(())
    }

    /// One check of a condition. The task's value is converted to `cast` first, as
    /// Corezoid casts it (`"5000"` with `cast: number` is 5000); a value that cannot be
    /// converted is an error of the node, not a silent `else`.
    pub(super) fn check(&mut self, check: &Check) -> std::result::Result<bool, String> {
        let data = Value::Object(std::mem::take(&mut self.task.data));
        let left = check.param.lookup(&data).cloned();
        if let Value::Object(map) = data {
            self.task.data = map;
        }
        let right = self.render(&check.value)?;
        let Some(left) = left else {
            // A missing param matches nothing (`not_eq ""` means "present and non-empty").
            return Ok(false);
        };
        let left = super::set_param::cast_value(left, check.cast)
            .map_err(|message| format!("param `{}`: {message}", check.param))?;
        let right_text = http::text_of(&right);
        Ok(match check.cast {
            Cast::String => {
                let Value::String(left) = &left else {
                    return Ok(false);
                };
                match check.op {
                    CompareOp::Eq => *left == right_text,
                    CompareOp::NotEq => *left != right_text,
                    CompareOp::More => left.as_str() > right_text.as_str(),
                    CompareOp::Less => left.as_str() < right_text.as_str(),
                    CompareOp::MoreOrEq => left.as_str() >= right_text.as_str(),
                    CompareOp::LessOrEq => left.as_str() <= right_text.as_str(),
                    CompareOp::Regexp => match &check.regex {
                        Some(regex) => regex.is_match(left),
                        None => conveyor_model::compile_regex(&right_text)?.is_match(left),
                    },
                }
            }
            Cast::Number => {
                let Some(left) = left.as_f64() else {
                    return Ok(false);
                };
                let right = match &right {
                    Value::Number(n) => n.as_f64(),
                    _ => right_text.trim().parse::<f64>().ok(),
                }
                .ok_or_else(|| format!("`{right_text}` is not a number"))?;
                match check.op {
                    CompareOp::Eq => left == right,
                    CompareOp::NotEq => left != right,
                    CompareOp::More => left > right,
                    CompareOp::Less => left < right,
                    CompareOp::MoreOrEq => left >= right,
                    CompareOp::LessOrEq => left <= right,
                    CompareOp::Regexp => false,
                }
            }
            Cast::Boolean => {
                let Value::Bool(left) = left else {
                    return Ok(false);
                };
                let right = match right_text.trim() {
                    "true" => true,
                    "false" => false,
                    other => return Err(format!("`{other}` is not a boolean")),
                };
                match check.op {
                    CompareOp::Eq => left == right,
                    CompareOp::NotEq => left != right,
                    _ => false,
                }
            }
            Cast::Object | Cast::Array => {
                let right: Value = match right {
                    Value::String(s) => {
                        serde_json::from_str(&s).map_err(|_| format!("`{s}` is not JSON"))?
                    }
                    other => other,
                };
                let same_kind = matches!(
                    (&left, check.cast),
                    (Value::Object(_), Cast::Object) | (Value::Array(_), Cast::Array)
                );
                match check.op {
                    CompareOp::Eq => same_kind && left == right,
                    CompareOp::NotEq => same_kind && left != right,
                    _ => false,
                }
            }
        })
    }
}
