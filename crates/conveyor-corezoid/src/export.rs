//! One Conveyor process into a Corezoid export (`conveyor process export --format
//! corezoid`): the JSON array Corezoid's "Export → JSON" gives, with one process object.
//!
//! Each node becomes one Corezoid node with its logics (the reverse of `map.rs`: a
//! `condition` is `go_if_const`s and a `go`, an `api_call` an `api` logic, a `delay` a
//! `time` semaphor, …). Conveyor has fields Corezoid has no place for (retries, param
//! patterns, secrets, `render`, a `sum`'s holder…), so the whole definition also rides
//! along in the process object's `conveyor` key, with a fingerprint of the scheme it
//! was exported with. The importer uses that definition only while the scheme is
//! unchanged; a process edited in Corezoid is mapped from its logics.

use serde_json::{Map, Value, json};

// One module per node kind (in `export/`): how a node of that kind is written as
// Corezoid logics. A new kind is one module and one line in `KINDS`.
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

/// Why a definition could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the definition is not YAML: {0}")]
    Yaml(String),
    #[error("the definition has no `nodes` mapping")]
    NoNodes,
}

/// The key of the process object that carries the Conveyor definition.
pub(crate) const EXTENSION: &str = "conveyor";

/// The export of one process, as pretty JSON (an array of one process object).
pub fn export(definition: &str, obj_id: Option<u64>) -> Result<String, ExportError> {
    let value: Value =
        serde_yaml::from_str(definition).map_err(|e| ExportError::Yaml(e.to_string()))?;
    let process = export_value(&value, obj_id)?;
    serde_json::to_string_pretty(&Value::Array(vec![process]))
        .map_err(|e| ExportError::Yaml(e.to_string()))
}

/// The process object of `definition` (YAML read as JSON).
pub fn export_value(definition: &Value, obj_id: Option<u64>) -> Result<Value, ExportError> {
    let nodes = definition
        .get("nodes")
        .and_then(Value::as_object)
        .ok_or(ExportError::NoNodes)?;
    // Corezoid node ids: the node's own `corezoid_id` when it was imported, else a
    // 24-hex id made from the process id and the node's place.
    let base = obj_id.unwrap_or(0);
    let mut ids: Map<String, Value> = Map::new();
    for (i, (name, node)) in nodes.iter().enumerate() {
        let id = node
            .get("corezoid_id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty() && !ids.values().any(|v| v == *id))
            .map(str::to_string)
            .unwrap_or_else(|| format!("{base:08x}{:016x}", i + 1));
        ids.insert(name.clone(), Value::String(id));
    }
    let id_of = |name: &str| -> String {
        ids.get(name)
            .and_then(Value::as_str)
            .unwrap_or(name)
            .to_string()
    };
    let settings_keep = definition.get("settings").and_then(|s| s.get("keep"));
    let mut scheme_nodes = Vec::new();
    for (name, node) in nodes {
        let mut object = node_object(name, node, &id_of);
        if text(node, "type") == "final" {
            object["options"] = final_options(node.get("keep").or(settings_keep));
        }
        scheme_nodes.push(object);
    }
    let title = text(definition, "title");
    let name = text(definition, "process");
    let mut process = Map::new();
    process.insert("obj_type".into(), json!(1));
    if let Some(id) = obj_id {
        process.insert("obj_id".into(), json!(id));
    }
    process.insert(
        "title".into(),
        Value::String(if title.is_empty() { name } else { title }),
    );
    process.insert(
        "description".into(),
        Value::String(text(definition, "description")),
    );
    process.insert("status".into(), json!("active"));
    process.insert("params".into(), params(definition));
    let scheme = json!({ "nodes": scheme_nodes });
    process.insert(
        EXTENSION.into(),
        json!({
            "fingerprint": fingerprint(&scheme),
            "definition": definition,
        }),
    );
    process.insert("scheme".into(), scheme);
    Ok(Value::Object(process))
}

/// A stable digest of a scheme (FNV-1a of its JSON text): whether it was edited since.
pub(crate) fn fingerprint(scheme: &Value) -> String {
    let text = serde_json::to_string(scheme).unwrap_or_default();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn params(definition: &Value) -> Value {
    let Some(params) = definition.get("params").and_then(Value::as_object) else {
        return json!([]);
    };
    let list: Vec<Value> = params
        .iter()
        .map(|(name, spec)| {
            let flags = if spec.get("required").and_then(Value::as_bool) == Some(true) {
                json!(["required"])
            } else {
                json!([])
            };
            json!({
                "name": name,
                "type": "string",
                "descr": text(spec, "description"),
                "flags": flags,
                "regex": text(spec, "pattern"),
                "regex_error_text": "",
            })
        })
        .collect();
    Value::Array(list)
}

/// One node as its kind's module of `export/` builds it: its logics, semaphors,
/// `obj_type` and `extra`.
pub(crate) struct NodeOut<'a> {
    /// The node as written (YAML read as JSON).
    pub node: &'a Value,
    id_of: &'a dyn Fn(&str) -> String,
    /// The node's `on_error`, as a Corezoid id.
    err: Option<String>,
    pub obj_type: u8,
    pub logics: Vec<Value>,
    pub semaphors: Vec<Value>,
    pub extra: Value,
}

impl NodeOut<'_> {
    /// The Corezoid id of the node named `name`.
    pub fn id_of(&self, name: &str) -> String {
        (self.id_of)(name)
    }

    /// A `go` logic to the node named in the field `key`, if the node names one.
    pub fn go(&mut self, key: &str) {
        if let Some(to) = self.node.get(key).and_then(Value::as_str) {
            let to = self.id_of(to);
            self.logics.push(json!({ "type": "go", "to_node_id": to }));
        }
    }

    /// An action logic, with the node's `on_error` as its `err_node_id`.
    pub fn action(&mut self, mut logic: Map<String, Value>) {
        if let Some(err) = &self.err {
            logic.insert("err_node_id".into(), Value::String(err.clone()));
        }
        self.logics.push(Value::Object(logic));
    }
}

