//! Where Conveyor keeps everything: processes, tasks by id, the unique `(process, ref)`
//! index, timers ordered by due time, the ready set, node counters, task history and task
//! inboxes.
//!
//! The rest of Conveyor speaks the [`Store`] trait, and [`open`] picks the implementation:
//! [`SledStore`] (sled; what new data directories get) or [`LogStore`] (an append-only
//! log with its indexes in memory, the opt-in for throughput; data directories made with
//! it keep using it). [`PgStore`] keeps everything in PostgreSQL instead, which several
//! engines share (`--store postgres://…`). This is the only crate that knows any of
//! them. Every move of a task is one [`Batch`], applied atomically: a crash at any
//! instant leaves either all of a batch or none of it.
//!
//! # Layout
//!
//! - `records.rs`: the records kept (processes, tasks, history events, messages).
//! - `sled_store.rs`, `log_store.rs`, `pg_store.rs`: the implementations (`pg_store/`:
//!   its schema migrations, how a group is folded into statements, claims and leases,
//!   LISTEN/NOTIFY; `sled_store/reclaim.rs`: a running sled store giving the space of
//!   removed tasks back; `log_store/`: its binary encodings, `codec.rs` for frames and
//!   `binary.rs` for task records and history events, and `recent.rs`, the records
//!   kept for the next read).
//! - `sealed_store.rs`, `seal.rs`, `keys.rs`: secrets sealed at rest over any store.
//! - `migrate.rs`: moving a data dir between kinds of store, comparing two stores;
//!   `compact.rs`: rewriting a store into a new one of the same kind.
//! - `conformance.rs`: the [`Store`] contract as tests, for every implementation.
//! - `test_postgres.rs`: a throwaway PostgreSQL server for tests.

mod compact;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod keys;
mod log_store;
mod migrate;
mod pg_store;
mod records;
#[cfg(test)]
mod retention_tests;
mod seal;
mod sealed_store;
mod sled_store;
#[cfg(any(test, feature = "conformance"))]
pub mod test_postgres;
#[cfg(test)]
mod test_support;

use std::path::Path;
use std::sync::Arc;

pub use compact::{CompactReport, compact, finish_interrupted};
pub use log_store::{LOG_FORMAT_VERSION, LogCut, LogProblem, LogReport, LogStore};
pub use migrate::{
    Counts, MigrateReport, compare, copy, counts, kept_dir, migrate, read_everything,
};
pub use pg_store::{Change, Listener, PgOptions, PgStore, Vacuumed};
pub use records::*;
pub use sled_store::{ReclaimPolicy, SledStore};

pub use keys::{
    KeySource, SealRecord, begin_rotation, end_rotation, open_keyring, read_record, record_path,
};
pub use seal::{Keyring, Place, SealError, Sealer, key_id, parse_key, sealed_with};
pub use sealed_store::{ResealReport, SealPolicy, SealedStore};

/// Whether a [`Store::commit_quick`] may wait in memory a moment, to be written with the
/// commits after it (the log store's tail).
///
/// An engine step's may: a write that fails later fails the next commit, and a crash
/// runs the step again. A door's create or modify may not: its caller is told the
/// outcome of the flush that follows, and a refusal (a full disk) must leave nothing
/// behind to be written later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linger {
    May,
    No,
}

/// Which implementation a *new* store gets (an existing one keeps its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreKind {
    /// [`LogStore`]: the opt-in for throughput (`--store-kind log`).
    Log,
    /// [`SledStore`]: the default.
    #[default]
    Sled,
}

/// How a store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// The most memory sled's page cache may hold, in bytes (sled stores only). sled's own
    /// default (1 GiB) lets the process grow to about the size of the whole store; 48 MiB
    /// keeps a million waiting tasks under 512 MB of RSS (`docs/benchmarks.md`), at some
    /// cost in throughput on stores much larger than the cache.
    pub cache_bytes: u64,
    /// The implementation a new data directory gets.
    pub kind: StoreKind,
    /// When a sled store rewrites itself to give the space of removed tasks back while
    /// the engine runs (sled stores only; see `sled_store/reclaim.rs`).
    pub reclaim: ReclaimPolicy,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            cache_bytes: 48 * 1024 * 1024,
            kind: StoreKind::default(),
            reclaim: ReclaimPolicy::default(),
        }
    }
}

