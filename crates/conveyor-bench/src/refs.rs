//! `refs`: reads of other processes' tasks, `{{conv[ID].ref[REF].x}}`, per second.
//!
//! Process A holds N tasks waiting in a delay, in groups of K: refs `r{G}_{J}` (group G,
//! J < K), with `x` = G × K + J. Each task of process B has one key, `g`, a group chosen at
//! random, and one `set_param` reads the whole group into one text value:
//! `{{conv[A].ref[r{{g}}_0].x}},{{conv[A].ref[r{{g}}_1].x}},…` — K reads whose result is
//! short, so B's own step (read it, commit it) stays small beside the reads. Reads per
//! second = B's tasks × K ÷ the time `run --until-idle` takes to move them; every 100th
//! task's text is checked. In the same run the store's own rate is measured:
//! `Store::task_by_ref` of random refs, then `.x` looked up, on one thread and on all.

use std::sync::Arc;
use std::time::Instant;

use conveyor_runtime::{ManualClock, RunMode, Runtime, Settings};
use conveyor_store::{Store, TaskStatus};
use serde_json::{Map, Value};

use crate::report::{Figure, Report, Run, Target};
use crate::sys::{self, Rng, progress};

const HOLDER: &str = r#"
process: holder
nodes:
  start: { type: start, next: hold }
  hold: { type: delay, for: 1d, next: done }
  done: { type: final }
"#;

/// Tasks created between two runs of the engine while filling A.
const CHUNK: u64 = 50_000;

fn reader(holder: u64, per_task: u32) -> String {
    let reads: Vec<String> = (0..per_task)
        .map(|j| format!("{{{{conv[{holder}].ref[r{{{{g}}}}_{j}].x}}}}"))
        .collect();
    format!(
        "process: reader\nnodes:\n  start: {{ type: start, next: read }}\n  read:\n    type: set_param\n    set:\n      got: \"{}\"\n    next: end\n  end: {{ type: final }}\n",
        reads.join(",")
    )
}

