//! `sum`: an `api_sum` logic, one item per key added.

use super::*;

pub(super) fn export(out: &mut NodeOut<'_>) {
    let items: Vec<Value> = out
        .node
        .get("add")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(key, value)| json!({ "id": key, "name": key, "value": scalar_text(value) }))
        .collect();
    out.action(
        json!({ "type": "api_sum", "extra": items })
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    out.go("next");
}
