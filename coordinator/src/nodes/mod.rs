//! The node sync: level-triggered, per cluster. Every `period`, and at once
//! after a node token changes ([`crate::work::Kick`]), each ready cluster
//! gets a task of its own (unless one runs for it or it is backing off)
//! that makes the cluster hold what its nodes need
//! ([`crate::cluster::node_bootstrap`]: bootstrap-token Secrets,
//! `cluster-info`) and decides its pending kubelet-serving CSRs
//! ([`crate::cluster::serving_csr`]).
//!
//! Tokens and `cluster-info` are written when what they are made from
//! changes, and again every [`RESYNC`] (so a Secret deleted inside the
//! cluster comes back); CSRs are looked at every pass. A cluster whose API
//! hangs delays only itself: every call is time-boxed.

mod addons;
pub(crate) mod client;
mod sync;

pub(crate) use sync::{bootstrap_of, TOKEN_ANNOTATION};

use crate::coordinator::Coordinator;
use crate::operations::ClusterPhase;
use crate::work::backoff::Backoff;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::{Id, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};

/// Tokens and `cluster-info` are written again at least this often.
pub(crate) const RESYNC: Duration = Duration::from_secs(300);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often node tokens past their retention are forgotten.
const FORGET_EVERY: Duration = Duration::from_secs(600);

/// What the loop remembers of one cluster between passes.
#[derive(Default)]
pub(crate) struct Memory {
    /// What tokens and `cluster-info` were last written from, and when.
    pub written: Option<(String, Instant)>,
}

pub(crate) async fn run(
    coordinator: Coordinator,
    period: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(period, MAX_BACKOFF);
    let mut memory: HashMap<String, Memory> = HashMap::new();
    let mut tasks: JoinSet<(Memory, bool)> = JoinSet::new();
    let mut running: HashMap<Id, String> = HashMap::new();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut forget = tokio::time::interval(FORGET_EVERY);
    forget.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let kick = &coordinator.inner.nodes_kick;
    loop {
        tokio::select! {
            _ = crate::stopped(&mut shutdown) => break,
            Some(done) = tasks.join_next_with_id() => {
                let (id, result) = match done {
                    Ok((id, r)) => (id, Some(r)),
                    Err(e) => (e.id(), None),
                };
                let Some(name) = running.remove(&id) else { continue };
                match result {
                    Some((mem, true)) => {
                        backoff.succeeded(&name);
                        memory.insert(name, mem);
                    }
                    Some((mem, false)) => {
                        coordinator.inner.metrics.node_sync_failures.inc();
                        backoff.failed(&name, Instant::now());
                        memory.insert(name, mem);
                    }
                    None => {
                        coordinator.inner.metrics.node_sync_failures.inc();
                        backoff.failed(&name, Instant::now());
                    }
                }
            }
            _ = forget.tick() => {
                let before = oi_proto::clock::unix_ms()
                    .saturating_sub(crate::cluster::node_tokens::RETENTION.as_millis() as u64);
                match coordinator.inner.store.forget_node_tokens(before).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(tokens = n, "forgot node tokens expired or revoked a week ago"),
                    Err(e) => tracing::warn!(error = %e, "forget old node tokens"),
                }
            }
            _ = tick.tick() => queue(&coordinator, &mut backoff, &mut memory, &mut tasks, &mut running).await,
            _ = kick.notify.notified() => {
                for name in kick.take_fresh() {
                    backoff.succeeded(&name);
                    // A token changed: write the tokens now.
                    if let Some(m) = memory.get_mut(&name) {
                        m.written = None;
                    }
                }
                queue(&coordinator, &mut backoff, &mut memory, &mut tasks, &mut running).await
            }
        }
    }
    tasks.abort_all();
}

/// Starts a task for every ready cluster not being synced and not backing
/// off; forgets clusters that are gone.
async fn queue(
    coordinator: &Coordinator,
    backoff: &mut Backoff,
    memory: &mut HashMap<String, Memory>,
    tasks: &mut JoinSet<(Memory, bool)>,
    running: &mut HashMap<Id, String>,
) {
    let records = match coordinator.inner.store.list_clusters().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "list clusters for the node sync");
            return;
        }
    };
    let names: HashSet<String> = records.iter().map(|r| r.spec.name.clone()).collect();
    backoff.retain(|k| names.contains(k));
    memory.retain(|k, _| names.contains(k));
    let gone: Vec<String> = coordinator
        .inner
        .cluster_clients
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .keys()
        .filter(|k| !names.contains(*k))
        .cloned()
        .collect();
    for name in gone {
        coordinator.forget_cluster_client(&name);
    }
    let busy: HashSet<String> = running.values().cloned().collect();
    let now = Instant::now();
    for record in records {
        let name = record.spec.name.clone();
        if busy.contains(&name) || !backoff.due(&name, now) {
            continue;
        }
        if coordinator.view(record.clone()).status.phase != ClusterPhase::Ready {
            continue;
        }
        let mem = memory.remove(&name).unwrap_or_default();
        let c = coordinator.clone();
        let handle = tasks.spawn(async move { sync::cluster(&c, record, mem).await });
        running.insert(handle.id(), name);
    }
}
