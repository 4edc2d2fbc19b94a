//! Where the pieces of one cluster go: its control-plane replicas on private
//! hypervisors (at most one per hypervisor), its ingress on a public one.
//!
//! [`schedule`] is a pure function of a [`Snapshot`] of the fleet and a
//! [`Request`]: the same input, in any order, gives the same [`Allocation`].

use super::model::{Allocation, IngressSlot, ReplicaPorts, ReplicaSlot};
use crate::store::HypervisorRecord;
use oi_proto::model::{Placement, PortRange, Resources, Role};
use rustc_hash::FxHashMap;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

/// What the scheduler knows of one hypervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HypervisorInfo {
    pub name: String,
    pub role: Role,
    pub address: String,
    pub host_ports: PortRange,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub cordoned: bool,
    /// An agent is linked.
    pub connected: bool,
}

impl HypervisorInfo {
    pub fn from_record(r: &HypervisorRecord, connected: bool) -> Self {
        Self {
            name: r.name.clone(),
            role: r.role,
            address: r.address.clone(),
            host_ports: r.host_ports,
            cpu_millis: r.cpu_millis,
            memory_bytes: r.memory_bytes,
            cordoned: r.cordoned,
            connected,
        }
    }
}

/// What the components placed on one hypervisor take.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub ports: BTreeSet<u16>,
    /// Clusters with a component there.
    pub clusters: BTreeSet<String>,
}

/// The fleet as the scheduler sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub hypervisors: Vec<HypervisorInfo>,
    /// By hypervisor name; a hypervisor without an entry is empty. A hash
    /// map with a fast hasher (names are not attacker-chosen here): the
    /// scheduler looks every hypervisor up on every placement, and never
    /// iterates it.
    pub usage: FxHashMap<String, Usage>,
}

impl Snapshot {
    /// Usage from what is placed: the summed resource requests and the host
    /// ports of every container, per hypervisor. Components of
    /// `exclude_cluster` (the cluster being scheduled) are left out, so it
    /// keeps its own ports and room.
    pub fn from_placements(
        hypervisors: Vec<HypervisorInfo>,
        placements: &[(String, &Placement)],
        exclude_cluster: &str,
    ) -> Snapshot {
        let mut usage: FxHashMap<String, Usage> = FxHashMap::default();
        for (hypervisor, placement) in placements {
            for c in placement.components.values() {
                if !exclude_cluster.is_empty() && c.cluster == exclude_cluster {
                    continue;
                }
                let u = usage.entry(hypervisor.clone()).or_default();
                for k in &c.pod.containers {
                    u.cpu_millis += k.resources.cpu_millis;
                    u.memory_bytes += k.resources.memory_bytes;
                    u.ports.extend(k.ports.iter().map(|p| p.port));
                }
                if !c.cluster.is_empty() {
                    u.clusters.insert(c.cluster.clone());
                }
            }
        }
        Snapshot { hypervisors, usage }
    }

    /// Counts a replica slot that is taken but has no pods yet (its member
    /// is being added): its ports and `resources` on its hypervisor.
    pub fn reserve(&mut self, cluster: &str, slot: &ReplicaSlot, resources: Resources) {
        let u = self.usage.entry(slot.hypervisor.clone()).or_default();
        u.cpu_millis += resources.cpu_millis;
        u.memory_bytes += resources.memory_bytes;
        u.ports.extend(slot.ports.all());
        u.clusters.insert(cluster.to_string());
    }
}

/// What one cluster needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub replicas: u32,
    /// One replica: the sum of its components' requests.
    pub replica: Resources,
    pub ingress: Resources,
    /// Where the cluster runs now, when rescheduling it.
    pub current: Option<Allocation>,
    /// Hypervisors being drained: no slot is kept on them and none is
    /// chosen there (a cordoned hypervisor keeps its slots; these do not).
    pub exclude: BTreeSet<String>,
}

/// Why a cluster cannot be placed. The message says what is missing where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "no {role} hypervisor for the {piece} (none registered): start an agent with \
         role = \"{role}\""
    )]
    NoneRegistered { role: Role, piece: &'static str },
    /// Too few hypervisors of `role` can take the cluster's pieces.
    #[error("{message}")]
    NoRoom { role: Role, message: String },
}

/// Places every piece of one cluster; see the module docs.
///
/// With `request.current`, every existing slot that is still valid (its
/// hypervisor is registered with the same role and not in
/// `request.exclude`, and its ports are in that hypervisor's range and not
/// taken by another cluster) is kept with its index and ports, even on a
/// cordoned or disconnected hypervisor; only its address is refreshed. Scaling down drops the highest indexes; new
/// replicas get indexes above every current one.
pub fn schedule(snapshot: &Snapshot, request: &Request) -> Result<Allocation, ScheduleError> {
    let fleet = Fleet::new(snapshot);
    Ok(Allocation {
        replicas: place_replicas(&fleet, request)?,
        ingress: place_ingress(&fleet, request)?,
    })
}

