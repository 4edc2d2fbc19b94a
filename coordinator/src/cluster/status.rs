//! A cluster's status as a pure function of what is placed (intent) and
//! what the agents last reported (observed). A component on a hypervisor
//! whose agent is disconnected is `unknown`, not assumed running.

use crate::cluster::model::Allocation;
use crate::operations::{ClusterPhase, ClusterStatus, ComponentView, Condition};
use oi_proto::model::{ComponentStatus, Phase};

/// One placed component of the cluster and what is known of it.
#[derive(Clone, Debug)]
pub struct PlacedComponent {
    pub id: String,
    /// The owning cluster; empty for none.
    pub cluster: String,
    pub hypervisor: String,
    pub spec_hash: String,
    /// Whether the hypervisor's agent is linked now.
    pub connected: bool,
    /// The agent's last report for this component, if any.
    pub observed: Option<ComponentStatus>,
}

use crate::cluster::render::ingress_id;

pub fn component_view(p: &PlacedComponent) -> ComponentView {
    let mut v = ComponentView {
        id: p.id.clone(),
        cluster: p.cluster.clone(),
        hypervisor: p.hypervisor.clone(),
        phase: Phase::Unknown,
        ready: false,
        restarts: 0,
        reason: String::new(),
        message: String::new(),
    };
    if !p.connected {
        v.reason = "HypervisorDisconnected".into();
        v.message = format!("the agent of {} is not connected", p.hypervisor);
        return v;
    }
    match &p.observed {
        None => {
            v.phase = Phase::Pending;
            v.reason = "NotReported".into();
            v.message = "the agent has not reported this component yet".into();
        }
        Some(o) => {
            v.restarts = o.containers.iter().map(|c| c.restart_count).sum();
            if o.spec_hash != p.spec_hash {
                v.phase = Phase::Pending;
                v.reason = "Updating".into();
                v.message = "the agent has not applied the current spec yet".into();
            } else {
                v.phase = o.phase;
                v.ready = o.ready;
                v.reason = o.reason.clone();
                v.message = o.message.clone();
            }
        }
    }
    v
}

fn short(cluster: &str, id: &str) -> String {
    id.strip_prefix(cluster)
        .and_then(|s| s.strip_prefix('/'))
        .unwrap_or(id)
        .to_string()
}

/// The Bootstrapped condition from the bootstrapper's last result for the
/// cluster (the endpoint it bootstrapped, or its error).
pub fn bootstrapped(last: Option<&Result<String, String>>, endpoint: &str) -> Condition {
    let (status, reason, message) = match last {
        Some(Ok(at)) if at == endpoint => (
            true,
            "Bootstrapped",
            "endpoints and RBAC applied".to_string(),
        ),
        Some(Err(e)) => (false, "BootstrapFailed", e.clone()),
        _ => (
            false,
            "WaitingForAPI",
            "applied once the API is ready".to_string(),
        ),
    };
    Condition {
        kind: "Bootstrapped".into(),
        status,
        reason: reason.into(),
        message,
    }
}

/// The Replicas condition: declared count versus the slots, with the
/// replicas joining (learners) and leaving (migrating off a hypervisor),
/// and the last etcd membership step that failed (retried), if any.
pub fn replicas(desired: u32, allocation: &Allocation, step_error: Option<&str>) -> Condition {
    let slots = &allocation.replicas;
    let mut moving = Vec::new();
    for s in slots {
        if s.etcd.adding {
            moving.push(format!(
                "replica {} being added on {}",
                s.index, s.hypervisor
            ));
        } else if s.etcd.removing {
            moving.push(format!(
                "replica {} being removed from {}",
                s.index, s.hypervisor
            ));
        } else if s.etcd.leaving {
            moving.push(format!("replica {} leaving {}", s.index, s.hypervisor));
        } else if s.etcd.pending {
            moving.push(format!("replica {} joining on {}", s.index, s.hypervisor));
        }
    }
    let steady = moving.is_empty() && slots.len() as u32 == desired;
    let mut message = format!("{} of {desired} replica(s)", slots.len());
    if !moving.is_empty() {
        message.push_str(&format!("; {}", moving.join(", ")));
    }
    if let Some(e) = step_error {
        message.push_str(&format!(
            "; last etcd membership step failed (retrying): {e}"
        ));
    }
    Condition {
        kind: "Replicas".into(),
        status: steady,
        reason: if steady {
            "AsDeclared"
        } else {
            "Reconfiguring"
        }
        .into(),
        message,
    }
}

