//! The operations the coordinator offers to administrators, as plain Rust:
//! the gRPC API (`crate::api`) serves this trait and maps [`OpError`] to
//! wire codes in one place; [`Coordinator`] implements it below, on top of
//! its cluster and hypervisor lifecycles. The vocabulary is
//! `oi_api_types::views`.

pub use oi_api_types::views::*;

use crate::cluster::model::ClusterSpec;
use crate::cluster::status::component_view;
use crate::coordinator::{Coordinator, HvRemoval};
use crate::state::index::LinkState;
use async_trait::async_trait;
use oi_proto::model::Role;
use std::time::Duration;

#[async_trait]
pub trait Operations: Send + Sync + 'static {
    /// Validates, stores and places a new cluster. Refuses an existing name.
    async fn create_cluster(&self, spec: ClusterSpec) -> Result<ClusterView, OpError>;
    /// Creates the cluster, or changes an existing one to match `spec`.
    async fn apply_cluster(
        &self,
        spec: ClusterSpec,
    ) -> Result<(ClusterView, ApplyOutcome), OpError>;
    async fn get_cluster(&self, name: &str) -> Result<ClusterView, OpError>;
    async fn list_clusters(&self) -> Result<Vec<ClusterView>, OpError>;
    /// Removes every component of the cluster from every hypervisor and
    /// forgets its state.
    async fn delete_cluster(&self, name: &str) -> Result<(), OpError>;
    /// What still holds components of deleted cluster `name`, as the
    /// agents report it; empty once every hypervisor removed them.
    async fn cluster_leftovers(&self, name: &str) -> Result<Vec<Leftover>, OpError>;
    /// An admin kubeconfig (a fresh client certificate) for the cluster.
    async fn kubeconfig(&self, name: &str) -> Result<String, OpError>;
    async fn list_hypervisors(&self) -> Result<Vec<HypervisorSummary>, OpError>;
    /// Components of one cluster, or of all when `cluster` is None.
    async fn list_components(&self, cluster: Option<&str>) -> Result<Vec<ComponentView>, OpError>;
    fn kubernetes_versions(&self) -> Vec<VersionInfo>;

    /// Cordons (no new placements) or uncordons a hypervisor.
    async fn cordon_hypervisor(&self, name: &str, cordoned: bool) -> Result<(), OpError>;
    /// Cordons the hypervisor and moves every cluster's pieces off it.
    /// Refuses (FailedPrecondition, nothing moved) when a cluster there has
    /// nowhere else to go.
    async fn drain_hypervisor(&self, name: &str) -> Result<DrainOutcome, OpError>;
    /// Drains the hypervisor (clusters with nowhere to go become pending),
    /// revokes its certificates, closes its agent's connection and forgets
    /// it. The name can then be joined again.
    async fn remove_hypervisor(&self, name: &str) -> Result<RemoveOutcome, OpError>;
    /// A new join token for hypervisors of `role`.
    async fn create_join_token(
        &self,
        role: Role,
        ttl: Duration,
        max_uses: u32,
    ) -> Result<CreatedToken, OpError>;
    async fn list_join_tokens(&self) -> Result<Vec<JoinTokenView>, OpError>;
    async fn revoke_join_token(&self, id: &str) -> Result<(), OpError>;
    /// Joins a hypervisor: checks the token (and uses it), the name, signs
    /// the CSR. Unauthenticated: the token is the credential.
    async fn join_hypervisor(&self, req: JoinRequest) -> Result<Joined, OpError>;
    /// A new node join token (a bootstrap token) of cluster `cluster`.
    async fn create_node_token(
        &self,
        cluster: &str,
        ttl: Duration,
        description: &str,
    ) -> Result<CreatedNodeToken, OpError>;
    /// Node tokens of one cluster, or of all when `cluster` is None.
    async fn list_node_tokens(&self, cluster: Option<&str>) -> Result<Vec<NodeTokenView>, OpError>;
    /// Revokes a node token: its Secret leaves the cluster.
    async fn revoke_node_token(&self, cluster: &str, id: &str) -> Result<(), OpError>;
    /// The cluster's nodes, as its API reports them.
    async fn list_nodes(&self, cluster: &str) -> Result<Vec<NodeView>, OpError>;
    /// Revokes the token node `name` joined with, then deletes the Node.
    async fn remove_node(&self, cluster: &str, name: &str) -> Result<RemovedNode, OpError>;
}

