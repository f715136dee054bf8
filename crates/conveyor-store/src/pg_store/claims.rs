//! Which engine works on which task: claims with leases and fencing tokens.
//!
//! An engine claims a task before it steps it (`claims` row: engine, token, until).
//! A claim is its engine's until its lease runs out; the engine renews the leases of
//! all its claims every third of a lease ([`keep_leases`]), so only an engine that
//! stopped (crashed, lost the database) loses them. Another engine may then take the
//! task over, with a new token from a sequence.
//!
//! Every commit that changes a task this engine claimed checks, in the same
//! transaction and first, that the claim still carries this engine's token (and locks
//! the claim row until the commit): a takeover waits for that commit to finish and then
//! reads what it wrote, or the commit fails with [`StoreError::Fenced`] and writes
//! nothing. So a step is committed by at most one engine, even when one engine is
//! cut off and another took its task.
//!
//! **Which token a commit is checked against.** A step reads its task after its own
//! claim ([`Claims::claim`], always a fresh token), and its commit is checked against
//! that token. Looking for work ([`Claims::claim_work`]) may find the same task again
//! while its step runs — when the step's lease ran out and another engine took the
//! task, stepped it and let it go: that claim is newer than what the step read, so it
//! never replaces the step's token (the step's commit is then refused, as it must be:
//! it ran on what was there before the other engine's step). Taking the newer token
//! instead let such a step commit a second time what the other engine had already
//! committed (the double steps the kill test found in CI).
//!
//! A step's claim is given back when the step ends ([`Claims::release`]); the release
//! rides on the engine's next commit (or the next lease renewal), not a round trip of
//! its own. A release deletes the claim only if it still carries the step's token, so
//! the next step's claim (a new token) is never undone by a release still on its way.
//!
//! Statements that lock several claim rows lock them in task order, so that an
//! engine's renewal, its commits and other engines' claims do not deadlock.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, Weak};
use std::time::Duration;

use super::Inner;
use crate::{Result, StoreError};

/// How long a claim lasts unless renewed.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// A step's claim: a task no other engine holds (or whose lease ran out), always with a
/// fresh token, even when this engine held it already (see the module documentation).
const CLAIM: &str = "INSERT INTO claims (task, engine, token, until)
    SELECT t, $2, (SELECT nextval('claim_tokens')), now() + $3::bigint * interval '1 millisecond'
    FROM unnest($1::bigint[]) t
    ORDER BY t
    ON CONFLICT (task) DO UPDATE
        SET engine = EXCLUDED.engine, until = EXCLUDED.until, token = EXCLUDED.token
        WHERE claims.engine = EXCLUDED.engine OR claims.until < now()
    RETURNING task, token";

/// Work nobody holds: ready tasks, tasks with messages, tasks with a due timer.
///
/// Each source's rows are locked `FOR UPDATE SKIP LOCKED` while the claims are made:
/// engines looking at the same time take different tasks instead of all picking the
/// lowest ids, where all but one would wait for the first engine's claims and then get
/// nothing (two engines were slower than one that way: every other search came back
/// empty after waiting).
const CLAIM_WORK: &str = "WITH r AS (
        SELECT w.task FROM ready w
        WHERE NOT EXISTS (SELECT 1 FROM claims c WHERE c.task = w.task AND c.until >= now())
        ORDER BY w.task LIMIT $4
        FOR UPDATE OF w SKIP LOCKED
    ), m AS (
        SELECT w.task FROM inbox w
        WHERE NOT EXISTS (SELECT 1 FROM claims c WHERE c.task = w.task AND c.until >= now())
        LIMIT $4
        FOR UPDATE OF w SKIP LOCKED
    ), t AS (
        SELECT w.task FROM timers w
        WHERE w.due <= $3
            AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.task = w.task AND c.until >= now())
        ORDER BY w.due, w.task LIMIT $4
        FOR UPDATE OF w SKIP LOCKED
    ), candidates AS (
        SELECT task FROM r UNION SELECT task FROM m UNION SELECT task FROM t
        LIMIT $4
    )
    INSERT INTO claims (task, engine, token, until)
    SELECT task, $1, (SELECT nextval('claim_tokens')), now() + $2::bigint * interval '1 millisecond'
    FROM candidates
    ORDER BY task
    ON CONFLICT (task) DO UPDATE
        SET engine = EXCLUDED.engine, until = EXCLUDED.until,
            token = CASE WHEN claims.engine = EXCLUDED.engine THEN claims.token ELSE EXCLUDED.token END
        WHERE claims.engine = EXCLUDED.engine OR claims.until < now()
    RETURNING task, token";

