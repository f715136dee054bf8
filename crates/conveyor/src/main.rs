//! `conveyor`: the command-line interface of the Conveyor process engine.
//!
//! Exit codes: 0 success (warnings allowed), 1 the command ran and failed or found
//! problems (not found, refused, invalid), 2 the command line itself is wrong.
//! It parses arguments, calls the command layer (`conveyor-commands`) and prints; it
//! never opens the store itself.
//!
//! # Layout
//! - `main.rs` — the clap commands and `main` (exit codes).
//! - `commands.rs` — dispatch: a command here or through a running server, the engine
//!   (`serve`, `run`), `secrets rotate-key`, where the store is (`place`).
//! - `store.rs` — `store verify | repair | migrate | compact`, refused while an engine runs.
//! - `story.rs` — `sandbox`, `demo`, `bitrix authorize`.
//! - `args.rs`, `check.rs`, `client.rs`, `import.rs`, `serve.rs` — `key=value` data,
//!   `process check`, the client of a running server, `process import`, `serve`.

mod args;
mod check;
mod client;
mod commands;
mod import;
mod serve;
mod store;
mod story;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// mimalloc rather than glibc's malloc: with steps allocating on tokio's threads and the
/// committer freeing, glibc's per-thread arenas fragmented (`docs/benchmarks.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A process engine modeled on Corezoid: YAML processes, durable tasks, templates.
#[derive(Parser)]
#[command(name = "conveyor", version, propagate_version = true)]
#[command(
    about,
    long_about = "Conveyor runs processes (YAML node graphs modeled on Corezoid) and moves JSON \
    tasks through them, keeping every task in an embedded store.\n\n\
    <process> is a numeric id (1) or an alias (@bitrix) everywhere."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Clone)]
pub struct Global {
    /// Data directory (default: $CONVEYOR_DATA, else the platform's data dir).
    #[arg(long, global = true, value_name = "DIR", env = "CONVEYOR_DATA")]
    pub data: Option<PathBuf>,
    /// Print results as JSON, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
    /// The most memory the store's page cache may take, in MiB.
    #[arg(
        long,
        global = true,
        value_name = "MIB",
        env = "CONVEYOR_STORE_CACHE_MB",
        default_value_t = 48,
        value_parser = clap::value_parser!(u64).range(1..=1_048_576)
    )]
    pub store_cache_mb: u64,
    /// The store a new data directory gets: `sled` (the default) or `log` (Conveyor's
    /// own append-only log: 3-4x sled's throughput and a true fdatasync, for about 200
    /// bytes of memory per task). A data directory keeps the store it was made with.
    #[arg(
        long,
        global = true,
        value_name = "KIND",
        env = "CONVEYOR_STORE_KIND",
        default_value = "sled"
    )]
    pub store_kind: StoreKindArg,
    /// A sled store rewrites itself while the engine runs to give the space of removed
    /// tasks back once its files are more than 4x its live data plus this many MiB
    /// (docs/processes.md, Retention). 0 still leaves a sled store alone below 4x.
    #[arg(
        long,
        global = true,
        value_name = "MIB",
        env = "CONVEYOR_SLED_RECLAIM_FLOOR_MB",
        default_value_t = 64
    )]
    pub sled_reclaim_floor_mb: u64,
    /// The shortest time between two looks at whether a sled store should rewrite itself.
    #[arg(
        long,
        global = true,
        value_name = "SECONDS",
        env = "CONVEYOR_SLED_RECLAIM_EVERY_S",
        default_value_t = 60
    )]
    pub sled_reclaim_every_s: u64,
    /// Never let a sled store rewrite itself while it runs (`conveyor store compact`, with
    /// the engine stopped, still gives its space back).
    #[arg(long, global = true, env = "CONVEYOR_SLED_RECLAIM_OFF")]
    pub sled_reclaim_off: bool,
    /// Keep everything in this PostgreSQL database instead of the data directory's own
    /// store (`postgres://user:password@host:5432/db`). Several engines, on several
    /// machines, share one database (docs/scaling.md); each still has a data directory
    /// of its own for its API address and the record of its sealing key.
    #[arg(long, global = true, value_name = "URL", env = "CONVEYOR_STORE")]
    pub store: Option<String>,
    /// Where the keys that seal secrets at rest are kept (default: the platform's config
    /// dir + conveyor/keys). Must be outside the data directory. The key itself may be
    /// given instead as $CONVEYOR_SECRET_KEY (base64 or hex of 32 bytes).
    #[arg(long, global = true, value_name = "DIR", env = "CONVEYOR_KEY_DIR")]
    pub key_dir: Option<PathBuf>,
}

