//! `conveyor-bench`: benchmark scenarios for Conveyor.
//!
//! Run in release mode: `cargo run --release -p conveyor-bench -- all --quick`.
//! Each scenario prints a table for people, or one JSON object with `--json`; the
//! engine scenarios measure the store's raw limit in the same run, so figures can be
//! read as ratios. `all` runs every scenario; it fails only on errors, never on speed.

mod api;
mod pure;
mod refs;
mod report;
mod restart;
mod sys;
mod template;
mod timers;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

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
    /// Smaller sizes (a smoke test: `all --quick` takes under two minutes).
    #[arg(long, global = true)]
    quick: bool,
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
    /// Every scenario, one after the other (template, pure, api, timers, restart, refs).
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

#[derive(Args, Default)]
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
}

#[derive(Args, Default)]
struct TimersArgs {
    /// Tasks waiting [default: 1,000,000; --quick 50,000].
    #[arg(long)]
    tasks: Option<u64>,
    /// Tasks due in the same second.
    #[arg(long, default_value_t = 10_000)]
    burst: u64,
}

#[derive(Args, Default)]
struct RefsArgs {
    /// Tasks with refs in the process read from [default: 100,000; --quick 10,000].
    #[arg(long)]
    refs: Option<u64>,
    /// Reads through the engine in all [default: 1,000,000; --quick 100,000].
    #[arg(long)]
    reads: Option<u64>,
    /// Reads in each reader task (one set_param with this many keys).
    #[arg(long, default_value_t = 50)]
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
    let sizes = Sizes { quick: cli.quick };
    let (json, durability) = (cli.json, cli.durability);
    let print = |report: report::Report| report.print(json);
    let result = match cli.scenario {
        Scenario::All => return all(&sizes, json, durability),
        Scenario::Template { iterations } => {
            template::run(sizes.pick(iterations, 1_000_000, 100_000), json)
        }
        Scenario::Pure { tasks } => {
            pure::run(sizes.pick(tasks, 100_000, 10_000), durability).map(print)
        }
        Scenario::Api(args) => api_scenario(&args, &sizes, durability).map(print),
        Scenario::Timers(args) => {
            timers_scenario(&args, &sizes, durability).map(|(report, _)| print(report))
        }
        Scenario::Restart { tasks } => timers::prepare(sizes.pick(tasks, 1_000_000, 50_000))
            .and_then(|parked| restart::run(&parked, durability))
            .map(print),
        Scenario::Refs(args) => refs_scenario(&args, &sizes, durability).map(print),
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

fn api_scenario(args: &ApiArgs, sizes: &Sizes, durability: bool) -> anyhow::Result<report::Report> {
    api::run(
        sizes.pick(args.tasks, 10_000, 1_000),
        args.delay_ms,
        args.concurrency,
        durability,
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

/// Every scenario; `restart` opens the store `timers` left. A failed scenario is
/// reported and the others still run; the exit code is 1 if any failed.
fn all(sizes: &Sizes, json: bool, durability: bool) -> ExitCode {
    let started = std::time::Instant::now();
    let mut failed = Vec::new();
    let mut fail = |name: &'static str, e: anyhow::Error| {
        eprintln!("conveyor-bench: {name} failed: {e:#}");
        failed.push(name);
    };
    if let Err(e) = template::run(sizes.pick(None, 1_000_000, 100_000), json) {
        fail("template", e);
    }
    match pure::run(sizes.pick(None, 100_000, 10_000), durability) {
        Ok(report) => report.print(json),
        Err(e) => fail("pure", e),
    }
    match api_scenario(
        &ApiArgs {
            delay_ms: 20,
            concurrency: 100,
            ..ApiArgs::default()
        },
        sizes,
        durability,
    ) {
        Ok(report) => report.print(json),
        Err(e) => fail("api", e),
    }
    let timers_args = TimersArgs {
        burst: 10_000,
        ..TimersArgs::default()
    };
    match timers_scenario(&timers_args, sizes, durability) {
        Ok((report, parked)) => {
            report.print(json);
            match restart::run(&parked, durability) {
                Ok(report) => report.print(json),
                Err(e) => fail("restart", e),
            }
        }
        Err(e) => {
            fail("timers", e);
            fail("restart", anyhow::anyhow!("needs the store of timers"));
        }
    }
    match refs_scenario(
        &RefsArgs {
            reads_per_task: 50,
            ..RefsArgs::default()
        },
        sizes,
        durability,
    ) {
        Ok(report) => report.print(json),
        Err(e) => fail("refs", e),
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
