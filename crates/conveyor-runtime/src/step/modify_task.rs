//! `modify_task`: sends data to another process's task by ref.

use super::*;

impl Step<'_> {
    /// Runs a task through this node (see `Step::advance`).
    pub(super) fn modify_task(&mut self, node: &ModifyTask) -> Result<()> {
        let ModifyTask {
            process,
            reference,
            data,
            next,
            ..
        } = node;
        match self.modify_other(process, reference, data) {
            Ok(()) => self.goto(next, "next"),
            Err((tag, message)) => self.fail("modify_task", "software", tag, message, None),
        }
        Ok(())
    }

    pub(super) fn modify_other(
        &mut self,
        process: &Template,
        reference: &Template,
        data: &ValueTemplate,
    ) -> std::result::Result<(), (&'static str, String)> {
        let target = self
            .render_text(process)
            .map_err(|m| ("modify_task_bind_error", m))?;
        let loaded = self.resolve_other(&target, "modify_task_bind_error")?;
        let reference = self
            .render_text(reference)
            .map_err(|m| ("modify_task_bind_error", m))?;
        let data = match self
            .render_value(data)
            .map_err(|m| ("modify_task_bind_error", m))?
        {
            Value::Object(map) => map,
            other => {
                return Err((
                    "modify_task_bind_error",
                    format!("the data is not an object: {other}"),
                ));
            }
        };
        let task = self
            .rt
            .store
            .task_by_ref(loaded.record.id, &reference)
            .map_err(|e| ("modify_task_error", e.to_string()))?
            .ok_or_else(|| {
                (
                    "task_not_found",
                    format!("no task with ref `{reference}` in process {target}"),
                )
            })?;
        let seq = self
            .rt
            .store
            .next_task_id()
            .map_err(|e| ("modify_task_error", e.to_string()))?;
        self.batch.push(Op::Inbox {
            task: task.id,
            seq,
            message: InboxMessage::Modify {
                data,
                source: format!("process {} task {}", self.task.process, self.task.id),
            },
        });
        self.batch.push(Op::SetReady(task.id));
        self.schedule.push(task.id);
        Ok(())
    }
}
