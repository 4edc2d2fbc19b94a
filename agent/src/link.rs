//! The agent link, agent side: dial the coordinator over QUIC with the
//! agent's client certificate, say hello, then take placements and send
//! status until the link ends; then reconnect with jittered backoff.
//!
//! Placements are persisted before they are published to the supervisor,
//! so an agent restarted while the coordinator is away resumes from disk.
//!
//! The link also renews the agent's certificate: when less than a third of
//! its lifetime is left (checked after each connect, and again when that
//! time comes), it generates a new key, sends a CSR, stores the certificate
//! it gets back with the key (see [`crate::identity`]) and uses them from
//! the next connection on.

use crate::identity::{self, CertInfo, IdentityFiles};
use crate::link_file::LinkFile;
use crate::reconnect::Reconnect;
use crate::state_file;
use anyhow::{anyhow, Context, Result};
use oi_proto::frame::{FrameReader, FrameWriter};
use oi_proto::model::{
    Capacity, ComponentStatus, Hello, Placement, PlacementDelta, Role, RuntimeInfo, StatusReport,
    Verdict,
};
use oi_proto::pb::{self, agent_message, coordinator_message, CloseCode};
use oi_proto::tls::Identity;
use rustls::pki_types::CertificateDer;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

type Reader = FrameReader<quinn::RecvStream, pb::CoordinatorMessage>;
type Writer = FrameWriter<quinn::SendStream, pb::AgentMessage>;

/// Everything the link needs to know about this hypervisor.
pub struct LinkConfig {
    pub name: String,
    pub role: Role,
    /// `HOST:PORT` of the coordinator's link (UDP).
    pub coordinator: String,
    /// Name the coordinator's certificate must carry.
    pub server_name: String,
    pub identity: Identity,
    pub ca: Vec<CertificateDer<'static>>,
    pub capacity: Capacity,
    /// Where the last placement received is kept.
    pub state_path: PathBuf,
    /// Reconnect backoff.
    pub reconnect: Reconnect,
    /// Where the identity is kept; renewals replace it there. `None`: a
    /// renewed identity lives in memory only.
    pub identity_files: Option<IdentityFiles>,
    /// Where to write the link status (`link.json`); `None`: nowhere.
    pub status_file: Option<PathBuf>,
}

pub use oi_agent_files::link_file::{LinkError, LinkStatus};

/// The link settings of `config`, with the identity read from disk (an
/// interrupted renewal finished or discarded first).
pub fn link_config(config: &crate::config::Config) -> anyhow::Result<LinkConfig> {
    let (ca, identity) = load_identity(&config.ca_path, &config.cert_path, &config.key_path)?;
    Ok(LinkConfig {
        name: config.name.clone(),
        role: config.role,
        coordinator: config.coordinator.clone(),
        server_name: config.server_name.clone(),
        identity,
        ca,
        capacity: oi_proto::model::Capacity {
            cpu_millis: config.cpu_millis,
            memory_bytes: config.memory_bytes,
            host_ports: config.port_range,
            address: config.address.clone(),
        },
        state_path: config.placement_path(),
        reconnect: crate::reconnect::Reconnect::default(),
        identity_files: Some(crate::identity::IdentityFiles {
            cert: config.cert_path.clone(),
            key: config.key_path.clone(),
        }),
        status_file: Some(config.link_file_path()),
    })
}

/// A renewal asked for and not answered yet.
struct PendingRenewal {
    key_pem: String,
    sent: Instant,
}

/// How long a renewal may go unanswered, and how long to wait after a
/// failed one, before asking again.
const RENEWAL_RETRY: Duration = Duration::from_secs(60);

pub struct Link {
    cfg: LinkConfig,
    runtime_info: RuntimeInfo,
    client: quinn::ClientConfig,
    desired: watch::Sender<Arc<Placement>>,
    status: watch::Receiver<Option<Vec<ComponentStatus>>>,
    link_status: watch::Sender<LinkStatus>,
    /// The current certificate (the next connection's).
    cert: CertInfo,
    renewal: Option<PendingRenewal>,
    renewal_retry: Option<Instant>,
}

