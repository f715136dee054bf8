//! Moving a data dir between kinds of store ([`migrate`]), comparing two stores record by
//! record ([`compare`]) and reading everything a store holds ([`read_everything`]).
//!
//! A migration copies the store's records as stored, through the implementations
//! themselves (never through [`SealedStore`](crate::SealedStore)): sealed values stay
//! sealed, bound to the same task and process ids, under the same key (`seal.json`, the
//! key record, stays where it is in the data dir, as do `signatures` and everything
//! else outside the store's own directory).

use std::path::{Path, PathBuf};

use crate::*;

/// How many ops a migration commits at a time.
const CHUNK: usize = 2_000;

/// What [`migrate`] moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrateReport {
    pub from: StoreKind,
    pub to: StoreKind,
    pub counts: Counts,
    /// Where the old store was kept (`DATA/store.old-<kind>`).
    pub kept: PathBuf,
}

/// How much of each thing a store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub processes: usize,
    pub tasks: usize,
    pub refs: usize,
    pub timers: usize,
    pub ready: usize,
    pub messages: usize,
    pub history_events: usize,
    pub api_keys: usize,
}

impl StoreKind {
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Log => "log",
            StoreKind::Sled => "sled",
        }
    }

    /// The directory this kind of store has in a data dir.
    pub fn dir_in(self, data: &Path) -> PathBuf {
        match self {
            StoreKind::Log => LogStore::dir_in(data),
            StoreKind::Sled => SledStore::dir_in(data),
        }
    }
}

pub(crate) fn open_kind(
    kind: StoreKind,
    data: &Path,
    options: StoreOptions,
) -> Result<Box<dyn Store>> {
    Ok(match kind {
        StoreKind::Log => Box::new(LogStore::open(data)?),
        StoreKind::Sled => Box::new(SledStore::open_with(data, options)?),
    })
}

/// Opens the store of `kind` in `data` to be copied (a log store as
/// [`LogStore::open_to_read`]: its directory is moved aside while it is open).
pub(crate) fn open_source(
    kind: StoreKind,
    data: &Path,
    options: StoreOptions,
) -> Result<Box<dyn Store>> {
    match kind {
        StoreKind::Log => Ok(Box::new(LogStore::open_to_read(data)?)),
        StoreKind::Sled => open_kind(kind, data, options),
    }
}

/// Where the old store of `kind` is kept after a migration.
pub fn kept_dir(data: &Path, kind: StoreKind) -> PathBuf {
    data.join(format!("store.old-{}", kind.name()))
}

