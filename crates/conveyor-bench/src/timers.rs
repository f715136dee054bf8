//! `timers`: a million tasks parked in a delay node, due over an hour; then a burst of
//! 10,000 due in the same second.
//!
//! The clock stands still while the tasks are created and parked (nothing sleeps), then
//! runs at real speed from 200 ms before the burst is due: the engine waits for the due
//! time itself and fires the burst. A task's timer lag is the engine clock when its step
//! began minus its due time — the engine's own `conveyor_timer_lag_seconds` — and since
//! the clock runs at real speed from the due time on, it is real milliseconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use conveyor_runtime::{RunMode, Runtime, Settings};
use conveyor_store::{Store, TaskStatus};
use serde_json::{Map, Value};
use tempfile::TempDir;

use crate::report::{Figure, Report, Run, Target};
use crate::sys::{self, BenchClock, progress};

/// The clock at setup: 2027-01-15 08:00 UTC.
pub const T0: i64 = 1_800_000_000_000;
/// The parked tasks fall due over the hour starting ten minutes after `T0`.
const SPREAD_START: i64 = T0 + 600_000;
const SPREAD: i64 = 3_600_000;
/// The bursts are due 30 s and 60 s after `T0`, before any parked task.
const BURST_AT: [i64; 2] = [T0 + 30_000, T0 + 60_000];
/// Each policy watches the parked tasks fall due at their own pace for this long (the
/// first window from `SPREAD_START`, the second right after it).
const STEADY: i64 = 5_000;
/// Tasks created between two runs of the engine while parking.
const CHUNK: u64 = 50_000;

const PARK: &str = r#"
process: park
settings: { max_tasks: 100000000 }
nodes:
  start: { type: start, next: wait }
  wait: { type: delay, until: "{{due}}", next: done }
  done: { type: final }
"#;

/// A short process for the restart scenario.
const QUICK: &str = r#"
process: quick
nodes:
  start: { type: start, next: mark }
  mark: { type: set_param, set: { marked: "yes" }, next: end }
  end: { type: final }
"#;

/// A store with many tasks waiting, closed, for `restart` to open.
pub struct Parked {
    pub dir: TempDir,
    pub tasks: u64,
    /// The stopped clock's time now (no timer is due at it).
    pub now: i64,
    pub store_bytes: u64,
}

/// How the tasks got parked.
struct Setup {
    store: Arc<dyn Store>,
    clock: Arc<BenchClock>,
    dir: TempDir,
    create_secs: f64,
    park_secs: f64,
    /// The parked tasks due in the steady windows: (task id, due ms).
    early: Vec<(u64, i64)>,
}

fn count(store: &dyn Store, process: u64, node: &str) -> anyhow::Result<u64> {
    Ok(store
        .counters(process)?
        .iter()
        .find(|(n, _)| n == node)
        .map(|(_, c)| c.now.max(0) as u64)
        .unwrap_or(0))
}

/// Creates `tasks` tasks due over an hour and runs them into their delay node.
fn setup(scenario: &str, threads: &tokio::runtime::Runtime, tasks: u64) -> anyhow::Result<Setup> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = crate::sys::open_store(dir.path())?;
    let clock = Arc::new(BenchClock::stopped(T0));
    let runtime = Runtime::new(store.clone(), clock.clone(), Settings::default());
    let park = runtime.clone_process("park.yaml", PARK, Some("park"), Map::new())?;
    runtime.clone_process("quick.yaml", QUICK, Some("quick"), Map::new())?;
    let (mut create_secs, mut park_secs) = (0.0, 0.0);
    let mut made = 0;
    let mut early = Vec::new();
    while made < tasks {
        let end = (made + CHUNK).min(tasks);
        let started = Instant::now();
        for i in made..end {
            let due = SPREAD_START + SPREAD * i as i64 / tasks as i64;
            let mut data = Map::new();
            data.insert("due".into(), Value::from(due as f64 / 1000.0));
            data.insert("order".into(), Value::from(i));
            data.insert("email".into(), Value::from(format!("user{i}@example.com")));
            let id = runtime.add_task("@park", None, data)?.id;
            if due < SPREAD_START + 2 * STEADY {
                early.push((id, due));
            }
        }
        create_secs += started.elapsed().as_secs_f64();
        let started = Instant::now();
        let stats = threads.block_on(runtime.run(RunMode::UntilIdle))?;
        park_secs += started.elapsed().as_secs_f64();
        anyhow::ensure!(
            stats.failed_steps == 0,
            "{} steps failed",
            stats.failed_steps
        );
        made = end;
        progress(
            scenario,
            &format!(
                "{made} of {tasks} tasks waiting ({:.0} s creating, {:.0} s parking, RSS {} MiB)",
                create_secs,
                park_secs,
                sys::rss_bytes() >> 20
            ),
        );
    }
    let waiting = count(store.as_ref(), park.id, "wait")?;
    anyhow::ensure!(
        waiting == tasks,
        "{waiting} of {tasks} tasks are waiting in the delay"
    );
    store.flush()?;
    Ok(Setup {
        store,
        clock,
        dir,
        create_secs,
        park_secs,
        early,
    })
}

