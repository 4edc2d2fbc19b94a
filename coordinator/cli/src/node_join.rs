//! `oi node join`: makes this machine a worker of a managed cluster, with
//! standard TLS bootstrap (run it there, as root).
//!
//! 1. Checks everything it can locally: the token's and the pin's format,
//!    the name, the kubelet binary, the container runtime.
//! 2. Discovery ([`crate::discovery`]): reads `cluster-info` without
//!    trusting the server, and trusts it once the token's signature and the
//!    CA pin check out.
//! 3. With the bootstrap token, over TLS verified against that CA: reads
//!    the cluster's `kubelet-config`, and refuses a node name in use.
//! 4. Only then writes: the CA bundle, the bootstrap kubeconfig (0600) and
//!    the KubeletConfiguration (the cluster's, with this node's paths,
//!    address, runtime and cgroup driver), then a kubelet systemd unit, or
//!    (`--no-systemd`) the command that runs the kubelet.
//!
//! The kubelet then does the rest: its client CSR (as the token's
//! bootstrap identity) is approved by the controller-manager, and its
//! serving CSR by the coordinator.
//!
//! Refusals and their exit codes: the CA does not match the pin (9), the
//! cluster does not hold the token - unknown, expired or revoked - (8), the
//! name is in use (4). Nothing is written on any refusal.

use super::discovery::{self, ClusterInfo, DiscoveryError};
use super::exit::{one_line, CliError, CliResult, Exit};
use super::join::{default_name, local_address_towards, systemctl};
use super::node_network::{self, NetworkError, NodeNetworkArgs};
use super::{pinned, Ctx};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use clap::Args;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::Api;
use kube::config::{
    AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
};
use oi_api_types::model::Cni;
use oi_api_types::node_network::{self as published, NodeNetwork};
use oi_api_types::token::TokenSecret;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const UNIT: &str = "oi-kubelet.service";
const UNIT_PATH: &str = "/etc/systemd/system/oi-kubelet.service";

#[derive(Args)]
pub struct NodeJoinArgs {
    /// The cluster's API, HOST:PORT, as in the line `oi cluster token
    /// create` printed.
    #[arg(long, value_name = "HOST:PORT")]
    pub endpoint: String,
    /// The node token, <id>.<secret>.
    #[arg(
        long,
        env = "OI_NODE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: String,
    /// The cluster CA: sha256:<hex> of its public key. The join is refused
    /// if the cluster presents another CA.
    #[arg(long, value_name = "sha256:HEX")]
    pub ca_cert_hash: String,
    /// The node's name. Default: the host name.
    #[arg(long)]
    pub name: Option<String>,
    /// The node's address. Default: the address this machine uses to reach
    /// the endpoint.
    #[arg(long, value_name = "IP")]
    pub node_ip: Option<IpAddr>,
    /// The kubelet binary. Default: `kubelet` on PATH.
    #[arg(long, value_name = "PATH")]
    pub kubelet: Option<PathBuf>,
    /// The container runtime's CRI socket.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/run/containerd/containerd.sock"
    )]
    pub cri_socket: PathBuf,
    /// The cgroup driver of the container runtime (cgroupfs or systemd).
    #[arg(long, value_name = "DRIVER", default_value = "cgroupfs", value_parser = ["cgroupfs", "systemd"])]
    pub cgroup_driver: String,
    /// Let the kubelet run on a cgroup v1 host (kubelets since 1.35 refuse
    /// to by default; cgroup v1 support is deprecated upstream).
    #[arg(long)]
    pub allow_cgroup_v1: bool,
    /// Where the node's configuration, bootstrap kubeconfig, CA bundle and
    /// certificates go.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/oneinfra/node")]
    pub dir: PathBuf,
    /// The kubelet's root directory (pod volumes).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/kubelet")]
    pub root_dir: PathBuf,
    /// A YAML or JSON object merged over the KubeletConfiguration (JSON
    /// merge patch, RFC 7386; `null` removes a field), e.g. for
    /// `oomScoreAdj` or `podLogsDir`.
    #[arg(long, value_name = "FILE")]
    pub kubelet_config_patch: Option<PathBuf>,
    /// An extra kubelet flag (repeatable), e.g. --kubelet-arg=--v=2.
    #[arg(long = "kubelet-arg", value_name = "FLAG", allow_hyphen_values = true)]
    pub kubelet_args: Vec<String>,
    /// Only write the configuration and print the command that runs the
    /// kubelet; do not touch systemd.
    #[arg(long)]
    pub no_systemd: bool,
    /// How long to wait for the started kubelet's TLS bootstrap (systemd).
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = super::wait::parse_duration)]
    pub timeout: Duration,
    /// The container runtime's CNI configuration directory: `oi node
    /// network` keeps the node's CNI configuration there when the cluster's
    /// CNI add-on is on.
    #[arg(long, value_name = "DIR", default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// The container runtime's CNI plugin directory: the join checks the
    /// plugins the bridge network needs are there (Debian's
    /// containernetworking-plugins puts them in /usr/lib/cni).
    #[arg(long, value_name = "DIR", default_value = "/opt/cni/bin")]
    pub cni_bin_dir: PathBuf,
    /// Where host-local keeps the pod addresses it handed out.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/cni/networks")]
    pub cni_state_dir: PathBuf,
    /// How long discovery waits for cluster-info to be signed for the
    /// token (a new token is signed within seconds; an unknown, expired or
    /// revoked one never is).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = super::wait::parse_duration)]
    pub discovery_timeout: Duration,
}

