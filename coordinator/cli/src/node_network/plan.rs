//! What one worker's pod network should be, from its cluster's view (pure):
//! the bridge CNI configuration over its own podCIDR, and a route to every
//! other node's podCIDR through that node's address. `plan` compares it
//! with what the node holds and says what to change.

use oi_api_types::model::Cni;
use oi_api_types::node_network::NodeNetwork;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The file oneinfra owns in the CNI configuration directory (the runtime
/// takes the first file by name: `10-` comes before most others).
pub const CONFLIST: &str = "10-oneinfra.conflist";
/// The bridge in the node's network namespace.
pub const BRIDGE: &str = "oi0";
/// The routing protocol number oneinfra's routes carry, so that only they
/// are ever changed (`ip route show proto 222`).
pub const ROUTE_PROTO: u8 = 222;

/// One node as the cluster reports it: name, `spec.podCIDR`, InternalIP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    pub pod_cidr: Option<String>,
    pub internal_ip: Option<IpAddr>,
}

/// What the node holds now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// The text of [`CONFLIST`], if the file is there.
    pub conflist: Option<String>,
    /// oneinfra's routes: destination -> gateway.
    pub routes: BTreeMap<String, IpAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    WriteConflist(String),
    RemoveConflist,
    /// `ip route replace DST via GW proto 222`.
    Route {
        dst: String,
        via: IpAddr,
    },
    /// `ip route del DST proto 222`.
    Unroute {
        dst: String,
    },
}

/// Why this node's configuration cannot be written yet (not an error:
/// the controller-manager gives a node its podCIDR after it registers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// The node is not registered, or has no podCIDR yet.
    PodCidr,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Conflist<'a> {
    cni_version: &'a str,
    name: &'a str,
    plugins: Vec<serde_json::Value>,
}

/// The CNI configuration of a node whose podCIDR is `pod_cidr`:
/// `bridge` (gateway, masquerade for traffic leaving the pod range,
/// hairpin) with `host-local` addresses, then `portmap` for hostPorts.
/// `state_dir` is host-local's directory of reserved addresses.
pub fn conflist(pod_cidr: &str, state_dir: &str) -> String {
    let default_route = if pod_cidr.contains(':') {
        "::/0"
    } else {
        "0.0.0.0/0"
    };
    let c = Conflist {
        cni_version: "1.0.0",
        name: "oneinfra",
        plugins: vec![
            serde_json::json!({
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": default_route}],
                    "dataDir": state_dir,
                },
            }),
            serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}}),
        ],
    };
    let mut text = serde_json::to_string_pretty(&c).expect("a conflist always serializes");
    text.push('\n');
    text
}

