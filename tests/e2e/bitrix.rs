//! The Bitrix story end to end against the sandbox: the shipped `bitrix_oauth` process,
//! the `bitrix_deals` consumer and the five notifier processes, with a manual engine
//! clock (no 25-minute sleeps) and the sandbox's own clock moved by hand.

use std::time::{Duration, Instant};

use conveyor_sandbox::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Failure, Sandbox, SandboxConfig, Service,
};
use conveyor_store::{EventKind, TaskStatus};
use serde_json::{Map, Value, json};

use crate::engine::Engine;

pub const BITRIX: &str = include_str!("../../processes/bitrix_oauth.yaml");
pub const DEALS: &str = include_str!("../../processes/bitrix_deals.yaml");

pub async fn sandbox() -> Sandbox {
    Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox starts")
}

pub(crate) fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("not an object"),
    }
}

/// A token task's data for the sandbox's default application.
fn token_data(code: &str, notify: &str) -> Value {
    json!({
        "portal": "sandbox",
        "client_id": DEFAULT_CLIENT_ID,
        "client_secret": DEFAULT_CLIENT_SECRET,
        "scope": "crm",
        "code": code,
        "notify_process": notify,
    })
}

/// The OAuth server is the process's own setting (`process clone --set oauth_server=…`):
/// no task may change where the client secret is sent.
fn sandbox_settings(sandbox: &Sandbox) -> Value {
    json!({ "oauth_server": sandbox.url() })
}

fn new_code(sandbox: &Sandbox) -> String {
    sandbox.issue_code(DEFAULT_CLIENT_ID).expect("a code").code
}

