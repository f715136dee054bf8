//! Giving a store's free space back to the file system ([`compact`]): the store is
//! rewritten, record by record, into a new one of the same kind beside it, compared, and
//! swapped in.
//!
//! Why: sled frees the space of removed tasks and trimmed histories inside its files
//! and reuses it for new writes, so its size stays bounded while it runs, but its files
//! shrink only when the free space happens to sit at their end. A sled store that once
//! held a million tasks keeps the size of a million after retention removed them.
//! Rewriting it gives the space back. (The log store compacts itself while it runs; this
//! works on it too and leaves it at its live size at once.)
//!
//! **Crash safety.** The swap is two renames: `store` → `store.compact-old`, then the new
//! store → `store`. [`finish_interrupted`] (run by every [`open`](crate::open)) completes
//! or undoes a swap a crash cut short, so at every instant the data dir opens one whole
//! store: the new one only once it was written, flushed, reopened, compared with the old
//! one and marked `VERIFIED`; the old one otherwise.

use std::path::{Path, PathBuf};

use crate::migrate::{open_kind, open_source};
use crate::*;

/// What [`compact`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactReport {
    pub kind: StoreKind,
    /// Bytes on disk before and after.
    pub before: u64,
    pub after: u64,
    pub counts: Counts,
}

/// Where the new store is written.
pub(crate) fn staging(data: &Path) -> PathBuf {
    data.join(".compact")
}

/// Where the old store waits between the two renames.
pub(crate) fn old_dir(data: &Path, kind: StoreKind) -> PathBuf {
    data.join(format!("{}.compact-old", dir_name(kind)))
}

/// The name of a kind's directory in a data dir (`store`, `log`).
fn dir_name(kind: StoreKind) -> String {
    kind.dir_in(Path::new(""))
        .to_string_lossy()
        .trim_start_matches('/')
        .to_string()
}

pub(crate) const VERIFIED: &str = "VERIFIED";

fn io(what: String, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("{what}: {e}"))
}

/// Rewrites the store of `data` into a new one of the same kind and swaps it in; the old
/// one is removed once the new one is in place. The store must not be in use (its lock
/// is held throughout); the data dir needs room for a second copy of the live data.
pub fn compact(data: &Path, options: StoreOptions) -> Result<CompactReport> {
    finish_interrupted(data)?;
    let kinds: Vec<StoreKind> = [StoreKind::Sled, StoreKind::Log]
        .into_iter()
        .filter(|k| k.dir_in(data).exists())
        .collect();
    let kind = match kinds.as_slice() {
        [one] => *one,
        [] => {
            return Err(StoreError::Io(format!(
                "{} holds no store to compact",
                data.display()
            )));
        }
        _ => {
            return Err(StoreError::Io(format!(
                "{} holds both a log store and a sled store (a migration cut short): finish or undo it first",
                data.display()
            )));
        }
    };
    let options = StoreOptions { kind, ..options };
    // Opened first: its lock keeps a second compaction out before anything is removed.
    let source = open_source(kind, data, options)?;
    let staging = staging(data);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| {
            io(
                format!(
                    "cannot remove {} (left by a compaction cut short)",
                    staging.display()
                ),
                e,
            )
        })?;
    }
    let before = source.size_on_disk()?;
    {
        let target = open_kind(kind, &staging, options)?;
        copy(source.as_ref(), target.as_ref())?;
        target.checkpoint()?;
    }
    if kind == StoreKind::Sled {
        // Its snapshot written now, so the first open after the swap is quick.
        SledStore::checkpoint(&staging, options)?;
    }
    let counts = {
        let target = open_kind(kind, &staging, options)?;
        let differences = compare(source.as_ref(), target.as_ref())?;
        if !differences.is_empty() {
            return Err(StoreError::Io(format!(
                "the compacted store in {} differs from the store ({} difference(s), the first: {}); nothing was changed",
                staging.display(),
                differences.len(),
                differences[0]
            )));
        }
        counts(target.as_ref())?
    };
    std::fs::write(staging.join(VERIFIED), b"")
        .map_err(|e| io(format!("cannot mark {} verified", staging.display()), e))?;
    sync_dir(&staging);
    // The old store stays open (and locked) until both renames are done: nothing else
    // can open the data dir in between.
    let current = kind.dir_in(data);
    let old = old_dir(data, kind);
    std::fs::rename(&current, &old).map_err(|e| {
        io(
            format!(
                "cannot move {} aside to {}",
                current.display(),
                old.display()
            ),
            e,
        )
    })?;
    std::fs::rename(kind.dir_in(&staging), &current).map_err(|e| {
        io(
            format!(
                "the old store is in {} and the new one in {}: the next open puts the new one in place",
                old.display(),
                staging.display()
            ),
            e,
        )
    })?;
    sync_dir(data);
    drop(source);
    finish_interrupted(data)?;
    let after = open_kind(kind, data, options)?.size_on_disk()?;
    Ok(CompactReport {
        kind,
        before,
        after,
        counts,
    })
}

