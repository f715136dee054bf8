//! The HTTP doors' commands: the task API's ops ([`TaskOp`], run by [`run_ops`]) and a
//! direct URL's request ([`DirectRequest`], checked by [`direct_target`] and run by
//! [`direct_url`]). They are requests of this layer like the CLI's, with the same checks
//! and the same refusals as types, but they go through the runtime's grouped intake
//! (`intake.rs` of conveyor-runtime): a create joins the committer's group instead of
//! committing and flushing on its own, so many strangers' creates share one write.

use std::collections::HashSet;
use std::sync::Arc;

use conveyor_runtime::{Ack, AnswerWait, LoadedProcess, Runtime, RuntimeError, TaskBy, mask_data};
use serde_json::{Map, Value};

use crate::answer::{ProcessDetail, ProcessSummary, TaskView};
use crate::manage::{self, Made, NodeTasks, Step, Stepped, TaskHistory};
use crate::{Caller, CommandError};

/// How the task API names a task: exactly by ref or exactly by id, never one for the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskName {
    Ref(String),
    Id(u64),
}

impl TaskName {
    pub(crate) fn by(&self) -> TaskBy<'_> {
        match self {
            TaskName::Ref(r) => TaskBy::Ref(r),
            TaskName::Id(id) => TaskBy::Id(*id),
        }
    }
}

/// One op of a task API request, read and shaped by the door.
#[derive(Debug, Clone)]
pub enum TaskOp {
    Create {
        process: String,
        reference: Option<String>,
        data: Map<String, Value>,
    },
    Modify {
        process: String,
        task: TaskName,
        data: Map<String, Value>,
    },
    Show {
        process: String,
        task: TaskName,
    },
    Delete {
        process: String,
        task: TaskName,
    },
    /// `step_next`, `step_prev`, `step_goto`: move the task, `data` merged first.
    Step {
        process: String,
        task: TaskName,
        step: Step,
        data: Map<String, Value>,
    },
    /// `task_history list`.
    History {
        process: String,
        task: TaskName,
    },
    /// `node list`: the tasks in a node.
    NodeTasks {
        process: String,
        node: String,
        query: manage::NodeQuery,
    },
    /// `conv list`: a process's nodes with their counts.
    ProcessNodes {
        process: String,
    },
    /// `convs list`: the processes the key may use.
    Processes,
    /// `obj_scheme get`: the process as a Corezoid export.
    Scheme {
        process: String,
    },
    /// `conv create`: a new process from a title, or from a Corezoid scheme.
    ProcessCreate {
        title: String,
        description: Option<String>,
        scheme: Option<Value>,
    },
    /// `conv modify`: a new title or description.
    ProcessModify {
        process: String,
        title: Option<String>,
        description: Option<String>,
    },
    /// `obj_scheme upload`: a Corezoid scheme into a process (`into`) or as new ones,
    /// with the aliases the importer gives them unless `with_alias` is false.
    SchemeUpload {
        into: Option<String>,
        scheme: Value,
        with_alias: bool,
    },
    /// `obj_scheme validate`: whether a scheme would upload, nothing made.
    SchemeValidate {
        scheme: Value,
    },
    /// `obj_scheme check`: whether a process has changes not deployed (never, here).
    SchemeCheck {
        process: String,
    },
    /// `conv show`: a process's own fields.
    ProcessInfo {
        process: String,
    },
    /// `node show`: a node's fields, logics and count.
    NodeShow {
        process: String,
        node: String,
    },
    /// `node modify`: a node's title or description.
    NodeModify {
        process: String,
        node: String,
        change: manage::NodeChange,
    },
}

impl TaskOp {
    /// The process the op names, if it names one.
    pub fn process(&self) -> Option<&str> {
        match self {
            TaskOp::Create { process, .. }
            | TaskOp::Modify { process, .. }
            | TaskOp::Show { process, .. }
            | TaskOp::Delete { process, .. }
            | TaskOp::Step { process, .. }
            | TaskOp::History { process, .. }
            | TaskOp::NodeTasks { process, .. }
            | TaskOp::ProcessNodes { process }
            | TaskOp::Scheme { process }
            | TaskOp::ProcessModify { process, .. }
            | TaskOp::SchemeCheck { process }
            | TaskOp::ProcessInfo { process }
            | TaskOp::NodeShow { process, .. }
            | TaskOp::NodeModify { process, .. } => Some(process),
            TaskOp::SchemeUpload { into, .. } => into.as_deref(),
            TaskOp::Processes | TaskOp::ProcessCreate { .. } | TaskOp::SchemeValidate { .. } => {
                None
            }
        }
    }
}

