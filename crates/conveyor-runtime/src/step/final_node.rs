//! `final`: the task ends, done or failed.

use super::*;

impl Step<'_> {
    /// Runs a task through this node (see `Step::advance`).
    pub(super) fn final_node(&mut self, status: &FinalStatus) -> Result<()> {
        self.stop(match status {
            FinalStatus::Success => TaskStatus::Done,
            FinalStatus::Error => TaskStatus::Failed,
        });
        Ok(())
    }
}
