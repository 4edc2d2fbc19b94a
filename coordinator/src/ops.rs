//! The operations the coordinator offers to administrators, as plain Rust:
//! the gRPC API (`crate::api`) serves this trait and maps [`OpError`] to
//! wire codes in one place; [`crate::coordinator::Coordinator`] implements it.

use crate::cluster::model::ClusterSpec;
pub use crate::cluster::removal::Leftover;
use crate::tokens::TokenState;
use async_trait::async_trait;
use oi_proto::model::{Phase, Role};
use serde::Serialize;
use std::net::SocketAddr;
use std::time::Duration;

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
    /// The caller's credential (a join token) is not valid.
    #[error("{0}")]
    Unauthenticated(String),
    /// The credential is known but may not be used (expired, used up,
    /// revoked).
    #[error("{0}")]
    PermissionDenied(String),
    /// Too many attempts; retry later.
    #[error("{0}")]
    ResourceExhausted(String),
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
    /// Now while connected; when the link last ended otherwise.
    pub last_seen_unix_ms: Option<u64>,
    /// Components the agent holds from an earlier store (not adopted).
    pub not_adopted: Vec<String>,
    /// A removal in progress, or why the last one stopped; empty: none.
    pub removal: String,
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

/// A join token as listed (never its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinTokenView {
    pub id: String,
    pub role: Role,
    pub created_unix_ms: u64,
    pub expires_unix_ms: u64,
    pub max_uses: u32,
    pub uses: u32,
    pub state: TokenState,
}

/// A new join token with everything a joining machine needs. `Debug` hides
/// the token.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedToken {
    #[serde(flatten)]
    pub view: JoinTokenView,
    /// `<id>.<secret>`, shown once.
    pub token: String,
    /// HOST:PORT of the admin API as joining machines reach it.
    pub join_address: String,
    /// `sha256:<hex>` of the CA certificate's SubjectPublicKeyInfo.
    pub ca_cert_hash: String,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("view", &self.view)
            .field("join_address", &self.join_address)
            .finish_non_exhaustive()
    }
}

impl CreatedToken {
    /// The command to run on a machine to join it.
    pub fn join_command(&self) -> String {
        format!(
            "oi hypervisor join --coordinator {} --token {} --ca-cert-hash {}",
            self.join_address, self.token, self.ca_cert_hash
        )
    }
}

/// A join attempt. `Debug` hides the token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinRequest {
    pub token: String,
    pub name: String,
    pub csr_pem: String,
    /// Where the attempt came from, for the log.
    pub peer: Option<SocketAddr>,
}

impl std::fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinRequest")
            .field("name", &self.name)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// What a joined hypervisor gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined {
    pub certificate_pem: String,
    pub ca_pem: String,
    /// HOST:PORT of the agent link.
    pub link_address: String,
    /// The name on the coordinator's certificate.
    pub server_name: String,
    pub role: Role,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainOutcome {
    /// Clusters moved (in part) off the hypervisor.
    pub rescheduled: Vec<String>,
    /// Clusters that had nowhere else to go and now wait as pending.
    pub pending: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoveOutcome {
    pub drained: DrainOutcome,
    /// Certificates of the hypervisor now refused.
    pub revoked_certificates: u32,
    /// An agent was connected; its connection was closed.
    pub disconnected: bool,
    /// Removed now. Otherwise replicas are still moving off, and the
    /// coordinator finishes the removal when they are gone.
    pub done: bool,
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
}
