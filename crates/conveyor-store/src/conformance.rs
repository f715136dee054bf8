//! The conformance suite: the [`Store`] contract (see its `# Contract`) as tests, run
//! the same against every implementation.
//!
//! A store is a [`Subject`]: how to open one in a directory, and how to do to its files
//! what a crash can. [`subjects`] lists this crate's; a store kept elsewhere (say, over
//! PostgreSQL) builds its own `Subject` and runs [`run_all`] on it — one line — plus the
//! kill -9 case, which needs a test of its own to run as the child process:
//!
//! ```ignore
//! #[test] fn conformance() { conveyor_store::conformance::run_all(&my_subject(), "tests::child") }
//! #[test] #[ignore] fn child() { conveyor_store::conformance::child(&[my_subject()]) }
//! ```
//!
//! Built for this crate's tests, and for other crates with the feature `conformance`.

use std::collections::BTreeSet;
use std::io::{BufRead as _, Write as _};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::*;

/// A store under test.
#[derive(Clone, Copy)]
pub struct Subject {
    /// Names it in failures and to the child process.
    pub name: &'static str,
    /// Opens (or creates) the store of the data dir given.
    pub open: fn(&Path) -> Result<Arc<dyn Store>>,
    /// Whether a commit (`Store::commit`; not `commit_quick`, which may wait in memory a
    /// moment longer) survives the process being killed as soon as it returns (else
    /// only once `flush` returned).
    pub commit_survives_kill: bool,
    /// Removes what lets an open skip replaying the store's log (a snapshot), as a crash
    /// before any was written leaves it. `None`: the store has nothing of the kind.
    pub drop_snapshot: Option<fn(&Path)>,
    /// Leaves what a crash in the middle of a write leaves at the end of the store's
    /// log: part of a record. `None`: the store's files are not ours to tear.
    pub tear_tail: Option<fn(&Path)>,
}

fn open_log(dir: &Path) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(LogStore::open(dir)?))
}

fn open_sled(dir: &Path) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(SledStore::open(dir)?))
}

fn sealed(inner: Arc<dyn Store>) -> Arc<dyn Store> {
    let policy = |_: &str| vec!["secret".to_string()];
    Arc::new(SealedStore::new(
        inner,
        Keyring::new(Sealer::new(&[9; 32])),
        Arc::new(policy),
    ))
}

fn open_sealed_log(dir: &Path) -> Result<Arc<dyn Store>> {
    open_log(dir).map(sealed)
}

fn open_sealed_sled(dir: &Path) -> Result<Arc<dyn Store>> {
    open_sled(dir).map(sealed)
}

fn drop_log_snapshot(dir: &Path) {
    let _ = std::fs::remove_file(LogStore::dir_in(dir).join("snapshot"));
}

/// Half a frame at the end of the newest segment: a header that promises more bytes
/// than follow.
fn tear_log_tail(dir: &Path) {
    let log = LogStore::dir_in(dir);
    let newest = std::fs::read_dir(&log)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .max();
    if let Some(path) = newest
        && let Ok(mut file) = std::fs::OpenOptions::new().append(true).open(path)
    {
        let mut torn = Vec::new();
        torn.extend_from_slice(&4_000u32.to_le_bytes());
        torn.extend_from_slice(&0xdead_beefu32.to_le_bytes());
        torn.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7]);
        let _ = file.write_all(&torn);
    }
}

/// sled keeps its snapshot in `snap.*` files; without one it replays its whole log.
fn drop_sled_snapshot(dir: &Path) {
    for entry in std::fs::read_dir(SledStore::dir_in(dir))
        .into_iter()
        .flatten()
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with("snap.") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// PostgreSQL: each data dir stands for a schema of its own on the test server
/// ([`crate::test_postgres`]); a file in the dir names the server and the schema, so
/// the child process of the kill -9 case (which starts no server) finds them.
fn open_pg(dir: &Path) -> Result<Arc<dyn Store>> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let file = dir.join("postgres");
    let (url, schema) = match std::fs::read_to_string(&file) {
        Ok(text) => match text.split_once('\n') {
            Some((url, schema)) => (url.to_string(), schema.trim().to_string()),
            None => {
                return Err(StoreError::Io(format!(
                    "{} is not `url\\nschema`",
                    file.display()
                )));
            }
        },
        Err(_) => {
            let server = crate::test_postgres::server().map_err(StoreError::Io)?;
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let schema = format!("c_{}_{n}", std::process::id());
            std::fs::write(&file, format!("{}\n{schema}", server.url))
                .map_err(|e| StoreError::Io(e.to_string()))?;
            (server.url.clone(), schema)
        }
    };
    let options = PgOptions {
        schema: Some(schema),
        pool_size: 4,
        ..PgOptions::default()
    };
    Ok(Arc::new(PgStore::open(&url, options)?))
}

fn open_sealed_pg(dir: &Path) -> Result<Arc<dyn Store>> {
    open_pg(dir).map(sealed)
}