/// The implementation of the store in `data`: the one it holds, or `options.kind` for a
/// new one.
pub fn kind_of(data: &Path, options: StoreOptions) -> StoreKind {
    if SledStore::dir_in(data).exists() {
        StoreKind::Sled
    } else if LogStore::dir_in(data).exists() {
        StoreKind::Log
    } else {
        options.kind
    }
}

/// Opens (or creates) the store in the data directory `data`.
pub fn open(data: &Path, options: StoreOptions) -> Result<Arc<dyn Store>> {
    compact::finish_interrupted(data)?;
    Ok(match kind_of(data, options) {
        StoreKind::Log => Arc::new(LogStore::open(data)?),
        StoreKind::Sled => Arc::new(SledStore::open_with(data, options)?),
    })
}

/// [`open`], to read only (`store verify`, or a copy of the store to elsewhere): a log
/// store is opened with [`LogStore::open_to_read`], so it compacts nothing and refuses
/// writes; a sled store as [`open`] opens it.
pub fn open_to_read(data: &Path, options: StoreOptions) -> Result<Arc<dyn Store>> {
    compact::finish_interrupted(data)?;
    Ok(match kind_of(data, options) {
        StoreKind::Log => Arc::new(LogStore::open_to_read(data)?),
        StoreKind::Sled => Arc::new(SledStore::open_with(data, options)?),
    })
}

/// After an engine stopped cleanly and closed the store: prepares it for a quick next
/// open. A sled store is opened and closed once ([`SledStore::checkpoint`]); a log store
/// already wrote its snapshot when it closed.
pub fn checkpoint(data: &Path, options: StoreOptions) -> Result<()> {
    match kind_of(data, options) {
        StoreKind::Sled => SledStore::checkpoint(data, options),
        StoreKind::Log => Ok(()),
    }
}

/// What [`Store::space_given_back`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpaceGivenBack {
    /// Rewrites of the store (a sled store copying its live data into new files; a log
    /// store's segment compacted).
    pub rewrites: u64,
    /// Bytes the files shrank by, in all.
    pub bytes: u64,
    /// The longest time commits waited for a rewrite (for the log store: the longest
    /// time a compaction held the writer at once).
    pub longest_pause: std::time::Duration,
}

