//! One step of one task: read its inbox and timer, run nodes in memory until it waits,
//! ends, or is about to call out a second time, then commit everything as one batch.

use std::sync::Arc;

use conveyor_model::{
    ApiCall, CallProcess, Cast, Check, Code, CompareOp, Condition, CopyTask, Delay, DurationSpec,
    Escalation, Final, FinalStatus, GetTask, LimitAt, ModifyTask, NodeKind, Reply, SendSys,
    SetParam, Start, Sum, TaskCopy, Wait,
};
use conveyor_store::{
    Batch, Caller, EventKind, HistoryEvent, InboxMessage, Linger, Op, TaskRecord, TaskStatus,
    TimerKey, Wake, WakeKind,
};
use conveyor_template::{ProcessId, Template, ValueTemplate};
use serde_json::{Map, Value};

use crate::env::{Root, StoreEnv};
use crate::http::{self, Failure};
use crate::{LoadedProcess, Result, Runtime, RuntimeError, mask};

// One module per node kind (in `step/`): what a task does in a node of that kind.
// `advance` dispatches to them; a new kind is one module and one arm there.
mod api_call;
mod call_process;
mod code;
mod condition;
mod copy_task;
mod delay;
mod escalation;
mod final_node;
mod get_task;
mod modify_task;
mod queue;
mod reply;
mod set_param;
mod start;
mod sum;
mod wait_callback;

/// What a finished step leaves behind, for the engine loop.
pub(crate) struct Outcome {
    /// The task's timer after the step, if it has one.
    pub wake: Option<Wake>,
}

pub(crate) struct Step<'r> {
    rt: &'r Runtime,
    loaded: Arc<LoadedProcess>,
    task: TaskRecord,
    now: i64,
    batch: Batch,
    /// Counter changes of this task's process, by node.
    counts: Counts,
    events: Vec<HistoryEvent>,
    /// Tasks to put in the queue once the batch is committed.
    schedule: Vec<u64>,
    /// Other tasks this step claimed in a shared store (a `get_task` taking a queued
    /// task), given back once the batch is committed (or failed).
    claimed: Vec<u64>,
    /// Moves since the task last waited (loop protection).
    moves: u32,
    /// Secret values read from other processes during this step.
    revealed: Vec<String>,
    /// An API call's result is in memory, not yet committed.
    called_out: bool,
    /// Tasks this step created in other processes (for metrics, once committed).
    created: u64,
    /// Loop protection already sent the task to an error route in this step.
    loop_tripped: bool,
    /// Templates rendered so far (each render's `$.random` gets its own seed).
    renders: std::cell::Cell<u64>,
    /// A modify woke the task in a `keep_timeout` node: if it comes back there through
    /// conditions and `set_param`s only, it waits for the time that was left.
    resume: Option<Resume>,
    /// The task is removed by this step's commit (its `keep` is over, or is `0`).
    remove: bool,
    /// The last failure of this step (node and reason), told to a waiting caller.
    failure: Option<String>,
    /// What the first `reply` node of this step answered (node, data, error), for a door
    /// waiting for the task (`answers.rs`).
    answer: Option<(String, Map<String, Value>, bool)>,
    /// The task is not in the store yet: this is its first step, run at the door that
    /// creates it ([`run_born`]).
    born: bool,
    /// The commit is acknowledged only once on disk (a door's create).
    durable: bool,
    /// Where the task waited when the step began, and since when (`None`: it did not
    /// wait, e.g. a door left it ready at a queue it had not entered yet): a task that
    /// leaves a queue node goes off the engine's list of it (`queues.rs`).
    began: Option<(String, i64)>,
    /// Tasks this step took from queues (`get_task`), not committed yet: given back if
    /// the step ends without its commit.
    took: Taken<'r>,
    /// A `get_task` took this task (its message was read in this step): once this step
    /// is committed, the taker's hold on it is over (`release_claim`).
    dequeued: bool,
    /// The lock of a `queue` node with a `capacity` this task is entering, held from
    /// the count of who waits there until this step's commit is over (the step ends
    /// there), so that two steps never both take its last place (`queues.rs`).
    entering: Option<tokio::sync::OwnedMutexGuard<()>>,
}

/// What stands in for a step's task while the task itself is in the batch being
/// committed (`Step::commit`): its ids, nothing that allocates.
fn vacant(task: &TaskRecord) -> TaskRecord {
    TaskRecord {
        id: task.id,
        process: task.process,
        reference: None,
        node: String::new(),
        prev_node: None,
        status: task.status,
        data: Map::new(),
        created: task.created,
        changed: task.changed,
        entered: task.entered,
        wake: task.wake,
        attempt: 0,
        history_len: task.history_len,
        caller: None,
        moves: task.moves,
        secret_keys: Vec::new(),
        created_by: None,
    }
}

/// A step's counter changes by node, in the order the nodes were first met. A step
/// meets a handful of nodes, so a list searched in order costs less than hashing each
/// name (and allocates a name once, not at every lookup).
#[derive(Default)]
struct Counts(Vec<(String, i64, u64)>);

impl Counts {
    /// Adds `now` to the node's count of tasks in it and `total` to its count of tasks
    /// that ever entered.
    fn add(&mut self, node: &str, now: i64, total: u64) {
        if !self.add_to(node, now, total) {
            self.0.push((node.to_string(), now, total));
        }
    }

    /// [`Counts::add`] with a name the caller owns (not copied).
    fn add_owned(&mut self, node: String, now: i64, total: u64) {
        if !self.add_to(&node, now, total) {
            self.0.push((node, now, total));
        }
    }

