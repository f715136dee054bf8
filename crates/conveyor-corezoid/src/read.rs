//! The three forms of a Corezoid export: a JSON array of objects (processes and
//! folders, folders holding their children in `scheme`), a single process object
//! (`.conv.json`), or an unpacked zip: a folder tree of `*.conv.json` files, with
//! `_ALIASES_.json` and `_ENV_VARS_.json` beside them.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::Export;

/// Files larger than this are refused (an export is text; this bounds memory).
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Folders nested deeper than this are refused (a hostile tree cannot recurse for ever).
const MAX_DEPTH: usize = 32;
/// A folder's files together may be at most this large, and this many: each file is
/// bounded by [`MAX_FILE_BYTES`], but a folder of many such files would not be.
const MAX_FOLDER_BYTES: u64 = 256 * 1024 * 1024;
const MAX_FOLDER_FILES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is {size} bytes or more; an export file may be at most {MAX_FILE_BYTES}")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{path}: not JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "{path}: not a Corezoid export (expected an array of objects, a process object with `scheme`, or a folder of .conv.json files)"
    )]
    NotExport { path: PathBuf },
    #[error("{path}: folders nested deeper than {MAX_DEPTH}")]
    TooDeep { path: PathBuf },
    #[error(
        "{path}: the export's files come to more than {limit}; a folder may hold at most {MAX_FOLDER_BYTES} bytes in {MAX_FOLDER_FILES} files"
    )]
    FolderTooLarge { path: PathBuf, limit: &'static str },
}

/// What is left of a folder's allowance ([`MAX_FOLDER_BYTES`], [`MAX_FOLDER_FILES`]),
/// charged from each file's size before it is read.
struct Budget {
    bytes: u64,
    files: usize,
}

impl Budget {
    fn new() -> Budget {
        Budget {
            bytes: MAX_FOLDER_BYTES,
            files: MAX_FOLDER_FILES,
        }
    }

    /// Charges one file of `size` bytes; refuses the folder `root` once it is spent.
    fn charge(&mut self, root: &Path, size: u64) -> Result<(), ReadError> {
        let too_large = |limit| ReadError::FolderTooLarge {
            path: root.into(),
            limit,
        };
        self.files = self
            .files
            .checked_sub(1)
            .ok_or_else(|| too_large("the most files"))?;
        self.bytes = self
            .bytes
            .checked_sub(size)
            .ok_or_else(|| too_large("the most bytes"))?;
        Ok(())
    }
}

/// Reads an export from a file or an unpacked zip folder.
pub fn read_path(path: &Path) -> Result<Export, ReadError> {
    let mut export = Export::default();
    if path.is_dir() {
        read_dir(path, &mut export)?;
        if export.processes.is_empty() {
            return Err(ReadError::NotExport { path: path.into() });
        }
    } else {
        let value = read_json(path)?;
        collect(&value, path, &mut export, 0)?;
    }
    Ok(export)
}

/// Reads an export given as JSON (a task API `obj_scheme` upload): an array of
/// processes and folders, or one process object. `name` stands for the file in errors.
pub fn read_value(value: &Value, name: &str) -> Result<Export, ReadError> {
    let mut export = Export::default();
    collect(value, Path::new(name), &mut export, 0)?;
    Ok(export)
}

fn read_json(path: &Path) -> Result<Value, ReadError> {
    let io = |source| ReadError::Io {
        path: path.into(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge {
            path: path.into(),
            size,
        });
    }
    // The size the metadata gives is not the whole story (`/dev/zero`, a pipe, a file
    // that grows while read): the read itself stops one byte past the limit.
    let mut text = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge {
            path: path.into(),
            size: text.len() as u64,
        });
    }
    serde_json::from_slice(&text).map_err(|source| ReadError::Json {
        path: path.into(),
        source,
    })
}

