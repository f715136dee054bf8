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
          {"id": "f", "obj_type": 2, "title": "Failed", "extra": "{\"icon\":\"error\"}", "options": "{\"save_task\":true}", "condition": {"logics": []}}
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

/// An unpacked export is bounded as a whole, not only file by file: five files just
/// under the per-file limit (sparse: they take no disk) are refused before any is read,
/// with the folder and the limit named.
#[test]
fn a_folder_export_larger_than_its_limit_is_refused_before_it_is_read() {
    let d = DataDir::new();
    let folder = d.path().join("huge");
    std::fs::create_dir_all(folder.join("inner")).unwrap();
    for n in 0..5 {
        let at = if n % 2 == 0 {
            folder.clone()
        } else {
            folder.join("inner")
        };
        let file = std::fs::File::create(at.join(format!("p{n}.conv.json"))).unwrap();
        file.set_len(60 * 1024 * 1024).unwrap();
    }
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = d.run(&[
        "process",
        "import",
        &folder.to_string_lossy(),
        "--out",
        &d.path().join("out").to_string_lossy(),
    ]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("the export's files come to more than the most bytes")
            && stderr.contains("huge"),
        "{stderr}"
    );
    // Refused from the sizes alone: reading and parsing 300 MB would take seconds.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(!d.path().join("out").exists());
}

