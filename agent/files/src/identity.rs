//! The agent's identity: its key and certificate on disk (`agent.key`,
//! `agent.pem`), how they are replaced when renewed, and when to renew.
//!
//! Replacing the pair never leaves a key that does not match its
//! certificate, even after a crash: the new key and certificate are first
//! written under new names (`agent.key.next`, then `agent.pem.next`, each
//! atomically), then renamed over the old ones, key first. [`IdentityFiles::load`]
//! finishes or discards a replacement a crash interrupted:
//!
//! | found | means | done |
//! |---|---|---|
//! | `key.next` and `pem.next` | both new files written, nothing renamed | rename both |
//! | `pem.next` only | the key was renamed, the certificate not | rename it |
//! | `key.next` only | crashed while writing the new pair | delete it |
//!
//! Keys are generated here (rcgen, ECDSA P-256) and never leave the machine:
//! the coordinator gets a certificate signing request.

use anyhow::{anyhow, bail, Context, Result};
use rcgen::PublicKeyData;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the agent's key and certificate live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn next_of(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".next");
    path.with_file_name(name)
}

fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to)
        .with_context(|| format!("rename {} to {}", from.display(), to.display()))
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync directory {}", dir.display()))
}

impl IdentityFiles {
    /// `agent.pem` and `agent.key` in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            cert: dir.join("agent.pem"),
            key: dir.join("agent.key"),
        }
    }

    /// Finishes or discards an interrupted replacement (see the module
    /// docs). Returns what it did, for the log.
    pub fn recover(&self) -> Result<Option<&'static str>> {
        let (key_next, cert_next) = (next_of(&self.key), next_of(&self.cert));
        let done = match (key_next.exists(), cert_next.exists()) {
            (false, false) => return Ok(None),
            (true, true) => {
                rename(&key_next, &self.key)?;
                rename(&cert_next, &self.cert)?;
                "finished an interrupted certificate renewal (renamed the new key and certificate)"
            }
            (false, true) => {
                rename(&cert_next, &self.cert)?;
                "finished an interrupted certificate renewal (renamed the new certificate)"
            }
            (true, false) => {
                std::fs::remove_file(&key_next)
                    .with_context(|| format!("remove {}", key_next.display()))?;
                "discarded the key of an interrupted certificate renewal"
            }
        };
        sync_dir(dir_of(&self.cert))?;
        Ok(Some(done))
    }

    /// Recovers, then reads the certificate and the key (refusing a key
    /// others can read, or one that does not match the certificate).
    pub fn load(&self) -> Result<(Vec<u8>, Vec<u8>)> {
        if let Some(what) = self.recover()? {
            tracing::warn!(cert = %self.cert.display(), "{what}");
        }
        let cert =
            std::fs::read(&self.cert).with_context(|| format!("read {}", self.cert.display()))?;
        let key = oi_proto::fsutil::read_secret_file(&self.key)?;
        // Keys this code writes are PKCS#8; one made by hand in another
        // format is left to rustls, which reads more of them.
        let pkcs8 = std::str::from_utf8(&key).is_ok_and(|k| rcgen::KeyPair::from_pem(k).is_ok());
        if !pkcs8 {
            return Ok((cert, key));
        }
        check_pair(&cert, &key).with_context(|| {
            format!(
                "{} does not belong to {}: join this hypervisor again (`oi hypervisor join`)",
                self.key.display(),
                self.cert.display()
            )
        })?;
        Ok((cert, key))
    }

    /// Replaces the pair (or writes it the first time): both under new
    /// names, then renamed key first. The key is written 0600, the
    /// certificate 0644.
    pub fn replace(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<()> {
        check_pair(cert_pem, key_pem).context("the new certificate is not for the new key")?;
        let (key_next, cert_next) = (next_of(&self.key), next_of(&self.cert));
        oi_proto::fsutil::write_atomic(&key_next, key_pem, 0o600)?;
        oi_proto::fsutil::write_atomic(&cert_next, cert_pem, 0o644)?;
        rename(&key_next, &self.key)?;
        rename(&cert_next, &self.cert)?;
        sync_dir(dir_of(&self.cert))
    }
}

/// The DER SubjectPublicKeyInfo of a certificate (the first of a PEM
/// bundle).
fn cert_spki(cert_pem: &[u8]) -> Result<Vec<u8>> {
    let der = oi_proto::tls::parse_certs(cert_pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der[0])
        .map_err(|e| anyhow!("parse certificate: {e}"))?;
    Ok(cert.tbs_certificate.subject_pki.raw.to_vec())
}

/// Checks that `key_pem` is the private key of the certificate `cert_pem`.
pub fn check_pair(cert_pem: &[u8], key_pem: &[u8]) -> Result<()> {
    let key = std::str::from_utf8(key_pem)
        .ok()
        .and_then(|k| rcgen::KeyPair::from_pem(k).ok())
        .ok_or_else(|| anyhow!("the private key is not a PEM key"))?;
    if cert_spki(cert_pem)? != key.subject_public_key_info() {
        bail!("the private key does not match the certificate");
    }
    Ok(())
}

/// A new private key (PEM) and a certificate signing request for it with
/// common name `name`. The coordinator takes only the public key from it.
pub fn new_key_and_csr(name: &str) -> Result<(String, String)> {
    let key = rcgen::KeyPair::generate().context("generate private key")?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let csr = params
        .serialize_request(&key)
        .context("make certificate signing request")?
        .pem()
        .context("encode certificate signing request")?;
    Ok((key.serialize_pem(), csr))
}

