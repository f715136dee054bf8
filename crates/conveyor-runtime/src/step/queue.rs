//! `queue`: tasks wait until a `get_task` node takes them (Corezoid's Queue).

use super::*;

impl Step<'_> {
    /// Runs a task through this node (see `Step::advance`): it waits, with no end but
    /// the node's time limit.
    /// A queue at its `capacity` sends the task to its error route instead.
    pub(super) fn queue(&mut self, queue: &conveyor_model::Queue) -> Result<()> {
        if let Some(capacity) = queue.capacity {
            // What was committed: this task's own move in is not counted yet.
            let waiting = self
                .rt
                .store
                .counters(self.task.process)?
                .into_iter()
                .find(|(node, _)| *node == self.task.node)
                .map_or(0, |(_, c)| c.now.max(0) as u64);
            if waiting >= capacity {
                self.fail(
                    "queue",
                    "software",
                    "queue_capacity_exceeded",
                    format!(
                        "queue `{}` holds {waiting} tasks, its capacity",
                        self.task.node
                    ),
                    None,
                );
                return Ok(());
            }
        }
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

    /// Once this step is committed: a task that waits in a queue is on this engine's
    /// list of it (`queues.rs`), for the `get_task` nodes that take from it.
    pub(super) fn note_queued(&self) {
        let in_queue = matches!(
            self.loaded
                .process
                .nodes
                .get(&self.task.node)
                .map(|n| &n.kind),
            Some(NodeKind::Queue(_))
        );
        if in_queue && self.task.status == TaskStatus::Waiting && !self.rt.store.shared() {
            self.rt.queues.arrived(
                self.task.process,
                &self.task.node,
                self.task.entered,
                self.task.id,
            );
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
