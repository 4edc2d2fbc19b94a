//! The operations the coordinator offers to administrators, as plain Rust:
//! the gRPC API (`crate::api`) serves this trait and maps [`OpError`] to
//! wire codes in one place; [`crate::coordinator::Coordinator`] implements it.

use crate::cluster::model::ClusterSpec;
use async_trait::async_trait;
use oi_proto::model::{Phase, Role};
use serde::Serialize;

/// Why an operation failed. The message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// Bad input; nothing was stored.
    #[error("{0}")]
    Invalid(String),
    /// The request is valid but the system is not in a state to do it.
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// e.g. "Scheduled", "ComponentsRunning", "Ready".
    #[serde(rename = "type")]
    pub kind: String,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterPhase {
    /// Accepted, not yet placed (e.g. no room: see the Scheduled condition).
    Pending,
    /// Placed; components are starting.
    Provisioning,
    /// The API answers through the ingress.
    Ready,
    /// Was ready; something is not.
    Degraded,
}

impl ClusterPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterPhase::Pending => "pending",
            ClusterPhase::Provisioning => "provisioning",
            ClusterPhase::Ready => "ready",
            ClusterPhase::Degraded => "degraded",
        }
    }
}

/// One component as the coordinator knows it: where it is placed (intent)
/// and what its agent last reported (observed; unknown when disconnected).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentView {
    pub id: String,
    pub cluster: String,
    pub hypervisor: String,
    pub phase: Phase,
    pub ready: bool,
    pub restarts: u32,
    pub reason: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub phase: ClusterPhase,
    /// `https://ADDRESS:PORT`; empty until the cluster is placed.
    pub endpoint: String,
    pub conditions: Vec<Condition>,
    pub components: Vec<ComponentView>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    pub spec: ClusterSpec,
    pub status: ClusterStatus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplyOutcome {
    Created,
    Updated,
    Unchanged,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HypervisorSummary {
    pub name: String,
    pub role: Role,
    pub address: String,
    pub connected: bool,
    pub cordoned: bool,
    pub port_range: String,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    /// Requests of the components placed there.
    pub cpu_millis_requested: u64,
    pub memory_bytes_requested: u64,
    pub components: u32,
    pub generation: u64,
    pub last_seen_unix_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub kubernetes_version: String,
    pub etcd_image: String,
    pub apiserver_image: String,
    pub controller_manager_image: String,
    pub scheduler_image: String,
    pub haproxy_image: String,
}

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
    /// An admin kubeconfig (a fresh client certificate) for the cluster.
    async fn kubeconfig(&self, name: &str) -> Result<String, OpError>;
    async fn list_hypervisors(&self) -> Result<Vec<HypervisorSummary>, OpError>;
    /// Components of one cluster, or of all when `cluster` is None.
    async fn list_components(&self, cluster: Option<&str>) -> Result<Vec<ComponentView>, OpError>;
    fn kubernetes_versions(&self) -> Vec<VersionInfo>;
}
