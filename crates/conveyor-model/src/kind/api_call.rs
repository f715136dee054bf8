//! `api_call`: an HTTP request, its response mapping, retries and limits.

use super::prelude::*;

/// An HTTP request node.
#[derive(Debug, Clone)]
pub struct ApiCall {
    pub method: HttpMethod,
    pub url: Template,
    pub query: IndexMap<String, ValueTemplate>,
    pub headers: IndexMap<String, Template>,
    pub body: Option<ValueTemplate>,
    pub format: BodyFormat,
    /// Limit on one HTTP exchange (default 60 s).
    pub request_timeout: Duration,
    /// Keys written into the task from the reply, rendered against
    /// `{body, status, headers}`; when absent a JSON object reply is merged whole.
    pub response: Option<IndexMap<String, ValueTemplate>>,
    /// Statuses that count as success (default 200, 201, 202).
    pub success_codes: Vec<u16>,
    pub retry: Option<Retry>,
    /// A header carrying a key that stays the same across retries of one call.
    pub idempotency_key: Option<Template>,
    pub idempotency_header: String,
    /// Most requests of this node in flight at once.
    pub concurrency: Option<u32>,
    /// Largest reply body accepted (default 128 KB, Corezoid's).
    pub max_response_bytes: u64,
    /// Corezoid's `send_sys`: the task's process, time and a signature sent along.
    pub send_sys: Option<SendSys>,
    /// An empty reply to 200 or 201 is an error (Corezoid's `rfc_format`); 202 may be
    /// empty. Without it, an empty reply is an empty object.
    pub require_body: bool,
    /// Write `__conveyor_api_debug__` (time, sizes, status) into the task (Corezoid's
    /// `debug_info`).
    pub debug: bool,
    pub next: String,
    pub on_error: Option<String>,
}

impl ApiCall {
    /// Whether the `response:` mapping reads the reply's headers (a path that starts
    /// with `headers`, or with no key): only then are they copied out of the HTTP
    /// response.
    pub fn response_reads_headers(&self) -> bool {
        let Some(mapping) = &self.response else {
            return false;
        };
        let mut reads = false;
        for template in mapping.values() {
            template.visit_templates(&mut |t| {
                t.visit_exprs(&mut |expr| {
                    if let conveyor_template::Expr::Task(path) = expr
                        && path.head().is_none_or(|head| head == "headers")
                    {
                        reads = true;
                    }
                })
            });
        }
        reads
    }
}

/// `send_sys` of an `api_call` (Corezoid's): the URL gets `conv_id`, `conv_time` and,
/// with a secret, `conv_signature` = hex(sha1(conv_time + secret + body + secret));
/// a JSON body gets `sys: {ref, obj_id, conv_id, node_id}`.
#[derive(Debug, Clone)]
pub struct SendSys {
    /// The secret the signature is made with, read from a secret param.
    pub secret: Option<Template>,
}

impl Kind for ApiCall {
    fn on_error(&self) -> Option<&str> {
        self.on_error.as_deref()
    }

    fn edges<'a>(&'a self, edges: &mut Vec<Edge<'a>>) {
        next_edge(&self.next, edges);
    }

    /// Not the `response:` mapping: it reads the reply.
    fn visit_task_templates<'a>(&'a self, visit: &mut dyn FnMut(&'a Template)) {
        visit(&self.url);
        self.query.values().for_each(|v| v.visit_templates(visit));
        self.headers.values().for_each(&mut *visit);
        if let Some(body) = &self.body {
            body.visit_templates(visit);
        }
        if let Some(key) = &self.idempotency_key {
            visit(key);
        }
        if let Some(SendSys {
            secret: Some(secret),
        }) = &self.send_sys
        {
            visit(secret);
        }
    }

    fn visit_written_keys<'a>(&'a self, visit: &mut dyn FnMut(&'a str)) {
        if let Some(response) = &self.response {
            response.keys().for_each(|k| visit(k));
        }
    }

    fn look(&self) -> Look {
        Look::named(
            "api_call",
            Shape::Box,
            None,
            Palette::of("#dbeafe", "#1d4ed8", "#1e3a8a"),
        )
    }
}

