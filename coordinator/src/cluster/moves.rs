//! Moving a cluster's pieces off hypervisors, as pure decisions: where a
//! placed cluster's replicas go when the scheduler proposes other slots
//! ([`plan_move`]), and what still keeps a hypervisor from being removed
//! ([`removal_blockers`]). The shells (`crate::lifecycle`) schedule, commit
//! and wait around them.

use crate::cluster::model::Allocation;
use oi_proto::model::Placement;

/// Every replica is on a hypervisor that is gone: nothing can migrate.
#[derive(Debug, PartialEq, Eq)]
pub struct AllReplicasGone;

/// The allocation that follows `current` when the scheduler proposes
/// `proposed` for the same number of replicas. A replica the scheduler
/// keeps stays as it is; one it would not keep leaves by migration when
/// its hypervisor is still `registered` (a replacement joins elsewhere
/// first), and is dropped at once when it is gone (its member is then a
/// stray the membership steps remove). The ingress goes where proposed.
/// `None`: nothing changes.
pub fn plan_move(
    current: &Allocation,
    proposed: &Allocation,
    registered: impl Fn(&str) -> bool,
) -> Result<Option<Allocation>, AllReplicasGone> {
    let mut next = Allocation {
        replicas: Vec::new(),
        ingress: proposed.ingress.clone(),
    };
    for r in &current.replicas {
        match proposed.replicas.iter().find(|p| p.index == r.index) {
            Some(kept) => next.replicas.push(kept.clone()),
            None if registered(&r.hypervisor) => {
                let mut leaving = r.clone();
                leaving.etcd.leaving = true;
                next.replicas.push(leaving);
            }
            None => {}
        }
    }
    if next.replicas.is_empty() {
        return Err(AllReplicasGone);
    }
    Ok((next != *current).then_some(next))
}

/// What keeps a hypervisor from being removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Blockers {
    /// Components no cluster owns: only an operator removes those.
    pub stray: Vec<String>,
    /// Components of clusters, still moving off.
    pub moving: Vec<String>,
}

/// The blockers in a hypervisor's placement (`None`: it has none).
pub fn removal_blockers(placement: Option<&Placement>) -> Blockers {
    let mut b = Blockers::default();
    for c in placement.iter().flat_map(|p| p.components.values()) {
        if c.cluster.is_empty() {
            b.stray.push(c.id.clone());
        } else {
            b.moving.push(c.id.clone());
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::model::{IngressSlot, ReplicaPorts, ReplicaSlot};

    fn slot(index: u32, hv: &str) -> ReplicaSlot {
        ReplicaSlot {
            index,
            hypervisor: hv.into(),
            address: format!("{hv}.example"),
            ports: ReplicaPorts::from_slice(&[1, 2, 3, 4, 5, 6]).unwrap(),
            etcd: Default::default(),
        }
    }

    fn alloc(replicas: &[(u32, &str)], ingress: &str) -> Allocation {
        Allocation {
            replicas: replicas.iter().map(|(i, hv)| slot(*i, hv)).collect(),
            ingress: IngressSlot {
                hypervisor: ingress.into(),
                address: format!("{ingress}.example"),
                port: 30000,
            },
        }
    }

    /// (index, hypervisor, leaving) of each replica of the result.
    fn shape(a: &Allocation) -> Vec<(u32, String, bool)> {
        a.replicas
            .iter()
            .map(|s| (s.index, s.hypervisor.clone(), s.etcd.leaving))
            .collect()
    }

    #[test]
    fn replicas_leave_by_migration_or_are_dropped_when_their_hypervisor_is_gone() {
        let current = alloc(&[(0, "a"), (1, "b"), (2, "c")], "p");
        let registered = |hv: &str| hv != "c";
        // (case, proposed, want: None (no change) or (replicas, ingress))
        type Want = Option<(Vec<(u32, &'static str, bool)>, &'static str)>;
        let cases: [(&str, Allocation, Want); 4] = [
            ("nothing moves", current.clone(), None),
            (
                "the ingress alone moves",
                alloc(&[(0, "a"), (1, "b"), (2, "c")], "q"),
                Some((vec![(0, "a", false), (1, "b", false), (2, "c", false)], "q")),
            ),
            (
                "b drained: replica 1 leaves by migration",
                alloc(&[(0, "a"), (2, "c")], "p"),
                Some((vec![(0, "a", false), (1, "b", true), (2, "c", false)], "p")),
            ),
            (
                "c gone: replica 2 dropped",
                alloc(&[(0, "a"), (1, "b")], "p"),
                Some((vec![(0, "a", false), (1, "b", false)], "p")),
            ),
        ];
        for (case, proposed, want) in cases {
            let got = plan_move(&current, &proposed, registered).unwrap();
            let got = got.map(|a| {
                let ingress = a.ingress.hypervisor.clone();
                (shape(&a), ingress)
            });
            let want = want.map(|(r, i)| {
                (
                    r.into_iter()
                        .map(|(i, hv, l)| (i, hv.to_string(), l))
                        .collect::<Vec<_>>(),
                    i.to_string(),
                )
            });
            assert_eq!(got, want, "{case}");
        }
        // Every replica on a gone hypervisor: refused, nothing planned.
        let lost = alloc(&[(0, "c")], "p");
        assert_eq!(
            plan_move(&lost, &alloc(&[], "p"), registered),
            Err(AllReplicasGone)
        );
    }

    #[test]
    fn only_an_empty_hypervisor_can_go() {
        let mut p = Placement::new("e", 1);
        assert_eq!(removal_blockers(None), Blockers::default());
        assert_eq!(removal_blockers(Some(&p)), Blockers::default());
        for (id, cluster) in [("x/etcd-0", "x"), ("manual", "")] {
            let mut c = oi_proto::model::Component {
                incarnation: String::new(),
                id: id.into(),
                cluster: cluster.into(),
                pod: Default::default(),
            };
            c.pod.containers.clear();
            p.components.insert(c.id.clone(), c);
        }
        assert_eq!(
            removal_blockers(Some(&p)),
            Blockers {
                stray: vec!["manual".into()],
                moving: vec!["x/etcd-0".into()],
            }
        );
    }
}
