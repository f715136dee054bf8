//! Fuzzing of the process loader and validator with proptest: [`check`] must never panic,
//! whatever text it is given, and must say why it refuses a file.
//!
//! Three kinds of input: arbitrary text; YAML-like text made of the tokens YAML and
//! process files are built from; and structured random process files — the keys, node
//! kinds, templates, durations and regexes of real process files, deeply nested maps,
//! anchors and aliases, huge numbers — written out in block or flow style. A fourth
//! target mutates the real process files of the repository (cuts, duplicates, inserts).
//!
//! `cargo test -p conveyor-model fuzz` runs a few hundred cases of each; for a long run:
//! `PROPTEST_CASES=200000 cargo test --release -p conveyor-model fuzz`.

use proptest::prelude::*;

use crate::check;

/// Cases per target: `PROPTEST_CASES`, else `default`.
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        // Crashers are kept as named tests below, not in a regressions file.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Checks `text`: no panic, no minutes spent, and a refused file has at least one
/// error saying why.
fn checks_cleanly(text: &str) {
    let started = std::time::Instant::now();
    let checked = check("fuzz.yaml", text);
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(5),
        "{took:?} for {} bytes: {:?}",
        text.len(),
        text.chars().take(300).collect::<String>()
    );
    if checked.process.is_none() {
        assert!(
            checked.errors().next().is_some(),
            "refused without an error: {text:?}"
        );
    }
    for diagnostic in &checked.diagnostics {
        assert!(!diagnostic.message.is_empty(), "an empty message: {text:?}");
        let _ = diagnostic.to_string();
    }
}

// ---------------------------------------------------------------------------------------
// Fragments of real process files.

const REAL_FILES: [&str; 9] = [
    include_str!("../../../processes/bitrix_oauth.yaml"),
    include_str!("../../../processes/bitrix_deals.yaml"),
    include_str!("../../../processes/notify_telegram.yaml"),
    include_str!("../../../processes/notify_twilio.yaml"),
    include_str!("../../../processes/notify_messagebird.yaml"),
    include_str!("../../../processes/notify_mandrill.yaml"),
    include_str!("../../../processes/notify_unisender.yaml"),
    include_str!("../../../tests/bad/many_problems.yaml"),
    include_str!("../../../tests/bad/spin_cycle.yaml"),
];

const KEYS: &[&str] = &[
    // Top level.
    "process",
    "title",
    "description",
    "params",
    "secrets",
    "settings",
    "nodes",
    "max_steps",
    // Params.
    "required",
    "default",
    "pattern",
    "secret",
    // Nodes.
    "type",
    "next",
    "on_error",
    "branches",
    "label",
    "when",
    "param",
    "fn",
    "fun",
    "value",
    "cast",
    "else",
    "set",
    "for",
    "until",
    "method",
    "url",
    "query",
    "headers",
    "body",
    "format",
    "request_timeout",
    "response",
    "success_codes",
    "retry",
    "attempts",
    "backoff",
    "max",
    "idempotency_key",
    "idempotency_header",
    "concurrency",
    "max_response_bytes",
    "copy",
    "ref",
    "data",
    "error",
    "status",
    "timeout",
    // Not keys of anything.
    "nxet",
    "Type",
    "<<",
    "",
    "1",
    "~",
    "a b",
    "é",
];

const NODE_IDS: &[&str] = &[
    "start", "done", "failed", "call", "wait", "check", "n1", "n2", "n3", "bad id!", "",
];

const KINDS: &[&str] = &[
    "start",
    "final",
    "condition",
    "set_param",
    "delay",
    "api_call",
    "escalation",
    "copy_task",
    "modify_task",
    "call_process",
    "reply",
    "wait_callback",
    "api-call",
    "Start",
    "nope",
];

