//! Where a command's store is, and opening it: the data dir's own store or a PostgreSQL
//! database, its secret values sealed with the data dir's key. The binary says where
//! (from its flags and environment) and never opens the store itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conveyor_runtime::{Runtime, Settings, SystemClock};
use conveyor_store::{
    KeySource, PgOptions, PgStore, SealedStore, Store, StoreError, StoreKind, StoreOptions,
};

use crate::CommandError;

/// The store a command works on.
#[derive(Debug, Clone)]
pub struct Place {
    /// The data directory: its own store (unless `postgres`), its seal record, its API
    /// address.
    pub dir: PathBuf,
    /// How the data dir's own store is opened (and which kind a new one gets).
    pub options: StoreOptions,
    /// The PostgreSQL database of `--store`, if one is named.
    pub postgres: Option<Postgres>,
}

/// A PostgreSQL database and how to connect to it.
#[derive(Debug, Clone)]
pub struct Postgres {
    pub url: String,
    pub options: PgOptions,
}

/// Whether `text` names a PostgreSQL database (`postgres://…`, `postgresql://…`).
pub fn is_postgres_url(text: &str) -> bool {
    PgStore::is_url(text)
}

impl Place {
    /// Opens the store once: the database, else the data dir's own.
    fn open_store(&self) -> conveyor_store::Result<Arc<dyn Store>> {
        match &self.postgres {
            Some(pg) => PgStore::open(&pg.url, pg.options.clone()).map(|s| Arc::new(s) as _),
            None => conveyor_store::open(&self.dir, self.options),
        }
    }

    /// The store's secret values sealed with the data dir's key (made on first use in the
    /// key directory).
    fn seal(&self, store: Arc<dyn Store>, key: &KeySource) -> Result<SealedStore, CommandError> {
        Ok(SealedStore::open(
            &self.dir,
            store,
            key,
            Arc::new(conveyor_runtime::declared_secret_keys),
        )?)
    }

    /// A runtime on the store, opened once: `None` while another holds the store.
    pub fn open_runtime(&self, key: &KeySource) -> Result<Option<Arc<Runtime>>, CommandError> {
        let store = match self.open_store() {
            Ok(store) => store,
            Err(StoreError::Locked { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let sealed = self.seal(store, key)?;
        Ok(Some(Runtime::new(
            Arc::new(sealed),
            Arc::new(SystemClock),
            Settings::default(),
        )))
    }

    /// The sealed store, waiting up to `patience` while another short command holds it.
    pub(crate) fn open_sealed(
        &self,
        key: &KeySource,
        patience: Duration,
    ) -> Result<SealedStore, CommandError> {
        let deadline = Instant::now() + patience;
        let mut pause = Duration::from_millis(10);
        let store = loop {
            match self.open_store() {
                Ok(store) => break store,
                Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                Err(e) => return Err(e.into()),
            }
        };
        self.seal(store, key)
    }

    /// The refusal a command gets while an engine holds this store.
    pub fn locked(&self) -> CommandError {
        StoreError::Locked {
            path: self.dir.display().to_string(),
        }
        .into()
    }

    /// Whether [`Place::checkpoint`] has anything to do: a sled store in the data dir.
    pub fn needs_checkpoint(&self) -> bool {
        self.postgres.is_none()
            && conveyor_store::kind_of(&self.dir, self.options) == StoreKind::Sled
    }

    /// After an engine stopped cleanly and closed a sled store: opens and closes it once,
    /// so the next start reads a fresh snapshot instead of replaying everything this
    /// engine wrote (a log store wrote its snapshot as the engine stopped).
    pub fn checkpoint(&self) -> Result<(), CommandError> {
        if !self.needs_checkpoint() {
            return Ok(());
        }
        Ok(conveyor_store::checkpoint(&self.dir, self.options)?)
    }

    /// The kind of the data dir's own store (the one it holds, or the one a new one gets).
    pub fn kind(&self) -> StoreKind {
        conveyor_store::kind_of(&self.dir, self.options)
    }
}

/// A runtime on a new store in `dir` whose secrets are sealed with a key that is never
/// written (`conveyor demo`'s throwaway data dir).
pub fn throwaway_runtime(dir: &Path, options: StoreOptions) -> Result<Arc<Runtime>, CommandError> {
    let store = Arc::new(SealedStore::new(
        conveyor_store::open(dir, options)?,
        conveyor_store::Keyring::ephemeral(),
        Arc::new(conveyor_runtime::declared_secret_keys),
    ));
    Ok(Runtime::new(
        store,
        Arc::new(SystemClock),
        Settings::default(),
    ))
}
