//! The lifecycle of a hypervisor on the coordinator: cordon and uncordon,
//! drain (move every cluster's pieces off it) and remove (drain, revoke its
//! certificates, disconnect its agent and forget it).

use crate::cluster::render;
use crate::cluster::schedule;
use crate::coordinator::{Coordinator, CoordinatorError, HvRemoval, Inner};
use crate::join::unix_ms;
use crate::operations::{DrainOutcome, OpError, RemoveOutcome};
use crate::store::StoreError;
use oi_proto::pb::CloseCode;
use std::collections::BTreeSet;
use std::time::Duration;

/// How long `remove` waits for a connected agent to apply the drained
/// placement (stop the pods) before it closes the link.
const APPLY_WAIT: Duration = Duration::from_secs(10);

/// How long `remove` waits for the clusters on a hypervisor to move off.
const MOVE_WAIT: Duration = Duration::from_secs(30 * 60);

fn not_found(name: &str) -> OpError {
    OpError::NotFound(format!(
        "hypervisor {name:?} not found; `oi hypervisor list` shows the hypervisors"
    ))
}

fn coordinator_err(name: &str, e: CoordinatorError) -> OpError {
    match e {
        CoordinatorError::Store(StoreError::UnknownHypervisor(_)) => not_found(name),
        other => OpError::Internal(other.to_string()),
    }
}

/// Marks a hypervisor as being drained for as long as it lives.
struct Draining<'a> {
    inner: &'a Inner,
    name: String,
}

impl<'a> Draining<'a> {
    fn new(inner: &'a Inner, name: &str) -> Self {
        inner
            .draining
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string());
        Self {
            inner,
            name: name.to_string(),
        }
    }
}

impl Drop for Draining<'_> {
    fn drop(&mut self) {
        self.inner
            .draining
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.name);
    }
}

impl Coordinator {
    pub async fn cordon_hypervisor(&self, name: &str, cordoned: bool) -> Result<(), OpError> {
        if self.inner.index.record(name).is_none() {
            return Err(not_found(name));
        }
        self.set_cordoned(name, cordoned)
            .await
            .map_err(|e| coordinator_err(name, e))?;
        tracing::info!(hypervisor = %name, cordoned, "hypervisor cordon changed");
        if !cordoned && self.removing_recorded(name) {
            // Uncordon is how an operator calls a removal off.
            self.record_removing(name, None).await?;
            self.set_removal(name, None);
            tracing::info!(hypervisor = %name, "hypervisor removal called off");
        }
        Ok(())
    }

    fn removing_recorded(&self, name: &str) -> bool {
        self.inner
            .index
            .record(name)
            .is_some_and(|r| r.removing_unix_ms.is_some())
    }

    /// Records (or clears) the removal intent, durably.
    async fn record_removing(&self, name: &str, at: Option<u64>) -> Result<(), OpError> {
        let owned = name.to_string();
        self.inner
            .writer
            .run(move |tx| async move { tx.set_removing(&owned, at).await })
            .await
            .map_err(|e| match e {
                StoreError::UnknownHypervisor(_) => not_found(name),
                other => OpError::Internal(format!("record the removal of {name}: {other}")),
            })
    }

