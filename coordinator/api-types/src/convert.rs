//! Operations' view types <-> `oi_proto::api` messages. The server converts
//! views into messages; the CLI converts messages back into views (which
//! are what it prints), refusing values it does not know.

use crate::model::{
    Addons, ClusterSpec, Cni, ValidationError, DEFAULT_POD_CIDR, DEFAULT_SERVICE_CIDR,
};
use crate::token::TokenState;
use crate::views::{
    ApplyOutcome, ClusterPhase, ClusterStatus, ClusterView, ComponentView, Condition,
    CreatedNodeToken, CreatedToken, DrainOutcome, HypervisorSummary, JoinTokenView, NodeTokenView,
    NodeView, RemoveOutcome, VersionInfo,
};
use oi_proto::api as pb;
use oi_proto::model::{Phase, Role};

/// A message the CLI cannot turn into a view.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the coordinator sent {0}: use an `oi` of the coordinator's version")]
pub struct ConvertError(String);

fn bad(what: &str, value: &str) -> ConvertError {
    ConvertError(format!("an unknown {what} {value:?}"))
}

// ------------------------------------------------------------------ specs --

/// A spec as the API receives it: absent replicas and empty CIDRs mean the
/// defaults; an explicit 0 replicas reaches validation (and is refused);
/// absent add-ons are on. An unknown CNI is refused.
impl TryFrom<pb::ClusterSpec> for ClusterSpec {
    type Error = ValidationError;

    fn try_from(p: pb::ClusterSpec) -> Result<Self, ValidationError> {
        let or = |v: String, default: &str| {
            if v.is_empty() {
                default.to_string()
            } else {
                v
            }
        };
        let a = p.addons.unwrap_or_default();
        let addons = Addons {
            kube_proxy: a.kube_proxy.unwrap_or(true),
            dns: a.dns.unwrap_or(true),
            cni: Cni::parse(&a.cni)?,
        };
        Ok(ClusterSpec {
            name: p.name,
            kubernetes_version: p.kubernetes_version,
            replicas: p.replicas.unwrap_or(1),
            service_cidr: or(p.service_cidr, DEFAULT_SERVICE_CIDR),
            pod_cidr: or(p.pod_cidr, DEFAULT_POD_CIDR),
            api_server_extra_sans: p.api_server_extra_sans,
            addons,
        })
    }
}

impl From<ClusterSpec> for pb::ClusterSpec {
    fn from(s: ClusterSpec) -> Self {
        pb::ClusterSpec {
            name: s.name,
            kubernetes_version: s.kubernetes_version,
            replicas: Some(s.replicas),
            service_cidr: s.service_cidr,
            pod_cidr: s.pod_cidr,
            api_server_extra_sans: s.api_server_extra_sans,
            addons: Some(pb::Addons {
                kube_proxy: Some(s.addons.kube_proxy),
                dns: Some(s.addons.dns),
                cni: s.addons.cni.as_str().into(),
            }),
        }
    }
}

// --------------------------------------------------------------- clusters --

pub fn cluster_phase_from_str(s: &str) -> Result<ClusterPhase, ConvertError> {
    [
        ClusterPhase::Pending,
        ClusterPhase::Provisioning,
        ClusterPhase::Ready,
        ClusterPhase::Degraded,
    ]
    .into_iter()
    .find(|p| p.as_str() == s)
    .ok_or_else(|| bad("cluster phase", s))
}

pub fn phase_from_str(s: &str) -> Result<Phase, ConvertError> {
    [
        Phase::Unknown,
        Phase::Pending,
        Phase::Running,
        Phase::Failed,
        Phase::Terminating,
    ]
    .into_iter()
    .find(|p| p.as_str() == s)
    .ok_or_else(|| bad("component phase", s))
}

pub fn outcome_str(o: ApplyOutcome) -> &'static str {
    match o {
        ApplyOutcome::Created => "created",
        ApplyOutcome::Updated => "updated",
        ApplyOutcome::Unchanged => "unchanged",
    }
}

pub fn outcome_from_str(s: &str) -> Result<ApplyOutcome, ConvertError> {
    [
        ApplyOutcome::Created,
        ApplyOutcome::Updated,
        ApplyOutcome::Unchanged,
    ]
    .into_iter()
    .find(|o| outcome_str(*o) == s)
    .ok_or_else(|| bad("apply outcome", s))
}

