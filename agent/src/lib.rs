//! The oneinfra agent: runs on each hypervisor, dials the coordinator,
//! receives its placement and runs and supervises the pods it names.

pub mod agent;
/// The on-disk formats, shared with the `oi` CLI.
pub use oi_agent_files::{config, identity, link_file};
pub mod backoff;
pub mod link;
pub mod plan;
pub mod probe;
pub mod reconnect;
pub mod release;
pub mod runtime;
pub mod state_file;
pub mod status;
pub mod supervisor;
