//! [`SealedStore`]: any [`Store`] with the values of secret keys sealed on the way in and
//! opened on the way out. The rest of Conveyor sees plaintext; only the bytes on disk hold
//! ciphertext.
//!
//! Which keys are secret is the caller's knowledge (the process model), given as a
//! [`SealPolicy`] over a process's definition. Writes seal: a task's data for its
//! process's secret keys and the task's own `secret_keys`; an inbox message's data for
//! those of the task it is for; a process's settings for its secret keys. Reads need no
//! policy: every stored value that is sealed (`sealed:v1:…`) is opened, so a value stays
//! readable whatever happened to the definition since it was written.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use serde_json::{Map, Value};

use crate::keys::{KeySource, open_keyring};
use crate::seal::{Keyring, Place, SealError, escape, needs_escape, sealed_with};
use crate::{
    ApiKey, Batch, HistoryEvent, InboxMessage, Linger, NewProcess, NodeCounter, Op, ProcessRecord,
    Result, Store, StoreError, TaskRecord, TimerKey,
};

/// Which task keys are secret in processes with this definition.
pub trait SealPolicy: Send + Sync + 'static {
    fn secret_keys(&self, definition: &str) -> Vec<String>;
}

impl<F> SealPolicy for F
where
    F: Fn(&str) -> Vec<String> + Send + Sync + 'static,
{
    fn secret_keys(&self, definition: &str) -> Vec<String> {
        self(definition)
    }
}

/// What [`SealedStore::reseal`] rewrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResealReport {
    pub processes: usize,
    pub tasks: usize,
    pub messages: usize,
}

/// The secret keys of each process: process → (version, keys). Shared with the
/// listener of a shared store, which forgets a process another engine changed.
type SecretsCache = HashMap<u64, (u32, Arc<Vec<String>>)>;

/// A [`Store`] that seals secret values (see the module's documentation).
pub struct SealedStore {
    inner: Arc<dyn Store>,
    keys: RwLock<Arc<Keyring>>,
    policy: Arc<dyn SealPolicy>,
    /// Secret keys by (process, version).
    secrets: Arc<Mutex<SecretsCache>>,
}

