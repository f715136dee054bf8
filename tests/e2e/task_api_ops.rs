//! The task API's ops beyond create/modify/show/delete, as Corezoid's OpenAPI file has
//! them: `show`'s `user_id`, errors with `key` and `value`, `step_next`, `step_prev` and
//! `step_goto`, `task_history`, `node list`, and the process management ops (`conv`,
//! `convs`, `obj_scheme`), with the refusals a key limited to one process gets. Every
//! request body is shaped like the swagger's examples, signed as Corezoid clients sign,
//! and sent to `conveyor serve` on 127.0.0.1.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http_api::{Server, call, now_secs};
use crate::support::{DataDir, repo_root};

const STEPS: &str = r#"
process: steps
title: Steps
params:
  foo: { input: [create, modify] }
  code: { input: [create], pattern: '^[a-z]{3}$' }
  pin: { secret: true, input: [create], pattern: '^[0-9]{4}$' }
  token: { secret: true, input: [create, modify] }
  api_secret: { secret: true, input: [] }
nodes:
  start: { type: start, next: wait }
  wait: { type: wait_callback, next: review }
  review: { type: wait_callback, timeout: "1h -> late", next: done }
  late: { type: final }
  done: { type: final }
"#;

const OTHER: &str = r#"
process: other
nodes:
  start: { type: start, next: hold }
  hold: { type: wait_callback, next: done }
  done: { type: final }
"#;

/// What the tests hold secret: none of it may appear in any answer.
const SECRETS: [&str; 3] = ["tok-SECRET-1", "SETTING-SECRET-9", "12ab-SECRET"];

/// A running server with `@steps` (its `api_secret` given at clone time) and `@other`,
/// a key for every process and a key limited to `@steps`.
struct Api {
    server: Server,
    all: (u64, String),
    limited: (u64, String),
    steps: u64,
    other: u64,
    /// Makes every body unique: a signature is accepted once.
    counter: std::cell::Cell<u64>,
}

impl Api {
    fn start() -> Api {
        let data = DataDir::new();
        let mut ids = Vec::new();
        for (name, text, extra) in [
            ("steps", STEPS, Some("api_secret=SETTING-SECRET-9")),
            ("other", OTHER, None),
        ] {
            let file = data.path().join(format!("{name}.yaml"));
            std::fs::write(&file, text).expect("write");
            let mut args = vec![
                "process",
                "clone",
                file.to_str().expect("utf-8"),
                "--alias",
                name,
            ];
            if let Some(set) = extra {
                args.extend(["--set", set]);
            }
            ids.push(data.json(&args)["id"].as_u64().expect("process id"));
        }
        let key = |args: &[&str]| {
            let key = data.json(args);
            (
                key["login"].as_u64().expect("login"),
                key["secret"].as_str().expect("secret").to_string(),
            )
        };
        let all = key(&["api-key", "create", "all"]);
        let limited = key(&["api-key", "create", "limited", "--process", "@steps"]);
        Api {
            server: Server::start(data),
            all,
            limited,
            steps: ids[0],
            other: ids[1],
            counter: std::cell::Cell::new(0),
        }
    }

    /// One op signed with `key`; its answer (the request must be answered 200).
    fn op(&self, key: &(u64, String), mut op: Value) -> Value {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        op["id"] = json!(format!("op-{n}"));
        let body = json!({ "ops": [op] }).to_string();
        let (status, reply) = call(&self.server.base, key.0, &key.1, now_secs(), &body);
        assert_eq!(status, 200, "{body} → {reply}");
        let text = reply.to_string();
        for secret in SECRETS {
            assert!(!text.contains(secret), "a secret in an answer: {text}");
        }
        let answer = reply["ops"][0].clone();
        assert_eq!(answer["id"], json!(format!("op-{n}")), "{answer}");
        answer
    }

    fn ok(&self, key: &(u64, String), op: Value) -> Value {
        let answer = self.op(key, op.clone());
        assert_eq!(answer["proc"], "ok", "{op} → {answer}");
        answer
    }

