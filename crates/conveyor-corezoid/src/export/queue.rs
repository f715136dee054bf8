//! `queue`: an `api_queue` logic, its `data` (with `data_type`) and `capacity`.

use super::*;

pub(super) fn export(out: &mut NodeOut<'_>) {
    let node = out.node;
    let mut logic = Map::new();
    logic.insert("type".into(), json!("api_queue"));
    let (values, types) = match node.get("data") {
        Some(data) => typed(Some(data), None),
        None => (json!({}), json!({})),
    };
    logic.insert("data".into(), values);
    logic.insert("data_type".into(), types);
    if let Some(capacity) = node.get("capacity").and_then(Value::as_u64) {
        logic.insert("capacity".into(), Value::from(capacity));
    }
    out.action(logic);
    out.go("next");
}