/// The PostgreSQL store, bare and sealed (see [`open_pg`]): a commit is the server's
/// once it returns, whatever becomes of the process that made it.
pub fn postgres_subjects() -> Vec<Subject> {
    vec![
        Subject {
            name: "postgres",
            open: open_pg,
            commit_survives_kill: true,
            drop_snapshot: None,
            tear_tail: None,
        },
        Subject {
            name: "sealed-postgres",
            open: open_sealed_pg,
            commit_survives_kill: true,
            drop_snapshot: None,
            tear_tail: None,
        },
    ]
}

/// Every store of this crate: the log store, sled, and [`SealedStore`] over each (and
/// PostgreSQL: [`postgres_subjects`]).
pub fn subjects() -> Vec<Subject> {
    let mut all = local_subjects();
    all.extend(postgres_subjects());
    all
}

fn local_subjects() -> Vec<Subject> {
    vec![
        Subject {
            name: "log",
            open: open_log,
            commit_survives_kill: true,
            drop_snapshot: Some(drop_log_snapshot),
            tear_tail: Some(tear_log_tail),
        },
        Subject {
            name: "sled",
            open: open_sled,
            commit_survives_kill: false,
            drop_snapshot: Some(drop_sled_snapshot),
            tear_tail: None,
        },
        Subject {
            name: "sealed-log",
            open: open_sealed_log,
            commit_survives_kill: true,
            drop_snapshot: Some(drop_log_snapshot),
            tear_tail: Some(tear_log_tail),
        },
        Subject {
            name: "sealed-sled",
            open: open_sealed_sled,
            commit_survives_kill: false,
            drop_snapshot: Some(drop_sled_snapshot),
            tear_tail: None,
        },
    ]
}

/// Opens the subject's store in `dir`, waiting up to 5 s for a previous holder (sled's
/// threads let go of its files a moment after the last handle is dropped; a killed child
/// a moment after it is reaped).
pub fn open(subject: &Subject, dir: &Path) -> Arc<dyn Store> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match (subject.open)(dir) {
            Ok(store) => return store,
            Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!(
                "[{}] cannot open the store in {}: {e}",
                subject.name,
                dir.display()
            ),
        }
    }
}

/// One case of the suite.
type Case = fn(&Subject);

/// Runs every case of the suite against `subject`; `child_test` is the full name of a
/// test in the same test binary that calls [`child`] (the kill -9 case runs it).
pub fn run_all(subject: &Subject, child_test: &str) {
    let cases: &[(&str, Case)] = &[
        (
            "ids_are_unique_across_reopens",
            ids_are_unique_across_reopens,
        ),
        ("a_group_is_all_or_nothing", a_group_is_all_or_nothing),
        ("a_ref_names_one_task", a_ref_names_one_task),
        ("a_quick_commit_is_a_commit", a_quick_commit_is_a_commit),
        ("timers_come_in_due_order", timers_come_in_due_order),
        (
            "writes_are_visible_when_they_return",
            writes_are_visible_when_they_return,
        ),
        ("reads_come_in_order", reads_come_in_order),
        (
            "deleting_a_task_removes_what_is_its",
            deleting_a_task_removes_what_is_its,
        ),
        (
            "everything_survives_a_flush_and_reopen",
            everything_survives_a_flush_and_reopen,
        ),
        ("checkpoint_changes_nothing", checkpoint_changes_nothing),
        (
            "a_reopen_without_a_snapshot_replays_everything",
            a_reopen_without_a_snapshot_replays_everything,
        ),
        (
            "a_torn_tail_is_cut_and_the_rest_kept",
            a_torn_tail_is_cut_and_the_rest_kept,
        ),
        (
            "restore_keeps_ids_and_counters",
            restore_keeps_ids_and_counters,
        ),
    ];
    for (name, case) in cases {
        eprintln!("[{}] {name}", subject.name);
        case(subject);
    }
    eprintln!("[{}] kill_9_in_the_middle_of_commits", subject.name);
    kill_9_in_the_middle_of_commits(subject, child_test);
}

fn tempdir() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("cannot make a temporary directory: {e}"),
    }
}

fn ok<T>(subject: &Subject, what: &str, result: Result<T>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("[{}] {what}: {e}", subject.name),
    }
}

/// A task record of process 1.
pub fn task(id: u64, node: &str) -> TaskRecord {
    TaskRecord {
        id,
        process: 1,
        reference: None,
        node: node.into(),
        prev_node: None,
        status: TaskStatus::Waiting,
        data: Default::default(),
        created: 1,
        changed: 1,
        entered: 1,
        wake: None,
        attempt: 0,
        history_len: 0,
        caller: None,
        moves: 0,
        secret_keys: Vec::new(),
        created_by: None,
    }
}

fn new_process(alias: Option<&str>) -> NewProcess {
    NewProcess {
        alias: alias.map(str::to_string),
        source: "conformance".into(),
        definition: "process: conformance".into(),
        created: 1,
        settings: Default::default(),
    }
}