impl Link {
    pub fn new(
        cfg: LinkConfig,
        runtime_info: RuntimeInfo,
        desired: watch::Sender<Arc<Placement>>,
        status: watch::Receiver<Option<Vec<ComponentStatus>>>,
        link_status: watch::Sender<LinkStatus>,
    ) -> Result<Self> {
        let client = oi_proto::tls::client_config(Some(&cfg.identity), &cfg.ca)
            .context("build link TLS client")?;
        let leaf = cfg
            .identity
            .chain
            .first()
            .context("the agent's certificate chain is empty")?;
        let cert = identity::cert_info(leaf).context("read the agent's certificate")?;
        Ok(Self {
            cfg,
            runtime_info,
            client,
            desired,
            status,
            link_status,
            cert,
            renewal: None,
            renewal_retry: None,
        })
    }

    /// Publishes the link status, and writes it to the status file.
    fn set_status(&self, status: LinkStatus) {
        if let Some(path) = &self.cfg.status_file {
            let serial = match &status {
                LinkStatus::Connected {
                    certificate_serial, ..
                } => certificate_serial.clone(),
                _ => self.cert.serial.clone(),
            };
            let file = LinkFile::new(&status, &self.cfg.coordinator, &serial, unix_ms());
            if let Err(e) = file.write(path) {
                tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "write link status");
            }
        }
        self.link_status.send_replace(status);
    }

    /// How long until a renewal should be asked for (zero: now).
    fn renewal_wait(&self) -> Duration {
        let now = Instant::now();
        let retry_at = match &self.renewal {
            Some(p) => Some(p.sent + RENEWAL_RETRY),
            None => self.renewal_retry,
        };
        if let Some(at) = retry_at.filter(|at| *at > now) {
            return at - now;
        }
        // Look again at least hourly: the wall clock may jump.
        self.cert
            .until_renewal(std::time::SystemTime::now())
            .min(Duration::from_secs(3600))
    }

    /// A CSR for a new key, when a renewal is due.
    fn start_renewal(&mut self) -> Option<String> {
        if !self.renewal_wait().is_zero() {
            return None;
        }
        match identity::new_key_and_csr(&self.cfg.name) {
            Ok((key_pem, csr)) => {
                tracing::info!(serial = %self.cert.serial, "renewing the agent certificate");
                self.renewal = Some(PendingRenewal {
                    key_pem,
                    sent: Instant::now(),
                });
                Some(csr)
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "generate a key to renew the certificate");
                self.renewal_retry = Some(Instant::now() + RENEWAL_RETRY);
                None
            }
        }
    }

    /// Takes a renewed certificate into use for the next connection, after
    /// storing it with its key.
    fn finish_renewal(&mut self, renewed: pb::Renewed) {
        let Some(pending) = self.renewal.take() else {
            tracing::warn!("ignoring a renewed certificate that was not asked for");
            return;
        };
        let result = (|| -> Result<(Identity, CertInfo)> {
            if !renewed.error.is_empty() {
                anyhow::bail!("the coordinator refused: {}", renewed.error);
            }
            let cert_pem = renewed.certificate_pem.as_bytes();
            identity::check_pair(cert_pem, pending.key_pem.as_bytes())?;
            let id = Identity::from_pem(cert_pem, pending.key_pem.as_bytes())?;
            let info = identity::cert_info(&id.chain[0])?;
            if info.common_name != self.cfg.name {
                anyhow::bail!(
                    "the certificate names {:?}, not this hypervisor",
                    info.common_name
                );
            }
            if let Some(files) = &self.cfg.identity_files {
                files
                    .replace(cert_pem, pending.key_pem.as_bytes())
                    .context("store the renewed certificate")?;
            }
            Ok((id, info))
        })();
        match result.and_then(|(id, info)| {
            let client = oi_proto::tls::client_config(Some(&id), &self.cfg.ca)
                .context("build link TLS client")?;
            Ok((id, info, client))
        }) {
            Ok((id, info, client)) => {
                tracing::info!(old_serial = %self.cert.serial, serial = %info.serial,
                    not_after = ?info.not_after, "certificate renewed; used from the next connection");
                self.cfg.identity = id;
                self.client = client;
                self.cert = info;
                self.renewal_retry = None;
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "certificate renewal failed; retrying in {RENEWAL_RETRY:?}");
                self.renewal_retry = Some(Instant::now() + RENEWAL_RETRY);
            }
        }
    }

    /// Runs until `shutdown` flips. Never touches containers.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut attempt = 0u64;
        let mut backoff = self.cfg.reconnect.clone();
        loop {
            attempt += 1;
            let started = Instant::now();
            // The session watches `shutdown` itself, to close the link with a
            // reason; the outer branch only covers a session stuck elsewhere.
            let mut session_shutdown = shutdown.clone();
            let result = tokio::select! {
                biased;
                r = self.connect_and_serve(&mut session_shutdown) => r,
                _ = stopped(&mut shutdown) => break,
            };
            if *shutdown.borrow() {
                break;
            }
            // A link that stayed up a while starts the backoff afresh.
            if started.elapsed() > Duration::from_secs(30) {
                backoff.reset();
            }
            let err = match result {
                Ok(()) => break, // shutdown requested during the session
                Err(e) => e,
            };
            match err.code {
                Some(code) if !code.is_retryable() => {
                    tracing::error!(coordinator = %self.cfg.coordinator, "coordinator refused this agent: {err}");
                    backoff.to_cap();
                }
                _ => tracing::warn!(coordinator = %self.cfg.coordinator, "link down: {err}"),
            }
            self.set_status(LinkStatus::Connecting {
                attempt,
                last_error: Some(err),
            });
            let delay = backoff.next_delay(rand::random::<f64>());
            tracing::debug!(?delay, "reconnecting after backoff");
            tokio::select! {
                _ = stopped(&mut shutdown) => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        self.set_status(LinkStatus::Stopped);
    }

    async fn connect_and_serve(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), LinkError> {
        let plain = |reason: String| LinkError { code: None, reason };
        if self.cert.not_after <= std::time::SystemTime::now() {
            return Err(plain(format!(
                "this agent's certificate (serial {}) expired at {} (Unix time) before it \
                 could be renewed: remove the hypervisor on the coordinator (`oi hypervisor \
                 remove {}`) and join it again",
                self.cert.serial,
                self.cert
                    .not_after
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs(),
                self.cfg.name
            )));
        }
        let addr = tokio::net::lookup_host(&self.cfg.coordinator)
            .await
            .map_err(|e| plain(format!("resolve {}: {e}", self.cfg.coordinator)))?
            .next()
            .ok_or_else(|| plain(format!("{} resolves to no address", self.cfg.coordinator)))?;
        let bind: SocketAddr = if addr.is_ipv6() {
            "[::]:0".parse().expect("literal")
        } else {
            "0.0.0.0:0".parse().expect("literal")
        };
        let mut endpoint =
            quinn::Endpoint::client(bind).map_err(|e| plain(format!("bind UDP socket: {e}")))?;
        endpoint.set_default_client_config(self.client.clone());
        let result = self.serve_one(&endpoint, addr, shutdown).await;
        endpoint.wait_idle().await;
        result
    }

    async fn serve_one(
        &mut self,
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), LinkError> {
        let conn = endpoint
            .connect(addr, &self.cfg.server_name)
            .map_err(|e| LinkError {
                code: None,
                reason: format!("connect to {addr}: {e}"),
            })?
            .await
            .map_err(|e| closed(&e))?;
        match self.session(&conn, shutdown).await {
            Ok(()) => {
                conn.close(CloseCode::CloseNormal.varint(), b"agent shutting down");
                Ok(())
            }
            Err(SessionError::Link(e)) => Err(e),
            Err(SessionError::Protocol(why)) => {
                tracing::warn!("closing link: {why}");
                conn.close(CloseCode::CloseProtocolError.varint(), why.as_bytes());
                Err(LinkError {
                    code: Some(CloseCode::CloseProtocolError),
                    reason: why,
                })
            }
        }
    }

    async fn session(
        &mut self,
        conn: &quinn::Connection,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), SessionError> {
        let lost = |e: &dyn std::fmt::Display| match conn.close_reason() {
            Some(reason) => SessionError::Link(closed(&reason)),
            None => SessionError::Link(LinkError {
                code: None,
                reason: e.to_string(),
            }),
        };
        let (send, recv) = conn.open_bi().await.map_err(|e| lost(&e))?;
        let mut writer = Writer::new(send);
        let mut reader = Reader::new(recv);

        let hello = Hello {
            protocol_version: oi_proto::PROTOCOL_VERSION,
            hypervisor_name: self.cfg.name.clone(),
            role: self.cfg.role,
            agent_version: env!("CARGO_PKG_VERSION").into(),
            runtime: self.runtime_info.clone(),
            capacity: self.cfg.capacity.clone(),
            observed: self.status.borrow().clone(),
            applied: self.desired.borrow().cursor.clone(),
        };
        writer
            .send(&agent(agent_message::Msg::Hello(hello.into())))
            .await
            .map_err(|e| lost(&e))?;
        let welcome = reader.next().await.map_err(|e| lost(&e))?;
        let heartbeat = match welcome.msg {
            Some(coordinator_message::Msg::Welcome(w)) => {
                Duration::from_millis(u64::from(w.heartbeat_interval_ms).max(1000))
            }
            _ => return Err(SessionError::Protocol("expected a welcome".into())),
        };
        self.set_status(LinkStatus::Connected {
            peer: conn.remote_address(),
            certificate_serial: self.cert.serial.clone(),
        });
        tracing::info!(coordinator = %conn.remote_address(), "link up");

        self.status.mark_changed(); // report once right after connecting
        let mut ticker = tokio::time::interval(heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stopped(shutdown) => return Ok(()),
                err = conn.closed() => return Err(SessionError::Link(closed(&err))),
                _ = ticker.tick() => {
                    let hb = pb::Heartbeat { sent_unix_ms: unix_ms() };
                    writer.send(&agent(agent_message::Msg::Heartbeat(hb))).await.map_err(|e| lost(&e))?;
                }
                _ = tokio::time::sleep(self.renewal_wait()) => {
                    if let Some(csr_pem) = self.start_renewal() {
                        let req = pb::RenewRequest { csr_pem };
                        writer.send(&agent(agent_message::Msg::Renew(req))).await.map_err(|e| lost(&e))?;
                    }
                }
                changed = self.status.changed() => {
                    if changed.is_err() {
                        // The supervisor is gone; the link keeps placements flowing.
                        std::future::pending::<()>().await;
                    }
                    // Nothing is reported until the runtime has been listed.
                    let Some(components) = self.status.borrow_and_update().clone() else {
                        continue;
                    };
                    let report = StatusReport {
                        applied: self.desired.borrow().cursor.clone(),
                        components,
                    };
                    writer.send(&agent(agent_message::Msg::Status(report.into()))).await.map_err(|e| lost(&e))?;
                }
                msg = reader.next() => {
                    let msg = match msg {
                        Ok(m) => m,
                        Err(oi_proto::frame::FrameError::Decode(e)) => {
                            return Err(SessionError::Protocol(format!("undecodable frame: {e}")))
                        }
                        Err(oi_proto::frame::FrameError::Closed) => {
                            // The coordinator's close frame, with its reason,
                            // follows the end of the stream closely.
                            return match tokio::time::timeout(Duration::from_secs(2), conn.closed()).await {
                                Ok(err) => Err(SessionError::Link(closed(&err))),
                                Err(_) => Err(lost(&"stream closed by peer")),
                            };
                        }
                        Err(e) => return Err(lost(&e)),
                    };
                    match msg.msg {
                        Some(coordinator_message::Msg::Snapshot(s)) => {
                            let p = Placement::try_from(s)
                                .map_err(|e| SessionError::Protocol(format!("bad snapshot: {e}")))?;
                            self.on_snapshot(p);
                        }
                        Some(coordinator_message::Msg::Update(u)) => {
                            let d = PlacementDelta::try_from(u)
                                .map_err(|e| SessionError::Protocol(format!("bad update: {e}")))?;
                            if let Some(reason) = self.on_update(d) {
                                let r = pb::ResyncRequest { reason };
                                writer.send(&agent(agent_message::Msg::Resync(r))).await.map_err(|e| lost(&e))?;
                            }
                        }
                        Some(coordinator_message::Msg::HeartbeatAck(ack)) => {
                            tracing::trace!(rtt_ms = unix_ms().saturating_sub(ack.echoed_unix_ms), "heartbeat ack");
                        }
                        Some(coordinator_message::Msg::Renewed(r)) => self.finish_renewal(r),
                        Some(coordinator_message::Msg::Welcome(_)) | None => {
                            return Err(SessionError::Protocol("unexpected frame".into()))
                        }
                    }
                }
            }
        }
    }

    fn on_snapshot(&self, placement: Placement) {
        let current = self.desired.borrow().clone();
        match current.judge_snapshot(&placement.cursor) {
            Verdict::Apply => {
                if !current.cursor.epoch.is_empty()
                    && current.cursor.epoch != placement.cursor.epoch
                {
                    tracing::warn!(
                        from = %current.cursor,
                        to = %placement.cursor,
                        "the coordinator's store changed (another epoch): components it does not \
                         name with the same incarnation keep running, held and reported as not \
                         adopted, until released with `oi-agent release-held`"
                    );
                }
                self.publish(current.succeed(placement, &[]))
            }
            _ => tracing::debug!(cursor = %placement.cursor, "ignoring snapshot that is not newer"),
        }
    }

    /// Returns a reason to ask for a snapshot when the update does not fit.
    fn on_update(&self, delta: PlacementDelta) -> Option<String> {
        let current = self.desired.borrow().clone();
        match current.judge_delta(&delta) {
            Verdict::Apply => {
                let mut next = (*current).clone();
                next.apply(delta);
                self.publish(current.succeed(next, &[]));
                None
            }
            Verdict::Stale => {
                tracing::debug!(generation = delta.generation, "ignoring stale update");
                None
            }
            Verdict::Gap => Some(format!(
                "update {}->{} does not apply to held {}",
                delta.base_generation, delta.generation, current.cursor
            )),
        }
    }

    /// Persist, then hand to the supervisor. A placement that cannot be
    /// persisted is not applied: after a restart the agent would resume the
    /// older one on disk and remove what the newer one created. The
    /// supervisor keeps running the held placement; the coordinator sends
    /// the current one again on the next connect or update.
    fn publish(&self, placement: Placement) {
        if let Err(e) = state_file::save(&self.cfg.state_path, &placement) {
            tracing::error!(
                error = %format!("{e:#}"),
                path = %self.cfg.state_path.display(),
                cursor = %placement.cursor,
                "cannot persist the placement: not applying it (the held one keeps running)"
            );
            return;
        }
        tracing::info!(
            cursor = %placement.cursor,
            components = placement.components.len(),
            "placement applied"
        );
        self.desired.send_replace(Arc::new(placement));
    }
}

