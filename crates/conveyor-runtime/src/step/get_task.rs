//! `get_task`: takes a task from a `queue` node of a process (Corezoid's Get from
//! Queue): the taken task goes on, and this task gets `__queue_task_id__` and
//! `__queue_task_data__`.

use super::*;

/// At most this many tasks of the queue's process are looked at for the oldest or
/// newest waiting one (the store lists a process's tasks in id order).
const SCAN_LIMIT: usize = 100_000;

/// The taken task's id and data, or a failure's tag and description.
type Taken = std::result::Result<(u64, Map<String, Value>), (&'static str, String)>;

impl Step<'_> {
    /// Runs a task through this node (see `Step::advance`).
    pub(super) fn get_task(&mut self, node: &GetTask) -> Result<()> {
        let GetTask {
            process,
            queue,
            newest,
            next,
            ..
        } = node;
        let newest = *newest;
        match self.take_from_queue(process, queue, newest) {
            Ok((id, data)) => {
                self.task
                    .data
                    .insert("__queue_task_id__".into(), Value::from(id));
                self.task
                    .data
                    .insert("__queue_task_data__".into(), Value::Object(data));
                self.goto(next, "next");
            }
            Err((tag, message)) => self.fail("get_task", "software", tag, message, None),
        }
        Ok(())
    }

    fn take_from_queue(&mut self, process: &Template, queue: &str, newest: bool) -> Taken {
        let target = self
            .render_text(process)
            .map_err(|m| ("get_task_wrong_convert_param", m))?;
        let loaded = self.resolve_other(&target, "get_task_wrong_convert_param")?;
        match loaded.process.nodes.get(queue).map(|n| &n.kind) {
            Some(NodeKind::Queue { .. }) => {}
            Some(other) => {
                return Err((
                    "queue_wrong_logic",
                    format!(
                        "node `{queue}` of process {target} is a {}, not a queue",
                        other.name()
                    ),
                ));
            }
            None => {
                return Err((
                    "queue_wrong_logic",
                    format!("process {target} has no node `{queue}`"),
                ));
            }
        }
        let mut waiting: Vec<TaskRecord> = self
            .rt
            .store
            .tasks(loaded.record.id, Some(queue), SCAN_LIMIT)
            .map_err(|e| ("get_task_fatal_error", e.to_string()))?
            .into_iter()
            .filter(|t| t.status == TaskStatus::Waiting && t.id != self.task.id)
            .collect();
        // Oldest first: by when they entered the queue, then by id.
        waiting.sort_by_key(|t| (t.entered, t.id));
        if newest {
            waiting.reverse();
        }
        let mut taken = self
            .rt
            .taken
            .lock()
            .map_err(|_| ("get_task_fatal_error", "the claims lock is poisoned".into()))?;
        let Some(task) = waiting.into_iter().find(|t| !taken.contains(&t.id)) else {
            return Err((
                "not_found_task",
                format!("no task waits in queue node `{queue}` of process {target}"),
            ));
        };
        taken.insert(task.id);
        drop(taken);
        let seq = match self.rt.store.next_task_id() {
            Ok(seq) => seq,
            Err(e) => {
                if let Ok(mut taken) = self.rt.taken.lock() {
                    taken.remove(&task.id);
                }
                return Err(("get_task_fatal_error", e.to_string()));
            }
        };
        self.batch.push(Op::Inbox {
            task: task.id,
            seq,
            message: InboxMessage::Dequeue { by: self.task.id },
        });
        self.batch.push(Op::SetReady(task.id));
        self.schedule.push(task.id);
        // Its secret keys stay secret here: masked, as a whole-task `conv[…]` read is.
        let data = crate::mask::mask_data(&loaded.process, &task.secret_keys, &task.data);
        Ok((task.id, data))
    }
}
