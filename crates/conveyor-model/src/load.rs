//! From YAML text to a [`Process`], collecting every problem on the way.
//!
//! The text is read by serde_yaml into a generic value first (syntax errors carry line and
//! column); then each top-level section, each param and each node is read on its own, so
//! that one bad node does not hide the problems of the others.

use std::time::Duration;

use conveyor_template::{Template, ValueTemplate};
use indexmap::IndexMap;
use regex::{Regex, RegexBuilder};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::diagnostic::{Diagnostic, Severity, did_you_mean};
use crate::duration::{DurationSpec, parse_duration};
use crate::kind::{NODE_KINDS, load_kind};
use crate::model::*;
use crate::positions::Positions;

/// Compiled regexes may not grow past this (bytes); hostile patterns are refused.
pub(crate) const REGEX_SIZE_LIMIT: usize = 1 << 20;

const TOP_KEYS: [&str; 9] = [
    "process",
    "title",
    "description",
    "params",
    "secrets",
    "settings",
    "direct_url",
    "authorize",
    "nodes",
];

pub(crate) struct Loader<'a> {
    pub file: &'a str,
    pub positions: Positions,
    pub diagnostics: Vec<Diagnostic>,
}

impl Loader<'_> {
    /// Records a problem at `field` of `node` (or of the file when `node` is `None`).
    pub fn report(
        &mut self,
        severity: Severity,
        node: Option<&str>,
        field: Option<&str>,
        message: String,
    ) {
        let mut path: Vec<String> = Vec::new();
        if let Some(node) = node {
            path.push("nodes".into());
            path.push(node.into());
        }
        if let Some(field) = field {
            path.extend(yaml_path(field));
        }
        let path_refs: Vec<&str> = path.iter().map(String::as_str).collect();
        let position = self.positions.find(&path_refs);
        self.diagnostics.push(Diagnostic {
            severity,
            file: self.file.to_string(),
            line: position.map(|p| p.0),
            column: position.map(|p| p.1),
            node: node.map(str::to_string),
            field: field.map(str::to_string),
            message,
        });
    }

    pub fn error(&mut self, node: Option<&str>, field: Option<&str>, message: String) {
        self.report(Severity::Error, node, field, message);
    }

    /// Reads `value` as `T`, reporting a failure with the path of the field at fault.
    pub(crate) fn read<T: DeserializeOwned>(
        &mut self,
        node: Option<&str>,
        base: &str,
        value: serde_yaml::Value,
    ) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let inner = e.inner().to_string();
                let mut field = join_field(base, &e.path().to_string());
                // For an unknown key, point at the key itself.
                if let Some(key) = inner
                    .strip_prefix("unknown field `")
                    .and_then(|r| r.split('`').next())
                    && !field.ends_with(key)
                {
                    field = join_field(&field, key);
                }
                let message = clean_serde_message(&inner);
                let field = if field.is_empty() { None } else { Some(field) };
                self.error(node, field.as_deref(), message);
                None
            }
        }
    }

    pub(crate) fn template(
        &mut self,
        node: Option<&str>,
        field: &str,
        text: &str,
    ) -> Option<Template> {
        match Template::parse(text) {
            Ok(t) => Some(t),
            Err(e) => {
                self.error(
                    node,
                    Some(field),
                    format!("bad template `{}`: {e}", shorten(text)),
                );
                None
            }
        }
    }

    pub(crate) fn value_template(
        &mut self,
        node: Option<&str>,
        field: &str,
        value: &Value,
    ) -> Option<ValueTemplate> {
        match ValueTemplate::parse(value) {
            Ok(t) => Some(t),
            Err(errors) => {
                for e in errors {
                    let sub = e.pointer.trim_start_matches('/').replace('/', ".");
                    let at = join_field(field, &sub);
                    self.error(node, Some(&at), format!("bad template: {}", e.error));
                }
                None
            }
        }
    }

    pub(crate) fn duration(
        &mut self,
        node: Option<&str>,
        field: &str,
        value: &Value,
    ) -> Option<DurationSpec> {
        match duration_spec(value) {
            Ok(d) => Some(d),
            Err(message) => {
                self.error(node, Some(field), message);
                None
            }
        }
    }

    pub(crate) fn regex(
        &mut self,
        node: Option<&str>,
        field: &str,
        pattern: &str,
    ) -> Option<Regex> {
        match compile_regex(pattern) {
            Ok(r) => Some(r),
            Err(message) => {
                self.error(node, Some(field), message);
                None
            }
        }
    }
}

