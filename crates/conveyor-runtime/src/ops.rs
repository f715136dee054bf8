//! What the commands do: clone and update processes, add, find and modify tasks.

use std::sync::Arc;

use conveyor_model::{Door, Process};
use conveyor_store::{
    Batch, Caller, EventKind, HistoryEvent, InboxMessage, NewProcess, Op, ProcessRecord,
    TaskRecord, TaskStatus,
};
use conveyor_template::ProcessId;
use serde_json::{Map, Value};

use crate::{LoadedProcess, Result, Runtime, RuntimeError};

/// Largest task data accepted (Corezoid's limit), as JSON bytes.
pub const MAX_TASK_BYTES: usize = 128 * 1024;

/// Room a modify from outside leaves under [`MAX_TASK_BYTES`] for what the process
/// writes itself, when it sets free (undeclared) keys ...
const FREE_RESERVE: usize = 16 * 1024;
/// ... and when it sets only declared params (each bounded by its `max_length`), so the
/// owner's next good modify still fits after a stranger's junk.
const DECLARED_RESERVE: usize = 4 * 1024;

/// How long a process's count of held tasks is trusted before the store is read again
/// (`Runtime::admit_held`).
const HELD_FRESH: std::time::Duration = std::time::Duration::from_millis(250);

/// A process's held tasks as last read from the store, and the tasks admitted since.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Held {
    counted: u64,
    admitted: u64,
    read_at: std::time::Instant,
}

/// How a command names a task: by ref, or by id when no task has that ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskKey(pub String);

/// How the task API names a task: exactly by ref or exactly by id, never one for the
/// other (a `TaskKey` tries the ref first, then the id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskBy<'a> {
    /// A ref, else an id (what [`TaskKey`] means).
    Key(&'a TaskKey),
    Ref(&'a str),
    Id(u64),
}

/// What `modify_task` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModifyOutcome {
    pub task: u64,
    pub node: String,
    /// The task's ref, also when it was named by its id.
    pub reference: Option<String>,
}

impl Runtime {
    /// Finds a process by `31281`, `@alias` or `alias`.
    pub fn resolve(&self, name: &str) -> Result<Arc<LoadedProcess>> {
        let name = name.trim();
        let id = match ProcessId::parse(name) {
            Some(ProcessId::Id(id)) => Some(id),
            Some(ProcessId::Alias(alias)) => self.store.alias(&alias)?,
            None if conveyor_template::valid_alias(name) => self.store.alias(name)?,
            None => None,
        };
        match id {
            Some(id) => match self.loaded(id) {
                Err(RuntimeError::NoProcess(_)) => Err(RuntimeError::NoProcess(name.to_string())),
                other => other,
            },
            None => Err(RuntimeError::NoProcess(name.to_string())),
        }
    }

    /// Checks `definition` and stores it as a new process.
    pub fn clone_process(
        &self,
        source: &str,
        definition: &str,
        alias: Option<&str>,
        settings: Map<String, Value>,
    ) -> Result<ProcessRecord> {
        let alias = alias.map(|a| a.trim_start_matches('@').to_string());
        if let Some(alias) = &alias
            && (!conveyor_template::valid_alias(alias) || alias.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(RuntimeError::Refused(format!(
                "`{alias}` is not a valid alias: use letters, digits, `_` and `-`, not only digits"
            )));
        }
        let checked = conveyor_model::check(source, definition);
        let process = checked.into_result().map_err(RuntimeError::Invalid)?;
        for key in settings.keys() {
            if !process.params.contains_key(key) {
                return Err(RuntimeError::Param {
                    name: key.clone(),
                    message: format!("process `{}` declares no such param", process.name),
                });
            }
        }
        let record = self.store.create_process(NewProcess {
            alias,
            source: source.to_string(),
            definition: definition.to_string(),
            created: self.now(),
            settings,
        })?;
        self.store.flush()?;
        Ok(record)
    }

