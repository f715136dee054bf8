//! The HTTP API of a running `conveyor serve`: Corezoid's task API v2 signed exactly as
//! Corezoid clients sign (the signing here is written from the formula, not taken from
//! the server), direct URLs, health and metrics, limits, the CLI through the server, and
//! eight concurrent clients.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::DataDir;

/// A `conveyor serve` on a free port, stopped (SIGTERM) when dropped.
pub struct Server {
    pub data: DataDir,
    pub child: Option<Child>,
    pub base: String,
    /// Everything the server wrote to stderr (its logs).
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    pub fn start(data: DataDir) -> Server {
        Server::start_with(data, &[])
    }

    /// Starts it with extra environment variables (e.g. `CONVEYOR_LOG=trace`).
    pub fn start_with(data: DataDir, env: &[(&str, &str)]) -> Server {
        Server::start_full(data, &[], env)
    }

    /// Starts it with extra `serve` flags and environment variables.
    pub fn start_full(data: DataDir, flags: &[&str], env: &[(&str, &str)]) -> Server {
        // Port 0: the server binds a free port itself and says which. (Picking a free
        // port here and passing it on races with every other connection the tests open.)
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(flags);
        let mut command = data.command(&args);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve starts");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let log_writer = log.clone();
        // Wait for the line that says where it serves (printed once the port is bound).
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("conveyor serving on ")
                    && let Some(base) = rest.split_whitespace().next()
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(base.to_string());
                }
                if let Ok(mut log) = log_writer.lock() {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|e| {
                let said = log.lock().map(|l| l.clone()).unwrap_or_default();
                panic!("serve came up: {e}; it said:\n{said}")
            });
        Server {
            data,
            child: Some(child),
            base,
            log,
        }
    }

    /// Stops the server with SIGTERM and returns its exit code.
    pub fn stop(&mut self) -> i32 {
        let Some(mut child) = self.child.take() else {
            return -1;
        };
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().map(|s| s.code().unwrap_or(-1)).unwrap_or(-1)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64
}

/// Corezoid's signature: hex(sha1(time + secret + body + secret)), written out here.
pub fn sign(time: i64, secret: &str, body: &str) -> String {
    use sha1::Digest as _;
    let mut hasher = sha1::Sha1::new();
    hasher.update(format!("{time}{secret}{body}{secret}").as_bytes());
    hex::encode(hasher.finalize())
}

