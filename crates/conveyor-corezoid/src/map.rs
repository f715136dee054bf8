//! One Corezoid process into one Conveyor definition.
//!
//! A Corezoid node holds a list of logics run in order — at most one action (with its
//! `err_node_id`), then `go_if_const` routes and a final `go` — plus semaphors (timers,
//! counters). Conveyor has one kind per node, so a node with an action and routes becomes
//! the action's node followed by a `condition` node named `<node>_route`; a node with
//! routes only becomes a `condition`; a node with no logic and a `time` semaphor becomes a
//! `delay`; a node whose only logic is `go` disappears (what pointed to it points to its
//! target). Each logic type is one function below.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};

use crate::names::{Names, slug};
use crate::{Export, Import, ImportError, Imported, Unmapped};

/// Corezoid's smallest static timer (a shorter one is refused by its deploy check).
const MIN_TIMER_SECS: i64 = 30;
/// How long a task in a final node with `save_task` is kept: Corezoid keeps it until the
/// end of the month, at most 31 days.
const SAVED_TASK_KEEP: &str = "31d";

pub(crate) fn import(export: &Export) -> Result<Import, ImportError> {
    let mut out = Import::default();
    // Aliases first: every process's references are rewritten to them.
    let mut aliases: BTreeMap<i64, String> = BTreeMap::new();
    let mut taken = Names::default();
    let mut named = Vec::new();
    for (i, process) in export.processes.iter().enumerate() {
        let id = process
            .get("obj_id")
            .and_then(Value::as_i64)
            .filter(|id| *id > 0);
        let title = text(process, "title");
        // An alias file wins; then the name of a Conveyor definition the export carries;
        // then the title.
        let carried = crate::export::carried_definition(process)
            .map(|d| text(&d, "process"))
            .filter(|name| !name.is_empty());
        let fallback = format!("process_{}", i + 1);
        // Names from the file become file names: only letters, digits, `_` and `-`.
        let safe = |name: String| {
            let plain = name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if plain { name } else { slug(&name, &fallback) }
        };
        let wanted = id
            .and_then(|id| export.aliases.get(&id).cloned())
            .or(carried)
            .map(safe)
            .unwrap_or_else(|| slug(&title, &fallback));
        let alias = taken.unique(&wanted);
        if let Some(id) = id {
            aliases.insert(id, alias.clone());
        }
        named.push((id, alias));
    }
    // A process with Sum nodes gets a holder process for its sums (see `api_sum`).
    let holders: Vec<Option<String>> = export
        .processes
        .iter()
        .zip(&named)
        .map(|(process, (_, alias))| {
            let uses_sum = crate::export::carried_definition(process).is_none()
                && serde_json::to_string(process).is_ok_and(|t| t.contains("\"type\":\"api_sum\""));
            uses_sum.then(|| taken.unique(&format!("{alias}_sums")))
        })
        .collect();
    // Every node's name by its Corezoid id, over all processes: a Get from Queue names
    // the queue node of another process by id.
    let mut all_names: HashMap<String, String> = HashMap::new();
    // And by process: `{{conv[ID].node[NODE].count}}` names a node of process ID.
    let mut names_by_process: HashMap<i64, HashMap<String, String>> = HashMap::new();
    for (process, (id, _)) in export.processes.iter().zip(&named) {
        let names = process_node_names(process);
        all_names.extend(names.clone());
        if let Some(id) = id {
            names_by_process.insert(*id, names);
        }
    }
    for ((process, (id, alias)), holder) in export.processes.iter().zip(named).zip(holders) {
        let mut mapper = Mapper {
            process_name: alias.clone(),
            aliases: &aliases,
            all_names: &all_names,
            names_by_process: &names_by_process,
            unmapped: Vec::new(),
            notes: Vec::new(),
            nodes: Map::new(),
            sum_holder: holder.clone(),
            signs: false,
        };
        let definition = match crate::export::carried_definition(process) {
            // Exported by Conveyor and not edited since: the definition it carries.
            Some(definition) => definition,
            None => mapper.process(process)?,
        };
        let yaml = to_yaml(&definition).map_err(|message| ImportError::Process {
            process: alias.clone(),
            message,
        })?;
        out.unmapped.extend(mapper.unmapped);
        out.notes.extend(mapper.notes);
        out.processes.push(Imported {
            name: alias.clone(),
            alias: alias.clone(),
            corezoid_id: id,
            yaml,
        });
        if let Some(holder) = holder {
            out.notes.push(format!(
                "process `{alias}`: its Sum nodes add to tasks of `{holder}` (one per node, by the Corezoid node id), created on first use"
            ));
            out.processes.push(Imported {
                name: holder.clone(),
                alias: holder.clone(),
                corezoid_id: None,
                yaml: sum_holder_yaml(&holder, &alias),
            });
        }
    }
    Ok(out)
}

fn to_yaml(definition: &Value) -> Result<String, String> {
    serde_yaml::to_string(definition).map_err(|e| e.to_string())
}

fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// The Conveyor name of each node of a process (by Corezoid id), from its title, and the
/// names taken.
fn node_names(nodes: &[CzNode]) -> (HashMap<String, String>, Names) {
    let mut taken = Names::default();
    let mut names = HashMap::new();
    for node in nodes {
        let name = if node.obj_type == 1 {
            taken.unique("start")
        } else {
            let tail: String = node.id.chars().rev().take(6).collect::<String>();
            let tail: String = tail.chars().rev().collect();
            taken.unique(&slug(&node.title, &format!("node_{}", slug(&tail, "x"))))
        };
        names.insert(node.id.clone(), name);
    }
    (names, taken)
}

/// The Conveyor name of each node of a process object, by Corezoid node id: from
/// titles, or, for a definition a Conveyor export carries, the names it has (its
/// scheme's nodes are its nodes, in order).
fn process_node_names(process: &Value) -> HashMap<String, String> {
    let Some(definition) = crate::export::carried_definition(process) else {
        return node_names(&cz_nodes(process)).0;
    };
    let ids = process
        .get("scheme")
        .and_then(|s| s.get("nodes"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|n| text(n, "id"));
    let names = definition
        .get("nodes")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|nodes| nodes.keys().cloned());
    ids.zip(names).collect()
}

