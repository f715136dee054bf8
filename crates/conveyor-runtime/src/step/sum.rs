//! `sum`: adds numbers to keys of a holder task, atomically (Corezoid's Sum).
//!
//! The numbers travel as an `Add` message in the holder's inbox; only the holder's own
//! step applies them, one message after another, so ten parallel `+1`s give 10. (A
//! `modify_task` that writes `{{conv[…].ref[…].n}} + 1` reads and writes in two steps
//! and loses updates when tasks race.) A holder that does not exist yet is created
//! with the numbers as its data; two steps that race to create it are settled by the
//! ref: the loser's step runs again and finds the holder, and a step whose copy finds
//! the ref taken since its own look adds to the holder that took it.

use super::*;

impl Step<'_> {
    /// Runs a task through this node (see `Step::advance`).
    pub(super) fn sum(&mut self, node: &Sum) -> Result<()> {
        let Sum {
            process,
            reference,
            add,
            next,
            ..
        } = node;
        match self.send_sums(process, reference, add) {
            Ok(()) => self.goto(next, "next"),
            Err((tag, message)) => self.fail("sum", "software", tag, message, None),
        }
        Ok(())
    }

    fn send_sums(
        &mut self,
        process: &Template,
        reference: &Template,
        add: &ValueTemplate,
    ) -> std::result::Result<(), (&'static str, String)> {
        let target = self
            .render_text(process)
            .map_err(|m| ("sum_bind_error", m))?;
        let loaded = self.resolve_other(&target, "sum_bind_error")?;
        if loaded.record.id == self.task.process {
            return Err((
                "sum_bind_error",
                "the holder of the sums must be in another process (it would run this one)".into(),
            ));
        }
        let reference = self
            .render_text(reference)
            .map_err(|m| ("sum_bind_error", m))?;
        let Value::Object(rendered) = self.render_value(add).map_err(|m| ("sum_bind_error", m))?
        else {
            return Err(("sum_bind_error", "`add` is not a mapping".into()));
        };
        let mut numbers = Map::new();
        for (key, value) in rendered {
            let number = super::set_param::cast_value(value, Cast::Number)
                .map_err(|m| ("sum_bind_error", format!("`{key}`: {m}")))?;
            numbers.insert(key, number);
        }
        let holder = self
            .rt
            .store
            .task_by_ref(loaded.record.id, &reference)
            .map_err(|e| ("sum_error", e.to_string()))?;
        if let Some(task) = holder {
            return self.send_add(task.id, numbers);
        }
        let copy = TaskCopy {
            process: Template::literal(&target),
            reference: Some(Template::literal(&reference)),
            data: Some(ValueTemplate::Object(
                numbers
                    .iter()
                    .map(|(k, v)| (k.clone(), ValueTemplate::Plain(v.clone())))
                    .collect(),
            )),
        };
        match self.copy(&copy, None) {
            Ok(_) => Ok(()),
            // Another step created the holder between the look above and the copy's own
            // (its commit landed in between): add to that one, as if it had been found.
            Err(("not_unical_ref", message)) => {
                match self
                    .rt
                    .store
                    .task_by_ref(loaded.record.id, &reference)
                    .map_err(|e| ("sum_error", e.to_string()))?
                {
                    Some(task) => self.send_add(task.id, numbers),
                    None => Err(("sum_error", message)),
                }
            }
            Err(other) => Err(other),
        }
    }

    /// Leaves `numbers` in the holder's inbox; its own step adds them.
    fn send_add(
        &mut self,
        holder: u64,
        numbers: Map<String, Value>,
    ) -> std::result::Result<(), (&'static str, String)> {
        let seq = self
            .rt
            .store
            .next_task_id()
            .map_err(|e| ("sum_error", e.to_string()))?;
        self.batch.push(Op::Inbox {
            task: holder,
            seq,
            message: InboxMessage::Add {
                data: numbers,
                source: format!("process {} task {}", self.task.process, self.task.id),
            },
        });
        self.batch.push(Op::SetReady(holder));
        self.schedule.push(holder);
        Ok(())
    }

    /// An `Add` message reached this (holder) task: each number is added to its key.
    /// A key that holds something other than a number is left as it is, with an error
    /// in the history.
    pub(super) fn add_sums(&mut self, data: Map<String, Value>, source: String) {
        let mut keys = Vec::new();
        for (key, delta) in data {
            let current = self.task.data.get(&key).cloned().unwrap_or(Value::from(0));
            match add_numbers(&current, &delta) {
                Some(sum) => {
                    self.task.data.insert(key.clone(), sum);
                    keys.push(key);
                }
                None => self.event(EventKind::Error {
                    tag: "sum_refused".into(),
                    description: format!(
                        "{source} added {delta} to `{key}`, which holds {current}, not a number; left as it was"
                    ),
                }),
            }
        }
        if !keys.is_empty() {
            self.event(EventKind::Modified { keys, source });
        }
    }
}

/// `a + b`: whole numbers stay whole (unless they overflow), others are floats.
fn add_numbers(a: &Value, b: &Value) -> Option<Value> {
    let a = match a {
        Value::Null => &Value::from(0),
        other => other,
    };
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64())
        && let Some(sum) = x.checked_add(y)
    {
        return Some(Value::from(sum));
    }
    let sum = a.as_f64()? + b.as_f64()?;
    serde_json::Number::from_f64(sum).map(Value::Number)
}