pub fn http() -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// A signed task API call; returns (status, JSON body).
pub fn call(base: &str, login: u64, secret: &str, time: i64, body: &str) -> (u16, Value) {
    let url = format!(
        "{base}/api/2/json/{login}/{time}/{}",
        sign(time, secret, body)
    );
    let response = http()
        .post(url)
        .body(body.to_string())
        .send()
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

const PROCESS: &str = r#"
process: api_test
params:
  code: { secret: true, input: [create, modify, url] }
  state: { input: [create, modify, url] }
  domain: { input: [create, modify, url] }
nodes:
  start: { type: start, next: wait }
  wait: { type: wait_callback, next: done }
  done: { type: final }
"#;

pub fn setup() -> (DataDir, u64, String) {
    let data = DataDir::new();
    let file = data.path().join("p.yaml");
    std::fs::write(&file, PROCESS).expect("write");
    data.ok(&[
        "process",
        "clone",
        file.to_str().expect("utf-8"),
        "--alias",
        "api",
    ]);
    let key = data.json(&["api-key", "create", "tests"]);
    let login = key["login"].as_u64().expect("login");
    let secret = key["secret"].as_str().expect("secret").to_string();
    (data, login, secret)
}

#[test]
fn the_task_api_creates_modifies_shows_and_deletes_as_corezoid_does() {
    let (data, login, secret) = setup();
    let server = Server::start(data);
    let body = json!({"ops": [
        {"type": "create", "obj": "task", "conv_id": 1, "ref": "token", "data": {"code": "s3cret-code", "n": 1}},
        {"type": "create", "obj": "task", "obj_alias": "api", "ref": "second", "data": {}},
        {"type": "create", "obj": "task", "conv_id": 1, "ref": "token", "data": {}},
        {"type": "create", "obj": "task", "conv_id": 99, "data": {}},
        {"id": "client-op-5", "type": "create", "obj": "task", "conv_id": 1, "ref": "empty", "data": []}
    ]})
    .to_string();
    let (status, reply) = call(&server.base, login, &secret, now_secs(), &body);
    assert_eq!(status, 200, "{reply}");
    // The swagger's `data: []` is no data; an op's own `id` comes back in its answer.
    assert_eq!(reply["ops"][4]["proc"], "ok", "{reply}");
    assert_eq!(reply["ops"][4]["id"], "client-op-5");
    assert!(reply["ops"][0].get("id").is_none());
    assert_eq!(reply["request_proc"], "ok");
    assert_eq!(reply["ops"][0]["proc"], "ok");
    assert_eq!(reply["ops"][0]["ref"], "token");
    assert!(reply["ops"][0]["obj_id"].as_str().is_some());
    assert_eq!(reply["ops"][1]["proc"], "ok");
    assert_eq!(reply["ops"][2]["proc"], "error");
    assert_eq!(reply["ops"][2]["tag"], "not_unical_ref");
    assert_eq!(
        reply["ops"][2]["description"],
        "ref 'token' already exists in process 1"
    );
    assert_eq!(reply["ops"][3]["description"], "no process 99");

    // The CLI goes through the server while it runs; the engine moved the task to `wait`.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let task = server.data.json(&["task", "show", "@api", "token"]);
        if task["node"] == "wait" {
            assert_eq!(task["data"]["code"], "***", "secrets masked");
            break;
        }
        assert!(Instant::now() < deadline, "{task}");
        std::thread::sleep(Duration::from_millis(50));
    }

    let body = json!({"ops": [
        {"type": "modify", "obj": "task", "conv_id": 1, "ref": "token", "data": {"answer": 42}},
        {"type": "show", "obj": "task", "conv_id": 1, "ref": "second"},
        {"type": "delete", "obj": "task", "conv_id": 1, "ref": "second"},
        {"type": "show", "obj": "task", "conv_id": 1, "ref": "second"},
        {"type": "launch", "obj": "task", "conv_id": 1}
    ]})
    .to_string();
    let (status, reply) = call(&server.base, login, &secret, now_secs(), &body);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["ops"][0]["proc"], "ok");
    assert_eq!(reply["ops"][1]["proc"], "ok");
    assert_eq!(reply["ops"][1]["ref"], "second");
    assert_eq!(reply["ops"][2]["proc"], "ok");
    assert_eq!(reply["ops"][3]["proc"], "error");
    assert!(
        reply["ops"][4]["description"]
            .as_str()
            .expect("text")
            .contains("unknown op type `launch`")
    );
    // The modify woke the task from its callback wait.
    server.data.ok(&["run", "--until-idle"]);
    let task = server.data.json(&["task", "show", "@api", "token"]);
    assert_eq!(
        (task["node"].as_str(), task["data"]["answer"].as_i64()),
        (Some("done"), Some(42))
    );
    let (status, reply) = call(
        &server.base,
        login,
        &secret,
        now_secs(),
        &json!({"ops": [{"type": "show", "obj": "task", "conv_id": 1, "ref": "token"}]})
            .to_string(),
    );
    assert_eq!(status, 200);
    assert_eq!(
        reply["ops"][0]["data"]["code"], "***",
        "the API never shows secrets"
    );
    // The swagger's show: task_id, node_id and node_prev_id, its status words.
    let shown = &reply["ops"][0];
    assert_eq!(shown["task_id"], shown["obj_id"], "{shown}");
    assert_eq!(
        (shown["node_id"].as_str(), shown["node_prev_id"].as_str()),
        (Some("done"), Some("wait")),
        "{shown}"
    );
    assert_eq!(
        (shown["status"].as_str(), shown["conveyor_status"].as_str()),
        (Some("processed"), Some("done")),
        "{shown}"
    );
    assert!(!reply.to_string().contains("s3cret-code"));
}

