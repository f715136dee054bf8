//! Graphviz DOT.

use std::fmt::Write;

use conveyor_model::{Process, Shape};

use crate::Counts;
use crate::graph::{EdgeKind, Graph, count_text};

/// Renders the process as a Graphviz `digraph` (`dot -Tsvg` draws it).
///
/// Every id is quoted, so any node id is valid. With `counts`, each node's label ends
/// with `N now · T total`.
pub fn dot(process: &Process, counts: Option<&Counts>) -> String {
    let graph = Graph::of(process);
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", quote(&process.name));
    let heading = match &process.title {
        Some(title) => format!("{title} ({})", process.name),
        None => process.name.clone(),
    };
    let _ = writeln!(
        out,
        "  graph [rankdir=TB, labelloc=t, fontname=\"Helvetica\", fontsize=14, nodesep=0.4, ranksep=0.5, label={}];",
        quote(&heading)
    );
    out.push_str("  node [fontname=\"Helvetica\", fontsize=10, style=\"filled\", penwidth=1.3];\n");
    out.push_str("  edge [fontname=\"Helvetica\", fontsize=9, arrowsize=0.7];\n");
    for node in &graph.nodes {
        let palette = node.look.palette;
        let mut label = format!("{}\n{}", node.id, node.look.label);
        if let Some(title) = &node.node.title {
            label.push('\n');
            label.push_str(title);
        }
        if let Some(counts) = counts {
            let (now, total) = counts.get(node.id).copied().unwrap_or((0, 0));
            label.push('\n');
            label.push_str(&count_text(now, total));
        }
        let (shape, extra) = dot_shape(node.look.shape);
        let _ = writeln!(
            out,
            "  {} [label={}, shape={shape}, fillcolor=\"{}\", color=\"{}\", tooltip={}{extra}];",
            quote(node.id),
            quote(&label),
            palette.fill,
            palette.stroke,
            quote(&format!("{} ({})", node.id, node.look.label)),
        );
    }
    for edge in &graph.edges {
        let style = match edge.kind {
            EdgeKind::OnError => ", style=dashed",
            EdgeKind::Timeout => ", style=dotted",
            _ => "",
        };
        let _ = writeln!(
            out,
            "  {} -> {} [label={}, color=\"{c}\", fontcolor=\"{c}\"{style}];",
            quote(graph.nodes[edge.from].id),
            quote(graph.nodes[edge.to].id),
            quote(&edge.label),
            c = edge.kind.color(),
        );
    }
    out.push_str("}\n");
    out
}

/// DOT's shape for a [`Shape`], and the attributes it needs besides.
fn dot_shape(shape: Shape) -> (&'static str, &'static str) {
    match shape {
        Shape::Pill => ("oval", ""),
        Shape::Framed | Shape::Subprocess => ("box", ", peripheries=2"),
        Shape::Hexagon => ("diamond", ""),
        Shape::Wait => ("box", ", style=\"filled,rounded\""),
        Shape::Alarm => ("box", ", penwidth=2.5"),
        Shape::Stack => ("box3d", ""),
        Shape::Square => ("component", ""),
        Shape::Rounded => ("cds", ""),
        Shape::Box => ("box", ""),
    }
}

/// A DOT quoted string: `"` and `\` escaped, line breaks as `\n` (centred lines).
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quotes_everything_that_could_break_a_string() {
        assert_eq!(quote(r#"a "b" \c"#), r#""a \"b\" \\c""#);
        assert_eq!(quote("one\ntwo"), r#""one\ntwo""#);
    }
}
