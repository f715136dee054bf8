//! What a command answers, as types: [`crate::render`] turns an answer into the CLI's
//! text or `--json`, and the dashboard serializes it as it is.

use conveyor_store::{ApiKey, HistoryEvent, TaskRecord};
use serde::Serialize;
use serde_json::{Map, Value};

/// A process as `process list` and the dashboard's front page show it.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessSummary {
    pub id: u64,
    pub alias: Option<String>,
    pub name: String,
    pub title: String,
    pub source: String,
    pub version: u32,
    /// Tasks in its nodes now.
    pub tasks: i64,
    /// Tasks in its escalation nodes now.
    pub in_escalation: i64,
}

/// A node with its counters.
#[derive(Debug, Clone, Serialize)]
pub struct NodeSummary {
    pub id: String,
    pub kind: &'static str,
    pub title: Option<String>,
    pub now: i64,
    pub total: u64,
    pub escalation: bool,
}

/// `process show`: a process and its nodes.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessDetail {
    #[serde(flatten)]
    pub summary: ProcessSummary,
    pub description: Option<String>,
    pub nodes: Vec<NodeSummary>,
    /// The params a task may be given (the add-task form is built from them).
    pub params: Vec<ParamInfo>,
    /// Params the process was given at clone time (`--set`): no task overrides them.
    pub settings: Vec<String>,
    /// Where the portal's authorize page is, for a process that takes an OAuth code.
    pub authorize: Option<AuthorizeInfo>,
}

/// A declared param, as a form shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ParamInfo {
    pub name: String,
    pub description: Option<String>,
    pub required: bool,
    pub secret: bool,
    pub default: Option<Value>,
    /// The regular expression a value must match (checked as one types, and again here).
    pub pattern: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<&'static str>,
    pub max_length: usize,
    /// Doors that may set it: `create`, `modify`, `url`.
    pub input: Vec<&'static str>,
}

/// How to get an authorization code for a process that declares an `authorize:` link:
/// the dashboard fills `url`'s `{{param}}` placeholders (URL-encoded) from the form or
/// the task, opens it, and sends the code into `code_param`.
#[derive(Debug, Clone, Serialize)]
pub struct AuthorizeInfo {
    /// The authorize page's address, with `{{param}}` placeholders.
    pub url: String,
    /// The params the address uses, in order.
    pub uses: Vec<String>,
    /// The param the code goes into.
    pub code_param: String,
    /// The task key holding the token (its fingerprint is shown).
    pub token_key: String,
    /// How long a code lives, in seconds, if the process says.
    pub code_lifetime_secs: Option<u64>,
}

impl AuthorizeInfo {
    pub fn of(authorize: &conveyor_model::Authorize) -> AuthorizeInfo {
        AuthorizeInfo {
            url: authorize.url.clone(),
            uses: authorize.uses.clone(),
            code_param: authorize.code.clone(),
            token_key: authorize.token.clone(),
            code_lifetime_secs: authorize.code_lifetime.map(|d| d.as_secs().max(1)),
        }
    }
}

/// A shipped template.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateInfo {
    pub name: String,
    pub title: Option<String>,
    pub description: Option<String>,
    pub params: Vec<ParamInfo>,
}

/// A task with its data as the caller may see it (secrets masked unless revealed).
#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    pub id: u64,
    pub process: u64,
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    pub node: String,
    pub prev_node: Option<String>,
    pub status: &'static str,
    pub created: i64,
    pub changed: i64,
    pub wake_at: Option<i64>,
    /// `remove` when the timer is a finished task's removal (`keep`).
    pub wake_kind: Option<&'static str>,
    pub data: Map<String, Value>,
    /// Why it is where it is (an error's tag and description), when it says.
    pub reason: Reason,
}

/// The error keys nodes leave and the `error`/`failure` keys processes set.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Reason {
    pub tag: Option<String>,
    pub description: Option<String>,
}

/// The answer of each command.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    /// The authorize page to open, and where the code it gives goes.
    AuthorizeLink {
        url: String,
        code_param: String,
        code_lifetime_secs: Option<u64>,
    },
    Cloned {
        id: u64,
        alias: Option<String>,
        source: String,
        name: String,
    },
    Processes {
        processes: Vec<ProcessSummary>,
    },
    Process(Box<ProcessDetail>),
    Updated {
        id: u64,
        version: u32,
    },
    /// A diagram or other text, printed as it is.
    Drawn {
        text: String,
    },
    Url {
        id: u64,
        url: String,
        rotated: bool,
    },
    TaskAdded {
        id: u64,
        process: u64,
        #[serde(rename = "ref")]
        reference: Option<String>,
        node: String,
    },
    /// `bitrix authorize`: the code went to the existing task (`created: false`) or a new one.
    TaskUpserted {
        id: u64,
        process: u64,
        #[serde(rename = "ref")]
        reference: String,
        created: bool,
    },
    Task(Box<TaskView>),
    Tasks {
        tasks: Vec<TaskView>,
    },
    Modified {
        id: u64,
        node: String,
    },
    /// `task retry` / `task goto`: the move is left for the engine.
    Recovering {
        id: u64,
        node: String,
        /// Where it goes (`None`: the node it failed in, again).
        to: Option<String>,
    },
    History {
        events: Vec<HistoryEvent>,
    },
    Deleted {
        id: u64,
        process: u64,
    },
    ApiKeyCreated(ApiKey),
    ApiKeys {
        keys: Vec<ApiKey>,
    },
    ApiKeyDeleted {
        login: u64,
    },
    ApiKeyRotated(ApiKey),
    StoreStats(StoreStatsView),
    Templates {
        templates: Vec<TemplateInfo>,
    },
    Idle {
        steps: u64,
    },
}

/// `store stats` with the time it was taken (ages are shown from it).
#[derive(Debug, Clone, Serialize)]
pub struct StoreStatsView {
    #[serde(skip)]
    pub stats: conveyor_runtime::StoreStats,
    pub now: i64,
}

impl TaskView {
    pub fn of(task: &TaskRecord, data: Map<String, Value>) -> TaskView {
        TaskView {
            id: task.id,
            process: task.process,
            reference: task.reference.clone(),
            node: task.node.clone(),
            prev_node: task.prev_node.clone(),
            status: task.status.as_str(),
            created: task.created,
            changed: task.changed,
            wake_at: task.wake.map(|w| w.at),
            wake_kind: task.wake.map(|w| match w.kind {
                conveyor_store::WakeKind::Remove => "remove",
                _ => "timer",
            }),
            reason: Reason::of(&task.data),
            data,
        }
    }
}

impl Reason {
    /// Why a task is where it is: the error keys nodes leave (`__conveyor_…_return_…__`)
    /// and the `error`/`failure` keys processes such as bitrix_oauth set.
    pub fn of(data: &Map<String, Value>) -> Reason {
        let mut reason = Reason::default();
        for (key, value) in data {
            if key.ends_with("_return_type_tag__") {
                reason.tag = value.as_str().map(str::to_string);
            }
            if key.ends_with("_return_description__") {
                reason.description = value.as_str().map(str::to_string);
            }
        }
        if let Some(Value::String(e)) = data.get("error")
            && !e.is_empty()
        {
            reason.tag = Some(e.clone());
        }
        if let Some(Value::String(f)) = data.get("failure")
            && !f.is_empty()
        {
            reason.description = Some(f.clone());
        }
        reason
    }
}
