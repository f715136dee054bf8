//! `modify_task`: sends data to another process's task by ref.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModifyTask {
    process: Value,
    #[serde(rename = "ref")]
    reference: String,
    data: Value,
    next: String,
    on_error: Option<String>,
}

pub(super) fn load(loader: &mut Loader<'_>, id: &str, rest: serde_yaml::Value) -> Option<NodeKind> {
    let node = Some(id);
    let raw: RawModifyTask = loader.read(node, "", rest)?;
    let process = process_template(loader, id, "process", &raw.process);
    let reference = loader.template(node, "ref", &raw.reference);
    let data = loader.value_template(node, "data", &raw.data);
    Some(NodeKind::ModifyTask {
        process: process?,
        reference: reference?,
        data: data?,
        next: raw.next,
        on_error: raw.on_error,
    })
}
