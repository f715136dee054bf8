//! Small tools the scenarios share: what Linux says about this process (`/proc`),
//! percentiles, a seeded random number generator, progress lines, and a clock that
//! stands still until told to run.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use conveyor_runtime::Clock;
use tokio::sync::watch;

/// A line on stderr saying what a long scenario is doing (stdout is for results).
pub fn progress(scenario: &str, message: &str) {
    eprintln!("[{scenario}] {message}");
}

/// A multi-thread tokio runtime like the engine's in `conveyor serve`.
pub fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`), in bytes.
pub fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// Resident memory now.
pub fn rss_bytes() -> u64 {
    status_bytes("VmRSS").unwrap_or(0)
}

/// Peak resident memory since the process started or since [`reset_peak_rss`].
pub fn peak_rss_bytes() -> u64 {
    status_bytes("VmHWM").unwrap_or(0)
}

/// Resets the peak (`VmHWM`) to the current RSS (Linux ≥ 4.0); false if refused.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// CPU time (user + system) of a process, all its threads, from `/proc/PID/stat`
/// (`pid` is a number or `self`). Resolution: one clock tick (USER_HZ, 100 on Linux).
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last `)`.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// The `q` quantile (0.0–1.0) of sorted values (nearest rank).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn sort(values: &mut [f64]) {
    values.sort_by(|a, b| a.total_cmp(b));
}

/// xorshift64*: repeatable pseudo-random numbers for choosing refs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound
    }
}

/// A clock that stands still (like `ManualClock`) until [`BenchClock::run_from`] makes it
/// follow real time from a given instant, so a burst of timers can be fired and its lag
/// measured in real milliseconds, while setting up a million waits sleeps not at all.
pub struct BenchClock {
    state: Mutex<ClockState>,
    changed: watch::Sender<u64>,
}

struct ClockState {
    base: i64,
    /// When it started following real time (None: it stands still at `base`).
    since: Option<Instant>,
}

impl BenchClock {
    /// A clock standing still at `millis`.
    pub fn stopped(millis: i64) -> BenchClock {
        let (changed, _) = watch::channel(0);
        BenchClock {
            state: Mutex::new(ClockState {
                base: millis,
                since: None,
            }),
            changed,
        }
    }

    fn read(&self) -> (i64, bool) {
        let state = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        match state.since {
            Some(since) => (state.base + since.elapsed().as_millis() as i64, true),
            None => (state.base, false),
        }
    }

    fn update(&self, base: i64, since: Option<Instant>) {
        if let Ok(mut state) = self.state.lock() {
            state.base = base;
            state.since = since;
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// From now on the clock reads `millis` plus the real time passed since this call;
    /// returns the instant it read `millis`.
    pub fn run_from(&self, millis: i64) -> Instant {
        let now = Instant::now();
        self.update(millis, Some(now));
        now
    }

    /// Stops the clock where it is.
    pub fn stop(&self) -> i64 {
        let (now, _) = self.read();
        self.update(now, None);
        now
    }
}

impl Clock for BenchClock {
    fn now_millis(&self) -> i64 {
        self.read().0
    }

    fn wait_until(&self, at: i64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let mut changed = self.changed.subscribe();
        Box::pin(async move {
            loop {
                let (now, running) = self.read();
                if now >= at {
                    return;
                }
                if running {
                    let wait = Duration::from_millis((at - now) as u64);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        result = changed.changed() => if result.is_err() { return },
                    }
                } else if changed.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}

/// CPU seconds of each live thread of this process, by thread id, with its name.
pub fn thread_cpu() -> std::collections::HashMap<u64, (String, f64)> {
    let mut threads = std::collections::HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc/self/task") else {
        return threads;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(tid) = name.parse::<u64>() else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm"))
            .map(|c| c.trim().to_string())
            .unwrap_or_default();
        if let Some(cpu) = cpu_seconds(&format!("self/task/{tid}")) {
            threads.insert(tid, (comm, cpu));
        }
    }
    threads
}

/// Where the CPU time between two [`thread_cpu`] readings went, by kind of thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSplit {
    /// tokio's worker threads: the steps (and HTTP calls).
    pub workers: f64,
    /// The engine's committer thread: applying batches to the store.
    pub committer: f64,
    /// The store's own threads that were alive at both readings: sled's (log writes,
    /// flushes); the log store's flusher (which writes a tail no commit wrote),
    /// compactor and snapshot writer.
    pub store: f64,
    /// The main thread, which drives the engine loop (`block_on(run)`).
    pub main: f64,
    /// The rest of the process total: threads that came and went (sled's pool).
    pub other: f64,
}

pub fn cpu_split(
    before: &std::collections::HashMap<u64, (String, f64)>,
    after: &std::collections::HashMap<u64, (String, f64)>,
    total: f64,
) -> CpuSplit {
    let mut split = CpuSplit::default();
    let main = u64::from(std::process::id());
    for (tid, (comm, cpu)) in after {
        let used = cpu - before.get(tid).map(|(_, c)| *c).unwrap_or(0.0);
        if *tid == main {
            split.main += used;
        } else if comm.starts_with("tokio-rt-worker") {
            split.workers += used;
        } else if comm.starts_with("conveyor-commit") {
            split.committer += used;
        } else if [
            "sled",
            "conveyor-flush",
            "conveyor-compac",
            "conveyor-snapsh",
        ]
        .iter()
        .any(|name| comm.starts_with(name))
        {
            // (A thread's name is cut to 15 bytes.)
            split.store += used;
        }
    }
    split.other = (total - split.workers - split.committer - split.store - split.main).max(0.0);
    split
}

/// The kind `--store sled|log` chose for this process (set once, before any store opens).
static CHOSEN_STORE: std::sync::OnceLock<conveyor_store::StoreKind> = std::sync::OnceLock::new();

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Makes every store this process creates of `kind`, whatever CONVEYOR_STORE_KIND says.
pub fn choose_store(kind: conveyor_store::StoreKind) {
    let _ = CHOSEN_STORE.set(kind);
}

/// The options every store of a benchmark is opened with: the default, or a page cache
/// of `CONVEYOR_STORE_CACHE_MB` MiB (as for `conveyor` itself; child processes inherit it),
/// of the kind `--store` or else CONVEYOR_STORE_KIND names.
pub fn store_options() -> conveyor_store::StoreOptions {
    let mut options = conveyor_store::StoreOptions::default();
    if let Some(mib) = std::env::var("CONVEYOR_STORE_CACHE_MB")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&mib| mib > 0)
    {
        options.cache_bytes = mib << 20;
    }
    match std::env::var("CONVEYOR_STORE_KIND")
        .as_deref()
        .map(str::trim)
    {
        Ok("sled") => options.kind = conveyor_store::StoreKind::Sled,
        Ok("log") => options.kind = conveyor_store::StoreKind::Log,
        _ => {}
    }
    if let Some(kind) = CHOSEN_STORE.get() {
        options.kind = *kind;
    }
    // As `conveyor` reads them (its `--sled-reclaim-*` options).
    if let Some(seconds) = env_u64("CONVEYOR_SLED_RECLAIM_EVERY_S") {
        options.reclaim.interval = std::time::Duration::from_secs(seconds);
    }
    if let Some(mib) = env_u64("CONVEYOR_SLED_RECLAIM_FLOOR_MB") {
        options.reclaim.floor_bytes = mib << 20;
    }
    options
}

/// Opens a store with [`store_options`].
pub fn open_store(
    path: &std::path::Path,
) -> anyhow::Result<std::sync::Arc<dyn conveyor_store::Store>> {
    Ok(conveyor_store::open(path, store_options())?)
}

/// An engine running until shutdown on the benchmark's threads.
pub struct RunningEngine {
    stop: tokio::sync::oneshot::Sender<()>,
    engine: tokio::task::JoinHandle<conveyor_runtime::Result<conveyor_runtime::RunStats>>,
}

impl RunningEngine {
    /// Starts `runtime`'s engine (`RunMode::UntilShutdown`).
    pub fn start(
        threads: &tokio::runtime::Runtime,
        runtime: &std::sync::Arc<conveyor_runtime::Runtime>,
    ) -> RunningEngine {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = std::sync::Arc::clone(runtime);
        let engine = threads.spawn(async move {
            let shutdown = Box::pin(async move {
                let _ = stopped.await;
            });
            runtime
                .run(conveyor_runtime::RunMode::UntilShutdown(shutdown))
                .await
        });
        RunningEngine { stop, engine }
    }

    /// Stops it gracefully and returns what it did.
    pub fn stop(
        self,
        threads: &tokio::runtime::Runtime,
    ) -> anyhow::Result<conveyor_runtime::RunStats> {
        let _ = self.stop.send(());
        Ok(threads.block_on(self.engine)??)
    }
}