fn event(node: &str) -> HistoryEvent {
    HistoryEvent {
        at: 1,
        node: node.into(),
        kind: EventKind::Created,
    }
}

fn message(n: i64) -> InboxMessage {
    let mut data = serde_json::Map::new();
    data.insert("n".into(), serde_json::json!(n));
    data.insert("secret".into(), serde_json::json!(format!("s{n}")));
    InboxMessage::Modify {
        data,
        source: "conformance".into(),
    }
}

/// A new task with everything a task can have: ref, index entry, timer, ready entry,
/// counter, history and a message.
fn new_task_batch(id: u64, seq: u64, n: i64) -> Batch {
    let mut record = task(id, "n");
    record.reference = Some(format!("r{id}"));
    record.data.insert("n".into(), serde_json::json!(n));
    record
        .data
        .insert("secret".into(), serde_json::json!(format!("s{n}")));
    let mut batch = Batch::default();
    batch.push(Op::InsertRef {
        process: 1,
        reference: format!("r{id}"),
        task: id,
    });
    batch.push(Op::PutTask(Box::new(record)));
    batch.push(Op::IndexTask {
        process: 1,
        task: id,
    });
    batch.push(Op::SetTimer(TimerKey {
        due: id as i64,
        task: id,
    }));
    batch.push(Op::SetReady(id));
    batch.push(Op::Count {
        process: 1,
        node: "n".into(),
        now: 1,
        total: 1,
    });
    batch.push(Op::History {
        task: id,
        seq: 0,
        events: vec![event("n")],
    });
    batch.push(Op::Inbox {
        task: id,
        seq,
        message: message(n),
    });
    batch
}

/// Adds a task (as [`new_task_batch`]) with fresh numbers; returns its id.
fn add_task(subject: &Subject, store: &dyn Store, n: i64) -> u64 {
    let id = ok(subject, "next_task_id", store.next_task_id());
    let seq = ok(subject, "next_task_id", store.next_task_id());
    ok(subject, "commit", store.commit(&new_task_batch(id, seq, n)));
    id
}

/// Every task of process 1, checked whole: ref, timer, ready entry, history, message and
/// counter agree with the tasks there. Returns their ids and the highest number used.
fn check_whole(subject: &Subject, store: &dyn Store) -> (BTreeSet<u64>, u64) {
    let name = subject.name;
    let tasks = ok(subject, "tasks", store.tasks(1, None, usize::MAX));
    let ids: BTreeSet<u64> = tasks.iter().map(|t| t.id).collect();
    let timers: BTreeSet<u64> = ok(
        subject,
        "timers",
        store.due_timers(i64::MAX, None, usize::MAX),
    )
    .iter()
    .map(|t| t.task)
    .collect();
    let ready: BTreeSet<u64> = ok(subject, "ready", store.ready()).into_iter().collect();
    let inboxes: BTreeSet<u64> = ok(subject, "inbox_tasks", store.inbox_tasks())
        .into_iter()
        .collect();
    assert_eq!(
        timers, ids,
        "[{name}] timers without their task, or tasks without their timer"
    );
    assert_eq!(ready, ids, "[{name}] ready entries and tasks differ");
    assert_eq!(inboxes, ids, "[{name}] messages and tasks differ");
    let mut highest = 0;
    for record in &tasks {
        let id = record.id;
        let by_ref = ok(
            subject,
            "task_by_ref",
            store.task_by_ref(1, &format!("r{id}")),
        );
        assert_eq!(by_ref.map(|t| t.id), Some(id), "[{name}] ref of task {id}");
        assert_eq!(
            ok(subject, "history", store.history(id)),
            vec![event("n")],
            "[{name}] history of task {id}"
        );
        let messages = ok(subject, "inbox", store.inbox(id));
        assert_eq!(messages.len(), 1, "[{name}] inbox of task {id}");
        let n = record.data.get("n").and_then(|n| n.as_i64()).unwrap_or(-1);
        assert_eq!(messages[0].1, message(n), "[{name}] message of task {id}");
        assert_eq!(
            record.data.get("secret"),
            Some(&serde_json::json!(format!("s{n}"))),
            "[{name}] data of task {id}"
        );
        highest = highest.max(id).max(messages[0].0);
    }
    let counters = ok(subject, "counters", store.counters(1));
    let expected = if ids.is_empty() {
        vec![]
    } else {
        vec![(
            "n".to_string(),
            NodeCounter {
                now: ids.len() as i64,
                total: ids.len() as u64,
            },
        )]
    };
    assert_eq!(counters, expected, "[{name}] counters");
    (ids, highest)
}

