//! Control-plane replicas of placed clusters: scaling to the declared count
//! and moving replicas off hypervisors, one etcd membership step at a time
//! (see [`crate::cluster::membership`] for the decisions).
//!
//! A replica is never added, moved or removed by re-rendering the others:
//! kept replicas keep their slot, certificates and etcd bootstrap flags, so
//! their pods are not restarted (the ingress, whose backend list changes,
//! is; controller-manager and scheduler when leader election flips).

use crate::cluster::membership::{next_step, Step};
use crate::cluster::model::{Addons, Allocation, ReplicaSlot};
use crate::cluster::render::etcd::{client_url, peer_url};
use crate::coordinator::Coordinator;
use crate::etcd_admin::EtcdAdmin;
use crate::lifecycle::clusters::{ClusterSecrets, ClusterWrite, PlaceError};
use crate::operations::OpError;
use crate::store::ClusterRecord;
use crate::work::Outcome;

fn internal(e: anyhow::Error) -> OpError {
    OpError::Unavailable(format!("{e:#}"))
}

fn peer(s: &ReplicaSlot) -> String {
    peer_url(&s.address, s.ports.etcd_peer)
}

/// What etcd answers a promotion of a learner that has not caught up.
const LEARNER_NOT_IN_SYNC: &str = "can only promote a learner member which is in sync";

/// Whether the work loop has something to do for a cluster: place it, or
/// take a membership step.
pub(crate) fn needs_work(record: &ClusterRecord) -> bool {
    record.allocation.is_none() || needs_step(record)
}

/// Whether a cluster has a membership step to take.
fn needs_step(record: &ClusterRecord) -> bool {
    record.allocation.as_ref().is_some_and(|a| {
        a.replicas.len() as u32 != record.spec.replicas
            || a.replicas
                .iter()
                .any(|s| s.etcd.pending || s.etcd.leaving || s.etcd.adding || s.etcd.removing)
    })
}

impl Coordinator {
    /// The cluster's etcd, through its members that are full members.
    async fn etcd(
        &self,
        secrets: &ClusterSecrets,
        allocation: &Allocation,
    ) -> Result<EtcdAdmin, OpError> {
        // Full members only: not a learner (pending), not one being added
        // (no pods yet) or removed (its member may be gone already).
        let endpoints: Vec<String> = allocation
            .replicas
            .iter()
            .filter(|s| !s.etcd.pending && !s.etcd.adding && !s.etcd.removing)
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
        let record = self.record_of(name).await?;
        let secrets = ClusterSecrets::decode(name, &record.secrets)?;
        let allocation = record.allocation.clone().ok_or_else(|| {
            OpError::FailedPrecondition(format!("cluster {name:?} is not placed"))
        })?;
        Ok((record, secrets, allocation))
    }

    /// Declares a new replica count; the replica reconciler converges on it
    /// one replica at a time. Nothing else about the cluster changes.
    pub async fn set_replicas(&self, name: &str, replicas: u32) -> Result<ClusterRecord, OpError> {
        let _cluster = self.inner.cluster_locks.lock(name).await;
        let mut record = self.record_of(name).await?;
        record.spec.replicas = replicas;
        record
            .spec
            .validate(&self.inner.matrix.versions())
            .map_err(|e| OpError::Invalid(e.to_string()))?;
        self.commit_cluster(&record, false, Vec::new()).await?;
        tracing::info!(cluster = %name, replicas, "replica count changed");
        // A new declaration starts over: an earlier step's error is stale,
        // and its backoff too.
        self.set_membership_error(name, None);
        self.inner.work_kick.cluster(name);
        Ok(record)
    }

    /// Changes the cluster's add-ons; the node sync applies or removes
    /// their objects at once.
    pub async fn set_addons(&self, name: &str, addons: Addons) -> Result<ClusterRecord, OpError> {
        let _cluster = self.inner.cluster_locks.lock(name).await;
        let mut record = self.record_of(name).await?;
        record.spec.addons = addons;
        self.commit_cluster(&record, false, Vec::new()).await?;
        tracing::info!(cluster = %name, addons = ?record.spec.addons, "add-ons changed");
        self.inner.nodes_kick.cluster(name);
        Ok(record)
    }

