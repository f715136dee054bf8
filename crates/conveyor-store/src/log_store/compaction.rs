//! Compaction, on a thread of its own: the live values of the oldest segment are copied
//! to the head, so that the segment can be deleted.
//!
//! Commits go on meanwhile: the writer's lock is held only for short spells (the plan,
//! each copied frame of about 1 MiB, the retirement's check and snapshot), and steps
//! keep committing in place (`commit_quick`) while a compaction is due. Compacting a
//! segment of the intake benchmark's log (64 MiB, half of it live) took 359 ms under
//! the writer's lock when the committer did it; every create waited.
//!
//! A compaction of the oldest segment goes in four phases:
//!
//! 1. **Plan** (the writer's lock, briefly): what points into the segment (task
//!    records, history chains that reach into it, inbox messages), and the open
//!    segment files.
//! 2. **Read** (no lock): the segment is read whole, once, and each chain is followed
//!    through the segments and decoded (only a chain that reads is merged, in phase 3,
//!    as bytes straight into the frame). Nothing written can change under it: the log
//!    only appends, and no segment but this one is deleted.
//! 3. **Copy** (the writer's lock, one frame of at most about 1 MiB at a time): a value
//!    is copied only if the index still points where the plan found it; one that a
//!    commit replaced meanwhile is dead already. A chain that grew meanwhile, or that
//!    does not decode, is copied at the end, read again under the lock (about 1 MiB of
//!    them per hold).
//! 4. **Retire** (the writer's lock): once a scan finds nothing pointing into the
//!    segment, it leaves the indexes and a snapshot is taken; the snapshot writer
//!    deletes its file once that snapshot is on disk. The compactor waits for that
//!    (without the lock) before the next segment, so snapshots do not pile up.
//!
//! The store closing stops a compaction between two phases or frames: what was copied
//! by then is valid (each copy is the current value), and the segment stays.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use super::*;

/// How often the compactor looks whether a compaction is due.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// A compaction's frames are cut at about this size: the writer's lock is held while
/// each is written and applied.
const FRAME_BYTES: usize = 1 << 20;

/// What points into the segment being compacted, as the plan found it.
pub(super) struct Plan {
    pub(super) segment: u32,
    tasks: Vec<(u64, TaskEntry)>,
    /// Chains that reach into the segment, by their head.
    chains: Vec<(u64, Loc)>,
    messages: Vec<((u64, u64), Loc)>,
    /// The segment files open when the plan was made (a chain's newer records are read
    /// from them).
    files: BTreeMap<u32, Arc<File>>,
}

/// A value to copy, read without the lock; copied only if the indexes still point
/// where the plan found it.
pub(super) enum Move<'a> {
    Task {
        id: u64,
        entry: TaskEntry,
        bytes: Cow<'a, [u8]>,
    },
    /// A chain, to be merged into one record.
    Chain {
        id: u64,
        head: Loc,
        events: Events<'a>,
    },
    Message {
        key: (u64, u64),
        loc: Loc,
        bytes: Cow<'a, [u8]>,
    },
}

/// A chain's events as they are merged.
pub(super) enum Events<'a> {
    /// Records in bytes, oldest first: merged as bytes straight into the frame.
    Records(Vec<Cow<'a, [u8]>>),
    /// The events of a chain with an older log's JSON records, encoded in bytes.
    Encoded(Vec<u8>),
}

impl Core {
    /// The compactor's loop: compacts while a compaction is due, until the store closes.
    pub(super) fn compact_in_background(&self) {
        while !self.closing() {
            std::thread::park_timeout(CHECK_EVERY);
            while !self.closing() && self.compaction_due(&self.writer()) {
                let result = self.compact_oldest();
                let mut w = self.writer();
                match result {
                    Ok(true) => w.compact_retry_at = 0,
                    // Closing, or nothing sealed although the accounting says
                    // otherwise: not again before more of the log is sealed.
                    Ok(false) => {
                        w.compact_retry_at = w.sealed + self.limits.compact_min;
                        break;
                    }
                    Err(e) => {
                        // A full disk, say: the log is as it was, with at most some
                        // values copied twice. Tried again after 64 MiB more log.
                        tracing::warn!(error = %e, "compacting the store's log failed; it is tried again later");
                        w.compact_retry_at = w.sealed + self.limits.compact_min;
                    }
                }
            }
        }
    }

    fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Whether a compaction is due: the sealed segments hold enough, and the log is
    /// more than [`COMPACT_RATIO`] times the live values.
    pub(super) fn compaction_due(&self, w: &Writer) -> bool {
        let live = self.state().live;
        w.sealed >= self.limits.compact_min.max(w.compact_retry_at)
            && w.sealed + w.len > COMPACT_RATIO * live
    }

