//! Renders every shipped process, and a process with every node kind, in every format
//! and checks the output; lays out a generated 100-node process; checks escaping and
//! odd shapes of graphs.

use std::collections::HashMap;
use std::fmt::Write;
use std::time::{Duration, Instant};

use conveyor_model::Process;

use crate::{Counts, Layout, dot, layout, mermaid, svg};

/// The shipped processes, read at compile time.
const SHIPPED: [(&str, &str); 7] = [
    (
        "bitrix_oauth.yaml",
        include_str!("../../../processes/bitrix_oauth.yaml"),
    ),
    (
        "bitrix_deals.yaml",
        include_str!("../../../processes/bitrix_deals.yaml"),
    ),
    (
        "notify_mandrill.yaml",
        include_str!("../../../processes/notify_mandrill.yaml"),
    ),
    (
        "notify_messagebird.yaml",
        include_str!("../../../processes/notify_messagebird.yaml"),
    ),
    (
        "notify_telegram.yaml",
        include_str!("../../../processes/notify_telegram.yaml"),
    ),
    (
        "notify_twilio.yaml",
        include_str!("../../../processes/notify_twilio.yaml"),
    ),
    (
        "notify_unisender.yaml",
        include_str!("../../../processes/notify_unisender.yaml"),
    ),
];

fn parse(file: &str, source: &str) -> Process {
    let checked = conveyor_model::check(file, source);
    let errors: Vec<String> = checked.errors().map(|d| format!("{d:?}")).collect();
    checked
        .process
        .unwrap_or_else(|| panic!("{file} does not check: {errors:#?}"))
}

/// Every node kind once (both finals), so that every kind's look is drawn.
const EVERY_KIND: &str = include_str!("every_kind.yaml");

/// The shipped processes and the one with every kind.
fn shipped() -> Vec<(&'static str, Process)> {
    SHIPPED
        .iter()
        .chain([&("every_kind.yaml", EVERY_KIND)])
        .map(|(file, source)| (*file, parse(file, source)))
        .collect()
}

/// Each node is drawn as its kind says (its look's class, its `type:` name), and the
/// fixture keeps up with the kinds there are.
#[test]
fn every_kind_is_drawn_with_its_look() {
    let process = parse("every_kind.yaml", EVERY_KIND);
    let kinds: Vec<&str> = process.nodes.values().map(|n| n.kind.name()).collect();
    for name in conveyor_model::NODE_KINDS {
        assert!(kinds.contains(name), "every_kind.yaml has no `{name}` node");
    }
    let doc = svg(&process, None);
    let elements = check_svg(&process, &doc);
    let dot_text = dot(&process, None);
    let mermaid_text = mermaid(&process, None);
    let mut shapes = std::collections::HashSet::new();
    for (id, node) in &process.nodes {
        let look = node.kind.as_kind().look();
        shapes.insert(look.shape);
        let group = elements
            .iter()
            .find(|e| e.attr("data-node") == Some(id.as_str()))
            .unwrap_or_else(|| panic!("no group for {id}"));
        let class = format!("node {}", look.class);
        assert_eq!(group.attr("class"), Some(class.as_str()));
        assert_eq!(group.attr("data-kind"), Some(node.kind.name()));
        let label = format!("\"{id}\" [label=\"{id}\\n{}", look.label);
        assert!(dot_text.contains(&label), "{label}\n{dot_text}");
        assert!(mermaid_text.contains(&format!("classDef {} ", look.class)));
    }
    assert_eq!(shapes.len(), 10, "every shape is drawn: {shapes:?}");
}

// ---------------------------------------------------------------------------------------
// A small XML well-formedness checker: one root element, balanced tags, quoted and
// unique attributes, `<` only in markup, `&` only in known entity or character references.
// It returns the elements so tests can look for attributes and text.

#[derive(Debug)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    /// Text directly inside the element, entities decoded.
    text: String,
    /// Index of the parent element.
    parent: Option<usize>,
}

