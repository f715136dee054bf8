use super::*;
use crate::test_support::{check_timer_order, new_process, retry_locked, task};

/// Opens the log store in `dir`, waiting out a lock a moment ago's holder still has
/// (see [`retry_locked`]).
fn open(dir: &Path) -> Result<LogStore> {
    retry_locked(|| LogStore::open(dir))
}

/// [`open`] with limits.
fn open_with_limits(dir: &Path, limits: Limits) -> Result<LogStore> {
    retry_locked(|| LogStore::open_with_limits(dir, limits))
}

fn entered(node: &str, from: &str) -> HistoryEvent {
    HistoryEvent {
        at: 7,
        node: node.into(),
        kind: EventKind::Entered {
            from: from.into(),
            via: "next".into(),
        },
    }
}

fn count(node: &str, now: i64, total: u64) -> Op {
    Op::Count {
        process: 1,
        node: node.into(),
        now,
        total,
    }
}

/// A store with one process, three tasks (one with a ref, one deleted), timers, ready
/// entries, counters, history in several records and an inbox message.
fn fill(store: &LogStore) {
    assert_eq!(store.create_process(new_process(Some("p"))).unwrap().id, 1);
    store.create_api_key("k", "secret", vec![1], 5).unwrap();
    for _ in 1..=3 {
        let id = store.next_task_id().unwrap();
        let mut batch = Batch::default();
        let mut record = task(id, 1, "start");
        if id == 1 {
            record.reference = Some("token".into());
            batch.push(Op::InsertRef {
                process: 1,
                reference: "token".into(),
                task: id,
            });
        }
        batch.push(Op::PutTask(Box::new(record)));
        batch.push(Op::IndexTask {
            process: 1,
            task: id,
        });
        batch.push(Op::SetReady(id));
        batch.push(count("start", 1, 1));
        batch.push(Op::History {
            task: id,
            seq: 0,
            events: vec![HistoryEvent {
                at: 1,
                node: "start".into(),
                kind: EventKind::Created,
            }],
        });
        store.commit(&batch).unwrap();
    }
    // Task 1 moves twice (two history records), then waits with a timer.
    for (seq, (from, to)) in [("start", "a"), ("a", "b")].into_iter().enumerate() {
        let mut batch = Batch::default();
        let mut record = task(1, 1, to);
        record.reference = Some("token".into());
        record.data.insert("step".into(), serde_json::json!(seq));
        batch.push(Op::PutTask(Box::new(record)));
        batch.push(count(from, -1, 0));
        batch.push(count(to, 1, 1));
        batch.push(Op::History {
            task: 1,
            seq: seq as u64 + 1,
            events: vec![entered(to, from)],
        });
        store.commit(&batch).unwrap();
    }
    let mut batch = Batch::default();
    batch.push(Op::ClearReady(1));
    batch.push(Op::SetTimer(TimerKey { due: 500, task: 1 }));
    batch.push(Op::Inbox {
        task: 2,
        seq: 0,
        message: InboxMessage::Modify {
            data: serde_json::json!({"x": 1}).as_object().cloned().unwrap(),
            source: "test".into(),
        },
    });
    batch.push(Op::DeleteTask {
        task: 3,
        process: 1,
        reference: None,
    });
    batch.push(count("start", -1, 0));
    store.commit(&batch).unwrap();
}

/// What [`fill`] left, read back.
fn check(store: &LogStore) {
    assert_eq!(store.process_by_alias("p").unwrap().unwrap().id, 1);
    assert_eq!(store.api_keys().unwrap().len(), 1);
    assert_eq!(store.api_key(100_001).unwrap().unwrap().secret, "secret");
    let one = store.task_by_ref(1, "token").unwrap().unwrap();
    assert_eq!((one.id, one.node.as_str()), (1, "b"));
    assert_eq!(one.data.get("step"), Some(&serde_json::json!(1)));
    assert!(store.task(3).unwrap().is_none());
    assert_eq!(
        store
            .tasks(1, None, 10)
            .unwrap()
            .iter()
            .map(|t| t.id)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(store.tasks(1, Some("b"), 10).unwrap().len(), 1);
    let history = store.history(1).unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[0].kind, EventKind::Created);
    assert_eq!(history[2], entered("b", "a"));
    assert!(store.history(3).unwrap().is_empty());
    assert_eq!(store.ready().unwrap(), vec![2]);
    assert_eq!(
        store.due_timers(1_000, None, 10).unwrap(),
        vec![TimerKey { due: 500, task: 1 }]
    );
    assert_eq!(store.inbox_tasks().unwrap(), vec![2]);
    assert_eq!(store.inbox(2).unwrap().len(), 1);
    assert_eq!(
        store.counters(1).unwrap(),
        vec![
            ("a".to_string(), NodeCounter { now: 0, total: 1 }),
            ("b".to_string(), NodeCounter { now: 1, total: 1 }),
            ("start".to_string(), NodeCounter { now: 1, total: 3 }),
        ]
    );
    // Ids are never given twice, also across a reopen.
    assert!(store.next_task_id().unwrap() >= 4);
    let newest = store.processes().unwrap().iter().map(|p| p.id).max();
    assert_eq!(
        Some(store.create_process(new_process(None)).unwrap().id),
        newest.map(|id| id + 1)
    );
}

#[test]
fn everything_comes_back_after_a_reopen_from_the_log_alone() {
    let dir = tempfile::tempdir().unwrap();
    fill(&open(dir.path()).unwrap());
    // Little was written: closing wrote no snapshot, the open replays the log.
    assert!(!LogStore::dir_in(dir.path()).join("snapshot").exists());
    check(&open(dir.path()).unwrap());
}

#[test]
fn everything_comes_back_after_a_reopen_from_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    fill(&store);
    store.snapshot_now().unwrap();
    // Written after the snapshot: replayed on top of it.
    let mut batch = Batch::default();
    batch.push(Op::SetReady(1));
    store.commit(&batch).unwrap();
    drop(store);
    let store = open(dir.path()).unwrap();
    assert_eq!(store.ready().unwrap(), vec![1, 2]);
    let mut batch = Batch::default();
    batch.push(Op::ClearReady(1));
    store.commit(&batch).unwrap();
    check(&store);
}

#[test]
fn a_batch_is_all_or_nothing_and_a_ref_is_claimed_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    fill(&store);
    let mut second = Batch::default();
    second.push(Op::PutTask(Box::new(task(9, 1, "start"))));
    second.push(Op::SetReady(9));
    second.push(count("start", 1, 1));
    second.push(Op::InsertRef {
        process: 1,
        reference: "token".into(),
        task: 9,
    });
    let err = store.commit(&second).unwrap_err();
    assert_eq!(err.to_string(), "ref 'token' already exists in process 1");
    // Two steps claiming one new ref in one group fail the group.
    let claim = |id: u64| {
        let mut batch = Batch::default();
        batch.push(Op::PutTask(Box::new(task(id, 1, "start"))));
        batch.push(Op::InsertRef {
            process: 1,
            reference: "twice".into(),
            task: id,
        });
        batch
    };
    assert!(matches!(
        store.commit_group(&[claim(10), claim(11)]),
        Err(StoreError::DuplicateRef { .. })
    ));
    assert!(store.task(10).unwrap().is_none());
    store.commit_group(&[claim(10)]).unwrap();
    assert_eq!(store.task_by_ref(1, "twice").unwrap().unwrap().id, 10);
    let mut delete = Batch::default();
    delete.push(Op::DeleteTask {
        task: 10,
        process: 1,
        reference: Some("twice".into()),
    });
    store.commit(&delete).unwrap();
    assert!(store.task_by_ref(1, "twice").unwrap().is_none());
    drop(store);
    check(&open(dir.path()).unwrap());
}

