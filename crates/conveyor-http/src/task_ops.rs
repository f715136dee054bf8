//! The task API's ops in the shapes of Corezoid's OpenAPI file: each op read into the
//! command layer's [`TaskOp`] (a malformed one answered at once), and each outcome
//! written back as Corezoid answers it. An op is named by `obj` and `type`:
//!
//! | obj | type | |
//! |---|---|---|
//! | `task` | `create`, `modify`, `show`, `delete` | a task |
//! | `task` | `step_next`, `step_prev`, `step_goto` | move a task (`task goto`) |
//! | `task_history` | `list` | a task's history |
//! | `node` | `list` | the tasks in a node |
//! | `conv` | `list` | a process's nodes with their counts |
//! | `convs` | `list` | the processes the key may use |
//! | `conv` | `show` | a process's own fields |
//! | `conv` | `create`, `modify` | a new process (from a title or a scheme); a new title |
//! | `node` | `show`, `modify` | a node's fields and logics; its title or description |
//! | `obj_scheme` | `get`, `check` | a process as a Corezoid export; nothing undeployed |
//! | `obj_scheme` | `create` / `upload`, `validate` | a Corezoid scheme through the importer |
//!
//! Ops Corezoid has and Conveyor does not (`conv delete`, `node reset`, …) refuse the
//! whole request (400) with `not supported by Conveyor:` and the reason.
//!
//! A refusal carries the swagger's `key` and `value` when it is about one input: the
//! field the door refused, or the param the command layer refused (by the error's
//! variant, never by its text); a value the process holds secret is echoed as `***`.

use conveyor_commands::door::{self, OpAnswer, TaskName, TaskOp};
use conveyor_commands::manage::{self, Step};
use conveyor_commands::{CommandError, TaskView};
use conveyor_runtime::Runtime;
use serde_json::{Map, Value, json};

