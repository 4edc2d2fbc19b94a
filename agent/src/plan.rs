//! The supervisor's decisions as a pure function: what to do to move what
//! the runtime reports (`observed`) toward the placement (`desired`).
//!
//! Rules:
//! * a desired component with no pod, or a pod of another pod hash, is
//!   created (which replaces the old pod); a pod of another incarnation
//!   (the cluster was deleted and created again) is removed first, so its
//!   directory is retired and the new one starts on a fresh one;
//! * a pod whose files differ from the spec's (only possible for reloadable
//!   pods, whose pod hash leaves file contents out) gets its files rewritten
//!   and its containers' reload commands run;
//! * a container of a matching pod that exited is restarted once its
//!   crash-loop backoff ([`crate::backoff`]) has passed; one that is missing
//!   or was created but never started is started;
//! * a pod of ours that the placement does not name is removed, but only if
//!   the agent has received a placement at all: an agent that never heard
//!   from a coordinator removes nothing;
//! * a component whose last create failed is retried after a backoff.

use crate::backoff;
use crate::runtime::{ContainerState, ObservedPod};
use oi_proto::model::Placement;
use std::collections::HashMap;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create (or replace) the component's pod.
    Create { id: String },
    /// Start a new attempt of one container.
    Restart { id: String, container: String },
    /// Rewrite the files and run the reload commands.
    SyncFiles { id: String },
    /// Remove a pod that is no longer desired (or of an earlier
    /// incarnation); its directory is moved aside, not deleted.
    Remove { id: String, incarnation: String },
}

/// The last failed action on a component, for retry backoff and status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub spec_hash: String,
    pub count: u32,
    pub at_ms: u64,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// When a backoff ends and the plan may change on its own (unix ms).
    pub wake_at_ms: Option<u64>,
}

