//! Which tasks wait in each `queue` node, in the order they entered, so that a
//! `get_task` takes the oldest (or newest) without listing the process's tasks.
//!
//! The store has no index by node: listing a queue means reading every task of its
//! process. Done at every take, draining a queue of N tasks read N² records. Here a
//! queue is listed at its first take; from then on this engine's own steps tell it of
//! every task that comes to wait in it ([`Queues::arrived`]) or leaves it some other
//! way than a take ([`Queues::left`]), once their commit is done, and a take removes
//! what it takes.
//!
//! What is here is a list of candidates, never trusted alone: a task may have left the
//! queue unseen (deleted), so the taker reads each candidate back from the store and
//! drops those no longer waiting there. The queue is listed again when a take finds no
//! candidate and the last listing is a second old or more (a task may have come some
//! way this engine did not see), and when a listing stopped at its limit and the list
//! has run low. A list that grows past [`MAX_LISTED`] is dropped and listed again.
//!
//! Only for a store this engine has to itself: on a store shared by several engines
//! the others' steps fill queues too, and `get_task` lists the queue every time.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A queue is listed again, when needed, at most this often.
const RELIST_AFTER: Duration = Duration::from_secs(1);
/// Most tasks listed for one queue; a list that grows past it starts again.
pub(crate) const MAX_LISTED: usize = 200_000;

/// One queue's waiting tasks, by (when they entered, id).
#[derive(Default)]
struct Waiting {
    tasks: BTreeSet<(i64, u64)>,
    /// When it was last listed from the store (`None`: never, or the list grew too
    /// long and was dropped).
    listed: Option<Instant>,
    /// The last listing found every task waiting (it did not stop at its limit).
    complete: bool,
    /// Listings done so far: a take that waited for another's listing uses it.
    listings: u64,
    /// Held by the take that lists the queue: the takes that come meanwhile wait for
    /// its list (asynchronously: their workers go on) rather than each listing the
    /// queue again.
    listing: Arc<tokio::sync::Mutex<()>>,
}

/// Every queue node's waiting tasks: (process, node) → its tasks.
#[derive(Default)]
pub(crate) struct Queues {
    queues: Mutex<HashMap<(u64, String), Waiting>>,
    /// Per queue node with a `capacity`: held by a step from its count of the tasks
    /// waiting there until its commit (`Step::queue`). One per such node a step has
    /// entered, so bounded by the processes' nodes.
    capacity: Mutex<HashMap<(u64, String), AsyncLock>>,
}

/// A lock held across awaits (a step's commit).
type AsyncLock = Arc<tokio::sync::Mutex<()>>;

