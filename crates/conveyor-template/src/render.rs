//! Rendering a parsed template against a task and its environment.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::Value;

use crate::{Expr, Part, Path, ProcessId, ProcessSel, RootField, Template};

/// Everything a template can read besides the task's own data.
///
/// The runtime implements it over the store and the engine clock; tests use [`MapEnv`].
pub trait Env {
    /// A `root.*` value of the task being rendered (`Null` when it has none).
    fn root(&self, field: RootField) -> Value;

    /// The value at `path` (the whole data when the path is empty) in the task with
    /// `reference` in `process`. `Ok(None)` when the task exists but has no such key;
    /// `Err(reason)` when the process or the task does not exist or may not be read.
    fn task_ref(
        &self,
        process: &ProcessId,
        reference: &str,
        path: &Path,
    ) -> Result<Option<Value>, String>;

    /// The number of tasks now in `node` of `process` (the current one when `None`).
    fn node_count(&self, process: Option<&ProcessId>, node: &str) -> Result<u64, String>;

    /// Milliseconds since the Unix epoch, from the engine's clock.
    fn now_millis(&self) -> i64;

    /// A random number in `0..bound` (`bound` > 0).
    fn random_below(&self, bound: u64) -> u64;
}

/// Why a template could not be rendered. The node that rendered it fails with this.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RenderError {
    #[error("cannot read conv[{process}].ref[{reference}]: {reason}")]
    Reference {
        process: String,
        reference: String,
        reason: String,
    },
    #[error("cannot count tasks in node `{node}`{}: {reason}", process.as_ref().map(|p| format!(" of process {p}")).unwrap_or_default())]
    NodeCount {
        process: Option<String>,
        node: String,
        reason: String,
    },
    #[error("`conv[{text}]`: `{text}` is not a process id or @alias")]
    Process { text: String },
    #[error("$.{function}: {reason}")]
    Function {
        function: &'static str,
        reason: String,
    },
    #[error("the text would be larger than the {limit} bytes a template may render")]
    TooLarge { limit: usize },
}

/// Most bytes one template may render: a template that repeats a large value cannot
/// blow up memory or a request.
pub const MAX_RENDERED_BYTES: usize = 1 << 20;

impl Template {
    /// Renders to a JSON value: the value itself when the template is exactly one
    /// expression or function (its type is kept), else a string.
    pub fn render(&self, data: &Value, env: &dyn Env) -> Result<Value, RenderError> {
        match self.parts.as_slice() {
            [] => Ok(Value::String(String::new())),
            [Part::Text(text)] => Ok(Value::String(text.clone())),
            [Part::Expr(expr)] => Ok(match eval(expr, data, env)? {
                Some(value) => value.into_owned(),
                None => Value::String(String::new()),
            }),
            [Part::Call(function, argument)] => function.call(argument, data, env),
            _ => self.render_text(data, env).map(Value::String),
        }
    }

    /// Renders to text: values are written as text, objects and arrays as JSON.
    pub fn render_text(&self, data: &Value, env: &dyn Env) -> Result<String, RenderError> {
        let mut out = String::new();
        self.write_text(&mut out, data, env)?;
        Ok(out)
    }

    /// Appends the rendered text to `out`.
    pub fn write_text(
        &self,
        out: &mut String,
        data: &Value,
        env: &dyn Env,
    ) -> Result<(), RenderError> {
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Expr(expr) => {
                    if let Some(value) = eval(expr, data, env)? {
                        write_value(out, &value);
                    }
                }
                Part::Call(function, argument) => {
                    write_value(out, &function.call(argument, data, env)?);
                }
            }
            if out.len() > MAX_RENDERED_BYTES {
                return Err(RenderError::TooLarge {
                    limit: MAX_RENDERED_BYTES,
                });
            }
        }
        Ok(())
    }
}

