//! `conveyor store verify | repair | migrate | compact`, and the engine and the commands never
//! tripping over each other's lock, through the real binary.

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::http_api::Server;
use crate::support::DataDir;

const DELAY: &str = r#"
process: delay
secrets: [token]
params:
  code: { required: true }
nodes:
  start: { type: start, next: wait }
  wait: { type: delay, for: 1h, next: done }
  done: { type: final }
"#;

const CALLBACK: &str = r#"
process: callback
nodes:
  start: { type: start, next: wait }
  wait: { type: wait_callback, next: got }
  got: { type: final }
"#;

fn clone(d: &DataDir, alias: &str, text: &str) {
    let file = d.path().join(format!("{alias}.yaml"));
    std::fs::write(&file, text).expect("write process file");
    d.ok(&[
        "process",
        "clone",
        file.to_str().expect("utf-8"),
        "--alias",
        alias,
    ]);
}

/// A data dir with a log store in use: tasks with refs and sealed values waiting on
/// timers, a task waiting for a callback with a message in its inbox, API keys (one
/// deleted), a direct URL.
fn store_in_use() -> DataDir {
    let d = DataDir::new();
    d.ok(&["--store-kind", "log", "process", "list"]);
    assert!(d.path().join("log").is_dir());
    clone(&d, "delay", DELAY);
    clone(&d, "cb", CALLBACK);
    for n in 0..5 {
        d.ok(&[
            "task",
            "add",
            "@delay",
            "--ref",
            &format!("t{n}"),
            &format!("code={n}"),
            &format!("token=secret-{n}"),
        ]);
    }
    d.ok(&["task", "add", "@cb", "--ref", "w"]);
    d.ok(&["run", "--until-idle"]);
    // A message left for the waiting task: read when the engine next runs.
    d.ok(&["task", "modify", "@cb", "w", "answer=42"]);
    d.ok(&["api-key", "create", "one", "--process", "@delay"]);
    d.ok(&["api-key", "create", "two"]);
    d.ok(&["api-key", "delete", "100002"]);
    d.ok(&["process", "url", "@delay"]);
    d
}

/// What a user sees of the store: the same before and after a migration.
fn everything(d: &DataDir) -> Vec<String> {
    let mut out = vec![
        d.ok(&["--json", "process", "list"]),
        d.ok(&["--json", "api-key", "list"]),
        d.ok(&["process", "url", "@delay"]),
        d.ok(&["process", "show", "@delay"]),
        d.ok(&["process", "show", "@cb"]),
        d.ok(&["--json", "task", "list", "@delay"]),
        d.ok(&["--json", "task", "list", "@cb"]),
        d.ok(&["--json", "task", "show", "@cb", "w"]),
        d.ok(&["--json", "task", "history", "@cb", "w"]),
    ];
    for n in 0..5 {
        let r = format!("t{n}");
        out.push(d.ok(&["--json", "task", "show", "@delay", &r, "--reveal"]));
        out.push(d.ok(&["--json", "task", "history", "@delay", &r]));
    }
    out
}

