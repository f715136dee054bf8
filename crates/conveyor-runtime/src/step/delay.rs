//! `delay`: waits for a duration or until a unix time.

use super::*;

impl Step<'_> {
    /// Runs a task through this node (see `Step::advance`).
    pub(super) fn delay(&mut self, node: &Delay) -> Result<()> {
        let Delay { wait, next, .. } = node;
        let due = match wait {
            Wait::For(spec) => self.duration(spec).map(|d| self.now + d),
            Wait::Until(t) => self.unix_time(t),
        };
        let max = self.loaded.process.settings.max_wait.as_millis() as i64;
        let due = due.and_then(|due| {
            if due.saturating_sub(self.now) > max {
                Err(format!(
                    "the delay would end after the {} this process allows (settings.max_wait)",
                    conveyor_model::format_duration(self.loaded.process.settings.max_wait)
                ))
            } else {
                Ok(due)
            }
        });
        match due {
            Ok(due) if due <= self.now => self.goto(next, "delay"),
            Ok(due) => self.wait(Some((due, WakeKind::Delay)), "delay"),
            Err(message) => self.fail("delay", "software", "delay_error", message, None),
        }
        Ok(())
    }
}
