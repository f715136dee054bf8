//! A group of batches folded into what it leaves behind, as column arrays: the commit
//! then sends one statement per table and kind of change (deletes, then writes), not
//! one per op, whatever the size of the group.
//!
//! Folding keeps the meaning of applying the ops one after another: the last write of a
//! key wins, a delete after a write undoes it, a write after a delete stands. Rows
//! are sorted by key, so that engines committing at once lock rows in one order.

use std::collections::{BTreeMap, BTreeSet};

use crate::{Batch, HistoryEvent, InboxMessage, Op, Result, StoreError, TaskRecord, TimerKey};

/// Column arrays of one commit. Ids are `i64` (PostgreSQL's `bigint`).
#[derive(Default)]
pub(super) struct Plan {
    pub del_tasks: Vec<i64>,
    pub put_id: Vec<i64>,
    pub put_process: Vec<i64>,
    pub put_node: Vec<String>,
    pub put_listed: Vec<bool>,
    pub put_record: Vec<String>,
    pub listed_only: Vec<i64>,
    pub ref_del: (Vec<i64>, Vec<String>, Vec<i64>),
    pub ref_ins: (Vec<i64>, Vec<String>, Vec<i64>),
    pub timer_del: (Vec<i64>, Vec<i64>),
    pub timer_ins: (Vec<i64>, Vec<i64>),
    pub ready_del: Vec<i64>,
    pub ready_ins: Vec<i64>,
    pub counts: (Vec<i64>, Vec<String>, Vec<i64>, Vec<i64>),
    pub hist_wipe: Vec<i64>,
    pub hist_ins: (Vec<i64>, Vec<i64>, Vec<String>),
    pub inbox_wipe: Vec<i64>,
    pub inbox_del: (Vec<i64>, Vec<i64>),
    pub inbox_ins: (Vec<i64>, Vec<i64>, Vec<String>),
    /// Tasks whose record or scheduling this commit changes (checked against claims).
    pub touched: BTreeSet<u64>,
    /// Existing tasks whose record this commit writes or deletes (created ones left
    /// out): those the engine holds no claim on are claimed for the commit itself.
    pub written: BTreeSet<u64>,
    /// Something another engine may have to work on: a ready mark, a timer, a message.
    pub wakes: bool,
}

impl Plan {
    /// Whether the commit changes nothing.
    pub fn is_empty(&self) -> bool {
        self.del_tasks.is_empty()
            && self.put_id.is_empty()
            && self.listed_only.is_empty()
            && self.ref_del.0.is_empty()
            && self.ref_ins.0.is_empty()
            && self.timer_del.0.is_empty()
            && self.timer_ins.0.is_empty()
            && self.ready_del.is_empty()
            && self.ready_ins.is_empty()
            && self.counts.0.is_empty()
            && self.hist_wipe.is_empty()
            && self.hist_ins.0.is_empty()
            && self.inbox_wipe.is_empty()
            && self.inbox_del.0.is_empty()
            && self.inbox_ins.0.is_empty()
    }
}

enum TaskState<'a> {
    Put(&'a TaskRecord),
    Deleted,
}

#[derive(Default)]
struct History<'a> {
    wipe: bool,
    rows: BTreeMap<u64, &'a Vec<HistoryEvent>>,
}

#[derive(Default)]
struct Inbox<'a> {
    wipe: bool,
    adds: BTreeMap<u64, &'a InboxMessage>,
    clears: BTreeSet<u64>,
}

fn encode<T: serde::Serialize>(what: &str, value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Io(format!("cannot encode {what}: {e}")))
}

fn id(n: u64) -> i64 {
    n as i64
}