impl From<Condition> for pb::Condition {
    fn from(c: Condition) -> Self {
        pb::Condition {
            r#type: c.kind,
            status: c.status,
            reason: c.reason,
            message: c.message,
        }
    }
}

impl From<pb::Condition> for Condition {
    fn from(c: pb::Condition) -> Self {
        Condition {
            kind: c.r#type,
            status: c.status,
            reason: c.reason,
            message: c.message,
        }
    }
}

impl From<ComponentView> for pb::ComponentStatus {
    fn from(c: ComponentView) -> Self {
        pb::ComponentStatus {
            id: c.id,
            cluster: c.cluster,
            hypervisor: c.hypervisor,
            phase: c.phase.as_str().to_string(),
            ready: c.ready,
            restarts: c.restarts,
            reason: c.reason,
            message: c.message,
        }
    }
}

impl TryFrom<pb::ComponentStatus> for ComponentView {
    type Error = ConvertError;
    fn try_from(c: pb::ComponentStatus) -> Result<Self, ConvertError> {
        Ok(ComponentView {
            phase: phase_from_str(&c.phase)?,
            id: c.id,
            cluster: c.cluster,
            hypervisor: c.hypervisor,
            ready: c.ready,
            restarts: c.restarts,
            reason: c.reason,
            message: c.message,
        })
    }
}

impl From<ClusterView> for pb::Cluster {
    fn from(v: ClusterView) -> Self {
        let s = v.status;
        pb::Cluster {
            spec: Some(v.spec.into()),
            status: Some(pb::ClusterStatus {
                phase: s.phase.as_str().to_string(),
                endpoint: s.endpoint,
                conditions: s.conditions.into_iter().map(Into::into).collect(),
                components: s.components.into_iter().map(Into::into).collect(),
            }),
        }
    }
}

impl TryFrom<pb::Cluster> for ClusterView {
    type Error = ConvertError;
    fn try_from(c: pb::Cluster) -> Result<Self, ConvertError> {
        let spec = c
            .spec
            .ok_or_else(|| ConvertError("a cluster without a spec".into()))?;
        let s = c
            .status
            .ok_or_else(|| ConvertError("a cluster without a status".into()))?;
        Ok(ClusterView {
            spec: spec
                .try_into()
                .map_err(|e: ValidationError| ConvertError(e.to_string()))?,
            status: ClusterStatus {
                phase: cluster_phase_from_str(&s.phase)?,
                endpoint: s.endpoint,
                conditions: s.conditions.into_iter().map(Into::into).collect(),
                components: s
                    .components
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect::<Result<_, _>>()?,
            },
        })
    }
}

// ------------------------------------------------------------ hypervisors --

impl From<HypervisorSummary> for pb::Hypervisor {
    fn from(h: HypervisorSummary) -> Self {
        pb::Hypervisor {
            name: h.name,
            role: h.role.as_str().to_string(),
            address: h.address,
            connected: h.connected,
            cordoned: h.cordoned,
            port_range: h.port_range,
            cpu_millis: h.cpu_millis,
            memory_bytes: h.memory_bytes,
            cpu_millis_requested: h.cpu_millis_requested,
            memory_bytes_requested: h.memory_bytes_requested,
            components: h.components,
            generation: h.generation,
            last_seen_unix_ms: h.last_seen_unix_ms.unwrap_or(0),
            not_adopted: h.not_adopted,
            removal: h.removal,
        }
    }
}

impl TryFrom<pb::Hypervisor> for HypervisorSummary {
    type Error = ConvertError;
    fn try_from(h: pb::Hypervisor) -> Result<Self, ConvertError> {
        Ok(HypervisorSummary {
            role: h
                .role
                .parse::<Role>()
                .map_err(|_| bad("hypervisor role", &h.role))?,
            name: h.name,
            address: h.address,
            connected: h.connected,
            cordoned: h.cordoned,
            port_range: h.port_range,
            cpu_millis: h.cpu_millis,
            memory_bytes: h.memory_bytes,
            cpu_millis_requested: h.cpu_millis_requested,
            memory_bytes_requested: h.memory_bytes_requested,
            components: h.components,
            generation: h.generation,
            last_seen_unix_ms: (h.last_seen_unix_ms != 0).then_some(h.last_seen_unix_ms),
            not_adopted: h.not_adopted,
            removal: h.removal,
        })
    }
}

