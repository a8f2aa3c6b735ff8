//! Encryption at rest for credential records: AES-256-GCM, a fresh 96-bit nonce per write, the
//! record's user id as associated data (a record copied under another name does not decrypt).
//!
//! The key comes from `WITHINGS_LAKE_KEY` (64 hex characters or base64 of 32 bytes) or from a
//! key file, created with mode 0600 on first use.

use std::io::Write;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;

use super::CredentialsError;

const MAGIC: &[u8; 4] = b"WLC1";
pub const KEY_ENV: &str = "WITHINGS_LAKE_KEY";

pub struct Cipher {
    aead: Aes256Gcm,
    /// HMAC-SHA256(key, "withings-lake/erasure"): keys the erasure manifest's hash of an id.
    erasure_key: [u8; 32],
    /// Where the key came from (for messages; never the key).
    pub source: String,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cipher").field("source", &self.source).finish()
    }
}

fn parse_key(text: &str) -> Option<[u8; 32]> {
    let t = text.trim();
    let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(t).ok()?
    } else {
        base64::engine::general_purpose::STANDARD.decode(t).ok()?
    };
    bytes.try_into().ok()
}

impl Cipher {
    pub fn from_key(key: [u8; 32], source: impl Into<String>) -> Cipher {
        use hmac::Mac;
        let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes any key length");
        mac.update(b"withings-lake/erasure");
        let erasure_key = mac.finalize().into_bytes().into();
        Cipher { aead: Aes256Gcm::new(&key.into()), erasure_key, source: source.into() }
    }

    /// The key from `WITHINGS_LAKE_KEY`, else from `key_file` (created, 0600, when missing).
    /// For a fresh store only (the demo, tests): a pipeline opens its store with
    /// [`super::CredentialStore::open_with_key`], which never creates a key beside records.
    pub fn load(key_file: &Path) -> Result<Cipher, CredentialsError> {
        match Cipher::load_existing(key_file)? {
            Some(c) => Ok(c),
            None => Cipher::create(key_file),
        }
    }

    /// The key from `WITHINGS_LAKE_KEY`, else from `key_file`; `None` when the variable is
    /// unset and the file does not exist. A key file others can read (mode wider than 0600)
    /// is refused: whoever reads it can decrypt every token.
    pub fn load_existing(key_file: &Path) -> Result<Option<Cipher>, CredentialsError> {
        if let Ok(text) = std::env::var(KEY_ENV) {
            let key = parse_key(&text).ok_or_else(|| CredentialsError::Key {
                source_name: KEY_ENV.into(),
                reason: "must be 64 hex characters or base64 of 32 bytes".into(),
                source: None,
            })?;
            return Ok(Some(Cipher::from_key(key, KEY_ENV)));
        }
        let name = key_file.display().to_string();
        let key_err = |reason: String| CredentialsError::Key { source_name: name.clone(), reason, source: None };
        let io_err = |e: std::io::Error| CredentialsError::Key {
            source_name: name.clone(),
            reason: e.to_string(),
            source: Some(Box::new(e)),
        };
        match std::fs::read_to_string(key_file) {
            Ok(text) => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = std::fs::metadata(key_file).map_err(io_err)?.permissions().mode() & 0o777;
                    if mode & 0o077 != 0 {
                        return Err(key_err(format!(
                            "its permissions {mode:04o} let other users read it (anyone who can decrypts every token): \
                             run `chmod 600 {name}`, or give the key in {KEY_ENV}"
                        )));
                    }
                }
                parse_key(&text)
                    .map(|k| Some(Cipher::from_key(k, name.clone())))
                    .ok_or_else(|| key_err("does not hold a 32-byte key (64 hex characters)".into()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(e)),
        }
    }

