//! Whether a deleted cluster is gone from every hypervisor: decided from
//! what the agents report, not from what the store says (the store forgets
//! a cluster at once; its pods go when each agent has removed them).

use crate::state::index::{HypervisorView, LinkState};
use oi_proto::model::REASON_REMOVING;
use std::collections::BTreeSet;

pub use oi_api_types::views::Leftover;

/// The leftovers of deleted cluster `cluster`. `held` names the
/// hypervisors that held its components when it was deleted (empty when
/// unknown, after a coordinator restart): a disconnected one of those
/// cannot have confirmed the removal. Components placed now (the cluster
/// was created again) are not leftovers.
pub fn leftovers(
    cluster: &str,
    held: &BTreeSet<String>,
    views: &[HypervisorView],
) -> Vec<Leftover> {
    let prefix = format!("{cluster}/");
    let mut out = Vec::new();
    for v in views {
        let name = &v.record.name;
        let connected = matches!(v.link, LinkState::Connected { .. });
        let Some(report) = v.observed.as_ref().filter(|_| connected) else {
            if held.contains(name) {
                out.push(Leftover {
                    hypervisor: name.clone(),
                    components: Vec::new(),
                    reason: if connected {
                        "connected; waiting for its agent's first status report".into()
                    } else {
                        "disconnected: its agent removes them when it links again \
                         (it never stops anything while disconnected)"
                            .into()
                    },
                });
            }
            continue;
        };
        let mut left: Vec<&oi_proto::model::ComponentStatus> = report
            .components
            .iter()
            .filter(|s| s.id.starts_with(&prefix) && !v.placement.components.contains_key(&s.id))
            .collect();
        if left.is_empty() {
            continue;
        }
        left.sort_by(|a, b| a.id.cmp(&b.id));
        let failed: Vec<&str> = left
            .iter()
            .filter(|s| s.reason == REASON_REMOVING)
            .map(|s| s.id.as_str())
            .collect();
        out.push(Leftover {
            hypervisor: name.clone(),
            components: left.iter().map(|s| s.id.clone()).collect(),
            reason: if failed.is_empty() {
                "its agent has not removed them yet".into()
            } else {
                format!(
                    "removing {} failed on the agent and is retried; see its log",
                    failed.join(", ")
                )
            },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::HypervisorRecord;
    use oi_proto::model::{Component, ComponentStatus, Cursor, Placement, StatusReport};
    use std::sync::Arc;

    fn view(
        name: &str,
        connected: bool,
        placed: &[&str],
        reported: &[(&str, &str)],
    ) -> HypervisorView {
        let mut placement = Placement::new("e", 1);
        for id in placed {
            placement.components.insert(
                id.to_string(),
                Component {
                    id: id.to_string(),
                    ..Default::default()
                },
            );
        }
        HypervisorView {
            record: HypervisorRecord {
                name: name.into(),
                role: oi_proto::model::Role::Private,
                address: "10.0.0.1".into(),
                host_ports: oi_proto::model::PortRange::new(30000, 30999).unwrap(),
                cpu_millis: 1000,
                memory_bytes: 1 << 30,
                labels: Default::default(),
                cordoned: false,
                last_seen_unix_ms: None,
                generation: 1,
                removing_unix_ms: None,
            },
            placement: Arc::new(placement),
            link: if connected {
                LinkState::Connected {
                    conn_id: 1,
                    peer: "127.0.0.1:1".parse().unwrap(),
                    since_unix_ms: 0,
                }
            } else {
                LinkState::Disconnected
            },
            observed: connected.then(|| StatusReport {
                applied: Cursor::default(),
                components: reported
                    .iter()
                    .map(|(id, reason)| ComponentStatus {
                        id: id.to_string(),
                        reason: reason.to_string(),
                        ..Default::default()
                    })
                    .collect(),
            }),
        }
    }

    fn held(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Hypervisor, components, the reason's start.
    type Want = (&'static str, Vec<&'static str>, &'static str);

    #[test]
    fn table() {
        // (views, held at delete, expected: hypervisor, components, reason starts with)
        let cases: Vec<(Vec<HypervisorView>, BTreeSet<String>, Vec<Want>)> = vec![
            // Removed everywhere: done.
            (
                vec![view("a", true, &[], &[("y/etcd-0", "")])],
                held(&["a"]),
                vec![],
            ),
            // Still reported (the agent has not applied the removal yet).
            (
                vec![view(
                    "a",
                    true,
                    &[],
                    &[("x/etcd-0", ""), ("x/apiserver-0", "")],
                )],
                held(&["a"]),
                vec![("a", vec!["x/apiserver-0", "x/etcd-0"], "its agent has not")],
            ),
            // The agent failed to remove one.
            (
                vec![view("a", true, &[], &[("x/etcd-0", REASON_REMOVING)])],
                held(&["a"]),
                vec![("a", vec!["x/etcd-0"], "removing x/etcd-0 failed")],
            ),
            // A disconnected hypervisor that held some cannot have confirmed.
            (
                vec![view("a", false, &[], &[]), view("b", false, &[], &[])],
                held(&["a"]),
                vec![("a", vec![], "disconnected")],
            ),
            // Created again: what is placed now is not a leftover; a
            // cluster whose name only starts the same is another cluster.
            (
                vec![view(
                    "a",
                    true,
                    &["x/etcd-0"],
                    &[("x/etcd-0", ""), ("xx/etcd-0", "")],
                )],
                held(&["a"]),
                vec![],
            ),
        ];
        for (i, (views, held, want)) in cases.into_iter().enumerate() {
            let got = leftovers("x", &held, &views);
            assert_eq!(got.len(), want.len(), "case {i}: {got:?}");
            for (g, (hv, ids, reason)) in got.iter().zip(want) {
                assert_eq!(g.hypervisor, hv, "case {i}");
                assert_eq!(g.components, ids, "case {i}");
                assert!(g.reason.starts_with(reason), "case {i}: {}", g.reason);
            }
        }
    }
}
