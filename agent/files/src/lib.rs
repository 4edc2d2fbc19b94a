//! The agent's on-disk formats, in a crate of their own so that the `oi`
//! CLI (which writes them at `oi hypervisor join`) shares them with the
//! agent without linking it: the configuration (`config.toml`), the
//! identity files (certificate and key, with their renewal), and the link
//! status file (`link.json`).

pub mod config;
pub mod identity;
pub mod link_file;
