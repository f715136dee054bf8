//! The documentation says what the binary does. Every `conveyor …` command written in
//! README.md and docs/*.md names a command the binary has and only flags that command
//! takes; a template it clones or draws is shipped; cli.md's synopsis lists every command
//! and no other; `conveyor --help` names every subcommand of `process` and `task`; the
//! examples whose output does not depend on time or randomness print exactly what the
//! page shows; and every session of cli.md runs as written (against the sandbox and local
//! servers), every output compared with the page's, except the few listed with the
//! reason they cannot be (`NOT_REPLAYED`). The README's demo output is compared line
//! for line by `bitrix::the_demo_tells_the_whole_story`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::support::{DataDir, repo_root, run};

/// README.md and every page in docs/.
fn pages() -> Vec<(String, String)> {
    let root = repo_root();
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read a page");
            let name = p.strip_prefix(&root).unwrap_or(&p).display().to_string();
            (name, text)
        })
        .collect()
}

/// A command written in a code block: its page, line, and words.
struct Written {
    place: String,
    words: Vec<String>,
    /// The lines shown after it in a `text` block (its output), up to the next `$ `.
    output: Vec<String>,
}

/// Splits a command line into words as a shell would for the simple quoting docs use.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut started = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (None, c) if c.is_whitespace() => {
                if started || !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (None, c) => word.push(c),
        }
    }
    if started || !word.is_empty() {
        out.push(word);
    }
    out
}

/// Every `conveyor …` command in the code blocks of every page.
fn written() -> Vec<Written> {
    let mut found = Vec::new();
    for (page, text) in pages() {
        let mut in_block = false;
        // A `text` block shows a session: only its `$ ` lines are commands.
        let mut shell = false;
        let mut lines = text.lines().enumerate().peekable();
        let mut pending: Option<Written> = None;
        while let Some((n, raw)) = lines.next() {
            if let Some(fence) = raw.trim_start().strip_prefix("```") {
                in_block = !in_block;
                shell = in_block && matches!(fence.trim(), "sh" | "bash" | "shell" | "console");
                if let Some(w) = pending.take() {
                    found.push(w);
                }
                continue;
            }
            if !in_block {
                continue;
            }
            let mut line = raw.trim().to_string();
            // Continued lines (`\` at the end).
            while line.ends_with('\\') {
                line.pop();
                match lines.next() {
                    Some((_, next)) => line.push_str(next.trim()),
                    None => break,
                }
            }
            let command = line.strip_prefix("$ ").unwrap_or(&line);
            let is_command = line.starts_with("$ ") || (shell && command.starts_with("conveyor "));
            if !is_command {
                if let Some(w) = pending.as_mut() {
                    w.output.push(raw.trim().to_string());
                }
                continue;
            }
            if let Some(w) = pending.take() {
                found.push(w);
            }
            // What the shell does around it: a comment, `&`, a pipe, a redirect.
            let command = command.split(" #").next().unwrap_or(command);
            let command = command.split(" | ").next().unwrap_or(command);
            let command = command.trim_end_matches('&').trim();
            let mut ws = words(command);
            // Leading `NAME=value` assignments.
            while ws.first().is_some_and(|w| {
                w.contains('=')
                    && !w.starts_with('-')
                    && w.chars().next().is_some_and(char::is_uppercase)
            }) {
                ws.remove(0);
            }
            if ws.first().map(String::as_str) != Some("conveyor") {
                continue;
            }
            ws.remove(0);
            pending = Some(Written {
                place: format!("{page}:{}", n + 1),
                words: ws,
                output: Vec::new(),
            });
        }
        if let Some(w) = pending.take() {
            found.push(w);
        }
    }
    found
}

/// Global flags (and whether each takes a value).
const GLOBAL: &[(&str, bool)] = &[
    ("--data", true),
    ("--json", false),
    ("--store-kind", true),
    ("--store-cache-mb", true),
    ("--key-dir", true),
    ("--help", false),
    ("--version", false),
];