/// What [`Store::admit`] counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Tasks started in the window, the new one included.
    pub started: u64,
    /// The window's summary task, if the count went past the limit.
    pub summary: Option<u64>,
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the store in {path} is in use by a running Conveyor engine (`conveyor serve` or `conveyor run`): stop it and try again"
    )]
    Locked { path: String },
    #[error(
        "the store in {path} has format version {found}, newer than this conveyor understands ({supported}); upgrade conveyor"
    )]
    NewerFormat {
        path: String,
        found: u32,
        supported: u32,
    },
    #[error("ref '{reference}' already exists in process {process}")]
    DuplicateRef { process: u64, reference: String },
    #[error("alias '@{alias}' is already used by process {process}")]
    DuplicateAlias { alias: String, process: u64 },
    #[error("no process {0}")]
    NoProcess(u64),
    #[error(
        "the disk holding the store is full (no space left on device): nothing more was written; free some space and try again"
    )]
    DiskFull,
    #[error(
        "the store in {path} is on a read-only file system: Conveyor must be able to write there"
    )]
    ReadOnly { path: String },
    #[error("a stored record could not be read ({what}): {reason}")]
    Corrupt { what: String, reason: String },
    #[error("storage error: {0}")]
    Io(String),
    /// The database cannot be reached (down, restarting, refusing connections): nothing
    /// of the call was done; it may be tried again.
    #[error("the database at {place} is unavailable ({reason}); nothing was changed, try again")]
    Unavailable { place: String, reason: String },
    /// Another engine took over these tasks (this engine's claim on them ran out):
    /// nothing of the commit was written.
    #[error("tasks {tasks:?} were taken over by another engine; this commit was dropped")]
    Fenced { tasks: Vec<u64> },
    /// A secret value could not be sealed or opened (see [`SealedStore`]).
    #[error(transparent)]
    Sealed(#[from] SealError),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// What the engine and the commands need from storage.
///
/// Reads return owned records; writes of task state go through [`Store::commit`].
///
/// # Contract
///
/// What every implementation promises ([`LogStore`], [`SledStore`], [`SealedStore`] over
/// either, and any store added later). The conformance suite
/// ([`conformance`](crate::conformance), feature `conformance`) holds each of them to it:
/// a new store runs the whole suite with one line.
///
/// - **Atomic commits.** [`Store::commit`] applies all of a [`Batch`] or none of it, and
///   [`Store::commit_group`] all of its batches or none of them — also across a crash at
///   any instant: a store reopened after a crash holds each commit whole or not at all,
///   never a part. A group that fails (a [`StoreError::DuplicateRef`], a full disk)
///   changes nothing. Several [`Op::Count`]s of one counter in a group add up.
/// - **Visibility.** Once `commit`/`commit_group` (or any other write) returns, every
///   read on any thread sees it; a read never sees part of a commit.
/// - **Durability.** After [`Store::flush`] returns, every write that returned before it
///   survives a crash of the process and a power loss (as far as the platform's sync
///   promises: `docs/reliability.md`). Before that, a write survives the process being
///   killed only where the implementation says so ([`LogStore`]: at once, the kernel has
///   the frame, except a [`Store::commit_quick`] that came in a stream: normally within
///   about 12 ms; [`SledStore`]: not until sled's own flush, ≤ 500 ms). A store reopened
///   after a crash holds a prefix of the commits in the order they returned: never a
///   later commit without an earlier one.
/// - **Unique numbers, across crashes.** [`Store::next_task_id`] never returns a number
///   twice, also across crashes and reopens, as long as the number was used in a commit
///   that survived (as a task id or an inbox seq: both come from this counter). Process
///   ids and API logins are never given twice either, also after an API key was deleted.
/// - **Unique refs.** A `(process, ref)` names at most one task: an [`Op::InsertRef`] for
///   a ref held by another task — before, or earlier in the same group — fails the whole
///   group with [`StoreError::DuplicateRef`]. [`Op::DeleteTask`] frees the ref.
/// - **Timer order.** [`Store::due_timers`] returns timers in `(due, task)` order, due
///   times before 0 included, strictly after `after`; [`Store::next_timer`] is the first.
/// - **Reads in order.** [`Store::tasks`] in id order, [`Store::inbox`] in seq order,
///   [`Store::history`] in the order written (records in `seq` order).
/// - **Checkpoint.** [`Store::checkpoint`] does what `flush` does and may also write what
///   lets the next open start quickly (the log store's snapshot); it never changes what
///   is stored. Reopening after a crash needs no checkpoint: a store opens without one.
/// - **Migration.** [`Store::next_ids`] and [`Store::restore`] copy what the ordinary
///   writes cannot say (records with their ids, the counters), so that
///   [`migrate`](crate::migrate) moves a data dir between kinds unchanged.
/// - **Sharing.** A store that several engines share ([`Store::shared`]: [`PgStore`])
///   hands each task to one engine at a time ([`Store::claim`], [`Store::claim_work`]);
///   a commit that changes a task whose claim another engine took over fails whole
///   with [`StoreError::Fenced`]. Limits that hold for all engines together are kept
///   in the store too: rate-limit windows ([`Store::admit`]) and the places of an
///   `api_call` node's concurrency ([`Store::call_slot`]), which a dead engine's hold
///   gives back by itself. A store of one engine claims everything for it and leaves
///   limits to its engine (the defaults).
/// - **Space.** Removed tasks and trimmed histories give their space back to the file
///   system while the store is in use, without a read ever failing or seeing less than
///   before: the log store by compacting its segments, [`SledStore`] by rewriting itself
///   once most of its files are dead ([`ReclaimPolicy`]), PostgreSQL by its autovacuum.
///   [`Store::maintenance_running`] says whether such work is under way.
pub trait Store: Send + Sync + 'static {
    // Processes.
    fn create_process(&self, new: NewProcess) -> Result<ProcessRecord>;
    fn update_process(&self, id: u64, definition: String) -> Result<ProcessRecord>;
    /// Sets or replaces the secret of a process's direct URL.
    fn set_url_hash(&self, id: u64, hash: String) -> Result<ProcessRecord>;
    fn process(&self, id: u64) -> Result<Option<ProcessRecord>>;
    fn process_by_alias(&self, alias: &str) -> Result<Option<ProcessRecord>>;
    /// The id of the process with this alias.
    fn alias(&self, alias: &str) -> Result<Option<u64>>;
    fn processes(&self) -> Result<Vec<ProcessRecord>>;
    /// Replaces a process's settings (its version stays): how [`SealedStore`] writes
    /// sealed settings and re-seals them under a new key.
    fn set_settings(
        &self,
        id: u64,
        settings: serde_json::Map<String, serde_json::Value>,
    ) -> Result<ProcessRecord>;

    // Tasks.
    /// A fresh task id (never reused).
    fn next_task_id(&self) -> Result<u64>;
    fn task(&self, id: u64) -> Result<Option<TaskRecord>>;
    fn task_by_ref(&self, process: u64, reference: &str) -> Result<Option<TaskRecord>>;
    /// Tasks of a process (optionally only those in `node`), in id order, at most `limit`.
    fn tasks(&self, process: u64, node: Option<&str>, limit: usize) -> Result<Vec<TaskRecord>>;
    fn history(&self, task: u64) -> Result<Vec<HistoryEvent>>;
    fn inbox(&self, task: u64) -> Result<Vec<(u64, InboxMessage)>>;
    /// Tasks with messages waiting in their inbox.
    fn inbox_tasks(&self) -> Result<Vec<u64>>;

    // Counters: (node, counter) for each node that ever held a task.
    fn counters(&self, process: u64) -> Result<Vec<(String, NodeCounter)>>;

    // Scheduling.
    /// Tasks that need work (new, woken, or in flight when the engine stopped).
    fn ready(&self) -> Result<Vec<u64>>;
    /// Timers due at or before `now`, in due order, after `after` (exclusive), at most `limit`.
    fn due_timers(&self, now: i64, after: Option<TimerKey>, limit: usize) -> Result<Vec<TimerKey>>;
    /// The earliest timer.
    fn next_timer(&self) -> Result<Option<TimerKey>>;

    // API keys.
    /// Stores a new key; its login is the next number.
    fn create_api_key(
        &self,
        name: &str,
        secret: &str,
        processes: Vec<u64>,
        created: i64,
    ) -> Result<ApiKey>;
    fn api_key(&self, login: u64) -> Result<Option<ApiKey>>;
    fn api_keys(&self) -> Result<Vec<ApiKey>>;
    /// Replaces the secret of key `login` (`api-key rotate`); `None` when there is no
    /// such key. Readers see the new secret at once.
    fn set_api_key_secret(&self, login: u64, secret: &str) -> Result<Option<ApiKey>>;
    /// Deletes key `login` (`api-key delete`); false when there was none. Its login is
    /// never given to another key.
    fn delete_api_key(&self, login: u64) -> Result<bool>;

    /// Applies a batch atomically: all of it or none.
    fn commit(&self, batch: &Batch) -> Result<()> {
        self.commit_group(std::slice::from_ref(batch))
    }
    /// Applies several batches as one atomic transaction (group commit): all of them or
    /// none. Changes to one counter add up.
    fn commit_group(&self, batches: &[Batch]) -> Result<()>;
    /// Applies `batch` now, on the caller's thread, if that cannot wait: what lets the
    /// engine commit a step where it ran instead of handing it to its committer thread.
    ///
    /// # Contract
    /// - `Some(result)`: the batch was applied exactly as [`Store::commit`] would have
    ///   applied it (or refused, with the error `commit` would give, and nothing written).
    /// - `None`: nothing was written; the caller commits it the usual way.
    /// - It never waits long: not on a commit another thread is applying, not on the
    ///   disk beyond a write to the page cache (no flush, no segment to seal), not on
    ///   maintenance (a snapshot due is left to the next [`Store::commit_group`]). A
    ///   commit that would wait answers `None`. (The log store compacts on a thread of its
    ///   own, so a compaction due does not make it answer `None`.)
    /// - Like `commit`, it is not durable until a [`Store::flush`]. With
    ///   [`Linger::May`] it may reach the kernel later than `commit` would (the log
    ///   store holds it in memory a few milliseconds, its tail): reads see it at once, a
    ///   later write or `flush` writes it first, and a store reopened after a crash
    ///   holds it only with every commit before it, and never a later commit without
    ///   it. With [`Linger::No`] it is written as `commit` writes.
    ///
    /// The default answers `None`: sled may wait on its own threads, and a shared store
    /// on the network.
    fn commit_quick(&self, _batch: &Batch, _linger: Linger) -> Option<Result<()>> {
        None
    }
    /// Whether [`Store::commit_quick`] ever answers `Some`: a wrapper asks before it
    /// does work of its own for a quick commit (the sealed store's sealing).
    fn commits_in_place(&self) -> bool {
        false
    }
    /// Makes everything committed so far durable on disk.
    fn flush(&self) -> Result<()>;
    /// Makes everything durable and, where the store has one, writes what lets the next
    /// open start quickly (the log store's snapshot). Called when an engine stops.
    fn checkpoint(&self) -> Result<()> {
        self.flush()
    }
    /// Bytes the store takes on disk.
    fn size_on_disk(&self) -> Result<u64>;
    /// Whether the store is giving space back in the background right now or is about to
    /// (a sled store rewriting itself; the log store compacting, or with a compaction
    /// due), so that a measure of [`Store::size_on_disk`] waits for it.
    fn maintenance_running(&self) -> bool {
        false
    }
    /// What the store's own background work gave back since it was opened: sled's
    /// rewrites, the log store's compactions (one a segment; the longest pause is the
    /// longest time a compaction held the writer). `None`: a store that does none it
    /// could report (PostgreSQL, whose autovacuum is its own).
    fn space_given_back(&self) -> Option<SpaceGivenBack> {
        None
    }

    /// The next number of each counter (what the next task id, process id and API login
    /// would be), without taking one.
    fn next_ids(&self) -> Result<NextIds>;
    /// Writes a record with the id it has (a process, an API key) or moves the counters
    /// up to at least `NextIds` (never down): what a migration copies from another store.
    fn restore(&self, item: Restore) -> Result<()>;

    /// Whether other engines may work on this store at the same time (then the engine
    /// claims tasks before it steps them, and caches nothing another engine may change).
    fn shared(&self) -> bool {
        false
    }
    /// Claims `tasks` for their steps; returns those it got (the others are held by
    /// another engine). Each stays this engine's until [`Store::release`]. A step reads
    /// its task after this claim, and its commit is checked against this claim: it is
    /// refused ([`StoreError::Fenced`]) if another engine claimed the task since, even
    /// when this engine found the task again afterwards with [`Store::claim_work`].
    fn claim(&self, tasks: &[u64]) -> Result<Vec<u64>> {
        Ok(tasks.to_vec())
    }
    /// [`Store::claim`] without blocking the caller's thread.
    fn claim_async(&self, tasks: Vec<u64>) -> ClaimFuture {
        Box::pin(std::future::ready(Ok(tasks)))
    }
    /// Claims up to `limit` tasks with work no engine holds (ready, with messages, or
    /// with a timer due at `now`), including those of an engine that stopped. This only
    /// finds work: each task's step still claims it with [`Store::claim`] before it reads.
    fn claim_work(&self, _now: i64, _limit: usize) -> Result<Vec<u64>> {
        Ok(Vec::new())
    }
    /// The step of `task` is over: its claim may go.
    fn release(&self, _task: u64) {}
    /// Counts a new task of a rate-limited `process` in its window number `window`, for
    /// every engine of a shared store: how many started in the window (this one
    /// included) and the window's summary task, which becomes `candidate` (the new
    /// task's id) when the count is past `max` and the window has none yet. `None`: the
    /// store has one engine, which counts by itself (the default).
    fn admit(
        &self,
        _process: u64,
        _window: i64,
        _max: u32,
        _candidate: u64,
    ) -> Result<Option<Admission>> {
        Ok(None)
    }
    /// Calls `listener` with what other engines announce (see [`Change`]).
    fn watch(&self, _listener: Listener) {}
    /// Takes one of the `limit` places of the `api_call` node `node` of `process` for a
    /// call that lasts at most `hold`, for every engine of a shared store together:
    /// `None` while all of them are taken. The place is free again when given back
    /// ([`Store::give_back_call_slot`]) or, if its engine died during the call, once
    /// `hold` has passed. A store of one engine has no other engine to share a limit
    /// with: it gives a place at once (the engine's own semaphore is the limit).
    fn call_slot(
        &self,
        _process: u64,
        _node: &str,
        _limit: u32,
        _hold: std::time::Duration,
    ) -> SlotFuture {
        Box::pin(std::future::ready(Ok(Some(CallSlot::default()))))
    }
    /// Gives a place taken with [`Store::call_slot`] back (without waiting for it).
    fn give_back_call_slot(&self, _process: u64, _node: &str, _slot: CallSlot) {}
}

