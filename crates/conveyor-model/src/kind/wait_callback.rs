//! `wait_callback`: waits until the task is modified from outside.

use super::prelude::*;

/// Waits until the task is modified from outside (a callback), then goes on.
#[derive(Debug, Clone)]
pub struct WaitCallback {
    pub next: String,
    /// Where a task goes when its time limit cannot be worked out.
    pub on_error: Option<String>,
}

impl Kind for WaitCallback {
    fn waits(&self) -> bool {
        true
    }

    fn on_error(&self) -> Option<&str> {
        self.on_error.as_deref()
    }

    fn edges<'a>(&'a self, edges: &mut Vec<Edge<'a>>) {
        next_edge(&self.next, edges);
    }

    fn visit_task_templates<'a>(&'a self, _visit: &mut dyn FnMut(&'a Template)) {}

    fn look(&self) -> Look {
        Look::named(
            "wait_callback",
            Shape::Wait,
            Some(Icon::Clock),
            Palette::WAITING,
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWaitCallback {
    next: String,
    on_error: Option<String>,
}

pub(super) fn load(
    loader: &mut Loader<'_>,
    id: &str,
    rest: serde_yaml::Value,
) -> Option<WaitCallback> {
    let node = Some(id);
    let raw: RawWaitCallback = loader.read(node, "", rest)?;
    Some(WaitCallback {
        next: raw.next,
        on_error: raw.on_error,
    })
}
