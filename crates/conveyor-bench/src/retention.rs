//! `retention`: does the store stop growing once retention has caught up?
//!
//! Token-like tasks loop through a 25-minute delay and a `set_param` for ever (their
//! history is trimmed to the first 10 and the last 200 events), and in each round a batch
//! of short tasks runs start → set_param → final (kept 7 days, the default). A round:
//! refresh the token tasks (100,000 refreshes over all rounds), create and finish the
//! short tasks, then move the clock 8 days so every short task of the round is removed.
//! The store's size and the RSS are read before and after each round's removal; the
//! target is that the size after removal stays flat from round to round.
//!
//! After the last round the engine stops and the store is compacted (`conveyor store
//! compact`): the size after it is what the file system gets back (sled keeps its files'
//! size while it runs and reuses the space inside them).
//!
//! The clock is a `ManualClock`: nothing sleeps. The engine runs all along; each move of
//! the clock is followed by a wait until the steps it made due have run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use conveyor_runtime::{ManualClock, RunMode, Runtime, Settings};
use conveyor_store::{PgOptions, PgStore, Store, test_postgres};
use serde_json::Map;

use crate::report::{Figure, Report, Run, Target};
use crate::sys::{self, RunningEngine, progress};

/// 2027-01-15 08:00 UTC.
const T0: i64 = 1_800_000_000_000;
const REFRESH: Duration = Duration::from_secs(25 * 60);
/// Past the default `keep` of a task that finished `done` (7 days).
const PAST_KEEP: Duration = Duration::from_secs(8 * 86_400);
/// Short tasks created between two waits for the engine.
const CHUNK: u64 = 20_000;
/// Names of the rounds (`--rounds` picks how many).
const ROUNDS: [&str; 10] = [
    "round 1", "round 2", "round 3", "round 4", "round 5", "round 6", "round 7", "round 8",
    "round 9", "round 10",
];

const TOKEN: &str = r#"
process: token
nodes:
  start: { type: start, next: wait }
  wait: { type: delay, for: 25m, next: refresh }
  refresh: { type: set_param, set: { access_token: "tok-{{$.random(1000000000)}}" }, next: wait }
"#;

const SHORT: &str = r#"
process: short
settings: { max_tasks: 100000000 }
nodes:
  start: { type: start, next: mark }
  mark: { type: set_param, set: { marked: "yes" }, next: end }
  end: { type: final }
"#;