/// The nodes of a process object, as read.
fn cz_nodes(process: &Value) -> Vec<CzNode<'_>> {
    process
        .get("scheme")
        .and_then(|s| s.get("nodes"))
        .and_then(Value::as_array)
        .map(|nodes| nodes.iter().filter_map(CzNode::read).collect())
        .unwrap_or_default()
}

/// A Corezoid node as read.
struct CzNode<'a> {
    id: String,
    obj_type: i64,
    title: String,
    description: String,
    logics: Vec<&'a Value>,
    semaphors: Vec<&'a Value>,
    extra: Value,
    /// `options` (a JSON string in exports, an object in API ops): a final node's
    /// `save_task`.
    options: Value,
}

impl<'a> CzNode<'a> {
    fn read(value: &'a Value) -> Option<CzNode<'a>> {
        let id = text(value, "id");
        if id.is_empty() {
            return None;
        }
        let condition = value.get("condition");
        let list = |key: &str| -> Vec<&'a Value> {
            condition
                .and_then(|c| c.get(key))
                .and_then(Value::as_array)
                .map(|a| a.iter().collect())
                .unwrap_or_default()
        };
        let mut semaphors = list("semaphors");
        semaphors.extend(list("semaphores"));
        // `extra` is a JSON string in exports and an object in API ops.
        let embedded = |key: &str| match value.get(key) {
            Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::Null),
            Some(other) => other.clone(),
            None => Value::Null,
        };
        let extra = embedded("extra");
        let options = embedded("options");
        Some(CzNode {
            id,
            obj_type: value.get("obj_type").and_then(Value::as_i64).unwrap_or(0),
            title: text(value, "title"),
            description: text(value, "description"),
            logics: list("logics"),
            semaphors,
            extra,
            options,
        })
    }

    fn only_go(&self) -> Option<String> {
        match self.logics.as_slice() {
            [only] if kind(only) == "go" && self.obj_type != 1 && self.obj_type != 2 => {
                Some(text(only, "to_node_id"))
            }
            _ => None,
        }
    }
}

fn kind(logic: &Value) -> &str {
    logic.get("type").and_then(Value::as_str).unwrap_or("")
}

struct Mapper<'a> {
    process_name: String,
    aliases: &'a BTreeMap<i64, String>,
    /// Node names of every process of the import, by Corezoid node id.
    all_names: &'a HashMap<String, String>,
    /// The same, by Corezoid process id.
    names_by_process: &'a HashMap<i64, HashMap<String, String>>,
    unmapped: Vec<Unmapped>,
    notes: Vec<String>,
    nodes: Map<String, Value>,
    /// The process holding this process's sums, when it has Sum nodes.
    sum_holder: Option<String>,
    /// Whether an `api` node signs with `send_sys` (the process gets a `sys_secret`).
    signs: bool,
}

/// The param a `send_sys` signature's secret is read from (Corezoid's `api_secret_outer`,
/// which is never written into the file).
const SYS_SECRET: &str = "sys_secret";

/// Where the nodes of one process are and what they are called.
struct Graph {
    names: HashMap<String, String>,
    /// Nodes whose only logic is `go`: their target.
    pass: HashMap<String, String>,
    /// Name of the node a task that matches no route goes to (made when needed).
    no_route: Option<String>,
    taken: Names,
}

impl Graph {
    /// The name of the node `id` leads to, through `go`-only nodes.
    fn target(&mut self, id: &str) -> String {
        let mut at = id.to_string();
        for _ in 0..64 {
            match self.pass.get(&at) {
                Some(next) => at = next.clone(),
                None => break,
            }
        }
        match self.names.get(&at) {
            Some(name) => name.clone(),
            None => self.no_route(),
        }
    }

    fn no_route(&mut self) -> String {
        if let Some(name) = &self.no_route {
            return name.clone();
        }
        let name = self.taken.unique("no_route");
        self.no_route = Some(name.clone());
        name
    }
}

