//! Task records and history events as the log writes them since format 3: bytes, not
//! JSON.
//!
//! Why: JSON was most of what a step's commit cost. serde_json looks at every character
//! of every string for one to escape (about ten instructions each), and every step
//! writes its task and its history events. Here a string is a length and its bytes, a
//! number eight bytes; a record of a few hundred bytes encodes in about a fifth of the
//! instructions (docs/benchmarks.md, round 10).
//!
//! A value's first byte says how it is written: [`TASK`] or [`EVENTS`]. Anything else is
//! JSON (`{` or `[`), as every log before format 3 holds, and reads as it always did, so
//! a store holds both until compaction rewrites the old ones.
//!
//! Each encoder takes its record apart whole (no `..`): a field added to a record does
//! not compile until it has its place here. Decoding checks every length against what
//! is left and bounds nesting, so a damaged value is an error, never a panic.

use serde_json::{Map, Number, Value};

use super::codec::{Dec, Enc};
use crate::{Caller, EventKind, HistoryEvent, StoreError, TaskRecord, TaskStatus, Wake, WakeKind};

type Result<T> = std::result::Result<T, StoreError>;

/// The first byte of a task record (JSON starts with `{`).
pub(super) const TASK: u8 = 0xB1;
/// The first byte of a list of history events (JSON starts with `[`).
pub(super) const EVENTS: u8 = 0xB2;

// A JSON value's tags.
const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const U64: u8 = 3;
const I64: u8 = 4;
const F64: u8 = 5;
const STRING: u8 = 6;
const ARRAY: u8 = 7;
const OBJECT: u8 = 8;

/// Deepest nesting (arrays and objects) a value read back may have. serde_json refuses
/// more than 128 levels when it parses, and a value built deeper (by a script) could not
/// be read back from JSON either; 256 leaves room and keeps the decoder's recursion
/// within a thread's stack (2 MiB, in a debug build too).
const MAX_DEPTH: usize = 256;
/// Most entries reserved ahead for one array or object: counts are checked against the
/// bytes left, and this keeps nested counts from multiplying that.
const MAX_RESERVE: usize = 1024;

fn bad(what: &str, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        what: what.to_string(),
        reason: reason.into(),
    }
}

pub(super) fn encode_task(task: &TaskRecord) -> Vec<u8> {
    let TaskRecord {
        id,
        process,
        reference,
        node,
        prev_node,
        status,
        data,
        created,
        changed,
        entered,
        wake,
        attempt,
        history_len,
        caller,
        moves,
        secret_keys,
        created_by,
    } = task;
    let mut enc = Enc {
        buf: Vec::with_capacity(256),
    };
    enc.u8(TASK);
    enc.u64(*id);
    enc.u64(*process);
    enc.opt_str(reference.as_deref());
    enc.str(node);
    enc.opt_str(prev_node.as_deref());
    enc.u8(match status {
        TaskStatus::Ready => 0,
        TaskStatus::Waiting => 1,
        TaskStatus::Done => 2,
        TaskStatus::Failed => 3,
    });
    object(&mut enc, data);
    enc.i64(*created);
    enc.i64(*changed);
    enc.i64(*entered);
    match wake {
        None => enc.u8(0),
        Some(Wake { at, kind }) => {
            enc.u8(1);
            enc.i64(*at);
            enc.u8(match kind {
                WakeKind::Delay => 0,
                WakeKind::TimeLimit => 1,
                WakeKind::Retry => 2,
                WakeKind::Release => 3,
                WakeKind::Remove => 4,
            });
        }
    }
    enc.u32(*attempt);
    enc.u64(*history_len);
    match caller {
        None => enc.u8(0),
        Some(Caller { task, process }) => {
            enc.u8(1);
            enc.u64(*task);
            enc.u64(*process);
        }
    }
    enc.u64(*moves);
    strs(&mut enc, secret_keys);
    match created_by {
        None => enc.u8(0),
        Some(login) => {
            enc.u8(1);
            enc.u64(*login);
        }
    }
    enc.buf
}

