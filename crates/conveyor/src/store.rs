//! `conveyor store verify | repair | migrate | compact`: commands on the store itself. They need
//! it to themselves, so they refuse while an engine (`serve`, `run`) runs the data dir,
//! and wait a moment for a short command that holds it.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use conveyor_store::{Counts, LogStore, SealedStore, Store as _, StoreError, StoreKind};
use serde_json::json;

use crate::commands::{data_dir, engine_running, key_source, print, store_options};
use crate::{Global, MigrateTo, StoreCommand, StoreKindArg, client};
use conveyor_commands::{Reply, Request};

pub fn run(global: &Global, command: StoreCommand) -> anyhow::Result<ExitCode> {
    if let (StoreCommand::Compact, Some(url)) = (&command, crate::commands::postgres(global)?) {
        return Ok(print(compact_postgres(url, global)?));
    }
    let dir = data_dir(global)?;
    refuse_if_engine(&dir)?;
    if !LogStore::dir_in(&dir).exists() && !conveyor_store::SledStore::dir_in(&dir).exists() {
        bail!("{} holds no store", dir.display());
    }
    let reply = match command {
        StoreCommand::Verify => verify(&dir, global)?,
        StoreCommand::Repair { yes } => repair(&dir, global, yes)?,
        StoreCommand::Migrate { to } => migrate(&dir, global, to)?,
        StoreCommand::Compact => compact(&dir, global)?,
        StoreCommand::Stats => bail!("`store stats` is not run here (it is an ordinary command)"),
    };
    Ok(print(reply))
}

/// Refused while an engine runs the data dir: these commands read or rewrite all of
/// the store, which must not race with an engine's steps.
fn refuse_if_engine(dir: &Path) -> anyhow::Result<()> {
    if let Some(info) = client::read(dir)
        && client::send(&info, &Request::ApiKeyList, false)?.is_some()
    {
        bail!(
            "a server (pid {}) is running this data dir at {}: stop it first (`conveyor store` needs the store to itself)",
            info.pid,
            info.address
        );
    }
    if engine_running(dir).is_some() {
        return Err(StoreError::Locked {
            path: dir.display().to_string(),
        }
        .into());
    }
    Ok(())
}

