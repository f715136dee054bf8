//! Attacks on a published Bitrix OAuth process, as the security issue tried them: a
//! stranger holding only the public direct URL, a task API key, a reader process. Each
//! runs against the sandbox (the real Bitrix24 and notifier wire formats) with a local
//! listener standing in for the attacker's server, and asserts that the listener gets
//! nothing, the token keeps refreshing on time, no alert storm is sent, and each refusal
//! says why.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conveyor_sandbox::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Failure, Sandbox, Service};
use serde_json::{Map, Value, json};

use crate::bitrix::{BITRIX, sandbox};
use crate::engine::Engine;
use crate::http_api::{Server, http};
use crate::support::DataDir;

/// A stand-in for the attacker's server: it answers every request and remembers it.
fn attacker() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let router = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let log = log.clone();
        async move {
            if let Ok(mut seen) = log.lock() {
                seen.push(request.uri().to_string());
            }
            axum::Json(json!({"access_token": "stolen", "refresh_token": "stolen"}))
        }
    });
    let address = crate::support::http_server(router);
    (format!("http://{address}"), seen)
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("not an object"),
    }
}

/// The shipped process, published as the README says: credentials with `--set`, the
/// direct URL as the redirect URL; a Telegram notifier named in `notify_process`.
fn published(sandbox: &Sandbox, refresh_every: &str) -> (Server, String) {
    let data = DataDir::new();
    let url = sandbox.url().to_string();
    let c = sandbox.credentials().clone();
    data.ok(&[
        "process",
        "clone",
        "notify_telegram",
        "--alias",
        "alerts",
        "--set",
        &format!("bot_token={}", c.telegram_bot_token),
        "--set",
        "chat_id=4242",
        "--set",
        &format!("api_url={url}"),
    ]);
    data.ok(&[
        "process",
        "clone",
        "bitrix_oauth",
        "--alias",
        "bitrix",
        "--set",
        "portal=sandbox",
        "--set",
        &format!("client_id={DEFAULT_CLIENT_ID}"),
        "--set",
        &format!("client_secret={DEFAULT_CLIENT_SECRET}"),
        "--set",
        &format!("oauth_server={url}"),
        "--set",
        &format!("refresh_every={refresh_every}"),
        "--set",
        "notify_process=@alerts",
    ]);
    let direct = data.json(&["process", "url", "@bitrix"])["url"]
        .as_str()
        .expect("url")
        .to_string();
    let server = Server::start(data);
    let direct = direct.replace("http://127.0.0.1:7878", &server.base);
    (server, direct)
}