enum SessionError {
    Link(LinkError),
    Protocol(String),
}

fn closed(err: &quinn::ConnectionError) -> LinkError {
    let code = match err {
        quinn::ConnectionError::ApplicationClosed(c) => CloseCode::from_varint(c.error_code),
        _ => None,
    };
    LinkError {
        code,
        reason: oi_proto::close::describe(err),
    }
}

fn agent(msg: agent_message::Msg) -> pb::AgentMessage {
    pb::AgentMessage { msg: Some(msg) }
}

use oi_proto::clock::unix_ms;

async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Reads the CA bundle, certificate and key of the agent's identity
/// (finishing or discarding an interrupted renewal first).
pub fn load_identity(
    ca: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<(Vec<CertificateDer<'static>>, Identity)> {
    let ca_pem = std::fs::read(ca).with_context(|| format!("read CA {}", ca.display()))?;
    let ca =
        oi_proto::tls::parse_certs(&ca_pem).with_context(|| format!("parse {}", ca.display()))?;
    let files = IdentityFiles {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
    };
    let (cert_pem, key_pem) = files.load()?;
    let identity = Identity::from_pem(&cert_pem, &key_pem)
        .map_err(|e| anyhow!("load agent identity from {}: {e:#}", cert.display()))?;
    Ok((ca, identity))
}