    /// Replaces a process's definition. Refused when tasks sit in nodes the new one lacks.
    /// `source` labels the definition in error messages (usually its file name).
    pub fn update_process(
        &self,
        name: &str,
        source: &str,
        definition: &str,
    ) -> Result<ProcessRecord> {
        let loaded = self.resolve(name)?;
        let id = loaded.record.id;
        let process = conveyor_model::check(source, definition)
            .into_result()
            .map_err(RuntimeError::Invalid)?;
        let holding: Vec<String> = self
            .store
            .counters(id)?
            .into_iter()
            .filter(|(node, c)| c.now > 0 && !process.nodes.contains_key(node))
            .map(|(node, c)| {
                format!(
                    "{node} ({} task{})",
                    c.now,
                    if c.now == 1 { "" } else { "s" }
                )
            })
            .collect();
        if !holding.is_empty() {
            return Err(RuntimeError::Refused(format!(
                "process {id} was not updated: tasks are in nodes the new definition does not have: {}",
                holding.join(", ")
            )));
        }
        let record = self.store.update_process(id, definition.to_string())?;
        self.store.flush()?;
        if let Ok(mut map) = self.processes.write() {
            map.insert(
                id,
                Arc::new(LoadedProcess {
                    record: record.clone(),
                    process,
                }),
            );
        }
        Ok(record)
    }

    /// Creates a task at the start of a process, after checking its data as given from
    /// outside (CLI, task API, dashboard; see `input.rs`). The task is committed; call
    /// `store().flush()` to make it durable before the process exits.
    pub fn add_task(
        &self,
        process: &str,
        reference: Option<&str>,
        data: Map<String, Value>,
    ) -> Result<TaskRecord> {
        self.add_from(process, reference, data, Door::Create)
    }

    pub(crate) fn add_from(
        &self,
        process: &str,
        reference: Option<&str>,
        data: Map<String, Value>,
        door: Door,
    ) -> Result<TaskRecord> {
        let (task, batch) = self.add_batch(process, reference, data, door)?;
        let changes = crate::ref_changes(&batch);
        self.store.commit(&batch).map_err(duplicate_ref)?;
        self.note_commit(&changes);
        self.metrics.task_created(1);
        self.schedule(task.id);
        Ok(task)
    }

    /// The checked new task of an `add` through `door`, and the batch that stores it.
    pub(crate) fn add_batch(
        &self,
        process: &str,
        reference: Option<&str>,
        data: Map<String, Value>,
        door: Door,
    ) -> Result<(TaskRecord, Batch)> {
        let loaded = self.resolve(process)?;
        self.add_batch_to(&loaded, reference, data, door)
    }

    /// [`Runtime::add_batch`] for a process already resolved.
    pub(crate) fn add_batch_to(
        &self,
        loaded: &LoadedProcess,
        reference: Option<&str>,
        mut data: Map<String, Value>,
        door: Door,
    ) -> Result<(TaskRecord, Batch)> {
        crate::input::check_input(loaded, &mut data, door, None)?;
        let mut batch = Batch::default();
        let task = self.new_task(loaded, reference, data, None, self.now(), &mut batch)?;
        Ok((task, batch))
    }

