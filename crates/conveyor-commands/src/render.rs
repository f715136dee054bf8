//! How answers are shown: the CLI's text, and its `--json` (kept as scripts know it).

use conveyor_store::{EventKind, HistoryEvent};
use serde_json::{Map, Value, json};

use crate::answer::{Answer, ProcessSummary, TaskView};
use crate::request::Reply;

/// The reply the CLI prints for `answer`.
pub fn render(answer: &Answer, as_json: bool) -> Reply {
    let mut out = Reply::default();
    if let Answer::Drawn { text } = answer {
        // A diagram is printed as it is, `--json` or not.
        out.stdout.push_str(text);
    } else if as_json {
        out.line(to_json(answer).to_string());
    } else {
        text(answer, &mut out);
    }
    out
}

/// `--json`: one line of JSON per answer.
fn to_json(answer: &Answer) -> Value {
    match answer {
        Answer::AuthorizeLink {
            url,
            code_param,
            code_lifetime_secs,
        } => json!({"url": url, "code_param": code_param, "code_lifetime_secs": code_lifetime_secs}),
        Answer::Cloned {
            id,
            alias,
            source,
            name,
        } => json!({"id": id, "alias": alias, "source": source, "name": name}),
        Answer::Processes { processes } => Value::Array(
            processes
                .iter()
                .map(|p| json!({"id": p.id, "alias": p.alias, "title": p.title, "source": p.source, "version": p.version, "tasks": p.tasks, "in_escalation": p.in_escalation}))
                .collect(),
        ),
        Answer::Process(detail) => {
            let s = &detail.summary;
            let nodes: Vec<Value> = detail
                .nodes
                .iter()
                .map(|n| json!({"id": n.id, "kind": n.kind, "title": n.title, "now": n.now, "total": n.total}))
                .collect();
            json!({"id": s.id, "alias": s.alias, "name": s.name, "title": s.title, "source": s.source, "version": s.version, "nodes": nodes})
        }
        Answer::Updated { id, version } => json!({"id": id, "version": version}),
        Answer::Drawn { text } => Value::String(text.clone()),
        Answer::Url { id, url, rotated } => json!({"id": id, "url": url, "rotated": rotated}),
        Answer::TaskAdded {
            id,
            process,
            reference,
            node,
        } => json!({"id": id, "process": process, "ref": reference, "node": node}),
        Answer::TaskUpserted {
            id,
            process,
            reference,
            created,
        } => json!({"id": id, "process": process, "ref": reference, "created": created}),
        Answer::Task(task) => task_json(task),
        Answer::Tasks { tasks } => Value::Array(tasks.iter().map(task_json).collect()),
        Answer::Modified { id, node } => json!({"id": id, "node": node, "accepted": true}),
        Answer::Recovering { id, node, to } => {
            json!({"id": id, "node": node, "to": to, "accepted": true})
        }
        Answer::History { events } => serde_json::to_value(events).unwrap_or_default(),
        Answer::Deleted { id, .. } => json!({"id": id, "deleted": true}),
        Answer::ApiKeyCreated(key) => {
            json!({"login": key.login, "secret": key.secret, "name": key.name, "processes": key.processes})
        }
        Answer::ApiKeys { keys } => Value::Array(
            keys.iter()
                .map(|k| json!({"login": k.login, "name": k.name, "processes": k.processes, "created": k.created}))
                .collect(),
        ),
        Answer::ApiKeyDeleted { login } => json!({"login": login, "deleted": true}),
        Answer::ApiKeyRotated(key) => {
            json!({"login": key.login, "secret": key.secret, "name": key.name})
        }
        Answer::StoreStats(view) => stats_json(&view.stats),
        Answer::Templates { templates } => {
            Value::Array(templates.iter().map(|t| json!(t.name)).collect())
        }
        Answer::Idle { steps } => json!({"steps": steps, "failed_steps": 0}),
    }
}

