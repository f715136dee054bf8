//! Conveyor's command layer: every command a person or a program gives Conveyor, as a
//! typed [`Request`] run by [`run`] into a typed [`Answer`] or a typed [`CommandError`].
//! The CLI (in its own process, or through a running server's `POST /admin/command`),
//! the dashboard, the task API and direct URLs all go through it, so a command does the same thing, with the
//! same refusals in the same words, whichever door it comes by. Besides the runtime,
//! this is the only layer that opens, reads or writes the store: the binary says where it
//! is ([`Place`]) and what to do, and prints the answer.
//!
//! # Layout
//! - `request.rs` — [`Request`] (what to do), [`Reply`] (what the CLI prints), [`GraphFormat`].
//! - `execute.rs` — [`run`] / [`execute`]: a request for a [`Caller`] (whose [`Scope`]
//!   says which processes it may use, and whether it is the admin), and the views shared by the CLI and the dashboard
//!   (process summaries and details, params, templates).
//! - `answer.rs` — [`Answer`] and the views it carries.
//! - `authorize.rs` — [`authorize_url`]: a process's declared authorize address filled
//!   in, for `bitrix authorize` and the dashboard's *Get the code* alike.
//! - `door.rs` — the HTTP doors' requests: the task API's ops and a direct URL's,
//!   through the runtime's grouped intake.
//! - `manage/` — the task API's process management ops (`conv`, `obj_scheme`,
//!   `task_history`) and its steps (`step_next`, `step_prev`, `step_goto`) in `mod.rs`;
//!   its `node` ops (`list`, `show`, `modify`) and the nodes' logics in `nodes.rs`.
//! - `error.rs` — [`CommandError`].
//! - `place.rs` — [`Place`]: where the store is (the data dir's own, or PostgreSQL), and
//!   opening it: a runtime for the commands and the engine, a throwaway one for the demo,
//!   the checkpoint after an engine stopped.
//! - `store_admin.rs` — `store verify | repair | migrate | compact`: [`StoreRequest`] run
//!   by [`store_command`] into a [`StoreAnswer`], printed by [`render_store`].
//! - `rotate.rs` — `secrets rotate-key`: [`rotate_key`] into [`Rotated`].
//! - `render.rs` — an answer as the CLI's text or `--json`.
//! - `templates.rs` — the process templates shipped in `processes/`, embedded.
//! - `token.rs` — an OAuth token task in words (fingerprint, refreshes, escalation), and
//!   the code out of a pasted redirect address.
//! - `yaml_edit.rs` — a title or description set in a stored definition's text, its
//!   comments and layout kept (the task API's `conv modify`, `node modify`).

mod answer;
mod authorize;
pub mod door;
mod error;
mod execute;
pub mod manage;
mod place;
pub mod render;
mod request;
mod rotate;
mod store_admin;
pub mod templates;
mod token;
mod yaml_edit;

pub use answer::{
    Answer, AuthorizeInfo, NodeSummary, ParamInfo, ProcessDetail, ProcessSummary, Reason,
    StoreStatsView, TaskView, TemplateInfo,
};
pub use authorize::authorize_url;
pub use error::CommandError;
pub use execute::{
    Caller, Scope, api_key, draw, execute, params, process_detail, resolve, run, template_list,
    wait_idle,
};
pub use place::{Place, Postgres, is_postgres_url, throwaway_runtime};
pub use request::{GraphFormat, Reply, Request};
pub use rotate::{Rotated, render_rotated, rotate_key};
pub use store_admin::{
    LogRead, MigrateTarget, Repair, StoreAnswer, StoreRequest, Verified, render_store,
    store_command,
};
// The store's types a caller names to say where and how (never to open it).
pub use conveyor_store::{
    ApiKey, KeySource, PgOptions, ReclaimPolicy, StoreError, StoreKind, StoreOptions,
};
pub use token::{TokenState, code_from, fingerprint, token_state};
