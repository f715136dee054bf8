//! Small edits of a stored process definition that keep its text: the task API's `conv
//! modify` and `node modify` change a title or a description, and a person's comments,
//! blank lines, order and quoting in the YAML must survive that. The edit works on lines
//! (a block mapping at the top, nodes in block or one-line `{…}` style); the caller
//! checks the result reads back as exactly the definition it meant, and writes the
//! definition anew from its data when it does not (or when an edit here answers `None`).

/// `yaml` with its top-level `key` set to the string `value`, every other line kept as
/// it was. The key's line and the lines that continue its value (indented ones) are
/// replaced by one line `key: "value"`; a key the definition lacks is added after the
/// `process:` entry. `None` for a text this does not know how to edit (several
/// documents, no block mapping at the top).
pub fn set_top_level(yaml: &str, key: &str, value: &str) -> Option<String> {
    let lines: Vec<&str> = yaml.split_inclusive('\n').collect();
    if !plain_document(&lines) {
        return None;
    }
    let entry = format!("{key}: {}\n", quoted(value)?);
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    if let Some(at) = lines.iter().position(|l| is_key(l, 0, key)) {
        let end = extent(&lines, at, 0);
        out.splice(at..end, [entry]);
    } else {
        let at = lines
            .iter()
            .position(|l| is_key(l, 0, "process"))
            .map_or(0, |p| extent(&lines, p, 0));
        insert(&mut out, at, entry);
    }
    Some(out.concat())
}

/// `yaml` with `key` of node `node` (under the top-level `nodes:`) set to the string
/// `value`. A node in block style gets its `key:` line (and its continuation) replaced,
/// or a new one first among its fields; a node written `name: { … }` gets `key: "…", `
/// first in its braces, unless `exists` says it has the key already (then `None`: its
/// text cannot be edited safely).
pub fn set_node_field(
    yaml: &str,
    node: &str,
    key: &str,
    value: &str,
    exists: bool,
) -> Option<String> {
    let lines: Vec<&str> = yaml.split_inclusive('\n').collect();
    if !plain_document(&lines) {
        return None;
    }
    let nodes = lines.iter().position(|l| is_key(l, 0, "nodes"))?;
    let end = extent(&lines, nodes, 0);
    let child = child_indent(&lines[nodes + 1..end])?;
    let at = (nodes + 1..end).find(|&i| is_key(lines[i], child, node))?;
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let rest = lines[at][child + node.len() + 1..].trim_start();
    if rest.starts_with('{') {
        if exists {
            return None;
        }
        let brace = lines[at].len() - rest.len();
        out[at].insert_str(brace + 1, &format!(" {key}: {},", quoted(value)?));
        return Some(out.concat());
    }
    if !rest.trim().is_empty() && !rest.starts_with('#') {
        // `name: value` or an anchor: not a mapping written in block style.
        return None;
    }
    let node_end = extent(&lines, at, child);
    let field = child_indent(&lines[at + 1..node_end])?;
    let entry = format!("{}{key}: {}\n", " ".repeat(field), quoted(value)?);
    match (at + 1..node_end).find(|&i| is_key(lines[i], field, key)) {
        Some(line) => {
            let line_end = extent(&lines, line, field);
            out.splice(line..line_end, [entry]);
        }
        None => insert(&mut out, at + 1, entry),
    }
    Some(out.concat())
}

/// A JSON string is a YAML double-quoted scalar.
fn quoted(value: &str) -> Option<String> {
    serde_json::to_string(value).ok()
}

/// One document, a block mapping at the top.
fn plain_document(lines: &[&str]) -> bool {
    !lines
        .iter()
        .any(|l| l.starts_with("---") || l.starts_with("...") || l.starts_with('{'))
}

/// Whether `line` is `key:` at exactly `indent` spaces.
fn is_key(line: &str, indent: usize, key: &str) -> bool {
    line.len() > indent
        && line.as_bytes()[..indent].iter().all(|b| *b == b' ')
        && line[indent..]
            .strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(':'))
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\n', '\r']))
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// The indentation of the first line of `lines` that holds something.
fn child_indent(lines: &[&str]) -> Option<usize> {
    lines
        .iter()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| indent_of(l))
}

