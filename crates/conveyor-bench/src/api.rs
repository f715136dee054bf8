//! `api`: N tasks, each one `api_call` to a local server that answers after a set delay,
//! through a node with `concurrency: 100`.
//!
//! The server runs in a child process (this binary's hidden `serve-delay` command), so
//! the CPU time of this process during the run is the engine's alone: steps, commits,
//! and the HTTP client. The same HTTP client (reqwest) making the same calls with
//! nothing around it — no engine, no store — gives the floor the engine is compared to.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conveyor_runtime::{RunMode, Runtime, Settings, SystemClock};
use conveyor_store::Store;
use serde_json::{Map, Value, json};

use crate::report::{Figure, Report, Run, Target};
use crate::sys::{self, progress};

fn process(port: u16, concurrency: u32) -> String {
    format!(
        r#"
process: api
nodes:
  start: {{ type: start, next: call }}
  call:
    type: api_call
    url: "http://127.0.0.1:{port}/work"
    query: {{ n: "{{{{n}}}}" }}
    concurrency: {concurrency}
    response: {{ got: "{{{{body.n}}}}" }}
    next: end
    on_error: failed
  end: {{ type: final }}
  failed: {{ type: final, status: error }}
"#
    )
}

pub fn run(
    tasks: u64,
    delay_ms: u64,
    concurrency: u32,
    durability: bool,
    rounds: u32,
) -> anyhow::Result<Report> {
    let rounds = rounds.max(1);
    let server = DelayServer::start(delay_ms)?;
    let ideal = tasks as f64 / concurrency as f64 * delay_ms as f64 / 1000.0;
    let mut report = Report::new(
        "api",
        format!(
            "api: {tasks} tasks, one api_call each to a local server answering after {delay_ms} ms, concurrency {concurrency}"
        ),
    );
    report.common.push(Figure::secs(
        "ideal_secs",
        "ideal time (N ÷ concurrency × delay)",
        ideal,
    ));
    let threads = sys::tokio_runtime()?;
    // The bare client runs before the engine and after each round, and each round is
    // compared with the mean of the bare runs on either side of it: the machine's speed
    // drifts within a run by as much as the gap being measured.
    progress(
        "api",
        "the same calls from a bare HTTP client (before the engine)",
    );
    let mut bare = vec![bare_client(&threads, &server, tasks, concurrency)?];
    let policies: &[bool] = if durability { &[false, true] } else { &[false] };
    // Per policy, each round's (engine ÷ bare client, figures).
    let mut measured: Vec<Vec<(f64, Vec<Figure>)>> = vec![Vec::new(); policies.len()];
    for round in 0..rounds {
        let mut figures_of_round = Vec::new();
        for &flush in policies {
            figures_of_round.push(one_run(
                &threads,
                &server,
                tasks,
                concurrency,
                flush,
                ideal,
            )?);
        }
        progress(
            "api",
            &format!(
                "the same calls from a bare HTTP client (after round {} of {rounds})",
                round + 1
            ),
        );
        bare.push(bare_client(&threads, &server, tasks, concurrency)?);
        let floor = (bare[bare.len() - 2].1 + bare[bare.len() - 1].1) / 2.0;
        for (at, figures) in figures_of_round.into_iter().enumerate() {
            let cpu = figures
                .iter()
                .find(|f| f.key == "engine_cpu_us_per_call")
                .and_then(|f| f.value.as_f64())
                .unwrap_or(f64::NAN);
            measured[at].push((cpu / floor, figures));
        }
    }
    for (at, &flush) in policies.iter().enumerate() {
        let mut runs = std::mem::take(&mut measured[at]);
        let ratios: Vec<String> = runs.iter().map(|(r, _)| format!("{r:.2}")).collect();
        // The round with the median ratio stands for the policy.
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (ratio, mut figures) = runs.swap_remove(runs.len() / 2);
        figures.push(Figure::ratio(
            "engine_to_bare_client",
            "engine CPU ÷ the bare client's (the bare runs either side)",
            ratio,
        ));
        let policy = if flush { "flush_each_step" } else { "default" };
        if rounds > 1 {
            report.notes.push(format!(
                "{policy}: engine CPU ÷ the bare client's in each of {rounds} rounds: {}; the figures shown are the median round's",
                ratios.join(", ")
            ));
        }
        report.runs.push(Run { policy, figures });
    }
    let bare_secs = bare.iter().map(|b| b.0).sum::<f64>() / bare.len() as f64;
    let bare_cpu = bare.iter().map(|b| b.1).sum::<f64>() / bare.len() as f64;
    report.common.extend([
        Figure::ratio(
            "bare_client_ratio_to_ideal",
            "bare client: time ÷ ideal time",
            bare_secs / ideal,
        ),
        Figure::micros(
            "bare_client_cpu_us_per_call",
            "bare client: CPU per call (mean of its runs)",
            bare_cpu,
        ),
        Figure::micros(
            "bare_client_cpu_us_per_call_before",
            "  before the engine",
            bare[0].1,
        ),
        Figure::micros(
            "bare_client_cpu_us_per_call_after",
            "  after the engine (its last round)",
            bare[bare.len() - 1].1,
        ),
    ]);
    report.add_targets(|value, suffix| {
        let ratio = value("ratio_to_ideal");
        let cpu = value("engine_cpu_us_per_call");
        let to_bare = value("engine_to_bare_client");
        vec![
            Target::new(
                format!("within 1.3× of the ideal time{suffix}"),
                format!("{ratio:.2}×"),
                ratio <= 1.3,
            ),
            Target::new(
                format!("engine CPU ≤ 50 µs per call{suffix}"),
                format!("{cpu:.1} µs"),
                cpu <= 50.0,
            ),
            Target::new(
                format!("engine CPU ≤ 1.3× the bare client's (intake issue){suffix}"),
                format!("{to_bare:.2}×"),
                to_bare <= 1.3,
            ),
        ]
    });
    report.notes.push(
        "engine CPU: user + system time of this process (the server is a child process) \
         during `run --until-idle`, divided by the calls; /proc resolution is 10 ms"
            .into(),
    );
    report.notes.push(
        "bare client: reqwest (the engine's HTTP client) sending the same GETs at the same \
         concurrency and parsing each JSON reply, with no engine and no store: the floor \
         of engine CPU per call on this machine"
            .into(),
    );
    drop(server);
    Ok(report)
}