    /// Adds to the node's entry if it has one.
    fn add_to(&mut self, node: &str, now: i64, total: u64) -> bool {
        match self.0.iter_mut().find(|(name, ..)| name == node) {
            Some((_, n, t)) => {
                *n += now;
                *t += total;
                true
            }
            None => false,
        }
    }
}

/// A task a `get_task` took: the queue and the list entry it had there.
struct Took {
    process: u64,
    queue: String,
    entered: i64,
    task: u64,
}

/// The tasks a step took from queues and has not committed yet.
struct Taken<'r> {
    rt: &'r Runtime,
    tasks: Vec<Took>,
}

impl Taken<'_> {
    fn push(&mut self, took: Took) {
        self.tasks.push(took);
    }

    /// The step's commit is done: the takes hold. On a store shared by several
    /// engines, so does this engine's hold on the taken tasks end: the store's claims and
    /// the check for a taker's message keep a second take off, and the taken task's step
    /// may run on another engine, which could never end this engine's hold.
    fn committed(&mut self) {
        let shared = self.rt.store.shared();
        for took in std::mem::take(&mut self.tasks) {
            if shared {
                unhold(self.rt, took.task);
            }
            // Its steps may start again: the one that reads this take's message first
            // (a time limit that came meanwhile was kept for after: `Runtime::unhold`).
            self.rt.unhold(took.task);
        }
    }
}

impl Drop for Taken<'_> {
    /// A step that ends without committing (its commit failed, it erred, it panicked)
    /// gives back the tasks it took from queues: they stay queued for another take.
    fn drop(&mut self) {
        for took in std::mem::take(&mut self.tasks) {
            give_back(self.rt, &took);
        }
    }
}

/// Ends this engine's hold on a taken task (`Runtime::taken`).
fn unhold(rt: &Runtime, task: u64) {
    rt.taken
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&task);
}

/// A take that will not be committed: the task is free again, its steps may start
/// (work that came for it meanwhile is queued), and it is back on the queue's list in
/// its place.
fn give_back(rt: &Runtime, took: &Took) {
    unhold(rt, took.task);
    rt.unhold(took.task);
    rt.queues
        .put_back(took.process, &took.queue, (took.entered, took.task));
}

/// Where a woken task was and since when.
struct Resume {
    node: String,
    entered: i64,
}

/// Runs one step of task `id`.
pub(crate) async fn run(rt: &Runtime, id: u64) -> Result<Outcome> {
    let Some(task) = rt.store.task(id)? else {
        let mut batch = Batch::default();
        batch.push(Op::ClearReady(id));
        // Messages left for a task that was removed meanwhile go with it.
        for (seq, _) in rt.store.inbox(id)? {
            batch.push(Op::ClearInbox { task: id, seq });
        }
        rt.store.commit(&batch)?;
        return Ok(Outcome { wake: None });
    };
    let loaded = rt.loaded(task.process)?;
    let mut step = Step::new(rt, loaded, task, Batch::default());
    let now = step.now;
    for (seq, message) in rt.store.inbox(id)? {
        step.batch.push(Op::ClearInbox { task: id, seq });
        step.receive(message);
    }
    if let Some(wake) = step.task.wake
        && wake.at <= now
    {
        step.fire(wake);
    }
    while step.task.status == TaskStatus::Ready {
        step.advance().await?;
    }
    step.answer_caller_if_failed()?;
    step.commit().await?;
    Ok(Outcome {
        wake: step.task.wake,
    })
}

/// What a born task's first step left (see [`run_born`]).
pub(crate) struct Born {
    /// The task as the step left it (as committed, unless it was removed).
    pub task: TaskRecord,
}

/// Runs the first step of a task a door has just built, before anything of it is
/// written: `create` (the ops [`Runtime::new_task`] made) and the step are committed as
/// one batch, so a task that runs straight through costs one commit and no trip through
/// the engine's queue. Only nodes that decide from the task alone run here
/// ([`runs_at_the_door`]); at any other node the task is left ready for the engine, as
/// a plain create would be. Nothing is visible to anyone before the commit, so no claim
/// is needed and a failed commit (a ref taken meanwhile) leaves nothing behind.
pub(crate) async fn run_born(
    rt: &Runtime,
    loaded: Arc<LoadedProcess>,
    mut task: TaskRecord,
    create: Batch,
    durable: bool,
) -> Result<Born> {
    let id = task.id;
    let mut rest = Batch::default();
    let mut birth = Vec::new();
    let mut counts = Vec::new();
    // The birth's own ops are folded into the step's: one record of the task, one
    // history record, one change per counter, and no ready mark set only to be cleared.
    for op in create.ops {
        match op {
            Op::PutTask(put) if put.id == id => {}
            Op::SetReady(ready) if ready == id => {}
            Op::History {
                task: of,
                seq: 0,
                events,
            } if of == id => birth = events,
            Op::Count {
                process,
                node,
                now,
                total,
            } if process == task.process => counts.push((node, now, total)),
            other => rest.push(other),
        }
    }
    task.history_len = 0;
    let mut step = Step::new(rt, loaded, task, rest);
    step.born = true;
    step.durable = durable;
    step.events = birth;
    for (node, now, total) in counts {
        step.counts.add_owned(node, now, total);
    }
    while step.task.status == TaskStatus::Ready && step.runs_at_the_door() {
        step.advance().await?;
    }
    step.answer_caller_if_failed()?;
    step.commit().await?;
    Ok(Born { task: step.task })
}

