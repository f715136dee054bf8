//! The sealed store over both implementations: what reaches the disk, what comes back.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::test_support::{new_process, task};
use crate::*;

const SETTING_SECRET: &str = "SETTING-SECRET-q7Zr";
const TASK_SECRET: &str = "TASK-SECRET-w8Kp";
const TOKEN: &str = "TOKEN-SECRET-e9Lm";
const TAINTED: &str = "TAINTED-SECRET-r0Nx";
const INBOX_SECRET: &str = "INBOX-SECRET-t1Bv";
const VISIBLE: &str = "VISIBLE-NOTE-y2Cz";
/// A plain value that looks sealed (escaped when the sealed store writes it).
const LOOKALIKE: &str = "sealed:v1:0000:AAAA";
/// A value of an old store that starts like a sealed one, but not with `sealed:v1:`.
const LEGACY_LOOKALIKE: &str = "sealed:deal-42";

fn policy() -> Arc<dyn SealPolicy> {
    Arc::new(|definition: &str| {
        if definition.contains("secrets") {
            vec!["client_secret".to_string(), "access_token".to_string()]
        } else {
            Vec::new()
        }
    })
}

/// The store in `dir`, sealed with `key`. A store dropped a moment ago may still be
/// locked (another test's child process, forked while its lock file was open, holds it
/// until it execs): tried again for up to 5 s.
fn sealed(dir: &Path, kind: StoreKind, key: u8) -> SealedStore {
    let options = StoreOptions {
        kind,
        ..StoreOptions::default()
    };
    let inner = crate::test_support::retry_locked(|| open(dir, options)).unwrap();
    SealedStore::new(inner, Keyring::new(Sealer::new(&[key; 32])), policy())
}

/// Every byte of every file under `dir`.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        } else {
            out.extend(std::fs::read(&path).unwrap());
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn object(value: Value) -> serde_json::Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("an object"),
    }
}

/// A process with a secret setting, a task with secrets (declared and tainted) and an
/// inbox message with one.
fn fill(store: &dyn Store, lookalike: &str) -> (u64, u64) {
    fill_by(store, lookalike, |store, batch| {
        store.commit(batch).unwrap()
    })
}

/// [`fill`], its batch committed by `commit`.
fn fill_by(store: &dyn Store, lookalike: &str, commit: impl Fn(&dyn Store, &Batch)) -> (u64, u64) {
    let mut new = new_process(Some("bitrix"));
    new.definition = "process: t\nsecrets: [client_secret, access_token]".into();
    new.settings = object(json!({"client_secret": SETTING_SECRET, "portal": "acme"}));
    let process = store.create_process(new).unwrap();
    let id = store.next_task_id().unwrap();
    let mut t = task(id, process.id, "start");
    t.reference = Some("token".into());
    t.data = object(json!({
        "client_secret": TASK_SECRET,
        "access_token": TOKEN,
        "copied": TAINTED,
        "note": VISIBLE,
        "lookalike": lookalike,
        "n": 5,
    }));
    t.secret_keys = vec!["copied".into()];
    let mut batch = Batch::default();
    batch.push(Op::PutTask(Box::new(t)));
    batch.push(Op::IndexTask {
        process: process.id,
        task: id,
    });
    batch.push(Op::InsertRef {
        process: process.id,
        reference: "token".into(),
        task: id,
    });
    batch.push(Op::Inbox {
        task: id,
        seq: 0,
        message: InboxMessage::Modify {
            data: object(json!({"access_token": INBOX_SECRET, "note": VISIBLE})),
            source: "cli".into(),
        },
    });
    commit(store, &batch);
    store.flush().unwrap();
    (process.id, id)
}

