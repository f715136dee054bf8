//! Giving the space of removed tasks back while the engine runs.
//!
//! sled frees the space of removed records inside its file and reuses it for new writes,
//! but the file shrinks only when the free space happens to sit at its end: a store that
//! once held a million tasks keeps that size after retention removed them (measured in
//! docs/benchmarks.md). So a sled store rewrites itself when that is worth it:
//!
//! 1. Every commit counts the tasks it removed and the histories it trimmed. Once
//!    [`ReclaimPolicy::min_removed`] of them have gathered, a thread of the store's own
//!    takes a look, at most once per [`ReclaimPolicy::interval`] (it waits out the rest of
//!    the interval first, so a look always follows the removals that called for it).
//! 2. The look measures the live records (a scan; nothing waits for it) and goes on only
//!    when the files are larger than `ratio` × the live bytes + `floor_bytes`.
//! 3. The rewrite holds the write lock, so commits wait while reads go on: the live
//!    records are copied into a new database beside the store (`.compact/store`),
//!    flushed, compared with the old one record by record, and marked `VERIFIED`.
//! 4. The swap also makes reads wait: once no call holds the old database, it is closed,
//!    and the same two renames as `conveyor store compact` put the new one in place; the
//!    new one is opened and the old one removed.
//!
//! A crash at any point leaves one whole store: before the mark, the old one (the copy
//! is removed by the next open); between the renames, `compact::finish_interrupted`
//! (run by every open) puts the verified copy in place. Commits wait for the length of
//! the copy, which is proportional to the live data (about a second for 200 MiB of
//! files holding little, docs/benchmarks.md), and the ratio keeps that from happening
//! while most of the file is live.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Generation, Inner, SledStore, io};
use crate::compact::{VERIFIED, old_dir, staging, sync_dir};
use crate::{Result, SpaceGivenBack, StoreError, StoreKind};

/// When a sled store gives space back (see the module's comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReclaimPolicy {
    /// Off: the store never rewrites itself (`conveyor store compact` still does).
    pub enabled: bool,
    /// Files smaller than this are left alone, and this much slack is always allowed.
    pub floor_bytes: u64,
    /// The files may be this many times the live bytes (plus the floor) before a rewrite.
    pub ratio: u64,
    /// Tasks removed or histories trimmed since the last look before another is taken.
    pub min_removed: u64,
    /// The shortest time between two looks.
    pub interval: Duration,
}

impl Default for ReclaimPolicy {
    fn default() -> Self {
        ReclaimPolicy {
            enabled: true,
            floor_bytes: 64 * 1024 * 1024,
            ratio: 4,
            min_removed: 1_000,
            interval: Duration::from_secs(60),
        }
    }
}

/// What a rewrite did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reclaimed {
    /// Bytes on disk before and after.
    pub before: u64,
    pub after: u64,
    /// Records copied.
    pub records: u64,
    /// How long commits waited.
    pub took: Duration,
}

/// The maintenance state a store and its thread share.
#[derive(Default)]
pub(crate) struct State {
    /// Tasks removed and histories trimmed since the last look.
    removed: AtomicU64,
    /// A maintenance thread is waiting, looking or rewriting.
    busy: AtomicBool,
    /// The store is closing: a thread stops at its next check.
    stop: AtomicBool,
    last_look: Mutex<Option<Instant>>,
    /// Rewrites done, bytes given back in all, and the longest wait of commits (ms).
    rewrites: AtomicU64,
    given_back: AtomicU64,
    longest_pause_ms: AtomicU64,
}

impl SledStore {
    /// Counts `n` removals (tasks, trimmed histories) of a commit and starts a look when
    /// enough have gathered (see the module's comment).
    pub(super) fn removed(&self, n: u64) {
        let policy = self.inner.options.reclaim;
        if n == 0 || !policy.enabled {
            return;
        }
        let state = &self.inner.reclaim;
        let total = state.removed.fetch_add(n, Ordering::Relaxed) + n;
        if total < policy.min_removed || state.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = Arc::clone(&self.inner);
        let spawned = std::thread::Builder::new()
            .name("sled-reclaim".into())
            .spawn(move || {
                inner.look_when_due();
                inner.reclaim.busy.store(false, Ordering::Release);
            });
        match spawned {
            Ok(handle) => {
                let mut slot = match self.maintenance.lock() {
                    Ok(slot) => slot,
                    Err(poisoned) => poisoned.into_inner(),
                };
                // The previous thread, if any, has cleared `busy`: it is at its end.
                if let Some(previous) = slot.replace(handle) {
                    let _ = previous.join();
                }
            }
            Err(e) => {
                state.busy.store(false, Ordering::Release);
                tracing::warn!(error = %e, "sled store: cannot start the thread that gives space back");
            }
        }
    }

