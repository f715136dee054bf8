//! The task API's process management ops (`conv`, `convs`, `obj_scheme`, `node`,
//! `task_history`) and its debug moves (`step_next`, `step_prev`, `step_goto`), as the
//! command layer runs them.
//!
//! Reads go through the same requests as the CLI's (`process show`, `task list`,
//! `process export`) with the key's [`Caller`], so a key limited to some processes sees
//! only those. Every change of a definition (`conv create`, `conv modify`,
//! `obj_scheme upload`) is a `process clone` or `process update` request, which only a
//! caller that may use every process may make — the same rule as the CLI's and the
//! dashboard's. A step is a `task goto` to the node the step names, recorded in the
//! task's history as the step it was (`action: step_next`, `step_prev`, `step_goto`).

use conveyor_model::NodeKind;
use conveyor_runtime::{Recovery, Runtime, RuntimeError, StepKind, TaskBy, mask_data};
use conveyor_store::{EventKind, HistoryEvent};
use serde_json::{Map, Value, json};

mod nodes;

pub use nodes::{
    MAX_DESC_SCAN, MAX_NODE_LIST, NodeChange, NodeInfo, NodeQuery, NodeScheme, NodeTasks,
    node_modify, node_schemes, node_show, node_tasks,
};

use crate::answer::{Answer, ProcessDetail, ProcessSummary};
use crate::door::TaskName;
use crate::request::Request;
use crate::{Caller, CommandError};

/// Where a step sends a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `step_next`: on along the node's `next` (`branch: logic`) or its timer
    /// (`branch: timer`: a `delay`'s end, a node's `timeout`).
    Next { timer: bool },
    /// `step_prev`: back to the node it came from.
    Prev,
    /// `step_goto`: to this node (its name, or the Corezoid id it was imported with).
    Goto(String),
}

/// What a step did: the task, where it was and where it goes.
#[derive(Debug, Clone)]
pub struct Stepped {
    pub id: u64,
    pub process: u64,
    pub process_name: String,
    pub from: String,
    pub from_title: Option<String>,
    pub to: String,
    pub to_title: Option<String>,
    /// The task's data with the step's merged in, secrets masked.
    pub data: Map<String, Value>,
    /// The swagger's debug fields: what the target node offers a next step (`logic`,
    /// `timer`), its logics, the logics and semaphors of the node the task left (nodes
    /// named by Conveyor's names), and the task's last moves.
    pub debug: StepDebug,
}

/// What Corezoid's debug mode shows with a step, as far as Conveyor knows it.
#[derive(Debug, Clone, Default)]
pub struct StepDebug {
    pub branches: Vec<&'static str>,
    pub logic: Value,
    pub prev_logic: Value,
    pub prev_semaphor: Value,
    /// The task's moves (created, entered), oldest first, at most [`STEP_HISTORY`].
    pub history: Vec<Value>,
}

/// The most moves a step's answer lists (`task_history` has them all).
pub const STEP_HISTORY: usize = 50;

/// A process made or changed from a scheme.
#[derive(Debug, Clone)]
pub struct Made {
    pub id: u64,
    pub alias: Option<String>,
    pub name: String,
    pub title: String,
    /// The Corezoid process id it was imported from, when the scheme had one.
    pub corezoid_id: Option<i64>,
}

/// A task's history as the task API lists it.
#[derive(Debug, Clone)]
pub struct TaskHistory {
    pub id: u64,
    pub reference: Option<String>,
    pub process: u64,
    pub created_by: Option<u64>,
    pub events: Vec<HistoryItem>,
}

/// One event of a task's history, with what the task API's list says of it.
#[derive(Debug, Clone)]
pub struct HistoryItem {
    /// Milliseconds since the epoch.
    pub at: i64,
    pub node: String,
    /// The node it came from, for an entry.
    pub prev_node: Option<String>,
    /// The task was created here (its first event).
    pub created: bool,
    /// The event's own fields (`event`, `from`, `via`, `source`, …), as `task history
    /// --json` gives them.
    pub fields: Map<String, Value>,
}

impl HistoryItem {
    fn of(event: HistoryEvent) -> HistoryItem {
        let mut fields = match serde_json::to_value(&event) {
            Ok(Value::Object(fields)) => fields,
            _ => Map::new(),
        };
        fields.remove("at");
        fields.remove("node");
        HistoryItem {
            at: event.at,
            prev_node: match &event.kind {
                EventKind::Entered { from, .. } => Some(from.clone()),
                _ => None,
            },
            created: matches!(event.kind, EventKind::Created),
            node: event.node,
            fields,
        }
    }
}

