//! `reply`: answers the task that called this process.

use super::*;

impl Step<'_> {
    /// Runs a task through this node (see `Step::advance`).
    pub(super) fn reply(&mut self, data: &ValueTemplate, error: bool, next: &str) -> Result<()> {
        let rendered = match self.render_value(data) {
            Ok(Value::Object(map)) => map,
            Ok(_) => Map::new(),
            Err(message) => {
                self.fail("reply", "software", "reply_error", message, None);
                return Ok(());
            }
        };
        if self.answer.is_none() && self.rt.answers.wanted(self.task.id) {
            // A door waits for this task: it gets what the reply says, with any secret
            // of the task masked (a template may have copied one into the text).
            let mut secrets = Vec::new();
            crate::mask::secret_values(
                &self.loaded.process,
                &self.task.secret_keys,
                &self.task.data,
                &mut secrets,
            );
            let said =
                crate::mask::mask_data(&self.loaded.process, &self.task.secret_keys, &rendered)
                    .into_iter()
                    .map(|(k, v)| {
                        let masked = crate::mask::mask_value(&v, &secrets);
                        (k, masked)
                    })
                    .collect();
            self.answer = Some((self.task.node.clone(), said, error));
        }
        if let Some(caller) = self.task.caller.clone() {
            self.batch.push(Op::Inbox {
                task: caller.task,
                seq: self.rt.store.next_task_id()?,
                message: InboxMessage::Reply {
                    data: rendered,
                    error,
                },
            });
            self.batch.push(Op::SetReady(caller.task));
            self.schedule.push(caller.task);
        }
        self.goto(next, "next");
        Ok(())
    }
}