    /// Tells a maintenance thread to stop and waits for it (a rewrite under way is
    /// abandoned at its next batch; the old store stays as it was).
    pub(super) fn stop_maintenance(&self) {
        self.inner.reclaim.stop.store(true, Ordering::Release);
        let handle = match self.maintenance.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    /// Whether a maintenance thread is waiting, looking or rewriting.
    pub(super) fn rewriting(&self) -> bool {
        self.inner.reclaim.busy.load(Ordering::Acquire)
    }

    /// How many rewrites gave space back, how many bytes in all, the longest pause.
    pub fn reclaimed(&self) -> SpaceGivenBack {
        let state = &self.inner.reclaim;
        SpaceGivenBack {
            rewrites: state.rewrites.load(Ordering::Relaxed),
            bytes: state.given_back.load(Ordering::Relaxed),
            longest_pause: Duration::from_millis(state.longest_pause_ms.load(Ordering::Relaxed)),
        }
    }

    /// Takes a look now, whatever was removed and whenever the last look was: what a
    /// look would do (steps 2 to 4 of the module's comment). `None` when the files were
    /// not worth rewriting.
    pub fn reclaim_now(&self) -> Result<Option<Reclaimed>> {
        self.inner.look()
    }
}

impl Inner {
    /// Waits out the rest of the interval since the last look, then looks.
    fn look_when_due(&self) {
        let policy = self.options.reclaim;
        let due = match self.reclaim.last_look.lock() {
            Ok(last) => last.map(|at| at + policy.interval),
            Err(poisoned) => poisoned.into_inner().map(|at| at + policy.interval),
        };
        if let Some(due) = due {
            while Instant::now() < due {
                if self.reclaim.stop.load(Ordering::Acquire) {
                    return;
                }
                std::thread::sleep((due - Instant::now()).min(Duration::from_millis(50)));
            }
        }
        if let Ok(mut last) = self.reclaim.last_look.lock() {
            *last = Some(Instant::now());
        }
        self.reclaim.removed.store(0, Ordering::Relaxed);
        match self.look() {
            Ok(Some(done)) => tracing::info!(
                before = done.before,
                after = done.after,
                records = done.records,
                took_ms = done.took.as_millis() as u64,
                "sled store: gave the space of removed tasks back"
            ),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "sled store: giving space back failed; the store is unchanged")
            }
        }
    }

    fn stopping(&self) -> Result<()> {
        if self.reclaim.stop.load(Ordering::Acquire) {
            return Err(StoreError::Io(
                "the store is closing: giving space back was abandoned".into(),
            ));
        }
        Ok(())
    }

    /// Steps 2 to 4: measure, and rewrite when worth it.
    fn look(&self) -> Result<Option<Reclaimed>> {
        let policy = self.options.reclaim;
        let db = self.current()?;
        let size = db.db.size_on_disk().map_err(io)?;
        if size < policy.floor_bytes {
            return Ok(None);
        }
        let live = self.live_bytes(&db.tree)?;
        drop(db);
        if size
            <= live
                .saturating_mul(policy.ratio)
                .saturating_add(policy.floor_bytes)
        {
            return Ok(None);
        }
        let done = self.rewrite_and_swap(size)?;
        self.reclaim.rewrites.fetch_add(1, Ordering::Relaxed);
        self.reclaim
            .given_back
            .fetch_add(done.before.saturating_sub(done.after), Ordering::Relaxed);
        self.reclaim
            .longest_pause_ms
            .fetch_max(done.took.as_millis() as u64, Ordering::Relaxed);
        Ok(Some(done))
    }

    /// The bytes of the live records (keys and values, plus a little for each).
    fn live_bytes(&self, tree: &sled::Tree) -> Result<u64> {
        let mut bytes = 0u64;
        for (i, entry) in tree.iter().enumerate() {
            if i % 8192 == 0 {
                self.stopping()?;
            }
            let (k, v) = entry.map_err(io)?;
            bytes += (k.len() + v.len() + 16) as u64;
        }
        Ok(bytes)
    }

    /// Steps 3 and 4.
    fn rewrite_and_swap(&self, before: u64) -> Result<Reclaimed> {
        let started = Instant::now();
        let data = self.data.as_path();
        let staging = staging(data);
        let new_dir = StoreKind::Sled.dir_in(&staging);
        let current = StoreKind::Sled.dir_in(data);
        // Commits wait from here to the end.
        let _guard = self.lock();
        if staging.exists() {
            std::fs::remove_dir_all(&staging)
                .map_err(|e| StoreError::Io(format!("cannot remove {}: {e}", staging.display())))?;
        }
        let old = self.current()?;
        old.db.flush().map_err(io)?;
        let records = match self.copy_verified(&old.tree, &new_dir, &staging) {
            Ok(records) => records,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
        std::fs::write(staging.join(VERIFIED), b"").map_err(|e| {
            StoreError::Io(format!("cannot mark {} verified: {e}", staging.display()))
        })?;
        sync_dir(&staging);

        // Reads wait too from here: the old database must be closed before its files move.
        let mut slot = match self.generation.write() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&old) > 2 {
            // `old` and the slot's own: anything more is a call still reading.
            if Instant::now() > deadline {
                drop(slot);
                let _ = std::fs::remove_dir_all(&staging);
                return Err(StoreError::Io(
                    "reads of the old store did not finish within 5 s".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        *slot = None;
        drop(old);
        let moved = std::fs::rename(&current, old_dir(data, StoreKind::Sled))
            .and_then(|()| std::fs::rename(&new_dir, &current));
        sync_dir(data);
        if let Err(e) = &moved {
            // Whatever is where: `finish_interrupted` puts one whole store in place.
            tracing::warn!(error = %e, "sled store: a rename of the swap failed; restoring");
        }
        crate::compact::finish_interrupted(data)?;
        let reopened = Generation::open_when_free(&current, data, self.options)?;
        let after = reopened.db.size_on_disk().map_err(io)?;
        *slot = Some(Arc::new(reopened));
        drop(slot);
        moved.map_err(|e| StoreError::Io(format!("swapping in the rewritten store: {e}")))?;
        Ok(Reclaimed {
            before,
            after,
            records,
            took: started.elapsed(),
        })
    }

    /// Copies every record of `from` into a new database in `dir`, flushes it, reads it
    /// back and compares it with `from`. Returns the number of records.
    fn copy_verified(&self, from: &sled::Tree, dir: &Path, staging: &Path) -> Result<u64> {
        let new = Generation::open(dir, staging, self.options)?;
        let mut records = 0u64;
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for entry in from.iter() {
            let (k, v) = entry.map_err(io)?;
            batch.insert(k, v);
            in_batch += 1;
            records += 1;
            if in_batch == 4096 {
                self.stopping()?;
                new.tree
                    .apply_batch(std::mem::take(&mut batch))
                    .map_err(io)?;
                in_batch = 0;
            }
        }
        new.tree.apply_batch(batch).map_err(io)?;
        new.db.flush().map_err(io)?;
        let mut theirs = new.tree.iter();
        for (i, ours) in from.iter().enumerate() {
            if i % 8192 == 0 {
                self.stopping()?;
            }
            let ours = ours.map_err(io)?;
            match theirs.next() {
                Some(Ok(copy)) if copy == ours => {}
                _ => {
                    return Err(StoreError::Io(format!(
                        "the rewritten store differs from the store at record {i}; nothing was changed"
                    )));
                }
            }
        }
        if theirs.next().is_some() {
            return Err(StoreError::Io(
                "the rewritten store has more records than the store; nothing was changed".into(),
            ));
        }
        Ok(records)
    }
}
