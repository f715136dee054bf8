//! Retention (issue 18): finished tasks are removed when their `keep` is over, and a
//! long-lived task keeps a bounded history with a marker of what was dropped. Time is
//! moved by hand (manual clock).

use std::time::Duration;

use conveyor_runtime::TaskKey;
use conveyor_store::{EventKind, StoreKind, TaskStatus};
use serde_json::json;

use crate::engine::Engine;
use crate::support::DataDir;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

fn gone(e: &Engine, process: &str, key: &str) -> bool {
    e.runtime.find_task(process, &TaskKey(key.into())).is_err()
}

#[tokio::test]
async fn a_finished_task_is_removed_when_its_keep_is_over_and_its_ref_is_free_again() {
    let e = Engine::new();
    let p = e.clone_process(
        r#"
process: short
settings: { keep: 1h }
nodes:
  start: { type: start, next: done }
  done: { type: final }
"#,
        Some("short"),
    );
    let id = e.add("@short", Some("order-1"), json!({"n": 1}));
    e.idle().await;
    assert_eq!(e.task("@short", "order-1").status, TaskStatus::Done);
    assert_eq!(e.count(p, "done"), (1, 1));

    e.advance(Duration::from_secs(59 * 60)).await;
    assert!(!gone(&e, "@short", "order-1"), "kept for its hour");

    e.advance(Duration::from_secs(2 * 60)).await;
    assert!(gone(&e, "@short", "order-1"), "removed after its hour");
    assert!(e.runtime.store().task(id).expect("read").is_none());
    assert!(e.runtime.store().history(id).expect("read").is_empty());
    assert_eq!(e.count(p, "done"), (0, 1), "now drops, total stays");
    assert_eq!(e.runtime.metrics().tasks_removed(), 1);

    // The ref is free for a new task, which is not the old one.
    let again = e.add("@short", Some("order-1"), json!({"n": 2}));
    assert_ne!(again, id);
    e.idle().await;
    let task = e.task("@short", "order-1");
    assert_eq!((task.id, task.data["n"].as_i64()), (again, Some(2)));
    assert_eq!(e.count(p, "done"), (1, 2));
}

#[tokio::test]
async fn keep_0_removes_the_task_in_the_commit_that_finishes_it() {
    let e = Engine::new();
    let p = e.clone_process(
        r#"
process: zero
settings: { keep: forever }
nodes:
  start: { type: start, next: check }
  check:
    type: condition
    branches: [ { when: [ { param: ok, fn: eq, value: "yes" } ], next: done } ]
    else: failed
  done: { type: final, keep: 0 }
  failed: { type: final, status: error }
"#,
        Some("zero"),
    );
    let id = e.add("@zero", Some("a"), json!({"ok": "yes"}));
    e.add("@zero", Some("b"), json!({"ok": "no"}));
    e.idle().await;
    // The node's `keep: 0` wins over the process's `forever`.
    assert!(gone(&e, "@zero", "a"));
    assert!(e.runtime.store().history(id).expect("read").is_empty());
    assert_eq!(e.count(p, "done"), (0, 1));
    assert_eq!(e.count(p, "check"), (0, 2));
    // `forever` from the settings: still there after years.
    e.advance(800 * DAY).await;
    assert_eq!(e.task("@zero", "b").status, TaskStatus::Failed);
    assert_eq!(e.count(p, "failed"), (1, 1));
    // The ref is free at once.
    e.add("@zero", Some("a"), json!({"ok": "no"}));
    e.idle().await;
    assert_eq!(e.task("@zero", "a").node, "failed");
}

#[tokio::test]
async fn by_default_done_tasks_are_kept_7_days_and_failed_ones_30() {
    let e = Engine::new();
    let p = e.clone_process(
        r#"
process: defaults
nodes:
  start: { type: start, next: check }
  check:
    type: condition
    branches: [ { when: [ { param: ok, fn: eq, value: "yes" } ], next: done } ]
    else: failed
  done: { type: final }
  failed: { type: final, status: error }
"#,
        Some("defaults"),
    );
    e.add("@defaults", Some("good"), json!({"ok": "yes"}));
    e.add("@defaults", Some("bad"), json!({"ok": "no"}));
    e.idle().await;
    e.advance(6 * DAY).await;
    assert!(!gone(&e, "@defaults", "good"));
    e.advance(2 * DAY).await;
    assert!(gone(&e, "@defaults", "good"));
    assert!(!gone(&e, "@defaults", "bad"));
    e.advance(23 * DAY).await;
    assert!(gone(&e, "@defaults", "bad"));
    assert_eq!(e.count(p, "done"), (0, 1));
    assert_eq!(e.count(p, "failed"), (0, 1));
}

