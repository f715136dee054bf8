//! Why a command was refused, as types: callers (the CLI's exit codes, the dashboard's
//! HTTP statuses, the task API's tags) match on the variant, never on the text.

use conveyor_runtime::RuntimeError;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The request itself is wrong (a flag, an argument): exit code 2.
    #[error("{0}")]
    Usage(String),
    /// The runtime refused or failed (no such process or task, a param refused, a ref
    /// taken, a store error).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A modify of a task that has finished, without `--force`.
    #[error(
        "task {task} has finished ({status}, in `{node}`): a modify would change nothing it does; `task retry` or `task goto NODE` moves it again, or add --force to merge the data anyway"
    )]
    Finished {
        task: u64,
        node: String,
        status: &'static str,
    },
    /// A caller limited to some processes (an API key's dashboard session) asked for
    /// something that belongs to no process or to all of them.
    #[error("{what} needs the admin token: this session may use only its key's processes")]
    NotAllowed { what: &'static str },
    /// An API key (any, even one that may use every process) asked for what only the
    /// admin token may do.
    #[error("{what} needs the admin token: an API key may not")]
    AdminOnly { what: &'static str },
    /// Something Corezoid does that Conveyor does not (the task API's ops), and why.
    #[error("not supported by Conveyor: {0}")]
    NotSupported(String),
    /// An API key asked the task API for a process outside its list.
    #[error("this API key may not use process {process}")]
    OutOfScope { process: u64 },
    /// A direct URL whose process does not exist or whose hash is not the process's
    /// current one: one refusal for both, so strangers learn nothing.
    #[error("no such direct URL")]
    NoDirectUrl,
    /// A Corezoid scheme given to the task API (`obj_scheme upload`, `conv create`) that
    /// cannot become Conveyor processes, or a definition it could not rewrite.
    #[error("the scheme cannot be used: {0}")]
    Scheme(String),
    /// `store verify|repair|migrate|compact` on a data dir that holds no store.
    #[error("{} holds no store", dir.display())]
    NoStore { dir: std::path::PathBuf },
    /// `store migrate --to postgres://…` into a database that already holds some.
    #[error(
        "the database at {place} already holds processes or API keys: migrate into an empty database"
    )]
    DatabaseNotEmpty { place: String },
    /// `store migrate --to postgres://…` read back something else than it copied.
    #[error(
        "the copy in {place} differs from the store in {} ({}); it was removed, the data dir is unchanged",
        dir.display(),
        differences.join("; ")
    )]
    CopyDiffers {
        place: String,
        dir: std::path::PathBuf,
        differences: Vec<String>,
    },
    /// The key that seals secrets could not be read, made or removed.
    #[error(transparent)]
    Seal(#[from] conveyor_store::SealError),
    /// `secrets rotate-key` stopped while re-sealing (what it did so far stays sealed
    /// under keys the record still lists).
    #[error("re-sealing stopped; run `conveyor secrets rotate-key` again to finish")]
    Reseal(#[source] conveyor_store::StoreError),
    /// A process's authorize address uses a param nobody gave a value for.
    #[error("the authorize link of process {process} uses `{param}`: give its value")]
    AuthorizeNeeds { process: String, param: String },
    /// A stored definition could not be written as a Corezoid export.
    #[error("cannot export {process}: {source}")]
    Export {
        process: String,
        source: conveyor_corezoid::ExportError,
    },
}

impl From<conveyor_store::StoreError> for CommandError {
    fn from(e: conveyor_store::StoreError) -> Self {
        CommandError::Runtime(e.into())
    }
}

impl CommandError {
    /// The CLI's exit code: 2 for a command-line mistake, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Usage(_) => 2,
            _ => 1,
        }
    }

    /// Whether a create was refused because its ref is taken (Corezoid's `not_unical_ref`).
    pub fn is_duplicate_ref(&self) -> bool {
        matches!(
            self,
            CommandError::Runtime(RuntimeError::DuplicateRef { .. })
        )
    }

    /// The input key this refusal is about, when it is about one (the task API's error
    /// `key`): a param refused or not taken, the ref of a duplicate.
    pub fn input_key(&self) -> Option<&str> {
        match self {
            CommandError::Runtime(RuntimeError::Param { name, .. }) => Some(name),
            CommandError::Runtime(RuntimeError::Params(list)) => {
                list.first().map(|(name, _)| name.as_str())
            }
            CommandError::Runtime(RuntimeError::Undeclared { keys, .. }) => {
                keys.first().map(String::as_str)
            }
            CommandError::Runtime(RuntimeError::DuplicateRef { .. }) => Some("ref"),
            _ => None,
        }
    }

    /// Whether the refusal is that the process named does not exist or is not the
    /// caller's to use.
    pub fn is_process_refused(&self) -> bool {
        matches!(
            self,
            CommandError::Runtime(RuntimeError::NoProcess(_)) | CommandError::OutOfScope { .. }
        )
    }

    /// Whether the thing named does not exist (or is not this caller's to see).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            CommandError::Runtime(RuntimeError::NoProcess(_) | RuntimeError::NoTask { .. })
                | CommandError::NoDirectUrl
        )
    }
}