    /// One pass of the work loop over cluster `name`: places it if it is
    /// pending, otherwise takes its membership steps (a step that only
    /// records intent is followed at once by the step it prepares). A
    /// failure is logged, counted and shown in the cluster's Replicas
    /// condition; the work loop retries it after a backoff.
    pub(crate) async fn reconcile_cluster(&self, name: &str) -> Outcome {
        let placed = match self.inner.store.get_cluster(name).await {
            Ok(Some(r)) => r.allocation.is_some(),
            Ok(None) => return Outcome::Settled, // deleted meanwhile
            Err(e) => {
                tracing::warn!(cluster = %name, error = %e, "read cluster");
                return Outcome::Failed;
            }
        };
        if !placed {
            self.place_pending(name).await;
            return Outcome::Settled;
        }
        for _ in 0..4 {
            match self.replica_step(name).await {
                Ok(true) => continue,
                Ok(false) => break,
                // Deleted meanwhile: nothing left to do.
                Err((_, OpError::NotFound(_))) => return Outcome::Settled,
                // A learner catching up is not a failure: its replica shows
                // as joining until the promotion succeeds.
                Err(("promote", e)) if e.to_string().contains(LEARNER_NOT_IN_SYNC) => {
                    tracing::debug!(cluster = %name, "etcd learner not in sync yet; promoting later");
                    self.set_membership_error(name, None);
                    return Outcome::Waiting;
                }
                Err((step, e)) => {
                    tracing::warn!(cluster = %name, %step, error = %e, "etcd membership step failed; retrying");
                    self.inner.metrics.membership_failed(step);
                    self.set_membership_error(name, Some(format!("{step}: {e}")));
                    return Outcome::Failed;
                }
            }
        }
        self.set_membership_error(name, None);
        Outcome::Settled
    }

    fn set_membership_error(&self, name: &str, error: Option<String>) {
        let mut errors = self
            .inner
            .membership_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match error {
            Some(e) => {
                errors.insert(name.to_string(), e);
            }
            None => {
                errors.remove(name);
            }
        }
    }

    /// One step toward the declared replica count. Returns whether another
    /// step follows at once (intent was recorded), or the failed step.
    pub async fn replica_step(&self, name: &str) -> Result<bool, (&'static str, OpError)> {
        let _cluster = self.inner.cluster_locks.lock(name).await;
        let (mut record, secrets, mut allocation) =
            self.load(name).await.map_err(|e| ("load", e))?;
        let mut etcd = self
            .etcd(&secrets, &allocation)
            .await
            .map_err(|e| ("connect", e))?;
        let members = etcd.members().await.map_err(|e| ("list", internal(e)))?;

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
            self.commit_cluster(&record, false, Vec::new())
                .await
                .map_err(|e| ("record promotion", e))?;
            return Ok(true);
        }

