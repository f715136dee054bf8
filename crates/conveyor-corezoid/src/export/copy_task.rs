//! `copy_task`: an `api_copy` logic in `create` mode.

use super::*;

pub(super) fn export(out: &mut NodeOut<'_>) {
    api_copy(out, false);
}

/// An `api_copy` logic (`modify` mode for `modify_task`), then `go` to `next`.
pub(super) fn api_copy(out: &mut NodeOut<'_>, modify: bool) {
    let node = out.node;
    let mut logic = Map::new();
    logic.insert("type".into(), json!("api_copy"));
    logic.insert(
        "mode".into(),
        json!(if modify { "modify" } else { "create" }),
    );
    logic.insert("conv_id".into(), process_ref(node));
    logic.insert("ref".into(), Value::String(text(node, "ref")));
    match node.get("data") {
        Some(data) => {
            let (values, types) = typed(Some(data), None);
            logic.insert("data".into(), values);
            logic.insert("data_type".into(), types);
            logic.insert("group".into(), json!(""));
        }
        None => {
            logic.insert("data".into(), json!({}));
            logic.insert("group".into(), json!("all"));
        }
    }
    out.action(logic);
    out.go("next");
}
