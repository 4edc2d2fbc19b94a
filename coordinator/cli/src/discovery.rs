//! Node discovery, as kubeadm's token discovery (pure): a joining worker
//! reads `kube-public/cluster-info` without trusting the server, then
//! trusts what it read only if
//! * the controller-manager's bootstrap signer signed it with the join
//!   token (`jws-kubeconfig-<id>`: a detached HS256 JWS keyed by the token
//!   secret, whose header names the token id), and
//! * one of its CA certificates' public key hashes to `--ca-cert-hash`.
//!
//! A token the cluster does not hold (unknown, expired or revoked) has no
//! signature there: the worker cannot tell these apart, and is not told.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use oi_api_types::cert::ca_cert_hash;
use std::collections::BTreeMap;

/// What a worker trusts once discovery checks out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterInfo {
    /// `https://HOST:PORT`.
    pub server: String,
    /// The CA bundle: the cluster CA, then the kubelet-client CA.
    pub ca_bundle_pem: String,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    #[error(
        "the cluster does not know this join token (unknown, expired or revoked): create one on \
         the coordinator with `oi cluster token create CLUSTER` and use the line it prints"
    )]
    UnknownToken,
    #[error(
        "cluster-info's signature for this token does not verify: the server is not the \
         cluster the token belongs to, or the token's secret is wrong; nothing was written"
    )]
    BadSignature,
    #[error(
        "the cluster's CA does not match --ca-cert-hash (it offers {seen}): check the endpoint \
         and the hash printed by `oi cluster token create`; nothing was written"
    )]
    PinMismatch { seen: String },
    #[error("cluster-info is malformed: {0}")]
    Malformed(String),
}

/// The subset of a kubeconfig discovery reads.
#[derive(serde::Deserialize)]
struct Kubeconfig {
    #[serde(default)]
    clusters: Vec<NamedCluster>,
}

#[derive(serde::Deserialize)]
struct NamedCluster {
    cluster: Cluster,
}

#[derive(serde::Deserialize)]
struct Cluster {
    server: String,
    #[serde(rename = "certificate-authority-data")]
    ca_data: String,
}

/// Checks `cluster-info`'s data (its ConfigMap `data`) against the token
/// and the pin.
pub fn verify(
    data: &BTreeMap<String, String>,
    token_id: &str,
    token_secret: &str,
    pin: &str,
) -> Result<ClusterInfo, DiscoveryError> {
    let content = data
        .get("kubeconfig")
        .ok_or_else(|| DiscoveryError::Malformed("no kubeconfig key".into()))?;
    let signature = data
        .get(&format!("jws-kubeconfig-{token_id}"))
        .ok_or(DiscoveryError::UnknownToken)?;
    if !signature_valid(signature, content, token_id, token_secret) {
        return Err(DiscoveryError::BadSignature);
    }
    // Signed by the token's holder: now it may be parsed.
    let cfg: Kubeconfig = yaml_serde::from_str(content)
        .map_err(|e| DiscoveryError::Malformed(format!("kubeconfig: {e}")))?;
    let [named] = &cfg.clusters[..] else {
        return Err(DiscoveryError::Malformed(format!(
            "{} clusters in its kubeconfig, want 1",
            cfg.clusters.len()
        )));
    };
    let bundle = STANDARD
        .decode(named.cluster.ca_data.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| DiscoveryError::Malformed("certificate-authority-data".into()))?;
    let certs = oi_proto::tls::parse_certs(bundle.as_bytes())
        .map_err(|e| DiscoveryError::Malformed(format!("CA certificates: {e}")))?;
    let hashes: Vec<String> = certs.iter().filter_map(|c| ca_cert_hash(c).ok()).collect();
    if !hashes.iter().any(|h| h == pin) {
        return Err(DiscoveryError::PinMismatch {
            seen: hashes.join(", "),
        });
    }
    if !named.cluster.server.starts_with("https://") {
        return Err(DiscoveryError::Malformed(format!(
            "server {:?} is not https",
            named.cluster.server
        )));
    }
    Ok(ClusterInfo {
        server: named.cluster.server.clone(),
        ca_bundle_pem: bundle,
    })
}

