//! One agent connection: authenticate, handshake, then stream the
//! hypervisor's placement (a snapshot, then deltas) and take status reports.

use crate::coordinator::Inner;
use crate::link::admission::{self, Verdict};
use crate::state::WriteTxn;
use crate::store::{AgentIdentity, HypervisorRegistration};
use oi_proto::frame::{FrameReader, FrameWriter};
use oi_proto::model::{Hello, Placement, StatusReport};
use oi_proto::pb::{self, agent_message, coordinator_message, CloseCode};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::watch;

type Reader = FrameReader<quinn::RecvStream, pb::AgentMessage>;
type Writer = FrameWriter<quinn::SendStream, pb::CoordinatorMessage>;

/// Why a connection was refused: the close code and a reason that says what
/// to do. Sent to the agent and logged here.
struct Refusal(CloseCode, String);

pub(crate) async fn handle(
    incoming: quinn::Incoming,
    inner: Arc<Inner>,
    shutdown: watch::Receiver<bool>,
) {
    let peer = incoming.remote_address();
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            // Certificates from another CA and other TLS failures end here;
            // the agent receives the TLS alert as the close reason.
            inner.metrics.rejected("tls_handshake");
            tracing::warn!(%peer, error = %e, "refused agent connection: TLS handshake failed");
            return;
        }
    };
    let conn_id = inner.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let Established {
        name,
        serial,
        hello,
        reader,
        writer,
    } = match handshake(&conn, &inner).await {
        Ok(ok) => ok,
        Err(Refusal(code, reason)) => {
            inner.metrics.rejected(code.label());
            tracing::warn!(%peer, reason = code.label(), "refused agent connection: {reason}");
            conn.close(code.varint(), reason.as_bytes());
            return;
        }
    };
    let Hello {
        observed, applied, ..
    } = hello;
    let since = unix_ms();
    if let Some(old) = inner.index.attach(&name, conn_id, conn.clone(), since) {
        old.close(
            CloseCode::CloseSuperseded.varint(),
            b"a newer connection from the same hypervisor replaced this one",
        );
    }
    // An agent that has not listed its runtime yet stays "unknown" (no
    // report) until its first status report: an empty list here would read
    // as "nothing runs", and finish deletions that are not done.
    if let Some(components) = observed {
        inner.index.set_observed(
            &name,
            conn_id,
            StatusReport {
                applied,
                components,
            },
        );
    }
    inner.metrics.connected_agents.inc();
    tracing::info!(hypervisor = %name, %peer, conn_id, "agent connected");

    let session = Session {
        conn: &conn,
        inner: &inner,
        name: &name,
        serial: &serial,
        conn_id,
    };
    let end = session.run(reader, writer, shutdown).await;

    inner.metrics.connected_agents.dec();
    inner.index.detach(&name, conn_id);
    let seen = name.clone();
    let touched = inner
        .writer
        .run(move |tx| async move { tx.touch_last_seen(&seen, unix_ms()).await })
        .await;
    if let Err(e) = touched {
        tracing::warn!(hypervisor = %name, error = %e, "record last seen");
    }
    match end {
        End::Shutdown => conn.close(
            CloseCode::CloseNormal.varint(),
            b"coordinator shutting down; reconnect later",
        ),
        End::Protocol(why) => {
            tracing::warn!(hypervisor = %name, %peer, "closing agent link: {why}");
            conn.close(CloseCode::CloseProtocolError.varint(), why.as_bytes());
        }
        End::Lost(why) => {
            tracing::info!(hypervisor = %name, %peer, "agent disconnected: {why}");
        }
    }
}

struct Established {
    name: String,
    /// Serial of the client certificate.
    serial: String,
    hello: Hello,
    reader: Reader,
    writer: Writer,
}

enum End {
    Shutdown,
    Protocol(String),
    Lost(String),
}