const SCALARS: &[&str] = &[
    // Templates.
    "{{a}}",
    "{{a.b[0].c}}",
    "x{{n}}y",
    "{{conv[@bitrix].ref[token].access_token}}",
    "<<conv[{{token_process}}].ref[token].client_endpoint>>",
    "{{conv[12].node[wait].count}}",
    "{{node[wait].count}}",
    "{{root.task_id}}",
    "{{root.nope}}",
    "$.math({{a}} * 2 + 1)",
    "$.math((((((((((1))))))))))",
    "$.sha1_hex($.to_string($.math(1+1)))",
    "$.date(%Y-%m-%d)",
    "$.nope(1)",
    "{{",
    "}}",
    "{{}}",
    "{{a",
    "{{conv[abc].ref[x]}}",
    "{{conv[1].ref[}}",
    "$.math(",
    "\\",
    // Durations.
    "30s",
    "25m",
    "1h30m",
    "250ms",
    "1d",
    "0",
    "0s",
    "-1s",
    "1y",
    "99999999999999999999d",
    "18446744073709551615",
    "18446744073709551615ms",
    "5124095576030431h",
    "1d1d1d1d",
    "{{t}}",
    "{{refresh_every}} -> refresh",
    "10s -> nowhere",
    "10s ->",
    "-> done",
    "2024-01-01T00:00:00Z",
    "{{deadline}}",
    // Regexes.
    "^[a-z0-9][a-z0-9-]{0,62}$",
    "(",
    "[",
    "a{100000}",
    "(a{1000}){1000}",
    "\\p{Greek}+",
    "(?P<x>a)(?P<x>b)",
    "(?i)^https?://",
    "[[:alpha:]]",
    "\\1",
    "(?=a)",
    // Numbers, booleans, nulls.
    "0",
    "-1",
    "3.14",
    "1e308",
    "1e999",
    "-1e999",
    "18446744073709551616",
    "-9223372036854775809",
    "340282366920938463463374607431768211456",
    "0x1F",
    "0o17",
    ".nan",
    ".inf",
    "-.inf",
    "true",
    "false",
    "yes",
    "no",
    "~",
    "null",
    // Values of enumerated fields.
    "GET",
    "POST",
    "get",
    "json",
    "form",
    "xml",
    "eq",
    "not_eq",
    "regexp",
    "less",
    "more",
    "exists",
    "number",
    "string",
    "object",
    "array",
    "boolean",
    "success",
    "error",
    "@bitrix",
    "@",
    "12",
    "token",
    "http://127.0.0.1:1/x",
    "not a url",
    // Odd text.
    "",
    " ",
    "é",
    "💥",
    "\u{0}",
    "\u{feff}",
    "a: b",
    "- x",
    "# not a comment",
    "&anchor",
    "*alias",
    "!!binary aGk=",
    "!tag x",
    "? x",
    "%YAML 1.2",
    "---",
    "...",
];

/// A scalar for a YAML value: from the pools, a node id (a target), a number, or text.
fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(SCALARS).prop_map(str::to_string),
        3 => prop::sample::select(NODE_IDS).prop_map(str::to_string),
        1 => prop::sample::select(KINDS).prop_map(str::to_string),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|n| n.to_string()),
        1 => "[0-9]{20,400}",
        1 => ".{0,40}",
        1 => (1usize..20_000).prop_map(|n| "x".repeat(n)),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(KEYS).prop_map(str::to_string),
        2 => prop::sample::select(NODE_IDS).prop_map(str::to_string),
        1 => ".{0,12}",
    ]
}

/// A YAML document as a tree, to be written in block or flow style.
#[derive(Debug, Clone)]
enum Yaml {
    Scalar(String),
    Seq(Vec<Yaml>, Style),
    Map(Vec<(String, Yaml)>, Style),
    /// `*aN`: an alias, of an anchor written before or not.
    Alias(u8),
    /// `&aN value`.
    Anchor(u8, Box<Yaml>),
    /// `depth` levels of `{k: …}` or `[…]` around a scalar.
    Deep(usize, bool),
}

#[derive(Debug, Clone, Copy)]
enum Style {
    Block,
    Flow,
}

#[derive(Debug, Clone, Copy)]
enum Quote {
    Plain,
    Double,
    Single,
}

fn style() -> impl Strategy<Value = Style> {
    prop_oneof![3 => Just(Style::Block), 1 => Just(Style::Flow)]
}

fn value() -> impl Strategy<Value = Yaml> {
    let leaf = prop_oneof![
        10 => scalar().prop_map(Yaml::Scalar),
        1 => (0u8..4).prop_map(Yaml::Alias),
        1 => (1usize..600, any::<bool>()).prop_map(|(d, map)| Yaml::Deep(d, map)),
    ];
    leaf.prop_recursive(8, 96, 6, |inner| {
        prop_oneof![
            3 => (prop::collection::vec((key(), inner.clone()), 0..6), style())
                .prop_map(|(m, s)| Yaml::Map(m, s)),
            2 => (prop::collection::vec(inner.clone(), 0..6), style())
                .prop_map(|(v, s)| Yaml::Seq(v, s)),
            1 => (0u8..4, inner).prop_map(|(a, v)| Yaml::Anchor(a, Box::new(v))),
        ]
    })
}