/// Compiles a user's regular expression with a size limit. The `regex` crate runs in
/// linear time, so no pattern can backtrack catastrophically.
pub fn compile_regex(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            let detail = e.to_string();
            let last = detail
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string();
            format!(
                "bad regular expression `{}`: {}",
                shorten(pattern),
                last.trim_start_matches("error: ")
            )
        })
}

pub(crate) fn duration_spec(value: &Value) -> Result<DurationSpec, String> {
    match value {
        Value::Number(n) => n
            .as_u64()
            .map(|s| DurationSpec::Fixed(Duration::from_secs(s)))
            .ok_or_else(|| {
                format!("`{n}` is not a duration (a whole number of seconds, or e.g. `25m`)")
            }),
        Value::String(text) => {
            let template = Template::parse(text)
                .map_err(|e| format!("bad template `{}`: {e}", shorten(text)))?;
            match template.as_literal() {
                Some(literal) => parse_duration(literal).map(DurationSpec::Fixed),
                None => Ok(DurationSpec::Template(template)),
            }
        }
        other => Err(format!("`{other}` is not a duration")),
    }
}

/// `a` + `b` as a field path (`branches[0]` + `next` → `branches[0].next`).
pub(crate) fn join_field(a: &str, b: &str) -> String {
    match (a.is_empty() || a == ".", b.is_empty() || b == ".") {
        (true, _) => b.trim_start_matches('.').to_string(),
        (false, true) => a.to_string(),
        (false, false) if b.starts_with('[') => format!("{a}{b}"),
        (false, false) => format!("{a}.{b}"),
    }
}

/// `branches[0].next` → `["branches", "0", "next"]`.
pub(crate) fn yaml_path(field: &str) -> Vec<String> {
    field
        .replace('[', ".")
        .replace(']', "")
        .split('.')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

pub(crate) fn clean_serde_message(message: &str) -> String {
    // serde_yaml appends positions of its own; ours are more precise.
    let message = match message.find(" at line ") {
        Some(i) => &message[..i],
        None => message,
    };
    message.to_string()
}

pub(crate) fn shorten(text: &str) -> String {
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text.to_string()
    }
}

/// A scalar as template text: numbers and booleans as written.
pub(crate) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

