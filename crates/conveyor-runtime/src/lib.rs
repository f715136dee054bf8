//! The Conveyor engine.
//!
//! [`Runtime`] holds all state of a running Conveyor in one place: the [`Store`], the
//! [`Clock`], the compiled processes, and the queue of tasks that need work. The commands
//! (`process clone`, `task add`, …) are methods on it; [`Runtime::run`] moves tasks.
//!
//! How a task moves: a worker takes a ready task, reads its inbox (modifications,
//! replies) and its timer, then runs nodes in memory until the task reaches a node that
//! waits, ends, or calls out a second time; then everything that happened — the task,
//! its counters, history, timers, refs and the tasks it created — is committed as one
//! store batch. A crash before the commit loses nothing that was decided: the task is
//! still ready (or its timer still due) and is run again. HTTP side effects are therefore
//! at-least-once; state transitions are exactly-once.
//!
//! # Layout
//!
//! - `lib.rs` — [`Runtime`]: the state in one place, and the settings;
//! - `engine.rs` — the run loop: ready tasks, due timers, workers, shutdown;
//! - `step.rs` — one step of one task; `step/` — one module per node kind, each what
//!   `advance` dispatches to;
//! - `committer.rs` — group commit of steps' batches (and the doors' creates);
//! - `intake.rs` — the HTTP doors' creates and modifies, joining the committer's groups
//!   (a direct URL's or the task API's create takes its first step there:
//!   `step::run_born`);
//! - `answers.rs` — sync replies: doors that wait for a task's `reply` or end;
//! - `alerts.rs` — a node's `alert` (Corezoid's `count` semaphor): alert tasks when its
//!   count crosses the threshold;
//! - `ops.rs` — the commands: clone and update processes, add, find, modify tasks;
//! - `queues.rs` — the tasks waiting in each `queue` node, for `get_task`;
//! - `recover.rs` — `task retry` and `task goto`;
//! - `input.rs` — what the outside may set, checked at every door;
//! - `env.rs` — a running task's template environment (`conv[…]` reads);
//! - `refcache.rs` — the bounded, never stale cache of tasks read by ref;
//! - `http.rs` — the `api_call` node's HTTP exchange and its errors (and `send_sys`'s
//!   signature); `xml.rs` — JSON into an XML request body;
//! - `code.rs` — the `code` node's JavaScript (QuickJS, sandboxed);
//! - `mask.rs` — secrets and their masking; `fold.rs` — process rate limits;
//! - `retention.rs` — keeping and removing finished tasks, trimming history;
//! - `stats.rs`, `metrics.rs` — `store stats` and `/metrics`; `clock.rs` — the clock.

mod alerts;
mod answers;
mod clock;
mod code;
mod committer;
mod engine;
mod env;
mod fold;
mod http;
mod input;
mod intake;
mod mask;
mod metrics;
mod ops;
mod queues;
mod recover;
mod refcache;
mod retention;
mod stats;
mod step;
mod xml;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

pub use answers::{Answer, AnswerWait};
pub use clock::{Clock, ManualClock, SystemClock};
pub use conveyor_store::{Store, StoreError};
pub use engine::{RunMode, RunStats};
pub use input::DirectOutcome;
pub use intake::Ack;
pub use mask::{MASK, declared_secret_keys, mask_data};
pub use metrics::Metrics;
pub use ops::{ModifyOutcome, TaskBy, TaskKey, random_token};
pub use recover::{Recovery, StepKind};
pub use stats::{ProcessStats, StoreStats};

use conveyor_model::{Diagnostic, Process};
use conveyor_store::{Batch, Linger, Op, ProcessRecord, TaskRecord};