impl<'r> Step<'r> {
    fn new(rt: &'r Runtime, loaded: Arc<LoadedProcess>, task: TaskRecord, batch: Batch) -> Self {
        Step {
            began: (task.status == TaskStatus::Waiting).then(|| (task.node.clone(), task.entered)),
            took: Taken {
                rt,
                tasks: Vec::new(),
            },
            dequeued: false,
            entering: None,
            rt,
            loaded,
            task,
            now: rt.now(),
            batch,
            counts: Counts::default(),
            events: Vec::new(),
            schedule: Vec::new(),
            claimed: Vec::new(),
            moves: 0,
            revealed: Vec::new(),
            called_out: false,
            created: 0,
            loop_tripped: false,
            renders: std::cell::Cell::new(0),
            resume: None,
            remove: false,
            failure: None,
            answer: None,
            born: false,
            durable: false,
        }
    }

    /// Whether the node the task is in runs at a door ([`run_born`]): one that decides
    /// from the task alone and writes only the task, its counters and its timer. Calls
    /// out, code, and nodes that touch other tasks or claim them wait for the engine.
    fn runs_at_the_door(&self) -> bool {
        matches!(
            self.loaded
                .process
                .nodes
                .get(&self.task.node)
                .map(|n| &n.kind),
            Some(
                NodeKind::Start(_)
                    | NodeKind::SetParam(_)
                    | NodeKind::Condition(_)
                    | NodeKind::Final(_)
                    | NodeKind::Reply(_)
                    | NodeKind::Delay(_)
                    | NodeKind::WaitCallback(_)
            )
        )
    }
}

