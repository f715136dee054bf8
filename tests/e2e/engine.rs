//! The engine driven through its API with a manual clock: every node kind, timers, time
//! limits, cross-process references, loop protection. No sleeping: time is moved by hand.

use std::sync::Arc;
use std::time::Duration;

use conveyor_runtime::{ManualClock, RunMode, Runtime, Settings, TaskKey};
use conveyor_store::TaskStatus;
use serde_json::{Map, Value, json};

pub struct Engine {
    pub runtime: Arc<Runtime>,
    pub clock: ManualClock,
    dir: tempfile::TempDir,
}

pub const T0: i64 = 1_764_345_600_000;

/// An engine running in the background ([`Engine::start`]).
pub struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    engine: tokio::task::JoinHandle<conveyor_runtime::Result<conveyor_runtime::RunStats>>,
}

impl Running {
    /// Stops it gracefully and checks that it ran without an error.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.engine.await.expect("joined").expect("engine ran");
    }
}

impl Engine {
    pub fn new() -> Engine {
        Engine::with_settings(Settings::default())
    }

    pub fn with_settings(settings: Settings) -> Engine {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = crate::support::open_store(dir.path());
        let clock = ManualClock::new(T0);
        let runtime = Runtime::new(store, Arc::new(clock.clone()), settings);
        Engine {
            runtime,
            clock,
            dir,
        }
    }

    /// An engine on a new store of `kind` (the log store or sled).
    pub fn with_store(kind: conveyor_store::StoreKind) -> Engine {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = conveyor_store::StoreOptions {
            kind,
            ..Default::default()
        };
        let store = conveyor_store::open(dir.path(), options).expect("store opens");
        let clock = ManualClock::new(T0);
        let runtime = Runtime::new(store, Arc::new(clock.clone()), Settings::default());
        Engine {
            runtime,
            clock,
            dir,
        }
    }

    /// Stops this engine (its store flushed and closed) and hands back its data dir, for
    /// the `conveyor` binary to read.
    pub fn close(self) -> tempfile::TempDir {
        self.runtime.store().flush().expect("flush");
        drop(self.runtime);
        self.dir
    }

    /// Stops this engine and starts another on the same store and clock, as a restart
    /// of the process would.
    pub fn restart(&mut self) {
        let placeholder = Runtime::new(
            crate::support::open_store(tempfile::tempdir().expect("dir").path()),
            Arc::new(self.clock.clone()),
            Settings::default(),
        );
        let old = std::mem::replace(&mut self.runtime, placeholder);
        old.store().flush().expect("flush");
        drop(old);
        let store = crate::support::open_store(self.dir.path());
        self.runtime = Runtime::new(store, Arc::new(self.clock.clone()), Settings::default());
    }

    pub fn clone_process(&self, yaml: &str, alias: Option<&str>) -> u64 {
        self.clone_with(yaml, alias, serde_json::json!({}))
    }

