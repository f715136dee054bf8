//! `wait_callback`: waits until the task is modified from outside.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWaitCallback {
    next: String,
    on_error: Option<String>,
}

pub(super) fn load(loader: &mut Loader<'_>, id: &str, rest: serde_yaml::Value) -> Option<NodeKind> {
    let node = Some(id);
    let raw: RawWaitCallback = loader.read(node, "", rest)?;
    Some(NodeKind::WaitCallback {
        next: raw.next,
        on_error: raw.on_error,
    })
}
