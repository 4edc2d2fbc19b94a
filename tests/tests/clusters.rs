//! Cluster lifecycle in-process: a real coordinator (store, scheduler,
//! renderer) and agents over QUIC + mTLS with the fake runtime. What the
//! components do when they run is the real-stack tier's business; here:
//! where they go, what is refused, and that nothing is left behind.

use oi_agent::runtime::fake::FakeRuntime;
use oi_coordinator::cluster::model::ClusterSpec;
use oi_coordinator::operations::{ClusterPhase, OpError, Operations};
use oi_proto::model::Role;
use oi_tests::*;
use std::collections::BTreeSet;
use std::sync::Arc;

async fn fleet(
    dir: &std::path::Path,
    hypervisors: &[(&str, Role)],
) -> (oi_coordinator::coordinator::Running, Vec<TestAgent>) {
    let coord = start_coordinator(dir, None).await.unwrap();
    let c = coord.coordinator.clone();
    let mut agents = Vec::new();
    for (name, role) in hypervisors {
        let link = link_config(&c, coord.link_addr, name, name, *role, dir);
        let mut agent = start_agent(link, Arc::new(FakeRuntime::new())).await;
        wait_connected(&mut agent).await;
        agents.push(agent);
    }
    let n = hypervisors.len();
    eventually("hypervisors registered", || c.hypervisors().len() == n).await;
    (coord, agents)
}

