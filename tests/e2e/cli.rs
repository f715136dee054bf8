//! End-to-end tests of every CLI command, in a temporary data dir.
//!
//! Exit codes: 0 success, 1 the command ran and failed (not found, refused, invalid),
//! 2 the command line itself is wrong.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{DataDir, http_server, run};

/// A task waits in a one-hour delay; a code param with a pattern, a secret token.
const DELAY: &str = r#"
process: delay
title: Delay test
secrets: [token]
params:
  code: { required: true, pattern: '^[0-9]+$', description: the code from the redirect }
  scope: { default: crm }
nodes:
  start: { type: start, next: wait }
  wait: { type: delay, for: 1h, next: done }
  done: { type: final }
"#;

/// DELAY without its `wait` node.
const DELAY_WITHOUT_WAIT: &str = r#"
process: delay
title: Delay test, version 2
secrets: [token]
params:
  code: { required: true, pattern: '^[0-9]+$' }
  scope: { default: crm }
nodes:
  start: { type: start, next: done }
  done: { type: final }
"#;

/// DELAY with a longer wait and a renamed final node: `wait` is kept.
const DELAY_KEEPING_WAIT: &str = r#"
process: delay
title: Delay test, version 2
secrets: [token]
params:
  code: { required: true, pattern: '^[0-9]+$' }
  scope: { default: crm }
nodes:
  start: { type: start, next: wait }
  wait: { type: delay, for: 2h, next: finish }
  finish: { type: final }
"#;

const CALLBACK: &str = r#"
process: callback
nodes:
  start: { type: start, next: wait }
  wait: { type: wait_callback, next: got }
  got: { type: final }
"#;

const ESCALATION: &str = r#"
process: esc
nodes:
  start: { type: start, next: check }
  check:
    type: condition
    branches:
      - when: [ { param: code, fn: eq, value: good } ]
        next: done
    else: stuck
  stuck: { type: escalation, title: needs a person, next: check }
  done: { type: final }
"#;

/// Two errors: a dangling `next` (line 3, column 25) and a delay without a duration.
const INVALID: &str = r#"process: bad
nodes:
  start: { type: start, next: nowhere }
  done: { type: final }
  x: { type: delay, next: done }
"#;

const LOCKED: &str = "in use by a running Conveyor engine";

/// Writes `yaml` as `name` into the temp dir; returns its absolute path.
fn write(d: &DataDir, name: &str, yaml: &str) -> String {
    let path = d.path().join(name);
    std::fs::write(&path, yaml).expect("write the process file");
    path.to_str().expect("utf-8 temp path").to_string()
}

/// Runs a command that must fail with `code`, print nothing on stdout, and one
/// `error: …` on stderr; returns the message after `error: `.
fn fails(d: &DataDir, args: &[&str], code: i32) -> String {
    let (actual, stdout, stderr) = d.run(args);
    assert_eq!(
        actual, code,
        "conveyor {args:?}: expected exit {code}\n{stdout}\n{stderr}"
    );
    assert_eq!(stdout, "", "conveyor {args:?} printed on stdout");
    let message = stderr
        .strip_prefix("error: ")
        .unwrap_or_else(|| panic!("conveyor {args:?}: stderr is not `error: …`: {stderr}"));
    message.strip_suffix('\n').unwrap_or(message).to_string()
}

/// Clones `yaml` (saved as `<alias>.yaml`) with `--alias alias`; returns the process id.
fn clone(d: &DataDir, alias: &str, yaml: &str) -> u64 {
    let file = write(d, &format!("{alias}.yaml"), yaml);
    let out = d.json(&["process", "clone", &file, "--alias", alias]);
    out["id"].as_u64().expect("a process id")
}

/// `task show --json` of a task.
fn task(d: &DataDir, process: &str, key: &str) -> Value {
    d.json(&["task", "show", process, key, "--reveal"])
}

