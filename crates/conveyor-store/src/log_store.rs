//! The log implementation of [`Store`]: an append-only log of batches, with its indexes
//! in memory.
//!
//! Every write (a step's batch, a group of them, a new process, an API key) is one
//! **frame** appended to the active **segment** file with one `pwrite`:
//!
//! ```text
//! frame   = payload length (u32) · CRC-32 of the payload (u32) · payload
//! payload = entry · entry · …          (one entry per change, see the tags below)
//! ```
//!
//! A frame is the unit of atomicity: after a crash, opening the store replays the frames
//! after the last snapshot and stops at the first torn or zeroed one (a frame the crash
//! cut short), which it cuts off. A write handed to the kernel survives the process
//! dying; [`Store::flush`] (and a background flush every 500 ms) makes it survive power
//! loss too.
//!
//! The one write that waits: the commits of engine steps made in place
//! ([`Store::commit_quick`] with [`Linger::May`], and neither creating a task nor
//! sending a message) while they come in a stream join the **tail**, frames
//! applied to the indexes (and read from memory) but not yet written: the first such
//! commit 2 ms after the tail began writes it, or the flusher does within about 12 ms
//! when no commit comes, so that one `pwrite` writes the frames of many steps. A process
//! that dies loses the tail and those steps run again, as a step under way does; the
//! log on file is always whole up to its last frame. Every other write, a flush, a roll
//! and a snapshot write the tail first (`LogStore::lingers`).
//!
//! What is in memory: every index (task id → where its record is, the `(process, ref)`
//! index, timers in due order, the ready set, counters, inboxes, the head of each task's
//! history chain) and the processes and API keys. Task records, history and inbox
//! messages stay on disk and are read with `pread` when asked for, so memory grows by
//! about 200 bytes per task, not by the task's size. Task records and history events
//! are written in bytes (`binary.rs`, format 3); JSON ones of older logs read as before.
//! Two exceptions, both bounded: the
//! records of ready tasks written lately (those under 4 KiB as written) are kept decoded
//! until their next read (the engine's next step of the task), up to 28,672 of them and
//! about 32 MiB of memory (`recent.rs`); and the tail (below), at most about 512 KiB.
//!
//! **Snapshots** (`snapshot`, replaced atomically) hold the indexes as of a position in
//! the log, so an open reads the snapshot and replays only what came after it. One is
//! taken after every 256 MiB of log, after a compaction, and when the store closes with
//! more than 4 MiB written since the last. Taking one (encoding the indexes) holds the
//! writer's lock; writing it is the job of a thread of its own.
//!
//! **Compaction** (`compaction.rs`, on a thread of its own): superseded task records,
//! deleted tasks and read messages leave dead bytes behind. When the sealed segments
//! hold 64 MiB or more and the log is more than twice the live data, the live values of
//! the oldest segment are copied to the head (a task's history merged into one record,
//! or copied record by record when one of them does not decode) and a snapshot is
//! taken; the segment is deleted once that snapshot is on disk. The values are read
//! without the writer's lock and copied a frame of about 1 MiB at a time, each
//! only if no commit replaced it meanwhile: commits, in place ones included, go on
//! while a segment is compacted.
//!
//! Every write goes through `append`, and every frame — written now or replayed at open —
//! reaches the indexes through the one function `apply`, so a replay cannot disagree
//! with what the engine saw when it wrote.

mod binary;
mod codec;
mod compaction;
mod recent;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use codec::{Dec, Enc};

use crate::*;

/// The on-disk format of the log this code writes and understands.
/// 2: adds the entry `NEXT_IDS` (written by a migration).
/// 3: task records and history events are written in bytes (`binary.rs`), not JSON.
/// Logs of versions 1 and 2 are read as they are. A new store is marked 1 (so an older
/// conveyor still opens it) until a commit first writes to it, when it is marked 3.
pub const LOG_FORMAT_VERSION: u32 = 3;
/// The version from which task records and history events may be binary.
const BINARY_FORMAT: u32 = 3;
/// What a new store is marked with.
const NEW_STORE_FORMAT: u32 = 1;

/// Writes the format version of the log store in `dir` whole or not at all (a new
/// file, synced, then renamed).
fn write_format(dir: &Path, version: u32) -> Result<()> {
    let tmp = dir.join("FORMAT.tmp");
    let file = File::create(&tmp).map_err(io)?;
    file.write_all_at(&version.to_le_bytes(), 0)
        .and_then(|_| file.sync_all())
        .and_then(|_| std::fs::rename(&tmp, dir.join("FORMAT")))
        .map_err(io)?;
    sync_dir(dir)
}

/// When the log rolls, snapshots and compacts.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// A segment is sealed and a new one begun once it holds this much.
    segment_bytes: u64,
    /// A snapshot is written after this much log.
    snapshot_after: u64,
    /// On close, a snapshot is written only when more than this was written since the
    /// last (replaying a few MiB at the next open is quicker than writing the indexes).
    snapshot_on_close_after: u64,
    /// Compaction starts once the sealed segments hold at least this much, and the log
    /// is more than twice the live data.
    compact_min: u64,
}

const LIMITS: Limits = Limits {
    segment_bytes: 64 << 20,
    snapshot_after: 256 << 20,
    snapshot_on_close_after: 4 << 20,
    compact_min: 64 << 20,
};
const COMPACT_RATIO: u64 = 2;
/// How often the background flusher makes what was written durable.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
/// A step's commit waits in the tail (frames applied, not yet written) for the commits
/// after it, so that one `pwrite` writes them all: the first commit this long after the
/// tail began writes it (on its own thread, whose caches are warm).
const LINGER: std::time::Duration = std::time::Duration::from_millis(2);
/// When no commit came to write the tail (the stream stopped), the flusher writes it
/// within this long: it wakes this often while commits stream. (Waking a thread for
/// each tail costs more than the `pwrite`s it saves.)
const BACKSTOP: std::time::Duration = std::time::Duration::from_millis(10);
/// A step's commit within this long of the one before it is part of a stream: only then
/// does it wait in the tail (a lone commit is written at once).
const STREAM: std::time::Duration = std::time::Duration::from_millis(2);
/// A tail this large is written at once.
const TAIL_BYTES: usize = 256 << 10;
const SNAPSHOT_MAGIC: &[u8; 16] = b"conveyor-snap-1\n";

// Entry tags.
const PUT_TASK: u8 = 1;
const INSERT_REF: u8 = 2;
const SET_TIMER: u8 = 3;
const CLEAR_TIMER: u8 = 4;
const SET_READY: u8 = 5;
const CLEAR_READY: u8 = 6;
const COUNT: u8 = 7;
/// A history record: its value is the location of the task's previous record (16
/// bytes; none when its length is 0) followed by the events (in bytes since format 3,
/// `binary.rs`; JSON before).
const HISTORY: u8 = 8;
const INBOX: u8 = 9;
const CLEAR_INBOX: u8 = 10;
const DELETE_TASK: u8 = 11;
const PUT_PROCESS: u8 = 12;
const PUT_API_KEY: u8 = 13;
/// A task's whole history in one record, replacing its chain (written by compaction).
const HISTORY_RESET: u8 = 14;
/// An API key deleted (its login).
const DELETE_API_KEY: u8 = 15;
/// The counters raised to at least: next task id, next process id, next login (a
/// migration; format 2).
const NEXT_IDS: u8 = 16;

/// Where a value lives in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Loc {
    segment: u32,
    len: u32,
    offset: u64,
}

impl Loc {
    fn encode(&self, enc: &mut Enc) {
        enc.u32(self.segment);
        enc.u32(self.len);
        enc.u64(self.offset);
    }

    fn decode(dec: &mut Dec<'_>) -> Result<Loc> {
        Ok(Loc {
            segment: dec.u32()?,
            len: dec.u32()?,
            offset: dec.u64()?,
        })
    }
}

/// Bytes of a [`Loc`] at the start of a history value.
const LOC_BYTES: usize = 16;

#[derive(Debug, Clone, Copy)]
struct TaskEntry {
    process: u64,
    loc: Loc,
}

/// A task's history: the newest record (each names the one before it), the oldest
/// segment any of them is in, and their bytes.
#[derive(Debug, Clone, Copy)]
struct HistoryChain {
    head: Loc,
    oldest: u32,
    bytes: u64,
}

/// Maps keyed by what the store hands out (task ids), not by what a caller chose, hash
/// with foldhash: SipHash showed in the profile of every commit.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Every index, as of the end of the last frame applied.
#[derive(Default)]
struct State {
    processes: BTreeMap<u64, ProcessRecord>,
    aliases: HashMap<String, u64>,
    api_keys: BTreeMap<u64, ApiKey>,
    tasks: BTreeMap<u64, TaskEntry>,
    history: FastMap<u64, HistoryChain>,
    refs: HashMap<u64, HashMap<String, u64>>,
    timers: BTreeSet<TimerKey>,
    ready: BTreeSet<u64>,
    counters: BTreeMap<u64, BTreeMap<String, NodeCounter>>,
    inbox: BTreeMap<(u64, u64), Loc>,
    next_task: u64,
    next_process: u64,
    next_login: u64,
    /// Bytes of the values the indexes point to.
    live: u64,
    /// Open segment files, for reads.
    files: BTreeMap<u32, Arc<File>>,
    /// Frames applied but not yet written: reads of a value in them are served from here.
    tail: Tail,
}

/// Frames applied to the indexes but not yet written to the active segment: the commits
/// of steps that came in a stream, waiting for the ones after them so that one `pwrite`
/// writes them all ([`LogStore::write_tail`]). They start at byte
/// `at` of segment `segment` and end where the writer's `len` says.
#[derive(Default)]
struct Tail {
    segment: u32,
    at: u64,
    bytes: Vec<u8>,
}

impl Tail {
    /// The bytes at `loc`, if they are in the tail (a value lies inside one frame, and a
    /// frame is in the tail whole or not at all).
    fn get(&self, loc: Loc) -> Option<&[u8]> {
        if self.bytes.is_empty() || loc.segment != self.segment || loc.offset < self.at {
            return None;
        }
        let start = usize::try_from(loc.offset - self.at).ok()?;
        self.bytes.get(start..start.checked_add(loc.len as usize)?)
    }
}

/// What a commit changes of [`recent::Recent`], in the order of its ops.
enum Kept {
    /// A record to keep, and what it costs in memory (`recent::cost`).
    Record(Box<TaskRecord>, usize),
    /// The task's kept record, if any, is out of date or the task is gone.
    Gone(u64),
}

/// The active segment and what has been written.
struct Writer {
    segment: u32,
    file: Arc<File>,
    len: u64,
    /// Oldest segment still needed (older ones were compacted away).
    first_segment: u32,
    /// Bytes of log written since the last snapshot.
    since_snapshot: u64,
    /// Bytes in the segments before the active one.
    sealed: u64,
    /// After a failed compaction: no new try before the sealed segments hold this much.
    compact_retry_at: u64,
    /// Written but not yet flushed to the disk.
    dirty: bool,
    /// A failed write that could not be undone: every later write fails with this.
    broken: Option<String>,
    /// The format version the store's `FORMAT` file says.
    format: u32,
    /// The buffer of the last frame written, emptied, for the next commit's frame: a
    /// commit a step makes is a few hundred bytes, and a fresh buffer for each costs
    /// more than its encoding. Not kept past [`SPARE_BYTES`].
    spare: Vec<u8>,
    /// The history heads a frame moves, as [`LogStore::group_frame`] builds it: kept
    /// (emptied) from one frame to the next for the same reason.
    heads: FastMap<u64, Loc>,
    /// When the tail's first frame joined it (`None`: the tail is empty).
    tail_since: Option<std::time::Instant>,
    /// When the last step's commit came ([`LogStore::lingers`]).
    last_quick: Option<std::time::Instant>,
    /// The last try to write the tail failed (a full disk, say): no commit joins it
    /// until a write of it succeeds, so every commit meanwhile tries it first and fails
    /// with nothing written, as a frame written at once does.
    tail_failed: bool,
}

