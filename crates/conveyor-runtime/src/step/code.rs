//! `code`: runs the node's JavaScript over the task's data (see `crate::code`).

use super::*;
use crate::code::{self, Limits};

impl Step<'_> {
    /// Runs a task through this node (see `Step::advance`). The script's `data` becomes
    /// the task's data (keys it deletes are gone); on any failure the task is unchanged
    /// and takes `on_error` with `__conveyor_code_return_*__`.
    pub(super) fn code(&mut self, node: &Code) -> Result<()> {
        let limits = Limits {
            time: node.max_time,
            memory: node.max_memory,
        };
        let output = match code::run(
            self.task.process,
            &node.source,
            &self.task.data,
            self.now,
            limits,
        ) {
            Ok(output) => output,
            Err(e) => {
                self.fail("code", e.kind(), e.tag(), e.to_string(), None);
                return Ok(());
            }
        };
        let size = crate::input::json_size(&output);
        if size > crate::ops::MAX_TASK_BYTES {
            self.fail(
                "code",
                "software",
                "code_task_size_overflow_limit",
                format!(
                    "the task would be {size} bytes; the limit is {}",
                    crate::ops::MAX_TASK_BYTES
                ),
                None,
            );
            return Ok(());
        }
        // A key the script filled from a secret value is secret too.
        let secrets = self.known_secrets();
        if !secrets.is_empty() {
            let tainted: Vec<String> = output
                .iter()
                .filter(|(k, v)| self.task.data.get(*k) != Some(*v))
                .filter(|(_, v)| mask::contains_secret(v, &secrets))
                .map(|(k, _)| k.clone())
                .collect();
            self.taint(tainted);
        }
        self.task.data = output;
        self.goto(&node.next, "next");
        Ok(())
    }
}
