//! Certificate facts both sides need: the hash a joining machine pins,
//! and the rule for the hypervisor names certificates carry.

use anyhow::{anyhow, bail, Result};
use sha2::Digest;

/// `sha256:<hex>` of a certificate's SubjectPublicKeyInfo (DER).
pub fn ca_cert_hash(der: &[u8]) -> Result<String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| anyhow!("parse certificate: {e}"))?;
    let digest = sha2::Sha256::digest(cert.tbs_certificate.subject_pki.raw);
    Ok(format!("sha256:{}", hex::encode(digest)))
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
