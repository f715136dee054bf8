//! Where the keys that seal secrets live: files `<key id>.key` (mode 0600) in a key
//! directory outside the data dir, or `CONVEYOR_SECRET_KEY`. The data dir holds only
//! `seal.json`: the id of the key it is sealed with, and during a rotation the ids of the
//! keys it was sealed with before.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::seal::{Keyring, SealError, Sealer, key_text, parse_key};

/// Where keys are found.
#[derive(Debug, Clone)]
pub struct KeySource {
    /// The key directory (`CONVEYOR_KEY_DIR`, else the platform's config dir +
    /// `conveyor/keys`).
    pub dir: PathBuf,
    /// The text of `CONVEYOR_SECRET_KEY`, when set.
    pub env_key: Option<String>,
}

/// `DATA/seal.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SealRecord {
    pub version: u32,
    /// The key new values are sealed with.
    pub key: String,
    /// Keys that may still seal some values: a rotation to `key` is under way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous: Vec<String>,
}

const RECORD_VERSION: u32 = 1;

pub fn record_path(data: &Path) -> PathBuf {
    data.join("seal.json")
}

/// The data dir's record, if it has one.
pub fn read_record(data: &Path) -> Result<Option<SealRecord>, SealError> {
    let path = record_path(data);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(record_error(&path, e)),
    };
    let record: SealRecord = serde_json::from_str(&text).map_err(|e| record_error(&path, e))?;
    if record.version > RECORD_VERSION {
        return Err(record_error(
            &path,
            format!(
                "version {} is newer than this conveyor understands ({RECORD_VERSION}); upgrade conveyor",
                record.version
            ),
        ));
    }
    Ok(Some(record))
}

/// Writes the record whole or not at all (a temporary file renamed over it).
pub fn write_record(data: &Path, record: &SealRecord) -> Result<(), SealError> {
    let path = record_path(data);
    let text = serde_json::to_string_pretty(record).map_err(|e| record_error(&path, e))?;
    std::fs::create_dir_all(data).map_err(|e| record_error(&path, e))?;
    let temporary = data.join("seal.json.tmp");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)?;
        if let Ok(dir) = std::fs::File::open(data) {
            let _ = dir.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| record_error(&path, e))
}

