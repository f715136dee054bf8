//! A task created at a direct URL takes its first step at the door: the nodes that decide
//! from the task alone run before the create is committed, and the create and that step
//! are written as one batch (`step::run_born`). The engine hears only of what is left:
//! a task stopped before a node the door does not run, or a timer. Driven through the
//! runtime's door API on a real store, with a manual clock.

use std::time::Duration;

use conveyor_runtime::{Ack, RunMode};
use conveyor_store::{EventKind, TaskStatus};
use serde_json::{Map, Value, json};

use crate::engine::{Engine, T0};

const PURE: &str = r#"
process: pure
nodes:
  start: { type: start, next: set }
  set: { type: set_param, set: { b: "$.math({{a}} * 2)" }, next: check }
  check:
    type: condition
    branches:
      - when: [ { param: b, fn: more, value: 10, cast: number } ]
        next: big
    else: small
  big: { type: final }
  small: { type: final, status: error }
"#;

fn data(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("data must be an object"),
    }
}

async fn direct(e: &Engine, process: u64, reference: Option<&str>, value: Value) -> u64 {
    e.runtime
        .direct_url_grouped(process, reference, data(value), false)
        .await
        .unwrap_or_else(|err| panic!("direct URL: {err}"))
        .0
        .task
}

#[tokio::test]
async fn a_direct_url_create_runs_a_pure_process_before_it_is_answered() {
    let e = Engine::new();
    let p = e.clone_process(PURE, Some("pure"));
    let id = direct(&e, p, Some("t1"), json!({"a": 7})).await;

    // Answered: the task is already where the process ends, with no engine running.
    let store = e.runtime.store();
    let task = store.task(id).unwrap().expect("the task is stored");
    assert_eq!((task.node.as_str(), task.status), ("big", TaskStatus::Done));
    assert_eq!(task.data["b"], 14);
    assert!(
        store.ready().unwrap().is_empty(),
        "nothing left for the engine"
    );
    // Its history is whole: born, moved through every node, finished; its length agrees.
    let history = store.history(id).unwrap();
    assert!(matches!(history[0].kind, EventKind::Created));
    let nodes: Vec<&str> = history.iter().map(|h| h.node.as_str()).collect();
    for node in ["start", "set", "check", "big"] {
        assert!(nodes.contains(&node), "{node} missing from {nodes:?}");
    }
    assert!(matches!(
        history.last().unwrap().kind,
        EventKind::Finished { .. }
    ));
    assert_eq!(task.history_len, history.len() as u64);
    // Counters: the task passed through `start` and sits in `big`.
    assert_eq!(e.count(p, "start"), (0, 1));
    assert_eq!(e.count(p, "set"), (0, 1));
    assert_eq!(e.count(p, "big"), (1, 1));
    assert_eq!(e.count(p, "small"), (0, 0));
    assert_eq!(store.task_by_ref(p, "t1").unwrap().map(|t| t.id), Some(id));

    // The engine has no step to run for it.
    let stats = e
        .runtime
        .run(RunMode::UntilIdle)
        .await
        .expect("engine runs");
    assert_eq!(e.count(p, "big"), (1, 1));
    assert_eq!(stats.steps, 0);

    // Through the grouped `add`, the task comes back as the door's step left it.
    let added = e
        .runtime
        .add_task_grouped("@pure", None, data(json!({"a": 2})), Ack::Durable)
        .await
        .expect("add");
    assert_eq!(
        (added.node.as_str(), added.status, &added.data["b"]),
        ("small", TaskStatus::Failed, &json!(4))
    );
    assert_eq!(store.task(added.id).unwrap().as_ref(), Some(&added));
}