/// The same calls from the engine's HTTP client alone: (seconds, CPU µs per call).
fn bare_client(
    threads: &tokio::runtime::Runtime,
    server: &DelayServer,
    tasks: u64,
    concurrency: u32,
) -> anyhow::Result<(f64, f64)> {
    // reqwest is built without a crypto provider of its own (the engine installs ring):
    // the bare client may run before any engine exists.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}/work", server.port);
    let cpu_before = sys::cpu_seconds("self").unwrap_or(0.0);
    let started = Instant::now();
    threads.block_on(async {
        let limit = Arc::new(tokio::sync::Semaphore::new(concurrency as usize));
        let mut calls = tokio::task::JoinSet::new();
        for n in 0..tasks {
            let permit = Arc::clone(&limit).acquire_owned().await?;
            let (client, url) = (client.clone(), url.clone());
            calls.spawn(async move {
                let reply = client.get(&url).query(&[("n", n)]).send().await?;
                let body: Value = reply.error_for_status()?.json().await?;
                drop(permit);
                anyhow::ensure!(body.get("n").is_some(), "no n in the reply: {body}");
                Ok(())
            });
        }
        while let Some(call) = calls.join_next().await {
            call??;
        }
        anyhow::Ok(())
    })?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = sys::cpu_seconds("self").unwrap_or(0.0) - cpu_before;
    Ok((secs, cpu / tasks as f64 * 1e6))
}

