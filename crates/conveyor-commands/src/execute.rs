//! Runs a [`Request`] against a [`Runtime`] for a [`Caller`]: in the CLI's own process
//! when no server runs, in the server for a client, and for the dashboard. The typed
//! [`Answer`] is rendered by [`crate::render`] (CLI) or serialized (dashboard).

use conveyor_model::{NodeKind, Process};
use conveyor_runtime::{
    LoadedProcess, Recovery, Runtime, RuntimeError, TaskBy, TaskKey, mask_data,
};
use conveyor_store::{ProcessRecord, TaskStatus};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::Arc;

use crate::answer::{
    Answer, AuthorizeInfo, NodeSummary, ParamInfo, ProcessDetail, ProcessSummary, StoreStatsView,
    TaskView, TemplateInfo,
};
use crate::request::{GraphFormat, Reply, Request};
use crate::{CommandError, templates};

/// Who asks: which processes it may use, and the name its changes are recorded under.
#[derive(Debug, Clone)]
pub struct Caller {
    pub scope: Scope,
    /// `cli`, `dashboard`, `api key 7`: written into history (`modified by cli`).
    pub source: Cow<'static, str>,
    /// The API key's login, for a task API request (kept on the tasks it creates).
    pub login: Option<u64>,
}

/// What a caller may do: which processes it may use, and whether it may do what only
/// the admin may (change processes, API keys, secrets in clear, direct URLs, store
/// statistics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The admin token, the CLI on the data dir: everything.
    Admin,
    /// An API key that lists no processes: the tasks of every process, and nothing that
    /// only the admin may do. A key is never the admin, whatever its list.
    AllProcesses,
    /// An API key's session: these processes only (others do not exist for it).
    Processes(Vec<u64>),
}

impl Caller {
    /// The CLI, or a client of the server with the admin token.
    pub fn cli() -> Caller {
        Caller {
            scope: Scope::Admin,
            source: Cow::Borrowed("cli"),
            login: None,
        }
    }

    /// A task API request signed with an API key: its processes (all when the key
    /// lists none), its changes recorded as `api key LOGIN`.
    pub fn api_key(key: &conveyor_store::ApiKey) -> Caller {
        Caller {
            scope: Scope::of_key(key),
            source: Cow::Owned(format!("api key {}", key.login)),
            login: Some(key.login),
        }
    }

    pub fn may_use(&self, process: u64) -> bool {
        match &self.scope {
            Scope::Admin | Scope::AllProcesses => true,
            Scope::Processes(list) => list.contains(&process),
        }
    }

    /// What only the admin may do: secrets in clear, API keys, direct URLs (whose
    /// rotation breaks every published link), store statistics. No API key may, not
    /// even one that may use every process: a key must not widen itself.
    pub(crate) fn must_be_admin(&self, what: &'static str) -> Result<(), CommandError> {
        match self.scope {
            Scope::Admin => Ok(()),
            Scope::AllProcesses | Scope::Processes(_) => Err(CommandError::AdminOnly { what }),
        }
    }

    /// Changing a definition (cloning, importing, editing a process): the admin, or a key
    /// that may use every process (Corezoid's `conv create`); never a key limited to some
    /// processes, whose process could be made to send its secrets anywhere.
    pub(crate) fn must_use_every_process(&self, what: &'static str) -> Result<(), CommandError> {
        match self.scope {
            Scope::Admin | Scope::AllProcesses => Ok(()),
            Scope::Processes(_) => Err(CommandError::NotAllowed { what }),
        }
    }
}

impl Scope {
    /// What an API key may do: its processes, or every process when it lists none.
    pub fn of_key(key: &conveyor_store::ApiKey) -> Scope {
        if key.processes.is_empty() {
            Scope::AllProcesses
        } else {
            Scope::Processes(key.processes.clone())
        }
    }
}

/// Runs `request` and renders it as the CLI prints it (`as_json`: `--json`). Never
/// panics on input: every failure is a reply with exit code 1 (2 for a command-line
/// mistake). What a command wrote is on disk before it says so.
pub fn execute(runtime: &Runtime, request: Request, as_json: bool) -> Reply {
    match run(runtime, &Caller::cli(), request) {
        Ok(answer) => crate::render::render(&answer, as_json),
        Err(e) => Reply::failed(e.exit_code(), e),
    }
}

