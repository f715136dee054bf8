//! `sum`: adds numbers to keys of a holder task, atomically (Corezoid's Sum).

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSum {
    process: Value,
    #[serde(rename = "ref")]
    reference: String,
    add: Value,
    next: String,
    on_error: Option<String>,
}

pub(super) fn load(loader: &mut Loader<'_>, id: &str, rest: serde_yaml::Value) -> Option<NodeKind> {
    let node = Some(id);
    let raw: RawSum = loader.read(node, "", rest)?;
    let process = process_template(loader, id, "process", &raw.process);
    let reference = loader.template(node, "ref", &raw.reference);
    let add = match &raw.add {
        Value::Object(map) if !map.is_empty() => loader.value_template(node, "add", &raw.add),
        _ => {
            loader.error(
                node,
                Some("add"),
                "must be a mapping of keys to numbers, such as `{ total: \"{{amount}}\" }`"
                    .to_string(),
            );
            None
        }
    };
    Some(NodeKind::Sum {
        process: process?,
        reference: reference?,
        add: add?,
        next: raw.next,
        on_error: raw.on_error,
    })
}
