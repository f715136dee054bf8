//! A value written `url: {{base}}/x` is not text to YAML: `{` opens a flow mapping, so
//! the parser says "did not find expected key", or reads `{ x: {{y}} }` as a mapping
//! with a mapping for a key (`set.x.?`). Neither says what to do. When a file has
//! errors, each unquoted value that starts with `{{` is reported on its line as the
//! thing to fix, in place of the errors it causes there.

use crate::diagnostic::{Diagnostic, Severity};

/// Where an unquoted `{{` starts a value: 1-based line and column, and the key it is
/// the value of (empty for a list item).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Unquoted {
    pub line: usize,
    pub column: usize,
    pub key: String,
}

/// Replaces the errors caused by unquoted `{{` values with the hint (see the module).
pub(crate) fn explain(file: &str, source: &str, diagnostics: &mut Vec<Diagnostic>) {
    if !diagnostics.iter().any(Diagnostic::is_error) {
        return;
    }
    let found = find(source);
    if found.is_empty() {
        return;
    }
    // A YAML error follows from the first unquoted `{{`; errors on a hint's line are
    // what the unquoted value made of the line.
    diagnostics.retain(|d| {
        !(d.is_error()
            && (d.message.starts_with("invalid YAML: did not find expected")
                || d.line.is_some_and(|l| found.iter().any(|u| u.line == l))))
    });
    for u in found {
        let example = if u.key.is_empty() {
            "- \"{{…}}\"".to_string()
        } else {
            format!("{}: \"{{{{…}}}}\"", u.key)
        };
        diagnostics.push(Diagnostic {
            severity: Severity::Error,
            file: file.to_string(),
            line: Some(u.line),
            column: Some(u.column),
            node: None,
            field: None,
            message: format!(
                "quote a value that starts with {{{{: write `{example}` (unquoted, YAML reads `{{` as the start of a mapping)"
            ),
        });
    }
}

/// Every unquoted `{{` that starts a value, outside block scalars and comments.
pub(crate) fn find(source: &str) -> Vec<Unquoted> {
    let mut out = Vec::new();
    // Inside a block scalar (`key: |`), lines indented deeper than its key are text.
    let mut block_indent: Option<usize> = None;
    for (i, line) in source.lines().enumerate() {
        let indent = line.len() - line.trim_start().len();
        if let Some(block) = block_indent {
            if line.trim().is_empty() || indent > block {
                continue;
            }
            block_indent = None;
        }
        let code = strip_comment(line);
        let trimmed = code.trim_end();
        if trimmed.ends_with('|')
            || trimmed.ends_with('>')
            || trimmed.ends_with("|-")
            || trimmed.ends_with(">-")
            || trimmed.ends_with("|+")
            || trimmed.ends_with(">+")
        {
            block_indent = Some(indent);
        }
        scan_line(code, i + 1, &mut out);
    }
    out
}

/// The line without its comment (a `#` after a space, outside quotes).
fn strip_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let mut previous = ' ';
    for (at, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && previous.is_whitespace() => return &line[..at],
            _ => {}
        }
        previous = c;
    }
    line
}

fn scan_line(line: &str, number: usize, out: &mut Vec<Unquoted>) {
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let (mut single, mut double) = (false, false);
    for (n, &(at, c)) in chars.iter().enumerate() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '{' if !single && !double && line[at..].starts_with("{{") => {
                let before = line[..at].trim_end();
                let Some(last) = before.chars().last() else {
                    continue;
                };
                // A key's value (`: ` then `{{`), a list item (`- {{`), or an item of a
                // flow collection (`[` or `,` on a line that opened one).
                let spaced = before.len() < line[..at].len();
                let in_flow = line.contains(": {")
                    || line.contains(": [")
                    || line.trim_start().starts_with(['{', '['])
                    || line.trim_start().starts_with("- {")
                    || line.trim_start().starts_with("- [");
                let starts_value = match last {
                    ':' => spaced,
                    '-' => before.trim_start() == "-" && spaced,
                    '[' | ',' => in_flow,
                    _ => false,
                };
                if !starts_value || (n > 0 && chars[n - 1].1 == '{') {
                    continue;
                }
                let key = if last == ':' {
                    let head = before[..before.len() - 1].trim_end();
                    head.rsplit(['{', ',', ' ', '-'])
                        .next()
                        .unwrap_or("")
                        .to_string()
                } else {
                    String::new()
                };
                out.push(Unquoted {
                    line: number,
                    column: line[..at].chars().count() + 1,
                    key,
                });
                // One per value: skip to the end of this `{{…}}`.
                break;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_unquoted_values_only() {
        let source = "a: {{x}}/y\nb: \"{{x}}\"\nset: { x: {{y}} }\nlist:\n  - {{z}}\nsrc: |\n  c: {{no}}\nd: '{{x}}' # e: {{no}}\nh: Basic {{a}}:{{b}}, {{c}}\n";
        let found = find(source);
        let at: Vec<(usize, usize, &str)> = found
            .iter()
            .map(|u| (u.line, u.column, u.key.as_str()))
            .collect();
        assert_eq!(at, vec![(1, 4, "a"), (3, 11, "x"), (5, 5, "")]);
    }
}
