//! The template [`Env`] of a running task: other processes' tasks come from the store,
//! time from the engine clock.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use conveyor_template::{Env, Path, ProcessId, RootField};
use serde_json::Value;

use crate::mask;
use crate::{LoadedProcess, Runtime};

/// The `root.*` values of the task being rendered, borrowed from it (a step renders
/// several templates; copying its names for each showed in the profile).
#[derive(Debug, Clone)]
pub(crate) struct Root<'a> {
    pub task_id: u64,
    pub reference: Option<&'a str>,
    pub process: u64,
    pub node: &'a str,
    pub prev_node: Option<&'a str>,
    pub created: i64,
    pub changed: i64,
}

pub(crate) struct StoreEnv<'a> {
    pub runtime: &'a Runtime,
    pub root: Root<'a>,
    pub now: i64,
    /// Secret values read from other processes' tasks: masked in history like our own.
    pub revealed: RefCell<Vec<String>>,
    pub seed: Cell<u64>,
    /// The process last read from by `conv[…]` (a template often reads many refs of one).
    last_read: RefCell<Option<Arc<LoadedProcess>>>,
}

impl<'a> StoreEnv<'a> {
    pub fn new(runtime: &'a Runtime, root: Root<'a>, now: i64) -> StoreEnv<'a> {
        let seed = (now as u64) ^ root.task_id.rotate_left(32) ^ 0x9E37_79B9_7F4A_7C15;
        StoreEnv {
            runtime,
            root,
            now,
            revealed: RefCell::new(Vec::new()),
            seed: Cell::new(seed),
            last_read: RefCell::new(None),
        }
    }

    /// The loaded process `id`, without going to the engine's map for every read.
    fn read_process(&self, id: u64) -> Result<Arc<LoadedProcess>, String> {
        if let Some(loaded) = self.last_read.borrow().as_ref()
            && loaded.record.id == id
        {
            return Ok(loaded.clone());
        }
        let loaded = self.runtime.loaded(id).map_err(|e| e.to_string())?;
        *self.last_read.borrow_mut() = Some(loaded.clone());
        Ok(loaded)
    }

    fn process_id(&self, process: &ProcessId) -> Result<u64, String> {
        match process {
            ProcessId::Id(id) => Ok(*id),
            ProcessId::Alias(alias) => self
                .runtime
                .alias_id(alias)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no process with alias @{alias}")),
        }
    }
}

impl Env for StoreEnv<'_> {
    fn root(&self, field: RootField) -> Value {
        let r = &self.root;
        match field {
            RootField::TaskId => Value::from(r.task_id),
            RootField::Ref => r
                .reference
                .map(|s| Value::String(s.to_string()))
                .unwrap_or(Value::Null),
            RootField::ConvId => Value::from(r.process),
            RootField::NodeId => Value::String(r.node.to_string()),
            RootField::PrevNodeId => r
                .prev_node
                .map(|s| Value::String(s.to_string()))
                .unwrap_or(Value::Null),
            RootField::CreateTime => Value::from(r.created.div_euclid(1000)),
            RootField::ChangeTime => Value::from(r.changed.div_euclid(1000)),
        }
    }

    fn task_ref(
        &self,
        process: &ProcessId,
        reference: &str,
        path: &Path,
    ) -> Result<Option<Value>, String> {
        let id = self.process_id(process)?;
        let loaded = self.read_process(id)?;
        let task = self
            .runtime
            .ref_data(id, reference)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no task with ref `{reference}` in process {process}"))?;
        let secret =
            |key: &str| loaded.process.is_secret(key) || task.secret_keys.iter().any(|k| k == key);
        if path.is_empty() {
            // A whole-task read gets the secret keys masked: a secret is read by name.
            return Ok(Some(match &task.data {
                serde_json::Value::Object(map) => serde_json::Value::Object(
                    map.iter()
                        .map(|(k, v)| {
                            let v = if secret(k) {
                                serde_json::Value::String(mask::MASK.into())
                            } else {
                                v.clone()
                            };
                            (k.clone(), v)
                        })
                        .collect(),
                ),
                other => other.clone(),
            }));
        }
        let value = path.lookup(&task.data).cloned();
        // Remember secrets read, so history, output and the reading task's own keys can
        // keep them secret.
        if path.head().is_some_and(secret)
            && let Some(v) = &value
        {
            mask::collect(v, &mut self.revealed.borrow_mut());
        }
        Ok(value)
    }

    fn node_count(&self, process: Option<&ProcessId>, node: &str) -> Result<u64, String> {
        let id = match process {
            Some(p) => self.process_id(p)?,
            None => self.root.process,
        };
        let loaded = self.runtime.loaded(id).map_err(|e| e.to_string())?;
        if !loaded.process.nodes.contains_key(node) {
            return Err(format!("no node `{node}` in process {id}"));
        }
        let counters = self.runtime.store.counters(id).map_err(|e| e.to_string())?;
        Ok(counters
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, c)| c.now.max(0) as u64)
            .unwrap_or(0))
    }

    fn now_millis(&self) -> i64 {
        self.now
    }

    fn random_below(&self, bound: u64) -> u64 {
        // xorshift64*: plenty for `$.random`, which is not for cryptography.
        let mut x = self.seed.get() | 1;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.seed.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound
    }
}