/// Shows everything but the token.
impl std::fmt::Debug for NodeJoinArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeJoinArgs")
            .field("endpoint", &self.endpoint)
            .field("ca_cert_hash", &self.ca_cert_hash)
            .field("name", &self.name)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn invalid(message: String) -> CliError {
    CliError::new(Exit::Invalid, message)
}

fn error(message: String) -> CliError {
    CliError::new(Exit::Error, message)
}

/// Node names are DNS-1123 subdomains.
fn validate_node_name(name: &str) -> CliResult {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if !ok {
        return Err(invalid(format!(
            "invalid node name {name:?}: use lowercase letters, digits, '-' and '.' (a DNS \
             subdomain)"
        )));
    }
    Ok(())
}

/// The files a join writes, under `--dir`.
struct Paths {
    ca: PathBuf,
    bootstrap: PathBuf,
    kubeconfig: PathBuf,
    config: PathBuf,
    cert_dir: PathBuf,
}

impl Paths {
    fn in_dir(dir: &Path) -> Self {
        Self {
            ca: dir.join("pki/ca.crt"),
            bootstrap: dir.join("bootstrap-kubelet.conf"),
            kubeconfig: dir.join("kubelet.conf"),
            config: dir.join("kubelet-config.json"),
            cert_dir: dir.join("pki"),
        }
    }
}

/// The bootstrap kubeconfig: the cluster (server, CA bundle) and the token.
pub fn bootstrap_kubeconfig(info: &ClusterInfo, token: &TokenSecret) -> Kubeconfig {
    Kubeconfig {
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        clusters: vec![NamedCluster {
            name: "cluster".into(),
            cluster: Some(Cluster {
                server: Some(info.server.clone()),
                certificate_authority_data: Some(B64.encode(&info.ca_bundle_pem)),
                ..Default::default()
            }),
            other: Default::default(),
        }],
        auth_infos: vec![NamedAuthInfo {
            name: "kubelet-bootstrap".into(),
            auth_info: Some(AuthInfo {
                token: Some(token.expose().into()),
                ..Default::default()
            }),
            other: Default::default(),
        }],
        contexts: vec![NamedContext {
            name: "kubelet-bootstrap@cluster".into(),
            context: Some(Context {
                cluster: "cluster".into(),
                user: Some("kubelet-bootstrap".into()),
                ..Default::default()
            }),
            other: Default::default(),
        }],
        current_context: Some("kubelet-bootstrap@cluster".into()),
        ..Default::default()
    }
}

