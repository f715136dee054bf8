//! `conveyor-bench`: benchmark scenarios for Conveyor.
//!
//! Run in release mode: `cargo run --release -p conveyor-bench -- all --quick`.
//! Each scenario prints a table for people, or one JSON object with `--json`; the
//! engine scenarios measure the store's raw limit in the same run, so figures can be
//! read as ratios. `all` runs every scenario; it fails only on errors, never on speed.

mod api;
mod code;
mod compare;
mod intake;
mod postgres;
mod pure;
mod queue;
mod refs;
mod report;
mod restart;
mod retention;
mod sys;
mod template;
mod timers;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The same allocator as `conveyor` (see `docs/ARCHITECTURE.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "conveyor-bench", about = "Benchmarks of the Conveyor engine")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// Print one JSON object of figures per scenario instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Run each engine scenario twice: with the default flush policy and with every
    /// batch of steps flushed before it is acknowledged (`flush_each_step`).
    #[arg(long, global = true)]
    durability: bool,
    /// Smaller sizes (a smoke test: `all --quick` takes a few minutes).
    #[arg(long, global = true)]
    quick: bool,
    /// The store: each scenario on both side by side (each in a process of its own), or
    /// on one [default: both; or the one CONVEYOR_STORE_KIND names, when it is set].
    #[arg(long, global = true, value_enum)]
    store: Option<StoreChoice>,
    /// (internal) Print each report as one JSON line for a parent comparing stores.
    #[arg(long, global = true, hide = true)]
    wire: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoreChoice {
    Both,
    Sled,
    Log,
}

impl StoreChoice {
    /// `--store`, or else one store when CONVEYOR_STORE_KIND names it, or else both.
    fn resolve(given: Option<StoreChoice>) -> StoreChoice {
        given.unwrap_or_else(|| {
            match std::env::var("CONVEYOR_STORE_KIND")
                .as_deref()
                .map(str::trim)
            {
                Ok("sled") => StoreChoice::Sled,
                Ok("log") => StoreChoice::Log,
                _ => StoreChoice::Both,
            }
        })
    }

    fn flag(self) -> &'static str {
        match self {
            StoreChoice::Both => "both",
            StoreChoice::Sled => "sled",
            StoreChoice::Log => "log",
        }
    }
}

impl Scenario {
    /// Whether the scenario opens a store of the chosen kind: those run once per store
    /// with `--store both`. (`template` opens none; `intake` runs both kinds itself.)
    fn per_store(&self) -> bool {
        if let Scenario::Retention { postgres: true, .. } = self {
            return false;
        }
        matches!(
            self,
            Scenario::Pure { .. }
                | Scenario::Api(_)
                | Scenario::Timers(_)
                | Scenario::Restart { .. }
                | Scenario::Refs(_)
                | Scenario::Retention { .. }
                | Scenario::Code { .. }
                | Scenario::Queue { .. }
        )
    }
}

#[derive(Subcommand)]
enum Scenario {
    /// Template rendering: parse once, render many times.
    Template {
        /// Renders per template [default: 1,000,000; --quick 100,000].
        #[arg(long)]
        iterations: Option<u32>,
    },
    /// N tasks through start → set_param → condition → set_param → final: throughput,
    /// node transitions, latency, against the store's raw transaction rate.
    Pure {
        /// Number of tasks [default: 100,000; --quick 10,000].
        #[arg(long)]
        tasks: Option<u64>,
    },
    /// N tasks, each one api_call to a local server that answers after a delay, through
    /// a node with a concurrency limit: throughput against the ideal, engine CPU per call.
    Api(ApiArgs),
    /// Many tasks waiting in delay nodes, then a burst due in the same second: memory,
    /// store size, time to fire the burst, timer lag.
    Timers(TimersArgs),
    /// With many tasks waiting in the store: time from starting a new process until its
    /// engine has completed a new task.
    Restart {
        /// Tasks waiting in the store [default: 1,000,000; --quick 50,000].
        #[arg(long)]
        tasks: Option<u64>,
    },
    /// Reads of other processes' tasks by ref (`{{conv[ID].ref[REF].x}}`) per second.
    Refs(RefsArgs),
    /// Tasks created over loopback HTTP through the real server (direct URL; task API,
    /// 100 per request) and completed, on sled and on the log store, against the HTTP
    /// server's own floor.
    Intake {
        /// Tasks per door and store [default: 100,000; --quick 5,000].
        #[arg(long)]
        tasks: Option<u64>,
    },
    /// Rounds of short tasks that finish and are removed 7 days later, with token-like
    /// tasks looping for ever (bounded history): the store's size and RSS before and
    /// after retention runs, then after `store compact`. Not part of `all`.
    Retention {
        /// Short tasks a round (3 rounds) [default: 1,000,000; --quick 50,000].
        #[arg(long)]
        tasks: Option<u64>,
        /// Refreshes of the token tasks in all [default: 100,000; --quick 10,000].
        #[arg(long)]
        refreshes: Option<u64>,
        /// Token tasks looping at once.
        #[arg(long, default_value_t = 10)]
        loops: u64,
        /// Rounds (1 to 10).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// On PostgreSQL instead (a server of its own, fsync on, unless --url names an
        /// empty database); compacted at the end with `VACUUM FULL`.
        #[arg(long)]
        postgres: bool,
        /// The database for --postgres.
        #[arg(long, value_name = "URL", requires = "postgres")]
        url: Option<String>,
    },
    /// N tasks through a `code` node running a 10-line JavaScript, against a set_param
    /// in its place: the script's CPU per task.
    Code {
        /// Number of tasks [default: 100,000; --quick 10,000].
        #[arg(long)]
        tasks: Option<u64>,
    },
    /// N tasks wait in a `queue` node, then N `get_task` nodes take them: takes per
    /// second.
    Queue {
        /// Number of tasks [default: 100,000; --quick 10,000].
        #[arg(long)]
        tasks: Option<u64>,
    },
    /// `pure` and a timer burst on one PostgreSQL with 1, 2 and 4 engines (a server of
    /// its own, fsync on, unless --url names one). Not part of `all`.
    Postgres {
        /// Tasks in each run [default: 50,000; --quick 5,000].
        #[arg(long)]
        tasks: Option<u64>,
        /// A database to use instead of starting a server (every run uses it in turn:
        /// it must be empty).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Numbers of engines to run with.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
        engines: Vec<usize>,
    },
    /// Every scenario, one after the other (template, pure, api, timers, restart, refs, intake, code),
    /// each in a process of its own; with `--json`, one JSON object per line.
    All,
    /// (internal) The delay server of `api`: prints `port N`, exits when stdin closes.
    #[command(hide = true)]
    ServeDelay {
        #[arg(long, default_value_t = 20)]
        delay_ms: u64,
    },
    /// (internal) The new process of `restart`.
    #[command(hide = true)]
    RestartProbe {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        now_ms: i64,
        #[arg(long)]
        flush: bool,
    },
}

#[derive(Args)]
struct ApiArgs {
    /// Number of tasks [default: 10,000; --quick 1,000].
    #[arg(long)]
    tasks: Option<u64>,
    /// The server's delay before it answers, in ms.
    #[arg(long, default_value_t = 20)]
    delay_ms: u64,
    /// The api_call node's concurrency limit.
    #[arg(long, default_value_t = 100)]
    concurrency: u32,
    /// Engine runs, each followed by a bare-client run; the median round's figures are
    /// shown, and every round's engine ÷ bare client ratio.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=50))]
    rounds: u32,
}

#[derive(Args)]
struct TimersArgs {
    /// Tasks waiting [default: 1,000,000; --quick 50,000].
    #[arg(long)]
    tasks: Option<u64>,
    /// Tasks due in the same second.
    #[arg(long, default_value_t = 10_000)]
    burst: u64,
    /// Then run `restart` on the store left behind (what `all` does).
    #[arg(long, hide = true)]
    with_restart: bool,
}

#[derive(Args)]
struct RefsArgs {
    /// Tasks with refs in the process read from [default: 100,000; --quick 10,000].
    #[arg(long)]
    refs: Option<u64>,
    /// Reads through the engine in all [default: 1,000,000; --quick 100,000].
    #[arg(long)]
    reads: Option<u64>,
    /// Reads in each reader task (one set_param whose text reads a group of this many refs).
    #[arg(long, default_value_t = 100)]
    reads_per_task: u32,
}

/// Sizes: the issue's, or smaller with `--quick`.
struct Sizes {
    quick: bool,
}

impl Sizes {
    fn pick<T>(&self, given: Option<T>, full: T, quick: T) -> T {
        given.unwrap_or(if self.quick { quick } else { full })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The engine's and the store's log (a sled store giving space back, a commit retried)
    // goes to stderr as `conveyor` writes it; CONVEYOR_LOG filters as there.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CONVEYOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let sizes = Sizes { quick: cli.quick };
    let (json, durability, wire) = (cli.json, cli.durability, cli.wire);
    let store = StoreChoice::resolve(cli.store);
    match store {
        StoreChoice::Sled => sys::choose_store(conveyor_store::StoreKind::Sled),
        StoreChoice::Log => sys::choose_store(conveyor_store::StoreKind::Log),
        StoreChoice::Both => {}
    }
    if store == StoreChoice::Both && cli.scenario.per_store() {
        return side_by_side(json);
    }
    let print = |report: report::Report| {
        if wire {
            match serde_json::to_string(&compare::Wire::from_report(&report)) {
                Ok(line) => println!("{line}"),
                Err(e) => eprintln!("conveyor-bench: cannot encode the report: {e}"),
            }
        } else {
            report.print(json)
        }
    };
    let result = match cli.scenario {
        Scenario::All => return all(cli.quick, json, durability, store),
        Scenario::Template { iterations } => {
            template::run(sizes.pick(iterations, 1_000_000, 100_000), json)
        }
        Scenario::Pure { tasks } => {
            pure::run(sizes.pick(tasks, 100_000, 10_000), durability).map(print)
        }
        Scenario::Api(args) => api_scenario(&args, &sizes, durability).map(print),
        Scenario::Timers(args) => {
            timers_scenario(&args, &sizes, durability).and_then(|(report, parked)| {
                print(report);
                if args.with_restart {
                    restart::run(&parked, durability).map(print)
                } else {
                    Ok(())
                }
            })
        }
        Scenario::Restart { tasks } => timers::prepare(sizes.pick(tasks, 1_000_000, 50_000))
            .and_then(|parked| restart::run(&parked, durability))
            .map(print),
        Scenario::Refs(args) => refs_scenario(&args, &sizes, durability).map(print),
        Scenario::Code { tasks } => code::run(sizes.pick(tasks, 100_000, 10_000)).map(print),
        Scenario::Intake { tasks } => intake::run(sizes.pick(tasks, 100_000, 5_000)).map(print),
        Scenario::Queue { tasks } => queue::run(sizes.pick(tasks, 100_000, 10_000)).map(print),
        Scenario::Retention {
            tasks,
            refreshes,
            loops,
            rounds,
            postgres,
            url,
        } => retention::run(
            sizes.pick(tasks, 1_000_000, 50_000),
            sizes.pick(refreshes, 100_000, 10_000),
            loops.max(1),
            rounds,
            postgres.then_some(url),
        )
        .map(print),
        Scenario::Postgres {
            tasks,
            url,
            engines,
        } => postgres::run(sizes.pick(tasks, 50_000, 5_000), url, &engines).map(print),
        Scenario::ServeDelay { delay_ms } => api::serve(delay_ms),
        Scenario::RestartProbe {
            data,
            now_ms,
            flush,
        } => restart::probe(&data, now_ms, flush),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conveyor-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The scenario once per store, each in a child process, printed side by side.
fn side_by_side(json: bool) -> ExitCode {
    match compare::run_children() {
        Ok(comparisons) => {
            for comparison in comparisons {
                comparison.print(json);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("conveyor-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn api_scenario(args: &ApiArgs, sizes: &Sizes, durability: bool) -> anyhow::Result<report::Report> {
    api::run(
        sizes.pick(args.tasks, 10_000, 1_000),
        args.delay_ms,
        args.concurrency,
        durability,
        args.rounds,
    )
}

fn timers_scenario(
    args: &TimersArgs,
    sizes: &Sizes,
    durability: bool,
) -> anyhow::Result<(report::Report, timers::Parked)> {
    timers::run(
        sizes.pick(args.tasks, 1_000_000, 50_000),
        args.burst,
        durability,
    )
}

fn refs_scenario(
    args: &RefsArgs,
    sizes: &Sizes,
    durability: bool,
) -> anyhow::Result<report::Report> {
    refs::run(
        sizes.pick(args.refs, 100_000, 10_000),
        sizes.pick(args.reads, 1_000_000, 100_000),
        args.reads_per_task,
        durability,
    )
}

/// Every scenario, each in a process of its own (so memory figures are its own and a
/// crash stops only it); `restart` runs in the process of `timers`, on the store it left.
/// The exit code is 1 if any scenario failed; speed never fails it.
fn all(quick: bool, json: bool, durability: bool, store: StoreChoice) -> ExitCode {
    let started = std::time::Instant::now();
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("conveyor-bench: cannot find this program: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut flags: Vec<&str> = [
        (json, "--json"),
        (durability, "--durability"),
        (quick, "--quick"),
    ]
    .into_iter()
    .filter_map(|(on, flag)| on.then_some(flag))
    .collect();
    flags.extend(["--store", store.flag()]);
    let scenarios: [(&str, &[&str]); 8] = [
        ("template", &["template"]),
        ("pure", &["pure"]),
        ("api", &["api"]),
        ("timers and restart", &["timers", "--with-restart"]),
        ("refs", &["refs"]),
        ("intake", &["intake"]),
        ("code", &["code"]),
        ("queue", &["queue"]),
    ];
    let mut failed = Vec::new();
    for (name, args) in scenarios {
        match std::process::Command::new(&exe)
            .args(args)
            .args(&flags)
            .status()
        {
            Ok(status) if status.success() => {}
            Ok(status) => {
                eprintln!("conveyor-bench: {name} failed ({status})");
                failed.push(name);
            }
            Err(e) => {
                eprintln!("conveyor-bench: {name} did not start: {e}");
                failed.push(name);
            }
        }
    }
    sys::progress(
        "all",
        &format!("done in {:.0} s", started.elapsed().as_secs_f64()),
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("conveyor-bench: failed: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}
