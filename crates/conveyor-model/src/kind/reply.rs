//! `reply`: answers the task that called this one.

use super::prelude::*;

/// Answers the task's caller (a `call_process`, or a door waiting) with `data`.
#[derive(Debug, Clone)]
pub struct Reply {
    pub data: ValueTemplate,
    /// An error reply routes the caller to its `on_error`.
    pub error: bool,
    /// Why, for an error reply: told in the caller's error description (Corezoid's
    /// `exception_reason`).
    pub reason: Option<Template>,
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
        if let Some(reason) = &self.reason {
            visit(reason);
        }
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
    reason: Option<String>,
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
    let reason = match raw.reason {
        Some(_) if !raw.error => {
            loader.error(
                node,
                Some("reason"),
                "`reason` says why an error reply is one: give it with `error: true`".into(),
            );
            return None;
        }
        Some(text) => Some(loader.template(node, "reason", &text)?),
        None => None,
    };
    Some(Reply {
        data: loader.value_template(node, "data", &data)?,
        error: raw.error,
        reason,
        next: raw.next,
        on_error: raw.on_error,
    })
}