// ------------------------------------------------------------- lifecycle --

impl From<DrainOutcome> for pb::DrainResponse {
    fn from(d: DrainOutcome) -> Self {
        pb::DrainResponse {
            rescheduled: d.rescheduled,
            pending: d.pending,
        }
    }
}

impl From<pb::DrainResponse> for DrainOutcome {
    fn from(d: pb::DrainResponse) -> Self {
        DrainOutcome {
            rescheduled: d.rescheduled,
            pending: d.pending,
        }
    }
}

impl From<RemoveOutcome> for pb::RemoveResponse {
    fn from(r: RemoveOutcome) -> Self {
        pb::RemoveResponse {
            drained: Some(r.drained.into()),
            revoked_certificates: r.revoked_certificates,
            disconnected: r.disconnected,
            done: r.done,
        }
    }
}

impl From<pb::RemoveResponse> for RemoveOutcome {
    fn from(r: pb::RemoveResponse) -> Self {
        RemoveOutcome {
            drained: r.drained.map(Into::into).unwrap_or_default(),
            revoked_certificates: r.revoked_certificates,
            disconnected: r.disconnected,
            done: r.done,
        }
    }
}

// ------------------------------------------------------------ join tokens --

impl From<JoinTokenView> for pb::JoinToken {
    fn from(t: JoinTokenView) -> Self {
        pb::JoinToken {
            id: t.id,
            role: t.role.as_str().to_string(),
            created_unix_ms: t.created_unix_ms,
            expires_unix_ms: t.expires_unix_ms,
            max_uses: t.max_uses,
            uses: t.uses,
            revoked: t.state == TokenState::Revoked,
            state: t.state.as_str().to_string(),
        }
    }
}

impl TryFrom<pb::JoinToken> for JoinTokenView {
    type Error = ConvertError;
    fn try_from(t: pb::JoinToken) -> Result<Self, ConvertError> {
        Ok(JoinTokenView {
            role: t
                .role
                .parse::<Role>()
                .map_err(|_| bad("token role", &t.role))?,
            state: TokenState::parse(&t.state).ok_or_else(|| bad("token state", &t.state))?,
            id: t.id,
            created_unix_ms: t.created_unix_ms,
            expires_unix_ms: t.expires_unix_ms,
            max_uses: t.max_uses,
            uses: t.uses,
        })
    }
}

impl From<CreatedToken> for pb::CreateJoinTokenResponse {
    fn from(c: CreatedToken) -> Self {
        pb::CreateJoinTokenResponse {
            token: Some(c.view.into()),
            secret_token: c.token,
            join_address: c.join_address,
            ca_cert_hash: c.ca_cert_hash,
        }
    }
}

impl TryFrom<pb::CreateJoinTokenResponse> for CreatedToken {
    type Error = ConvertError;
    fn try_from(c: pb::CreateJoinTokenResponse) -> Result<Self, ConvertError> {
        let view = c
            .token
            .ok_or_else(|| ConvertError("a created token without its details".into()))?;
        Ok(CreatedToken {
            view: view.try_into()?,
            token: c.secret_token,
            join_address: c.join_address,
            ca_cert_hash: c.ca_cert_hash,
        })
    }
}

// ------------------------------------------------------------ node tokens --

impl From<NodeTokenView> for pb::NodeToken {
    fn from(t: NodeTokenView) -> Self {
        pb::NodeToken {
            cluster: t.cluster,
            id: t.id,
            description: t.description,
            created_unix_ms: t.created_unix_ms,
            expires_unix_ms: t.expires_unix_ms,
            state: t.state.as_str().to_string(),
        }
    }
}

impl TryFrom<pb::NodeToken> for NodeTokenView {
    type Error = ConvertError;
    fn try_from(t: pb::NodeToken) -> Result<Self, ConvertError> {
        Ok(NodeTokenView {
            state: TokenState::parse(&t.state).ok_or_else(|| bad("token state", &t.state))?,
            cluster: t.cluster,
            id: t.id,
            description: t.description,
            created_unix_ms: t.created_unix_ms,
            expires_unix_ms: t.expires_unix_ms,
        })
    }
}

