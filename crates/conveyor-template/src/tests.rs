use proptest::prelude::*;
use serde_json::{Value, json};

use crate::*;

fn env() -> MapEnv {
    let mut env = MapEnv {
        now_millis: 1_764_345_600_123, // 2025-11-28T16:00:00.123Z
        ..MapEnv::default()
    };
    env.root.insert(RootField::TaskId, json!("t-42"));
    env.root.insert(RootField::Ref, json!("token"));
    env.root.insert(RootField::ConvId, json!(7));
    env.counts.insert((None, "wait".into()), 3);
    env.counts.insert(
        (Some(ProcessId::Alias("bitrix".into())), "escalation".into()),
        2,
    );
    env.with_task(
        ProcessId::Alias("bitrix".into()),
        "token",
        json!({"access_token": "AT-1", "nested": {"list": [10, 20]}}),
    )
    .with_task(ProcessId::Id(12), "user_5", json!({"status": "active"}))
}

fn data() -> Value {
    json!({
        "portal": "corezoid",
        "a": {"b": [{"c": "deep"}, {"c": 2}]},
        "n": 42,
        "f": 1.5,
        "yes": true,
        "nothing": null,
        "obj": {"k": "v"},
        "list": [1, 2, 3],
        "dotted.key": "dot",
        "br[ack]et": "brackets",
        "userId": 5,
        "proc": "@bitrix",
        "num_text": "17",
        "json_obj": "{\"x\":1}",
        "json_arr": "[1,2]",
    })
}

