//! `code`: JavaScript over the task's `data` (Corezoid's `api_code`). The model keeps the
//! source; the runtime compiles and runs it in its sandbox.

use super::prelude::*;

/// A `code` node: a JavaScript function body over `data`, the task's data.
#[derive(Debug, Clone)]
pub struct Code {
    /// The script as written; it runs as the body of `function (data) { …; return data }`.
    pub source: std::sync::Arc<str>,
    /// Keys the script visibly assigns (`data.key = …`, `data["key"] = …`): known to the
    /// undeclared-key warning and to `Process::writes`. A script can write others.
    pub writes: Vec<String>,
    /// Wall-clock time one run may take (`max_time`, default 100 ms, at most 5 s).
    pub max_time: Duration,
    /// Bytes the JavaScript heap may hold while it runs (`max_memory_mb`, default 32).
    pub max_memory: usize,
    pub next: String,
    pub on_error: Option<String>,
}

/// Scripts longer than this are refused (Corezoid's editor has a similar bound).
const MAX_SOURCE_BYTES: usize = 64 * 1024;
/// A script may run at most this long; it runs on the engine's thread.
const MAX_TIME: Duration = Duration::from_secs(5);
const DEFAULT_TIME: Duration = Duration::from_millis(100);
const DEFAULT_MEMORY_MB: u32 = 32;
const MAX_MEMORY_MB: u32 = 1024;

impl Kind for Code {
    fn on_error(&self) -> Option<&str> {
        self.on_error.as_deref()
    }

    fn edges<'a>(&'a self, edges: &mut Vec<Edge<'a>>) {
        next_edge(&self.next, edges);
    }

    /// None: the script reads `data` itself, which the file cannot follow.
    fn visit_task_templates<'a>(&'a self, _visit: &mut dyn FnMut(&'a Template)) {}

    fn visit_written_keys<'a>(&'a self, visit: &mut dyn FnMut(&'a str)) {
        self.writes.iter().for_each(|k| visit(k));
    }

    fn look(&self) -> Look {
        Look::named(
            "code",
            Shape::Box,
            None,
            Palette::of("#fef9c3", "#a16207", "#713f12"),
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCode {
    /// `js` (the default). Corezoid's other language, Erlang (`erl`), is refused.
    lang: Option<String>,
    #[serde(alias = "code")]
    src: String,
    max_time: Option<Value>,
    max_memory_mb: Option<u32>,
    next: String,
    on_error: Option<String>,
}

pub(super) fn load(loader: &mut Loader<'_>, id: &str, rest: serde_yaml::Value) -> Option<Code> {
    let node = Some(id);
    let raw: RawCode = loader.read(node, "", rest)?;
    let mut ok = true;
    match raw.lang.as_deref() {
        None | Some("js") | Some("javascript") => {}
        Some(other) => {
            loader.error(
                node,
                Some("lang"),
                format!(
                    "`{other}` code cannot run here: only JavaScript (`lang: js`) runs in Conveyor"
                ),
            );
            ok = false;
        }
    }
    if raw.src.len() > MAX_SOURCE_BYTES {
        loader.error(
            node,
            Some("src"),
            format!(
                "the script is {} bytes; at most {MAX_SOURCE_BYTES}",
                raw.src.len()
            ),
        );
        ok = false;
    }
    let max_time = match &raw.max_time {
        None => Some(DEFAULT_TIME),
        Some(value) => match loader.duration(node, "max_time", value)? {
            DurationSpec::Fixed(d) if !d.is_zero() && d <= MAX_TIME => Some(d),
            DurationSpec::Fixed(_) => {
                loader.error(
                    node,
                    Some("max_time"),
                    "must be more than zero and at most 5s".into(),
                );
                None
            }
            DurationSpec::Template(_) => {
                loader.error(
                    node,
                    Some("max_time"),
                    "must be a fixed duration, not a template".into(),
                );
                None
            }
        },
    };
    let memory_mb = raw.max_memory_mb.unwrap_or(DEFAULT_MEMORY_MB);
    if memory_mb == 0 || memory_mb > MAX_MEMORY_MB {
        loader.error(
            node,
            Some("max_memory_mb"),
            format!("must be from 1 to {MAX_MEMORY_MB}"),
        );
        ok = false;
    }
    let writes = assigned_keys(&raw.src);
    (ok && max_time.is_some()).then(|| Code {
        source: raw.src.into(),
        writes,
        max_time: max_time.unwrap_or(DEFAULT_TIME),
        max_memory: memory_mb as usize * 1024 * 1024,
        next: raw.next,
        on_error: raw.on_error,
    })
}

/// The keys a script visibly assigns: `data.key =` and `data["key"] =` / `data['key'] =`
/// (not `==`). A scan, not a parse: only for the undeclared-key warning.
pub(crate) fn assigned_keys(source: &str) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    let bytes = source.as_bytes();
    let mut at = 0;
    while let Some(found) = source[at..].find("data") {
        let start = at + found;
        at = start + 4;
        // `data` must be a whole word.
        if start > 0 && is_ident(bytes[start - 1]) {
            continue;
        }
        let rest = &source[at..];
        let (key, after) = if let Some(tail) = rest.strip_prefix('.') {
            let len = tail.bytes().take_while(|b| is_ident(*b)).count();
            (&tail[..len], &tail[len..])
        } else if let Some(tail) = rest.strip_prefix("[\"").or_else(|| rest.strip_prefix("['")) {
            let len = tail.find(['"', '\'']).unwrap_or(0);
            (&tail[..len], tail.get(len + 2..).unwrap_or(""))
        } else {
            continue;
        };
        let after = after.trim_start();
        if !key.is_empty()
            && after.starts_with('=')
            && !after.starts_with("==")
            && !keys.iter().any(|k| k == key)
        {
            keys.push(key.to_string());
        }
    }
    keys
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}

#[cfg(test)]
mod tests {
    use super::assigned_keys;

    #[test]
    fn assigned_keys_are_found_and_comparisons_are_not() {
        let src = "var x = data.a;\ndata.total = x + 1;\nif (data.b == 2) {}\ndata['c'] = 1; data[\"d\"]=2;\nmydata.e = 1;\ndata.total = 3;";
        assert_eq!(assigned_keys(src), ["total", "c", "d"]);
    }
}
