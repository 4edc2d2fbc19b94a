//! Conversions between generated protobuf types and [`crate::model`].
//! Decoding validates: a message that converts is well-formed.

use crate::model as m;
use crate::pb;

#[derive(Debug, thiserror::Error)]
#[error("invalid {field}: {why}")]
pub struct ConvertError {
    pub field: &'static str,
    pub why: String,
}

fn bad(field: &'static str, why: impl Into<String>) -> ConvertError {
    ConvertError {
        field,
        why: why.into(),
    }
}

fn port(field: &'static str, p: u32) -> Result<u16, ConvertError> {
    u16::try_from(p)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| bad(field, format!("{p} is not a port number")))
}

impl From<m::Role> for pb::Role {
    fn from(r: m::Role) -> Self {
        match r {
            m::Role::Private => pb::Role::Private,
            m::Role::Public => pb::Role::Public,
        }
    }
}

impl TryFrom<i32> for m::Role {
    type Error = ConvertError;
    fn try_from(v: i32) -> Result<Self, ConvertError> {
        match pb::Role::try_from(v) {
            Ok(pb::Role::Private) => Ok(m::Role::Private),
            Ok(pb::Role::Public) => Ok(m::Role::Public),
            _ => Err(bad("role", "must be private or public")),
        }
    }
}

impl From<m::Cursor> for pb::PlacementCursor {
    fn from(c: m::Cursor) -> Self {
        pb::PlacementCursor {
            epoch: c.epoch,
            generation: c.generation,
        }
    }
}

impl From<pb::PlacementCursor> for m::Cursor {
    fn from(c: pb::PlacementCursor) -> Self {
        m::Cursor {
            epoch: c.epoch,
            generation: c.generation,
        }
    }
}

impl From<m::PortRange> for pb::PortRange {
    fn from(r: m::PortRange) -> Self {
        pb::PortRange {
            first: r.first.into(),
            last: r.last.into(),
        }
    }
}

impl TryFrom<pb::PortRange> for m::PortRange {
    type Error = ConvertError;
    fn try_from(r: pb::PortRange) -> Result<Self, ConvertError> {
        m::PortRange::new(port("port range", r.first)?, port("port range", r.last)?)
            .map_err(|e| bad("port range", e))
    }
}

impl From<m::Capacity> for pb::Capacity {
    fn from(c: m::Capacity) -> Self {
        pb::Capacity {
            cpu_millis: c.cpu_millis,
            memory_bytes: c.memory_bytes,
            host_ports: Some(c.host_ports.into()),
            address: c.address,
        }
    }
}

impl TryFrom<pb::Capacity> for m::Capacity {
    type Error = ConvertError;
    fn try_from(c: pb::Capacity) -> Result<Self, ConvertError> {
        if c.address.parse::<std::net::IpAddr>().is_err() {
            return Err(bad(
                "capacity.address",
                format!("{:?} is not an IP address", c.address),
            ));
        }
        Ok(m::Capacity {
            cpu_millis: c.cpu_millis,
            memory_bytes: c.memory_bytes,
            host_ports: c
                .host_ports
                .ok_or_else(|| bad("capacity.host_ports", "missing"))?
                .try_into()?,
            address: c.address,
        })
    }
}

impl From<m::RuntimeInfo> for pb::RuntimeInfo {
    fn from(r: m::RuntimeInfo) -> Self {
        pb::RuntimeInfo {
            name: r.name,
            version: r.version,
            api_version: r.api_version,
        }
    }
}

impl From<pb::RuntimeInfo> for m::RuntimeInfo {
    fn from(r: pb::RuntimeInfo) -> Self {
        m::RuntimeInfo {
            name: r.name,
            version: r.version,
            api_version: r.api_version,
        }
    }
}

impl From<m::Probe> for pb::Probe {
    fn from(p: m::Probe) -> Self {
        pb::Probe {
            scheme: match p.scheme {
                m::Scheme::Http => pb::Scheme::Http,
                m::Scheme::Https => pb::Scheme::Https,
            } as i32,
            port: p.port.into(),
            path: p.path,
            period_ms: p.period_ms,
            timeout_ms: p.timeout_ms,
            failure_threshold: p.failure_threshold,
            initial_delay_ms: p.initial_delay_ms,
        }
    }
}

impl TryFrom<pb::Probe> for m::Probe {
    type Error = ConvertError;
    fn try_from(p: pb::Probe) -> Result<Self, ConvertError> {
        Ok(m::Probe {
            scheme: match pb::Scheme::try_from(p.scheme) {
                Ok(pb::Scheme::Http) => m::Scheme::Http,
                Ok(pb::Scheme::Https) => m::Scheme::Https,
                Err(_) => return Err(bad("probe.scheme", "unknown scheme")),
            },
            port: port("probe.port", p.port)?,
            path: p.path,
            period_ms: p.period_ms,
            timeout_ms: p.timeout_ms,
            failure_threshold: p.failure_threshold,
            initial_delay_ms: p.initial_delay_ms,
        })
    }
}

