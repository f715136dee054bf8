//! `conveyor process import` through the real binary, over the Corezoid samples in
//! `tests/corezoid/` (MIT, Corezoid; SOURCES.md beside them).

use crate::support::{DataDir, repo_root};

fn sample(name: &str) -> String {
    repo_root()
        .join("tests/corezoid")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn the_state_diagram_and_its_driver_import_check_clone_and_run() {
    let d = DataDir::new();
    // The two samples as one array export, as "Export → JSON" of their folder gives.
    let diagram: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(sample("02_user-status-state-diagram.conv.json")).unwrap(),
    )
    .unwrap();
    let driver: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(sample("03_user-status-driver-process.conv.json")).unwrap(),
    )
    .unwrap();
    let export = d.path().join("folder.json");
    std::fs::write(&export, serde_json::json!([diagram, driver]).to_string()).unwrap();
    let out = d.path().join("imported");
    let stdout = d.ok(&[
        "process",
        "import",
        &export.to_string_lossy(),
        "--out",
        &out.to_string_lossy(),
        "--clone",
    ]);
    assert!(stdout.contains("imported `"), "{stdout}");
    let files: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok())
        .collect();
    assert_eq!(files.len(), 2, "{stdout}");
    for file in &files {
        let checked = d.ok(&["process", "check", &file.path().to_string_lossy()]);
        assert!(checked.contains(": ok"), "{checked}");
    }
    let list = d.ok(&["process", "list"]);
    assert_eq!(list.matches('@').count(), 2, "{list}");
    // A user waits in the state diagram; the driver reads its status by the rewritten
    // `{{conv[@new_state_diagram].ref[{{userId}}].status}}`.
    d.ok(&[
        "task",
        "add",
        "@new_state_diagram",
        "--ref",
        "u1",
        "status=inactive",
    ]);
    d.ok(&["run", "--until-idle"]);
    let user = d.json(&["task", "show", "@new_state_diagram", "u1"]);
    assert_eq!(user["status"], "waiting", "{user}");
    d.ok(&["task", "add", "@new_process", "--ref", "d1", "userId=u1"]);
    d.ok(&["run", "--until-idle"]);
    let driver = d.json(&["task", "show", "@new_process", "d1"]);
    assert_eq!(driver["data"]["user"], "inactive", "{driver}");
    // `user.status` is then missing (the sample stores the status itself in `user`), so
    // the condition is false, as in Corezoid, and the task takes the `go`: Final.
    assert_eq!(driver["node"], "final", "{driver}");
    assert_eq!(driver["status"], "done", "{driver}");
}

#[test]
fn unmappable_nodes_are_listed_and_refused_unless_allow_partial() {
    let d = DataDir::new();
    let export = d.path().join("db.json");
    std::fs::write(
        &export,
        r#"{"obj_type": 1, "obj_id": 7, "title": "DB", "scheme": {"nodes": [
          {"id": "s", "obj_type": 1, "condition": {"logics": [{"type": "go", "to_node_id": "q"}]}},
          {"id": "q", "obj_type": 0, "title": "Query", "condition": {"logics": [{"type": "db_call", "err_node_id": "f"}, {"type": "go", "to_node_id": "e"}]}},
          {"id": "e", "obj_type": 2, "title": "End", "condition": {"logics": []}},
          {"id": "f", "obj_type": 2, "title": "Failed", "extra": "{\"icon\":\"error\"}", "condition": {"logics": []}}
        ]}}"#,
    )
    .unwrap();
    let file = export.to_string_lossy().into_owned();
    let (code, stdout, stderr) = d.run(&["process", "import", &file, "--clone"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("process `db`, node q \"Query\": `db_call`, which Conveyor cannot run"),
        "{stderr}"
    );
    assert!(d.ok(&["process", "list"]).trim().lines().count() <= 1);
    d.ok(&["process", "import", &file, "--clone", "--allow-partial"]);
    d.ok(&["task", "add", "@db", "--ref", "t"]);
    d.ok(&["run", "--until-idle"]);
    let task = d.json(&["task", "show", "@db", "t"]);
    assert_eq!(task["node"], "failed", "{task}");
    let description = task["data"]["__conveyor_code_return_description__"]
        .as_str()
        .unwrap_or("");
    assert!(
        description.contains("Corezoid node q (Query) is `db_call`, which Conveyor cannot run"),
        "{task}"
    );
}

#[test]
fn a_file_that_is_not_an_export_gets_a_clear_error() {
    let d = DataDir::new();
    let file = d.path().join("x.json");
    std::fs::write(&file, r#"{"hello": "world"}"#).unwrap();
    let (code, _, stderr) = d.run(&[
        "process",
        "import",
        &file.to_string_lossy(),
        "--out",
        "/tmp/never",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("not a Corezoid export"), "{stderr}");
}
