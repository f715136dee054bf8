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

const OTHER: &str = r#"# The other process: comments stay through `conv modify`.
process: other
title: Other   # replaced with its line
description: |
  Two lines
  of description.

# Before the nodes.
nodes:
  start: { type: start, next: hold }  # where it starts
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
        let steps = data.clone_yaml("steps", STEPS, &["api_secret=SETTING-SECRET-9"]);
        let other = data.clone_yaml("other", OTHER, &[]);
        Api {
            all: data.api_key("all", &[]),
            limited: data.api_key("limited", &["@steps"]),
            server: Server::start(data),
            steps,
            other,
            counter: std::cell::Cell::new(0),
        }
    }

    /// A request of these ops signed with `key`: its status and answer, which never
    /// holds a test secret.
    fn request(&self, key: &(u64, String), ops: Vec<Value>) -> (u16, Value) {
        let body = json!({ "ops": ops }).to_string();
        let (status, reply) = call(&self.server.base, key.0, &key.1, now_secs(), &body);
        let text = reply.to_string();
        for secret in SECRETS {
            assert!(!text.contains(secret), "a secret in an answer: {text}");
        }
        (status, reply)
    }

    /// One op signed with `key`; its answer (the request must be answered 200).
    fn op(&self, key: &(u64, String), mut op: Value) -> Value {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        op["id"] = json!(format!("op-{n}"));
        let (status, reply) = self.request(key, vec![op.clone()]);
        assert_eq!(status, 200, "{op} → {reply}");
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

    // The swagger's debug fields: what the new node offers, its logics and the old
    // node's, by Conveyor's node names, and the moves so far.
    assert_eq!(stepped["branches"], json!(["logic", "timer"]), "{stepped}");
    assert_eq!(
        stepped["logic"],
        json!([{"type": "api_callback"}, {"type": "go", "to_node_id": "done"}]),
        "{stepped}"
    );
    assert_eq!(
        stepped["prev_logic"],
        json!([{"type": "api_callback"}, {"type": "go", "to_node_id": "review"}]),
        "{stepped}"
    );
    assert_eq!(stepped["prev_semaphor"], json!([]), "{stepped}");
    let moves: Vec<(Value, Value)> = stepped["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|m| (m["prev_node_id"].clone(), m["node_id"].clone()))
        .collect();
    assert_eq!(
        moves,
        vec![
            (Value::Null, json!("start")),
            (json!("start"), json!("wait"))
        ],
        "{stepped}"
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
    // Each step is recorded as the step it was, not as a plain goto.
    let moves: Vec<(&str, &str, &str)> = list
        .iter()
        .filter(|e| e["event"] == "recovered")
        .map(|e| {
            (
                e["action"].as_str().unwrap_or(""),
                e["to"].as_str().unwrap_or(""),
                e["source"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let by = format!("api key {}", api.all.0);
    assert_eq!(
        moves,
        vec![
            ("step_next", "review", by.as_str()),
            ("step_prev", "wait", by.as_str()),
            ("step_goto", "review", by.as_str()),
            ("step_next", "late", by.as_str())
        ],
        "{history}"
    );
    assert!(
        list.iter()
            .any(|e| e["event"] == "entered" && e["node_id"] == "wait" && e["via"] == "step_prev"),
        "{history}"
    );
    // `conveyor task history` says so too.
    let printed = api.server.data.ok(&["task", "history", "@steps", "t1"]);
    for line in [
        format!("{by} stepped the task on to `review` (step_next)"),
        format!("{by} stepped the task back to `wait` (step_prev)"),
        format!("{by} stepped the task to `review` (step_goto)"),
    ] {
        assert!(printed.contains(&line), "{line}: {printed}");
    }
    for secret in SECRETS {
        assert!(!printed.contains(secret), "{printed}");
    }
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
    // `sort` and `filters` (by ref, the swagger's only filter).
    let in_wait = |op: Value| -> Vec<String> {
        api.ok(&api.all, op)["list"]
            .as_array()
            .expect("list")
            .iter()
            .map(|t| t["obj_id"].as_str().expect("id").to_string())
            .collect()
    };
    let (first, second) = (
        limited_task["obj_id"].as_str().expect("id").to_string(),
        by_cli["id"].to_string(),
    );
    let list = |extra: Value| {
        let mut op =
            json!({"type": "list", "obj": "node", "conv_id": steps, "obj_id": "wait", "limit": 10});
        for (k, v) in extra.as_object().expect("fields") {
            op[k] = v.clone();
        }
        op
    };
    assert_eq!(
        in_wait(list(json!({"sort": "ASC"}))),
        vec![first.clone(), second.clone()]
    );
    assert_eq!(
        in_wait(list(json!({"sort": "DESC"}))),
        vec![second.clone(), first.clone()]
    );
    assert_eq!(
        in_wait(list(json!({"sort": "DESC", "offset": 1}))),
        vec![first.clone()]
    );
    let by_ref = |r: &str| json!({"filters": [{"name": "ref", "value": r, "fun": "eq"}]});
    assert_eq!(in_wait(list(by_ref("cli"))), vec![second.clone()]);
    assert_eq!(in_wait(list(by_ref("nope"))), Vec::<String>::new());
    // t1 exists, but is not in this node.
    assert_eq!(in_wait(list(by_ref("t1"))), Vec::<String>::new());
    assert_eq!(
        in_wait(list(
            json!({"filters": [{"name": "ref", "value": "cli"}, {"name": "ref", "value": "x"}]})
        )),
        Vec::<String>::new()
    );
    // A filter or sort outside the swagger's values is a malformed request: 400, the
    // field named, and no op of the request runs.
    let many: Vec<Value> = (0..11)
        .map(|i| json!({"name": "ref", "value": i.to_string()}))
        .collect();
    for (bad, key) in [
        (
            json!({"filters": [{"name": "status", "value": "x", "fun": "eq"}]}),
            "filters[0].name",
        ),
        (
            json!({"filters": [{"name": "ref", "value": "x", "fun": "like"}]}),
            "filters[0].fun",
        ),
        (
            json!({"filters": [{"name": "ref", "value": ""}]}),
            "filters[0].value",
        ),
        (
            json!({"filters": [{"name": "ref", "value": {"$ne": 1}}]}),
            "filters[0].value",
        ),
        (
            json!({"filters": [{"name": "ref", "value": "x".repeat(2000)}]}),
            "filters[0].value",
        ),
        (
            json!({"filters": [{"name": "ref", "value": "x", "extra": 1}]}),
            "filters[0].extra",
        ),
        (json!({"filters": ["ref=x"]}), "filters[0]"),
        (json!({"filters": "ref=x"}), "filters"),
        (json!({"filters": many}), "filters"),
        (json!({"sort": "UP"}), "sort"),
        (json!({"sort": 1}), "sort"),
    ] {
        let create = json!({"type": "create", "obj": "task", "conv_id": steps, "ref": "never-run", "data": {}});
        let (status, reply) = api.request(&api.all, vec![create, list(bad.clone())]);
        assert_eq!(status, 400, "{bad} → {reply}");
        assert_eq!(reply["request_proc"], "error", "{reply}");
        let op = &reply["ops"][0];
        assert_eq!(op["key"], key, "{bad} → {reply}");
        let description = op["description"].as_str().expect("description");
        assert!(description.starts_with("op 2: "), "{description}");
        assert!(
            description.contains(key.split('.').next().expect("field")),
            "{description}"
        );
    }
    let refused = api.error(
        &api.all,
        json!({"type": "show", "obj": "task", "conv_id": steps, "ref": "never-run"}),
    );
    assert_eq!(
        refused["key"], "ref",
        "nothing of a refused request ran: {refused}"
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
    let mut api = Api::start();
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

    // conv modify edits the stored YAML in place: its comments and layout stay.
    let changed = api.ok(&api.all, json!({"title": "Other: renamed \"here\"", "description": "one line", "type": "modify", "obj": "conv", "obj_id": other}));
    assert_eq!(changed["version"], 2, "{changed}");
    let refused = api.error(
        &api.all,
        json!({"title": "x".repeat(256), "type": "modify", "obj": "conv", "obj_id": other}),
    );
    assert!(
        refused["description"]
            .as_str()
            .expect("text")
            .contains("the limit is 255"),
        "{refused}"
    );
    let refused = api.error(
        &api.all,
        json!({"description": 5, "type": "modify", "obj": "conv", "obj_id": other}),
    );
    assert_eq!(refused["key"], "description", "{refused}");
    api.server.stop();
    let stored = crate::support::open_store(api.server.data.path())
        .process(other)
        .expect("read")
        .expect("the process")
        .definition;
    assert_eq!(
        stored,
        OTHER
            .replace(
                "title: Other   # replaced with its line\n",
                "title: \"Other: renamed \\\"here\\\"\"\n"
            )
            .replace(
                "description: |\n  Two lines\n  of description.\n",
                "description: \"one line\"\n"
            ),
        "{stored}"
    );
}

/// Corezoid's swagger example of an `obj_scheme get` answer (tests/corezoid, MIT).
fn scheme_sample() -> Value {
    let text = std::fs::read_to_string(
        repo_root().join("tests/corezoid/00_envelope_obj_scheme_get_example.json"),
    )
    .expect("sample");
    serde_json::from_str(&text).expect("JSON")
}

#[test]
fn processes_and_nodes_are_shown_and_retitled_and_what_conveyor_lacks_refuses_the_request() {
    let mut api = Api::start();
    let (steps, other) = (api.steps, api.other);

    // conv show: the process's own fields.
    let shown = api.ok(
        &api.limited,
        json!({"obj": "conv", "type": "show", "obj_id": steps}),
    );
    assert_eq!(
        (
            shown["title"].as_str(),
            shown["size"].as_u64(),
            shown["version"].as_u64(),
            shown["alias"].as_str()
        ),
        (Some("Steps"), Some(5), Some(1), Some("steps")),
        "{shown}"
    );
    assert!(
        shown["create_time"]
            .as_i64()
            .is_some_and(|t| t > 1_700_000_000),
        "{shown}"
    );

    // node show: its fields, its logics and semaphors by node names, its count.
    let review = api.ok(
        &api.limited,
        json!({"type": "show", "obj": "node", "obj_id": "review", "conv_id": steps, "company_id": "i1"}),
    );
    assert_eq!(
        (
            review["title"].as_str(),
            review["obj_type"].as_i64(),
            review["kind"].as_str(),
            review["count"].as_i64()
        ),
        (Some("review"), Some(0), Some("wait_callback"), Some(0)),
        "{review}"
    );
    assert_eq!(
        review["logics"],
        json!([{"type": "api_callback"}, {"type": "go", "to_node_id": "done"}]),
        "{review}"
    );
    assert_eq!(
        review["semaphors"],
        json!([{"type": "time", "value": 3600, "dimension": "sec", "to_node_id": "late"}]),
        "{review}"
    );

    // A key limited to @steps reads nothing of @other and changes no node.
    for op in [
        json!({"obj": "conv", "type": "show", "obj_id": other}),
        json!({"type": "show", "obj": "node", "obj_id": "hold", "conv_id": other}),
        json!({"type": "check", "obj": "obj_scheme", "obj_id": other, "obj_type": "conv"}),
    ] {
        let refused = api.error(&api.limited, op.clone());
        assert_eq!(
            refused["description"],
            format!("this API key may not use process {other}"),
            "{op}"
        );
    }
    let modify = json!({"type": "modify", "obj": "node", "obj_id": "review", "conv_id": steps, "title": "Second look", "description": "a person looks again", "obj_type": 0, "logics": review["logics"], "semaphors": review["semaphors"], "position": [520, 204], "extra": {"modeForm": "expand"}, "version": 1662369848});
    for op in [
        modify.clone(),
        json!({"type": "validate", "obj": "obj_scheme", "scheme": scheme_sample()}),
    ] {
        let refused = api.error(&api.limited, op.clone());
        assert!(
            refused["description"]
                .as_str()
                .expect("text")
                .contains("needs the admin token"),
            "{op} → {refused}"
        );
    }

    // node modify: the title and description, the logics sent back as they are.
    let changed = api.ok(&api.all, modify.clone());
    assert_eq!(
        (
            changed["obj_id"].as_str(),
            changed["conv_id"].as_u64(),
            changed["version"].as_u64()
        ),
        (Some("review"), Some(steps), Some(2)),
        "{changed}"
    );
    let review = api.ok(
        &api.all,
        json!({"type": "show", "obj": "node", "obj_id": "review", "conv_id": steps}),
    );
    assert_eq!(
        (review["title"].as_str(), review["description"].as_str()),
        (Some("Second look"), Some("a person looks again")),
        "{review}"
    );
    // Changing its logics, semaphors or type is not a `node modify` here; nothing changes.
    for (field, value) in [
        ("logics", json!([{"type": "go", "to_node_id": "late"}])),
        ("semaphors", json!([])),
        ("obj_type", json!(2)),
    ] {
        let mut op = modify.clone();
        op["title"] = json!("Changed anyway");
        op[field] = value;
        let refused = api.error(&api.all, op);
        let description = refused["description"].as_str().expect("text");
        assert!(
            description.starts_with("not supported by Conveyor: changing a node's")
                && description.contains(field),
            "{refused}"
        );
    }
    for (op, says) in [
        (
            json!({"type": "modify", "obj": "node", "obj_id": "nowhere", "conv_id": steps, "title": "x"}),
            "no node `nowhere`",
        ),
        (
            json!({"type": "modify", "obj": "node", "obj_id": "review", "conv_id": steps, "title": "x".repeat(300)}),
            "the limit is 255",
        ),
        (
            json!({"type": "modify", "obj": "node", "obj_id": "review", "conv_id": steps, "logics": "go"}),
            "is a list",
        ),
    ] {
        let refused = api.error(&api.all, op.clone());
        assert!(
            refused["description"]
                .as_str()
                .expect("text")
                .contains(says),
            "{op} → {refused}"
        );
    }
    let shown = api.ok(
        &api.all,
        json!({"obj": "conv", "type": "show", "obj_id": steps}),
    );
    assert_eq!(shown["version"], 2, "only the one change: {shown}");

    // obj_scheme check: nothing is ever undeployed; validate: an upload tried, nothing made.
    api.ok(
        &api.limited,
        json!({"type": "check", "obj": "obj_scheme", "obj_id": steps, "obj_type": "conv"}),
    );
    api.ok(
        &api.all,
        json!({"type": "validate", "obj": "obj_scheme", "scheme": scheme_sample()}),
    );
    let refused = api.error(
        &api.all,
        json!({"type": "validate", "obj": "obj_scheme", "scheme": [{"obj_type": 1, "title": "x"}]}),
    );
    assert!(
        refused["description"].as_str().expect("text").len() > 10,
        "{refused}"
    );
    let refused = api.error(
        &api.all,
        json!({"type": "create", "obj": "obj_scheme", "async": "no", "scheme": scheme_sample()}),
    );
    assert_eq!(refused["key"], "async", "{refused}");
    let convs = json!({"obj": "convs", "type": "list"});
    assert_eq!(
        api.ok(&api.all, convs.clone())["list"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "validate made nothing"
    );
    // An upload `with_alias: false` makes processes without aliases.
    let uploaded = api.ok(&api.all, json!({"type": "create", "obj": "obj_scheme", "async": false, "with_alias": false, "scheme": scheme_sample()}));
    assert_eq!(uploaded["scheme"][0]["alias"], Value::Null, "{uploaded}");

    // What Corezoid does and Conveyor does not refuses the whole request, with why.
    let unsupported = [
        json!({"type": "link", "obj": "conv", "obj_id": steps, "obj_to": "user", "obj_to_id": 31913, "privs": []}),
        json!({"type": "favorite", "obj": "conv", "obj_id": steps, "favorite": true}),
        json!({"type": "delete", "obj": "conv", "obj_id": steps}),
        json!({"type": "restore", "obj": "conv", "obj_id": steps}),
        json!({"type": "destroy", "obj": "conv", "obj_id": steps}),
        json!({"type": "create", "obj": "node", "conv_id": steps, "title": "Name", "obj_type": 0}),
        json!({"type": "delete", "obj": "node", "conv_id": steps, "obj_id": "review"}),
        json!({"type": "reset", "obj": "node", "conv_id": steps, "obj_id": "late"}),
        json!({"type": "compare", "obj": "obj_scheme", "obj_id": steps}),
        json!({"type": "merge", "obj": "obj_scheme", "obj_id": steps}),
        json!({"type": "get", "obj": "obj_scheme", "obj_id": 1, "obj_type": "folder"}),
        json!({"type": "check", "obj": "obj_scheme", "obj_id": 1, "obj_type": "folder"}),
        json!({"type": "create", "obj": "obj_scheme", "async": true, "scheme": scheme_sample()}),
        json!({"type": "create", "obj": "obj_scheme", "rewrite_alias": true, "scheme": scheme_sample()}),
    ];
    for op in unsupported {
        for key in [&api.all, &api.limited] {
            let create = json!({"type": "create", "obj": "task", "conv_id": steps, "ref": "never-run", "data": {}});
            let (status, reply) = api.request(key, vec![create, op.clone()]);
            assert_eq!(status, 400, "{op} → {reply}");
            assert_eq!(reply["request_proc"], "error", "{reply}");
            let description = reply["ops"][0]["description"].as_str().expect("text");
            assert!(
                description.starts_with("op 2: not supported by Conveyor: "),
                "{op} → {description}"
            );
        }
    }
    let refused = api.error(
        &api.all,
        json!({"type": "show", "obj": "task", "conv_id": steps, "ref": "never-run"}),
    );
    assert_eq!(refused["key"], "ref", "nothing of a refused request ran");
    assert_eq!(
        api.ok(&api.all, convs)["list"].as_array().map(Vec::len),
        Some(3),
        "no process deleted, none uploaded"
    );

    // The node's new title and description went into its line; the rest of the text
    // is as it was.
    api.server.stop();
    let stored = crate::support::open_store(api.server.data.path())
        .process(steps)
        .expect("read")
        .expect("the process")
        .definition;
    assert_eq!(
        stored,
        STEPS.replace(
            "  review: { type: wait_callback,",
            "  review: { description: \"a person looks again\", title: \"Second look\", type: wait_callback,"
        ),
        "{stored}"
    );
}
