//! Faults from the outside world: each misbehaving peer (refusing, unresolvable, not
//! speaking TLS, silent, trickling, huge, not JSON, redirecting forever, failing with an
//! HTML page) routes the `api_call` to its error branch with Corezoid's tag and a
//! description a person understands, and the engine goes on working afterwards.
//!
//! Every server here listens on 127.0.0.1; the misbehaving ones are raw TCP servers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use conveyor_store::{TaskRecord, TaskStatus};
use serde_json::json;

use crate::engine::Engine;
use crate::support::http_server;

/// A process whose one `api_call` goes to `url`, `done` on success, `failed` on error.
/// Transient failures are retried once, a second later.
fn process(url: &str, extra: &str) -> String {
    format!(
        r#"
process: faulty
nodes:
  start: {{ type: start, next: call }}
  call:
    type: api_call
    url: "{url}"
    retry: {{ attempts: 2, backoff: 1s }}
{extra}
    next: done
    on_error: failed
  done: {{ type: final }}
  failed: {{ type: final, status: error }}
"#
    )
}

/// Runs one task through a process calling `url`; returns it once it has ended. When
/// the failure is `retried`, the task must first wait for its retry.
async fn call(e: &Engine, url: &str, extra: &str, retried: bool) -> TaskRecord {
    e.clone_process(&process(url, extra), Some("faulty"));
    e.add("@faulty", Some("t"), json!({}));
    e.idle().await;
    let task = e.task("@faulty", "t");
    if retried {
        assert_eq!(
            (task.node.as_str(), task.status),
            ("call", TaskStatus::Waiting),
            "a transient failure waits for its retry: {:?}",
            task.data
        );
        e.advance(Duration::from_secs(1)).await;
        return e.task("@faulty", "t");
    }
    task
}

/// The task went to the error branch with these Corezoid keys; returns the description.
#[track_caller]
fn assert_failed(task: &TaskRecord, type_error: &str, tag: &str) -> String {
    assert_eq!(
        (task.node.as_str(), task.status),
        ("failed", TaskStatus::Failed),
        "{:?}",
        task.data
    );
    assert_eq!(
        task.data["__conveyor_api_return_type_error__"], type_error,
        "{:?}",
        task.data
    );
    assert_eq!(
        task.data["__conveyor_api_return_type_tag__"], tag,
        "{:?}",
        task.data
    );
    let description = task.data["__conveyor_api_return_description__"]
        .as_str()
        .expect("a description")
        .to_string();
    assert_readable(&description);
    description
}

/// A description for people: one line, not too long, no Rust `Debug` output.
#[track_caller]
fn assert_readable(description: &str) {
    assert!(!description.is_empty());
    assert!(
        description.chars().count() <= 300,
        "too long ({} chars): {description}",
        description.chars().count()
    );
    assert!(!description.contains('\n'), "{description}");
    for debug in [
        "Error {",
        "kind:",
        "Kind(",
        "Custom {",
        "Os {",
        "inner:",
        "source:",
        "Some(",
        "hyper::",
        "reqwest::",
    ] {
        assert!(
            !description.contains(debug),
            "a Debug dump ({debug}): {description}"
        );
    }
}

/// A healthy local API answering `{"ok": true}`.
fn healthy_server() -> String {
    let router = Router::new().route("/ok", get(|| async { axum::Json(json!({"ok": true})) }));
    format!("http://{}/ok", http_server(router))
}

/// After a fault, the engine still runs tasks: one in another process calls a healthy
/// server and completes.
async fn assert_engine_unharmed(e: &Engine) {
    let healthy = healthy_server();
    e.clone_process(
        &format!(
            r#"
process: healthy
nodes:
  start: {{ type: start, next: call }}
  call: {{ type: api_call, url: "{healthy}", next: done, on_error: failed }}
  done: {{ type: final }}
  failed: {{ type: final, status: error }}
"#
        ),
        Some("healthy"),
    );
    e.add("@healthy", Some("after"), json!({}));
    e.idle().await;
    let task = e.task("@healthy", "after");
    assert_eq!(
        (task.node.as_str(), task.status, &task.data["ok"]),
        ("done", TaskStatus::Done, &json!(true)),
        "{:?}",
        task.data
    );
}

/// A raw TCP server on 127.0.0.1: `serve` runs on its own thread for each connection.
fn raw_server(serve: impl Fn(TcpStream) + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let address = listener.local_addr().expect("local address");
    let serve = Arc::new(serve);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let serve = serve.clone();
            std::thread::spawn(move || serve(stream));
        }
    });
    address
}