/// The text the CLI prints.
fn text(answer: &Answer, out: &mut Reply) {
    match answer {
        Answer::AuthorizeLink { url, .. } => out.line(url),
        Answer::Cloned {
            id, alias, source, ..
        } => {
            let alias = alias
                .as_ref()
                .map(|a| format!(" (@{a})"))
                .unwrap_or_default();
            out.line(format!("process {id}{alias} cloned from {source}"));
        }
        Answer::Processes { processes } => process_table(processes, out),
        Answer::Process(detail) => {
            let s = &detail.summary;
            let alias = s
                .alias
                .as_ref()
                .map(|a| format!(" @{a}"))
                .unwrap_or_default();
            out.line(format!(
                "process {}{alias}: {} ({}, version {})",
                s.id, s.title, s.source, s.version
            ));
            out.line(format!(
                "  {:<20} {:<14} {:>7} {:>9}  title",
                "node", "kind", "now", "total"
            ));
            for n in &detail.nodes {
                out.line(format!(
                    "  {:<20} {:<14} {:>7} {:>9}  {}",
                    n.id,
                    n.kind,
                    n.now,
                    n.total,
                    n.title.as_deref().unwrap_or("")
                ));
            }
        }
        Answer::Updated { id, version } => {
            out.line(format!("process {id} updated to version {version}"));
        }
        Answer::Drawn { text } => out.stdout.push_str(text),
        Answer::Url { url, .. } => out.line(url),
        Answer::TaskAdded {
            id,
            process,
            reference,
            node,
        } => {
            let reference = reference
                .as_ref()
                .map(|r| format!(" (ref {r})"))
                .unwrap_or_default();
            out.line(format!(
                "task {id}{reference} added to process {process} at `{node}`"
            ));
        }
        Answer::TaskUpserted {
            id,
            process,
            reference,
            created,
        } => {
            if *created {
                out.line(format!(
                    "task {id} (ref {reference}) added to process {process} with the code"
                ));
            } else {
                out.line(format!(
                    "task {id} (ref {reference}) got the code; the engine exchanges it when it runs"
                ));
            }
        }
        Answer::Task(task) => task_text(task, out),
        Answer::Tasks { tasks } => {
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
                    t.status,
                    time(t.changed)
                ));
            }
        }
        Answer::Modified { id, node } => out.line(format!(
            "task {id} modified (it was in `{node}`; the engine applies the change when it next runs)"
        )),
        Answer::Recovering { id, node, to } => match to {
            None => out.line(format!(
                "task {id} will run `{node}` again (the engine takes it at once)"
            )),
            Some(to) => out.line(format!(
                "task {id} goes from `{node}` to `{to}` (the engine takes it at once)"
            )),
        },
        Answer::History { events } => {
            for event in events {
                out.line(event_line(event));
            }
        }
        Answer::Deleted { id, process } => {
            out.line(format!("task {id} deleted from process {process}"));
        }
        Answer::ApiKeyCreated(key) => {
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
        Answer::ApiKeys { keys } => {
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
        Answer::ApiKeyDeleted { login } => out.line(format!(
            "API key {login} deleted; requests signed with it are refused"
        )),
        Answer::ApiKeyRotated(key) => {
            out.line(format!(
                "API key {} (`{}`) has a new secret, shown only now; the old one is refused from now on:",
                key.login, key.name
            ));
            out.line(format!("  secret: {}", key.secret));
        }
        Answer::StoreStats(view) => store_stats(&view.stats, view.now, out),
        Answer::Templates { templates } => {
            for t in templates {
                out.line(format!("{:<20} {}", t.name, t.title.as_deref().unwrap_or("")));
            }
        }
        Answer::Idle { steps } => out.line(format!("idle after {steps} steps")),
    }
}

/// `process list`: columns as wide as their widest value, so long titles stay aligned.
fn process_table(rows: &[ProcessSummary], out: &mut Reply) {
    if rows.is_empty() {
        out.line("no processes yet: try `conveyor process clone bitrix_oauth --alias bitrix`");
        return;
    }
    let aliases: Vec<String> = rows
        .iter()
        .map(|r| {
            r.alias
                .as_ref()
                .map(|a| format!("@{a}"))
                .unwrap_or_default()
        })
        .collect();
    let alias_w = aliases
        .iter()
        .map(|a| a.chars().count())
        .max()
        .unwrap_or(0)
        .max(5);
    let title_w = rows
        .iter()
        .map(|r| r.title.chars().count())
        .max()
        .unwrap_or(0)
        .max(5);
    out.line(
        format!(
            "{:>4}  {:<alias_w$}  {:<title_w$}  {:>7}  {:>9}",
            "id", "alias", "title", "tasks", "escalated"
        )
        .trim_end(),
    );
    for (r, alias) in rows.iter().zip(&aliases) {
        out.line(format!(
            "{:>4}  {alias:<alias_w$}  {:<title_w$}  {:>7}  {:>9}",
            r.id, r.title, r.tasks, r.in_escalation
        ));
    }
}

fn task_text(task: &TaskView, out: &mut Reply) {
    let reference = task
        .reference
        .as_ref()
        .map(|r| format!(" (ref {r})"))
        .unwrap_or_default();
    out.line(format!(
        "task {}{reference} in process {}",
        task.id, task.process
    ));
    let waiting = match (task.wake_at, task.wake_kind) {
        // A finished task's timer is its removal (`keep`).
        (Some(at), Some("remove")) => format!(" (kept until {})", time(at)),
        (Some(at), _) => format!(" until {}", time(at)),
        _ => String::new(),
    };
    out.line(format!("  node:    {}", task.node));
    out.line(format!("  status:  {}{waiting}", task.status));
    out.line(format!("  created: {}", time(task.created)));
    out.line(format!("  changed: {}", time(task.changed)));
    out.line("  data:");
    out.stdout.push_str(&data_lines(&task.data));
}

