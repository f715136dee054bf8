//! Dispatches the command line: local commands (check, templates), store commands (run
//! here, or by a running server), and the engine (`serve`, `run`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use conveyor_runtime::{RunMode, Runtime};
use serde_json::json;

use crate::args::{self, UsageError};
use crate::client;
use crate::{
    ApiKeyCommand, BitrixCommand, Cli, Command, Global, ProcessCommand, SecretsCommand,
    TaskCommand, check,
};
use conveyor_commands::execute;
use conveyor_commands::templates;
use conveyor_commands::{KeySource, Place, Reply, Request, StoreKind, StoreOptions};

/// Where `serve` listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let global = cli.global;
    let request = match cli.command {
        Command::Process(ProcessCommand::Check {
            files,
            deny_warnings,
        }) => {
            return check::run(&files, global.json, deny_warnings);
        }
        Command::Process(ProcessCommand::Import {
            file,
            out,
            clone,
            allow_partial,
        }) => {
            let args = crate::import::ImportArgs {
                file: &file,
                out: out.as_deref(),
                clone,
                allow_partial,
                json: global.json,
            };
            let reply = crate::import::run(&args, |request| dispatch(&global, request))?;
            return Ok(print(reply));
        }
        Command::Process(ProcessCommand::Export {
            process,
            format: crate::ExportFormat::Corezoid,
            out,
        }) => {
            let reply = if process.ends_with(".yaml") || process.ends_with(".yml") {
                // A file: exported here, no store needed.
                let text = crate::check::read_process_file(Path::new(&process))
                    .map_err(|e| anyhow::anyhow!("cannot read {process}: {e}"))?;
                let checked = conveyor_model::check(&process, &text);
                let errors: Vec<String> = checked.errors().map(|d| d.to_string()).collect();
                if !errors.is_empty() {
                    bail!("{process} has errors:\n{}", errors.join("\n"));
                }
                let text = conveyor_corezoid::export(&text, None)
                    .map_err(|e| anyhow::anyhow!("cannot export {process}: {e}"))?;
                Reply {
                    stdout: format!("{text}\n"),
                    stderr: String::new(),
                    code: 0,
                }
            } else {
                dispatch(&global, Request::ProcessExport { process })?
            };
            if let (Some(path), 0) = (&out, reply.code) {
                std::fs::write(path, &reply.stdout)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                return Ok(print(Reply {
                    stdout: if global.json {
                        format!("{}\n", json!({ "written": path.display().to_string() }))
                    } else {
                        format!("wrote {}\n", path.display())
                    },
                    stderr: String::new(),
                    code: 0,
                }));
            }
            return Ok(print(reply));
        }
        Command::Process(ProcessCommand::Templates) => {
            // Made without the store: the templates are in the binary.
            let answer = conveyor_commands::Answer::Templates {
                templates: conveyor_commands::template_list(),
            };
            return Ok(print(conveyor_commands::render::render(
                &answer,
                global.json,
            )));
        }
        Command::Serve {
            listen,
            allow_remote,
            options,
        } => {
            let place = place(&global)?;
            let (runtime, _mark) = open_engine(&place, &global, EngineKind::Serve)?;
            let code = crate::serve::run(runtime, &place.dir, &listen, allow_remote, &options)?;
            checkpoint(&place);
            return Ok(code);
        }
        Command::Run { until_idle, wait } => return engine(&global, until_idle, wait),
        Command::Secrets(SecretsCommand::RotateKey { keep_old }) => {
            return rotate_key(&global, keep_old);
        }
        // `store stats` is an ordinary command (through a running server too); the others
        // rewrite or read all of the store and refuse while an engine runs.
        Command::Store(crate::StoreCommand::Stats) => Request::StoreStats,
        Command::Store(command) => return crate::store::run(&global, command),
        Command::Sandbox { listen, config } => {
            return crate::story::sandbox(&listen, config.as_deref());
        }
        Command::Demo => return crate::story::demo(store_options(&global)),
        Command::Bitrix(BitrixCommand::Authorize {
            process,
            portal,
            client_id,
            client_secret,
            scope,
            authorize_url,
            reference,
        }) => {
            let a = crate::story::Authorize {
                process,
                reference,
                portal,
                client_id,
                client_secret,
                scope,
                authorize_url,
            };
            return Ok(print(crate::story::authorize(
                a,
                global.json,
                |request, as_json| dispatch_as(&global, request, as_json),
            )?));
        }
        Command::Process(command) => process_request(&global, command)?,
        Command::Task(command) => task_request(command)?,
        Command::ApiKey(ApiKeyCommand::Create { name, process }) => Request::ApiKeyCreate {
            name,
            processes: process,
        },
        Command::ApiKey(ApiKeyCommand::List) => Request::ApiKeyList,
        Command::ApiKey(ApiKeyCommand::Delete { login }) => Request::ApiKeyDelete { login },
        Command::ApiKey(ApiKeyCommand::Rotate { login }) => Request::ApiKeyRotate { login },
    };
    if let Request::Drawn(text) = request {
        return Ok(print(Reply {
            stdout: text,
            stderr: String::new(),
            code: 0,
        }));
    }
    let reply = dispatch(&global, request)?;
    Ok(print(reply))
}