    /// Builds a new task at the start of `loaded` and adds its ops to `batch`. Checks
    /// params (required, pattern, defaults), the ref and the size; stores nothing itself.
    pub(crate) fn new_task(
        &self,
        loaded: &LoadedProcess,
        reference: Option<&str>,
        mut data: Map<String, Value>,
        caller: Option<Caller>,
        now: i64,
        batch: &mut Batch,
    ) -> Result<TaskRecord> {
        let process = &loaded.process;
        let id = loaded.record.id;
        // Values given with `process clone --set` belong to the process: they win.
        for (key, value) in &loaded.record.settings {
            data.insert(key.clone(), value.clone());
        }
        check_params(process, &mut data)?;
        self.admit_held(id, process.settings.max_tasks)?;
        if let Some(r) = reference {
            if r.is_empty() || r.chars().count() > 255 {
                return Err(RuntimeError::Refused("a ref is 1 to 255 characters".into()));
            }
            if self.store.task_by_ref(id, r)?.is_some() {
                return Err(RuntimeError::DuplicateRef {
                    process: id,
                    reference: r.to_string(),
                });
            }
        }
        let size = crate::input::json_size(&data);
        if size > MAX_TASK_BYTES {
            return Err(RuntimeError::Refused(format!(
                "the task's data is {size} bytes; the limit is {MAX_TASK_BYTES}"
            )));
        }
        // A rate-limited process folds the tasks past its limit into one summary task.
        let mut release_at = None;
        let task_id = self.store.next_task_id()?;
        if reference.is_none()
            && let Some(limit) = process.settings.rate_limit
        {
            match self.admit(id, limit, now, task_id)? {
                crate::fold::Admit::Start => {}
                crate::fold::Admit::Into(summary) => {
                    if let Some(target) = self.fold_into(summary, data.clone(), batch)? {
                        return Ok(target);
                    }
                    let per = limit.per.as_millis() as i64;
                    release_at = Some(now.div_euclid(per.max(1)).saturating_add(1) * per);
                }
                crate::fold::Admit::Summary { release_at: at } => release_at = Some(at),
            }
        }
        let mut task = born(
            task_id,
            id,
            reference.map(str::to_string),
            &process.start,
            data,
            caller,
            now,
        );
        if let Some(r) = reference {
            batch.push(Op::InsertRef {
                process: id,
                reference: r.to_string(),
                task: task.id,
            });
        }
        push_birth(&task, batch);
        match release_at {
            Some(at) => {
                crate::fold::make_summary(&mut task, at, batch);
                self.note_summary(id, task.id);
            }
            None => batch.push(Op::SetReady(task.id)),
        }
        batch.push(Op::PutTask(Box::new(task.clone())));
        Ok(task)
    }

    /// Checks a process's `max_tasks` before a task is born in it, without reading the
    /// store each time: the count read last, plus every task this engine admitted
    /// since, can only be too high (tasks that left are not subtracted), so below the
    /// limit it admits at once. At the limit, or once the count is older than
    /// [`HELD_FRESH`] (other engines of a shared store create too), the store's counters
    /// are read and decide, so nothing is refused that the store would admit.
    fn admit_held(&self, id: u64, max: u64) -> Result<()> {
        let now = std::time::Instant::now();
        if let Ok(mut held) = self.held.lock()
            && let Some(known) = held.get_mut(&id)
            && now.duration_since(known.read_at) < HELD_FRESH
            && known.counted.saturating_add(known.admitted) < max
        {
            known.admitted += 1;
            return Ok(());
        }
        let counted: u64 = self
            .store
            .counters(id)?
            .iter()
            .map(|(_, c)| c.now.max(0) as u64)
            .sum();
        let admitted = u64::from(counted < max);
        if let Ok(mut held) = self.held.lock() {
            held.insert(
                id,
                Held {
                    counted,
                    admitted,
                    read_at: now,
                },
            );
        }
        if counted >= max {
            return Err(RuntimeError::Refused(format!(
                "process {id} holds {counted} tasks, its limit (settings.max_tasks = {max})"
            )));
        }
        Ok(())
    }

    /// Finds a task of a process by ref, or by id when no task has that ref.
    pub fn find_task(
        &self,
        process: &str,
        key: &TaskKey,
    ) -> Result<(Arc<LoadedProcess>, TaskRecord)> {
        self.find_task_by(process, TaskBy::Key(key))
    }