pub(super) fn decode_task(bytes: &[u8]) -> Result<TaskRecord> {
    const WHAT: &str = "a task";
    let mut dec = Dec::new(bytes);
    if dec.u8()? != TASK {
        return Err(bad(WHAT, "not a task record"));
    }
    let task = TaskRecord {
        id: dec.u64()?,
        process: dec.u64()?,
        reference: dec.opt_str()?.map(str::to_string),
        node: dec.str()?.to_string(),
        prev_node: dec.opt_str()?.map(str::to_string),
        status: match dec.u8()? {
            0 => TaskStatus::Ready,
            1 => TaskStatus::Waiting,
            2 => TaskStatus::Done,
            3 => TaskStatus::Failed,
            other => return Err(bad(WHAT, format!("unknown status {other}"))),
        },
        data: read_object(&mut dec, 1)?,
        created: dec.i64()?,
        changed: dec.i64()?,
        entered: dec.i64()?,
        wake: match dec.flag()? {
            false => None,
            true => Some(Wake {
                at: dec.i64()?,
                kind: match dec.u8()? {
                    0 => WakeKind::Delay,
                    1 => WakeKind::TimeLimit,
                    2 => WakeKind::Retry,
                    3 => WakeKind::Release,
                    4 => WakeKind::Remove,
                    other => return Err(bad(WHAT, format!("unknown timer kind {other}"))),
                },
            }),
        },
        attempt: dec.u32()?,
        history_len: dec.u64()?,
        caller: match dec.flag()? {
            false => None,
            true => Some(Caller {
                task: dec.u64()?,
                process: dec.u64()?,
            }),
        },
        moves: dec.u64()?,
        secret_keys: read_strs(&mut dec)?,
        created_by: match dec.flag()? {
            false => None,
            true => Some(dec.u64()?),
        },
    };
    if !dec.is_empty() {
        return Err(bad(WHAT, "bytes after the record"));
    }
    Ok(task)
}

/// The tag and the count at the start of a history record in bytes.
const EVENTS_HEAD: usize = 5;

/// The count of events and the length of `records` merged by [`merge_events_into`];
/// `None` when one of them is not in bytes (an older log's JSON), is too short to be
/// one, or the count would overflow.
fn merged_head<R: AsRef<[u8]>>(records: &[R]) -> Option<(u32, usize)> {
    let mut count: u32 = 0;
    let mut len = EVENTS_HEAD;
    for record in records {
        let head = record.as_ref().get(..EVENTS_HEAD)?;
        if head[0] != EVENTS {
            return None;
        }
        count = count.checked_add(u32::from_le_bytes([head[1], head[2], head[3], head[4]]))?;
        len += record.as_ref().len() - EVENTS_HEAD;
    }
    Some((count, len))
}

/// Whether [`merge_events_into`] merges `records`.
pub(super) fn mergeable<R: AsRef<[u8]>>(records: &[R]) -> bool {
    merged_head(records).is_some()
}

/// History records written in bytes, merged into one without encoding their events
/// again and appended to `out`: the events one after the other under one count. For
/// records that decode, that is what [`encode_events`] of all their events writes; the
/// caller checks that they do (only the header of each is looked at here). `false`, with
/// nothing appended, when they cannot be merged (see [`mergeable`]).
pub(super) fn merge_events_into<R: AsRef<[u8]>>(records: &[R], out: &mut Vec<u8>) -> bool {
    let Some((count, len)) = merged_head(records) else {
        return false;
    };
    out.reserve(len);
    out.push(EVENTS);
    out.extend_from_slice(&count.to_le_bytes());
    for record in records {
        out.extend_from_slice(&record.as_ref()[EVENTS_HEAD..]);
    }
    true
}