/// Moves the store of the data dir `data` to the kind `to`, keeping everything (ids,
/// refs, timers, the ready set, inboxes, history, counters, processes with their
/// settings and direct-URL hashes, API keys, and the next number of every counter, so
/// a deleted API key's login stays unused).
///
/// The new store is written next to the old one (`DATA/.migrate-<kind>/`), closed,
/// reopened and compared with the old one record by record; only then is it moved into
/// place with a rename, and the old store renamed to `DATA/store.old-<kind>`, where it
/// stays until the user removes it. At every instant the data dir holds one whole store
/// that [`open`] picks: a crash before the first rename leaves the old one in use (and
/// `.migrate-*` to remove), after it the new one.
///
/// The store must not be in use (its lock is held throughout).
pub fn migrate(data: &Path, to: StoreKind, options: StoreOptions) -> Result<MigrateReport> {
    let from_dirs = [StoreKind::Log, StoreKind::Sled]
        .into_iter()
        .filter(|k| k.dir_in(data).exists())
        .collect::<Vec<_>>();
    let from = match from_dirs.as_slice() {
        [] => {
            return Err(StoreError::Io(format!(
                "{} holds no store to migrate",
                data.display()
            )));
        }
        [one] => *one,
        _ => {
            return Err(StoreError::Io(format!(
                "{} holds both a log store ({}) and a sled store ({}), the trace of a migration cut short; the one in use is the sled store: remove the other and run the migration again",
                data.display(),
                LogStore::dir_in(data).display(),
                SledStore::dir_in(data).display()
            )));
        }
    };
    if from == to {
        return Err(StoreError::Io(format!(
            "the store in {} is already a {} store",
            data.display(),
            to.name()
        )));
    }
    let kept = kept_dir(data, from);
    if kept.exists() {
        return Err(StoreError::Io(format!(
            "{} is there from an earlier migration: remove it (or move it away) first",
            kept.display()
        )));
    }
    let staging = data.join(format!(".migrate-{}", to.name()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| {
            StoreError::Io(format!(
                "cannot remove {} (left by a migration cut short): {e}",
                staging.display()
            ))
        })?;
    }
    let source = open_source(from, data, options)?;
    {
        let target = open_kind(to, &staging, options)?;
        copy(source.as_ref(), target.as_ref())?;
        target.checkpoint()?;
    }
    if to == StoreKind::Sled {
        SledStore::checkpoint(&staging, options)?;
    }
    // Reopened from disk: what is compared is what the next open will read.
    let counts = {
        let target = open_kind(to, &staging, options)?;
        let differences = compare(source.as_ref(), target.as_ref())?;
        if !differences.is_empty() {
            return Err(StoreError::Io(format!(
                "the {} store written in {} differs from the {} store ({} difference(s), the first: {}); nothing was changed in {}",
                to.name(),
                staging.display(),
                from.name(),
                differences.len(),
                differences[0],
                data.display()
            )));
        }
        counts(target.as_ref())?
    };
    let io = |what: &str, e: std::io::Error| StoreError::Io(format!("{what}: {e}"));
    // The new store in place (with both there, `open` picks the sled one: for log → sled
    // this rename is the switch, for sled → log the next one is).
    let new_dir = to.dir_in(data);
    std::fs::rename(to.dir_in(&staging), &new_dir).map_err(|e| {
        io(
            &format!("cannot move the new store to {}", new_dir.display()),
            e,
        )
    })?;
    std::fs::rename(from.dir_in(data), &kept).map_err(|e| {
        io(
            &format!(
                "the new store is in {}, but the old one could not be moved to {}",
                new_dir.display(),
                kept.display()
            ),
            e,
        )
    })?;
    drop(source);
    let _ = std::fs::remove_dir_all(&staging);
    if let Ok(dir) = std::fs::File::open(data) {
        let _ = dir.sync_all();
    }
    Ok(MigrateReport {
        from,
        to,
        counts,
        kept,
    })
}

/// Copies every record of `source` into the empty store `target`, as stored.
pub fn copy(source: &dyn Store, target: &dyn Store) -> Result<()> {
    for record in source.processes()? {
        target.restore(Restore::Process(record))?;
    }
    for key in source.api_keys()? {
        target.restore(Restore::ApiKey(key))?;
    }
    let mut batch = Batch::default();
    let flush = |batch: &mut Batch, force: bool| -> Result<()> {
        if batch.ops.len() >= CHUNK || (force && !batch.is_empty()) {
            target.commit(&std::mem::take(batch))?;
        }
        Ok(())
    };
    for process in source.processes()? {
        for task in source.tasks(process.id, None, usize::MAX)? {
            let id = task.id;
            if let Some(reference) = &task.reference
                && source
                    .task_by_ref(process.id, reference)?
                    .is_some_and(|t| t.id == id)
            {
                batch.push(Op::InsertRef {
                    process: process.id,
                    reference: reference.clone(),
                    task: id,
                });
            }
            batch.push(Op::PutTask(Box::new(task)));
            batch.push(Op::IndexTask {
                process: process.id,
                task: id,
            });
            let events = source.history(id)?;
            if !events.is_empty() {
                batch.push(Op::History {
                    task: id,
                    seq: 0,
                    events,
                });
            }
            flush(&mut batch, false)?;
        }
        for (node, counter) in source.counters(process.id)? {
            batch.push(Op::Count {
                process: process.id,
                node,
                now: counter.now,
                total: counter.total,
            });
        }
        flush(&mut batch, false)?;
    }
    for task in source.inbox_tasks()? {
        for (seq, message) in source.inbox(task)? {
            batch.push(Op::Inbox { task, seq, message });
        }
        flush(&mut batch, false)?;
    }
    for task in source.ready()? {
        batch.push(Op::SetReady(task));
        flush(&mut batch, false)?;
    }
    for timer in source.due_timers(i64::MAX, None, usize::MAX)? {
        batch.push(Op::SetTimer(timer));
        flush(&mut batch, false)?;
    }
    flush(&mut batch, true)?;
    target.restore(Restore::NextIds(source.next_ids()?))?;
    target.flush()
}

