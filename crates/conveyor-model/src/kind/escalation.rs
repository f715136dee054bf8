//! `escalation`: a task waits here for a person (or `task modify`), with copies sent out.

use super::prelude::*;

/// Holds a task until a person modifies it, copying tasks out when one arrives (e.g. to
/// a notification process).
#[derive(Debug, Clone)]
pub struct Escalation {
    /// Tasks copied out when a task arrives.
    pub copy: Vec<TaskCopy>,
    /// Where `task modify` sends a task held here; without it the task stays.
    pub next: Option<String>,
    pub on_error: Option<String>,
}

impl Kind for Escalation {
    fn waits(&self) -> bool {
        true
    }

    fn on_error(&self) -> Option<&str> {
        self.on_error.as_deref()
    }

    fn edges<'a>(&'a self, edges: &mut Vec<Edge<'a>>) {
        if let Some(next) = &self.next {
            next_edge(next, edges);
        }
    }

    fn visit_task_templates<'a>(&'a self, visit: &mut dyn FnMut(&'a Template)) {
        self.copy.iter().for_each(|c| c.visit_templates(visit));
    }

    fn look(&self) -> Look {
        Look::named(
            "escalation",
            Shape::Alarm,
            Some(Icon::Warning),
            Palette::of("#fde68a", "#dc2626", "#7c2d12"),
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCopy {
    process: Value,
    #[serde(rename = "ref")]
    reference: Option<String>,
    data: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEscalation {
    #[serde(default)]
    copy: Vec<RawCopy>,
    next: Option<String>,
    on_error: Option<String>,
}

pub(super) fn load(
    loader: &mut Loader<'_>,
    id: &str,
    rest: serde_yaml::Value,
) -> Option<Escalation> {
    let node = Some(id);
    let raw: RawEscalation = loader.read(node, "", rest)?;
    let mut ok = true;
    let mut copy = Vec::new();
    for (i, c) in raw.copy.into_iter().enumerate() {
        match load_copy(
            loader,
            id,
            &format!("copy[{i}]"),
            c.process,
            c.reference,
            c.data,
        ) {
            Some(c) => copy.push(c),
            None => ok = false,
        }
    }
    ok.then_some(Escalation {
        copy,
        next: raw.next,
        on_error: raw.on_error,
    })
}
