//! Managed Kubernetes clusters, as pure functions: the model and its
//! validation, the version matrix, the per-cluster PKI, scheduling,
//! rendering of exact pod specs, and status.

pub mod addons;
pub mod kubeconfig;
pub mod membership;
pub mod moves;
pub mod node_bootstrap;
pub mod node_config;
pub mod node_tokens;
pub use oi_api_types::model;
pub mod pki;
pub mod removal;
pub mod render;
pub mod schedule;
pub mod serving_csr;
pub mod status;
pub mod versions;