/// What an answer needs of its op besides the outcome: where its inputs were.
#[derive(Debug, Clone, Default)]
pub(crate) struct OpInputs {
    /// The op's own `id`, echoed.
    pub id: Option<Value>,
    /// The field that named the process (`conv_id`, `obj_alias`, `obj_id`) and its value.
    pub process: Option<(&'static str, Value)>,
    /// The field that named the task (`ref`, `obj_id`) and its value.
    pub task: Option<(&'static str, Value)>,
    pub data: Map<String, Value>,
    /// The op's `obj` (`task` when it names none).
    pub obj: String,
    /// The process the op names, as the command layer reads it.
    pub process_name: Option<String>,
}

impl OpInputs {
    pub(crate) fn of(op: &Value) -> OpInputs {
        let mut inputs = OpInputs {
            id: op.get("id").cloned(),
            ..OpInputs::default()
        };
        if let Some(Value::Object(data)) = op.get("data") {
            inputs.data = data.clone();
        }
        inputs
    }
}

/// A refusal about one input: the swagger's `key` and `value` (a string, as it has it).
pub(crate) fn refused(key: &str, value: &Value, description: impl Into<String>) -> Value {
    json!({
        "proc": "error",
        "description": description.into(),
        "key": key,
        "value": as_text(value),
    })
}

pub(crate) fn op_error(description: impl Into<String>) -> Value {
    json!({"proc": "error", "description": description.into()})
}

fn as_text(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(s.clone()),
        other => Value::String(other.to_string()),
    }
}

const OPS: &str = "task: create, modify, show, delete, step_next, step_prev, step_goto; task_history: list; node: list, show, modify; conv: list, show, create, modify; convs: list; obj_scheme: get, check, create (upload), validate";

/// Reads one op into a [`TaskOp`]; a malformed op is answered at once. `inputs` learns
/// where its process and task were named. Whether its key may do it is the command
/// layer's check.
pub(crate) fn prepare(op: Value, inputs: &mut OpInputs) -> Result<TaskOp, Value> {
    // The door refuses the whole request for these first; an op never runs without it.
    if let Some(refusal) = malformed(&op) {
        return Err(refusal);
    }
    let op = read(op, inputs)?;
    inputs.process_name = op.process().map(str::to_string);
    if let TaskOp::Create {
        reference: Some(r), ..
    } = &op
    {
        inputs.task = Some(("ref", Value::String(r.clone())));
    }
    Ok(op)
}

fn read(op: Value, inputs: &mut OpInputs) -> Result<TaskOp, Value> {
    let Value::Object(op) = op else {
        return Err(op_error("an op is a JSON object"));
    };
    let kind = match op.get("type") {
        None => return Err(op_error(format!("`type` is required ({OPS})"))),
        Some(Value::String(kind)) => kind.as_str(),
        Some(other) => return Err(refused("type", other, "`type` is a string")),
    };
    let obj = match op.get("obj") {
        None => "task",
        Some(Value::String(obj)) => obj.as_str(),
        Some(other) => return Err(refused("obj", other, "`obj` is a string")),
    };
    inputs.obj = obj.to_string();
    match (obj, kind) {
        ("task", _) => task_op(&op, kind, inputs),
        ("task_history", "list") => Ok(TaskOp::History {
            process: process(&op, "conv_id", inputs)?,
            task: task(&op, inputs)?,
        }),
        ("node", "list") => node_list(&op, inputs),
        ("conv", "list") => Ok(TaskOp::ProcessNodes {
            process: process(&op, "obj_id", inputs)?,
        }),
        ("convs", "list") => Ok(TaskOp::Processes),
        ("conv", "create") => Ok(TaskOp::ProcessCreate {
            title: text(&op, "title")?.unwrap_or_default(),
            description: text(&op, "description")?,
            scheme: op.get("scheme").cloned(),
        }),
        ("conv", "modify") => Ok(TaskOp::ProcessModify {
            process: process(&op, "obj_id", inputs)?,
            title: text(&op, "title")?,
            description: text(&op, "description")?,
        }),
        ("conv", "show") => Ok(TaskOp::ProcessInfo {
            process: process(&op, "obj_id", inputs)?,
        }),
        ("node", "show") => Ok(TaskOp::NodeShow {
            process: process(&op, "conv_id", inputs)?,
            node: node_id(&op)?,
        }),
        ("node", "modify") => {
            let obj_type = match op.get("obj_type") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64(),
                Some(other) => {
                    return Err(refused("obj_type", other, "`obj_type` is 0, 1, 2 or 3"));
                }
            };
            let list = |key: &str| match op.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(list @ Value::Array(_)) => Ok(Some(list.clone())),
                Some(other) => Err(refused(key, other, format!("`{key}` is a list"))),
            };
            Ok(TaskOp::NodeModify {
                process: process(&op, "conv_id", inputs)?,
                node: node_id(&op)?,
                change: manage::NodeChange {
                    title: text(&op, "title")?,
                    description: text(&op, "description")?,
                    logics: list("logics")?,
                    semaphors: list("semaphors")?,
                    obj_type,
                },
            })
        }
        ("obj_scheme", "get") => Ok(TaskOp::Scheme {
            process: process(&op, "obj_id", inputs)?,
        }),
        ("obj_scheme", "check") => Ok(TaskOp::SchemeCheck {
            process: process(&op, "obj_id", inputs)?,
        }),
        ("obj_scheme", "create" | "upload" | "validate") => {
            let Some(scheme) = op.get("scheme") else {
                return Err(op_error(
                    "`scheme` is required: a Corezoid export (an array of processes, or one process object)",
                ));
            };
            for flag in [
                "async",
                "with_alias",
                "rewrite_alias",
                "skip_root",
                "apply_mode",
            ] {
                match op.get(flag) {
                    None | Some(Value::Null | Value::Bool(_)) => {}
                    Some(other) => {
                        return Err(refused(flag, other, format!("`{flag}` is true or false")));
                    }
                }
            }
            if kind == "validate" {
                return Ok(TaskOp::SchemeValidate {
                    scheme: scheme.clone(),
                });
            }
            let into = match op.get("obj_id") {
                None | Some(Value::Null) => None,
                Some(_) => Some(process(&op, "obj_id", inputs)?),
            };
            Ok(TaskOp::SchemeUpload {
                into,
                scheme: scheme.clone(),
                with_alias: op.get("with_alias") != Some(&Value::Bool(false)),
            })
        }
        (_, "") => Err(op_error(format!("`type` is required ({OPS})"))),
        (obj, kind) => Err(op_error(format!(
            "unknown op type `{kind}` of `{obj}` (supported: {OPS})"
        ))),
    }
}

