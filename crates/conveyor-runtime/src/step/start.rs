//! `start`: where every task begins.

use super::*;

impl Step<'_> {
    /// Runs a task through this node (see `Step::advance`).
    pub(super) fn start(&mut self, node: &Start) -> Result<()> {
        self.goto(&node.next, "next");
        Ok(())
    }
}