impl Mapper<'_> {
    fn process(&mut self, process: &Value) -> Result<Value, ImportError> {
        let raw_nodes = process
            .get("scheme")
            .and_then(|s| s.get("nodes"))
            .and_then(Value::as_array)
            .ok_or_else(|| ImportError::Process {
                process: self.process_name.clone(),
                message: "no `scheme.nodes` list".into(),
            })?;
        let nodes: Vec<CzNode> = raw_nodes.iter().filter_map(CzNode::read).collect();
        let mut graph = Graph {
            names: HashMap::new(),
            pass: HashMap::new(),
            no_route: None,
            taken: Names::default(),
        };
        let starts: Vec<&CzNode> = nodes.iter().filter(|n| n.obj_type == 1).collect();
        if starts.len() != 1 {
            return Err(ImportError::Process {
                process: self.process_name.clone(),
                message: format!(
                    "{} start nodes (obj_type 1); a process has one",
                    starts.len()
                ),
            });
        }
        for node in &nodes {
            if let Some(target) = node.only_go() {
                graph.pass.insert(node.id.clone(), target);
            }
        }
        // A loop made only of `go` nodes keeps its first node (as a loop it would spin).
        (graph.names, graph.taken) = node_names(&nodes);
        for node in &nodes {
            if graph.pass.contains_key(&node.id) {
                continue;
            }
            self.node(node, &mut graph);
        }
        for node in &nodes {
            if let Some(target) = graph.pass.get(&node.id).cloned()
                && !graph.names.contains_key(&target)
            {
                self.notes.push(format!(
                    "process `{}`: node {} goes to {target}, which is not in the process",
                    self.process_name, node.id
                ));
            }
        }
        if let Some(name) = graph.no_route.clone() {
            self.nodes.insert(
                name,
                json!({
                    "type": "final",
                    "status": "error",
                    "title": "No route (the Corezoid node had no `go` for this case)",
                }),
            );
        }
        let mut definition = Map::new();
        definition.insert("process".into(), Value::String(self.process_name.clone()));
        let title = text(process, "title");
        if !title.is_empty() {
            definition.insert("title".into(), Value::String(title));
        }
        let description = text(process, "description");
        if !description.is_empty() {
            definition.insert("description".into(), Value::String(description));
        }
        let mut nodes_out = std::mem::take(&mut self.nodes);
        self.drop_unreachable(&mut nodes_out);
        let sums = sum_names(&nodes);
        rewrite_node_refs(
            &mut nodes_out,
            &NodeRefs {
                names: &graph.names,
                others: self.names_by_process,
                sums: &sums,
                holder: self.sum_holder.as_deref(),
            },
        );
        rewrite_refs(&mut nodes_out, self.aliases);
        let env_vars = rewrite_env_vars(&mut nodes_out);
        let mut params = self.params(process).unwrap_or_else(|| json!({}));
        if let Value::Object(params) = &mut params {
            if self.signs {
                params.entry(SYS_SECRET).or_insert_with(|| {
                    json!({
                        "description": "The secret Corezoid signed send_sys calls with (api_secret_outer): give it with `process clone --set sys_secret=…`",
                        "secret": true,
                        "input": [],
                    })
                });
            }
            for (param, name) in env_vars {
                params.entry(param).or_insert_with(|| {
                    json!({
                        "description": format!("Corezoid env_var @{name}: give it with `process clone --set`"),
                        "secret": true,
                        "input": [],
                    })
                });
            }
        }
        if params.as_object().is_some_and(|p| !p.is_empty()) {
            definition.insert("params".into(), params);
        }
        definition.insert("nodes".into(), Value::Object(nodes_out));
        Ok(Value::Object(definition))
    }

    /// Corezoid keeps nodes no route reaches; Conveyor refuses them. They are left
    /// out, each with a note.
    fn drop_unreachable(&mut self, nodes: &mut Map<String, Value>) {
        fn targets(node: &Value, out: &mut Vec<String>) {
            for key in ["next", "on_error", "else"] {
                if let Some(Value::String(t)) = node.get(key) {
                    out.push(t.clone());
                }
            }
            for key in ["timeout", "alert"] {
                match node.get(key) {
                    Some(Value::String(limit)) => {
                        if let Some((_, to)) = limit.split_once("->") {
                            out.push(to.trim().to_string());
                        }
                    }
                    Some(limit @ Value::Object(_)) => out.push(text(limit, "to")),
                    _ => {}
                }
            }
            if let Some(Value::Array(branches)) = node.get("branches") {
                for b in branches {
                    if let Some(Value::String(t)) = b.get("next") {
                        out.push(t.clone());
                    }
                }
            }
        }
        let mut reached = std::collections::HashSet::new();
        let mut queue = vec!["start".to_string()];
        while let Some(name) = queue.pop() {
            if !reached.insert(name.clone()) {
                continue;
            }
            if let Some(node) = nodes.get(&name) {
                targets(node, &mut queue);
            }
        }
        let gone: Vec<String> = nodes
            .keys()
            .filter(|k| !reached.contains(*k))
            .cloned()
            .collect();
        for name in gone {
            if let Some(node) = nodes.remove(&name) {
                self.notes.push(format!(
                    "process `{}`: node {} (`{name}`) is not reachable from the start; left out",
                    self.process_name,
                    text(&node, "corezoid_id")
                ));
            }
        }
    }

    fn params(&self, process: &Value) -> Option<Value> {
        let list = process.get("params")?.as_array()?;
        let mut out = Map::new();
        for param in list {
            let name = text(param, "name");
            if name.is_empty() {
                continue;
            }
            let mut spec = Map::new();
            let description = text(param, "descr");
            if !description.is_empty() {
                spec.insert("description".into(), Value::String(description));
            }
            let required = param
                .get("flags")
                .and_then(Value::as_array)
                .is_some_and(|f| f.iter().any(|f| f == "required"));
            if required {
                spec.insert("required".into(), Value::Bool(true));
            }
            spec.insert("input".into(), json!(["create", "modify", "url"]));
            out.insert(name, Value::Object(spec));
        }
        (!out.is_empty()).then_some(Value::Object(out))
    }

    fn node(&mut self, node: &CzNode, graph: &mut Graph) {
        let name = graph.names[&node.id].clone();
        let mut out = Map::new();
        let first_go = node
            .logics
            .iter()
            .find(|l| kind(l) == "go")
            .map(|l| text(l, "to_node_id"));
        let routes: Vec<&Value> = node
            .logics
            .iter()
            .copied()
            .filter(|l| kind(l) == "go_if_const")
            .collect();
        let action = node
            .logics
            .iter()
            .copied()
            .find(|l| !matches!(kind(l), "go" | "go_if_const"));
        // The `<node>_route` condition, written after the node itself.
        let mut pending_route = None;
        match node.obj_type {
            1 => {
                out.insert("type".into(), json!("start"));
                let next = match &first_go {
                    Some(to) => graph.target(to),
                    None => graph.no_route(),
                };
                out.insert("next".into(), Value::String(next));
            }
            2 => {
                out.insert("type".into(), json!("final"));
                let icon = node.extra.get("icon").and_then(Value::as_str).unwrap_or("");
                if icon == "error" {
                    out.insert("status".into(), json!("error"));
                }
                out.insert("keep".into(), final_keep(&node.options));
            }
            _ => {
                // Where the task goes after the action (or straight away): the routes and
                // the `go`, as a condition of their own when there are routes.
                // (The UI's `delay` logic names its own target.)
                let after = if action.is_none_or(|a| kind(a) == "delay") {
                    String::new()
                } else if routes.is_empty() {
                    match &first_go {
                        Some(to) => graph.target(to),
                        None => graph.no_route(),
                    }
                } else {
                    let route_name = graph.taken.unique(&format!("{name}_route"));
                    let condition = self.condition(&routes, first_go.as_deref(), graph);
                    let mut route = Map::new();
                    route.insert("corezoid_id".into(), Value::String(node.id.clone()));
                    route.extend(condition);
                    pending_route = Some((route_name.clone(), Value::Object(route)));
                    route_name
                };
                match action {
                    Some(logic) => self.action(node, logic, &after, graph, &mut out),
                    None if !routes.is_empty() => {
                        out.extend(self.condition(&routes, first_go.as_deref(), graph));
                    }
                    None => match node.semaphors.iter().find(|s| kind(s) == "time") {
                        Some(timer) => {
                            out.insert("type".into(), json!("delay"));
                            self.delay_wait(timer, &mut out);
                            let next = graph.target(&text(timer, "to_node_id"));
                            out.insert("next".into(), Value::String(next));
                        }
                        None => {
                            // No logic at all: Corezoid leaves the task there.
                            out.insert("type".into(), json!("wait_callback"));
                            out.insert("next".into(), Value::String(graph.no_route()));
                        }
                    },
                }
            }
        }
        self.semaphors(node, action.is_some(), graph, &mut out);
        let mut full = Map::new();
        full.insert("corezoid_id".into(), Value::String(node.id.clone()));
        if !node.title.is_empty() {
            full.insert("title".into(), Value::String(node.title.clone()));
        }
        if !node.description.is_empty() {
            full.insert(
                "description".into(),
                Value::String(node.description.clone()),
            );
        }
        // `type` first, for people reading the file.
        if let Some(kind) = out.remove("type") {
            let mut ordered = Map::new();
            ordered.insert("type".into(), kind);
            ordered.extend(full);
            ordered.extend(out);
            self.nodes.insert(name, Value::Object(ordered));
        } else {
            full.extend(out);
            self.nodes.insert(name, Value::Object(full));
        }
        if let Some((route_name, route)) = pending_route {
            self.nodes.insert(route_name, route);
        }
    }

    /// `time` semaphors on a node with logic: a time limit; `count`: an `alert`.
    fn semaphors(
        &mut self,
        node: &CzNode,
        has_action: bool,
        graph: &mut Graph,
        out: &mut Map<String, Value>,
    ) {
        for semaphor in &node.semaphors {
            match kind(semaphor) {
                "time" if has_action || out.get("type") == Some(&json!("condition")) => {
                    let to = graph.target(&text(semaphor, "to_node_id"));
                    let value = text(semaphor, "value");
                    match timer_seconds(semaphor) {
                        Some(secs) => {
                            out.insert("timeout".into(), Value::String(format!("{secs}s -> {to}")));
                        }
                        // A duration read from the task, as a Conveyor export writes it.
                        None if semaphor.get("conveyor_relative") == Some(&Value::Bool(true)) => {
                            out.insert("timeout".into(), json!({ "after": value, "to": to }));
                        }
                        // A template or `$.unixtime(…)`: an absolute unix time.
                        None if value.contains("{{") || value.contains("$.") => {
                            out.insert("timeout".into(), json!({ "until": value, "to": to }));
                        }
                        None => self.unmapped(
                            node,
                            &format!("a `time` semaphor whose value `{value}` is neither a number nor a template"),
                        ),
                    }
                }
                "time" => {}
                "count" => {
                    let at_least = match semaphor.get("value") {
                        Some(Value::Number(n)) => n.as_u64(),
                        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
                        _ => None,
                    }
                    .filter(|n| *n > 0);
                    let esc = text(semaphor, "esc_node_id");
                    match at_least {
                        Some(n) if !esc.is_empty() => {
                            let to = graph.target(&esc);
                            out.insert("alert".into(), Value::String(format!("{n} -> {to}")));
                        }
                        _ => self.unmapped(
                            node,
                            "a `count` semaphor without a number of tasks above 0 or an `esc_node_id`",
                        ),
                    }
                }
                other => self.unmapped(node, &format!("semaphor `{other}`")),
            }
        }
    }

    fn delay_wait(&mut self, timer: &Value, out: &mut Map<String, Value>) {
        match timer_seconds(timer) {
            Some(secs) => {
                out.insert("for".into(), Value::String(format!("{secs}s")));
            }
            None => {
                // A template or `$.unixtime(…)`: an absolute unix time, as in Corezoid.
                out.insert("until".into(), Value::String(text(timer, "value")));
            }
        }
    }

    fn condition(
        &mut self,
        routes: &[&Value],
        go: Option<&str>,
        graph: &mut Graph,
    ) -> Map<String, Value> {
        let mut branches = Vec::new();
        for route in routes {
            // Current shape: `conditions[]`; the old (v1) shape: param/fun/const on the logic.
            let checks: Vec<&Value> = match route.get("conditions").and_then(Value::as_array) {
                Some(list) => list.iter().collect(),
                None => vec![*route],
            };
            let when: Vec<Value> = checks.iter().copied().map(check).collect();
            branches.push(json!({
                "when": when,
                "next": graph.target(&text(route, "to_node_id")),
            }));
        }
        let otherwise = match go {
            Some(to) => graph.target(to),
            None => graph.no_route(),
        };
        let mut out = Map::new();
        out.insert("type".into(), json!("condition"));
        out.insert("branches".into(), Value::Array(branches));
        out.insert("else".into(), Value::String(otherwise));
        out
    }

    /// Queue (`api_queue`): a `queue` node, with its `data` (extra keys for the taker,
    /// typed by `data_type`) and its `capacity`.
    fn api_queue(&mut self, _node: &CzNode, logic: &Value) -> Value {
        let mut out = Map::new();
        out.insert("type".into(), json!("queue"));
        let data = typed_values(logic.get("data"), logic.get("data_type"));
        if !data.is_empty() {
            out.insert("data".into(), Value::Object(data));
        }
        let capacity = match logic.get("capacity") {
            Some(Value::Number(n)) => n.as_u64().filter(|n| *n > 0),
            Some(Value::String(s)) => s.trim().parse::<u64>().ok().filter(|n| *n > 0),
            _ => None,
        };
        if let Some(capacity) = capacity {
            out.insert("capacity".into(), Value::from(capacity));
        }
        Value::Object(out)
    }

    /// Get from Queue (`api_get_task`): a `get_task` node; the queue node's Corezoid id
    /// becomes its name when the queue's process is in the import.
    fn api_get_task(&mut self, node: &CzNode, logic: &Value) -> Value {
        let queue_id = match text(logic, "node_id") {
            id if id.is_empty() => text(logic, "queue_node_id"),
            id => id,
        };
        let queue = match self.all_names.get(&queue_id) {
            Some(name) => name.clone(),
            None => {
                self.notes.push(format!(
                    "process `{}`: get_task node {} takes from node {queue_id}, which is not in the import; give it that node's name",
                    self.process_name, node.id
                ));
                queue_id
            }
        };
        let mut out = Map::new();
        out.insert("type".into(), json!("get_task"));
        out.insert("process".into(), conv_id(logic));
        out.insert("node".into(), Value::String(queue));
        if text(logic, "order_by").eq_ignore_ascii_case("desc") {
            out.insert("order".into(), json!("newest"));
        }
        Value::Object(out)
    }

    /// API Call (`api`): the request (see `api`), and what the mapper keeps of it: the
    /// `send_sys` secret's param, a note that the export's secret is not carried. A
    /// client certificate (`cert_pem`) cannot be sent: the node is listed.
    fn api(&mut self, node: &CzNode, logic: &Value) -> Result<Value, String> {
        if !text(logic, "cert_pem").trim().is_empty() {
            return Err(
                "`api` with a client certificate (`cert_pem`), which Conveyor cannot send".into(),
            );
        }
        let mut out = api(logic)?;
        if logic.get("send_sys").and_then(Value::as_bool) == Some(true) {
            // A Conveyor export says which param (none: not signed); Corezoid's signs
            // with the process's secret.
            let send_sys = match logic.get("sys_secret").and_then(Value::as_str) {
                Some("") => json!(true),
                Some(secret) => json!({ "secret": secret }),
                None => {
                    self.signs = true;
                    if !text(logic, "api_secret_outer").is_empty() {
                        self.notes.push(format!(
                            "process `{}`: node {} signs with send_sys: its secret (api_secret_outer) is not written into the file; give it with `process clone --set {SYS_SECRET}=…`",
                            self.process_name, node.id
                        ));
                    }
                    json!({ "secret": format!("{{{{{SYS_SECRET}}}}}") })
                }
            };
            if let Value::Object(map) = &mut out {
                map.insert("send_sys".into(), send_sys);
            }
        }
        Ok(out)
    }

    fn unmapped(&mut self, node: &CzNode, what: &str) {
        self.unmapped.push(Unmapped {
            process: self.process_name.clone(),
            node_id: node.id.clone(),
            title: node.title.clone(),
            what: what.to_string(),
        });
    }

    /// The action logic of a node: one function per logic type.
    fn action(
        &mut self,
        node: &CzNode,
        logic: &Value,
        after: &str,
        graph: &mut Graph,
        out: &mut Map<String, Value>,
    ) {
        let mapped = match kind(logic) {
            "set_param" => Ok(set_param(logic)),
            "api" => self.api(node, logic),
            "api_copy" => Ok(api_copy(logic)),
            "api_rpc" => Ok(api_rpc(logic)),
            "api_rpc_reply" => Ok(api_rpc_reply(logic)),
            "api_callback" => Ok(json!({ "type": "wait_callback" })),
            "api_code" => api_code(logic),
            "api_sum" => Ok(api_sum(logic, self.sum_holder.as_deref(), &node.id)),
            "delay" => Ok(delay_logic(logic)),
            "api_queue" => Ok(self.api_queue(node, logic)),
            "api_get_task" => Ok(self.api_get_task(node, logic)),
            other @ ("db_call" | "api_git" | "git_call" | "api_form") => {
                Err(format!("`{other}`, which Conveyor cannot run"))
            }
            other => Err(format!("unknown logic `{other}`")),
        };
        let mut mapped = match mapped {
            Ok(Value::Object(map)) => map,
            Ok(_) => Map::new(),
            Err(what) => {
                self.unmapped(node, &what);
                // With --allow-partial the node fails at run time, with the reason.
                let message = format!(
                    "Corezoid node {} ({}) is {what}: imported with --allow-partial, it cannot run here",
                    node.id,
                    if node.title.is_empty() {
                        "untitled"
                    } else {
                        &node.title
                    }
                );
                let src = format!("throw new Error({});", Value::String(message));
                let mut map = Map::new();
                map.insert("type".into(), json!("code"));
                map.insert("src".into(), Value::String(src));
                map
            }
        };
        if kind(logic) == "delay" {
            let to = graph.target(&text(logic, "to_node_id"));
            mapped.insert("next".into(), Value::String(to));
        } else {
            mapped.insert("next".into(), Value::String(after.to_string()));
        }
        let err = text(logic, "err_node_id");
        if !err.is_empty() && mapped.get("type") != Some(&json!("wait_callback")) {
            mapped.insert("on_error".into(), Value::String(graph.target(&err)));
        }
        out.extend(mapped);
    }
}

