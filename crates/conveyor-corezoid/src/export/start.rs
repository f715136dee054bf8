//! `start`: Corezoid's start node (`obj_type` 1) and its `go`.

use super::*;

pub(super) fn export(out: &mut NodeOut<'_>) {
    out.obj_type = 1;
    out.go("next");
}