/// How a node kind is exported.
type KindExport = fn(&mut NodeOut<'_>);

/// Every node kind with a Corezoid form, by its `type:` name (a kind not listed is
/// exported as a node with no logics).
const KINDS: [(&str, KindExport); 16] = [
    ("start", start::export),
    ("final", final_node::export),
    ("condition", condition::export),
    ("set_param", set_param::export),
    ("delay", delay::export),
    ("api_call", api_call::export),
    ("escalation", escalation::export),
    ("copy_task", copy_task::export),
    ("modify_task", modify_task::export),
    ("sum", sum::export),
    ("call_process", call_process::export),
    ("reply", reply::export),
    ("wait_callback", wait_callback::export),
    ("code", code::export),
    ("queue", queue::export),
    ("get_task", get_task::export),
];

/// One node: its Corezoid object (`id`, `obj_type`, `condition.logics`/`semaphors`).
fn node_object(name: &str, node: &Value, id_of: &dyn Fn(&str) -> String) -> Value {
    let kind = text(node, "type");
    let mut out = NodeOut {
        node,
        id_of,
        err: node.get("on_error").and_then(Value::as_str).map(id_of),
        obj_type: 0,
        logics: Vec::new(),
        semaphors: Vec::new(),
        extra: json!({}),
    };
    if let Some((_, export)) = KINDS.iter().find(|(k, _)| *k == kind) {
        export(&mut out);
    }
    let NodeOut {
        obj_type,
        logics,
        mut semaphors,
        extra,
        ..
    } = out;
    // `timeout: D -> node`, `{ after: D, to: node }` or `{ until: T, to: node }`: a `time`
    // semaphor. Corezoid reads a template value as an absolute time; a duration read
    // from the task is marked (`conveyor_relative`) so the importer reads it back as one.
    let limit = match node.get("timeout") {
        Some(Value::String(limit)) => limit
            .split_once("->")
            .or_else(|| limit.split_once('→'))
            .map(|(after, to)| (after.trim().to_string(), to.trim().to_string(), false)),
        Some(limit @ Value::Object(_)) => match limit.get("until") {
            Some(until) => Some((scalar_text(until), text(limit, "to"), true)),
            None => Some((text(limit, "after"), text(limit, "to"), false)),
        },
        _ => None,
    };
    if let Some((value, target, absolute)) = limit {
        let mut semaphor = Map::new();
        semaphor.insert("type".into(), json!("time"));
        match crate::map::seconds_of(&value) {
            Some(secs) if !absolute => {
                semaphor.insert("value".into(), json!(secs));
            }
            _ => {
                if !absolute {
                    semaphor.insert("conveyor_relative".into(), json!(true));
                }
                semaphor.insert("value".into(), Value::String(value));
            }
        }
        semaphor.insert("dimension".into(), json!("sec"));
        semaphor.insert("to_node_id".into(), Value::String(id_of(&target)));
        semaphors.push(Value::Object(semaphor));
    }
    // `alert: N -> node` or `{ at_least: N, to: node }`: a `count` semaphor.
    let alert = match node.get("alert") {
        Some(Value::String(alert)) => alert
            .split_once("->")
            .or_else(|| alert.split_once('→'))
            .map(|(n, to)| (n.trim().to_string(), to.trim().to_string())),
        Some(Value::Object(_)) => node
            .get("alert")
            .map(|a| (text(a, "at_least"), text(a, "to"))),
        _ => None,
    };
    if let Some((at_least, target)) = alert {
        let value = match at_least.parse::<u64>() {
            Ok(n) => json!(n),
            Err(_) => Value::String(at_least),
        };
        semaphors.push(json!({
            "type": "count",
            "value": value,
            "esc_node_id": id_of(&target),
        }));
    }
    let title = match text(node, "title") {
        t if t.is_empty() => name.to_string(),
        t => t,
    };
    json!({
        "id": id_of(name),
        "obj_type": obj_type,
        "title": title,
        "description": text(node, "description"),
        "condition": { "logics": logics, "semaphors": semaphors },
        "extra": serde_json::to_string(&extra).unwrap_or_default(),
        "options": null,
    })
}

/// A final node's `options`: `save_task` unless its tasks are removed at once (`keep:
/// 0`, its own or the process's), with the `keep` as written beside it (Corezoid keeps
/// a saved task until the end of the month; the importer reads the `keep` back).
fn final_options(keep: Option<&Value>) -> Value {
    let removed_at_once = match keep {
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::String(s)) => crate::map::seconds_of(s.trim()) == Some(0),
        _ => false,
    };
    let options = match keep {
        _ if removed_at_once => json!({ "save_task": false }),
        Some(keep @ (Value::String(_) | Value::Number(_))) => {
            json!({ "save_task": true, "keep": keep })
        }
        _ => json!({ "save_task": true }),
    };
    Value::String(options.to_string())
}