/// What an op did: the task's id and its own ref (also when it was named by its id).
#[derive(Debug, Clone)]
pub enum OpAnswer {
    Created {
        id: u64,
        reference: Option<String>,
        /// When the request waited: the task's answer, or `None` if the wait ran out.
        reply: Option<Option<conveyor_runtime::Answer>>,
    },
    Modified {
        id: u64,
        reference: Option<String>,
    },
    /// The task as the caller may see it (secrets masked).
    Shown(Box<TaskView>),
    Deleted {
        id: u64,
        reference: Option<String>,
    },
    Stepped(Box<Stepped>),
    History(Box<TaskHistory>),
    NodeTasks(Box<NodeTasks>),
    ProcessNodes(Box<ProcessDetail>),
    Processes(Vec<ProcessSummary>),
    /// A process object of a Corezoid export.
    Scheme(Value),
    /// Processes created (`conv create`, `obj_scheme upload` without a process).
    Made(Vec<Made>),
    /// A definition changed (`conv modify`, `obj_scheme upload` into a process).
    Changed {
        id: u64,
        version: u32,
    },
    /// A check passed (`obj_scheme check`, `obj_scheme validate`).
    Checked,
    /// `conv show`.
    ProcessInfo(Box<manage::ProcessInfo>),
    /// `node show`.
    Node(Box<manage::NodeInfo>),
    /// `node modify`: the node of process `id`, now at `version`.
    NodeChanged {
        id: u64,
        node: String,
        version: u32,
    },
}

/// The ops of one request, answered in order, each with its own outcome. A run of
/// creates goes at once: each runs its first steps at the door and joins the committer's
/// group (the creates of a request, and of the requests arriving meanwhile, share
/// groups); an op that reads or changes an existing task waits for the creates before
/// it, so it sees them. One shared flush at the end: the answer means on disk. `Err`
/// only when that flush fails.
///
/// With `wait` (Corezoid's Sync API: the body's `timeout`), each create is answered with
/// what its task answered (`OpAnswer::Created::reply`), waiting up to `wait` in all.
pub async fn run_ops(
    runtime: &Runtime,
    caller: &Caller,
    ops: Vec<TaskOp>,
    wait: Option<std::time::Duration>,
) -> Result<Vec<Result<OpAnswer, CommandError>>, CommandError> {
    let mut answers = Vec::with_capacity(ops.len());
    let mut waits: Vec<(usize, AnswerWait)> = Vec::new();
    let mut creates: Vec<Create> = Vec::new();
    for op in ops {
        match op {
            TaskOp::Create {
                process,
                reference,
                data,
            } => creates.push(Create {
                process,
                reference,
                data,
            }),
            op => {
                let run = std::mem::take(&mut creates);
                create_all(
                    runtime,
                    caller,
                    run,
                    wait.is_some(),
                    &mut answers,
                    &mut waits,
                )
                .await;
                answers.push(apply(runtime, caller, op).await);
            }
        }
    }
    create_all(
        runtime,
        caller,
        creates,
        wait.is_some(),
        &mut answers,
        &mut waits,
    )
    .await;
    runtime.sync().await?;
    if let Some(timeout) = wait {
        // One deadline for the whole request: the tasks run meanwhile all along.
        let deadline = std::time::Instant::now() + timeout;
        for (index, answer) in waits {
            let Some(Ok(OpAnswer::Created { reply, .. })) = answers.get_mut(index) else {
                // Its create was refused after all: nobody will answer.
                runtime.drop_answer(answer);
                continue;
            };
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            *reply = Some(runtime.await_answer(answer, left).await);
        }
    }
    Ok(answers)
}

/// A create op of a request.
struct Create {
    process: String,
    reference: Option<String>,
    data: Map<String, Value>,
}

/// A run of creates, at once, their outcomes appended to `answers` in order.
///
/// `join_all` polls them in the request's order, and a create's door steps do not wait,
/// so they are committed in that order, except that one may be written in place
/// (`Store::commit_quick`) while an earlier one waits for the committer. So a create
/// that names a ref an earlier create of the run names too starts a new run, after the
/// earlier ones are applied: of two creates with one ref, the first wins, as it would
/// one by one.
async fn create_all(
    runtime: &Runtime,
    caller: &Caller,
    creates: Vec<Create>,
    wait: bool,
    answers: &mut Vec<Result<OpAnswer, CommandError>>,
    waits: &mut Vec<(usize, AnswerWait)>,
) {
    let mut run = Vec::new();
    let mut refs: HashSet<(u64, String)> = HashSet::new();
    for create in creates {
        let loaded = scoped(runtime, caller, &create.process);
        if let (Ok(loaded), Some(reference)) = (&loaded, &create.reference)
            && !refs.insert((loaded.record.id, reference.clone()))
        {
            create_run(
                runtime,
                caller,
                std::mem::take(&mut run),
                wait,
                answers,
                waits,
            )
            .await;
            refs.clear();
            refs.insert((loaded.record.id, reference.clone()));
        }
        run.push((loaded, create));
    }
    create_run(runtime, caller, run, wait, answers, waits).await;
}