/// The claims a commit relies on, (task, token) pairs: those still carrying their token
/// are locked (in task order) until the commit, their lease renewed, and returned.
pub(super) const FENCE: &str = "WITH held AS (
        SELECT c.task FROM claims c
        JOIN unnest($1::bigint[], $2::bigint[]) f(task, token)
            ON c.task = f.task AND c.token = f.token
        ORDER BY c.task
        FOR UPDATE OF c
    )
    UPDATE claims c SET until = now() + $3::bigint * interval '1 millisecond'
    FROM held WHERE c.task = held.task
    RETURNING c.task";

/// Claims for the length of one commit the existing tasks it writes that this engine
/// holds no claim on: a task another engine holds (a live lease) is not returned, and
/// the commit is refused; a claimer that comes meanwhile waits for the commit (the
/// rows are this transaction's until it ends) and then reads what it wrote. The commit
/// deletes these claims again before it ends ([`RELEASE`]).
pub(super) const CLAIM_FOR_COMMIT: &str = "INSERT INTO claims (task, engine, token, until)
    SELECT t, $2, (SELECT nextval('claim_tokens')), now() + interval '1 minute'
    FROM unnest($1::bigint[]) t
    ORDER BY t
    ON CONFLICT (task) DO UPDATE
        SET engine = EXCLUDED.engine, until = EXCLUDED.until, token = EXCLUDED.token
        WHERE claims.until < now()
    RETURNING task, token";
/// Deletes the claims given back, (task, token) pairs: only those still carrying the
/// token (a newer claim of the same task stays).
pub(super) const RELEASE: &str = "WITH gone AS (
        SELECT c.task FROM claims c
        JOIN unnest($1::bigint[], $2::bigint[]) f(task, token)
            ON c.task = f.task AND c.token = f.token
        ORDER BY c.task
        FOR UPDATE OF c
    )
    DELETE FROM claims c USING gone WHERE c.task = gone.task";

/// Renews the claims this engine holds, by token: a claim the engine lost track of
/// (its step failed) is not renewed, and runs out like a crashed engine's.
const RENEW: &str = FENCE;

/// What a claim is for (see the module documentation).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// A step begins: its token is what the step's commit is checked against.
    Step,
    /// Work found: the task is queued; its step will claim it again.
    Work,
}