/// Every `.yaml` a command wrote into `dir`, read as JSON values by file stem.
fn yaml_files(dir: &std::path::Path) -> Vec<(String, serde_json::Value)> {
    let mut out: Vec<(String, serde_json::Value)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            (stem, serde_yaml::from_str(&text).unwrap())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn label_is_holder(definition: &serde_json::Value) -> bool {
    definition["process"]
        .as_str()
        .is_some_and(|p| p.ends_with("_sums"))
}

/// import(export(p)) ≡ p, and the export's own logics (without the definition it
/// carries) map back to the same nodes, of the same kinds.
fn round_trip(d: &DataDir, file: &std::path::Path, label: &str) {
    let original: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let export = d.path().join(format!("{label}.json"));
    d.ok(&[
        "process",
        "export",
        &file.to_string_lossy(),
        "--format",
        "corezoid",
        "--out",
        &export.to_string_lossy(),
    ]);
    let back = d.path().join(format!("{label}.back"));
    d.ok(&[
        "process",
        "import",
        &export.to_string_lossy(),
        "--out",
        &back.to_string_lossy(),
    ]);
    let files = yaml_files(&back);
    assert_eq!(files.len(), 1, "{label}");
    assert_eq!(
        files[0].1, original,
        "{label}: import(export(p)) differs from p"
    );

    // What Corezoid reads: the logics alone.
    let mut exported: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&export).unwrap()).unwrap();
    let object = exported[0].as_object_mut().unwrap();
    assert!(
        object.remove("conveyor").is_some(),
        "{label}: no definition carried"
    );
    let ids: Vec<(String, String)> = object["scheme"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_string(),
                n["title"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let plain = d.path().join(format!("{label}.plain.json"));
    std::fs::write(&plain, exported.to_string()).unwrap();
    let mapped = d.path().join(format!("{label}.mapped"));
    let (code, stdout, stderr) = d.run(&[
        "process",
        "import",
        &plain.to_string_lossy(),
        "--out",
        &mapped.to_string_lossy(),
        "--allow-partial",
    ]);
    assert_eq!(code, 0, "{label}: {stdout}{stderr}");
    // A process with Sum nodes comes with the holder of its sums.
    let files: Vec<_> = yaml_files(&mapped)
        .into_iter()
        .filter(|(stem, _)| !stem.ends_with("_sums") || label_is_holder(&original))
        .collect();
    assert_eq!(files.len(), 1, "{label}");
    let nodes = files[0].1["nodes"].as_object().unwrap();
    let by_id: std::collections::HashMap<&str, &serde_json::Value> = nodes
        .values()
        .filter_map(|n| Some((n.get("corezoid_id")?.as_str()?, n)))
        .collect();
    let originals = original["nodes"].as_object().unwrap();
    for ((id, title), (name, node)) in ids.iter().zip(originals) {
        let kind = node["type"].as_str().unwrap();
        let Some(back) = by_id.get(id.as_str()) else {
            // Only a node reached through an exit Corezoid has no place for (a delay's
            // `on_error`) may go, and the import says so.
            assert!(
                stdout.contains(&format!("node {id} (")) && stdout.contains("not reachable"),
                "{label}: node `{name}` ({title}) was lost by the logics mapping: {stdout}{stderr}"
            );
            continue;
        };
        // Kinds Corezoid has no node for are approximated (an escalation holds a task
        // as a node with no logic; a `render` set_param is not Corezoid's).
        let same = match kind {
            "escalation" => true,
            "set_param" if node.get("render").is_some() => true,
            "delay" => back["type"] == "delay",
            other => back["type"] == other,
        };
        assert!(same, "{label}: `{name}` is a {kind}, mapped back as {back}");
    }
}

#[test]
fn export_then_import_gives_every_shipped_process_and_sample_back() {
    let d = DataDir::new();
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(repo_root().join("processes"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 7, "{files:?}");
    // The samples, imported first: their YAML is the p of the round trip.
    let mut samples: Vec<String> = std::fs::read_dir(repo_root().join("tests/corezoid"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    samples.sort();
    assert!(samples.len() >= 5, "{samples:?}");
    for name in &samples {
        let out = d.path().join(format!("sample-{name}"));
        d.ok(&[
            "process",
            "import",
            &sample(name),
            "--out",
            &out.to_string_lossy(),
            "--allow-partial",
        ]);
        for (stem, _) in yaml_files(&out) {
            files.push(out.join(format!("{stem}.yaml")));
        }
    }
    for (i, file) in files.iter().enumerate() {
        round_trip(&d, file, &format!("p{i}"));
    }
}

#[test]
fn a_cloned_process_exports_from_the_store_and_comes_back_the_same() {
    let d = DataDir::new();
    let file = repo_root().join("processes/bitrix_oauth.yaml");
    d.ok(&[
        "process",
        "clone",
        &file.to_string_lossy(),
        "--alias",
        "oauth",
    ]);
    let export = d.ok(&["process", "export", "@oauth", "--format", "corezoid"]);
    let parsed: serde_json::Value = serde_json::from_str(&export).expect("the export is JSON");
    assert_eq!(parsed[0]["obj_type"], 1);
    assert!(parsed[0]["obj_id"].as_u64().is_some(), "{export}");
    let nodes = parsed[0]["scheme"]["nodes"].as_array().unwrap();
    assert!(nodes.iter().any(|n| n["obj_type"] == 1), "a start node");
    let written = d.path().join("oauth.json");
    std::fs::write(&written, &export).unwrap();
    let back = d.path().join("back");
    d.ok(&[
        "process",
        "import",
        &written.to_string_lossy(),
        "--out",
        &back.to_string_lossy(),
    ]);
    let original: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(yaml_files(&back)[0].1, original);
    let (code, _, stderr) = d.run(&["process", "export", "@nope", "--format", "corezoid"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no process @nope"), "{stderr}");
}

/// The task is gone: its final node does not keep it.
fn assert_removed(d: &DataDir, process: &str, reference: &str) {
    let (code, stdout, stderr) = d.run(&["task", "show", process, reference]);
    assert_eq!(code, 1, "{reference} was kept: {stdout}");
    assert!(stderr.contains("no task"), "{stderr}");
}

/// How many tasks entered `node` (its `total` counter).
fn entered(d: &DataDir, process: &str, node: &str) -> u64 {
    let shown = d.json(&["process", "show", process]);
    shown["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["id"] == node))
        .and_then(|n| n["total"].as_u64())
        .unwrap_or_else(|| panic!("no node `{node}`: {shown}"))
}

/// What the Stripe stand-in saw: each request's method, path, Authorization and body.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, String, String, String)>>>;

/// A local stand-in for the two Stripe endpoints the checkout sample calls.
fn stripe_stand_in() -> (String, Seen) {
    use axum::extract::Path as UrlPath;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};
    let seen: Seen = Seen::default();
    let auth = |headers: &HeaderMap| {
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (get_seen, post_seen) = (seen.clone(), seen.clone());
    let router = axum::Router::new()
        .route(
            "/v1/customers/{id}",
            get(move |UrlPath(id): UrlPath<String>, headers: HeaderMap| {
                let seen = get_seen.clone();
                async move {
                    seen.lock().unwrap().push((
                        "GET".into(),
                        format!("/v1/customers/{id}"),
                        auth(&headers),
                        String::new(),
                    ));
                    match id.as_str() {
                        "cus_flaky" => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            axum::Json(serde_json::json!({"error": {"message": "try later"}})),
                        ),
                        // Stripe answers a deleted customer with another object.
                        "cus_gone" => (
                            StatusCode::OK,
                            axum::Json(serde_json::json!({"id": "cus_other", "deleted": true})),
                        ),
                        _ => (
                            StatusCode::OK,
                            axum::Json(serde_json::json!({"id": id, "object": "customer"})),
                        ),
                    }
                }
            }),
        )
        .route(
            "/v1/checkout/sessions",
            post(move |headers: HeaderMap, body: String| {
                let seen = post_seen.clone();
                async move {
                    let content_type = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    seen.lock().unwrap().push((
                        "POST".into(),
                        format!("/v1/checkout/sessions [{content_type}]"),
                        auth(&headers),
                        body.clone(),
                    ));
                    axum::Json(serde_json::json!({
                        "id": "cs_test_1",
                        "object": "checkout.session",
                        "url": "https://checkout.example/cs_test_1",
                        "echo": body,
                    }))
                }
            }),
        );
    let address = crate::support::http_server(router);
    (format!("http://{address}"), seen)
}

#[test]
fn the_stripe_checkout_sample_runs_against_a_local_stripe() {
    let d = DataDir::new();
    let (base, seen) = stripe_stand_in();
    // Imported as is (no --allow-partial: its raw `api` and its Sum map), then pointed
    // at the stand-in, as a user points a copy at a test server.
    let out = d.path().join("stripe");
    d.ok(&[
        "process",
        "import",
        &sample("01_stripe-checkout.conv.json"),
        "--out",
        &out.to_string_lossy(),
    ]);
    let main = out.join("example_check_customer_and_make_checkout.yaml");
    let text = std::fs::read_to_string(&main).unwrap();
    assert_eq!(text.matches("https://api.stripe.com").count(), 2, "{text}");
    std::fs::write(&main, text.replace("https://api.stripe.com", &base)).unwrap();
    let holder = out.join("example_check_customer_and_make_checkout_sums.yaml");
    for file in [&main, &holder] {
        let checked = d.ok(&["process", "check", &file.to_string_lossy()]);
        assert!(checked.contains(": ok"), "{checked}");
    }
    d.ok(&[
        "process",
        "clone",
        &holder.to_string_lossy(),
        "--alias",
        "example_check_customer_and_make_checkout_sums",
    ]);
    d.ok(&[
        "process",
        "clone",
        &main.to_string_lossy(),
        "--alias",
        "checkout",
    ]);
    let price = "price_1OZ9f9IvuXypwENBLpQz1Zqt";
    for (reference, customer, price) in [
        ("paid", "cus_ok", price),
        ("gone", "cus_gone", price),
        ("flaky", "cus_flaky", price),
        ("no-price", "cus_ok", "price_unknown"),
    ] {
        d.ok(&[
            "task",
            "add",
            "@checkout",
            "--ref",
            reference,
            &format!("customer={customer}"),
            "mode=payment",
            &format!("priceId={price}"),
            "secretKey=sk_test_123",
            "successUrl=https://shop.example/thanks?a=1&b=2",
        ]);
    }
    d.ok(&["run", "--until-idle"]);

    // The customer is found; the session is created with a form body built by the
    // sample's JavaScript and sent raw.
    let paid = d.json(&["task", "show", "@checkout", "paid"]);
    assert_eq!(paid["node"], "final_2", "{paid}");
    assert_eq!(paid["status"], "done", "{paid}");
    assert_eq!(paid["data"]["responseBody"]["id"], "cs_test_1", "{paid}");
    let requests = seen.lock().unwrap().clone();
    let post = requests
        .iter()
        .find(|r| r.0 == "POST")
        .expect("the checkout session was created");
    assert!(
        post.1.contains("application/x-www-form-urlencoded"),
        "{post:?}"
    );
    assert_eq!(post.2, "Bearer sk_test_123");
    assert_eq!(
        post.3,
        format!(
            "success_url=https%3A%2F%2Fshop.example%2Fthanks%3Fa%3D1%26b%3D2&mode=payment&line_items[0][price]={price}&line_items[0][quantity]=1&customer=cus_ok"
        )
    );
    assert_eq!(
        requests.iter().filter(|r| r.0 == "POST").count(),
        1,
        "{requests:?}"
    );

    // Another customer comes back: the sample replies `customer_not_found` and ends in
    // a final node without `save_task`, so (as in Corezoid) the task is not kept; the
    // node's counter says it got there.
    assert_removed(&d, "@checkout", "gone");
    // A price the sample does not sell: `price_not_found`, and Stripe is not called.
    assert_removed(&d, "@checkout", "no-price");
    assert_eq!(entered(&d, "@checkout", "final"), 1);
    assert_eq!(entered(&d, "@checkout", "final_4"), 1);

    // Stripe unavailable: the Sum node counts the retry in its holder, and the task
    // waits 30 s before it calls again.
    let flaky = d.json(&["task", "show", "@checkout", "flaky"]);
    assert_eq!(flaky["node"], "node_1317c2", "{flaky}");
    assert_eq!(flaky["status"], "waiting", "{flaky}");
    let sums = d.json(&[
        "task",
        "show",
        "@example_check_customer_and_make_checkout_sums",
        "68cd541ee552e8d5701317b0",
    ]);
    assert_eq!(sums["data"]["http_retries"], 1, "{sums}");
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.1 == "/v1/customers/cus_flaky")
            .count(),
        1
    );
}

#[test]
fn the_stubbed_rpc_sample_calls_a_local_stand_in_process_and_hears_its_failure() {
    let d = DataDir::new();
    let out = d.path().join("rpc");
    d.ok(&[
        "process",
        "import",
        &sample("06_stubbed-api-rpc.conv.json"),
        "--out",
        &out.to_string_lossy(),
    ]);
    // The sample calls Corezoid process 123456, which is not in the export: a local
    // stand-in takes its place, as a user gives the called process an alias.
    let main = out.join("stubbed_api_rpc.yaml");
    let text = std::fs::read_to_string(&main).unwrap();
    assert!(text.contains("process: '123456'"), "{text}");
    assert_eq!(text.matches("keep: 0").count(), 1, "{text}");
    std::fs::write(
        &main,
        text.replace("'123456'", "'@objects'")
            .replace("keep: 0", "keep: 1d"),
    )
    .unwrap();
    let stand_in = d.path().join("objects.yaml");
    std::fs::write(
        &stand_in,
        r#"
process: objects
params:
  objId: { required: true }
nodes:
  start: { type: start, next: known }
  known:
    type: condition
    branches:
      - when: [ { param: objId, fn: more, value: 0, cast: number } ]
        next: answer
    else: unknown
  answer: { type: reply, data: { name: "object {{objId}}", found: true }, next: done }
  done: { type: final }
  unknown: { type: final, status: error }
"#,
    )
    .unwrap();
    for file in [&main, &stand_in] {
        let checked = d.ok(&["process", "check", &file.to_string_lossy()]);
        assert!(checked.contains(": ok"), "{checked}");
    }
    d.ok(&[
        "process",
        "clone",
        &stand_in.to_string_lossy(),
        "--alias",
        "objects",
    ]);
    d.ok(&[
        "process",
        "clone",
        &main.to_string_lossy(),
        "--alias",
        "rpc",
    ]);
    d.ok(&["task", "add", "@rpc", "--ref", "known", "objId=42"]);
    d.ok(&["task", "add", "@rpc", "--ref", "unknown", "objId=-1"]);
    d.ok(&["run", "--until-idle"]);
    let known = d.json(&["task", "show", "@rpc", "known"]);
    assert_eq!(known["node"], "final", "{known}");
    assert_eq!(known["data"]["name"], "object 42", "{known}");
    assert_eq!(known["data"]["found"], true, "{known}");
    // The called task fails: the caller is told at once and takes its error route
    // (Corezoid would leave it waiting). That final node does not say `save_task`, so
    // the task would be gone at once: the test keeps it to look at (as a user ticks
    // "Save the task" in Corezoid).
    let unknown = d.json(&["task", "show", "@rpc", "unknown"]);
    assert_eq!(unknown["node"], "error", "{unknown}");
    assert_eq!(
        unknown["data"]["__conveyor_rpc_return_type_tag__"], "rpc_callee_failed",
        "{unknown}"
    );
}

#[test]
fn the_envelope_sample_imports_checks_and_waits_in_its_timer() {
    let d = DataDir::new();
    let out = d.path().join("envelope");
    d.ok(&[
        "process",
        "import",
        &sample("00_envelope_obj_scheme_get_example.json"),
        "--out",
        &out.to_string_lossy(),
        "--clone",
    ]);
    let checked = d.ok(&[
        "process",
        "check",
        &out.join("process_1.yaml").to_string_lossy(),
    ]);
    assert!(checked.contains(": ok"), "{checked}");
    d.ok(&["task", "add", "@process_1", "--ref", "t"]);
    d.ok(&["run", "--until-idle"]);
    // It calls no service: its one node is a 30 s timer, and the task waits in it.
    let task = d.json(&["task", "show", "@process_1", "t"]);
    assert_eq!(task["node"], "process", "{task}");
    assert_eq!(task["status"], "waiting", "{task}");
    let wake =
        task["wake_at"].as_i64().unwrap_or_default() - task["changed"].as_i64().unwrap_or_default();
    assert!((29_000..=31_000).contains(&wake), "{task}");
}

#[test]
fn a_sum_read_by_node_id_sees_every_addition_at_run_time() {
    let d = DataDir::new();
    // Corezoid reads a Sum node's total as `{{node[ID].SumID}}`; the import points it at
    // the holder task that keeps the sums.
    let export = d.path().join("tally.json");
    std::fs::write(
        &export,
        r#"{"obj_type": 1, "obj_id": 90, "title": "Tally", "scheme": {"nodes": [
          {"id": "s", "obj_type": 1, "condition": {"logics": [{"type": "go", "to_node_id": "5f00aa"}]}},
          {"id": "5f00aa", "obj_type": 0, "title": "Count", "condition": {"logics": [
            {"type": "api_sum", "extra": [{"id": "S1", "name": "hits", "value": "1"}, {"id": "S2", "name": "amount", "value": "{{n}}"}]},
            {"type": "go", "to_node_id": "5f00ab"}]}},
          {"id": "5f00ab", "obj_type": 0, "title": "Hold", "condition": {"logics": [
            {"type": "api_callback"}, {"type": "go", "to_node_id": "5f00bb"}]}},
          {"id": "5f00bb", "obj_type": 0, "title": "Read", "condition": {"logics": [
            {"type": "set_param", "extra": {"hits": "{{node[5f00aa].S1}}", "amount": "{{node[5f00aa].amount}}", "held": "{{node[5f00ab].count}}"},
             "extra_type": {"hits": "number", "amount": "number", "held": "number"}, "err_node_id": "5f00ee"},
            {"type": "go", "to_node_id": "5f00cc"}]}},
          {"id": "5f00cc", "obj_type": 2, "title": "End", "options": "{\"save_task\":true}", "condition": {"logics": []}},
          {"id": "5f00ee", "obj_type": 2, "title": "Failed", "extra": "{\"icon\":\"error\"}", "condition": {"logics": []}}
        ]}}"#,
    )
    .unwrap();
    d.ok(&["process", "import", &export.to_string_lossy(), "--clone"]);
    d.ok(&["task", "add", "@tally", "--ref", "a", "n=5"]);
    d.ok(&["task", "add", "@tally", "--ref", "b", "n=7"]);
    d.ok(&["run", "--until-idle"]);
    // Both wait in Hold; the holder has both additions.
    d.ok(&["task", "modify", "@tally", "a", "go=1"]);
    d.ok(&["run", "--until-idle"]);
    let a = d.json(&["task", "show", "@tally", "a"]);
    assert_eq!(a["node"], "end", "{a}");
    assert_eq!(a["data"]["hits"], 2, "{a}");
    assert_eq!(a["data"]["amount"], 12, "{a}");
    // The count is read by the imported node name, as of the start of the step that
    // reads it (`a` was still held then, beside `b`).
    assert_eq!(a["data"]["held"], 2, "{a}");
    d.ok(&["task", "modify", "@tally", "b", "go=1"]);
    d.ok(&["run", "--until-idle"]);
    let b = d.json(&["task", "show", "@tally", "b"]);
    assert_eq!(b["node"], "end", "{b}");
    assert_eq!(b["data"]["hits"], 2, "{b}");
    assert_eq!(b["data"]["held"], 1, "{b}");
}

#[test]
fn an_api_call_in_corezoid_format_wraps_its_params_and_takes_res_data() {
    use axum::routing::post;
    let seen: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>> = Default::default();
    let log = seen.clone();
    // A service that speaks Corezoid's own format: it answers `ops[0].data.amount`
    // doubled, and refuses an amount of 0 with a `proc` that is not `ok`.
    let router = axum::Router::new().route(
        "/corezoid",
        post(move |body: axum::Json<serde_json::Value>| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(body.0.clone());
                let amount = body.0["ops"][0]["data"]["amount"]
                    .as_str()
                    .and_then(|a| a.parse::<i64>().ok())
                    .unwrap_or(0);
                axum::Json(match amount {
                    0 => serde_json::json!({"request_proc": "ok", "ops": [{"proc": "error", "description": "no amount"}]}),
                    -1 => serde_json::json!({"request_proc": "ok", "ops": []}),
                    _ => serde_json::json!({"request_proc": "ok", "ops": [{"proc": "ok", "res_data": {"doubled": amount * 2}}]}),
                })
            }
        }),
    );
    let address = crate::support::http_server(router);
    let d = DataDir::new();
    let export = d.path().join("cz.json");
    std::fs::write(
        &export,
        serde_json::json!({"obj_type": 1, "obj_id": 40, "title": "Legacy", "scheme": {"nodes": [
          {"id": "s", "obj_type": 1, "condition": {"logics": [{"type": "go", "to_node_id": "a"}]}},
          {"id": "a", "obj_type": 0, "title": "Ask", "condition": {"logics": [
            {"type": "api", "format": "corezoid", "method": "POST", "url": format!("http://{address}/corezoid"),
             "extra": {"amount": "{{amount}}"}, "extra_type": {"amount": "string"}, "err_node_id": "f"},
            {"type": "go", "to_node_id": "e"}]}},
          {"id": "e", "obj_type": 2, "title": "End", "options": "{\"save_task\":true}", "condition": {"logics": []}},
          {"id": "f", "obj_type": 2, "title": "Failed", "extra": "{\"icon\":\"error\"}", "options": "{\"save_task\":true}", "condition": {"logics": []}}
        ]}})
        .to_string(),
    )
    .unwrap();
    // Mapped, not listed: no --allow-partial.
    d.ok(&["process", "import", &export.to_string_lossy(), "--clone"]);
    d.ok(&["task", "add", "@legacy", "--ref", "ok", "amount=21"]);
    d.ok(&["task", "add", "@legacy", "--ref", "refused", "amount=0"]);
    d.ok(&["task", "add", "@legacy", "--ref", "empty", "amount=-1"]);
    d.ok(&["run", "--until-idle"]);
    let ok = d.json(&["task", "show", "@legacy", "ok"]);
    assert_eq!(ok["node"], "end", "{ok}");
    assert_eq!(ok["data"]["doubled"], 42, "{ok}");
    assert!(
        ok["data"].get("request_proc").is_none(),
        "only res_data: {ok}"
    );
    let refused = d.json(&["task", "show", "@legacy", "refused"]);
    assert_eq!(refused["node"], "failed", "{refused}");
    assert_eq!(
        refused["data"]["__conveyor_api_return_type_tag__"], "api_bad_answer",
        "{refused}"
    );
    assert!(
        refused["data"]["__conveyor_api_return_description__"]
            .as_str()
            .unwrap_or("")
            .contains("no amount"),
        "{refused}"
    );
    let empty = d.json(&["task", "show", "@legacy", "empty"]);
    assert_eq!(
        empty["data"]["__conveyor_api_return_type_tag__"], "api_no_ops",
        "{empty}"
    );
    // What was sent: one op of type data naming the task, its process and node.
    let sent = seen.lock().unwrap().clone();
    assert_eq!(sent.len(), 3, "{sent:?}");
    let op = sent
        .iter()
        .map(|b| &b["ops"][0])
        .find(|op| op["ref"] == "ok")
        .expect("the op of task `ok`");
    assert_eq!(op["type"], "data", "{op}");
    assert_eq!(op["data"], serde_json::json!({"amount": "21"}), "{op}");
    assert_eq!(op["node_id"], "ask", "{op}");
    assert!(
        op["obj_id"].as_u64().is_some() && op["conv_id"].as_u64().is_some(),
        "{op}"
    );
}

