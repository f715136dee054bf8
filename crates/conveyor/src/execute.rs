//! Executes a [`Request`] against a [`Runtime`]: in this process when no server runs, or
//! in the server for a client. Everything it prints goes into the [`Reply`].

use conveyor_model::NodeKind;
use conveyor_runtime::{Runtime, RuntimeError, TaskKey, mask_data};
use serde_json::{Value, json};

use crate::output;
use crate::request::{Reply, Request};

/// Runs `request`; `as_json` selects `--json` output. Never panics on input: every
/// failure becomes a reply with exit code 1 (2 for a command-line mistake).
pub fn execute(runtime: &Runtime, request: Request, as_json: bool) -> Reply {
    let mut reply = Reply::default();
    match run(runtime, request, as_json, &mut reply) {
        Ok(()) => {
            // What a command wrote is on disk before it says so.
            if let Err(e) = runtime.store().flush() {
                return Reply::failed(1, e);
            }
            reply
        }
        Err(Failure::Usage(message)) => Reply::failed(2, message),
        Err(Failure::Runtime(e)) => Reply::failed(1, e),
    }
}

/// A process drawn in `format`, with counters when given; ends with a newline.
pub fn draw(
    process: &conveyor_model::Process,
    counts: Option<&conveyor_graph::Counts>,
    format: crate::GraphFormat,
) -> String {
    let mut text = match format {
        crate::GraphFormat::Dot => conveyor_graph::dot(process, counts),
        crate::GraphFormat::Mermaid => conveyor_graph::mermaid(process, counts),
        crate::GraphFormat::Svg => conveyor_graph::svg(process, counts),
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

enum Failure {
    Usage(String),
    Runtime(RuntimeError),
}

impl From<RuntimeError> for Failure {
    fn from(e: RuntimeError) -> Self {
        Failure::Runtime(e)
    }
}

impl From<conveyor_store::StoreError> for Failure {
    fn from(e: conveyor_store::StoreError) -> Self {
        Failure::Runtime(e.into())
    }
}

fn run(runtime: &Runtime, request: Request, as_json: bool, out: &mut Reply) -> Result<(), Failure> {
    match request {
        Request::ProcessClone {
            source,
            definition,
            alias,
            settings,
        } => {
            let record = runtime.clone_process(&source, &definition, alias.as_deref(), settings)?;
            let loaded = runtime.loaded(record.id)?;
            if as_json {
                out.line(
                    json!({"id": record.id, "alias": record.alias, "source": record.source, "name": loaded.process.name})
                        .to_string(),
                );
            } else {
                let alias = record.alias.map(|a| format!(" (@{a})")).unwrap_or_default();
                out.line(format!("process {}{alias} cloned from {source}", record.id));
            }
        }
        Request::ProcessList => {
            let mut rows = Vec::new();
            for record in runtime.store().processes()? {
                let counters = runtime.store().counters(record.id)?;
                let (title, escalation_nodes): (String, Vec<String>) =
                    match runtime.loaded(record.id) {
                        Ok(l) => (
                            l.process
                                .title
                                .clone()
                                .unwrap_or_else(|| l.process.name.clone()),
                            l.process
                                .nodes
                                .values()
                                .filter(|n| matches!(n.kind, NodeKind::Escalation { .. }))
                                .map(|n| n.id.clone())
                                .collect(),
                        ),
                        Err(_) => (String::new(), Vec::new()),
                    };
                let tasks: i64 = counters.iter().map(|(_, c)| c.now).sum();
                let escalated: i64 = counters
                    .iter()
                    .filter(|(n, _)| escalation_nodes.contains(n))
                    .map(|(_, c)| c.now)
                    .sum();
                rows.push((record, title, tasks, escalated));
            }
            if as_json {
                let list: Vec<Value> = rows
                    .iter()
                    .map(|(r, title, tasks, escalated)| {
                        json!({"id": r.id, "alias": r.alias, "title": title, "source": r.source, "version": r.version, "tasks": tasks, "in_escalation": escalated})
                    })
                    .collect();
                out.line(Value::Array(list).to_string());
            } else if rows.is_empty() {
                out.line(
                    "no processes yet: try `conveyor process clone bitrix_oauth --alias bitrix`",
                );
            } else {
                out.line(format!(
                    "{:>4}  {:<16} {:<32} {:>7} {:>10}",
                    "id", "alias", "title", "tasks", "escalated"
                ));
                for (r, title, tasks, escalated) in rows {
                    let alias = r.alias.map(|a| format!("@{a}")).unwrap_or_default();
                    out.line(format!(
                        "{:>4}  {alias:<16} {title:<32} {tasks:>7} {escalated:>10}",
                        r.id
                    ));
                }
            }
        }
        Request::ProcessShow { process } => {
            let loaded = runtime.resolve(&process)?;
            let counters = runtime.store().counters(loaded.record.id)?;
            let count = |node: &str| {
                counters
                    .iter()
                    .find(|(n, _)| n == node)
                    .map(|(_, c)| *c)
                    .unwrap_or_default()
            };
            let p = &loaded.process;
            if as_json {
                let nodes: Vec<Value> = p
                    .nodes
                    .values()
                    .map(|n| {
                        let c = count(&n.id);
                        json!({"id": n.id, "kind": n.kind.name(), "title": n.title, "now": c.now, "total": c.total})
                    })
                    .collect();
                out.line(
                    json!({"id": loaded.record.id, "alias": loaded.record.alias, "name": p.name, "title": p.title, "source": loaded.record.source, "version": loaded.record.version, "nodes": nodes})
                        .to_string(),
                );
            } else {
                let alias = loaded
                    .record
                    .alias
                    .as_ref()
                    .map(|a| format!(" @{a}"))
                    .unwrap_or_default();
                out.line(format!(
                    "process {}{alias}: {} ({}, version {})",
                    loaded.record.id,
                    p.title.as_deref().unwrap_or(&p.name),
                    loaded.record.source,
                    loaded.record.version
                ));
                out.line(format!(
                    "  {:<20} {:<14} {:>7} {:>9}  title",
                    "node", "kind", "now", "total"
                ));
                for n in p.nodes.values() {
                    let c = count(&n.id);
                    out.line(format!(
                        "  {:<20} {:<14} {:>7} {:>9}  {}",
                        n.id,
                        n.kind.name(),
                        c.now,
                        c.total,
                        n.title.as_deref().unwrap_or("")
                    ));
                }
            }
        }
        Request::ProcessUpdate {
            process,
            file,
            definition,
        } => {
            let record = runtime.update_process(&process, &file, &definition)?;
            if as_json {
                out.line(json!({"id": record.id, "version": record.version}).to_string());
            } else {
                out.line(format!(
                    "process {} updated to version {}",
                    record.id, record.version
                ));
            }
        }
        Request::ProcessGraph { process, format } => {
            let loaded = runtime.resolve(&process)?;
            let counts: conveyor_graph::Counts = runtime
                .store()
                .counters(loaded.record.id)?
                .into_iter()
                .map(|(node, c)| (node, (c.now, c.total)))
                .collect();
            out.stdout
                .push_str(&draw(&loaded.process, Some(&counts), format));
        }
        Request::Drawn(text) => out.stdout.push_str(&text),
        Request::ProcessUrl {
            process,
            rotate,
            base,
        } => {
            let (id, hash) = runtime.url_hash(&process, rotate)?;
            let url = format!(
                "{}/api/1/json/public/{id}/{hash}",
                base.trim_end_matches('/')
            );
            if as_json {
                out.line(json!({"id": id, "url": url, "rotated": rotate}).to_string());
            } else {
                out.line(url);
            }
        }
        Request::TaskAdd {
            process,
            reference,
            data,
        } => {
            let task = runtime.add_task(&process, reference.as_deref(), data)?;
            if as_json {
                out.line(
                    json!({"id": task.id, "process": task.process, "ref": task.reference, "node": task.node})
                        .to_string(),
                );
            } else {
                let reference = task
                    .reference
                    .as_ref()
                    .map(|r| format!(" (ref {r})"))
                    .unwrap_or_default();
                out.line(format!(
                    "task {}{reference} added to process {} at `{}`",
                    task.id, task.process, task.node
                ));
            }
        }
        Request::TaskUpsert {
            process,
            reference,
            data,
        } => {
            let loaded = runtime.resolve(&process)?;
            if runtime
                .store()
                .task_by_ref(loaded.record.id, &reference)?
                .is_some()
            {
                let outcome =
                    runtime.modify_task(&process, &TaskKey(reference.clone()), data, "cli")?;
                out.line(format!(
                    "task {} (ref {reference}) got the code; the engine exchanges it when it runs",
                    outcome.task
                ));
            } else {
                let task = runtime.add_task(&process, Some(&reference), data)?;
                out.line(format!(
                    "task {} (ref {reference}) added to process {} with the code",
                    task.id, task.process
                ));
            }
        }
        Request::TaskShow {
            process,
            task,
            reveal,
        } => {
            let (loaded, task) = runtime.find_task(&process, &TaskKey(task))?;
            let data = if reveal {
                task.data.clone()
            } else {
                mask_data(&loaded.process, &task.secret_keys, &task.data)
            };
            if as_json {
                out.line(output::task_json(&task, data).to_string());
            } else {
                let reference = task
                    .reference
                    .as_ref()
                    .map(|r| format!(" (ref {r})"))
                    .unwrap_or_default();
                out.line(format!(
                    "task {}{reference} in process {}",
                    task.id, task.process
                ));
                let waiting = match task.wake {
                    // A finished task's timer is its removal (`keep`).
                    Some(w) if w.kind == conveyor_store::WakeKind::Remove => {
                        format!(" (kept until {})", output::time(w.at))
                    }
                    Some(w) => format!(" until {}", output::time(w.at)),
                    None => String::new(),
                };
                out.line(format!("  node:    {}", task.node));
                out.line(format!("  status:  {}{waiting}", task.status.as_str()));
                out.line(format!("  created: {}", output::time(task.created)));
                out.line(format!("  changed: {}", output::time(task.changed)));
                out.line("  data:");
                out.stdout.push_str(&output::data_lines(&data));
            }
        }
        Request::TaskList {
            process,
            node,
            limit,
        } => {
            let loaded = runtime.resolve(&process)?;
            if let Some(n) = &node
                && !loaded.process.nodes.contains_key(n)
            {
                return Err(Failure::Usage(format!(
                    "--node: process {process} has no node `{n}`"
                )));
            }
            let tasks = runtime
                .store()
                .tasks(loaded.record.id, node.as_deref(), limit)?;
            if as_json {
                let list: Vec<Value> = tasks
                    .iter()
                    .map(|t| {
                        output::task_json(t, mask_data(&loaded.process, &t.secret_keys, &t.data))
                    })
                    .collect();
                out.line(Value::Array(list).to_string());
            } else {
                out.line(format!(
                    "{:>8}  {:<20} {:<20} {:<8} changed",
                    "id", "ref", "node", "status"
                ));
                for t in tasks {
                    out.line(format!(
                        "{:>8}  {:<20} {:<20} {:<8} {}",
                        t.id,
                        t.reference.as_deref().unwrap_or("-"),
                        t.node,
                        t.status.as_str(),
                        output::time(t.changed)
                    ));
                }
            }
        }
        Request::TaskModify {
            process,
            task,
            data,
        } => {
            if data.is_empty() {
                return Err(Failure::Usage(
                    "nothing to modify: give `key=value` pairs or --from-json".into(),
                ));
            }
            let outcome = runtime.modify_task(&process, &TaskKey(task), data, "cli")?;
            if as_json {
                out.line(
                    json!({"id": outcome.task, "node": outcome.node, "accepted": true}).to_string(),
                );
            } else {
                out.line(format!(
                    "task {} modified (it was in `{}`; the engine applies the change when it next runs)",
                    outcome.task, outcome.node
                ));
            }
        }
        Request::TaskHistory { process, task } => {
            let (_, task) = runtime.find_task(&process, &TaskKey(task))?;
            let history = runtime.store().history(task.id)?;
            if as_json {
                out.line(serde_json::to_string(&history).unwrap_or_default());
            } else {
                for event in &history {
                    out.line(output::event_line(event));
                }
            }
        }
        Request::StoreStats => {
            let stats = runtime.store_stats()?;
            output::store_stats(&stats, runtime.now(), as_json, out);
        }
        Request::TaskDelete { process, task } => {
            let task = runtime.delete_task(&process, &TaskKey(task))?;
            if as_json {
                out.line(json!({"id": task.id, "deleted": true}).to_string());
            } else {
                out.line(format!(
                    "task {} deleted from process {}",
                    task.id, task.process
                ));
            }
        }
        Request::ApiKeyCreate { name, processes } => {
            let key = runtime.create_api_key(&name, &processes)?;
            if as_json {
                out.line(
                    json!({"login": key.login, "secret": key.secret, "name": key.name, "processes": key.processes})
                        .to_string(),
                );
            } else {
                out.line(format!(
                    "API key `{}` created; the secret is shown only now:",
                    key.name
                ));
                out.line(format!("  login:  {}", key.login));
                out.line(format!("  secret: {}", key.secret));
                if !key.processes.is_empty() {
                    let list: Vec<String> = key.processes.iter().map(u64::to_string).collect();
                    out.line(format!("  limited to processes: {}", list.join(", ")));
                }
            }
        }
        Request::ApiKeyList => {
            let keys = runtime.store().api_keys()?;
            if as_json {
                let list: Vec<Value> = keys
                    .iter()
                    .map(|k| json!({"login": k.login, "name": k.name, "processes": k.processes, "created": k.created}))
                    .collect();
                out.line(Value::Array(list).to_string());
            } else {
                out.line(format!("{:>8}  {:<24} processes", "login", "name"));
                for k in keys {
                    let list: Vec<String> = k.processes.iter().map(u64::to_string).collect();
                    let list = if list.is_empty() {
                        "all".to_string()
                    } else {
                        list.join(", ")
                    };
                    out.line(format!("{:>8}  {:<24} {list}", k.login, k.name));
                }
            }
        }
        Request::ApiKeyDelete { login } => {
            runtime.delete_api_key(login)?;
            if as_json {
                out.line(json!({"login": login, "deleted": true}).to_string());
            } else {
                out.line(format!(
                    "API key {login} deleted; requests signed with it are refused"
                ));
            }
        }
        Request::ApiKeyRotate { login } => {
            let key = runtime.rotate_api_key(login)?;
            if as_json {
                out.line(
                    json!({"login": key.login, "secret": key.secret, "name": key.name}).to_string(),
                );
            } else {
                out.line(format!(
                    "API key {} (`{}`) has a new secret, shown only now; the old one is refused from now on:",
                    key.login, key.name
                ));
                out.line(format!("  secret: {}", key.secret));
            }
        }
        Request::WaitIdle => {
            // Answered by the server itself (it waits for its engine); never run here.
            return Err(Failure::Usage(
                "`run --until-idle` is answered by the server".into(),
            ));
        }
    }
    Ok(())
}