/// Where `store migrate --to` moves a store.
#[derive(Clone, Debug)]
pub enum MigrateTo {
    Kind(StoreKindArg),
    Postgres(String),
}

fn parse_migrate_to(text: &str) -> Result<MigrateTo, String> {
    match text {
        "log" => Ok(MigrateTo::Kind(StoreKindArg::Log)),
        "sled" => Ok(MigrateTo::Kind(StoreKindArg::Sled)),
        url if conveyor_commands::is_postgres_url(url) => Ok(MigrateTo::Postgres(url.to_string())),
        other => Err(format!(
            "`{other}`: expected `log`, `sled` or a PostgreSQL URL (postgres://user@host:5432/db)"
        )),
    }
}

/// `--store-kind`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum StoreKindArg {
    /// sled: the default.
    Sled,
    /// Conveyor's append-only log: the opt-in for throughput.
    Log,
}

#[derive(Subcommand)]
pub enum Command {
    /// Processes: check, templates, clone, import, export, list, show, graph, url, update.
    #[command(subcommand)]
    Process(ProcessCommand),
    /// Work with tasks: add, show, list, modify, retry, goto, delete, history.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Run the engine and the HTTP API until SIGINT or SIGTERM.
    ///
    /// While it runs, the other commands go through it (same output, same exit codes).
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = commands::DEFAULT_LISTEN, value_name = "ADDR")]
        listen: String,
        /// Allow an address other machines can reach (loopback only otherwise).
        #[arg(long)]
        allow_remote: bool,
        #[command(flatten)]
        options: serve::ServeOptions,
    },
    /// Start the local sandbox: stand-ins for Bitrix24 and the five notifiers.
    Sandbox {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7879", value_name = "ADDR")]
        listen: String,
        /// A JSON file with the sandbox's credentials and applications.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Run the whole Bitrix story on this machine against the sandbox, narrated.
    Demo,
    /// Bitrix24 helpers.
    #[command(subcommand)]
    Bitrix(BitrixCommand),
    /// Manage keys of the Corezoid-compatible task API.
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCommand),
    /// Secrets sealed at rest: the key they are sealed with.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// The store of the data dir: what it holds (`stats`); check, repair or convert it
    /// (with no engine running).
    #[command(subcommand)]
    Store(StoreCommand),
    /// Run the engine in the foreground.
    Run {
        /// Exit when no task is ready and no timer is due (waiting tasks stay waiting).
        #[arg(long)]
        until_idle: bool,
        /// With --until-idle: also wait for timers due within this long (`2s`, `1m`), such
        /// as an API call's retry.
        #[arg(long, value_name = "DURATION", value_parser = parse_wait)]
        wait: Option<std::time::Duration>,
    },
}

#[derive(Subcommand)]
pub enum BitrixCommand {
    /// Print the portal's authorize URL, then take the code as soon as it is pasted and
    /// give it to the token task (created if it does not exist).
    Authorize {
        /// The cloned Bitrix OAuth process (e.g. @bitrix), or any process that declares
        /// an `authorize:` link: its address is the one opened.
        #[arg(value_name = "PROCESS")]
        process: String,
        /// The portal name (`mycompany` for https://mycompany.bitrix24.ru): `portal`.
        #[arg(long)]
        portal: Option<String>,
        /// The application's id: `client_id`.
        #[arg(long)]
        client_id: Option<String>,
        /// Needed when the token task does not exist yet.
        #[arg(long)]
        client_secret: Option<String>,
        #[arg(long)]
        scope: Option<String>,
        /// Another authorize page than the process declares (e.g. a sandbox's): replaces
        /// its address before the `?`, the declared query is kept.
        #[arg(long)]
        authorize_url: Option<String>,
        /// The ref of the token task.
        #[arg(long = "ref", default_value = "token")]
        reference: String,
    },
}

/// `--format` of `process export`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ExportFormat {
    /// Corezoid's JSON export (an array of one process object).
    Corezoid,
}

/// `--format` of `process graph`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
    Svg,
}

impl From<GraphFormat> for conveyor_commands::GraphFormat {
    fn from(format: GraphFormat) -> Self {
        match format {
            GraphFormat::Dot => conveyor_commands::GraphFormat::Dot,
            GraphFormat::Mermaid => conveyor_commands::GraphFormat::Mermaid,
            GraphFormat::Svg => conveyor_commands::GraphFormat::Svg,
        }
    }
}

