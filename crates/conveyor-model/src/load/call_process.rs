//! `call_process`: creates a task in another process and waits for its `reply`.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCallProcess {
    process: Value,
    data: Option<Value>,
    next: String,
    on_error: Option<String>,
}

pub(super) fn load(loader: &mut Loader<'_>, id: &str, rest: serde_yaml::Value) -> Option<NodeKind> {
    let node = Some(id);
    let raw: RawCallProcess = loader.read(node, "", rest)?;
    let process = process_template(loader, id, "process", &raw.process);
    let data = match &raw.data {
        Some(d) => Some(loader.value_template(node, "data", d)?),
        None => None,
    };
    Some(NodeKind::CallProcess {
        process: process?,
        data,
        next: raw.next,
        on_error: raw.on_error,
    })
}