#[test]
fn process_templates_lists_the_shipped_templates() {
    let d = DataDir::new();
    let out = d.ok(&["process", "templates"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 7, "{out}");
    assert!(lines[0].starts_with("bitrix_oauth "), "{out}");
    assert!(lines[0].ends_with("Bitrix OAuth"), "{out}");
    assert!(lines[1].starts_with("bitrix_deals "), "{out}");
    assert!(lines[2].ends_with("Telegram message"), "{out}");
    assert_eq!(
        d.json(&["process", "templates"]),
        json!([
            "bitrix_oauth",
            "bitrix_deals",
            "notify_telegram",
            "notify_twilio",
            "notify_messagebird",
            "notify_mandrill",
            "notify_unisender"
        ])
    );
}

#[test]
fn process_clone_from_a_template_and_from_a_file() {
    let d = DataDir::new();
    assert_eq!(
        d.ok(&["process", "clone", "bitrix_oauth", "--alias", "bitrix"]),
        "process 1 (@bitrix) cloned from bitrix_oauth\n"
    );
    // Without an alias; `@` before an alias is allowed.
    assert_eq!(
        d.ok(&["process", "clone", "bitrix_oauth"]),
        "process 2 cloned from bitrix_oauth\n"
    );
    let file = write(&d, "delay.yaml", DELAY);
    assert_eq!(
        d.json(&["process", "clone", &file, "--alias", "@d"]),
        json!({"id": 3, "alias": "d", "source": file, "name": "delay"})
    );
    // All three are listed, and each alias finds its process, with or without `@`.
    let list = d.json(&["process", "list"]);
    let ids: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(d.json(&["process", "show", "@bitrix"])["id"], 1);
    assert_eq!(d.json(&["process", "show", "bitrix"])["id"], 1);
    assert_eq!(d.json(&["process", "show", "2"])["alias"], Value::Null);
    assert_eq!(d.json(&["process", "show", "@d"])["name"], "delay");
    // A process-level setting, declared by the process, is given to every task.
    d.ok(&[
        "process",
        "clone",
        "bitrix_oauth",
        "--alias",
        "b2",
        "--set",
        "portal=acme",
    ]);
    d.ok(&[
        "task",
        "add",
        "@b2",
        "--ref",
        "token",
        "client_id=1",
        "client_secret=s",
        "code=c",
    ]);
    assert_eq!(task(&d, "@b2", "token")["data"]["portal"], "acme");
}

#[test]
fn process_clone_refuses_bad_aliases_unknown_templates_and_invalid_files() {
    let d = DataDir::new();
    for alias in ["123", "a b", "@"] {
        let message = fails(
            &d,
            &["process", "clone", "bitrix_oauth", "--alias", alias],
            1,
        );
        assert!(
            message.ends_with(
                "is not a valid alias: use letters, digits, `_` and `-`, not only digits"
            ),
            "{alias}: {message}"
        );
    }
    assert_eq!(
        fails(&d, &["process", "clone", "bitrix_oath"], 1),
        "no template `bitrix_oath` (shipped: bitrix_oauth, bitrix_deals, notify_telegram, notify_twilio, notify_messagebird, notify_mandrill, notify_unisender); \
         to clone a file, give its path ending in .yaml"
    );
    let bad = write(&d, "bad.yaml", INVALID);
    assert_eq!(
        fails(&d, &["process", "clone", &bad, "--alias", "bad"], 1),
        format!(
            "the process definition has 2 error(s):\n\
             {bad}:3:25: error: node `start`, `next`: no node `nowhere` in this process\n\
             {bad}:5:3: error: node `x`: a delay needs `for:` (a duration) or `until:` (a unix time)"
        )
    );
    let missing = d.path().join("missing.yaml");
    let missing = missing.to_str().unwrap();
    assert!(
        fails(&d, &["process", "clone", missing], 1).starts_with(&format!("cannot read {missing}"))
    );
    assert_eq!(
        fails(
            &d,
            &["process", "clone", "bitrix_oauth", "--set", "nope=1"],
            1
        ),
        "param `nope`: process `bitrix_oauth` declares no such param"
    );
    // Nothing was stored by the refused clones; an alias is used once.
    assert_eq!(d.json(&["process", "list"]), json!([]));
    d.ok(&["process", "clone", "bitrix_oauth", "--alias", "bitrix"]);
    assert_eq!(
        fails(
            &d,
            &["process", "clone", "bitrix_oauth", "--alias", "bitrix"],
            1
        ),
        "alias '@bitrix' is already used by process 1"
    );
    assert_eq!(d.json(&["process", "list"]).as_array().unwrap().len(), 1);
}

#[test]
fn process_list_and_show_count_the_tasks_in_each_node() {
    let d = DataDir::new();
    assert_eq!(
        d.ok(&["process", "list"]),
        "no processes yet: try `conveyor process clone bitrix_oauth --alias bitrix`\n"
    );
    clone(&d, "d", DELAY);
    clone(&d, "esc", ESCALATION);
    d.ok(&["task", "add", "@d", "code=1"]);
    d.ok(&["task", "add", "@d", "code=2"]);
    d.ok(&["task", "add", "@esc", "code=bad"]);
    d.ok(&["run", "--until-idle"]);

    let list = d.json(&["process", "list"]);
    assert_eq!(
        list,
        json!([
            {"id": 1, "alias": "d", "title": "Delay test", "source": d.path().join("d.yaml").to_str().unwrap(),
             "version": 1, "tasks": 2, "in_escalation": 0},
            {"id": 2, "alias": "esc", "title": "esc", "source": d.path().join("esc.yaml").to_str().unwrap(),
             "version": 1, "tasks": 1, "in_escalation": 1},
        ])
    );
    let text = d.ok(&["process", "list"]);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["id", "alias", "title", "tasks", "escalated"]);
    assert_eq!(lines[1], ["1", "@d", "Delay", "test", "2", "0"]);
    assert_eq!(lines[2], ["2", "@esc", "esc", "1", "1"]);

    let show = d.json(&["process", "show", "@d"]);
    assert_eq!(
        show,
        json!({"id": 1, "alias": "d", "name": "delay", "title": "Delay test",
        "source": d.path().join("d.yaml").to_str().unwrap(), "version": 1,
        "nodes": [
            {"id": "start", "kind": "start", "title": null, "now": 0, "total": 2},
            {"id": "wait", "kind": "delay", "title": null, "now": 2, "total": 2},
            {"id": "done", "kind": "final", "title": null, "now": 0, "total": 0},
        ]})
    );
    let text = d.ok(&["process", "show", "@esc"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("process 2 @esc: esc (") && lines[0].ends_with(", version 1)"),
        "{text}"
    );
    let row = |node: &str| -> Vec<&str> {
        lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(node))
            .unwrap_or_else(|| panic!("no row for {node}: {text}"))
            .split_whitespace()
            .collect()
    };
    assert_eq!(row("start"), ["start", "start", "0", "1"]);
    assert_eq!(row("check"), ["check", "condition", "0", "1"]);
    assert_eq!(
        row("stuck"),
        ["stuck", "escalation", "1", "1", "needs", "a", "person"]
    );
    assert_eq!(row("done"), ["done", "final", "0", "0"]);
}