#[test]
fn bad_requests_are_refused_with_a_reason_and_change_nothing() {
    let (data, login, secret) = setup();
    let limited = data.json(&["api-key", "create", "limited", "--process", "@api"]);
    let server = Server::start(data);
    let body =
        json!({"ops": [{"type": "create", "obj": "task", "conv_id": 1, "data": {}}]}).to_string();
    let t = now_secs();
    // Unknown login.
    let (status, reply) = call(&server.base, 999, &secret, t, &body);
    assert_eq!(
        (status, reply["description"].as_str()),
        (401, Some("unknown login"))
    );
    // Bad signature (wrong secret).
    let (status, reply) = call(&server.base, login, "wrong", t, &body);
    assert_eq!(
        (status, reply["description"].as_str()),
        (403, Some("bad signature"))
    );
    // A body changed after signing.
    let url = format!(
        "{}/api/2/json/{login}/{t}/{}",
        server.base,
        sign(t, &secret, &body)
    );
    let response = http()
        .post(&url)
        .body(body.replace("create", "delete"))
        .send()
        .expect("send");
    assert_eq!(response.status().as_u16(), 403);
    // Time more than five minutes off.
    let (status, reply) = call(&server.base, login, &secret, t - 400, &body);
    assert_eq!(status, 401);
    assert!(
        reply["description"]
            .as_str()
            .expect("text")
            .contains("more than 300 seconds")
    );
    // A replay of a good request.
    let (status, _) = call(&server.base, login, &secret, t, &body);
    assert_eq!(status, 200);
    let (status, reply) = call(&server.base, login, &secret, t, &body);
    assert_eq!(status, 403);
    assert!(
        reply["description"]
            .as_str()
            .expect("text")
            .contains("replay")
    );
    // Malformed packages.
    for bad in ["not json", "[1,2]", "{\"ops\": 5}", "{\"ops\": []}"] {
        let (status, reply) = call(&server.base, login, &secret, now_secs() + 1, bad);
        assert_eq!(
            (status, reply["request_proc"].as_str()),
            (400, Some("error")),
            "{bad}"
        );
        assert!(
            reply["ops"][0]["description"].as_str().is_some(),
            "the swagger's error400 shape: {reply}"
        );
    }
    // Too many ops: refused whole.
    let many: Vec<Value> = (0..101)
        .map(|i| json!({"type": "create", "obj": "task", "conv_id": 1, "ref": format!("m{i}"), "data": {}}))
        .collect();
    let (status, reply) = call(
        &server.base,
        login,
        &secret,
        now_secs() + 2,
        &json!({"ops": many}).to_string(),
    );
    assert_eq!(
        (status, reply["request_proc"].as_str()),
        (400, Some("error")),
        "{reply}"
    );
    assert!(
        reply["description"]
            .as_str()
            .expect("text")
            .contains("101 ops")
    );
    // Over the body limit (1 MiB).
    let big = json!({"ops": [{"type": "create", "obj": "task", "conv_id": 1, "data": {"blob": "x".repeat(1_100_000)}}]}).to_string();
    let (status, reply) = call(&server.base, login, &secret, now_secs() + 3, &big);
    assert_eq!(status, 413, "{reply}");
    assert!(
        reply["description"]
            .as_str()
            .expect("text")
            .contains("larger than")
    );
    // Task data over 128 KB: that op fails, nothing stored.
    let fat = json!({"ops": [{"type": "create", "obj": "task", "conv_id": 1, "ref": "fat", "data": {"blob": "x".repeat(200_000)}}]}).to_string();
    let (_, reply) = call(&server.base, login, &secret, now_secs() + 4, &fat);
    assert_eq!(reply["ops"][0]["proc"], "error");
    assert!(
        reply["ops"][0]["description"]
            .as_str()
            .expect("text")
            .contains("the limit is 131072")
    );
    // A key limited to @api may not touch another process.
    server
        .data
        .ok(&["process", "clone", "bitrix_deals", "--alias", "other"]);
    let (_, reply) = call(
        &server.base,
        limited["login"].as_u64().expect("login"),
        limited["secret"].as_str().expect("secret"),
        now_secs(),
        &json!({"ops": [{"type": "create", "obj": "task", "obj_alias": "other", "data": {}}]})
            .to_string(),
    );
    assert_eq!(
        reply["ops"][0]["description"],
        "this API key may not use process 2"
    );
    // Exactly one task was created by all of the above (the good one, sent once).
    let tasks = server.data.json(&["task", "list", "@api"]);
    assert_eq!(tasks.as_array().map(Vec::len), Some(1), "{tasks}");
    assert_eq!(
        server
            .data
            .json(&["task", "list", "@other"])
            .as_array()
            .map(Vec::len),
        Some(0)
    );
}