/// How long a task that reached a final node is kept. Corezoid keeps it only when the
/// node says `save_task` ("Save the tasks in an archive", until the end of the month);
/// otherwise it is gone at once. The month becomes `31d` (at least as long as Corezoid
/// keeps it), unless the options carry the `keep` a Conveyor export wrote beside
/// `save_task`.
fn final_keep(options: &Value) -> Value {
    let saved = match options.get("save_task") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    };
    match options.get("keep") {
        Some(keep @ (Value::String(_) | Value::Number(_))) if saved => keep.clone(),
        _ if saved => json!(SAVED_TASK_KEEP),
        _ => json!(0),
    }
}

fn timer_seconds(timer: &Value) -> Option<i64> {
    let value = match timer.get("value") {
        Some(Value::Number(n)) => n.as_i64()?,
        Some(Value::String(s)) => s.trim().parse::<i64>().ok()?,
        _ => return None,
    };
    let unit = match timer
        .get("dimension")
        .and_then(Value::as_str)
        .unwrap_or("sec")
    {
        "min" => 60,
        "hour" => 3600,
        "day" => 86_400,
        _ => 1,
    };
    Some((value * unit).max(0))
}

/// One check of a `go_if_const`: `{param, const, fun, cast}`.
fn check(c: &Value) -> Value {
    let mut param = text(c, "param");
    // A param may be written as a template of one path (`{{user.status}}`).
    if let Some(inner) = param.strip_prefix("{{").and_then(|p| p.strip_suffix("}}"))
        && !inner.contains("{{")
    {
        param = inner.trim().to_string();
    }
    let value = c
        .get("const")
        .cloned()
        .unwrap_or(Value::String(String::new()));
    let cast = c.get("cast").and_then(Value::as_str).unwrap_or("string");
    json!({
        "param": param,
        "fn": text(c, "fun"),
        "value": value,
        "cast": cast,
    })
}