    /// A new random key, written to `key_file` (0600, create-only: a key written meanwhile by
    /// another process is the one used).
    pub fn create(key_file: &Path) -> Result<Cipher, CredentialsError> {
        let name = key_file.display().to_string();
        let key_err = |reason: String| CredentialsError::Key { source_name: name.clone(), reason, source: None };
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| CredentialsError::Key {
            source_name: name.clone(),
            reason: format!("no randomness: {e}"),
            source: Some(Box::new(e)),
        })?;
        match write_new_key_file(key_file, &key) {
            Ok(()) => {
                tracing::info!(key_file = %name, "created a new credentials key (mode 0600); back it up: records cannot be read without it");
                Ok(Cipher::from_key(key, name.clone()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Cipher::load_existing(key_file)?.ok_or_else(|| key_err("appeared and vanished while being created".into()))
            }
            Err(e) => Err(CredentialsError::Key {
                source_name: name.clone(),
                reason: format!("cannot create it: {e}"),
                source: Some(Box::new(e)),
            }),
        }
    }

    /// HMAC-SHA256 of a user id under a key derived from this key (never the key itself):
    /// what an erasure manifest records. Ids are guessable, so an unkeyed hash would name the
    /// person to anyone who can read the lake; this one only to whoever holds the key.
    pub fn erasure_tag(&self, user_id: &str) -> String {
        use hmac::Mac;
        let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.erasure_key).expect("any key length");
        mac.update(user_id.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    pub fn encrypt(&self, aad: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).expect("the OS provides randomness");
        let ct = self
            .aead
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: aad.as_bytes() })
            .expect("AES-GCM encryption does not fail for in-memory buffers");
        let mut out = Vec::with_capacity(4 + 12 + ct.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    pub fn decrypt(&self, aad: &str, bytes: &[u8]) -> Result<Vec<u8>, String> {
        if bytes.len() < 16 + 16 || &bytes[..4] != MAGIC {
            return Err("not a withings-lake credentials record".into());
        }
        self.aead
            .decrypt(Nonce::from_slice(&bytes[4..16]), Payload { msg: &bytes[16..], aad: aad.as_bytes() })
            .map_err(|_| "cannot decrypt (wrong key, or the record was altered)".into())
    }
}

/// Writes a new key file whole or not at all: a temporary file (0600, synced), then a hard
/// link to `path` (which fails if a key appeared meanwhile), so no process ever reads a
/// half-written key and a kill leaves no empty one.
fn write_new_key_file(path: &Path, key: &[u8; 32]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".new-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp); // a leftover of this pid's namesake
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let written = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(hex::encode(key).as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    written
}

/// `$XDG_CONFIG_HOME/withings-lake/credentials.key` (or `~/.config/...`).
pub fn default_key_file() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("withings-lake").join("credentials.key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_binds_the_user_and_detects_tampering() {
        let c = Cipher::from_key([7u8; 32], "test");
        let sealed = c.encrypt("alice", b"{\"refresh_token\":\"abc\"}");
        assert!(!sealed.windows(3).any(|w| w == b"abc"), "no plain text at rest");
        assert_eq!(c.decrypt("alice", &sealed).unwrap(), b"{\"refresh_token\":\"abc\"}");
        assert!(c.decrypt("bob", &sealed).is_err(), "bound to its user id");
        let mut bent = sealed.clone();
        let last = bent.len() - 1;
        bent[last] ^= 1;
        assert!(c.decrypt("alice", &bent).is_err());
        assert!(Cipher::from_key([8u8; 32], "other").decrypt("alice", &sealed).is_err());
    }

    #[test]
    fn a_missing_key_file_is_created_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("key");
        let a = Cipher::load(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let b = Cipher::load(&path).unwrap();
        assert_eq!(b.decrypt("u", &a.encrypt("u", b"x")).unwrap(), b"x");
        std::fs::write(&path, "short").unwrap();
        let e = Cipher::load(&path).unwrap_err().to_string();
        assert!(e.contains("32-byte key") && e.contains("key"), "{e}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(&path, hex::encode([1u8; 32])).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = Cipher::load(&path).unwrap_err().to_string();
            assert!(e.contains("0644") && e.contains("chmod 600"), "a readable key file is refused: {e}");
        }
    }
}