/// Parks `tasks` tasks for `restart` alone (no burst).
pub fn prepare(tasks: u64) -> anyhow::Result<Parked> {
    let threads = sys::tokio_runtime()?;
    let setup = setup("restart", &threads, tasks)?;
    let store_bytes = setup.store.size_on_disk()?;
    let now = setup.clock.stop();
    drop(setup.store);
    Ok(Parked {
        dir: setup.dir,
        tasks,
        now,
        store_bytes,
    })
}

pub fn run(tasks: u64, burst: u64, durability: bool) -> anyhow::Result<(Report, Parked)> {
    let threads = sys::tokio_runtime()?;
    let mut report = Report::new(
        "timers",
        format!(
            "timers: {tasks} tasks waiting in a delay (due over an hour), then {burst} due in the same second"
        ),
    );
    progress("timers", &format!("parking {tasks} tasks"));
    let setup = setup("timers", &threads, tasks)?;
    let store = setup.store.clone();
    let clock = setup.clock.clone();
    let peak_setup = sys::peak_rss_bytes();
    let rss_waiting = sys::rss_bytes();
    let store_bytes = store.size_on_disk()?;
    report.common.extend([
        Figure::count("waiting_tasks", "tasks waiting", tasks),
        Figure::rate(
            "create_tasks_per_sec",
            "create (add_task)",
            tasks as f64 / setup.create_secs,
            "tasks/s",
        ),
        Figure::rate(
            "park_tasks_per_sec",
            "park (step into the delay)",
            tasks as f64 / setup.park_secs,
            "tasks/s",
        ),
        Figure::bytes("store_bytes", "store size on disk", store_bytes),
        Figure::bytes("rss_waiting_bytes", "RSS with all waiting", rss_waiting),
        Figure::bytes(
            "peak_rss_setup_bytes",
            "peak RSS incl. creating them",
            peak_setup,
        ),
    ]);
    let policies: &[bool] = if durability { &[false, true] } else { &[false] };
    for (i, &flush) in policies.iter().enumerate() {
        let policy = if flush { "flush_each_step" } else { "default" };
        let figures = fire_burst(&threads, &store, &clock, tasks, burst, BURST_AT[i], flush)?;
        report.runs.push(Run { policy, figures });
    }
    // After every burst: the steady windows come after the bursts' due times.
    for (i, &flush) in policies.iter().enumerate() {
        let window = SPREAD_START + i as i64 * STEADY;
        let figures = fire_steady(&threads, &store, &clock, &setup.early, window, flush)?;
        report.runs[i].figures.extend(figures);
    }
    let now = clock.stop();
    // The steady windows fired some of the parked tasks.
    let park = store
        .alias("park")?
        .ok_or_else(|| anyhow::anyhow!("the park process is gone"))?;
    let still_waiting = count(store.as_ref(), park, "wait")?;
    report.add_targets(|value, suffix| {
        let peak = value("peak_rss_bytes");
        let fire = value("burst_fire_ms");
        let lag = value("steady_lag_p99_ms");
        vec![
            Target::new(
                format!("peak RSS ≤ 512 MB while {tasks} wait{suffix}"),
                format!("{:.0} MiB", peak / 1048576.0),
                peak <= 512.0 * 1048576.0,
            ),
            Target::new(
                format!("burst of {burst} fired within 1 s{suffix}"),
                format!("{fire:.0} ms"),
                fire <= 1000.0,
            ),
            Target::new(
                format!("timer lag p99 ≤ 50 ms{suffix}"),
                format!("{lag:.0} ms"),
                lag <= 50.0,
            ),
        ]
    });
    report.notes.push(
        "peak RSS while waiting: VmHWM reset after parking, read after the burst fired \
         (the peak while creating the tasks is shown apart)"
            .into(),
    );
    report.notes.push(
        "fire time: from the due second to the last task of the burst committed; lag: the \
         engine clock when a task's step began minus its due time (the clock runs at real \
         speed from 200 ms before the due time)"
            .into(),
    );
    report.notes.push(format!(
        "timer lag (the target): the parked tasks falling due at their own pace (spread over \
         the hour, ~{:.0} a second) while the clock runs at real speed for {} s; the burst's \
         lag is its queue: 10,000 timers due in one millisecond wait for the steps before them",
        tasks as f64 / (SPREAD as f64 / 1000.0),
        STEADY / 1000
    ));
    drop(store);
    drop(setup.store);
    Ok((
        report,
        Parked {
            dir: setup.dir,
            tasks: still_waiting,
            now,
            store_bytes,
        },
    ))
}

