//! The coordinator's own certificate authority for the agent link and the
//! admin API. It signs the coordinator's serving certificates, one client
//! certificate per hypervisor (organization [`HYPERVISOR_ORG`], common name
//! the hypervisor's name) and administrators' client certificates
//! (organization [`ADMIN_ORG`], common name the admin's name).
//!
//! Files in the data directory: `link-ca.pem` (public) and `link-ca.key`
//! (0600, refused when others can read it).

use anyhow::{anyhow, bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

/// Lifetime of agent client certificates. Renewal over the link comes with
/// the identity lifecycle; until then certificates last a year.
pub const AGENT_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
const SERVER_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Lifetime of admin client certificates.
pub const ADMIN_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// Subject organization of hypervisor (agent) client certificates.
pub const HYPERVISOR_ORG: &str = "oneinfra:hypervisors";
/// Subject organization of administrators' client certificates: the only
/// ones the admin API accepts.
pub const ADMIN_ORG: &str = "oneinfra:admins";
const DEFAULT_ORG: &str = "oneinfra";

const CA_CERT_FILE: &str = "link-ca.pem";
const CA_KEY_FILE: &str = "link-ca.key";

/// A certificate and its private key, both PEM. `Debug` hides the key.
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IssuedCert(key hidden)")
    }
}

pub struct LinkCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for LinkCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkCa(key hidden)")
    }
}

fn set_validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = time::OffsetDateTime::now_utc();
    // Tolerate clock skew between machines.
    params.not_before = now - Duration::from_secs(3600);
    params.not_after = now + lifetime;
    params.serial_number = Some(SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
}

fn dn(organization: &str, common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, organization);
    dn.push(DnType::CommonName, common_name);
    dn
}

impl LinkCa {
    /// Creates a new CA in memory.
    pub fn generate() -> Result<Self> {
        let key = KeyPair::generate().context("generate CA key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(DEFAULT_ORG, "oneinfra link CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, CA_LIFETIME);
        let cert = params.self_signed(&key).context("self-sign CA")?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads the CA from `dir`, creating it on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => {
                let cert_pem = std::fs::read_to_string(&cert_path)
                    .with_context(|| format!("read {}", cert_path.display()))?;
                let key_pem = oi_proto::fsutil::read_secret_file(&key_path)?;
                let key_pem = String::from_utf8(key_pem).context("CA key is not PEM text")?;
                let key = KeyPair::from_pem(&key_pem)
                    .with_context(|| format!("parse {}", key_path.display()))?;
                let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
                    .with_context(|| format!("parse {}", cert_path.display()))?;
                Ok(Self { cert_pem, issuer })
            }
            (false, false) => {
                let ca = Self::generate()?;
                oi_proto::fsutil::write_atomic(
                    &key_path,
                    ca.issuer.key().serialize_pem().as_bytes(),
                    0o600,
                )?;
                oi_proto::fsutil::write_atomic(&cert_path, ca.cert_pem.as_bytes(), 0o644)?;
                tracing::info!(path = %cert_path.display(), "created link CA");
                Ok(ca)
            }
            _ => bail!(
                "only one of {} and {} exists; restore the missing file from backup, or remove \
                 both to create a new CA (every agent then needs a new certificate)",
                cert_path.display(),
                key_path.display()
            ),
        }
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The coordinator's serving certificate for the given names/addresses.
    pub fn issue_server(&self, names: &[String]) -> Result<IssuedCert> {
        let key = KeyPair::generate().context("generate server key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(DEFAULT_ORG, "oneinfra coordinator");
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(
                    n.clone()
                        .try_into()
                        .map_err(|e| anyhow!("server name {n:?}: {e}"))?,
                )),
            })
            .collect::<Result<_>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        set_validity(&mut params, SERVER_CERT_LIFETIME);
        let cert = params
            .signed_by(&key, &self.issuer)
            .context("sign server certificate")?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A client certificate for hypervisor `name`, with a fresh key.
    /// Used for bootstrapping and tests; `oi hypervisor join` signs a CSR
    /// instead so that the key never leaves the machine.
    pub fn issue_agent(&self, name: &str) -> Result<IssuedCert> {
        validate_hypervisor_name(name)?;
        self.issue_client(HYPERVISOR_ORG, name, AGENT_CERT_LIFETIME)
            .context("issue agent certificate")
    }

    /// A client certificate for the admin API, with a fresh key: subject
    /// organization [`ADMIN_ORG`], common name `name`.
    pub fn issue_admin(&self, name: &str) -> Result<IssuedCert> {
        validate_admin_name(name)?;
        self.issue_client(ADMIN_ORG, name, ADMIN_CERT_LIFETIME)
            .context("issue admin certificate")
    }

    fn issue_client(&self, org: &str, name: &str, lifetime: Duration) -> Result<IssuedCert> {
        let key = KeyPair::generate().context("generate key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(org, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        set_validity(&mut params, lifetime);
        let cert = params.signed_by(&key, &self.issuer).context("sign")?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Admin names (certificate common names) are short printable text, e.g.
/// `admin` or `alice@example.com`.
pub fn validate_admin_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_graphic())
        && !name.contains([',', '+', '=', '"', '\\', '<', '>', ';']);
    if !ok {
        bail!(
            "invalid admin name {name:?}: use 1-64 printable ASCII characters without spaces \
             or any of , + = \" \\ < > ;"
        );
    }
    Ok(())
}

