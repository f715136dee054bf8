//! `condition`: one `go_if_const` logic per branch, then a `go` to `else`.

use super::*;

pub(super) fn export(out: &mut NodeOut<'_>) {
    let node = out.node;
    for branch in node
        .get("branches")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let conditions: Vec<Value> = branch
            .get("when")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(check)
            .collect();
        let to = out.id_of(&text(branch, "next"));
        out.logics.push(json!({
            "type": "go_if_const",
            "to_node_id": to,
            "conditions": conditions,
        }));
    }
    out.go("else");
}

/// One check of a branch as a Corezoid condition (the cast is `string` unless said).
fn check(check: &Value) -> Value {
    let function = match text(check, "fn") {
        f if f.is_empty() => text(check, "fun"),
        f => f,
    };
    let cast = match text(check, "cast") {
        c if c.is_empty() => "string".to_string(),
        c => c,
    };
    json!({
        "param": text(check, "param"),
        "const": check.get("value").cloned().unwrap_or(json!("")),
        "fun": function,
        "cast": cast,
    })
}
