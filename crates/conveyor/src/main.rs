//! `conveyor`: the command-line interface of the Conveyor process engine.
//!
//! Exit codes: 0 success (warnings allowed), 1 the command ran and found problems or
//! failed, 2 the command line itself is wrong.

mod check;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A process engine modeled on Corezoid: YAML processes, durable tasks, templates.
#[derive(Parser)]
#[command(name = "conveyor", version, propagate_version = true)]
#[command(
    about,
    long_about = "Conveyor runs processes (YAML node graphs modeled on Corezoid) and \
    moves JSON tasks through them, keeping every task in an embedded store."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with process definitions.
    #[command(subcommand)]
    Process(ProcessCommand),
}

#[derive(Subcommand)]
enum ProcessCommand {
    /// Check process files and print every problem at once.
    ///
    /// Exits 0 when no file has an error (warnings are printed but allowed), 1 otherwise.
    Check {
        /// Process files (YAML).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Print the result as JSON, for scripts.
        #[arg(long)]
        json: bool,
        /// Treat warnings as errors.
        #[arg(long)]
        deny_warnings: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Process(ProcessCommand::Check {
            files,
            json,
            deny_warnings,
        }) => check::run(&files, json, deny_warnings),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}