/// A detached compact JWS (`header..signature`) over `content`, HS256
/// keyed by the token secret, its header naming the token id. The MAC is
/// checked in constant time.
pub fn signature_valid(detached: &str, content: &str, token_id: &str, token_secret: &str) -> bool {
    let mut parts = detached.split('.');
    let (Some(header), Some(""), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(header_json) = URL_SAFE_NO_PAD.decode(header) else {
        return false;
    };
    let Ok(h) = serde_json::from_slice::<serde_json::Value>(&header_json) else {
        return false;
    };
    if h["alg"] != "HS256" || h["kid"] != token_id {
        return false;
    }
    let Ok(sig) = URL_SAFE_NO_PAD.decode(sig) else {
        return false;
    };
    let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(content));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token_secret.as_bytes());
    ring::hmac::verify(&key, input.as_bytes(), &sig).is_ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// What the bootstrap signer writes (go-jose's compact form, payload cut).
    pub(crate) fn sign(content: &str, id: &str, secret: &str) -> String {
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"HS256","kid":"{id}"}}"#));
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(content));
        let tag = ring::hmac::sign(&key, input.as_bytes());
        format!("{header}..{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    fn ca() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let hash = ca_cert_hash(cert.der()).unwrap();
        (cert.pem(), hash)
    }

    fn kubeconfig(server: &str, bundle: &str) -> String {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "", "cluster": {
                "server": server,
                "certificate-authority-data": STANDARD.encode(bundle),
            }}],
        })
        .to_string()
    }

    #[test]
    fn discovery_in_a_table() {
        let (ca1, pin1) = ca();
        let (ca2, pin2) = ca();
        let (_, other) = ca();
        let bundle = format!("{ca1}{ca2}");
        let content = kubeconfig("https://192.0.2.1:30000", &bundle);
        let (id, secret) = ("abcdef", "0123456789abcdef");
        let good = BTreeMap::from([
            ("kubeconfig".to_string(), content.clone()),
            (format!("jws-kubeconfig-{id}"), sign(&content, id, secret)),
        ]);
        let info = verify(&good, id, secret, &pin1).unwrap();
        assert_eq!(info.server, "https://192.0.2.1:30000");
        assert_eq!(info.ca_bundle_pem, bundle);
        // Either certificate of the bundle may be pinned (kubeadm: any).
        assert!(verify(&good, id, secret, &pin2).is_ok());
        assert!(matches!(
            verify(&good, id, secret, &other),
            Err(DiscoveryError::PinMismatch { .. })
        ));
        assert_eq!(
            verify(&good, "zzzzzz", secret, &pin1),
            Err(DiscoveryError::UnknownToken)
        );
        assert_eq!(
            verify(&good, id, "fedcba9876543210", &pin1),
            Err(DiscoveryError::BadSignature)
        );
        // The content changed after signing: refused before it is parsed.
        let mut tampered = good.clone();
        tampered.insert(
            "kubeconfig".into(),
            kubeconfig("https://203.0.113.9:443", &bundle),
        );
        assert_eq!(
            verify(&tampered, id, secret, &pin1),
            Err(DiscoveryError::BadSignature)
        );
        // A signature by another token's id, moved under this id.
        let mut moved = good.clone();
        moved.insert(
            format!("jws-kubeconfig-{id}"),
            sign(&content, "qqqqqq", secret),
        );
        assert_eq!(
            verify(&moved, id, secret, &pin1),
            Err(DiscoveryError::BadSignature)
        );
    }

    #[test]
    fn malformed_signatures_are_refused() {
        for bad in ["", "a.b.c", "a..b..c", "!!..!!", "e30..AAAA"] {
            assert!(
                !signature_valid(bad, "x", "abcdef", "0123456789abcdef"),
                "{bad}"
            );
        }
    }
}