/// Commands with subcommands of their own.
const GROUPS: &[&str] = &["process", "task", "api-key", "secrets", "store", "bitrix"];

/// The command path of `words` (`["task", "add"]`) and the rest, global flags removed.
fn split(words: &[String]) -> (Vec<String>, Vec<String>) {
    let mut rest = Vec::new();
    let mut skip = false;
    for w in words {
        if skip {
            skip = false;
            continue;
        }
        let flag = w.split('=').next().unwrap_or(w);
        if let Some((_, takes)) = GLOBAL.iter().find(|(g, _)| *g == flag) {
            skip = *takes && !w.contains('=');
            continue;
        }
        rest.push(w.clone());
    }
    let mut path = Vec::new();
    if let Some(first) = rest.first().cloned() {
        path.push(first.clone());
        rest.remove(0);
        if GROUPS.contains(&first.as_str()) && !rest.is_empty() && !rest[0].starts_with('-') {
            path.push(rest.remove(0));
        }
    }
    (path, rest)
}

/// `conveyor <path> --help`, once per path.
fn help(cache: &mut BTreeMap<Vec<String>, Option<String>>, path: &[String]) -> Option<String> {
    cache
        .entry(path.to_vec())
        .or_insert_with(|| {
            let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
            args.push("--help");
            let (code, stdout, _) = run(&args);
            (code == 0).then_some(stdout)
        })
        .clone()
}

/// The subcommands a `--help` lists.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect()
}

fn shipped() -> Vec<String> {
    let (code, stdout, _) = run(&["--json", "process", "templates"]);
    assert_eq!(code, 0);
    serde_json::from_str(&stdout).expect("a JSON list")
}

