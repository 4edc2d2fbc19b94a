//! Control-plane replicas of placed clusters: scaling to the declared count
//! and moving replicas off hypervisors, one etcd membership step at a time
//! (see [`crate::cluster::membership`] for the decisions).
//!
//! A replica is never added, moved or removed by re-rendering the others:
//! kept replicas keep their slot, certificates and etcd bootstrap flags, so
//! their pods are not restarted (the ingress, whose backend list changes,
//! is; controller-manager and scheduler when leader election flips).

use crate::cluster::membership::{next_step, Step};
use crate::cluster::model::{Allocation, ReplicaSlot};
use crate::cluster::render::etcd::{client_url, peer_url};
use crate::clusters::{store_err, ClusterSecrets, PlaceError};
use crate::coordinator::Coordinator;
use crate::etcd_admin::EtcdAdmin;
use crate::ops::OpError;
use crate::store::{ClusterRecord, StoreError};

fn internal(e: anyhow::Error) -> OpError {
    OpError::Unavailable(format!("{e:#}"))
}

fn peer(s: &ReplicaSlot) -> String {
    peer_url(&s.address, s.ports.etcd_peer)
}

/// Whether a cluster has a membership step to take.
fn needs_step(record: &ClusterRecord) -> bool {
    record.allocation.as_ref().is_some_and(|a| {
        a.replicas.len() as u32 != record.spec.replicas
            || a.replicas.iter().any(|s| s.etcd.pending || s.etcd.leaving)
    })
}

impl Coordinator {
    /// The cluster's etcd, through its members that are full members.
    async fn etcd(
        &self,
        secrets: &ClusterSecrets,
        allocation: &Allocation,
    ) -> Result<EtcdAdmin, OpError> {
        let endpoints: Vec<String> = allocation
            .replicas
            .iter()
            .filter(|s| !s.etcd.pending)
            .map(|s| client_url(&s.address, s.ports.etcd_client))
            .collect();
        let client = secrets
            .replicas
            .values()
            .next()
            .ok_or_else(|| OpError::Internal("cluster has no replica certificates".into()))?;
        EtcdAdmin::connect(
            &endpoints,
            &secrets.pki.etcd_server_ca.cert_pem,
            &client.apiserver_etcd_client.cert_pem,
            client.apiserver_etcd_client.key.expose(),
        )
        .await
        .map_err(internal)
    }

    async fn load(
        &self,
        name: &str,
    ) -> Result<(ClusterRecord, ClusterSecrets, Allocation), OpError> {
        let record = self
            .inner
            .store
            .get_cluster(name)
            .await
            .map_err(store_err)?
            .ok_or_else(|| store_err(StoreError::UnknownCluster(name.to_string())))?;
        let secrets = ClusterSecrets::decode(name, &record.secrets)?;
        let allocation = record.allocation.clone().ok_or_else(|| {
            OpError::FailedPrecondition(format!("cluster {name:?} is not placed"))
        })?;
        Ok((record, secrets, allocation))
    }

    /// Declares a new replica count; the replica reconciler converges on it
    /// one replica at a time. Nothing else about the cluster changes.
    pub async fn set_replicas(&self, name: &str, replicas: u32) -> Result<ClusterRecord, OpError> {
        let _clusters = self.inner.cluster_lock.lock().await;
        let mut record = self
            .inner
            .store
            .get_cluster(name)
            .await
            .map_err(store_err)?
            .ok_or_else(|| store_err(StoreError::UnknownCluster(name.to_string())))?;
        record.spec.replicas = replicas;
        record
            .spec
            .validate(&self.inner.matrix.versions())
            .map_err(|e| OpError::Invalid(e.to_string()))?;
        self.commit_cluster(&record, false, Vec::new()).await?;
        tracing::info!(cluster = %name, replicas, "replica count changed");
        Ok(record)
    }