/// The largest frame buffer a writer keeps for the next frame.
const SPARE_BYTES: usize = 256 << 10;

/// The store: what its background threads share ([`Core`], which it derefs to) and the
/// threads themselves, stopped when it is dropped.
pub struct LogStore {
    core: Arc<Core>,
    flusher: Option<Flusher>,
    /// Compacts the log in the background (`compaction.rs`).
    compactor: Option<std::thread::JoinHandle<()>>,
    /// Writes snapshots to disk, in the order they were taken.
    snapshot_writer: Option<std::thread::JoinHandle<()>>,
}

/// What a store is opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// An engine's (or a command's) store: compacted in the background, a snapshot
    /// written when it closes.
    Engine,
    /// Read only (`LogStore::open_to_read`): no compactor, no snapshot, and a write is
    /// refused.
    Reader,
}

/// The store's state, shared by the threads that commit, flush and compact. (`pub` for
/// `Deref`, but not reachable from outside the crate: this module is private.)
pub struct Core {
    dir: PathBuf,
    limits: Limits,
    state: RwLock<State>,
    writer: Arc<Mutex<Writer>>,
    next_task: AtomicU64,
    /// The snapshot writer's queue; taken (closed) when the store closes.
    snapshots: Mutex<Option<std::sync::mpsc::Sender<SnapshotJob>>>,
    /// Task records written lately, for the next step's read (`recent.rs`). Changed
    /// only under the writer's lock.
    recent: Mutex<recent::Recent>,
    /// One compaction at a time (the background one, or a test's `compact_now`).
    compacting: Mutex<()>,
    /// What compaction gave back since the store was opened.
    given_back: Mutex<SpaceGivenBack>,
    /// Set when the store closes: a compaction stops between its frames.
    closing: AtomicBool,
    /// The flusher's thread, woken when a tail begins.
    flusher: std::sync::OnceLock<std::thread::Thread>,
    /// While the flusher's thread runs (from its start to its end, the store closing or
    /// a panic): a commit waits in a tail only then, for the flusher writes a tail no
    /// commit came to write.
    flusher_runs: AtomicBool,
    /// Tests: every write to the log fails as on a full disk (after its bytes reached
    /// the file, as a write cut short leaves them).
    #[cfg(test)]
    fail_writes: AtomicBool,
    /// The flusher wakes every [`BACKSTOP`] (a stream of commits is on), not every
    /// [`FLUSH_EVERY`]. Changed under the writer's lock.
    flusher_fast: AtomicBool,
    role: Role,
    /// Held (locked) while the store is open.
    _lock: File,
}

impl std::ops::Deref for LogStore {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

struct Flusher {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

/// A snapshot taken (encoded under the writer's lock) and to be written.
struct SnapshotJob {
    bytes: Vec<u8>,
    /// The active segment when it was taken: synced first, so the snapshot never
    /// points past what is on disk.
    segment: Arc<File>,
    /// The oldest segment it needs: older ones are deleted once it is on disk.
    first_segment: u32,
    /// Told the outcome, for those who wait for it.
    done: Option<std::sync::mpsc::Sender<Result<()>>>,
}

fn io(e: std::io::Error) -> StoreError {
    if e.raw_os_error() == Some(28) {
        return StoreError::DiskFull;
    }
    StoreError::Io(e.to_string())
}

fn corrupt(what: &str, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

fn encode_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    // A task or a step's history is a few hundred bytes: `to_vec`'s 128 would grow
    // two or three times on every commit.
    let mut bytes = Vec::with_capacity(512);
    serde_json::to_writer(&mut bytes, value).map_err(|e| StoreError::Io(e.to_string()))?;
    Ok(bytes)
}

/// A group's values as written (tasks and history in bytes, inbox messages in JSON), in
/// the order of its ops (`None` for an op without one).
type Values = Vec<Option<Vec<u8>>>;

/// A group's [`Values`], and what the commit changes of the kept records.
fn encode_values(batches: &[Batch]) -> Result<(Values, Vec<Kept>)> {
    let ops = batches.iter().map(|b| b.ops.len()).sum();
    let mut values: Vec<Option<Vec<u8>>> = Vec::with_capacity(ops);
    let mut kept: Vec<Kept> = Vec::with_capacity(batches.len());
    for op in batches.iter().flat_map(|b| &b.ops) {
        values.push(match op {
            Op::PutTask(task) => {
                let bytes = binary::encode_task(task);
                kept.push(match recent::cost(task, bytes.len()) {
                    Some(cost) if task.status == TaskStatus::Ready => {
                        Kept::Record(task.clone(), cost)
                    }
                    _ => Kept::Gone(task.id),
                });
                Some(bytes)
            }
            Op::DeleteTask { task, .. } => {
                kept.push(Kept::Gone(*task));
                None
            }
            Op::History { events, .. } | Op::ReplaceHistory { events, .. } => {
                Some(binary::encode_events(events))
            }
            Op::Inbox { message, .. } => Some(encode_json(message)?),
            _ => None,
        });
    }
    Ok((values, kept))
}

fn decode_json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(what, e))
}

/// A task record as written: in bytes (format 3) or in JSON (before).
fn decode_task(bytes: &[u8]) -> Result<TaskRecord> {
    match bytes.first() {
        Some(&binary::TASK) => binary::decode_task(bytes),
        _ => decode_json("a task", bytes),
    }
}

/// The events of history `records` (oldest first, as written).
fn decode_records<R: AsRef<[u8]>>(records: &[R]) -> Result<Vec<HistoryEvent>> {
    let mut events = Vec::new();
    for record in records {
        decode_events(record.as_ref(), &mut events)?;
    }
    Ok(events)
}

/// Appends the events of one history record, in bytes (format 3) or in JSON (before).
fn decode_events(bytes: &[u8], out: &mut Vec<HistoryEvent>) -> Result<()> {
    match bytes.first() {
        Some(&binary::EVENTS) => binary::decode_events(bytes, out),
        _ => {
            out.extend(decode_json::<Vec<HistoryEvent>>("history events", bytes)?);
            Ok(())
        }
    }
}

/// The error of an open that found damage it must not cut off: a bad frame followed by
/// whole ones, or a bad frame in a segment that is not the last.
fn damaged(path: &Path, number: u32, last: u32, damage: &Damage) -> StoreError {
    let after = if damage.valid_after > 0 {
        format!(
            "followed by {} whole frame(s) (the first at byte {}) that were acknowledged",
            damage.valid_after,
            damage.first_valid.unwrap_or(damage.at)
        )
    } else {
        format!(
            "followed by {} later segment(s) of acknowledged frames",
            last.saturating_sub(number)
        )
    };
    corrupt(
        "the store's log",
        format!(
            "{} has a damaged frame at byte {} ({} bytes to the end of the segment), {after}: this is corruption, not a frame torn by a crash, so the store was not opened and nothing was dropped; `conveyor store verify` shows every problem and `conveyor store repair` what it would drop",
            path.display(),
            damage.at,
            damage.bytes
        ),
    )
}

fn segment_name(segment: u32) -> String {
    format!("{segment:010}.log")
}

/// Makes a rename or a new file in `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

impl LogStore {
    /// The directory of a log store inside a data directory.
    pub fn dir_in(data: &Path) -> PathBuf {
        data.join("log")
    }

    /// Opens (or creates) the log store in the data directory `path`.
    pub fn open(path: &Path) -> Result<LogStore> {
        LogStore::open_with(path, LIMITS, Role::Engine)
    }

    /// Opens the store in `path` to be read only: by `store verify`, which must not
    /// change it, and by `store compact` and `store migrate`, which move its directory
    /// aside while it is open (a compaction or a snapshot would land in whatever
    /// directory is at its path by then: the new store). It compacts nothing, writes no
    /// snapshot when it closes, and refuses every write.
    pub fn open_to_read(path: &Path) -> Result<LogStore> {
        LogStore::open_with(path, LIMITS, Role::Reader)
    }

    #[cfg(test)]
    fn open_with_limits(path: &Path, limits: Limits) -> Result<LogStore> {
        LogStore::open_with(path, limits, Role::Engine)
    }