/// Objects of an export value: a process, a folder (children in `scheme`), or an array.
pub(crate) fn collect(
    value: &Value,
    path: &Path,
    export: &mut Export,
    depth: usize,
) -> Result<(), ReadError> {
    if depth > MAX_DEPTH {
        return Err(ReadError::TooDeep { path: path.into() });
    }
    match value {
        Value::Array(items) => {
            for item in items {
                collect(item, path, export, depth + 1)?;
            }
            Ok(())
        }
        Value::Object(map) => {
            let scheme = map.get("scheme");
            let is_process = scheme
                .and_then(|s| s.get("nodes"))
                .is_some_and(Value::is_array);
            if is_process {
                export.processes.push(value.clone());
                Ok(())
            } else if let Some(children @ Value::Array(_)) = scheme {
                // A folder with its children inline.
                collect(children, path, export, depth + 1)
            } else if map.get("obj_type").and_then(Value::as_i64) == Some(9) {
                alias(value, export);
                Ok(())
            } else if map.get("obj_type").and_then(Value::as_i64) == Some(0) {
                // Folder metadata (`.folder.json`): nothing to import.
                Ok(())
            } else {
                Err(ReadError::NotExport { path: path.into() })
            }
        }
        _ => Err(ReadError::NotExport { path: path.into() }),
    }
}

fn alias(value: &Value, export: &mut Export) {
    let name = value.get("short_name").and_then(Value::as_str);
    let target = value.get("obj_to_id").and_then(Value::as_i64);
    if let (Some(name), Some(target)) = (name, target) {
        export.aliases.insert(target, name.to_string());
    }
}

/// Reads an unpacked export: every file [`export_files`] lists, in its order.
fn read_dir(root: &Path, export: &mut Export) -> Result<(), ReadError> {
    let mut files = Vec::new();
    export_files(root, root, 0, &mut Budget::new(), &mut files)?;
    for path in files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name == "_ALIASES_.json" {
            if let Value::Array(items) = read_json(&path)? {
                for item in &items {
                    alias(item, export);
                }
            }
        } else if name == "_ENV_VARS_.json" {
            if let Value::Array(items) = read_json(&path)? {
                for item in &items {
                    if let Some(name) = item
                        .get("short_name")
                        .or_else(|| item.get("name"))
                        .and_then(Value::as_str)
                    {
                        export.env_vars.push(name.to_string());
                    }
                }
            }
        } else {
            let value = read_json(&path)?;
            collect(&value, &path, export, 1)?;
        }
    }
    Ok(())
}

/// The export's files under `dir` (`*.conv.json`, `_ALIASES_.json`, `_ENV_VARS_.json`),
/// sorted by name within each folder, each charged to `budget` from its size before
/// anything is read: a folder over its allowance is refused whole.
fn export_files(
    root: &Path,
    dir: &Path,
    depth: usize,
    budget: &mut Budget,
    files: &mut Vec<PathBuf>,
) -> Result<(), ReadError> {
    if depth > MAX_DEPTH {
        return Err(ReadError::TooDeep { path: dir.into() });
    }
    let io = |source| ReadError::Io {
        path: dir.into(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        // Symlinks are not followed: an export is a plain tree.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            export_files(root, &path, depth + 1, budget, files)?;
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let wanted =
            name == "_ALIASES_.json" || name == "_ENV_VARS_.json" || name.ends_with(".conv.json");
        if meta.is_file() && wanted {
            budget.charge(root, meta.len())?;
            files.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_whose_size_the_metadata_hides_is_cut_at_the_limit() {
        // `/dev/zero` says it has 0 bytes and never ends: the read must stop.
        let path = Path::new("/dev/zero");
        if !path.exists() {
            eprintln!("SKIPPED: no /dev/zero on this system");
            return;
        }
        match read_path(path) {
            Err(ReadError::TooLarge { size, .. }) => assert_eq!(size, MAX_FILE_BYTES + 1),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }
}