#[test]
fn process_update_makes_a_new_version_unless_it_drops_a_node_holding_tasks() {
    let d = DataDir::new();
    clone(&d, "d", DELAY);
    d.ok(&["task", "add", "@d", "--ref", "t", "code=1"]);
    d.ok(&["run", "--until-idle"]);
    assert_eq!(task(&d, "@d", "t")["node"], "wait");

    // The new definition has no `wait`, where the task is: refused, nothing changes.
    let without = write(&d, "v2.yaml", DELAY_WITHOUT_WAIT);
    assert_eq!(
        fails(&d, &["process", "update", "@d", &without], 1),
        "process 1 was not updated: tasks are in nodes the new definition does not have: wait (1 task)"
    );
    d.ok(&["task", "add", "@d", "--ref", "t2", "code=2"]);
    d.ok(&["run", "--until-idle"]);
    assert_eq!(
        fails(&d, &["process", "update", "1", &without], 1),
        "process 1 was not updated: tasks are in nodes the new definition does not have: wait (2 tasks)"
    );
    let show = d.json(&["process", "show", "@d"]);
    assert_eq!(show["version"], 1);
    assert_eq!(show["title"], "Delay test");

    // An invalid definition is refused with the check's messages.
    let bad = write(&d, "bad.yaml", INVALID);
    let message = fails(&d, &["process", "update", "@d", &bad], 1);
    assert!(
        message.starts_with("the process definition has 2 error(s):\n"),
        "{message}"
    );
    assert!(
        message.contains("error: node `start`, `next`: no node `nowhere` in this process"),
        "{message}"
    );
    let missing = d.path().join("missing.yaml");
    let missing = missing.to_str().unwrap();
    assert!(
        fails(&d, &["process", "update", "@d", missing], 1)
            .starts_with(&format!("cannot read {missing}"))
    );

    // Keeping `wait`: a new version, and the waiting tasks stay where they are.
    let keeping = write(&d, "v3.yaml", DELAY_KEEPING_WAIT);
    assert_eq!(
        d.ok(&["process", "update", "@d", &keeping]),
        "process 1 updated to version 2\n"
    );
    assert_eq!(
        d.json(&["process", "update", "@d", &keeping]),
        json!({"id": 1, "version": 3})
    );
    let show = d.json(&["process", "show", "@d"]);
    assert_eq!(show["version"], 3);
    assert_eq!(show["title"], "Delay test, version 2");
    let nodes: Vec<&str> = show["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["start", "wait", "finish"]);
    assert_eq!(show["nodes"][1]["now"], 2);
    assert_eq!(task(&d, "@d", "t")["node"], "wait");
    assert_eq!(task(&d, "@d", "t")["status"], "waiting");
    assert_eq!(
        fails(&d, &["process", "update", "@nope", &keeping], 1),
        "no process @nope"
    );
}

#[test]
fn task_add_keeps_strings_as_strings_and_types_json_values() {
    let d = DataDir::new();
    clone(&d, "d", DELAY);
    let added = d.json(&[
        "task",
        "add",
        "@d",
        "--ref",
        "t",
        "code=123456",
        "n:=5",
        "flag:=true",
        "list:=[1,\"a\"]",
        "obj:={\"k\":null}",
        "eq=a=b",
        "empty=",
    ]);
    assert_eq!(added["process"], 1);
    assert_eq!(added["ref"], "t");
    assert_eq!(added["node"], "start");
    let id = added["id"].as_u64().expect("a task id");
    let shown = task(&d, "@d", "t");
    assert_eq!(shown["id"], id);
    assert_eq!(
        shown["data"],
        json!({"code": "123456", "n": 5, "flag": true, "list": [1, "a"], "obj": {"k": null},
               "eq": "a=b", "empty": "", "scope": "crm"}),
        "code=123456 stays a string; the default scope is applied"
    );

    // --from-json, with `key=value` pairs on top of it.
    d.ok(&[
        "task",
        "add",
        "@d",
        "--ref",
        "j",
        "--from-json",
        r#"{"code": "42", "n": 1, "nested": {"a": [true]}, "scope": "user"}"#,
        "n:=2",
    ]);
    assert_eq!(
        task(&d, "@d", "j")["data"],
        json!({"code": "42", "n": 2, "nested": {"a": [true]}, "scope": "user"})
    );

    // The human output names the task, its ref and where it starts; no ref, no `(ref …)`.
    let out = d.ok(&["task", "add", "@d", "code=7"]);
    assert!(out.starts_with("task "), "{out}");
    assert!(out.ends_with(" added to process 1 at `start`\n"), "{out}");
    assert!(!out.contains("(ref"), "{out}");
    let out = d.ok(&["task", "add", "1", "--ref", "r", "code=8"]);
    assert!(
        out.contains(" (ref r) added to process 1 at `start`"),
        "{out}"
    );
    assert_eq!(d.json(&["task", "list", "@d"]).as_array().unwrap().len(), 4);
}

#[test]
fn task_add_checks_the_params_before_storing_anything() {
    let d = DataDir::new();
    clone(&d, "d", DELAY);
    assert_eq!(
        fails(&d, &["task", "add", "@d", "scope=x"], 1),
        "param `code`: is required (the code from the redirect)"
    );
    assert_eq!(
        fails(&d, &["task", "add", "@d", "code:=null"], 1),
        "param `code`: is required (the code from the redirect)"
    );
    assert_eq!(
        fails(&d, &["task", "add", "@d", "--ref", "t", "code=12a"], 1),
        "param `code`: `12a` does not match the pattern `^[0-9]+$`"
    );
    assert_eq!(
        fails(&d, &["task", "add", "@d", "code:=[1]"], 1),
        "param `code`: must be text to match its pattern"
    );
    // A number matches the pattern by its text.
    d.ok(&["task", "add", "@d", "--ref", "n", "code:=123"]);
    assert_eq!(task(&d, "@d", "n")["data"]["code"], 123);

    // A secret param's value is never echoed.
    let secret = r#"
process: secret
params:
  code: { required: true, secret: true, pattern: '^[a-z0-9]+$' }
nodes:
  start: { type: start, next: done }
  done: { type: final }
"#;
    clone(&d, "s", secret);
    assert_eq!(
        fails(&d, &["task", "add", "@s", "code=SECRET!"], 1),
        "param `code`: the value does not match the pattern `^[a-z0-9]+$`"
    );
    // Nothing was stored by the refused tasks: the ref `t` is still free.
    assert_eq!(d.json(&["task", "list", "@d"]).as_array().unwrap().len(), 1);
    assert_eq!(d.json(&["task", "list", "@s"]), json!([]));
    d.ok(&["task", "add", "@d", "--ref", "t", "code=1"]);
}

#[test]
fn task_add_refuses_a_duplicate_ref_and_leaves_the_first_task_untouched() {
    let d = DataDir::new();
    clone(&d, "d", DELAY);
    d.ok(&["task", "add", "@d", "--ref", "token", "code=1", "v=first"]);
    let before = task(&d, "@d", "token");
    assert_eq!(
        fails(
            &d,
            &["task", "add", "@d", "--ref", "token", "code=2", "v=second"],
            1
        ),
        "ref 'token' already exists in process 1"
    );
    // Also once the first task has moved on, and with --json.
    d.ok(&["run", "--until-idle"]);
    let moved = task(&d, "@d", "token");
    assert_eq!(
        fails(
            &d,
            &[
                "--json", "task", "add", "1", "--ref", "token", "code=3", "v=third"
            ],
            1
        ),
        "ref 'token' already exists in process 1"
    );
    assert_eq!(task(&d, "@d", "token"), moved);
    assert_eq!(moved["id"], before["id"]);
    assert_eq!(moved["data"], before["data"]);
    assert_eq!(moved["data"]["v"], "first");
    assert_eq!(d.json(&["task", "list", "@d"]).as_array().unwrap().len(), 1);
    let events = d.json(&["task", "history", "@d", "token"]);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["event"] != "modified"),
        "{events}"
    );
    // The same ref in another process is fine; an empty ref is not.
    clone(&d, "d2", DELAY);
    d.ok(&["task", "add", "@d2", "--ref", "token", "code=1"]);
    assert_eq!(
        fails(&d, &["task", "add", "@d2", "--ref", "", "code=1"], 1),
        "a ref is 1 to 255 characters"
    );
    let longest = "é".repeat(255);
    d.ok(&["task", "add", "@d2", "--ref", &longest, "code=1"]);
    assert_eq!(task(&d, "@d2", &longest)["ref"], longest.as_str());
    let too_long = "x".repeat(256);
    assert_eq!(
        fails(&d, &["task", "add", "@d2", "--ref", &too_long, "code=1"], 1),
        "a ref is 1 to 255 characters"
    );
}