/// This engine's claims.
pub(super) struct Claims {
    lease: Duration,
    /// Task → token of each claim this engine holds.
    held: Mutex<HashMap<u64, i64>>,
    /// Claims given back, not yet deleted: (tasks, tokens).
    releases: Mutex<(Vec<i64>, Vec<i64>)>,
    /// Told when a claim is given back ([`flush_releases_soon`]).
    released: tokio::sync::Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Claims {
    pub fn new(lease: Duration) -> Claims {
        Claims {
            lease,
            held: Mutex::new(HashMap::new()),
            releases: Mutex::new((Vec::new(), Vec::new())),
            released: tokio::sync::Notify::new(),
        }
    }

    pub fn lease_ms(&self) -> i64 {
        self.lease.as_millis() as i64
    }

    /// Notes the claims got. A step's claim replaces whatever token this engine held for
    /// the task; work found never replaces one (a step of the task may be running on it).
    /// A release of the same claim still waiting is called off.
    fn keep(&self, rows: &[tokio_postgres::Row], purpose: Purpose) -> Vec<u64> {
        let mut held = lock(&self.held);
        let mut releases = lock(&self.releases);
        rows.iter()
            .map(|r| {
                let task = r.get::<_, i64>(0) as u64;
                let token: i64 = r.get(1);
                match purpose {
                    Purpose::Step => {
                        held.insert(task, token);
                    }
                    Purpose::Work => {
                        held.entry(task).or_insert(token);
                    }
                }
                let (tasks, tokens) = &mut *releases;
                if let Some(i) = tasks
                    .iter()
                    .zip(tokens.iter())
                    .position(|(t, k)| *t == task as i64 && *k == token)
                {
                    tasks.swap_remove(i);
                    tokens.swap_remove(i);
                }
                task
            })
            .collect()
    }

    /// Every claim held: (tasks, tokens).
    fn all_held(&self) -> (Vec<i64>, Vec<i64>) {
        lock(&self.held)
            .iter()
            .map(|(task, token)| (*task as i64, *token))
            .unzip()
    }

    /// Claims `tasks` for their steps (none of them is being stepped by this engine):
    /// those no other engine holds (or whose lease ran out). Returns the ones claimed;
    /// what this engine believed it held of the others is forgotten.
    pub async fn claim(&self, inner: &Inner, mut tasks: Vec<u64>) -> Result<Vec<u64>> {
        tasks.sort_unstable();
        tasks.dedup();
        if tasks.is_empty() {
            return Ok(tasks);
        }
        let ids: Vec<i64> = tasks.iter().map(|t| *t as i64).collect();
        let rows = inner
            .claims_query(CLAIM, &[&ids, &inner.engine, &self.lease_ms()])
            .await?;
        let claimed = self.keep(&rows, Purpose::Step);
        if claimed.len() < tasks.len() {
            let mut held = lock(&self.held);
            for task in tasks.iter().filter(|t| !claimed.contains(t)) {
                held.remove(task);
            }
        }
        Ok(claimed)
    }

    /// Claims up to `limit` tasks with work that no engine holds (`now`: the engine's
    /// clock, for timers).
    pub async fn claim_work(&self, inner: &Inner, now: i64, limit: usize) -> Result<Vec<u64>> {
        let rows = inner
            .claims_query(
                CLAIM_WORK,
                &[&inner.engine, &self.lease_ms(), &now, &(limit as i64)],
            )
            .await?;
        tracing::debug!(limit, got = rows.len(), "work claimed");
        let mut tasks = self.keep(&rows, Purpose::Work);
        tasks.sort_unstable();
        Ok(tasks)
    }

    /// The claims of `touched` that this engine holds: (tasks, tokens), by task.
    pub fn fences(&self, touched: &BTreeSet<u64>) -> (Vec<i64>, Vec<i64>) {
        let held = lock(&self.held);
        let mut fences = (Vec::new(), Vec::new());
        for task in touched {
            if let Some(token) = held.get(task) {
                fences.0.push(*task as i64);
                fences.1.push(*token);
            }
        }
        fences
    }

    /// The step of `task` is over: its claim goes with the next commit or renewal.
    pub fn release(&self, task: u64) {
        let Some(token) = lock(&self.held).remove(&task) else {
            return;
        };
        let mut releases = lock(&self.releases);
        releases.0.push(task as i64);
        releases.1.push(token);
        self.released.notify_one();
    }

    pub fn has_releases(&self) -> bool {
        !lock(&self.releases).0.is_empty()
    }

    pub fn take_releases(&self) -> (Vec<i64>, Vec<i64>) {
        std::mem::take(&mut *lock(&self.releases))
    }

    pub fn give_back_releases(&self, (tasks, tokens): (Vec<i64>, Vec<i64>)) {
        let mut releases = lock(&self.releases);
        releases.0.extend(tasks);
        releases.1.extend(tokens);
    }

    /// Deletes the released claims now.
    async fn flush_releases(&self, inner: &Inner) -> Result<()> {
        let releases = self.take_releases();
        if releases.0.is_empty() {
            return Ok(());
        }
        match inner.query(RELEASE, &[&releases.0, &releases.1]).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.give_back_releases(releases);
                Err(e)
            }
        }
    }

    /// Gives back every claim of this engine (it stops).
    pub async fn release_all(&self, inner: &Inner) -> Result<()> {
        lock(&self.held).clear();
        self.take_releases();
        inner
            .query(
                "DELETE FROM claims WHERE engine = $1 RETURNING task",
                &[&inner.engine],
            )
            .await
            .map(|_| ())
    }
}