    fn open_with(path: &Path, limits: Limits, role: Role) -> Result<LogStore> {
        let dir = LogStore::dir_in(path);
        let shown = path.display().to_string();
        let read_only = |e: &std::io::Error| e.raw_os_error() == Some(30);
        if !dir.exists() {
            std::fs::create_dir_all(&dir).map_err(|e| {
                if read_only(&e) {
                    StoreError::ReadOnly {
                        path: shown.clone(),
                    }
                } else {
                    StoreError::Io(format!("cannot create {}: {e}", dir.display()))
                }
            })?;
            // Task data holds credentials: readable by its owner only.
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("LOCK"))
            .map_err(|e| {
                if read_only(&e) {
                    StoreError::ReadOnly {
                        path: shown.clone(),
                    }
                } else {
                    io(e)
                }
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked { path: shown });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let format_path = dir.join("FORMAT");
        let format = match std::fs::read(&format_path) {
            Ok(bytes) => {
                let found = <[u8; 4]>::try_from(bytes.as_slice())
                    .map(u32::from_le_bytes)
                    .map_err(|_| corrupt("the format version", "wrong length"))?;
                if found > LOG_FORMAT_VERSION {
                    return Err(StoreError::NewerFormat {
                        path: shown,
                        found,
                        supported: LOG_FORMAT_VERSION,
                    });
                }
                found
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_format(&dir, NEW_STORE_FORMAT)?;
                NEW_STORE_FORMAT
            }
            Err(e) => return Err(io(e)),
        };

        // The snapshot, then every frame after it.
        let (mut state, segment, offset, first_segment) = match std::fs::read(dir.join("snapshot"))
        {
            Ok(bytes) => read_snapshot(&bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (State::default(), 1, 0, 1),
            Err(e) => return Err(io(e)),
        };
        let mut segments = list_segments(&dir)?;
        // Segments older than the oldest one needed are what a compaction left when it
        // stopped before deleting them.
        for &old in segments.iter().filter(|&&s| s < first_segment) {
            let _ = std::fs::remove_file(dir.join(segment_name(old)));
        }
        segments.retain(|&s| s >= first_segment);
        let last = segments.last().copied().unwrap_or(segment).max(segment);
        // Every segment from the oldest needed to the newest is there (a store that
        // lost one would replay wrongly), except in a new store, which has none yet.
        if !segments.is_empty()
            && let Some(missing) = (first_segment..=last).find(|n| !segments.contains(n))
        {
            return Err(corrupt(
                "the store's log",
                format!("segment {} is missing", segment_name(missing)),
            ));
        }
        let mut replayed = 0u64;
        for &number in segments.iter().filter(|&&s| s >= segment) {
            let path = dir.join(segment_name(number));
            let bytes = std::fs::read(&path).map_err(io)?;
            let start = if number == segment { offset } else { 0 };
            if start > bytes.len() as u64 {
                return Err(corrupt(
                    "the store's log",
                    format!(
                        "the snapshot points to byte {start} of {}, which has {}",
                        segment_name(number),
                        bytes.len()
                    ),
                ));
            }
            let (end, damage) = replay(&mut state, number, &bytes, start)?;
            replayed += end - start;
            if let Some(damage) = damage {
                if number != last || damage.valid_after > 0 {
                    return Err(damaged(&path, number, last, &damage));
                }
                // A frame the crash cut short, with nothing after it: nothing in it was
                // acknowledged.
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(end).and_then(|_| f.sync_all()))
                    .map_err(io)?;
                tracing::warn!(
                    segment = %path.display(),
                    offset = end,
                    bytes = damage.bytes,
                    "cut off a frame torn by a crash at the end of the store's log ({} bytes at byte {end} of {})",
                    damage.bytes,
                    path.display()
                );
            }
        }
        for number in first_segment..=last {
            let path = dir.join(segment_name(number));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io)?;
            state.files.insert(number, Arc::new(file));
        }
        let file = state
            .files
            .get(&last)
            .cloned()
            .ok_or_else(|| corrupt("the store's log", "no active segment"))?;
        if segments.is_empty() {
            // A new store: its first segment was just created.
            sync_dir(&dir)?;
        }
        let len = file.metadata().map_err(io)?.len();
        let sealed = sealed_bytes(&state, last);
        let writer = Arc::new(Mutex::new(Writer {
            segment: last,
            file,
            len,
            first_segment,
            // What this open replayed is replayed again next time, until a snapshot.
            since_snapshot: replayed,
            sealed,
            compact_retry_at: 0,
            dirty: false,
            broken: None,
            format,
            spare: Vec::new(),
            heads: FastMap::default(),
            tail_since: None,
            last_quick: None,
            tail_failed: false,
        }));
        let next_task = AtomicU64::new(state.next_task.max(1));
        // The thread that writes snapshots, so that a commit that triggers one waits for
        // its encoding (tens of ms with a million tasks) but not for its write and fsync.
        let (jobs, queue) = std::sync::mpsc::channel::<SnapshotJob>();
        let snapshot_writer = {
            let dir = dir.clone();
            std::thread::Builder::new()
                .name("conveyor-snapshot".into())
                .spawn(move || {
                    for job in queue {
                        let written = write_snapshot_file(&dir, &job);
                        if let Some(done) = job.done {
                            let _ = done.send(written);
                        }
                    }
                })
                .ok()
        };
        let core = Arc::new(Core {
            dir,
            limits,
            // Without its thread, `snapshot` writes them itself.
            snapshots: Mutex::new(snapshot_writer.is_some().then_some(jobs)),
            state: RwLock::new(state),
            writer,
            next_task,
            recent: Mutex::default(),
            compacting: Mutex::new(()),
            given_back: Mutex::default(),
            closing: AtomicBool::new(false),
            flusher: std::sync::OnceLock::new(),
            flusher_runs: AtomicBool::new(false),
            #[cfg(test)]
            fail_writes: AtomicBool::new(false),
            flusher_fast: AtomicBool::new(false),
            role,
            _lock: lock,
        });
        let flusher = spawn_flusher(&core);
        let compactor = match role {
            Role::Engine => {
                let core = Arc::clone(&core);
                let spawned = std::thread::Builder::new()
                    .name("conveyor-compact".into())
                    .spawn(move || core.compact_in_background());
                if let Err(e) = &spawned {
                    tracing::warn!(error = %e, "no thread for compaction: the store's log is not compacted until it is opened again");
                }
                spawned.ok()
            }
            Role::Reader => None,
        };
        Ok(LogStore {
            core,
            flusher,
            compactor,
            snapshot_writer,
        })
    }
}

