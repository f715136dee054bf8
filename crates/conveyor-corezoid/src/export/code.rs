//! `code`: an `api_code` logic in JavaScript.

use super::*;

pub(super) fn export(out: &mut NodeOut<'_>) {
    let mut logic = Map::new();
    logic.insert("type".into(), json!("api_code"));
    logic.insert("lang".into(), json!("js"));
    logic.insert("src".into(), Value::String(text(out.node, "src")));
    out.action(logic);
    out.go("next");
}
