//! oneinfra benchmarks: a fleet of simulated agents against a real
//! coordinator process, and the real agent's footprint against a real
//! containerd. See bench/README.md for the figures and how to reproduce them.

pub mod control;
pub mod coordinator_proc;
pub mod fleet;
pub mod footprint;
pub mod procfs;
pub mod schedule;
pub mod stats;
pub mod sys;
