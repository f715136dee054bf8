//! What the tests of both store implementations share.

use crate::*;

pub(crate) fn task(id: u64, process: u64, node: &str) -> TaskRecord {
    TaskRecord {
        id,
        process,
        reference: None,
        node: node.into(),
        prev_node: None,
        status: TaskStatus::Ready,
        data: Default::default(),
        created: 0,
        changed: 0,
        entered: 0,
        wake: None,
        attempt: 0,
        history_len: 0,
        caller: None,
        moves: 0,
        secret_keys: Vec::new(),
        created_by: None,
    }
}

pub(crate) fn new_process(alias: Option<&str>) -> NewProcess {
    NewProcess {
        alias: alias.map(str::to_string),
        source: "test".into(),
        definition: "process: t".into(),
        created: 1,
        settings: Default::default(),
    }
}

/// Timers come out of `store` in due order (then task order), after a given timer.
pub(crate) fn check_timer_order(store: &dyn Store) {
    let mut batch = Batch::default();
    for (due, task) in [(300, 1), (-5, 2), (100, 3), (100, 4), (5_000, 5)] {
        batch.push(Op::SetTimer(TimerKey { due, task }));
    }
    store.commit(&batch).unwrap();
    let due: Vec<_> = store
        .due_timers(300, None, 10)
        .unwrap()
        .iter()
        .map(|t| t.task)
        .collect();
    assert_eq!(due, vec![2, 3, 4, 1]);
    let after = store
        .due_timers(300, Some(TimerKey { due: 100, task: 3 }), 10)
        .unwrap();
    assert_eq!(after.iter().map(|t| t.task).collect::<Vec<_>>(), vec![4, 1]);
    assert!(
        store
            .due_timers(300, Some(TimerKey { due: 300, task: 1 }), 10)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.next_timer().unwrap(),
        Some(TimerKey { due: -5, task: 2 })
    );
}

/// `api-key rotate` and `delete`: the new secret is read at once and a deleted key is
/// gone. Returns the logins of the rotated and of the deleted key.
pub(crate) fn rotate_and_delete_api_keys(store: &dyn Store) -> (u64, u64) {
    let a = store.create_api_key("a", "old", vec![], 1).unwrap();
    let b = store.create_api_key("b", "b-secret", vec![3], 2).unwrap();
    let rotated = store.set_api_key_secret(a.login, "new").unwrap().unwrap();
    assert_eq!(rotated.secret, "new");
    assert_eq!(rotated.name, "a");
    assert_eq!(store.api_key(a.login).unwrap().unwrap().secret, "new");
    assert!(store.set_api_key_secret(999, "x").unwrap().is_none());
    assert!(store.delete_api_key(b.login).unwrap());
    assert!(!store.delete_api_key(b.login).unwrap());
    assert!(store.api_key(b.login).unwrap().is_none());
    store.flush().unwrap();
    (a.login, b.login)
}

/// After a reopen: the rotation and the deletion stayed, and the deleted login is not
/// given to the next key.
pub(crate) fn check_api_keys_after_reopen(store: &dyn Store, (a, b): (u64, u64)) {
    assert_eq!(store.api_key(a).unwrap().unwrap().secret, "new");
    assert!(store.api_key(b).unwrap().is_none());
    assert_eq!(store.api_keys().unwrap().len(), 1);
    let c = store.create_api_key("c", "c", vec![], 3).unwrap();
    assert!(c.login > b, "login {} reused", c.login);
}

/// Runs `open` until it answers anything but [`StoreError::Locked`], for up to 5 s.
///
/// A store just dropped in this process can still be locked a moment: sled's background
/// threads let go of its files a little later, and a child process another test forks
/// while a lock file is open shares that lock until it execs.
pub(crate) fn retry_locked<T>(mut open: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match open() {
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Opens a sled store just closed in this process (see [`retry_locked`]).
pub fn reopen_sled(path: &std::path::Path) -> SledStore {
    retry_locked(|| SledStore::open(path))
        .unwrap_or_else(|e| panic!("reopening the sled store in {}: {e}", path.display()))
}

/// Fills a fresh store with `n` tasks of 2 KB (each with a ref, and a timer when
/// `timers`), then removes nine in ten of them: what the tests of giving space back
/// start from. Returns the process.
pub(crate) fn fill_and_remove(store: &dyn Store, n: u64, timers: bool) -> u64 {
    let process = store.create_process(new_process(Some("p"))).unwrap().id;
    let body = "x".repeat(2_000);
    let timer = |id: u64| TimerKey {
        due: 1_000 + id as i64,
        task: id,
    };
    for chunk in 0..n / 100 {
        let mut batch = Batch::default();
        for i in 0..100 {
            let id = store.next_task_id().unwrap();
            let reference = format!("r{}", chunk * 100 + i);
            let mut record = task(id, process, "wait");
            record.data.insert("body".into(), body.clone().into());
            record.reference = Some(reference.clone());
            batch.push(Op::InsertRef {
                process,
                reference,
                task: id,
            });
            batch.push(Op::PutTask(Box::new(record)));
            batch.push(Op::IndexTask { process, task: id });
            if timers {
                batch.push(Op::SetTimer(timer(id)));
            }
        }
        store.commit(&batch).unwrap();
    }
    let mut batch = Batch::default();
    for id in 1..=n {
        if id % 10 != 0 {
            let reference = store.task(id).unwrap().and_then(|t| t.reference);
            if timers {
                batch.push(Op::ClearTimer(timer(id)));
            }
            batch.push(Op::DeleteTask {
                task: id,
                process,
                reference,
            });
        }
        if batch.ops.len() >= 1_000 {
            store.commit(&std::mem::take(&mut batch)).unwrap();
        }
    }
    store.commit(&batch).unwrap();
    process
}
