//! Corezoid exports in, Conveyor processes out (`conveyor process import`).
//!
//! A Corezoid export is read in any of its forms (a JSON array of processes and folders,
//! one `.conv.json` process, or an unpacked zip folder with `_ALIASES_.json` and
//! `_ENV_VARS_.json`); each process becomes a Conveyor process definition, written as
//! readable YAML. Node names come from titles and each node keeps its Corezoid id in
//! `corezoid_id`; references between the imported processes (`conv_id` of `api_copy`,
//! `api_rpc` and `api_get_task`, `{{conv[ID]…}}` in templates) are rewritten to the new
//! processes' aliases, and reads of nodes by Corezoid id (`{{node[ID].count}}`, a Sum's
//! `{{node[ID].SumID}}`) to the imported names. What cannot be mapped is listed by node
//! id and title.
//!
//! The mapping is written down in docs/corezoid.md; each logic type is one function in
//! `map.rs`.
//!
//! # Layout
//! - `read.rs` — the three forms of an export, from files into JSON objects.
//! - `map.rs` — one Corezoid process into one Conveyor definition (nodes, logics,
//!   semaphors, params), and the list of what could not be mapped.
//! - `names.rs` — node names and aliases from titles, unique and valid.
//! - `export.rs` — the other way: one Conveyor process into a Corezoid export, which
//!   carries the Conveyor definition for a lossless round trip; `export/` — one module
//!   per node kind, how a node of that kind is written as Corezoid logics (listed in
//!   `export.rs`'s `KINDS`).

mod export;
mod map;
mod names;
mod read;

pub use export::{ExportError, export, export_value};
pub use names::slug;

use std::collections::BTreeMap;

pub use read::{ReadError, read_path, read_value};
use serde_json::Value;

/// An export, read: its processes (folders flattened) and the aliases it names.
#[derive(Debug, Clone, Default)]
pub struct Export {
    /// Process objects (`obj_type` 1) in the order found.
    pub processes: Vec<Value>,
    /// `_ALIASES_.json`: Corezoid process id → alias (without `@`).
    pub aliases: BTreeMap<i64, String>,
    /// `_ENV_VARS_.json`: names of the environment variables the export carries.
    pub env_vars: Vec<String>,
}

/// One imported process.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The `process:` name and the file stem (`<name>.yaml`).
    pub name: String,
    /// The alias other imported processes refer to it by (without `@`).
    pub alias: String,
    /// The Corezoid process id, when the export has one.
    pub corezoid_id: Option<i64>,
    /// The process definition, YAML.
    pub yaml: String,
}

/// A node whose logic has no Conveyor counterpart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmapped {
    pub process: String,
    pub node_id: String,
    pub title: String,
    /// What it is, e.g. `db_call` or `api_code (lang erl)`.
    pub what: String,
}

impl std::fmt::Display for Unmapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "process `{}`, node {} \"{}\": {}",
            self.process, self.node_id, self.title, self.what
        )
    }
}

/// What an import gives.
#[derive(Debug, Clone, Default)]
pub struct Import {
    pub processes: Vec<Imported>,
    /// Nodes that cannot run in Conveyor. With `allow_partial`, they are in the
    /// processes as nodes that fail at run time with a clear error.
    pub unmapped: Vec<Unmapped>,
    /// Things mapped with a difference worth knowing (one line each).
    pub notes: Vec<String>,
}

/// Why an export could not be imported at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("the export holds no process")]
    Empty,
    #[error("process {process}: {message}")]
    Process { process: String, message: String },
}

/// Maps every process of `export`. Fails only when an object cannot be read as a
/// process; nodes that cannot be mapped are listed in `Import::unmapped`.
pub fn import(export: &Export) -> Result<Import, ImportError> {
    if export.processes.is_empty() {
        return Err(ImportError::Empty);
    }
    map::import(export)
}

/// Reads and maps the export at `path`.
pub fn import_path(path: &std::path::Path) -> Result<Import, ImportError> {
    let export = read_path(path)?;
    import(&export)
}

#[cfg(test)]
mod tests;
