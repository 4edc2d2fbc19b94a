//! The I/O shells around the pure decisions of `crate::cluster`: cluster
//! create, delete and placement ([`clusters`]), replica scaling and moves
//! one etcd membership step at a time ([`replicas`]), and hypervisor
//! cordon, drain and removal ([`hypervisors`]). They read the store and
//! the index, talk to tenants' etcd, and commit through `crate::state`.

pub mod clusters;
pub mod hypervisors;
pub mod node_tokens;
pub mod nodes;
pub mod replicas;
