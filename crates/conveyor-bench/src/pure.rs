//! `pure`: tasks through five nodes that neither wait nor call out.

use std::sync::Arc;
use std::time::Instant;

use conveyor_runtime::{RunMode, Runtime, Settings, SystemClock};
use conveyor_store::{
    Batch, EventKind, HistoryEvent, Op, SledStore, Store, TaskRecord, TaskStatus,
};
use serde_json::{Map, Value, json};

const PROCESS: &str = r#"
process: pure
nodes:
  start: { type: start, next: set_a }
  set_a: { type: set_param, set: { a: "$.math({{n}} * 2)" }, next: check }
  check:
    type: condition
    branches:
      - when: [ { param: a, fn: more, value: 10, cast: number } ]
        next: set_big
    else: set_big
  set_big: { type: set_param, set: { b: "done {{a}}" }, next: end }
  end: { type: final }
"#;

pub fn run(tasks: u64, as_json: bool) -> anyhow::Result<()> {
    let runtime_threads = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    // The store's raw rate: one transaction like a step's (task, history, counter, ready).
    let raw_dir = tempfile::tempdir()?;
    let raw = SledStore::open(raw_dir.path())?;
    let raw_count = tasks.min(100_000);
    let started = Instant::now();
    for id in 1..=raw_count {
        let mut batch = Batch::default();
        batch.push(Op::PutTask(Box::new(sample_task(id))));
        batch.push(Op::History {
            task: id,
            seq: 0,
            events: vec![HistoryEvent {
                at: 0,
                node: "end".into(),
                kind: EventKind::Created,
            }],
        });
        batch.push(Op::Count {
            process: 1,
            node: "end".into(),
            now: 1,
            total: 1,
        });
        batch.push(Op::ClearReady(id));
        raw.commit(&batch)?;
    }
    let raw_rate = raw_count as f64 / started.elapsed().as_secs_f64();
    drop(raw);

    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path())?);
    let runtime = Runtime::new(store.clone(), Arc::new(SystemClock), Settings::default());
    runtime.clone_process("pure.yaml", PROCESS, Some("pure"), Map::new())?;
    let started = Instant::now();
    for n in 0..tasks {
        let mut data = Map::new();
        data.insert("n".into(), Value::from(n));
        runtime.add_task("@pure", None, data)?;
    }
    let create_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let stats = runtime_threads.block_on(runtime.run(RunMode::UntilIdle))?;
    let run_secs = started.elapsed().as_secs_f64();
    let counters = store.counters(1)?;
    let finished = counters
        .iter()
        .find(|(n, _)| n == "end")
        .map(|(_, c)| c.now)
        .unwrap_or(0);
    anyhow::ensure!(
        finished as u64 == tasks,
        "only {finished} of {tasks} tasks finished"
    );
    let tasks_per_sec = tasks as f64 / run_secs;
    // Each task moves start → set_a → check → set_big → end: four transitions.
    let transitions_per_sec = tasks_per_sec * 4.0;
    let figures = json!({
        "scenario": "pure",
        "tasks": tasks,
        "steps": stats.steps,
        "create_tasks_per_sec": (tasks as f64 / create_secs).round(),
        "tasks_per_sec": tasks_per_sec.round(),
        "transitions_per_sec": transitions_per_sec.round(),
        "store_raw_tx_per_sec": raw_rate.round(),
        "ratio_to_raw": (tasks_per_sec / raw_rate * 1000.0).round() / 1000.0,
        "store_bytes": store.size_on_disk()?,
    });
    if as_json {
        println!("{figures}");
    } else {
        println!("pure: {tasks} tasks through 5 nodes");
        println!(
            "  create (add_task)       {:>10.0} tasks/s",
            tasks as f64 / create_secs
        );
        println!(
            "  run until idle          {tasks_per_sec:>10.0} tasks/s  ({transitions_per_sec:.0} transitions/s)"
        );
        println!("  store raw transactions  {raw_rate:>10.0} tx/s");
        println!(
            "  ratio engine / raw      {:>10.3}",
            tasks_per_sec / raw_rate
        );
    }
    Ok(())
}

fn sample_task(id: u64) -> TaskRecord {
    let mut data = Map::new();
    data.insert("n".into(), Value::from(id));
    data.insert("a".into(), Value::from(id * 2));
    data.insert("b".into(), Value::String(format!("done {}", id * 2)));
    TaskRecord {
        id,
        process: 1,
        reference: None,
        node: "end".into(),
        prev_node: Some("set_big".into()),
        status: TaskStatus::Done,
        data,
        created: 0,
        changed: 0,
        entered: 0,
        wake: None,
        attempt: 0,
        history_len: 5,
        caller: None,
        moves: 4,
    }
}