fn place_replicas(fleet: &Fleet, req: &Request) -> Result<Vec<ReplicaSlot>, ScheduleError> {
    let wanted = req.replicas as usize;
    let mut current: Vec<&ReplicaSlot> = req.current.iter().flat_map(|a| &a.replicas).collect();
    current.sort_by_key(|s| s.index);
    let mut slots: Vec<ReplicaSlot> = Vec::new();
    for slot in &current {
        if slots.len() == wanted {
            break;
        }
        if req.exclude.contains(&slot.hypervisor) {
            continue;
        }
        let Some(h) = fleet.find(&slot.hypervisor, Role::Private) else {
            continue;
        };
        if slots.iter().any(|s| s.hypervisor == h.name) || !fleet.ports_free(h, &slot.ports.all()) {
            continue;
        }
        slots.push(ReplicaSlot {
            address: h.address.clone(),
            ..(*slot).clone()
        });
    }
    let missing = wanted - slots.len();
    if missing == 0 {
        return Ok(slots);
    }
    let mut busy: BTreeMap<&str, String> = draining(req);
    busy.extend(slots.iter().map(|s| {
        let why = format!("{} already runs replica {}", s.hypervisor, s.index);
        (s.hypervisor.as_str(), why)
    }));
    let chosen = fleet
        .pick(
            Role::Private,
            req.replica,
            ReplicaPorts::COUNT,
            &busy,
            missing,
        )
        .map_err(|e| match e {
            Pick::NoneRegistered => ScheduleError::NoneRegistered {
                role: Role::Private,
                piece: "control plane",
            },
            Pick::TooFew { found, passed_over } => ScheduleError::NoRoom {
                role: Role::Private,
                message: format!(
                    "not enough private hypervisors with {}: need {missing}{} for {}, found \
                     {found}{}; add or uncordon private hypervisors, or ask for fewer replicas",
                    want(req.replica, ReplicaPorts::COUNT),
                    if slots.is_empty() { "" } else { " more" },
                    plural(wanted, "replica"),
                    list(&passed_over),
                ),
            },
        })?;
    // Above every current index, dropped ones included: a replacement never
    // takes the etcd member name of the replica it replaces.
    let first_new = current.iter().map(|s| s.index + 1).max().unwrap_or(0);
    for (index, h) in (first_new..).zip(chosen) {
        let ports = ReplicaPorts::from_slice(&fleet.lowest_free_ports(h, ReplicaPorts::COUNT))
            .expect("pick checked that enough ports are free");
        slots.push(ReplicaSlot {
            etcd: Default::default(),
            index,
            hypervisor: h.name.clone(),
            address: h.address.clone(),
            ports,
        });
    }
    Ok(slots)
}

/// The excluded hypervisors, as [`Fleet::pick`] passes them over.
fn draining(req: &Request) -> BTreeMap<&str, String> {
    req.exclude
        .iter()
        .map(|n| (n.as_str(), format!("{n} is being drained")))
        .collect()
}

fn place_ingress(fleet: &Fleet, req: &Request) -> Result<IngressSlot, ScheduleError> {
    if let Some(cur) = req.current.as_ref().map(|a| &a.ingress) {
        if let Some(h) = fleet
            .find(&cur.hypervisor, Role::Public)
            .filter(|h| !req.exclude.contains(&h.name))
        {
            if fleet.ports_free(h, &[cur.port]) {
                return Ok(IngressSlot {
                    address: h.address.clone(),
                    ..cur.clone()
                });
            }
        }
    }
    let chosen = fleet
        .pick(Role::Public, req.ingress, 1, &draining(req), 1)
        .map_err(|e| match e {
            Pick::NoneRegistered => ScheduleError::NoneRegistered {
                role: Role::Public,
                piece: "ingress",
            },
            Pick::TooFew { passed_over, .. } => ScheduleError::NoRoom {
                role: Role::Public,
                message: format!(
                    "no public hypervisor with {} for the ingress{}; add or uncordon a public \
                     hypervisor, or free room on one",
                    want(req.ingress, 1),
                    list(&passed_over),
                ),
            },
        })?;
    let h = chosen[0];
    Ok(IngressSlot {
        hypervisor: h.name.clone(),
        address: h.address.clone(),
        port: fleet.lowest_free_ports(h, 1)[0],
    })
}

/// Why [`Fleet::pick`] found too few hypervisors.
enum Pick {
    NoneRegistered,
    /// `passed_over`: "NAME REASON" for each hypervisor of the role that cannot take it.
    TooFew {
        found: usize,
        passed_over: Vec<String>,
    },
}

/// The snapshot as the scheduler reads it.
struct Fleet<'a> {
    hypervisors: Vec<&'a HypervisorInfo>,
    usage: &'a FxHashMap<String, Usage>,
}

impl<'a> Fleet<'a> {
    /// No sorting here: choices are ordered by load then name, whatever
    /// the input order, and reasons are sorted when they are reported.
    fn new(s: &'a Snapshot) -> Self {
        Self {
            hypervisors: s.hypervisors.iter().collect(),
            usage: &s.usage,
        }
    }