    /// Clusters with a component on `name`, in name order.
    fn clusters_on(&self, name: &str) -> BTreeSet<String> {
        self.inner
            .index
            .placement(name)
            .map(|p| {
                p.components
                    .values()
                    .filter(|c| !c.cluster.is_empty())
                    .map(|c| c.cluster.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `cluster` can be placed while the hypervisors being drained
    /// are excluded; the reason when it cannot.
    async fn fits_elsewhere(&self, cluster: &str) -> Result<(), String> {
        let inner = &self.inner;
        let Ok(Some(record)) = inner.store.get_cluster(cluster).await else {
            return Ok(()); // gone meanwhile: nothing to move
        };
        let request = schedule::Request {
            replicas: record.spec.replicas,
            replica: render::replica_resources(inner.profile),
            ingress: render::ingress_resources(inner.profile),
            current: record.allocation.clone(),
            exclude: inner
                .draining
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        };
        schedule::schedule(&self.snapshot(cluster), &request)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    pub async fn drain_hypervisor(&self, name: &str) -> Result<DrainOutcome, OpError> {
        self.drain(name, false).await
    }

    /// Cordons `name` and reschedules every cluster with a component there
    /// while it is excluded. Without `allow_pending`, nothing moves unless
    /// every cluster has somewhere to go.
    async fn drain(&self, name: &str, allow_pending: bool) -> Result<DrainOutcome, OpError> {
        self.cordon_hypervisor(name, true).await?;
        let _draining = Draining::new(&self.inner, name);
        let clusters = self.clusters_on(name);
        if !allow_pending {
            let mut stuck = Vec::new();
            for c in &clusters {
                if let Err(why) = self.fits_elsewhere(c).await {
                    stuck.push(format!("cluster {c}: {why}"));
                }
            }
            if !stuck.is_empty() {
                return Err(OpError::FailedPrecondition(format!(
                    "hypervisor {name} is cordoned, but nothing was moved: {}; make room (add or \
                     uncordon hypervisors), then run `oi hypervisor drain {name}` again",
                    stuck.join("; ")
                )));
            }
        }
        let mut outcome = DrainOutcome::default();
        for c in clusters {
            match self.reschedule_cluster(&c).await {
                Ok(()) => {}
                // Deleted meanwhile: nothing left to move.
                Err(OpError::NotFound(_)) => continue,
                Err(e) => {
                    return Err(OpError::Internal(format!(
                        "drain hypervisor {name}: reschedule cluster {c}: {e}"
                    )))
                }
            }
            let placed = matches!(
                self.inner.store.get_cluster(&c).await,
                Ok(Some(r)) if r.allocation.is_some()
            );
            if placed {
                outcome.rescheduled.push(c);
            } else {
                outcome.pending.push(c);
            }
        }
        tracing::info!(hypervisor = %name, rescheduled = ?outcome.rescheduled,
            pending = ?outcome.pending, "hypervisor drained");
        Ok(outcome)
    }

    /// Waits (at most [`MOVE_WAIT`]) until no cluster has a component on
    /// `name`: replicas marked leaving by the drain migrate one etcd member
    /// at a time (a replacement joins elsewhere, then they are removed).
    /// Returns whether they are gone.
    async fn wait_moved_off(&self, name: &str) -> bool {
        let deadline = tokio::time::Instant::now() + MOVE_WAIT;
        loop {
            if self.clusters_on(name).is_empty() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline || !self.removing_recorded(name) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits (at most [`APPLY_WAIT`]) until a connected agent reports that
    /// it applied its current placement.
    async fn wait_applied(&self, name: &str) {
        let deadline = tokio::time::Instant::now() + APPLY_WAIT;
        loop {
            let Some(view) = self.inner.index.view(name) else {
                return;
            };
            let connected = matches!(view.link, crate::state::index::LinkState::Connected { .. });
            let applied = view
                .observed
                .as_ref()
                .is_some_and(|o| o.applied == view.placement.cursor);
            if !connected || applied {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                tracing::warn!(hypervisor = %name,
                    "the agent did not confirm the drained placement in time; closing its link anyway");
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Removes a hypervisor: drains it, then (once nothing of any cluster
    /// is left there) revokes its certificates, closes its link and forgets
    /// it. Returns at once: when replicas must first move off (one etcd
    /// member at a time, minutes per cluster), the removal finishes in the
    /// background (`done` false), and `oi hypervisor list` shows it.
    pub async fn remove_hypervisor(&self, name: &str) -> Result<RemoveOutcome, OpError> {
        let registered = self.inner.index.record(name).is_some();
        let identities = self
            .inner
            .store
            .identities_of(name)
            .await
            .map_err(|e| OpError::Internal(format!("read identities: {e}")))?;
        // Not registered and nothing left to revoke: removed already, or
        // never there.
        if !registered && identities.iter().all(|i| i.revoked_unix_ms.is_some()) {
            return Err(not_found(name));
        }
        if !registered {
            return self
                .finish_removal(name, false, DrainOutcome::default())
                .await;
        }
        if self.removal(name) == Some(HvRemoval::Moving) {
            // Asked again while it runs: the same removal goes on.
            return Ok(RemoveOutcome::default());
        }
        // Intent first: a coordinator restarted from here on resumes it.
        self.record_removing(name, Some(unix_ms())).await?;
        let drained = self.drain(name, true).await?;
        if self.clusters_on(name).is_empty() {
            return self.finish_removal(name, true, drained).await;
        }
        self.start_finishing(name, false);
        tracing::info!(hypervisor = %name, moving = ?drained.rescheduled, "hypervisor removal started");
        Ok(RemoveOutcome {
            drained,
            ..Default::default()
        })
    }

    /// Resumes every recorded removal that no task finishes (after a
    /// coordinator restart); the work loop calls it every period.
    pub(crate) fn resume_removals(&self) {
        for v in self.inner.index.views() {
            let name = &v.record.name;
            if v.record.removing_unix_ms.is_some() && self.removal(name).is_none() {
                tracing::info!(hypervisor = %name, "resuming a recorded hypervisor removal");
                self.start_finishing(name, true);
            }
        }
    }

    /// Whether a cluster still has a piece on `name` that no drain moved:
    /// an ingress there, or a replica there not marked leaving (a restart
    /// came between the recorded removal and its drain).
    async fn undrained(&self, name: &str) -> bool {
        for cluster in self.clusters_on(name) {
            let Ok(Some(record)) = self.inner.store.get_cluster(&cluster).await else {
                continue;
            };
            let Some(a) = record.allocation else { continue };
            if a.ingress.hypervisor == name
                || a.replicas
                    .iter()
                    .any(|s| s.hypervisor == name && !s.etcd.leaving)
            {
                return true;
            }
        }
        false
    }

    /// Finishes a removal in the background once nothing of a cluster is
    /// left on `name`. A resumed one drains first what was not drained
    /// before the restart. It stops, removing nothing, when
    /// the removal is called off (uncordon).
    fn start_finishing(&self, name: &str, resumed: bool) {
        self.set_removal(name, Some(HvRemoval::Moving));
        let this = self.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let result = async {
                if resumed && this.undrained(&name).await {
                    this.drain(&name, true).await?;
                }
                if this.wait_moved_off(&name).await {
                    this.finish_removal(&name, true, DrainOutcome::default())
                        .await
                        .map(|_| ())
                } else if !this.removing_recorded(&name) {
                    Ok(()) // called off
                } else {
                    Err(OpError::FailedPrecondition(format!(
                        "replicas did not move off within {MOVE_WAIT:?} (`oi cluster get NAME` \
                         shows why); {name} stays cordoned and joined: run `oi hypervisor \
                         remove {name}` again, or `oi hypervisor uncordon {name}` to call it off"
                    )))
                }
            }
            .await;
            match result {
                Ok(()) => this.set_removal(&name, None),
                Err(OpError::NotFound(_)) => this.set_removal(&name, None),
                // Called off meanwhile: nothing failed.
                Err(_) if !this.removing_recorded(&name) => this.set_removal(&name, None),
                Err(e) => {
                    tracing::warn!(hypervisor = %name, error = %e, "hypervisor removal stopped");
                    this.set_removal(&name, Some(HvRemoval::Failed(e.to_string())));
                }
            }
        });
    }

    pub(crate) fn removal(&self, name: &str) -> Option<HvRemoval> {
        self.inner
            .hypervisor_removals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    fn set_removal(&self, name: &str, state: Option<HvRemoval>) {
        let mut removals = self
            .inner
            .hypervisor_removals
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match state {
            Some(s) => {
                removals.insert(name.to_string(), s);
            }
            None => {
                removals.remove(name);
            }
        }
    }

    /// The end of a removal, once nothing of a cluster is left on `name`:
    /// the agent applies its emptied placement, then the certificates are
    /// revoked, the link closed and the hypervisor forgotten.
    async fn finish_removal(
        &self,
        name: &str,
        registered: bool,
        drained: DrainOutcome,
    ) -> Result<RemoveOutcome, OpError> {
        let mut outcome = RemoveOutcome {
            drained,
            done: true,
            ..Default::default()
        };
        if registered {
            self.wait_applied(name).await;
            let placement = self.inner.index.placement(name);
            let crate::cluster::moves::Blockers { stray, moving } =
                crate::cluster::moves::removal_blockers(placement.as_deref());
            if !stray.is_empty() {
                return Err(OpError::FailedPrecondition(format!(
                    "hypervisor {name} still holds components no cluster owns ({}); it stays \
                     cordoned and joined: remove them, then run `oi hypervisor remove {name}` \
                     again",
                    stray.join(", ")
                )));
            }
            if !moving.is_empty() {
                return Err(OpError::FailedPrecondition(format!(
                    "hypervisor {name} still holds {}; it stays cordoned and joined: run \
                     `oi hypervisor remove {name}` again",
                    moving.join(", ")
                )));
            }
        }
        // In one write: an agent connecting now either registers before
        // (and is closed here) or sees the revocation.
        let owned = name.to_string();
        let (revoked, conn) = self
            .inner
            .writer
            .run(move |tx| async move {
                let name = owned;
                // Called off (uncordon) since it was decided: remove nothing.
                let called_off = tx
                    .index()
                    .record(&name)
                    .is_some_and(|r| r.removing_unix_ms.is_none());
                if registered && called_off {
                    return Err(OpError::FailedPrecondition(format!(
                        "the removal of {name} was called off (uncordoned)"
                    )));
                }
                let revoked = tx
                    .store()
                    .revoke_identities(&name, unix_ms())
                    .await
                    .map_err(|e| OpError::Internal(format!("revoke identities: {e}")))?;
                let conn = tx
                    .forget_hypervisor(&name, registered)
                    .await
                    .map_err(|e| OpError::Internal(format!("forget hypervisor: {e}")))?;
                Ok::<_, OpError>((revoked, conn))
            })
            .await?;
        outcome.revoked_certificates = revoked;
        if let Some(conn) = conn {
            conn.close(
                CloseCode::CloseRevoked.varint(),
                format!(
                    "hypervisor {name} was removed and its certificate revoked; stop this agent \
                     (systemctl disable --now oi-agent), or join it again"
                )
                .as_bytes(),
            );
            outcome.disconnected = true;
        }
        tracing::info!(hypervisor = %name, revoked = outcome.revoked_certificates,
            disconnected = outcome.disconnected, "hypervisor removed");
        Ok(outcome)
    }
}