/// Evaluates one expression. `None` is a missing task key (rendered as `""`).
fn eval<'d>(
    expr: &Expr,
    data: &'d Value,
    env: &dyn Env,
) -> Result<Option<Cow<'d, Value>>, RenderError> {
    match expr {
        Expr::Task(path) => Ok(path.lookup(data).map(Cow::Borrowed)),
        Expr::Root(field) => Ok(Some(Cow::Owned(env.root(*field)))),
        Expr::TaskRef {
            process,
            reference,
            path,
        } => {
            let process = resolve_process(process, data, env)?;
            let reference = reference.render_text(data, env)?;
            let fail = |reason: String| RenderError::Reference {
                process: process.to_string(),
                reference: reference.clone(),
                reason,
            };
            match env.task_ref(&process, &reference, path) {
                Ok(Some(value)) => Ok(Some(Cow::Owned(value))),
                Ok(None) => Err(fail(format!("the task has no key `{path}`"))),
                Err(reason) => Err(fail(reason)),
            }
        }
        Expr::NodeCount { process, node } => {
            let process = match process {
                Some(sel) => Some(resolve_process(sel, data, env)?),
                None => None,
            };
            env.node_count(process.as_ref(), node)
                .map(|count| Some(Cow::Owned(Value::from(count))))
                .map_err(|reason| RenderError::NodeCount {
                    process: process.map(|p| p.to_string()),
                    node: node.clone(),
                    reason,
                })
        }
    }
}

fn resolve_process(
    sel: &ProcessSel,
    data: &Value,
    env: &dyn Env,
) -> Result<ProcessId, RenderError> {
    match sel {
        ProcessSel::Id(id) => Ok(ProcessId::Id(*id)),
        ProcessSel::Alias(alias) => Ok(ProcessId::Alias(alias.clone())),
        ProcessSel::Dynamic(template) => {
            let text = template.render_text(data, env)?;
            ProcessId::parse(&text).ok_or(RenderError::Process { text })
        }
    }
}

/// Writes a value as text: strings as they are, `null` as nothing, objects and arrays as
/// JSON.
pub(crate) fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => {}
        Value::String(text) => out.push_str(text),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Array(_) | Value::Object(_) => {
            // Serializing a `Value` to a String cannot fail.
            out.push_str(&serde_json::to_string(value).unwrap_or_default());
        }
    }
}

/// An [`Env`] over plain maps: for tests, benchmarks and `process check`.
#[derive(Debug, Default)]
pub struct MapEnv {
    pub root: HashMap<RootField, Value>,
    /// Tasks by (process, ref). Aliases and ids are distinct keys here.
    pub tasks: HashMap<(ProcessId, String), Value>,
    pub counts: HashMap<(Option<ProcessId>, String), u64>,
    pub now_millis: i64,
    /// State of a small deterministic generator (xorshift) behind `$.random`.
    pub seed: Cell<u64>,
}

impl MapEnv {
    pub fn with_task(mut self, process: ProcessId, reference: &str, data: Value) -> Self {
        self.tasks.insert((process, reference.to_string()), data);
        self
    }
}

impl Env for MapEnv {
    fn root(&self, field: RootField) -> Value {
        self.root.get(&field).cloned().unwrap_or(Value::Null)
    }

    fn task_ref(
        &self,
        process: &ProcessId,
        reference: &str,
        path: &Path,
    ) -> Result<Option<Value>, String> {
        if !self.tasks.keys().any(|(p, _)| p == process) {
            return Err(format!("process {process} does not exist"));
        }
        let data = self
            .tasks
            .get(&(process.clone(), reference.to_string()))
            .ok_or_else(|| format!("no task with ref `{reference}` in process {process}"))?;
        Ok(path.lookup(data).cloned())
    }

    fn node_count(&self, process: Option<&ProcessId>, node: &str) -> Result<u64, String> {
        self.counts
            .get(&(process.cloned(), node.to_string()))
            .copied()
            .ok_or_else(|| format!("no node `{node}`"))
    }

    fn now_millis(&self) -> i64 {
        self.now_millis
    }

    fn random_below(&self, bound: u64) -> u64 {
        let mut x = self.seed.get() | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed.set(x);
        x % bound
    }
}