async fn handshake(conn: &quinn::Connection, inner: &Arc<Inner>) -> Result<Established, Refusal> {
    let peer = peer_cert(conn)?;
    let cert_name = peer.name.clone();
    let timeout = inner.config.handshake_timeout;
    let (send, recv) = tokio::time::timeout(timeout, conn.accept_bi())
        .await
        .map_err(|_| {
            Refusal(
                CloseCode::CloseHandshakeTimeout,
                format!("no control stream within {timeout:?}"),
            )
        })?
        .map_err(|e| Refusal(CloseCode::CloseProtocolError, format!("accept stream: {e}")))?;
    let mut reader = Reader::new(recv);
    let writer = Writer::new(send);
    let first = tokio::time::timeout(timeout, reader.next())
        .await
        .map_err(|_| {
            Refusal(
                CloseCode::CloseHandshakeTimeout,
                format!("no hello within {timeout:?}"),
            )
        })?
        .map_err(|e| Refusal(CloseCode::CloseProtocolError, format!("read hello: {e}")))?;
    let Some(agent_message::Msg::Hello(hello)) = first.msg else {
        return Err(Refusal(
            CloseCode::CloseProtocolError,
            "the first frame must be a hello".into(),
        ));
    };
    if hello.protocol_version != oi_proto::PROTOCOL_VERSION {
        return Err(Refusal(
            CloseCode::CloseUnsupportedVersion,
            format!(
                "protocol version {} is not supported: this coordinator speaks version {}; \
                 install a matching oi-agent",
                hello.protocol_version,
                oi_proto::PROTOCOL_VERSION
            ),
        ));
    }
    let hello = Hello::try_from(hello)
        .map_err(|e| Refusal(CloseCode::CloseProtocolError, format!("bad hello: {e}")))?;
    if hello.hypervisor_name != cert_name {
        return Err(Refusal(
            CloseCode::CloseNameMismatch,
            format!(
                "hello names hypervisor {:?} but the client certificate was issued to {:?}; \
                 set the agent's name to {:?} or join it again under the new name",
                hello.hypervisor_name, cert_name, cert_name
            ),
        ));
    }
    let serial = peer.serial.clone();
    register(inner, &hello, peer).await?;
    Ok(Established {
        name: cert_name,
        serial,
        hello,
        reader,
        writer,
    })
}

/// What the verified client certificate says.
#[derive(Clone)]
struct PeerCert {
    /// The hypervisor name (common name).
    name: String,
    serial: String,
    not_after_unix_ms: u64,
}

