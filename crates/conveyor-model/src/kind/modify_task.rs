//! `modify_task`: sends data to another process's task by ref.

use super::prelude::*;

/// Modifies the task with a ref in another process (or this one).
#[derive(Debug, Clone)]
pub struct ModifyTask {
    pub process: Template,
    pub reference: Template,
    pub data: ValueTemplate,
    pub next: String,
    pub on_error: Option<String>,
}

impl Kind for ModifyTask {
    fn on_error(&self) -> Option<&str> {
        self.on_error.as_deref()
    }

    fn edges<'a>(&'a self, edges: &mut Vec<Edge<'a>>) {
        next_edge(&self.next, edges);
    }

    fn visit_task_templates<'a>(&'a self, visit: &mut dyn FnMut(&'a Template)) {
        visit(&self.process);
        visit(&self.reference);
        self.data.visit_templates(visit);
    }

    fn look(&self) -> Look {
        Look::named("modify_task", Shape::Square, None, Palette::OTHER_TASK)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModifyTask {
    process: Value,
    #[serde(rename = "ref")]
    reference: String,
    data: Value,
    next: String,
    on_error: Option<String>,
}

pub(super) fn load(
    loader: &mut Loader<'_>,
    id: &str,
    rest: serde_yaml::Value,
) -> Option<ModifyTask> {
    let node = Some(id);
    let raw: RawModifyTask = loader.read(node, "", rest)?;
    let process = process_template(loader, id, "process", &raw.process);
    let reference = loader.template(node, "ref", &raw.reference);
    let data = loader.value_template(node, "data", &raw.data);
    Some(ModifyTask {
        process: process?,
        reference: reference?,
        data: data?,
        next: raw.next,
        on_error: raw.on_error,
    })
}
