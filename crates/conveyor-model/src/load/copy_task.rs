//! `copy_task`: creates a task in another process.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCopyTask {
    process: Value,
    #[serde(rename = "ref")]
    reference: Option<String>,
    data: Option<Value>,
    next: String,
    on_error: Option<String>,
}

pub(super) fn load(loader: &mut Loader<'_>, id: &str, rest: serde_yaml::Value) -> Option<NodeKind> {
    let node = Some(id);
    let raw: RawCopyTask = loader.read(node, "", rest)?;
    let copy = load_copy(loader, id, "", raw.process, raw.reference, raw.data)?;
    Some(NodeKind::CopyTask {
        copy,
        next: raw.next,
        on_error: raw.on_error,
    })
}
