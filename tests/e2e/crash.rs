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
use conveyor_store::{EventKind, Store, TaskStatus};
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

fn open_store(data: &DataDir) -> Arc<dyn Store> {
    crate::support::open_store(data.path())
}

/// The crash process cloned in a fresh data dir, with `TASKS` tasks added, and the
/// local server they call.
fn setup() -> (DataDir, Calls) {
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

    (data, calls)
}

/// Runs the engine until every task finished, then proves nothing was lost or done twice.
fn finish_and_verify(data: &DataDir, calls: &Calls) {
    // Finish the work: the engine restarts, fires what fell due, and runs until idle.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        data.ok(&["run", "--until-idle"]);
        let store = open_store(data);
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

    let store = open_store(data);
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
        // Its only timer is its removal when its `keep` is over.
        assert_eq!(
            task.wake.map(|w| w.kind),
            Some(conveyor_store::WakeKind::Remove)
        );
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
    // Nothing left scheduled but the removals of the finished tasks (their `keep`).
    assert!(store.ready().expect("ready").is_empty());
    for timer in store
        .due_timers(i64::MAX, None, usize::MAX)
        .expect("timers")
    {
        let task = store
            .task(timer.task)
            .expect("read")
            .expect("a timer's task exists");
        assert_eq!(
            task.wake.map(|w| (w.at, w.kind)),
            Some((timer.due, conveyor_store::WakeKind::Remove))
        );
    }
    // HTTP is at-least-once: every task's three calls reached the server.
    let calls = calls.lock().expect("calls");
    assert_eq!(calls.len(), TASKS, "every task called the server");
    assert!(
        calls.values().all(|c| *c >= 3),
        "each task calls three times at least"
    );
}

#[test]
fn sigkill_at_random_moments_loses_nothing_and_does_nothing_twice() {
    let (data, calls) = setup();
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

    finish_and_verify(&data, &calls);
}

#[test]
fn sigterm_under_load_finishes_or_requeues_and_a_restart_continues() {
    let (data, calls) = setup();
    for _ in 0..3 {
        let mut serve = data
            .command(&["serve", "--listen", "127.0.0.1:0"])
            .spawn()
            .expect("serve starts");
        std::thread::sleep(Duration::from_millis(rand::random_range(400..1200)));
        let stopped = std::process::Command::new("kill")
            .args(["-TERM", &serve.id().to_string()])
            .status()
            .expect("kill");
        assert!(stopped.success());
        let status = serve.wait().expect("serve ends");
        assert_eq!(status.code(), Some(0), "a graceful stop exits 0");
        assert!(!data.path().join("server.json").exists(), "cleaned up");
        // Nothing half-written: every task is in exactly one node.
        let store = open_store(&data);
        let in_nodes: i64 = store
            .counters(1)
            .expect("counters")
            .iter()
            .map(|(_, c)| c.now)
            .sum();
        assert_eq!(in_nodes, TASKS as i64);
    }
    finish_and_verify(&data, &calls);
}

/// A tmpfs of `size` mounted on a new temp dir (root only); `None` where mounting is not
/// allowed (then the test says it is skipped, unless CONVEYOR_FAULT_TESTS demands it).
struct Mount(tempfile::TempDir);

impl Mount {
    fn tmpfs(size: &str) -> Option<Mount> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var_os("CONVEYOR_FAULT_TESTS").is_none(),
                "cannot mount a tmpfs"
            );
            eprintln!("skipped: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(Mount(dir))
    }

    fn remount(&self, options: &str) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(self.0.path())
            .status()
            .expect("mount runs");
        assert!(status.success());
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