#[test]
fn unknown_processes_aliases_and_tasks_fail_with_exit_1() {
    let d = DataDir::new();
    clone(&d, "d", DELAY);
    d.ok(&["task", "add", "@d", "--ref", "t", "code=1"]);
    let file = d.path().join("d.yaml");
    let file = file.to_str().unwrap();
    for process in ["@nope", "nope", "7"] {
        let expected = format!("no process {process}");
        for args in [
            vec!["task", "add", process, "code=1"],
            vec!["task", "show", process, "t"],
            vec!["task", "list", process],
            vec!["task", "list", process, "--node", "wait"],
            vec!["task", "modify", process, "t", "x=1"],
            vec!["task", "history", process, "t"],
            vec!["process", "show", process],
            vec!["process", "update", process, file],
        ] {
            assert_eq!(fails(&d, &args, 1), expected, "{args:?}");
        }
    }
    for key in ["nope", "999999999"] {
        let expected = format!("no task {key} in process @d");
        for args in [
            vec!["task", "show", "@d", key],
            vec!["task", "modify", "@d", key, "x=1"],
            vec!["task", "history", "@d", key],
        ] {
            assert_eq!(fails(&d, &args, 1), expected, "{args:?}");
        }
    }
    // A task is found in its own process only.
    clone(&d, "other", DELAY);
    let id = task(&d, "@d", "t")["id"].to_string();
    assert_eq!(
        fails(&d, &["task", "show", "@other", &id], 1),
        format!("no task {id} in process @other")
    );
}

