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

    /// A WebDriver command on this session; its `value`.
    fn command(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let request = http().request(method, url);
        let request = if body.is_null() {
            request
        } else {
            request.json(&body)
        };
        let reply: Value = request.send().expect("webdriver").json().expect("json");
        reply["value"].clone()
    }

    /// The element `css` selects (waiting up to 10 s for it).
    fn element(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.command(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            );
            if let Some(id) = found
                .get("element-6066-11e4-a52e-4f735466cecf")
                .and_then(Value::as_str)
            {
                return id.to_string();
            }
            assert!(Instant::now() < deadline, "no element {css}: {found}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Does `action` to the element `css` selects. A page that redrew the element between
    /// finding it and acting on it (its refresh) answers WebDriver's `stale element
    /// reference`: the element is found again, as a person's second look would.
    fn on_element(&self, css: &str, what: &str, action: &str, body: Value) {
        let mut reply = Value::Null;
        for _ in 0..5 {
            let id = self.element(css);
            reply = self.command(
                reqwest::Method::POST,
                &format!("/element/{id}/{action}"),
                body.clone(),
            );
            if reply["error"] != "stale element reference" {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(reply.is_null(), "{what} {css}: {reply}");
    }

    /// Clicks as a person does (a real pointer event, so popups may open).
    fn click(&self, css: &str) {
        self.on_element(css, "click", "click", json!({}));
    }

    /// Types `text` into the element as keystrokes (`\u{E007}` is Enter, `\u{E004}` Tab).
    fn keys(&self, css: &str, text: &str) {
        self.on_element(css, "type into", "value", json!({ "text": text }));
    }

    /// Presses a key (`\u{E007}` is Enter) on whatever has the focus.
    fn press(&self, key: &str) {
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]}]});
        let reply = self.command(reqwest::Method::POST, "/actions", actions);
        assert!(reply.is_null(), "press {key}: {reply}");
    }

    fn windows(&self) -> Vec<String> {
        self.command(reqwest::Method::GET, "/window/handles", Value::Null)
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|h| h.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn switch_to(&self, handle: &str) {
        self.command(reqwest::Method::POST, "/window", json!({"handle": handle}));
    }

    fn close_window(&self) {
        self.command(reqwest::Method::DELETE, "/window", Value::Null);
    }

    fn resize(&self, width: u32, height: u32) {
        self.command(
            reqwest::Method::POST,
            "/window/rect",
            json!({"width": width, "height": height}),
        );
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
    let token = &server.data.admin_token();

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

/// Clicks *Get the code* in `scope`, reads the code the sandbox's authorize page shows in
/// the window that opens, closes it, and types the code (or, with `whole_address`, the
/// address the code came in) into the code field of `scope`.
fn get_and_paste_code(driver: &Driver, scope: &str, field: &str) -> String {
    let before = driver.windows();
    let main = before.first().cloned().expect("a window");
    driver.click(&format!("{scope} #get-code"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let opened = loop {
        if let Some(h) = driver.windows().into_iter().find(|h| !before.contains(h)) {
            break h;
        }
        assert!(Instant::now() < deadline, "Get the code opened no window");
        std::thread::sleep(Duration::from_millis(100));
    };
    driver.switch_to(&opened);
    assert!(driver.until(
        Duration::from_secs(10),
        "return document.body && document.body.innerText.includes('\"code\"');"
    ));
    let page: Value = serde_json::from_str(
        driver
            .script("return document.body.innerText;")
            .as_str()
            .expect("text"),
    )
    .expect("the sandbox's authorize page answers JSON without a redirect URL");
    let code = page["code"].as_str().expect("a code").to_string();
    driver.close_window();
    driver.switch_to(&main);
    // The 30-second lifetime counts down beside the field.
    assert!(driver.until(
        Duration::from_secs(5),
        &format!("const c = document.querySelector('{scope} #countdown'); return !!c && /The code lives 30 s: \\d+ s left/.test(c.textContent);")
    ));
    driver.keys(&format!("{scope} {field}"), &code);
    code
}

/// The Bitrix OAuth page's walk-through, done in the dashboard: *Use this process*, *Add
/// task* without an autogenerated reference, *Get the code* and paste it, the token's
/// fingerprint, a refused refresh escalated with its reason, a new code pasted and the
/// task recovered. Screenshots of each step go to `target/dashboard/walkthrough-*.png`
/// (copied into docs/images for docs/dashboard.md).
#[test]
fn the_dashboard_walks_the_bitrix_oauth_page_end_to_end() {
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
    let url = sandbox.url().to_string();
    let server = Server::start(DataDir::new());
    let token = &server.data.admin_token();
    driver.go(&format!("{}/", server.base));
    driver.keys("#login input[name=\"token\"]", token);
    driver.keys("#login input[name=\"token\"]", "\u{E007}");
    assert!(driver.until(
        Duration::from_secs(20),
        "return document.querySelector('h1') && document.querySelector('h1').textContent === 'Processes';"
    ));

    // 1. Templates → *Use this process* (opened with the keyboard), alias and settings.
    driver.go(&format!("{}/#/templates", server.base));
    driver.keys("[data-template=\"bitrix_oauth\"] button.use", "\u{E007}");
    assert!(
        driver.until(
            Duration::from_secs(5),
            "return document.activeElement && document.activeElement.name === 'alias';"
        ),
        "the clone form takes the focus"
    );
    let form = "[data-template=\"bitrix_oauth\"] form";
    driver.script("document.querySelector('[data-template=\"bitrix_oauth\"] input[name=\"alias\"]').value = ''; return true;");
    driver.keys(&format!("{form} input[name=\"alias\"]"), "bitrix");
    driver.keys(&format!("{form} input[name=\"set-oauth_server\"]"), &url);
    driver.keys(&format!("{form} input[name=\"set-refresh_every\"]"), "2s");
    // A pattern is checked as one types.
    driver.keys(
        &format!("{form} input[name=\"set-portal\"]"),
        "Not A Portal",
    );
    assert!(driver.until(
        Duration::from_secs(5),
        &format!("return document.querySelector('{form} input[name=\"set-portal\"]').getAttribute('aria-invalid') === 'true';")
    ));
    driver.screenshot("walkthrough-1-use-this-process");
    driver.script(&format!("const i = document.querySelector('{form} input[name=\"set-portal\"]'); i.value = ''; i.dispatchEvent(new Event('input')); return true;"));
    driver.click(&format!("{form} button:not(.cancel)"));
    assert!(
        driver.until(
            Duration::from_secs(10),
            "return location.hash === '#/p/1' && !!document.getElementById('add-task');"
        ),
        "cloned, and on the process's page"
    );
    let listed = server.data.json(&["process", "list"]);
    assert_eq!(listed[0]["alias"], "bitrix", "{listed}");
    // The diagram's nodes take the focus, and Enter opens a node's tasks.
    assert!(driver.until(
        Duration::from_secs(10),
        "const n = document.querySelector('#diagram [data-node=\"get_token\"]'); if (!n) return false; n.focus(); return document.activeElement === n;"
    ), "a node of the diagram takes the focus");
    driver.press("\u{E007}");
    assert!(
        driver.until(
            Duration::from_secs(5),
            "return location.hash === '#/p/1/get_token';"
        ),
        "Enter on a node opens its tasks"
    );
    driver.go(&format!("{}/#/p/1", server.base));
    assert!(driver.until(
        Duration::from_secs(10),
        "return !!document.getElementById('add-task');"
    ));

    // 2. *Add task*: a refusal first, shown inline in the CLI's words.
    driver.click("#add-task");
    assert!(driver.until(
        Duration::from_secs(10),
        "return !!document.getElementById('add');"
    ));
    driver.click("#send");
    assert!(driver.until(
        Duration::from_secs(10),
        "return document.getElementById('refusal').textContent.startsWith('error: param `portal`: is required');"
    ), "{}", driver.script("return document.getElementById('refusal').textContent;"));
    // Secret params are password fields.
    assert_eq!(
        driver.script("return document.querySelector('input[name=\"f-client_secret\"]').type;"),
        json!("password")
    );
    driver.keys("input[name=\"f-portal\"]", "sandbox");
    driver.keys("input[name=\"f-client_id\"]", DEFAULT_CLIENT_ID);
    driver.keys("input[name=\"f-client_secret\"]", DEFAULT_CLIENT_SECRET);
    driver.keys("input[name=\"f-scope\"]", "crm");
    driver.click("#autoref");
    assert_eq!(
        driver.script("return document.getElementById('ref-label').hidden;"),
        json!(false)
    );
    driver.keys("#ref", "token");
    driver.screenshot("walkthrough-2-add-task");

    // 3. *Get the code* from the sandbox's authorize page and paste it, then *Send task*.
    driver.keys("#authorize-base", &format!("{url}/oauth/authorize"));
    let code = get_and_paste_code(&driver, "#add", "input[name=\"f-code\"]");
    driver.script(
        "document.getElementById('countdown').scrollIntoView({block: 'center'}); return true;",
    );
    driver.screenshot("walkthrough-3-code");
    driver.click("#send");
    assert!(driver.until(
        Duration::from_secs(10),
        "return location.hash.startsWith('#/t/1/') && !!document.getElementById('token-state');"
    ), "{}", driver.script("return document.getElementById('refusal') && document.getElementById('refusal').textContent;"));
    let task = server
        .data
        .json(&["task", "show", "@bitrix", "token", "--reveal"]);
    assert_eq!(task["ref"], "token", "the reference given, not one made up");

    // 4. The fingerprint of the token received (never the token).
    assert!(driver.until(
        Duration::from_secs(20),
        "const s = document.getElementById('token-state'); return !!s && s.textContent.includes('Token received') && s.textContent.includes('Next refresh at') && s.textContent.includes('last refresh');"
    ), "{}", driver.script("return document.body.innerText;"));
    let shown =
        driver.script("return document.querySelector('#token-state .fingerprint').textContent;");
    let revealed = server
        .data
        .json(&["task", "show", "@bitrix", "token", "--reveal"]);
    let access = revealed["data"]["access_token"].as_str().expect("a token");
    let page = driver.script("return document.body.innerText;");
    assert!(
        !page.as_str().unwrap_or_default().contains(access),
        "the token on the page"
    );
    assert!(
        !page.as_str().unwrap_or_default().contains(&code),
        "the code on the page"
    );
    assert_eq!(
        shown,
        json!(fingerprint(access)),
        "the fingerprint is of the token held"
    );
    driver.script("window.scrollTo(0, 0); return true;");
    driver.screenshot("walkthrough-4-token-received");

    // 5. Bitrix refuses the next refresh: escalated, with the reason, on the open page.
    sandbox
        .fail_next(Service::Token, 1, Failure::error("invalid_grant"))
        .expect("fail");
    assert!(driver.until(
        Duration::from_secs(30),
        "const s = document.getElementById('token-state'); return !!s && s.textContent.includes('Escalated') && s.textContent.includes('invalid_grant');"
    ), "{}", driver.script("return document.getElementById('token-state').textContent;"));
    driver.script("window.scrollTo(0, 0); return true;");
    driver.screenshot("walkthrough-5-escalated");

    // 6. *Paste a new code*: recovered, with a new token.
    driver.keys(
        "#new-code #authorize-base",
        &format!("{url}/oauth/authorize"),
    );
    get_and_paste_code(&driver, "#new-code", "#f-code");
    driver.click("#send-code");
    assert!(driver.until(
        Duration::from_secs(20),
        "const s = document.getElementById('token-state'); return !!s && s.textContent.includes('Token received');"
    ), "{}", driver.script("return document.getElementById('token-state').textContent;"));
    let again = server
        .data
        .json(&["task", "show", "@bitrix", "token", "--reveal"]);
    let renewed = again["data"]["access_token"].as_str().expect("a token");
    assert_ne!(renewed, access);
    assert!(driver.until(
        Duration::from_secs(10),
        &format!(
            "return document.querySelector('#token-state .fingerprint').textContent === {:?};",
            fingerprint(renewed)
        )
    ));
    let history = server.data.ok(&["task", "history", "@bitrix", "token"]);
    assert!(history.contains("modified by dashboard: code"), "{history}");
    driver.script("window.scrollTo(0, 0); return true;");
    driver.screenshot("walkthrough-6-recovered");

    // Readable at 360 px: nothing wider than the screen.
    driver.resize(360, 800);
    assert!(driver.until(
        Duration::from_secs(5),
        "return document.documentElement.scrollWidth <= window.innerWidth + 1;"
    ), "wider than 360 px: {}", driver.script("return [document.documentElement.scrollWidth, window.innerWidth, [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > window.innerWidth + 1).slice(0, 5).map(e => e.tagName + '.' + e.className + ' ' + e.getBoundingClientRect().right)];"));
    driver.script("window.scrollTo(0, 0); return true;");
    driver.screenshot("walkthrough-7-360px");
    drop(server);
    drop(tokio);
}

/// The first 8 hex digits of SHA-1, as the dashboard shows a token.
fn fingerprint(secret: &str) -> String {
    use sha1::Digest as _;
    hex::encode(sha1::Sha1::digest(secret.as_bytes()))[..8].to_string()
}

/// Changes through the dashboard need the session's CSRF token, and an API key's
/// session cannot touch another process or clone one.
#[test]
fn dashboard_changes_need_the_csrf_token_and_keys_stay_in_their_processes() {
    let data = DataDir::new();
    let p = "process: p\nparams:\n  n: { type: number }\nnodes:\n  start: { type: start, next: wait }\n  wait: { type: wait_callback, next: done }\n  done: { type: final }\n";
    data.clone_yaml("mine", p, &[]);
    data.clone_yaml("other", p, &[]);
    let key = data.api_key("k", &["@mine"]);
    let unlimited = data.api_key("all", &[]);
    let server = Server::start(data);
    // No cookie store (reqwest keeps none unless asked): the session cookie is sent by
    // hand. `http()` installs the TLS provider reqwest needs before a client is built.
    let client = http();
    let login = |body: Value| -> String {
        let response = client
            .post(format!("{}/ui/login", server.base))
            .json(&body)
            .send()
            .expect("login");
        assert!(response.status().is_success());
        let cookie = response
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .expect("a cookie");
        cookie.split(';').next().expect("name=value").to_string()
    };
    let cookie = login(json!({"login": key.0.to_string(), "secret": key.1}));
    let csrf = client
        .get(format!("{}/ui/api/session", server.base))
        .header("cookie", &cookie)
        .send()
        .expect("session")
        .json::<Value>()
        .expect("json")["csrf"]
        .as_str()
        .expect("csrf")
        .to_string();
    let post = |path: &str, token: Option<&str>, body: Value| {
        let mut request = client
            .post(format!("{}{path}", server.base))
            .header("cookie", &cookie)
            .json(&body);
        if let Some(t) = token {
            request = request.header("x-csrf-token", t);
        }
        let response = request.send().expect("post");
        let status = response.status().as_u16();
        (status, response.json::<Value>().unwrap_or(Value::Null))
    };
    // Without the token, or with a wrong one: refused, nothing added.
    let (status, body) = post(
        "/ui/api/processes/@mine/tasks",
        None,
        json!({"data": {"n": 1}}),
    );
    assert_eq!(status, 403, "{body}");
    let (status, _) = post(
        "/ui/api/processes/@mine/tasks",
        Some("0000"),
        json!({"data": {"n": 1}}),
    );
    assert_eq!(status, 403);
    assert_eq!(server.data.json(&["task", "list", "@mine"]), json!([]));
    // With it: added; a refusal comes back in the CLI's words.
    let (status, added) = post(
        "/ui/api/processes/@mine/tasks",
        Some(&csrf),
        json!({"ref": "a", "data": {"n": 1}}),
    );
    assert_eq!(status, 200, "{added}");
    let (status, refused) = post(
        "/ui/api/processes/@mine/tasks",
        Some(&csrf),
        json!({"ref": "a", "data": {"n": 2}}),
    );
    assert_eq!(status, 422);
    let (_, _, cli) = server
        .data
        .run(&["task", "add", "@mine", "--ref", "a", "n:=2"]);
    assert_eq!(
        format!(
            "error: {}\n",
            refused["description"].as_str().unwrap_or_default()
        ),
        cli
    );
    // Another process does not exist for this key; cloning needs the admin token.
    let (status, _) = post(
        "/ui/api/processes/@other/tasks",
        Some(&csrf),
        json!({"data": {}}),
    );
    assert_eq!(status, 404);
    let (status, _) = post("/ui/api/tasks/@other/1/delete", Some(&csrf), json!({}));
    assert_eq!(status, 404);
    let (status, _) = post(
        "/ui/api/processes/@other/authorize-link",
        Some(&csrf),
        json!({}),
    );
    assert_eq!(
        status, 404,
        "the authorize link of a process outside the key"
    );
    // The authorize link is the command layer's, in the CLI's words.
    let (status, body) = post(
        "/ui/api/processes/@mine/authorize-link",
        Some(&csrf),
        json!({}),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["description"],
        "process @mine declares no `authorize:` link, so it takes no code"
    );
    let (status, body) = post(
        "/ui/api/clone",
        Some(&csrf),
        json!({"template": "bitrix_oauth", "alias": "x"}),
    );
    assert_eq!(status, 403, "{body}");
    // Actions: modify, goto, delete of its own task.
    let id = added["id"].as_u64().expect("id");
    let (status, body) = post(
        &format!("/ui/api/tasks/@mine/{id}/goto"),
        Some(&csrf),
        json!({"node": "done"}),
    );
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.data.json(&["task", "show", "@mine", "a"])["status"] != "done" {
        assert!(Instant::now() < deadline, "the goto was not applied");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = post(
        &format!("/ui/api/tasks/@mine/{id}/modify"),
        Some(&csrf),
        json!({"data": {"n": 3}}),
    );
    assert_eq!(status, 422, "a finished task: {body}");
    let (status, _) = post(
        &format!("/ui/api/tasks/@mine/{id}/delete"),
        Some(&csrf),
        json!({}),
    );
    assert_eq!(status, 200);
    assert_eq!(server.data.json(&["task", "list", "@mine"]), json!([]));
    // Logging out needs the token too.
    let (status, _) = post("/ui/logout", None, json!({}));
    assert_eq!(status, 403);
    // Only the admin token's session is the admin's: a key made without `--process`
    // uses every process, and is still a key.
    let admin_of = |cookie: &str| {
        client
            .get(format!("{}/ui/api/session", server.base))
            .header("cookie", cookie)
            .send()
            .expect("session")
            .json::<Value>()
            .expect("json")["admin"]
            .clone()
    };
    let all = login(json!({"login": unlimited.0.to_string(), "secret": unlimited.1}));
    assert_eq!(admin_of(&all), json!(false));
    assert_eq!(admin_of(&cookie), json!(false));
    let admin = login(json!({"token": server.data.admin_token()}));
    assert_eq!(admin_of(&admin), json!(true));
}

/// A process that is not Bitrix's declares its own authorize link (`authorize:`): its
/// token task gets the token panel, *Get the code* opens the address the file declares
/// (filled from the task's params, no page typed in), and the pasted code goes into the
/// param the file names; the token it makes is shown by its fingerprint. A process
/// without an `authorize:` link gets no panel.
#[test]
fn any_process_that_declares_an_authorize_link_gets_the_token_panel() {
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
    let url = sandbox.url().to_string();
    let data = DataDir::new();
    // The code arrives in `grant` (not `code`), the token is kept in `session_key` (not
    // `access_token`): only the declaration says so.
    data.clone_yaml(
        "acme",
        &format!(
            r#"process: acme_oauth
title: Acme sign-in
params:
  app:
    required: true
    type: string
    input: [create, modify]
    description: The application's id at Acme
  grant:
    secret: true
    type: string
    input: [create, modify]
    description: The code Acme's authorize page gives
secrets: [session_key]
authorize:
  url: "{url}/oauth/authorize/?client_id={{{{app}}}}&response_type=code"
  code: grant
  token: session_key
nodes:
  start: {{ type: start, next: wait_grant }}
  wait_grant: {{ type: wait_callback, next: take }}
  take:
    type: set_param
    set: {{ session_key: "acme-{{{{grant}}}}" }}
    next: hold
  hold: {{ type: wait_callback, next: take }}
"#
        ),
        &[],
    );
    data.clone_yaml(
        "plain",
        "process: plain\nnodes:\n  start: { type: start, next: wait }\n  wait: { type: wait_callback, next: end }\n  end: { type: final }\n",
        &[],
    );
    data.ok(&[
        "task",
        "add",
        "@acme",
        "--ref",
        "token",
        &format!("app={DEFAULT_CLIENT_ID}"),
    ]);
    data.ok(&["task", "add", "@plain", "--ref", "other"]);
    let server = Server::start(data);
    let token = &server.data.admin_token();
    driver.go(&format!("{}/", server.base));
    driver.keys("#login input[name=\"token\"]", token);
    driver.keys("#login input[name=\"token\"]", "\u{E007}");
    assert!(driver.until(
        Duration::from_secs(20),
        "return document.querySelector('h1') && document.querySelector('h1').textContent === 'Processes';"
    ));

    // The plain process's task has no token panel.
    driver.go(&format!("{}/#/t/2/other", server.base));
    assert!(driver.until(
        Duration::from_secs(10),
        "return !!document.getElementById('task-status');"
    ));
    assert_eq!(
        driver.script("return !!document.getElementById('token-state');"),
        json!(false),
        "a process without an authorize link shows no token panel"
    );

    // Acme's token task has it, waiting for a code.
    driver.go(&format!("{}/#/t/1/token", server.base));
    assert!(
        driver.until(
            Duration::from_secs(10),
            "const s = document.getElementById('token-state'); return !!s && s.textContent.includes('Waiting for a code');"
        ),
        "{}",
        driver.script("return document.body.innerText;")
    );
    // *Get the code* opens the declared address, filled from the task: the sandbox's
    // authorize page for the app, with nothing typed into *Authorize page*.
    let before = driver.windows();
    let main = before.first().cloned().expect("a window");
    driver.click("#new-code #get-code");
    let deadline = Instant::now() + Duration::from_secs(10);
    let opened = loop {
        if let Some(h) = driver.windows().into_iter().find(|h| !before.contains(h)) {
            break h;
        }
        assert!(Instant::now() < deadline, "Get the code opened no window");
        std::thread::sleep(Duration::from_millis(100));
    };
    let opened_url = driver.script("return document.getElementById('get-code').dataset.url;");
    assert_eq!(
        opened_url,
        json!(format!(
            "{url}/oauth/authorize/?client_id={DEFAULT_CLIENT_ID}&response_type=code"
        )),
        "the address the file declares, filled from the task"
    );
    driver.switch_to(&opened);
    assert!(driver.until(
        Duration::from_secs(10),
        "return document.body && document.body.innerText.includes('\"code\"');"
    ));
    let page: Value = serde_json::from_str(
        driver
            .script("return document.body.innerText;")
            .as_str()
            .expect("text"),
    )
    .expect("the sandbox's authorize page answers JSON");
    let code = page["code"].as_str().expect("a code").to_string();
    driver.close_window();
    driver.switch_to(&main);
    // No lifetime declared: no countdown, just what to do.
    assert!(driver.until(
        Duration::from_secs(5),
        "const c = document.querySelector('#new-code #countdown'); return !!c && c.textContent.startsWith('Paste the code');"
    ));
    // The field is the declared code param's, and the whole redirect address is accepted.
    driver.keys(
        "#new-code input[data-param=\"grant\"]",
        &format!("https://app.example/back?code={code}&state=x"),
    );
    driver.click("#send-code");
    let expected = fingerprint(&format!("acme-{code}"));
    assert!(
        driver.until(
            Duration::from_secs(20),
            &format!("const s = document.getElementById('token-state'); const f = document.querySelector('#token-state .fingerprint'); return !!s && s.textContent.includes('Token received') && !!f && f.textContent === {expected:?};")
        ),
        "{}",
        driver.script("return document.getElementById('token-state').textContent;")
    );
    let task = server
        .data
        .json(&["task", "show", "@acme", "token", "--reveal"]);
    assert_eq!(task["data"]["grant"], json!(code), "{task}");
    assert_eq!(task["node"], "hold", "{task}");
    let page = driver.script("return document.body.innerText;");
    assert!(
        !page.as_str().unwrap_or_default().contains(&code),
        "the code on the page"
    );
    driver.screenshot("authorize-any-process");
    drop(server);
    drop(tokio);
}

/// Logs `driver` in to `server` with the admin token, on the processes page.
fn log_in(driver: &Driver, server: &Server) {
    let token = &server.data.admin_token();
    driver.go(&format!("{}/", server.base));
    driver.keys("#login input[name=\"token\"]", token);
    driver.keys("#login input[name=\"token\"]", "\u{E007}");
    assert!(driver.until(
        Duration::from_secs(20),
        "return document.querySelector('h1') && document.querySelector('h1').textContent === 'Processes';"
    ));
}

/// The templates page lists every shipped template with its description and params; the
/// *Add task* form is built from the declared params (descriptions, required marks,
/// defaults, patterns checked as one types) and has a JSON mode; each task action asks
/// first (Cancel does nothing), goes through the command layer, and a refusal is shown
/// in the CLI's words: retry a task that failed without `on_error`, move it, modify the
/// finished task (refused, then with *merge anyway*), delete it.
#[test]
fn the_dashboard_lists_templates_builds_the_add_form_and_asks_before_each_action() {
    let profile = tempfile::tempdir().expect("profile dir");
    let Some(driver) = Driver::start(profile.path()) else {
        assert!(
            std::env::var_os("CONVEYOR_BROWSER_TESTS").is_none(),
            "CONVEYOR_BROWSER_TESTS is set but chromium or chromedriver is missing"
        );
        eprintln!("skipped: chromium and chromium-driver are not installed");
        return;
    };
    let data = DataDir::new();
    // An API call to a closed port and no `on_error`: the task fails there.
    data.clone_yaml(
        "actions",
        r#"process: actions
params:
  base: { required: true, pattern: '^http://', description: Where the call goes }
  n: { type: number, default: 7, description: A number for the call }
nodes:
  start: { type: start, next: call }
  call:
    type: api_call
    url: "{{base}}/x"
    response: { n: "{{body.n}}" }
    next: done
  done: { type: final }
"#,
        &[],
    );
    let shipped = data.json(&["process", "templates"]);
    let server = Server::start(data);
    log_in(&driver, &server);

    // Every shipped template, with its description and its params.
    driver.go(&format!("{}/#/templates", server.base));
    let shipped = shipped.as_array().expect("templates");
    assert!(
        driver.until(
            Duration::from_secs(10),
            &format!(
                "return document.querySelectorAll('[data-template]').length === {};",
                shipped.len()
            )
        ),
        "{}",
        driver.script("return document.body.innerText;")
    );
    for t in shipped {
        let name = t.as_str().expect("a template's name");
        let yaml: serde_yaml::Value = serde_yaml::from_str(
            &std::fs::read_to_string(repo_root().join(format!("processes/{name}.yaml")))
                .expect("the template's file"),
        )
        .expect("yaml");
        let t = json!({
            "description": yaml["description"].as_str().map(str::trim),
            "params": yaml["params"].as_mapping().map_or(0, |m| m.len()),
        });
        let section = format!("[data-template=\"{name}\"]");
        let shown = driver.script(&format!(
            "const s = document.querySelector('{section}'); return [s.querySelector('p').textContent, s.querySelector('summary').textContent];"
        ));
        assert_eq!(
            shown[0].as_str().map(str::trim),
            t["description"].as_str(),
            "{name}'s description"
        );
        assert_eq!(
            shown[1],
            json!(format!("Params ({})", t["params"])),
            "{name}'s params"
        );
    }

    // *Add task*: the form the params declare.
    driver.go(&format!("{}/#/p/1", server.base));
    assert!(driver.until(
        Duration::from_secs(10),
        "return !!document.getElementById('add-task');"
    ));
    driver.click("#add-task");
    assert!(driver.until(
        Duration::from_secs(10),
        "return !!document.getElementById('f-base');"
    ));
    assert_eq!(
        driver.script("const l = document.querySelector('label[for=\"f-base\"]'); return [!!l.querySelector('.required'), l.textContent.includes('Where the call goes')];"),
        json!([true, true]),
        "a required mark and the description"
    );
    assert_eq!(
        driver.script("const l = document.querySelector('label[for=\"f-n\"]'); return [!!l.querySelector('.required'), document.getElementById('f-n').placeholder];"),
        json!([false, "default: 7"]),
        "not required, its default shown"
    );
    driver.keys("#f-base", "ftp://nope");
    assert!(
        driver.until(
            Duration::from_secs(5),
            "return document.getElementById('f-base').getAttribute('aria-invalid') === 'true';"
        ),
        "the pattern checked as one types"
    );
    // JSON mode: free data, as one object.
    driver.click("#json-mode");
    assert_eq!(
        driver.script("return [document.getElementById('fields').hidden, document.getElementById('json-label').hidden];"),
        json!([true, false])
    );
    driver.script("document.getElementById('json').value = '{\"base\": \"http://127.0.0.1:9\", \"extra\": [1, 2]}'; return true;");
    driver.click("#send");
    assert!(driver.until(
        Duration::from_secs(10),
        "return location.hash.startsWith('#/t/1/');"
    ), "{}", driver.script("return document.getElementById('refusal') && document.getElementById('refusal').textContent;"));
    let listed = server.data.json(&["task", "list", "@actions"]);
    let id = listed[0]["id"].as_u64().expect("a task");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let t = server
            .data
            .json(&["task", "show", "@actions", &id.to_string()]);
        if t["status"] == "failed" {
            assert_eq!(
                t["data"]["extra"],
                json!([1, 2]),
                "the JSON mode's data: {t}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the call did not fail: {t}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let page = format!("{}/#/t/1/{id}", server.base);
    let history = |server: &Server| {
        server
            .data
            .ok(&["task", "history", "@actions", &id.to_string()])
    };

    // The page the send opened has watched the task fail: its actions are drawn again
    // with Retry, without a reload (the page was drawn while the task still ran).
    assert!(
        driver.until(
            Duration::from_secs(10),
            "return !!document.getElementById('retry');"
        ),
        "no Retry on the open page of a task that failed: {}",
        driver.script("return document.getElementById('actions').innerHTML;")
    );
    // Retry: asked first; Cancel does nothing; Yes runs the node again (it fails again).
    driver.go(&page);
    assert!(driver.until(
        Duration::from_secs(10),
        "return !!document.getElementById('retry');"
    ));
    driver.click("#retry");
    assert!(
        driver.until(
            Duration::from_secs(5),
            "const d = document.getElementById('confirm'); return !d.hidden && document.activeElement.id === 'confirm-yes' && d.textContent.includes('Run call again');"
        ),
        "the confirmation takes the focus"
    );
    driver.click("#confirm-no");
    assert_eq!(
        driver.script("return document.getElementById('confirm').hidden;"),
        json!(true)
    );
    assert!(
        !history(&server).contains("retried"),
        "a cancelled retry did nothing"
    );
    driver.click("#retry");
    driver.click("#confirm-yes");
    assert!(driver.until(
        Duration::from_secs(10),
        "return document.getElementById('action-result').textContent.includes('runs call again');"
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !history(&server).contains("dashboard retried `call`") {
        assert!(
            Instant::now() < deadline,
            "no retry in the history: {}",
            history(&server)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Move: to `done`, asked first.
    driver.script("document.getElementById('goto-node').value = 'done'; return true;");
    driver.click("#goto button");
    assert!(driver.until(
        Duration::from_secs(5),
        "return document.getElementById('confirm').textContent.includes('to done');"
    ));
    driver.click("#confirm-yes");
    let deadline = Instant::now() + Duration::from_secs(20);
    while server
        .data
        .json(&["task", "show", "@actions", &id.to_string()])["status"]
        != "done"
    {
        assert!(Instant::now() < deadline, "the move was not applied");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        history(&server).contains("dashboard sent the task to `done`"),
        "{}",
        history(&server)
    );

    // Modify the finished task: refused in the CLI's words, then merged with *merge anyway*.
    driver.go(&format!("{}/#/", server.base));
    driver.go(&page);
    assert!(driver.until(
        Duration::from_secs(10),
        "return !!document.getElementById('modify-force');"
    ));
    driver.script("document.querySelector('#actions details').open = true; document.getElementById('modify-json').value = '{\"note\": \"checked\"}'; return true;");
    driver.click("#modify button");
    driver.click("#confirm-yes");
    assert!(driver.until(
        Duration::from_secs(10),
        "return document.getElementById('action-result').textContent.startsWith('error: ');"
    ));
    let shown = driver.script("return document.getElementById('action-result').textContent;");
    let (code, _, cli) = server.data.run(&[
        "task",
        "modify",
        "@actions",
        &id.to_string(),
        "note=checked",
    ]);
    assert_eq!(code, 1);
    assert_eq!(
        format!("{}\n", shown.as_str().unwrap_or_default()),
        cli,
        "the CLI's words"
    );
    driver.click("#modify-force");
    driver.click("#modify button");
    driver.click("#confirm-yes");
    assert!(driver.until(
        Duration::from_secs(10),
        &format!("return document.getElementById('action-result').textContent === 'Task {id} modified.';")
    ), "{}", driver.script("return document.getElementById('action-result').textContent;"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while server
        .data
        .json(&["task", "show", "@actions", &id.to_string()])["data"]["note"]
        != "checked"
    {
        assert!(
            Instant::now() < deadline,
            "the forced modify was not merged"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Delete: Cancel keeps it; Yes deletes it and goes back to the process.
    driver.click("#delete");
    driver.click("#confirm-no");
    assert_eq!(
        server
            .data
            .json(&["task", "list", "@actions"])
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    driver.click("#delete");
    assert!(driver.until(
        Duration::from_secs(5),
        "return document.getElementById('confirm').textContent.includes('cannot be undone');"
    ));
    driver.click("#confirm-yes");
    assert!(driver.until(Duration::from_secs(10), "return location.hash === '#/p/1';"));
    assert_eq!(server.data.json(&["task", "list", "@actions"]), json!([]));
    drop(server);
}

const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";
const ESCAPE: &str = "\u{E00C}";
const SHIFT: &str = "\u{E008}";
const CONTROL: &str = "\u{E009}";

/// What has the focus, in words, and whether it shows it: `[description, visible,
/// interactive]`. Visible: a drawn outline or a box shadow. Interactive: an element that
/// is one by nature (link, button, field, summary) or says what it is with a `role`, not
/// a bare `div` with a click handler.
fn focused(driver: &Driver) -> Value {
    driver.script(
        "const e = document.activeElement; if (!e || e === document.body) return ['body', false, false];
         const s = getComputedStyle(e);
         const outline = s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0;
         const shadow = s.boxShadow && s.boxShadow !== 'none';
         const native = e.matches('a[href], button, input, select, textarea, summary');
         const what = e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.getAttribute('name') ? '[name=' + e.getAttribute('name') + ']' : '')
           + ' \"' + (e.textContent || e.value || '').trim().slice(0, 40) + '\"';
         return [what, outline || shadow, native || e.hasAttribute('role')];",
    )
}

impl Driver {
    /// Presses `key` while `modifier` is held (Shift+Tab, Control+A).
    fn chord(&self, modifier: &str, key: &str) {
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": modifier}, {"type": "keyDown", "value": key},
            {"type": "keyUp", "value": key}, {"type": "keyUp", "value": modifier}]}]});
        let reply = self.command(reqwest::Method::POST, "/actions", actions);
        assert!(reply.is_null(), "press {modifier}+{key}: {reply}");
    }

    /// Types `text` as key presses on whatever has the focus.
    fn type_text(&self, text: &str) {
        let mut keys = Vec::new();
        for c in text.chars() {
            keys.push(json!({"type": "keyDown", "value": c.to_string()}));
            keys.push(json!({"type": "keyUp", "value": c.to_string()}));
        }
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": keys}]});
        let reply = self.command(reqwest::Method::POST, "/actions", actions);
        assert!(reply.is_null(), "type {text}: {reply}");
    }

    /// Presses Tab (Shift+Tab when `back`) until `is_it` (a script returning a boolean
    /// about `document.activeElement`, named `e`) holds, at most 60 times. Every element
    /// the focus lands on on the way must show the focus and be interactive by nature.
    fn tab_to(&self, is_it: &str, back: bool) {
        let check = format!("const e = document.activeElement; return !!({is_it});");
        for _ in 0..60 {
            if self.script(&check) == Value::Bool(true) {
                return;
            }
            if back {
                self.chord(SHIFT, TAB);
            } else {
                self.press(TAB);
            }
            let now = focused(self);
            if now[0] != "body" {
                assert_eq!(now[1], json!(true), "no visible focus on {}", now[0]);
                assert_eq!(
                    now[2],
                    json!(true),
                    "{} takes the focus but is no control",
                    now[0]
                );
            }
        }
        panic!(
            "Tab never reached {is_it}; the focus is on {}",
            focused(self)[0]
        );
    }
}

/// Issue 16's "usable with the keyboard alone": the whole journey with key presses only
/// (Tab, Shift+Tab, Enter, Space, Escape, typing), through the real binary: log in, clone
/// a template, add a task with a typed ref, open it, modify it, move it, delete it (once
/// cancelled with Escape). Every control reached shows the focus; the confirmation keeps
/// Tab on its buttons while it is open, Escape closes it and gives the focus back; the
/// live redraws do not steal the focus.
#[test]
fn the_dashboard_is_usable_with_the_keyboard_alone() {
    let profile = tempfile::tempdir().expect("profile dir");
    let Some(driver) = Driver::start(profile.path()) else {
        assert!(
            std::env::var_os("CONVEYOR_BROWSER_TESTS").is_none(),
            "CONVEYOR_BROWSER_TESTS is set but chromium or chromedriver is missing"
        );
        eprintln!("skipped: chromium and chromium-driver are not installed");
        return;
    };
    let server = Server::start(DataDir::new());
    let token = &server.data.admin_token();
    let active = |driver: &Driver| driver.script("return document.activeElement.id;");
    let wait = |driver: &Driver, what: &str, script: &str| {
        assert!(
            driver.until(Duration::from_secs(15), script),
            "{what}: {}",
            driver.script("return document.body.innerText;")
        );
    };

    // Log in: the token field, typed, Enter.
    driver.go(&format!("{}/", server.base));
    wait(
        &driver,
        "the login form",
        "return !!document.getElementById('login');",
    );
    driver.tab_to("e.name === 'token'", false);
    driver.type_text(token);
    driver.press(ENTER);
    wait(
        &driver,
        "the processes page",
        "const h = document.querySelector('h1'); return !!h && h.textContent === 'Processes' && document.activeElement === h;",
    );

    // Templates: *Use this process* opens the clone form on its alias; Escape closes it
    // and gives the focus back to the button; Enter again, the settings typed, Clone.
    driver.tab_to("e.getAttribute('href') === '#/templates'", false);
    driver.press(ENTER);
    wait(
        &driver,
        "the templates page",
        "return document.querySelectorAll('[data-template]').length > 0 && document.activeElement.tagName === 'H1';",
    );
    driver.tab_to("e.dataset.use === 'notify_telegram'", false);
    driver.press(ENTER);
    wait(
        &driver,
        "the clone form",
        "return document.activeElement.name === 'alias';",
    );
    driver.press(ESCAPE);
    wait(
        &driver,
        "Escape closes the clone form",
        "return !document.querySelector('.use-form form') && document.activeElement.dataset.use === 'notify_telegram';",
    );
    driver.press(" ");
    wait(
        &driver,
        "Space opens it again",
        "return document.activeElement.name === 'alias';",
    );
    driver.chord(CONTROL, "a");
    driver.type_text("tg");
    driver.tab_to("e.name === 'set-bot_token'", false);
    assert_eq!(
        driver.script("return document.activeElement.type;"),
        json!("password"),
        "a secret setting is a password field"
    );
    driver.type_text("123456:keyboard");
    driver.tab_to("e.name === 'set-chat_id'", false);
    driver.type_text("42");
    driver.tab_to("e.name === 'set-api_url'", false);
    // A closed port: every task ends in `failed`.
    driver.type_text("http://127.0.0.1:9");
    driver.tab_to("e.textContent === 'Clone'", false);
    driver.press(ENTER);
    wait(
        &driver,
        "the cloned process's page",
        "return /^#\\/p\\/[0-9]+$/.test(location.hash) && !!document.getElementById('add-task') && document.activeElement.tagName === 'H1';",
    );
    let shown = server.data.json(&["process", "show", "@tg"]);
    let pid = shown["id"].as_u64().expect("the clone's id");
    assert_eq!(
        driver.script("return location.hash;"),
        json!(format!("#/p/{pid}"))
    );

    // Add task: uncheck *Autogenerate reference* with Space, the ref field appears and
    // takes the focus; the text typed; Enter on *Send task*.
    driver.tab_to("e.id === 'add-task'", false);
    driver.press(ENTER);
    wait(
        &driver,
        "the add form",
        "return !!document.getElementById('autoref') && document.activeElement.tagName === 'H1';",
    );
    driver.tab_to("e.id === 'autoref'", false);
    driver.press(" ");
    wait(
        &driver,
        "the ref field",
        "return !document.getElementById('autoref').checked && !document.getElementById('ref-label').hidden && document.activeElement.id === 'ref';",
    );
    driver.type_text("kbd-1");
    driver.tab_to("e.id === 'f-text'", false);
    driver.type_text("hello from the keyboard");
    driver.tab_to("e.id === 'send'", false);
    driver.press(ENTER);
    wait(
        &driver,
        "the new task's page",
        &format!(
            "return location.hash.startsWith('#/t/{pid}/') && document.querySelector('h1').textContent.includes('ref kbd-1');"
        ),
    );
    let task = server.data.json(&["task", "show", "@tg", "kbd-1"]);
    let id = task["id"].as_u64().expect("the task's id");
    assert_eq!(task["data"]["text"], json!("hello from the keyboard"));
    // The closed port: the task ends in `failed` after its retries.
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.data.json(&["task", "show", "@tg", "kbd-1"])["node"] != "failed" {
        assert!(Instant::now() < deadline, "the task did not reach failed");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Open it from the process page: the crumbs, the `failed` node's row, its task.
    driver.tab_to(&format!("e.getAttribute('href') === '#/p/{pid}'"), true);
    driver.press(ENTER);
    wait(
        &driver,
        "the process page",
        "return !!document.querySelector('#nodes a[href$=\"/failed\"]');",
    );
    driver.tab_to("e.matches('#nodes a[href$=\"/failed\"]')", false);
    driver.press(ENTER);
    wait(
        &driver,
        "the failed node's tasks",
        &format!(
            "return document.activeElement.id === 'tasks-title' && !!document.querySelector('#tasks a[href=\"#/t/{pid}/{id}\"]');"
        ),
    );
    driver.tab_to(
        &format!("e.getAttribute('href') === '#/t/{pid}/{id}'"),
        false,
    );
    // The list redraws every second: the focus stays on the link.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        driver.script("return document.activeElement.getAttribute('href');"),
        json!(format!("#/t/{pid}/{id}")),
        "a redraw took the focus away"
    );
    driver.press(ENTER);
    wait(
        &driver,
        "the task page",
        "return !!document.getElementById('modify-force') && document.activeElement.tagName === 'H1';",
    );

    // Modify: the summary opens the form; the finished task refuses a plain modify
    // (shown inline), Space checks *merge anyway*, and the second time it merges.
    driver.tab_to("e.tagName === 'SUMMARY'", false);
    driver.press(ENTER);
    wait(
        &driver,
        "the modify form",
        "return document.querySelector('#actions details').open;",
    );
    driver.tab_to("e.id === 'modify-json'", false);
    driver.chord(CONTROL, "a");
    driver.type_text("{\"note\": \"typed\"}");
    driver.tab_to("e.matches('#modify button')", false);
    driver.press(ENTER);
    wait(
        &driver,
        "the confirmation",
        "const d = document.getElementById('confirm'); return !d.hidden && document.activeElement.id === 'confirm-yes' && d.textContent.includes('Merge note');",
    );
    assert_eq!(focused(&driver)[1], json!(true), "the focus on Yes shows");
    driver.press(ENTER);
    wait(
        &driver,
        "the refusal",
        "return document.getElementById('action-result').textContent.startsWith('error: ') && document.activeElement.matches('#modify button');",
    );
    driver.tab_to("e.id === 'modify-force'", true);
    driver.press(" ");
    assert_eq!(
        driver.script("return document.getElementById('modify-force').checked;"),
        json!(true)
    );
    driver.tab_to("e.matches('#modify button')", false);
    driver.press(ENTER);
    wait(
        &driver,
        "the confirmation",
        "return document.activeElement.id === 'confirm-yes';",
    );
    driver.press(ENTER);
    wait(
        &driver,
        "modified",
        &format!(
            "return document.getElementById('action-result').textContent === 'Task {id} modified.';"
        ),
    );
    assert_eq!(
        driver.script("return document.activeElement.matches('#modify button');"),
        json!(true),
        "the focus went back to the Modify button"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.data.json(&["task", "show", "@tg", "kbd-1"])["data"]["note"] != "typed" {
        assert!(Instant::now() < deadline, "the modify was not merged");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Move: the node chosen by typing its name on the select, *Move…*, Enter.
    driver.tab_to("e.id === 'goto-node'", false);
    driver.type_text("sent");
    assert_eq!(
        driver.script("return document.getElementById('goto-node').value;"),
        json!("sent")
    );
    driver.tab_to("e.matches('#goto button')", false);
    driver.press(ENTER);
    wait(
        &driver,
        "the move's confirmation",
        "return document.activeElement.id === 'confirm-yes' && document.getElementById('confirm').textContent.includes('to sent');",
    );
    driver.press(ENTER);
    wait(
        &driver,
        "moved",
        &format!(
            "return document.getElementById('action-result').textContent === 'Task {id} moves to sent.' && document.activeElement.matches('#goto button');"
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.data.json(&["task", "show", "@tg", "kbd-1"])["node"] != "sent" {
        assert!(Instant::now() < deadline, "the move was not applied");
        std::thread::sleep(Duration::from_millis(100));
    }
    wait(
        &driver,
        "the page shows the task in sent",
        "return document.getElementById('task-where').textContent.includes('sent');",
    );

    // Delete: the confirmation keeps Tab and Shift+Tab on its two buttons; Escape
    // closes it, gives the focus back to Delete, deletes nothing, and Tab then leaves.
    driver.tab_to("e.id === 'delete'", false);
    driver.press(ENTER);
    wait(
        &driver,
        "the delete confirmation",
        "return document.activeElement.id === 'confirm-yes' && document.getElementById('confirm').textContent.includes('cannot be undone');",
    );
    for (back, expected) in [
        (false, "confirm-no"),
        (false, "confirm-yes"),
        (true, "confirm-no"),
        (true, "confirm-yes"),
    ] {
        if back {
            driver.chord(SHIFT, TAB);
        } else {
            driver.press(TAB);
        }
        assert_eq!(
            active(&driver),
            json!(expected),
            "Tab stays in the open confirmation"
        );
        assert_eq!(
            focused(&driver)[1],
            json!(true),
            "{expected} shows the focus"
        );
    }
    driver.press(ESCAPE);
    wait(
        &driver,
        "Escape closes the confirmation",
        "return document.getElementById('confirm').hidden && document.activeElement.id === 'delete';",
    );
    assert_eq!(
        server.data.json(&["task", "show", "@tg", "kbd-1"])["id"],
        json!(id),
        "Escape deleted nothing"
    );
    driver.press(TAB);
    assert!(
        driver.script("return !document.getElementById('confirm').contains(document.activeElement) && document.activeElement.id !== 'delete';") == Value::Bool(true),
        "Tab leaves the closed confirmation"
    );
    driver.tab_to("e.id === 'delete'", true);
    driver.press(ENTER);
    wait(
        &driver,
        "the delete confirmation",
        "return document.activeElement.id === 'confirm-yes';",
    );
    driver.press(ENTER);
    wait(
        &driver,
        "back on the process page",
        &format!(
            "return location.hash === '#/p/{pid}' && document.activeElement.tagName === 'H1';"
        ),
    );
    assert_eq!(server.data.json(&["task", "list", "@tg"]), json!([]));
    driver.screenshot("keyboard-journey");
    drop(server);
}
