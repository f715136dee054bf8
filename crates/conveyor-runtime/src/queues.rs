//! Which tasks wait in each `queue` node, in the order they entered, so that a
//! `get_task` takes the oldest (or newest) without listing the process's tasks.
//!
//! The store has no index by node: listing a queue means reading every task of its
//! process. Done at every take, draining a queue of N tasks read N² records. Here a
//! queue is listed once, at its first take; from then on this engine's own steps tell
//! it of every task that comes to wait in it ([`Queues::arrived`], once that step is
//! committed), and a take removes what it takes.
//!
//! What is here is a list of candidates, never trusted alone: a task may have left the
//! queue another way (its time limit, `task goto`, a removal), so the taker reads each
//! candidate back from the store and passes over those no longer waiting there. A
//! queue that seems empty is listed again, at most once a second, in case a task came
//! some way this engine did not see.
//!
//! Only for a store this engine has to itself: on a store shared by several engines
//! the others' steps fill queues too, and `get_task` lists the queue every time.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A queue that seems empty is listed again after this long at the least.
const RELIST_AFTER: Duration = Duration::from_secs(1);

/// One queue's waiting tasks, by (when they entered, id).
#[derive(Default)]
struct Waiting {
    tasks: BTreeSet<(i64, u64)>,
    /// When it was last listed from the store (`None`: never).
    listed: Option<Instant>,
    /// Held by the take that lists the queue: the takes that come meanwhile wait for
    /// its list rather than each listing the queue again.
    listing: Arc<Mutex<()>>,
}

/// Every queue node's waiting tasks: (process, node) → its tasks.
#[derive(Default)]
pub(crate) struct Queues {
    queues: Mutex<HashMap<(u64, String), Waiting>>,
}

impl Queues {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, String), Waiting>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Task `id` came to wait in queue `node` of `process` at `entered` (its step is
    /// committed). A queue not listed yet will find it when it is.
    pub(crate) fn arrived(&self, process: u64, node: &str, entered: i64, id: u64) {
        if let Some(waiting) = self.lock().get_mut(&(process, node.to_string())) {
            waiting.tasks.insert((entered, id));
        }
    }

    /// Whether the queue must be listed from the store before a take: never listed, or
    /// it seems empty and was last listed a while ago. Until a listing is done, every
    /// take lists it (two takes at once must not find it empty while the other lists
    /// it); from here on, steps arriving are kept ([`Queues::arrived`]).
    pub(crate) fn needs_listing(&self, process: u64, node: &str) -> bool {
        let mut queues = self.lock();
        let waiting = queues.entry((process, node.to_string())).or_default();
        match waiting.listed {
            None => true,
            Some(at) => waiting.tasks.is_empty() && at.elapsed() >= RELIST_AFTER,
        }
    }

    /// The lock a take holds while it lists the queue (see [`Waiting::listing`]).
    pub(crate) fn listing_lock(&self, process: u64, node: &str) -> Arc<Mutex<()>> {
        let mut queues = self.lock();
        let waiting = queues.entry((process, node.to_string())).or_default();
        Arc::clone(&waiting.listing)
    }

    /// Adds what a listing of the queue found (kept with what arrived meanwhile).
    pub(crate) fn listed(&self, process: u64, node: &str, found: impl Iterator<Item = (i64, u64)>) {
        let mut queues = self.lock();
        let waiting = queues.entry((process, node.to_string())).or_default();
        waiting.tasks.extend(found);
        waiting.listed = Some(Instant::now());
    }

    /// The next candidate, oldest first (or newest), taken off the list; the taker
    /// checks it and puts it back ([`Queues::put_back`]) if it stays in the queue.
    pub(crate) fn next(&self, process: u64, node: &str, newest: bool) -> Option<(i64, u64)> {
        let mut queues = self.lock();
        let tasks = &mut queues.get_mut(&(process, node.to_string()))?.tasks;
        if newest {
            tasks.pop_last()
        } else {
            tasks.pop_first()
        }
    }

    /// A candidate taken off by [`Queues::next`] that still waits in the queue (another
    /// step holds it, or the take failed).
    pub(crate) fn put_back(&self, process: u64, node: &str, candidate: (i64, u64)) {
        self.lock()
            .entry((process, node.to_string()))
            .or_default()
            .tasks
            .insert(candidate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_is_listed_once_then_kept_by_arrivals_and_takes() {
        let queues = Queues::default();
        // Before its first listing, arrivals are not kept: the listing finds them.
        queues.arrived(1, "q", 5, 50);
        assert!(queues.needs_listing(1, "q"));
        assert!(queues.needs_listing(1, "q"), "until a listing is done");
        // Arrivals during the listing are kept with what it found.
        queues.arrived(1, "q", 9, 90);
        queues.listed(1, "q", [(5, 50), (7, 70)].into_iter());
        assert!(!queues.needs_listing(1, "q"), "listed once");
        assert_eq!(queues.next(1, "q", false), Some((5, 50)));
        assert_eq!(queues.next(1, "q", true), Some((9, 90)));
        queues.put_back(1, "q", (9, 90));
        assert_eq!(queues.next(1, "q", true), Some((9, 90)));
        assert_eq!(queues.next(1, "q", false), Some((7, 70)));
        assert_eq!(queues.next(1, "q", false), None);
        // Other queues are apart.
        assert_eq!(queues.next(2, "q", false), None);
        assert_eq!(queues.next(1, "other", false), None);
    }

    #[test]
    fn an_empty_queue_is_listed_again_only_after_a_while() {
        let queues = Queues::default();
        assert!(queues.needs_listing(1, "q"));
        queues.listed(1, "q", std::iter::empty());
        assert!(!queues.needs_listing(1, "q"));
        // Seemingly empty, listed long ago: listed again.
        if let Some(waiting) = queues.lock().get_mut(&(1, "q".to_string())) {
            waiting.listed = Instant::now().checked_sub(RELIST_AFTER);
        }
        assert!(queues.needs_listing(1, "q"));
        // Not empty: never listed again, however long ago.
        queues.arrived(1, "q", 1, 10);
        if let Some(waiting) = queues.lock().get_mut(&(1, "q".to_string())) {
            waiting.listed = Instant::now().checked_sub(RELIST_AFTER * 10);
        }
        assert!(!queues.needs_listing(1, "q"));
    }
}
