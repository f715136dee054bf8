//! `call_process`: creates a task in another process and waits for its reply.

use super::*;

impl Step<'_> {
    /// Runs a task through this node (see `Step::advance`).
    pub(super) fn call_process(&mut self, node: &CallProcess) -> Result<()> {
        let copy = TaskCopy {
            process: node.process.clone(),
            reference: None,
            data: node.data.clone(),
        };
        let caller = Caller {
            task: self.task.id,
            process: self.task.process,
        };
        match self.copy(&copy, Some(caller)) {
            Ok(target) => self.wait(None, &format!("reply of process {target}")),
            Err((tag, message)) => self.fail("rpc", "software", tag, message, None),
        }
        Ok(())
    }
}