#[test]
fn get_from_queue_takes_the_oldest_or_newest_queued_task_and_sends_it_on() {
    let d = DataDir::new();
    let worker = |id: i64, title: &str, order: &str, queue: &str| {
        serde_json::json!({"obj_type": 1, "obj_id": id, "title": title, "scheme": {"nodes": [
          {"id": format!("{id}s"), "obj_type": 1, "condition": {"logics": [{"type": "go", "to_node_id": format!("{id}g")}]}},
          {"id": format!("{id}g"), "obj_type": 0, "title": "Take", "condition": {"logics": [
            {"type": "api_get_task", "conv_id": 70, "node_id": queue, "order_by": order, "err_node_id": format!("{id}e")},
            {"type": "go", "to_node_id": format!("{id}d")}]}},
          {"id": format!("{id}d"), "obj_type": 2, "title": "Got", "options": "{\"save_task\":true}", "condition": {"logics": []}},
          {"id": format!("{id}e"), "obj_type": 2, "title": "Empty", "extra": "{\"icon\":\"error\"}", "options": "{\"save_task\":true}", "condition": {"logics": []}}
        ]}})
    };
    let export = serde_json::json!([
        {"obj_type": 1, "obj_id": 70, "title": "Orders", "scheme": {"nodes": [
          {"id": "70s", "obj_type": 1, "condition": {"logics": [{"type": "go", "to_node_id": "65f0000000000000000000q1"}]}},
          {"id": "65f0000000000000000000q1", "obj_type": 0, "title": "Waiting orders", "condition": {"logics": [
            {"type": "api_queue", "data": {}, "data_type": {}},
            {"type": "go", "to_node_id": "65f0000000000000000000d1"}]}},
          {"id": "65f0000000000000000000d1", "obj_type": 2, "title": "Shipped", "options": "{\"save_task\":true}", "condition": {"logics": []}}
        ]}},
        worker(71, "Worker", "ASC", "65f0000000000000000000q1"),
        worker(72, "Lifo", "DESC", "65f0000000000000000000q1"),
        worker(73, "Wrong", "ASC", "65f0000000000000000000d1"),
    ]);
    let file = d.path().join("queue.json");
    std::fs::write(&file, export.to_string()).unwrap();
    let out = d.path().join("queue");
    d.ok(&[
        "process",
        "import",
        &file.to_string_lossy(),
        "--out",
        &out.to_string_lossy(),
        "--clone",
    ]);
    let worker_yaml = std::fs::read_to_string(out.join("worker.yaml")).unwrap();
    assert!(worker_yaml.contains("type: get_task"), "{worker_yaml}");
    assert!(
        worker_yaml.contains("node: waiting_orders"),
        "{worker_yaml}"
    );
    assert!(worker_yaml.contains("'@orders'"), "{worker_yaml}");
    for (reference, item) in [("o1", "first"), ("o2", "second"), ("o3", "third")] {
        d.ok(&[
            "task",
            "add",
            "@orders",
            "--ref",
            reference,
            &format!("item={item}"),
        ]);
        d.ok(&["run", "--until-idle"]);
    }
    for reference in ["o1", "o2", "o3"] {
        let order = d.json(&["task", "show", "@orders", reference]);
        assert_eq!(order["node"], "waiting_orders", "{order}");
        assert_eq!(order["status"], "waiting", "{order}");
    }
    // The oldest is taken first; the newest by a DESC Get from Queue.
    d.ok(&["task", "add", "@worker", "--ref", "w1"]);
    d.ok(&["task", "add", "@lifo", "--ref", "l1"]);
    d.ok(&["run", "--until-idle"]);
    let w1 = d.json(&["task", "show", "@worker", "w1"]);
    assert_eq!(w1["node"], "got", "{w1}");
    assert_eq!(w1["data"]["__queue_task_data__"]["item"], "first", "{w1}");
    let o1 = d.json(&["task", "show", "@orders", "o1"]);
    assert_eq!(w1["data"]["__queue_task_id__"], o1["id"], "{w1} {o1}");
    assert_eq!(o1["node"], "shipped", "the taken task goes on: {o1}");
    let l1 = d.json(&["task", "show", "@lifo", "l1"]);
    assert_eq!(l1["data"]["__queue_task_data__"]["item"], "third", "{l1}");
    assert_eq!(
        d.json(&["task", "show", "@orders", "o3"])["node"],
        "shipped"
    );
    assert_eq!(
        d.json(&["task", "show", "@orders", "o2"])["node"],
        "waiting_orders"
    );
    // Two takers at once: one gets o2, the other finds the queue empty.
    d.ok(&["task", "add", "@worker", "--ref", "w2"]);
    d.ok(&["task", "add", "@worker", "--ref", "w3"]);
    d.ok(&["run", "--until-idle"]);
    let w2 = d.json(&["task", "show", "@worker", "w2"]);
    let w3 = d.json(&["task", "show", "@worker", "w3"]);
    let (got, empty) = if w2["node"] == "got" {
        (w2, w3)
    } else {
        (w3, w2)
    };
    assert_eq!(
        got["data"]["__queue_task_data__"]["item"], "second",
        "{got}"
    );
    assert_eq!(empty["node"], "empty", "{empty}");
    assert_eq!(
        empty["data"]["__conveyor_get_task_return_type_tag__"], "not_found_task",
        "{empty}"
    );
    // A node that is not a queue is Corezoid's `queue_wrong_logic`.
    d.ok(&["task", "add", "@wrong", "--ref", "x"]);
    d.ok(&["run", "--until-idle"]);
    let x = d.json(&["task", "show", "@wrong", "x"]);
    assert_eq!(x["node"], "empty", "{x}");
    assert_eq!(
        x["data"]["__conveyor_get_task_return_type_tag__"], "queue_wrong_logic",
        "{x}"
    );
}

