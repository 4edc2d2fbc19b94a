//! Talking to a coordinator before trusting it: `oi hypervisor join` knows
//! no CA yet, only the hash of the CA's public key (`--ca-cert-hash
//! sha256:<hex>`, as kubeadm's). [`PinnedCa`] takes the chain the server
//! presents, finds the CA certificate whose SubjectPublicKeyInfo hashes to
//! the pin and verifies the server's certificate (name, validity,
//! signature) against that CA alone. Anything else fails the TLS handshake,
//! so nothing (no token, no CSR) is sent to a server that does not prove
//! it holds the pinned CA's trust.

use super::exit::{one_line, CliError, CliResult, Exit};
use oi_api_types::cert::ca_cert_hash;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// Checks a `--ca-cert-hash` value; returns it normalized (lowercase).
pub fn parse_pin(pin: &str) -> CliResult<String> {
    let hex = pin.trim().strip_prefix("sha256:").unwrap_or("");
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CliError::new(
            Exit::Invalid,
            format!(
                "--ca-cert-hash {pin:?} is not sha256:<64 hex digits>: copy it from the join \
                 command `oi hypervisor token create` printed"
            ),
        ));
    }
    Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
}

/// What the verifier saw, for the error message of a refusal.
#[derive(Debug, Default)]
pub struct Seen {
    /// Hashes of the certificates the server sent besides its own; set
    /// when none matched.
    pub mismatch: Option<Vec<String>>,
    /// The pinned CA was there, but the server's certificate did not verify
    /// against it.
    pub leaf: Option<rustls::Error>,
}

#[derive(Debug)]
pub struct PinnedCa {
    pin: String,
    provider: Arc<CryptoProvider>,
    seen: Arc<Mutex<Seen>>,
}

impl PinnedCa {
    pub fn new(pin: &str) -> Self {
        Self {
            pin: pin.to_string(),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            seen: Default::default(),
        }
    }