impl Step<'_> {
    /// The process and the id of the node the task is in; look the node up with
    /// `process.nodes.get(…)` (cheap: no copy of the node).
    fn here(&self) -> Arc<LoadedProcess> {
        Arc::clone(&self.loaded)
    }

    fn event(&mut self, kind: EventKind) {
        self.events.push(HistoryEvent {
            at: self.now,
            node: self.task.node.clone(),
            kind,
        });
    }

    fn env(&self) -> StoreEnv<'_> {
        let renders = self.renders.get() + 1;
        self.renders.set(renders);
        let env = StoreEnv::new(
            self.rt,
            Root {
                task_id: self.task.id,
                reference: self.task.reference.as_deref(),
                process: self.task.process,
                node: &self.task.node,
                prev_node: self.task.prev_node.as_deref(),
                created: self.task.created,
                changed: self.task.changed,
            },
            self.now,
        );
        env.seed
            .set(env.seed.get() ^ renders.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        env
    }

    /// Every secret value this step knows of: those it read from other processes, and
    /// the values of the task's secret keys.
    fn known_secrets(&self) -> Vec<String> {
        let mut secrets = self.revealed.clone();
        mask::secret_values(
            &self.loaded.process,
            &self.task.secret_keys,
            &self.task.data,
            &mut secrets,
        );
        secrets
    }

    /// Renders a template against the task; remembers secrets it read elsewhere.
    fn render(&mut self, template: &Template) -> std::result::Result<Value, String> {
        let data = Value::Object(std::mem::take(&mut self.task.data));
        let env = self.env();
        let result = template.render(&data, &env).map_err(|e| e.to_string());
        let revealed = env.revealed.take();
        drop(env);
        self.revealed.extend(revealed);
        if let Value::Object(map) = data {
            self.task.data = map;
        }
        result
    }

    fn render_value(&mut self, template: &ValueTemplate) -> std::result::Result<Value, String> {
        let data = Value::Object(std::mem::take(&mut self.task.data));
        let env = self.env();
        let result = template.render(&data, &env).map_err(|e| e.to_string());
        let revealed = env.revealed.take();
        drop(env);
        self.revealed.extend(revealed);
        if let Value::Object(map) = data {
            self.task.data = map;
        }
        result
    }

    fn render_text(&mut self, template: &Template) -> std::result::Result<String, String> {
        self.render(template).map(http::into_text)
    }

    /// Moves the task to `target`; a timer of the node it leaves is dropped.
    fn goto(&mut self, target: &str, via: impl Into<std::borrow::Cow<'static, str>>) {
        // The old node becomes the previous one, whose buffer takes the new node's name.
        let mut next = self.task.prev_node.take().unwrap_or_default();
        next.clear();
        next.push_str(target);
        let from = std::mem::replace(&mut self.task.node, next);
        self.clear_wake();
        self.counts.add(&from, -1, 0);
        self.counts.add(target, 1, 1);
        self.task.prev_node = Some(from.clone());
        self.task.entered = self.now;
        self.rt.metrics.transitions(1);
        self.task.moves += 1;
        self.task.attempt = 0;
        self.task.status = TaskStatus::Ready;
        self.event(EventKind::Entered {
            from,
            via: via.into(),
        });
    }

    fn clear_wake(&mut self) {
        if let Some(wake) = self.task.wake.take() {
            self.batch.push(Op::ClearTimer(TimerKey {
                due: wake.at,
                task: self.task.id,
            }));
        }
    }

    /// The task waits in its node: until `until` (if any) or the node's time limit.
    /// A time limit that cannot be worked out is an error of the node (its `on_error`),
    /// never a wait with no end.
    fn wait(&mut self, until: Option<(i64, WakeKind)>, reason: &str) {
        let mut wake = until.map(|(at, kind)| Wake { at, kind });
        if let Some(resume) = self.resume.take()
            && resume.node == self.task.node
        {
            self.task.entered = resume.entered;
        }
        let loaded = self.here();
        if let Some(node) = loaded.process.nodes.get(&self.task.node)
            && let Some(limit) = &node.time_limit
        {
            let at = match &limit.when {
                LimitAt::After(spec) => self
                    .duration(spec)
                    .map(|after| self.task.entered.saturating_add(after)),
                LimitAt::Until(template) => self.unix_time(template),
            };
            match at {
                Ok(at) => {
                    if wake.is_none_or(|w| at < w.at) {
                        wake = Some(Wake {
                            at,
                            kind: WakeKind::TimeLimit,
                        });
                    }
                }
                Err(message) => {
                    self.fail(
                        "wait",
                        "software",
                        "bad_time_limit",
                        format!("the time limit: {message}"),
                        None,
                    );
                    return;
                }
            }
        }
        self.clear_wake();
        if let Some(w) = wake {
            self.batch.push(Op::SetTimer(TimerKey {
                due: w.at,
                task: self.task.id,
            }));
        }
        self.task.wake = wake;
        self.task.status = TaskStatus::Waiting;
        self.moves = 0;
        self.event(EventKind::Waiting {
            until: wake.map(|w| w.at),
            reason: reason.to_string(),
        });
    }

    /// An absolute unix time (seconds, as Corezoid's dynamic timers give it) read from
    /// the task, in milliseconds.
    fn unix_time(&mut self, template: &Template) -> std::result::Result<i64, String> {
        self.render(template).and_then(|v| {
            let seconds = match &v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            };
            seconds
                .filter(|s| s.is_finite())
                .map(|s| (s * 1000.0) as i64)
                .ok_or_else(|| format!("`{}` is not a unix time", http::text_of(&v)))
        })
    }

    /// A duration in milliseconds, rendering it when it is a template. A rendered one
    /// must lie within the process's `settings.min_wait` and `max_wait`: task data
    /// (which may come from outside) cannot make a task spin or stop for good.
    fn duration(&mut self, spec: &DurationSpec) -> std::result::Result<i64, String> {
        match spec {
            DurationSpec::Fixed(d) => Ok(d.as_millis() as i64),
            DurationSpec::Template(t) => {
                let value = self.render(t)?;
                let text = http::text_of(&value);
                let duration = match value.as_u64() {
                    Some(n) => std::time::Duration::from_secs(n),
                    None => conveyor_model::parse_duration(&text)
                        .map_err(|e| format!("the duration rendered as {e}"))?,
                };
                self.within_bounds(duration, &text)?;
                Ok(duration.as_millis() as i64)
            }
        }
    }

    /// Refuses a rendered duration outside `settings.min_wait..=max_wait`.
    fn within_bounds(
        &self,
        duration: std::time::Duration,
        text: &str,
    ) -> std::result::Result<(), String> {
        let settings = &self.loaded.process.settings;
        let show = conveyor_model::format_duration;
        if duration < settings.min_wait {
            return Err(format!(
                "`{text}` is shorter than the {} this process allows (settings.min_wait)",
                show(settings.min_wait)
            ));
        }
        if duration > settings.max_wait {
            return Err(format!(
                "`{text}` is longer than the {} this process allows (settings.max_wait)",
                show(settings.max_wait)
            ));
        }
        Ok(())
    }

    /// The node failed: Corezoid's error keys go into the task, and it takes `on_error`
    /// (or stops here, failed, when the node has none).
    fn fail(
        &mut self,
        prefix: &str,
        type_error: &str,
        tag: &str,
        description: String,
        http_code: Option<u16>,
    ) {
        let data = &mut self.task.data;
        data.insert(
            format!("__conveyor_{prefix}_return_type_error__"),
            Value::String(type_error.into()),
        );
        data.insert(
            format!("__conveyor_{prefix}_return_type_tag__"),
            Value::String(tag.into()),
        );
        data.insert(
            format!("__conveyor_{prefix}_return_description__"),
            Value::String(description.clone()),
        );
        if let Some(code) = http_code {
            data.insert(
                format!("__conveyor_{prefix}_return_http_code__"),
                Value::from(code),
            );
        }
        self.failure = Some(format!(
            "node `{}` failed ({tag}): {description}",
            self.task.node
        ));
        self.event(EventKind::Error {
            tag: tag.to_string(),
            description,
        });
        let loaded = self.here();
        match loaded
            .process
            .nodes
            .get(&self.task.node)
            .and_then(|n| n.kind.on_error())
        {
            Some(target) => self.goto(target, "on_error"),
            None => self.stop(TaskStatus::Failed),
        }
    }

    /// Keys whose values came from another process's secrets become secret here too.
    fn taint(&mut self, keys: Vec<String>) {
        for key in keys {
            if !self.loaded.process.is_secret(&key) && !self.task.secret_keys.contains(&key) {
                self.task.secret_keys.push(key);
            }
        }
    }

    fn stop(&mut self, status: TaskStatus) {
        self.clear_wake();
        self.task.status = status;
        self.event(EventKind::Finished {
            status: status.as_str().into(),
        });
        // How long it is kept (`retention.rs`).
        match crate::retention::keep_for(&self.loaded.process, &self.task.node, status) {
            conveyor_model::Keep::Forever => {}
            conveyor_model::Keep::For(d) if d.is_zero() => self.remove = true,
            conveyor_model::Keep::For(d) => {
                let at = self
                    .now
                    .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                self.task.wake = Some(Wake {
                    at,
                    kind: WakeKind::Remove,
                });
                self.batch.push(Op::SetTimer(TimerKey {
                    due: at,
                    task: self.task.id,
                }));
            }
        }
    }

    /// `task retry` / `task goto` (`recover.rs`), checked again against the task as it is
    /// now: a refusal is recorded and changes nothing.
    /// `action` names a goto that is a step of the task API (`step_next`, …).
    fn recover(
        &mut self,
        to: Option<String>,
        data: Map<String, Value>,
        source: String,
        action: Option<String>,
    ) {
        let recovery = match to {
            None => crate::Recovery::Retry,
            Some(node) => crate::Recovery::Goto(node),
        };
        let loaded = self.here();
        let refused = crate::recover::refusal(
            &loaded.process,
            &self.task.node,
            self.task.status,
            &recovery,
        );
        if let Some(why) = refused {
            self.event(EventKind::Error {
                tag: "recover_refused".into(),
                description: format!("{source} could not move the task: {why}"),
            });
            return;
        }
        if !data.is_empty() {
            let keys = data.keys().cloned().collect();
            self.task.data.extend(data);
            self.event(EventKind::Modified {
                keys,
                source: source.clone(),
            });
        }
        match recovery {
            crate::Recovery::Retry => {
                self.clear_wake();
                self.task.status = TaskStatus::Ready;
                self.task.attempt = 0;
                self.event(EventKind::Recovered {
                    action: "retry".into(),
                    to: self.task.node.clone(),
                    source,
                });
            }
            crate::Recovery::Goto(node) | crate::Recovery::Step(_, node) => {
                let action = action.unwrap_or_else(|| "goto".into());
                self.event(EventKind::Recovered {
                    action: action.clone(),
                    to: node.clone(),
                    source,
                });
                self.goto(&node, action);
            }
        }
    }

    /// A message from outside: merge it, and wake the task where that is what it waits for.
    fn receive(&mut self, message: InboxMessage) {
        let loaded = self.here();
        let node = loaded.process.nodes.get(&self.task.node);
        match message {
            InboxMessage::Modify { data, source } => {
                let keys = data.keys().cloned().collect();
                // The doors check this too; a modify from a process is checked here.
                let mut merged = self.task.data.clone();
                merged.extend(data.clone());
                let size = crate::input::json_size(&merged);
                if size > crate::ops::MAX_TASK_BYTES {
                    self.event(EventKind::Error {
                        tag: "modify_refused".into(),
                        description: format!(
                            "a modify from {source} would make the task {size} bytes; the limit is {}; the task was left as it was",
                            crate::ops::MAX_TASK_BYTES
                        ),
                    });
                    return;
                }
                self.task.data = merged;
                self.event(EventKind::Modified { keys, source });
                if self.task.status == TaskStatus::Waiting
                    && let Some(node) = node
                {
                    let resume = node.keep_timeout.then(|| Resume {
                        node: node.id.clone(),
                        entered: self.task.entered,
                    });
                    match &node.kind {
                        NodeKind::WaitCallback(wait) => {
                            self.goto(&wait.next, "callback");
                            self.resume = resume;
                        }
                        NodeKind::Escalation(escalation) => {
                            if let Some(next) = &escalation.next {
                                self.goto(next, "modify");
                                self.resume = resume;
                            }
                        }
                        _ => {}
                    }
                }
            }
            InboxMessage::Add { data, source } => self.add_sums(data, source),
            InboxMessage::Fold { data } => {
                crate::fold::append(&mut self.task.data, data);
            }
            InboxMessage::Recover {
                to,
                data,
                source,
                action,
            } => self.recover(to, data, source, action),
            InboxMessage::Dequeue { by } => self.dequeued(by),
            InboxMessage::Reply {
                data,
                error,
                failure,
                reason,
            } => {
                let keys = data.keys().cloned().collect();
                let waiting = self.task.status == TaskStatus::Waiting
                    && node
                        .as_ref()
                        .is_some_and(|n| matches!(n.kind, NodeKind::CallProcess { .. }));
                if !waiting {
                    // The caller moved on (time limit, modify): a late reply changes nothing.
                    self.event(EventKind::Error {
                        tag: "late_reply".into(),
                        description: "a reply came after the task stopped waiting for it; ignored"
                            .into(),
                    });
                    return;
                }
                if !data.is_empty() {
                    self.task.data.extend(data);
                    self.event(EventKind::Modified {
                        keys,
                        source: "reply".into(),
                    });
                }
                if let (true, Some(node)) = (waiting, node)
                    && let NodeKind::CallProcess(call) = &node.kind
                {
                    if let Some(reason) = failure {
                        self.task.status = TaskStatus::Ready;
                        self.fail(
                            "rpc",
                            "software",
                            "rpc_callee_failed",
                            format!("the called process's task failed: {reason}"),
                            None,
                        );
                    } else if error {
                        self.task.status = TaskStatus::Ready;
                        let description = match reason {
                            Some(reason) => {
                                format!("the called process replied with an error: {reason}")
                            }
                            None => "the called process replied with an error".into(),
                        };
                        self.fail("rpc", "software", "rpc_error_reply", description, None);
                    } else {
                        self.goto(&call.next, "reply");
                    }
                }
            }
        }
    }

    /// The task's timer is due.
    fn fire(&mut self, wake: Wake) {
        self.rt.metrics.timer_lag(self.now - wake.at);
        self.clear_wake();
        if wake.kind == WakeKind::Remove {
            // Whatever became of its node since: a finished task's time is over.
            self.remove = matches!(self.task.status, TaskStatus::Done | TaskStatus::Failed);
            return;
        }
        let loaded = self.here();
        let Some(node) = loaded.process.nodes.get(&self.task.node) else {
            return;
        };
        match wake.kind {
            WakeKind::Delay => {
                if let NodeKind::Delay(delay) = &node.kind {
                    self.goto(&delay.next, "delay");
                }
            }
            WakeKind::Release => {
                // A summary of folded tasks starts from where it waited (the start).
                self.task.status = TaskStatus::Ready;
                self.event(EventKind::Modified {
                    keys: vec!["folded".into(), "folded_count".into()],
                    source: "rate limit: the window ended".into(),
                });
            }
            WakeKind::Retry => {
                if matches!(node.kind, NodeKind::ApiCall(_)) {
                    self.task.status = TaskStatus::Ready;
                }
            }
            WakeKind::TimeLimit => {
                if let Some(limit) = &node.time_limit {
                    self.goto(&limit.target, "timeout");
                }
            }
            WakeKind::Remove => {} // above
        }
    }

    /// Runs the node the task is in.
    async fn advance(&mut self) -> Result<()> {
        let loaded = self.here();
        let Some(node) = loaded.process.nodes.get(&self.task.node) else {
            let at = self.task.node.clone();
            self.event(EventKind::Error {
                tag: "no_node".into(),
                description: format!("node `{at}` is not in the process (was it updated?)"),
            });
            self.stop(TaskStatus::Failed);
            return Ok(());
        };
        self.moves += 1;
        let max = self.loaded.process.settings.max_steps;
        if self.moves > max {
            let description = format!(
                "loop protection: the task passed {max} nodes without waiting; stopped at `{}`",
                node.id
            );
            if self.loop_tripped || node.kind.on_error().is_none() {
                self.event(EventKind::Error {
                    tag: "loop_protection".into(),
                    description,
                });
                self.stop(TaskStatus::Failed);
            } else {
                // The error route gets its own allowance; tripping again stops the task.
                self.loop_tripped = true;
                self.moves = 0;
                self.fail("node", "hardware", "loop_protection", description, None);
            }
            return Ok(());
        }
        if !matches!(
            node.kind,
            NodeKind::Condition { .. }
                | NodeKind::SetParam { .. }
                | NodeKind::WaitCallback { .. }
                | NodeKind::Escalation { .. }
                | NodeKind::ApiCall(_)
                | NodeKind::Reply { .. }
        ) {
            // Something happened on the way back: a fresh wait. (A call that succeeds
            // clears it too; one that fails and comes back does not, so a stranger's
            // rejected code cannot postpone a refresh; nor does a reply telling them.)
            self.resume = None;
        }
        match &node.kind {
            NodeKind::Start(kind) => self.start(kind)?,
            NodeKind::Final(kind) => self.final_node(kind)?,
            NodeKind::Condition(kind) => self.condition(kind)?,
            NodeKind::SetParam(kind) => self.set_param(kind)?,
            NodeKind::Delay(kind) => self.delay(kind)?,
            NodeKind::ApiCall(kind) => self.api_call(kind).await?,
            NodeKind::Escalation(kind) => self.escalation(kind)?,
            NodeKind::CopyTask(kind) => self.copy_task(kind)?,
            NodeKind::ModifyTask(kind) => self.modify_task(kind)?,
            NodeKind::Sum(kind) => self.sum(kind)?,
            NodeKind::CallProcess(kind) => self.call_process(kind)?,
            NodeKind::Reply(kind) => self.reply(kind)?,
            NodeKind::WaitCallback(_) => self.wait_callback()?,
            NodeKind::Code(kind) => self.code(kind)?,
            NodeKind::Queue(queue) => self.queue(queue).await?,
            NodeKind::GetTask(kind) => self.get_task(kind).await?,
        }
        Ok(())
    }

    /// Writes everything this step did as one batch.
    async fn commit(&mut self) -> Result<()> {
        if self.remove {
            return self.commit_removal().await;
        }
        let mut batch = std::mem::take(&mut self.batch);
        // Its counters, a history record, the ready mark and the task: room for all.
        batch.ops.reserve(self.counts.0.len() + 4);
        let moved = self.moved_nodes();
        self.push_counts(&mut batch);
        let events = std::mem::take(&mut self.events);
        if !events.is_empty() {
            let mut secrets = std::mem::take(&mut self.revealed);
            mask::secret_values(
                &self.loaded.process,
                &self.task.secret_keys,
                &self.task.data,
                &mut secrets,
            );
            let mut events = events;
            for event in &mut events {
                mask_event(&mut event.kind, &secrets);
            }
            let count = events.len() as u64;
            let bounds = self.loaded.process.settings.history;
            if let Some(trim) = self.rt.trim_history(&self.task, count, &bounds, self.now)? {
                batch.push(trim);
            }
            batch.push(Op::History {
                task: self.task.id,
                seq: self.task.history_len,
                events,
            });
            self.task.history_len += count;
            self.revealed = secrets;
        }
        self.task.changed = self.now;
        if self.task.status == TaskStatus::Ready {
            batch.push(Op::SetReady(self.task.id));
        } else if !self.born {
            batch.push(Op::ClearReady(self.task.id));
        }
        // The task goes into the batch, not a copy of it, and comes back after the commit.
        let put = batch.ops.len();
        let stand_in = vacant(&self.task);
        let task = std::mem::replace(&mut self.task, stand_in);
        batch.push(Op::PutTask(Box::new(task)));
        self.write(batch, &moved, Some(put)).await
    }
}

