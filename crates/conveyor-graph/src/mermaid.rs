//! Mermaid flowchart.

use std::fmt::Write;

use conveyor_model::{Look, Process, Shape};

use crate::Counts;
use crate::graph::{EdgeKind, Graph, count_text};

/// Renders the process as a Mermaid `flowchart TD`.
///
/// Node ids are mapped to safe identifiers `n0`, `n1`, … in file order (Mermaid reserves
/// words such as `end` and chokes on punctuation); the real id is the label's first line.
/// Labels are quoted strings with Mermaid's `#…;` entity codes for special characters.
pub fn mermaid(process: &Process, counts: Option<&Counts>) -> String {
    let graph = Graph::of(process);
    let mut out = String::from("flowchart TD\n");
    for (i, node) in graph.nodes.iter().enumerate() {
        let mut label = format!(
            "<b>{}</b><br/><i>{}</i>",
            escape(node.id),
            escape(node.look.label)
        );
        if let Some(title) = &node.node.title {
            let _ = write!(label, "<br/>{}", escape(title));
        }
        if let Some(counts) = counts {
            let (now, total) = counts.get(node.id).copied().unwrap_or((0, 0));
            let _ = write!(label, "<br/><b>{}</b>", escape(&count_text(now, total)));
        }
        let (open, close) = brackets(node.look.shape);
        let _ = writeln!(out, "    n{i}{open}\"{label}\"{close}");
    }
    for edge in &graph.edges {
        let arrow = match edge.kind {
            EdgeKind::OnError | EdgeKind::Timeout => "-.->",
            _ => "-->",
        };
        let _ = writeln!(
            out,
            "    n{} {arrow}|\"{}\"| n{}",
            edge.from,
            escape(&edge.label),
            edge.to
        );
    }
    // Colours per kind of node, then per kind of edge (by the edge's index).
    let mut classes: Vec<Look> = Vec::new();
    for node in &graph.nodes {
        if !classes.iter().any(|c| c.class == node.look.class) {
            classes.push(node.look);
        }
    }
    for class in &classes {
        let p = class.palette;
        let width = if class.shape == Shape::Alarm {
            "3px"
        } else {
            "1.5px"
        };
        let _ = writeln!(
            out,
            "    classDef {} fill:{},stroke:{},stroke-width:{width},color:#0f172a",
            class.class, p.fill, p.stroke
        );
    }
    for class in &classes {
        let ids: Vec<String> = graph
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.look.class == class.class)
            .map(|(i, _)| format!("n{i}"))
            .collect();
        let _ = writeln!(out, "    class {} {}", ids.join(","), class.class);
    }
    for (i, edge) in graph.edges.iter().enumerate() {
        let dash = match edge.kind {
            EdgeKind::OnError => ",stroke-dasharray:6 4",
            EdgeKind::Timeout => ",stroke-dasharray:2 3",
            _ => "",
        };
        let _ = writeln!(
            out,
            "    linkStyle {i} stroke:{c},color:{c}{dash}",
            c = edge.kind.color()
        );
    }
    out
}

/// Mermaid's brackets for a [`Shape`].
fn brackets(shape: Shape) -> (&'static str, &'static str) {
    match shape {
        Shape::Pill => ("([", "])"),
        Shape::Framed => ("(((", ")))"),
        Shape::Hexagon => ("{", "}"),
        Shape::Wait => (">", "]"),
        Shape::Alarm => ("{{", "}}"),
        Shape::Subprocess => ("[[", "]]"),
        Shape::Stack => ("[/", "/]"),
        Shape::Square => ("[\\", "\\]"),
        Shape::Rounded => ("(", ")"),
        Shape::Box => ("[", "]"),
    }
}

/// Escapes text inside a quoted Mermaid label with its entity codes: quotes, markup and
/// the characters Mermaid gives a meaning (`#`, `|`, backtick, backslash).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '#' => out.push_str("#35;"),
            '&' => out.push_str("#amp;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '|' => out.push_str("#124;"),
            '`' => out.push_str("#96;"),
            '\\' => out.push_str("#92;"),
            '\n' | '\r' | '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escapes_quotes_and_markup() {
        assert_eq!(
            escape(r#"say "hi" <b> #1 | `x` & y \"#),
            "say #quot;hi#quot; #lt;b#gt; #35;1 #124; #96;x#96; #amp; y #92;"
        );
    }
}
