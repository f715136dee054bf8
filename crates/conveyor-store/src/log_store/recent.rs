//! Task records the log store wrote lately, kept decoded.
//!
//! The usual reader of a task record is the engine's next step of that task, soon after
//! the commit that wrote it (a door's create, then the step that calls out; a step
//! that leaves the task ready, then the next). Handing it the record the commit held
//! saves a `pread` and a JSON decode, which cost more than the copy made here.
//!
//! A record is kept until it is read, replaced, deleted, or pushed out by newer ones:
//! at most [`MAX_RECORDS`] records and [`MAX_BYTES`] of their encoded size, so memory
//! stays bounded whatever the size of the tasks. Reading one *takes* it: a second read
//! goes to the log, as every read did before.
//!
//! The store changes it only under its writer's lock, after a frame is applied, so a
//! record here is never older than the log's: a reader gets either the record the last
//! acknowledged commit wrote or, as before, the one on disk.

use std::collections::{BTreeMap, HashMap};

use crate::TaskRecord;

/// Most records kept.
pub(super) const MAX_RECORDS: usize = 16_384;
/// Most bytes (of their JSON encoding) kept.
pub(super) const MAX_BYTES: usize = 32 * 1024 * 1024;

#[derive(Default)]
pub(super) struct Recent {
    /// Task id → when it was kept, its encoded size, the record.
    records: HashMap<u64, (u64, usize, TaskRecord)>,
    /// When kept → task id: the oldest is pushed out first.
    order: BTreeMap<u64, u64>,
    next: u64,
    bytes: usize,
}

impl Recent {
    /// Keeps `record` (`bytes`: its encoded size) in place of any older one of its task.
    pub(super) fn keep(&mut self, record: TaskRecord, bytes: usize) {
        self.forget(record.id);
        if bytes > MAX_BYTES {
            return;
        }
        let at = self.next;
        self.next += 1;
        self.order.insert(at, record.id);
        self.bytes += bytes;
        self.records.insert(record.id, (at, bytes, record));
        while self.records.len() > MAX_RECORDS || self.bytes > MAX_BYTES {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((_, bytes, _)) = self.records.remove(&oldest) {
                self.bytes -= bytes;
            }
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
        let (at, bytes, record) = self.records.remove(&id)?;
        self.order.remove(&at);
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
        assert!(recent.order.is_empty());
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
    fn a_forgotten_record_is_gone() {
        let mut recent = Recent::default();
        recent.keep(record(7, "n"), 5);
        recent.forget(7);
        assert!(recent.take(7).is_none());
        assert_eq!(recent.bytes, 0);
    }
}