/// Every difference between what `a` and `b` hold, each named ("task 7: history
/// differs"); empty when they hold the same.
pub fn compare(a: &dyn Store, b: &dyn Store) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut same = |what: String, equal: bool| {
        if !equal {
            out.push(what);
        }
    };
    let processes = a.processes()?;
    same("the processes differ".into(), processes == b.processes()?);
    same("the API keys differ".into(), a.api_keys()? == b.api_keys()?);
    let (ids_a, ids_b) = (a.next_ids()?, b.next_ids()?);
    same(
        format!("the next ids differ ({ids_a:?} against {ids_b:?})"),
        ids_a == ids_b,
    );
    for process in &processes {
        let id = process.id;
        if let Some(alias) = &process.alias {
            same(
                format!("alias @{alias} differs"),
                a.alias(alias)? == b.alias(alias)?,
            );
        }
        let tasks = a.tasks(id, None, usize::MAX)?;
        same(
            format!("the tasks of process {id} differ"),
            tasks == b.tasks(id, None, usize::MAX)?,
        );
        same(
            format!("the counters of process {id} differ"),
            a.counters(id)? == b.counters(id)?,
        );
        for task in &tasks {
            same(
                format!("task {}: its history differs", task.id),
                a.history(task.id)? == b.history(task.id)?,
            );
            same(
                format!("task {}: its inbox differs", task.id),
                a.inbox(task.id)? == b.inbox(task.id)?,
            );
            if let Some(reference) = &task.reference {
                let (ra, rb) = (
                    a.task_by_ref(id, reference)?.map(|t| t.id),
                    b.task_by_ref(id, reference)?.map(|t| t.id),
                );
                same(
                    format!("ref '{reference}' of process {id}: {ra:?} against {rb:?}"),
                    ra == rb,
                );
            }
        }
    }
    let inbox_tasks = a.inbox_tasks()?;
    same(
        "the tasks with messages differ".into(),
        inbox_tasks == b.inbox_tasks()?,
    );
    for task in inbox_tasks {
        same(
            format!("the inbox of task {task} differs"),
            a.inbox(task)? == b.inbox(task)?,
        );
    }
    same("the ready sets differ".into(), a.ready()? == b.ready()?);
    same(
        "the timers differ".into(),
        a.due_timers(i64::MAX, None, usize::MAX)? == b.due_timers(i64::MAX, None, usize::MAX)?,
    );
    Ok(out)
}

/// How much of each thing `store` holds.
pub fn counts(store: &dyn Store) -> Result<Counts> {
    let mut counts = Counts::default();
    let processes = store.processes()?;
    counts.processes = processes.len();
    for process in &processes {
        for task in store.tasks(process.id, None, usize::MAX)? {
            counts.tasks += 1;
            counts.refs += usize::from(task.reference.is_some());
            counts.history_events += store.history(task.id)?.len();
        }
    }
    for task in store.inbox_tasks()? {
        counts.messages += store.inbox(task)?.len();
    }
    counts.timers = store.due_timers(i64::MAX, None, usize::MAX)?.len();
    counts.ready = store.ready()?.len();
    counts.api_keys = store.api_keys()?.len();
    Ok(counts)
}