    /// Takes one membership step for every cluster that needs one.
    pub async fn reconcile_replicas(&self) {
        let Ok(records) = self.inner.store.list_clusters().await else {
            return;
        };
        for record in records.iter().filter(|r| needs_step(r)) {
            let name = &record.spec.name;
            if let Err(e) = self.replica_step(name).await {
                tracing::warn!(cluster = %name, error = %e, "scale control plane");
            }
        }
    }

    /// One step toward the declared replica count.
    pub async fn replica_step(&self, name: &str) -> Result<(), OpError> {
        let _clusters = self.inner.cluster_lock.lock().await;
        let (mut record, mut secrets, mut allocation) = self.load(name).await?;
        let mut etcd = self.etcd(&secrets, &allocation).await?;
        let members = etcd.members().await.map_err(internal)?;

        // Learners that were promoted are full members now.
        let mut promoted = false;
        for s in allocation.replicas.iter_mut().filter(|s| s.etcd.pending) {
            let p = peer(s);
            if members
                .iter()
                .any(|m| m.peer_urls.contains(&p) && !m.is_learner)
            {
                s.etcd.pending = false;
                promoted = true;
            }
        }
        if promoted {
            record.allocation = Some(allocation);
            return self.commit_cluster(&record, false, Vec::new()).await;
        }

        let count = allocation.replicas.len() as u32;
        match next_step(record.spec.replicas, &allocation.replicas, &members) {
            Step::Done => Ok(()),
            Step::RemoveStray { member_id } => {
                tracing::info!(cluster = %name, member = %format!("{member_id:x}"), "removing an etcd member no replica owns");
                etcd.remove(member_id).await.map_err(internal)
            }
            Step::Promote { index, member_id } => match etcd.promote(member_id).await {
                Ok(()) => {
                    tracing::info!(cluster = %name, replica = index, "etcd learner promoted");
                    Ok(())
                }
                Err(e) => {
                    tracing::debug!(cluster = %name, replica = index, error = %format!("{e:#}"), "learner not promoted yet");
                    Ok(())
                }
            },
            Step::AddMember { index } => {
                if let Some(s) = allocation.replicas.iter().find(|s| s.index == index) {
                    etcd.add_learner(&peer(s)).await.map_err(internal)?;
                }
                Ok(())
            }
            Step::Grow => {
                // One more slot than there are now (a leaving one counts: its
                // hypervisor stays taken), on a hypervisor that takes new ones.
                let proposed = match self.schedule_slots(&record.spec, Some(&allocation), count + 1)
                {
                    Ok(a) => a,
                    Err(PlaceError::NoRoom(why)) => {
                        return Err(OpError::Unavailable(format!("cannot add a replica: {why}")))
                    }
                    Err(PlaceError::Fatal(e)) => return Err(e),
                };
                // etcd takes one learner at a time: one replica per step, and
                // the others exactly as they are.
                let Some(new) = proposed
                    .replicas
                    .into_iter()
                    .find(|s| !allocation.replicas.iter().any(|o| o.index == s.index))
                else {
                    return Ok(());
                };
                let mut next = allocation.clone();
                next.replicas.push(new.clone());
                let new = &new;
                let changes =
                    match self.render_changes(&record.spec, &mut secrets, Some(&allocation), &next)
                    {
                        Ok(c) => c,
                        Err(PlaceError::NoRoom(why)) => return Err(OpError::Unavailable(why)),
                        Err(PlaceError::Fatal(e)) => return Err(e),
                    };
                // The member first: a replica that starts before it is added
                // is refused by the cluster.
                etcd.add_learner(&peer(new)).await.map_err(internal)?;
                tracing::info!(cluster = %name, replica = new.index, hypervisor = %new.hypervisor, "adding a control-plane replica");
                record.secrets = secrets.encode()?;
                record.allocation = Some(next);
                self.commit_cluster(&record, false, changes).await
            }
            Step::Shrink { index, member_id } => {
                // The member first, so the others never wait for a member
                // whose pods are gone.
                if let Some(id) = member_id {
                    etcd.remove(id).await.map_err(internal)?;
                }
                let mut next = allocation.clone();
                next.replicas.retain(|s| s.index != index);
                let changes =
                    match self.render_changes(&record.spec, &mut secrets, Some(&allocation), &next)
                    {
                        Ok(c) => c,
                        Err(PlaceError::NoRoom(why)) => return Err(OpError::Unavailable(why)),
                        Err(PlaceError::Fatal(e)) => return Err(e),
                    };
                tracing::info!(cluster = %name, replica = index, "removed a control-plane replica");
                record.secrets = secrets.encode()?;
                record.allocation = Some(next);
                self.commit_cluster(&record, false, changes).await
            }
        }
    }