fn typed_map(
    values: Option<&Value>,
    types: Option<&Value>,
) -> (Map<String, Value>, Map<String, Value>) {
    let mut set = Map::new();
    let mut cast = Map::new();
    if let Some(Value::Object(values)) = values {
        for (key, value) in values {
            set.insert(key.clone(), value.clone());
            let ty = types
                .and_then(|t| t.get(key))
                .and_then(Value::as_str)
                .unwrap_or("string");
            if ty != "string" {
                cast.insert(key.clone(), Value::String(ty.to_string()));
            }
        }
    }
    (set, cast)
}

/// `extra`/`data` with its `*_type` as values to send: a literal typed `number`,
/// `boolean`, `object` or `array` is written as that JSON value (Corezoid keeps it as
/// text beside its type); a template stays as written (a whole-value template keeps
/// the type of what it reads).
fn typed_values(values: Option<&Value>, types: Option<&Value>) -> Map<String, Value> {
    let (mut set, cast) = typed_map(values, types);
    for (key, ty) in cast {
        let Some(Value::String(text)) = set.get(&key) else {
            continue;
        };
        if text.contains("{{") || text.contains("$.") {
            continue;
        }
        let parsed = serde_json::from_str::<Value>(text.trim()).ok().filter(|v| {
            matches!(
                (ty.as_str(), v),
                (Some("number"), Value::Number(_))
                    | (Some("boolean"), Value::Bool(_))
                    | (Some("object"), Value::Object(_))
                    | (Some("array"), Value::Array(_))
            )
        });
        if let Some(value) = parsed {
            set.insert(key, value);
        }
    }
    set
}

