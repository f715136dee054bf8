//! Secret values sealed at rest: XChaCha20-Poly1305 with a random 24-byte nonce per value,
//! under a 32-byte key kept outside the data directory.
//!
//! A sealed value is a JSON string `sealed:v1:<key id>:<base64url(nonce ‖ ciphertext)>`;
//! the plaintext is the value's JSON text. The associated data binds it to where it
//! belongs (the task or process and the key name), so a ciphertext copied to another task
//! or another key does not authenticate. A key's id is derived from the key itself (the
//! first 8 bytes of SHA-1 over a domain prefix and the key, in hex), so a key given in
//! `CONVEYOR_SECRET_KEY` has the same id as the file it came from.
//!
//! Strings that merely look sealed are escaped when written (`sealed:plain:` + the
//! string), so no value a user sends can be mistaken for a sealed one.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde_json::Value;
use sha1::{Digest, Sha1};

/// What every sealed value starts with (then the key id, `:`, and the sealed bytes).
pub const SEALED_PREFIX: &str = "sealed:v1:";
/// What a plain string that starts like a sealed one gets in front of it when stored.
pub const ESCAPE_PREFIX: &str = "sealed:plain:";

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// Errors of sealing and unsealing, and of the keys.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(
        "{place}, key `{key}`: the value is sealed with key {key_id}, which is not loaded (give its key file in the key directory, or CONVEYOR_SECRET_KEY)"
    )]
    UnknownKey {
        place: String,
        key: String,
        key_id: String,
    },
    #[error(
        "{place}, key `{key}`: the sealed value does not authenticate under key {key_id} (it was changed, or moved from another task or key)"
    )]
    Tampered {
        place: String,
        key: String,
        key_id: String,
    },
    #[error("{place}, key `{key}`: the sealed value is malformed: {reason}")]
    Malformed {
        place: String,
        key: String,
        reason: String,
    },
    #[error("{place}, key `{key}`: the value could not be sealed")]
    Encrypt { place: String, key: String },
    #[error(
        "the data dir {data} is sealed with key {key_id}, which is not here: put {key_id}.key in {key_dir} (or set CONVEYOR_KEY_DIR to the directory that holds it), or set CONVEYOR_SECRET_KEY to the key (base64 or hex of its 32 bytes){env_note}"
    )]
    MissingKey {
        data: String,
        key_id: String,
        key_dir: String,
        env_note: String,
    },
    #[error("CONVEYOR_SECRET_KEY: {0}")]
    BadEnvKey(String),
    #[error("key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("{path}: {reason}")]
    Record { path: String, reason: String },
}

/// Where a sealed value belongs: its associated data.
#[derive(Debug, Clone, Copy)]
pub enum Place {
    /// The data of a task (also the messages left in its inbox).
    Task(u64),
    /// The settings of a process.
    Process(u64),
}

impl Place {
    fn describe(self) -> String {
        match self {
            Place::Task(id) => format!("task {id}"),
            Place::Process(id) => format!("process {id} settings"),
        }
    }

    fn associated_data(self, key: &str) -> Vec<u8> {
        let (kind, id) = match self {
            Place::Task(id) => ("task", id),
            Place::Process(id) => ("process", id),
        };
        format!("conveyor-seal-v1\0{kind}\0{id}\0{key}").into_bytes()
    }
}

/// One key: its id and its cipher.
#[derive(Clone)]
pub struct Sealer {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").field("id", &self.id).finish()
    }
}

impl Sealer {
    /// The sealer of a 32-byte key.
    pub fn new(key: &[u8; 32]) -> Sealer {
        Sealer {
            id: key_id(key),
            cipher: XChaCha20Poly1305::new(key.into()),
        }
    }

