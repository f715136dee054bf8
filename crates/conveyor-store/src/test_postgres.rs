//! A throwaway PostgreSQL server for tests: `initdb` in a temporary directory, started
//! on a free loopback port (and a unix socket in the same directory), as an
//! unprivileged user when the tests run as root (PostgreSQL refuses to run as root),
//! and stopped when the test process ends.
//!
//! [`server`] starts one per test process (or uses `CONVEYOR_TEST_POSTGRES`, the URL of
//! a server someone else runs); [`fresh_database`] makes a database of its own for one
//! test. When no server can be had, [`server`] says why: tests then skip with a printed
//! notice — except under `CI=true`, where they fail ([`require`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A running server.
#[derive(Debug, Clone)]
pub struct TestServer {
    /// `postgres://conveyor@127.0.0.1:PORT/postgres` (trust authentication).
    pub url: String,
    pub port: u16,
    /// The cluster's directory (`None` for a server from `CONVEYOR_TEST_POSTGRES`).
    pub dir: Option<PathBuf>,
    /// The PostgreSQL programs' directory.
    pub bin: Option<PathBuf>,
    /// The user the server runs as (`None`: as this process's user).
    pub user: Option<(u32, u32)>,
    /// Whether it syncs its WAL to disk (benchmarks) or not (tests: faster, and a
    /// test's database need not survive a power loss).
    pub durable: bool,
}

static SERVER: OnceLock<Result<TestServer, String>> = OnceLock::new();

/// The server of this test process, started on first use; `Err` says why there is none.
pub fn server() -> Result<&'static TestServer, String> {
    SERVER
        .get_or_init(|| match std::env::var("CONVEYOR_TEST_POSTGRES") {
            Ok(url) if !url.trim().is_empty() => Ok(TestServer {
                url,
                port: 0,
                dir: None,
                bin: None,
                user: None,
                durable: true,
            }),
            _ => start(false),
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The server, or `None` after printing why the test is skipped. Under `CI=true` a
/// missing server fails the test instead: CI never skips silently.
pub fn require(test: &str) -> Option<&'static TestServer> {
    match server() {
        Ok(server) => Some(server),
        Err(why) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: no PostgreSQL, and CI=true forbids skipping: {why}");
            }
            eprintln!("SKIPPED {test}: no PostgreSQL could be started ({why})");
            None
        }
    }
}

/// A new, empty database on `server` for one test; its URL.
pub fn fresh_database(server: &TestServer, name_hint: &str) -> Result<String, String> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let clean: String = name_hint
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(30)
        .collect::<String>()
        .to_lowercase();
    let name = format!("t_{clean}_{}_{n}", std::process::id());
    sql(server, &format!("CREATE DATABASE {name}"))?;
    Ok(database_url(&server.url, &name))
}

/// `url` with its database replaced by `name`.
pub fn database_url(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// Runs one statement on the server's `postgres` database (through `psql`).
pub fn sql(server: &TestServer, statement: &str) -> Result<(), String> {
    let psql = server
        .bin
        .as_ref()
        .map(|b| b.join("psql"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("psql"));
    let out = Command::new(psql)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &server.url, "-c"])
        .arg(statement)
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Stops the server and starts it again on the same port and directory (what a
/// PostgreSQL restart under load does to the engines). Waits until it answers.
pub fn restart(server: &TestServer, down_for: Duration) -> Result<(), String> {
    let (Some(dir), Some(bin)) = (&server.dir, &server.bin) else {
        return Err("the server was not started by this test process".into());
    };
    let data = dir.join("data");
    run_as(
        server.user,
        Command::new(bin.join("pg_ctl"))
            .args(["-D"])
            .arg(&data)
            .args(["-m", "fast", "-w", "stop"]),
    )?;
    std::thread::sleep(down_for);
    spawn_postgres(server)?;
    wait_ready(server)
}

/// Where `initdb`, `pg_ctl` and `postgres` are: `$PATH`, else Debian's
/// `/usr/lib/postgresql/<version>/bin` (newest first).
fn find_bin() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").exists() && dir.join("pg_ctl").exists() {
                // Debian's /usr/bin wrappers are not the programs: prefer the real dir.
                let real = std::fs::canonicalize(dir.join("pg_ctl"))
                    .ok()
                    .and_then(|p| p.parent().map(Path::to_path_buf));
                return Some(real.unwrap_or(dir));
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// Whether this process runs as root (PostgreSQL then needs another user).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// The uid and gid of `nobody`, the unprivileged user a root test process starts the
/// server as.
fn nobody() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("nobody:"))?;
    let mut fields = line.split(':').skip(2);
    let uid = fields.next()?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    Some((uid, gid))
}