impl Core {
    fn state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn state_mut(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn recent(&self) -> MutexGuard<'_, recent::Recent> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Task `id` as the log holds it (a listing reads this way, leaving the records kept
    /// in `recent` for the steps that read them next).
    fn task_on_disk(&self, id: u64) -> Result<Option<TaskRecord>> {
        let bytes = {
            let state = self.state();
            match state.tasks.get(&id) {
                Some(entry) => read_at(&state, entry.loc)?,
                None => return Ok(None),
            }
        };
        decode_task(&bytes).map(Some)
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a frame (`enc` holds its payload after 8 reserved bytes) and applies it to
    /// the indexes. Called with the writer locked: frames are written and applied in
    /// the same order.
    fn append(&self, w: &mut Writer, enc: Enc) -> Result<()> {
        self.append_at(w, enc, None)
    }

    /// Where the next frame will be written: the segment and the byte its header starts
    /// at. The one rule of when the log rolls: [`LogStore::append_at`] rolls by it, and
    /// a commit that writes a value's location into the same frame (a history record
    /// names the one before it) predicts that location by it.
    fn next_frame_at(&self, w: &Writer) -> (u32, u64) {
        if w.len >= self.limits.segment_bytes {
            (w.segment + 1, 0)
        } else {
            (w.segment, w.len)
        }
    }

    /// [`LogStore::append`], for a frame whose payload names places inside itself
    /// computed for `expected` (from [`LogStore::next_frame_at`]): refused, with nothing
    /// written, if the frame would land anywhere else.
    fn append_at(&self, w: &mut Writer, enc: Enc, expected: Option<(u32, u64)>) -> Result<()> {
        self.append_with(w, enc, expected, false)
    }

    /// [`LogStore::append_at`]; with `linger` (a step's commit in place), the frame may
    /// join the tail instead of being written now ([`LogStore::lingers`]).
    fn append_with(
        &self,
        w: &mut Writer,
        mut enc: Enc,
        expected: Option<(u32, u64)>,
        linger: bool,
    ) -> Result<()> {
        self.make_way(w, expected)?;
        let payload_len = enc.buf.len() - 8;
        let crc = crc32fast::hash(&enc.buf[8..]);
        enc.buf[..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
        enc.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        let now = linger.then(std::time::Instant::now);
        // A frame as large as a tail is written at once: waiting would only copy it.
        let lingers = enc.buf.len() < TAIL_BYTES && now.is_some_and(|now| self.lingers(w, now));
        if !lingers {
            // Frames are written in order: the tail's go first.
            self.write_tail(w)?;
            self.write_or_undo(w, &enc.buf, w.len)?;
        }
        let frame_at = w.len;
        let payload_offset = w.len + 8;
        w.len += enc.buf.len() as u64;
        w.since_snapshot += enc.buf.len() as u64;
        w.dirty = true;
        let (applied, tail_bytes) = {
            let mut state = self.state_mut();
            if lingers {
                if state.tail.bytes.is_empty() {
                    state.tail.segment = w.segment;
                    state.tail.at = frame_at;
                }
                state.tail.bytes.extend_from_slice(&enc.buf);
            }
            let applied = apply(&mut state, w.segment, payload_offset, &enc.buf[8..]);
            (applied, state.tail.bytes.len())
        };
        if let Some(now) = now.filter(|_| lingers) {
            self.joined_tail(w, now, tail_bytes);
        }
        if let Err(e) = applied {
            w.broken = Some(format!(
                "the store's indexes are out of step with its log: {e}"
            ));
            return Err(e);
        }
        if enc.buf.capacity() <= SPARE_BYTES {
            enc.buf.clear();
            w.spare = enc.buf;
        }
        // The frame is applied (and written, or in the tail): what follows only saves
        // work at the next open, and its failure (a full disk, say) must not fail this
        // commit.
        if w.since_snapshot >= self.limits.snapshot_after && self.snapshot(w, false).is_err() {
            // Try again after some more log, not on every commit.
            w.since_snapshot = self.limits.snapshot_after / 2;
        }
        Ok(())
    }

    /// Checks that a frame may be written where the writer stands (`expected`, if the
    /// frame names places inside itself) and rolls the log if it is time to.
    fn make_way(&self, w: &mut Writer, expected: Option<(u32, u64)>) -> Result<()> {
        if let Some(reason) = &w.broken {
            return Err(StoreError::Io(reason.clone()));
        }
        self.writable()?;
        let place = self.next_frame_at(w);
        let misplaced = |expected: (u32, u64), actual: (u32, u64)| {
            StoreError::Io(format!(
                "internal error: a frame meant for segment {} byte {} would be written at segment {} byte {}; nothing was written",
                expected.0, expected.1, actual.0, actual.1
            ))
        };
        if let Some(expected) = expected
            && expected != place
        {
            return Err(misplaced(expected, place));
        }
        if place.0 != w.segment {
            self.roll(w)?;
        }
        if (w.segment, w.len) != place {
            return Err(misplaced(place, (w.segment, w.len)));
        }
        Ok(())
    }

    /// Writes `bytes` at byte `at` of the active segment; on a failure, takes back what
    /// part of them reached the file, so the log stays whole (and if that fails too, the
    /// store is broken until it is opened again).
    fn write_or_undo(&self, w: &mut Writer, bytes: &[u8], at: u64) -> Result<()> {
        let written = w.file.write_all_at(bytes, at);
        #[cfg(test)]
        let written = match self.fail_writes.load(Ordering::SeqCst) {
            true => Err(std::io::Error::from_raw_os_error(28)),
            false => written,
        };
        let Err(e) = written else {
            return Ok(());
        };
        if let Err(undo) = w.file.set_len(at) {
            w.broken = Some(format!(
                "a write to the store's log failed ({e}) and could not be undone ({undo}); restart Conveyor"
            ));
        }
        Err(io(e))
    }

    /// After a frame joined the tail (`now`; the tail now holds `tail_bytes`): the
    /// flusher is told of a tail that begins, and a tail that is due is written — by
    /// the first commit [`LINGER`] after it began, on its own thread, whose caches are
    /// warm (the flusher writes it only when no commit comes).
    fn joined_tail(&self, w: &mut Writer, now: std::time::Instant, tail_bytes: usize) {
        let since = match w.tail_since {
            Some(since) => since,
            None => {
                w.tail_since = Some(now);
                if !self.flusher_fast.swap(true, Ordering::Relaxed) {
                    // The flusher sleeps long between flushes: it now has a tail to
                    // write should no commit come.
                    if let Some(flusher) = self.flusher.get() {
                        flusher.unpark();
                    }
                }
                now
            }
        };
        if tail_bytes >= TAIL_BYTES || now - since >= LINGER {
            // This commit is applied and in the tail, as the ones before it that were
            // answered `Ok`: a failure is kept (`tail_failed`, or `broken`) and is the
            // next write's error, as it is when the flusher's write fails.
            let _ = self.write_tail(w);
        }
    }

    /// Whether a step's commit made `now` joins the tail rather than being written at
    /// once: when commits stream (the last one came within [`STREAM`]), and a flusher
    /// runs to write a tail that waits.
    ///
    /// Why: a `pwrite` of its own costs a step a few microseconds in the kernel, about
    /// 7 % of an `api_call` step's CPU; written together, the frames of the steps that
    /// finish one after another cost one. The price: should the process die, the steps
    /// of the last [`LINGER`] were not handed to the kernel, and run again when the
    /// engine starts (their tasks are ready as of their last written step) — as a step
    /// under way when the process died does. Nothing acknowledged as durable waits
    /// here: a flush, and every frame written at once, write the tail first.
    fn lingers(&self, w: &mut Writer, now: std::time::Instant) -> bool {
        let streaming = w
            .last_quick
            .is_some_and(|last| now.saturating_duration_since(last) < STREAM);
        w.last_quick = Some(now);
        streaming && !w.tail_failed && self.flusher_runs.load(Ordering::SeqCst)
    }

    /// Writes the tail with one `pwrite`. Called with the writer locked, before the log
    /// on file must be whole: a frame written at once, a roll, a snapshot, a flush.
    fn write_tail(&self, w: &mut Writer) -> Result<()> {
        if w.tail_since.is_none() {
            return Ok(());
        }
        if let Some(reason) = &w.broken {
            // After a failed fsync the kernel may have dropped pages: nothing more goes
            // to the file behind them.
            return Err(StoreError::Io(reason.clone()));
        }
        let failed_before = w.tail_failed;
        let written = {
            let state = self.state();
            debug_assert_eq!(state.tail.segment, w.segment);
            self.write_or_undo(w, &state.tail.bytes, state.tail.at)
        };
        if let Err(e) = written {
            // The tail stays, applied and read from memory, for the next write to try
            // again (a full disk may have room by then); till then no commit joins it.
            w.tail_failed = true;
            if !failed_before {
                tracing::error!(error = %e, "writing the store's log failed; engine steps wait in memory until it can be written");
            }
            return Err(e);
        }
        if failed_before {
            tracing::info!("the store's log is written again");
        }
        w.tail_since = None;
        w.tail_failed = false;
        // For the flusher's next fsync, which may have run since these frames were
        // applied (and found them not yet written).
        w.dirty = true;
        let mut state = self.state_mut();
        state.tail.bytes.clear();
        if state.tail.bytes.capacity() > 2 * TAIL_BYTES {
            state.tail.bytes = Vec::new();
        }
        Ok(())
    }

    /// Refuses a write to a store opened to be read ([`LogStore::open_to_read`]).
    fn writable(&self) -> Result<()> {
        match self.role {
            Role::Engine => Ok(()),
            Role::Reader => Err(StoreError::Io(
                "internal error: a write to a store opened to be read only; nothing was written"
                    .into(),
            )),
        }
    }

    /// Seals the active segment and begins the next.
    fn roll(&self, w: &mut Writer) -> Result<()> {
        self.write_tail(w)?;
        w.file.sync_data().map_err(io)?;
        let next = w.segment + 1;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.dir.join(segment_name(next)))
            .map_err(io)?;
        sync_dir(&self.dir)?;
        let file = Arc::new(file);
        self.state_mut().files.insert(next, Arc::clone(&file));
        w.segment = next;
        w.file = file;
        w.sealed += w.len;
        w.len = 0;
        w.dirty = false;
        Ok(())
    }

    /// Takes a snapshot of the indexes as of the end of the log (the writer is locked)
    /// and has it written; with `wait`, returns once it is on disk.
    ///
    /// Snapshots are written one after the other in the order taken, so a later one is
    /// never replaced by an earlier; a compaction waits for its own before it deletes
    /// the segments the earlier ones point into.
    fn snapshot(&self, w: &mut Writer, wait: bool) -> Result<()> {
        match self.queue_snapshot(w)? {
            Some(outcome) if wait => outcome
                .recv()
                .unwrap_or_else(|_| Err(StoreError::Io("the snapshot writer stopped".into()))),
            _ => Ok(()),
        }
    }

    /// Takes a snapshot (the writer is locked) and queues it for the snapshot writer;
    /// what the writer will say once it is on disk (`None`: written here already, with
    /// no writer thread).
    fn queue_snapshot(
        &self,
        w: &mut Writer,
    ) -> Result<Option<std::sync::mpsc::Receiver<Result<()>>>> {
        if let Some(reason) = &w.broken {
            return Err(StoreError::Io(reason.clone()));
        }
        self.writable()?;
        // The snapshot is of the log up to `w.len`, and its writer syncs the segment first.
        self.write_tail(w)?;
        let bytes = {
            let state = self.state();
            let next_task = self.next_task.load(Ordering::SeqCst).max(state.next_task);
            write_snapshot(&state, w.segment, w.len, w.first_segment, next_task)?
        };
        w.since_snapshot = 0;
        let (done, outcome) = std::sync::mpsc::channel();
        let job = SnapshotJob {
            bytes,
            segment: Arc::clone(&w.file),
            first_segment: w.first_segment,
            done: Some(done),
        };
        let job = match &*self.snapshots.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(jobs) => match jobs.send(job) {
                Ok(()) => None,
                Err(unsent) => Some(unsent.0),
            },
            None => Some(job),
        };
        if let Some(job) = job {
            // No writer thread (it could not be started): write it here.
            return write_snapshot_file(&self.dir, &job).map(|()| None);
        }
        Ok(Some(outcome))
    }

    /// The frame of a group (`values` from [`encode_values`]) and where it will be
    /// written; `None` when the group changes nothing. Refuses a ref taken already or
    /// claimed twice in the group. Called with the writer locked.
    fn group_frame(
        &self,
        w: &mut Writer,
        batches: &[Batch],
        values: Values,
    ) -> Result<Option<(Enc, (u32, u64))>> {
        // The values, and a few dozen bytes of ids and keys for each op.
        let room = values.iter().flatten().map(Vec::len).sum::<usize>()
            + 64 * batches.iter().map(|b| b.ops.len()).sum::<usize>();
        let mut enc = frame_in(std::mem::take(&mut w.spare), room);
        // History heads as this frame moves them.
        let mut heads = std::mem::take(&mut w.heads);
        heads.clear();
        let at;
        {
            let state = self.state();
            // A ref may be taken already, or claimed twice within this group.
            let mut claimed: HashMap<(u64, &str), u64> = HashMap::new();
            let (segment, frame_at) = self.next_frame_at(w);
            let payload_offset = frame_at + 8;
            at = (segment, frame_at);
            for (op, value) in batches.iter().flat_map(|b| &b.ops).zip(values) {
                match op {
                    Op::PutTask(task) => {
                        enc.u8(PUT_TASK);
                        enc.u64(task.id);
                        enc.u64(task.process);
                        enc.bytes(&value.unwrap_or_default());
                    }
                    Op::IndexTask { .. } => {} // the task's entry says its process
                    Op::InsertRef {
                        process,
                        reference,
                        task,
                    } => {
                        let taken_here = claimed
                            .insert((*process, reference.as_str()), *task)
                            .is_some_and(|t| t != *task);
                        let taken_before = state
                            .refs
                            .get(process)
                            .and_then(|refs| refs.get(reference.as_str()))
                            .is_some_and(|t| t != task);
                        if taken_here || taken_before {
                            return Err(StoreError::DuplicateRef {
                                process: *process,
                                reference: reference.clone(),
                            });
                        }
                        enc.u8(INSERT_REF);
                        enc.u64(*process);
                        enc.str(reference);
                        enc.u64(*task);
                    }
                    Op::SetTimer(t) | Op::ClearTimer(t) => {
                        let set = matches!(op, Op::SetTimer(_));
                        enc.u8(if set { SET_TIMER } else { CLEAR_TIMER });
                        enc.i64(t.due);
                        enc.u64(t.task);
                    }
                    Op::SetReady(task) => {
                        enc.u8(SET_READY);
                        enc.u64(*task);
                    }
                    Op::ClearReady(task) => {
                        enc.u8(CLEAR_READY);
                        enc.u64(*task);
                    }
                    Op::Count {
                        process,
                        node,
                        now,
                        total,
                    } => {
                        enc.u8(COUNT);
                        enc.u64(*process);
                        enc.str(node);
                        enc.i64(*now);
                        enc.u64(*total);
                    }
                    Op::History { task, .. } | Op::ReplaceHistory { task, .. } => {
                        // A replaced history starts a new chain (`HISTORY_RESET`, as
                        // compaction writes it).
                        let reset = matches!(op, Op::ReplaceHistory { .. });
                        let prev = match heads.get(task) {
                            _ if reset => Loc::default(),
                            Some(loc) => *loc,
                            None => state.history.get(task).map(|c| c.head).unwrap_or_default(),
                        };
                        let events = value.unwrap_or_default();
                        enc.u8(if reset { HISTORY_RESET } else { HISTORY });
                        enc.u64(*task);
                        enc.u32((LOC_BYTES + events.len()) as u32);
                        let start = enc.buf.len() - 8;
                        prev.encode(&mut enc);
                        enc.buf.extend_from_slice(&events);
                        heads.insert(
                            *task,
                            Loc {
                                segment,
                                len: (LOC_BYTES + events.len()) as u32,
                                offset: payload_offset + start as u64,
                            },
                        );
                    }
                    Op::Inbox { task, seq, .. } => {
                        enc.u8(INBOX);
                        enc.u64(*task);
                        enc.u64(*seq);
                        enc.bytes(&value.unwrap_or_default());
                    }
                    Op::ClearInbox { task, seq } => {
                        enc.u8(CLEAR_INBOX);
                        enc.u64(*task);
                        enc.u64(*seq);
                    }
                    Op::DeleteTask {
                        task,
                        process,
                        reference,
                    } => {
                        // A history record after this in the group starts a new chain.
                        heads.insert(*task, Loc::default());
                        enc.u8(DELETE_TASK);
                        enc.u64(*task);
                        enc.u64(*process);
                        enc.opt_str(reference.as_deref());
                    }
                }
            }
        }
        if heads.capacity() <= 1024 {
            w.heads = heads;
        }
        if enc.buf.len() == 8 {
            return Ok(None);
        }
        Ok(Some((enc, at)))
    }

    /// Writes and applies a group's frame (from [`LogStore::group_frame`]) and keeps
    /// the records `kept` says to.
    fn write_group(
        &self,
        w: &mut Writer,
        enc: Enc,
        at: (u32, u64),
        kept: Vec<Kept>,
        linger: bool,
    ) -> Result<()> {
        // What is kept of these tasks goes before the frame is applied, so that no read
        // meets a kept record older than the indexes; the new ones are kept after it.
        {
            let mut recent = self.recent();
            for change in &kept {
                match change {
                    Kept::Record(task, _) => recent.forget(task.id),
                    Kept::Gone(id) => recent.forget(*id),
                }
            }
        }
        self.append_with(w, enc, Some(at), linger)?;
        {
            // In the group's order, so its last word on each task counts.
            let mut recent = self.recent();
            for change in kept {
                match change {
                    Kept::Record(task, cost) => recent.keep(*task, cost),
                    Kept::Gone(id) => recent.forget(id),
                }
            }
        }
        Ok(())
    }

    /// [`Store::commit_quick`] with the writer locked (`w`).
    fn commit_quick_locked(
        &self,
        w: &mut Writer,
        batch: &Batch,
        linger: Linger,
    ) -> Option<Result<()>> {
        if w.broken.is_some() || w.format < BINARY_FORMAT || self.next_frame_at(w).0 != w.segment {
            return None;
        }
        let batches = std::slice::from_ref(batch);
        let frame = encode_values(batches)
            .and_then(|(values, kept)| Ok((self.group_frame(w, batches, values)?, kept)));
        let (enc, at, kept) = match frame {
            Ok((Some((enc, at)), kept)) => (enc, at, kept),
            Ok((None, _)) => return Some(Ok(())),
            Err(e) => return Some(Err(e)),
        };
        if w.since_snapshot + enc.buf.len() as u64 >= self.limits.snapshot_after {
            return None; // nothing was written: the committer writes it, then snapshots
        }
        // A batch that brings a task or a message into being uses a number the counter
        // of `next_task_id` handed out, which the log alone remembers: written at once,
        // so that no crash hands it out again after a step (an API call's idempotency
        // key, say) showed it outside.
        let numbers = batch
            .ops
            .iter()
            .any(|op| matches!(op, Op::IndexTask { .. } | Op::Inbox { .. }));
        let linger = linger == Linger::May && !numbers;
        Some(self.write_group(w, enc, at, kept, linger))
    }

    /// Marks the store's `FORMAT` as at least `version` before a frame that needs it is
    /// written, so an older conveyor refuses the store rather than misread it. Once: the
    /// writer remembers it.
    fn mark_format(&self, w: &mut Writer, version: u32) -> Result<()> {
        self.writable()?;
        if w.format < version {
            write_format(&self.dir, version)?;
            w.format = version;
        }
        Ok(())
    }

    /// A task's history events, oldest first: its records' events, record after record
    /// (each binary or JSON, as it was written).
    fn history_events(&self, task: u64) -> Result<Vec<HistoryEvent>> {
        decode_records(&self.history_records(task)?)
    }

    /// A task's history records as written, oldest first, each without the location of
    /// the one before it.
    fn history_records(&self, task: u64) -> Result<Vec<Vec<u8>>> {
        let state = self.state();
        let Some(chain) = state.history.get(&task) else {
            return Ok(Vec::new());
        };
        let records = walk_chain(chain.head, |loc| read_at(&state, loc).map(Cow::Owned))?;
        Ok(records.into_iter().map(Cow::into_owned).collect())
    }

    /// Writes task `id`'s history `records` (oldest first, as written) again as a new
    /// chain, in one frame of their own (the writer is locked).
    fn copy_chain<R: AsRef<[u8]>>(&self, w: &mut Writer, id: u64, records: &[R]) -> Result<()> {
        if records.is_empty() {
            return Ok(()); // an empty frame would read as damage at the next open
        }
        // Each record names the one before it, so the frame's place is fixed first.
        let (segment, frame_at) = self.next_frame_at(w);
        let payload_offset = frame_at + 8;
        let mut enc = frame();
        let mut prev = Loc::default();
        for (i, record) in records.iter().map(AsRef::as_ref).enumerate() {
            enc.u8(if i == 0 { HISTORY_RESET } else { HISTORY });
            enc.u64(id);
            enc.u32((LOC_BYTES + record.len()) as u32);
            let start = enc.buf.len() - 8;
            prev.encode(&mut enc);
            enc.buf.extend_from_slice(record);
            prev = Loc {
                segment,
                len: (LOC_BYTES + record.len()) as u32,
                offset: payload_offset + start as u64,
            };
        }
        self.append_at(w, enc, Some((segment, frame_at)))
    }
}

impl Drop for LogStore {
    fn drop(&mut self) {
        // The compactor first: it stops between two frames, and takes snapshots.
        self.core.closing.store(true, Ordering::SeqCst);
        if let Some(compactor) = self.compactor.take() {
            compactor.thread().unpark();
            let _ = compactor.join();
        }
        if let Some(flusher) = self.flusher.take() {
            flusher.stop.store(true, Ordering::SeqCst);
            flusher.thread.thread().unpark();
            let _ = flusher.thread.join();
        }
        // A failure here (or a broken store, which refuses) loses nothing written: the
        // next open replays the log instead. (A tail that could not be written is lost,
        // and its steps run again.)
        if self.core.role == Role::Engine {
            let _ = self.checkpoint();
        }
        // Closing its queue ends the snapshot writer once it wrote what it holds.
        drop(
            self.core
                .snapshots
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        if let Some(thread) = self.snapshot_writer.take() {
            let _ = thread.join();
        }
    }
}

/// Writes a snapshot: syncs the segment it was taken at, writes a temporary file and
/// renames it over the last snapshot.
fn write_snapshot_file(dir: &Path, job: &SnapshotJob) -> Result<()> {
    job.segment.sync_data().map_err(io)?;
    let tmp = dir.join("snapshot.tmp");
    let written = (|| {
        let file = File::create(&tmp)?;
        file.write_all_at(&job.bytes, 0)?;
        file.sync_all()?;
        std::fs::rename(&tmp, dir.join("snapshot"))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    sync_dir(dir)?;
    // What compaction emptied: no snapshot on disk needs it any more.
    for old in list_segments(dir)?
        .into_iter()
        .filter(|&s| s < job.first_segment)
    {
        let _ = std::fs::remove_file(dir.join(segment_name(old)));
    }
    Ok(())
}

/// Starts the flusher's thread (`None`: it could not be started; then nothing is flushed
/// in the background, and no commit waits in a tail).
fn spawn_flusher(core: &Arc<Core>) -> Option<Flusher> {
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let thread_core = Arc::clone(core);
    let thread = std::thread::Builder::new()
        .name("conveyor-flush".into())
        .spawn(move || {
            let core = thread_core;
            // Cleared however the thread ends, a panic included.
            struct Runs<'a>(&'a AtomicBool);
            impl Drop for Runs<'_> {
                fn drop(&mut self) {
                    self.0.store(false, Ordering::SeqCst);
                }
            }
            core.flusher_runs.store(true, Ordering::SeqCst);
            let _runs = Runs(&core.flusher_runs);
            flush_in_background(&core, &stopped)
        })
        .ok()?;
    let _ = core.flusher.set(thread.thread().clone());
    Some(Flusher { stop, thread })
}

/// Writes a tail no commit came to write, waking every [`BACKSTOP`] while commits
/// stream, and makes what was written durable every [`FLUSH_EVERY`].
fn flush_in_background(core: &Core, stop: &AtomicBool) {
    let mut synced = std::time::Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let fast = core.flusher_fast.load(Ordering::Relaxed);
        std::thread::park_timeout(if fast { BACKSTOP } else { FLUSH_EVERY });
        let file = {
            let mut w = core.writer();
            let sync_due = synced.elapsed() >= FLUSH_EVERY;
            if let Some(since) = w.tail_since.filter(|_| w.broken.is_none()) {
                // A younger tail is the next commit's to write, if one comes soon (but
                // not past a sync, which must cover it); one that could not be written
                // is tried again at each sync, not at each wake.
                let due = sync_due || (!w.tail_failed && since.elapsed() >= LINGER);
                if due {
                    // A failure is kept by the writer (the next commit fails with it),
                    // and `write_tail` logs it.
                    let _ = core.write_tail(&mut w);
                }
            } else if fast {
                // The stream has paused: sleep long again until the next tail.
                core.flusher_fast.store(false, Ordering::Relaxed);
            }
            if !sync_due {
                continue;
            }
            // (Also when nothing is owed: it paces a failed tail's retries.)
            synced = std::time::Instant::now();
            if !w.dirty {
                continue;
            }
            w.dirty = false;
            Arc::clone(&w.file)
        };
        // Outside the lock: commits go on while the disk catches up.
        if let Err(e) = file.sync_data() {
            // The kernel may have dropped the pages it could not write: what was
            // acknowledged may not be on disk, and a later fsync would not say so.
            // Refuse further writes; reopening replays what the disk really holds.
            let mut w = core.writer();
            w.broken = Some(format!(
                "writing the store's log to disk failed ({e}); restart Conveyor"
            ));
        }
    }
}

/// A payload under construction, with room for the frame header.
fn frame() -> Enc {
    frame_with_room(0)
}

/// A frame with room for `room` bytes of payload besides its header.
fn frame_with_room(room: usize) -> Enc {
    frame_in(Vec::new(), room)
}

/// [`frame_with_room`] in `buf`, an emptied buffer kept from an earlier frame.
fn frame_in(mut buf: Vec<u8>, room: usize) -> Enc {
    buf.reserve(8 + room);
    buf.extend_from_slice(&[0u8; 8]);
    Enc { buf }
}

/// The records of the history chain ending at `head`, oldest first, each without the
/// location of the one before it; `read` gives the bytes at a location.
fn walk_chain<'a>(
    head: Loc,
    mut read: impl FnMut(Loc) -> Result<Cow<'a, [u8]>>,
) -> Result<Vec<Cow<'a, [u8]>>> {
    let mut records = Vec::new();
    let mut loc = head;
    while loc.len > 0 {
        let value = read(loc)?;
        if value.len() < LOC_BYTES {
            return Err(corrupt("a history record", "too short"));
        }
        let prev = Loc::decode(&mut Dec::new(&value[..LOC_BYTES]))?;
        records.push(match value {
            Cow::Borrowed(value) => Cow::Borrowed(&value[LOC_BYTES..]),
            Cow::Owned(mut value) => {
                value.drain(..LOC_BYTES);
                Cow::Owned(value)
            }
        });
        loc = prev;
    }
    records.reverse();
    Ok(records)
}