fn wait_for(server: &Server, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let task = server
            .data
            .json(&["task", "show", "@bitrix", "token", "--reveal"]);
        if done(&task) {
            return task;
        }
        assert!(Instant::now() < deadline, "never {what}: {task}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn refreshes(sandbox: &Sandbox) -> usize {
    sandbox
        .stats()
        .token_requests
        .iter()
        .filter(|r| r.grant_type.as_deref() == Some("refresh_token") && r.outcome == "ok")
        .count()
}

/// GET `url`; returns (status, body).
fn get(url: &str) -> (u16, String) {
    let response = http().get(url).send().expect("request");
    let status = response.status().as_u16();
    (status, response.text().unwrap_or_default())
}

#[test]
fn a_stranger_with_the_direct_url_cannot_steal_postpone_or_stop_the_token() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let sandbox = tokio.block_on(sandbox());
    let (evil, seen) = attacker();
    let (server, direct) = published(&sandbox, "2s");

    // The owner authorizes: the redirect delivers the code to the `token` task.
    let code = sandbox.issue_code(DEFAULT_CLIENT_ID).expect("code").code;
    let (status, body) = get(&format!(
        "{direct}?ref=token&code={code}&state=s1&domain=sandbox"
    ));
    assert_eq!(status, 200, "{body}");
    let task = wait_for(&server, "got a token", |t| t["node"] == "wait_refresh");
    let token = task["data"]["access_token"].clone();

    // Each hostile parameter is refused, named, and nothing is created or sent.
    for (query, refused) in [
        (
            format!("ref=token&code=x&oauth_server={evil}"),
            "oauth_server",
        ),
        (
            format!("ref=token&oauth_server={evil}&refresh_every=1s"),
            "oauth_server",
        ),
        ("ref=token&refresh_every=0s".to_string(), "refresh_every"),
        (
            "ref=token&refresh_every=1000000000d".to_string(),
            "refresh_every",
        ),
        (
            format!("ref=token&client_endpoint={evil}/rest/"),
            "client_endpoint",
        ),
        ("ref=token&client_secret=mine".to_string(), "client_secret"),
        (
            "ref=token&code=bogus&notify_process=@evil".to_string(),
            "notify_process",
        ),
        ("ref=token&access_token=forged".to_string(), "access_token"),
        (
            "ref=token&__conveyor_api_return_body__=x".to_string(),
            "__conveyor_api_return_body__",
        ),
    ] {
        let (status, body) = get(&format!("{direct}?{query}"));
        assert_eq!(status, 400, "{query:.80}: {body}");
        assert!(
            body.contains(refused),
            "{query:.80}: the refusal names `{refused}`: {body}"
        );
    }
    // A body too: ten 120 KB modifies cannot grow the task.
    for _ in 0..10 {
        let response = http()
            .post(&direct)
            .json(&json!({"ref": "token", "state": "s".repeat(120 * 1024)}))
            .send()
            .expect("post");
        assert_eq!(response.status().as_u16(), 400);
        let body = response.text().unwrap_or_default();
        assert!(
            body.contains("param `state`: is 122880 characters long"),
            "{body}"
        );
    }
    // No ref, or a ref the process does not publish: no task is made.
    for (query, says) in [
        (
            format!("code=x&oauth_server={evil}"),
            "makes no task without a `ref`",
        ),
        ("code=x".to_string(), "makes no task without a `ref`"),
        ("ref=other&code=x".to_string(), "takes only the ref `token`"),
    ] {
        let (status, body) = get(&format!("{direct}?{query}"));
        assert_eq!(status, 403, "{query}: {body}");
        assert!(body.contains(says), "{query}: {body}");
    }
    let list = server.data.json(&["task", "list", "@bitrix"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");

    // Bogus codes (a stranger's hits, a reloaded redirect page) change nothing: the token
    // stays, no alert is sent, and the refresh is not postponed.
    let before = refreshes(&sandbox);
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(4500) {
        let (status, body) = get(&format!(
            "{direct}?ref=token&code=bogus-{}",
            started.elapsed().as_millis()
        ));
        assert_eq!(status, 200, "{body}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let task = wait_for(&server, "waiting with a token", |t| {
        t["node"] == "wait_refresh"
    });
    assert_eq!(task["data"]["failure"], "", "{task}");
    assert!(
        task["data"]["rejected_code"]
            .as_str()
            .is_some_and(|r| r.contains("invalid_grant")),
        "{task}"
    );
    assert!(
        refreshes(&sandbox) >= before + 2,
        "the token kept refreshing every 2 s under a stream of bogus codes ({} refreshes in 4.5 s)",
        refreshes(&sandbox) - before
    );
    assert_ne!(task["data"]["access_token"], token, "refreshed");
    assert!(
        sandbox.messages(Service::Telegram).is_empty(),
        "no alert for a stranger's code"
    );

    assert!(
        seen.lock().map(|s| s.is_empty()).unwrap_or(false),
        "the attacker's server received: {:?}",
        seen.lock().map(|s| s.clone())
    );
    drop(server);
    drop(tokio);
}

#[test]
fn an_escalated_token_under_a_stream_of_bogus_codes_sends_a_few_alerts_and_one_summary() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let sandbox = tokio.block_on(sandbox());
    let (server, direct) = published(&sandbox, "25m");
    // Nobody has authorized yet: every code fails and escalates, each with an alert.
    for i in 0..20 {
        let (status, body) = get(&format!("{direct}?ref=token&code=bogus{i}"));
        assert_eq!(status, 200, "{body}");
        wait_for(&server, "escalated", |t| {
            let code = format!("bogus{i}");
            t["node"] == "not_updated"
                && (t["data"]["used_code"] == code || t["data"]["code"] == code)
        });
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while sandbox.messages(Service::Telegram).len() < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let sent = sandbox.messages(Service::Telegram).len();
    assert_eq!(
        sent, 5,
        "5 alerts in 10 minutes, the other 15 held back for one summary"
    );
    let alerts = server.data.json(&["task", "list", "@alerts"]);
    let summary: Vec<&Value> = alerts
        .as_array()
        .expect("list")
        .iter()
        .filter(|t| t["node"] == "start")
        .collect();
    assert_eq!(
        summary.len(),
        1,
        "one summary waits for the window to end: {alerts}"
    );
    let summary = server.data.json(&[
        "task",
        "show",
        "@alerts",
        summary[0]["id"].as_u64().expect("id").to_string().as_str(),
    ]);
    assert_eq!(summary["data"]["folded_count"], 15, "{summary}");
    drop(server);
    drop(tokio);
}

/// `refresh_every` rendered below the floor or past the ceiling is an error of the wait
/// (escalated, with the reason), never a spin and never a silent stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_every_that_would_spin_or_stop_escalates_with_the_reason() {
    let sandbox = sandbox().await;
    for (every, says) in [
        (
            "0s",
            "`0s` is shorter than the 1s this process allows (settings.min_wait)",
        ),
        (
            "400d",
            "`400d` is longer than the 366d this process allows (settings.max_wait)",
        ),
        ("1000000000d", "longer than the 100 years a duration may be"),
    ] {
        let e = Engine::new();
        e.clone_with(
            BITRIX,
            Some("bitrix"),
            json!({"oauth_server": sandbox.url()}),
        );
        let before = sandbox.stats().token_requests.len();
        let code = sandbox.issue_code(DEFAULT_CLIENT_ID).expect("code").code;
        e.add(
            "@bitrix",
            Some("token"),
            json!({"portal": "sandbox", "client_id": DEFAULT_CLIENT_ID,
                   "client_secret": DEFAULT_CLIENT_SECRET, "code": code, "refresh_every": every}),
        );
        e.idle().await;
        e.advance(Duration::from_secs(5)).await;
        let task = e.task("@bitrix", "token");
        assert_eq!(task.node, "not_updated", "{every}: {:?}", task.data);
        assert_eq!(task.data["error"], "bad_refresh_every");
        let failure = task.data["failure"].as_str().unwrap_or("");
        assert!(failure.contains(says), "{every}: {failure}");
        assert_eq!(
            sandbox.stats().token_requests.len() - before,
            1,
            "{every}: one exchange, no refresh storm"
        );
    }
}

/// A modify that matches no branch (a reloaded redirect page) sends the task back to
/// wait for the time that was left, not a fresh 25 minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modify_that_asks_for_nothing_does_not_postpone_the_refresh() {
    let sandbox = sandbox().await;
    let e = Engine::new();
    e.clone_with(
        BITRIX,
        Some("bitrix"),
        json!({"oauth_server": sandbox.url()}),
    );
    let code = sandbox.issue_code(DEFAULT_CLIENT_ID).expect("code").code;
    e.add(
        "@bitrix",
        Some("token"),
        json!({"portal": "sandbox", "client_id": DEFAULT_CLIENT_ID,
               "client_secret": DEFAULT_CLIENT_SECRET, "code": code}),
    );
    e.idle().await;
    let first = e.task("@bitrix", "token");
    assert_eq!(first.node, "wait_refresh");
    let due = first.wake.expect("a refresh timer").at;
    for minute in [5, 10, 15, 20] {
        e.advance(Duration::from_secs(300)).await;
        e.runtime
            .modify_task(
                "@bitrix",
                &conveyor_runtime::TaskKey("token".into()),
                object(json!({"state": format!("reload at {minute}")})),
                "test",
            )
            .expect("modify");
        e.idle().await;
        let task = e.task("@bitrix", "token");
        assert_eq!(task.node, "wait_refresh");
        assert_eq!(
            task.wake.map(|w| w.at),
            Some(due),
            "the deadline held after a modify"
        );
    }
    let refreshed_before = refreshes(&sandbox);
    let now = e.runtime.now();
    e.advance(Duration::from_millis((due - now + 1) as u64))
        .await;
    assert_eq!(
        refreshes(&sandbox),
        refreshed_before + 1,
        "refreshed on time"
    );
}