#[derive(Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key (login + secret, printed once) for `POST /api/2/json/...`.
    Create {
        /// A name to recognise the key by.
        #[arg(value_name = "NAME")]
        name: String,
        /// Limit the key to this process (repeat for several); all processes otherwise.
        #[arg(long, value_name = "PROCESS")]
        process: Vec<String>,
    },
    /// List keys (without their secrets).
    List,
    /// Delete a key: requests signed with it are refused at once.
    Delete {
        /// The key's login (see `api-key list`).
        #[arg(value_name = "LOGIN")]
        login: u64,
    },
    /// Give a key a new secret (printed once); the old one is refused at once.
    Rotate {
        /// The key's login (see `api-key list`).
        #[arg(value_name = "LOGIN")]
        login: u64,
    },
}

#[derive(Subcommand)]
pub enum SecretsCommand {
    /// Make a new key, re-seal every sealed value under it, and remove the old key file.
    ///
    /// Runs with the engine stopped. A rotation cut short (a crash) leaves a data dir
    /// that opens with both keys; running the command again finishes it.
    #[command(name = "rotate-key")]
    RotateKey {
        /// Keep the old key file (e.g. another copy of this data dir still uses it).
        #[arg(long)]
        keep_old: bool,
    },
}

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Per process: tasks live and finished, history events, the oldest kept task;
    /// and the store's bytes on disk.
    Stats,
    /// Read everything the store holds and report every problem (exit 1 if any).
    ///
    /// For a log store: every frame of every segment (its checksum and its entries) and
    /// the snapshot, then every record through the indexes; a sealed value must open.
    /// Changes nothing.
    Verify,
    /// Say exactly what must be dropped for a damaged log store to open again, and drop
    /// it with --yes.
    ///
    /// A frame torn by a crash at the very end of the log is cut off by every open; a
    /// damaged frame followed by whole ones (acknowledged commits) is corruption, which
    /// the store refuses to open with. Repair cuts the segment at the damaged frame and
    /// removes the segments after it: the whole frames there are lost, and it says how
    /// many.
    Repair {
        /// Drop what it lists (without it, it only prints).
        #[arg(long)]
        yes: bool,
    },
    /// Give the store's free space back to the file system: rewrite it into a new store
    /// of the same kind, compare the two record by record, and swap the new one in.
    ///
    /// sled reuses the space of removed tasks and trimmed histories while it runs, but
    /// its files shrink only when that space is at their end; this returns it. Needs
    /// room for a second copy of the live data; a crash midway leaves one whole store.
    Compact,
    /// Move the data dir to another kind of store, keeping everything; the old store is
    /// kept as DATA/store.old-<kind> until you remove it.
    Migrate {
        /// Where to move to: `log` or `sled` (the data dir's store becomes that kind),
        /// or a PostgreSQL URL (everything is copied into that empty database, for
        /// `conveyor serve --store URL`; the data dir's store is left as it was).
        #[arg(long, value_name = "KIND|URL", value_parser = parse_migrate_to)]
        to: MigrateTo,
    },
}