    fn find(&self, name: &str, role: Role) -> Option<&'a HypervisorInfo> {
        self.hypervisors
            .iter()
            .copied()
            .find(|h| h.name == name && h.role == role)
    }

    fn usage(&self, h: &HypervisorInfo) -> &'a Usage {
        static EMPTY: Usage = Usage {
            cpu_millis: 0,
            memory_bytes: 0,
            ports: BTreeSet::new(),
            clusters: BTreeSet::new(),
        };
        self.usage.get(&h.name).unwrap_or(&EMPTY)
    }

    /// Whether `ports` are all in `h`'s range and not taken.
    fn ports_free(&self, h: &HypervisorInfo, ports: &[u16]) -> bool {
        let used = &self.usage(h).ports;
        ports
            .iter()
            .all(|p| h.host_ports.contains(*p) && !used.contains(p))
    }

    fn lowest_free_ports(&self, h: &HypervisorInfo, n: usize) -> Vec<u16> {
        let used = &self.usage(h).ports;
        (h.host_ports.first..=h.host_ports.last)
            .filter(|p| !used.contains(p))
            .take(n)
            .collect()
    }

    /// Why `h` cannot take a new piece needing `r` and `ports` host ports.
    fn unfit(&self, h: &HypervisorInfo, r: Resources, ports: usize) -> Option<String> {
        shortfall(h, self.usage(h), r, ports).map(|s| s.describe(&h.name))
    }

    /// The `n` least loaded hypervisors of `role` that can take `r` and
    /// `ports` host ports each, skipping `busy` (name -> why).
    fn pick(
        &self,
        role: Role,
        r: Resources,
        ports: usize,
        busy: &BTreeMap<&str, String>,
        n: usize,
    ) -> Result<Vec<&'a HypervisorInfo>, Pick> {
        // The n least loaded, kept sorted while scanning once: O(N * log n),
        // each hypervisor's usage looked up once.
        let mut best: Vec<(&'a HypervisorInfo, &'a Usage)> = Vec::with_capacity(n + 1);
        let mut fit = 0;
        let mut unfit = Vec::new();
        for &h in self.hypervisors.iter().filter(|h| h.role == role) {
            let u = self.usage(h);
            if shortfall(h, u, r, ports).is_some()
                || (!busy.is_empty() && busy.contains_key(h.name.as_str()))
            {
                unfit.push(h);
                continue;
            }
            fit += 1;
            if best.len() == n
                && best
                    .last()
                    .is_none_or(|&last| by_load(last, (h, u)) == Ordering::Less)
            {
                continue;
            }
            let at = best.partition_point(|&b| by_load(b, (h, u)) == Ordering::Less);
            best.insert(at, (h, u));
            best.truncate(n);
        }
        if fit == 0 && unfit.is_empty() {
            return Err(Pick::NoneRegistered);
        }
        if fit < n {
            // Only now: why each one was passed over, in name order.
            unfit.sort_by(|a, b| a.name.cmp(&b.name));
            let passed_over = unfit
                .into_iter()
                .filter_map(|h| {
                    busy.get(h.name.as_str())
                        .cloned()
                        .or_else(|| self.unfit(h, r, ports))
                })
                .collect();
            return Err(Pick::TooFew {
                found: fit,
                passed_over,
            });
        }
        Ok(best.into_iter().map(|(h, _)| h).collect())
    }
}

/// What a hypervisor lacks for a new piece; its text is built only when
/// reported ([`Shortfall::describe`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shortfall {
    /// "is cordoned", "is disconnected", ...
    State(&'static str),
    /// The free amounts that are too small (`None`: enough).
    Free {
        memory: Option<u64>,
        cpu: Option<u64>,
        ports: Option<usize>,
    },
}

/// What `h` (using `u`) lacks to take a new piece needing `r` and `ports`
/// host ports; `None`: it fits. Allocation-free: the scheduler asks it of
/// every hypervisor on every placement.
fn shortfall(h: &HypervisorInfo, u: &Usage, r: Resources, ports: usize) -> Option<Shortfall> {
    let free_memory = h.memory_bytes.saturating_sub(u.memory_bytes);
    let free_cpu = h.cpu_millis.saturating_sub(u.cpu_millis);
    let range = h.host_ports.len() as usize;
    // The common case first, without counting ports inside the range: that
    // only matters when the count of all used ports leaves too few.
    if !h.cordoned
        && h.connected
        && free_memory >= r.memory_bytes
        && free_cpu >= r.cpu_millis
        && range.saturating_sub(u.ports.len()) >= ports
    {
        return None;
    }
    match (h.cordoned, h.connected) {
        (false, true) => {}
        (true, true) => return Some(Shortfall::State("is cordoned")),
        (false, false) => return Some(Shortfall::State("is disconnected")),
        (true, false) => return Some(Shortfall::State("is cordoned and disconnected")),
    }
    let used_ports = u.ports.iter().filter(|p| h.host_ports.contains(**p));
    let free_ports = Some(range - used_ports.count()).filter(|&free| free < ports);
    let memory = Some(free_memory).filter(|&free| free < r.memory_bytes);
    let cpu = Some(free_cpu).filter(|&free| free < r.cpu_millis);
    (memory.is_some() || cpu.is_some() || free_ports.is_some()).then_some(Shortfall::Free {
        memory,
        cpu,
        ports: free_ports,
    })
}

impl Shortfall {
    fn describe(&self, name: &str) -> String {
        match *self {
            Shortfall::State(state) => format!("{name} {state}"),
            Shortfall::Free { memory, cpu, ports } => {
                let mut short = Vec::new();
                if let Some(free) = memory {
                    short.push(format!("{} memory", mib(free)));
                }
                if let Some(free) = cpu {
                    short.push(format!("{free}m CPU"));
                }
                if let Some(free) = ports {
                    short.push(plural(free, "host port"));
                }
                format!("{name} has {} free", join_and(&short))
            }
        }
    }
}

/// Least loaded first: the largest free fraction of memory, then of CPU,
/// then the fewest clusters, then the name.
fn by_load(a: (&HypervisorInfo, &Usage), b: (&HypervisorInfo, &Usage)) -> Ordering {
    let ((a, ua), (b, ub)) = (a, b);
    cmp_free(
        b.memory_bytes,
        ub.memory_bytes,
        a.memory_bytes,
        ua.memory_bytes,
    )
    .then_with(|| cmp_free(b.cpu_millis, ub.cpu_millis, a.cpu_millis, ua.cpu_millis))
    .then_with(|| ua.clusters.len().cmp(&ub.clusters.len()))
    .then_with(|| a.name.cmp(&b.name))
}

