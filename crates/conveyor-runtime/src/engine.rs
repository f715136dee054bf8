//! The engine loop: takes tasks from the queue, runs their steps concurrently, fires
//! timers when they fall due, and stops gracefully.
//!
//! Steps run in *runners*: tokio tasks the loop starts, each of which runs one step at
//! a time and, once a step is booked, takes the next task from the queue itself. A
//! runner ends when the queue is empty. So a busy engine starts no task and wakes no
//! loop per step: the loop wakes for timers, new work, stops and runners that ended.
//! What a step leaves the loop to know (a timer it set, that it failed) reaches it
//! through [`TimerHint`] and [`Booked`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use conveyor_store::TimerKey;
use tokio::task::JoinSet;

use crate::{Result, Runtime, step};

/// How long [`Runtime::run`] runs.
pub enum RunMode {
    /// Until no task is ready and no timer is due (waiting tasks stay waiting).
    UntilIdle,
    /// Like `UntilIdle`, but timers due within this long of the start are waited for
    /// (`run --until-idle --wait 2s`: a 300 ms retry is run, a 25-minute wait is not).
    UntilIdleWithin(std::time::Duration),
    /// Until the future completes (e.g. on SIGTERM); in-flight steps then finish.
    UntilShutdown(Pin<Box<dyn Future<Output = ()> + Send>>),
}

/// How often an engine of a shared store looks for work no engine holds (a crashed
/// engine's, once its claims ran out), besides when another engine announces work.
const POLL_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
/// The least time between two looks that announcements trigger (under load every
/// commit announces).
const POLL_GAP: std::time::Duration = std::time::Duration::from_millis(20);

/// When to look for work in a shared store.
struct Poll {
    last: Option<std::time::Instant>,
    /// Another engine announced work since the last look.
    heard: bool,
    /// The last look filled the room there was: there is likely more.
    full: bool,
    /// Looked once since nothing was left to do (`run --until-idle`).
    looked_since_idle: bool,
}

impl Default for Poll {
    fn default() -> Poll {
        Poll {
            last: None,
            heard: true,
            full: false,
            looked_since_idle: false,
        }
    }
}

impl Poll {
    fn due(&self, room: bool) -> bool {
        if !room {
            return false;
        }
        let since = self.last.map(|l| l.elapsed());
        match since {
            None => true,
            Some(since) => since >= POLL_EVERY || ((self.heard || self.full) && since >= POLL_GAP),
        }
    }

    fn done(&mut self, full: bool) {
        self.last = Some(std::time::Instant::now());
        self.heard = false;
        self.full = full;
    }

    fn heard(&mut self) {
        self.heard = true;
    }

    /// Look at the next turn, whatever the time.
    fn now(&mut self) {
        self.last = None;
    }
}

/// What the runners tell the loop, and the loop them, while a run goes on.
#[derive(Default)]
struct Booked {
    steps: AtomicU64,
    failed_steps: AtomicU64,
    /// A step failed, so whether it set a timer is not known: the loop reads the
    /// timer index again.
    timers_unknown: AtomicBool,
    /// The run is stopping: runners finish their step and take no other task.
    stopping: AtomicBool,
}

/// What a run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunStats {
    pub steps: u64,
    pub failed_steps: u64,
}