    /// Compacts the oldest sealed segment (the phases are in the module's doc). `true`
    /// once the segment is retired; `false` when nothing is sealed or the store is
    /// closing (whatever was copied by then is valid, and the segment stays).
    pub(super) fn compact_oldest(&self) -> Result<bool> {
        let _one = self.compacting.lock().unwrap_or_else(|p| p.into_inner());
        let started = std::time::Instant::now();
        let Some(plan) = self.plan()? else {
            return Ok(false);
        };
        let mut longest = started.elapsed(); // the plan's hold, at most
        if self.closing() {
            return Ok(false);
        }
        let segment = read_whole(&plan)?;
        let mut slow = Vec::new();
        let moves = read_moves(&plan, &segment, &mut slow)?;
        let read_ms = started.elapsed().as_millis() as u64;
        let Some(copied) = self.copy(plan.segment, moves, &mut slow, &mut longest)? else {
            return Ok(false);
        };
        let Some(copied_slow) = self.copy_slow(plan.segment, slow, &mut longest)? else {
            return Ok(false);
        };
        if self.closing() {
            return Ok(false);
        }
        let (size, snapshot) = self.retire(plan.segment, &mut longest)?;
        let copied = copied + copied_slow;
        {
            let mut given = self.given_back.lock().unwrap_or_else(|p| p.into_inner());
            given.rewrites += 1;
            given.bytes += size.saturating_sub(copied);
            given.longest_pause = given.longest_pause.max(longest);
        }
        tracing::debug!(
            segment = plan.segment,
            copied,
            read_ms,
            longest_hold_ms = longest.as_millis() as u64,
            ms = started.elapsed().as_millis() as u64,
            "compacted a segment of the store's log"
        );
        // The segment goes once this snapshot is on disk; waiting for it (without the
        // lock) keeps compactions from queueing snapshots faster than they are written.
        // If it fails, the segment stays until a later snapshot.
        if let Some(outcome) = snapshot {
            let _ = outcome.recv();
        }
        Ok(true)
    }

    /// Phase 1: what points into the oldest sealed segment; `None` when none is sealed.
    pub(super) fn plan(&self) -> Result<Option<Plan>> {
        let mut w = self.writer();
        let oldest = w.first_segment;
        if oldest >= w.segment {
            return Ok(None);
        }
        // The histories it merges are written in bytes.
        self.mark_format(&mut w, BINARY_FORMAT)?;
        // The chains it reads without the lock may end in the tail: on file first.
        self.write_tail(&mut w)?;
        let state = self.state();
        Ok(Some(Plan {
            segment: oldest,
            tasks: state
                .tasks
                .iter()
                .filter(|(_, t)| t.loc.segment <= oldest)
                .map(|(id, t)| (*id, *t))
                .collect(),
            chains: state
                .history
                .iter()
                .filter(|(_, c)| c.oldest <= oldest)
                .map(|(id, c)| (*id, c.head))
                .collect(),
            messages: state
                .inbox
                .iter()
                .filter(|(_, loc)| loc.segment <= oldest)
                .map(|(k, loc)| (*k, *loc))
                .collect(),
            files: state.files.clone(),
        }))
    }

    /// Phase 3: writes the moves still current, a frame at a time, each under the
    /// writer's lock (the longest hold goes to `longest`); chains that changed since
    /// the plan join `slow`. The bytes copied, or `None` if the store began to close.
    pub(super) fn copy(
        &self,
        segment: u32,
        moves: Vec<Move<'_>>,
        slow: &mut Vec<u64>,
        longest: &mut Duration,
    ) -> Result<Option<u64>> {
        if moves.is_empty() {
            return Ok(Some(0)); // not even a look under the lock
        }
        let mut moves = moves.into_iter().peekable();
        self.in_holds(longest, |w| {
            if moves.peek().is_none() {
                return Ok(None);
            }
            let mut enc = frame_with_room(FRAME_BYTES + (64 << 10));
            {
                let state = self.state();
                while enc.buf.len() < FRAME_BYTES
                    && let Some(m) = moves.next()
                {
                    encode_if_current(&state, segment, m, &mut enc, slow);
                }
            }
            if enc.buf.len() == 8 {
                return Ok(Some(0)); // none of them current
            }
            let bytes = enc.buf.len() as u64;
            self.append(w, enc).map(|()| Some(bytes))
        })
    }

