//! A node's `alert: N -> node` (Corezoid's `count` semaphor): when the node comes to
//! hold N tasks or more, one alert task starts at the alert's node with
//! `{"start": "true", "node", "count", "at_least"}`; when it drops below N again, one
//! with `"start": "false"`. The tasks that crowd the node stay where they are.
//!
//! The count is read from the store after each step that moved tasks in or out of such a
//! node, so an alert follows what was committed. Whether a node is over its threshold is
//! kept in the store, as a counter of its own (`NODE#alerted`, whose `total` is odd while
//! the node is over): it flips in the same batch that creates the alert task, so a
//! restart neither repeats nor loses an alert. Its `now` stays 0, so it adds nothing to
//! the process's task counts. Engines sharing a PostgreSQL store decide one at a time:
//! each holds, besides its own lock, a claim on a number that is no task's (one per
//! process, [`decision_claim`]) while it reads, decides and commits, so two engines
//! crossing at once never both flip the state (which would undo the flip).

use conveyor_store::{Batch, Op};
use serde_json::{Map, Value};

use crate::{LoadedProcess, Result, Runtime};

impl Runtime {
    /// After a step of a task of `loaded` moved tasks in or out of `nodes`: the alerts
    /// whose side of the threshold changed.
    pub(crate) async fn check_alerts(
        &self,
        loaded: &LoadedProcess,
        nodes: &[String],
    ) -> Result<()> {
        if nodes.is_empty() {
            return Ok(());
        }
        let process = loaded.record.id;
        let mut created = Vec::new();
        let mut batch = Batch::default();
        // Read, decide and commit under the lock: two steps never send one edge twice.
        let _deciding = self.alerting.lock().await;
        let _elsewhere = match self.store.shared() {
            true => match DecisionClaim::take(self.store.as_ref(), process).await? {
                Some(claim) => Some(claim),
                None => {
                    // Another engine held it all along: its decision saw the count this
                    // step committed, or the next step moving tasks here decides again.
                    tracing::warn!(
                        process,
                        "could not take the alert decision of process; skipped"
                    );
                    return Ok(());
                }
            },
            false => None,
        };
        for name in nodes {
            let Some(alert) = loaded
                .process
                .nodes
                .get(name)
                .and_then(|node| node.alert.as_ref())
            else {
                continue;
            };
            let state = state_of(name);
            let counters = self.store.counters(process)?;
            let count = counters
                .iter()
                .find(|(node, _)| node == name)
                .map(|(_, c)| c.now.max(0) as u64)
                .unwrap_or(0);
            let alerted = counters
                .iter()
                .find(|(node, _)| *node == state)
                .is_some_and(|(_, c)| c.total % 2 == 1);
            let over = count >= alert.at_least;
            if over == alerted {
                continue;
            }
            batch.push(Op::Count {
                process,
                node: state,
                now: 0,
                total: 1,
            });
            let mut data = Map::new();
            data.insert("start".into(), Value::String(over.to_string()));
            data.insert("node".into(), Value::String(name.clone()));
            data.insert("count".into(), Value::from(count));
            data.insert("at_least".into(), Value::from(alert.at_least));
            let task = self.alert_task(process, &alert.target, data, &mut batch)?;
            created.push(task);
        }
        if created.is_empty() {
            return Ok(());
        }
        self.commit_step(batch).await?;
        self.metrics.task_created(created.len() as u64);
        for task in created {
            self.schedule(task);
        }
        Ok(())
    }
}

/// The number claimed, on a shared store, while an engine decides the alerts of
/// `process`: no task has it (task ids count up from 1; this counts down from the top).
pub(crate) fn decision_claim(process: u64) -> u64 {
    u64::MAX - process
}

/// A held [`decision_claim`], given back when dropped.
struct DecisionClaim<'s> {
    store: &'s dyn conveyor_store::Store,
    id: u64,
}

impl<'s> DecisionClaim<'s> {
    /// Waits (up to a few seconds) while another engine decides.
    async fn take(store: &'s dyn conveyor_store::Store, process: u64) -> Result<Option<Self>> {
        let id = decision_claim(process);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut pause = std::time::Duration::from_millis(2);
        loop {
            if store.claim_async(vec![id]).await?.contains(&id) {
                return Ok(Some(DecisionClaim { store, id }));
            }
            if std::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for DecisionClaim<'_> {
    fn drop(&mut self) {
        self.store.release(self.id);
    }
}

/// The counter that keeps whether `node` is over its alert threshold.
fn state_of(node: &str) -> String {
    format!("{node}#alerted")
}

/// Whether a counter is an alert's state, not a node's (`#` is in no node name).
pub(crate) fn is_state(counter: &str) -> bool {
    counter.ends_with("#alerted")
}

impl Runtime {
    /// A new task that starts at `node` (not at the start: an alert is not a task the
    /// process's params describe).
    fn alert_task(
        &self,
        process: u64,
        node: &str,
        data: Map<String, Value>,
        batch: &mut Batch,
    ) -> Result<u64> {
        let id = self.store.next_task_id()?;
        let task = crate::ops::born(id, process, None, node, data, None, self.now());
        crate::ops::push_birth(&task, batch);
        batch.push(Op::SetReady(task.id));
        let id = task.id;
        batch.push(Op::PutTask(Box::new(task)));
        Ok(id)
    }
}