/// Moves a task as a step asks, through `task goto`.
pub fn step(
    runtime: &Runtime,
    caller: &Caller,
    process: &str,
    task: &TaskName,
    step: Step,
    data: Map<String, Value>,
) -> Result<Stepped, CommandError> {
    let loaded = crate::door::scoped(runtime, caller, process)?;
    let id = loaded.record.id.to_string();
    let (loaded, record) = runtime.find_task_by(&id, task.by())?;
    let kind = match step {
        Step::Next { .. } => StepKind::Next,
        Step::Prev => StepKind::Prev,
        Step::Goto(_) => StepKind::Goto,
    };
    let to = target(&loaded.process, &record, step)?;
    // Read before the move: a step answered with half its fields would be worse than a
    // refused one.
    let schemes = node_schemes(&loaded)?;
    runtime.recover_task(
        &id,
        TaskBy::Id(record.id),
        Recovery::Step(kind, to.clone()),
        data.clone(),
        &caller.source,
    )?;
    let mut merged = record.data.clone();
    merged.extend(data);
    let title = |node: &str| loaded.process.nodes.get(node).and_then(|n| n.title.clone());
    Ok(Stepped {
        id: record.id,
        process: loaded.record.id,
        process_name: loaded
            .process
            .title
            .clone()
            .unwrap_or_else(|| loaded.process.name.clone()),
        from_title: title(&record.node),
        to_title: title(&to),
        debug: step_debug(runtime, &schemes, &record, &to)?,
        from: record.node,
        to,
        data: mask_data(&loaded.process, &record.secret_keys, &merged),
    })
}

/// The debug fields of a step that moves `record` to `to`.
fn step_debug(
    runtime: &Runtime,
    schemes: &[NodeScheme],
    record: &conveyor_store::TaskRecord,
    to: &str,
) -> Result<StepDebug, CommandError> {
    let of = |name: &str| schemes.iter().find(|n| n.name == name);
    let empty = || Value::Array(Vec::new());
    let target = of(to);
    let offers = |field: fn(&NodeScheme) -> &Value| {
        target.is_some_and(|n| field(n).as_array().is_some_and(|a| !a.is_empty()))
    };
    let mut branches = Vec::new();
    if offers(|n| &n.logics) {
        branches.push("logic");
    }
    if offers(|n| &n.semaphors) {
        branches.push("timer");
    }
    let events = runtime.store().history(record.id)?;
    let mut history: Vec<Value> = events
        .iter()
        .filter_map(|event| {
            let prev = match &event.kind {
                EventKind::Created => Value::Null,
                EventKind::Entered { from, .. } => json!(from),
                _ => return None,
            };
            Some(json!({
                "time": event.at,
                "prev_conv_id": record.process,
                "conv_id": record.process,
                "prev_node_id": prev,
                "node_id": event.node,
            }))
        })
        .collect();
    let skip = history.len().saturating_sub(STEP_HISTORY);
    history.drain(..skip);
    Ok(StepDebug {
        branches,
        logic: target.map_or_else(empty, |n| n.logics.clone()),
        prev_logic: of(&record.node).map_or_else(empty, |n| n.logics.clone()),
        prev_semaphor: of(&record.node).map_or_else(empty, |n| n.semaphors.clone()),
        history,
    })
}