#[tokio::test]
async fn a_task_stops_at_the_door_before_a_node_the_door_does_not_run() {
    let e = Engine::new();
    let p = e.clone_process(
        r#"
process: coded
nodes:
  start: { type: start, next: set }
  set: { type: set_param, set: { n: 2 }, next: compute }
  compute: { type: code, src: "data.n = data.n * 21;", next: done }
  done: { type: final }
"#,
        Some("coded"),
    );
    let id = direct(&e, p, None, json!({})).await;
    let store = e.runtime.store();
    let task = store.task(id).unwrap().expect("stored");
    // Code takes time and CPU: it is the engine's to run, not the door's.
    assert_eq!(
        (task.node.as_str(), task.status),
        ("compute", TaskStatus::Ready)
    );
    assert_eq!(task.data["n"], 2);
    assert_eq!(store.ready().unwrap(), vec![id]);
    assert_eq!(e.count(p, "compute"), (1, 1));

    e.idle().await;
    let task = store.task(id).unwrap().expect("stored");
    assert_eq!(
        (task.node.as_str(), task.status),
        ("done", TaskStatus::Done)
    );
    assert_eq!(task.data["n"], 42);
    assert_eq!(e.count(p, "compute"), (0, 1));
    assert_eq!(task.history_len, store.history(id).unwrap().len() as u64);
}

/// The timers a door's step sets reach a running engine: a delay that is due before
/// anything the engine waits for wakes it; one due later is found when it looks.
#[tokio::test]
async fn timers_set_at_the_door_fire_in_a_running_engine() {
    let e = Engine::new();
    let p = e.clone_process(
        r#"
process: delays
nodes:
  start: { type: start, next: pick }
  pick:
    type: condition
    branches:
      - when: [ { param: fast, fn: eq, value: "yes" } ]
        next: short
    else: long
  short: { type: delay, for: 1m, next: done }
  long: { type: delay, for: 1h, next: done }
  done: { type: final, keep: 1d }
"#,
        Some("delays"),
    );
    let engine = e.start();
    // The engine runs and waits for no timer; the first create's timer must wake it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let slow = direct(&e, p, None, json!({"fast": "no"})).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Now it waits for the hour; the minute comes first and must wake it again.
    let fast = direct(&e, p, None, json!({"fast": "yes"})).await;
    let store = e.runtime.store();
    let node_of = |id: u64| store.task(id).unwrap().map(|t| t.node);

    e.clock.advance(Duration::from_secs(60));
    wait_for(|| node_of(fast).as_deref() == Some("done")).await;
    assert_eq!(
        node_of(slow).as_deref(),
        Some("long"),
        "the hour is not over"
    );

    e.clock.advance(Duration::from_secs(59 * 60));
    wait_for(|| node_of(slow).as_deref() == Some("done")).await;

    // Both are kept a day after they finished, then removed.
    e.clock.set(T0 + 60 * 60 * 1000 + 86_400_000);
    wait_for(|| node_of(slow).is_none() && node_of(fast).is_none()).await;
    engine.stop().await;
}

/// Timers the engine's own steps set reach its running loop, which no longer reads its
/// timer index when a step schedules work: a delay a step enters, and the window of a
/// rate-limited process into which a step's `copy_task` folded a task (the summary is
/// scheduled by the copy, and its own step tells the loop). Fails when a step's timer
/// is not told to the loop (checked by dropping the hint in `finished`).
#[tokio::test]
async fn timers_set_by_the_engines_steps_fire_in_a_running_engine() {
    let e = Engine::new();
    let limited = e.clone_process(
        r#"
process: limited
settings: { rate_limit: { max: 1, per: 1h } }
nodes:
  start: { type: start, next: done }
  done: { type: final, keep: 30d }
"#,
        Some("limited"),
    );
    e.clone_process(
        r#"
process: source
nodes:
  start: { type: start, next: wait }
  wait: { type: delay, for: 1m, next: send }
  send: { type: copy_task, process: "@limited", data: { n: "{{n}}" }, next: done }
  done: { type: final, keep: 30d }
"#,
        Some("source"),
    );
    let engine = e.start();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let a = e.add("@source", None, json!({"n": 1}));
    let b = e.add("@source", None, json!({"n": 2}));
    let store = e.runtime.store();
    let node_of = |id: u64| store.task(id).unwrap().map(|t| t.node);
    // Both step into their delay: only those steps know its timer.
    wait_for(|| node_of(a).as_deref() == Some("wait") && node_of(b).as_deref() == Some("wait"))
        .await;
    e.clock.advance(Duration::from_secs(60));
    wait_for(|| node_of(a).as_deref() == Some("done") && node_of(b).as_deref() == Some("done"))
        .await;
    // One copy ran; the other was folded into a summary waiting for the window's end.
    wait_for(|| e.count(limited, "done") == (1, 1)).await;
    assert_eq!(
        e.count(limited, "start").0,
        1,
        "the summary waits at the start"
    );
    e.clock.advance(Duration::from_secs(60 * 60));
    wait_for(|| e.count(limited, "done") == (2, 2)).await;
    engine.stop().await;
}

