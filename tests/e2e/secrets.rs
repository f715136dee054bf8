//! Secrets sealed at rest, through the real binary: no secret value in the bytes of the
//! data dir, `--reveal` still shows them, a copy of the data dir without its key does not
//! open, and `secrets rotate-key` moves everything to a new key.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{DataDir, key_dir};

const SETTING_SECRET: &str = "SETTING-CS-8dQ2vX";
const TASK_SECRET: &str = "TASK-CS-4kT9wZ";
const CODE: &str = "CODE-7hJ3pL";

/// Every file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read dir") {
                stack.push(entry.expect("entry").path());
            }
        } else {
            out.push(path);
        }
    }
    out
}

/// The files under `dir` whose bytes contain `needle`.
fn holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|path| {
            let bytes = std::fs::read(path).unwrap_or_default();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    for file in files(from) {
        let target = to.join(file.strip_prefix(from).expect("under"));
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        std::fs::copy(&file, &target).expect("copy");
    }
}

fn seal_key(data: &Path) -> String {
    let text = std::fs::read_to_string(data.join("seal.json")).expect("seal.json");
    let record: Value = serde_json::from_str(&text).expect("JSON");
    record["key"].as_str().expect("key id").to_string()
}

/// Clones bitrix_oauth twice, once with a secret setting, and adds two tasks: one with
/// its own client secret and a code (`@own`), one that gets the setting's (`@bitrix`).
fn fill(d: &DataDir, kind: &str) {
    d.ok(&[
        "--store-kind",
        kind,
        "process",
        "clone",
        "bitrix_oauth",
        "--alias",
        "bitrix",
        "--set",
        &format!("client_secret={SETTING_SECRET}"),
    ]);
    // A process without the setting: its task brings its own client secret (a task may
    // not change a value the process was given with --set).
    d.ok(&["process", "clone", "bitrix_oauth", "--alias", "own"]);
    d.ok(&[
        "task",
        "add",
        "@own",
        "--ref",
        "token",
        "portal=acme",
        "client_id=app",
        &format!("client_secret={TASK_SECRET}"),
        &format!("code={CODE}"),
    ]);
    d.ok(&[
        "task",
        "add",
        "@bitrix",
        "--ref",
        "second",
        "portal=acme",
        "client_id=app",
        "code=x",
    ]);
}

fn check_revealed(d: &DataDir) {
    let token = d.json(&["task", "show", "@own", "token", "--reveal"]);
    assert_eq!(token["data"]["client_secret"], TASK_SECRET);
    assert_eq!(token["data"]["code"], CODE);
    let second = d.json(&["task", "show", "@bitrix", "second", "--reveal"]);
    assert_eq!(second["data"]["client_secret"], SETTING_SECRET);
    let masked = d.json(&["task", "show", "@own", "token"]);
    assert_eq!(masked["data"]["client_secret"], "***");
}

#[test]
fn secrets_are_sealed_in_the_data_dir_of_both_stores() {
    for kind in ["log", "sled"] {
        let d = DataDir::new();
        fill(&d, kind);
        check_revealed(&d);
        assert!(
            !holding(d.path(), "acme").is_empty(),
            "{kind}: the data dir's bytes hold the clear values that are not secret"
        );
        for secret in [SETTING_SECRET, TASK_SECRET, CODE] {
            let found = holding(d.path(), secret);
            assert!(found.is_empty(), "{kind}: {secret} in clear in {found:?}");
        }
        // The key is outside the data dir, readable by its owner only.
        let id = seal_key(d.path());
        let key_file = key_dir().join(format!("{id}.key"));
        assert!(key_file.exists(), "{kind}: {}", key_file.display());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&key_file)
                .expect("key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{kind}");
        }
    }
}

