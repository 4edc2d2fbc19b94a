//! Domain types shared by the coordinator and the agent. These, not the
//! generated protobuf types, are what the rest of the code works with.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs control-plane components.
    Private,
    /// Runs control-plane ingress.
    Public,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Private => "private",
            Role::Public => "public",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "private" => Ok(Role::Private),
            "public" => Ok(Role::Public),
            other => Err(format!(
                "unknown role {other:?}: use \"private\" or \"public\""
            )),
        }
    }
}

/// An inclusive range of host ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn new(first: u16, last: u16) -> Result<Self, String> {
        if first == 0 || first > last {
            return Err(format!(
                "invalid port range {first}-{last}: need 1 <= first <= last <= 65535"
            ));
        }
        Ok(Self { first, last })
    }

    pub fn len(&self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl std::str::FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s.split_once('-').ok_or_else(|| {
            format!("invalid port range {s:?}: write it as FIRST-LAST, e.g. 30000-32767")
        })?;
        let parse = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| format!("invalid port {p:?} in range {s:?}"))
        };
        PortRange::new(parse(a)?, parse(b)?)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub host_ports: PortRange,
    pub address: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeInfo {
    pub name: String,
    pub version: String,
    pub api_version: String,
}

/// Identifies one placement: the store it came from (`epoch`) and its
/// per-hypervisor generation. Generations are compared only within one epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub epoch: String,
    pub generation: u64,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = self.epoch.get(..8).unwrap_or(&self.epoch);
        write!(f, "{short}/{}", self.generation)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    pub id: String,
    #[serde(default)]
    pub cluster: String,
    /// The owning cluster's incarnation (see `link.proto`): a cluster
    /// created again under the same name has another, so its components
    /// hash differently and get new directories. Empty: placed before
    /// incarnations existed (hashes as before).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub incarnation: String,
    pub pod: PodSpec,
}

impl Component {
    /// The pod spec's hash, bound to the incarnation.
    pub fn spec_hash(&self) -> String {
        self.bind(self.pod.spec_hash())
    }

    /// What the running pod must match ([`PodSpec::pod_hash`]), bound to
    /// the incarnation: a pod of another incarnation is always replaced.
    pub fn pod_hash(&self) -> String {
        self.bind(self.pod.pod_hash())
    }

    fn bind(&self, hash: String) -> String {
        if self.incarnation.is_empty() {
            hash
        } else {
            digest(format!("{hash}\0{}", self.incarnation).as_bytes())
        }
    }

    pub fn files_hash(&self) -> String {
        self.pod.files_hash()
    }
}

fn digest(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..10])
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSpec {
    pub containers: Vec<Container>,
    #[serde(default)]
    pub files: Vec<File>,
}

impl PodSpec {
    /// A stable digest of the spec: the same spec always hashes the same,
    /// because every list keeps its given order and nothing is a map.
    pub fn spec_hash(&self) -> String {
        use prost::Message;
        digest(&crate::pb::PodSpec::from(self.clone()).encode_to_vec())
    }

    /// Whether a change of file contents alone is applied by rewriting the
    /// files and running each container's `reload` command.
    pub fn reloadable(&self) -> bool {
        !self.containers.is_empty() && self.containers.iter().all(|c| !c.reload.is_empty())
    }

    /// What the running pod must match, or be replaced: the whole spec, but
    /// for a reloadable pod without the file contents.
    pub fn pod_hash(&self) -> String {
        if !self.reloadable() {
            return self.spec_hash();
        }
        let mut shape = self.clone();
        for f in &mut shape.files {
            f.content.clear();
        }
        shape.spec_hash()
    }

    /// The files as written: paths, modes and contents.
    pub fn files_hash(&self) -> String {
        use prost::Message;
        let files = crate::pb::PodSpec {
            containers: vec![],
            files: crate::pb::PodSpec::from(self.clone()).files,
        };
        digest(&files.encode_to_vec())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub name: String,
    pub image: String,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub ports: Vec<HostPort>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub probe: Option<Probe>,
    /// Numeric user the container runs as; `None`: the image's user.
    #[serde(default)]
    pub run_as_user: Option<i64>,
    /// Command run in the container after the pod's files changed (e.g.
    /// signal a reload). Empty: a file change replaces the pod.
    #[serde(default)]
    pub reload: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Relative to the component's directory on the host.
    pub source: String,
    pub container_path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// A file the agent writes under the component's directory. Its content
/// may be key material, so `Debug` never prints it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct File {
    pub path: String,
    pub mode: u32,
    #[serde(with = "b64")]
    pub content: Vec<u8>,
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("File")
            .field("path", &self.path)
            .field("mode", &format_args!("{:#o}", self.mode))
            .field("content", &format_args!("<{} bytes>", self.content.len()))
            .finish()
    }
}

mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

impl std::ops::Add for Resources {
    type Output = Resources;
    fn add(self, o: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis + o.cpu_millis,
            memory_bytes: self.memory_bytes + o.memory_bytes,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Http,
    Https,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub scheme: Scheme,
    pub port: u16,
    pub path: String,
    pub period_ms: u32,
    pub timeout_ms: u32,
    pub failure_threshold: u32,
    pub initial_delay_ms: u32,
}

/// The whole desired state of one hypervisor, keyed by component id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub cursor: Cursor,
    pub components: BTreeMap<String, Component>,
    /// Agent-side only, never on the wire: components the agent ran under
    /// an earlier epoch (another coordinator store: an empty or restored
    /// one) that the current epoch does not name with the same incarnation.
    /// The agent keeps them running and reports them as not adopted until
    /// an operator releases them (`oi hypervisor release`): a coordinator
    /// started on the wrong store must not wipe the fleet.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub held: BTreeMap<String, Component>,
}

/// Why a component runs without being in the current placement.
pub const REASON_NOT_ADOPTED: &str = "NotAdopted";
/// A component no longer placed whose pod is still there (its removal
/// failed and is retried): the coordinator waits for it before it calls
/// a deletion done.
pub const REASON_REMOVING: &str = "Removing";

/// A change from the placement at `base_generation` to `generation`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlacementDelta {
    pub epoch: String,
    pub base_generation: u64,
    pub generation: u64,
    pub upserted: Vec<Component>,
    pub removed: Vec<String>,
}

impl PlacementDelta {
    pub fn is_empty(&self) -> bool {
        self.upserted.is_empty() && self.removed.is_empty()
    }
}

/// What an agent does with an incoming placement message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Newer than what the agent holds: take it.
    Apply,
    /// Not newer: ignore it.
    Stale,
    /// An update whose base is not what the agent holds: ask for a snapshot.
    Gap,
}

impl Placement {
    pub fn new(epoch: impl Into<String>, generation: u64) -> Self {
        Self {
            cursor: Cursor {
                epoch: epoch.into(),
                generation,
            },
            components: BTreeMap::new(),
            held: BTreeMap::new(),
        }
    }

    /// What the agent holds after taking `next`, a placement judged newer
    /// (a snapshot, or this one with a delta applied). Moving to another
    /// epoch while components run holds them all; a held component is
    /// adopted (no longer held) once the placement names its id with the
    /// same incarnation, or released when `release` names it. A held
    /// component keeps precedence over a placed one of the same id and
    /// another incarnation: its data is not to be replaced silently.
    pub fn succeed(&self, mut next: Placement, release: &[String]) -> Placement {
        let mut held = self.held.clone();
        if !self.cursor.epoch.is_empty() && next.cursor.epoch != self.cursor.epoch {
            for (id, c) in &self.components {
                held.insert(id.clone(), c.clone());
            }
        }
        held.retain(|id, c| {
            !release.contains(id)
                && next
                    .components
                    .get(id)
                    .is_none_or(|n| n.incarnation != c.incarnation)
        });
        next.held = held;
        next
    }

    /// The components to run: the placed ones, with held ones in place of
    /// any placed one of the same id.
    pub fn effective(&self) -> BTreeMap<String, Component> {
        let mut out = self.components.clone();
        for (id, c) in &self.held {
            out.insert(id.clone(), c.clone());
        }
        out
    }

    /// The delta that turns `self` into `newer`.
    pub fn diff(&self, newer: &Placement) -> PlacementDelta {
        let upserted = newer
            .components
            .values()
            .filter(|c| self.components.get(&c.id) != Some(c))
            .cloned()
            .collect();
        let removed = self
            .components
            .keys()
            .filter(|id| !newer.components.contains_key(*id))
            .cloned()
            .collect();
        PlacementDelta {
            epoch: newer.cursor.epoch.clone(),
            base_generation: self.cursor.generation,
            generation: newer.cursor.generation,
            upserted,
            removed,
        }
    }

