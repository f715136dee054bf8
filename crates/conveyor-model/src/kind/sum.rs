//! `sum`: adds numbers to keys of a holder task, atomically (Corezoid's Sum).

use super::prelude::*;

/// Adds numbers to keys of a holder task, atomically (Corezoid's Sum, `api_sum`).
#[derive(Debug, Clone)]
pub struct Sum {
    /// The holder task's process and ref; the holder is created on first use.
    pub process: Template,
    pub reference: Template,
    /// A mapping of keys to numbers (templates) added to the holder's keys.
    pub add: ValueTemplate,
    pub next: String,
    pub on_error: Option<String>,
}

impl Kind for Sum {
    fn on_error(&self) -> Option<&str> {
        self.on_error.as_deref()
    }

    fn edges<'a>(&'a self, edges: &mut Vec<Edge<'a>>) {
        next_edge(&self.next, edges);
    }

    fn visit_task_templates<'a>(&'a self, visit: &mut dyn FnMut(&'a Template)) {
        visit(&self.process);
        visit(&self.reference);
        self.add.visit_templates(visit);
    }

    fn look(&self) -> Look {
        Look::named("sum", Shape::Square, None, Palette::OTHER_TASK)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSum {
    process: Value,
    #[serde(rename = "ref")]
    reference: String,
    add: Value,
    next: String,
    on_error: Option<String>,
}

pub(super) fn load(loader: &mut Loader<'_>, id: &str, rest: serde_yaml::Value) -> Option<Sum> {
    let node = Some(id);
    let raw: RawSum = loader.read(node, "", rest)?;
    let process = process_template(loader, id, "process", &raw.process);
    let reference = loader.template(node, "ref", &raw.reference);
    let add = match &raw.add {
        Value::Object(map) if !map.is_empty() => loader.value_template(node, "add", &raw.add),
        _ => {
            loader.error(
                node,
                Some("add"),
                "must be a mapping of keys to numbers, such as `{ total: \"{{amount}}\" }`"
                    .to_string(),
            );
            None
        }
    };
    Some(Sum {
        process: process?,
        reference: reference?,
        add: add?,
        next: raw.next,
        on_error: raw.on_error,
    })
}
