//! Conveyor's command layer: every command a person or a program gives Conveyor, as a
//! typed [`Request`] run by [`run`] into a typed [`Answer`] or a typed [`CommandError`].
//! The CLI (in its own process, or through a running server's `POST /admin/command`),
//! the dashboard, the task API and direct URLs all go through it, so a command does the same thing, with the
//! same refusals in the same words, whichever door it comes by. Besides the runtime,
//! this is the only layer that reads the store.
//!
//! # Layout
//! - `request.rs` — [`Request`] (what to do), [`Reply`] (what the CLI prints), [`GraphFormat`].
//! - `execute.rs` — [`run`] / [`execute`]: a request for a [`Caller`] (whose [`Scope`]
//!   limits it to some processes), and the views shared by the CLI and the dashboard
//!   (process summaries and details, params, templates).
//! - `answer.rs` — [`Answer`] and the views it carries.
//! - `door.rs` — the HTTP doors' requests: the task API's ops and a direct URL's,
//!   through the runtime's grouped intake.
//! - `manage.rs` — the task API's process management ops (`conv`, `obj_scheme`,
//!   `node`, `task_history`) and its steps (`step_next`, `step_prev`, `step_goto`).
//! - `error.rs` — [`CommandError`].
//! - `render.rs` — an answer as the CLI's text or `--json`.
//! - `templates.rs` — the process templates shipped in `processes/`, embedded.
//! - `token.rs` — an OAuth token task in words (fingerprint, refreshes, escalation), and
//!   the code out of a pasted redirect address.

mod answer;
pub mod door;
mod error;
mod execute;
pub mod manage;
pub mod render;
mod request;
pub mod templates;
mod token;

pub use answer::{
    Answer, AuthorizeInfo, NodeSummary, ParamInfo, ProcessDetail, ProcessSummary, Reason,
    StoreStatsView, TaskView, TemplateInfo,
};
pub use error::CommandError;
pub use execute::{
    Caller, Scope, api_key, draw, execute, params, process_detail, resolve, run, template_list,
    wait_idle,
};
pub use request::{GraphFormat, Reply, Request};
pub use token::{TokenState, code_from, fingerprint, token_state};
