//! A simulated agent: the real link protocol (framing, messages, TLS
//! config, placement rules and reconnect backoff of `oi-agent`) without a
//! container runtime. It reports every component as running right after it
//! applies a placement. Many of them share one `quinn::Endpoint`.

use crate::sys::mono_ns;
use oi_agent::reconnect::Reconnect;
use oi_proto::frame::{FrameError, FrameReader, FrameWriter};
use oi_proto::model::{
    Capacity, ComponentStatus, ContainerStatus, Hello, Phase, Placement, PlacementDelta, PortRange,
    Role, RuntimeInfo, StatusReport, Verdict,
};
use oi_proto::pb::{self, agent_message, coordinator_message, CloseCode};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

type Reader = FrameReader<quinn::RecvStream, pb::CoordinatorMessage>;
type Writer = FrameWriter<quinn::SendStream, pb::AgentMessage>;

/// What one simulated agent has done, read by the driver. Times are
/// CLOCK_MONOTONIC ns ([`mono_ns`]).
#[derive(Default)]
pub struct Slot {
    pub connected: AtomicBool,
    /// Connection attempts started.
    pub attempts: AtomicU64,
    /// Sessions established (welcome received).
    pub sessions: AtomicU64,
    /// The session whose first snapshot has been received and judged.
    pub synced_session: AtomicU64,
    /// Generation of the placement held.
    pub generation: AtomicU64,
    pub applied_ns: AtomicU64,
    pub connected_ns: AtomicU64,
    pub synced_ns: AtomicU64,
    pub lost_ns: AtomicU64,
}

/// State shared by every simulated agent and the driver.
pub struct Shared {
    pub slots: Vec<Slot>,
    /// Why connections failed or ended, by kind.
    pub failures: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            slots: (0..n).map(|_| Slot::default()).collect(),
            failures: Mutex::new(BTreeMap::new()),
        })
    }

    fn fail(&self, kind: String) {
        *self
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind)
            .or_default() += 1;
    }
}

pub struct SimAgent {
    pub index: usize,
    pub name: String,
    pub client: quinn::ClientConfig,
    pub endpoint: quinn::Endpoint,
    pub server: SocketAddr,
    pub shared: Arc<Shared>,
}

/// Why a session ended, as a short stable label.
fn kind(err: &quinn::ConnectionError) -> String {
    use quinn::ConnectionError as E;
    match err {
        E::ApplicationClosed(c) => match CloseCode::from_varint(c.error_code) {
            Some(code) => format!("closed: {}", code.label()),
            None => format!("closed: code {}", c.error_code),
        },
        E::TimedOut => "timed out".into(),
        E::Reset => "stateless reset".into(),
        E::TransportError(e) => format!("transport error: {:?}", e.code),
        E::ConnectionClosed(c) => format!("closed at transport level: {:?}", c.error_code),
        E::LocallyClosed => "locally closed".into(),
        E::VersionMismatch => "version mismatch".into(),
        E::CidsExhausted => "connection ids exhausted".into(),
    }
}

struct Ended {
    kind: String,
    retryable: bool,
}

impl Ended {
    fn conn(err: &quinn::ConnectionError) -> Self {
        let retryable = match err {
            quinn::ConnectionError::ApplicationClosed(c) => {
                CloseCode::from_varint(c.error_code).is_none_or(|c| c.is_retryable())
            }
            _ => true,
        };
        Self {
            kind: kind(err),
            retryable,
        }
    }

    fn other(kind: &str) -> Self {
        Self {
            kind: kind.into(),
            retryable: true,
        }
    }
}