impl Plan {
    fn wake(&mut self, at: u64) {
        self.wake_at_ms = Some(self.wake_at_ms.map_or(at, |w| w.min(at)));
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

pub fn plan(
    desired: &Placement,
    observed: &[ObservedPod],
    failures: &HashMap<String, Failure>,
    now_ms: u64,
) -> Plan {
    let mut out = Plan::default();
    let by_id: HashMap<&str, &ObservedPod> = observed
        .iter()
        .map(|p| (p.component_id.as_str(), p))
        .collect();

    for (id, component) in &desired.components {
        let hash = component.spec_hash();
        let failed = failures.get(id).filter(|f| f.spec_hash == hash);
        if let Some(f) = failed {
            let retry_at = f.at_ms + ms(backoff::retry_delay(f.count));
            if now_ms < retry_at {
                out.wake(retry_at);
                continue;
            }
        }
        let pod = match by_id.get(id.as_str()) {
            Some(pod) if pod.incarnation != component.incarnation => {
                out.actions.push(Action::Remove {
                    id: id.clone(),
                    incarnation: pod.incarnation.clone(),
                });
                out.actions.push(Action::Create { id: id.clone() });
                continue;
            }
            Some(pod) if pod.pod_hash == component.pod_hash() => pod,
            _ => {
                out.actions.push(Action::Create { id: id.clone() });
                continue;
            }
        };
        if pod.files_hash != component.files_hash() {
            out.actions.push(Action::SyncFiles { id: id.clone() });
        }
        for spec in &component.pod.containers {
            let restart = Action::Restart {
                id: id.clone(),
                container: spec.name.clone(),
            };
            let Some(c) = pod.containers.iter().find(|c| c.name == spec.name) else {
                out.actions.push(restart);
                continue;
            };
            match &c.state {
                ContainerState::Running | ContainerState::Unknown => {}
                ContainerState::Created => out.actions.push(restart),
                ContainerState::Exited { .. } => {
                    let ran =
                        Duration::from_millis(c.finished_at_ms.saturating_sub(c.started_at_ms));
                    let at = c.finished_at_ms + ms(backoff::restart_delay(c.attempt, ran));
                    if now_ms >= at {
                        out.actions.push(restart);
                    } else {
                        out.wake(at);
                    }
                }
            }
        }
    }

    let ever_placed = !desired.cursor.epoch.is_empty();
    if ever_placed {
        for pod in observed {
            if !desired.components.contains_key(&pod.component_id) {
                out.actions.push(Action::Remove {
                    id: pod.component_id.clone(),
                    incarnation: pod.incarnation.clone(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ObservedContainer;
    use oi_proto::model::{Component, Container, PodSpec};

    fn comp(id: &str, image: &str) -> Component {
        Component {
            incarnation: String::new(),
            id: id.into(),
            cluster: String::new(),
            pod: PodSpec {
                containers: vec![Container {
                    name: "main".into(),
                    image: image.into(),
                    ..Default::default()
                }],
                files: vec![],
            },
        }
    }

    fn desired(comps: Vec<Component>) -> Placement {
        let mut p = Placement::new("e", 1);
        for c in comps {
            p.components.insert(c.id.clone(), c);
        }
        p
    }

    fn pod(c: &Component, state: ContainerState, attempt: u32) -> ObservedPod {
        ObservedPod {
            component_id: c.id.clone(),
            incarnation: c.incarnation.clone(),
            pod_hash: c.pod_hash(),
            files_hash: c.files_hash(),
            generation: 1,
            containers: vec![ObservedContainer {
                name: "main".into(),
                state,
                attempt,
                started_at_ms: 1_000,
                finished_at_ms: 2_000,
                previous_exit: None,
            }],
        }
    }

    fn exited() -> ContainerState {
        ContainerState::Exited {
            code: 1,
            reason: "Error".into(),
        }
    }

    fn create(id: &str) -> Action {
        Action::Create { id: id.into() }
    }

    fn restart(id: &str) -> Action {
        Action::Restart {
            id: id.into(),
            container: "main".into(),
        }
    }

    type Case = (
        &'static str,
        Placement,
        Vec<ObservedPod>,
        u64,
        Vec<Action>,
        Option<u64>,
    );

    #[test]
    fn table() {
        let a = comp("a", "1");
        let a2 = comp("a", "2");
        let again = Component {
            incarnation: "second".into(),
            ..a.clone()
        };
        let none = HashMap::new();
        let cases: Vec<Case> = vec![
            (
                "absent is created",
                desired(vec![a.clone()]),
                vec![],
                5_000,
                vec![create("a")],
                None,
            ),
            (
                "running with the same hash is left alone",
                desired(vec![a.clone()]),
                vec![pod(&a, ContainerState::Running, 3)],
                5_000,
                vec![],
                None,
            ),
            (
                "another hash is replaced",
                desired(vec![a2.clone()]),
                vec![pod(&a, ContainerState::Running, 0)],
                5_000,
                vec![create("a")],
                None,
            ),
            (
                "first exit restarts at once",
                desired(vec![a.clone()]),
                vec![pod(&a, exited(), 0)],
                2_000,
                vec![restart("a")],
                None,
            ),
            (
                "later exits wait out the backoff",
                desired(vec![a.clone()]),
                vec![pod(&a, exited(), 2)],
                5_000,
                vec![],
                Some(22_000),
            ),
            (
                "after the backoff it restarts",
                desired(vec![a.clone()]),
                vec![pod(&a, exited(), 2)],
                22_000,
                vec![restart("a")],
                None,
            ),
            (
                "created but never started is started",
                desired(vec![a.clone()]),
                vec![pod(&a, ContainerState::Created, 0)],
                5_000,
                vec![restart("a")],
                None,
            ),
            (
                "undesired pods of ours are removed",
                desired(vec![]),
                vec![pod(&a, ContainerState::Running, 0)],
                5_000,
                vec![Action::Remove {
                    id: "a".into(),
                    incarnation: String::new(),
                }],
                None,
            ),
            (
                "a pod of another incarnation is removed, then created",
                desired(vec![again.clone()]),
                vec![pod(&a, ContainerState::Running, 0)],
                5_000,
                vec![
                    Action::Remove {
                        id: "a".into(),
                        incarnation: String::new(),
                    },
                    create("a"),
                ],
                None,
            ),
            (
                "an agent that never got a placement removes nothing",
                Placement::default(),
                vec![pod(&a, ContainerState::Running, 0)],
                5_000,
                vec![],
                None,
            ),
        ];
        for (what, d, o, now, want, wake) in cases {
            let got = plan(&d, &o, &none, now);
            assert_eq!(got.actions, want, "{what}");
            assert_eq!(got.wake_at_ms, wake, "{what}");
        }
    }

    #[test]
    fn reloadable_pods_sync_files_in_place() {
        let mut a = comp("a", "1");
        a.pod.containers[0].reload = vec!["/bin/sh".into(), "-c".into(), "kill -USR2 1".into()];
        a.pod.files.push(oi_proto::model::File {
            path: "cfg/haproxy.cfg".into(),
            mode: 0o644,
            content: b"backend one".to_vec(),
        });
        let running = pod(&a, ContainerState::Running, 0);
        let mut b = a.clone();
        b.pod.files[0].content = b"backend one two".to_vec();
        let got = plan(
            &desired(vec![b.clone()]),
            std::slice::from_ref(&running),
            &HashMap::new(),
            5_000,
        );
        assert_eq!(got.actions, vec![Action::SyncFiles { id: "a".into() }]);
        // Not reloadable: the same change replaces the pod.
        b.pod.containers[0].reload.clear();
        let mut old = a.clone();
        old.pod.containers[0].reload.clear();
        let got = plan(
            &desired(vec![b]),
            &[pod(&old, ContainerState::Running, 0)],
            &HashMap::new(),
            5_000,
        );
        assert_eq!(got.actions, vec![create("a")]);
    }

    #[test]
    fn failed_creates_back_off_per_spec() {
        let a = comp("a", "1");
        let failures = HashMap::from([(
            "a".to_string(),
            Failure {
                spec_hash: a.spec_hash(),
                count: 2,
                at_ms: 10_000,
                reason: "ImagePullFailed".into(),
                message: "x".into(),
            },
        )]);
        let d = desired(vec![a.clone()]);
        let p = plan(&d, &[], &failures, 11_000);
        assert!(p.actions.is_empty());
        assert_eq!(p.wake_at_ms, Some(14_000));
        assert_eq!(plan(&d, &[], &failures, 14_000).actions, vec![create("a")]);
        // A new spec is tried at once.
        let d = desired(vec![comp("a", "2")]);
        assert_eq!(plan(&d, &[], &failures, 11_000).actions, vec![create("a")]);
    }
}
