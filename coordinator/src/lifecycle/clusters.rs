//! Cluster lifecycle on the coordinator: validate, generate the PKI,
//! schedule, render, and store the cluster together with its components in
//! one transaction; delete it the same way. A cluster that cannot be placed
//! is stored as pending and placed by the work loop (`crate::work`).
//!
//! The decisions are the pure functions of `crate::cluster` (validation,
//! scheduling, rendering, status); this file is the shell around them.

use crate::cluster::model::{Allocation, ClusterSpec, EtcdJoin};
use crate::cluster::pki::{ClusterPki, ReplicaCerts};
use crate::cluster::render::{self, RenderInput};
use crate::cluster::schedule::{self, HypervisorInfo, Snapshot};
use crate::cluster::status;
use crate::coordinator::Coordinator;
use crate::operations::{ClusterView, OpError};
use crate::state::index::LinkState;
use crate::store::{ClusterRecord, PlacementChange, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a cluster keeps secret: its CAs and each replica's leaves. Stored
/// sealed; `Debug` of its parts hides keys.
#[derive(Clone, Serialize, Deserialize)]
pub struct ClusterSecrets {
    /// This cluster's incarnation: a random id minted at create, never
    /// changed. A cluster deleted and created again under the same name
    /// gets another, so none of its components can run on the earlier
    /// one's data (see `Component::incarnation`). Kept with the PKI, which
    /// is per incarnation too. Empty for clusters created before.
    #[serde(default)]
    pub incarnation: String,
    pub pki: ClusterPki,
    pub replicas: BTreeMap<u32, ReplicaCerts>,
}

impl ClusterSecrets {
    pub(crate) fn encode(&self) -> Result<Vec<u8>, OpError> {
        serde_json::to_vec(self)
            .map_err(|e| OpError::Internal(format!("encode cluster secrets: {e}")))
    }

    pub(crate) fn decode(name: &str, bytes: &[u8]) -> Result<Self, OpError> {
        serde_json::from_slice(bytes)
            .map_err(|e| OpError::Internal(format!("decode secrets of cluster {name}: {e}")))
    }
}

pub(crate) fn store_err(e: StoreError) -> OpError {
    match e {
        StoreError::ClusterExists(n) => OpError::AlreadyExists(format!(
            "cluster {n:?} already exists; pick another name or `oi cluster delete {n}` first"
        )),
        StoreError::UnknownCluster(n) => OpError::NotFound(format!(
            "cluster {n:?} not found; `oi cluster list` shows the clusters"
        )),
        StoreError::UnknownHypervisor(n) => {
            OpError::NotFound(format!("hypervisor {n:?} not found"))
        }
        other => OpError::Internal(other.to_string()),
    }
}

use oi_proto::clock::unix_ms;

impl Coordinator {
    /// The scheduler's view of the fleet, without `cluster`'s own
    /// components. Consistent only with the write lock held (inside
    /// [`Coordinator::commit_cluster_with`]), or as an estimate.
    pub(crate) fn snapshot(&self, cluster: &str) -> Snapshot {
        let views = self.inner.index.views();
        let hypervisors = views
            .iter()
            .map(|v| HypervisorInfo {
                name: v.record.name.clone(),
                role: v.record.role,
                address: v.record.address.clone(),
                host_ports: v.record.host_ports,
                cpu_millis: v.record.cpu_millis,
                memory_bytes: v.record.memory_bytes,
                cordoned: v.record.cordoned,
                connected: matches!(v.link, LinkState::Connected { .. }),
            })
            .collect();
        let placements: Vec<(String, &oi_proto::model::Placement)> = views
            .iter()
            .map(|v| (v.record.name.clone(), &*v.placement))
            .collect();
        let mut snapshot = Snapshot::from_placements(hypervisors, &placements, cluster);
        // Slots recorded before their pods (a member being added) are taken.
        let replica = render::replica_resources(self.inner.profile);
        for (other, slot) in self.inner.index.reserved_except(cluster) {
            snapshot.reserve(&other, &slot, replica);
        }
        snapshot
    }

    /// Schedules `replicas` replicas of `spec` and renders them, issuing
    /// leaves for new replicas into `secrets`. Returns the allocation and
    /// the placement changes.
    pub(crate) fn place(
        &self,
        spec: &ClusterSpec,
        secrets: &mut ClusterSecrets,
        current: Option<&Allocation>,
        replicas: u32,
    ) -> Result<(Allocation, Vec<PlacementChange>), PlaceError> {
        let allocation = self.schedule_slots(spec, current, replicas)?;
        let changes = self.render_changes(spec, secrets, current, &allocation)?;
        Ok((allocation, changes))
    }

    /// Where `replicas` replicas of `spec` go. New replicas of a new cluster
    /// bootstrap etcd together; a replica added to a placed cluster joins it
    /// (its member must be added as a learner before it is committed).
    pub(crate) fn schedule_slots(
        &self,
        spec: &ClusterSpec,
        current: Option<&Allocation>,
        replicas: u32,
    ) -> Result<Allocation, PlaceError> {
        let inner = &self.inner;
        let request = schedule::Request {
            replicas,
            replica: render::replica_resources(inner.profile),
            ingress: render::ingress_resources(inner.profile),
            current: current.cloned(),
            exclude: inner
                .draining
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        };
        let mut allocation = schedule::schedule(&self.snapshot(&spec.name), &request)
            .map_err(|e| PlaceError::NoRoom(e.to_string()))?;
        let everyone = render::etcd::initial_cluster(&spec.name, &allocation.replicas);
        for slot in allocation.replicas.iter_mut() {
            if slot.etcd.initial_cluster.is_empty() {
                slot.etcd = EtcdJoin {
                    initial_cluster: everyone.clone(),
                    existing: current.is_some(),
                    pending: current.is_some(),
                    ..Default::default()
                };
            }
        }
        Ok(allocation)
    }

    /// Renders `allocation`: every component of the cluster, and the
    /// removal of those it no longer has. Leaves are issued for replicas
    /// that are new or moved; kept replicas keep theirs (and their specs).
    pub(crate) fn render_changes(
        &self,
        spec: &ClusterSpec,
        secrets: &mut ClusterSecrets,
        current: Option<&Allocation>,
        allocation: &Allocation,
    ) -> Result<Vec<PlacementChange>, PlaceError> {
        let inner = &self.inner;
        let release = inner.matrix.get(&spec.kubernetes_version).ok_or_else(|| {
            PlaceError::Fatal(OpError::Invalid(format!(
                "Kubernetes version {} is no longer in the version matrix",
                spec.kubernetes_version
            )))
        })?;
        let keep: BTreeMap<u32, ReplicaCerts> = std::mem::take(&mut secrets.replicas)
            .into_iter()
            .filter(|(i, _)| {
                // Kept only if the slot (address, ports) and the ingress are
                // unchanged: both are in the certificates' SANs.
                current.is_some_and(|c| {
                    c.ingress == allocation.ingress
                        && c.replicas.iter().any(|r| {
                            r.index == *i && allocation.replicas.iter().any(|n| same_place(r, n))
                        })
                })
            })
            .collect();
        secrets.replicas = keep;
        for slot in &allocation.replicas {
            if !secrets.replicas.contains_key(&slot.index) {
                let certs = secrets
                    .pki
                    .issue_replica(spec, allocation, slot)
                    .map_err(|e| {
                        PlaceError::Fatal(OpError::Internal(format!("issue certificates: {e:#}")))
                    })?;
                secrets.replicas.insert(slot.index, certs);
            }
        }
        let placed = render::render_cluster(&RenderInput {
            spec,
            incarnation: &secrets.incarnation,
            release,
            pki: &secrets.pki,
            replica_certs: &secrets.replicas,
            allocation,
            profile: inner.profile,
        })
        .map_err(|e| PlaceError::Fatal(OpError::Internal(format!("render cluster: {e}"))))?;
        let mut changes = Vec::with_capacity(placed.len());
        for p in placed {
            crate::coordinator::validate_component(&p.component)
                .map_err(|e| PlaceError::Fatal(OpError::Internal(e.to_string())))?;
            changes.push(PlacementChange::Upsert {
                hypervisor: p.hypervisor,
                component: p.component,
            });
        }
        // Components of this cluster that the new rendering no longer has.
        let rendered: std::collections::BTreeSet<String> = changes
            .iter()
            .filter_map(|c| match c {
                PlacementChange::Upsert { component, .. } => Some(component.id.clone()),
                PlacementChange::Remove { .. } => None,
            })
            .collect();
        for id in inner.index.component_ids(&spec.name) {
            if !rendered.contains(&id) {
                changes.push(PlacementChange::Remove { component_id: id });
            }
        }
        Ok(changes)
    }

    /// Writes a cluster record and its placement changes, then tells the
    /// affected agents.
    pub(crate) async fn commit_cluster(
        &self,
        record: &ClusterRecord,
        create: bool,
        changes: Vec<PlacementChange>,
    ) -> Result<(), OpError> {
        let record = record.clone();
        self.commit_cluster_with(create, move |_| Ok((Some((record, changes)), ())))
            .await
    }

    /// Decides a cluster write with the write lock held, so what it reads
    /// of the fleet (free ports and room, for scheduling) is what it writes
    /// against, then commits it: to completion, even if the caller goes
    /// away. `decide` is pure (it talks to no other system) and returns
    /// what to write, if anything, and what to return.
    pub(crate) async fn commit_cluster_with<T, F>(
        &self,
        create: bool,
        decide: F,
    ) -> Result<T, OpError>
    where
        F: FnOnce(&Coordinator) -> Result<(Option<ClusterWrite>, T), OpError> + Send + 'static,
        T: Send + 'static,
    {
        let this = self.clone();
        self.inner
            .writer
            .run(move |tx| async move {
                let (write, out) = decide(&this)?;
                if let Some((record, changes)) = write {
                    tx.put_cluster(&record, create, &changes)
                        .await
                        .map_err(store_err)?;
                }
                Ok(out)
            })
            .await
    }

    pub async fn create_cluster(&self, mut spec: ClusterSpec) -> Result<ClusterView, OpError> {
        if spec.kubernetes_version.is_empty() {
            spec.kubernetes_version = self.inner.matrix.default_version().to_string();
        }
        spec.validate(&self.inner.matrix.versions())
            .map_err(|e| OpError::Invalid(e.to_string()))?;
        let _cluster = self.inner.cluster_locks.lock(&spec.name).await;
        if self
            .inner
            .store
            .get_cluster(&spec.name)
            .await
            .map_err(store_err)?
            .is_some()
        {
            return Err(store_err(StoreError::ClusterExists(spec.name.clone())));
        }
        let name = spec.name.clone();
        let pki = tokio::task::spawn_blocking(move || ClusterPki::generate(&name))
            .await
            .map_err(|e| OpError::Internal(format!("generate PKI: {e}")))?
            .map_err(|e| OpError::Internal(format!("generate PKI: {e:#}")))?;
        let secrets = ClusterSecrets {
            incarnation: uuid::Uuid::new_v4().simple().to_string(),
            pki,
            replicas: BTreeMap::new(),
        };
        let record = self
            .commit_cluster_with(true, move |c| {
                let mut secrets = secrets;
                let (allocation, pending_reason, changes) =
                    match c.place(&spec, &mut secrets, None, spec.replicas) {
                        Ok((a, changes)) => (Some(a), String::new(), changes),
                        Err(PlaceError::NoRoom(why)) => (None, why, Vec::new()),
                        Err(PlaceError::Fatal(e)) => return Err(e),
                    };
                let record = ClusterRecord {
                    spec,
                    secrets: secrets.encode()?,
                    allocation,
                    pending_reason,
                    created_unix_ms: unix_ms(),
                    ready_unix_ms: None,
                };
                Ok((Some((record.clone(), changes)), record))
            })
            .await?;
        tracing::info!(
            cluster = %record.spec.name,
            version = %record.spec.kubernetes_version,
            replicas = record.spec.replicas,
            placed = record.allocation.is_some(),
            "cluster created"
        );
        Ok(self.view(record))
    }

    pub async fn delete_cluster(&self, name: &str) -> Result<(), OpError> {
        let _cluster = self.inner.cluster_locks.lock(name).await;
        let inner = &self.inner;
        if inner
            .store
            .get_cluster(name)
            .await
            .map_err(store_err)?
            .is_none()
        {
            return Err(store_err(StoreError::UnknownCluster(name.to_string())));
        }
        let this = self.clone();
        let owned = name.to_string();
        let components = inner
            .writer
            .run(move |tx| async move {
                let name = owned;
                let deleted = tx.delete_cluster(&name).await.map_err(store_err)?;
                // In the same run: a caller that goes away leaves no
                // deleted cluster without its tombstone.
                let inner = &this.inner;
                inner
                    .ever_ready
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&name);
                inner
                    .membership_errors
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&name);
                inner
                    .removals
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name, deleted.held);
                Ok::<_, OpError>(deleted.components)
            })
            .await?;
        tracing::info!(cluster = %name, components, "cluster deleted");
        Ok(())
    }

    /// Forgets every deletion that every agent has confirmed.
    pub(crate) fn prune_removals(&self) {
        let mut removals = self
            .inner
            .removals
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if removals.is_empty() {
            return; // the usual case: no copy of the fleet's views per tick
        }
        let views = self.inner.index.views();
        removals.retain(|name, held| {
            !crate::cluster::removal::leftovers(name, held, &views).is_empty()
        });
    }

    /// What still holds components of deleted cluster `name`; a deletion
    /// confirmed by every agent is forgotten.
    pub fn cluster_leftovers(&self, name: &str) -> Vec<crate::cluster::removal::Leftover> {
        let views = self.inner.index.views();
        let mut removals = self
            .inner
            .removals
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let held = removals.get(name).cloned().unwrap_or_default();
        let left = crate::cluster::removal::leftovers(name, &held, &views);
        if left.is_empty() {
            removals.remove(name);
        }
        left
    }

    /// The stored record of cluster `name`, or NotFound saying what to do.
    pub(crate) async fn record_of(&self, name: &str) -> Result<ClusterRecord, OpError> {
        self.inner
            .store
            .get_cluster(name)
            .await
            .map_err(store_err)?
            .ok_or_else(|| store_err(StoreError::UnknownCluster(name.to_string())))
    }

    pub async fn get_cluster(&self, name: &str) -> Result<ClusterView, OpError> {
        let record = self.record_of(name).await?;
        Ok(self.view(record))
    }

    pub async fn list_clusters(&self) -> Result<Vec<ClusterView>, OpError> {
        let records = self.inner.store.list_clusters().await.map_err(store_err)?;
        Ok(records.into_iter().map(|r| self.view(r)).collect())
    }

    pub async fn cluster_kubeconfig(&self, name: &str) -> Result<String, OpError> {
        let record = self.record_of(name).await?;
        let Some(allocation) = &record.allocation else {
            return Err(OpError::FailedPrecondition(format!(
                "cluster {name:?} is not placed yet ({}); its endpoint is not known",
                record.pending_reason
            )));
        };
        let secrets = ClusterSecrets::decode(name, &record.secrets)?;
        secrets
            .pki
            .admin_kubeconfig(name, &allocation.endpoint())
            .map_err(|e| OpError::Internal(format!("issue admin kubeconfig: {e:#}")))
    }

    pub(crate) fn view(&self, record: ClusterRecord) -> ClusterView {
        let name = record.spec.name.clone();
        let placed = self.inner.index.placed(Some(&name));
        let mut ever = self
            .inner
            .ever_ready
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let status = status::compute(
            &name,
            record.allocation.as_ref(),
            &record.pending_reason,
            &placed,
            ever.contains(&name) || record.ready_unix_ms.is_some(),
        );
        if status.phase == crate::operations::ClusterPhase::Ready {
            ever.insert(name.clone());
        }
        drop(ever);
        let mut status = status;
        if let Some(allocation) = &record.allocation {
            let step_error = self
                .inner
                .membership_errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&name)
                .cloned();
            status.conditions.insert(
                1,
                status::replicas(record.spec.replicas, allocation, step_error.as_deref()),
            );
            let done = self
                .inner
                .bootstrapped
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            status
                .conditions
                .push(status::bootstrapped(done.get(&name), &status.endpoint));
        }
        ClusterView {
            spec: record.spec,
            status,
        }
    }

    /// Tries to place pending cluster `name` once (a cluster placed or
    /// deleted meanwhile is left alone).
    pub(crate) async fn place_pending(&self, name: &str) {
        let _cluster = self.inner.cluster_locks.lock(name).await;
        let Ok(Some(record)) = self.inner.store.get_cluster(name).await else {
            return;
        };
        if record.allocation.is_some() {
            return;
        }
        let secrets = match ClusterSecrets::decode(name, &record.secrets) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(cluster = %name, error = %e, "read cluster secrets");
                return;
            }
        };
        let placed = self
            .commit_cluster_with(false, move |c| {
                let mut record = record;
                let mut secrets = secrets;
                match c.place(&record.spec, &mut secrets, None, record.spec.replicas) {
                    Ok((allocation, changes)) => {
                        record.secrets = secrets.encode()?;
                        record.allocation = Some(allocation);
                        record.pending_reason.clear();
                        Ok((Some((record, changes)), true))
                    }
                    // Still no room: the reason is kept current.
                    Err(PlaceError::NoRoom(why)) if why == record.pending_reason => {
                        Ok((None, false))
                    }
                    Err(PlaceError::NoRoom(why)) => {
                        record.pending_reason = why;
                        Ok((Some((record, Vec::new())), false))
                    }
                    Err(PlaceError::Fatal(e)) => Err(e),
                }
            })
            .await;
        match placed {
            Ok(true) => tracing::info!(cluster = %name, "pending cluster placed"),
            Ok(false) => {}
            Err(e) => tracing::warn!(cluster = %name, error = %e, "place pending cluster"),
        }
    }
}

/// A cluster record and the placement changes committed with it.
pub(crate) type ClusterWrite = (ClusterRecord, Vec<PlacementChange>);

/// Same replica in the same place (hypervisor, address, ports).
fn same_place(
    a: &crate::cluster::model::ReplicaSlot,
    b: &crate::cluster::model::ReplicaSlot,
) -> bool {
    a.index == b.index
        && a.hypervisor == b.hypervisor
        && a.address == b.address
        && a.ports == b.ports
}

pub(crate) enum PlaceError {
    /// The fleet has no room now; the reason says which role lacks what.
    NoRoom(String),
    Fatal(OpError),
}
