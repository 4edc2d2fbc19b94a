//! Desired state storage. The coordinator only talks to [`Store`]; the
//! embedded SQLite backend is the default, and a distributed backend (etcd)
//! can implement the same trait for coordinator HA.
//!
//! Every method returns only after the write is durable: an acknowledged
//! write survives `kill -9` and power loss.

use crate::cluster::model::{Allocation, ClusterSpec};
use crate::cluster::node_tokens::NodeToken;
use crate::tokens::{JoinToken, TokenRefusal};
use async_trait::async_trait;
use oi_proto::model::{Component, PortRange, Role};
use std::collections::BTreeMap;

pub mod migrations;
pub mod sqlite;
mod sqlite_join;
mod sqlite_node_tokens;

pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unknown hypervisor {0:?}")]
    UnknownHypervisor(String),
    #[error("unknown component {0:?}")]
    UnknownComponent(String),
    #[error("hypervisor {name:?} still has {count} component(s) placed on it")]
    HypervisorNotEmpty { name: String, count: usize },
    #[error(
        "store schema version {found} is newer than this coordinator understands ({supported}); \
         run a newer coordinator"
    )]
    SchemaTooNew { found: u32, supported: u32 },
    #[error("cluster {0:?} already exists")]
    ClusterExists(String),
    #[error("unknown cluster {0:?}")]
    UnknownCluster(String),
    #[error("a join token with id {0:?} exists")]
    TokenExists(String),
    #[error("unknown join token {0:?}")]
    UnknownToken(String),
    #[error(transparent)]
    TokenRefused(TokenRefusal),
    /// A join for a name that is in use.
    #[error("hypervisor name {name:?} is in use: {why}")]
    NameTaken { name: String, why: String },
    #[error("cannot decrypt a record of the store: {0}")]
    Sealed(#[from] crate::seal::SealError),
    #[error("corrupt record in store: {0}")]
    Corrupt(String),
    #[error("store backend: {0}")]
    Backend(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// What an agent tells the coordinator about its machine when it connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HypervisorRegistration {
    pub name: String,
    pub role: Role,
    pub address: String,
    pub host_ports: PortRange,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HypervisorRecord {
    pub name: String,
    pub role: Role,
    pub address: String,
    pub host_ports: PortRange,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub labels: BTreeMap<String, String>,
    pub cordoned: bool,
    /// Unix milliseconds of the last connect or disconnect seen; None if never.
    pub last_seen_unix_ms: Option<u64>,
    /// Generation of this hypervisor's placement; bumped on every change.
    pub generation: u64,
    /// When `oi hypervisor remove` asked for its removal, while replicas
    /// still move off (the coordinator finishes it); `None`: not asked.
    pub removing_unix_ms: Option<u64>,
}

/// A hypervisor certificate the coordinator knows of: issued by a join or a
/// renewal, or first seen when an agent connected with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentIdentity {
    /// The certificate's serial, lowercase hex ([`crate::link_pki::cert_serial`]).
    pub serial: String,
    /// The hypervisor name (the certificate's common name).
    pub name: String,
    /// The role its join token bound; `None` for certificates issued
    /// without a token (seen on connect).
    pub role: Option<Role>,
    pub issued_unix_ms: u64,
    pub not_after_unix_ms: u64,
    /// When `oi hypervisor remove` revoked it; the link refuses it from then.
    pub revoked_unix_ms: Option<u64>,
}

/// One change to the placement of components.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlacementChange {
    /// Put `component` on `hypervisor`, replacing any component with the same
    /// id (on that or on another hypervisor).
    Upsert {
        hypervisor: String,
        component: Component,
    },
    /// Remove the component with this id from wherever it is placed.
    Remove { component_id: String },
}

/// A managed cluster as stored. `secrets` is opaque to the store (the
/// cluster's PKI, serialized by its owner) and sealed at rest.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterRecord {
    pub spec: ClusterSpec,
    pub secrets: Vec<u8>,
    /// Where its pieces run; `None` while it could not be placed.
    pub allocation: Option<Allocation>,
    /// Why it is not placed (empty when placed).
    pub pending_reason: String,
    pub created_unix_ms: u64,
    /// When it was first ready; `None`: never. Written only by
    /// [`Store::mark_cluster_ready`] (a cluster write keeps it).
    pub ready_unix_ms: Option<u64>,
}

