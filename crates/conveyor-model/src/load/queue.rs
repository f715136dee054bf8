//! `queue`: tasks wait until a `get_task` node takes them.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    next: String,
    on_error: Option<String>,
}

pub(super) fn load(loader: &mut Loader<'_>, id: &str, rest: serde_yaml::Value) -> Option<NodeKind> {
    let raw: RawQueue = loader.read(Some(id), "", rest)?;
    Some(NodeKind::Queue {
        next: raw.next,
        on_error: raw.on_error,
    })
}