#[test]
fn a_frame_torn_by_a_crash_is_cut_off_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    fill(&open(dir.path()).unwrap());
    let segment = LogStore::dir_in(dir.path()).join(segment_name(1));
    let whole = std::fs::metadata(&segment).unwrap().len();
    // A crash in the middle of a frame: its header promises more than is there…
    let mut torn = Enc::new();
    torn.u32(1_000);
    torn.u32(0);
    torn.buf.extend_from_slice(&[SET_READY, 1, 2]);
    let file = OpenOptions::new().append(true).open(&segment).unwrap();
    std::io::Write::write_all(&mut &file, &torn.buf).unwrap();
    // …then zeros, as a file system may leave after a crash.
    std::io::Write::write_all(&mut &file, &[0u8; 64]).unwrap();
    drop(file);
    let store = open(dir.path()).unwrap();
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), whole);
    check(&store);
    // And a frame whose bytes changed is refused by its checksum.
    drop(store);
    let whole = std::fs::metadata(&segment).unwrap().len();
    let mut bytes = std::fs::read(&segment).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();
    let store = open(dir.path()).unwrap();
    assert!(std::fs::metadata(&segment).unwrap().len() < whole);
    assert!(store.task(1).unwrap().is_some());
}

#[test]
fn compaction_keeps_what_is_live_merges_history_and_deletes_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    fill(&store);
    // Much dead data: task 2 rewritten many times.
    let mut big = task(2, 1, "start");
    big.data
        .insert("blob".into(), serde_json::json!("x".repeat(10_000)));
    for _ in 0..50 {
        let mut batch = Batch::default();
        batch.push(Op::PutTask(Box::new(big.clone())));
        store.commit(&batch).unwrap();
    }
    let before = store.size_on_disk().unwrap();
    store.compact_now().unwrap();
    let after = store.size_on_disk().unwrap();
    assert!(after < before / 5, "{before} bytes before, {after} after");
    let log = LogStore::dir_in(dir.path());
    assert!(
        !log.join(segment_name(1)).exists(),
        "the old segment is gone"
    );
    // Task 1's three history records became one.
    let chain = store.state().history[&1];
    assert_eq!(chain.bytes, chain.head.len as u64);
    check_after_compaction(&store);
    drop(store);
    let store = open(dir.path()).unwrap();
    check_after_compaction(&store);
    // History written after the merge goes on the merged record.
    let mut batch = Batch::default();
    batch.push(Op::History {
        task: 1,
        seq: 3,
        events: vec![entered("c", "b")],
    });
    store.commit(&batch).unwrap();
    let history = store.history(1).unwrap();
    assert_eq!(history.len(), 4);
    assert_eq!(history[3], entered("c", "b"));
}

fn check_after_compaction(store: &LogStore) {
    let two = store.task(2).unwrap().unwrap();
    let blob = two.data.get("blob").and_then(|b| b.as_str()).map(str::len);
    assert_eq!(blob, Some(10_000));
    check(store);
}

#[test]
fn a_second_opener_is_told_the_store_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    assert!(matches!(
        LogStore::open(dir.path()),
        Err(StoreError::Locked { .. })
    ));
    drop(store);
    assert!(open(dir.path()).is_ok());
}

#[test]
fn a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()).unwrap());
    std::fs::write(
        LogStore::dir_in(dir.path()).join("FORMAT"),
        (LOG_FORMAT_VERSION + 1).to_le_bytes(),
    )
    .unwrap();
    let err = open(dir.path()).err().unwrap();
    assert!(
        matches!(err, StoreError::NewerFormat { found, .. } if found == LOG_FORMAT_VERSION + 1)
    );
}

#[test]
fn timers_come_out_in_due_order() {
    let dir = tempfile::tempdir().unwrap();
    check_timer_order(&open(dir.path()).unwrap());
}

#[test]
fn open_picks_the_implementation_a_data_directory_already_has() {
    let dir = tempfile::tempdir().unwrap();
    let sled = StoreOptions {
        kind: StoreKind::Sled,
        ..StoreOptions::default()
    };
    drop(crate::open(dir.path(), sled).unwrap());
    assert_eq!(
        kind_of(dir.path(), StoreOptions::default()),
        StoreKind::Sled
    );
    // A new directory gets the kind asked for (sled by default), and keeps it.
    assert_eq!(StoreOptions::default().kind, StoreKind::Sled);
    let log = StoreOptions {
        kind: StoreKind::Log,
        ..StoreOptions::default()
    };
    let fresh = tempfile::tempdir().unwrap();
    drop(crate::open(fresh.path(), log).unwrap());
    assert_eq!(kind_of(fresh.path(), sled), StoreKind::Log);
}

/// Limits small enough that a few hundred commits roll, snapshot and compact.
const SMALL: Limits = Limits {
    segment_bytes: 16 << 10,
    snapshot_after: 64 << 10,
    snapshot_on_close_after: 4 << 10,
    compact_min: 32 << 10,
};

/// Task `id`'s move in `round` of a loop: its record (with 200 bytes of padding) and a
/// history record.
fn looping(id: u64, round: u64) -> Batch {
    let mut batch = Batch::default();
    let mut record = task(id, 9, "loop");
    record.data.insert("round".into(), serde_json::json!(round));
    record
        .data
        .insert("pad".into(), serde_json::json!("p".repeat(200)));
    batch.push(Op::PutTask(Box::new(record)));
    batch.push(Op::History {
        task: id,
        seq: round,
        events: vec![entered("loop", "loop")],
    });
    batch
}

#[test]
fn ordinary_commits_roll_segments_write_snapshots_and_compact_by_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let small = SMALL;
    let log = LogStore::dir_in(dir.path());
    let store = open_with_limits(dir.path(), small).unwrap();
    fill(&store);
    // Ten tasks rewritten over and over, each move with a history record: the log grows
    // by ~1 MB while the live data stays a few KB.
    let mut compacted = false;
    for round in 0..300u64 {
        let batches: Vec<Batch> = (100..110u64).map(|id| looping(id, round)).collect();
        store.commit_group(&batches).unwrap();
        compacted |= !log.join(segment_name(1)).exists();
    }
    // The compactor looks every 500 ms; segments are deleted by the snapshot writer once
    // a snapshot without them is on disk.
    wait_for_compaction(&store);
    compacted |= !log.join(segment_name(1)).exists();
    assert!(compacted, "no compaction deleted the first segment");
    assert!(log.join("snapshot").exists(), "no snapshot was written");
    // About 2 MB were written; what stays is bounded by the live data (the tasks and
    // their 300-event histories), as compaction promises.
    let (on_disk, live) = (store.size_on_disk().unwrap(), store.state().live);
    assert!(
        on_disk <= COMPACT_RATIO * live + 2 * small.segment_bytes + (64 << 10),
        "{on_disk} bytes on disk for {live} live"
    );
    assert!(on_disk < 1 << 20, "{on_disk} bytes on disk");
    let check_loop = |store: &LogStore| {
        for id in 100..110u64 {
            let record = store.task(id).unwrap().unwrap();
            assert_eq!(record.data.get("round"), Some(&serde_json::json!(299)));
            let history = store.history(id).unwrap();
            assert_eq!(history.len(), 300, "task {id}'s history");
        }
        check(store);
    };
    check_loop(&store);
    drop(store);
    // Reopened from the last snapshot and the log after it.
    check_loop(&open_with_limits(dir.path(), small).unwrap());
}