    /// A fresh random key (from the OS) and its sealer.
    pub fn generate() -> (Sealer, [u8; 32]) {
        let key: [u8; 32] = XChaCha20Poly1305::generate_key(&mut OsRng).into();
        (Sealer::new(&key), key)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// `value` sealed for `key` at `place`.
    pub fn seal(&self, place: Place, key: &str, value: &Value) -> Result<String, SealError> {
        let plain = serde_json::to_vec(value).map_err(|_| SealError::Encrypt {
            place: place.describe(),
            key: key.to_string(),
        })?;
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = place.associated_data(key);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Encrypt {
                place: place.describe(),
                key: key.to_string(),
            })?;
        let mut bytes = Vec::with_capacity(NONCE_LEN + sealed.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        Ok(format!(
            "{SEALED_PREFIX}{}:{}",
            self.id,
            URL_SAFE_NO_PAD.encode(bytes)
        ))
    }

    fn open(&self, place: Place, key: &str, body: &str) -> Result<Value, SealError> {
        let malformed = |reason: &str| SealError::Malformed {
            place: place.describe(),
            key: key.to_string(),
            reason: reason.to_string(),
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| malformed("not base64"))?;
        if bytes.len() < NONCE_LEN + TAG_LEN {
            return Err(malformed("too short"));
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let aad = place.associated_data(key);
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Tampered {
                place: place.describe(),
                key: key.to_string(),
                key_id: self.id.clone(),
            })?;
        serde_json::from_slice(&plain).map_err(|_| malformed("the plaintext is not JSON"))
    }
}

/// The id of a key: 16 hex digits of SHA-1 over a domain prefix and the key. It names the
/// key (file name, the record in the data dir) and says nothing usable about it.
pub fn key_id(key: &[u8; 32]) -> String {
    let mut hash = Sha1::new();
    hash.update(b"conveyor secret key id\0");
    hash.update(key);
    let digest = hash.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a key given as text: 64 hex digits, or base64 (standard or URL-safe, padded or
/// not) of 32 bytes.
pub fn parse_key(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| "not hex".to_string())?
    } else {
        let unpadded = text.trim_end_matches('=');
        URL_SAFE_NO_PAD
            .decode(unpadded.replace('+', "-").replace('/', "_"))
            .map_err(|_| "expected 64 hex digits or base64 of 32 bytes".to_string())?
    };
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("the key has {} bytes; it must have 32", b.len()))
}

/// The text a key is written as in its file: standard base64 and a newline.
pub fn key_text(key: &[u8; 32]) -> String {
    format!("{}\n", STANDARD.encode(key))
}

/// The keys a store is opened with: the one new values are sealed with, and others that
/// still open older values (during a rotation).
#[derive(Debug, Clone)]
pub struct Keyring {
    current: Sealer,
    older: Vec<Sealer>,
}

impl Keyring {
    pub fn new(current: Sealer) -> Keyring {
        Keyring {
            current,
            older: Vec::new(),
        }
    }

    /// A keyring with a random key that is never written anywhere (a throwaway store).
    pub fn ephemeral() -> Keyring {
        Keyring::new(Sealer::generate().0)
    }

    /// Adds a key that opens older values.
    pub fn with_older(mut self, older: Sealer) -> Keyring {
        if older.id != self.current.id && !self.older.iter().any(|s| s.id == older.id) {
            self.older.push(older);
        }
        self
    }

    pub fn current(&self) -> &Sealer {
        &self.current
    }

    pub fn older(&self) -> &[Sealer] {
        &self.older
    }

    /// Seals `value` under the current key.
    pub fn seal(&self, place: Place, key: &str, value: &Value) -> Result<String, SealError> {
        self.current.seal(place, key, value)
    }

    /// The value as the program sees it: a sealed string opened, an escaped one
    /// unescaped, anything else as it is.
    pub fn unseal(&self, place: Place, key: &str, value: Value) -> Result<Value, SealError> {
        let Value::String(text) = &value else {
            return Ok(value);
        };
        if let Some(rest) = text.strip_prefix(ESCAPE_PREFIX) {
            return Ok(Value::String(rest.to_string()));
        }
        let Some(rest) = text.strip_prefix(SEALED_PREFIX) else {
            return Ok(value);
        };
        let Some((id, body)) = rest.split_once(':') else {
            return Err(SealError::Malformed {
                place: place.describe(),
                key: key.to_string(),
                reason: "no key id".into(),
            });
        };
        let sealer = std::iter::once(&self.current)
            .chain(&self.older)
            .find(|s| s.id == id)
            .ok_or_else(|| SealError::UnknownKey {
                place: place.describe(),
                key: key.to_string(),
                key_id: id.to_string(),
            })?;
        sealer.open(place, key, body)
    }
}

/// The id of the key a stored value is sealed with, if it is sealed.
pub fn sealed_with(value: &Value) -> Option<&str> {
    let rest = value.as_str()?.strip_prefix(SEALED_PREFIX)?;
    rest.split_once(':').map(|(id, _)| id)
}

/// Whether a plain string must be escaped to be stored as it is.
pub(crate) fn needs_escape(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.starts_with(SEALED_PREFIX) || s.starts_with(ESCAPE_PREFIX))
}

