//! What the store holds, per process (`conveyor store stats`, and `/metrics`): tasks live
//! and finished, history events kept, the oldest kept task, and the store's bytes on
//! disk. Computed by reading every task record (an admin's question, not the engine's
//! hot path); `/metrics` reuses a figure for a minute.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conveyor_store::TaskStatus;

use crate::{Result, Runtime, metrics};

/// How long `/metrics` reuses the figures.
const METRICS_EVERY: Duration = Duration::from_secs(60);

/// One process's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessStats {
    pub process: u64,
    pub alias: Option<String>,
    /// Tasks not finished (ready or waiting).
    pub live: u64,
    /// Tasks finished (`done` or `failed`) and still kept.
    pub finished: u64,
    /// History events kept, over all its tasks.
    pub history_events: u64,
    /// History events dropped by `settings.history`, over all its tasks.
    pub history_dropped: u64,
    /// The oldest task kept: its id and when it was created (ms since the epoch).
    pub oldest_task: Option<u64>,
    pub oldest_created: Option<i64>,
}

/// The store's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub processes: Vec<ProcessStats>,
    /// Bytes the store's files take on disk (all processes).
    pub bytes_on_disk: u64,
}

/// The last figures `/metrics` computed.
pub(crate) type StatsCache = std::sync::Mutex<Option<(Instant, Arc<StoreStats>)>>;

impl Runtime {
    /// Counts what the store holds, process by process.
    pub fn store_stats(&self) -> Result<StoreStats> {
        let mut processes = Vec::new();
        for record in self.store.processes()? {
            let bounds = self
                .loaded(record.id)
                .map(|l| l.process.settings.history)
                .unwrap_or_default();
            let mut stats = ProcessStats {
                process: record.id,
                alias: record.alias.clone(),
                ..ProcessStats::default()
            };
            for task in self.store.tasks(record.id, None, usize::MAX)? {
                match task.status {
                    TaskStatus::Done | TaskStatus::Failed => stats.finished += 1,
                    TaskStatus::Ready | TaskStatus::Waiting => stats.live += 1,
                }
                if stats.oldest_created.is_none_or(|c| task.created < c) {
                    stats.oldest_created = Some(task.created);
                    stats.oldest_task = Some(task.id);
                }
                // Only a history longer than its bounds can have been trimmed.
                if task.history_len > bounds.keep_first + 1 {
                    let (kept, dropped) = history_figures(&self.store.history(task.id)?);
                    stats.history_events += kept;
                    stats.history_dropped += dropped;
                } else {
                    stats.history_events += task.history_len;
                }
            }
            processes.push(stats);
        }
        Ok(StoreStats {
            processes,
            bytes_on_disk: self.store.size_on_disk()?,
        })
    }

    /// The figures for `/metrics`, computed at most once a minute.
    pub(crate) fn cached_stats(&self) -> Result<Arc<StoreStats>> {
        if let Ok(cache) = self.stats_cache.lock()
            && let Some((at, stats)) = cache.as_ref()
            && at.elapsed() < METRICS_EVERY
        {
            return Ok(Arc::clone(stats));
        }
        let stats = Arc::new(self.store_stats()?);
        if let Ok(mut cache) = self.stats_cache.lock() {
            *cache = Some((Instant::now(), Arc::clone(&stats)));
        }
        Ok(stats)
    }

    /// The store's figures in Prometheus's text format.
    pub(crate) fn stats_text(&self) -> Result<String> {
        let stats = self.cached_stats()?;
        let now = self.now();
        let mut out = String::new();
        metrics::header(
            &mut out,
            "conveyor_store_bytes",
            "gauge",
            "Bytes the store takes on disk.",
        );
        let _ = writeln!(out, "conveyor_store_bytes {}", stats.bytes_on_disk);
        if let Some(given) = self.store.space_given_back() {
            metrics::header(
                &mut out,
                "conveyor_store_rewrites_total",
                "counter",
                "Rewrites of the store that gave the space of removed tasks back (sled: the store; log store: a segment compacted).",
            );
            let _ = writeln!(out, "conveyor_store_rewrites_total {}", given.rewrites);
            metrics::header(
                &mut out,
                "conveyor_store_bytes_given_back_total",
                "counter",
                "Bytes those rewrites gave back to the file system.",
            );
            let _ = writeln!(out, "conveyor_store_bytes_given_back_total {}", given.bytes);
            metrics::header(
                &mut out,
                "conveyor_store_rewrite_pause_seconds_max",
                "gauge",
                "The longest time commits waited for a rewrite.",
            );
            let _ = writeln!(
                out,
                "conveyor_store_rewrite_pause_seconds_max {:.3}",
                given.longest_pause.as_secs_f64()
            );
        }
        metrics::header(
            &mut out,
            "conveyor_process_tasks",
            "gauge",
            "Tasks kept in the store, live (ready or waiting) or finished.",
        );
        for p in &stats.processes {
            let _ = writeln!(
                out,
                "conveyor_process_tasks{{process=\"{}\",state=\"live\"}} {}",
                p.process, p.live
            );
            let _ = writeln!(
                out,
                "conveyor_process_tasks{{process=\"{}\",state=\"finished\"}} {}",
                p.process, p.finished
            );
        }
        metrics::header(
            &mut out,
            "conveyor_process_history_events",
            "gauge",
            "History events kept in the store.",
        );
        for p in &stats.processes {
            let _ = writeln!(
                out,
                "conveyor_process_history_events{{process=\"{}\"}} {}",
                p.process, p.history_events
            );
        }
        metrics::header(
            &mut out,
            "conveyor_process_oldest_task_age_seconds",
            "gauge",
            "Age of the oldest task kept.",
        );
        for p in &stats.processes {
            if let Some(created) = p.oldest_created {
                let _ = writeln!(
                    out,
                    "conveyor_process_oldest_task_age_seconds{{process=\"{}\"}} {}",
                    p.process,
                    (now - created).max(0) / 1000
                );
            }
        }
        Ok(out)
    }
}

/// (events kept, events dropped) of a history.
fn history_figures(events: &[conveyor_store::HistoryEvent]) -> (u64, u64) {
    let mut kept = 0;
    let mut dropped = 0;
    for event in events {
        match event.kind {
            conveyor_store::EventKind::Dropped { count, .. } => dropped += count,
            _ => kept += 1,
        }
    }
    (kept, dropped)
}