    /// `process clone --set …`: `settings` is an object of the process's own values.
    pub fn clone_with(&self, yaml: &str, alias: Option<&str>, settings: Value) -> u64 {
        let settings = match settings {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        self.runtime
            .clone_process("test.yaml", yaml, alias, settings)
            .unwrap_or_else(|e| panic!("clone: {e}"))
            .id
    }

    pub fn add(&self, process: &str, reference: Option<&str>, data: Value) -> u64 {
        let Value::Object(map) = data else {
            panic!("data must be an object")
        };
        self.runtime
            .add_task(process, reference, map)
            .unwrap_or_else(|e| panic!("add: {e}"))
            .id
    }

    /// Runs the engine in the background, as `conveyor serve` does, until
    /// [`Running::stop`].
    pub fn start(&self) -> Running {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = self.runtime.clone();
        let engine = tokio::spawn(async move {
            runtime
                .run(RunMode::UntilShutdown(Box::pin(async move {
                    let _ = stopped.await;
                })))
                .await
        });
        Running { stop, engine }
    }

    pub async fn idle(&self) {
        self.runtime
            .run(RunMode::UntilIdle)
            .await
            .expect("engine runs");
    }

    pub async fn advance(&self, by: Duration) {
        self.clock.advance(by);
        self.idle().await;
    }

    pub fn task(&self, process: &str, key: &str) -> conveyor_store::TaskRecord {
        self.runtime
            .find_task(process, &TaskKey(key.into()))
            .unwrap_or_else(|e| panic!("find: {e}"))
            .1
    }

    pub fn count(&self, process: u64, node: &str) -> (i64, u64) {
        self.runtime
            .store()
            .counters(process)
            .expect("counters")
            .into_iter()
            .find(|(n, _)| n == node)
            .map(|(_, c)| (c.now, c.total))
            .unwrap_or((0, 0))
    }
}

const DELAY: &str = r#"
process: delay
nodes:
  start: { type: start, next: wait }
  wait: { type: delay, for: 25m, next: done }
  done: { type: final }
"#;

#[tokio::test]
async fn a_25_minute_delay_fires_when_the_clock_passes_it_not_before() {
    let e = Engine::new();
    let p = e.clone_process(DELAY, Some("d"));
    e.add("@d", Some("t"), json!({}));
    e.idle().await;
    let task = e.task("@d", "t");
    assert_eq!(
        (task.node.as_str(), task.status),
        ("wait", TaskStatus::Waiting)
    );
    assert_eq!(task.wake.map(|w| w.at), Some(T0 + 25 * 60 * 1000));
    assert_eq!(e.count(p, "wait"), (1, 1));

    e.advance(Duration::from_secs(25 * 60 - 1)).await;
    assert_eq!(
        e.task("@d", "t").node,
        "wait",
        "one second early: still waiting"
    );

    e.advance(Duration::from_secs(1)).await;
    let task = e.task("@d", "t");
    assert_eq!(
        (task.node.as_str(), task.status),
        ("done", TaskStatus::Done)
    );
    assert_eq!(e.count(p, "wait"), (0, 1));
    assert_eq!(e.count(p, "done"), (1, 1));
    // The only timer left is its removal, 7 days on (the default `keep`).
    assert_eq!(
        e.runtime.store().next_timer().unwrap().map(|t| t.due),
        Some(T0 + 25 * 60 * 1000 + 7 * 86_400_000)
    );
}

#[tokio::test]
async fn a_time_limit_moves_a_stuck_task_and_a_callback_moves_another() {
    let e = Engine::new();
    e.clone_process(
        r#"
process: callback
nodes:
  start: { type: start, next: wait }
  wait: { type: wait_callback, timeout: 30s -> expired, next: got }
  got: { type: final }
  expired: { type: final, status: error }
"#,
        Some("cb"),
    );
    e.add("@cb", Some("slow"), json!({}));
    e.add("@cb", Some("fast"), json!({}));
    e.idle().await;
    e.runtime
        .modify_task(
            "@cb",
            &TaskKey("fast".into()),
            json!({"answer": 42}).as_object().unwrap().clone(),
            "test",
        )
        .unwrap();
    e.idle().await;
    let fast = e.task("@cb", "fast");
    assert_eq!(fast.node, "got");
    assert_eq!(fast.data["answer"], 42);
    assert_eq!(e.task("@cb", "slow").node, "wait");
    e.advance(Duration::from_secs(29)).await;
    assert_eq!(e.task("@cb", "slow").node, "wait");
    e.advance(Duration::from_secs(1)).await;
    let slow = e.task("@cb", "slow");
    assert_eq!(
        (slow.node.as_str(), slow.status),
        ("expired", TaskStatus::Failed)
    );
}

#[tokio::test]
async fn call_process_and_reply_round_trip() {
    let e = Engine::new();
    e.clone_process(
        r#"
process: doubler
nodes:
  start: { type: start, next: compute }
  compute: { type: set_param, set: { doubled: "$.math({{n}} * 2)" }, next: answer }
  answer: { type: reply, data: { result: "{{doubled}}" }, next: done }
  done: { type: final }
"#,
        Some("doubler"),
    );
    e.clone_process(
        r#"
process: caller
nodes:
  start: { type: start, next: ask }
  ask: { type: call_process, process: "@doubler", data: { n: "{{n}}" }, next: done, on_error: failed }
  done: { type: final }
  failed: { type: final, status: error }
"#,
        Some("caller"),
    );
    e.add("@caller", Some("c"), json!({"n": 21}));
    e.idle().await;
    let task = e.task("@caller", "c");
    assert_eq!(task.node, "done", "{:?}", task.data);
    assert_eq!(task.data["result"], 42);
}

/// An error reply (Corezoid's `throw_exception`) sends the caller to its error route
/// with the reply's `reason` (Corezoid's `exception_reason`), rendered against the
/// called task and with its secrets cut out.
#[tokio::test]
async fn an_error_reply_tells_the_caller_its_reason() {
    let e = Engine::new();
    e.clone_process(
        r#"
process: lookup
params:
  token: { secret: true }
nodes:
  start: { type: start, next: answer }
  answer:
    type: reply
    data: { found: false }
    error: true
    reason: "no customer {{id}} (asked with {{token}})"
    next: done
  done: { type: final }
"#,
        Some("lookup"),
    );
    e.clone_process(
        r#"
process: shop
nodes:
  start: { type: start, next: ask }
  ask: { type: call_process, process: "@lookup", data: { id: "{{id}}", token: "{{token}}" }, next: done, on_error: failed }
  done: { type: final }
  failed: { type: final, status: error }
"#,
        Some("shop"),
    );
    e.add("@shop", Some("s"), json!({"id": 7, "token": "tok-s3cret"}));
    e.idle().await;
    let task = e.task("@shop", "s");
    assert_eq!(task.node, "failed", "{:?}", task.data);
    assert_eq!(
        task.data["found"], false,
        "the reply's keys are merged first"
    );
    assert_eq!(
        task.data["__conveyor_rpc_return_type_tag__"],
        "rpc_error_reply"
    );
    assert_eq!(
        task.data["__conveyor_rpc_return_description__"],
        "the called process replied with an error: no customer 7 (asked with ***)"
    );

    // A task nobody called replies to nobody: its reason is not even rendered (one
    // that could not be would otherwise fail it).
    e.clone_process(
        r#"
process: alone
nodes:
  start: { type: start, next: answer }
  answer: { type: reply, error: true, reason: "{{conv[@nowhere].ref[r].why}}", next: done }
  done: { type: final }
"#,
        Some("alone"),
    );
    e.add("@alone", Some("a"), json!({}));
    e.idle().await;
    let task = e.task("@alone", "a");
    assert_eq!(task.node, "done", "{:?}", task.data);

    // `reason` belongs to an error reply.
    let checked = conveyor_model::check(
        "x.yaml",
        "process: x\nnodes:\n  start: { type: start, next: r }\n  r: { type: reply, reason: why, next: d }\n  d: { type: final }\n",
    );
    let said: Vec<String> = checked.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        said.iter()
            .any(|d| d
                .contains("`reason` says why an error reply is one: give it with `error: true`")),
        "{said:?}"
    );
}

