//! Process graphs: DOT, Mermaid, and SVG drawn from our own layered layout.
//!
//! Used by `conveyor process graph <process|file.yaml> [--format dot|mermaid|svg]` and by
//! the web dashboard, which either inlines the SVG and updates its counters
//! (`data-node="ID"` on node groups, `class="count" data-count-for="ID"` on counters) or
//! draws [`layout`]'s JSON itself.
//!
//! This crate is pure: it turns a [`Process`] (and optional live counters) into text.
//!
//! ```text
//! Process ──► Graph (nodes, edges from Node::edges()) ──► dot / mermaid
//!                          │
//!                          └──► layout (layers, order, x, lanes, routes) ──► svg
//! ```
//!
//! # Layout
//!
//! - `graph.rs` — a process as nodes with their look (each kind's [`Look`]: class, label,
//!   [`Shape`], icon, colours) and styled edges, shared by every format; the formats draw
//!   shapes, never match over node kinds;
//! - `layout.rs` — the layered (Sugiyama-style) layout, top to bottom;
//! - `dot.rs`, `mermaid.rs`, `svg.rs` — one output format each;
//! - `text.rs` — XML escaping, text width estimates, wrapping and shortening;
//! - `tests.rs` — every shipped process and `every_kind.yaml` (each node kind once) in
//!   every format, a generated 100-node process.

mod dot;
mod graph;
mod layout;
mod mermaid;
mod svg;
mod text;

#[cfg(test)]
mod tests;

use std::collections::HashMap;

pub use conveyor_model::Process;
pub use conveyor_model::{Icon, Look, Palette, Shape};
pub use dot::dot;
pub use graph::EdgeKind;
pub use layout::{EdgeRoute, Layout, NodeBox, Point, Rect, layout};
pub use mermaid::mermaid;
pub use svg::svg;
pub use text::xml_escape;

/// Live counters: node id → (tasks in the node now, tasks that ever entered it).
pub type Counts = HashMap<String, (i64, u64)>;
