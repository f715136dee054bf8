//! The `code` node's JavaScript: QuickJS (through rquickjs), sandboxed and reused.
//!
//! Each engine thread keeps one QuickJS runtime and, in it, one context per process, so
//! one process's globals never reach another's scripts. A script is compiled once per
//! context into `function (data) { <script>; return data }` and called for every task;
//! the task's data goes in and comes out as JSON.
//!
//! The sandbox is what QuickJS is without a host: the language and its standard objects,
//! and nothing that reaches files, the network, processes or timers (rquickjs adds no
//! `std`/`os` modules, and no module loader is set, so `import` finds nothing). `Date`
//! reads the engine's `Clock` (the step's time), as everything else does; `console.*`
//! does nothing. Limits: wall-clock time (QuickJS's interrupt hook, polled while the
//! script runs), the heap (QuickJS's memory limit) and the native stack. A runtime that
//! hit a limit is dropped and a fresh one made, so nothing half-done carries over.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rquickjs::context::EvalOptions;
use rquickjs::{CatchResultExt, CaughtError, Context, Function, Persistent, Runtime};
use serde_json::{Map, Value};

/// Why a script did not give a result. The tag is Corezoid-style
/// (`__conveyor_code_return_type_tag__`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CodeError {
    #[error("the script does not compile: {0}")]
    Compile(String),
    #[error("the script threw: {0}")]
    Thrown(String),
    #[error("the script ran longer than {0:?} (max_time)")]
    Timeout(Duration),
    #[error("the script needed more than {0} MiB of memory (max_memory_mb)")]
    Memory(usize),
    #[error("the script's `data` is not an object that JSON can hold: {0}")]
    BadResult(String),
    #[error("the JavaScript engine failed: {0}")]
    Engine(String),
}

impl CodeError {
    pub(crate) fn tag(&self) -> &'static str {
        match self {
            CodeError::Compile(_) => "code_compile_error",
            CodeError::Thrown(_) => "code_runtime_error",
            CodeError::Timeout(_) => "code_timeout",
            CodeError::Memory(_) => "code_memory_limit",
            CodeError::BadResult(_) => "code_bad_result",
            CodeError::Engine(_) => "code_fatal_error",
        }
    }

    /// `hardware` for what the engine could not do, `software` for what the script did.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            CodeError::Engine(_) => "hardware",
            _ => "software",
        }
    }
}

/// What one run may use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub time: Duration,
    pub memory: usize,
}

/// The native stack a script may use (deep recursion ends in a `RangeError`).
const STACK_BYTES: usize = 512 * 1024;
/// Contexts (processes) kept per thread; past this, all are dropped and made again.
const MAX_CONTEXTS: usize = 64;
/// Compiled scripts kept per context; past this, that context's are dropped.
const MAX_SCRIPTS: usize = 256;

/// Replaces `Date` with one that reads the step's time, and `console` with no-ops;
/// returns the function that sets the time.
const PRELUDE: &str = r#"(function () {
  const RealDate = Date;
  let now = 0;
  function ConveyorDate(...args) {
    if (!new.target) return new RealDate(now).toString();
    return args.length === 0 ? new RealDate(now) : new RealDate(...args);
  }
  ConveyorDate.prototype = RealDate.prototype;
  Object.defineProperty(RealDate.prototype, "constructor", { value: ConveyorDate });
  ConveyorDate.now = function () { return now; };
  ConveyorDate.UTC = RealDate.UTC;
  ConveyorDate.parse = RealDate.parse;
  globalThis.Date = ConveyorDate;
  const quiet = function () {};
  globalThis.console = { log: quiet, info: quiet, warn: quiet, error: quiet, debug: quiet };
  return function (t) { now = t; };
})()"#;

/// One process's context on this thread: its compiled scripts, and its clock setter.
struct ProcessContext {
    // Field order matters: persistent values go before the context that owns them.
    scripts: HashMap<Arc<str>, Persistent<Function<'static>>, foldhash::fast::RandomState>,
    set_now: Persistent<Function<'static>>,
    context: Context,
}

struct Engine {
    contexts: HashMap<u64, ProcessContext, foldhash::fast::RandomState>,
    /// When the running script must stop (`None` between runs).
    deadline: Rc<Cell<Option<Instant>>>,
    /// The interrupt hook stopped the script.
    interrupted: Rc<Cell<bool>>,
    runtime: Runtime,
}