/// The end (exclusive) of the entry starting at line `start` with `indent`: the lines
/// after it that are indented deeper, or blank, less the blank ones at its end.
fn extent(lines: &[&str], start: usize, indent: usize) -> usize {
    let mut end = start + 1;
    while end < lines.len()
        && (lines[end].trim().is_empty()
            || (indent_of(lines[end]) > indent && !lines[end].starts_with('\t')))
    {
        end += 1;
    }
    while end > start + 1 && lines[end - 1].trim().is_empty() {
        end -= 1;
    }
    end
}

fn insert(out: &mut Vec<String>, at: usize, entry: String) {
    if at > 0 && !out[at - 1].ends_with('\n') {
        out[at - 1].push('\n');
    }
    out.insert(at, entry);
}

#[cfg(test)]
mod tests {
    use super::{set_node_field, set_top_level};

    #[test]
    fn a_top_level_key_is_replaced_in_place_with_the_comments_around_it() {
        let yaml = "# top\nprocess: p\ntitle: Old # gone with its line\ndescription: >\n  folded\n  text\n\n# nodes\nnodes:\n  a: { type: final } # kept\n";
        let edited =
            set_top_level(yaml, "title", "New: \"quoted\" # not a comment").expect("edited");
        let edited = set_top_level(&edited, "description", "short").expect("edited");
        assert_eq!(
            edited,
            "# top\nprocess: p\ntitle: \"New: \\\"quoted\\\" # not a comment\"\ndescription: \"short\"\n\n# nodes\nnodes:\n  a: { type: final } # kept\n"
        );
        let value: serde_json::Value = serde_yaml::from_str(&edited).expect("YAML");
        assert_eq!(value["title"], "New: \"quoted\" # not a comment");
        // A key that reads like the one sought is not it.
        let yaml = "process: p\ntitles: x\nnodes:\n  title: { type: final }\n";
        let edited = set_top_level(yaml, "title", "T").expect("edited");
        assert_eq!(
            edited,
            "process: p\ntitle: \"T\"\ntitles: x\nnodes:\n  title: { type: final }\n"
        );
    }

    #[test]
    fn a_missing_key_goes_after_the_process_entry_and_odd_layouts_are_left_alone() {
        let yaml = "# c\nprocess:\n  p\nnodes: {}";
        assert_eq!(
            set_top_level(yaml, "description", "d\nline 2").as_deref(),
            Some("# c\nprocess:\n  p\ndescription: \"d\\nline 2\"\nnodes: {}")
        );
        assert_eq!(set_top_level("{process: p}", "title", "t"), None);
        assert_eq!(set_top_level("---\nprocess: p\n", "title", "t"), None);
    }

    #[test]
    fn a_node_field_is_set_in_block_and_in_brace_style() {
        let yaml = "process: p\nnodes:\n  # the start\n  start: { type: start, next: wait } # go\n  wait:\n    type: wait_callback\n    # its title\n    title: |\n      Old\n      title\n    next: done\n  done:\n    type: final\n";
        let edited = set_node_field(yaml, "wait", "title", "New", true).expect("edited");
        let edited = set_node_field(&edited, "start", "title", "Begin", false).expect("edited");
        let edited = set_node_field(&edited, "done", "description", "End", false).expect("edited");
        assert_eq!(
            edited,
            "process: p\nnodes:\n  # the start\n  start: { title: \"Begin\", type: start, next: wait } # go\n  wait:\n    type: wait_callback\n    # its title\n    title: \"New\"\n    next: done\n  done:\n    description: \"End\"\n    type: final\n"
        );
        // A braced node that has the key already, or no such node: not edited here.
        assert_eq!(set_node_field(yaml, "start", "type", "x", true), None);
        assert_eq!(set_node_field(yaml, "nowhere", "title", "x", false), None);
    }
}