    /// Finds a task by ref, by id, or by ref else id (`TaskBy::Key`).
    pub fn find_task_by(
        &self,
        process: &str,
        by: TaskBy<'_>,
    ) -> Result<(Arc<LoadedProcess>, TaskRecord)> {
        let loaded = self.resolve(process)?;
        let id = loaded.record.id;
        let (reference, task_id) = match by {
            TaskBy::Key(key) => (Some(key.0.as_str()), key.0.parse::<u64>().ok()),
            TaskBy::Ref(reference) => (Some(reference), None),
            TaskBy::Id(task_id) => (None, Some(task_id)),
        };
        if let Some(reference) = reference
            && let Some(task) = self.store.task_by_ref(id, reference)?
        {
            return Ok((loaded, task));
        }
        if let Some(task_id) = task_id
            && let Some(task) = self.store.task(task_id)?
            && task.process == id
        {
            return Ok((loaded, task));
        }
        let key = match by {
            TaskBy::Key(key) => key.0.clone(),
            TaskBy::Ref(reference) => format!("ref {reference}"),
            TaskBy::Id(task_id) => format!("id {task_id}"),
        };
        Err(RuntimeError::NoTask {
            process: process.to_string(),
            key,
        })
    }

    /// Leaves data for a task: merged when the engine next takes it, which also wakes it
    /// from a callback wait or an escalation. The data is checked as given from outside
    /// (CLI, task API, dashboard; see `input.rs`).
    pub fn modify_task(
        &self,
        process: &str,
        key: &TaskKey,
        data: Map<String, Value>,
        source: &str,
    ) -> Result<ModifyOutcome> {
        self.modify_task_by(process, TaskBy::Key(key), data, source)
    }

    /// `modify_task` with the task named exactly.
    pub fn modify_task_by(
        &self,
        process: &str,
        by: TaskBy<'_>,
        data: Map<String, Value>,
        source: &str,
    ) -> Result<ModifyOutcome> {
        let (loaded, task) = self.find_task_by(process, by)?;
        self.modify_found(&loaded, task, data, source, Door::Modify)
    }

    /// A modify through `door` once the task is found: checked (see `input.rs`), then
    /// left in its inbox.
    pub(crate) fn modify_found(
        &self,
        loaded: &LoadedProcess,
        task: TaskRecord,
        data: Map<String, Value>,
        source: &str,
        door: Door,
    ) -> Result<ModifyOutcome> {
        let (outcome, batch) = self.modify_batch(loaded, task, data, source, door)?;
        self.store.commit(&batch)?;
        self.schedule(outcome.task);
        Ok(outcome)
    }

    /// The checked modify of a found task through `door`, and the batch that leaves it in
    /// the task's inbox.
    pub(crate) fn modify_batch(
        &self,
        loaded: &LoadedProcess,
        task: TaskRecord,
        mut data: Map<String, Value>,
        source: &str,
        door: Door,
    ) -> Result<(ModifyOutcome, Batch)> {
        crate::input::check_input(loaded, &mut data, door, Some(&task.data))?;
        // The whole task after this modify (and those still in its inbox) must stay
        // within the limit: a refused modify leaves the task as it was, so the next
        // good one still works.
        let mut merged = task.data.clone();
        for (_, message) in self.store.inbox(task.id)? {
            if let InboxMessage::Modify { data: pending, .. } = message {
                merged.extend(pending);
            }
        }
        merged.extend(data.clone());
        // Room is kept for what the process writes itself (a token exchange's answer):
        // free data may fill the task less far than declared params may.
        let declared_only = data.keys().all(|k| loaded.process.params.contains_key(k));
        let limit = MAX_TASK_BYTES
            - if declared_only {
                DECLARED_RESERVE
            } else {
                FREE_RESERVE
            };
        let size = crate::input::json_size(&merged);
        if size > limit {
            return Err(RuntimeError::Refused(format!(
                "the task would be {size} bytes after this modify; a modify may bring it to {limit} (the limit is {MAX_TASK_BYTES}, with room kept for what the process writes); nothing was changed"
            )));
        }
        let mut batch = Batch::default();
        batch.push(Op::Inbox {
            task: task.id,
            seq: self.store.next_task_id()?,
            message: InboxMessage::Modify {
                data,
                source: source.to_string(),
            },
        });
        batch.push(Op::SetReady(task.id));
        Ok((
            ModifyOutcome {
                task: task.id,
                node: task.node,
                reference: task.reference,
            },
            batch,
        ))
    }
}

