//! Signatures of the task API seen lately, kept until their request time is out of the
//! accepted window, so a signed request is refused a second time — also after a crash
//! and a restart.
//!
//! They live in a small file of their own in the data dir (`signatures`: one line
//! `EXPIRES SIGNATURE` per request, appended and `fdatasync`ed before the request's ops
//! run — requests arriving together share one `fdatasync`), not in the store: they are the HTTP layer's concern, they expire within
//! minutes (the store would have to learn expiry and keep them in both store formats and
//! their snapshots), and a lost or damaged file costs only the replay check of the last
//! few minutes, never task data. The file is rewritten without expired lines at start
//! and when it has grown to mostly stale lines.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Why a signature could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot keep the signatures of recent requests in {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) struct Signatures {
    inner: Mutex<Inner>,
    /// The number of the last line known to be on disk. Requests arriving together share
    /// one `fdatasync` (group sync): whoever syncs covers every line written before it.
    synced: Mutex<u64>,
}

struct Inner {
    /// Signature → the unix time (s) after which it can no longer be accepted anyway.
    seen: HashMap<String, i64>,
    file: Option<(PathBuf, File)>,
    /// Lines in the file.
    lines: usize,
    /// Lines appended since the start (numbers for `synced`).
    appended: u64,
}

impl Signatures {
    /// Signatures kept in memory only.
    pub(crate) fn in_memory() -> Signatures {
        Signatures {
            inner: Mutex::new(Inner {
                seen: HashMap::new(),
                file: None,
                lines: 0,
                appended: 0,
            }),
            synced: Mutex::new(0),
        }
    }

    /// Signatures kept in `path` too; those in it that have not expired at `now` are
    /// read back.
    pub(crate) fn open(path: &Path, now: i64) -> Result<Signatures, ReplayError> {
        let io = |source| ReplayError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut seen = HashMap::new();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                // A line torn by a crash, or anything else odd, is skipped.
                for line in text.lines() {
                    if let Some((expires, signature)) = line.split_once(' ')
                        && let Ok(expires) = expires.parse::<i64>()
                        && expires >= now
                        && signature.len() == 40
                        && signature.bytes().all(|b| b.is_ascii_hexdigit())
                    {
                        seen.insert(signature.to_string(), expires);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let inner = Inner {
            seen,
            file: None,
            lines: 0,
            appended: 0,
        };
        let signatures = Signatures {
            inner: Mutex::new(inner),
            synced: Mutex::new(0),
        };
        if let Ok(mut inner) = signatures.inner.lock() {
            rewrite(&mut inner, path).map_err(io)?;
        }
        Ok(signatures)
    }

    /// Records `signature` (valid until `expires`); false when it was seen before. Once
    /// this returns true the signature is on disk.
    pub(crate) fn remember(
        &self,
        signature: &str,
        expires: i64,
        now: i64,
    ) -> Result<bool, ReplayError> {
        let (number, path, handle) = {
            let Ok(mut inner) = self.inner.lock() else {
                return Ok(false);
            };
            if inner.seen.get(signature).is_some_and(|e| *e >= now) {
                return Ok(false);
            }
            if inner.seen.len() >= 1024 && inner.seen.len().is_power_of_two() {
                inner.seen.retain(|_, e| *e >= now);
            }
            inner.seen.insert(signature.to_string(), expires);
            let Some((path, file)) = &mut inner.file else {
                return Ok(true);
            };
            let path = path.clone();
            let written = file
                .write_all(format!("{expires} {signature}\n").as_bytes())
                .and_then(|()| file.try_clone());
            let handle = match written {
                Ok(handle) => handle,
                Err(source) => {
                    inner.seen.remove(signature);
                    return Err(ReplayError::Io { path, source });
                }
            };
            inner.lines += 1;
            inner.appended += 1;
            let number = inner.appended;
            if inner.lines > 4096 && inner.lines > 4 * inner.seen.len() {
                inner.seen.retain(|_, e| *e >= now);
                // The new file is synced whole, with this line in it.
                if let Err(source) = rewrite(&mut inner, &path) {
                    return Err(ReplayError::Io { path, source });
                }
                return Ok(true);
            }
            (number, path, handle)
        };
        // Group sync: one `fdatasync` covers every line appended before it.
        let Ok(mut synced) = self.synced.lock() else {
            return Ok(false);
        };
        if *synced < number {
            let upto = self.inner.lock().map(|i| i.appended).unwrap_or(number);
            if let Err(source) = handle.sync_data() {
                if let Ok(mut inner) = self.inner.lock() {
                    inner.seen.remove(signature);
                }
                return Err(ReplayError::Io { path, source });
            }
            *synced = upto.max(number);
        }
        Ok(true)
    }
}

/// Writes the live signatures to a new file, syncs it, puts it in place of the old one
/// and keeps it open for appending.
fn rewrite(inner: &mut Inner, path: &Path) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut text = String::new();
    for (signature, expires) in &inner.seen {
        text.push_str(&format!("{expires} {signature}\n"));
    }
    {
        let mut file = File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    let file = OpenOptions::new().append(true).open(path)?;
    inner.lines = inner.seen.len();
    inner.file = Some((path.to_path_buf(), file));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn a_signature_is_refused_the_second_time_also_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signatures");
        let signatures = Signatures::open(&path, 1000).unwrap();
        assert!(signatures.remember(A, 1300, 1000).unwrap());
        assert!(!signatures.remember(A, 1300, 1001).unwrap());
        assert!(signatures.remember(B, 1010, 1000).unwrap());
        drop(signatures);
        // Reopened later: A is still in its window, B has expired.
        let signatures = Signatures::open(&path, 1100).unwrap();
        assert!(!signatures.remember(A, 1300, 1100).unwrap());
        assert!(signatures.remember(B, 1400, 1100).unwrap());
        // The rewritten file holds the live ones only.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    #[test]
    fn a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signatures");
        std::fs::write(&path, format!("1300 {A}\n1300 bbbb")).unwrap();
        let signatures = Signatures::open(&path, 1000).unwrap();
        assert!(!signatures.remember(A, 1300, 1000).unwrap());
        assert!(signatures.remember(B, 1300, 1000).unwrap());
    }

    #[test]
    fn in_memory_only() {
        let signatures = Signatures::in_memory();
        assert!(signatures.remember(A, 10, 0).unwrap());
        assert!(!signatures.remember(A, 10, 5).unwrap());
        // Once expired it could not pass the clock check anyway; it is forgotten.
        assert!(signatures.remember(A, 30, 11).unwrap());
    }
}
