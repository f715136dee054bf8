//! What a scenario hands back: named figures (one set per durability policy), the
//! issue's targets with whether they were met, printed as a table or one JSON object.

use serde_json::{Map, Value, json};

/// One measured figure: a JSON key and value, and how a person reads it.
#[derive(Debug, Clone)]
pub struct Figure {
    pub key: &'static str,
    pub label: &'static str,
    pub value: Value,
    /// The number as shown, and its unit (apart, so numbers line up in a table).
    pub number: String,
    pub unit: String,
}

impl Figure {
    /// A rate (`tasks/s`, `reads/s`): rounded to a whole number.
    pub fn rate(key: &'static str, label: &'static str, per_sec: f64, unit: &str) -> Figure {
        Figure {
            key,
            label,
            value: json!(per_sec.round() as i64),
            number: thousands(per_sec),
            unit: unit.to_string(),
        }
    }

    /// A duration in milliseconds (kept to 0.1 ms).
    pub fn millis(key: &'static str, label: &'static str, millis: f64) -> Figure {
        Figure {
            key,
            label,
            value: json!(round(millis, 1)),
            number: format!("{millis:.1}"),
            unit: "ms".into(),
        }
    }

    /// A duration in microseconds (kept to 0.1 µs).
    pub fn micros(key: &'static str, label: &'static str, micros: f64) -> Figure {
        Figure {
            key,
            label,
            value: json!(round(micros, 1)),
            number: format!("{micros:.1}"),
            unit: "µs".into(),
        }
    }

    /// A duration in seconds (kept to 0.01 s).
    pub fn secs(key: &'static str, label: &'static str, secs: f64) -> Figure {
        Figure {
            key,
            label,
            value: json!(round(secs, 3)),
            number: format!("{secs:.2}"),
            unit: "s".into(),
        }
    }

    /// A size in bytes, shown in MiB.
    pub fn bytes(key: &'static str, label: &'static str, bytes: u64) -> Figure {
        Figure {
            key,
            label,
            value: json!(bytes),
            number: format!("{:.1}", bytes as f64 / (1024.0 * 1024.0)),
            unit: "MiB".into(),
        }
    }

    pub fn count(key: &'static str, label: &'static str, n: u64) -> Figure {
        Figure {
            key,
            label,
            value: json!(n),
            number: thousands(n as f64),
            unit: String::new(),
        }
    }

    /// A ratio such as engine / raw (kept to 0.001).
    pub fn ratio(key: &'static str, label: &'static str, ratio: f64) -> Figure {
        Figure {
            key,
            label,
            value: json!(round(ratio, 3)),
            number: format!("{ratio:.3}"),
            unit: String::new(),
        }
    }
}

/// One of the targets and whether this run met it.
#[derive(Debug, Clone)]
pub struct Target {
    pub target: String,
    pub measured: String,
    pub met: bool,
}

impl Target {
    pub fn new(target: String, measured: String, met: bool) -> Target {
        Target {
            target,
            measured,
            met,
        }
    }
}

/// Figures of one durability policy.
#[derive(Debug, Clone)]
pub struct Run {
    /// `default` or `flush_each_step`.
    pub policy: &'static str,
    pub figures: Vec<Figure>,
}

/// A scenario's results.
#[derive(Debug, Clone)]
pub struct Report {
    pub scenario: &'static str,
    pub title: String,
    /// Figures that do not depend on the flush policy (sizes, the store's raw rate, …).
    pub common: Vec<Figure>,
    /// The default policy first; `flush_each_step` second with `--durability`.
    pub runs: Vec<Run>,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(scenario: &'static str, title: String) -> Report {
        Report {
            scenario,
            title,
            common: Vec::new(),
            runs: Vec::new(),
            targets: Vec::new(),
            notes: vec![store_note(crate::sys::store_options())],
        }
    }

    /// Adds targets for each run: `make` gets the run's figures by key and a suffix
    /// naming the policy (empty for the default one).
    pub fn add_targets(&mut self, make: impl Fn(&dyn Fn(&str) -> f64, &str) -> Vec<Target>) {
        let mut targets = Vec::new();
        for run in &self.runs {
            let suffix = if run.policy == "default" {
                String::new()
            } else {
                format!(" ({})", run.policy)
            };
            let value = |key: &str| self.value(run.policy, key).unwrap_or(f64::NAN);
            targets.extend(make(&value, &suffix));
        }
        self.targets.extend(targets);
    }

