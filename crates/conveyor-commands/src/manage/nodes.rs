//! The task API's node ops: the tasks in a node (`node list`, with `sort` and
//! `filters`), a node as Corezoid describes it (`node show`, and the logics a step's
//! answer carries), and a node's title or description (`node modify`). A node's logics
//! come from conveyor-corezoid's export of the definition, with its 24-hex node ids
//! turned back into Conveyor's node names.

use std::collections::HashMap;

use conveyor_runtime::{Runtime, mask_data};
use serde_json::{Value, json};

use super::{MAX_DESCRIPTION, MAX_TITLE, bounded, kept_or_rewritten, unexpected, update};
use crate::answer::TaskView;
use crate::{Caller, CommandError};

/// A node as Corezoid describes it: `node show`, and the logics in a step's answer.
#[derive(Debug, Clone)]
pub struct NodeScheme {
    pub name: String,
    pub title: String,
    pub description: String,
    /// 0 a node, 1 the start, 2 a final node (Corezoid's `obj_type`).
    pub obj_type: i64,
    /// Its logics and semaphors as the Corezoid export writes them, with the nodes they
    /// lead to named by Conveyor's names.
    pub logics: Value,
    pub semaphors: Value,
}

/// The tasks in one node (`node list`).
#[derive(Debug, Clone)]
pub struct NodeTasks {
    pub node: String,
    /// Tasks in the node now (the node's counter).
    pub count: i64,
    pub tasks: Vec<TaskView>,
}

/// The most tasks one `node list` answers.
pub const MAX_NODE_LIST: usize = 1000;

/// Every node of a process as Corezoid describes it, in the definition's order: the
/// export's node objects (`process export --format corezoid`), with the 24-hex ids the
/// export gives nodes turned back into Conveyor's node names, which the rest of the API
/// uses. Only the definition is read: clone-time values are not in it.
pub fn node_schemes(
    loaded: &conveyor_runtime::LoadedProcess,
) -> Result<Vec<NodeScheme>, CommandError> {
    schemes_and_ids(loaded).map(|(schemes, _)| schemes)
}

/// [`node_schemes`], and the export's node ids with the names they stand for.
fn schemes_and_ids(
    loaded: &conveyor_runtime::LoadedProcess,
) -> Result<(Vec<NodeScheme>, HashMap<String, String>), CommandError> {
    let export_error = |source| CommandError::Export {
        process: loaded.record.id.to_string(),
        source,
    };
    let definition: Value = serde_yaml::from_str(&loaded.record.definition)
        .map_err(|e| export_error(conveyor_corezoid::ExportError::Yaml(e.to_string())))?;
    let exported = conveyor_corezoid::export_value(&definition, Some(loaded.record.id))
        .map_err(export_error)?;
    let names: Vec<String> = definition
        .get("nodes")
        .and_then(Value::as_object)
        .map(|nodes| nodes.keys().cloned().collect())
        .unwrap_or_default();
    let objects = exported["scheme"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // The export writes one object per node, in the definition's order.
    let ids: HashMap<String, String> = objects
        .iter()
        .zip(&names)
        .filter_map(|(o, name)| Some((o["id"].as_str()?.to_string(), name.clone())))
        .collect();
    let schemes = objects
        .into_iter()
        .zip(names)
        .map(|(mut object, name)| {
            named_nodes(&mut object, &ids);
            let text = |key: &str| object[key].as_str().unwrap_or_default().to_string();
            NodeScheme {
                title: match text("title") {
                    t if t.is_empty() => name.clone(),
                    t => t,
                },
                description: text("description"),
                obj_type: object["obj_type"].as_i64().unwrap_or(0),
                logics: object["condition"]["logics"].take(),
                semaphors: object["condition"]["semaphors"].take(),
                name,
            }
        })
        .map(|mut n| {
            for list in [&mut n.logics, &mut n.semaphors] {
                if list.is_null() {
                    *list = Value::Array(Vec::new());
                }
            }
            n
        })
        .collect();
    Ok((schemes, ids))
}

/// Replaces the export's node ids with node names in every `…node_id` field.
fn named_nodes(value: &mut Value, ids: &HashMap<String, String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    Value::String(id) if key.ends_with("node_id") => {
                        if let Some(name) = ids.get(id.as_str()) {
                            *id = name.clone();
                        }
                    }
                    other => named_nodes(other, ids),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| named_nodes(v, ids)),
        _ => {}
    }
}

