//! `postgres`: `pure` and a timer burst on one PostgreSQL with 1, 2 and 4 engines.
//!
//! A server of the benchmark's own is started (`initdb` in a temporary directory, WAL
//! synced to disk as in production), or `--url` names one. For each number of engines,
//! a fresh database gets N tasks (created in batches, not timed), then the engines —
//! each a [`Runtime`] with a store (pool, engine name, claims) of its own, all in this
//! process — run until every task is done:
//!
//! - **pure**: N tasks through start → set_param → condition → set_param → final
//!   (`pure.rs`'s process); the figure is tasks done per second of the run.
//! - **timers**: N tasks wait in a delay node until one moment (a burst), 2 s after the
//!   engines start; the figures are the time from that moment until all are done, and
//!   the rate it makes.
//!
//! The engines, the server and the benchmark share this machine's cores: a second
//! engine adds no core of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use conveyor_runtime::{Runtime, Settings, SystemClock};
use conveyor_store::{
    Batch, EventKind, HistoryEvent, Op, PgOptions, PgStore, Store, TaskRecord, TaskStatus,
    test_postgres,
};
use serde_json::{Map, Value};

use crate::report::{Figure, Report, Run, Target};
use crate::sys::{self, progress};

const TIMERS: &str = r#"
process: burst
settings: { max_tasks: 100000000 }
nodes:
  start: { type: start, next: wait }
  wait: { type: delay, until: "{{due}}", next: mark }
  mark: { type: set_param, set: { fired: "yes" }, next: end }
  end: { type: final }
"#;

pub fn run(tasks: u64, url: Option<String>, engines: &[usize]) -> anyhow::Result<Report> {
    let server = match &url {
        Some(_) => None,
        None => {
            progress("postgres", "starting a PostgreSQL server (fsync on)");
            Some(test_postgres::durable_server().map_err(|e| anyhow::anyhow!(e))?)
        }
    };
    let base = url.unwrap_or_else(|| server.as_ref().map(|s| s.url.clone()).unwrap_or_default());
    let threads = sys::tokio_runtime()?;
    let mut report = Report::new(
        "postgres",
        format!(
            "postgres: {tasks} tasks, pure and a timer burst, with 1, 2 and 4 engines on one PostgreSQL"
        ),
    );
    for &n in engines {
        let policy: &'static str = match n {
            1 => "1 engine",
            2 => "2 engines",
            4 => "4 engines",
            _ => "engines",
        };
        let db = database(server.as_ref(), &base, &format!("pure{n}"))?;
        progress("postgres", &format!("pure with {policy}"));
        let pure = pure(&threads, &db, tasks, n)?;
        let db = database(server.as_ref(), &base, &format!("timers{n}"))?;
        progress("postgres", &format!("timers with {policy}"));
        let (park_rate, burst_secs) = timers(&threads, &db, tasks, n)?;
        report.runs.push(Run {
            policy,
            figures: vec![
                Figure::count("engines", "engines", n as u64),
                Figure::rate("pure_tasks_per_sec", "pure: tasks done", pure, "tasks/s"),
                Figure::rate(
                    "timers_park_per_sec",
                    "timers: tasks parked in the delay",
                    park_rate,
                    "tasks/s",
                ),
                Figure::secs(
                    "timers_burst_secs",
                    "timers: burst due at once, all done after",
                    burst_secs,
                ),
                Figure::rate(
                    "timers_burst_per_sec",
                    "timers: burst fired",
                    tasks as f64 / burst_secs.max(1e-9),
                    "tasks/s",
                ),
            ],
        });
    }
    report.notes.clear();
    if let Some(one) = report.value("1 engine", "pure_tasks_per_sec") {
        report.targets.push(Target::new(
            "one engine ≥ 5,000 tasks/s on pure".into(),
            format!("{one:.0} tasks/s"),
            one >= 5_000.0,
        ));
    }
    if let (Some(one), Some(two)) = (
        report.value("1 engine", "pure_tasks_per_sec"),
        report.value("2 engines", "pure_tasks_per_sec"),
    ) {
        report.targets.push(Target::new(
            "2 engines ≥ 1.5 × one on pure".into(),
            format!("{:.2} ×", two / one.max(1e-9)),
            two >= 1.5 * one,
        ));
    }
    report.notes.push(
        "the engines run in this process, each with a store (pool, claims) of its own; the server \
         runs on the same machine and its cores: engines and database share them"
            .into(),
    );
    Ok(report)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn database(
    server: Option<&test_postgres::TestServer>,
    base: &str,
    name: &str,
) -> anyhow::Result<String> {
    match server {
        Some(server) => test_postgres::fresh_database(server, name).map_err(|e| anyhow::anyhow!(e)),
        // A server of the user's: each run gets a schema of its own instead.
        None => Ok(base.to_string()),
    }
}