    /// The figure `key` of the run with `policy`, as a number.
    pub fn value(&self, policy: &str, key: &str) -> Option<f64> {
        self.runs
            .iter()
            .find(|r| r.policy == policy)
            .and_then(|r| r.figures.iter().find(|f| f.key == key))
            .or_else(|| self.common.iter().find(|f| f.key == key))
            .and_then(|f| f.value.as_f64())
    }

    /// One JSON object: common figures and the default run's figures at the top level,
    /// the `flush_each_step` run's figures (with `--durability`) under that key.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("scenario".into(), json!(self.scenario));
        for f in &self.common {
            object.insert(f.key.into(), f.value.clone());
        }
        for (i, run) in self.runs.iter().enumerate() {
            let figures: Map<String, Value> = run
                .figures
                .iter()
                .map(|f| (f.key.to_string(), f.value.clone()))
                .collect();
            if i == 0 {
                object.insert("durability".into(), json!(run.policy));
                object.extend(figures);
            } else {
                object.insert(run.policy.into(), Value::Object(figures));
            }
        }
        if !self.targets.is_empty() {
            let targets: Vec<Value> = self
                .targets
                .iter()
                .map(|t| json!({"target": t.target, "measured": t.measured, "met": t.met}))
                .collect();
            object.insert("targets".into(), Value::Array(targets));
        }
        Value::Object(object)
    }

    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let all = || {
            self.common
                .iter()
                .chain(self.runs.iter().flat_map(|r| r.figures.iter()))
        };
        let width = all().map(|f| f.label.chars().count()).max().unwrap_or(10);
        let number = all().map(|f| f.number.chars().count()).max().unwrap_or(8);
        let unit = all().map(|f| f.unit.chars().count()).max().unwrap_or(0);
        let cell = |f: Option<&Figure>| match f {
            Some(f) => format!("{:>number$} {:<unit$}", f.number, f.unit),
            None => format!("{:>number$} {:<unit$}", "–", ""),
        };
        out.push_str(&format!("{}\n", self.title));
        for f in &self.common {
            out.push_str(&format!("  {:<width$}  {}\n", f.label, cell(Some(f))));
        }
        if self.runs.len() > 1 {
            out.push_str(&format!("  {:<width$}", ""));
            for run in &self.runs {
                out.push_str(&format!("  {:>w$}", run.policy, w = number + unit + 1));
            }
            out.push('\n');
        }
        if let Some(first) = self.runs.first() {
            for f in &first.figures {
                out.push_str(&format!("  {:<width$}  {}", f.label, cell(Some(f))));
                for run in &self.runs[1..] {
                    out.push_str(&format!(
                        "  {}",
                        cell(run.figures.iter().find(|g| g.key == f.key))
                    ));
                }
                out.push('\n');
            }
        }
        for t in &self.targets {
            out.push_str(&format!(
                "  target: {}: {} — {}\n",
                t.target,
                t.measured,
                if t.met { "met" } else { "NOT met" }
            ));
        }
        for note in &self.notes {
            out.push_str(&format!("  note: {note}\n"));
        }
        out
    }

    pub fn print(&self, as_json: bool) {
        if as_json {
            println!("{}", self.to_json());
        } else {
            println!("{}", self.to_table());
        }
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// `1234567.8` → `1,234,568`.
pub fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Which store a report's figures come from.
fn store_note(options: conveyor_store::StoreOptions) -> String {
    match options.kind {
        conveyor_store::StoreKind::Log => {
            "store: the log store (CONVEYOR_STORE_KIND=log)".to_string()
        }
        conveyor_store::StoreKind::Sled => format!(
            "store: sled, the default, page cache {} MiB (CONVEYOR_STORE_CACHE_MB; CONVEYOR_STORE_KIND=log for the log store)",
            options.cache_bytes >> 20
        ),
    }
}
