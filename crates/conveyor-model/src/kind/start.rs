//! `start`: where every task begins.

use super::prelude::*;

/// Where every task begins; it goes on to `next` at once.
#[derive(Debug, Clone)]
pub struct Start {
    pub next: String,
}

impl Kind for Start {
    fn on_error(&self) -> Option<&str> {
        None
    }

    fn edges<'a>(&'a self, edges: &mut Vec<Edge<'a>>) {
        next_edge(&self.next, edges);
    }

    fn visit_task_templates<'a>(&'a self, _visit: &mut dyn FnMut(&'a Template)) {}

    fn look(&self) -> Look {
        Look::named(
            "start",
            Shape::Pill,
            None,
            Palette::of("#d1fae5", "#059669", "#065f46"),
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStart {
    next: String,
}

pub(super) fn load(loader: &mut Loader<'_>, id: &str, rest: serde_yaml::Value) -> Option<Start> {
    let node = Some(id);
    let raw: RawStart = loader.read(node, "", rest)?;
    Some(Start { next: raw.next })
}