fn run_as(user: Option<(u32, u32)>, command: &mut Command) -> Result<(), String> {
    use std::os::unix::process::CommandExt as _;
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", command.get_program()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} failed: {}{}",
            command.get_program(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A server of its own (not the one [`server`] shares), for a test that stops and
/// restarts it; it stops when the test process ends.
pub fn private_server() -> Result<TestServer, String> {
    if std::env::var("CONVEYOR_TEST_POSTGRES").is_ok_and(|u| !u.trim().is_empty()) {
        return Err("CONVEYOR_TEST_POSTGRES names a server this test may not restart".into());
    }
    start(false)
}

/// A server of its own that syncs to disk as a production one does (`fsync` and
/// `synchronous_commit` on): what benchmarks measure against.
pub fn durable_server() -> Result<TestServer, String> {
    start(true)
}

fn start(durable: bool) -> Result<TestServer, String> {
    let bin = find_bin().ok_or("no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin")?;
    let user = if is_root() {
        Some(nobody().ok_or("running as root and there is no user `nobody` to run PostgreSQL as")?)
    } else {
        None
    };
    let dir = tempfile::Builder::new()
        .prefix("conveyor-pg-")
        .tempdir()
        .map_err(|e| format!("no temporary directory: {e}"))?
        .keep();
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .map_err(|e| format!("cannot give {} to nobody: {e}", dir.display()))?;
    }
    let data = dir.join("data");
    run_as(
        user,
        Command::new(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "conveyor", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .env("LC_ALL", "C"),
    )?;
    let port = free_port()?;
    let server = TestServer {
        url: format!("postgres://conveyor@127.0.0.1:{port}/postgres"),
        port,
        dir: Some(dir.clone()),
        bin: Some(bin.clone()),
        user,
        durable,
    };
    spawn_postgres(&server)?;
    wait_ready(&server)?;
    Ok(server)
}

/// Starts `postgres` under a small watchdog shell that stops it (and removes its
/// directory) once this test process is gone, however it ends.
fn spawn_postgres(server: &TestServer) -> Result<(), String> {
    use std::os::unix::process::CommandExt as _;
    let (Some(dir), Some(bin)) = (&server.dir, &server.bin) else {
        return Err("not a server of this process".into());
    };
    let (user, port) = (server.user, server.port);
    let data = dir.join("data");
    let sync = if server.durable {
        "-c fsync=on -c synchronous_commit=on"
    } else {
        "-c fsync=off -c full_page_writes=off"
    };
    let script = format!(
        r#"'{bin}/postgres' -D '{data}' -p {port} -k '{dir}' -h 127.0.0.1 \
            {sync} -c max_connections=200 \
            -c shared_buffers=64MB -c log_min_messages=warning >>'{dir}/server.log' 2>&1 &
        pg=$!
        while [ -d /proc/{parent} ]; do
            if ! kill -0 $pg 2>/dev/null; then exit 0; fi
            sleep 0.5
        done
        kill -INT $pg 2>/dev/null
        while kill -0 $pg 2>/dev/null; do sleep 0.1; done
        rm -rf '{dir}'"#,
        bin = bin.display(),
        sync = sync,
        data = data.display(),
        dir = dir.display(),
        parent = std::process::id(),
    );
    let mut command = Command::new("/bin/sh");
    command
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a Ctrl-C of the tests does not stop it before it can
        // clean up.
        .process_group(0);
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    command
        .spawn()
        .map_err(|e| format!("cannot start postgres: {e}"))?;
    Ok(())
}

fn wait_ready(server: &TestServer) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match sql(server, "SELECT 1") {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                let log = server
                    .dir
                    .as_ref()
                    .and_then(|d| std::fs::read_to_string(d.join("server.log")).ok())
                    .unwrap_or_default();
                return Err(format!("PostgreSQL did not answer within 30 s: {e}\n{log}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
