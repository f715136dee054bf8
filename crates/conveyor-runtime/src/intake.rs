//! The HTTP doors' way in: creates and modifies from the task API, direct URLs and the
//! dashboard join the committer's groups (`committer.rs`) instead of each committing and
//! flushing on its own. The same checks as the CLI's `add_task`/`modify_task` apply
//! (`input.rs`); the answer still goes out only once the change is on disk, but a flush
//! is shared by everyone whose change is in that group.
//!
//! A request of many ops is answered in order: each op's change is *applied* before the
//! next op runs (so a later op sees an earlier one's ref), and one [`Runtime::sync`] at
//! the end makes them all durable before the answer.

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
        self.add_grouped(process, reference, data, Door::Create, ack, false)
            .await
            .map(|(task, _)| task)
    }

    async fn add_grouped(
        &self,
        process: &str,
        reference: Option<&str>,
        data: Map<String, Value>,
        door: Door,
        ack: Ack,
        wait: bool,
    ) -> Result<(TaskRecord, Option<AnswerWait>)> {
        let loaded = self.resolve(process)?;
        let (task, batch) = self.add_batch_to(&loaded, reference, data, door)?;
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

    /// Tells the engine what is left of a task stepped at its door (the rest of its
    /// work, or its timer); gives the task back as the step left it.
    fn after_born(&self, born: crate::step::Born) -> TaskRecord {
        self.metrics.step();
        if born.ready {
            // Its step told the loop of any timer: no need to read the index again.
            self.schedule_from_engine(born.task.id);
        } else if let Some(wake) = born.task.wake {
            self.hint_timer(wake.at);
        }
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
                Door::Url,
                Ack::Durable,
                wait,
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

    /// Checks and submits a create to the committer at once, without waiting: many ops of
    /// one request join the same group. Await [`Pending::done`] for the outcome.
    /// With `wait`, a wait for the task's answer (sync reply) is registered before the
    /// create reaches the committer: take it with [`Pending::take_answer`]. `by` is the
    /// login of the API key asking, kept on the task (`TaskRecord::created_by`).
    pub fn submit_create(
        &self,
        process: &str,
        reference: Option<&str>,
        data: Map<String, Value>,
        wait: bool,
        by: Option<u64>,
    ) -> Result<(TaskRecord, Pending)> {
        let (task, mut batch) = self.add_batch(process, reference, data, Door::Create)?;
        // Who created it (the task API's `user_id`): set on the new task only, never on
        // a summary task a rate-limited create was folded into.
        if by.is_some() {
            for op in &mut batch.ops {
                if let conveyor_store::Op::PutTask(put) = op
                    && put.id == task.id
                    && put.history_len == 1
                {
                    put.created_by = by;
                }
            }
        }
        let answer = wait.then(|| self.expect_answer(task.id));
        let refs = crate::ref_changes(&batch);
        let wait = match self.committer.sender() {
            Some(sender) => {
                let (done, wait) = tokio::sync::oneshot::channel();
                let request = crate::committer::Request {
                    batch,
                    durable: false,
                    done,
                };
                match sender.send(request) {
                    Ok(()) => Ok(Some(wait)),
                    Err(error) => self.store.commit(&error.0.batch).map(|()| None),
                }
            }
            None => self.store.commit(&batch).map(|()| None),
        };
        let wait = match wait {
            Ok(wait) => wait,
            Err(e) => {
                if let Some(answer) = answer {
                    self.drop_answer(answer);
                }
                return Err(duplicate_ref(e));
            }
        };
        let pending = Pending {
            wait,
            refs,
            task: task.id,
            answer,
        };
        Ok((task, pending))
    }
}

/// A create handed to the committer and not yet acknowledged.
pub struct Pending {
    wait:
        Option<tokio::sync::oneshot::Receiver<std::result::Result<(), conveyor_store::StoreError>>>,
    refs: Vec<crate::RefChange>,
    task: u64,
    answer: Option<AnswerWait>,
}

impl Pending {
    /// The wait for the task's answer registered by [`Runtime::submit_create`], if any.
    pub fn take_answer(&mut self) -> Option<AnswerWait> {
        self.answer.take()
    }

    /// Resolves once the create is applied (readable), or with why it was not (a ref
    /// taken meanwhile: `ref '…' already exists`).
    pub async fn done(self, runtime: &Runtime) -> Result<()> {
        if let Some(wait) = self.wait {
            match wait.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(duplicate_ref(e)),
                Err(_) => {
                    return Err(RuntimeError::Store(conveyor_store::StoreError::Io(
                        "the committer stopped".into(),
                    )));
                }
            }
        }
        runtime.note_commit(&self.refs);
        runtime.metrics.task_created(1);
        runtime.schedule(self.task);
        Ok(())
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
