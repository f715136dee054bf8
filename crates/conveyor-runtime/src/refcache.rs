//! The cache of tasks read by `conv[…].ref[…]`: bounded, and never stale.
//!
//! **Bound.** At most `max_entries` tasks and about `max_bytes` of their data (the size
//! of their JSON text) are kept, over all processes; past either, entries are evicted
//! by the CLOCK rule (a read marks an entry used; the eviction hand passes over a used
//! entry once, clearing the mark, and evicts the first unused one), so tokens read on
//! every step stay while a sweep of refs read once passes through. A task bigger than
//! `max_bytes` on its own is not kept at all.
//!
//! **Never stale.** Every commit that writes or deletes a task with a ref reports it
//! ([`RefCache::commit`]): an entry that is kept is replaced or removed, and the
//! process's *generation* moves on. A task read from the store is kept only if its
//! process's generation did not move while it was read ([`RefCache::generation`] before
//! the read, [`RefCache::insert_read`] after), so a read that raced with a commit (whose
//! report may already have come, and whose entry may already have been evicted) never
//! puts an older value back. Evicting only removes, so it cannot make anything stale:
//! the next read goes to the store.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::{FastMap, RefTask};

/// Default bound on the number of tasks kept. The byte bound is the one that limits
/// memory; this one bounds the bookkeeping (~150 bytes an entry, ~37 MiB when full). At
/// 10,000, a process reading 100,000 refs in turn (`conveyor-bench refs`) missed on
/// every read: the hand swept each entry out before its next read.
pub const DEFAULT_MAX_ENTRIES: usize = 250_000;
/// Default bound on the data kept, in bytes of JSON text.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;

struct Entry {
    data: Arc<RefTask>,
    bytes: usize,
    /// Read since the eviction hand last passed.
    used: AtomicBool,
    /// Which place in `hand` is this entry's (older places of a key are skipped).
    stamp: u64,
}

#[derive(Default)]
struct ProcessRefs {
    /// Moves on with every commit that writes or deletes one of this process's ref'd tasks.
    generation: u64,
    /// By ref: a text any caller that creates a task chooses, so hashed with SipHash,
    /// not [`FastMap`]'s foldhash (which does not claim to resist a caller who picks
    /// colliding keys).
    entries: std::collections::HashMap<String, Entry>,
}

/// See the module documentation.
pub(crate) struct RefCache {
    max_entries: usize,
    max_bytes: usize,
    processes: FastMap<u64, ProcessRefs>,
    /// Entries in the order they were put in, for the eviction hand: (process, ref, stamp).
    hand: VecDeque<(u64, String, u64)>,
    next_stamp: u64,
    entries: usize,
    bytes: usize,
}

impl RefCache {
    pub fn new(max_entries: usize, max_bytes: usize) -> RefCache {
        RefCache {
            max_entries,
            max_bytes,
            processes: FastMap::default(),
            hand: VecDeque::new(),
            next_stamp: 0,
            entries: 0,
            bytes: 0,
        }
    }

    /// The cached data of a task, marked used.
    pub fn get(&self, process: u64, reference: &str) -> Option<Arc<RefTask>> {
        let entry = self.processes.get(&process)?.entries.get(reference)?;
        entry.used.store(true, Ordering::Relaxed);
        Some(entry.data.clone())
    }

    /// The generation of `process`, to be given to [`RefCache::insert_read`] with what
    /// a read of the store that starts after this call returns.
    pub fn generation(&mut self, process: u64) -> u64 {
        self.processes.entry(process).or_default().generation
    }

    /// Keeps a task read from the store, unless a commit to its process was reported
    /// since `generation` was taken (the read may be older than that commit).
    pub fn insert_read(
        &mut self,
        process: u64,
        reference: &str,
        generation: u64,
        data: Arc<RefTask>,
    ) {
        let Some(refs) = self.processes.get(&process) else {
            return;
        };
        if refs.generation != generation {
            return;
        }
        self.put(process, reference, data);
    }

