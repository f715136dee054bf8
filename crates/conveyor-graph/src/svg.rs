//! SVG 1.1 from our own layout: no external tool, no script.
//!
//! The dashboard finds node groups by `data-node="ID"` and counters by
//! `class="count"` / `data-count-for="ID"` (which also carry `data-now` and `data-total`).
//! A counter with tasks in it is drawn amber; a dashboard updating it live may restyle it
//! by `data-now`.

use std::fmt::Write;

use conveyor_model::{Icon, Process, Shape};

use crate::Counts;
use crate::graph::{EdgeKind, count_text};
use crate::layout::metrics::*;
use crate::layout::{Layout, NodeBox, layout, round_radius};
use crate::text::{Font, num, text_width, xml_escape};

/// Height of the title bar above the graph.
const HEADER: f64 = 40.0;
const FONT: &str = "Helvetica, Arial, 'DejaVu Sans', sans-serif";
const MONO: &str = "Menlo, Consolas, 'DejaVu Sans Mono', monospace";

/// Renders the process as a standalone SVG document.
///
/// With `counts` (node id → tasks now, tasks in total), every node shows a counter line;
/// nodes missing from the map show `0 now · 0 total`.
pub fn svg(process: &Process, counts: Option<&Counts>) -> String {
    let layout = layout(process, counts.is_some());
    render(&layout, process, counts)
}

