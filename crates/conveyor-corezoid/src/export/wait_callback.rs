//! `wait_callback`: an `api_callback` logic.

use super::*;

pub(super) fn export(out: &mut NodeOut<'_>) {
    out.logics.push(json!({ "type": "api_callback" }));
    out.go("next");
}
