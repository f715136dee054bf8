//! The log's binary encoding: little-endian integers, byte strings with a `u32` length.

use crate::StoreError;

/// Builds a frame or a snapshot.
pub(super) struct Enc {
    pub buf: Vec<u8>,
}

impl Enc {
    pub fn new() -> Enc {
        Enc { buf: Vec::new() }
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A length (`u32`) and the bytes.
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
    }

    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    /// A presence flag (`0` or `1`), then the text if there is one.
    pub fn opt_str(&mut self, v: Option<&str>) {
        match v {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }
}

/// Reads what [`Enc`] wrote; every read checks the length left, so a torn or corrupt
/// record is an error, never a panic.
pub(super) struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn short(what: &str) -> StoreError {
    StoreError::Corrupt {
        what: what.to_string(),
        reason: "the record ends early".into(),
    }
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Dec<'a> {
        Dec { buf, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Bytes not read yet.
    pub fn left(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| short("the store's log"))?;
        let slice = &self.buf[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32, StoreError> {
        self.array().map(u32::from_le_bytes)
    }

    pub fn u64(&mut self) -> Result<u64, StoreError> {
        self.array().map(u64::from_le_bytes)
    }

    pub fn i64(&mut self) -> Result<i64, StoreError> {
        self.array().map(i64::from_le_bytes)
    }

    /// A byte string and where it starts in the buffer.
    pub fn bytes(&mut self) -> Result<(usize, &'a [u8]), StoreError> {
        let len = self.u32()? as usize;
        let start = self.pos;
        Ok((start, self.take(len)?))
    }

    pub fn str(&mut self) -> Result<&'a str, StoreError> {
        let (_, bytes) = self.bytes()?;
        std::str::from_utf8(bytes).map_err(|e| StoreError::Corrupt {
            what: "a text in the store's log".into(),
            reason: e.to_string(),
        })
    }

    /// A presence flag: only `0` and `1` are flags, anything else is damage.
    pub fn flag(&mut self) -> Result<bool, StoreError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(StoreError::Corrupt {
                what: "a record in the log".into(),
                reason: format!("a presence flag of {other}"),
            }),
        }
    }

    /// What [`Enc::opt_str`] wrote.
    pub fn opt_str(&mut self) -> Result<Option<&'a str>, StoreError> {
        Ok(match self.flag()? {
            false => None,
            true => Some(self.str()?),
        })
    }
}