/// What a reader of group `g` must have read.
fn expected(g: u64, per_task: u32) -> String {
    let k = per_task as u64;
    (0..k)
        .map(|j| (g * k + j).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

pub fn run(refs: u64, reads: u64, per_task: u32, durability: bool) -> anyhow::Result<Report> {
    anyhow::ensure!(
        refs > 0 && per_task > 0,
        "refs and reads per task must be > 0"
    );
    let k = per_task as u64;
    let groups = refs.div_ceil(k);
    let refs = groups * k;
    let threads = sys::tokio_runtime()?;
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = crate::sys::open_store(dir.path())?;
    let clock = Arc::new(ManualClock::new(crate::timers::T0));
    let runtime = Runtime::new(store.clone(), clock.clone(), Settings::default());
    let holder = runtime
        .clone_process("holder.yaml", HOLDER, Some("holder"), Map::new())?
        .id;
    runtime.clone_process(
        "reader.yaml",
        &reader(holder, per_task),
        Some("reader"),
        Map::new(),
    )?;
    let mut report = Report::new(
        "refs",
        format!(
            "refs: {{{{conv[ID].ref[REF].x}}}} reads with {refs} refs, {per_task} reads per task"
        ),
    );

    progress("refs", &format!("creating {refs} tasks with refs"));
    let started = Instant::now();
    let mut made = 0;
    while made < refs {
        let end = (made + CHUNK).min(refs);
        for i in made..end {
            let mut data = Map::new();
            data.insert("x".into(), Value::from(i));
            data.insert("token".into(), Value::from(format!("tok-{i:012}-abcdef")));
            data.insert("expires".into(), Value::from(1_800_003_600 + i));
            runtime.add_task("@holder", Some(&format!("r{}_{}", i / k, i % k)), data)?;
        }
        let stats = threads.block_on(runtime.run(RunMode::UntilIdle))?;
        anyhow::ensure!(
            stats.failed_steps == 0,
            "{} steps failed",
            stats.failed_steps
        );
        made = end;
        progress("refs", &format!("{made} of {refs} ref tasks waiting"));
    }
    let fill_secs = started.elapsed().as_secs_f64();
    drop(runtime);

    // The store's own rate: one thread, then one per core, after one pass over every
    // ref (so neither side pays for pages still on their way from disk).
    progress("refs", "measuring Store::task_by_ref");
    for i in 0..refs {
        store.task_by_ref(holder, &format!("r{}_{}", i / k, i % k))?;
    }
    let raw_reads = reads.clamp(100_000, 2_000_000);
    let raw_one = raw_rate(store.as_ref(), holder, refs, k, raw_reads, 1)?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let raw_all = raw_rate(store.as_ref(), holder, refs, k, raw_reads, cores)?;
    report.common.extend([
        Figure::count("refs", "tasks with refs (process A)", refs),
        Figure::rate(
            "fill_tasks_per_sec",
            "create + park them",
            refs as f64 / fill_secs,
            "tasks/s",
        ),
        Figure::rate(
            "store_raw_reads_per_sec",
            "Store::task_by_ref, 1 thread",
            raw_one,
            "reads/s",
        ),
        Figure::rate(
            "store_raw_reads_per_sec_all_cores",
            "Store::task_by_ref, all cores",
            raw_all,
            "reads/s",
        ),
    ]);

    let policies: &[bool] = if durability { &[false, true] } else { &[false] };
    let tasks = reads.div_ceil(k);
    let mut rng = Rng::new(0x5EED);
    for &flush in policies {
        let policy = if flush { "flush_each_step" } else { "default" };
        let settings = Settings {
            flush_each_step: flush,
            ..Settings::default()
        };
        // A new runtime: its cache of tasks read by ref starts empty.
        let runtime = Runtime::new(store.clone(), clock.clone(), settings);
        // First with the cache cold (every ref's first read goes to the store), then
        // again on the same runtime with the cache warm, as in a long-running engine.
        let cold = read_pass(
            &threads, &store, &runtime, &mut rng, groups, tasks, per_task,
        )?;
        let secs = read_pass(
            &threads, &store, &runtime, &mut rng, groups, tasks, per_task,
        )?;
        let cold_reads = (tasks * k) as f64 / cold;
        let engine_reads = (tasks * k) as f64 / secs;
        report.runs.push(Run {
            policy,
            figures: vec![
                Figure::count("reader_tasks", "reader tasks (process B), per pass", tasks),
                Figure::rate(
                    "cold_reads_per_sec",
                    "reads through the engine, cache cold",
                    cold_reads,
                    "reads/s",
                ),
                Figure::rate(
                    "reads_per_sec",
                    "reads through the engine, cache warm",
                    engine_reads,
                    "reads/s",
                ),
                Figure::rate(
                    "reader_tasks_per_sec",
                    "reader tasks, cache warm",
                    tasks as f64 / secs,
                    "tasks/s",
                ),
                Figure::ratio(
                    "ratio_to_raw",
                    "engine ÷ raw (all cores)",
                    engine_reads / raw_all,
                ),
            ],
        });
    }
    report.add_targets(|value, suffix| {
        let rate = value("reads_per_sec");
        vec![Target::new(
            format!("≥ 500,000 reads/s, cache warm{suffix}"),
            format!("{} reads/s", crate::report::thousands(rate)),
            rate >= 500_000.0,
        )]
    });
    report.notes.push(
        "engine reads/s include each reader task's whole step (read the task, render, commit); \
         the engine keeps tasks read by ref in a cache refreshed by commits, so a ref's first \
         read goes to the store and later ones do not"
            .into(),
    );
    report.notes.push(format!(
        "cold: a new engine's first pass of {tasks} reader tasks, where every ref read for \
         the first time comes from the store (about {:.0} % of the pass's reads); warm: a \
         second pass of as many on the same engine",
        (groups.min(tasks) as f64 * k as f64) / (tasks * k) as f64 * 100.0
    ));
    Ok(report)
}

/// Creates `tasks` reader tasks, each of a random group, runs them until idle, checks
/// every hundredth read the right values, and returns the seconds the run took.
fn read_pass(
    threads: &tokio::runtime::Runtime,
    store: &Arc<dyn Store>,
    runtime: &Arc<Runtime>,
    rng: &mut Rng,
    groups: u64,
    tasks: u64,
    per_task: u32,
) -> anyhow::Result<f64> {
    progress(
        "refs",
        &format!("creating {tasks} reader tasks of {per_task} reads"),
    );
    let mut created = Vec::with_capacity(tasks as usize);
    for _ in 0..tasks {
        let g = rng.below(groups);
        let mut data = Map::new();
        data.insert("g".into(), Value::from(g));
        created.push((runtime.add_task("@reader", None, data)?.id, g));
    }
    store.flush()?;
    progress("refs", "running them until idle");
    let started = Instant::now();
    let stats = threads.block_on(runtime.run(RunMode::UntilIdle))?;
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        stats.failed_steps == 0,
        "{} steps failed",
        stats.failed_steps
    );
    // Every read found its value.
    for &(task_id, g) in created.iter().step_by((tasks as usize / 100).max(1)) {
        let task = store
            .task(task_id)?
            .ok_or_else(|| anyhow::anyhow!("task {task_id} is gone"))?;
        anyhow::ensure!(
            task.status == TaskStatus::Done,
            "reader task {task_id} is {:?}: {:?}",
            task.status,
            task.data
        );
        anyhow::ensure!(
            task.data.get("got").and_then(Value::as_str) == Some(&expected(g, per_task)),
            "reader task {task_id} read the wrong values for group {g}"
        );
    }
    Ok(secs)
}

/// `Store::task_by_ref` of random refs on `threads` threads, then `.x` looked up.
fn raw_rate(
    store: &dyn Store,
    process: u64,
    refs: u64,
    k: u64,
    reads: u64,
    threads: usize,
) -> anyhow::Result<f64> {
    let per_thread = reads / threads as u64;
    let started = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || -> anyhow::Result<()> {
                    let mut rng = Rng::new(0xABCD + t as u64);
                    for _ in 0..per_thread {
                        let i = rng.below(refs);
                        let reference = format!("r{}_{}", i / k, i % k);
                        let task = store
                            .task_by_ref(process, &reference)?
                            .ok_or_else(|| anyhow::anyhow!("no task with ref {reference}"))?;
                        anyhow::ensure!(
                            task.data.get("x").and_then(Value::as_u64) == Some(i),
                            "ref {reference} has the wrong x"
                        );
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("a reader thread panicked"))??;
        }
        anyhow::Ok(())
    })?;
    Ok((per_thread * threads as u64) as f64 / started.elapsed().as_secs_f64())
}