/// A node: mostly a mapping with a `type` and fields of real nodes.
fn node() -> impl Strategy<Value = Yaml> {
    prop_oneof![
        8 => (
            prop::sample::select(KINDS),
            prop::collection::vec((key(), value()), 0..8),
            prop::option::of(prop::sample::select(NODE_IDS)),
            style(),
        )
            .prop_map(|(kind, fields, next, style)| {
                let mut map = vec![("type".to_string(), Yaml::Scalar(kind.to_string()))];
                if let Some(next) = next {
                    map.push(("next".into(), Yaml::Scalar(next.to_string())));
                }
                map.extend(fields);
                Yaml::Map(map, style)
            }),
        1 => value(),
    ]
}

/// A process file: the top keys, params and nodes, each sometimes missing or odd.
fn process_tree() -> impl Strategy<Value = Yaml> {
    let params = prop::collection::vec(
        (
            prop_oneof![
                ".{0,8}",
                prop::sample::select(KEYS).prop_map(str::to_string)
            ],
            value(),
        ),
        0..4,
    );
    let nodes = prop::collection::vec((prop::sample::select(NODE_IDS), node()), 0..8);
    (
        prop::option::of(scalar()),
        params,
        nodes,
        prop::collection::vec((key(), value()), 0..3),
        style(),
    )
        .prop_map(|(name, params, nodes, extra, style)| {
            let mut top = Vec::new();
            if let Some(name) = name {
                top.push(("process".to_string(), Yaml::Scalar(name)));
            }
            top.push(("params".into(), Yaml::Map(params, Style::Block)));
            // Most files start at `start`.
            let mut node_map = vec![(
                "start".to_string(),
                Yaml::Map(
                    vec![
                        ("type".into(), Yaml::Scalar("start".into())),
                        ("next".into(), Yaml::Scalar("n1".into())),
                    ],
                    Style::Flow,
                ),
            )];
            node_map.extend(nodes.into_iter().map(|(id, n)| (id.to_string(), n)));
            top.push(("nodes".into(), Yaml::Map(node_map, style)));
            top.extend(extra);
            Yaml::Map(top, Style::Block)
        })
}

/// Writes `yaml` as YAML text: block style indents, flow style nests in one line.
fn write(yaml: &Yaml, quote: Quote) -> String {
    let mut out = String::new();
    write_block(yaml, 0, quote, &mut out);
    out
}

fn scalar_text(text: &str, quote: Quote) -> String {
    match quote {
        // Plain when it reads back as itself is not our concern: odd plain scalars are
        // part of the fuzzing.
        Quote::Plain if !text.contains('\n') => text.to_string(),
        Quote::Single => format!("'{}'", text.replace('\'', "''").replace('\n', " ")),
        _ => serde_json::to_string(text).unwrap_or_default(),
    }
}

fn write_flow(yaml: &Yaml, quote: Quote, out: &mut String) {
    match yaml {
        Yaml::Scalar(s) => out.push_str(&scalar_text(s, quote)),
        Yaml::Seq(items, _) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_flow(item, quote, out);
            }
            out.push(']');
        }
        Yaml::Map(entries, _) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&scalar_text(k, quote));
                out.push_str(": ");
                write_flow(v, quote, out);
            }
            out.push('}');
        }
        Yaml::Alias(a) => out.push_str(&format!("*a{a}")),
        Yaml::Anchor(a, v) => {
            out.push_str(&format!("&a{a} "));
            write_flow(v, quote, out);
        }
        Yaml::Deep(depth, map) => {
            for _ in 0..*depth {
                out.push_str(if *map { "{k: " } else { "[" });
            }
            out.push('x');
            for _ in 0..*depth {
                out.push(if *map { '}' } else { ']' });
            }
        }
    }
}

fn write_block(yaml: &Yaml, indent: usize, quote: Quote, out: &mut String) {
    let pad = " ".repeat(indent);
    match yaml {
        Yaml::Map(entries, Style::Block) if !entries.is_empty() => {
            for (k, v) in entries {
                out.push_str(&pad);
                out.push_str(&scalar_text(k, quote));
                out.push(':');
                write_child(v, indent, quote, out);
            }
        }
        Yaml::Seq(items, Style::Block) if !items.is_empty() => {
            for item in items {
                out.push_str(&pad);
                out.push('-');
                write_child(item, indent, quote, out);
            }
        }
        Yaml::Deep(depth, true) if *depth < 300 => {
            // Block-style nesting, indented.
            for level in 0..*depth {
                out.push_str(&" ".repeat(indent + level));
                out.push_str("k:\n");
            }
            out.push_str(&" ".repeat(indent + depth));
            out.push_str("x\n");
        }
        other => {
            out.push_str(&pad);
            write_flow(other, quote, out);
            out.push('\n');
        }
    }
}