fn set_param(logic: &Value) -> Value {
    let (set, cast) = typed_map(logic.get("extra"), logic.get("extra_type"));
    let mut out = Map::new();
    out.insert("type".into(), json!("set_param"));
    out.insert("set".into(), Value::Object(set));
    if !cast.is_empty() {
        out.insert("cast".into(), Value::Object(cast));
    }
    Value::Object(out)
}

fn api(logic: &Value) -> Result<Value, String> {
    let format = text(logic, "format");
    let (raw, corezoid) = match format.as_str() {
        "" | "default" | "json" => (false, false),
        "raw" => (true, false),
        "corezoid" => (false, true),
        other => return Err(format!("`api` with format `{other}`")),
    };
    let method = match text(logic, "method").to_ascii_uppercase().as_str() {
        "" => "GET".to_string(),
        m => m.to_string(),
    };
    let mut out = Map::new();
    out.insert("type".into(), json!("api_call"));
    out.insert("method".into(), Value::String(method.clone()));
    out.insert("url".into(), Value::String(text(logic, "url")));
    let extra = typed_values(logic.get("extra"), logic.get("extra_type"));
    if raw {
        // The body as written (`raw_body`, a template), sent as it is.
        out.insert("body".into(), Value::String(text(logic, "raw_body")));
        out.insert("format".into(), json!("raw"));
    } else if corezoid {
        // The params go as the `data` of one op, whatever the method.
        out.insert("format".into(), json!("corezoid"));
        if !extra.is_empty() {
            out.insert("body".into(), Value::Object(extra));
        }
    } else if !extra.is_empty() {
        let key = if method == "GET" || method == "DELETE" || method == "HEAD" {
            "query"
        } else {
            "body"
        };
        out.insert(key.into(), Value::Object(extra));
    }
    let content_type = text(logic, "content_type");
    let mut headers = match logic.get("extra_headers") {
        Some(Value::Object(headers)) => headers.clone(),
        _ => Map::new(),
    };
    if !raw && !corezoid && out.contains_key("body") {
        if content_type.contains("x-www-form-urlencoded") {
            out.insert("format".into(), json!("form"));
        } else if content_type.contains("xml") {
            // Corezoid writes the task's JSON as XML (`@attr`, `#value`).
            out.insert("format".into(), json!("xml"));
            let typed = headers
                .keys()
                .any(|k| k.eq_ignore_ascii_case("content-type"));
            if content_type.trim() != "application/xml" && !typed {
                headers.insert(
                    "Content-Type".into(),
                    Value::String(content_type.trim().to_string()),
                );
            }
        }
    }
    if !headers.is_empty() {
        out.insert("headers".into(), Value::Object(headers));
    }
    if logic.get("rfc_format").and_then(Value::as_bool) == Some(true) {
        out.insert("require_body".into(), json!(true));
    }
    if logic.get("debug_info").and_then(Value::as_bool) == Some(true) {
        out.insert("debug".into(), json!(true));
    }
    if logic.get("customize_response").and_then(Value::as_bool) == Some(true)
        && let Some(Value::Object(response)) = logic.get("response")
    {
        let mut mapping = Map::new();
        for (key, value) in response {
            let text = value.as_str().unwrap_or("");
            let rendered = match text.trim() {
                "{{header}}" | "{{headers}}" => "{{headers}}".to_string(),
                "{{body}}" => "{{body}}".to_string(),
                t => match t.strip_prefix("{{").and_then(|t| t.strip_suffix("}}")) {
                    Some(path) if !path.contains("{{") => format!("{{{{body.{}}}}}", path.trim()),
                    _ => t.to_string(),
                },
            };
            mapping.insert(key.clone(), Value::String(rendered));
        }
        out.insert("response".into(), Value::Object(mapping));
    }
    if let Some(threads) = logic
        .get("max_threads")
        .and_then(Value::as_u64)
        .filter(|t| *t > 0)
    {
        out.insert("concurrency".into(), Value::from(threads));
    }
    Ok(Value::Object(out))
}

