//! `reply`: answers the task that called this one.

use super::prelude::*;

/// Answers the task's caller (a `call_process`, or a door waiting) with `data`.
#[derive(Debug, Clone)]
pub struct Reply {
    pub data: ValueTemplate,
    /// An error reply routes the caller to its `on_error`.
    pub error: bool,
    pub next: String,
    pub on_error: Option<String>,
}

impl Kind for Reply {
    fn on_error(&self) -> Option<&str> {
        self.on_error.as_deref()
    }

    fn edges<'a>(&'a self, edges: &mut Vec<Edge<'a>>) {
        next_edge(&self.next, edges);
    }

    fn visit_task_templates<'a>(&'a self, visit: &mut dyn FnMut(&'a Template)) {
        self.data.visit_templates(visit);
    }

    fn look(&self) -> Look {
        Look::named(
            "reply",
            Shape::Rounded,
            None,
            Palette::of("#fce7f3", "#be185d", "#831843"),
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReply {
    #[serde(default)]
    data: Value,
    #[serde(default)]
    error: bool,
    next: String,
    on_error: Option<String>,
}

pub(super) fn load(loader: &mut Loader<'_>, id: &str, rest: serde_yaml::Value) -> Option<Reply> {
    let node = Some(id);
    let raw: RawReply = loader.read(node, "", rest)?;
    let data = if raw.data.is_null() {
        Value::Object(Default::default())
    } else {
        raw.data
    };
    if !data.is_object() {
        loader.error(
            node,
            Some("data"),
            "a reply's `data` is a mapping of keys to send back".into(),
        );
        return None;
    }
    Some(Reply {
        data: loader.value_template(node, "data", &data)?,
        error: raw.error,
        next: raw.next,
        on_error: raw.on_error,
    })
}
