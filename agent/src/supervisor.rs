//! The reconcile loop around [`crate::plan::plan`]: level-triggered, woken
//! by a new placement, a probe result, the end of a backoff, finished work,
//! or the periodic full resync. It never stops a container because the
//! agent is shutting down or disconnected: only a placement that no longer
//! names a component removes it.
//!
//! Work runs per component: each component's actions run in a task of
//! their own, at most one per component at a time, so a ten-minute image
//! pull for one component never delays restarting another's crashed
//! container.

use crate::plan::{self, Action, Failure};
use crate::probe;
use crate::runtime::{ContainerState, ObservedPod, Runtime, RuntimeError};
use crate::status::{self, ProbeKey, ProbeView};
use oi_proto::model::{Component, ComponentStatus, Placement, Probe, ProbeResult};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::{AbortHandle, Id, JoinSet};

/// How long shutdown lets work in flight finish before dropping it (a pod
/// left half-created is finished by the next start's plan).
const DRAIN: Duration = Duration::from_secs(5);

/// What one component's task did: each action with its result, and the
/// spec it acted on (for failure backoff).
struct Done {
    component: Option<Component>,
    results: Vec<(Action, Result<(), RuntimeError>)>,
}

type ProbeTable = Arc<Mutex<HashMap<ProbeKey, ProbeView>>>;

pub struct Supervisor<R> {
    runtime: Arc<R>,
    desired: watch::Receiver<Arc<Placement>>,
    status: watch::Sender<Option<Vec<ComponentStatus>>>,
    resync: Duration,
    failures: HashMap<String, Failure>,
    probes: ProbeTable,
    /// Per probed container: the pod hash and the container's attempt it
    /// probes, and its task.
    probe_tasks: HashMap<ProbeKey, (String, u32, AbortHandle)>,
    probe_changed: Arc<Notify>,
    /// One task per component with work in flight.
    work: JoinSet<Done>,
    in_flight: HashMap<Id, String>,
}

pub(crate) use oi_proto::clock::unix_ms as now_ms;