/// Errors of runtime operations, each meant to be shown to a person as is.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no process {0}")]
    NoProcess(String),
    #[error("no task {key} in process {process}")]
    NoTask { process: String, key: String },
    #[error("the process definition has {} error(s):\n{}", .0.len(), .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
    #[error("param `{name}`: {message}")]
    Param { name: String, message: String },
    /// Several params refused at once: (name, why).
    #[error("{}", .0.iter().map(|(n, m)| format!("param `{n}`: {m}")).collect::<Vec<_>>().join("; "))]
    Params(Vec<(String, String)>),
    #[error(
        "process {process} does not take {} {} through `{door}`{}",
        if keys.len() == 1 { "param" } else { "params" },
        keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "),
        if accepted.is_empty() { String::from(" (it takes none)") } else {
            format!(" (it takes {})", accepted.join(", "))
        }
    )]
    Undeclared {
        process: u64,
        door: &'static str,
        keys: Vec<String>,
        accepted: Vec<String>,
    },
    #[error("{0}")]
    Refused(String),
    /// A ref given to a create is taken (Corezoid's `not_unical_ref`).
    #[error("ref '{reference}' already exists in process {process}")]
    DuplicateRef { process: u64, reference: String },
    /// `task retry` / `task goto` cannot do what was asked with this task.
    #[error("task {task} is {status} in `{node}`: {why}")]
    CannotRecover {
        task: u64,
        node: String,
        status: &'static str,
        why: String,
    },
    #[error("stored process {id} no longer checks: {message}")]
    BrokenProcess { id: u64, message: String },
}

pub type Result<T> = std::result::Result<T, RuntimeError>;

/// A stored process and its compiled definition.
#[derive(Debug)]
pub struct LoadedProcess {
    pub record: ProcessRecord,
    pub process: Process,
}

/// What `conv[…].ref[…]` reads of a task: its data, and the keys it holds secret beyond
/// its process's (`TaskRecord::secret_keys`).
#[derive(Debug)]
pub(crate) struct RefTask {
    pub data: serde_json::Value,
    pub secret_keys: Vec<String>,
}

/// The engine's hot in-memory maps keyed by what the engine hands out or a process file
/// names (task and process ids, node names, aliases, fixed URLs) hash with foldhash:
/// SipHash showed in the profiles of steps and `conv[…]` reads. A map keyed by what a
/// caller chooses (a task's ref) keeps SipHash: foldhash resists only simple collision
/// attacks.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
/// A set that hashes as [`FastMap`] does.
pub(crate) type FastSet<T> = HashSet<T, foldhash::fast::RandomState>;

/// A change a commit makes to a task that has a ref.
#[derive(Clone)]
pub(crate) enum RefChange {
    Put {
        process: u64,
        reference: String,
        data: Arc<RefTask>,
    },
    Delete {
        process: u64,
        reference: String,
    },
}