#[test]
fn bad_command_lines_exit_2_naming_the_argument() {
    let d = DataDir::new();
    clone(&d, "d", DELAY);
    d.ok(&["task", "add", "@d", "--ref", "t", "code=1"]);
    let cases: &[(&[&str], &str)] = &[
        (
            &["task", "add", "@d", "code"],
            "`code`: expected `key=value` (a string) or `key:=json` (a typed value)",
        ),
        (&["task", "add", "@d", "=1"], "`=1`: the key is empty"),
        (&["task", "add", "@d", ":=1"], "`:=1`: the key is empty"),
        (
            &["task", "add", "@d", "n:=nope"],
            "`n:=nope`: the value after `:=` is not JSON: expected ident at line 1 column 2",
        ),
        (
            &["task", "add", "@d", "--from-json", "[1]"],
            "--from-json: expected a JSON object `{…}`",
        ),
        (
            &["task", "modify", "@d", "t", "oops"],
            "`oops`: expected `key=value` (a string) or `key:=json` (a typed value)",
        ),
        (
            &["task", "modify", "@d", "t"],
            "nothing to modify: give `key=value` pairs or --from-json",
        ),
        (
            &["task", "list", "@d", "--node", "nowhere"],
            "--node: process @d has no node `nowhere`",
        ),
        (
            &["process", "clone", "bitrix_oauth", "--set", "portal"],
            "`portal`: expected `key=value` (a string) or `key:=json` (a typed value)",
        ),
    ];
    for (args, expected) in cases {
        assert_eq!(fails(&d, args, 2), *expected, "{args:?}");
    }
    let message = fails(&d, &["task", "add", "@d", "--from-json", "{oops"], 2);
    assert!(
        message.starts_with("--from-json: not valid JSON: "),
        "{message}"
    );
    // Nothing was stored by the bad command lines.
    assert_eq!(d.json(&["task", "list", "@d"]).as_array().unwrap().len(), 1);
    assert_eq!(d.json(&["process", "list"]).as_array().unwrap().len(), 1);

    // Mistakes clap finds: missing arguments, unknown commands and flags, bad numbers.
    for args in [
        &["task", "add"][..],
        &["task", "show", "@d"],
        &["task", "list", "@d", "--limit", "many"],
        &["task", "frobnicate"],
        &["process", "show"],
        &["process", "update", "@d"],
        &["run", "--forever"],
        &["--store-cache-mb", "0", "process", "list"],
        &["process", "list", "--store-cache-mb", "lots"],
    ] {
        let (code, stdout, stderr) = d.run(args);
        assert_eq!(code, 2, "{args:?}: {stdout}{stderr}");
        assert!(stderr.contains("error:"), "{args:?}: {stderr}");
    }

    // A data directory that is a file is named as the argument it came from, and the
    // file is left as it was.
    let file = d.path().join("not-a-dir");
    std::fs::write(&file, "keep me").unwrap();
    let (code, _, stderr) = run(&["--data", file.to_str().unwrap(), "process", "list"]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(
        stderr.trim(),
        format!(
            "error: --data (or CONVEYOR_DATA): {} is not a directory; give the directory that holds (or is to hold) the store",
            file.display()
        )
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");

    // A link to a directory that is not there is named as such, and nothing is made.
    let link = d.path().join("dangling");
    let gone = d.path().join("gone");
    std::os::unix::fs::symlink(&gone, &link).unwrap();
    let (code, _, stderr) = run(&["--data", link.to_str().unwrap(), "process", "list"]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(
        stderr.trim(),
        format!(
            "error: --data (or CONVEYOR_DATA): {} is a symbolic link to {}, which does not exist; create it or give another directory",
            link.display(),
            gone.display()
        )
    );
    assert!(!gone.exists());
}

#[test]
fn task_show_masks_secrets_unless_revealed_by_ref_and_by_id() {
    let d = DataDir::new();
    clone(&d, "d", DELAY);
    let id = d.json(&[
        "task",
        "add",
        "@d",
        "--ref",
        "t",
        "code=123",
        "token=s3cret",
        "note=hi",
    ])["id"]
        .as_u64()
        .unwrap();
    let masked = d.json(&["task", "show", "@d", "t"]);
    assert_eq!(masked["id"], id);
    assert_eq!(masked["process"], 1);
    assert_eq!(masked["ref"], "t");
    assert_eq!(masked["node"], "start");
    assert_eq!(masked["prev_node"], Value::Null);
    assert_eq!(masked["status"], "ready");
    assert_eq!(masked["wake_at"], Value::Null);
    assert!(masked["created"].as_i64().unwrap() > 0);
    assert_eq!(masked["created"], masked["changed"]);
    assert_eq!(
        masked["data"],
        json!({"code": "123", "token": "***", "note": "hi", "scope": "crm"})
    );
    assert_eq!(
        d.json(&["task", "show", "@d", "t", "--reveal"])["data"]["token"],
        "s3cret"
    );
    // By id, and by alias without `@` or by the process id.
    let by_id = d.json(&["task", "show", "d", &id.to_string()]);
    assert_eq!(by_id, masked);
    assert_eq!(d.json(&["task", "show", "1", "t"]), masked);

    let text = d.ok(&["task", "show", "@d", "t"]);
    assert!(!text.contains("s3cret"), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("task {id} (ref t) in process 1"));
    assert_eq!(lines[1], "  node:    start");
    assert_eq!(lines[2], "  status:  ready");
    assert!(lines[3].starts_with("  created: 20"), "{text}");
    assert!(lines[3].ends_with(" UTC"), "{text}");
    assert_eq!(
        &lines[5..],
        [
            "  data:",
            "    code: \"123\"",
            "    token: \"***\"",
            "    note: \"hi\"",
            "    scope: \"crm\"",
        ]
    );
    let revealed = d.ok(&["task", "show", "@d", &id.to_string(), "--reveal"]);
    assert!(revealed.contains("    token: \"s3cret\"\n"), "{revealed}");

    // Waiting in the delay: the status says until when.
    d.ok(&["run", "--until-idle"]);
    let waiting = d.json(&["task", "show", "@d", "t"]);
    assert_eq!(waiting["node"], "wait");
    assert_eq!(waiting["prev_node"], "start");
    assert_eq!(waiting["status"], "waiting");
    let wake = waiting["wake_at"].as_i64().expect("a wake time");
    assert_eq!(wake - waiting["changed"].as_i64().unwrap(), 3_600_000);
    let text = d.ok(&["task", "show", "@d", "t"]);
    assert!(text.contains("  status:  waiting until 20"), "{text}");
}

#[test]
fn task_list_shows_the_tasks_of_a_process_or_of_one_node() {
    let d = DataDir::new();
    clone(&d, "d", DELAY);
    clone(&d, "other", DELAY);
    d.ok(&["task", "add", "@d", "--ref", "a", "code=1", "token=xyz"]);
    d.ok(&["run", "--until-idle"]);
    d.ok(&["task", "add", "@d", "--ref", "b", "code=2"]);
    d.ok(&["task", "add", "@d", "code=3"]);
    d.ok(&["task", "add", "@other", "--ref", "c", "code=4"]);

    let refs = |args: &[&str]| -> Vec<Value> {
        d.json(args)
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["ref"].clone())
            .collect()
    };
    assert_eq!(
        refs(&["task", "list", "@d"]),
        [json!("a"), json!("b"), Value::Null]
    );
    assert_eq!(
        refs(&["task", "list", "@d", "--node", "wait"]),
        [json!("a")]
    );
    assert_eq!(
        refs(&["task", "list", "@d", "--node", "start"]),
        [json!("b"), Value::Null]
    );
    assert_eq!(
        refs(&["task", "list", "@d", "--node", "done"]),
        [] as [Value; 0]
    );
    assert_eq!(refs(&["task", "list", "@d", "--limit", "1"]).len(), 1);
    assert_eq!(refs(&["task", "list", "@other"]), [json!("c")]);

    // Each task as `task show --json` shows it: secrets masked.
    let list = d.json(&["task", "list", "@d", "--node", "wait"]);
    assert_eq!(list[0], d.json(&["task", "show", "@d", "a"]));
    assert_eq!(list[0]["data"]["token"], "***");

    let text = d.ok(&["task", "list", "@d", "--node", "wait"]);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0], ["id", "ref", "node", "status", "changed"]);
    assert_eq!(lines[1][1..4], ["a", "wait", "waiting"]);
    let text = d.ok(&["task", "list", "@d"]);
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().nth(1) == Some("-")),
        "a task without a ref shows `-`: {text}"
    );

    assert_eq!(
        fails(&d, &["task", "list", "@d", "--node", "nowhere"], 2),
        "--node: process @d has no node `nowhere`"
    );
}