/// A place among the calls of one `api_call` node in flight ([`Store::call_slot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallSlot {
    pub slot: u32,
    /// Tells this call's place from a later call's in the same place.
    pub token: i64,
}

/// What [`Store::call_slot`] returns.
pub type SlotFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Option<CallSlot>>> + Send + 'static>>;

/// What [`Store::claim_async`] returns.
pub type ClaimFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u64>>> + Send + 'static>>;

/// The next number of each counter of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NextIds {
    pub task: u64,
    pub process: u64,
    pub login: u64,
}

/// A record written as it is, with its id (see [`Store::restore`]).
#[derive(Debug, Clone)]
pub enum Restore {
    Process(ProcessRecord),
    ApiKey(ApiKey),
    NextIds(NextIds),
}

/// A timer: due time (ms since the epoch) and task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerKey {
    pub due: i64,
    pub task: u64,
}

/// Changes applied together in one transaction.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub ops: Vec<Op>,
}

impl Batch {
    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The tasks whose record or scheduling this batch changes: those a shared store
    /// checks against this engine's claims ([`StoreError::Fenced`]).
    pub fn claimed_tasks(&self) -> impl Iterator<Item = u64> + '_ {
        self.ops.iter().filter_map(|op| match op {
            Op::PutTask(task) => Some(task.id),
            Op::SetReady(task) | Op::ClearReady(task) | Op::DeleteTask { task, .. } => Some(*task),
            _ => None,
        })
    }
}