/// The ref changes in a batch.
pub(crate) fn ref_changes(batch: &Batch) -> Vec<RefChange> {
    batch
        .ops
        .iter()
        .filter_map(|op| match op {
            conveyor_store::Op::PutTask(task) => task.reference.as_ref().map(|r| RefChange::Put {
                process: task.process,
                reference: r.clone(),
                data: Arc::new(RefTask {
                    data: serde_json::Value::Object(task.data.clone()),
                    secret_keys: task.secret_keys.clone(),
                }),
            }),
            conveyor_store::Op::DeleteTask {
                process,
                reference: Some(r),
                ..
            } => Some(RefChange::Delete {
                process: *process,
                reference: r.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// A commit sent to the committer, while its caller waits for the answer.
///
/// Why: a caller can stop waiting — a door's future is dropped when its HTTP client goes
/// away — while the committer still applies the batch. Part of what the caller would
/// have done after it must not be lost with it: a task created ready and never handed to
/// the engine would sit until the next start, and a ref cache not told of a write would
/// serve the value before it. So dropped while waiting, it leaves a task behind that
/// waits for the committer's answer and then does that part ([`ToWake`], the ref cache).
struct Waiting<'a> {
    rt: &'a Runtime,
    /// `None` once answered.
    wait: Option<tokio::sync::oneshot::Receiver<std::result::Result<(), StoreError>>>,
    refs: &'a [RefChange],
    wake: ToWake,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let Some(wait) = self.wait.take() else {
            return;
        };
        // The runtime is not kept alive for this: gone by the answer, nothing is left
        // to tell.
        let me = self.rt.me.clone();
        let refs = self.refs.to_vec();
        let wake = std::mem::take(&mut self.wake);
        let after = move |answer| {
            if let (Ok(Ok(())), Some(rt)) = (answer, me.upgrade()) {
                rt.after_abandoned_commit(&refs, wake);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move { after(wait.await) });
            }
            // Dropped outside tokio (a runtime shutting down): a thread waits instead.
            Err(_) => {
                let _ = std::thread::Builder::new()
                    .name("conveyor-abandoned".into())
                    .spawn(move || after(wait.blocking_recv()));
            }
        }
    }
}

/// The tasks a batch leaves for the engine (made ready, or sent a message) and its
/// earliest timer: what the engine is told of after the commit.
#[derive(Default)]
struct ToWake {
    tasks: Vec<u64>,
    timer: Option<i64>,
}

impl ToWake {
    fn of(batch: &Batch) -> ToWake {
        let mut wake = ToWake::default();
        for op in &batch.ops {
            match op {
                Op::SetReady(task) | Op::Inbox { task, .. } => wake.tasks.push(*task),
                Op::SetTimer(timer) => {
                    wake.timer = Some(wake.timer.map_or(timer.due, |at| at.min(timer.due)));
                }
                _ => {}
            }
        }
        wake
    }
}

/// Work waiting for the engine, and what is being worked on.
#[derive(Default)]
struct Queue {
    waiting: VecDeque<u64>,
    queued: FastSet<u64>,
    running: FastSet<u64>,
    /// Tasks that got new work while running: queued again when they finish.
    again: FastSet<u64>,
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Most tasks stepped at once (API calls in flight count).
    pub max_in_flight: usize,
    /// Flush the store after every batch of steps (slower, survives power loss better).
    pub flush_each_step: bool,
    /// Most tasks the cache of `conv[…].ref[…]` reads keeps (over all processes).
    pub ref_cache_entries: usize,
    /// Most bytes of task data (as JSON text) that cache keeps.
    pub ref_cache_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_in_flight: 256,
            flush_each_step: false,
            ref_cache_entries: refcache::DEFAULT_MAX_ENTRIES,
            ref_cache_bytes: refcache::DEFAULT_MAX_BYTES,
        }
    }
}

/// Everything a running Conveyor has.
pub struct Runtime {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    processes: RwLock<FastMap<u64, Arc<LoadedProcess>>>,
    queue: Mutex<Queue>,
    work: tokio::sync::Notify,
    http: reqwest::Client,
    /// Per-node concurrency limits of API calls: process → node → semaphore.
    limits: Mutex<FastMap<u64, FastMap<String, Arc<tokio::sync::Semaphore>>>>,
    /// API calls' fixed URLs (no placeholder), parsed once (`http::Urls`).
    urls: http::Urls,
    metrics: Metrics,
    /// Woken when the engine has nothing ready and nothing running.
    idle: tokio::sync::Notify,
    /// Applies steps' batches in groups (see `committer.rs`).
    committer: committer::Committer,
    /// Data of tasks read by `conv[…].ref[…]`, bounded (`Settings::ref_cache_entries`
    /// and `ref_cache_bytes`) and kept true by commits (see `refcache.rs`).
    refs: RwLock<refcache::RefCache>,
    /// Process aliases (they never change once given).
    aliases: RwLock<FastMap<String, u64>>,
    /// The current window of each rate-limited process (`fold.rs`).
    windows: Mutex<fold::Windows>,
    /// The store's figures as `/metrics` last computed them (`stats.rs`).
    stats_cache: stats::StatsCache,
    /// Another engine of a shared store announced work (see [`Runtime::on_change`]).
    work_elsewhere: std::sync::atomic::AtomicBool,
    /// Work came that no step decided (a plain create, a modify, a command), which may
    /// have set timers no step told the loop of: the loop reads its timer index again.
    work_outside: std::sync::atomic::AtomicBool,
    /// Doors waiting for tasks' answers (sync replies, `answers.rs`).
    answers: answers::Answers,
    /// Tasks a `get_task` node took from a `queue` node that have not moved on yet (their
    /// own step moves them): no second `get_task` takes them meanwhile.
    taken: Mutex<FastSet<u64>>,
    /// The tasks waiting in each `queue` node, for `get_task` (`queues.rs`).
    queues: queues::Queues,
    /// Held while an `alert` is decided and its task committed (`alerts.rs`).
    alerting: tokio::sync::Mutex<()>,
    /// Timers set outside the engine's steps, for its loop (`engine::TimerHint`).
    timer_hint: engine::TimerHint,
    /// Processes' held tasks, for `max_tasks` (`ops::Held`).
    held: Mutex<FastMap<u64, ops::Held>>,
    /// Itself, for the work a caller that stopped waiting for the committer leaves
    /// (`Waiting`), which outlives the caller.
    me: std::sync::Weak<Runtime>,
}

