//! `delay`: a `time` semaphor, or, for a duration read from the task, a `delay` logic.

use super::*;

pub(super) fn export(out: &mut NodeOut<'_>) {
    let node = out.node;
    if node
        .get("for")
        .and_then(Value::as_str)
        .is_some_and(is_template)
    {
        // A duration read from the task: the UI's `delay` logic, whose value is relative
        // (a `time` semaphor's template is an absolute time); it also carries the
        // delay's `on_error`, which a semaphor has no place for.
        let mut logic = Map::new();
        logic.insert("type".into(), json!("delay"));
        logic.insert("value".into(), Value::String(text(node, "for")));
        logic.insert("dimension".into(), json!("sec"));
        logic.insert(
            "to_node_id".into(),
            Value::String(out.id_of(&text(node, "next"))),
        );
        out.action(logic);
        return;
    }
    let value = match node.get("for").or_else(|| node.get("until")) {
        Some(Value::String(s)) => match crate::map::seconds_of(s) {
            Some(secs) => json!(secs),
            None => Value::String(s.clone()),
        },
        Some(other) => other.clone(),
        None => json!(0),
    };
    let to = out.id_of(&text(node, "next"));
    out.semaphors.push(json!({
        "type": "time",
        "value": value,
        "dimension": "sec",
        "to_node_id": to,
    }));
}
