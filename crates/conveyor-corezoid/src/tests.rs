//! The importer over the Corezoid samples in `tests/corezoid/` (MIT, Corezoid; see the
//! SOURCES.md beside them), over exports of our own, and over arbitrary JSON.

use std::path::PathBuf;

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::{Export, ImportError, import, import_path};

fn sample(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/corezoid")
        .join(name)
}

fn checked(yaml: &str, name: &str) -> conveyor_model::Process {
    let checked = conveyor_model::check(name, yaml);
    let errors: Vec<String> = checked.errors().map(|d| d.to_string()).collect();
    assert!(errors.is_empty(), "{name}:\n{yaml}\n{errors:#?}");
    checked.process.expect("a process")
}

#[test]
fn every_sample_imports_and_passes_the_check() {
    for name in [
        "00_envelope_obj_scheme_get_example.json",
        "01_stripe-checkout.conv.json",
        "02_user-status-state-diagram.conv.json",
        "03_user-status-driver-process.conv.json",
        "06_stubbed-api-rpc.conv.json",
        "10_own_queue_and_new_logics.json",
        "11_own_save_task.json",
        "12_own_api_options.json",
        "13_own_dynamic_timer.json",
        "14_own_cross_process_count.json",
        "15_own_conditions_and_methods.json",
        "16_own_queue_data_and_capacity.json",
    ] {
        let import = import_path(&sample(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        // Every logic of the samples maps: no `--allow-partial` needed (the Stripe
        // sample's raw `api` and its Sum included).
        assert!(import.unmapped.is_empty(), "{name}: {:?}", import.unmapped);
        for p in &import.processes {
            let process = checked(&p.yaml, name);
            if p.name.ends_with("_sums") && p.corezoid_id.is_none() {
                // The holder of a process's sums, made by the import.
                continue;
            }
            // Every node keeps its Corezoid id.
            for node in process.nodes.values() {
                if node.id != "no_route" {
                    assert!(
                        node.corezoid_id.is_some(),
                        "{name}: {} has no corezoid_id",
                        node.id
                    );
                }
            }
        }
    }
}

#[test]
fn the_state_diagram_waits_and_routes_and_the_driver_reads_it_by_alias() {
    let mut export = crate::read_path(&sample("02_user-status-state-diagram.conv.json")).unwrap();
    let driver = crate::read_path(&sample("03_user-status-driver-process.conv.json")).unwrap();
    export.processes.extend(driver.processes);
    let import = import(&export).unwrap();
    assert_eq!(import.processes.len(), 2);
    let diagram = &import.processes[0];
    let driver = &import.processes[1];
    // The driver's `{{conv[1863140]…}}` and its modify_task now name the diagram's alias.
    assert!(!driver.yaml.contains("1863140"), "{}", driver.yaml);
    assert!(
        driver.yaml.contains(&format!("conv[@{}]", diagram.alias)),
        "{}",
        driver.yaml
    );
    let process = checked(&driver.yaml, "driver");
    assert!(
        process
            .nodes
            .values()
            .any(|n| n.kind.name() == "modify_task")
    );
    let process = checked(&diagram.yaml, "diagram");
    assert!(
        process
            .nodes
            .values()
            .any(|n| n.kind.name() == "wait_callback")
    );
}

fn own_export() -> Value {
    json!([{
        "obj_type": 1, "obj_id": 501, "title": "Every logic", "conv_type": "process",
        "params": [{"name": "amount", "type": "number", "descr": "how much", "flags": ["required"]}],
        "scheme": {"nodes": [
            {"id": "s", "obj_type": 1, "title": "Start", "condition": {"logics": [{"type": "go", "to_node_id": "set"}], "semaphors": []}},
            {"id": "set", "obj_type": 0, "title": "Set", "condition": {"logics": [
                {"type": "set_param", "extra": {"n": "{{amount}}", "o": "{\"a\":1}"}, "extra_type": {"n": "number", "o": "object"}, "err_node_id": "err"},
                {"type": "go", "to_node_id": "cond"}], "semaphors": []}},
            {"id": "cond", "obj_type": 0, "title": "Route", "condition": {"logics": [
                {"type": "go_if_const", "to_node_id": "code", "conditions": [{"param": "n", "const": "10", "fun": "more", "cast": "number"}]},
                {"type": "go_if_const", "to_node_id": "pass", "param": "n", "fun": "eq", "const": "1"},
                {"type": "go", "to_node_id": "call"}], "semaphors": []}},
            {"id": "pass", "obj_type": 0, "title": "", "condition": {"logics": [{"type": "go", "to_node_id": "call"}], "semaphors": []}},
            {"id": "code", "obj_type": 0, "title": "Code", "condition": {"logics": [
                {"type": "api_code", "lang": "js", "src": "data.big = true;", "err_node_id": "err"},
                {"type": "go", "to_node_id": "api"}], "semaphors": []}},
            {"id": "api", "obj_type": 0, "title": "Call API", "condition": {"logics": [
                {"type": "api", "method": "POST", "url": "http://127.0.0.1:1/x", "extra": {"a": "{{n}}"}, "extra_type": {"a": "number"},
                 "extra_headers": {"x-k": "v"}, "customize_response": true, "response": {"whole": "{{body}}", "h": "{{header}}", "id": "{{id}}"}, "max_threads": 5, "err_node_id": "err"},
                {"type": "go_if_const", "to_node_id": "call", "conditions": [{"param": "id", "const": "", "fun": "not_eq", "cast": "string"}]},
                {"type": "go", "to_node_id": "wait"}], "semaphors": []}},
            {"id": "call", "obj_type": 0, "title": "Call process", "condition": {"logics": [
                {"type": "api_rpc", "conv_id": 502, "extra": {"q": "{{n}}"}, "extra_type": {}, "group": "", "err_node_id": "err"},
                {"type": "go", "to_node_id": "copy"}], "semaphors": [{"type": "time", "value": 2, "dimension": "min", "to_node_id": "err"}]}},
            {"id": "copy", "obj_type": 0, "title": "Copy", "condition": {"logics": [
                {"type": "api_copy", "mode": "create", "conv_id": "@other", "ref": "{{root.ref}}", "data": {"x": "1"}, "data_type": {"x": "number"}, "group": "", "err_node_id": "err"},
                {"type": "go", "to_node_id": "wait"}], "semaphors": []}},
            {"id": "wait", "obj_type": 0, "title": "Wait", "condition": {"logics": [
                {"type": "api_callback"}, {"type": "go", "to_node_id": "delay"}], "semaphors": [{"type": "time", "value": 3600, "to_node_id": "delay"}]}},
            {"id": "delay", "obj_type": 0, "title": "Delay", "condition": {"logics": [], "semaphors": [{"type": "time", "value": "{{until}}", "to_node_id": "delay2"}]}},
            {"id": "delay2", "obj_type": 0, "title": "Delay 2", "condition": {"logics": [], "semaphors": [{"type": "time", "value": 30, "dimension": "sec", "to_node_id": "done"}]}},
            {"id": "err", "obj_type": 3, "title": "Errors", "condition": {"logics": [
                {"type": "go_if_const", "to_node_id": "fail", "conditions": [{"param": "__conveyor_api_return_type_error__", "const": "hardware", "fun": "eq"}]},
                {"type": "go", "to_node_id": "fail"}], "semaphors": []}},
            {"id": "done", "obj_type": 2, "title": "Done", "extra": "{\"icon\":\"success\"}", "condition": {"logics": [], "semaphors": []}},
            {"id": "fail", "obj_type": 2, "title": "Fail", "extra": "{\"icon\":\"error\"}", "condition": {"logics": [], "semaphors": []}}
        ]}
    }, {
        "obj_type": 1, "obj_id": 502, "title": "Other", "conv_type": "process",
        "scheme": {"nodes": [
            {"id": "s", "obj_type": 1, "title": "", "condition": {"logics": [{"type": "go", "to_node_id": "r"}]}},
            {"id": "r", "obj_type": 0, "title": "Reply", "condition": {"logics": [
                {"type": "api_rpc_reply", "mode": "key_value", "res_data": {"answer": "{{q}}"}, "res_data_type": {"answer": "number"}, "throw_exception": false},
                {"type": "go_if_const", "to_node_id": "r2", "conditions": [{"param": "q", "const": "x", "fun": "eq", "cast": "string"}]},
                {"type": "go", "to_node_id": "x"}]}},
            {"id": "r2", "obj_type": 0, "title": "Reply keys", "condition": {"logics": [
                {"type": "api_rpc_reply", "mode": "keys", "res_data": ["q"], "throw_exception": true, "exception_reason": "no"},
                {"type": "go", "to_node_id": "x"}]}},
            {"id": "x", "obj_type": 2, "title": "End", "condition": {"logics": []}}
        ]}
    }])
}

#[test]
fn an_export_of_our_own_covers_every_mappable_logic_and_the_old_shapes() {
    let mut export = Export::default();
    crate::read::collect(
        &own_export(),
        std::path::Path::new("own.json"),
        &mut export,
        0,
    )
    .unwrap();
    let import = import(&export).unwrap();
    assert!(import.unmapped.is_empty(), "{:?}", import.unmapped);
    let main = &import.processes[0];
    let process = checked(&main.yaml, "own");
    let kinds: Vec<&str> = process.nodes.values().map(|n| n.kind.name()).collect();
    for kind in [
        "start",
        "set_param",
        "condition",
        "code",
        "api_call",
        "call_process",
        "copy_task",
        "wait_callback",
        "delay",
        "final",
    ] {
        assert!(
            kinds.contains(&kind),
            "{kind} missing: {kinds:?}\n{}",
            main.yaml
        );
    }
    // The `go`-only node is gone; what led to it leads to its target.
    assert!(!process.nodes.contains_key("node_pass"), "{}", main.yaml);
    assert!(
        main.yaml.contains("process: '@other'") || main.yaml.contains("process: \"@other\""),
        "{}",
        main.yaml
    );
    assert!(
        main.yaml.contains("timeout: 120s -> errors"),
        "{}",
        main.yaml
    );
    assert!(main.yaml.contains("until: '{{until}}'"), "{}", main.yaml);
    let other = &import.processes[1];
    checked(&other.yaml, "other");
    assert!(other.yaml.contains("error: true"), "{}", other.yaml);
    // `exception_reason` is the error reply's `reason`.
    assert!(
        ["reason: no\n", "reason: 'no'", "reason: \"no\""]
            .iter()
            .any(|line| other.yaml.contains(line)),
        "{}",
        other.yaml
    );
}

#[test]
fn unmappable_logic_is_listed_by_node_id_and_title() {
    let export = json!({"obj_type": 1, "obj_id": 7, "title": "DB", "scheme": {"nodes": [
        {"id": "s", "obj_type": 1, "condition": {"logics": [{"type": "go", "to_node_id": "q"}]}},
        {"id": "q", "obj_type": 0, "title": "Query", "condition": {"logics": [{"type": "db_call", "err_node_id": "e"}, {"type": "go", "to_node_id": "e"}]}},
        {"id": "c", "obj_type": 0, "title": "Erl", "condition": {"logics": [{"type": "api_code", "lang": "erl", "src": "x"}, {"type": "go", "to_node_id": "e"}]}},
        {"id": "u", "obj_type": 0, "title": "Odd", "condition": {"logics": [{"type": "teleport"}, {"type": "go", "to_node_id": "e"}]}},
        {"id": "e", "obj_type": 2, "title": "End", "condition": {"logics": []}}
    ]}});
    let mut e = Export::default();
    crate::read::collect(&export, std::path::Path::new("db.json"), &mut e, 0).unwrap();
    let import = import(&e).unwrap();
    let listed: Vec<String> = import.unmapped.iter().map(ToString::to_string).collect();
    assert_eq!(
        listed,
        [
            "process `db`, node q \"Query\": `db_call`, which Conveyor cannot run",
            "process `db`, node c \"Erl\": `api_code` in `erl`, which Conveyor cannot run (only JavaScript)",
            "process `db`, node u \"Odd\": unknown logic `teleport`",
        ]
    );
    // With --allow-partial the process still checks: those nodes fail when they run.
    checked(&import.processes[0].yaml, "db");
    assert!(import.processes[0].yaml.contains("it cannot run here"));
}

#[test]
fn a_file_that_is_not_an_export_is_refused_with_its_reason() {
    let mut e = Export::default();
    let err = crate::read::collect(
        &json!({"hello": 1}),
        std::path::Path::new("x.json"),
        &mut e,
        0,
    )
    .unwrap_err();
    assert!(err.to_string().contains("not a Corezoid export"), "{err}");
    assert!(matches!(
        import(&Export::default()),
        Err(ImportError::Empty)
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary JSON never panics the reader or the mapper, and whatever imports checks
    /// without a panic too.
    #[test]
    fn arbitrary_json_never_panics(value in arb_json()) {
        let mut e = Export::default();
        if crate::read::collect(&value, std::path::Path::new("fuzz.json"), &mut e, 0).is_ok()
            && let Ok(import) = import(&e)
        {
            for p in &import.processes {
                let _ = conveyor_model::check("fuzz", &p.yaml);
            }
        }
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        prop_oneof![
            Just("go".to_string()),
            Just("go_if_const".to_string()),
            Just("api".to_string()),
            Just("set_param".to_string()),
            Just("api_copy".to_string()),
            Just("{{x}}".to_string()),
            Just("conv[1]".to_string()),
            ".{0,12}",
        ]
        .prop_map(Value::String),
    ];
    let keys = prop_oneof![
        Just("type"),
        Just("id"),
        Just("obj_type"),
        Just("obj_id"),
        Just("scheme"),
        Just("nodes"),
        Just("condition"),
        Just("logics"),
        Just("semaphors"),
        Just("to_node_id"),
        Just("conditions"),
        Just("extra"),
        Just("err_node_id"),
        Just("title"),
        Just("conv_id"),
        Just("value"),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..6).prop_map(|pairs| {
                Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

#[test]
fn a_carried_definition_is_used_only_while_its_scheme_is_unchanged_and_its_name_is_made_safe() {
    let yaml = "process: \"../../evil name\"\nnodes:\n  start: { type: start, next: done }\n  done: { type: final }\n";
    let definition: Value = serde_yaml::from_str(yaml).unwrap();
    let object = crate::export_value(&definition, Some(9)).unwrap();
    let export = Export {
        processes: vec![object.clone()],
        ..Export::default()
    };
    let imported = import(&export).unwrap();
    assert_eq!(imported.processes[0].name, "evil_name");
    assert!(imported.processes[0].yaml.contains("done"));
    // Edited in Corezoid: the end node gets a title. The logics are mapped instead.
    let mut edited = object;
    edited["scheme"]["nodes"][1]["title"] = json!("The End");
    let export = Export {
        processes: vec![edited],
        ..Export::default()
    };
    let imported = import(&export).unwrap();
    assert!(
        imported.processes[0].yaml.contains("the_end"),
        "{}",
        imported.processes[0].yaml
    );
}

#[test]
fn a_sum_node_adds_to_a_holder_process_and_a_raw_api_sends_its_body() {
    let export = Export {
        processes: vec![json!({
            "obj_type": 1, "obj_id": 77, "title": "Counted",
            "scheme": {"nodes": [
                {"id": "s", "obj_type": 1, "condition": {"logics": [{"type": "go", "to_node_id": "sum"}]}},
                {"id": "sum", "obj_type": 0, "title": "Count", "condition": {"logics": [
                    {"type": "api_sum", "extra": [{"id": "1", "name": "hits", "value": "1"}, {"id": "2", "name": "amount", "value": "{{amount}}"}]},
                    {"type": "go", "to_node_id": "api"}]}},
                {"id": "api", "obj_type": 0, "title": "Raw", "condition": {"logics": [
                    {"type": "api", "format": "raw", "raw_body": "a={{amount}}", "method": "POST", "url": "http://127.0.0.1:1/x",
                     "content_type": "application/x-www-form-urlencoded", "extra": {"ignored": "1"}, "err_node_id": "e"},
                    {"type": "go", "to_node_id": "e"}]}},
                {"id": "e", "obj_type": 2, "title": "End", "condition": {"logics": []}}
            ]}
        })],
        ..Export::default()
    };
    let imported = import(&export).unwrap();
    assert!(imported.unmapped.is_empty(), "{:?}", imported.unmapped);
    assert_eq!(imported.processes.len(), 2);
    let main = checked(&imported.processes[0].yaml, "counted");
    let holder = &imported.processes[1];
    assert_eq!(holder.name, "counted_sums");
    checked(&holder.yaml, "holder");
    let yaml: Value = serde_yaml::from_str(&imported.processes[0].yaml).unwrap();
    assert_eq!(yaml["nodes"]["count"]["type"], "sum");
    assert_eq!(yaml["nodes"]["count"]["process"], "@counted_sums");
    assert_eq!(yaml["nodes"]["count"]["ref"], "sum");
    assert_eq!(
        yaml["nodes"]["count"]["add"],
        json!({"hits": "1", "amount": "{{amount}}"})
    );
    assert_eq!(yaml["nodes"]["raw"]["format"], "raw");
    assert_eq!(yaml["nodes"]["raw"]["body"], "a={{amount}}");
    assert!(yaml["nodes"]["raw"].get("query").is_none());
    assert!(main.nodes.contains_key("raw"));
}

#[test]
fn env_vars_become_secret_settings_of_the_process() {
    let export = Export {
        processes: vec![json!({
            "obj_type": 1, "obj_id": 78, "title": "Env",
            "scheme": {"nodes": [
                {"id": "s", "obj_type": 1, "condition": {"logics": [{"type": "go", "to_node_id": "api"}]}},
                {"id": "api", "obj_type": 0, "title": "Call", "condition": {"logics": [
                    {"type": "api", "method": "GET", "url": "{{env_var[@base-url]}}/x",
                     "extra_headers": {"Authorization": "Bearer {{env_var[@stripe_key]}}"}, "err_node_id": "e"},
                    {"type": "go", "to_node_id": "e"}]}},
                {"id": "e", "obj_type": 2, "title": "End", "condition": {"logics": []}}
            ]}
        })],
        ..Export::default()
    };
    let imported = import(&export).unwrap();
    assert!(imported.unmapped.is_empty(), "{:?}", imported.unmapped);
    let process = checked(&imported.processes[0].yaml, "env");
    let yaml: Value = serde_yaml::from_str(&imported.processes[0].yaml).unwrap();
    assert_eq!(yaml["nodes"]["call"]["url"], "{{base_url}}/x");
    assert_eq!(
        yaml["nodes"]["call"]["headers"]["Authorization"],
        "Bearer {{stripe_key}}"
    );
    assert_eq!(yaml["params"]["stripe_key"]["secret"], true);
    assert_eq!(yaml["params"]["stripe_key"]["input"], json!([]));
    assert!(process.params.contains_key("base_url"));
}

/// The export of `yaml` as Corezoid reads it: the logics alone, without the carried
/// definition.
fn logics_only(yaml: &str) -> Export {
    let definition: Value = serde_yaml::from_str(yaml).unwrap();
    let mut object = crate::export_value(&definition, Some(31)).unwrap();
    object.as_object_mut().unwrap().remove("conveyor");
    Export {
        processes: vec![object],
        ..Export::default()
    }
}

#[test]
fn a_delay_read_from_the_task_goes_out_as_a_delay_logic_and_comes_back_relative() {
    let yaml = "process: waits\nparams:\n  secs: { required: true }\nnodes:\n  start: { type: start, next: pause }\n  pause: { type: delay, for: \"{{secs}}\", next: done, on_error: failed }\n  done: { type: final }\n  failed: { type: final, status: error }\n";
    let export = logics_only(yaml);
    let pause = &export.processes[0]["scheme"]["nodes"][1];
    assert_eq!(pause["condition"]["semaphors"], json!([]), "{pause}");
    assert_eq!(
        pause["condition"]["logics"][0]["type"], "delay",
        "a relative duration is the UI's delay logic, not an absolute `time`: {pause}"
    );
    let imported = import(&export).unwrap();
    assert!(imported.unmapped.is_empty(), "{:?}", imported.unmapped);
    let back: Value = serde_yaml::from_str(&imported.processes[0].yaml).unwrap();
    let node = &back["nodes"]["pause"];
    assert_eq!(node["type"], "delay", "{back}");
    assert_eq!(node["for"], "{{secs}}", "{back}");
    assert!(node.get("until").is_none(), "{back}");
    assert_eq!(node["next"], "done", "{back}");
    assert_eq!(node["on_error"], "failed", "{back}");
    // Nothing else was made (no `no_route` for a delay that names its own target).
    assert_eq!(back["nodes"].as_object().unwrap().len(), 4, "{back}");
    assert!(imported.notes.is_empty(), "{:?}", imported.notes);
    checked(&imported.processes[0].yaml, "waits");
    // An absolute time keeps its `time` semaphor and stays absolute.
    let until = yaml.replace("for: \"{{secs}}\"", "until: \"{{secs}}\"");
    let until = until.replace(", on_error: failed", "");
    let imported = import(&logics_only(&until)).unwrap();
    let back: Value = serde_yaml::from_str(&imported.processes[0].yaml).unwrap();
    assert_eq!(back["nodes"]["pause"]["until"], "{{secs}}", "{back}");
    // A UI delay logic counted in minutes from the task.
    let export = json!({"obj_type": 1, "obj_id": 5, "title": "Mins", "scheme": {"nodes": [
        {"id": "s", "obj_type": 1, "condition": {"logics": [{"type": "go", "to_node_id": "d"}]}},
        {"id": "d", "obj_type": 0, "title": "Wait", "condition": {"logics": [
            {"type": "delay", "value": "{{m}}", "dimension": "min", "to_node_id": "e"}]}},
        {"id": "e", "obj_type": 2, "title": "End", "condition": {"logics": []}}
    ]}});
    let mut e = Export::default();
    crate::read::collect(&export, std::path::Path::new("m.json"), &mut e, 0).unwrap();
    let imported = import(&e).unwrap();
    let back: Value = serde_yaml::from_str(&imported.processes[0].yaml).unwrap();
    assert_eq!(back["nodes"]["wait"]["for"], "$.math({{m}}*60)", "{back}");
    checked(&imported.processes[0].yaml, "mins");
}

#[test]
fn node_reads_by_corezoid_id_name_the_imported_nodes_and_the_sums_holder() {
    let export = json!({"obj_type": 1, "obj_id": 90, "title": "Tally", "scheme": {"nodes": [
        {"id": "s", "obj_type": 1, "condition": {"logics": [{"type": "go", "to_node_id": "5f00aa"}]}},
        {"id": "5f00aa", "obj_type": 0, "title": "Count", "condition": {"logics": [
            {"type": "api_sum", "extra": [{"id": "S1", "name": "hits", "value": "1"}, {"id": "S2", "name": "", "value": "{{n}}"}]},
            {"type": "go", "to_node_id": "5f00bb"}]}},
        {"id": "5f00bb", "obj_type": 0, "title": "Read", "condition": {"logics": [
            {"type": "set_param", "extra": {
                "hits": "{{node[5f00aa].S1}}", "by_name": "{{node[5f00aa].hits}}", "raw": "{{node[5f00aa].S2}}",
                "queued": "{{node[5f00cc].count}}", "other": "{{conv[12].node[5f00cc].count}}",
                "unknown": "{{node[nope].S1}}"},
             "extra_type": {"hits": "number"}, "err_node_id": "5f00cc"},
            {"type": "go", "to_node_id": "5f00cc"}]}},
        {"id": "5f00cc", "obj_type": 2, "title": "End", "condition": {"logics": []}}
    ]}});
    let mut e = Export::default();
    crate::read::collect(&export, std::path::Path::new("t.json"), &mut e, 0).unwrap();
    let imported = import(&e).unwrap();
    let back: Value = serde_yaml::from_str(&imported.processes[0].yaml).unwrap();
    let set = &back["nodes"]["read"]["set"];
    assert_eq!(
        set["hits"], "{{conv[@tally_sums].ref[5f00aa].hits}}",
        "{back}"
    );
    assert_eq!(set["by_name"], "{{conv[@tally_sums].ref[5f00aa].hits}}");
    assert_eq!(set["raw"], "{{conv[@tally_sums].ref[5f00aa].S2}}");
    assert_eq!(set["queued"], "{{node[end].count}}");
    assert_eq!(set["other"], "{{conv[12].node[5f00cc].count}}");
    assert_eq!(set["unknown"], "{{node[nope].S1}}");
}

#[test]
fn an_api_call_in_corezoid_format_goes_out_and_comes_back_in_that_format() {
    let yaml = "process: legacy\nnodes:\n  start: { type: start, next: ask }\n  ask: { type: api_call, method: POST, url: \"http://127.0.0.1:1/x\", format: corezoid, body: { amount: \"{{amount}}\" }, next: done, on_error: done }\n  done: { type: final }\n";
    let export = logics_only(yaml);
    let logic = &export.processes[0]["scheme"]["nodes"][1]["condition"]["logics"][0];
    assert_eq!(logic["format"], "corezoid", "{logic}");
    assert_eq!(logic["extra"], json!({"amount": "{{amount}}"}), "{logic}");
    let imported = import(&export).unwrap();
    assert!(imported.unmapped.is_empty(), "{:?}", imported.unmapped);
    let back: Value = serde_yaml::from_str(&imported.processes[0].yaml).unwrap();
    let original: Value = serde_yaml::from_str(yaml).unwrap();
    for key in ["format", "body", "method", "url", "next", "on_error"] {
        assert_eq!(
            back["nodes"]["ask"][key], original["nodes"]["ask"][key],
            "{key}: {back}"
        );
    }
    checked(&imported.processes[0].yaml, "legacy");
}

#[test]
fn our_own_export_maps_queue_get_task_corezoid_format_delay_logic_and_sum_reads() {
    let imported = import_path(&sample("10_own_queue_and_new_logics.json")).unwrap();
    assert!(imported.unmapped.is_empty(), "{:?}", imported.unmapped);
    let names: Vec<&str> = imported.processes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "own_orders_queue",
            "own_every_new_logic",
            "own_every_new_logic_sums"
        ]
    );
    let orders: Value = serde_yaml::from_str(&imported.processes[0].yaml).unwrap();
    assert_eq!(
        orders["nodes"]["waiting_orders"]["type"], "queue",
        "{orders}"
    );
    assert_eq!(orders["nodes"]["waiting_orders"]["next"], "shipped");
    assert_eq!(
        orders["nodes"]["waiting_orders"]["timeout"],
        "86400s -> expired"
    );
    assert_eq!(orders["nodes"]["waiting_orders"]["alert"], "50 -> backlog");
    assert_eq!(orders["nodes"]["backlog"]["type"], "condition");
    let worker: Value = serde_yaml::from_str(&imported.processes[1].yaml).unwrap();
    let nodes = &worker["nodes"];
    assert_eq!(nodes["take_an_order"]["type"], "get_task", "{worker}");
    assert_eq!(nodes["take_an_order"]["process"], "@own_orders_queue");
    assert_eq!(nodes["take_an_order"]["node"], "waiting_orders");
    assert_eq!(nodes["take_an_order"]["order"], "newest");
    assert_eq!(nodes["take_an_order"]["on_error"], "failed");
    assert_eq!(nodes["ask_the_legacy_service"]["format"], "corezoid");
    assert_eq!(
        nodes["ask_the_legacy_service"]["body"],
        json!({"order": "{{__queue_task_id__}}"})
    );
    assert_eq!(nodes["pause"]["for"], "{{wait}}");
    assert_eq!(nodes["pause"]["on_error"], "failed");
    assert_eq!(
        nodes["read_the_count"]["set"]["handled"],
        "{{conv[@own_every_new_logic_sums].ref[9102000000000000000000b4].handled}}"
    );
    assert_eq!(
        nodes["read_the_count"]["set"]["paused"],
        "{{node[pause].count}}"
    );
    for p in &imported.processes {
        checked(&p.yaml, &p.name);
    }
}

#[test]
fn a_get_task_of_a_queue_outside_the_import_keeps_the_id_and_says_so() {
    let export = json!({"obj_type": 1, "obj_id": 3, "title": "Taker", "scheme": {"nodes": [
        {"id": "s", "obj_type": 1, "condition": {"logics": [{"type": "go", "to_node_id": "g"}]}},
        {"id": "g", "obj_type": 0, "title": "Take", "condition": {"logics": [
            {"type": "api_get_task", "conv_id": 4444, "queue_node_id": "abc123", "err_node_id": "e"},
            {"type": "go", "to_node_id": "e"}]}},
        {"id": "e", "obj_type": 2, "title": "End", "condition": {"logics": []}}
    ]}});
    let mut e = Export::default();
    crate::read::collect(&export, std::path::Path::new("t.json"), &mut e, 0).unwrap();
    let imported = import(&e).unwrap();
    let back: Value = serde_yaml::from_str(&imported.processes[0].yaml).unwrap();
    assert_eq!(back["nodes"]["take"]["process"], "4444");
    assert_eq!(back["nodes"]["take"]["node"], "abc123");
    assert!(
        back["nodes"]["take"].get("order").is_none(),
        "oldest is the default"
    );
    assert!(
        imported
            .notes
            .iter()
            .any(|n| n.contains("abc123") && n.contains("not in the import")),
        "{:?}",
        imported.notes
    );
    checked(&imported.processes[0].yaml, "taker");
}

#[test]
fn a_count_semaphor_goes_out_and_comes_back_as_an_alert_and_a_bad_one_is_listed() {
    let yaml = "process: crowd\nnodes:\n  start: { type: start, next: hold }\n  hold: { type: wait_callback, alert: 3 -> too_many, next: done }\n  too_many: { type: final, status: error }\n  done: { type: final }\n";
    let export = logics_only(yaml);
    let hold = &export.processes[0]["scheme"]["nodes"][1];
    assert_eq!(
        hold["condition"]["semaphors"][0],
        json!({"type": "count", "value": 3, "esc_node_id": export.processes[0]["scheme"]["nodes"][2]["id"]}),
        "{hold}"
    );
    let imported = import(&export).unwrap();
    assert!(imported.unmapped.is_empty(), "{:?}", imported.unmapped);
    let back: Value = serde_yaml::from_str(&imported.processes[0].yaml).unwrap();
    assert_eq!(back["nodes"]["hold"]["alert"], "3 -> too_many", "{back}");
    checked(&imported.processes[0].yaml, "crowd");
    // No number of tasks: listed, not guessed.
    let mut export = export;
    export.processes[0]["scheme"]["nodes"][1]["condition"]["semaphors"][0]["value"] = json!("lots");
    let imported = import(&export).unwrap();
    assert_eq!(imported.unmapped.len(), 1, "{:?}", imported.unmapped);
    assert!(imported.unmapped[0].what.contains("`count` semaphor"));
}

#[test]
fn an_unpacked_zip_export_reads_its_tree_aliases_and_env_vars() {
    // The layout of a zip export: a wrapper dir, a folder with its metadata, one
    // `.conv.json` per process (a single object), `_ALIASES_.json`, `_ENV_VARS_.json`.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("folder_236739_1540473741.zip");
    let folder = root.join("236739_Shop.folder");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        root.join("236739_Shop.folder.json"),
        json!({"obj_type": 0, "obj_id": 236739, "parent_id": 0, "title": "Shop", "description": ""}).to_string(),
    )
    .unwrap();
    let callee = json!({"obj_type": 1, "obj_id": 801, "title": "Price list", "scheme": {"nodes": [
        {"id": "s", "obj_type": 1, "condition": {"logics": [{"type": "go", "to_node_id": "r"}]}},
        {"id": "r", "obj_type": 0, "title": "Reply", "condition": {"logics": [
            {"type": "api_rpc_reply", "mode": "key_value", "res_data": {"price": "{{env_var[@base-price]}}"}},
            {"type": "go", "to_node_id": "e"}]}},
        {"id": "e", "obj_type": 2, "title": "End", "condition": {"logics": []}}
    ]}});
    let caller = json!({"obj_type": 1, "obj_id": 802, "title": "Checkout", "scheme": {"nodes": [
        {"id": "s", "obj_type": 1, "condition": {"logics": [{"type": "go", "to_node_id": "c"}]}},
        {"id": "c", "obj_type": 0, "title": "Ask price", "condition": {"logics": [
            {"type": "api_rpc", "conv_id": 801, "extra": {}, "extra_type": {}, "group": "all", "err_node_id": "e"},
            {"type": "go", "to_node_id": "e"}]}},
        {"id": "e", "obj_type": 2, "title": "End", "condition": {"logics": []}}
    ]}});
    std::fs::write(folder.join("801_Price list.conv.json"), callee.to_string()).unwrap();
    std::fs::write(folder.join("802_Checkout_v3.conv.json"), caller.to_string()).unwrap();
    // Not part of an import: ignored.
    std::fs::write(folder.join("notes.txt"), "hello").unwrap();
    std::fs::write(
        root.join("_ALIASES_.json"),
        json!([{"obj_type": 9, "short_name": "prices", "obj_to_id": 801, "obj_to_type": "conv"}])
            .to_string(),
    )
    .unwrap();
    std::fs::write(
        root.join("_ENV_VARS_.json"),
        json!([{"short_name": "base-price", "env_var_type": "visible"}]).to_string(),
    )
    .unwrap();
    let read = crate::read_path(dir.path()).unwrap();
    assert_eq!(read.processes.len(), 2);
    assert_eq!(read.aliases.get(&801).map(String::as_str), Some("prices"));
    assert_eq!(read.env_vars, ["base-price"]);
    let imported = import(&read).unwrap();
    assert!(imported.unmapped.is_empty(), "{:?}", imported.unmapped);
    let names: Vec<&str> = imported.processes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["prices", "checkout"]);
    let checkout: Value = serde_yaml::from_str(&imported.processes[1].yaml).unwrap();
    assert_eq!(checkout["nodes"]["ask_price"]["type"], "call_process");
    assert_eq!(
        checkout["nodes"]["ask_price"]["process"], "@prices",
        "{checkout}"
    );
    let prices: Value = serde_yaml::from_str(&imported.processes[0].yaml).unwrap();
    assert_eq!(prices["nodes"]["reply"]["data"]["price"], "{{base_price}}");
    for p in &imported.processes {
        checked(&p.yaml, &p.name);
    }
}

#[test]
fn save_task_maps_to_the_final_nodes_keep_and_goes_back_with_it() {
    let imported = import_path(&sample("11_own_save_task.json")).unwrap();
    assert!(imported.unmapped.is_empty(), "{:?}", imported.unmapped);
    let back: Value = serde_yaml::from_str(&imported.processes[0].yaml).unwrap();
    let nodes = &back["nodes"];
    // Ticked: kept until the end of the month (at most 31 days); not ticked, or no
    // options at all: not kept.
    assert_eq!(nodes["archived"]["keep"], "31d", "{back}");
    assert_eq!(nodes["not_archived"]["keep"], 0, "{back}");
    assert_eq!(nodes["unticked"]["keep"], 0, "{back}");
    checked(&imported.processes[0].yaml, "archive");

    // Every keep a definition can say goes out as `save_task` (with the keep beside it)
    // and comes back from the logics alone.
    let yaml = "process: keeps\nsettings: { keep: 0 }\nnodes:\n  start: { type: start, next: pick }\n  pick: { type: condition, branches: [ { when: [ { param: a, fn: eq, value: \"1\" } ], next: gone }, { when: [ { param: a, fn: eq, value: \"2\" } ], next: ever } , { when: [ { param: a, fn: eq, value: \"3\" } ], next: week } ], else: inherits }\n  gone: { type: final, keep: 0s }\n  ever: { type: final, keep: forever }\n  week: { type: final, status: error, keep: 7d }\n  inherits: { type: final }\n";
    checked(yaml, "keeps");
    let export = logics_only(yaml);
    let options: Vec<Value> = export.processes[0]["scheme"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["obj_type"] == 2)
        .map(|n| serde_json::from_str(n["options"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(
        options,
        [
            json!({"save_task": false}),
            json!({"save_task": true, "keep": "forever"}),
            json!({"save_task": true, "keep": "7d"}),
            // No keep of its own: the process's `settings.keep: 0`.
            json!({"save_task": false}),
        ]
    );
    let imported = import(&export).unwrap();
    let back: Value = serde_yaml::from_str(&imported.processes[0].yaml).unwrap();
    assert_eq!(back["nodes"]["gone"]["keep"], 0, "{back}");
    assert_eq!(back["nodes"]["ever"]["keep"], "forever", "{back}");
    assert_eq!(back["nodes"]["week"]["keep"], "7d", "{back}");
    assert_eq!(back["nodes"]["inherits"]["keep"], 0, "{back}");
    checked(&imported.processes[0].yaml, "keeps");
    // The defaults (no keep anywhere) keep the task: `save_task`, read back as 31d.
    let export = logics_only(
        "process: plain\nnodes:\n  start: { type: start, next: done }\n  done: { type: final }\n",
    );
    let done = &export.processes[0]["scheme"]["nodes"][1];
    assert_eq!(done["options"], "{\"save_task\":true}", "{done}");
    // Options written as an object (API ops) are read too.
    let mut export = export;
    export.processes[0]["scheme"]["nodes"][1]["options"] = json!({"save_task": false});
    let back: Value = serde_yaml::from_str(&import(&export).unwrap().processes[0].yaml).unwrap();
    assert_eq!(back["nodes"]["done"]["keep"], 0, "{back}");
}

#[test]
fn api_options_map_send_sys_xml_rfc_format_and_debug_info_and_a_client_certificate_is_listed() {
    let imported = import_path(&sample("12_own_api_options.json")).unwrap();
    assert!(imported.unmapped.is_empty(), "{:?}", imported.unmapped);
    let yaml = &imported.processes[0].yaml;
    // The secret in the export is never written into the file.
    assert!(!yaml.contains("corezoid-secret-never-copied"), "{yaml}");
    assert!(
        imported
            .notes
            .iter()
            .any(|n| n.contains("send_sys") && n.contains("--set sys_secret")),
        "{:?}",
        imported.notes
    );
    let back: Value = serde_yaml::from_str(yaml).unwrap();
    let nodes = &back["nodes"];
    assert_eq!(
        nodes["signed_call"]["send_sys"],
        json!({"secret": "{{sys_secret}}"}),
        "{back}"
    );
    assert_eq!(nodes["signed_call"]["debug"], true, "{back}");
    assert_eq!(back["params"]["sys_secret"]["secret"], true, "{back}");
    assert_eq!(back["params"]["sys_secret"]["input"], json!([]), "{back}");
    assert_eq!(nodes["xml_order"]["format"], "xml", "{back}");
    assert_eq!(
        nodes["xml_order"]["headers"]["Content-Type"],
        "application/soap+xml"
    );
    assert_eq!(nodes["xml_order"]["body"], json!({"order": "{{order}}"}));
    assert_eq!(nodes["strict_reply"]["require_body"], true, "{back}");
    assert!(nodes["xml_order"].get("require_body").is_none(), "{back}");
    checked(yaml, "api options");

    // Each goes out and comes back from the logics alone.
    let yaml = "process: opts\nparams:\n  key: { secret: true, input: [] }\nnodes:\n  start: { type: start, next: a }\n  a: { type: api_call, method: PUT, url: \"http://127.0.0.1:1/a\", body: { x: \"{{x}}\" }, send_sys: { secret: \"{{key}}\" }, debug: true, next: b }\n  b: { type: api_call, method: PATCH, url: \"http://127.0.0.1:1/b\", format: xml, body: { r: { \"@id\": \"1\" } }, send_sys: true, require_body: true, next: done }\n  done: { type: final }\n";
    checked(yaml, "opts");
    let export = logics_only(yaml);
    let logic = &export.processes[0]["scheme"]["nodes"][1]["condition"]["logics"][0];
    assert_eq!(logic["send_sys"], true, "{logic}");
    assert_eq!(logic["sys_secret"], "{{key}}", "{logic}");
    assert_eq!(logic["debug_info"], true, "{logic}");
    let logic = &export.processes[0]["scheme"]["nodes"][2]["condition"]["logics"][0];
    assert_eq!(logic["content_type"], "application/xml", "{logic}");
    assert_eq!(logic["rfc_format"], true, "{logic}");
    let imported = import(&export).unwrap();
    assert!(imported.unmapped.is_empty(), "{:?}", imported.unmapped);
    let back: Value = serde_yaml::from_str(&imported.processes[0].yaml).unwrap();
    let original: Value = serde_yaml::from_str(yaml).unwrap();
    for (node, keys) in [
        ("a", &["method", "body", "send_sys", "debug"][..]),
        (
            "b",
            &["method", "format", "body", "send_sys", "require_body"][..],
        ),
    ] {
        for key in keys {
            assert_eq!(
                back["nodes"][node][key], original["nodes"][node][key],
                "{node}.{key}: {back}"
            );
        }
    }

    // A client certificate cannot be sent: listed, not dropped.
    let mut export = Export::default();
    let mut fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(sample("12_own_api_options.json")).unwrap())
            .unwrap();
    fixture[0]["scheme"]["nodes"][1]["condition"]["logics"][0]["cert_pem"] =
        json!("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    crate::read::collect(&fixture, std::path::Path::new("c.json"), &mut export, 0).unwrap();
    let imported = import(&export).unwrap();
    let listed: Vec<String> = imported.unmapped.iter().map(ToString::to_string).collect();
    assert_eq!(
        listed,
        [
            "process `own_api_options`, node 9202000000000000000000a2 \"Signed call\": `api` with a client certificate (`cert_pem`), which Conveyor cannot send"
        ]
    );
}

#[test]
fn an_absolute_time_semaphor_on_a_node_with_logic_is_a_time_limit_until_that_time() {
    let imported = import_path(&sample("13_own_dynamic_timer.json")).unwrap();
    assert!(imported.unmapped.is_empty(), "{:?}", imported.unmapped);
    let back: Value = serde_yaml::from_str(&imported.processes[0].yaml).unwrap();
    assert_eq!(
        back["nodes"]["wait_for_approval"]["timeout"],
        json!({"until": "{{deadline}}", "to": "too_late"}),
        "{back}"
    );
    checked(&imported.processes[0].yaml, "deadline");
    // Out and back from the logics alone: an absolute time stays absolute, a duration
    // read from the task stays a duration, a fixed one stays fixed.
    let yaml = "process: limits\nnodes:\n  start: { type: start, next: a }\n  a: { type: wait_callback, timeout: { until: \"{{at}}\", to: late }, next: b }\n  b: { type: wait_callback, timeout: { after: \"{{secs}}\", to: late }, next: c }\n  c: { type: wait_callback, timeout: 90s -> late, next: done }\n  done: { type: final }\n  late: { type: final, status: error }\n";
    checked(yaml, "limits");
    let export = logics_only(yaml);
    let semaphor = &export.processes[0]["scheme"]["nodes"][1]["condition"]["semaphors"][0];
    assert_eq!(semaphor["value"], "{{at}}", "{semaphor}");
    assert!(semaphor.get("conveyor_relative").is_none(), "{semaphor}");
    let imported = import(&export).unwrap();
    assert!(imported.unmapped.is_empty(), "{:?}", imported.unmapped);
    let back: Value = serde_yaml::from_str(&imported.processes[0].yaml).unwrap();
    assert_eq!(
        back["nodes"]["a"]["timeout"],
        json!({"until": "{{at}}", "to": "late"})
    );
    assert_eq!(
        back["nodes"]["b"]["timeout"],
        json!({"after": "{{secs}}", "to": "late"})
    );
    assert_eq!(back["nodes"]["c"]["timeout"], "90s -> late");
    checked(&imported.processes[0].yaml, "limits");
    // Neither a number nor a template: listed.
    let mut export = export;
    export.processes[0]["scheme"]["nodes"][1]["condition"]["semaphors"][0]["value"] = json!("soon");
    let imported = import(&export).unwrap();
    assert_eq!(imported.unmapped.len(), 1, "{:?}", imported.unmapped);
    assert!(imported.unmapped[0].what.contains("`soon`"));
}

#[test]
fn a_count_of_another_imported_process_names_its_alias_and_node() {
    let imported = import_path(&sample("14_own_cross_process_count.json")).unwrap();
    assert!(imported.unmapped.is_empty(), "{:?}", imported.unmapped);
    let watcher: Value = serde_yaml::from_str(&imported.processes[1].yaml).unwrap();
    let set = &watcher["nodes"]["count_the_inbox"]["set"];
    assert_eq!(
        set["waiting"], "{{conv[@own_inbox].node[waiting_letters].count}}",
        "{watcher}"
    );
    assert_eq!(set["mine"], "{{node[counted].count}}", "{watcher}");
    for p in &imported.processes {
        checked(&p.yaml, &p.name);
    }
    // A process exported by Conveyor (its definition carried) is named by its own node
    // names, not by its titles.
    let inbox = "process: inbox\nnodes:\n  start: { type: start, next: letters }\n  letters: { type: wait_callback, title: \"Waiting letters\", next: done }\n  done: { type: final }\n";
    let definition: Value = serde_yaml::from_str(inbox).unwrap();
    let object = crate::export_value(&definition, Some(9204)).unwrap();
    let letters_id = object["scheme"]["nodes"][1]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut watcher_object: Value = serde_json::from_str(
        &std::fs::read_to_string(sample("14_own_cross_process_count.json")).unwrap(),
    )
    .unwrap();
    let watcher_object = watcher_object[1].take();
    let text = watcher_object
        .to_string()
        .replace("9204000000000000000000a2", &letters_id);
    let export = Export {
        processes: vec![object, serde_json::from_str(&text).unwrap()],
        ..Export::default()
    };
    let imported = import(&export).unwrap();
    let watcher: Value = serde_yaml::from_str(&imported.processes[1].yaml).unwrap();
    assert_eq!(
        watcher["nodes"]["count_the_inbox"]["set"]["waiting"],
        "{{conv[@inbox].node[letters].count}}",
        "{watcher}"
    );
}

#[test]
fn condition_functions_casts_the_semaphores_spelling_format_json_and_other_methods_map() {
    let imported = import_path(&sample("15_own_conditions_and_methods.json")).unwrap();
    assert!(imported.unmapped.is_empty(), "{:?}", imported.unmapped);
    let process = checked(&imported.processes[0].yaml, "routes");
    let back: Value = serde_yaml::from_str(&imported.processes[0].yaml).unwrap();
    let nodes = &back["nodes"];
    for (node, function, cast) in [
        ("less", "less", "number"),
        ("less_or_equal", "less_or_eq", "number"),
        ("more_or_equal", "more_or_eq", "number"),
        ("regexp", "regexp", "string"),
        ("boolean", "eq", "boolean"),
        ("array", "eq", "array"),
        ("object", "eq", "object"),
    ] {
        let check = &nodes[node]["branches"][0]["when"][0];
        assert_eq!(check["fn"], function, "{node}: {back}");
        assert_eq!(check["cast"], cast, "{node}: {back}");
    }
    // `format: json` is the default body; PUT and PATCH send `extra` as the body
    // (typed), DELETE as the query.
    assert_eq!(nodes["put_item"]["method"], "PUT");
    assert_eq!(nodes["put_item"]["body"], json!({"n": "{{n}}"}));
    assert!(nodes["put_item"].get("format").is_none(), "{back}");
    assert_eq!(nodes["patch_item"]["method"], "PATCH");
    assert_eq!(nodes["delete_item"]["method"], "DELETE");
    assert_eq!(nodes["delete_item"]["query"], json!({"why": "done"}));
    // `semaphores` (the list API's spelling) is read like `semaphors`.
    assert_eq!(nodes["pause"]["type"], "delay", "{back}");
    assert_eq!(nodes["pause"]["for"], "30s", "{back}");
    assert_eq!(process.nodes.len(), 21);
}

#[test]
fn a_queues_data_and_capacity_are_carried() {
    let export = json!({"obj_type": 1, "obj_id": 8, "title": "Q", "scheme": {"nodes": [
        {"id": "s", "obj_type": 1, "condition": {"logics": [{"type": "go", "to_node_id": "q"}]}},
        {"id": "q", "obj_type": 0, "title": "Queue", "condition": {"logics": [
            {"type": "api_queue", "data": {"source": "web", "weight": "3"}, "data_type": {"source": "string", "weight": "number"}, "capacity": "100"},
            {"type": "go", "to_node_id": "e"}]}},
        {"id": "e", "obj_type": 2, "title": "End", "condition": {"logics": []}}
    ]}});
    let mut e = Export::default();
    crate::read::collect(&export, std::path::Path::new("q.json"), &mut e, 0).unwrap();
    let imported = import(&e).unwrap();
    assert!(
        !imported.notes.iter().any(|n| n.contains("node q")),
        "nothing of the queue is left out: {:?}",
        imported.notes
    );
    let process = checked(&imported.processes[0].yaml, "q.json");
    let queue = match &process.nodes["queue"].kind {
        conveyor_model::NodeKind::Queue(q) => q.clone(),
        other => panic!("not a queue: {other:?}"),
    };
    assert_eq!(queue.capacity, Some(100));
    let yaml: serde_json::Value = serde_yaml::from_str(&imported.processes[0].yaml).unwrap();
    assert_eq!(
        yaml["nodes"]["queue"]["data"],
        json!({"source": "web", "weight": 3}),
        "{yaml}"
    );
}
