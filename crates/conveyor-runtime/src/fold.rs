//! Rate limits of processes (`settings.rate_limit: { max: 3, per: 10m }`): at most `max`
//! tasks start in each window of `per`; the tasks past that are folded into one summary
//! task, which waits at the start node until the window ends and then runs with the
//! first folded task's data, `folded` (the data of each, the first `FOLDED_KEPT`) and
//! `folded_count`. A notifier that anyone can feed (a failing token, a stranger with the
//! direct URL) then sends a few alerts and one summary, not an SMS bill.
//!
//! One engine counts its windows in memory: a restart starts a new count (at most `max`
//! more tasks start at once), and folding never loses a task's data that was committed.
//! Engines sharing a store (PostgreSQL) count each window in the store instead
//! ([`Store::admit`](conveyor_store::Store::admit)), so the limit holds for all of them
//! together; the summary is named there too, and tasks are folded into it through its
//! inbox, whichever engine holds it. (If a summary is not committed yet when another
//! engine folds into it, that task becomes a summary of its own: a window may then
//! release two summaries, never lose a task.)

use conveyor_model::RateLimit;
use conveyor_store::{Batch, InboxMessage, Op, TaskRecord, TaskStatus, TimerKey, Wake, WakeKind};
use serde_json::{Map, Value};

use crate::{FastMap, Result, Runtime};

/// How many folded tasks' data a summary keeps (all are counted).
pub const FOLDED_KEPT: usize = 20;

/// One process's current window.
#[derive(Debug, Default)]
pub(crate) struct Window {
    index: i64,
    started: u32,
    /// The summary task of this window, once a task was folded.
    summary: Option<u64>,
}

pub(crate) type Windows = FastMap<u64, Window>;

/// What to do with a new task of a rate-limited process.
pub(crate) enum Admit {
    /// Within the limit: it starts as usual.
    Start,
    /// Past it: fold it into this summary task.
    Into(u64),
    /// Past it, and the window has no summary yet: the new task becomes one, released
    /// at this time.
    Summary { release_at: i64 },
}

impl Runtime {
    /// Counts a new task of `process`, which gets the id `candidate`, against its window.
    pub(crate) fn admit(
        &self,
        process: u64,
        limit: RateLimit,
        now: i64,
        candidate: u64,
    ) -> Result<Admit> {
        let per = (limit.per.as_millis() as i64).max(1);
        let index = now.div_euclid(per);
        let release_at = index.saturating_add(1).saturating_mul(per);
        if let Some(shared) = self.store.admit(process, index, limit.max, candidate)? {
            return Ok(match shared.summary {
                _ if shared.started <= u64::from(limit.max) => Admit::Start,
                Some(summary) if summary == candidate => Admit::Summary { release_at },
                Some(summary) => Admit::Into(summary),
                None => Admit::Start,
            });
        }
        Ok(self.admit_here(process, limit, index, release_at))
    }

    /// [`Runtime::admit`] for an engine alone on its store: counted in memory.
    fn admit_here(&self, process: u64, limit: RateLimit, index: i64, release_at: i64) -> Admit {
        let Ok(mut windows) = self.windows.lock() else {
            return Admit::Start;
        };
        let window = windows.entry(process).or_default();
        if window.index != index {
            *window = Window {
                index,
                started: 0,
                summary: None,
            };
        }
        if window.started < limit.max {
            window.started += 1;
            return Admit::Start;
        }
        match window.summary {
            Some(summary) => Admit::Into(summary),
            None => Admit::Summary { release_at },
        }
    }

    /// Remembers the summary task of `process`'s window.
    pub(crate) fn note_summary(&self, process: u64, task: u64) {
        if let Ok(mut windows) = self.windows.lock()
            && let Some(window) = windows.get_mut(&process)
        {
            window.summary = Some(task);
        }
    }

    /// Folds `data` into the summary task `summary`, if it still waits to be released.
    pub(crate) fn fold_into(
        &self,
        summary: u64,
        data: Map<String, Value>,
        batch: &mut Batch,
    ) -> Result<Option<TaskRecord>> {
        let Some(task) = self.store.task(summary)? else {
            return Ok(None);
        };
        if task.wake.map(|w| w.kind) != Some(WakeKind::Release) {
            return Ok(None);
        }
        batch.push(Op::Inbox {
            task: summary,
            seq: self.store.next_task_id()?,
            message: InboxMessage::Fold { data },
        });
        batch.push(Op::SetReady(summary));
        Ok(Some(task))
    }
}

/// Turns a new task into the summary of its window: it holds its own data as the first
/// folded one and waits at the start node until `release_at`.
pub(crate) fn make_summary(task: &mut TaskRecord, release_at: i64, batch: &mut Batch) {
    let first = task.data.clone();
    task.data
        .insert("folded".into(), Value::Array(vec![Value::Object(first)]));
    task.data.insert("folded_count".into(), Value::from(1));
    task.status = TaskStatus::Waiting;
    task.wake = Some(Wake {
        at: release_at,
        kind: WakeKind::Release,
    });
    batch.push(Op::SetTimer(TimerKey {
        due: release_at,
        task: task.id,
    }));
}

/// Appends a folded task's data to a summary's `folded` list (the first `FOLDED_KEPT`
/// are kept; all are counted).
pub(crate) fn append(summary: &mut Map<String, Value>, data: Map<String, Value>) {
    let count = summary
        .get("folded_count")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        + 1;
    summary.insert("folded_count".into(), Value::from(count));
    let list = summary
        .entry("folded")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(items) = list
        && items.len() < FOLDED_KEPT
    {
        items.push(Value::Object(data));
    }
}