/// Retries of transient failures (timeouts, connection errors, 5xx, 429).
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Wait before the second attempt; doubled each time after.
    pub backoff: Duration,
    /// Longest wait between attempts.
    pub max: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
}

impl HttpMethod {
    pub const ALL: [(&'static str, HttpMethod); 6] = [
        ("GET", HttpMethod::Get),
        ("POST", HttpMethod::Post),
        ("PUT", HttpMethod::Put),
        ("PATCH", HttpMethod::Patch),
        ("DELETE", HttpMethod::Delete),
        ("HEAD", HttpMethod::Head),
    ];

    pub fn as_str(self) -> &'static str {
        HttpMethod::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map(|(name, _)| *name)
            .unwrap_or("GET")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Form,
    /// The body rendered to text and sent as it is (Corezoid's `format: raw`); the
    /// `Content-Type` is whatever `headers` say.
    Raw,
    /// Corezoid's own format (`format: corezoid`): the body is sent as the `data` of one
    /// op, `{"ops":[{"type":"data","ref","obj_id","conv_id","node_id","data","extra"}]}`,
    /// and the reply must be `{"request_proc":"ok","ops":[{"proc":"ok","res_data":{…}}]}`,
    /// whose `res_data` is what the task gets.
    Corezoid,
    /// The body (a mapping) written as XML (Corezoid's api call with an XML content
    /// type): keys are elements, `@name` keys attributes, `#value` the text; a key that is
    /// not an XML name is an error of the node, values are escaped.
    Xml,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    attempts: u32,
    backoff: Option<Value>,
    max: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiCall {
    method: Option<String>,
    url: String,
    #[serde(default)]
    query: IndexMap<String, Value>,
    #[serde(default)]
    headers: IndexMap<String, Value>,
    body: Option<Value>,
    format: Option<String>,
    request_timeout: Option<Value>,
    response: Option<IndexMap<String, Value>>,
    success_codes: Option<Vec<u16>>,
    retry: Option<RawRetry>,
    idempotency_key: Option<String>,
    idempotency_header: Option<String>,
    concurrency: Option<u32>,
    max_response_bytes: Option<u64>,
    send_sys: Option<Value>,
    require_body: Option<bool>,
    debug: Option<bool>,
    next: String,
    on_error: Option<String>,
}

pub(super) fn load(loader: &mut Loader<'_>, id: &str, rest: serde_yaml::Value) -> Option<ApiCall> {
    load_api_call(loader, id, rest)
}

fn load_api_call(loader: &mut Loader<'_>, id: &str, rest: serde_yaml::Value) -> Option<ApiCall> {
    let node = Some(id);
    let raw: RawApiCall = loader.read(node, "", rest)?;
    let mut ok = true;
    let method = match raw.method.as_deref().map(str::to_ascii_uppercase) {
        None => Some(HttpMethod::Get),
        Some(name) => {
            let method = HttpMethod::ALL
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, m)| *m);
            if method.is_none() {
                loader.error(
                    node,
                    Some("method"),
                    format!(
                        "unknown HTTP method `{name}` (one of {})",
                        HttpMethod::ALL.map(|(n, _)| n).join(", ")
                    ),
                );
            }
            method
        }
    };
    let url = loader.template(node, "url", &raw.url);
    if raw.url.trim().is_empty() {
        loader.error(node, Some("url"), "the URL is empty".into());
        ok = false;
    }
    let mut query = IndexMap::new();
    for (key, value) in &raw.query {
        match loader.value_template(node, &format!("query.{key}"), value) {
            Some(t) => {
                query.insert(key.clone(), t);
            }
            None => ok = false,
        }
    }
    let mut headers = IndexMap::new();
    for (key, value) in &raw.headers {
        let field = format!("headers.{key}");
        match scalar_text(value) {
            Some(text) => match loader.template(node, &field, &text) {
                Some(t) => {
                    headers.insert(key.clone(), t);
                }
                None => ok = false,
            },
            None => {
                loader.error(node, Some(&field), "a header value is text".into());
                ok = false;
            }
        }
    }
    let format = match raw.format.as_deref() {
        None | Some("json") => Some(BodyFormat::Json),
        Some("form") => Some(BodyFormat::Form),
        Some("raw") => Some(BodyFormat::Raw),
        Some("corezoid") => Some(BodyFormat::Corezoid),
        Some("xml") => Some(BodyFormat::Xml),
        Some(other) => {
            loader.error(
                node,
                Some("format"),
                format!("unknown body format `{other}` (json, form, raw, corezoid or xml)"),
            );
            None
        }
    };
    let body = match &raw.body {
        None => None,
        Some(body) => {
            if format == Some(BodyFormat::Form) && !body.is_object() {
                loader.error(
                    node,
                    Some("body"),
                    "a form body is a mapping of field names to values".into(),
                );
                ok = false;
            }
            if format == Some(BodyFormat::Xml) && !body.is_object() {
                loader.error(
                    node,
                    Some("body"),
                    "an xml body is a mapping of elements (`@name` for attributes, `#value` for text)"
                        .into(),
                );
                ok = false;
            }
            if format == Some(BodyFormat::Corezoid) && !body.is_object() {
                loader.error(
                    node,
                    Some("body"),
                    "a corezoid-format body is a mapping of params (sent as the op's `data`)"
                        .into(),
                );
                ok = false;
            }
            match loader.value_template(node, "body", body) {
                Some(t) => Some(t),
                None => {
                    ok = false;
                    None
                }
            }
        }
    };
    let request_timeout = match &raw.request_timeout {
        None => Some(Duration::from_secs(60)),
        Some(v) => match loader.duration(node, "request_timeout", v) {
            Some(DurationSpec::Fixed(d)) if !d.is_zero() => Some(d),
            Some(_) => {
                loader.error(
                    node,
                    Some("request_timeout"),
                    "a request timeout is a fixed duration above zero, e.g. `30s`".into(),
                );
                None
            }
            None => None,
        },
    };
    let mut response = None;
    if let Some(map) = &raw.response {
        let mut out = IndexMap::new();
        for (key, value) in map {
            match loader.value_template(node, &format!("response.{key}"), value) {
                Some(t) => {
                    out.insert(key.clone(), t);
                }
                None => ok = false,
            }
        }
        response = Some(out);
    }
    let success_codes = raw.success_codes.unwrap_or_else(|| vec![200, 201, 202]);
    if let Some(code) = success_codes.iter().find(|c| !(100..=599).contains(*c)) {
        loader.error(
            node,
            Some("success_codes"),
            format!("`{code}` is not an HTTP status"),
        );
        ok = false;
    }
    let retry = match raw.retry {
        None => None,
        Some(r) => {
            let backoff = match &r.backoff {
                None => Some(Duration::from_secs(1)),
                Some(v) => fixed(loader, id, "retry.backoff", v),
            };
            let max = match &r.max {
                None => Some(Duration::from_secs(60)),
                Some(v) => fixed(loader, id, "retry.max", v),
            };
            if r.attempts == 0 {
                loader.error(
                    node,
                    Some("retry.attempts"),
                    "at least 1 attempt (the first one counts)".into(),
                );
                ok = false;
            }
            match (backoff, max) {
                (Some(backoff), Some(max)) => Some(Retry {
                    attempts: r.attempts,
                    backoff,
                    max,
                }),
                _ => {
                    ok = false;
                    None
                }
            }
        }
    };
    let idempotency_key = match &raw.idempotency_key {
        Some(text) => match loader.template(node, "idempotency_key", text) {
            Some(t) => Some(t),
            None => {
                ok = false;
                None
            }
        },
        None => None,
    };
    if raw.concurrency == Some(0) {
        loader.error(
            node,
            Some("concurrency"),
            "at least 1 request at a time".into(),
        );
        ok = false;
    }
    let send_sys = match &raw.send_sys {
        None | Some(Value::Bool(false)) => None,
        Some(value) => match load_send_sys(loader, id, value) {
            Some(send_sys) => Some(send_sys),
            None => {
                ok = false;
                None
            }
        },
    };
    if !ok {
        return None;
    }
    Some(ApiCall {
        method: method?,
        url: url?,
        query,
        headers,
        body,
        format: format?,
        request_timeout: request_timeout?,
        response,
        success_codes,
        retry,
        idempotency_key,
        idempotency_header: raw
            .idempotency_header
            .unwrap_or_else(|| "Idempotency-Key".into()),
        concurrency: raw.concurrency,
        max_response_bytes: raw.max_response_bytes.unwrap_or(128 * 1024),
        send_sys,
        require_body: raw.require_body.unwrap_or(false),
        debug: raw.debug.unwrap_or(false),
        next: raw.next,
        on_error: raw.on_error,
    })
}

