//! The PostgreSQL store's schema, as numbered migrations applied in order at open.
//!
//! `conveyor_meta` holds the version the database is at. An open applies the versions
//! it knows and the database lacks, each in its own transaction, under an advisory lock
//! (engines starting together do not race); a database at a version newer than this
//! conveyor knows is refused ([`crate::StoreError::NewerFormat`]), never written.
//!
//! Text columns compare as bytes (`COLLATE "C"`): lists come out in the order the other
//! stores give (node names, refs), whatever the database's locale.

/// The migrations; version `n` is `MIGRATIONS[n - 1]`. Append only: a released
/// migration is never changed.
pub(super) const MIGRATIONS: &[&str] = &[V1, V2, V3];

/// The version this conveyor writes.
pub(super) fn latest() -> u32 {
    MIGRATIONS.len() as u32
}

/// Taken (transaction-scoped) while migrating: one engine migrates, others wait.
pub(super) const MIGRATION_LOCK: i64 = 0x636f_6e76_6579; // "convey"

const V1: &str = r#"
CREATE TABLE processes (
    id bigint PRIMARY KEY,
    alias text COLLATE "C" UNIQUE,
    record text NOT NULL
);
CREATE SEQUENCE process_ids START 1;

CREATE TABLE api_keys (
    login bigint PRIMARY KEY,
    record text NOT NULL
);
CREATE SEQUENCE logins START 100001;

-- Task ids (and inbox seqs) are handed out in blocks of 64 per engine: one round trip
-- per block, never a number twice.
CREATE SEQUENCE task_ids START 1 INCREMENT 64;

CREATE TABLE tasks (
    id bigint PRIMARY KEY,
    process bigint NOT NULL,
    node text COLLATE "C" NOT NULL,
    -- Listed under its process (`Op::IndexTask`).
    listed boolean NOT NULL DEFAULT false,
    record text NOT NULL
);
CREATE INDEX tasks_by_process ON tasks (process, id) WHERE listed;

-- A ref names at most one task of a process: the primary key is the unique index.
CREATE TABLE refs (
    process bigint NOT NULL,
    ref text COLLATE "C" NOT NULL,
    task bigint NOT NULL,
    PRIMARY KEY (process, ref)
);

CREATE TABLE timers (
    due bigint NOT NULL,
    task bigint NOT NULL,
    PRIMARY KEY (due, task)
);

CREATE TABLE ready (task bigint PRIMARY KEY);

-- Node counters are kept in slots (each engine writes its own): no row that every
-- engine's every step updates. A read adds the slots up.
CREATE TABLE counters (
    process bigint NOT NULL,
    node text COLLATE "C" NOT NULL,
    slot integer NOT NULL,
    now bigint NOT NULL,
    total bigint NOT NULL,
    PRIMARY KEY (process, node, slot)
);

CREATE TABLE history (
    task bigint NOT NULL,
    seq bigint NOT NULL,
    events text NOT NULL,
    PRIMARY KEY (task, seq)
);

CREATE TABLE inbox (
    task bigint NOT NULL,
    seq bigint NOT NULL,
    message text NOT NULL,
    PRIMARY KEY (task, seq)
);

-- Which engine works on a task now, until when (its lease), under which fencing token.
-- A claim whose lease ran out may be taken by another engine, with a new token; the
-- old holder's commits then fail (they check their token in the same transaction).
CREATE TABLE claims (
    task bigint PRIMARY KEY,
    engine text NOT NULL,
    token bigint NOT NULL,
    until timestamptz NOT NULL
);
CREATE INDEX claims_by_engine ON claims (engine);
CREATE SEQUENCE claim_tokens;
"#;

/// Version 2: what engines kept each for itself and now share.
const V2: &str = r#"
-- Rate-limit windows of processes (`settings.rate_limit`), counted for every engine:
-- one row per process and window, the tasks started in it and its summary task.
CREATE TABLE rate_windows (
    process bigint NOT NULL,
    window_index bigint NOT NULL,
    started bigint NOT NULL,
    summary bigint,
    PRIMARY KEY (process, window_index)
);
-- Each engine takes its counter slot from here when it opens the store: up to 32
-- engines never share one (before, a slot was drawn at random and two could collide).
CREATE SEQUENCE counter_slots START 0 MINVALUE 0;
"#;

/// Version 3: `api_call` concurrency limits held by all engines together.
const V3: &str = r#"
-- The calls of an api_call node with a `concurrency` limit that are in flight, on any
-- engine: one row per place taken. A place is free again when its call gives it back,
-- or when `until` passes (its engine died during the call).
CREATE TABLE call_slots (
    process bigint NOT NULL,
    node text COLLATE "C" NOT NULL,
    slot integer NOT NULL,
    token bigint NOT NULL,
    until timestamptz NOT NULL,
    PRIMARY KEY (process, node, slot)
);
CREATE SEQUENCE call_slot_tokens;
"#;
