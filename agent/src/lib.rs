//! The oneinfra agent: runs on each hypervisor, dials the coordinator,
//! receives its placement and runs and supervises the pods it names.

pub mod agent;
pub mod backoff;
pub mod config;
pub mod identity;
pub mod link;
pub mod link_file;
pub mod plan;
pub mod probe;
pub mod reconnect;
pub mod release;
pub mod runtime;
pub mod state_file;
pub mod status;
pub mod supervisor;