impl Runtime {
    /// Deletes a task: its record, ref, history, inbox, timer and its place in counters.
    pub fn delete_task(&self, process: &str, key: &TaskKey) -> Result<TaskRecord> {
        self.delete_task_by(process, TaskBy::Key(key))
    }

    /// `delete_task` with the task named exactly. The task is held (no step of it starts
    /// in this engine) and claimed (on a shared store, no other engine steps it) while it
    /// is read again and deleted: a step running elsewhere cannot write it back after.
    pub fn delete_task_by(&self, process: &str, by: TaskBy<'_>) -> Result<TaskRecord> {
        let (_, found) = self.find_task_by(process, by)?;
        let moving = || {
            RuntimeError::Refused(format!(
                "task {} is being moved right now; try again in a moment",
                found.id
            ))
        };
        if !self.hold(found.id) {
            return Err(moving());
        }
        let deleted = match self.store.claim(&[found.id]) {
            Ok(claimed) if claimed.contains(&found.id) => {
                let deleted = self.delete_claimed(&found);
                self.store.release(found.id);
                deleted
            }
            Ok(_) => Err(moving()),
            Err(e) => Err(e.into()),
        };
        self.unhold(found.id);
        deleted
    }

    /// Deletes `found` as it is now (it may have moved since it was found), once this
    /// engine holds its claim.
    fn delete_claimed(&self, found: &TaskRecord) -> Result<TaskRecord> {
        let task = match self.store.task(found.id)? {
            Some(task) if task.process == found.process => task,
            _ => {
                return Err(RuntimeError::NoTask {
                    process: found.process.to_string(),
                    key: found.id.to_string(),
                });
            }
        };
        let mut batch = Batch::default();
        if let Some(wake) = task.wake {
            batch.push(Op::ClearTimer(conveyor_store::TimerKey {
                due: wake.at,
                task: task.id,
            }));
        }
        batch.push(Op::Count {
            process: task.process,
            node: task.node.clone(),
            now: -1,
            total: 0,
        });
        batch.push(Op::DeleteTask {
            task: task.id,
            process: task.process,
            reference: task.reference.clone(),
        });
        self.store.commit(&batch)?;
        self.note_commit(&crate::ref_changes(&batch));
        Ok(task)
    }

    /// The secret of a process's direct URL, made on first use; `rotate` replaces it.
    pub fn url_hash(&self, process: &str, rotate: bool) -> Result<(u64, String)> {
        let loaded = self.resolve(process)?;
        let id = loaded.record.id;
        if let (Some(hash), false) = (&loaded.record.url_hash, rotate) {
            return Ok((id, hash.clone()));
        }
        let hash = random_token(20);
        let record = self.store.set_url_hash(id, hash.clone())?;
        self.store.flush()?;
        if let Ok(mut map) = self.processes.write() {
            map.insert(
                id,
                Arc::new(LoadedProcess {
                    record,
                    process: loaded.process.clone(),
                }),
            );
        }
        Ok((id, hash))
    }

    /// Creates a key of the task API, optionally limited to some processes.
    pub fn create_api_key(
        &self,
        name: &str,
        processes: &[String],
    ) -> Result<conveyor_store::ApiKey> {
        let mut ids = Vec::new();
        for p in processes {
            ids.push(self.resolve(p)?.record.id);
        }
        let key = self
            .store
            .create_api_key(name, &random_token(20), ids, self.now())?;
        self.store.flush()?;
        Ok(key)
    }