impl<R: Runtime> Supervisor<R> {
    pub fn new(
        runtime: Arc<R>,
        desired: watch::Receiver<Arc<Placement>>,
        status: watch::Sender<Option<Vec<ComponentStatus>>>,
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
            work: JoinSet::new(),
            in_flight: HashMap::new(),
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
                Some(done) = self.work.join_next_with_id() => self.finished(done),
                _ = tokio::time::sleep(wait) => {}
            }
        }
        for (_, (_, _, task)) in self.probe_tasks.drain() {
            task.abort();
        }
        let work = &mut self.work;
        if tokio::time::timeout(DRAIN, async { while work.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            tracing::warn!(
                left = work.len(),
                "pod work did not finish within {DRAIN:?}; the next start finishes it"
            );
            work.abort_all();
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
        self.start_work(&desired, plan.actions);
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
        self.publish(statuses);
        plan.wake_at_ms
    }

    /// Starts a task for each component with actions, unless one runs for
    /// it already (its finish wakes another pass, which plans again from
    /// what the runtime then reports). A component's actions run in order.
    fn start_work(&mut self, desired: &Placement, actions: Vec<Action>) {
        let mut by_component: Vec<(String, Vec<Action>)> = Vec::new();
        for action in actions {
            let id = action_id(&action).to_string();
            match by_component.iter_mut().find(|(i, _)| *i == id) {
                Some((_, list)) => list.push(action),
                None => by_component.push((id, vec![action])),
            }
        }
        for (id, actions) in by_component {
            if self.in_flight.values().any(|busy| *busy == id) {
                continue;
            }
            let component = desired.components.get(&id).cloned();
            let runtime = self.runtime.clone();
            let generation = desired.cursor.generation;
            let handle = self.work.spawn(async move {
                let mut results = Vec::with_capacity(actions.len());
                for action in actions {
                    let result = execute(&*runtime, component.as_ref(), &action, generation).await;
                    results.push((action, result));
                }
                Done { component, results }
            });
            self.in_flight.insert(handle.id(), id);
        }
    }

    /// Records what a component's task did.
    fn finished(&mut self, done: Result<(Id, Done), tokio::task::JoinError>) {
        let (task, done) = match done {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "pod work task failed");
                self.in_flight.remove(&e.id());
                return;
            }
        };
        let Some(id) = self.in_flight.remove(&task) else {
            return;
        };
        for (action, result) in done.results {
            match result {
                Ok(()) => {
                    self.failures.remove(&id);
                }
                Err(e) => {
                    tracing::warn!(component = %id, error = %e, "{action:?} failed");
                    if let Some(c) = &done.component {
                        self.record_failure(c, &e);
                    }
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
    /// Publishes the statuses of a pass (the first one always, so that the
    /// link knows the runtime has been listed), and later ones when they
    /// changed.
    fn publish(&self, statuses: Vec<ComponentStatus>) {
        self.status.send_if_modified(|cur| {
            if cur.as_ref() == Some(&statuses) {
                false
            } else {
                *cur = Some(statuses);
                true
            }
        });
    }

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
        self.publish(statuses);
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

fn action_id(action: &Action) -> &str {
    match action {
        Action::Create { id }
        | Action::Restart { id, .. }
        | Action::SyncFiles { id }
        | Action::Remove { id, .. } => id,
    }
}

/// Runs one action against the runtime. `component` is the desired spec
/// (`None` for a removal of what is no longer placed).
async fn execute<R: Runtime>(
    runtime: &R,
    component: Option<&Component>,
    action: &Action,
    generation: u64,
) -> Result<(), RuntimeError> {
    let spec = |id: &str| {
        component.ok_or_else(|| RuntimeError::Other(format!("component {id} is not placed")))
    };
    match action {
        Action::Create { id } => {
            let c = spec(id)?;
            tracing::info!(component = %id, spec = %c.spec_hash(), "creating pod");
            runtime.create(c, generation).await
        }
        Action::Restart { id, container } => {
            tracing::info!(component = %id, %container, "starting container");
            runtime
                .restart_container(spec(id)?, container, generation)
                .await
        }
        Action::SyncFiles { id } => {
            tracing::info!(component = %id, "files changed: rewriting them and reloading");
            runtime.sync_files(spec(id)?).await
        }
        Action::Remove { id, incarnation } => {
            tracing::info!(component = %id, %incarnation, "removing pod that is no longer placed here");
            runtime.remove(id, incarnation).await
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

    fn component(id: &str, image: &str) -> Component {
        Component {
            incarnation: String::new(),
            id: id.into(),
            cluster: String::new(),
            pod: oi_proto::model::PodSpec {
                containers: vec![oi_proto::model::Container {
                    name: "c".into(),
                    image: image.into(),
                    ..Default::default()
                }],
                files: vec![],
            },
        }
    }

    async fn until(what: &str, mut cond: impl FnMut() -> bool) {
        for _ in 0..500 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what}: not within 5s");
    }

    /// A pull that takes long (here: forever, until released) for one
    /// component does not hold up another: it is created, and its crashed
    /// container restarted, meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_pull_does_not_hold_up_other_components() {
        use crate::runtime::fake::FakeRuntime;
        let rt = Arc::new(FakeRuntime::new());
        rt.hold_pull("slow:1");
        let mut placement = Placement::new("epoch", 1);
        for c in [component("a", "slow:1"), component("b", "fast:1")] {
            placement.components.insert(c.id.clone(), c);
        }
        let (_desired_tx, desired) = watch::channel(Arc::new(placement));
        let (status_tx, _status) = watch::channel(None);
        let sup = Supervisor::new(rt.clone(), desired, status_tx, Duration::from_millis(50));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(sup.run(stopped));

        until("b created", || rt.create_count("b") == 1).await;
        rt.exit("b", "c", 1);
        let attempt = |rt: &FakeRuntime| {
            rt.pods()
                .iter()
                .find(|p| p.component_id == "b")
                .map(|p| (p.containers[0].attempt, p.containers[0].state.clone()))
        };
        until("b's crashed container restarted", || {
            attempt(&rt) == Some((1, ContainerState::Running))
        })
        .await;
        assert_eq!(rt.create_count("a"), 0, "a's pull is still running");
        rt.release_pull("slow:1");
        until("a created once its pull finished", || {
            rt.create_count("a") == 1
        })
        .await;
        let _ = stop.send(true);
        task.await.unwrap();
        // Still once each: no second create was started while one ran.
        assert_eq!((rt.create_count("a"), rt.create_count("b")), (1, 1));
    }
}
