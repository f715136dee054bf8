//! The drawing's view of a process: nodes with their visual class, and edges with their
//! style, taken from `Node::edges()`. Shared by every output format.

use conveyor_model::{DurationSpec, FinalStatus, LimitAt, Node, NodeKind, Process};
use serde::Serialize;

/// How a node is drawn: its kind, with finals split by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeClass {
    Start,
    FinalSuccess,
    FinalError,
    Condition,
    Delay,
    WaitCallback,
    Code,
    ApiCall,
    Escalation,
    SetParam,
    CopyTask,
    ModifyTask,
    Sum,
    CallProcess,
    Reply,
    Queue,
    GetTask,
}

impl NodeClass {
    pub fn of(kind: &NodeKind) -> NodeClass {
        match kind {
            NodeKind::Start { .. } => NodeClass::Start,
            NodeKind::Final {
                status: FinalStatus::Success,
                ..
            } => NodeClass::FinalSuccess,
            NodeKind::Final {
                status: FinalStatus::Error,
                ..
            } => NodeClass::FinalError,
            NodeKind::Condition { .. } => NodeClass::Condition,
            NodeKind::Delay { .. } => NodeClass::Delay,
            NodeKind::WaitCallback { .. } => NodeClass::WaitCallback,
            NodeKind::ApiCall(_) => NodeClass::ApiCall,
            NodeKind::Escalation { .. } => NodeClass::Escalation,
            NodeKind::SetParam { .. } => NodeClass::SetParam,
            NodeKind::CopyTask { .. } => NodeClass::CopyTask,
            NodeKind::ModifyTask { .. } => NodeClass::ModifyTask,
            NodeKind::Sum { .. } => NodeClass::Sum,
            NodeKind::CallProcess { .. } => NodeClass::CallProcess,
            NodeKind::Reply { .. } => NodeClass::Reply,
            NodeKind::Code(_) => NodeClass::Code,
            NodeKind::Queue { .. } => NodeClass::Queue,
            NodeKind::GetTask { .. } => NodeClass::GetTask,
        }
    }

    /// The class name used in SVG `class` attributes, DOT and Mermaid.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeClass::Start => "start",
            NodeClass::FinalSuccess => "final_success",
            NodeClass::FinalError => "final_error",
            NodeClass::Condition => "condition",
            NodeClass::Delay => "delay",
            NodeClass::WaitCallback => "wait_callback",
            NodeClass::ApiCall => "api_call",
            NodeClass::Escalation => "escalation",
            NodeClass::SetParam => "set_param",
            NodeClass::CopyTask => "copy_task",
            NodeClass::ModifyTask => "modify_task",
            NodeClass::Sum => "sum",
            NodeClass::CallProcess => "call_process",
            NodeClass::Reply => "reply",
            NodeClass::Code => "code",
            NodeClass::Queue => "queue",
            NodeClass::GetTask => "get_task",
        }
    }

    /// The kind as shown on the node: the `type:` name, finals with their status.
    pub fn kind_text(self) -> &'static str {
        match self {
            NodeClass::FinalSuccess => "final · success",
            NodeClass::FinalError => "final · error",
            other => other.as_str(),
        }
    }

    /// Fill, border and text colour of the kind.
    pub fn palette(self) -> Palette {
        let (fill, stroke, ink) = match self {
            NodeClass::Start => ("#d1fae5", "#059669", "#065f46"),
            NodeClass::FinalSuccess => ("#bbf7d0", "#15803d", "#14532d"),
            NodeClass::FinalError => ("#fecaca", "#b91c1c", "#7f1d1d"),
            NodeClass::Condition => ("#e0e7ff", "#4f46e5", "#312e81"),
            NodeClass::Delay | NodeClass::WaitCallback | NodeClass::Queue => {
                ("#f3e8ff", "#7e22ce", "#581c87")
            }
            NodeClass::ApiCall => ("#dbeafe", "#1d4ed8", "#1e3a8a"),
            NodeClass::Escalation => ("#fde68a", "#dc2626", "#7c2d12"),
            NodeClass::SetParam => ("#f1f5f9", "#475569", "#1e293b"),
            NodeClass::CopyTask => ("#ccfbf1", "#0f766e", "#134e4a"),
            NodeClass::ModifyTask | NodeClass::Sum | NodeClass::GetTask => {
                ("#cffafe", "#0e7490", "#164e63")
            }
            NodeClass::CallProcess => ("#e0f2fe", "#0369a1", "#0c4a6e"),
            NodeClass::Reply => ("#fce7f3", "#be185d", "#831843"),
            NodeClass::Code => ("#fef9c3", "#a16207", "#713f12"),
        };
        Palette { fill, stroke, ink }
    }
}

/// Colours of one node kind.
#[derive(Debug, Clone, Copy)]
pub struct Palette {
    pub fill: &'static str,
    pub stroke: &'static str,
    /// Text colour for the kind line.
    pub ink: &'static str,
}

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
    pub class: NodeClass,
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
                class: NodeClass::of(&node.kind),
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