    /// Phase 3's end: the chains left to `slow` (grown since they were read, or not
    /// decoding), each read again and copied under the writer's lock, about 1 MiB of
    /// them per hold. The bytes copied, or `None` if the store began to close.
    pub(super) fn copy_slow(
        &self,
        segment: u32,
        slow: Vec<u64>,
        longest: &mut Duration,
    ) -> Result<Option<u64>> {
        if slow.is_empty() {
            return Ok(Some(0)); // the usual case: not even a look under the lock
        }
        let mut ids = slow.into_iter().peekable();
        self.in_holds(longest, |w| {
            if ids.peek().is_none() {
                return Ok(None);
            }
            let mut written = 0;
            while written < FRAME_BYTES as u64
                && let Some(id) = ids.next()
            {
                written += self.copy_chain_now(w, id, segment)?;
            }
            Ok(Some(written))
        })
    }

    /// Runs `hold` under the writer's lock, a hold at a time, until it says there is
    /// nothing left (`None`); the longest hold goes to `longest`. The bytes the holds
    /// wrote, or `None` if the store began to close.
    fn in_holds(
        &self,
        longest: &mut Duration,
        mut hold: impl FnMut(&mut Writer) -> Result<Option<u64>>,
    ) -> Result<Option<u64>> {
        let mut written = 0u64;
        loop {
            if self.closing() {
                return Ok(None);
            }
            let mut w = self.writer();
            let held = Instant::now();
            let Some(bytes) = hold(&mut w)? else {
                return Ok(Some(written));
            };
            written += bytes;
            *longest = (*longest).max(held.elapsed());
        }
    }

    /// Copies task `id`'s history chain, read under the writer's lock, if it still
    /// reaches into `segment`: merged into one record, or record by record when one of
    /// them does not decode. The bytes written.
    fn copy_chain_now(&self, w: &mut Writer, id: u64, segment: u32) -> Result<u64> {
        let reaches = self
            .state()
            .history
            .get(&id)
            .is_some_and(|c| c.oldest <= segment);
        if !reaches {
            return Ok(0);
        }
        let records = self.history_records(id)?;
        match events_of(records.into_iter().map(Cow::Owned).collect()) {
            Ok(events) => {
                let mut enc = frame();
                encode_chain(&mut enc, id, &events);
                let bytes = enc.buf.len() as u64;
                self.append(w, enc).map(|()| bytes)
            }
            Err(records) => {
                // A record that does not decode (only a bug writes one: frames are
                // checksummed) is not ours to drop: the chain is copied as it is, so
                // the segment is still reclaimed and nothing is lost.
                tracing::warn!(
                    task = id,
                    "a history record of this task does not decode; compaction copies its records unmerged"
                );
                let bytes = records.iter().map(|r| r.len() + 64).sum::<usize>() as u64;
                self.copy_chain(w, id, &records).map(|()| bytes)
            }
        }
    }

    /// Phase 4: once nothing points into `segment`, takes it out of the indexes and
    /// takes a snapshot, after which the snapshot writer deletes it (the writer's lock).
    /// The segment's size, and what the snapshot writer will say of the snapshot.
    pub(super) fn retire(
        &self,
        segment: u32,
        longest: &mut Duration,
    ) -> Result<(u64, Option<std::sync::mpsc::Receiver<Result<()>>>)> {
        let mut w = self.writer();
        let held = Instant::now();
        // A scan under the read lock: the writer's lock keeps every change out.
        if let Some(what) = points_into(&self.state(), segment) {
            // Not expected (every change since the plan was looked at); the segment
            // stays, and the next compaction plans again.
            return Err(StoreError::Io(format!(
                "internal error: after compacting segment {segment}, {what} still points into it; the segment is kept"
            )));
        }
        let size = {
            let mut state = self.state_mut();
            let size = state
                .files
                .get(&segment)
                .and_then(|f| f.metadata().ok())
                .map_or(0, |m| m.len());
            state.files.remove(&segment);
            size
        };
        w.sealed = w.sealed.saturating_sub(size);
        w.first_segment = segment + 1;
        let snapshot = self.queue_snapshot(&mut w)?;
        *longest = (*longest).max(held.elapsed());
        Ok((size, snapshot))
    }
}

/// What of the indexes still points into `segment` (or older), if anything.
fn points_into(state: &State, segment: u32) -> Option<String> {
    if let Some((id, _)) = state.tasks.iter().find(|(_, t)| t.loc.segment <= segment) {
        return Some(format!("task {id}"));
    }
    if let Some((id, _)) = state.history.iter().find(|(_, c)| c.oldest <= segment) {
        return Some(format!("the history of task {id}"));
    }
    if let Some(((task, seq), _)) = state.inbox.iter().find(|(_, l)| l.segment <= segment) {
        return Some(format!("message {seq} of task {task}"));
    }
    None
}