#[tokio::test]
async fn a_called_task_that_fails_answers_its_caller_with_the_reason() {
    let e = Engine::new();
    e.clone_process(
        r#"
process: picky
nodes:
  start: { type: start, next: check }
  check:
    type: condition
    branches:
      - when: [ { param: n, fn: more, value: 0, cast: number } ]
        next: answer
    else: refused
  answer: { type: reply, data: { ok: true }, next: broken }
  broken: { type: set_param, set: { x: "{{a}}" }, cast: { x: number }, next: done }
  refused: { type: final, status: error }
  done: { type: final }
"#,
        Some("picky"),
    );
    // No time limit on `ask`: before, a failed callee left the caller waiting forever.
    e.clone_process(
        r#"
process: asker
nodes:
  start: { type: start, next: ask }
  ask: { type: call_process, process: "@picky", data: { n: "{{n}}", a: "{{a}}" }, next: done, on_error: failed }
  done: { type: final }
  failed: { type: final, status: error }
"#,
        Some("asker"),
    );
    // The callee ends in an error final node; a node failure with no error route; one
    // that replies first and fails after (the caller has its answer already).
    e.add("@asker", Some("final"), json!({"n": -1, "a": "1"}));
    e.add("@asker", Some("cond"), json!({"n": "many", "a": "1"}));
    e.add("@asker", Some("late"), json!({"n": 5, "a": "abc"}));
    e.idle().await;
    let reason = |r: &str| {
        let task = e.task("@asker", r);
        assert_eq!(task.node, "failed", "{r}: {:?}", task.data);
        assert_eq!(
            task.data["__conveyor_rpc_return_type_tag__"], "rpc_callee_failed",
            "{r}"
        );
        task.data["__conveyor_rpc_return_description__"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let why = reason("final");
    assert!(why.contains("error final node `refused`"), "{why}");
    let why = reason("cond");
    assert!(
        why.contains("node `check` failed (condition_error)"),
        "{why}"
    );
    assert!(why.contains("`many` is not a number"), "{why}");
    let late = e.task("@asker", "late");
    assert_eq!(late.node, "done", "{:?}", late.data);
    assert_eq!(late.data["ok"], true);
}

#[tokio::test]
async fn ten_parallel_sums_of_one_give_ten() {
    let e = Engine::new();
    let totals = e.clone_process(
        r#"
process: totals
nodes:
  start: { type: start, next: hold }
  hold: { type: escalation, title: "holds the sums" }
"#,
        Some("totals"),
    );
    e.clone_process(
        r#"
process: counter
nodes:
  start: { type: start, next: count }
  count:
    type: sum
    process: "@totals"
    ref: "day-{{day}}"
    add: { hits: 1, amount: "{{amount}}" }
    next: done
    on_error: failed
  done: { type: final }
  failed: { type: final, status: error }
"#,
        Some("counter"),
    );
    // Ten tasks at once, none of which finds the holder: they race to create it, the
    // losers run again and add to it.
    for i in 0..10 {
        e.add(
            "@counter",
            Some(&format!("t{i}")),
            json!({"day": "1", "amount": "2.5"}),
        );
    }
    e.add(
        "@counter",
        Some("bad"),
        json!({"day": "1", "amount": "lots"}),
    );
    e.idle().await;
    let holder = e.task("@totals", "day-1");
    assert_eq!(holder.data["hits"], 10, "{:?}", holder.data);
    assert_eq!(holder.data["amount"], 25.0, "{:?}", holder.data);
    assert_eq!(holder.node, "hold");
    assert_eq!(e.count(totals, "hold"), (1, 1), "one holder, created once");
    for i in 0..10 {
        assert_eq!(e.task("@counter", &format!("t{i}")).node, "done");
    }
    let bad = e.task("@counter", "bad");
    assert_eq!(bad.node, "failed");
    assert_eq!(
        bad.data["__conveyor_sum_return_type_tag__"],
        "sum_bind_error"
    );
    assert!(
        bad.data["__conveyor_sum_return_description__"]
            .as_str()
            .unwrap_or_default()
            .contains("`amount`: `lots` is not a number")
    );
    // Ten more, the holder existing now.
    for i in 10..20 {
        e.add(
            "@counter",
            Some(&format!("t{i}")),
            json!({"day": "1", "amount": 1}),
        );
    }
    e.idle().await;
    let holder = e.task("@totals", "day-1");
    assert_eq!(holder.data["hits"], 20);
    assert_eq!(holder.data["amount"], 35.0);
}

#[tokio::test]
async fn copy_task_creates_a_task_with_a_ref_in_another_process() {
    let e = Engine::new();
    let target = e.clone_process(
        r#"
process: inbox
params:
  text: { required: true }
nodes:
  start: { type: start, next: done }
  done: { type: final }
"#,
        Some("inbox"),
    );
    e.clone_process(
        r#"
process: sender
nodes:
  start: { type: start, next: send }
  send: { type: copy_task, process: "@inbox", ref: "msg-{{id}}", data: { text: "hello {{id}}" }, next: done, on_error: failed }
  done: { type: final }
  failed: { type: final, status: error }
"#,
        Some("sender"),
    );
    e.add("@sender", None, json!({"id": "7"}));
    e.add("@sender", Some("dup"), json!({"id": "7"}));
    e.idle().await;
    let copied = e.task("@inbox", "msg-7");
    assert_eq!(copied.data["text"], "hello 7");
    assert_eq!(copied.node, "done");
    assert_eq!(e.count(target, "done"), (1, 1));
    // The second copy with the same ref is refused with Corezoid's tag.
    let dup = e.task("@sender", "dup");
    assert_eq!(dup.node, "failed");
    assert_eq!(
        dup.data["__conveyor_copy_task_return_type_tag__"],
        "not_unical_ref"
    );
}

#[tokio::test]
async fn a_task_waiting_in_a_delay_is_read_from_another_process() {
    let e = Engine::new();
    e.clone_process(
        r#"
process: holder
secrets: [token]
nodes:
  start: { type: start, next: hold }
  hold: { type: delay, for: 1h, next: done }
  done: { type: final }
"#,
        Some("holder"),
    );
    e.clone_process(
        r#"
process: reader
nodes:
  start: { type: start, next: read }
  read: { type: set_param, set: { got: "{{conv[@holder].ref[main].token}}", also: "<<conv[@holder].ref[main].token>>" }, next: done, on_error: failed }
  done: { type: final }
  failed: { type: final, status: error }
"#,
        Some("reader"),
    );
    e.add("@holder", Some("main"), json!({"token": "T-123"}));
    e.idle().await;
    assert_eq!(e.task("@holder", "main").node, "hold");
    e.add("@reader", Some("r"), json!({}));
    e.idle().await;
    let r = e.task("@reader", "r");
    assert_eq!(r.node, "done");
    assert_eq!(
        (r.data["got"].as_str(), r.data["also"].as_str()),
        (Some("T-123"), Some("T-123"))
    );

    // A reference to a ref that does not exist is an error naming process and ref.
    e.clone_process(
        r#"
process: reader2
nodes:
  start: { type: start, next: read }
  read: { type: set_param, set: { got: "{{conv[@holder].ref[nope].token}}" }, next: done, on_error: failed }
  done: { type: final }
  failed: { type: final, status: error }
"#,
        Some("reader2"),
    );
    e.add("@reader2", Some("r"), json!({}));
    e.idle().await;
    let r = e.task("@reader2", "r");
    assert_eq!(r.node, "failed");
    assert_eq!(
        r.data["__conveyor_set_param_return_description__"],
        "`got`: cannot read conv[@holder].ref[nope]: no task with ref `nope` in process @holder"
    );
}

#[tokio::test]
async fn a_duplicate_ref_is_refused_and_the_first_task_untouched() {
    let e = Engine::new();
    e.clone_process(DELAY, Some("d"));
    e.add("@d", Some("token"), json!({"v": 1}));
    let err = e
        .runtime
        .add_task(
            "@d",
            Some("token"),
            json!({"v": 2}).as_object().unwrap().clone(),
        )
        .unwrap_err();
    assert_eq!(err.to_string(), "ref 'token' already exists in process 1");
    assert_eq!(e.task("@d", "token").data["v"], 1);
}

#[tokio::test]
async fn loop_protection_stops_a_spinning_task() {
    let e = Engine::new();
    // The cycle has a time limit on `b` (so the check accepts it), but the task never
    // waits there: it spins until loop protection stops it.
    e.clone_process(
        r#"
process: spin
settings: { max_steps: 20 }
nodes:
  start: { type: start, next: a }
  a: { type: set_param, set: { n: "$.math({{n}} + 1)" }, next: b }
  b: { type: set_param, set: { m: 1 }, timeout: 1h -> done, next: a }
  done: { type: final }
"#,
        Some("spin"),
    );
    e.add("@spin", Some("s"), json!({"n": 0}));
    e.idle().await;
    let task = e.task("@spin", "s");
    assert_eq!(task.status, TaskStatus::Failed);
    let history = e.runtime.store().history(task.id).unwrap();
    let last_error = history
        .iter()
        .rev()
        .find_map(|h| match &h.kind {
            conveyor_store::EventKind::Error { tag, description } => {
                Some((tag.clone(), description.clone()))
            }
            _ => None,
        })
        .expect("an error event");
    assert_eq!(last_error.0, "loop_protection");
    assert!(
        last_error.1.contains("passed 20 nodes without waiting"),
        "{}",
        last_error.1
    );
    assert!(task.data["n"].as_i64().unwrap() <= 11);
}

#[tokio::test]
async fn conditions_cast_the_task_value_and_fail_on_what_cannot_be_cast() {
    let e = Engine::new();
    e.clone_process(
        r#"
process: cond
nodes:
  start: { type: start, next: check }
  check:
    type: condition
    branches:
      - label: big number
        when: [ { param: n, fn: more, value: 10, cast: number } ]
        next: big
      - label: text ten
        when: [ { param: n, fn: eq, value: "10" } ]
        next: text
      - label: email
        when: [ { param: e, fn: regexp, value: '^[a-z]+@example\.com$' } ]
        next: email
    else: other
  big: { type: final }
  text: { type: final }
  email: { type: final }
  other: { type: final }
"#,
        Some("c"),
    );
    for (reference, data) in [
        ("num", json!({"n": 11})),
        ("str", json!({"n": "10"})),
        ("numstr", json!({"n": "5000"})),
        ("spaced", json!({"n": " 12 "})),
        ("bad", json!({"n": "abc"})),
        ("mail", json!({"e": "bob@example.com"})),
        ("none", json!({})),
    ] {
        e.add("@c", Some(reference), data);
    }
    e.idle().await;
    let at = |r: &str| e.task("@c", r).node;
    assert_eq!(at("num"), "big");
    assert_eq!(at("str"), "text");
    assert_eq!(
        at("numstr"),
        "big",
        "\"5000\" cast to a number is more than 10"
    );
    assert_eq!(at("spaced"), "big");
    // Cannot be cast: an error of the node with the reason, not a silent `else`.
    let bad = e.task("@c", "bad");
    assert_eq!(bad.node, "check");
    assert_eq!(bad.status, TaskStatus::Failed);
    let reason = bad.data["__conveyor_condition_return_description__"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(reason.contains("`abc` is not a number"), "{reason}");
    assert!(reason.contains("param `n`"), "{reason}");
    assert_eq!(at("mail"), "email");
    assert_eq!(at("none"), "other");
}

#[tokio::test]
async fn an_escalation_holds_a_task_until_it_is_modified() {
    let e = Engine::new();
    let p = e.clone_process(
        r#"
process: esc
nodes:
  start: { type: start, next: check }
  check:
    type: condition
    branches:
      - when: [ { param: code, fn: eq, value: good } ]
        next: done
    else: stuck
  stuck: { type: escalation, title: "needs a person", next: check }
  done: { type: final }
"#,
        Some("esc"),
    );
    e.add("@esc", Some("t"), json!({"code": "bad"}));
    e.idle().await;
    assert_eq!(e.task("@esc", "t").node, "stuck");
    assert_eq!(e.count(p, "stuck"), (1, 1));
    e.runtime
        .modify_task(
            "@esc",
            &TaskKey("t".into()),
            json!({"code": "good"}).as_object().unwrap().clone(),
            "test",
        )
        .unwrap();
    e.idle().await;
    assert_eq!(e.task("@esc", "t").node, "done");
    assert_eq!(e.count(p, "stuck"), (0, 1));
}

#[tokio::test]
async fn params_are_checked_before_anything_is_stored() {
    let e = Engine::new();
    let p = e.clone_process(
        r#"
process: params
params:
  portal: { required: true, pattern: '^[a-z0-9-]+$' }
  scope: { default: crm }
  code: { required: true, secret: true, pattern: '^[a-z0-9]+$' }
nodes:
  start: { type: start, next: done }
  done: { type: final }
"#,
        Some("p"),
    );
    let add = |data: Value| {
        e.runtime
            .add_task("@p", None, data.as_object().unwrap().clone())
    };
    assert_eq!(
        add(json!({"code": "x"})).unwrap_err().to_string(),
        "param `portal`: is required"
    );
    assert_eq!(
        add(json!({"portal": "evil.com#", "code": "x"}))
            .unwrap_err()
            .to_string(),
        "param `portal`: `evil.com#` does not match the pattern `^[a-z0-9-]+$`"
    );
    assert_eq!(
        add(json!({"portal": "ok", "code": "SECRET!"}))
            .unwrap_err()
            .to_string(),
        "param `code`: the value does not match the pattern `^[a-z0-9]+$`",
        "a secret's value is never echoed"
    );
    assert!(e.runtime.store().tasks(p, None, 10).unwrap().is_empty());
    let task = add(json!({"portal": "ok", "code": "abc"})).unwrap();
    assert_eq!(task.data["scope"], "crm");
}

#[tokio::test]
async fn limits_stop_runaway_processes_with_clear_errors() {
    let e = Engine::new();
    // A task that doubles its data at every turn (with a wait, so loop protection does
    // not apply): the 128 KB task limit stops it.
    e.clone_process(
        r#"
process: grow
nodes:
  start: { type: start, next: double }
  double:
    type: set_param
    set: { blob: "{{blob}}{{blob}}" }
    next: pause
    on_error: stopped
  pause: { type: delay, for: 1s, next: double }
  stopped: { type: final, status: error }
"#,
        Some("grow"),
    );
    e.add("@grow", Some("g"), json!({"blob": "0123456789"}));
    for _ in 0..20 {
        e.advance(Duration::from_secs(1)).await;
    }
    let task = e.task("@grow", "g");
    assert_eq!(task.node, "stopped");
    assert_eq!(
        task.data["__conveyor_set_param_return_type_tag__"],
        "task_size_overflow_limit"
    );

    // A process that creates tasks in a loop: its max_tasks stops it.
    let spawner = e.clone_process(
        r#"
process: spawner
settings: { max_tasks: 25 }
nodes:
  start: { type: start, next: spawn }
  spawn: { type: copy_task, process: "@spawner", next: done, on_error: refused }
  done: { type: final }
  refused: { type: final, status: error }
"#,
        Some("spawner"),
    );
    e.add("@spawner", None, json!({}));
    e.idle().await;
    let refused = e.count(spawner, "refused");
    assert_eq!(refused.0, 1, "exactly one copy was refused");
    let all: i64 = e
        .runtime
        .store()
        .counters(spawner)
        .unwrap()
        .iter()
        .map(|(_, c)| c.now)
        .sum();
    assert_eq!(all, 25);
    let failed = e
        .runtime
        .store()
        .tasks(spawner, Some("refused"), 10)
        .unwrap();
    let description = failed[0].data["__conveyor_copy_task_return_description__"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        description.contains("its limit (settings.max_tasks = 25)"),
        "{description}"
    );
    // Deeply nested JSON is refused, not a stack overflow.
    let nested = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let parsed = serde_json::from_str::<Value>(&nested);
    assert!(parsed.is_err(), "serde_json's recursion limit holds");
}

const HOLDERS: &str = r#"
process: holders
params:
  n: {}
nodes:
  start: { type: start, next: wait }
  wait: { type: escalation, next: done }
  done: { type: final }
"#;

const READER: &str = r#"
process: reader
params:
  ref: {}
nodes:
  start: { type: start, next: read }
  read: { type: set_param, set: { got: "{{conv[@holders].ref[{{ref}}].n}}" }, next: done, on_error: failed }
  done: { type: final }
  failed: { type: final, status: error }
"#;

#[tokio::test]
async fn the_cache_of_tasks_read_by_ref_stays_within_its_bound_and_is_never_stale() {
    let e = Engine::with_settings(Settings {
        ref_cache_entries: 20,
        ..Settings::default()
    });
    e.clone_process(HOLDERS, Some("holders"));
    e.clone_process(READER, Some("reader"));
    for i in 0..100 {
        e.add("@holders", Some(&format!("h{i}")), json!({ "n": i }));
    }
    e.idle().await;
    // Read every holder twice, in two sweeps: far more tasks than the cache keeps.
    for round in 0..2 {
        for i in 0..100 {
            e.add(
                "@reader",
                Some(&format!("r{round}-{i}")),
                json!({ "ref": format!("h{i}") }),
            );
        }
        e.idle().await;
        let (entries, _) = e.runtime.ref_cache_size();
        assert!(entries <= 20, "{entries} tasks kept, the bound is 20");
    }
    for i in 0..100 {
        assert_eq!(e.task("@reader", &format!("r1-{i}")).data["got"], json!(i));
    }
    // Every holder changes (through a modify, which its task commits): what is read
    // afterwards is the new value, whether it was kept, evicted or never kept.
    for i in 0..100 {
        e.runtime
            .modify_task(
                "@holders",
                &TaskKey(format!("h{i}")),
                serde_json::from_value(json!({ "n": i + 1000 })).expect("map"),
                "test",
            )
            .unwrap_or_else(|err| panic!("modify: {err}"));
    }
    e.idle().await;
    for i in 0..100 {
        e.add(
            "@reader",
            Some(&format!("r2-{i}")),
            json!({ "ref": format!("h{i}") }),
        );
    }
    e.idle().await;
    for i in 0..100 {
        assert_eq!(
            e.task("@reader", &format!("r2-{i}")).data["got"],
            json!(i + 1000),
            "holder h{i}"
        );
    }
    assert!(e.runtime.ref_cache_size().0 <= 20);
}

/// `max_tasks` counts what a process holds now: tasks that left (removed at once by
/// `keep: 0`) make room again, however many were created before; a full process
/// refuses the next create with the limit named, and admits again once one leaves.
#[tokio::test]
async fn max_tasks_refuses_a_full_process_and_admits_again_once_tasks_leave() {
    let e = Engine::new();
    e.clone_process(
        r#"
process: passing
settings: { max_tasks: 3 }
nodes:
  start: { type: start, next: done }
  done: { type: final, keep: 0 }
"#,
        Some("passing"),
    );
    for n in 0..20 {
        e.add("@passing", None, json!({"n": n}));
        e.idle().await;
    }
    let held = e.clone_process(
        r#"
process: holding
settings: { max_tasks: 3 }
nodes:
  start: { type: start, next: wait }
  wait: { type: wait_callback, next: done }
  done: { type: final, keep: 0 }
"#,
        Some("holding"),
    );
    for n in 0..3 {
        e.add("@holding", Some(&format!("t{n}")), json!({}));
    }
    e.idle().await;
    let refused = e
        .runtime
        .add_task("@holding", None, Map::new())
        .expect_err("a fourth task does not fit");
    assert!(
        refused
            .to_string()
            .contains("its limit (settings.max_tasks = 3)"),
        "{refused}"
    );
    // One leaves: there is room for one again, and only one.
    e.runtime
        .modify_task("@holding", &TaskKey("t0".into()), Map::new(), "test")
        .expect("modify");
    e.idle().await;
    assert_eq!(e.count(held, "wait"), (2, 3));
    e.add("@holding", Some("t3"), json!({}));
    assert!(e.runtime.add_task("@holding", None, Map::new()).is_err());
}

/// Many tasks come to a queue with a `capacity` at once, their steps running side by
/// side: exactly its capacity wait, and every other goes to the error route. (Each step
/// counts the tasks waiting and enters under the queue's lock, held until its commit;
/// before, two steps could both count a last free place.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_admits_exactly_its_capacity_when_tasks_come_at_once() {
    for kind in [
        conveyor_store::StoreKind::Log,
        conveyor_store::StoreKind::Sled,
    ] {
        let e = Engine::with_store(kind);
        let limited = e.clone_process(
            r#"
process: limited
nodes:
  start: { type: start, next: waiting }
  waiting: { type: queue, capacity: 3, next: done, on_error: full }
  done: { type: final }
  full: { type: final, status: error }
"#,
            Some("limited"),
        );
        for round in 0..3 {
            for n in 0..40 {
                e.add("@limited", None, json!({ "n": n, "round": round }));
            }
            e.idle().await;
            assert_eq!(e.count(limited, "waiting").0, 3, "{kind:?}, round {round}");
            assert_eq!(
                e.count(limited, "full").0,
                37 + 40 * round,
                "{kind:?}, round {round}"
            );
        }
    }
}

/// A task whose time limit in a queue with a capacity cannot be worked out goes to the
/// node's error route at once; a route that leads back into the same queue (after
/// fixing the limit) finds it free: the step that left it did not keep it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_cannot_stay_in_a_queue_with_a_capacity_lets_it_go() {
    let e = Engine::new();
    let p = e.clone_process(
        r#"
process: retrying
nodes:
  start: { type: start, next: waiting }
  waiting:
    type: queue
    capacity: 2
    timeout: { until: "{{deadline}}", to: late }
    next: done
    on_error: fix
  fix: { type: set_param, set: { deadline: "4102444800" }, next: waiting }
  late: { type: final, status: error }
  done: { type: final }
"#,
        Some("retrying"),
    );
    for n in 0..2 {
        e.add("@retrying", None, json!({ "n": n, "deadline": "soon" }));
    }
    tokio::time::timeout(Duration::from_secs(20), e.idle())
        .await
        .expect("the engine went idle: no step waits for a queue it holds itself");
    assert_eq!(e.count(p, "waiting").0, 2);
}

const ORDERS: &str = r#"
process: orders
nodes:
  start: { type: start, next: waiting }
  waiting: { type: queue, next: shipped }
  shipped: { type: final, keep: 30d }
"#;

fn taker(name: &str, order: &str) -> String {
    format!(
        r#"
process: {name}
nodes:
  start: {{ type: start, next: take }}
  take: {{ type: get_task, process: "@orders", node: waiting, order: {order}, next: got, on_error: empty }}
  got: {{ type: final, keep: 30d }}
  empty: {{ type: final, status: error, keep: 30d }}
"#
    )
}

/// One engine (one `Runtime`, as `conveyor serve` keeps) takes from a queue many times:
/// the queue is listed at its first take, and after that the tasks that come to wait
/// in it are known from this engine's own steps; a task that left the queue another
/// way (deleted here) is passed over; an empty queue is told as such.
#[tokio::test]
async fn a_queue_is_taken_from_in_order_as_tasks_come_and_leave() {
    for kind in [
        conveyor_store::StoreKind::Log,
        conveyor_store::StoreKind::Sled,
    ] {
        let e = Engine::with_store(kind);
        e.clone_process(ORDERS, Some("orders"));
        e.clone_process(&taker("oldest", "oldest"), Some("oldest"));
        e.clone_process(&taker("newest", "newest"), Some("newest"));
        let take = |taker: &'static str, reference: String| {
            let e = &e;
            async move {
                e.add(taker, Some(&reference), json!({}));
                e.idle().await;
                let task = e.task(taker, &reference);
                if task.node == "got" {
                    let id = task.data["__queue_task_id__"].as_u64().expect("an id");
                    let taken = e
                        .runtime
                        .store()
                        .task(id)
                        .expect("read")
                        .expect("the taken task");
                    assert_eq!(taken.node, "shipped", "the taken task goes on");
                    taken.reference
                } else {
                    assert_eq!(task.node, "empty", "{kind:?}: {task:?}");
                    None
                }
            }
        };
        let order = |n: u32| {
            e.clock.advance(Duration::from_secs(1));
            e.add("@orders", Some(&format!("o{n}")), json!({ "n": n }))
        };
        order(1);
        e.idle().await;
        // The first take lists the queue.
        assert_eq!(take("@oldest", "t1".into()).await.as_deref(), Some("o1"));
        // These come after that listing: the engine's own steps put them on its list.
        for n in 2..=5 {
            order(n);
            e.idle().await;
        }
        e.runtime
            .delete_task("@orders", &TaskKey("o3".into()))
            .expect("o3 deleted");
        assert_eq!(take("@oldest", "t2".into()).await.as_deref(), Some("o2"));
        assert_eq!(take("@newest", "t3".into()).await.as_deref(), Some("o5"));
        assert_eq!(
            take("@oldest", "t4".into()).await.as_deref(),
            Some("o4"),
            "{kind:?}: o3 left the queue and is passed over"
        );
        assert_eq!(take("@oldest", "t5".into()).await, None, "{kind:?}");
        // A queue found empty takes what comes next.
        order(6);
        e.idle().await;
        assert_eq!(take("@newest", "t6".into()).await.as_deref(), Some("o6"));
        assert_eq!(e.task("@orders", "o6").status, TaskStatus::Done);
        // Orders through a door (the task API, a direct URL): the door runs `start` and
        // leaves the task ready at the queue; the engine's step makes it wait there, and
        // that is when it goes on the list, oldest first as ever.
        // (o8 comes the plain way between them: a take finds the list not empty, so
        // it is not listed again, and only the list can say o7 is the oldest.)
        for n in 7..=9 {
            if n == 8 {
                order(n);
            } else {
                e.clock.advance(Duration::from_secs(1));
                e.runtime
                    .add_task_grouped(
                        "@orders",
                        Some(&format!("o{n}")),
                        Map::new(),
                        conveyor_runtime::Ack::Applied,
                    )
                    .await
                    .expect("a door's create");
            }
            e.idle().await;
        }
        for (taker, want) in [("t7", "o7"), ("t8", "o8"), ("t9", "o9")] {
            assert_eq!(
                take("@oldest", taker.into()).await.as_deref(),
                Some(want),
                "{kind:?}"
            );
        }
        assert_eq!(take("@oldest", "t10".into()).await, None, "{kind:?}");
    }
}