#[test]
fn health_metrics_and_direct_urls() {
    let (data, _, _) = setup();
    let url = data.json(&["process", "url", "@api"])["url"]
        .as_str()
        .expect("url")
        .to_string();
    let server = Server::start(data);
    let url = url.replace("http://127.0.0.1:7878", &server.base);
    let client = http();
    let health: Value = client
        .get(format!("{}/healthz", server.base))
        .send()
        .expect("health")
        .json()
        .expect("json");
    assert_eq!(health["status"], "ok");

    // A browser-style GET creates a task; with the same ref it modifies it.
    let first = client
        .get(format!(
            "{url}?ref=token&code=abc&state=xyz&domain=demo.bitrix24.ru"
        ))
        .send()
        .expect("get");
    assert_eq!(first.status().as_u16(), 200);
    let first: Value = first.json().expect("json");
    assert_eq!(first["ops"][0]["action"], "created");
    server.data.ok(&["run", "--until-idle"]);
    let second = client
        .post(&url)
        .header("accept", "text/html")
        .form(&[("ref", "token"), ("code", "def")])
        .send()
        .expect("post");
    assert_eq!(second.status().as_u16(), 200);
    assert!(
        second
            .text()
            .expect("text")
            .contains("You can close this tab")
    );
    server.data.ok(&["run", "--until-idle"]);
    let task = server
        .data
        .json(&["task", "show", "@api", "token", "--reveal"]);
    assert_eq!(task["node"], "done", "the modify woke it: {task}");
    assert_eq!(
        (
            task["data"]["code"].as_str(),
            task["data"]["state"].as_str()
        ),
        (Some("def"), Some("xyz"))
    );
    // A wrong hash finds nothing; a rotated URL replaces the old one.
    let wrong = client.get(format!("{}x", url)).send().expect("get");
    assert_eq!(wrong.status().as_u16(), 404);
    let rotated = server.data.json(&["process", "url", "@api", "--rotate"])["url"]
        .as_str()
        .expect("url")
        .to_string();
    assert_eq!(client.get(&url).send().expect("old").status().as_u16(), 404);
    assert_eq!(
        client.get(&rotated).send().expect("new").status().as_u16(),
        200
    );

    let metrics = client
        .get(format!("{}/metrics", server.base))
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    for needle in [
        "conveyor_tasks_created_total 2",
        "conveyor_node_transitions_total",
        "conveyor_tasks_in_node{process=\"1\",node=\"done\"} 1",
        "conveyor_timer_lag_seconds_count",
        "conveyor_http_request_duration_seconds_bucket{route=\"/api/1/json/public/{process}/{hash}\",status=\"200\"",
        "conveyor_api_calls_total",
    ] {
        assert!(
            metrics.contains(needle),
            "metrics lack {needle}:\n{metrics}"
        );
    }
    assert!(!metrics.contains("def"), "no task data in metrics");
}