/// What a certificate says about itself that the agent needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub common_name: String,
    /// Lowercase hex, as the coordinator records it.
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// Reads a DER certificate.
pub fn cert_info(der: &[u8]) -> Result<CertInfo> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| anyhow!("parse certificate: {e}"))?;
    let at = |t: x509_parser::time::ASN1Time| {
        UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
    };
    let serial = match cert.tbs_certificate.raw_serial() {
        [0, rest @ ..] if !rest.is_empty() => rest,
        other => other,
    };
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok(CertInfo {
        common_name,
        serial: hex::encode(serial),
        not_before: at(cert.validity().not_before),
        not_after: at(cert.validity().not_after),
    })
}

impl CertInfo {
    /// When to renew: once less than a third of the lifetime is left.
    pub fn renew_at(&self) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_after - lifetime / 3
    }

    /// How long until [`CertInfo::renew_at`]; zero when due.
    pub fn until_renewal(&self, now: SystemTime) -> Duration {
        self.renew_at().duration_since(now).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A self-signed certificate and its key, valid `from`..`to` (Unix s).
    fn pair(name: &str, from: i64, to: i64) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
        p.not_after = time::OffsetDateTime::from_unix_timestamp(to).unwrap();
        let cert = p.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn renewal_is_due_when_a_third_is_left() {
        let (cert, _) = pair("hv", 1_000, 1_900);
        let der = oi_proto::tls::parse_certs(cert.as_bytes()).unwrap();
        let info = cert_info(&der[0]).unwrap();
        assert_eq!(info.common_name, "hv");
        let t = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(info.renew_at(), t(1_600));
        assert_eq!(info.until_renewal(t(1_000)), Duration::from_secs(600));
        assert_eq!(info.until_renewal(t(1_600)), Duration::ZERO);
        assert_eq!(info.until_renewal(t(5_000)), Duration::ZERO);
    }

    #[test]
    fn csr_carries_the_key() {
        let (key_pem, csr) = new_key_and_csr("hv-1").unwrap();
        let params = rcgen::CertificateSigningRequestParams::from_pem(&csr).unwrap();
        let key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
        use rcgen::PublicKeyData;
        assert_eq!(params.public_key.der_bytes(), key.der_bytes());
    }

    #[test]
    fn replace_writes_a_matching_pair_with_modes() {
        let dir = tempfile::tempdir().unwrap();
        let files = IdentityFiles::in_dir(dir.path());
        let (c1, k1) = pair("hv", 0, 4_000_000_000);
        files.replace(c1.as_bytes(), k1.as_bytes()).unwrap();
        assert_eq!(
            files.load().unwrap(),
            (c1.clone().into(), k1.clone().into())
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&files.key), 0o600);
        assert_eq!(mode(&files.cert), 0o644);
        // A mismatched pair is refused before anything is written.
        let (c2, k2) = pair("hv", 0, 4_000_000_000);
        assert!(files.replace(c2.as_bytes(), k1.as_bytes()).is_err());
        files.replace(c2.as_bytes(), k2.as_bytes()).unwrap();
        assert_eq!(files.load().unwrap().0, c2.as_bytes());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "no leftovers: {names:?}");
    }

    #[test]
    fn a_crash_at_any_step_leaves_a_matching_pair() {
        let (old_c, old_k) = pair("hv", 0, 4_000_000_000);
        let (new_c, new_k) = pair("hv", 0, 4_000_000_000);
        // The files after a crash at each step of `replace`, and the pair
        // that must load.
        type Step = fn(&IdentityFiles, &str, &str);
        let steps: Vec<(&str, Step, bool)> = vec![
            ("nothing written", |_, _, _| {}, false),
            (
                "key.next written",
                |f, _, k| std::fs::write(next_of(&f.key), k).unwrap(),
                false,
            ),
            (
                "both .next written",
                |f, c, k| {
                    std::fs::write(next_of(&f.key), k).unwrap();
                    std::fs::write(next_of(&f.cert), c).unwrap();
                },
                true,
            ),
            (
                "key renamed",
                |f, c, k| {
                    std::fs::write(&f.key, k).unwrap();
                    std::fs::write(next_of(&f.cert), c).unwrap();
                },
                true,
            ),
        ];
        for (what, crash, want_new) in steps {
            let dir = tempfile::tempdir().unwrap();
            let files = IdentityFiles::in_dir(dir.path());
            files.replace(old_c.as_bytes(), old_k.as_bytes()).unwrap();
            crash(&files, &new_c, &new_k);
            if files.key.exists() {
                std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600))
                    .unwrap();
            }
            for p in [next_of(&files.key)] {
                if p.exists() {
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
                }
            }
            let (c, k) = files.load().unwrap_or_else(|e| panic!("{what}: {e:#}"));
            let want = if want_new {
                (&new_c, &new_k)
            } else {
                (&old_c, &old_k)
            };
            assert_eq!(
                (c, k),
                (want.0.clone().into(), want.1.clone().into()),
                "{what}"
            );
            assert!(!next_of(&files.key).exists() && !next_of(&files.cert).exists());
        }
        // A pair that does not match is refused with a way out.
        let dir = tempfile::tempdir().unwrap();
        let files = IdentityFiles::in_dir(dir.path());
        files.replace(old_c.as_bytes(), old_k.as_bytes()).unwrap();
        std::fs::write(&files.cert, &new_c).unwrap();
        let err = format!("{:#}", files.load().unwrap_err());
        assert!(err.contains("oi hypervisor join"), "{err}");
    }
}
