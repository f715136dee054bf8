//! `call_process`: an `api_rpc` logic, with the data sent (or the whole task).

use super::*;

pub(super) fn export(out: &mut NodeOut<'_>) {
    let node = out.node;
    let mut logic = Map::new();
    logic.insert("type".into(), json!("api_rpc"));
    logic.insert("conv_id".into(), process_ref(node));
    match node.get("data") {
        Some(data) => {
            let (values, types) = typed(Some(data), None);
            logic.insert("extra".into(), values);
            logic.insert("extra_type".into(), types);
            logic.insert("group".into(), json!(""));
        }
        None => {
            logic.insert("extra".into(), json!({}));
            logic.insert("group".into(), json!("all"));
        }
    }
    out.action(logic);
    out.go("next");
}