#[async_trait]
impl Operations for Coordinator {
    async fn create_cluster(&self, spec: ClusterSpec) -> Result<ClusterView, OpError> {
        Coordinator::create_cluster(self, spec).await
    }

    async fn apply_cluster(
        &self,
        spec: ClusterSpec,
    ) -> Result<(ClusterView, ApplyOutcome), OpError> {
        let existing = match Coordinator::get_cluster(self, &spec.name).await {
            Ok(v) => v,
            Err(OpError::NotFound(_)) => {
                return Coordinator::create_cluster(self, spec)
                    .await
                    .map(|v| (v, ApplyOutcome::Created));
            }
            Err(e) => return Err(e),
        };
        let mut spec = spec;
        if spec.kubernetes_version.is_empty() {
            // A spec that names no version keeps the cluster's: applying
            // the same file again never upgrades it.
            spec.kubernetes_version = existing.spec.kubernetes_version.clone();
        }
        if existing.spec == spec {
            return Ok((existing, ApplyOutcome::Unchanged));
        }
        spec.validate(&self.inner.matrix.versions())
            .map_err(|e| OpError::Invalid(e.to_string()))?;
        let mut changeable = existing.spec.clone();
        changeable.replicas = spec.replicas;
        changeable.addons = spec.addons.clone();
        if changeable == spec {
            if existing.spec.addons != spec.addons {
                self.set_addons(&spec.name, spec.addons.clone()).await?;
            }
            if existing.spec.replicas != spec.replicas {
                self.set_replicas(&spec.name, spec.replicas).await?;
            }
            return Ok((
                Coordinator::get_cluster(self, &spec.name).await?,
                ApplyOutcome::Updated,
            ));
        }
        let changed: Vec<&str> = [
            (
                "kubernetesVersion",
                existing.spec.kubernetes_version != spec.kubernetes_version,
            ),
            (
                "serviceCidr",
                existing.spec.service_cidr != spec.service_cidr,
            ),
            ("podCidr", existing.spec.pod_cidr != spec.pod_cidr),
            (
                "apiServerExtraSans",
                existing.spec.api_server_extra_sans != spec.api_server_extra_sans,
            ),
        ]
        .into_iter()
        .filter_map(|(f, c)| c.then_some(f))
        .collect();
        Err(OpError::FailedPrecondition(format!(
            "cluster {:?} exists, and {} of an existing cluster cannot be changed here (only \
             replicas and addons can); nothing was changed",
            spec.name,
            changed.join(", ")
        )))
    }

    async fn get_cluster(&self, name: &str) -> Result<ClusterView, OpError> {
        Coordinator::get_cluster(self, name).await
    }

    async fn list_clusters(&self) -> Result<Vec<ClusterView>, OpError> {
        Coordinator::list_clusters(self).await
    }

    async fn delete_cluster(&self, name: &str) -> Result<(), OpError> {
        Coordinator::delete_cluster(self, name).await
    }

    async fn cluster_leftovers(&self, name: &str) -> Result<Vec<Leftover>, OpError> {
        Ok(Coordinator::cluster_leftovers(self, name))
    }

    async fn kubeconfig(&self, name: &str) -> Result<String, OpError> {
        self.cluster_kubeconfig(name).await
    }