    /// Gives key `login` a new secret (returned once); the old one no longer signs.
    pub fn rotate_api_key(&self, login: u64) -> Result<conveyor_store::ApiKey> {
        let key = self
            .store
            .set_api_key_secret(login, &random_token(20))?
            .ok_or_else(|| RuntimeError::Refused(format!("no API key with login {login}")))?;
        self.store.flush()?;
        Ok(key)
    }

    /// Deletes key `login`; requests signed with it are refused from now on.
    pub fn delete_api_key(&self, login: u64) -> Result<()> {
        if !self.store.delete_api_key(login)? {
            return Err(RuntimeError::Refused(format!(
                "no API key with login {login}"
            )));
        }
        self.store.flush()?;
        Ok(())
    }
}

/// A ref claimed twice is the caller's mistake, said as such.
pub(crate) fn duplicate_ref(e: conveyor_store::StoreError) -> RuntimeError {
    match e {
        conveyor_store::StoreError::DuplicateRef { process, reference } => {
            RuntimeError::DuplicateRef { process, reference }
        }
        other => other.into(),
    }
}

/// `bytes` random bytes as hex.
pub fn random_token(bytes: usize) -> String {
    use rand::RngCore as _;
    let mut buffer = vec![0u8; bytes];
    // ThreadRng is a CSPRNG (ChaCha) seeded from the operating system.
    rand::rng().fill_bytes(&mut buffer);
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}

/// Applies defaults and checks required params and patterns.
pub(crate) fn check_params(process: &Process, data: &mut Map<String, Value>) -> Result<()> {
    for (name, param) in &process.params {
        match data.get(name) {
            None | Some(Value::Null) => {
                if let Some(default) = &param.default {
                    data.insert(name.clone(), default.clone());
                } else if param.required {
                    let about = param
                        .description
                        .as_deref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default();
                    return Err(RuntimeError::Param {
                        name: name.clone(),
                        message: format!("is required{about}"),
                    });
                }
            }
            Some(value) => {
                if let Some(pattern) = &param.pattern {
                    let text = match value {
                        Value::String(s) => s.clone(),
                        Value::Number(_) | Value::Bool(_) => value.to_string(),
                        _ => {
                            return Err(RuntimeError::Param {
                                name: name.clone(),
                                message: "must be text to match its pattern".into(),
                            });
                        }
                    };
                    if !pattern.is_match(&text) {
                        let shown = if param.secret {
                            "the value".to_string()
                        } else {
                            format!("`{text}`")
                        };
                        return Err(RuntimeError::Param {
                            name: name.clone(),
                            message: format!("{shown} does not match the pattern `{pattern}`"),
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

/// A task as it is born in `node` at `now`: ready, with its first history event to come
/// (`push_birth`). Every way a task is made (`new_task`, an alert) builds it here.
pub(crate) fn born(
    id: u64,
    process: u64,
    reference: Option<String>,
    node: &str,
    data: Map<String, Value>,
    caller: Option<Caller>,
    now: i64,
) -> TaskRecord {
    TaskRecord {
        id,
        process,
        reference,
        node: node.to_string(),
        prev_node: None,
        status: TaskStatus::Ready,
        data,
        created: now,
        changed: now,
        entered: now,
        wake: None,
        attempt: 0,
        history_len: 1,
        caller,
        moves: 0,
        secret_keys: Vec::new(),
        created_by: None,
    }
}

/// The ops a born task needs besides its record: its node's counters, its `created`
/// event, its place in the process's index.
pub(crate) fn push_birth(task: &TaskRecord, batch: &mut Batch) {
    batch.push(Op::Count {
        process: task.process,
        node: task.node.clone(),
        now: 1,
        total: 1,
    });
    batch.push(Op::History {
        task: task.id,
        seq: 0,
        events: vec![HistoryEvent {
            at: task.created,
            node: task.node.clone(),
            kind: EventKind::Created,
        }],
    });
    batch.push(Op::IndexTask {
        process: task.process,
        task: task.id,
    });
}