#[tokio::test]
async fn a_removal_survives_a_restart_and_a_removed_task_reads_as_never_existing() {
    let mut e = Engine::new();
    e.clone_process(
        r#"
process: holder
nodes:
  start: { type: start, next: done }
  done: { type: final, keep: 1h }
"#,
        Some("holder"),
    );
    e.clone_process(
        r#"
process: reader
settings: { keep: forever }
nodes:
  start: { type: start, next: read }
  read: { type: set_param, set: { got: "{{conv[@holder].ref[main].token}}" }, next: done, on_error: failed }
  done: { type: final }
  failed: { type: final, status: error }
"#,
        Some("reader"),
    );
    e.add("@holder", Some("main"), json!({"token": "T-1"}));
    e.idle().await;
    // Read once, so the engine's cache of referenced tasks holds it.
    e.add("@reader", Some("r1"), json!({}));
    e.idle().await;
    assert_eq!(e.task("@reader", "r1").data["got"], "T-1");

    // The removal timer is in the store: a restart does not lose it.
    e.restart();
    e.advance(2 * HOUR).await;
    assert!(gone(&e, "@holder", "main"));
    e.add("@reader", Some("r2"), json!({}));
    e.idle().await;
    let r = e.task("@reader", "r2");
    assert_eq!(r.node, "failed");
    assert_eq!(
        r.data["__conveyor_set_param_return_description__"],
        "`got`: cannot read conv[@holder].ref[main]: no task with ref `main` in process @holder"
    );
}

#[tokio::test]
async fn a_removed_task_leaves_the_cache_of_a_running_engine() {
    let e = Engine::new();
    e.clone_process(
        r#"
process: holder
nodes:
  start: { type: start, next: done }
  done: { type: final, keep: 1h }
"#,
        Some("holder"),
    );
    e.clone_process(
        r#"
process: reader
settings: { keep: forever }
nodes:
  start: { type: start, next: read }
  read: { type: set_param, set: { got: "{{conv[@holder].ref[main].token}}" }, next: done, on_error: failed }
  done: { type: final }
  failed: { type: final, status: error }
"#,
        Some("reader"),
    );
    e.add("@holder", Some("main"), json!({"token": "T-1"}));
    e.idle().await;
    e.add("@reader", Some("r1"), json!({}));
    e.idle().await;
    assert_eq!(e.task("@reader", "r1").data["got"], "T-1");
    e.advance(2 * HOUR).await;
    e.add("@reader", Some("r2"), json!({}));
    e.idle().await;
    let r = e.task("@reader", "r2");
    assert_eq!(
        r.data["__conveyor_set_param_return_description__"],
        "`got`: cannot read conv[@holder].ref[main]: no task with ref `main` in process @holder"
    );
}

const LOOP: &str = r#"
process: token
nodes:
  start: { type: start, next: wait }
  wait: { type: delay, for: 25m, next: refresh }
  refresh: { type: set_param, set: { refreshed: true }, next: wait }
"#;

async fn bounded_history_on(kind: StoreKind) {
    let e = Engine::with_store(kind);
    e.clone_process(LOOP, Some("token"));
    let id = e.add("@token", Some("main"), json!({}));
    e.idle().await;
    for _ in 0..1000 {
        e.advance(Duration::from_secs(25 * 60)).await;
    }
    let task = e.task("@token", "main");
    assert_eq!(task.status, TaskStatus::Waiting);
    // 1 created + 1 entered + 1 waiting, then 3 events a refresh.
    assert_eq!(task.history_len, 3 + 3 * 1000);
    let history = e.runtime.store().history(id).expect("history");
    // The first 10, one marker, the last 200 and at most one trim's slack (50) + a step.
    assert!(
        history.len() <= 10 + 1 + 200 + 50 + 3,
        "{} events kept",
        history.len()
    );
    assert!(history.len() > 200);
    assert_eq!(history[0].kind, EventKind::Created);
    let dropped = match &history[10].kind {
        EventKind::Dropped {
            count,
            keep_first,
            keep_last,
        } => {
            assert_eq!((*keep_first, *keep_last), (10, 200));
            *count
        }
        other => panic!("no marker after the first 10 events: {other:?}"),
    };
    // Every event is either kept or counted.
    assert_eq!(dropped + history.len() as u64 - 1, task.history_len);
    // The last event is the newest wait.
    assert!(matches!(
        history.last().map(|e| &e.kind),
        Some(EventKind::Waiting { .. })
    ));
}

