//! Managed Kubernetes clusters: the model and its validation, and (in the
//! modules that follow) PKI, the version matrix, scheduling and rendering.

pub mod model;
pub mod schedule;
pub mod status;