        let count = allocation.replicas.len() as u32;
        let step = next_step(name, record.spec.replicas, &allocation.replicas, &members);
        match step {
            Step::Done => Ok(false),
            Step::RemoveStray { member_id } => {
                tracing::info!(cluster = %name, member = %format!("{member_id:x}"), "removing an etcd member no replica owns");
                etcd.remove(member_id)
                    .await
                    .map_err(|e| ("remove stray member", internal(e)))?;
                Ok(true)
            }
            Step::UpdatePeer {
                index,
                member_id,
                peer_url,
            } => {
                tracing::info!(cluster = %name, replica = index, %peer_url, "etcd member's address changed: updating it");
                etcd.update_peer(member_id, &peer_url)
                    .await
                    .map_err(|e| ("update member", internal(e)))?;
                Ok(true)
            }
            Step::Promote { index, member_id } => match etcd.promote(member_id).await {
                Ok(()) => {
                    tracing::info!(cluster = %name, replica = index, "etcd learner promoted");
                    Ok(true)
                }
                // Expected while the learner catches up: shown, counted, retried.
                Err(e) => Err(("promote", internal(e))),
            },
            Step::AddMember { index } => {
                if let Some(s) = allocation.replicas.iter().find(|s| s.index == index) {
                    etcd.add_learner(&peer(s))
                        .await
                        .map_err(|e| ("add member", internal(e)))?;
                }
                Ok(true)
            }
            Step::Grow => {
                // Scheduled and recorded in one commit: no other cluster
                // takes the slot's ports in between.
                let added = self
                    .commit_cluster_with(false, move |c| {
                        // One more slot than there are now (a leaving one
                        // counts: its hypervisor stays taken), on a
                        // hypervisor that takes new ones.
                        let proposed =
                            match c.schedule_slots(&record.spec, Some(&allocation), count + 1) {
                                Ok(a) => a,
                                Err(PlaceError::NoRoom(why)) => {
                                    return Err(OpError::Unavailable(format!(
                                        "cannot add a replica: {why}"
                                    )))
                                }
                                Err(PlaceError::Fatal(e)) => return Err(e),
                            };
                        // etcd takes one learner at a time: one replica per
                        // step, and the others exactly as they are.
                        let Some(mut new) = proposed
                            .replicas
                            .into_iter()
                            .find(|s| !allocation.replicas.iter().any(|o| o.index == s.index))
                        else {
                            return Ok((None, None));
                        };
                        // Intent first: the slot (and its certificates)
                        // recorded as `adding`, with no pods, before etcd is
                        // asked.
                        new.etcd.adding = true;
                        let mut next = allocation.clone();
                        next.replicas.push(new.clone());
                        let write = render_allocation(c, record, secrets, &allocation, next)?;
                        Ok((Some(write), Some(new)))
                    })
                    .await
                    .map_err(|e| ("grow", e))?;
                let Some(new) = added else {
                    return Ok(false);
                };
                tracing::info!(cluster = %name, replica = new.index, hypervisor = %new.hypervisor, "adding a control-plane replica");
                crate::crash_point::here(crate::crash_point::GROW_AFTER_INTENT);
                Ok(true)
            }
            Step::AddLearner { index } | Step::PlaceReplica { index } => {
                let Some(s) = allocation.replicas.iter().find(|s| s.index == index) else {
                    return Ok(false);
                };
                if matches!(step, Step::AddLearner { .. }) {
                    // The member first: a replica that starts before it is
                    // added is refused by the cluster.
                    etcd.add_learner(&peer(s))
                        .await
                        .map_err(|e| ("add learner", internal(e)))?;
                    crate::crash_point::here(crate::crash_point::GROW_AFTER_ADD);
                }
                let mut next = allocation.clone();
                for s in next.replicas.iter_mut().filter(|s| s.index == index) {
                    s.etcd.adding = false;
                    s.etcd.pending = true;
                }
                self.record_allocation(record, secrets, &allocation, next)
                    .await
                    .map_err(|e| ("record learner", e))?;
                tracing::info!(cluster = %name, replica = index, "etcd learner added; replica placed");
                Ok(true)
            }
            Step::Shrink { index } => {
                // Intent first: recorded as `removing` (pods stay) before
                // etcd is asked; a removed member is never added back.
                let mut next = allocation.clone();
                for s in next.replicas.iter_mut().filter(|s| s.index == index) {
                    s.etcd.removing = true;
                }
                record.allocation = Some(next);
                self.commit_cluster(&record, false, Vec::new())
                    .await
                    .map_err(|e| ("record shrink", e))?;
                tracing::info!(cluster = %name, replica = index, "removing a control-plane replica");
                Ok(true)
            }
            Step::RemoveMember { index, member_id } => {
                // The member first, so the others never wait for a member
                // whose pods are gone.
                etcd.remove(member_id)
                    .await
                    .map_err(|e| ("remove member", internal(e)))?;
                crate::crash_point::here(crate::crash_point::SHRINK_AFTER_REMOVE);
                self.drop_replica(name, record, secrets, &allocation, index)
                    .await?;
                Ok(true)
            }
            Step::DropReplica { index } => {
                self.drop_replica(name, record, secrets, &allocation, index)
                    .await?;
                Ok(true)
            }
        }
    }

    /// Records `next` as the cluster's allocation, with the placement
    /// changes from `current` it renders (certificates minted for new
    /// slots land in its secrets), in one commit.
    async fn record_allocation(
        &self,
        record: ClusterRecord,
        secrets: ClusterSecrets,
        current: &Allocation,
        next: Allocation,
    ) -> Result<(), OpError> {
        let current = current.clone();
        self.commit_cluster_with(false, move |c| {
            Ok((
                Some(render_allocation(c, record, secrets, &current, next)?),
                (),
            ))
        })
        .await
    }

    /// Records a replica whose member was removed: the slot and its pods go.
    async fn drop_replica(
        &self,
        name: &str,
        record: ClusterRecord,
        secrets: ClusterSecrets,
        allocation: &Allocation,
        index: u32,
    ) -> Result<(), (&'static str, OpError)> {
        let mut next = allocation.clone();
        next.replicas.retain(|s| s.index != index);
        self.record_allocation(record, secrets, allocation, next)
            .await
            .map_err(|e| ("record removal", e))?;
        tracing::info!(cluster = %name, replica = index, "removed a control-plane replica");
        Ok(())
    }

    /// Moves a placed cluster's pieces off hypervisors that are gone, being
    /// drained, or no longer fit: the ingress moves at once; a replica on a
    /// hypervisor that is still there is marked leaving and migrates (the
    /// replica reconciler grows a replacement elsewhere, then removes it);
    /// one on a hypervisor that is gone is dropped (its member first).
    pub async fn reschedule_cluster(&self, name: &str) -> Result<(), OpError> {
        let _cluster = self.inner.cluster_locks.lock(name).await;
        let (record, secrets, current) = match self.load(name).await {
            Ok(x) => x,
            Err(OpError::FailedPrecondition(_)) => return Ok(()), // pending: nothing placed
            Err(e) => return Err(e),
        };
        let owned = name.to_string();
        let moved = self
            .commit_cluster_with(false, move |c| {
                let name = owned;
                let next = match reschedule(c, &name, &record, &current)? {
                    Some(next) => next,
                    None => return Ok((None, None)),
                };
                let leaving = next.replicas.iter().filter(|s| s.etcd.leaving).count();
                let dropped = current.replicas.len() - next.replicas.len();
                let write = render_allocation(c, record, secrets, &current, next)?;
                Ok((Some(write), Some((leaving, dropped))))
            })
            .await?;
        if let Some((leaving, dropped)) = moved {
            tracing::info!(cluster = %name, leaving, dropped, "rescheduled cluster");
            self.inner.work_kick.cluster(name);
        }
        Ok(())
    }
}

