//! The next step that moves a cluster's control-plane replicas toward the
//! declared count, as a pure function of the replica slots and the etcd
//! member list. One step at a time, so quorum is kept throughout:
//!
//! * grow by one replica: its slot is recorded with the intent `adding`
//!   (no pods yet), then its member is added as a learner, then the slot
//!   is recorded as added and its pods placed; it is promoted once in sync
//!   before the next one is added;
//! * shrink by one: the slot is recorded with the intent `removing`, then
//!   its member is removed from etcd, then the slot and its pods go;
//! * move a replica (its hypervisor is drained): it is marked leaving, a
//!   replacement grows elsewhere, then the leaving one shrinks away — the
//!   cluster never has fewer members than declared;
//! * a member whose slot's address changed is updated (MemberUpdate), not
//!   removed;
//! * a member no slot owns (left by a replica that moved, or by an older
//!   coordinator) is removed first.
//!
//! Intent is recorded before etcd is asked, and the result after: a step
//! found half-done (the coordinator died between its etcd call and the
//! commit) is finished, never repeated blindly. A slot being removed is
//! never added back.

use crate::cluster::model::ReplicaSlot;
use crate::cluster::pki::etcd_member_name;
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
    /// A member runs under the slot's name with another peer URL (the
    /// hypervisor's address changed): update it in place.
    UpdatePeer {
        index: u32,
        member_id: u64,
        peer_url: String,
    },
    /// A replica's member is a learner: promote it once it is in sync.
    Promote { index: u32, member_id: u64 },
    /// A placed joining replica whose member is missing (an older
    /// coordinator placed it before adding it): add it.
    AddMember { index: u32 },
    /// The slot is recorded as `adding` and its member is not in the list:
    /// add it as a learner, then record it (pods placed).
    AddLearner { index: u32 },
    /// The slot is recorded as `adding` and its member is there (the add
    /// happened, its record did not): record it (pods placed).
    PlaceReplica { index: u32 },
    /// The slot is recorded as `removing` and its member is there: remove
    /// it, then drop the slot.
    RemoveMember { index: u32, member_id: u64 },
    /// The slot is recorded as `removing` and its member is gone: drop the
    /// slot and its pods.
    DropReplica { index: u32 },
    /// Add one replica: record a new slot as `adding`.
    Grow,
    /// Remove the replica with this index: record it as `removing`.
    Shrink { index: u32 },
}

fn slot_peer(s: &ReplicaSlot) -> String {
    peer_url(&s.address, s.ports.etcd_peer)
}

/// The member of a slot: by peer URL, or (once started) by its name.
fn member_of<'a>(cluster: &str, s: &ReplicaSlot, members: &'a [Member]) -> Option<&'a Member> {
    let peer = slot_peer(s);
    let name = etcd_member_name(cluster, s.index);
    members
        .iter()
        .find(|m| m.peer_urls.contains(&peer))
        .or_else(|| members.iter().find(|m| m.name == name))
}

pub fn next_step(cluster: &str, desired: u32, slots: &[ReplicaSlot], members: &[Member]) -> Step {
    // Recorded intent first: finish what was started.
    for s in slots {
        let m = member_of(cluster, s, members);
        if s.etcd.removing {
            return match m {
                Some(m) if members.len() > 1 => Step::RemoveMember {
                    index: s.index,
                    member_id: m.id,
                },
                // Never remove the last member: that would be the data.
                Some(_) => Step::Done,
                None => Step::DropReplica { index: s.index },
            };
        }
        if s.etcd.adding {
            return match m {
                Some(_) => Step::PlaceReplica { index: s.index },
                None => Step::AddLearner { index: s.index },
            };
        }
    }
    for s in slots {
        if let Some(m) = member_of(cluster, s, members) {
            let peer = slot_peer(s);
            if !m.peer_urls.contains(&peer) {
                return Step::UpdatePeer {
                    index: s.index,
                    member_id: m.id,
                    peer_url: peer,
                };
            }
        }
    }
    let owned = |m: &Member| {
        slots
            .iter()
            .any(|s| member_of(cluster, s, members).is_some_and(|o| o.id == m.id))
    };
    if let Some(stray) = members.iter().find(|m| !owned(m)) {
        // Never remove the last member: that would be the cluster's data.
        if members.len() > 1 {
            return Step::RemoveStray {
                member_id: stray.id,
            };
        }
    }
    for s in slots {
        match member_of(cluster, s, members) {
            Some(m) if m.is_learner => {
                return Step::Promote {
                    index: s.index,
                    member_id: m.id,
                }
            }
            Some(_) => {}
            // A joining replica placed before its member was added.
            None if s.etcd.existing => return Step::AddMember { index: s.index },
            // A bootstrapping member lists itself once it runs.
            None => {}
        }
    }
    let active = slots.iter().filter(|s| !s.etcd.leaving).count() as u32;
    if active < desired {
        return Step::Grow;
    }
    if let Some(s) = slots.iter().find(|s| s.etcd.leaving) {
        return Step::Shrink { index: s.index };
    }
    if slots.len() as u32 > desired {
        if let Some(s) = slots.iter().max_by_key(|s| s.index) {
            return Step::Shrink { index: s.index };
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
                ..Default::default()
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
                Step::Shrink { index: 2 },
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
            Step::Shrink { index: 0 },
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
        let with = |i, existing, f: fn(&mut EtcdJoin)| {
            let mut s = slot(i, existing);
            f(&mut s.etcd);
            s
        };
        // Half-done steps: intent recorded, etcd called or not, result not
        // recorded. Each is finished, never repeated or undone blindly.
        cases.push((
            "grow recorded, learner not added yet: add it",
            3,
            vec![slot(0, false), with(1, true, |e| e.adding = true)],
            vec![member(7, 0, false)],
            Step::AddLearner { index: 1 },
        ));
        cases.push((
            "grow recorded, learner added, not recorded: place it (not a stray)",
            3,
            vec![slot(0, false), with(1, true, |e| e.adding = true)],
            vec![member(7, 0, false), member(8, 1, true)],
            Step::PlaceReplica { index: 1 },
        ));
        cases.push((
            "shrink recorded, member still there: remove it",
            1,
            vec![slot(0, false), with(1, true, |e| e.removing = true)],
            vec![member(7, 0, false), member(8, 1, false)],
            Step::RemoveMember {
                index: 1,
                member_id: 8,
            },
        ));
        cases.push((
            "shrink recorded, member removed, not recorded: drop the slot, never re-add",
            1,
            vec![slot(0, false), with(1, true, |e| e.removing = true)],
            vec![member(7, 0, false)],
            Step::DropReplica { index: 1 },
        ));
        cases.push((
            "a removing last member is never removed",
            1,
            vec![with(0, false, |e| e.removing = true)],
            vec![member(7, 0, false)],
            Step::Done,
        ));
        let mut moved = slot(1, true);
        moved.address = "10.0.9.1".into();
        cases.push((
            "an address change updates the member, it is not a stray",
            3,
            vec![slot(0, false), moved],
            vec![member(7, 0, false), member(8, 1, false)],
            Step::UpdatePeer {
                index: 1,
                member_id: 8,
                peer_url: "https://10.0.9.1:3".into(),
            },
        ));
        for (what, desired, slots, members, want) in cases {
            assert_eq!(next_step("c", desired, &slots, &members), want, "{what}");
        }
    }
}
