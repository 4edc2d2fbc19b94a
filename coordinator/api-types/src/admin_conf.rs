//! `admin.conf`: what `oi` needs to call the admin API — where it is, the
//! name on its serving certificate, the CA to trust and an admin client
//! certificate with its key. TOML, mode 0600 (it holds the key).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `https://HOST:PORT` of the admin API.
    pub endpoint: String,
    /// The name (or IP address) to check the API's certificate against.
    pub server_name: String,
    pub ca_pem: String,
    /// The admin client certificate and key. Both empty: connect without a
    /// client certificate (only unauthenticated RPCs will answer).
    #[serde(default)]
    pub cert_pem: String,
    #[serde(default)]
    pub key_pem: String,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("endpoint", &self.endpoint)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl AdminConfig {
    /// Reads and checks `path`, refusing a file that other users can read.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = oi_proto::fsutil::read_secret_file(path)?;
        let text = String::from_utf8(bytes)
            .with_context(|| format!("read {}: not UTF-8 text", path.display()))?;
        let conf: AdminConfig =
            toml::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        conf.check()
            .with_context(|| format!("check {}", path.display()))?;
        Ok(conf)
    }

    fn check(&self) -> Result<()> {
        if self.endpoint.trim().is_empty() {
            bail!("endpoint is empty: set it to https://HOST:PORT of the admin API");
        }
        if self.server_name.trim().is_empty() {
            bail!("server_name is empty: set it to a name on the coordinator's certificate");
        }
        if self.ca_pem.trim().is_empty() {
            bail!("ca_pem is empty: copy the coordinator's link-ca.pem into it");
        }
        if self.cert_pem.trim().is_empty() != self.key_pem.trim().is_empty() {
            bail!("only one of cert_pem and key_pem is set: set both, or neither");
        }
        Ok(())
    }

    pub fn has_client_cert(&self) -> bool {
        !self.cert_pem.trim().is_empty()
    }
}

impl AdminConfig {
    /// Writes these credentials to `path` (atomically, mode 0600).
    pub fn write(&self, path: &Path) -> Result<()> {
        self.check()?;
        let text = toml::to_string(self).context("serialize admin config")?;
        let text = format!(
            "# oneinfra admin credentials for `oi` (holds a private key: keep it 0600).\n\
             # Copy to ~/.config/oneinfra/admin.conf or pass `oi --config FILE`.\n{text}"
        );
        oi_proto::fsutil::write_atomic(path, text.as_bytes(), 0o600)
            .with_context(|| format!("write admin config {}", path.display()))
    }
}

/// The endpoint a client on this machine uses for an API bound to `bound`:
/// an unspecified address (0.0.0.0, ::) becomes the loopback address.
pub fn local_endpoint(bound: SocketAddr) -> String {
    let mut addr = bound;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("https://{addr}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn written_config_reads_back_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.conf");
        let key_pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        AdminConfig {
            endpoint: "https://127.0.0.1:7444".into(),
            server_name: "localhost".into(),
            ca_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            cert_pem: "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n".into(),
            key_pem: key_pem.into(),
        }
        .write(&path)
        .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let conf = AdminConfig::load(&path).unwrap();
        assert_eq!(conf.endpoint, "https://127.0.0.1:7444");
        assert_eq!(conf.key_pem, key_pem);
        assert!(conf.has_client_cert());
        assert!(!format!("{conf:?}").contains("PRIVATE KEY"));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = format!("{:#}", AdminConfig::load(&path).unwrap_err());
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn half_a_client_identity_is_refused() {
        let conf = AdminConfig {
            endpoint: "https://x:1".into(),
            server_name: "x".into(),
            ca_pem: "pem".into(),
            cert_pem: "cert".into(),
            key_pem: String::new(),
        };
        assert!(conf.check().unwrap_err().to_string().contains("both"));
    }

    #[test]
    fn local_endpoint_replaces_unspecified_addresses() {
        let cases = [
            ("0.0.0.0:7444", "https://127.0.0.1:7444"),
            ("[::]:7444", "https://[::1]:7444"),
            ("192.0.2.1:7444", "https://192.0.2.1:7444"),
        ];
        for (bound, want) in cases {
            assert_eq!(local_endpoint(bound.parse().unwrap()), want);
        }
    }
}
