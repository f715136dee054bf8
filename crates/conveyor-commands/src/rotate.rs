//! `secrets rotate-key`: a new key, every sealed value re-sealed with it, the old key's
//! file removed (unless kept). The caller refuses while a server runs the data dir: it
//! rewrites tasks, which only their engine's steps may write while it runs.

use std::time::Duration;

use conveyor_store::KeySource;
use serde_json::json;

use crate::place::Place;
use crate::{CommandError, Reply};

/// What a rotation did.
#[derive(Debug, Clone)]
pub struct Rotated {
    /// The new key's id, and its file.
    pub key: String,
    pub key_file: String,
    /// The keys it replaces.
    pub replaced: Vec<String>,
    /// A rotation cut short was finished under its new key.
    pub resumed: bool,
    pub processes: u64,
    pub tasks: u64,
    pub messages: u64,
    /// Old key files removed.
    pub removed: Vec<String>,
    /// Old key files kept (`--keep-old`).
    pub kept_old: bool,
    /// `CONVEYOR_SECRET_KEY` still holds a replaced key.
    pub env_holds_old: bool,
}

/// Rotates the key that seals `place`'s secrets. `patience`: how long to wait while a
/// short command holds the store (none while an engine does).
pub fn rotate_key(
    place: &Place,
    source: &KeySource,
    keep_old: bool,
    patience: Duration,
) -> Result<Rotated, CommandError> {
    let store = place.open_sealed(source, patience)?;
    let before = store.keyring();
    // A rotation cut short left older keys in the record: finish it under its new key.
    let resumed = !before.older().is_empty();
    let keyring = if resumed {
        before.as_ref().clone()
    } else {
        conveyor_store::begin_rotation(&place.dir, source, &before)?
    };
    let new_id = keyring.current().id().to_string();
    store.set_keyring(keyring);
    let report = store.reseal(256).map_err(CommandError::Reseal)?;
    let dropped = conveyor_store::end_rotation(&place.dir, &store.keyring())?;
    drop(store);
    let mut removed = Vec::new();
    if !keep_old {
        for id in &dropped {
            if source.remove(id)? {
                removed.push(source.key_path(id).display().to_string());
            }
        }
    }
    let env_holds_old = source
        .env_sealer()?
        .is_some_and(|s| dropped.iter().any(|id| id == s.id()));
    Ok(Rotated {
        key_file: source.key_path(&new_id).display().to_string(),
        key: new_id,
        kept_old: keep_old && !dropped.is_empty(),
        replaced: dropped,
        resumed,
        processes: report.processes as u64,
        tasks: report.tasks as u64,
        messages: report.messages as u64,
        removed,
        env_holds_old,
    })
}

/// A rotation as the CLI prints it (`as_json`: `--json`).
pub fn render_rotated(r: &Rotated, as_json: bool) -> Reply {
    let mut reply = Reply::default();
    if as_json {
        reply.line(
            json!({
                "key": r.key,
                "replaced": r.replaced,
                "resumed": r.resumed,
                "processes": r.processes,
                "tasks": r.tasks,
                "messages": r.messages,
                "removed": r.removed,
                "key_file": r.key_file,
            })
            .to_string(),
        );
    } else {
        let what = if r.resumed {
            "finished the rotation to"
        } else {
            "rotated to"
        };
        reply.line(format!(
            "{what} key {} (in {}); it replaces {}",
            r.key,
            r.key_file,
            if r.replaced.is_empty() {
                "nothing".to_string()
            } else {
                r.replaced.join(", ")
            }
        ));
        reply.line(format!(
            "re-sealed {} task(s), the settings of {} process(es) and {} inbox message(s)",
            r.tasks, r.processes, r.messages
        ));
        for path in &r.removed {
            reply.line(format!("removed the old key file {path}"));
        }
        if r.kept_old {
            reply.line("kept the old key file(s) (--keep-old); this data dir no longer needs them");
        }
    }
    if r.env_holds_old {
        reply.stderr.push_str(&format!(
            "note: CONVEYOR_SECRET_KEY holds the old key: set it to the contents of {} (then that file may go), or unset it\n",
            r.key_file
        ));
    }
    reply
}
