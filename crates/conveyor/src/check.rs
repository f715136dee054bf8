//! `conveyor process check FILE...`

use std::path::PathBuf;
use std::process::ExitCode;

use conveyor_model::{Diagnostic, Severity};
use serde_json::json;

pub fn run(files: &[PathBuf], json: bool, deny_warnings: bool) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    let mut reports = Vec::new();
    let mut out = String::new();
    for path in files {
        let name = path.display().to_string();
        let (diagnostics, nodes) = match std::fs::read_to_string(path) {
            Ok(source) => {
                let checked = conveyor_model::check(&name, &source);
                let nodes = checked.process.as_ref().map(|p| p.nodes.len());
                (checked.diagnostics, nodes)
            }
            Err(e) => (
                vec![Diagnostic {
                    severity: Severity::Error,
                    file: name.clone(),
                    line: None,
                    column: None,
                    node: None,
                    field: None,
                    message: format!("cannot read the file: {e}"),
                }],
                None,
            ),
        };
        let errors = diagnostics.iter().filter(|d| d.is_error()).count();
        let warnings = diagnostics.len() - errors;
        let file_failed = errors > 0 || (deny_warnings && warnings > 0);
        failed |= file_failed;
        if json {
            reports.push(json!({
                "file": name,
                "ok": !file_failed,
                "nodes": nodes,
                "errors": errors,
                "warnings": warnings,
                "diagnostics": diagnostics.iter().map(|d| json!({
                    "severity": if d.is_error() { "error" } else { "warning" },
                    "line": d.line,
                    "column": d.column,
                    "node": d.node,
                    "field": d.field,
                    "message": d.message,
                })).collect::<Vec<_>>(),
            }));
        } else {
            for d in &diagnostics {
                out.push_str(&format!("{d}\n"));
            }
            match (errors, nodes) {
                (0, Some(n)) => out.push_str(&format!(
                    "{name}: ok, {n} nodes{}\n",
                    plural_warnings(warnings)
                )),
                _ => out.push_str(&format!(
                    "{name}: {errors} error{}{}\n",
                    if errors == 1 { "" } else { "s" },
                    plural_warnings(warnings)
                )),
            }
        }
    }
    if json {
        out.push_str(&serde_json::to_string_pretty(&reports)?);
        out.push('\n');
    }
    Ok(crate::commands::print(crate::request::Reply {
        stdout: out,
        stderr: String::new(),
        code: u8::from(failed),
    }))
}

fn plural_warnings(n: usize) -> String {
    match n {
        0 => String::new(),
        1 => ", 1 warning".into(),
        n => format!(", {n} warnings"),
    }
}