#[test]
fn a_copied_data_dir_without_its_key_does_not_open() {
    let d = DataDir::new();
    fill(&d, "log");
    let id = seal_key(d.path());
    let copy = tempfile::tempdir().expect("temp");
    copy_dir(d.path(), copy.path());
    let no_keys = tempfile::tempdir().expect("temp");
    let output = crate::support::conveyor()
        .arg("--data")
        .arg(copy.path())
        .args(["task", "show", "@own", "token", "--reveal"])
        .env("CONVEYOR_KEY_DIR", no_keys.path())
        .env_remove("CONVEYOR_DATA")
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("sealed with key {id}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("CONVEYOR_KEY_DIR") && stderr.contains("CONVEYOR_SECRET_KEY"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&output.stdout).contains(TASK_SECRET));
    assert!(
        std::fs::read_dir(no_keys.path())
            .expect("dir")
            .next()
            .is_none(),
        "no key was made for a data dir that has one"
    );
    // With the key given in the environment, it opens.
    let key = std::fs::read_to_string(key_dir().join(format!("{id}.key"))).expect("key");
    let output = crate::support::conveyor()
        .arg("--data")
        .arg(copy.path())
        .args(["--json", "task", "show", "@own", "token", "--reveal"])
        .env("CONVEYOR_KEY_DIR", no_keys.path())
        .env("CONVEYOR_SECRET_KEY", key.trim())
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let shown: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(shown["data"]["client_secret"], TASK_SECRET);
}

#[test]
fn rotate_key_reseals_everything_and_drops_the_old_key() {
    let d = DataDir::new();
    fill(&d, "log");
    let old = seal_key(d.path());
    let stdout = d.ok(&["secrets", "rotate-key"]);
    let new = seal_key(d.path());
    assert_ne!(new, old);
    assert!(
        stdout.contains(&format!("rotated to key {new}")),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("replaces {old}")), "{stdout}");
    assert!(
        stdout.contains("re-sealed 2 task(s), the settings of 1 process(es)"),
        "{stdout}"
    );
    assert!(stdout.contains("removed the old key file"), "{stdout}");
    assert!(!key_dir().join(format!("{old}.key")).exists());
    assert!(key_dir().join(format!("{new}.key")).exists());
    let record = std::fs::read_to_string(d.path().join("seal.json")).expect("seal.json");
    assert!(!record.contains(&old), "{record}");
    check_revealed(&d);
    // Every sealed value on disk is under the new key now (old frames of the log may
    // still hold ciphertexts under the old key until compaction; that key is gone).
    let store = crate::support::open_store(d.path());
    for (process, reference) in [(2, "token"), (1, "second")] {
        let task = store
            .task_by_ref(process, reference)
            .expect("read")
            .expect("task");
        assert_eq!(
            conveyor_store::sealed_with(&task.data["client_secret"]),
            Some(new.as_str()),
            "{reference}"
        );
    }
    let process = store.process(1).expect("read").expect("process");
    assert_eq!(
        conveyor_store::sealed_with(&process.settings["client_secret"]),
        Some(new.as_str())
    );
    drop(store);
    // Again, keeping the old key this time.
    let json = d.json(&["secrets", "rotate-key", "--keep-old"]);
    assert_eq!(json["replaced"], serde_json::json!([new]));
    assert_eq!(json["tasks"], 2);
    assert!(key_dir().join(format!("{new}.key")).exists(), "kept");
    check_revealed(&d);
}

#[test]
fn through_a_running_server_secrets_are_sealed_and_rotation_waits_for_it_to_stop() {
    let d = DataDir::new();
    // Its engine tries the code at once: against a closed local port, never the network.
    d.ok(&[
        "process",
        "clone",
        "bitrix_oauth",
        "--alias",
        "bitrix",
        "--set",
        "oauth_server=http://127.0.0.1:9",
    ]);
    let mut server = crate::http_api::Server::start(d);
    // Added through the server (the command is forwarded to it). Its engine tries the
    // code at once: against a closed local port, never the network.
    server.data.ok(&[
        "task",
        "add",
        "@bitrix",
        "--ref",
        "token",
        "portal=acme",
        "client_id=app",
        &format!("client_secret={TASK_SECRET}"),
        &format!("code={CODE}"),
    ]);
    let shown = server
        .data
        .json(&["task", "show", "@bitrix", "token", "--reveal"]);
    assert_eq!(shown["data"]["client_secret"], TASK_SECRET);
    let (code, _, stderr) = server.data.run(&["secrets", "rotate-key"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("stop it first"), "{stderr}");
    for secret in [TASK_SECRET, CODE] {
        let found = holding(server.data.path(), secret);
        assert!(found.is_empty(), "{secret} in clear in {found:?}");
    }
    let old = seal_key(server.data.path());
    server.stop();
    let d = &server.data;
    d.ok(&["secrets", "rotate-key"]);
    assert_ne!(seal_key(d.path()), old);
    let shown = d.json(&["task", "show", "@bitrix", "token", "--reveal"]);
    assert_eq!(shown["data"]["client_secret"], TASK_SECRET);
}

#[test]
fn a_rotation_cut_short_opens_with_both_keys_and_finishes_when_run_again() {
    let d = DataDir::new();
    fill(&d, "log");
    let old = seal_key(d.path());
    // What a crash after the new key and the record were written leaves: both keys named,
    // every value still sealed with the old one.
    let key = [7u8; 32];
    let new = conveyor_store::key_id(&key);
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(key_dir().join(format!("{new}.key")), hex).expect("key file");
    std::fs::write(
        d.path().join("seal.json"),
        serde_json::json!({"version": 1, "key": new, "previous": [old]}).to_string(),
    )
    .expect("record");
    check_revealed(&d);
    let stdout = d.ok(&["secrets", "rotate-key"]);
    assert!(
        stdout.contains(&format!("finished the rotation to key {new}")),
        "{stdout}"
    );
    assert!(stdout.contains("re-sealed 2 task(s)"), "{stdout}");
    assert_eq!(seal_key(d.path()), new);
    assert!(!key_dir().join(format!("{old}.key")).exists());
    check_revealed(&d);
    let _ = std::fs::remove_file(key_dir().join(format!("{new}.key")));
}