fn render(text: &str) -> Result<Value, RenderError> {
    Template::parse(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .render(&data(), &env())
}

fn text(template: &str) -> String {
    match render(template) {
        Ok(Value::String(s)) => s,
        other => panic!("{template}: expected a string, got {other:?}"),
    }
}

fn parse_error(text: &str) -> ParseError {
    match Template::parse(text) {
        Ok(t) => panic!("{text}: expected an error, parsed {t:?}"),
        Err(e) => e,
    }
}

#[test]
fn literal_text_is_unchanged() {
    assert_eq!(text("plain text"), "plain text");
    assert_eq!(text(""), "");
    assert_eq!(
        text("$.store.book and { } and << >> and a }} b"),
        "$.store.book and { } and << >> and a }} b"
    );
    assert_eq!(Template::parse("abc").unwrap().as_literal(), Some("abc"));
}

#[test]
fn paths() {
    assert_eq!(
        text("https://{{portal}}.bitrix24.ru/"),
        "https://corezoid.bitrix24.ru/"
    );
    assert_eq!(text("{{ portal }}!"), "corezoid!");
    assert_eq!(text("x{{a.b[0].c}}"), "xdeep");
    assert_eq!(render("{{a.b[1].c}}"), Ok(json!(2)));
    assert_eq!(render("{{list[2]}}"), Ok(json!(3)));
    assert_eq!(render("{{list.1}}"), Ok(json!(2)));
    assert_eq!(render("{{a.b}}"), Ok(json!([{"c": "deep"}, {"c": 2}])));
}

#[test]
fn escaped_keys() {
    assert_eq!(render(r"{{dotted\.key}}"), Ok(json!("dot")));
    assert_eq!(render(r"{{br\[ack\]et}}"), Ok(json!("brackets")));
    let path = Path::parse(r"a\.b[3].c\\d").unwrap();
    assert_eq!(
        path.0,
        vec![
            Segment::Key("a.b".into()),
            Segment::Index(3),
            Segment::Key("c\\d".into())
        ]
    );
    assert_eq!(path.to_string(), r"a\.b[3].c\\d");
}

#[test]
fn whole_value_keeps_type_and_text_does_not() {
    assert_eq!(render("{{n}}"), Ok(json!(42)));
    assert_eq!(render("{{f}}"), Ok(json!(1.5)));
    assert_eq!(render("{{yes}}"), Ok(json!(true)));
    assert_eq!(render("{{obj}}"), Ok(json!({"k": "v"})));
    assert_eq!(render("{{nothing}}"), Ok(Value::Null));
    assert_eq!(render("n={{n}}"), Ok(json!("n=42")));
    assert_eq!(render("{{obj}} "), Ok(json!("{\"k\":\"v\"} ")));
    assert_eq!(render("[{{list}}]"), Ok(json!("[[1,2,3]]")));
    assert_eq!(render("<{{nothing}}>"), Ok(json!("<>")));
    assert_eq!(render("{{yes}}{{n}}"), Ok(json!("true42")));
}

#[test]
fn missing_keys_are_empty() {
    assert_eq!(render("a{{missing}}b"), Ok(json!("ab")));
    assert_eq!(render("{{missing}}"), Ok(json!("")));
    assert_eq!(render("{{a.b[9].c}}"), Ok(json!("")));
    assert_eq!(render("{{portal.deeper}}"), Ok(json!("")));
}

#[test]
fn root_values() {
    assert_eq!(render("{{root.task_id}}"), Ok(json!("t-42")));
    assert_eq!(render("{{root.conv_id}}"), Ok(json!(7)));
    assert_eq!(text("{{root.ref}}/{{root.conv_id}}"), "token/7");
    assert_eq!(render("{{root.node_id}}"), Ok(Value::Null));
    let e = parse_error("{{root.nope}}");
    assert!(
        e.message.contains("unknown system value `root.nope`"),
        "{e}"
    );
    // A task key called `root` is still reachable on its own.
    assert_eq!(render("{{root}}"), Ok(json!("")));
}

#[test]
fn conv_references_both_forms() {
    assert_eq!(
        text("auth={{conv[@bitrix].ref[token].access_token}}"),
        "auth=AT-1"
    );
    assert_eq!(
        text("auth=<<conv[@bitrix].ref[token].access_token>>"),
        "auth=AT-1"
    );
    assert_eq!(
        Template::parse("{{conv[@bitrix].ref[token].access_token}}"),
        Template::parse("<<conv[@bitrix].ref[token].access_token>>")
    );
    assert_eq!(
        render("{{conv[@bitrix].ref[token].nested.list[1]}}"),
        Ok(json!(20))
    );
    assert_eq!(
        render("<<conv[@bitrix].ref[token].nested>>"),
        Ok(json!({"list": [10, 20]}))
    );
    assert_eq!(
        render("{{conv[@bitrix].ref[token]}}"),
        Ok(json!({"access_token": "AT-1", "nested": {"list": [10, 20]}}))
    );
    assert_eq!(
        render("{{conv[12].ref[user_5].status}}"),
        Ok(json!("active"))
    );
}

#[test]
fn nested_templates_in_ref_and_process() {
    assert_eq!(
        render("{{conv[12].ref[user_{{userId}}].status}}"),
        Ok(json!("active"))
    );
    assert_eq!(
        render("<<conv[12].ref[user_{{userId}}].status>>"),
        Ok(json!("active"))
    );
    assert_eq!(
        render("{{conv[{{proc}}].ref[token].access_token}}"),
        Ok(json!("AT-1"))
    );
    let t = Template::parse("{{conv[12].ref[{{userId}}].status}}").unwrap();
    assert_eq!(t.task_keys(), vec!["userId"]);
}

#[test]
fn unresolvable_references_are_errors_naming_process_and_ref() {
    let e = render("{{conv[@bitrix].ref[nope].access_token}}").unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot read conv[@bitrix].ref[nope]: no task with ref `nope` in process @bitrix"
    );
    let e = render("x{{conv[99].ref[token].a}}").unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot read conv[99].ref[token]: process 99 does not exist"
    );
    let e = render("{{conv[@bitrix].ref[token].refresh_token}}").unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot read conv[@bitrix].ref[token]: the task has no key `refresh_token`"
    );
    let e = render("{{conv[{{portal}}].ref[token].a}}").unwrap_err();
    assert_eq!(
        e,
        RenderError::Process {
            text: "corezoid".into()
        }
    );
}

#[test]
fn node_counters() {
    assert_eq!(render("{{node[wait].count}}"), Ok(json!(3)));
    assert_eq!(
        render("{{conv[@bitrix].node[escalation].count}}"),
        Ok(json!(2))
    );
    assert!(render("{{node[other].count}}").is_err());
}

#[test]
fn function_math() {
    assert_eq!(render("$.math({{n}} + 8)"), Ok(json!(50)));
    assert_eq!(render("$.math(({{n}} - 2) / 8)"), Ok(json!(5)));
    assert_eq!(render("$.math({{f}} * 3)"), Ok(json!(4.5)));
    assert_eq!(render("total: $.math(1+1)"), Ok(json!("total: 2")));
    assert!(matches!(
        render("$.math({{n}} / 0)"),
        Err(RenderError::Function {
            function: "math",
            ..
        })
    ));
    assert!(render("$.math({{portal}} + 1)").is_err());
}