/// What to change so that the node holds what `network` and `nodes` say.
/// `me` is this node's name. Returns the actions, and why the conflist is
/// not written yet, if it is not.
pub fn plan(
    network: &NodeNetwork,
    me: &str,
    nodes: &[NodeView],
    observed: &Observed,
    state_dir: &str,
) -> (Vec<Action>, Option<Waiting>) {
    let mut actions = Vec::new();
    let mut waiting = None;
    let mut routes: BTreeMap<String, IpAddr> = BTreeMap::new();
    match network.cni {
        Cni::None => {
            if observed.conflist.is_some() {
                actions.push(Action::RemoveConflist);
            }
        }
        Cni::Bridge => {
            let mine = nodes.iter().find(|n| n.name == me);
            match mine.and_then(|n| n.pod_cidr.as_deref()) {
                Some(cidr) => {
                    let want = conflist(cidr, state_dir);
                    if observed.conflist.as_deref() != Some(want.as_str()) {
                        actions.push(Action::WriteConflist(want));
                    }
                }
                None => waiting = Some(Waiting::PodCidr),
            }
            let my_ip = mine.and_then(|n| n.internal_ip);
            for n in nodes.iter().filter(|n| n.name != me) {
                let (Some(cidr), Some(ip)) = (&n.pod_cidr, n.internal_ip) else {
                    continue;
                };
                // Same address family only, and never through ourselves.
                if Some(ip) == my_ip || cidr.contains(':') != ip.is_ipv6() {
                    continue;
                }
                routes.insert(cidr.clone(), ip);
            }
        }
    }
    for (dst, via) in &routes {
        if observed.routes.get(dst) != Some(via) {
            actions.push(Action::Route {
                dst: dst.clone(),
                via: *via,
            });
        }
    }
    for dst in observed.routes.keys() {
        if !routes.contains_key(dst) {
            actions.push(Action::Unroute { dst: dst.clone() });
        }
    }
    (actions, waiting)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: Option<&str>, ip: Option<&str>) -> NodeView {
        NodeView {
            name: name.into(),
            pod_cidr: cidr.map(Into::into),
            internal_ip: ip.map(|i| i.parse().unwrap()),
        }
    }

    fn net(cni: Cni) -> NodeNetwork {
        NodeNetwork {
            cni,
            cluster_cidr: "10.244.0.0/16".into(),
            service_cidr: "10.96.0.0/12".into(),
        }
    }

    const STATE: &str = "/var/lib/cni/networks";

    #[test]
    fn plans_by_table() {
        let w1 = node("w1", Some("10.244.0.0/24"), Some("10.0.0.1"));
        let w2 = node("w2", Some("10.244.1.0/24"), Some("10.0.0.2"));
        let w3_new = node("w3", None, Some("10.0.0.3"));
        let mine = conflist("10.244.0.0/24", STATE);
        let routed = |pairs: &[(&str, &str)]| Observed {
            conflist: Some(mine.clone()),
            routes: pairs
                .iter()
                .map(|(d, g)| (d.to_string(), g.parse().unwrap()))
                .collect(),
        };
        type Case = (
            &'static str,
            NodeNetwork,
            Vec<NodeView>,
            Observed,
            Vec<Action>,
            Option<Waiting>,
        );
        let cases: Vec<Case> = vec![
            (
                "not registered yet: wait, touch nothing",
                net(Cni::Bridge),
                vec![],
                Observed::default(),
                vec![],
                Some(Waiting::PodCidr),
            ),
            (
                "first pass: conflist and a route to the other node",
                net(Cni::Bridge),
                vec![w1.clone(), w2.clone(), w3_new.clone()],
                Observed::default(),
                vec![
                    Action::WriteConflist(mine.clone()),
                    Action::Route {
                        dst: "10.244.1.0/24".into(),
                        via: "10.0.0.2".parse().unwrap(),
                    },
                ],
                None,
            ),
            (
                "in place: nothing to do",
                net(Cni::Bridge),
                vec![w1.clone(), w2.clone()],
                routed(&[("10.244.1.0/24", "10.0.0.2")]),
                vec![],
                None,
            ),
            (
                "a node left: its route goes; a moved node's route follows it",
                net(Cni::Bridge),
                vec![
                    w1.clone(),
                    node("w2", Some("10.244.1.0/24"), Some("10.0.0.9")),
                ],
                routed(&[("10.244.1.0/24", "10.0.0.2"), ("10.244.7.0/24", "10.0.0.7")]),
                vec![
                    Action::Route {
                        dst: "10.244.1.0/24".into(),
                        via: "10.0.0.9".parse().unwrap(),
                    },
                    Action::Unroute {
                        dst: "10.244.7.0/24".into(),
                    },
                ],
                None,
            ),
            (
                "cni none: everything oneinfra wrote goes",
                net(Cni::None),
                vec![w1.clone(), w2.clone()],
                routed(&[("10.244.1.0/24", "10.0.0.2")]),
                vec![
                    Action::RemoveConflist,
                    Action::Unroute {
                        dst: "10.244.1.0/24".into(),
                    },
                ],
                None,
            ),
        ];
        for (what, network, nodes, observed, want, want_waiting) in cases {
            let (got, waiting) = plan(&network, "w1", &nodes, &observed, STATE);
            assert_eq!(got, want, "{what}");
            assert_eq!(waiting, want_waiting, "{what}");
        }
    }

    #[test]
    fn the_conflist_is_what_libcni_reads() {
        let text = conflist("10.244.3.0/24", "/x/state");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["plugins"][0]["type"], "bridge");
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.244.3.0/24"
        );
        assert_eq!(v["plugins"][0]["ipam"]["dataDir"], "/x/state");
        assert_eq!(v["plugins"][0]["ipMasq"], true);
        assert_eq!(v["plugins"][1]["type"], "portmap");
    }
}