fn render(layout: &Layout, process: &Process, counts: Option<&Counts>) -> String {
    let width = layout.width.max(header_width(layout));
    let height = layout.height + HEADER;
    let prefix = id_prefix(&layout.process);
    let mut out = String::with_capacity(8192 + layout.nodes.len() * 1500);
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="{font}" class="conveyor-graph" data-process="{name}">"#,
        w = num(width),
        h = num(height),
        font = xml_escape(FONT),
        name = xml_escape(&layout.process),
    );
    out.push('\n');
    let heading = match &layout.title {
        Some(title) => format!("{title} ({})", layout.process),
        None => layout.process.clone(),
    };
    let _ = writeln!(out, "<title>{}</title>", xml_escape(&heading));
    if let Some(description) = &process.description {
        let _ = writeln!(out, "<desc>{}</desc>", xml_escape(description));
    }
    write_markers(&mut out, &prefix);
    let _ = writeln!(
        out,
        r##"<rect class="background" x="0" y="0" width="{}" height="{}" fill="#ffffff"/>"##,
        num(width),
        num(height)
    );
    write_header(&mut out, layout);
    let _ = writeln!(out, r#"<g transform="translate(0,{})">"#, num(HEADER));

    // Edges under labels, labels under nodes.
    out.push_str("<g class=\"edges\">\n");
    for (i, edge) in layout.edges.iter().enumerate() {
        let dash = edge
            .kind
            .dash()
            .map(|d| format!(r#" stroke-dasharray="{d}""#))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            r#"<g class="edge {kind}" data-edge="{i}" data-from="{from}" data-to="{to}"><title>{from} → {to}: {label}</title><path d="{d}" fill="none" stroke="{color}" stroke-width="1.4"{dash} marker-end="url(#{prefix}-arrow-{kind})"/></g>"#,
            kind = edge.kind.as_str(),
            from = xml_escape(&edge.from),
            to = xml_escape(&edge.to),
            label = xml_escape(&edge.label),
            d = edge.path,
            color = edge.kind.color(),
        );
    }
    out.push_str("</g>\n<g class=\"edge-labels\">\n");
    for (i, edge) in layout.edges.iter().enumerate() {
        let b = edge.label_box;
        let _ = writeln!(
            out,
            r##"<g class="edge-label {kind}" data-edge="{i}"><rect x="{x}" y="{y}" width="{w}" height="{h}" rx="3" fill="#ffffff" fill-opacity="0.85"/><text x="{tx}" y="{ty}" font-size="{size}" fill="{color}"{weight}>{label}</text></g>"##,
            kind = edge.kind.as_str(),
            x = num(b.x),
            y = num(b.y),
            w = num(b.width),
            h = num(b.height),
            tx = num(b.x + 2.0),
            ty = num(b.bottom() - 3.5),
            size = num(LABEL_SIZE),
            color = edge.kind.color(),
            weight = if edge.kind == EdgeKind::Next {
                ""
            } else {
                r#" font-weight="bold""#
            },
            label = xml_escape(&edge.label),
        );
    }
    out.push_str("</g>\n<g class=\"nodes\">\n");
    for (node_box, (_, node)) in layout.nodes.iter().zip(process.nodes.iter()) {
        write_node(&mut out, node_box, node.description.as_deref(), counts);
    }
    out.push_str("</g>\n</g>\n</svg>\n");
    out
}

/// Width the header needs.
fn header_width(layout: &Layout) -> f64 {
    let title = layout.title.as_deref().unwrap_or(&layout.process);
    16.0 + bold_width(title, 15.0) + 10.0 + text_width(&layout.process, 11.0, Font::Mono) + 16.0
}

/// Bold text runs about a tenth wider.
fn bold_width(text: &str, size: f64) -> f64 {
    text_width(text, size, Font::Sans) * 1.1
}

fn write_header(out: &mut String, layout: &Layout) {
    let title = layout.title.as_deref().unwrap_or(&layout.process);
    let _ = writeln!(
        out,
        r##"<g class="header"><text x="16" y="26" font-size="15" font-weight="bold" fill="#0f172a">{}</text>"##,
        xml_escape(title)
    );
    if layout.title.is_some() {
        let _ = writeln!(
            out,
            r##"<text x="{}" y="26" font-size="11" font-family="{}" fill="#64748b">{}</text>"##,
            num(16.0 + bold_width(title, 15.0) + 10.0),
            xml_escape(MONO),
            xml_escape(&layout.process)
        );
    }
    out.push_str("</g>\n");
}

/// Ids in the SVG (markers) are prefixed with the process name, so two graphs inlined in
/// one HTML page do not clash.
fn id_prefix(process: &str) -> String {
    let safe: String = process
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("cv-{safe}")
}

/// One arrowhead per edge kind (SVG 1.1 markers do not take the line's colour).
fn write_markers(out: &mut String, prefix: &str) {
    out.push_str("<defs>\n");
    for kind in EdgeKind::ALL {
        let _ = writeln!(
            out,
            r#"<marker id="{prefix}-arrow-{k}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="9" markerHeight="9" markerUnits="userSpaceOnUse" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{c}"/></marker>"#,
            k = kind.as_str(),
            c = kind.color(),
        );
    }
    out.push_str("</defs>\n");
}

fn write_node(
    out: &mut String,
    node: &NodeBox,
    description: Option<&str>,
    counts: Option<&Counts>,
) {
    let look = node.look;
    let palette = look.palette;
    let id = xml_escape(&node.id);
    let _ = write!(
        out,
        r#"<g class="node {}" data-node="{id}" data-kind="{}">"#,
        look.class, node.kind
    );
    // Tooltip: id, kind, full title and description, counts.
    let mut tooltip = format!("{} ({})", node.id, look.label);
    if let Some(title) = &node.title {
        tooltip.push_str(": ");
        tooltip.push_str(title);
    }
    if let Some(description) = description {
        tooltip.push_str(" — ");
        tooltip.push_str(description);
    }
    let count = counts.map(|c| c.get(&node.id).copied().unwrap_or((0, 0)));
    if let Some((now, total)) = count {
        tooltip.push_str(" — ");
        tooltip.push_str(&count_text(now, total));
    }
    let _ = write!(out, "<title>{}</title>", xml_escape(&tooltip));
    let sheet = write_shape(out, node);

    // Text block, centred in the front sheet.
    let block_h = KIND_LINE
        + ID_LINE
        + TITLE_LINE * node.title_lines.len() as f64
        + if count.is_some() { COUNT_LINE } else { 0.0 };
    let cx = sheet.0;
    let mut y = sheet.1 + (sheet.2 - block_h) / 2.0;
    // Kind, with an icon for waiting kinds and escalations.
    let kind_w = text_width(&node.kind_text, KIND_SIZE, Font::Sans);
    let mut kind_x = cx;
    if let Some(icon) = look.icon {
        let start = cx - (kind_w + 16.0) / 2.0;
        let icon_x = start + 6.0;
        let icon_y = y + KIND_LINE / 2.0;
        write_icon(out, icon, icon_x, icon_y, palette.ink);
        kind_x = start + 16.0 + kind_w / 2.0;
    }
    let _ = write!(
        out,
        r#"<text class="kind" x="{}" y="{}" text-anchor="middle" font-size="{}" fill="{}" letter-spacing="0.3">{}</text>"#,
        num(kind_x),
        num(y + KIND_LINE - 3.0),
        num(KIND_SIZE),
        palette.ink,
        xml_escape(&node.kind_text)
    );
    y += KIND_LINE;
    let _ = write!(
        out,
        r##"<text class="id" x="{}" y="{}" text-anchor="middle" font-size="{}" font-family="{}" font-weight="bold" fill="#0f172a">{}</text>"##,
        num(cx),
        num(y + ID_LINE - 5.0),
        num(ID_SIZE),
        xml_escape(MONO),
        xml_escape(&node.id_text)
    );
    y += ID_LINE;
    for line in &node.title_lines {
        let _ = write!(
            out,
            r##"<text class="title" x="{}" y="{}" text-anchor="middle" font-size="{}" fill="#334155">{}</text>"##,
            num(cx),
            num(y + TITLE_LINE - 3.5),
            num(TITLE_SIZE),
            xml_escape(line)
        );
        y += TITLE_LINE;
    }
    if let Some((now, total)) = count {
        let colour = if now > 0 { "#b45309" } else { "#475569" };
        let _ = write!(
            out,
            r#"<text class="count" data-count-for="{id}" data-now="{now}" data-total="{total}" x="{}" y="{}" text-anchor="middle" font-size="{}" font-weight="bold" fill="{colour}">{}</text>"#,
            num(cx),
            num(y + COUNT_LINE - 4.5),
            num(COUNT_SIZE),
            xml_escape(&count_text(now, total))
        );
    }
    out.push_str("</g>\n");
}

/// Draws the node's shape; returns the text area as (centre x, top, height).
fn write_shape(out: &mut String, node: &NodeBox) -> (f64, f64, f64) {
    let p = node.look.palette;
    let (x, y, w, h) = (node.x, node.y, node.width, node.height);
    let style = |width: f64| {
        format!(
            r#"fill="{}" stroke="{}" stroke-width="{}""#,
            p.fill,
            p.stroke,
            num(width)
        )
    };
    let rect = |out: &mut String, x: f64, y: f64, w: f64, h: f64, rx: f64, width: f64| {
        let _ = write!(
            out,
            r#"<rect class="shape" x="{}" y="{}" width="{}" height="{}" rx="{}" {}/>"#,
            num(x),
            num(y),
            num(w),
            num(h),
            num(rx),
            style(width)
        );
    };
    match node.look.shape {
        Shape::Pill => {
            rect(out, x, y, w, h, h / 2.0, 1.6);
            (x + w / 2.0, y, h)
        }
        Shape::Framed => {
            // A double border: the end of the line.
            rect(out, x, y, w, h, 9.0, 1.6);
            let _ = write!(
                out,
                r#"<rect x="{}" y="{}" width="{}" height="{}" rx="6" fill="none" stroke="{}" stroke-width="1"/>"#,
                num(x + 3.0),
                num(y + 3.0),
                num(w - 6.0),
                num(h - 6.0),
                p.stroke
            );
            (x + w / 2.0, y, h)
        }
        Shape::Hexagon => {
            // A diamond stretched to hold its text: pointed left and right.
            let cy = y + h / 2.0;
            let points = [
                (x + HEX, y),
                (x + w - HEX, y),
                (x + w, cy),
                (x + w - HEX, y + h),
                (x + HEX, y + h),
                (x, cy),
            ];
            let list: Vec<String> = points
                .iter()
                .map(|(px, py)| format!("{},{}", num(*px), num(*py)))
                .collect();
            let _ = write!(
                out,
                r#"<polygon class="shape" points="{}" stroke-linejoin="round" {}/>"#,
                list.join(" "),
                style(1.4)
            );
            (x + w / 2.0, y, h)
        }
        Shape::Wait => {
            // The flowchart "delay" shape: flat left, round right.
            let r = round_radius(Shape::Wait, node.rect());
            let _ = write!(
                out,
                r#"<path class="shape" d="M{x0},{y0} H{a} A{r},{r} 0 0 1 {x1},{b} V{c} A{r},{r} 0 0 1 {a},{y1} H{x0} Z" {s}/>"#,
                x0 = num(x),
                y0 = num(y),
                x1 = num(x + w),
                y1 = num(y + h),
                a = num(x + w - r),
                b = num(y + r),
                c = num(y + h - r),
                r = num(r),
                s = style(1.4)
            );
            (x + (w - 8.0) / 2.0, y, h)
        }
        Shape::Alarm => {
            rect(out, x, y, w, h, 6.0, 2.6);
            (x + w / 2.0, y, h)
        }
        Shape::Stack => {
            // Two sheets: a copy goes out.
            rect(out, x + STACK, y + STACK, w - STACK, h - STACK, 5.0, 1.2);
            rect(out, x, y, w - STACK, h - STACK, 5.0, 1.4);
            (x + (w - STACK) / 2.0, y, h - STACK)
        }
        Shape::Subprocess => {
            // The flowchart "predefined process" shape: bars inside both sides.
            rect(out, x, y, w, h, 3.0, 1.4);
            for bar in [x + 7.0, x + w - 7.0] {
                let _ = write!(
                    out,
                    r#"<line x1="{b}" y1="{}" x2="{b}" y2="{}" stroke="{}" stroke-width="1.2"/>"#,
                    num(y),
                    num(y + h),
                    p.stroke,
                    b = num(bar),
                );
            }
            (x + w / 2.0, y, h)
        }
        Shape::Square => {
            rect(out, x, y, w, h, 2.0, 1.4);
            (x + w / 2.0, y, h)
        }
        Shape::Rounded => {
            rect(out, x, y, w, h, 14.0, 1.4);
            (x + w / 2.0, y, h)
        }
        Shape::Box => {
            rect(out, x, y, w, h, 6.0, 1.4);
            (x + w / 2.0, y, h)
        }
    }
}

/// A clock for waiting kinds; a warning triangle for escalations.
fn write_icon(out: &mut String, icon: Icon, x: f64, y: f64, ink: &str) {
    match icon {
        Icon::Warning => write!(
            out,
            r##"<path class="icon" d="M{},{} L{},{} L{},{} Z" fill="#dc2626"/><text x="{}" y="{}" text-anchor="middle" font-size="8" font-weight="bold" fill="#ffffff">!</text>"##,
            num(x),
            num(y - 5.5),
            num(x + 6.0),
            num(y + 5.0),
            num(x - 6.0),
            num(y + 5.0),
            num(x),
            num(y + 4.0)
        ),
        Icon::Clock => write!(
            out,
            r#"<g class="icon" fill="none" stroke="{ink}" stroke-width="1.2"><circle cx="{}" cy="{}" r="5"/><path d="M{},{} V{} H{}"/></g>"#,
            num(x),
            num(y),
            num(x),
            num(y - 3.0),
            num(y),
            num(x + 2.5)
        ),
    }
    .unwrap_or_default();
}