impl Element {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn is_name_char(c: char, first: bool) -> bool {
    c.is_ascii_alphabetic()
        || c == '_'
        || c == ':'
        || (!first && (c.is_ascii_digit() || c == '-' || c == '.'))
}

/// Decodes entity and character references; fails on a bare `&` or `<`.
fn decode(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(['&', '<']) {
        out.push_str(&rest[..i]);
        if rest[i..].starts_with('<') {
            return Err(format!("`<` in text or attribute: {text:?}"));
        }
        let end = rest[i..]
            .find(';')
            .ok_or_else(|| format!("unterminated `&` in {text:?}"))?;
        let entity = &rest[i + 1..i + end];
        let decoded = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            e if e.starts_with("#x") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32)
                .ok_or_else(|| format!("bad reference &{e};"))?,
            e if e.starts_with('#') => e[1..]
                .parse::<u32>()
                .ok()
                .and_then(char::from_u32)
                .ok_or_else(|| format!("bad reference &{e};"))?,
            e => return Err(format!("unknown entity &{e};")),
        };
        out.push(decoded);
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    if out
        .chars()
        .any(|c| (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(format!("control character in {text:?}"));
    }
    Ok(out)
}

fn check_xml(doc: &str) -> Result<Vec<Element>, String> {
    let mut elements: Vec<Element> = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    let mut roots = 0;
    let mut rest = doc;
    if rest.starts_with("<?xml")
        && let Some(end) = rest.find("?>")
    {
        rest = &rest[end + 2..];
    }
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            // Trailing text.
            if stack.is_empty() && !rest.trim().is_empty() {
                return Err(format!("text outside the root: {rest:?}"));
            }
            decode(rest)?;
            break;
        };
        let text = &rest[..lt];
        match stack.last() {
            Some(&top) => elements[top].text.push_str(&decode(text)?),
            None if !text.trim().is_empty() => {
                return Err(format!("text outside the root: {text:?}"));
            }
            None => {}
        }
        rest = &rest[lt..];
        if let Some(comment) = rest.strip_prefix("<!--") {
            let end = comment.find("-->").ok_or("unterminated comment")?;
            rest = &comment[end + 3..];
            continue;
        }
        let gt = rest.find('>').ok_or("unterminated tag")?;
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let top = stack
                .pop()
                .ok_or_else(|| format!("close tag </{name}> with none open"))?;
            if elements[top].name != name.trim() {
                return Err(format!("</{name}> closes <{}>", elements[top].name));
            }
            continue;
        }
        let (tag, self_closing) = match tag.strip_suffix('/') {
            Some(t) => (t, true),
            None => (tag, false),
        };
        // Name.
        let name_end = tag.find(|c: char| c.is_whitespace()).unwrap_or(tag.len());
        let name = &tag[..name_end];
        if name.is_empty()
            || !name
                .chars()
                .enumerate()
                .all(|(i, c)| is_name_char(c, i == 0))
        {
            return Err(format!("bad element name {name:?}"));
        }
        // Attributes.
        let mut attrs: Vec<(String, String)> = Vec::new();
        let mut a = tag[name_end..].trim_start();
        while !a.is_empty() {
            let eq = a
                .find('=')
                .ok_or_else(|| format!("attribute without value in <{name}>"))?;
            let attr = a[..eq].trim();
            if attr.is_empty()
                || !attr
                    .chars()
                    .enumerate()
                    .all(|(i, c)| is_name_char(c, i == 0))
            {
                return Err(format!("bad attribute name {attr:?} in <{name}>"));
            }
            let after = a[eq + 1..].trim_start();
            let quote = after.chars().next().ok_or("missing attribute value")?;
            if quote != '"' && quote != '\'' {
                return Err(format!("unquoted attribute {attr} in <{name}>"));
            }
            let close = after[1..]
                .find(quote)
                .ok_or_else(|| format!("unterminated attribute {attr} in <{name}>"))?;
            let value = decode(&after[1..1 + close])?;
            if attrs.iter().any(|(n, _)| n == attr) {
                return Err(format!("duplicate attribute {attr} in <{name}>"));
            }
            attrs.push((attr.to_string(), value));
            let next = &after[close + 2..];
            if !next.is_empty() && !next.starts_with(char::is_whitespace) {
                return Err(format!("no space between attributes in <{name}>"));
            }
            a = next.trim_start();
        }
        if stack.is_empty() {
            roots += 1;
            if roots > 1 {
                return Err("more than one root element".into());
            }
        }
        elements.push(Element {
            name: name.to_string(),
            attrs,
            text: String::new(),
            parent: stack.last().copied(),
        });
        if !self_closing {
            stack.push(elements.len() - 1);
        }
    }
    if let Some(&open) = stack.last() {
        return Err(format!("<{}> is never closed", elements[open].name));
    }
    if roots != 1 {
        return Err("no root element".into());
    }
    Ok(elements)
}