    pub fn seen(&self) -> Arc<Mutex<Seen>> {
        self.seen.clone()
    }
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let hashes: Vec<(String, &CertificateDer<'_>)> = intermediates
            .iter()
            .filter_map(|c| ca_cert_hash(c).ok().map(|h| (h, c)))
            .collect();
        let Some((_, ca)) = hashes.iter().find(|(h, _)| *h == self.pin) else {
            self.seen.lock().unwrap_or_else(|e| e.into_inner()).mismatch =
                Some(hashes.iter().map(|(h, _)| h.clone()).collect());
            return Err(rustls::Error::General(
                "the coordinator's CA does not match --ca-cert-hash".into(),
            ));
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(ca.to_vec()))?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .inspect_err(|e| {
                self.seen.lock().unwrap_or_else(|e| e.into_inner()).leaf = Some(e.clone());
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Splits `HOST:PORT` (IPv6 hosts in brackets).
pub fn split_host_port(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// A gRPC channel to `addr` (`HOST:PORT`) over TLS checked against the CA
/// hash `pin`; HOST must be a name on the coordinator's certificate.
pub async fn connect(addr: &str, pin: &str) -> CliResult<Channel> {
    let (host, _) = split_host_port(addr).ok_or_else(|| {
        CliError::new(
            Exit::Invalid,
            format!("--coordinator {addr:?} is not HOST:PORT, e.g. 192.0.2.1:7444"),
        )
    })?;
    let server_name = ServerName::try_from(host.clone()).map_err(|_| {
        CliError::new(
            Exit::Invalid,
            format!("--coordinator {addr:?}: {host:?} is not a DNS name or IP address"),
        )
    })?;
    let verifier = Arc::new(PinnedCa::new(pin));
    let seen = verifier.seen();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CliError::new(Exit::Error, format!("configure TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tls = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let target = addr.to_string();
    let connector = tower::service_fn(move |_: Uri| {
        let (tls, target, server_name) = (tls.clone(), target.clone(), server_name.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(&target).await?;
            let stream = tls.connect(server_name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    // The scheme is http: TLS is the connector's, not tonic's.
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| CliError::new(Exit::Invalid, format!("--coordinator {addr:?}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(RPC_TIMEOUT);
    match endpoint.connect_with_connector(connector).await {
        Ok(channel) => Ok(channel),
        Err(e) => {
            let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
            Err(match seen {
                Seen {
                    mismatch: Some(presented),
                    ..
                } => mismatch_error(addr, pin, &presented),
                Seen {
                    leaf: Some(leaf), ..
                } => leaf_error(addr, &host, &leaf),
                _ => CliError::new(
                    Exit::Unavailable,
                    format!(
                        "cannot reach the coordinator at {addr}: {}; check --coordinator (the \
                         address in the printed join command) and that this machine can reach it",
                        one_line(&e)
                    ),
                ),
            })
        }
    }
}

/// The refusal when the pinned CA is there but the server's own
/// certificate does not verify against it.
pub fn leaf_error(addr: &str, host: &str, e: &rustls::Error) -> CliError {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::NotValidForName)
        | rustls::Error::InvalidCertificate(C::NotValidForNameContext { .. }) => CliError::new(
            Exit::Invalid,
            format!(
                "the coordinator's certificate is not valid for {host:?} ({e}): use the address                  in the join command `oi hypervisor token create` printed, or add {host:?} to the                  coordinator's server_names. Nothing was sent"
            ),
        ),
        other => CliError::new(
            Exit::Untrusted,
            format!(
                "refusing to join: the coordinator at {addr} presented the pinned CA, but a                  certificate that does not verify against it ({other}). It may be an impostor.                  Nothing was sent"
            ),
        ),
    }
}

/// The refusal when the presented CA is not the pinned one.
pub fn mismatch_error(addr: &str, pin: &str, presented: &[String]) -> CliError {
    let found = match presented {
        [] => "no CA certificate".to_string(),
        [one] => format!("a CA with hash {one}"),
        many => format!("CAs with hashes {}", many.join(", ")),
    };
    CliError::new(
        Exit::Untrusted,
        format!(
            "refusing to join: the coordinator at {addr} presented {found}, but --ca-cert-hash is \
             {pin}. The coordinator may be an impostor, or the hash was mistyped: compare it with \
             the join command `oi hypervisor token create` printed on the coordinator. Nothing \
             was sent"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_and_addresses_are_checked() {
        let hex = "AB".repeat(32);
        assert_eq!(
            parse_pin(&format!("sha256:{hex}")).unwrap(),
            format!("sha256:{}", hex.to_lowercase())
        );
        for bad in ["", "ab", "sha1:abcd", &format!("sha256:{}", "g".repeat(64))] {
            assert_eq!(parse_pin(bad).unwrap_err().exit, Exit::Invalid, "{bad}");
        }
        assert_eq!(
            split_host_port("192.0.2.1:7444"),
            Some(("192.0.2.1".into(), 7444))
        );
        assert_eq!(split_host_port("[::1]:7444"), Some(("::1".into(), 7444)));
        assert_eq!(split_host_port("host"), None);
        assert_eq!(split_host_port(":1"), None);
    }

    /// The verifier against chains a server could present.
    #[test]
    fn only_a_leaf_of_the_pinned_ca_for_the_right_name_passes() {
        use oi_coordinator::link_pki::LinkCa;
        let der = |pem: &str| oi_proto::tls::parse_certs(pem.as_bytes()).unwrap();
        let ca = LinkCa::generate().unwrap();
        let other = LinkCa::generate().unwrap();
        let ca_der = der(ca.cert_pem()).remove(0);
        let other_der = der(other.cert_pem()).remove(0);
        let pin = ca.cert_hash().unwrap();
        let leaf = der(&ca.issue_server(&["localhost".into()]).unwrap().cert_pem).remove(0);
        let forged = der(&other.issue_server(&["localhost".into()]).unwrap().cert_pem).remove(0);
        let name = |n: &str| ServerName::try_from(n.to_string()).unwrap();
        let verify =
            |leaf: &CertificateDer<'static>, chain: &[CertificateDer<'static>], host: &str| {
                let v = PinnedCa::new(&pin);
                let r = v.verify_server_cert(leaf, chain, &name(host), &[], UnixTime::now());
                let seen = std::mem::take(&mut *v.seen.lock().unwrap());
                (r.is_ok(), seen)
            };
        let (ok, _) = verify(&leaf, std::slice::from_ref(&ca_der), "localhost");
        assert!(ok, "the real coordinator");
        // Another CA: a mismatch, with what was presented.
        let (ok, seen) = verify(&forged, std::slice::from_ref(&other_der), "localhost");
        assert!(!ok);
        assert_eq!(seen.mismatch, Some(vec![other.cert_hash().unwrap()]));
        // No CA in the chain at all.
        let (ok, seen) = verify(&leaf, &[], "localhost");
        assert!(!ok && seen.mismatch == Some(vec![]));
        // The pinned CA's public certificate copied next to another leaf.
        let (ok, seen) = verify(&forged, std::slice::from_ref(&ca_der), "localhost");
        assert!(!ok);
        let e = leaf_error("c:1", "localhost", &seen.leaf.unwrap());
        assert_eq!(e.exit, Exit::Untrusted, "{}", e.message);
        // The right coordinator under a name its certificate does not carry.
        let (ok, seen) = verify(&leaf, std::slice::from_ref(&ca_der), "elsewhere");
        assert!(!ok);
        let e = leaf_error("elsewhere:1", "elsewhere", &seen.leaf.unwrap());
        assert_eq!(e.exit, Exit::Invalid);
        assert!(e.message.contains("server_names"), "{}", e.message);
    }

    #[test]
    fn a_mismatch_names_both_hashes() {
        let e = mismatch_error("c:1", "sha256:aa", &["sha256:bb".into()]);
        assert_eq!(e.exit, Exit::Untrusted);
        assert!(
            e.message.contains("sha256:aa")
                && e.message.contains("sha256:bb")
                && e.message.contains("impostor")
                && e.message.contains("mistyped"),
            "{}",
            e.message
        );
        assert!(mismatch_error("c:1", "sha256:aa", &[])
            .message
            .contains("no CA certificate"));
    }
}
