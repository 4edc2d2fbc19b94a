//! Managed Kubernetes clusters: the model and its validation, and (in the
//! modules that follow) PKI, the version matrix, scheduling and rendering.

pub mod kubeconfig;
pub mod model;
pub mod pki;
pub mod render;
pub mod versions;
