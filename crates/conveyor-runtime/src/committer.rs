//! Group commit: steps, and the HTTP doors' creates and modifies (`intake.rs`), hand
//! their batches to one committer thread, which applies everything that is waiting as
//! one store transaction — and flushes once for the whole group when any of them asked
//! for durability (a door's answer means "on disk") or with `flush_each_step` — before
//! it acknowledges each.
//!
//! One transaction for many steps costs far less than one each; a step still learns
//! that *its* batch is durable before it schedules what follows from it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use conveyor_store::{Batch, Store, StoreError};
use tokio::sync::oneshot;

/// Most steps in one transaction.
const MAX_GROUP: usize = 1024;
/// How long a group under load waits for more steps to join it.
const GATHER: std::time::Duration = std::time::Duration::from_micros(300);

pub(crate) struct Request {
    pub batch: Batch,
    /// Acknowledge only once the group is flushed to disk.
    pub durable: bool,
    pub done: oneshot::Sender<Result<(), StoreError>>,
}

pub(crate) struct Committer {
    sender: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<CommitStats>,
}

/// How many transactions the committer applied, and how many steps they held; and
/// whether one is in the store right now, since when.
#[derive(Debug, Default)]
pub(crate) struct CommitStats {
    pub(crate) groups: AtomicU64,
    pub(crate) steps: AtomicU64,
    /// Milliseconds since `epoch` when the group in the store began (0: none is).
    busy_since: AtomicU64,
    epoch: std::sync::OnceLock<std::time::Instant>,
}

impl CommitStats {
    fn now_ms(&self) -> u64 {
        let epoch = self.epoch.get_or_init(std::time::Instant::now);
        // Never 0, which means idle.
        epoch.elapsed().as_millis() as u64 + 1
    }

    fn begin(&self) {
        self.busy_since.store(self.now_ms(), Ordering::Release);
    }

    fn end(&self) {
        self.busy_since.store(0, Ordering::Release);
    }

    /// How long the group now in the store has been there, if one is. A store that
    /// never returns (sled 0.34 can deadlock inside itself: docs/reliability.md) shows
    /// here, and `/healthz` reports it so a supervisor can restart the engine.
    pub(crate) fn in_store_for(&self) -> Option<std::time::Duration> {
        match self.busy_since.load(Ordering::Acquire) {
            0 => None,
            since => Some(std::time::Duration::from_millis(
                self.now_ms().saturating_sub(since),
            )),
        }
    }
}

impl Committer {
    pub fn start(store: Arc<dyn Store>, flush: bool) -> Committer {
        let (sender, receiver) = mpsc::channel::<Request>();
        let stats = Arc::new(CommitStats::default());
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("conveyor-commit".into())
            .spawn(move || run(store, flush, receiver, thread_stats))
            .ok();
        Committer {
            sender: Some(sender),
            thread,
            stats,
        }
    }

    pub fn stats(&self) -> &CommitStats {
        &self.stats
    }

    pub fn sender(&self) -> Option<mpsc::Sender<Request>> {
        self.sender.clone()
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        // Closing the channel ends the thread once it has applied what it holds.
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(
    store: Arc<dyn Store>,
    flush: bool,
    receiver: mpsc::Receiver<Request>,
    stats: Arc<CommitStats>,
) {
    while let Ok(first) = receiver.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        // Under load (more than one step waiting), wait a moment for the steps still
        // running to join this group: every transaction costs the store a write of its own
        // (a write of sled's log, or a frame appended to the log store).
        if group.len() > 1 {
            let deadline = std::time::Instant::now() + GATHER;
            while group.len() < MAX_GROUP {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match receiver.recv_timeout(left) {
                    Ok(request) => group.push(request),
                    Err(_) => break,
                }
            }
        }
        let durable = flush || group.iter().any(|r| r.durable);
        let (batches, senders): (Vec<Batch>, Vec<_>) =
            group.into_iter().map(|r| (r.batch, r.done)).unzip();
        stats.begin();
        let results = apply(store.as_ref(), &batches);
        let flushed = if durable { store.flush() } else { Ok(()) };
        stats.end();
        stats.groups.fetch_add(1, Ordering::Relaxed);
        stats
            .steps
            .fetch_add(batches.len() as u64, Ordering::Relaxed);
        for (done, result) in senders.into_iter().zip(results) {
            let result = match (&result, &flushed) {
                (Ok(()), Err(e)) => Err(StoreError::Io(e.to_string())),
                _ => result,
            };
            let _ = done.send(result);
        }
    }
}

/// Applies a group as one transaction (the store adds up counter changes and encodes
/// straight from the steps' batches, nothing is copied); if that fails (one step's ref
/// was taken, say), each batch is applied on its own so only the faulty one fails.
fn apply(store: &dyn Store, batches: &[Batch]) -> Vec<Result<(), StoreError>> {
    match store.commit_group(batches) {
        Ok(()) => batches.iter().map(|_| Ok(())).collect(),
        Err(_) if batches.len() > 1 => batches.iter().map(|b| store.commit(b)).collect(),
        Err(e) => vec![Err(e)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_in_the_store_is_timed_from_when_it_went_in() {
        let stats = CommitStats::default();
        assert_eq!(stats.in_store_for(), None);
        stats.begin();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let busy = stats.in_store_for().unwrap_or_default();
        assert!(busy >= std::time::Duration::from_millis(29), "{busy:?}");
        stats.end();
        assert_eq!(stats.in_store_for(), None);
    }

    #[test]
    fn an_idle_committer_is_never_in_the_store() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store: Arc<dyn Store> =
            conveyor_store::open(dir.path(), Default::default()).unwrap_or_else(|e| panic!("{e}"));
        let committer = Committer::start(store, false);
        let (done, answer) = oneshot::channel();
        let sender = committer.sender().unwrap_or_else(|| panic!("no sender"));
        sender
            .send(Request {
                batch: Batch::default(),
                durable: true,
                done,
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(answer.blocking_recv().is_ok_and(|r| r.is_ok()));
        assert_eq!(committer.stats().in_store_for(), None);
        assert_eq!(committer.stats().groups.load(Ordering::Relaxed), 1);
    }
}
