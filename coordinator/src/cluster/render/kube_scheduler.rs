//! kube-scheduler of one replica: talks to its own replica's apiserver on
//! 127.0.0.1 as `system:kube-scheduler` and serves `/healthz` on 127.0.0.1.

use super::{k8s_mount, local_kubeconfig, sizing, tcp, Ctx, Files, Flags, Kind, Replica, ROOT};
use crate::cluster::pki::SCHEDULER_USER;
use crate::cluster::versions::bin;
use oi_proto::model::{Component, Container, PodSpec, Scheme};

pub(super) fn render(ctx: &Ctx<'_>, r: &Replica<'_>) -> Result<Component, super::RenderError> {
    let slot = r.slot;
    let mut files = Files::default();
    let kubeconfig = files.secret(
        "scheduler.conf",
        &local_kubeconfig(ctx, slot, SCHEDULER_USER, &r.certs.scheduler)?,
    );

    let mut f = Flags::default();
    f.set("authentication-kubeconfig", &kubeconfig)
        .set("authorization-kubeconfig", &kubeconfig)
        .set("bind-address", "127.0.0.1")
        .set("kubeconfig", &kubeconfig)
        .set("leader-elect", ctx.leader_elect())
        .set("secure-port", slot.ports.scheduler);
    f.extend(&ctx.flags().scheduler);

    let size = sizing(Kind::Scheduler, ctx.profile());
    Ok(Component {
        incarnation: String::new(),
        id: ctx.id(Kind::Scheduler, slot.index),
        cluster: ctx.cluster().into(),
        pod: PodSpec {
            containers: vec![Container {
                name: Kind::Scheduler.name().into(),
                image: ctx.input.release.images.scheduler.clone(),
                command: vec![bin::KUBE_SCHEDULER.into()],
                args: f.into_args(),
                env: size.env(),
                mounts: vec![k8s_mount()],
                ports: vec![tcp("https", slot.ports.scheduler)],
                resources: size.resources(),
                probe: Some(ctx.probe(Scheme::Https, slot.ports.scheduler, "/healthz")),
                run_as_user: ROOT,
                reload: vec![],
            }],
            files: files.into_vec(),
        },
    })
}