#[test]
fn a_store_in_use_migrates_log_to_sled_and_back_with_everything_kept() {
    let d = store_in_use();
    let before = everything(&d);
    assert!(
        before.iter().any(|o| o.contains("secret-3")),
        "sealed values read back"
    );
    assert!(before.iter().any(|o| o.contains("\"wait\"")));

    let out = d.ok(&["store", "migrate", "--to", "sled"]);
    assert!(
        out.contains("from log to sled, compared record by record: 2 process(es), 6 task(s), 6 ref(s), 5 timer(s), 1 ready, 1 inbox message(s)"),
        "{out}"
    );
    let kept = d.path().join("store.old-log");
    assert!(
        out.contains(&format!("the old log store is kept in {}", kept.display())),
        "{out}"
    );
    assert!(d.path().join("store").is_dir() && !d.path().join("log").exists() && kept.is_dir());
    assert!(d.path().join("seal.json").exists());
    assert_eq!(everything(&d), before);

    // Back to a log store.
    let out = d.ok(&["store", "migrate", "--to", "log"]);
    assert!(out.contains("from sled to log"), "{out}");
    assert!(d.path().join("log").is_dir() && d.path().join("store.old-sled").is_dir());
    assert_eq!(everything(&d), before);
    // Asked again: refused, nothing changed.
    let (code, _, stderr) = d.run(&["store", "migrate", "--to", "log"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("already a log store"), "{stderr}");
    let (code, _, stderr) = d.run(&["store", "migrate", "--to", "sled"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("store.old-log is there from an earlier migration"),
        "{stderr}"
    );

    // It goes on where it was: the message wakes the task, the deleted login stays unused.
    d.ok(&["run", "--until-idle"]);
    let w = d.json(&["task", "show", "@cb", "w"]);
    assert_eq!(w["node"], "got", "{w}");
    let key = d.ok(&["api-key", "create", "three"]);
    assert!(key.contains("100003"), "{key}");
    let verified = d.ok(&["store", "verify"]);
    assert!(verified.contains("no problems found"), "{verified}");
}

const GONE: &str = r#"
process: gone
nodes:
  start: { type: start, next: done }
  done: { type: final, keep: 0 }
"#;

/// sled reuses the space of removed tasks but keeps its files' size; `store compact`
/// gives it back and keeps everything that was live.
#[test]
fn compact_gives_a_sled_store_the_space_of_removed_tasks_back() {
    let d = DataDir::new();
    d.ok(&["--store-kind", "sled", "process", "list"]);
    assert!(d.path().join("store").is_dir());
    clone(&d, "delay", DELAY);
    clone(&d, "gone", GONE);
    d.ok(&[
        "task",
        "add",
        "@delay",
        "--ref",
        "kept",
        "code=1",
        "token=secret-1",
    ]);
    let body = format!("body={}", "x".repeat(100_000));
    for _ in 0..60 {
        d.ok(&["task", "add", "@gone", &body]);
    }
    d.ok(&["run", "--until-idle"]);
    let gone = d.json(&["task", "list", "@gone"]);
    assert_eq!(gone.as_array().map(Vec::len), Some(0), "{gone}");
    let views = |d: &DataDir| {
        vec![
            d.ok(&["--json", "process", "list"]),
            d.ok(&["--json", "task", "show", "@delay", "kept", "--reveal"]),
            d.ok(&["--json", "task", "history", "@delay", "kept"]),
        ]
    };
    let before = views(&d);
    assert!(before[1].contains("secret-1"), "{}", before[1]);

    let report = d.json(&["store", "compact"]);
    let (was, now) = (
        report["bytes_before"].as_u64().unwrap_or(0),
        report["bytes_after"].as_u64().unwrap_or(u64::MAX),
    );
    assert!(was > 6_000_000, "{report}");
    assert!(now * 3 < was, "{report}");
    assert_eq!(report["records"]["tasks"], 1, "{report}");
    assert!(!d.path().join(".compact").exists());
    assert!(!d.path().join("store.compact-old").exists());
    assert_eq!(views(&d), before);
    let verified = d.ok(&["store", "verify"]);
    assert!(verified.contains("no problems found"), "{verified}");
    // New tasks still get new ids and the store goes on.
    d.ok(&["task", "add", "@gone"]);
    d.ok(&["run", "--until-idle"]);
}

#[test]
fn a_damaged_log_is_refused_verified_and_repaired_only_with_yes() {
    let d = store_in_use();
    let segment = d.path().join("log").join("0000000001.log");
    let bytes = std::fs::read(&segment).expect("segment");
    // A byte in the middle of the log changed: frames after it were acknowledged.
    let at = bytes.len() / 2;
    let mut damaged = bytes.clone();
    damaged[at] ^= 0x5a;
    std::fs::write(&segment, &damaged).expect("write");

    let (code, _, stderr) = d.run(&["process", "list"]);
    assert_eq!(code, 1);
    assert!(stderr.contains(&segment.display().to_string()), "{stderr}");
    assert!(
        stderr.contains("this is corruption, not a frame torn by a crash"),
        "{stderr}"
    );

    let (code, out, _) = d.run(&["store", "verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("problem: ") && out.contains("corruption"),
        "{out}"
    );
    assert!(out.contains("1 problem(s) found"), "{out}");

    let (code, out, _) = d.run(&["store", "repair"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("to open again, the store must drop:"), "{out}");
    assert!(
        out.contains(&format!("cut {} at byte", segment.display())),
        "{out}"
    );
    assert!(out.contains("nothing was dropped"), "{out}");
    assert_eq!(
        std::fs::read(&segment).expect("segment"),
        damaged,
        "a dry run changed the log"
    );

    let out = d.ok(&["store", "repair", "--yes"]);
    assert!(out.contains("dropped:"), "{out}");
    assert!(std::fs::metadata(&segment).expect("segment").len() <= at as u64);
    let out = d.ok(&["store", "verify"]);
    assert!(out.contains("no problems found"), "{out}");
    d.ok(&["process", "list"]);
}

#[test]
fn a_torn_tail_is_cut_at_open_with_a_warning() {
    let d = store_in_use();
    let segment = d.path().join("log").join("0000000001.log");
    let whole = std::fs::metadata(&segment).expect("segment").len();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .expect("open");
    std::io::Write::write_all(&mut file, &[200, 0, 0, 0, 1, 2, 3, 4, 9, 9]).expect("tear");
    drop(file);
    let (code, out, _) = d.run(&["store", "verify"]);
    assert_eq!(code, 1);
    assert!(out.contains("a frame torn by a crash: 10 bytes"), "{out}");
    let (code, _, stderr) = d.run(&["process", "list"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("WARN") && stderr.contains("torn by a crash"),
        "{stderr}"
    );
    assert_eq!(std::fs::metadata(&segment).expect("segment").len(), whole);
}

#[test]
fn store_commands_refuse_while_a_server_runs() {
    let d = DataDir::new();
    d.ok(&["process", "list"]);
    let mut server = Server::start(d);
    for args in [
        vec!["store", "verify"],
        vec!["store", "repair"],
        vec!["store", "migrate", "--to", "sled"],
    ] {
        let (code, _, stderr) = server.data.run(&args);
        assert_eq!(code, 1, "{args:?}");
        assert!(
            stderr.contains("is running this data dir"),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(server.stop(), 0);
}

/// Runs `process list` over and over until `stop`; returns how many ran and each one
/// that failed.
fn hammer(d: &DataDir, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    let path = d.path().to_path_buf();
    std::thread::spawn(move || {
        let mut failures = Vec::new();
        let mut runs = 0;
        while !stop.load(Ordering::SeqCst) {
            let out = crate::support::conveyor()
                .args(["--data", path.to_str().expect("utf-8"), "process", "list"])
                .output()
                .expect("conveyor runs");
            runs += 1;
            if !out.status.success() {
                failures.push(String::from_utf8_lossy(&out.stderr).into_owned());
            }
        }
        (runs, failures)
    })
}

/// A child (a `serve`) that is killed when dropped, so that a failing test never leaves
/// it behind (it would hold the build lock its parent inherited).
struct Serving(Option<std::process::Child>);

impl Serving {
    fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, |c| c.id())
    }

    /// SIGKILL, and reaped.
    fn kill_9(mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM; its exit code.
    fn terminate(mut self) -> i32 {
        let Some(mut child) = self.0.take() else {
            return -1;
        };
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().map(|s| s.code().unwrap_or(-1)).unwrap_or(-1)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Stops a command loop when dropped (also when the test fails).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// `serve` with its stderr read; returns once it serves (or panics after 20 s).
fn serve(d: &DataDir) -> Serving {
    let mut child = d
        .command(&["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = String::new();
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            if line.starts_with("conveyor serving on ")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(Ok(()));
            }
        }
        if let Some(tx) = tx.take() {
            let _ = tx.send(Err(all));
        }
    });
    let child = Serving(Some(child));
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok(())) => child,
        Ok(Err(said)) => panic!("serve stopped before it served:\n{said}"),
        Err(_) => panic!("serve did not come up within 20 s"),
    }
}

#[test]
fn serve_started_while_commands_hold_the_store_waits_for_them_and_they_then_go_through_it() {
    for kind in ["log", "sled"] {
        let d = DataDir::new();
        d.ok(&["--store-kind", kind, "process", "list"]);
        let stop = Arc::new(AtomicBool::new(false));
        let _stop = StopOnDrop(stop.clone());
        let loop_ = hammer(&d, stop.clone());
        std::thread::sleep(Duration::from_millis(300));
        let child = serve(&d);
        // Commands go on, now through the server.
        std::thread::sleep(Duration::from_millis(1_000));
        stop.store(true, Ordering::SeqCst);
        let (runs, failures) = loop_.join().expect("the loop");
        assert!(runs >= 3, "[{kind}] only {runs} commands ran");
        assert!(
            failures.is_empty(),
            "[{kind}] {} of {runs} failed: {failures:?}",
            failures.len()
        );
        assert_eq!(child.terminate(), 0, "[{kind}] serve did not stop cleanly");
    }
}

#[test]
fn commands_run_while_serve_restarts_after_a_kill_9_wait_and_go_through_it() {
    let d = DataDir::new();
    d.ok(&["process", "list"]);
    clone(&d, "cb", CALLBACK);
    // A server killed with SIGKILL leaves server.json and engine.pid naming a dead
    // process.
    serve(&d).kill_9();
    assert!(d.path().join("server.json").exists());
    for round in 0..2 {
        let stop = Arc::new(AtomicBool::new(false));
        let _stop = StopOnDrop(stop.clone());
        let loop_ = hammer(&d, stop.clone());
        // Restarted while the commands run: no command fails, before, during or after
        // its start.
        let started = Instant::now();
        let child = serve(&d);
        let up = started.elapsed();
        std::thread::sleep(Duration::from_millis(800));
        stop.store(true, Ordering::SeqCst);
        let (runs, failures) = loop_.join().expect("the loop");
        assert!(
            failures.is_empty(),
            "round {round}: {} of {runs} failed: {failures:?}",
            failures.len()
        );
        let info = std::fs::read_to_string(d.path().join("server.json")).expect("server.json");
        assert!(info.contains(&format!("\"pid\": {}", child.id())), "{info}");
        assert!(up < Duration::from_secs(15), "serve took {up:?} to start");
        if round == 0 {
            child.kill_9();
        } else {
            assert_eq!(child.terminate(), 0);
        }
    }
    // And a command right after a kill -9, with nothing running: the stale files are
    // passed over.
    let out = d.ok(&["task", "add", "@cb", "--ref", "after"]);
    assert!(out.contains("added"), "{out}");
    // After a reboot, `engine.pid` may name a live process that is no engine: it holds
    // up neither a command nor a new server.
    // (Killed when dropped, like a server: it would hold the build lock it inherited.)
    let other = Serving(Some(
        std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs"),
    ));
    std::fs::write(
        d.path().join("engine.pid"),
        format!("{} serve\n", other.id()),
    )
    .expect("write engine.pid");
    let started = Instant::now();
    d.ok(&["process", "list"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let child = serve(&d);
    d.ok(&["task", "show", "@cb", "after"]);
    assert_eq!(child.terminate(), 0);
    other.kill_9();
}
