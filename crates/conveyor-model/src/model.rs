//! The process model: what a process file means once it has been checked.
//!
//! Everything here is parsed and compiled (templates, regexes, durations), so the runtime
//! never re-reads text on the hot path.

use std::time::Duration;

use conveyor_template::{Path, Template, ValueTemplate};
use indexmap::IndexMap;
use regex::Regex;
use serde_json::Value;

use crate::DurationSpec;

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
    pub nodes: IndexMap<String, Node>,
    /// Id of the start node.
    pub start: String,
}

impl Process {
    /// Whether `key` of a task must be masked: a secret param or a listed secret key.
    pub fn is_secret(&self, key: &str) -> bool {
        self.secrets.iter().any(|s| s == key) || self.params.get(key).is_some_and(|p| p.secret)
    }

    /// Whether the process writes `key` itself: a key its `set_param` nodes set or its
    /// API calls' `response:` maps. A modify from outside may not change such a key
    /// unless it is a param declared for that door.
    pub fn writes(&self, key: &str) -> bool {
        self.nodes.values().any(|node| match &node.kind {
            NodeKind::SetParam { set, render, .. } => {
                set.contains_key(key) || render.contains_key(key)
            }
            NodeKind::ApiCall(api) => api
                .response
                .as_ref()
                .is_some_and(|mapping| mapping.contains_key(key)),
            NodeKind::Code(code) => code.writes.iter().any(|k| k == key),
            _ => false,
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

/// What a node does.
#[derive(Debug, Clone)]
pub enum NodeKind {
    Start {
        next: String,
    },
    Final {
        status: FinalStatus,
        /// How long a task that reached this node is kept (wins over `settings.keep`).
        keep: Option<Keep>,
    },
    Condition {
        branches: Vec<Branch>,
        otherwise: String,
        on_error: Option<String>,
    },
    SetParam {
        set: IndexMap<String, SetValue>,
        /// Keys set from handlebars templates (`render`), after `set`'s.
        render: IndexMap<String, RenderValue>,
        next: String,
        on_error: Option<String>,
    },
    Delay {
        wait: Wait,
        next: String,
        on_error: Option<String>,
    },
    ApiCall(Box<ApiCall>),
    Escalation {
        /// Tasks copied out when a task arrives (e.g. to a notification process).
        copy: Vec<CopyTask>,
        /// Where `task modify` sends a task held here; without it the task stays.
        next: Option<String>,
        on_error: Option<String>,
    },
    CopyTask {
        copy: CopyTask,
        next: String,
        on_error: Option<String>,
    },
    ModifyTask {
        process: Template,
        reference: Template,
        data: ValueTemplate,
        next: String,
        on_error: Option<String>,
    },
    /// Adds numbers to keys of a holder task, atomically (Corezoid's Sum, `api_sum`).
    Sum {
        /// The holder task's process and ref; the holder is created on first use.
        process: Template,
        reference: Template,
        /// A mapping of keys to numbers (templates) added to the holder's keys.
        add: ValueTemplate,
        next: String,
        on_error: Option<String>,
    },
    CallProcess {
        process: Template,
        /// What is sent; the whole task when absent.
        data: Option<ValueTemplate>,
        next: String,
        on_error: Option<String>,
    },
    Reply {
        data: ValueTemplate,
        /// An error reply routes the caller to its `on_error`.
        error: bool,
        next: String,
        on_error: Option<String>,
    },
    WaitCallback {
        next: String,
        /// Where a task goes when its time limit cannot be worked out.
        on_error: Option<String>,
    },
    /// JavaScript over the task's `data` (Corezoid's `api_code`).
    Code(Box<Code>),
    /// Tasks wait here until a `get_task` node takes them (Corezoid's Queue, `api_queue`);
    /// a taken task goes on to `next`.
    Queue {
        next: String,
        on_error: Option<String>,
    },
    /// Takes the oldest (or newest) task waiting in a `queue` node of a process, sends it
    /// on, and copies its id and data into this task (Corezoid's Get from Queue,
    /// `api_get_task`).
    GetTask {
        /// A template that renders to a process id or `@alias`.
        process: Template,
        /// The `queue` node of that process.
        queue: String,
        /// Take the newest task instead of the oldest.
        newest: bool,
        next: String,
        on_error: Option<String>,
    },
}

impl NodeKind {
    /// The Corezoid-style name of the kind, as written in `type:`.
    pub fn name(&self) -> &'static str {
        match self {
            NodeKind::Start { .. } => "start",
            NodeKind::Final { .. } => "final",
            NodeKind::Condition { .. } => "condition",
            NodeKind::SetParam { .. } => "set_param",
            NodeKind::Delay { .. } => "delay",
            NodeKind::ApiCall(_) => "api_call",
            NodeKind::Escalation { .. } => "escalation",
            NodeKind::CopyTask { .. } => "copy_task",
            NodeKind::ModifyTask { .. } => "modify_task",
            NodeKind::Sum { .. } => "sum",
            NodeKind::CallProcess { .. } => "call_process",
            NodeKind::Reply { .. } => "reply",
            NodeKind::WaitCallback { .. } => "wait_callback",
            NodeKind::Code(_) => "code",
            NodeKind::Queue { .. } => "queue",
            NodeKind::GetTask { .. } => "get_task",
        }
    }

    /// Whether a task stays in this node until time passes or something outside moves it.
    pub fn waits(&self) -> bool {
        matches!(
            self,
            NodeKind::Delay { .. }
                | NodeKind::WaitCallback { .. }
                | NodeKind::CallProcess { .. }
                | NodeKind::Escalation { .. }
                | NodeKind::Queue { .. }
        )
    }

    pub fn on_error(&self) -> Option<&str> {
        match self {
            NodeKind::Condition { on_error, .. }
            | NodeKind::SetParam { on_error, .. }
            | NodeKind::Delay { on_error, .. }
            | NodeKind::Escalation { on_error, .. }
            | NodeKind::CopyTask { on_error, .. }
            | NodeKind::ModifyTask { on_error, .. }
            | NodeKind::Sum { on_error, .. }
            | NodeKind::CallProcess { on_error, .. }
            | NodeKind::Reply { on_error, .. }
            | NodeKind::WaitCallback { on_error, .. }
            | NodeKind::Queue { on_error, .. }
            | NodeKind::GetTask { on_error, .. } => on_error.as_deref(),
            NodeKind::ApiCall(api) => api.on_error.as_deref(),
            NodeKind::Code(code) => code.on_error.as_deref(),
            NodeKind::Start { .. } | NodeKind::Final { .. } => None,
        }
    }
}

impl Node {
    /// Every edge out of this node, in the order they are written.
    pub fn edges(&self) -> Vec<Edge<'_>> {
        fn edge(label: String, field: String, target: &str) -> Edge<'_> {
            Edge {
                label,
                field,
                target,
            }
        }
        let mut edges = Vec::new();
        match &self.kind {
            NodeKind::Start { next }
            | NodeKind::SetParam { next, .. }
            | NodeKind::Delay { next, .. }
            | NodeKind::CopyTask { next, .. }
            | NodeKind::ModifyTask { next, .. }
            | NodeKind::Sum { next, .. }
            | NodeKind::CallProcess { next, .. }
            | NodeKind::Reply { next, .. }
            | NodeKind::WaitCallback { next, .. }
            | NodeKind::Queue { next, .. }
            | NodeKind::GetTask { next, .. }
            | NodeKind::Escalation {
                next: Some(next), ..
            } => edges.push(edge("next".into(), "next".into(), next)),
            NodeKind::ApiCall(api) => edges.push(edge("next".into(), "next".into(), &api.next)),
            NodeKind::Code(code) => edges.push(edge("next".into(), "next".into(), &code.next)),
            NodeKind::Escalation { next: None, .. } | NodeKind::Final { .. } => {}
            NodeKind::Condition {
                branches,
                otherwise,
                ..
            } => {
                for (i, branch) in branches.iter().enumerate() {
                    let label = branch
                        .label
                        .clone()
                        .unwrap_or_else(|| format!("branch {}", i + 1));
                    edges.push(edge(label, format!("branches[{i}].next"), &branch.next));
                }
                edges.push(edge("else".into(), "else".into(), otherwise));
            }
        }
        if let Some(on_error) = self.kind.on_error() {
            edges.push(edge("on_error".into(), "on_error".into(), on_error));
        }
        if let Some(limit) = &self.time_limit {
            edges.push(edge(
                format!("timeout {}", limit.when),
                "timeout".into(),
                &limit.target,
            ));
        }
        if let Some(alert) = &self.alert {
            edges.push(edge(
                format!("alert at {} tasks", alert.at_least),
                "alert".into(),
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalStatus {
    Success,
    Error,
}

/// One branch of a condition: all checks must hold.
#[derive(Debug, Clone)]
pub struct Branch {
    pub label: Option<String>,
    pub when: Vec<Check>,
    pub next: String,
}

/// `param` `op` `value`, compared as `cast`.
#[derive(Debug, Clone)]
pub struct Check {
    /// The task key (a path) whose value is tested.
    pub param: Path,
    pub op: CompareOp,
    /// The value compared with (a template).
    pub value: Template,
    /// For `regexp` with a literal pattern: compiled once when the file is loaded.
    pub regex: Option<Regex>,
    pub cast: Cast,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    NotEq,
    More,
    Less,
    MoreOrEq,
    LessOrEq,
    Regexp,
}

impl CompareOp {
    pub const ALL: [(&'static str, CompareOp); 7] = [
        ("eq", CompareOp::Eq),
        ("not_eq", CompareOp::NotEq),
        ("more", CompareOp::More),
        ("less", CompareOp::Less),
        ("more_or_eq", CompareOp::MoreOrEq),
        ("less_or_eq", CompareOp::LessOrEq),
        ("regexp", CompareOp::Regexp),
    ];
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

/// A `set_param` value and the type it is stored as (`None`: as rendered).
#[derive(Debug, Clone)]
pub struct SetValue {
    pub value: ValueTemplate,
    pub cast: Option<Cast>,
}

/// A `set_param` `render` value: a handlebars template (a message body) rendered over
/// the task's data, with `with`'s values (Corezoid templates, rendered first) added.
#[derive(Debug, Clone)]
pub struct RenderValue {
    pub template: conveyor_template::body::BodyTemplate,
    pub with: IndexMap<String, ValueTemplate>,
    pub cast: Option<Cast>,
}

/// What a delay waits for.
#[derive(Debug, Clone)]
pub enum Wait {
    /// `for: 25m` (relative).
    For(DurationSpec),
    /// `until: "{{expires}}"` (absolute unix time, seconds).
    Until(Template),
}

/// Creates a task in another process.
#[derive(Debug, Clone)]
pub struct CopyTask {
    /// A template that renders to a process id or `@alias`.
    pub process: Template,
    pub reference: Option<Template>,
    /// The new task's data; the whole current task when absent.
    pub data: Option<ValueTemplate>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
}

impl HttpMethod {
    pub const ALL: [(&'static str, HttpMethod); 6] = [
        ("GET", HttpMethod::Get),
        ("POST", HttpMethod::Post),
        ("PUT", HttpMethod::Put),
        ("PATCH", HttpMethod::Patch),
        ("DELETE", HttpMethod::Delete),
        ("HEAD", HttpMethod::Head),
    ];

    pub fn as_str(self) -> &'static str {
        HttpMethod::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map(|(name, _)| *name)
            .unwrap_or("GET")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Form,
    /// The body rendered to text and sent as it is (Corezoid's `format: raw`); the
    /// `Content-Type` is whatever `headers` say.
    Raw,
    /// Corezoid's own format (`format: corezoid`): the body is sent as the `data` of one
    /// op, `{"ops":[{"type":"data","ref","obj_id","conv_id","node_id","data","extra"}]}`,
    /// and the reply must be `{"request_proc":"ok","ops":[{"proc":"ok","res_data":{…}}]}`,
    /// whose `res_data` is what the task gets.
    Corezoid,
    /// The body (a mapping) written as XML (Corezoid's api call with an XML content
    /// type): keys are elements, `@name` keys attributes, `#value` the text; a key that is
    /// not an XML name is an error of the node, values are escaped.
    Xml,
}

/// `send_sys` of an `api_call` (Corezoid's): the URL gets `conv_id`, `conv_time` and,
/// with a secret, `conv_signature` = hex(sha1(conv_time + secret + body + secret));
/// a JSON body gets `sys: {ref, obj_id, conv_id, node_id}`.
#[derive(Debug, Clone)]
pub struct SendSys {
    /// The secret the signature is made with, read from a secret param.
    pub secret: Option<Template>,
}

/// A `code` node: a JavaScript function body over `data`, the task's data.
#[derive(Debug, Clone)]
pub struct Code {
    /// The script as written; it runs as the body of `function (data) { …; return data }`.
    pub source: std::sync::Arc<str>,
    /// Keys the script visibly assigns (`data.key = …`, `data["key"] = …`): known to the
    /// undeclared-key warning and to `Process::writes`. A script can write others.
    pub writes: Vec<String>,
    /// Wall-clock time one run may take (`max_time`, default 100 ms, at most 5 s).
    pub max_time: Duration,
    /// Bytes the JavaScript heap may hold while it runs (`max_memory_mb`, default 32).
    pub max_memory: usize,
    pub next: String,
    pub on_error: Option<String>,
}

/// An HTTP request node.
#[derive(Debug, Clone)]
pub struct ApiCall {
    pub method: HttpMethod,
    pub url: Template,
    pub query: IndexMap<String, ValueTemplate>,
    pub headers: IndexMap<String, Template>,
    pub body: Option<ValueTemplate>,
    pub format: BodyFormat,
    /// Limit on one HTTP exchange (default 60 s).
    pub request_timeout: Duration,
    /// Keys written into the task from the reply, rendered against
    /// `{body, status, headers}`; when absent a JSON object reply is merged whole.
    pub response: Option<IndexMap<String, ValueTemplate>>,
    /// Statuses that count as success (default 200, 201, 202).
    pub success_codes: Vec<u16>,
    pub retry: Option<Retry>,
    /// A header carrying a key that stays the same across retries of one call.
    pub idempotency_key: Option<Template>,
    pub idempotency_header: String,
    /// Most requests of this node in flight at once.
    pub concurrency: Option<u32>,
    /// Largest reply body accepted (default 128 KB, Corezoid's).
    pub max_response_bytes: u64,
    /// Corezoid's `send_sys`: the task's process, time and a signature sent along.
    pub send_sys: Option<SendSys>,
    /// An empty reply to 200 or 201 is an error (Corezoid's `rfc_format`); 202 may be
    /// empty. Without it, an empty reply is an empty object.
    pub require_body: bool,
    /// Write `__conveyor_api_debug__` (time, sizes, status) into the task (Corezoid's
    /// `debug_info`).
    pub debug: bool,
    pub next: String,
    pub on_error: Option<String>,
}

/// Retries of transient failures (timeouts, connection errors, 5xx, 429).
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Wait before the second attempt; doubled each time after.
    pub backoff: Duration,
    /// Longest wait between attempts.
    pub max: Duration,
}