impl Runtime {
    /// Runs the engine. At start, re-queues the tasks a stop left ready and fires the
    /// timers that fell due meanwhile.
    pub async fn run(self: &Arc<Self>, mode: RunMode) -> Result<RunStats> {
        // Idle ends the run once no timer is due up to this time (ms).
        let (idle_limit, mut shutdown) = match mode {
            RunMode::UntilIdle => (Some(self.now()), None),
            RunMode::UntilIdleWithin(wait) => (
                Some(
                    self.now()
                        .saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)),
                ),
                None,
            ),
            RunMode::UntilShutdown(f) => (None, Some(f)),
        };
        // Tasks a stop left ready, and tasks with messages (a message and its ready
        // mark are written together, but a step may have cleared the mark after). A
        // shared store's work is claimed instead, a batch at a time (`Poll`).
        let shared = self.store.shared();
        if !shared {
            for id in self.store.ready()? {
                self.schedule_from_engine(id);
            }
            for id in self.store.inbox_tasks()? {
                self.schedule_from_engine(id);
            }
        }
        let mut poll = Poll::default();
        let mut stats = RunStats::default();
        let mut cursor: Option<TimerKey> = None;
        // The earliest timer after `cursor`, as last looked up: `None` when it must be
        // looked up again. Steps report the timers they set, so the store's timer index
        // is read only when a timer is due or something from outside may have set one.
        let mut next_due: Option<Option<i64>> = None;
        let booked = Arc::new(Booked::default());
        let mut running = JoinSet::new();
        loop {
            // A step failed: the timers it may have set are read from the store.
            if booked.timers_unknown.swap(false, Ordering::SeqCst) {
                next_due = None;
            }
            // Timers set outside the steps since the last turn (tasks stepped at a door).
            if let Some(at) = self.timer_hint.take()
                && let Some(known) = next_due
            {
                next_due = Some(Some(known.map_or(at, |k| k.min(at))));
            }
            // Timers that are due become work.
            let now = self.now();
            let must_look = match next_due {
                None => true,
                Some(Some(at)) => at <= now,
                Some(None) => false,
            };
            if must_look {
                let looked = if shared {
                    self.due_elsewhere(now, &mut poll)
                } else {
                    self.fire_due(now, &mut cursor)
                };
                match looked {
                    Ok(next) => next_due = Some(next),
                    // A shared store's server may be away for a moment (restarting):
                    // the engine goes on and looks again shortly.
                    Err(e) if shared => {
                        tracing::warn!(error = %e, "could not read timers; trying again shortly");
                        next_due = Some(Some(now + 500));
                    }
                    Err(e) => return Err(e),
                }
            }
            // Work other engines left (or could not take): claimed here, a batch at a time.
            if shared && poll.due(self.waiting() < self.settings.max_in_flight) {
                let room = self.settings.max_in_flight.saturating_sub(self.waiting());
                match self.store.claim_work(now, room.max(1)) {
                    Ok(claimed) => {
                        poll.done(claimed.len() >= room.max(1));
                        for id in claimed {
                            self.schedule_from_engine(id);
                        }
                    }
                    Err(e) => {
                        poll.done(false);
                        tracing::warn!(error = %e, "could not look for work in the shared store");
                    }
                }
            }
            // Start as much work as allowed: a runner per task, up to the limit; each
            // goes on with the next task in the queue once its step is booked.
            while running.len() < self.settings.max_in_flight {
                let Some(id) = self.take() else { break };
                let runtime = Arc::clone(self);
                let booked = Arc::clone(&booked);
                running.spawn(async move { runtime.runner(id, shared, &booked).await });
            }
            if running.is_empty() && self.queue_is_empty() {
                // A shared store may hold work this engine has not heard of yet.
                if shared && idle_limit.is_some() && !poll.looked_since_idle {
                    poll.looked_since_idle = true;
                    poll.now();
                    continue;
                }
                self.idle.notify_waiters();
                if let Some(limit) = idle_limit {
                    match next_due {
                        // Not known: look it up before deciding.
                        None => continue,
                        Some(next) if next.is_none_or(|at| at > limit) => break,
                        Some(_) => {}
                    }
                }
            } else {
                poll.looked_since_idle = false;
            }
            let next_timer = next_due.flatten();
            if !self.timer_hint.sleeping_until(next_timer) {
                // A timer came from outside while this turn decided when to wake.
                continue;
            }
            let clock = Arc::clone(&self.clock);
            let timer = async move {
                match next_timer {
                    Some(at) => clock.wait_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let stop = async {
                match shutdown.as_mut() {
                    Some(f) => f.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop => break,
                Some(ended) = running.join_next(), if !running.is_empty() => {
                    if let Err(e) = ended {
                        // The step it was running panicked: count it, and read the
                        // timers again, since it may have set one.
                        tracing::error!(error = %e, "a step panicked or was cancelled");
                        stats.failed_steps += 1;
                        next_due = None;
                    }
                }
                // New work: a task a door or a step scheduled, a timer a step told
                // (`TimerHint`), or another engine's news on a shared store. Work from
                // outside the steps may come with a timer the loop has not seen.
                _ = self.work.notified() => {
                    if self.work_outside.swap(false, Ordering::SeqCst) {
                        next_due = None;
                    }
                    if self.work_elsewhere.swap(false, Ordering::Relaxed) {
                        next_due = None;
                        poll.heard();
                    }
                }
                _ = timer => {}
                _ = tokio::time::sleep(POLL_EVERY), if shared => {}
            }
            self.timer_hint.awake();
        }
        // Graceful: let the steps in flight finish; what is not started stays ready.
        booked.stopping.store(true, Ordering::SeqCst);
        while let Some(ended) = running.join_next().await {
            if let Err(e) = ended {
                tracing::error!(error = %e, "a step panicked or was cancelled");
                stats.failed_steps += 1;
            }
        }
        self.store.checkpoint()?;
        stats.steps += booked.steps.load(Ordering::SeqCst);
        stats.failed_steps += booked.failed_steps.load(Ordering::SeqCst);
        Ok(stats)
    }

    /// Runs the step of `id`, books it, and goes on with the next task in the queue
    /// until it is empty or the run stops.
    async fn runner(&self, mut id: u64, shared: bool, booked: &Booked) {
        loop {
            let unbooked = Unbooked { rt: self, id };
            let result = self.claim_and_step(id, shared).await;
            std::mem::forget(unbooked);
            self.finished(id, result, booked);
            if booked.stopping.load(Ordering::SeqCst) {
                return;
            }
            match self.take() {
                Some(next) => id = next,
                None => return,
            }
        }
    }

    /// One step of `id`. On a shared store the step first claims its task; one held
    /// by another engine is left to it (`Ok(None)`).
    async fn claim_and_step(&self, id: u64, shared: bool) -> Result<Option<step::Outcome>> {
        if shared {
            match self.store.claim_async(vec![id]).await {
                Ok(claimed) if claimed.contains(&id) => {}
                Ok(_) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        step::run(self, id).await.map(Some)
    }

    /// Schedules the timers due at `now` after `cursor` (moving it on); returns when
    /// the next one after them is due.
    fn fire_due(&self, now: i64, cursor: &mut Option<TimerKey>) -> Result<Option<i64>> {
        loop {
            let due = self.store.due_timers(now, *cursor, 1024)?;
            for timer in &due {
                self.schedule_from_engine(timer.task);
            }
            if let Some(last) = due.last() {
                *cursor = Some(*last);
            }
            if due.len() < 1024 {
                break;
            }
        }
        Ok(self
            .store
            .due_timers(i64::MAX, *cursor, 1)?
            .first()
            .map(|t| t.due))
    }

    /// On a shared store, due timers are claimed with the rest of the work
    /// (`claim_work`), never scheduled from the timer index: every engine would set its
    /// steps on the same tasks, and all but one would lose each claim. This only tells
    /// the loop to look for work when a timer is due, and when the next one falls due.
    fn due_elsewhere(&self, now: i64, poll: &mut Poll) -> Result<Option<i64>> {
        match self.store.due_timers(i64::MAX, None, 1)?.first() {
            Some(first) if first.due <= now => {
                poll.heard();
                // Due timers may be held by other engines' steps: look again shortly.
                Ok(Some(now + POLL_GAP.as_millis() as i64))
            }
            Some(first) => Ok(Some(first.due)),
            None => Ok(None),
        }
    }

    /// Books a finished step; tells the loop of the timer it left ([`TimerHint`]), or
    /// that it cannot tell ([`Booked::timers_unknown`]).
    fn finished(&self, id: u64, result: Result<Option<step::Outcome>>, booked: &Booked) {
        let result = match result {
            // Another engine held the task: its step was that engine's to run. If work
            // came for it meanwhile (this engine may even have claimed it since, once
            // the other's lease ran out), it is tried again.
            Ok(None) => {
                if self.release(id) {
                    self.schedule_from_engine(id);
                }
                return;
            }
            Ok(Some(outcome)) => Ok(outcome),
            Err(e) => Err(e),
        };
        self.store.release(id);
        booked.steps.fetch_add(1, Ordering::Relaxed);
        self.metrics.step();
        let again = self.release(id);
        match result {
            Ok(outcome) => {
                // A timer already due (it fell due while the step ran) is fired now.
                if again || outcome.wake.is_some_and(|w| w.at <= self.now()) {
                    self.schedule_from_engine(id);
                }
                if let Some(wake) = outcome.wake {
                    self.hint_timer(wake.at);
                }
            }
            Err(crate::RuntimeError::Store(conveyor_store::StoreError::DuplicateRef {
                ..
            })) => {
                // Another step took the ref this step's copy wanted, in the same group of
                // commits. Nothing was written: run the step again; this time the ref is
                // seen taken and the copy fails the Corezoid way (`not_unical_ref`).
                self.schedule_from_engine(id);
            }
            Err(crate::RuntimeError::Store(conveyor_store::StoreError::Fenced { .. })) => {
                // This engine's claim ran out and another engine took the task over:
                // nothing of this step was written. If work was found for it meanwhile
                // (the other engine may have stepped it and let it go), its next step
                // claims it afresh, or leaves it to whoever holds it now.
                tracing::info!(task = id, "task taken over by another engine");
                if again {
                    self.schedule_from_engine(id);
                }
            }
            Err(e) => {
                booked.failed_steps.fetch_add(1, Ordering::Relaxed);
                // The task stays ready in the store; it is tried again on the next start.
                tracing::error!(task = id, error = %e, "step failed");
                booked.timers_unknown.store(true, Ordering::SeqCst);
                self.work.notify_one();
            }
        }
    }

    fn take(&self) -> Option<u64> {
        let mut queue = self.queue.lock().ok()?;
        while let Some(id) = queue.waiting.pop_front() {
            queue.queued.remove(&id);
            // Held (a delete in progress, `Runtime::hold`): it runs once let go.
            if !queue.running.insert(id) {
                queue.again.insert(id);
                continue;
            }
            return Some(id);
        }
        None
    }

    /// Marks a task as no longer running; says whether it got work meanwhile.
    fn release(&self, id: u64) -> bool {
        match self.queue.lock() {
            Ok(mut queue) => {
                queue.running.remove(&id);
                queue.again.remove(&id)
            }
            Err(_) => false,
        }
    }

    /// Tasks queued and not started.
    fn waiting(&self) -> usize {
        self.queue.lock().map(|q| q.waiting.len()).unwrap_or(0)
    }

    fn queue_is_empty(&self) -> bool {
        self.queue
            .lock()
            .map(|q| q.waiting.is_empty())
            .unwrap_or(true)
    }

    /// The semaphore limiting concurrent API calls of one node.
    pub(crate) fn limit(
        &self,
        process: u64,
        node: &str,
        permits: u32,
    ) -> Arc<tokio::sync::Semaphore> {
        let mut limits = match self.limits.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        let nodes = limits.entry(process).or_default();
        // Found by `&str` once there: no key allocated per call.
        if let Some(limit) = nodes.get(node) {
            return limit.clone();
        }
        nodes
            .entry(node.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(permits as usize)))
            .clone()
    }
}

/// A task whose step is running in a runner. Should the step panic, the runner's
/// future is dropped with this in it: the task is let go (not left "running" for good,
/// so work for it later runs, and its claim on a shared store is given back). The loop
/// counts the panic. A step that comes back forgets this and is booked as usual.
struct Unbooked<'r> {
    rt: &'r Runtime,
    id: u64,
}

impl Drop for Unbooked<'_> {
    fn drop(&mut self) {
        self.rt.store.release(self.id);
        if self.rt.release(self.id) {
            self.rt.schedule_from_engine(self.id);
        }
    }
}