/// Waits until no compaction is due or running (`Store::maintenance_running`), then
/// for the snapshots taken so far (after which the segments compacted are deleted).
fn wait_for_compaction(store: &LogStore) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while store.maintenance_running() {
        assert!(
            std::time::Instant::now() < deadline,
            "compaction never caught up"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    store.snapshot_now().unwrap();
}

/// `commit_quick` writes in place until a segment must roll or a snapshot is due, and
/// then answers `None` with nothing written; the commit the engine then makes
/// (`commit_group`, on its committer) does that work. A compaction due does not stop
/// it (the compactor's thread does that work). It never waits for a commit another
/// thread holds the writer for.
#[test]
fn quick_commits_leave_rolls_and_snapshots_to_the_committer() {
    let dir = tempfile::tempdir().unwrap();
    let small = SMALL;
    let log = LogStore::dir_in(dir.path());
    let store = open_with_limits(dir.path(), small).unwrap();
    fill(&store);
    // The compactor waits meanwhile: its frames would roll the log and take snapshots
    // between this test's looks at the writer.
    let compactor_waits = store.compacting.lock().unwrap();
    let (mut quick, mut handed_on) = (0, 0);
    let mut due_and_quick = false;
    for round in 0..300u64 {
        for id in 100..110u64 {
            let batch = looping(id, round);
            let (segment, since_snapshot) = {
                let w = store.writer();
                (w.segment, w.since_snapshot)
            };
            let due = store.compaction_due(&store.writer());
            match store.commit_quick(&batch, Linger::May) {
                Some(result) => {
                    result.unwrap();
                    quick += 1;
                    due_and_quick |= due;
                    let w = store.writer();
                    assert_eq!(w.segment, segment, "a quick commit rolled the log");
                    assert!(
                        w.since_snapshot > since_snapshot,
                        "a quick commit took a snapshot"
                    );
                }
                None => {
                    let w = store.writer();
                    assert_eq!(
                        (w.segment, w.since_snapshot),
                        (segment, since_snapshot),
                        "`None` wrote something"
                    );
                    drop(w);
                    handed_on += 1;
                    store.commit_group(std::slice::from_ref(&batch)).unwrap();
                }
            }
        }
    }
    assert!(quick > 2_500, "{quick} of 3000 commits were quick");
    assert!(handed_on > 0, "no commit was left to the committer");
    assert!(due_and_quick, "no quick commit while a compaction was due");
    drop(compactor_waits);
    wait_for_compaction(&store);
    assert!(
        !log.join(segment_name(1)).exists(),
        "no compaction deleted the first segment"
    );
    // With the writer held by another commit, a quick commit does not wait.
    let held = store.writer();
    let batch = {
        let mut batch = Batch::default();
        batch.push(Op::PutTask(Box::new(task(100, 9, "elsewhere"))));
        batch
    };
    let answer = std::thread::scope(|s| s.spawn(|| store.commit_quick(&batch, Linger::May)).join());
    assert!(matches!(answer, Ok(None)), "{answer:?}");
    drop(held);
    let check_loop = |store: &LogStore| {
        for id in 100..110u64 {
            let record = store.task(id).unwrap().unwrap();
            assert_eq!(record.node, "loop");
            assert_eq!(record.data.get("round"), Some(&serde_json::json!(299)));
            assert_eq!(store.history(id).unwrap().len(), 300, "task {id}'s history");
        }
        check(store);
    };
    check_loop(&store);
    drop(store);
    check_loop(&open_with_limits(dir.path(), small).unwrap());
}

/// How long commits wait while compaction runs, with a store much larger than a segment
/// (run by hand: `cargo test --release -p conveyor-store -- --ignored --nocapture`).
#[test]
#[ignore]
fn compaction_stalls_are_bounded_by_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let tasks = 300_000u64;
    let mut worst = std::time::Duration::ZERO;
    let mut slow = 0;
    let started = std::time::Instant::now();
    for round in 0..4u64 {
        for chunk in (1..=tasks).collect::<Vec<_>>().chunks(100) {
            let batches: Vec<Batch> = chunk
                .iter()
                .map(|&id| {
                    let mut record = task(id, 1, "loop");
                    record.data.insert("round".into(), serde_json::json!(round));
                    record
                        .data
                        .insert("pad".into(), serde_json::json!("p".repeat(300)));
                    let mut batch = Batch::default();
                    batch.push(Op::PutTask(Box::new(record)));
                    batch
                })
                .collect();
            let t0 = std::time::Instant::now();
            store.commit_group(&batches).unwrap();
            let took = t0.elapsed();
            worst = worst.max(took);
            if took > std::time::Duration::from_millis(100) {
                slow += 1;
            }
        }
    }
    store.snapshot_now().unwrap();
    eprintln!(
        "{} commits of 100 tasks in {:?}; the slowest {:?}; {} over 100 ms; {} MB on disk, {} MB live",
        4 * tasks / 100,
        started.elapsed(),
        worst,
        slow,
        store.size_on_disk().unwrap() >> 20,
        store.state().live >> 20
    );
    assert_eq!(
        store.task(tasks).unwrap().unwrap().data.get("round"),
        Some(&serde_json::json!(3))
    );
}

#[test]
fn a_task_deleted_and_written_again_in_one_group_starts_a_new_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    fill(&store);
    let mut delete = Batch::default();
    delete.push(Op::DeleteTask {
        task: 2,
        process: 1,
        reference: None,
    });
    let mut again = Batch::default();
    again.push(Op::PutTask(Box::new(task(2, 1, "start"))));
    again.push(Op::History {
        task: 2,
        seq: 0,
        events: vec![entered("start", "nowhere")],
    });
    store.commit_group(&[delete, again]).unwrap();
    assert_eq!(store.history(2).unwrap(), vec![entered("start", "nowhere")]);
    // The old chain's segment can go: the new history does not point into it.
    store.compact_now().unwrap();
    assert_eq!(store.history(2).unwrap(), vec![entered("start", "nowhere")]);
    drop(store);
    let store = open(dir.path()).unwrap();
    assert_eq!(store.history(2).unwrap(), vec![entered("start", "nowhere")]);
}

#[test]
fn a_missing_segment_or_a_snapshot_past_the_log_is_refused_at_open() {
    let small = Limits {
        segment_bytes: 256,
        ..LIMITS
    };
    let dir = tempfile::tempdir().unwrap();
    fill(&open_with_limits(dir.path(), small).unwrap());
    let log = LogStore::dir_in(dir.path());
    let segments = list_segments(&log).unwrap();
    assert!(segments.len() >= 3, "{segments:?}");
    let middle = log.join(segment_name(segments[1]));
    let kept = std::fs::read(&middle).unwrap();
    std::fs::remove_file(&middle).unwrap();
    let err = open_with_limits(dir.path(), small).err().unwrap();
    assert!(err.to_string().contains("is missing"), "{err}");
    std::fs::write(&middle, kept).unwrap();
    // A snapshot, then its segment cut short behind its back.
    let store = open_with_limits(dir.path(), small).unwrap();
    store.snapshot_now().unwrap();
    let last = log.join(segment_name(store.writer().segment));
    drop(store);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(0)
        .unwrap();
    let err = open_with_limits(dir.path(), small).err().unwrap();
    assert!(
        err.to_string().contains("the snapshot points to byte"),
        "{err}"
    );
}