fn ids_are_unique_across_reopens(subject: &Subject) {
    let dir = tempdir();
    let mut seen = BTreeSet::new();
    let mut logins = BTreeSet::new();
    let mut processes = BTreeSet::new();
    for round in 0..3 {
        let store = open(subject, dir.path());
        let process = ok(
            subject,
            "create_process",
            store.create_process(new_process(None)),
        );
        assert!(
            processes.insert(process.id),
            "[{}] process id {} again",
            subject.name,
            process.id
        );
        for _ in 0..5 {
            let id = ok(subject, "next_task_id", store.next_task_id());
            assert!(
                seen.insert(id),
                "[{}] id {id} handed out twice",
                subject.name
            );
        }
        // Used in a commit: a task and a message.
        let mut batch = Batch::default();
        let last = *seen.iter().next_back().unwrap_or(&0);
        batch.push(Op::PutTask(Box::new(task(last, "n"))));
        batch.push(Op::Inbox {
            task: last,
            seq: last - 1,
            message: message(round),
        });
        ok(subject, "commit", store.commit(&batch));
        let key = ok(
            subject,
            "create_api_key",
            store.create_api_key("k", "s", vec![], 1),
        );
        assert!(
            logins.insert(key.login),
            "[{}] login {} again",
            subject.name,
            key.login
        );
        // A deleted key's login is never given again.
        assert!(ok(
            subject,
            "delete_api_key",
            store.delete_api_key(key.login)
        ));
        ok(subject, "flush", store.flush());
        drop(store);
        if round == 1
            && let Some(drop_snapshot) = subject.drop_snapshot
        {
            drop_snapshot(dir.path());
        }
    }
    let store = open(subject, dir.path());
    let next = ok(subject, "next_ids", store.next_ids());
    assert!(
        next.task > *seen.iter().next_back().unwrap_or(&0),
        "[{}] {next:?}",
        subject.name
    );
    assert!(
        next.login > *logins.iter().next_back().unwrap_or(&0),
        "[{}] {next:?}",
        subject.name
    );
    assert_eq!(ok(subject, "next_task_id", store.next_task_id()), next.task);
}

fn a_group_is_all_or_nothing(subject: &Subject) {
    let dir = tempdir();
    let store = open(subject, dir.path());
    ok(
        subject,
        "create_process",
        store.create_process(new_process(Some("p"))),
    );
    let first = add_task(subject, store.as_ref(), 1);
    // A group whose last batch claims a ref that is taken: none of it is applied.
    let a = new_task_batch(100, 101, 2);
    let mut b = new_task_batch(102, 103, 3);
    b.push(Op::InsertRef {
        process: 1,
        reference: format!("r{first}"),
        task: 102,
    });
    let err = store.commit_group(&[a.clone(), b]).err();
    assert!(
        matches!(err, Some(StoreError::DuplicateRef { process: 1, ref reference }) if *reference == format!("r{first}")),
        "[{}] {err:?}",
        subject.name
    );
    // Two batches of one group claiming the same ref: also refused whole.
    let mut c = new_task_batch(104, 105, 4);
    c.push(Op::InsertRef {
        process: 1,
        reference: "r100".into(),
        task: 104,
    });
    assert!(matches!(
        store.commit_group(&[a.clone(), c]),
        Err(StoreError::DuplicateRef { .. })
    ));
    let (ids, _) = check_whole(subject, store.as_ref());
    assert_eq!(
        ids,
        BTreeSet::from([first]),
        "[{}] part of a failed group applied",
        subject.name
    );
    // Counters of one group add up.
    let d = new_task_batch(106, 107, 5);
    ok(subject, "commit_group", store.commit_group(&[a, d]));
    let (ids, _) = check_whole(subject, store.as_ref());
    assert_eq!(ids, BTreeSet::from([first, 100, 106]));
    ok(subject, "flush", store.flush());
    drop(store);
    let store = open(subject, dir.path());
    let (ids, _) = check_whole(subject, store.as_ref());
    assert_eq!(ids, BTreeSet::from([first, 100, 106]));
}

/// [`Store::commit_quick`]: either the batch is applied as `commit` applies it (whole,
/// with its ref checked), or nothing is written; a store that never commits in place
/// (`None` each time) keeps this trivially.
fn a_quick_commit_is_a_commit(subject: &Subject) {
    let dir = tempdir();
    let store = open(subject, dir.path());
    ok(
        subject,
        "create_process",
        store.create_process(new_process(Some("p"))),
    );
    let first = add_task(subject, store.as_ref(), 1);
    let mut expected = BTreeSet::from([first]);
    for (i, n) in (2..40).enumerate() {
        let id = 200 + 2 * i as u64;
        match store.commit_quick(&new_task_batch(id, id + 1, n), Linger::May) {
            Some(result) => {
                ok(subject, "commit_quick", result);
                expected.insert(id);
            }
            None => {
                let (ids, _) = check_whole(subject, store.as_ref());
                assert_eq!(ids, expected, "[{}] `None` wrote something", subject.name);
            }
        }
    }
    // A batch claiming a taken ref: refused whole, in place or not.
    let mut taken = new_task_batch(300, 301, 99);
    taken.push(Op::InsertRef {
        process: 1,
        reference: format!("r{first}"),
        task: 300,
    });
    if let Some(result) = store.commit_quick(&taken, Linger::May) {
        assert!(
            matches!(result, Err(StoreError::DuplicateRef { .. })),
            "[{}] {result:?}",
            subject.name
        );
    }
    let (ids, _) = check_whole(subject, store.as_ref());
    assert_eq!(ids, expected, "[{}] after the quick commits", subject.name);
    ok(subject, "flush", store.flush());
    drop(store);
    let store = open(subject, dir.path());
    let (ids, _) = check_whole(subject, store.as_ref());
    assert_eq!(ids, expected, "[{}] after a reopen", subject.name);
}

