//! `get_task`: takes a task from a `queue` node of a process.

use super::prelude::*;

/// Takes the oldest (or newest) task waiting in a `queue` node of a process, sends it
/// on, and copies its id and data into this task (Corezoid's Get from Queue,
/// `api_get_task`).
#[derive(Debug, Clone)]
pub struct GetTask {
    /// A template that renders to a process id or `@alias`.
    pub process: Template,
    /// The `queue` node of that process.
    pub queue: String,
    /// Take the newest task instead of the oldest.
    pub newest: bool,
    pub next: String,
    pub on_error: Option<String>,
}

impl Kind for GetTask {
    fn on_error(&self) -> Option<&str> {
        self.on_error.as_deref()
    }

    fn edges<'a>(&'a self, edges: &mut Vec<Edge<'a>>) {
        next_edge(&self.next, edges);
    }

    fn visit_task_templates<'a>(&'a self, visit: &mut dyn FnMut(&'a Template)) {
        visit(&self.process);
    }

    fn fixed_keys(&self) -> &'static [&'static str] {
        &["__queue_task_id__", "__queue_task_data__"]
    }

    fn look(&self) -> Look {
        Look::named("get_task", Shape::Square, None, Palette::OTHER_TASK)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGetTask {
    process: Value,
    /// The `queue` node of that process.
    node: String,
    /// `oldest` (the default) or `newest`.
    order: Option<String>,
    next: String,
    on_error: Option<String>,
}

pub(super) fn load(loader: &mut Loader<'_>, id: &str, rest: serde_yaml::Value) -> Option<GetTask> {
    let node = Some(id);
    let raw: RawGetTask = loader.read(node, "", rest)?;
    let process = process_template(loader, id, "process", &raw.process);
    let newest = match raw.order.as_deref() {
        None | Some("oldest") => Some(false),
        Some("newest") => Some(true),
        Some(other) => {
            loader.error(
                node,
                Some("order"),
                format!("unknown order `{other}` (oldest or newest)"),
            );
            None
        }
    };
    if raw.node.trim().is_empty() {
        loader.error(node, Some("node"), "the queue node is empty".into());
        return None;
    }
    Some(GetTask {
        process: process?,
        queue: raw.node,
        newest: newest?,
        next: raw.next,
        on_error: raw.on_error,
    })
}
