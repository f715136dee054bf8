//! The sled implementation of [`Store`].
//!
//! Everything lives in one sled tree, `conveyor`, with a one-byte prefix per kind of
//! record (integers big-endian, so keys sort in numeric order):
//!
//! | prefix | key                              | value                  |
//! |--------|----------------------------------|------------------------|
//! | `X`    | `format`, `next_process`, …      | u32 / u64              |
//! | `P`    | process id                       | ProcessRecord (JSON)   |
//! | `A`    | alias                            | process id             |
//! | `T`    | task id                          | TaskRecord (JSON)      |
//! | `R`    | process id + ref                 | task id                |
//! | `B`    | process id + task id             | —                      |
//! | `M`    | due (ms, sign-flipped) + task id | —                      |
//! | `Q`    | task id (the ready set)          | —                      |
//! | `C`    | process id + node id             | now (i64) + total      |
//! | `H`    | task id + seq of first event     | [HistoryEvent] (JSON)  |
//! | `I`    | task id + seq                    | InboxMessage (JSON)    |
//! | `K`    | API login                        | ApiKey (JSON)          |
//!
//! One tree is what makes commits cheap: a [`Batch`] becomes one `sled::Batch`, which
//! sled applies atomically (all of it or none, also across a crash) without the cost of
//! a multi-tree transaction. Writes that read first (counters, the unique ref check,
//! new ids) are serialized by `write_lock`, so no two of them interleave.
//!
//! Every write to sled goes through that lock, reads never take it. sled 0.34 can
//! deadlock when an `update_and_fetch` runs beside an `apply_batch` (seen here: a task id
//! taken on one thread while the committer applied a group hung both for good), so
//! nothing writes to sled outside it. Task ids, which every create needs, are therefore
//! handed out from a block reserved in memory ([`IdBlock`]): one counter write per
//! [`ID_BLOCK`] tasks, under the lock, instead of one sled write per task beside it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::*;

/// The on-disk format this code writes and understands.
pub const FORMAT_VERSION: u32 = 2;

/// Task ids reserved at a time. The counter on disk says the last id reserved, so a
/// crash skips at most this many ids (never reuses one); a clean close gives the unused
/// rest back, so ids stay 1, 2, 3, … across restarts.
pub const ID_BLOCK: u64 = 1024;

/// Task ids reserved on disk and not handed out yet: `next..end`.
#[derive(Default)]
struct IdBlock {
    next: u64,
    end: u64,
}

pub struct SledStore {
    inner: Arc<Inner>,
    /// The thread that gives space back ([`reclaim`]), while one runs; joined on drop.
    maintenance: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// What the store and its maintenance thread share.
pub(crate) struct Inner {
    /// The data directory (the sled files are in [`SledStore::dir_in`] it).
    data: PathBuf,
    options: StoreOptions,
    /// The open sled database. Replaced whole when [`reclaim`] swaps in a rewritten copy;
    /// `None` only if reopening after a swap failed (every call then fails).
    generation: RwLock<Option<Arc<Generation>>>,
    /// Held by every write to sled (see the module's comment), and by a swap throughout.
    write_lock: Mutex<()>,
    /// Task ids reserved and not handed out yet. Taken before `write_lock` when both are.
    task_ids: Mutex<IdBlock>,
    /// When to give space back, and what was removed since it last was.
    reclaim: reclaim::State,
}

/// One open sled database and its tree. A call holds it (an `Arc`) while it reads or
/// writes, so a swap knows when the old one is no longer in use.
pub(crate) struct Generation {
    db: sled::Db,
    tree: sled::Tree,
}

/// A sled error as ours: a full disk is told by its OS error (ENOSPC), not its text.
fn io(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(ref io_error) if is_disk_full(io_error) => StoreError::DiskFull,
        other => StoreError::Io(other.to_string()),
    }
}

fn is_disk_full(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(28) || e.kind() == std::io::ErrorKind::StorageFull
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StoreError::Io(e.to_string()))
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

fn u64_from(bytes: &[u8]) -> Result<u64> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        what: "an id".into(),
        reason: format!("{} bytes, expected 8", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(array))
}

