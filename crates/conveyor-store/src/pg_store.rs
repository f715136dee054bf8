//! [`PgStore`]: the store on PostgreSQL, which several engines (on several machines)
//! share.
//!
//! **Driver.** tokio-postgres on a small runtime of the store's own, with a
//! deadpool-postgres pool over it. The [`Store`] trait is synchronous (the engine calls
//! it from its steps as it calls sled): each call runs its queries on the store's
//! runtime and waits for the answer, so a caller's own runtime (if any) is never
//! blocked inside. Queries of one call are pipelined on one connection.
//!
//! **Commits.** A group of batches is folded into what it leaves (`fold.rs`) and
//! written with one statement per table and kind of change, in one transaction. Its
//! claims are checked in the same transaction (`claims.rs`): a step whose lease was
//! taken over by another engine commits nothing. A commit that returned is durable as
//! far as the server's `synchronous_commit` makes it (on by default): [`Store::flush`]
//! has nothing left to do.
//!
//! **Consistency.** Reads run at READ COMMITTED, each on its own: a read sees every
//! commit that returned before it started, from any engine, and never part of one.
//!
//! **Several engines.** Each engine's store has an engine name; tasks are claimed
//! (leases with fencing tokens, `claims.rs`), and LISTEN/NOTIFY (`listen.rs`) wakes
//! idle engines when work arrives and tells them when a process changed.

mod claims;
mod fold;
mod listen;
mod schema;
mod vacuum;

pub use vacuum::Vacuumed;

use std::future::Future;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::*;

pub use claims::DEFAULT_LEASE;

/// How an engine connects.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Most connections this engine's pool opens.
    pub pool_size: usize,
    /// The schema the tables live in (`None`: the user's default, normally `public`).
    pub schema: Option<String>,
    /// How long a claim on a task lasts unless renewed; another engine takes over the
    /// work of an engine that stopped renewing (crashed, cut off) after this long.
    pub lease: Duration,
    /// How long a call waits for a connection (the server is down or restarting:
    /// callers get an error after this, not a hang).
    pub wait: Duration,
}

impl Default for PgOptions {
    fn default() -> PgOptions {
        PgOptions {
            pool_size: 8,
            schema: None,
            lease: DEFAULT_LEASE,
            wait: Duration::from_secs(5),
        }
    }
}

/// What the engines sharing a store tell each other (see [`Store::watch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A task became ready, got a message or a timer: there may be work to claim.
    Work,
    /// A process was updated (its definition, settings or URL).
    Process(u64),
    /// The connection that listens was lost and made again: anything may have
    /// changed meanwhile.
    Reconnected,
}

/// Called with each [`Change`] (on the store's own thread: it must return quickly).
pub type Listener = Arc<dyn Fn(Change) + Send + Sync>;

/// The PostgreSQL store (see the module documentation).
pub struct PgStore {
    inner: Arc<Inner>,
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

struct Inner {
    pool: Pool,
    /// Connections for claims and their renewals (`synchronous_commit` off).
    claims_pool: Pool,
    /// What a claim for a step read of its task (record, messages), handed to the
    /// step's first `task`/`inbox` read instead of a round trip each.
    prefetched: Mutex<std::collections::HashMap<u64, Prefetched>>,
    config: tokio_postgres::Config,
    schema: Option<String>,
    /// The server, as errors name it (no password).
    place: String,
    /// This engine's name in `claims`.
    engine: String,
    /// The counter slot this engine writes (from the `counter_slots` sequence at open).
    slot: std::sync::atomic::AtomicI32,
    /// Task ids of the block this engine took last: `next..end`.
    ids: Mutex<(u64, u64)>,
    claims: claims::Claims,
    /// Steps' claims waiting to be sent together ([`claims::claim_batches`]).
    claim_requests: tokio::sync::mpsc::UnboundedSender<claims::ClaimRequest>,
    listener: Mutex<Option<Listener>>,
    listening: AtomicBool,
}

/// Task ids taken from the sequence at a time (its INCREMENT).
const ID_BLOCK: u64 = 64;
/// Counter slots engines spread over.
const SLOTS: u32 = 32;

fn place_of(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("(default)");
    format!("postgres://{host}:{port}/{db}")
}

/// A short, readable reason from a driver error (its text alone is often "db error").
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

impl Inner {
    /// A driver error as a store error: the server gone is [`StoreError::Unavailable`].
    fn error(&self, e: tokio_postgres::Error) -> StoreError {
        if e.as_db_error().is_none() || e.is_closed() {
            StoreError::Unavailable {
                place: self.place.clone(),
                reason: describe(&e),
            }
        } else {
            StoreError::Io(format!("PostgreSQL at {}: {}", self.place, describe(&e)))
        }
    }

    fn pool_error(&self, e: deadpool_postgres::PoolError) -> StoreError {
        let reason = match &e {
            deadpool_postgres::PoolError::Backend(e) => describe(e),
            deadpool_postgres::PoolError::Timeout(_) => {
                "no connection within the wait time (is the server up?)".into()
            }
            other => other.to_string(),
        };
        StoreError::Unavailable {
            place: self.place.clone(),
            reason,
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| self.pool_error(e))
    }

    /// Rows of one statement on a connection of the claims pool.
    async fn claims_query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        let client = self
            .claims_pool
            .get()
            .await
            .map_err(|e| self.pool_error(e))?;
        let statement = client
            .prepare_cached(sql)
            .await
            .map_err(|e| self.error(e))?;
        client
            .query(&statement, params)
            .await
            .map_err(|e| self.error(e))
    }

