//! The in-memory index of every hypervisor: its registry record, its desired
//! placement (a `watch` channel, so each connected agent's session wakes up
//! only when *its* placement changes), its link state and what its agent
//! last reported (observed state, `None` when unknown).
//!
//! The index is rebuilt from the store on start. Its desired state (records,
//! placements, reservations) changes only through [`super::WriteTxn`], after
//! the store has committed, so it never runs ahead of durable state; link
//! state and observed state belong to the agents' sessions.

use crate::cluster::model::{Allocation, ReplicaSlot};
use crate::cluster::status::PlacedComponent;
use crate::store::{HypervisorRecord, PlacementChange};
use oi_proto::model::{Component, Placement, StatusReport};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// The link of one hypervisor as the coordinator sees it.
#[derive(Clone, Debug)]
pub enum LinkState {
    Connected {
        conn_id: u64,
        peer: SocketAddr,
        since_unix_ms: u64,
    },
    Disconnected,
}

/// A copy of one hypervisor's entry, for callers outside the index.
#[derive(Clone, Debug)]
pub struct HypervisorView {
    pub record: HypervisorRecord,
    pub placement: Arc<Placement>,
    pub link: LinkState,
    /// What the agent last reported; `None` means unknown (never reported,
    /// or the agent is disconnected).
    pub observed: Option<StatusReport>,
}

struct Entry {
    record: HypervisorRecord,
    placement: watch::Sender<Arc<Placement>>,
    link: LinkState,
    connection: Option<quinn::Connection>,
    observed: Option<StatusReport>,
}

#[derive(Default)]
struct Inner {
    hypervisors: BTreeMap<String, Entry>,
    /// component id -> hypervisor it is placed on
    location: HashMap<String, String>,
    /// Per cluster: replica slots recorded with no pods yet (`adding`),
    /// whose ports and capacity no placement shows but which are taken.
    reserved: BTreeMap<String, Vec<ReplicaSlot>>,
}

pub struct Index {
    epoch: String,
    inner: Mutex<Inner>,
}