/// `prefix` + `id` (+ `rest`).
fn key(prefix: u8, id: u64, rest: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + rest.len());
    key.push(prefix);
    key.extend_from_slice(&id.to_be_bytes());
    key.extend_from_slice(rest);
    key
}

fn text_key(prefix: u8, text: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + text.len());
    key.push(prefix);
    key.extend_from_slice(text.as_bytes());
    key
}

fn timer_key(timer: TimerKey) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[0] = b'M';
    // Flip the sign bit so negative times sort before positive ones.
    key[1..9].copy_from_slice(&((timer.due as u64) ^ (1 << 63)).to_be_bytes());
    key[9..].copy_from_slice(&timer.task.to_be_bytes());
    key
}

fn timer_from(key: &[u8]) -> Result<TimerKey> {
    if key.len() != 17 {
        return Err(StoreError::Corrupt {
            what: "a timer".into(),
            reason: format!("{} bytes, expected 17", key.len()),
        });
    }
    Ok(TimerKey {
        due: (u64_from(&key[1..9])? ^ (1 << 63)) as i64,
        task: u64_from(&key[9..])?,
    })
}

fn counter_value(counter: NodeCounter) -> [u8; 16] {
    let mut value = [0u8; 16];
    value[..8].copy_from_slice(&counter.now.to_be_bytes());
    value[8..].copy_from_slice(&counter.total.to_be_bytes());
    value
}

fn counter_from(bytes: &[u8]) -> Result<NodeCounter> {
    if bytes.len() != 16 {
        return Err(StoreError::Corrupt {
            what: "a counter".into(),
            reason: format!("{} bytes", bytes.len()),
        });
    }
    Ok(NodeCounter {
        now: u64_from(&bytes[..8])? as i64,
        total: u64_from(&bytes[8..])?,
    })
}

impl Generation {
    /// Opens (or creates) the sled database in `dir`; `data` names it in errors.
    fn open(dir: &Path, data: &Path, options: StoreOptions) -> Result<Generation> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(options.cache_bytes)
            .open()
            .map_err(|e| match e {
                // sled 0.34 wraps a failed `try_lock_exclusive` in an `ErrorKind::Other`
                // of its own whose text is the only sign of it ("could not acquire
                // lock on …"): a foreign library's text, not one of our errors.
                sled::Error::Io(ref io_error)
                    if io_error.kind() == std::io::ErrorKind::WouldBlock
                        || io_error.to_string().contains("lock") =>
                {
                    StoreError::Locked {
                        path: data.display().to_string(),
                    }
                }
                sled::Error::Io(ref io_error) if io_error.raw_os_error() == Some(30) => {
                    StoreError::ReadOnly {
                        path: data.display().to_string(),
                    }
                }
                other => io(other),
            })?;
        let tree = db.open_tree("conveyor").map_err(io)?;
        Ok(Generation { db, tree })
    }

    /// [`Generation::open`], waiting up to 5 s while sled's background threads of a
    /// database just closed still hold its lock.
    fn open_when_free(dir: &Path, data: &Path, options: StoreOptions) -> Result<Generation> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match Generation::open(dir, data, options) {
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }
}

