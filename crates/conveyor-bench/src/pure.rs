//! `pure`: tasks through five nodes that neither wait nor call out.
//!
//! Throughput: N tasks are created first (`add_task`, one transaction each), then
//! `run --until-idle` moves them all. Latency: then, with the engine running, tasks are
//! offered at a tenth and at half of the rate it can sustain creating and moving them
//! (1 ÷ (1/create rate + 1/run rate)); a task's latency is the
//! time from the start of its `add_task` to the engine's acknowledgement of its step (its
//! batch committed, and flushed under `flush_each_step`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use conveyor_runtime::{RunMode, Runtime, Settings, SystemClock};
use conveyor_store::{Batch, EventKind, HistoryEvent, Op, Store, TaskRecord, TaskStatus};
use serde_json::{Map, Value};

use crate::report::{self, Figure, Report, Run, Target};
use crate::sys::{self, progress};

pub(crate) const PROCESS: &str = r#"
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

/// Offered loads of the latency phases (shares of the measured throughput), with the
/// JSON keys and labels of their figures.
const LOADS: [(f64, [&str; 4]); 2] = [
    (
        0.1,
        [
            "latency_light_offered_per_sec",
            "latency_light_p50_ms",
            "latency_light_p99_ms",
            "latency at 10 % load: offered",
        ],
    ),
    (
        0.5,
        [
            "latency_half_offered_per_sec",
            "latency_half_p50_ms",
            "latency_half_p99_ms",
            "latency at 50 % load: offered",
        ],
    ),
];

pub fn run(tasks: u64, durability: bool) -> anyhow::Result<Report> {
    let threads = sys::tokio_runtime()?;
    let mut report = Report::new(
        "pure",
        format!("pure: {tasks} tasks through start → set_param → condition → set_param → final"),
    );
    progress("pure", "measuring the store's raw transaction rate");
    let raw = raw_rate(tasks.min(100_000), false)?;
    report.common.push(Figure::rate(
        "store_raw_tx_per_sec",
        "store raw transactions",
        raw,
        "tx/s",
    ));
    let raw_flushed = if durability {
        progress(
            "pure",
            "measuring the store's raw rate, flushing each transaction",
        );
        let rate = raw_rate(2_000, true)?;
        report.common.push(Figure::rate(
            "store_raw_flushed_tx_per_sec",
            "store raw tx, each flushed",
            rate,
            "tx/s",
        ));
        Some(rate)
    } else {
        None
    };
    let policies: &[bool] = if durability { &[false, true] } else { &[false] };
    for &flush in policies {
        let figures = one_run(&threads, tasks, flush, raw, raw_flushed)?;
        report.runs.push(Run {
            policy: if flush { "flush_each_step" } else { "default" },
            figures,
        });
    }
    // The floors the issues set: 30,000 tasks/s on sled, the default (the design card's
    // issue), 50,000 on the log store, the opt-in for throughput.
    let floor = match sys::store_options().kind {
        conveyor_store::StoreKind::Sled => 30_000.0,
        conveyor_store::StoreKind::Log => 50_000.0,
    };
    report.add_targets(|value, suffix| {
        let rate = value("tasks_per_sec");
        vec![Target::new(
            format!(
                "run until idle ≥ {} tasks/s{suffix}",
                report::thousands(floor)
            ),
            format!("{} tasks/s", report::thousands(rate)),
            rate >= floor,
        )]
    });
    report.notes.push(
        "latency: from add_task to the engine acknowledging the task's commit, at an offered \
         load of 10 % and 50 % of the sustained rate (the k-th acknowledged step is matched to the \
         k-th task added; each task is one step)"
            .into(),
    );
    Ok(report)
}

