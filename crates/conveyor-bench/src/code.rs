//! `code`: tasks through a `code` node running a 10-line script, against the same tasks
//! through a `set_param` in its place; the difference is what the script costs a task.
//!
//! Both processes are `start → X → end`; N tasks are created, then `run --until-idle`
//! moves them and the CPU of the run is divided by N. The script is compiled once per
//! process and engine thread (QuickJS runtimes and contexts are reused), so the figure is
//! the steady state: the task's data into QuickJS as JSON, the call, and back.

use std::sync::Arc;
use std::time::Instant;

use conveyor_runtime::{RunMode, Runtime, Settings, SystemClock};
use conveyor_store::Store;
use serde_json::{Map, Value};

use crate::report::{Figure, Report, Run};
use crate::sys::{self, progress};

const CODE: &str = r#"
process: code
nodes:
  start: { type: start, next: compute }
  compute:
    type: code
    src: |
      var items = data.items || [];
      var total = 0;
      for (var i = 0; i < items.length; i++) {
        total += items[i].price * items[i].qty;
      }
      data.total = Math.round(total * 100) / 100;
      data.count = items.length;
      data.label = "order " + data.n + ": " + data.count + " items";
      data.big = data.total > 100;
      data.checked_at = Date.now();
    next: end
  end: { type: final }
"#;

const BASELINE: &str = r#"
process: baseline
nodes:
  start: { type: start, next: compute }
  compute: { type: set_param, set: { label: "order {{n}}" }, next: end }
  end: { type: final }
"#;

pub fn run(tasks: u64) -> anyhow::Result<Report> {
    let threads = sys::tokio_runtime()?;
    let mut report = Report::new(
        "code",
        format!(
            "code: {tasks} tasks through start → code (a 10-line script) → final, against start → set_param → final"
        ),
    );
    let baseline = one_run(&threads, "baseline", BASELINE, tasks)?;
    let code = one_run(&threads, "code", CODE, tasks)?;
    let figures = vec![
        Figure::rate(
            "tasks_per_sec",
            "run until idle (code)",
            code.rate,
            "tasks/s",
        ),
        Figure::rate(
            "baseline_tasks_per_sec",
            "run until idle (set_param instead)",
            baseline.rate,
            "tasks/s",
        ),
        Figure::micros("cpu_us_per_task", "CPU per task (code)", code.cpu_us),
        Figure::micros(
            "baseline_cpu_us_per_task",
            "CPU per task (set_param instead)",
            baseline.cpu_us,
        ),
        Figure::micros(
            "code_node_cpu_us_per_task",
            "the code node's own CPU per task (difference)",
            code.cpu_us - baseline.cpu_us,
        ),
    ];
    report.runs.push(Run {
        policy: "default",
        figures,
    });
    report.notes.push(
        "target (issue 15): at most 50 µs per task for a 10-line script: compare the code node's own CPU per task"
            .into(),
    );
    Ok(report)
}

struct Measured {
    rate: f64,
    cpu_us: f64,
}

fn one_run(
    threads: &tokio::runtime::Runtime,
    name: &str,
    yaml: &str,
    tasks: u64,
) -> anyhow::Result<Measured> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = sys::open_store(dir.path())?;
    let runtime = Runtime::new(store.clone(), Arc::new(SystemClock), Settings::default());
    let process = runtime.clone_process(&format!("{name}.yaml"), yaml, Some(name), Map::new())?;
    progress("code", &format!("{name}: creating {tasks} tasks"));
    for n in 0..tasks {
        runtime.add_task(&format!("@{name}"), Some(&format!("t{n}")), task_data(n))?;
    }
    store.flush()?;
    progress("code", &format!("{name}: running them until idle"));
    let cpu_before = sys::cpu_seconds("self").unwrap_or(0.0);
    let started = Instant::now();
    let stats = threads.block_on(runtime.run(RunMode::UntilIdle))?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = sys::cpu_seconds("self").unwrap_or(0.0) - cpu_before;
    let done = store
        .counters(process.id)?
        .iter()
        .find(|(n, _)| n == "end")
        .map(|(_, c)| c.now.max(0) as u64)
        .unwrap_or(0);
    anyhow::ensure!(
        done == tasks && stats.failed_steps == 0,
        "{name}: only {done} of {tasks} tasks finished ({} failed steps)",
        stats.failed_steps
    );
    // The node ran: the first task carries what it set.
    let first = store
        .task_by_ref(process.id, "t0")?
        .ok_or_else(|| anyhow::anyhow!("{name}: task t0 is gone"))?;
    let key = if name == "code" { "total" } else { "label" };
    anyhow::ensure!(
        first.data.contains_key(key),
        "{name}: task t0 has no `{key}`: {:?}",
        first.data
    );
    Ok(Measured {
        rate: tasks as f64 / secs,
        cpu_us: cpu / tasks as f64 * 1e6,
    })
}

fn task_data(n: u64) -> Map<String, Value> {
    let mut data = Map::new();
    data.insert("n".into(), Value::from(n));
    let items: Vec<Value> = (0..3)
        .map(|i| serde_json::json!({ "price": 9.99 + i as f64, "qty": (n + i) % 5 + 1 }))
        .collect();
    data.insert("items".into(), Value::Array(items));
    data
}