    /// Reads the records and messages of tasks just claimed for steps, for their
    /// first reads (see `prefetched`). A task's record changes only with its claim
    /// (fencing), so it stays true until the step reads it; messages that come later
    /// stay in the inbox, and the task ready, for its next step.
    async fn prefetch(&self, tasks: &[u64]) -> Result<()> {
        if tasks.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = tasks.iter().map(|t| *t as i64).collect();
        let client = self.client().await?;
        let (records, messages) = {
            let a = async {
                let st = client
                    .prepare_cached("SELECT id, record FROM tasks WHERE id = ANY($1)")
                    .await?;
                client.query(&st, &[&ids]).await
            };
            let b = async {
                let st = client
                    .prepare_cached(
                        "SELECT task, seq, message FROM inbox WHERE task = ANY($1) ORDER BY task, seq",
                    )
                    .await?;
                client.query(&st, &[&ids]).await
            };
            futures_util::future::try_join(a, b)
                .await
                .map_err(|e| self.error(e))?
        };
        let mut map: std::collections::HashMap<u64, Prefetched> =
            tasks.iter().map(|t| (*t, Prefetched::default())).collect();
        for row in &records {
            if let Some(p) = map.get_mut(&get_u64(row, 0)) {
                p.record = Some(Some(row.get(1)));
            }
        }
        for p in map.values_mut() {
            if p.record.is_none() {
                p.record = Some(None);
            }
            p.inbox = Some(Vec::new());
        }
        for row in &messages {
            if let Some(p) = map.get_mut(&get_u64(row, 0))
                && let Some(inbox) = p.inbox.as_mut()
            {
                inbox.push((get_u64(row, 1), row.get(2)));
            }
        }
        if let Ok(mut prefetched) = self.prefetched.lock() {
            prefetched.extend(map);
        }
        Ok(())
    }

    /// Rows of one statement.
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(sql)
            .await
            .map_err(|e| self.error(e))?;
        client
            .query(&statement, params)
            .await
            .map_err(|e| self.error(e))
    }

    fn notify_listener(&self, change: Change) {
        let listener = self.listener.lock().ok().and_then(|l| l.clone());
        if let Some(listener) = listener {
            listener(change);
        }
    }
}

/// A claimed task's record (`Some(None)`: there is none) and messages, each handed out
/// once.
#[derive(Default)]
struct Prefetched {
    record: Option<Option<String>>,
    inbox: Option<Vec<(u64, String)>>,
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what: what.into(),
        reason: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(what: &str, value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Io(format!("cannot encode {what}: {e}")))
}