#[test]
fn a_count_semaphor_sends_one_alert_each_time_the_node_crosses_its_threshold() {
    let d = DataDir::new();
    // Corezoid's `count` semaphor: when 3 tasks or more wait in Hold, a signal task with
    // start "true" goes to the escalation; when they drop below, one with "false".
    let export = d.path().join("crowd.json");
    std::fs::write(
        &export,
        r#"{"obj_type": 1, "obj_id": 50, "title": "Crowd", "scheme": {"nodes": [
          {"id": "s", "obj_type": 1, "condition": {"logics": [{"type": "go", "to_node_id": "h"}]}},
          {"id": "h", "obj_type": 0, "title": "Hold", "condition": {"logics": [
            {"type": "api_callback"}, {"type": "go", "to_node_id": "e"}],
            "semaphors": [{"type": "count", "value": 3, "esc_node_id": "x"}]}},
          {"id": "x", "obj_type": 3, "title": "Too many", "condition": {"logics": [
            {"type": "go_if_const", "to_node_id": "on", "conditions": [{"param": "start", "const": "true", "fun": "eq", "cast": "string"}]},
            {"type": "go", "to_node_id": "off"}]}},
          {"id": "on", "obj_type": 2, "title": "Alert on", "options": "{\"save_task\":true}", "condition": {"logics": []}},
          {"id": "off", "obj_type": 2, "title": "Alert off", "options": "{\"save_task\":true}", "condition": {"logics": []}},
          {"id": "e", "obj_type": 2, "title": "End", "condition": {"logics": []}}
        ]}}"#,
    )
    .unwrap();
    let out = d.path().join("crowd");
    d.ok(&[
        "process",
        "import",
        &export.to_string_lossy(),
        "--out",
        &out.to_string_lossy(),
        "--clone",
    ]);
    let yaml = std::fs::read_to_string(out.join("crowd.yaml")).unwrap();
    assert!(yaml.contains("alert: 3 -> too_many"), "{yaml}");
    let alerts = |d: &DataDir| -> Vec<(String, serde_json::Value)> {
        let list = d.json(&["task", "list", "@crowd"]);
        list.as_array()
            .unwrap()
            .iter()
            .filter(|t| t["node"] == "alert_on" || t["node"] == "alert_off")
            .map(|t| (t["node"].as_str().unwrap().to_string(), t.clone()))
            .collect()
    };
    for (i, reference) in ["a", "b"].iter().enumerate() {
        d.ok(&["task", "add", "@crowd", "--ref", reference]);
        d.ok(&["run", "--until-idle"]);
        assert!(alerts(&d).is_empty(), "{} held: no alert yet", i + 1);
    }
    d.ok(&["task", "add", "@crowd", "--ref", "c"]);
    d.ok(&["run", "--until-idle"]);
    let sent = alerts(&d);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, "alert_on", "{sent:?}");
    // A fourth task: still over, no second alert.
    d.ok(&["task", "add", "@crowd", "--ref", "d"]);
    d.ok(&["run", "--until-idle"]);
    assert_eq!(alerts(&d).len(), 1);
    // Down to 2 (below 3): one "false" signal, even though two leave.
    for reference in ["a", "b"] {
        d.ok(&["task", "modify", "@crowd", reference, "go=1"]);
        d.ok(&["run", "--until-idle"]);
    }
    let sent = alerts(&d);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(
        sent.iter().filter(|(node, _)| node == "alert_off").count(),
        1,
        "{sent:?}"
    );
    // Over again: a new "true" signal.
    d.ok(&["task", "add", "@crowd", "--ref", "e"]);
    d.ok(&["run", "--until-idle"]);
    let sent = alerts(&d);
    assert_eq!(
        sent.iter().filter(|(node, _)| node == "alert_on").count(),
        2,
        "{sent:?}"
    );
    // The crowding tasks never moved.
    for reference in ["c", "d", "e"] {
        assert_eq!(
            d.json(&["task", "show", "@crowd", reference])["node"],
            "hold"
        );
    }
}

