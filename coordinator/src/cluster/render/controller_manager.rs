//! kube-controller-manager of one replica. It talks to its own replica's
//! apiserver on 127.0.0.1 as `system:kube-controller-manager` (never
//! `system:masters`), gives each controller its own service account, and
//! signs node CSRs: client certificates with the API client CA (so the
//! apiserver trusts them) and kubelet serving certificates with the kubelet
//! serving CA (which the apiserver's `--kubelet-certificate-authority`
//! names). It serves `/healthz` on 127.0.0.1 only.

use super::{k8s_mount, local_kubeconfig, sizing, tcp, Ctx, Files, Flags, Kind, Replica, ROOT};
use crate::cluster::pki::CONTROLLER_MANAGER_USER;
use crate::cluster::versions::bin;
use oi_proto::model::{Component, Container, PodSpec, Scheme};

pub(super) fn render(ctx: &Ctx<'_>, r: &Replica<'_>) -> Result<Component, super::RenderError> {
    let slot = r.slot;
    let pki = ctx.input.pki;
    let mut files = Files::default();
    let kubeconfig = files.secret(
        "controller-manager.conf",
        &local_kubeconfig(
            ctx,
            slot,
            CONTROLLER_MANAGER_USER,
            &r.certs.controller_manager,
        )?,
    );
    let root_ca = files.public("pki/ca.crt", &pki.apiserver_ca.cert_pem);
    let client_ca = files.public("pki/client-ca.crt", &pki.client_ca.cert_pem);
    let client_ca_key = files.secret("pki/client-ca.key", pki.client_ca.key.expose());
    let serving_ca = files.public(
        "pki/kubelet-serving-ca.crt",
        &pki.kubelet_serving_ca.cert_pem,
    );
    let serving_ca_key = files.secret(
        "pki/kubelet-serving-ca.key",
        pki.kubelet_serving_ca.key.expose(),
    );
    let proxy_ca = files.public("pki/front-proxy-ca.crt", &pki.front_proxy_ca.cert_pem);
    let sa_key = files.secret("pki/sa.key", pki.service_account.private.expose());

    let spec = ctx.input.spec;
    let mut f = Flags::default();
    f.set("allocate-node-cidrs", "true")
        .set("authentication-kubeconfig", &kubeconfig)
        .set("authorization-kubeconfig", &kubeconfig)
        .set("bind-address", "127.0.0.1")
        .set("client-ca-file", &client_ca)
        .set("cluster-cidr", &spec.pod_cidr)
        .set("cluster-name", &spec.name)
        // One signer per kind of certificate (the per-signer flags replace
        // --cluster-signing-cert-file, which cannot be combined with them).
        .set(
            "cluster-signing-kube-apiserver-client-cert-file",
            &client_ca,
        )
        .set(
            "cluster-signing-kube-apiserver-client-key-file",
            &client_ca_key,
        )
        .set("cluster-signing-kubelet-client-cert-file", &client_ca)
        .set("cluster-signing-kubelet-client-key-file", &client_ca_key)
        .set("cluster-signing-legacy-unknown-cert-file", &client_ca)
        .set("cluster-signing-legacy-unknown-key-file", &client_ca_key)
        .set("cluster-signing-kubelet-serving-cert-file", serving_ca)
        .set("cluster-signing-kubelet-serving-key-file", serving_ca_key)
        .set("controllers", "*,bootstrapsigner,tokencleaner")
        .set("kubeconfig", &kubeconfig)
        .set("leader-elect", ctx.leader_elect())
        .set("requestheader-client-ca-file", proxy_ca)
        .set("root-ca-file", root_ca)
        .set("secure-port", slot.ports.controller_manager)
        .set("service-account-private-key-file", sa_key)
        .set("service-cluster-ip-range", &spec.service_cidr)
        .set("use-service-account-credentials", "true");
    f.extend(&ctx.flags().controller_manager);

    let size = sizing(Kind::ControllerManager, ctx.profile());
    Ok(Component {
        incarnation: String::new(),
        id: ctx.id(Kind::ControllerManager, slot.index),
        cluster: ctx.cluster().into(),
        pod: PodSpec {
            containers: vec![Container {
                name: Kind::ControllerManager.name().into(),
                image: ctx.input.release.images.controller_manager.clone(),
                command: vec![bin::KUBE_CONTROLLER_MANAGER.into()],
                args: f.into_args(),
                env: size.env(),
                mounts: vec![k8s_mount()],
                ports: vec![tcp("https", slot.ports.controller_manager)],
                resources: size.resources(),
                probe: Some(ctx.probe(Scheme::Https, slot.ports.controller_manager, "/healthz")),
                run_as_user: ROOT,
                reload: vec![],
            }],
            files: files.into_vec(),
        },
    })
}
