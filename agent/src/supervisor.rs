//! The reconcile loop around [`crate::plan::plan`]: level-triggered, woken
//! by a new placement, a probe result, the end of a backoff, or the periodic
//! full resync. It never stops a container because the agent is shutting
//! down or disconnected: only a placement that no longer names a component
//! removes it.

use crate::plan::{self, Action, Failure};
use crate::probe;
use crate::runtime::{ContainerState, ObservedPod, Runtime, RuntimeError};
use crate::status::{self, ProbeKey, ProbeView};
use oi_proto::model::{Component, ComponentStatus, Placement, Probe, ProbeResult};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::AbortHandle;

type ProbeTable = Arc<Mutex<HashMap<ProbeKey, ProbeView>>>;

pub struct Supervisor<R> {
    runtime: Arc<R>,
    desired: watch::Receiver<Arc<Placement>>,
    status: watch::Sender<Vec<ComponentStatus>>,
    resync: Duration,
    failures: HashMap<String, Failure>,
    probes: ProbeTable,
    /// Per probed container: the pod hash and the container's attempt it
    /// probes, and its task.
    probe_tasks: HashMap<ProbeKey, (String, u32, AbortHandle)>,
    probe_changed: Arc<Notify>,
}

pub(crate) use oi_proto::clock::unix_ms as now_ms;

impl<R: Runtime> Supervisor<R> {
    pub fn new(
        runtime: Arc<R>,
        desired: watch::Receiver<Arc<Placement>>,
        status: watch::Sender<Vec<ComponentStatus>>,
        resync: Duration,
    ) -> Self {
        Self {
            runtime,
            desired,
            status,
            resync,
            failures: HashMap::new(),
            probes: Arc::default(),
            probe_tasks: HashMap::new(),
            probe_changed: Arc::new(Notify::new()),
        }
    }

    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let wake_at = self.reconcile().await;
            let wait = wake_at
                .map(|at| Duration::from_millis(at.saturating_sub(now_ms())))
                .unwrap_or(self.resync)
                .min(self.resync);
            let notified = self.probe_changed.clone();
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                changed = self.desired.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                _ = notified.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        for (_, (_, _, task)) in self.probe_tasks.drain() {
            task.abort();
        }
        tracing::info!("supervisor stopped; containers keep running");
    }

    /// One pass. Returns when a backoff ends (unix ms), if one is pending.
    async fn reconcile(&mut self) -> Option<u64> {
        let placed = self.desired.borrow_and_update().clone();
        // What runs: the placement, plus components held from an earlier
        // epoch (never removed until released).
        let desired = Arc::new(Placement {
            cursor: placed.cursor.clone(),
            components: placed.effective(),
            held: Default::default(),
        });
        let observed = match self.runtime.list().await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "list pods");
                self.publish_unknown(&desired, &e);
                return None;
            }
        };
        let plan = plan::plan(&desired, &observed, &self.failures, now_ms());
        let acted = !plan.actions.is_empty();
        for action in plan.actions {
            self.execute(&desired, action).await;
        }
        let observed = if acted {
            match self.runtime.list().await {
                Ok(o) => o,
                Err(e) => {
                    self.publish_unknown(&desired, &e);
                    return plan.wake_at_ms;
                }
            }
        } else {
            observed
        };
        self.failures
            .retain(|id, _| desired.components.contains_key(id));
        self.sync_probes(&desired, &observed);
        let mut statuses = {
            let probes = self.probes.lock().unwrap_or_else(|e| e.into_inner());
            status::compute(&desired, &observed, &self.failures, &probes, now_ms())
        };
        for st in &mut statuses {
            if placed.held.contains_key(&st.id) {
                st.reason = oi_proto::model::REASON_NOT_ADOPTED.into();
                st.message = "kept running from an earlier coordinator store (another epoch); \
                    the current one does not place it. Restore the right store, or release it \
                    on this hypervisor with `oi-agent release-held`"
                    .into();
            }
        }
        self.status.send_if_modified(|cur| {
            if *cur == statuses {
                false
            } else {
                *cur = statuses;
                true
            }
        });
        plan.wake_at_ms
    }

    async fn execute(&mut self, desired: &Placement, action: Action) {
        let generation = desired.cursor.generation;
        let (id, result) = match &action {
            Action::Create { id } => {
                let c = &desired.components[id];
                tracing::info!(component = %id, spec = %c.spec_hash(), "creating pod");
                (id, self.runtime.create(c, generation).await)
            }
            Action::Restart { id, container } => {
                let c = &desired.components[id];
                tracing::info!(component = %id, %container, "starting container");
                (
                    id,
                    self.runtime
                        .restart_container(c, container, generation)
                        .await,
                )
            }
            Action::SyncFiles { id } => {
                let c = &desired.components[id];
                tracing::info!(component = %id, "files changed: rewriting them and reloading");
                (id, self.runtime.sync_files(c).await)
            }
            Action::Remove { id, incarnation } => {
                tracing::info!(component = %id, %incarnation, "removing pod that is no longer placed here");
                (id, self.runtime.remove(id, incarnation).await)
            }
        };
        match result {
            Ok(()) => {
                self.failures.remove(id);
            }
            Err(e) => {
                tracing::warn!(component = %id, error = %e, "{action:?} failed");
                if let Some(c) = desired.components.get(id) {
                    self.record_failure(c, &e);
                }
            }
        }
    }

    fn record_failure(&mut self, c: &Component, e: &RuntimeError) {
        let hash = c.spec_hash();
        let count = self
            .failures
            .get(&c.id)
            .filter(|f| f.spec_hash == hash)
            .map_or(1, |f| f.count + 1);
        self.failures.insert(
            c.id.clone(),
            Failure {
                spec_hash: hash,
                count,
                at_ms: now_ms(),
                reason: e.reason().into(),
                message: e.to_string(),
            },
        );
    }

    /// The runtime could not be asked: nothing about the pods is known.
    fn publish_unknown(&self, desired: &Placement, e: &RuntimeError) {
        let statuses: Vec<ComponentStatus> = desired
            .components
            .values()
            .map(|c| ComponentStatus {
                id: c.id.clone(),
                spec_hash: c.spec_hash(),
                reason: e.reason().into(),
                message: e.to_string(),
                ..Default::default()
            })
            .collect();
        self.status.send_if_modified(|cur| {
            if *cur == statuses {
                false
            } else {
                *cur = statuses;
                true
            }
        });
    }

    /// One prober per running container that has a probe; probers of
    /// containers that are gone, changed or restarted stop. A restarted
    /// container (a new attempt) gets a new prober, so it is unready until
    /// it passes again and is probed every second until then.
    fn sync_probes(&mut self, desired: &Placement, observed: &[ObservedPod]) {
        let mut want: HashMap<ProbeKey, (String, u32, Probe)> = HashMap::new();
        for pod in observed {
            let Some(c) = desired.components.get(&pod.component_id) else {
                continue;
            };
            let hash = c.pod_hash();
            if pod.pod_hash != hash {
                continue;
            }
            for k in &c.pod.containers {
                let running = pod
                    .containers
                    .iter()
                    .find(|o| o.name == k.name && o.state == ContainerState::Running);
                if let (Some(o), Some(p)) = (running, &k.probe) {
                    want.insert(
                        (c.id.clone(), k.name.clone()),
                        (hash.clone(), o.attempt, p.clone()),
                    );
                }
            }
        }
        self.probe_tasks.retain(|key, (hash, attempt, task)| {
            let keep = want
                .get(key)
                .is_some_and(|(h, a, _)| h == hash && a == attempt);
            if !keep {
                task.abort();
            }
            keep
        });
        // A result stands only while the prober that wrote it runs.
        self.probes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|key, _| self.probe_tasks.contains_key(key));
        for (key, (hash, attempt, p)) in want {
            if self.probe_tasks.contains_key(&key) {
                continue;
            }
            let task = tokio::spawn(probe_loop(
                key.clone(),
                hash.clone(),
                p,
                self.probes.clone(),
                self.probe_changed.clone(),
            ));
            self.probe_tasks
                .insert(key, (hash, attempt, task.abort_handle()));
        }
    }
}

