//! `final`: a task ends here, done or failed, and is kept for `keep`.

use super::*;

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

pub(super) fn load(loader: &mut Loader<'_>, id: &str, rest: serde_yaml::Value) -> Option<NodeKind> {
    let node = Some(id);
    let raw: RawFinal = loader.read(node, "", rest)?;
    let keep = match &raw.keep {
        Some(value) => Some(load_keep(loader, node, "keep", value)?),
        None => None,
    };
    Some(NodeKind::Final {
        status: match raw.status {
            RawFinalStatus::Success => FinalStatus::Success,
            RawFinalStatus::Error => FinalStatus::Error,
        },
        keep,
    })
}