/// Completes or undoes a compaction a crash cut short between its two renames (see the
/// module's comment), and removes what a finished one left behind. Does nothing unless
/// an old store was moved aside, so it never touches a compaction still writing.
pub fn finish_interrupted(data: &Path) -> Result<()> {
    let staging = staging(data);
    let moved_aside = [StoreKind::Sled, StoreKind::Log]
        .into_iter()
        .any(|kind| old_dir(data, kind).exists());
    if !moved_aside {
        return Ok(());
    }
    for kind in [StoreKind::Sled, StoreKind::Log] {
        let current = kind.dir_in(data);
        let old = old_dir(data, kind);
        if !old.exists() {
            continue;
        }
        if !current.exists() {
            let new = kind.dir_in(&staging);
            let (from, what) = if staging.join(VERIFIED).exists() && new.exists() {
                (new, "the verified new store")
            } else {
                (old.clone(), "the old store")
            };
            tracing::warn!(
                data = %data.display(),
                "a compaction of the store was cut short: putting {what} in place"
            );
            std::fs::rename(&from, &current).map_err(|e| {
                io(
                    format!(
                        "a compaction was cut short; cannot move {} to {}",
                        from.display(),
                        current.display()
                    ),
                    e,
                )
            })?;
            sync_dir(data);
        }
        if old.exists() {
            std::fs::remove_dir_all(&old)
                .map_err(|e| io(format!("cannot remove {}", old.display()), e))?;
        }
    }
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .map_err(|e| io(format!("cannot remove {}", staging.display()), e))?;
    }
    Ok(())
}

/// Makes renames in `dir` durable (best effort: some file systems refuse it).
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(handle) = std::fs::File::open(dir) {
        let _ = handle.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::new_process;

    /// A store that held `n` tasks of which all but every tenth were deleted.
    fn fill_and_delete(data: &Path, kind: StoreKind, n: u64) {
        let options = StoreOptions {
            kind,
            ..StoreOptions::default()
        };
        let store = crate::open(data, options).unwrap();
        crate::test_support::fill_and_remove(store.as_ref(), n, true);
        store.checkpoint().unwrap();
    }

    fn compacts_and_keeps_everything(kind: StoreKind) {
        let dir = tempfile::tempdir().unwrap();
        fill_and_delete(dir.path(), kind, 20_000);
        // Let sled's threads let go of the files (see test_support::reopen_sled).
        let report = {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            loop {
                match compact(dir.path(), StoreOptions::default()) {
                    Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(20))
                    }
                    other => break other.unwrap(),
                }
            }
        };
        assert_eq!(report.kind, kind);
        assert_eq!(report.counts.tasks, 2_000);
        assert_eq!(report.counts.timers, 2_000);
        assert!(
            report.after * 3 < report.before,
            "{kind:?}: {} bytes before, {} after",
            report.before,
            report.after
        );
        let store = crate::open(dir.path(), StoreOptions::default()).unwrap();
        let task = store.task_by_ref(1, "r9").unwrap().unwrap();
        assert_eq!(task.id, 10);
        assert_eq!(task.data["body"].as_str().map(str::len), Some(2_000));
        assert!(store.task(9).unwrap().is_none());
        // New ids go on past the old ones.
        assert!(store.next_task_id().unwrap() > 20_000);
        assert!(!staging(dir.path()).exists());
        assert!(!old_dir(dir.path(), kind).exists());
    }

    #[test]
    fn a_sled_store_gives_the_space_of_removed_tasks_back() {
        compacts_and_keeps_everything(StoreKind::Sled);
    }

    #[test]
    fn a_log_store_compacts_too() {
        compacts_and_keeps_everything(StoreKind::Log);
    }

    /// A crash between the two renames: without the VERIFIED mark the old store comes
    /// back; with it, the new one goes in.
    #[test]
    fn a_swap_cut_short_is_finished_or_undone_by_the_next_open() {
        for verified in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let data = dir.path();
            {
                let old = crate::open(data, StoreOptions::default()).unwrap();
                old.create_process(new_process(Some("old"))).unwrap();
                old.checkpoint().unwrap();
                let new = SledStore::open(&staging(data)).unwrap();
                new.create_process(new_process(Some("new"))).unwrap();
                new.checkpoint().unwrap();
            }
            if verified {
                std::fs::write(staging(data).join(VERIFIED), b"").unwrap();
            }
            let current = StoreKind::Sled.dir_in(data);
            std::fs::rename(&current, old_dir(data, StoreKind::Sled)).unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            let store = loop {
                match crate::open(data, StoreOptions::default()) {
                    Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(20))
                    }
                    other => break other.unwrap(),
                }
            };
            let expected = if verified { "new" } else { "old" };
            assert!(
                store.process_by_alias(expected).unwrap().is_some(),
                "verified: {verified}"
            );
            assert!(!old_dir(data, StoreKind::Sled).exists());
            assert!(!staging(data).exists());
        }
    }
}