fn record_error(path: &Path, e: impl std::fmt::Display) -> SealError {
    SealError::Record {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn key_error(path: &Path, e: impl std::fmt::Display) -> SealError {
    SealError::KeyFile {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

impl KeySource {
    pub fn key_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.key"))
    }

    /// The key in `CONVEYOR_SECRET_KEY`, if set.
    pub fn env_sealer(&self) -> Result<Option<Sealer>, SealError> {
        match &self.env_key {
            None => Ok(None),
            Some(text) => parse_key(text)
                .map(|key| Some(Sealer::new(&key)))
                .map_err(SealError::BadEnvKey),
        }
    }

    /// The key with this id: `CONVEYOR_SECRET_KEY` if it is that key, else its file.
    pub fn find(&self, id: &str) -> Result<Option<Sealer>, SealError> {
        if let Some(sealer) = self.env_sealer()?
            && sealer.id() == id
        {
            return Ok(Some(sealer));
        }
        let path = self.key_path(id);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(key_error(&path, e)),
        };
        let key = parse_key(&text).map_err(|e| key_error(&path, e))?;
        let sealer = Sealer::new(&key);
        if sealer.id() != id {
            return Err(key_error(
                &path,
                format!("holds key {}, not {id}", sealer.id()),
            ));
        }
        Ok(Some(sealer))
    }

    /// Makes a new random key and writes its file (mode 0600, in a 0700 directory made
    /// if needed); never overwrites a file.
    pub fn create(&self) -> Result<Sealer, SealError> {
        let (sealer, key) = Sealer::generate();
        create_private_dir(&self.dir).map_err(|e| key_error(&self.dir, e))?;
        let path = self.key_path(sealer.id());
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let write = || -> std::io::Result<()> {
            let mut file = options.open(&path)?;
            file.write_all(key_text(&key).as_bytes())?;
            file.sync_all()?;
            if let Ok(dir) = std::fs::File::open(&self.dir) {
                let _ = dir.sync_all();
            }
            Ok(())
        };
        write().map_err(|e| key_error(&path, e))?;
        Ok(sealer)
    }

    /// Removes a key's file; `Ok(false)` when there was none (a key from the environment).
    pub fn remove(&self, id: &str) -> Result<bool, SealError> {
        let path = self.key_path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(key_error(&path, e)),
        }
    }

    fn missing(&self, data: &Path, id: &str) -> Result<SealError, SealError> {
        let env_note = match self.env_sealer()? {
            Some(sealer) => format!(
                "; CONVEYOR_SECRET_KEY holds key {}, not this one",
                sealer.id()
            ),
            None => String::new(),
        };
        Ok(SealError::MissingKey {
            data: data.display().to_string(),
            key_id: id.to_string(),
            key_dir: self.dir.display().to_string(),
            env_note,
        })
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// The keys of the data dir `data`: every key its record names (all are needed: during a
/// rotation some values are still sealed with the older ones). A data dir without a
/// record gets one, with `CONVEYOR_SECRET_KEY` or a new key made in the key directory.
pub fn open_keyring(data: &Path, source: &KeySource) -> Result<Keyring, SealError> {
    let Some(record) = read_record(data)? else {
        let sealer = match source.env_sealer()? {
            Some(sealer) => sealer,
            None => source.create()?,
        };
        write_record(
            data,
            &SealRecord {
                version: RECORD_VERSION,
                key: sealer.id().to_string(),
                previous: Vec::new(),
            },
        )?;
        return Ok(Keyring::new(sealer));
    };
    let need = |id: &str| -> Result<Sealer, SealError> {
        match source.find(id)? {
            Some(sealer) => Ok(sealer),
            None => Err(source.missing(data, id)?),
        }
    };
    let mut keyring = Keyring::new(need(&record.key)?);
    for id in &record.previous {
        keyring = keyring.with_older(need(id)?);
    }
    Ok(keyring)
}

/// Starts a rotation: a new key (its file written first), then the record naming it
/// with the keys it replaces. From here on new values are sealed with the new key and
/// the old ones still open; a crash leaves a data dir that opens with both.
pub fn begin_rotation(
    data: &Path,
    source: &KeySource,
    keyring: &Keyring,
) -> Result<Keyring, SealError> {
    let new = source.create()?;
    let mut previous: Vec<String> = vec![keyring.current().id().to_string()];
    previous.extend(keyring.older().iter().map(|s| s.id().to_string()));
    write_record(
        data,
        &SealRecord {
            version: RECORD_VERSION,
            key: new.id().to_string(),
            previous,
        },
    )?;
    let mut rotated = Keyring::new(new).with_older(keyring.current().clone());
    for older in keyring.older() {
        rotated = rotated.with_older(older.clone());
    }
    Ok(rotated)
}

/// Ends a rotation once nothing is sealed with the older keys: the record names the
/// current key alone. Returns the ids it no longer names.
pub fn end_rotation(data: &Path, keyring: &Keyring) -> Result<Vec<String>, SealError> {
    write_record(
        data,
        &SealRecord {
            version: RECORD_VERSION,
            key: keyring.current().id().to_string(),
            previous: Vec::new(),
        },
    )?;
    Ok(keyring.older().iter().map(|s| s.id().to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(dir: &Path) -> KeySource {
        KeySource {
            dir: dir.join("keys"),
            env_key: None,
        }
    }

    #[test]
    fn a_new_data_dir_gets_a_private_key_file_outside_it() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let keys = source(tmp.path());
        let keyring = open_keyring(&data, &keys).unwrap();
        let id = keyring.current().id().to_string();
        let path = keys.key_path(&id);
        assert!(path.exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let record = read_record(&data).unwrap().unwrap();
        assert_eq!(record.key, id);
        // Opened again: the same key.
        assert_eq!(open_keyring(&data, &keys).unwrap().current().id(), id);
    }

    #[test]
    fn without_its_key_a_data_dir_says_which_key_and_how() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let id = open_keyring(&data, &source(tmp.path()))
            .unwrap()
            .current()
            .id()
            .to_string();
        let elsewhere = KeySource {
            dir: tmp.path().join("other"),
            env_key: Some("ab".repeat(32)),
        };
        let error = open_keyring(&data, &elsewhere).unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, SealError::MissingKey { .. }));
        assert!(text.contains(&id), "{text}");
        assert!(text.contains("CONVEYOR_KEY_DIR"), "{text}");
        assert!(text.contains("CONVEYOR_SECRET_KEY holds key"), "{text}");
    }

    #[test]
    fn the_environment_key_serves_when_it_is_the_one() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let env = KeySource {
            dir: tmp.path().join("keys"),
            env_key: Some("cd".repeat(32)),
        };
        let keyring = open_keyring(&data, &env).unwrap();
        assert!(!env.dir.exists(), "no key file made when the env gives it");
        assert_eq!(
            open_keyring(&data, &env).unwrap().current().id(),
            keyring.current().id()
        );
        let bad = KeySource {
            env_key: Some("nope".into()),
            ..env
        };
        assert!(matches!(
            open_keyring(&data, &bad).unwrap_err(),
            SealError::BadEnvKey(_)
        ));
    }

    #[test]
    fn a_rotation_needs_both_keys_until_it_ends() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let keys = source(tmp.path());
        let old = open_keyring(&data, &keys).unwrap();
        let rotated = begin_rotation(&data, &keys, &old).unwrap();
        assert_ne!(rotated.current().id(), old.current().id());
        // A crash here: the data dir opens with both keys.
        let reopened = open_keyring(&data, &keys).unwrap();
        assert_eq!(reopened.current().id(), rotated.current().id());
        assert_eq!(reopened.older()[0].id(), old.current().id());
        let dropped = end_rotation(&data, &reopened).unwrap();
        assert_eq!(dropped, vec![old.current().id().to_string()]);
        assert!(keys.remove(old.current().id()).unwrap());
        let done = open_keyring(&data, &keys).unwrap();
        assert!(done.older().is_empty());
    }
}
