//! The template parser: a hand-written recursive descent over the characters of the text.
//!
//! Grammar (informally):
//! ```text
//! template  := (text | '{{' expr '}}' | '<<' conv '>>' | '$.' NAME '(' template ')')*
//! expr      := conv | 'node[' NAME '].count' | 'root.' FIELD | path
//! conv      := 'conv[' (NUMBER | '@' ALIAS | template) ']'
//!              ( '.ref[' template ']' ('.' path)? | '.node[' NAME '].count' )
//! path      := key ('.' key | '[' NUMBER ']')*
//! ```
//! Inside brackets and function arguments, nested templates are allowed; brackets and
//! parentheses in plain text nest, so `$.math(({{a}}+1)*2)` reads as one argument.

use crate::functions::Function;
use crate::{Expr, ParseError, Part, Path, ProcessId, ProcessSel, RootField, Segment, Template};

/// Where a (sub-)template stops.
#[derive(Clone, Copy, PartialEq)]
enum Until {
    End,
    /// An unmatched `]`.
    Bracket,
    /// An unmatched `)`.
    Paren,
}

/// How an expression is closed.
#[derive(Clone, Copy, PartialEq)]
enum Close {
    Braces,
    Angles,
}

impl Close {
    fn text(self) -> &'static str {
        match self {
            Close::Braces => "}}",
            Close::Angles => ">>",
        }
    }
}

/// Templates may nest (a ref inside a conv inside a function…); past this depth the text
/// is refused rather than risking the stack on hostile input.
const MAX_DEPTH: usize = 32;

struct Parser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
}

pub(crate) fn parse_template(text: &str) -> Result<Template, ParseError> {
    let mut parser = Parser {
        chars: text.chars().collect(),
        pos: 0,
        depth: 0,
    };
    parser.template(Until::End)
}

pub(crate) fn parse_bare_path(text: &str) -> Result<Path, ParseError> {
    let mut parser = Parser {
        chars: text.trim().chars().collect(),
        pos: 0,
        depth: 0,
    };
    let path = parser.path(None)?;
    if parser.pos < parser.chars.len() {
        return Err(parser.error(format!("unexpected `{}` in path", parser.chars[parser.pos])));
    }
    if path.is_empty() {
        return Err(parser.error("empty path".into()));
    }
    Ok(path)
}

impl Parser {
    fn error(&self, message: String) -> ParseError {
        ParseError {
            column: self.pos + 1,
            message,
        }
    }

