//! One async mutex per key. Operations on one cluster are ordered by its
//! name's lock; operations on different clusters never wait for each other,
//! however long one of them talks to its cluster's etcd.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OwnedMutexGuard;

#[derive(Default)]
pub(crate) struct KeyedLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    /// Waits for `key`'s lock. Keys nobody holds or waits for are dropped.
    pub(crate) async fn lock(&self, key: &str) -> OwnedMutexGuard<()> {
        let mutex = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            // Held or awaited means another Arc than the map's own.
            locks.retain(|_, m| Arc::strong_count(m) > 1);
            locks.entry(key.to_string()).or_default().clone()
        };
        mutex.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_key_waits_for_itself_only() {
        let locks = KeyedLocks::default();
        let a = locks.lock("a").await;
        // Another key is free while "a" is held.
        let b = tokio::time::timeout(std::time::Duration::from_secs(1), locks.lock("b")).await;
        assert!(b.is_ok(), "b waited for a");
        // The same key waits.
        let again =
            tokio::time::timeout(std::time::Duration::from_millis(50), locks.lock("a")).await;
        assert!(again.is_err(), "a was taken twice");
        drop(a);
        let _a = locks.lock("a").await;
    }
}