fn conv_id(logic: &Value) -> Value {
    match logic.get("conv_id") {
        Some(Value::Number(n)) => Value::String(n.to_string()),
        Some(Value::String(s)) => Value::String(s.clone()),
        _ => Value::String(String::new()),
    }
}

fn api_copy(logic: &Value) -> Value {
    let data = typed_values(logic.get("data"), logic.get("data_type"));
    let modify = text(logic, "mode") == "modify";
    let mut out = Map::new();
    out.insert(
        "type".into(),
        json!(if modify { "modify_task" } else { "copy_task" }),
    );
    out.insert("process".into(), conv_id(logic));
    let reference = text(logic, "ref");
    if modify || !reference.is_empty() {
        out.insert("ref".into(), Value::String(reference));
    }
    if modify || !data.is_empty() || text(logic, "group") != "all" {
        out.insert("data".into(), Value::Object(data));
    }
    Value::Object(out)
}

fn api_rpc(logic: &Value) -> Value {
    let data = typed_values(logic.get("extra"), logic.get("extra_type"));
    let mut out = Map::new();
    out.insert("type".into(), json!("call_process"));
    out.insert("process".into(), conv_id(logic));
    if !data.is_empty() || text(logic, "group") != "all" {
        out.insert("data".into(), Value::Object(data));
    }
    Value::Object(out)
}

fn api_rpc_reply(logic: &Value) -> Value {
    let data = match (text(logic, "mode").as_str(), logic.get("res_data")) {
        ("keys", Some(Value::Array(keys))) => {
            let mut map = Map::new();
            for key in keys.iter().filter_map(Value::as_str) {
                map.insert(key.to_string(), Value::String(format!("{{{{{key}}}}}")));
            }
            map
        }
        (_, Some(Value::Object(map))) => map.clone(),
        _ => Map::new(),
    };
    let mut out = Map::new();
    out.insert("type".into(), json!("reply"));
    out.insert("data".into(), Value::Object(data));
    if logic.get("throw_exception").and_then(Value::as_bool) == Some(true) {
        out.insert("error".into(), Value::Bool(true));
        let reason = text(logic, "exception_reason");
        if !reason.is_empty() {
            out.insert("reason".into(), Value::String(reason));
        }
    }
    Value::Object(out)
}

fn api_code(logic: &Value) -> Result<Value, String> {
    let lang = text(logic, "lang");
    if !(lang.is_empty() || lang == "js") {
        return Err(format!(
            "`api_code` in `{lang}`, which Conveyor cannot run (only JavaScript)"
        ));
    }
    let src = match logic.get("src").or_else(|| logic.get("code")) {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    Ok(json!({ "type": "code", "src": src }))
}

/// The UI's `delay` logic (`value`, `dimension`, `to_node_id`): a duration, relative to
/// when the task arrives, even when it is a template (unlike a `time` semaphor's, which
/// is an absolute time). A template value counts `dimension`s, as a static one does.
fn delay_logic(logic: &Value) -> Value {
    if let Some(secs) = timer_seconds(logic) {
        return json!({ "type": "delay", "for": format!("{secs}s") });
    }
    let value = text(logic, "value");
    if !value.contains("{{") && !value.contains("$.") {
        // Neither a number nor a template: Corezoid's smallest timer.
        return json!({ "type": "delay", "for": format!("{MIN_TIMER_SECS}s") });
    }
    let unit = match logic.get("dimension").and_then(Value::as_str) {
        Some("min") => 60,
        Some("hour") => 3600,
        Some("day") => 86_400,
        _ => 1,
    };
    let wait = if unit == 1 {
        value
    } else {
        format!("$.math({value}*{unit})")
    };
    json!({ "type": "delay", "for": wait })
}

/// `conv[123]` in every text, and numeric `process:` fields, to `@alias` for the
/// processes of this import.
fn rewrite_refs(nodes: &mut Map<String, Value>, aliases: &BTreeMap<i64, String>) {
    fn walk(value: &mut Value, aliases: &BTreeMap<i64, String>) {
        match value {
            Value::String(s) if s.contains("conv[") => {
                let mut out = String::new();
                let mut rest = s.as_str();
                while let Some(at) = rest.find("conv[") {
                    out.push_str(&rest[..at + 5]);
                    rest = &rest[at + 5..];
                    let end = rest.find(']').unwrap_or(0);
                    if let Some(alias) = rest[..end]
                        .trim()
                        .parse::<i64>()
                        .ok()
                        .and_then(|id| aliases.get(&id))
                    {
                        out.push('@');
                        out.push_str(alias);
                        rest = &rest[end..];
                    }
                }
                out.push_str(rest);
                *s = out;
            }
            Value::Array(items) => items.iter_mut().for_each(|v| walk(v, aliases)),
            Value::Object(map) => map.values_mut().for_each(|v| walk(v, aliases)),
            _ => {}
        }
    }
    for node in nodes.values_mut() {
        if let Some(Value::String(process)) = node.get_mut("process")
            && let Some(alias) = process
                .trim()
                .parse::<i64>()
                .ok()
                .and_then(|id| aliases.get(&id))
        {
            *process = format!("@{alias}");
        }
        walk(node, aliases);
    }
}

/// The Sum nodes of a process: Corezoid node id → (SumID or name → the key it adds to).
fn sum_names(nodes: &[CzNode]) -> HashMap<String, HashMap<String, String>> {
    let mut out: HashMap<String, HashMap<String, String>> = HashMap::new();
    for node in nodes {
        for logic in node.logics.iter().filter(|l| kind(l) == "api_sum") {
            for item in logic
                .get("extra")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let id = text(item, "id");
                let name = match text(item, "name") {
                    n if n.is_empty() => id.clone(),
                    n => n,
                };
                if name.is_empty() {
                    continue;
                }
                let sums = out.entry(node.id.clone()).or_default();
                if !id.is_empty() {
                    sums.insert(id, name.clone());
                }
                sums.insert(name.clone(), name);
            }
        }
    }
    out
}