#[test]
fn xml_checker_catches_mistakes() {
    assert!(check_xml(r#"<a x="1"><b/>t &amp; u</a>"#).is_ok());
    for bad in [
        "<a><b></a></b>",
        "<a>",
        "<a></a><b></b>",
        "<a>x & y</a>",
        "<a>x < y</a>",
        r#"<a x=1></a>"#,
        r#"<a x="1" x="2"></a>"#,
        r#"<a x="<"></a>"#,
        "text<a></a>",
        "<a>&bogus;</a>",
    ] {
        assert!(check_xml(bad).is_err(), "accepted {bad}");
    }
}

// ---------------------------------------------------------------------------------------
// Shared checks.

/// The SVG is well-formed and shows every node (group with `data-node`, `<title>`, id
/// text) and every edge (group and label).
fn check_svg(process: &Process, doc: &str) -> Vec<Element> {
    let elements =
        check_xml(doc).unwrap_or_else(|e| panic!("{}: bad SVG: {e}\n{doc}", process.name));
    assert_eq!(elements[0].name, "svg");
    assert_eq!(
        elements[0].attr("xmlns"),
        Some("http://www.w3.org/2000/svg")
    );
    for id in process.nodes.keys() {
        let group = elements
            .iter()
            .position(|e| e.name == "g" && e.attr("data-node") == Some(id.as_str()))
            .unwrap_or_else(|| panic!("{}: no group for node {id}", process.name));
        let children: Vec<&Element> = elements
            .iter()
            .filter(|e| e.parent == Some(group))
            .collect();
        assert!(
            children
                .iter()
                .any(|e| e.name == "title" && e.text.starts_with(id.as_str())),
            "{}: node {id} has no <title>",
            process.name
        );
        assert!(
            children
                .iter()
                .any(|e| e.attr("class") == Some("id") && e.text == *id),
            "{}: node {id} does not show its id",
            process.name
        );
    }
    let labels: Vec<&str> = elements
        .iter()
        .filter(|e| e.name == "text")
        .filter(|e| {
            e.parent
                .and_then(|p| elements[p].attr("class"))
                .is_some_and(|c| c.starts_with("edge-label"))
        })
        .map(|e| e.text.as_str())
        .collect();
    let edge_groups = elements
        .iter()
        .filter(|e| e.attr("class").is_some_and(|c| c.starts_with("edge ")))
        .count();
    let mut edge_count = 0;
    for (id, node) in &process.nodes {
        for edge in node.edges() {
            edge_count += 1;
            let shown = if edge.field == "timeout" {
                // Shown as written (`timeout {{refresh_every}}`) when a template.
                labels.iter().any(|l| l.starts_with("timeout "))
            } else {
                labels.contains(&edge.label.as_str())
            };
            assert!(
                shown,
                "{}: edge {id} -> {} ({}) has no label",
                process.name, edge.target, edge.label
            );
        }
    }
    assert_eq!(edge_groups, edge_count, "{}: edge groups", process.name);
    assert_eq!(labels.len(), edge_count, "{}: edge labels", process.name);
    elements
}

/// No two node boxes overlap; no label covers a node; every route starts on its source
/// and ends on its target.
fn check_layout(layout: &Layout) {
    for (i, a) in layout.nodes.iter().enumerate() {
        assert!(a.x >= 0.0 && a.y >= 0.0, "{} is off the drawing", a.id);
        assert!(
            a.x + a.width <= layout.width + 0.5,
            "{} is off the drawing",
            a.id
        );
        assert!(
            a.y + a.height <= layout.height + 0.5,
            "{} is off the drawing",
            a.id
        );
        for b in &layout.nodes[i + 1..] {
            assert!(
                !a.rect().overlaps(&b.rect()),
                "{}: nodes {} {:?} and {} {:?} overlap",
                layout.process,
                a.id,
                a.rect(),
                b.id,
                b.rect()
            );
        }
    }
    for edge in &layout.edges {
        for node in &layout.nodes {
            assert!(
                !edge.label_box.overlaps(&node.rect()),
                "{}: label {:?} of {} -> {} covers node {}",
                layout.process,
                edge.label,
                edge.from,
                edge.to,
                node.id
            );
        }
        let near = |p: &crate::Point, id: &str| {
            let node = layout.nodes.iter().find(|n| n.id == id).expect("node");
            let r = node.rect();
            p.x >= r.x - 1.0
                && p.x <= r.right() + 1.0
                && p.y >= r.y - 1.0
                && p.y <= r.bottom() + 1.0
        };
        assert!(edge.points.len() >= 2);
        assert!(
            near(&edge.points[0], &edge.from),
            "{edge:?} starts away from its source"
        );
        assert!(
            near(&edge.points[edge.points.len() - 1], &edge.to),
            "{edge:?} ends away from its target"
        );
        assert!(edge.path.starts_with('M'));
    }
    // Labels do not cover each other.
    for (i, a) in layout.edges.iter().enumerate() {
        for b in &layout.edges[i + 1..] {
            assert!(
                !a.label_box.overlaps(&b.label_box),
                "{}: labels {:?} ({} -> {}) and {:?} ({} -> {}) overlap",
                layout.process,
                a.label,
                a.from,
                a.to,
                b.label,
                b.from,
                b.to
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Shipped processes.

#[test]
fn shipped_processes_render_as_svg() {
    for (_, process) in shipped() {
        let doc = svg(&process, None);
        let elements = check_svg(&process, &doc);
        // No counters without counts.
        assert!(!elements.iter().any(|e| e.attr("class") == Some("count")));
        assert!(
            !doc.contains("NaN") && !doc.contains("inf"),
            "{}",
            process.name
        );
    }
}

#[test]
fn shipped_processes_lay_out_without_overlap() {
    for (_, process) in shipped() {
        for counters in [false, true] {
            let layout = layout(&process, counters);
            assert_eq!(layout.nodes.len(), process.nodes.len());
            check_layout(&layout);
        }
    }
}

#[test]
fn counts_appear_on_every_node() {
    for (_, process) in shipped() {
        let mut counts = Counts::new();
        let first = process.nodes.keys().nth(1).expect("two nodes").clone();
        counts.insert(first.clone(), (3, 1207));
        let doc = svg(&process, Some(&counts));
        let elements = check_svg(&process, &doc);
        for id in process.nodes.keys() {
            let counter = elements
                .iter()
                .find(|e| e.attr("data-count-for") == Some(id.as_str()))
                .unwrap_or_else(|| panic!("{}: no counter for {id}", process.name));
            assert_eq!(counter.attr("class"), Some("count"));
            let expected = if *id == first {
                "3 now · 1207 total"
            } else {
                "0 now · 0 total"
            };
            assert_eq!(counter.text, expected);
            let now = if *id == first { "3" } else { "0" };
            assert_eq!(counter.attr("data-now"), Some(now));
        }
        assert!(dot(&process, Some(&counts)).contains("3 now · 1207 total"));
        assert!(mermaid(&process, Some(&counts)).contains("3 now · 1207 total"));
        assert!(!dot(&process, None).contains(" now · "));
        assert!(!mermaid(&process, None).contains(" now · "));
    }
}

/// DOT: a `digraph` with balanced braces, a statement for every node and every edge.
#[test]
fn shipped_processes_render_as_dot() {
    for (_, process) in shipped() {
        let text = dot(&process, None);
        assert!(text.starts_with(&format!("digraph \"{}\" {{", process.name)));
        assert!(text.trim_end().ends_with('}'));
        assert_eq!(text.matches('{').count(), text.matches('}').count());
        for (id, node) in &process.nodes {
            assert!(
                text.contains(&format!("\n  \"{id}\" [label=\"{id}\\n")),
                "{}: node {id} missing\n{text}",
                process.name
            );
            for edge in node.edges() {
                let line = format!("\"{id}\" -> \"{}\" [label=\"", edge.target);
                assert!(
                    text.lines().any(|l| l.trim_start().starts_with(&line)
                        && (edge.field == "timeout"
                            || l.contains(&format!("label=\"{}\"", edge.label)))),
                    "{}: edge {id} -> {} missing\n{text}",
                    process.name,
                    edge.target
                );
            }
        }
        let statements = text.lines().filter(|l| l.contains(" -> ")).count();
        let edges: usize = process.nodes.values().map(|n| n.edges().len()).sum();
        assert_eq!(statements, edges);
    }
}

/// Mermaid: safe ids `n0…`, every node declared with its id in the label, every edge.
#[test]
fn shipped_processes_render_as_mermaid() {
    for (_, process) in shipped() {
        let text = mermaid(&process, None);
        assert!(text.starts_with("flowchart TD\n"));
        let ids: HashMap<&str, usize> = process
            .nodes
            .keys()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        for (id, node) in &process.nodes {
            let i = ids[id.as_str()];
            assert!(
                text.lines()
                    .any(|l| l.trim_start().starts_with(&format!("n{i}"))
                        && l.contains(&format!("<b>{id}</b>"))),
                "{}: node {id} missing\n{text}",
                process.name
            );
            for edge in node.edges() {
                let target = ids[edge.target];
                let found = text.lines().any(|l| {
                    let l = l.trim();
                    l.starts_with(&format!("n{i} "))
                        && l.ends_with(&format!("| n{target}"))
                        && (edge.field == "timeout" || l.contains(&format!("|\"{}\"|", edge.label)))
                });
                assert!(
                    found,
                    "{}: edge {id} -> {} missing\n{text}",
                    process.name, edge.target
                );
            }
        }
        // Every line is a declaration, an edge, or styling; nothing else.
        for line in text.lines().skip(1) {
            let line = line.trim();
            assert!(
                line.starts_with('n')
                    || line.starts_with("classDef ")
                    || line.starts_with("class ")
                    || line.starts_with("linkStyle "),
                "{line}"
            );
        }
    }
}

#[test]
fn layout_serializes_to_json() {
    let (_, process) = shipped().remove(0);
    let value = serde_json::to_value(layout(&process, true)).expect("serializes");
    assert_eq!(value["process"], "bitrix_oauth");
    assert!(value["width"].as_f64().is_some_and(|w| w > 0.0));
    let nodes = value["nodes"].as_array().expect("nodes");
    assert_eq!(nodes[0]["id"], "start");
    assert_eq!(nodes[0]["class"], "start");
    let escalation = nodes
        .iter()
        .find(|n| n["id"] == "not_updated")
        .expect("not_updated");
    assert_eq!(escalation["class"], "escalation");
    assert_eq!(escalation["kind"], "escalation");
    let edges = value["edges"].as_array().expect("edges");
    let timeout = edges
        .iter()
        .find(|e| e["kind"] == "timeout")
        .expect("a timeout edge");
    assert_eq!(timeout["label"], "timeout {{refresh_every}}");
    assert_eq!(timeout["from"], "wait_refresh");
    assert!(edges.iter().any(|e| e["back"] == true));
    assert!(
        edges[0]["path"]
            .as_str()
            .is_some_and(|p| p.starts_with('M'))
    );
}

#[test]
fn edges_are_styled_by_kind() {
    let (_, process) = shipped().remove(0);
    let doc = svg(&process, None);
    let elements = check_xml(&doc).expect("well-formed");
    let path_of = |class: &str| {
        let group = elements
            .iter()
            .position(|e| e.attr("class") == Some(class))
            .unwrap_or_else(|| panic!("no {class} edge"));
        elements
            .iter()
            .find(|e| e.parent == Some(group) && e.name == "path")
            .expect("path")
    };
    let error = path_of("edge on_error");
    assert_eq!(error.attr("stroke"), Some("#dc2626"));
    assert_eq!(error.attr("stroke-dasharray"), Some("6 4"));
    let timeout = path_of("edge timeout");
    assert_eq!(timeout.attr("stroke-dasharray"), Some("2 3"));
    assert_eq!(path_of("edge next").attr("stroke-dasharray"), None);
    assert!(path_of("edge branch").attr("marker-end").is_some());
    // Node kinds are drawn distinctly.
    let shape_of = |id: &str| {
        let group = elements
            .iter()
            .position(|e| e.attr("data-node") == Some(id))
            .expect("node");
        elements
            .iter()
            .find(|e| e.parent == Some(group) && e.attr("class") == Some("shape"))
            .map(|e| (e.name.clone(), e.attr("fill").map(str::to_string)))
            .expect("shape")
    };
    assert_eq!(shape_of("asked").0, "polygon");
    assert_eq!(shape_of("wait_refresh").0, "path");
    assert_eq!(shape_of("not_updated").1.as_deref(), Some("#fde68a"));
    let (_, deals) = shipped().remove(1);
    let doc = svg(&deals, None);
    let elements = check_xml(&doc).expect("well-formed");
    let fill = |id: &str| {
        let group = elements
            .iter()
            .position(|e| e.attr("data-node") == Some(id))
            .expect("node");
        elements
            .iter()
            .find(|e| e.parent == Some(group) && e.attr("class") == Some("shape"))
            .and_then(|e| e.attr("fill"))
            .map(str::to_string)
    };
    assert_ne!(
        fill("done"),
        fill("failed"),
        "success and error finals look alike"
    );
}

// ---------------------------------------------------------------------------------------
// Odd and large graphs.

/// Text with every character XML, DOT and Mermaid care about.
const AWKWARD: &str = r#"
process: awkward
title: "Tom & Jerry's <b>\"graph\"</b> # | `x`"
nodes:
  start: { type: start, next: a-b }
  a-b:
    type: condition
    title: "<script>alert('x')</script> & \"quotes\" C:\\dir\\"
    branches:
      - label: "x < 3 && y > \"4\" | 'z'"
        when: [ { param: x, fn: eq, value: "1" } ]
        next: "end"
    else: "end"
  "end": { type: final }
"#;

/// The awkward process, with a node whose id no file could have (built by hand).
fn awkward() -> Process {
    let mut process = parse("awkward.yaml", AWKWARD);
    // Ids in a checked file are plain; a process built by hand may have any id. Such a
    // node (unreachable, too) is still drawn.
    let odd = r#"<"odd" & 'id'>"#;
    let mut node = process.nodes["end"].clone();
    node.id = odd.to_string();
    process.nodes.insert(odd.to_string(), node);
    process
}

#[test]
fn awkward_text_is_escaped_everywhere() {
    let process = awkward();
    let doc = svg(&process, None);
    let elements = check_svg(&process, &doc);
    assert!(
        elements
            .iter()
            .any(|e| e.text.contains("x < 3 && y > \"4\" | 'z'"))
    );
    assert!(!doc.contains("<script"));
    let text = dot(&process, None);
    assert!(
        text.contains(r#""a-b" -> "end" [label="x < 3 && y > \"4\" | 'z'""#),
        "{text}"
    );
    assert!(
        text.contains(r#"  "<\"odd\" & 'id'>" [label="<\"odd\" & 'id'>\n"#),
        "{text}"
    );
    assert!(text.contains(r#"label="Tom & Jerry's <b>\"graph\"</b> # | `x` (awkward)""#));
    let text = mermaid(&process, None);
    assert!(!text.contains("\"graph\""));
    assert!(
        text.contains(r#"n1 -->|"x #lt; 3 #amp;#amp; y #gt; #quot;4#quot; #124; 'z'"| n2"#),
        "{text}"
    );
    // `end` is a Mermaid keyword: it only appears inside a label.
    assert!(text.contains("n2((("));
    assert!(
        text.contains("n3(((\"<b>#lt;#quot;odd#quot; #amp; 'id'#gt;</b>"),
        "{text}"
    );
}

/// A node whose time limit leads back to itself, and edges that share source and target.
#[test]
fn self_loops_and_parallel_edges() {
    let source = r#"
process: loops
nodes:
  start: { type: start, next: wait }
  wait:
    type: delay
    for: 5m
    next: copy
    on_error: wait
  copy:
    type: copy_task
    process: "@other"
    next: done
    on_error: done
  done: { type: final }
"#;
    let process = parse("loops.yaml", source);
    let layout = layout(&process, true);
    check_layout(&layout);
    let self_loop = layout
        .edges
        .iter()
        .find(|e| e.from == "wait" && e.to == "wait")
        .expect("self-loop");
    assert!(self_loop.back);
    let node = layout.nodes.iter().find(|n| n.id == "wait").expect("wait");
    assert!(
        self_loop.points.iter().any(|p| p.x < node.x),
        "the loop goes round the left side"
    );
    let parallel: Vec<_> = layout
        .edges
        .iter()
        .filter(|e| e.from == "copy" && e.to == "done")
        .collect();
    assert_eq!(parallel.len(), 2);
    assert_ne!(
        parallel[0].points[0], parallel[1].points[0],
        "parallel edges share a port"
    );
    check_svg(&process, &svg(&process, None));
}

/// A process of about 100 nodes: conditions, errors, loops through delays.
fn generated(n: usize) -> String {
    let mut yaml = String::from(
        "process: big\ntitle: Generated\nnodes:\n  start: { type: start, next: n1 }\n",
    );
    let to = |i: usize| {
        if i > n {
            "done".to_string()
        } else {
            format!("n{i}")
        }
    };
    for i in 1..=n {
        let _ = match i % 6 {
            0 => writeln!(
                yaml,
                "  n{i}:\n    type: condition\n    title: Which way for item {i}?\n    branches:\n      - label: first\n        when: [ {{ param: x, fn: eq, value: \"1\" }} ]\n        next: {}\n      - when: [ {{ param: x, fn: eq, value: \"2\" }} ]\n        next: {}\n    else: {}",
                to(i + 1),
                to(i + 3),
                to(i + 2)
            ),
            1 => writeln!(
                yaml,
                "  n{i}:\n    type: set_param\n    set: {{ x: \"{i}\" }}\n    next: {}\n    on_error: failed",
                to(i + 1)
            ),
            2 => writeln!(
                yaml,
                "  n{i}:\n    type: api_call\n    title: Call service number {i}\n    method: GET\n    url: \"https://example.com/{i}\"\n    next: {}\n    on_error: {}",
                to(i + 1),
                to(i + 4)
            ),
            3 => writeln!(
                yaml,
                "  n{i}:\n    type: delay\n    for: 5s\n    next: {}",
                to(i + 1)
            ),
            4 => writeln!(
                yaml,
                "  n{i}:\n    type: condition\n    branches:\n      - label: again\n        when: [ {{ param: x, fn: eq, value: \"1\" }} ]\n        next: n{}\n    else: {}",
                i - 1,
                to(i + 1)
            ),
            _ => writeln!(
                yaml,
                "  n{i}:\n    type: wait_callback\n    timeout: \"10m -> {}\"\n    next: {}",
                if i > 12 {
                    format!("n{}", i - 9)
                } else {
                    "failed".into()
                },
                to(i + 1)
            ),
        };
    }
    yaml.push_str("  done: { type: final }\n  failed: { type: final, status: error }\n");
    yaml
}

#[test]
fn a_hundred_nodes_lay_out_quickly_without_overlap() {
    let source = generated(98);
    let process = parse("big.yaml", &source);
    assert_eq!(process.nodes.len(), 101);
    let started = Instant::now();
    let layout = layout(&process, true);
    let took = started.elapsed();
    check_layout(&layout);
    // Debug build on a busy 2-core machine: generous, but catches a quadratic blow-up.
    assert!(took < Duration::from_secs(5), "layout took {took:?}");
    let doc = svg(&process, None);
    check_svg(&process, &doc);
    // Sane: not absurdly wide or heavy.
    assert!(layout.width < 6000.0, "width {}", layout.width);
    assert!(doc.len() < 1_000_000, "{} bytes", doc.len());
}

#[test]
fn an_empty_map_of_counts_shows_zeros() {
    let (_, process) = shipped().remove(2);
    let doc = svg(&process, Some(&Counts::new()));
    let elements = check_xml(&doc).expect("well-formed");
    let counters: Vec<&Element> = elements
        .iter()
        .filter(|e| e.attr("class") == Some("count"))
        .collect();
    assert_eq!(counters.len(), process.nodes.len());
    assert!(counters.iter().all(|c| c.text == "0 now · 0 total"));
}

/// Writes the SVG of every shipped process (and the generated one) to the folder in
/// `CONVEYOR_GRAPH_OUT`, to look at: `CONVEYOR_GRAPH_OUT=/tmp/g cargo test -p
/// conveyor-graph -- --ignored write_examples`.
#[test]
#[ignore]
fn write_examples() {
    let Some(dir) = std::env::var_os("CONVEYOR_GRAPH_OUT") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("create the folder");
    let mut counts = Counts::new();
    counts.insert("wait_refresh".into(), (1, 1));
    counts.insert("get_token".into(), (0, 14));
    for (file, process) in shipped() {
        let name = file.trim_end_matches(".yaml");
        std::fs::write(dir.join(format!("{name}.svg")), svg(&process, None)).expect("write");
        std::fs::write(
            dir.join(format!("{name}.counts.svg")),
            svg(&process, Some(&counts)),
        )
        .expect("write");
        std::fs::write(dir.join(format!("{name}.dot")), dot(&process, None)).expect("write");
        std::fs::write(dir.join(format!("{name}.mmd")), mermaid(&process, None)).expect("write");
    }
    let awkward = awkward();
    std::fs::write(dir.join("awkward.svg"), svg(&awkward, None)).expect("write");
    std::fs::write(dir.join("awkward.dot"), dot(&awkward, None)).expect("write");
    std::fs::write(dir.join("awkward.mmd"), mermaid(&awkward, None)).expect("write");
    let big = parse("big.yaml", &generated(98));
    std::fs::write(dir.join("big.svg"), svg(&big, None)).expect("write");
    std::fs::write(dir.join("big.dot"), dot(&big, None)).expect("write");
    std::fs::write(dir.join("big.mmd"), mermaid(&big, None)).expect("write");
}

#[test]
fn tiny_and_empty_processes() {
    let tiny = parse(
        "tiny.yaml",
        "process: tiny\nnodes:\n  start: { type: start, next: done }\n  done: { type: final }\n",
    );
    let layout_of_tiny = layout(&tiny, false);
    check_layout(&layout_of_tiny);
    assert_eq!(layout_of_tiny.nodes[1].layer, 1);
    check_svg(&tiny, &svg(&tiny, None));
    // No nodes at all (only a process built by hand can be so).
    let mut empty = tiny.clone();
    empty.nodes.clear();
    let doc = svg(&empty, Some(&Counts::new()));
    check_xml(&doc).expect("well-formed");
    assert!(layout(&empty, true).nodes.is_empty());
    assert!(dot(&empty, None).starts_with("digraph"));
    assert!(mermaid(&empty, None).starts_with("flowchart TD"));
}
