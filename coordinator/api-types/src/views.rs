//! What the admin API speaks, as plain Rust: the views of clusters,
//! hypervisors and tokens, the outcomes of operations, and [`OpError`]
//! (mapped to wire codes in one place, the coordinator's API service).

use crate::model::ClusterSpec;
use crate::token::TokenState;
use oi_proto::model::{Phase, Role};
use serde::Serialize;
use std::net::SocketAddr;

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
    /// What a cluster gets when its spec names no version.
    pub default: bool,
    pub etcd_image: String,
    pub apiserver_image: String,
    pub controller_manager_image: String,
    pub scheduler_image: String,
    pub haproxy_image: String,
    pub coredns_image: String,
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

/// What still holds components of a deleted cluster on one hypervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leftover {
    pub hypervisor: String,
    /// Component ids still there; empty when unknown (agent disconnected).
    pub components: Vec<String>,
    pub reason: String,
}

/// A node join token of a cluster, as listed (never its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeTokenView {
    pub cluster: String,
    pub id: String,
    pub description: String,
    pub created_unix_ms: u64,
    pub expires_unix_ms: u64,
    /// Active, Expired or Revoked (node tokens have no use count).
    pub state: TokenState,
}

/// A new node join token with what a joining worker needs. `Debug` hides
/// the token.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedNodeToken {
    #[serde(flatten)]
    pub view: NodeTokenView,
    /// `<id>.<secret>`, shown once.
    pub token: String,
    /// HOST:PORT of the cluster's API (its ingress).
    pub endpoint: String,
    /// `sha256:<hex>` of the cluster CA certificate's SubjectPublicKeyInfo.
    pub ca_cert_hash: String,
}

impl std::fmt::Debug for CreatedNodeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedNodeToken")
            .field("view", &self.view)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl CreatedNodeToken {
    /// `oi node join ...`: run as root on the worker.
    pub fn join_command(&self) -> String {
        format!(
            "oi node join --endpoint {} --token {} --ca-cert-hash {}",
            self.endpoint, self.token, self.ca_cert_hash
        )
    }

    /// The same join with a stock kubeadm.
    pub fn kubeadm_command(&self) -> String {
        format!(
            "kubeadm join {} --token {} --discovery-token-ca-cert-hash {}",
            self.endpoint, self.token, self.ca_cert_hash
        )
    }
}

/// A worker node of a cluster, as the cluster's API reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    pub name: String,
    pub ready: bool,
    pub kubelet_version: String,
    /// `TYPE=ADDRESS`, as the Node reports them.
    pub addresses: Vec<String>,
    /// Empty: not behind the cluster's VPN.
    pub vpn_address: String,
    pub created_unix_ms: u64,
    /// The node token it joined with, when known.
    pub token_id: String,
}

/// What `oi node remove` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemovedNode {
    /// Node tokens revoked because the node joined with them.
    pub revoked_tokens: Vec<String>,
}
