//! `wait_callback`: waits until the task is modified from outside.

use super::*;

impl Step<'_> {
    /// Runs a task through this node (see `Step::advance`).
    pub(super) fn wait_callback(&mut self) -> Result<()> {
        self.wait(None, "callback");
        Ok(())
    }
}