async fn connected(e: &Engine, sandbox: &Sandbox) -> conveyor_store::TaskRecord {
    e.clone_with(BITRIX, Some("bitrix"), sandbox_settings(sandbox));
    let code = new_code(sandbox);
    e.add("@bitrix", Some("token"), token_data(&code, ""));
    e.idle().await;
    let task = e.task("@bitrix", "token");
    assert_eq!(task.node, "wait_refresh", "{:?}", task.data.get("failure"));
    task
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Calls a REST method with a token; returns (status, body).
async fn rest(sandbox: &Sandbox, token: &str) -> (u16, Value) {
    let response = http()
        .get(format!("{}/rest/profile", sandbox.url()))
        .query(&[("auth", token)])
        .send()
        .await
        .expect("rest");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn refresh_with(sandbox: &Sandbox, refresh_token: &str) -> (u16, Value) {
    let response = http()
        .get(format!("{}/oauth/token/", sandbox.url()))
        .query(&[
            ("grant_type", "refresh_token"),
            ("client_id", DEFAULT_CLIENT_ID),
            ("client_secret", DEFAULT_CLIENT_SECRET),
            ("refresh_token", refresh_token),
        ])
        .send()
        .await
        .expect("token");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn text(task: &conveyor_store::TaskRecord, key: &str) -> String {
    task.data
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_then_three_refreshes_rotate_and_every_superseded_token_is_rejected() {
    let sandbox = sandbox().await;
    let e = Engine::new();
    let first = connected(&e, &sandbox).await;
    assert!(!text(&first, "access_token").is_empty());
    assert_eq!(
        text(&first, "client_endpoint"),
        format!("{}/rest/", sandbox.url())
    );
    let mut pairs = vec![(text(&first, "access_token"), text(&first, "refresh_token"))];
    for _ in 0..3 {
        e.advance(Duration::from_secs(25 * 60 - 1)).await;
        assert_eq!(
            text(&e.task("@bitrix", "token"), "access_token"),
            pairs.last().expect("pair").0,
            "not before 25 min"
        );
        e.advance(Duration::from_secs(1)).await;
        let task = e.task("@bitrix", "token");
        assert_eq!(task.node, "wait_refresh");
        let pair = (text(&task, "access_token"), text(&task, "refresh_token"));
        assert_ne!(&pair, pairs.last().expect("pair"), "rotated");
        pairs.push(pair);
    }
    let (current, older) = pairs.split_last().expect("pairs");
    assert_eq!(
        rest(&sandbox, &current.0).await.0,
        200,
        "the stored token works"
    );
    for (access, refresh) in older {
        let (status, body) = rest(&sandbox, access).await;
        assert_eq!(status, 401, "{body}");
        let (status, body) = refresh_with(&sandbox, refresh).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );
    }
    let grants: Vec<(Option<String>, String)> = sandbox
        .stats()
        .token_requests
        .iter()
        .filter(|r| !r.forced)
        .map(|r| (r.grant_type.clone(), r.outcome.clone()))
        .collect();
    assert_eq!(grants[0], (Some("authorization_code".into()), "ok".into()));
    assert_eq!(grants[1..4].iter().filter(|g| g.1 == "ok").count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_reads_the_token_and_an_expired_token_is_refreshed_exactly_once() {
    let sandbox = sandbox().await;
    let e = Engine::new();
    connected(&e, &sandbox).await;
    e.clone_process(DEALS, Some("deals"));
    e.add("@deals", Some("first"), json!({}));
    e.idle().await;
    let first = e.task("@deals", "first");
    assert_eq!(first.node, "done", "{:?}", first.data);
    assert_eq!(first.data["total"], 3);
    assert_eq!(first.data["deals"].as_array().map(Vec::len), Some(3));
    // The token never shows in the consumer's history.
    let token = text(&e.task("@bitrix", "token"), "access_token");
    let history = serde_json::to_string(&e.runtime.store().history(first.id).expect("history"))
        .expect("json");
    assert!(history.contains("auth=***"), "{history}");
    assert!(!history.contains(&token));

    // The access token expires (an hour passes for Bitrix); five consumers hit it together.
    sandbox.advance_clock(3601);
    let refreshes_before = sandbox.stats().token_requests.len();
    for i in 0..5 {
        e.add("@deals", Some(&format!("c{i}")), json!({}));
    }
    e.idle().await;
    // Each consumer met the expired token (or, racing with the refresh, the superseded
    // one) and waits to retry; one that started after the refresh is already done.
    let waiting = (0..5)
        .filter(|i| {
            let t = e.task("@deals", &format!("c{i}"));
            assert!(
                t.node == "wait_new_token" || t.node == "done",
                "{:?}",
                t.data
            );
            t.node == "wait_new_token"
        })
        .count();
    assert!(waiting >= 1);
    e.advance(Duration::from_secs(2)).await;
    for i in 0..5 {
        let task = e.task("@deals", &format!("c{i}"));
        assert_eq!(task.node, "done", "{:?}", task.data);
    }
    let refreshes: Vec<_> = sandbox.stats().token_requests[refreshes_before..]
        .iter()
        .map(|r| (r.grant_type.clone(), r.outcome.clone()))
        .collect();
    assert_eq!(
        refreshes,
        vec![(Some("refresh_token".into()), "ok".into())],
        "exactly one refresh"
    );
    assert_ne!(text(&e.task("@bitrix", "token"), "access_token"), token);
}

/// The five notifier processes, cloned with the sandbox's credentials.
pub(crate) fn clone_notifiers(e: &Engine, sandbox: &Sandbox) -> Vec<(&'static str, Service)> {
    let c = sandbox.credentials().clone();
    let url = sandbox.url().to_string();
    let settings: Vec<(&str, &str, Value, Service)> = vec![
        (
            "tg",
            "notify_telegram",
            json!({"bot_token": c.telegram_bot_token, "chat_id": "4242", "api_url": url}),
            Service::Telegram,
        ),
        (
            "twilio",
            "notify_twilio",
            json!({"account_sid": c.twilio_account_sid, "auth_token": c.twilio_auth_token, "from": "+15550001111", "to": "+15550002222", "api_url": url}),
            Service::Twilio,
        ),
        (
            "mb",
            "notify_messagebird",
            json!({"access_key": c.messagebird_access_key, "originator": "Conveyor", "recipients": "31612345678", "api_url": url}),
            Service::Messagebird,
        ),
        (
            "mandrill",
            "notify_mandrill",
            json!({"key": c.mandrill_key, "from_email": "robot@example.com", "to_email": "author@example.com", "api_url": url}),
            Service::Mandrill,
        ),
        (
            "unisender",
            "notify_unisender",
            json!({"api_key": c.unisender_api_key, "sender_email": "robot@example.com", "email": "author@example.com", "list_id": "1", "api_url": url}),
            Service::Unisender,
        ),
    ];
    settings
        .into_iter()
        .map(|(alias, template, values, service)| {
            let yaml = std::fs::read_to_string(
                crate::support::repo_root().join(format!("processes/{template}.yaml")),
            )
            .expect("template");
            e.runtime
                .clone_process(template, &yaml, Some(alias), object(values))
                .expect("clone notifier");
            (alias, service)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_escalate_with_the_reason_and_alert_every_notifier() {
    let sandbox = sandbox().await;
    let e = Engine::new();
    e.clone_with(BITRIX, Some("bitrix"), sandbox_settings(&sandbox));
    let notifiers = clone_notifiers(&e, &sandbox);
    // Half the tokens get a code older than 30 s; the other half an invalid_grant refresh.
    for (i, (alias, _)) in notifiers.iter().enumerate() {
        let code = new_code(&sandbox);
        if i % 2 == 0 {
            sandbox.advance_clock(31);
        }
        e.add(
            "@bitrix",
            Some(&format!("token-{alias}")),
            token_data(&code, &format!("@{alias}")),
        );
        e.idle().await;
    }
    sandbox
        .fail_next(Service::Token, 2, Failure::error("invalid_grant"))
        .expect("fail next");
    e.advance(Duration::from_secs(25 * 60)).await;

    for (i, (alias, service)) in notifiers.iter().enumerate() {
        let task = e.task("@bitrix", &format!("token-{alias}"));
        assert_eq!(
            (task.node.as_str(), task.status),
            ("not_updated", TaskStatus::Waiting),
            "{alias}"
        );
        let (error, failure) = if i % 2 == 0 {
            (
                "expired_token",
                "HTTP 401: expired_token (The authorization token provided has expired.)",
            )
        } else {
            ("invalid_grant", "HTTP 400: invalid_grant")
        };
        assert_eq!(
            (
                text(&task, "error").as_str(),
                text(&task, "failure").as_str()
            ),
            (error, failure),
            "{alias}"
        );
        let messages = sandbox.messages(*service);
        assert_eq!(messages.len(), 1, "{alias}: {messages:?}");
        assert!(
            messages[0].text.contains("Bitrix OAuth for sandbox"),
            "{alias}: {}",
            messages[0].text
        );
        assert!(
            messages[0].text.contains(failure),
            "{alias}: {}",
            messages[0].text
        );
        let notified = e.task(
            &format!("@{alias}"),
            &e.runtime
                .store()
                .tasks(
                    e.runtime
                        .resolve(&format!("@{alias}"))
                        .expect("process")
                        .record
                        .id,
                    None,
                    10,
                )
                .expect("tasks")[0]
                .id
                .to_string(),
        );
        assert_eq!(
            notified.node,
            "sent",
            "{alias}: {:?}",
            notified.data.get("reason")
        );
    }
    // The wire formats as the services received them.
    let tg = &sandbox.messages(Service::Telegram)[0];
    assert_eq!(tg.to, vec!["4242".to_string()]);
    let twilio = &sandbox.messages(Service::Twilio)[0];
    assert_eq!(
        (twilio.from.as_deref(), twilio.to.clone()),
        (Some("+15550001111"), vec!["+15550002222".to_string()])
    );
    let mandrill = &sandbox.messages(Service::Mandrill)[0];
    assert!(
        mandrill
            .subject
            .as_deref()
            .unwrap_or("")
            .contains("access_token doesn't update")
    );
    // The escalation node counts them all.
    let counters = e.runtime.store().counters(1).expect("counters");
    let held = counters
        .iter()
        .find(|(n, _)| n == "not_updated")
        .map(|(_, c)| c.now);
    assert_eq!(held, Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_and_a_timeout_are_retried_and_a_new_code_recovers_an_escalated_task() {
    let sandbox = sandbox().await;
    let e = Engine::new();
    // The same process with a short request timeout, so that the test need not wait 15 s.
    e.clone_with(
        &BITRIX.replace("request_timeout: 15s", "request_timeout: 1s"),
        Some("bitrix"),
        sandbox_settings(&sandbox),
    );
    sandbox
        .fail_next(Service::Token, 1, Failure::Status { status: 503 })
        .expect("fail");
    let code = new_code(&sandbox);
    e.add("@bitrix", Some("token"), token_data(&code, ""));
    e.idle().await;
    assert_eq!(
        e.task("@bitrix", "token").node,
        "get_token",
        "waiting to retry"
    );
    e.advance(Duration::from_secs(1)).await;
    assert_eq!(e.task("@bitrix", "token").node, "wait_refresh");

    sandbox
        .fail_next(Service::Token, 1, Failure::Delay { ms: 2500 })
        .expect("fail");
    e.advance(Duration::from_secs(25 * 60)).await;
    let task = e.task("@bitrix", "token");
    assert_eq!(task.node, "refresh", "timed out, waiting to retry");
    // The retry (real time: right after the 1 s timeout, before the slow answer) works.
    e.advance(Duration::from_secs(2)).await;
    let task = e.task("@bitrix", "token");
    let outcomes: Vec<String> = e
        .runtime
        .store()
        .history(task.id)
        .expect("history")
        .iter()
        .filter_map(|h| match &h.kind {
            EventKind::ApiRequest { outcome, .. } => Some(outcome.to_string()),
            _ => None,
        })
        .collect();
    // exchange: 503 then ok; refresh: timeout then ok.
    assert_eq!(outcomes.len(), 4, "{outcomes:?}");
    assert!(outcomes[0].contains("HTTP 503"), "{outcomes:?}");
    assert_eq!(outcomes[1], "ok");
    assert!(
        outcomes[2].contains("no complete answer within 1s"),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[3], "ok");
    assert_eq!(task.node, "wait_refresh", "neither failure escalated");

    // A refusal escalates; a new code through `task modify` recovers.
    sandbox
        .fail_next(Service::Token, 1, Failure::error("invalid_grant"))
        .expect("fail");
    e.advance(Duration::from_secs(25 * 60)).await;
    assert_eq!(e.task("@bitrix", "token").node, "not_updated");
    // Recovery: a new code through `task modify`.
    let code = new_code(&sandbox);
    e.runtime
        .modify_task(
            "@bitrix",
            &conveyor_runtime::TaskKey("token".into()),
            object(json!({"code": code})),
            "test",
        )
        .expect("modify");
    e.idle().await;
    let task = e.task("@bitrix", "token");
    assert_eq!(task.node, "wait_refresh");
    assert_eq!(rest(&sandbox, &text(&task, "access_token")).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_portals_and_servers_are_refused_before_anything_is_sent() {
    let sandbox = sandbox().await;
    let e = Engine::new();
    e.clone_with(BITRIX, Some("bitrix"), sandbox_settings(&sandbox));
    let code = new_code(&sandbox);
    for (key, value) in [
        ("portal", "evil.com#"),
        ("portal", "a/b"),
        ("portal", "x.bitrix24.ru?"),
        ("portal", ""),
        ("oauth_server", "http://evil.com/steal?"),
        ("oauth_server", "file:///etc/passwd"),
    ] {
        let mut data = object(token_data(&code, ""));
        data.insert(key.into(), Value::String(value.into()));
        let err = e
            .runtime
            .add_task("@bitrix", Some("token"), data)
            .expect_err(value);
        assert!(
            err.to_string().starts_with(&format!("param `{key}`")),
            "{err}"
        );
    }
    e.idle().await;
    assert!(
        sandbox.stats().token_requests.is_empty(),
        "the sandbox received nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_while_the_token_waits_still_refreshes_on_time() {
    let sandbox = sandbox().await;
    let mut e = Engine::new();
    let before = connected(&e, &sandbox).await;
    e.clock.advance(Duration::from_secs(10 * 60));
    e.restart();
    e.advance(Duration::from_secs(15 * 60 - 1)).await;
    assert_eq!(
        text(&e.task("@bitrix", "token"), "access_token"),
        text(&before, "access_token")
    );
    e.advance(Duration::from_secs(1)).await;
    let after = e.task("@bitrix", "token");
    assert_ne!(
        text(&after, "access_token"),
        text(&before, "access_token"),
        "refreshed at 25 min"
    );
    assert_eq!(after.node, "wait_refresh");
}

/// The real binary, logs at trace level, every output searched for every secret.
#[test]
fn no_secret_reaches_logs_or_output_at_trace_level() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let sandbox = tokio.block_on(sandbox());
    let data = crate::support::DataDir::new();
    let code = new_code(&sandbox);
    let mut outputs = Vec::new();
    let mut run = |args: &[&str]| {
        let output = data
            .command(args)
            .env("CONVEYOR_LOG", "trace")
            .output()
            .expect("conveyor runs");
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        outputs.push(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    };
    let url = sandbox.url().to_string();
    run(&[
        "process",
        "clone",
        "bitrix_oauth",
        "--alias",
        "bitrix",
        "--set",
        &format!("oauth_server={url}"),
    ]);
    run(&[
        "task",
        "add",
        "@bitrix",
        "--ref",
        "token",
        "portal=sandbox",
        &format!("client_id={DEFAULT_CLIENT_ID}"),
        &format!("client_secret={DEFAULT_CLIENT_SECRET}"),
        &format!("code={code}"),
        "refresh_every=1s",
    ]);
    run(&["run", "--until-idle"]);
    std::thread::sleep(Duration::from_millis(1100));
    run(&["run", "--until-idle"]);
    run(&["task", "show", "@bitrix", "token"]);
    run(&["--json", "task", "show", "@bitrix", "token"]);
    run(&["--json", "task", "list", "@bitrix"]);
    run(&["task", "history", "@bitrix", "token"]);
    run(&["--json", "task", "history", "@bitrix", "token"]);
    run(&["process", "show", "@bitrix"]);

    let revealed = data.json(&["task", "show", "@bitrix", "token", "--reveal"]);
    let secrets: Vec<String> = ["client_secret", "code", "access_token", "refresh_token"]
        .iter()
        .map(|k| {
            revealed["data"][k]
                .as_str()
                .unwrap_or_else(|| panic!("{k} set: {revealed}"))
                .to_string()
        })
        .collect();
    assert_eq!(revealed["node"], "wait_refresh");
    let all = outputs.join("\n");
    assert!(
        all.contains("TRACE") || all.contains("DEBUG"),
        "logs were on"
    );
    for secret in &secrets {
        assert!(!all.contains(secret.as_str()), "a secret leaked: {secret}");
    }
    // The stored tokens are the ones Bitrix issued last (a refresh happened).
    let grants = sandbox
        .stats()
        .token_requests
        .iter()
        .filter(|r| r.outcome == "ok")
        .count();
    assert_eq!(grants, 2);
    drop(tokio);
}

/// The Bitrix24 application's redirect URL is the process's direct URL: a browser that
/// authorizes the app lands on it with `?code=…&state=…&domain=…`, which starts the
/// `token` task, and later re-authorizes it when it waits in the escalation.
#[test]
fn the_redirect_url_delivers_the_code_to_the_token_task() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let sandbox = tokio.block_on(sandbox());
    let data = crate::support::DataDir::new();
    let url = sandbox.url().to_string();
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
        "refresh_every=1s",
    ]);
    let direct = data.json(&["process", "url", "@bitrix"])["url"]
        .as_str()
        .expect("url")
        .to_string();
    let server = crate::http_api::Server::start(data);
    let direct = direct.replace("http://127.0.0.1:7878", &server.base);
    sandbox
        .register_app(conveyor_sandbox::AppRegistration {
            client_id: Some(DEFAULT_CLIENT_ID.into()),
            client_secret: Some(DEFAULT_CLIENT_SECRET.into()),
            // `wait`: the page the browser lands on says what became of the code.
            redirect_url: Some(format!("{direct}?ref=token&wait=20")),
            portal: Some("sandbox".into()),
            scope: Some("crm".into()),
        })
        .expect("app registered");
    let browser = crate::http_api::http();
    let authorize =
        format!("{url}/oauth/authorize/?client_id={DEFAULT_CLIENT_ID}&response_type=code&state=s1");
    let landed = browser
        .get(&authorize)
        .header("accept", "text/html")
        .send()
        .expect("browser");
    assert_eq!(landed.status().as_u16(), 200);
    let page = landed.text().expect("page");
    assert!(page.contains("token received for portal sandbox"), "{page}");

    let wait_for = |node: &str| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let task = server.data.json(&["task", "show", "@bitrix", "token"]);
            if task["node"] == node {
                return task;
            }
            assert!(Instant::now() < deadline, "never reached {node}: {task}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let task = wait_for("wait_refresh");
    assert_eq!(task["data"]["state"], "s1");
    assert_eq!(task["data"]["access_token"], "***");

    // Bitrix refuses the next refresh: the task escalates; the author authorizes again.
    sandbox
        .fail_next(Service::Token, 1, Failure::error("invalid_grant"))
        .expect("fail");
    wait_for("not_updated");
    // A code Bitrix refuses, with no working token: the page says why, exactly.
    sandbox
        .fail_next(Service::Token, 1, Failure::error("invalid_grant"))
        .expect("fail");
    let refused = browser
        .get(authorize.replace("s1", "s3"))
        .header("accept", "text/html")
        .send()
        .expect("browser");
    assert_eq!(refused.status().as_u16(), 200);
    let page = refused.text().expect("page");
    assert!(
        page.contains("no token for portal sandbox: HTTP 400: invalid_grant"),
        "{page}"
    );
    let again = browser
        .get(authorize.replace("s1", "s2"))
        .header("accept", "text/html")
        .send()
        .expect("browser");
    assert_eq!(again.status().as_u16(), 200);
    let page = again.text().expect("page");
    assert!(page.contains("token received for portal sandbox"), "{page}");
    let task = wait_for("wait_refresh");
    assert_eq!(task["data"]["state"], "s2");
    let codes = sandbox
        .stats()
        .token_requests
        .iter()
        .filter(|r| r.grant_type.as_deref() == Some("authorization_code") && r.outcome == "ok")
        .count();
    assert_eq!(
        codes, 2,
        "two codes exchanged, both delivered by the redirect (a third refused)"
    );
    drop(server);
    drop(tokio);
}

#[test]
fn the_demo_tells_the_whole_story() {
    let (code, stdout, stderr) = crate::support::run(&["demo"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    for line in [
        "sandbox up at http://127.0.0.1:",
        "token received: access_token ***",
        "refreshed: new access_token ***",
        "called crm.deal.list: 3 deals",
        "escalated to `access_token doesn't update`: HTTP 400: invalid_grant",
        "Telegram alert sent to chat 4242: Bitrix OAuth for sandbox: HTTP 400: invalid_grant",
        "recovered: access_token ***",
        "done in",
    ] {
        assert!(stdout.contains(line), "missing `{line}` in:\n{stdout}");
    }
    // The README's Quick start shows this output, line for line, once what differs from
    // run to run is set aside: times, the port, the data dir, fingerprints, expiry.
    let readme =
        std::fs::read_to_string(crate::support::repo_root().join("README.md")).expect("README");
    let start = readme
        .find("```text\n[  0.0s] sandbox up at")
        .expect("the demo's output in the README")
        + "```text\n".len();
    let shown: Vec<&str> = readme[start..]
        .lines()
        .take_while(|l| !l.starts_with("```"))
        .collect();
    let got: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        got.len(),
        shown.len(),
        "the README shows another number of lines:\n{stdout}"
    );
    for (got, shown) in got.iter().zip(&shown) {
        assert_eq!(
            steady_demo(got),
            steady_demo(shown),
            "README.md's demo output"
        );
    }
}

/// A line of `conveyor demo` with what differs from run to run set aside.
fn steady_demo(line: &str) -> String {
    let rules = [
        (r"^\[ *\d+\.\ds\]", "[t]"),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:<port>"),
        (r"data in \S+", "data in <dir>"),
        (r"fingerprint [0-9a-f]{8}", "fingerprint <f>"),
        (r"expires \d+", "expires <t>"),
        (r"done in \d+\.\d s", "done in <s>"),
        (r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", "<time>"),
    ];
    let mut line = line.to_string();
    for (pattern, with) in rules {
        let re = regex::Regex::new(pattern).expect("a pattern");
        line = re.replace_all(&line, with).into_owned();
    }
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_notifier_reports_its_service_failures_with_the_reason() {
    let sandbox = sandbox().await;
    let e = Engine::new();
    let url = sandbox.url().to_string();
    let c = sandbox.credentials().clone();
    let clone = |template: &str, alias: &str, values: Value| {
        let yaml = std::fs::read_to_string(
            crate::support::repo_root().join(format!("processes/{template}.yaml")),
        )
        .expect("template");
        e.runtime
            .clone_process(template, &yaml, Some(alias), object(values))
            .expect("clone");
    };
    clone(
        "notify_telegram",
        "tg",
        json!({"bot_token": "1:wrong", "chat_id": "4242", "api_url": url}),
    );
    clone(
        "notify_twilio",
        "twilio",
        json!({"account_sid": c.twilio_account_sid, "auth_token": "wrong", "from": "+15550001111", "to": "+15550002222", "api_url": url}),
    );
    clone(
        "notify_messagebird",
        "mb",
        json!({"access_key": "wrong", "originator": "Conveyor", "recipients": "31612345678", "api_url": url}),
    );
    clone(
        "notify_mandrill",
        "mandrill",
        json!({"key": c.mandrill_key, "from_email": "robot@example.com", "to_email": "author@example.com", "api_url": url}),
    );
    clone(
        "notify_unisender",
        "unisender",
        json!({"api_key": "wrong", "sender_email": "robot@example.com", "email": "author@example.com", "list_id": "1", "api_url": url}),
    );
    // Mandrill answers HTTP 200 with the recipient rejected.
    sandbox
        .fail_next(Service::Mandrill, 1, Failure::error("rejected"))
        .expect("fail");
    for alias in ["tg", "twilio", "mb", "mandrill", "unisender"] {
        e.add(&format!("@{alias}"), Some("m"), json!({"text": "hello"}));
    }
    e.idle().await;
    let reason = |alias: &str| {
        let task = e.task(&format!("@{alias}"), "m");
        assert_eq!(
            (task.node.as_str(), task.status),
            ("failed", TaskStatus::Failed),
            "{alias}: {:?}",
            task.data
        );
        text(&task, "reason")
    };
    assert!(reason("tg").starts_with("HTTP 401"), "{}", reason("tg"));
    assert!(
        reason("twilio").starts_with("HTTP 401"),
        "{}",
        reason("twilio")
    );
    assert!(reason("mb").contains("access_key"), "{}", reason("mb"));
    assert_eq!(reason("mandrill"), "Mandrill: rejected (hard-bounce)");
    assert!(
        reason("unisender").contains("invalid_api_key"),
        "{}",
        reason("unisender")
    );
    // Nothing was delivered, and the wrong keys never show in clear.
    for service in [
        Service::Telegram,
        Service::Twilio,
        Service::Messagebird,
        Service::Mandrill,
        Service::Unisender,
    ] {
        assert!(sandbox.messages(service).is_empty(), "{service:?}");
    }
}

#[test]
fn bitrix_authorize_takes_the_pasted_redirect_and_starts_the_token_task() {
    use std::io::Write as _;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let sandbox = tokio.block_on(sandbox());
    let data = crate::support::DataDir::new();
    data.ok(&[
        "process",
        "clone",
        "bitrix_oauth",
        "--alias",
        "bitrix",
        "--set",
        &format!("oauth_server={}", sandbox.url()),
    ]);
    let code = new_code(&sandbox);
    let mut child = data
        .command(&[
            "bitrix",
            "authorize",
            "@bitrix",
            "--portal",
            "sandbox",
            "--client-id",
            DEFAULT_CLIENT_ID,
            "--client-secret",
            DEFAULT_CLIENT_SECRET,
            "--authorize-url",
            &format!("{}/oauth/authorize", sandbox.url()),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(
        stdin,
        "https://my.app/callback?code={code}&state=x&domain=sandbox"
    )
    .expect("paste");
    drop(stdin);
    let output = child.wait_with_output().expect("ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}/oauth/authorize/?client_id={DEFAULT_CLIENT_ID}&response_type=code",
            sandbox.url()
        )),
        "{stderr}"
    );
    assert!(
        stdout.contains("(ref token) added to process 1 with the code"),
        "{stdout}"
    );
    assert!(!stdout.contains(&code) && !stderr.contains(&code));
    data.ok(&["run", "--until-idle"]);
    assert_eq!(
        data.json(&["task", "show", "@bitrix", "token"])["node"],
        "wait_refresh"
    );
    drop(tokio);
}

/// `bitrix authorize` opens the address the process declares (`authorize:`), not a
/// Bitrix24 one: here a process whose page, query, code param and token key are all its
/// own. The address is filled from the token task's data (URL-encoded), `--authorize-url`
/// replaces only what comes before the `?`, and the pasted code lands in the declared
/// code param (`grant`), through the same command as the dashboard's code field.
#[test]
fn bitrix_authorize_opens_the_address_the_process_declares() {
    use std::io::Write as _;
    let data = crate::support::DataDir::new();
    let file = data.path().join("acme_oauth.yaml");
    std::fs::write(
        &file,
        r#"process: acme_oauth
params:
  app: { required: true, type: string, input: [create, modify] }
  grant: { secret: true, type: string, input: [create, modify] }
secrets: [session_key]
authorize:
  url: "http://127.0.0.1:9/acme/login?app={{app}}&mode=code"
  code: grant
  token: session_key
  code_lifetime: 45s
nodes:
  start: { type: start, next: wait_grant }
  wait_grant: { type: wait_callback, next: take }
  take:
    type: set_param
    set: { session_key: "acme-{{grant}}" }
    next: hold
  hold: { type: wait_callback, next: take }
"#,
    )
    .expect("write the process");
    data.ok(&[
        "process",
        "clone",
        file.to_str().expect("path"),
        "--alias",
        "acme",
    ]);
    data.ok(&["task", "add", "@acme", "--ref", "token", "app=acme app/1"]);
    let authorize = |extra: &[&str], paste: &str| {
        let mut args = vec!["bitrix", "authorize", "@acme"];
        args.extend_from_slice(extra);
        let mut child = data
            .command(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("runs");
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "{paste}").expect("paste");
        drop(stdin);
        let output = child.wait_with_output().expect("ends");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = authorize(&[], "grant-one");
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains("  http://127.0.0.1:9/acme/login?app=acme%20app%2F1&mode=code\n"),
        "the declared address, filled from the task: {stderr}"
    );
    assert!(!stderr.contains("bitrix24"), "{stderr}");
    assert!(stderr.contains("it lives 45 seconds"), "{stderr}");
    assert!(
        stdout.contains("(ref token) got the code"),
        "the existing token task got it: {stdout}"
    );
    // A modify of a task is applied by the engine's next step.
    data.ok(&["run", "--until-idle"]);
    let task = data.json(&["task", "show", "@acme", "token", "--reveal"]);
    assert_eq!(
        task["data"]["grant"], "grant-one",
        "into the declared code param: {task}"
    );
    assert!(task["data"].get("code").is_none(), "{task}");

    // Another page keeps the declared query.
    let (code, _, stderr) = authorize(
        &["--authorize-url", "http://127.0.0.1:9/elsewhere/"],
        "grant-two",
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("  http://127.0.0.1:9/elsewhere?app=acme%20app%2F1&mode=code\n"),
        "{stderr}"
    );

    // A value the address needs and nobody gave: refused before anything is read.
    let (code, stdout, stderr) = authorize(&["--ref", "other"], "grant-three");
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("the authorize link of process @acme uses `app`: give its value"),
        "{stderr}"
    );
    assert!(!stderr.contains("Open this address"), "{stderr}");

    // A process without an `authorize:` link takes no code.
    std::fs::write(
        data.path().join("plain.yaml"),
        "process: plain\nnodes:\n  start: { type: start, next: wait }\n  wait: { type: wait_callback, next: end }\n  end: { type: final }\n",
    )
    .expect("write");
    data.ok(&[
        "process",
        "clone",
        data.path().join("plain.yaml").to_str().expect("path"),
        "--alias",
        "plain",
    ]);
    let (code, _, stderr) = data.run(&["bitrix", "authorize", "@plain", "--portal", "x"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("process @plain declares no `authorize:` link"),
        "{stderr}"
    );
}

#[test]
fn conveyor_sandbox_prints_its_urls_and_test_credentials() {
    use std::io::BufRead as _;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = crate::support::conveyor()
        .args(["sandbox", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sandbox starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
    {
        let last = line.contains("Stop with Ctrl-C");
        lines.push(line);
        if last {
            break;
        }
    }
    let text = lines.join("\n");
    assert!(
        text.contains(&format!("Conveyor sandbox on http://127.0.0.1:{port}")),
        "{text}"
    );
    assert!(
        text.contains(DEFAULT_CLIENT_ID)
            && text.contains("bot_token=")
            && text.contains("api_key="),
        "{text}"
    );
    let health = crate::http_api::http()
        .post(format!("http://127.0.0.1:{port}/sandbox/codes"))
        .json(&json!({}))
        .send()
        .expect("control API answers");
    assert!(health.status().is_success());
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert_eq!(child.wait().expect("stops").code(), Some(0));
}

/// The secrets audit: the whole story through a server with trace logs, then every
/// output a person or a script can get — logs, `--json` outputs, history, `/metrics`,
/// the task API's `show`, the dashboard's task page — searched for every secret value.
#[test]
fn secrets_audit_across_logs_outputs_metrics_and_the_api() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let sandbox = tokio.block_on(sandbox());
    let data = crate::support::DataDir::new();
    let url = sandbox.url().to_string();
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
        "refresh_every=1s",
    ]);
    data.ok(&["process", "clone", "bitrix_deals", "--alias", "deals"]);
    let key = data.json(&["api-key", "create", "audit"]);
    let direct = data.json(&["process", "url", "@bitrix"])["url"]
        .as_str()
        .expect("url")
        .to_string();
    let mut server = crate::http_api::Server::start_with(data, &[("CONVEYOR_LOG", "trace")]);
    let direct = direct.replace("http://127.0.0.1:7878", &server.base);
    let code = new_code(&sandbox);
    let client = crate::http_api::http();
    assert!(
        client
            .get(format!("{direct}?ref=token&code={code}"))
            .send()
            .expect("redirect")
            .status()
            .is_success()
    );
    // Let it refresh a few times and a consumer use the token.
    std::thread::sleep(Duration::from_millis(2500));
    server
        .data
        .ok(&["task", "add", "@deals", "--ref", "report"]);
    server.data.ok(&["run", "--until-idle"]);

    let mut seen = String::new();
    for args in [
        vec!["--json", "task", "show", "@bitrix", "token"],
        vec!["task", "show", "@bitrix", "token"],
        vec!["--json", "task", "list", "@bitrix"],
        vec!["--json", "task", "history", "@bitrix", "token"],
        vec!["task", "history", "@bitrix", "token"],
        vec!["--json", "task", "history", "@deals", "report"],
        vec!["--json", "task", "show", "@deals", "report"],
        vec!["process", "show", "@bitrix"],
        vec!["--json", "process", "list"],
    ] {
        seen.push_str(&server.data.ok(&args));
    }
    seen.push_str(
        &client
            .get(format!("{}/metrics", server.base))
            .send()
            .expect("metrics")
            .text()
            .expect("text"),
    );
    let body =
        json!({"ops": [{"type": "show", "obj": "task", "conv_id": 1, "ref": "token"}]}).to_string();
    let time = crate::http_api::now_secs();
    let signature = crate::http_api::sign(time, key["secret"].as_str().expect("secret"), &body);
    let show = client
        .post(format!(
            "{}/api/2/json/{}/{time}/{signature}",
            server.base, key["login"]
        ))
        .body(body)
        .send()
        .expect("api")
        .text()
        .expect("text");
    assert!(show.contains("\"proc\":\"ok\""), "{show}");
    seen.push_str(&show);
    assert_eq!(server.stop(), 0);
    let log = server.log.lock().expect("log").clone();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "trace logs were on"
    );
    seen.push_str(&log);

    let revealed = server
        .data
        .json(&["task", "show", "@bitrix", "token", "--reveal"]);
    let deals = server
        .data
        .json(&["task", "show", "@deals", "report", "--reveal"]);
    assert_eq!(deals["node"], "done", "{deals}");
    let mut secrets = vec![DEFAULT_CLIENT_SECRET.to_string(), code];
    for k in ["access_token", "refresh_token"] {
        secrets.push(revealed["data"][k].as_str().expect("token").to_string());
    }
    secrets.push(
        deals["data"]["used_token"]
            .as_str()
            .expect("used token")
            .to_string(),
    );
    for secret in &secrets {
        assert!(!seen.contains(secret.as_str()), "a secret leaked: {secret}");
    }
    assert!(seen.contains("***"), "secrets are shown masked");
    drop(tokio);
}