impl Index {
    pub fn rebuild(
        epoch: &str,
        hypervisors: Vec<HypervisorRecord>,
        components: Vec<(String, Component)>,
    ) -> Self {
        let mut inner = Inner::default();
        let mut placements: BTreeMap<String, Placement> = hypervisors
            .iter()
            .map(|h| (h.name.clone(), Placement::new(epoch, h.generation)))
            .collect();
        for (hv, c) in components {
            inner.location.insert(c.id.clone(), hv.clone());
            if let Some(p) = placements.get_mut(&hv) {
                p.components.insert(c.id.clone(), c);
            }
        }
        for record in hypervisors {
            let placement = placements
                .remove(&record.name)
                .unwrap_or_else(|| Placement::new(epoch, record.generation));
            inner.hypervisors.insert(
                record.name.clone(),
                Entry {
                    record,
                    placement: watch::Sender::new(Arc::new(placement)),
                    link: LinkState::Disconnected,
                    connection: None,
                    observed: None,
                },
            );
        }
        Self {
            epoch: epoch.to_string(),
            inner: Mutex::new(inner),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Adds or refreshes a hypervisor's record; a new one starts with an
    /// empty placement at the record's generation.
    pub(super) fn upsert_record(&self, record: HypervisorRecord) {
        let mut inner = self.lock();
        match inner.hypervisors.get_mut(&record.name) {
            Some(e) => e.record = record,
            None => {
                let placement = Placement::new(&self.epoch, record.generation);
                inner.hypervisors.insert(
                    record.name.clone(),
                    Entry {
                        record,
                        placement: watch::Sender::new(Arc::new(placement)),
                        link: LinkState::Disconnected,
                        connection: None,
                        observed: None,
                    },
                );
            }
        }
    }

    /// Forgets a hypervisor (after the store did); returns its open
    /// connection, for the caller to close. Its session sees the placement
    /// channel end.
    pub(super) fn remove(&self, name: &str) -> Option<quinn::Connection> {
        let mut inner = self.lock();
        let entry = inner.hypervisors.remove(name)?;
        inner.location.retain(|_, hv| hv != name);
        entry.connection
    }

    pub fn record(&self, name: &str) -> Option<HypervisorRecord> {
        self.lock().hypervisors.get(name).map(|e| e.record.clone())
    }

    pub fn subscribe(&self, name: &str) -> Option<watch::Receiver<Arc<Placement>>> {
        self.lock()
            .hypervisors
            .get(name)
            .map(|e| e.placement.subscribe())
    }

    pub fn placement(&self, name: &str) -> Option<Arc<Placement>> {
        self.lock()
            .hypervisors
            .get(name)
            .map(|e| e.placement.borrow().clone())
    }

    /// Where a component is placed.
    pub fn location(&self, component_id: &str) -> Option<String> {
        self.lock().location.get(component_id).cloned()
    }

    /// Mirrors a committed store write. `generations` holds the new generation
    /// of each hypervisor whose placement changed; only their agents are told.
    pub(super) fn apply(&self, changes: &[PlacementChange], generations: &BTreeMap<String, u64>) {
        let mut inner = self.lock();
        let mut next: BTreeMap<String, Placement> = BTreeMap::new();
        let working = |inner: &Inner, hv: &str, next: &mut BTreeMap<String, Placement>| {
            if !next.contains_key(hv) {
                if let Some(e) = inner.hypervisors.get(hv) {
                    next.insert(hv.to_string(), (**e.placement.borrow()).clone());
                }
            }
        };
        for change in changes {
            match change {
                PlacementChange::Upsert {
                    hypervisor,
                    component,
                } => {
                    if let Some(old) = inner.location.get(&component.id).cloned() {
                        if &old != hypervisor {
                            working(&inner, &old, &mut next);
                            if let Some(p) = next.get_mut(&old) {
                                p.components.remove(&component.id);
                            }
                        }
                    }
                    working(&inner, hypervisor, &mut next);
                    if let Some(p) = next.get_mut(hypervisor) {
                        p.components.insert(component.id.clone(), component.clone());
                    }
                    inner
                        .location
                        .insert(component.id.clone(), hypervisor.clone());
                }
                PlacementChange::Remove { component_id } => {
                    if let Some(old) = inner.location.remove(component_id) {
                        working(&inner, &old, &mut next);
                        if let Some(p) = next.get_mut(&old) {
                            p.components.remove(component_id);
                        }
                    }
                }
            }
        }
        for (hv, mut placement) in next {
            let Some(&generation) = generations.get(&hv) else {
                continue; // unchanged: nobody is woken up
            };
            placement.cursor.generation = generation;
            if let Some(e) = inner.hypervisors.get_mut(&hv) {
                e.record.generation = generation;
                e.placement.send_replace(Arc::new(placement));
            }
        }
    }

    /// Moves a hypervisor's placement to a new generation without changing
    /// its components (after [`crate::store::Store::bump_generation`]).
    pub(super) fn set_generation(&self, name: &str, generation: u64) {
        let mut inner = self.lock();
        if let Some(e) = inner.hypervisors.get_mut(name) {
            e.record.generation = generation;
            let mut p = (**e.placement.borrow()).clone();
            p.cursor.generation = generation;
            e.placement.send_replace(Arc::new(p));
        }
    }

    /// Records a new connection for `name` and returns the one it replaces.
    pub fn attach(
        &self,
        name: &str,
        conn_id: u64,
        connection: quinn::Connection,
        since_unix_ms: u64,
    ) -> Option<quinn::Connection> {
        let mut inner = self.lock();
        let e = inner.hypervisors.get_mut(name)?;
        e.link = LinkState::Connected {
            conn_id,
            peer: connection.remote_address(),
            since_unix_ms,
        };
        e.observed = None;
        e.connection.replace(connection)
    }

    /// Forgets connection `conn_id` of `name`, unless a newer one replaced it.
    /// Returns whether it was the current one.
    pub fn detach(&self, name: &str, conn_id: u64) -> bool {
        let mut inner = self.lock();
        let Some(e) = inner.hypervisors.get_mut(name) else {
            return false;
        };
        match e.link {
            LinkState::Connected { conn_id: cur, .. } if cur == conn_id => {
                e.link = LinkState::Disconnected;
                e.connection = None;
                e.observed = None;
                true
            }
            _ => false,
        }
    }

    pub fn set_observed(&self, name: &str, conn_id: u64, report: StatusReport) {
        let mut inner = self.lock();
        if let Some(e) = inner.hypervisors.get_mut(name) {
            if matches!(e.link, LinkState::Connected { conn_id: cur, .. } if cur == conn_id) {
                e.observed = Some(report);
            }
        }
    }

    pub fn view(&self, name: &str) -> Option<HypervisorView> {
        self.lock().hypervisors.get(name).map(view)
    }

    pub fn views(&self) -> Vec<HypervisorView> {
        self.lock().hypervisors.values().map(view).collect()
    }

    /// Placed components (of one cluster, or all), each with what its agent
    /// last reported, ordered by id.
    pub fn placed(&self, cluster: Option<&str>) -> Vec<PlacedComponent> {
        let inner = self.lock();
        let mut out = Vec::new();
        for (name, e) in &inner.hypervisors {
            let placement = e.placement.borrow();
            let connected = matches!(e.link, LinkState::Connected { .. });
            for c in placement.components.values() {
                if cluster.is_some_and(|want| c.cluster != want) {
                    continue;
                }
                out.push(PlacedComponent {
                    id: c.id.clone(),
                    cluster: c.cluster.clone(),
                    hypervisor: name.clone(),
                    spec_hash: c.spec_hash(),
                    connected,
                    observed: e
                        .observed
                        .as_ref()
                        .and_then(|o| o.components.iter().find(|s| s.id == c.id).cloned()),
                });
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Records which of `cluster`'s slots are taken without pods (after the
    /// store committed its allocation; `None`: the cluster is gone or not
    /// placed).
    pub(super) fn reserve(&self, cluster: &str, allocation: Option<&Allocation>) {
        let slots: Vec<ReplicaSlot> = allocation
            .map(|a| {
                a.replicas
                    .iter()
                    .filter(|s| s.etcd.adding)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let mut inner = self.lock();
        if slots.is_empty() {
            inner.reserved.remove(cluster);
        } else {
            inner.reserved.insert(cluster.to_string(), slots);
        }
    }

    /// Slots taken without pods, with their cluster, except `cluster`'s.
    pub fn reserved_except(&self, cluster: &str) -> Vec<(String, ReplicaSlot)> {
        self.lock()
            .reserved
            .iter()
            .filter(|(c, _)| c.as_str() != cluster)
            .flat_map(|(c, slots)| slots.iter().map(|s| (c.clone(), s.clone())))
            .collect()
    }

    /// Ids of every component of `cluster`.
    pub fn component_ids(&self, cluster: &str) -> Vec<String> {
        let inner = self.lock();
        let mut out: Vec<String> = inner
            .hypervisors
            .values()
            .flat_map(|e| {
                e.placement
                    .borrow()
                    .components
                    .values()
                    .filter(|c| c.cluster == cluster)
                    .map(|c| c.id.clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort();
        out
    }
}

fn view(e: &Entry) -> HypervisorView {
    HypervisorView {
        record: e.record.clone(),
        placement: e.placement.borrow().clone(),
        link: e.link.clone(),
        observed: e.observed.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oi_proto::model::{Container, PodSpec, PortRange, Role};

    fn rec(name: &str, generation: u64) -> HypervisorRecord {
        HypervisorRecord {
            name: name.into(),
            role: Role::Private,
            address: "127.0.0.1".into(),
            host_ports: PortRange::new(30000, 30100).unwrap(),
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            labels: Default::default(),
            cordoned: false,
            last_seen_unix_ms: None,
            generation,
            removing_unix_ms: None,
        }
    }

    fn comp(id: &str, image: &str) -> Component {
        Component {
            incarnation: String::new(),
            id: id.into(),
            cluster: String::new(),
            pod: PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: image.into(),
                    ..Default::default()
                }],
                files: vec![],
            },
        }
    }

    #[test]
    fn only_changed_hypervisors_are_woken() {
        let idx = Index::rebuild(
            "e",
            vec![rec("a", 1), rec("b", 4)],
            vec![("a".into(), comp("x", "1"))],
        );
        let mut a = idx.subscribe("a").unwrap();
        let mut b = idx.subscribe("b").unwrap();
        a.mark_unchanged();
        b.mark_unchanged();
        assert_eq!(a.borrow().components.len(), 1);

        // Move x from a to b: both change.
        let changes = vec![PlacementChange::Upsert {
            hypervisor: "b".into(),
            component: comp("x", "2"),
        }];
        idx.apply(
            &changes,
            &BTreeMap::from([("a".into(), 2), ("b".into(), 5)]),
        );
        assert!(a.has_changed().unwrap() && b.has_changed().unwrap());
        assert!(a.borrow_and_update().components.is_empty());
        assert_eq!(b.borrow_and_update().cursor.generation, 5);
        assert_eq!(idx.location("x").as_deref(), Some("b"));

        // A write the store reported as unchanged wakes nobody.
        idx.apply(&changes, &BTreeMap::new());
        assert!(!a.has_changed().unwrap() && !b.has_changed().unwrap());

        let changes = vec![PlacementChange::Remove {
            component_id: "x".into(),
        }];
        idx.apply(&changes, &BTreeMap::from([("b".into(), 6)]));
        assert!(!a.has_changed().unwrap());
        assert!(b.borrow_and_update().components.is_empty());
        assert_eq!(idx.location("x"), None);
    }
}