#[test]
fn a_final_node_keeps_its_tasks_only_with_save_task() {
    let d = DataDir::new();
    let out = d.path().join("archive");
    d.ok(&[
        "process",
        "import",
        &sample("11_own_save_task.json"),
        "--out",
        &out.to_string_lossy(),
        "--clone",
    ]);
    for (reference, end) in [("a", "saved"), ("b", "other"), ("c", "unticked")] {
        d.ok(&[
            "task",
            "add",
            "@own_archive_or_not",
            "--ref",
            reference,
            &format!("end={end}"),
        ]);
    }
    d.ok(&["run", "--until-idle"]);
    // "Save the tasks in an archive": kept, and shown where it ended.
    let a = d.json(&["task", "show", "@own_archive_or_not", "a"]);
    assert_eq!(a["node"], "archived", "{a}");
    assert_eq!(a["status"], "done", "{a}");
    let kept = a["wake_at"].as_i64().unwrap_or_default() - a["changed"].as_i64().unwrap_or(0);
    assert_eq!(kept, 31 * 86_400_000, "kept for 31 days: {a}");
    // Not ticked (or no options at all): gone at once, ref free again.
    assert_removed(&d, "@own_archive_or_not", "b");
    assert_removed(&d, "@own_archive_or_not", "c");
    assert_eq!(entered(&d, "@own_archive_or_not", "not_archived"), 1);
    assert_eq!(entered(&d, "@own_archive_or_not", "unticked"), 1);
    d.ok(&[
        "task",
        "add",
        "@own_archive_or_not",
        "--ref",
        "b",
        "end=saved",
    ]);
}

