//! Both stores side by side: a scenario run once on sled and once on the log store,
//! each in a child process of its own (so memory and CPU figures are its own), and one
//! table with a column per store (and per flush policy with `--durability`).
//!
//! The child is this binary with the same arguments, `--store sled|log` and the hidden
//! `--wire`: it prints each report it makes as one JSON line ([`Wire`]) that keeps the
//! labels and units a person reads, which the plain `--json` object drops.

use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::report::Report;

/// The stores compared, in the order of their columns.
pub const STORES: [&str; 2] = ["sled", "log"];

/// A figure as a person reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    pub number: String,
    pub unit: String,
}

/// One row: a figure's key and label, and its cell in each policy column.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub key: String,
    pub label: String,
    pub cells: Vec<Option<Cell>>,
}

/// A report as a child hands it to its parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Wire {
    pub scenario: String,
    pub title: String,
    /// The flush policies, one column each (`default`, then `flush_each_step`).
    pub policies: Vec<String>,
    pub rows: Vec<Row>,
    /// `(target, measured, met)`.
    pub targets: Vec<(String, String, bool)>,
    pub notes: Vec<String>,
    /// The report's own `--json` object.
    pub json: Value,
}

impl Wire {
    pub fn from_report(report: &Report) -> Wire {
        let policies: Vec<String> = report.runs.iter().map(|r| r.policy.to_string()).collect();
        let columns = policies.len().max(1);
        let mut rows: Vec<Row> = report
            .common
            .iter()
            .map(|f| Row {
                key: f.key.to_string(),
                label: f.label.to_string(),
                // A figure that does not depend on the policy shows in every column.
                cells: vec![
                    Some(Cell {
                        number: f.number.clone(),
                        unit: f.unit.clone(),
                    });
                    columns
                ],
            })
            .collect();
        for (column, run) in report.runs.iter().enumerate() {
            for f in &run.figures {
                let cell = Cell {
                    number: f.number.clone(),
                    unit: f.unit.clone(),
                };
                match rows.iter_mut().find(|row| row.key == f.key) {
                    Some(row) => row.cells[column] = Some(cell),
                    None => {
                        let mut cells = vec![None; columns];
                        cells[column] = Some(cell);
                        rows.push(Row {
                            key: f.key.to_string(),
                            label: f.label.to_string(),
                            cells,
                        });
                    }
                }
            }
        }
        Wire {
            scenario: report.scenario.to_string(),
            title: report.title.clone(),
            policies,
            rows,
            targets: report
                .targets
                .iter()
                .map(|t| (t.target.clone(), t.measured.clone(), t.met))
                .collect(),
            notes: report.notes.clone(),
            json: report.to_json(),
        }
    }
}

/// One scenario's reports from every store, in the order of [`STORES`].
pub struct Comparison {
    pub stores: Vec<(&'static str, Wire)>,
}

/// Runs this program again once per store with the same arguments and returns, per
/// report the scenario makes (`timers --with-restart` makes two), the stores' reports.
pub fn run_children() -> anyhow::Result<Vec<Comparison>> {
    let exe = std::env::current_exe()?;
    let args = arguments_without_store(std::env::args().skip(1));
    let mut per_store: Vec<(&'static str, Vec<Wire>)> = Vec::new();
    for store in STORES {
        crate::sys::progress("compare", &format!("running on {store}"));
        let output = Command::new(&exe)
            .args(&args)
            .args(["--store", store, "--wire"])
            // Anything the child starts in turn opens the same kind of store.
            .env("CONVEYOR_STORE_KIND", store)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()?;
        if !output.status.success() {
            anyhow::bail!("the run on {store} failed ({})", output.status);
        }
        let text = String::from_utf8(output.stdout)?;
        let wires = text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(serde_json::from_str::<Wire>)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("the run on {store} printed no report: {e}"))?;
        per_store.push((store, wires));
    }
    let count = per_store.iter().map(|(_, w)| w.len()).min().unwrap_or(0);
    Ok((0..count)
        .map(|i| Comparison {
            stores: per_store
                .iter()
                .map(|(store, wires)| (*store, wires[i].clone()))
                .collect(),
        })
        .collect())
}

/// The arguments with any `--store X` / `--store=X` left out (the parent adds its own).
fn arguments_without_store(args: impl Iterator<Item = String>) -> Vec<String> {
    let mut kept = Vec::new();
    let mut skip_next = false;
    for arg in args {
        if skip_next {
            skip_next = false;
        } else if arg == "--store" {
            skip_next = true;
        } else if !arg.starts_with("--store=") {
            kept.push(arg);
        }
    }
    kept
}

impl Comparison {
    /// Column headers: the store, and the policy when there is more than one.
    fn columns(&self) -> Vec<(usize, usize, String)> {
        let mut columns = Vec::new();
        for (s, (store, wire)) in self.stores.iter().enumerate() {
            if wire.policies.len() <= 1 {
                columns.push((s, 0, store.to_string()));
            } else {
                for (p, policy) in wire.policies.iter().enumerate() {
                    columns.push((s, p, format!("{store} {policy}")));
                }
            }
        }
        columns
    }

