//! A way out of sled 0.34's known hang (docs/reliability.md, "A known sled deadlock").
//!
//! The hang: a commit holds sled's segment accountant while it waits for an asynchronous
//! truncation of the file's last segment; that truncation is a job queued on sled's
//! process-wide I/O pool, whose threads are all busy writing log buffers, and each of
//! those waits for the accountant. The pool grows only when a job is queued while more
//! than seven wait, so the truncation never runs and everything waits for good. Seen
//! twice before online rewrites (`reclaim.rs`) existed, and twice in one afternoon of
//! retention benchmarks with them: a freshly rewritten store's file grows and shrinks at
//! its end, where the truncations happen.
//!
//! The way out uses only sled's public API: while a commit has been inside sled for
//! longer than [`STUCK_AFTER`], a thread of the store's own queues flush jobs on that
//! same pool ([`sled::Tree::flush_async`]). With more than seven jobs queued and no thread
//! waiting, the pool starts new threads, which take the queued jobs in order, the
//! truncation among them: it runs, the commit goes on, and so does everything behind it.
//! A flush is harmless at any time, so a commit that is merely slow costs a few extra
//! flushes and threads (sled retires its extra threads once idle).

use std::future::Future as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::Inner;

/// How long a commit may be inside sled before the pool is nudged.
pub(crate) const STUCK_AFTER: Duration = Duration::from_secs(2);

/// Flush jobs queued per nudge: more than the seven waiting threads sled keeps, so the
/// pool starts a thread of its own.
const JOBS_PER_NUDGE: usize = 16;

/// When the commit inside sled began (ms since `epoch`, 0 when none is), and how many
/// times the pool was nudged.
pub(crate) struct Watch {
    epoch: Instant,
    since_ms: AtomicU64,
    nudges: AtomicU64,
}

impl Default for Watch {
    fn default() -> Self {
        Watch {
            epoch: Instant::now(),
            since_ms: AtomicU64::new(0),
            nudges: AtomicU64::new(0),
        }
    }
}

impl Watch {
    /// A commit enters sled; the guard marks it out again when dropped.
    pub(crate) fn enter(&self) -> Entered<'_> {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.since_ms.store(now.max(1), Ordering::Release);
        Entered(self)
    }

    /// How long the commit now inside sled has been there.
    fn inside_for(&self) -> Option<Duration> {
        match self.since_ms.load(Ordering::Acquire) {
            0 => None,
            since => {
                let now = self.epoch.elapsed().as_millis() as u64;
                Some(Duration::from_millis(now.saturating_sub(since)))
            }
        }
    }
}

pub(crate) struct Entered<'a>(&'a Watch);

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        self.0.since_ms.store(0, Ordering::Release);
    }
}

/// Starts the thread that watches the store's commits; it ends with the store.
pub(crate) fn start(inner: Weak<Inner>) {
    let spawned = std::thread::Builder::new()
        .name("sled-watchdog".into())
        .spawn(move || watch(inner));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "sled store: cannot start its watchdog");
    }
}

fn watch(inner: Weak<Inner>) {
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.reclaim_stopping() {
            return;
        }
        if let Some(inside) = inner.watch.inside_for()
            && inside >= STUCK_AFTER
        {
            nudge(&inner, inside);
        }
    }
}

/// Queues flush jobs on sled's I/O pool (see the module's comment).
fn nudge(inner: &Arc<Inner>, inside: Duration) {
    let Ok(db) = inner.current() else {
        return;
    };
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    for _ in 0..JOBS_PER_NUDGE {
        // Polled once, the future queues its job on the pool and then waits for the
        // answer; the job runs whether or not anyone waits, so the future is dropped.
        let mut flush = std::pin::pin!(db.tree.flush_async());
        let _ = flush.as_mut().poll(&mut context);
    }
    let nudges = inner.watch.nudges.fetch_add(1, Ordering::Relaxed) + 1;
    if nudges == 1 || nudges % 20 == 0 {
        tracing::warn!(
            inside_ms = inside.as_millis() as u64,
            nudges,
            "sled store: a commit has been inside sled for a while; nudging its I/O pool (docs/reliability.md, a known sled deadlock)"
        );
    }
}
