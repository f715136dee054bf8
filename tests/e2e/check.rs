//! `conveyor process check`: every bad file under tests/bad gives exactly the messages
//! recorded beside it, and the shipped processes pass.

use crate::support::{repo_root, run};

#[test]
fn bad_process_files_give_their_exact_messages() {
    let dir = repo_root().join("tests/bad");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/bad exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 15, "only {} bad files", files.len());
    let mut mismatches = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(repo_root()).expect("inside the repo");
        let relative = relative.to_str().expect("utf-8 path");
        let (code, stdout, stderr) = run(&["process", "check", relative]);
        assert!(stderr.is_empty(), "{relative}: unexpected stderr: {stderr}");
        let actual = format!("{stdout}[exit {code}]\n");
        let expected = std::fs::read_to_string(file.with_extension("expected"))
            .unwrap_or_else(|_| panic!("{relative}: no .expected file beside it"));
        if actual != expected {
            mismatches.push(format!(
                "{relative}\n--- expected\n{expected}--- actual\n{actual}"
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn every_bad_file_but_the_warning_one_fails() {
    let dir = repo_root().join("tests/bad");
    for entry in std::fs::read_dir(&dir).expect("tests/bad exists") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "expected") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable");
        let warning_only = path.file_stem().is_some_and(|s| s == "undeclared_param");
        assert_eq!(
            text.ends_with("[exit 1]\n"),
            !warning_only,
            "{}: {text}",
            path.display()
        );
        assert!(text.contains(if warning_only {
            ": warning: "
        } else {
            ": error: "
        }));
    }
}

#[test]
fn shipped_processes_pass() {
    let dir = repo_root().join("processes");
    let mut args = vec![
        "process".to_string(),
        "check".to_string(),
        "--deny-warnings".to_string(),
    ];
    for entry in std::fs::read_dir(&dir).expect("processes/ exists") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            args.push(path.to_str().expect("utf-8").to_string());
        }
    }
    assert!(args.len() > 3);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, _) = run(&args);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("bitrix_oauth.yaml: ok"), "{stdout}");
}

#[test]
fn all_problems_of_a_file_are_reported_at_once() {
    let (code, stdout, _) = run(&["process", "check", "tests/bad/many_problems.yaml"]);
    assert_eq!(code, 1);
    assert_eq!(stdout.matches(": error: ").count(), 3, "{stdout}");
}

#[test]
fn json_output_for_scripts() {
    let (code, stdout, _) = run(&[
        "process",
        "check",
        "--json",
        "tests/bad/dangling_next.yaml",
        "processes/bitrix_oauth.yaml",
    ]);
    assert_eq!(code, 1);
    let reports: serde_json::Value = serde_json::from_str(&stdout).expect("JSON output");
    assert_eq!(reports[0]["ok"], false);
    assert_eq!(reports[0]["diagnostics"][0]["line"], 3);
    assert_eq!(reports[0]["diagnostics"][0]["column"], 25);
    assert_eq!(reports[0]["diagnostics"][0]["node"], "start");
    assert_eq!(reports[0]["diagnostics"][0]["field"], "next");
    assert_eq!(reports[1]["ok"], true);
    assert_eq!(reports[1]["nodes"], 16);
}

#[test]
fn missing_file_and_bad_arguments() {
    let (code, stdout, _) = run(&["process", "check", "tests/bad/no_such_file.yaml"]);
    assert_eq!(code, 1);
    assert!(stdout.contains("cannot read the file"), "{stdout}");
    let (code, _, stderr) = run(&["process", "check"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("<FILE>"), "{stderr}");
    let (code, _, stderr) = run(&["process", "chek", "x.yaml"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("check"), "{stderr}");
}

#[test]
fn help_reads_well() {
    let (code, stdout, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("process"), "{stdout}");
    let (code, stdout, _) = run(&["process", "--help"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("check"), "{stdout}");
}

#[test]
fn process_graph_draws_files_and_cloned_processes() {
    let nodes = [
        "start",
        "get_token",
        "remember_code",
        "wait_refresh",
        "asked",
        "refresh",
        "describe_failure",
        "notify_or_not",
        "notify_author",
        "not_updated",
    ];
    for format in ["svg", "dot", "mermaid"] {
        let (code, stdout, stderr) = run(&[
            "process",
            "graph",
            "processes/bitrix_oauth.yaml",
            "--format",
            format,
        ]);
        assert_eq!(code, 0, "{stderr}");
        for node in nodes {
            assert!(stdout.contains(node), "{format} lacks {node}");
        }
    }
    let (_, svg, _) = run(&["process", "graph", "bitrix_oauth"]);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(
        svg.contains("access_token doesn&apos;t update")
            || svg.contains("access_token doesn't update")
    );
    // A cloned process is drawn with the tasks in each node.
    let data = crate::support::DataDir::new();
    data.ok(&["process", "clone", "bitrix_deals", "--alias", "deals"]);
    data.ok(&["task", "add", "@deals"]);
    let drawn = data.ok(&["process", "graph", "@deals", "--format", "dot"]);
    assert!(drawn.contains("1 now · 1 total"), "{drawn}");
    // A file with errors is refused with them.
    let (code, _, stderr) = run(&["process", "graph", "tests/bad/dangling_next.yaml"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no node `wait_25`"), "{stderr}");
}

#[test]
fn keys_a_reply_brings_back_are_not_reported_as_undeclared() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("caller.yaml");
    std::fs::write(
        &file,
        r#"
process: caller
nodes:
  start: { type: start, next: before }
  before: { type: set_param, set: { early: "{{typo}}" }, next: ask }
  ask: { type: call_process, process: "@adder", data: { n: 1 }, next: show, on_error: done }
  show: { type: set_param, set: { out: "{{total}}" }, next: done }
  done: { type: final }
"#,
    )
    .expect("write");
    let path = file.to_str().expect("utf-8 path");
    let (code, stdout, stderr) = run(&["process", "check", path]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    // `total` comes back in the reply of `ask`; `typo` is read before any reply.
    assert!(!stdout.contains("`total`"), "{stdout}");
    assert!(
        stdout.contains("node `before`: reads `typo`, which no param declares"),
        "{stdout}"
    );
}
