//! How things are shown to people.

use conveyor_store::{EventKind, HistoryEvent, TaskRecord};
use serde_json::{Map, Value};

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

/// A task as JSON for `--json`, with the data given (masked or not).
pub fn task_json(task: &TaskRecord, data: Map<String, Value>) -> Value {
    serde_json::json!({
        "id": task.id,
        "process": task.process,
        "ref": task.reference,
        "node": task.node,
        "prev_node": task.prev_node,
        "status": task.status.as_str(),
        "created": task.created,
        "changed": task.changed,
        "wake_at": task.wake.map(|w| w.at),
        "data": data,
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
        EventKind::Copied { process, task } => format!("created task {task} in process {process}"),
    };
    format!("{}  {:<16} {what}", time(event.at), event.node)
}