/// One change.
#[derive(Debug, Clone)]
pub enum Op {
    /// Writes the task record (new or updated).
    PutTask(Box<TaskRecord>),
    /// Lists a new task under its process (once, when it is created).
    IndexTask {
        process: u64,
        task: u64,
    },
    /// Claims `(process, ref)` for a task; the whole batch fails with
    /// [`StoreError::DuplicateRef`] when the ref is taken.
    InsertRef {
        process: u64,
        reference: String,
        task: u64,
    },
    SetTimer(TimerKey),
    ClearTimer(TimerKey),
    SetReady(u64),
    ClearReady(u64),
    /// Adds to a node's counters.
    Count {
        process: u64,
        node: String,
        now: i64,
        total: u64,
    },
    /// Appends events to a task's history in one record (`seq` is the task's own number
    /// of the first event; a step writes all its events at once).
    History {
        task: u64,
        seq: u64,
        events: Vec<HistoryEvent>,
    },
    /// Leaves a message for a task (a modify, a reply); its owner reads it when it runs.
    Inbox {
        task: u64,
        seq: u64,
        message: InboxMessage,
    },
    ClearInbox {
        task: u64,
        seq: u64,
    },
    /// Replaces a task's whole stored history with `events` (how retention drops the
    /// events between a long-lived task's first and its last ones, leaving a marker
    /// event that counts them). A `History` op after it in the same batch appends to
    /// the new history. Only the step that holds the task writes it, as for `History`.
    ReplaceHistory {
        task: u64,
        events: Vec<HistoryEvent>,
    },
    /// Removes a task with its ref, place in its process, ready entry and history.
    /// (Timers and counters are changed by their own ops in the same batch.)
    DeleteTask {
        task: u64,
        process: u64,
        reference: Option<String>,
    },
}