/// Timers set where the engine's loop does not see them (a task's first step at its
/// door, `step::run_born`, and the steps its runners run), told to the loop without
/// waking it for each one: a step wakes the loop only when its timer is due before the
/// loop would wake anyway.
///
/// The door records its timer, then reads when the loop will wake; the loop publishes
/// when it will wake, then looks for recorded timers before it sleeps. All of it is
/// sequentially consistent, so at least one side sees the other: the loop takes the
/// timer before sleeping, or the door wakes it.
#[derive(Debug)]
pub(crate) struct TimerHint {
    /// The earliest timer recorded and not yet taken (`i64::MAX`: none).
    earliest: AtomicI64,
    /// When the loop wakes on its own: `i64::MIN` while it is awake (it takes what was
    /// recorded at the top of its next turn), `i64::MAX` when it waits for no timer.
    loop_wakes: AtomicI64,
}

impl Default for TimerHint {
    fn default() -> Self {
        TimerHint {
            earliest: AtomicI64::new(i64::MAX),
            loop_wakes: AtomicI64::new(i64::MIN),
        }
    }
}

impl TimerHint {
    /// Records a timer due at `at` (already committed); says whether the loop must be
    /// woken to see it in time.
    pub(crate) fn set(&self, at: i64) -> bool {
        self.earliest.fetch_min(at, Ordering::SeqCst);
        at < self.loop_wakes.load(Ordering::SeqCst)
    }

    /// The earliest timer recorded since the last take.
    fn take(&self) -> Option<i64> {
        let at = self.earliest.swap(i64::MAX, Ordering::SeqCst);
        (at != i64::MAX).then_some(at)
    }

    /// The loop is about to sleep until `next` (`None`: no timer). Says `false` when a
    /// timer earlier than that was recorded meanwhile: the loop takes another turn.
    fn sleeping_until(&self, next: Option<i64>) -> bool {
        let wakes = next.unwrap_or(i64::MAX);
        self.loop_wakes.store(wakes, Ordering::SeqCst);
        if self.earliest.load(Ordering::SeqCst) < wakes {
            self.awake();
            return false;
        }
        true
    }

    /// The loop woke: what is recorded now is taken at its next turn.
    fn awake(&self) {
        self.loop_wakes.store(i64::MIN, Ordering::SeqCst);
    }
}