impl Step<'_> {
    /// Removes the task (its `keep` is over, or was `0`): what this step did besides
    /// (messages read, counter moves, tasks it created or replied to) is committed with
    /// the removal, as one batch; its own history events go with it.
    async fn commit_removal(&mut self) -> Result<()> {
        let mut batch = std::mem::take(&mut self.batch);
        self.counts.add(&self.task.node, -1, 0);
        let moved = self.moved_nodes();
        self.push_counts(&mut batch);
        self.events.clear();
        if let Some(wake) = self.task.wake.take() {
            batch.push(Op::ClearTimer(TimerKey {
                due: wake.at,
                task: self.task.id,
            }));
        }
        crate::retention::removal(&self.task, &mut batch);
        self.write(batch, &moved, None).await?;
        self.rt.metrics.task_removed();
        Ok(())
    }

    /// The step's counter moves, as ops of its batch.
    fn push_counts(&mut self, batch: &mut Batch) {
        for (node, now, total) in std::mem::take(&mut self.counts).0 {
            if now != 0 || total != 0 {
                batch.push(Op::Count {
                    process: self.task.process,
                    node,
                    now,
                    total,
                });
            }
        }
    }

    /// Commits the step's batch and, once it is committed, does what waited on that:
    /// takes and claims are settled, alerts checked, the door answered, new tasks
    /// scheduled. `moved` are the alerting nodes the batch moves counters of; `put`,
    /// the op that holds the step's task, which comes back (whatever the outcome).
    async fn write(&mut self, batch: Batch, moved: &[String], put: Option<usize>) -> Result<()> {
        // A door's step is the door's create: answered after a flush, and refused whole.
        let linger = if self.born { Linger::No } else { Linger::May };
        let (committed, task) = self
            .rt
            .commit_giving_back(batch, self.durable, put, linger)
            .await;
        debug_assert!(
            put.is_none() || task.is_some(),
            "a step's task did not come back"
        );
        if let Some(task) = task {
            self.task = *task;
        }
        // A queue node this task entered is counted now (or the commit failed).
        self.entering = None;
        self.give_back_claims();
        committed?;
        self.took.committed();
        self.note_queued();
        self.release_claim();
        // Everything the engine must be told of goes before the one wait left (an
        // alert's decision waits for a lock): a door's future dropped there (its client
        // went away) must not leave a task ready that the engine never hears of.
        self.send_answer();
        self.rt
            .metrics
            .task_created(std::mem::take(&mut self.created));
        for task in std::mem::take(&mut self.schedule) {
            self.rt.schedule_from_engine(task);
        }
        if self.born {
            // A task stepped at its door: the engine takes it from here.
            if self.task.status == TaskStatus::Ready {
                self.rt.schedule_from_engine(self.task.id);
            } else if let Some(wake) = self.task.wake {
                self.rt.hint_timer(wake.at);
            }
        }
        self.called_out = false;
        // This step is committed: an alert that cannot be decided now fails nothing (the
        // next step that moves tasks at its node decides again).
        if let Err(e) = self.rt.check_alerts(&self.loaded, moved).await {
            tracing::error!(
                process = self.loaded.record.id,
                error = %e,
                "an alert could not be decided; the next move at its node decides again"
            );
        }
        Ok(())
    }
}

