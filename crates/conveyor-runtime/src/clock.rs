//! All time comes from a [`Clock`]: the engine never reads the system time itself, so
//! tests can run a 25-minute wait in milliseconds with a [`ManualClock`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

pub type BoxFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_millis(&self) -> i64;
    /// Completes when the clock reaches `at` (at once if it has).
    fn wait_until(&self, at: i64) -> BoxFuture<'_>;
}

/// The real time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }

    fn wait_until(&self, at: i64) -> BoxFuture<'_> {
        let wait = (at - self.now_millis()).max(0) as u64;
        Box::pin(tokio::time::sleep(Duration::from_millis(wait)))
    }
}

/// A clock that moves only when told to. Waiters wake when it passes their time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<AtomicI64>,
    changed: Arc<watch::Sender<i64>>,
}

impl ManualClock {
    pub fn new(start_millis: i64) -> ManualClock {
        let (changed, _) = watch::channel(start_millis);
        ManualClock {
            now: Arc::new(AtomicI64::new(start_millis)),
            changed: Arc::new(changed),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let now =
            self.now.fetch_add(by.as_millis() as i64, Ordering::SeqCst) + by.as_millis() as i64;
        self.changed.send_replace(now);
    }

    pub fn set(&self, millis: i64) {
        self.now.store(millis, Ordering::SeqCst);
        self.changed.send_replace(millis);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    fn wait_until(&self, at: i64) -> BoxFuture<'_> {
        let mut changed = self.changed.subscribe();
        Box::pin(async move {
            loop {
                if self.now_millis() >= at {
                    return;
                }
                if changed.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}
