//! Moving a task by hand: `task retry` runs the node a task failed in once more, `task
//! goto` sends a task to any node of its process (an escalated task moved on, a failed
//! one sent round its error). Both leave a message in the task's inbox, because a task
//! is written only by its step; the step checks the message again against the task as
//! it then is, and records what it did in the task's history.

use conveyor_model::{Door, NodeKind};
use conveyor_store::{Batch, InboxMessage, Op, TaskStatus};
use serde_json::{Map, Value};

use crate::{ModifyOutcome, Result, Runtime, RuntimeError, TaskBy};

/// What to do with the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Run again the node a task failed in (one that stopped with no `on_error`).
    Retry,
    /// Go to this node.
    Goto(String),
    /// A step of the task API (`step_next`, `step_prev`, `step_goto`) to this node: a
    /// goto recorded in the history as the step it was.
    Step(StepKind, String),
}

/// Which step of the task API moved a task; its name is the history's `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    Next,
    Prev,
    Goto,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Next => "step_next",
            StepKind::Prev => "step_prev",
            StepKind::Goto => "step_goto",
        }
    }
}

impl Runtime {
    /// Leaves a retry or a goto, with `data` merged first, in the task's inbox; refused
    /// with [`RuntimeError::CannotRecover`] when the task cannot be moved so.
    pub fn recover_task(
        &self,
        process: &str,
        task: TaskBy<'_>,
        recovery: Recovery,
        mut data: Map<String, Value>,
        source: &str,
    ) -> Result<ModifyOutcome> {
        let (loaded, task) = self.find_task_by(process, task)?;
        if let Some(why) = refusal(&loaded.process, &task.node, task.status, &recovery) {
            return Err(RuntimeError::CannotRecover {
                task: task.id,
                node: task.node.clone(),
                status: task.status.as_str(),
                why,
            });
        }
        if !data.is_empty() {
            crate::input::check_input(&loaded, &mut data, Door::Modify, Some(&task.data))?;
        }
        let mut batch = Batch::default();
        batch.push(Op::Inbox {
            task: task.id,
            seq: self.store.next_task_id()?,
            message: match recovery {
                Recovery::Retry => InboxMessage::Recover {
                    to: None,
                    data,
                    source: source.to_string(),
                    action: None,
                },
                Recovery::Goto(node) => InboxMessage::Recover {
                    to: Some(node),
                    data,
                    source: source.to_string(),
                    action: None,
                },
                Recovery::Step(kind, node) => InboxMessage::Recover {
                    to: Some(node),
                    data,
                    source: source.to_string(),
                    action: Some(kind.as_str().to_string()),
                },
            },
        });
        batch.push(Op::SetReady(task.id));
        self.store.commit(&batch)?;
        self.schedule(task.id);
        Ok(ModifyOutcome {
            task: task.id,
            node: task.node,
            reference: task.reference,
        })
    }
}

/// Why a task in `node` with `status` cannot be moved as `recovery` asks; `None` when it
/// can. Used at the door and again by the step (the task may have moved in between).
pub(crate) fn refusal(
    process: &conveyor_model::Process,
    node: &str,
    status: TaskStatus,
    recovery: &Recovery,
) -> Option<String> {
    match recovery {
        Recovery::Retry => {
            if status != TaskStatus::Failed {
                return Some(
                    "only a task that failed in a node is retried; `task goto` moves any task"
                        .into(),
                );
            }
            match process.nodes.get(node).map(|n| &n.kind) {
                Some(NodeKind::Final { .. }) => Some(
                    "it ended in a final node, so there is nothing to run again; `task goto NODE` sends it elsewhere"
                        .into(),
                ),
                None => Some(format!(
                    "the process has no node `{node}` any more; `task goto NODE` sends it elsewhere"
                )),
                Some(_) => None,
            }
        }
        Recovery::Goto(target) | Recovery::Step(_, target) => {
            if !process.nodes.contains_key(target) {
                let nodes: Vec<&str> = process.nodes.keys().map(String::as_str).collect();
                return Some(format!(
                    "the process has no node `{target}` (its nodes: {})",
                    nodes.join(", ")
                ));
            }
            None
        }
    }
}