/// Folds `batches` (applied in order) into one [`Plan`]; fails with
/// [`StoreError::DuplicateRef`] when two of them claim one ref for different tasks.
pub(super) fn fold(batches: &[Batch]) -> Result<Plan> {
    let mut tasks: BTreeMap<u64, TaskState> = BTreeMap::new();
    let mut listed: BTreeSet<u64> = BTreeSet::new();
    // Tasks this group creates (listed in their process): nobody can hold them yet.
    let mut created: BTreeSet<u64> = BTreeSet::new();
    let mut ref_del: BTreeSet<(u64, &str, u64)> = BTreeSet::new();
    let mut ref_ins: BTreeMap<(u64, &str), u64> = BTreeMap::new();
    let mut timers: BTreeMap<TimerKey, bool> = BTreeMap::new();
    let mut ready: BTreeMap<u64, bool> = BTreeMap::new();
    let mut counts: BTreeMap<(u64, &str), (i64, u64)> = BTreeMap::new();
    let mut history: BTreeMap<u64, History> = BTreeMap::new();
    let mut inbox: BTreeMap<u64, Inbox> = BTreeMap::new();
    let mut plan = Plan::default();
    for op in batches.iter().flat_map(|b| &b.ops) {
        match op {
            Op::PutTask(task) => {
                plan.touched.insert(task.id);
                plan.written.insert(task.id);
                tasks.insert(task.id, TaskState::Put(task));
            }
            Op::IndexTask { task, .. } => {
                listed.insert(*task);
                created.insert(*task);
            }
            Op::InsertRef {
                process,
                reference,
                task,
            } => {
                let key = (*process, reference.as_str());
                if ref_ins.get(&key).is_some_and(|t| t != task) {
                    return Err(StoreError::DuplicateRef {
                        process: *process,
                        reference: reference.clone(),
                    });
                }
                ref_ins.insert(key, *task);
            }
            Op::SetTimer(t) => {
                plan.wakes = true;
                timers.insert(*t, true);
            }
            Op::ClearTimer(t) => {
                timers.insert(*t, false);
            }
            Op::SetReady(task) => {
                plan.wakes = true;
                plan.touched.insert(*task);
                ready.insert(*task, true);
            }
            Op::ClearReady(task) => {
                plan.touched.insert(*task);
                ready.insert(*task, false);
            }
            Op::Count {
                process,
                node,
                now,
                total,
            } => {
                let c = counts.entry((*process, node.as_str())).or_default();
                c.0 += now;
                c.1 += total;
            }
            Op::History { task, seq, events } => {
                history.entry(*task).or_default().rows.insert(*seq, events);
            }
            Op::ReplaceHistory { task, events } => {
                let h = history.entry(*task).or_default();
                h.wipe = true;
                h.rows.clear();
                h.rows.insert(0, events);
            }
            Op::Inbox { task, seq, message } => {
                plan.wakes = true;
                let i = inbox.entry(*task).or_default();
                i.clears.remove(seq);
                i.adds.insert(*seq, message);
            }
            Op::ClearInbox { task, seq } => {
                let i = inbox.entry(*task).or_default();
                i.adds.remove(seq);
                i.clears.insert(*seq);
            }
            Op::DeleteTask {
                task,
                process,
                reference,
            } => {
                plan.touched.insert(*task);
                plan.written.insert(*task);
                tasks.insert(*task, TaskState::Deleted);
                listed.remove(task);
                ready.insert(*task, false);
                if let Some(r) = reference {
                    let key = (*process, r.as_str());
                    if ref_ins.get(&key) == Some(task) {
                        ref_ins.remove(&key);
                    }
                    ref_del.insert((*process, r.as_str(), *task));
                }
                let h = history.entry(*task).or_default();
                h.wipe = true;
                h.rows.clear();
                let i = inbox.entry(*task).or_default();
                *i = Inbox {
                    wipe: true,
                    ..Inbox::default()
                };
            }
        }
    }
    for (task_id, state) in tasks {
        match state {
            TaskState::Put(task) => {
                plan.put_id.push(id(task_id));
                plan.put_process.push(id(task.process));
                plan.put_node.push(task.node.clone());
                plan.put_listed.push(listed.remove(&task_id));
                plan.put_record.push(encode("a task", task)?);
            }
            TaskState::Deleted => plan.del_tasks.push(id(task_id)),
        }
    }
    plan.listed_only = listed.into_iter().map(id).collect();
    plan.written.retain(|task| !created.contains(task));
    for (process, reference, task) in ref_del {
        plan.ref_del.0.push(id(process));
        plan.ref_del.1.push(reference.to_string());
        plan.ref_del.2.push(id(task));
    }
    for ((process, reference), task) in ref_ins {
        plan.ref_ins.0.push(id(process));
        plan.ref_ins.1.push(reference.to_string());
        plan.ref_ins.2.push(id(task));
    }
    for (timer, set) in timers {
        let side = if set {
            &mut plan.timer_ins
        } else {
            &mut plan.timer_del
        };
        side.0.push(timer.due);
        side.1.push(id(timer.task));
    }
    for (task, set) in ready {
        if set {
            plan.ready_ins.push(id(task));
        } else {
            plan.ready_del.push(id(task));
        }
    }
    for ((process, node), (now, total)) in counts {
        plan.counts.0.push(id(process));
        plan.counts.1.push(node.to_string());
        plan.counts.2.push(now);
        plan.counts.3.push(total as i64);
    }
    for (task, h) in history {
        if h.wipe {
            plan.hist_wipe.push(id(task));
        }
        for (seq, events) in h.rows {
            plan.hist_ins.0.push(id(task));
            plan.hist_ins.1.push(id(seq));
            plan.hist_ins.2.push(encode("history events", events)?);
        }
    }
    for (task, i) in inbox {
        if i.wipe {
            plan.inbox_wipe.push(id(task));
        }
        for seq in i.clears {
            plan.inbox_del.0.push(id(task));
            plan.inbox_del.1.push(id(seq));
        }
        for (seq, message) in i.adds {
            plan.inbox_ins.0.push(id(task));
            plan.inbox_ins.1.push(id(seq));
            plan.inbox_ins.2.push(encode("an inbox message", message)?);
        }
    }
    Ok(plan)
}
