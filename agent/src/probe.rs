//! Health probes: an HTTP or HTTPS GET against the pod on this host, like
//! kubelet's httpGet probe. HTTPS certificates are not verified (the probe
//! checks liveness, not identity); a status of 200-399 is success.

use oi_proto::model::{Probe, ProbeResult, Scheme};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Runs `probe` against 127.0.0.1 (pods use the host network).
pub async fn run(probe: &Probe) -> ProbeResult {
    let timeout = Duration::from_millis(u64::from(probe.timeout_ms.max(100)));
    let outcome = tokio::time::timeout(timeout, get(probe)).await;
    let (ok, detail) = match outcome {
        Ok(Ok(status)) if (200..400).contains(&status) => (true, format!("HTTP {status}")),
        Ok(Ok(status)) => (false, format!("HTTP {status}")),
        Ok(Err(e)) => (false, e),
        Err(_) => (false, format!("timed out after {timeout:?}")),
    };
    ProbeResult {
        ok,
        detail,
        at_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    }
}

async fn get(probe: &Probe) -> Result<u16, String> {
    let addr = ("127.0.0.1", probe.port);
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect 127.0.0.1:{}: {e}", probe.port))?;
    match probe.scheme {
        Scheme::Http => request(tcp, probe).await,
        Scheme::Https => {
            let tls = tokio_rustls::TlsConnector::from(insecure_client());
            let name = rustls::pki_types::ServerName::try_from("localhost")
                .expect("literal name")
                .to_owned();
            let stream = tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            request(stream, probe).await
        }
    }
}

async fn request<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    probe: &Probe,
) -> Result<u16, String> {
    let path = if probe.path.starts_with('/') {
        probe.path.clone()
    } else {
        format!("/{}", probe.path)
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: oi-agent-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        probe.port
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("send request: {e}"))?;
    let mut buf = vec![0u8; 256];
    let mut n = 0;
    while n < 12 {
        let got = s
            .read(&mut buf[n..])
            .await
            .map_err(|e| format!("read response: {e}"))?;
        if got == 0 {
            break;
        }
        n += got;
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let status = head
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| {
            format!(
                "not an HTTP response: {:?}",
                head.lines().next().unwrap_or("")
            )
        })?;
    Ok(status)
}

fn insecure_client() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        .with_no_client_auth();
    Arc::new(cfg)
}

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(port: u16, path: &str) -> Probe {
        Probe {
            scheme: Scheme::Http,
            port,
            path: path.into(),
            period_ms: 1000,
            timeout_ms: 1000,
            failure_threshold: 3,
            initial_delay_ms: 0,
        }
    }

    async fn serve_once(status: &'static str) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\n\r\nok").as_bytes())
                .await;
        });
        port
    }

    #[tokio::test]
    async fn http_status_decides() {
        let r = run(&probe(serve_once("200 OK").await, "/readyz")).await;
        assert!(r.ok, "{r:?}");
        let r = run(&probe(
            serve_once("500 Internal Server Error").await,
            "/readyz",
        ))
        .await;
        assert!(!r.ok && r.detail == "HTTP 500", "{r:?}");
        // Nothing listening.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let r = run(&probe(port, "/")).await;
        assert!(!r.ok && r.detail.contains("connect"), "{r:?}");
    }
}
