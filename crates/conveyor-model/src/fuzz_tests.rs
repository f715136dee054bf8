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

/// `default` cases per target; proptest takes `PROPTEST_CASES` over it.
fn config(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: default,
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
    "sum",
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
    /// Plain where YAML reads the text back as itself, else double-quoted.
    Plain,
    Double,
    /// Single-quoted where it can be, else double-quoted.
    Single,
    /// Plain whatever the text: odd plain scalars are part of the fuzzing.
    Raw,
}

fn style() -> impl Strategy<Value = Style> {
    prop_oneof![3 => Just(Style::Block), 1 => Just(Style::Flow)]
}

fn value() -> impl Strategy<Value = Yaml> {
    let leaf = prop_oneof![
        200 => scalar().prop_map(Yaml::Scalar),
        1 => (0u8..4).prop_map(Yaml::Alias),
        // Mostly within serde_yaml's limit of 128 levels, sometimes past it.
        2 => (1usize..100, any::<bool>()).prop_map(|(d, map)| Yaml::Deep(d, map)),
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

/// The fields each node kind has (besides `type`, `title`, `description`, `timeout`).
/// (The tree always has its start node; a second one comes from `node()`.)
const FIELDS: &[(&str, &[&str])] = &[
    ("final", &["status"]),
    ("condition", &["branches", "else", "on_error"]),
    ("set_param", &["set", "cast", "next", "on_error"]),
    ("delay", &["for", "until", "next", "on_error"]),
    (
        "api_call",
        &[
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
            "idempotency_key",
            "idempotency_header",
            "concurrency",
            "max_response_bytes",
            "next",
            "on_error",
        ],
    ),
    ("escalation", &["copy", "next", "on_error"]),
    ("copy_task", &["process", "ref", "data", "next", "on_error"]),
    (
        "modify_task",
        &["process", "ref", "data", "next", "on_error"],
    ),
    ("sum", &["process", "ref", "add", "next", "on_error"]),
    ("call_process", &["process", "data", "next", "on_error"]),
    ("reply", &["data", "error", "next", "on_error"]),
    ("wait_callback", &["next"]),
];

fn pick(pool: &'static [&'static str]) -> BoxedStrategy<Yaml> {
    prop::sample::select(pool)
        .prop_map(|s| Yaml::Scalar(s.to_string()))
        .boxed()
}

fn target() -> BoxedStrategy<Yaml> {
    prop_oneof![
        10 => pick(&["n1", "n2", "n3", "done", "failed", "call", "wait", "check"]),
        1 => pick(NODE_IDS),
    ]
    .boxed()
}

/// A map of param-like keys to templates (a `set`, a `query`, a `response`, `data`…).
fn template_map() -> BoxedStrategy<Yaml> {
    (
        prop::collection::vec(
            (
                prop::sample::select(&["a", "b", "code", "token", "n", "x.y", "list[0]"][..]),
                prop_oneof![4 => pick(SCALARS), 1 => value().boxed()],
            ),
            0..4,
        ),
        style(),
    )
        .prop_map(|(m, style)| {
            Yaml::Map(
                m.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                style,
            )
        })
        .boxed()
}

/// A plausible value for `field` of a node, now and then anything.
fn field_value(field: &'static str) -> BoxedStrategy<Yaml> {
    let plausible = match field {
        "next" | "on_error" | "else" => target(),
        "status" => pick(&["success", "error", "failed"]),
        "branches" => prop::collection::vec(
            (
                prop::option::of(pick(SCALARS)),
                prop::collection::vec(
                    (
                        pick(&["a", "b.c", "list[0]", "code", "", "a..b", "{{a}}"]),
                        pick(&[
                            "eq",
                            "not_eq",
                            "more",
                            "less",
                            "more_or_eq",
                            "less_or_eq",
                            "regexp",
                            "like",
                        ]),
                        pick(SCALARS),
                        prop::option::of(pick(&[
                            "string", "number", "boolean", "object", "array", "date",
                        ])),
                    ),
                    1..3,
                ),
                target(),
            )
                .prop_map(|(label, when, next)| {
                    let mut branch = Vec::new();
                    if let Some(label) = label {
                        branch.push(("label".to_string(), label));
                    }
                    let checks = when
                        .into_iter()
                        .map(|(param, op, value, cast)| {
                            let mut check = vec![
                                ("param".to_string(), param),
                                ("fn".to_string(), op),
                                ("value".to_string(), value),
                            ];
                            if let Some(cast) = cast {
                                check.push(("cast".to_string(), cast));
                            }
                            Yaml::Map(check, Style::Flow)
                        })
                        .collect();
                    branch.push(("when".to_string(), Yaml::Seq(checks, Style::Block)));
                    branch.push(("next".to_string(), next));
                    Yaml::Map(branch, Style::Block)
                }),
            1..4,
        )
        .prop_map(|b| Yaml::Seq(b, Style::Block))
        .boxed(),
        "set" | "query" | "headers" | "response" | "data" | "body" => template_map(),
        "cast" => prop::collection::vec(
            (
                prop::sample::select(&["a", "b", "code"][..]),
                pick(&["string", "number", "boolean", "object", "array", "date"]),
            ),
            0..3,
        )
        .prop_map(|m| {
            Yaml::Map(
                m.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                Style::Flow,
            )
        })
        .boxed(),
        "method" => pick(&[
            "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "get", "TRACE",
        ]),
        "format" => pick(&["json", "form", "xml"]),
        "success_codes" => prop::collection::vec(
            prop_oneof![
                (100u32..600).prop_map(|c| Yaml::Scalar(c.to_string())),
                pick(&["0", "99999", "-1", "2xx"]),
            ],
            0..4,
        )
        .prop_map(|c| Yaml::Seq(c, Style::Flow))
        .boxed(),
        "retry" => (pick(SCALARS), pick(SCALARS), pick(SCALARS), 0u8..8)
            .prop_map(|(attempts, backoff, max, which)| {
                let mut retry = Vec::new();
                if which & 1 == 0 {
                    retry.push(("attempts".to_string(), attempts));
                }
                if which & 2 == 0 {
                    retry.push(("backoff".to_string(), backoff));
                }
                if which & 4 == 0 {
                    retry.push(("max".to_string(), max));
                }
                Yaml::Map(retry, Style::Flow)
            })
            .boxed(),
        "copy" => prop::collection::vec(
            (
                pick(SCALARS),
                prop::option::of(pick(SCALARS)),
                template_map(),
            )
                .prop_map(|(process, reference, data)| {
                    let mut copy = vec![("process".to_string(), process)];
                    if let Some(r) = reference {
                        copy.push(("ref".to_string(), r));
                    }
                    copy.push(("data".to_string(), data));
                    Yaml::Map(copy, Style::Block)
                }),
            0..3,
        )
        .prop_map(|c| Yaml::Seq(c, Style::Block))
        .boxed(),
        _ => pick(SCALARS),
    };
    prop_oneof![30 => plausible, 1 => value().boxed()].boxed()
}

/// A node of a real kind with some of that kind's fields (its `next` most of the time),
/// sometimes a time limit, a title, or a field it does not have.
fn real_node() -> impl Strategy<Value = Yaml> {
    (
        prop::sample::select(FIELDS),
        any::<prop::sample::Index>(),
        prop::option::weighted(0.2, (pick(SCALARS), target())),
        prop::option::weighted(0.05, key()),
        style(),
    )
        .prop_flat_map(|((kind, fields), subset, limit, stray, style)| {
            // Each field in or out, from the bits of `subset`; the ones a kind needs
            // are in 31 times out of 32.
            let bits = subset.index(usize::MAX);
            let chosen: Vec<&'static str> = fields
                .iter()
                .enumerate()
                .filter(|(i, f)| {
                    matches!(
                        **f,
                        "next"
                            | "url"
                            | "branches"
                            | "else"
                            | "set"
                            | "process"
                            | "ref"
                            | "data"
                            | "for"
                    ) && bits & 0b11111 != 0
                        || (bits >> (2 * i + 5)) & 0b11 == 0b11
                })
                .map(|(_, f)| *f)
                .collect();
            let values: Vec<BoxedStrategy<(String, Yaml)>> = chosen
                .into_iter()
                .map(|f| field_value(f).prop_map(move |v| (f.to_string(), v)).boxed())
                .collect();
            (values, Just((kind, limit, stray, style)))
        })
        .prop_map(|(fields, (kind, limit, stray, style))| {
            let mut map = vec![("type".to_string(), Yaml::Scalar(kind.to_string()))];
            map.extend(fields);
            if let Some((after, to)) = limit {
                let to = match to {
                    Yaml::Scalar(t) => t,
                    _ => String::new(),
                };
                let after = match after {
                    Yaml::Scalar(a) => a,
                    _ => String::new(),
                };
                map.push(("timeout".into(), Yaml::Scalar(format!("{after} -> {to}"))));
            }
            if let Some(stray) = stray {
                map.push((stray, Yaml::Scalar("x".into())));
            }
            Yaml::Map(map, style)
        })
}

/// A process file: the top keys, params and nodes, each sometimes missing or odd.
/// A param declaration: mostly its real fields with plausible values.
fn param_spec() -> impl Strategy<Value = Yaml> {
    prop_oneof![
        6 => (
            prop::option::of(prop_oneof![9 => pick(&["true", "false"]), 1 => pick(&["yes", "1"])]),
            prop::option::of(pick(SCALARS)),
            prop::option::of(pick(SCALARS)),
            prop::option::of(pick(&["true", "false"])),
            prop::option::of(pick(SCALARS)),
            style(),
        )
            .prop_map(|(required, default, pattern, secret, description, style)| {
                let fields = [
                    ("required", required),
                    ("default", default),
                    ("pattern", pattern),
                    ("secret", secret),
                    ("description", description),
                ];
                Yaml::Map(
                    fields
                        .into_iter()
                        .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
                        .collect(),
                    style,
                )
            }),
        1 => value(),
    ]
}

/// A process file: the top keys, params and nodes, each sometimes missing or odd.
fn process_tree() -> impl Strategy<Value = Yaml> {
    // Names mostly distinct (serde_yaml refuses a duplicate key), sometimes odd.
    let params = (
        prop::sample::subsequence(vec!["a", "b", "code", "token", "n", "portal"], 0..4),
        prop::option::weighted(
            0.1,
            prop_oneof![
                ".{0,8}",
                prop::sample::select(KEYS).prop_map(str::to_string)
            ],
        ),
    )
        .prop_flat_map(|(names, odd)| {
            let names: Vec<String> = names.into_iter().map(str::to_string).chain(odd).collect();
            let specs = prop::collection::vec(param_spec(), names.len());
            (Just(names), specs)
        })
        .prop_map(|(names, specs)| names.into_iter().zip(specs).collect::<Vec<_>>());
    let nodes = (
        prop::sample::subsequence(
            vec!["n1", "n2", "n3", "done", "failed", "call", "wait", "check"],
            1..8,
        )
        .prop_shuffle(),
        prop::option::weighted(0.05, prop::sample::select(NODE_IDS)),
    )
        .prop_flat_map(|(ids, odd)| {
            let ids: Vec<&'static str> = ids.into_iter().chain(odd).collect();
            let nodes = prop::collection::vec(
                prop_oneof![12 => real_node().boxed(), 1 => node().boxed()],
                ids.len(),
            );
            (Just(ids), nodes)
        })
        .prop_map(|(ids, nodes)| ids.into_iter().zip(nodes).collect::<Vec<_>>());
    (
        prop::option::weighted(
            0.95,
            prop_oneof![9 => pick(&["p", "bitrix_oauth", "a-b_1"]), 1 => pick(SCALARS)],
        ),
        params,
        nodes,
        prop::option::weighted(0.05, (key(), value())),
        style(),
    )
        .prop_map(|(name, params, nodes, extra, style)| {
            let mut top = Vec::new();
            if let Some(name) = name {
                top.push(("process".to_string(), name));
            }
            top.push(("params".into(), Yaml::Map(params, Style::Block)));
            // Most files start at `start`, which leads to the first node written.
            let first = nodes.first().map_or("n1", |(id, _)| *id).to_string();
            let mut node_map = vec![(
                "start".to_string(),
                Yaml::Map(
                    vec![
                        ("type".into(), Yaml::Scalar("start".into())),
                        ("next".into(), Yaml::Scalar(first)),
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

/// A process graph: `n` nodes of kinds whose contents are valid, wired at random to
/// each other (and now and then to a node that does not exist), so that the graph checks
/// run: the start, dangling targets, reachability, cycles with and without a waiting
/// node, time limits.
fn random_graph() -> impl Strategy<Value = String> {
    (2usize..12).prop_flat_map(|n| {
        let target = prop_oneof![
            40 => (0..n).prop_map(|i| format!("n{i}")),
            1 => Just("nowhere".to_string()),
            1 => Just("start".to_string()),
        ];
        let node = (0u8..11, target.clone(), target.clone(), any::<bool>());
        (prop::collection::vec(node, n), target, any::<bool>())
    })
    .prop_map(|(nodes, first, declare)| {
        let mut text = String::from("process: graph\n");
        if declare {
            text.push_str("params:\n  a: {}\n  b: { default: 1 }\n");
        }
        text.push_str(&format!("nodes:\n  start: {{ type: start, next: {first} }}\n"));
        for (i, (kind, t1, t2, flag)) in nodes.into_iter().enumerate() {
            let limit = if flag { format!(", timeout: \"10s -> {t2}\"") } else { String::new() };
            let body = match kind {
                0 => "type: final".to_string(),
                1 => "type: final, status: error".to_string(),
                2 => format!("type: set_param, set: {{ x: \"{{{{a}}}}-{{{{b}}}}\" }}, next: {t1}"),
                3 => format!("type: delay, for: 30s, next: {t1}"),
                4 => format!("type: wait_callback, next: {t1}{limit}"),
                5 => format!(
                    "type: condition, branches: [ {{ when: [ {{ param: a, fn: eq, value: 1 }} ], next: {t1} }} ], else: {t2}"
                ),
                6 => format!("type: api_call, url: \"http://127.0.0.1:1/{{{{a}}}}\", next: {t1}, on_error: {t2}"),
                7 => format!("type: escalation, next: {t1}{limit}"),
                8 => format!("type: call_process, process: \"@other\", next: {t1}"),
                9 => format!("type: copy_task, process: \"@other\", data: {{ a: 1 }}, next: {t1}"),
                _ => format!("type: modify_task, process: \"@other\", ref: r, data: {{ a: 1 }}, next: {t1}, on_error: {t2}"),
            };
            text.push_str(&format!("  n{i}: {{ {body} }}\n"));
        }
        text
    })
}

/// Writes `yaml` as YAML text: block style indents, flow style nests in one line.
fn write(yaml: &Yaml, quote: Quote) -> String {
    let mut out = String::new();
    write_block(yaml, 0, quote, &mut out);
    out
}

fn scalar_text(text: &str, quote: Quote) -> String {
    let printable = !text.chars().any(|c| c.is_control() || c == '\u{feff}');
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_alphanumeric() || " _-.@/$()%+".contains(c))
        && !text.starts_with([' ', '-', '@', '%'])
        && !text.ends_with(' ');
    match quote {
        Quote::Raw if !text.contains('\n') => text.to_string(),
        Quote::Plain if plain => text.to_string(),
        Quote::Single if printable => format!("'{}'", text.replace('\'', "''")),
        _ => double_quoted(text),
    }
}

/// A YAML double-quoted scalar: every character that is not printable as it is escaped.
fn double_quoted(text: &str) -> String {
    let mut out = String::from('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() || matches!(c, '\u{feff}' | '\u{2028}' | '\u{2029}') => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
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
    prop_oneof![
        4 => Just(Quote::Plain),
        2 => Just(Quote::Double),
        1 => Just(Quote::Single),
        1 => Just(Quote::Raw),
    ]
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

    #[test]
    fn fuzz_random_graphs(text in random_graph()) {
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
/// levels of `{k: ` (250 KB) took 30 s in a release build (10,000: 0.8 s). The depth is
/// now refused first, by the linear event parser, in 0.1 ms.
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