fn get_u64(row: &tokio_postgres::Row, i: usize) -> u64 {
    row.get::<_, i64>(i) as u64
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`, or
    /// the key=value form), brings its schema up to date and checks it is not newer
    /// than this conveyor.
    pub fn open(url: &str, options: PgOptions) -> Result<PgStore> {
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| {
            StoreError::Io(format!(
                "the PostgreSQL address is not valid: {}",
                describe(&e)
            ))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.wait);
        }
        config.application_name("conveyor");
        if let Some(schema) = &options.schema {
            if !schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(StoreError::Io(format!(
                    "schema name `{schema}`: only letters, digits and _"
                )));
            }
            config.options(format!("-c search_path={schema}"));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("conveyor-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Io(format!("cannot start the PostgreSQL runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let manager = Manager::from_config(
            config.clone(),
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let build = |manager: Manager, size: usize| {
            Pool::builder(manager)
                .max_size(size)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(options.wait))
                .create_timeout(Some(options.wait))
                .recycle_timeout(Some(options.wait))
                .build()
                .map_err(|e| StoreError::Io(format!("cannot make the connection pool: {e}")))
        };
        let pool = build(manager, options.pool_size.max(2))?;
        // Claims are leases: one lost in a server crash only lets another engine take
        // the task a little early, and the commits of the old holder are then refused
        // (fencing). They need not wait for the WAL to reach the disk.
        let mut claims_config = config.clone();
        let lax = match config.get_options() {
            Some(o) => format!("{o} -c synchronous_commit=off"),
            None => "-c synchronous_commit=off".into(),
        };
        claims_config.options(lax);
        let claims_pool = build(
            Manager::from_config(
                claims_config,
                tokio_postgres::NoTls,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            ),
            options.pool_size.max(2),
        )?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let engine = format!("{host}:{}:{:x}", std::process::id(), nanos & 0xff_ffff);
        let (claim_requests, claim_queue) = tokio::sync::mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            pool,
            claims_pool,
            place: place_of(&config),
            config,
            schema: options.schema.clone(),
            slot: std::sync::atomic::AtomicI32::new((nanos % SLOTS as u64) as i32),
            engine,
            ids: Mutex::new((0, 0)),
            prefetched: Mutex::new(std::collections::HashMap::new()),
            claims: claims::Claims::new(options.lease),
            claim_requests,
            listener: Mutex::new(None),
            listening: AtomicBool::new(false),
        });
        let store = PgStore {
            inner,
            runtime: Some(runtime),
            handle,
        };
        store.run(|inner| async move { inner.migrate().await })?;
        store.run(|inner| async move { inner.take_slot().await })?;
        store
            .handle
            .spawn(claims::keep_leases(Arc::downgrade(&store.inner)));
        store
            .handle
            .spawn(claims::flush_releases_soon(Arc::downgrade(&store.inner)));
        store.handle.spawn(claims::claim_batches(
            claim_queue,
            Arc::downgrade(&store.inner),
        ));
        Ok(store)
    }

    /// Runs `f` on the store's runtime and waits for it (from any thread, inside
    /// another runtime or not).
    fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let (send, receive) = std::sync::mpsc::sync_channel(1);
        let future = f(self.inner.clone());
        self.handle.spawn(async move {
            let _ = send.send(future.await);
        });
        receive
            .recv()
            .map_err(|_| StoreError::Io("the PostgreSQL store was stopped".into()))?
    }

    /// The server and database, as errors name them (no password).
    pub fn place(&self) -> &str {
        &self.inner.place
    }

    /// This engine's name in the claims table.
    pub fn engine(&self) -> &str {
        &self.inner.engine
    }

    /// Whether `text` names a PostgreSQL database (`postgres://…`, `postgresql://…`).
    pub fn is_url(text: &str) -> bool {
        text.starts_with("postgres://") || text.starts_with("postgresql://")
    }

    /// Drops the store's tables and sequences (only Conveyor's: whatever else the
    /// database holds stays): `store migrate` cleaning up after a copy that failed.
    pub fn drop_everything(&self) -> Result<()> {
        self.run(|inner| async move {
            let client = inner.client().await?;
            client
                .batch_execute(
                    "DROP TABLE IF EXISTS processes, api_keys, tasks, refs, timers, ready,
                         counters, history, inbox, claims, rate_windows, conveyor_meta;
                     DROP SEQUENCE IF EXISTS process_ids, logins, task_ids, claim_tokens,
                         counter_slots;",
                )
                .await
                .map_err(|e| inner.error(e))
        })
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Give back what this engine still holds, so others need not wait out a lease.
        let _ = self.run(|inner| async move { inner.claims.release_all(&inner).await });
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Inner {
    /// Takes this engine's counter slot: the next of the sequence, so engines opened one
    /// after another write different rows (32 of them before two share one).
    async fn take_slot(self: Arc<Self>) -> Result<()> {
        let rows = self.query("SELECT nextval('counter_slots')", &[]).await?;
        let Some(n) = rows.first().map(|row| row.get::<_, i64>(0)) else {
            return Ok(());
        };
        self.slot.store(
            n.rem_euclid(i64::from(SLOTS)) as i32,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(())
    }

    async fn migrate(self: Arc<Self>) -> Result<()> {
        let mut client = self.client().await?;
        if let Some(schema) = &self.schema {
            client
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .await
                .map_err(|e| self.error(e))?;
        }
        let tx = client.transaction().await.map_err(|e| self.error(e))?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&schema::MIGRATION_LOCK],
        )
        .await
        .map_err(|e| self.error(e))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS conveyor_meta (key text PRIMARY KEY, value bigint NOT NULL)",
        )
        .await
        .map_err(|e| self.error(e))?;
        let found = tx
            .query_opt("SELECT value FROM conveyor_meta WHERE key = 'schema'", &[])
            .await
            .map_err(|e| self.error(e))?
            .map_or(0, |row| row.get::<_, i64>(0) as u32);
        if found > schema::latest() {
            return Err(StoreError::NewerFormat {
                path: self.place.clone(),
                found,
                supported: schema::latest(),
            });
        }
        for (n, sql) in schema::MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.batch_execute(sql).await.map_err(|e| self.error(e))?;
            tx.execute(
                "INSERT INTO conveyor_meta (key, value) VALUES ('schema', $1)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&(n as i64 + 1)],
            )
            .await
            .map_err(|e| self.error(e))?;
        }
        tx.commit().await.map_err(|e| self.error(e))
    }

    /// Reads a process `FOR UPDATE`, changes it with `change`, writes it back and tells
    /// the other engines.
    async fn change_process(
        self: Arc<Self>,
        id: u64,
        change: impl FnOnce(&mut ProcessRecord) + Send,
    ) -> Result<ProcessRecord> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.error(e))?;
        let row = tx
            .query_opt(
                "SELECT record FROM processes WHERE id = $1 FOR UPDATE",
                &[&(id as i64)],
            )
            .await
            .map_err(|e| self.error(e))?
            .ok_or(StoreError::NoProcess(id))?;
        let mut record: ProcessRecord = decode("a process", row.get(0))?;
        change(&mut record);
        tx.execute(
            "UPDATE processes SET record = $2 WHERE id = $1",
            &[&(id as i64), &encode("a process", &record)?],
        )
        .await
        .map_err(|e| self.error(e))?;
        tx.execute(
            "SELECT pg_notify('conveyor_process', $1)",
            &[&id.to_string()],
        )
        .await
        .map_err(|e| self.error(e))?;
        tx.commit().await.map_err(|e| self.error(e))?;
        Ok(record)
    }

    async fn commit_plan(self: Arc<Self>, plan: fold::Plan) -> Result<()> {
        let fences = self.claims.fences(&plan.touched);
        let mut attempt = 0;
        loop {
            match self.try_commit(&plan, &fences).await {
                Err(Retry::Again(e)) if attempt < 5 => {
                    attempt += 1;
                    tracing::debug!(error = %describe(&e), attempt, "commit retried");
                    tokio::time::sleep(Duration::from_millis(2 << attempt)).await;
                }
                Err(Retry::Again(e)) => return Err(self.error(e)),
                Err(Retry::Fail(e)) => return Err(e),
                Ok(()) => return Ok(()),
            }
        }
    }

    async fn try_commit(
        &self,
        plan: &fold::Plan,
        fences: &(Vec<i64>, Vec<i64>),
    ) -> std::result::Result<(), Retry> {
        let fail = |e: tokio_postgres::Error| -> Retry {
            match e.code() {
                Some(c)
                    if *c == SqlState::T_R_DEADLOCK_DETECTED
                        || *c == SqlState::T_R_SERIALIZATION_FAILURE =>
                {
                    Retry::Again(e)
                }
                _ => Retry::Fail(self.error(e)),
            }
        };
        let mut client = self.client().await.map_err(Retry::Fail)?;
        let releases = self.claims.take_releases();
        let tx = client.transaction().await.map_err(fail)?;
        let result = async {
            // The claims first: they lock the tasks' claim rows until the commit, so a
            // takeover waits for this commit (and then sees it) or this commit fails.
            if !fences.0.is_empty() {
                let held = tx
                    .query(
                        claims::FENCE,
                        &[&fences.0, &fences.1, &self.claims.lease_ms()],
                    )
                    .await
                    .map_err(fail)?;
                if held.len() < fences.0.len() {
                    let held: std::collections::HashSet<i64> =
                        held.iter().map(|r| r.get(0)).collect();
                    return Err(Retry::Fail(StoreError::Fenced {
                        tasks: fences
                            .0
                            .iter()
                            .filter(|t| !held.contains(t))
                            .map(|t| *t as u64)
                            .collect(),
                    }));
                }
            }
            // Existing tasks written without a claim of this engine's (no step of it
            // reads them): claimed for this commit, refused if another engine holds one.
            let unheld: Vec<i64> = plan
                .written
                .iter()
                .filter(|t| !fences.0.contains(&(**t as i64)))
                .map(|t| *t as i64)
                .collect();
            let mut for_commit: (Vec<i64>, Vec<i64>) = (Vec::new(), Vec::new());
            if !unheld.is_empty() {
                let rows = tx
                    .query(claims::CLAIM_FOR_COMMIT, &[&unheld, &self.engine])
                    .await
                    .map_err(fail)?;
                for row in &rows {
                    for_commit.0.push(row.get(0));
                    for_commit.1.push(row.get(1));
                }
                if for_commit.0.len() < unheld.len() {
                    return Err(Retry::Fail(StoreError::Fenced {
                        tasks: unheld
                            .iter()
                            .filter(|t| !for_commit.0.contains(t))
                            .map(|t| *t as u64)
                            .collect(),
                    }));
                }
            }
            write_plan(
                &tx,
                plan,
                self.slot.load(std::sync::atomic::Ordering::Relaxed),
            )
            .await
            .map_err(|e| match e {
                Written::Db(e) => fail(e),
                Written::Store(e) => Retry::Fail(e),
            })?;
            if !for_commit.0.is_empty() {
                tx.execute(claims::RELEASE, &[&for_commit.0, &for_commit.1])
                    .await
                    .map_err(fail)?;
            }
            if !releases.0.is_empty() {
                tx.execute(claims::RELEASE, &[&releases.0, &releases.1])
                    .await
                    .map_err(fail)?;
            }
            if plan.wakes {
                tx.execute("SELECT pg_notify('conveyor_work', '')", &[])
                    .await
                    .map_err(fail)?;
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                tx.commit().await.map_err(fail)?;
                Ok(())
            }
            Err(e) => {
                // The releases were not applied: keep them for the next commit.
                self.claims.give_back_releases(releases);
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }
}

enum Retry {
    /// A deadlock or serialization failure between engines: run it again.
    Again(tokio_postgres::Error),
    Fail(StoreError),
}

enum Written {
    Db(tokio_postgres::Error),
    Store(StoreError),
}

/// Writes a folded group in the open transaction: deletes first, then writes; the
/// statements are pipelined (sent together, answered in order).
async fn write_plan(
    tx: &deadpool_postgres::Transaction<'_>,
    plan: &fold::Plan,
    slot: i32,
) -> std::result::Result<(), Written> {
    use futures_util::future::try_join_all;
    type Pending<'a> = std::pin::Pin<
        Box<dyn Future<Output = std::result::Result<u64, tokio_postgres::Error>> + Send + 'a>,
    >;
    let mut statements: Vec<Pending<'_>> = Vec::new();
    macro_rules! run {
        ($cond:expr, $sql:expr, $($p:expr),+) => {
            if $cond {
                statements.push(Box::pin(async move {
                    let statement = tx.prepare_cached($sql).await?;
                    tx.execute(&statement, &[$($p),+]).await
                }));
            }
        };
    }
    run!(
        !plan.del_tasks.is_empty(),
        "DELETE FROM tasks WHERE id = ANY($1)",
        &plan.del_tasks
    );
    run!(
        !plan.ref_del.0.is_empty(),
        "DELETE FROM refs x USING unnest($1::bigint[], $2::text[], $3::bigint[]) d(p, r, t)
         WHERE x.process = d.p AND x.ref = d.r AND x.task = d.t",
        &plan.ref_del.0,
        &plan.ref_del.1,
        &plan.ref_del.2
    );
    run!(
        !plan.hist_wipe.is_empty(),
        "DELETE FROM history WHERE task = ANY($1)",
        &plan.hist_wipe
    );
    run!(
        !plan.inbox_wipe.is_empty(),
        "DELETE FROM inbox WHERE task = ANY($1)",
        &plan.inbox_wipe
    );
    run!(
        !plan.inbox_del.0.is_empty(),
        "DELETE FROM inbox x USING unnest($1::bigint[], $2::bigint[]) d(t, s)
         WHERE x.task = d.t AND x.seq = d.s",
        &plan.inbox_del.0,
        &plan.inbox_del.1
    );
    run!(
        !plan.ready_del.is_empty(),
        "DELETE FROM ready WHERE task = ANY($1)",
        &plan.ready_del
    );
    run!(
        !plan.timer_del.0.is_empty(),
        "DELETE FROM timers x USING unnest($1::bigint[], $2::bigint[]) d(due, task)
         WHERE x.due = d.due AND x.task = d.task",
        &plan.timer_del.0,
        &plan.timer_del.1
    );
    run!(
        !plan.put_id.is_empty(),
        "INSERT INTO tasks (id, process, node, listed, record)
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bool[], $5::text[])
         ON CONFLICT (id) DO UPDATE SET process = EXCLUDED.process, node = EXCLUDED.node,
             listed = tasks.listed OR EXCLUDED.listed, record = EXCLUDED.record",
        &plan.put_id,
        &plan.put_process,
        &plan.put_node,
        &plan.put_listed,
        &plan.put_record
    );
    run!(
        !plan.listed_only.is_empty(),
        "UPDATE tasks SET listed = true WHERE id = ANY($1)",
        &plan.listed_only
    );
    run!(
        !plan.timer_ins.0.is_empty(),
        "INSERT INTO timers (due, task) SELECT * FROM unnest($1::bigint[], $2::bigint[])
         ON CONFLICT DO NOTHING",
        &plan.timer_ins.0,
        &plan.timer_ins.1
    );
    run!(
        !plan.ready_ins.is_empty(),
        "INSERT INTO ready (task) SELECT * FROM unnest($1::bigint[]) ON CONFLICT DO NOTHING",
        &plan.ready_ins
    );
    run!(
        !plan.counts.0.is_empty(),
        "INSERT INTO counters (process, node, slot, now, total)
         SELECT p, n, $5, c, t FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[]) x(p, n, c, t)
         ON CONFLICT (process, node, slot) DO UPDATE
             SET now = counters.now + EXCLUDED.now, total = counters.total + EXCLUDED.total",
        &plan.counts.0,
        &plan.counts.1,
        &plan.counts.2,
        &plan.counts.3,
        &slot
    );
    run!(
        !plan.hist_ins.0.is_empty(),
        "INSERT INTO history (task, seq, events)
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[])
         ON CONFLICT (task, seq) DO UPDATE SET events = EXCLUDED.events",
        &plan.hist_ins.0,
        &plan.hist_ins.1,
        &plan.hist_ins.2
    );
    run!(
        !plan.inbox_ins.0.is_empty(),
        "INSERT INTO inbox (task, seq, message)
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[])
         ON CONFLICT (task, seq) DO UPDATE SET message = EXCLUDED.message",
        &plan.inbox_ins.0,
        &plan.inbox_ins.1,
        &plan.inbox_ins.2
    );
    try_join_all(statements).await.map_err(Written::Db)?;
    if !plan.ref_ins.0.is_empty() {
        // A ref held by another task is not overwritten (and not returned): the whole
        // transaction then fails. Concurrent claims of one ref wait on the unique index.
        let statement = tx
            .prepare_cached(
                "INSERT INTO refs (process, ref, task)
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[])
                 ON CONFLICT (process, ref) DO UPDATE SET task = EXCLUDED.task
                     WHERE refs.task = EXCLUDED.task
                 RETURNING process, ref",
            )
            .await
            .map_err(Written::Db)?;
        let rows = tx
            .query(
                &statement,
                &[&plan.ref_ins.0, &plan.ref_ins.1, &plan.ref_ins.2],
            )
            .await
            .map_err(Written::Db)?;
        if rows.len() < plan.ref_ins.0.len() {
            let written: std::collections::HashSet<(i64, String)> =
                rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            let (process, reference) = plan
                .ref_ins
                .0
                .iter()
                .zip(&plan.ref_ins.1)
                .find(|(p, r)| !written.contains(&(**p, (*r).clone())))
                .map(|(p, r)| (*p as u64, r.clone()))
                .unwrap_or_default();
            return Err(Written::Store(StoreError::DuplicateRef {
                process,
                reference,
            }));
        }
    }
    Ok(())
}