/// Hypervisor names are DNS-1123 labels: they appear in certificates,
/// file names and labels.
pub fn validate_hypervisor_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        bail!(
            "invalid hypervisor name {name:?}: use 1-63 lowercase letters, digits and '-', \
             starting and ending with a letter or digit"
        );
    }
    Ok(())
}

/// The common name of a peer certificate (DER).
pub fn common_name(der: &[u8]) -> Result<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| anyhow!("parse peer certificate: {e}"))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .ok_or_else(|| anyhow!("peer certificate has no common name"))?;
    Ok(cn
        .as_str()
        .map_err(|e| anyhow!("peer certificate common name: {e}"))?
        .to_string())
}

/// The subject organizations of a peer certificate (DER).
pub fn organizations(der: &[u8]) -> Result<Vec<String>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| anyhow!("parse peer certificate: {e}"))?;
    cert.subject()
        .iter_organization()
        .map(|o| {
            o.as_str()
                .map(str::to_string)
                .map_err(|e| anyhow!("peer certificate organization: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_agent_cert_carries_the_name() {
        let ca = LinkCa::generate().unwrap();
        let issued = ca.issue_agent("hv-1").unwrap();
        let der = oi_proto::tls::parse_certs(issued.cert_pem.as_bytes()).unwrap();
        assert_eq!(common_name(&der[0]).unwrap(), "hv-1");
        assert_eq!(organizations(&der[0]).unwrap(), [HYPERVISOR_ORG]);
        assert!(format!("{issued:?}").contains("hidden"));
    }

    #[test]
    fn issued_admin_cert_carries_the_admin_org() {
        let ca = LinkCa::generate().unwrap();
        let issued = ca.issue_admin("alice@example.com").unwrap();
        let der = oi_proto::tls::parse_certs(issued.cert_pem.as_bytes()).unwrap();
        assert_eq!(common_name(&der[0]).unwrap(), "alice@example.com");
        assert_eq!(organizations(&der[0]).unwrap(), [ADMIN_ORG]);
        for bad in ["", "a b", "a,b", &"x".repeat(65)] {
            assert!(ca.issue_admin(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_validated() {
        for ok in ["a", "hv-1", "x0"] {
            validate_hypervisor_name(ok).unwrap();
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"x".repeat(64)] {
            assert!(validate_hypervisor_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ca_persists_and_key_mode_is_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = LinkCa::load_or_create(dir.path()).unwrap();
        let b = LinkCa::load_or_create(dir.path()).unwrap();
        assert_eq!(a.cert_pem(), b.cert_pem());
        let key = dir.path().join(CA_KEY_FILE);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = LinkCa::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