#[test]
fn every_command_in_the_docs_is_one_the_binary_has_with_flags_it_takes() {
    let mut cache = BTreeMap::new();
    let templates = shipped();
    let all = written();
    assert!(all.len() > 100, "the docs hold {} commands", all.len());
    let mut wrong = Vec::new();
    for w in &all {
        let (path, rest) = split(&w.words);
        if path.is_empty() {
            continue;
        }
        let Some(text) = help(&mut cache, &path) else {
            wrong.push(format!(
                "{}: `conveyor {}` is no command",
                w.place,
                path.join(" ")
            ));
            continue;
        };
        for flag in rest.iter().filter(|r| r.starts_with("--")) {
            let flag = flag.split('=').next().unwrap_or(flag);
            if !text.contains(&format!("{flag} "))
                && !text.contains(&format!("{flag}\n"))
                && !text.contains(&format!("{flag} <"))
            {
                wrong.push(format!(
                    "{}: `conveyor {}` takes no {flag}",
                    w.place,
                    path.join(" ")
                ));
            }
        }
        let refused = w.output.first().is_some_and(|l| l.starts_with("error:"));
        if !refused
            && path.len() == 2
            && path[0] == "process"
            && (path[1] == "clone" || path[1] == "graph")
            && let Some(source) = rest.iter().find(|r| !r.starts_with('-'))
        {
            let is_file =
                source.contains('/') || source.ends_with(".yaml") || source.ends_with(".yml");
            let is_process = source.starts_with('@')
                || source.chars().all(|c| c.is_ascii_digit())
                || source.contains('<');
            let is_template = templates.contains(source);
            let drawn_process = path[1] == "graph" && is_process;
            if !(is_file || is_template || drawn_process) {
                wrong.push(format!("{}: no template `{source}` is shipped", w.place));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the docs name what the binary lacks:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_template_names_the_docs_give_are_those_shipped() {
    let templates = shipped();
    let mut wrong = Vec::new();
    for (page, text) in pages() {
        for (n, line) in text.lines().enumerate() {
            // `shipped: a, b, c` and `process templates` | `["a","b"]` in prose and tables.
            for marker in ["(shipped: ", "`process templates` | `"] {
                if let Some(start) = line.find(marker) {
                    let rest = &line[start + marker.len()..];
                    let list: String = rest
                        .chars()
                        .take_while(|c| *c != ')' && *c != ';' && *c != '|')
                        .collect();
                    for name in list
                        .split([',', '"', '[', ']', '`', ' '])
                        .filter(|s| !s.is_empty() && *s != "…")
                    {
                        if !templates.iter().any(|t| t == name) {
                            wrong.push(format!("{page}:{}: `{name}` is not shipped", n + 1));
                        }
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_synopsis_of_cli_md_lists_every_command_and_the_help_names_every_subcommand() {
    let mut cache = BTreeMap::new();
    let top = help(&mut cache, &[]).expect("conveyor --help");
    let mut binary = BTreeSet::new();
    for command in subcommands(&top) {
        let path = vec![command.clone()];
        let text = help(&mut cache, &path).expect("help");
        let subs = subcommands(&text);
        if subs.is_empty() {
            binary.insert(command.clone());
        }
        for sub in &subs {
            binary.insert(format!("{command} {sub}"));
        }
        // The top-level help names every subcommand of `process` and `task`.
        if command == "process" || command == "task" {
            let line = top
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{command} ")))
                .expect("a line for it");
            for sub in &subs {
                assert!(
                    line.contains(sub.as_str()),
                    "`conveyor --help` does not name `{command} {sub}`: {line}"
                );
            }
        }
    }
    let cli = std::fs::read_to_string(repo_root().join("docs/cli.md")).expect("cli.md");
    let mut synopsis = BTreeSet::new();
    for line in cli.lines().take_while(|l| !l.starts_with("## ")) {
        if let Some(rest) = line.strip_prefix("conveyor [--data DIR] [--json] ") {
            let ws: Vec<String> = words(rest);
            let (path, _) = split(&ws);
            synopsis.insert(path.join(" "));
        }
    }
    assert_eq!(
        synopsis, binary,
        "docs/cli.md's synopsis and the binary's commands differ"
    );
}

#[test]
fn examples_that_do_not_depend_on_time_print_what_the_docs_show() {
    let d = DataDir::new();
    let mut checked = 0;
    for w in written() {
        let (path, rest) = split(&w.words);
        let stateless = path == ["process", "templates"]
            || (path == ["process", "clone"] && rest.first().is_some_and(|s| s == "approvals"));
        if !stateless || w.output.is_empty() {
            continue;
        }
        let args: Vec<&str> = w.words.iter().map(String::as_str).collect();
        let (_, stdout, stderr) = d.run(&args);
        let shown = w.output.join("\n");
        let got = format!("{stdout}{stderr}");
        assert_eq!(
            got.trim_end(),
            shown.trim_end(),
            "{}: `conveyor {}`",
            w.place,
            w.words.join(" ")
        );
        checked += 1;
    }
    assert!(checked >= 2, "checked {checked} examples");
}

/// One `$ ` line of a session and the lines it printed.
struct Step {
    place: String,
    command: String,
    output: Vec<String>,
}

/// A `text` block with `$ ` lines, under its nearest `##`/`###` heading.
struct Block {
    heading: String,
    place: String,
    /// The fence's indentation (a block in a list item), taken off every line.
    indent: usize,
    steps: Vec<Step>,
}

/// Every `text` block of `page` that shows a session (has `$ ` lines), in page order.
fn blocks(page: &str) -> Vec<Block> {
    let text = std::fs::read_to_string(repo_root().join(page)).expect("the page");
    let mut blocks: Vec<Block> = Vec::new();
    let mut heading = String::new();
    let mut current: Option<Block> = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if current.is_none() && (line.starts_with("## ") || line.starts_with("### ")) {
            heading = line.to_string();
            continue;
        }
        if let Some(fence) = trimmed.strip_prefix("```") {
            match current.take() {
                Some(block) => {
                    if !block.steps.is_empty() {
                        blocks.push(block);
                    }
                }
                None if fence == "text" => {
                    current = Some(Block {
                        heading: heading.clone(),
                        place: format!("{page}:{}", n + 1),
                        indent: line.len() - trimmed.len(),
                        steps: Vec::new(),
                    })
                }
                None => {
                    // Another kind of block: skip to its end.
                    current = Some(Block {
                        heading: String::from("(not a session)"),
                        place: String::new(),
                        indent: 0,
                        steps: Vec::new(),
                    })
                }
            }
            continue;
        }
        let Some(block) = current.as_mut() else {
            continue;
        };
        if block.place.is_empty() {
            continue;
        }
        let line = line.get(block.indent..).unwrap_or(trimmed);
        match line.strip_prefix("$ ") {
            Some(command) => block.steps.push(Step {
                place: format!("{page}:{}", n + 1),
                command: command.to_string(),
                output: Vec::new(),
            }),
            None => {
                if let Some(step) = block.steps.last_mut() {
                    step.output.push(line.to_string());
                }
            }
        }
    }
    blocks
}

/// What differs from run to run: times, codes and tokens, durations, expiry times.
fn steady(text: &str) -> String {
    let rules = [
        (r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", "<time>"),
        (r"[0-9a-f]{32,}", "<hex>"),
        (r"in \d+ ms", "in <n> ms"),
        (r"\b1[0-9]{12}\b", "<unix ms>"),
        (r"\b1[0-9]{9}\b", "<unix time>"),
    ];
    let mut text = text.trim_end().to_string();
    for (pattern, with) in rules {
        let re = regex::Regex::new(pattern).expect("a pattern");
        text = re.replace_all(&text, with).into_owned();
    }
    text
}

/// The first `yaml` block of `page` after the heading `from`.
fn yaml_after(page: &str, from: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join(page)).expect("the page");
    let after = &text[text.find(from).expect("the heading")..];
    let start = after.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let end = after[start..].find("```").expect("its end");
    after[start..start + end].to_string()
}

/// cli.md's sessions, by the heading they stand under, replayed in page order in one
/// data dir (the first session, then the process of your own, then the examples that
/// use what those made).
const REPLAYED: &[&str] = &[
    "## A first session",
    "## A process of your own",
    "## Task data on the command line",
    "## Output and `--json`",
    "### `process check FILE...`",
    "### `process templates`",
    "### `process clone TEMPLATE|FILE`",
    "### `process update PROCESS FILE`",
    "### `process url PROCESS`",
    "### `task list PROCESS`",
    "### `task delete PROCESS REF|ID`",
    "### `api-key create NAME`, `list`, `rotate LOGIN` and `delete LOGIN`",
];

/// Replayed in a data dir of its own (the example starts from an empty one).
const REPLAYED_ALONE: &str = "### `task goto PROCESS REF|ID NODE [KEY=VALUE | KEY:=JSON]...`";

/// The sessions not replayed, and why: each shows a state this test cannot make in
/// seconds, or a machine's own paths. Every other session of cli.md is replayed.
const NOT_REPLAYED: &[(&str, &str)] = &[
    (
        "## Secrets",
        "a data dir at /backup/conveyor sealed with a key that is elsewhere; tested in secrets.rs",
    ),
    (
        "### `process import FILE`",
        "needs a Corezoid export holding a db_call node; tested in corezoid.rs",
    ),
    (
        "### `task history PROCESS REF|ID`",
        "an excerpt (`…` lines) of a history with 1234 events dropped; tested in retention.rs",
    ),
    (
        "### `store stats`",
        "figures of a store days old; tested in retention.rs and store.rs",
    ),
    (
        "### `secrets rotate-key`",
        "paths under /home/me and the key ids of that machine; tested in secrets.rs",
    ),
    (
        "### `store verify`, `store repair [--yes]`, `store migrate --to sled|log` and `store compact`",
        "a log damaged by hand mid-session; tested in store.rs",
    ),
    (
        "### While an engine runs",
        "`&`, `kill -TERM %1` and a server's lifetime; tested in cli.rs and crash.rs",
    ),
    (
        "## Logs: `CONVEYOR_LOG`",
        "a server's log lines as it runs; tested in http_api.rs",
    ),
];

/// Every session of cli.md is replayed, or listed with the reason it is not.
#[test]
fn every_session_of_cli_md_is_replayed_or_says_why_not() {
    let mut unaccounted = Vec::new();
    for block in blocks("docs/cli.md") {
        let known = REPLAYED.contains(&block.heading.as_str())
            || block.heading == REPLAYED_ALONE
            || NOT_REPLAYED.iter().any(|(h, _)| *h == block.heading);
        if !known {
            unaccounted.push(format!("{} (under {})", block.place, block.heading));
        }
    }
    assert!(
        unaccounted.is_empty(),
        "sessions of docs/cli.md that no test replays; add their heading to REPLAYED (or to NOT_REPLAYED with the reason):\n{}",
        unaccounted.join("\n")
    );
    for heading in REPLAYED.iter().chain([&REPLAYED_ALONE]) {
        assert!(
            blocks("docs/cli.md").iter().any(|b| b.heading == *heading),
            "no session under {heading} in docs/cli.md"
        );
    }
}

/// Runs `steps` in `d` (files in `cwd`), each output compared with the page's once what
/// differs from run to run is set aside; `swap` is the page's text → this run's (ports).
/// The codes the page's commands give are the codes its `curl` got: here, this run's.
fn replay(d: &DataDir, cwd: &std::path::Path, steps: &[&Step], swap: &[(String, String)]) {
    let mut last_code = 0;
    let mut codes: Vec<(String, String)> = Vec::new();
    let code_of = |text: &str| -> Option<String> {
        let value: serde_json::Value = serde_json::from_str(text.trim()).ok()?;
        value["code"].as_str().map(str::to_string)
    };
    let swapped = |text: &str| {
        swap.iter()
            .fold(text.to_string(), |t, (page, ours)| t.replace(page, ours))
    };
    for step in steps {
        let mut command = swapped(&step.command);
        for (page, ours) in &codes {
            command = command.replace(page, ours);
        }
        let shown = swapped(&step.output.join("\n"));
        let got = if let Some(rest) = command.strip_prefix("curl -s ") {
            let url = rest.trim_matches('\'');
            let body = crate::http_api::http()
                .get(url)
                .send()
                .expect("the sandbox answers")
                .text()
                .expect("text");
            if let (Some(page), Some(ours)) = (code_of(&shown), code_of(&body)) {
                codes.push((page, ours));
            }
            body
        } else if let Some(rest) = command.strip_prefix("conveyor ") {
            let command_part = rest.split(" #").next().unwrap_or(rest);
            let ws = words(command_part);
            let args: Vec<&str> = ws.iter().map(String::as_str).collect();
            let output = d
                .command(&args)
                .current_dir(cwd)
                .output()
                .expect("conveyor runs");
            last_code = output.status.code().unwrap_or(-1);
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        } else if command == "echo $?" {
            format!("{last_code}\n")
        } else {
            panic!(
                "{}: a command this test does not know: {command}",
                step.place
            );
        };
        assert_eq!(
            steady(&got),
            steady(&shown),
            "{}: `{command}` printed something else than the page shows",
            step.place
        );
    }
}

/// cli.md's sessions run as written against the sandbox (on a port of its own, put in
/// place of the page's 18765) in one data dir, in page order: a first session, a
/// process of your own, then every example under [`REPLAYED`], each output compared
/// with the page's. The files the examples name are the page's `approval.yaml` and the
/// two versions its `process update` describes, made from it here.
#[test]
fn the_sessions_of_cli_md_run_as_written() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let sandbox = tokio.block_on(crate::bitrix::sandbox());
    let address = sandbox.url().trim_start_matches("http://").to_string();
    let d = DataDir::new();
    let files = tempfile::tempdir().expect("a dir for approval.yaml");
    let approval = yaml_after("docs/cli.md", "## A process of your own");
    std::fs::write(files.path().join("approval.yaml"), &approval).expect("write approval.yaml");
    // `approval-v2.yaml` is approval.yaml with `timeout: 30m -> expired`; v3 also drops
    // `rejected` (its `decide` goes to `expired` instead).
    let v2 = approval.replace("timeout: 1h -> expired", "timeout: 30m -> expired");
    assert_ne!(v2, approval, "approval.yaml has `timeout: 1h -> expired`");
    let v3 = v2
        .replace("    else: rejected\n", "    else: expired\n")
        .replace("  rejected: { type: final, status: error }\n", "");
    assert!(!v3.contains("rejected"), "{v3}");
    std::fs::write(files.path().join("approval-v2.yaml"), v2).expect("write v2");
    std::fs::write(files.path().join("approval-v3.yaml"), v3).expect("write v3");
    let all = blocks("docs/cli.md");
    let steps: Vec<&Step> = all
        .iter()
        .filter(|b| REPLAYED.contains(&b.heading.as_str()))
        .flat_map(|b| b.steps.iter())
        .collect();
    assert!(steps.len() > 50, "{} steps", steps.len());
    replay(
        &d,
        files.path(),
        &steps,
        &[("127.0.0.1:18765".to_string(), address)],
    );
    drop(tokio);
}

/// cli.md's `task goto` session, in a data dir of its own: `fragile.yaml` as the page
/// describes it (an `api_call` node `call` with no `on_error`, `url: "{{base}}/x"`), a
/// closed port for the wrong address and a local server (in place of the page's
/// 127.0.0.1:18766) for the right one.
#[test]
fn the_recovery_session_of_cli_md_runs_as_written() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = tokio
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let app = axum::Router::new().route(
        "/x",
        axum::routing::get(|| async { axum::Json(serde_json::json!({"ok": true})) }),
    );
    tokio.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let d = DataDir::new();
    let files = tempfile::tempdir().expect("a dir for fragile.yaml");
    std::fs::write(
        files.path().join("fragile.yaml"),
        "process: fragile\nnodes:\n  start: { type: start, next: call }\n  call: { type: api_call, url: \"{{base}}/x\", next: done }\n  done: { type: final }\n",
    )
    .expect("write fragile.yaml");
    let all = blocks("docs/cli.md");
    let steps: Vec<&Step> = all
        .iter()
        .filter(|b| b.heading == REPLAYED_ALONE)
        .flat_map(|b| b.steps.iter())
        .collect();
    assert!(steps.len() > 10, "{} steps", steps.len());
    replay(
        &d,
        files.path(),
        &steps,
        &[("127.0.0.1:18766".to_string(), format!("127.0.0.1:{port}"))],
    );
    drop(tokio);
}

/// ARCHITECTURE.md's invariant of the command layer: the binary and conveyor-http do not
/// depend on conveyor-store outside their tests, so nothing but the runtime and the
/// command layer can open, read or write the store (the compiler keeps it so).
#[test]
fn the_binary_and_the_http_api_reach_the_store_only_through_the_command_layer() {
    for krate in ["conveyor", "conveyor-http"] {
        let path = repo_root().join(format!("crates/{krate}/Cargo.toml"));
        let toml = std::fs::read_to_string(&path).expect("Cargo.toml");
        let start = toml.find("\n[dependencies]").expect("[dependencies]") + 1;
        let section = &toml[start + "[dependencies]".len()..];
        let section = &section[..section.find("\n[").unwrap_or(section.len())];
        let store: Vec<&str> = section
            .lines()
            .filter(|l| l.trim_start().starts_with("conveyor-store"))
            .collect();
        assert!(
            store.is_empty(),
            "{} depends on conveyor-store: {store:?}",
            path.display()
        );
        assert!(
            section.contains("conveyor-commands"),
            "{krate} goes through the command layer"
        );
    }
}
