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
    /// Corezoid's `send_sys`: what is added to the URL once the body is encoded.
    pub sys: Option<Sys>,
    /// An empty reply to 200 or 201 is an error (`rfc_format`).
    pub require_body: bool,
    /// Copy the reply's headers into [`Reply::headers`] (the response mapping reads
    /// them); otherwise they are left empty.
    pub want_headers: bool,
}

/// What `send_sys` adds to the URL: `conv_id`, `conv_time` and, with a secret,
/// `conv_signature` = hex(sha1(conv_time + secret + body + secret)) over the body bytes
/// as sent (Corezoid's API signature). The secret is used for the hash only.
pub(crate) struct Sys {
    pub conv_id: u64,
    pub time: i64,
    pub secret: Option<String>,
}

/// What one exchange measured (for `debug`): real time, and bytes each way.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Measured {
    pub millis: u64,
    pub sent: u64,
    pub received: u64,
}

/// A reply with a success status.
pub(crate) struct Reply {
    pub status: u16,
    /// Empty unless [`Request::want_headers`].
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

/// [`text_of`] a value that is not needed after (a string is moved, not copied).
pub(crate) fn into_text(value: Value) -> String {
    match value {
        Value::String(s) => s,
        other => text_of(&other),
    }
}

/// Fixed URLs of API calls, parsed once: parsing one (with its host's IDNA mapping)
/// costs more than the rest of building a request. Bounded: past [`Urls::MOST`]
/// different ones (processes come and go), it starts again empty.
#[derive(Default)]
pub(crate) struct Urls(std::sync::Mutex<crate::FastMap<String, reqwest::Url>>);

impl Urls {
    const MOST: usize = 4096;

