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

/// Default lifetime of agent client certificates (`agent_cert_lifetime_secs`).
/// Agents renew theirs over the link when less than a third is left.
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

/// Sets the validity and a random serial; returns the serial as lowercase hex.
fn set_validity(params: &mut CertificateParams, lifetime: Duration) -> String {
    let now = time::OffsetDateTime::now_utc();
    // Tolerate clock skew between machines: an hour, or a quarter of a short
    // lifetime (tests), so that "a third of the lifetime left" stays later
    // than the moment of issue.
    params.not_before = now - Duration::from_secs(3600).min(lifetime / 4);
    params.not_after = now + lifetime;
    // 16 random bytes with the top bit clear: a positive INTEGER that DER
    // encodes without a leading zero, so its hex is the same everywhere.
    let mut serial = rand::random::<[u8; 16]>();
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    hex::encode(serial)
}

/// A certificate signed for a key held elsewhere (from a CSR).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCert {
    pub cert_pem: String,
    /// Lowercase hex, as [`cert_serial`] reads it back.
    pub serial: String,
    pub not_after_unix_ms: u64,
}

/// Why a CSR was not signed.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// Bad input: the name or the request.
    #[error("{0}")]
    Invalid(String),
    #[error("sign certificate: {0}")]
    Sign(String),
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
        let _serial = set_validity(&mut params, CA_LIFETIME);
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

    /// `sha256:<hex>` of the CA certificate's SubjectPublicKeyInfo (DER), the
    /// value joining hypervisors pin (`--ca-cert-hash`, as kubeadm's).
    pub fn cert_hash(&self) -> Result<String> {
        let der = oi_proto::tls::parse_certs(self.cert_pem.as_bytes())?;
        ca_cert_hash(&der[0])
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
        let _serial = set_validity(&mut params, SERVER_CERT_LIFETIME);
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

    /// A client certificate for hypervisor `name` for the public key of
    /// `csr_pem`, valid for `lifetime`. The common name and organization are
    /// set here; everything else the request asks for (subject, extensions)
    /// is ignored. The request's signature is checked, so it proves that the
    /// caller holds the key.
    pub fn sign_agent_csr(
        &self,
        name: &str,
        csr_pem: &str,
        lifetime: Duration,
    ) -> Result<SignedCert, CsrError> {
        validate_hypervisor_name(name).map_err(|e| CsrError::Invalid(e.to_string()))?;
        let public_key =
            csr_public_key(csr_pem).map_err(|e| CsrError::Invalid(format!("{e:#}")))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(HYPERVISOR_ORG, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let serial = set_validity(&mut params, lifetime);
        let not_after_unix_ms = (params.not_after.unix_timestamp_nanos() / 1_000_000) as u64;
        let cert = params
            .signed_by(&public_key, &self.issuer)
            .map_err(|e| CsrError::Sign(e.to_string()))?;
        Ok(SignedCert {
            cert_pem: cert.pem(),
            serial,
            not_after_unix_ms,
        })
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
        let _serial = set_validity(&mut params, lifetime);
        let cert = params.signed_by(&key, &self.issuer).context("sign")?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The public key of a PEM certificate signing request, after checking the
/// request's self-signature.
fn csr_public_key(csr_pem: &str) -> Result<rcgen::SubjectPublicKeyInfo> {
    use rustls::pki_types::pem::PemObject;
    use x509_parser::prelude::FromDer;
    let der = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|e| anyhow!("the certificate signing request is not PEM: {e}"))?;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        .map_err(|e| anyhow!("parse the certificate signing request: {e}"))?;
    csr.verify_signature().map_err(|e| {
        anyhow!("the certificate signing request's signature does not verify ({e:?})")
    })?;
    rcgen::SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
        .map_err(|e| anyhow!("unsupported key in the certificate signing request: {e}"))
}

pub use oi_api_types::cert::ca_cert_hash;

/// A certificate's serial number, lowercase hex without leading zero bytes.
pub fn cert_serial(der: &[u8]) -> Result<String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| anyhow!("parse certificate: {e}"))?;
    let bytes = cert.tbs_certificate.raw_serial();
    let trimmed = match bytes {
        [0, rest @ ..] if !rest.is_empty() => rest,
        other => other,
    };
    Ok(hex::encode(trimmed))
}

