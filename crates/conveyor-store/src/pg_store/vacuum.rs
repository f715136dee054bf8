//! Giving PostgreSQL's disk space back: `conveyor store compact --store postgres://…`.
//!
//! Removed tasks and trimmed history leave dead rows. Autovacuum makes their space
//! reusable, so the tables stop growing once retention has caught up, but the files
//! keep their size. `VACUUM (FULL)` rewrites each table into a new file holding only
//! its live rows and gives the rest to the file system. It holds an exclusive lock on
//! the table it rewrites, so engines running meanwhile wait for it, table by table.

use super::{Inner, PgStore};
use crate::Result;

/// Conveyor's tables: whatever else the database holds is left alone.
const TABLES: [&str; 11] = [
    "tasks",
    "history",
    "refs",
    "timers",
    "ready",
    "counters",
    "inbox",
    "claims",
    "processes",
    "api_keys",
    "conveyor_meta",
];

/// What [`PgStore::vacuum_full`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vacuumed {
    /// Conveyor's tables with their indexes and TOAST, in bytes, before and after.
    pub before: u64,
    pub after: u64,
}

impl PgStore {
    /// Rewrites Conveyor's tables with `VACUUM (FULL, ANALYZE)`, one after the other.
    pub fn vacuum_full(&self) -> Result<Vacuumed> {
        let before = crate::Store::size_on_disk(self)?;
        self.run(|inner: std::sync::Arc<Inner>| async move {
            let client = inner.client().await?;
            for table in TABLES {
                // VACUUM runs outside a transaction, so one statement per call. The
                // names are ours (constants), not input.
                client
                    .batch_execute(&format!("VACUUM (FULL, ANALYZE) {table}"))
                    .await
                    .map_err(|e| inner.error(e))?;
            }
            Ok(())
        })?;
        let after = crate::Store::size_on_disk(self)?;
        Ok(Vacuumed { before, after })
    }
}
