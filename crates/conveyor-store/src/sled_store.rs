//! The sled implementation of [`Store`].
//!
//! Trees and keys (integers big-endian, so keys sort in numeric order):
//!
//! | tree         | key                          | value                |
//! |--------------|------------------------------|----------------------|
//! | `meta`       | `format`, `next_process`     | u32 / u64            |
//! | `processes`  | process id                   | ProcessRecord (JSON) |
//! | `aliases`    | alias                        | process id           |
//! | `tasks`      | task id                      | TaskRecord (JSON)    |
//! | `refs`       | process id + ref             | task id              |
//! | `by_process` | process id + task id         | node id              |
//! | `timers`     | due (ms, sign-flipped) + task| —                    |
//! | `ready`      | task id                      | —                    |
//! | `counters`   | process id + node id         | now (i64) + total    |
//! | `history`    | task id + seq                | HistoryEvent (JSON)  |
//! | `inbox`      | task id + seq                | InboxMessage (JSON)  |

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::*;

/// The on-disk format this code writes and understands.
pub const FORMAT_VERSION: u32 = 1;

pub struct SledStore {
    db: sled::Db,
    meta: sled::Tree,
    processes: sled::Tree,
    aliases: sled::Tree,
    tasks: sled::Tree,
    refs: sled::Tree,
    by_process: sled::Tree,
    timers: sled::Tree,
    ready: sled::Tree,
    counters: sled::Tree,
    history: sled::Tree,
    inbox: sled::Tree,
    api_keys: sled::Tree,
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(io)
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

fn pair(a: u64, b: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + b.len());
    key.extend_from_slice(&a.to_be_bytes());
    key.extend_from_slice(b);
    key
}

fn timer_key(timer: TimerKey) -> [u8; 16] {
    let mut key = [0u8; 16];
    // Flip the sign bit so negative times sort before positive ones.
    key[..8].copy_from_slice(&((timer.due as u64) ^ (1 << 63)).to_be_bytes());
    key[8..].copy_from_slice(&timer.task.to_be_bytes());
    key
}

