//! The link's QUIC endpoint: its UDP socket and what survives a restart.
//!
//! * The stateless-reset key is kept in the data directory
//!   (`link-reset.key`, 0600). A restarted coordinator then answers packets
//!   of the connections it lost with a stateless reset that agents accept,
//!   so they notice the restart at their next packet (keepalive: 5 s)
//!   instead of waiting out the 15 s idle timeout. The connection-ID
//!   generator's key is derived from the same secret: quinn answers with a
//!   reset only packets whose connection ID its generator recognizes as
//!   its own, and its default generator draws a new key per process, which
//!   would make every old connection ID look foreign after a restart.
//!   quinn also sends at most one reset per 20 ms by default (50/s): a
//!   fleet of 10,000 whose keepalives arrive within 5 s would mostly be
//!   ignored. The floor is lowered to [`MIN_RESET_INTERVAL`]; a reset is
//!   always smaller than the packet that caused it, so this amplifies
//!   nothing and cannot loop.
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

/// At most 10,000 stateless resets a second: a whole fleet's keepalives
/// within one keepalive period.
const MIN_RESET_INTERVAL: Duration = Duration::from_micros(100);

/// The endpoint's restart-stable secrets: the stateless-reset key, and
/// the key of the connection-ID generator (derived from it).
fn endpoint_config(data_dir: &Path) -> Result<quinn::EndpointConfig> {
    let reset = reset_key(data_dir)?;
    let tag = ring::hmac::sign(&reset, b"oneinfra link connection-id generator");
    let cid_key = u64::from_be_bytes(tag.as_ref()[..8].try_into().expect("8 bytes"));
    let mut config = quinn::EndpointConfig::new(Arc::new(reset));
    config.min_reset_interval(MIN_RESET_INTERVAL);
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    Ok(config)
}

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
    let config = endpoint_config(data_dir)?;
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

    /// A coordinator that dies without closing its connections (kill -9)
    /// and comes back on the same address and data dir answers its
    /// predecessor's connections with a stateless reset the agent accepts:
    /// the agent learns at its next packet, not after the idle timeout.
    #[test]
    fn a_restarted_endpoint_resets_the_connections_it_lost() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::link_pki::LinkCa::generate().unwrap();
        let ca_der = oi_proto::tls::parse_certs(ca.cert_pem().as_bytes()).unwrap();
        let server = ca.issue_server(&["localhost".to_string()]).unwrap();
        let server_id = oi_proto::tls::Identity::from_pem(
            server.cert_pem.as_bytes(),
            server.key_pem.as_bytes(),
        )
        .unwrap();
        let agent = ca.issue_agent("hv-1").unwrap();
        let agent_id =
            oi_proto::tls::Identity::from_pem(agent.cert_pem.as_bytes(), agent.key_pem.as_bytes())
                .unwrap();
        let server_config = || oi_proto::tls::server_config(&server_id, &ca_der).unwrap();
        let client_config = oi_proto::tls::client_config(Some(&agent_id), &ca_der).unwrap();

        let agent_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        // The first coordinator runs on a runtime of its own, so that it
        // can die with it: no close is ever sent.
        let first_rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let first = first_rt
            .block_on(bind(server_config(), local, dir.path(), 0))
            .unwrap();
        let addr = first.local_addr().unwrap();
        let client = agent_rt.spawn(async move {
            let mut ep = quinn::Endpoint::client(local).unwrap();
            ep.set_default_client_config(client_config);
            let conn = ep.connect(addr, "localhost").unwrap().await.unwrap();
            (ep, conn)
        });
        let accepted = first_rt.block_on(async { first.accept().await.unwrap().await.unwrap() });
        let (_client_ep, conn) = agent_rt.block_on(client).unwrap();
        drop(first_rt);
        drop((first, accepted));

        let reason = agent_rt.block_on(async {
            let _second = bind(server_config(), addr, dir.path(), 0).await.unwrap();
            // Any packet the agent sends draws the reset, including the
            // acknowledgements it may send before we get to open a stream.
            if let Ok((mut send, _recv)) = conn.open_bi().await {
                let _ = send.write_all(b"anyone there?").await;
            }
            tokio::time::timeout(Duration::from_secs(10), conn.closed())
                .await
                .expect("the connection ends before the idle timeout")
        });
        assert!(
            matches!(reason, quinn::ConnectionError::Reset),
            "closed by a stateless reset, got: {reason}"
        );
    }
}