/// Deletes given-back claims shortly after they were given back, when no commit took
/// them along meanwhile (an idle engine): another engine, or a `task delete`, may want
/// the task now, not after the next lease renewal.
pub(super) async fn flush_releases_soon(inner: Weak<Inner>) {
    loop {
        {
            // Held while waiting: the store's runtime, shut down when the store is
            // dropped, ends this task.
            let Some(strong) = inner.upgrade() else {
                return;
            };
            strong.claims.released.notified().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let Some(inner) = inner.upgrade() else { return };
        if let Err(e) = inner.claims.flush_releases(&inner).await {
            tracing::warn!(error = %e, "could not give back claims");
        }
    }
}

/// A step's claim for [`claim_batches`]: its tasks, and where the ones got go.
pub(super) struct ClaimRequest {
    pub tasks: Vec<u64>,
    pub done: tokio::sync::oneshot::Sender<Result<Vec<u64>>>,
}

/// Most tasks claimed in one statement.
const MAX_CLAIM_BATCH: usize = 1024;

/// Claims for steps, batched: every claim that arrives while one is on its way goes
/// with the next, as one statement (and one read of the claimed tasks for their steps,
/// [`Inner::prefetch`]) — one round trip for many steps instead of one each.
pub(super) async fn claim_batches(
    mut requests: tokio::sync::mpsc::UnboundedReceiver<ClaimRequest>,
    inner: Weak<Inner>,
) {
    while let Some(first) = requests.recv().await {
        let mut batch = vec![first];
        let mut size = batch[0].tasks.len();
        while size < MAX_CLAIM_BATCH {
            match requests.try_recv() {
                Ok(request) => {
                    size += request.tasks.len();
                    batch.push(request);
                }
                Err(_) => break,
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        let tasks: Vec<u64> = batch.iter().flat_map(|r| r.tasks.iter().copied()).collect();
        let started = std::time::Instant::now();
        let asked = tasks.len();
        let claimed = async {
            let claimed = inner.claims.claim(&inner, tasks).await?;
            inner.prefetch(&claimed).await?;
            Ok::<_, StoreError>(claimed)
        }
        .await;
        tracing::debug!(
            asked,
            got = claimed.as_ref().map_or(0, Vec::len),
            micros = started.elapsed().as_micros() as u64,
            "steps' claims"
        );
        match claimed {
            Ok(claimed) => {
                let claimed: std::collections::HashSet<u64> = claimed.into_iter().collect();
                for request in batch {
                    let mine = request
                        .tasks
                        .iter()
                        .copied()
                        .filter(|t| claimed.contains(t))
                        .collect();
                    let _ = request.done.send(Ok(mine));
                }
            }
            Err(e) => {
                for request in batch {
                    let _ = request.done.send(Err(copy_error(&e)));
                }
            }
        }
    }
}

/// The error of a batch of claims, for each step in it.
fn copy_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable { place, reason } => StoreError::Unavailable {
            place: place.clone(),
            reason: reason.clone(),
        },
        other => StoreError::Io(other.to_string()),
    }
}

/// Renews this engine's leases every third of a lease (and deletes released claims),
/// while the store lives. A renewal that fails (the server is down, a deadlock) is
/// tried again soon, not a third of a lease later: two missed renewals in a row would
/// let the leases of a live engine run out. Claims whose lease ran out meanwhile may
/// be taken by other engines, and this engine's commits on them then fail
/// ([`StoreError::Fenced`]).
pub(super) async fn keep_leases(inner: Weak<Inner>) {
    let mut failed = false;
    loop {
        let period = match inner.upgrade() {
            Some(inner) if failed => (inner.claims.lease / 30).max(Duration::from_millis(10)),
            Some(inner) => inner.claims.lease / 3,
            None => return,
        };
        tokio::time::sleep(period).await;
        let Some(inner) = inner.upgrade() else { return };
        let (tasks, tokens) = inner.claims.all_held();
        let renewed = inner
            .claims_query(RENEW, &[&tasks, &tokens, &inner.claims.lease_ms()])
            .await;
        failed = renewed.is_err();
        if let Err(e) = renewed {
            tracing::warn!(error = %e, "could not renew this engine's claims; trying again");
        }
        if let Err(e) = inner.claims.flush_releases(&inner).await {
            tracing::warn!(error = %e, "could not give back claims");
        }
    }
}
