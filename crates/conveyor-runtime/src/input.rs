//! What the outside may set: every create and modify that comes through a door (the
//! CLI, the task API, the dashboard, a direct URL) is checked here against the process's
//! declared params before anything is stored.
//!
//! The rules (docs/processes.md, "What the outside may set"):
//! - keys starting with `__conveyor_` belong to the engine and are never taken;
//! - values given with `process clone --set` belong to the process: a door may repeat
//!   them but not change them;
//! - a declared param is taken only through the doors its `input:` names, of its
//!   `type:`, matching its `pattern:` and at most `max_length` characters long;
//! - other keys are free data (Corezoid's way), except that a modify may not change a
//!   key the process writes itself (`set_param` targets, API `response:` keys), and the
//!   direct URL of a process that declares params takes only those;
//! - the direct URL takes only the refs `direct_url.refs` allows, and makes a task
//!   without a ref only when `direct_url.new_tasks` says so.

use conveyor_model::{Door, Process};
use serde_json::{Map, Value};

use crate::{LoadedProcess, Result, Runtime, RuntimeError};

/// What a direct URL request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectOutcome {
    pub task: u64,
    pub reference: Option<String>,
    /// `created` or `modified`.
    pub action: &'static str,
}

/// Checks data given through `door` against what `loaded` accepts. Keys that repeat a
/// process setting, or (for a modify) the value the task already has, change nothing
/// and are dropped: re-running `bitrix authorize` with the same portal is not refused.
pub(crate) fn check_input(
    loaded: &LoadedProcess,
    data: &mut Map<String, Value>,
    door: Door,
    current: Option<&Map<String, Value>>,
) -> Result<()> {
    let process = &loaded.process;
    let settings = &loaded.record.settings;
    let mut undeclared = Vec::new();
    let mut repeated = Vec::new();
    // Every refusal at once: a person fixes them all in one go.
    let mut refused = Vec::new();
    for (key, value) in data.iter() {
        let mut refuse = |message: String| refused.push((key.clone(), message));
        if key.starts_with("__conveyor_") {
            refuse("keys starting with `__conveyor_` are the engine's and cannot be set".into());
            continue;
        }
        if let Some(own) = settings.get(key) {
            if own == value {
                repeated.push(key.clone());
            } else {
                refuse(format!(
                    "is set by process {} (process clone --set) and no task may change it",
                    loaded.record.id
                ));
            }
            continue;
        }
        if current.is_some_and(|c| c.get(key) == Some(value)) {
            repeated.push(key.clone());
            continue;
        }
        let Some(param) = process.params.get(key) else {
            // Free data is Corezoid's way, but not through the public URL of a process
            // that declares what it takes, and never into a key the process writes.
            let url_takes_params_only = door == Door::Url && !process.params.is_empty();
            if url_takes_params_only || (door != Door::Create && process.writes(key)) {
                undeclared.push(key.clone());
            }
            continue;
        };
        if !param.input.allows(door) {
            refuse(format!("may not be set {}", door_phrase(door)));
            continue;
        }
        if let Err(message) = check_value(process, key, value) {
            refuse(message);
        }
    }
    if !undeclared.is_empty() {
        let accepted: Vec<String> = process
            .params
            .iter()
            .filter(|(_, p)| p.input.allows(door))
            .map(|(name, _)| name.clone())
            .collect();
        return Err(RuntimeError::Undeclared {
            process: loaded.record.id,
            door: door.name(),
            keys: undeclared,
            accepted,
        });
    }
    match refused.len() {
        0 => {}
        1 => {
            let (name, message) = refused.remove(0);
            return Err(RuntimeError::Param { name, message });
        }
        _ => return Err(RuntimeError::Params(refused)),
    }
    for key in repeated {
        data.remove(&key);
    }
    Ok(())
}

