//! `get_task`: an `api_get_task` logic.

use super::*;

pub(super) fn export(out: &mut NodeOut<'_>) {
    let node = out.node;
    // The queue node is another process's: named as written (the importer maps a name
    // it does not know as it is).
    let order = if text(node, "order") == "newest" {
        "DESC"
    } else {
        "ASC"
    };
    let mut logic = Map::new();
    logic.insert("type".into(), json!("api_get_task"));
    logic.insert("conv_id".into(), process_ref(node));
    logic.insert("node_id".into(), Value::String(text(node, "node")));
    logic.insert("order_by".into(), json!(order));
    out.action(logic);
    out.go("next");
}