fn open(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    Ok(Arc::new(PgStore::open(url, PgOptions::default())?))
}

/// Creates `tasks` tasks at the start of `process` in batches of 1,000 (as `add_task`
/// would write them, one transaction per batch).
fn create(
    store: &dyn Store,
    process: u64,
    start: &str,
    tasks: u64,
    due: Option<i64>,
) -> anyhow::Result<()> {
    let now = now_ms();
    let mut made = 0;
    while made < tasks {
        let mut batch = Batch::default();
        let end = (made + 1_000).min(tasks);
        for n in made..end {
            let id = store.next_task_id()?;
            let mut data = Map::new();
            data.insert("n".into(), Value::from(n));
            if let Some(due) = due {
                data.insert("due".into(), Value::from(due as f64 / 1000.0));
            }
            batch.push(Op::Count {
                process,
                node: start.into(),
                now: 1,
                total: 1,
            });
            batch.push(Op::History {
                task: id,
                seq: 0,
                events: vec![HistoryEvent {
                    at: now,
                    node: start.into(),
                    kind: EventKind::Created,
                }],
            });
            batch.push(Op::IndexTask { process, task: id });
            batch.push(Op::SetReady(id));
            batch.push(Op::PutTask(Box::new(TaskRecord {
                id,
                process,
                reference: None,
                node: start.into(),
                prev_node: None,
                status: TaskStatus::Ready,
                data,
                created: now,
                changed: now,
                entered: now,
                wake: None,
                attempt: 0,
                history_len: 1,
                caller: None,
                moves: 0,
                secret_keys: Vec::new(),
                created_by: None,
            })));
        }
        store.commit(&batch)?;
        made = end;
    }
    Ok(())
}

fn done(store: &dyn Store, process: u64, node: &str) -> anyhow::Result<i64> {
    Ok(store
        .counters(process)?
        .iter()
        .find(|(n, _)| n == node)
        .map_or(0, |(_, c)| c.now))
}

/// `n` engines on `url`, started together; stops them when `until` says so.
fn run_engines(
    threads: &tokio::runtime::Runtime,
    url: &str,
    n: usize,
    mut until: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let mut running = Vec::new();
    for _ in 0..n {
        let runtime = Runtime::new(open(url)?, Arc::new(SystemClock), Settings::default());
        running.push(sys::RunningEngine::start(threads, &runtime));
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while !until()? {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the engines did not finish in 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for engine in running {
        engine.stop(threads)?;
    }
    Ok(())
}

fn pure(threads: &tokio::runtime::Runtime, url: &str, tasks: u64, n: usize) -> anyhow::Result<f64> {
    let store = open(url)?;
    let admin = Runtime::new(store.clone(), Arc::new(SystemClock), Settings::default());
    let process =
        admin.clone_process("pure.yaml", crate::pure::PROCESS, Some("pure"), Map::new())?;
    create(store.as_ref(), process.id, "start", tasks, None)?;
    drop(admin);
    let started = Instant::now();
    run_engines(threads, url, n, || {
        Ok(done(store.as_ref(), process.id, "end")? as u64 >= tasks)
    })?;
    Ok(tasks as f64 / started.elapsed().as_secs_f64())
}

/// Returns (tasks parked per second, seconds from the burst's due time until all done).
fn timers(
    threads: &tokio::runtime::Runtime,
    url: &str,
    tasks: u64,
    n: usize,
) -> anyhow::Result<(f64, f64)> {
    let store = open(url)?;
    let admin = Runtime::new(store.clone(), Arc::new(SystemClock), Settings::default());
    let process = admin.clone_process("burst.yaml", TIMERS, Some("burst"), Map::new())?;
    // Due far enough ahead for the engines to park every task first.
    let lead = 2_000 + tasks as i64 / 2;
    let due = now_ms() + lead;
    create(store.as_ref(), process.id, "start", tasks, Some(due))?;
    drop(admin);
    let started = Instant::now();
    let mut parked_after = None;
    run_engines(threads, url, n, || {
        if parked_after.is_none() && done(store.as_ref(), process.id, "wait")? as u64 >= tasks {
            parked_after = Some(started.elapsed().as_secs_f64());
        }
        Ok(done(store.as_ref(), process.id, "end")? as u64 >= tasks)
    })?;
    let finished = now_ms();
    let park = parked_after.unwrap_or(f64::NAN);
    anyhow::ensure!(
        park.is_finite(),
        "the burst began before every task was parked: {tasks} tasks need more lead"
    );
    Ok((tasks as f64 / park, (finished - due).max(1) as f64 / 1000.0))
}
