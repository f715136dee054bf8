//! `delay`: wait `for` a duration or `until` a unix time.

use super::prelude::*;

/// What a delay waits for.
#[derive(Debug, Clone)]
pub enum Wait {
    /// `for: 25m` (relative).
    For(DurationSpec),
    /// `until: "{{expires}}"` (absolute unix time, seconds).
    Until(Template),
}

/// Waits `for` a duration or `until` a unix time, then goes on to `next`.
#[derive(Debug, Clone)]
pub struct Delay {
    pub wait: Wait,
    pub next: String,
    pub on_error: Option<String>,
}

impl Kind for Delay {
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
        match &self.wait {
            Wait::For(DurationSpec::Template(t)) | Wait::Until(t) => visit(t),
            Wait::For(_) => {}
        }
    }

    fn look(&self) -> Look {
        Look::named("delay", Shape::Wait, Some(Icon::Clock), Palette::WAITING)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelay {
    #[serde(rename = "for")]
    wait_for: Option<Value>,
    until: Option<Value>,
    next: String,
    on_error: Option<String>,
}

pub(super) fn load(loader: &mut Loader<'_>, id: &str, rest: serde_yaml::Value) -> Option<Delay> {
    let node = Some(id);
    let raw: RawDelay = loader.read(node, "", rest)?;
    let wait = match (raw.wait_for, raw.until) {
        (Some(d), None) => Wait::For(loader.duration(node, "for", &d)?),
        (None, Some(until)) => {
            let Some(text) = scalar_text(&until) else {
                loader.error(
                    node,
                    Some("until"),
                    "expected a unix time or a template".into(),
                );
                return None;
            };
            Wait::Until(loader.template(node, "until", &text)?)
        }
        (Some(_), Some(_)) => {
            loader.error(
                node,
                Some("until"),
                "a delay has either `for:` (a duration) or `until:` (a unix time), not both".into(),
            );
            return None;
        }
        (None, None) => {
            loader.error(
                node,
                None,
                "a delay needs `for:` (a duration) or `until:` (a unix time)".into(),
            );
            return None;
        }
    };
    Some(Delay {
        wait,
        next: raw.next,
        on_error: raw.on_error,
    })
}
