//! What every request passes and every response carries.
//!
//! * `Host` must be one the server answers to (its loopback names and bound address
//!   with its port, and each `--public-host`): a page on another site that had its DNS
//!   name point at 127.0.0.1 (DNS rebinding) sends its own name and gets 421.
//! * Cross-site requests (a foreign `Origin`, or `Sec-Fetch-Site: cross-site` /
//!   `same-site`) are refused with 403 everywhere but the task API and direct URLs
//!   (which other sites and OAuth redirects call by design) and the static dashboard
//!   page: no other site may read `/metrics`, log in, or call the dashboard's API. No
//!   response ever carries `Access-Control-Allow-Origin`.
//! * Every response gets a Content-Security-Policy without inline script,
//!   `frame-ancestors 'none'` and `X-Frame-Options: DENY`, `X-Content-Type-Options:
//!   nosniff`, `Referrer-Policy: no-referrer` and `Cache-Control: no-store`.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::{AppState, error};

pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

pub(crate) async fn guard(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = match check(&state, &request) {
        Ok(()) => next.run(request).await,
        Err(refusal) => *refusal,
    };
    secure(response.headers_mut());
    response
}

fn check(state: &AppState, request: &Request) -> Result<(), Box<Response>> {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    let Some(host) = host else {
        return Err(Box::new(error(
            StatusCode::MISDIRECTED_REQUEST,
            "the request has no Host header",
        )));
    };
    if !host_allowed(&state.allowed_hosts, &host) {
        return Err(Box::new(error(
            StatusCode::MISDIRECTED_REQUEST,
            &format!(
                "this server does not answer to the host `{host}` (it answers to {}); to publish it under another name, start it with --public-host",
                state.allowed_hosts.join(", ")
            ),
        )));
    }
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or("");
    let open_to_other_sites = route.starts_with("/api/")
        || (request.method() == Method::GET
            && matches!(route, "/" | "/ui/dashboard.js" | "/ui/dashboard.css"));
    if !open_to_other_sites && let Some(why) = cross_site(&state.allowed_hosts, headers) {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            &format!("cross-site requests are refused here ({why})"),
        )));
    }
    Ok(())
}

fn host_allowed(allowed: &[String], host: &str) -> bool {
    let host = host.trim().to_ascii_lowercase();
    allowed.contains(&host)
}

/// Why the request comes from another site, if it does.
fn cross_site(allowed: &[String], headers: &HeaderMap) -> Option<String> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && matches!(site, "cross-site" | "same-site")
    {
        return Some(format!("Sec-Fetch-Site: {site}"));
    }
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().unwrap_or("");
    let host = text
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'))
        .unwrap_or("");
    if host.is_empty() || !host_allowed(allowed, host) {
        return Some(format!("Origin: {text}"));
    }
    None
}

fn secure(headers: &mut HeaderMap) {
    let set = |headers: &mut HeaderMap, name: HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        CONTENT_SECURITY_POLICY,
    );
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::CACHE_CONTROL, "no-store");
    headers.remove(header::ACCESS_CONTROL_ALLOW_ORIGIN);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        crate::allowed_hosts(
            "127.0.0.1:7878".parse().unwrap(),
            &["Conveyor.Example.com".to_string()],
        )
    }

    #[test]
    fn hosts() {
        let allowed = allowed();
        for ok in [
            "127.0.0.1:7878",
            "localhost:7878",
            "LOCALHOST:7878",
            "[::1]:7878",
            "conveyor.example.com",
        ] {
            assert!(host_allowed(&allowed, ok), "{ok}");
        }
        for bad in [
            "127.0.0.1:7879",
            "localhost",
            "evil.example:7878",
            "conveyor.example.com:8080",
            "",
        ] {
            assert!(!host_allowed(&allowed, bad), "{bad}");
        }
    }

    #[test]
    fn origins() {
        let allowed = allowed();
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (k, v) in pairs {
                map.insert(*k, HeaderValue::from_static(v));
            }
            map
        };
        assert_eq!(cross_site(&allowed, &headers(&[])), None);
        assert_eq!(
            cross_site(
                &allowed,
                &headers(&[
                    ("origin", "http://127.0.0.1:7878"),
                    ("sec-fetch-site", "same-origin")
                ])
            ),
            None
        );
        assert_eq!(
            cross_site(
                &allowed,
                &headers(&[("origin", "https://conveyor.example.com")])
            ),
            None
        );
        assert!(cross_site(&allowed, &headers(&[("origin", "http://evil.example")])).is_some());
        assert!(cross_site(&allowed, &headers(&[("origin", "null")])).is_some());
        assert!(cross_site(&allowed, &headers(&[("sec-fetch-site", "cross-site")])).is_some());
    }
}
