//! `copy_task`: creates a task in another process (also used by escalations and calls).

use super::*;

impl Step<'_> {
    /// Runs a task through this node (see `Step::advance`).
    pub(super) fn copy_task(&mut self, node: &CopyTask) -> Result<()> {
        match self.copy(&node.copy, None) {
            Ok(_) => self.goto(&node.next, "next"),
            Err((tag, message)) => self.fail("copy_task", "software", tag, message, None),
        }
        Ok(())
    }

    /// Creates a task in another process (copy_task, escalation copies, call_process).
    /// Returns the target process id.
    pub(super) fn copy(
        &mut self,
        copy: &TaskCopy,
        caller: Option<Caller>,
    ) -> std::result::Result<u64, (&'static str, String)> {
        let target = self
            .render_text(&copy.process)
            .map_err(|m| ("copy_task_bind_error", m))?;
        let loaded = self.resolve_other(&target, "copy_task_bind_error")?;
        let reference = match &copy.reference {
            Some(r) => Some(
                self.render_text(r)
                    .map_err(|m| ("copy_task_bind_error", m))?,
            ),
            None => None,
        };
        let before = self.revealed.len();
        let data = match &copy.data {
            Some(d) => match self
                .render_value(d)
                .map_err(|m| ("copy_task_bind_error", m))?
            {
                Value::Object(map) => map,
                other => {
                    return Err((
                        "copy_task_bind_error",
                        format!("the data is not an object: {other}"),
                    ));
                }
            },
            None => self.task.data.clone(),
        };
        // What is secret here stays secret in the copy.
        let secret_keys: Vec<String> = data
            .iter()
            .filter(|(k, v)| match &copy.data {
                None => mask::is_secret(&self.loaded.process, &self.task.secret_keys, k),
                Some(_) => {
                    let mut secrets = self.revealed[before..].to_vec();
                    mask::secret_values(
                        &self.loaded.process,
                        &self.task.secret_keys,
                        &self.task.data,
                        &mut secrets,
                    );
                    mask::contains_secret(v, &secrets)
                }
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut batch = Batch::default();
        let task = self
            .rt
            .new_task(
                &loaded,
                reference.as_deref(),
                data,
                caller,
                self.now,
                &mut batch,
            )
            .map(|mut task| {
                task.secret_keys = secret_keys;
                task
            })
            .map_err(|e| match e {
                e @ RuntimeError::DuplicateRef { .. } => ("not_unical_ref", e.to_string()),
                other => ("copy_task_refused", other.to_string()),
            })?;
        self.batch.ops.extend(batch.ops);
        self.schedule.push(task.id);
        self.created += 1;
        self.event(EventKind::Copied {
            process: loaded.record.id,
            task: task.id,
        });
        Ok(loaded.record.id)
    }

    pub(super) fn resolve_other(
        &self,
        name: &str,
        bind_tag: &'static str,
    ) -> std::result::Result<Arc<LoadedProcess>, (&'static str, String)> {
        if ProcessId::parse(name).is_none() {
            return Err((bind_tag, format!("`{name}` is not a process id or @alias")));
        }
        self.rt
            .resolve(name)
            .map_err(|e| ("process_not_found", e.to_string()))
    }
}
