//! What the supervisor needs from a container runtime. [`cri`] is the real
//! one (containerd or any CRI v1 runtime); [`fake`] is an in-memory stand-in
//! for unit and in-process tests only.

mod beneath;
pub mod cri;
pub use oi_cri_client as cri_client;
pub mod fake;

use async_trait::async_trait;
use oi_proto::model::{Component, RuntimeInfo};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime cannot be reached or is not usable; nothing was changed.
    #[error("{0}")]
    Unavailable(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// An image is neither present nor pullable.
    #[error("image {image} is not present and could not be pulled: {detail}")]
    ImageMissing { image: String, detail: String },
    #[error("{0}")]
    Other(String),
}

impl RuntimeError {
    /// A short machine-readable reason for status reports.
    pub fn reason(&self) -> &'static str {
        match self {
            RuntimeError::Unavailable(_) => "RuntimeUnavailable",
            RuntimeError::NotFound(_) => "NotFound",
            RuntimeError::ImageMissing { .. } => "ImagePullFailed",
            RuntimeError::Other(_) => "CreateFailed",
        }
    }
}

/// The state of the latest attempt of one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running,
    Exited { code: i32, reason: String },
    Unknown,
}

/// One container of a pod of ours, as the runtime reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedContainer {
    pub name: String,
    pub state: ContainerState,
    /// The attempt number of the latest container: how often it was restarted.
    pub attempt: u32,
    /// Unix milliseconds; 0 when unknown.
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    /// Exit code and reason of the previous attempt, if one is kept.
    pub previous_exit: Option<(i32, String)>,
}

/// One pod of ours: found by its labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedPod {
    pub component_id: String,
    /// The incarnation label (empty: none, or placed before incarnations).
    pub incarnation: String,
    /// The pod hash label ([`oi_proto::model::PodSpec::pod_hash`]); empty
    /// when the sandbox can no longer run containers.
    pub pod_hash: String,
    /// Hash of the files last written for it; empty when unknown.
    pub files_hash: String,
    pub generation: u64,
    pub containers: Vec<ObservedContainer>,
}

#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    async fn info(&self) -> Result<RuntimeInfo, RuntimeError>;

    /// Every pod of ours, and only those.
    async fn list(&self) -> Result<Vec<ObservedPod>, RuntimeError>;

    /// Writes the component's files and runs its pod, replacing any pod of
    /// the same component.
    async fn create(&self, component: &Component, generation: u64) -> Result<(), RuntimeError>;

    /// Starts a new attempt of one container in the component's pod.
    async fn restart_container(
        &self,
        component: &Component,
        container: &str,
        generation: u64,
    ) -> Result<(), RuntimeError>;

    /// Rewrites the component's files and runs each container's `reload`
    /// command in its running container.
    async fn sync_files(&self, component: &Component) -> Result<(), RuntimeError>;

    /// Stops and removes the component's pod; its directory (files and
    /// data) of that incarnation is moved aside, never deleted here.
    async fn remove(&self, component_id: &str, incarnation: &str) -> Result<(), RuntimeError>;
}

/// Connects the CRI runtime named in the agent's configuration.
pub async fn connect(config: &crate::config::Config) -> anyhow::Result<cri::CriRuntime> {
    Ok(
        cri::CriRuntime::connect(&config.cri_socket, &config.state_dir)
            .await?
            .with_retired_retention(config.retired_retention),
    )
}