fn check_plaintext(store: &dyn Store, process: u64, task_id: u64, lookalike: &str) {
    let p = store.process(process).unwrap().unwrap();
    assert_eq!(p.settings["client_secret"], json!(SETTING_SECRET));
    assert_eq!(p.settings["portal"], json!("acme"));
    let t = store.task(task_id).unwrap().unwrap();
    assert_eq!(t.data["client_secret"], json!(TASK_SECRET));
    assert_eq!(t.data["access_token"], json!(TOKEN));
    assert_eq!(t.data["copied"], json!(TAINTED));
    assert_eq!(t.data["lookalike"], json!(lookalike));
    assert_eq!(t.data["n"], json!(5));
    let keys: Vec<&String> = t.data.keys().collect();
    assert_eq!(
        keys,
        [
            "client_secret",
            "access_token",
            "copied",
            "note",
            "lookalike",
            "n"
        ],
        "key order kept"
    );
    assert_eq!(
        store.task_by_ref(process, "token").unwrap().unwrap().data,
        t.data
    );
    assert_eq!(store.tasks(process, None, 10).unwrap()[0].data, t.data);
    let inbox = store.inbox(task_id).unwrap();
    match &inbox[0].1 {
        InboxMessage::Modify { data, .. } => {
            assert_eq!(data["access_token"], json!(INBOX_SECRET))
        }
        other => panic!("{other:?}"),
    }
}

fn no_secret_on_disk(kind: StoreKind, quick: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let store = sealed(&data, kind, 1);
    let (process, task_id) = if quick {
        // A store's first commit marks its format, never in place: make one first (a
        // frame that changes nothing).
        let mut nothing = Batch::default();
        nothing.push(Op::ClearReady(u64::MAX));
        store.commit(&nothing).unwrap();
        // Committed in place (the log store's background flusher may hold its writer a
        // moment: try a few times).
        fill_by(&store, LOOKALIKE, |store, batch| {
            let done = (0..20).find_map(|_| {
                let done = store.commit_quick(batch, Linger::May);
                if done.is_none() {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                done
            });
            assert!(matches!(done, Some(Ok(()))), "{done:?}");
        })
    } else {
        fill(&store, LOOKALIKE)
    };
    check_plaintext(&store, process, task_id, LOOKALIKE);
    let bytes = all_bytes(&data);
    assert!(
        contains(&bytes, VISIBLE),
        "the raw bytes are readable at all"
    );
    for secret in [SETTING_SECRET, TASK_SECRET, TOKEN, TAINTED, INBOX_SECRET] {
        assert!(!contains(&bytes, secret), "{secret} is on disk in clear");
    }
    // Underneath, the values are sealed strings.
    let raw = store.inner().task(task_id).unwrap().unwrap();
    assert!(sealed_with(&raw.data["client_secret"]).is_some());
    assert_eq!(raw.data["note"], json!(VISIBLE));
    drop(store);
    // Opened again with the same key: plaintext again; with another key: a typed error.
    let store = sealed(&data, kind, 1);
    check_plaintext(&store, process, task_id, LOOKALIKE);
    drop(store);
    let store = sealed(&data, kind, 2);
    let error = store.task(task_id).unwrap_err();
    assert!(
        matches!(error, StoreError::Sealed(SealError::UnknownKey { .. })),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("task 1, key `client_secret`"),
        "{error}"
    );
    assert!(store.process(process).is_err());
}

#[test]
fn log_store_holds_no_secret_in_clear() {
    no_secret_on_disk(StoreKind::Log, false);
}

/// A commit made in place (`Store::commit_quick`, a step's on an idle store) is sealed
/// as any other.
#[test]
fn log_store_holds_no_secret_in_clear_after_a_quick_commit() {
    no_secret_on_disk(StoreKind::Log, true);
}

#[test]
fn sled_store_holds_no_secret_in_clear() {
    no_secret_on_disk(StoreKind::Sled, false);
}

/// sled never commits in place, and the sealed store over it does no sealing for a
/// quick commit it cannot make.
#[test]
fn a_sealed_sled_store_answers_a_quick_commit_with_none_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = sealed(tmp.path(), StoreKind::Sled, 1);
    assert!(!store.commits_in_place());
    let mut batch = Batch::default();
    batch.push(Op::PutTask(Box::new(task(7, 1, "start"))));
    assert!(store.commit_quick(&batch, Linger::May).is_none());
    assert!(store.task(7).unwrap().is_none());
}