fn ids(agent: &TestAgent) -> BTreeSet<String> {
    agent
        .handle
        .placement
        .borrow()
        .components
        .keys()
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_is_placed_by_role_and_spread_and_deleted_without_leftovers() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let (coord, mut agents) = fleet(
        dir.path(),
        &[
            ("hv-a", Role::Private),
            ("hv-b", Role::Private),
            ("hv-c", Role::Private),
            ("hv-p", Role::Public),
        ],
    )
    .await;
    let c = coord.coordinator.clone();
    let view = c
        .create_cluster(ClusterSpec::new("prod", "1.37.2", 3))
        .await
        .unwrap();
    assert_eq!(view.status.phase, ClusterPhase::Provisioning);
    assert!(
        view.status.endpoint.starts_with("https://127.0.0.1:30"),
        "{}",
        view.status.endpoint
    );

    // One replica (4 components) on each private hypervisor, the ingress on
    // the public one.
    for a in agents.iter_mut().take(3) {
        let name = a.name.clone();
        let p = wait_for(&mut a.handle.placement, &format!("{name} placed"), |p| {
            p.components.len() == 4
        })
        .await;
        let kinds: BTreeSet<String> = p
            .components
            .keys()
            .map(|id| {
                id.trim_start_matches("prod/")
                    .trim_end_matches(char::is_numeric)
                    .to_string()
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "etcd-",
                "kube-apiserver-",
                "kube-controller-manager-",
                "kube-scheduler-"
            ]
            .map(String::from)
            .into()
        );
    }
    let p = wait_for(&mut agents[3].handle.placement, "ingress placed", |p| {
        p.components.len() == 1
    })
    .await;
    assert!(p.components.contains_key("prod/ingress"));

    // The agents report; the coordinator shows per-component phases.
    eventually_async("components reported running", || async {
        c.get_cluster("prod").await.is_ok_and(|v| {
            v.status.components.len() == 13
                && v.status
                    .components
                    .iter()
                    .all(|c| c.phase == oi_proto::model::Phase::Running)
        })
    })
    .await;

    // Refusals store nothing.
    let err = c
        .create_cluster(ClusterSpec::new("prod", "1.37.2", 1))
        .await
        .unwrap_err();
    assert!(matches!(err, OpError::AlreadyExists(_)), "{err}");
    let err = c
        .create_cluster(ClusterSpec::new("Bad", "1.37.2", 1))
        .await
        .unwrap_err();
    assert!(matches!(err, OpError::Invalid(_)), "{err}");
    let err = c
        .create_cluster(ClusterSpec::new("new", "9.9.9", 1))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("oi version --kubernetes"), "{err}");
    assert_eq!(c.list_clusters().await.unwrap().len(), 1);

    // An admin kubeconfig names the endpoint.
    let kc = c.kubeconfig("prod").await.unwrap();
    assert!(kc.contains(&view.status.endpoint), "{kc}");

    // Delete: every component leaves every hypervisor, and the pods go.
    c.delete_cluster("prod").await.unwrap();
    for a in agents.iter_mut() {
        let name = a.name.clone();
        wait_for(&mut a.handle.placement, &format!("{name} emptied"), |p| {
            p.components.is_empty()
        })
        .await;
        let rt = a.runtime.clone();
        eventually("pods removed", || rt.pods().is_empty()).await;
    }
    assert!(matches!(
        c.get_cluster("prod").await.unwrap_err(),
        OpError::NotFound(_)
    ));
    assert!(ids(&agents[0]).is_empty());

    // The ports are free again: a new cluster gets the same lowest ports.
    let again = c
        .create_cluster(ClusterSpec::new("prod2", "1.37.2", 3))
        .await
        .unwrap();
    assert_eq!(again.status.endpoint, view.status.endpoint);

    for a in agents {
        a.handle.shutdown().await;
    }
    coord.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_room_a_cluster_waits_with_a_reason_then_is_placed() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let (coord, mut agents) = fleet(dir.path(), &[("hv-a", Role::Private)]).await;
    let c = coord.coordinator.clone();
    let view = c
        .create_cluster(ClusterSpec::new("waits", "1.37.2", 1))
        .await
        .unwrap();
    assert_eq!(view.status.phase, ClusterPhase::Pending);
    let why = &view.status.conditions[0].message;
    assert!(why.contains("no public hypervisor"), "{why}");
    assert!(
        ids(&agents[0]).is_empty(),
        "nothing is placed while pending"
    );

    // A public hypervisor joins: the cluster is placed on the next retry.
    let link = link_config(
        &c,
        coord.link_addr,
        "hv-p",
        "hv-p",
        Role::Public,
        dir.path(),
    );
    let mut public = start_agent(link, Arc::new(FakeRuntime::new())).await;
    wait_connected(&mut public).await;
    wait_for(&mut public.handle.placement, "ingress placed", |p| {
        p.components.contains_key("waits/ingress")
    })
    .await;
    wait_for(&mut agents[0].handle.placement, "replica placed", |p| {
        p.components.len() == 4
    })
    .await;
    let view = c.get_cluster("waits").await.unwrap();
    assert_ne!(view.status.phase, ClusterPhase::Pending);

    // Two replicas cannot spread over one private hypervisor.
    let view = c
        .create_cluster(ClusterSpec::new("ha", "1.37.2", 3))
        .await
        .unwrap();
    assert_eq!(view.status.phase, ClusterPhase::Pending);
    assert!(
        view.status.conditions[0]
            .message
            .contains("need 3 for 3 replicas, found 1"),
        "{}",
        view.status.conditions[0].message
    );

    public.handle.shutdown().await;
    for a in agents {
        a.handle.shutdown().await;
    }
    coord.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_restart_keeps_clusters_without_changing_any_spec() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let (coord, mut agents) = fleet(
        dir.path(),
        &[("hv-a", Role::Private), ("hv-p", Role::Public)],
    )
    .await;
    let link_addr = coord.link_addr;
    let c = coord.coordinator.clone();
    c.create_cluster(ClusterSpec::new("keep", "1.37.2", 1))
        .await
        .unwrap();
    let before = wait_for(&mut agents[0].handle.placement, "placed", |p| {
        p.components.len() == 4
    })
    .await;
    coord.shutdown().await;

    let coord = start_coordinator(dir.path(), Some(link_addr))
        .await
        .unwrap();
    let c = coord.coordinator.clone();
    for a in agents.iter_mut() {
        wait_connected(a).await;
    }
    let view = c.get_cluster("keep").await.unwrap();
    assert_eq!(view.spec.replicas, 1);
    // Same generation, same specs: agents replace nothing.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let after = agents[0].handle.placement.borrow().clone();
    assert_eq!(*before, *after);
    assert_eq!(agents[0].runtime.create_count("keep/etcd-0"), 1);

    for a in agents {
        a.handle.shutdown().await;
    }
    coord.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_is_done_only_when_every_agent_removed_its_pieces() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let (coord, mut agents) = fleet(
        dir.path(),
        &[("hv-a", Role::Private), ("hv-p", Role::Public)],
    )
    .await;
    let c = coord.coordinator.clone();
    c.create_cluster(ClusterSpec::new("t", "1.37.2", 1))
        .await
        .unwrap();
    for a in &agents {
        let rt = a.runtime.clone();
        eventually("pods run", || !rt.pods().is_empty()).await;
    }
    // hv-a's agent goes away; its pods keep running.
    let a = agents.remove(0);
    let runtime = a.runtime.clone();
    a.handle.shutdown().await;
    eventually("hv-a disconnected", || {
        c.hypervisors().iter().any(|v| {
            v.record.name == "hv-a"
                && matches!(v.link, oi_coordinator::index::LinkState::Disconnected)
        })
    })
    .await;
    assert!(!runtime.pods().is_empty());

    c.delete_cluster("t").await.unwrap();
    // hv-p removes its ingress; hv-a cannot have removed anything.
    eventually("only hv-a is left", || {
        let left = c.cluster_leftovers("t");
        left.len() == 1
            && left[0].hypervisor == "hv-a"
            && left[0].reason.starts_with("disconnected")
    })
    .await;
    assert!(
        agents[0].runtime.pods().is_empty(),
        "hv-p removed its pieces"
    );

    // The agent comes back, applies the deletion, and the deletion is done.
    let link = link_config(
        &c,
        coord.link_addr,
        "hv-a",
        "hv-a",
        Role::Private,
        dir.path(),
    );
    let back = start_agent(link, runtime.clone()).await;
    eventually("nothing left", || c.cluster_leftovers("t").is_empty()).await;
    assert!(runtime.pods().is_empty(), "hv-a removed its pieces");

    back.handle.shutdown().await;
    for a in agents {
        a.handle.shutdown().await;
    }
    coord.shutdown().await;
}

