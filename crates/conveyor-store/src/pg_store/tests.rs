//! What the conformance suite does not ask of a store: schema versions, and several
//! engines on one database (claims, leases, fencing).

use std::time::Duration;

use super::*;
use crate::test_postgres;

fn database(test: &str) -> Option<(String, &'static test_postgres::TestServer)> {
    let server = test_postgres::require(test)?;
    match test_postgres::fresh_database(server, test) {
        Ok(url) => Some((url, server)),
        Err(e) => panic!("{test}: cannot make a database: {e}"),
    }
}

fn engine(url: &str, lease_ms: u64) -> PgStore {
    let options = PgOptions {
        lease: Duration::from_millis(lease_ms),
        pool_size: 2,
        ..PgOptions::default()
    };
    match PgStore::open(url, options) {
        Ok(store) => store,
        Err(e) => panic!("cannot open {url}: {e}"),
    }
}

fn psql(server: &test_postgres::TestServer, url: &str, sql: &str) {
    let out = std::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .output()
        .unwrap_or_else(|e| panic!("psql: {e}"));
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = server;
}

#[test]
fn a_newer_schema_is_refused_and_left_alone() {
    let Some((url, server)) = database("a_newer_schema_is_refused") else {
        return;
    };
    drop(engine(&url, 10_000));
    psql(
        server,
        &url,
        "UPDATE conveyor_meta SET value = 99 WHERE key = 'schema'",
    );
    match PgStore::open(&url, PgOptions::default()) {
        Err(StoreError::NewerFormat {
            found, supported, ..
        }) => {
            assert_eq!(found, 99);
            assert_eq!(supported, schema::latest());
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a newer schema was opened"),
    }
}

#[test]
fn a_task_is_claimed_by_one_engine_and_a_takeover_fences_the_old_one() {
    let Some((url, server)) = database("claims_and_fencing") else {
        return;
    };
    let (a, b) = (engine(&url, 60_000), engine(&url, 60_000));
    let id = a.next_task_id().unwrap();
    let mut batch = Batch::default();
    batch.push(Op::PutTask(Box::new(crate::conformance::task(id, "n"))));
    batch.push(Op::SetReady(id));
    a.commit(&batch).unwrap();
    // Both see it as work nobody holds; one gets it.
    let got_a = a.claim_work(0, 10).unwrap();
    let got_b = b.claim_work(0, 10).unwrap();
    assert_eq!(got_a, vec![id]);
    assert!(got_b.is_empty(), "claimed twice: {got_b:?}");
    assert!(b.claim(&[id]).unwrap().is_empty());
    // A's lease runs out (as when A is cut off); B takes over with a new token.
    psql(
        server,
        &url,
        "UPDATE claims SET until = now() - interval '1 second'",
    );
    assert_eq!(b.claim(&[id]).unwrap(), vec![id]);
    // A's step commits late: refused whole, nothing written.
    let mut late = Batch::default();
    let mut moved = crate::conformance::task(id, "late");
    moved.moves = 1;
    late.push(Op::PutTask(Box::new(moved)));
    late.push(Op::ClearReady(id));
    match a.commit(&late) {
        Err(StoreError::Fenced { tasks }) => assert_eq!(tasks, vec![id]),
        other => panic!("a stale engine's commit was not refused: {other:?}"),
    }
    assert_eq!(b.task(id).unwrap().unwrap().node, "n");
    assert_eq!(b.ready().unwrap(), vec![id]);
    // B's own commit goes through; its release frees the task.
    let mut step = Batch::default();
    step.push(Op::PutTask(Box::new(crate::conformance::task(id, "done"))));
    step.push(Op::ClearReady(id));
    b.commit(&step).unwrap();
    b.release(id);
    b.commit(&Batch::default()).unwrap();
    assert_eq!(a.task(id).unwrap().unwrap().node, "done");
    assert_eq!(a.claim(&[id]).unwrap(), vec![id]);
}

/// The double steps the kill test found: A's step outlived its lease, B took the task,
/// stepped it and let it go, and A's look for work found the task again (a new claim).
/// A's step read the task before B's step: its commit must still be refused.
#[test]
fn work_found_again_does_not_vouch_for_a_step_that_began_before_the_takeover() {
    let Some((url, server)) = database("work_found_again") else {
        return;
    };
    let (a, b) = (engine(&url, 60_000), engine(&url, 60_000));
    let id = a.next_task_id().unwrap();
    let mut batch = Batch::default();
    batch.push(Op::PutTask(Box::new(crate::conformance::task(id, "first"))));
    batch.push(Op::SetReady(id));
    a.commit(&batch).unwrap();
    // A's step claims the task and reads it.
    assert_eq!(a.claim(&[id]).unwrap(), vec![id]);
    assert_eq!(a.task(id).unwrap().unwrap().node, "first");
    // A's lease runs out while its step runs; B's step takes the task and commits.
    psql(
        server,
        &url,
        "UPDATE claims SET until = now() - interval '1 second'",
    );
    assert_eq!(b.claim(&[id]).unwrap(), vec![id]);
    let mut step = Batch::default();
    step.push(Op::PutTask(Box::new(crate::conformance::task(
        id, "second",
    ))));
    step.push(Op::SetReady(id));
    b.commit(&step).unwrap();
    b.release(id);
    b.commit(&Batch::default()).unwrap();
    // A looks for work and finds the task again: a new claim, not the one A's step
    // began with.
    assert_eq!(a.claim_work(0, 10).unwrap(), vec![id]);
    let mut late = Batch::default();
    late.push(Op::PutTask(Box::new(crate::conformance::task(
        id, "second",
    ))));
    late.push(Op::SetReady(id));
    match a.commit(&late) {
        Err(StoreError::Fenced { tasks }) => assert_eq!(tasks, vec![id]),
        other => panic!("a step from before the takeover was committed: {other:?}"),
    }
    // A's next step claims it afresh, reads B's step and commits; the stale step's
    // release, riding on that commit, leaves the new claim alone.
    a.release(id);
    assert_eq!(a.claim(&[id]).unwrap(), vec![id]);
    assert_eq!(a.task(id).unwrap().unwrap().node, "second");
    let mut next = Batch::default();
    next.push(Op::PutTask(Box::new(crate::conformance::task(id, "third"))));
    next.push(Op::ClearReady(id));
    a.commit(&next).unwrap();
    assert!(b.claim(&[id]).unwrap().is_empty(), "A's claim was released");
    assert_eq!(b.task(id).unwrap().unwrap().node, "third");
}

#[test]
fn an_idle_engine_hears_of_work_and_of_process_changes() {
    let Some((url, _)) = database("listen_notify") else {
        return;
    };
    let (a, b) = (engine(&url, 10_000), engine(&url, 10_000));
    let (send, receive) = std::sync::mpsc::channel();
    b.watch(Arc::new(move |change| {
        let _ = send.send(change);
    }));
    // The listener connects in the background: give it a moment.
    std::thread::sleep(Duration::from_millis(300));
    let process = a
        .create_process(crate::test_support::new_process(None))
        .unwrap();
    a.update_process(process.id, "process: changed".into())
        .unwrap();
    let id = a.next_task_id().unwrap();
    let mut batch = Batch::default();
    batch.push(Op::SetReady(id));
    a.commit(&batch).unwrap();
    let mut seen = Vec::new();
    while let Ok(change) = receive.recv_timeout(Duration::from_secs(5)) {
        seen.push(change);
        if seen.contains(&Change::Work) && seen.contains(&Change::Process(process.id)) {
            return;
        }
    }
    panic!("engine B heard only {seen:?}");
}

#[test]
fn counters_are_spread_over_slots_and_add_up() {
    let Some((url, _)) = database("counter_slots") else {
        return;
    };
    let engines: Vec<PgStore> = (0..4).map(|_| engine(&url, 10_000)).collect();
    for (n, store) in engines.iter().enumerate() {
        let mut batch = Batch::default();
        batch.push(Op::Count {
            process: 1,
            node: "a".into(),
            now: 1,
            total: n as u64 + 1,
        });
        store.commit(&batch).unwrap();
    }
    let counters = engines[0].counters(1).unwrap();
    assert_eq!(
        counters,
        vec![("a".to_string(), NodeCounter { now: 4, total: 10 })]
    );
}

/// Engines opened one after another write different counter slots (from the
/// `counter_slots` sequence), so no two share a row of a node's counter.
#[test]
fn engines_take_different_counter_slots() {
    let Some((url, _)) = database("counter_slots") else {
        return;
    };
    let engines: Vec<PgStore> = (0..4).map(|_| engine(&url, 10_000)).collect();
    let mut slots: Vec<i32> = engines
        .iter()
        .map(|e| e.inner.slot.load(std::sync::atomic::Ordering::Relaxed))
        .collect();
    slots.sort_unstable();
    slots.dedup();
    assert_eq!(slots.len(), 4, "slots shared: {slots:?}");
}

/// A rate-limit window is counted for every engine: the count goes on whichever engine
/// asks, the first task past `max` becomes the window's summary and every later one
/// learns of that one; a new window starts again at 1 and the old ones are dropped.
#[test]
fn a_rate_limit_window_is_counted_across_engines() {
    let Some((url, server)) = database("rate_windows") else {
        return;
    };
    let (a, b) = (engine(&url, 10_000), engine(&url, 10_000));
    let admit = |store: &PgStore, window: i64, candidate: u64| {
        store
            .admit(7, window, 3, candidate)
            .unwrap()
            .expect("a shared store counts")
    };
    assert_eq!(
        admit(&a, 100, 1),
        Admission {
            started: 1,
            summary: None
        }
    );
    assert_eq!(
        admit(&b, 100, 2),
        Admission {
            started: 2,
            summary: None
        }
    );
    assert_eq!(
        admit(&a, 100, 3),
        Admission {
            started: 3,
            summary: None
        }
    );
    assert_eq!(
        admit(&b, 100, 4),
        Admission {
            started: 4,
            summary: Some(4)
        }
    );
    assert_eq!(
        admit(&a, 100, 5),
        Admission {
            started: 5,
            summary: Some(4)
        }
    );
    // Another process has windows of its own.
    assert_eq!(a.admit(8, 100, 3, 6).unwrap().map(|x| x.started), Some(1));
    // Two windows on, the count starts again and the old windows go.
    assert_eq!(
        admit(&b, 102, 7),
        Admission {
            started: 1,
            summary: None
        }
    );
    psql(
        server,
        &url,
        "DO $$ BEGIN IF (SELECT count(*) FROM rate_windows WHERE process = 7) <> 1 \
         THEN RAISE EXCEPTION 'old windows kept'; END IF; END $$",
    );
}

/// A commit that writes an existing task its engine holds no claim on claims it for the
/// commit itself: refused while another engine holds the task, accepted once that engine
/// let it go, and it leaves no claim behind. (A step always holds its task; this guards
/// every other writer.)
#[test]
fn a_write_to_a_task_another_engine_holds_is_refused() {
    let Some((url, server)) = database("unheld_writes") else {
        return;
    };
    let (a, b) = (engine(&url, 60_000), engine(&url, 60_000));
    let id = a.next_task_id().unwrap();
    let mut create = Batch::default();
    create.push(Op::PutTask(Box::new(crate::conformance::task(id, "n"))));
    create.push(Op::IndexTask {
        process: 1,
        task: id,
    });
    // A create needs no claim.
    b.commit(&create).unwrap();
    assert_eq!(a.claim(&[id]).unwrap(), vec![id]);
    let mut write = Batch::default();
    write.push(Op::PutTask(Box::new(crate::conformance::task(id, "by_b"))));
    match b.commit(&write) {
        Err(StoreError::Fenced { tasks }) => assert_eq!(tasks, vec![id]),
        other => panic!("B wrote a task A holds: {other:?}"),
    }
    assert_eq!(a.task(id).unwrap().unwrap().node, "n");
    let mut delete = Batch::default();
    delete.push(Op::DeleteTask {
        task: id,
        process: 1,
        reference: None,
    });
    assert!(matches!(b.commit(&delete), Err(StoreError::Fenced { .. })));
    // A lets it go (its release rides on its next commit); then B's write goes in.
    a.release(id);
    a.commit(&Batch::default()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match b.commit(&write) {
            Ok(()) => break,
            Err(StoreError::Fenced { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => panic!("B's write after A let go: {other:?}"),
        }
    }
    assert_eq!(a.task(id).unwrap().unwrap().node, "by_b");
    psql(
        server,
        &url,
        &format!(
            "DO $$ BEGIN IF EXISTS (SELECT 1 FROM claims WHERE task = {id}) \
             THEN RAISE EXCEPTION 'a claim was left behind'; END IF; END $$"
        ),
    );
}

/// The places of an `api_call` limit are shared by engines: never more taken than the
/// limit, a given-back place is free again, and a place whose engine never gave it back
/// is free once its hold has passed.
#[test]
fn api_call_places_are_shared_by_engines_and_free_again_after_their_hold() {
    let Some((url, _server)) = database("api_call_places_are_shared") else {
        return;
    };
    let (a, b) = (engine(&url, 10_000), engine(&url, 10_000));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let block = |store: &PgStore, hold_ms: u64| {
        runtime
            .block_on(store.call_slot(7, "call", 2, Duration::from_millis(hold_ms)))
            .unwrap_or_else(|e| panic!("call_slot: {e}"))
    };
    let first = block(&a, 60_000).expect("a place is free");
    // b's place will be "left behind" by a dead engine: a short hold.
    let second = block(&b, 300).expect("a second place is free");
    assert_ne!(first.slot, second.slot);
    assert_eq!(block(&a, 60_000), None, "both places are taken");
    assert_eq!(block(&b, 60_000), None, "both places are taken, for b too");
    // Given back: free again for the other engine.
    a.give_back_call_slot(7, "call", first);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let third = loop {
        if let Some(place) = block(&b, 60_000) {
            break place;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the place given back never came free"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(third.slot, first.slot);
    assert_ne!(third.token, first.token);
    // A stale give-back (the old token) does not free the place taken since.
    a.give_back_call_slot(7, "call", first);
    std::thread::sleep(Duration::from_millis(100));
    // Still full until b's short hold on `second` runs out; then that place is free.
    assert_eq!(block(&a, 60_000), None, "a stale give-back freed a place");
    std::thread::sleep(Duration::from_millis(400));
    let fourth = block(&a, 60_000).expect("the held-too-long place is free again");
    assert_eq!(fourth.slot, second.slot);
    // Another node's limit is its own.
    let other = runtime
        .block_on(a.call_slot(7, "other", 1, Duration::from_secs(60)))
        .unwrap_or_else(|e| panic!("call_slot: {e}"));
    assert!(other.is_some());
}