fn a_ref_names_one_task(subject: &Subject) {
    let dir = tempdir();
    let store = open(subject, dir.path());
    ok(
        subject,
        "create_process",
        store.create_process(new_process(None)),
    );
    let id = add_task(subject, store.as_ref(), 1);
    // The same task claiming its own ref again is no conflict.
    let mut again = Batch::default();
    again.push(Op::InsertRef {
        process: 1,
        reference: format!("r{id}"),
        task: id,
    });
    ok(subject, "re-claim", store.commit(&again));
    let mut other = Batch::default();
    other.push(Op::InsertRef {
        process: 1,
        reference: format!("r{id}"),
        task: id + 1000,
    });
    assert!(matches!(
        store.commit(&other),
        Err(StoreError::DuplicateRef { .. })
    ));
    // The same ref in another process is another ref.
    let mut elsewhere = Batch::default();
    elsewhere.push(Op::InsertRef {
        process: 2,
        reference: format!("r{id}"),
        task: id + 1000,
    });
    ok(subject, "another process", store.commit(&elsewhere));
    // Deleting the task frees its ref.
    let mut delete = Batch::default();
    delete.push(Op::DeleteTask {
        task: id,
        process: 1,
        reference: Some(format!("r{id}")),
    });
    ok(subject, "delete", store.commit(&delete));
    assert!(
        ok(
            subject,
            "task_by_ref",
            store.task_by_ref(1, &format!("r{id}"))
        )
        .is_none()
    );
    ok(subject, "claim the freed ref", store.commit(&other));
}

fn timers_come_in_due_order(subject: &Subject) {
    let dir = tempdir();
    let store = open(subject, dir.path());
    let mut batch = Batch::default();
    for (due, task) in [
        (300, 1),
        (-5, 2),
        (100, 3),
        (100, 4),
        (5_000, 5),
        (i64::MIN + 1, 6),
    ] {
        batch.push(Op::SetTimer(TimerKey { due, task }));
    }
    ok(subject, "commit", store.commit(&batch));
    let tasks = |v: Vec<TimerKey>| v.iter().map(|t| t.task).collect::<Vec<_>>();
    assert_eq!(
        tasks(ok(subject, "due", store.due_timers(300, None, 10))),
        vec![6, 2, 3, 4, 1]
    );
    let after = Some(TimerKey { due: 100, task: 3 });
    assert_eq!(
        tasks(ok(subject, "due", store.due_timers(300, after, 10))),
        vec![4, 1]
    );
    assert_eq!(
        tasks(ok(subject, "due", store.due_timers(300, None, 2))),
        vec![6, 2]
    );
    let past = Some(TimerKey { due: 300, task: 1 });
    assert!(ok(subject, "due", store.due_timers(300, past, 10)).is_empty());
    assert_eq!(
        ok(subject, "next", store.next_timer()),
        Some(TimerKey {
            due: i64::MIN + 1,
            task: 6
        })
    );
    let mut clear = Batch::default();
    clear.push(Op::ClearTimer(TimerKey {
        due: i64::MIN + 1,
        task: 6,
    }));
    ok(subject, "commit", store.commit(&clear));
    assert_eq!(
        ok(subject, "next", store.next_timer()),
        Some(TimerKey { due: -5, task: 2 })
    );
}

