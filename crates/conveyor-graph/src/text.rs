//! Text helpers: XML escaping, a rough text width estimate (there are no font metrics
//! here), word wrapping and shortening with an ellipsis.

/// Escapes text for XML content and attribute values (`& < > " '`).
///
/// Characters XML 1.0 does not allow (most control characters, U+FFFE, U+FFFF) become
/// U+FFFD; tabs and line breaks become spaces, as every text we write is one line.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Which font a text is set in, for the width estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Font {
    /// Helvetica, Arial, DejaVu Sans, …
    Sans,
    /// A monospace font (node ids).
    Mono,
}

/// Estimated width in pixels of `text` set at `size` pixels.
///
/// A per-character table close to common sans-serif fonts (DejaVu Sans is among the
/// widest, so the table leans wide); monospace is 0.61 em per character.
pub fn text_width(text: &str, size: f64, font: Font) -> f64 {
    let em: f64 = match font {
        Font::Mono => text.chars().count() as f64 * 0.61,
        Font::Sans => text.chars().map(sans_char_em).sum(),
    };
    em * size
}

fn sans_char_em(c: char) -> f64 {
    match c {
        'i' | 'j' | 'l' | '.' | ',' | ':' | ';' | '\'' | '!' | '|' | ' ' => 0.3,
        'f' | 't' | 'r' | 'I' | '(' | ')' | '[' | ']' | '/' | '-' => 0.4,
        'm' | 'w' => 0.9,
        'M' | 'W' => 0.95,
        '@' | '%' => 1.0,
        c if c.is_ascii_uppercase() => 0.7,
        c if c.is_ascii_digit() => 0.62,
        c if c.is_ascii() => 0.58,
        // Wide scripts and symbols: assume a full em.
        _ => 1.0,
    }
}

/// Shortens `text` with `…` so it fits `max_width`.
pub fn shorten(text: &str, max_width: f64, size: f64, font: Font) -> String {
    if text_width(text, size, font) <= max_width {
        return text.to_string();
    }
    let mut out = String::new();
    for c in text.chars() {
        out.push(c);
        if text_width(&out, size, font) + text_width("…", size, font) > max_width {
            out.pop();
            break;
        }
    }
    let trimmed = out.trim_end().to_string();
    format!("{trimmed}…")
}

/// Wraps `text` at spaces into at most `max_lines` lines of at most `max_width` pixels.
/// A word longer than a line is cut; text left over shortens the last line with `…`.
pub fn wrap(text: &str, max_width: f64, size: f64, font: Font, max_lines: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut current = String::new();
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut overflow = false;
    for (i, word) in words.iter().enumerate() {
        let candidate = if current.is_empty() {
            word.to_string()
        } else {
            format!("{current} {word}")
        };
        if text_width(&candidate, size, font) <= max_width {
            current = candidate;
            continue;
        }
        // The word does not fit on this line.
        if !current.is_empty() {
            lines.push(std::mem::take(&mut current));
        }
        if lines.len() == max_lines {
            overflow = true;
            // Put back what is left so the last line can show it was cut.
            current = words[i..].join(" ");
            break;
        }
        current = word.to_string();
    }
    if overflow {
        if let Some(last) = lines.last_mut() {
            *last = shorten(&format!("{last} {current}"), max_width, size, font);
            // `shorten` leaves text that fits as it is; mark the cut anyway.
            if !last.ends_with('…') {
                last.push('…');
            }
        }
    } else if !current.is_empty() {
        lines.push(current);
    }
    if lines.len() > max_lines {
        let rest = lines.split_off(max_lines - 1).join(" ");
        lines.push(rest);
    }
    // Every line must fit: cut long single words (and a last line that got too long).
    for line in &mut lines {
        *line = shorten(line, max_width, size, font);
    }
    lines
}

/// Formats a coordinate with at most one decimal, without a trailing `.0`.
pub fn num(value: f64) -> String {
    let rounded = (value * 10.0).round() / 10.0;
    if rounded == rounded.trunc() {
        format!("{}", rounded as i64)
    } else {
        format!("{rounded:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            xml_escape(r#"a & b < c > d "e" 'f'"#),
            "a &amp; b &lt; c &gt; d &quot;e&quot; &apos;f&apos;"
        );
        assert_eq!(xml_escape("x\u{1}y\nz"), "x\u{FFFD}y z");
    }

    #[test]
    fn wraps_into_lines_that_fit() {
        let lines = wrap(
            "access_token doesn't update. Escalation to the process author",
            150.0,
            11.0,
            Font::Sans,
            2,
        );
        assert_eq!(lines.len(), 2);
        assert!(lines[1].ends_with('…'), "{lines:?}");
        for line in &lines {
            assert!(text_width(line, 11.0, Font::Sans) <= 150.0, "{line}");
        }
        assert_eq!(wrap("short", 150.0, 11.0, Font::Sans, 2), vec!["short"]);
        assert!(wrap("", 150.0, 11.0, Font::Sans, 2).is_empty());
        let long = wrap(&"x".repeat(200), 100.0, 11.0, Font::Sans, 2);
        assert_eq!(long.len(), 1);
        assert!(long[0].ends_with('…'));
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(num(12.0), "12");
        assert_eq!(num(12.04), "12");
        assert_eq!(num(12.25), "12.3");
        assert_eq!(num(-3.5), "-3.5");
    }
}
