//! `queue`: tasks wait until a `get_task` node takes them (Corezoid's Queue).

use super::*;

impl Step<'_> {
    /// Runs a task through this node (see `Step::advance`): it waits, with no end but
    /// the node's time limit.
    pub(super) fn queue(&mut self) -> Result<()> {
        self.wait(None, "queue");
        Ok(())
    }

    /// A `get_task` node took this task: it goes on, if it still waits in a queue.
    pub(super) fn dequeued(&mut self, by: u64) {
        let loaded = self.here();
        let next = match loaded.process.nodes.get(&self.task.node).map(|n| &n.kind) {
            Some(NodeKind::Queue(queue)) if self.task.status == TaskStatus::Waiting => {
                queue.next.clone()
            }
            _ => {
                // It left meanwhile (its time limit, a `task goto`): nothing to do.
                self.event(EventKind::Error {
                    tag: "late_dequeue".into(),
                    description: format!(
                        "task {by} took this task from a queue it no longer waits in; ignored"
                    ),
                });
                return;
            }
        };
        self.event(EventKind::Modified {
            keys: Vec::new(),
            source: format!("get_task of task {by}"),
        });
        self.goto(&next, "get_task");
    }

    /// The claims on other tasks this step took (see `get_task`) are over: its batch is
    /// committed, or failed and wrote nothing.
    pub(super) fn give_back_claims(&mut self) {
        for task in std::mem::take(&mut self.claimed) {
            self.rt.store.release(task);
        }
    }

    /// Once this step is committed, a claim on this task (`Runtime::taken`) is over:
    /// the store says where it is now.
    pub(super) fn release_claim(&self) {
        if let Ok(mut taken) = self.rt.taken.lock() {
            taken.remove(&self.task.id);
        }
    }
}