#[test]
fn eight_clients_create_two_thousand_tasks_each_and_none_is_lost_or_doubled() {
    let (data, login, secret) = setup();
    let server = Server::start(data);
    let clients = 8;
    let per_client = 2000;
    let batch = 50;
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let base = server.base.clone();
            let secret = secret.clone();
            std::thread::spawn(move || {
                let client = http();
                let mut created = Vec::new();
                for start in (0..per_client).step_by(batch) {
                    let ops: Vec<Value> = (start..start + batch)
                        .map(|i| json!({"type": "create", "obj": "task", "conv_id": 1, "ref": format!("c{c}-{i}"), "data": {"i": i}}))
                        .collect();
                    let body = json!({"ops": ops}).to_string();
                    // Distinct times keep signatures distinct (no replay refusals).
                    let time = now_secs() - (start / batch) as i64 % 200;
                    let url = format!("{base}/api/2/json/{login}/{time}/{}", sign(time, &secret, &body));
                    let reply: Value = client.post(url).body(body).send().expect("send").json().expect("json");
                    for op in reply["ops"].as_array().expect("ops") {
                        assert_eq!(op["proc"], "ok", "{op}");
                        created.push(op["obj_id"].as_str().expect("id").to_string());
                    }
                }
                created
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for h in handles {
        for id in h.join().expect("client thread") {
            assert!(ids.insert(id), "an id was given twice");
        }
    }
    assert_eq!(ids.len(), clients * per_client);
    // Meanwhile the CLI works through the server: no lock errors.
    let listed = server
        .data
        .json(&["task", "list", "@api", "--limit", "100000"]);
    let listed = listed.as_array().expect("list");
    assert_eq!(listed.len(), clients * per_client);
    let refs: HashSet<&str> = listed
        .iter()
        .map(|t| t["ref"].as_str().expect("ref"))
        .collect();
    assert_eq!(refs.len(), clients * per_client, "refs unique");
}

/// Replaces times (`2026-11-28 16:55:00 UTC`, and epoch milliseconds) so outputs of two
/// runs compare.
fn normalize(text: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let rest: String = chars[i..chars.len().min(i + 23)].iter().collect();
        let is_time = rest.len() == 23
            && rest.ends_with(" UTC")
            && rest.chars().enumerate().all(|(k, c)| match k {
                4 | 7 => c == '-',
                10 | 19 => c == ' ',
                13 | 16 => c == ':',
                20..=22 => true,
                _ => c.is_ascii_digit(),
            });
        let digits = chars[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if is_time {
            out.push_str("<time>");
            i += 23;
        } else if digits == 13 && (i == 0 || !chars[i - 1].is_ascii_digit()) {
            // Milliseconds since the epoch, in JSON output.
            out.push_str("<ms>");
            i += 13;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// A CLI session, good and bad commands, run without and with a server: the same
/// output, the same exit codes, the same error messages.
#[test]
fn the_cli_through_a_server_says_exactly_what_it_says_alone() {
    let file_of = |data: &DataDir| {
        let file = data.path().join("p.yaml");
        std::fs::write(&file, PROCESS).expect("write");
        file.to_str().expect("utf-8").to_string()
    };
    let session = |data: &DataDir, file: &str| -> Vec<(Vec<String>, i32, String, String)> {
        let steps: Vec<Vec<&str>> = vec![
            vec!["process", "clone", file, "--alias", "api"],
            vec!["process", "clone", "bitrix_oauth", "--alias", "bitrix"],
            vec!["process", "clone", "bitrix_oauth", "--alias", "bitrix"],
            vec!["process", "clone", "no_such_template"],
            vec!["process", "list"],
            vec!["task", "add", "@api", "--ref", "one", "code=123456", "n:=5"],
            vec!["task", "add", "@api", "--ref", "one", "code=x"],
            vec![
                "task",
                "add",
                "@bitrix",
                "portal=evil.com#",
                "client_id=1",
                "client_secret=2",
                "code=3",
            ],
            vec!["task", "add", "@bitrix", "portal=ok"],
            vec!["task", "add", "@nope", "x=1"],
            vec!["task", "add", "@api", "novalue"],
            vec!["run", "--until-idle"],
            vec!["task", "show", "@api", "one"],
            vec!["--json", "task", "show", "@api", "one"],
            vec!["task", "show", "@api", "one", "--reveal"],
            vec!["task", "list", "@api"],
            vec!["task", "list", "@api", "--node", "nowhere"],
            vec!["task", "modify", "@api", "one", "answer:=42"],
            vec!["run", "--until-idle"],
            vec!["task", "show", "@api", "one"],
            vec!["task", "history", "@api", "one"],
            vec!["task", "show", "@api", "missing"],
            vec!["process", "show", "@api"],
            vec!["process", "update", "@api", file],
            vec!["task", "delete", "@api", "one"],
            vec!["task", "list", "@api"],
        ];
        steps
            .into_iter()
            .map(|args| {
                let (code, stdout, stderr) = data.run(&args);
                let args = args.iter().map(|a| a.replace(file, "<file>")).collect();
                (
                    args,
                    code,
                    normalize(&stdout.replace(file, "<file>")),
                    normalize(&stderr.replace(file, "<file>")),
                )
            })
            .collect()
    };
    let alone = DataDir::new();
    let alone_file = file_of(&alone);
    let expected = session(&alone, &alone_file);

    let served = DataDir::new();
    let served_file = file_of(&served);
    let server = Server::start(served);
    let actual = session(&server.data, &served_file);
    for (e, a) in expected.iter().zip(&actual) {
        if e.0[0] == "run" {
            // `run --until-idle` reports the steps it saw run; with a server they
            // happened already. Same exit code, same kind of answer.
            assert_eq!((e.1, a.1), (0, 0));
            assert!(a.2.starts_with("idle after "), "{a:?}");
            continue;
        }
        assert_eq!(e, a, "`conveyor {}` differs with a server", e.0.join(" "));
    }
    // Not a vacuous comparison: the session did work and met refusals.
    assert!(expected.iter().any(|s| s.1 == 2) && expected.iter().any(|s| s.1 == 1));
    assert!(
        expected.iter().any(|s| s.2.contains("answer: 42")),
        "{expected:?}"
    );
}

#[test]
fn two_clis_adding_tasks_through_a_server_never_meet_a_lock() {
    let (data, _, _) = setup();
    let server = Server::start(data);
    let path = server.data.path().to_path_buf();
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || {
                for i in 0..15 {
                    let output = crate::support::conveyor()
                        .arg("--data")
                        .arg(&path)
                        .args(["task", "add", "@api", "--ref", &format!("w{w}-{i}")])
                        .output()
                        .expect("runs");
                    let stderr = String::from_utf8_lossy(&output.stderr);
                    assert!(output.status.success(), "{stderr}");
                    assert!(!stderr.contains("in use"), "{stderr}");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    assert_eq!(
        server
            .data
            .json(&["task", "list", "@api"])
            .as_array()
            .map(Vec::len),
        Some(30)
    );
}

#[test]
fn serve_refuses_a_public_address_without_allow_remote() {
    let data = DataDir::new();
    let (code, _, stderr) = data.run(&["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("add --allow-remote if you mean it"),
        "{stderr}"
    );
    let (code, _, stderr) = data.run(&["serve", "--listen", "nowhere"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--listen: `nowhere` is not an address"),
        "{stderr}"
    );
}

#[test]
fn the_server_writes_its_address_and_token_for_its_owner_only() {
    let (data, _, _) = setup();
    let mut server = Server::start(data);
    let file = server.data.path().join("server.json");
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("server.json")).expect("json");
    assert!(
        server
            .base
            .ends_with(info["address"].as_str().expect("address"))
    );
    assert!(info["token"].as_str().expect("token").len() >= 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // Without the token the admin endpoint refuses.
    let response = http()
        .post(format!("{}/admin/command", server.base))
        .json(&json!({"request": {"command": "process_list"}, "json": true}))
        .send()
        .expect("send");
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(server.stop(), 0, "SIGTERM stops it cleanly");
    assert!(!file.exists(), "the file is removed on a clean stop");
}

/// A process that answers by a reply node (`route=reply`), at its final node (no route),
/// or not before an hour (`route=hold`).
const SYNC: &str = r#"
process: sync
params:
  n: { type: string, input: [create, url] }
  pin: { type: string, secret: true, input: [create, url] }
  route: { type: string, input: [create, url] }
nodes:
  start: { type: start, next: route }
  route:
    type: condition
    branches:
      - { when: [ { param: route, fn: eq, value: reply } ], next: answer }
      - { when: [ { param: route, fn: eq, value: hold } ], next: hold }
    else: finish
  answer:
    type: reply
    data: { message: "hello <{{n}}>", doubled: "{{n}}{{n}}", echo: "pin {{pin}}" }
    next: hold
  hold: { type: delay, for: 1h, next: finish }
  finish: { type: set_param, set: { finished: "yes" }, next: end }
  end: { type: final }
"#;

/// A data dir with [`SYNC`] cloned as `@sync`.
fn sync_process() -> DataDir {
    let data = DataDir::new();
    let file = data.path().join("sync.yaml");
    std::fs::write(&file, SYNC).expect("write");
    data.ok(&[
        "process",
        "clone",
        file.to_str().expect("utf-8"),
        "--alias",
        "sync",
    ]);
    data
}

/// Sync replies (issue 15, point 3): a direct URL with `wait` answers with what the task
/// answered: a `reply` node's data, or its data at a final node; 504 with the task id
/// when it does not answer in time; secrets masked; a bad `wait` is refused.
#[test]
fn a_direct_url_with_wait_answers_with_the_tasks_reply() {
    let data = sync_process();
    let url = data.json(&["process", "url", "@sync"])["url"]
        .as_str()
        .expect("url")
        .to_string();
    let server = Server::start(data);
    let url = url.replace("http://127.0.0.1:7878", &server.base);
    let client = http();

    // A reply node answers, though the task goes on waiting in `hold`.
    let replied = client
        .get(format!("{url}?wait=20&route=reply&n=7&pin=4242"))
        .send()
        .expect("get");
    assert_eq!(replied.status().as_u16(), 200);
    let replied: Value = replied.json().expect("json");
    let op = &replied["ops"][0];
    assert_eq!(op["reply"]["doubled"], "77", "{replied}");
    assert_eq!(
        op["reply"]["echo"], "pin ***",
        "a secret is masked: {replied}"
    );
    assert_eq!(op["node"], "answer");
    assert_eq!(op["reply_error"], false);
    let task = server
        .data
        .json(&["task", "show", "@sync", op["obj_id"].as_str().expect("id")]);
    assert_eq!(task["node"], "hold", "the task went on: {task}");

    // A final node answers with the task's data, secrets masked.
    let finished: Value = client
        .post(&url)
        .json(&json!({"wait": 20, "n": "8", "pin": "999"}))
        .send()
        .expect("post")
        .json()
        .expect("json");
    let op = &finished["ops"][0];
    assert_eq!(op["status"], "done", "{finished}");
    assert_eq!(op["node"], "end");
    assert_eq!(op["reply"]["finished"], "yes");
    assert_eq!(op["reply"]["pin"], "***");

    // A browser gets the reply's message, escaped.
    let page = client
        .get(format!("{url}?wait&route=reply&n=9"))
        .header("accept", "text/html")
        .send()
        .expect("get")
        .text()
        .expect("page");
    assert!(page.contains("hello &lt;9&gt;"), "{page}");

    // No answer in time: 504 with the task's id; the task is there, waiting.
    let started = Instant::now();
    let late = client
        .get(format!("{url}?wait=1&route=hold"))
        .send()
        .expect("get");
    assert_eq!(late.status().as_u16(), 504);
    assert!(started.elapsed() >= Duration::from_secs(1));
    let late: Value = late.json().expect("json");
    assert_eq!(late["ops"][0]["proc"], "timeout", "{late}");
    let id = late["ops"][0]["obj_id"].as_str().expect("id").to_string();
    let task = server.data.json(&["task", "show", "@sync", &id]);
    assert_eq!(task["node"], "hold");

    // A bad wait is refused, naming the argument, and makes no task.
    for bad in ["wait=0", "wait=61", "wait=soon"] {
        let refused = client
            .get(format!("{url}?{bad}&route=hold"))
            .send()
            .expect("get");
        assert_eq!(refused.status().as_u16(), 400, "{bad}");
        assert!(refused.text().expect("text").contains("wait:"), "{bad}");
    }
    let listed = server.data.json(&["task", "list", "@sync"]);
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(4),
        "four tasks, none from the refused requests: {listed}"
    );
}

/// Sync replies through the task API: Corezoid's Sync API body `{"timeout": N, "ops":
/// [...]}` answers each create with its task's answer; 504 with the task ids when one
/// does not answer in time; a bad timeout is a format error and creates nothing.
#[test]
fn a_task_api_request_with_a_timeout_answers_each_create_with_its_reply() {
    let data = sync_process();
    let key = data.json(&["api-key", "create", "sync"]);
    let login = key["login"].as_u64().expect("login");
    let secret = key["secret"].as_str().expect("secret").to_string();
    let server = Server::start(data);

    let body = json!({"timeout": 20, "ops": [
        {"type": "create", "obj": "task", "obj_alias": "sync", "data": {"route": "reply", "n": "5", "pin": "7777"}},
        {"type": "create", "obj": "task", "obj_alias": "sync", "ref": "f", "data": {"n": "6"}}
    ]})
    .to_string();
    let (status, reply) = call(&server.base, login, &secret, now_secs(), &body);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["ops"][0]["reply"]["doubled"], "55", "{reply}");
    assert_eq!(reply["ops"][0]["reply"]["echo"], "pin ***");
    assert_eq!(reply["ops"][0]["node"], "answer");
    assert_eq!(reply["ops"][1]["status"], "done");
    assert_eq!(reply["ops"][1]["reply"]["finished"], "yes");
    assert_eq!(reply["ops"][1]["ref"], "f");

    let body = json!({"timeout": 1, "ops": [
        {"type": "create", "obj": "task", "obj_alias": "sync", "data": {"route": "hold"}}
    ]})
    .to_string();
    let (status, late) = call(&server.base, login, &secret, now_secs(), &body);
    assert_eq!(status, 504, "{late}");
    assert_eq!(late["ops"][0]["proc"], "timeout");
    let id = late["ops"][0]["obj_id"].as_str().expect("id").to_string();
    let task = server.data.json(&["task", "show", "@sync", &id]);
    assert_eq!(task["node"], "hold", "the late task goes on: {task}");

    // Without a timeout, the API answers at once as before.
    let body = json!({"ops": [
        {"type": "create", "obj": "task", "obj_alias": "sync", "data": {"route": "hold"}}
    ]})
    .to_string();
    let (status, at_once) = call(&server.base, login, &secret, now_secs(), &body);
    assert_eq!(status, 200, "{at_once}");
    assert!(at_once["ops"][0].get("reply").is_none(), "{at_once}");

    let body = json!({"timeout": 0, "ops": [
        {"type": "create", "obj": "task", "obj_alias": "sync", "data": {}}
    ]})
    .to_string();
    let (status, refused) = call(&server.base, login, &secret, now_secs(), &body);
    assert_eq!(status, 400);
    assert_eq!(refused["request_proc"], "error", "{refused}");
    let listed = server.data.json(&["task", "list", "@sync"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(4), "{listed}");
}