impl From<m::Container> for pb::Container {
    fn from(c: m::Container) -> Self {
        pb::Container {
            name: c.name,
            image: c.image,
            command: c.command,
            args: c.args,
            env: c
                .env
                .into_iter()
                .map(|e| pb::EnvVar {
                    name: e.name,
                    value: e.value,
                })
                .collect(),
            mounts: c
                .mounts
                .into_iter()
                .map(|m| pb::Mount {
                    source: m.source,
                    container_path: m.container_path,
                    read_only: m.read_only,
                })
                .collect(),
            ports: c
                .ports
                .into_iter()
                .map(|p| pb::HostPort {
                    name: p.name,
                    port: p.port.into(),
                    protocol: match p.protocol {
                        m::Protocol::Tcp => pb::Protocol::Tcp,
                        m::Protocol::Udp => pb::Protocol::Udp,
                    } as i32,
                })
                .collect(),
            resources: Some(pb::Resources {
                cpu_millis: c.resources.cpu_millis,
                memory_bytes: c.resources.memory_bytes,
            }),
            probe: c.probe.map(Into::into),
            run_as_user: c.run_as_user,
            reload: c.reload,
        }
    }
}

/// A relative path that stays inside the component directory.
fn relative_path(field: &'static str, p: &str) -> Result<(), ConvertError> {
    let path = std::path::Path::new(p);
    let ok = !p.is_empty()
        && path.is_relative()
        && path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(bad(
            field,
            format!("{p:?} must be a relative path without '..'"),
        ))
    }
}

impl TryFrom<pb::Container> for m::Container {
    type Error = ConvertError;
    fn try_from(c: pb::Container) -> Result<Self, ConvertError> {
        if c.name.is_empty() {
            return Err(bad("container.name", "empty"));
        }
        if c.image.is_empty() {
            return Err(bad("container.image", "empty"));
        }
        let mounts = c
            .mounts
            .into_iter()
            .map(|m| {
                relative_path("mount.source", &m.source)?;
                if !m.container_path.starts_with('/') {
                    return Err(bad("mount.container_path", "must be absolute"));
                }
                Ok(m::Mount {
                    source: m.source,
                    container_path: m.container_path,
                    read_only: m.read_only,
                })
            })
            .collect::<Result<_, _>>()?;
        let ports = c
            .ports
            .into_iter()
            .map(|p| {
                Ok(m::HostPort {
                    name: p.name,
                    port: port("container.ports", p.port)?,
                    protocol: match pb::Protocol::try_from(p.protocol) {
                        Ok(pb::Protocol::Tcp) => m::Protocol::Tcp,
                        Ok(pb::Protocol::Udp) => m::Protocol::Udp,
                        Err(_) => return Err(bad("port.protocol", "unknown")),
                    },
                })
            })
            .collect::<Result<_, ConvertError>>()?;
        let r = c.resources.unwrap_or_default();
        Ok(m::Container {
            name: c.name,
            image: c.image,
            command: c.command,
            args: c.args,
            env: c
                .env
                .into_iter()
                .map(|e| m::EnvVar {
                    name: e.name,
                    value: e.value,
                })
                .collect(),
            mounts,
            ports,
            resources: m::Resources {
                cpu_millis: r.cpu_millis,
                memory_bytes: r.memory_bytes,
            },
            probe: c.probe.map(TryInto::try_into).transpose()?,
            run_as_user: c.run_as_user,
            reload: c.reload,
        })
    }
}

impl From<m::PodSpec> for pb::PodSpec {
    fn from(p: m::PodSpec) -> Self {
        pb::PodSpec {
            containers: p.containers.into_iter().map(Into::into).collect(),
            files: p
                .files
                .into_iter()
                .map(|f| pb::File {
                    path: f.path,
                    mode: f.mode,
                    content: f.content,
                })
                .collect(),
        }
    }
}

