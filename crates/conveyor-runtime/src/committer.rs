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

use conveyor_store::{Batch, Linger, Store, StoreError};
use tokio::sync::oneshot;

/// Most steps in one transaction.
const MAX_GROUP: usize = 1024;
/// How long a group under load waits for more steps to join it.
const GATHER: std::time::Duration = std::time::Duration::from_micros(300);
/// A step arriving within this long of the last group's end is part of a stream.
const STREAM: std::time::Duration = std::time::Duration::from_millis(2);

/// What the committer needs of a store: to apply groups and batches, and to flush.
/// Every [`Store`] is one; a test can stand in with only these.
pub(crate) trait Sink: Send + Sync + 'static {
    fn commit_group(&self, batches: &[Batch]) -> Result<(), StoreError>;
    fn commit(&self, batch: &Batch) -> Result<(), StoreError>;
    fn flush(&self) -> Result<(), StoreError>;
}

impl<S: Store + ?Sized> Sink for S {
    fn commit_group(&self, batches: &[Batch]) -> Result<(), StoreError> {
        Store::commit_group(self, batches)
    }
    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        Store::commit(self, batch)
    }
    fn flush(&self) -> Result<(), StoreError> {
        Store::flush(self)
    }
}

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
    /// Every group is flushed (`flush_each_step`): no step commits in place.
    flush: bool,
}