pub(super) fn encode_events(events: &[HistoryEvent]) -> Vec<u8> {
    let mut enc = Enc {
        buf: Vec::with_capacity(64 + 96 * events.len()),
    };
    enc.u8(EVENTS);
    enc.u32(events.len() as u32);
    for HistoryEvent { at, node, kind } in events {
        enc.i64(*at);
        enc.str(node);
        event_kind(&mut enc, kind);
    }
    enc.buf
}

fn event_kind(enc: &mut Enc, kind: &EventKind) {
    match kind {
        EventKind::Created => enc.u8(0),
        EventKind::Entered { from, via } => {
            enc.u8(1);
            enc.str(from);
            enc.str(via);
        }
        EventKind::ApiRequest {
            method,
            url,
            attempt,
            status,
            millis,
            outcome,
        } => {
            enc.u8(2);
            enc.str(method);
            enc.str(url);
            enc.u32(*attempt);
            match status {
                None => enc.u8(0),
                Some(code) => {
                    enc.u8(1);
                    enc.u32(u32::from(*code));
                }
            }
            enc.u64(*millis);
            enc.str(outcome);
        }
        EventKind::Error { tag, description } => {
            enc.u8(3);
            enc.str(tag);
            enc.str(description);
        }
        EventKind::Modified { keys, source } => {
            enc.u8(4);
            strs(enc, keys);
            enc.str(source);
        }
        EventKind::Waiting { until, reason } => {
            enc.u8(5);
            match until {
                None => enc.u8(0),
                Some(at) => {
                    enc.u8(1);
                    enc.i64(*at);
                }
            }
            enc.str(reason);
        }
        EventKind::Finished { status } => {
            enc.u8(6);
            enc.str(status);
        }
        EventKind::Copied { process, task } => {
            enc.u8(7);
            enc.u64(*process);
            enc.u64(*task);
        }
        EventKind::Dropped {
            count,
            keep_first,
            keep_last,
        } => {
            enc.u8(8);
            enc.u64(*count);
            enc.u64(*keep_first);
            enc.u64(*keep_last);
        }
        EventKind::Recovered { action, to, source } => {
            enc.u8(9);
            enc.str(action);
            enc.str(to);
            enc.str(source);
        }
    }
}

/// Appends the events of one history record to `out`.
pub(super) fn decode_events(bytes: &[u8], out: &mut Vec<HistoryEvent>) -> Result<()> {
    const WHAT: &str = "history events";
    let mut dec = Dec::new(bytes);
    if dec.u8()? != EVENTS {
        return Err(bad(WHAT, "not a history record"));
    }
    let count = dec.u32()? as usize;
    // Each event takes at least 13 bytes (its time, its node's length, its kind).
    out.reserve(count.min(dec.left() / 13));
    for _ in 0..count {
        let at = dec.i64()?;
        let node = dec.str()?.to_string();
        let kind = read_event_kind(&mut dec)?;
        out.push(HistoryEvent { at, node, kind });
    }
    if !dec.is_empty() {
        return Err(bad(WHAT, "bytes after the events"));
    }
    Ok(())
}

