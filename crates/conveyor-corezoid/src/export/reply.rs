//! `reply`: an `api_rpc_reply` logic; an error reply is `throw_exception`, its
//! `reason` the `exception_reason`.

use super::*;

pub(super) fn export(out: &mut NodeOut<'_>) {
    let node = out.node;
    let mut logic = Map::new();
    logic.insert("type".into(), json!("api_rpc_reply"));
    logic.insert("mode".into(), json!("key_value"));
    logic.insert(
        "res_data".into(),
        node.get("data").cloned().unwrap_or(json!({})),
    );
    logic.insert(
        "throw_exception".into(),
        json!(node.get("error").and_then(Value::as_bool) == Some(true)),
    );
    if let Some(reason) = node.get("reason").and_then(Value::as_str) {
        logic.insert("exception_reason".into(), json!(reason));
    }
    out.action(logic);
    out.go("next");
}