/// The hypervisor name and serial of the verified client certificate.
fn peer_cert(conn: &quinn::Connection) -> Result<PeerCert, Refusal> {
    let chain = conn
        .peer_identity()
        .and_then(|id| {
            id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .filter(|chain| !chain.is_empty())
        .ok_or_else(|| {
            Refusal(
                CloseCode::CloseNoCertificate,
                "client certificate required: agents authenticate with the certificate \
                 this coordinator issued them (see `oi hypervisor join`)"
                    .into(),
            )
        })?;
    let bad = |e: anyhow::Error| Refusal(CloseCode::CloseNoCertificate, e.to_string());
    // Admin certificates come from the same CA; only hypervisor ones link.
    let orgs = crate::link_pki::organizations(&chain[0]).map_err(bad)?;
    if !orgs.iter().any(|o| o == crate::link_pki::HYPERVISOR_ORG) {
        return Err(Refusal(
            CloseCode::CloseNoCertificate,
            format!(
                "the client certificate is not a hypervisor's (organization {orgs:?}, want {:?}); \
                 use the certificate `oi hypervisor join` wrote for this agent",
                crate::link_pki::HYPERVISOR_ORG
            ),
        ));
    }
    Ok(PeerCert {
        name: crate::link_pki::common_name(&chain[0]).map_err(bad)?,
        serial: crate::link_pki::cert_serial(&chain[0]).map_err(bad)?,
        not_after_unix_ms: crate::link_pki::cert_not_after_unix_ms(&chain[0]).map_err(bad)?,
    })
}

/// Whether the certificate may link (not revoked; the role its join token
/// bound); records a certificate not seen before. Under the write lock, so
/// that `oi hypervisor remove` and a connecting agent are ordered.
async fn check_identity(inner: &Inner, hello: &Hello, peer: &PeerCert) -> Result<(), Refusal> {
    let internal = |what: &str, e: &dyn std::fmt::Display| {
        tracing::error!(hypervisor = %peer.name, error = %e, "{what}");
        Refusal(
            CloseCode::CloseInternal,
            format!("{what} failed; retry later"),
        )
    };
    let store = &inner.store;
    let known = store
        .get_identity(&peer.serial)
        .await
        .map_err(|e| internal("read identity", &e))?;
    let others = if known.is_none() {
        store
            .identities_of(&peer.name)
            .await
            .map_err(|e| internal("read identities", &e))?
    } else {
        Vec::new()
    };
    let registered = inner.index.record(&peer.name).is_some();
    match admission::judge(
        &peer.name,
        &peer.serial,
        known.as_ref(),
        &others,
        registered,
        hello.role,
    ) {
        Verdict::Accept { record: false } => Ok(()),
        Verdict::Accept { record: true } => store
            .record_identity(&AgentIdentity {
                serial: peer.serial.clone(),
                name: peer.name.clone(),
                role: None,
                issued_unix_ms: unix_ms(),
                not_after_unix_ms: peer.not_after_unix_ms,
                revoked_unix_ms: None,
            })
            .await
            .map_err(|e| internal("record identity", &e)),
        Verdict::Revoked(why) => Err(Refusal(CloseCode::CloseRevoked, why)),
        Verdict::RoleMismatch(why) => Err(Refusal(CloseCode::CloseRoleMismatch, why)),
    }
}

/// Records what the agent reports about its machine and reconciles the
/// placement generation it holds with the store's: in one write, ordered
/// with `oi hypervisor remove`.
async fn register(inner: &Arc<Inner>, hello: &Hello, peer: PeerCert) -> Result<(), Refusal> {
    let inner = inner.clone();
    let hello = hello.clone();
    let writer = inner.writer.clone();
    writer
        .run(move |tx| async move { register_in(&tx, &inner, &hello, &peer).await })
        .await
}

async fn register_in(
    tx: &WriteTxn,
    inner: &Inner,
    hello: &Hello,
    peer: &PeerCert,
) -> Result<(), Refusal> {
    let internal = |what: &str, e: &dyn std::fmt::Display| {
        tracing::error!(hypervisor = %hello.hypervisor_name, error = %e, "{what}");
        Refusal(
            CloseCode::CloseInternal,
            format!("{what} failed; retry later"),
        )
    };
    check_identity(inner, hello, peer).await?;
    if let Some(existing) = tx.index().record(&hello.hypervisor_name) {
        if existing.role != hello.role {
            return Err(Refusal(
                CloseCode::CloseRoleMismatch,
                format!(
                    "hypervisor {:?} is registered as {} but the agent says {}; \
                     fix the agent's role or remove the hypervisor first",
                    hello.hypervisor_name, existing.role, hello.role
                ),
            ));
        }
    }
    let reg = HypervisorRegistration {
        name: hello.hypervisor_name.clone(),
        role: hello.role,
        address: hello.capacity.address.clone(),
        host_ports: hello.capacity.host_ports,
        cpu_millis: hello.capacity.cpu_millis,
        memory_bytes: hello.capacity.memory_bytes,
    };
    let record = tx
        .register_hypervisor(&reg)
        .await
        .map_err(|e| internal("register hypervisor", &e))?;
    let (name, generation) = (record.name, record.generation);
    // An agent can hold a generation this store never handed out, e.g. after
    // the store was restored from a backup. Move past it, so the snapshot we
    // send is newer than what the agent holds and it converges.
    if hello.applied.epoch == tx.index().epoch() && hello.applied.generation > generation {
        let bumped = tx
            .bump_generation(&name, hello.applied.generation)
            .await
            .map_err(|e| internal("bump generation", &e))?;
        tracing::warn!(
            hypervisor = %name,
            held = hello.applied.generation,
            store = generation,
            now = bumped,
            "agent held a newer placement generation than the store; moved past it"
        );
    }
    Ok(())
}

fn frame(msg: coordinator_message::Msg) -> pb::CoordinatorMessage {
    pb::CoordinatorMessage { msg: Some(msg) }
}

async fn send_snapshot(
    writer: &mut Writer,
    inner: &Inner,
    placement: &Arc<Placement>,
) -> Result<(), End> {
    let snap = pb::Placement::from((**placement).clone());
    writer
        .send(&frame(coordinator_message::Msg::Snapshot(snap)))
        .await
        .map_err(|e| End::Lost(format!("send snapshot: {e}")))?;
    inner.metrics.sent("snapshot");
    Ok(())
}

/// An established session: who is on the other end.
struct Session<'a> {
    conn: &'a quinn::Connection,
    inner: &'a Inner,
    name: &'a str,
    /// Serial of the certificate the agent connected with.
    serial: &'a str,
    conn_id: u64,
}

impl Session<'_> {
    async fn run(
        &self,
        mut reader: Reader,
        mut writer: Writer,
        mut shutdown: watch::Receiver<bool>,
    ) -> End {
        let (conn, inner, name, conn_id) = (self.conn, self.inner, self.name, self.conn_id);
        let Some(mut placements) = inner.index.subscribe(name) else {
            return End::Protocol("hypervisor vanished during handshake".into());
        };
        let welcome = pb::Welcome {
            protocol_version: oi_proto::PROTOCOL_VERSION,
            coordinator_version: env!("CARGO_PKG_VERSION").into(),
            heartbeat_interval_ms: inner.config.heartbeat_interval.as_millis() as u32,
        };
        if let Err(e) = writer
            .send(&frame(coordinator_message::Msg::Welcome(welcome)))
            .await
        {
            return End::Lost(format!("send welcome: {e}"));
        }
        // Level-triggered: a (re)connected agent gets the current placement whole.
        let mut sent = placements.borrow_and_update().clone();
        if let Err(end) = send_snapshot(&mut writer, inner, &sent).await {
            return end;
        }
        loop {
            tokio::select! {
                _ = crate::stopped(&mut shutdown) => return End::Shutdown,
                err = conn.closed() => return End::Lost(oi_proto::close::describe(&err)),
                changed = placements.changed() => {
                    if changed.is_err() {
                        return End::Protocol("hypervisor was removed".into());
                    }
                    let current = placements.borrow_and_update().clone();
                    if current.cursor == sent.cursor {
                        continue;
                    }
                    let delta = sent.diff(&current);
                    let update = pb::PlacementUpdate::from(delta);
                    if let Err(e) = writer.send(&frame(coordinator_message::Msg::Update(update))).await {
                        return End::Lost(format!("send update: {e}"));
                    }
                    inner.metrics.sent("update");
                    sent = current;
                }
                msg = reader.next() => {
                    let msg = match msg {
                        Ok(m) => m,
                        Err(oi_proto::frame::FrameError::Decode(e)) => {
                            return End::Protocol(format!("undecodable frame: {e}"))
                        }
                        Err(e) => return End::Lost(e.to_string()),
                    };
                    match msg.msg {
                        Some(agent_message::Msg::Status(report)) => {
                            inner.index.set_observed(name, conn_id, report.into());
                        }
                        Some(agent_message::Msg::Heartbeat(hb)) => {
                            let ack = pb::HeartbeatAck { echoed_unix_ms: hb.sent_unix_ms };
                            if let Err(e) = writer.send(&frame(coordinator_message::Msg::HeartbeatAck(ack))).await {
                                return End::Lost(format!("send heartbeat ack: {e}"));
                            }
                        }
                        Some(agent_message::Msg::Resync(r)) => {
                            tracing::info!(hypervisor = %name, reason = %r.reason, "agent asked for a snapshot");
                            sent = placements.borrow_and_update().clone();
                            if let Err(end) = send_snapshot(&mut writer, inner, &sent).await {
                                return end;
                            }
                        }
                        Some(agent_message::Msg::Renew(r)) => {
                            let renewed = self.renew(&r.csr_pem).await;
                            if let Err(e) = writer.send(&frame(coordinator_message::Msg::Renewed(renewed))).await {
                                return End::Lost(format!("send renewed certificate: {e}"));
                            }
                        }
                        Some(agent_message::Msg::Hello(_)) => {
                            return End::Protocol("a second hello on an established link".into())
                        }
                        None => return End::Protocol("empty frame".into()),
                    }
                }
            }
        }
    }

    /// Signs a renewal CSR for this session's hypervisor, bound to the same
    /// role, and records the new certificate.
    async fn renew(&self, csr_pem: &str) -> pb::Renewed {
        let (inner, name) = (self.inner, self.name);
        let failed = |error: String| {
            tracing::warn!(hypervisor = %name, "certificate renewal refused: {error}");
            pb::Renewed {
                certificate_pem: String::new(),
                error,
            }
        };
        let current = match inner.store.get_identity(self.serial).await {
            Ok(c) => c,
            Err(e) => return failed(format!("read the current identity: {e}; retry later")),
        };
        let Some(record) = inner.index.record(name) else {
            return failed("the hypervisor is not registered".into());
        };
        let role = admission::renewed_role(current.as_ref(), record.role);
        let signed = match inner
            .ca
            .sign_agent_csr(name, csr_pem, inner.config.agent_cert_lifetime)
        {
            Ok(s) => s,
            Err(e) => return failed(e.to_string()),
        };
        let recorded = inner
            .store
            .record_identity(&AgentIdentity {
                serial: signed.serial.clone(),
                name: name.to_string(),
                role: Some(role),
                issued_unix_ms: unix_ms(),
                not_after_unix_ms: signed.not_after_unix_ms,
                revoked_unix_ms: None,
            })
            .await;
        if let Err(e) = recorded {
            return failed(format!("record the new certificate: {e}; retry later"));
        }
        inner.metrics.certificates_renewed.inc();
        tracing::info!(hypervisor = %name, old_serial = %self.serial, serial = %signed.serial,
        not_after_unix_ms = signed.not_after_unix_ms, "certificate renewed");
        pb::Renewed {
            certificate_pem: signed.cert_pem,
            error: String::new(),
        }
    }
}

use oi_proto::clock::unix_ms;