/// Secrets stay secret where they travel: echoed in an error body, read by another
/// process, read as a whole task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_read_or_echoed_elsewhere_stay_masked() {
    let echo = axum::Router::new().fallback(|request: axum::extract::Request| async move {
        (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "bad", "echo": request.uri().to_string()})),
        )
    });
    let address = crate::support::http_server(echo);
    let e = Engine::new();
    e.clone_process(
        &format!(
            r#"
process: holder
params:
  client_secret: {{ secret: true }}
nodes:
  start: {{ type: start, next: call }}
  call:
    type: api_call
    url: "http://{address}/x?secret={{{{client_secret}}}}"
    next: done
    on_error: failed
  failed: {{ type: wait_callback, next: done }}
  done: {{ type: final }}
"#
        ),
        Some("holder"),
    );
    e.add(
        "@holder",
        Some("token"),
        json!({"client_secret": "s3cr3t-value"}),
    );
    e.idle().await;
    let holder = e.task("@holder", "token");
    assert_eq!(holder.node, "failed");
    assert_eq!(
        holder.data["__conveyor_api_return_body__"]["echo"], "/x?secret=***",
        "the echoed secret is cut out of the stored body"
    );
    e.clone_process(
        r#"
process: reader
nodes:
  start: { type: start, next: read }
  read:
    type: set_param
    set:
      copied: "{{conv[@holder].ref[token].client_secret}}"
      whole: "{{conv[@holder].ref[token]}}"
      plain: "{{conv[@holder].ref[token].__conveyor_api_return_type_tag__}}"
    next: done
  done: { type: final }
"#,
        Some("reader"),
    );
    let id = e.add("@reader", None, json!({}));
    e.idle().await;
    let reader = e.task("@reader", &id.to_string());
    assert_eq!(reader.secret_keys, vec!["copied".to_string()]);
    let process = e.runtime.resolve("@reader").expect("reader");
    let shown = conveyor_runtime::mask_data(&process.process, &reader.secret_keys, &reader.data);
    assert_eq!(
        shown["copied"], "***",
        "a value read from a secret is secret here too"
    );
    assert_eq!(
        shown["whole"]["client_secret"], "***",
        "a whole-task read masks its secrets"
    );
    assert_ne!(shown["plain"], "***", "what is not secret is shown");
    let history = e.runtime.store().history(reader.id).expect("history");
    assert!(
        !format!("{history:?}").contains("s3cr3t-value"),
        "{history:?}"
    );
}

