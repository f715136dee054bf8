//! `start`: where every task begins.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStart {
    next: String,
}

pub(super) fn load(loader: &mut Loader<'_>, id: &str, rest: serde_yaml::Value) -> Option<NodeKind> {
    let node = Some(id);
    let raw: RawStart = loader.read(node, "", rest)?;
    Some(NodeKind::Start { next: raw.next })
}
