//! The one commit path. [`Writer::run`] holds the write lock and runs its
//! body in a task of its own, so a caller that goes away (a dropped RPC
//! future, a shutdown) never stops a commit between the store and the
//! index. Inside, [`WriteTxn`] is the only way to change durable state that
//! the index mirrors: each of its writes commits to the store, then applies
//! the same change to the index, then updates the metrics.
//!
//! Decisions that depend on the rest of the fleet (scheduling a slot, which
//! takes ports and room) are made inside the body, under the lock, so no
//! other commit lands between what they read and what they write. The body
//! talks to no system but the store: etcd and agents are never called with
//! the write lock held.

use super::index::Index;
use crate::cluster::model::Allocation;
use crate::metrics::Metrics;
use crate::store::{
    ClusterRecord, HypervisorRecord, HypervisorRegistration, PlacementChange, Store, StoreError,
};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{Mutex, OwnedMutexGuard};

struct Shared {
    store: Arc<dyn Store>,
    index: Arc<Index>,
    metrics: Arc<Metrics>,
    lock: Arc<Mutex<()>>,
}

/// The owner of the store's writes and of the index's desired state.
#[derive(Clone)]
pub(crate) struct Writer {
    shared: Arc<Shared>,
}

/// Write access, with the write lock held, inside [`Writer::run`].
pub(crate) struct WriteTxn {
    shared: Arc<Shared>,
    _lock: OwnedMutexGuard<()>,
}

/// What [`WriteTxn::delete_cluster`] removed.
pub(crate) struct Deleted {
    /// Hypervisors that held components of the cluster.
    pub held: BTreeSet<String>,
    pub components: usize,
}

impl Writer {
    /// `clusters` seeds the index's reservations (slots recorded with no
    /// pods yet).
    pub(crate) fn new(
        store: Arc<dyn Store>,
        index: Arc<Index>,
        metrics: Arc<Metrics>,
        clusters: &[ClusterRecord],
    ) -> Self {
        for c in clusters {
            index.reserve(&c.spec.name, c.allocation.as_ref());
        }
        Self {
            shared: Arc::new(Shared {
                store,
                index,
                metrics,
                lock: Arc::new(Mutex::new(())),
            }),
        }
    }

    /// Runs `body` with the write lock held, to completion: it is spawned,
    /// so dropping the returned future does not cancel it. A panic in it is
    /// passed on to the caller.
    pub(crate) async fn run<T, F, Fut>(&self, body: F) -> T
    where
        F: FnOnce(WriteTxn) -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let shared = self.shared.clone();
        let task = tokio::spawn(async move {
            let lock = shared.lock.clone().lock_owned().await;
            body(WriteTxn {
                shared,
                _lock: lock,
            })
            .await
        });
        match task.await {
            Ok(out) => out,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only a runtime shutting down cancels it; nothing waits then.
            Err(e) => panic!("write task cancelled: {e}"),
        }
    }
}

impl WriteTxn {
    /// The index as of every earlier commit.
    pub(crate) fn index(&self) -> &Index {
        &self.shared.index
    }

    /// The store, for reads (and for writes the index does not mirror).
    pub(crate) fn store(&self) -> &dyn Store {
        &*self.shared.store
    }

    fn observe(&self, started: Instant, generations: &BTreeMap<String, u64>) {
        let metrics = &self.shared.metrics;
        metrics.observe_store_write(started.elapsed());
        for (hv, g) in generations {
            metrics.set_generation(hv, *g);
        }
    }

    /// Applies placement changes; returns the new generation of every
    /// hypervisor that changed.
    pub(crate) async fn write_placement(
        &self,
        changes: &[PlacementChange],
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        let started = Instant::now();
        let generations = self.shared.store.write_placement(changes).await?;
        self.shared.index.apply(changes, &generations);
        self.observe(started, &generations);
        Ok(generations)
    }