/// The bytes at `loc`: from the tail if they wait there, else read from the file.
fn read_at(state: &State, loc: Loc) -> Result<Vec<u8>> {
    match state.tail.get(loc) {
        Some(bytes) => Ok(bytes.to_vec()),
        None => read_in(&state.files, loc),
    }
}

/// The bytes at `loc`, read from its segment among `files`.
fn read_in(files: &BTreeMap<u32, Arc<File>>, loc: Loc) -> Result<Vec<u8>> {
    let file = files
        .get(&loc.segment)
        .ok_or_else(|| corrupt("a stored value", format!("segment {} is gone", loc.segment)))?;
    let mut buf = vec![0u8; loc.len as usize];
    file.read_exact_at(&mut buf, loc.offset)
        .map_err(|e| corrupt("a stored value", e))?;
    Ok(buf)
}

/// Bytes in the segments before `active`.
fn sealed_bytes(state: &State, active: u32) -> u64 {
    state
        .files
        .range(..active)
        .filter_map(|(_, f)| f.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn list_segments(dir: &Path) -> Result<Vec<u32>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let name = entry.map_err(io)?.file_name();
        let name = name.to_string_lossy();
        if let Some(number) = name
            .strip_suffix(".log")
            .and_then(|n| n.parse::<u32>().ok())
        {
            segments.push(number);
        }
    }
    segments.sort_unstable();
    Ok(segments)
}

/// The frame whose header starts at `pos`, if it is whole and its checksum matches:
/// the payload's range.
fn frame_at(bytes: &[u8], pos: usize) -> Option<std::ops::Range<usize>> {
    let header = bytes.get(pos..pos.checked_add(8)?)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let end = pos.checked_add(8)?.checked_add(len)?;
    if len == 0 || end > bytes.len() || crc32fast::hash(&bytes[pos + 8..end]) != crc {
        return None;
    }
    Some(pos + 8..end)
}

/// What follows the first bad frame of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Damage {
    /// Where the bad frame starts.
    pub at: u64,
    /// Bytes from there to the end of the segment.
    pub bytes: u64,
    /// Whole frames with a matching checksum found after it: acknowledged commits that
    /// dropping the rest of the segment would lose.
    pub valid_after: u64,
    /// Where the first of them starts.
    pub first_valid: Option<u64>,
}

