//! Component status as a pure function of the placement, what the runtime
//! reports, the last failures and the probe results.

use crate::backoff;
use crate::plan::Failure;
use crate::runtime::{ContainerState, ObservedPod};
use oi_proto::model::{ComponentStatus, ContainerStatus, Phase, Placement, ProbeResult};
use std::collections::HashMap;
use std::time::Duration;

/// What the prober knows about one container of one spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeView {
    /// The pod hash of the pod it probes.
    pub spec_hash: String,
    /// The latest result; `at_unix_ms` is when it last changed.
    pub result: ProbeResult,
    /// Succeeded at least once, and has not failed `failure_threshold` times
    /// in a row since.
    pub ready: bool,
}

pub type ProbeKey = (String, String);

pub fn compute(
    desired: &Placement,
    observed: &[ObservedPod],
    failures: &HashMap<String, Failure>,
    probes: &HashMap<ProbeKey, ProbeView>,
    now_ms: u64,
) -> Vec<ComponentStatus> {
    let by_id: HashMap<&str, &ObservedPod> = observed
        .iter()
        .map(|p| (p.component_id.as_str(), p))
        .collect();
    let mut out = Vec::with_capacity(desired.components.len());
    for (id, component) in &desired.components {
        let hash = component.spec_hash();
        let mut s = ComponentStatus {
            id: id.clone(),
            spec_hash: hash.clone(),
            ..Default::default()
        };
        let pod = by_id
            .get(id.as_str())
            .filter(|p| p.pod_hash == component.pod_hash());
        let files_synced = pod.is_some_and(|p| p.files_hash == component.files_hash());
        let failure = failures.get(id).filter(|f| f.spec_hash == hash);
        let Some(pod) = pod else {
            match failure {
                Some(f) => {
                    s.phase = Phase::Failed;
                    s.reason = f.reason.clone();
                    s.message = f.message.clone();
                }
                None => {
                    s.phase = Phase::Pending;
                    s.reason = "Creating".into();
                }
            }
            out.push(s);
            continue;
        };
        let mut all_running = true;
        let mut ready = true;
        let mut crash: Option<String> = None;
        for spec in &component.pod.containers {
            let obs = pod.containers.iter().find(|c| c.name == spec.name);
            let mut cs = ContainerStatus {
                name: spec.name.clone(),
                ..Default::default()
            };
            match obs {
                None => {
                    cs.phase = Phase::Pending;
                    all_running = false;
                    ready = false;
                }
                Some(c) => {
                    cs.restart_count = c.attempt;
                    if let Some((code, reason)) = &c.previous_exit {
                        cs.last_exit_code = *code;
                        cs.last_exit_reason = reason.clone();
                    }
                    match &c.state {
                        ContainerState::Running => cs.phase = Phase::Running,
                        ContainerState::Created => {
                            cs.phase = Phase::Pending;
                            all_running = false;
                        }
                        ContainerState::Unknown => {
                            cs.phase = Phase::Unknown;
                            all_running = false;
                        }
                        ContainerState::Exited { code, reason } => {
                            cs.phase = Phase::Failed;
                            cs.last_exit_code = *code;
                            cs.last_exit_reason = reason.clone();
                            all_running = false;
                            let ran = Duration::from_millis(
                                c.finished_at_ms.saturating_sub(c.started_at_ms),
                            );
                            let at = c.finished_at_ms
                                + backoff::restart_delay(c.attempt, ran).as_millis() as u64;
                            crash.get_or_insert_with(|| {
                                format!(
                                    "container {} exited with code {code} ({reason}); \
                                     restarting in {}s",
                                    spec.name,
                                    at.saturating_sub(now_ms).div_ceil(1000)
                                )
                            });
                        }
                    }
                    if spec.probe.is_some() {
                        match probes
                            .get(&(id.clone(), spec.name.clone()))
                            .filter(|p| p.spec_hash == component.pod_hash())
                        {
                            Some(p) => {
                                cs.probe = Some(p.result.clone());
                                ready &= p.ready;
                            }
                            None => ready = false,
                        }
                    }
                }
            }
            s.containers.push(cs);
        }
        if all_running && !files_synced {
            s.phase = Phase::Pending;
            s.reason = "Reloading".into();
            s.message = "writing the new files and reloading".into();
        } else if all_running {
            s.phase = Phase::Running;
            s.ready = ready;
            if !ready {
                s.reason = "NotReady".into();
                s.message = "waiting for the health probe to pass".into();
            }
        } else if let Some(msg) = crash {
            s.phase = Phase::Failed;
            s.reason = "CrashLoopBackOff".into();
            s.message = msg;
        } else if let Some(f) = failure {
            s.phase = Phase::Failed;
            s.reason = f.reason.clone();
            s.message = f.message.clone();
        } else {
            s.phase = Phase::Pending;
            s.reason = "Starting".into();
        }
        out.push(s);
    }
    // Pods of components no longer placed are removed before statuses are
    // computed; one still here failed to go, and is reported until it does.
    let mut leftover: Vec<&str> = observed
        .iter()
        .map(|p| p.component_id.as_str())
        .filter(|id| !desired.components.contains_key(*id))
        .collect();
    leftover.sort_unstable();
    leftover.dedup();
    for id in leftover {
        out.push(ComponentStatus {
            id: id.to_string(),
            phase: Phase::Pending,
            reason: oi_proto::model::REASON_REMOVING.into(),
            message: "no longer placed here; its removal failed and is retried".into(),
            ..Default::default()
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ObservedContainer;
    use oi_proto::model::{Component, Container, PodSpec, Probe, Scheme};

    fn comp(probe: bool) -> Component {
        Component {
            incarnation: String::new(),
            id: "a".into(),
            cluster: String::new(),
            pod: PodSpec {
                containers: vec![Container {
                    name: "main".into(),
                    image: "i".into(),
                    probe: probe.then(|| Probe {
                        scheme: Scheme::Https,
                        port: 1,
                        path: "/readyz".into(),
                        period_ms: 1000,
                        timeout_ms: 1000,
                        failure_threshold: 3,
                        initial_delay_ms: 0,
                    }),
                    ..Default::default()
                }],
                files: vec![],
            },
        }
    }

    fn placed(c: &Component) -> Placement {
        let mut p = Placement::new("e", 1);
        p.components.insert(c.id.clone(), c.clone());
        p
    }

    fn pod(c: &Component, state: ContainerState, attempt: u32) -> ObservedPod {
        ObservedPod {
            incarnation: String::new(),
            component_id: c.id.clone(),
            pod_hash: c.pod_hash(),
            files_hash: c.files_hash(),
            generation: 1,
            containers: vec![ObservedContainer {
                name: "main".into(),
                state,
                attempt,
                started_at_ms: 1_000,
                finished_at_ms: 2_000,
                previous_exit: Some((3, "Error".into())),
            }],
        }
    }

    #[test]
    fn phases_and_readiness() {
        let c = comp(true);
        let d = placed(&c);
        let none = HashMap::new();
        let s = &compute(&d, &[], &none, &none_probes(), 0)[0];
        assert_eq!((s.phase, s.reason.as_str()), (Phase::Pending, "Creating"));

        let running = [pod(&c, ContainerState::Running, 2)];
        let s = &compute(&d, &running, &none, &none_probes(), 0)[0];
        assert_eq!((s.phase, s.ready), (Phase::Running, false));
        assert_eq!(s.containers[0].restart_count, 2);
        assert_eq!(s.containers[0].last_exit_code, 3);

        let probes = HashMap::from([(
            ("a".to_string(), "main".to_string()),
            ProbeView {
                spec_hash: c.pod_hash(),
                result: ProbeResult {
                    ok: true,
                    detail: "HTTP 200".into(),
                    at_unix_ms: 1,
                },
                ready: true,
            },
        )]);
        let s = &compute(&d, &running, &none, &probes, 0)[0];
        assert_eq!((s.phase, s.ready), (Phase::Running, true));

        let crashed = [pod(
            &c,
            ContainerState::Exited {
                code: 2,
                reason: "Error".into(),
            },
            2,
        )];
        let s = &compute(&d, &crashed, &none, &probes, 2_000)[0];
        assert_eq!(
            (s.phase, s.reason.as_str()),
            (Phase::Failed, "CrashLoopBackOff")
        );
        assert!(s.message.contains("restarting in 20s"), "{}", s.message);
        assert_eq!(s.containers[0].last_exit_code, 2);

        let failures = HashMap::from([(
            "a".to_string(),
            Failure {
                spec_hash: c.spec_hash(),
                count: 1,
                at_ms: 0,
                reason: "ImagePullFailed".into(),
                message: "image i is not present".into(),
            },
        )]);
        let s = &compute(&d, &[], &failures, &probes, 0)[0];
        assert_eq!(
            (s.phase, s.reason.as_str()),
            (Phase::Failed, "ImagePullFailed")
        );
    }

    fn none_probes() -> HashMap<ProbeKey, ProbeView> {
        HashMap::new()
    }

    #[test]
    fn a_pod_no_longer_placed_is_reported_removing() {
        let c = comp(false);
        let mut gone = comp(false);
        gone.id = "old".into();
        let observed = vec![
            pod(&c, ContainerState::Running, 0),
            pod(&gone, ContainerState::Running, 0),
        ];
        let s = compute(
            &placed(&c),
            &observed,
            &HashMap::new(),
            &HashMap::new(),
            3_000,
        );
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].id.as_str(), s[0].phase), ("a", Phase::Running));
        assert_eq!(
            (s[1].id.as_str(), s[1].reason.as_str()),
            ("old", oi_proto::model::REASON_REMOVING)
        );
        let s = compute(
            &placed(&c),
            &observed[..1],
            &HashMap::new(),
            &HashMap::new(),
            3_000,
        );
        assert_eq!(s.len(), 1, "nothing left over: nothing reported removing");
    }
}