/// Which tasks of a node `node list` answers, and in which order (the swagger's
/// `filters`, `sort`, `limit`, `offset`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeQuery {
    /// At most [`MAX_NODE_LIST`].
    pub limit: usize,
    pub offset: usize,
    /// Newest first (`sort: DESC`); else oldest first, as tasks were created.
    pub descending: bool,
    /// `filters` `{name: ref, fun: eq, value}`: only the task with this ref (all of them
    /// must name the same ref for a task to match).
    pub refs: Vec<String>,
}

/// The most tasks of one node `sort: DESC` reads to find the newest: the store lists a
/// node's tasks oldest first, so the newest are found only by reading them all.
pub const MAX_DESC_SCAN: usize = 10_000;

/// The tasks in `node` that `query` asks for.
pub fn node_tasks(
    runtime: &Runtime,
    caller: &Caller,
    process: &str,
    node: &str,
    query: &NodeQuery,
) -> Result<NodeTasks, CommandError> {
    let loaded = crate::door::scoped(runtime, caller, process)?;
    if !loaded.process.nodes.contains_key(node) {
        return Err(CommandError::Usage(format!(
            "process {} has no node `{node}`",
            loaded.record.id
        )));
    }
    let limit = query.limit.min(MAX_NODE_LIST);
    let count = runtime
        .store()
        .counters(loaded.record.id)?
        .into_iter()
        .find(|(n, _)| n == node)
        .map_or(0, |(_, c)| c.now);
    let view = |t: &conveyor_store::TaskRecord| {
        TaskView::of(t, mask_data(&loaded.process, &t.secret_keys, &t.data))
    };
    let tasks: Vec<TaskView> = if let Some(first) = query.refs.first() {
        // A ref names at most one task: looked up, not scanned for.
        let found = if query.refs.iter().all(|r| r == first) {
            runtime.store().task_by_ref(loaded.record.id, first)?
        } else {
            None
        };
        found
            .filter(|t| t.node == node)
            .iter()
            .map(view)
            .skip(query.offset)
            .take(limit)
            .collect()
    } else if query.descending {
        let read = runtime
            .store()
            .tasks(loaded.record.id, Some(node), MAX_DESC_SCAN + 1)?;
        if read.len() > MAX_DESC_SCAN {
            return Err(CommandError::Usage(format!(
                "`sort: DESC` reads the whole node to find its newest tasks, and node `{node}` holds more than {MAX_DESC_SCAN}; use `sort: ASC` with `offset`"
            )));
        }
        read.iter()
            .rev()
            .skip(query.offset)
            .take(limit)
            .map(view)
            .collect()
    } else {
        runtime
            .store()
            .tasks(
                loaded.record.id,
                Some(node),
                limit.saturating_add(query.offset),
            )?
            .iter()
            .skip(query.offset)
            .map(view)
            .collect()
    };
    Ok(NodeTasks {
        node: node.to_string(),
        count,
        tasks,
    })
}

/// `node show`: a node as Corezoid describes it, with its counters.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub scheme: NodeScheme,
    pub kind: &'static str,
    /// Tasks in it now, and all that entered it.
    pub now: i64,
    pub total: u64,
}

/// The node named `node` (its name, or the Corezoid id it was imported with).
fn node_name(loaded: &conveyor_runtime::LoadedProcess, node: &str) -> Result<String, CommandError> {
    if loaded.process.nodes.contains_key(node) {
        return Ok(node.to_string());
    }
    loaded
        .process
        .nodes
        .values()
        .find(|n| n.corezoid_id.as_deref() == Some(node))
        .map(|n| n.id.clone())
        .ok_or_else(|| {
            CommandError::Usage(format!("process {} has no node `{node}`", loaded.record.id))
        })
}

