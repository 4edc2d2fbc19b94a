//! `oi node network`: keeps one worker's pod network as its cluster says
//! (`kube-system/oneinfra-node-network`): with `cni: bridge`, the bridge CNI
//! configuration over the node's podCIDR, and a route to every other
//! node's podCIDR through that node's address (host-gw: the workers share
//! a network); with `cni: none`, nothing of oneinfra's. `oi node join`
//! runs it as `oi-node-network.service` beside the kubelet.
//!
//! Level-triggered: it watches Nodes (kube's reflector), and on every
//! change and every [`RESYNC`] compares what the node holds with what it
//! should ([`plan::plan`]) and changes only the difference. It only ever
//! touches its own file ([`plan::CONFLIST`]) and its own routes (protocol
//! [`plan::ROUTE_PROTO`]). It authenticates as the node, with the
//! kubelet's kubeconfig, and builds a new client every [`NEW_CLIENT`] (the
//! kubelet rotates its certificate).

pub mod plan;
mod routes;

use super::exit::{one_line, CliError, CliResult, Exit};
use super::Ctx;
use clap::Args;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::Api;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use oi_api_types::node_network::{self, NodeNetwork};
use plan::{Action, NodeView, Observed, Waiting};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const UNIT: &str = "oi-node-network.service";
pub const UNIT_PATH: &str = "/etc/systemd/system/oi-node-network.service";
const RESYNC: Duration = Duration::from_secs(30);
const NEW_CLIENT: Duration = Duration::from_secs(3600);

#[derive(Args, Debug, Clone)]
pub struct NodeNetworkArgs {
    /// The node's kubeconfig (the kubelet's, once it has bootstrapped).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/var/lib/oneinfra/node/kubelet.conf"
    )]
    pub kubeconfig: PathBuf,
    /// The node's name, as it registered.
    #[arg(long)]
    pub name: String,
    /// The container runtime's CNI configuration directory.
    #[arg(long, value_name = "DIR", default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// Where host-local keeps the addresses it handed out.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/cni/networks")]
    pub cni_state_dir: PathBuf,
    /// One pass, then exit (0 when the node holds what it should).
    #[arg(long)]
    pub once: bool,
}

impl NodeNetworkArgs {
    /// The command line that runs it (for the unit and `--no-systemd`).
    pub fn command(&self, oi: &Path) -> Vec<String> {
        vec![
            oi.display().to_string(),
            "node".into(),
            "network".into(),
            format!("--kubeconfig={}", self.kubeconfig.display()),
            format!("--name={}", self.name),
            format!("--cni-conf-dir={}", self.cni_conf_dir.display()),
            format!("--cni-state-dir={}", self.cni_state_dir.display()),
        ]
    }
}

fn error(message: String) -> CliError {
    CliError::new(Exit::Error, message)
}

pub async fn run(ctx: &mut Ctx<'_>, a: NodeNetworkArgs) -> CliResult {
    let mut said_waiting = false;
    loop {
        if !a.kubeconfig.exists() {
            if a.once {
                return Err(error(format!(
                    "{} does not exist: the kubelet has not bootstrapped yet",
                    a.kubeconfig.display()
                )));
            }
            if !said_waiting {
                ctx.note(&format!(
                    "waiting for {} (the kubelet writes it once bootstrapped)",
                    a.kubeconfig.display()
                ));
                said_waiting = true;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let client = match client(&a.kubeconfig).await {
            Ok(c) => c,
            Err(e) if !a.once => {
                ctx.note(&format!("{}; retrying in 5s", e.message));
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        if a.once {
            let nodes = Api::<Node>::all(client.clone())
                .list(&Default::default())
                .await
                .map_err(|e| error(format!("list nodes: {}", one_line(&e))))?;
            let views: Vec<NodeView> = nodes.items.iter().map(view).collect();
            let network = read_network(&client).await?;
            let r = pass(ctx, &a, &network, &views).await;
            for f in &r.failures {
                ctx.note(f);
            }
            return match (r.failures.len(), r.waiting) {
                (0, None) => Ok(()),
                (0, Some(Waiting::PodCidr)) => Err(error(format!(
                    "node {} has no podCIDR yet (is it registered? does the controller-manager \
                     allocate node CIDRs?)",
                    a.name
                ))),
                (n, _) => Err(error(format!("{n} change(s) failed (see above)"))),
            };
        }
        watch(ctx, &a, client).await;
    }
}

/// Runs passes on a client until it is due to be renewed.
async fn watch(ctx: &mut Ctx<'_>, a: &NodeNetworkArgs, client: kube::Client) {
    let (reader, writer) = reflector::store::<Node>();
    let stream = reflector(
        writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff();
    let mut stream = std::pin::pin!(stream);
    let renew = tokio::time::sleep(NEW_CLIENT);
    tokio::pin!(renew);
    let mut tick = tokio::time::interval(RESYNC);
    let mut network: Option<NodeNetwork> = None;
    let mut last_error = String::new();
    let mut said_waiting = false;
    let mut failures: Vec<String> = Vec::new();
    let mut listed = false;
    loop {
        let resync = tokio::select! {
            _ = &mut renew => return,
            _ = tick.tick() => true,
            item = stream.next() => {
                match item {
                    // The store is whole once the (re)list is done; a
                    // change after it is worth a pass at once.
                    Some(Ok(watcher::Event::InitDone)) => listed = true,
                    Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => continue,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        let text = format!("watch nodes: {}", one_line(&e));
                        if text != last_error {
                            ctx.note(&text);
                            last_error = text;
                        }
                        continue;
                    }
                    None => return,
                }
                false
            }
        };
        if resync || network.is_none() {
            match read_network(&client).await {
                Ok(n) => network = Some(n),
                Err(e) => {
                    if e.message != last_error {
                        ctx.note(&e.message);
                        last_error = e.message.clone();
                    }
                    continue;
                }
            }
        }
        // Until the reflector has listed once, it knows no node.
        if !listed {
            continue;
        }
        let Some(n) = &network else { continue };
        let views: Vec<NodeView> = reader.state().iter().map(|n| view(n)).collect();
        let r = pass(ctx, a, n, &views).await;
        // A failure is said when it first happens, not every pass.
        for f in r.failures.iter().filter(|f| !failures.contains(f)) {
            ctx.note(f);
        }
        failures = r.failures;
        let waiting = r.waiting;
        if waiting.is_some() && !said_waiting {
            ctx.note(&format!(
                "node {} has no podCIDR yet: the CNI configuration follows once it has one",
                a.name
            ));
        }
        said_waiting = waiting.is_some();
    }
}

async fn client(path: &Path) -> CliResult<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| error(format!("read {}: {}", path.display(), one_line(&e))))?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| error(format!("load {}: {}", path.display(), one_line(&e))))?;
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(330));
    kube::Client::try_from(config).map_err(|e| error(format!("build a client: {e}")))
}

