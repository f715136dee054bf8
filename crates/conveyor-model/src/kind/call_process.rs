//! `call_process`: creates a task in another process and waits for its `reply`.

use super::prelude::*;

/// Starts a task in another process and waits for its reply.
#[derive(Debug, Clone)]
pub struct CallProcess {
    pub process: Template,
    /// What is sent; the whole task when absent.
    pub data: Option<ValueTemplate>,
    pub next: String,
    pub on_error: Option<String>,
}

impl Kind for CallProcess {
    fn waits(&self) -> bool {
        true
    }

    fn on_error(&self) -> Option<&str> {
        self.on_error.as_deref()
    }

    fn edges<'a>(&'a self, edges: &mut Vec<Edge<'a>>) {
        next_edge(&self.next, edges);
    }

    fn visit_task_templates<'a>(&'a self, visit: &mut dyn FnMut(&'a Template)) {
        visit(&self.process);
        if let Some(d) = &self.data {
            d.visit_templates(visit);
        }
    }

    fn after_reply(&self) -> Option<&str> {
        Some(&self.next)
    }

    fn look(&self) -> Look {
        Look::named(
            "call_process",
            Shape::Subprocess,
            None,
            Palette::of("#e0f2fe", "#0369a1", "#0c4a6e"),
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCallProcess {
    process: Value,
    data: Option<Value>,
    next: String,
    on_error: Option<String>,
}

pub(super) fn load(
    loader: &mut Loader<'_>,
    id: &str,
    rest: serde_yaml::Value,
) -> Option<CallProcess> {
    let node = Some(id);
    let raw: RawCallProcess = loader.read(node, "", rest)?;
    let process = process_template(loader, id, "process", &raw.process);
    let data = match &raw.data {
        Some(d) => Some(loader.value_template(node, "data", d)?),
        None => None,
    };
    Some(CallProcess {
        process: process?,
        data,
        next: raw.next,
        on_error: raw.on_error,
    })
}