#[test]
fn task_modify_wakes_a_task_waiting_for_a_callback() {
    let d = DataDir::new();
    clone(&d, "cb", CALLBACK);
    d.ok(&["task", "add", "@cb", "--ref", "a", "x=1"]);
    d.ok(&["task", "add", "@cb", "--ref", "b"]);
    d.ok(&["run", "--until-idle"]);
    assert_eq!(task(&d, "@cb", "a")["node"], "wait");
    assert_eq!(task(&d, "@cb", "a")["status"], "waiting");

    let id = task(&d, "@cb", "a")["id"].as_u64().unwrap();
    assert_eq!(
        d.ok(&["task", "modify", "@cb", "a", "answer:=42", "code=007"]),
        format!(
            "task {id} modified (it was in `wait`; the engine applies the change when it next runs)\n"
        )
    );
    // Nothing moves until the engine runs.
    assert_eq!(task(&d, "@cb", "a")["node"], "wait");
    let ran = d.json(&["run", "--until-idle"]);
    assert!(ran["steps"].as_u64().unwrap() >= 1, "{ran}");
    assert_eq!(ran["failed_steps"], 0);
    let a = task(&d, "@cb", "a");
    assert_eq!(a["node"], "got");
    assert_eq!(a["status"], "done");
    assert_eq!(
        a["data"],
        json!({"x": "1", "answer": 42, "code": "007"}),
        "merged, not replaced; code=007 stays a string"
    );
    assert_eq!(
        task(&d, "@cb", "b")["node"],
        "wait",
        "the other task waits on"
    );

    // --json, --from-json, and by id.
    let b_id = task(&d, "@cb", "b")["id"].as_u64().unwrap();
    assert_eq!(
        d.json(&[
            "task",
            "modify",
            "@cb",
            &b_id.to_string(),
            "--from-json",
            r#"{"n": 1, "s": "x"}"#,
            "s=y",
        ]),
        json!({"id": b_id, "node": "wait", "accepted": true})
    );
    d.ok(&["run", "--until-idle"]);
    let b = task(&d, "@cb", "b");
    assert_eq!(b["node"], "got");
    assert_eq!(b["data"], json!({"n": 1, "s": "y"}));
    let show = d.json(&["process", "show", "@cb"]);
    assert_eq!(show["nodes"][1]["now"], 0);
    assert_eq!(show["nodes"][2]["now"], 2);
}

#[test]
fn task_modify_moves_a_task_out_of_an_escalation() {
    let d = DataDir::new();
    clone(&d, "esc", ESCALATION);
    d.ok(&["task", "add", "@esc", "--ref", "t", "code=bad"]);
    d.ok(&["run", "--until-idle"]);
    assert_eq!(task(&d, "@esc", "t")["node"], "stuck");
    assert_eq!(d.json(&["process", "list"])[0]["in_escalation"], 1);
    d.ok(&["task", "modify", "@esc", "t", "code=good"]);
    d.ok(&["run", "--until-idle"]);
    let t = task(&d, "@esc", "t");
    assert_eq!(t["node"], "done");
    assert_eq!(t["status"], "done");
    assert_eq!(d.json(&["process", "list"])[0]["in_escalation"], 0);
}

#[test]
fn task_modify_of_a_task_in_a_delay_merges_and_keeps_it_waiting() {
    let d = DataDir::new();
    clone(&d, "d", DELAY);
    d.ok(&["task", "add", "@d", "--ref", "t", "code=1"]);
    d.ok(&["run", "--until-idle"]);
    let before = task(&d, "@d", "t");
    d.ok(&["task", "modify", "@d", "t", "extra=1"]);
    d.ok(&["run", "--until-idle"]);
    let after = task(&d, "@d", "t");
    assert_eq!(after["node"], "wait");
    assert_eq!(after["status"], "waiting");
    assert_eq!(after["wake_at"], before["wake_at"]);
    assert_eq!(after["data"]["extra"], "1");
}

#[test]
fn task_history_tells_what_happened_event_by_event() {
    let d = DataDir::new();
    clone(&d, "cb", CALLBACK);
    d.ok(&["task", "add", "@cb", "--ref", "t"]);
    d.ok(&["run", "--until-idle"]);
    d.ok(&["task", "modify", "@cb", "t", "answer=yes", "more:=1"]);
    d.ok(&["run", "--until-idle"]);

    let events = d.json(&["task", "history", "@cb", "t"]);
    let events = events.as_array().unwrap();
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["event"].as_str().unwrap(), e["node"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("created", "start"),
            ("entered", "wait"),
            ("waiting", "wait"),
            ("modified", "wait"),
            ("entered", "got"),
            ("finished", "got"),
        ]
    );
    assert!(events.iter().all(|e| e["at"].as_i64().unwrap() > 0));
    assert_eq!(events[1]["from"], "start");
    assert_eq!(events[1]["via"], "next");
    assert_eq!(events[2]["reason"], "callback");
    assert_eq!(events[4]["via"], "callback");

    let text = d.ok(&["task", "history", "@cb", "t"]);
    let tails: Vec<String> = text
        .lines()
        .map(|l| {
            // `2026-11-28 16:55:00 UTC  node  what`: drop the time.
            let (_, rest) = l.split_once(" UTC  ").expect("a time first");
            rest.split_whitespace().collect::<Vec<_>>().join(" ")
        })
        .collect();
    assert_eq!(
        tails,
        [
            "start created",
            "wait entered from `start` (next)",
            "wait waiting (callback)",
            "wait modified by cli: answer, more",
            "got entered from `wait` (callback)",
            "got finished: done",
        ]
    );
    // By id too.
    let id = task(&d, "@cb", "t")["id"].to_string();
    assert_eq!(
        d.json(&["task", "history", "@cb", &id])
            .as_array()
            .unwrap()
            .len(),
        6
    );
}

