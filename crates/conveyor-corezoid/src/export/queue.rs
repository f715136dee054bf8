//! `queue`: an `api_queue` logic.

use super::*;

pub(super) fn export(out: &mut NodeOut<'_>) {
    out.action(
        json!({ "type": "api_queue" })
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    out.go("next");
}
