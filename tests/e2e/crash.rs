//! The crash test: the real `conveyor serve` is killed with SIGKILL at random moments
//! while thousands of tasks go through delays and API calls, then restarted. At the end,
//! every task has finished exactly once at its final node, counters and per-task history
//! agree, every ref points at its task, and timers that fell due while the engine was
//! down fired after the restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::routing::get;
use conveyor_runtime::{Runtime, Settings, SystemClock};
use conveyor_store::{EventKind, SledStore, Store, TaskStatus};
use serde_json::{Map, Value, json};

use crate::support::{DataDir, http_server};

const TASKS: usize = 2000;

const PROCESS: &str = r#"
process: crash
params:
  n: { required: true }
  api: { required: true }
  round: { default: 0 }
nodes:
  start: { type: start, next: first_wait }
  first_wait: { type: delay, for: 1s, next: call }
  call:
    type: api_call
    url: "{{api}}/work"
    query: { n: "{{n}}" }
    retry: { attempts: 10, backoff: 100ms, max: 1s }
    next: mark
    on_error: failed
  mark: { type: set_param, set: { round: "$.math({{round}} + 1)" }, next: second_wait }
  second_wait: { type: delay, for: 1s, next: check }
  check:
    type: condition
    branches:
      - when: [ { param: round, fn: less, value: 3, cast: number } ]
        next: first_wait
    else: done
  done: { type: final }
  failed: { type: final, status: error }
"#;

type Calls = Arc<Mutex<HashMap<String, u32>>>;

async fn work(
    State(calls): State<Calls>,
    Query(query): Query<HashMap<String, String>>,
) -> axum::Json<Value> {
    let n = query.get("n").cloned().unwrap_or_default();
    if let Ok(mut calls) = calls.lock() {
        *calls.entry(n.clone()).or_default() += 1;
    }
    tokio::time::sleep(Duration::from_millis(2)).await;
    axum::Json(json!({"worked": n}))
}

fn open_store(data: &DataDir) -> Arc<SledStore> {
    Arc::new(SledStore::open(data.path()).expect("the store opens after a crash"))
}

#[test]
fn sigkill_at_random_moments_loses_nothing_and_does_nothing_twice() {
    let calls: Calls = Arc::default();
    let address = http_server(
        axum::Router::new()
            .route("/work", get(work))
            .with_state(calls.clone()),
    );
    let api = format!("http://{address}");
    let data = DataDir::new();
    std::fs::write(data.path().join("crash.yaml"), PROCESS).expect("write process");
    let process_file = data.path().join("crash.yaml");
    data.ok(&[
        "process",
        "clone",
        process_file.to_str().expect("utf-8"),
        "--alias",
        "crash",
    ]);

    // Add the tasks through the engine API (thousands of CLI runs would only be slow).
    {
        let store = open_store(&data);
        let runtime = Runtime::new(store.clone(), Arc::new(SystemClock), Settings::default());
        for n in 0..TASKS {
            let mut task = Map::new();
            task.insert("n".into(), Value::String(n.to_string()));
            task.insert("api".into(), Value::String(api.clone()));
            runtime
                .add_task("@crash", Some(&format!("t{n}")), task)
                .expect("task added");
        }
        store.flush().expect("flush");
    }

    // Kill the engine at random moments, sometimes staying down long enough for timers to
    // fall due while nobody runs.
    let mut down_long = 0;
    for round in 0..8 {
        let mut serve = data
            .command(&["serve", "--listen", "127.0.0.1:0"])
            .spawn()
            .expect("serve starts");
        let alive = Duration::from_millis(rand::random_range(300..1800));
        std::thread::sleep(alive);
        serve.kill().expect("SIGKILL");
        let _ = serve.wait();
        if std::env::var_os("CONVEYOR_CRASH_VERBOSE").is_some() {
            let store = open_store(&data);
            eprintln!(
                "round {round} after {alive:?}: {:?}",
                store.counters(1).expect("counters")
            );
        }
        let down = if round % 2 == 0 {
            down_long += 1;
            Duration::from_millis(2500)
        } else {
            Duration::from_millis(rand::random_range(0..200))
        };
        std::thread::sleep(down);
    }
    assert!(down_long >= 4);

    // Finish the work: the engine restarts, fires what fell due, and runs until idle.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        data.ok(&["run", "--until-idle"]);
        let store = open_store(&data);
        let counters: HashMap<String, (i64, u64)> = store
            .counters(1)
            .expect("counters")
            .into_iter()
            .map(|(n, c)| (n, (c.now, c.total)))
            .collect();
        let finished = counters.get("done").map(|c| c.0).unwrap_or(0)
            + counters.get("failed").map(|c| c.0).unwrap_or(0);
        if finished as usize == TASKS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tasks did not finish: {counters:?}"
        );
        drop(store);
        std::thread::sleep(Duration::from_millis(300));
    }

    let store = open_store(&data);
    let counters: HashMap<String, (i64, u64)> = store
        .counters(1)
        .expect("counters")
        .into_iter()
        .map(|(n, c)| (n, (c.now, c.total)))
        .collect();
    // Every task is at `done`, and every node was entered exactly once per task.
    assert_eq!(
        counters["done"],
        (TASKS as i64, TASKS as u64),
        "{counters:?}"
    );
    assert_eq!(counters.get("failed"), None, "{counters:?}");
    assert_eq!(counters["start"], (0, TASKS as u64), "{counters:?}");
    for node in ["first_wait", "call", "mark", "second_wait", "check"] {
        assert_eq!(
            counters[node],
            (0, 3 * TASKS as u64),
            "node {node}: {counters:?}"
        );
    }
    let tasks = store.tasks(1, None, usize::MAX).expect("tasks");
    assert_eq!(tasks.len(), TASKS);
    let mut seen_refs = std::collections::HashSet::new();
    for task in &tasks {
        assert_eq!(
            (task.node.as_str(), task.status),
            ("done", TaskStatus::Done),
            "task {}",
            task.id
        );
        assert_eq!(task.data["round"], 3);
        assert!(task.wake.is_none());
        // The ref index points at this very task.
        let reference = task.reference.clone().expect("every task has a ref");
        let by_ref = store
            .task_by_ref(1, &reference)
            .expect("read")
            .expect("ref resolves");
        assert_eq!(by_ref.id, task.id);
        assert!(seen_refs.insert(reference));
        // History agrees with counters: entered each node once, finished once.
        let history = store.history(task.id).expect("history");
        let finished = history
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Finished { .. }))
            .count();
        assert_eq!(finished, 1, "task {} finished {finished} times", task.id);
        let entered: Vec<&str> = history
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Entered { .. }))
            .map(|e| e.node.as_str())
            .collect();
        let mut expected = ["first_wait", "call", "mark", "second_wait", "check"].repeat(3);
        expected.push("done");
        assert_eq!(entered, expected, "task {}", task.id);
        assert_eq!(history.len() as u64, task.history_len);
    }
    // Nothing left scheduled.
    assert!(store.ready().expect("ready").is_empty());
    assert!(store.next_timer().expect("timers").is_none());
    // HTTP is at-least-once: every task's three calls reached the server.
    let calls = calls.lock().expect("calls");
    assert_eq!(calls.len(), TASKS, "every task called the server");
    assert!(
        calls.values().all(|c| *c >= 3),
        "each task calls three times at least"
    );
}