fn timer_from(key: &[u8]) -> Result<TimerKey> {
    if key.len() != 16 {
        return Err(StoreError::Corrupt {
            what: "a timer".into(),
            reason: format!("{} bytes, expected 16", key.len()),
        });
    }
    Ok(TimerKey {
        due: (u64_from(&key[..8])? ^ (1 << 63)) as i64,
        task: u64_from(&key[8..])?,
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

/// A batch op with its keys and values encoded, so that a transaction retried by sled
/// does not serialize again.
enum Encoded {
    Put(usize, Vec<u8>, Vec<u8>),
    Remove(usize, Vec<u8>),
    UniqueRef {
        key: Vec<u8>,
        task: [u8; 8],
        process: u64,
        reference: String,
    },
    Count {
        key: Vec<u8>,
        now: i64,
        total: u64,
    },
    /// Removes every key of a tree that starts with this prefix.
    RemovePrefix(usize, Vec<u8>),
}

// Indexes of the trees in a commit transaction.
const TASKS: usize = 0;
const REFS: usize = 1;
const BY_PROCESS: usize = 2;
const TIMERS: usize = 3;
const READY: usize = 4;
const COUNTERS: usize = 5;
const HISTORY: usize = 6;
const INBOX: usize = 7;

impl SledStore {
    /// Opens (or creates) the store in `path`.
    pub fn open(path: &Path) -> Result<SledStore> {
        std::fs::create_dir_all(path)
            .map_err(|e| StoreError::Io(format!("cannot create {}: {e}", path.display())))?;
        let db = sled::Config::new()
            .path(path.join("store"))
            .open()
            .map_err(|e| match e {
                sled::Error::Io(ref io_error)
                    if io_error.kind() == std::io::ErrorKind::WouldBlock
                        || io_error.to_string().contains("lock") =>
                {
                    StoreError::Locked {
                        path: path.display().to_string(),
                    }
                }
                other => io(other),
            })?;
        let tree = |name: &str| db.open_tree(name).map_err(io);
        let store = SledStore {
            meta: tree("meta")?,
            processes: tree("processes")?,
            aliases: tree("aliases")?,
            tasks: tree("tasks")?,
            refs: tree("refs")?,
            by_process: tree("by_process")?,
            timers: tree("timers")?,
            ready: tree("ready")?,
            counters: tree("counters")?,
            history: tree("history")?,
            inbox: tree("inbox")?,
            api_keys: tree("api_keys")?,
            db,
        };
        match store.meta.get("format").map_err(io)? {
            None => {
                store
                    .meta
                    .insert("format", &FORMAT_VERSION.to_be_bytes())
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

    fn encode_batch(batch: &Batch) -> Result<Vec<Encoded>> {
        let mut out = Vec::with_capacity(batch.ops.len());
        for op in &batch.ops {
            let encoded = match op {
                Op::PutTask(task) => {
                    out.push(Encoded::Put(
                        BY_PROCESS,
                        pair(task.process, &task.id.to_be_bytes()),
                        task.node.as_bytes().to_vec(),
                    ));
                    Encoded::Put(TASKS, task.id.to_be_bytes().to_vec(), encode(task)?)
                }
                Op::InsertRef {
                    process,
                    reference,
                    task,
                } => Encoded::UniqueRef {
                    key: pair(*process, reference.as_bytes()),
                    task: task.to_be_bytes(),
                    process: *process,
                    reference: reference.clone(),
                },
                Op::SetTimer(timer) => Encoded::Put(TIMERS, timer_key(*timer).to_vec(), Vec::new()),
                Op::ClearTimer(timer) => Encoded::Remove(TIMERS, timer_key(*timer).to_vec()),
                Op::SetReady(task) => Encoded::Put(READY, task.to_be_bytes().to_vec(), Vec::new()),
                Op::ClearReady(task) => Encoded::Remove(READY, task.to_be_bytes().to_vec()),
                Op::Count {
                    process,
                    node,
                    now,
                    total,
                } => Encoded::Count {
                    key: pair(*process, node.as_bytes()),
                    now: *now,
                    total: *total,
                },
                Op::History { task, seq, event } => {
                    Encoded::Put(HISTORY, pair(*task, &seq.to_be_bytes()), encode(event)?)
                }
                Op::Inbox { task, seq, message } => {
                    Encoded::Put(INBOX, pair(*task, &seq.to_be_bytes()), encode(message)?)
                }
                Op::DeleteTask {
                    task,
                    process,
                    reference,
                } => {
                    out.push(Encoded::Remove(TASKS, task.to_be_bytes().to_vec()));
                    out.push(Encoded::Remove(
                        BY_PROCESS,
                        pair(*process, &task.to_be_bytes()),
                    ));
                    out.push(Encoded::Remove(READY, task.to_be_bytes().to_vec()));
                    out.push(Encoded::RemovePrefix(HISTORY, task.to_be_bytes().to_vec()));
                    out.push(Encoded::RemovePrefix(INBOX, task.to_be_bytes().to_vec()));
                    match reference {
                        Some(r) => Encoded::Remove(REFS, pair(*process, r.as_bytes())),
                        None => continue,
                    }
                }
                Op::ClearInbox { task, seq } => {
                    Encoded::Remove(INBOX, pair(*task, &seq.to_be_bytes()))
                }
            };
            out.push(encoded);
        }
        Ok(out)
    }
}

impl Store for SledStore {
    fn create_process(&self, new: NewProcess) -> Result<ProcessRecord> {
        let result = (&self.meta, &self.processes, &self.aliases).transaction(
            |(meta, processes, aliases)| {
                let id = match meta.get("next_process")? {
                    Some(bytes) => u64_from(&bytes).map_err(ConflictableTransactionError::Abort)?,
                    None => 1,
                };
                if let Some(alias) = &new.alias
                    && let Some(existing) = aliases.get(alias.as_bytes())?
                {
                    return Err(ConflictableTransactionError::Abort(
                        StoreError::DuplicateAlias {
                            alias: alias.clone(),
                            process: u64_from(&existing).unwrap_or(0),
                        },
                    ));
                }
                let record = ProcessRecord {
                    id,
                    alias: new.alias.clone(),
                    source: new.source.clone(),
                    definition: new.definition.clone(),
                    version: 1,
                    created: new.created,
                    updated: new.created,
                    settings: new.settings.clone(),
                    url_hash: None,
                };
                let bytes = encode(&record).map_err(ConflictableTransactionError::Abort)?;
                processes.insert(&id.to_be_bytes(), bytes)?;
                if let Some(alias) = &new.alias {
                    aliases.insert(alias.as_bytes(), &id.to_be_bytes())?;
                }
                meta.insert("next_process", &(id + 1).to_be_bytes())?;
                Ok(record)
            },
        );
        flatten(result)
    }

    fn update_process(&self, id: u64, definition: String) -> Result<ProcessRecord> {
        let result = self.processes.transaction(|processes| {
            let Some(bytes) = processes.get(id.to_be_bytes())? else {
                return Err(ConflictableTransactionError::Abort(StoreError::NoProcess(
                    id,
                )));
            };
            let mut record: ProcessRecord =
                decode("a process", &bytes).map_err(ConflictableTransactionError::Abort)?;
            record.definition = definition.clone();
            record.version += 1;
            let bytes = encode(&record).map_err(ConflictableTransactionError::Abort)?;
            processes.insert(&id.to_be_bytes(), bytes)?;
            Ok(record)
        });
        flatten(result)
    }

    fn set_url_hash(&self, id: u64, hash: String) -> Result<ProcessRecord> {
        let result = self.processes.transaction(|processes| {
            let Some(bytes) = processes.get(id.to_be_bytes())? else {
                return Err(ConflictableTransactionError::Abort(StoreError::NoProcess(
                    id,
                )));
            };
            let mut record: ProcessRecord =
                decode("a process", &bytes).map_err(ConflictableTransactionError::Abort)?;
            record.url_hash = Some(hash.clone());
            let bytes = encode(&record).map_err(ConflictableTransactionError::Abort)?;
            processes.insert(&id.to_be_bytes(), bytes)?;
            Ok(record)
        });
        flatten(result)
    }

    fn create_api_key(
        &self,
        name: &str,
        secret: &str,
        processes: Vec<u64>,
        created: i64,
    ) -> Result<ApiKey> {
        let result = (&self.meta, &self.api_keys).transaction(|(meta, keys)| {
            let login = match meta.get("next_login")? {
                Some(bytes) => u64_from(&bytes).map_err(ConflictableTransactionError::Abort)?,
                None => 100_001,
            };
            let key = ApiKey {
                login,
                name: name.to_string(),
                secret: secret.to_string(),
                processes: processes.clone(),
                created,
            };
            let bytes = encode(&key).map_err(ConflictableTransactionError::Abort)?;
            keys.insert(&login.to_be_bytes(), bytes)?;
            meta.insert("next_login", &(login + 1).to_be_bytes())?;
            Ok(key)
        });
        flatten(result)
    }

    fn api_key(&self, login: u64) -> Result<Option<ApiKey>> {
        match self.api_keys.get(login.to_be_bytes()).map_err(io)? {
            Some(bytes) => decode("an API key", &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn api_keys(&self) -> Result<Vec<ApiKey>> {
        self.api_keys
            .iter()
            .map(|entry| {
                let (_, bytes) = entry.map_err(io)?;
                decode("an API key", &bytes)
            })
            .collect()
    }

    fn process(&self, id: u64) -> Result<Option<ProcessRecord>> {
        match self.processes.get(id.to_be_bytes()).map_err(io)? {
            Some(bytes) => decode("a process", &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn process_by_alias(&self, alias: &str) -> Result<Option<ProcessRecord>> {
        match self.aliases.get(alias.as_bytes()).map_err(io)? {
            Some(id) => self.process(u64_from(&id)?),
            None => Ok(None),
        }
    }

    fn alias(&self, alias: &str) -> Result<Option<u64>> {
        match self.aliases.get(alias.as_bytes()).map_err(io)? {
            Some(id) => u64_from(&id).map(Some),
            None => Ok(None),
        }
    }

    fn processes(&self) -> Result<Vec<ProcessRecord>> {
        self.processes
            .iter()
            .map(|entry| {
                let (_, bytes) = entry.map_err(io)?;
                decode("a process", &bytes)
            })
            .collect()
    }

    fn next_task_id(&self) -> Result<u64> {
        // A counter of our own (1, 2, 3, …): sled's `generate_id` jumps by a million on
        // every open. A failed creation leaves a gap; ids are never reused.
        let next = self
            .meta
            .update_and_fetch("next_task", |old| {
                let current = old
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                    .unwrap_or(0);
                Some((current + 1).to_be_bytes().to_vec())
            })
            .map_err(io)?;
        match next {
            Some(bytes) => u64_from(&bytes),
            None => Err(StoreError::Corrupt {
                what: "the task id counter".into(),
                reason: "missing after update".into(),
            }),
        }
    }

    fn task(&self, id: u64) -> Result<Option<TaskRecord>> {
        match self.tasks.get(id.to_be_bytes()).map_err(io)? {
            Some(bytes) => decode("a task", &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn task_by_ref(&self, process: u64, reference: &str) -> Result<Option<TaskRecord>> {
        match self
            .refs
            .get(pair(process, reference.as_bytes()))
            .map_err(io)?
        {
            Some(id) => self.task(u64_from(&id)?),
            None => Ok(None),
        }
    }

    fn tasks(&self, process: u64, node: Option<&str>, limit: usize) -> Result<Vec<TaskRecord>> {
        let mut out = Vec::new();
        for entry in self.by_process.scan_prefix(process.to_be_bytes()) {
            if out.len() >= limit {
                break;
            }
            let (key, at) = entry.map_err(io)?;
            if node.is_some_and(|n| n.as_bytes() != at.as_ref()) {
                continue;
            }
            if let Some(task) = self.task(u64_from(&key[8..])?)? {
                out.push(task);
            }
        }
        Ok(out)
    }

    fn history(&self, task: u64) -> Result<Vec<HistoryEvent>> {
        self.history
            .scan_prefix(task.to_be_bytes())
            .map(|entry| {
                let (_, bytes) = entry.map_err(io)?;
                decode("a history event", &bytes)
            })
            .collect()
    }

    fn inbox(&self, task: u64) -> Result<Vec<(u64, InboxMessage)>> {
        self.inbox
            .scan_prefix(task.to_be_bytes())
            .map(|entry| {
                let (key, bytes) = entry.map_err(io)?;
                Ok((u64_from(&key[8..])?, decode("an inbox message", &bytes)?))
            })
            .collect()
    }

    fn counters(&self, process: u64) -> Result<Vec<(String, NodeCounter)>> {
        self.counters
            .scan_prefix(process.to_be_bytes())
            .map(|entry| {
                let (key, value) = entry.map_err(io)?;
                Ok((
                    String::from_utf8_lossy(&key[8..]).into_owned(),
                    counter_from(&value)?,
                ))
            })
            .collect()
    }

    fn ready(&self) -> Result<Vec<u64>> {
        self.ready
            .iter()
            .keys()
            .map(|key| u64_from(&key.map_err(io)?))
            .collect()
    }

    fn due_timers(&self, now: i64, after: Option<TimerKey>, limit: usize) -> Result<Vec<TimerKey>> {
        let end = timer_key(TimerKey {
            due: now,
            task: u64::MAX,
        });
        let range = match after {
            Some(after) => {
                let start = timer_key(after);
                self.timers.range((
                    std::ops::Bound::Excluded(start.to_vec()),
                    std::ops::Bound::Included(end.to_vec()),
                ))
            }
            None => self.timers.range(..=end.to_vec()),
        };
        range
            .keys()
            .take(limit)
            .map(|key| timer_from(&key.map_err(io)?))
            .collect()
    }

    fn next_timer(&self) -> Result<Option<TimerKey>> {
        match self.timers.first().map_err(io)? {
            Some((key, _)) => timer_from(&key).map(Some),
            None => Ok(None),
        }
    }

    fn commit(&self, batch: &Batch) -> Result<()> {
        let mut encoded = Vec::new();
        for op in Self::encode_batch(batch)? {
            match op {
                // Transactional trees cannot scan: list the keys first.
                Encoded::RemovePrefix(tree, prefix) => {
                    let source = if tree == HISTORY {
                        &self.history
                    } else {
                        &self.inbox
                    };
                    for key in source.scan_prefix(&prefix).keys() {
                        encoded.push(Encoded::Remove(tree, key.map_err(io)?.to_vec()));
                    }
                }
                other => encoded.push(other),
            }
        }
        let trees = [
            &self.tasks,
            &self.refs,
            &self.by_process,
            &self.timers,
            &self.ready,
            &self.counters,
            &self.history,
            &self.inbox,
        ];
        let result = trees.as_slice().transaction(|t| {
            for op in &encoded {
                match op {
                    Encoded::Put(tree, key, value) => {
                        t[*tree].insert(key.as_slice(), value.as_slice())?;
                    }
                    Encoded::Remove(tree, key) => {
                        t[*tree].remove(key.as_slice())?;
                    }
                    Encoded::UniqueRef {
                        key,
                        task,
                        process,
                        reference,
                    } => {
                        if let Some(existing) = t[REFS].get(key.as_slice())?
                            && existing.as_ref() != task.as_slice()
                        {
                            return Err(ConflictableTransactionError::Abort(
                                StoreError::DuplicateRef {
                                    process: *process,
                                    reference: reference.clone(),
                                },
                            ));
                        }
                        t[REFS].insert(key.as_slice(), task.as_slice())?;
                    }
                    Encoded::RemovePrefix(..) => {}
                    Encoded::Count { key, now, total } => {
                        let mut counter = match t[COUNTERS].get(key.as_slice())? {
                            Some(bytes) => {
                                counter_from(&bytes).map_err(ConflictableTransactionError::Abort)?
                            }
                            None => NodeCounter::default(),
                        };
                        counter.now += now;
                        counter.total += total;
                        t[COUNTERS].insert(key.as_slice(), &counter_value(counter))?;
                    }
                }
            }
            Ok(())
        });
        flatten(result)
    }

    fn flush(&self) -> Result<()> {
        self.db.flush().map(|_| ()).map_err(io)
    }

    fn size_on_disk(&self) -> Result<u64> {
        self.db.size_on_disk().map_err(io)
    }
}

fn flatten<T>(result: std::result::Result<T, TransactionError<StoreError>>) -> Result<T> {
    match result {
        Ok(v) => Ok(v),
        Err(TransactionError::Abort(e)) => Err(e),
        Err(TransactionError::Storage(e)) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests;