#[tokio::test]
async fn a_token_task_refreshed_1000_times_keeps_a_bounded_history_with_a_marker_log() {
    bounded_history_on(StoreKind::Log).await;
}

#[tokio::test]
async fn a_token_task_refreshed_1000_times_keeps_a_bounded_history_with_a_marker_sled() {
    bounded_history_on(StoreKind::Sled).await;
}

#[tokio::test]
async fn history_by_age_drops_events_older_than_max_age() {
    let e = Engine::new();
    e.clone_process(
        r#"
process: aged
settings: { history: { keep_first: 2, keep_last: 100, max_age: 1d } }
nodes:
  start: { type: start, next: wait }
  wait: { type: delay, for: 1h, next: refresh }
  refresh: { type: set_param, set: { x: 1 }, next: wait }
"#,
        Some("aged"),
    );
    let id = e.add("@aged", Some("t"), json!({}));
    e.idle().await;
    // 3 events an hour: 72 a day, fewer than `keep_last`, so age is what bounds it.
    for _ in 0..24 * 5 {
        e.advance(HOUR).await;
    }
    let history = e.runtime.store().history(id).expect("history");
    let now = e.runtime.now();
    assert!(
        matches!(history[2].kind, EventKind::Dropped { .. }),
        "{:?}",
        history[2]
    );
    // Past the first two and the marker, nothing older than a day and a trim's slack
    // (a trim every 25 events: about 8 hours here).
    for event in &history[3..] {
        assert!(now - event.at <= 33 * 3_600_000, "{event:?}");
    }
    assert!(history.len() <= 3 + 72 + 25 + 3, "{}", history.len());
}

