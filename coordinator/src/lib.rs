//! The oneinfra coordinator: holds desired state and streams each
//! hypervisor's placement to its agent over mutually authenticated QUIC.

pub mod api;
pub mod bootstrap;
pub mod cluster;
pub mod config;
pub mod coordinator;
pub mod crash_point;
pub mod etcd_admin;
pub mod http;
pub mod join;
pub mod lifecycle;
pub mod link;
pub mod link_pki;
pub mod metrics;
pub mod nodes;
pub mod operations;
pub mod seal;
pub mod state;
pub mod store;
pub mod tokens;
pub mod work;

/// The index, where the API and the tests read it.
pub use state::index;

/// Resolves once a shutdown flag flips to true (or its sender is gone).
pub(crate) async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
