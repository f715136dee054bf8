//! A command as data: built from the command line by the client (files read, `key=value`
//! pairs parsed) or from a dashboard form, then run in the CLI's own process or by a
//! running server (`POST /admin/command`, the dashboard), with the same outcome either way.

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
        format: GraphFormat,
    },
    /// The process as a Corezoid export (`process export --format corezoid`).
    ProcessExport {
        process: String,
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
    /// A pasted code (or the whole redirect address) for the task with this ref of a
    /// process that declares an `authorize:` link: goes into its code param, the task
    /// modified if it exists, else created with `data` (the dashboard's code field).
    AuthorizeCode {
        process: String,
        reference: String,
        pasted: String,
        #[serde(default)]
        data: Map<String, Value>,
    },
    /// The authorize page's address the process declares (`authorize:`), filled from
    /// `values`, else the task with `reference`, else the process's settings and
    /// defaults; `page` replaces the address before its `?` (`bitrix authorize`, the
    /// dashboard's *Get the code*).
    AuthorizeLink {
        process: String,
        #[serde(default)]
        reference: Option<String>,
        #[serde(default)]
        values: Map<String, Value>,
        #[serde(default)]
        page: Option<String>,
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
        /// Also into a task that has finished (done or failed), which is refused otherwise.
        #[serde(default)]
        force: bool,
    },
    /// `task retry`: run again the node the task failed in, `data` merged first.
    TaskRetry {
        process: String,
        task: String,
        #[serde(default)]
        data: Map<String, Value>,
    },
    /// `task goto`: send the task to `node`, `data` merged first.
    TaskGoto {
        process: String,
        task: String,
        node: String,
        #[serde(default)]
        data: Map<String, Value>,
    },
    /// `process templates`: the shipped templates with their descriptions and params.
    Templates,
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
    /// `run --until-idle` through a server: wait until its engine is idle, and for the
    /// timers due within `wait_millis` (`--wait`).
    WaitIdle {
        #[serde(default)]
        wait_millis: u64,
    },
    /// Output made without the store (a diagram of a file); printed as it is.
    Drawn(String),
}

/// How `process graph` draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GraphFormat {
    Dot,
    Mermaid,
    Svg,
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