thread_local! {
    static ENGINE: RefCell<Option<Engine>> = const { RefCell::new(None) };
}

impl Engine {
    fn new() -> Result<Engine, CodeError> {
        let runtime = Runtime::new().map_err(engine_error)?;
        runtime.set_max_stack_size(STACK_BYTES);
        let deadline: Rc<Cell<Option<Instant>>> = Rc::new(Cell::new(None));
        let interrupted = Rc::new(Cell::new(false));
        let (d, i) = (Rc::clone(&deadline), Rc::clone(&interrupted));
        runtime.set_interrupt_handler(Some(Box::new(move || {
            let stop = d.get().is_some_and(|at| Instant::now() >= at);
            if stop {
                i.set(true);
            }
            stop
        })));
        Ok(Engine {
            contexts: HashMap::default(),
            deadline,
            interrupted,
            runtime,
        })
    }

    fn context(&mut self, process: u64) -> Result<&mut ProcessContext, CodeError> {
        if !self.contexts.contains_key(&process) {
            if self.contexts.len() >= MAX_CONTEXTS {
                self.contexts.clear();
            }
            let context = Context::full(&self.runtime).map_err(engine_error)?;
            let set_now = context.with(|ctx| {
                let f: Function = ctx
                    .eval(PRELUDE)
                    .catch(&ctx)
                    .map_err(|e| CodeError::Engine(caught_text(e, "")))?;
                Ok::<_, CodeError>(Persistent::save(&ctx, f))
            })?;
            self.contexts.insert(
                process,
                ProcessContext {
                    scripts: HashMap::default(),
                    set_now,
                    context,
                },
            );
        }
        self.contexts
            .get_mut(&process)
            .ok_or_else(|| CodeError::Engine("no context".into()))
    }

    fn run(
        &mut self,
        process: u64,
        source: &Arc<str>,
        data: &Map<String, Value>,
        now_ms: i64,
        limits: Limits,
    ) -> Result<Map<String, Value>, CodeError> {
        self.runtime.set_memory_limit(limits.memory);
        let input = serde_json::to_string(data).map_err(|e| CodeError::Engine(e.to_string()))?;
        let deadline = Rc::clone(&self.deadline);
        let interrupted = Rc::clone(&self.interrupted);
        interrupted.set(false);
        let pc = self.context(process)?;
        if !pc.scripts.contains_key(source) && pc.scripts.len() >= MAX_SCRIPTS {
            pc.scripts.clear();
        }
        let cached = pc.scripts.get(source).cloned();
        let set_now = pc.set_now.clone();
        let (output, compiled) = pc.context.with(|ctx| {
            deadline.set(Some(Instant::now() + limits.time));
            let result = (|| {
                let (function, compiled) = match cached {
                    Some(f) => (f.restore(&ctx).map_err(engine_error)?, None),
                    None => {
                        // Sloppy mode, as Corezoid's scripts are written.
                        let wrapped = format!("(function (data) {{\n{source}\n;return data;\n}})");
                        let mut options = EvalOptions::default();
                        options.strict = false;
                        options.filename = Some(SCRIPT_FILE.into());
                        let function = ctx
                            .eval_with_options::<Function, _>(wrapped, options)
                            .catch(&ctx)
                            .map_err(|e| CodeError::Compile(caught_text(e, source)))?;
                        let compiled = Persistent::save(&ctx, function.clone());
                        (function, Some(compiled))
                    }
                };
                let set_now = set_now.restore(&ctx).map_err(engine_error)?;
                set_now
                    .call::<_, ()>((now_ms as f64,))
                    .map_err(engine_error)?;
                let input = ctx.json_parse(input).map_err(engine_error)?;
                let output: rquickjs::Value = function
                    .call((input,))
                    .catch(&ctx)
                    .map_err(|e| CodeError::Thrown(caught_text(e, source)))?;
                if !output.is_object() || output.is_array() || output.is_function() {
                    return Err(CodeError::BadResult(format!(
                        "it is {}",
                        output.type_name()
                    )));
                }
                let text = ctx
                    .json_stringify(output)
                    .catch(&ctx)
                    .map_err(|e| CodeError::BadResult(caught_text(e, source)))?
                    .ok_or_else(|| CodeError::BadResult("it is undefined".into()))?
                    .to_string()
                    .map_err(engine_error)?;
                Ok((text, compiled))
            })();
            deadline.set(None);
            result
        })?;
        if let Some(compiled) = compiled {
            pc.scripts.entry(Arc::clone(source)).or_insert(compiled);
        }
        match serde_json::from_str::<Value>(&output) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(other) => Err(CodeError::BadResult(format!("it is {other}"))),
            Err(e) => Err(CodeError::BadResult(e.to_string())),
        }
    }
}