/// An op on a task (`obj: task`).
fn task_op(op: &Map<String, Value>, kind: &str, inputs: &mut OpInputs) -> Result<TaskOp, Value> {
    if !matches!(
        kind,
        "create" | "modify" | "show" | "delete" | "step_next" | "step_prev" | "step_goto"
    ) {
        return Err(op_error(format!(
            "unknown op type `{kind}` (create, modify, show, delete, step_next, step_prev or step_goto)"
        )));
    }
    let process = match (op.get("conv_id"), op.get("obj_alias")) {
        (Some(_), _) => process(op, "conv_id", inputs)?,
        (None, Some(Value::String(alias))) => {
            inputs.process = Some(("obj_alias", Value::String(alias.clone())));
            format!("@{}", alias.trim_start_matches('@'))
        }
        (None, Some(other)) => return Err(refused("obj_alias", other, "`obj_alias` is a string")),
        (None, None) => return Err(op_error("`conv_id` (or `obj_alias`) is required")),
    };
    let data = match op.get("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        // The swagger allows an empty array for no data (PHP clients send it).
        Some(Value::Array(items)) if items.is_empty() => Map::new(),
        Some(other) => return Err(refused("data", other, "`data` must be an object")),
    };
    if kind == "create" {
        let reference = reference(op)?;
        return Ok(TaskOp::Create {
            process,
            reference,
            data,
        });
    }
    let task = task(op, inputs)?;
    Ok(match kind {
        "modify" => TaskOp::Modify {
            process,
            task,
            data,
        },
        "show" => TaskOp::Show { process, task },
        "delete" => TaskOp::Delete { process, task },
        step => TaskOp::Step {
            process,
            task,
            step: match step {
                "step_next" => Step::Next { timer: branch(op)? },
                "step_prev" => Step::Prev,
                _ => Step::Goto(match op.get("node_id").or_else(|| op.get("to_node_id")) {
                    Some(Value::String(node)) if !node.is_empty() => node.clone(),
                    Some(other) => {
                        return Err(refused("node_id", other, "`node_id` names a node"));
                    }
                    None => {
                        return Err(op_error(
                            "`node_id` is required: the node to send the task to",
                        ));
                    }
                }),
            },
            data,
        },
    })
}

/// `branch`: `logic` (the default) or `timer`; true for `timer`.
fn branch(op: &Map<String, Value>) -> Result<bool, Value> {
    match op.get("branch") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::String(b)) if b == "logic" => Ok(false),
        Some(Value::String(b)) if b == "timer" => Ok(true),
        Some(other) => Err(refused("branch", other, "`branch` is `logic` or `timer`")),
    }
}