    /// Writes a cluster record with its placement changes.
    pub(crate) async fn put_cluster(
        &self,
        record: &ClusterRecord,
        create: bool,
        changes: &[PlacementChange],
    ) -> Result<(), StoreError> {
        let started = Instant::now();
        let generations = self
            .shared
            .store
            .put_cluster(record, create, changes)
            .await?;
        self.shared.index.apply(changes, &generations);
        self.shared
            .index
            .reserve(&record.spec.name, record.allocation.as_ref());
        self.observe(started, &generations);
        Ok(())
    }

    /// Deletes a cluster and every component the index places for it.
    pub(crate) async fn delete_cluster(&self, name: &str) -> Result<Deleted, StoreError> {
        let index = &self.shared.index;
        let held: BTreeSet<String> = index
            .views()
            .into_iter()
            .filter(|v| v.placement.components.values().any(|c| c.cluster == name))
            .map(|v| v.record.name)
            .collect();
        let changes: Vec<PlacementChange> = index
            .component_ids(name)
            .into_iter()
            .map(|component_id| PlacementChange::Remove { component_id })
            .collect();
        let started = Instant::now();
        let generations = self.shared.store.delete_cluster(name, &changes).await?;
        index.apply(&changes, &generations);
        index.reserve(name, None::<&Allocation>);
        self.observe(started, &generations);
        Ok(Deleted {
            held,
            components: changes.len(),
        })
    }

    pub(crate) async fn set_cordoned(&self, name: &str, cordoned: bool) -> Result<(), StoreError> {
        self.shared.store.set_cordoned(name, cordoned).await?;
        if let Some(mut rec) = self.shared.index.record(name) {
            rec.cordoned = cordoned;
            self.shared.index.upsert_record(rec);
        }
        Ok(())
    }

    /// Records what an agent reports about its machine (skipping the
    /// durable write when the store holds it already, as it usually does
    /// on a reconnect); returns the record.
    pub(crate) async fn register_hypervisor(
        &self,
        reg: &HypervisorRegistration,
    ) -> Result<HypervisorRecord, StoreError> {
        let index = &self.shared.index;
        let record = match index.record(&reg.name) {
            Some(existing) if same_registration(&existing, reg) => existing,
            _ => {
                let started = Instant::now();
                let record = self.shared.store.register_hypervisor(reg).await?;
                self.shared.metrics.observe_store_write(started.elapsed());
                record
            }
        };
        index.upsert_record(record.clone());
        self.shared
            .metrics
            .set_generation(&record.name, record.generation);
        Ok(record)
    }

    /// Records (or clears) a hypervisor removal in progress.
    pub(crate) async fn set_removing(
        &self,
        name: &str,
        unix_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        self.shared.store.set_removing(name, unix_ms).await?;
        if let Some(mut rec) = self.shared.index.record(name) {
            rec.removing_unix_ms = unix_ms;
            self.shared.index.upsert_record(rec);
        }
        Ok(())
    }

    /// Records when a hypervisor's link was last seen, in the store and in
    /// the index (which `oi hypervisor list` reads).
    pub(crate) async fn touch_last_seen(&self, name: &str, unix_ms: u64) -> Result<(), StoreError> {
        self.shared.store.touch_last_seen(name, unix_ms).await?;
        if let Some(mut rec) = self.shared.index.record(name) {
            rec.last_seen_unix_ms = Some(unix_ms);
            self.shared.index.upsert_record(rec);
        }
        Ok(())
    }

    /// Moves a hypervisor's generation past `at_least`; returns the new one.
    pub(crate) async fn bump_generation(
        &self,
        name: &str,
        at_least: u64,
    ) -> Result<u64, StoreError> {
        let bumped = self.shared.store.bump_generation(name, at_least).await?;
        self.shared.index.set_generation(name, bumped);
        self.shared.metrics.set_generation(name, bumped);
        Ok(bumped)
    }

    /// Forgets a hypervisor (`in_store`: it is registered there too);
    /// returns its open connection, for the caller to close.
    pub(crate) async fn forget_hypervisor(
        &self,
        name: &str,
        in_store: bool,
    ) -> Result<Option<quinn::Connection>, StoreError> {
        if in_store {
            match self.shared.store.remove_hypervisor(name).await {
                Ok(()) | Err(StoreError::UnknownHypervisor(_)) => {}
                Err(e) => return Err(e),
            }
            self.shared.metrics.forget_hypervisor(name);
        }
        Ok(self.shared.index.remove(name))
    }
}