/// Runs `source` over `data` for a task of `process` at `now_ms` (the step's clock), and
/// returns the data the script leaves.
pub(crate) fn run(
    process: u64,
    source: &Arc<str>,
    data: &Map<String, Value>,
    now_ms: i64,
    limits: Limits,
) -> Result<Map<String, Value>, CodeError> {
    ENGINE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(Engine::new()?);
        }
        let Some(engine) = slot.as_mut() else {
            return Err(CodeError::Engine("no engine".into()));
        };
        let result = engine.run(process, source, data, now_ms, limits);
        let interrupted = engine.interrupted.get();
        let result = match result {
            Err(_) if interrupted => Err(CodeError::Timeout(limits.time)),
            Err(CodeError::Thrown(message) | CodeError::Compile(message))
                if is_out_of_memory(&message) =>
            {
                Err(CodeError::Memory(limits.memory / (1024 * 1024)))
            }
            Err(CodeError::Thrown(message)) if message == NULL_THROWN => {
                Err(CodeError::Memory(limits.memory / (1024 * 1024)))
            }
            Err(CodeError::Engine(message)) if is_out_of_memory(&message) => {
                Err(CodeError::Memory(limits.memory / (1024 * 1024)))
            }
            other => other,
        };
        if matches!(
            result,
            Err(CodeError::Timeout(_) | CodeError::Memory(_) | CodeError::Engine(_))
        ) {
            // A runtime stopped mid-way is not reused.
            *slot = None;
        }
        result
    })
}

/// What QuickJS throws when it cannot even allocate its out-of-memory error. A script's
/// own `throw null` looks the same and is reported as a memory error too (documented).
const NULL_THROWN: &str = "null";

/// QuickJS reports an exhausted heap as an `InternalError: out of memory` exception (or,
/// when it cannot even make that, as an allocation failure): its only signal.
fn is_out_of_memory(message: &str) -> bool {
    message.contains("out of memory") || message.contains("Allocation failed")
}

fn engine_error(e: rquickjs::Error) -> CodeError {
    CodeError::Engine(e.to_string())
}

/// The text of what a script threw: `Name: message` and the line, for an `Error`.
fn caught_text(e: CaughtError<'_>, source: &str) -> String {
    match e {
        CaughtError::Exception(ex) => {
            let message = ex.message().unwrap_or_default();
            let name: Option<String> = ex
                .get::<_, Option<String>>("name")
                .ok()
                .flatten()
                .filter(|n| !n.is_empty());
            let text = match name {
                Some(name) if !message.is_empty() => format!("{name}: {message}"),
                Some(name) => name,
                None => message,
            };
            // The first frame of the stack names the line in the script (1 = its first).
            let line = ex
                .stack()
                .and_then(|stack| script_line(&stack))
                .filter(|line| *line <= source.lines().count());
            match line {
                Some(line) => format!("{text} (line {line})"),
                None => text,
            }
        }
        CaughtError::Value(value) if value.is_null() => NULL_THROWN.into(),
        CaughtError::Value(value) => match value.as_string().and_then(|s| s.to_string().ok()) {
            Some(text) => text,
            None => format!("a {}", value.type_name()),
        },
        CaughtError::Error(e) => e.to_string(),
    }
}

/// The name scripts are compiled under, to find their frames in a stack.
const SCRIPT_FILE: &str = "conveyor_code";