/// The etcd client port of `cluster`'s replica `index`, as its etcd
/// advertises it.
fn etcd_client_port(agents: &[TestAgent], cluster: &str, index: u32) -> u16 {
    let id = format!("{cluster}/etcd-{index}");
    for a in agents {
        if let Some(c) = a.handle.placement.borrow().components.get(&id) {
            for arg in c.pod.containers.iter().flat_map(|k| &k.args) {
                if let Some(url) = arg.strip_prefix("--advertise-client-urls=") {
                    return url.rsplit(':').next().unwrap().parse().unwrap();
                }
            }
        }
    }
    panic!("no {id} placed");
}

/// One tenant's etcd that accepts connections and never answers (a hung
/// machine) holds up only that tenant: while its scale-up step waits on it,
/// another cluster is created, scaled and deleted at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_etcd_stalls_only_its_own_cluster() {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let (coord, mut agents) = fleet(
        dir.path(),
        &[
            ("hv-a", Role::Private),
            ("hv-b", Role::Private),
            ("hv-c", Role::Private),
            ("hv-p", Role::Public),
        ],
    )
    .await;
    let c = coord.coordinator.clone();
    c.create_cluster(ClusterSpec::new("stuck", "1.37.2", 1))
        .await
        .unwrap();
    for a in agents.iter_mut() {
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            a.handle
                .placement
                .wait_for(|p| p.components.contains_key("stuck/etcd-0")),
        )
        .await;
    }
    let port = etcd_client_port(&agents, "stuck", 0);

    // The black hole: connections are accepted, then nothing is said.
    let hole = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let closed_in = closed.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        while let Ok((mut conn, _)) = hole.accept().await {
            let _ = accepted_tx.send(());
            let closed = closed_in.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
                closed.store(true, std::sync::atomic::Ordering::SeqCst);
            });
        }
    });

    c.set_replicas("stuck", 3).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), accepted.recv())
        .await
        .expect("the scale-up step never reached etcd")
        .unwrap();

    // While that step hangs, another tenant's operations go through.
    let started = std::time::Instant::now();
    c.create_cluster(ClusterSpec::new("other", "1.37.2", 1))
        .await
        .unwrap();
    let created = started.elapsed();
    c.set_replicas("other", 3).await.unwrap();
    c.delete_cluster("other").await.unwrap();
    let done = started.elapsed();
    assert!(
        !closed.load(std::sync::atomic::Ordering::SeqCst),
        "another cluster's create waited for the hung etcd to time out \
         (create {created:?}, create+scale+delete {done:?})"
    );
    eprintln!("while one etcd hung: create {created:?}, create+scale+delete {done:?}");
    // The stuck cluster says why it does not grow once its step fails.
    eventually_async("stuck cluster shows its step's failure", || async {
        c.get_cluster("stuck").await.is_ok_and(|v| {
            v.status
                .conditions
                .iter()
                .any(|k| k.kind == "Replicas" && k.message.contains("membership step failed"))
        })
    })
    .await;
    coord.shutdown().await;
}

