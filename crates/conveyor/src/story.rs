//! Commands around the Bitrix story: `conveyor sandbox` (the local servers, for a
//! person), `conveyor demo` (the whole story on one machine, narrated), and
//! `conveyor bitrix authorize` (print the authorize URL, take the pasted code at once).

use std::io::BufRead as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use conveyor_runtime::{RunMode, Runtime};
use conveyor_sandbox::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Failure, Sandbox, SandboxConfig, Service,
};
use serde_json::{Map, Value, json};

use conveyor_commands::templates;
use conveyor_commands::{Answer, Caller, Reply, Request, TaskView};

/// `conveyor sandbox`: serves the local Bitrix24 and notifier servers until Ctrl-C.
pub fn sandbox(listen: &str, config: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let mut settings = match config {
        Some(path) => {
            SandboxConfig::load(path).with_context(|| format!("cannot use {}", path.display()))?
        }
        None => SandboxConfig::default(),
    };
    settings.address = listen.parse().map_err(|_| {
        crate::args::UsageError(format!(
            "--listen: `{listen}` is not an address like 127.0.0.1:7879"
        ))
    })?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    tokio.block_on(async move {
        let sandbox = Sandbox::start(settings).await?;
        let url = sandbox.url().to_string();
        let c = sandbox.credentials().clone();
        println!("Conveyor sandbox on {url} (local stand-ins for Bitrix24 and five notifiers)\n");
        println!("Bitrix24 (application `{DEFAULT_CLIENT_ID}`, secret `{DEFAULT_CLIENT_SECRET}`, portal `sandbox`)");
        println!("  authorize   {url}/oauth/authorize/?client_id={DEFAULT_CLIENT_ID}&response_type=code");
        println!("  token       {url}/oauth/token/   (clone with --set oauth_server={url})");
        println!("  REST        {url}/rest/crm.deal.list?auth=…");
        println!("Notifiers (api_url={url})");
        println!("  Telegram     bot_token={}", c.telegram_bot_token);
        println!("  Twilio       account_sid={} auth_token={}", c.twilio_account_sid, c.twilio_auth_token);
        println!("  MessageBird  access_key={}", c.messagebird_access_key);
        println!("  Mandrill     key={}", c.mandrill_key);
        println!("  UniSender    api_key={}", c.unisender_api_key);
        println!("Control: {url}/sandbox (codes, forced failures, clock, what was received)\n");
        println!("Try it:");
        println!("  conveyor process clone bitrix_oauth --alias bitrix --set oauth_server={url}");
        println!("  CODE=$(curl -s -X POST {url}/sandbox/codes | sed 's/.*\"code\":\"\\([^\"]*\\)\".*/\\1/')");
        println!(
            "  conveyor task add @bitrix --ref token portal=sandbox client_id={DEFAULT_CLIENT_ID} client_secret={DEFAULT_CLIENT_SECRET} refresh_every=1m code=$CODE"
        );
        println!("\nStop with Ctrl-C.");
        crate::commands::shutdown_signal().await;
        sandbox.shutdown().await;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

/// `conveyor bitrix authorize`: prints the authorize URL, reads the code (or the whole
/// redirect URL) as soon as it is pasted, and gives it to the token task.
pub struct Authorize {
    pub process: String,
    pub reference: String,
    pub portal: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub scope: Option<String>,
    pub authorize_url: Option<String>,
}

/// Asks the command layer for the authorize address the process declares (filled from
/// the flags, the token task, the process's settings), prints it, reads the code (or the
/// whole redirect address) as soon as it is pasted, and sends it to the token task
/// through the same command as the dashboard's code field. `command` runs a request
/// (here or through a running server), as JSON when asked.
pub fn authorize(
    a: Authorize,
    as_json: bool,
    command: impl Fn(Request, bool) -> anyhow::Result<Reply>,
) -> anyhow::Result<Reply> {
    let mut values = Map::new();
    for (key, value) in [
        ("portal", &a.portal),
        ("client_id", &a.client_id),
        ("scope", &a.scope),
    ] {
        if let Some(v) = value {
            values.insert(key.into(), Value::String(v.clone()));
        }
    }
    let link = command(
        Request::AuthorizeLink {
            process: a.process.clone(),
            reference: Some(a.reference.clone()),
            values: values.clone(),
            page: a.authorize_url.clone(),
        },
        true,
    )?;
    if link.code != 0 {
        return Ok(link);
    }
    let link: Value = serde_json::from_str(link.stdout.trim())
        .context("the command layer's answer to the authorize link")?;
    let url = link["url"].as_str().unwrap_or_default();
    eprintln!("Open this address in a browser where you are logged in to the portal:\n");
    eprintln!("  {url}\n");
    match link["code_lifetime_secs"].as_u64() {
        Some(secs) => eprintln!(
            "Then paste the code (or the whole address the browser was sent to) here; it lives {secs} seconds:"
        ),
        None => {
            eprintln!("Then paste the code (or the whole address the browser was sent to) here:")
        }
    }
    let mut pasted = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut pasted)
        .context("cannot read the code")?;
    let mut data = values;
    if let Some(secret) = a.client_secret {
        data.insert("client_secret".into(), Value::String(secret));
    }
    command(
        Request::AuthorizeCode {
            process: a.process,
            reference: a.reference,
            pasted,
            data,
        },
        as_json,
    )
}

/// `conveyor demo`: the whole Bitrix story on this machine, narrated.
pub fn demo(options: conveyor_commands::StoreOptions) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let dir = tempfile::tempdir().context("cannot make a temporary data dir")?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    tokio.block_on(async move {
        let say = |text: String| println!("[{:>5.1}s] {text}", started.elapsed().as_secs_f64());
        let sandbox = Sandbox::start(SandboxConfig::default()).await?;
        let url = sandbox.url().to_string();
        say(format!("sandbox up at {url}: a local Bitrix24 (OAuth + REST) and five notifiers"));

        // A throwaway data dir: its secrets are sealed with a key that is never written.
        let runtime = conveyor_commands::throwaway_runtime(dir.path(), options)?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let engine_runtime = runtime.clone();
        let engine = tokio::spawn(async move {
            engine_runtime
                .run(RunMode::UntilShutdown(Box::pin(async move {
                    let _ = stop_rx.await;
                })))
                .await
        });
        say(format!("engine running, data in {}", dir.path().display()));

        // Every change goes through the command layer, as the CLI's would.
        let command = |request: Request| conveyor_commands::run(&runtime, &demo_caller(), request);
        let clone = |name: &str, alias: &str, settings: Value| -> anyhow::Result<Answer> {
            let definition = templates::find(name).map(str::to_string).context("a shipped template")?;
            Ok(command(Request::ProcessClone {
                source: name.to_string(),
                definition,
                alias: Some(alias.to_string()),
                settings: object(settings),
            })?)
        };
        let c = sandbox.credentials().clone();
        clone(
            "notify_telegram",
            "alerts",
            json!({"bot_token": c.telegram_bot_token, "chat_id": "4242", "api_url": url}),
        )?;
        let bitrix = match clone("bitrix_oauth", "bitrix", json!({ "oauth_server": url }))? {
            Answer::Cloned { id, .. } => id,
            other => bail!("cloning bitrix_oauth answered {other:?}"),
        };
        clone("bitrix_deals", "deals", json!({}))?;
        say(format!(
            "cloned bitrix_oauth as process {bitrix} (@bitrix), bitrix_deals (@deals), notify_telegram (@alerts)"
        ));

        // What the browser step gives a person: a code, valid 30 seconds.
        let issued = sandbox.issue_code(DEFAULT_CLIENT_ID)?;
        say("the sandbox portal issued an authorization code (it lives 30 s)".into());

        let token = match command(Request::TaskAdd {
            process: "@bitrix".into(),
            reference: Some("token".into()),
            data: object(json!({
                "portal": "sandbox", "client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET,
                "scope": "crm", "code": issued.code,
                "refresh_every": "4s", "notify_process": "@alerts",
            })),
        })? {
            Answer::TaskAdded { id, .. } => id,
            other => bail!("adding the token task answered {other:?}"),
        };
        say(format!("added task {token} with ref `token` (refresh_every=4s for the demo)"));

        let first = wait_for(&runtime, "@bitrix", "token", |t| t.node == "wait_refresh").await?;
        say(format!(
            "token received: access_token {} (expires {}), kept in {{{{conv[@bitrix].ref[token].access_token}}}}",
            masked(&first.data, "access_token"),
            first.data.get("expires").cloned().unwrap_or(Value::Null)
        ));
        let old = text(&first.data, "access_token");
        let refreshed =
            wait_for(&runtime, "@bitrix", "token", move |t| text(&t.data, "access_token") != old && t.node == "wait_refresh")
                .await?;
        say(format!(
            "refreshed: new access_token {} (the old one is now refused by Bitrix)",
            masked(&refreshed.data, "access_token")
        ));

        command(Request::TaskAdd {
            process: "@deals".into(),
            reference: Some("report".into()),
            data: Map::new(),
        })?;
        let report = wait_for(&runtime, "@deals", "report", |t| t.node == "done" || t.node == "failed").await?;
        say(format!(
            "the consumer read the token from the other process and called crm.deal.list: {} deals",
            report.data.get("total").cloned().unwrap_or(Value::Null)
        ));

        sandbox.fail_next(Service::Token, 1, Failure::error("invalid_grant"))?;
        say("now Bitrix refuses the next refresh (invalid_grant)…".into());
        let escalated = wait_for(&runtime, "@bitrix", "token", |t| t.node == "not_updated").await?;
        say(format!(
            "escalated to `access_token doesn't update`: {}",
            text(&escalated.data, "failure")
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        while sandbox.messages(Service::Telegram).is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(message) = sandbox.messages(Service::Telegram).first() {
            say(format!("Telegram alert sent to chat {}: {}", message.to.join(","), message.text));
        }

        let again = sandbox.issue_code(DEFAULT_CLIENT_ID)?;
        command(Request::TaskModify {
            process: "@bitrix".into(),
            task: "token".into(),
            data: object(json!({"code": again.code})),
            force: false,
        })?;
        say("the author gave a new code (`conveyor task modify @bitrix token code=…`)".into());
        let recovered = wait_for(&runtime, "@bitrix", "token", |t| t.node == "wait_refresh").await?;
        say(format!("recovered: access_token {} again, refreshing every 4 s", masked(&recovered.data, "access_token")));

        let _ = stop_tx.send(());
        engine.await.context("the engine task")??;
        sandbox.shutdown().await;
        say(format!("done in {:.1} s", started.elapsed().as_secs_f64()));
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

/// The demo's changes are recorded in history as `demo`'s.
fn demo_caller() -> Caller {
    Caller {
        source: "demo".into(),
        ..Caller::cli()
    }
}

async fn wait_for(
    runtime: &Runtime,
    process: &str,
    reference: &str,
    done: impl Fn(&TaskView) -> bool,
) -> anyhow::Result<TaskView> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let show = Request::TaskShow {
            process: process.into(),
            task: reference.into(),
            reveal: true,
        };
        let task = match conveyor_commands::run(runtime, &demo_caller(), show)? {
            Answer::Task(task) => *task,
            other => bail!("showing task {reference} of {process} answered {other:?}"),
        };
        if done(&task) {
            return Ok(task);
        }
        if Instant::now() > deadline {
            bail!("task {reference} of {process} is stuck in `{}`", task.node);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn text(data: &Map<String, Value>, key: &str) -> String {
    data.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A fingerprint of a secret (not the secret), so a person sees that it changed.
fn masked(data: &Map<String, Value>, key: &str) -> String {
    use sha1::Digest as _;
    let digest = sha1::Sha1::digest(text(data, key).as_bytes());
    format!("*** (fingerprint {})", &hex::encode(digest)[..8])
}