fn writes_are_visible_when_they_return(subject: &Subject) {
    let dir = tempdir();
    let store = open(subject, dir.path());
    ok(
        subject,
        "create_process",
        store.create_process(new_process(None)),
    );
    // Readers on other threads see every commit as soon as it returned, whole.
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
    let done = Arc::new(AtomicU64::new(0));
    let checked = Arc::new(AtomicU64::new(0));
    let reader = {
        let store = Arc::clone(&store);
        let done = Arc::clone(&done);
        let checked = Arc::clone(&checked);
        let name = subject.name;
        std::thread::spawn(move || {
            loop {
                let before = done.load(SeqCst);
                if before == u64::MAX {
                    return;
                }
                if before > 0 {
                    let found = store.task(before).ok().flatten();
                    assert!(
                        found.is_some(),
                        "[{name}] task {before} committed but not read"
                    );
                    let by_ref = store.task_by_ref(1, &format!("r{before}")).ok().flatten();
                    assert!(by_ref.is_some(), "[{name}] ref of task {before} not read");
                    checked.fetch_add(1, SeqCst);
                }
            }
        })
    };
    for n in 0..200 {
        let id = add_task(subject, store.as_ref(), n);
        done.store(id, SeqCst);
    }
    // On a busy machine the writes may all land before the reader first runs: it gets
    // its turn (up to 10 s) before it is told to stop, so it has read at least once.
    let waited = std::time::Instant::now();
    while checked.load(SeqCst) == 0 && waited.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    done.store(u64::MAX, SeqCst);
    reader
        .join()
        .unwrap_or_else(|_| panic!("[{}] the reader failed", subject.name));
    assert!(
        checked.load(SeqCst) > 0,
        "[{}] the reader never read",
        subject.name
    );
    check_whole(subject, store.as_ref());
    // Processes and API keys too.
    let key = ok(
        subject,
        "create_api_key",
        store.create_api_key("k", "a", vec![], 1),
    );
    ok(subject, "rotate", store.set_api_key_secret(key.login, "b"));
    assert_eq!(
        ok(subject, "api_key", store.api_key(key.login)).map(|k| k.secret),
        Some("b".into())
    );
    ok(subject, "url hash", store.set_url_hash(1, "h".into()));
    assert_eq!(
        ok(subject, "process", store.process(1)).and_then(|p| p.url_hash),
        Some("h".into())
    );
}

fn reads_come_in_order(subject: &Subject) {
    let dir = tempdir();
    let store = open(subject, dir.path());
    ok(
        subject,
        "create_process",
        store.create_process(new_process(None)),
    );
    let mut batch = Batch::default();
    for id in [30u64, 10, 20] {
        batch.push(Op::PutTask(Box::new(task(id, "n"))));
        batch.push(Op::IndexTask {
            process: 1,
            task: id,
        });
    }
    for seq in [7u64, 3, 5] {
        batch.push(Op::Inbox {
            task: 10,
            seq,
            message: message(seq as i64),
        });
    }
    ok(subject, "commit", store.commit(&batch));
    for seq in 0..3u64 {
        let mut step = Batch::default();
        step.push(Op::History {
            task: 10,
            seq: seq * 2,
            events: vec![event(&format!("a{seq}")), event(&format!("b{seq}"))],
        });
        ok(subject, "commit", store.commit(&step));
    }
    let ids: Vec<u64> = ok(subject, "tasks", store.tasks(1, None, 10))
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, vec![10, 20, 30]);
    assert_eq!(ok(subject, "tasks", store.tasks(1, None, 2)).len(), 2);
    let seqs: Vec<u64> = ok(subject, "inbox", store.inbox(10))
        .iter()
        .map(|m| m.0)
        .collect();
    assert_eq!(seqs, vec![3, 5, 7]);
    let mut clear = Batch::default();
    clear.push(Op::ClearInbox { task: 10, seq: 5 });
    ok(subject, "commit", store.commit(&clear));
    let seqs: Vec<u64> = ok(subject, "inbox", store.inbox(10))
        .iter()
        .map(|m| m.0)
        .collect();
    assert_eq!(seqs, vec![3, 7]);
    let nodes: Vec<String> = ok(subject, "history", store.history(10))
        .into_iter()
        .map(|e| e.node)
        .collect();
    assert_eq!(nodes, vec!["a0", "b0", "a1", "b1", "a2", "b2"]);
}

fn deleting_a_task_removes_what_is_its(subject: &Subject) {
    let dir = tempdir();
    let store = open(subject, dir.path());
    ok(
        subject,
        "create_process",
        store.create_process(new_process(None)),
    );
    let keep = add_task(subject, store.as_ref(), 1);
    let gone = add_task(subject, store.as_ref(), 2);
    let mut delete = Batch::default();
    delete.push(Op::DeleteTask {
        task: gone,
        process: 1,
        reference: Some(format!("r{gone}")),
    });
    delete.push(Op::ClearTimer(TimerKey {
        due: gone as i64,
        task: gone,
    }));
    delete.push(Op::Count {
        process: 1,
        node: "n".into(),
        now: -1,
        total: 0,
    });
    ok(subject, "delete", store.commit(&delete));
    assert!(ok(subject, "task", store.task(gone)).is_none());
    assert!(ok(subject, "history", store.history(gone)).is_empty());
    assert!(ok(subject, "inbox", store.inbox(gone)).is_empty());
    assert_eq!(ok(subject, "ready", store.ready()), vec![keep]);
    assert_eq!(ok(subject, "inbox_tasks", store.inbox_tasks()), vec![keep]);
    assert!(ok(subject, "task", store.task(keep)).is_some());
}

