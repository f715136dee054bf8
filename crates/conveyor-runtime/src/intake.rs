//! The HTTP doors' way in: creates and modifies from the task API, direct URLs and the
//! dashboard join the committer's groups (`committer.rs`) instead of each committing and
//! flushing on its own. The same checks as the CLI's `add_task`/`modify_task` apply
//! (`input.rs`); the answer still goes out only once the change is on disk, but a flush
//! is shared by everyone whose change is in that group.
//!
//! A request of many ops is answered in order: an op that reads or changes a task runs
//! once the changes before it are *applied* (so it sees an earlier op's task), a run of
//! creates goes at once (each taking its first steps at the door), and one
//! [`Runtime::sync`] at the end makes them all durable before the answer.

use conveyor_model::Door;
use serde_json::{Map, Value};

use crate::input::DirectOutcome;
use crate::ops::duplicate_ref;
use crate::{AnswerWait, ModifyOutcome, Result, Runtime, RuntimeError, TaskBy};
use conveyor_store::{Batch, TaskRecord};

/// When a door's change may be acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Once it is applied (readable); call [`Runtime::sync`] before answering.
    Applied,
    /// Once it is on disk.
    Durable,
}

/// How a task arrives at a door (`Runtime::add_grouped`).
struct Arrival {
    door: Door,
    ack: Ack,
    /// Register a wait for the task's answer (a Sync API or direct URL caller waits).
    wait: bool,
    /// The login of the API key that created it (`TaskRecord::created_by`).
    by: Option<u64>,
}

impl Runtime {
    /// `add_task` through the committer's groups; the task comes back as its first
    /// step at the door left it (see `step::run_born`).
    pub async fn add_task_grouped(
        &self,
        process: &str,
        reference: Option<&str>,
        data: Map<String, Value>,
        ack: Ack,
    ) -> Result<TaskRecord> {
        let how = Arrival {
            door: Door::Create,
            ack,
            wait: false,
            by: None,
        };
        self.add_grouped(process, reference, data, how)
            .await
            .map(|(task, _)| task)
    }

    async fn add_grouped(
        &self,
        process: &str,
        reference: Option<&str>,
        data: Map<String, Value>,
        how: Arrival,
    ) -> Result<(TaskRecord, Option<AnswerWait>)> {
        let Arrival {
            door,
            ack,
            wait,
            by,
        } = how;
        let loaded = self.resolve(process)?;
        let (mut task, mut batch) = self.add_batch_to(&loaded, reference, data, door)?;
        // Who created it (the task API's `user_id`): set on the new task only, never on
        // a summary task a rate-limited create was folded into.
        if by.is_some() && task.history_len == 1 {
            let mut put_new = false;
            for op in &mut batch.ops {
                if let conveyor_store::Op::PutTask(put) = op
                    && put.id == task.id
                {
                    put.created_by = by;
                    put_new = true;
                }
            }
            // The record the door step writes (a create folded into a waiting summary
            // writes none, and is not the creator's).
            if put_new {
                task.created_by = by;
            }
        }
        // Registered before the commit (and before a first step at the door, which may
        // answer): the engine cannot answer before anyone listens.
        let answer = wait.then(|| self.expect_answer(task.id));
        let committed = if steps_at_the_door(&loaded, &task) {
            crate::step::run_born(self, loaded, task, batch, ack == Ack::Durable)
                .await
                .map(|born| self.after_born(born))
        } else {
            self.commit_grouped(batch, ack == Ack::Durable)
                .await
                .map(|()| {
                    self.schedule(task.id);
                    task
                })
        }
        .map_err(|e| match e {
            RuntimeError::Store(e) => duplicate_ref(e),
            other => other,
        });
        match committed {
            Ok(task) => {
                self.metrics.task_created(1);
                Ok((task, answer))
            }
            Err(e) => {
                if let Some(answer) = answer {
                    self.drop_answer(answer);
                }
                Err(e)
            }
        }
    }

    /// Counts the step a task took at its door (which told the engine of what is left:
    /// the rest of its work, or its timer); gives the task back as the step left it.
    fn after_born(&self, born: crate::step::Born) -> TaskRecord {
        self.metrics.step();
        born.task
    }

