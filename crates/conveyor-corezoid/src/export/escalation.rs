//! `escalation`: held until a person modifies the task, a callback wait in Corezoid's
//! terms (`obj_type` 3).

use super::*;

pub(super) fn export(out: &mut NodeOut<'_>) {
    out.obj_type = 3;
    if out.node.get("next").is_some() {
        out.logics.push(json!({ "type": "api_callback" }));
        out.go("next");
    }
}