fn one_run(
    threads: &tokio::runtime::Runtime,
    tasks: u64,
    flush: bool,
    raw: f64,
    raw_flushed: Option<f64>,
) -> anyhow::Result<Vec<Figure>> {
    let policy = if flush { "flush_each_step" } else { "default" };
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = crate::sys::open_store(dir.path())?;
    let settings = Settings {
        flush_each_step: flush,
        ..Settings::default()
    };
    let runtime = Runtime::new(store.clone(), Arc::new(SystemClock), settings);
    let process = runtime.clone_process("pure.yaml", PROCESS, Some("pure"), Map::new())?;
    progress("pure", &format!("{policy}: creating {tasks} tasks"));
    let started = Instant::now();
    for n in 0..tasks {
        runtime.add_task("@pure", None, task_data(n))?;
    }
    let create_secs = started.elapsed().as_secs_f64();
    // What creating the tasks left to write is written now, not during the run.
    store.flush()?;
    progress("pure", &format!("{policy}: running them until idle"));
    let threads_before = sys::thread_cpu();
    let cpu_before = sys::cpu_seconds("self").unwrap_or(0.0);
    let commits_before = runtime.commit_stats();
    let started = Instant::now();
    let stats = threads.block_on(runtime.run(RunMode::UntilIdle))?;
    let run_secs = started.elapsed().as_secs_f64();
    let commits_after = runtime.commit_stats();
    let group_size = (commits_after.1 - commits_before.1) as f64
        / (commits_after.0 - commits_before.0).max(1) as f64;
    let cpu = sys::cpu_seconds("self").unwrap_or(0.0) - cpu_before;
    let split = sys::cpu_split(&threads_before, &sys::thread_cpu(), cpu);
    let per_task = |seconds: f64| seconds / tasks as f64 * 1e6;
    let done = finished(store.as_ref(), process.id)?;
    anyhow::ensure!(
        done == tasks && stats.failed_steps == 0,
        "only {done} of {tasks} tasks finished ({} failed steps)",
        stats.failed_steps
    );
    let tasks_per_sec = tasks as f64 / run_secs;

    // While tasks arrive, the same machine creates and moves them: what it can sustain is
    // both together.
    let create_per_sec = tasks as f64 / create_secs;
    let sustained = 1.0 / (1.0 / create_per_sec + 1.0 / tasks_per_sec);
    // Latency at a tenth and at half of that, each phase about 2 s (0.5 s for small N).
    let phase_secs = (tasks as f64 / 50_000.0).clamp(0.5, 2.0);
    let mut latency_figures = Vec::new();
    let mut offered_total = 0;
    for (load, [offered_key, p50_key, p99_key, label]) in LOADS {
        let offered = (sustained * load).max(10.0);
        let count = ((offered * phase_secs) as u64).max(200);
        progress(
            "pure",
            &format!("{policy}: latency of {count} tasks offered at {offered:.0} tasks/s"),
        );
        let mut latencies = latency(threads, &runtime, count, offered)?;
        offered_total += count;
        sys::sort(&mut latencies);
        latency_figures.extend([
            Figure::rate(offered_key, label, offered, "tasks/s"),
            Figure::millis(p50_key, "  p50", sys::quantile(&latencies, 0.5)),
            Figure::millis(p99_key, "  p99", sys::quantile(&latencies, 0.99)),
        ]);
    }
    anyhow::ensure!(
        finished(store.as_ref(), process.id)? == tasks + offered_total,
        "not every task of the latency phases finished"
    );

    let mut figures = vec![
        Figure::rate(
            "create_tasks_per_sec",
            "create (add_task)",
            tasks as f64 / create_secs,
            "tasks/s",
        ),
        Figure::rate("tasks_per_sec", "run until idle", tasks_per_sec, "tasks/s"),
        Figure::rate(
            "sustained_tasks_per_sec",
            "create and run (1 ÷ sum of 1/rates)",
            sustained,
            "tasks/s",
        ),
        Figure::ratio(
            "steps_per_commit",
            "steps per store transaction (group size)",
            group_size,
        ),
        // start → set_a → check → set_big → end: four transitions a task.
        Figure::rate(
            "transitions_per_sec",
            "node transitions",
            tasks_per_sec * 4.0,
            "/s",
        ),
        Figure::ratio(
            "ratio_to_raw",
            "engine tasks/s ÷ raw tx/s",
            tasks_per_sec / raw,
        ),
        Figure::micros("cpu_us_per_task", "CPU per task (run)", per_task(cpu)),
        Figure::micros(
            "cpu_workers_us_per_task",
            "  of which: tokio workers (steps)",
            per_task(split.workers),
        ),
        Figure::micros(
            "cpu_committer_us_per_task",
            "  of which: committer (store commits)",
            per_task(split.committer),
        ),
        Figure::micros(
            "cpu_store_us_per_task",
            "  of which: the store's threads (sled's I/O, log flusher)",
            per_task(split.store),
        ),
        Figure::micros(
            "cpu_main_us_per_task",
            "  of which: engine loop (main thread)",
            per_task(split.main),
        ),
        Figure::micros(
            "cpu_other_us_per_task",
            "  of which: threads that came and went",
            per_task(split.other),
        ),
    ];
    if let Some(raw_flushed) = raw_flushed {
        figures.push(Figure::ratio(
            "ratio_to_raw_flushed",
            "engine ÷ raw flushed tx/s",
            tasks_per_sec / raw_flushed,
        ));
    }
    figures.extend(latency_figures);
    figures.push(Figure::bytes(
        "store_bytes",
        "store size on disk",
        store.size_on_disk()?,
    ));
    Ok(figures)
}

