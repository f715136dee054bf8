//! The records the store keeps. They are serialized as JSON: readable with any tool, and
//! new optional fields can be added without a migration.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A process as stored: its definition text is kept whole, so what runs is exactly what
/// was cloned or updated.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcessRecord {
    pub id: u64,
    pub alias: Option<String>,
    /// The template or file it was cloned from.
    pub source: String,
    /// The YAML definition.
    pub definition: String,
    /// 1 when cloned, +1 on each update.
    pub version: u32,
    /// Milliseconds since the epoch.
    pub created: i64,
    #[serde(default)]
    pub updated: i64,
    /// Process-level values set at clone time (`--set key=value`), merged under each
    /// task's data.
    #[serde(default)]
    pub settings: serde_json::Map<String, Value>,
    /// The secret part of the process's direct URL (`/api/1/json/public/{id}/{hash}`).
    #[serde(default)]
    pub url_hash: Option<String>,
}

impl ProcessRecord {
    /// Version 1 of a new process, with its id.
    pub fn first_version(id: u64, new: NewProcess) -> ProcessRecord {
        ProcessRecord {
            id,
            alias: new.alias,
            source: new.source,
            definition: new.definition,
            version: 1,
            created: new.created,
            updated: new.created,
            settings: new.settings,
            url_hash: None,
        }
    }
}

/// A key of the task API: a login and a secret that signs requests.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApiKey {
    pub login: u64,
    pub name: String,
    pub secret: String,
    /// Processes the key may touch; all when empty.
    #[serde(default)]
    pub processes: Vec<u64>,
    pub created: i64,
}

/// What [`crate::Store::create_process`] needs.
#[derive(Debug, Clone)]
pub struct NewProcess {
    pub alias: Option<String>,
    pub source: String,
    pub definition: String,
    pub created: i64,
    pub settings: serde_json::Map<String, Value>,
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting for the engine to move it (new, woken, or in the middle of an API call).
    Ready,
    /// Held by a node: a delay, a callback wait, an escalation, a call to another process,
    /// or a retry wait.
    Waiting,
    /// At a final node marked success.
    Done,
    /// At a final node marked error, or stopped at a node that failed without `on_error`.
    Failed,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Ready => "ready",
            TaskStatus::Waiting => "waiting",
            TaskStatus::Done => "done",
            TaskStatus::Failed => "failed",
        }
    }
}

/// Why a task has a timer.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WakeKind {
    /// A delay node's wait ends.
    Delay,
    /// The node's time limit (`timeout: … -> node`) passes.
    TimeLimit,
    /// The next attempt of an API call.
    Retry,
    /// A summary task of folded tasks starts (`settings.rate_limit`).
    Release,
    /// A finished task's time to be kept is over: it is removed (`keep`).
    Remove,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Wake {
    pub at: i64,
    pub kind: WakeKind,
}

/// Who waits for this task's reply (a `call_process` caller).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Caller {
    pub task: u64,
    pub process: u64,
}

/// A task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskRecord {
    pub id: u64,
    pub process: u64,
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    /// The node it is in.
    pub node: String,
    pub prev_node: Option<String>,
    pub status: TaskStatus,
    pub data: serde_json::Map<String, Value>,
    pub created: i64,
    pub changed: i64,
    /// When it entered the node it is in (time limits count from here).
    #[serde(default)]
    pub entered: i64,
    /// When its timer fires, if it has one.
    pub wake: Option<Wake>,
    /// Attempts made of the API call it is in (0 when not in one).
    #[serde(default)]
    pub attempt: u32,
    /// Number of history events written (the next event's sequence number).
    #[serde(default)]
    pub history_len: u64,
    /// The task that called this one with `call_process`, waiting for its reply.
    #[serde(default)]
    pub caller: Option<Caller>,
    /// Moves made in total.
    #[serde(default)]
    pub moves: u64,
    /// Keys of this task that are secret beyond those its process declares: keys whose
    /// value was read from another process's secret (`{{conv[…].ref[…].client_secret}}`).
    /// Masked and sealed like the declared ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_keys: Vec<String>,
    /// The login of the API key whose task API request created it (the task API's
    /// `user_id`); `None` for a task created by any other door or by a process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<u64>,
}