#[test]
fn a_ciphertext_moved_to_another_task_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = sealed(tmp.path(), StoreKind::Log, 1);
    let (process, task_id) = fill(&store, LOOKALIKE);
    let raw = store.inner().task(task_id).unwrap().unwrap();
    let other_id = store.next_task_id().unwrap();
    let mut other = task(other_id, process, "start");
    other.data = object(json!({"note": raw.data["client_secret"].clone()}));
    let mut batch = Batch::default();
    batch.push(Op::PutTask(Box::new(other)));
    store.inner().commit(&batch).unwrap();
    let error = store.task(other_id).unwrap_err();
    assert!(
        matches!(error, StoreError::Sealed(SealError::Tampered { .. })),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains(&format!("task {other_id}, key `note`")),
        "{error}"
    );
}

#[test]
fn clear_secrets_of_an_old_store_stay_readable_and_get_sealed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Written before sealing existed.
    let plain = open(&data, StoreOptions::default()).unwrap();
    let (process, task_id) = fill(plain.as_ref(), LEGACY_LOOKALIKE);
    drop(plain);
    let store = sealed(&data, StoreKind::Log, 1);
    check_plaintext(&store, process, task_id, LEGACY_LOOKALIKE);
    let report = store.reseal(1).unwrap();
    assert_eq!(
        report,
        ResealReport {
            processes: 1,
            tasks: 1,
            messages: 1
        }
    );
    check_plaintext(&store, process, task_id, LEGACY_LOOKALIKE);
    let raw = store.inner().task(task_id).unwrap().unwrap();
    assert!(sealed_with(&raw.data["access_token"]).is_some());
    // Nothing left to do.
    assert_eq!(store.reseal(1).unwrap(), ResealReport::default());
}

#[test]
fn reseal_moves_every_value_to_the_new_key() {
    let tmp = tempfile::tempdir().unwrap();
    for kind in [StoreKind::Log, StoreKind::Sled] {
        let data = tmp.path().join(format!("{kind:?}"));
        let store = sealed(&data, kind, 1);
        let (process, task_id) = fill(&store, LOOKALIKE);
        let old = Sealer::new(&[1; 32]);
        let new = Sealer::new(&[3; 32]);
        store.set_keyring(Keyring::new(new.clone()).with_older(old.clone()));
        let report = store.reseal(2).unwrap();
        assert_eq!(report.tasks, 1);
        assert_eq!(report.processes, 1);
        assert_eq!(report.messages, 1);
        // Only the new key is needed now.
        store.set_keyring(Keyring::new(new.clone()));
        check_plaintext(&store, process, task_id, LOOKALIKE);
        let raw = store.inner().task(task_id).unwrap().unwrap();
        assert_eq!(sealed_with(&raw.data["client_secret"]), Some(new.id()));
        let raw = store.inner().process(process).unwrap().unwrap();
        assert_eq!(sealed_with(&raw.settings["client_secret"]), Some(new.id()));
    }
}

#[test]
fn an_update_that_makes_a_setting_secret_seals_it() {
    let tmp = tempfile::tempdir().unwrap();
    let store = sealed(tmp.path(), StoreKind::Log, 1);
    let mut new = new_process(None);
    new.settings = object(json!({"client_secret": SETTING_SECRET}));
    let process = store.create_process(new).unwrap();
    let raw = store.inner().process(process.id).unwrap().unwrap();
    assert_eq!(
        raw.settings["client_secret"],
        json!(SETTING_SECRET),
        "not secret yet"
    );
    let updated = store
        .update_process(process.id, "process: t\nsecrets: [client_secret]".into())
        .unwrap();
    assert_eq!(updated.version, 2);
    assert_eq!(updated.settings["client_secret"], json!(SETTING_SECRET));
    let raw = store.inner().process(process.id).unwrap().unwrap();
    assert!(sealed_with(&raw.settings["client_secret"]).is_some());
    assert_eq!(raw.version, 2);
    // Tasks written from now on seal the key too (the policy follows the version).
    let id = store.next_task_id().unwrap();
    let mut t = task(id, process.id, "start");
    t.data = object(json!({"client_secret": TASK_SECRET}));
    let mut batch = Batch::default();
    batch.push(Op::PutTask(Box::new(t)));
    store.commit(&batch).unwrap();
    let raw = store.inner().task(id).unwrap().unwrap();
    assert!(sealed_with(&raw.data["client_secret"]).is_some());
}
