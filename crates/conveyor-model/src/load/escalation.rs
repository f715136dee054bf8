//! `escalation`: a task waits here for a person (or `task modify`), with copies sent out.

use super::*;

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

pub(super) fn load(loader: &mut Loader<'_>, id: &str, rest: serde_yaml::Value) -> Option<NodeKind> {
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
    ok.then_some(NodeKind::Escalation {
        copy,
        next: raw.next,
        on_error: raw.on_error,
    })
}