impl Queues {
    /// The lock of queue `node` of `process` for steps entering it (its `capacity`).
    pub(crate) fn capacity_lock(&self, process: u64, node: &str) -> AsyncLock {
        let mut locks = self.capacity.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lock) = locks.get(&(process, node.to_string())) {
            return Arc::clone(lock);
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert((process, node.to_string()), Arc::clone(&lock));
        lock
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, String), Waiting>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Task `id` came to wait in queue `node` of `process` at `entered` (its step is
    /// committed). Kept once a take has asked for the queue, also while its listing
    /// runs (the listing may have passed the task already); a queue no take asked for
    /// yet will find it when it is listed.
    pub(crate) fn arrived(&self, process: u64, node: &str, entered: i64, id: u64) {
        let mut queues = self.lock();
        if let Some(waiting) = queues.get_mut(&(process, node.to_string())) {
            waiting.tasks.insert((entered, id));
            if waiting.tasks.len() > MAX_LISTED {
                waiting.tasks.clear();
                waiting.listed = None;
            }
        }
    }

    /// Task `id`, which came to wait at `entered`, left the queue by its own step (its
    /// time limit, `task goto`): it is no candidate any more.
    pub(crate) fn left(&self, process: u64, node: &str, entered: i64, id: u64) {
        if let Some(waiting) = self.lock().get_mut(&(process, node.to_string())) {
            waiting.tasks.remove(&(entered, id));
        }
    }

    /// Whether a take must list the queue before looking: never listed, or the last
    /// listing stopped at its limit, the list has run low and a second has passed.
    /// Until a first listing is done, every take lists it (two takes at once must not
    /// find it empty while the other lists it).
    pub(crate) fn needs_listing(&self, process: u64, node: &str) -> bool {
        let mut queues = self.lock();
        let waiting = queues.entry((process, node.to_string())).or_default();
        match waiting.listed {
            None => true,
            Some(at) => {
                !waiting.complete
                    && waiting.tasks.len() < MAX_LISTED / 4
                    && at.elapsed() >= RELIST_AFTER
            }
        }
    }

    /// Whether a take that found no candidate should list the queue again: the last
    /// listing is a second old or more.
    pub(crate) fn may_relist(&self, process: u64, node: &str) -> bool {
        self.lock()
            .get(&(process, node.to_string()))
            .and_then(|w| w.listed)
            .is_none_or(|at| at.elapsed() >= RELIST_AFTER)
    }

    /// The lock a take holds while it lists the queue, and how many listings were done
    /// when it asked (see [`Waiting::listing`]).
    pub(crate) fn listing_lock(
        &self,
        process: u64,
        node: &str,
    ) -> (Arc<tokio::sync::Mutex<()>>, u64) {
        let mut queues = self.lock();
        let waiting = queues.entry((process, node.to_string())).or_default();
        (Arc::clone(&waiting.listing), waiting.listings)
    }

    /// Whether a listing was done since `seen` listings (another take's, while this one
    /// waited for the lock).
    pub(crate) fn listed_since(&self, process: u64, node: &str, seen: u64) -> bool {
        self.lock()
            .get(&(process, node.to_string()))
            .is_some_and(|w| w.listings > seen)
    }

    /// Adds what a listing of the queue found (kept with what arrived meanwhile);
    /// `complete`: it did not stop at its limit.
    pub(crate) fn listed(
        &self,
        process: u64,
        node: &str,
        found: impl Iterator<Item = (i64, u64)>,
        complete: bool,
    ) {
        let mut queues = self.lock();
        let waiting = queues.entry((process, node.to_string())).or_default();
        waiting.tasks.extend(found);
        waiting.listed = Some(Instant::now());
        waiting.complete = complete;
        waiting.listings += 1;
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
        if let Some(waiting) = self.lock().get_mut(&(process, node.to_string())) {
            waiting.tasks.insert(candidate);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(queues: &Queues, by: Duration) {
        if let Some(waiting) = queues.lock().get_mut(&(1, "q".to_string())) {
            waiting.listed = waiting.listed.and_then(|at| at.checked_sub(by));
        }
    }

    #[test]
    fn a_queue_is_listed_once_then_kept_by_arrivals_departures_and_takes() {
        let queues = Queues::default();
        // Before its first listing, arrivals are not kept: the listing finds them.
        queues.arrived(1, "q", 5, 50);
        assert!(queues.needs_listing(1, "q"));
        assert!(queues.needs_listing(1, "q"), "until a listing is done");
        let (_, seen) = queues.listing_lock(1, "q");
        queues.listed(1, "q", [(5, 50), (7, 70), (8, 80)].into_iter(), true);
        assert!(queues.listed_since(1, "q", seen));
        assert!(!queues.needs_listing(1, "q"), "listed once");
        queues.arrived(1, "q", 9, 90);
        queues.left(1, "q", 8, 80);
        assert_eq!(queues.next(1, "q", false), Some((5, 50)));
        assert_eq!(queues.next(1, "q", true), Some((9, 90)));
        queues.put_back(1, "q", (9, 90));
        assert_eq!(queues.next(1, "q", true), Some((9, 90)));
        assert_eq!(queues.next(1, "q", false), Some((7, 70)));
        assert_eq!(queues.next(1, "q", false), None, "80 left");
        // Other queues are apart.
        assert_eq!(queues.next(2, "q", false), None);
        assert_eq!(queues.next(1, "other", false), None);
    }

    #[test]
    fn a_queue_is_listed_again_when_found_empty_or_cut_short_only_after_a_while() {
        let queues = Queues::default();
        assert!(queues.needs_listing(1, "q"));
        queues.listed(1, "q", std::iter::empty(), true);
        assert!(!queues.may_relist(1, "q"), "just listed");
        age(&queues, RELIST_AFTER);
        assert!(queues.may_relist(1, "q"));
        assert!(!queues.needs_listing(1, "q"), "a complete listing stands");
        // A listing that stopped at its limit is done again once the list runs low.
        queues.listed(1, "q", [(1, 10)].into_iter(), false);
        assert!(!queues.needs_listing(1, "q"));
        age(&queues, RELIST_AFTER);
        assert!(queues.needs_listing(1, "q"));
    }

    #[test]
    fn a_list_grown_past_its_limit_is_dropped_and_listed_again() {
        let queues = Queues::default();
        queues.listed(1, "q", std::iter::empty(), true);
        for id in 0..=MAX_LISTED as u64 {
            queues.arrived(1, "q", 1, id);
        }
        assert!(queues.needs_listing(1, "q"));
        assert_eq!(queues.next(1, "q", false), None);
        // Arrivals while it is listed again are kept with what the listing finds.
        queues.arrived(1, "q", 2, 7);
        queues.listed(1, "q", [(1, 3)].into_iter(), true);
        assert_eq!(queues.next(1, "q", false), Some((1, 3)));
        assert_eq!(queues.next(1, "q", false), Some((2, 7)));
    }
}