    /// `modify_task_by` through the committer's groups.
    pub async fn modify_task_grouped(
        &self,
        process: &str,
        by: TaskBy<'_>,
        data: Map<String, Value>,
        source: &str,
        ack: Ack,
    ) -> Result<ModifyOutcome> {
        let (loaded, task) = self.find_task_by(process, by)?;
        let (outcome, batch) = self.modify_batch(&loaded, task, data, source, Door::Modify)?;
        self.commit_modify(outcome, batch, ack).await
    }

    async fn commit_modify(
        &self,
        outcome: ModifyOutcome,
        batch: Batch,
        ack: Ack,
    ) -> Result<ModifyOutcome> {
        self.commit_grouped(batch, ack == Ack::Durable).await?;
        self.schedule(outcome.task);
        Ok(outcome)
    }

    /// [`Runtime::commit_modify`] with a wait for the task's answer registered first.
    async fn commit_modify_awaiting(
        &self,
        outcome: ModifyOutcome,
        batch: Batch,
        wait: bool,
    ) -> Result<(ModifyOutcome, Option<AnswerWait>)> {
        let answer = wait.then(|| self.expect_answer(outcome.task));
        match self.commit_modify(outcome, batch, Ack::Durable).await {
            Ok(outcome) => Ok((outcome, answer)),
            Err(e) => {
                if let Some(answer) = answer {
                    self.drop_answer(answer);
                }
                Err(e)
            }
        }
    }

    /// `direct_url` through the committer's groups; answered once durable. With `wait`,
    /// a wait for the task's answer (sync reply) is registered before the commit and
    /// returned with the outcome.
    pub async fn direct_url_grouped(
        &self,
        process: u64,
        reference: Option<&str>,
        data: Map<String, Value>,
        wait: bool,
    ) -> Result<(DirectOutcome, Option<AnswerWait>)> {
        let loaded = self.loaded(process)?;
        crate::input::check_direct_ref(&loaded, reference)?;
        if let Some(r) = reference
            && let Some(task) = self.store.task_by_ref(process, r)?
        {
            let reference = task.reference.clone();
            let (outcome, batch) =
                self.modify_batch(&loaded, task, data, "direct URL", Door::Url)?;
            let (outcome, answer) = self.commit_modify_awaiting(outcome, batch, wait).await?;
            let done = DirectOutcome {
                task: outcome.task,
                reference,
                action: "modified",
            };
            return Ok((done, answer));
        }
        let (task, answer) = self
            .add_grouped(
                &process.to_string(),
                reference,
                data,
                Arrival {
                    door: Door::Url,
                    ack: Ack::Durable,
                    wait,
                    by: None,
                },
            )
            .await?;
        let done = DirectOutcome {
            task: task.id,
            reference: task.reference,
            action: "created",
        };
        Ok((done, answer))
    }

    /// Resolves once everything committed before it is on disk (one flush shared with the
    /// rest of its group).
    pub async fn sync(&self) -> Result<()> {
        self.commit_grouped(Batch::default(), true).await
    }

    /// A create from the task API: checked, its first steps run at the door (as a
    /// direct URL's are: `step::run_born`), and committed with them (in the committer's
    /// group, or in place when the store is idle); it resolves once applied (readable;
    /// [`Runtime::sync`] before answering). With `wait`, a wait for the task's answer
    /// (Sync API) is registered before the create reaches the committer. `by` is the login of the API key asking, kept on the task
    /// (`TaskRecord::created_by`).
    pub async fn create_grouped(
        &self,
        process: &str,
        reference: Option<&str>,
        data: Map<String, Value>,
        wait: bool,
        by: Option<u64>,
    ) -> Result<(TaskRecord, Option<AnswerWait>)> {
        let how = Arrival {
            door: Door::Create,
            ack: Ack::Applied,
            wait,
            by,
        };
        self.add_grouped(process, reference, data, how).await
    }
}

/// Whether the first step of a task just built at a door may run there
/// (`step::run_born`): a plain birth, not a create a rate limit folded into a summary
/// task.
fn steps_at_the_door(loaded: &crate::LoadedProcess, task: &TaskRecord) -> bool {
    loaded.process.settings.rate_limit.is_none()
        && task.history_len == 1
        && task.status == conveyor_store::TaskStatus::Ready
        && task.node == loaded.process.start
}
