//! Named crash points: places between a call to another system (a managed
//! cluster's etcd) and the commit that records its result. With
//! `OI_CRASH_AT=<name>` in its environment the coordinator dies at that
//! point as `kill -9` would (abort: no destructors, no flush), so the
//! real-stack tests can check that every step found half-done converges.
//! Unset (always, in production), a crash point costs one comparison.

use std::sync::OnceLock;

/// Between adding a new replica's etcd learner and recording it.
pub const GROW_AFTER_ADD: &str = "grow-after-add-learner";
/// Between removing a replica's etcd member and recording it.
pub const SHRINK_AFTER_REMOVE: &str = "shrink-after-remove-member";
/// Between recording a new slot's intent and adding its learner.
pub const GROW_AFTER_INTENT: &str = "grow-after-intent";

fn armed() -> Option<&'static str> {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    AT.get_or_init(|| std::env::var("OI_CRASH_AT").ok().filter(|s| !s.is_empty()))
        .as_deref()
}

/// Dies here if `OI_CRASH_AT` names this point.
pub fn here(name: &str) {
    if armed() == Some(name) {
        eprintln!("oi-coordinator: OI_CRASH_AT={name}: dying here as kill -9 would");
        std::process::abort();
    }
}

/// Logs a warning at start when a crash point is armed: it is for tests,
/// never for a coordinator that serves tenants.
pub fn warn_if_armed() {
    if let Some(name) = armed() {
        tracing::warn!(crash_at = name, "OI_CRASH_AT is set: this coordinator will abort at that point (test setting; unset it)");
    }
}
