//! `final`: a task ends here, done or failed, and is kept for `keep`.

use super::prelude::*;

/// A task ends here, `done` or `failed`.
#[derive(Debug, Clone)]
pub struct Final {
    pub status: FinalStatus,
    /// How long a task that reached this node is kept (wins over `settings.keep`).
    pub keep: Option<Keep>,
}

impl Kind for Final {
    fn on_error(&self) -> Option<&str> {
        None
    }

    fn edges<'a>(&'a self, _edges: &mut Vec<Edge<'a>>) {}

    fn visit_task_templates<'a>(&'a self, _visit: &mut dyn FnMut(&'a Template)) {}

    fn look(&self) -> Look {
        let (class, label, palette) = match self.status {
            FinalStatus::Success => (
                "final_success",
                "final · success",
                Palette::of("#bbf7d0", "#15803d", "#14532d"),
            ),
            FinalStatus::Error => (
                "final_error",
                "final · error",
                Palette::of("#fecaca", "#b91c1c", "#7f1d1d"),
            ),
        };
        Look {
            class,
            label,
            shape: Shape::Framed,
            icon: None,
            palette,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalStatus {
    Success,
    Error,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "snake_case")]
enum RawFinalStatus {
    #[default]
    Success,
    Error,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFinal {
    #[serde(default)]
    status: RawFinalStatus,
    keep: Option<Value>,
}

pub(super) fn load(loader: &mut Loader<'_>, id: &str, rest: serde_yaml::Value) -> Option<Final> {
    let node = Some(id);
    let raw: RawFinal = loader.read(node, "", rest)?;
    let keep = match &raw.keep {
        Some(value) => Some(load_keep(loader, node, "keep", value)?),
        None => None,
    };
    Some(Final {
        status: match raw.status {
            RawFinalStatus::Success => FinalStatus::Success,
            RawFinalStatus::Error => FinalStatus::Error,
        },
        keep,
    })
}