/// `node list`: `conv_id`, the node in `obj_id`, `limit` (10), `offset` (0), `sort`
/// and `filters` (checked by [`malformed`] before any op of the request runs).
fn node_list(op: &Map<String, Value>, inputs: &mut OpInputs) -> Result<TaskOp, Value> {
    let process = process(op, "conv_id", inputs)?;
    let node = match op.get("obj_id") {
        Some(Value::String(node)) if !node.is_empty() => node.clone(),
        Some(other) => return Err(refused("obj_id", other, "`obj_id` names a node")),
        None => {
            return Err(op_error(
                "`obj_id` is required: the node whose tasks to list",
            ));
        }
    };
    let count = |key: &str, default: usize| match op.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => {
            n.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    refused(
                        key,
                        &Value::Number(n.clone()),
                        format!("`{key}` is a whole number"),
                    )
                })
        }
        Some(other) => Err(refused(key, other, format!("`{key}` is a whole number"))),
    };
    let limit = count("limit", 10)?;
    if limit == 0 || limit > manage::MAX_NODE_LIST {
        return Err(refused(
            "limit",
            &json!(limit),
            format!("`limit` is from 1 to {}", manage::MAX_NODE_LIST),
        ));
    }
    let (descending, refs) = node_order(op)?;
    Ok(TaskOp::NodeTasks {
        process,
        node,
        query: manage::NodeQuery {
            limit,
            offset: count("offset", 0)?,
            descending,
            refs,
        },
    })
}

/// The node an op names in `obj_id` (its name, or the Corezoid id it was imported with).
fn node_id(op: &Map<String, Value>) -> Result<String, Value> {
    match op.get("obj_id") {
        Some(Value::String(node)) if !node.is_empty() && node.len() <= 255 => Ok(node.clone()),
        Some(other) => Err(refused("obj_id", other, "`obj_id` names a node")),
        None => Err(op_error("`obj_id` is required: the node")),
    }
}

/// Why Conveyor does not do an op Corezoid's API has (`obj`, `type`, and the fields
/// that choose what it does); `None` for an op it does, or does not know.
fn not_supported(op: &Map<String, Value>) -> Option<String> {
    let field = |key: &str| op.get(key).and_then(Value::as_str).unwrap_or_default();
    let kind = field("type");
    let why = match (field("obj"), kind) {
        ("conv", "link") => "sharing a process (`conv link`): Conveyor has no users or groups to share it with; an API key made with `conveyor api-key create NAME --process P` reaches only its processes".to_string(),
        ("conv", "favorite") => "favorites (`conv favorite`): Conveyor has no users to keep them for".to_string(),
        ("conv", "delete" | "restore" | "destroy") => format!(
            "`conv {kind}`: Conveyor does not delete processes (there is no trash to move one to or restore it from); a process stays with its tasks and history, and an API key made with `--process` reaches only the processes it names"
        ),
        ("node", "create" | "delete") => format!(
            "`node {kind}`: a process's nodes are its definition, changed whole and checked before it replaces the old one (`conveyor process update`, or `obj_scheme create` with `obj_id`)"
        ),
        ("node", "reset") => "`node reset`: a node's counters count the tasks that entered it and are in it; the engine keeps them, and they are not set by hand".to_string(),
        ("obj_scheme", "compare" | "merge") => format!(
            "`obj_scheme {kind}`: Conveyor keeps no versions of a definition to compare or merge (`process update` replaces it, `obj_scheme get` gives the one in use)"
        ),
        ("obj_scheme", "get" | "check") if !matches!(field("obj_type"), "" | "conv") => format!(
            "`obj_type: {}`: Conveyor has no folders, dashboards, projects or stages; a scheme is a process's (`obj_type: conv`)",
            field("obj_type")
        ),
        ("obj_scheme", "create" | "upload" | "validate")
            if op.get("async") == Some(&Value::Bool(true)) =>
        {
            "`async: true`: an upload runs at once here and its answer lists the processes made (there is no upload to poll later); send `async: false` or leave it out".to_string()
        }
        ("obj_scheme", "create" | "upload" | "validate")
            if op.get("rewrite_alias") == Some(&Value::Bool(true)) =>
        {
            "`rewrite_alias: true`: an alias in use stays with its process and is not moved to an uploaded one; upload with `with_alias: false` for processes without aliases".to_string()
        }
        _ => return None,
    };
    Some(why)
}