/// A value after `key:` or `-`.
fn write_child(yaml: &Yaml, indent: usize, quote: Quote, out: &mut String) {
    match yaml {
        Yaml::Map(entries, Style::Block) if !entries.is_empty() => {
            out.push('\n');
            write_block(yaml, indent + 2, quote, out);
        }
        Yaml::Seq(items, Style::Block) if !items.is_empty() => {
            out.push('\n');
            write_block(yaml, indent + 2, quote, out);
        }
        Yaml::Anchor(a, inner) if matches!(**inner, Yaml::Map(_, Style::Block)) => {
            out.push_str(&format!(" &a{a}\n"));
            write_block(inner, indent + 2, quote, out);
        }
        other => {
            out.push(' ');
            write_flow(other, quote, out);
            out.push('\n');
        }
    }
}

fn quote() -> impl Strategy<Value = Quote> {
    prop_oneof![3 => Just(Quote::Plain), 2 => Just(Quote::Double), 1 => Just(Quote::Single)]
}

/// Tokens of YAML and of process files, to be strung together at random.
fn yaml_token() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(KEYS).prop_map(|k| format!("{k}:")),
        2 => prop::sample::select(SCALARS).prop_map(str::to_string),
        1 => prop::sample::select(NODE_IDS).prop_map(str::to_string),
        1 => prop::sample::select(KINDS).prop_map(str::to_string),
        6 => prop::sample::select(&[
            "\n", "\n  ", "\n    ", "\n      ", " ", ": ", "- ", "-", "{", "}", "[", "]", ",",
            "&a ", "*a", "&b ", "*b", "<<: *a", "!!str ", "!!int ", "!!map ", "!!seq ",
            "!custom ", "|\n  ", ">-\n  ", "'", "\"", "#", "? ", "---\n", "...\n", "%TAG ! x\n",
            "\t", "\r\n", "\\", "\u{feff}", "\u{85}", "\u{2028}",
        ][..])
        .prop_map(str::to_string),
    ]
}

