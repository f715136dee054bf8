//! `queue`: tasks wait until a `get_task` node takes them (Corezoid's Queue).

use super::*;

impl Step<'_> {
    /// Runs a task through this node (see `Step::advance`): it waits, with no end but
    /// the node's time limit.
    /// A queue at its `capacity` sends the task to its error route instead.
    pub(super) async fn queue(&mut self, queue: &conveyor_model::Queue) -> Result<()> {
        if let Some(capacity) = queue.capacity {
            // One step at a time counts and enters (on this engine): the lock is held
            // until this step's commit is over, so the next one counts this task.
            let lock = self
                .rt
                .queues
                .capacity_lock(self.task.process, &self.task.node);
            self.entering = Some(lock.lock_owned().await);
            // What was committed: this task's own move in is not counted yet.
            let waiting = self
                .rt
                .store
                .counters(self.task.process)?
                .into_iter()
                .find(|(node, _)| *node == self.task.node)
                .map_or(0, |(_, c)| c.now.max(0) as u64);
            if waiting >= capacity {
                // It does not enter: the lock goes now, not with the step (its error
                // route may lead anywhere, another full queue included).
                self.entering = None;
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
        if self.task.status != TaskStatus::Waiting {
            // It did not stay (its time limit could not be worked out: its error route
            // runs now): the node is not held for the rest of the step, which may come
            // back to it.
            self.entering = None;
        }
        Ok(())
    }

    /// A `get_task` node took this task: it goes on, if it still waits in a queue.
    pub(super) fn dequeued(&mut self, by: u64) {
        self.dequeued = true;
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

    /// Once this step is committed: this engine's lists of queues (`queues.rs`) follow
    /// the task: off the list of the queue it left (its time limit, `task goto`, a take),
    /// on the list of the queue it now waits in. A task that read a taker's message is
    /// put on the list again if it still waits (the take came too late), as a listing
    /// made while it was held left it out.
    pub(super) fn note_queued(&mut self) {
        let waits = self.task.status == TaskStatus::Waiting && !self.remove;
        // Most steps neither began nor end waiting: nothing to look up.
        if self.rt.store.shared() || (!waits && self.began.is_none()) {
            return;
        }
        let is_queue = |node: &str| {
            matches!(
                self.loaded.process.nodes.get(node).map(|n| &n.kind),
                Some(NodeKind::Queue(_))
            )
        };
        let stays = waits
            && !self.dequeued
            && self
                .began
                .as_ref()
                .is_some_and(|(was, since)| *was == self.task.node && *since == self.task.entered);
        if let Some((was, since)) = &self.began
            && is_queue(was)
            && !stays
        {
            self.rt
                .queues
                .left(self.task.process, was, *since, self.task.id);
        }
        if waits && is_queue(&self.task.node) && !stays {
            self.rt.queues.arrived(
                self.task.process,
                &self.task.node,
                self.task.entered,
                self.task.id,
            );
        }
        // What the next commit of this step (an API call's) compares with.
        self.began = waits.then(|| (self.task.node.clone(), self.task.entered));
    }

    /// Once this step, which read a `get_task`'s message, is committed, the taker's
    /// hold on this task (`Runtime::taken`) is over: the store says where it is now. A
    /// step that read no such message leaves a hold alone: the taker's message is still
    /// on its way, and the task must not be taken twice meanwhile.
    pub(super) fn release_claim(&mut self) {
        if !std::mem::take(&mut self.dequeued) && !self.rt.store.shared() {
            return;
        }
        if let Ok(mut taken) = self.rt.taken.lock() {
            taken.remove(&self.task.id);
        }
    }
}