// ---------------------------------------------------------------------------------------
// The file as written.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParam {
    #[serde(default)]
    required: bool,
    default: Option<Value>,
    pattern: Option<String>,
    #[serde(default)]
    secret: bool,
    description: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    input: Option<Vec<String>>,
    max_length: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    max_steps: Option<u32>,
    max_tasks: Option<u64>,
    min_wait: Option<Value>,
    max_wait: Option<Value>,
    rate_limit: Option<RawRateLimit>,
    keep: Option<Value>,
    history: Option<RawHistory>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHistory {
    keep_first: Option<u64>,
    keep_last: Option<u64>,
    max_age: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    max: u32,
    per: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirectUrl {
    refs: Option<Vec<String>>,
    #[serde(default)]
    new_tasks: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthorize {
    url: String,
    code: String,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    code_lifetime: Option<Value>,
}

// ---------------------------------------------------------------------------------------

/// What [`load`] could read.
pub(crate) struct Loaded {
    /// The process, with the nodes that could be read.
    pub process: Process,
    /// Whether every part of the file could be read.
    pub complete: bool,
    /// The ids of all nodes written, read or not.
    pub ids: Vec<String>,
}

/// Reads the whole file (the graph checks come after). `None` when the text is not a
/// YAML mapping at all.
pub(crate) fn load(loader: &mut Loader<'_>, source: &str) -> Option<Loaded> {
    if let Some((line, column)) = loader.positions.too_deep {
        loader.diagnostics.push(Diagnostic {
            severity: Severity::Error,
            file: loader.file.to_string(),
            line: Some(line),
            column: Some(column),
            node: None,
            field: None,
            message: format!(
                "invalid YAML: nested more than {} levels deep",
                crate::positions::MAX_NESTING
            ),
        });
        return None;
    }
    let document: serde_yaml::Value = match serde_yaml::from_str(source) {
        Ok(v) => v,
        Err(e) => {
            let location = e.location();
            loader.diagnostics.push(Diagnostic {
                severity: Severity::Error,
                file: loader.file.to_string(),
                line: location.as_ref().map(|l| l.line()),
                column: location.as_ref().map(|l| l.column()),
                node: None,
                field: None,
                message: format!("invalid YAML: {}", clean_serde_message(&e.to_string())),
            });
            return None;
        }
    };
    let serde_yaml::Value::Mapping(top) = document else {
        let what = if document.is_null() {
            "the file is empty"
        } else {
            "the file is not a mapping"
        };
        loader.error(
            None,
            None,
            format!("{what}: a process file has `process:` and `nodes:` at its top"),
        );
        return None;
    };

    let mut ok = true;
    let mut name = None;
    let mut title = None;
    let mut description = None;
    let mut params = IndexMap::new();
    let mut secrets = Vec::new();
    let mut settings = Settings::default();
    let mut direct_url = DirectUrl {
        refs: None,
        new_tasks: true,
    };
    let mut raw_authorize = None;
    let mut nodes_value = None;
    for (key, value) in top {
        let Some(key) = key.as_str().map(str::to_string) else {
            loader.error(
                None,
                None,
                format!("top-level keys must be text, found `{}`", yaml_text(&key)),
            );
            ok = false;
            continue;
        };
        match key.as_str() {
            "process" => match loader.read::<String>(None, "process", value) {
                Some(n) if valid_id(&n) => name = Some(n),
                Some(n) => {
                    loader.error(
                        None,
                        Some("process"),
                        format!("`{n}` is not a valid process name (letters, digits, `_` and `-`)"),
                    );
                    ok = false;
                }
                None => ok = false,
            },
            "title" => title = loader.read::<String>(None, "title", value),
            "description" => description = loader.read::<String>(None, "description", value),
            "params" => match value {
                serde_yaml::Value::Mapping(map) => {
                    for (param_name, spec) in map {
                        let Some(param_name) = param_name.as_str().map(str::to_string) else {
                            loader.error(None, Some("params"), "param names must be text".into());
                            ok = false;
                            continue;
                        };
                        match load_param(loader, &param_name, spec) {
                            Some(param) => {
                                params.insert(param_name, param);
                            }
                            None => ok = false,
                        }
                    }
                }
                serde_yaml::Value::Null => {}
                _ => {
                    loader.error(
                        None,
                        Some("params"),
                        "expected a mapping of param names to their declarations".into(),
                    );
                    ok = false;
                }
            },
            "secrets" => match loader.read::<Vec<String>>(None, "secrets", value) {
                Some(list) => secrets = list,
                None => ok = false,
            },
            "settings" => match loader.read::<RawSettings>(None, "settings", value) {
                Some(raw) => {
                    if let Some(max) = raw.max_steps {
                        if max == 0 {
                            loader.error(
                                None,
                                Some("settings.max_steps"),
                                "must be at least 1".into(),
                            );
                            ok = false;
                        }
                        settings.max_steps = max;
                    }
                    if let Some(max) = raw.max_tasks {
                        if max == 0 {
                            loader.error(
                                None,
                                Some("settings.max_tasks"),
                                "must be at least 1".into(),
                            );
                            ok = false;
                        }
                        settings.max_tasks = max;
                    }
                    ok &= load_waits(loader, &raw, &mut settings);
                    ok &= load_retention(loader, &raw, &mut settings);
                }
                None => ok = false,
            },
            "direct_url" => match loader.read::<RawDirectUrl>(None, "direct_url", value) {
                Some(raw) => {
                    direct_url = DirectUrl {
                        refs: raw.refs,
                        new_tasks: raw.new_tasks,
                    }
                }
                None => ok = false,
            },
            "authorize" => match loader.read::<RawAuthorize>(None, "authorize", value) {
                Some(raw) => raw_authorize = Some(raw),
                None => ok = false,
            },
            "nodes" => nodes_value = Some(value),
            other => {
                let hint = did_you_mean(other, TOP_KEYS)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                loader.error(
                    None,
                    Some(other),
                    format!(
                        "unknown key `{other}`{hint}; a process file has {}",
                        TOP_KEYS.map(|k| format!("`{k}`")).join(", ")
                    ),
                );
                ok = false;
            }
        }
    }
    if name.is_none() {
        loader.error(
            None,
            None,
            "missing `process:` (the process name, e.g. `process: bitrix_oauth`)".into(),
        );
        ok = false;
    }

    // Checked once every param is known (the sections may come in any order).
    let authorize = raw_authorize.and_then(|raw| {
        let checked = load_authorize(loader, raw, &params);
        ok &= checked.is_some();
        checked
    });

    let mut ids = Vec::new();
    let mut nodes = NodeMap::default();
    match nodes_value {
        None => {
            loader.error(None, None, "missing `nodes:`".into());
            ok = false;
        }
        Some(serde_yaml::Value::Mapping(map)) => {
            for (id, spec) in map {
                let id = match id {
                    serde_yaml::Value::String(s) => s,
                    serde_yaml::Value::Number(n) => n.to_string(),
                    other => {
                        loader.error(
                            None,
                            Some("nodes"),
                            format!("node ids must be text, found `{}`", yaml_text(&other)),
                        );
                        ok = false;
                        continue;
                    }
                };
                ids.push(id.clone());
                if !valid_id(&id) {
                    loader.error(
                        Some(&id),
                        None,
                        "a node id is 1 to 64 letters, digits, `_` or `-`".into(),
                    );
                    ok = false;
                    continue;
                }
                match load_node(loader, &id, spec) {
                    Some(node) => {
                        nodes.insert(id, node);
                    }
                    None => ok = false,
                }
            }
        }
        Some(_) => {
            loader.error(
                None,
                Some("nodes"),
                "expected a mapping of node ids to nodes".into(),
            );
            ok = false;
        }
    }

    Some(Loaded {
        process: Process {
            name: name.unwrap_or_default(),
            title,
            description,
            params,
            secrets,
            settings,
            direct_url,
            authorize,
            start: String::new(),
            nodes,
        },
        complete: ok,
        ids,
    })
}

/// The `authorize:` section: an `http(s)://` address whose placeholders are declared,
/// non-secret params (a secret would land in the browser's history and the portal's
/// logs); a code param the dashboard may set; a duration.
fn load_authorize(
    loader: &mut Loader<'_>,
    raw: RawAuthorize,
    params: &IndexMap<String, Param>,
) -> Option<Authorize> {
    let mut ok = true;
    let url = raw.url.trim().to_string();
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        loader.error(
            None,
            Some("authorize.url"),
            format!("`{url}` must start with `https://` (or `http://`), written out: the scheme is never a param"),
        );
        ok = false;
    }
    let mut uses: Vec<String> = Vec::new();
    for piece in authorize_pieces(&url) {
        match piece {
            UrlPiece::Text(_) => {}
            UrlPiece::Unclosed(_) => {
                loader.error(
                    None,
                    Some("authorize.url"),
                    "unclosed `{{`: a placeholder is `{{param}}`".into(),
                );
                ok = false;
            }
            UrlPiece::Param(name) => match params.get(name) {
                None => {
                    let hint = did_you_mean(name, params.keys().map(String::as_str))
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    loader.error(
                        None,
                        Some("authorize.url"),
                        format!("`{{{{{name}}}}}` is not a declared param{hint}; the address may use only declared params"),
                    );
                    ok = false;
                }
                Some(param) if param.secret => {
                    loader.error(
                        None,
                        Some("authorize.url"),
                        format!("`{name}` is secret: a secret never goes into an address a browser opens"),
                    );
                    ok = false;
                }
                Some(_) => {
                    if !uses.iter().any(|u| u == name) {
                        uses.push(name.to_string());
                    }
                }
            },
        }
    }
    match params.get(&raw.code) {
        None => {
            loader.error(
                None,
                Some("authorize.code"),
                format!(
                    "`{}` is not a declared param: the code goes into a declared param",
                    raw.code
                ),
            );
            ok = false;
        }
        Some(param) if !(param.input.create || param.input.modify) => {
            loader.error(
                None,
                Some("authorize.code"),
                format!("param `{}` takes no input on create or modify (`input:`), so no code could reach it", raw.code),
            );
            ok = false;
        }
        Some(_) => {}
    }
    let token = raw.token.unwrap_or_else(|| "access_token".to_string());
    if !valid_id(&token) {
        loader.error(
            None,
            Some("authorize.token"),
            format!("`{token}` is not a task key (letters, digits, `_` and `-`)"),
        );
        ok = false;
    }
    let code_lifetime = match raw.code_lifetime {
        None => None,
        Some(value) => {
            let text = match &value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            match parse_duration(&text) {
                Ok(d) if !d.is_zero() => Some(d),
                Ok(_) => {
                    loader.error(
                        None,
                        Some("authorize.code_lifetime"),
                        "must be more than 0".into(),
                    );
                    ok = false;
                    None
                }
                Err(e) => {
                    loader.error(None, Some("authorize.code_lifetime"), e);
                    ok = false;
                    None
                }
            }
        }
    };
    ok.then_some(Authorize {
        url,
        uses,
        code: raw.code,
        token,
        code_lifetime,
    })
}

pub(crate) fn yaml_text(value: &serde_yaml::Value) -> String {
    serde_yaml::to_string(value)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn load_param(loader: &mut Loader<'_>, name: &str, spec: serde_yaml::Value) -> Option<Param> {
    let field = format!("params.{name}");
    if !valid_id(name) {
        loader.error(
            None,
            Some(&field),
            format!("`{name}` is not a valid param name (letters, digits, `_` and `-`)"),
        );
        return None;
    }
    // `portal: {}` and `portal:` both declare an optional param.
    let spec = if spec.is_null() {
        serde_yaml::Value::Mapping(Default::default())
    } else {
        spec
    };
    let raw: RawParam = loader.read(None, &field, spec)?;
    let pattern = match &raw.pattern {
        Some(p) => Some(loader.regex(None, &format!("{field}.pattern"), p)?),
        None => None,
    };
    if let (Some(pattern), Some(default)) = (&pattern, &raw.default) {
        let text = scalar_text(default).unwrap_or_default();
        if !pattern.is_match(&text) {
            loader.error(
                None,
                Some(&format!("{field}.default")),
                format!("the default `{text}` does not match the pattern `{pattern}`"),
            );
            return None;
        }
    }
    if raw.required && raw.default.is_some() {
        loader.report(
            Severity::Warning,
            None,
            Some(&field),
            "a required param with a default: the default is never used".into(),
        );
    }
    let kind = match raw.kind.as_deref() {
        None | Some("any") => None,
        Some(name) => match ParamType::ALL.iter().find(|(n, _)| *n == name) {
            Some((_, kind)) => Some(*kind),
            None => {
                loader.error(
                    None,
                    Some(&format!("{field}.type")),
                    format!(
                        "unknown type `{name}`; a param's type is one of any, {}",
                        ParamType::ALL.map(|(n, _)| n).join(", ")
                    ),
                );
                return None;
            }
        },
    };
    let input = match raw.input {
        None => Input::default(),
        Some(doors) => {
            let mut input = Input {
                create: false,
                modify: false,
                url: false,
            };
            for door in doors {
                match door.as_str() {
                    "create" => input.create = true,
                    "modify" => input.modify = true,
                    "url" => input.url = true,
                    other => {
                        loader.error(
                            None,
                            Some(&format!("{field}.input")),
                            format!(
                                "unknown door `{other}`; `input:` lists some of create, modify, url"
                            ),
                        );
                        return None;
                    }
                }
            }
            input
        }
    };
    Some(Param {
        required: raw.required,
        default: raw.default,
        pattern,
        secret: raw.secret,
        description: raw.description,
        kind,
        input,
        max_length: raw.max_length.unwrap_or(DEFAULT_MAX_LENGTH),
    })
}

/// `settings.min_wait`, `max_wait` and `rate_limit`: fixed durations only.
fn load_waits(loader: &mut Loader<'_>, raw: &RawSettings, settings: &mut Settings) -> bool {
    let fixed = |loader: &mut Loader<'_>, field: &str, value: &Value| -> Option<Duration> {
        match loader.duration(None, field, value)? {
            DurationSpec::Fixed(d) => Some(d),
            DurationSpec::Template(_) => {
                loader.error(
                    None,
                    Some(field),
                    "must be a fixed duration, not a template".into(),
                );
                None
            }
        }
    };
    let mut ok = true;
    if let Some(value) = &raw.min_wait {
        match fixed(loader, "settings.min_wait", value) {
            Some(d) => settings.min_wait = d,
            None => ok = false,
        }
    }
    if let Some(value) = &raw.max_wait {
        match fixed(loader, "settings.max_wait", value) {
            Some(d) => settings.max_wait = d,
            None => ok = false,
        }
    }
    if settings.max_wait < settings.min_wait {
        loader.error(
            None,
            Some("settings.max_wait"),
            "is shorter than settings.min_wait".into(),
        );
        ok = false;
    }
    if let Some(limit) = &raw.rate_limit {
        match fixed(loader, "settings.rate_limit.per", &limit.per) {
            Some(per) if per.is_zero() || limit.max == 0 => {
                loader.error(
                    None,
                    Some("settings.rate_limit"),
                    "`max` and `per` must be more than zero".into(),
                );
                ok = false;
            }
            Some(per) => {
                settings.rate_limit = Some(RateLimit {
                    max: limit.max,
                    per,
                })
            }
            None => ok = false,
        }
    }
    ok
}

/// `keep:` (settings or a final node): `forever`, `0`, or a fixed duration.
pub(crate) fn load_keep(
    loader: &mut Loader<'_>,
    node: Option<&str>,
    field: &str,
    value: &Value,
) -> Option<Keep> {
    if value.as_str().map(str::trim) == Some("forever") {
        return Some(Keep::Forever);
    }
    match loader.duration(node, field, value)? {
        DurationSpec::Fixed(d) => Some(Keep::For(d)),
        DurationSpec::Template(_) => {
            loader.error(
                node,
                Some(field),
                "must be a fixed duration, `0` or `forever`, not a template".into(),
            );
            None
        }
    }
}

/// `settings.keep` and `settings.history`.
fn load_retention(loader: &mut Loader<'_>, raw: &RawSettings, settings: &mut Settings) -> bool {
    let mut ok = true;
    if let Some(value) = &raw.keep {
        match load_keep(loader, None, "settings.keep", value) {
            Some(keep) => settings.keep = Some(keep),
            None => ok = false,
        }
    }
    if let Some(history) = &raw.history {
        let bounds = &mut settings.history;
        if let Some(n) = history.keep_first {
            bounds.keep_first = n;
        }
        if let Some(n) = history.keep_last {
            if n == 0 {
                loader.error(
                    None,
                    Some("settings.history.keep_last"),
                    "must be at least 1".into(),
                );
                ok = false;
            }
            bounds.keep_last = n;
        }
        if let Some(value) = &history.max_age {
            match load_keep(loader, None, "settings.history.max_age", value) {
                Some(Keep::Forever) => bounds.max_age = None,
                Some(Keep::For(d)) if d.is_zero() => {
                    loader.error(
                        None,
                        Some("settings.history.max_age"),
                        "must be more than zero (or `forever`)".into(),
                    );
                    ok = false;
                }
                Some(Keep::For(d)) => bounds.max_age = Some(d),
                None => ok = false,
            }
        }
    }
    ok
}

fn load_node(loader: &mut Loader<'_>, id: &str, spec: serde_yaml::Value) -> Option<Node> {
    let serde_yaml::Value::Mapping(mut map) = spec else {
        loader.error(
            Some(id),
            None,
            "a node is a mapping with at least `type:`".into(),
        );
        return None;
    };
    let node = Some(id);
    let kind_name = match map.remove("type") {
        Some(serde_yaml::Value::String(kind)) => kind,
        Some(other) => {
            loader.error(
                node,
                Some("type"),
                format!("`{}` is not a node kind", yaml_text(&other)),
            );
            return None;
        }
        None => {
            loader.error(
                node,
                None,
                format!("missing `type:` (one of {})", NODE_KINDS.join(", ")),
            );
            return None;
        }
    };
    if !NODE_KINDS.contains(&kind_name.as_str()) {
        let hint = did_you_mean(&kind_name, NODE_KINDS.iter().copied())
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        loader.error(
            node,
            Some("type"),
            format!(
                "unknown node kind `{kind_name}`{hint}; known kinds: {}",
                NODE_KINDS.join(", ")
            ),
        );
        return None;
    }
    let title = take_string(loader, node, &mut map, "title");
    let description = take_string(loader, node, &mut map, "description");
    let corezoid_id = take_string(loader, node, &mut map, "corezoid_id");
    let mut ok = true;
    let time_limit = match map.remove("timeout") {
        None => None,
        Some(value) => match load_time_limit(loader, id, value) {
            Some(limit) => Some(limit),
            None => {
                ok = false;
                None
            }
        },
    };
    let keep_timeout = match map.remove("keep_timeout") {
        None => false,
        Some(value) => match loader.read::<bool>(node, "keep_timeout", value) {
            Some(keep) => keep,
            None => {
                ok = false;
                false
            }
        },
    };
    let alert = match map.remove("alert") {
        None => None,
        Some(value) => match load_alert(loader, id, value) {
            Some(alert) => Some(alert),
            None => {
                ok = false;
                None
            }
        },
    };
    let rest = serde_yaml::Value::Mapping(map);
    let kind = load_kind(loader, id, &kind_name, rest);
    match (ok, kind) {
        (true, Some(kind)) => Some(Node {
            id: id.to_string(),
            title: title.flatten(),
            description: description.flatten(),
            corezoid_id: corezoid_id.flatten(),
            time_limit,
            keep_timeout,
            alert,
            kind,
        }),
        _ => None,
    }
}

fn take_string(
    loader: &mut Loader<'_>,
    node: Option<&str>,
    map: &mut serde_yaml::Mapping,
    key: &str,
) -> Option<Option<String>> {
    match map.remove(key) {
        None => Some(None),
        Some(value) => loader.read::<String>(node, key, value).map(Some),
    }
}

/// `timeout: 30s -> node` (also `→`), `timeout: { after: 30s, to: node }`, or
/// `timeout: { until: "{{unix_time}}", to: node }` (an absolute time).
fn load_time_limit(
    loader: &mut Loader<'_>,
    id: &str,
    value: serde_yaml::Value,
) -> Option<TimeLimit> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawLimit {
        after: Option<Value>,
        until: Option<String>,
        to: String,
    }
    let node = Some(id);
    if let serde_yaml::Value::Mapping(map) = &value
        && map.contains_key("until")
    {
        let raw: RawLimit = loader.read(node, "timeout", value)?;
        if raw.after.is_some() {
            loader.error(
                node,
                Some("timeout"),
                "a time limit has `after` (a duration) or `until` (a unix time), not both".into(),
            );
            return None;
        }
        let until = loader.template(node, "timeout.until", raw.until.as_deref().unwrap_or(""))?;
        if raw.to.trim().is_empty() {
            loader.error(
                node,
                Some("timeout"),
                "the time limit names no node to go to".into(),
            );
            return None;
        }
        return Some(TimeLimit {
            when: LimitAt::Until(until),
            target: raw.to,
        });
    }
    let (after, target) = match value {
        serde_yaml::Value::String(text) => {
            let Some((after, target)) = text.split_once("->").or_else(|| text.split_once('→'))
            else {
                loader.error(
                    node,
                    Some("timeout"),
                    format!(
                        "`{text}`: write a time limit as `DURATION -> NODE`, e.g. `30s -> expired`"
                    ),
                );
                return None;
            };
            (
                Value::String(after.trim().to_string()),
                target.trim().to_string(),
            )
        }
        other => {
            let raw: RawLimit = loader.read(node, "timeout", other)?;
            let Some(after) = raw.after else {
                loader.error(
                    node,
                    Some("timeout"),
                    "a time limit needs `after` (a duration) or `until` (a unix time)".into(),
                );
                return None;
            };
            (after, raw.to)
        }
    };
    let after = loader.duration(node, "timeout", &after)?;
    if target.is_empty() {
        loader.error(
            node,
            Some("timeout"),
            "the time limit names no node to go to".into(),
        );
        return None;
    }
    Some(TimeLimit {
        when: LimitAt::After(after),
        target,
    })
}