impl From<CreatedNodeToken> for pb::CreateNodeTokenResponse {
    fn from(c: CreatedNodeToken) -> Self {
        pb::CreateNodeTokenResponse {
            token: Some(c.view.into()),
            secret_token: c.token,
            endpoint: c.endpoint,
            ca_cert_hash: c.ca_cert_hash,
        }
    }
}

impl TryFrom<pb::CreateNodeTokenResponse> for CreatedNodeToken {
    type Error = ConvertError;
    fn try_from(c: pb::CreateNodeTokenResponse) -> Result<Self, ConvertError> {
        let view = c
            .token
            .ok_or_else(|| ConvertError("a created node token without its details".into()))?;
        Ok(CreatedNodeToken {
            view: view.try_into()?,
            token: c.secret_token,
            endpoint: c.endpoint,
            ca_cert_hash: c.ca_cert_hash,
        })
    }
}

// ------------------------------------------------------------------ nodes --

impl From<NodeView> for pb::NodeInfo {
    fn from(n: NodeView) -> Self {
        pb::NodeInfo {
            name: n.name,
            ready: n.ready,
            kubelet_version: n.kubelet_version,
            addresses: n.addresses,
            vpn_address: n.vpn_address,
            created_unix_ms: n.created_unix_ms,
            token_id: n.token_id,
        }
    }
}

impl From<pb::NodeInfo> for NodeView {
    fn from(n: pb::NodeInfo) -> Self {
        NodeView {
            name: n.name,
            ready: n.ready,
            kubelet_version: n.kubelet_version,
            addresses: n.addresses,
            vpn_address: n.vpn_address,
            created_unix_ms: n.created_unix_ms,
            token_id: n.token_id,
        }
    }
}

// ------------------------------------------------------------------- info --

impl From<VersionInfo> for pb::KubernetesVersion {
    fn from(v: VersionInfo) -> Self {
        pb::KubernetesVersion {
            version: v.kubernetes_version,
            default: v.default,
            etcd_image: v.etcd_image,
            apiserver_image: v.apiserver_image,
            controller_manager_image: v.controller_manager_image,
            scheduler_image: v.scheduler_image,
            haproxy_image: v.haproxy_image,
            coredns_image: v.coredns_image,
        }
    }
}

