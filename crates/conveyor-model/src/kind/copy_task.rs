//! `copy_task`: creates a task in another process.

use super::prelude::*;

/// Creates a task in another process and goes on.
#[derive(Debug, Clone)]
pub struct CopyTask {
    pub copy: TaskCopy,
    pub next: String,
    pub on_error: Option<String>,
}

impl Kind for CopyTask {
    fn on_error(&self) -> Option<&str> {
        self.on_error.as_deref()
    }

    fn edges<'a>(&'a self, edges: &mut Vec<Edge<'a>>) {
        next_edge(&self.next, edges);
    }

    fn visit_task_templates<'a>(&'a self, visit: &mut dyn FnMut(&'a Template)) {
        self.copy.visit_templates(visit);
    }

    fn look(&self) -> Look {
        Look::named(
            "copy_task",
            Shape::Stack,
            None,
            Palette::of("#ccfbf1", "#0f766e", "#134e4a"),
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCopyTask {
    process: Value,
    #[serde(rename = "ref")]
    reference: Option<String>,
    data: Option<Value>,
    next: String,
    on_error: Option<String>,
}

pub(super) fn load(loader: &mut Loader<'_>, id: &str, rest: serde_yaml::Value) -> Option<CopyTask> {
    let node = Some(id);
    let raw: RawCopyTask = loader.read(node, "", rest)?;
    let copy = load_copy(loader, id, "", raw.process, raw.reference, raw.data)?;
    Some(CopyTask {
        copy,
        next: raw.next,
        on_error: raw.on_error,
    })
}
