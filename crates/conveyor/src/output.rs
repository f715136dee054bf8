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

/// `store stats`: a row per process, then the store's size.
pub fn store_stats(
    stats: &conveyor_runtime::StoreStats,
    now: i64,
    as_json: bool,
    out: &mut crate::request::Reply,
) {
    if as_json {
        let processes: Vec<Value> = stats
            .processes
            .iter()
            .map(|p| {
                serde_json::json!({
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
        out.line(
            serde_json::json!({"processes": processes, "bytes_on_disk": stats.bytes_on_disk})
                .to_string(),
        );
        return;
    }
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