/// This node's KubeletConfiguration: the cluster's (`kube-system/
/// kubelet-config`), with what belongs to this machine set here. Fields
/// the cluster sets and this does not touch are kept as they are.
pub fn kubelet_configuration(
    cluster: &str,
    node_ip: IpAddr,
    ca_file: &Path,
    cri_socket: &Path,
    cgroup_driver: &str,
    allow_cgroup_v1: bool,
) -> CliResult<serde_json::Value> {
    let mut v: serde_json::Value = yaml_serde::from_str(cluster)
        .map_err(|e| error(format!("the cluster's kubelet-config does not parse: {e}")))?;
    let obj = v
        .as_object_mut()
        .filter(|o| o.get("kind").and_then(|k| k.as_str()) == Some("KubeletConfiguration"))
        .ok_or_else(|| {
            error("the cluster's kubelet-config is not a KubeletConfiguration".into())
        })?;
    obj.insert("address".into(), node_ip.to_string().into());
    obj.insert("cgroupDriver".into(), cgroup_driver.into());
    obj.insert(
        "containerRuntimeEndpoint".into(),
        format!("unix://{}", cri_socket.display()).into(),
    );
    let auth = obj
        .entry("authentication")
        .or_insert_with(|| serde_json::json!({}));
    auth["x509"] = serde_json::json!({ "clientCAFile": ca_file.display().to_string() });
    if allow_cgroup_v1 {
        obj.insert("failCgroupV1".into(), false.into());
    }
    Ok(v)
}

/// RFC 7386 JSON merge patch of `target` with `patch`.
pub fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = serde_json::json!({});
    }
    let obj = target.as_object_mut().expect("made an object above");
    for (k, v) in fields {
        if v.is_null() {
            obj.remove(k);
        } else {
            merge_patch(obj.entry(k.clone()).or_insert(serde_json::Value::Null), v);
        }
    }
}

/// The kubelet's command line.
fn kubelet_command(
    kubelet: &Path,
    p: &Paths,
    root_dir: &Path,
    name: &str,
    ip: IpAddr,
    extra: &[String],
) -> Vec<String> {
    let mut cmd = vec![
        kubelet.display().to_string(),
        format!("--config={}", p.config.display()),
        format!("--bootstrap-kubeconfig={}", p.bootstrap.display()),
        format!("--kubeconfig={}", p.kubeconfig.display()),
        format!("--cert-dir={}", p.cert_dir.display()),
        format!("--root-dir={}", root_dir.display()),
        format!("--hostname-override={name}"),
        format!("--node-ip={ip}"),
    ];
    cmd.extend(extra.iter().cloned());
    cmd
}

/// A systemd unit running `cmd`.
fn unit(description: &str, cmd: &[String]) -> String {
    let exec = cmd
        .iter()
        .map(|a| {
            if a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_=./:,@".contains(&b))
            {
                a.clone()
            } else {
                format!("\"{}\"", a.replace('\\', "\\\\").replace('"', "\\\""))
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "# Written by `oi node join`.\n[Unit]\nDescription={description}\n\
         After=network-online.target containerd.service\nWants=network-online.target\n\n\
         [Service]\nExecStart={exec}\nRestart=always\nRestartSec=5\n\n[Install]\n\
         WantedBy=multi-user.target\n"
    )
}

/// A client of the cluster without server verification: for discovery
/// only, whose result is trusted only after its checks.
async fn insecure_client(server: &str) -> CliResult<kube::Client> {
    let uri: tonic::transport::Uri = server
        .parse()
        .map_err(|e| invalid(format!("--endpoint: {e}")))?;
    let mut config = kube::Config::new(uri);
    config.accept_invalid_certs = true;
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(15));
    kube::Client::try_from(config).map_err(|e| error(format!("build a client: {e}")))
}

async fn client_from(kc: Kubeconfig) -> CliResult<kube::Client> {
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| error(format!("load the bootstrap kubeconfig: {e}")))?;
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(15));
    kube::Client::try_from(config).map_err(|e| error(format!("build a client: {e}")))
}