fn one_run(
    threads: &tokio::runtime::Runtime,
    server: &DelayServer,
    tasks: u64,
    concurrency: u32,
    flush: bool,
    ideal: f64,
) -> anyhow::Result<Vec<Figure>> {
    let policy = if flush { "flush_each_step" } else { "default" };
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = crate::sys::open_store(dir.path())?;
    let settings = Settings {
        flush_each_step: flush,
        ..Settings::default()
    };
    let runtime = Runtime::new(store.clone(), Arc::new(SystemClock), settings);
    let loaded = runtime.clone_process(
        "api.yaml",
        &process(server.port, concurrency),
        Some("api"),
        Map::new(),
    )?;
    progress("api", &format!("{policy}: creating {tasks} tasks"));
    for n in 0..tasks {
        let mut data = Map::new();
        data.insert("n".into(), Value::from(n));
        runtime.add_task("@api", None, data)?;
    }
    // What creating the tasks left to write is written now, not during the run.
    store.flush()?;
    progress("api", &format!("{policy}: running them until idle"));
    let threads_before = sys::thread_cpu();
    let cpu_before = sys::cpu_seconds("self").unwrap_or(0.0);
    let server_cpu_before = server.cpu_seconds();
    let commits_before = runtime.commit_stats();
    let in_place_before = runtime.commits_in_place();
    let started = Instant::now();
    let stats = threads.block_on(runtime.run(RunMode::UntilIdle))?;
    let secs = started.elapsed().as_secs_f64();
    let commits_after = runtime.commit_stats();
    let group_size = (commits_after.1 - commits_before.1) as f64
        / (commits_after.0 - commits_before.0).max(1) as f64;
    let in_place = (runtime.commits_in_place() - in_place_before) as f64
        / (commits_after.1 - commits_before.1).max(1) as f64;
    let cpu = sys::cpu_seconds("self").unwrap_or(0.0) - cpu_before;
    let split = sys::cpu_split(&threads_before, &sys::thread_cpu(), cpu);
    let per_call = |seconds: f64| seconds / tasks as f64 * 1e6;
    let server_cpu = server.cpu_seconds() - server_cpu_before;
    let counters = store.counters(loaded.id)?;
    let count = |node: &str| {
        counters
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, c)| c.now.max(0) as u64)
            .unwrap_or(0)
    };
    anyhow::ensure!(
        count("end") == tasks && stats.failed_steps == 0,
        "{} of {tasks} tasks succeeded, {} failed, {} failed steps",
        count("end"),
        count("failed"),
        stats.failed_steps
    );
    // The reply really reached the task.
    let sample = runtime.find_task("@api", &conveyor_runtime::TaskKey("1".into()))?;
    anyhow::ensure!(
        sample.1.data.get("got") == Some(&json!(0))
            || sample.1.data.get("got") == Some(&json!("0")),
        "the reply was not mapped into the task: {:?}",
        sample.1.data
    );
    Ok(vec![
        Figure::secs("run_secs", "run until idle", secs),
        Figure::rate(
            "tasks_per_sec",
            "throughput",
            tasks as f64 / secs,
            "tasks/s",
        ),
        Figure::ratio("ratio_to_ideal", "time ÷ ideal time", secs / ideal),
        Figure::micros(
            "engine_cpu_us_per_call",
            "engine CPU per call",
            per_call(cpu),
        ),
        Figure::micros(
            "cpu_workers_us_per_call",
            "  of which: tokio workers (steps, HTTP)",
            per_call(split.workers),
        ),
        Figure::micros(
            "cpu_committer_us_per_call",
            "  of which: committer (store commits)",
            per_call(split.committer),
        ),
        Figure::micros(
            "cpu_store_us_per_call",
            "  of which: the store's threads (sled's I/O, log flusher)",
            per_call(split.store),
        ),
        Figure::micros(
            "cpu_main_us_per_call",
            "  of which: engine loop (main thread)",
            per_call(split.main),
        ),
        Figure::micros(
            "cpu_other_us_per_call",
            "  of which: threads that came and went",
            per_call(split.other),
        ),
        Figure::ratio("engine_cpu_cores", "engine CPU (cores busy)", cpu / secs),
        Figure::ratio(
            "steps_per_commit",
            "steps per store commit (group commit)",
            group_size,
        ),
        Figure::ratio(
            "steps_committed_in_place",
            "share of steps committed on their own thread (the store was idle)",
            in_place,
        ),
        Figure::micros(
            "server_cpu_us_per_call",
            "server CPU per call (child)",
            server_cpu / tasks as f64 * 1e6,
        ),
    ])
}

/// The local server in a child process; it exits when its stdin closes.
struct DelayServer {
    child: Child,
    port: u16,
}

impl DelayServer {
    fn start(delay_ms: u64) -> anyhow::Result<DelayServer> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["serve-delay", "--delay-ms", &delay_ms.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout from the server"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok());
        match port {
            Some(port) => Ok(DelayServer { child, port }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("the delay server did not start (it said {line:?})")
            }
        }
    }

    fn cpu_seconds(&self) -> f64 {
        sys::cpu_seconds(&self.child.id().to_string()).unwrap_or(0.0)
    }
}

impl Drop for DelayServer {
    fn drop(&mut self) {
        // Closing stdin ends it; kill it if it has not gone in a few seconds.
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The hidden `serve-delay` command: answers `GET /work?n=N` with `{"n": N}` after
/// `delay_ms`, on 127.0.0.1 and a free port it prints as `port N`. Exits when stdin closes.
pub fn serve(delay_ms: u64) -> anyhow::Result<()> {
    use axum::extract::Query;
    use axum::routing::get;

    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        std::process::exit(0);
    });
    let threads = sys::tokio_runtime()?;
    threads.block_on(async move {
        let delay = Duration::from_millis(delay_ms);
        let app = axum::Router::new().route(
            "/work",
            get(
                move |Query(query): Query<std::collections::HashMap<String, String>>| async move {
                    tokio::time::sleep(delay).await;
                    let n = query
                        .get("n")
                        .and_then(|n| n.parse::<u64>().ok())
                        .map(Value::from)
                        .unwrap_or(Value::Null);
                    axum::Json(json!({ "n": n }))
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let mut stdout = std::io::stdout();
        writeln!(stdout, "port {port}")?;
        stdout.flush()?;
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}