/// The most `filters` one `node list` takes, and the longest ref one may name (bytes).
const MAX_FILTERS: usize = 10;
const MAX_FILTER_VALUE: usize = 1024;

/// An op the request cannot be run with, answered 400 before any of its ops runs: one
/// Corezoid has and Conveyor does not ([`not_supported`]: the client expects an effect
/// it cannot have, so nothing of the request is done), or one whose fields break the
/// swagger's request schema where it fixes their values (`node list`'s `sort` and
/// `filters` are enums). The refusal says why, and names the field.
pub(crate) fn malformed(op: &Value) -> Option<Value> {
    let Value::Object(op) = op else {
        return None;
    };
    if let Some(why) = not_supported(op) {
        return Some(op_error(format!("not supported by Conveyor: {why}")));
    }
    if op.get("obj").and_then(Value::as_str) != Some("node")
        || op.get("type").and_then(Value::as_str) != Some("list")
    {
        return None;
    }
    node_order(op).err()
}

/// `sort` (`ASC`, the default, or `DESC`) and the refs of `filters` (`[{"name": "ref",
/// "fun": "eq", "value": "…"}]`, the swagger's only filter).
fn node_order(op: &Map<String, Value>) -> Result<(bool, Vec<String>), Value> {
    let descending = match op.get("sort") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("asc") => false,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("desc") => true,
        Some(other) => return Err(refused("sort", other, "`sort` is `ASC` or `DESC`")),
    };
    let filters = match op.get("filters") {
        None | Some(Value::Null) => return Ok((descending, Vec::new())),
        Some(Value::Array(filters)) => filters,
        Some(other) => {
            return Err(refused(
                "filters",
                other,
                "`filters` is a list of `{\"name\": \"ref\", \"fun\": \"eq\", \"value\": …}`",
            ));
        }
    };
    if filters.len() > MAX_FILTERS {
        return Err(refused(
            "filters",
            &json!(filters.len()),
            format!("{} filters; the limit is {MAX_FILTERS}", filters.len()),
        ));
    }
    let refs = filters
        .iter()
        .enumerate()
        .map(|(i, filter)| filter_ref(i, filter))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((descending, refs))
}

/// The ref filter `i` of a `node list` names, or why it is not one.
fn filter_ref(i: usize, filter: &Value) -> Result<String, Value> {
    let at = format!("filters[{i}]");
    let Value::Object(filter) = filter else {
        return Err(refused(
            &at,
            filter,
            format!("`{at}` is an object `{{\"name\": \"ref\", \"fun\": \"eq\", \"value\": …}}`"),
        ));
    };
    if let Some(key) = filter
        .keys()
        .find(|k| !matches!(k.as_str(), "name" | "fun" | "value"))
    {
        return Err(refused(
            &format!("{at}.{key}"),
            &filter[key],
            format!("`{at}` has `name`, `fun` and `value` only, not `{key}`"),
        ));
    }
    match filter.get("name") {
        Some(Value::String(name)) if name == "ref" => {}
        Some(other) => {
            return Err(refused(
                &format!("{at}.name"),
                other,
                format!("`{at}.name`: tasks in a node are filtered by `ref` only"),
            ));
        }
        None => {
            return Err(op_error(format!(
                "`{at}.name` is required (`ref`, the only filter)"
            )));
        }
    }
    match filter.get("fun") {
        None | Some(Value::Null) => {}
        Some(Value::String(fun)) if fun == "eq" => {}
        Some(other) => {
            return Err(refused(
                &format!("{at}.fun"),
                other,
                format!("`{at}.fun`: a ref is compared with `eq` only"),
            ));
        }
    }
    let value = match filter.get("value") {
        Some(Value::String(v)) => v.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(refused(
                &format!("{at}.value"),
                other,
                format!("`{at}.value` is the ref (a string)"),
            ));
        }
        None => return Err(op_error(format!("`{at}.value` is required (the ref)"))),
    };
    if value.is_empty() || value.len() > MAX_FILTER_VALUE {
        return Err(refused(
            &format!("{at}.value"),
            &json!(value.chars().take(64).collect::<String>()),
            format!("`{at}.value` is a ref of 1 to {MAX_FILTER_VALUE} bytes"),
        ));
    }
    Ok(value)
}

