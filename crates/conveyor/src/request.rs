//! A store command as data: built from the command line by the client (files read,
//! `key=value` pairs parsed), then executed here or by a running server
//! (`POST /admin/command`), with the same output either way.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    ProcessClone {
        source: String,
        definition: String,
        alias: Option<String>,
        settings: Map<String, Value>,
    },
    ProcessList,
    ProcessShow {
        process: String,
    },
    ProcessUpdate {
        process: String,
        file: String,
        definition: String,
    },
    ProcessGraph {
        process: String,
        format: crate::GraphFormat,
    },
    ProcessUrl {
        process: String,
        rotate: bool,
        base: String,
    },
    TaskAdd {
        process: String,
        reference: Option<String>,
        data: Map<String, Value>,
    },
    /// Modify the task with this ref if it exists, else create it (`bitrix authorize`).
    TaskUpsert {
        process: String,
        reference: String,
        data: Map<String, Value>,
    },
    TaskShow {
        process: String,
        task: String,
        reveal: bool,
    },
    TaskList {
        process: String,
        node: Option<String>,
        limit: usize,
    },
    TaskModify {
        process: String,
        task: String,
        data: Map<String, Value>,
    },
    TaskHistory {
        process: String,
        task: String,
    },
    TaskDelete {
        process: String,
        task: String,
    },
    ApiKeyCreate {
        name: String,
        processes: Vec<String>,
    },
    ApiKeyList,
    ApiKeyDelete {
        login: u64,
    },
    ApiKeyRotate {
        login: u64,
    },
    /// `store stats`: what the store holds, per process.
    StoreStats,
    /// `run --until-idle` through a server: wait until its engine is idle.
    WaitIdle,
    /// Output made without the store (a diagram of a file); printed as it is.
    Drawn(String),
}

/// What a command printed and how it ended.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reply {
    pub stdout: String,
    pub stderr: String,
    pub code: u8,
}

impl Reply {
    pub fn line(&mut self, text: impl AsRef<str>) {
        self.stdout.push_str(text.as_ref());
        self.stdout.push('\n');
    }

    pub fn failed(code: u8, message: impl std::fmt::Display) -> Reply {
        Reply {
            stdout: String::new(),
            stderr: format!("error: {message}\n"),
            code,
        }
    }
}