/// Removing a hypervisor that holds a replica returns at once: the replica
/// must first move off (one etcd member at a time), and until it has, the
/// hypervisor stays joined and connected, cordoned, and shown as being
/// removed. Asking again changes nothing; a restarted coordinator resumes
/// it; uncordon calls it off. (Here no etcd answers, so the move cannot
/// finish; the real-stack tier follows one to its end.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_hypervisor_with_a_replica_returns_at_once_survives_a_restart_and_can_be_called_off(
) {
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let (coord, mut agents) = fleet(
        dir.path(),
        &[
            ("hv-a", Role::Private),
            ("hv-b", Role::Private),
            ("hv-p", Role::Public),
        ],
    )
    .await;
    let c = coord.coordinator.clone();
    c.create_cluster(ClusterSpec::new("one", "1.37.2", 1))
        .await
        .unwrap();
    let holder = loop {
        if let Some(a) = agents.iter().find(|a| ids(a).contains("one/etcd-0")) {
            break a.name.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let started = std::time::Instant::now();
    let r = Operations::remove_hypervisor(&c, &holder).await.unwrap();
    assert!(!r.done, "{r:?}");
    assert_eq!(r.drained.rescheduled, vec!["one".to_string()]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "remove waited {:?}",
        started.elapsed()
    );
    let again = Operations::remove_hypervisor(&c, &holder).await.unwrap();
    assert!(!again.done);
    let list = Operations::list_hypervisors(&c).await.unwrap();
    let h = list
        .iter()
        .find(|h| h.name == holder)
        .expect("still joined");
    assert!(h.cordoned && h.connected, "{h:?}");
    assert!(h.removal.starts_with("removing: "), "{:?}", h.removal);
    let holding = agents.iter_mut().find(|a| a.name == holder).unwrap();
    assert!(
        ids(holding).contains("one/etcd-0"),
        "the replica left before a replacement joined"
    );

    // The removal is recorded: a restarted coordinator resumes it.
    let link_addr = coord.link_addr;
    coord.shutdown().await;
    let coord = start_coordinator(dir.path(), Some(link_addr))
        .await
        .unwrap();
    let c = coord.coordinator.clone();
    for a in agents.iter_mut() {
        wait_connected(a).await;
    }
    eventually_async("the removal resumed after the restart", || async {
        Operations::list_hypervisors(&c).await.is_ok_and(|l| {
            l.iter().any(|h| {
                h.name == holder && h.cordoned && h.removal.starts_with("removing: waiting for")
            })
        })
    })
    .await;

    // Uncordon calls it off: still joined, nothing revoked, no removal.
    c.cordon_hypervisor(&holder, false).await.unwrap();
    eventually_async("the removal called off", || async {
        Operations::list_hypervisors(&c).await.is_ok_and(|l| {
            l.iter()
                .any(|h| h.name == holder && !h.cordoned && h.removal.is_empty() && h.connected)
        })
    })
    .await;
    coord.shutdown().await;
    let coord = start_coordinator(dir.path(), Some(link_addr))
        .await
        .unwrap();
    let list = Operations::list_hypervisors(&coord.coordinator)
        .await
        .unwrap();
    let h = list.iter().find(|h| h.name == holder).unwrap();
    assert!(h.removal.is_empty(), "called off, yet resumed: {h:?}");
    coord.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_tokens_need_a_placed_cluster_survive_a_restart_and_go_with_it() {
    use oi_coordinator::tokens::TokenState;
    use std::time::Duration;
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let (coord, mut agents) = fleet(dir.path(), &[("hv-a", Role::Private)]).await;
    let c = coord.coordinator.clone();
    c.create_cluster(ClusterSpec::new("w", "1.37.2", 1))
        .await
        .unwrap();
    // Pending (no public hypervisor): no endpoint, so no token, nothing stored.
    let e = Operations::create_node_token(&c, "w", Duration::from_secs(3600), "")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, OpError::FailedPrecondition(m) if m.contains("not placed yet")),
        "{e:?}"
    );
    assert!(Operations::list_node_tokens(&c, Some("w"))
        .await
        .unwrap()
        .is_empty());

    let link = link_config(
        &c,
        coord.link_addr,
        "hv-p",
        "hv-p",
        Role::Public,
        dir.path(),
    );
    let mut public = start_agent(link, Arc::new(FakeRuntime::new())).await;
    wait_connected(&mut public).await;
    wait_for(&mut public.handle.placement, "ingress placed", |p| {
        p.components.contains_key("w/ingress")
    })
    .await;
    let created = Operations::create_node_token(&c, "w", Duration::from_secs(3600), "rack 4")
        .await
        .unwrap();
    let endpoint = c.get_cluster("w").await.unwrap().status.endpoint;
    assert_eq!(format!("https://{}", created.endpoint), endpoint);
    assert!(created.ca_cert_hash.starts_with("sha256:") && created.ca_cert_hash.len() == 71);
    assert!(created.token.starts_with(&format!("{}.", created.view.id)));
    for (ttl, what) in [(10, "10s"), (31 * 24 * 3600, "31 days")] {
        let e = Operations::create_node_token(&c, "w", Duration::from_secs(ttl), "")
            .await
            .unwrap_err();
        assert!(matches!(e, OpError::Invalid(_)), "{what}: {e:?}");
    }
    let e = Operations::create_node_token(&c, "w", Duration::from_secs(3600), "a\nb")
        .await
        .unwrap_err();
    assert!(matches!(e, OpError::Invalid(_)), "{e:?}");
    assert!(matches!(
        Operations::create_node_token(&c, "nope", Duration::from_secs(3600), "").await,
        Err(OpError::NotFound(_))
    ));
    assert!(matches!(
        Operations::revoke_node_token(&c, "w", "zzzzzz").await,
        Err(OpError::NotFound(_))
    ));
    assert!(matches!(
        Operations::revoke_node_token(&c, "w", "not-an-id").await,
        Err(OpError::Invalid(_))
    ));

    // A restarted coordinator has them (sealed in the store).
    public.handle.shutdown().await;
    for a in agents.drain(..) {
        a.handle.shutdown().await;
    }
    coord.shutdown().await;
    let coord = start_coordinator(dir.path(), None).await.unwrap();
    let c = coord.coordinator.clone();
    let listed = Operations::list_node_tokens(&c, Some("w")).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, created.view.id);
    assert_eq!(listed[0].description, "rack 4");
    assert_eq!(listed[0].state, TokenState::Active);
    // Revoked even though the cluster's API does not answer here (the
    // Secret's deletion is time-boxed; the node sync retries it).
    Operations::revoke_node_token(&c, "w", &created.view.id)
        .await
        .unwrap();
    let listed = Operations::list_node_tokens(&c, None).await.unwrap();
    assert_eq!(listed[0].state, TokenState::Revoked);
    // The cluster's deletion takes its tokens.
    c.delete_cluster("w").await.unwrap();
    assert!(Operations::list_node_tokens(&c, None)
        .await
        .unwrap()
        .is_empty());
    coord.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addons_change_through_apply_with_nothing_else_and_survive_a_restart() {
    use oi_coordinator::cluster::model::{Addons, Cni};
    use oi_coordinator::operations::ApplyOutcome;
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let (coord, agents) = fleet(dir.path(), &[("hv-a", Role::Private)]).await;
    let c = coord.coordinator.clone();
    let spec = ClusterSpec::new("x", "1.37.2", 1);
    c.create_cluster(spec.clone()).await.unwrap();
    assert_eq!(
        c.get_cluster("x").await.unwrap().spec.addons,
        Addons::default()
    );
    let before = ids(&agents[0]);

    let mut off = spec.clone();
    off.addons = Addons {
        kube_proxy: false,
        dns: false,
        cni: Cni::None,
    };
    let (view, outcome) = Operations::apply_cluster(&c, off.clone()).await.unwrap();
    assert_eq!(outcome, ApplyOutcome::Updated);
    assert_eq!(view.spec.addons, off.addons);
    // Add-ons live in the cluster, not on the hypervisors: no component changes.
    assert_eq!(ids(&agents[0]), before);
    let (_, again) = Operations::apply_cluster(&c, off.clone()).await.unwrap();
    assert_eq!(again, ApplyOutcome::Unchanged);

    // Add-ons and replicas may change in one apply; anything else is refused
    // with nothing changed.
    let mut both = off.clone();
    both.addons.dns = true;
    both.replicas = 3;
    Operations::apply_cluster(&c, both.clone()).await.unwrap();
    let got = c.get_cluster("x").await.unwrap().spec;
    assert!(got.addons.dns && got.replicas == 3, "{got:?}");
    let mut bad = both.clone();
    bad.addons.kube_proxy = true;
    bad.pod_cidr = "10.50.0.0/16".into();
    let e = Operations::apply_cluster(&c, bad).await.unwrap_err();
    assert!(
        matches!(&e, OpError::FailedPrecondition(m) if m.contains("podCidr") && m.contains("addons")),
        "{e:?}"
    );
    assert!(!c.get_cluster("x").await.unwrap().spec.addons.kube_proxy);

    // Stored: a restarted coordinator has the same add-ons.
    for a in agents {
        a.handle.shutdown().await;
    }
    coord.shutdown().await;
    let coord = start_coordinator(dir.path(), None).await.unwrap();
    let got = coord.coordinator.get_cluster("x").await.unwrap().spec;
    assert_eq!(got.addons, both.addons);
    coord.shutdown().await;
}
