//! `reply`: answers the task that called this process.

use super::*;

impl Step<'_> {
    /// Runs a task through this node (see `Step::advance`).
    pub(super) fn reply(&mut self, node: &Reply) -> Result<()> {
        let Reply {
            data,
            error,
            reason,
            next,
            ..
        } = node;
        let error = *error;
        let rendered = match self.render_value(data) {
            Ok(Value::Object(map)) => map,
            Ok(_) => Map::new(),
            Err(message) => {
                self.fail("reply", "software", "reply_error", message, None);
                return Ok(());
            }
        };
        // Only a caller reads it: a task nobody called does not fail on its reason.
        let reason = reason.as_ref().filter(|_| self.task.caller.is_some());
        let reason = match reason.map(|r| self.render_text(r)) {
            None => None,
            Some(Ok(text)) => {
                // It goes into another task's data and history: this task's secrets
                // are cut out of it.
                Some(crate::mask::mask_text(&text, &self.known_secrets()))
            }
            Some(Err(message)) => {
                self.fail(
                    "reply",
                    "software",
                    "reply_error",
                    format!("reason: {message}"),
                    None,
                );
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
        self.answer_caller(rendered, error, None, reason)?;
        self.goto(next, "next");
        Ok(())
    }

    /// Leaves the answer in the caller's inbox and wakes it. A called task answers
    /// once: the caller is forgotten, so a later failure (or a second `reply`) does not
    /// answer again.
    pub(super) fn answer_caller(
        &mut self,
        data: Map<String, Value>,
        error: bool,
        failure: Option<String>,
        reason: Option<String>,
    ) -> Result<()> {
        if let Some(caller) = self.task.caller.take() {
            self.batch.push(Op::Inbox {
                task: caller.task,
                seq: self.rt.store.next_task_id()?,
                message: InboxMessage::Reply {
                    data,
                    error,
                    failure,
                    reason,
                },
            });
            self.batch.push(Op::SetReady(caller.task));
            self.schedule.push(caller.task);
        }
        Ok(())
    }

    /// A called task that failed answers its caller with the failure, so the caller
    /// takes its `on_error` at once instead of waiting for its time limit (Corezoid
    /// leaves it waiting).
    pub(super) fn answer_caller_if_failed(&mut self) -> Result<()> {
        if self.task.status != TaskStatus::Failed || self.task.caller.is_none() {
            return Ok(());
        }
        let reason = match self.failure.take() {
            Some(reason) => reason,
            None => format!("it ended in the error final node `{}`", self.task.node),
        };
        self.answer_caller(Map::new(), true, Some(reason), None)
    }
}