fn task_data(n: u64) -> Map<String, Value> {
    let mut data = Map::new();
    data.insert("n".into(), Value::from(n));
    data
}

/// Tasks in the final node of a process.
fn finished(store: &dyn Store, process: u64) -> anyhow::Result<u64> {
    Ok(store
        .counters(process)?
        .iter()
        .find(|(n, _)| n == "end")
        .map(|(_, c)| c.now.max(0) as u64)
        .unwrap_or(0))
}

/// Offers `count` tasks at `per_sec` to a running engine; returns each one's latency in ms.
fn latency(
    threads: &tokio::runtime::Runtime,
    runtime: &Arc<Runtime>,
    count: u64,
    per_sec: f64,
) -> anyhow::Result<Vec<f64>> {
    let engine = sys::RunningEngine::start(threads, runtime);
    let base = runtime.metrics().steps();
    let mut added: Vec<Instant> = Vec::with_capacity(count as usize);
    let mut acknowledged: Vec<Instant> = Vec::with_capacity(count as usize);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(count as f64 / per_sec * 4.0 + 30.0);
    let mut failure = None;
    while (acknowledged.len() as u64) < count {
        let now = Instant::now();
        if now > deadline {
            failure = Some(anyhow::anyhow!(
                "the latency phase did not finish: {} of {count} acknowledged",
                acknowledged.len()
            ));
            break;
        }
        let due = ((now - started).as_secs_f64() * per_sec).ceil() as u64;
        while (added.len() as u64) < due.min(count) {
            let at = Instant::now();
            if let Err(e) = runtime.add_task("@pure", None, task_data(added.len() as u64)) {
                failure = Some(e.into());
                break;
            }
            added.push(at);
        }
        if failure.is_some() {
            break;
        }
        let done = runtime.metrics().steps().saturating_sub(base) as usize;
        let now = Instant::now();
        while acknowledged.len() < done.min(added.len()) {
            acknowledged.push(now);
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    let stats = engine.stop(threads)?;
    if let Some(e) = failure {
        return Err(e);
    }
    anyhow::ensure!(
        stats.failed_steps == 0,
        "{} steps failed",
        stats.failed_steps
    );
    Ok(added
        .iter()
        .zip(&acknowledged)
        .map(|(a, b)| b.saturating_duration_since(*a).as_secs_f64() * 1000.0)
        .collect())
}

/// The store's raw rate: transactions like a step's commit (task record, history event,
/// counter, ready entry), in a fresh store; with `flush`, each one flushed to disk.
pub fn raw_rate(count: u64, flush: bool) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let raw = crate::sys::open_store(dir.path())?;
    let started = Instant::now();
    let mut done = 0;
    for id in 1..=count {
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
        if flush {
            raw.flush()?;
        }
        done += 1;
        // Flushed transactions are slow: a few seconds tell the rate.
        if flush && started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
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
        secret_keys: Vec::new(),
        created_by: None,
    }
}
