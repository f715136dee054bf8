//! `escalation`: copies tasks out, then waits for a person (or `task modify`).

use super::*;

impl Step<'_> {
    /// Runs a task through this node (see `Step::advance`).
    pub(super) fn escalation(&mut self, node: &Escalation) -> Result<()> {
        for c in &node.copy {
            if let Err((tag, message)) = self.copy(c, None) {
                self.fail("copy_task", "software", tag, message, None);
                return Ok(());
            }
        }
        self.wait(None, "escalation");
        Ok(())
    }
}