#[test]
fn api_keys_are_rotated_and_deleted_across_a_reopen_from_the_log_and_from_a_snapshot() {
    use crate::test_support::{check_api_keys_after_reopen, rotate_and_delete_api_keys};
    let dir = tempfile::tempdir().unwrap();
    let logins = rotate_and_delete_api_keys(&open(dir.path()).unwrap());
    check_api_keys_after_reopen(&open(dir.path()).unwrap(), logins);

    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let logins = rotate_and_delete_api_keys(&store);
    store.snapshot_now().unwrap();
    drop(store);
    check_api_keys_after_reopen(&open(dir.path()).unwrap(), logins);
}

fn modify(x: i64) -> InboxMessage {
    InboxMessage::Modify {
        data: serde_json::json!({ "x": x }).as_object().cloned().unwrap(),
        source: "test".into(),
    }
}

#[test]
fn inbox_seqs_handed_out_since_the_last_snapshot_are_not_handed_out_again_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let id = store.next_task_id().unwrap();
    let mut batch = Batch::default();
    batch.push(Op::PutTask(Box::new(task(id, 1, "wait"))));
    store.commit(&batch).unwrap();
    // Messages for the task: their seqs come from the same counter as task ids.
    let mut seqs = Vec::new();
    for x in 0..3 {
        let seq = store.next_task_id().unwrap();
        let mut batch = Batch::default();
        batch.push(Op::Inbox {
            task: id,
            seq,
            message: modify(x),
        });
        store.commit(&batch).unwrap();
        seqs.push(seq);
    }
    // Closed without a snapshot (a crash leaves none either): the log is replayed from
    // its start.
    drop(store);
    let _ = std::fs::remove_file(LogStore::dir_in(dir.path()).join("snapshot"));
    let store = open(dir.path()).unwrap();
    let next = store.next_task_id().unwrap();
    assert!(
        next > *seqs.iter().max().unwrap(),
        "seq {next} handed out again (messages hold {seqs:?})"
    );
    assert_eq!(store.inbox(id).unwrap().len(), 3);
}

#[test]
fn a_frame_lands_where_the_history_links_in_it_say_and_is_refused_anywhere_else() {
    let dir = tempfile::tempdir().unwrap();
    let small = Limits {
        segment_bytes: 2 << 10,
        snapshot_after: 1 << 30,
        snapshot_on_close_after: 1 << 30,
        compact_min: 1 << 30,
    };
    let store = open_with_limits(dir.path(), small).unwrap();
    // Every commit links a history record to the one before; many of them roll.
    for round in 0..200u64 {
        let mut batches = Vec::new();
        for id in 1..=3u64 {
            let mut batch = Batch::default();
            let mut record = task(id, 1, "loop");
            record.data.insert(
                "pad".into(),
                serde_json::json!("p".repeat(50 * id as usize)),
            );
            batch.push(Op::PutTask(Box::new(record)));
            batch.push(Op::History {
                task: id,
                seq: round,
                events: vec![entered("loop", &format!("r{round}"))],
            });
            batches.push(batch);
        }
        store.commit_group(&batches).unwrap();
    }
    assert!(store.writer().segment > 10, "the log did not roll");
    let check_history = |store: &LogStore| {
        for id in 1..=3u64 {
            let history = store.history(id).unwrap();
            assert_eq!(history.len(), 200);
            assert_eq!(history[199], entered("loop", "r199"));
            assert_eq!(history[0], entered("loop", "r0"));
        }
    };
    check_history(&store);
    // A frame predicted for one place and about to be written at another is refused,
    // with nothing written.
    {
        let mut w = store.writer();
        let (segment, len) = (w.segment, w.len);
        let wrong = (w.segment, w.len + 1);
        let mut enc = frame();
        enc.u8(SET_READY);
        enc.u64(1);
        let err = store.append_at(&mut w, enc, Some(wrong)).unwrap_err();
        assert!(err.to_string().contains("nothing was written"), "{err}");
        assert_eq!((w.segment, w.len), (segment, len));
    }
    assert!(store.ready().unwrap().is_empty());
    drop(store);
    check_history(&open_with_limits(dir.path(), small).unwrap());
}

/// A store whose only segment holds `fill`'s frames; returns the segment's path and the
/// offsets of its frames.
fn filled_segment(dir: &Path) -> (PathBuf, Vec<u64>) {
    fill(&open(dir).unwrap());
    let _ = std::fs::remove_file(LogStore::dir_in(dir).join("snapshot"));
    let segment = LogStore::dir_in(dir).join(segment_name(1));
    let bytes = std::fs::read(&segment).unwrap();
    let mut offsets = Vec::new();
    let (_, damage) = scan(&bytes, 0, |offset, _| {
        offsets.push(offset - 8);
        Ok(())
    })
    .unwrap();
    assert!(damage.is_none());
    (segment, offsets)
}

#[test]
fn a_bad_frame_followed_by_whole_ones_is_corruption_refused_at_open_and_repaired_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, offsets) = filled_segment(dir.path());
    let len = std::fs::metadata(&segment).unwrap().len();
    // Damage a frame in the middle: frames after it were acknowledged.
    let victim = offsets[offsets.len() - 3];
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[victim as usize + 12] ^= 0x55;
    std::fs::write(&segment, &bytes).unwrap();
    let err = open(dir.path()).err().expect("a corrupt log opened");
    let text = err.to_string();
    assert!(text.contains(&segment.display().to_string()), "{text}");
    assert!(text.contains(&format!("byte {victim}")), "{text}");
    assert!(text.contains("2 whole frame(s)"), "{text}");
    // Nothing was dropped.
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), len);

    let report = LogStore::inspect(dir.path()).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].offset, Some(victim));
    assert!(report.problems[0].what.contains("corruption"));
    assert_eq!(
        report.cuts,
        vec![LogCut {
            file: segment.clone(),
            from: victim,
            bytes: len - victim,
            frames: 2,
            remove: false,
        }]
    );
    // Inspecting changed nothing; repairing drops exactly that.
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), len);
    LogStore::repair(dir.path()).unwrap();
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), victim);
    let store = open(dir.path()).unwrap();
    assert_eq!(store.process(1).unwrap().unwrap().id, 1);
    drop(store);
    let report = LogStore::inspect(dir.path()).unwrap();
    assert!(report.problems.is_empty() && report.cuts.is_empty());
}

#[test]
fn a_bad_frame_with_nothing_whole_after_it_is_a_torn_tail_cut_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, offsets) = filled_segment(dir.path());
    let last = *offsets.last().unwrap();
    // The last frame half written.
    let bytes = std::fs::read(&segment).unwrap();
    std::fs::write(&segment, &bytes[..last as usize + 20]).unwrap();
    let report = LogStore::inspect(dir.path()).unwrap();
    assert_eq!(report.problems.len(), 1);
    assert!(report.problems[0].what.contains("torn by a crash"));
    assert_eq!(report.cuts[0].frames, 0);
    assert_eq!(report.cuts[0].bytes, 20);
    let store = open(dir.path()).unwrap();
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), last);
    assert_eq!(store.task_by_ref(1, "token").unwrap().unwrap().node, "b");
}