impl TryFrom<pb::PodSpec> for m::PodSpec {
    type Error = ConvertError;
    fn try_from(p: pb::PodSpec) -> Result<Self, ConvertError> {
        if p.containers.is_empty() {
            return Err(bad("pod.containers", "a pod needs at least one container"));
        }
        let files = p
            .files
            .into_iter()
            .map(|f| {
                relative_path("file.path", &f.path)?;
                if f.mode > 0o777 {
                    return Err(bad(
                        "file.mode",
                        format!("{:#o} is not a file mode", f.mode),
                    ));
                }
                Ok(m::File {
                    path: f.path,
                    mode: f.mode,
                    content: f.content,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(m::PodSpec {
            containers: p
                .containers
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            files,
        })
    }
}

impl From<m::Component> for pb::Component {
    fn from(c: m::Component) -> Self {
        pb::Component {
            id: c.id,
            cluster: c.cluster,
            pod: Some(c.pod.into()),
            incarnation: c.incarnation,
        }
    }
}

impl TryFrom<pb::Component> for m::Component {
    type Error = ConvertError;
    fn try_from(c: pb::Component) -> Result<Self, ConvertError> {
        if c.id.is_empty() {
            return Err(bad("component.id", "empty"));
        }
        Ok(m::Component {
            id: c.id,
            cluster: c.cluster,
            incarnation: c.incarnation,
            pod: c
                .pod
                .ok_or_else(|| bad("component.pod", "missing"))?
                .try_into()?,
        })
    }
}

impl From<m::Placement> for pb::Placement {
    fn from(p: m::Placement) -> Self {
        pb::Placement {
            cursor: Some(p.cursor.into()),
            components: p.components.into_values().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::Placement> for m::Placement {
    type Error = ConvertError;
    fn try_from(p: pb::Placement) -> Result<Self, ConvertError> {
        let mut out = m::Placement {
            cursor: p
                .cursor
                .ok_or_else(|| bad("placement.cursor", "missing"))?
                .into(),
            components: Default::default(),
            held: Default::default(),
        };
        for c in p.components {
            let c: m::Component = c.try_into()?;
            if out.components.insert(c.id.clone(), c).is_some() {
                return Err(bad("placement.components", "duplicate component id"));
            }
        }
        Ok(out)
    }
}

impl From<m::PlacementDelta> for pb::PlacementUpdate {
    fn from(d: m::PlacementDelta) -> Self {
        pb::PlacementUpdate {
            epoch: d.epoch,
            base_generation: d.base_generation,
            generation: d.generation,
            upserted: d.upserted.into_iter().map(Into::into).collect(),
            removed: d.removed,
        }
    }
}

impl TryFrom<pb::PlacementUpdate> for m::PlacementDelta {
    type Error = ConvertError;
    fn try_from(d: pb::PlacementUpdate) -> Result<Self, ConvertError> {
        Ok(m::PlacementDelta {
            epoch: d.epoch,
            base_generation: d.base_generation,
            generation: d.generation,
            upserted: d
                .upserted
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            removed: d.removed,
        })
    }
}

fn phase_to_pb(p: m::Phase) -> i32 {
    (match p {
        m::Phase::Unknown => pb::Phase::Unknown,
        m::Phase::Pending => pb::Phase::Pending,
        m::Phase::Running => pb::Phase::Running,
        m::Phase::Failed => pb::Phase::Failed,
        m::Phase::Terminating => pb::Phase::Terminating,
    }) as i32
}

fn phase_from_pb(p: i32) -> m::Phase {
    match pb::Phase::try_from(p) {
        Ok(pb::Phase::Pending) => m::Phase::Pending,
        Ok(pb::Phase::Running) => m::Phase::Running,
        Ok(pb::Phase::Failed) => m::Phase::Failed,
        Ok(pb::Phase::Terminating) => m::Phase::Terminating,
        _ => m::Phase::Unknown,
    }
}

impl From<m::ComponentStatus> for pb::ComponentStatus {
    fn from(s: m::ComponentStatus) -> Self {
        pb::ComponentStatus {
            id: s.id,
            spec_hash: s.spec_hash,
            phase: phase_to_pb(s.phase),
            ready: s.ready,
            containers: s
                .containers
                .into_iter()
                .map(|c| pb::ContainerStatus {
                    name: c.name,
                    phase: phase_to_pb(c.phase),
                    restart_count: c.restart_count,
                    last_exit_code: c.last_exit_code,
                    last_exit_reason: c.last_exit_reason,
                    probe: c.probe.map(|p| pb::ProbeResult {
                        ok: p.ok,
                        detail: p.detail,
                        at_unix_ms: p.at_unix_ms,
                    }),
                })
                .collect(),
            reason: s.reason,
            message: s.message,
        }
    }
}

impl From<pb::ComponentStatus> for m::ComponentStatus {
    fn from(s: pb::ComponentStatus) -> Self {
        m::ComponentStatus {
            id: s.id,
            spec_hash: s.spec_hash,
            phase: phase_from_pb(s.phase),
            ready: s.ready,
            containers: s
                .containers
                .into_iter()
                .map(|c| m::ContainerStatus {
                    name: c.name,
                    phase: phase_from_pb(c.phase),
                    restart_count: c.restart_count,
                    last_exit_code: c.last_exit_code,
                    last_exit_reason: c.last_exit_reason,
                    probe: c.probe.map(|p| m::ProbeResult {
                        ok: p.ok,
                        detail: p.detail,
                        at_unix_ms: p.at_unix_ms,
                    }),
                })
                .collect(),
            reason: s.reason,
            message: s.message,
        }
    }
}

impl From<m::StatusReport> for pb::StatusReport {
    fn from(s: m::StatusReport) -> Self {
        pb::StatusReport {
            applied: Some(s.applied.into()),
            components: s.components.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<pb::StatusReport> for m::StatusReport {
    fn from(s: pb::StatusReport) -> Self {
        m::StatusReport {
            applied: s.applied.unwrap_or_default().into(),
            components: s.components.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<m::Hello> for pb::Hello {
    fn from(h: m::Hello) -> Self {
        pb::Hello {
            protocol_version: h.protocol_version,
            hypervisor_name: h.hypervisor_name,
            role: pb::Role::from(h.role) as i32,
            agent_version: h.agent_version,
            runtime: Some(h.runtime.into()),
            capacity: Some(h.capacity.into()),
            observed_pending: h.observed.is_none(),
            observed: h.observed.into_iter().flatten().map(Into::into).collect(),
            applied: Some(h.applied.into()),
        }
    }
}

impl TryFrom<pb::Hello> for m::Hello {
    type Error = ConvertError;
    fn try_from(h: pb::Hello) -> Result<Self, ConvertError> {
        Ok(m::Hello {
            protocol_version: h.protocol_version,
            hypervisor_name: h.hypervisor_name,
            role: m::Role::try_from(h.role)?,
            agent_version: h.agent_version,
            runtime: h.runtime.unwrap_or_default().into(),
            capacity: h
                .capacity
                .ok_or_else(|| bad("hello.capacity", "missing"))?
                .try_into()?,
            observed: (!h.observed_pending)
                .then(|| h.observed.into_iter().map(Into::into).collect()),
            applied: h.applied.unwrap_or_default().into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_keeps_unknown_apart_from_nothing_runs() {
        let hello = |observed| m::Hello {
            protocol_version: 1,
            hypervisor_name: "hv".into(),
            role: m::Role::Private,
            agent_version: "0".into(),
            runtime: Default::default(),
            capacity: m::Capacity {
                cpu_millis: 1000,
                memory_bytes: 1 << 30,
                host_ports: m::PortRange::new(30000, 30010).unwrap(),
                address: "127.0.0.1".into(),
            },
            observed,
            applied: Default::default(),
        };
        for observed in [
            None,
            Some(vec![]),
            Some(vec![m::ComponentStatus::default()]),
        ] {
            let wire = pb::Hello::from(hello(observed.clone()));
            assert_eq!(wire.observed_pending, observed.is_none());
            let back = m::Hello::try_from(wire).unwrap();
            assert_eq!(back.observed, observed);
        }
    }

    #[test]
    fn component_round_trips_and_bad_paths_are_refused() {
        let c = m::Component {
            incarnation: "inc-1".into(),
            id: "c/etcd-0".into(),
            cluster: "c".into(),
            pod: m::PodSpec {
                containers: vec![m::Container {
                    name: "etcd".into(),
                    image: "etcd:3.4".into(),
                    args: vec!["--b".into(), "--a".into()],
                    mounts: vec![m::Mount {
                        source: "data".into(),
                        container_path: "/var/lib/etcd".into(),
                        read_only: false,
                    }],
                    ports: vec![m::HostPort {
                        name: "client".into(),
                        port: 2379,
                        protocol: m::Protocol::Tcp,
                    }],
                    probe: Some(m::Probe {
                        scheme: m::Scheme::Https,
                        port: 6443,
                        path: "/readyz".into(),
                        period_ms: 1000,
                        timeout_ms: 1000,
                        failure_threshold: 3,
                        initial_delay_ms: 0,
                    }),
                    ..Default::default()
                }],
                files: vec![m::File {
                    path: "pki/ca.pem".into(),
                    mode: 0o644,
                    content: b"x".to_vec(),
                }],
            },
        };
        let back: m::Component = pb::Component::from(c.clone()).try_into().unwrap();
        assert_eq!(back, c);

        for bad_path in ["../etc/passwd", "/etc/passwd", "", "a/../../b"] {
            let mut p = pb::Component::from(c.clone());
            p.pod.as_mut().unwrap().files[0].path = bad_path.into();
            let err = m::Component::try_from(p).unwrap_err();
            assert_eq!(err.field, "file.path", "{bad_path}");
        }
    }
}
