//! The commands that work on the store: processes, tasks, and the engine.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use conveyor_runtime::{RunMode, Runtime, Settings, SystemClock, TaskKey, mask_data};
use conveyor_store::SledStore;
use serde_json::{Value, json};

use crate::args::{self, UsageError};
use crate::output;
use crate::{Cli, Command, Global, ProcessCommand, TaskCommand, check, templates};

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let global = cli.global;
    match cli.command {
        Command::Process(ProcessCommand::Check {
            files,
            deny_warnings,
        }) => check::run(&files, global.json, deny_warnings),
        Command::Process(ProcessCommand::Templates) => {
            if global.json {
                println!("{}", json!(templates::names()));
            } else {
                for (name, text) in templates::TEMPLATES {
                    let title = conveyor_model::check(name, text)
                        .process
                        .and_then(|p| p.title)
                        .unwrap_or_default();
                    println!("{name:<20} {title}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Process(command) => {
            let runtime = open(&global)?;
            process(&runtime, command, global.json)
        }
        Command::Task(command) => {
            let runtime = open(&global)?;
            let code = task(&runtime, command, global.json)?;
            // What a command wrote is on disk before it says so.
            runtime.store().flush()?;
            Ok(code)
        }
        Command::Serve => engine(&global, false),
        Command::Run { until_idle } => engine(&global, until_idle),
    }
}

fn data_dir(global: &Global) -> anyhow::Result<PathBuf> {
    match &global.data {
        Some(dir) => Ok(dir.clone()),
        None => dirs::data_dir().map(|d| d.join("conveyor")).context(
            "no data directory known for this platform: pass --data DIR or set CONVEYOR_DATA",
        ),
    }
}

fn open(global: &Global) -> anyhow::Result<Arc<Runtime>> {
    let dir = data_dir(global)?;
    let store = SledStore::open(&dir)?;
    Ok(Runtime::new(
        Arc::new(store),
        Arc::new(SystemClock),
        Settings::default(),
    ))
}

fn process(runtime: &Runtime, command: ProcessCommand, as_json: bool) -> anyhow::Result<ExitCode> {
    match command {
        ProcessCommand::Clone { source, alias, set } => {
            let (name, text) = match templates::find(&source) {
                Some(text) => (source.clone(), text.to_string()),
                None if source.ends_with(".yaml")
                    || source.ends_with(".yml")
                    || source.contains('/') =>
                {
                    let text = std::fs::read_to_string(&source)
                        .with_context(|| format!("cannot read {source}"))?;
                    (source.clone(), text)
                }
                None => bail!(
                    "no template `{source}` (shipped: {}); to clone a file, give its path ending in .yaml",
                    templates::names().join(", ")
                ),
            };
            let settings = args::task_data(&set, None)?;
            let record = runtime.clone_process(&name, &text, alias.as_deref(), settings)?;
            let loaded = runtime.loaded(record.id)?;
            if as_json {
                println!(
                    "{}",
                    json!({"id": record.id, "alias": record.alias, "source": record.source, "name": loaded.process.name})
                );
            } else {
                let alias = record.alias.map(|a| format!(" (@{a})")).unwrap_or_default();
                println!("process {}{alias} cloned from {name}", record.id);
            }
            Ok(ExitCode::SUCCESS)
        }
        ProcessCommand::List => {
            let mut rows = Vec::new();
            for record in runtime.store().processes()? {
                let counters = runtime.store().counters(record.id)?;
                let (title, escalation_nodes): (String, Vec<String>) =
                    match runtime.loaded(record.id) {
                        Ok(l) => (
                            l.process
                                .title
                                .clone()
                                .unwrap_or_else(|| l.process.name.clone()),
                            l.process
                                .nodes
                                .values()
                                .filter(|n| {
                                    matches!(n.kind, conveyor_model::NodeKind::Escalation { .. })
                                })
                                .map(|n| n.id.clone())
                                .collect(),
                        ),
                        Err(_) => (String::new(), Vec::new()),
                    };
                let tasks: i64 = counters.iter().map(|(_, c)| c.now).sum();
                let escalated: i64 = counters
                    .iter()
                    .filter(|(n, _)| escalation_nodes.contains(n))
                    .map(|(_, c)| c.now)
                    .sum();
                rows.push((record, title, tasks, escalated));
            }
            if as_json {
                let list: Vec<Value> = rows
                    .iter()
                    .map(|(r, title, tasks, escalated)| {
                        json!({"id": r.id, "alias": r.alias, "title": title, "source": r.source, "version": r.version, "tasks": tasks, "in_escalation": escalated})
                    })
                    .collect();
                println!("{}", Value::Array(list));
            } else if rows.is_empty() {
                println!(
                    "no processes yet: try `conveyor process clone bitrix_oauth --alias bitrix`"
                );
            } else {
                println!(
                    "{:>4}  {:<16} {:<32} {:>7} {:>10}",
                    "id", "alias", "title", "tasks", "escalated"
                );
                for (r, title, tasks, escalated) in rows {
                    let alias = r.alias.map(|a| format!("@{a}")).unwrap_or_default();
                    println!(
                        "{:>4}  {alias:<16} {title:<32} {tasks:>7} {escalated:>10}",
                        r.id
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ProcessCommand::Show { process } => {
            let loaded = runtime.resolve(&process)?;
            let counters = runtime.store().counters(loaded.record.id)?;
            let count = |node: &str| {
                counters
                    .iter()
                    .find(|(n, _)| n == node)
                    .map(|(_, c)| *c)
                    .unwrap_or_default()
            };
            let p = &loaded.process;
            if as_json {
                let nodes: Vec<Value> = p
                    .nodes
                    .values()
                    .map(|n| {
                        let c = count(&n.id);
                        json!({"id": n.id, "kind": n.kind.name(), "title": n.title, "now": c.now, "total": c.total})
                    })
                    .collect();
                println!(
                    "{}",
                    json!({"id": loaded.record.id, "alias": loaded.record.alias, "name": p.name, "title": p.title, "source": loaded.record.source, "version": loaded.record.version, "nodes": nodes})
                );
            } else {
                let alias = loaded
                    .record
                    .alias
                    .as_ref()
                    .map(|a| format!(" @{a}"))
                    .unwrap_or_default();
                println!(
                    "process {}{alias}: {} ({}, version {})",
                    loaded.record.id,
                    p.title.as_deref().unwrap_or(&p.name),
                    loaded.record.source,
                    loaded.record.version
                );
                println!(
                    "  {:<20} {:<14} {:>7} {:>9}  title",
                    "node", "kind", "now", "total"
                );
                for n in p.nodes.values() {
                    let c = count(&n.id);
                    println!(
                        "  {:<20} {:<14} {:>7} {:>9}  {}",
                        n.id,
                        n.kind.name(),
                        c.now,
                        c.total,
                        n.title.as_deref().unwrap_or("")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ProcessCommand::Update { process, file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let record = runtime.update_process(&process, &file.display().to_string(), &text)?;
            if as_json {
                println!("{}", json!({"id": record.id, "version": record.version}));
            } else {
                println!(
                    "process {} updated to version {}",
                    record.id, record.version
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ProcessCommand::Check { .. } | ProcessCommand::Templates => unreachable_command(),
    }
}

fn unreachable_command() -> anyhow::Result<ExitCode> {
    bail!("this command does not use the store")
}

fn task(runtime: &Runtime, command: TaskCommand, as_json: bool) -> anyhow::Result<ExitCode> {
    match command {
        TaskCommand::Add {
            process,
            reference,
            from_json,
            pairs,
        } => {
            let data = args::task_data(&pairs, from_json.as_deref())?;
            let task = runtime.add_task(&process, reference.as_deref(), data)?;
            if as_json {
                println!(
                    "{}",
                    json!({"id": task.id, "process": task.process, "ref": task.reference, "node": task.node})
                );
            } else {
                let reference = task
                    .reference
                    .as_ref()
                    .map(|r| format!(" (ref {r})"))
                    .unwrap_or_default();
                println!(
                    "task {}{reference} added to process {} at `{}`",
                    task.id, task.process, task.node
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Show {
            process,
            task,
            reveal,
        } => {
            let (loaded, task) = runtime.find_task(&process, &TaskKey(task))?;
            let data = if reveal {
                task.data.clone()
            } else {
                mask_data(&loaded.process, &task.data)
            };
            if as_json {
                println!("{}", output::task_json(&task, data));
            } else {
                let reference = task
                    .reference
                    .as_ref()
                    .map(|r| format!(" (ref {r})"))
                    .unwrap_or_default();
                println!("task {}{reference} in process {}", task.id, task.process);
                let waiting = task
                    .wake
                    .map(|w| format!(" until {}", output::time(w.at)))
                    .unwrap_or_default();
                println!("  node:    {}", task.node);
                println!("  status:  {}{waiting}", task.status.as_str());
                println!("  created: {}", output::time(task.created));
                println!("  changed: {}", output::time(task.changed));
                println!("  data:");
                print!("{}", output::data_lines(&data));
            }
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::List {
            process,
            node,
            limit,
        } => {
            let loaded = runtime.resolve(&process)?;
            if let Some(n) = &node
                && !loaded.process.nodes.contains_key(n)
            {
                return Err(
                    UsageError(format!("--node: process {process} has no node `{n}`")).into(),
                );
            }
            let tasks = runtime
                .store()
                .tasks(loaded.record.id, node.as_deref(), limit)?;
            if as_json {
                let list: Vec<Value> = tasks
                    .iter()
                    .map(|t| output::task_json(t, mask_data(&loaded.process, &t.data)))
                    .collect();
                println!("{}", Value::Array(list));
            } else {
                println!(
                    "{:>8}  {:<20} {:<20} {:<8} changed",
                    "id", "ref", "node", "status"
                );
                for t in tasks {
                    println!(
                        "{:>8}  {:<20} {:<20} {:<8} {}",
                        t.id,
                        t.reference.as_deref().unwrap_or("-"),
                        t.node,
                        t.status.as_str(),
                        output::time(t.changed)
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Modify {
            process,
            task,
            from_json,
            pairs,
        } => {
            let data = args::task_data(&pairs, from_json.as_deref())?;
            if data.is_empty() {
                return Err(UsageError(
                    "nothing to modify: give `key=value` pairs or --from-json".into(),
                )
                .into());
            }
            let outcome = runtime.modify_task(&process, &TaskKey(task), data, "cli")?;
            if as_json {
                println!(
                    "{}",
                    json!({"id": outcome.task, "node": outcome.node, "accepted": true})
                );
            } else {
                println!(
                    "task {} modified (it was in `{}`; the engine applies the change when it next runs)",
                    outcome.task, outcome.node
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::History { process, task } => {
            let (_, task) = runtime.find_task(&process, &TaskKey(task))?;
            let history = runtime.store().history(task.id)?;
            if as_json {
                println!("{}", serde_json::to_string(&history)?);
            } else {
                for event in &history {
                    println!("{}", output::event_line(event));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn engine(global: &Global, until_idle: bool) -> anyhow::Result<ExitCode> {
    let runtime = open(global)?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let stats = tokio.block_on(async move {
        let mode = if until_idle {
            RunMode::UntilIdle
        } else {
            RunMode::UntilShutdown(Box::pin(shutdown_signal()))
        };
        if !until_idle {
            tracing::info!("engine running; stop with Ctrl-C or SIGTERM");
        }
        runtime.run(mode).await
    })?;
    if global.json {
        println!(
            "{}",
            json!({"steps": stats.steps, "failed_steps": stats.failed_steps})
        );
    } else if until_idle {
        println!("idle after {} steps", stats.steps);
    }
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
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