/// `    at <anonymous> (conveyor_code:3:5)` → 2 (the wrapper adds one line before the
/// script; a line past the script's end is the wrapper's own).
fn script_line(stack: &str) -> Option<usize> {
    let marker = format!("({SCRIPT_FILE}:");
    let frame = stack.lines().find(|l| l.contains(&marker))?;
    let after = frame.split(&marker).nth(1)?;
    let line: usize = after.split([':', ')']).next()?.parse().ok()?;
    line.checked_sub(1).filter(|l| *l > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            time: Duration::from_millis(200),
            memory: 16 * 1024 * 1024,
        }
    }

    fn data(json: &str) -> Map<String, Value> {
        match serde_json::from_str(json) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    fn script(text: &str) -> Arc<str> {
        Arc::from(text)
    }

    #[test]
    fn a_script_changes_data_and_deletes_keys() {
        let src = script("data.sum = data.a + data.b; delete data.a; data.list = [1, 'x'];");
        let out = run(1, &src, &data(r#"{"a": 2, "b": 3.5}"#), 0, limits()).unwrap();
        assert_eq!(
            Value::Object(out),
            serde_json::json!({"b": 3.5, "sum": 5.5, "list": [1, "x"]})
        );
        // Compiled once, run again with other data.
        let out = run(1, &src, &data(r#"{"a": 1, "b": 1}"#), 0, limits()).unwrap();
        assert_eq!(out["sum"], 2);
    }

    #[test]
    fn date_reads_the_clock_given() {
        let src = script(
            "data.now = Date.now(); data.iso = new Date().toISOString(); data.y = new Date(0).getUTCFullYear();",
        );
        let out = run(1, &src, &Map::new(), 1_700_000_000_000, limits()).unwrap();
        assert_eq!(out["now"], 1_700_000_000_000i64);
        assert_eq!(out["iso"], "2023-11-14T22:13:20.000Z");
        assert_eq!(out["y"], 1970);
    }

    #[test]
    fn errors_are_typed_with_the_line() {
        let e = run(
            1,
            &script("var x = 1;\nnull.f();"),
            &Map::new(),
            0,
            limits(),
        )
        .unwrap_err();
        assert!(matches!(e, CodeError::Thrown(_)), "{e:?}");
        assert!(e.to_string().contains("TypeError"), "{e}");
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = run(1, &script("data.x = ;"), &Map::new(), 0, limits()).unwrap_err();
        assert!(matches!(e, CodeError::Compile(_)), "{e:?}");
        let e = run(1, &script("throw 'no';"), &Map::new(), 0, limits()).unwrap_err();
        assert_eq!(e.to_string(), "the script threw: no");
        let e = run(1, &script("data = 5;"), &Map::new(), 0, limits()).unwrap_err();
        assert!(matches!(e, CodeError::BadResult(_)), "{e:?}");
    }

    #[test]
    fn time_memory_and_stack_are_limited_and_the_engine_recovers() {
        let started = Instant::now();
        let e = run(1, &script("while (true) {}"), &Map::new(), 0, limits()).unwrap_err();
        assert!(matches!(e, CodeError::Timeout(_)), "{e:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        let e = run(
            1,
            &script("var a = []; while (true) { a.push('x'.repeat(1000) + a.length); }"),
            &Map::new(),
            0,
            limits(),
        )
        .unwrap_err();
        assert!(matches!(e, CodeError::Memory(_)), "{e:?}");
        let e = run(
            1,
            &script("function f() { return f() + 1; } f();"),
            &Map::new(),
            0,
            limits(),
        )
        .unwrap_err();
        assert!(matches!(e, CodeError::Thrown(_)), "{e:?}");
        let out = run(1, &script("data.ok = true;"), &Map::new(), 0, limits()).unwrap();
        assert_eq!(out["ok"], true);
    }

    #[test]
    fn nothing_outside_is_reachable_and_processes_do_not_share_globals() {
        let src = script(
            "data.kinds = [typeof require, typeof process, typeof std, typeof os, typeof fetch, typeof XMLHttpRequest, typeof setTimeout];",
        );
        let out = run(1, &src, &Map::new(), 0, limits()).unwrap();
        assert_eq!(
            out["kinds"],
            Value::Array(vec![Value::from("undefined"); 7])
        );
        let e = run(1, &script("import('os');"), &Map::new(), 0, limits());
        // A dynamic import finds no loader: a rejected promise, never a module.
        if let Ok(out) = e {
            assert!(!out.contains_key("os"));
        }
        run(7, &script("leaked = 'secret';"), &Map::new(), 0, limits()).unwrap();
        let out = run(
            8,
            &script("data.seen = typeof leaked;"),
            &Map::new(),
            0,
            limits(),
        )
        .unwrap();
        assert_eq!(out["seen"], "undefined");
    }
}
