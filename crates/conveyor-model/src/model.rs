//! The process model: what a process file means once it has been checked.
//!
//! Everything here is parsed and compiled (templates, regexes, durations), so the runtime
//! never re-reads text on the hot path.

use std::time::Duration;

use conveyor_template::{Template, ValueTemplate};
use indexmap::IndexMap;
use regex::Regex;
use serde_json::Value;

use crate::DurationSpec;
use crate::kind::NodeKind;

/// A process's nodes by name, in file order. Every step looks its node up here: foldhash
/// (seeded per map, like SipHash) instead of SipHash, which showed in the engine's profile.
pub type NodeMap = IndexMap<String, Node, foldhash::fast::RandomState>;

/// A checked process definition.
#[derive(Debug, Clone)]
pub struct Process {
    /// The `process:` name (the template name, e.g. `bitrix_oauth`).
    pub name: String,
    pub title: Option<String>,
    pub description: Option<String>,
    /// Declared parameters of a new task, in file order.
    pub params: IndexMap<String, Param>,
    /// Task keys never shown or logged in clear (besides params marked `secret`).
    pub secrets: Vec<String>,
    pub settings: Settings,
    /// What the process's direct URL may do.
    pub direct_url: DirectUrl,
    /// Where a person gets the code the process exchanges, if it takes one.
    pub authorize: Option<Authorize>,
    /// The nodes, in file order.
    pub nodes: NodeMap,
    /// Id of the start node.
    pub start: String,
}

impl Process {
    /// Whether `key` of a task must be masked: a secret param or a listed secret key.
    pub fn is_secret(&self, key: &str) -> bool {
        self.secrets.iter().any(|s| s == key) || self.params.get(key).is_some_and(|p| p.secret)
    }

    /// Whether the process writes `key` itself: a key one of its nodes writes as the
    /// file names it (a `set_param`'s keys, an API call's `response:` map, the keys a
    /// script visibly assigns). A modify from outside may not change such a key
    /// unless it is a param declared for that door.
    pub fn writes(&self, key: &str) -> bool {
        self.nodes.values().any(|node| {
            let mut writes = false;
            node.kind
                .as_kind()
                .visit_written_keys(&mut |written| writes |= written == key);
            writes
        })
    }

    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.get(id)
    }
}

/// A declared parameter of the tasks a process accepts.
#[derive(Debug, Clone)]
pub struct Param {
    pub required: bool,
    pub default: Option<Value>,
    pub pattern: Option<Regex>,
    pub secret: bool,
    pub description: Option<String>,
    /// The JSON type a value from outside must have (`None`: any).
    pub kind: Option<ParamType>,
    /// Who may set it from outside.
    pub input: Input,
    /// Longest text a value from outside may be, in characters.
    pub max_length: usize,
}

/// Longest text a declared param takes from outside unless it says otherwise.
pub const DEFAULT_MAX_LENGTH: usize = 4096;

/// The JSON type of a param.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    String,
    Number,
    Boolean,
    Object,
    Array,
}

impl ParamType {
    pub const ALL: [(&'static str, ParamType); 5] = [
        ("string", ParamType::String),
        ("number", ParamType::Number),
        ("boolean", ParamType::Boolean),
        ("object", ParamType::Object),
        ("array", ParamType::Array),
    ];

    pub fn name(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Number => "number",
            ParamType::Boolean => "boolean",
            ParamType::Object => "object",
            ParamType::Array => "array",
        }
    }

    pub fn matches(self, value: &Value) -> bool {
        matches!(
            (self, value),
            (ParamType::String, Value::String(_))
                | (ParamType::Number, Value::Number(_))
                | (ParamType::Boolean, Value::Bool(_))
                | (ParamType::Object, Value::Object(_))
                | (ParamType::Array, Value::Array(_))
        )
    }
}

/// Which doors may set a param (`input: [create, modify, url]`). Values given with
/// `process clone --set` belong to the process and no door overrides them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Input {
    /// When a task is added (CLI, task API, dashboard).
    pub create: bool,
    /// By a modify of an existing task (CLI, task API, dashboard).
    pub modify: bool,
    /// Through the process's direct URL (a create or a modify).
    pub url: bool,
}

impl Default for Input {
    /// Tasks may be given the param when added and modified; the public direct URL may
    /// not set it unless the process says so.
    fn default() -> Self {
        Input {
            create: true,
            modify: true,
            url: false,
        }
    }
}

/// Where data from outside comes from; each door is checked against [`Input`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    Create,
    Modify,
    Url,
}

impl Door {
    pub fn name(self) -> &'static str {
        match self {
            Door::Create => "create",
            Door::Modify => "modify",
            Door::Url => "url",
        }
    }
}