fn read_event_kind(dec: &mut Dec<'_>) -> Result<EventKind> {
    let s = |dec: &mut Dec<'_>| dec.str().map(str::to_string);
    Ok(match dec.u8()? {
        0 => EventKind::Created,
        1 => EventKind::Entered {
            from: s(dec)?,
            via: s(dec)?.into(),
        },
        2 => EventKind::ApiRequest {
            method: s(dec)?.into(),
            url: s(dec)?,
            attempt: dec.u32()?,
            status: match dec.flag()? {
                false => None,
                true => Some(
                    u16::try_from(dec.u32()?)
                        .map_err(|_| bad("history events", "an HTTP status over 65535"))?,
                ),
            },
            millis: dec.u64()?,
            outcome: s(dec)?.into(),
        },
        3 => EventKind::Error {
            tag: s(dec)?,
            description: s(dec)?,
        },
        4 => EventKind::Modified {
            keys: read_strs(dec)?,
            source: s(dec)?,
        },
        5 => EventKind::Waiting {
            until: match dec.flag()? {
                false => None,
                true => Some(dec.i64()?),
            },
            reason: s(dec)?,
        },
        6 => EventKind::Finished {
            status: s(dec)?.into(),
        },
        7 => EventKind::Copied {
            process: dec.u64()?,
            task: dec.u64()?,
        },
        8 => EventKind::Dropped {
            count: dec.u64()?,
            keep_first: dec.u64()?,
            keep_last: dec.u64()?,
        },
        9 => EventKind::Recovered {
            action: s(dec)?,
            to: s(dec)?,
            source: s(dec)?,
        },
        other => return Err(bad("history events", format!("unknown event {other}"))),
    })
}

fn strs(enc: &mut Enc, values: &[String]) {
    enc.u32(values.len() as u32);
    for v in values {
        enc.str(v);
    }
}

fn read_strs(dec: &mut Dec<'_>) -> Result<Vec<String>> {
    let count = dec.u32()? as usize;
    // Each takes at least its 4-byte length: a damaged count cannot reserve much.
    let mut out = Vec::with_capacity(count.min(dec.left() / 4));
    for _ in 0..count {
        out.push(dec.str()?.to_string());
    }
    Ok(out)
}

fn object(enc: &mut Enc, map: &Map<String, Value>) {
    enc.u32(map.len() as u32);
    for (key, value) in map {
        enc.str(key);
        write_value(enc, value);
    }
}

fn write_value(enc: &mut Enc, value: &Value) {
    match value {
        Value::Null => enc.u8(NULL),
        Value::Bool(false) => enc.u8(FALSE),
        Value::Bool(true) => enc.u8(TRUE),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                enc.u8(U64);
                enc.u64(u);
            } else if let Some(i) = n.as_i64() {
                enc.u8(I64);
                enc.i64(i);
            } else {
                // Without serde_json's arbitrary precision a number is one of the three.
                enc.u8(F64);
                enc.u64(n.as_f64().unwrap_or(0.0).to_bits());
            }
        }
        Value::String(s) => {
            enc.u8(STRING);
            enc.str(s);
        }
        Value::Array(items) => {
            enc.u8(ARRAY);
            enc.u32(items.len() as u32);
            for item in items {
                write_value(enc, item);
            }
        }
        Value::Object(map) => {
            enc.u8(OBJECT);
            object(enc, map);
        }
    }
}

fn read_value(dec: &mut Dec<'_>, depth: usize) -> Result<Value> {
    const WHAT: &str = "a value in a task";
    if depth > MAX_DEPTH {
        return Err(bad(WHAT, "nested too deep"));
    }
    Ok(match dec.u8()? {
        NULL => Value::Null,
        FALSE => Value::Bool(false),
        TRUE => Value::Bool(true),
        U64 => Value::from(dec.u64()?),
        I64 => Value::from(dec.i64()?),
        F64 => Number::from_f64(f64::from_bits(dec.u64()?))
            .map(Value::Number)
            .ok_or_else(|| bad(WHAT, "a number that is not finite"))?,
        STRING => Value::String(dec.str()?.to_string()),
        ARRAY => {
            if depth + 1 > MAX_DEPTH {
                return Err(bad(WHAT, "nested too deep"));
            }
            let count = dec.u32()? as usize;
            // Each item takes at least its tag byte.
            let mut items = Vec::with_capacity(count.min(dec.left()).min(MAX_RESERVE));
            for _ in 0..count {
                items.push(read_value(dec, depth + 1)?);
            }
            Value::Array(items)
        }
        OBJECT => Value::Object(read_object(dec, depth + 1)?),
        other => return Err(bad(WHAT, format!("unknown tag {other}"))),
    })
}