/// Compares the free fraction of capacity `x` with that of `y`, exactly.
fn cmp_free(cap_x: u64, used_x: u64, cap_y: u64, used_y: u64) -> Ordering {
    let free = |cap: u64, used: u64| u128::from(cap.saturating_sub(used));
    let x = free(cap_x, used_x) * u128::from(cap_y.max(1));
    let y = free(cap_y, used_y) * u128::from(cap_x.max(1));
    x.cmp(&y)
}

/// "700 MiB memory, 250m CPU and 6 free host ports"
fn want(r: Resources, ports: usize) -> String {
    format!(
        "{} memory, {}m CPU and {} free {}",
        mib(r.memory_bytes),
        r.cpu_millis,
        ports,
        if ports == 1 {
            "host port"
        } else {
            "host ports"
        }
    )
}

fn mib(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    if bytes % MIB == 0 {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    }
}

fn plural(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// " (a, b, c, d, and 2 more)": at most a few `items`; "" when there are none.
fn list(items: &[String]) -> String {
    const SHOWN: usize = 4;
    if items.is_empty() {
        return String::new();
    }
    let mut shown = items.iter().take(SHOWN).cloned().collect::<Vec<_>>();
    if items.len() > SHOWN {
        shown.push(format!("and {} more", items.len() - SHOWN));
    }
    format!(" ({})", shown.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oi_proto::model::{Component, Container, HostPort, PodSpec, Protocol};

    const MIB: u64 = 1 << 20;

    fn hv(name: &str, role: Role) -> HypervisorInfo {
        HypervisorInfo {
            name: name.into(),
            role,
            address: format!("{name}.example"),
            host_ports: PortRange::new(30000, 30099).unwrap(),
            cpu_millis: 2000,
            memory_bytes: 4096 * MIB,
            cordoned: false,
            connected: true,
        }
    }

    fn private(name: &str) -> HypervisorInfo {
        hv(name, Role::Private)
    }

    fn public(name: &str) -> HypervisorInfo {
        hv(name, Role::Public)
    }

    fn fleet(hypervisors: Vec<HypervisorInfo>) -> Snapshot {
        Snapshot {
            hypervisors,
            usage: FxHashMap::default(),
        }
    }

    fn request(replicas: u32) -> Request {
        Request {
            replicas,
            replica: Resources {
                cpu_millis: 250,
                memory_bytes: 700 * MIB,
            },
            ingress: Resources {
                cpu_millis: 100,
                memory_bytes: 64 * MIB,
            },
            current: None,
            exclude: BTreeSet::new(),
        }
    }

    fn used(memory_mib: u64, cpu_millis: u64, ports: &[u16]) -> Usage {
        Usage {
            cpu_millis,
            memory_bytes: memory_mib * MIB,
            ports: ports.iter().copied().collect(),
            clusters: BTreeSet::new(),
        }
    }

    fn ports_from(first: u16) -> ReplicaPorts {
        ReplicaPorts::from_slice(&(first..first + 6).collect::<Vec<_>>()).unwrap()
    }

    /// (index, hypervisor, first port) of each replica.
    fn replicas(a: &Allocation) -> Vec<(u32, &str, u16)> {
        a.replicas
            .iter()
            .map(|s| (s.index, s.hypervisor.as_str(), s.ports.apiserver))
            .collect()
    }

    #[test]
    fn replicas_go_to_private_and_the_ingress_to_public() {
        let snap = fleet(vec![public("pa"), private("b"), public("pc"), private("d")]);
        let got = schedule(&snap, &request(2)).unwrap();
        let slot = |index, name: &str| ReplicaSlot {
            etcd: Default::default(),
            index,
            hypervisor: name.into(),
            address: format!("{name}.example"),
            ports: ports_from(30000),
        };
        let want = Allocation {
            replicas: vec![slot(0, "b"), slot(1, "d")],
            ingress: IngressSlot {
                hypervisor: "pa".into(),
                address: "pa.example".into(),
                port: 30000,
            },
        };
        assert_eq!(got, want);
        // Public hypervisors never take a replica.
        let err = schedule(&snap, &request(3)).unwrap_err();
        assert!(
            matches!(
                err,
                ScheduleError::NoRoom {
                    role: Role::Private,
                    ..
                }
            ),
            "{err}"
        );
    }

    /// A slot recorded before its pods (a member being added) takes its
    /// ports and room like a placed replica: nothing else gets them.
    #[test]
    fn a_reserved_slot_is_taken() {
        let mut snap = fleet(vec![public("p"), private("b")]);
        let reserved = ReplicaSlot {
            etcd: Default::default(),
            index: 1,
            hypervisor: "b".into(),
            address: "b.example".into(),
            ports: ports_from(30000),
        };
        snap.reserve("growing", &reserved, request(1).replica);
        let got = schedule(&snap, &request(1)).unwrap();
        assert_eq!(replicas(&got), vec![(0, "b", 30006)]);
        let u = &snap.usage["b"];
        assert_eq!((u.cpu_millis, u.memory_bytes), (250, 700 * MIB));
        assert!(u.clusters.contains("growing"));
    }

    #[test]
    fn the_least_loaded_hypervisors_are_chosen() {
        // (name, memory capacity MiB, used MiB, used CPU, clusters there)
        type Hv = (&'static str, u64, u64, u64, usize);
        let cases: Vec<(&str, Vec<Hv>, [&str; 2])> = vec![
            (
                "ties go by name",
                vec![
                    ("c", 4096, 0, 0, 0),
                    ("a", 4096, 0, 0, 0),
                    ("b", 4096, 0, 0, 0),
                ],
                ["a", "b"],
            ),
            (
                "free memory first",
                vec![
                    ("a", 4096, 2048, 0, 0),
                    ("b", 4096, 1024, 0, 0),
                    ("c", 4096, 0, 0, 0),
                ],
                ["c", "b"],
            ),
            (
                "a fraction, not bytes",
                vec![
                    ("a", 16384, 8192, 0, 0),
                    ("b", 4096, 1024, 0, 0),
                    ("c", 4096, 2048, 0, 0),
                ],
                ["b", "a"],
            ),
            (
                "then free CPU",
                vec![
                    ("a", 4096, 1024, 1000, 0),
                    ("b", 4096, 1024, 500, 0),
                    ("c", 4096, 2048, 0, 0),
                ],
                ["b", "a"],
            ),
            (
                "then fewer clusters",
                vec![
                    ("a", 4096, 0, 0, 2),
                    ("b", 4096, 0, 0, 1),
                    ("c", 4096, 0, 0, 0),
                ],
                ["c", "b"],
            ),
        ];
        for (name, hvs, want) in cases {
            let mut snap = fleet(vec![public("p")]);
            for (hv_name, cap, mem, cpu, clusters) in hvs {
                let mut h = private(hv_name);
                h.memory_bytes = cap * MIB;
                snap.hypervisors.push(h);
                let mut u = used(mem, cpu, &[]);
                u.clusters = (0..clusters).map(|i| format!("other-{i}")).collect();
                snap.usage.insert(hv_name.into(), u);
            }
            let got = schedule(&snap, &request(2)).unwrap();
            let got: Vec<&str> = got.replicas.iter().map(|s| s.hypervisor.as_str()).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn unfit_hypervisors_are_skipped() {
        // One private hypervisor "x" changed by each case; None: it fits.
        type Change = fn(&mut HypervisorInfo, &mut Usage);
        let cases: Vec<(&str, Change, Option<&str>)> = vec![
            (
                "fits exactly",
                |h, u| {
                    h.memory_bytes = 700 * MIB;
                    h.cpu_millis = 250;
                    h.host_ports = PortRange::new(30000, 30006).unwrap();
                    u.ports.insert(30003);
                },
                None,
            ),
            (
                "ports used outside the range do not count",
                |h, u| {
                    h.host_ports = PortRange::new(30000, 30005).unwrap();
                    u.ports.extend([29999, 30006]);
                },
                None,
            ),
            (
                "memory",
                |_, u| u.memory_bytes = 3397 * MIB,
                Some("x has 699 MiB memory free"),
            ),
            (
                "cpu",
                |_, u| u.cpu_millis = 1751,
                Some("x has 249m CPU free"),
            ),
            (
                "ports",
                |h, u| {
                    h.host_ports = PortRange::new(30000, 30005).unwrap();
                    u.ports.insert(30005);
                },
                Some("x has 5 host ports free"),
            ),
            (
                "all",
                |h, u| {
                    h.host_ports = PortRange::new(30000, 30000).unwrap();
                    u.ports.insert(30000);
                    u.memory_bytes = 4000 * MIB;
                    u.cpu_millis = 2500;
                },
                Some("x has 96 MiB memory, 0m CPU and 0 host ports free"),
            ),
            ("cordoned", |h, _| h.cordoned = true, Some("x is cordoned")),
            (
                "disconnected",
                |h, _| h.connected = false,
                Some("x is disconnected"),
            ),
            (
                "both",
                |h, _| {
                    h.cordoned = true;
                    h.connected = false;
                },
                Some("x is cordoned and disconnected"),
            ),
        ];
        for (name, change, reason) in cases {
            let mut h = private("x");
            let mut u = Usage::default();
            change(&mut h, &mut u);
            let mut snap = fleet(vec![h, public("p")]);
            snap.usage.insert("x".into(), u);
            match (schedule(&snap, &request(1)), reason) {
                (Ok(a), None) => assert_eq!(a.replicas[0].hypervisor, "x", "{name}"),
                (Err(e), Some(reason)) => {
                    assert!(
                        e.to_string().contains(&format!("({reason})")),
                        "{name}: {e}"
                    )
                }
                (got, _) => panic!("{name}: {got:?}"),
            }
        }
    }

    #[test]
    fn replicas_spread_one_per_hypervisor() {
        let snap = fleet(vec![private("a"), private("b"), private("c"), public("p")]);
        let got = schedule(&snap, &request(3)).unwrap();
        assert_eq!(
            replicas(&got),
            [(0, "a", 30000), (1, "b", 30000), (2, "c", 30000)]
        );
        let snap = fleet(vec![private("a"), private("b"), public("p")]);
        let err = schedule(&snap, &request(3)).unwrap_err().to_string();
        assert!(err.contains("need 3 for 3 replicas, found 2;"), "{err}");
    }

    #[test]
    fn ports_are_the_lowest_free_ones() {
        let mut snap = fleet(vec![private("a"), public("p")]);
        snap.usage
            .insert("a".into(), used(0, 0, &[30000, 30001, 30003, 30010]));
        snap.usage.insert("p".into(), used(0, 0, &[30000, 30002]));
        let got = schedule(&snap, &request(1)).unwrap();
        assert_eq!(
            got.replicas[0].ports.all(),
            [30002, 30004, 30005, 30006, 30007, 30008]
        );
        assert_eq!(got.ingress.port, 30001);
    }

    #[test]
    fn the_same_input_in_any_order_gives_the_same_result() {
        let mut hvs = vec![
            private("a"),
            private("b"),
            private("c"),
            private("d"),
            public("p"),
            public("q"),
        ];
        hvs[3].memory_bytes = 8192 * MIB;
        let mut usage = FxHashMap::default();
        usage.insert("b".to_string(), used(512, 0, &[30000]));
        usage.insert("c".to_string(), used(512, 0, &[]));
        let snap = Snapshot {
            hypervisors: hvs.clone(),
            usage: usage.clone(),
        };
        let want = schedule(&snap, &request(3)).unwrap();
        let mut orders = Vec::new();
        for i in 0..hvs.len() {
            let mut order = hvs.clone();
            order.rotate_left(i);
            orders.push(order.clone());
            order.reverse();
            orders.push(order);
        }
        for order in orders {
            let snap = Snapshot {
                hypervisors: order,
                usage: usage.clone(),
            };
            assert_eq!(schedule(&snap, &request(3)).unwrap(), want);
        }
        assert_eq!(
            replicas(&want),
            [(0, "a", 30000), (1, "d", 30000), (2, "b", 30001)]
        );
        assert_eq!(want.ingress.hypervisor, "p");
    }

    /// Runs on a-e (private) and p (public): replicas 0, 1, 2 on a, b, c at
    /// ports 30010, 30020, 30030; the ingress on p at 30050.
    fn running() -> (Vec<HypervisorInfo>, Allocation) {
        let hvs = vec![
            private("a"),
            private("b"),
            private("c"),
            private("d"),
            private("e"),
            public("p"),
            public("q"),
        ];
        let slot = |index, name: &str, first| ReplicaSlot {
            etcd: Default::default(),
            index,
            hypervisor: name.into(),
            address: format!("{name}.example"),
            ports: ports_from(first),
        };
        let current = Allocation {
            replicas: vec![
                slot(0, "a", 30010),
                slot(1, "b", 30020),
                slot(2, "c", 30030),
            ],
            ingress: IngressSlot {
                hypervisor: "p".into(),
                address: "p.example".into(),
                port: 30050,
            },
        };
        (hvs, current)
    }

    #[test]
    fn rescheduling_keeps_what_is_still_valid() {
        type Change = fn(&mut Snapshot);
        let same: Change = |_| {};
        fn remove(s: &mut Snapshot, name: &str) {
            s.hypervisors.retain(|h| h.name != name);
        }
        // (case, replicas, change, want replicas, want ingress (hypervisor, port))
        type Want = (Vec<(u32, &'static str, u16)>, (&'static str, u16));
        let kept_ingress = ("p", 30050);
        let cases: Vec<(&str, u32, Change, Want)> = vec![
            (
                "unchanged",
                3,
                same,
                (
                    vec![(0, "a", 30010), (1, "b", 30020), (2, "c", 30030)],
                    kept_ingress,
                ),
            ),
            (
                "scale up",
                5,
                same,
                (
                    vec![
                        (0, "a", 30010),
                        (1, "b", 30020),
                        (2, "c", 30030),
                        (3, "d", 30000),
                        (4, "e", 30000),
                    ],
                    kept_ingress,
                ),
            ),
            (
                "scale down drops the highest index",
                2,
                same,
                (vec![(0, "a", 30010), (1, "b", 30020)], kept_ingress),
            ),
            (
                "scale down to one",
                1,
                same,
                (vec![(0, "a", 30010)], kept_ingress),
            ),
            (
                "removed hypervisor: a new index",
                3,
                |s| remove(s, "c"),
                (
                    vec![(0, "a", 30010), (1, "b", 30020), (3, "d", 30000)],
                    kept_ingress,
                ),
            ),
            (
                "removed hypervisor while scaling down",
                2,
                |s| remove(s, "a"),
                (vec![(1, "b", 30020), (2, "c", 30030)], kept_ingress),
            ),
            // b itself is still fit: it takes the replacement, on new ports.
            (
                "ports outside a shrunk range",
                3,
                |s| s.hypervisors[1].host_ports = PortRange::new(30000, 30024).unwrap(),
                (
                    vec![(0, "a", 30010), (2, "c", 30030), (3, "b", 30000)],
                    kept_ingress,
                ),
            ),
            (
                "a port taken by another cluster",
                3,
                |s| {
                    s.usage.insert("b".into(), used(0, 0, &[30025]));
                },
                (
                    vec![(0, "a", 30010), (2, "c", 30030), (3, "b", 30000)],
                    kept_ingress,
                ),
            ),
            (
                "role changed",
                3,
                |s| s.hypervisors[1].role = Role::Public,
                (
                    vec![(0, "a", 30010), (2, "c", 30030), (3, "d", 30000)],
                    kept_ingress,
                ),
            ),
            (
                "cordoned, disconnected and full stay",
                3,
                |s| {
                    s.hypervisors[0].cordoned = true;
                    s.hypervisors[1].connected = false;
                    s.hypervisors[2].memory_bytes = 0;
                    s.hypervisors[5].cordoned = true;
                },
                (
                    vec![(0, "a", 30010), (1, "b", 30020), (2, "c", 30030)],
                    kept_ingress,
                ),
            ),
            (
                "ingress hypervisor removed",
                3,
                |s| remove(s, "p"),
                (
                    vec![(0, "a", 30010), (1, "b", 30020), (2, "c", 30030)],
                    ("q", 30000),
                ),
            ),
            (
                "ingress port taken",
                3,
                |s| {
                    s.usage.insert("p".into(), used(0, 0, &[30000, 30050]));
                },
                (
                    vec![(0, "a", 30010), (1, "b", 30020), (2, "c", 30030)],
                    ("p", 30001),
                ),
            ),
        ];
        for (name, n, change, (want_replicas, want_ingress)) in cases {
            let (hvs, current) = running();
            let mut snap = fleet(hvs);
            change(&mut snap);
            let req = Request {
                current: Some(current),
                ..request(n)
            };
            let got = schedule(&snap, &req).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(replicas(&got), want_replicas, "{name}");
            let ingress = (got.ingress.hypervisor.as_str(), got.ingress.port);
            assert_eq!(ingress, want_ingress, "{name}");
            // Kept slots are kept whole: every port, not just the first.
            for slot in &got.replicas {
                let old = req
                    .current
                    .as_ref()
                    .unwrap()
                    .replicas
                    .iter()
                    .find(|s| s.index == slot.index);
                if let Some(old) = old {
                    assert_eq!(slot, old, "{name}");
                }
            }
        }
    }

    #[test]
    fn excluded_hypervisors_lose_their_slots_and_get_none() {
        let (hvs, current) = running();
        // Cordoned like a drained hypervisor is: that alone keeps the slots.
        let mut snap = fleet(hvs);
        for h in snap.hypervisors.iter_mut() {
            if h.name == "a" || h.name == "p" {
                h.cordoned = true;
            }
        }
        let mut req = Request {
            current: Some(current.clone()),
            ..request(3)
        };
        assert_eq!(schedule(&snap, &req).unwrap(), current);
        req.exclude = BTreeSet::from(["a".to_string(), "p".to_string()]);
        let got = schedule(&snap, &req).unwrap();
        assert_eq!(
            replicas(&got),
            vec![(1, "b", 30020), (2, "c", 30030), (3, "d", 30000)]
        );
        assert_eq!(got.ingress.hypervisor, "q");
        // Even uncordoned, an excluded hypervisor is never chosen.
        let mut snap = fleet(running().0);
        snap.hypervisors.retain(|h| h.name != "q");
        let err = schedule(&snap, &req).unwrap_err().to_string();
        assert!(err.contains("p is being drained"), "{err}");
    }

    #[test]
    fn a_kept_slot_takes_the_new_address() {
        let (mut hvs, current) = running();
        hvs[0].address = "10.0.0.9".into();
        hvs[5].address = "192.0.2.1".into();
        let req = Request {
            current: Some(current),
            ..request(3)
        };
        let got = schedule(&fleet(hvs), &req).unwrap();
        assert_eq!(got.replicas[0].address, "10.0.0.9");
        assert_eq!(got.replicas[0].ports, ports_from(30010));
        assert_eq!(got.ingress.address, "192.0.2.1");
        assert_eq!(got.ingress.port, 30050);
    }

    #[test]
    fn no_room_errors_say_what_is_missing_where() {
        let kept = |index, name: &str| ReplicaSlot {
            etcd: Default::default(),
            index,
            hypervisor: name.into(),
            address: format!("{name}.example"),
            ports: ports_from(30000),
        };
        let ingress = IngressSlot {
            hypervisor: "p".into(),
            address: "p.example".into(),
            port: 30000,
        };
        let mut short = private("b");
        short.memory_bytes = 120 * MIB;
        let mut cordoned = private("c");
        cordoned.cordoned = true;
        let mut offline = private("b");
        offline.connected = false;
        let many: Vec<HypervisorInfo> = ["f", "e", "d", "c", "b", "a"]
            .iter()
            .map(|n| HypervisorInfo {
                cordoned: true,
                ..private(n)
            })
            .collect();
        let mut full = public("p");
        full.host_ports = PortRange::new(30000, 30000).unwrap();
        let mut full_usage = FxHashMap::default();
        full_usage.insert("p".to_string(), used(0, 0, &[30000]));

        let cases: Vec<(Snapshot, Request, &str)> = vec![
            (
                fleet(vec![]),
                request(1),
                "no private hypervisor for the control plane (none registered): start an agent \
                 with role = \"private\"",
            ),
            (
                fleet(vec![private("a"), private("b")]),
                request(1),
                "no public hypervisor for the ingress (none registered): start an agent with \
                 role = \"public\"",
            ),
            (
                fleet(vec![private("a"), short, cordoned, public("p")]),
                request(3),
                "not enough private hypervisors with 700 MiB memory, 250m CPU and 6 free host \
                 ports: need 3 for 3 replicas, found 1 (b has 120 MiB memory free, c is \
                 cordoned); add or uncordon private hypervisors, or ask for fewer replicas",
            ),
            (
                fleet(vec![private("a"), offline, public("p")]),
                Request {
                    current: Some(Allocation {
                        replicas: vec![kept(0, "a")],
                        ingress,
                    }),
                    ..request(2)
                },
                "not enough private hypervisors with 700 MiB memory, 250m CPU and 6 free host \
                 ports: need 1 more for 2 replicas, found 0 (a already runs replica 0, b is \
                 disconnected); add or uncordon private hypervisors, or ask for fewer replicas",
            ),
            (
                fleet(many),
                request(1),
                "not enough private hypervisors with 700 MiB memory, 250m CPU and 6 free host \
                 ports: need 1 for 1 replica, found 0 (a is cordoned, b is cordoned, c is \
                 cordoned, d is cordoned, and 2 more); add or uncordon private hypervisors, or \
                 ask for fewer replicas",
            ),
            (
                Snapshot {
                    hypervisors: vec![private("a"), full],
                    usage: full_usage,
                },
                request(1),
                "no public hypervisor with 64 MiB memory, 100m CPU and 1 free host port for the \
                 ingress (p has 0 host ports free); add or uncordon a public hypervisor, or free \
                 room on one",
            ),
        ];
        for (snap, req, want) in cases {
            assert_eq!(schedule(&snap, &req).unwrap_err().to_string(), want);
        }
    }

    fn component(id: &str, cluster: &str, containers: Vec<(u64, u64, &[u16])>) -> Component {
        let containers = containers
            .into_iter()
            .map(|(cpu_millis, memory_mib, ports)| Container {
                name: "c".into(),
                image: "i".into(),
                ports: ports
                    .iter()
                    .map(|&port| HostPort {
                        name: format!("p{port}"),
                        port,
                        protocol: Protocol::Tcp,
                    })
                    .collect(),
                resources: Resources {
                    cpu_millis,
                    memory_bytes: memory_mib * MIB,
                },
                ..Default::default()
            })
            .collect();
        Component {
            incarnation: String::new(),
            id: id.into(),
            cluster: cluster.into(),
            pod: PodSpec {
                containers,
                files: vec![],
            },
        }
    }

    fn placement(components: Vec<Component>) -> Placement {
        let mut p = Placement::new("epoch", 1);
        for c in components {
            p.components.insert(c.id.clone(), c);
        }
        p
    }

    #[test]
    fn usage_leaves_out_the_cluster_being_scheduled() {
        let on_a = placement(vec![
            component(
                "x-etcd",
                "x",
                vec![(100, 200, &[30000, 30001]), (10, 20, &[30002])],
            ),
            component(
                "y-etcd",
                "y",
                vec![(100, 200, &[30006]), (50, 60, &[30007])],
            ),
            component("node-exporter", "", vec![(5, 10, &[9100])]),
        ]);
        let on_b = placement(vec![component("x-api", "x", vec![(300, 400, &[30000])])]);
        let placements = [("a".to_string(), &on_a), ("b".to_string(), &on_b)];

        let snap = Snapshot::from_placements(vec![], &placements, "x");
        let mut want_a = used(270, 155, &[9100, 30006, 30007]);
        want_a.clusters.insert("y".into());
        assert_eq!(
            snap.usage,
            FxHashMap::from_iter([("a".to_string(), want_a)])
        );

        // Another cluster sees everything.
        let snap = Snapshot::from_placements(vec![], &placements, "z");
        assert_eq!(snap.usage["a"].memory_bytes, 490 * MIB);
        assert_eq!(snap.usage["a"].ports.len(), 6);
        assert_eq!(snap.usage["b"], {
            let mut u = used(400, 300, &[30000]);
            u.clusters.insert("x".into());
            u
        });
    }

    #[test]
    fn a_cluster_keeps_its_own_ports_when_rescheduled() {
        let mut hvs = vec![private("a"), public("p")];
        hvs[0].host_ports = PortRange::new(30000, 30007).unwrap();
        let ports: Vec<u16> = (30000..30006).collect();
        let on_a = placement(vec![
            component("x-etcd", "x", vec![(250, 700, &ports)]),
            component("y-etcd", "y", vec![(0, 0, &[30006])]),
        ]);
        let on_p = placement(vec![component("x-ingress", "x", vec![(100, 64, &[30000])])]);
        let placements = [("a".to_string(), &on_a), ("p".to_string(), &on_p)];
        let current = Allocation {
            replicas: vec![ReplicaSlot {
                etcd: Default::default(),
                index: 0,
                hypervisor: "a".into(),
                address: "a.example".into(),
                ports: ports_from(30000),
            }],
            ingress: IngressSlot {
                hypervisor: "p".into(),
                address: "p.example".into(),
                port: 30000,
            },
        };
        let req = Request {
            current: Some(current.clone()),
            ..request(1)
        };
        let snap = Snapshot::from_placements(hvs.clone(), &placements, "x");
        assert_eq!(schedule(&snap, &req).unwrap(), current);
        // Counted as someone else's, the same ports would force a move.
        let snap = Snapshot::from_placements(hvs, &placements, "");
        assert!(schedule(&snap, &req).is_err());
    }

    #[test]
    fn info_comes_from_the_store_record() {
        let record = HypervisorRecord {
            name: "a".into(),
            role: Role::Public,
            address: "192.0.2.1".into(),
            host_ports: PortRange::new(31000, 31010).unwrap(),
            cpu_millis: 1500,
            memory_bytes: 3 << 30,
            labels: BTreeMap::from([("zone".to_string(), "z1".to_string())]),
            cordoned: true,
            last_seen_unix_ms: Some(1),
            generation: 4,
            removing_unix_ms: None,
        };
        let want = HypervisorInfo {
            name: "a".into(),
            role: Role::Public,
            address: "192.0.2.1".into(),
            host_ports: PortRange::new(31000, 31010).unwrap(),
            cpu_millis: 1500,
            memory_bytes: 3 << 30,
            cordoned: true,
            connected: false,
        };
        assert_eq!(HypervisorInfo::from_record(&record, false), want);
    }
}