impl Store for PgStore {
    fn create_process(&self, new: NewProcess) -> Result<ProcessRecord> {
        self.run(|inner| async move {
            let mut client = inner.client().await?;
            let tx = client.transaction().await.map_err(|e| inner.error(e))?;
            if let Some(alias) = &new.alias
                && let Some(row) = tx
                    .query_opt("SELECT id FROM processes WHERE alias = $1", &[alias])
                    .await
                    .map_err(|e| inner.error(e))?
            {
                return Err(StoreError::DuplicateAlias {
                    alias: alias.clone(),
                    process: get_u64(&row, 0),
                });
            }
            let id: i64 = tx
                .query_one("SELECT nextval('process_ids')", &[])
                .await
                .map_err(|e| inner.error(e))?
                .get(0);
            let record = ProcessRecord::first_version(id as u64, new);
            let inserted = tx
                .execute(
                    "INSERT INTO processes (id, alias, record) VALUES ($1, $2, $3)",
                    &[&id, &record.alias, &encode("a process", &record)?],
                )
                .await;
            match inserted {
                Ok(_) => {}
                // Another engine took the alias a moment before.
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    return Err(StoreError::DuplicateAlias {
                        alias: record.alias.clone().unwrap_or_default(),
                        process: 0,
                    });
                }
                Err(e) => return Err(inner.error(e)),
            }
            tx.commit().await.map_err(|e| inner.error(e))?;
            Ok(record)
        })
    }

    fn update_process(&self, id: u64, definition: String) -> Result<ProcessRecord> {
        self.run(|inner| {
            inner.change_process(id, move |r| {
                r.definition = definition;
                r.version += 1;
            })
        })
    }

    fn set_url_hash(&self, id: u64, hash: String) -> Result<ProcessRecord> {
        self.run(|inner| inner.change_process(id, move |r| r.url_hash = Some(hash)))
    }

    fn process(&self, id: u64) -> Result<Option<ProcessRecord>> {
        self.run(|inner| async move {
            let rows = inner
                .query(
                    "SELECT record FROM processes WHERE id = $1",
                    &[&(id as i64)],
                )
                .await?;
            rows.first()
                .map(|r| decode("a process", r.get(0)))
                .transpose()
        })
    }

    fn process_by_alias(&self, alias: &str) -> Result<Option<ProcessRecord>> {
        let alias = alias.to_string();
        self.run(|inner| async move {
            let rows = inner
                .query("SELECT record FROM processes WHERE alias = $1", &[&alias])
                .await?;
            rows.first()
                .map(|r| decode("a process", r.get(0)))
                .transpose()
        })
    }

    fn alias(&self, alias: &str) -> Result<Option<u64>> {
        let alias = alias.to_string();
        self.run(|inner| async move {
            let rows = inner
                .query("SELECT id FROM processes WHERE alias = $1", &[&alias])
                .await?;
            Ok(rows.first().map(|r| get_u64(r, 0)))
        })
    }

    fn processes(&self) -> Result<Vec<ProcessRecord>> {
        self.run(|inner| async move {
            let rows = inner
                .query("SELECT record FROM processes ORDER BY id", &[])
                .await?;
            rows.iter().map(|r| decode("a process", r.get(0))).collect()
        })
    }

    fn set_settings(
        &self,
        id: u64,
        settings: serde_json::Map<String, serde_json::Value>,
    ) -> Result<ProcessRecord> {
        self.run(|inner| inner.change_process(id, move |r| r.settings = settings))
    }

    fn next_task_id(&self) -> Result<u64> {
        if let Ok(mut ids) = self.inner.ids.lock()
            && ids.0 < ids.1
        {
            ids.0 += 1;
            return Ok(ids.0 - 1);
        }
        let start = self.run(|inner| async move {
            let rows = inner.query("SELECT nextval('task_ids')", &[]).await?;
            rows.first()
                .map(|r| get_u64(r, 0))
                .ok_or_else(|| StoreError::Io("nextval returned nothing".into()))
        })?;
        if let Ok(mut ids) = self.inner.ids.lock() {
            *ids = (start + 1, start + ID_BLOCK);
        }
        Ok(start)
    }

    fn task(&self, id: u64) -> Result<Option<TaskRecord>> {
        if let Some(record) = self
            .inner
            .prefetched
            .lock()
            .ok()
            .and_then(|mut p| p.get_mut(&id).and_then(|p| p.record.take()))
        {
            return record.map(|r| decode("a task", &r)).transpose();
        }
        self.run(|inner| async move {
            let rows = inner
                .query("SELECT record FROM tasks WHERE id = $1", &[&(id as i64)])
                .await?;
            rows.first().map(|r| decode("a task", r.get(0))).transpose()
        })
    }

    fn task_by_ref(&self, process: u64, reference: &str) -> Result<Option<TaskRecord>> {
        let reference = reference.to_string();
        self.run(|inner| async move {
            let rows = inner
                .query(
                    "SELECT t.record FROM refs r JOIN tasks t ON t.id = r.task
                     WHERE r.process = $1 AND r.ref = $2",
                    &[&(process as i64), &reference],
                )
                .await?;
            rows.first().map(|r| decode("a task", r.get(0))).transpose()
        })
    }

    fn tasks(&self, process: u64, node: Option<&str>, limit: usize) -> Result<Vec<TaskRecord>> {
        let node = node.map(str::to_string);
        let limit = limit.min(i64::MAX as usize) as i64;
        self.run(|inner| async move {
            let rows = inner
                .query(
                    "SELECT record FROM tasks WHERE process = $1 AND listed
                     AND ($2::text IS NULL OR node = $2) ORDER BY id LIMIT $3",
                    &[&(process as i64), &node, &limit],
                )
                .await?;
            rows.iter().map(|r| decode("a task", r.get(0))).collect()
        })
    }

    fn history(&self, task: u64) -> Result<Vec<HistoryEvent>> {
        self.run(|inner| async move {
            let rows = inner
                .query(
                    "SELECT events FROM history WHERE task = $1 ORDER BY seq",
                    &[&(task as i64)],
                )
                .await?;
            let mut events = Vec::new();
            for row in rows {
                let part: Vec<HistoryEvent> = decode("history events", row.get(0))?;
                events.extend(part);
            }
            Ok(events)
        })
    }

    fn inbox(&self, task: u64) -> Result<Vec<(u64, InboxMessage)>> {
        let prefetched = self.inner.prefetched.lock().ok().and_then(|mut p| {
            let entry = p.get_mut(&task)?;
            let inbox = entry.inbox.take();
            if entry.record.is_none() {
                p.remove(&task);
            }
            inbox
        });
        if let Some(messages) = prefetched {
            return messages
                .iter()
                .map(|(seq, m)| Ok((*seq, decode("an inbox message", m)?)))
                .collect();
        }
        self.run(|inner| async move {
            let rows = inner
                .query(
                    "SELECT seq, message FROM inbox WHERE task = $1 ORDER BY seq",
                    &[&(task as i64)],
                )
                .await?;
            rows.iter()
                .map(|r| Ok((get_u64(r, 0), decode("an inbox message", r.get(1))?)))
                .collect()
        })
    }

    fn inbox_tasks(&self) -> Result<Vec<u64>> {
        self.run(|inner| async move {
            let rows = inner
                .query("SELECT DISTINCT task FROM inbox ORDER BY task", &[])
                .await?;
            Ok(rows.iter().map(|r| get_u64(r, 0)).collect())
        })
    }

    fn admit(
        &self,
        process: u64,
        window: i64,
        max: u32,
        candidate: u64,
    ) -> Result<Option<Admission>> {
        self.run(move |inner| async move {
            // One statement counts the task and, past `max` in a window with no summary
            // yet, makes `candidate` its summary: two engines cannot both make one.
            let rows = inner
                .query(
                    "INSERT INTO rate_windows AS w (process, window_index, started, summary)
                     VALUES ($1::bigint, $2::bigint, 1, CASE WHEN 1 > $3::bigint THEN $4::bigint END)
                     ON CONFLICT (process, window_index) DO UPDATE SET
                         started = w.started + 1,
                         summary = CASE WHEN w.started + 1 > $3::bigint AND w.summary IS NULL
                                        THEN $4::bigint ELSE w.summary END
                     RETURNING started, summary",
                    &[
                        &(process as i64),
                        &window,
                        &i64::from(max),
                        &(candidate as i64),
                    ],
                )
                .await?;
            let Some(row) = rows.first() else {
                return Err(StoreError::Io("counting a rate-limit window returned nothing".into()));
            };
            let started = get_u64(row, 0);
            let summary = row.get::<_, Option<i64>>(1).map(|s| s as u64);
            if started == 1 {
                // A new window: the ones before the last are not needed any more.
                inner
                    .query(
                        "DELETE FROM rate_windows WHERE process = $1::bigint AND window_index < $2::bigint - 1",
                        &[&(process as i64), &window],
                    )
                    .await?;
            }
            Ok(Some(Admission { started, summary }))
        })
    }

    fn counters(&self, process: u64) -> Result<Vec<(String, NodeCounter)>> {
        self.run(|inner| async move {
            let rows = inner
                .query(
                    "SELECT node, sum(now)::bigint, sum(total)::bigint FROM counters
                     WHERE process = $1 GROUP BY node ORDER BY node",
                    &[&(process as i64)],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| {
                    (
                        r.get::<_, String>(0),
                        NodeCounter {
                            now: r.get(1),
                            total: get_u64(r, 2),
                        },
                    )
                })
                .collect())
        })
    }

    fn ready(&self) -> Result<Vec<u64>> {
        self.run(|inner| async move {
            let rows = inner
                .query("SELECT task FROM ready ORDER BY task", &[])
                .await?;
            Ok(rows.iter().map(|r| get_u64(r, 0)).collect())
        })
    }

    fn due_timers(&self, now: i64, after: Option<TimerKey>, limit: usize) -> Result<Vec<TimerKey>> {
        let (due, task) = after.map_or((i64::MIN, i64::MIN), |t| (t.due, t.task as i64));
        let limit = limit.min(i64::MAX as usize) as i64;
        self.run(|inner| async move {
            let rows = inner
                .query(
                    "SELECT due, task FROM timers WHERE due <= $1 AND (due, task) > ($2, $3)
                     ORDER BY due, task LIMIT $4",
                    &[&now, &due, &task, &limit],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| TimerKey {
                    due: r.get(0),
                    task: get_u64(r, 1),
                })
                .collect())
        })
    }

    fn next_timer(&self) -> Result<Option<TimerKey>> {
        self.run(|inner| async move {
            let rows = inner
                .query(
                    "SELECT due, task FROM timers ORDER BY due, task LIMIT 1",
                    &[],
                )
                .await?;
            Ok(rows.first().map(|r| TimerKey {
                due: r.get(0),
                task: get_u64(r, 1),
            }))
        })
    }

    fn create_api_key(
        &self,
        name: &str,
        secret: &str,
        processes: Vec<u64>,
        created: i64,
    ) -> Result<ApiKey> {
        let (name, secret) = (name.to_string(), secret.to_string());
        self.run(|inner| async move {
            let rows = inner.query("SELECT nextval('logins')", &[]).await?;
            let login = rows.first().map(|r| get_u64(r, 0)).unwrap_or_default();
            let record = ApiKey {
                login,
                name,
                secret,
                processes,
                created,
            };
            inner
                .query(
                    "INSERT INTO api_keys (login, record) VALUES ($1, $2) RETURNING login",
                    &[&(login as i64), &encode("an API key", &record)?],
                )
                .await?;
            Ok(record)
        })
    }

    fn api_key(&self, login: u64) -> Result<Option<ApiKey>> {
        self.run(|inner| async move {
            let rows = inner
                .query(
                    "SELECT record FROM api_keys WHERE login = $1",
                    &[&(login as i64)],
                )
                .await?;
            rows.first()
                .map(|r| decode("an API key", r.get(0)))
                .transpose()
        })
    }

    fn api_keys(&self) -> Result<Vec<ApiKey>> {
        self.run(|inner| async move {
            let rows = inner
                .query("SELECT record FROM api_keys ORDER BY login", &[])
                .await?;
            rows.iter()
                .map(|r| decode("an API key", r.get(0)))
                .collect()
        })
    }

    fn set_api_key_secret(&self, login: u64, secret: &str) -> Result<Option<ApiKey>> {
        let secret = secret.to_string();
        self.run(|inner| async move {
            let mut client = inner.client().await?;
            let tx = client.transaction().await.map_err(|e| inner.error(e))?;
            let Some(row) = tx
                .query_opt(
                    "SELECT record FROM api_keys WHERE login = $1 FOR UPDATE",
                    &[&(login as i64)],
                )
                .await
                .map_err(|e| inner.error(e))?
            else {
                return Ok(None);
            };
            let mut record: ApiKey = decode("an API key", row.get(0))?;
            record.secret = secret;
            tx.execute(
                "UPDATE api_keys SET record = $2 WHERE login = $1",
                &[&(login as i64), &encode("an API key", &record)?],
            )
            .await
            .map_err(|e| inner.error(e))?;
            tx.commit().await.map_err(|e| inner.error(e))?;
            Ok(Some(record))
        })
    }

    fn delete_api_key(&self, login: u64) -> Result<bool> {
        self.run(|inner| async move {
            let rows = inner
                .query(
                    "DELETE FROM api_keys WHERE login = $1 RETURNING login",
                    &[&(login as i64)],
                )
                .await?;
            Ok(!rows.is_empty())
        })
    }

    fn commit_group(&self, batches: &[Batch]) -> Result<()> {
        let plan = fold::fold(batches)?;
        if plan.is_empty() && !self.inner.claims.has_releases() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let committed = self.run(|inner| inner.commit_plan(plan));
        tracing::debug!(
            batches = batches.len(),
            micros = started.elapsed().as_micros() as u64,
            "group committed"
        );
        committed
    }

    fn flush(&self) -> Result<()> {
        // A commit is on the server's disk when it returns (synchronous_commit).
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64> {
        self.run(|inner| async move {
            let rows = inner
                .query(
                    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = current_schema() AND c.relkind = 'r'",
                    &[],
                )
                .await?;
            Ok(rows.first().map(|r| get_u64(r, 0)).unwrap_or_default())
        })
    }

    fn next_ids(&self) -> Result<NextIds> {
        let local = self
            .inner
            .ids
            .lock()
            .ok()
            .and_then(|ids| (ids.0 < ids.1).then_some(ids.0));
        let (task, process, login) = self.run(|inner| async move {
            let rows = inner
                .query(
                    "SELECT (SELECT CASE WHEN is_called THEN last_value + 64 ELSE last_value END FROM task_ids),
                            (SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM process_ids),
                            (SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM logins)",
                    &[],
                )
                .await?;
            let row = rows
                .first()
                .ok_or_else(|| StoreError::Io("no counters".into()))?;
            Ok((get_u64(row, 0), get_u64(row, 1), get_u64(row, 2)))
        })?;
        Ok(NextIds {
            task: local.unwrap_or(task),
            process,
            login,
        })
    }

    fn restore(&self, item: Restore) -> Result<()> {
        if let Restore::NextIds(_) = item
            && let Ok(mut ids) = self.inner.ids.lock()
        {
            // The block in hand may be below the new floor.
            *ids = (0, 0);
        }
        self.run(|inner| async move {
            match item {
                Restore::Process(record) => {
                    inner
                        .query(
                            "INSERT INTO processes (id, alias, record) VALUES ($1, $2, $3)
                             ON CONFLICT (id) DO UPDATE SET alias = EXCLUDED.alias, record = EXCLUDED.record
                             RETURNING id",
                            &[&(record.id as i64), &record.alias, &encode("a process", &record)?],
                        )
                        .await?;
                    raise_to(&inner, "process_ids", record.id as i64 + 1).await
                }
                Restore::ApiKey(key) => {
                    inner
                        .query(
                            "INSERT INTO api_keys (login, record) VALUES ($1, $2)
                             ON CONFLICT (login) DO UPDATE SET record = EXCLUDED.record RETURNING login",
                            &[&(key.login as i64), &encode("an API key", &key)?],
                        )
                        .await?;
                    raise_to(&inner, "logins", key.login as i64 + 1).await
                }
                Restore::NextIds(ids) => {
                    for (sequence, next) in [
                        ("task_ids", ids.task),
                        ("process_ids", ids.process),
                        ("logins", ids.login),
                    ] {
                        raise_to(&inner, sequence, next as i64).await?;
                    }
                    Ok(())
                }
            }
        })
    }

    fn shared(&self) -> bool {
        true
    }

    fn claim(&self, tasks: &[u64]) -> Result<Vec<u64>> {
        let tasks = tasks.to_vec();
        self.run(|inner| async move { inner.claims.claim(&inner, tasks).await })
    }

    fn claim_async(&self, tasks: Vec<u64>) -> ClaimFuture {
        // Sent with the claims of the other steps starting now: one round trip for all.
        let (done, answer) = tokio::sync::oneshot::channel();
        let sent = self
            .inner
            .claim_requests
            .send(claims::ClaimRequest { tasks, done });
        Box::pin(async move {
            if sent.is_err() {
                return Err(StoreError::Io("the PostgreSQL store was stopped".into()));
            }
            answer
                .await
                .map_err(|_| StoreError::Io("a claim was cut off".into()))?
        })
    }

    fn claim_work(&self, now: i64, limit: usize) -> Result<Vec<u64>> {
        self.run(move |inner| async move { inner.claims.claim_work(&inner, now, limit).await })
    }

    fn release(&self, task: u64) {
        if let Ok(mut prefetched) = self.inner.prefetched.lock() {
            prefetched.remove(&task);
        }
        self.inner.claims.release(task);
    }

    fn call_slot(&self, process: u64, node: &str, limit: u32, hold: Duration) -> SlotFuture {
        let inner = Arc::clone(&self.inner);
        let node = node.to_string();
        let (done, answer) = tokio::sync::oneshot::channel();
        self.handle.spawn(async move {
            let _ = done.send(take_call_slot(&inner, process, &node, limit, hold).await);
        });
        Box::pin(async move {
            answer
                .await
                .map_err(|_| StoreError::Io("the PostgreSQL store was stopped".into()))?
        })
    }

    fn give_back_call_slot(&self, process: u64, node: &str, slot: CallSlot) {
        let inner = Arc::clone(&self.inner);
        let node = node.to_string();
        self.handle.spawn(async move {
            let given = inner
                .query(
                    "DELETE FROM call_slots
                     WHERE process = $1 AND node = $2 AND slot = $3 AND token = $4",
                    &[&(process as i64), &node, &(slot.slot as i32), &slot.token],
                )
                .await;
            if let Err(e) = given {
                // Not lost: the place is free again once its hold has passed.
                tracing::warn!(error = %e, "could not give an api_call place back");
            }
        });
    }

    fn watch(&self, listener: Listener) {
        if let Ok(mut slot) = self.inner.listener.lock() {
            *slot = Some(listener);
        }
        if !self.inner.listening.swap(true, Ordering::SeqCst) {
            self.handle
                .spawn(listen::listen(Arc::downgrade(&self.inner)));
        }
    }
}