    /// Whether a snapshot with `cursor` should replace this placement.
    /// A snapshot from another epoch (another store) always wins.
    pub fn judge_snapshot(&self, cursor: &Cursor) -> Verdict {
        if cursor.epoch != self.cursor.epoch || cursor.generation > self.cursor.generation {
            Verdict::Apply
        } else {
            Verdict::Stale
        }
    }

    /// Whether `delta` applies on top of this placement.
    pub fn judge_delta(&self, delta: &PlacementDelta) -> Verdict {
        if delta.epoch != self.cursor.epoch {
            return Verdict::Gap;
        }
        if delta.generation <= self.cursor.generation {
            return Verdict::Stale;
        }
        if delta.base_generation != self.cursor.generation {
            return Verdict::Gap;
        }
        Verdict::Apply
    }

    /// Applies a delta judged [`Verdict::Apply`].
    pub fn apply(&mut self, delta: PlacementDelta) {
        for id in &delta.removed {
            self.components.remove(id);
        }
        for c in delta.upserted {
            self.components.insert(c.id.clone(), c);
        }
        self.cursor.generation = delta.generation;
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Nothing is known: e.g. the agent is disconnected.
    #[default]
    Unknown,
    Pending,
    Running,
    Failed,
    Terminating,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Unknown => "unknown",
            Phase::Pending => "pending",
            Phase::Running => "running",
            Phase::Failed => "failed",
            Phase::Terminating => "terminating",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub ok: bool,
    pub detail: String,
    pub at_unix_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub name: String,
    pub phase: Phase,
    pub restart_count: u32,
    pub last_exit_code: i32,
    pub last_exit_reason: String,
    pub probe: Option<ProbeResult>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentStatus {
    pub id: String,
    pub spec_hash: String,
    pub phase: Phase,
    pub ready: bool,
    pub containers: Vec<ContainerStatus>,
    pub reason: String,
    pub message: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusReport {
    pub applied: Cursor,
    pub components: Vec<ComponentStatus>,
}

/// The agent's opening message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub protocol_version: u32,
    pub hypervisor_name: String,
    pub role: Role,
    pub agent_version: String,
    pub runtime: RuntimeInfo,
    pub capacity: Capacity,
    /// What runs there; `None` until the agent has listed its runtime.
    pub observed: Option<Vec<ComponentStatus>>,
    pub applied: Cursor,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comp(id: &str, image: &str) -> Component {
        Component {
            incarnation: String::new(),
            id: id.into(),
            cluster: "c".into(),
            pod: PodSpec {
                containers: vec![Container {
                    name: "main".into(),
                    image: image.into(),
                    args: vec!["--b=2".into(), "--a=1".into()],
                    ..Default::default()
                }],
                files: vec![File {
                    path: "pki/key.pem".into(),
                    mode: 0o600,
                    content: b"secret".to_vec(),
                }],
            },
        }
    }

    fn placement(gen: u64, comps: &[Component]) -> Placement {
        let mut p = Placement::new("e1", gen);
        for c in comps {
            p.components.insert(c.id.clone(), c.clone());
        }
        p
    }

    #[test]
    fn spec_hash_is_stable_and_order_sensitive() {
        let a = comp("x", "img:1");
        assert_eq!(a.spec_hash(), a.clone().spec_hash());
        let mut b = a.clone();
        b.pod.containers[0].args.reverse();
        assert_ne!(a.spec_hash(), b.spec_hash());
        let mut c = a.clone();
        c.pod.files[0].content = b"other".to_vec();
        assert_ne!(a.spec_hash(), c.spec_hash());
    }

    #[test]
    fn reloadable_pods_keep_their_pod_hash_when_only_contents_change() {
        let a = comp("x", "img:1");
        let mut b = a.clone();
        b.pod.files[0].content = b"other".to_vec();
        // Not reloadable: any change replaces the pod.
        assert_ne!(a.pod_hash(), b.pod_hash());
        let reload = |mut c: Component| {
            c.pod.containers[0].reload = vec!["/bin/sh".into(), "-c".into(), "kill -HUP 1".into()];
            c
        };
        let (a, b) = (reload(a), reload(b));
        assert_eq!(a.pod_hash(), b.pod_hash());
        assert_ne!(a.files_hash(), b.files_hash());
        assert_ne!(a.spec_hash(), b.spec_hash());
        // A new path or mode is a new shape.
        let mut c = a.clone();
        c.pod.files[0].mode = 0o644;
        assert_ne!(a.pod_hash(), c.pod_hash());
        let mut d = a.clone();
        d.pod.containers[0].image = "img:2".into();
        assert_ne!(a.pod_hash(), d.pod_hash());
    }

    #[test]
    fn diff_then_apply_reaches_the_newer_placement() {
        let old = placement(3, &[comp("a", "1"), comp("b", "1")]);
        let new = placement(4, &[comp("b", "2"), comp("c", "1")]);
        let delta = old.diff(&new);
        assert_eq!(delta.removed, vec!["a".to_string()]);
        assert_eq!(delta.upserted.len(), 2);
        let mut got = old.clone();
        assert_eq!(got.judge_delta(&delta), Verdict::Apply);
        got.apply(delta);
        assert_eq!(got, new);
    }

    #[test]
    fn a_new_epoch_holds_what_runs_until_adopted_or_released() {
        let a = comp("a", "1");
        let b = comp("b", "1");
        let old = placement(5, &[a.clone(), b.clone()]);
        // An empty store: everything is held, nothing is placed.
        let empty = Placement::new("e2", 1);
        let got = old.succeed(empty.clone(), &[]);
        assert!(got.components.is_empty());
        assert_eq!(got.held.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(got.effective().len(), 2);
        // Held survives later placements of the same epoch.
        let mut later = Placement::new("e2", 2);
        later.components.insert("c".into(), comp("c", "1"));
        let got = got.succeed(later.clone(), &[]);
        assert_eq!(got.held.len(), 2);
        assert_eq!(got.effective().len(), 3);
        // Named again with the same incarnation: adopted (a restored store).
        let mut restored = Placement::new("e3", 9);
        restored.components.insert("a".into(), comp("a", "2"));
        let got2 = got.succeed(restored, &[]);
        // a is adopted; b, c held (c from e2)
        assert_eq!(got2.held.keys().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(got2.effective()["a"].pod.containers[0].image, "2");
        // Another incarnation under the same id does not replace a held one.
        let mut other = Placement::new("e2", 3);
        other.components.insert(
            "a".into(),
            Component {
                incarnation: "new".into(),
                ..comp("a", "3")
            },
        );
        let got3 = got.succeed(other, &[]);
        assert!(got3.held.contains_key("a"));
        assert_eq!(got3.effective()["a"].pod.containers[0].image, "1");
        // Released by the operator: no longer held.
        let got4 = got3.succeed(got3.clone(), &["a".into(), "b".into()]);
        assert!(got4.held.is_empty());
        // The same epoch never holds anything.
        let same = old.succeed(placement(6, std::slice::from_ref(&a)), &[]);
        assert!(same.held.is_empty());
        // An agent that never had a placement holds nothing.
        assert!(Placement::default().succeed(empty, &[]).held.is_empty());
    }

    #[test]
    fn verdicts() {
        let held = placement(5, &[]);
        let cur = |e: &str, g| Cursor {
            epoch: e.into(),
            generation: g,
        };
        let table = [
            (cur("e1", 4), Verdict::Stale),
            (cur("e1", 5), Verdict::Stale),
            (cur("e1", 6), Verdict::Apply),
            (cur("e2", 1), Verdict::Apply),
        ];
        for (c, want) in table {
            assert_eq!(held.judge_snapshot(&c), want, "{c:?}");
        }
        let delta = |e: &str, base, gen| PlacementDelta {
            epoch: e.into(),
            base_generation: base,
            generation: gen,
            ..Default::default()
        };
        let table = [
            (delta("e1", 5, 6), Verdict::Apply),
            (delta("e1", 4, 5), Verdict::Stale),
            (delta("e1", 3, 4), Verdict::Stale),
            (delta("e1", 6, 7), Verdict::Gap),
            (delta("e2", 5, 6), Verdict::Gap),
        ];
        for (d, want) in table {
            assert_eq!(held.judge_delta(&d), want, "{d:?}");
        }
    }

    #[test]
    fn file_debug_hides_content() {
        let c = comp("a", "1");
        let shown = format!("{c:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("<6 bytes>"));
    }

    #[test]
    fn port_range_parse() {
        assert_eq!("30000-30010".parse::<PortRange>().unwrap().len(), 11);
        assert!("10-1".parse::<PortRange>().is_err());
        assert!("0-10".parse::<PortRange>().is_err());
        assert!("abc".parse::<PortRange>().is_err());
    }

    #[test]
    fn placement_json_round_trips() {
        let p = placement(9, &[comp("a", "1")]);
        let s = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Placement>(&s).unwrap(), p);
    }
}