impl Input {
    pub fn allows(self, door: Door) -> bool {
        match door {
            Door::Create => self.create,
            Door::Modify => self.modify,
            Door::Url => self.url,
        }
    }
}

/// What a process's direct URL may do (`direct_url:` in the file).
#[derive(Debug, Clone, Default)]
pub struct DirectUrl {
    /// The refs a request may create or modify; `None`: any.
    pub refs: Option<Vec<String>>,
    /// Whether a request without a ref creates a new task.
    pub new_tasks: bool,
}

/// How a person gets the authorization code a process exchanges (`authorize:` in the
/// file): the dashboard's *Get the code* opens `url` and the code goes into `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorize {
    /// The authorize page's address as written: `http(s)://` then text and `{{param}}`
    /// placeholders, each filled (URL-encoded) with the task's or the form's value.
    pub url: String,
    /// The params `url` uses, in order of first use: declared, never secret.
    pub uses: Vec<String>,
    /// The param that receives the code: declared, settable on create or modify.
    pub code: String,
    /// The task key the token lands in (the dashboard shows its fingerprint).
    pub token: String,
    /// How long a code lives (the dashboard counts it down), if said.
    pub code_lifetime: Option<Duration>,
}

/// A piece of an authorize address: text, a `{{param}}`, or an unclosed `{{…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UrlPiece<'a> {
    Text(&'a str),
    Param(&'a str),
    Unclosed(&'a str),
}

/// The pieces of an authorize address, in order (a placeholder's name is trimmed).
pub(crate) fn authorize_pieces(url: &str) -> Vec<UrlPiece<'_>> {
    let mut pieces = Vec::new();
    let mut rest = url;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            pieces.push(UrlPiece::Text(&rest[..open]));
        }
        match rest[open + 2..].find("}}") {
            Some(close) => {
                pieces.push(UrlPiece::Param(rest[open + 2..open + 2 + close].trim()));
                rest = &rest[open + 2 + close + 2..];
            }
            None => {
                pieces.push(UrlPiece::Unclosed(&rest[open..]));
                rest = "";
            }
        }
    }
    if !rest.is_empty() {
        pieces.push(UrlPiece::Text(rest));
    }
    pieces
}

/// Process-wide settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Loop protection: a task that passes more nodes than this without waiting goes to
    /// its error route (Corezoid's limit is 50).
    pub max_steps: u32,
    /// Most tasks the process may hold at once (a process that creates tasks in a loop
    /// stops here with a clear error instead of filling the disk).
    pub max_tasks: u64,
    /// Shortest duration a template may render to (a wait, delay or time limit read from
    /// task data); shorter is an error of the node, so nobody can make a task spin.
    pub min_wait: Duration,
    /// Longest duration a template may render to; longer is an error of the node, so
    /// nobody can make a task stop silently.
    pub max_wait: Duration,
    /// At most this many tasks start per window; the rest are folded into one summary
    /// task that starts when the window ends.
    pub rate_limit: Option<RateLimit>,
    /// How long a task that finished is kept (`settings.keep`); a final node's own
    /// `keep` wins. `None`: the default, [`Keep::DEFAULT_DONE`] for tasks that finished
    /// `done` and [`Keep::DEFAULT_FAILED`] for `failed` ones.
    pub keep: Option<Keep>,
    /// How much of a long-lived task's history is kept (`settings.history`).
    pub history: HistoryBounds,
}

/// How long a finished task is kept (`keep:` in settings or on a final node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Removed when this much time has passed since it finished (`0`: in the same
    /// commit that finishes it).
    For(Duration),
    /// Never removed.
    Forever,
}

impl Keep {
    /// Kept after finishing `done`, when neither the node nor the process says.
    pub const DEFAULT_DONE: Keep = Keep::For(Duration::from_secs(7 * 86_400));
    /// Kept after finishing `failed`, when neither the node nor the process says.
    pub const DEFAULT_FAILED: Keep = Keep::For(Duration::from_secs(30 * 86_400));
}

/// `settings.history: { keep_first: 10, keep_last: 200, max_age: 30d }`: a task keeps
/// its first `keep_first` events, and of the rest those among its last `keep_last`
/// that are younger than `max_age`; what is dropped is counted in one marker event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryBounds {
    pub keep_first: u64,
    pub keep_last: u64,
    /// `None`: no limit by age.
    pub max_age: Option<Duration>,
}

impl Default for HistoryBounds {
    fn default() -> Self {
        HistoryBounds {
            keep_first: 10,
            keep_last: 200,
            max_age: Some(Duration::from_secs(30 * 86_400)),
        }
    }
}