/// A modify that would grow the task past the limit is refused and changes nothing; the
/// owner's next good modify still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_cannot_fill_a_task_so_that_the_owners_next_code_fails() {
    let sandbox = sandbox().await;
    let e = Engine::new();
    e.clone_with(
        BITRIX,
        Some("bitrix"),
        json!({"oauth_server": sandbox.url()}),
    );
    let code = sandbox.issue_code(DEFAULT_CLIENT_ID).expect("code").code;
    e.add(
        "@bitrix",
        Some("token"),
        json!({"portal": "sandbox", "client_id": DEFAULT_CLIENT_ID,
               "client_secret": DEFAULT_CLIENT_SECRET, "code": code}),
    );
    e.idle().await;
    let key = conveyor_runtime::TaskKey("token".into());
    let mut refused = 0;
    for i in 0..10 {
        let junk = object(json!({ format!("junk{i}"): "j".repeat(120 * 1024 / 10 * 3) }));
        match e.runtime.modify_task("@bitrix", &key, junk, "test") {
            Ok(_) => {}
            Err(err) => {
                refused += 1;
                assert!(err.to_string().contains("nothing was changed"), "{err}");
            }
        }
    }
    assert!(refused >= 7, "most junk refused ({refused} of 10)");
    e.idle().await;
    sandbox
        .fail_next(Service::Token, 1, Failure::error("invalid_grant"))
        .expect("fail");
    e.advance(Duration::from_secs(25 * 60)).await;
    assert_eq!(e.task("@bitrix", "token").node, "not_updated");
    let code = sandbox.issue_code(DEFAULT_CLIENT_ID).expect("code").code;
    e.runtime
        .modify_task("@bitrix", &key, object(json!({"code": code})), "owner")
        .expect("the owner's code is taken");
    e.idle().await;
    let task = e.task("@bitrix", "token");
    assert_eq!(task.node, "wait_refresh", "{:?}", task.data.get("failure"));
}