/// One of the `limit` places of an `api_call` node, or `None` while all are taken (or
/// the free one looked at was taken by another engine at the same moment: the caller
/// asks again). Each asker starts looking at a place of its own, so that engines
/// asking at once seldom want the same one.
async fn take_call_slot(
    inner: &Inner,
    process: u64,
    node: &str,
    limit: u32,
    hold: Duration,
) -> Result<Option<CallSlot>> {
    static START: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let limit = limit.clamp(1, i32::MAX as u32) as i32;
    let start = (START.fetch_add(1, Ordering::Relaxed) % limit as u32) as i32;
    let hold_ms = i64::try_from(hold.as_millis()).unwrap_or(i64::MAX);
    let rows = inner
        .query(
            "INSERT INTO call_slots AS c (process, node, slot, token, until)
             SELECT $1, $2, s, nextval('call_slot_tokens'),
                    now() + $4::bigint * interval '1 millisecond'
             FROM generate_series(0, $3::int - 1) s
             WHERE NOT EXISTS (
                 SELECT 1 FROM call_slots x
                 WHERE x.process = $1 AND x.node = $2 AND x.slot = s AND x.until >= now())
             ORDER BY (s + $5::int) % $3::int
             LIMIT 1
             ON CONFLICT (process, node, slot) DO UPDATE
                 SET token = EXCLUDED.token, until = EXCLUDED.until
                 WHERE c.until < now()
             RETURNING slot, token",
            &[&(process as i64), &node, &limit, &hold_ms, &start],
        )
        .await?;
    Ok(rows.first().map(|row| CallSlot {
        slot: row.get::<_, i32>(0) as u32,
        token: row.get(1),
    }))
}

/// Moves a sequence up so that its next value is at least `next` (never down).
async fn raise_to(inner: &Inner, sequence: &str, next: i64) -> Result<()> {
    let sql = format!(
        "SELECT setval('{sequence}', $1, false) FROM {sequence}
         WHERE (CASE WHEN is_called THEN last_value + (SELECT increment_by FROM pg_sequences
                 WHERE schemaname = current_schema() AND sequencename = '{sequence}')
                 ELSE last_value END) < $1"
    );
    inner.query(&sql, &[&next]).await.map(|_| ())
}

#[cfg(test)]
mod tests;
