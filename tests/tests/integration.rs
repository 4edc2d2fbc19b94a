//! In-process integration tests: a real coordinator (embedded store on a
//! temp dir) and real agents, over QUIC with mutual TLS on 127.0.0.1. Only
//! the container runtime is a fake here; the real one has its own tier.

use oi_agent::link::LinkStatus;
use oi_agent::runtime::fake::FakeRuntime;
use oi_coordinator::link_pki::LinkCa;
use oi_proto::frame::{FrameReader, FrameWriter};
use oi_proto::model::{Phase, Role};
use oi_proto::pb::{self, agent_message, coordinator_message, CloseCode};
use oi_proto::tls::Identity;
use oi_tests::*;
use std::sync::Arc;
use std::time::Duration;

fn ids(p: &oi_proto::model::Placement) -> Vec<String> {
    p.components.keys().cloned().collect()
}

fn running(status: &Option<Vec<oi_proto::model::ComponentStatus>>, id: &str) -> bool {
    status
        .iter()
        .flatten()
        .any(|s| s.id == id && s.phase == Phase::Running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placements_reach_the_right_agents_only() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let coord = start_coordinator(dir.path(), None).await.unwrap();
    let c = coord.coordinator.clone();
    let mut agents = Vec::new();
    for name in ["hv-a", "hv-b", "hv-c"] {
        let link = link_config(&c, coord.link_addr, name, name, Role::Private, dir.path());
        let mut agent = start_agent(link, Arc::new(FakeRuntime::new())).await;
        wait_connected(&mut agent).await;
        agents.push(agent);
    }
    eventually("three hypervisors registered", || {
        c.hypervisors().len() == 3
    })
    .await;

    c.upsert_component("hv-a", component("x", "img:1"))
        .await
        .unwrap();
    c.upsert_component("hv-b", component("y", "img:1"))
        .await
        .unwrap();

    let a = wait_for(&mut agents[0].handle.placement, "hv-a holds x", |p| {
        ids(p) == ["x"]
    })
    .await;
    let b = wait_for(&mut agents[1].handle.placement, "hv-b holds y", |p| {
        ids(p) == ["y"]
    })
    .await;
    assert_eq!(a.cursor.epoch, c.epoch());
    assert_eq!(b.cursor.epoch, c.epoch());
    wait_for(&mut agents[0].handle.status, "x runs on hv-a", |s| {
        running(s, "x")
    })
    .await;
    wait_for(&mut agents[1].handle.status, "y runs on hv-b", |s| {
        running(s, "y")
    })
    .await;

    // hv-c got its initial (empty) snapshot and nothing else.
    let held_c = agents[2].handle.placement.borrow().clone();
    assert!(held_c.components.is_empty());
    assert_eq!(held_c.cursor.generation, 0);
    assert!(agents[2].runtime.pods().is_empty());
    assert_eq!(agents[0].runtime.pods().len(), 1);
    let metrics = c.metrics().encode();
    assert!(
        metrics.contains("oi_coordinator_placement_messages_total{reason=\"update\"} 2"),
        "exactly two updates were sent, one per affected agent:\n{metrics}"
    );

    // The coordinator sees what the agents observe.
    eventually("coordinator observes x running", || {
        c.hypervisor("hv-a")
            .and_then(|v| v.observed)
            .is_some_and(|o| {
                o.components
                    .iter()
                    .any(|c| c.id == "x" && c.phase == Phase::Running)
            })
    })
    .await;

    for a in agents {
        a.handle.shutdown().await;
    }
    coord.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_reach_the_agent_and_same_spec_never_restarts() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let coord = start_coordinator(dir.path(), None).await.unwrap();
    let c = coord.coordinator.clone();
    let link = link_config(
        &c,
        coord.link_addr,
        "hv-a",
        "hv-a",
        Role::Private,
        dir.path(),
    );
    let mut agent = start_agent(link, Arc::new(FakeRuntime::new())).await;
    wait_connected(&mut agent).await;

    c.upsert_component("hv-a", component("x", "img:1"))
        .await
        .unwrap();
    wait_for(&mut agent.handle.status, "x runs", |s| running(s, "x")).await;
    let first_hash = component("x", "img:1").spec_hash();

    // A changed spec replaces the pod.
    c.upsert_component("hv-a", component("x", "img:2"))
        .await
        .unwrap();
    let new_hash = component("x", "img:2").spec_hash();
    wait_for(&mut agent.handle.status, "x runs the new spec", |s| {
        s.iter()
            .flatten()
            .any(|s| s.id == "x" && s.spec_hash == new_hash && s.phase == Phase::Running)
    })
    .await;
    assert_ne!(first_hash, new_hash);
    assert_eq!(agent.runtime.create_count("x"), 2);

    // The same spec again is no change at all: no generation, no restart.
    let gen_before = agent.handle.placement.borrow().cursor.generation;
    let gens = c
        .upsert_component("hv-a", component("x", "img:2"))
        .await
        .unwrap();
    assert!(
        gens.is_empty(),
        "an identical write bumps nothing: {gens:?}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await; // > one supervisor resync
    assert_eq!(
        agent.handle.placement.borrow().cursor.generation,
        gen_before
    );
    assert_eq!(agent.runtime.create_count("x"), 2);
    assert_eq!(agent.runtime.remove_count("x"), 1);

    // A reloadable pod whose file contents change is reloaded in place.
    let mut r = component("r", "img:1");
    r.pod.containers[0].reload = vec!["/bin/sh".into(), "-c".into(), "kill -HUP 1".into()];
    c.upsert_component("hv-a", r.clone()).await.unwrap();
    wait_for(&mut agent.handle.status, "r runs", |s| running(s, "r")).await;
    r.pod.files[0].content = b"new backends".to_vec();
    c.upsert_component("hv-a", r.clone()).await.unwrap();
    let hash = r.spec_hash();
    wait_for(&mut agent.handle.status, "r reloaded", |s| {
        s.iter()
            .flatten()
            .any(|s| s.id == "r" && s.spec_hash == hash && s.phase == Phase::Running)
    })
    .await;
    assert_eq!(agent.runtime.reload_count("r"), 1);
    assert_eq!(agent.runtime.create_count("r"), 1, "reloaded, not replaced");
    c.remove_component("r").await.unwrap();

    // Removal reaches the agent and removes the pod.
    c.remove_component("x").await.unwrap();
    wait_for(&mut agent.handle.placement, "x removed", |p| {
        p.components.is_empty()
    })
    .await;
    eventually("pod x removed", || agent.runtime.pods().is_empty()).await;

    agent.handle.shutdown().await;
    coord.shutdown().await;
}

/// A scripted coordinator: real QUIC and mTLS, frames written by hand, to
/// feed the real agent link stale and out-of-order placements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_generations_are_ignored_and_gaps_resync() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let ca = LinkCa::generate().unwrap();
    let server = ca.issue_server(&["localhost".into()]).unwrap();
    let server_id =
        Identity::from_pem(server.cert_pem.as_bytes(), server.key_pem.as_bytes()).unwrap();
    let ca_der = oi_proto::tls::parse_certs(ca.cert_pem().as_bytes()).unwrap();
    let cfg = oi_proto::tls::server_config(&server_id, &ca_der).unwrap();
    let endpoint = quinn::Endpoint::server(cfg, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();

    let issued = ca.issue_agent("hv-a").unwrap();
    let mut link = oi_agent::link::LinkConfig {
        identity: Identity::from_pem(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())
            .unwrap(),
        ca: ca_der.clone(),
        ..placeholder_link(dir.path())
    };
    link.coordinator = addr.to_string();
    let mut agent = start_agent(link, Arc::new(FakeRuntime::new())).await;

    let conn = endpoint.accept().await.unwrap().await.unwrap();
    let (send, recv) = conn.accept_bi().await.unwrap();
    let mut w: FrameWriter<_, pb::CoordinatorMessage> = FrameWriter::new(send);
    let mut r: FrameReader<_, pb::AgentMessage> = FrameReader::new(recv);
    let hello = r.next().await.unwrap();
    assert!(matches!(hello.msg, Some(agent_message::Msg::Hello(_))));
    let send = |m: coordinator_message::Msg| pb::CoordinatorMessage { msg: Some(m) };
    let comp = |id: &str| pb::Component::from(component(id, "img:1"));
    let cursor = |g| pb::PlacementCursor {
        epoch: "e1".into(),
        generation: g,
    };
    let update = |base, gen, up: Vec<pb::Component>, rm: Vec<&str>| pb::PlacementUpdate {
        epoch: "e1".into(),
        base_generation: base,
        generation: gen,
        upserted: up,
        removed: rm.into_iter().map(String::from).collect(),
    };
    w.send(&send(coordinator_message::Msg::Welcome(pb::Welcome {
        protocol_version: 1,
        coordinator_version: "script".into(),
        heartbeat_interval_ms: 10_000,
    })))
    .await
    .unwrap();
    w.send(&send(coordinator_message::Msg::Snapshot(pb::Placement {
        cursor: Some(cursor(3)),
        components: vec![comp("x")],
    })))
    .await
    .unwrap();
    w.send(&send(coordinator_message::Msg::Update(update(
        3,
        4,
        vec![comp("y")],
        vec![],
    ))))
    .await
    .unwrap();
    wait_for(&mut agent.handle.placement, "gen 4 with x and y", |p| {
        p.cursor.generation == 4 && ids(p) == ["x", "y"]
    })
    .await;

    // Stale: an update and a snapshot that are not newer are ignored.
    w.send(&send(coordinator_message::Msg::Update(update(
        2,
        3,
        vec![],
        vec!["x"],
    ))))
    .await
    .unwrap();
    w.send(&send(coordinator_message::Msg::Snapshot(pb::Placement {
        cursor: Some(cursor(2)),
        components: vec![],
    })))
    .await
    .unwrap();
    // A gap: the agent asks for a snapshot instead of guessing.
    w.send(&send(coordinator_message::Msg::Update(update(
        9,
        10,
        vec![],
        vec!["y"],
    ))))
    .await
    .unwrap();
    let resync = loop {
        match r.next().await.unwrap().msg {
            Some(agent_message::Msg::Resync(rq)) => break rq,
            _ => continue, // status reports and heartbeats
        }
    };
    assert!(
        resync.reason.contains("does not apply"),
        "{}",
        resync.reason
    );
    let held = agent.handle.placement.borrow().clone();
    assert_eq!(
        (held.cursor.generation, ids(&held)),
        (4, vec!["x".into(), "y".into()])
    );

    // The persisted copy is the applied one.
    let on_disk = oi_agent::state_file::load(&agent.state_path)
        .unwrap()
        .unwrap();
    assert_eq!(on_disk, *held);

    agent.handle.shutdown().await;
    let end = conn.closed().await;
    assert!(
        matches!(&end, quinn::ConnectionError::ApplicationClosed(c) if CloseCode::from_varint(c.error_code) == Some(CloseCode::CloseNormal)),
        "agent closes with a reason on shutdown: {end:?}"
    );
}

fn placeholder_link(dir: &std::path::Path) -> oi_agent::link::LinkConfig {
    let ca = LinkCa::generate().unwrap();
    let issued = ca.issue_agent("hv-a").unwrap();
    oi_agent::link::LinkConfig {
        name: "hv-a".into(),
        role: Role::Private,
        coordinator: "127.0.0.1:1".into(),
        server_name: "localhost".into(),
        identity: Identity::from_pem(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())
            .unwrap(),
        ca: oi_proto::tls::parse_certs(ca.cert_pem().as_bytes()).unwrap(),
        capacity: oi_proto::model::Capacity {
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            host_ports: oi_proto::model::PortRange::new(30000, 30100).unwrap(),
            address: "127.0.0.1".into(),
        },
        state_path: dir.join("hv-a/placement.json"),
        reconnect: oi_agent::reconnect::Reconnect::new(
            Duration::from_millis(50),
            Duration::from_millis(500),
        ),
        identity_files: None,
        status_file: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_restart_resumes_persisted_placement_then_converges() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let coord = start_coordinator(dir.path(), None).await.unwrap();
    let c = coord.coordinator.clone();
    let link_addr = coord.link_addr;
    let runtime = Arc::new(FakeRuntime::new());
    let link = link_config(&c, link_addr, "hv-a", "hv-a", Role::Private, dir.path());
    let mut agent = start_agent(link, runtime.clone()).await;
    wait_connected(&mut agent).await;
    c.upsert_component("hv-a", component("x", "img:1"))
        .await
        .unwrap();
    wait_for(&mut agent.handle.status, "x runs", |s| running(s, "x")).await;

    // 1. Crash the agent while the coordinator is up: pods are adopted.
    agent.handle.abort();
    let link = link_config(&c, link_addr, "hv-a", "hv-a", Role::Private, dir.path());
    let mut agent = start_agent(link, runtime.clone()).await;
    wait_connected(&mut agent).await;
    wait_for(&mut agent.handle.status, "x adopted", |s| running(s, "x")).await;
    assert_eq!(runtime.create_count("x"), 1, "adoption recreates nothing");

    // 2. Coordinator away, agent crashes and restarts: it resumes from disk.
    coord.shutdown().await;
    wait_for(&mut agent.handle.link, "link down", |s| {
        matches!(s, LinkStatus::Connecting { .. })
    })
    .await;
    agent.handle.abort();
    let link = link_config(&c, link_addr, "hv-a", "hv-a", Role::Private, dir.path());
    let mut agent = start_agent(link, runtime.clone()).await;
    assert_eq!(
        ids(&agent.handle.placement.borrow()),
        ["x"],
        "persisted placement"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await; // > one supervisor resync
    assert!(running(&agent.handle.status.borrow(), "x"));
    assert_eq!(runtime.create_count("x"), 1);
    assert_eq!(runtime.remove_count("x"), 0);

    // 3. The coordinator comes back; the agent converges on new changes.
    let coord = start_coordinator(dir.path(), Some(link_addr))
        .await
        .unwrap();
    let c = coord.coordinator.clone();
    wait_connected(&mut agent).await;
    c.upsert_component("hv-a", component("z", "img:1"))
        .await
        .unwrap();
    wait_for(&mut agent.handle.status, "z runs", |s| {
        running(s, "z") && running(s, "x")
    })
    .await;
    assert_eq!(runtime.create_count("x"), 1);

    agent.handle.shutdown().await;
    coord.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_restart_loses_nothing_and_agents_reconverge() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let coord = start_coordinator(dir.path(), None).await.unwrap();
    let link_addr = coord.link_addr;
    let c = coord.coordinator.clone();
    let mut agents = Vec::new();
    for name in ["hv-a", "hv-b", "hv-c"] {
        let link = link_config(&c, link_addr, name, name, Role::Private, dir.path());
        let mut agent = start_agent(link, Arc::new(FakeRuntime::new())).await;
        wait_connected(&mut agent).await;
        agents.push(agent);
    }
    eventually("registered", || c.hypervisors().len() == 3).await;
    c.upsert_component("hv-a", component("x", "img:1"))
        .await
        .unwrap();
    c.upsert_component("hv-b", component("y", "img:1"))
        .await
        .unwrap();
    c.upsert_component("hv-b", component("y2", "img:1"))
        .await
        .unwrap();
    wait_for(&mut agents[1].handle.status, "y and y2 run", |s| {
        running(s, "y") && running(s, "y2")
    })
    .await;
    let before: Vec<_> = c
        .hypervisors()
        .into_iter()
        .map(|v| (v.record.name.clone(), v.placement.clone()))
        .collect();
    let epoch = c.epoch().to_string();

    coord.shutdown().await;
    for a in agents.iter_mut() {
        let status = wait_for(&mut a.handle.link, "link down", |s| {
            matches!(s, LinkStatus::Connecting { .. })
        })
        .await;
        if let LinkStatus::Connecting {
            last_error: Some(e),
            ..
        } = status
        {
            assert_eq!(e.code, Some(CloseCode::CloseNormal), "{e}");
        }
    }

    let coord = start_coordinator(dir.path(), Some(link_addr))
        .await
        .unwrap();
    let c = coord.coordinator.clone();
    assert_eq!(c.epoch(), epoch);
    let after: Vec<_> = c
        .hypervisors()
        .into_iter()
        .map(|v| (v.record.name.clone(), v.placement.clone()))
        .collect();
    assert_eq!(
        before, after,
        "the store gives back every placement as it was"
    );
    for a in agents.iter_mut() {
        wait_connected(a).await;
    }
    eventually("all agents linked again", || {
        c.hypervisors()
            .iter()
            .all(|v| matches!(v.link, oi_coordinator::index::LinkState::Connected { .. }))
    })
    .await;
    // Nothing was recreated, and a new change still flows.
    assert_eq!(agents[0].runtime.create_count("x"), 1);
    assert_eq!(agents[1].runtime.create_count("y"), 1);
    c.upsert_component("hv-c", component("w", "img:1"))
        .await
        .unwrap();
    wait_for(&mut agents[2].handle.status, "w runs", |s| running(s, "w")).await;

    for a in agents {
        a.handle.shutdown().await;
    }
    coord.shutdown().await;
}

/// Opens a raw link with `identity` and sends `hello`; returns how it ended.
async fn raw_hello(
    addr: std::net::SocketAddr,
    identity: Option<&Identity>,
    ca_pem: &str,
    hello: pb::Hello,
) -> quinn::ConnectionError {
    let ca = oi_proto::tls::parse_certs(ca_pem.as_bytes()).unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(oi_proto::tls::client_config(identity, &ca).unwrap());
    let conn = match ep.connect(addr, "localhost").unwrap().await {
        Ok(c) => c,
        Err(e) => return e,
    };
    if let Ok((send, _recv)) = conn.open_bi().await {
        let mut w: FrameWriter<_, pb::AgentMessage> = FrameWriter::new(send);
        let _ = w
            .send(&pb::AgentMessage {
                msg: Some(agent_message::Msg::Hello(hello)),
            })
            .await;
    }
    tokio::time::timeout(CONVERGE, conn.closed())
        .await
        .expect("refused in time")
}

fn close_code(e: &quinn::ConnectionError) -> Option<CloseCode> {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => CloseCode::from_varint(c.error_code),
        _ => None,
    }
}

fn hello(name: &str, version: u32) -> pb::Hello {
    pb::Hello {
        protocol_version: version,
        hypervisor_name: name.into(),
        role: pb::Role::Private as i32,
        agent_version: "test".into(),
        runtime: None,
        capacity: Some(pb::Capacity {
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            host_ports: Some(pb::PortRange {
                first: 30000,
                last: 30100,
            }),
            address: "127.0.0.1".into(),
        }),
        observed: vec![],
        observed_pending: false,
        applied: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_clear_logged_and_counted() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let coord = start_coordinator(dir.path(), None).await.unwrap();
    let c = coord.coordinator.clone();
    let addr = coord.link_addr;

    // No client certificate.
    let end = raw_hello(addr, None, c.ca_pem(), hello("hv-a", 1)).await;
    assert_eq!(
        close_code(&end),
        Some(CloseCode::CloseNoCertificate),
        "{end:?}"
    );
    assert!(oi_proto::close::describe(&end).contains("client certificate required"));

    // Unsupported protocol version.
    let issued = c.issue_agent_identity("hv-a").unwrap();
    let id = Identity::from_pem(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes()).unwrap();
    let end = raw_hello(addr, Some(&id), c.ca_pem(), hello("hv-a", 99)).await;
    assert_eq!(
        close_code(&end),
        Some(CloseCode::CloseUnsupportedVersion),
        "{end:?}"
    );
    assert!(oi_proto::close::describe(&end).contains("version 99 is not supported"));

    // An admin certificate from the same CA is not a hypervisor identity.
    let admin = LinkCa::load_or_create(dir.path())
        .unwrap()
        .issue_admin("admin")
        .unwrap();
    let admin = Identity::from_pem(admin.cert_pem.as_bytes(), admin.key_pem.as_bytes()).unwrap();
    let end = raw_hello(addr, Some(&admin), c.ca_pem(), hello("admin", 1)).await;
    assert_eq!(
        close_code(&end),
        Some(CloseCode::CloseNoCertificate),
        "{end:?}"
    );
    assert!(oi_proto::close::describe(&end).contains("not a hypervisor's"));

    // A certificate from another CA: the TLS handshake itself fails.
    let other = LinkCa::generate().unwrap().issue_agent("hv-a").unwrap();
    let other = Identity::from_pem(other.cert_pem.as_bytes(), other.key_pem.as_bytes()).unwrap();
    let end = raw_hello(addr, Some(&other), c.ca_pem(), hello("hv-a", 1)).await;
    let why = oi_proto::close::describe(&end);
    assert!(close_code(&end).is_none(), "{end:?}");
    assert!(
        why.to_lowercase().contains("certificate")
            || why.contains("UnknownIssuer")
            || why.contains("alert"),
        "{why}"
    );

    // The real agent, named differently from its certificate.
    let link = link_config(&c, addr, "hv-b", "hv-a", Role::Private, dir.path());
    let mut agent = start_agent(link, Arc::new(FakeRuntime::new())).await;
    let status = wait_for(&mut agent.handle.link, "name mismatch refusal", |s| {
        matches!(
            s,
            LinkStatus::Connecting {
                last_error: Some(_),
                ..
            }
        )
    })
    .await;
    let LinkStatus::Connecting {
        last_error: Some(err),
        ..
    } = status
    else {
        unreachable!()
    };
    assert_eq!(err.code, Some(CloseCode::CloseNameMismatch), "{err}");
    assert!(err.reason.contains("\"hv-a\""), "{err}");
    agent.handle.shutdown().await;

    // Nothing refused was registered.
    assert!(c.hypervisors().is_empty());

    // Every refusal is counted by reason on /metrics.
    let body = http_get(coord.metrics_addr.unwrap(), "/metrics")
        .await
        .unwrap();
    for reason in [
        "no_certificate",
        "unsupported_version",
        "tls_handshake",
        "name_mismatch",
    ] {
        let needle = format!("oi_coordinator_rejected_connections_total{{reason=\"{reason}\"}}");
        assert!(body.contains(&needle), "{needle} missing:\n{body}");
    }
    coord.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_on_an_empty_store_sees_what_agents_hold() {
    use oi_coordinator::operations::Operations;
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let coord = start_coordinator(dir.path(), None).await.unwrap();
    let link_addr = coord.link_addr;
    let c = coord.coordinator.clone();
    let link = link_config(&c, link_addr, "hv-a", "hv-a", Role::Private, dir.path());
    let mut agent = start_agent(link, Arc::new(FakeRuntime::new())).await;
    wait_connected(&mut agent).await;
    c.upsert_component("hv-a", component("x", "img:1"))
        .await
        .unwrap();
    wait_for(&mut agent.handle.status, "x runs", |s| running(s, "x")).await;
    coord.shutdown().await;

    // The operator starts the coordinator on an empty store (same link CA).
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("state.db") {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let coord = start_coordinator(dir.path(), Some(link_addr))
        .await
        .unwrap();
    let c = coord.coordinator.clone();
    wait_for(&mut agent.handle.status, "x held, not adopted", |s| {
        s.iter()
            .flatten()
            .any(|s| s.id == "x" && s.reason == oi_proto::model::REASON_NOT_ADOPTED)
    })
    .await;
    eventually_async("the coordinator lists x as not adopted on hv-a", || {
        let c = c.clone();
        async move {
            let list = c.list_hypervisors().await.unwrap();
            list.iter()
                .any(|h| h.name == "hv-a" && h.not_adopted == vec!["x".to_string()])
        }
    })
    .await;
    assert_eq!(agent.runtime.create_count("x"), 1, "x kept running");
    agent.handle.shutdown().await;
    coord.shutdown().await;
}