/// Creates that name no ref twice, all at once (see [`create_all`]).
async fn create_run(
    runtime: &Runtime,
    caller: &Caller,
    run: Vec<(Result<Arc<LoadedProcess>, CommandError>, Create)>,
    wait: bool,
    answers: &mut Vec<Result<OpAnswer, CommandError>>,
    waits: &mut Vec<(usize, AnswerWait)>,
) {
    if run.is_empty() {
        return;
    }
    let runs = run.into_iter().map(|(loaded, create)| async move {
        let loaded = loaded?;
        let created = runtime
            .create_grouped(
                &loaded.record.id.to_string(),
                create.reference.as_deref(),
                create.data,
                wait,
                caller.login,
            )
            .await?;
        Ok::<_, CommandError>(created)
    });
    for outcome in futures_util::future::join_all(runs).await {
        let index = answers.len();
        answers.push(outcome.map(|(task, answer)| {
            if let Some(answer) = answer {
                waits.push((index, answer));
            }
            OpAnswer::Created {
                id: task.id,
                reference: task.reference,
                reply: None,
            }
        }));
    }
}

/// The process `name` if the caller may use it; a process outside an API key's list is
/// refused by name (the key's owner knows which processes exist).
pub(crate) fn scoped(
    runtime: &Runtime,
    caller: &Caller,
    name: &str,
) -> Result<Arc<LoadedProcess>, CommandError> {
    let loaded = runtime.resolve(name)?;
    if !caller.may_use(loaded.record.id) {
        return Err(CommandError::OutOfScope {
            process: loaded.record.id,
        });
    }
    Ok(loaded)
}

/// One op other than a create.
async fn apply(runtime: &Runtime, caller: &Caller, op: TaskOp) -> Result<OpAnswer, CommandError> {
    match op {
        TaskOp::Create { .. } => Err(CommandError::Usage(
            "a create goes through `create_all`, not `apply`".into(),
        )),
        TaskOp::Modify {
            process,
            task,
            data,
        } => {
            let loaded = scoped(runtime, caller, &process)?;
            let outcome = runtime
                .modify_task_grouped(
                    &loaded.record.id.to_string(),
                    task.by(),
                    data,
                    &caller.source,
                    Ack::Applied,
                )
                .await?;
            Ok(OpAnswer::Modified {
                id: outcome.task,
                reference: outcome.reference,
            })
        }
        TaskOp::Show { process, task } => {
            let loaded = scoped(runtime, caller, &process)?;
            let (loaded, task) = runtime.find_task_by(&loaded.record.id.to_string(), task.by())?;
            let data = mask_data(&loaded.process, &task.secret_keys, &task.data);
            Ok(OpAnswer::Shown(Box::new(TaskView::of(&task, data))))
        }
        TaskOp::Delete { process, task } => {
            let loaded = scoped(runtime, caller, &process)?;
            let task = runtime.delete_task_by(&loaded.record.id.to_string(), task.by())?;
            Ok(OpAnswer::Deleted {
                id: task.id,
                reference: task.reference,
            })
        }
        TaskOp::Step {
            process,
            task,
            step,
            data,
        } => manage::step(runtime, caller, &process, &task, step, data)
            .map(|s| OpAnswer::Stepped(Box::new(s))),
        TaskOp::History { process, task } => manage::history(runtime, caller, &process, &task)
            .map(|h| OpAnswer::History(Box::new(h))),
        TaskOp::NodeTasks {
            process,
            node,
            query,
        } => manage::node_tasks(runtime, caller, &process, &node, &query)
            .map(|n| OpAnswer::NodeTasks(Box::new(n))),
        TaskOp::ProcessNodes { process } => manage::process_nodes(runtime, caller, &process)
            .map(|d| OpAnswer::ProcessNodes(Box::new(d))),
        TaskOp::Processes => manage::processes(runtime, caller).map(OpAnswer::Processes),
        TaskOp::Scheme { process } => {
            manage::scheme(runtime, caller, &process).map(OpAnswer::Scheme)
        }
        TaskOp::ProcessCreate {
            title,
            description,
            scheme,
        } => manage::create(
            runtime,
            caller,
            &title,
            description.as_deref(),
            scheme.as_ref(),
        )
        .map(OpAnswer::Made),
        TaskOp::ProcessModify {
            process,
            title,
            description,
        } => manage::modify(
            runtime,
            caller,
            &process,
            title.as_deref(),
            description.as_deref(),
        )
        .map(|(id, version)| OpAnswer::Changed { id, version }),
        TaskOp::SchemeUpload {
            into: Some(into),
            scheme,
            ..
        } => manage::replace(runtime, caller, &into, &scheme)
            .map(|(id, version)| OpAnswer::Changed { id, version }),
        TaskOp::SchemeUpload {
            into: None,
            scheme,
            with_alias,
        } => manage::upload(runtime, caller, &scheme, with_alias).map(OpAnswer::Made),
        TaskOp::SchemeValidate { scheme } => {
            manage::validate(caller, &scheme).map(|()| OpAnswer::Checked)
        }
        TaskOp::SchemeCheck { process } => {
            scoped(runtime, caller, &process).map(|_| OpAnswer::Checked)
        }
        TaskOp::ProcessInfo { process } => manage::process_info(runtime, caller, &process)
            .map(|p| OpAnswer::ProcessInfo(Box::new(p))),
        TaskOp::NodeShow { process, node } => {
            manage::node_show(runtime, caller, &process, &node).map(|n| OpAnswer::Node(Box::new(n)))
        }
        TaskOp::NodeModify {
            process,
            node,
            change,
        } => manage::node_modify(runtime, caller, &process, &node, &change)
            .map(|(id, node, version)| OpAnswer::NodeChanged { id, node, version }),
    }
}