/// `send_sys: true` (no signature) or `send_sys: { secret: "{{param}}" }`. The secret is
/// read from the task or its settings, never written in the file: a literal is refused.
fn load_send_sys(loader: &mut Loader<'_>, id: &str, value: &Value) -> Option<SendSys> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawSendSys {
        secret: Option<String>,
    }
    let node = Some(id);
    if value == &Value::Bool(true) {
        return Some(SendSys { secret: None });
    }
    let yaml = serde_yaml::to_value(value).ok()?;
    let raw: RawSendSys = loader.read(node, "send_sys", yaml)?;
    let secret = match &raw.secret {
        None => None,
        Some(text) => {
            let template = loader.template(node, "send_sys.secret", text)?;
            if template.as_literal().is_some() {
                loader.error(
                    node,
                    Some("send_sys.secret"),
                    "the secret would be in the file: read it from a secret param, e.g. `{{sys_secret}}`"
                        .into(),
                );
                return None;
            }
            Some(template)
        }
    };
    Some(SendSys { secret })
}

fn fixed(loader: &mut Loader<'_>, id: &str, field: &str, value: &Value) -> Option<Duration> {
    match loader.duration(Some(id), field, value)? {
        DurationSpec::Fixed(d) => Some(d),
        DurationSpec::Template(_) => {
            loader.error(
                Some(id),
                Some(field),
                "must be a fixed duration, not a template".into(),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    fn errors(node: &str) -> Vec<String> {
        let yaml = format!(
            "process: p\nparams:\n  key: {{ secret: true, input: [] }}\nnodes:\n  start: {{ type: start, next: call }}\n  call: {{ type: api_call, url: \"http://127.0.0.1:1/\", next: done, {node} }}\n  done: {{ type: final }}\n"
        );
        crate::check("t", &yaml)
            .errors()
            .map(|d| d.to_string())
            .collect()
    }

    #[test]
    fn send_sys_xml_require_body_and_debug_load_and_bad_ones_are_named() {
        let good = errors(
            "method: POST, format: xml, body: { a: { \"@b\": c } }, send_sys: { secret: \"{{key}}\" }, require_body: true, debug: true",
        );
        assert!(good.is_empty(), "{good:?}");
        assert!(errors("send_sys: true").is_empty());
        let literal = errors("send_sys: { secret: hunter2 }");
        assert!(
            literal
                .iter()
                .any(|e| e.contains("send_sys.secret") && e.contains("would be in the file")),
            "{literal:?}"
        );
        let unknown = errors("send_sys: { key: \"{{key}}\" }");
        assert!(
            unknown.iter().any(|e| e.contains("send_sys")),
            "{unknown:?}"
        );
        let list = errors("method: POST, format: xml, body: [1, 2]");
        assert!(
            list.iter().any(|e| e.contains("an xml body is a mapping")),
            "{list:?}"
        );
    }
}