#[test]
fn functions_time_and_random() {
    assert_eq!(render("$.unixtime()"), Ok(json!(1_764_345_600)));
    assert_eq!(render("$.unixtime(ms)"), Ok(json!(1_764_345_600_123_i64)));
    assert!(render("$.unixtime(years)").is_err());
    assert_eq!(render("$.date(%Y-%m-%d)"), Ok(json!("2025-11-28")));
    assert_eq!(render("$.date(%H:%M)"), Ok(json!("16:00")));
    assert_eq!(render("$.date()"), Ok(json!("2025-11-28T16:00:00Z")));
    assert!(render("$.date(%Q)").is_err());
    let env = env();
    let t = Template::parse("$.random(10)").unwrap();
    for _ in 0..100 {
        let v = t.render(&data(), &env).unwrap().as_u64().unwrap();
        assert!(v < 10);
    }
    assert!(render("$.random(0)").is_err());
    assert!(render("$.random(x)").is_err());
}

#[test]
fn functions_hashes_and_encoding() {
    assert_eq!(
        render("$.sha1_hex(abc)"),
        Ok(json!("a9993e364706816aba3e25717850c26c9cd0d89d"))
    );
    assert_eq!(
        render("$.md5_hex({{portal}})"),
        Ok(json!(format!("{:x}", md5::Md5::digest(b"corezoid"))))
    );
    assert_eq!(
        render("$.md5_hex()"),
        Ok(json!("d41d8cd98f00b204e9800998ecf8427e"))
    );
    assert_eq!(
        render("$.base64_encode(user:pass)"),
        Ok(json!("dXNlcjpwYXNz"))
    );
    assert_eq!(
        render("Basic $.base64_encode({{portal}}:x)"),
        Ok(json!("Basic Y29yZXpvaWQ6eA=="))
    );
}

use md5::Digest as _;

#[test]
fn functions_casts() {
    assert_eq!(render("$.to_number({{num_text}})"), Ok(json!(17)));
    assert_eq!(render("$.to_number({{n}})"), Ok(json!(42)));
    assert_eq!(render("$.to_number(2.5)"), Ok(json!(2.5)));
    assert!(render("$.to_number({{portal}})").is_err());
    assert_eq!(render("$.to_string({{n}})"), Ok(json!("42")));
    assert_eq!(render("$.to_string({{obj}})"), Ok(json!("{\"k\":\"v\"}")));
    assert_eq!(render("$.to_object({{json_obj}})"), Ok(json!({"x": 1})));
    assert_eq!(render("$.to_object({{obj}})"), Ok(json!({"k": "v"})));
    assert!(render("$.to_object({{json_arr}})").is_err());
    assert_eq!(render("$.to_array({{json_arr}})"), Ok(json!([1, 2])));
    assert_eq!(render("$.to_array({{list}})"), Ok(json!([1, 2, 3])));
    assert!(render("$.to_array({{n}})").is_err());
}

#[test]
fn nested_functions() {
    assert_eq!(
        render("$.sha1_hex($.to_string($.math(1+1)))"),
        Ok(json!("da4b9237bacccdf19c0760cab7aec4a8359010b0"))
    );
    assert_eq!(render("$.math(($.math(2*3)) + 1)"), Ok(json!(7)));
}

#[test]
fn syntax_errors_say_where() {
    let e = parse_error("abc {{portal");
    assert_eq!(e.column, 5);
    assert!(e.message.contains("unclosed `{{`"), "{e}");
    assert!(parse_error("{{}}").message.contains("empty expression"));
    assert!(parse_error("{{ a..b }}").message.contains("empty key"));
    assert!(parse_error("{{a[x]}}").message.contains("array index"));
    assert!(
        parse_error("{{conv[abc].ref[x].y}}")
            .message
            .contains("process id")
    );
    assert!(parse_error("{{conv[1].x}}").message.contains("`.ref[…]`"));
    assert!(
        parse_error("{{conv[1].ref[x}}")
            .message
            .contains("unclosed `[`")
    );
    // `<<` opens a reference only before `conv[`; elsewhere it is text.
    assert_eq!(text("<<portal>>"), "<<portal>>");
    assert!(
        parse_error("$.nope(1)")
            .message
            .contains("unknown function `$.nope`")
    );
    assert!(parse_error("$.math(1 + 2").message.contains("unclosed `(`"));
    assert!(parse_error("{{node[].count}}").message.contains("empty"));
}

#[test]
fn task_keys_are_collected_everywhere() {
    let t = Template::parse("{{a.b}}-$.math({{c}}+1)-{{conv[{{p}}].ref[{{r}}].x}}-{{root.ref}}")
        .unwrap();
    assert_eq!(t.task_keys(), vec!["a", "c", "p", "r"]);
}