/// The process `field` names (a number, or a string id or alias).
fn process(
    op: &Map<String, Value>,
    field: &'static str,
    inputs: &mut OpInputs,
) -> Result<String, Value> {
    let name = match op.get(field) {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(other) => {
            return Err(refused(
                field,
                other,
                format!("`{field}` is a process id (or alias)"),
            ));
        }
        None => return Err(op_error(format!("`{field}` is required: the process"))),
    };
    inputs.process = Some((field, Value::String(name.clone())));
    Ok(name)
}

/// A `ref` names a ref and an `obj_id` an id, never one for the other.
fn task(op: &Map<String, Value>, inputs: &mut OpInputs) -> Result<TaskName, Value> {
    if let Some(r) = reference(op)? {
        inputs.task = Some(("ref", Value::String(r.clone())));
        return Ok(TaskName::Ref(r));
    }
    let id = match op.get("obj_id") {
        None | Some(Value::Null) => return Err(op_error("`ref` or `obj_id` is required")),
        Some(Value::String(id)) => id.parse::<u64>().ok(),
        Some(Value::Number(id)) => id.as_u64(),
        Some(_) => None,
    };
    let given = op.get("obj_id").cloned().unwrap_or(Value::Null);
    match id {
        Some(id) => {
            inputs.task = Some(("obj_id", given));
            Ok(TaskName::Id(id))
        }
        None => Err(refused(
            "obj_id",
            &given,
            "`obj_id` must be a task id (a whole number)",
        )),
    }
}

fn reference(op: &Map<String, Value>) -> Result<Option<String>, Value> {
    match op.get("ref") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(refused("ref", other, "`ref` is a string or a number")),
    }
}

fn text(op: &Map<String, Value>, key: &str) -> Result<Option<String>, Value> {
    match op.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(refused(key, other, format!("`{key}` is a string"))),
    }
}

/// A refusal of the command layer, with `key` and `value` when it is about one input.
pub(crate) fn command_error(runtime: &Runtime, e: &CommandError, inputs: &OpInputs) -> Value {
    let mut answer = op_error(e.to_string());
    if e.is_duplicate_ref() {
        answer["tag"] = json!("not_unical_ref");
    }
    let named = |field: &Option<(&'static str, Value)>| {
        field.clone().map(|(key, value)| (key.to_string(), value))
    };
    let about = if e.is_process_refused() {
        named(&inputs.process)
    } else if e.is_not_found() {
        named(&inputs.task)
    } else if let Some(key) = e.input_key() {
        let value = match (key, &inputs.task) {
            ("ref", Some(("ref", reference))) => reference.clone(),
            _ => inputs.data.get(key).cloned().unwrap_or(Value::Null),
        };
        let shown = match &inputs.process_name {
            Some(process) => door::shown_value(runtime, process, key, &value),
            None => value,
        };
        Some((key.to_string(), shown))
    } else {
        None
    };
    if let Some((key, value)) = about {
        answer["key"] = json!(key);
        answer["value"] = as_text(&value);
    }
    answer
}

