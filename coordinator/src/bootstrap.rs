//! Bootstraps each managed cluster once its API answers through the
//! ingress: the objects a control plane needs that its components do not
//! create themselves. Applied with server-side apply (idempotent), once per
//! cluster and endpoint per coordinator run, and again when it fails.
//!
//! * `default/kubernetes` endpoints: the ingress address and port. Every
//!   API server runs with `--endpoint-reconciler-type=none`, because each
//!   listens on its own host port and none on the ingress port.
//! * RBAC: the API server's kubelet client may use the kubelet API; the
//!   node bootstrap bindings (bootstrap tokens may create node CSRs, which
//!   are auto-approved for new nodes and for certificate rotation).

use crate::cluster::model::Allocation;
use crate::cluster::pki::APISERVER_KUBELET_CLIENT_USER;
use crate::coordinator::Coordinator;
use crate::operations::ClusterPhase;
use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams};
use std::time::Duration;

const FIELD_MANAGER: &str = "oneinfra";

/// What one cluster needs, as typed objects.
#[derive(Clone, Debug, PartialEq)]
pub struct Objects {
    pub endpoints: Endpoints,
    pub bindings: Vec<ClusterRoleBinding>,
}

fn binding(name: &str, role: &str, kind: &str, subject: &str) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: kind.into(),
            name: subject.into(),
            ..Default::default()
        }]),
    }
}

pub fn objects(allocation: &Allocation) -> Objects {
    let endpoints = Endpoints {
        metadata: ObjectMeta {
            name: Some("kubernetes".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        subsets: Some(vec![EndpointSubset {
            addresses: Some(vec![EndpointAddress {
                ip: allocation.ingress.address.clone(),
                ..Default::default()
            }]),
            ports: Some(vec![EndpointPort {
                name: Some("https".into()),
                port: i32::from(allocation.ingress.port),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }]),
    };
    let bindings = vec![
        binding(
            "oneinfra:kube-apiserver-kubelet-client",
            "system:kubelet-api-admin",
            "User",
            APISERVER_KUBELET_CLIENT_USER,
        ),
        binding(
            "oneinfra:kubelet-bootstrap",
            "system:node-bootstrapper",
            "Group",
            "system:bootstrappers",
        ),
        binding(
            "oneinfra:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            "Group",
            "system:bootstrappers",
        ),
        binding(
            "oneinfra:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            "Group",
            "system:nodes",
        ),
    ];
    Objects {
        endpoints,
        bindings,
    }
}

/// Applies `objects` with the cluster's client.
pub async fn apply(client: kube::Client, objects: &Objects) -> anyhow::Result<()> {
    use anyhow::Context;
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    endpoints
        .patch("kubernetes", &pp, &Patch::Apply(&objects.endpoints))
        .await
        .context("apply default/kubernetes endpoints")?;
    let bindings: Api<ClusterRoleBinding> = Api::all(client);
    for b in &objects.bindings {
        let name = b.metadata.name.clone().unwrap_or_default();
        bindings
            .patch(&name, &pp, &Patch::Apply(b))
            .await
            .with_context(|| format!("apply clusterrolebinding {name}"))?;
    }
    Ok(())
}

impl Coordinator {
    /// Bootstraps every ready cluster not yet bootstrapped at its endpoint.
    pub async fn bootstrap_ready(&self) {
        let Ok(records) = self.inner.store.list_clusters().await else {
            return;
        };
        for record in records {
            let view = self.view(record.clone());
            let name = view.spec.name.clone();
            let endpoint = view.status.endpoint.clone();
            if view.status.phase == ClusterPhase::Ready && record.ready_unix_ms.is_none() {
                // Remembered across restarts: a cluster that stops
                // answering later reads as degraded, not provisioning.
                if let Err(e) = self
                    .inner
                    .store
                    .mark_cluster_ready(&name, oi_proto::clock::unix_ms())
                    .await
                {
                    tracing::warn!(cluster = %name, error = %e, "record that the cluster was ready");
                }
            }
            if view.status.phase != ClusterPhase::Ready
                || self.bootstrapped(&name) == Some(endpoint.clone())
            {
                continue;
            }
            let Some(allocation) = &record.allocation else {
                continue;
            };
            // The client shared with the node sync: one admin certificate
            // per cluster incarnation, not one per attempt.
            let result = match self.cluster_client(&record).await {
                Ok(client) => apply(client, &objects(allocation))
                    .await
                    .map_err(|e| format!("{e:#}")),
                Err(e) => Err(format!("{e:#}")),
            };
            if result.is_err() {
                self.forget_cluster_client(&name);
            }
            let mut done = self
                .inner
                .bootstrapped
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match result {
                Ok(()) => {
                    tracing::info!(cluster = %name, %endpoint, "cluster bootstrapped");
                    done.insert(name, Ok(endpoint));
                }
                Err(e) => {
                    tracing::warn!(cluster = %name, error = %e, "bootstrap cluster");
                    done.insert(name, Err(e));
                }
            }
        }
    }

    /// The endpoint a cluster was bootstrapped at, if it was.
    fn bootstrapped(&self, cluster: &str) -> Option<String> {
        let done = self
            .inner
            .bootstrapped
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        done.get(cluster).and_then(|r| r.as_ref().ok().cloned())
    }
}

/// Bootstraps ready clusters every `period` until `shutdown` flips.
pub(crate) async fn run(
    coordinator: Coordinator,
    period: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = crate::stopped(&mut shutdown) => return,
            _ = tokio::time::sleep(period) => coordinator.bootstrap_ready().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::model::IngressSlot;

    #[test]
    fn endpoints_name_the_ingress() {
        let a = Allocation {
            replicas: vec![],
            ingress: IngressSlot {
                hypervisor: "p".into(),
                address: "10.0.0.9".into(),
                port: 30001,
            },
        };
        let o = objects(&a);
        let subset = &o.endpoints.subsets.as_ref().unwrap()[0];
        assert_eq!(subset.addresses.as_ref().unwrap()[0].ip, "10.0.0.9");
        assert_eq!(subset.ports.as_ref().unwrap()[0].port, 30001);
        let names: Vec<_> = o
            .bindings
            .iter()
            .map(|b| b.metadata.name.clone().unwrap())
            .collect();
        assert!(names.contains(&"oneinfra:kube-apiserver-kubelet-client".to_string()));
        // Nothing is bound to system:masters.
        assert!(o
            .bindings
            .iter()
            .all(|b| b.role_ref.name != "cluster-admin"));
    }
}