#[test]
fn store_stats_shows_tasks_live_and_finished_history_and_the_oldest_task() {
    let d = DataDir::new();
    let file = d.path().join("stats.yaml");
    std::fs::write(
        &file,
        r#"
process: stats
nodes:
  start: { type: start, next: check }
  check:
    type: condition
    branches: [ { when: [ { param: wait, fn: eq, value: "yes" } ], next: hold } ]
    else: done
  hold: { type: wait_callback, next: done }
  done: { type: final }
"#,
    )
    .expect("write");
    let file = file.to_str().expect("utf-8");
    d.ok(&["process", "clone", file, "--alias", "stats"]);
    d.ok(&["process", "clone", file, "--alias", "empty"]);
    d.ok(&["task", "add", "@stats", "--ref", "a", "wait=yes"]);
    d.ok(&["task", "add", "@stats", "--ref", "b", "wait=no"]);
    d.ok(&["task", "add", "@stats", "--ref", "c", "wait=no"]);
    d.ok(&["run", "--until-idle"]);
    let stats = d.json(&["store", "stats"]);
    let p = &stats["processes"][0];
    assert_eq!(p["alias"], "stats");
    assert_eq!(
        (p["live"].as_u64(), p["finished"].as_u64()),
        (Some(1), Some(2))
    );
    // a: created, entered check, entered hold, waiting; b and c: created, entered
    // check, entered done, finished.
    assert_eq!(p["history_events"].as_u64(), Some(4 + 4 + 4));
    assert_eq!(p["history_dropped"].as_u64(), Some(0));
    let first = d.json(&["task", "show", "@stats", "a"]);
    assert_eq!(p["oldest_task"], first["id"]);
    let empty = &stats["processes"][1];
    assert_eq!(
        (empty["live"].as_u64(), empty["finished"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(empty["oldest_task"].is_null());
    assert!(stats["bytes_on_disk"].as_u64().unwrap_or(0) > 0);

    let shown = d.ok(&["task", "show", "@stats", "b"]);
    assert!(shown.contains("status:  done (kept until "), "{shown}");
    let text = d.ok(&["store", "stats"]);
    assert!(text.contains("@stats"), "{text}");
    assert!(text.contains("store: "), "{text}");
    assert!(text.contains(&format!("task {}", first["id"])), "{text}");
}

#[tokio::test]
async fn task_history_shows_the_marker_of_dropped_events_and_metrics_the_figures() {
    let e = Engine::new();
    e.clone_process(
        r#"
process: token
settings: { history: { keep_first: 3, keep_last: 20 } }
nodes:
  start: { type: start, next: wait }
  wait: { type: delay, for: 25m, next: refresh }
  refresh: { type: set_param, set: { refreshed: true }, next: wait }
"#,
        Some("token"),
    );
    e.add("@token", Some("main"), json!({}));
    e.idle().await;
    for _ in 0..100 {
        e.advance(Duration::from_secs(25 * 60)).await;
    }
    let metrics = e.runtime.metrics_text().expect("metrics");
    assert!(
        metrics.contains("conveyor_process_tasks{process=\"1\",state=\"live\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("conveyor_process_history_events{process=\"1\"}"));
    assert!(metrics.contains("conveyor_process_oldest_task_age_seconds{process=\"1\"} 150000"));
    assert!(metrics.contains("conveyor_store_bytes "));
    let dir = e.close();
    let d = DataDir { dir };
    let text = d.ok(&["task", "history", "@token", "main"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[3].contains("events dropped (history keeps the first 3 and the last 20)"),
        "{text}"
    );
    assert!(lines.len() <= 3 + 1 + 20 + 8 + 3, "{text}");
}

/// The bytes of the files of a sled store in a data dir.
fn sled_files_size(data: &std::path::Path) -> u64 {
    fn walk(dir: &std::path::Path) -> u64 {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| match e.metadata() {
                        Ok(m) if m.is_dir() => walk(&e.path()),
                        Ok(m) => m.len(),
                        Err(_) => 0,
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(&data.join("store"))
}

/// A sled store gives the space of removed tasks back while `conveyor serve` runs (a
/// small floor and no interval between looks, so that a test-sized store qualifies):
/// the files shrink, the engine says so in its log, and the engine goes on. (The tasks
/// wait a second first: a task that ran straight through to a `keep: 0` end at the door
/// would be created and removed in one commit, leaving nothing to give back.)
#[test]
fn a_running_engine_on_sled_gives_the_space_of_removed_tasks_back() {
    use crate::http_api::{Server, call, now_secs};
    let data = DataDir::new();
    let file = data.path().join("p.yaml");
    std::fs::write(
        &file,
        "process: short\nnodes:\n  start: { type: start, next: wait }\n  wait: { type: delay, for: 1s, next: done }\n  done: { type: final, keep: 0 }\n",
    )
    .expect("write");
    let path = file.to_str().expect("utf-8");
    data.ok(&[
        "--store-kind",
        "sled",
        "process",
        "clone",
        path,
        "--alias",
        "short",
    ]);
    assert!(data.path().join("store").exists(), "a sled store");
    let key = data.json(&["api-key", "create", "tests"]);
    let login = key["login"].as_u64().expect("login");
    let secret = key["secret"].as_str().expect("secret").to_string();
    let server = Server::start_with(
        data,
        &[
            ("CONVEYOR_SLED_RECLAIM_FLOOR_MB", "1"),
            ("CONVEYOR_SLED_RECLAIM_EVERY_S", "0"),
            ("CONVEYOR_LOG", "conveyor_store=info,warn"),
        ],
    );
    let body_text = "x".repeat(4_000);
    let mut peak = 0;
    for round in 0..40 {
        let ops: Vec<_> = (0..100)
            .map(|i| {
                json!({"type": "create", "obj": "task", "obj_alias": "short",
                            "ref": format!("t{round}-{i}"), "data": {"body": body_text}})
            })
            .collect();
        let body = json!({ "ops": ops }).to_string();
        let (status, reply) = call(&server.base, login, &secret, now_secs(), &body);
        assert_eq!(status, 200, "{reply}");
        peak = peak.max(sled_files_size(server.data.path()));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let size = sled_files_size(server.data.path());
        let logged = server
            .log
            .lock()
            .map(|l| l.contains("gave the space of removed tasks back"))
            .unwrap_or(false);
        if logged && size * 4 < peak {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {size} bytes of a peak of {peak} after 120 s (logged: {logged})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // /metrics says so.
    let metrics = reqwest::blocking::Client::new()
        .get(format!("{}/metrics", server.base))
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    let rewrites = metrics
        .lines()
        .find_map(|l| l.strip_prefix("conveyor_store_rewrites_total "))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(rewrites.is_some_and(|n| n >= 1), "{metrics}");
    assert!(metrics.contains("conveyor_store_rewrite_pause_seconds_max"));
    // The engine goes on on the rewritten store: a new task runs, its ref is free again.
    let body = json!({"ops": [{"type": "create", "obj": "task", "obj_alias": "short",
                               "ref": "t0-0", "data": {}}]})
    .to_string();
    let (status, reply) = call(&server.base, login, &secret, now_secs(), &body);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["ops"][0]["proc"], "ok", "{reply}");
}