#[test]
fn damage_in_a_segment_before_the_last_is_refused_and_repair_drops_the_later_ones() {
    let dir = tempfile::tempdir().unwrap();
    let small = Limits {
        segment_bytes: 512,
        snapshot_after: 1 << 30,
        snapshot_on_close_after: 1 << 30,
        compact_min: 1 << 30,
    };
    let store = open_with_limits(dir.path(), small).unwrap();
    for id in 1..=20u64 {
        let mut batch = Batch::default();
        let mut record = task(id, 1, "n");
        record
            .data
            .insert("pad".into(), serde_json::json!("x".repeat(100)));
        batch.push(Op::PutTask(Box::new(record)));
        store.commit(&batch).unwrap();
    }
    let segments = store.writer().segment;
    assert!(segments >= 3);
    drop(store);
    let _ = std::fs::remove_file(LogStore::dir_in(dir.path()).join("snapshot"));
    // The end of segment 2 damaged (its last bytes flipped: zeroing them could leave a
    // binary record as it was): nothing whole after it in that segment, but the
    // segments after it hold acknowledged commits.
    let second = LogStore::dir_in(dir.path()).join(segment_name(2));
    let mut bytes = std::fs::read(&second).unwrap();
    let n = bytes.len();
    for b in &mut bytes[n - 10..] {
        *b ^= 0xFF;
    }
    std::fs::write(&second, &bytes).unwrap();
    let text = open_with_limits(dir.path(), small)
        .err()
        .expect("opened")
        .to_string();
    assert!(text.contains(&second.display().to_string()), "{text}");
    assert!(text.contains("later segment(s)"), "{text}");
    let report = LogStore::inspect(dir.path()).unwrap();
    assert_eq!(report.cuts.len(), 1 + (segments as usize - 2));
    assert!(report.cuts[1..].iter().all(|c| c.remove));
    LogStore::repair(dir.path()).unwrap();
    let store = open_with_limits(dir.path(), small).unwrap();
    assert!(store.task(1).unwrap().is_some());
}

/// The records kept for the next read (`recent.rs`) are the last ones committed: a read
/// after each commit sees that commit's record, whether it was kept (a ready task),
/// replaced in one group, left on disk (a finished task) or deleted; and a commit that
/// fails leaves the one before it.
#[test]
fn a_read_after_a_commit_sees_that_commit_whether_its_record_was_kept_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    assert_eq!(store.create_process(new_process(Some("p"))).unwrap().id, 1);
    let put = |node: &str, status: TaskStatus| {
        let mut record = task(5, 1, node);
        record.status = status;
        let mut batch = Batch::default();
        batch.push(Op::PutTask(Box::new(record)));
        batch
    };
    let node = |store: &LogStore| store.task(5).unwrap().map(|t| (t.node, t.status));
    store.commit(&put("a", TaskStatus::Ready)).unwrap();
    assert_eq!(store.recent().records_kept(), 1);
    assert_eq!(node(&store), Some(("a".into(), TaskStatus::Ready)));
    assert_eq!(store.recent().records_kept(), 0, "a read takes it");
    // A second read goes to the log.
    assert_eq!(node(&store), Some(("a".into(), TaskStatus::Ready)));
    // Two writes in one group: the later one is kept.
    store
        .commit_group(&[put("b", TaskStatus::Ready), put("c", TaskStatus::Ready)])
        .unwrap();
    assert_eq!(node(&store), Some(("c".into(), TaskStatus::Ready)));
    // A finished task is not kept, and what was kept of it before is dropped.
    store.commit(&put("d", TaskStatus::Ready)).unwrap();
    store.commit(&put("end", TaskStatus::Done)).unwrap();
    assert_eq!(store.recent().records_kept(), 0);
    assert_eq!(node(&store), Some(("end".into(), TaskStatus::Done)));
    // A commit that fails keeps nothing of itself.
    store.commit(&put("e", TaskStatus::Ready)).unwrap();
    let mut taken = Batch::default();
    taken.push(Op::InsertRef {
        process: 1,
        reference: "r".into(),
        task: 6,
    });
    store.commit(&taken).unwrap();
    let mut failing = put("f", TaskStatus::Ready);
    failing.push(Op::InsertRef {
        process: 1,
        reference: "r".into(),
        task: 5,
    });
    assert!(store.commit(&failing).is_err());
    assert_eq!(node(&store), Some(("e".into(), TaskStatus::Ready)));
    // A deleted task is gone, kept or not.
    store.commit(&put("g", TaskStatus::Ready)).unwrap();
    let mut delete = Batch::default();
    delete.push(Op::DeleteTask {
        task: 5,
        process: 1,
        reference: None,
    });
    store.commit(&delete).unwrap();
    assert_eq!(node(&store), None);
    assert_eq!(store.recent().records_kept(), 0);
}

/// A log written before format 3 holds JSON task records and history records: they read
/// as before, a history goes on in bytes after them and reads whole, and the store is
/// marked 3 once a commit writes to it (a store nothing was committed to stays 1).
#[test]
fn json_records_of_an_older_log_read_alongside_binary_ones() {
    let dir = tempfile::tempdir().unwrap();
    let format = || std::fs::read(LogStore::dir_in(dir.path()).join("FORMAT")).unwrap();
    let store = open(dir.path()).unwrap();
    assert_eq!(format(), 1u32.to_le_bytes());
    // What format 2 wrote for a task and its first history record.
    let mut old = task(7, 1, "start");
    old.data
        .insert("note".into(), serde_json::json!("é \"quoted\""));
    {
        let mut w = store.writer();
        let mut enc = frame();
        enc.u8(PUT_TASK);
        enc.u64(old.id);
        enc.u64(old.process);
        enc.bytes(&encode_json(&old).unwrap());
        let json = encode_json(&vec![entered("start", "")]).unwrap();
        enc.u8(HISTORY);
        enc.u64(old.id);
        enc.u32((LOC_BYTES + json.len()) as u32);
        Loc::default().encode(&mut enc);
        enc.buf.extend_from_slice(&json);
        store.append(&mut w, enc).unwrap();
    }
    assert_eq!(
        format(),
        1u32.to_le_bytes(),
        "a hand-written frame marks nothing"
    );
    assert_eq!(store.task(7).unwrap(), Some(old.clone()));
    assert_eq!(store.history(7).unwrap(), vec![entered("start", "")]);
    // The engine's next step: in bytes.
    let mut moved = old.clone();
    moved.node = "next".into();
    moved.prev_node = Some("start".into());
    let mut batch = Batch::default();
    batch.push(Op::PutTask(Box::new(moved.clone())));
    batch.push(Op::History {
        task: 7,
        seq: 1,
        events: vec![entered("next", "start")],
    });
    store.commit(&batch).unwrap();
    assert_eq!(format(), 3u32.to_le_bytes());
    let first_byte = {
        let state = store.state();
        let loc = state.tasks.get(&7).unwrap().loc;
        read_at(&state, loc).unwrap()[0]
    };
    assert_eq!(first_byte, binary::TASK);
    let whole = vec![entered("start", ""), entered("next", "start")];
    let check = |store: &LogStore| {
        assert_eq!(store.task_on_disk(7).unwrap(), Some(moved.clone()));
        assert_eq!(store.history(7).unwrap(), whole);
    };
    check(&store);
    drop(store);
    let store = open(dir.path()).unwrap();
    check(&store);
    // Compaction merges the chain, JSON and binary records, into one in bytes.
    store.compact_now().unwrap();
    check(&store);
    let head = store.state().history.get(&7).unwrap().head;
    let merged = read_at(&store.state(), head).unwrap();
    assert_eq!(merged[LOC_BYTES], binary::EVENTS);
    drop(store);
    let store = open(dir.path()).unwrap();
    check(&store);
    // Replaced in bytes, as compaction merges it.
    let mut batch = Batch::default();
    batch.push(Op::ReplaceHistory {
        task: 7,
        events: whole.clone(),
    });
    store.commit(&batch).unwrap();
    check(&store);
}