/// Whether the store already holds what this registration would write.
fn same_registration(existing: &HypervisorRecord, reg: &HypervisorRegistration) -> bool {
    existing.name == reg.name
        && existing.role == reg.role
        && existing.address == reg.address
        && existing.host_ports == reg.host_ports
        && existing.cpu_millis == reg.cpu_millis
        && existing.memory_bytes == reg.memory_bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seal::Sealer;
    use crate::store::SqliteStore;
    use oi_proto::model::{PortRange, Role};

    fn writer() -> (Writer, Arc<Index>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db"), Sealer::generate()).unwrap();
        let index = Arc::new(Index::rebuild(store.epoch(), vec![], vec![]));
        let w = Writer::new(
            Arc::new(store),
            index.clone(),
            Arc::new(Metrics::new()),
            &[],
        );
        (w, index, dir)
    }

    fn reg(name: &str) -> HypervisorRegistration {
        HypervisorRegistration {
            name: name.into(),
            role: Role::Private,
            address: "10.0.0.1".into(),
            host_ports: PortRange::new(30000, 30100).unwrap(),
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
        }
    }

    /// A caller that gives up (the RPC's client went away) does not stop a
    /// commit halfway: the store and the index both see it.
    #[tokio::test]
    async fn a_dropped_caller_does_not_cancel_a_commit() {
        let (w, index, _dir) = writer();
        let (entered_tx, entered_rx) = tokio::sync::oneshot::channel();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let w2 = w.clone();
        let call = tokio::spawn(async move {
            w2.run(move |tx| async move {
                let _ = entered_tx.send(());
                let _ = go_rx.await;
                tx.register_hypervisor(&reg("a")).await.unwrap();
            })
            .await
        });
        entered_rx.await.unwrap();
        call.abort(); // the caller is gone mid-commit
        let _ = call.await;
        go_tx.send(()).unwrap();
        // The next write waits for the first to finish, then sees it.
        let seen = w
            .run(|tx| async move { tx.index().record("a").is_some() })
            .await;
        assert!(seen, "the index has the first commit");
        assert!(index.record("a").is_some());
    }

    /// `oi hypervisor list` reads LAST SEEN from the index: a disconnect
    /// recorded in the store shows there at once.
    #[tokio::test]
    async fn last_seen_reaches_the_index() {
        let (w, index, _dir) = writer();
        w.run(|tx| async move {
            tx.register_hypervisor(&reg("a")).await.unwrap();
            tx.touch_last_seen("a", 1234).await.unwrap();
        })
        .await;
        assert_eq!(index.record("a").unwrap().last_seen_unix_ms, Some(1234));
    }

    #[test]
    fn registration_is_written_only_when_it_changes() {
        let reg = HypervisorRegistration {
            name: "hv-1".into(),
            role: Role::Private,
            address: "10.0.0.1".into(),
            host_ports: PortRange::new(30000, 30100).unwrap(),
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
        };
        let rec = HypervisorRecord {
            name: reg.name.clone(),
            role: reg.role,
            address: reg.address.clone(),
            host_ports: reg.host_ports,
            cpu_millis: reg.cpu_millis,
            memory_bytes: reg.memory_bytes,
            labels: [("zone".to_string(), "a".to_string())].into(),
            cordoned: true,
            last_seen_unix_ms: Some(5),
            generation: 9,
            removing_unix_ms: None,
        };
        // What the agent does not report (labels, cordon, ...) is no change.
        assert!(same_registration(&rec, &reg));
        let changes: [fn(&mut HypervisorRegistration); 5] = [
            |r| r.role = Role::Public,
            |r| r.address = "10.0.0.2".into(),
            |r| r.host_ports = PortRange::new(30000, 30101).unwrap(),
            |r| r.cpu_millis += 1,
            |r| r.memory_bytes += 1,
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut r = reg.clone();
            change(&mut r);
            assert!(!same_registration(&rec, &r), "change {i}");
        }
    }
}
