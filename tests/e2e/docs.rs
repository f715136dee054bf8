//! The documentation says what the binary does. Every `conveyor …` command written in
//! README.md and docs/*.md names a command the binary has and only flags that command
//! takes; a template it clones or draws is shipped; cli.md's synopsis lists every command
//! and no other; `conveyor --help` names every subcommand of `process` and `task`; the
//! examples whose output does not depend on time or randomness print exactly what the
//! page shows; and cli.md's sessions (a first session, a process of your own) run as
//! written against the sandbox, every output compared with the page's.

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

/// The `$ ` lines of the `text` blocks of `page` between two headings.
fn session(page: &str, from: &str, to: &str) -> Vec<Step> {
    let text = std::fs::read_to_string(repo_root().join(page)).expect("the page");
    let mut steps: Vec<Step> = Vec::new();
    let mut inside = false;
    let mut in_block = false;
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("## ") {
            inside = line == from || (inside && line != to);
        }
        if !inside {
            continue;
        }
        if let Some(fence) = line.strip_prefix("```") {
            in_block = !in_block && fence == "text";
            continue;
        }
        if !in_block {
            continue;
        }
        match line.strip_prefix("$ ") {
            Some(command) => steps.push(Step {
                place: format!("{page}:{}", n + 1),
                command: command.to_string(),
                output: Vec::new(),
            }),
            None => {
                if let Some(step) = steps.last_mut() {
                    step.output.push(line.to_string());
                }
            }
        }
    }
    steps
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

/// cli.md's first session and its process of your own, run as written against the
/// sandbox (on a port of its own, put in place of the page's 18765) in one data dir,
/// every output compared with the page's once what differs from run to run (times,
/// codes, tokens) is set aside. The codes the page's commands give are the codes its
/// `curl` got: here, the codes this run's `curl` got.
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
    std::fs::write(
        files.path().join("approval.yaml"),
        yaml_after("docs/cli.md", "## A process of your own"),
    )
    .expect("write approval.yaml");
    let steps = session(
        "docs/cli.md",
        "## A first session",
        "## Naming processes and tasks",
    );
    assert!(steps.len() > 30, "{} steps", steps.len());
    let mut last_code = 0;
    // The page's codes → this run's.
    let mut codes: Vec<(String, String)> = Vec::new();
    let code_of = |text: &str| -> Option<String> {
        let value: serde_json::Value = serde_json::from_str(text.trim()).ok()?;
        value["code"].as_str().map(str::to_string)
    };
    for step in &steps {
        let mut command = step.command.replace("127.0.0.1:18765", &address);
        for (page, ours) in &codes {
            command = command.replace(page, ours);
        }
        let shown = step.output.join("\n").replace("127.0.0.1:18765", &address);
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
            let ws = words(rest);
            let args: Vec<&str> = ws.iter().map(String::as_str).collect();
            let output = d
                .command(&args)
                .current_dir(files.path())
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
    drop(tokio);
}