impl Runtime {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, settings: Settings) -> Arc<Runtime> {
        // reqwest's rustls needs a crypto provider; installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::limited(http::MAX_REDIRECTS))
            .user_agent(concat!("conveyor/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        let committer = committer::Committer::start(store.clone(), settings.flush_each_step);
        let runtime = Arc::new_cyclic(|me| Runtime {
            refs: RwLock::new(refcache::RefCache::new(
                settings.ref_cache_entries,
                settings.ref_cache_bytes,
            )),
            aliases: RwLock::new(FastMap::default()),
            windows: Mutex::new(fold::Windows::default()),
            stats_cache: Default::default(),
            committer,
            store,
            clock,
            settings,
            processes: RwLock::new(FastMap::default()),
            queue: Mutex::new(Queue::default()),
            work: tokio::sync::Notify::new(),
            http,
            limits: Mutex::new(FastMap::default()),
            urls: http::Urls::default(),
            metrics: Metrics::default(),
            idle: tokio::sync::Notify::new(),
            work_elsewhere: std::sync::atomic::AtomicBool::new(false),
            work_outside: std::sync::atomic::AtomicBool::new(false),
            answers: answers::Answers::default(),
            taken: Mutex::new(FastSet::default()),
            queues: queues::Queues::default(),
            alerting: tokio::sync::Mutex::new(()),
            timer_hint: engine::TimerHint::default(),
            held: Mutex::new(FastMap::default()),
            me: me.clone(),
        });
        if runtime.store.shared() {
            let weak = Arc::downgrade(&runtime);
            runtime.store.watch(Arc::new(move |change| {
                if let Some(runtime) = weak.upgrade() {
                    runtime.on_change(change);
                }
            }));
        }
        runtime
    }

    /// What another engine of a shared store announced: work to look for (the engine
    /// loop claims it), or a process that changed (its compiled definition is dropped
    /// and read again on next use). After a lost connection, anything may have changed.
    fn on_change(&self, change: conveyor_store::Change) {
        use conveyor_store::Change;
        let forget = match change {
            Change::Work => None,
            Change::Process(id) => Some(Some(id)),
            Change::Reconnected => Some(None),
        };
        if let Some(which) = forget
            && let Ok(mut map) = self.processes.write()
        {
            match which {
                Some(id) => {
                    map.remove(&id);
                }
                None => map.clear(),
            }
        }
        self.work_elsewhere
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.work.notify_one();
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The metrics in Prometheus's text format, with the tasks in each node now.
    pub fn metrics_text(&self) -> Result<String> {
        let mut nodes = Vec::new();
        for process in self.store.processes()? {
            for (node, counter) in self.store.counters(process.id)? {
                // An alert's state is kept as a counter of its own (`alerts.rs`).
                if !alerts::is_state(&node) {
                    nodes.push((process.id, node, counter.now));
                }
            }
        }
        let mut text = self.metrics.render(&nodes);
        text.push_str(&self.stats_text()?);
        Ok(text)
    }

    /// Whether a task is being stepped right now.
    pub fn is_running(&self, task: u64) -> bool {
        self.queue
            .lock()
            .map(|q| q.running.contains(&task))
            .unwrap_or(false)
    }

    /// Keeps this engine from starting a step of `task` until [`Runtime::unhold`]: it is
    /// marked as running. `false` when a step of it runs now.
    pub(crate) fn hold(&self, task: u64) -> bool {
        match self.queue.lock() {
            Ok(mut queue) => queue.running.insert(task),
            Err(_) => false,
        }
    }

    /// Ends a [`Runtime::hold`]; work that came for the task meanwhile is queued.
    pub(crate) fn unhold(&self, task: u64) {
        let again = match self.queue.lock() {
            Ok(mut queue) => {
                queue.running.remove(&task);
                queue.again.remove(&task)
            }
            Err(_) => false,
        };
        if again {
            self.schedule(task);
        }
    }

    /// Completes when nothing is ready and nothing runs (for `run --until-idle` through
    /// a running server).
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            let idle = self
                .queue
                .lock()
                .map(|q| q.waiting.is_empty() && q.running.is_empty())
                .unwrap_or(true);
            if idle {
                return;
            }
            notified.await;
        }
    }

