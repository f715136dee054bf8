//! The drawing's view of a process: nodes with their look (each kind's own, from
//! `Kind::look`), and edges with their style, taken from `Node::edges()`. Shared by every
//! output format.

use conveyor_model::{DurationSpec, LimitAt, Look, Node, Process};
use serde::Serialize;

/// How an edge is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeKind {
    /// `next`.
    Next,
    /// A condition branch.
    Branch,
    /// A condition's `else`.
    Else,
    /// `on_error`: dashed red.
    OnError,
    /// A time limit (`timeout 30s`): dotted.
    Timeout,
}

impl EdgeKind {
    /// Reads the kind from the field an edge is written in (`Edge::field`).
    pub fn of_field(field: &str) -> EdgeKind {
        match field {
            "on_error" => EdgeKind::OnError,
            "timeout" => EdgeKind::Timeout,
            "else" => EdgeKind::Else,
            f if f.starts_with("branches") => EdgeKind::Branch,
            _ => EdgeKind::Next,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EdgeKind::Next => "next",
            EdgeKind::Branch => "branch",
            EdgeKind::Else => "else",
            EdgeKind::OnError => "on_error",
            EdgeKind::Timeout => "timeout",
        }
    }

    /// Line colour.
    pub fn color(self) -> &'static str {
        match self {
            EdgeKind::Next => "#475569",
            EdgeKind::Branch => "#4338ca",
            EdgeKind::Else => "#64748b",
            EdgeKind::OnError => "#dc2626",
            EdgeKind::Timeout => "#7e22ce",
        }
    }

    /// SVG `stroke-dasharray`, when the line is not solid.
    pub fn dash(self) -> Option<&'static str> {
        match self {
            EdgeKind::OnError => Some("6 4"),
            EdgeKind::Timeout => Some("2 3"),
            _ => None,
        }
    }

    pub const ALL: [EdgeKind; 5] = [
        EdgeKind::Next,
        EdgeKind::Branch,
        EdgeKind::Else,
        EdgeKind::OnError,
        EdgeKind::Timeout,
    ];
}

/// A node as drawn.
pub struct GraphNode<'a> {
    pub id: &'a str,
    pub node: &'a Node,
    pub look: Look,
}

/// An edge as drawn, between node indexes.
pub struct GraphEdge {
    pub from: usize,
    pub to: usize,
    pub label: String,
    pub field: String,
    pub kind: EdgeKind,
}

/// Nodes in file order and every edge between them.
pub struct Graph<'a> {
    pub nodes: Vec<GraphNode<'a>>,
    pub edges: Vec<GraphEdge>,
    /// Index of the start node (0 if the process names none that exists).
    pub start: usize,
}

impl<'a> Graph<'a> {
    pub fn of(process: &'a Process) -> Graph<'a> {
        let nodes: Vec<GraphNode<'a>> = process
            .nodes
            .iter()
            .map(|(id, node)| GraphNode {
                id: id.as_str(),
                node,
                look: node.kind.as_kind().look(),
            })
            .collect();
        let mut edges = Vec::new();
        for (from, (_, node)) in process.nodes.iter().enumerate() {
            for edge in node.edges() {
                // A checked process has no dangling target; one built by hand might.
                // Such an edge cannot be drawn, so it is left out.
                let Some(to) = process.nodes.get_index_of(edge.target) else {
                    continue;
                };
                let label = if edge.field == "timeout" {
                    timeout_label(node).unwrap_or(edge.label)
                } else {
                    edge.label
                };
                edges.push(GraphEdge {
                    from,
                    to,
                    kind: EdgeKind::of_field(&edge.field),
                    label,
                    field: edge.field,
                });
            }
        }
        let start = process.nodes.get_index_of(&process.start).unwrap_or(0);
        Graph {
            nodes,
            edges,
            start,
        }
    }
}

/// `timeout {{refresh_every}}` for a time limit read from a task key; the model's label
/// says only `timeout (template)` there.
fn timeout_label(node: &Node) -> Option<String> {
    let limit = node.time_limit.as_ref()?;
    let (template, word) = match &limit.when {
        LimitAt::After(DurationSpec::Template(template)) => (template, "timeout"),
        LimitAt::Until(template) => (template, "timeout until"),
        LimitAt::After(DurationSpec::Fixed(_)) => return None,
    };
    let keys = template.task_keys();
    match keys.as_slice() {
        [key] if template.is_whole_value() => Some(format!("{word} {{{{{key}}}}}")),
        _ => None,
    }
}

/// The counter line of a node: `3 now · 120 total`.
pub fn count_text(now: i64, total: u64) -> String {
    format!("{now} now · {total} total")
}
