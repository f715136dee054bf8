//! Process definitions: the YAML model, its validation and its graph.
//!
//! [`check`] reads a process file and reports every problem at once, each with line and
//! column where the YAML gives one. A file with no errors yields a [`Process`] whose
//! templates, regexes and durations are compiled, ready for the runtime.
//!
//! This crate is pure: it reads text it is given and touches no file, clock or network.
//!
//! # Layout
//!
//! - `model.rs` — the process model: what a checked process file means (the process,
//!   its params and settings, a node and its edges);
//! - `kind.rs` — [`Kind`], what a node kind says about itself, and the one list of kinds
//!   that [`NodeKind`] and the loader's table are made from; `kind/` — one module per
//!   kind: its struct, how it is read from YAML, and its [`Kind`] impl (edges, templates,
//!   keys it writes);
//! - `load.rs` — from YAML text to a [`Process`] (sections, params, the fields every
//!   node shares; a node's own fields are its kind's to read);
//! - `validate.rs` — checks of the process as a whole (one start, targets exist, …);
//! - `diagnostic.rs` — problems with where they are; `positions.rs` — where each key is;
//! - `duration.rs` — durations as written in process files;
//! - `unquoted.rs` — the hint for a value that starts with an unquoted `{{`.

mod diagnostic;
mod duration;
#[cfg(test)]
mod fuzz_tests;
mod kind;
mod load;
mod model;
mod positions;
mod unquoted;
mod validate;

pub use diagnostic::{Diagnostic, Severity};
pub use duration::{DurationSpec, MAX_DURATION, format_duration, parse_duration};
pub use kind::*;
pub use load::compile_regex;
pub use model::*;

/// The outcome of checking a process file.
#[derive(Debug)]
pub struct Checked {
    /// The process, when the file has no errors.
    pub process: Option<Process>,
    /// Errors and warnings, in the order they appear in the file.
    pub diagnostics: Vec<Diagnostic>,
}

impl Checked {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| !d.is_error())
    }

    /// The process, or every error of the file.
    pub fn into_result(self) -> Result<Process, Vec<Diagnostic>> {
        match self.process {
            Some(p) => Ok(p),
            None => Err(self
                .diagnostics
                .into_iter()
                .filter(|d| d.is_error())
                .collect()),
        }
    }
}

/// Reads and checks a process file. `file` is only used to label diagnostics.
pub fn check(file: &str, source: &str) -> Checked {
    let mut loader = load::Loader {
        file,
        positions: positions::Positions::of(source),
        diagnostics: Vec::new(),
    };
    let process = match load::load(&mut loader, source) {
        Some(mut loaded) => {
            validate::validate(&mut loader, &mut loaded);
            loaded.complete.then_some(loaded.process)
        }
        None => None,
    };
    let mut diagnostics = loader.diagnostics;
    unquoted::explain(file, source, &mut diagnostics);
    // File order: by line, then column; those without a position last.
    diagnostics.sort_by_key(|d| (d.line.unwrap_or(usize::MAX), d.column.unwrap_or(0)));
    let has_errors = diagnostics.iter().any(Diagnostic::is_error);
    Checked {
        process: if has_errors { None } else { process },
        diagnostics,
    }
}