/// Where a placed cluster's pieces go when some of its hypervisors are
/// gone, drained or full; `None` when nothing changes. Read with the write
/// lock held (it schedules against the fleet).
fn reschedule(
    c: &Coordinator,
    name: &str,
    record: &ClusterRecord,
    current: &Allocation,
) -> Result<Option<Allocation>, OpError> {
    let count = current.replicas.len() as u32;
    let proposed = match c.schedule_slots(&record.spec, Some(current), count) {
        Ok(a) => a,
        Err(PlaceError::NoRoom(why)) => {
            return Err(OpError::FailedPrecondition(format!(
                "cluster {name:?} cannot be moved: {why}"
            )))
        }
        Err(PlaceError::Fatal(e)) => return Err(e),
    };
    let registered = |hv: &str| c.inner.index.record(hv).is_some();
    crate::cluster::moves::plan_move(current, &proposed, registered).map_err(|_| {
        OpError::FailedPrecondition(format!(
            "every control-plane replica of cluster {name:?} is on a hypervisor that is gone; \
             its etcd data is lost: delete the cluster and create it again"
        ))
    })
}

/// `record` with `next` as its allocation, and the placement changes from
/// `current` it renders (certificates minted for new slots are sealed into
/// its secrets). Pure; called with the write lock held.
fn render_allocation(
    c: &Coordinator,
    mut record: ClusterRecord,
    mut secrets: ClusterSecrets,
    current: &Allocation,
    next: Allocation,
) -> Result<ClusterWrite, OpError> {
    let changes = c
        .render_changes(&record.spec, &mut secrets, Some(current), &next)
        .map_err(|e| match e {
            PlaceError::NoRoom(why) => OpError::Unavailable(why),
            PlaceError::Fatal(e) => e,
        })?;
    record.secrets = secrets.encode()?;
    record.allocation = Some(next);
    Ok((record, changes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::model::{ClusterSpec, EtcdJoin, IngressSlot, ReplicaPorts, ReplicaSlot};

    fn record(desired: u32, flags: &[EtcdJoin]) -> ClusterRecord {
        ClusterRecord {
            spec: ClusterSpec::new("c", "1.37.2", desired),
            secrets: Vec::new(),
            allocation: Some(Allocation {
                replicas: flags
                    .iter()
                    .enumerate()
                    .map(|(i, etcd)| ReplicaSlot {
                        index: i as u32,
                        hypervisor: format!("hv-{i}"),
                        address: "10.0.0.1".into(),
                        ports: ReplicaPorts::from_slice(&[1, 2, 3, 4, 5, 6]).unwrap(),
                        etcd: etcd.clone(),
                    })
                    .collect(),
                ingress: IngressSlot {
                    hypervisor: "p".into(),
                    address: "10.0.0.9".into(),
                    port: 30000,
                },
            }),
            pending_reason: String::new(),
            created_unix_ms: 0,
            ready_unix_ms: None,
        }
    }

    #[test]
    fn a_recorded_intent_always_needs_a_step() {
        let plain = EtcdJoin::default();
        let with = |f: fn(&mut EtcdJoin)| {
            let mut e = EtcdJoin::default();
            f(&mut e);
            e
        };
        let cases = [
            (record(1, std::slice::from_ref(&plain)), false),
            (record(3, std::slice::from_ref(&plain)), true),
            (record(1, &[plain.clone(), plain.clone()]), true),
            // Counts match, but a step was left half-done.
            (record(2, &[plain.clone(), with(|e| e.adding = true)]), true),
            (
                record(2, &[plain.clone(), with(|e| e.removing = true)]),
                true,
            ),
            (
                record(2, &[plain.clone(), with(|e| e.pending = true)]),
                true,
            ),
            (
                record(2, &[plain.clone(), with(|e| e.leaving = true)]),
                true,
            ),
        ];
        for (i, (r, want)) in cases.iter().enumerate() {
            assert_eq!(needs_step(r), *want, "case {i}");
        }
    }
}