/// How many transactions the committer applied, and how many steps they held; and
/// whether one is in the store right now, since when.
#[derive(Debug, Default)]
pub(crate) struct CommitStats {
    pub(crate) groups: AtomicU64,
    pub(crate) steps: AtomicU64,
    /// Of the groups, those of one step applied on its own thread (`commit_here`).
    pub(crate) in_place: AtomicU64,
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
    pub fn start<S: Sink + ?Sized>(store: Arc<S>, flush: bool) -> Committer {
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
            flush,
        }
    }

    /// Applies a step's `batch` on the caller's thread, when the store can without
    /// waiting ([`Store::commit_quick`]) and no flush is owed for it; `None` otherwise
    /// (then it goes to this committer's thread).
    ///
    /// Why: when the store is idle, handing a batch to the thread costs more than
    /// applying it (a wake of the thread, its wait for others to join, and a wake of the
    /// step's worker with the answer: two context switches or more, against one write
    /// to the page cache). Under load the store is busy and batches still form groups.
    pub fn commit_here(
        &self,
        store: &dyn Store,
        batch: &Batch,
        linger: Linger,
    ) -> Option<Result<(), StoreError>> {
        if self.flush || !store.commits_in_place() {
            return None;
        }
        let result = store.commit_quick(batch, linger)?;
        self.stats.groups.fetch_add(1, Ordering::Relaxed);
        self.stats.steps.fetch_add(1, Ordering::Relaxed);
        self.stats.in_place.fetch_add(1, Ordering::Relaxed);
        Some(result)
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

fn run<S: Sink + ?Sized>(
    store: Arc<S>,
    flush: bool,
    receiver: mpsc::Receiver<Request>,
    stats: Arc<CommitStats>,
) {
    // When the last group ended: commits arriving in a stream are gathered.
    let mut last_end: Option<std::time::Instant> = None;
    while let Ok(first) = receiver.recv() {
        let mut group = vec![first];
        drain(&receiver, &mut group);
        // Under load (more than one step waiting, or steps arriving one by one in a
        // stream, such as API calls answering one after another), wait a moment for the
        // steps still running to join this group: every transaction costs the store a
        // write of its own (a write of sled's log, or a frame appended to the log store),
        // and every group costs a wake of this thread and of the steps' workers. The wait
        // is a sleep, not a wait on the channel, so the steps that join do not each wake
        // this thread. A lone step after a quiet spell is committed at once.
        let streaming = last_end.is_some_and(|end| end.elapsed() < STREAM);
        if group.len() > 1 || streaming {
            std::thread::sleep(GATHER);
            drain(&receiver, &mut group);
        }
        let durable = flush || group.iter().any(|r| r.durable);
        let (batches, senders): (Vec<Batch>, Vec<_>) =
            group.into_iter().map(|r| (r.batch, r.done)).unzip();
        stats.begin();
        let results = apply(store.as_ref(), &batches);
        let flushed = if durable { store.flush() } else { Ok(()) };
        stats.end();
        last_end = Some(std::time::Instant::now());
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

/// Adds what is waiting to the group, up to [`MAX_GROUP`].
fn drain(receiver: &mpsc::Receiver<Request>, group: &mut Vec<Request>) {
    while group.len() < MAX_GROUP {
        match receiver.try_recv() {
            Ok(request) => group.push(request),
            Err(_) => break,
        }
    }
}

/// Applies a group as one transaction (the store adds up counter changes and encodes
/// straight from the steps' batches, nothing is copied); if that fails (one step's ref
/// was taken, say), each batch is applied on its own so only the faulty one fails.
/// When tasks of the group were taken over by another engine (a shared store), only
/// the steps of those tasks fail and the others are applied again as one group.
fn apply<S: Sink + ?Sized>(store: &S, batches: &[Batch]) -> Vec<Result<(), StoreError>> {
    match store.commit_group(batches) {
        Ok(()) => batches.iter().map(|_| Ok(())).collect(),
        Err(StoreError::Fenced { tasks }) if batches.len() > 1 => {
            apply_without_fenced(store, batches, &tasks)
        }
        Err(_) if batches.len() > 1 => batches.iter().map(|b| store.commit(b)).collect(),
        Err(e) => vec![Err(e)],
    }
}

/// The group without the batches that change the tasks taken over (`lost`): those fail
/// with [`StoreError::Fenced`], the rest is applied again (copies: this is the rare path).
fn apply_without_fenced<S: Sink + ?Sized>(
    store: &S,
    batches: &[Batch],
    lost: &[u64],
) -> Vec<Result<(), StoreError>> {
    let lost_by: Vec<Vec<u64>> = batches
        .iter()
        .map(|b| {
            let mut tasks: Vec<u64> = b.claimed_tasks().filter(|t| lost.contains(t)).collect();
            tasks.sort_unstable();
            tasks.dedup();
            tasks
        })
        .collect();
    if lost_by.iter().all(Vec::is_empty) {
        // The store named no task of these batches: apply each on its own.
        return batches.iter().map(|b| store.commit(b)).collect();
    }
    let rest: Vec<Batch> = batches
        .iter()
        .zip(&lost_by)
        .filter(|(_, lost)| lost.is_empty())
        .map(|(b, _)| b.clone())
        .collect();
    let mut rest_results = if rest.is_empty() {
        Vec::new()
    } else {
        apply(store, &rest)
    }
    .into_iter();
    lost_by
        .into_iter()
        .map(|tasks| {
            if tasks.is_empty() {
                rest_results
                    .next()
                    .unwrap_or_else(|| Err(StoreError::Io("a commit result went missing".into())))
            } else {
                Err(StoreError::Fenced { tasks })
            }
        })
        .collect()
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

    /// Two engines on one PostgreSQL: A's group holds the steps of two tasks, one of
    /// which B took over. Only that step fails; the other is committed.
    #[test]
    fn a_group_with_a_task_taken_over_fails_only_that_tasks_step() {
        use conveyor_store::{Op, PgOptions, PgStore, test_postgres};
        let Some(server) = test_postgres::require("committer_fenced") else {
            return;
        };
        let url = test_postgres::fresh_database(server, "committer_fenced")
            .unwrap_or_else(|e| panic!("{e}"));
        let open = || {
            let options = PgOptions {
                lease: std::time::Duration::from_secs(60),
                pool_size: 2,
                ..PgOptions::default()
            };
            PgStore::open(&url, options).unwrap_or_else(|e| panic!("{e}"))
        };
        let (a, b) = (open(), open());
        let ids = [(); 2].map(|_| a.next_task_id().unwrap_or_else(|e| panic!("{e}")));
        let step = |id: u64, node: &str| {
            let mut batch = Batch::default();
            batch.push(Op::PutTask(Box::new(conveyor_store::conformance::task(
                id, node,
            ))));
            batch.push(Op::SetReady(id));
            batch
        };
        for id in ids {
            Store::commit(&a, &step(id, "first")).unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(a.claim(&ids).unwrap_or_default(), ids.to_vec());
        // A's claim of the first task runs out; B takes it over.
        let expire = format!(
            "UPDATE claims SET until = now() - interval '1 second' WHERE task = {}",
            ids[0]
        );
        let out = std::process::Command::new("psql")
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &url,
                "-c",
                &expire,
            ])
            .output()
            .unwrap_or_else(|e| panic!("psql: {e}"));
        assert!(out.status.success(), "{out:?}");
        assert_eq!(b.claim(&ids[..1]).unwrap_or_default(), vec![ids[0]]);
        let results = apply(&a, &[step(ids[0], "late"), step(ids[1], "second")]);
        assert!(
            matches!(&results[0], Err(StoreError::Fenced { tasks }) if tasks == &vec![ids[0]]),
            "{results:?}"
        );
        assert!(results[1].is_ok(), "{results:?}");
        let node = |id| a.task(id).ok().flatten().map(|t| t.node);
        assert_eq!(node(ids[0]).as_deref(), Some("first"));
        assert_eq!(node(ids[1]).as_deref(), Some("second"));
    }

    /// A real store that writes down, in order, each group it applies and each flush
    /// (a flush takes 50 ms, so an answer sent before it ends would be seen early).
    struct Recording {
        inner: Arc<dyn Store>,
        said: std::sync::Mutex<Vec<&'static str>>,
    }

    impl Recording {
        fn said(&self) -> Vec<&'static str> {
            self.said.lock().map(|s| s.clone()).unwrap_or_default()
        }

        fn note(&self, what: &'static str) {
            if let Ok(mut said) = self.said.lock() {
                said.push(what);
            }
        }
    }

    impl Sink for Recording {
        fn commit_group(&self, batches: &[Batch]) -> Result<(), StoreError> {
            self.note("group");
            Store::commit_group(self.inner.as_ref(), batches)
        }
        fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
            Store::commit(self.inner.as_ref(), batch)
        }
        fn flush(&self) -> Result<(), StoreError> {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let flushed = Store::flush(self.inner.as_ref());
            self.note("flush");
            flushed
        }
    }

    /// What a door's `durable` means: its answer is sent only once the group that holds
    /// it is flushed; a step's plain commit is answered without a flush.
    #[test]
    fn a_durable_request_is_answered_after_its_flush_and_a_plain_one_without_one() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let inner: Arc<dyn Store> =
            conveyor_store::open(dir.path(), Default::default()).unwrap_or_else(|e| panic!("{e}"));
        let store = Arc::new(Recording {
            inner,
            said: std::sync::Mutex::default(),
        });
        let committer = Committer::start(store.clone(), false);
        let sender = committer.sender().unwrap_or_else(|| panic!("no sender"));
        let send = |durable: bool| {
            let (done, answer) = oneshot::channel();
            sender
                .send(Request {
                    batch: Batch::default(),
                    durable,
                    done,
                })
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(answer.blocking_recv().is_ok_and(|r| r.is_ok()));
            store.said()
        };
        assert_eq!(send(false), ["group"]);
        assert_eq!(send(true), ["group", "group", "flush"]);
        assert_eq!(send(false), ["group", "group", "flush", "group"]);
    }

    /// A step's batch is applied where it ran when the store can do that without
    /// waiting (the log store, idle) and no flush is owed; with `flush_each_step`, or on
    /// a store that never commits in place (sled), it goes to the committer's thread.
    #[test]
    fn a_step_commits_in_place_only_without_a_flush_owed_and_on_a_store_that_can() {
        use conveyor_store::{Op, StoreKind, StoreOptions};
        let open = |kind| {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            let options = StoreOptions {
                kind,
                ..StoreOptions::default()
            };
            let store: Arc<dyn Store> =
                conveyor_store::open(dir.path(), options).unwrap_or_else(|e| panic!("{e}"));
            (dir, store)
        };
        let batch = |id: u64| {
            let mut batch = Batch::default();
            batch.push(Op::PutTask(Box::new(conveyor_store::conformance::task(
                id, "here",
            ))));
            batch
        };
        let (_dir, log) = open(StoreKind::Log);
        // A store's first commit marks its format (a file written and synced): never in
        // place.
        let committer = Committer::start(log.clone(), false);
        assert!(
            committer
                .commit_here(log.as_ref(), &batch(9), Linger::May)
                .is_none()
        );
        log.commit(&batch(9)).unwrap_or_else(|e| panic!("{e}"));
        // The store's background flusher holds its writer a moment now and then (every
        // 500 ms, every 10 ms while steps stream): a quick commit that meets it answers
        // `None`, so try a few times.
        let applied = (0..20).find_map(|_| {
            let applied = committer.commit_here(log.as_ref(), &batch(1), Linger::May);
            if applied.is_none() {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            applied
        });
        assert!(matches!(applied, Some(Ok(()))), "{applied:?}");
        assert_eq!(
            log.task(1).ok().flatten().map(|t| t.node).as_deref(),
            Some("here")
        );
        assert_eq!(committer.stats().in_place.load(Ordering::Relaxed), 1);
        let flushing = Committer::start(log.clone(), true);
        assert!(
            flushing
                .commit_here(log.as_ref(), &batch(2), Linger::May)
                .is_none()
        );
        assert!(log.task(2).ok().flatten().is_none());
        let (_dir, sled) = open(StoreKind::Sled);
        let committer = Committer::start(sled.clone(), false);
        assert!(
            committer
                .commit_here(sled.as_ref(), &batch(3), Linger::May)
                .is_none()
        );
        assert_eq!(committer.stats().in_place.load(Ordering::Relaxed), 0);
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