/// `process:` of a node: a number stays a number, `@alias` stays text.
fn process_ref(node: &Value) -> Value {
    match node.get("process") {
        Some(Value::Number(n)) => Value::Number(n.clone()),
        Some(Value::String(s)) => match s.trim().parse::<u64>() {
            Ok(id) => json!(id),
            Err(_) => Value::String(s.clone()),
        },
        _ => json!(""),
    }
}

/// Whether a duration is read from the task (a template or a `$.` function).
fn is_template(text: &str) -> bool {
    crate::map::seconds_of(text).is_none() && (text.contains("{{") || text.contains("$."))
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A mapping of values and their casts into Corezoid's `extra` and `extra_type`.
fn typed(values: Option<&Value>, casts: Option<&Value>) -> (Value, Value) {
    let mut out = Map::new();
    let mut types = Map::new();
    if let Some(Value::Object(values)) = values {
        for (key, value) in values {
            let cast = casts
                .and_then(|c| c.get(key))
                .and_then(Value::as_str)
                .map(str::to_string);
            let (text, ty) = match (value, cast) {
                (_, Some(cast)) => (scalar_text(value), cast),
                (Value::String(s), None) => (s.clone(), "string".to_string()),
                (Value::Number(_), None) => (value.to_string(), "number".to_string()),
                (Value::Bool(_), None) => (value.to_string(), "boolean".to_string()),
                (Value::Array(_), None) => (value.to_string(), "array".to_string()),
                (Value::Object(_), None) => (value.to_string(), "object".to_string()),
                (Value::Null, None) => (String::new(), "string".to_string()),
            };
            out.insert(key.clone(), Value::String(text));
            types.insert(key.clone(), Value::String(ty));
        }
    }
    (Value::Object(out), Value::Object(types))
}

fn api_logic(node: &Value) -> Map<String, Value> {
    let method = match text(node, "method") {
        m if m.is_empty() => "GET".to_string(),
        m => m,
    };
    let mut logic = Map::new();
    logic.insert("type".into(), json!("api"));
    logic.insert("method".into(), Value::String(method.to_ascii_lowercase()));
    logic.insert("url".into(), Value::String(text(node, "url")));
    let format = text(node, "format");
    let mut extra = json!({});
    let mut extra_type = json!({});
    match (node.get("body"), format.as_str()) {
        (body, "corezoid") => {
            logic.insert("format".into(), json!("corezoid"));
            if let Some(body) = body {
                (extra, extra_type) = typed(Some(body), None);
            }
        }
        (Some(body), "raw") => {
            logic.insert("format".into(), json!("raw"));
            logic.insert("raw_body".into(), Value::String(scalar_text(body)));
        }
        (Some(body), _) => {
            logic.insert("format".into(), json!(""));
            (extra, extra_type) = typed(Some(body), None);
        }
        (None, _) => {
            logic.insert("format".into(), json!(""));
            if let Some(query) = node.get("query") {
                (extra, extra_type) = typed(Some(query), None);
            }
        }
    }
    logic.insert("extra".into(), extra);
    logic.insert("extra_type".into(), extra_type);
    let content_type = match format.as_str() {
        "form" => "application/x-www-form-urlencoded".to_string(),
        "xml" => node
            .get("headers")
            .and_then(Value::as_object)
            .and_then(|h| {
                h.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                    .and_then(|(_, v)| v.as_str())
                    .filter(|v| v.contains("xml"))
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "application/xml".to_string()),
        _ => "application/json".to_string(),
    };
    logic.insert("content_type".into(), Value::String(content_type));
    logic.insert(
        "extra_headers".into(),
        node.get("headers").cloned().unwrap_or(json!({})),
    );
    if let Some(Value::Object(response)) = node.get("response") {
        let mut mapped = Map::new();
        for (key, value) in response {
            let t = scalar_text(value);
            let corezoid = match t.trim() {
                "{{headers}}" => "{{header}}".to_string(),
                "{{body}}" => "{{body}}".to_string(),
                other => match other
                    .strip_prefix("{{body.")
                    .and_then(|p| p.strip_suffix("}}"))
                {
                    Some(path) if !path.contains("{{") => format!("{{{{{path}}}}}"),
                    _ => other.to_string(),
                },
            };
            mapped.insert(key.clone(), Value::String(corezoid));
        }
        logic.insert("customize_response".into(), json!(true));
        logic.insert("response".into(), Value::Object(mapped));
    } else {
        logic.insert("customize_response".into(), json!(false));
    }
    let threads = node.get("concurrency").and_then(Value::as_u64).unwrap_or(0);
    logic.insert("max_threads".into(), json!(threads));
    match node.get("send_sys") {
        Some(Value::Bool(true)) => {
            logic.insert("send_sys".into(), json!(true));
            // Not signed: said with an empty `sys_secret` (Conveyor's own key).
            logic.insert("sys_secret".into(), json!(""));
        }
        Some(Value::Object(sys)) => {
            logic.insert("send_sys".into(), json!(true));
            // The template that reads the secret (never the secret itself).
            logic.insert(
                "sys_secret".into(),
                json!(text(&Value::Object(sys.clone()), "secret")),
            );
        }
        _ => {
            logic.insert("send_sys".into(), json!(false));
        }
    }
    let flag = |key: &str| node.get(key).and_then(Value::as_bool) == Some(true);
    logic.insert("rfc_format".into(), json!(flag("require_body")));
    logic.insert("debug_info".into(), json!(flag("debug")));
    logic
}

/// The Conveyor definition an export carries, when the scheme beside it is the one it
/// was exported with (a process edited in Corezoid since is mapped from its logics).
pub(crate) fn carried_definition(process: &Value) -> Option<Value> {
    let extension = process.get(EXTENSION)?;
    let scheme = process.get("scheme")?;
    let recorded = extension.get("fingerprint")?.as_str()?;
    if recorded != fingerprint(scheme) {
        return None;
    }
    let definition = extension.get("definition")?;
    definition.get("nodes")?.as_object()?;
    Some(definition.clone())
}