/// The frames of a segment from `start`: each whole frame goes to `each` (the offset of
/// its payload, the payload), up to the first bad one. Returns where the whole frames
/// end and, when they end before the segment does, what is after.
fn scan(
    bytes: &[u8],
    start: u64,
    mut each: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<(u64, Option<Damage>)> {
    let mut pos = start as usize;
    while let Some(payload) = frame_at(bytes, pos) {
        each(payload.start as u64, &bytes[payload.clone()])?;
        pos = payload.end;
    }
    if pos >= bytes.len() {
        return Ok((pos as u64, None));
    }
    // Anything valid further on? A crash tears only the last frame written, so a whole
    // frame after a bad one means the bad one is damage, not a tear.
    let mut valid_after = 0u64;
    let mut first_valid = None;
    let mut at = pos + 1;
    while at + 8 <= bytes.len() {
        match frame_at(bytes, at) {
            Some(payload) => {
                first_valid.get_or_insert(at as u64);
                valid_after += 1;
                at = payload.end;
            }
            None => at += 1,
        }
    }
    Ok((
        pos as u64,
        Some(Damage {
            at: pos as u64,
            bytes: (bytes.len() - pos) as u64,
            valid_after,
            first_valid,
        }),
    ))
}

/// Applies the frames of a segment from `start`; returns where the whole frames end and
/// what follows them, if anything.
fn replay(
    state: &mut State,
    segment: u32,
    bytes: &[u8],
    start: u64,
) -> Result<(u64, Option<Damage>)> {
    scan(bytes, start, |offset, payload| {
        apply(state, segment, offset, payload)
    })
}

/// Applies one frame's entries to the indexes; `offset` is where its payload starts in
/// `segment`.
fn apply(state: &mut State, segment: u32, offset: u64, payload: &[u8]) -> Result<()> {
    let mut dec = Dec::new(payload);
    let loc_of = |start: usize, len: usize| Loc {
        segment,
        len: len as u32,
        offset: offset + start as u64,
    };
    while !dec.is_empty() {
        match dec.u8()? {
            PUT_TASK => {
                let id = dec.u64()?;
                let process = dec.u64()?;
                let (start, value) = dec.bytes()?;
                let loc = loc_of(start, value.len());
                state.live += loc.len as u64;
                if let Some(old) = state.tasks.insert(id, TaskEntry { process, loc }) {
                    state.live = state.live.saturating_sub(old.loc.len as u64);
                }
                state.next_task = state.next_task.max(id.saturating_add(1));
            }
            INSERT_REF => {
                let process = dec.u64()?;
                let reference = dec.str()?;
                let task = dec.u64()?;
                state
                    .refs
                    .entry(process)
                    .or_default()
                    .insert(reference.to_string(), task);
            }
            SET_TIMER => {
                let due = dec.i64()?;
                let task = dec.u64()?;
                state.timers.insert(TimerKey { due, task });
            }
            CLEAR_TIMER => {
                let due = dec.i64()?;
                let task = dec.u64()?;
                state.timers.remove(&TimerKey { due, task });
            }
            SET_READY => {
                let task = dec.u64()?;
                state.ready.insert(task);
            }
            CLEAR_READY => {
                let task = dec.u64()?;
                state.ready.remove(&task);
            }
            COUNT => {
                let process = dec.u64()?;
                let node = dec.str()?;
                let now = dec.i64()?;
                let total = dec.u64()?;
                // A node's counter is there after its first frame: found by `&str`,
                // with no key allocated.
                let nodes = state.counters.entry(process).or_default();
                let counter = match nodes.get_mut(node) {
                    Some(counter) => counter,
                    None => nodes.entry(node.to_string()).or_default(),
                };
                counter.now += now;
                counter.total += total;
            }
            tag @ (HISTORY | HISTORY_RESET) => {
                let task = dec.u64()?;
                let (start, value) = dec.bytes()?;
                let loc = loc_of(start, value.len());
                state.live += loc.len as u64;
                let chain = match state.history.get(&task) {
                    Some(old) if tag == HISTORY => HistoryChain {
                        head: loc,
                        oldest: old.oldest.min(segment),
                        bytes: old.bytes + loc.len as u64,
                    },
                    old => {
                        if let Some(old) = old {
                            state.live = state.live.saturating_sub(old.bytes);
                        }
                        HistoryChain {
                            head: loc,
                            oldest: segment,
                            bytes: loc.len as u64,
                        }
                    }
                };
                state.history.insert(task, chain);
            }
            INBOX => {
                let task = dec.u64()?;
                let seq = dec.u64()?;
                let (start, value) = dec.bytes()?;
                let loc = loc_of(start, value.len());
                state.live += loc.len as u64;
                if let Some(old) = state.inbox.insert((task, seq), loc) {
                    state.live = state.live.saturating_sub(old.len as u64);
                }
                // Inbox seqs come from the same counter as task ids (`next_task_id`):
                // a replayed message must move it past its seq too, or a seq handed
                // out since the last snapshot would be handed out again.
                state.next_task = state.next_task.max(seq.saturating_add(1));
            }
            CLEAR_INBOX => {
                let task = dec.u64()?;
                let seq = dec.u64()?;
                if let Some(old) = state.inbox.remove(&(task, seq)) {
                    state.live = state.live.saturating_sub(old.len as u64);
                }
            }
            DELETE_TASK => {
                let task = dec.u64()?;
                let process = dec.u64()?;
                let reference = dec.opt_str()?;
                if let Some(old) = state.tasks.remove(&task) {
                    state.live = state.live.saturating_sub(old.loc.len as u64);
                }
                if let Some(old) = state.history.remove(&task) {
                    state.live = state.live.saturating_sub(old.bytes);
                }
                state.ready.remove(&task);
                if let Some(r) = reference
                    && let Some(refs) = state.refs.get_mut(&process)
                {
                    refs.remove(r);
                }
                let messages: Vec<(u64, u64)> = state
                    .inbox
                    .range((task, 0)..=(task, u64::MAX))
                    .map(|(k, _)| *k)
                    .collect();
                for k in messages {
                    if let Some(old) = state.inbox.remove(&k) {
                        state.live = state.live.saturating_sub(old.len as u64);
                    }
                }
            }
            PUT_PROCESS => {
                let (_, value) = dec.bytes()?;
                let record: ProcessRecord = decode_json("a process", value)?;
                if let Some(alias) = &record.alias {
                    state.aliases.insert(alias.clone(), record.id);
                }
                state.next_process = state.next_process.max(record.id.saturating_add(1));
                state.processes.insert(record.id, record);
            }
            PUT_API_KEY => {
                let (_, value) = dec.bytes()?;
                let key: ApiKey = decode_json("an API key", value)?;
                state.next_login = state.next_login.max(key.login.saturating_add(1));
                state.api_keys.insert(key.login, key);
            }
            DELETE_API_KEY => {
                let login = dec.u64()?;
                state.next_login = state.next_login.max(login.saturating_add(1));
                state.api_keys.remove(&login);
            }
            NEXT_IDS => {
                state.next_task = state.next_task.max(dec.u64()?);
                state.next_process = state.next_process.max(dec.u64()?);
                state.next_login = state.next_login.max(dec.u64()?);
            }
            other => {
                return Err(corrupt(
                    "the store's log",
                    format!(
                        "unknown entry {other} at byte {}",
                        offset + dec.pos() as u64
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn write_snapshot(
    state: &State,
    segment: u32,
    offset: u64,
    first_segment: u32,
    next_task: u64,
) -> Result<Vec<u8>> {
    let mut enc = Enc::new();
    // Sized up front: growing a buffer of tens of MB by doubling cost more than the
    // encoding itself.
    let processes: usize = state
        .processes
        .values()
        .map(|p| p.definition.len() + p.source.len() + 512)
        .sum();
    enc.buf.reserve(
        1024 + processes
            + state.api_keys.len() * 256
            + state.tasks.len() * 32
            + state.history.len() * 36
            + state.refs.values().map(|r| r.len() * 48).sum::<usize>()
            + state.timers.len() * 16
            + state.ready.len() * 8
            + state.counters.values().map(|c| c.len() * 48).sum::<usize>()
            + state.inbox.len() * 32,
    );
    enc.buf.extend_from_slice(SNAPSHOT_MAGIC);
    enc.u32(segment);
    enc.u64(offset);
    enc.u32(first_segment);
    enc.u64(next_task);
    enc.u64(state.next_process);
    enc.u64(state.next_login);
    enc.u64(state.live);
    // Records kept whole: they are few, and small.
    enc.u64(state.processes.len() as u64);
    for record in state.processes.values() {
        enc.bytes(&encode_json(record)?);
    }
    enc.u64(state.api_keys.len() as u64);
    for key in state.api_keys.values() {
        enc.bytes(&encode_json(key)?);
    }
    enc.u64(state.tasks.len() as u64);
    for (id, task) in &state.tasks {
        enc.u64(*id);
        enc.u64(task.process);
        task.loc.encode(&mut enc);
    }
    enc.u64(state.history.len() as u64);
    for (id, chain) in &state.history {
        enc.u64(*id);
        chain.head.encode(&mut enc);
        enc.u32(chain.oldest);
        enc.u64(chain.bytes);
    }
    let refs: usize = state.refs.values().map(HashMap::len).sum();
    enc.u64(refs as u64);
    for (process, map) in &state.refs {
        for (reference, task) in map {
            enc.u64(*process);
            enc.str(reference);
            enc.u64(*task);
        }
    }
    enc.u64(state.timers.len() as u64);
    for timer in &state.timers {
        enc.i64(timer.due);
        enc.u64(timer.task);
    }
    enc.u64(state.ready.len() as u64);
    for task in &state.ready {
        enc.u64(*task);
    }
    enc.u64(state.counters.values().map(|c| c.len() as u64).sum());
    for (process, node, counter) in state
        .counters
        .iter()
        .flat_map(|(p, nodes)| nodes.iter().map(move |(n, c)| (p, n, c)))
    {
        enc.u64(*process);
        enc.str(node);
        enc.i64(counter.now);
        enc.u64(counter.total);
    }
    enc.u64(state.inbox.len() as u64);
    for ((task, seq), loc) in &state.inbox {
        enc.u64(*task);
        enc.u64(*seq);
        loc.encode(&mut enc);
    }
    let crc = crc32fast::hash(&enc.buf);
    enc.u32(crc);
    Ok(enc.buf)
}

/// Reads a snapshot: the indexes, the position they are as of, and the oldest segment.
fn read_snapshot(bytes: &[u8]) -> Result<(State, u32, u64, u32)> {
    let what = "the store's snapshot";
    if bytes.len() < SNAPSHOT_MAGIC.len() + 4 || !bytes.starts_with(SNAPSHOT_MAGIC) {
        return Err(corrupt(what, "not a Conveyor snapshot"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32fast::hash(body) != crc {
        return Err(corrupt(what, "its checksum does not match"));
    }
    let mut dec = Dec::new(&body[SNAPSHOT_MAGIC.len()..]);
    let segment = dec.u32()?;
    let offset = dec.u64()?;
    let first_segment = dec.u32()?;
    let mut state = State {
        next_task: dec.u64()?,
        next_process: dec.u64()?,
        next_login: dec.u64()?,
        live: dec.u64()?,
        ..State::default()
    };
    for _ in 0..dec.u64()? {
        let record: ProcessRecord = decode_json("a process", dec.bytes()?.1)?;
        if let Some(alias) = &record.alias {
            state.aliases.insert(alias.clone(), record.id);
        }
        state.processes.insert(record.id, record);
    }
    for _ in 0..dec.u64()? {
        let key: ApiKey = decode_json("an API key", dec.bytes()?.1)?;
        state.api_keys.insert(key.login, key);
    }
    // The ordered indexes were written in order: collecting them builds each tree in
    // one pass (a million inserts one by one took twice as long).
    let count = dec.u64()?;
    let mut tasks = Vec::with_capacity(count.min(1 << 24) as usize);
    for _ in 0..count {
        let id = dec.u64()?;
        let process = dec.u64()?;
        let loc = Loc::decode(&mut dec)?;
        tasks.push((id, TaskEntry { process, loc }));
    }
    state.tasks = tasks.into_iter().collect();
    let chains = dec.u64()?;
    state.history.reserve(chains.min(1 << 24) as usize);
    for _ in 0..chains {
        let id = dec.u64()?;
        let head = Loc::decode(&mut dec)?;
        let oldest = dec.u32()?;
        let bytes = dec.u64()?;
        state.history.insert(
            id,
            HistoryChain {
                head,
                oldest,
                bytes,
            },
        );
    }
    for _ in 0..dec.u64()? {
        let process = dec.u64()?;
        let reference = dec.str()?.to_string();
        let task = dec.u64()?;
        state
            .refs
            .entry(process)
            .or_default()
            .insert(reference, task);
    }
    let count = dec.u64()?;
    let mut timers = Vec::with_capacity(count.min(1 << 24) as usize);
    for _ in 0..count {
        let due = dec.i64()?;
        let task = dec.u64()?;
        timers.push(TimerKey { due, task });
    }
    state.timers = timers.into_iter().collect();
    let count = dec.u64()?;
    let mut ready = Vec::with_capacity(count.min(1 << 24) as usize);
    for _ in 0..count {
        ready.push(dec.u64()?);
    }
    state.ready = ready.into_iter().collect();
    for _ in 0..dec.u64()? {
        let process = dec.u64()?;
        let node = dec.str()?.to_string();
        let now = dec.i64()?;
        let total = dec.u64()?;
        state
            .counters
            .entry(process)
            .or_default()
            .insert(node, NodeCounter { now, total });
    }
    for _ in 0..dec.u64()? {
        let task = dec.u64()?;
        let seq = dec.u64()?;
        let loc = Loc::decode(&mut dec)?;
        state.inbox.insert((task, seq), loc);
    }
    Ok((state, segment, offset, first_segment))
}

impl Store for LogStore {
    fn create_process(&self, new: NewProcess) -> Result<ProcessRecord> {
        let mut w = self.writer();
        let id = {
            let state = self.state();
            if let Some(alias) = &new.alias
                && let Some(existing) = state.aliases.get(alias)
            {
                return Err(StoreError::DuplicateAlias {
                    alias: alias.clone(),
                    process: *existing,
                });
            }
            state.next_process.max(1)
        };
        let record = ProcessRecord::first_version(id, new);
        self.put_process(&mut w, &record)?;
        Ok(record)
    }

    fn update_process(&self, id: u64, definition: String) -> Result<ProcessRecord> {
        let mut w = self.writer();
        let mut record = self.process(id)?.ok_or(StoreError::NoProcess(id))?;
        record.definition = definition;
        record.version += 1;
        self.put_process(&mut w, &record)?;
        Ok(record)
    }

    fn set_url_hash(&self, id: u64, hash: String) -> Result<ProcessRecord> {
        let mut w = self.writer();
        let mut record = self.process(id)?.ok_or(StoreError::NoProcess(id))?;
        record.url_hash = Some(hash);
        self.put_process(&mut w, &record)?;
        Ok(record)
    }

    fn set_settings(
        &self,
        id: u64,
        settings: serde_json::Map<String, serde_json::Value>,
    ) -> Result<ProcessRecord> {
        let mut w = self.writer();
        let mut record = self.process(id)?.ok_or(StoreError::NoProcess(id))?;
        record.settings = settings;
        self.put_process(&mut w, &record)?;
        Ok(record)
    }

    fn process(&self, id: u64) -> Result<Option<ProcessRecord>> {
        Ok(self.state().processes.get(&id).cloned())
    }

    fn process_by_alias(&self, alias: &str) -> Result<Option<ProcessRecord>> {
        let state = self.state();
        Ok(state
            .aliases
            .get(alias)
            .and_then(|id| state.processes.get(id))
            .cloned())
    }

    fn alias(&self, alias: &str) -> Result<Option<u64>> {
        Ok(self.state().aliases.get(alias).copied())
    }

    fn processes(&self) -> Result<Vec<ProcessRecord>> {
        Ok(self.state().processes.values().cloned().collect())
    }

    fn next_task_id(&self) -> Result<u64> {
        Ok(self.next_task.fetch_add(1, Ordering::SeqCst))
    }

    fn task(&self, id: u64) -> Result<Option<TaskRecord>> {
        match self.recent().take(id) {
            Some(task) => Ok(Some(task)),
            None => self.task_on_disk(id),
        }
    }

    fn task_by_ref(&self, process: u64, reference: &str) -> Result<Option<TaskRecord>> {
        let id = self
            .state()
            .refs
            .get(&process)
            .and_then(|refs| refs.get(reference))
            .copied();
        match id {
            Some(id) => self.task(id),
            None => Ok(None),
        }
    }

    fn tasks(&self, process: u64, node: Option<&str>, limit: usize) -> Result<Vec<TaskRecord>> {
        let ids: Vec<u64> = self
            .state()
            .tasks
            .iter()
            .filter(|(_, t)| t.process == process)
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::new();
        for id in ids {
            if out.len() >= limit {
                break;
            }
            if let Some(task) = self.task_on_disk(id)?
                && node.is_none_or(|n| n == task.node)
            {
                out.push(task);
            }
        }
        Ok(out)
    }

    fn history(&self, task: u64) -> Result<Vec<HistoryEvent>> {
        self.history_events(task)
    }

    fn inbox(&self, task: u64) -> Result<Vec<(u64, InboxMessage)>> {
        let messages: Vec<(u64, Vec<u8>)> = {
            let state = self.state();
            state
                .inbox
                .range((task, 0)..=(task, u64::MAX))
                .map(|((_, seq), loc)| Ok((*seq, read_at(&state, *loc)?)))
                .collect::<Result<_>>()?
        };
        messages
            .into_iter()
            .map(|(seq, bytes)| Ok((seq, decode_json("an inbox message", &bytes)?)))
            .collect()
    }

    fn inbox_tasks(&self) -> Result<Vec<u64>> {
        let mut tasks: Vec<u64> = self.state().inbox.keys().map(|(t, _)| *t).collect();
        tasks.dedup();
        Ok(tasks)
    }

    fn counters(&self, process: u64) -> Result<Vec<(String, NodeCounter)>> {
        Ok(self
            .state()
            .counters
            .get(&process)
            .map(|nodes| nodes.iter().map(|(n, c)| (n.clone(), *c)).collect())
            .unwrap_or_default())
    }

    fn ready(&self) -> Result<Vec<u64>> {
        Ok(self.state().ready.iter().copied().collect())
    }

    fn due_timers(&self, now: i64, after: Option<TimerKey>, limit: usize) -> Result<Vec<TimerKey>> {
        let end = TimerKey {
            due: now,
            task: u64::MAX,
        };
        let state = self.state();
        let range = match after {
            Some(after) if after >= end => return Ok(Vec::new()),
            Some(after) => state.timers.range((
                std::ops::Bound::Excluded(after),
                std::ops::Bound::Included(end),
            )),
            None => state.timers.range(..=end),
        };
        Ok(range.take(limit).copied().collect())
    }

    fn next_timer(&self) -> Result<Option<TimerKey>> {
        Ok(self.state().timers.first().copied())
    }

    fn create_api_key(
        &self,
        name: &str,
        secret: &str,
        processes: Vec<u64>,
        created: i64,
    ) -> Result<ApiKey> {
        let mut w = self.writer();
        let login = self.state().next_login.max(100_001);
        let key = ApiKey {
            login,
            name: name.to_string(),
            secret: secret.to_string(),
            processes,
            created,
        };
        let mut enc = frame();
        enc.u8(PUT_API_KEY);
        enc.bytes(&encode_json(&key)?);
        self.append(&mut w, enc)?;
        Ok(key)
    }

    fn api_key(&self, login: u64) -> Result<Option<ApiKey>> {
        Ok(self.state().api_keys.get(&login).cloned())
    }

    fn api_keys(&self) -> Result<Vec<ApiKey>> {
        Ok(self.state().api_keys.values().cloned().collect())
    }

    fn set_api_key_secret(&self, login: u64, secret: &str) -> Result<Option<ApiKey>> {
        let mut w = self.writer();
        let Some(mut key) = self.state().api_keys.get(&login).cloned() else {
            return Ok(None);
        };
        key.secret = secret.to_string();
        let mut enc = frame();
        enc.u8(PUT_API_KEY);
        enc.bytes(&encode_json(&key)?);
        self.append(&mut w, enc)?;
        Ok(Some(key))
    }

    fn delete_api_key(&self, login: u64) -> Result<bool> {
        let mut w = self.writer();
        if !self.state().api_keys.contains_key(&login) {
            return Ok(false);
        }
        let mut enc = frame();
        enc.u8(DELETE_API_KEY);
        enc.u64(login);
        self.append(&mut w, enc)?;
        Ok(true)
    }

    fn commit_group(&self, batches: &[Batch]) -> Result<()> {
        // JSON outside the lock; so are the copies of the records the engine reads
        // next (ready tasks), kept once the frame is written.
        let (values, kept) = encode_values(batches)?;
        let mut w = self.writer();
        let Some((enc, at)) = self.group_frame(&mut w, batches, values)? else {
            return Ok(());
        };
        self.mark_format(&mut w, BINARY_FORMAT)?;
        self.write_group(&mut w, enc, at, kept, false)
    }

    fn commits_in_place(&self) -> bool {
        true
    }

    fn commit_quick(&self, batch: &Batch, linger: Linger) -> Option<Result<()>> {
        // The writer's lock only if it is free, and only a commit that leaves no
        // maintenance behind it: no segment to roll (an fsync), no snapshot due. Those
        // go through `commit_group` on the committer's thread. (Compaction has a thread
        // of its own.)
        let mut w = match self.writer.try_lock() {
            Ok(w) => w,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        self.commit_quick_locked(&mut w, batch, linger)
    }

    fn checkpoint(&self) -> Result<()> {
        let mut w = self.writer();
        if let Some(reason) = &w.broken {
            return Err(StoreError::Io(reason.clone()));
        }
        self.write_tail(&mut w)?;
        if w.since_snapshot > self.limits.snapshot_on_close_after {
            self.snapshot(&mut w, true)
        } else {
            w.dirty = false;
            w.file.sync_data().map_err(io)
        }
    }

    fn flush(&self) -> Result<()> {
        let file = {
            let mut w = self.writer();
            if let Some(reason) = &w.broken {
                return Err(StoreError::Io(reason.clone()));
            }
            self.write_tail(&mut w)?;
            w.dirty = false;
            Arc::clone(&w.file)
        };
        if let Err(e) = file.sync_data() {
            // As in the background flusher: what was acknowledged may be lost.
            self.writer().broken = Some(format!(
                "writing the store's log to disk failed ({e}); restart Conveyor"
            ));
            return Err(io(e));
        }
        Ok(())
    }

    fn next_ids(&self) -> Result<NextIds> {
        let state = self.state();
        Ok(NextIds {
            task: self
                .next_task
                .load(Ordering::SeqCst)
                .max(state.next_task)
                .max(1),
            process: state.next_process.max(1),
            login: state.next_login.max(100_001),
        })
    }

    fn restore(&self, item: Restore) -> Result<()> {
        let mut w = self.writer();
        let mut enc = frame();
        match item {
            Restore::Process(record) => return self.put_process(&mut w, &record),
            Restore::ApiKey(key) => {
                enc.u8(PUT_API_KEY);
                enc.bytes(&encode_json(&key)?);
            }
            Restore::NextIds(ids) => {
                // An older conveyor would not know the entry: it must refuse the store.
                self.mark_format(&mut w, 2)?;
                enc.u8(NEXT_IDS);
                enc.u64(ids.task);
                enc.u64(ids.process);
                enc.u64(ids.login);
            }
        }
        self.append(&mut w, enc)?;
        let next = self.state().next_task;
        self.next_task.fetch_max(next, Ordering::SeqCst);
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64> {
        let mut total = 0;
        for entry in std::fs::read_dir(&self.dir).map_err(io)? {
            match entry.and_then(|e| e.metadata()) {
                Ok(meta) => total += meta.len(),
                // A segment the snapshot writer deleted since the listing.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
        }
        Ok(total)
    }

    fn maintenance_running(&self) -> bool {
        use std::sync::TryLockError;
        // No compactor (a store opened to be read, or its thread gone): none will run.
        if self.compactor.as_ref().is_none_or(|t| t.is_finished()) {
            return false;
        }
        if matches!(self.compacting.try_lock(), Err(TryLockError::WouldBlock)) {
            return true;
        }
        // Not waiting for the writer: whoever polls this should not slow commits down.
        match self.writer.try_lock() {
            Ok(w) => self.compaction_due(&w),
            Err(TryLockError::Poisoned(p)) => self.compaction_due(&p.into_inner()),
            Err(TryLockError::WouldBlock) => true, // ask again
        }
    }

    fn space_given_back(&self) -> Option<SpaceGivenBack> {
        Some(*self.given_back.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A problem [`LogStore::inspect`] found, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogProblem {
    /// The file it is in.
    pub file: PathBuf,
    /// The byte it starts at, when it is in a segment.
    pub offset: Option<u64>,
    pub what: String,
}

impl std::fmt::Display for LogProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.offset {
            Some(offset) => write!(f, "{} at byte {offset}: {}", self.file.display(), self.what),
            None => write!(f, "{}: {}", self.file.display(), self.what),
        }
    }
}

/// What [`LogStore::repair`] drops: the end of a segment from `from`, or (with `from`
/// 0) all of it, or the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogCut {
    pub file: PathBuf,
    pub from: u64,
    /// Bytes dropped.
    pub bytes: u64,
    /// Whole frames (acknowledged commits) among them.
    pub frames: u64,
    /// The whole file goes.
    pub remove: bool,
}

impl std::fmt::Display for LogCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.remove {
            write!(
                f,
                "remove {} ({} bytes, {} whole frame(s))",
                self.file.display(),
                self.bytes,
                self.frames
            )
        } else {
            write!(
                f,
                "cut {} at byte {}: {} bytes, {} whole frame(s)",
                self.file.display(),
                self.from,
                self.bytes,
                self.frames
            )
        }
    }
}

/// What [`LogStore::inspect`] read.
#[derive(Debug, Clone, Default)]
pub struct LogReport {
    pub segments: usize,
    /// Whole frames read.
    pub frames: u64,
    pub bytes: u64,
    pub problems: Vec<LogProblem>,
    /// What a repair would drop to make the store open again (empty when nothing
    /// needs dropping, or when nothing dropped would help: see `unrepairable`).
    pub cuts: Vec<LogCut>,
    /// A problem no cut can fix (damage inside what the snapshot already holds).
    pub unrepairable: Option<String>,
}

impl LogStore {
    /// Reads every frame of every segment and the snapshot, without opening the store
    /// (the store must not be in use: its lock is taken), and says what is wrong, where,
    /// and what [`LogStore::repair`] would drop.
    pub fn inspect(data: &Path) -> Result<LogReport> {
        let dir = LogStore::dir_in(data);
        let _lock = lock_dir(&dir, data)?;
        inspect_locked(&dir)
    }

    /// Drops what [`LogStore::inspect`] lists in `cuts` (the store must not be in use).
    /// Returns what it dropped; refuses when the damage is of a kind no cut fixes.
    pub fn repair(data: &Path) -> Result<LogReport> {
        let dir = LogStore::dir_in(data);
        let _lock = lock_dir(&dir, data)?;
        let report = inspect_locked(&dir)?;
        if let Some(reason) = &report.unrepairable {
            return Err(corrupt("the store's log", reason));
        }
        for cut in &report.cuts {
            tracing::warn!(
                file = %cut.file.display(),
                offset = cut.from,
                bytes = cut.bytes,
                frames = cut.frames,
                "store repair: {cut}"
            );
            if cut.remove {
                std::fs::remove_file(&cut.file).map_err(io)?;
            } else {
                OpenOptions::new()
                    .write(true)
                    .open(&cut.file)
                    .and_then(|f| f.set_len(cut.from).and_then(|_| f.sync_all()))
                    .map_err(io)?;
            }
        }
        if !report.cuts.is_empty() {
            sync_dir(&dir)?;
        }
        Ok(report)
    }
}

/// Takes the lock of the log store in `dir` (of the data dir `data`).
fn lock_dir(dir: &Path, data: &Path) -> Result<File> {
    if !dir.exists() {
        return Err(StoreError::Io(format!(
            "{} holds no log store",
            data.display()
        )));
    }
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("LOCK"))
        .map_err(io)?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
            path: data.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

fn inspect_locked(dir: &Path) -> Result<LogReport> {
    let mut report = LogReport::default();
    let snapshot_path = dir.join("snapshot");
    // Where the snapshot says the log continues, and the oldest segment it needs.
    let mut position = (1u32, 0u64);
    let mut first_segment = 1u32;
    let mut snapshot_bad = false;
    match std::fs::read(&snapshot_path) {
        Ok(bytes) => match read_snapshot(&bytes) {
            Ok((_, segment, offset, first)) => {
                position = (segment, offset);
                first_segment = first;
            }
            Err(e) => {
                snapshot_bad = true;
                report.problems.push(LogProblem {
                    file: snapshot_path.clone(),
                    offset: None,
                    what: e.to_string(),
                });
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let segments: Vec<u32> = list_segments(dir)?
        .into_iter()
        .filter(|&s| s >= first_segment)
        .collect();
    let last = segments.last().copied().unwrap_or(first_segment);
    if snapshot_bad {
        if segments.first() == Some(&1) {
            report.cuts.push(LogCut {
                file: snapshot_path.clone(),
                from: 0,
                bytes: std::fs::metadata(&snapshot_path).map_or(0, |m| m.len()),
                frames: 0,
                remove: true,
            });
        } else {
            report.unrepairable = Some(format!(
                "{} is damaged and the segments before {} were compacted away: the log alone cannot rebuild the store",
                snapshot_path.display(),
                segments
                    .first()
                    .map_or_else(|| "the first".into(), |s| segment_name(*s))
            ));
        }
    }
    if let Some(missing) = (first_segment..=last).find(|n| !segments.contains(n))
        && !segments.is_empty()
    {
        report.problems.push(LogProblem {
            file: dir.join(segment_name(missing)),
            offset: None,
            what: "this segment is missing".into(),
        });
        report
            .unrepairable
            .get_or_insert_with(|| format!("segment {} is missing", segment_name(missing)));
    }
    let mut scratch = State::default();
    let mut cutting = false;
    for &number in &segments {
        let path = dir.join(segment_name(number));
        let bytes = std::fs::read(&path).map_err(io)?;
        report.segments += 1;
        report.bytes += bytes.len() as u64;
        let mut frames = 0u64;
        let mut bad_entry: Option<(u64, String)> = None;
        let (_, damage) = scan(&bytes, 0, |offset, payload| {
            frames += 1;
            if bad_entry.is_none()
                && let Err(e) = apply(&mut scratch, number, offset, payload)
            {
                bad_entry = Some((offset - 8, e.to_string()));
            }
            Ok(())
        })?;
        report.frames += frames;
        if cutting {
            report.cuts.push(LogCut {
                file: path.clone(),
                from: 0,
                bytes: bytes.len() as u64,
                frames: frames + damage.map_or(0, |d| d.valid_after),
                remove: true,
            });
        }
        if let Some((offset, reason)) = bad_entry {
            report.problems.push(LogProblem {
                file: path.clone(),
                offset: Some(offset),
                what: format!("a frame whose checksum matches cannot be read: {reason}"),
            });
            report
                .unrepairable
                .get_or_insert_with(|| format!("{} holds an unreadable frame", path.display()));
        }
        let Some(damage) = damage else { continue };
        let torn = number == last && damage.valid_after == 0;
        report.problems.push(LogProblem {
            file: path.clone(),
            offset: Some(damage.at),
            what: if torn {
                format!(
                    "a frame torn by a crash: {} bytes at the end of the log, with nothing whole after them (the next open cuts them off)",
                    damage.bytes
                )
            } else if damage.valid_after > 0 {
                format!(
                    "a damaged frame ({} bytes to the end of the segment) followed by {} whole frame(s), the first at byte {}: corruption; the store does not open",
                    damage.bytes,
                    damage.valid_after,
                    damage.first_valid.unwrap_or(damage.at)
                )
            } else {
                format!(
                    "a damaged frame ({} bytes to the end of the segment) in a segment that is not the last: corruption; the store does not open",
                    damage.bytes
                )
            },
        });
        if cutting {
            continue;
        }
        if (number, damage.at) < position {
            report.unrepairable.get_or_insert_with(|| {
                format!(
                    "{} is damaged at byte {}, before the point the snapshot holds the store as of ({} byte {}): values stored there cannot be read, and dropping them would not help",
                    path.display(),
                    damage.at,
                    segment_name(position.0),
                    position.1
                )
            });
            continue;
        }
        report.cuts.push(LogCut {
            file: path.clone(),
            from: damage.at,
            bytes: damage.bytes,
            frames: damage.valid_after,
            remove: false,
        });
        cutting = true;
    }
    Ok(report)
}

impl Core {
    /// Writes a snapshot now (tests).
    #[cfg(test)]
    fn snapshot_now(&self) -> Result<()> {
        let mut w = self.writer();
        self.snapshot(&mut w, true)
    }

    /// Compacts every sealed segment now, whatever the share of dead bytes, and waits
    /// until they are deleted (tests).
    #[cfg(test)]
    fn compact_now(&self) -> Result<()> {
        let head = {
            let mut w = self.writer();
            self.roll(&mut w)?;
            w.segment
        };
        loop {
            let first = self.writer().first_segment;
            if first >= head {
                break;
            }
            // `false`: the background compactor took that segment first, or nothing is
            // sealed any more; the loop looks again.
            self.compact_oldest()?;
        }
        self.snapshot(&mut self.writer(), true)
    }

    fn put_process(&self, w: &mut Writer, record: &ProcessRecord) -> Result<()> {
        let mut enc = frame();
        enc.u8(PUT_PROCESS);
        enc.bytes(&encode_json(record)?);
        self.append(w, enc)
    }
}

#[cfg(test)]
mod tests;