/// Whether the direct URL of `loaded` may create or modify the task `reference`.
pub(crate) fn check_direct_ref(loaded: &LoadedProcess, reference: Option<&str>) -> Result<()> {
    let process = loaded.record.id;
    let rules = &loaded.process.direct_url;
    match reference {
        Some(r) => {
            if let Some(refs) = &rules.refs
                && !refs.iter().any(|allowed| allowed == r)
            {
                return Err(RuntimeError::Refused(format!(
                    "the direct URL of process {process} takes only the ref{} {}",
                    if refs.len() == 1 { "" } else { "s" },
                    refs.iter()
                        .map(|r| format!("`{r}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        None if !rules.new_tasks => {
            return Err(RuntimeError::Refused(format!(
                "the direct URL of process {process} makes no task without a `ref`"
            )));
        }
        None => {}
    }
    Ok(())
}

fn door_phrase(door: Door) -> &'static str {
    match door {
        Door::Create => "when a task is added (its `input:` does not list `create`)",
        Door::Modify => "by a modify (its `input:` does not list `modify`)",
        Door::Url => "through the direct URL (its `input:` does not list `url`)",
    }
}

/// Type, length and pattern of one declared param's value from outside.
fn check_value(process: &Process, key: &str, value: &Value) -> std::result::Result<(), String> {
    let Some(param) = process.params.get(key) else {
        return Ok(());
    };
    if value.is_null() {
        // The same as absent: `required` and `default` are for `new_task` to apply.
        return Ok(());
    }
    let refuse = |message: String| message;
    if let Some(kind) = param.kind
        && !kind.matches(value)
    {
        return Err(refuse(format!("must be of type {}", kind.name())));
    }
    let length = match value {
        Value::String(s) => s.chars().count(),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        other => json_size(other),
    };
    if length > param.max_length {
        return Err(refuse(format!(
            "is {length} characters long; at most {} are taken",
            param.max_length
        )));
    }
    if let Some(pattern) = &param.pattern {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(_) | Value::Bool(_) => value.to_string(),
            _ => return Err(refuse("must be text to match its pattern".into())),
        };
        if !pattern.is_match(&text) {
            let shown = if param.secret {
                "the value".to_string()
            } else {
                format!("`{text}`")
            };
            return Err(refuse(format!(
                "{shown} does not match the pattern `{pattern}`"
            )));
        }
    }
    Ok(())
}

/// The size in bytes of `value` as JSON, counted as it is written out (nothing is kept).
pub(crate) fn json_size<T: serde::Serialize + ?Sized>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

impl Runtime {
    /// A request to a process's direct URL: modifies the task named by `reference`, or
    /// creates one. Only the keys the process declares for `url` are taken, and only
    /// the refs `direct_url:` allows.
    pub fn direct_url(
        &self,
        process: u64,
        reference: Option<&str>,
        data: Map<String, Value>,
    ) -> Result<DirectOutcome> {
        let loaded = self.loaded(process)?;
        check_direct_ref(&loaded, reference)?;
        let id = process.to_string();
        if let Some(r) = reference
            && let Some(task) = self.store.task_by_ref(process, r)?
        {
            let reference = task.reference.clone();
            let outcome = self.modify_found(&loaded, task, data, "direct URL", Door::Url)?;
            return Ok(DirectOutcome {
                task: outcome.task,
                reference,
                action: "modified",
            });
        }
        let task = self.add_from(&id, reference, data, Door::Url)?;
        Ok(DirectOutcome {
            task: task.id,
            reference: task.reference,
            action: "created",
        })
    }
}

#[cfg(test)]
mod tests {
    use conveyor_store::{NewProcess, ProcessRecord};
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    const YAML: &str = r#"
process: p
params:
  code: { input: [create, modify, url], max_length: 8 }
  n: { type: number, input: [create] }
  server: { input: [] , default: "https://a" }
  owned: { }
nodes:
  start: { type: start, next: wait }
  wait: { type: wait_callback, next: mark }
  mark: { type: set_param, set: { result: "x" }, next: wait }
"#;

    fn loaded() -> LoadedProcess {
        let process = conveyor_model::check("p.yaml", YAML)
            .into_result()
            .expect("the test process checks");
        let mut settings = Map::new();
        settings.insert("owned".into(), json!("mine"));
        let record = ProcessRecord::first_version(
            1,
            NewProcess {
                alias: None,
                source: "p.yaml".into(),
                definition: YAML.into(),
                created: 0,
                settings,
            },
        );
        LoadedProcess { record, process }
    }

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn each_door_takes_what_the_process_allows() {
        let p = loaded();
        let check = |data: Value, door: Door| {
            let mut data = object(data);
            check_input(&p, &mut data, door, None).map(|()| data)
        };
        assert!(check(json!({"code": "c", "free": 1}), Door::Create).is_ok());
        assert!(matches!(
            check(json!({"code": "c", "free": 1}), Door::Url),
            Err(RuntimeError::Undeclared { ref keys, .. }) if keys == &["free".to_string()]
        ));
        assert!(check(json!({"n": 1}), Door::Url).is_err());
        assert!(check(json!({"n": 1}), Door::Modify).is_err());
        assert!(check(json!({"server": "http://evil"}), Door::Create).is_err());
        assert!(check(json!({"result": "forged"}), Door::Modify).is_err());
        assert!(check(json!({"result": "seed"}), Door::Create).is_ok());
        // Repeating a process value changes nothing and is dropped.
        assert_eq!(
            check(json!({"owned": "mine"}), Door::Modify).ok(),
            Some(Map::new())
        );
        match check(json!({"owned": "yours", "code": "123456789"}), Door::Create) {
            Err(RuntimeError::Params(refused)) => {
                let names: Vec<&str> = refused.iter().map(|(n, _)| n.as_str()).collect();
                assert_eq!(names, ["owned", "code"], "every refusal at once");
            }
            other => panic!("{other:?}"),
        }
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z0-9]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,4}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("code".to_string()),
            Just("n".to_string()),
            Just("server".to_string()),
            Just("owned".to_string()),
            Just("result".to_string()),
            Just("__conveyor_x".to_string()),
            "[a-z_]{1,8}",
        ]
    }

    fn door() -> impl Strategy<Value = Door> {
        prop_oneof![Just(Door::Create), Just(Door::Modify), Just(Door::Url)]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever comes in, what is let through keeps the rules: no engine keys, no
        /// changed process value, through the URL only declared url params, every
        /// declared value within its bounds.
        #[test]
        fn what_passes_keeps_the_rules(
            pairs in prop::collection::vec((key(), any_json()), 0..6),
            door in door(),
        ) {
            let p = loaded();
            let mut data: Map<String, Value> = pairs.into_iter().collect();
            if check_input(&p, &mut data, door, None).is_ok() {
                for (key, value) in &data {
                    prop_assert!(!key.starts_with("__conveyor_"));
                    prop_assert!(key != "owned", "a process value is dropped or refused");
                    if let Some(param) = p.process.params.get(key) {
                        prop_assert!(value.is_null() || param.input.allows(door));
                        if let Value::String(s) = value {
                            prop_assert!(s.chars().count() <= param.max_length);
                        }
                    } else {
                        prop_assert!(door != Door::Url, "the URL takes declared params only");
                        prop_assert!(door == Door::Create || key != "result");
                    }
                }
            }
        }
    }
}