/// A store with a bit of everything (also sealed values, for a [`SealedStore`]).
fn fill(subject: &Subject, store: &dyn Store) -> BTreeSet<u64> {
    let mut settings = serde_json::Map::new();
    settings.insert("secret".into(), serde_json::json!("process secret"));
    let mut p = new_process(Some("p"));
    p.settings = settings;
    ok(subject, "create_process", store.create_process(p));
    let mut ids = BTreeSet::new();
    for n in 0..20 {
        ids.insert(add_task(subject, store, n));
    }
    ok(
        subject,
        "create_api_key",
        store.create_api_key("k", "s", vec![1], 1),
    );
    ok(subject, "url hash", store.set_url_hash(1, "hash".into()));
    ok(subject, "flush", store.flush());
    ids
}

fn check_filled(subject: &Subject, store: &dyn Store, ids: &BTreeSet<u64>) {
    let (found, _) = check_whole(subject, store);
    assert_eq!(&found, ids, "[{}] tasks after a reopen", subject.name);
    let process = ok(subject, "process", store.process_by_alias("p"));
    let process = process.unwrap_or_else(|| panic!("[{}] process @p is gone", subject.name));
    assert_eq!(process.url_hash.as_deref(), Some("hash"));
    assert_eq!(
        process.settings.get("secret"),
        Some(&serde_json::json!("process secret"))
    );
    assert_eq!(ok(subject, "api_keys", store.api_keys()).len(), 1);
}

fn everything_survives_a_flush_and_reopen(subject: &Subject) {
    let dir = tempdir();
    let store = open(subject, dir.path());
    let ids = fill(subject, store.as_ref());
    drop(store);
    check_filled(subject, open(subject, dir.path()).as_ref(), &ids);
}

fn checkpoint_changes_nothing(subject: &Subject) {
    let dir = tempdir();
    let store = open(subject, dir.path());
    let ids = fill(subject, store.as_ref());
    ok(subject, "checkpoint", store.checkpoint());
    check_filled(subject, store.as_ref(), &ids);
    ok(subject, "checkpoint", store.checkpoint());
    drop(store);
    check_filled(subject, open(subject, dir.path()).as_ref(), &ids);
}

fn a_reopen_without_a_snapshot_replays_everything(subject: &Subject) {
    let Some(drop_snapshot) = subject.drop_snapshot else {
        return;
    };
    let dir = tempdir();
    let store = open(subject, dir.path());
    let ids = fill(subject, store.as_ref());
    ok(subject, "checkpoint", store.checkpoint());
    // More after the checkpoint, then a crash that left no snapshot at all.
    let mut ids = ids;
    ids.insert(add_task(subject, store.as_ref(), 99));
    ok(subject, "flush", store.flush());
    drop(store);
    drop_snapshot(dir.path());
    let store = open(subject, dir.path());
    check_filled(subject, store.as_ref(), &ids);
    let next = ok(subject, "next_task_id", store.next_task_id());
    assert!(next > *ids.iter().next_back().unwrap_or(&0));
}

fn a_torn_tail_is_cut_and_the_rest_kept(subject: &Subject) {
    let Some(tear_tail) = subject.tear_tail else {
        return;
    };
    let dir = tempdir();
    let store = open(subject, dir.path());
    let ids = fill(subject, store.as_ref());
    drop(store);
    tear_tail(dir.path());
    let store = open(subject, dir.path());
    check_filled(subject, store.as_ref(), &ids);
    // And it goes on: a commit after the cut, then another reopen.
    let mut ids = ids;
    ids.insert(add_task(subject, store.as_ref(), 50));
    ok(subject, "flush", store.flush());
    drop(store);
    check_filled(subject, open(subject, dir.path()).as_ref(), &ids);
}

fn restore_keeps_ids_and_counters(subject: &Subject) {
    let (a, b) = (tempdir(), tempdir());
    let source = open(subject, a.path());
    fill(subject, source.as_ref());
    let deleted = ok(
        subject,
        "key",
        source.create_api_key("gone", "x", vec![], 2),
    );
    ok(subject, "delete", source.delete_api_key(deleted.login));
    let target = open(subject, b.path());
    ok(
        subject,
        "copy",
        crate::copy(source.as_ref(), target.as_ref()),
    );
    let differences = ok(
        subject,
        "compare",
        crate::compare(source.as_ref(), target.as_ref()),
    );
    assert!(differences.is_empty(), "[{}] {differences:?}", subject.name);
    drop(target);
    let target = open(subject, b.path());
    let differences = ok(
        subject,
        "compare",
        crate::compare(source.as_ref(), target.as_ref()),
    );
    assert!(
        differences.is_empty(),
        "[{}] after a reopen: {differences:?}",
        subject.name
    );
    let key = ok(subject, "key", target.create_api_key("new", "y", vec![], 3));
    assert!(
        key.login > deleted.login,
        "[{}] a deleted login was given again",
        subject.name
    );
}

const CHILD_ENV: &str = "CONVEYOR_CONFORMANCE_CHILD";

