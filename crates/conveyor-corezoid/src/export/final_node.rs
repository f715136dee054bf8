//! `final`: Corezoid's final node (`obj_type` 2), with the error icon for `status: error`.

use super::*;

pub(super) fn export(out: &mut NodeOut<'_>) {
    out.obj_type = 2;
    if text(out.node, "status") == "error" {
        out.extra = json!({ "icon": "error" });
    }
}