/// `settings.rate_limit: { max: 3, per: 10m }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub max: u32,
    pub per: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_steps: 50,
            max_tasks: 1_000_000,
            min_wait: Duration::from_secs(1),
            max_wait: Duration::from_secs(366 * 86_400),
            rate_limit: None,
            keep: None,
            history: HistoryBounds::default(),
        }
    }
}

/// One node of a process.
#[derive(Debug, Clone)]
pub struct Node {
    pub id: String,
    pub title: Option<String>,
    pub description: Option<String>,
    /// The id of the Corezoid node this one was imported from (`conveyor process import`).
    pub corezoid_id: Option<String>,
    /// `timeout: 30s -> node`: a task that stays longer than this moves on.
    pub time_limit: Option<TimeLimit>,
    /// `keep_timeout: true`: a task woken here by a modify that comes back in the same
    /// step waits for the time that was left, not a fresh time limit.
    pub keep_timeout: bool,
    /// `alert: 30 -> node`: when the node holds 30 tasks or more, one alert task starts
    /// at `node`; another only once the count has dropped below (Corezoid's `count`
    /// semaphor).
    pub alert: Option<CountAlert>,
    pub kind: NodeKind,
}

/// `alert: N -> node` on a node (Corezoid's `count` semaphor): edge-triggered alert
/// tasks, `{"start": "true", …}` when the node's count reaches `at_least`, `{"start":
/// "false", …}` when it drops below again.
#[derive(Debug, Clone)]
pub struct CountAlert {
    pub at_least: u64,
    pub target: String,
}

#[derive(Debug, Clone)]
pub struct TimeLimit {
    pub when: LimitAt,
    pub target: String,
}

/// When a node's time limit is over.
#[derive(Debug, Clone)]
pub enum LimitAt {
    /// This long after the task entered the node.
    After(DurationSpec),
    /// At this absolute unix time (seconds), read from the task (Corezoid's dynamic
    /// `time` semaphor).
    Until(Template),
}

impl std::fmt::Display for LimitAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitAt::After(spec) => write!(f, "{spec}"),
            LimitAt::Until(_) => f.write_str("until (template)"),
        }
    }
}

impl Node {
    /// Every edge out of this node, in the order they are written: the kind's own, then
    /// `on_error`, the time limit and the alert.
    pub fn edges(&self) -> Vec<Edge<'_>> {
        let mut edges = Vec::new();
        let kind = self.kind.as_kind();
        kind.edges(&mut edges);
        if let Some(on_error) = kind.on_error() {
            edges.push(Edge::new("on_error", "on_error", on_error));
        }
        if let Some(limit) = &self.time_limit {
            edges.push(Edge::new(
                format!("timeout {}", limit.when),
                "timeout",
                &limit.target,
            ));
        }
        if let Some(alert) = &self.alert {
            edges.push(Edge::new(
                format!("alert at {} tasks", alert.at_least),
                "alert",
                &alert.target,
            ));
        }
        edges
    }
}

/// An edge of the process graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge<'a> {
    /// `next`, `on_error`, `else`, `branch 1` (or the branch's label), `timeout 30s`.
    pub label: String,
    /// Where it is written in the node, e.g. `branches[0].next`.
    pub field: String,
    pub target: &'a str,
}

impl<'a> Edge<'a> {
    pub fn new(label: impl Into<String>, field: impl Into<String>, target: &'a str) -> Edge<'a> {
        Edge {
            label: label.into(),
            field: field.into(),
            target,
        }
    }
}

/// How a value is read before it is compared or stored (Corezoid's casts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cast {
    String,
    Number,
    Boolean,
    Object,
    Array,
}

impl Cast {
    pub const ALL: [(&'static str, Cast); 5] = [
        ("string", Cast::String),
        ("number", Cast::Number),
        ("boolean", Cast::Boolean),
        ("object", Cast::Object),
        ("array", Cast::Array),
    ];
}

/// Creates a task in another process (a `copy_task` node, an escalation's copies).
#[derive(Debug, Clone)]
pub struct TaskCopy {
    /// A template that renders to a process id or `@alias`.
    pub process: Template,
    pub reference: Option<Template>,
    /// The new task's data; the whole current task when absent.
    pub data: Option<ValueTemplate>,
}

impl TaskCopy {
    /// The templates it renders against the task: process, ref and data.
    pub(crate) fn visit_templates<'a>(&'a self, visit: &mut dyn FnMut(&'a Template)) {
        visit(&self.process);
        if let Some(r) = &self.reference {
            visit(r);
        }
        if let Some(d) = &self.data {
            d.visit_templates(visit);
        }
    }
}
