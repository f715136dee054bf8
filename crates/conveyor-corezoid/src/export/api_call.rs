//! `api_call`: an `api` logic (built by `api_logic`).

use super::*;

pub(super) fn export(out: &mut NodeOut<'_>) {
    out.action(api_logic(out.node));
    out.go("next");
}