/// The doors check what they are given: undeclared keys through the URL, types,
/// `__conveyor_` keys, values set by the process, keys the process writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_door_checks_the_declared_params() {
    let e = Engine::new();
    e.clone_with(
        r#"
process: p
params:
  n: { type: number, input: [create] }
  name: { type: string, max_length: 5, pattern: '^[a-z]+$' }
  owner: { }
  code: { input: [create, modify, url] }
direct_url: { refs: [only] }
nodes:
  start: { type: start, next: wait }
  wait: { type: wait_callback, next: mark }
  mark: { type: set_param, set: { result: "done" }, next: wait }
"#,
        Some("p"),
        json!({"owner": "me"}),
    );
    let add = |data: Value| e.runtime.add_task("@p", None, object(data)).map(|t| t.id);
    let said = |r: Result<u64, conveyor_runtime::RuntimeError>| r.expect_err("refused").to_string();
    assert_eq!(
        said(add(json!({"n": "5"}))),
        "param `n`: must be of type number"
    );
    assert_eq!(
        said(add(json!({"name": "toolong"}))),
        "param `name`: is 7 characters long; at most 5 are taken"
    );
    assert!(said(add(json!({"name": "AB"}))).contains("does not match the pattern"));
    assert_eq!(
        said(add(json!({"owner": "you"}))),
        "param `owner`: is set by process 1 (process clone --set) and no task may change it"
    );
    assert!(said(add(json!({"__conveyor_x": 1}))).contains("are the engine's"));
    let id = add(json!({"n": 5, "owner": "me", "free": "data is fine"})).expect("added");
    e.idle().await;
    let key = conveyor_runtime::TaskKey(id.to_string());
    let modify = |data: Value| {
        e.runtime
            .modify_task("@p", &key, object(data), "test")
            .map(|o| o.task)
    };
    assert!(said(modify(json!({"n": 6}))).contains("may not be set by a modify"));
    assert!(said(modify(json!({"result": "forged"}))).contains("does not take param `result`"));
    modify(json!({"free": "more", "n": 5})).expect("free data, and n unchanged");
    // The direct URL: declared url params only, published refs only.
    let url = |reference: Option<&str>, data: Value| {
        e.runtime
            .direct_url(1, reference, object(data))
            .map(|o| o.task)
            .map_err(|e| e.to_string())
    };
    assert_eq!(
        url(Some("only"), json!({"code": "c", "free": 1})).expect_err("refused"),
        "process 1 does not take param `free` through `url` (it takes code)"
    );
    assert!(
        url(Some("other"), json!({"code": "c"}))
            .expect_err("refused")
            .contains("takes only the ref `only`")
    );
    assert!(
        url(None, json!({"code": "c"}))
            .expect_err("refused")
            .contains("makes no task without a `ref`")
    );
    url(Some("only"), json!({"code": "c"})).expect("created");
}