/// `2026-11-28 16:55:00 UTC` for milliseconds since the epoch.
pub fn time(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| millis.to_string())
}

/// One line per key, values as JSON.
pub fn data_lines(data: &Map<String, Value>) -> String {
    let mut out = String::new();
    for (key, value) in data {
        out.push_str(&format!("    {key}: {value}\n"));
    }
    out
}

/// A task as JSON for `--json` (its data as the caller may see it).
fn task_json(task: &TaskView) -> Value {
    json!({
        "id": task.id,
        "process": task.process,
        "ref": task.reference,
        "node": task.node,
        "prev_node": task.prev_node,
        "status": task.status,
        "created": task.created,
        "changed": task.changed,
        "wake_at": task.wake_at,
        "data": task.data,
    })
}

pub fn event_line(event: &HistoryEvent) -> String {
    let what = match &event.kind {
        EventKind::Created => "created".to_string(),
        EventKind::Entered { from, via } => format!("entered from `{from}` ({via})"),
        EventKind::ApiRequest {
            method,
            url,
            attempt,
            status,
            millis,
            outcome,
        } => format!(
            "{method} {url} → {} in {millis} ms (attempt {attempt}): {outcome}",
            status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "no answer".into())
        ),
        EventKind::Error { tag, description } => format!("error {tag}: {description}"),
        EventKind::Modified { keys, source } => {
            format!("modified by {source}: {}", keys.join(", "))
        }
        EventKind::Waiting { until, reason } => match until {
            Some(at) => format!("waiting ({reason}) until {}", time(*at)),
            None => format!("waiting ({reason})"),
        },
        EventKind::Finished { status } => format!("finished: {status}"),
        EventKind::Recovered { action, to, source } => match action.as_str() {
            "retry" => format!("{source} retried `{to}`"),
            "step_next" => format!("{source} stepped the task on to `{to}` (step_next)"),
            "step_prev" => format!("{source} stepped the task back to `{to}` (step_prev)"),
            "step_goto" => format!("{source} stepped the task to `{to}` (step_goto)"),
            _ => format!("{source} sent the task to `{to}`"),
        },
        EventKind::Copied { process, task } => format!("created task {task} in process {process}"),
        EventKind::Dropped {
            count,
            keep_first,
            keep_last,
        } => format!(
            "… {count} event{} dropped (history keeps the first {keep_first} and the last {keep_last}) …",
            if *count == 1 { "" } else { "s" }
        ),
    };
    format!("{}  {:<16} {what}", time(event.at), event.node)
}

/// `store stats --json`.
fn stats_json(stats: &conveyor_runtime::StoreStats) -> Value {
    let processes: Vec<Value> = stats
        .processes
        .iter()
        .map(|p| {
            json!({
                "process": p.process,
                "alias": p.alias,
                "live": p.live,
                "finished": p.finished,
                "history_events": p.history_events,
                "history_dropped": p.history_dropped,
                "oldest_task": p.oldest_task,
                "oldest_created": p.oldest_created,
            })
        })
        .collect();
    json!({"processes": processes, "bytes_on_disk": stats.bytes_on_disk})
}

/// `store stats`: a row per process, then the store's size.
fn store_stats(stats: &conveyor_runtime::StoreStats, now: i64, out: &mut Reply) {
    out.line(format!(
        "{:>4}  {:<16} {:>9} {:>9} {:>10} {:>10}  oldest kept task",
        "id", "alias", "live", "finished", "history", "dropped"
    ));
    for p in &stats.processes {
        let alias = p
            .alias
            .as_ref()
            .map(|a| format!("@{a}"))
            .unwrap_or_default();
        let oldest = match (p.oldest_task, p.oldest_created) {
            (Some(id), Some(created)) => format!(
                "task {id}, created {} ({} ago)",
                time(created),
                age((now - created).max(0))
            ),
            _ => "-".to_string(),
        };
        out.line(format!(
            "{:>4}  {alias:<16} {:>9} {:>9} {:>10} {:>10}  {oldest}",
            p.process, p.live, p.finished, p.history_events, p.history_dropped
        ));
    }
    out.line(format!("store: {} on disk", bytes(stats.bytes_on_disk)));
}

/// A byte count the way a person reads it.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {} ({n} bytes)", UNITS[unit])
}

/// An age in whole days, hours, minutes or seconds.
fn age(millis: i64) -> String {
    let seconds = millis / 1000;
    match seconds {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3600 => format!("{}h", s / 3600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
