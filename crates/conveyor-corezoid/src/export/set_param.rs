//! `set_param`: a `set_param` logic, its values in `extra` and their casts in `extra_type`.

use super::*;

pub(super) fn export(out: &mut NodeOut<'_>) {
    let (values, types) = typed(out.node.get("set"), out.node.get("cast"));
    let mut logic = Map::new();
    logic.insert("type".into(), json!("set_param"));
    logic.insert("extra".into(), values);
    logic.insert("extra_type".into(), types);
    out.action(logic);
    out.go("next");
}