impl From<pb::KubernetesVersion> for VersionInfo {
    fn from(v: pb::KubernetesVersion) -> Self {
        VersionInfo {
            kubernetes_version: v.version,
            default: v.default,
            etcd_image: v.etcd_image,
            apiserver_image: v.apiserver_image,
            controller_manager_image: v.controller_manager_image,
            scheduler_image: v.scheduler_image,
            haproxy_image: v.haproxy_image,
            coredns_image: v.coredns_image,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> ClusterView {
        let mut spec = ClusterSpec::new("prod", "1.37.2", 3);
        spec.api_server_extra_sans = vec!["api.example.com".into()];
        ClusterView {
            spec,
            status: ClusterStatus {
                phase: ClusterPhase::Provisioning,
                endpoint: "https://192.0.2.1:30000".into(),
                conditions: vec![Condition {
                    kind: "Scheduled".into(),
                    status: true,
                    reason: "Placed".into(),
                    message: "m".into(),
                }],
                components: vec![ComponentView {
                    id: "prod-etcd-0".into(),
                    cluster: "prod".into(),
                    hypervisor: "hv-1".into(),
                    phase: Phase::Running,
                    ready: true,
                    restarts: 2,
                    reason: String::new(),
                    message: String::new(),
                }],
            },
        }
    }

    #[test]
    fn views_survive_the_round_trip() {
        let v = view();
        assert_eq!(ClusterView::try_from(pb::Cluster::from(v.clone())), Ok(v));

        for last_seen in [None, Some(1_700_000_000_000)] {
            let h = HypervisorSummary {
                name: "hv-1".into(),
                role: Role::Public,
                address: "192.0.2.1".into(),
                connected: true,
                cordoned: false,
                port_range: "30000-30999".into(),
                cpu_millis: 4000,
                memory_bytes: 8 << 30,
                cpu_millis_requested: 500,
                memory_bytes_requested: 1 << 30,
                components: 3,
                generation: 7,
                last_seen_unix_ms: last_seen,
                not_adopted: vec!["old/etcd-0".into()],
                removal: "removing: beta/etcd-0 moving off".into(),
            };
            assert_eq!(
                HypervisorSummary::try_from(pb::Hypervisor::from(h.clone())),
                Ok(h)
            );
        }
        let t = JoinTokenView {
            id: "abcdef".into(),
            role: Role::Private,
            created_unix_ms: 1,
            expires_unix_ms: 2,
            max_uses: 3,
            uses: 1,
            state: TokenState::Active,
        };
        let created = CreatedToken {
            view: t.clone(),
            token: "abcdef.0123456789abcdef".into(),
            join_address: "192.0.2.1:7444".into(),
            ca_cert_hash: "sha256:00".into(),
        };
        assert_eq!(
            CreatedToken::try_from(pb::CreateJoinTokenResponse::from(created.clone())),
            Ok(created)
        );
        let mut bad_state = pb::JoinToken::from(t);
        bad_state.state = "melted".into();
        assert!(JoinTokenView::try_from(bad_state).is_err());
        let n = NodeTokenView {
            cluster: "prod".into(),
            id: "abcdef".into(),
            description: "rack 4".into(),
            created_unix_ms: 1,
            expires_unix_ms: 2,
            state: TokenState::Revoked,
        };
        let created = CreatedNodeToken {
            view: n.clone(),
            token: "abcdef.0123456789abcdef".into(),
            endpoint: "192.0.2.1:30000".into(),
            ca_cert_hash: "sha256:00".into(),
        };
        assert_eq!(
            CreatedNodeToken::try_from(pb::CreateNodeTokenResponse::from(created.clone())),
            Ok(created)
        );
        let mut bad_state = pb::NodeToken::from(n);
        bad_state.state = "melted".into();
        assert!(NodeTokenView::try_from(bad_state).is_err());
        let removed = RemoveOutcome {
            drained: DrainOutcome {
                rescheduled: vec!["a".into()],
                pending: vec!["b".into()],
            },
            revoked_certificates: 2,
            disconnected: true,
            done: true,
        };
        assert_eq!(
            RemoveOutcome::from(pb::RemoveResponse::from(removed.clone())),
            removed
        );
        for o in [
            ApplyOutcome::Created,
            ApplyOutcome::Updated,
            ApplyOutcome::Unchanged,
        ] {
            assert_eq!(outcome_from_str(outcome_str(o)), Ok(o));
        }
    }

    #[test]
    fn empty_spec_fields_mean_the_defaults() {
        let s = ClusterSpec::try_from(pb::ClusterSpec {
            name: "a".into(),
            kubernetes_version: "1.37.2".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s, ClusterSpec::new("a", "1.37.2", 1));
        let mut off = ClusterSpec::new("a", "1.37.2", 1);
        off.addons = Addons {
            kube_proxy: false,
            dns: false,
            cni: Cni::None,
        };
        assert_eq!(
            ClusterSpec::try_from(pb::ClusterSpec::from(off.clone())).unwrap(),
            off
        );
        let err = ClusterSpec::try_from(pb::ClusterSpec {
            name: "a".into(),
            addons: Some(pb::Addons {
                cni: "flannel".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("bridge or none"), "{err}");
    }

    #[test]
    fn unknown_values_are_refused_with_a_hint() {
        let mut p = pb::Cluster::from(view());
        p.status.as_mut().unwrap().phase = "exploded".into();
        let err = ClusterView::try_from(p).unwrap_err().to_string();
        assert!(
            err.contains("\"exploded\"") && err.contains("version"),
            "{err}"
        );
        let mut p = pb::Cluster::from(view());
        p.status.as_mut().unwrap().components[0].phase = "weird".into();
        assert!(ClusterView::try_from(p).is_err());
        assert!(ClusterView::try_from(pb::Cluster::default()).is_err());
        assert!(outcome_from_str("maybe").is_err());
    }
}