/// A real process file with a few edits: a cut, a copy of a piece elsewhere, a fragment
/// inserted, a line's indentation changed.
fn mutated_real_file() -> impl Strategy<Value = String> {
    (
        prop::sample::select(&REAL_FILES[..]),
        prop::collection::vec(
            (
                0u8..5,
                any::<prop::sample::Index>(),
                any::<prop::sample::Index>(),
                yaml_token(),
            ),
            1..6,
        ),
    )
        .prop_map(|(file, edits)| {
            let mut text: Vec<char> = file.chars().collect();
            for (kind, a, b, token) in edits {
                let len = text.len().max(1);
                let (mut from, mut to) = (a.index(len), b.index(len));
                if from > to {
                    std::mem::swap(&mut from, &mut to);
                }
                let to = to.min(text.len());
                let from = from.min(to);
                match kind {
                    0 => {
                        text.drain(from..to.min(from + 200));
                    }
                    1 => {
                        let piece: Vec<char> = text[from..to.min(from + 200)].to_vec();
                        let at = b.index(text.len() + 1);
                        text.splice(at..at, piece);
                    }
                    2 => {
                        text.splice(from..from, token.chars());
                    }
                    3 => {
                        // Indent or unindent the line at `from`.
                        let line_start = text[..from]
                            .iter()
                            .rposition(|c| *c == '\n')
                            .map_or(0, |i| i + 1);
                        if a.index(2) == 0 {
                            text.splice(line_start..line_start, "  ".chars());
                        } else if text.get(line_start) == Some(&' ') {
                            text.remove(line_start);
                        }
                    }
                    _ => {
                        // Replace a range with a token.
                        text.splice(from..to.min(from + 40), token.chars());
                    }
                }
            }
            text.into_iter().collect()
        })
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn fuzz_arbitrary_text(text in "(?s).{0,400}") {
        checks_cleanly(&text);
    }

    #[test]
    fn fuzz_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        checks_cleanly(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn fuzz_yaml_tokens(tokens in prop::collection::vec(yaml_token(), 0..80)) {
        checks_cleanly(&tokens.concat());
    }

    #[test]
    fn fuzz_structured_process(tree in process_tree(), quote in quote()) {
        checks_cleanly(&write(&tree, quote));
    }

    #[test]
    fn fuzz_structured_values(tree in value(), quote in quote()) {
        // Any document, and any value in place of the nodes.
        checks_cleanly(&write(&tree, quote));
        let mut text = String::from("process: p\nnodes:\n");
        write_block(&tree, 2, quote, &mut text);
        checks_cleanly(&text);
    }

    #[test]
    fn fuzz_mutated_real_files(text in mutated_real_file()) {
        checks_cleanly(&text);
    }
}

#[test]
fn the_generators_write_real_looking_files() {
    // A sanity check of the writer: a known tree reads back as a valid process.
    let tree = Yaml::Map(
        vec![
            ("process".into(), Yaml::Scalar("p".into())),
            (
                "nodes".into(),
                Yaml::Map(
                    vec![
                        (
                            "start".into(),
                            Yaml::Map(
                                vec![
                                    ("type".into(), Yaml::Scalar("start".into())),
                                    ("next".into(), Yaml::Scalar("done".into())),
                                ],
                                Style::Flow,
                            ),
                        ),
                        (
                            "done".into(),
                            Yaml::Anchor(
                                0,
                                Box::new(Yaml::Map(
                                    vec![("type".into(), Yaml::Scalar("final".into()))],
                                    Style::Block,
                                )),
                            ),
                        ),
                    ],
                    Style::Block,
                ),
            ),
        ],
        Style::Block,
    );
    for quote in [Quote::Plain, Quote::Double, Quote::Single] {
        let text = write(&tree, quote);
        let checked = check("gen.yaml", &text);
        assert!(
            checked.process.is_some(),
            "{text}\n{:?}",
            checked.diagnostics
        );
    }
    for file in REAL_FILES {
        checks_cleanly(file);
    }
}

// Crashers found by these targets, kept as named regression tests.

/// Found by `hostile_documents_are_refused_with_reasons` (and the `Deep` values of the
/// structured targets): yaml-rust2's `Parser::load`, used to find key positions,
/// recursed once per level, and a block mapping nested ~1000 deep overflowed the stack
/// (an abort, not a panic) before serde_yaml could refuse it.
#[test]
fn regression_deep_block_nesting_overflowed_the_stack() {
    let block: String = (0..5_000)
        .map(|i| format!("{}k:\n", " ".repeat(i)))
        .collect();
    let checked = check("deep.yaml", &block);
    let error = checked.errors().next().expect("refused");
    assert_eq!(
        error.message,
        "invalid YAML: nested more than 128 levels deep"
    );
    assert_eq!(error.line, Some(129));
}

/// Found while timing the hostile documents: libyaml (under serde_yaml) scans flow
/// mappings in time quadratic in their depth, and only then refuses the depth — 50,000
/// levels of `{k: ` (250 KB) took about 17 s. The depth is now refused first.
#[test]
fn regression_deep_flow_mappings_took_quadratic_time() {
    let started = std::time::Instant::now();
    let text = format!("{}x{}", "{k: ".repeat(50_000), "}".repeat(50_000));
    let checked = check("deep.yaml", &text);
    let error = checked.errors().next().expect("refused");
    assert!(
        error.message.contains("nested more than 128 levels deep"),
        "{error}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn nesting_up_to_the_limit_is_read_normally() {
    // 100 levels inside a node's `set`: deep but allowed; the file is checked as usual.
    let deep = format!("{}1{}", "{k: ".repeat(100), "}".repeat(100));
    let text = format!(
        "process: p\nnodes:\n  start: {{type: start, next: s}}\n  s: {{type: set_param, set: {{v: {deep}}}, next: done}}\n  done: {{type: final}}\n"
    );
    let checked = check("deep.yaml", &text);
    assert!(checked.process.is_some(), "{:?}", checked.diagnostics);
}

#[test]
fn hostile_documents_are_refused_with_reasons() {
    // A billion laughs: aliases of aliases, nine levels of ten.
    let mut laughs = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..9 {
        let p = i - 1;
        laughs.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    checks_cleanly(&laughs);
    checks_cleanly(&format!(
        "process: p\nnodes:\n  start: {{type: start, next: x}}\n{laughs}"
    ));
    // Nesting far deeper than any file: flow and block.
    checks_cleanly(&format!("{}x{}", "[".repeat(100_000), "]".repeat(100_000)));
    checks_cleanly(&format!("{}x{}", "{k: ".repeat(50_000), "}".repeat(50_000)));
    let block: String = (0..5_000)
        .map(|i| format!("{}k:\n", " ".repeat(i)))
        .collect();
    checks_cleanly(&block);
    // A node that is its own alias.
    checks_cleanly("process: p\nnodes:\n  start: &s {type: start, next: *s}\n");
    // Huge numbers where counts and sizes go.
    checks_cleanly(
        "process: p\nsettings: {max_steps: 99999999999999999999999}\nnodes:\n  start: {type: start, next: c}\n  c: {type: api_call, url: x, next: c, max_response_bytes: 1e999, concurrency: -1, success_codes: [99999], retry: {attempts: 18446744073709551616}}\n",
    );
}