fn conveyor_in(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let output = crate::support::conveyor()
        .arg("--data")
        .arg(dir)
        .args(args)
        .output()
        .expect("conveyor runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_full_disk_refuses_new_work_clearly_and_work_resumes_when_space_returns() {
    let Some(mount) = Mount::tmpfs("3m") else {
        return;
    };
    let dir = mount.0.path();
    assert_eq!(
        conveyor_in(dir, &["process", "clone", "bitrix_deals", "--alias", "d"]).0,
        0
    );
    let blob = format!("{{\"blob\":\"{}\"}}", "x".repeat(3000));
    let mut added = 0;
    let refusal = loop {
        let (code, _, stderr) = conveyor_in(dir, &["task", "add", "@d", "--from-json", &blob]);
        if code != 0 {
            break stderr;
        }
        added += 1;
        assert!(added < 5000, "the disk never filled");
    };
    assert!(added > 10, "{added} tasks before the disk was full");
    assert!(
        refusal.contains("the disk holding the store is full"),
        "{refusal}"
    );
    // Space returns: the same store opens, nothing is corrupt, work goes on.
    mount.remount("size=64m");
    let (code, _, stderr) = conveyor_in(dir, &["task", "add", "@d", "--ref", "after"]);
    assert_eq!(code, 0, "{stderr}");
    let (_, listed, _) = conveyor_in(dir, &["--json", "task", "list", "@d", "--limit", "100000"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("json");
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(added + 1),
        "every acknowledged task, and no other"
    );
    let (code, stdout, _) = conveyor_in(dir, &["run", "--until-idle"]);
    assert_eq!(code, 0, "{stdout}");
}

#[test]
fn a_read_only_data_dir_is_refused_with_a_message() {
    let Some(mount) = Mount::tmpfs("16m") else {
        return;
    };
    let dir = mount.0.path();
    assert_eq!(
        conveyor_in(dir, &["process", "clone", "bitrix_deals", "--alias", "d"]).0,
        0
    );
    mount.remount("ro");
    let (code, _, stderr) = conveyor_in(dir, &["task", "list", "@d"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("is on a read-only file system"), "{stderr}");
    mount.remount("rw");
    assert_eq!(conveyor_in(dir, &["task", "add", "@d"]).0, 0);
}

/// Direct-URL creates under SIGKILL: every create the server acknowledged survives the
/// kill, finished by the step it took at the door, exactly once. Clients send creates
/// while the server is killed at random moments and started again; afterwards every
/// acknowledged task is at its final node with the data it was sent, its history is
/// whole, and the store's counters agree with the tasks it holds (a create written but
/// not yet answered when the kill came is whole too). A process kill leaves the
/// kernel's page cache in place: this shows that the door's step and its commit are one
/// and that nothing acknowledged is lost with the process, not that the answer waited
/// for the fsync (a machine crash would be needed for that).
#[test]
fn direct_url_creates_acknowledged_before_a_sigkill_are_all_there() {
    let mut data = DataDir::new();
    std::fs::write(
        data.path().join("quick.yaml"),
        "process: quick\nnodes:\n  start: { type: start, next: mark }\n  mark: { type: set_param, set: { seen: \"{{n}}\" }, next: check }\n  check:\n    type: condition\n    branches:\n      - when: [ { param: n, fn: more, value: -1, cast: number } ]\n        next: end\n    else: odd\n  end: { type: final }\n  odd: { type: final, status: error }\n",
    )
    .expect("write process");
    let file = data.path().join("quick.yaml");
    data.ok(&[
        "process",
        "clone",
        file.to_str().expect("utf-8"),
        "--alias",
        "quick",
    ]);
    let url = data.ok(&["process", "url", "@quick"]);
    let path = url
        .trim()
        .split_once("/api/")
        .map(|(_, rest)| format!("/api/{rest}"))
        .expect("a direct URL");

    // (n, task id) of every create the server answered with 200.
    let acknowledged: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for _round in 0..4 {
        let mut server = crate::http_api::Server::start_full(data, &["--direct-rate", "0"], &[]);
        let base = server.base.clone();
        let clients: Vec<_> = (0..8)
            .map(|_| {
                let (base, path) = (base.clone(), path.clone());
                let (acknowledged, next) = (acknowledged.clone(), next.clone());
                std::thread::spawn(move || {
                    let http = crate::http_api::http();
                    loop {
                        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Ok(reply) = http.get(format!("{base}{path}?n={n}")).send() else {
                            return;
                        };
                        if reply.status() != 200 {
                            return;
                        }
                        let Ok(body) = reply.json::<Value>() else {
                            return;
                        };
                        let id = body["ops"][0]["obj_id"]
                            .as_str()
                            .and_then(|id| id.parse().ok())
                            .expect("an acknowledged create names its task");
                        acknowledged.lock().expect("lock").push((n, id));
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rand::random_range(300..1200)));
        let mut child = server.child.take().expect("running");
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        for client in clients {
            client.join().expect("client");
        }
        data = std::mem::replace(&mut server.data, DataDir::new());
    }

    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(
        acknowledged.len() > 100,
        "only {} creates",
        acknowledged.len()
    );
    eprintln!("{} creates acknowledged over 4 kills", acknowledged.len());
    let store = open_store(&data);
    let mut ids = std::collections::HashSet::new();
    for (n, id) in &acknowledged {
        assert!(ids.insert(*id), "task {id} acknowledged twice");
        let task = store
            .task(*id)
            .expect("read")
            .unwrap_or_else(|| panic!("acknowledged task {id} (n = {n}) is lost"));
        assert_eq!(
            (task.node.as_str(), task.status, &task.data["seen"]),
            ("end", TaskStatus::Done, &json!(n.to_string())),
            "task {id}"
        );
        assert_eq!(
            store.history(*id).expect("history").len() as u64,
            task.history_len,
            "task {id}"
        );
    }
    // Whatever was written but not acknowledged (the kill came between the flush and the
    // answer) is whole too: the counters agree with the tasks the store holds.
    let held = store.tasks(1, None, 1_000_000).expect("tasks");
    let counters: HashMap<String, (i64, u64)> = store
        .counters(1)
        .expect("counters")
        .into_iter()
        .map(|(node, c)| (node, (c.now, c.total)))
        .collect();
    assert_eq!(counters["end"].0 as usize, held.len());
    assert_eq!(counters["start"], (0, held.len() as u64));
    assert!(store.ready().expect("ready").is_empty());
}
