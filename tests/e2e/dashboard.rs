//! The dashboard in a real browser: headless Chromium driven through ChromeDriver's
//! WebDriver protocol (plain HTTP on 127.0.0.1). The Bitrix story runs against the
//! sandbox; the diagram's counters must match `conveyor process show`, and a refresh
//! failure must show up as an escalation within seconds, without reloading the page.
//! Screenshots are saved under `target/dashboard/`.
//!
//! `.ci/run` installs Debian's `chromium` and `chromium-driver` and sets
//! `CONVEYOR_BROWSER_TESTS=1`; without the browser (and without that variable) the test
//! says it is skipped.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use conveyor_sandbox::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Failure, Service};
use serde_json::{Value, json};

use crate::http_api::{Server, http};
use crate::support::{DataDir, repo_root};

struct Driver {
    child: Child,
    base: String,
    session: String,
}

impl Driver {
    fn start(profile: &std::path::Path) -> Option<Driver> {
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let driver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = std::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while http().get(format!("{base}/status")).send().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1400,1100",
                     format!("--user-data-dir={}", profile.display())]
        }}}});
        let reply: Value = http()
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .expect("new session")
            .json()
            .expect("json");
        let session = reply["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {reply}"))
            .to_string();
        Some(Driver {
            child,
            base,
            session,
        })
    }

    fn go(&self, url: &str) {
        let reply: Value = http()
            .post(format!("{}/session/{}/url", self.base, self.session))
            .json(&json!({"url": url}))
            .send()
            .expect("navigate")
            .json()
            .expect("json");
        assert!(reply["value"].is_null(), "{reply}");
    }

    fn script(&self, script: &str) -> Value {
        let reply: Value = http()
            .post(format!(
                "{}/session/{}/execute/sync",
                self.base, self.session
            ))
            .json(&json!({"script": script, "args": []}))
            .send()
            .expect("script")
            .json()
            .expect("json");
        reply["value"].clone()
    }

    /// Waits until `script` returns true (at most `within`).
    fn until(&self, within: Duration, script: &str) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.script(script) == Value::Bool(true) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn screenshot(&self, name: &str) -> std::path::PathBuf {
        use base64::Engine as _;
        let reply: Value = http()
            .get(format!("{}/session/{}/screenshot", self.base, self.session))
            .send()
            .expect("screenshot")
            .json()
            .expect("json");
        let png = base64::engine::general_purpose::STANDARD
            .decode(reply["value"].as_str().expect("base64"))
            .expect("png");
        let dir = repo_root().join("target/dashboard");
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write png");
        path
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = http()
            .delete(format!("{}/session/{}", self.base, self.session))
            .send();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Node → "N now · M total" as the diagram shows it.
fn diagram_counts(driver: &Driver) -> Value {
    driver.script(
        "const out = {}; document.querySelectorAll('[data-count-for]').forEach(e => out[e.getAttribute('data-count-for')] = e.textContent); return out;",
    )
}

#[test]
fn the_dashboard_shows_live_counters_and_escalations() {
    let profile = tempfile::tempdir().expect("profile dir");
    let Some(driver) = Driver::start(profile.path()) else {
        assert!(
            std::env::var_os("CONVEYOR_BROWSER_TESTS").is_none(),
            "CONVEYOR_BROWSER_TESTS is set but chromium or chromedriver is missing"
        );
        eprintln!("skipped: chromium and chromium-driver are not installed");
        return;
    };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let sandbox = tokio.block_on(crate::bitrix::sandbox());
    let data = DataDir::new();
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
        "refresh_every=2s",
    ]);
    let server = Server::start(data);
    let code = sandbox.issue_code(DEFAULT_CLIENT_ID).expect("code").code;
    server.data.ok(&[
        "task",
        "add",
        "@bitrix",
        "--ref",
        "token",
        &format!("code={code}"),
    ]);
    let info: Value = serde_json::from_str(
        &std::fs::read_to_string(server.data.path().join("server.json")).expect("server.json"),
    )
    .expect("json");
    let token = info["token"].as_str().expect("token");

    // Log in with the admin token through the login form (a POST; a token in a URL
    // logs nobody in), then open the list and the process.
    driver.go(&format!("{}/", server.base));
    assert!(
        driver.until(
            Duration::from_secs(30),
            "return !!document.querySelector('#login input[name=\"token\"]');"
        ),
        "the login form shows"
    );
    driver.script(&format!(
        "document.querySelector('#login input[name=\"token\"]').value = {token:?}; document.querySelector('#login button').click(); return true;"
    ));
    assert!(
        driver.until(
            Duration::from_secs(30),
            "return !!document.querySelector('[data-process=\"1\"]');"
        ),
        "the process list shows process 1"
    );
    driver.screenshot("processes");
    driver.go(&format!("{}/#/p/1", server.base));
    assert!(driver.until(
        Duration::from_secs(30),
        "return document.querySelectorAll('[data-count-for]').length > 5;"
    ));
    // The counters on the diagram are those of `conveyor process show`.
    assert!(driver.until(
        Duration::from_secs(30),
        "const e = document.querySelector('[data-count-for=\"wait_refresh\"]'); return !!e && e.textContent.startsWith('1 now');"
    ));
    let shown = diagram_counts(&driver);
    let show = server.data.json(&["process", "show", "@bitrix"]);
    for node in show["nodes"].as_array().expect("nodes") {
        let id = node["id"].as_str().expect("id");
        let (now, total) = (
            node["now"].as_i64().expect("now"),
            node["total"].as_u64().expect("total"),
        );
        let on_diagram = shown[id]
            .as_str()
            .unwrap_or_else(|| panic!("no counter for {id}: {shown}"));
        // Refreshes every 2 s move totals on; the tasks in each node are what must agree.
        assert!(
            on_diagram.starts_with(&format!("{now} now")),
            "{id}: {on_diagram} vs {now}/{total}"
        );
    }
    driver.screenshot("process");

    // Bitrix refuses the next refresh: the escalation appears on the open page.
    sandbox
        .fail_next(Service::Token, 1, Failure::error("invalid_grant"))
        .expect("fail");
    let started = Instant::now();
    assert!(
        driver.until(
            Duration::from_secs(30),
            "const e = document.querySelector('[data-count-for=\"not_updated\"]'); const r = document.getElementById('escalations'); return !!e && e.textContent.startsWith('1 now') && !!r && r.textContent.includes('invalid_grant');"
        ),
        "the escalation did not show: {}",
        diagram_counts(&driver)
    );
    eprintln!(
        "escalation visible {:?} after the failure was armed",
        started.elapsed()
    );
    // The escalation node on the diagram says why the task is there.
    assert!(driver.until(
        Duration::from_secs(10),
        "const w = document.querySelector('[data-node=\"not_updated\"] text.why'); return !!w && w.textContent.includes('invalid_grant');"
    ));
    driver.screenshot("escalation");
    // And on the list, the process is marked.
    driver.go(&format!("{}/#/", server.base));
    assert!(driver.until(Duration::from_secs(5), "const r = document.querySelector('[data-process=\"1\"]'); return !!r && r.classList.contains('escalated') && r.textContent.includes('1 in escalation');"));
    // A task page: data masked, history as a timeline.
    driver.go(&format!("{}/#/t/1/token", server.base));
    assert!(driver.until(Duration::from_secs(5), "return document.body.textContent.includes('\"access_token\": \"***\"') && document.querySelectorAll('.timeline li').length > 3;"));
    let page = driver.script("return document.body.textContent;");
    assert!(
        !page.as_str().unwrap_or_default().contains(&code),
        "a secret on the page"
    );
    driver.screenshot("task");
    drop(server);
    drop(tokio);
}