pub fn node_show(
    runtime: &Runtime,
    caller: &Caller,
    process: &str,
    node: &str,
) -> Result<NodeInfo, CommandError> {
    let loaded = crate::door::scoped(runtime, caller, process)?;
    let name = node_name(&loaded, node)?;
    let scheme = node_schemes(&loaded)?
        .into_iter()
        .find(|n| n.name == name)
        .ok_or_else(|| unexpected("the export of the process"))?;
    let (now, total) = runtime
        .store()
        .counters(loaded.record.id)?
        .into_iter()
        .find(|(n, _)| *n == name)
        .map_or((0, 0), |(_, c)| (c.now, c.total));
    Ok(NodeInfo {
        kind: loaded
            .process
            .nodes
            .get(&name)
            .map_or("", |n| n.kind.name()),
        scheme,
        now,
        total,
    })
}

/// What a `node modify` asks: a new title or description; the node's logics, semaphors
/// and type as the client last read them (the swagger requires `logics`), which must
/// be what they are.
#[derive(Debug, Clone, Default)]
pub struct NodeChange {
    pub title: Option<String>,
    pub description: Option<String>,
    pub logics: Option<Value>,
    pub semaphors: Option<Value>,
    pub obj_type: Option<i64>,
}

/// `node modify`: a node's title and/or description written into the definition (its
/// text edited in place, as `conv modify` does). Its logics, semaphors and type are
/// Conveyor's node definition: changing them is refused (a process changes through
/// `process update` or an `obj_scheme` upload, where the whole definition is checked).
pub fn node_modify(
    runtime: &Runtime,
    caller: &Caller,
    process: &str,
    node: &str,
    change: &NodeChange,
) -> Result<(u64, String, u32), CommandError> {
    caller.must_use_every_process("changing a process")?;
    let loaded = crate::door::scoped(runtime, caller, process)?;
    let name = node_name(&loaded, node)?;
    if let Some(title) = &change.title {
        bounded("title", title, MAX_TITLE)?;
    }
    if let Some(description) = &change.description {
        bounded("description", description, MAX_DESCRIPTION)?;
    }
    let (schemes, ids) = schemes_and_ids(&loaded)?;
    let now = schemes
        .iter()
        .find(|n| n.name == name)
        .ok_or_else(|| unexpected("the export of the process"))?;
    let differs = |given: &Option<Value>, current: &Value| {
        given.as_ref().is_some_and(|given| {
            let mut given = given.clone();
            named_nodes(&mut given, &ids);
            &given != current
        })
    };
    let changed: Vec<&str> = [
        ("logics", differs(&change.logics, &now.logics)),
        ("semaphors", differs(&change.semaphors, &now.semaphors)),
        (
            "obj_type",
            change.obj_type.is_some_and(|t| t != now.obj_type),
        ),
    ]
    .into_iter()
    .filter_map(|(field, differs)| differs.then_some(field))
    .collect();
    if !changed.is_empty() {
        return Err(CommandError::NotSupported(format!(
            "changing a node's {} through the task API: a node's logics are its Conveyor definition, changed whole and checked by `conveyor process update` or an `obj_scheme` upload with `obj_id`; `node modify` changes `title` and `description` (send `logics`, `semaphors` and `obj_type` as `node show` gives them, or leave them out)",
            changed.join(", ")
        )));
    }
    if change.title.is_none() && change.description.is_none() {
        return Ok((loaded.record.id, name, loaded.record.version));
    }
    let stored = &loaded.record.definition;
    let mut definition: Value = serde_yaml::from_str(stored)
        .map_err(|e| CommandError::Scheme(format!("the stored definition: {e}")))?;
    let Some(fields) = definition
        .get_mut("nodes")
        .and_then(|n| n.get_mut(&name))
        .and_then(Value::as_object_mut)
    else {
        return Err(CommandError::Scheme(format!(
            "the stored definition has no mapping for node `{name}`"
        )));
    };
    let mut text = Some(stored.clone());
    for (key, value) in [
        ("title", &change.title),
        ("description", &change.description),
    ] {
        if let Some(value) = value {
            let exists = fields.contains_key(key);
            fields.insert(key.into(), json!(value));
            text =
                text.and_then(|t| crate::yaml_edit::set_node_field(&t, &name, key, value, exists));
        }
    }
    let yaml = kept_or_rewritten(text, &definition)?;
    let (id, version) = update(
        runtime,
        caller,
        loaded.record.id,
        &loaded.process.name,
        &yaml,
    )?;
    Ok((id, name, version))
}