    pub fn now(&self) -> i64 {
        self.clock.now_millis()
    }

    /// The compiled process with this id, compiled once and cached. The cache is never
    /// stale: a stored process changes only through this runtime (`update_process`,
    /// `url_hash` replace the entry), since one engine holds the store at a time and
    /// commands go through it while it runs. On a shared store other engines change
    /// processes too: they announce it and the entry is dropped ([`Runtime::on_change`]);
    /// a step that started before hears of it runs on the version it began with.
    pub fn loaded(&self, id: u64) -> Result<Arc<LoadedProcess>> {
        if let Some(p) = self.processes.read().ok().and_then(|m| m.get(&id).cloned()) {
            return Ok(p);
        }
        let record = self
            .store
            .process(id)?
            .ok_or_else(|| RuntimeError::NoProcess(id.to_string()))?;
        self.compile(record)
    }

    fn compile(&self, record: ProcessRecord) -> Result<Arc<LoadedProcess>> {
        let id = record.id;
        let process = conveyor_model::check(&format!("process {id}"), &record.definition)
            .into_result()
            .map_err(|errors| RuntimeError::BrokenProcess {
                id,
                message: errors
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            })?;
        let loaded = Arc::new(LoadedProcess { record, process });
        if let Ok(mut map) = self.processes.write() {
            map.insert(id, loaded.clone());
        }
        Ok(loaded)
    }