pub fn compute(
    cluster: &str,
    allocation: Option<&Allocation>,
    pending_reason: &str,
    placed: &[PlacedComponent],
    ever_ready: bool,
) -> ClusterStatus {
    let components: Vec<ComponentView> = placed.iter().map(component_view).collect();
    let mut conditions = Vec::new();
    let Some(allocation) = allocation else {
        conditions.push(Condition {
            kind: "Scheduled".into(),
            status: false,
            reason: "Unschedulable".into(),
            message: pending_reason.to_string(),
        });
        return ClusterStatus {
            phase: ClusterPhase::Pending,
            endpoint: String::new(),
            conditions,
            components,
        };
    };
    conditions.push(Condition {
        kind: "Scheduled".into(),
        status: true,
        reason: "Placed".into(),
        message: format!(
            "{} control-plane replica(s) on {}; ingress on {}",
            allocation.replicas.len(),
            allocation
                .replicas
                .iter()
                .map(|r| r.hypervisor.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            allocation.ingress.hypervisor
        ),
    });
    let not_running: Vec<String> = components
        .iter()
        .filter(|c| c.phase != Phase::Running)
        .map(|c| {
            let mut s = format!(
                "{} on {}: {}",
                short(cluster, &c.id),
                c.hypervisor,
                c.phase.as_str()
            );
            if !c.reason.is_empty() {
                s.push_str(&format!(" ({})", c.reason));
            }
            if !c.message.is_empty() {
                s.push_str(&format!(": {}", c.message));
            }
            s
        })
        .collect();
    let running = not_running.is_empty() && !components.is_empty();
    conditions.push(Condition {
        kind: "ComponentsRunning".into(),
        status: running,
        reason: if running {
            "AllRunning"
        } else {
            "ComponentsNotRunning"
        }
        .into(),
        message: if running {
            format!("{} components running", components.len())
        } else {
            let more = not_running.len().saturating_sub(3);
            let mut m = not_running
                .into_iter()
                .take(3)
                .collect::<Vec<_>>()
                .join("; ");
            if more > 0 {
                m.push_str(&format!("; and {more} more"));
            }
            m
        },
    });
    // Availability (the API answers through the ingress) and health (every
    // component runs and passes its probe) are shown apart: an API that
    // answers while controller-managers crash-loop is available, not ready.
    let ingress = ingress_id(cluster);
    let available = components.iter().any(|c| c.id == ingress && c.ready);
    conditions.push(Condition {
        kind: "Available".into(),
        status: available,
        reason: if available {
            "APIReachable"
        } else {
            "APINotReachable"
        }
        .into(),
        message: if available {
            format!(
                "{}/readyz answers through the ingress",
                allocation.endpoint()
            )
        } else {
            "the API does not answer /readyz through the ingress yet".into()
        },
    });
    let unhealthy: Vec<String> = components
        .iter()
        .filter(|c| !(c.phase == Phase::Running && c.ready))
        .map(|c| {
            let mut s = format!("{} on {}", short(cluster, &c.id), c.hypervisor);
            if c.phase == Phase::Running {
                s.push_str(": running, not passing its probe");
            } else {
                s.push_str(&format!(": {}", c.phase.as_str()));
            }
            if !c.reason.is_empty() {
                s.push_str(&format!(" ({})", c.reason));
            }
            s
        })
        .collect();
    let healthy = unhealthy.is_empty() && !components.is_empty();
    conditions.push(Condition {
        kind: "Healthy".into(),
        status: healthy,
        reason: if healthy {
            "AllComponentsReady"
        } else {
            "ComponentsNotReady"
        }
        .into(),
        message: if healthy {
            format!("{} components running and ready", components.len())
        } else {
            let more = unhealthy.len().saturating_sub(3);
            let mut m = unhealthy.into_iter().take(3).collect::<Vec<_>>().join("; ");
            if more > 0 {
                m.push_str(&format!("; and {more} more"));
            }
            m
        },
    });
    let ready = available && healthy;
    conditions.push(Condition {
        kind: "Ready".into(),
        status: ready,
        reason: match (available, healthy) {
            (true, true) => "AvailableAndHealthy",
            (false, _) => "NotAvailable",
            (true, false) => "NotHealthy",
        }
        .into(),
        message: if ready {
            "the API answers through the ingress and every component is ready".into()
        } else {
            "ready needs the API to answer through the ingress (Available) and every component \
             to run and pass its probe (Healthy)"
                .into()
        },
    });
    let phase = match (ready, ever_ready) {
        (true, _) => ClusterPhase::Ready,
        (false, true) => ClusterPhase::Degraded,
        (false, false) => ClusterPhase::Provisioning,
    };
    ClusterStatus {
        phase,
        endpoint: allocation.endpoint(),
        conditions,
        components,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::model::{EtcdJoin, IngressSlot, ReplicaPorts, ReplicaSlot};

    fn alloc() -> Allocation {
        Allocation {
            replicas: vec![ReplicaSlot {
                etcd: Default::default(),
                index: 0,
                hypervisor: "hv-a".into(),
                address: "10.0.0.1".into(),
                ports: ReplicaPorts::from_slice(&[1, 2, 3, 4, 5, 6]).unwrap(),
            }],
            ingress: IngressSlot {
                hypervisor: "hv-p".into(),
                address: "10.0.0.9".into(),
                port: 30000,
            },
        }
    }

    fn placed(
        id: &str,
        hv: &str,
        connected: bool,
        phase: Option<(Phase, bool)>,
    ) -> PlacedComponent {
        PlacedComponent {
            id: id.into(),
            cluster: "c".into(),
            hypervisor: hv.into(),
            spec_hash: "h".into(),
            connected,
            observed: phase.map(|(phase, ready)| ComponentStatus {
                id: id.into(),
                spec_hash: "h".into(),
                phase,
                ready,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn phases_and_conditions() {
        let s = compute("c", None, "no private hypervisor with room", &[], false);
        assert_eq!(s.phase, ClusterPhase::Pending);
        assert_eq!(s.conditions[0].message, "no private hypervisor with room");

        let a = alloc();
        let comps = vec![
            placed("c/etcd-0", "hv-a", true, Some((Phase::Running, true))),
            placed("c/ingress", "hv-p", true, Some((Phase::Running, false))),
        ];
        let s = compute("c", Some(&a), "", &comps, false);
        assert_eq!(s.phase, ClusterPhase::Provisioning);
        assert_eq!(s.endpoint, "https://10.0.0.9:30000");
        assert!(s.conditions[1].status);
        assert!(!s.conditions[2].status);

        let comps = vec![
            placed("c/etcd-0", "hv-a", false, Some((Phase::Running, true))),
            placed("c/ingress", "hv-p", true, Some((Phase::Running, true))),
        ];
        let s = compute("c", Some(&a), "", &comps, true);
        assert_eq!(
            s.phase,
            ClusterPhase::Degraded,
            "available, but a component's state is unknown: not ready"
        );
        assert_eq!(
            s.components[0].phase,
            Phase::Unknown,
            "disconnected is unknown"
        );
        assert!(s.conditions[1]
            .message
            .contains("etcd-0 on hv-a: unknown (HypervisorDisconnected)"));
        let cond =
            |s: &ClusterStatus, k: &str| s.conditions.iter().find(|c| c.kind == k).unwrap().status;
        assert!(cond(&s, "Available"));
        assert!(!cond(&s, "Healthy"));
        assert!(!cond(&s, "Ready"));

        // The observed case: the API answers through the ingress while the
        // controller-managers and schedulers crash-loop. Available, not
        // healthy, so not ready: `--wait` goes on waiting.
        let mut comps = vec![
            placed("c/etcd-0", "hv-a", true, Some((Phase::Running, true))),
            placed(
                "c/kube-apiserver-0",
                "hv-a",
                true,
                Some((Phase::Running, true)),
            ),
            placed(
                "c/kube-controller-manager-0",
                "hv-a",
                true,
                Some((Phase::Failed, false)),
            ),
            placed(
                "c/kube-scheduler-0",
                "hv-a",
                true,
                Some((Phase::Running, false)),
            ),
            placed("c/ingress", "hv-p", true, Some((Phase::Running, true))),
        ];
        let s = compute("c", Some(&a), "", &comps, false);
        assert_eq!(s.phase, ClusterPhase::Provisioning);
        assert!(cond(&s, "Available"));
        assert!(!cond(&s, "Healthy"));
        let healthy = s.conditions.iter().find(|c| c.kind == "Healthy").unwrap();
        assert!(
            healthy
                .message
                .contains("kube-controller-manager-0 on hv-a: failed")
                && healthy
                    .message
                    .contains("kube-scheduler-0 on hv-a: running, not passing its probe"),
            "{}",
            healthy.message
        );
        let s = compute("c", Some(&a), "", &comps, true);
        assert_eq!(s.phase, ClusterPhase::Degraded);
        for c in &mut comps {
            c.observed = Some(ComponentStatus {
                id: c.id.clone(),
                spec_hash: "h".into(),
                phase: Phase::Running,
                ready: true,
                ..Default::default()
            });
        }
        let s = compute("c", Some(&a), "", &comps, false);
        assert_eq!(s.phase, ClusterPhase::Ready);
        assert!(cond(&s, "Ready") && cond(&s, "Healthy") && cond(&s, "Available"));

        let comps = vec![placed("c/ingress", "hv-p", true, None)];
        let s = compute("c", Some(&a), "", &comps, true);
        assert_eq!(s.phase, ClusterPhase::Degraded);
        assert_eq!(s.components[0].reason, "NotReported");
    }

    #[test]
    fn an_old_spec_is_not_reported_as_current() {
        let mut p = placed("c/etcd-0", "hv-a", true, Some((Phase::Running, true)));
        p.spec_hash = "new".into();
        let v = component_view(&p);
        assert_eq!((v.phase, v.reason.as_str()), (Phase::Pending, "Updating"));
    }

    #[test]
    fn replicas_condition_says_what_moves_and_what_failed() {
        let mut a = alloc();
        let one = a.replicas[0].clone();
        for (i, etcd) in [
            EtcdJoin {
                adding: true,
                ..Default::default()
            },
            EtcdJoin {
                pending: true,
                ..Default::default()
            },
            EtcdJoin {
                removing: true,
                ..Default::default()
            },
        ]
        .into_iter()
        .enumerate()
        {
            let mut s = one.clone();
            s.index = i as u32 + 1;
            s.etcd = etcd;
            a.replicas.push(s);
        }
        let c = replicas(3, &a, None);
        assert!(!c.status);
        assert_eq!(c.reason, "Reconfiguring");
        assert_eq!(
            c.message,
            "4 of 3 replica(s); replica 1 being added on hv-a, replica 2 joining on hv-a, \
             replica 3 being removed from hv-a"
        );
        let c = replicas(3, &a, Some("add learner: etcd unavailable"));
        assert!(c.message.ends_with(
            "; last etcd membership step failed (retrying): add learner: etcd unavailable"
        ));
        let c = replicas(1, &alloc(), None);
        assert!(c.status);
        assert_eq!(
            (c.reason.as_str(), c.message.as_str()),
            ("AsDeclared", "1 of 1 replica(s)")
        );
    }
}
