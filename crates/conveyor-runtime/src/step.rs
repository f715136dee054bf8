//! One step of one task: read its inbox and timer, run nodes in memory until it waits,
//! ends, or is about to call out a second time, then commit everything as one batch.

use std::sync::Arc;

use conveyor_model::{
    ApiCall, Cast, Check, CompareOp, CopyTask, DurationSpec, FinalStatus, NodeKind, Wait,
};
use conveyor_store::{
    Batch, Caller, EventKind, HistoryEvent, InboxMessage, Op, TaskRecord, TaskStatus, TimerKey,
    Wake, WakeKind,
};
use conveyor_template::{ProcessId, Template, ValueTemplate};
use indexmap::IndexMap;
use serde_json::{Map, Value};

use crate::env::{Root, StoreEnv};
use crate::http::{self, Failure};
use crate::{LoadedProcess, Result, Runtime, RuntimeError, mask};

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
    counts: IndexMap<String, (i64, u64)>,
    events: Vec<HistoryEvent>,
    /// Tasks to put in the queue once the batch is committed.
    schedule: Vec<u64>,
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
    let now = rt.now();
    let mut step = Step {
        rt,
        loaded,
        task,
        now,
        batch: Batch::default(),
        counts: IndexMap::new(),
        events: Vec::new(),
        schedule: Vec::new(),
        moves: 0,
        revealed: Vec::new(),
        called_out: false,
        created: 0,
        loop_tripped: false,
        renders: std::cell::Cell::new(0),
        resume: None,
        remove: false,
    };
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
    step.commit().await?;
    Ok(Outcome {
        wake: step.task.wake,
    })
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
                reference: self.task.reference.clone(),
                process: self.task.process,
                node: self.task.node.clone(),
                prev_node: self.task.prev_node.clone(),
                created: self.task.created,
                changed: self.task.changed,
            },
            self.now,
        );
        env.seed
            .set(env.seed.get() ^ renders.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        env
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
        self.render(template).map(|v| http::text_of(&v))
    }

    /// Moves the task to `target`; a timer of the node it leaves is dropped.
    fn goto(&mut self, target: &str, via: &str) {
        let from = std::mem::replace(&mut self.task.node, target.to_string());
        self.clear_wake();
        let entry = self.counts.entry(from.clone()).or_default();
        entry.0 -= 1;
        let entry = self.counts.entry(target.to_string()).or_default();
        entry.0 += 1;
        entry.1 += 1;
        self.task.prev_node = Some(from.clone());
        self.task.entered = self.now;
        self.rt.metrics.transitions(1);
        self.task.moves += 1;
        self.task.attempt = 0;
        self.task.status = TaskStatus::Ready;
        self.event(EventKind::Entered {
            from,
            via: via.to_string(),
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
            match self.duration(&limit.after) {
                Ok(after) => {
                    let at = self.task.entered.saturating_add(after);
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
            status: status.as_str().to_string(),
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
    fn recover(&mut self, to: Option<String>, data: Map<String, Value>, source: String) {
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
            crate::Recovery::Goto(node) => {
                self.event(EventKind::Recovered {
                    action: "goto".into(),
                    to: node.clone(),
                    source,
                });
                self.goto(&node, "goto");
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
                        NodeKind::WaitCallback { next, .. } => {
                            self.goto(next, "callback");
                            self.resume = resume;
                        }
                        NodeKind::Escalation {
                            next: Some(next), ..
                        } => {
                            self.goto(next, "modify");
                            self.resume = resume;
                        }
                        _ => {}
                    }
                }
            }
            InboxMessage::Fold { data } => {
                crate::fold::append(&mut self.task.data, data);
            }
            InboxMessage::Recover { to, data, source } => self.recover(to, data, source),
            InboxMessage::Reply { data, error } => {
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
                self.task.data.extend(data);
                self.event(EventKind::Modified {
                    keys,
                    source: "reply".into(),
                });
                if let (true, Some(node)) = (waiting, node)
                    && let NodeKind::CallProcess { next, .. } = &node.kind
                {
                    if error {
                        self.task.status = TaskStatus::Ready;
                        self.fail(
                            "rpc",
                            "software",
                            "rpc_error_reply",
                            "the called process replied with an error".into(),
                            None,
                        );
                    } else {
                        self.goto(next, "reply");
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
                if let NodeKind::Delay { next, .. } = &node.kind {
                    self.goto(next, "delay");
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
        ) {
            // Something happened on the way back: a fresh wait. (A call that succeeds
            // clears it too; one that fails and comes back does not, so a stranger's
            // rejected code cannot postpone a refresh.)
            self.resume = None;
        }
        match &node.kind {
            NodeKind::Start { next } => self.goto(next, "next"),
            NodeKind::Final { status, .. } => self.stop(match status {
                FinalStatus::Success => TaskStatus::Done,
                FinalStatus::Error => TaskStatus::Failed,
            }),
            NodeKind::Condition {
                branches,
                otherwise,
                ..
            } => {
                let mut target = None;
                'branches: for (i, branch) in branches.iter().enumerate() {
                    for check in &branch.when {
                        match self.check(check) {
                            Ok(true) => {}
                            Ok(false) => continue 'branches,
                            Err(message) => {
                                self.fail(
                                    "condition",
                                    "software",
                                    "condition_error",
                                    message,
                                    None,
                                );
                                return Ok(());
                            }
                        }
                    }
                    let label = branch
                        .label
                        .clone()
                        .unwrap_or_else(|| format!("branch {}", i + 1));
                    target = Some((branch.next.clone(), label));
                    break;
                }
                let (target, via) = target.unwrap_or_else(|| (otherwise.clone(), "else".into()));
                self.goto(&target, &via);
            }
            NodeKind::SetParam {
                set, render, next, ..
            } => {
                let mut values = Vec::with_capacity(set.len());
                let mut tainted = Vec::new();
                for (key, value) in set {
                    let before = self.revealed.len();
                    let rendered = match self.render_value(&value.value) {
                        Ok(v) => v,
                        Err(message) => {
                            self.fail(
                                "set_param",
                                "software",
                                "set_param_error",
                                format!("`{key}`: {message}"),
                                None,
                            );
                            return Ok(());
                        }
                    };
                    let cast = match value.cast {
                        Some(cast) => match cast_value(rendered, cast) {
                            Ok(v) => v,
                            Err(message) => {
                                self.fail(
                                    "set_param",
                                    "software",
                                    "set_param_bad_type",
                                    format!("`{key}`: {message}"),
                                    None,
                                );
                                return Ok(());
                            }
                        },
                        None => rendered,
                    };
                    if mask::contains_secret(&cast, &self.revealed[before..]) {
                        tainted.push(key.clone());
                    }
                    values.push((key.clone(), cast));
                }
                // Handlebars message bodies: over the task's data as it is before this
                // node (as `set` sees it), with `with`'s values rendered first.
                for (key, value) in render {
                    let before = self.revealed.len();
                    let mut context = self.task.data.clone();
                    for (name, template) in &value.with {
                        match self.render_value(template) {
                            Ok(v) => {
                                context.insert(name.clone(), v);
                            }
                            Err(message) => {
                                self.fail(
                                    "set_param",
                                    "software",
                                    "set_param_error",
                                    format!("`{key}`: `with.{name}`: {message}"),
                                    None,
                                );
                                return Ok(());
                            }
                        }
                    }
                    let rendered = match value.template.render(Value::Object(context)) {
                        Ok(text) => Value::String(text),
                        Err(e) => {
                            self.fail(
                                "set_param",
                                "software",
                                "set_param_error",
                                format!("`{key}`: {e}"),
                                None,
                            );
                            return Ok(());
                        }
                    };
                    let cast = match value.cast {
                        Some(cast) => match cast_value(rendered, cast) {
                            Ok(v) => v,
                            Err(message) => {
                                self.fail(
                                    "set_param",
                                    "software",
                                    "set_param_bad_type",
                                    format!("`{key}`: {message}"),
                                    None,
                                );
                                return Ok(());
                            }
                        },
                        None => rendered,
                    };
                    if mask::contains_secret(&cast, &self.revealed[before..]) {
                        tainted.push(key.clone());
                    }
                    values.push((key.clone(), cast));
                }
                self.taint(tainted);
                // A set that would make the task larger than the limit fails instead.
                let added: usize = values
                    .iter()
                    .map(|(k, v)| k.len() + serde_json::to_vec(v).map(|b| b.len()).unwrap_or(0))
                    .sum();
                let size = serde_json::to_vec(&self.task.data)
                    .map(|b| b.len())
                    .unwrap_or(0)
                    + added;
                if size > crate::ops::MAX_TASK_BYTES {
                    self.fail(
                        "set_param",
                        "software",
                        "task_size_overflow_limit",
                        format!(
                            "the task would be about {size} bytes; the limit is {}",
                            crate::ops::MAX_TASK_BYTES
                        ),
                        None,
                    );
                    return Ok(());
                }
                self.task.data.extend(values);
                self.goto(next, "next");
            }
            NodeKind::Delay { wait, next, .. } => {
                let due = match wait {
                    Wait::For(spec) => self.duration(spec).map(|d| self.now + d),
                    Wait::Until(t) => self.render(t).and_then(|v| {
                        let seconds = match &v {
                            Value::Number(n) => n.as_f64(),
                            Value::String(s) => s.trim().parse::<f64>().ok(),
                            _ => None,
                        };
                        seconds
                            .map(|s| (s * 1000.0) as i64)
                            .ok_or_else(|| format!("`{}` is not a unix time", http::text_of(&v)))
                    }),
                };
                let max = self.loaded.process.settings.max_wait.as_millis() as i64;
                let due = due.and_then(|due| {
                    if due.saturating_sub(self.now) > max {
                        Err(format!(
                            "the delay would end after the {} this process allows (settings.max_wait)",
                            conveyor_model::format_duration(self.loaded.process.settings.max_wait)
                        ))
                    } else {
                        Ok(due)
                    }
                });
                match due {
                    Ok(due) if due <= self.now => self.goto(next, "delay"),
                    Ok(due) => self.wait(Some((due, WakeKind::Delay)), "delay"),
                    Err(message) => self.fail("delay", "software", "delay_error", message, None),
                }
            }
            NodeKind::ApiCall(api) => self.api_call(api).await?,
            NodeKind::Escalation { copy, .. } => {
                for c in copy {
                    if let Err((tag, message)) = self.copy(c, None) {
                        self.fail("copy_task", "software", tag, message, None);
                        return Ok(());
                    }
                }
                self.wait(None, "escalation");
            }
            NodeKind::CopyTask { copy, next, .. } => match self.copy(copy, None) {
                Ok(_) => self.goto(next, "next"),
                Err((tag, message)) => self.fail("copy_task", "software", tag, message, None),
            },
            NodeKind::ModifyTask {
                process,
                reference,
                data,
                next,
                ..
            } => match self.modify_other(process, reference, data) {
                Ok(()) => self.goto(next, "next"),
                Err((tag, message)) => self.fail("modify_task", "software", tag, message, None),
            },
            NodeKind::CallProcess { process, data, .. } => {
                let copy = CopyTask {
                    process: process.clone(),
                    reference: None,
                    data: data.clone(),
                };
                let caller = Caller {
                    task: self.task.id,
                    process: self.task.process,
                };
                match self.copy(&copy, Some(caller)) {
                    Ok(target) => self.wait(None, &format!("reply of process {target}")),
                    Err((tag, message)) => self.fail("rpc", "software", tag, message, None),
                }
            }
            NodeKind::Reply {
                data, error, next, ..
            } => {
                let rendered = match self.render_value(data) {
                    Ok(Value::Object(map)) => map,
                    Ok(_) => Map::new(),
                    Err(message) => {
                        self.fail("reply", "software", "reply_error", message, None);
                        return Ok(());
                    }
                };
                if let Some(caller) = self.task.caller.clone() {
                    self.batch.push(Op::Inbox {
                        task: caller.task,
                        seq: self.rt.store.next_task_id()?,
                        message: InboxMessage::Reply {
                            data: rendered,
                            error: *error,
                        },
                    });
                    self.batch.push(Op::SetReady(caller.task));
                    self.schedule.push(caller.task);
                }
                self.goto(next, "next");
            }
            NodeKind::WaitCallback { .. } => self.wait(None, "callback"),
        }
        Ok(())
    }

    /// One check of a condition. Types are strict, as in Corezoid: `10` and `"10"` differ.
    fn check(&mut self, check: &Check) -> std::result::Result<bool, String> {
        let data = Value::Object(std::mem::take(&mut self.task.data));
        let left = check.param.lookup(&data).cloned();
        if let Value::Object(map) = data {
            self.task.data = map;
        }
        let right = self.render(&check.value)?;
        let Some(left) = left else {
            // A missing param matches nothing (`not_eq ""` means "present and non-empty").
            return Ok(false);
        };
        let right_text = http::text_of(&right);
        Ok(match check.cast {
            Cast::String => {
                let Value::String(left) = &left else {
                    return Ok(false);
                };
                match check.op {
                    CompareOp::Eq => *left == right_text,
                    CompareOp::NotEq => *left != right_text,
                    CompareOp::More => left.as_str() > right_text.as_str(),
                    CompareOp::Less => left.as_str() < right_text.as_str(),
                    CompareOp::MoreOrEq => left.as_str() >= right_text.as_str(),
                    CompareOp::LessOrEq => left.as_str() <= right_text.as_str(),
                    CompareOp::Regexp => match &check.regex {
                        Some(regex) => regex.is_match(left),
                        None => conveyor_model::compile_regex(&right_text)?.is_match(left),
                    },
                }
            }
            Cast::Number => {
                let Some(left) = left.as_f64() else {
                    return Ok(false);
                };
                let right = match &right {
                    Value::Number(n) => n.as_f64(),
                    _ => right_text.trim().parse::<f64>().ok(),
                }
                .ok_or_else(|| format!("`{right_text}` is not a number"))?;
                match check.op {
                    CompareOp::Eq => left == right,
                    CompareOp::NotEq => left != right,
                    CompareOp::More => left > right,
                    CompareOp::Less => left < right,
                    CompareOp::MoreOrEq => left >= right,
                    CompareOp::LessOrEq => left <= right,
                    CompareOp::Regexp => false,
                }
            }
            Cast::Boolean => {
                let Value::Bool(left) = left else {
                    return Ok(false);
                };
                let right = match right_text.trim() {
                    "true" => true,
                    "false" => false,
                    other => return Err(format!("`{other}` is not a boolean")),
                };
                match check.op {
                    CompareOp::Eq => left == right,
                    CompareOp::NotEq => left != right,
                    _ => false,
                }
            }
            Cast::Object | Cast::Array => {
                let right: Value = match right {
                    Value::String(s) => {
                        serde_json::from_str(&s).map_err(|_| format!("`{s}` is not JSON"))?
                    }
                    other => other,
                };
                let same_kind = matches!(
                    (&left, check.cast),
                    (Value::Object(_), Cast::Object) | (Value::Array(_), Cast::Array)
                );
                match check.op {
                    CompareOp::Eq => same_kind && left == right,
                    CompareOp::NotEq => same_kind && left != right,
                    _ => false,
                }
            }
        })
    }

    /// Creates a task in another process (copy_task, escalation copies, call_process).
    /// Returns the target process id.
    fn copy(
        &mut self,
        copy: &CopyTask,
        caller: Option<Caller>,
    ) -> std::result::Result<u64, (&'static str, String)> {
        let target = self
            .render_text(&copy.process)
            .map_err(|m| ("copy_task_bind_error", m))?;
        let loaded = self.resolve_other(&target, "copy_task_bind_error")?;
        let reference = match &copy.reference {
            Some(r) => Some(
                self.render_text(r)
                    .map_err(|m| ("copy_task_bind_error", m))?,
            ),
            None => None,
        };
        let before = self.revealed.len();
        let data = match &copy.data {
            Some(d) => match self
                .render_value(d)
                .map_err(|m| ("copy_task_bind_error", m))?
            {
                Value::Object(map) => map,
                other => {
                    return Err((
                        "copy_task_bind_error",
                        format!("the data is not an object: {other}"),
                    ));
                }
            },
            None => self.task.data.clone(),
        };
        // What is secret here stays secret in the copy.
        let secret_keys: Vec<String> = data
            .iter()
            .filter(|(k, v)| match &copy.data {
                None => mask::is_secret(&self.loaded.process, &self.task.secret_keys, k),
                Some(_) => {
                    let mut secrets = self.revealed[before..].to_vec();
                    mask::secret_values(
                        &self.loaded.process,
                        &self.task.secret_keys,
                        &self.task.data,
                        &mut secrets,
                    );
                    mask::contains_secret(v, &secrets)
                }
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut batch = Batch::default();
        let task = self
            .rt
            .new_task(
                &loaded,
                reference.as_deref(),
                data,
                caller,
                self.now,
                &mut batch,
            )
            .map(|mut task| {
                task.secret_keys = secret_keys;
                task
            })
            .map_err(|e| match e {
                e @ RuntimeError::DuplicateRef { .. } => ("not_unical_ref", e.to_string()),
                other => ("copy_task_refused", other.to_string()),
            })?;
        self.batch.ops.extend(batch.ops);
        self.schedule.push(task.id);
        self.created += 1;
        self.event(EventKind::Copied {
            process: loaded.record.id,
            task: task.id,
        });
        Ok(loaded.record.id)
    }

    fn resolve_other(
        &self,
        name: &str,
        bind_tag: &'static str,
    ) -> std::result::Result<Arc<LoadedProcess>, (&'static str, String)> {
        if ProcessId::parse(name).is_none() {
            return Err((bind_tag, format!("`{name}` is not a process id or @alias")));
        }
        self.rt
            .resolve(name)
            .map_err(|e| ("process_not_found", e.to_string()))
    }

    fn modify_other(
        &mut self,
        process: &Template,
        reference: &Template,
        data: &ValueTemplate,
    ) -> std::result::Result<(), (&'static str, String)> {
        let target = self
            .render_text(process)
            .map_err(|m| ("modify_task_bind_error", m))?;
        let loaded = self.resolve_other(&target, "modify_task_bind_error")?;
        let reference = self
            .render_text(reference)
            .map_err(|m| ("modify_task_bind_error", m))?;
        let data = match self
            .render_value(data)
            .map_err(|m| ("modify_task_bind_error", m))?
        {
            Value::Object(map) => map,
            other => {
                return Err((
                    "modify_task_bind_error",
                    format!("the data is not an object: {other}"),
                ));
            }
        };
        let task = self
            .rt
            .store
            .task_by_ref(loaded.record.id, &reference)
            .map_err(|e| ("modify_task_error", e.to_string()))?
            .ok_or_else(|| {
                (
                    "task_not_found",
                    format!("no task with ref `{reference}` in process {target}"),
                )
            })?;
        let seq = self
            .rt
            .store
            .next_task_id()
            .map_err(|e| ("modify_task_error", e.to_string()))?;
        self.batch.push(Op::Inbox {
            task: task.id,
            seq,
            message: InboxMessage::Modify {
                data,
                source: format!("process {} task {}", self.task.process, self.task.id),
            },
        });
        self.batch.push(Op::SetReady(task.id));
        self.schedule.push(task.id);
        Ok(())
    }

    async fn api_call(&mut self, api: &ApiCall) -> Result<()> {
        // A previous call's result is decided: commit it before the next side effect.
        if self.called_out {
            self.commit().await?;
        }
        let request = match self.build_request(api) {
            Ok(r) => r,
            Err(message) => {
                let failure = Failure::bind(message);
                self.fail(
                    "api",
                    failure.type_error,
                    failure.tag,
                    failure.description,
                    None,
                );
                return Ok(());
            }
        };
        let mut secrets = self.revealed.clone();
        mask::secret_values(
            &self.loaded.process,
            &self.task.secret_keys,
            &self.task.data,
            &mut secrets,
        );
        let shown_url = mask::mask_text(request.url.as_str(), &secrets);
        let method = request.method.as_str().to_string();
        let permit = match api.concurrency {
            Some(limit) => {
                let semaphore = self.rt.limit(self.task.process, &self.task.node, limit);
                semaphore.acquire_owned().await.ok()
            }
            None => None,
        };
        let (result, millis) = http::send(&self.rt.http, request, &api.success_codes).await;
        drop(permit);
        self.rt.metrics.api_call(match &result {
            Ok(reply) => Some(reply.status),
            Err(f) => f.http_code,
        });
        // Time has passed during the call.
        self.now = self.now.max(self.rt.now());
        self.called_out = true;
        self.task.attempt += 1;
        let attempt = self.task.attempt;
        let (status, outcome) = match &result {
            Ok(reply) => (Some(reply.status), "ok".to_string()),
            Err(f) => (
                f.http_code,
                format!("{}: {}", f.tag, mask::mask_text(&f.description, &secrets)),
            ),
        };
        self.event(EventKind::ApiRequest {
            method,
            url: shown_url,
            attempt,
            status,
            millis,
            outcome,
        });
        match result {
            Ok(reply) => {
                self.task
                    .data
                    .retain(|k, _| !k.starts_with("__conveyor_api_return_"));
                match &api.response {
                    Some(mapping) => {
                        let mut reply_data = Map::new();
                        reply_data.insert("body".into(), reply.body);
                        reply_data.insert("status".into(), Value::from(reply.status));
                        reply_data.insert("headers".into(), Value::Object(reply.headers));
                        let reply_data = Value::Object(reply_data);
                        let env = self.env();
                        let mut values = Vec::new();
                        for (key, template) in mapping {
                            match template.render(&reply_data, &env) {
                                Ok(v) => {
                                    // A secret echoed into a key that is not secret is cut out.
                                    let v = if mask::is_secret(
                                        &self.loaded.process,
                                        &self.task.secret_keys,
                                        key,
                                    ) {
                                        v
                                    } else {
                                        mask::mask_value(&v, &secrets)
                                    };
                                    values.push((key.clone(), v))
                                }
                                Err(e) => {
                                    drop(env);
                                    self.fail(
                                        "api",
                                        "software",
                                        "api_bad_answer",
                                        format!("response `{key}`: {e}"),
                                        Some(reply.status),
                                    );
                                    return Ok(());
                                }
                            }
                        }
                        drop(env);
                        self.task.data.extend(values);
                    }
                    None => {
                        // Refuse a reply that would make the task too large before it is
                        // merged (the task keeps its data as it was).
                        let size = serde_json::to_vec(&self.task.data)
                            .map(|v| v.len())
                            .unwrap_or(0)
                            + serde_json::to_vec(&reply.body)
                                .map(|v| v.len())
                                .unwrap_or(0);
                        if size > crate::ops::MAX_TASK_BYTES {
                            self.fail(
                                "api",
                                "software",
                                "api_task_size_overflow_limit",
                                format!(
                                    "the task would be about {size} bytes with the reply; the limit is {}",
                                    crate::ops::MAX_TASK_BYTES
                                ),
                                Some(reply.status),
                            );
                            return Ok(());
                        }
                        match reply.body {
                            Value::Object(map) => {
                                for (key, value) in map {
                                    let value = if mask::is_secret(
                                        &self.loaded.process,
                                        &self.task.secret_keys,
                                        &key,
                                    ) {
                                        value
                                    } else {
                                        mask::mask_value(&value, &secrets)
                                    };
                                    self.task.data.insert(key, value);
                                }
                            }
                            array => {
                                self.task.data.insert(
                                    "__conveyor_api_array__".into(),
                                    mask::mask_value(&array, &secrets),
                                );
                            }
                        }
                    }
                }
                let size = serde_json::to_vec(&self.task.data)
                    .map(|v| v.len())
                    .unwrap_or(0);
                if size > crate::ops::MAX_TASK_BYTES {
                    self.fail(
                        "api",
                        "software",
                        "api_task_size_overflow_limit",
                        format!("the task would be {size} bytes"),
                        Some(reply.status),
                    );
                    return Ok(());
                }
                self.task.attempt = 0;
                self.resume = None;
                self.goto(&api.next, "next");
            }
            Err(failure) => {
                if failure.transient
                    && let Some(retry) = &api.retry
                    && attempt < retry.attempts
                {
                    let backoff = retry.backoff.as_millis() as i64;
                    let delay = backoff
                        .saturating_mul(1 << (attempt - 1).min(20))
                        .min(retry.max.as_millis() as i64);
                    self.wait(
                        Some((self.now + delay, WakeKind::Retry)),
                        &format!("retry {} of {}", attempt + 1, retry.attempts),
                    );
                    return Ok(());
                }
                self.task.attempt = 0;
                if let Some(body @ Value::Object(_)) = &failure.body {
                    // A server may echo what it was sent: secrets are cut out first.
                    self.task.data.insert(
                        "__conveyor_api_return_body__".into(),
                        mask::mask_value(body, &secrets),
                    );
                }
                let description = mask::mask_text(&failure.description, &secrets);
                self.fail(
                    "api",
                    failure.type_error,
                    failure.tag,
                    description,
                    failure.http_code,
                );
            }
        }
        Ok(())
    }

    fn build_request(&mut self, api: &ApiCall) -> std::result::Result<http::Request, String> {
        let url_text = self.render_text(&api.url)?;
        let mut url = reqwest::Url::parse(url_text.trim()).map_err(|e| {
            format!(
                "`{}` is not a URL: {e}",
                mask::mask_text(&url_text, &self.revealed)
            )
        })?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(format!(
                "only http and https URLs are called, not `{}`",
                url.scheme()
            ));
        }
        if !api.query.is_empty() {
            let mut pairs = Vec::with_capacity(api.query.len());
            for (key, value) in &api.query {
                let v = self
                    .render_value(value)
                    .map_err(|m| format!("query `{key}`: {m}"))?;
                pairs.push((key.clone(), http::text_of(&v)));
            }
            url.query_pairs_mut().extend_pairs(pairs);
        }
        let mut headers = Vec::with_capacity(api.headers.len() + 1);
        for (name, template) in &api.headers {
            let value = self
                .render_text(template)
                .map_err(|m| format!("header `{name}`: {m}"))?;
            headers.push((name.clone(), value));
        }
        if let Some(key) = &api.idempotency_key {
            let value = self
                .render_text(key)
                .map_err(|m| format!("idempotency key: {m}"))?;
            headers.push((api.idempotency_header.clone(), value));
        }
        let body = match &api.body {
            Some(b) => Some((
                api.format,
                self.render_value(b).map_err(|m| format!("body: {m}"))?,
            )),
            None => None,
        };
        Ok(http::Request {
            method: api.method,
            url,
            headers,
            body,
            timeout: api.request_timeout,
            max_bytes: api.max_response_bytes,
        })
    }

    /// Writes everything this step did as one batch.
    async fn commit(&mut self) -> Result<()> {
        if self.remove {
            return self.commit_removal().await;
        }
        let mut batch = std::mem::take(&mut self.batch);
        for (node, (now, total)) in std::mem::take(&mut self.counts) {
            if now != 0 || total != 0 {
                batch.push(Op::Count {
                    process: self.task.process,
                    node,
                    now,
                    total,
                });
            }
        }
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
        batch.push(if self.task.status == TaskStatus::Ready {
            Op::SetReady(self.task.id)
        } else {
            Op::ClearReady(self.task.id)
        });
        batch.push(Op::PutTask(Box::new(self.task.clone())));
        self.rt.commit_step(batch).await?;
        self.rt
            .metrics
            .task_created(std::mem::take(&mut self.created));
        for task in std::mem::take(&mut self.schedule) {
            self.rt.schedule(task);
        }
        self.called_out = false;
        Ok(())
    }
}

impl Step<'_> {
    /// Removes the task (its `keep` is over, or was `0`): what this step did besides
    /// (messages read, counter moves, tasks it created or replied to) is committed with
    /// the removal, as one batch; its own history events go with it.
    async fn commit_removal(&mut self) -> Result<()> {
        let mut batch = std::mem::take(&mut self.batch);
        self.counts.entry(self.task.node.clone()).or_default().0 -= 1;
        for (node, (now, total)) in std::mem::take(&mut self.counts) {
            if now != 0 || total != 0 {
                batch.push(Op::Count {
                    process: self.task.process,
                    node,
                    now,
                    total,
                });
            }
        }
        self.events.clear();
        if let Some(wake) = self.task.wake.take() {
            batch.push(Op::ClearTimer(TimerKey {
                due: wake.at,
                task: self.task.id,
            }));
        }
        crate::retention::removal(&self.task, &mut batch);
        self.rt.commit_step(batch).await?;
        self.rt.metrics.task_removed();
        self.rt
            .metrics
            .task_created(std::mem::take(&mut self.created));
        for task in std::mem::take(&mut self.schedule) {
            self.rt.schedule(task);
        }
        self.called_out = false;
        Ok(())
    }
}

fn mask_event(kind: &mut EventKind, secrets: &[String]) {
    match kind {
        EventKind::ApiRequest { url, outcome, .. } => {
            *url = mask::mask_text(url, secrets);
            *outcome = mask::mask_text(outcome, secrets);
        }
        EventKind::Error { description, .. } => {
            *description = mask::mask_text(description, secrets)
        }
        _ => {}
    }
}

/// Converts a rendered value to the type a `set_param` asks for.
fn cast_value(value: Value, cast: Cast) -> std::result::Result<Value, String> {
    match (cast, value) {
        (Cast::String, Value::String(s)) => Ok(Value::String(s)),
        (Cast::String, other) => Ok(Value::String(http::text_of(&other))),
        (Cast::Number, Value::Number(n)) => Ok(Value::Number(n)),
        (Cast::Number, Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(|f| {
                if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 {
                    Some(Value::from(f as i64))
                } else {
                    serde_json::Number::from_f64(f).map(Value::Number)
                }
            })
            .ok_or_else(|| format!("`{s}` is not a number")),
        (Cast::Boolean, Value::Bool(b)) => Ok(Value::Bool(b)),
        (Cast::Boolean, Value::String(s)) => match s.trim() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            other => Err(format!("`{other}` is not a boolean")),
        },
        (Cast::Object, v @ Value::Object(_)) | (Cast::Array, v @ Value::Array(_)) => Ok(v),
        (Cast::Object | Cast::Array, Value::String(s)) => match serde_json::from_str::<Value>(&s) {
            Ok(v @ Value::Object(_)) if cast == Cast::Object => Ok(v),
            Ok(v @ Value::Array(_)) if cast == Cast::Array => Ok(v),
            _ => Err(format!(
                "`{s}` is not a JSON {}",
                if cast == Cast::Object {
                    "object"
                } else {
                    "array"
                }
            )),
        },
        (cast, other) => {
            let name = match cast {
                Cast::String => "a string",
                Cast::Number => "a number",
                Cast::Boolean => "a boolean",
                Cast::Object => "an object",
                Cast::Array => "an array",
            };
            Err(format!("cannot make {name} of {other}"))
        }
    }
}