    /// Transactions the committer applied so far, and the steps in them (their ratio is
    /// the average size of a group commit).
    pub fn commit_stats(&self) -> (u64, u64) {
        let stats = self.committer.stats();
        (
            stats.groups.load(std::sync::atomic::Ordering::Relaxed),
            stats.steps.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Commits a step's batch with others waiting (group commit); resolves once it is
    /// applied (and flushed, with `flush_each_step`).
    pub(crate) async fn commit_step(&self, batch: Batch) -> Result<()> {
        self.commit_giving_back(batch, false, None, Linger::May)
            .await
            .0
    }

    /// Of [`Runtime::commit_stats`]'s transactions, those of one step applied on the
    /// step's own thread (the store was idle: `Store::commit_quick`).
    pub fn commits_in_place(&self) -> u64 {
        let stats = self.committer.stats();
        stats.in_place.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How long the store has been applying the committer's current group, if it is
    /// applying one: past a few seconds, the store is stuck (see `/healthz`).
    pub fn commit_in_store_for(&self) -> Option<std::time::Duration> {
        self.committer.stats().in_store_for()
    }

    /// A door's commit: in the committer's next group (or in place, written at once:
    /// [`Linger::No`]); with `durable`, resolves only once that group is flushed to disk
    /// (one flush for everyone in it).
    pub(crate) async fn commit_grouped(&self, batch: Batch, durable: bool) -> Result<()> {
        self.commit_giving_back(batch, durable, None, Linger::No)
            .await
            .0
    }

    /// [`Runtime::commit_grouped`], giving back the task record of op `put` (an
    /// [`Op::PutTask`]) whatever the outcome: moved out of the batch when it was
    /// committed on this thread (most steps' batches), copied before the batch leaves
    /// for the committer. A step puts its task into its batch this way rather than
    /// copying it for every commit.
    pub(crate) async fn commit_giving_back(
        &self,
        mut batch: Batch,
        durable: bool,
        put: Option<usize>,
        linger: Linger,
    ) -> (Result<()>, Option<Box<TaskRecord>>) {
        let take = |batch: &mut Batch| match put.filter(|&i| i < batch.ops.len()) {
            Some(i) => match batch.ops.swap_remove(i) {
                Op::PutTask(task) => Some(task),
                _ => None,
            },
            None => None,
        };
        let batch_refs = ref_changes(&batch);
        if !durable
            && let Some(result) = self
                .committer
                .commit_here(self.store.as_ref(), &batch, linger)
        {
            if result.is_ok() {
                self.note_commit(&batch_refs);
            }
            return (result.map_err(Into::into), take(&mut batch));
        }
        let Some(sender) = self.committer.sender() else {
            let result = self.store.commit(&batch).and_then(|()| match durable {
                true => self.store.flush(),
                false => Ok(()),
            });
            if result.is_ok() {
                self.note_commit(&batch_refs);
            }
            return (result.map_err(Into::into), take(&mut batch));
        };
        let back = put.and_then(|i| match batch.ops.get(i) {
            Some(Op::PutTask(task)) => Some(task.clone()),
            _ => None,
        });
        (
            self.send_to_committer(sender, batch, durable, &batch_refs)
                .await,
            back,
        )
    }

    /// The rest of [`Runtime::commit_giving_back`]: the committer applies `batch` with
    /// its next group.
    async fn send_to_committer(
        &self,
        sender: std::sync::mpsc::Sender<committer::Request>,
        batch: Batch,
        durable: bool,
        batch_refs: &[RefChange],
    ) -> Result<()> {
        let (done, wait) = tokio::sync::oneshot::channel();
        let wake = ToWake::of(&batch);
        let request = committer::Request {
            batch,
            durable,
            done,
        };
        if let Err(mpsc_error) = sender.send(request) {
            // The committer is gone (shutting down): apply it here.
            self.store.commit(&mpsc_error.0.batch)?;
            if durable {
                self.store.flush()?;
            }
            self.note_commit(batch_refs);
            return Ok(());
        }
        let mut waiting = Waiting {
            rt: self,
            wait: Some(wait),
            refs: batch_refs,
            wake,
        };
        let answered = match &mut waiting.wait {
            Some(wait) => wait.await.ok(),
            None => None,
        };
        // Answered: nothing is left for `Waiting`'s drop.
        waiting.wait = None;
        match answered {
            Some(Ok(())) => {
                self.note_commit(batch_refs);
                Ok(())
            }
            Some(Err(e)) => Err(e.into()),
            None => Err(RuntimeError::Store(StoreError::Io(
                "the committer stopped".into(),
            ))),
        }
    }

    /// What a caller that stopped waiting for its commit would have done once it was
    /// applied, done when it is (see [`Waiting`]).
    fn after_abandoned_commit(&self, refs: &[RefChange], wake: ToWake) {
        self.note_commit(refs);
        for task in wake.tasks {
            self.schedule(task);
        }
        if let Some(at) = wake.timer {
            self.hint_timer(at);
        }
    }

    /// Keeps the ref cache true after a commit: tasks written or deleted in processes
    /// that were read from.
    pub(crate) fn note_commit(&self, changes: &[RefChange]) {
        if changes.is_empty() {
            return;
        }
        let Ok(mut refs) = self.refs.write() else {
            return;
        };
        for change in changes {
            match change {
                RefChange::Put {
                    process,
                    reference,
                    data,
                } => refs.commit(*process, reference, Some(data.clone())),
                RefChange::Delete { process, reference } => refs.commit(*process, reference, None),
            }
        }
    }

    /// The data of the task with `reference` in `process`, from the cache or the store.
    /// On a shared store the cache is not used: other engines' commits do not report to
    /// it, so every read goes to the store and sees the latest committed data.
    pub(crate) fn ref_data(&self, process: u64, reference: &str) -> Result<Option<Arc<RefTask>>> {
        if self.store.shared() {
            return Ok(self.store.task_by_ref(process, reference)?.map(|task| {
                Arc::new(RefTask {
                    data: serde_json::Value::Object(task.data),
                    secret_keys: task.secret_keys,
                })
            }));
        }
        if let Ok(refs) = self.refs.read()
            && let Some(data) = refs.get(process, reference)
        {
            return Ok(Some(data));
        }
        // The process's generation *before* reading the store: a commit reported
        // meanwhile moves it on, and the value read is then not kept (it may be older).
        let generation = self
            .refs
            .write()
            .ok()
            .map(|mut refs| refs.generation(process));
        let Some(task) = self.store.task_by_ref(process, reference)? else {
            return Ok(None);
        };
        let data = Arc::new(RefTask {
            data: serde_json::Value::Object(task.data),
            secret_keys: task.secret_keys,
        });
        if let (Some(generation), Ok(mut refs)) = (generation, self.refs.write()) {
            refs.insert_read(process, reference, generation, data.clone());
        }
        Ok(Some(data))
    }

    /// How many tasks the cache of `conv[…].ref[…]` reads keeps now, and the bytes of
    /// their data (bounded by `Settings::ref_cache_entries` and `ref_cache_bytes`).
    pub fn ref_cache_size(&self) -> (usize, usize) {
        self.refs.read().map(|r| r.size()).unwrap_or((0, 0))
    }

    /// The id of the process with this alias (cached: aliases never change).
    pub(crate) fn alias_id(&self, alias: &str) -> Result<Option<u64>> {
        if let Some(id) = self.aliases.read().ok().and_then(|a| a.get(alias).copied()) {
            return Ok(Some(id));
        }
        let id = self.store.alias(alias)?;
        if let (Some(id), Ok(mut aliases)) = (id, self.aliases.write()) {
            aliases.insert(alias.to_string(), id);
        }
        Ok(id)
    }

    /// Puts a task in the queue of work that no step decided (the loop also reads its
    /// timer index again, in case whatever made the work set a timer).
    pub fn schedule(&self, task: u64) {
        self.work_outside
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.schedule_from_engine(task);
    }

    /// Puts a task in the queue of work from the engine itself (its loop, its steps and
    /// the first steps doors run, whose timers reach the loop through
    /// `engine::TimerHint`). A step schedules every
    /// other task it creates or sends a message to, so a timer such a task has (a
    /// rate-limited process's summary) is told by that task's own step.
    pub(crate) fn schedule_from_engine(&self, task: u64) {
        let Ok(mut queue) = self.queue.lock() else {
            return;
        };
        if queue.running.contains(&task) {
            queue.again.insert(task);
        } else if queue.queued.insert(task) {
            queue.waiting.push_back(task);
        }
        drop(queue);
        self.work.notify_one();
    }

    /// Tells the engine's loop of a timer a step set (at a door, or in a runner),
    /// waking it only when the timer is due before it would wake anyway.
    pub(crate) fn hint_timer(&self, at: i64) {
        if self.timer_hint.set(at) {
            self.work.notify_one();
        }
    }
}
