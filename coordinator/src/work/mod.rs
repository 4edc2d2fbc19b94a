//! The cluster work loop: level-triggered, per cluster. Every `period`, and
//! whenever something asks for it ([`Kick`]), the clusters that need work
//! (pending placement, an etcd membership step) are listed, and each one
//! that is not already being worked on and not backing off gets a task of
//! its own. One cluster whose etcd hangs therefore delays only itself:
//! others are placed, scaled and deleted meanwhile.

pub(crate) mod backoff;
mod keyed_lock;

pub(crate) use keyed_lock::KeyedLocks;

use crate::coordinator::Coordinator;
use backoff::Backoff;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::{Id, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};

/// The longest a failing cluster waits between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long shutdown lets steps in flight finish. Each records its intent
/// before it calls etcd, so one cut short is finished on the next start.
const DRAIN: Duration = Duration::from_secs(5);

/// Asks the work loop to look at the clusters now rather than at its next
/// tick (after a declared change such as a new replica count). A cluster
/// named here starts over: its backoff from earlier failures is dropped,
/// as a new declaration is worth trying at once.
#[derive(Default)]
pub(crate) struct Kick {
    pub(crate) notify: Notify,
    fresh: std::sync::Mutex<HashSet<String>>,
}

impl Kick {
    pub(crate) fn cluster(&self, name: &str) {
        self.fresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string());
        self.notify.notify_one();
    }

    pub(crate) fn take_fresh(&self) -> HashSet<String> {
        std::mem::take(&mut *self.fresh.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// What one pass over one cluster came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Done, or nothing it could do now that retrying sooner would change.
    Settled,
    /// Waiting on something that is expected to take a while (a learner
    /// catching up before its promotion): retried every period, no backoff.
    Waiting,
    /// A step failed (etcd unreachable, a learner not caught up): back off.
    Failed,
}

pub(crate) async fn run(
    coordinator: Coordinator,
    period: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(period, MAX_BACKOFF);
    let mut work = Work::default();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let kick = &coordinator.inner.work_kick;
    loop {
        tokio::select! {
            _ = crate::stopped(&mut shutdown) => break,
            Some(done) = work.tasks.join_next_with_id() => {
                let (id, outcome) = match done {
                    Ok((id, outcome)) => (id, outcome),
                    Err(e) => {
                        tracing::error!(error = %e, "cluster work task failed");
                        (e.id(), Outcome::Failed)
                    }
                };
                let Some(name) = work.running.remove(&id) else { continue };
                match outcome {
                    Outcome::Settled | Outcome::Waiting => backoff.succeeded(&name),
                    Outcome::Failed => {
                        let wait = backoff.failed(&name, Instant::now());
                        tracing::debug!(cluster = %name, ?wait, "cluster work backs off");
                    }
                }
            }
            _ = tick.tick() => work.queue(&coordinator, &mut backoff).await,
            _ = kick.notify.notified() => {
                for name in kick.take_fresh() {
                    backoff.succeeded(&name);
                }
                work.queue(&coordinator, &mut backoff).await
            }
        }
    }
    let tasks = &mut work.tasks;
    if tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::warn!(
            left = tasks.len(),
            "cluster work did not finish within {DRAIN:?}; its recorded intent is finished on the next start"
        );
        tasks.abort_all();
    }
}

/// The tasks in flight, one per cluster at most.
#[derive(Default)]
struct Work {
    tasks: JoinSet<Outcome>,
    running: HashMap<Id, String>,
}

impl Work {
    /// Starts a task for every cluster that needs work, is not being worked
    /// on and is not backing off.
    async fn queue(&mut self, coordinator: &Coordinator, backoff: &mut Backoff) {
        let records = match coordinator.inner.store.list_clusters().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "list clusters for the work loop");
                return;
            }
        };
        let names: HashSet<&str> = records.iter().map(|r| r.spec.name.as_str()).collect();
        backoff.retain(|k| names.contains(k));
        // Deletions nobody follows with --wait are forgotten once done too.
        coordinator.prune_removals();
        // Hypervisor removals recorded before a restart go on.
        coordinator.resume_removals();
        let busy: HashSet<String> = self.running.values().cloned().collect();
        let now = Instant::now();
        for record in &records {
            let name = &record.spec.name;
            if !crate::lifecycle::replicas::needs_work(record)
                || busy.contains(name)
                || !backoff.due(name, now)
            {
                continue;
            }
            let c = coordinator.clone();
            let owned = name.clone();
            let handle = self
                .tasks
                .spawn(async move { c.reconcile_cluster(&owned).await });
            self.running.insert(handle.id(), name.clone());
        }
    }
}
