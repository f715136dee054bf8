//! `Op::ReplaceHistory` on both stores: what retention uses to drop the middle of a
//! long history. Read back at once and after a reopen.

use crate::test_support::task;
use crate::*;

fn event(at: i64) -> HistoryEvent {
    HistoryEvent {
        at,
        node: "n".into(),
        kind: EventKind::Created,
    }
}

fn ats(store: &dyn Store, task: u64) -> Vec<i64> {
    store.history(task).unwrap().iter().map(|e| e.at).collect()
}

/// Task 1 gets 10 records of 3 events; then its history is replaced by events 0, 1 and
/// a marker, and one more record is appended in the same batch; task 2 is untouched.
fn fill(store: &dyn Store) {
    for id in [1u64, 2] {
        let mut batch = Batch::default();
        batch.push(Op::PutTask(Box::new(task(id, 1, "n"))));
        for seq in 0..10u64 {
            batch.push(Op::History {
                task: id,
                seq: seq * 3,
                events: (0..3).map(|i| event((seq * 3 + i) as i64)).collect(),
            });
        }
        store.commit(&batch).unwrap();
    }
    let mut batch = Batch::default();
    batch.push(Op::ReplaceHistory {
        task: 1,
        events: vec![
            event(0),
            event(1),
            HistoryEvent {
                at: 27,
                node: "n".into(),
                kind: EventKind::Dropped {
                    count: 26,
                    keep_first: 2,
                    keep_last: 2,
                },
            },
            event(28),
            event(29),
        ],
    });
    batch.push(Op::History {
        task: 1,
        seq: 30,
        events: vec![event(30)],
    });
    store.commit(&batch).unwrap();
}

fn check(store: &dyn Store) {
    assert_eq!(ats(store, 1), vec![0, 1, 27, 28, 29, 30]);
    assert!(matches!(
        store.history(1).unwrap()[2].kind,
        EventKind::Dropped { count: 26, .. }
    ));
    assert_eq!(ats(store, 2), (0..30).collect::<Vec<_>>());
}

#[test]
fn the_log_store_replaces_a_history_and_keeps_it_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = LogStore::open(dir.path()).unwrap();
        fill(&store);
        check(&store);
        // More after the replaced history goes on the new chain.
        let mut batch = Batch::default();
        batch.push(Op::History {
            task: 1,
            seq: 31,
            events: vec![event(31)],
        });
        store.commit(&batch).unwrap();
    }
    let store = LogStore::open(dir.path()).unwrap();
    assert_eq!(ats(&store, 1), vec![0, 1, 27, 28, 29, 30, 31]);
    assert_eq!(ats(&store, 2), (0..30).collect::<Vec<_>>());
}

#[test]
fn sled_replaces_a_history_and_keeps_it_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(dir.path()).unwrap();
        fill(&store);
        check(&store);
        let mut batch = Batch::default();
        batch.push(Op::History {
            task: 1,
            seq: 31,
            events: vec![event(31)],
        });
        store.commit(&batch).unwrap();
        store.flush().unwrap();
    }
    let store = crate::test_support::reopen_sled(dir.path());
    assert_eq!(ats(&store, 1), vec![0, 1, 27, 28, 29, 30, 31]);
    assert_eq!(ats(&store, 2), (0..30).collect::<Vec<_>>());
}

#[test]
fn a_deleted_task_takes_its_replaced_history_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path()).unwrap();
    fill(&store);
    let mut batch = Batch::default();
    batch.push(Op::DeleteTask {
        task: 1,
        process: 1,
        reference: None,
    });
    store.commit(&batch).unwrap();
    assert!(store.history(1).unwrap().is_empty());
    drop(store);
    let store = LogStore::open(dir.path()).unwrap();
    assert!(store.history(1).unwrap().is_empty());
    assert_eq!(ats(&store, 2).len(), 30);
}
