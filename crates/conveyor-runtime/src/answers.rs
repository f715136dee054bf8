//! Sync replies (Corezoid's Sync API): a door that creates or modifies a task may ask to
//! wait until the task answers, that is until it passes a `reply` node or stops at a
//! final node (or fails), and then answer its caller with that data.
//!
//! The wait is registered before the change is committed, so the engine cannot move
//! the task past its answer before anyone listens. Answers are sent after the step that
//! made them is committed: what a caller is told is on disk. They live in this engine's
//! memory only: on a store several engines share, a task another engine moves answers
//! no one here, and the caller gets its timeout (docs/scaling.md).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use conveyor_store::TaskStatus;
use serde_json::{Map, Value};

use crate::{FastMap, Runtime};

/// What a task answered a door that waited for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub task: u64,
    /// The node that answered: a `reply` node, or the node the task stopped in.
    pub node: String,
    /// The task's status once the step that answered was committed.
    pub status: TaskStatus,
    /// A `reply` node's data, or else the task's data; secrets masked either way.
    pub data: Map<String, Value>,
    /// A `reply` with `error: true`, or a task that failed.
    pub error: bool,
}

/// A registered wait for a task's answer ([`Runtime::await_answer`]).
#[derive(Debug)]
pub struct AnswerWait {
    task: u64,
    receive: tokio::sync::oneshot::Receiver<Answer>,
}

impl AnswerWait {
    pub fn task(&self) -> u64 {
        self.task
    }
}

/// The waits of this engine, by task.
#[derive(Default)]
pub(crate) struct Answers {
    /// How many waits are registered: a step looks at the map only when some are.
    count: AtomicUsize,
    waits: Mutex<FastMap<u64, Vec<tokio::sync::oneshot::Sender<Answer>>>>,
}

impl Answers {
    pub(crate) fn expect(&self, task: u64) -> AnswerWait {
        let (send, receive) = tokio::sync::oneshot::channel();
        if let Ok(mut waits) = self.waits.lock() {
            waits.entry(task).or_default().push(send);
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        AnswerWait { task, receive }
    }

    /// Whether anyone waits for `task` (cheap when no one waits for anything).
    pub(crate) fn wanted(&self, task: u64) -> bool {
        self.count.load(Ordering::Relaxed) > 0
            && self.waits.lock().is_ok_and(|w| w.contains_key(&task))
    }

    pub(crate) fn answer(&self, answer: Answer) {
        let senders = match self.waits.lock() {
            Ok(mut waits) => waits.remove(&answer.task).unwrap_or_default(),
            Err(_) => return,
        };
        self.count.fetch_sub(senders.len(), Ordering::Relaxed);
        for send in senders {
            let _ = send.send(answer.clone());
        }
    }

    /// Drops the waits for `task` whose callers gave up.
    fn forget_closed(&self, task: u64) {
        if let Ok(mut waits) = self.waits.lock()
            && let Some(senders) = waits.get_mut(&task)
        {
            let before = senders.len();
            senders.retain(|s| !s.is_closed());
            self.count
                .fetch_sub(before - senders.len(), Ordering::Relaxed);
            if senders.is_empty() {
                waits.remove(&task);
            }
        }
    }
}

impl Runtime {
    /// Registers a wait for `task`'s answer. Register before the change that moves the
    /// task is committed (the doors' `…_grouped` calls do), then [`Runtime::await_answer`].
    pub fn expect_answer(&self, task: u64) -> AnswerWait {
        self.answers.expect(task)
    }

    /// The task's answer, or `None` when `timeout` (real time: it bounds how long an
    /// HTTP caller is held) passed first.
    pub async fn await_answer(&self, wait: AnswerWait, timeout: Duration) -> Option<Answer> {
        let task = wait.task;
        let answered = tokio::time::timeout(timeout, wait.receive).await;
        match answered {
            Ok(Ok(answer)) => Some(answer),
            _ => {
                self.answers.forget_closed(task);
                None
            }
        }
    }

    /// Gives up a wait without awaiting it (its change was refused).
    pub fn drop_answer(&self, wait: AnswerWait) {
        let task = wait.task;
        drop(wait);
        self.answers.forget_closed(task);
    }
}