/// Counters of one node.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeCounter {
    /// Tasks in the node now.
    pub now: i64,
    /// Tasks that ever entered it.
    pub total: u64,
}

/// One event of a task's history. Secret values are masked before an event is written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HistoryEvent {
    /// Milliseconds since the epoch.
    pub at: i64,
    pub node: String,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// The task was created in this node (the start).
    Created,
    /// The task entered the node. `via` (and the other words an event takes from a
    /// short list: a method, `ok`, a status) is borrowed when it is a constant, so a
    /// step's events allocate only what is its own.
    Entered {
        from: String,
        via: Cow<'static, str>,
    },
    /// An HTTP request of an API call and what came of it.
    ApiRequest {
        method: Cow<'static, str>,
        url: String,
        attempt: u32,
        status: Option<u16>,
        millis: u64,
        outcome: Cow<'static, str>,
    },
    /// The node failed; the task went to its error route (or stopped, without one).
    Error { tag: String, description: String },
    /// Data was merged into the task from outside (modify, callback, reply).
    Modified { keys: Vec<String>, source: String },
    /// The task waits here, until a time (ms) or until something moves it.
    Waiting { until: Option<i64>, reason: String },
    /// The task reached a final node.
    Finished { status: Cow<'static, str> },
    /// A task was created in another process (copy_task, escalation copy, call_process).
    Copied { process: u64, task: u64 },
    /// Events between the first `keep_first` and the last `keep_last` were dropped
    /// (`settings.history`); `count` is how many, in all.
    Dropped {
        count: u64,
        keep_first: u64,
        keep_last: u64,
    },
    /// Someone moved a task by hand (`task retry`, `task goto`, the dashboard, the task
    /// API's steps): `action` says what (`retry`, `goto`, `step_next`, `step_prev`,
    /// `step_goto`), `to` the node it runs next.
    Recovered {
        action: String,
        to: String,
        source: String,
    },
}

/// A message left for a task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InboxMessage {
    /// Merge data (from `task modify`, the API, a `modify_task` node) and wake the task if
    /// it waits for a callback or sits in an escalation.
    Modify {
        data: serde_json::Map<String, Value>,
        source: String,
    },
    /// The reply of a called process.
    Reply {
        data: serde_json::Map<String, Value>,
        error: bool,
        /// The called task failed (an error final node, or a failure with no error
        /// route): why. The caller goes to its `on_error` with this reason.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure: Option<String>,
        /// An error reply's reason (`reply` with `error: true` and `reason`; Corezoid's
        /// `exception_reason`), told in the caller's error description.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Numbers to add to keys of this task (a `sum` node). The owner adds them when it
    /// runs, one message after another, so parallel sums never lose an update.
    Add {
        data: serde_json::Map<String, Value>,
        source: String,
    },
    /// A task that a rate-limited process folded into this summary task
    /// (`settings.rate_limit`): appended to its `folded` list.
    Fold {
        data: serde_json::Map<String, Value>,
    },
    /// A `get_task` node (task `by`) took this task from the `queue` node it waits in:
    /// it goes on to that node's `next`.
    Dequeue { by: u64 },
    /// Move the task by hand: run its node again (`to: None`, `task retry`) or go to a
    /// node (`task goto`), with `data` merged first. Checked by `Runtime::recover_task`
    /// and again by the step.
    Recover {
        to: Option<String>,
        data: serde_json::Map<String, Value>,
        source: String,
        /// What the move is called in the history when it is not a plain `retry` or
        /// `goto`: the task API's `step_next`, `step_prev`, `step_goto`. Absent in
        /// messages written before it existed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        action: Option<String>,
    },
}
