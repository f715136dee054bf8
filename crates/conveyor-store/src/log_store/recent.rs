//! Task records the log store wrote lately, kept decoded.
//!
//! The usual reader of a task record is the engine's next step of that task, soon after
//! the commit that wrote it (a door's create, then the step that calls out; a step
//! that leaves the task ready, then the next). Handing it the record the commit held
//! saves a `pread` and a decode, which cost more than the copy made here.
//!
//! A record is kept until it is read, replaced, deleted, or pushed out by newer ones:
//! at most [`MAX_RECORDS`] records and [`MAX_BYTES`] of memory as [`cost`] estimates
//! it, and only records of under [`MAX_RECORD_BYTES`] bytes as written, so memory stays
//! bounded whatever the tasks hold. Reading one *takes* it (any read: a ref looked up,
//! the task API): a second read goes to the log, as every read did before.
//!
//! A commit (under the store's writer lock) drops what is kept of every task it writes
//! *before* its frame reaches the indexes, and keeps the new records after; so a record
//! here is never older than what the indexes point to, and a reader gets either the
//! record the last applied commit wrote or, as before, the one on disk.

use std::collections::VecDeque;

use serde_json::Value;

use crate::TaskRecord;

/// Most records kept: enough for a backlog of tasks queued behind a node's limit
/// (`concurrency`), whose steps read them seconds after the commits that wrote them.
/// Half of the 57,344 a table of 65,536 slots holds: records are taken all the time,
/// and a table more than half full that runs out of never-used slots doubles instead
/// of rehashing in place, so this keeps the table at 65,536 slots for good. (A slot
/// holds a decoded record's fixed part, a few hundred bytes: [`cost`] counts it for
/// the records kept, and the empty slots come on top of [`MAX_BYTES`].)
pub(super) const MAX_RECORDS: usize = 28_672;
/// Most memory they may take, as [`cost`] estimates it.
pub(super) const MAX_BYTES: usize = 32 * 1024 * 1024;
/// Larger records are not kept: a decoded record takes many times its written size.
pub(super) const MAX_RECORD_BYTES: usize = 4 * 1024;

/// What keeping `task` (`json` bytes as written) costs in memory, estimated from its
/// decoded values (each JSON value decodes into a [`Value`] plus what it owns); `None`
/// when it is too large to keep.
pub(super) fn cost(task: &TaskRecord, json: usize) -> Option<usize> {
    if json > MAX_RECORD_BYTES {
        return None;
    }
    let strings = [&task.reference, &task.prev_node]
        .into_iter()
        .flatten()
        .map(String::len)
        .sum::<usize>()
        + task.node.len()
        + task.secret_keys.iter().map(|k| k.len() + 24).sum::<usize>();
    let data = task
        .data
        .iter()
        .map(|(k, v)| k.len() + ENTRY + value_cost(v))
        .sum::<usize>();
    Some(std::mem::size_of::<TaskRecord>() + strings + data + 64)
}

/// A map entry's own room besides its key's text and its value (the key's `String`,
/// the hash index, the entry's hash).
const ENTRY: usize = 24 + 16 + 8;

fn value_cost(value: &Value) -> usize {
    std::mem::size_of::<Value>()
        + match value {
            Value::String(s) => s.len(),
            Value::Array(items) => items.iter().map(value_cost).sum(),
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| k.len() + ENTRY + value_cost(v))
                .sum(),
            _ => 0,
        }
}

#[derive(Default)]
pub(super) struct Recent {
    /// Task id → when it was kept, its cost, the record.
    records: super::FastMap<u64, (u64, usize, TaskRecord)>,
    /// (when kept, task id), oldest first: the oldest is pushed out first. A record
    /// taken leaves its entry here, stale (its task's record, if any, was kept at
    /// another time); stale entries are skipped, and swept by a `keep` that finds
    /// more than twice as many entries as records (plus 64), so the queue never
    /// holds more than 2 × [`MAX_RECORDS`] + 64 entries (~1.8 MiB).
    order: VecDeque<(u64, u64)>,
    next: u64,
    bytes: usize,
}

impl Recent {
    /// Keeps `record` (`bytes`: its [`cost`]) in place of any older one of its task.
    pub(super) fn keep(&mut self, record: TaskRecord, bytes: usize) {
        self.forget(record.id);
        if bytes > MAX_BYTES {
            return;
        }
        // Room first, so the map never holds more than MAX_RECORDS (nor grows its
        // table for one more).
        while self.records.len() >= MAX_RECORDS || self.bytes + bytes > MAX_BYTES {
            let Some((when, oldest)) = self.order.pop_front() else {
                break;
            };
            if self.records.get(&oldest).is_some_and(|r| r.0 == when)
                && let Some((_, freed, _)) = self.records.remove(&oldest)
            {
                self.bytes -= freed;
            }
        }
        let at = self.next;
        self.next += 1;
        self.order.push_back((at, record.id));
        self.bytes += bytes;
        self.records.insert(record.id, (at, bytes, record));
        if self.order.len() > 2 * self.records.len() + 64 {
            let records = &self.records;
            self.order
                .retain(|(at, id)| records.get(id).is_some_and(|r| r.0 == *at));
        }
    }

