//! Recovering tasks with the real binary: `task retry` runs the node a task failed in
//! again, `task goto` sends a task to any node, both recorded in its history; `task
//! modify` refuses a finished task unless `--force`; `run --until-idle --wait` waits for
//! the retries due within it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{Value, json};

use crate::support::{DataDir, http_server};

/// An API call with no `on_error`: a failure stops the task there, failed.
const FRAGILE: &str = r#"
process: fragile
params:
  base: { required: true }
nodes:
  start: { type: start, next: call }
  call:
    type: api_call
    url: "{{base}}/x"
    response: { n: "{{body.n}}" }
    next: done
  done: { type: final }
"#;

/// The same call retried after 300 ms on a 5xx.
const RETRIED: &str = r#"
process: retried
params:
  base: { required: true }
nodes:
  start: { type: start, next: call }
  call:
    type: api_call
    url: "{{base}}/x"
    response: { n: "{{body.n}}" }
    retry: { attempts: 3, backoff: 300ms, max: 300ms }
    next: done
  done: { type: final }
"#;

/// A server that answers 400 (not retried), then 500 for the next `fail_5xx` requests,
/// then 200 with the number of requests so far.
fn server(fail_400: u32, fail_5xx: u32) -> (String, Arc<AtomicU32>) {
    let hits = Arc::new(AtomicU32::new(0));
    let counter = hits.clone();
    let router = axum::Router::new().route(
        "/x",
        axum::routing::get(move || {
            let counter = counter.clone();
            async move {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let status = if n <= fail_400 {
                    axum::http::StatusCode::BAD_REQUEST
                } else if n <= fail_400 + fail_5xx {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::OK
                };
                (status, axum::Json(json!({"n": n})))
            }
        }),
    );
    (format!("http://{}", http_server(router)), hits)
}

fn clone(d: &DataDir, alias: &str, yaml: &str) {
    let file = d.path().join(format!("{alias}.yaml"));
    std::fs::write(&file, yaml).expect("write the process file");
    d.ok(&[
        "process",
        "clone",
        file.to_str().expect("utf-8 path"),
        "--alias",
        alias,
    ]);
}

fn task(d: &DataDir, process: &str, key: &str) -> Value {
    d.json(&["task", "show", process, key])
}

fn history(d: &DataDir, process: &str, key: &str) -> String {
    d.ok(&["task", "history", process, key])
}

#[test]
fn a_task_that_failed_without_on_error_is_retried_and_the_retry_is_in_its_history() {
    let (base, hits) = server(1, 0);
    let d = DataDir::new();
    clone(&d, "f", FRAGILE);
    d.ok(&["task", "add", "@f", "--ref", "t", &format!("base={base}")]);
    d.ok(&["run", "--until-idle"]);
    let t = task(&d, "@f", "t");
    assert_eq!(
        (t["node"].as_str(), t["status"].as_str()),
        (Some("call"), Some("failed")),
        "{t}"
    );
    let id = t["id"].as_u64().expect("id");

    // A modify of a failed task says so and changes nothing.
    let (code, stdout, stderr) = d.run(&["task", "modify", "@f", "t", "x=1"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert_eq!(
        stderr,
        format!(
            "error: task {id} has finished (failed, in `call`): a modify would change nothing it does; `task retry` or `task goto NODE` moves it again, or add --force to merge the data anyway\n"
        )
    );
    d.ok(&["run", "--until-idle"]);
    assert!(
        task(&d, "@f", "t")["data"].get("x").is_none(),
        "nothing merged"
    );

    // A retry of a task that did not fail is refused, naming what would work.
    let (code, _, stderr) = d.run(&["task", "goto", "@f", "t", "nowhere"]);
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        format!(
            "error: task {id} is failed in `call`: the process has no node `nowhere` (its nodes: start, call, done)\n"
        )
    );

    assert_eq!(
        d.ok(&["task", "retry", "@f", "t"]),
        format!("task {id} will run `call` again (the engine takes it at once)\n")
    );
    d.ok(&["run", "--until-idle"]);
    let t = task(&d, "@f", "t");
    assert_eq!(
        (t["node"].as_str(), t["status"].as_str()),
        (Some("done"), Some("done")),
        "{t}"
    );
    assert_eq!(t["data"]["n"], 2, "the second call answered");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert!(
        history(&d, "@f", "t").contains("cli retried `call`"),
        "{}",
        history(&d, "@f", "t")
    );

    // Done now: a retry is refused, a forced modify merges.
    let (code, _, stderr) = d.run(&["task", "retry", "@f", "t"]);
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        format!(
            "error: task {id} is done in `done`: only a task that failed in a node is retried; `task goto` moves any task\n"
        )
    );
    d.ok(&["task", "modify", "@f", "t", "--force", "note=checked"]);
    d.ok(&["run", "--until-idle"]);
    assert_eq!(task(&d, "@f", "t")["data"]["note"], "checked");
}

