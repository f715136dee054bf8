//! `intake`: tasks created over loopback HTTP through the real server
//! (`conveyor_http::serve`, with its own accept loop, checks and group commit), 64
//! keep-alive connections, for each store kind side by side:
//!
//! - **floor**: the same server code with a handler that does nothing — what HTTP alone
//!   costs on this machine;
//! - **direct URL**: one create per request (`GET …/public/{id}/{hash}?n=…`), each task
//!   completed through the `pure` process; tasks/s counts from the first request until
//!   the last task has reached its final node, and each request's time to its answer;
//! - **task API v2**: signed requests of 100 creates each, completed the same way.
//!
//! Every answer means "on disk": the server flushes the store (and the signatures file)
//! before it answers, one flush for all requests in a group.
//!
//! The client is a minimal HTTP/1.1 writer and reader over tokio's `TcpStream`, so that
//! on a 2-core machine the client takes as little of the CPU as it can.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use conveyor_runtime::{Runtime, Settings, SystemClock};
use conveyor_store::{StoreKind, StoreOptions};
use serde_json::{Map, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::report::{Figure, Report, Run, Target};
use crate::sys::{self, progress};

/// Connections kept alive, each with one request in flight.
const CONNECTIONS: usize = 64;
/// Creates in one task API request.
const PER_REQUEST: usize = 100;

pub fn run(tasks: u64) -> anyhow::Result<Report> {
    let threads = sys::tokio_runtime()?;
    let mut report = Report::new(
        "intake",
        format!(
            "intake: {tasks} tasks created over loopback HTTP ({CONNECTIONS} keep-alive connections) and completed through the pure process"
        ),
    );
    progress("intake", "the server's floor: a handler that does nothing");
    let floor = threads.block_on(floor(tasks))?;
    report.common.push(Figure::rate(
        "floor_requests_per_sec",
        "HTTP floor (empty handler)",
        floor.rate,
        "req/s",
    ));
    report.common.push(Figure::millis(
        "floor_p99_ms",
        "HTTP floor p99",
        floor.p99_ms,
    ));
    for (kind, policy) in [(StoreKind::Sled, "sled"), (StoreKind::Log, "log")] {
        progress("intake", &format!("{policy}: direct URL creates"));
        let direct = threads.block_on(through_engine(kind, tasks, Door::Direct))?;
        progress(
            "intake",
            &format!("{policy}: task API v2, {PER_REQUEST} creates per request"),
        );
        let api = threads.block_on(through_engine(kind, tasks, Door::TaskApi))?;
        report.runs.push(Run {
            policy,
            figures: vec![
                Figure::rate(
                    "direct_tasks_per_sec",
                    "direct URL: tasks completed",
                    direct.rate,
                    "tasks/s",
                ),
                Figure::millis("direct_p50_ms", "direct URL: answer p50", direct.p50_ms),
                Figure::millis("direct_p99_ms", "direct URL: answer p99", direct.p99_ms),
                Figure::rate(
                    "api_created_per_sec",
                    "task API v2 (100 per request): creates answered",
                    api.answered,
                    "tasks/s",
                ),
                Figure::rate(
                    "api_tasks_per_sec",
                    "task API v2: tasks completed",
                    api.rate,
                    "tasks/s",
                ),
                Figure::millis("api_p99_ms", "task API v2: answer p99", api.p99_ms),
            ],
        });
    }
    let value = |policy: &str, key: &str| report.value(policy, key).unwrap_or(f64::NAN);
    let targets = vec![
        target(
            "log: direct URL ≥ 25,000 tasks/s",
            value("log", "direct_tasks_per_sec"),
            25_000.0,
            "tasks/s",
        ),
        Target::new(
            "log: direct URL p99 ≤ 20 ms".into(),
            format!("{:.1} ms", value("log", "direct_p99_ms")),
            value("log", "direct_p99_ms") <= 20.0,
        ),
        target(
            "log: task API v2 ≥ 100,000 creates/s",
            value("log", "api_created_per_sec"),
            100_000.0,
            "tasks/s",
        ),
        target(
            "sled: direct URL ≥ 15,000 tasks/s",
            value("sled", "direct_tasks_per_sec"),
            15_000.0,
            "tasks/s",
        ),
    ];
    report.targets.extend(targets);
    // Both kinds run here, whatever CONVEYOR_STORE_KIND says.
    report.notes.clear();
    report.notes.push(format!(
        "client: {CONNECTIONS} keep-alive connections, one request in flight on each, a minimal HTTP/1.1 client in the same process (it shares the 2 cores)"
    ));
    report
        .notes
        .push("every answer is sent after the store (and, for the task API, the signatures file) is flushed".into());
    Ok(report)
}

fn target(text: &str, measured: f64, floor: f64, unit: &str) -> Target {
    Target::new(
        text.into(),
        format!("{measured:.0} {unit}"),
        measured >= floor,
    )
}

#[derive(Clone, Copy, PartialEq)]
enum Door {
    Direct,
    TaskApi,
}

struct Measured {
    /// Tasks (or requests) per second, until the last was completed.
    rate: f64,
    /// Tasks per second until the last answer (created and on disk).
    answered: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// The server code with a handler that does nothing.
async fn floor(requests: u64) -> anyhow::Result<Measured> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let router = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(conveyor_http::serve_router(
        listener,
        router,
        conveyor_http::ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let request = format!("GET / HTTP/1.1\r\nHost: {address}\r\n\r\n");
    let started = Instant::now();
    let latencies = drive(address, requests, move |_| request.clone().into_bytes()).await?;
    let secs = started.elapsed().as_secs_f64();
    let _ = stop.send(());
    let _ = server.await;
    Ok(measured(
        requests as f64 / secs,
        requests as f64 / secs,
        latencies,
    ))
}

/// Tasks created through `door` of a real server over a new store of `kind`, completed
/// by the engine.
async fn through_engine(kind: StoreKind, tasks: u64, door: Door) -> anyhow::Result<Measured> {
    let dir = tempfile::tempdir()?;
    let options = StoreOptions {
        kind,
        ..sys::store_options()
    };
    let store = conveyor_store::open(dir.path(), options)?;
    let runtime = Runtime::new(store, Arc::new(SystemClock), Settings::default());
    let process =
        runtime.clone_process("pure.yaml", crate::pure::PROCESS, Some("pure"), Map::new())?;
    let (_, hash) = runtime.url_hash("@pure", false)?;
    let key = runtime.create_api_key("bench", &[])?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let limits = conveyor_http::Limits {
        direct_rate: conveyor_http::Rate {
            per_second: 0.0,
            burst: 0.0,
        },
        api_key_rate: conveyor_http::Rate {
            per_second: 0.0,
            burst: 0.0,
        },
        ..conveyor_http::Limits::default()
    };
    let config = conveyor_http::Config {
        admin_token: conveyor_runtime::random_token(20),
        limits,
        admin_commands: false,
        public_hosts: Vec::new(),
        signatures_file: Some(dir.path().join("signatures")),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(conveyor_http::serve(
        listener,
        runtime.clone(),
        config,
        async move {
            let _ = stopped.await;
        },
    ));
    let (stop_engine, engine_stopped) = tokio::sync::oneshot::channel::<()>();
    let engine = {
        let runtime = runtime.clone();
        tokio::spawn(async move {
            let shutdown = Box::pin(async move {
                let _ = engine_stopped.await;
            });
            runtime
                .run(conveyor_runtime::RunMode::UntilShutdown(shutdown))
                .await
        })
    };
    let id = process.id;
    let (requests, make): (u64, Box<dyn Fn(u64) -> Vec<u8> + Send + Sync>) = match door {
        Door::Direct => (
            tasks,
            Box::new(move |n| {
                format!(
                    "GET /api/1/json/public/{id}/{hash}?n={n} HTTP/1.1\r\nHost: {address}\r\n\r\n"
                )
                .into_bytes()
            }),
        ),
        Door::TaskApi => {
            let login = key.login;
            let secret = key.secret.clone();
            (
                tasks.div_ceil(PER_REQUEST as u64),
                Box::new(move |r| {
                    let ops: Vec<serde_json::Value> = (0..PER_REQUEST as u64)
                        .map(|i| json!({"type": "create", "obj": "task", "conv_id": id, "data": {"n": r * PER_REQUEST as u64 + i}}))
                        .collect();
                    let body = json!({ "ops": ops }).to_string();
                    let time = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    let signature = sha1_hex(&format!("{time}{secret}{body}{secret}"));
                    format!(
                        "POST /api/2/json/{login}/{time}/{signature} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .into_bytes()
                }),
            )
        }
    };
    let started = Instant::now();
    let latencies = drive(address, requests, make).await?;
    let answered_secs = started.elapsed().as_secs_f64();
    let created = match door {
        Door::Direct => requests,
        Door::TaskApi => requests * PER_REQUEST as u64,
    };
    // Completed: every task has reached the final node.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = runtime
            .store()
            .counters(id)?
            .iter()
            .find(|(node, _)| node == "end")
            .map(|(_, c)| c.total)
            .unwrap_or(0);
        if done >= created {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {done} of {created} tasks completed"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = stop.send(());
    let _ = server.await;
    let _ = stop_engine.send(());
    let _ = engine.await;
    Ok(measured(
        created as f64 / secs,
        created as f64 / answered_secs,
        latencies,
    ))
}

fn measured(rate: f64, answered: f64, mut latencies: Vec<f64>) -> Measured {
    sys::sort(&mut latencies);
    Measured {
        rate,
        answered,
        p50_ms: sys::quantile(&latencies, 0.5),
        p99_ms: sys::quantile(&latencies, 0.99),
    }
}

/// Sends `requests` requests (`make(n)` for the n-th) over `CONNECTIONS` keep-alive
/// connections, one in flight on each; every answer must be 200. Returns each request's
/// time to its answer, in ms.
async fn drive<F>(address: std::net::SocketAddr, requests: u64, make: F) -> anyhow::Result<Vec<f64>>
where
    F: Fn(u64) -> Vec<u8> + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..CONNECTIONS {
        let make = make.clone();
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(address).await?;
            stream.set_nodelay(true)?;
            let mut buffer = Vec::with_capacity(8192);
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= requests {
                    break;
                }
                let request = make(n);
                let sent = Instant::now();
                stream.write_all(&request).await?;
                let status = read_response(&mut stream, &mut buffer).await?;
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                anyhow::ensure!(
                    status == 200,
                    "request {n} answered {status}: {}",
                    String::from_utf8_lossy(&buffer)
                );
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await??);
    }
    Ok(all)
}

/// Reads one response (headers and a `Content-Length` body, or a chunked one) and
/// returns its status; the body is left in `buffer`.
async fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> anyhow::Result<u16> {
    buffer.clear();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(buffer, b"\r\n\r\n") {
            break i + 4;
        }
        let read = stream.read(&mut chunk).await?;
        anyhow::ensure!(read > 0, "the server closed the connection");
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let body = &buffer[head_end..];
        let complete = if chunked {
            find(body, b"0\r\n\r\n").is_some()
        } else {
            body.len() >= length
        };
        if complete {
            break;
        }
        let read = stream.read(&mut chunk).await?;
        anyhow::ensure!(read > 0, "the server closed the connection");
        buffer.extend_from_slice(&chunk[..read]);
    }
    buffer.drain(..head_end);
    Ok(status)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn sha1_hex(text: &str) -> String {
    use sha1::Digest as _;
    let mut hasher = sha1::Sha1::new();
    hasher.update(text.as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