/// An API error as the exit code and message it stands for.
fn api_error(what: &str, endpoint: &str, e: kube::Error) -> CliError {
    match &e {
        kube::Error::Api(s) if s.code == 401 => CliError::new(
            Exit::NotAuthorized,
            format!(
                "{what}: the cluster refused the token (unknown, expired or revoked): create one \
                 with `oi cluster token create CLUSTER`; nothing was written"
            ),
        ),
        kube::Error::Api(s) if s.code == 403 => CliError::new(
            Exit::NotAuthorized,
            format!(
                "{what}: the token may not do this ({}); nothing was written",
                s.message
            ),
        ),
        _ => CliError::new(
            Exit::Unavailable,
            format!(
                "{what} at {endpoint}: {}; nothing was written",
                one_line(&e)
            ),
        ),
    }
}

pub async fn join(ctx: &mut Ctx<'_>, a: NodeJoinArgs) -> CliResult {
    // 1. Local checks, before anything is sent.
    let token = TokenSecret::parse(&a.token).map_err(|e| invalid(e.to_string()))?;
    let pin = pinned::parse_pin(&a.ca_cert_hash)?;
    if pinned::split_host_port(&a.endpoint).is_none() {
        return Err(invalid(format!(
            "--endpoint {:?} is not HOST:PORT, e.g. 192.0.2.1:30000",
            a.endpoint
        )));
    }
    let name = match &a.name {
        Some(n) => n.clone(),
        None => default_name()?,
    };
    validate_node_name(&name)?;
    let patch = match &a.kubelet_config_patch {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                invalid(format!("read --kubelet-config-patch {}: {e}", p.display()))
            })?;
            let v: serde_json::Value = yaml_serde::from_str(&text).map_err(|e| {
                invalid(format!(
                    "--kubelet-config-patch {} does not parse: {e}",
                    p.display()
                ))
            })?;
            if !v.is_object() {
                return Err(invalid(format!(
                    "--kubelet-config-patch {} is not an object of KubeletConfiguration fields",
                    p.display()
                )));
            }
            Some(v)
        }
        None => None,
    };
    let kubelet = match &a.kubelet {
        Some(p) => p.clone(),
        None => find_on_path("kubelet").ok_or_else(|| {
            error("no kubelet on PATH: install one, or pass --kubelet PATH".into())
        })?,
    };
    if !is_executable(&kubelet) {
        return Err(error(format!(
            "{} is not an executable file: pass --kubelet PATH",
            kubelet.display()
        )));
    }
    let paths = Paths::in_dir(&a.dir);
    if paths.bootstrap.exists() || paths.kubeconfig.exists() {
        return Err(CliError::new(
            Exit::AlreadyExists,
            format!(
                "{} holds a node's configuration already: this machine has joined. To join it \
                 again, stop its kubelet, remove {} and run this again",
                a.dir.display(),
                a.dir.display()
            ),
        ));
    }
    let cri = oi_cri_client::CriClient::new(&a.cri_socket).map_err(|e| error(e.to_string()))?;
    let version = cri
        .check()
        .await
        .map_err(|e| error(format!("{e} (or pass --cri-socket PATH)")))?;
    ctx.note(&format!(
        "container runtime: {} {} at {}",
        version.runtime_name,
        version.runtime_version,
        a.cri_socket.display()
    ));
    let node_ip = match a.node_ip {
        Some(ip) => ip,
        None => local_address_towards(&a.endpoint, ("--endpoint", "--node-ip")).await?,
    };

    // 2. Discovery.
    let server = format!("https://{}", a.endpoint);
    let insecure = insecure_client(&server).await?;
    let exposed = token.expose();
    let (id, secret) = exposed.split_once('.').unwrap_or_default();
    // A token created a moment ago is signed within seconds (the
    // coordinator writes its Secret, then the controller-manager signs):
    // until the deadline, no signature means "not yet" (as kubeadm's
    // discovery retries).
    let deadline = tokio::time::Instant::now() + a.discovery_timeout;
    let mut waited = false;
    let info = loop {
        let info_cm = Api::<ConfigMap>::namespaced(insecure.clone(), "kube-public")
            .get("cluster-info")
            .await
            .map_err(|e| api_error("read cluster-info", &a.endpoint, e))?;
        match discovery::verify(&info_cm.data.unwrap_or_default(), id, secret, &pin) {
            Ok(info) => break info,
            Err(DiscoveryError::UnknownToken) if tokio::time::Instant::now() < deadline => {
                if !waited {
                    ctx.note(&format!(
                        "discovery: cluster-info is not signed for token {id} yet; waiting up to {}s",
                        a.discovery_timeout.as_secs()
                    ));
                    waited = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                let exit = match e {
                    DiscoveryError::PinMismatch { .. } => Exit::Untrusted,
                    DiscoveryError::UnknownToken | DiscoveryError::BadSignature => {
                        Exit::NotAuthorized
                    }
                    DiscoveryError::Malformed(_) => Exit::Error,
                };
                return Err(CliError::new(exit, e.to_string()));
            }
        }
    };
    ctx.note(&format!(
        "discovery: cluster-info signed for token {id}, CA pinned; API at {}",
        info.server
    ));

    // 3. As the token's bootstrap identity, over verified TLS.
    let kc = bootstrap_kubeconfig(&info, &token);
    let client = client_from(kc.clone()).await?;
    let kubelet_cm = Api::<ConfigMap>::namespaced(client.clone(), "kube-system")
        .get("kubelet-config")
        .await
        .map_err(|e| api_error("read kube-system/kubelet-config", &info.server, e))?;
    let cluster_config = kubelet_cm
        .data
        .as_ref()
        .and_then(|d| d.get("kubelet"))
        .ok_or_else(|| error("the cluster's kubelet-config has no `kubelet` key".into()))?;
    let network = read_network(&client, &info.server).await?;
    if network.cni == Cni::Bridge {
        check_cni_plugins(&a.cni_bin_dir)?;
    }
    let existing = Api::<Node>::all(client)
        .get_opt(&name)
        .await
        .map_err(|e| api_error("look up the node name", &info.server, e))?;
    if existing.is_some() {
        return Err(CliError::new(
            Exit::AlreadyExists,
            format!(
                "the cluster has a node named {name:?} already: join with another --name, or \
                 remove it first with `oi node remove CLUSTER {name}`; nothing was written"
            ),
        ));
    }
    let mut config = kubelet_configuration(
        cluster_config,
        node_ip,
        &paths.ca,
        &a.cri_socket,
        &a.cgroup_driver,
        a.allow_cgroup_v1,
    )?;
    if let Some(p) = &patch {
        merge_patch(&mut config, p);
    }

    // 4. Files, then the kubelet.
    let write = |path: &Path, text: &[u8], mode: u32| {
        oi_proto::fsutil::write_atomic(path, text, mode).map_err(|e| {
            error(format!(
                "write {}: {}",
                path.display(),
                one_line(e.as_ref())
            ))
        })
    };
    for dir in [&a.dir, &paths.cert_dir] {
        oi_proto::fsutil::create_private_dir(dir).map_err(|e| {
            error(format!(
                "create {}: {}",
                dir.display(),
                one_line(e.as_ref())
            ))
        })?;
    }
    write(&paths.ca, info.ca_bundle_pem.as_bytes(), 0o644)?;
    let config_text = serde_json::to_string_pretty(&config)
        .map_err(|e| error(format!("encode the kubelet configuration: {e}")))?;
    write(&paths.config, format!("{config_text}\n").as_bytes(), 0o644)?;
    let kc_text = serde_json::to_string_pretty(&kc)
        .map_err(|e| error(format!("encode the bootstrap kubeconfig: {e}")))?;
    write(&paths.bootstrap, format!("{kc_text}\n").as_bytes(), 0o600)?;
    let cmd = kubelet_command(
        &kubelet,
        &paths,
        &a.root_dir,
        &name,
        node_ip,
        &a.kubelet_args,
    );
    ctx.out(&format!(
        "joining as node {name} ({node_ip}); wrote {}, {} and {}\n",
        paths.ca.display(),
        paths.config.display(),
        paths.bootstrap.display()
    ))?;
    let oi = std::env::current_exe().map_err(|e| {
        error(format!(
            "find the oi binary (for the node network service): {e}"
        ))
    })?;
    let net_cmd = NodeNetworkArgs {
        kubeconfig: paths.kubeconfig.clone(),
        name: name.clone(),
        cni_conf_dir: a.cni_conf_dir.clone(),
        cni_state_dir: a.cni_state_dir.clone(),
        once: false,
    }
    .command(&oi);
    if a.no_systemd {
        return ctx.out(&format!(
            "start the kubelet (it bootstraps its certificates itself) with:\n  {}\n\
             and the node network (CNI {}: it waits for the kubelet's credential) with:\n  {}\n\
             Once the kubelet has written {}, remove {}: the token is not needed on disk any more.\n",
            cmd.join(" "),
            network.cni.as_str(),
            net_cmd.join(" "),
            paths.kubeconfig.display(),
            paths.bootstrap.display()
        ));
    }
    write(
        Path::new(UNIT_PATH),
        unit("kubelet (oneinfra worker)", &cmd).as_bytes(),
        0o644,
    )?;
    write(
        Path::new(node_network::UNIT_PATH),
        unit(
            "oneinfra node network (CNI configuration, routes to other nodes)",
            &net_cmd,
        )
        .as_bytes(),
        0o644,
    )?;
    systemctl(&["daemon-reload"]).await?;
    systemctl(&["enable", "--now", UNIT]).await?;
    systemctl(&["enable", "--now", node_network::UNIT]).await?;
    ctx.out(&format!("started {UNIT}; waiting for its TLS bootstrap\n"))?;
    // As kubeadm: once the kubelet holds its own credential, the token
    // leaves the disk.
    let deadline = tokio::time::Instant::now() + a.timeout;
    while !paths.kubeconfig.exists() {
        if tokio::time::Instant::now() > deadline {
            return Err(CliError::new(
                Exit::TimedOut,
                format!(
                    "the kubelet did not bootstrap within {}s: see `journalctl -u {UNIT}`",
                    a.timeout.as_secs()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    std::fs::remove_file(&paths.bootstrap)
        .map_err(|e| error(format!("remove {}: {e}", paths.bootstrap.display())))?;
    ctx.out(&format!(
        "the kubelet bootstrapped its client certificate ({}); removed the bootstrap kubeconfig. \
         The node appears in `oi node list CLUSTER`\n",
        paths.kubeconfig.display()
    ))
}

/// The cluster's node network (whether its CNI add-on is on). A cluster
/// that does not publish one (an older coordinator) has none.
async fn read_network(client: &kube::Client, server: &str) -> CliResult<NodeNetwork> {
    match node_network::published(client).await {
        Ok(Some(n)) => Ok(n),
        Ok(None) => Ok(NodeNetwork {
            cni: Cni::None,
            cluster_cidr: String::new(),
            service_cidr: String::new(),
        }),
        Err(NetworkError::Api(e)) => Err(api_error(
            &format!("read kube-system/{}", published::CONFIG_MAP),
            server,
            e,
        )),
        Err(NetworkError::Malformed(m)) => Err(error(m)),
    }
}

/// The CNI plugins the bridge network runs (the runtime itself runs
/// `loopback`).
const CNI_PLUGINS: [&str; 4] = ["bridge", "host-local", "portmap", "loopback"];

fn check_cni_plugins(dir: &Path) -> CliResult {
    let missing: Vec<&str> = CNI_PLUGINS
        .into_iter()
        .filter(|p| !is_executable(&dir.join(p)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(error(format!(
        "the cluster's CNI add-on (bridge) needs the CNI plugins {} in {}, which it lacks: \
         install them (Debian: containernetworking-plugins, in /usr/lib/cni) where your \
         container runtime's CNI bin_dir points, and pass that directory as --cni-bin-dir; \
         nothing was written",
        missing.join(", "),
        dir.display()
    )))
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| is_executable(p))
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubelet_config_is_the_clusters_with_this_nodes_fields() {
        let cluster = r#"{"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "authentication": {"anonymous": {"enabled": false}, "webhook": {"enabled": true},
            "x509": {"clientCAFile": "/etc/kubernetes/pki/ca.crt"}}, "clusterDNS": ["10.96.0.10"],
            "serverTLSBootstrap": true, "someFutureField": 7}"#;
        let v = kubelet_configuration(
            cluster,
            "10.213.0.21".parse().unwrap(),
            Path::new("/var/lib/oneinfra/node/pki/ca.crt"),
            Path::new("/run/containerd/containerd.sock"),
            "cgroupfs",
            true,
        )
        .unwrap();
        assert_eq!(v["address"], "10.213.0.21");
        assert_eq!(
            v["authentication"]["x509"]["clientCAFile"],
            "/var/lib/oneinfra/node/pki/ca.crt"
        );
        assert_eq!(v["authentication"]["webhook"]["enabled"], true);
        assert_eq!(
            v["containerRuntimeEndpoint"],
            "unix:///run/containerd/containerd.sock"
        );
        assert_eq!(v["failCgroupV1"], false);
        assert_eq!(v["clusterDNS"][0], "10.96.0.10");
        assert_eq!(v["someFutureField"], 7);
        let not = kubelet_configuration(
            r#"{"kind": "Pod"}"#,
            "10.0.0.1".parse().unwrap(),
            Path::new("/c"),
            Path::new("/s"),
            "systemd",
            false,
        );
        assert!(not.is_err());
    }

    #[test]
    fn the_bootstrap_kubeconfig_is_what_kube_reads() {
        let token = TokenSecret::parse("abcdef.0123456789abcdef").unwrap();
        let info = ClusterInfo {
            server: "https://192.0.2.1:30000".into(),
            ca_bundle_pem: "CA".into(),
        };
        let text = serde_json::to_string(&bootstrap_kubeconfig(&info, &token)).unwrap();
        let kc = Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(
            kc.current_context.as_deref(),
            Some("kubelet-bootstrap@cluster")
        );
        assert_eq!(
            kc.clusters[0].cluster.as_ref().unwrap().server.as_deref(),
            Some("https://192.0.2.1:30000")
        );
        assert!(text.contains("abcdef.0123456789abcdef"));
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut v = serde_json::json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]});
        merge_patch(
            &mut v,
            &serde_json::json!({"a": null, "b": {"c": 5}, "e": [2], "f": "x"}),
        );
        assert_eq!(
            v,
            serde_json::json!({"b": {"c": 5, "d": 3}, "e": [2], "f": "x"})
        );
    }

    #[test]
    fn unit_and_names() {
        let u = unit(
            "kubelet",
            &["/usr/bin/kubelet".into(), "--node-labels=a b".into()],
        );
        assert!(
            u.contains("ExecStart=/usr/bin/kubelet \"--node-labels=a b\"\n"),
            "{u}"
        );
        validate_node_name("w1.example.com").unwrap();
        assert_eq!(validate_node_name("W1").unwrap_err().exit, Exit::Invalid);
        assert_eq!(validate_node_name("-a").unwrap_err().exit, Exit::Invalid);
    }
}