/// `alert: 30 -> node` (also `→`), or `alert: { at_least: 30, to: node }`.
fn load_alert(loader: &mut Loader<'_>, id: &str, value: serde_yaml::Value) -> Option<CountAlert> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawAlert {
        at_least: u64,
        to: String,
    }
    let node = Some(id);
    let bad = |text: &str| {
        format!(
            "`{text}`: write an alert as `TASKS -> NODE`, e.g. `30 -> too_many` (at least 1 task)"
        )
    };
    let (at_least, target) = match value {
        serde_yaml::Value::String(text) => {
            let parsed = text
                .split_once("->")
                .or_else(|| text.split_once('→'))
                .and_then(|(n, to)| Some((n.trim().parse::<u64>().ok()?, to.trim().to_string())));
            match parsed {
                Some(pair) => pair,
                None => {
                    loader.error(node, Some("alert"), bad(&text));
                    return None;
                }
            }
        }
        other => {
            let raw: RawAlert = loader.read(node, "alert", other)?;
            (raw.at_least, raw.to)
        }
    };
    if at_least == 0 || target.is_empty() {
        loader.error(node, Some("alert"), bad(&format!("{at_least} -> {target}")));
        return None;
    }
    Some(CountAlert { at_least, target })
}

pub(crate) fn cast_named(name: &str) -> Option<Cast> {
    Cast::ALL.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
}

