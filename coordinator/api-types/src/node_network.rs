//! What every worker's network needs to know of its cluster, published by
//! the coordinator in `kube-system/oneinfra-node-network` (key
//! [`KEY`]) and read by `oi node join` (with the node token) and by `oi node
//! network` (with the kubelet's credential). JSON from this typed struct on
//! both sides.

use crate::model::Cni;
use serde::{Deserialize, Serialize};

pub const CONFIG_MAP: &str = "oneinfra-node-network";
pub const NAMESPACE: &str = "kube-system";
pub const KEY: &str = "network.json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeNetwork {
    /// `bridge`: each worker keeps a bridge CNI configuration over its
    /// podCIDR and routes to the other workers' podCIDRs; `none`: the
    /// workers' networks are someone else's (and `oi node network` removes
    /// what it wrote).
    pub cni: Cni,
    /// The cluster's pod range (the controller-manager gives each node a
    /// part of it as its `spec.podCIDR`).
    pub cluster_cidr: String,
    pub service_cidr: String,
}

impl NodeNetwork {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a NodeNetwork always serializes")
    }

    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("{CONFIG_MAP}/{KEY} does not parse: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_cni_as_the_spec_does() {
        let n = NodeNetwork {
            cni: Cni::Bridge,
            cluster_cidr: "10.244.0.0/16".into(),
            service_cidr: "10.96.0.0/12".into(),
        };
        let text = n.to_json();
        assert!(text.contains("\"cni\": \"bridge\""), "{text}");
        assert!(text.contains("\"clusterCidr\""), "{text}");
        assert_eq!(NodeNetwork::from_json(&text).unwrap(), n);
        assert!(NodeNetwork::from_json("{\"cni\": \"flannel\"}").is_err());
    }
}
