//! `store verify | repair | migrate | compact`: commands on the store itself, as a typed
//! [`StoreRequest`] run by [`store_command`] into a typed [`StoreAnswer`], rendered by
//! [`render_store`]. They need the store to themselves: the caller refuses while an
//! engine runs the data dir; here a short command that holds it is waited for a moment.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use conveyor_store::{Counts, LogCut, LogStore, PgStore, Store as _, StoreError, StoreKind};
use serde_json::json;

use crate::place::{Place, Postgres};
use crate::{CommandError, Reply};

/// A command on the store itself.
#[derive(Debug, Clone)]
pub enum StoreRequest {
    /// Read everything the store holds; the key is needed to open its sealed values.
    Verify { key: conveyor_store::KeySource },
    /// Drop what keeps a log store from opening (only with `yes`; else say what).
    Repair { yes: bool },
    /// Rewrite the data dir's store as another kind, or copy it into PostgreSQL.
    Migrate { to: MigrateTarget },
    /// Rewrite the store without what it no longer needs (PostgreSQL: `VACUUM FULL`).
    Compact,
}

/// Where `store migrate` goes.
#[derive(Debug, Clone)]
pub enum MigrateTarget {
    Kind(StoreKind),
    Postgres(Postgres),
}

/// What a store command found or did.
#[derive(Debug, Clone)]
pub enum StoreAnswer {
    Verified(Verified),
    Repair(Repair),
    Migrated {
        dir: PathBuf,
        report: conveyor_store::MigrateReport,
    },
    CopiedToPostgres {
        dir: PathBuf,
        from: StoreKind,
        place: String,
        counts: Counts,
    },
    Compacted {
        dir: PathBuf,
        report: conveyor_store::CompactReport,
    },
    CompactedPostgres {
        place: String,
        before: u64,
        after: u64,
    },
}

