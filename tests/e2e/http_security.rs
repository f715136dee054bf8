//! The HTTP server facing strangers, through the real `conveyor serve`: dashboard
//! sessions limited to an API key's processes, expiring, POST-only login; security
//! headers, Host and cross-site checks; timeouts and a connection cap; bodies refused
//! before they are read; rate limits; the task API's ref/obj_id and clock edges; replay
//! refusal across kill -9; `api-key delete` and `rotate` while the server runs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http_api::{Server, call, http, now_secs, setup, sign};
use crate::support::DataDir;

const OTHER: &str = r#"
process: other
nodes:
  start: { type: start, next: wait }
  wait: { type: wait_callback, next: done }
  done: { type: final }
"#;

fn address(base: &str) -> String {
    base.trim_start_matches("http://").to_string()
}

/// Sends `request` as it is on a new connection; returns (status, head, body).
fn raw(base: &str, request: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(address(base)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("write");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn get(base: &str, path: &str, host: &str, extra: &str) -> (u16, String, String) {
    raw(
        base,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"),
    )
}

/// Logs in to the dashboard with a JSON body; returns the cookie (`name=value`).
fn log_in(base: &str, body: Value) -> Option<String> {
    let response = http()
        .post(format!("{base}/ui/login"))
        .json(&body)
        .send()
        .expect("login");
    if !response.status().is_success() {
        return None;
    }
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a cookie")
        .to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    Some(cookie.split(';').next().unwrap_or_default().to_string())
}

fn ui(base: &str, cookie: &str, path: &str) -> (u16, Value) {
    let response = http()
        .get(format!("{base}{path}"))
        .header("cookie", cookie)
        .send()
        .expect("ui request");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

/// Two processes (@api = 1, @other = 2) with a task each, and a key limited to @api.
fn two_processes() -> (DataDir, u64, String, u64, String) {
    let (data, admin_login, admin_secret) = setup();
    let file = data.path().join("other.yaml");
    std::fs::write(&file, OTHER).expect("write");
    data.ok(&[
        "process",
        "clone",
        file.to_str().expect("utf-8"),
        "--alias",
        "other",
    ]);
    data.ok(&["task", "add", "@api", "--ref", "mine"]);
    data.ok(&["task", "add", "@other", "--ref", "theirs"]);
    data.ok(&["run", "--until-idle"]);
    let key = data.json(&["api-key", "create", "limited", "--process", "@api"]);
    (
        data,
        admin_login,
        admin_secret,
        key["login"].as_u64().expect("login"),
        key["secret"].as_str().expect("secret").to_string(),
    )
}

#[test]
fn a_dashboard_session_of_a_limited_key_sees_only_its_processes() {
    let (data, _, _, login, secret) = two_processes();
    let server = Server::start(data);
    let base = &server.base;
    let cookie = log_in(base, json!({"login": login.to_string(), "secret": secret}))
        .expect("the key logs in");

    let (status, list) = ui(base, &cookie, "/ui/api/processes");
    assert_eq!(status, 200);
    let ids: Vec<u64> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|p| p["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(ids, vec![1], "only the key's process: {list}");
    for path in [
        "/ui/api/processes/1",
        "/ui/api/processes/@api/counts",
        "/ui/api/processes/1/nodes/wait/tasks",
        "/ui/api/tasks/1/mine",
    ] {
        assert_eq!(ui(base, &cookie, path).0, 200, "{path}");
    }
    for path in [
        "/ui/api/processes/2",
        "/ui/api/processes/@other",
        "/ui/api/processes/2/counts",
        "/ui/api/processes/other/counts",
        "/ui/api/processes/2/nodes/wait/tasks",
        "/ui/api/tasks/2/theirs",
        "/ui/api/tasks/@other/theirs",
        "/ui/api/processes/3",
    ] {
        let (status, body) = ui(base, &cookie, path);
        assert_eq!(status, 404, "{path}: {body}");
        // The same answer as for a process that does not exist.
        assert!(
            body["description"]
                .as_str()
                .unwrap_or_default()
                .starts_with("no process"),
            "{path}: {body}"
        );
    }

    // The admin sees both.
    let token = server_token(&server);
    let admin = log_in(base, json!({"token": token})).expect("admin logs in");
    let (_, list) = ui(base, &admin, "/ui/api/processes");
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    assert_eq!(ui(base, &admin, "/ui/api/tasks/2/theirs").0, 200);

    // No login through a URL: the token in a query string does nothing.
    let response = http()
        .get(format!("{base}/ui/login?token={token}"))
        .send()
        .expect("get");
    assert_ne!(response.status().as_u16(), 200);
    assert!(response.headers().get("set-cookie").is_none());
    // Wrong credentials: no session.
    assert!(log_in(base, json!({"token": "nope"})).is_none());
    assert!(log_in(base, json!({"login": login.to_string(), "secret": "nope"})).is_none());
    // A login form (no JavaScript) works too, and sends the browser back to `/`.
    let response = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(format!("{base}/ui/login"))
        .form(&[("token", token.as_str())])
        .send()
        .expect("form login");
    assert_eq!(response.status().as_u16(), 303);
    assert!(response.headers().get("set-cookie").is_some());

    // Deleting the key ends its sessions at once.
    server.data.ok(&["api-key", "delete", &login.to_string()]);
    let (status, body) = ui(base, &cookie, "/ui/api/processes");
    assert_eq!(status, 401, "{body}");
}

fn server_token(server: &Server) -> String {
    let info: Value = serde_json::from_str(
        &std::fs::read_to_string(server.data.path().join("server.json")).expect("server.json"),
    )
    .expect("json");
    info["token"].as_str().expect("token").to_string()
}

#[test]
fn dashboard_sessions_expire_when_unused_and_after_their_lifetime() {
    let (data, _, _) = setup();
    let server = Server::start_full(
        data,
        &["--session-idle", "2", "--session-lifetime", "4"],
        &[],
    );
    let base = &server.base;
    let token = server_token(&server);

    // Unused for longer than the idle limit: back to the login.
    let cookie = log_in(base, json!({"token": token})).expect("login");
    assert_eq!(ui(base, &cookie, "/ui/api/processes").0, 200);
    std::thread::sleep(Duration::from_millis(2600));
    let (status, body) = ui(base, &cookie, "/ui/api/processes");
    assert_eq!(status, 401, "{body}");
    assert!(
        body["description"]
            .as_str()
            .unwrap_or_default()
            .contains("expired")
    );

    // Used all the time, it still ends after its lifetime.
    let cookie = log_in(base, json!({"token": token})).expect("login");
    let started = Instant::now();
    let ended = loop {
        let (status, _) = ui(base, &cookie, "/ui/api/processes");
        if status != 200 {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never ended");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        ended >= Duration::from_secs(4) && ended < Duration::from_secs(6),
        "ended after {ended:?}"
    );
}

#[test]
fn every_response_has_the_security_headers_and_other_hosts_and_sites_are_refused() {
    let (data, _, _) = setup();
    let server = Server::start_full(data, &["--public-host", "conveyor.example.com"], &[]);
    let base = &server.base;
    let port = address(base).rsplit(':').next().expect("port").to_string();
    let local = format!("127.0.0.1:{port}");
    let check_headers = |what: &str, head: &str| {
        for header in [
            "content-security-policy: default-src 'none'; script-src 'self';",
            "frame-ancestors 'none'",
            "x-frame-options: deny",
            "x-content-type-options: nosniff",
            "referrer-policy: no-referrer",
        ] {
            assert!(head.contains(header), "{what}: no `{header}` in\n{head}");
        }
        assert!(
            !head.contains("access-control-allow-origin"),
            "{what}: {head}"
        );
    };
    for path in [
        "/",
        "/ui/dashboard.js",
        "/healthz",
        "/metrics",
        "/nope",
        "/ui/api/processes",
    ] {
        let (status, head, _) = get(base, path, &local, "");
        assert_ne!(status, 0, "{path}");
        check_headers(path, &head);
    }
    // The page has no inline script: its script is a file the policy allows.
    let (_, _, page) = get(base, "/", &local, "");
    assert!(page.contains("<script src=\"/ui/dashboard.js\""), "{page}");
    assert!(
        !page.contains("<script>") && !page.contains("style="),
        "{page}"
    );

    // DNS rebinding: another name for 127.0.0.1 is refused, with the reason.
    for host in [
        format!("evil.example:{port}"),
        format!("127.0.0.1:{}", port.parse::<u32>().unwrap_or(0) + 1),
    ] {
        let (status, head, body) = get(base, "/metrics", &host, "");
        assert_eq!(status, 421, "{host}: {body}");
        assert!(body.contains("does not answer to the host"), "{body}");
        assert!(body.contains("--public-host"), "{body}");
        check_headers("421", &head);
    }
    for host in [
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        "conveyor.example.com".to_string(),
    ] {
        assert_eq!(get(base, "/healthz", &host, "").0, 200, "{host}");
    }

    // /metrics (and the dashboard's API, the admin endpoint) refuse other sites.
    for extra in [
        "Origin: http://evil.example\r\n",
        "Origin: null\r\n",
        "Sec-Fetch-Site: cross-site\r\n",
    ] {
        let (status, head, body) = get(base, "/metrics", &local, extra);
        assert_eq!(status, 403, "{extra}: {body}");
        assert!(body.contains("cross-site"), "{body}");
        check_headers("403", &head);
        assert_eq!(get(base, "/ui/api/processes", &local, extra).0, 403);
    }
    let same = format!("Origin: http://{local}\r\nSec-Fetch-Site: same-origin\r\n");
    let (status, _, body) = get(base, "/metrics", &local, &same);
    assert_eq!(status, 200);
    assert!(body.contains("conveyor_"), "{body}");
    // An OAuth redirect from another site still reaches a direct URL.
    let url = server.data.json(&["process", "url", "@api"])["url"]
        .as_str()
        .expect("url")
        .to_string();
    let path = url
        .splitn(4, '/')
        .nth(3)
        .map(|p| format!("/{p}"))
        .expect("path");
    let (status, _, body) = get(
        base,
        &format!("{path}?ref=from-oauth"),
        &local,
        "Sec-Fetch-Site: cross-site\r\nOrigin: https://oauth.example\r\n",
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn slow_headers_are_cut_off_while_normal_requests_go_on() {
    let (data, _, _) = setup();
    let server = Server::start_full(data, &["--header-timeout", "2"], &[]);
    let base = &server.base;
    let host = address(base);
    let mut slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(&host).expect("connect");
            s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nX-Slow: ").as_bytes())
                .expect("write");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            s
        })
        .collect();
    let started = Instant::now();
    // Meanwhile a normal request is answered at once.
    let response = http()
        .get(format!("{base}/healthz"))
        .send()
        .expect("health");
    assert_eq!(response.status().as_u16(), 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    // Every unfinished request is closed after the header timeout (EOF, no answer).
    for (i, s) in slow.iter_mut().enumerate() {
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("connection {i} was not closed: {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(6),
        "closed after {elapsed:?}"
    );
    assert_eq!(
        http()
            .get(format!("{base}/healthz"))
            .send()
            .expect("health")
            .status()
            .as_u16(),
        200
    );
}

#[test]
fn the_connection_cap_makes_the_next_connection_wait_its_turn() {
    let (data, _, _) = setup();
    let server = Server::start_full(
        data,
        &["--max-connections", "4", "--header-timeout", "2"],
        &[],
    );
    let host = address(&server.base);
    let _held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(&host).expect("connect");
            s.write_all(b"GET / HTTP/1.1\r\n").expect("write");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let (status, _, _) = get(&server.base, "/healthz", &host, "");
    assert_eq!(status, 200);
    // It waited for a place: the held connections were closed after 2 s.
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(6),
        "waited {waited:?}"
    );
}

/// `VmRSS` (now) or `VmHWM` (the peak so far) of process `pid`, in KiB.
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

#[test]
fn large_unauthenticated_bodies_do_not_inflate_memory() {
    let (data, login, _) = setup();
    let url = data.json(&["process", "url", "@api"])["url"]
        .as_str()
        .expect("url")
        .to_string();
    let server = Server::start(data);
    let pid = server.child.as_ref().expect("child").id();
    let host = address(&server.base);
    let direct = url
        .splitn(4, '/')
        .nth(3)
        .map(|p| format!("/{p}"))
        .expect("path");
    let wrong_hash = format!("{}x", &direct[..direct.len() - 1]);
    let before = memory_kib(pid, "VmRSS:");
    let body = vec![b'{'; 1024 * 1024];
    let now = now_secs();
    let targets = [
        // An unknown login, a time far off, a signature of the wrong shape, a direct
        // URL with a wrong hash: all refused before the body is read.
        format!("/api/2/json/999999/{now}/{}", "0".repeat(40)),
        format!("/api/2/json/{login}/{}/{}", now - 100_000, "0".repeat(40)),
        format!("/api/2/json/{login}/{now}/not-a-signature"),
        wrong_hash,
    ];
    // 160 clients at once, so a server that read the bodies would hold 160 MiB.
    let clients = 160;
    let start = std::sync::Arc::new(std::sync::Barrier::new(clients));
    let threads: Vec<_> = (0..clients)
        .map(|t| {
            let host = host.clone();
            let body = body.clone();
            let targets = targets.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                let mut answered = 0;
                for i in 0..4 {
                    let path = &targets[(t + i) % targets.len()];
                    let Ok(mut s) = TcpStream::connect(&host) else {
                        continue;
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let head = format!(
                        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(head.as_bytes());
                    // The server may answer and close before taking it all.
                    let _ = s.write_all(&body);
                    let mut answer = [0u8; 12];
                    if s.read(&mut answer).is_ok_and(|n| n >= 12) {
                        let status = String::from_utf8_lossy(&answer[9..12]).to_string();
                        assert!(
                            matches!(status.as_str(), "401" | "403" | "404"),
                            "{path}: {status}"
                        );
                        answered += 1;
                    }
                }
                answered
            })
        })
        .collect();
    let answered: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
    // The peak, not only what is left.
    let after = memory_kib(pid, "VmHWM:");
    eprintln!(
        "640 requests with 1 MiB bodies ({answered} answered): RSS {before} KiB, peak after {after} KiB"
    );
    assert!(answered > 0);
    assert!(
        after.saturating_sub(before) < 100 * 1024,
        "RSS grew from {before} KiB to a peak of {after} KiB"
    );
    assert_eq!(
        http()
            .get(format!("{}/healthz", server.base))
            .send()
            .expect("health")
            .status()
            .as_u16(),
        200
    );
}

#[test]
fn direct_urls_and_api_keys_are_rate_limited_with_429_and_retry_after() {
    let (data, login, secret) = setup();
    let url = data.json(&["process", "url", "@api"])["url"]
        .as_str()
        .expect("url")
        .to_string();
    let server = Server::start_full(
        data,
        &[
            "--direct-rate",
            "1",
            "--direct-burst",
            "5",
            "--api-key-rate",
            "1",
            "--api-key-burst",
            "3",
        ],
        &[],
    );
    let url = url.replace("http://127.0.0.1:7878", &server.base);
    let client = http();
    let statuses: Vec<u16> = (0..7)
        .map(|i| {
            client
                .get(format!("{url}?code=c{i}"))
                .send()
                .expect("direct")
                .status()
                .as_u16()
        })
        .collect();
    assert_eq!(&statuses[..5], &[200; 5], "{statuses:?}");
    let limited = client.get(&url).send().expect("direct");
    assert_eq!(limited.status().as_u16(), 429);
    let retry: u64 = limited
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=2).contains(&retry), "{retry}");
    let reason: Value = limited.json().expect("json");
    let text = reason["description"].as_str().unwrap_or_default();
    assert!(
        text.contains("too many requests") && text.contains("direct URL"),
        "{reason}"
    );
    // A second later there is room again.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        client.get(&url).send().expect("direct").status().as_u16(),
        200
    );

    // The API key: 3 at once, then 429.
    let now = now_secs();
    let statuses: Vec<u16> = (0..4)
        .map(|i| {
            let body =
                json!({"ops": [{"type": "create", "obj": "task", "conv_id": 1, "data": {"i": i}}]})
                    .to_string();
            call(&server.base, login, &secret, now - i, &body).0
        })
        .collect();
    assert_eq!(statuses, vec![200, 200, 200, 429]);
    let body = json!({"ops": []}).to_string();
    let response = http()
        .post(format!(
            "{}/api/2/json/{login}/{now}/{}",
            server.base,
            sign(now, &secret, &body)
        ))
        .body(body)
        .send()
        .expect("request");
    assert_eq!(response.status().as_u16(), 429);
    assert!(response.headers().get("retry-after").is_some());
    let reason: Value = response.json().expect("json");
    assert!(
        reason["description"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("API key {login}")),
        "{reason}"
    );
}

#[test]
fn a_ref_names_a_ref_and_an_obj_id_an_id_and_odd_times_do_not_overflow() {
    let (data, login, secret) = setup();
    let server = Server::start(data);
    let base = &server.base;
    let mut time = now_secs();
    let mut api = |ops: Value| -> Value {
        time -= 1;
        let (status, body) = call(base, login, &secret, time, &json!({"ops": ops}).to_string());
        assert_eq!(status, 200, "{body}");
        body
    };
    let created = api(json!([{"type": "create", "obj": "task", "conv_id": 1, "ref": "first"}]));
    let id = created["ops"][0]["obj_id"]
        .as_str()
        .expect("id")
        .to_string();
    // Another task whose ref is the first task's id.
    api(json!([{"type": "create", "obj": "task", "conv_id": 1, "ref": "zzz"}]));

    // A ref that matches no task is not found, even if it reads as a task id.
    let answer = api(json!([{"type": "delete", "conv_id": 1, "ref": id.clone()}]));
    assert_eq!(answer["ops"][0]["proc"], "error", "{answer}");
    let answer = api(json!([{"type": "show", "conv_id": 1, "ref": id.parse::<u64>().expect("n")}]));
    assert_eq!(answer["ops"][0]["proc"], "error", "{answer}");
    // By obj_id: found, and the answers carry the task's real ref.
    let answer = api(json!([{"type": "show", "conv_id": 1, "obj_id": id.clone()}]));
    assert_eq!(answer["ops"][0]["ref"], "first", "{answer}");
    let answer =
        api(json!([{"type": "modify", "conv_id": 1, "obj_id": id.clone(), "data": {"x": 1}}]));
    assert_eq!(answer["ops"][0]["proc"], "ok", "{answer}");
    assert_eq!(answer["ops"][0]["ref"], "first", "{answer}");
    let answer = api(json!([{"type": "show", "conv_id": 1, "obj_id": "abc"}]));
    assert!(
        answer["ops"][0]["description"]
            .as_str()
            .unwrap_or_default()
            .contains("obj_id"),
        "{answer}"
    );
    // A ref is never read as an id: a task with ref equal to another's id.
    api(json!([{"type": "create", "obj": "task", "conv_id": 1, "ref": id.clone()}]));
    let answer = api(json!([{"type": "show", "conv_id": 1, "ref": id.clone()}]));
    assert_ne!(answer["ops"][0]["obj_id"], id.as_str(), "{answer}");
    assert_eq!(answer["ops"][0]["ref"], id.as_str(), "{answer}");
    let answer = api(json!([{"type": "delete", "conv_id": 1, "obj_id": id.clone()}]));
    assert_eq!(answer["ops"][0]["ref"], "first", "{answer}");
    let shown = server.data.json(&["task", "show", "@api", &id]);
    assert_eq!(
        shown["ref"],
        id.as_str(),
        "the task named by ref stays: {shown}"
    );

    // Request times far off, at the edges of i64, are refused (no overflow).
    let now = now_secs();
    for t in [
        now.wrapping_add(i64::MIN),
        i64::MIN,
        i64::MAX,
        // Past the 300 s allowed with room to spare: the server reads its clock a
        // moment later than this test (a second may turn between the two on a busy
        // machine, which made `now + 301` land at exactly 300 once).
        now - 310,
        now + 310,
    ] {
        let body = json!({"ops": [{"type": "create", "obj": "task", "conv_id": 1}]}).to_string();
        let (status, answer) = call(base, login, &secret, t, &body);
        assert_eq!(status, 401, "t = {t}: {answer}");
        assert!(
            answer["description"]
                .as_str()
                .unwrap_or_default()
                .contains("seconds from the server's"),
            "{answer}"
        );
    }
}

#[test]
fn a_signed_request_is_refused_again_after_kill_9_and_a_restart() {
    let (data, login, secret) = setup();
    let mut server = Server::start(data);
    let time = now_secs();
    let body = json!({"ops": [{"type": "create", "obj": "task", "conv_id": 1, "ref": "once"}]})
        .to_string();
    let (status, answer) = call(&server.base, login, &secret, time, &body);
    assert_eq!(
        (status, answer["ops"][0]["proc"].as_str()),
        (200, Some("ok")),
        "{answer}"
    );
    let mut child = server.child.take().expect("child");
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let data = std::mem::replace(&mut server.data, DataDir::new());
    let server = Server::start(data);
    let (status, answer) = call(&server.base, login, &secret, time, &body);
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["description"]
            .as_str()
            .unwrap_or_default()
            .contains("replay"),
        "{answer}"
    );
    // Another request is fine.
    let (status, _) = call(
        &server.base,
        login,
        &secret,
        time - 1,
        &body.replace("once", "twice"),
    );
    assert_eq!(status, 200);
}

#[test]
fn api_keys_are_deleted_and_rotated_while_the_server_runs() {
    let (data, login, secret) = setup();
    let server = Server::start(data);
    let base = &server.base;
    let body = |r: &str| {
        json!({"ops": [{"type": "create", "obj": "task", "conv_id": 1, "ref": r}]}).to_string()
    };
    let now = now_secs();
    assert_eq!(call(base, login, &secret, now, &body("a")).0, 200);

    let rotated = server.data.json(&["api-key", "rotate", &login.to_string()]);
    let new_secret = rotated["secret"].as_str().expect("secret").to_string();
    assert_ne!(new_secret, secret);
    let (status, answer) = call(base, login, &secret, now - 1, &body("b"));
    assert_eq!(status, 403, "the old secret: {answer}");
    assert_eq!(call(base, login, &new_secret, now - 2, &body("c")).0, 200);
    // Text output says the secret is shown once.
    let text = server.data.ok(&["api-key", "rotate", &login.to_string()]);
    assert!(text.contains("shown only now"), "{text}");
    let newest = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("secret: "))
        .expect("secret line")
        .to_string();
    assert_eq!(call(base, login, &new_secret, now - 3, &body("d")).0, 403);
    assert_eq!(call(base, login, &newest, now - 4, &body("e")).0, 200);

    server.data.ok(&["api-key", "delete", &login.to_string()]);
    let (status, answer) = call(base, login, &newest, now - 5, &body("f"));
    assert_eq!(status, 401, "{answer}");
    let keys = server.data.json(&["api-key", "list"]);
    assert_eq!(keys, json!([]));
    // Unknown logins are named.
    let (code, _, stderr) = server.data.run(&["api-key", "delete", &login.to_string()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("no API key with login {login}")),
        "{stderr}"
    );
    let (code, _, stderr) = server.data.run(&["api-key", "rotate", "5"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no API key with login 5"), "{stderr}");
}

#[test]
fn api_keys_are_deleted_and_rotated_without_a_server_too() {
    let (data, login, secret) = setup();
    let rotated = data.json(&["api-key", "rotate", &login.to_string()]);
    assert_ne!(rotated["secret"].as_str(), Some(secret.as_str()));
    let server = Server::start(data);
    let now = now_secs();
    let body = json!({"ops": [{"type": "create", "obj": "task", "conv_id": 1}]}).to_string();
    assert_eq!(call(&server.base, login, &secret, now, &body).0, 403);
    let new_secret = rotated["secret"].as_str().expect("secret");
    assert_eq!(call(&server.base, login, new_secret, now - 1, &body).0, 200);
    drop(server);
}

#[test]
fn process_check_refuses_files_over_the_size_limit_without_reading_them() {
    let data = DataDir::new();
    let started = Instant::now();
    let (code, stdout, _) = data.run(&["process", "check", "/dev/zero"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("larger than 1048576 bytes"), "{stdout}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let big = data.path().join("big.yaml");
    let mut text = String::from("process: big\n");
    while text.len() <= 1024 * 1024 {
        text.push_str("# padding padding padding padding padding padding padding\n");
    }
    std::fs::write(&big, &text).expect("write");
    let (code, stdout, _) = data.run(&["process", "check", big.to_str().expect("utf-8")]);
    assert_eq!(code, 1);
    assert!(stdout.contains("the limit for a process file"), "{stdout}");
    let (code, _, stderr) = data.run(&["process", "clone", big.to_str().expect("utf-8")]);
    assert_ne!(code, 0);
    assert!(stderr.contains("the limit for a process file"), "{stderr}");
}

/// Reads one response (headers and a `content-length` body) from a kept-alive
/// connection; returns its status, or `None` when the server closed the connection.
fn read_response(stream: &mut TcpStream) -> Option<u16> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return head.split_whitespace().nth(1).and_then(|s| s.parse().ok());
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn a_kept_alive_connection_waits_the_idle_time_and_a_slow_body_gets_408() {
    let (data, _, _) = setup();
    let url = data.json(&["process", "url", "@api"])["url"]
        .as_str()
        .expect("url")
        .to_string();
    let server = Server::start_full(
        data,
        &[
            "--header-timeout",
            "1",
            "--idle-timeout",
            "3",
            "--body-timeout",
            "1",
        ],
        &[],
    );
    let host = address(&server.base);
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let mut stream = TcpStream::connect(&host).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("write");
    assert_eq!(read_response(&mut stream), Some(200));
    // Idle for longer than the header timeout but within the idle timeout: still open.
    std::thread::sleep(Duration::from_millis(2000));
    stream.write_all(request.as_bytes()).expect("write");
    assert_eq!(read_response(&mut stream), Some(200));
    // Then idle past the idle timeout: closed.
    let idle = Instant::now();
    assert_eq!(read_response(&mut stream), None);
    let closed = idle.elapsed();
    assert!(
        closed >= Duration::from_millis(2500) && closed < Duration::from_secs(6),
        "closed after {closed:?}"
    );

    // A body that stops coming: 408 after the body timeout.
    let path = url
        .splitn(4, '/')
        .nth(3)
        .map(|p| format!("/{p}"))
        .expect("path");
    let mut stream = TcpStream::connect(&host).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"ref\":"
            )
            .as_bytes(),
        )
        .expect("write");
    let started = Instant::now();
    assert_eq!(read_response(&mut stream), Some(408));
    assert!(started.elapsed() < Duration::from_secs(5));
}