/// `default` cases per property, no regressions file (crashers become named tests).
/// proptest lets `PROPTEST_CASES` override the count: a long run is
/// `PROPTEST_CASES=200000 cargo test --release -p conveyor-template`.
fn config(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: default,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,80}") {
        if let Ok(t) = Template::parse(&text) {
            let _ = t.render(&data(), &env());
        }
    }

    #[test]
    fn template_like_text_never_panics(text in r"(\{\{|\}\}|<<|>>|conv\[|ref\[|node\[|\]|\[|\.|\$\.(math|date|random|to_number)\(|\)|@|[a-z0-9 \\{}])*") {
        if let Ok(t) = Template::parse(&text) {
            let _ = t.render(&data(), &env());
        }
    }

    #[test]
    fn text_without_syntax_is_literal(text in "[^{<$]{0,60}") {
        let t = Template::parse(&text).unwrap();
        prop_assert_eq!(t.render(&data(), &env()).unwrap(), Value::String(text.clone()));
    }

    #[test]
    fn a_rendered_key_reads_back_its_value(key in "[a-z_][a-z0-9_]{0,10}", value in any::<i64>()) {
        let data = json!({ key.clone(): value });
        let t = Template::parse(&format!("{{{{{key}}}}}")).unwrap();
        prop_assert_eq!(t.render(&data, &MapEnv::default()).unwrap(), json!(value));
        let t = Template::parse(&format!("<{{{{{key}}}}}>")).unwrap();
        prop_assert_eq!(t.render(&data, &MapEnv::default()).unwrap(), json!(format!("<{value}>")));
    }

    #[test]
    fn math_agrees_with_integer_arithmetic(a in -1_000_000i64..1_000_000, b in -1_000_000i64..1_000_000) {
        let data = json!({"a": a, "b": b});
        let t = Template::parse("$.math({{a}} * 2 + {{b}} - ({{a}} - {{b}}))").unwrap();
        prop_assert_eq!(t.render(&data, &MapEnv::default()).unwrap(), json!(a + 2 * b));
    }
}

#[test]
fn value_templates_render_every_leaf_and_keep_types() {
    let source = json!({"grant_type": "refresh_token", "n": "{{n}}", "list": ["{{portal}}", 3, null], "nested": {"t": "x{{n}}"}});
    let template = ValueTemplate::parse(&source).unwrap();
    assert_eq!(
        template.render(&data(), &env()).unwrap(),
        json!({"grant_type": "refresh_token", "n": 42, "list": ["corezoid", 3, null], "nested": {"t": "x42"}})
    );
    let errors = ValueTemplate::parse(&json!({"a": "{{x", "b": ["ok", "{{}}"]})).unwrap_err();
    let pointers: Vec<_> = errors.iter().map(|e| e.pointer.as_str()).collect();
    assert_eq!(pointers, vec!["/a", "/b/1"]);
}

#[test]
fn spaces_around_separators_are_not_part_of_keys() {
    assert_eq!(render("{{ obj . k }}"), Ok(json!("v")));
    assert_eq!(
        render("$.math(1 + é)").unwrap_err().to_string(),
        "$.math: unexpected `é`"
    );
}

// ---------------------------------------------------------------------------------------
// Deeper fuzzing: templates nested up to (and past) the depth limit, and 1 MB templates.

/// One level of nesting around a template `x`: a function call, a reference whose ref or
/// process is `x`, a math expression, a counter of a dynamic process.
fn wrap(kind: u8, inner: &str) -> String {
    match kind % 7 {
        0 => format!("$.to_string({inner})"),
        1 => format!("{{{{conv[@bitrix].ref[{inner}].access_token}}}}"),
        2 => format!("{{{{conv[{inner}].ref[token].nested.list[1]}}}}"),
        3 => format!("$.math(({inner}) + 1)"),
        4 => format!("<<conv[12].ref[user_{inner}].status>>"),
        5 => format!("$.sha1_hex({inner})"),
        _ => format!("{{{{conv[{inner}].node[escalation].count}}}}"),
    }
}

/// Fragments that parse on their own, to build big templates from.
const FRAGMENTS: &[&str] = &[
    "plain text ",
    "{{portal}}",
    "{{a.b[0].c}}",
    "{{ obj . k }}",
    "{{conv[@bitrix].ref[token].access_token}}",
    "<<conv[{{proc}}].ref[token].nested.list[0]>>",
    "{{conv[12].ref[user_{{userId}}].status}}",
    "{{node[wait].count}}",
    "{{root.task_id}}",
    "$.math({{n}} * 2 + 1)",
    "$.sha1_hex({{portal}})",
    "$.to_string($.math(1+1))",
    "[1] (2) <3> $.x {4}",
    "é💥 ",
    "\n",
];