/// `store verify`: what was read, and every problem.
#[derive(Debug, Clone)]
pub struct Verified {
    pub kind: StoreKind,
    pub path: PathBuf,
    /// A log store's frames, read one by one.
    pub log: Option<LogRead>,
    /// The records read through the store's indexes (`None`: not opened, as opening it
    /// would change it).
    pub counts: Option<Counts>,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct LogRead {
    pub segments: usize,
    pub frames: u64,
    pub bytes: u64,
}

/// `store repair`: what it found, and what it dropped or would drop.
#[derive(Debug, Clone)]
pub enum Repair {
    /// A sled store recovers its own log.
    Sled { path: PathBuf },
    /// Damage no dropped frame can fix; nothing changed.
    Unrepairable {
        reason: String,
        problems: Vec<String>,
    },
    /// A whole log store: nothing to drop.
    Whole { path: PathBuf },
    /// What keeps the log store from opening: dropped when `dropped`.
    Cuts {
        problems: Vec<String>,
        cuts: Vec<LogCut>,
        dropped: bool,
    },
}

impl StoreAnswer {
    /// Whether the command says something is wrong (exit code 1): problems found, or a
    /// repair not done.
    pub fn failed(&self) -> bool {
        match self {
            StoreAnswer::Verified(v) => !v.problems.is_empty(),
            StoreAnswer::Repair(Repair::Unrepairable { .. }) => true,
            StoreAnswer::Repair(Repair::Cuts { dropped, .. }) => !dropped,
            _ => false,
        }
    }
}

/// Runs a store command on `place`.
pub fn store_command(place: &Place, request: StoreRequest) -> Result<StoreAnswer, CommandError> {
    if let (StoreRequest::Compact, Some(pg)) = (&request, &place.postgres) {
        return compact_postgres(pg);
    }
    let dir = &place.dir;
    if !LogStore::dir_in(dir).exists() && !conveyor_store::SledStore::dir_in(dir).exists() {
        return Err(CommandError::NoStore { dir: dir.clone() });
    }
    match request {
        StoreRequest::Verify { key } => verify(place, &key),
        StoreRequest::Repair { yes } => repair(place, yes),
        StoreRequest::Migrate {
            to: MigrateTarget::Kind(to),
        } => {
            let report = waiting(|| conveyor_store::migrate(dir, to, place.options))?;
            Ok(StoreAnswer::Migrated {
                dir: dir.clone(),
                report,
            })
        }
        StoreRequest::Migrate {
            to: MigrateTarget::Postgres(pg),
        } => migrate_to_postgres(place, &pg),
        StoreRequest::Compact => {
            let report = waiting(|| conveyor_store::compact(dir, place.options))?;
            Ok(StoreAnswer::Compacted {
                dir: dir.clone(),
                report,
            })
        }
    }
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

fn verify(place: &Place, key: &conveyor_store::KeySource) -> Result<StoreAnswer, CommandError> {
    let dir = &place.dir;
    let kind = place.kind();
    let mut problems: Vec<String> = Vec::new();
    let mut log = None;
    if kind == StoreKind::Log {
        let report = waiting(|| LogStore::inspect(dir))?;
        problems.extend(report.problems.iter().map(|p| p.to_string()));
        log = Some(LogRead {
            segments: report.segments,
            frames: report.frames,
            bytes: report.bytes,
        });
    }
    let mut counts = None;
    if problems.is_empty() {
        // Read only: a verify changes nothing (no compaction meanwhile).
        let store = waiting(|| conveyor_store::open_to_read(dir, place.options))?;
        match conveyor_store::SealedStore::open(
            dir,
            store,
            key,
            std::sync::Arc::new(conveyor_runtime::declared_secret_keys),
        ) {
            Ok(sealed) => {
                let (read, found) = conveyor_store::read_everything(&sealed);
                problems.extend(found);
                counts = Some(read);
            }
            Err(e) => problems.push(format!("the key that seals its secrets: {e}")),
        }
    }
    Ok(StoreAnswer::Verified(Verified {
        kind,
        path: kind.dir_in(dir),
        log,
        counts,
        problems,
    }))
}

fn repair(place: &Place, yes: bool) -> Result<StoreAnswer, CommandError> {
    let dir = &place.dir;
    let kind = place.kind();
    if kind == StoreKind::Sled {
        return Ok(StoreAnswer::Repair(Repair::Sled {
            path: kind.dir_in(dir),
        }));
    }
    let report = waiting(|| LogStore::inspect(dir))?;
    let problems: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
    if let Some(reason) = report.unrepairable {
        return Ok(StoreAnswer::Repair(Repair::Unrepairable {
            reason,
            problems,
        }));
    }
    if report.cuts.is_empty() {
        return Ok(StoreAnswer::Repair(Repair::Whole {
            path: LogStore::dir_in(dir),
        }));
    }
    if yes {
        waiting(|| LogStore::repair(dir))?;
    }
    Ok(StoreAnswer::Repair(Repair::Cuts {
        problems,
        cuts: report.cuts,
        dropped: yes,
    }))
}

/// `store compact --store postgres://…`: rewrites Conveyor's tables (`VACUUM FULL`).
/// Engines may keep running: each waits while the table it needs is rewritten.
fn compact_postgres(pg: &Postgres) -> Result<StoreAnswer, CommandError> {
    let store = PgStore::open(&pg.url, pg.options.clone())?;
    let done = store.vacuum_full()?;
    Ok(StoreAnswer::CompactedPostgres {
        place: store.place().to_string(),
        before: done.before,
        after: done.after,
    })
}

/// `store migrate --to postgres://…`: copies everything of the data dir's store, as
/// stored (sealed values stay sealed under the data dir's key), into an empty
/// PostgreSQL database, then compares the two record by record. The data dir's store is
/// left as it was: engines started with `--store URL` use the database from then on.
fn migrate_to_postgres(place: &Place, pg: &Postgres) -> Result<StoreAnswer, CommandError> {
    let dir = &place.dir;
    let source = waiting(|| conveyor_store::open_to_read(dir, place.options))?;
    let target = PgStore::open(&pg.url, pg.options.clone())?;
    let place_name = target.place().to_string();
    if !target.processes()?.is_empty() || !target.api_keys()?.is_empty() {
        return Err(CommandError::DatabaseNotEmpty { place: place_name });
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
        return Err(CommandError::CopyDiffers {
            place: place_name,
            dir: dir.clone(),
            differences,
        });
    }
    let counts = conveyor_store::counts(source.as_ref())?;
    Ok(StoreAnswer::CopiedToPostgres {
        dir: dir.clone(),
        from: place.kind(),
        place: place_name,
        counts,
    })
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

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A store command's answer as the CLI prints it (`as_json`: `--json`); exit code 1 when
/// it [failed](StoreAnswer::failed).
pub fn render_store(answer: &StoreAnswer, as_json: bool) -> Reply {
    let mut reply = Reply::default();
    match answer {
        StoreAnswer::Verified(v) => render_verified(&mut reply, v, as_json),
        StoreAnswer::Repair(r) => render_repair(&mut reply, r, as_json),
        StoreAnswer::Migrated { .. }
        | StoreAnswer::CopiedToPostgres { .. }
        | StoreAnswer::Compacted { .. }
        | StoreAnswer::CompactedPostgres { .. } => render_rewritten(&mut reply, answer, as_json),
    }
    // `repair --json` without `--yes` has always exited 0 (its `dropped: false` says it).
    let json_repair_not_done =
        as_json && matches!(answer, StoreAnswer::Repair(Repair::Cuts { .. }));
    if answer.failed() && !json_repair_not_done {
        reply.code = 1;
    }
    reply
}

/// `store migrate` and `store compact`: what was rewritten, and where.
fn render_rewritten(reply: &mut Reply, answer: &StoreAnswer, as_json: bool) {
    match answer {
        StoreAnswer::Migrated { dir, report } => {
            if as_json {
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
        }
        StoreAnswer::CopiedToPostgres {
            dir,
            from,
            place,
            counts,
        } => {
            if as_json {
                reply.line(
                    json!({
                        "from": from.name(),
                        "to": place,
                        "records": counts_json(counts),
                    })
                    .to_string(),
                );
            } else {
                reply.line(format!(
                    "copied the store in {} into {place}, compared record by record: {}",
                    dir.display(),
                    counts_text(counts)
                ));
                reply.line(format!(
                "start engines with `--store {place}` (and this data dir's key: see docs/scaling.md); the data dir's own store is left as it was"
            ));
            }
        }
        StoreAnswer::Compacted { dir, report } => {
            if as_json {
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
        }
        StoreAnswer::CompactedPostgres {
            place,
            before,
            after,
        } => {
            if as_json {
                reply.line(
                    json!({
                        "kind": "postgres",
                        "bytes_before": before,
                        "bytes_after": after,
                    })
                    .to_string(),
                );
            } else {
                reply.line(format!(
                "compacted the PostgreSQL store at {place} (VACUUM FULL of its tables): {:.1} MiB on disk before, {:.1} MiB after",
                mib(*before),
                mib(*after)
            ));
            }
        }
        StoreAnswer::Verified(_) | StoreAnswer::Repair(_) => {}
    }
}

fn render_verified(reply: &mut Reply, v: &Verified, as_json: bool) {
    if as_json {
        reply.line(
            json!({
                "store": v.kind.name(),
                "path": v.path.display().to_string(),
                "segments": v.log.map(|r| r.segments),
                "frames": v.log.map(|r| r.frames),
                "bytes": v.log.map(|r| r.bytes),
                "records": v.counts.as_ref().map(counts_json),
                "problems": v.problems,
            })
            .to_string(),
        );
        return;
    }
    reply.line(format!(
        "verified the {} store in {}",
        v.kind.name(),
        v.path.display()
    ));
    if let Some(log) = &v.log {
        reply.line(format!(
            "  log: {} segment(s), {} whole frame(s), {} bytes read",
            log.segments, log.frames, log.bytes
        ));
    }
    match &v.counts {
        Some(c) => reply.line(format!("  read: {}", counts_text(c))),
        None => reply.line(
            "  the records were not read through the store's indexes: opening it as it is would change it (see `conveyor store repair`)",
        ),
    }
    for problem in &v.problems {
        reply.line(format!("problem: {problem}"));
    }
    if v.problems.is_empty() {
        reply.line("no problems found");
    } else {
        reply.line(format!("{} problem(s) found", v.problems.len()));
    }
}

fn render_repair(reply: &mut Reply, r: &Repair, as_json: bool) {
    match r {
        Repair::Sled { path } => {
            let text = format!(
                "the sled store in {} has nothing for conveyor to drop: sled recovers its own log when it opens (`conveyor store verify` reads everything)",
                path.display()
            );
            if as_json {
                reply.line(json!({"store": "sled", "cuts": [], "note": text}).to_string());
            } else {
                reply.line(text);
            }
        }
        Repair::Unrepairable { reason, problems } => {
            if as_json {
                reply.line(
                    json!({"store": "log", "cuts": [], "unrepairable": reason, "problems": problems})
                        .to_string(),
                );
            } else {
                for problem in problems {
                    reply.line(format!("problem: {problem}"));
                }
                reply.line(format!(
                    "cannot be repaired by dropping frames: {reason}; nothing was changed"
                ));
            }
        }
        Repair::Whole { path } => {
            if as_json {
                reply.line(json!({"store": "log", "cuts": [], "dropped": false}).to_string());
            } else {
                reply.line(format!(
                    "nothing to drop: the log store in {} is whole",
                    path.display()
                ));
            }
        }
        Repair::Cuts {
            problems,
            cuts,
            dropped,
        } => render_cuts(reply, problems, cuts, *dropped, as_json),
    }
}

fn render_cuts(
    reply: &mut Reply,
    problems: &[String],
    cuts: &[LogCut],
    dropped: bool,
    as_json: bool,
) {
    let frames: u64 = cuts.iter().map(|c| c.frames).sum();
    let bytes: u64 = cuts.iter().map(|c| c.bytes).sum();
    if as_json {
        let cuts: Vec<_> = cuts
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
            .collect();
        reply.line(
            json!({"store": "log", "cuts": cuts, "frames": frames, "bytes": bytes, "dropped": dropped})
                .to_string(),
        );
        return;
    }
    for problem in problems {
        reply.line(format!("problem: {problem}"));
    }
    reply.line(if dropped {
        "dropped:"
    } else {
        "to open again, the store must drop:"
    });
    for cut in cuts {
        reply.line(format!("  {cut}"));
    }
    reply.line(format!(
        "in all {bytes} bytes, with {frames} whole frame(s) (acknowledged commits) among them"
    ));
    if dropped {
        reply.line("the store opens again; `conveyor store verify` reads everything");
    } else {
        reply.line("nothing was dropped: run `conveyor store repair --yes` to drop it");
    }
}
