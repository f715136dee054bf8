//! `modify_task`: an `api_copy` logic in `modify` mode.

use super::*;

pub(super) fn export(out: &mut NodeOut<'_>) {
    super::copy_task::api_copy(out, true);
}