#[derive(Subcommand)]
pub enum ProcessCommand {
    /// Check process files and print every problem at once.
    ///
    /// Exits 0 when no file has an error (warnings are printed but allowed), 1 otherwise.
    Check {
        /// Process files (YAML).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Treat warnings as errors.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Create a process from a shipped template (e.g. bitrix_oauth) or a YAML file.
    Clone {
        /// A template name (see `conveyor process templates`) or a path to a .yaml file.
        #[arg(value_name = "TEMPLATE|FILE")]
        source: String,
        /// An alias to refer to the process by, as @NAME.
        #[arg(long, value_name = "NAME")]
        alias: Option<String>,
        /// A process-level value for every task (e.g. credentials of a notifier).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Import a Corezoid export (a JSON array, a .conv.json, or an unpacked zip folder)
    /// as Conveyor processes: YAML files (--out) and/or cloned processes (--clone).
    Import {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Write each process as DIR/<name>.yaml.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Create the processes, each with its alias.
        #[arg(long)]
        clone: bool,
        /// Import nodes that cannot be mapped as nodes that fail when a task reaches them.
        #[arg(long)]
        allow_partial: bool,
    },
    /// List the shipped templates.
    Templates,
    /// List processes.
    List,
    /// Show a process and the tasks in each of its nodes.
    Show {
        #[arg(value_name = "PROCESS")]
        process: String,
    },
    /// Draw a process: DOT, Mermaid or SVG (with the tasks in each node, for a cloned one).
    Graph {
        /// A cloned process (id or @alias) or a process file (.yaml).
        #[arg(value_name = "PROCESS|FILE")]
        process: String,
        #[arg(long, value_enum, default_value = "svg")]
        format: GraphFormat,
    },
    /// Write a process (a cloned one, or a .yaml file) as a Corezoid export that
    /// `process import` reads back.
    Export {
        /// A cloned process (id or @alias) or a process file (.yaml).
        #[arg(value_name = "PROCESS|FILE")]
        process: String,
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Write the export to FILE instead of printing it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Print the process's direct URL (creates or modifies tasks from any HTTP request).
    Url {
        #[arg(value_name = "PROCESS")]
        process: String,
        /// Replace the secret part of the URL; the old URL stops working.
        #[arg(long)]
        rotate: bool,
    },
    /// Replace a process's definition with a new version.
    ///
    /// Waiting tasks continue on the new definition; refused when tasks sit in nodes the
    /// new definition lacks.
    Update {
        #[arg(value_name = "PROCESS")]
        process: String,
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum TaskCommand {
    /// Add a task at the start of a process: `key=value` (a string) or `key:=json`.
    Add {
        #[arg(value_name = "PROCESS")]
        process: String,
        /// A reference, unique in the process, to find the task by (e.g. token).
        #[arg(long = "ref", value_name = "REF")]
        reference: Option<String>,
        /// Data as one JSON object; `key=value` pairs are added on top.
        #[arg(long, value_name = "JSON")]
        from_json: Option<String>,
        #[arg(value_name = "KEY=VALUE")]
        pairs: Vec<String>,
    },
    /// Show a task: its node, status and data (secrets masked unless --reveal).
    Show {
        #[arg(value_name = "PROCESS")]
        process: String,
        #[arg(value_name = "REF|ID")]
        task: String,
        /// Show secret values in clear.
        #[arg(long)]
        reveal: bool,
    },
    /// List the tasks of a process.
    List {
        #[arg(value_name = "PROCESS")]
        process: String,
        /// Only tasks in this node.
        #[arg(long, value_name = "NODE")]
        node: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Merge data into a task; wakes it if it waits for a callback or sits in an escalation.
    ///
    /// A task that has finished (done or failed) is refused unless --force: the data
    /// would change nothing it does (`task retry` and `task goto` move it again).
    Modify {
        #[arg(value_name = "PROCESS")]
        process: String,
        #[arg(value_name = "REF|ID")]
        task: String,
        #[arg(long, value_name = "JSON")]
        from_json: Option<String>,
        /// Merge into a finished task too.
        #[arg(long)]
        force: bool,
        #[arg(value_name = "KEY=VALUE")]
        pairs: Vec<String>,
    },
    /// Run again the node a task failed in (one with no `on_error`); `key=value` pairs
    /// are merged first. Recorded in its history.
    Retry {
        #[arg(value_name = "PROCESS")]
        process: String,
        #[arg(value_name = "REF|ID")]
        task: String,
        #[arg(value_name = "KEY=VALUE")]
        pairs: Vec<String>,
    },
    /// Send a task to a node of its process (an escalated task moved on, a failed one
    /// sent elsewhere); `key=value` pairs are merged first. Recorded in its history.
    Goto {
        #[arg(value_name = "PROCESS")]
        process: String,
        #[arg(value_name = "REF|ID")]
        task: String,
        #[arg(value_name = "NODE")]
        node: String,
        #[arg(value_name = "KEY=VALUE")]
        pairs: Vec<String>,
    },
    /// Delete a task (its data, ref and history).
    Delete {
        #[arg(value_name = "PROCESS")]
        process: String,
        #[arg(value_name = "REF|ID")]
        task: String,
    },
    /// Show what happened to a task, event by event (secrets are masked when written).
    History {
        #[arg(value_name = "PROCESS")]
        process: String,
        #[arg(value_name = "REF|ID")]
        task: String,
    },
}

/// `--wait 2s`: a duration as process files write them.
fn parse_wait(text: &str) -> Result<std::time::Duration, String> {
    conveyor_model::parse_duration(text).map_err(|e| format!("`{text}`: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CONVEYOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match commands::run(cli) {
        Ok(code) => code,
        Err(error) => {
            if let Some(usage) = error.downcast_ref::<args::UsageError>() {
                eprintln!("error: {usage}");
                return ExitCode::from(2);
            }
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}
