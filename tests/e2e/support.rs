//! Helpers shared by the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (tests run with the crate directory as working directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

/// A `conveyor` command for the binary built with these tests, run from the repo root.
pub fn conveyor() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_conveyor"));
    command.current_dir(repo_root());
    command
}

/// Runs `conveyor` with `args`; returns (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let output: Output = conveyor().args(args).output().expect("conveyor runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