/// An op's outcome as Corezoid's task API answers it; `obj` is the op's `obj`.
pub(crate) fn answer(answer: OpAnswer, obj: &str) -> Value {
    match answer {
        OpAnswer::Created {
            id,
            reference,
            reply: Some(None),
        } => json!({
            "proc": "timeout", "obj": "task", "ref": reference, "obj_id": id.to_string(),
            "description": format!("task {id} did not answer in time (it goes on: look it up by its id)"),
        }),
        OpAnswer::Created {
            id,
            reference,
            reply: Some(Some(reply)),
        } => json!({
            "proc": "ok", "obj": "task", "ref": reference, "obj_id": id.to_string(),
            "reply": reply.data, "reply_error": reply.error, "node": reply.node,
            "status": reply.status.as_str(),
        }),
        OpAnswer::Created {
            id,
            reference,
            reply: None,
        }
        | OpAnswer::Modified { id, reference }
        | OpAnswer::Deleted { id, reference } => {
            json!({"proc": "ok", "obj": "task", "ref": reference, "obj_id": id.to_string()})
        }
        OpAnswer::Shown(task) => {
            let mut shown = task_fields(&task);
            shown["proc"] = json!("ok");
            shown["task_id"] = json!(task.id.to_string());
            shown["node"] = json!(task.node);
            shown["node_id"] = json!(task.node);
            shown["conveyor_status"] = json!(task.status);
            shown
        }
        OpAnswer::Stepped(s) => json!({
            "proc": "ok",
            "obj": "task",
            "obj_id": s.id.to_string(),
            "prev_conv_id": s.process,
            "prev_conv_name": s.process_name,
            "prev_node_id": s.from,
            "prev_node_name": s.from_title.as_deref().unwrap_or(&s.from),
            "conv_id": s.process,
            "conv_name": s.process_name,
            "node_id": s.to,
            "node_name": s.to_title.as_deref().unwrap_or(&s.to),
            "data": s.data,
            "prev_logic": s.debug.prev_logic,
            "prev_semaphor": s.debug.prev_semaphor,
            "branches": s.debug.branches,
            "logic": s.debug.logic,
            "history": s.debug.history,
        }),
        OpAnswer::History(h) => history(&h),
        OpAnswer::NodeTasks(n) => json!({
            "proc": "ok",
            "obj": "node",
            "obj_id": n.node,
            "count": n.count,
            "list": n.tasks.iter().map(task_fields).collect::<Vec<_>>(),
        }),
        OpAnswer::ProcessNodes(detail) => process_nodes(&detail),
        OpAnswer::Processes(list) => processes(&list),
        OpAnswer::Scheme(process) => json!({
            "proc": "ok",
            "obj": "obj_scheme",
            "scheme": [process],
        }),
        OpAnswer::Made(made) => made_answer(&made, obj),
        OpAnswer::Changed { id, version } => json!({
            "proc": "ok",
            "obj": obj,
            "obj_id": id,
            "version": version,
        }),
        OpAnswer::Checked => json!({"proc": "ok", "obj": obj}),
        OpAnswer::ProcessInfo(info) => json!({
            "proc": "ok",
            "obj": "conv",
            "obj_id": info.detail.summary.id,
            "title": info.detail.summary.title,
            "description": info.detail.description.clone().unwrap_or_default(),
            "alias": info.detail.summary.alias,
            "status": "active",
            "conv_type": "process",
            "version": info.detail.summary.version,
            "size": info.detail.nodes.len(),
            "tasks": info.detail.summary.tasks,
            "create_time": info.created.div_euclid(1000),
            "change_time": info.changed.div_euclid(1000),
        }),
        OpAnswer::Node(node) => json!({
            "proc": "ok",
            "obj": "node",
            "obj_id": node.scheme.name,
            "title": node.scheme.title,
            "description": node.scheme.description,
            "obj_type": node.scheme.obj_type,
            "kind": node.kind,
            "logics": node.scheme.logics,
            "semaphors": node.scheme.semaphors,
            "count": node.total,
            "now": node.now,
        }),
        OpAnswer::NodeChanged { id, node, version } => json!({
            "proc": "ok",
            "obj": "node",
            "conv_id": id,
            "obj_id": node,
            "version": version,
        }),
    }
}

