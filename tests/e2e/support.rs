//! Helpers shared by the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The repository root (tests run with the crate directory as working directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

/// The key directory of every `conveyor` the tests run, so that no test writes a key
/// into the user's config dir: a directory of this test process (keys are named by their
/// id, so data dirs share it) in cargo's scratch dir for integration tests
/// (`target/tmp`), since a static is never dropped to remove it.
pub fn key_dir() -> &'static Path {
    static KEYS: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("e2e-keys")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("temp key dir")
    })
    .path()
}

/// The options the tests open stores with in-process: the kind `CONVEYOR_STORE_KIND`
/// names (`sled` or `log`, read as the `conveyor` binary reads it, so that CI's second
/// run covers the in-process engine too), else the default. An existing data directory
/// keeps its own kind whatever this says.
pub fn store_options() -> conveyor_store::StoreOptions {
    let mut options = conveyor_store::StoreOptions::default();
    match std::env::var("CONVEYOR_STORE_KIND")
        .as_deref()
        .map(str::trim)
    {
        Err(_) | Ok("") => {}
        Ok("sled") => options.kind = conveyor_store::StoreKind::Sled,
        Ok("log") => options.kind = conveyor_store::StoreKind::Log,
        Ok(other) => panic!("CONVEYOR_STORE_KIND={other}: expected `sled` or `log`"),
    }
    options
}

/// Opens (or creates) the store of the data directory `dir` with [`store_options`].
///
/// A sled store closed by this test process a moment ago may still be locked: sled's
/// background threads let go of its files shortly after the last handle is dropped. So a
/// `Locked` store is waited for (up to 5 s), as the engine's own commands wait for it.
pub fn open_store(dir: &Path) -> std::sync::Arc<dyn conveyor_store::Store> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match conveyor_store::open(dir, store_options()) {
            Ok(store) => return store,
            Err(conveyor_store::StoreError::Locked { .. })
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("the store in {} opens: {e}", dir.display()),
        }
    }
}

/// A `conveyor` command for the binary built with these tests, run from the repo root,
/// with its keys in the tests' key directory.
pub fn conveyor() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_conveyor"));
    command.current_dir(repo_root());
    command.env("CONVEYOR_KEY_DIR", key_dir());
    command.env_remove("CONVEYOR_SECRET_KEY");
    command
}

/// Runs `conveyor` with `args`; returns (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let output: Output = conveyor().args(args).output().expect("conveyor runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A temporary data directory and a way to run `conveyor --data DIR …` in it.
pub struct DataDir {
    pub dir: tempfile::TempDir,
}

impl DataDir {
    pub fn new() -> DataDir {
        DataDir {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `conveyor --data DIR args…` → (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let output = self.command(args).output().expect("conveyor runs");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Like `run`, but the command must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let (code, stdout, stderr) = self.run(args);
        assert_eq!(code, 0, "conveyor {args:?} failed:\n{stdout}\n{stderr}");
        stdout
    }

    /// Like `ok` with `--json` added; parses the output.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let stdout = self.ok(&all);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {stdout}"))
    }

    /// Writes `yaml` into the data directory as `ALIAS.yaml` and clones it with
    /// `--alias ALIAS` and a `--set` for each of `sets`; the new process's id.
    pub fn clone_yaml(&self, alias: &str, yaml: &str, sets: &[&str]) -> u64 {
        let file = self.path().join(format!("{alias}.yaml"));
        std::fs::write(&file, yaml).expect("write the process");
        let mut args = vec![
            "process",
            "clone",
            file.to_str().expect("a UTF-8 path"),
            "--alias",
            alias,
        ];
        for set in sets {
            args.extend(["--set", set]);
        }
        self.json(&args)["id"].as_u64().expect("a process id")
    }

    /// `api-key create NAME`, limited to `processes` (`--process`, none: every process);
    /// its login and secret.
    pub fn api_key(&self, name: &str, processes: &[&str]) -> (u64, String) {
        let mut args = vec!["api-key", "create", name];
        for process in processes {
            args.extend(["--process", process]);
        }
        let key = self.json(&args);
        (
            key["login"].as_u64().expect("a login"),
            key["secret"].as_str().expect("a secret").to_string(),
        )
    }

    /// The admin token of the server running on this data directory (its
    /// `server.json`).
    pub fn admin_token(&self) -> String {
        let info: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(self.path().join("server.json")).expect("server.json"),
        )
        .expect("server.json is JSON");
        info["token"].as_str().expect("a token").to_string()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = conveyor();
        command.arg("--data").arg(self.path()).args(args);
        command.env_remove("CONVEYOR_DATA");
        command
    }
}

/// A local HTTP server on 127.0.0.1 (port chosen by the OS) running `router` on its own
/// thread; it stops when the test process ends.
pub fn http_server(router: axum::Router) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.set_nonblocking(true).expect("nonblocking");
    let address = listener.local_addr().expect("local address");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            let _ = axum::serve(listener, router).await;
        });
    });
    address
}