    /// Moves a placed cluster's pieces off hypervisors that are gone, being
    /// drained, or no longer fit: the ingress moves at once; a replica on a
    /// hypervisor that is still there is marked leaving and migrates (the
    /// replica reconciler grows a replacement elsewhere, then removes it);
    /// one on a hypervisor that is gone is dropped (its member first).
    pub async fn reschedule_cluster(&self, name: &str) -> Result<(), OpError> {
        let _clusters = self.inner.cluster_lock.lock().await;
        let (mut record, mut secrets, current) = match self.load(name).await {
            Ok(x) => x,
            Err(OpError::FailedPrecondition(_)) => return Ok(()), // pending: nothing placed
            Err(e) => return Err(e),
        };
        let count = current.replicas.len() as u32;
        let proposed = match self.schedule_slots(&record.spec, Some(&current), count) {
            Ok(a) => a,
            Err(PlaceError::NoRoom(why)) => {
                return Err(OpError::FailedPrecondition(format!(
                    "cluster {name:?} cannot be moved: {why}"
                )))
            }
            Err(PlaceError::Fatal(e)) => return Err(e),
        };
        // Replicas the scheduler would not keep: on a hypervisor that is still
        // there, they leave by migration (a replacement joins elsewhere
        // first); on one that is gone, they are dropped at once.
        let registered = |hv: &str| self.inner.index.record(hv).is_some();
        let mut next = Allocation {
            replicas: Vec::new(),
            ingress: proposed.ingress.clone(),
        };
        let mut gone = Vec::new();
        for c in &current.replicas {
            match proposed.replicas.iter().find(|p| p.index == c.index) {
                Some(kept) => next.replicas.push(kept.clone()),
                None if registered(&c.hypervisor) => {
                    let mut leaving = c.clone();
                    leaving.etcd.leaving = true;
                    next.replicas.push(leaving);
                }
                None => gone.push(c.clone()),
            }
        }
        if next.replicas.is_empty() {
            return Err(OpError::FailedPrecondition(format!(
                "every control-plane replica of cluster {name:?} is on a hypervisor that is gone; \
                 its etcd data is lost: delete the cluster and create it again"
            )));
        }
        if !gone.is_empty() {
            let survivors = Allocation {
                replicas: next.replicas.clone(),
                ingress: current.ingress.clone(),
            };
            let mut etcd = self.etcd(&secrets, &survivors).await?;
            let members = etcd.members().await.map_err(internal)?;
            for d in &gone {
                let p = peer(d);
                if let Some(m) = members.iter().find(|m| m.peer_urls.contains(&p)) {
                    etcd.remove(m.id).await.map_err(internal)?;
                }
            }
        }
        if next == current {
            return Ok(());
        }
        let changes = match self.render_changes(&record.spec, &mut secrets, Some(&current), &next) {
            Ok(c) => c,
            Err(PlaceError::NoRoom(why)) => return Err(OpError::Unavailable(why)),
            Err(PlaceError::Fatal(e)) => return Err(e),
        };
        let leaving = next.replicas.iter().filter(|s| s.etcd.leaving).count();
        tracing::info!(cluster = %name, leaving, dropped = gone.len(), "rescheduled cluster");
        record.secrets = secrets.encode()?;
        record.allocation = Some(next);
        self.commit_cluster(&record, false, changes).await
    }
}