    /// A commit wrote (`Some`) or deleted (`None`) the task with `reference` in
    /// `process`: a kept entry is replaced or removed. Tasks not kept are not added
    /// (only reads add), so writers alone never fill the cache.
    pub fn commit(&mut self, process: u64, reference: &str, write: Option<Arc<RefTask>>) {
        let Some(refs) = self.processes.get_mut(&process) else {
            return;
        };
        refs.generation = refs.generation.wrapping_add(1);
        if !refs.entries.contains_key(reference) {
            return;
        }
        match write {
            Some(data) => self.put(process, reference, data),
            None => self.remove(process, reference),
        }
    }

    /// How many tasks are kept, and the bytes of their data.
    pub fn size(&self) -> (usize, usize) {
        (self.entries, self.bytes)
    }

    fn put(&mut self, process: u64, reference: &str, data: Arc<RefTask>) {
        let bytes = json_size(&data.data) + reference.len();
        if bytes > self.max_bytes || self.max_entries == 0 {
            self.remove(process, reference);
            return;
        }
        let refs = self.processes.entry(process).or_default();
        if let Some(entry) = refs.entries.get_mut(reference) {
            // Same task (a newer commit) or a task made again with the same ref after a
            // delete whose report has not come yet; either way this is the latest.
            self.bytes = self.bytes - entry.bytes + bytes;
            entry.data = data;
            entry.bytes = bytes;
        } else {
            let stamp = self.next_stamp;
            self.next_stamp += 1;
            refs.entries.insert(
                reference.to_string(),
                Entry {
                    data,
                    bytes,
                    used: AtomicBool::new(false),
                    stamp,
                },
            );
            self.hand.push_back((process, reference.to_string(), stamp));
            self.entries += 1;
            self.bytes += bytes;
        }
        self.evict();
    }

    fn remove(&mut self, process: u64, reference: &str) {
        if let Some(entry) = self
            .processes
            .get_mut(&process)
            .and_then(|refs| refs.entries.remove(reference))
        {
            self.entries -= 1;
            self.bytes -= entry.bytes;
        }
        // Places in `hand` of removed entries are skipped when the hand reaches them;
        // when they pile up (many deletes), drop them at once.
        if self.hand.len() > 2 * self.entries + 1024 {
            let processes = &self.processes;
            self.hand.retain(|(p, r, stamp)| {
                processes
                    .get(p)
                    .and_then(|refs| refs.entries.get(r))
                    .is_some_and(|e| e.stamp == *stamp)
            });
        }
    }

    /// Evicts until both bounds hold.
    fn evict(&mut self) {
        while self.entries > self.max_entries || self.bytes > self.max_bytes {
            let Some((process, reference, stamp)) = self.hand.pop_front() else {
                return;
            };
            let Some(entry) = self
                .processes
                .get_mut(&process)
                .and_then(|refs| refs.entries.get_mut(&reference))
            else {
                continue;
            };
            if entry.stamp != stamp {
                continue;
            }
            if entry.used.swap(false, Ordering::Relaxed) {
                // A second chance: to the back of the line.
                self.hand.push_back((process, reference, stamp));
                continue;
            }
            self.remove(process, &reference);
        }
    }
}

