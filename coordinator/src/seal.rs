//! Encryption at rest of secrets in the store (CA keys, rendered component
//! specs with their key files): AES-256-GCM under a key-encryption key (KEK)
//! read from a file whose permissions are checked.
//!
//! Sealed format: `0x01 || nonce (12) || ciphertext || tag (16)`. The
//! associated data names the record (e.g. `cluster/prod`), so a sealed blob
//! cannot be moved to another record.

use anyhow::{bail, Context, Result};
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::path::Path;

const VERSION: u8 = 1;
const PREFIX: &str = "oneinfra-kek-v1:";

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("sealed data is truncated or of an unknown format")]
    Format,
    #[error(
        "cannot decrypt sealed data: it was sealed with another key-encryption key, or altered; \
         check the coordinator's kek_file"
    )]
    Open,
}

pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(key hidden)")
    }
}

impl Sealer {
    pub fn from_key(bytes: &[u8; 32]) -> Self {
        let key = UnboundKey::new(&AES_256_GCM, bytes).expect("32 bytes is an AES-256 key");
        Self {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        }
    }

    /// A random key, for tests.
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        SystemRandom::new()
            .fill(&mut k)
            .expect("system random source works");
        Self::from_key(&k)
    }

    /// Loads the KEK from `path`, creating it (0600) when `create` is set
    /// and the file does not exist. A key file others can read is refused.
    pub fn load_or_create(path: &Path, create: bool) -> Result<Self> {
        if !path.exists() {
            if !create {
                bail!(
                    "key-encryption key {} does not exist; restore it from backup \
                     (without it the store's secrets cannot be read)",
                    path.display()
                );
            }
            let mut k = [0u8; 32];
            SystemRandom::new()
                .fill(&mut k)
                .map_err(|_| anyhow::anyhow!("read system random source"))?;
            let text = format!(
                "{PREFIX}{}\n",
                base64::engine::general_purpose::STANDARD.encode(k)
            );
            oi_proto::fsutil::write_atomic(path, text.as_bytes(), 0o600)?;
            tracing::info!(path = %path.display(), "created key-encryption key; back it up with the store");
            return Ok(Self::from_key(&k));
        }
        let text = oi_proto::fsutil::read_secret_file(path)?;
        let text = std::str::from_utf8(&text).context("key-encryption key is not text")?;
        let b64 = text.trim().strip_prefix(PREFIX).with_context(|| {
            format!(
                "{} is not a oneinfra key-encryption key (expected a line starting with {PREFIX:?})",
                path.display()
            )
        })?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .with_context(|| format!("decode {}", path.display()))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("{}: the key must be 32 bytes", path.display()))?;
        Ok(Self::from_key(&key))
    }

    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .expect("system random source works");
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .expect("AES-GCM sealing of in-memory data cannot fail");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + buf.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        out
    }

    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < 1 + NONCE_LEN + AES_256_GCM.tag_len() || sealed[0] != VERSION {
            return Err(SealError::Format);
        }
        let nonce: [u8; NONCE_LEN] = sealed[1..1 + NONCE_LEN]
            .try_into()
            .map_err(|_| SealError::Format)?;
        let mut buf = sealed[1 + NONCE_LEN..].to_vec();
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| SealError::Open)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trip_context_binding_and_tampering() {
        let s = Sealer::generate();
        let sealed = s.seal("cluster/a", b"secret");
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(s.open("cluster/a", &sealed).unwrap(), b"secret");
        assert!(matches!(s.open("cluster/b", &sealed), Err(SealError::Open)));
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(s.open("cluster/a", &bad), Err(SealError::Open)));
        assert!(matches!(
            s.open("cluster/a", &[1, 2]),
            Err(SealError::Format)
        ));
        assert!(Sealer::generate().open("cluster/a", &sealed).is_err());
    }

    #[test]
    fn key_file_is_created_private_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kek");
        assert!(Sealer::load_or_create(&p, false).is_err());
        let a = Sealer::load_or_create(&p, true).unwrap();
        let sealed = a.seal("x", b"y");
        let b = Sealer::load_or_create(&p, false).unwrap();
        assert_eq!(b.open("x", &sealed).unwrap(), b"y");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = format!("{:#}", Sealer::load_or_create(&p, false).unwrap_err());
        assert!(err.contains("chmod 600"), "{err}");
    }
}
