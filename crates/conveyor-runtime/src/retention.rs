//! Retention: how long a finished task is kept (`settings.keep`, a final node's `keep`),
//! and how much of a long-lived task's history (`settings.history`).
//!
//! A task that finishes gets a timer (`WakeKind::Remove`) at the end of its `keep`; the
//! engine's timer loop fires it like any other, and the step that runs then removes the
//! task (its record, ref, history, inbox and its place in the counters) in one batch.
//! `keep: 0` removes it in the same commit that finishes it; `forever` sets no timer.
//!
//! A history is trimmed by the task's own step, every `slack` events once it holds
//! more than `keep_first + keep_last` of them: the first `keep_first` events stay, then
//! one `dropped` marker that counts what was dropped in all, then the last `keep_last`
//! events that are younger than `max_age`.

use conveyor_model::{FinalStatus, HistoryBounds, Keep, NodeKind, Process};
use conveyor_store::{Batch, EventKind, HistoryEvent, Op, TaskRecord, TaskStatus};

use crate::{Result, Runtime};

/// How long a task that stopped in `node` with `status` is kept: the final node's own
/// `keep`, else `settings.keep`, else the default for its status.
pub(crate) fn keep_for(process: &Process, node: &str, status: TaskStatus) -> Keep {
    if let Some(n) = process.nodes.get(node)
        && let NodeKind::Final(end) = &n.kind
        && let Some(keep) = end.keep
    {
        return keep;
    }
    if let Some(keep) = process.settings.keep {
        return keep;
    }
    let failed = status == TaskStatus::Failed
        || process.nodes.get(node).is_some_and(
            |n| matches!(&n.kind, NodeKind::Final(end) if end.status == FinalStatus::Error),
        );
    if failed {
        Keep::DEFAULT_FAILED
    } else {
        Keep::DEFAULT_DONE
    }
}

/// The ops that remove `task` (besides its own timer, cleared by whoever fired it):
/// its counter in the node it is in, and the task with its ref, history and inbox.
pub(crate) fn removal(task: &TaskRecord, batch: &mut Batch) {
    batch.push(Op::DeleteTask {
        task: task.id,
        process: task.process,
        reference: task.reference.clone(),
    });
}

/// Every how many events a long history is trimmed.
fn slack(bounds: &HistoryBounds) -> u64 {
    (bounds.keep_last / 4).max(8)
}

impl Runtime {
    /// The op that trims `task`'s stored history, when this step's `new` events take it
    /// past a trim point (see the module's comment); `None` when nothing is to drop.
    pub(crate) fn trim_history(
        &self,
        task: &TaskRecord,
        new: u64,
        bounds: &HistoryBounds,
        now: i64,
    ) -> Result<Option<Op>> {
        let before = task.history_len;
        let after = before.saturating_add(new);
        let slack = slack(bounds);
        let nothing_to_drop = after <= bounds.keep_first + 1
            || (bounds.max_age.is_none() && after <= bounds.keep_first + bounds.keep_last + 1);
        if nothing_to_drop || before / slack == after / slack {
            return Ok(None);
        }
        let stored = self.store.history(task.id)?;
        Ok(
            trimmed(stored, new, bounds, now).map(|events| Op::ReplaceHistory {
                task: task.id,
                events,
            }),
        )
    }
}

/// `stored` as it is kept once `new` more events follow it: `None` when nothing is
/// dropped.
pub(crate) fn trimmed(
    stored: Vec<HistoryEvent>,
    new: u64,
    bounds: &HistoryBounds,
    now: i64,
) -> Option<Vec<HistoryEvent>> {
    let mut dropped_before = 0u64;
    let events: Vec<HistoryEvent> = stored
        .into_iter()
        .filter(|e| match e.kind {
            EventKind::Dropped { count, .. } => {
                dropped_before = dropped_before.saturating_add(count);
                false
            }
            _ => true,
        })
        .collect();
    let first = (bounds.keep_first as usize).min(events.len());
    let total = events.len() as u64 + new;
    let oldest = bounds
        .max_age
        .map(|age| now.saturating_sub(age.as_millis() as i64));
    let mut kept = Vec::with_capacity(events.len());
    let mut last_dropped: Option<HistoryEvent> = None;
    let mut dropped = 0u64;
    for (i, event) in events.into_iter().enumerate() {
        let recent = total - i as u64 <= bounds.keep_last;
        let young = oldest.is_none_or(|o| event.at >= o);
        if i < first || (recent && young) {
            kept.push(event);
        } else {
            dropped += 1;
            last_dropped = Some(event);
        }
    }
    let last = last_dropped?;
    let marker = HistoryEvent {
        at: last.at,
        node: last.node,
        kind: EventKind::Dropped {
            count: dropped_before.saturating_add(dropped),
            keep_first: bounds.keep_first,
            keep_last: bounds.keep_last,
        },
    };
    kept.insert(first, marker);
    Some(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn event(at: i64) -> HistoryEvent {
        HistoryEvent {
            at,
            node: "n".into(),
            kind: EventKind::Created,
        }
    }

    #[test]
    fn keeps_first_and_last_and_counts_the_rest() {
        let bounds = HistoryBounds {
            keep_first: 2,
            keep_last: 3,
            max_age: None,
        };
        let stored: Vec<_> = (0..10).map(event).collect();
        let kept = trimmed(stored, 1, &bounds, 100).expect("something dropped");
        let ats: Vec<i64> = kept.iter().map(|e| e.at).collect();
        // 0, 1 first; 7 dropped (2..=8 minus the last two stored: 8, 9); then 8, 9 (+1 new).
        assert_eq!(ats, vec![0, 1, 7, 8, 9]);
        assert!(matches!(kept[2].kind, EventKind::Dropped { count: 6, .. }));
        // Trimming again adds to the marker's count.
        let mut again = kept;
        again.extend((10..14).map(event));
        let kept = trimmed(again, 0, &bounds, 100).expect("dropped again");
        assert!(matches!(kept[2].kind, EventKind::Dropped { count: 9, .. }));
        assert_eq!(kept.len(), 2 + 1 + 3);
    }

    #[test]
    fn drops_by_age() {
        let bounds = HistoryBounds {
            keep_first: 1,
            keep_last: 100,
            max_age: Some(Duration::from_millis(50)),
        };
        let stored: Vec<_> = (0..10).map(|i| event(i * 10)).collect();
        let kept = trimmed(stored, 0, &bounds, 100).expect("old ones dropped");
        let ats: Vec<i64> = kept.iter().map(|e| e.at).collect();
        assert_eq!(ats, vec![0, 40, 50, 60, 70, 80, 90]);
        assert!(trimmed((0..3).map(event).collect(), 0, &bounds, 10).is_none());
    }
}