/// Reads every record `store` holds (every process, task, history, inbox message, API
/// key, timer) and returns what it holds, or each record that could not be read.
pub fn read_everything(store: &dyn Store) -> (Counts, Vec<String>) {
    let mut problems = Vec::new();
    let mut counts = Counts::default();
    let mut note = |what: String, e: StoreError| problems.push(format!("{what}: {e}"));
    let processes = match store.processes() {
        Ok(p) => p,
        Err(e) => {
            note("the processes".into(), e);
            Vec::new()
        }
    };
    counts.processes = processes.len();
    for process in &processes {
        if let Err(e) = store.tasks(process.id, None, usize::MAX) {
            note(format!("the tasks of process {}", process.id), e);
        }
        if let Err(e) = store.counters(process.id) {
            note(format!("the counters of process {}", process.id), e);
        }
    }
    // Every task by id, whatever its process: one that does not read is named.
    let upper = match store.next_ids() {
        Ok(ids) => ids.task,
        Err(e) => {
            note("the counters of ids".into(), e);
            0
        }
    };
    for id in 0..upper {
        match store.task(id) {
            Ok(Some(task)) => {
                counts.tasks += 1;
                counts.refs += usize::from(task.reference.is_some());
            }
            Ok(None) => continue,
            Err(e) => {
                note(format!("task {id}"), e);
                continue;
            }
        }
        match store.history(id) {
            Ok(events) => counts.history_events += events.len(),
            Err(e) => note(format!("the history of task {id}"), e),
        }
    }
    match store.inbox_tasks() {
        Ok(tasks) => {
            for task in tasks {
                match store.inbox(task) {
                    Ok(messages) => counts.messages += messages.len(),
                    Err(e) => note(format!("the inbox of task {task}"), e),
                }
            }
        }
        Err(e) => note("the inboxes".into(), e),
    }
    match store.due_timers(i64::MAX, None, usize::MAX) {
        Ok(t) => counts.timers = t.len(),
        Err(e) => note("the timers".into(), e),
    }
    match store.ready() {
        Ok(r) => counts.ready = r.len(),
        Err(e) => note("the ready set".into(), e),
    }
    match store.api_keys() {
        Ok(k) => counts.api_keys = k.len(),
        Err(e) => note("the API keys".into(), e),
    }
    (counts, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::task;

    fn options(kind: StoreKind) -> StoreOptions {
        StoreOptions {
            kind,
            ..StoreOptions::default()
        }
    }

    fn sealed(data: &Path) -> SealedStore {
        let inner = crate::open(data, options(StoreKind::Log)).unwrap();
        let policy = |_: &str| vec!["token".to_string()];
        SealedStore::new(inner, Keyring::new(Sealer::new(&[3; 32])), Arc::new(policy))
    }

    /// A store in use: tasks waiting on timers, ready, with refs, history in several
    /// records, messages in inboxes, counters, a process with a sealed setting and a
    /// direct URL, API keys (one rotated, one deleted), ids handed out past the last task.
    fn fill(store: &SealedStore) {
        let mut settings = serde_json::Map::new();
        settings.insert("token".into(), serde_json::json!("process secret"));
        settings.insert("plain".into(), serde_json::json!(1));
        let process = store
            .create_process(NewProcess {
                alias: Some("p".into()),
                source: "t".into(),
                definition: "process: p".into(),
                created: 5,
                settings,
            })
            .unwrap();
        store.set_url_hash(process.id, "url-hash".into()).unwrap();
        store
            .update_process(process.id, "process: p2".into())
            .unwrap();
        let other = store
            .create_process(crate::test_support::new_process(None))
            .unwrap();
        let mut doomed = 0;
        for n in 0..30u64 {
            let id = store.next_task_id().unwrap();
            if n == 2 {
                doomed = id;
            }
            let mut record = task(id, if n % 3 == 0 { "wait" } else { "done" });
            record.process = if n % 5 == 0 { other.id } else { process.id };
            record.reference = (n % 2 == 0).then(|| format!("ref-{n}"));
            record
                .data
                .insert("token".into(), serde_json::json!(format!("secret {n}")));
            record.data.insert("n".into(), serde_json::json!(n));
            let mut batch = Batch::default();
            if let Some(r) = &record.reference {
                batch.push(Op::InsertRef {
                    process: record.process,
                    reference: r.clone(),
                    task: id,
                });
            }
            batch.push(Op::IndexTask {
                process: record.process,
                task: id,
            });
            batch.push(Op::Count {
                process: record.process,
                node: record.node.clone(),
                now: 1,
                total: 1,
            });
            if n % 3 == 0 {
                batch.push(Op::SetTimer(TimerKey {
                    due: 1_000 + n as i64,
                    task: id,
                }));
            } else {
                batch.push(Op::SetReady(id));
            }
            for seq in 0..2 {
                batch.push(Op::History {
                    task: id,
                    seq,
                    events: vec![HistoryEvent {
                        at: seq as i64,
                        node: record.node.clone(),
                        kind: EventKind::Created,
                    }],
                });
            }
            batch.push(Op::PutTask(Box::new(record)));
            store.commit(&batch).unwrap();
            if n % 4 == 0 {
                let mut data = serde_json::Map::new();
                data.insert("token".into(), serde_json::json!("message secret"));
                let mut message = Batch::default();
                message.push(Op::Inbox {
                    task: id,
                    seq: store.next_task_id().unwrap(),
                    message: InboxMessage::Modify {
                        data,
                        source: "test".into(),
                    },
                });
                store.commit(&message).unwrap();
            }
        }
        // A deleted task: its ref is free, its id is not.
        let mut delete = Batch::default();
        delete.push(Op::DeleteTask {
            task: doomed,
            process: process.id,
            reference: Some("ref-2".into()),
        });
        store.commit(&delete).unwrap();
        let a = store
            .create_api_key("a", "a-secret", vec![process.id], 1)
            .unwrap();
        store.set_api_key_secret(a.login, "rotated").unwrap();
        let b = store.create_api_key("b", "b-secret", vec![], 2).unwrap();
        store.delete_api_key(b.login).unwrap();
        // Ids handed out and never used: still never handed out again.
        for _ in 0..5 {
            store.next_task_id().unwrap();
        }
        store.flush().unwrap();
    }

    fn snapshot_of(data: &Path) -> (Vec<String>, NextIds, Counts) {
        // Everything a store holds, as text, read through the sealed store (so sealed
        // values must still open, under the same ids and key).
        let store = sealed(data);
        let mut out = Vec::new();
        for p in store.processes().unwrap() {
            out.push(format!("{p:?}"));
            for t in store.tasks(p.id, None, usize::MAX).unwrap() {
                out.push(format!("{t:?}"));
                out.push(format!("{:?}", store.history(t.id).unwrap()));
                out.push(format!("{:?}", store.inbox(t.id).unwrap()));
                if let Some(r) = &t.reference {
                    out.push(format!(
                        "{r} -> {:?}",
                        store.task_by_ref(p.id, r).unwrap().map(|t| t.id)
                    ));
                }
            }
            out.push(format!("{:?}", store.counters(p.id).unwrap()));
        }
        out.push(format!("{:?}", store.api_keys().unwrap()));
        out.push(format!("{:?}", store.ready().unwrap()));
        out.push(format!(
            "{:?}",
            store.due_timers(i64::MAX, None, usize::MAX).unwrap()
        ));
        out.push(format!("{:?}", store.inbox_tasks().unwrap()));
        out.push(format!("{:?}", store.alias("p").unwrap()));
        let ids = store.next_ids().unwrap();
        let counts = counts(store.inner().as_ref()).unwrap();
        (out, ids, counts)
    }

    #[test]
    fn a_store_in_use_migrates_log_to_sled_to_log_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        fill(&sealed(data));
        std::fs::write(data.join("seal.json"), "{\"kept\": true}").unwrap();
        let before = snapshot_of(data);
        assert_eq!(before.2.tasks, 29);
        assert!(before.2.messages > 0 && before.2.timers > 0 && before.2.history_events > 0);
        assert!(
            before.0.iter().any(|l| l.contains("secret 4")),
            "the sealed values open"
        );

        let report = migrate(data, StoreKind::Sled, StoreOptions::default()).unwrap();
        assert_eq!((report.from, report.to), (StoreKind::Log, StoreKind::Sled));
        assert_eq!(report.counts, before.2);
        assert_eq!(report.kept, data.join("store.old-log"));
        assert!(data.join("store.old-log").join("LOCK").exists());
        assert!(!LogStore::dir_in(data).exists());
        assert_eq!(kind_of(data, StoreOptions::default()), StoreKind::Sled);
        assert!(!data.join(".migrate-sled").exists());
        // What is outside the store's directory stays as it was.
        assert_eq!(
            std::fs::read_to_string(data.join("seal.json")).unwrap(),
            "{\"kept\": true}"
        );
        let on_sled = snapshot_of(data);
        assert_eq!(on_sled, before);

        // Refused while the old store is still kept, and to the kind it already is.
        let again = migrate(data, StoreKind::Sled, StoreOptions::default()).unwrap_err();
        assert!(
            again.to_string().contains("already a sled store"),
            "{again}"
        );
        std::fs::create_dir(data.join("store.old-sled")).unwrap();
        let kept = migrate(data, StoreKind::Log, StoreOptions::default()).unwrap_err();
        assert!(kept.to_string().contains("store.old-sled"), "{kept}");
        std::fs::remove_dir(data.join("store.old-sled")).unwrap();

        // And back.
        let back = migrate(data, StoreKind::Log, StoreOptions::default()).unwrap();
        assert_eq!(back.kept, data.join("store.old-sled"));
        assert_eq!(kind_of(data, StoreOptions::default()), StoreKind::Log);
        assert_eq!(snapshot_of(data), before);
        // The migrated log holds what older conveyors do not know (the `NEXT_IDS` entry
        // of format 2, binary records of format 3): marked 3. A log store nothing was
        // committed to stays 1, which they open.
        let format = |d: &Path| std::fs::read(LogStore::dir_in(d).join("FORMAT")).unwrap();
        assert_eq!(format(data), 3u32.to_le_bytes());
        let fresh = tempfile::tempdir().unwrap();
        drop(LogStore::open(fresh.path()).unwrap());
        assert_eq!(format(fresh.path()), 1u32.to_le_bytes());
        // The counters go on from where they were.
        let store = sealed(data);
        assert!(store.next_task_id().unwrap() >= before.1.task);
        let key = store.create_api_key("c", "c", vec![], 3).unwrap();
        assert!(
            key.login >= before.1.login,
            "a deleted login was given again"
        );
    }

    #[test]
    fn read_everything_names_each_record_that_does_not_read() {
        let dir = tempfile::tempdir().unwrap();
        fill(&sealed(dir.path()));
        let (counts, problems) = read_everything(&sealed(dir.path()));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(counts.tasks, 29);
        // Opened with another key, no sealed value opens: each one is named.
        let inner = crate::open(dir.path(), options(StoreKind::Log)).unwrap();
        let policy = |_: &str| Vec::new();
        let wrong = SealedStore::new(inner, Keyring::new(Sealer::new(&[4; 32])), Arc::new(policy));
        let (_, problems) = read_everything(&wrong);
        assert!(!problems.is_empty());
        assert!(
            problems.iter().any(|p| p.starts_with("the processes")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.starts_with("the inbox of task")),
            "{problems:?}"
        );
        let tasks = problems.iter().filter(|p| p.starts_with("task ")).count();
        assert_eq!(tasks, 29, "{problems:?}");
    }

    #[test]
    fn a_store_in_use_is_not_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let log = StoreOptions {
            kind: StoreKind::Log,
            ..StoreOptions::default()
        };
        let store = crate::open(dir.path(), log).unwrap();
        let err = migrate(dir.path(), StoreKind::Sled, log).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        drop(store);
        assert_eq!(
            kind_of(dir.path(), log),
            StoreKind::Log,
            "nothing was moved"
        );
        assert!(!SledStore::dir_in(dir.path()).exists());
    }
}