/// Why the cluster's node network could not be read.
pub enum NetworkError {
    Api(kube::Error),
    Malformed(String),
}

/// The node network the cluster publishes, if it publishes one (an older
/// coordinator does not). One reader for `oi node join` (as the token) and
/// `oi node network` (as the node).
pub async fn published(client: &kube::Client) -> Result<Option<NodeNetwork>, NetworkError> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), node_network::NAMESPACE)
        .get_opt(node_network::CONFIG_MAP)
        .await
        .map_err(NetworkError::Api)?;
    match cm
        .as_ref()
        .and_then(|c| c.data.as_ref())
        .and_then(|d| d.get(node_network::KEY))
    {
        Some(text) => NodeNetwork::from_json(text)
            .map(Some)
            .map_err(NetworkError::Malformed),
        None => Ok(None),
    }
}

async fn read_network(client: &kube::Client) -> CliResult<NodeNetwork> {
    let name = format!("{}/{}", node_network::NAMESPACE, node_network::CONFIG_MAP);
    match published(client).await {
        Ok(Some(n)) => Ok(n),
        Ok(None) => Err(error(format!(
            "{name} has no {}: is the cluster's coordinator older than this oi?",
            node_network::KEY
        ))),
        Err(NetworkError::Api(e)) => Err(error(format!("read {name}: {}", one_line(&e)))),
        Err(NetworkError::Malformed(m)) => Err(error(m)),
    }
}

fn view(n: &Node) -> NodeView {
    let spec = n.spec.as_ref();
    let internal_ip = n
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
        .and_then(|a| a.address.parse().ok());
    NodeView {
        name: n.metadata.name.clone().unwrap_or_default(),
        pod_cidr: spec.and_then(|s| s.pod_cidr.clone()),
        internal_ip,
    }
}

/// What one pass did and could not do.
struct PassResult {
    failures: Vec<String>,
    waiting: Option<Waiting>,
}

/// One comparison and its changes: prints what changed; returns what
/// failed (the caller decides whether to say it again) and why the
/// conflist is not written yet.
async fn pass(
    ctx: &mut Ctx<'_>,
    a: &NodeNetworkArgs,
    network: &NodeNetwork,
    nodes: &[NodeView],
) -> PassResult {
    let path = a.cni_conf_dir.join(plan::CONFLIST);
    let observed_routes = match routes::ours().await {
        Ok(r) => r,
        Err(e) => {
            return PassResult {
                failures: vec![e],
                waiting: None,
            }
        }
    };
    let observed = Observed {
        conflist: std::fs::read_to_string(&path).ok(),
        routes: observed_routes,
    };
    let state = a.cni_state_dir.display().to_string();
    let (actions, waiting) = plan::plan(network, &a.name, nodes, &observed, &state);
    let mut failures = Vec::new();
    for action in actions {
        let r = match &action {
            Action::WriteConflist(text) => std::fs::create_dir_all(&a.cni_conf_dir)
                .map_err(|e| format!("create {}: {e}", a.cni_conf_dir.display()))
                .and_then(|_| {
                    oi_proto::fsutil::write_atomic(&path, text.as_bytes(), 0o644)
                        .map_err(|e| format!("write {}: {}", path.display(), one_line(e.as_ref())))
                })
                .map(|_| format!("wrote {}", path.display())),
            Action::RemoveConflist => std::fs::remove_file(&path)
                .map_err(|e| format!("remove {}: {e}", path.display()))
                .map(|_| format!("removed {} (cni: none)", path.display())),
            Action::Route { dst, via } => routes::replace(dst, *via)
                .await
                .map(|_| format!("route {dst} via {via}")),
            Action::Unroute { dst } => routes::delete(dst)
                .await
                .map(|_| format!("removed route {dst}")),
        };
        match r {
            Ok(done) => ctx.note(&done),
            Err(e) => failures.push(e),
        }
    }
    PassResult { failures, waiting }
}
