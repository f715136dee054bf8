//! The HTTP side of `api_call`: build the request, send it, read a bounded reply, and
//! classify failures the Corezoid way (`hardware`: we could not do it; `software`: the
//! other side answered badly), marking those worth retrying.

use std::time::{Duration, Instant};

use conveyor_model::{BodyFormat, HttpMethod};
use serde_json::{Map, Value};

/// A rendered request.
pub(crate) struct Request {
    pub method: HttpMethod,
    pub url: reqwest::Url,
    pub headers: Vec<(String, String)>,
    pub body: Option<(BodyFormat, Value)>,
    pub timeout: Duration,
    pub max_bytes: u64,
}

/// A reply with a success status.
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Map<String, Value>,
    pub body: Value,
}

/// Why a call failed.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub type_error: &'static str,
    pub tag: &'static str,
    pub description: String,
    pub http_code: Option<u16>,
    /// Timeouts, connection errors, 5xx and 429: worth another attempt.
    pub transient: bool,
    /// The reply body, when it was JSON.
    pub body: Option<Value>,
}

impl Failure {
    pub fn bind(description: String) -> Failure {
        Failure {
            type_error: "hardware",
            tag: "api_bind_error",
            description,
            http_code: None,
            transient: false,
            body: None,
        }
    }
}

/// Text written into a query string or form: strings as they are, the rest as JSON.
pub(crate) fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub(crate) async fn send(
    client: &reqwest::Client,
    request: Request,
    success_codes: &[u16],
) -> (Result<Reply, Failure>, u64) {
    let started = Instant::now();
    let timeout = request.timeout;
    let result = match tokio::time::timeout(timeout, exchange(client, request, success_codes)).await
    {
        Ok(result) => result,
        Err(_) => Err(Failure {
            type_error: "hardware",
            tag: "api_bad_answer",
            description: format!(
                "no complete answer within {}",
                conveyor_model::format_duration(timeout)
            ),
            http_code: None,
            transient: true,
            body: None,
        }),
    };
    (result, started.elapsed().as_millis() as u64)
}

async fn exchange(
    client: &reqwest::Client,
    request: Request,
    success_codes: &[u16],
) -> Result<Reply, Failure> {
    let method = match request.method {
        HttpMethod::Get => reqwest::Method::GET,
        HttpMethod::Post => reqwest::Method::POST,
        HttpMethod::Put => reqwest::Method::PUT,
        HttpMethod::Patch => reqwest::Method::PATCH,
        HttpMethod::Delete => reqwest::Method::DELETE,
        HttpMethod::Head => reqwest::Method::HEAD,
    };
    let mut builder = client.request(method, request.url.clone());
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    match &request.body {
        Some((BodyFormat::Json, body)) => builder = builder.json(body),
        Some((BodyFormat::Form, Value::Object(map))) => {
            let fields: Vec<(String, String)> =
                map.iter().map(|(k, v)| (k.clone(), text_of(v))).collect();
            builder = builder.form(&fields);
        }
        Some((BodyFormat::Form, other)) => {
            return Err(Failure::bind(format!(
                "a form body must be an object, got {other}"
            )));
        }
        None => {}
    }
    let mut response = builder.send().await.map_err(classify)?;
    let status = response.status().as_u16();
    let mut headers = Map::new();
    for (name, value) in response.headers() {
        headers.insert(
            name.as_str().to_string(),
            Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        );
    }
    if let Some(length) = response.content_length()
        && length > request.max_bytes
    {
        return Err(too_big(request.max_bytes, status));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(classify)? {
        if bytes.len() as u64 + chunk.len() as u64 > request.max_bytes {
            return Err(too_big(request.max_bytes, status));
        }
        bytes.extend_from_slice(&chunk);
    }
    let parsed: Option<Value> = if bytes.iter().all(u8::is_ascii_whitespace) {
        Some(Value::Object(Map::new()))
    } else {
        serde_json::from_slice(&bytes).ok()
    };
    if !success_codes.contains(&status) {
        return Err(Failure {
            type_error: "software",
            tag: "api_bad_answer",
            description: describe_error(status, parsed.as_ref(), &bytes),
            http_code: Some(status),
            transient: status >= 500 || status == 429,
            body: parsed,
        });
    }
    match parsed {
        Some(body @ (Value::Object(_) | Value::Array(_))) => Ok(Reply {
            status,
            headers,
            body,
        }),
        Some(other) => Err(Failure {
            type_error: "software",
            tag: "api_no_valid_json",
            description: format!(
                "the reply is JSON but not an object or array: {}",
                shorten(&other.to_string())
            ),
            http_code: Some(status),
            transient: false,
            body: None,
        }),
        None => Err(Failure {
            type_error: "software",
            tag: "api_no_valid_json",
            description: format!(
                "the reply is not JSON: {}",
                shorten(&String::from_utf8_lossy(&bytes))
            ),
            http_code: Some(status),
            transient: false,
            body: None,
        }),
    }
}

fn too_big(max: u64, status: u16) -> Failure {
    Failure {
        type_error: "software",
        tag: "api_task_size_overflow_limit",
        description: format!("the reply is larger than the {max} bytes allowed"),
        http_code: Some(status),
        transient: false,
        body: None,
    }
}

/// `HTTP 400: invalid_grant (…)` from a JSON error body, else the start of the text.
fn describe_error(status: u16, body: Option<&Value>, bytes: &[u8]) -> String {
    if let Some(Value::Object(map)) = body {
        // MessageBird: {"errors":[{"code":2,"description":"…"}]}
        if let Some(first) = map.get("errors").and_then(|e| e.get(0))
            && let Some(description) = first.get("description").map(text_of)
        {
            return format!("HTTP {status}: {description}");
        }
        let error = map
            .get("error")
            .map(text_of)
            .filter(|s| !s.is_empty() && s != "{}");
        let description = ["error_description", "description", "message"]
            .iter()
            .find_map(|k| map.get(*k).map(text_of))
            .filter(|s| !s.is_empty());
        match (error, description) {
            (Some(e), Some(d)) => return format!("HTTP {status}: {e} ({d})"),
            (Some(e), None) => return format!("HTTP {status}: {e}"),
            (None, Some(d)) => return format!("HTTP {status}: {d}"),
            (None, None) => {}
        }
    }
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {}", shorten(text))
    }
}

fn shorten(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 200 {
        format!("{}…", one_line.chars().take(200).collect::<String>())
    } else {
        one_line
    }
}

fn classify(error: reqwest::Error) -> Failure {
    // The chain of causes says what really happened (DNS, refused, TLS, …).
    let mut description = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !description.contains(&text) {
            description = format!("{description}: {text}");
        }
        source = cause.source();
    }
    let (tag, transient) = if error.is_timeout() || error.is_connect() {
        ("api_bad_answer", true)
    } else if error.is_redirect() {
        ("api_bad_answer", false)
    } else if error.is_body() || error.is_decode() {
        ("api_bad_answer", true)
    } else {
        ("api_fatal_error", false)
    };
    Failure {
        type_error: if error.is_redirect() {
            "software"
        } else {
            "hardware"
        },
        tag,
        description,
        http_code: error.status().map(|s| s.as_u16()),
        transient,
        body: None,
    }
}
