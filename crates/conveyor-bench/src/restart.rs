//! `restart`: with many tasks waiting in the store, the time from starting a new process
//! until its engine has completed a new task.
//!
//! The new process is this binary's hidden `restart-probe` command: it opens the store,
//! starts the engine, adds a task to a short process, runs until idle and prints its
//! timings. The time is measured here, from spawning it to that line. The store's
//! files were just written, so the operating system's page cache is warm.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use conveyor_runtime::{ManualClock, RunMode, Runtime, Settings};
use conveyor_store::{Store, TaskStatus};
use serde_json::{Map, Value, json};

use crate::report::{Figure, Report, Run, Target};
use crate::sys::{self, progress};
use crate::timers::Parked;

pub fn run(parked: &Parked, durability: bool) -> anyhow::Result<Report> {
    let mut report = Report::new(
        "restart",
        format!(
            "restart: a new process opens a store where {} tasks wait, and completes a new task",
            parked.tasks
        ),
    );
    report.common.extend([
        Figure::count("waiting_tasks", "tasks waiting", parked.tasks),
        Figure::bytes("store_bytes", "store size on disk", parked.store_bytes),
    ]);
    // The engine that filled the store stopped the way `conveyor serve` does: a log store
    // wrote its snapshot as the engine stopped; a sled store is checkpointed below
    // (`conveyor_store::checkpoint`: sled writes its snapshot only while opening). A crash
    // leaves neither, and the next start replays the log instead: a copy taken before the
    // checkpoint (without the log store's snapshot) stands for it.
    progress("restart", "copying the store as a crash would leave it");
    let crashed = tempfile::tempdir()?;
    copy_dir(parked.dir.path(), crashed.path())?;
    // A log store wrote a snapshot as its engine stopped; a crash would leave the last
    // periodic one (at most 256 MiB of log ago) instead. Without any snapshot the whole
    // log is replayed: the worst a crash can do, and what this probe measures.
    let snapshot = conveyor_store::LogStore::dir_in(crashed.path()).join("snapshot");
    if snapshot.exists() {
        std::fs::remove_file(snapshot)?;
    }
    progress(
        "restart",
        "checkpointing the store, as a clean shutdown does",
    );
    let started = Instant::now();
    conveyor_store::checkpoint(parked.dir.path(), sys::store_options())?;
    report.common.push(Figure::millis(
        "checkpoint_ms",
        "checkpoint at the writer's shutdown",
        started.elapsed().as_secs_f64() * 1000.0,
    ));
    let mut probes = vec![
        ("default", parked.dir.path(), false),
        ("after_crash", crashed.path(), false),
    ];
    if durability {
        probes.push(("flush_each_step", parked.dir.path(), true));
    }
    for (policy, data, flush) in probes {
        progress("restart", &format!("{policy}: starting a new process"));
        let started = Instant::now();
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("restart-probe")
            .arg("--data")
            .arg(data)
            .args(["--now-ms", &parked.now.to_string()])
            .stdout(Stdio::piped());
        if flush {
            command.arg("--flush");
        }
        let mut child = command.spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout from the probe"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let completed = started.elapsed().as_secs_f64() * 1000.0;
        let status = child.wait()?;
        let exited = started.elapsed().as_secs_f64() * 1000.0;
        anyhow::ensure!(status.success(), "the probe failed ({status})");
        let probe: Value = serde_json::from_str(line.trim())
            .map_err(|e| anyhow::anyhow!("the probe said {line:?}: {e}"))?;
        let field = |key: &str| probe.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN);
        anyhow::ensure!(
            field("waiting") as u64 == parked.tasks,
            "the new process sees {} waiting tasks, not {}",
            field("waiting"),
            parked.tasks
        );
        report.runs.push(Run {
            policy,
            figures: vec![
                Figure::millis(
                    "start_to_done_ms",
                    "process start → new task done",
                    completed,
                ),
                Figure::millis("open_ms", "  of which: open the store", field("open_ms")),
                Figure::millis(
                    "engine_ms",
                    "  of which: add + run until idle",
                    field("engine_ms"),
                ),
                Figure::millis("exit_ms", "process start → exited", exited),
                Figure::bytes(
                    "probe_peak_rss_bytes",
                    "new process's peak RSS",
                    field("peak_rss_bytes") as u64,
                ),
            ],
        });
    }
    report.add_targets(|value, suffix| {
        // The target is for a start after a clean shutdown; after a crash sled 0.34
        // replays its log (shown, not judged).
        let ms = value("start_to_done_ms");
        vec![Target::new(
            format!("new task done ≤ 2 s after process start{suffix}"),
            format!("{ms:.0} ms"),
            ms <= 2000.0,
        )]
    });
    report.notes.push(
        "default: the first start after the engine that wrote the store stopped cleanly (and \
         checkpointed it, as `conveyor serve` does); after_crash: the first start on a copy \
         of the store taken before that checkpoint, as a crash leaves it (sled 0.34 replays \
         every log segment written since the store was last opened)"
            .into(),
    );
    if durability {
        report.notes.push(
            "flush_each_step: a third start, its one task flushed before it is acknowledged".into(),
        );
    }
    report
        .notes
        .push("warm page cache: the store's files were just written".into());
    Ok(report)
}

/// The hidden `restart-probe` command.
pub fn probe(data: &Path, now: i64, flush: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let threads = sys::tokio_runtime()?;
    let store: Arc<dyn Store> = crate::sys::open_store(data)?;
    let open_ms = started.elapsed().as_secs_f64() * 1000.0;
    let settings = Settings {
        flush_each_step: flush,
        ..Settings::default()
    };
    let engine_started = Instant::now();
    let runtime = Runtime::new(store.clone(), Arc::new(ManualClock::new(now)), settings);
    let task = runtime.add_task("@quick", None, Map::new())?;
    let stats = threads.block_on(runtime.run(RunMode::UntilIdle))?;
    let engine_ms = engine_started.elapsed().as_secs_f64() * 1000.0;
    let total_ms = started.elapsed().as_secs_f64() * 1000.0;
    let done = store.task(task.id)?.map(|t| t.status);
    anyhow::ensure!(
        done == Some(TaskStatus::Done) && stats.steps == 1,
        "the new task is {done:?} after {} steps",
        stats.steps
    );
    let park = runtime.resolve("@park")?.record.id;
    let waiting = store
        .counters(park)?
        .iter()
        .find(|(n, _)| n == "wait")
        .map(|(_, c)| c.now)
        .unwrap_or(0);
    println!(
        "{}",
        json!({
            "open_ms": open_ms,
            "engine_ms": engine_ms,
            "total_ms": total_ms,
            "waiting": waiting,
            "peak_rss_bytes": sys::peak_rss_bytes(),
        })
    );
    Ok(())
}

/// Copies a directory tree (the store's files).
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
            // On disk before the probes start: otherwise the first probe's reads compete
            // with the kernel writing back the gigabyte just copied.
            std::fs::File::open(&target)?.sync_all()?;
        }
    }
    Ok(())
}
