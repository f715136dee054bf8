//! Counters and histograms for `GET /metrics`, in Prometheus's text format.
//!
//! Kept in memory (they restart at zero with the engine, as Prometheus expects);
//! "tasks in each node now" is read from the store's durable counters instead.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of histogram buckets.
const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}",
                self.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// The engine's metrics.
#[derive(Default)]
pub struct Metrics {
    tasks_created: AtomicU64,
    tasks_removed: AtomicU64,
    transitions: AtomicU64,
    steps: AtomicU64,
    /// By status (`None`: no answer), counted without a text key per call.
    api_calls: Mutex<BTreeMap<Option<u16>, u64>>,
    timer_lag: Mutex<Histogram>,
    http: Mutex<BTreeMap<(String, u16), Histogram>>,
}

impl Metrics {
    pub(crate) fn task_created(&self, n: u64) {
        self.tasks_created.fetch_add(n, Ordering::Relaxed);
    }

    /// A finished task removed because its `keep` was over (or `0`).
    pub(crate) fn task_removed(&self) {
        self.tasks_removed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn tasks_removed(&self) -> u64 {
        self.tasks_removed.load(Ordering::Relaxed)
    }

    pub(crate) fn transitions(&self, n: u64) {
        self.transitions.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn step(&self) {
        self.steps.fetch_add(1, Ordering::Relaxed);
    }

    /// An `api_call` answered with `status` (`"none"` when nothing came back).
    pub(crate) fn api_call(&self, status: Option<u16>) {
        if let Ok(mut map) = self.api_calls.lock() {
            *map.entry(status).or_default() += 1;
        }
    }

    /// How late a timer fired, in milliseconds.
    pub(crate) fn timer_lag(&self, millis: i64) {
        if let Ok(mut h) = self.timer_lag.lock() {
            h.observe(millis.max(0) as f64 / 1000.0);
        }
    }

    /// One HTTP request served by the API (route pattern, status, duration).
    pub fn http_request(&self, route: &str, status: u16, seconds: f64) {
        if let Ok(mut map) = self.http.lock() {
            map.entry((route.to_string(), status))
                .or_default()
                .observe(seconds);
        }
    }

    pub fn steps(&self) -> u64 {
        self.steps.load(Ordering::Relaxed)
    }

    pub fn tasks_created(&self) -> u64 {
        self.tasks_created.load(Ordering::Relaxed)
    }

    /// Renders everything; `nodes` are (process, node, tasks now).
    pub(crate) fn render(&self, nodes: &[(u64, String, i64)]) -> String {
        let mut out = String::new();
        header(
            &mut out,
            "conveyor_tasks_created_total",
            "counter",
            "Tasks created since the engine started.",
        );
        let _ = writeln!(
            out,
            "conveyor_tasks_created_total {}",
            self.tasks_created.load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "conveyor_tasks_removed_total",
            "counter",
            "Finished tasks removed since the engine started (their keep was over).",
        );
        let _ = writeln!(
            out,
            "conveyor_tasks_removed_total {}",
            self.tasks_removed.load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "conveyor_node_transitions_total",
            "counter",
            "Moves of tasks from one node to another.",
        );
        let _ = writeln!(
            out,
            "conveyor_node_transitions_total {}",
            self.transitions.load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "conveyor_steps_total",
            "counter",
            "Steps run (a step moves one task until it waits or ends).",
        );
        let _ = writeln!(
            out,
            "conveyor_steps_total {}",
            self.steps.load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "conveyor_tasks_in_node",
            "gauge",
            "Tasks in each node now.",
        );
        for (process, node, now) in nodes {
            let _ = writeln!(
                out,
                "conveyor_tasks_in_node{{process=\"{process}\",node=\"{}\"}} {now}",
                escape(node)
            );
        }
        header(
            &mut out,
            "conveyor_api_calls_total",
            "counter",
            "HTTP requests made by api_call nodes, by status.",
        );
        if let Ok(map) = self.api_calls.lock() {
            for (status, n) in map.iter() {
                let status = status.map_or("none".to_string(), |s| s.to_string());
                let _ = writeln!(out, "conveyor_api_calls_total{{status=\"{status}\"}} {n}");
            }
        }
        header(
            &mut out,
            "conveyor_timer_lag_seconds",
            "histogram",
            "How late timers fired.",
        );
        if let Ok(h) = self.timer_lag.lock() {
            h.write(&mut out, "conveyor_timer_lag_seconds", "");
        }
        header(
            &mut out,
            "conveyor_http_request_duration_seconds",
            "histogram",
            "Requests served by the HTTP API.",
        );
        if let Ok(map) = self.http.lock() {
            for ((route, status), h) in map.iter() {
                h.write(
                    &mut out,
                    "conveyor_http_request_duration_seconds",
                    &format!("route=\"{}\",status=\"{status}\"", escape(route)),
                );
            }
        }
        out
    }
}

/// The `# HELP` and `# TYPE` lines that open a metric.
pub(crate) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