impl std::fmt::Debug for ClusterRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterRecord")
            .field("spec", &self.spec)
            .field("secrets", &format_args!("<{} bytes>", self.secrets.len()))
            .field("allocation", &self.allocation)
            .field("pending_reason", &self.pending_reason)
            .finish()
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A random id fixed when the store was created. Placement cursors carry
    /// it as their epoch, so agents can tell a different store apart.
    fn epoch(&self) -> &str;

    async fn list_hypervisors(&self) -> Result<Vec<HypervisorRecord>, StoreError>;

    async fn get_hypervisor(&self, name: &str) -> Result<Option<HypervisorRecord>, StoreError>;

    /// Inserts a hypervisor, or updates the facts its agent reports (role,
    /// address, ports, capacity). Labels, cordon flag and generation are kept.
    async fn register_hypervisor(
        &self,
        reg: &HypervisorRegistration,
    ) -> Result<HypervisorRecord, StoreError>;

    async fn set_cordoned(&self, name: &str, cordoned: bool) -> Result<(), StoreError>;

    /// Records (or, with `None`, clears) a removal in progress.
    async fn set_removing(&self, name: &str, unix_ms: Option<u64>) -> Result<(), StoreError>;

    async fn set_labels(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), StoreError>;

    async fn touch_last_seen(&self, name: &str, unix_ms: u64) -> Result<(), StoreError>;

    /// Removes a hypervisor that has no component placed on it.
    async fn remove_hypervisor(&self, name: &str) -> Result<(), StoreError>;

    /// Every placed component with the name of its hypervisor, ordered by id.
    async fn list_components(&self) -> Result<Vec<(String, Component)>, StoreError>;

    /// Applies all `changes` in one transaction, bumps the generation of every
    /// hypervisor whose placement changed by exactly one, and returns the new
    /// generation of each of them. Nothing is written if any change fails.
    async fn write_placement(
        &self,
        changes: &[PlacementChange],
    ) -> Result<BTreeMap<String, u64>, StoreError>;

    async fn list_clusters(&self) -> Result<Vec<ClusterRecord>, StoreError>;

    async fn get_cluster(&self, name: &str) -> Result<Option<ClusterRecord>, StoreError>;

    /// Writes a cluster record and placement changes in one transaction.
    /// With `create`, an existing cluster of that name is refused
    /// ([`StoreError::ClusterExists`]); otherwise it must exist. Returns the
    /// new generations like [`Store::write_placement`].
    async fn put_cluster(
        &self,
        record: &ClusterRecord,
        create: bool,
        changes: &[PlacementChange],
    ) -> Result<BTreeMap<String, u64>, StoreError>;

    /// Records that cluster `name` was ready at `unix_ms`, unless it was
    /// before (a missing cluster is no error: it was deleted meanwhile).
    async fn mark_cluster_ready(&self, name: &str, unix_ms: u64) -> Result<(), StoreError>;

    /// Deletes a cluster record and applies `changes` (its components'
    /// removal) in one transaction.
    async fn delete_cluster(
        &self,
        name: &str,
        changes: &[PlacementChange],
    ) -> Result<BTreeMap<String, u64>, StoreError>;

    /// Raises a hypervisor's generation to at least `at_least` + 1 and returns
    /// it. Used when an agent holds a generation the store never handed out.
    async fn bump_generation(&self, name: &str, at_least: u64) -> Result<u64, StoreError>;

    /// Stores a new join token; refuses an id that exists
    /// ([`StoreError::TokenExists`]).
    async fn create_join_token(&self, token: &JoinToken) -> Result<(), StoreError>;

    /// Every join token, newest first.
    async fn list_join_tokens(&self) -> Result<Vec<JoinToken>, StoreError>;

    /// Marks a token revoked ([`StoreError::UnknownToken`] if there is none).
    async fn revoke_join_token(&self, id: &str) -> Result<(), StoreError>;

    /// A join, in one transaction: checks the token `id` against the
    /// presented secret hash at `now_unix_ms` ([`JoinToken::check`]:
    /// [`StoreError::TokenRefused`]), checks that `identity.name` is free (no
    /// hypervisor of that name, no unrevoked unexpired identity:
    /// [`StoreError::NameTaken`]), counts one use of the token and records
    /// `identity` with the token's role. Returns the token after the use.
    async fn join(
        &self,
        token_id: &str,
        secret_sha256: [u8; 32],
        now_unix_ms: u64,
        identity: &AgentIdentity,
    ) -> Result<JoinToken, StoreError>;

    /// Records an identity; one with the same serial is kept as it is.
    async fn record_identity(&self, identity: &AgentIdentity) -> Result<(), StoreError>;

    async fn get_identity(&self, serial: &str) -> Result<Option<AgentIdentity>, StoreError>;

    /// The identities of hypervisor `name`, oldest first.
    async fn identities_of(&self, name: &str) -> Result<Vec<AgentIdentity>, StoreError>;

    /// Revokes every identity of `name` not revoked yet; returns how many.
    async fn revoke_identities(&self, name: &str, now_unix_ms: u64) -> Result<u32, StoreError>;

    /// Stores a new node token of an existing cluster
    /// ([`StoreError::UnknownCluster`]); refuses an id the cluster has
    /// ([`StoreError::TokenExists`]). A deleted cluster's tokens go with it.
    async fn create_node_token(&self, token: &NodeToken) -> Result<(), StoreError>;

    /// The node tokens of `cluster`, or of every cluster; newest first.
    async fn list_node_tokens(&self, cluster: Option<&str>) -> Result<Vec<NodeToken>, StoreError>;

    /// Marks a node token revoked at `now_unix_ms`, unless it was before
    /// ([`StoreError::UnknownToken`] if the cluster has no such token).
    async fn revoke_node_token(
        &self,
        cluster: &str,
        id: &str,
        now_unix_ms: u64,
    ) -> Result<(), StoreError>;

    /// Forgets node tokens expired or revoked before `before_unix_ms`;
    /// returns how many.
    async fn forget_node_tokens(&self, before_unix_ms: u64) -> Result<u32, StoreError>;
}