impl SimAgent {
    /// Connects, serves, and reconnects with the real agent's jittered
    /// exponential backoff, until `stop` flips.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut placement = Placement::default();
        let mut backoff = Reconnect::default();
        let slot = &self.shared.slots[self.index];
        while !*stop.borrow() {
            let started = Instant::now();
            slot.attempts.fetch_add(1, Ordering::Relaxed);
            let result = self.session(&mut placement, &mut stop).await;
            if slot.connected.swap(false, Ordering::AcqRel) {
                slot.lost_ns.store(mono_ns(), Ordering::Release);
            }
            let Err(ended) = result else { break };
            if *stop.borrow() {
                break;
            }
            self.shared.fail(ended.kind);
            // As oi-agent: a link that stayed up a while starts afresh, and
            // refusals only an operator can fix wait the full cap.
            if started.elapsed() > Duration::from_secs(30) {
                backoff.reset();
            }
            if !ended.retryable {
                backoff.to_cap();
            }
            let delay = backoff.next_delay(rand::random::<f64>());
            tokio::select! {
                _ = stopped(&mut stop) => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn session(
        &self,
        placement: &mut Placement,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Ended> {
        let connecting = self
            .endpoint
            .connect_with(self.client.clone(), self.server, "localhost")
            .map_err(|e| Ended::other(&format!("connect: {e}")))?;
        let conn = tokio::select! {
            c = connecting => c.map_err(|e| Ended::conn(&e))?,
            _ = stopped(stop) => return Ok(()),
        };
        let result = self.serve(&conn, placement, stop).await;
        match &result {
            Ok(()) => conn.close(CloseCode::CloseNormal.varint(), b"agent shutting down"),
            Err(_) => conn.close(CloseCode::CloseProtocolError.varint(), b"bench agent"),
        }
        result
    }

    async fn serve(
        &self,
        conn: &quinn::Connection,
        placement: &mut Placement,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Ended> {
        let slot = &self.shared.slots[self.index];
        let lost = |fallback: &str| match conn.close_reason() {
            Some(e) => Ended::conn(&e),
            None => Ended::other(fallback),
        };
        let (send, recv) = conn.open_bi().await.map_err(|e| Ended::conn(&e))?;
        let mut writer = Writer::new(send);
        let mut reader = Reader::new(recv);
        let hello = self.hello(placement);
        writer
            .send(&agent(agent_message::Msg::Hello(hello.into())))
            .await
            .map_err(|_| lost("send hello"))?;
        let welcome = tokio::select! {
            w = reader.next() => w.map_err(|_| lost("read welcome"))?,
            _ = stopped(stop) => return Ok(()),
        };
        let heartbeat = match welcome.msg {
            Some(coordinator_message::Msg::Welcome(w)) => {
                Duration::from_millis(u64::from(w.heartbeat_interval_ms).max(1000))
            }
            _ => return Err(Ended::other("expected a welcome")),
        };
        let session = slot.sessions.fetch_add(1, Ordering::AcqRel) + 1;
        slot.connected_ns.store(mono_ns(), Ordering::Release);
        slot.connected.store(true, Ordering::Release);
        send_status(&mut writer, placement)
            .await
            .map_err(|_| lost("send status"))?;

        let mut synced = false;
        let mut ticker = tokio::time::interval(heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stopped(stop) => return Ok(()),
                err = conn.closed() => return Err(Ended::conn(&err)),
                _ = ticker.tick() => {
                    let hb = pb::Heartbeat { sent_unix_ms: unix_ms() };
                    writer.send(&agent(agent_message::Msg::Heartbeat(hb))).await.map_err(|_| lost("send heartbeat"))?;
                }
                msg = reader.next() => {
                    let msg = match msg {
                        Ok(m) => m,
                        Err(FrameError::Closed) => {
                            return match tokio::time::timeout(Duration::from_secs(2), conn.closed()).await {
                                Ok(err) => Err(Ended::conn(&err)),
                                Err(_) => Err(Ended::other("stream closed by peer")),
                            };
                        }
                        Err(_) => return Err(lost("read frame")),
                    };
                    match msg.msg {
                        Some(coordinator_message::Msg::Snapshot(s)) => {
                            let p = Placement::try_from(s).map_err(|_| Ended::other("bad snapshot"))?;
                            let applied = placement.judge_snapshot(&p.cursor) == Verdict::Apply;
                            if applied {
                                *placement = p;
                                record_apply(slot, placement);
                            }
                            if !synced {
                                synced = true;
                                slot.synced_ns.store(mono_ns(), Ordering::Release);
                                slot.synced_session.store(session, Ordering::Release);
                            }
                            if applied {
                                send_status(&mut writer, placement).await.map_err(|_| lost("send status"))?;
                            }
                        }
                        Some(coordinator_message::Msg::Update(u)) => {
                            let d = PlacementDelta::try_from(u).map_err(|_| Ended::other("bad update"))?;
                            match placement.judge_delta(&d) {
                                Verdict::Apply => {
                                    placement.apply(d);
                                    record_apply(slot, placement);
                                    send_status(&mut writer, placement).await.map_err(|_| lost("send status"))?;
                                }
                                Verdict::Stale => {}
                                Verdict::Gap => {
                                    let r = pb::ResyncRequest { reason: "gap".into() };
                                    writer.send(&agent(agent_message::Msg::Resync(r))).await.map_err(|_| lost("send resync"))?;
                                }
                            }
                        }
                        // Simulated agents never ask for renewal.
                        Some(coordinator_message::Msg::HeartbeatAck(_))
                        | Some(coordinator_message::Msg::Renewed(_)) => {}
                        Some(coordinator_message::Msg::Welcome(_)) | None => {
                            return Err(Ended::other("unexpected frame"));
                        }
                    }
                }
            }
        }
    }

    fn hello(&self, placement: &Placement) -> Hello {
        Hello {
            protocol_version: oi_proto::PROTOCOL_VERSION,
            hypervisor_name: self.name.clone(),
            role: Role::Private,
            agent_version: "bench".into(),
            runtime: RuntimeInfo {
                name: "bench".into(),
                version: "0".into(),
                api_version: "v1".into(),
            },
            capacity: Capacity {
                cpu_millis: 8000,
                memory_bytes: 32 << 30,
                host_ports: PortRange::new(30000, 32767).expect("literal range"),
                address: "127.0.0.1".into(),
            },
            observed: Some(statuses(placement)),
            applied: placement.cursor.clone(),
        }
    }
}

fn record_apply(slot: &Slot, placement: &Placement) {
    slot.applied_ns.store(mono_ns(), Ordering::Release);
    slot.generation
        .store(placement.cursor.generation, Ordering::Release);
}

/// Every component of the placement, reported running and ready.
fn statuses(placement: &Placement) -> Vec<ComponentStatus> {
    placement
        .components
        .values()
        .map(|c| ComponentStatus {
            id: c.id.clone(),
            spec_hash: c.spec_hash(),
            phase: Phase::Running,
            ready: true,
            containers: c
                .pod
                .containers
                .iter()
                .map(|k| ContainerStatus {
                    name: k.name.clone(),
                    phase: Phase::Running,
                    ..Default::default()
                })
                .collect(),
            reason: String::new(),
            message: String::new(),
        })
        .collect()
}

async fn send_status(writer: &mut Writer, placement: &Placement) -> Result<(), FrameError> {
    let report = StatusReport {
        applied: placement.cursor.clone(),
        components: statuses(placement),
    };
    writer
        .send(&agent(agent_message::Msg::Status(report.into())))
        .await
}

/// Resolves once `stop` flips (the guard `wait_for` returns is not `Send`).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn agent(msg: agent_message::Msg) -> pb::AgentMessage {
    pb::AgentMessage { msg: Some(msg) }
}

use oi_proto::clock::unix_ms;