/// The compactor reads without the writer's lock, so commits change what it read before
/// it copies: a task moved on, a chain grown, a task deleted, a history replaced, a
/// message read. It copies only what is still current, reads a grown chain again, and
/// then deletes the segment; nothing of the newer state is lost, before or after a reopen.
#[test]
fn a_compaction_copies_only_what_no_commit_replaced_while_it_read() {
    let dir = tempfile::tempdir().unwrap();
    // Never due by itself: this test runs the phases one by one.
    let limits = Limits {
        compact_min: u64::MAX / 4,
        ..LIMITS
    };
    let store = open_with_limits(dir.path(), limits).unwrap();
    fill(&store);
    let message = |n: u64| InboxMessage::Modify {
        data: serde_json::json!({ "n": n }).as_object().cloned().unwrap(),
        source: "test".into(),
    };
    for id in 10..15u64 {
        let mut batch = looping(id, 0);
        batch.push(Op::Inbox {
            task: id,
            seq: 100 + id,
            message: message(id),
        });
        store.commit_group(&[batch]).unwrap();
    }
    store.roll(&mut store.writer()).unwrap();
    let plan = store.plan().unwrap().unwrap();
    assert_eq!(plan.segment, 1);
    let segment = compaction::read_whole(&plan).unwrap();
    let mut slow = Vec::new();
    let moves = compaction::read_moves(&plan, &segment, &mut slow).unwrap();
    assert!(slow.is_empty(), "{slow:?}");

    // Meanwhile, commits.
    let one = |op: Op| {
        let mut batch = Batch::default();
        batch.push(op);
        store.commit_group(&[batch]).unwrap();
    };
    let mut moved = task(10, 9, "loop");
    moved.data.insert("round".into(), serde_json::json!(1));
    one(Op::PutTask(Box::new(moved)));
    one(Op::History {
        task: 11,
        seq: 1,
        events: vec![entered("later", "loop")],
    });
    one(Op::DeleteTask {
        task: 12,
        process: 9,
        reference: None,
    });
    one(Op::ReplaceHistory {
        task: 13,
        events: vec![entered("replaced", "loop")],
    });
    one(Op::ClearInbox { task: 14, seq: 114 });

    let mut longest = std::time::Duration::ZERO;
    let copied = store.copy(plan.segment, moves, &mut slow, &mut longest);
    assert!(copied.unwrap().is_some_and(|bytes| bytes > 0));
    assert_eq!(slow, vec![11], "the grown chain is left to be read again");
    // A crash here (the copies written, the segment not retired): the log as it is now,
    // copied aside and opened below.
    let crashed = tempfile::tempdir().unwrap();
    copy_dir(
        &LogStore::dir_in(dir.path()),
        &LogStore::dir_in(crashed.path()),
    );
    let copied = store.copy_slow(plan.segment, slow, &mut longest).unwrap();
    assert!(copied.is_some_and(|bytes| bytes > 0));
    // And a crash after the chains left for the lock were copied too.
    let crashed_later = tempfile::tempdir().unwrap();
    copy_dir(
        &LogStore::dir_in(dir.path()),
        &LogStore::dir_in(crashed_later.path()),
    );
    let (size, _) = store.retire(plan.segment, &mut longest).unwrap();
    assert!(size > 0);
    store.snapshot_now().unwrap();
    assert!(!LogStore::dir_in(dir.path()).join(segment_name(1)).exists());

    let check_all = |store: &LogStore| {
        // What `fill` left (its `check` would also count this test's messages).
        assert_eq!(store.task(1).unwrap().unwrap().node, "b");
        assert_eq!(store.history(1).unwrap().len(), 3);
        assert!(store.task(3).unwrap().is_none());
        assert_eq!(store.inbox(2).unwrap().len(), 1);
        assert_eq!(store.inbox_tasks().unwrap(), vec![2, 10, 11, 13]);
        // Read from the log, not from the records kept for the next step.
        let round = |id: u64| {
            let task = store.task_on_disk(id).unwrap();
            task.map(|t| t.data["round"].clone())
        };
        assert_eq!(round(10), Some(serde_json::json!(1)), "task 10 moved on");
        assert_eq!(round(11), Some(serde_json::json!(0)));
        assert_eq!(store.history(10).unwrap().len(), 1);
        let nodes = |id: u64| -> Vec<String> {
            store
                .history(id)
                .unwrap()
                .into_iter()
                .map(|e| e.node)
                .collect()
        };
        assert_eq!(nodes(11), ["loop", "later"], "task 11's grown history");
        assert!(store.task(12).unwrap().is_none(), "task 12 was deleted");
        assert!(store.history(12).unwrap().is_empty());
        assert!(store.inbox(12).unwrap().is_empty());
        assert_eq!(nodes(13), ["replaced"], "task 13's replaced history");
        assert!(
            store.inbox(14).unwrap().is_empty(),
            "task 14's message was read"
        );
        assert_eq!(store.inbox(10).unwrap().len(), 1);
        assert_eq!(store.inbox(13).unwrap().len(), 1);
    };
    check_all(&store);
    drop(store);
    check_all(&open_with_limits(dir.path(), limits).unwrap());
    // The crashes: the copies are replayed after the commits they follow.
    for crashed in [crashed.path(), crashed_later.path()] {
        let store = open_with_limits(crashed, limits).unwrap();
        assert!(LogStore::dir_in(crashed).join(segment_name(1)).exists());
        check_all(&store);
    }
}

/// Copies the files of directory `from` into a new directory `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// The store `store compact` and `store migrate` copy from is moved aside while open:
/// opened to be read, it compacts nothing, even when a compaction is due, writes no
/// snapshot when it closes (either would land in the new store at its old path), and
/// refuses writes.
#[test]
fn a_store_opened_to_be_copied_neither_compacts_nor_writes_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let log = LogStore::dir_in(dir.path());
    {
        // Filled with compaction and snapshots held off.
        let never = Limits {
            compact_min: u64::MAX / 4,
            snapshot_after: u64::MAX / 4,
            snapshot_on_close_after: u64::MAX / 4,
            ..SMALL
        };
        let store = open_with_limits(dir.path(), never).unwrap();
        fill(&store);
        for round in 0..300u64 {
            let batches: Vec<Batch> = (100..110u64).map(|id| looping(id, round)).collect();
            store.commit_group(&batches).unwrap();
        }
    }
    assert!(!log.join("snapshot").exists());
    let source = retry_locked(|| LogStore::open_with(dir.path(), SMALL, Role::Reader)).unwrap();
    assert!(
        source.compaction_due(&source.writer()),
        "no compaction is due"
    );
    assert!(!source.maintenance_running(), "nothing will compact it");
    // It refuses writes.
    let refused = source.commit_group(&[looping(100, 300)]);
    assert!(matches!(refused, Err(StoreError::Io(_))), "{refused:?}");
    let quick = source.commit_quick(&looping(100, 300), Linger::May);
    assert!(!matches!(quick, Some(Ok(()))), "{quick:?}");
    // Three times as long as the compactor waits between its looks.
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    assert!(
        log.join(segment_name(1)).exists(),
        "the source was compacted"
    );
    drop(source);
    assert!(
        !log.join("snapshot").exists(),
        "the source wrote a snapshot"
    );
    // Opened as an engine's store, the same log is compacted.
    let store = open_with_limits(dir.path(), SMALL).unwrap();
    wait_for_compaction(&store);
    assert!(!log.join(segment_name(1)).exists());
}