/// What a direct URL was asked to do, once its process and hash passed
/// [`direct_target`] and its body was read.
#[derive(Debug, Clone)]
pub struct DirectRequest {
    /// The process id [`direct_target`] returned.
    pub process: u64,
    /// The task to modify (or the ref of the new task), from the `ref` parameter.
    pub reference: Option<String>,
    pub data: Map<String, Value>,
    /// Wait up to this long for the task's answer (a `reply` node, a final node, a
    /// failure) before answering: Corezoid's Sync API.
    pub wait: Option<std::time::Duration>,
}

/// What a direct URL request did.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectAnswer {
    pub task: u64,
    pub reference: Option<String>,
    /// `created` or `modified`.
    pub action: &'static str,
    /// With [`DirectRequest::wait`]: the task's answer, or `None` if the wait ran out.
    pub reply: Option<Option<conveyor_runtime::Answer>>,
}

/// The longest a door waits for a task's answer, and the wait when none is named.
pub const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The process a direct URL names, if `hash` is its current hash; checked before the
/// body is read. Every mismatch is the same [`CommandError::NoDirectUrl`], so a
/// stranger learns nothing about which processes exist.
pub fn direct_target(runtime: &Runtime, process: &str, hash: &str) -> Result<u64, CommandError> {
    let loaded = runtime
        .resolve(process)
        .map_err(|_| CommandError::NoDirectUrl)?;
    match &loaded.record.url_hash {
        Some(expected) if constant_time_eq(expected.as_bytes(), hash.as_bytes()) => {
            Ok(loaded.record.id)
        }
        _ => Err(CommandError::NoDirectUrl),
    }
}

/// A direct URL's request: modifies the task its `ref` names, else creates one, through
/// the committer's groups; answered once durable. What it may set is what the process
/// allows (`input: [url]`, `direct_url.refs`), checked by the runtime.
pub async fn direct_url(
    runtime: &Runtime,
    request: DirectRequest,
) -> Result<DirectAnswer, CommandError> {
    let (done, wait) = runtime
        .direct_url_grouped(
            request.process,
            request.reference.as_deref(),
            request.data,
            request.wait.is_some(),
        )
        .await?;
    let reply = match (wait, request.wait) {
        (Some(wait), Some(timeout)) => Some(runtime.await_answer(wait, timeout).await),
        _ => None,
    };
    Ok(DirectAnswer {
        task: done.task,
        reference: done.reference,
        action: done.action,
        reply,
    })
}

/// `value` as an error answer may echo it for `key` of `process`: `***` when the process
/// holds that key secret, or when the process cannot be read.
pub fn shown_value(runtime: &Runtime, process: &str, key: &str, value: &Value) -> Value {
    let Ok(loaded) = runtime.resolve(process) else {
        return Value::String(conveyor_runtime::MASK.into());
    };
    let mut one = Map::new();
    one.insert(key.to_string(), value.clone());
    mask_data(&loaded.process, &[], &one)
        .remove(key)
        .unwrap_or(Value::Null)
}

/// Equal bytes, compared in time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a refusal is the caller's input being wrong (a param refused, an undeclared
/// key), as opposed to a missing thing or a refused action.
pub fn is_bad_input(e: &CommandError) -> bool {
    matches!(
        e,
        CommandError::Usage(_)
            | CommandError::Runtime(
                RuntimeError::Param { .. }
                    | RuntimeError::Params(_)
                    | RuntimeError::Undeclared { .. }
            )
    )
}