impl Inner {
    /// The open database, held for the length of one call.
    fn current(&self) -> Result<Arc<Generation>> {
        let guard = match self.generation.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.clone().ok_or_else(|| {
            StoreError::Io(format!(
                "the sled store in {} could not be reopened after giving space back; restart the engine",
                self.data.display()
            ))
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        match self.write_lock.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl SledStore {
    fn current(&self) -> Result<Arc<Generation>> {
        self.inner.current()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner.lock()
    }

    /// The directory of a sled store inside a data directory.
    pub fn dir_in(data: &Path) -> std::path::PathBuf {
        data.join("store")
    }

    /// Opens (or creates) the store in `path` with the default options.
    pub fn open(path: &Path) -> Result<SledStore> {
        SledStore::open_with(path, StoreOptions::default())
    }

    /// Opens the store and closes it again, so that its next open is quick.
    ///
    /// sled 0.34 writes its snapshot (where every page lives) only while it opens, and an
    /// open replays every log segment written since the last snapshot: after an engine
    /// has run for a long time, its next start would replay everything it wrote. Called
    /// after a clean shutdown, when nothing else holds the store, this moves that replay
    /// to the shutdown. (After a crash nothing can spare the next start the replay.)
    ///
    /// sled's background threads let go of a store's files a moment after its last
    /// handle is dropped: this waits up to 2 s for them, then fails with
    /// [`StoreError::Locked`] if the store is still in use.
    pub fn checkpoint(path: &Path, options: StoreOptions) -> Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match SledStore::open_with(path, options) {
                Ok(store) => return store.flush(),
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens (or creates) the store in `path`.
    pub fn open_with(path: &Path, options: StoreOptions) -> Result<SledStore> {
        if !path.exists() {
            std::fs::create_dir_all(path)
                .map_err(|e| StoreError::Io(format!("cannot create {}: {e}", path.display())))?;
            // Task data holds credentials: a new data dir is readable by its owner only.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
            }
        }
        let generation = Generation::open(&SledStore::dir_in(path), path, options)?;
        let store = SledStore {
            inner: Arc::new(Inner {
                data: path.to_path_buf(),
                options,
                generation: RwLock::new(Some(Arc::new(generation))),
                write_lock: Mutex::new(()),
                task_ids: Mutex::new(IdBlock::default()),
                reclaim: reclaim::State::default(),
            }),
            maintenance: Mutex::new(None),
        };
        let tree = &store.current()?.tree;
        match tree.get(b"Xformat").map_err(io)? {
            None => {
                tree.insert(b"Xformat", &FORMAT_VERSION.to_be_bytes())
                    .map_err(io)?;
            }
            Some(bytes) => {
                let found = u32::from_be_bytes(bytes.as_ref().try_into().map_err(|_| {
                    StoreError::Corrupt {
                        what: "the format version".into(),
                        reason: "wrong length".into(),
                    }
                })?);
                if found > FORMAT_VERSION {
                    return Err(StoreError::NewerFormat {
                        path: path.display().to_string(),
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
            }
        }
        Ok(store)
    }

    fn id_block(&self) -> std::sync::MutexGuard<'_, IdBlock> {
        match self.inner.task_ids.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Writes the counter back to the last task id handed out, so the unused rest of
    /// the block is not skipped by the next open; the next id reserves a new block.
    fn give_back_task_ids(&self) -> Result<()> {
        let mut block = self.id_block();
        if block.next < block.end {
            let _guard = self.lock();
            self.current()?
                .tree
                .insert(text_key(b'X', "next_task"), &(block.next - 1).to_be_bytes())
                .map_err(io)?;
        }
        *block = IdBlock::default();
        Ok(())
    }

    fn get<T: DeserializeOwned>(&self, what: &str, key: &[u8]) -> Result<Option<T>> {
        match self.current()?.tree.get(key).map_err(io)? {
            Some(bytes) => decode(what, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Adds one to a counter in `X` and returns the new value (starting after `first - 1`).
    fn next_number(&self, name: &str, first: u64) -> Result<u64> {
        let key = text_key(b'X', name);
        let next = self
            .current()?
            .tree
            .update_and_fetch(key, |old| {
                let current = old
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(first - 1);
                Some((current + 1).to_be_bytes().to_vec())
            })
            .map_err(io)?;
        match next {
            Some(bytes) => u64_from(&bytes),
            None => Err(StoreError::Corrupt {
                what: format!("the counter {name}"),
                reason: "missing after update".into(),
            }),
        }
    }

    /// The number a counter in `X` handed out last (`first - 1` when none yet).
    fn last_number(&self, name: &str, first: u64) -> Result<u64> {
        match self.current()?.tree.get(text_key(b'X', name)).map_err(io)? {
            Some(bytes) => u64_from(&bytes),
            None => Ok(first - 1),
        }
    }

    /// Makes a counter in `X` hand out at least `next` next.
    fn raise_number(&self, name: &str, first: u64, next: u64) -> Result<()> {
        let last = next.saturating_sub(1).max(first - 1);
        self.current()?
            .tree
            .update_and_fetch(text_key(b'X', name), |old| {
                let current = old
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(first - 1);
                Some(current.max(last).to_be_bytes().to_vec())
            })
            .map_err(io)?;
        Ok(())
    }

    fn put_process(&self, record: &ProcessRecord) -> Result<()> {
        self.current()?
            .tree
            .insert(key(b'P', record.id, &[]), encode(record)?)
            .map_err(io)?;
        Ok(())
    }

    fn process_or_fail(&self, id: u64) -> Result<ProcessRecord> {
        self.process(id)?.ok_or(StoreError::NoProcess(id))
    }
}

impl Store for SledStore {
    fn create_process(&self, new: NewProcess) -> Result<ProcessRecord> {
        let _guard = self.lock();
        if let Some(alias) = &new.alias
            && let Some(existing) = self.alias(alias)?
        {
            return Err(StoreError::DuplicateAlias {
                alias: alias.clone(),
                process: existing,
            });
        }
        let id = self.next_number("next_process", 1)?;
        let record = ProcessRecord::first_version(id, new);
        let mut batch = sled::Batch::default();
        batch.insert(key(b'P', id, &[]), encode(&record)?);
        if let Some(alias) = &record.alias {
            batch.insert(text_key(b'A', alias), &id.to_be_bytes());
        }
        self.current()?.tree.apply_batch(batch).map_err(io)?;
        Ok(record)
    }

    fn update_process(&self, id: u64, definition: String) -> Result<ProcessRecord> {
        let _guard = self.lock();
        let mut record = self.process_or_fail(id)?;
        record.definition = definition;
        record.version += 1;
        self.put_process(&record)?;
        Ok(record)
    }

    fn set_url_hash(&self, id: u64, hash: String) -> Result<ProcessRecord> {
        let _guard = self.lock();
        let mut record = self.process_or_fail(id)?;
        record.url_hash = Some(hash);
        self.put_process(&record)?;
        Ok(record)
    }

    fn set_settings(
        &self,
        id: u64,
        settings: serde_json::Map<String, serde_json::Value>,
    ) -> Result<ProcessRecord> {
        let _guard = self.lock();
        let mut record = self.process_or_fail(id)?;
        record.settings = settings;
        self.put_process(&record)?;
        Ok(record)
    }

    fn create_api_key(
        &self,
        name: &str,
        secret: &str,
        processes: Vec<u64>,
        created: i64,
    ) -> Result<ApiKey> {
        let _guard = self.lock();
        let login = self.next_number("next_login", 100_001)?;
        let key_record = ApiKey {
            login,
            name: name.to_string(),
            secret: secret.to_string(),
            processes,
            created,
        };
        self.current()?
            .tree
            .insert(key(b'K', login, &[]), encode(&key_record)?)
            .map_err(io)?;
        Ok(key_record)
    }

    fn api_key(&self, login: u64) -> Result<Option<ApiKey>> {
        self.get("an API key", &key(b'K', login, &[]))
    }

    fn set_api_key_secret(&self, login: u64, secret: &str) -> Result<Option<ApiKey>> {
        let _guard = self.lock();
        let Some(mut record) = self.api_key(login)? else {
            return Ok(None);
        };
        record.secret = secret.to_string();
        self.current()?
            .tree
            .insert(key(b'K', login, &[]), encode(&record)?)
            .map_err(io)?;
        Ok(Some(record))
    }

    fn delete_api_key(&self, login: u64) -> Result<bool> {
        let _guard = self.lock();
        // `next_login` is a counter of its own: a deleted login is never reused.
        Ok(self
            .current()?
            .tree
            .remove(key(b'K', login, &[]))
            .map_err(io)?
            .is_some())
    }

    fn api_keys(&self) -> Result<Vec<ApiKey>> {
        self.current()?
            .tree
            .scan_prefix(b"K")
            .values()
            .map(|v| decode("an API key", &v.map_err(io)?))
            .collect()
    }

    fn process(&self, id: u64) -> Result<Option<ProcessRecord>> {
        self.get("a process", &key(b'P', id, &[]))
    }

    fn process_by_alias(&self, alias: &str) -> Result<Option<ProcessRecord>> {
        match self.alias(alias)? {
            Some(id) => self.process(id),
            None => Ok(None),
        }
    }

    fn alias(&self, alias: &str) -> Result<Option<u64>> {
        match self
            .current()?
            .tree
            .get(text_key(b'A', alias))
            .map_err(io)?
        {
            Some(id) => u64_from(&id).map(Some),
            None => Ok(None),
        }
    }

    fn processes(&self) -> Result<Vec<ProcessRecord>> {
        self.current()?
            .tree
            .scan_prefix(b"P")
            .values()
            .map(|v| decode("a process", &v.map_err(io)?))
            .collect()
    }

    fn next_task_id(&self) -> Result<u64> {
        // Our own counter (1, 2, 3, …): sled's `generate_id` jumps by a million on every
        // open. A failed creation leaves a gap; ids are never reused.
        let mut block = self.id_block();
        if block.next >= block.end {
            let _guard = self.lock();
            let start = (self.last_number("next_task", 1)? + 1).max(block.end);
            let end = start + ID_BLOCK;
            self.current()?
                .tree
                .insert(text_key(b'X', "next_task"), &(end - 1).to_be_bytes())
                .map_err(io)?;
            *block = IdBlock { next: start, end };
        }
        let id = block.next;
        block.next += 1;
        Ok(id)
    }

    fn task(&self, id: u64) -> Result<Option<TaskRecord>> {
        self.get("a task", &key(b'T', id, &[]))
    }

    fn task_by_ref(&self, process: u64, reference: &str) -> Result<Option<TaskRecord>> {
        match self
            .current()?
            .tree
            .get(key(b'R', process, reference.as_bytes()))
            .map_err(io)?
        {
            Some(id) => self.task(u64_from(&id)?),
            None => Ok(None),
        }
    }

    fn tasks(&self, process: u64, node: Option<&str>, limit: usize) -> Result<Vec<TaskRecord>> {
        let mut out = Vec::new();
        for entry in self
            .current()?
            .tree
            .scan_prefix(key(b'B', process, &[]))
            .keys()
        {
            if out.len() >= limit {
                break;
            }
            let entry = entry.map_err(io)?;
            if let Some(task) = self.task(u64_from(&entry[9..])?)?
                && node.is_none_or(|n| n == task.node)
            {
                out.push(task);
            }
        }
        Ok(out)
    }

    fn history(&self, task: u64) -> Result<Vec<HistoryEvent>> {
        let mut events = Vec::new();
        for value in self
            .current()?
            .tree
            .scan_prefix(key(b'H', task, &[]))
            .values()
        {
            let record: Vec<HistoryEvent> = decode("history events", &value.map_err(io)?)?;
            events.extend(record);
        }
        Ok(events)
    }

    fn inbox(&self, task: u64) -> Result<Vec<(u64, InboxMessage)>> {
        self.current()?
            .tree
            .scan_prefix(key(b'I', task, &[]))
            .map(|entry| {
                let (k, v) = entry.map_err(io)?;
                Ok((u64_from(&k[9..])?, decode("an inbox message", &v)?))
            })
            .collect()
    }

    fn inbox_tasks(&self) -> Result<Vec<u64>> {
        let mut tasks: Vec<u64> = Vec::new();
        for k in self.current()?.tree.scan_prefix(b"I").keys() {
            let id = u64_from(&k.map_err(io)?[1..9])?;
            if tasks.last() != Some(&id) {
                tasks.push(id);
            }
        }
        Ok(tasks)
    }

    fn counters(&self, process: u64) -> Result<Vec<(String, NodeCounter)>> {
        self.current()?
            .tree
            .scan_prefix(key(b'C', process, &[]))
            .map(|entry| {
                let (k, v) = entry.map_err(io)?;
                Ok((
                    String::from_utf8_lossy(&k[9..]).into_owned(),
                    counter_from(&v)?,
                ))
            })
            .collect()
    }

    fn ready(&self) -> Result<Vec<u64>> {
        self.current()?
            .tree
            .scan_prefix(b"Q")
            .keys()
            .map(|k| u64_from(&k.map_err(io)?[1..]))
            .collect()
    }

    fn due_timers(&self, now: i64, after: Option<TimerKey>, limit: usize) -> Result<Vec<TimerKey>> {
        let end = timer_key(TimerKey {
            due: now,
            task: u64::MAX,
        })
        .to_vec();
        let db = self.current()?;
        let range = match after {
            Some(after) => db.tree.range((
                std::ops::Bound::Excluded(timer_key(after).to_vec()),
                std::ops::Bound::Included(end),
            )),
            None => db.tree.range(b"M".to_vec()..=end),
        };
        range
            .keys()
            .take(limit)
            .map(|k| timer_from(&k.map_err(io)?))
            .collect()
    }

    fn next_timer(&self) -> Result<Option<TimerKey>> {
        match self.current()?.tree.scan_prefix(b"M").keys().next() {
            Some(k) => timer_from(&k.map_err(io)?).map(Some),
            None => Ok(None),
        }
    }

    fn commit_group(&self, batches: &[Batch]) -> Result<()> {
        // Encode outside the lock; read-then-write parts inside it.
        let mut writes = sled::Batch::default();
        let mut counts: Vec<(Vec<u8>, i64, u64)> = Vec::new();
        let mut refs: Vec<(Vec<u8>, u64, u64, &str)> = Vec::new();
        let mut prefixes: Vec<Vec<u8>> = Vec::new();
        // Tasks removed and histories trimmed: what leaves space behind (`reclaim`).
        let mut removed = 0u64;
        for op in batches.iter().flat_map(|batch| &batch.ops) {
            match op {
                Op::PutTask(task) => writes.insert(key(b'T', task.id, &[]), encode(task)?),
                Op::IndexTask { process, task } => {
                    writes.insert(key(b'B', *process, &task.to_be_bytes()), &[] as &[u8])
                }
                Op::InsertRef {
                    process,
                    reference,
                    task,
                } => refs.push((
                    key(b'R', *process, reference.as_bytes()),
                    *task,
                    *process,
                    reference,
                )),
                Op::SetTimer(t) => writes.insert(timer_key(*t).to_vec(), &[] as &[u8]),
                Op::ClearTimer(t) => writes.remove(timer_key(*t).to_vec()),
                Op::SetReady(task) => writes.insert(key(b'Q', *task, &[]), &[] as &[u8]),
                Op::ClearReady(task) => writes.remove(key(b'Q', *task, &[])),
                Op::Count {
                    process,
                    node,
                    now,
                    total,
                } => counts.push((key(b'C', *process, node.as_bytes()), *now, *total)),
                Op::History { task, seq, events } => {
                    writes.insert(key(b'H', *task, &seq.to_be_bytes()), encode(events)?)
                }
                Op::ReplaceHistory { task, events } => {
                    removed += 1;
                    // Only the task's own step writes its history: the records read here
                    // are all there is. Those written later in the batch win over these
                    // removals (a `sled::Batch` keeps the last change of each key).
                    for k in self
                        .current()?
                        .tree
                        .scan_prefix(key(b'H', *task, &[]))
                        .keys()
                    {
                        writes.remove(k.map_err(io)?);
                    }
                    writes.insert(key(b'H', *task, &0u64.to_be_bytes()), encode(events)?)
                }
                Op::Inbox { task, seq, message } => {
                    writes.insert(key(b'I', *task, &seq.to_be_bytes()), encode(message)?)
                }
                Op::ClearInbox { task, seq } => writes.remove(key(b'I', *task, &seq.to_be_bytes())),
                Op::DeleteTask {
                    task,
                    process,
                    reference,
                } => {
                    removed += 1;
                    writes.remove(key(b'T', *task, &[]));
                    writes.remove(key(b'B', *process, &task.to_be_bytes()));
                    writes.remove(key(b'Q', *task, &[]));
                    if let Some(r) = reference {
                        writes.remove(key(b'R', *process, r.as_bytes()));
                    }
                    prefixes.push(key(b'H', *task, &[]));
                    prefixes.push(key(b'I', *task, &[]));
                }
            }
        }
        let _guard = self.lock();
        // Taken under the lock: a swap (`reclaim`) holds it too, so this is the database
        // the batch goes into.
        let db = self.current()?;
        // A ref may be taken already, or claimed twice within this group (two steps
        // copying tasks with the same ref): either way the whole transaction fails.
        let mut claimed: std::collections::HashMap<&[u8], u64> = std::collections::HashMap::new();
        for (k, task, process, reference) in &refs {
            let taken_here = claimed
                .insert(k.as_slice(), *task)
                .is_some_and(|t| t != *task);
            let taken_before = match db.tree.get(k).map_err(io)? {
                Some(existing) => existing.as_ref() != task.to_be_bytes(),
                None => false,
            };
            if taken_here || taken_before {
                return Err(StoreError::DuplicateRef {
                    process: *process,
                    reference: reference.to_string(),
                });
            }
        }
        for (k, task, _, _) in refs {
            writes.insert(k, &task.to_be_bytes());
        }
        // Several changes to one counter in a batch add up.
        counts.sort_by(|a, b| a.0.cmp(&b.0));
        let mut i = 0;
        while i < counts.len() {
            let k = counts[i].0.clone();
            let (mut now, mut total) = (0, 0);
            while i < counts.len() && counts[i].0 == k {
                now += counts[i].1;
                total += counts[i].2;
                i += 1;
            }
            let mut counter = match db.tree.get(&k).map_err(io)? {
                Some(bytes) => counter_from(&bytes)?,
                None => NodeCounter::default(),
            };
            counter.now += now;
            counter.total += total;
            writes.insert(k, &counter_value(counter));
        }
        for prefix in prefixes {
            for k in db.tree.scan_prefix(&prefix).keys() {
                writes.remove(k.map_err(io)?);
            }
        }
        db.tree.apply_batch(writes).map_err(io)?;
        drop(db);
        drop(_guard);
        self.removed(removed);
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.current()?.db.flush().map(|_| ()).map_err(io)
    }

    fn size_on_disk(&self) -> Result<u64> {
        self.current()?.db.size_on_disk().map_err(io)
    }

    fn maintenance_running(&self) -> bool {
        self.rewriting()
    }

    fn space_given_back(&self) -> Option<SpaceGivenBack> {
        Some(self.reclaimed())
    }

    fn checkpoint(&self) -> Result<()> {
        self.give_back_task_ids()?;
        self.flush()
    }

    fn next_ids(&self) -> Result<NextIds> {
        let block = self.id_block();
        let task = if block.next < block.end {
            block.next
        } else {
            self.last_number("next_task", 1)? + 1
        };
        Ok(NextIds {
            task,
            process: self.last_number("next_process", 1)? + 1,
            login: self.last_number("next_login", 100_001)? + 1,
        })
    }

    fn restore(&self, item: Restore) -> Result<()> {
        // Ids to come must start past the restored ones: drop the reserved block (taken
        // before the write lock, as `next_task_id` does).
        let mut block = self.id_block();
        if matches!(item, Restore::NextIds(_)) && block.next < block.end {
            // What was reserved stays reserved on disk; the counter is raised past it.
            *block = IdBlock::default();
        }
        let _guard = self.lock();
        match item {
            Restore::Process(record) => {
                let mut batch = sled::Batch::default();
                batch.insert(key(b'P', record.id, &[]), encode(&record)?);
                if let Some(alias) = &record.alias {
                    batch.insert(text_key(b'A', alias), &record.id.to_be_bytes());
                }
                self.current()?.tree.apply_batch(batch).map_err(io)?;
                self.raise_number("next_process", 1, record.id + 1)
            }
            Restore::ApiKey(api_key) => {
                self.current()?
                    .tree
                    .insert(key(b'K', api_key.login, &[]), encode(&api_key)?)
                    .map_err(io)?;
                self.raise_number("next_login", 100_001, api_key.login + 1)
            }
            Restore::NextIds(ids) => {
                self.raise_number("next_task", 1, ids.task)?;
                self.raise_number("next_process", 1, ids.process)?;
                self.raise_number("next_login", 100_001, ids.login)
            }
        }
    }
}

impl Drop for SledStore {
    /// A clean close gives unused task ids back (a crash skips them, see [`ID_BLOCK`]),
    /// after a maintenance thread still running was told to stop and has.
    fn drop(&mut self) {
        self.stop_maintenance();
        if let Err(e) = self.give_back_task_ids().and_then(|()| self.flush()) {
            tracing::warn!(error = %e, "closing the sled store: the task id counter was not written back");
        }
    }
}

mod reclaim;
#[cfg(test)]
mod tests;

pub use reclaim::ReclaimPolicy;