pub(crate) fn unknown_cast(name: &str) -> String {
    format!(
        "unknown cast `{name}` (one of {})",
        Cast::ALL.map(|(n, _)| n).join(", ")
    )
}

pub(crate) fn process_template(
    loader: &mut Loader<'_>,
    id: &str,
    field: &str,
    value: &Value,
) -> Option<Template> {
    match value {
        Value::Number(n) if n.is_u64() => Some(Template::literal(n.to_string())),
        Value::String(text) => {
            let template = loader.template(Some(id), field, text)?;
            if let Some(literal) = template.as_literal()
                && conveyor_template::ProcessId::parse(literal).is_none()
            {
                loader.error(
                    Some(id),
                    Some(field),
                    format!("`{literal}` is not a process id (a number) or `@alias`"),
                );
                return None;
            }
            Some(template)
        }
        other => {
            loader.error(
                Some(id),
                Some(field),
                format!("`{other}` is not a process id (a number) or `@alias`"),
            );
            None
        }
    }
}

pub(crate) fn load_copy(
    loader: &mut Loader<'_>,
    id: &str,
    base: &str,
    process: Value,
    reference: Option<String>,
    data: Option<Value>,
) -> Option<TaskCopy> {
    let node = Some(id);
    let process = process_template(loader, id, &join_field(base, "process"), &process);
    let reference = match reference {
        Some(r) => Some(loader.template(node, &join_field(base, "ref"), &r)?),
        None => None,
    };
    let data = match data {
        Some(d) => Some(loader.value_template(node, &join_field(base, "data"), &d)?),
        None => None,
    };
    Some(TaskCopy {
        process: process?,
        reference,
        data,
    })
}