#[test]
fn run_until_idle_makes_api_calls_and_masks_secrets_in_history() {
    let router = axum::Router::new().route(
        "/x",
        axum::routing::get(
            |axum::extract::RawQuery(query): axum::extract::RawQuery| async move {
                axum::Json(json!({"ok": true, "query": query}))
            },
        ),
    );
    let address = http_server(router);
    let d = DataDir::new();
    clone(
        &d,
        "fetch",
        r#"
process: fetch
params:
  base: { required: true }
  key: { required: true, secret: true }
nodes:
  start: { type: start, next: ask }
  ask:
    type: api_call
    url: "{{base}}/x"
    query: { key: "{{key}}" }
    response: { ok: "{{body.ok}}", query: "{{body.query}}" }
    next: done
    on_error: failed
  done: { type: final }
  failed: { type: final, status: error }
"#,
    );
    let base = format!("http://{address}");
    d.ok(&[
        "task",
        "add",
        "@fetch",
        "--ref",
        "t",
        &format!("base={base}"),
        "key=k9secret",
    ]);
    let out = d.ok(&["run", "--until-idle"]);
    assert!(
        out.starts_with("idle after ") && out.ends_with(" steps\n"),
        "{out}"
    );
    let t = task(&d, "@fetch", "t");
    assert_eq!(t["node"], "done", "{t}");
    assert_eq!(t["status"], "done");
    assert_eq!(t["data"]["ok"], true);
    // The server echoed the secret into a key that is not secret: it is cut out.
    assert_eq!(t["data"]["query"], "key=***");

    let events = d.json(&["task", "history", "@fetch", "t"]);
    let request = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "api_request")
        .unwrap_or_else(|| panic!("no api_request event: {events}"));
    assert_eq!(request["status"], 200, "{request}");
    assert_eq!(request["method"], "GET");
    assert_eq!(request["attempt"], 1);
    let url = request["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{base}/x")), "{url}");
    assert!(!events.to_string().contains("k9secret"), "{events}");
    let text = d.ok(&["task", "history", "@fetch", "t"]);
    assert!(text.contains(&format!("GET {base}/x")), "{text}");
    assert!(text.contains(" → 200 in "), "{text}");
    assert!(!text.contains("k9secret"), "{text}");

    // Nothing left to do: idle at once.
    assert_eq!(
        d.json(&["run", "--until-idle"]),
        json!({"steps": 0, "failed_steps": 0})
    );
}

