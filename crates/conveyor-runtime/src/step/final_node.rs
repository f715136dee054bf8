//! `final`: the task ends, done or failed.

use super::*;

impl Step<'_> {
    /// Runs a task through this node (see `Step::advance`).
    pub(super) fn final_node(&mut self, node: &Final) -> Result<()> {
        self.stop(match node.status {
            FinalStatus::Success => TaskStatus::Done,
            FinalStatus::Error => TaskStatus::Failed,
        });
        Ok(())
    }
}