impl Step<'_> {
    /// Nodes this step moved tasks in or out of, that have an `alert`.
    fn moved_nodes(&self) -> Vec<String> {
        self.counts
            .0
            .iter()
            .filter(|(node, now, _)| {
                *now != 0
                    && self
                        .loaded
                        .process
                        .nodes
                        .get(node)
                        .is_some_and(|n| n.alert.is_some())
            })
            .map(|(node, ..)| node.clone())
            .collect()
    }

    /// Once committed: answers a door waiting for this task, with what a `reply` node
    /// said, or with the task's data when it stopped at a final node or failed.
    fn send_answer(&mut self) {
        if !self.rt.answers.wanted(self.task.id) {
            return;
        }
        let (node, data, error) = match self.answer.take() {
            Some(said) => said,
            None => match self.task.status {
                TaskStatus::Done | TaskStatus::Failed => (
                    self.task.node.clone(),
                    crate::mask::mask_data(
                        &self.loaded.process,
                        &self.task.secret_keys,
                        &self.task.data,
                    ),
                    self.task.status == TaskStatus::Failed,
                ),
                TaskStatus::Ready | TaskStatus::Waiting => return,
            },
        };
        self.rt.answers.answer(crate::Answer {
            task: self.task.id,
            node,
            status: self.task.status,
            data,
            error,
        });
    }
}