#[test]
fn the_data_dir_comes_from_conveyor_data_when_data_is_not_given() {
    let d = DataDir::new();
    let run = |args: &[&str]| {
        let output = crate::support::conveyor()
            .args(args)
            .env("CONVEYOR_DATA", d.path())
            .output()
            .expect("conveyor runs");
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    run(&["process", "clone", "bitrix_oauth", "--alias", "bitrix"]);
    assert_eq!(d.json(&["process", "list"])[0]["alias"], "bitrix");
    d.ok(&["process", "clone", "bitrix_deals", "--alias", "deals"]);
    let listed: Value = serde_json::from_str(&run(&["--json", "process", "list"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
}

/// `conveyor serve` with `--data` of `d`, its stderr read on a thread: the receiver gets
/// `()` when the engine logs that it runs (after it has opened the store), then the
/// whole of stderr when serve exits.
fn serve(d: &DataDir) -> (std::process::Child, mpsc::Receiver<Option<String>>) {
    let mut child = d
        .command(&["run"])
        .env("CONVEYOR_LOG", "conveyor=info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("conveyor serve starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("engine running") {
                let _ = sender.send(None);
            }
            all.push_str(&line);
            all.push('\n');
        }
        let _ = sender.send(Some(all));
    });
    (child, receiver)
}

#[test]
fn a_store_held_by_an_engine_without_api_is_refused_until_it_stops() {
    // `conveyor run` runs the engine alone (no HTTP API to go through); while it holds
    // the store, other commands say so clearly. (With `conveyor serve` they go through
    // its API instead: see tests/e2e/http_api.rs.)
    // The data dir is made with a sled store, which it then keeps without being told
    // again (and which is checkpointed after the engine stops).
    let d = DataDir::new();
    d.ok(&["--store-kind", "sled", "process", "list"]);
    assert!(d.path().join("store").is_dir() && !d.path().join("log").exists());
    clone(&d, "cb", CALLBACK);
    d.ok(&["task", "add", "@cb", "--ref", "t"]);

    let (mut child, log) = serve(&d);
    // Wait (at most 5 s) until serve runs: it logs so once it holds the store. Polling
    // with a second command instead could take the lock first and make serve fail.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match log.recv_timeout(Duration::from_millis(50)) {
            Ok(None) => break,
            Ok(Some(stderr)) => {
                let _ = child.kill();
                panic!("serve stopped before it ran: {stderr}");
            }
            Err(_) if Instant::now() < deadline => {}
            Err(_) => {
                let _ = child.kill();
                panic!("serve did not start within 5 s");
            }
        }
    }
    // A second command reports the lock (the engine has it from the start).
    let mut polled = false;
    while Instant::now() < deadline + Duration::from_secs(5) {
        let (code, _, stderr) = d.run(&["task", "list", "@cb"]);
        if code == 1 && stderr.contains(LOCKED) {
            polled = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !polled {
        let _ = child.kill();
        panic!("`task list` never reported the lock");
    }

    let expected = format!(
        "the store in {} is in use by a running Conveyor engine (`conveyor serve` or `conveyor run`): stop it and try again",
        d.path().display()
    );
    let file = d.path().join("cb.yaml");
    let file = file.to_str().unwrap();
    for args in [
        vec!["task", "list", "@cb"],
        vec!["task", "add", "@cb", "--ref", "u"],
        vec!["task", "show", "@cb", "t"],
        vec!["task", "modify", "@cb", "t", "x=1"],
        vec!["task", "history", "@cb", "t"],
        vec!["process", "list"],
        vec!["process", "show", "@cb"],
        vec!["process", "clone", "bitrix_oauth"],
        vec!["process", "update", "@cb", file],
        vec!["run", "--until-idle"],
        vec!["serve"],
        vec!["--json", "task", "list", "@cb"],
    ] {
        let message = fails(&d, &args, 1);
        assert_eq!(message, expected, "{args:?}");
    }
    // Commands that do not use the store still work.
    d.ok(&["process", "templates"]);
    d.ok(&["process", "check", file]);

    let pid = child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for serve") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve did not stop within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = loop {
        match log.recv_timeout(Duration::from_secs(5)) {
            Ok(Some(all)) => break all,
            Ok(None) => {}
            Err(_) => panic!("serve's stderr did not end"),
        }
    };
    assert_eq!(status.code(), Some(0), "serve: {stderr}");
    // On the way out it checkpointed the store, so the next start reads a fresh snapshot.
    assert!(
        stderr.contains("stopped; writing a snapshot of the store for a quick next start"),
        "{stderr}"
    );
    assert!(
        stderr.contains("store checkpointed for a quick next start"),
        "the checkpoint failed: {stderr}"
    );

    // The store is free again; serve ran the task into the callback wait, and the
    // refused commands stored nothing.
    let t = task(&d, "@cb", "t");
    assert_eq!(t["node"], "wait");
    assert_eq!(t["data"], json!({}));
    assert_eq!(
        d.json(&["task", "list", "@cb"]).as_array().unwrap().len(),
        1
    );
    assert_eq!(d.json(&["process", "list"]).as_array().unwrap().len(), 1);
    d.ok(&["task", "add", "@cb", "--ref", "u"]);
}

#[test]
fn json_output_of_every_command_parses_with_its_fields() {
    let d = DataDir::new();
    let cloned = d.json(&["process", "clone", "bitrix_oauth", "--alias", "bitrix"]);
    assert_eq!(
        cloned,
        json!({"id": 1, "alias": "bitrix", "source": "bitrix_oauth", "name": "bitrix_oauth"})
    );
    let added = d.json(&[
        "task",
        "add",
        "@bitrix",
        "--ref",
        "token",
        "portal=acme",
        "client_id=app",
        "client_secret=cs",
        "code=123456",
    ]);
    let keys = |v: &Value| -> Vec<String> {
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(keys(&added), ["id", "node", "process", "ref"]);
    assert_eq!(added["node"], "start");
    let shown = d.json(&["task", "show", "@bitrix", "token"]);
    assert_eq!(
        keys(&shown),
        [
            "changed",
            "created",
            "data",
            "id",
            "node",
            "prev_node",
            "process",
            "ref",
            "status",
            "wake_at"
        ]
    );
    assert_eq!(
        shown["data"],
        json!({"portal": "acme", "client_id": "app", "client_secret": "***", "code": "***",
               "scope": "", "oauth_server": "https://oauth.bitrix.info", "refresh_every": "25m",
               "notify_process": ""})
    );
    let revealed = d.json(&["task", "show", "@bitrix", "token", "--reveal"]);
    assert_eq!(revealed["data"]["code"], "123456");
    assert_eq!(revealed["data"]["client_secret"], "cs");
    let list = d.json(&["task", "list", "@bitrix", "--node", "start"]);
    assert_eq!(list, json!([shown]));
    let modified = d.json(&["task", "modify", "@bitrix", "token", "code=654321"]);
    assert_eq!(
        modified,
        json!({"id": added["id"], "node": "start", "accepted": true})
    );
    let history = d.json(&["task", "history", "@bitrix", "token"]);
    assert_eq!(history[0]["event"], "created");
    assert_eq!(history[0]["node"], "start");
    let processes = d.json(&["process", "list"]);
    assert_eq!(
        processes,
        json!([{"id": 1, "alias": "bitrix", "title": "Bitrix OAuth", "source": "bitrix_oauth",
                "version": 1, "tasks": 1, "in_escalation": 0}])
    );
    let show = d.json(&["process", "show", "1"]);
    assert_eq!(show["title"], "Bitrix OAuth");
    assert_eq!(show["nodes"].as_array().unwrap().len(), 16);
    assert_eq!(
        keys(&show["nodes"][0]),
        ["id", "kind", "now", "title", "total"]
    );
    let file = write(
        &d,
        "bitrix.yaml",
        &std::fs::read_to_string(crate::support::repo_root().join("processes/bitrix_oauth.yaml"))
            .expect("the shipped template"),
    );
    assert_eq!(
        d.json(&["process", "update", "@bitrix", &file]),
        json!({"id": 1, "version": 2})
    );
    assert_eq!(
        d.json(&["process", "templates"]),
        json!([
            "bitrix_oauth",
            "bitrix_deals",
            "notify_telegram",
            "notify_twilio",
            "notify_messagebird",
            "notify_mandrill",
            "notify_unisender"
        ])
    );
    // `--json` may come anywhere on the line.
    let out = d.ok(&["process", "list", "--json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()[0]["version"],
        2
    );
}

#[test]
fn process_list_keeps_its_columns_aligned_with_long_titles_and_aliases() {
    let d = DataDir::new();
    clone(
        &d,
        "a-rather-long-alias-for-a-process",
        "process: long\ntitle: A title much longer than the thirty-two characters a column once had\nnodes:\n  start: { type: start, next: done }\n  done: { type: final }\n",
    );
    clone(
        &d,
        "s",
        "process: short\nnodes:\n  start: { type: start, next: done }\n  done: { type: final }\n",
    );
    d.ok(&["task", "add", "@s"]);
    let out = d.ok(&["process", "list"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    // Every column ends where its header ends: the counts line up under `tasks` and
    // `escalated`, and titles start under `title`.
    let end = |header: &str| lines[0].find(header).expect("a header") + header.len();
    let start = lines[0].find("title").expect("title");
    for line in &lines[1..] {
        assert_eq!(line.len(), lines[0].len(), "{out}");
        assert!(line[..end("tasks")].ends_with(char::is_numeric), "{out}");
        assert!(line.ends_with(char::is_numeric), "{out}");
        assert_ne!(&line[start..start + 1], " ", "{out}");
    }
    assert!(
        lines[1].contains("@a-rather-long-alias-for-a-process  A title much longer"),
        "{out}"
    );
}
