//! `queue`: N tasks wait in a `queue` node; N tasks of another process each take one
//! with `get_task`. Takes per second, against the time to fill the queue.
//!
//! The queue is filled and drained by one engine (one `Runtime`, as `conveyor serve`
//! keeps): its first take lists the queue from the store, and every later take finds
//! the oldest task on the engine's own list (`conveyor-runtime/src/queues.rs`). Every
//! queued task must be taken once and every taker must get one.

use std::sync::Arc;
use std::time::Instant;

use conveyor_runtime::{RunMode, Runtime, Settings, SystemClock};
use conveyor_store::Store;
use serde_json::{Map, Value};

use crate::report::{Figure, Report, Run};
use crate::sys::{self, progress};

const ORDERS: &str = r#"
process: orders
nodes:
  start: { type: start, next: waiting }
  waiting: { type: queue, next: shipped }
  shipped: { type: final }
"#;

const TAKER: &str = r#"
process: taker
nodes:
  start: { type: start, next: take }
  take: { type: get_task, process: "@orders", node: waiting, next: got, on_error: empty }
  got: { type: final }
  empty: { type: final, status: error }
"#;

pub fn run(tasks: u64) -> anyhow::Result<Report> {
    let threads = sys::tokio_runtime()?;
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = sys::open_store(dir.path())?;
    let runtime = Runtime::new(store.clone(), Arc::new(SystemClock), Settings::default());
    let orders = runtime.clone_process("orders.yaml", ORDERS, Some("orders"), Map::new())?;
    let taker = runtime.clone_process("taker.yaml", TAKER, Some("taker"), Map::new())?;
    let mut report = Report::new(
        "queue",
        format!("queue: {tasks} tasks wait in a queue node, then {tasks} get_task nodes take them"),
    );
    progress("queue", &format!("filling the queue with {tasks} tasks"));
    let started = Instant::now();
    for n in 0..tasks {
        let mut data = Map::new();
        data.insert("n".into(), Value::from(n));
        runtime.add_task("@orders", Some(&format!("o{n}")), data)?;
    }
    threads.block_on(runtime.run(RunMode::UntilIdle))?;
    let fill = started.elapsed().as_secs_f64();
    let count = |process: u64, node: &str| -> anyhow::Result<u64> {
        Ok(store
            .counters(process)?
            .into_iter()
            .find(|(n, _)| n == node)
            .map_or(0, |(_, c)| c.now.max(0) as u64))
    };
    anyhow::ensure!(
        count(orders.id, "waiting")? == tasks,
        "only {} of {tasks} tasks wait in the queue",
        count(orders.id, "waiting")?
    );
    progress("queue", &format!("{tasks} takers taking them"));
    let started = Instant::now();
    for n in 0..tasks {
        runtime.add_task("@taker", Some(&format!("t{n}")), Map::new())?;
    }
    threads.block_on(runtime.run(RunMode::UntilIdle))?;
    let drain = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        count(orders.id, "shipped")? == tasks && count(taker.id, "got")? == tasks,
        "{} of {tasks} queued tasks shipped, {} of {tasks} takers got one, {} found none",
        count(orders.id, "shipped")?,
        count(taker.id, "got")?,
        count(taker.id, "empty")?
    );
    // The takers run at once, so which of them takes the oldest is not fixed; each
    // must hold the data of a task that waited.
    let first = store
        .task_by_ref(taker.id, "t0")?
        .ok_or_else(|| anyhow::anyhow!("taker t0 is gone"))?;
    anyhow::ensure!(
        first.data["__queue_task_data__"]["n"]
            .as_u64()
            .is_some_and(|n| n < tasks),
        "taker t0 holds no queued task's data: {:?}",
        first.data
    );
    report.runs.push(Run {
        policy: "default",
        figures: vec![
            Figure::rate(
                "fill_per_sec",
                "filling the queue (create and run)",
                tasks as f64 / fill,
                "tasks/s",
            ),
            Figure::rate(
                "takes_per_sec",
                "draining it (create and run the takers)",
                tasks as f64 / drain,
                "takes/s",
            ),
            Figure::secs("drain_secs", "time to drain the queue", drain),
        ],
    });
    Ok(report)
}