    fn error(&self, key: &(u64, String), op: Value) -> Value {
        let answer = self.op(key, op.clone());
        assert_eq!(answer["proc"], "error", "{op} → {answer}");
        assert!(
            answer["description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{answer}"
        );
        answer
    }

    /// Shows the task until it is in `node` (the engine moves it meanwhile).
    fn wait_for(&self, process: u64, task: &str, node: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let shown = self.ok(
                &self.all,
                json!({"type": "show", "obj": "task", "conv_id": process, "obj_id": task, "company_id": "i1"}),
            );
            if shown["node_id"] == node {
                return shown;
            }
            assert!(Instant::now() < deadline, "never reached `{node}`: {shown}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn task_ops_show_the_creator_refuse_with_key_and_value_and_step_as_the_swagger_says() {
    let api = Api::start();
    let steps = api.steps;

    // Refusals name the field and its value; a secret param's value comes back masked.
    let refused = api.error(
        &api.all,
        json!({"type": "create", "conv_id": steps, "obj": "task", "company_id": "i1", "data": {"code": "AB1"}, "ref": "bad-code"}),
    );
    assert_eq!(
        (refused["key"].as_str(), refused["value"].as_str()),
        (Some("code"), Some("AB1")),
        "{refused}"
    );
    let refused = api.error(
        &api.all,
        json!({"type": "create", "conv_id": steps, "obj": "task", "data": {"pin": "12ab-SECRET"}, "ref": "bad-pin"}),
    );
    assert_eq!(
        (refused["key"].as_str(), refused["value"].as_str()),
        (Some("pin"), Some("***")),
        "{refused}"
    );
    let refused = api.error(&api.all, json!({"type": "show", "conv_id": steps, "obj": "task", "obj_id": "6304dd15094bab211e00042c"}));
    assert_eq!(refused["key"], "obj_id", "{refused}");
    let refused = api.error(
        &api.all,
        json!({"type": "show", "conv_id": 424242, "obj": "task", "ref": "x"}),
    );
    assert_eq!(
        (refused["key"].as_str(), refused["value"].as_str()),
        (Some("conv_id"), Some("424242")),
        "{refused}"
    );
    let refused = api.error(
        &api.all,
        json!({"type": "create", "conv_id": steps, "obj": "task", "data": "foo=bar"}),
    );
    assert_eq!(
        (refused["key"].as_str(), refused["value"].as_str()),
        (Some("data"), Some("foo=bar")),
        "{refused}"
    );

    // `user_id` is the login of the key whose request created the task.
    let created = api.ok(
        &api.all,
        json!({"type": "create", "conv_id": steps, "obj": "task", "company_id": "i1", "data": {"foo": "bar", "code": "abc", "token": "tok-SECRET-1"}, "ref": "t1"}),
    );
    let again = api.error(
        &api.all,
        json!({"type": "create", "conv_id": steps, "obj": "task", "data": {}, "ref": "t1"}),
    );
    assert_eq!(
        (
            again["tag"].as_str(),
            again["key"].as_str(),
            again["value"].as_str()
        ),
        (Some("not_unical_ref"), Some("ref"), Some("t1")),
        "{again}"
    );
    let task = created["obj_id"].as_str().expect("task id").to_string();
    // A param the process does not take through `modify`.
    let refused = api.error(
        &api.all,
        json!({"type": "modify", "conv_id": steps, "obj": "task", "data": {"code": "xyz"}, "ref": "t1"}),
    );
    assert_eq!(
        (refused["key"].as_str(), refused["value"].as_str()),
        (Some("code"), Some("xyz")),
        "{refused}"
    );
    let shown = api.wait_for(steps, &task, "wait");
    assert_eq!(shown["user_id"], json!(api.all.0), "{shown}");
    assert_eq!(shown["data"]["token"], "***", "{shown}");
    let limited_task = api.ok(
        &api.limited,
        json!({"type": "create", "obj_alias": "steps", "obj": "task", "data": {}}),
    );
    let shown = api.ok(
        &api.limited,
        json!({"type": "show", "obj": "task", "conv_id": steps, "obj_id": limited_task["obj_id"]}),
    );
    assert_eq!(shown["user_id"], json!(api.limited.0), "{shown}");
    // A task made by another door has no user_id.
    let by_cli = api
        .server
        .data
        .json(&["task", "add", "@steps", "--ref", "cli"]);
    let shown = api.ok(&api.all, json!({"type": "show", "obj": "task", "conv_id": steps, "obj_id": by_cli["id"].to_string()}));
    assert_eq!(shown["user_id"], Value::Null, "{shown}");

    // step_next, branch logic: on along `next`, the step's data merged first.
    let stepped = api.ok(
        &api.all,
        json!({"conv_id": steps, "type": "step_next", "branch": "logic", "company_id": "i1", "obj": "task", "data": {"foo": "baz"}, "obj_id": task}),
    );
    assert_eq!(
        (
            stepped["prev_node_id"].as_str(),
            stepped["node_id"].as_str(),
            stepped["conv_id"].as_u64(),
            stepped["conv_name"].as_str()
        ),
        (Some("wait"), Some("review"), Some(steps), Some("Steps")),
        "{stepped}"
    );
    assert_eq!(
        (
            stepped["data"]["foo"].as_str(),
            stepped["data"]["token"].as_str()
        ),
        (Some("baz"), Some("***")),
        "{stepped}"
    );
    let shown = api.wait_for(steps, &task, "review");
    assert_eq!(
        (
            shown["node_prev_id"].as_str(),
            shown["data"]["foo"].as_str()
        ),
        (Some("wait"), Some("baz"))
    );
    assert_eq!(
        shown["status"], "delayed",
        "a task under a timeout waits for its timer: {shown}"
    );

    // step_prev: back where it came from.
    let stepped = api.ok(
        &api.all,
        json!({"conv_id": steps, "type": "step_prev", "branch": "logic", "obj": "task", "data": [], "obj_id": task}),
    );
    assert_eq!(
        (
            stepped["prev_node_id"].as_str(),
            stepped["node_id"].as_str()
        ),
        (Some("review"), Some("wait")),
        "{stepped}"
    );
    api.wait_for(steps, &task, "wait");

    // step_goto: to the node named; then step_next on the timer branch takes the timeout.
    let refused = api.error(&api.all, json!({"conv_id": steps, "type": "step_goto", "obj": "task", "data": {}, "obj_id": task, "node_id": "nowhere"}));
    assert!(
        refused["description"]
            .as_str()
            .expect("text")
            .contains("no node `nowhere`"),
        "{refused}"
    );
    let refused = api.error(
        &api.all,
        json!({"conv_id": steps, "type": "step_goto", "obj": "task", "data": {}, "obj_id": task}),
    );
    assert!(
        refused["description"]
            .as_str()
            .expect("text")
            .contains("`node_id` is required"),
        "{refused}"
    );
    api.ok(&api.all, json!({"conv_id": steps, "type": "step_goto", "branch": "logic", "obj": "task", "data": {}, "obj_id": task, "node_id": "review"}));
    api.wait_for(steps, &task, "review");
    let refused = api.error(&api.all, json!({"conv_id": steps, "type": "step_next", "branch": "never", "obj": "task", "data": {}, "obj_id": task}));
    assert_eq!(refused["key"], "branch");
    let stepped = api.ok(&api.all, json!({"conv_id": steps, "type": "step_next", "branch": "timer", "obj": "task", "data": {}, "obj_id": task}));
    assert_eq!(stepped["node_id"], "late", "{stepped}");
    let shown = api.wait_for(steps, &task, "late");
    assert_eq!(
        (shown["status"].as_str(), shown["conveyor_status"].as_str()),
        (Some("processed"), Some("done"))
    );
    // A final node has no next; a timer-less node has no timer branch.
    let refused = api.error(
        &api.all,
        json!({"conv_id": steps, "type": "step_next", "obj": "task", "data": {}, "obj_id": task}),
    );
    assert!(
        refused["description"]
            .as_str()
            .expect("text")
            .contains("no single next node"),
        "{refused}"
    );

    // task_history: every move, who made it, the creator on `created`; masked.
    let history = api.ok(&api.all, json!({"type": "list", "obj": "task_history", "conv_id": steps.to_string(), "obj_id": task}));
    assert_eq!(
        (history["obj_id"].as_str(), history["ref"].as_str()),
        (Some(task.as_str()), Some("t1"))
    );
    let list = history["list"].as_array().expect("list");
    assert_eq!(
        (list[0]["status"].as_str(), list[0]["user_id"].as_u64()),
        (Some("created"), Some(api.all.0)),
        "{history}"
    );
    let moves: Vec<(&str, &str)> = list
        .iter()
        .filter(|e| e["event"] == "recovered")
        .map(|e| {
            (
                e["to"].as_str().unwrap_or(""),
                e["source"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let by = format!("api key {}", api.all.0);
    assert_eq!(
        moves,
        vec![
            ("review", by.as_str()),
            ("wait", by.as_str()),
            ("review", by.as_str()),
            ("late", by.as_str())
        ],
        "{history}"
    );
    assert!(
        list.iter().any(|e| e["event"] == "entered"
            && e["node_id"] == "late"
            && e["node_prev_id"] == "review"),
        "{history}"
    );

    // node list: the tasks in a node, their data masked, and the node's count.
    let listed = api.ok(&api.all, json!({"limit": 10, "offset": 0, "type": "list", "obj": "node", "company_id": "i1", "conv_id": steps, "obj_id": "late", "sort": "ASC"}));
    assert_eq!(listed["count"], 1, "{listed}");
    let first = &listed["list"][0];
    assert_eq!(
        (
            first["obj_id"].as_str(),
            first["ref"].as_str(),
            first["data"]["token"].as_str()
        ),
        (Some(task.as_str()), Some("t1"), Some("***")),
        "{listed}"
    );
    assert_eq!(first["user_id"], json!(api.all.0));
    let waiting = api.ok(&api.all, json!({"type": "list", "obj": "node", "conv_id": steps, "obj_id": "wait", "limit": 1, "offset": 1}));
    assert_eq!(
        (
            waiting["count"].as_i64(),
            waiting["list"].as_array().map(Vec::len)
        ),
        (Some(2), Some(1)),
        "{waiting}"
    );
    let refused = api.error(
        &api.all,
        json!({"type": "list", "obj": "node", "conv_id": steps, "obj_id": "nowhere"}),
    );
    assert!(
        refused["description"]
            .as_str()
            .expect("text")
            .contains("no node `nowhere`"),
        "{refused}"
    );
}

#[test]
fn management_ops_read_create_and_change_processes_only_with_the_rights_for_it() {
    let api = Api::start();
    let (steps, other) = (api.steps, api.other);
    api.ok(
        &api.all,
        json!({"type": "create", "obj": "task", "conv_id": other, "ref": "o1", "data": {}}),
    );
    let task = api.ok(&api.all, json!({"type": "create", "obj": "task", "conv_id": steps, "ref": "s1", "data": {"token": "tok-SECRET-1"}}));
    api.wait_for(steps, task["obj_id"].as_str().expect("id"), "wait");

    // convs list: the processes the key may use.
    let ids = |answer: &Value| -> Vec<u64> {
        answer["list"]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|p| p["obj_id"].as_u64())
            .collect()
    };
    let convs = json!({"pattern": "", "obj_type": "process", "obj": "convs", "company_id": "i1", "type": "list"});
    assert_eq!(ids(&api.ok(&api.all, convs.clone())), vec![steps, other]);
    assert_eq!(ids(&api.ok(&api.limited, convs.clone())), vec![steps]);

    // conv list: the nodes with their counts.
    let nodes = api.ok(
        &api.limited,
        json!({"obj": "conv", "type": "list", "obj_id": steps}),
    );
    assert_eq!(
        (nodes["title"].as_str(), nodes["conv_type"].as_str()),
        (Some("Steps"), Some("process"))
    );
    let count = |answer: &Value, node: &str| {
        answer["list"]
            .as_array()
            .expect("list")
            .iter()
            .find(|n| n["obj_id"] == node)
            .map(|n| (n["count"].as_i64(), n["obj_type"].as_i64()))
    };
    assert_eq!(count(&nodes, "wait"), Some((Some(1), Some(0))), "{nodes}");
    assert_eq!(count(&nodes, "start"), Some((Some(0), Some(1))), "{nodes}");
    assert_eq!(count(&nodes, "done"), Some((Some(0), Some(2))), "{nodes}");

    // obj_scheme get: the Corezoid export, without the value given at clone time.
    let scheme = api.ok(
        &api.limited,
        json!({"type": "get", "obj": "obj_scheme", "obj_id": steps, "obj_type": "conv"}),
    );
    let process = &scheme["scheme"][0];
    assert_eq!(
        (process["obj_type"].as_i64(), process["obj_id"].as_u64()),
        (Some(1), Some(steps)),
        "{scheme}"
    );
    assert_eq!(
        process["scheme"]["nodes"].as_array().map(Vec::len),
        Some(5),
        "{scheme}"
    );

    // A key limited to @steps reads nothing of @other, and changes no definition.
    let limited_refusals = [
        json!({"obj": "conv", "type": "list", "obj_id": other}),
        json!({"type": "get", "obj": "obj_scheme", "obj_id": other, "obj_type": "conv"}),
        json!({"type": "list", "obj": "node", "conv_id": other, "obj_id": "hold"}),
        json!({"type": "list", "obj": "task_history", "conv_id": other, "obj_id": "1"}),
        json!({"type": "show", "obj": "task", "conv_id": other, "ref": "o1"}),
        json!({"conv_id": other, "type": "step_goto", "obj": "task", "data": {}, "ref": "o1", "node_id": "done"}),
    ];
    for op in limited_refusals {
        let refused = api.error(&api.limited, op.clone());
        assert_eq!(
            refused["description"],
            format!("this API key may not use process {other}"),
            "{op}"
        );
        assert_eq!(
            (refused["key"].as_str(), refused["value"].as_str()),
            (
                Some(if op["obj"] == "conv" || op["obj"] == "obj_scheme" {
                    "obj_id"
                } else {
                    "conv_id"
                }),
                Some(other.to_string().as_str())
            ),
            "{refused}"
        );
    }
    let admin_only = [
        json!({"title": "New object", "description": "", "folder_id": 1, "company_id": "i1", "obj": "conv", "create_mode": "without_nodes", "conv_type": "process", "type": "create", "obj_type": 0, "status": "active"}),
        json!({"title": "Renamed", "description": "by a limited key", "type": "modify", "obj": "conv", "obj_id": steps, "company_id": "i1"}),
        json!({"type": "create", "obj": "obj_scheme", "scheme": scheme_sample()}),
        json!({"type": "create", "obj": "obj_scheme", "obj_id": steps, "scheme": scheme_sample()}),
    ];
    for op in admin_only {
        let refused = api.error(&api.limited, op.clone());
        assert!(
            refused["description"]
                .as_str()
                .expect("text")
                .contains("needs the admin token"),
            "{op} → {refused}"
        );
    }
    assert_eq!(
        ids(&api.ok(&api.all, convs.clone())),
        vec![steps, other],
        "nothing was created"
    );
    let unchanged = api.ok(
        &api.all,
        json!({"obj": "conv", "type": "list", "obj_id": steps}),
    );
    assert_eq!(
        (unchanged["title"].as_str(), unchanged["version"].as_u64()),
        (Some("Steps"), Some(1))
    );

    // A key for every process creates a process from a title, renames it, …
    let made = api.ok(&api.all, json!({"title": "Orders intake", "description": "", "folder_id": 1, "company_id": "i1", "obj": "conv", "create_mode": "without_nodes", "conv_type": "process", "type": "create", "obj_type": 0, "status": "active"}));
    let orders = made["obj_id"].as_u64().expect("process id");
    let changed = api.ok(&api.all, json!({"title": "Orders", "description": "test description", "type": "modify", "obj": "conv", "obj_id": orders, "company_id": "i1"}));
    assert_eq!(
        (changed["obj_id"].as_u64(), changed["version"].as_u64()),
        (Some(orders), Some(2)),
        "{changed}"
    );
    let listed = api.ok(
        &api.all,
        json!({"obj": "conv", "type": "list", "obj_id": orders}),
    );
    assert_eq!(
        (listed["title"].as_str(), listed["description"].as_str()),
        (Some("Orders"), Some("test description")),
        "{listed}"
    );
    let order = api.ok(
        &api.all,
        json!({"type": "create", "obj": "task", "conv_id": orders, "data": {}}),
    );
    api.wait_for(orders, order["obj_id"].as_str().expect("id"), "final");

    // … uploads a Corezoid scheme through the importer (the swagger's own example: start,
    // a 30 s delay, final), and replaces a process's definition with one.
    let uploaded = api.ok(&api.all, json!({"type": "create", "obj": "obj_scheme", "company_id": "i1", "scheme": scheme_sample()}));
    let imported = &uploaded["scheme"][0];
    assert_eq!(imported["old_obj_id"], 1004237, "{uploaded}");
    let delayed = imported["obj_id"].as_u64().expect("process id");
    let nodes = api.ok(
        &api.all,
        json!({"obj": "conv", "type": "list", "obj_id": delayed}),
    );
    let kinds: Vec<&str> = nodes["list"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|n| n["kind"].as_str())
        .collect();
    assert_eq!(kinds, vec!["start", "delay", "final"], "{nodes}");
    // A task waits 30 s in the delay; a step on its timer branch moves it on now.
    let t = api.ok(
        &api.all,
        json!({"type": "create", "obj": "task", "conv_id": delayed, "data": {}}),
    );
    let t = t["obj_id"].as_str().expect("id").to_string();
    let shown = api.wait_for(
        delayed,
        &t,
        nodes["list"][1]["obj_id"].as_str().expect("node"),
    );
    assert_eq!(shown["status"], "delayed", "{shown}");
    api.ok(&api.all, json!({"conv_id": delayed, "type": "step_next", "branch": "timer", "obj": "task", "data": {}, "obj_id": t}));
    // Its final node does not say `save_task` (`options` is null in the sample): as in
    // Corezoid, the task is not kept once it gets there.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let shown = api.op(
            &api.all,
            json!({"type": "show", "obj": "task", "conv_id": delayed, "obj_id": t, "company_id": "i1"}),
        );
        if shown["proc"] != "ok" {
            break;
        }
        assert!(Instant::now() < deadline, "the task was kept: {shown}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let replaced = api.ok(
        &api.all,
        json!({"type": "create", "obj": "obj_scheme", "obj_id": orders, "scheme": scheme_sample()}),
    );
    assert_eq!(
        (replaced["obj_id"].as_u64(), replaced["version"].as_u64()),
        (Some(orders), Some(3)),
        "{replaced}"
    );
    // What cannot be imported is refused with the reason, and creates nothing.
    let refused = api.error(
        &api.all,
        json!({"type": "create", "obj": "obj_scheme", "scheme": {"title": "no nodes"}}),
    );
    assert!(
        refused["description"]
            .as_str()
            .expect("text")
            .contains("not a Corezoid export"),
        "{refused}"
    );
    assert_eq!(ids(&api.ok(&api.all, convs)).len(), 4);
}

/// Corezoid's swagger example of an `obj_scheme get` answer (tests/corezoid, MIT).
fn scheme_sample() -> Value {
    let text = std::fs::read_to_string(
        repo_root().join("tests/corezoid/00_envelope_obj_scheme_get_example.json"),
    )
    .expect("sample");
    serde_json::from_str(&text).expect("JSON")
}