/// What `{{node[ID]…}}` reads are rewritten with.
struct NodeRefs<'a> {
    /// This process's node names, by Corezoid id.
    names: &'a HashMap<String, String>,
    /// Every process's of the import, by Corezoid process id.
    others: &'a HashMap<i64, HashMap<String, String>>,
    sums: &'a HashMap<String, HashMap<String, String>>,
    holder: Option<&'a str>,
}

/// `{{node[ID]…}}` reads of nodes by their Corezoid ids: `node[ID].count` names the node
/// as imported (`node[check_status].count`), and so does `conv[PID].node[ID].count` when
/// process PID is in the import (its `conv[PID]` becomes its alias afterwards, with the
/// other references); a Sum node's total, `node[ID].SumID`, becomes a read of the holder
/// task that keeps its sums (`conv[@<alias>_sums].ref[ID].<name>`, see `api_sum`). Ids
/// not in the import stay as written.
fn rewrite_node_refs(nodes: &mut Map<String, Value>, refs: &NodeRefs<'_>) {
    /// The process id of a `conv[PID].` that `out` ends with.
    fn conv_before(out: &str) -> Option<i64> {
        let head = out.strip_suffix("].")?;
        let at = head.rfind("conv[")?;
        head[at + 5..].trim().parse().ok()
    }
    fn rewrite(s: &str, refs: &NodeRefs<'_>) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(at) = rest.find("node[") {
            let (before, from) = rest.split_at(at);
            out.push_str(before);
            let after = &from[5..];
            let parsed = after.find(']').and_then(|end| {
                let id = after[..end].trim();
                let tail = after[end + 1..].strip_prefix('.')?;
                let len = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                    .unwrap_or(tail.len());
                Some((id, &tail[..len], end + 2 + len))
            });
            // `conv[…].node[…]` reads another process's node.
            let of_other = out.ends_with('.');
            let replacement = match parsed {
                Some((id, "count", _)) if of_other => conv_before(&out)
                    .and_then(|pid| refs.others.get(&pid))
                    .and_then(|names| names.get(id))
                    .map(|name| format!("node[{name}].count")),
                Some((id, "count", _)) => {
                    refs.names.get(id).map(|name| format!("node[{name}].count"))
                }
                Some((id, field, _)) if !of_other && !field.is_empty() => {
                    match (refs.sums.get(id).and_then(|s| s.get(field)), refs.holder) {
                        (Some(key), Some(holder)) => {
                            Some(format!("conv[@{holder}].ref[{id}].{key}"))
                        }
                        _ => None,
                    }
                }
                _ => None,
            };
            match (replacement, parsed) {
                (Some(text), Some((_, _, used))) => {
                    out.push_str(&text);
                    rest = &after[used..];
                }
                _ => {
                    out.push_str("node[");
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
    fn walk(value: &mut Value, refs: &NodeRefs<'_>) {
        match value {
            Value::String(s) if s.contains("node[") => *s = rewrite(s, refs),
            Value::Array(items) => items.iter_mut().for_each(|v| walk(v, refs)),
            Value::Object(map) => map.values_mut().for_each(|v| walk(v, refs)),
            _ => {}
        }
    }
    for node in nodes.values_mut() {
        walk(node, refs);
    }
}

/// Seconds of a fixed Conveyor duration (`30s`, `25m`, `1h`), `None` for a template.
pub(crate) fn seconds_of(text: &str) -> Option<u64> {
    if text.contains("{{") || text.contains("<<") || text.contains("$.") {
        return None;
    }
    conveyor_model::parse_duration(text)
        .ok()
        .map(|d| d.as_secs())
}

/// A Corezoid Sum node keeps running sums per node (`{{node[ID].SumID}}`). Here they are
/// keys of a holder task (ref: the Corezoid node id) in a process made for them, added
/// to atomically by a `sum` node.
fn api_sum(logic: &Value, holder: Option<&str>, node_id: &str) -> Value {
    let mut add = Map::new();
    for item in logic
        .get("extra")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = match text(item, "name") {
            n if n.is_empty() => text(item, "id"),
            n => n,
        };
        if name.is_empty() {
            continue;
        }
        add.insert(name, Value::String(text(item, "value")));
    }
    json!({
        "type": "sum",
        "process": format!("@{}", holder.unwrap_or("sums")),
        "ref": node_id,
        "add": add,
    })
}

/// The holder process of a process's sums: its tasks stay in `hold`.
fn sum_holder_yaml(holder: &str, of: &str) -> String {
    format!(
        "process: {holder}\ntitle: \"Sums of {of}\"\ndescription: \"Made by the import: one task per Corezoid Sum node of {of} (ref: the node id), holding its sums.\"\nnodes:\n  start: {{ type: start, next: hold }}\n  hold: {{ type: escalation, title: \"Holds the sums\" }}\n"
    )
}

/// `{{env_var[@name]}}` (a Corezoid project variable) in any template becomes `{{name}}`,
/// a process-level value given with `process clone --set`. Returns each param made,
/// with the variable's name.
fn rewrite_env_vars(nodes: &mut Map<String, Value>) -> BTreeMap<String, String> {
    fn walk(value: &mut Value, found: &mut BTreeMap<String, String>) {
        match value {
            Value::String(s) if s.contains("env_var[") => {
                let mut out = String::new();
                let mut rest = s.as_str();
                while let Some(at) = rest.find("env_var[") {
                    let after = &rest[at + 8..];
                    let Some(end) = after.find(']') else { break };
                    let name = after[..end].trim().trim_start_matches('@');
                    let param = slug(name, "env_var");
                    found.insert(param.clone(), name.to_string());
                    out.push_str(&rest[..at]);
                    out.push_str(&param);
                    rest = &after[end + 1..];
                }
                out.push_str(rest);
                *s = out;
            }
            Value::Array(items) => items.iter_mut().for_each(|v| walk(v, found)),
            Value::Object(map) => map.values_mut().for_each(|v| walk(v, found)),
            _ => {}
        }
    }
    let mut found = BTreeMap::new();
    for node in nodes.values_mut() {
        walk(node, &mut found);
    }
    found
}
