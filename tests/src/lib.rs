//! Shared helpers for the integration tests: a coordinator and agents in one
//! process, talking real QUIC with mutual TLS on 127.0.0.1.

use anyhow::Result;
use oi_agent::agent::{AgentHandle, AgentOptions};
use oi_agent::link::{LinkConfig, LinkStatus};
use oi_agent::reconnect::Reconnect;
use oi_agent::runtime::fake::FakeRuntime;
use oi_coordinator::config::Config;
use oi_coordinator::coordinator::{Coordinator, Running};
use oi_proto::model::{Capacity, Component, Container, PodSpec, PortRange, Role};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long any convergence in these tests may take before it is a failure.
pub const CONVERGE: Duration = Duration::from_secs(20);

pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Starts a coordinator on `dir`; `listen` pins the link address (to
/// restart on the same port).
pub async fn start_coordinator(dir: &Path, listen: Option<SocketAddr>) -> Result<Running> {
    let mut config = Config::for_tests(dir);
    if let Some(addr) = listen {
        config.listen = addr;
    }
    Coordinator::start(config).await
}

/// One agent under test, with the fake runtime it drives.
pub struct TestAgent {
    pub name: String,
    pub runtime: Arc<FakeRuntime>,
    pub handle: AgentHandle,
    pub state_path: PathBuf,
}

/// Link settings for an agent named `name` with a certificate issued to
/// `cert_name` by `coordinator`'s CA.
pub fn link_config(
    coordinator: &Coordinator,
    link_addr: SocketAddr,
    name: &str,
    cert_name: &str,
    role: Role,
    state_dir: &Path,
) -> LinkConfig {
    let issued = coordinator
        .issue_agent_identity(cert_name)
        .expect("issue agent certificate");
    let identity =
        oi_proto::tls::Identity::from_pem(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())
            .expect("parse issued identity");
    LinkConfig {
        name: name.to_string(),
        role,
        coordinator: link_addr.to_string(),
        server_name: "localhost".into(),
        identity,
        ca: oi_proto::tls::parse_certs(coordinator.ca_pem().as_bytes()).expect("parse CA"),
        capacity: Capacity {
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            host_ports: PortRange::new(30000, 30999).expect("range"),
            address: "127.0.0.1".into(),
        },
        state_path: state_dir.join(name).join("placement.json"),
        reconnect: Reconnect::new(Duration::from_millis(50), Duration::from_millis(500)),
        identity_files: None,
        status_file: None,
    }
}

pub async fn start_agent(link: LinkConfig, runtime: Arc<FakeRuntime>) -> TestAgent {
    let name = link.name.clone();
    let state_path = link.state_path.clone();
    let handle = oi_agent::agent::start(
        AgentOptions {
            link,
            resync: Duration::from_secs(1),
        },
        runtime.clone(),
    )
    .await
    .expect("start agent");
    TestAgent {
        name,
        runtime,
        handle,
        state_path,
    }
}

/// Waits until `cond` holds for the value in `rx`, or fails after [`CONVERGE`].
pub async fn wait_for<T>(rx: &mut watch::Receiver<T>, what: &str, cond: impl FnMut(&T) -> bool) -> T
where
    T: Clone,
{
    match tokio::time::timeout(CONVERGE, rx.wait_for(cond)).await {
        Ok(Ok(v)) => v.clone(),
        Ok(Err(_)) => panic!("{what}: sender dropped"),
        Err(_) => panic!("{what}: not reached within {CONVERGE:?}; last value differs"),
    }
}

/// Polls `cond` every 20 ms until it holds, or fails after [`CONVERGE`].
/// For state that has no channel to wait on (e.g. the coordinator's view).
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + CONVERGE;
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            panic!("{what}: not reached within {CONVERGE:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Like [`eventually`], for conditions that need to await.
pub async fn eventually_async<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + CONVERGE;
    while !cond().await {
        if tokio::time::Instant::now() > deadline {
            panic!("{what}: not reached within {CONVERGE:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn wait_connected(agent: &mut TestAgent) {
    let name = agent.name.clone();
    wait_for(&mut agent.handle.link, &format!("{name} connected"), |s| {
        matches!(s, LinkStatus::Connected { .. })
    })
    .await;
}

/// A small component: one container running `image`.
pub fn component(id: &str, image: &str) -> Component {
    Component {
        incarnation: String::new(),
        id: id.to_string(),
        cluster: "test".into(),
        pod: PodSpec {
            containers: vec![Container {
                name: "main".into(),
                image: image.into(),
                args: vec!["--serve".into(), "--port=30001".into()],
                ..Default::default()
            }],
            files: vec![oi_proto::model::File {
                path: "pki/key.pem".into(),
                mode: 0o600,
                content: b"not really a key".to_vec(),
            }],
        },
    }
}

/// `GET path` on a plain HTTP endpoint; returns the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}