#[test]
fn compaction_copies_a_history_chain_it_cannot_decode_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    fill(&store);
    let add = |store: &LogStore, seq: u64, event: HistoryEvent| {
        let mut batch = Batch::default();
        batch.push(Op::History {
            task: 1,
            seq,
            events: vec![event],
        });
        store.commit(&batch).unwrap();
    };
    // Task 1 gets a record no decoder reads (only a bug could write one: frames are
    // checksummed) between two good ones: its header is whole (one event), what follows
    // is not an event.
    add(&store, 10, entered("x", "c"));
    {
        let mut w = store.writer();
        let head = store.state().history[&1].head;
        let junk = [binary::EVENTS, 1, 0, 0, 0, 0xFF];
        let mut enc = frame();
        enc.u8(HISTORY);
        enc.u64(1);
        enc.u32((LOC_BYTES + junk.len()) as u32);
        head.encode(&mut enc);
        enc.buf.extend_from_slice(&junk);
        store.append(&mut w, enc).unwrap();
    }
    add(&store, 11, entered("y", "x"));
    let records = store.history_records(1).unwrap();
    assert!(records.len() >= 4, "{} records", records.len());
    assert!(matches!(store.history(1), Err(StoreError::Corrupt { .. })));
    let other = store.history(2).unwrap();
    assert!(!other.is_empty());
    // Before, this compaction failed (and so every one after it).
    store.compact_now().unwrap();
    let log = LogStore::dir_in(dir.path());
    assert!(
        !log.join(segment_name(1)).exists(),
        "the segment is reclaimed"
    );
    let check = |store: &LogStore| {
        assert_eq!(
            store.history_records(1).unwrap(),
            records,
            "copied as it was"
        );
        assert!(matches!(store.history(1), Err(StoreError::Corrupt { .. })));
        assert_eq!(
            store.history(2).unwrap(),
            other,
            "the others merged as ever"
        );
        let chain = store.state().history[&1];
        assert_eq!(
            chain.bytes,
            records
                .iter()
                .map(|r| (LOC_BYTES + r.len()) as u64)
                .sum::<u64>()
        );
    };
    check(&store);
    drop(store);
    let store = open(dir.path()).unwrap();
    check(&store);
    // The copy is a chain like any other: compacted again, and history goes on it.
    store.compact_now().unwrap();
    check(&store);
    add(&store, 12, entered("z", "y"));
    let mut grown = records.clone();
    grown.push(binary::encode_events(&[entered("z", "y")]));
    assert_eq!(store.history_records(1).unwrap(), grown);
}

/// Commits round after round of tasks 100 to 104, back to back, from `*round` on, in
/// place where the store can, until one waits in the tail; returns the writer, held so that nothing writes the tail
/// meanwhile. (A stall on a loaded machine can end a stream: hence the rounds.)
fn stream_until_one_waits<'a>(store: &'a LogStore, round: &mut u64) -> MutexGuard<'a, Writer> {
    let first = *round;
    loop {
        for id in 100..105u64 {
            let batch = looping(id, *round);
            match store.commit_quick(&batch, Linger::May) {
                Some(done) => done.unwrap(),
                // A roll or a snapshot due: the committer's way, as the engine does.
                None => store.commit_group(std::slice::from_ref(&batch)).unwrap(),
            }
        }
        *round += 1;
        let w = store.writer();
        if file_len(store, &w) < w.len {
            return w;
        }
        drop(w);
        assert!(*round < first + 50, "no commit ever waited in the tail");
    }
}

/// What `last_quick` is set to for the next commit to come in a stream, however long a
/// loaded machine holds the test up before it.
fn streaming() -> Option<std::time::Instant> {
    Some(std::time::Instant::now() + std::time::Duration::from_secs(3600))
}

/// How long the active segment's file is: `w.len` less the tail.
fn file_len(store: &LogStore, w: &Writer) -> u64 {
    let path = store.dir.join(segment_name(w.segment));
    std::fs::metadata(path).unwrap().len()
}

/// Tasks 100 to 104 after `rounds` rounds of [`looping`].
fn check_rounds(store: &LogStore, rounds: u64) {
    for id in 100..105u64 {
        let record = store.task(id).unwrap().unwrap();
        assert_eq!(
            record.data.get("round"),
            Some(&serde_json::json!(rounds - 1))
        );
        let on_disk = store.task_on_disk(id).unwrap().unwrap();
        assert_eq!(
            on_disk.data.get("round"),
            Some(&serde_json::json!(rounds - 1))
        );
        assert_eq!(store.history(id).unwrap().len() as u64, rounds, "task {id}");
    }
}

/// Closes `store`, opens its directory again with `limits`, and checks what [`fill`]
/// and `rounds` rounds of tasks 100 to 104 left.
fn check_reopened(store: LogStore, dir: &Path, limits: Limits, rounds: u64) {
    drop(store);
    let store = open_with_limits(dir, limits).unwrap();
    check(&store);
    check_rounds(&store, rounds);
}

/// The commits of steps that come in a stream wait in the tail: applied, read as any
/// other, and written together — by the first commit written at once, by a flush, or by
/// the flusher when the stream stops. The log on file is whole up to its last frame all
/// along: a process that dies with a tail loses the steps in it, and what is left opens
/// as the state before them.
#[test]
fn commits_in_a_stream_wait_in_the_tail_and_are_written_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    fill(&store);
    let mut round = 0;

    let held = stream_until_one_waits(&store, &mut round);
    // Applied: reads see every step, the ones in the tail too (history and on-disk
    // records are read from the log, not from the records kept for the next step).
    check_rounds(&store, round);
    // A copy of the files now is what a process that died now would leave.
    let crashed = tempfile::tempdir().unwrap();
    copy_dir(&store.dir, &LogStore::dir_in(crashed.path()));
    drop(held);
    {
        let copy = open(crashed.path()).unwrap();
        check(&copy);
        let mut behind = 0;
        for id in 100..105u64 {
            let seen = match copy.task(id).unwrap() {
                Some(record) => record.data["round"].as_u64().unwrap() + 1,
                None => 0,
            };
            assert_eq!(copy.history(id).unwrap().len() as u64, seen, "task {id}");
            behind += round - seen;
        }
        assert!(behind > 0, "the copy holds the tail");
    }

    // A frame written at once writes the tail first, then itself (with the writer held
    // throughout, so that nothing else writes the tail).
    let mut held = stream_until_one_waits(&store, &mut round);
    let process = store.process(1).unwrap().unwrap();
    store.put_process(&mut held, &process).unwrap();
    assert_eq!(file_len(&store, &held), held.len);
    assert!(held.tail_since.is_none());
    drop(held);

    // Whoever writes a tail leaves the log to be synced: the flusher's last fsync may
    // have come after the tail's frames were applied, but before they were written.
    let mut held = stream_until_one_waits(&store, &mut round);
    held.dirty = false;
    store.write_tail(&mut held).unwrap();
    assert!(held.dirty, "a tail written and no fsync owed for it");
    drop(held);

    // A flush writes it.
    drop(stream_until_one_waits(&store, &mut round));
    store.flush().unwrap();
    {
        let w = store.writer();
        assert_eq!(file_len(&store, &w), w.len);
    }

    // With no commit after it, the flusher writes it, then sleeps long again.
    drop(stream_until_one_waits(&store, &mut round));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let written = {
            let w = store.writer();
            file_len(&store, &w) == w.len && w.tail_since.is_none()
        };
        if written && !store.flusher_fast.load(Ordering::Relaxed) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the flusher never wrote the tail, or never slowed down"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    check_rounds(&store, round);

    // A tail left when the store closes is written too.
    drop(stream_until_one_waits(&store, &mut round));
    check_reopened(store, dir.path(), LIMITS, round);
}

