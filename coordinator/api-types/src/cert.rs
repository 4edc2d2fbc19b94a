//! Certificate facts both sides need: the hash a joining machine pins.

use anyhow::{anyhow, Result};
use sha2::Digest;

/// `sha256:<hex>` of a certificate's SubjectPublicKeyInfo (DER).
pub fn ca_cert_hash(der: &[u8]) -> Result<String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| anyhow!("parse certificate: {e}"))?;
    let digest = sha2::Sha256::digest(cert.tbs_certificate.subject_pki.raw);
    Ok(format!("sha256:{}", hex::encode(digest)))
}