/// Reads an HTTP request's head (up to the blank line).
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A raw server answering every request with these bytes, then closing.
fn fixed_reply_server(reply: Vec<u8>) -> SocketAddr {
    raw_server(move |mut stream| {
        read_head(&mut stream);
        let _ = stream.write_all(&reply);
    })
}

fn http_reply(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn connection_refused_is_a_hardware_error_and_retried() {
    // Nobody listens on this port (bound, then closed).
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = closed.local_addr().expect("address");
    drop(closed);
    let e = Engine::new();
    let task = call(&e, &format!("http://{address}/x"), "", true).await;
    let description = assert_failed(&task, "hardware", "api_bad_answer");
    assert_eq!(
        description,
        format!("could not connect to {address}: Connection refused")
    );
    assert!(task.data.get("__conveyor_api_return_http_code__").is_none());
    assert_engine_unharmed(&e).await;
}

#[tokio::test]
async fn a_name_that_does_not_resolve_is_a_hardware_error_and_retried() {
    // `.invalid` is reserved (RFC 6761) and never resolves. The system resolver asks
    // only its configured name server, which answers NXDOMAIN at once; the short
    // timeout bounds the test should it not answer at all.
    let e = Engine::new();
    let started = Instant::now();
    let task = call(
        &e,
        "http://nonexistent.invalid/x",
        "    request_timeout: 2s",
        true,
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let description = assert_failed(&task, "hardware", "api_bad_answer");
    assert!(
        description.starts_with("could not resolve nonexistent.invalid: ")
            || description == "no complete answer within 2s",
        "{description}"
    );
    assert_engine_unharmed(&e).await;
}

#[tokio::test]
async fn a_server_that_does_not_speak_tls_is_a_hardware_error_not_retried() {
    // A plain HTTP server, spoken to with https://: it reads the TLS ClientHello (no
    // HTTP head ends in it) and answers as plain HTTP would.
    let address = raw_server(|mut stream| {
        let mut hello = [0u8; 4096];
        let _ = stream.read(&mut hello);
        let _ = stream.write_all(&http_reply("400 Bad Request", "text/plain", "plain"));
    });
    let e = Engine::new();
    let task = call(
        &e,
        &format!("https://{address}/x"),
        "    request_timeout: 5s",
        false,
    )
    .await;
    let description = assert_failed(&task, "hardware", "api_bad_answer");
    assert_eq!(
        description,
        format!("TLS with {address} failed: the server did not answer in TLS (is it plain HTTP?)")
    );
    assert_engine_unharmed(&e).await;
}

#[tokio::test]
async fn a_server_that_accepts_and_never_answers_times_out_and_is_retried() {
    let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let keep = held.clone();
    let address = raw_server(move |stream| {
        // Hold the connection open and say nothing.
        keep.lock().expect("lock").push(stream);
    });
    let e = Engine::new();
    let started = Instant::now();
    let task = call(
        &e,
        &format!("http://{address}/x"),
        "    request_timeout: 300ms",
        true,
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let description = assert_failed(&task, "hardware", "api_bad_answer");
    assert_eq!(description, "no complete answer within 300ms");
    assert_eq!(
        held.lock().expect("lock").len(),
        2,
        "both attempts connected"
    );
    assert_engine_unharmed(&e).await;
}

#[tokio::test]
async fn a_server_that_trickles_its_body_times_out_and_is_retried() {
    let sent = Arc::new(AtomicU32::new(0));
    let counter = sent.clone();
    let body = format!("{{\"padding\": \"{}\"}}", "x".repeat(200));
    let address = raw_server(move |mut stream| {
        read_head(&mut stream);
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if stream.write_all(head.as_bytes()).is_err() {
            return;
        }
        // One byte every 50 ms: the whole body would take over ten seconds.
        for byte in body.bytes() {
            if stream.write_all(&[byte]).is_err() {
                return;
            }
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let e = Engine::new();
    let started = Instant::now();
    let task = call(
        &e,
        &format!("http://{address}/x"),
        "    request_timeout: 1s",
        true,
    )
    .await;
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    let description = assert_failed(&task, "hardware", "api_bad_answer");
    assert!(
        description.starts_with("no complete answer within 1s: HTTP 200 came, then only ")
            && description.ends_with(" of 215 body bytes"),
        "{description}"
    );
    let sent = sent.load(Ordering::SeqCst);
    assert!((10..100).contains(&sent), "{sent} bytes trickled");
    assert_engine_unharmed(&e).await;
}

/// A raw server streaming `total` bytes of a JSON string, chunked (no length given), in
/// 64 KiB writes; counts what it could send and whether the client hung up.
fn huge_server(total: u64, with_length: bool) -> (SocketAddr, Arc<AtomicU64>, Arc<AtomicBool>) {
    let sent = Arc::new(AtomicU64::new(0));
    let cut = Arc::new(AtomicBool::new(false));
    let (counter, hung_up) = (sent.clone(), cut.clone());
    let address = raw_server(move |mut stream| {
        read_head(&mut stream);
        let head = if with_length {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {total}\r\n\r\n"
            )
        } else {
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_string()
        };
        if stream.write_all(head.as_bytes()).is_err() {
            hung_up.store(true, Ordering::SeqCst);
            return;
        }
        let piece = vec![b'x'; 64 * 1024];
        let mut left = total;
        while left > 0 {
            let n = left.min(piece.len() as u64) as usize;
            let result = if with_length {
                stream.write_all(&piece[..n])
            } else {
                stream
                    .write_all(format!("{n:x}\r\n").as_bytes())
                    .and_then(|()| stream.write_all(&piece[..n]))
                    .and_then(|()| stream.write_all(b"\r\n"))
            };
            if result.is_err() {
                hung_up.store(true, Ordering::SeqCst);
                return;
            }
            counter.fetch_add(n as u64, Ordering::SeqCst);
            left -= n as u64;
        }
        if !with_length {
            let _ = stream.write_all(b"0\r\n\r\n");
        }
    });
    (address, sent, cut)
}

#[tokio::test]
async fn a_50_mb_reply_is_refused_without_reading_it_all() {
    const TOTAL: u64 = 50 * 1024 * 1024;
    // Streamed (chunked, so only counting can stop it) and with its length announced.
    for with_length in [false, true] {
        let (address, sent, cut) = huge_server(TOTAL, with_length);
        let e = Engine::new();
        let started = Instant::now();
        let task = call(
            &e,
            &format!("http://{address}/x"),
            "    request_timeout: 20s\n    max_response_bytes: 1048576",
            false,
        )
        .await;
        let elapsed = started.elapsed();
        let description = assert_failed(&task, "software", "api_task_size_overflow_limit");
        assert_eq!(
            description,
            "the reply is larger than the 1048576 bytes allowed"
        );
        assert_eq!(task.data["__conveyor_api_return_http_code__"], 200);
        // The server finds the connection closed long before it has sent 50 MB: what it
        // got out is the 1 MiB read plus what the sockets' buffers held (a few MB).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cut.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(cut.load(Ordering::SeqCst), "the client hung up");
        let sent = sent.load(Ordering::SeqCst);
        assert!(sent < TOTAL / 3, "{sent} bytes sent before the hang-up");
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
        assert_engine_unharmed(&e).await;
    }
}

#[tokio::test]
async fn invalid_json_is_api_no_valid_json() {
    let address = fixed_reply_server(http_reply(
        "200 OK",
        "application/json",
        r#"{"access_token": "AT", "expires_in": "#,
    ));
    let e = Engine::new();
    let task = call(&e, &format!("http://{address}/x"), "", false).await;
    let description = assert_failed(&task, "software", "api_no_valid_json");
    assert_eq!(
        description,
        r#"the reply is not JSON: {"access_token": "AT", "expires_in":"#
    );
    assert_eq!(task.data["__conveyor_api_return_http_code__"], 200);
    assert_engine_unharmed(&e).await;
}

#[tokio::test]
async fn a_json_array_reply_is_a_success_in_conveyor_api_array() {
    let address = fixed_reply_server(http_reply(
        "200 OK",
        "application/json",
        r#"[{"id": 1}, {"id": 2}]"#,
    ));
    let e = Engine::new();
    let task = call(&e, &format!("http://{address}/x"), "", false).await;
    assert_eq!(
        (task.node.as_str(), task.status),
        ("done", TaskStatus::Done)
    );
    assert_eq!(
        task.data["__conveyor_api_array__"],
        json!([{"id": 1}, {"id": 2}])
    );
    assert!(task.data.get("__conveyor_api_return_type_tag__").is_none());
    assert_engine_unharmed(&e).await;
}

#[tokio::test]
async fn a_json_scalar_reply_is_api_no_valid_json() {
    for body in ["42", "\"ok\"", "true", "null"] {
        let address = fixed_reply_server(http_reply("200 OK", "application/json", body));
        let e = Engine::new();
        let task = call(&e, &format!("http://{address}/x"), "", false).await;
        let description = assert_failed(&task, "software", "api_no_valid_json");
        assert_eq!(
            description,
            format!("the reply is JSON but not an object or array: {body}")
        );
        assert_engine_unharmed(&e).await;
    }
}

#[tokio::test]
async fn a_redirect_loop_stops_after_five_redirects_not_retried() {
    let hits = Arc::new(AtomicU32::new(0));
    let counter = hits.clone();
    let address = raw_server(move |mut stream| {
        read_head(&mut stream);
        counter.fetch_add(1, Ordering::SeqCst);
        let _ = stream.write_all(
            b"HTTP/1.1 302 Found\r\nLocation: /loop?token=s3cret\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    });
    let e = Engine::new();
    let task = call(&e, &format!("http://{address}/loop"), "", false).await;
    let description = assert_failed(&task, "software", "api_bad_answer");
    assert_eq!(
        description,
        format!("too many redirects: gave up after 5, the last to http://{address}/loop"),
        "named without its query"
    );
    // The first request and five redirects.
    assert_eq!(hits.load(Ordering::SeqCst), 6);
    assert_engine_unharmed(&e).await;
}

#[tokio::test]
async fn a_500_with_an_html_page_is_retried_then_a_software_error() {
    let hits = Arc::new(AtomicU32::new(0));
    let counter = hits.clone();
    let page = format!(
        "<!DOCTYPE html>\n<html>\n<head><title>500 Internal Server Error</title>\n<style>body {{ color: red; }}</style></head>\n<body>\n<h1>Internal Server Error</h1>\n<script>track();</script>\n<p>{}</p>\n</body>\n</html>\n",
        "The server encountered an internal error &amp; could not finish. ".repeat(100)
    );
    let address = raw_server(move |mut stream| {
        read_head(&mut stream);
        counter.fetch_add(1, Ordering::SeqCst);
        let _ = stream.write_all(&http_reply("500 Internal Server Error", "text/html", &page));
    });
    let e = Engine::new();
    e.clone_process(
        &process(
            &format!("http://{address}/x"),
            "    retry: { attempts: 3, backoff: 10s, max: 1m }",
        )
        .replace("    retry: { attempts: 2, backoff: 1s }\n", ""),
        Some("faulty"),
    );
    e.add("@faulty", Some("t"), json!({}));
    e.idle().await;
    assert_eq!(e.task("@faulty", "t").status, TaskStatus::Waiting);
    e.advance(Duration::from_secs(10)).await;
    e.advance(Duration::from_secs(20)).await;
    let task = e.task("@faulty", "t");
    assert_eq!(hits.load(Ordering::SeqCst), 3, "three attempts");
    let description = assert_failed(&task, "software", "api_bad_answer");
    assert_eq!(task.data["__conveyor_api_return_http_code__"], 500);
    // The page's words, not its markup, shortened to 200 characters.
    assert!(
        description.starts_with(
            "HTTP 500: 500 Internal Server Error: Internal Server Error The server encountered an internal error & could not finish. The server"
        ),
        "{description}"
    );
    assert!(description.ends_with('…'), "{description}");
    assert_eq!(description.chars().count(), "HTTP 500: ".len() + 201);
    assert!(task.data.get("__conveyor_api_return_body__").is_none());
    assert_engine_unharmed(&e).await;
}

#[tokio::test]
async fn a_server_that_hangs_up_without_answering_is_a_hardware_error_and_retried() {
    let address = raw_server(|mut stream| {
        read_head(&mut stream);
    });
    let e = Engine::new();
    let task = call(&e, &format!("http://{address}/x"), "", true).await;
    let description = assert_failed(&task, "hardware", "api_bad_answer");
    assert_eq!(
        description,
        format!("{address} closed the connection without answering")
    );
    assert_engine_unharmed(&e).await;
}

#[tokio::test]
async fn a_server_that_hangs_up_mid_body_is_a_hardware_error_and_retried() {
    let address = fixed_reply_server(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\": "
            .to_vec(),
    );
    let e = Engine::new();
    let task = call(&e, &format!("http://{address}/x"), "", true).await;
    let description = assert_failed(&task, "hardware", "api_bad_answer");
    assert_eq!(
        description,
        format!("the reply from {address} broke off: end of file before message length reached")
    );
    assert_engine_unharmed(&e).await;
}

#[tokio::test]
async fn a_server_that_does_not_speak_http_is_a_software_error_not_retried() {
    let address = fixed_reply_server(b"SSH-2.0-OpenSSH_9.6\r\n".to_vec());
    let e = Engine::new();
    let task = call(&e, &format!("http://{address}/x"), "", false).await;
    let description = assert_failed(&task, "software", "api_bad_answer");
    assert_eq!(
        description,
        format!("the reply from {address} is not HTTP: invalid HTTP version parsed")
    );
    assert_engine_unharmed(&e).await;
}
