//! The next step that moves a cluster's control-plane replicas toward the
//! declared count, as a pure function of the replica slots and the etcd
//! member list. One step at a time, so quorum is kept throughout:
//!
//! * grow by one replica: it is added as an etcd learner, placed, and
//!   promoted once in sync, before the next one is added;
//! * shrink by one: the member is removed from etcd first, then its pods;
//! * move a replica (its hypervisor is drained): it is marked leaving, a
//!   replacement grows elsewhere, then the leaving one shrinks away — the
//!   cluster never has fewer members than declared;
//! * a member no slot owns (added before a coordinator crash, or left by a
//!   replica that moved) is removed first.

use crate::cluster::model::ReplicaSlot;
use crate::cluster::render::etcd::peer_url;

/// One etcd member as the cluster reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// Empty until the member has started.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub is_learner: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Replicas and members agree with the declared count.
    Done,
    /// Remove a member that no replica owns.
    RemoveStray { member_id: u64 },
    /// A replica's member is a learner: promote it once it is in sync.
    Promote { index: u32, member_id: u64 },
    /// A replica whose member is not in the list yet: wait for it (added,
    /// not committed) or add it (placed, never added).
    AddMember { index: u32 },
    /// Add one replica.
    Grow,
    /// Remove the replica with this index (member first, then its pods).
    Shrink { index: u32, member_id: Option<u64> },
}

fn slot_peer(s: &ReplicaSlot) -> String {
    peer_url(&s.address, s.ports.etcd_peer)
}

pub fn next_step(desired: u32, slots: &[ReplicaSlot], members: &[Member]) -> Step {
    let owner = |m: &Member| slots.iter().find(|s| m.peer_urls.contains(&slot_peer(s)));
    if let Some(stray) = members.iter().find(|m| owner(m).is_none()) {
        // Never remove the last member: that would be the cluster's data.
        if members.len() > 1 {
            return Step::RemoveStray {
                member_id: stray.id,
            };
        }
    }
    for s in slots {
        let peer = slot_peer(s);
        match members.iter().find(|m| m.peer_urls.contains(&peer)) {
            Some(m) if m.is_learner => {
                return Step::Promote {
                    index: s.index,
                    member_id: m.id,
                }
            }
            Some(_) => {}
            // A joining replica whose add did not happen.
            None if s.etcd.existing => return Step::AddMember { index: s.index },
            // A bootstrapping member lists itself once it runs.
            None => {}
        }
    }
    let active = slots.iter().filter(|s| !s.etcd.leaving).count() as u32;
    if active < desired {
        return Step::Grow;
    }
    let member_of = |s: &ReplicaSlot| {
        let peer = slot_peer(s);
        members
            .iter()
            .find(|m| m.peer_urls.contains(&peer))
            .map(|m| m.id)
    };
    if let Some(s) = slots.iter().find(|s| s.etcd.leaving) {
        return Step::Shrink {
            index: s.index,
            member_id: member_of(s),
        };
    }
    let n = slots.len() as u32;
    if n > desired {
        if let Some(s) = slots.iter().max_by_key(|s| s.index) {
            let peer = slot_peer(s);
            return Step::Shrink {
                index: s.index,
                member_id: members
                    .iter()
                    .find(|m| m.peer_urls.contains(&peer))
                    .map(|m| m.id),
            };
        }
    }
    Step::Done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::model::{EtcdJoin, ReplicaPorts};

    fn slot(index: u32, existing: bool) -> ReplicaSlot {
        ReplicaSlot {
            index,
            hypervisor: format!("hv-{index}"),
            address: format!("10.0.0.{index}"),
            ports: ReplicaPorts::from_slice(&[1, 2, 3, 4, 5, 6]).unwrap(),
            etcd: EtcdJoin {
                initial_cluster: "x".into(),
                existing,
                pending: false,
                leaving: false,
            },
        }
    }

    fn member(id: u64, index: u32, learner: bool) -> Member {
        Member {
            id,
            name: format!("c-{index}"),
            peer_urls: vec![format!("https://10.0.0.{index}:3")],
            is_learner: learner,
        }
    }

    type Case = (&'static str, u32, Vec<ReplicaSlot>, Vec<Member>, Step);

    #[test]
    fn table() {
        let s = |v: &[(u32, bool)]| v.iter().map(|&(i, e)| slot(i, e)).collect::<Vec<_>>();
        let mut cases: Vec<Case> = vec![
            (
                "steady",
                1,
                s(&[(0, false)]),
                vec![member(7, 0, false)],
                Step::Done,
            ),
            (
                "a fresh cluster before etcd answers",
                3,
                s(&[(0, false), (1, false), (2, false)]),
                vec![],
                Step::Done,
            ),
            (
                "grow",
                3,
                s(&[(0, false)]),
                vec![member(7, 0, false)],
                Step::Grow,
            ),
            (
                "promote the learner before growing further",
                3,
                s(&[(0, false), (1, true)]),
                vec![member(7, 0, false), member(8, 1, true)],
                Step::Promote {
                    index: 1,
                    member_id: 8,
                },
            ),
            (
                "a joining replica never added is added",
                3,
                s(&[(0, false), (1, true)]),
                vec![member(7, 0, false)],
                Step::AddMember { index: 1 },
            ),
            (
                "shrink the highest index, member first",
                1,
                s(&[(0, false), (1, true), (2, true)]),
                vec![
                    member(7, 0, false),
                    member(8, 1, false),
                    member(9, 2, false),
                ],
                Step::Shrink {
                    index: 2,
                    member_id: Some(9),
                },
            ),
            (
                "a stray member goes first",
                1,
                s(&[(0, false)]),
                vec![member(7, 0, false), member(9, 5, true)],
                Step::RemoveStray { member_id: 9 },
            ),
            (
                "the last member is never removed",
                1,
                s(&[(3, true)]),
                vec![member(7, 0, false)],
                Step::AddMember { index: 3 },
            ),
        ];
        let leaving = |i| {
            let mut s = slot(i, false);
            s.etcd.leaving = true;
            s
        };
        cases.push((
            "a leaving replica is replaced first",
            1,
            vec![leaving(0)],
            vec![member(7, 0, false)],
            Step::Grow,
        ));
        cases.push((
            "then it leaves, member first",
            1,
            vec![leaving(0), slot(1, true)],
            vec![member(7, 0, false), member(8, 1, false)],
            Step::Shrink {
                index: 0,
                member_id: Some(7),
            },
        ));
        cases.push((
            "its replacement is promoted before it leaves",
            1,
            vec![leaving(0), slot(1, true)],
            vec![member(7, 0, false), member(8, 1, true)],
            Step::Promote {
                index: 1,
                member_id: 8,
            },
        ));
        for (what, desired, slots, members, want) in cases {
            assert_eq!(next_step(desired, &slots, &members), want, "{what}");
        }
    }
}