impl SealedStore {
    pub fn new(inner: Arc<dyn Store>, keys: Keyring, policy: Arc<dyn SealPolicy>) -> SealedStore {
        SealedStore {
            inner,
            keys: RwLock::new(Arc::new(keys)),
            policy,
            secrets: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// `inner`, the store of the data dir `data`, sealed with the data dir's key (made on
    /// first use; see [`open_keyring`]).
    pub fn open(
        data: &Path,
        inner: Arc<dyn Store>,
        source: &KeySource,
        policy: Arc<dyn SealPolicy>,
    ) -> std::result::Result<SealedStore, SealError> {
        let keys = open_keyring(data, source)?;
        Ok(SealedStore::new(inner, keys, policy))
    }

    /// The store underneath (its values as stored).
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    pub fn keyring(&self) -> Arc<Keyring> {
        match self.keys.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Seals new values with another keyring (a rotation).
    pub fn set_keyring(&self, keys: Keyring) {
        let keys = Arc::new(keys);
        match self.keys.write() {
            Ok(mut slot) => *slot = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
    }

    /// The secret keys of this version of a process (the policy asked once per version).
    fn secrets_of_record(&self, record: &ProcessRecord) -> Arc<Vec<String>> {
        let cached = self.secrets.lock().ok().and_then(|m| {
            m.get(&record.id)
                .filter(|(version, _)| *version == record.version)
                .map(|(_, keys)| keys.clone())
        });
        if let Some(keys) = cached {
            return keys;
        }
        let keys = Arc::new(self.policy.secret_keys(&record.definition));
        if let Ok(mut map) = self.secrets.lock() {
            map.insert(record.id, (record.version, keys.clone()));
        }
        keys
    }

    /// The secret keys of a task of `process` with these keys of its own. The process's
    /// keys come from the cache without a read: its definition changes only through
    /// this store (`update_process`), which refreshes the cache.
    fn task_secrets(&self, process: u64, own: &[String]) -> Result<Arc<Vec<String>>> {
        let cached = self
            .secrets
            .lock()
            .ok()
            .and_then(|m| m.get(&process).map(|(_, keys)| keys.clone()));
        let keys = match cached {
            Some(keys) => keys,
            None => match self.inner.process(process)? {
                Some(record) => self.secrets_of_record(&record),
                None => Arc::new(Vec::new()),
            },
        };
        if own.is_empty() {
            return Ok(keys);
        }
        let mut all = keys.as_ref().clone();
        all.extend(own.iter().cloned());
        Ok(Arc::new(all))
    }

    /// `data` as stored, or `None` when it can be stored as it is.
    fn seal_map(
        keys: &Keyring,
        place: Place,
        data: &Map<String, Value>,
        secret: &[String],
    ) -> Result<Option<Map<String, Value>>> {
        let is_secret = |k: &String| secret.iter().any(|s| s == k);
        if !data.iter().any(|(k, v)| is_secret(k) || needs_escape(v)) {
            return Ok(None);
        }
        let mut out = Map::with_capacity(data.len());
        for (k, v) in data {
            let stored = if is_secret(k) {
                Value::String(keys.seal(place, k, v)?)
            } else {
                escape(v)
            };
            out.insert(k.clone(), stored);
        }
        Ok(Some(out))
    }

    fn unseal_map(keys: &Keyring, place: Place, data: &mut Map<String, Value>) -> Result<()> {
        for (k, v) in data.iter_mut() {
            if v.as_str().is_some_and(|s| s.starts_with("sealed:")) {
                *v = keys.unseal(place, k, std::mem::take(v))?;
            }
        }
        Ok(())
    }

    fn open_task(&self, mut task: TaskRecord) -> Result<TaskRecord> {
        Self::unseal_map(&self.keyring(), Place::Task(task.id), &mut task.data)?;
        Ok(task)
    }

    fn open_process(&self, mut record: ProcessRecord) -> Result<ProcessRecord> {
        Self::unseal_map(
            &self.keyring(),
            Place::Process(record.id),
            &mut record.settings,
        )?;
        Ok(record)
    }

    fn open_message(&self, task: u64, mut message: InboxMessage) -> Result<InboxMessage> {
        let keys = self.keyring();
        match &mut message {
            InboxMessage::Modify { data, .. }
            | InboxMessage::Add { data, .. }
            | InboxMessage::Reply { data, .. }
            | InboxMessage::Fold { data }
            | InboxMessage::Recover { data, .. } => {
                Self::unseal_map(&keys, Place::Task(task), data)?;
            }
            InboxMessage::Dequeue { .. } => {}
        }
        Ok(message)
    }

    fn message_data(message: &InboxMessage) -> &Map<String, Value> {
        // A message that carries no data (a dequeue) has nothing to seal.
        static NONE: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);
        match message {
            InboxMessage::Modify { data, .. }
            | InboxMessage::Add { data, .. }
            | InboxMessage::Reply { data, .. }
            | InboxMessage::Fold { data }
            | InboxMessage::Recover { data, .. } => data,
            InboxMessage::Dequeue { .. } => &NONE,
        }
    }

    fn with_data(message: &InboxMessage, new: Map<String, Value>) -> InboxMessage {
        match message {
            InboxMessage::Modify { source, .. } => InboxMessage::Modify {
                data: new,
                source: source.clone(),
            },
            InboxMessage::Add { source, .. } => InboxMessage::Add {
                data: new,
                source: source.clone(),
            },
            InboxMessage::Reply {
                error,
                failure,
                reason,
                ..
            } => InboxMessage::Reply {
                data: new,
                error: *error,
                failure: failure.clone(),
                reason: reason.clone(),
            },
            InboxMessage::Fold { .. } => InboxMessage::Fold { data: new },
            InboxMessage::Dequeue { by } => InboxMessage::Dequeue { by: *by },
            InboxMessage::Recover {
                to, source, action, ..
            } => InboxMessage::Recover {
                to: to.clone(),
                data: new,
                source: source.clone(),
                action: action.clone(),
            },
        }
    }

    /// The secret keys of the task a message is for: from a task written in the same
    /// group, else from the store.
    fn target_secrets(&self, batches: &[Batch], task: u64) -> Result<Arc<Vec<String>>> {
        let written = batches.iter().flat_map(|b| &b.ops).find_map(|op| match op {
            Op::PutTask(t) if t.id == task => Some((t.process, t.secret_keys.clone())),
            _ => None,
        });
        let (process, own) = match written {
            Some(found) => found,
            None => match self.inner.task(task)? {
                Some(t) => (t.process, t.secret_keys),
                None => return Ok(Arc::new(Vec::new())),
            },
        };
        self.task_secrets(process, &own)
    }

    /// The batches as stored, or `None` when they can be stored as they are.
    fn seal_batches(&self, batches: &[Batch]) -> Result<Option<Vec<Batch>>> {
        let keys = self.keyring();
        let mut out: Option<Vec<Batch>> = None;
        for (b, batch) in batches.iter().enumerate() {
            for (o, op) in batch.ops.iter().enumerate() {
                let replaced = match op {
                    Op::PutTask(task) => {
                        let secret = self.task_secrets(task.process, &task.secret_keys)?;
                        Self::seal_map(&keys, Place::Task(task.id), &task.data, &secret)?.map(
                            |data| {
                                let mut sealed = task.as_ref().clone();
                                sealed.data = data;
                                Op::PutTask(Box::new(sealed))
                            },
                        )
                    }
                    Op::Inbox { task, seq, message } => {
                        let secret = self.target_secrets(batches, *task)?;
                        Self::seal_map(
                            &keys,
                            Place::Task(*task),
                            Self::message_data(message),
                            &secret,
                        )?
                        .map(|data| Op::Inbox {
                            task: *task,
                            seq: *seq,
                            message: Self::with_data(message, data),
                        })
                    }
                    _ => None,
                };
                if let Some(op) = replaced {
                    let all = out.get_or_insert_with(|| batches.to_vec());
                    all[b].ops[o] = op;
                }
            }
        }
        Ok(out)
    }

    /// Whether a stored value must be rewritten: sealed with another key than the
    /// current one, or secret and not sealed.
    fn stale(keys: &Keyring, value: &Value, secret: bool) -> bool {
        match sealed_with(value) {
            Some(id) => id != keys.current().id(),
            None => secret,
        }
    }

    fn stale_map(keys: &Keyring, data: &Map<String, Value>, secret: &[String]) -> bool {
        data.iter()
            .any(|(k, v)| Self::stale(keys, v, secret.iter().any(|s| s == k)))
    }

    /// Rewrites every stored value that is sealed with an older key, or secret and in
    /// clear, sealed with the current key: process settings, tasks (`batch` at a time,
    /// each batch atomic) and inbox messages; then flushes. Safe to stop at any point
    /// and run again: what is already rewritten is skipped.
    pub fn reseal(&self, batch: usize) -> Result<ResealReport> {
        let keys = self.keyring();
        let batch = batch.max(1);
        let mut report = ResealReport::default();
        for raw in self.inner.processes()? {
            let secret = self.secrets_of_record(&raw);
            if Self::stale_map(&keys, &raw.settings, &secret) {
                let id = raw.id;
                let open = self.open_process(raw)?;
                self.set_settings(id, open.settings)?;
                report.processes += 1;
            }
        }
        let upper = self.inner.next_ids()?.task;
        let mut pending = Batch::default();
        for id in 0..upper {
            let Some(raw) = self.inner.task(id)? else {
                continue;
            };
            let secret = self.task_secrets(raw.process, &raw.secret_keys)?;
            if Self::stale_map(&keys, &raw.data, &secret) {
                pending.push(Op::PutTask(Box::new(self.open_task(raw)?)));
                report.tasks += 1;
                if pending.ops.len() >= batch {
                    self.commit(&pending)?;
                    pending = Batch::default();
                }
            }
        }
        if !pending.is_empty() {
            self.commit(&pending)?;
        }
        for task in self.inner.inbox_tasks()? {
            let secret = self.target_secrets(&[], task)?;
            let mut messages = Batch::default();
            for (seq, message) in self.inner.inbox(task)? {
                if Self::stale_map(&keys, Self::message_data(&message), &secret) {
                    messages.push(Op::Inbox {
                        task,
                        seq,
                        message: self.open_message(task, message)?,
                    });
                    report.messages += 1;
                }
            }
            if !messages.is_empty() {
                self.commit(&messages)?;
            }
        }
        self.flush()?;
        Ok(report)
    }
}

impl Store for SealedStore {
    fn create_process(&self, new: NewProcess) -> Result<ProcessRecord> {
        let secret = self.policy.secret_keys(&new.definition);
        let is_secret = |k: &String| secret.iter().any(|s| s == k);
        let has_secret = new.settings.keys().any(is_secret);
        let settings = new.settings.clone();
        // The process is created without its secret settings (its id, which sealing
        // binds them to, is not known before), then they are written sealed.
        let first = NewProcess {
            settings: new
                .settings
                .iter()
                .filter(|(k, _)| !is_secret(k))
                .map(|(k, v)| (k.clone(), escape(v)))
                .collect(),
            ..new
        };
        let record = self.inner.create_process(first)?;
        if !has_secret {
            return self.open_process(record);
        }
        let sealed = Self::seal_map(
            &self.keyring(),
            Place::Process(record.id),
            &settings,
            &secret,
        )?
        .unwrap_or(settings);
        let record = self.inner.set_settings(record.id, sealed).map_err(|e| {
            StoreError::Io(format!(
                "process {} was created, but its secret settings could not be written: {e}",
                record.id
            ))
        })?;
        self.open_process(record)
    }

    fn update_process(&self, id: u64, definition: String) -> Result<ProcessRecord> {
        let record = self.inner.update_process(id, definition)?;
        // Settings that the new version makes secret are sealed now.
        let secret = self.secrets_of_record(&record);
        if record
            .settings
            .iter()
            .any(|(k, v)| secret.contains(k) && sealed_with(v).is_none())
        {
            let open = self.open_process(record)?;
            return self.set_settings(id, open.settings);
        }
        self.open_process(record)
    }

    fn set_url_hash(&self, id: u64, hash: String) -> Result<ProcessRecord> {
        let record = self.inner.set_url_hash(id, hash)?;
        self.open_process(record)
    }

    fn process(&self, id: u64) -> Result<Option<ProcessRecord>> {
        self.inner
            .process(id)?
            .map(|r| self.open_process(r))
            .transpose()
    }

    fn process_by_alias(&self, alias: &str) -> Result<Option<ProcessRecord>> {
        self.inner
            .process_by_alias(alias)?
            .map(|r| self.open_process(r))
            .transpose()
    }

    fn alias(&self, alias: &str) -> Result<Option<u64>> {
        self.inner.alias(alias)
    }

    fn processes(&self) -> Result<Vec<ProcessRecord>> {
        self.inner
            .processes()?
            .into_iter()
            .map(|r| self.open_process(r))
            .collect()
    }

    fn set_settings(&self, id: u64, settings: Map<String, Value>) -> Result<ProcessRecord> {
        let raw = self.inner.process(id)?.ok_or(StoreError::NoProcess(id))?;
        let secret = self.secrets_of_record(&raw);
        let stored = Self::seal_map(&self.keyring(), Place::Process(id), &settings, &secret)?
            .unwrap_or(settings);
        let record = self.inner.set_settings(id, stored)?;
        self.open_process(record)
    }

    fn next_task_id(&self) -> Result<u64> {
        self.inner.next_task_id()
    }

    fn task(&self, id: u64) -> Result<Option<TaskRecord>> {
        self.inner.task(id)?.map(|t| self.open_task(t)).transpose()
    }

    fn task_by_ref(&self, process: u64, reference: &str) -> Result<Option<TaskRecord>> {
        self.inner
            .task_by_ref(process, reference)?
            .map(|t| self.open_task(t))
            .transpose()
    }

    fn tasks(&self, process: u64, node: Option<&str>, limit: usize) -> Result<Vec<TaskRecord>> {
        self.inner
            .tasks(process, node, limit)?
            .into_iter()
            .map(|t| self.open_task(t))
            .collect()
    }

    fn history(&self, task: u64) -> Result<Vec<HistoryEvent>> {
        self.inner.history(task)
    }

    fn inbox(&self, task: u64) -> Result<Vec<(u64, InboxMessage)>> {
        self.inner
            .inbox(task)?
            .into_iter()
            .map(|(seq, m)| Ok((seq, self.open_message(task, m)?)))
            .collect()
    }

    fn inbox_tasks(&self) -> Result<Vec<u64>> {
        self.inner.inbox_tasks()
    }

    fn counters(&self, process: u64) -> Result<Vec<(String, NodeCounter)>> {
        self.inner.counters(process)
    }

    fn ready(&self) -> Result<Vec<u64>> {
        self.inner.ready()
    }

    fn due_timers(&self, now: i64, after: Option<TimerKey>, limit: usize) -> Result<Vec<TimerKey>> {
        self.inner.due_timers(now, after, limit)
    }

    fn next_timer(&self) -> Result<Option<TimerKey>> {
        self.inner.next_timer()
    }

    fn create_api_key(
        &self,
        name: &str,
        secret: &str,
        processes: Vec<u64>,
        created: i64,
    ) -> Result<ApiKey> {
        self.inner.create_api_key(name, secret, processes, created)
    }

    fn api_key(&self, login: u64) -> Result<Option<ApiKey>> {
        self.inner.api_key(login)
    }

    fn api_keys(&self) -> Result<Vec<ApiKey>> {
        self.inner.api_keys()
    }

    // API key secrets are lookup secrets, kept as they are (docs/security.md).
    fn set_api_key_secret(&self, login: u64, secret: &str) -> Result<Option<ApiKey>> {
        self.inner.set_api_key_secret(login, secret)
    }

    fn delete_api_key(&self, login: u64) -> Result<bool> {
        self.inner.delete_api_key(login)
    }

    fn commit_group(&self, batches: &[Batch]) -> Result<()> {
        match self.seal_batches(batches)? {
            Some(sealed) => self.inner.commit_group(&sealed),
            None => self.inner.commit_group(batches),
        }
    }

    fn commits_in_place(&self) -> bool {
        self.inner.commits_in_place()
    }

    fn commit_quick(&self, batch: &Batch, linger: Linger) -> Option<Result<()>> {
        // Sealing reads the tasks messages go to (a round trip on PostgreSQL): only for
        // a store that may take it.
        if !self.inner.commits_in_place() {
            return None;
        }
        match self.seal_batches(std::slice::from_ref(batch)) {
            Ok(Some(sealed)) => match sealed.as_slice() {
                [one] => self.inner.commit_quick(one, linger),
                _ => None,
            },
            Ok(None) => self.inner.commit_quick(batch, linger),
            Err(e) => Some(Err(e)),
        }
    }

    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    fn checkpoint(&self) -> Result<()> {
        self.inner.checkpoint()
    }

    fn size_on_disk(&self) -> Result<u64> {
        self.inner.size_on_disk()
    }

    fn maintenance_running(&self) -> bool {
        self.inner.maintenance_running()
    }

    fn space_given_back(&self) -> Option<crate::SpaceGivenBack> {
        self.inner.space_given_back()
    }

    fn call_slot(
        &self,
        process: u64,
        node: &str,
        limit: u32,
        hold: std::time::Duration,
    ) -> crate::SlotFuture {
        self.inner.call_slot(process, node, limit, hold)
    }

    fn give_back_call_slot(&self, process: u64, node: &str, slot: crate::CallSlot) {
        self.inner.give_back_call_slot(process, node, slot)
    }

    fn admit(
        &self,
        process: u64,
        window: i64,
        max: u32,
        candidate: u64,
    ) -> Result<Option<crate::Admission>> {
        self.inner.admit(process, window, max, candidate)
    }

    fn next_ids(&self) -> Result<crate::NextIds> {
        self.inner.next_ids()
    }

    /// Written as given: a migration copies records as stored (sealed values stay
    /// sealed, bound to the same ids).
    fn restore(&self, item: crate::Restore) -> Result<()> {
        if let crate::Restore::Process(record) = &item
            && let Ok(mut cache) = self.secrets.lock()
        {
            cache.remove(&record.id);
        }
        self.inner.restore(item)
    }

    fn shared(&self) -> bool {
        self.inner.shared()
    }

    fn claim(&self, tasks: &[u64]) -> Result<Vec<u64>> {
        self.inner.claim(tasks)
    }

    fn claim_async(&self, tasks: Vec<u64>) -> crate::ClaimFuture {
        self.inner.claim_async(tasks)
    }

    fn claim_work(&self, now: i64, limit: usize) -> Result<Vec<u64>> {
        self.inner.claim_work(now, limit)
    }

    fn release(&self, task: u64) {
        self.inner.release(task);
    }

    /// Forgets the secret keys of a process another engine changed (this store's cache
    /// of them is otherwise only refreshed by its own `update_process`).
    fn watch(&self, listener: crate::Listener) {
        let secrets = Arc::downgrade(&self.secrets);
        self.inner.watch(Arc::new(move |change| {
            if let Some(secrets) = secrets.upgrade()
                && let Ok(mut map) = secrets.lock()
            {
                match change {
                    crate::Change::Process(id) => {
                        map.remove(&id);
                    }
                    crate::Change::Reconnected => map.clear(),
                    crate::Change::Work => {}
                }
            }
            listener(change);
        }));
    }
}

#[cfg(test)]
mod tests;