/// The node a step sends the task to, or why it cannot.
fn target(
    process: &conveyor_model::Process,
    record: &conveyor_store::TaskRecord,
    step: Step,
) -> Result<String, CommandError> {
    let refuse = |why: String| {
        CommandError::Runtime(RuntimeError::CannotRecover {
            task: record.id,
            node: record.node.clone(),
            status: record.status.as_str(),
            why,
        })
    };
    let here = process.nodes.get(&record.node);
    Ok(match step {
        Step::Goto(node) => {
            if process.nodes.contains_key(&node) {
                node
            } else {
                // A node imported from Corezoid answers to its Corezoid id too.
                process
                    .nodes
                    .values()
                    .find(|n| n.corezoid_id.as_deref() == Some(node.as_str()))
                    .map(|n| n.id.clone())
                    .unwrap_or(node)
            }
        }
        Step::Prev => record.prev_node.clone().ok_or_else(|| {
            refuse(
                "it has not left the node it was created in, so there is no previous node".into(),
            )
        })?,
        Step::Next { timer } => {
            let Some(here) = here else {
                return Err(refuse(
                    "the process has no such node any more; step_goto sends it elsewhere".into(),
                ));
            };
            let wanted = match (&here.kind, timer) {
                (NodeKind::Delay { .. }, true) | (_, false) => "next",
                (_, true) => "timeout",
            };
            let edge = here.edges().into_iter().find(|e| e.field == wanted);
            match edge {
                Some(edge) => edge.target.to_string(),
                None if timer => {
                    return Err(refuse(format!(
                        "its node `{}` ({}) has no timer; branch `logic` or step_goto moves it",
                        here.id,
                        here.kind.name()
                    )));
                }
                None => {
                    return Err(refuse(format!(
                        "its node `{}` ({}) has no single next node{}; step_goto names one",
                        here.id,
                        here.kind.name(),
                        if matches!(here.kind, NodeKind::Condition { .. }) {
                            " (a condition chooses by the task's data)"
                        } else {
                            ""
                        }
                    )));
                }
            }
        }
    })
}

/// A task's history (written masked), by exactly its ref or its id.
pub fn history(
    runtime: &Runtime,
    caller: &Caller,
    process: &str,
    task: &TaskName,
) -> Result<TaskHistory, CommandError> {
    let loaded = crate::door::scoped(runtime, caller, process)?;
    let (_, record) = runtime.find_task_by(&loaded.record.id.to_string(), task.by())?;
    Ok(TaskHistory {
        id: record.id,
        reference: record.reference.clone(),
        process: record.process,
        created_by: record.created_by,
        events: runtime
            .store()
            .history(record.id)?
            .into_iter()
            .map(HistoryItem::of)
            .collect(),
    })
}

/// A process with its nodes and their counters (`conv list`).
pub fn process_nodes(
    runtime: &Runtime,
    caller: &Caller,
    process: &str,
) -> Result<ProcessDetail, CommandError> {
    let loaded = crate::door::scoped(runtime, caller, process)?;
    match crate::run(
        runtime,
        caller,
        Request::ProcessShow {
            process: loaded.record.id.to_string(),
        },
    )? {
        Answer::Process(detail) => Ok(*detail),
        _ => Err(unexpected("process show")),
    }
}

/// The processes the caller may use (`convs list`).
pub fn processes(runtime: &Runtime, caller: &Caller) -> Result<Vec<ProcessSummary>, CommandError> {
    match crate::run(runtime, caller, Request::ProcessList)? {
        Answer::Processes { processes } => Ok(processes),
        _ => Err(unexpected("process list")),
    }
}

/// The process as a Corezoid export's process object (`obj_scheme get`).
pub fn scheme(runtime: &Runtime, caller: &Caller, process: &str) -> Result<Value, CommandError> {
    let loaded = crate::door::scoped(runtime, caller, process)?;
    conveyor_corezoid::export_value(
        &serde_yaml::from_str(&loaded.record.definition).map_err(|e| CommandError::Export {
            process: process.to_string(),
            source: conveyor_corezoid::ExportError::Yaml(e.to_string()),
        })?,
        Some(loaded.record.id),
    )
    .map_err(|source| CommandError::Export {
        process: process.to_string(),
        source,
    })
}

/// `conv create`: a new process named from `title` that goes from its start to its final
/// node, or, with a `scheme`, the processes of that Corezoid scheme.
pub fn create(
    runtime: &Runtime,
    caller: &Caller,
    title: &str,
    description: Option<&str>,
    scheme: Option<&Value>,
) -> Result<Vec<Made>, CommandError> {
    caller.must_use_every_process("creating a process")?;
    if let Some(scheme) = scheme {
        return upload(runtime, caller, scheme, true);
    }
    if title.trim().is_empty() {
        return Err(CommandError::Usage(
            "`title` is required to create a process".into(),
        ));
    }
    bounded("title", title, MAX_TITLE)?;
    if let Some(description) = description {
        bounded("description", description, MAX_DESCRIPTION)?;
    }
    let name = conveyor_corezoid::slug(title, "process");
    let mut definition = Map::new();
    definition.insert("process".into(), json!(name));
    definition.insert("title".into(), json!(title));
    if let Some(description) = description.filter(|d| !d.is_empty()) {
        definition.insert("description".into(), json!(description));
    }
    definition.insert(
        "nodes".into(),
        json!({
            "start": {"type": "start", "next": "final"},
            "final": {"type": "final"},
        }),
    );
    let yaml = to_yaml(&Value::Object(definition))?;
    let made = clone(runtime, caller, &format!("{name}.yaml"), &yaml, None, None)?;
    Ok(vec![made])
}