/// How long a command waits for a `serve` that is starting (until its API answers),
/// and how long an engine that is starting waits for commands that hold the store.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Sends the request to the running server, or runs it here when there is none.
///
/// A `serve` that is starting marks the data dir (`engine.pid`) before it opens the
/// store, and writes `server.json` once its API listens: in between, the command waits
/// (up to [`LOCK_WAIT`]) and then goes through the API. A `server.json` left by a server
/// that died (kill -9) is passed over: nobody answers at its address, or its token is
/// refused. Another short command holding the store is waited for too. Only a
/// `conveyor run` (an engine without an API) is refused at once.
fn dispatch(global: &Global, request: Request) -> anyhow::Result<Reply> {
    dispatch_as(global, request, global.json)
}

/// [`dispatch`], rendered as JSON or not whatever `--json` says.
fn dispatch_as(global: &Global, request: Request, as_json: bool) -> anyhow::Result<Reply> {
    let place = place(global)?;
    let dir = &place.dir;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let mut pause = std::time::Duration::from_millis(10);
    loop {
        if let Some(info) = client::read(dir)
            && let Some(reply) = client::send(&info, &request, as_json)?
        {
            return Ok(reply);
        }
        let engine = engine_running(dir);
        if engine != Some(EngineKind::Serve) {
            match place.open_runtime(&key_source(dir, global)?)? {
                Some(runtime) => return Ok(execute(&runtime, request, as_json)),
                None if engine == Some(EngineKind::Run) => return Err(place.locked().into()),
                None => {}
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(match engine {
                Some(EngineKind::Serve) => anyhow::anyhow!(
                    "a `conveyor serve` is starting on {} but its API did not answer within {} s; try again once it is up",
                    dir.display(),
                    LOCK_WAIT.as_secs()
                ),
                _ => place.locked().into(),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(100));
    }
}

/// The PostgreSQL database of `--store` / `CONVEYOR_STORE`, if one is named.
pub fn postgres(global: &Global) -> anyhow::Result<Option<&str>> {
    match global.store.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(url) if conveyor_commands::is_postgres_url(url) => Ok(Some(url)),
        Some(other) => Err(UsageError(format!(
            "--store {other}: expected a PostgreSQL URL (postgres://user@host:5432/db); leave it out for the data directory's own store"
        ))
        .into()),
    }
}

/// How an engine connects to PostgreSQL: `CONVEYOR_PG_POOL` connections at most
/// (default 8), claims leased for `CONVEYOR_PG_LEASE_MS` (default 10 000).
pub fn pg_options() -> anyhow::Result<conveyor_commands::PgOptions> {
    let mut options = conveyor_commands::PgOptions::default();
    let number = |name: &str| -> anyhow::Result<Option<u64>> {
        match std::env::var(name) {
            Ok(v) if !v.trim().is_empty() => v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .map(Some)
                .ok_or_else(|| {
                    UsageError(format!("{name}={v}: expected a positive number")).into()
                }),
            _ => Ok(None),
        }
    };
    if let Some(n) = number("CONVEYOR_PG_POOL")? {
        options.pool_size = n.min(1_000) as usize;
    }
    if let Some(ms) = number("CONVEYOR_PG_LEASE_MS")? {
        options.lease = std::time::Duration::from_millis(ms.max(300));
    }
    Ok(options)
}

/// Where the store is: the PostgreSQL database of `--store`, else the data dir's own.
pub fn place(global: &Global) -> anyhow::Result<Place> {
    Ok(Place {
        dir: data_dir(global)?,
        options: store_options(global),
        postgres: match postgres(global)? {
            Some(url) => Some(conveyor_commands::Postgres {
                url: url.to_string(),
                options: pg_options()?,
            }),
            None => None,
        },
    })
}

/// Opens the store for an engine (`serve`, `run`): refused at once when another engine
/// runs this data dir; else the data dir is marked as this engine's first (so commands
/// that start now wait for its API instead of taking the store), then the store is
/// opened, waiting up to [`LOCK_WAIT`] for commands that hold it.
pub fn open_engine(
    place: &Place,
    global: &Global,
    kind: EngineKind,
) -> anyhow::Result<(Arc<Runtime>, EngineMark)> {
    let dir = &place.dir;
    if engine_running(dir).is_some() {
        return Err(place.locked().into());
    }
    let mark = EngineMark::new(dir, kind);
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let mut pause = std::time::Duration::from_millis(5);
    loop {
        if let Some(runtime) = place.open_runtime(&key_source(dir, global)?)? {
            return Ok((runtime, mark));
        }
        if std::time::Instant::now() >= deadline {
            return Err(place.locked().into());
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(50));
    }
}

/// Writes a reply; a closed pipe (`conveyor … | head`) is not an error.
pub fn print(reply: Reply) -> ExitCode {
    let _ = std::io::stdout().write_all(reply.stdout.as_bytes());
    let _ = std::io::stderr().write_all(reply.stderr.as_bytes());
    ExitCode::from(reply.code)
}

fn process_request(global: &Global, command: ProcessCommand) -> anyhow::Result<Request> {
    Ok(match command {
        ProcessCommand::Clone { source, alias, set } => {
            let definition = match templates::find(&source) {
                Some(text) => text.to_string(),
                None if source.ends_with(".yaml")
                    || source.ends_with(".yml")
                    || source.contains('/') =>
                {
                    crate::check::read_process_file(std::path::Path::new(&source))
                        .map_err(|e| anyhow::anyhow!("cannot read {source}: {e}"))?
                }
                None => bail!(
                    "no template `{source}` (shipped: {}); to clone a file, give its path ending in .yaml",
                    templates::names().join(", ")
                ),
            };
            Request::ProcessClone {
                source,
                definition,
                alias,
                settings: args::task_data(&set, None)?,
            }
        }
        ProcessCommand::Graph { process, format }
            if process.ends_with(".yaml")
                || process.ends_with(".yml")
                || templates::find(&process).is_some() =>
        {
            // A file or a shipped template: drawn here, no store needed.
            let text = match templates::find(&process) {
                Some(text) => text.to_string(),
                None => crate::check::read_process_file(std::path::Path::new(&process))
                    .map_err(|e| anyhow::anyhow!("cannot read {process}: {e}"))?,
            };
            let checked = conveyor_model::check(&process, &text);
            let Some(definition) = checked.process else {
                let errors: Vec<String> = checked.errors().map(|d| d.to_string()).collect();
                bail!("{process} has errors:\n{}", errors.join("\n"));
            };
            return Ok(Request::Drawn(conveyor_commands::draw(
                &definition,
                None,
                format.into(),
            )));
        }
        ProcessCommand::Graph { process, format } => Request::ProcessGraph {
            process,
            format: format.into(),
        },
        ProcessCommand::List => Request::ProcessList,
        ProcessCommand::Show { process } => Request::ProcessShow { process },
        ProcessCommand::Update { process, file } => Request::ProcessUpdate {
            process,
            definition: crate::check::read_process_file(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?,
            file: file.display().to_string(),
        },
        ProcessCommand::Url { process, rotate } => {
            let dir = data_dir(global)?;
            let address = client::read(&dir)
                .map(|i| i.address)
                .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
            Request::ProcessUrl {
                process,
                rotate,
                base: format!("http://{address}"),
            }
        }
        ProcessCommand::Check { .. }
        | ProcessCommand::Export { .. }
        | ProcessCommand::Templates
        | ProcessCommand::Import { .. } => {
            bail!("not a store command")
        }
    })
}

fn task_request(command: TaskCommand) -> anyhow::Result<Request> {
    Ok(match command {
        TaskCommand::Add {
            process,
            reference,
            from_json,
            pairs,
        } => Request::TaskAdd {
            process,
            reference,
            data: args::task_data(&pairs, from_json.as_deref())?,
        },
        TaskCommand::Show {
            process,
            task,
            reveal,
        } => Request::TaskShow {
            process,
            task,
            reveal,
        },
        TaskCommand::List {
            process,
            node,
            limit,
        } => Request::TaskList {
            process,
            node,
            limit,
        },
        TaskCommand::Modify {
            process,
            task,
            from_json,
            force,
            pairs,
        } => {
            let data = args::task_data(&pairs, from_json.as_deref())?;
            if data.is_empty() {
                return Err(UsageError(
                    "nothing to modify: give `key=value` pairs or --from-json".into(),
                )
                .into());
            }
            Request::TaskModify {
                process,
                task,
                data,
                force,
            }
        }
        TaskCommand::Retry {
            process,
            task,
            pairs,
        } => Request::TaskRetry {
            process,
            task,
            data: args::task_data(&pairs, None)?,
        },
        TaskCommand::Goto {
            process,
            task,
            node,
            pairs,
        } => Request::TaskGoto {
            process,
            task,
            node,
            data: args::task_data(&pairs, None)?,
        },
        TaskCommand::History { process, task } => Request::TaskHistory { process, task },
        TaskCommand::Delete { process, task } => Request::TaskDelete { process, task },
    })
}

pub fn data_dir(global: &Global) -> anyhow::Result<PathBuf> {
    match &global.data {
        Some(dir) => {
            // Named here, not found later by the store as a bare OS error.
            if dir.as_os_str().is_empty() {
                return Err(UsageError(
                    "--data (or CONVEYOR_DATA): the data directory is empty".into(),
                )
                .into());
            }
            if !dir.exists()
                && let Ok(target) = std::fs::read_link(dir)
            {
                return Err(UsageError(format!(
                    "--data (or CONVEYOR_DATA): {} is a symbolic link to {}, which does not exist; create it or give another directory",
                    dir.display(),
                    target.display()
                ))
                .into());
            }
            if dir.exists() && !dir.is_dir() {
                return Err(UsageError(format!(
                    "--data (or CONVEYOR_DATA): {} is not a directory; give the directory that holds (or is to hold) the store",
                    dir.display()
                ))
                .into());
            }
            Ok(dir.clone())
        }
        None => dirs::data_dir().map(|d| d.join("conveyor")).context(
            "no data directory known for this platform: pass --data DIR or set CONVEYOR_DATA",
        ),
    }
}

/// Where the keys are: `--key-dir` / `CONVEYOR_KEY_DIR`, else the platform's config dir;
/// and `CONVEYOR_SECRET_KEY`. The key directory may not be inside the data directory
/// (a copy of the data dir would carry its key).
pub fn key_source(data: &Path, global: &Global) -> anyhow::Result<KeySource> {
    let dir = match &global.key_dir {
        Some(dir) if !dir.as_os_str().is_empty() => dir.clone(),
        _ => dirs::config_dir()
            .map(|d| d.join("conveyor").join("keys"))
            .context(
                "no config directory known for this platform: set CONVEYOR_KEY_DIR (or --key-dir) to where the key that seals secrets should be kept",
            )?,
    };
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    if absolute(&dir).starts_with(absolute(data)) {
        return Err(UsageError(format!(
            "the key directory {} is inside the data directory {}: a copy of the data dir would carry the key that seals its secrets; keep keys elsewhere",
            dir.display(),
            data.display()
        ))
        .into());
    }
    let env_key = std::env::var("CONVEYOR_SECRET_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty());
    Ok(KeySource { dir, env_key })
}

pub fn store_options(global: &Global) -> StoreOptions {
    StoreOptions {
        cache_bytes: global.store_cache_mb.saturating_mul(1024 * 1024),
        kind: match global.store_kind {
            crate::StoreKindArg::Log => StoreKind::Log,
            crate::StoreKindArg::Sled => StoreKind::Sled,
        },
        reclaim: conveyor_commands::ReclaimPolicy {
            enabled: !global.sled_reclaim_off,
            floor_bytes: global.sled_reclaim_floor_mb.saturating_mul(1024 * 1024),
            interval: std::time::Duration::from_secs(global.sled_reclaim_every_s),
            ..conveyor_commands::ReclaimPolicy::default()
        },
    }
}

/// After an engine stopped cleanly: a sled store is opened and closed once, so the next
/// start reads a fresh snapshot (see [`Place::checkpoint`]). Best effort: a failure only
/// costs the next start time.
pub fn checkpoint(place: &Place) {
    if !place.needs_checkpoint() {
        return;
    }
    eprintln!("stopped; writing a snapshot of the store for a quick next start");
    let started = std::time::Instant::now();
    match place.checkpoint() {
        Ok(()) => tracing::info!(
            millis = started.elapsed().as_millis() as u64,
            "store checkpointed for a quick next start"
        ),
        Err(e) => tracing::warn!("no checkpoint of the store at shutdown: {e}"),
    }
}

fn engine_pid_file(dir: &Path) -> PathBuf {
    dir.join("engine.pid")
}

/// Which engine holds a data dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// `conveyor serve`: commands go through its API.
    Serve,
    /// `conveyor run`: no API; commands are refused while it runs.
    Run,
}

/// The engine named in `engine.pid` (`PID` and its kind), if that process is alive.
pub fn engine_running(dir: &Path) -> Option<EngineKind> {
    let text = std::fs::read_to_string(engine_pid_file(dir)).ok()?;
    let mut words = text.split_whitespace();
    let pid = words.next()?.parse::<u32>().ok()?;
    if pid == std::process::id() {
        return None;
    }
    if cfg!(target_os = "linux") {
        // Alive, and an engine: after a crash and a reboot the pid may be another
        // program's, which must not hold up commands or a new engine.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let engine = cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == b"serve" || arg == b"run");
        if !engine {
            return None;
        }
    }
    Some(match words.next() {
        Some("serve") => EngineKind::Serve,
        _ => EngineKind::Run,
    })
}

/// Marks the data dir as held by this process's engine until dropped.
pub struct EngineMark(PathBuf);

impl EngineMark {
    pub fn new(dir: &Path, kind: EngineKind) -> EngineMark {
        let path = engine_pid_file(dir);
        let kind = match kind {
            EngineKind::Serve => "serve",
            EngineKind::Run => "run",
        };
        let _ = std::fs::create_dir_all(dir);
        let _ = std::fs::write(&path, format!("{} {kind}\n", std::process::id()));
        EngineMark(path)
    }
}

impl Drop for EngineMark {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn engine(
    global: &Global,
    until_idle: bool,
    wait: Option<std::time::Duration>,
) -> anyhow::Result<ExitCode> {
    if wait.is_some() && !until_idle {
        return Err(UsageError("--wait: goes with --until-idle".into()).into());
    }
    let place = place(global)?;
    let dir = &place.dir;
    if let Some(info) = client::read(dir) {
        if until_idle {
            // The server's engine is running: wait until it is idle instead.
            let request = Request::WaitIdle {
                wait_millis: wait.map_or(0, |w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX)),
            };
            if let Some(reply) = client::send(&info, &request, global.json)? {
                return Ok(print(reply));
            }
        } else if client::send(&info, &Request::ApiKeyList, false)?.is_some() {
            bail!(
                "a server (pid {}) is running this data dir at {}; its engine is already running",
                info.pid,
                info.address
            );
        }
    }
    let (runtime, _mark) = open_engine(&place, global, EngineKind::Run)?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let stats = tokio.block_on(async move {
        let mode = if let Some(wait) = wait {
            RunMode::UntilIdleWithin(wait)
        } else if until_idle {
            RunMode::UntilIdle
        } else {
            tracing::info!("engine running; stop with Ctrl-C or SIGTERM");
            RunMode::UntilShutdown(Box::pin(shutdown_signal()))
        };
        runtime.run(mode).await
    })?;
    // Every handle on the store is gone with the async runtime's tasks.
    drop(tokio);
    if !until_idle {
        checkpoint(&place);
    }
    let mut reply = Reply::default();
    if global.json {
        reply.line(json!({"steps": stats.steps, "failed_steps": stats.failed_steps}).to_string());
    } else if until_idle {
        reply.line(format!("idle after {} steps", stats.steps));
    }
    Ok(print(reply))
}

/// `conveyor secrets rotate-key` ([`conveyor_commands::rotate_key`]). Refused while a
/// server runs this data dir: it rewrites every task, which only its engine's steps may
/// write while it runs. Another short command holding the store is waited for up to 3 s;
/// a `conveyor run` is not.
fn rotate_key(global: &Global, keep_old: bool) -> anyhow::Result<ExitCode> {
    let place = place(global)?;
    if let Some(info) = client::read(&place.dir)
        && client::send(&info, &Request::ApiKeyList, false)?.is_some()
    {
        bail!(
            "a server (pid {}) is running this data dir at {}: stop it first (rotate-key rewrites every task, which must not race with its engine)",
            info.pid,
            info.address
        );
    }
    let source = key_source(&place.dir, global)?;
    let patience = match engine_running(&place.dir) {
        Some(_) => std::time::Duration::ZERO,
        None => std::time::Duration::from_secs(3),
    };
    let rotated = conveyor_commands::rotate_key(&place, &source, keep_old, patience)?;
    Ok(print(conveyor_commands::render_rotated(
        &rotated,
        global.json,
    )))
}

pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
