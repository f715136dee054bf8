//! Corezoid's template language.
//!
//! A template is a string that may contain:
//!
//! * task paths: `{{portal}}`, `{{a.b[0].c}}`, with `\.`, `\[`, `\]` and `\\` escaping
//!   those characters inside a key;
//! * system values: `{{root.task_id}}`, `{{root.ref}}`, `{{root.conv_id}}`, …;
//! * other processes' tasks: `{{conv[ID].ref[REF].path}}`, also written
//!   `<<conv[ID].ref[REF].path>>`, where `ID` is a number, `@alias` or a template and
//!   `REF` is text that may itself contain templates (`ref[user_{{id}}]`);
//! * node counters: `{{node[NODE].count}}` and `{{conv[ID].node[NODE].count}}`;
//! * functions: `$.math(…)`, `$.unixtime()`, `$.date(FORMAT)`, `$.random(N)`,
//!   `$.sha1_hex(…)`, `$.md5_hex(…)`, `$.base64_encode(…)`, `$.to_number(…)`,
//!   `$.to_string(…)`, `$.to_object(…)`, `$.to_array(…)`, whose argument is a template.
//!
//! A template is parsed once ([`Template::parse`]) into a small syntax tree and rendered
//! many times ([`Template::render`]) against a task's data and an [`Env`] that answers
//! for everything outside the task (root values, other processes, the clock).
//!
//! Rules (Corezoid's):
//! * a template that is exactly one expression keeps the JSON type of its value;
//! * a missing task key renders as `""`;
//! * a cross-process reference that does not resolve is an error naming process and ref.
//!
//! This crate is pure: no I/O, no clock, no randomness of its own.
//!
//! # Layout
//!
//! - `parse.rs` — the parser: a recursive descent over the characters of the text;
//! - `render.rs` — rendering a parsed template against a task and its environment;
//! - `functions.rs` — the `$.` functions; `math.rs` — `$.math(…)`;
//! - `value.rs` — templates inside structured values (`body`, `query`, `data`, `set`);
//! - `body.rs` — handlebars message bodies (`set_param`'s `render`);
//! - `tests.rs` — the language's tests.

pub mod body;
mod functions;
mod math;
mod parse;
mod render;
mod value;

use std::fmt;

pub use functions::Function;
pub use render::{Env, MAX_RENDERED_BYTES, MapEnv, RenderError};
pub use value::{ValueParseError, ValueTemplate};

/// A parsed template, ready to render.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Literal text, copied as is.
    Text(String),
    /// `{{…}}` or `<<…>>`.
    Expr(Expr),
    /// `$.name(argument)`.
    Call(Function, Box<Template>),
}

/// What a `{{…}}` expression reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A path into the current task's data.
    Task(Path),
    /// `root.FIELD`.
    Root(RootField),
    /// `conv[PROCESS].ref[REF]` followed by an optional path.
    TaskRef {
        process: ProcessSel,
        reference: Box<Template>,
        path: Path,
    },
    /// `node[NODE].count` (current process when `process` is `None`) or
    /// `conv[PROCESS].node[NODE].count`.
    NodeCount {
        process: Option<ProcessSel>,
        node: String,
    },
}

/// How a template names another process.
#[derive(Debug, Clone, PartialEq)]
pub enum ProcessSel {
    /// `conv[31281]`.
    Id(u64),
    /// `conv[@bitrix]` (stored without the `@`).
    Alias(String),
    /// `conv[{{notify_process}}]`: rendered first, then read as an id or `@alias`.
    Dynamic(Box<Template>),
}

/// A process named by id or alias, after any template in it was rendered.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProcessId {
    Id(u64),
    Alias(String),
}

impl ProcessId {
    /// Reads `31281`, `@bitrix` (or `bitrix` when `bare_alias` is set).
    pub fn parse(text: &str) -> Option<ProcessId> {
        let text = text.trim();
        if let Some(alias) = text.strip_prefix('@') {
            return valid_alias(alias).then(|| ProcessId::Alias(alias.to_string()));
        }
        text.parse::<u64>().ok().map(ProcessId::Id)
    }
}

/// Whether `alias` (without `@`) is a well-formed process alias.
pub fn valid_alias(alias: &str) -> bool {
    !alias.is_empty()
        && alias.len() <= 64
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessId::Id(id) => write!(f, "{id}"),
            ProcessId::Alias(alias) => write!(f, "@{alias}"),
        }
    }
}