/// A compaction that plans while commits wait in the tail: the history chains it reads
/// without the writer's lock end there, so the plan writes the tail first.
#[test]
fn a_compaction_planned_while_commits_wait_in_the_tail_reads_their_chains() {
    let dir = tempfile::tempdir().unwrap();
    // Compacted only when this test says.
    let never = Limits {
        compact_min: u64::MAX / 4,
        ..SMALL
    };
    let store = open_with_limits(dir.path(), never).unwrap();
    fill(&store);
    let mut round = 0;
    while store.writer().segment < 4 {
        let batches: Vec<Batch> = (100..105u64).map(|id| looping(id, round)).collect();
        store.commit_group(&batches).unwrap();
        round += 1;
    }
    drop(stream_until_one_waits(&store, &mut round));
    assert!(store.compact_oldest().unwrap(), "nothing was compacted");
    check_rounds(&store, round);
    check_reopened(store, dir.path(), never, round);
}

/// A tail that cannot be written (a full disk) stays, applied and read from memory, and
/// no commit joins it: every commit meanwhile tries to write it first and fails with
/// nothing written, as a frame written at once does; once a write of it succeeds, work
/// goes on, and a reopen finds everything.
#[test]
fn a_tail_that_cannot_be_written_stays_and_commits_fail_whole_until_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    fill(&store);
    let mut round = 0;
    let mut held = stream_until_one_waits(&store, &mut round);
    let len = held.len;
    store.fail_writes.store(true, Ordering::SeqCst);
    let failed = store.write_tail(&mut held);
    assert!(matches!(failed, Err(StoreError::DiskFull)), "{failed:?}");
    assert!(held.tail_failed);
    assert!(held.broken.is_none(), "{:?}", held.broken);
    assert!(
        file_len(&store, &held) < len,
        "what reached the file was not taken back"
    );
    drop(held);
    check_rounds(&store, round);

    // A step's commit, though it comes in a stream, is written at once, and fails.
    let batch = looping(100, round);
    let quick = {
        let mut w = store.writer();
        w.last_quick = streaming();
        store.commit_quick_locked(&mut w, &batch, Linger::May)
    };
    assert!(
        matches!(quick, Some(Err(StoreError::DiskFull))),
        "{quick:?}"
    );
    let group = store.commit_group(std::slice::from_ref(&batch));
    assert!(matches!(group, Err(StoreError::DiskFull)), "{group:?}");
    assert_eq!(
        store.writer().len,
        len,
        "a commit that failed wrote something"
    );
    check_rounds(&store, round);

    // Space returns.
    store.fail_writes.store(false, Ordering::SeqCst);
    store.commit_group(&[batch]).unwrap();
    {
        let w = store.writer();
        assert_eq!(file_len(&store, &w), w.len);
        assert!(!w.tail_failed);
    }
    let batches: Vec<Batch> = (101..105u64).map(|id| looping(id, round)).collect();
    store.commit_group(&batches).unwrap();
    round += 1;
    check_rounds(&store, round);
    check_reopened(store, dir.path(), LIMITS, round);
}

/// Who writes the tail: the first commit that joins it [`LINGER`] after it began, and a
/// commit that may not linger (a door's, or one that brings a task into being). A
/// commit whose due write of it fails is answered `Ok` (it is applied, in the tail,
/// like the ones before it), and the failure is the next write's error.
#[test]
fn a_tail_is_written_by_the_commit_that_finds_it_due_or_that_may_not_wait() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    fill(&store);
    let mut round = 0;
    // With the writer held throughout each part, nothing else writes the tail.
    let commit = |w: &mut Writer, id: u64, round: u64, linger: Linger| {
        let done = store.commit_quick_locked(w, &looping(id, round), linger);
        assert!(matches!(done, Some(Ok(()))), "{done:?}");
    };

    // Due: a commit that joins a tail begun LINGER ago writes it, itself included.
    let mut held = stream_until_one_waits(&store, &mut round);
    let now = std::time::Instant::now();
    held.tail_since = Some(now - LINGER);
    held.last_quick = streaming();
    commit(&mut held, 100, round, Linger::May);
    assert_eq!(
        file_len(&store, &held),
        held.len,
        "a due tail was not written"
    );
    assert!(held.tail_since.is_none());
    for id in 101..105u64 {
        commit(&mut held, id, round, Linger::May);
    }
    round += 1;
    drop(held);

    // A commit that may not linger writes the tail and itself, in a stream or not.
    let mut held = stream_until_one_waits(&store, &mut round);
    held.last_quick = streaming();
    for id in 100..105u64 {
        commit(&mut held, id, round, Linger::No);
    }
    round += 1;
    assert_eq!(file_len(&store, &held), held.len, "Linger::No waited");
    // Nor does a commit that creates a task (its id must not be handed out again).
    let id = store.next_task_id().unwrap();
    let mut birth = Batch::default();
    birth.push(Op::PutTask(Box::new(task(id, 9, "start"))));
    birth.push(Op::IndexTask {
        process: 9,
        task: id,
    });
    held.last_quick = streaming();
    let done = store.commit_quick_locked(&mut held, &birth, Linger::May);
    assert!(matches!(done, Some(Ok(()))), "{done:?}");
    assert_eq!(
        file_len(&store, &held),
        held.len,
        "a birth waited in the tail"
    );
    drop(held);

    // A due tail that cannot be written: the commit that found it is answered `Ok`;
    // the next one fails, with nothing written.
    let mut held = stream_until_one_waits(&store, &mut round);
    let now = std::time::Instant::now();
    held.tail_since = Some(now - LINGER);
    held.last_quick = streaming();
    store.fail_writes.store(true, Ordering::SeqCst);
    commit(&mut held, 100, round, Linger::May);
    assert!(held.tail_failed);
    let len = held.len;
    let next = store.commit_quick_locked(&mut held, &looping(101, round), Linger::May);
    assert!(matches!(next, Some(Err(StoreError::DiskFull))), "{next:?}");
    assert_eq!(held.len, len, "a commit that failed wrote something");
    store.fail_writes.store(false, Ordering::SeqCst);
    for id in 101..105u64 {
        commit(&mut held, id, round, Linger::May);
    }
    round += 1;
    drop(held);
    store.flush().unwrap();
    check_rounds(&store, round);
    check_reopened(store, dir.path(), LIMITS, round);
}