fn fire_burst(
    threads: &tokio::runtime::Runtime,
    store: &Arc<dyn Store>,
    clock: &Arc<BenchClock>,
    tasks: u64,
    burst: u64,
    due: i64,
    flush: bool,
) -> anyhow::Result<Vec<Figure>> {
    let policy = if flush { "flush_each_step" } else { "default" };
    let settings = Settings {
        flush_each_step: flush,
        ..Settings::default()
    };
    let runtime = Runtime::new(store.clone(), clock.clone(), settings);
    let park = runtime.resolve("@park")?.record.id;
    let done_before = count(store.as_ref(), park, "done")?;
    progress("timers", &format!("{policy}: parking a burst of {burst}"));
    let mut ids = Vec::with_capacity(burst as usize);
    for i in 0..burst {
        let mut data = Map::new();
        data.insert("due".into(), Value::from(due / 1000));
        data.insert("order".into(), Value::from(i));
        data.insert("email".into(), Value::from(format!("burst{i}@example.com")));
        ids.push(runtime.add_task("@park", None, data)?.id);
    }
    threads.block_on(runtime.run(RunMode::UntilIdle))?;
    let waiting = count(store.as_ref(), park, "wait")?;
    anyhow::ensure!(
        waiting == tasks + burst,
        "{waiting} tasks wait, expected {}",
        tasks + burst
    );
    sys::reset_peak_rss();

    progress("timers", &format!("{policy}: firing the burst"));
    let engine = sys::RunningEngine::start(threads, &runtime);
    // Let the engine start and wait for the first timer; then the clock runs.
    std::thread::sleep(Duration::from_millis(100));
    let lead = 200;
    let due_at = clock.run_from(due - lead) + Duration::from_millis(lead as u64);
    let deadline = due_at + Duration::from_secs(300);
    let mut fired_at = None;
    while Instant::now() < deadline {
        if count(store.as_ref(), park, "done")? >= done_before + burst {
            fired_at = Some(Instant::now());
            break;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let stats = engine.stop(threads)?;
    clock.stop();
    let peak = sys::peak_rss_bytes();
    let Some(fired_at) = fired_at else {
        anyhow::bail!("the burst did not fire within 300 s");
    };
    anyhow::ensure!(
        stats.failed_steps == 0,
        "{} steps failed",
        stats.failed_steps
    );
    let done = count(store.as_ref(), park, "done")? - done_before;
    anyhow::ensure!(
        done == burst,
        "{done} tasks finished, expected only the burst of {burst}"
    );
    let mut lags = Vec::with_capacity(ids.len());
    for id in ids {
        let task = store
            .task(id)?
            .ok_or_else(|| anyhow::anyhow!("task {id} is gone"))?;
        anyhow::ensure!(
            task.status == TaskStatus::Done,
            "task {id} is {:?}",
            task.status
        );
        lags.push((task.changed - due) as f64);
    }
    sys::sort(&mut lags);
    let fire_ms = fired_at.saturating_duration_since(due_at).as_secs_f64() * 1000.0;
    Ok(vec![
        Figure::millis("burst_fire_ms", "time to fire the burst", fire_ms),
        Figure::rate(
            "burst_tasks_per_sec",
            "burst throughput",
            burst as f64 / (fire_ms / 1000.0),
            "tasks/s",
        ),
        Figure::millis("lag_p50_ms", "burst lag p50", sys::quantile(&lags, 0.5)),
        Figure::millis("lag_p99_ms", "burst lag p99", sys::quantile(&lags, 0.99)),
        Figure::millis("lag_max_ms", "burst lag max", sys::quantile(&lags, 1.0)),
        Figure::bytes("peak_rss_bytes", "peak RSS while waiting", peak),
    ])
}

/// Runs the clock at real speed through `[from, from + STEADY)` and measures how late the
/// parked tasks due in it fired.
fn fire_steady(
    threads: &tokio::runtime::Runtime,
    store: &Arc<dyn Store>,
    clock: &Arc<BenchClock>,
    early: &[(u64, i64)],
    from: i64,
    flush: bool,
) -> anyhow::Result<Vec<Figure>> {
    let policy = if flush { "flush_each_step" } else { "default" };
    let settings = Settings {
        flush_each_step: flush,
        ..Settings::default()
    };
    let runtime = Runtime::new(store.clone(), clock.clone(), settings);
    let park = runtime.resolve("@park")?.record.id;
    let done_before = count(store.as_ref(), park, "done")?;
    progress(
        "timers",
        &format!(
            "{policy}: {} s of timers falling due at their own pace",
            STEADY / 1000
        ),
    );
    let engine = sys::RunningEngine::start(threads, &runtime);
    std::thread::sleep(Duration::from_millis(100));
    let lead = 200;
    clock.run_from(from - lead);
    std::thread::sleep(Duration::from_millis((lead + STEADY) as u64));
    let end = clock.stop();
    // Every task due before the clock stopped must fire; wait for the last of them.
    let due: Vec<(u64, i64)> = early
        .iter()
        .copied()
        .filter(|&(_, at)| at >= from && at <= end)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(store.as_ref(), park, "done")? < done_before + due.len() as u64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the timers due in the steady window did not all fire"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let stats = engine.stop(threads)?;
    anyhow::ensure!(
        stats.failed_steps == 0,
        "{} steps failed",
        stats.failed_steps
    );
    let done = count(store.as_ref(), park, "done")? - done_before;
    anyhow::ensure!(
        done == due.len() as u64,
        "{done} tasks fired in the steady window, expected {}",
        due.len()
    );
    let mut lags = Vec::with_capacity(due.len());
    for &(id, at) in &due {
        let task = store
            .task(id)?
            .ok_or_else(|| anyhow::anyhow!("task {id} is gone"))?;
        anyhow::ensure!(
            task.status == TaskStatus::Done,
            "task {id} is {:?}",
            task.status
        );
        lags.push((task.changed - at) as f64);
    }
    sys::sort(&mut lags);
    Ok(vec![
        Figure::count(
            "steady_fired",
            "timers fired at their own pace",
            due.len() as u64,
        ),
        Figure::millis(
            "steady_lag_p50_ms",
            "timer lag p50",
            sys::quantile(&lags, 0.5),
        ),
        Figure::millis(
            "steady_lag_p99_ms",
            "timer lag p99",
            sys::quantile(&lags, 0.99),
        ),
        Figure::millis(
            "steady_lag_max_ms",
            "timer lag max",
            sys::quantile(&lags, 1.0),
        ),
    ])
}