/// `value` escaped for storage (when it needs it).
pub(crate) fn escape(value: &Value) -> Value {
    match value.as_str() {
        Some(s) if needs_escape(value) => Value::String(format!("{ESCAPE_PREFIX}{s}")),
        _ => value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ring(byte: u8) -> Keyring {
        Keyring::new(Sealer::new(&[byte; 32]))
    }

    #[test]
    fn round_trip_keeps_the_json_value_and_hides_it() {
        let keys = ring(1);
        for value in [
            json!("s3cret-token"),
            json!(123456),
            json!({"a": [1, "x"]}),
            json!(null),
        ] {
            let sealed = keys.seal(Place::Task(7), "token", &value).unwrap();
            assert!(sealed.starts_with(SEALED_PREFIX), "{sealed}");
            assert!(!sealed.contains("s3cret"));
            assert_eq!(sealed_with(&json!(sealed)), Some(keys.current().id()));
            let back = keys.unseal(Place::Task(7), "token", json!(sealed)).unwrap();
            assert_eq!(back, value);
        }
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let keys = ring(1);
        let a = keys.seal(Place::Task(1), "k", &json!("same")).unwrap();
        let b = keys.seal(Place::Task(1), "k", &json!("same")).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn a_wrong_key_is_a_typed_error_naming_task_and_key() {
        let sealed = ring(1).seal(Place::Task(7), "token", &json!("x")).unwrap();
        let error = ring(2)
            .unseal(Place::Task(7), "token", json!(sealed))
            .unwrap_err();
        assert!(matches!(error, SealError::UnknownKey { .. }), "{error:?}");
        let text = error.to_string();
        assert!(
            text.contains("task 7") && text.contains("`token`"),
            "{text}"
        );
        assert!(text.contains(ring(1).current().id()), "{text}");

        // Same id, other key bytes (a forged id) fails authentication, not silently.
        let sealed = ring(1).seal(Place::Task(7), "token", &json!("x")).unwrap();
        let forged = sealed.replace(ring(1).current().id(), ring(2).current().id());
        let error = ring(2)
            .unseal(Place::Task(7), "token", json!(forged))
            .unwrap_err();
        assert!(matches!(error, SealError::Tampered { .. }), "{error:?}");
    }

    #[test]
    fn tampered_ciphertext_is_refused() {
        let keys = ring(1);
        let sealed = keys.seal(Place::Task(7), "token", &json!("abc")).unwrap();
        let (head, body) = sealed.rsplit_once(':').unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(body).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = format!("{head}:{}", URL_SAFE_NO_PAD.encode(&bytes));
        let error = keys
            .unseal(Place::Task(7), "token", json!(tampered))
            .unwrap_err();
        assert!(matches!(error, SealError::Tampered { .. }), "{error:?}");
        let cut = format!("{head}:AAAA");
        let error = keys
            .unseal(Place::Task(7), "token", json!(cut))
            .unwrap_err();
        assert!(matches!(error, SealError::Malformed { .. }), "{error:?}");
    }

    #[test]
    fn a_ciphertext_moved_to_another_task_or_key_is_refused() {
        let keys = ring(1);
        let sealed = json!(keys.seal(Place::Task(7), "token", &json!("abc")).unwrap());
        for (place, key) in [
            (Place::Task(8), "token"),
            (Place::Task(7), "note"),
            (Place::Process(7), "token"),
        ] {
            let error = keys.unseal(place, key, sealed.clone()).unwrap_err();
            assert!(matches!(error, SealError::Tampered { .. }), "{error:?}");
        }
    }

    #[test]
    fn older_keys_open_older_values() {
        let old = ring(1);
        let sealed = old.seal(Place::Task(1), "k", &json!("v")).unwrap();
        let both = ring(2).with_older(Sealer::new(&[1; 32]));
        assert_eq!(
            both.unseal(Place::Task(1), "k", json!(sealed)).unwrap(),
            json!("v")
        );
    }

    #[test]
    fn plain_values_pass_and_lookalikes_are_escaped() {
        let keys = ring(1);
        assert_eq!(
            keys.unseal(Place::Task(1), "k", json!("plain")).unwrap(),
            json!("plain")
        );
        let lookalike = json!("sealed:v1:abc:def");
        let stored = escape(&lookalike);
        assert_ne!(stored, lookalike);
        assert_eq!(keys.unseal(Place::Task(1), "k", stored).unwrap(), lookalike);
        // A legacy value that only starts with `sealed:` is left alone.
        assert_eq!(
            keys.unseal(Place::Task(1), "k", json!("sealed:deal"))
                .unwrap(),
            json!("sealed:deal")
        );
    }

    #[test]
    fn keys_parse_from_hex_and_base64() {
        let key = [0xab; 32];
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parse_key(&hex).unwrap(), key);
        assert_eq!(parse_key(&key_text(&key)).unwrap(), key);
        assert_eq!(
            parse_key(&URL_SAFE_NO_PAD.encode(key)).unwrap(),
            key,
            "URL-safe base64"
        );
        assert!(parse_key("abcd").unwrap_err().contains("32"));
        assert!(parse_key("!!!").is_err());
    }
}