/// A certificate's notAfter, in Unix milliseconds.
pub fn cert_not_after_unix_ms(der: &[u8]) -> Result<u64> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| anyhow!("parse certificate: {e}"))?;
    Ok((cert.validity().not_after.timestamp().max(0) as u64) * 1000)
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

pub use oi_api_types::cert::validate_hypervisor_name;

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
    use rcgen::PublicKeyData;

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
    fn csr_signing_sets_name_and_org_and_keeps_only_the_key() {
        let ca = LinkCa::generate().unwrap();
        let key = KeyPair::generate().unwrap();
        // The request asks for another name, an admin organization and a
        // server SAN: none of it may reach the certificate.
        let mut asked = CertificateParams::new(vec!["evil.example.com".to_string()]).unwrap();
        asked.distinguished_name = dn(ADMIN_ORG, "someone-else");
        let csr = asked.serialize_request(&key).unwrap().pem().unwrap();
        let signed = ca
            .sign_agent_csr("hv-1", &csr, Duration::from_secs(3600))
            .unwrap();
        let der = oi_proto::tls::parse_certs(signed.cert_pem.as_bytes()).unwrap();
        assert_eq!(common_name(&der[0]).unwrap(), "hv-1");
        assert_eq!(organizations(&der[0]).unwrap(), [HYPERVISOR_ORG]);
        assert_eq!(cert_serial(&der[0]).unwrap(), signed.serial);
        let (_, cert) = x509_parser::parse_x509_certificate(&der[0]).unwrap();
        assert!(cert.subject_alternative_name().unwrap().is_none());
        assert_eq!(
            cert.tbs_certificate.subject_pki.raw,
            key.subject_public_key_info().as_slice(),
            "the certificate carries the requester's key"
        );
        let not_after = cert_not_after_unix_ms(&der[0]).unwrap();
        assert_eq!(not_after / 1000, signed.not_after_unix_ms / 1000);
        // The leaf chains to the CA and works as a link identity.
        oi_proto::tls::Identity::from_pem(
            signed.cert_pem.as_bytes(),
            key.serialize_pem().as_bytes(),
        )
        .unwrap();

        // Refusals: a bad name, junk, and a request whose signature is not
        // the key's own.
        assert!(matches!(
            ca.sign_agent_csr("Bad_Name", &csr, Duration::from_secs(60)),
            Err(CsrError::Invalid(_))
        ));
        assert!(matches!(
            ca.sign_agent_csr("hv-1", "junk", Duration::from_secs(60)),
            Err(CsrError::Invalid(_))
        ));
        use rustls::pki_types::pem::PemObject;
        let csr_der =
            rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())
                .unwrap();
        let mut tampered = csr_der.to_vec();
        let last = tampered.len() - 1;
        tampered[last] ^= 0x01; // flip a bit of the signature
        let tampered_pem = pem_of("CERTIFICATE REQUEST", &tampered);
        let err = ca
            .sign_agent_csr("hv-1", &tampered_pem, Duration::from_secs(60))
            .unwrap_err()
            .to_string();
        assert!(err.contains("signature"), "{err}");
    }

    fn pem_of(label: &str, der: &[u8]) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn ca_hash_is_the_sha256_of_the_subject_public_key_info() {
        use sha2::Digest;
        let ca = LinkCa::generate().unwrap();
        let hash = ca.cert_hash().unwrap();
        let spki = ca.issuer.key().subject_public_key_info();
        assert_eq!(
            hash,
            format!("sha256:{}", hex::encode(sha2::Sha256::digest(&spki)))
        );
        assert_ne!(hash, LinkCa::generate().unwrap().cert_hash().unwrap());
    }

    #[test]
    fn short_lifetimes_backdate_by_a_quarter() {
        let mut p = CertificateParams::default();
        set_validity(&mut p, Duration::from_secs(40));
        assert_eq!((p.not_after - p.not_before).whole_seconds(), 50);
        set_validity(&mut p, AGENT_CERT_LIFETIME);
        assert_eq!(
            (p.not_after - p.not_before).whole_seconds() as u64,
            AGENT_CERT_LIFETIME.as_secs() + 3600
        );
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