/// Runs `request` for `caller`; what it wrote is flushed to disk before it answers.
pub fn run(runtime: &Runtime, caller: &Caller, request: Request) -> Result<Answer, CommandError> {
    let answer = answer(runtime, caller, request)?;
    runtime.store().flush()?;
    Ok(answer)
}

/// A process drawn in `format`, with counters when given; ends with a newline.
pub fn draw(
    process: &Process,
    counts: Option<&conveyor_graph::Counts>,
    format: GraphFormat,
) -> String {
    let mut text = match format {
        GraphFormat::Dot => conveyor_graph::dot(process, counts),
        GraphFormat::Mermaid => conveyor_graph::mermaid(process, counts),
        GraphFormat::Svg => conveyor_graph::svg(process, counts),
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// The process `name` if the caller may use it; the same "no process" as for one that
/// does not exist otherwise.
pub fn resolve(
    runtime: &Runtime,
    caller: &Caller,
    name: &str,
) -> Result<Arc<LoadedProcess>, CommandError> {
    let loaded = runtime.resolve(name)?;
    if !caller.may_use(loaded.record.id) {
        return Err(RuntimeError::NoProcess(name.to_string()).into());
    }
    Ok(loaded)
}

fn answer(runtime: &Runtime, caller: &Caller, request: Request) -> Result<Answer, CommandError> {
    Ok(match request {
        Request::ProcessClone {
            source,
            definition,
            alias,
            settings,
        } => {
            caller.must_use_every_process("cloning a process")?;
            let record = runtime.clone_process(&source, &definition, alias.as_deref(), settings)?;
            let loaded = runtime.loaded(record.id)?;
            Answer::Cloned {
                id: record.id,
                alias: record.alias,
                source,
                name: loaded.process.name.clone(),
            }
        }
        Request::ProcessList => Answer::Processes {
            processes: process_list(runtime, caller)?,
        },
        Request::ProcessShow { process } => {
            let loaded = resolve(runtime, caller, &process)?;
            Answer::Process(Box::new(process_detail(runtime, &loaded)?))
        }
        Request::ProcessUpdate {
            process,
            file,
            definition,
        } => {
            caller.must_use_every_process("updating a process")?;
            let record = runtime.update_process(&process, &file, &definition)?;
            Answer::Updated {
                id: record.id,
                version: record.version,
            }
        }
        Request::ProcessGraph { process, format } => {
            let loaded = resolve(runtime, caller, &process)?;
            let counts = counts(runtime, loaded.record.id)?;
            Answer::Drawn {
                text: draw(&loaded.process, Some(&counts), format),
            }
        }
        Request::ProcessExport { process } => {
            let loaded = resolve(runtime, caller, &process)?;
            let text = conveyor_corezoid::export(&loaded.record.definition, Some(loaded.record.id))
                .map_err(|source| CommandError::Export {
                    process: process.clone(),
                    source,
                })?;
            Answer::Drawn {
                text: format!("{text}\n"),
            }
        }
        Request::Drawn(text) => Answer::Drawn { text },
        Request::ProcessUrl {
            process,
            rotate,
            base,
        } => {
            caller.must_be_admin("a direct URL")?;
            let (id, hash) = runtime.url_hash(&process, rotate)?;
            Answer::Url {
                id,
                url: format!(
                    "{}/api/1/json/public/{id}/{hash}",
                    base.trim_end_matches('/')
                ),
                rotated: rotate,
            }
        }
        Request::TaskAdd {
            process,
            reference,
            data,
        } => {
            resolve(runtime, caller, &process)?;
            let task = runtime.add_task(&process, reference.as_deref(), data)?;
            Answer::TaskAdded {
                id: task.id,
                process: task.process,
                reference: task.reference,
                node: task.node,
            }
        }
        Request::AuthorizeCode {
            process,
            reference,
            pasted,
            mut data,
        } => {
            let loaded = resolve(runtime, caller, &process)?;
            let Some(authorize) = &loaded.process.authorize else {
                return Err(CommandError::Usage(format!(
                    "process {process} declares no `authorize:` link, so it takes no code"
                )));
            };
            let Some(code) = crate::code_from(&pasted) else {
                return Err(CommandError::Usage(
                    "no code in what was pasted: paste the code, or the whole address the browser was sent to".into(),
                ));
            };
            data.insert(authorize.code.clone(), Value::String(code));
            upsert(runtime, caller, &process, reference, data)?
        }
        Request::AuthorizeLink {
            process,
            reference,
            values,
            page,
        } => authorize_link(
            runtime,
            caller,
            &process,
            reference,
            &values,
            page.as_deref(),
        )?,
        Request::TaskShow {
            process,
            task,
            reveal,
        } => {
            resolve(runtime, caller, &process)?;
            if reveal {
                caller.must_be_admin("showing secrets in clear")?;
            }
            let (loaded, task) = runtime.find_task(&process, &TaskKey(task))?;
            let data = if reveal {
                task.data.clone()
            } else {
                mask_data(&loaded.process, &task.secret_keys, &task.data)
            };
            Answer::Task(Box::new(TaskView::of(&task, data)))
        }
        Request::TaskList {
            process,
            node,
            limit,
        } => {
            let loaded = resolve(runtime, caller, &process)?;
            if let Some(n) = &node
                && !loaded.process.nodes.contains_key(n)
            {
                return Err(CommandError::Usage(format!(
                    "--node: process {process} has no node `{n}`"
                )));
            }
            let tasks = runtime
                .store()
                .tasks(loaded.record.id, node.as_deref(), limit)?;
            Answer::Tasks {
                tasks: tasks
                    .iter()
                    .map(|t| TaskView::of(t, mask_data(&loaded.process, &t.secret_keys, &t.data)))
                    .collect(),
            }
        }
        Request::TaskModify {
            process,
            task,
            data,
            force,
        } => {
            if data.is_empty() {
                return Err(CommandError::Usage(
                    "nothing to modify: give `key=value` pairs or --from-json".into(),
                ));
            }
            resolve(runtime, caller, &process)?;
            let key = TaskKey(task);
            let (_, found) = runtime.find_task(&process, &key)?;
            if !force && matches!(found.status, TaskStatus::Done | TaskStatus::Failed) {
                return Err(CommandError::Finished {
                    task: found.id,
                    node: found.node,
                    status: found.status.as_str(),
                });
            }
            let outcome = runtime.modify_task(&process, &key, data, &caller.source)?;
            Answer::Modified {
                id: outcome.task,
                node: outcome.node,
            }
        }
        Request::TaskRetry {
            process,
            task,
            data,
        } => recover(runtime, caller, &process, task, Recovery::Retry, data)?,
        Request::TaskGoto {
            process,
            task,
            node,
            data,
        } => recover(runtime, caller, &process, task, Recovery::Goto(node), data)?,
        Request::TaskHistory { process, task } => {
            resolve(runtime, caller, &process)?;
            let (_, task) = runtime.find_task(&process, &TaskKey(task))?;
            Answer::History {
                events: runtime.store().history(task.id)?,
            }
        }
        Request::TaskDelete { process, task } => {
            resolve(runtime, caller, &process)?;
            let task = runtime.delete_task(&process, &TaskKey(task))?;
            Answer::Deleted {
                id: task.id,
                process: task.process,
            }
        }
        Request::Templates => Answer::Templates {
            templates: template_list(),
        },
        Request::StoreStats => {
            caller.must_be_admin("store stats")?;
            Answer::StoreStats(StoreStatsView {
                stats: runtime.store_stats()?,
                now: runtime.now(),
            })
        }
        Request::ApiKeyCreate { name, processes } => {
            caller.must_be_admin("API keys")?;
            Answer::ApiKeyCreated(runtime.create_api_key(&name, &processes)?)
        }
        Request::ApiKeyList => {
            caller.must_be_admin("API keys")?;
            Answer::ApiKeys {
                keys: runtime.store().api_keys()?,
            }
        }
        Request::ApiKeyDelete { login } => {
            caller.must_be_admin("API keys")?;
            runtime.delete_api_key(login)?;
            Answer::ApiKeyDeleted { login }
        }
        Request::ApiKeyRotate { login } => {
            caller.must_be_admin("API keys")?;
            Answer::ApiKeyRotated(runtime.rotate_api_key(login)?)
        }
        Request::WaitIdle { .. } => {
            // Answered by the server itself (`wait_idle`); never run here.
            return Err(CommandError::Usage(
                "`run --until-idle` is answered by the server".into(),
            ));
        }
    })
}

/// Waits until the engine of a running server is idle, and for the timers due within
/// `wait_millis` of now (`run --until-idle --wait` through a server).
pub async fn wait_idle(runtime: &Runtime, wait_millis: u64) -> Result<Answer, CommandError> {
    let before = runtime.metrics().steps();
    let limit = runtime
        .now()
        .saturating_add(i64::try_from(wait_millis).unwrap_or(i64::MAX));
    loop {
        runtime.wait_idle().await;
        let next = runtime
            .store()
            .due_timers(limit, None, 1)?
            .first()
            .map(|t| t.due);
        let now = runtime.now();
        match next {
            None => break,
            // Due but not taken yet (or its step keeps failing): look again shortly,
            // and give up a few seconds past the window.
            Some(at) if at <= now => {
                if now > limit.saturating_add(5000) {
                    break;
                }
                runtime.clock().wait_until(now + 10).await;
            }
            Some(at) => runtime.clock().wait_until(at).await,
        }
    }
    Ok(Answer::Idle {
        steps: runtime.metrics().steps() - before,
    })
}

/// The authorize address `process` declares, filled from `values`, the task with
/// `reference` (if it exists), the process's settings, the params' defaults.
fn authorize_link(
    runtime: &Runtime,
    caller: &Caller,
    process: &str,
    reference: Option<String>,
    values: &Map<String, Value>,
    page: Option<&str>,
) -> Result<Answer, CommandError> {
    let loaded = resolve(runtime, caller, process)?;
    let Some(authorize) = &loaded.process.authorize else {
        return Err(CommandError::Usage(format!(
            "process {process} declares no `authorize:` link, so it takes no code"
        )));
    };
    let task = match reference {
        Some(r) => runtime.store().task_by_ref(loaded.record.id, &r)?,
        None => None,
    };
    let empty = Map::new();
    let task_data = task.as_ref().map_or(&empty, |t| &t.data);
    let sources = [values, task_data, &loaded.record.settings];
    let url = crate::authorize::authorize_url(
        process,
        authorize,
        |name| {
            let default = loaded
                .process
                .params
                .get(name)
                .and_then(|p| p.default.as_ref());
            crate::authorize::value_from(name, &sources, default)
        },
        page,
    )?;
    Ok(Answer::AuthorizeLink {
        url,
        code_param: authorize.code.clone(),
        code_lifetime_secs: authorize.code_lifetime.map(|d| d.as_secs().max(1)),
    })
}

/// "Modify if the ref exists, else add" (`bitrix authorize`, the dashboard's code field).
fn upsert(
    runtime: &Runtime,
    caller: &Caller,
    process: &str,
    reference: String,
    data: Map<String, Value>,
) -> Result<Answer, CommandError> {
    let loaded = resolve(runtime, caller, process)?;
    let existing = runtime.store().task_by_ref(loaded.record.id, &reference)?;
    match existing {
        Some(_) => {
            let outcome =
                runtime.modify_task(process, &TaskKey(reference.clone()), data, &caller.source)?;
            Ok(Answer::TaskUpserted {
                id: outcome.task,
                process: loaded.record.id,
                reference,
                created: false,
            })
        }
        None => {
            let task = runtime.add_task(process, Some(&reference), data)?;
            Ok(Answer::TaskUpserted {
                id: task.id,
                process: task.process,
                reference,
                created: true,
            })
        }
    }
}

fn recover(
    runtime: &Runtime,
    caller: &Caller,
    process: &str,
    task: String,
    recovery: Recovery,
    data: Map<String, Value>,
) -> Result<Answer, CommandError> {
    resolve(runtime, caller, process)?;
    let to = match &recovery {
        Recovery::Retry => None,
        Recovery::Goto(node) | Recovery::Step(_, node) => Some(node.clone()),
    };
    let outcome = runtime.recover_task(
        process,
        TaskBy::Key(&TaskKey(task)),
        recovery,
        data,
        &caller.source,
    )?;
    Ok(Answer::Recovering {
        id: outcome.task,
        node: outcome.node,
        to,
    })
}

fn counts(runtime: &Runtime, id: u64) -> Result<conveyor_graph::Counts, CommandError> {
    Ok(runtime
        .store()
        .counters(id)?
        .into_iter()
        .map(|(node, c)| (node, (c.now, c.total)))
        .collect())
}

/// The escalation nodes of a process.
fn escalations(process: &Process) -> Vec<String> {
    process
        .nodes
        .values()
        .filter(|n| matches!(n.kind, NodeKind::Escalation { .. }))
        .map(|n| n.id.clone())
        .collect()
}

/// Every process the caller may use, with its task counts.
fn process_list(runtime: &Runtime, caller: &Caller) -> Result<Vec<ProcessSummary>, CommandError> {
    let mut rows = Vec::new();
    for record in runtime.store().processes()? {
        if !caller.may_use(record.id) {
            continue;
        }
        let loaded = runtime.loaded(record.id).ok();
        rows.push(summary(
            runtime,
            &record,
            loaded.as_deref().map(|l| &l.process),
        )?);
    }
    Ok(rows)
}

fn summary(
    runtime: &Runtime,
    record: &ProcessRecord,
    process: Option<&Process>,
) -> Result<ProcessSummary, CommandError> {
    let counters = runtime.store().counters(record.id)?;
    let escalation_nodes = process.map(escalations).unwrap_or_default();
    Ok(ProcessSummary {
        id: record.id,
        alias: record.alias.clone(),
        name: process.map(|p| p.name.clone()).unwrap_or_default(),
        title: process
            .map(|p| p.title.clone().unwrap_or_else(|| p.name.clone()))
            .unwrap_or_default(),
        source: record.source.clone(),
        version: record.version,
        tasks: counters.iter().map(|(_, c)| c.now).sum(),
        in_escalation: counters
            .iter()
            .filter(|(n, _)| escalation_nodes.contains(n))
            .map(|(_, c)| c.now)
            .sum(),
    })
}

/// A process, its nodes with counters, its params and settings.
pub fn process_detail(
    runtime: &Runtime,
    loaded: &LoadedProcess,
) -> Result<ProcessDetail, CommandError> {
    let p = &loaded.process;
    let counts = counts(runtime, loaded.record.id)?;
    let escalation_nodes = escalations(p);
    let nodes = p
        .nodes
        .values()
        .map(|n| {
            let (now, total) = counts.get(&n.id).copied().unwrap_or_default();
            NodeSummary {
                id: n.id.clone(),
                kind: n.kind.name(),
                title: n.title.clone(),
                now,
                total,
                escalation: escalation_nodes.contains(&n.id),
            }
        })
        .collect();
    let settings: Vec<String> = loaded.record.settings.keys().cloned().collect();
    Ok(ProcessDetail {
        summary: summary(runtime, &loaded.record, Some(p))?,
        description: p.description.clone(),
        nodes,
        params: params(p)
            .into_iter()
            .filter(|param| !settings.contains(&param.name))
            .collect(),
        settings,
        authorize: authorize_info(p),
    })
}

/// The declared params of a process, in file order.
pub fn params(process: &Process) -> Vec<ParamInfo> {
    process
        .params
        .iter()
        .map(|(name, param)| {
            let mut input = Vec::new();
            for (door, on) in [
                ("create", param.input.create),
                ("modify", param.input.modify),
                ("url", param.input.url),
            ] {
                if on {
                    input.push(door);
                }
            }
            ParamInfo {
                name: name.clone(),
                description: param.description.clone(),
                required: param.required,
                secret: param.secret,
                default: param.default.clone(),
                pattern: param.pattern.as_ref().map(|r| r.as_str().to_string()),
                kind: param.kind.map(|k| k.name()),
                max_length: param.max_length,
                input,
            }
        })
        .collect()
}

/// Where a person gets the code, for a process that declares an `authorize:` link.
fn authorize_info(process: &Process) -> Option<AuthorizeInfo> {
    process.authorize.as_ref().map(AuthorizeInfo::of)
}

/// The shipped templates with their descriptions and params.
pub fn template_list() -> Vec<TemplateInfo> {
    templates::TEMPLATES
        .iter()
        .map(|(name, text)| {
            let process = conveyor_model::check(name, text).process;
            TemplateInfo {
                name: (*name).to_string(),
                title: process.as_ref().and_then(|p| p.title.clone()),
                description: process.as_ref().and_then(|p| p.description.clone()),
                params: process.as_ref().map(params).unwrap_or_default(),
            }
        })
        .collect()
}

/// The API key with this login, as it is now (a dashboard session's rights are read
/// from it on every request, so a deleted or narrowed key takes effect at once).
pub fn api_key(
    runtime: &Runtime,
    login: u64,
) -> Result<Option<conveyor_store::ApiKey>, CommandError> {
    Ok(runtime.store().api_key(login)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use conveyor_runtime::{Settings, SystemClock};

    const PROCESS: &str = "process: kept\nsecrets: [token]\nnodes:\n  start: { type: start, next: end }\n  end: { type: final }\n";

    fn runtime(dir: &std::path::Path) -> Arc<Runtime> {
        let store = conveyor_store::open(dir, Default::default()).unwrap_or_else(|e| panic!("{e}"));
        Runtime::new(store, Arc::new(SystemClock), Settings::default())
    }

    fn key(runtime: &Runtime, processes: &[String]) -> Caller {
        let made = runtime
            .create_api_key("k", processes)
            .unwrap_or_else(|e| panic!("{e}"));
        let key = api_key(runtime, made.login)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("key {} not stored", made.login));
        Caller::api_key(&key)
    }

    fn clone_request(alias: &str) -> Request {
        Request::ProcessClone {
            source: "kept.yaml".into(),
            definition: PROCESS.into(),
            alias: Some(alias.into()),
            settings: Map::new(),
        }
    }

    /// A key made without `--process` uses every process's tasks and may change
    /// definitions (Corezoid's `conv create`), but never what only the admin may: it
    /// must not mint keys, see secrets in clear, rotate a published URL or read the
    /// store's statistics.
    #[test]
    fn a_key_that_may_use_every_process_is_still_not_the_admin() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let runtime = runtime(dir.path());
        run(&runtime, &Caller::cli(), clone_request("kept")).unwrap_or_else(|e| panic!("{e}"));
        let mut data = Map::new();
        data.insert("token".into(), Value::from("s3cr3t-value"));
        let task = runtime
            .add_task("@kept", Some("t"), data)
            .unwrap_or_else(|e| panic!("{e}"));
        let unlimited = key(&runtime, &[]);
        assert_eq!(unlimited.scope, Scope::AllProcesses);
        let admin_only = [
            Request::ApiKeyCreate {
                name: "more".into(),
                processes: vec![],
            },
            Request::ApiKeyList,
            Request::ApiKeyRotate { login: 1 },
            Request::StoreStats,
            Request::ProcessUrl {
                process: "@kept".into(),
                rotate: true,
                base: "http://127.0.0.1:1".into(),
            },
            Request::TaskShow {
                process: "@kept".into(),
                task: task.id.to_string(),
                reveal: true,
            },
        ];
        for request in admin_only {
            let what = format!("{request:?}");
            match run(&runtime, &unlimited, request) {
                Err(e @ CommandError::AdminOnly { .. }) => {
                    assert!(e.to_string().contains("needs the admin token"), "{e}")
                }
                other => panic!("{what}: {other:?}"),
            }
        }
        // Nothing was minted, and the URL was not rotated by the refused request.
        assert_eq!(runtime.store().api_keys().map(|k| k.len()).ok(), Some(1));
        // What it may do: its tasks, masked, and a definition.
        let shown = run(
            &runtime,
            &unlimited,
            Request::TaskShow {
                process: "@kept".into(),
                task: task.id.to_string(),
                reveal: false,
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let text = format!("{shown:?}");
        assert!(!text.contains("s3cr3t-value"), "{text}");
        run(&runtime, &unlimited, clone_request("by_key")).unwrap_or_else(|e| panic!("{e}"));
        // The admin may do what the key may not.
        run(&runtime, &Caller::cli(), Request::ApiKeyList).unwrap_or_else(|e| panic!("{e}"));
        run(
            &runtime,
            &Caller::cli(),
            Request::TaskShow {
                process: "@kept".into(),
                task: task.id.to_string(),
                reveal: true,
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn a_key_limited_to_some_processes_may_not_change_definitions() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let runtime = runtime(dir.path());
        run(&runtime, &Caller::cli(), clone_request("kept")).unwrap_or_else(|e| panic!("{e}"));
        let limited = key(&runtime, &["@kept".to_string()]);
        match run(&runtime, &limited, clone_request("other")) {
            Err(CommandError::NotAllowed { what }) => assert_eq!(what, "cloning a process"),
            other => panic!("{other:?}"),
        }
        match run(&runtime, &limited, Request::StoreStats) {
            Err(CommandError::AdminOnly { what }) => assert_eq!(what, "store stats"),
            other => panic!("{other:?}"),
        }
    }
}