#[test]
fn goto_sends_a_finished_task_back_with_data_merged_first() {
    let (base, hits) = server(0, 0);
    let d = DataDir::new();
    clone(&d, "f", FRAGILE);
    d.ok(&["task", "add", "@f", "--ref", "t", "base=http://127.0.0.1:9"]);
    d.ok(&["run", "--until-idle"]);
    assert_eq!(task(&d, "@f", "t")["status"], "failed");
    // The address was wrong: fix it and run the call again in one go.
    let out = d.ok(&["task", "goto", "@f", "t", "call", &format!("base={base}")]);
    assert!(out.contains("goes from `call` to `call`"), "{out}");
    d.ok(&["run", "--until-idle"]);
    let t = task(&d, "@f", "t");
    assert_eq!(t["status"], "done", "{t}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    let h = history(&d, "@f", "t");
    assert!(h.contains("modified by cli: base"), "{h}");
    assert!(h.contains("cli sent the task to `call`"), "{h}");
    // Counters follow the task: one in `done`, none left in `call`.
    let shown = d.json(&["process", "show", "@f"]);
    let now = |node: &str| {
        shown["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|x| x["id"] == node))
            .map(|x| x["now"].clone())
    };
    assert_eq!(now("call"), Some(json!(0)), "{shown}");
    assert_eq!(now("done"), Some(json!(1)), "{shown}");
}

#[test]
fn run_until_idle_with_wait_runs_the_retries_due_within_it() {
    let (base, hits) = server(0, 1);
    let d = DataDir::new();
    clone(&d, "r", RETRIED);
    d.ok(&["task", "add", "@r", "--ref", "t", &format!("base={base}")]);
    // Without --wait: idle as soon as the retry is pending.
    d.ok(&["run", "--until-idle"]);
    assert_eq!(task(&d, "@r", "t")["status"], "waiting");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    let ran = d.json(&["run", "--until-idle", "--wait", "5s"]);
    assert!(ran["steps"].as_u64().unwrap_or(0) >= 1, "{ran}");
    assert_eq!(task(&d, "@r", "t")["status"], "done");
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    let (code, _, stderr) = d.run(&["run", "--wait", "1s"]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr, "error: --wait: goes with --until-idle\n");
}

/// docs/processes.md: a `task modify` is in the task's inbox until the engine's step
/// merges it; from then on `task show` and other processes' `{{conv[…].ref[…]}}` read
/// the new data. Here no engine runs between the modify and the first read, so the
/// reader sees the old value; once an engine ran, the new one.
#[test]
fn a_modify_is_read_by_conv_readers_once_the_engine_merged_it() {
    let d = DataDir::new();
    clone(
        &d,
        "holder",
        "process: holder\nparams:\n  n: { type: number }\nnodes:\n  start: { type: start, next: wait }\n  wait: { type: delay, for: 1h, next: done }\n  done: { type: final }\n",
    );
    clone(
        &d,
        "reader",
        "process: reader\nnodes:\n  start: { type: start, next: read }\n  read: { type: set_param, set: { got: \"{{conv[@holder].ref[main].n}}\" }, next: done }\n  done: { type: final }\n",
    );
    d.ok(&["task", "add", "@holder", "--ref", "main", "n:=1"]);
    d.ok(&["run", "--until-idle"]);
    d.ok(&["task", "modify", "@holder", "main", "n:=2"]);
    // Acknowledged, not merged yet: the committed data is still the old one.
    assert_eq!(task(&d, "@holder", "main")["data"]["n"], 1);
    d.ok(&["run", "--until-idle"]);
    assert_eq!(task(&d, "@holder", "main")["data"]["n"], 2);
    d.ok(&["task", "add", "@reader", "--ref", "r"]);
    d.ok(&["run", "--until-idle"]);
    let read = task(&d, "@reader", "r");
    assert_eq!(read["status"], "done", "{read}");
    assert_eq!(read["data"]["got"], json!(2), "the merged value: {read}");
}