/// The longest `title` and `description` of a process or a node (the swagger's bounds,
/// in characters).
pub const MAX_TITLE: usize = 255;
pub const MAX_DESCRIPTION: usize = 2000;

/// A title or description within its bound, or why not (named by `field`).
pub fn bounded(field: &str, text: &str, max: usize) -> Result<(), CommandError> {
    let chars = text.chars().count();
    if chars > max {
        return Err(CommandError::Usage(format!(
            "`{field}` is {chars} characters; the limit is {max}"
        )));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(CommandError::Usage(format!(
            "`{field}` holds a control character"
        )));
    }
    Ok(())
}

/// `conv modify`: a new title and/or description, written into the definition. The
/// stored YAML is edited in place, so its comments and layout stay (see
/// `yaml_edit.rs`).
pub fn modify(
    runtime: &Runtime,
    caller: &Caller,
    process: &str,
    title: Option<&str>,
    description: Option<&str>,
) -> Result<(u64, u32), CommandError> {
    caller.must_use_every_process("changing a process")?;
    let loaded = crate::door::scoped(runtime, caller, process)?;
    if title.is_none() && description.is_none() {
        return Err(CommandError::Usage(
            "nothing to modify: give `title` or `description`".into(),
        ));
    }
    if let Some(title) = title {
        bounded("title", title, MAX_TITLE)?;
        if title.trim().is_empty() {
            return Err(CommandError::Usage("`title` is empty".into()));
        }
    }
    if let Some(description) = description {
        bounded("description", description, MAX_DESCRIPTION)?;
    }
    let stored = &loaded.record.definition;
    let mut definition: Value = serde_yaml::from_str(stored)
        .map_err(|e| CommandError::Scheme(format!("the stored definition: {e}")))?;
    let Some(map) = definition.as_object_mut() else {
        return Err(CommandError::Scheme(
            "the stored definition is not a mapping".into(),
        ));
    };
    let mut text = Some(stored.clone());
    for (key, value) in [("title", title), ("description", description)] {
        if let Some(value) = value {
            map.insert(key.into(), json!(value));
            text = text.and_then(|t| crate::yaml_edit::set_top_level(&t, key, value));
        }
    }
    // The edited text is used only when it reads back as exactly the changed
    // definition; otherwise (a layout the edit does not know) it is written anew.
    let yaml = kept_or_rewritten(text, &definition)?;
    update(
        runtime,
        caller,
        loaded.record.id,
        &loaded.process.name,
        &yaml,
    )
}

/// `obj_scheme upload`: the processes of a Corezoid scheme, through the importer, as
/// new processes (with the aliases the importer gives them, unless `with_alias` is
/// false).
pub fn upload(
    runtime: &Runtime,
    caller: &Caller,
    scheme: &Value,
    with_alias: bool,
) -> Result<Vec<Made>, CommandError> {
    caller.must_use_every_process("uploading a scheme")?;
    imported(scheme)?
        .processes
        .iter()
        .map(|p| {
            clone(
                runtime,
                caller,
                &format!("{}.yaml", p.name),
                &p.yaml,
                with_alias.then(|| p.alias.clone()),
                p.corezoid_id,
            )
        })
        .collect()
}

/// `obj_scheme validate`: the scheme read, mapped and checked as an upload would, and
/// nothing made.
pub fn validate(caller: &Caller, scheme: &Value) -> Result<(), CommandError> {
    caller.must_use_every_process("uploading a scheme")?;
    imported(scheme).map(|_| ())
}

/// `conv show`: a process's own fields, with when it was made and last changed.
#[derive(Debug, Clone)]
pub struct ProcessInfo {
    pub detail: ProcessDetail,
    /// Milliseconds since the epoch.
    pub created: i64,
    pub changed: i64,
}

pub fn process_info(
    runtime: &Runtime,
    caller: &Caller,
    process: &str,
) -> Result<ProcessInfo, CommandError> {
    let loaded = crate::door::scoped(runtime, caller, process)?;
    Ok(ProcessInfo {
        detail: process_nodes(runtime, caller, process)?,
        created: loaded.record.created,
        changed: loaded.record.updated.max(loaded.record.created),
    })
}

