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
