//! The link's QUIC endpoint: its UDP socket and what survives a restart.
//!
//! * The stateless-reset key is kept in the data directory
//!   (`link-reset.key`, 0600). A restarted coordinator then answers packets
//!   of the connections it lost with a stateless reset that agents accept,
//!   so they notice the restart at their next packet (keepalive: 5 s)
//!   instead of waiting out the 15 s idle timeout.
//! * The socket's buffers are raised (default 8 MiB): a reconnect storm of
//!   thousands of handshakes per second overflows the default ~200 KiB and
//!   drops packets, which costs the handshakes that lose them a retry.
//! * A coordinator restarted at once can find the port still held by its
//!   previous instance draining connections: binding waits a few seconds.

use anyhow::{Context, Result};
use ring::rand::{SecureRandom, SystemRandom};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RESET_KEY_FILE: &str = "link-reset.key";

fn reset_key(data_dir: &Path) -> Result<ring::hmac::Key> {
    let path = data_dir.join(RESET_KEY_FILE);
    let bytes = if path.exists() {
        oi_proto::fsutil::read_secret_file(&path)?
    } else {
        let mut k = vec![0u8; 32];
        SystemRandom::new()
            .fill(&mut k)
            .map_err(|_| anyhow::anyhow!("read system random source"))?;
        oi_proto::fsutil::write_atomic(&path, &k, 0o600)?;
        k
    };
    anyhow::ensure!(
        bytes.len() == 32,
        "{} must hold 32 bytes; remove it to make a new one",
        path.display()
    );
    Ok(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes))
}

fn socket(addr: SocketAddr, buffer_bytes: usize) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    if buffer_bytes > 0 {
        let s = socket2::SockRef::from(&socket);
        // The kernel caps these at net.core.{r,w}mem_max; a smaller buffer
        // is not an error.
        let _ = s.set_recv_buffer_size(buffer_bytes);
        let _ = s.set_send_buffer_size(buffer_bytes);
    }
    Ok(socket)
}

/// Binds the link on `addr` with `server` as its TLS and transport config.
pub async fn bind(
    server: quinn::ServerConfig,
    addr: SocketAddr,
    data_dir: &Path,
    buffer_bytes: usize,
) -> Result<quinn::Endpoint> {
    let config = quinn::EndpointConfig::new(Arc::new(reset_key(data_dir)?));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match socket(addr, buffer_bytes) {
            Ok(s) => {
                return quinn::Endpoint::new(config, Some(server), s, Arc::new(quinn::TokioRuntime))
                    .context("start the link endpoint")
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tracing::warn!(%addr, "link port still in use; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("bind agent link on udp {addr}: is another coordinator running?")
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reset_key_survives_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = reset_key(dir.path()).unwrap();
        let b = reset_key(dir.path()).unwrap();
        let tag = |k: &ring::hmac::Key| ring::hmac::sign(k, b"cid").as_ref().to_vec();
        assert_eq!(tag(&a), tag(&b));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(RESET_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
