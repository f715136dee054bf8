//! `conveyor process check FILE...`

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use conveyor_model::{Diagnostic, Severity};
use serde_json::json;

/// The largest process file read (1 MiB): real processes are a few KiB, and a bigger
/// file (or `/dev/zero`) would only fill memory.
pub const MAX_PROCESS_FILE_BYTES: u64 = 1024 * 1024;

/// Reads a process file of at most [`MAX_PROCESS_FILE_BYTES`]: the size is checked
/// before reading, and the read stops one byte past the limit (for files whose size the
/// metadata does not tell, such as `/dev/zero` or a pipe). The error says why, to follow
/// `cannot read FILE: `.
pub fn read_process_file(path: &Path) -> Result<String, String> {
    let limit = MAX_PROCESS_FILE_BYTES;
    let too_big =
        || format!("the file is larger than {limit} bytes (1 MiB), the limit for a process file");
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let metadata = file.metadata().map_err(|e| e.to_string())?;
    if metadata.is_dir() {
        return Err("it is a directory".into());
    }
    if metadata.len() > limit {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > limit {
        return Err(too_big());
    }
    String::from_utf8(bytes).map_err(|e| format!("it is not UTF-8 text ({e})"))
}

pub fn run(files: &[PathBuf], json: bool, deny_warnings: bool) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    let mut reports = Vec::new();
    let mut out = String::new();
    for path in files {
        let name = path.display().to_string();
        let (diagnostics, nodes) = match read_process_file(path) {
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
    Ok(crate::commands::print(conveyor_commands::Reply {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_over_the_limit_is_refused_and_one_at_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.yaml");
        std::fs::write(&big, vec![b'#'; MAX_PROCESS_FILE_BYTES as usize + 1]).unwrap();
        assert!(
            read_process_file(&big)
                .unwrap_err()
                .contains("larger than 1048576 bytes")
        );
        let fits = dir.path().join("fits.yaml");
        std::fs::write(&fits, vec![b'#'; MAX_PROCESS_FILE_BYTES as usize]).unwrap();
        assert_eq!(
            read_process_file(&fits).unwrap().len(),
            MAX_PROCESS_FILE_BYTES as usize
        );
        assert!(
            read_process_file(dir.path())
                .unwrap_err()
                .contains("directory")
        );
    }

    #[test]
    fn dev_zero_is_refused_without_reading_it_whole() {
        let started = std::time::Instant::now();
        assert!(
            read_process_file(Path::new("/dev/zero"))
                .unwrap_err()
                .contains("larger than")
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