/// What a stand-in saw: path and query, content type, body.
type Requests = std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>;

/// A stand-in that records every request and answers `/reply/CODE` with that status and
/// no body, anything else with `{"seen": PATH}`.
fn recording_stand_in() -> (String, Requests) {
    use axum::http::{HeaderMap, StatusCode, Uri};
    let seen = Requests::default();
    let log = seen.clone();
    let router = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: String| {
        let log = log.clone();
        async move {
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            log.lock()
                .unwrap()
                .push((uri.to_string(), content_type, body));
            match uri.path().strip_prefix("/reply/") {
                Some(code) => (
                    StatusCode::from_u16(code.parse().unwrap_or(500))
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    String::new(),
                ),
                None => (
                    StatusCode::OK,
                    serde_json::json!({"seen": uri.path()}).to_string(),
                ),
            }
        }
    });
    let address = crate::support::http_server(router);
    (format!("http://{address}"), seen)
}

#[test]
fn api_options_sign_with_send_sys_send_xml_and_check_replies_as_imported() {
    use sha1::Digest as _;
    const SECRET: &str = "S3CRET-sys-4242";
    let d = DataDir::new();
    let (base, seen) = recording_stand_in();
    let out = d.path().join("api");
    d.ok(&[
        "process",
        "import",
        &sample("12_own_api_options.json"),
        "--out",
        &out.to_string_lossy(),
    ]);
    let file = out.join("own_api_options.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("corezoid-secret-never-copied"), "{text}");
    std::fs::write(&file, text.replace("http://stand-in.invalid", &base)).unwrap();
    d.ok(&[
        "process",
        "clone",
        &file.to_string_lossy(),
        "--alias",
        "api",
        "--set",
        &format!("sys_secret={SECRET}"),
    ]);
    let order = r##"{"@id": "o-7", "note": "<b>Tea & 'cake'</b>", "item": [{"@sku": "x1", "#value": 2}, {"@sku": "x2", "#value": 1}]}"##;
    d.ok(&[
        "task",
        "add",
        "@api",
        "--ref",
        "ok",
        "amount:=5",
        &format!("order:={order}"),
        "status=202",
    ]);
    d.ok(&[
        "task",
        "add",
        "@api",
        "--ref",
        "empty",
        "amount:=6",
        r#"order:={"@id": "o-8"}"#,
        "status=200",
    ]);
    d.ok(&[
        "task",
        "add",
        "@api",
        "--ref",
        "hostile",
        "amount:=7",
        r#"order:={"bad name><x": "1"}"#,
        "status=202",
    ]);
    let run = d
        .command(&["run", "--until-idle"])
        .env("CONVEYOR_LOG", "trace")
        .output()
        .unwrap();
    assert!(run.status.success());
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let requests = seen.lock().unwrap().clone();

    // send_sys: the URL carries conv_id, conv_time and the signature over the body as
    // sent, and the body a `sys` object naming the task.
    let ok = d.json(&["task", "show", "@api", "ok"]);
    assert_eq!(ok["node"], "done", "{ok}");
    let signed: Vec<_> = requests
        .iter()
        .filter(|r| r.0.starts_with("/signed?"))
        .collect();
    assert_eq!(signed.len(), 3, "{requests:?}");
    let request = signed
        .iter()
        .find(|r| r.2.contains("\"amount\":5"))
        .expect("the call of task `ok`");
    let query: std::collections::HashMap<String, String> =
        reqwest::Url::parse(&format!("http://x{}", request.0))
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
    let process = d.json(&["process", "show", "@api"]);
    assert_eq!(query["conv_id"], process["id"].to_string(), "{query:?}");
    let mut hasher = sha1::Sha1::new();
    hasher.update(format!(
        "{}{SECRET}{}{SECRET}",
        query["conv_time"], request.2
    ));
    assert_eq!(query["conv_signature"], hex::encode(hasher.finalize()));
    let body: serde_json::Value = serde_json::from_str(&request.2).unwrap();
    assert_eq!(body["sys"]["ref"], "ok", "{body}");
    assert_eq!(body["sys"]["obj_id"], ok["id"], "{body}");
    assert_eq!(body["sys"]["node_id"], "signed_call", "{body}");
    assert_eq!(request.1, "application/json");
    // debug_info: the exchange's figures.
    let debug = &ok["data"]["__conveyor_api_debug__"];
    assert_eq!(debug["http_res_code"], 200, "{ok}");
    assert_eq!(debug["http_req_body_size"], request.2.len() as u64, "{ok}");
    assert_eq!(
        debug["http_res_body_size"],
        r#"{"seen":"/signed"}"#.len() as u64
    );
    assert!(debug["http_exec_time"].as_u64().is_some(), "{ok}");

    // The task's JSON as XML, escaped, with the content type the logic said.
    let xml: Vec<_> = requests.iter().filter(|r| r.0 == "/xml").collect();
    assert_eq!(
        xml.len(),
        2,
        "the hostile task never sent one: {requests:?}"
    );
    let sent = xml
        .iter()
        .find(|r| r.2.contains("o-7"))
        .expect("the XML of task `ok`");
    assert_eq!(sent.1, "application/soap+xml");
    assert_eq!(
        sent.2,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><order id=\"o-7\"><note>&lt;b&gt;Tea &amp; 'cake'&lt;/b&gt;</note><item sku=\"x1\">2</item><item sku=\"x2\">1</item></order>"
    );
    // A name that is no XML name is refused, by name, on the error route.
    let hostile = d.json(&["task", "show", "@api", "hostile"]);
    assert_eq!(hostile["node"], "failed", "{hostile}");
    assert_eq!(
        hostile["data"]["__conveyor_api_return_type_tag__"], "api_wrong_convert_param",
        "{hostile}"
    );
    assert!(
        hostile["data"]["__conveyor_api_return_description__"]
            .as_str()
            .unwrap_or("")
            .contains("`bad name><x` is not an XML name"),
        "{hostile}"
    );

    // rfc_format: an empty 202 is fine (task `ok` is done); an empty 200 is not.
    let empty = d.json(&["task", "show", "@api", "empty"]);
    assert_eq!(empty["node"], "failed", "{empty}");
    assert_eq!(
        empty["data"]["__conveyor_api_return_type_tag__"], "api_no_valid_json",
        "{empty}"
    );
    assert_eq!(empty["data"]["__conveyor_api_return_http_code__"], 200);

    // The secret is nowhere unless asked for with --reveal: not in the tasks, their
    // history, the process as shown, or the engine's logs at trace level.
    for reference in ["ok", "empty", "hostile"] {
        for args in [
            vec!["task", "show", "@api", reference],
            vec!["--json", "task", "show", "@api", reference],
            vec!["task", "history", "@api", reference],
        ] {
            let shown = d.ok(&args);
            assert!(!shown.contains(SECRET), "{args:?}: {shown}");
        }
    }
    assert!(!d.ok(&["process", "show", "@api"]).contains(SECRET));
    assert!(!logs.contains(SECRET), "the secret in the logs");
    assert!(
        requests
            .iter()
            .all(|r| !r.0.contains(SECRET) && !r.2.contains(SECRET)),
        "the secret was sent: {requests:?}"
    );
}

#[test]
fn an_absolute_time_semaphor_on_a_waiting_node_fires_at_that_time() {
    let d = DataDir::new();
    d.ok(&[
        "process",
        "import",
        &sample("13_own_dynamic_timer.json"),
        "--clone",
    ]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let process = "@own_approval_deadline";
    d.ok(&[
        "task",
        "add",
        process,
        "--ref",
        "late",
        &format!("deadline:={}", now - 10),
    ]);
    let deadline = now + 3600;
    d.ok(&[
        "task",
        "add",
        process,
        "--ref",
        "on-time",
        &format!("deadline:={deadline}"),
    ]);
    d.ok(&["run", "--until-idle"]);
    // The deadline is an absolute unix time: one already past sends the task on at once.
    let late = d.json(&["task", "show", process, "late"]);
    assert_eq!(late["node"], "too_late", "{late}");
    // The other waits for its approval until exactly that time (not that long from now).
    let waiting = d.json(&["task", "show", process, "on-time"]);
    assert_eq!(waiting["node"], "wait_for_approval", "{waiting}");
    assert_eq!(waiting["status"], "waiting", "{waiting}");
    assert_eq!(
        waiting["wake_at"].as_i64(),
        Some(deadline as i64 * 1000),
        "{waiting}"
    );
    d.ok(&["task", "modify", process, "on-time", "approved=yes"]);
    d.ok(&["run", "--until-idle"]);
    let approved = d.json(&["task", "show", process, "on-time"]);
    assert_eq!(approved["node"], "approved", "{approved}");
}

#[test]
fn a_count_of_another_processs_node_is_read_through_its_new_alias_and_name() {
    let d = DataDir::new();
    d.ok(&[
        "process",
        "import",
        &sample("14_own_cross_process_count.json"),
        "--clone",
    ]);
    for reference in ["l1", "l2"] {
        d.ok(&["task", "add", "@own_inbox", "--ref", reference]);
    }
    d.ok(&["run", "--until-idle"]);
    d.ok(&["task", "add", "@own_inbox_watcher", "--ref", "w"]);
    d.ok(&["run", "--until-idle"]);
    let w = d.json(&["task", "show", "@own_inbox_watcher", "w"]);
    assert_eq!(w["node"], "counted", "{w}");
    // `{{conv[9204].node[<id>].count}}` became `conv[@own_inbox].node[waiting_letters]`.
    assert_eq!(w["data"]["waiting"], 2, "{w}");
    assert_eq!(w["data"]["mine"], 0, "{w}");
    // One letter is read: the count follows.
    d.ok(&["task", "modify", "@own_inbox", "l1", "read=yes"]);
    d.ok(&["run", "--until-idle"]);
    d.ok(&["task", "add", "@own_inbox_watcher", "--ref", "w2"]);
    d.ok(&["run", "--until-idle"]);
    let w2 = d.json(&["task", "show", "@own_inbox_watcher", "w2"]);
    assert_eq!(w2["data"]["waiting"], 1, "{w2}");
    assert_eq!(w2["data"]["mine"], 1, "{w2}");
}

/// A task of the routes fixture: its ref, the one value changed (which, and to what),
/// and the node it must end in.
type Case<'a> = (&'a str, Option<(usize, &'a str)>, &'a str);

#[test]
fn condition_functions_casts_and_put_patch_delete_run_as_imported() {
    let d = DataDir::new();
    let (base, seen) = recording_stand_in();
    let out = d.path().join("routes");
    d.ok(&[
        "process",
        "import",
        &sample("15_own_conditions_and_methods.json"),
        "--out",
        &out.to_string_lossy(),
    ]);
    let file = out.join("own_routes_and_methods.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("http://stand-in.invalid", &base)).unwrap();
    d.ok(&[
        "process",
        "clone",
        &file.to_string_lossy(),
        "--alias",
        "routes",
    ]);
    let good = [
        "n:=5",
        "code=A-12",
        "flag:=true",
        r#"tags:=["a","b"]"#,
        r#"obj:={"k":1}"#,
    ];
    // Each case changes one value of a task that passes every check.
    let cases: [Case; 8] = [
        ("all", None, "pause"),
        ("big", Some((0, "n:=12")), "not_less"),
        ("seven", Some((0, "n:=7")), "not_less_or_equal"),
        ("three", Some((0, "n:=3")), "not_more_or_equal"),
        ("code", Some((1, "code=B-1")), "no_match"),
        ("flag", Some((2, "flag:=false")), "not_true"),
        ("tags", Some((3, r#"tags:=["b","a"]"#)), "other_tags"),
        ("obj", Some((4, r#"obj:={"k":2}"#)), "other_object"),
    ];
    for (reference, change, _) in &cases {
        let mut data: Vec<&str> = good.to_vec();
        if let Some((at, value)) = change {
            data[*at] = value;
        }
        let mut args = vec!["task", "add", "@routes", "--ref", reference];
        args.extend(data);
        d.ok(&args);
    }
    // A string "5" is cast to a number, as Corezoid casts it.
    d.ok(&[
        "task",
        "add",
        "@routes",
        "--ref",
        "text",
        "n=5",
        "code=A-7",
        "flag=true",
        r#"tags:=["a","b"]"#,
        r#"obj:={"k":1}"#,
    ]);
    d.ok(&["run", "--until-idle"]);
    for (reference, _, node) in cases.iter().chain([&("text", None, "pause")]) {
        let task = d.json(&["task", "show", "@routes", reference]);
        assert_eq!(task["node"], *node, "{reference}: {task}");
    }
    // The task that passed every check called PUT, PATCH and DELETE, then waits in
    // the delay read from `semaphores`.
    let requests = seen.lock().unwrap().clone();
    let for_all: Vec<_> = requests
        .iter()
        .filter(|r| r.0.starts_with("/items/A-12"))
        .collect();
    assert_eq!(for_all.len(), 3, "{requests:?}");
    assert_eq!(for_all[0].2, r#"{"n":5}"#);
    assert_eq!(for_all[1].2, r#"{"flag":true}"#);
    assert_eq!(for_all[2].0, "/items/A-12?why=done");
    let all = d.json(&["task", "show", "@routes", "all"]);
    let wake = all["wake_at"].as_i64().unwrap_or(0) - all["changed"].as_i64().unwrap_or(0);
    assert_eq!(wake, 30_000, "{all}");
}

#[test]
fn a_queues_data_goes_to_the_taker_and_its_capacity_holds() {
    let d = DataDir::new();
    d.ok(&[
        "process",
        "import",
        &sample("16_own_queue_data_and_capacity.json"),
        "--clone",
    ]);
    let queue = "@own_bounded_queue";
    for n in 1..=3 {
        d.ok(&[
            "task",
            "add",
            queue,
            "--ref",
            &format!("o{n}"),
            &format!("n:={n}"),
        ]);
        d.ok(&["run", "--until-idle"]);
    }
    // Two wait; the third finds the queue at its capacity of 2.
    for reference in ["o1", "o2"] {
        let waiting = d.json(&["task", "show", queue, reference]);
        assert_eq!(waiting["node"], "orders", "{waiting}");
    }
    let full = d.json(&["task", "show", queue, "o3"]);
    assert_eq!(full["node"], "queue_full", "{full}");
    assert_eq!(
        full["data"]["__conveyor_queue_return_type_tag__"], "queue_capacity_exceeded",
        "{full}"
    );
    // A taker gets the oldest, with the queue's own data rendered over it (typed).
    d.ok(&["task", "add", "@own_queue_taker", "--ref", "t1"]);
    d.ok(&["run", "--until-idle"]);
    let taker = d.json(&["task", "show", "@own_queue_taker", "t1"]);
    assert_eq!(taker["node"], "took_one", "{taker}");
    let got = &taker["data"]["__queue_task_data__"];
    assert_eq!(got["n"], 1, "{taker}");
    assert_eq!(got["label"], "order 1", "{taker}");
    assert_eq!(got["priority"], 2, "{taker}");
    let taken = d.json(&["task", "show", queue, "o1"]);
    assert_eq!(taken["node"], "taken", "{taken}");
    // Room again: a new order waits.
    d.ok(&["task", "add", queue, "--ref", "o4", "n:=4"]);
    d.ok(&["run", "--until-idle"]);
    let fourth = d.json(&["task", "show", queue, "o4"]);
    assert_eq!(fourth["node"], "orders", "{fourth}");
}

/// A queued task's secret keys stay masked in what a taker gets, after the queue's own
/// `data` is rendered over it; a secret value the queue's `data` copies into another
/// key is cut out too. Nothing the taker keeps, shows or records holds the secret.
#[test]
fn a_queued_tasks_secrets_stay_masked_after_the_queues_data_is_merged() {
    const QUEUE: &str = r#"
process: vault_queue
secrets: [token]
nodes:
  start: { type: start, next: waiting }
  waiting:
    type: queue
    next: gone
    data: { copied: "{{token}}", label: "for {{name}}" }
  gone: { type: final }
"#;
    const TAKER: &str = r#"
process: vault_taker
nodes:
  start: { type: start, next: take }
  take: { type: get_task, process: "@vault_queue", node: waiting, next: took, on_error: none }
  took: { type: final }
  none: { type: final, status: error }
"#;
    let secret = "tok-5f1c9a7e2b6d4c3a";
    let d = DataDir::new();
    d.clone_yaml("vault_queue", QUEUE, &[]);
    d.clone_yaml("vault_taker", TAKER, &[]);
    d.ok(&[
        "task",
        "add",
        "@vault_queue",
        "--ref",
        "q1",
        &format!("token={secret}"),
        "name=ada",
    ]);
    d.ok(&["run", "--until-idle"]);
    d.ok(&["task", "add", "@vault_taker", "--ref", "t1"]);
    d.ok(&["run", "--until-idle"]);
    let taker = d.json(&["task", "show", "@vault_taker", "t1"]);
    assert_eq!(taker["node"], "took", "{taker}");
    let got = &taker["data"]["__queue_task_data__"];
    // The queue's data was merged: its plain key is there, rendered.
    assert_eq!(got["label"], "for ada", "{taker}");
    assert_eq!(got["name"], "ada", "{taker}");
    // The secret key is masked, and its value copied elsewhere is cut out.
    assert_eq!(got["token"], "***", "{taker}");
    assert_eq!(got["copied"], "***", "{taker}");
    let history = d.ok(&["task", "history", "@vault_taker", "t1"]);
    let shown = d.ok(&["task", "show", "@vault_taker", "t1"]);
    let listed = d.ok(&["--json", "task", "list", "@vault_taker"]);
    for (what, text) in [
        ("show --json", taker.to_string()),
        ("history", history),
        ("show", shown),
        ("list", listed),
    ] {
        assert!(!text.contains(secret), "{what} holds the secret: {text}");
    }
}