/// A fragment that may be broken: a fragment, or syntax cut anywhere.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(FRAGMENTS).prop_map(str::to_string),
        1 => prop::sample::select(&[
            "{{", "}}", "<<conv[", ">>", "conv[", "].ref[", "]", "[", "(", ")", "$.math(",
            "$.to_string(", "$.nope(", "\\", ".", "@", "{{conv[", "{{node[", "{{root.",
        ][..])
        .prop_map(str::to_string),
    ]
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn fuzz_nesting_up_to_the_depth_limit_parses_and_past_it_is_refused(
        kinds in prop::collection::vec(any::<u8>(), 0..40),
        // An expression (not a literal), so that `conv[…]` around it is a dynamic process.
        base in prop::sample::select(vec!["{{portal}}", "{{proc}}", "{{ userId }}"]),
    ) {
        let mut text = base.to_string();
        for kind in &kinds {
            text = wrap(*kind, &text);
        }
        match Template::parse(&text) {
            Ok(template) => {
                // The top level is one; each wrapper nests one more template.
                prop_assert!(kinds.len() < 32, "{} levels parsed: {}", kinds.len(), text);
                let _ = template.render(&data(), &env());
                let _ = template.task_keys();
            }
            Err(e) => {
                prop_assert!(kinds.len() >= 32, "{} levels refused: {} ({})", kinds.len(), e, text);
                prop_assert!(e.message.contains("nested more than 32 deep"), "{}", e);
            }
        }
    }

    #[test]
    fn fuzz_deep_math_and_brackets_never_panic(
        depth in 0usize..5_000,
        open in prop::sample::select(vec!["(", "[", "-", "$.math(", "$.to_string(", "{{conv[", "<<conv["]),
        close in prop::sample::select(vec![")", "]", "", "}}", ">>"]),
    ) {
        let text = format!("$.math({}1{})", open.repeat(depth), close.repeat(depth));
        if let Ok(t) = Template::parse(&text) {
            let _ = t.render(&data(), &env());
        }
        let text = format!("{}x{}", open.repeat(depth), close.repeat(depth));
        if let Ok(t) = Template::parse(&text) {
            let _ = t.render(&data(), &env());
        }
    }

    #[test]
    fn fuzz_token_soup_never_panics(tokens in prop::collection::vec(token(), 0..200)) {
        let text = tokens.concat();
        if let Ok(t) = Template::parse(&text) {
            let _ = t.render(&data(), &env());
            let _ = t.task_keys();
        }
    }
}

/// Runs `test` on values of `strategy` with a megabyte-sized input per case: 4 cases, or
/// `PROPTEST_CASES / 1000` (run outside the `proptest!` macro, which would apply
/// `PROPTEST_CASES` as it is), with a bounded search for a smaller failing case.
fn run_big<S: Strategy>(strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse::<u32>().ok())
        .map_or(4, |c| (c / 1000).max(1));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        max_shrink_time: 60_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

fn megabyte_of(unit: &str) -> String {
    unit.repeat((1 << 20) / unit.len().max(1) + 1)
}

#[test]
fn fuzz_a_1_mb_template_parses_and_renders_in_linear_time() {
    run_big(
        prop::collection::vec(prop::sample::select(FRAGMENTS), 64..256),
        |picks| {
            let text = megabyte_of(&picks.concat());
            let started = std::time::Instant::now();
            let template = Template::parse(&text)
                .map_err(|e| TestCaseError::fail(format!("fragments that parse alone: {e}")))?;
            match template.render(&data(), &env()) {
                Ok(rendered) => prop_assert!(rendered.as_str().is_some_and(|s| !s.is_empty())),
                // What grows when rendered (a hash of a shorter key) may pass the limit.
                Err(RenderError::TooLarge { .. }) => {}
                Err(e) => prop_assert!(false, "{}", e),
            }
            prop_assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "{:?}",
                started.elapsed()
            );
            Ok(())
        },
    );
}

#[test]
fn fuzz_a_1_mb_token_soup_never_panics() {
    run_big(prop::collection::vec(token(), 64..256), |tokens| {
        if let Ok(t) = Template::parse(&megabyte_of(&tokens.concat())) {
            let _ = t.render(&data(), &env());
        }
        Ok(())
    });
}