    /// Drops what is kept of task `id` (it was deleted).
    pub(super) fn forget(&mut self, id: u64) {
        self.take(id);
    }

    /// How many records are kept.
    #[cfg(test)]
    pub(super) fn records_kept(&self) -> usize {
        self.records.len()
    }

    /// The record kept of task `id`, if any; it is no longer kept.
    pub(super) fn take(&mut self, id: u64) -> Option<TaskRecord> {
        let (_, bytes, record) = self.records.remove(&id)?;
        self.bytes -= bytes;
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64, node: &str) -> TaskRecord {
        let mut task = crate::conformance::task(id, node);
        task.id = id;
        task
    }

    #[test]
    fn a_record_is_taken_once_and_replaced_by_a_newer_one() {
        let mut recent = Recent::default();
        recent.keep(record(1, "a"), 10);
        recent.keep(record(1, "b"), 12);
        assert_eq!(recent.take(1).map(|t| t.node), Some("b".to_string()));
        assert!(recent.take(1).is_none());
        assert_eq!(recent.bytes, 0);
        assert!(recent.records.is_empty());
    }

    #[test]
    fn records_taken_leave_the_order_bounded_and_the_oldest_kept_still_goes_first() {
        let mut recent = Recent::default();
        // Kept and taken at once, many times over: what the order remembers of them is
        // swept, not piled up.
        for id in 0..(8 * MAX_RECORDS as u64) {
            recent.keep(record(id, "n"), 1);
            if id % 4 != 0 {
                assert!(recent.take(id).is_some());
            }
        }
        assert!(recent.order.len() <= 2 * recent.records.len() + 64);
        // Every fourth id was left; the newest of those are kept, up to the limit (a
        // record kept and then taken pushed one out too, on its way through).
        let kept = recent.records.len();
        assert!((MAX_RECORDS - 1..=MAX_RECORDS).contains(&kept), "{kept}");
        let last = 8 * MAX_RECORDS as u64 - 4;
        assert!(recent.take(0).is_none(), "the oldest went first");
        for id in (last - 4 * (MAX_RECORDS as u64 / 2)..=last).step_by(4) {
            assert!(recent.take(id).is_some(), "{id}");
        }
        // A record kept again moves to the back: the other goes first.
        let mut recent = Recent::default();
        recent.keep(record(1, "a"), MAX_BYTES / 2);
        recent.keep(record(2, "a"), 1);
        recent.keep(record(1, "b"), MAX_BYTES / 2);
        recent.keep(record(3, "a"), MAX_BYTES / 2);
        assert!(recent.take(2).is_none(), "the oldest went first");
        assert_eq!(recent.take(1).map(|t| t.node), Some("b".to_string()));
        assert!(recent.take(3).is_some());
    }

    #[test]
    fn the_oldest_records_are_pushed_out_past_either_limit() {
        let mut recent = Recent::default();
        for id in 0..(MAX_RECORDS as u64 + 10) {
            recent.keep(record(id, "n"), 1);
        }
        assert_eq!(recent.records.len(), MAX_RECORDS);
        assert!(recent.take(9).is_none(), "the oldest went first");
        assert!(recent.take(10).is_some());
        // Bytes: two records of nearly half the limit leave room for no third.
        let mut recent = Recent::default();
        let half = MAX_BYTES / 2 - 1;
        for id in 1..=3 {
            recent.keep(record(id, "n"), half);
        }
        assert!(recent.take(1).is_none());
        assert!(recent.take(2).is_some() && recent.take(3).is_some());
        // One larger than the limit is not kept at all, and pushes nothing out.
        recent.keep(record(4, "n"), 1);
        recent.keep(record(5, "n"), MAX_BYTES + 1);
        assert!(recent.take(5).is_none());
        assert!(recent.take(4).is_some());
        assert_eq!(recent.bytes, 0);
    }

    #[test]
    fn a_record_costs_at_least_its_decoded_values_and_a_large_one_is_not_kept() {
        let mut small = record(1, "n");
        small.data.insert("k".into(), Value::from(1));
        let json = |t: &TaskRecord| serde_json::to_vec(t).map(|v| v.len()).unwrap_or(0);
        let base = cost(&small, json(&small)).unwrap_or(0);
        // A thousand numbers: 2 bytes each as JSON, a whole `Value` each decoded.
        let mut many = small.clone();
        many.data.insert("list".into(), Value::from(vec![0; 1000]));
        let big = cost(&many, json(&many)).unwrap_or(0);
        assert!(
            big >= base + 1000 * std::mem::size_of::<Value>(),
            "{base} {big}"
        );
        let mut huge = small.clone();
        huge.data
            .insert("text".into(), Value::from("x".repeat(MAX_RECORD_BYTES)));
        assert_eq!(cost(&huge, json(&huge)), None);
    }

    #[test]
    fn a_forgotten_record_is_gone() {
        let mut recent = Recent::default();
        recent.keep(record(7, "n"), 5);
        recent.forget(7);
        assert!(recent.take(7).is_none());
        assert_eq!(recent.bytes, 0);
    }
}
