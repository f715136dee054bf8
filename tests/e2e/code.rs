//! The `code` node through the real binary: JavaScript over the task's data, its errors
//! routed with Corezoid's keys, its limits, and its sandbox.

use crate::support::DataDir;

const PROCESS: &str = r#"
process: code_example
params:
  a: { input: [create] }
  b: { input: [create] }
  script_input: { input: [create] }
nodes:
  start: { type: start, next: compute }
  compute:
    type: code
    src: |
      // Corezoid's api_code: change `data`, it becomes the task.
      var parts = [];
      for (var i = 0; i < data.a; i++) parts.push(i * data.b);
      data.total = parts.reduce(function (s, x) { return s + x; }, 0);
      data.parts = parts;
      data.at = Date.now();
      delete data.b;
      if (data.script_input === "throw") throw new Error("asked to fail");
      if (data.script_input === "spin") while (true) {}
      if (data.script_input === "grow") { var big = []; while (true) big.push("x".repeat(4096) + big.length); }
      if (data.script_input === "escape") { data.probe = [typeof require, typeof process, typeof std, typeof os, typeof fetch].join(","); }
    max_time: 200ms
    max_memory_mb: 8
    next: done
    on_error: failed
  done: { type: final }
  failed: { type: final, status: error }
"#;

#[test]
fn a_code_node_computes_over_data_and_fails_to_on_error_with_the_reason() {
    let d = DataDir::new();
    let file = d.path().join("code_example.yaml");
    std::fs::write(&file, PROCESS).expect("write");
    let file = file.to_string_lossy().into_owned();
    let out = d.ok(&["process", "check", &file]);
    assert!(out.contains("ok, 4 nodes"), "{out}");
    d.ok(&["process", "clone", &file, "--alias", "code"]);
    for (reference, input) in [
        ("ok", "none"),
        ("throw", "throw"),
        ("spin", "spin"),
        ("grow", "grow"),
        ("escape", "escape"),
    ] {
        d.ok(&[
            "task",
            "add",
            "@code",
            "--ref",
            reference,
            "a:=4",
            "b:=2.5",
            &format!("script_input={input}"),
        ]);
    }
    d.ok(&["run", "--until-idle"]);

    let ok = d.json(&["task", "show", "@code", "ok"]);
    assert_eq!(ok["node"], "done", "{ok}");
    assert_eq!(ok["data"]["total"], 15);
    assert_eq!(ok["data"]["parts"], serde_json::json!([0, 2.5, 5, 7.5]));
    assert!(ok["data"].get("b").is_none(), "deleted by the script: {ok}");
    // Date.now() is the engine's clock, the time the task was changed.
    assert_eq!(ok["data"]["at"], ok["changed"]);

    let thrown = d.json(&["task", "show", "@code", "throw"]);
    assert_eq!(thrown["node"], "failed", "{thrown}");
    let data = &thrown["data"];
    assert_eq!(data["__conveyor_code_return_type_error__"], "software");
    assert_eq!(
        data["__conveyor_code_return_type_tag__"],
        "code_runtime_error"
    );
    assert_eq!(
        data["__conveyor_code_return_description__"],
        "the script threw: Error: asked to fail (line 8)"
    );
    // A failed script changes nothing: `b` is still there, `total` was not kept.
    assert_eq!(data["b"], 2.5);
    assert!(data.get("total").is_none(), "{data}");

    let spin = d.json(&["task", "show", "@code", "spin"]);
    assert_eq!(spin["node"], "failed");
    assert_eq!(
        spin["data"]["__conveyor_code_return_type_tag__"],
        "code_timeout"
    );
    let grow = d.json(&["task", "show", "@code", "grow"]);
    assert_eq!(grow["node"], "failed");
    assert_eq!(
        grow["data"]["__conveyor_code_return_type_tag__"],
        "code_memory_limit"
    );

    let escape = d.json(&["task", "show", "@code", "escape"]);
    assert_eq!(escape["node"], "done", "{escape}");
    assert_eq!(
        escape["data"]["probe"],
        "undefined,undefined,undefined,undefined,undefined"
    );
}

#[test]
fn check_refuses_erlang_and_bad_limits_by_field() {
    let d = DataDir::new();
    let file = d.path().join("bad_code.yaml");
    std::fs::write(
        &file,
        r#"process: bad_code
nodes:
  start: { type: start, next: erl }
  erl: { type: code, lang: erl, src: "Data.", next: slow }
  slow: { type: code, src: "data.x = 1;", max_time: 10s, next: done }
  done: { type: final }
"#,
    )
    .expect("write");
    let (code, stdout, stderr) = d.run(&["process", "check", &file.to_string_lossy()]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let all = format!("{stdout}{stderr}");
    assert!(
        all.contains("node `erl`, field `lang`: `erl` code cannot run here: only JavaScript (`lang: js`) runs in Conveyor")
            || all.contains("`erl` code cannot run here"),
        "{all}"
    );
    assert!(all.contains("max_time"), "{all}");
    assert!(all.contains("at most 5s"), "{all}");
}
