//! etcd member of one replica: mTLS for clients (etcd client CA) and peers
//! (etcd peer CA), data on the persistent `data` mount, plain-HTTP metrics
//! and `/health` on 127.0.0.1 for the probe.
//!
//! Membership: the members of a new cluster bootstrap together (every one
//! in `--initial-cluster`, state `new`); a replica added later joins the
//! running cluster (`existing`, added as a learner first by the
//! coordinator). Both flags come from the slot's [`EtcdJoin`](crate::cluster::model::EtcdJoin), fixed when
//! the replica was added, so membership changes never change (and restart)
//! the other members. A slot without one (a fresh rendering) bootstraps
//! with every slot.

use super::{host_port, k8s_mount, sizing, tcp, Ctx, Files, Flags, Kind, Replica, ROOT};
use crate::cluster::model::ReplicaSlot;
use crate::cluster::pki::etcd_member_name;
use crate::cluster::versions::bin;
use oi_proto::model::{Component, Container, Mount, PodSpec, Scheme};

pub(super) const DATA_DIR: &str = "/var/lib/etcd";

/// Dense profile: a 512 MiB backend quota (default 2 GiB) is plenty for a
/// small cluster and bounds the memory-mapped database.
const DENSE_QUOTA_BACKEND_BYTES: u64 = 512 * 1024 * 1024;
/// Entries kept in memory between snapshots: kubeadm's 10000, and fewer
/// for Dense.
const SNAPSHOT_COUNT: u32 = 10_000;
const DENSE_SNAPSHOT_COUNT: u32 = 2_500;
/// Dense profile: raft ticks every 250 ms instead of 100 (every member
/// wakes up on each tick, even alone); the election timeout keeps etcd's
/// 10 ticks, so a lost leader is replaced within ~2.5 s instead of ~1 s.
const DENSE_HEARTBEAT_MS: u32 = 250;
const DENSE_ELECTION_TIMEOUT_MS: u32 = 2_500;

pub fn peer_url(address: &str, port: u16) -> String {
    format!("https://{}", host_port(address, port))
}

pub fn client_url(address: &str, port: u16) -> String {
    format!("https://{}", host_port(address, port))
}

/// The hypervisor address and 127.0.0.1 (for the local apiserver), once
/// when they are the same.
fn listen_client_urls(address: &str, port: u16) -> String {
    let own = client_url(address, port);
    let local = client_url("127.0.0.1", port);
    if own == local {
        own
    } else {
        format!("{own},{local}")
    }
}

/// The CAs etcd accepts client certificates from: the etcd client CA, and
/// the etcd server CA because etcd's embedded gRPC gateway dials its own
/// client port presenting the member's serving certificate (which carries
/// clientAuth for that; without this CA etcd logs "rejected connection ...
/// certificate signed by unknown authority" every few seconds and the
/// gateway does not work). Only etcd members hold certificates of the
/// server CA.
pub(super) fn client_trust_bundle(ctx: &Ctx<'_>) -> String {
    let pki = ctx.input.pki;
    format!(
        "{}{}",
        pki.etcd_client_ca.cert_pem, pki.etcd_server_ca.cert_pem
    )
}

/// `--initial-cluster` for members on `slots`: `name=peer-url,...`.
pub fn initial_cluster<'a>(
    cluster: &str,
    slots: impl IntoIterator<Item = &'a ReplicaSlot>,
) -> String {
    slots
        .into_iter()
        .map(|s| {
            format!(
                "{}={}",
                etcd_member_name(cluster, s.index),
                peer_url(&s.address, s.ports.etcd_peer)
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) fn render(ctx: &Ctx<'_>, r: &Replica<'_>) -> Component {
    let slot = r.slot;
    let ports = &slot.ports;
    let mut files = Files::default();
    let cert = files.public("pki/etcd/server.crt", &r.certs.etcd_server.cert_pem);
    let key = files.secret("pki/etcd/server.key", r.certs.etcd_server.key.expose());
    let peer_cert = files.public("pki/etcd/peer.crt", &r.certs.etcd_peer.cert_pem);
    let peer_key = files.secret("pki/etcd/peer.key", r.certs.etcd_peer.key.expose());
    let pki = ctx.input.pki;
    let client_ca = files.public("pki/etcd/client-ca.crt", &client_trust_bundle(ctx));
    let peer_ca = files.public("pki/etcd/peer-ca.crt", &pki.etcd_peer_ca.cert_pem);

    let (initial_cluster, state) = if slot.etcd.initial_cluster.is_empty() {
        (
            initial_cluster(ctx.cluster(), ctx.slots.iter().copied()),
            "new",
        )
    } else {
        let state = if slot.etcd.existing {
            "existing"
        } else {
            "new"
        };
        (slot.etcd.initial_cluster.clone(), state)
    };

    let mut f = Flags::default();
    f.set("name", etcd_member_name(ctx.cluster(), slot.index))
        .set("data-dir", DATA_DIR)
        .set("client-cert-auth", "true")
        .set("trusted-ca-file", client_ca)
        .set("cert-file", cert)
        .set("key-file", key)
        .set("peer-client-cert-auth", "true")
        .set("peer-trusted-ca-file", peer_ca)
        .set("peer-cert-file", peer_cert)
        .set("peer-key-file", peer_key)
        .set(
            "listen-client-urls",
            listen_client_urls(&slot.address, ports.etcd_client),
        )
        .set(
            "advertise-client-urls",
            client_url(&slot.address, ports.etcd_client),
        )
        .set("listen-peer-urls", peer_url(&slot.address, ports.etcd_peer))
        .set(
            "initial-advertise-peer-urls",
            peer_url(&slot.address, ports.etcd_peer),
        )
        .set(
            "listen-metrics-urls",
            format!("http://{}", host_port("127.0.0.1", ports.etcd_metrics)),
        )
        .set("initial-cluster", initial_cluster)
        .set("initial-cluster-state", state)
        .set("initial-cluster-token", ctx.cluster())
        .set("snapshot-count", SNAPSHOT_COUNT);
    if ctx.profile() == super::Profile::Dense {
        f.set("quota-backend-bytes", DENSE_QUOTA_BACKEND_BYTES)
            .set("snapshot-count", DENSE_SNAPSHOT_COUNT)
            .set("heartbeat-interval", DENSE_HEARTBEAT_MS)
            .set("election-timeout", DENSE_ELECTION_TIMEOUT_MS);
    }
    f.extend(&ctx.flags().etcd);

    let size = sizing(Kind::Etcd, ctx.profile());
    Component {
        incarnation: String::new(),
        id: ctx.id(Kind::Etcd, slot.index),
        cluster: ctx.cluster().into(),
        pod: PodSpec {
            containers: vec![Container {
                name: Kind::Etcd.name().into(),
                image: ctx.input.release.images.etcd.clone(),
                command: vec![bin::ETCD.into()],
                args: f.into_args(),
                env: size.env(),
                mounts: vec![
                    k8s_mount(),
                    Mount {
                        source: "data".into(),
                        container_path: DATA_DIR.into(),
                        read_only: false,
                    },
                ],
                ports: vec![
                    tcp("client", ports.etcd_client),
                    tcp("peer", ports.etcd_peer),
                    tcp("metrics", ports.etcd_metrics),
                ],
                resources: size.resources(),
                probe: Some(ctx.probe(Scheme::Http, ports.etcd_metrics, "/health")),
                run_as_user: ROOT,
                reload: vec![],
            }],
            files: files.into_vec(),
        },
    }
}
