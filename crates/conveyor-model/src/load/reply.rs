//! `reply`: answers the task that called this one.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReply {
    #[serde(default)]
    data: Value,
    #[serde(default)]
    error: bool,
    next: String,
    on_error: Option<String>,
}

pub(super) fn load(loader: &mut Loader<'_>, id: &str, rest: serde_yaml::Value) -> Option<NodeKind> {
    let node = Some(id);
    let raw: RawReply = loader.read(node, "", rest)?;
    let data = if raw.data.is_null() {
        Value::Object(Default::default())
    } else {
        raw.data
    };
    if !data.is_object() {
        loader.error(
            node,
            Some("data"),
            "a reply's `data` is a mapping of keys to send back".into(),
        );
        return None;
    }
    Some(NodeKind::Reply {
        data: loader.value_template(node, "data", &data)?,
        error: raw.error,
        next: raw.next,
        on_error: raw.on_error,
    })
}