/// The segment being compacted, read whole: one read instead of one per value.
pub(super) fn read_whole(plan: &Plan) -> Result<Vec<u8>> {
    let file = plan.files.get(&plan.segment).ok_or_else(|| {
        corrupt(
            "the store's log",
            format!("segment {} is gone", plan.segment),
        )
    })?;
    let len = file.metadata().map_err(io)?.len();
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, 0).map_err(io)?;
    Ok(bytes)
}

/// The bytes at `loc`: sliced from the segment read whole, or read from its file.
fn value_at<'a>(plan: &Plan, segment: &'a [u8], loc: Loc) -> Result<Cow<'a, [u8]>> {
    if loc.segment == plan.segment {
        let start = loc.offset as usize;
        return segment
            .get(start..start + loc.len as usize)
            .map(Cow::Borrowed)
            .ok_or_else(|| corrupt("a stored value", "it ends past its segment"));
    }
    read_in(&plan.files, loc).map(Cow::Owned)
}

/// Phase 2: the values of the plan, and each chain's records, checked to decode. A
/// chain that does not goes to `slow`, to be copied as it is under the lock.
pub(super) fn read_moves<'a>(
    plan: &Plan,
    segment: &'a [u8],
    slow: &mut Vec<u64>,
) -> Result<Vec<Move<'a>>> {
    let mut moves = Vec::with_capacity(plan.tasks.len() + plan.chains.len() + plan.messages.len());
    for (id, entry) in &plan.tasks {
        let bytes = value_at(plan, segment, entry.loc)?;
        moves.push(Move::Task {
            id: *id,
            entry: *entry,
            bytes,
        });
    }
    for (id, head) in &plan.chains {
        let records = walk_chain(*head, |loc| value_at(plan, segment, loc))?;
        let Ok(events) = events_of(records) else {
            slow.push(*id); // copied as it is, under the lock
            continue;
        };
        moves.push(Move::Chain {
            id: *id,
            head: *head,
            events,
        });
    }
    for (key, loc) in &plan.messages {
        let bytes = value_at(plan, segment, *loc)?;
        moves.push(Move::Message {
            key: *key,
            loc: *loc,
            bytes,
        });
    }
    Ok(moves)
}

/// A chain's records as they will be merged, or the records back if one of them does
/// not decode.
///
/// Every record is decoded first, so that only a chain that reads is merged (a record's
/// header alone says nothing of what follows it); records in bytes are merged as bytes,
/// an older log's JSON encoded again.
fn events_of(records: Vec<Cow<'_, [u8]>>) -> std::result::Result<Events<'_>, Vec<Cow<'_, [u8]>>> {
    let Ok(decoded) = decode_records(&records) else {
        return Err(records);
    };
    Ok(match binary::mergeable(&records) {
        true => Events::Records(records),
        false => Events::Encoded(binary::encode_events(&decoded)),
    })
}

/// Adds a `HISTORY_RESET` entry for task `id` to `enc`: its value an empty location,
/// then the chain's events merged.
fn encode_chain(enc: &mut Enc, id: u64, events: &Events<'_>) {
    enc.u8(HISTORY_RESET);
    enc.u64(id);
    let len_at = enc.buf.len();
    enc.u32(0); // the value's length, once written
    enc.buf.extend_from_slice(&[0u8; LOC_BYTES]);
    match events {
        Events::Records(records) => {
            let merged = binary::merge_events_into(records, &mut enc.buf);
            debug_assert!(merged, "`read_moves` checked that they merge");
        }
        Events::Encoded(bytes) => enc.buf.extend_from_slice(bytes),
    }
    let len = (enc.buf.len() - len_at - 4) as u32;
    enc.buf[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
}

/// Adds a move's entry to `enc` if the indexes still point where the plan found it;
/// a chain that changed since, but still reaches into `segment`, goes to `slow`.
fn encode_if_current(state: &State, segment: u32, m: Move<'_>, enc: &mut Enc, slow: &mut Vec<u64>) {
    match m {
        Move::Task { id, entry, bytes } => {
            if state.tasks.get(&id).is_some_and(|t| t.loc == entry.loc) {
                enc.u8(PUT_TASK);
                enc.u64(id);
                enc.u64(entry.process);
                enc.bytes(&bytes);
            }
        }
        Move::Chain { id, head, events } => match state.history.get(&id) {
            Some(chain) if chain.head == head => encode_chain(enc, id, &events),
            Some(chain) if chain.oldest <= segment => slow.push(id),
            _ => {} // replaced or deleted since: nothing of it is in the segment
        },
        Move::Message { key, loc, bytes } => {
            if state.inbox.get(&key) == Some(&loc) {
                enc.u8(INBOX);
                enc.u64(key.0);
                enc.u64(key.1);
                enc.bytes(&bytes);
            }
        }
    }
}