/// What [`object`] wrote: a count, then each key and its value (`depth`: this object's).
fn read_object(dec: &mut Dec<'_>, depth: usize) -> Result<Map<String, Value>> {
    if depth > MAX_DEPTH {
        return Err(bad("a value in a task", "nested too deep"));
    }
    let count = dec.u32()? as usize;
    // Each entry takes at least its key's length and a tag.
    let mut map = Map::with_capacity(count.min(dec.left() / 5).min(MAX_RESERVE));
    for _ in 0..count {
        let key = dec.str()?.to_string();
        map.insert(key, read_value(dec, depth)?);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn every_event() -> Vec<HistoryEvent> {
        let kinds = vec![
            EventKind::Created,
            EventKind::Entered {
                from: "start".into(),
                via: "next".into(),
            },
            EventKind::ApiRequest {
                method: "POST".into(),
                url: "https://example.com/a?b=\"c\"".into(),
                attempt: 3,
                status: Some(503),
                millis: 1_234,
                outcome: "network: refused".into(),
            },
            EventKind::ApiRequest {
                method: "GET".into(),
                url: String::new(),
                attempt: 0,
                status: None,
                millis: 0,
                outcome: "ok".into(),
            },
            EventKind::Error {
                tag: "t".into(),
                description: "ünïcode \n and \"quotes\"".into(),
            },
            EventKind::Modified {
                keys: vec!["a".into(), "b".into()],
                source: "cli".into(),
            },
            EventKind::Waiting {
                until: Some(-5),
                reason: "delay".into(),
            },
            EventKind::Waiting {
                until: None,
                reason: "callback".into(),
            },
            EventKind::Finished {
                status: "done".into(),
            },
            EventKind::Copied {
                process: 7,
                task: u64::MAX,
            },
            EventKind::Dropped {
                count: 10,
                keep_first: 2,
                keep_last: 3,
            },
            EventKind::Recovered {
                action: "goto".into(),
                to: "n".into(),
                source: "dashboard".into(),
            },
        ];
        kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| HistoryEvent {
                at: i64::MIN + i as i64,
                node: format!("node {i}"),
                kind,
            })
            .collect()
    }

    #[test]
    fn every_kind_of_event_reads_back_as_it_was_written() {
        let events = every_event();
        let mut back = Vec::new();
        decode_events(&encode_events(&events), &mut back).unwrap();
        assert_eq!(back, events);
        // Records append: a history is its records in order.
        decode_events(&encode_events(&events[..2]), &mut back).unwrap();
        assert_eq!(back.len(), events.len() + 2);
        assert_eq!(back[events.len()..], events[..2]);
    }

    fn merge_events(records: &[Vec<u8>]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        merge_events_into(records, &mut out).then_some(out)
    }

    #[test]
    fn records_in_bytes_merge_as_their_events_encoded_together() {
        let events = every_event();
        let (a, rest) = events.split_at(1);
        let (b, c) = rest.split_at(4);
        let records = vec![
            encode_events(a),
            encode_events(b),
            encode_events(&[]),
            encode_events(c),
        ];
        assert_eq!(merge_events(&records), Some(encode_events(&events)));
        assert_eq!(merge_events(&records[..1]), Some(records[0].clone()));
        // Not merged as bytes: an older log's JSON, a record too short to be one.
        let json = serde_json::to_vec(&events[..1]).unwrap();
        assert_eq!(merge_events(&[records[0].clone(), json]), None);
        assert_eq!(merge_events(&[vec![EVENTS, 1, 0]]), None);
        assert_eq!(merge_events(&[]), Some(encode_events(&[])));
    }

    fn every_field_set() -> TaskRecord {
        let mut task = crate::test_support::task(u64::MAX, 9, "n");
        task.reference = Some("ref".into());
        task.prev_node = Some("p".into());
        task.status = TaskStatus::Failed;
        task.data = match json!({
            "n": 1, "neg": -2, "big": u64::MAX, "f": 1.5, "tiny": 1e-300,
            "s": "x\"y\\z\u{1}é", "t": true, "f0": false, "null": null,
            "a": [1, [2, {"b": []}], {}], "o": {"z": 1, "a": 2},
            "one": 1.0, "minus_zero": -0.0, "min": i64::MIN, "empty": ""
        }) {
            Value::Object(map) => map,
            _ => unreachable!(),
        };
        task.wake = Some(Wake {
            at: -1,
            kind: WakeKind::Remove,
        });
        task.attempt = 4;
        task.history_len = 77;
        task.caller = Some(Caller {
            task: 1,
            process: 2,
        });
        task.moves = 5;
        task.secret_keys = vec!["k".into()];
        task.created_by = Some(100_001);
        task
    }

    #[test]
    fn a_task_with_every_field_set_reads_back_as_it_was_written() {
        let task = every_field_set();
        let back = decode_task(&encode_task(&task)).unwrap();
        assert_eq!(back, task);
        // Key order is the task's, as with JSON.
        let keys: Vec<&String> = back.data.keys().collect();
        assert_eq!(keys[..3], ["n", "neg", "big"]);
        let inner: Vec<&String> = back.data["o"].as_object().unwrap().keys().collect();
        assert_eq!(inner, ["z", "a"]);
    }

    /// Any prefix of a record, and any byte changed in it, is an error or another
    /// record, never a panic.
    #[test]
    fn a_damaged_record_is_an_error_never_a_panic() {
        let bytes = encode_task(&every_field_set());
        for end in 0..bytes.len() {
            assert!(decode_task(&bytes[..end]).is_err(), "prefix of {end} bytes");
        }
        for at in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[at] ^= 0xFF;
            let _ = decode_task(&changed);
        }
        let events = encode_events(&every_event());
        for end in 0..events.len() {
            assert!(decode_events(&events[..end], &mut Vec::new()).is_err());
        }
        for at in 0..events.len() {
            let mut changed = events.clone();
            changed[at] ^= 0xFF;
            let _ = decode_events(&changed, &mut Vec::new());
        }
        // A count that claims more than there is reserves nothing large.
        let mut huge = vec![EVENTS];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_events(&huge, &mut Vec::new()).is_err());
        // Nesting past the limit is refused, not followed down the stack.
        let mut nested = Vec::new();
        for _ in 0..=MAX_DEPTH + 1 {
            nested.push(ARRAY);
            nested.extend_from_slice(&1u32.to_le_bytes());
        }
        nested.push(NULL);
        assert!(read_value(&mut Dec::new(&nested), 0).is_err());
    }

    /// A task whose data is nested deeper than JSON's 128 levels (a script can build one)
    /// reads back.
    #[test]
    fn data_nested_200_deep_reads_back() {
        let mut deep = json!("bottom");
        for n in 0..200 {
            deep = if n % 2 == 0 {
                json!([deep])
            } else {
                json!({ "k": deep })
            };
        }
        let mut task = crate::test_support::task(1, 1, "n");
        task.data.insert("deep".into(), deep);
        assert_eq!(decode_task(&encode_task(&task)).unwrap(), task);
    }

    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".*".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::vec((".*", inner), 0..8)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever data a task holds reads back equal, as it would through JSON.
        #[test]
        fn any_data_reads_back_as_it_was_written(data in prop::collection::vec((".*", any_value()), 0..6)) {
            let mut task = crate::test_support::task(1, 1, "n");
            task.data = data.into_iter().collect();
            let back = decode_task(&encode_task(&task)).unwrap();
            prop_assert_eq!(&back, &task);
            let through_json: TaskRecord =
                serde_json::from_slice(&serde_json::to_vec(&task).unwrap()).unwrap();
            prop_assert_eq!(back, through_json);
        }
    }
}