    /// `text` parsed, from the cache when it was parsed before.
    pub(crate) fn parse(&self, text: &str) -> Result<reqwest::Url, String> {
        if let Ok(cache) = self.0.lock()
            && let Some(url) = cache.get(text)
        {
            return Ok(url.clone());
        }
        let url = reqwest::Url::parse(text).map_err(|e| e.to_string())?;
        if let Ok(mut cache) = self.0.lock() {
            if cache.len() >= Self::MOST {
                cache.clear();
            }
            cache.insert(text.to_string(), url.clone());
        }
        Ok(url)
    }
}

pub(crate) async fn send(
    client: &reqwest::Client,
    request: Request,
    success_codes: &[u16],
) -> (Result<Reply, Failure>, Measured) {
    let started = Instant::now();
    let timeout = request.timeout;
    let mut progress = Progress::default();
    let outcome = tokio::time::timeout(
        timeout,
        exchange(client, request, success_codes, &mut progress),
    )
    .await;
    let result = match outcome {
        Ok(result) => result,
        Err(_) => Err(Failure {
            type_error: "hardware",
            tag: "api_bad_answer",
            description: progress.timed_out(timeout),
            http_code: None,
            transient: true,
            body: None,
        }),
    };
    let measured = Measured {
        millis: started.elapsed().as_millis() as u64,
        sent: progress.sent,
        received: progress.received,
    };
    (result, measured)
}

/// How far an exchange got: said when it runs out of time.
#[derive(Default)]
struct Progress {
    status: Option<u16>,
    length: Option<u64>,
    received: u64,
    sent: u64,
}

impl Progress {
    /// `no complete answer within 1s`, and what did arrive when the reply had begun (a
    /// server trickling its body is told apart from one that never answers).
    fn timed_out(&self, timeout: Duration) -> String {
        let within = format!(
            "no complete answer within {}",
            conveyor_model::format_duration(timeout)
        );
        match (self.status, self.length) {
            (None, _) => within,
            (Some(status), Some(length)) => format!(
                "{within}: HTTP {status} came, then only {} of {length} body bytes",
                self.received
            ),
            (Some(status), None) => format!(
                "{within}: HTTP {status} came, then only {} body bytes",
                self.received
            ),
        }
    }
}

async fn exchange(
    client: &reqwest::Client,
    request: Request,
    success_codes: &[u16],
    progress: &mut Progress,
) -> Result<Reply, Failure> {
    let method = match request.method {
        HttpMethod::Get => reqwest::Method::GET,
        HttpMethod::Post => reqwest::Method::POST,
        HttpMethod::Put => reqwest::Method::PUT,
        HttpMethod::Patch => reqwest::Method::PATCH,
        HttpMethod::Delete => reqwest::Method::DELETE,
        HttpMethod::Head => reqwest::Method::HEAD,
    };
    let (body, content_type) = match &request.body {
        Some(body) => {
            let (bytes, content_type) = encode_body(body)?;
            (Some(bytes), content_type)
        }
        None => (None, None),
    };
    let mut url = request.url.clone();
    if let Some(sys) = &request.sys {
        let time = sys.time.to_string();
        let mut pairs = url.query_pairs_mut();
        pairs.append_pair("conv_id", &sys.conv_id.to_string());
        pairs.append_pair("conv_time", &time);
        if let Some(secret) = &sys.secret {
            use sha1::Digest as _;
            let mut hasher = sha1::Sha1::new();
            hasher.update(time.as_bytes());
            hasher.update(secret.as_bytes());
            hasher.update(body.as_deref().unwrap_or_default());
            hasher.update(secret.as_bytes());
            pairs.append_pair("conv_signature", &hex::encode(hasher.finalize()));
        }
    }
    let mut builder = client.request(method, url);
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    if let Some(bytes) = body {
        let typed = request
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
        if let Some(content_type) = content_type.filter(|_| !typed) {
            builder = builder.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        progress.sent = bytes.len() as u64;
        builder = builder.body(bytes);
    }
    let mut response = builder
        .send()
        .await
        .map_err(|e| classify(e, &request.url))?;
    let status = response.status().as_u16();
    progress.status = Some(status);
    progress.length = response.content_length();
    let xml = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_xml);
    let mut headers = Map::new();
    if request.want_headers {
        for (name, value) in response.headers() {
            headers.insert(
                name.as_str().to_string(),
                Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()),
            );
        }
    }
    if let Some(length) = response.content_length()
        && length > request.max_bytes
    {
        return Err(too_big(request.max_bytes, status));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| classify(e, &request.url))?
    {
        if bytes.len() as u64 + chunk.len() as u64 > request.max_bytes {
            return Err(too_big(request.max_bytes, status));
        }
        bytes.extend_from_slice(&chunk);
        progress.received = bytes.len() as u64;
    }
    let empty = bytes.iter().all(u8::is_ascii_whitespace);
    if empty && request.require_body && (status == 200 || status == 201) {
        return Err(Failure {
            type_error: "software",
            tag: "api_no_valid_json",
            description: format!(
                "the reply to HTTP {status} is empty (rfc_format: a 200 or 201 reply has a body)"
            ),
            http_code: Some(status),
            transient: false,
            body: None,
        });
    }
    // An XML reply (by its Content-Type) is read into JSON, as Corezoid does.
    let parsed: Result<Value, String> = if empty {
        Ok(Value::Object(Map::new()))
    } else if xml {
        crate::xml::from_xml(&bytes).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    };
    if !success_codes.contains(&status) {
        return Err(Failure {
            type_error: "software",
            tag: "api_bad_answer",
            description: describe_error(status, parsed.as_ref().ok(), &bytes),
            http_code: Some(status),
            transient: status >= 500 || status == 429,
            body: parsed.ok(),
        });
    }
    match parsed {
        Ok(body @ (Value::Object(_) | Value::Array(_))) => Ok(Reply {
            status,
            headers,
            body,
        }),
        Ok(other) => Err(Failure {
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
        Err(why) if xml => Err(Failure {
            type_error: "software",
            tag: "api_no_valid_json",
            description: format!(
                "the reply is XML that cannot be read ({why}): {}",
                shorten(&String::from_utf8_lossy(&bytes))
            ),
            http_code: Some(status),
            transient: false,
            body: None,
        }),
        Err(_) => Err(Failure {
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

/// Whether a `Content-Type` names XML: `application/xml`, `text/xml`, or any
/// `…+xml` (`application/soap+xml`), parameters aside.
fn is_xml(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let ends_xml = essence.len() >= 4
        && essence.is_char_boundary(essence.len() - 4)
        && essence[essence.len() - 4..].eq_ignore_ascii_case("+xml");
    essence.eq_ignore_ascii_case("application/xml")
        || essence.eq_ignore_ascii_case("text/xml")
        || ends_xml
}

/// Why a body could not be encoded: the request is not sent.
enum BodyError {
    /// Not of the shape its format needs (`api_bind_error`).
    Bind(String),
    /// Not writable as XML (`api_wrong_convert_param`).
    Xml(crate::xml::XmlError),
}

impl From<BodyError> for Failure {
    fn from(error: BodyError) -> Failure {
        match error {
            BodyError::Bind(description) => Failure::bind(description),
            BodyError::Xml(e) => Failure {
                type_error: "software",
                tag: "api_wrong_convert_param",
                description: format!("the body cannot be written as XML: {e}"),
                http_code: None,
                transient: false,
                body: None,
            },
        }
    }
}

/// The bytes of a body as sent, and the content type its format implies (a `Content-Type`
/// in `headers` wins; a raw body has none of its own).
fn encode_body(
    (format, body): &(BodyFormat, Value),
) -> Result<(Vec<u8>, Option<&'static str>), BodyError> {
    match (format, body) {
        (BodyFormat::Json | BodyFormat::Corezoid, body) => serde_json::to_vec(body)
            .map(|bytes| (bytes, Some("application/json")))
            .map_err(|e| BodyError::Bind(format!("the body is not JSON: {e}"))),
        (BodyFormat::Form, Value::Object(map)) => {
            // The form encoding of a query string (what browsers and reqwest send).
            let mut url = reqwest::Url::parse("http://form.invalid/")
                .map_err(|e| BodyError::Bind(e.to_string()))?;
            url.query_pairs_mut()
                .extend_pairs(map.iter().map(|(k, v)| (k.clone(), text_of(v))));
            let text = url.query().unwrap_or_default().to_string();
            Ok((text.into_bytes(), Some("application/x-www-form-urlencoded")))
        }
        (BodyFormat::Form, other) => Err(BodyError::Bind(format!(
            "a form body must be an object, got {other}"
        ))),
        (BodyFormat::Raw, body) => Ok((text_of(body).into_bytes(), None)),
        (BodyFormat::Xml, body) => crate::xml::to_xml(body)
            .map(|text| (text.into_bytes(), Some("application/xml")))
            .map_err(BodyError::Xml),
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
        let said = if let Some(first) = map.get("errors").and_then(|e| e.get(0))
            && let Some(description) = first.get("description").map(text_of)
        {
            Some(description)
        } else {
            let error = map
                .get("error")
                .map(text_of)
                .filter(|s| !s.is_empty() && s != "{}");
            let description = ["error_description", "description", "message"]
                .iter()
                .find_map(|k| map.get(*k).map(text_of))
                .filter(|s| !s.is_empty());
            match (error, description) {
                (Some(e), Some(d)) => Some(format!("{e} ({d})")),
                (Some(e), None) => Some(e),
                (None, Some(d)) => Some(d),
                (None, None) => None,
            }
        };
        // Shortened too: a server's error text may be of any length.
        if let Some(said) = said {
            return format!("HTTP {status}: {}", shorten(&said));
        }
    }
    let text = String::from_utf8_lossy(bytes);
    let text = html_text(&text).unwrap_or_else(|| text.trim().to_string());
    if text.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {}", shorten(&text))
    }
}

/// The words of an HTML page (an error page from a proxy or framework): the title, then
/// the text outside tags, scripts and styles. `None` when the text is not HTML.
fn html_text(text: &str) -> Option<String> {
    let text = text.trim_start();
    // Same byte offsets as `text`: only ASCII letters change.
    let lower = text.to_ascii_lowercase();
    let sniff = &lower[..lower.floor_char_boundary(512)];
    if !text.starts_with('<')
        || !["<html", "<body", "<!doctype html"]
            .iter()
            .any(|t| sniff.contains(t))
    {
        return None;
    }
    let mut title = String::new();
    let mut words = String::new();
    let mut in_title = false;
    let mut at = 0;
    while at < text.len() && words.len() < 4096 {
        let Some(open) = text[at..].find('<').map(|i| at + i) else {
            words.push_str(&text[at..]);
            break;
        };
        if in_title {
            title.push_str(&text[at..open]);
        } else {
            words.push_str(&text[at..open]);
        }
        let close = text[open..].find('>').map_or(text.len(), |i| open + i + 1);
        let tag = lower[open + 1..close].trim_start_matches('/');
        let name: String = tag
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        let closing = lower[open + 1..].starts_with('/');
        at = close;
        if !closing && (name == "script" || name == "style") {
            // Code, not words: skip to its end tag (`<` inside it is not a tag).
            at = lower[at..]
                .find(&format!("</{name}"))
                .map_or(text.len(), |i| at + i);
        } else if name == "title" {
            in_title = !closing;
        } else {
            words.push(' ');
        }
    }
    let decode = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace("&nbsp;", " ")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&amp;", "&")
    };
    let (title, words) = (decode(&title), decode(&words));
    Some(if title.is_empty() || words.starts_with(&title) {
        words
    } else if words.is_empty() {
        title
    } else {
        format!("{title}: {words}")
    })
}

pub(crate) fn shorten(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 200 {
        format!("{}…", one_line.chars().take(200).collect::<String>())
    } else {
        one_line
    }
}

/// How many redirects a call follows (a loop ends there, as `api_bad_answer`).
pub(crate) const MAX_REDIRECTS: usize = 5;

/// A failure before a usable reply, from what really happened under reqwest's error:
/// refused, unresolvable, TLS, cut off, not HTTP, redirected forever. The description
/// names the host (not the URL, whose query may hold secrets) and the cause in words.
fn classify(error: reqwest::Error, url: &reqwest::Url) -> Failure {
    let causes = causes(&error);
    let tls = causes
        .iter()
        .find_map(|c| c.downcast_ref::<rustls::Error>());
    let hyper = causes.iter().find_map(|c| c.downcast_ref::<hyper::Error>());
    let io_kind = causes
        .iter()
        .find_map(|c| c.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    let root = causes
        .last()
        .map(|c| plain(&c.to_string()))
        .unwrap_or_else(|| plain(&error.to_string()));
    // Where it failed (after redirects, the last URL), else where the call went.
    let url = error.url().unwrap_or(url);
    let host = host_of(url);
    let failure = |type_error, tag, description: String, transient| Failure {
        type_error,
        tag,
        description,
        http_code: error.status().map(|s| s.as_u16()),
        transient,
        body: None,
    };
    use std::io::ErrorKind as Io;
    if error.is_redirect() {
        let mut last = url.clone();
        last.set_query(None);
        let description = format!("{root}: gave up after {MAX_REDIRECTS}, the last to {last}");
        return failure("software", "api_bad_answer", description, false);
    }
    if let Some(tls) = tls {
        // A certificate or protocol problem does not mend itself in seconds.
        let description = format!("TLS with {host} failed: {}", tls_text(tls));
        return failure("hardware", "api_bad_answer", description, false);
    }
    if error.is_connect() {
        let description = if causes.iter().any(|c| c.to_string() == "dns error") {
            let name = url.host_str().unwrap_or("the host");
            let why = root.trim_start_matches("failed to lookup address information: ");
            format!("could not resolve {name}: {why}")
        } else {
            format!("could not connect to {host}: {root}")
        };
        return failure("hardware", "api_bad_answer", description, true);
    }
    if error.is_timeout() {
        let description = format!("no answer from {host} in time: {root}");
        return failure("hardware", "api_bad_answer", description, true);
    }
    if error.is_body() || error.is_decode() {
        let description = format!("the reply from {host} broke off: {root}");
        return failure("hardware", "api_bad_answer", description, true);
    }
    if let Some(hyper) = hyper
        && hyper.is_parse()
    {
        let description = format!("the reply from {host} is not HTTP: {hyper}");
        return failure("software", "api_bad_answer", description, false);
    }
    if hyper.is_some_and(hyper::Error::is_incomplete_message) {
        let description = format!("{host} closed the connection without answering");
        return failure("hardware", "api_bad_answer", description, true);
    }
    if matches!(
        io_kind,
        Some(Io::ConnectionReset | Io::ConnectionAborted | Io::BrokenPipe | Io::UnexpectedEof)
    ) {
        let description = format!("{host} dropped the connection: {root}");
        return failure("hardware", "api_bad_answer", description, true);
    }
    let description = format!("the request to {host} failed: {root}");
    failure("hardware", "api_fatal_error", description, false)
}

/// The causes under a reqwest error, outermost first, looking inside `io::Error`s too
/// (their `source` skips the error they wrap).
fn causes(error: &reqwest::Error) -> Vec<&(dyn std::error::Error + 'static)> {
    let mut causes: Vec<&(dyn std::error::Error + 'static)> = Vec::new();
    let mut next = std::error::Error::source(error);
    while let Some(cause) = next
        && causes.len() < 16
    {
        causes.push(cause);
        next = match cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => cause.source(),
        };
    }
    causes
}

/// `host:port` of a URL.
fn host_of(url: &reqwest::Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        _ => "the server".into(),
    }
}

/// An OS error's text without its number: `Connection refused (os error 111)`.
fn plain(text: &str) -> String {
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_string(),
        _ => text.to_string(),
    }
}

/// What went wrong in a TLS handshake, in words.
fn tls_text(error: &rustls::Error) -> String {
    use rustls::{CertificateError as Cert, Error as Tls};
    match error {
        Tls::InvalidMessage(_) => "the server did not answer in TLS (is it plain HTTP?)".into(),
        Tls::InvalidCertificate(Cert::UnknownIssuer) => {
            "its certificate is not signed by a trusted authority".into()
        }
        Tls::InvalidCertificate(Cert::Expired) => "its certificate has expired".into(),
        Tls::InvalidCertificate(Cert::NotValidForName) => {
            "its certificate is not for this host name".into()
        }
        Tls::InvalidCertificate(other) => format!("its certificate is not accepted: {other}"),
        Tls::AlertReceived(alert) => format!("the server refused the handshake ({alert:?})"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{Urls, describe_error, html_text, is_xml, plain};

    #[test]
    fn a_fixed_url_is_parsed_once_and_a_bad_one_is_never_kept() {
        let urls = Urls::default();
        let first = urls.parse("http://127.0.0.1:8080/work?a=1");
        assert_eq!(
            first.as_ref().map(|u| u.as_str()),
            Ok("http://127.0.0.1:8080/work?a=1")
        );
        // The second comes from the cache, and is the same URL.
        assert_eq!(urls.parse("http://127.0.0.1:8080/work?a=1"), first);
        assert_eq!(urls.0.lock().map(|c| c.len()).unwrap_or(0), 1);
        assert!(urls.parse("http//no scheme").is_err());
        assert_eq!(urls.0.lock().map(|c| c.len()).unwrap_or(0), 1);
        // Bounded: past the most it keeps, it starts again.
        for n in 0..Urls::MOST {
            assert!(urls.parse(&format!("http://127.0.0.1/{n}")).is_ok());
        }
        let kept = urls.0.lock().map(|c| c.len()).unwrap_or(0);
        assert!(kept <= Urls::MOST, "{kept}");
    }

    #[test]
    fn an_html_error_page_is_told_by_its_words() {
        let nginx = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>";
        assert_eq!(html_text(nginx).as_deref(), Some("502 Bad Gateway nginx"));
        assert_eq!(
            html_text("<!DOCTYPE html><html><head><style>p{}</style><script>if (a < b) x();</script></head><body><p>Tom &amp; Jerry&nbsp;&lt;3</p></body></html>")
                .as_deref(),
            Some("Tom & Jerry <3")
        );
        assert_eq!(html_text("{\"error\": \"<html>\"}"), None);
        assert_eq!(html_text("plain text"), None);
        // Broken markup: no panic, some words.
        for broken in [
            "<html",
            "<html><title>only a title",
            "<html><script>never closed",
            "<html>é<ü>ñ</",
            "<html><<>>",
        ] {
            let _ = html_text(broken);
        }
        assert_eq!(
            html_text("<html><title>only a title").as_deref(),
            Some("only a title")
        );
    }

    /// Found by `fuzz_error_replies_are_described_in_one_short_line`: the text of a JSON
    /// error body went into the description whole, however long.
    #[test]
    fn regression_a_long_json_error_is_shortened() {
        let body = serde_json::json!({"error": "x".repeat(100_000)});
        let bytes = body.to_string().into_bytes();
        let description = describe_error(400, Some(&body), &bytes);
        assert_eq!(description.chars().count(), "HTTP 400: ".len() + 201);
        let body = serde_json::json!({"error": "invalid_grant", "error_description": "The code\nhas expired"});
        assert_eq!(
            describe_error(400, Some(&body), b""),
            "HTTP 400: invalid_grant (The code has expired)"
        );
    }

    #[test]
    fn xml_replies_are_told_by_their_media_type_in_any_case() {
        for xml in [
            "application/xml",
            "Text/XML; charset=utf-8",
            " application/atom+XML ",
            "application/soap+xml;q=1",
        ] {
            assert!(is_xml(xml), "{xml}");
        }
        for not in [
            "application/json",
            "text/plain; x=+xml",
            "xml",
            "+xm",
            "é+xm",
            "ab\u{e9}l",
        ] {
            assert!(!is_xml(not), "{not}");
        }
    }

    #[test]
    fn os_error_numbers_are_dropped() {
        assert_eq!(
            plain("Connection refused (os error 111)"),
            "Connection refused"
        );
        assert_eq!(plain("dns error"), "dns error");
    }

    /// `default` cases; proptest takes `PROPTEST_CASES` over it.
    fn config(default: u32) -> ProptestConfig {
        ProptestConfig {
            cases: default,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config(500))]

        /// A reply body is whatever a server sends: describing it never panics and stays
        /// one short line.
        #[test]
        fn fuzz_error_replies_are_described_in_one_short_line(
            body in prop_oneof![
                prop::collection::vec(any::<u8>(), 0..600),
                prop::collection::vec(
                    prop::sample::select(&[
                        "<html>", "<!DOCTYPE html>", "<head>", "<title>", "</title>", "<body>",
                        "<script>", "</script>", "<style>", "</style", "<", ">", "</", "&amp;",
                        "&nbsp;", "&lt;", "Bad Gateway", "é", "💥", " ", "\n", "{\"error\":",
                        "\"x\"", "}",
                    ][..]),
                    0..80,
                )
                .prop_map(|t| t.concat().into_bytes()),
                (
                    prop::sample::select(&["error", "error_description", "description", "message", "errors"][..]),
                    "(?s).{0,50}",
                    0usize..5_000,
                )
                    .prop_map(|(key, text, n)| {
                        let text = format!("{text}{}", "x ".repeat(n));
                        let value = if key == "errors" {
                            serde_json::json!([{ "description": text }])
                        } else {
                            serde_json::json!(text)
                        };
                        serde_json::json!({ key: value }).to_string().into_bytes()
                    }),
            ],
            status in 100u16..600,
        ) {
            let parsed = serde_json::from_slice(&body).ok();
            let description = describe_error(status, parsed.as_ref(), &body);
            let prefix = format!("HTTP {status}");
            prop_assert!(description.starts_with(&prefix), "{}", description);
            prop_assert!(!description.contains('\n'));
            prop_assert!(description.chars().count() <= 10 + 201, "{}", description);
            let _ = html_text(&String::from_utf8_lossy(&body));
        }
    }
}