/// About the length of `value`'s JSON text, without writing it.
fn json_size(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 12,
        Value::String(s) => s.len() + 2,
        Value::Array(items) => 2 + items.iter().map(|v| json_size(v) + 1).sum::<usize>(),
        Value::Object(map) => {
            2 + map
                .iter()
                .map(|(k, v)| k.len() + 4 + json_size(v))
                .sum::<usize>()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(value: serde_json::Value) -> Arc<RefTask> {
        Arc::new(RefTask {
            data: value,
            secret_keys: Vec::new(),
        })
    }

    fn read(cache: &mut RefCache, process: u64, reference: &str, value: &str) {
        let generation = cache.generation(process);
        cache.insert_read(process, reference, generation, task(json!(value)));
    }

    fn value(cache: &RefCache, process: u64, reference: &str) -> Option<serde_json::Value> {
        cache.get(process, reference).map(|t| t.data.clone())
    }

    #[test]
    fn the_number_of_entries_is_bounded_and_used_entries_stay() {
        let mut cache = RefCache::new(100, usize::MAX);
        read(&mut cache, 1, "token", "AT-1");
        for i in 0..10_000 {
            read(&mut cache, 2, &format!("r{i}"), "x");
            // The token is read all the time: the hand always gives it a second chance.
            assert_eq!(value(&cache, 1, "token"), Some(json!("AT-1")), "after {i}");
            assert!(
                cache.size().0 <= 100,
                "{} entries after {i}",
                cache.size().0
            );
        }
        assert_eq!(cache.size().0, 100);
        // The last ones read are there, the first ones are gone.
        assert!(value(&cache, 2, "r9999").is_some());
        assert!(value(&cache, 2, "r0").is_none());
        assert!(cache.hand.len() <= 2 * 100 + 1024);
    }

    #[test]
    fn the_bytes_are_bounded_and_a_task_too_big_is_not_kept() {
        let big = "x".repeat(1000);
        let mut cache = RefCache::new(usize::MAX, 10_000);
        for i in 0..1000 {
            read(&mut cache, 1, &format!("r{i}"), &big);
            assert!(cache.size().1 <= 10_000, "{:?}", cache.size());
        }
        assert!(cache.size().0 >= 9, "{:?}", cache.size());
        read(&mut cache, 1, "huge", &"y".repeat(20_000));
        assert!(value(&cache, 1, "huge").is_none());
        assert!(cache.size().1 <= 10_000);
    }

    #[test]
    fn a_read_that_raced_with_a_commit_is_not_kept() {
        let mut cache = RefCache::new(10, usize::MAX);
        // The read starts, a commit of version 2 lands and is reported, then the read
        // returns version 1, from before the commit.
        let generation = cache.generation(1);
        cache.commit(1, "t", Some(task(json!("new"))));
        cache.insert_read(1, "t", generation, task(json!("old")));
        assert_eq!(value(&cache, 1, "t"), None);
        // The same with a delete.
        read(&mut cache, 1, "d", "kept");
        let generation = cache.generation(1);
        cache.commit(1, "d", None);
        cache.insert_read(1, "d", generation, task(json!("kept")));
        assert_eq!(value(&cache, 1, "d"), None);
    }

    #[test]
    fn commits_replace_or_remove_kept_entries_and_add_none() {
        let mut cache = RefCache::new(10, usize::MAX);
        read(&mut cache, 1, "t", "v1");
        cache.commit(1, "t", Some(task(json!("v3"))));
        assert_eq!(value(&cache, 1, "t"), Some(json!("v3")));
        cache.commit(1, "other", Some(task(json!("o"))));
        assert_eq!(value(&cache, 1, "other"), None);
        // A process never read from is not tracked at all.
        cache.commit(7, "t", Some(task(json!("o"))));
        assert_eq!(value(&cache, 7, "t"), None);
        cache.commit(1, "t", None);
        assert_eq!(value(&cache, 1, "t"), None);
        assert_eq!(cache.size(), (0, 0));
    }

    #[test]
    fn eviction_never_brings_back_an_older_value() {
        // Entry evicted while a read of the same task was under way, after a newer commit:
        // the read must not put the older value back.
        let mut cache = RefCache::new(1, usize::MAX);
        read(&mut cache, 1, "t", "v1");
        let generation = cache.generation(1);
        cache.commit(1, "t", Some(task(json!("v2"))));
        read(&mut cache, 1, "u", "u1"); // evicts t
        assert_eq!(value(&cache, 1, "t"), None);
        cache.insert_read(1, "t", generation, task(json!("v1")));
        assert_eq!(value(&cache, 1, "t"), None);
    }
}