/// How often a container that has not passed its probe yet is probed
/// (when its period is longer): a starting API server is seen ready within
/// a second, not up to a whole period later. Like kubelet's startup probes,
/// but with no separate spec: the first success switches to the period.
const STARTUP_PROBE_PERIOD: Duration = Duration::from_secs(1);

/// The wait before the next probe: the startup period until the first
/// success, then the spec's period.
fn next_probe_delay(period: Duration, ever_passed: bool) -> Duration {
    if ever_passed {
        period
    } else {
        period.min(STARTUP_PROBE_PERIOD)
    }
}

/// Probes one container every period (more often until it first passes,
/// see [`STARTUP_PROBE_PERIOD`]); records a result only when it changes, so
/// a steady state sends no status updates.
async fn probe_loop(
    key: ProbeKey,
    spec_hash: String,
    p: Probe,
    table: ProbeTable,
    changed: Arc<Notify>,
) {
    tokio::time::sleep(Duration::from_millis(p.initial_delay_ms.into())).await;
    let period = Duration::from_millis(p.period_ms.max(200).into());
    let threshold = p.failure_threshold.max(1);
    let mut failures_in_a_row = 0u32;
    let mut ever_passed = false;
    loop {
        let r = probe::run(&p).await;
        if r.ok {
            ever_passed = true;
            failures_in_a_row = 0;
        } else {
            failures_in_a_row += 1;
        }
        let notify = {
            let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
            let prev = t.get(&key);
            let was_ready = prev.is_some_and(|v| v.ready);
            let ready = r.ok || (was_ready && failures_in_a_row < threshold);
            let same = prev.is_some_and(|v| {
                v.result.ok == r.ok && v.result.detail == r.detail && v.ready == ready
            });
            if !same {
                t.insert(
                    key.clone(),
                    ProbeView {
                        spec_hash: spec_hash.clone(),
                        result: ProbeResult {
                            ok: r.ok,
                            detail: r.detail,
                            at_unix_ms: r.at_unix_ms,
                        },
                        ready,
                    },
                );
            }
            !same
        };
        if notify {
            changed.notify_one();
        }
        tokio::time::sleep(next_probe_delay(period, ever_passed)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_run_every_second_until_the_first_pass_then_every_period() {
        let s = Duration::from_secs;
        let cases = [
            // (period, ever passed, next delay)
            (s(5), false, s(1)),
            (s(5), true, s(5)),
            (
                Duration::from_millis(200),
                false,
                Duration::from_millis(200),
            ),
            (Duration::from_millis(200), true, Duration::from_millis(200)),
            (s(1), false, s(1)),
        ];
        for (period, passed, want) in cases {
            assert_eq!(
                next_probe_delay(period, passed),
                want,
                "{period:?} {passed}"
            );
        }
    }
}