    pub fn to_table(&self) -> String {
        let columns = self.columns();
        // Rows in the order they first appear, across stores.
        let mut keys: Vec<(&str, &str)> = Vec::new();
        for (_, wire) in &self.stores {
            for row in &wire.rows {
                if !keys.iter().any(|(k, _)| *k == row.key) {
                    keys.push((&row.key, &row.label));
                }
            }
        }
        let cell = |s: usize, p: usize, key: &str| -> String {
            self.stores[s]
                .1
                .rows
                .iter()
                .find(|row| row.key == key)
                .and_then(|row| row.cells.get(p).cloned().flatten())
                .map(|c| {
                    if c.unit.is_empty() {
                        c.number
                    } else {
                        format!("{} {}", c.number, c.unit)
                    }
                })
                .unwrap_or_else(|| "–".into())
        };
        let label_width = keys
            .iter()
            .map(|(_, l)| l.chars().count())
            .max()
            .unwrap_or(10);
        let widths: Vec<usize> = columns
            .iter()
            .map(|(s, p, header)| {
                keys.iter()
                    .map(|(key, _)| cell(*s, *p, key).chars().count())
                    .chain([header.chars().count()])
                    .max()
                    .unwrap_or(8)
            })
            .collect();
        let title = self
            .stores
            .first()
            .map(|(_, w)| w.title.clone())
            .unwrap_or_default();
        let mut out = format!("{title} — both stores\n  {:<label_width$}", "");
        for ((_, _, header), width) in columns.iter().zip(&widths) {
            out.push_str(&format!("  {header:>width$}"));
        }
        out.push('\n');
        for (key, label) in &keys {
            out.push_str(&format!("  {label:<label_width$}"));
            for ((s, p, _), width) in columns.iter().zip(&widths) {
                out.push_str(&format!("  {:>width$}", cell(*s, *p, key)));
            }
            out.push('\n');
        }
        for (store, wire) in &self.stores {
            for (target, measured, met) in &wire.targets {
                out.push_str(&format!(
                    "  target [{store}]: {target}: {measured} — {}\n",
                    if *met { "met" } else { "NOT met" }
                ));
            }
        }
        let mut notes: Vec<String> = Vec::new();
        for (store, wire) in &self.stores {
            for note in &wire.notes {
                let shared = self
                    .stores
                    .iter()
                    .all(|(_, other)| other.notes.contains(note));
                let line = if shared {
                    note.clone()
                } else {
                    format!("[{store}] {note}")
                };
                if !notes.contains(&line) {
                    notes.push(line);
                }
            }
        }
        for note in notes {
            out.push_str(&format!("  note: {note}\n"));
        }
        out
    }