/// The `root.*` values Corezoid offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RootField {
    TaskId,
    Ref,
    ConvId,
    NodeId,
    PrevNodeId,
    CreateTime,
    ChangeTime,
}

impl RootField {
    pub const ALL: [RootField; 7] = [
        RootField::TaskId,
        RootField::Ref,
        RootField::ConvId,
        RootField::NodeId,
        RootField::PrevNodeId,
        RootField::CreateTime,
        RootField::ChangeTime,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RootField::TaskId => "task_id",
            RootField::Ref => "ref",
            RootField::ConvId => "conv_id",
            RootField::NodeId => "node_id",
            RootField::PrevNodeId => "prev_node_id",
            RootField::CreateTime => "create_time",
            RootField::ChangeTime => "change_time",
        }
    }

    fn from_name(name: &str) -> Option<RootField> {
        RootField::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// A path into JSON data: keys and array indexes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Path(pub Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

impl Path {
    /// Parses a bare path such as `a.b[0].c` (no braces). Used for condition params.
    pub fn parse(text: &str) -> Result<Path, ParseError> {
        parse::parse_bare_path(text)
    }

    /// Follows the path into `value`. A key also selects an array item when it is a
    /// number, so `a.0` and `a[0]` read the same.
    pub fn lookup<'v>(&self, value: &'v serde_json::Value) -> Option<&'v serde_json::Value> {
        let mut current = value;
        for segment in &self.0 {
            current = match (segment, current) {
                (Segment::Key(key), serde_json::Value::Object(map)) => map.get(key.as_str())?,
                (Segment::Key(key), serde_json::Value::Array(items)) => {
                    items.get(key.parse::<usize>().ok()?)?
                }
                (Segment::Index(i), serde_json::Value::Array(items)) => items.get(*i)?,
                _ => return None,
            };
        }
        Some(current)
    }

    /// The first key, which names the task parameter the path starts from.
    pub fn head(&self) -> Option<&str> {
        match self.0.first() {
            Some(Segment::Key(key)) => Some(key),
            _ => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    for c in key.chars() {
                        if matches!(c, '.' | '[' | ']' | '\\') {
                            f.write_str("\\")?;
                        }
                        write!(f, "{c}")?;
                    }
                }
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A template that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at character {column})")]
pub struct ParseError {
    /// 1-based position (in characters) in the template text where the problem is.
    pub column: usize,
    pub message: String,
}

impl Template {
    /// Parses `text`. Text with no template syntax in it is a valid (literal) template.
    pub fn parse(text: &str) -> Result<Template, ParseError> {
        parse::parse_template(text)
    }

    /// A template that is only this literal text.
    pub fn literal(text: impl Into<String>) -> Template {
        let text = text.into();
        Template {
            parts: if text.is_empty() {
                Vec::new()
            } else {
                vec![Part::Text(text)]
            },
        }
    }

    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// The text when the template has no expressions at all.
    pub fn as_literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Text(text)] => Some(text),
            _ => None,
        }
    }

    /// Whether rendering keeps the JSON type of the value (exactly one expression).
    pub fn is_whole_value(&self) -> bool {
        matches!(self.parts.as_slice(), [Part::Expr(_) | Part::Call(..)])
    }

    /// Calls `visit` on every expression, including those nested in function arguments
    /// and in `conv[…]`/`ref[…]` brackets.
    pub fn visit_exprs<'a>(&'a self, visit: &mut dyn FnMut(&'a Expr)) {
        for part in &self.parts {
            match part {
                Part::Text(_) => {}
                Part::Call(_, argument) => argument.visit_exprs(visit),
                Part::Expr(expr) => {
                    visit(expr);
                    match expr {
                        Expr::TaskRef {
                            process, reference, ..
                        } => {
                            if let ProcessSel::Dynamic(t) = process {
                                t.visit_exprs(visit);
                            }
                            reference.visit_exprs(visit);
                        }
                        Expr::NodeCount {
                            process: Some(ProcessSel::Dynamic(t)),
                            ..
                        } => t.visit_exprs(visit),
                        _ => {}
                    }
                }
            }
        }
    }

    /// The task keys the template reads (first segment of each task path).
    pub fn task_keys(&self) -> Vec<&str> {
        let mut keys = Vec::new();
        self.visit_exprs(&mut |expr| {
            if let Expr::Task(path) = expr
                && let Some(head) = path.head()
            {
                keys.push(head);
            }
        });
        keys
    }
}

#[cfg(test)]
mod tests;
