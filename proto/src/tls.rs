//! TLS and QUIC transport settings of the link, shared by both ends so that
//! they agree on ALPN, TLS version and keepalive timing.
//!
//! Dead-peer detection: each side sends a QUIC PING after
//! [`KEEPALIVE_INTERVAL`] of silence and drops a connection that has heard
//! nothing for [`IDLE_TIMEOUT`]. A dead peer is therefore noticed within
//! `IDLE_TIMEOUT` (15 s) on both sides.

use anyhow::{anyhow, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::time::Duration;

pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// A certificate chain and its private key. `Debug` hides the key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({} certificates, key hidden)", self.chain.len())
    }
}

impl Identity {
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self> {
        let chain = parse_certs(cert_pem).context("parse certificate PEM")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| anyhow!("parse private key PEM: {e}"))?;
        Ok(Self { chain, key })
    }

    pub fn clone_key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

/// Parses every certificate in a PEM bundle; an empty bundle is an error.
pub fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{e}"))?;
    if certs.is_empty() {
        anyhow::bail!("no certificate found in PEM data");
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &[CertificateDer<'static>]) -> Result<Arc<rustls::RootCertStore>> {
    let mut store = rustls::RootCertStore::empty();
    for c in ca {
        store
            .add(c.clone())
            .context("add CA certificate to trust store")?;
    }
    Ok(Arc::new(store))
}

pub fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(KEEPALIVE_INTERVAL));
    t.max_idle_timeout(Some(
        IDLE_TIMEOUT.try_into().expect("idle timeout fits a varint"),
    ));
    // One control stream per connection; nothing else is opened.
    t.max_concurrent_bidi_streams(4u32.into());
    t.max_concurrent_uni_streams(0u32.into());
    t
}

/// Server side. Clients are asked for a certificate; a certificate that does
/// not chain to `client_ca` fails the TLS handshake. A client that sends none
/// is let through TLS so that the coordinator can close it with the clear
/// [`crate::pb::CloseCode::CloseNoCertificate`] reason before reading anything.
pub fn server_config(
    identity: &Identity,
    client_ca: &[CertificateDer<'static>],
) -> Result<quinn::ServerConfig> {
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(client_ca)?, provider())
            .allow_unauthenticated()
            .build()
            .context("build client certificate verifier")?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("select TLS 1.3")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.clone_key())
        .context("load coordinator certificate")?;
    tls.alpn_protocols = vec![crate::ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| anyhow!("build QUIC server crypto: {e}"))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport_config()));
    Ok(cfg)
}

/// Client side: trusts only `server_ca`, presents `identity` if given.
pub fn client_config(
    identity: Option<&Identity>,
    server_ca: &[CertificateDer<'static>],
) -> Result<quinn::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("select TLS 1.3")?
        .with_root_certificates(roots(server_ca)?);
    let mut tls = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), id.clone_key())
            .context("load client certificate")?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![crate::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| anyhow!("build QUIC client crypto: {e}"))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport_config()));
    Ok(cfg)
}