/// Waits (polling, real time) until `done` says the engine has caught up.
fn wait_for(what: &str, mut done: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    let started = Instant::now();
    while !done()? {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(1800),
            "the engine did not catch up with {what} in 30 minutes"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

fn now_in(store: &dyn Store, process: u64, node: &str) -> anyhow::Result<i64> {
    Ok(store
        .counters(process)?
        .iter()
        .find(|(n, _)| n == node)
        .map(|(_, c)| c.now)
        .unwrap_or(0))
}

fn total_in(store: &dyn Store, process: u64, node: &str) -> anyhow::Result<u64> {
    Ok(store
        .counters(process)?
        .iter()
        .find(|(n, _)| n == node)
        .map(|(_, c)| c.total)
        .unwrap_or(0))
}

/// Where the rounds run: the chosen kind in a temporary data dir, or PostgreSQL.
enum Place {
    Local(tempfile::TempDir),
    Postgres {
        store: Arc<PgStore>,
        /// The server started for the run (none when `--url` named a database).
        _server: Option<test_postgres::TestServer>,
    },
}

impl Place {
    /// `postgres`: `None` for the chosen local kind; `Some(url)` for PostgreSQL (a
    /// server of its own when `url` is `None`).
    fn open(postgres: Option<Option<String>>) -> anyhow::Result<(Place, Arc<dyn Store>)> {
        match postgres {
            None => {
                let dir = tempfile::tempdir()?;
                let store = sys::open_store(dir.path())?;
                Ok((Place::Local(dir), store))
            }
            Some(url) => {
                let (url, server) = match url {
                    Some(url) => (url, None),
                    None => {
                        progress("retention", "starting a PostgreSQL server (fsync on)");
                        let server =
                            test_postgres::durable_server().map_err(|e| anyhow::anyhow!(e))?;
                        let url = test_postgres::fresh_database(&server, "retention")
                            .map_err(|e| anyhow::anyhow!(e))?;
                        (url, Some(server))
                    }
                };
                let store = Arc::new(PgStore::open(&url, PgOptions::default())?);
                let shared: Arc<dyn Store> = store.clone();
                Ok((
                    Place::Postgres {
                        store,
                        _server: server,
                    },
                    shared,
                ))
            }
        }
    }

    /// Gives the space back with the engine stopped: `conveyor store compact` (sled, the
    /// log store) or `VACUUM FULL` (PostgreSQL). Sizes before and after, in bytes.
    fn compact(&self) -> anyhow::Result<(u64, u64)> {
        match self {
            Place::Local(dir) => {
                let started = Instant::now();
                loop {
                    match conveyor_store::compact(dir.path(), sys::store_options()) {
                        // sled's threads let go of its files a moment after the last
                        // handle.
                        Err(conveyor_store::StoreError::Locked { .. })
                            if started.elapsed() < Duration::from_secs(5) =>
                        {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        other => {
                            let done = other?;
                            return Ok((done.before, done.after));
                        }
                    }
                }
            }
            Place::Postgres { store, .. } => {
                let done = store.vacuum_full()?;
                Ok((done.before, done.after))
            }
        }
    }
}

pub fn run(
    short_tasks: u64,
    refreshes: u64,
    loops: u64,
    rounds: usize,
    postgres: Option<Option<String>>,
) -> anyhow::Result<Report> {
    let rounds = &ROUNDS[..rounds.clamp(1, ROUNDS.len())];
    let threads = sys::tokio_runtime()?;
    let on_postgres = postgres.is_some();
    let (place, store) = Place::open(postgres)?;
    let clock = ManualClock::new(T0);
    let runtime = Runtime::new(store.clone(), Arc::new(clock.clone()), Settings::default());
    let token = runtime.clone_process("token.yaml", TOKEN, Some("token"), Map::new())?;
    let short = runtime.clone_process("short.yaml", SHORT, Some("short"), Map::new())?;
    let mut report = Report::new(
        "retention",
        format!(
            "retention{}: {} rounds of {short_tasks} short tasks (kept 7 days) and {refreshes} refreshes of {loops} looping token tasks in all",
            if on_postgres { " on PostgreSQL" } else { "" },
            rounds.len()
        ),
    );
    let mut engine = Some(RunningEngine::start(&threads, &runtime));
    for i in 0..loops {
        runtime.add_task("@token", Some(&format!("token-{i}")), Map::new())?;
    }
    wait_for("the token tasks", || {
        Ok(now_in(store.as_ref(), token.id, "wait")? == loops as i64)
    })?;
    let rss_start = sys::rss_bytes();
    let size_start = store.size_on_disk()?;
    let per_round = refreshes / rounds.len() as u64 / loops.max(1);
    let mut sizes_after = Vec::new();
    let started = Instant::now();
    for (round, name) in rounds.iter().enumerate() {
        let round_started = Instant::now();
        // The refreshes: each move of the clock makes every token task due once.
        let refreshed_before = total_in(store.as_ref(), token.id, "refresh")?;
        for n in 1..=per_round {
            clock.advance(REFRESH);
            let target = refreshed_before + n * loops;
            wait_for("a refresh", || {
                Ok(total_in(store.as_ref(), token.id, "refresh")? >= target
                    && now_in(store.as_ref(), token.id, "wait")? == loops as i64)
            })?;
            if n % 10_000 == 0 {
                progress(
                    "retention",
                    &format!("{name}: {n} of {per_round} refreshes"),
                );
            }
        }
        // The short tasks, created and finished, with the engine stopped between
        // chunks as in `timers` (creating tasks while the engine commits once hung sled
        // 0.34 inside its own page cache: see docs/benchmarks.md).
        engine.take().map(|e| e.stop(&threads)).transpose()?;
        let mut made = 0;
        let ended_before = total_in(store.as_ref(), short.id, "end")?;
        while made < short_tasks {
            let end = (made + CHUNK).min(short_tasks);
            for i in made..end {
                let mut data = Map::new();
                data.insert("order".into(), serde_json::Value::from(i));
                data.insert(
                    "email".into(),
                    serde_json::Value::from(format!("user{i}@example.com")),
                );
                runtime.add_task("@short", None, data)?;
            }
            let stats = threads.block_on(runtime.run(RunMode::UntilIdle))?;
            anyhow::ensure!(
                stats.failed_steps == 0,
                "{} steps failed",
                stats.failed_steps
            );
            let ended = total_in(store.as_ref(), short.id, "end")?;
            anyhow::ensure!(
                ended == ended_before + end,
                "{} of {end} short tasks ended",
                ended - ended_before
            );
            made = end;
        }
        engine = Some(RunningEngine::start(&threads, &runtime));
        let size_before = store.size_on_disk()?;
        let rss_before = sys::rss_bytes();
        let finished = now_in(store.as_ref(), short.id, "end")?;
        // Past the short tasks' keep: the engine removes them.
        let removing = Instant::now();
        clock.advance(PAST_KEEP);
        wait_for("the removals", || {
            Ok(now_in(store.as_ref(), short.id, "end")? == 0)
        })?;
        let removal_secs = removing.elapsed().as_secs_f64();
        // Retention has caught up once the store has given the space back (a sled store
        // rewrites itself in the background, at most once a `CONVEYOR_SLED_RECLAIM_EVERY_S`).
        wait_for("the store's maintenance", || {
            Ok(!store.maintenance_running())
        })?;
        store.flush()?;
        let size_after = store.size_on_disk()?;
        let rss_after = sys::rss_bytes();
        sizes_after.push(size_after);
        let stats = runtime.store_stats()?;
        let token_stats = stats.processes.iter().find(|p| p.process == token.id);
        progress(
            "retention",
            &format!(
                "{name}: {:.0} s; store {} → {} MiB after removing {finished} tasks",
                round_started.elapsed().as_secs_f64(),
                size_before >> 20,
                size_after >> 20
            ),
        );
        report.runs.push(Run {
            policy: name,
            figures: vec![
                Figure::count(
                    "finished_before",
                    "finished tasks before removal",
                    finished as u64,
                ),
                Figure::bytes("store_before_bytes", "store before removal", size_before),
                Figure::bytes("store_after_bytes", "store after removal", size_after),
                Figure::bytes("rss_before_bytes", "RSS before removal", rss_before),
                Figure::bytes("rss_after_bytes", "RSS after removal", rss_after),
                Figure::rate(
                    "removed_per_sec",
                    "removals",
                    finished as f64 / removal_secs.max(1e-9),
                    "tasks/s",
                ),
                Figure::count(
                    "store_rewrites",
                    "store rewrites so far (sled: the store; log: segments compacted)",
                    store.space_given_back().map_or(0, |g| g.rewrites),
                ),
                Figure::millis(
                    "longest_rewrite_pause_ms",
                    "longest commit wait for a rewrite",
                    store
                        .space_given_back()
                        .map_or(0.0, |g| g.longest_pause.as_secs_f64() * 1e3),
                ),
                Figure::count(
                    "token_history_kept",
                    "token history events kept",
                    token_stats.map_or(0, |p| p.history_events),
                ),
                Figure::count(
                    "token_history_dropped",
                    "token history events dropped",
                    token_stats.map_or(0, |p| p.history_dropped),
                ),
            ],
        });
        let _ = round;
    }
    engine.take().map(|e| e.stop(&threads)).transpose()?;
    // The engine stopped: compact the store (as `conveyor store compact` does).
    drop(runtime);
    drop(store);
    progress("retention", "compacting the store");
    let compacting = Instant::now();
    let (compacted_before, compacted_after) = place.compact()?;
    let compact_secs = compacting.elapsed().as_secs_f64();
    report.common.extend([
        Figure::bytes(
            "compact_before_bytes",
            "store before compact (engine stopped)",
            compacted_before,
        ),
        Figure::bytes(
            "compact_after_bytes",
            "store after `store compact`",
            compacted_after,
        ),
        Figure::secs("compact_secs", "store compact took", compact_secs),
    ]);
    report.common.extend([
        Figure::count("short_tasks_per_round", "short tasks a round", short_tasks),
        Figure::count(
            "refreshes",
            "refreshes in all",
            per_round * loops * rounds.len() as u64,
        ),
        Figure::bytes("store_start_bytes", "store at the start", size_start),
        Figure::bytes("rss_start_bytes", "RSS at the start", rss_start),
        Figure::secs("total_secs", "time", started.elapsed().as_secs_f64()),
    ]);
    let first = sizes_after.first().copied().unwrap_or(0);
    let last = sizes_after.last().copied().unwrap_or(0);
    // Flat: the last round ends no more than 10 % (or 8 MiB) above the first.
    let allowed = first + (first / 10).max(8 << 20);
    report.targets.push(Target::new(
        "store size after removal stays flat from round to round".into(),
        format!(
            "round 1: {:.1} MiB, round {}: {:.1} MiB",
            first as f64 / 1048576.0,
            rounds.len(),
            last as f64 / 1048576.0
        ),
        last <= allowed,
    ));
    // Compacting gives the space of what retention removed back: what is left is the
    // live data (the token tasks and their trimmed histories), far below a round's worth.
    report.targets.push(Target::new(
        "`store compact` gives the space back (≤ the size at the start + 16 MiB)".into(),
        format!(
            "{:.1} MiB → {:.1} MiB (at the start: {:.1} MiB)",
            compacted_before as f64 / 1048576.0,
            compacted_after as f64 / 1048576.0,
            size_start as f64 / 1048576.0
        ),
        compacted_after <= size_start + (16 << 20),
    ));
    Ok(report)
}