    fn error_at(&self, pos: usize, message: String) -> ParseError {
        ParseError {
            column: pos + 1,
            message,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn starts_with(&self, s: &str) -> bool {
        s.chars()
            .enumerate()
            .all(|(i, c)| self.chars.get(self.pos + i) == Some(&c))
    }

    fn eat(&mut self, s: &str) -> bool {
        if self.starts_with(s) {
            self.pos += s.chars().count();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, s: &str, context: &str) -> Result<(), ParseError> {
        if self.eat(s) {
            Ok(())
        } else {
            let found = match self.peek() {
                Some(c) => format!("`{c}`"),
                None => "the end of the text".to_string(),
            };
            Err(self.error(format!("expected `{s}` {context}, found {found}")))
        }
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(c) if c.is_whitespace()) {
            self.pos += 1;
        }
    }

    fn template(&mut self, until: Until) -> Result<Template, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(format!("templates nested more than {MAX_DEPTH} deep")));
        }
        let start = self.pos;
        let mut parts = Vec::new();
        let mut text = String::new();
        // Plain `[`/`(` in text nest, so that only the matching closer ends a sub-template.
        let mut nesting = 0usize;
        loop {
            let Some(c) = self.peek() else {
                match until {
                    Until::End => break,
                    Until::Bracket => {
                        return Err(self.error_at(start, "unclosed `[`".into()));
                    }
                    Until::Paren => {
                        return Err(self.error_at(start, "unclosed `(`".into()));
                    }
                }
            };
            if self.starts_with("{{") {
                flush(&mut text, &mut parts);
                let open = self.pos;
                self.pos += 2;
                let expr = self.expr(Close::Braces, open)?;
                parts.push(Part::Expr(expr));
                continue;
            }
            if self.starts_with("<<conv[") {
                flush(&mut text, &mut parts);
                let open = self.pos;
                self.pos += 2;
                let expr = self.expr(Close::Angles, open)?;
                parts.push(Part::Expr(expr));
                continue;
            }
            if self.starts_with("$.")
                && let Some((function, name_end)) = self.function_name()?
            {
                {
                    flush(&mut text, &mut parts);
                    self.pos = name_end + 1; // past `(`
                    let argument = self.template(Until::Paren)?;
                    self.pos += 1; // past `)`
                    parts.push(Part::Call(function, Box::new(argument)));
                    continue;
                }
            }
            match (until, c) {
                (Until::Bracket, '[') | (Until::Paren, '(') => nesting += 1,
                (Until::Bracket, ']') | (Until::Paren, ')') => {
                    if nesting == 0 {
                        break;
                    }
                    nesting -= 1;
                }
                (Until::Bracket, '\\') => {
                    // `\]` puts a literal bracket into a ref.
                    if let Some(next) = self.chars.get(self.pos + 1).copied() {
                        text.push(next);
                        self.pos += 2;
                        continue;
                    }
                }
                _ => {}
            }
            text.push(c);
            self.pos += 1;
        }
        flush(&mut text, &mut parts);
        self.depth -= 1;
        Ok(Template { parts })
    }

    /// At `$.`: if a name and `(` follow, returns the function and the position of `(`.
    /// `$.` followed by anything else is plain text (JSONPath-like strings stay intact).
    fn function_name(&self) -> Result<Option<(Function, usize)>, ParseError> {
        let mut i = self.pos + 2;
        let name_start = i;
        while matches!(self.chars.get(i), Some(c) if c.is_ascii_alphanumeric() || *c == '_') {
            i += 1;
        }
        if i == name_start || self.chars.get(i) != Some(&'(') {
            return Ok(None);
        }
        let name: String = self.chars[name_start..i].iter().collect();
        match Function::from_name(&name) {
            Some(function) => Ok(Some((function, i))),
            None => Err(self.error(format!(
                "unknown function `$.{name}` (known: {})",
                Function::ALL
                    .iter()
                    .map(|f| format!("$.{}", f.name()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// An expression after its opener; consumes the closer.
    fn expr(&mut self, close: Close, open: usize) -> Result<Expr, ParseError> {
        self.skip_spaces();
        if self.starts_with(close.text()) {
            return Err(self.error_at(open, "empty expression `{{}}`".into()));
        }
        let expr = if self.eat("conv[") {
            self.conv(close)?
        } else if self.eat("node[") {
            let node = self.name_in_brackets("node")?;
            self.expect(".count", "after `node[…]`")?;
            Expr::NodeCount {
                process: None,
                node,
            }
        } else if self.starts_with("root.") {
            let at = self.pos;
            self.pos += 5;
            let path = self.path(Some(close))?;
            let name = match path.0.as_slice() {
                [Segment::Key(name)] => name.as_str(),
                _ => "",
            };
            match RootField::from_name(name) {
                Some(field) => Expr::Root(field),
                None => {
                    return Err(self.error_at(
                        at,
                        format!(
                            "unknown system value `root.{path}` (known: {})",
                            RootField::ALL
                                .iter()
                                .map(|f| format!("root.{}", f.name()))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
            }
        } else {
            let path = self.path(Some(close))?;
            if path.is_empty() {
                return Err(self.error("expected a parameter name".into()));
            }
            Expr::Task(path)
        };
        self.skip_spaces();
        if self.eat(close.text()) {
            Ok(expr)
        } else if self.peek().is_none() {
            Err(self.error_at(
                open,
                format!(
                    "unclosed `{}`: expected `{}`",
                    if close == Close::Braces { "{{" } else { "<<" },
                    close.text()
                ),
            ))
        } else {
            Err(self.error(format!(
                "unexpected `{}` in expression, expected `{}`",
                self.chars[self.pos],
                close.text()
            )))
        }
    }

    /// After `conv[`.
    fn conv(&mut self, close: Close) -> Result<Expr, ParseError> {
        let at = self.pos;
        let id = self.template(Until::Bracket)?;
        self.pos += 1; // `]`
        let process = match id.as_literal() {
            Some(text) => match ProcessId::parse(text) {
                Some(ProcessId::Id(id)) => ProcessSel::Id(id),
                Some(ProcessId::Alias(alias)) => ProcessSel::Alias(alias),
                None => {
                    return Err(self.error_at(
                        at,
                        format!("`conv[{text}]`: expected a process id (a number) or `@alias`"),
                    ));
                }
            },
            None => ProcessSel::Dynamic(Box::new(id)),
        };
        if self.eat(".ref[") {
            let ref_at = self.pos;
            let reference = self.template(Until::Bracket)?;
            self.pos += 1;
            if reference.parts.is_empty() {
                return Err(self.error_at(ref_at, "empty `ref[]`".into()));
            }
            let path = if self.eat(".") {
                let path = self.path(Some(close))?;
                if path.is_empty() {
                    return Err(self.error("expected a key after `.`".into()));
                }
                path
            } else if self.peek() == Some('[') {
                self.path(Some(close))?
            } else {
                Path::default()
            };
            Ok(Expr::TaskRef {
                process,
                reference: Box::new(reference),
                path,
            })
        } else if self.eat(".node[") {
            let node = self.name_in_brackets("node")?;
            self.expect(".count", "after `node[…]`")?;
            Ok(Expr::NodeCount {
                process: Some(process),
                node,
            })
        } else {
            Err(self.error("expected `.ref[…]` or `.node[…]` after `conv[…]`".into()))
        }
    }

    /// A plain name up to `]` (node ids).
    fn name_in_brackets(&mut self, what: &str) -> Result<String, ParseError> {
        let start = self.pos;
        let mut name = String::new();
        loop {
            match self.peek() {
                Some(']') => break,
                Some(c) if !c.is_whitespace() && c != '[' && c != '{' && c != '}' => {
                    name.push(c);
                    self.pos += 1;
                }
                Some(c) => {
                    return Err(self.error(format!("unexpected `{c}` in `{what}[…]`")));
                }
                None => return Err(self.error_at(start, format!("unclosed `{what}[`"))),
            }
        }
        self.pos += 1;
        if name.is_empty() {
            return Err(self.error_at(start, format!("empty `{what}[]`")));
        }
        Ok(name)
    }

    /// A path; stops before the closer (when given), or at the end of the text.
    fn path(&mut self, close: Option<Close>) -> Result<Path, ParseError> {
        let mut segments = Vec::new();
        // `conv[1].ref[x][0]`: a path may begin with an index.
        let mut expect_key = self.peek() != Some('[');
        loop {
            if expect_key {
                let key_at = self.pos;
                let key = self.key(close)?;
                if key.is_empty() {
                    if segments.is_empty() {
                        return Ok(Path(segments));
                    }
                    return Err(self.error_at(key_at, "empty key in path".into()));
                }
                segments.push(Segment::Key(key));
                expect_key = false;
            }
            match self.peek() {
                Some('.') => {
                    self.pos += 1;
                    expect_key = true;
                }
                Some('[') => {
                    self.pos += 1;
                    let start = self.pos;
                    while matches!(self.peek(), Some(c) if c.is_ascii_digit()) {
                        self.pos += 1;
                    }
                    let digits: String = self.chars[start..self.pos].iter().collect();
                    if digits.is_empty() || self.peek() != Some(']') {
                        return Err(self.error_at(
                            start,
                            "expected an array index (a number) inside `[…]`".into(),
                        ));
                    }
                    self.pos += 1;
                    let index = digits
                        .parse::<usize>()
                        .map_err(|_| self.error_at(start, "array index too large".into()))?;
                    segments.push(Segment::Index(index));
                }
                _ => return Ok(Path(segments)),
            }
        }
    }

    /// A key: up to `.`, `[`, `]`, the closer or the end; `\` escapes the next character.
    /// Trailing spaces before the closer are not part of the key.
    fn key(&mut self, close: Option<Close>) -> Result<String, ParseError> {
        let mut key = String::new();
        let mut escaped_len = 0;
        let leading_escaped = self.peek() == Some('\\');
        while let Some(c) = self.peek() {
            if let Some(close) = close {
                if self.starts_with(close.text()) {
                    break;
                }
                if c == '{' || c == '}' || (close == Close::Angles && c == '>') {
                    return Err(self.error(format!("unexpected `{c}` in a path")));
                }
            }
            match c {
                '.' | '[' | ']' => break,
                '\\' => {
                    let Some(next) = self.chars.get(self.pos + 1).copied() else {
                        return Err(self.error("`\\` at the end of a path".into()));
                    };
                    key.push(next);
                    self.pos += 2;
                    escaped_len = key.len();
                }
                _ => {
                    key.push(c);
                    self.pos += 1;
                }
            }
        }
        let trimmed = key.trim_end().len().max(escaped_len);
        key.truncate(trimmed);
        // `{{ a . b }}` reads as `a.b`: spaces after a separator are not part of a key.
        if !leading_escaped {
            let leading = key.len() - key.trim_start().len();
            key.drain(..leading);
        }
        Ok(key)
    }
}

fn flush(text: &mut String, parts: &mut Vec<Part>) {
    if !text.is_empty() {
        parts.push(Part::Text(std::mem::take(text)));
    }
}
