//! kube-apiserver of one replica: serves on all addresses at the replica's
//! apiserver port, advertises the ingress address (so the `kubernetes`
//! Service points where workers can reach), talks to every etcd member of
//! the cluster (its own first) with mTLS.

use super::etcd::client_url;
use super::{k8s_mount, sizing, tcp, Ctx, Files, Flags, Kind, Replica, ROOT};
use crate::cluster::versions::bin;
use oi_proto::model::{Component, Container, PodSpec, Scheme};

pub(super) const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

pub(super) fn render(ctx: &Ctx<'_>, r: &Replica<'_>) -> Component {
    let slot = r.slot;
    let pki = ctx.input.pki;
    let c = r.certs;
    let mut files = Files::default();
    let tls_cert = files.public("pki/apiserver.crt", &c.apiserver.cert_pem);
    let tls_key = files.secret("pki/apiserver.key", c.apiserver.key.expose());
    let client_ca = files.public("pki/client-ca.crt", &pki.client_ca.cert_pem);
    let etcd_ca = files.public("pki/etcd/server-ca.crt", &pki.etcd_server_ca.cert_pem);
    let etcd_cert = files.public(
        "pki/apiserver-etcd-client.crt",
        &c.apiserver_etcd_client.cert_pem,
    );
    let etcd_key = files.secret(
        "pki/apiserver-etcd-client.key",
        c.apiserver_etcd_client.key.expose(),
    );
    let kubelet_ca = files.public(
        "pki/kubelet-serving-ca.crt",
        &pki.kubelet_serving_ca.cert_pem,
    );
    let kubelet_cert = files.public(
        "pki/apiserver-kubelet-client.crt",
        &c.apiserver_kubelet_client.cert_pem,
    );
    let kubelet_key = files.secret(
        "pki/apiserver-kubelet-client.key",
        c.apiserver_kubelet_client.key.expose(),
    );
    let proxy_ca = files.public("pki/front-proxy-ca.crt", &pki.front_proxy_ca.cert_pem);
    let proxy_cert = files.public("pki/front-proxy-client.crt", &c.front_proxy_client.cert_pem);
    let proxy_key = files.secret(
        "pki/front-proxy-client.key",
        c.front_proxy_client.key.expose(),
    );
    let sa_pub = files.public("pki/sa.pub", &pki.service_account.public_pem);
    let sa_key = files.secret("pki/sa.key", pki.service_account.private.expose());

    // Only its own member, like kubeadm's stacked control planes: adding or
    // removing replicas never changes (and restarts) an API server, and the
    // ingress routes around a replica whose etcd is down.
    let etcd_servers = client_url("127.0.0.1", slot.ports.etcd_client);

    let mut f = Flags::default();
    f.set("advertise-address", &ctx.input.allocation.ingress.address)
        .set("allow-privileged", "true")
        .set("authorization-mode", "Node,RBAC")
        .set("bind-address", "0.0.0.0")
        .set("client-ca-file", client_ca)
        .set("enable-admission-plugins", "NodeRestriction")
        .set("enable-bootstrap-token-auth", "true")
        // Every replica listens on its own host port, and none of them on
        // the ingress port: the coordinator writes the `kubernetes`
        // endpoints (ingress address and port) itself, see bootstrap.rs.
        .set("endpoint-reconciler-type", "none")
        .set("etcd-cafile", etcd_ca)
        .set("etcd-certfile", etcd_cert)
        .set("etcd-keyfile", etcd_key)
        .set("etcd-servers", etcd_servers)
        .set("kubelet-certificate-authority", kubelet_ca)
        .set("kubelet-client-certificate", kubelet_cert)
        .set("kubelet-client-key", kubelet_key)
        .set(
            "kubelet-preferred-address-types",
            "InternalIP,ExternalIP,Hostname",
        )
        .set("proxy-client-cert-file", proxy_cert)
        .set("proxy-client-key-file", proxy_key)
        .set("requestheader-allowed-names", "front-proxy-client")
        .set("requestheader-client-ca-file", proxy_ca)
        .set("requestheader-extra-headers-prefix", "X-Remote-Extra-")
        .set("requestheader-group-headers", "X-Remote-Group")
        .set("requestheader-username-headers", "X-Remote-User")
        .set("secure-port", slot.ports.apiserver)
        .set("service-account-issuer", SERVICE_ACCOUNT_ISSUER)
        .set("service-account-key-file", sa_pub)
        .set("service-account-signing-key-file", sa_key)
        .set("service-cluster-ip-range", &ctx.input.spec.service_cidr)
        .set("tls-cert-file", tls_cert)
        .set("tls-private-key-file", tls_key);
    if ctx.profile() == super::Profile::Dense {
        // Watches are served from etcd instead of a per-resource cache:
        // the caches are most of an idle apiserver's heap, and a small
        // cluster has few watchers. No per-minute count of every resource
        // type in etcd (the `etcd_object_counts` metric): ~50 range
        // queries a minute on an otherwise idle cluster.
        f.set("watch-cache", "false")
            .set("profiling", "false")
            .set("etcd-count-metric-poll-period", "0");
    }
    f.extend(&ctx.flags().apiserver);

    let size = sizing(Kind::Apiserver, ctx.profile());
    Component {
        incarnation: String::new(),
        id: ctx.id(Kind::Apiserver, slot.index),
        cluster: ctx.cluster().into(),
        pod: PodSpec {
            containers: vec![Container {
                name: Kind::Apiserver.name().into(),
                image: ctx.input.release.images.apiserver.clone(),
                command: vec![bin::KUBE_APISERVER.into()],
                args: f.into_args(),
                env: size.env(),
                mounts: vec![k8s_mount()],
                ports: vec![tcp("https", slot.ports.apiserver)],
                resources: size.resources(),
                probe: Some(ctx.probe(Scheme::Https, slot.ports.apiserver, "/readyz")),
                run_as_user: ROOT,
                reload: vec![],
            }],
            files: files.into_vec(),
        },
    }
}