/// The edited text when it reads back as exactly `definition`; else `definition`
/// written anew (its comments lost).
fn kept_or_rewritten(text: Option<String>, definition: &Value) -> Result<String, CommandError> {
    match text {
        Some(edited)
            if serde_yaml::from_str::<Value>(&edited).ok().as_ref() == Some(definition) =>
        {
            Ok(edited)
        }
        _ => to_yaml(definition),
    }
}

/// `obj_scheme upload` with `obj_id`: the one process of a Corezoid scheme replaces the
/// definition of process `into` (`process update`); its new id and version.
pub fn replace(
    runtime: &Runtime,
    caller: &Caller,
    into: &str,
    scheme: &Value,
) -> Result<(u64, u32), CommandError> {
    caller.must_use_every_process("uploading a scheme")?;
    let loaded = crate::door::scoped(runtime, caller, into)?;
    let import = imported(scheme)?;
    let [p] = import.processes.as_slice() else {
        return Err(CommandError::Scheme(format!(
            "the scheme holds {} processes; one replaces process {}",
            import.processes.len(),
            loaded.record.id
        )));
    };
    update(runtime, caller, loaded.record.id, &p.name, &p.yaml)
}

/// A scheme read and mapped by the importer, every process checked; refused when a node
/// cannot be mapped or a process does not check, so nothing is made from half of it.
fn imported(scheme: &Value) -> Result<conveyor_corezoid::Import, CommandError> {
    let export = conveyor_corezoid::read_value(scheme, "scheme")
        .map_err(|e| CommandError::Scheme(e.to_string()))?;
    let import =
        conveyor_corezoid::import(&export).map_err(|e| CommandError::Scheme(e.to_string()))?;
    if !import.unmapped.is_empty() {
        let list: Vec<String> = import.unmapped.iter().map(ToString::to_string).collect();
        return Err(CommandError::Scheme(format!(
            "{} node(s) cannot be mapped to Conveyor: {} (`conveyor process import --allow-partial` imports them as nodes that fail when reached)",
            list.len(),
            list.join("; ")
        )));
    }
    for p in &import.processes {
        let checked = conveyor_model::check(&format!("{}.yaml", p.name), &p.yaml);
        let errors: Vec<String> = checked.errors().map(ToString::to_string).collect();
        if !errors.is_empty() {
            return Err(CommandError::Scheme(format!(
                "the imported process `{}` does not check: {}",
                p.name,
                errors.join("; ")
            )));
        }
    }
    Ok(import)
}

fn clone(
    runtime: &Runtime,
    caller: &Caller,
    file: &str,
    yaml: &str,
    alias: Option<String>,
    corezoid_id: Option<i64>,
) -> Result<Made, CommandError> {
    let answer = crate::run(
        runtime,
        caller,
        Request::ProcessClone {
            source: format!("{file} (task API)"),
            definition: yaml.to_string(),
            alias,
            settings: Map::new(),
        },
    )?;
    let Answer::Cloned { id, .. } = answer else {
        return Err(unexpected("process clone"));
    };
    Ok(made(&*runtime.loaded(id)?, corezoid_id))
}

fn update(
    runtime: &Runtime,
    caller: &Caller,
    id: u64,
    name: &str,
    yaml: &str,
) -> Result<(u64, u32), CommandError> {
    match crate::run(
        runtime,
        caller,
        Request::ProcessUpdate {
            process: id.to_string(),
            file: format!("{name}.yaml (task API)"),
            definition: yaml.to_string(),
        },
    )? {
        Answer::Updated { id, version } => Ok((id, version)),
        _ => Err(unexpected("process update")),
    }
}

fn made(loaded: &conveyor_runtime::LoadedProcess, corezoid_id: Option<i64>) -> Made {
    Made {
        id: loaded.record.id,
        alias: loaded.record.alias.clone(),
        name: loaded.process.name.clone(),
        title: loaded
            .process
            .title
            .clone()
            .unwrap_or_else(|| loaded.process.name.clone()),
        corezoid_id,
    }
}

fn to_yaml(definition: &Value) -> Result<String, CommandError> {
    serde_yaml::to_string(definition)
        .map_err(|e| CommandError::Scheme(format!("cannot write the definition: {e}")))
}

fn unexpected(what: &str) -> CommandError {
    CommandError::Usage(format!("`{what}` answered something else"))
}