fn mask_event(kind: &mut EventKind, secrets: &[String]) {
    match kind {
        EventKind::ApiRequest { url, outcome, .. } => {
            mask::mask_in_place(url, secrets);
            // A borrowed outcome is a constant (`ok`), which holds no secret.
            if let std::borrow::Cow::Owned(text) = outcome {
                mask::mask_in_place(text, secrets);
            }
        }
        EventKind::Error { description, .. } => mask::mask_in_place(description, secrets),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step that took a task from a queue and ends without its commit gives it back:
    /// no longer held, and on the queue's list again for the next take.
    #[test]
    fn a_take_not_committed_is_given_back_to_the_queue() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store =
            conveyor_store::open(dir.path(), Default::default()).unwrap_or_else(|e| panic!("{e}"));
        let rt = Runtime::new(
            store,
            std::sync::Arc::new(crate::ManualClock::new(0)),
            crate::Settings::default(),
        );
        rt.queues.listed(1, "q", std::iter::empty(), true);
        let took = |task: u64| Took {
            process: 1,
            queue: "q".into(),
            entered: 5,
            task,
        };
        if let Ok(mut taken) = rt.taken.lock() {
            taken.extend([7, 8]);
        }
        // Committed: the take holds.
        let mut committed = Taken {
            rt: &rt,
            tasks: vec![took(8)],
        };
        committed.committed();
        drop(committed);
        // Not committed: given back.
        drop(Taken {
            rt: &rt,
            tasks: vec![took(7)],
        });
        let held: Vec<u64> = rt
            .taken
            .lock()
            .map(|t| t.iter().copied().collect())
            .unwrap_or_default();
        assert_eq!(held, vec![8]);
        assert_eq!(rt.queues.next(1, "q", false), Some((5, 7)));
        assert_eq!(rt.queues.next(1, "q", false), None);
    }

    /// A runtime over a fresh store of `kind` in a temporary directory (removed when the
    /// returned guard is dropped), its clock at 1 s.
    pub(super) fn runtime_on(kind: conveyor_store::StoreKind) -> (tempfile::TempDir, Arc<Runtime>) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let options = conveyor_store::StoreOptions {
            kind,
            ..Default::default()
        };
        let store = conveyor_store::open(dir.path(), options).unwrap_or_else(|e| panic!("{e}"));
        let rt = Runtime::new(
            store,
            Arc::new(crate::ManualClock::new(1_000)),
            crate::Settings::default(),
        );
        (dir, rt)
    }

    /// A step's task goes into its batch and comes back after the commit, whichever way
    /// the batch was committed: on the step's thread (the log store, idle), through the
    /// committer (sled; or durable), or failing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_committed_task_comes_back_whichever_way_it_was_committed() {
        for (kind, durable, in_place) in [
            (conveyor_store::StoreKind::Log, false, true),
            (conveyor_store::StoreKind::Log, true, false),
            (conveyor_store::StoreKind::Sled, false, false),
        ] {
            let (_dir, rt) = runtime_on(kind);
            let yaml =
                "process: p\nnodes:\n  start: { type: start, next: end }\n  end: { type: final }\n";
            rt.clone_process("p.yaml", yaml, Some("p"), Map::new())
                .unwrap_or_else(|e| panic!("{e}"));
            let created = rt
                .add_task("@p", Some("r"), Map::new())
                .unwrap_or_else(|e| panic!("{e}"));
            let mut task = rt
                .store
                .task(created.id)
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("task {} is not stored", created.id));
            task.data.insert("k".into(), serde_json::json!("v"));
            task.node = "end".into();
            // The log store's background flusher holds its writer a moment every 500 ms:
            // a commit that meets it goes to the committer, so it is tried a few times.
            for attempt in 0..20 {
                let before = rt.commits_in_place();
                let mut batch = Batch::default();
                batch.push(Op::ClearReady(task.id));
                batch.push(Op::PutTask(Box::new(task.clone())));
                let (result, back) = rt
                    .commit_giving_back(batch, durable, Some(1), Linger::May)
                    .await;
                result.unwrap_or_else(|e| panic!("[{kind:?}] {e}"));
                assert_eq!(
                    back.as_deref(),
                    Some(&task),
                    "[{kind:?}, durable {durable}]"
                );
                let here = rt.commits_in_place() > before;
                assert!(
                    in_place || !here,
                    "[{kind:?}, durable {durable}] committed in place"
                );
                if here == in_place {
                    break;
                }
                assert!(attempt < 19, "[{kind:?}] never committed in place");
            }
            let stored = rt.store.task(task.id).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(stored.as_ref(), Some(&task), "[{kind:?}]");
            // A failed commit (the ref is another task's) gives the task back too.
            let mut other = task.clone();
            other.id += 100;
            let mut batch = Batch::default();
            batch.push(Op::InsertRef {
                process: task.process,
                reference: "r".into(),
                task: other.id,
            });
            batch.push(Op::PutTask(Box::new(other.clone())));
            let (result, back) = rt
                .commit_giving_back(batch, durable, Some(1), Linger::May)
                .await;
            assert!(result.is_err(), "[{kind:?}] a taken ref was given twice");
            assert_eq!(
                back.as_deref(),
                Some(&other),
                "[{kind:?}, durable {durable}]"
            );
        }
    }

    /// A direct URL's create whose caller stops waiting before the committer answers
    /// (its HTTP client went away, and the server dropped the request's future) is
    /// still handed to the engine once it is applied: the task, ready at a node a door
    /// does not run, is queued, not left for the next start to find.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_create_whose_caller_stopped_waiting_still_reaches_the_engine() {
        for kind in [
            conveyor_store::StoreKind::Log,
            conveyor_store::StoreKind::Sled,
        ] {
            let (_dir, rt) = runtime_on(kind);
            let yaml = "process: p\nnodes:\n  start: { type: start, next: call }\n  call: { type: api_call, url: \"http://127.0.0.1:9/x\", next: end, on_error: end }\n  end: { type: final }\n";
            let process = rt
                .clone_process("p.yaml", yaml, Some("p"), Map::new())
                .unwrap_or_else(|e| panic!("{e}"))
                .id;
            // Polled once (the batch goes to the committer, which applies and flushes
            // it on its thread), then dropped.
            let mut create = Box::pin(rt.direct_url_grouped(process, Some("r"), Map::new(), false));
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            let polled = create.as_mut().poll(&mut cx);
            assert!(
                polled.is_pending(),
                "{kind:?}: the create was answered at once"
            );
            drop(create);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            let queued = loop {
                let task = rt
                    .store
                    .task_by_ref(process, "r")
                    .unwrap_or_else(|e| panic!("{e}"));
                let queued = task.as_ref().is_some_and(|task| {
                    rt.queue
                        .lock()
                        .is_ok_and(|queue| queue.queued.contains(&task.id))
                });
                if queued || std::time::Instant::now() > deadline {
                    break task.map(|task| (task.node, queued));
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            };
            assert_eq!(
                queued,
                Some(("call".to_string(), true)),
                "{kind:?}: the task as stored, and whether the engine was told of it"
            );
        }
    }
}