    /// One JSON object: the scenario, and each store's own `--json` object under its name.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        let scenario = self
            .stores
            .first()
            .map(|(_, w)| w.scenario.clone())
            .unwrap_or_default();
        object.insert("scenario".into(), Value::String(scenario));
        for (store, wire) in &self.stores {
            object.insert(store.to_string(), wire.json.clone());
        }
        Value::Object(object)
    }

    pub fn print(&self, as_json: bool) {
        if as_json {
            println!("{}", self.to_json());
        } else {
            println!("{}", self.to_table());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Figure, Run, Target};

    fn report(rate: f64, flush: Option<f64>) -> Report {
        let mut report = Report::new("pure", "pure: N tasks".into());
        report
            .common
            .push(Figure::rate("raw", "store raw rate", rate * 2.0, "tx/s"));
        report.runs.push(Run {
            policy: "default",
            figures: vec![Figure::rate("tasks", "tasks", rate, "tasks/s")],
        });
        if let Some(flush) = flush {
            report.runs.push(Run {
                policy: "flush_each_step",
                figures: vec![Figure::rate("tasks", "tasks", flush, "tasks/s")],
            });
        }
        report
            .targets
            .push(Target::new("≥ 10".into(), format!("{rate}"), rate >= 10.0));
        report
    }

    fn through_the_wire(report: &Report) -> Wire {
        let text = serde_json::to_string(&Wire::from_report(report)).unwrap_or_default();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("wire: {e}: {text}"))
    }

    #[test]
    fn a_column_per_store_and_the_targets_named_by_store() {
        let comparison = Comparison {
            stores: vec![
                ("sled", through_the_wire(&report(5.0, None))),
                ("log", through_the_wire(&report(20.0, None))),
            ],
        };
        let table = comparison.to_table();
        let header = table.lines().nth(1).unwrap_or_default();
        assert!(header.contains("sled") && header.contains("log"), "{table}");
        let tasks = table
            .lines()
            .find(|l| l.trim_start().starts_with("tasks"))
            .unwrap_or_default();
        assert!(
            tasks.contains("5 tasks/s") && tasks.contains("20 tasks/s"),
            "{table}"
        );
        let raw = table
            .lines()
            .find(|l| l.contains("store raw rate"))
            .unwrap_or_default();
        assert!(
            raw.contains("10 tx/s") && raw.contains("40 tx/s"),
            "{table}"
        );
        assert!(
            table.contains("target [sled]: ≥ 10: 5 — NOT met"),
            "{table}"
        );
        assert!(table.contains("target [log]: ≥ 10: 20 — met"), "{table}");
        let json = comparison.to_json();
        assert_eq!(json["sled"]["tasks"], 5);
        assert_eq!(json["log"]["tasks"], 20);
    }

    #[test]
    fn each_policy_gets_its_own_column_per_store() {
        let comparison = Comparison {
            stores: vec![
                ("sled", through_the_wire(&report(5.0, Some(3.0)))),
                ("log", through_the_wire(&report(20.0, Some(15.0)))),
            ],
        };
        let table = comparison.to_table();
        let header = table.lines().nth(1).unwrap_or_default();
        for column in [
            "sled default",
            "sled flush_each_step",
            "log default",
            "log flush_each_step",
        ] {
            assert!(header.contains(column), "{table}");
        }
        let tasks = table
            .lines()
            .find(|l| l.trim_start().starts_with("tasks"))
            .unwrap_or_default();
        let numbers: Vec<&str> = tasks.split_whitespace().collect();
        assert_eq!(
            numbers,
            [
                "tasks", "5", "tasks/s", "3", "tasks/s", "20", "tasks/s", "15", "tasks/s"
            ],
            "{table}"
        );
    }

    #[test]
    fn the_store_argument_is_replaced() {
        let args = [
            "pure",
            "--store",
            "both",
            "--quick",
            "--store=log",
            "--json",
        ]
        .map(String::from)
        .into_iter();
        assert_eq!(arguments_without_store(args), ["pure", "--quick", "--json"]);
    }
}