/// `f`, again for up to 3 s while the store is held (by a short command).
fn waiting<T>(mut f: impl FnMut() -> conveyor_store::Result<T>) -> conveyor_store::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match f() {
            Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

fn counts_text(c: &Counts) -> String {
    format!(
        "{} process(es), {} task(s), {} ref(s), {} timer(s), {} ready, {} inbox message(s), {} history event(s), {} API key(s)",
        c.processes, c.tasks, c.refs, c.timers, c.ready, c.messages, c.history_events, c.api_keys
    )
}

fn counts_json(c: &Counts) -> serde_json::Value {
    json!({
        "processes": c.processes,
        "tasks": c.tasks,
        "refs": c.refs,
        "timers": c.timers,
        "ready": c.ready,
        "messages": c.messages,
        "history_events": c.history_events,
        "api_keys": c.api_keys,
    })
}

fn verify(dir: &Path, global: &Global) -> anyhow::Result<Reply> {
    let options = store_options(global);
    let kind = conveyor_store::kind_of(dir, options);
    let mut reply = Reply::default();
    let mut problems: Vec<String> = Vec::new();
    let mut log = None;
    if kind == StoreKind::Log {
        let report = waiting(|| LogStore::inspect(dir))?;
        problems.extend(report.problems.iter().map(|p| p.to_string()));
        log = Some(report);
    }
    let mut counts = None;
    if problems.is_empty() {
        let store = waiting(|| conveyor_store::open(dir, options))?;
        match SealedStore::open(
            dir,
            store,
            &key_source(dir, global)?,
            Arc::new(conveyor_runtime::declared_secret_keys),
        ) {
            Ok(sealed) => {
                let (read, found) = conveyor_store::read_everything(&sealed);
                problems.extend(found);
                counts = Some(read);
            }
            Err(e) => problems.push(format!("the key that seals its secrets: {e}")),
        }
    }
    let store_dir = kind.dir_in(dir);
    if global.json {
        reply.line(
            json!({
                "store": kind.name(),
                "path": store_dir.display().to_string(),
                "segments": log.as_ref().map(|r| r.segments),
                "frames": log.as_ref().map(|r| r.frames),
                "bytes": log.as_ref().map(|r| r.bytes),
                "records": counts.as_ref().map(counts_json),
                "problems": problems,
            })
            .to_string(),
        );
    } else {
        reply.line(format!(
            "verified the {} store in {}",
            kind.name(),
            store_dir.display()
        ));
        if let Some(report) = &log {
            reply.line(format!(
                "  log: {} segment(s), {} whole frame(s), {} bytes read",
                report.segments, report.frames, report.bytes
            ));
        }
        match &counts {
            Some(c) => reply.line(format!("  read: {}", counts_text(c))),
            None => reply.line(
                "  the records were not read through the store's indexes: opening it as it is would change it (see `conveyor store repair`)",
            ),
        }
        for problem in &problems {
            reply.line(format!("problem: {problem}"));
        }
        if problems.is_empty() {
            reply.line("no problems found");
        } else {
            reply.line(format!("{} problem(s) found", problems.len()));
        }
    }
    if !problems.is_empty() {
        reply.code = 1;
    }
    Ok(reply)
}

fn repair(dir: &Path, global: &Global, yes: bool) -> anyhow::Result<Reply> {
    let kind = conveyor_store::kind_of(dir, store_options(global));
    let mut reply = Reply::default();
    if kind == StoreKind::Sled {
        let text = format!(
            "the sled store in {} has nothing for conveyor to drop: sled recovers its own log when it opens (`conveyor store verify` reads everything)",
            kind.dir_in(dir).display()
        );
        if global.json {
            reply.line(json!({"store": "sled", "cuts": [], "note": text}).to_string());
        } else {
            reply.line(text);
        }
        return Ok(reply);
    }
    let report = waiting(|| LogStore::inspect(dir))?;
    let frames: u64 = report.cuts.iter().map(|c| c.frames).sum();
    let bytes: u64 = report.cuts.iter().map(|c| c.bytes).sum();
    let cuts_json = || {
        report
            .cuts
            .iter()
            .map(|c| {
                json!({
                    "file": c.file.display().to_string(),
                    "from": c.from,
                    "bytes": c.bytes,
                    "frames": c.frames,
                    "remove": c.remove,
                })
            })
            .collect::<Vec<_>>()
    };
    if let Some(reason) = &report.unrepairable {
        if global.json {
            reply.line(
                json!({"store": "log", "cuts": [], "unrepairable": reason, "problems": report.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>()})
                    .to_string(),
            );
        } else {
            for problem in &report.problems {
                reply.line(format!("problem: {problem}"));
            }
            reply.line(format!(
                "cannot be repaired by dropping frames: {reason}; nothing was changed"
            ));
        }
        reply.code = 1;
        return Ok(reply);
    }
    if report.cuts.is_empty() {
        if global.json {
            reply.line(json!({"store": "log", "cuts": [], "dropped": false}).to_string());
        } else {
            reply.line(format!(
                "nothing to drop: the log store in {} is whole",
                LogStore::dir_in(dir).display()
            ));
        }
        return Ok(reply);
    }
    if yes {
        waiting(|| LogStore::repair(dir))?;
    }
    if global.json {
        reply.line(
            json!({"store": "log", "cuts": cuts_json(), "frames": frames, "bytes": bytes, "dropped": yes})
                .to_string(),
        );
    } else {
        for problem in &report.problems {
            reply.line(format!("problem: {problem}"));
        }
        reply.line(if yes {
            "dropped:"
        } else {
            "to open again, the store must drop:"
        });
        for cut in &report.cuts {
            reply.line(format!("  {cut}"));
        }
        reply.line(format!(
            "in all {bytes} bytes, with {frames} whole frame(s) (acknowledged commits) among them"
        ));
        if yes {
            reply.line("the store opens again; `conveyor store verify` reads everything");
        } else {
            reply.line("nothing was dropped: run `conveyor store repair --yes` to drop it");
            reply.code = 1;
        }
    }
    Ok(reply)
}

fn compact(dir: &Path, global: &Global) -> anyhow::Result<Reply> {
    let report = waiting(|| conveyor_store::compact(dir, store_options(global)))?;
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let mut reply = Reply::default();
    if global.json {
        reply.line(
            json!({
                "kind": report.kind.name(),
                "bytes_before": report.before,
                "bytes_after": report.after,
                "records": counts_json(&report.counts),
            })
            .to_string(),
        );
    } else {
        reply.line(format!(
            "compacted the {} store in {}: {:.1} MiB on disk before, {:.1} MiB after; compared record by record: {}",
            report.kind.name(),
            dir.display(),
            mib(report.before),
            mib(report.after),
            counts_text(&report.counts)
        ));
    }
    Ok(reply)
}

/// `store compact --store postgres://…`: rewrites Conveyor's tables (`VACUUM FULL`).
/// Engines may keep running: each waits while the table it needs is rewritten.
fn compact_postgres(url: &str, global: &Global) -> anyhow::Result<Reply> {
    let store = conveyor_store::PgStore::open(url, crate::commands::pg_options()?)?;
    let done = store.vacuum_full()?;
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let mut reply = Reply::default();
    if global.json {
        reply.line(
            json!({
                "kind": "postgres",
                "bytes_before": done.before,
                "bytes_after": done.after,
            })
            .to_string(),
        );
    } else {
        reply.line(format!(
            "compacted the PostgreSQL store at {} (VACUUM FULL of its tables): {:.1} MiB on disk before, {:.1} MiB after",
            store.place(),
            mib(done.before),
            mib(done.after)
        ));
    }
    Ok(reply)
}

fn migrate(dir: &Path, global: &Global, to: MigrateTo) -> anyhow::Result<Reply> {
    let to = match to {
        MigrateTo::Kind(StoreKindArg::Log) => StoreKind::Log,
        MigrateTo::Kind(StoreKindArg::Sled) => StoreKind::Sled,
        MigrateTo::Postgres(url) => return migrate_to_postgres(dir, global, &url),
    };
    let report = waiting(|| conveyor_store::migrate(dir, to, store_options(global)))?;
    let mut reply = Reply::default();
    if global.json {
        reply.line(
            json!({
                "from": report.from.name(),
                "to": report.to.name(),
                "records": counts_json(&report.counts),
                "kept": report.kept.display().to_string(),
            })
            .to_string(),
        );
    } else {
        reply.line(format!(
            "migrated the store in {} from {} to {}, compared record by record: {}",
            dir.display(),
            report.from.name(),
            report.to.name(),
            counts_text(&report.counts)
        ));
        reply.line(format!(
            "the old {} store is kept in {}: remove it once you no longer need it",
            report.from.name(),
            report.kept.display()
        ));
    }
    Ok(reply)
}

/// `store migrate --to postgres://…`: copies everything of the data dir's store, as
/// stored (sealed values stay sealed under the data dir's key), into an empty
/// PostgreSQL database, then compares the two record by record. The data dir's store is
/// left as it was: engines started with `--store URL` use the database from then on.
fn migrate_to_postgres(dir: &Path, global: &Global, url: &str) -> anyhow::Result<Reply> {
    let source = waiting(|| conveyor_store::open(dir, store_options(global)))?;
    let target = conveyor_store::PgStore::open(url, crate::commands::pg_options()?)?;
    let place = target.place().to_string();
    if !target.processes()?.is_empty() || !target.api_keys()?.is_empty() {
        bail!(
            "the database at {place} already holds processes or API keys: migrate into an empty database"
        );
    }
    let copied = conveyor_store::copy(source.as_ref(), &target)
        .and_then(|()| conveyor_store::compare(source.as_ref(), &target));
    let differences = match copied {
        Ok(differences) => differences,
        Err(e) => {
            // Leave nothing half-copied behind.
            let _ = target.drop_everything();
            return Err(e.into());
        }
    };
    if !differences.is_empty() {
        let _ = target.drop_everything();
        bail!(
            "the copy in {place} differs from the store in {} ({}); it was removed, the data dir is unchanged",
            dir.display(),
            differences.join("; ")
        );
    }
    let counts = conveyor_store::counts(source.as_ref())?;
    let mut reply = Reply::default();
    if global.json {
        reply.line(
            json!({
                "from": conveyor_store::kind_of(dir, store_options(global)).name(),
                "to": place,
                "records": counts_json(&counts),
            })
            .to_string(),
        );
    } else {
        reply.line(format!(
            "copied the store in {} into {place}, compared record by record: {}",
            dir.display(),
            counts_text(&counts)
        ));
        reply.line(format!(
            "start engines with `--store {place}` (and this data dir's key: see docs/scaling.md); the data dir's own store is left as it was"
        ));
    }
    Ok(reply)
}
