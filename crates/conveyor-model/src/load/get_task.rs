//! `get_task`: takes a task from a `queue` node of a process.

use super::*;

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

pub(super) fn load(loader: &mut Loader<'_>, id: &str, rest: serde_yaml::Value) -> Option<NodeKind> {
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
    Some(NodeKind::GetTask {
        process: process?,
        queue: raw.node,
        newest: newest?,
        next: raw.next,
        on_error: raw.on_error,
    })
}