/// Waits (real time, bounded) for the running engine to get somewhere.
async fn wait_for(mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the engine did not get there in 5 s");
}

#[tokio::test]
async fn a_rate_limited_process_folds_door_creates_as_before() {
    let e = Engine::new();
    let p = e.clone_process(
        r#"
process: limited
settings: { rate_limit: { max: 1, per: 1h } }
nodes:
  start: { type: start, next: done }
  done: { type: final }
"#,
        Some("limited"),
    );
    let first = direct(&e, p, None, json!({"n": 1})).await;
    let second = direct(&e, p, None, json!({"n": 2})).await;
    let store = e.runtime.store();
    // A rate-limited create is the engine's to pace: nothing moves at the door.
    for id in [first, second] {
        let task = store.task(id).unwrap().expect("stored");
        assert_eq!(task.node, "start", "task {id}");
    }
    e.idle().await;
    assert_eq!(
        store.task(first).unwrap().expect("stored").status,
        TaskStatus::Done
    );
}

/// What a door's step decides is what the engine would have decided: the same process
/// run once through the door and once through `task add` ends the same way.
#[tokio::test]
async fn a_door_step_ends_where_an_engine_step_ends() {
    let e = Engine::new();
    let p = e.clone_process(PURE, Some("pure"));
    for a in [1, 5, 6, 100] {
        let door = direct(&e, p, None, json!({"a": a})).await;
        let added = e.add("@pure", None, json!({"a": a}));
        e.idle().await;
        let store = e.runtime.store();
        let door = store.task(door).unwrap().expect("stored");
        let added = store.task(added).unwrap().expect("stored");
        assert_eq!(
            (&door.node, door.status, &door.data),
            (&added.node, added.status, &added.data),
            "a = {a}"
        );
        let kinds = |id| -> Vec<String> {
            store
                .history(id)
                .unwrap()
                .iter()
                .map(|h| format!("{}:{:?}", h.node, std::mem::discriminant(&h.kind)))
                .collect()
        };
        assert_eq!(kinds(door.id), kinds(added.id), "a = {a}");
    }
}

/// A stranger's create cannot make the door spin: a process whose nodes loop without
/// waiting (the time limit that lets the cycle be cloned never comes, as the loop takes
/// no time) is stopped at the door by loop protection (`max_steps`), the create is
/// answered, and the task is failed with the reason, as the engine would have left it.
#[tokio::test]
async fn a_looping_process_is_stopped_at_the_door_by_loop_protection() {
    let e = Engine::new();
    let p = e.clone_process(
        r#"
process: spin
settings: { max_steps: 20 }
nodes:
  start: { type: start, next: a }
  a: { type: set_param, set: { k: 1 }, next: b }
  b: { type: set_param, set: { m: 1 }, timeout: 1h -> done, next: a }
  done: { type: final }
"#,
        Some("spin"),
    );
    let id = direct(&e, p, None, json!({})).await;
    let store = e.runtime.store();
    let task = store.task(id).unwrap().expect("stored");
    assert_eq!(task.status, TaskStatus::Failed);
    let history = store.history(id).unwrap();
    assert!(history.len() <= 2 * 20 + 4, "{} events", history.len());
    assert!(
        history.iter().any(|h| matches!(
            &h.kind,
            EventKind::Error { tag, .. } if tag == "loop_protection"
        )),
        "{history:?}"
    );
    assert!(store.ready().unwrap().is_empty());
}