/// The child of the kill -9 case: when the environment names a subject and a directory
/// (else it returns at once), commits new tasks (as [`new_task_batch`]) in a loop and
/// writes `ack <id>` to stdout after each commit the subject promises survives a kill
/// (after `flush` where commits alone do not), until it is killed.
pub fn child(subjects: &[Subject]) {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let Some((name, dir)) = spec.split_once('\t') else {
        panic!("{CHILD_ENV} is not `subject<TAB>dir`: {spec}");
    };
    let Some(subject) = subjects.iter().find(|s| s.name == name) else {
        panic!("no subject named {name}");
    };
    let store = open(subject, Path::new(dir));
    let mut out = std::io::stdout().lock();
    for n in 0..1_000_000i64 {
        let id = add_task(subject, store.as_ref(), n);
        if !subject.commit_survives_kill {
            ok(subject, "flush", store.flush());
        }
        if writeln!(out, "ack {id}").and_then(|_| out.flush()).is_err() {
            return;
        }
    }
}

/// A number from the clock's nanoseconds, for kill moments.
fn jitter(below: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    nanos
        .wrapping_mul(6_364_136_223_846_793_005)
        .rotate_right(17)
        % below.max(1)
}

/// The id in an `ack <id>` line (the test harness may print on the same line before it).
fn acked_id(line: &str) -> Option<u64> {
    line.rsplit_once("ack ")
        .and_then(|(_, n)| n.trim().parse::<u64>().ok())
}

fn kill_9_in_the_middle_of_commits(subject: &Subject, child_test: &str) {
    let dir = tempdir();
    {
        let store = open(subject, dir.path());
        ok(
            subject,
            "create_process",
            store.create_process(new_process(None)),
        );
        ok(subject, "flush", store.flush());
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("no test binary: {e}"));
    let mut acked = BTreeSet::new();
    for round in 0..3 {
        let mut child = std::process::Command::new(&exe)
            .args([
                child_test,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                CHILD_ENV,
                format!("{}\t{}", subject.name, dir.path().display()),
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the child: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no pipe"));
        let mut lines = std::io::BufReader::new(stdout).lines();
        // Kill it at a random moment: after some acknowledged commits, and some time.
        let wait_for = 20 + jitter(300);
        let mut got = 0;
        let started = Instant::now();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(id) = acked_id(&line) {
                acked.insert(id);
                got += 1;
                if got >= wait_for || started.elapsed() > Duration::from_secs(20) {
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_micros(jitter(3_000)));
        let _ = child.kill(); // SIGKILL
        // What it acknowledged before it died.
        for line in lines.map_while(std::result::Result::ok) {
            if let Some(id) = acked_id(&line) {
                acked.insert(id);
            }
        }
        let _ = child.wait();
        assert!(
            got > 0,
            "[{}] round {round}: the child acknowledged nothing",
            subject.name
        );
        let store = open(subject, dir.path());
        let (present, highest) = check_whole(subject, store.as_ref());
        let lost: Vec<_> = acked.difference(&present).collect();
        assert!(
            lost.is_empty(),
            "[{}] round {round}: acknowledged commits lost: {lost:?}",
            subject.name
        );
        // At most the one commit in flight when it died is there unacknowledged.
        let extra = present.difference(&acked).count();
        assert!(
            extra <= 1,
            "[{}] round {round}: {extra} unacknowledged commits: {:?} (acknowledged up to {:?})",
            subject.name,
            present.difference(&acked).collect::<Vec<_>>(),
            acked.iter().next_back()
        );
        let next = ok(subject, "next_task_id", store.next_task_id());
        assert!(
            next > highest,
            "[{}] round {round}: id {next} was used already",
            subject.name
        );
        // What was there but not acknowledged is acknowledged now.
        acked.extend(present);
        ok(subject, "flush", store.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(name: &str) -> Subject {
        match subjects().into_iter().find(|s| s.name == name) {
            Some(s) => s,
            None => panic!("no subject {name}"),
        }
    }

    const CHILD: &str = "conformance::tests::child";

    #[test]
    fn log_store_keeps_the_contract() {
        run_all(&subject("log"), CHILD);
    }

    #[test]
    fn sled_store_keeps_the_contract() {
        run_all(&subject("sled"), CHILD);
    }

    #[test]
    fn sealed_log_store_keeps_the_contract() {
        run_all(&subject("sealed-log"), CHILD);
    }

    #[test]
    fn sealed_sled_store_keeps_the_contract() {
        run_all(&subject("sealed-sled"), CHILD);
    }

    #[test]
    fn postgres_store_keeps_the_contract() {
        if crate::test_postgres::require("postgres_store_keeps_the_contract").is_some() {
            run_all(&subject("postgres"), CHILD);
        }
    }

    #[test]
    fn sealed_postgres_store_keeps_the_contract() {
        if crate::test_postgres::require("sealed_postgres_store_keeps_the_contract").is_some() {
            run_all(&subject("sealed-postgres"), CHILD);
        }
    }

    /// The child process of the kill -9 case (does nothing unless started by it).
    #[test]
    #[ignore]
    fn child() {
        super::child(&subjects());
    }
}