    async fn list_hypervisors(&self) -> Result<Vec<HypervisorSummary>, OpError> {
        let now = oi_proto::clock::unix_ms();
        Ok(self
            .hypervisors()
            .into_iter()
            .map(|v| {
                let containers = v
                    .placement
                    .components
                    .values()
                    .flat_map(|c| &c.pod.containers);
                let (cpu, mem) = containers.fold((0, 0), |(c, m), k| {
                    (c + k.resources.cpu_millis, m + k.resources.memory_bytes)
                });
                let connected = matches!(v.link, LinkState::Connected { .. });
                let not_adopted = v
                    .observed
                    .iter()
                    .flat_map(|r| &r.components)
                    .filter(|c| c.reason == oi_proto::model::REASON_NOT_ADOPTED)
                    .map(|c| c.id.clone())
                    .collect();
                HypervisorSummary {
                    name: v.record.name.clone(),
                    role: v.record.role,
                    address: v.record.address.clone(),
                    connected,
                    cordoned: v.record.cordoned,
                    port_range: v.record.host_ports.to_string(),
                    cpu_millis: v.record.cpu_millis,
                    memory_bytes: v.record.memory_bytes,
                    cpu_millis_requested: cpu,
                    memory_bytes_requested: mem,
                    components: v.placement.components.len() as u32,
                    generation: v.record.generation,
                    // A linked agent is seen now (keepalives every 5 s).
                    last_seen_unix_ms: if connected {
                        Some(now)
                    } else {
                        v.record.last_seen_unix_ms
                    },
                    not_adopted,
                    removal: match self.removal(&v.record.name) {
                        None if v.record.removing_unix_ms.is_some() => {
                            "removing: resuming after a coordinator restart".into()
                        }
                        None => String::new(),
                        Some(HvRemoval::Moving) => format!(
                            "removing: waiting for {} component(s) of clusters to move off",
                            v.placement.components.len()
                        ),
                        Some(HvRemoval::Failed(why)) => format!("removal failed: {why}"),
                    },
                }
            })
            .collect())
    }

    async fn list_components(&self, cluster: Option<&str>) -> Result<Vec<ComponentView>, OpError> {
        if let Some(name) = cluster {
            // A typo should not look like an empty cluster.
            Coordinator::get_cluster(self, name).await?;
        }
        Ok(self
            .inner
            .index
            .placed(cluster)
            .iter()
            .map(component_view)
            .collect())
    }

    fn kubernetes_versions(&self) -> Vec<VersionInfo> {
        self.inner.matrix.infos()
    }

    async fn cordon_hypervisor(&self, name: &str, cordoned: bool) -> Result<(), OpError> {
        Coordinator::cordon_hypervisor(self, name, cordoned).await
    }

    async fn drain_hypervisor(&self, name: &str) -> Result<DrainOutcome, OpError> {
        Coordinator::drain_hypervisor(self, name).await
    }

    async fn remove_hypervisor(&self, name: &str) -> Result<RemoveOutcome, OpError> {
        Coordinator::remove_hypervisor(self, name).await
    }

    async fn create_join_token(
        &self,
        role: Role,
        ttl: Duration,
        max_uses: u32,
    ) -> Result<CreatedToken, OpError> {
        Coordinator::create_join_token(self, role, ttl, max_uses).await
    }

    async fn list_join_tokens(&self) -> Result<Vec<JoinTokenView>, OpError> {
        Coordinator::list_join_tokens(self).await
    }

    async fn revoke_join_token(&self, id: &str) -> Result<(), OpError> {
        Coordinator::revoke_join_token(self, id).await
    }

    async fn join_hypervisor(&self, req: JoinRequest) -> Result<Joined, OpError> {
        Coordinator::join_hypervisor(self, req).await
    }

    async fn create_node_token(
        &self,
        cluster: &str,
        ttl: Duration,
        description: &str,
    ) -> Result<CreatedNodeToken, OpError> {
        Coordinator::create_node_token(self, cluster, ttl, description).await
    }

    async fn list_node_tokens(&self, cluster: Option<&str>) -> Result<Vec<NodeTokenView>, OpError> {
        Coordinator::list_node_tokens(self, cluster).await
    }

    async fn revoke_node_token(&self, cluster: &str, id: &str) -> Result<(), OpError> {
        Coordinator::revoke_node_token(self, cluster, id).await
    }

    async fn list_nodes(&self, cluster: &str) -> Result<Vec<NodeView>, OpError> {
        Coordinator::list_nodes(self, cluster).await
    }

    async fn remove_node(&self, cluster: &str, name: &str) -> Result<RemovedNode, OpError> {
        Coordinator::remove_node(self, cluster, name).await
    }
}