/// `conv list`: the process and its nodes with their counts.
fn process_nodes(detail: &conveyor_commands::ProcessDetail) -> Value {
    json!({
        "proc": "ok",
        "obj": "conv",
        "obj_id": detail.summary.id,
        "title": detail.summary.title,
        "description": detail.description.clone().unwrap_or_default(),
        "alias": detail.summary.alias,
        "status": "active",
        "conv_type": "process",
        "version": detail.summary.version,
        "list": detail.nodes.iter().map(|n| json!({
            "obj": "node",
            "obj_id": n.id,
            "title": n.title.clone().unwrap_or_else(|| n.id.clone()),
            "obj_type": match n.kind { "start" => 1, "final" => 2, _ => 0 },
            "kind": n.kind,
            "count": n.now,
            "total": n.total,
        })).collect::<Vec<_>>(),
    })
}

/// `convs list`: the processes the key may use.
fn processes(list: &[conveyor_commands::ProcessSummary]) -> Value {
    json!({
        "proc": "ok",
        "obj": "convs",
        "list": list.iter().map(|p| json!({
            "obj_id": p.id,
            "obj_type": "conv",
            "title": p.title,
            "alias": p.alias,
            "status": "active",
            "conv_type": "process",
            "version": p.version,
            "tasks": p.tasks,
        })).collect::<Vec<_>>(),
    })
}

/// Processes made: `conv create` answers the one it made as `obj_id`, an `obj_scheme`
/// upload lists them in `scheme` with the Corezoid ids they came from.
fn made_answer(made: &[manage::Made], obj: &str) -> Value {
    match made {
        [one] if obj == "conv" => json!({
            "proc": "ok",
            "obj": "conv",
            "obj_id": one.id,
            "alias": one.alias,
            "title": one.title,
        }),
        _ => json!({
            "proc": "ok",
            "obj": obj,
            "scheme": made.iter().map(|m| json!({
                "obj_id": m.id,
                "obj_type": "conv",
                "title": m.title,
                "alias": m.alias,
                "old_obj_id": m.corezoid_id,
            })).collect::<Vec<_>>(),
        }),
    }
}

/// A task as `show` and `node list` give it: the swagger's fields, data masked.
fn task_fields(task: &TaskView) -> Value {
    json!({
        "obj": "task",
        "obj_id": task.id.to_string(),
        "ref": task.reference,
        "status": corezoid_status(task),
        "user_id": task.created_by,
        "create_time": task.created.div_euclid(1000),
        "change_time": task.changed.div_euclid(1000),
        "node_prev_id": task.prev_node,
        "data": task.data,
    })
}

/// A task's history as `task_history list` answers it: the swagger's fields, and each
/// event's own (`event`, `from`, `via`, `source`, …). Events were masked when written.
fn history(h: &manage::TaskHistory) -> Value {
    let list: Vec<Value> = h
        .events
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let mut item = json!({
                "history_id": i,
                "conv_id": h.process,
                "node_id": event.node,
                "node_prev_id": event.prev_node,
                "user_id": if event.created { json!(h.created_by) } else { Value::Null },
                "create_time_ms": event.at,
            });
            if event.created {
                item["status"] = json!("created");
            }
            for (key, value) in &event.fields {
                item[key] = value.clone();
            }
            item
        })
        .collect();
    json!({
        "proc": "ok",
        "obj": "task_history",
        "obj_id": h.id.to_string(),
        "ref": h.reference,
        "list": list,
    })
}

/// A task's status in the swagger's words: `processed` once it stopped at a final node
/// (or failed), `delayed` while a timer holds it, else `processing`. (Corezoid's
/// `created`, `canceled` and `deleted` have no state here: a task is moved at once, and a
/// deleted one is gone.)
fn corezoid_status(task: &TaskView) -> &'static str {
    match task.status {
        "done" | "failed" => "processed",
        _ if task.wake_kind == Some("timer") => "delayed",
        _ => "processing",
    }
}
