//! `oi`, the oneinfra command line, as a library: [`run_with`] parses the
//! arguments, calls the coordinator's admin API and returns the exit code,
//! writing to the given streams. The `oi` binary is a thin wrapper
//! ([`main`]); tests call [`run_with`] in-process.
//!
//! Exit codes (also in `oi --help`):
//! 0 ok, 1 other error, 2 usage error, 3 not found, 4 already exists,
//! 5 invalid input, 6 coordinator unreachable or unavailable (or too many
//! join attempts), 7 timed out waiting (`--wait`, `hypervisor join`), 8 not
//! authorized (admin certificate, or a refused join token), 9 the
//! coordinator's CA does not match `--ca-cert-hash`. gRPC codes map to them
//! in one place, [`exit::Exit::from_code`]. Errors print one line,
//! `error: <message>`, to stderr.

pub mod apply;
pub mod cluster;
pub mod conn;
pub mod discovery;
pub mod exit;
pub mod fleet;
pub mod hypervisor;
pub mod join;
pub mod node;
pub mod node_join;
pub mod node_network;
pub mod node_token;
pub mod output;
pub mod pinned;
pub mod token;
pub mod wait;

use clap::{Args, Parser, Subcommand};
use exit::{CliError, CliResult, Exit, EXIT_CODES_HELP};
use oi_api_types::model::{DEFAULT_POD_CIDR, DEFAULT_SERVICE_CIDR};
use output::OutputArg;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "oi",
    version,
    about = "oneinfra command line: create and manage Kubernetes control planes",
    after_help = "See `oi --help` for the exit codes.",
    after_long_help = EXIT_CODES_HELP
)]
pub struct Cli {
    /// Admin credentials written by the coordinator (admin.conf). Without
    /// it: ~/.config/oneinfra/admin.conf, then
    /// /var/lib/oneinfra/coordinator/admin.conf.
    #[arg(long, global = true, env = "OI_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Admin API address (https://HOST:PORT); overrides the config's.
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint: Option<String>,
    /// How often --wait looks, in milliseconds.
    #[arg(
        long,
        global = true,
        hide = true,
        env = "OI_POLL_INTERVAL_MS",
        default_value_t = 500
    )]
    pub poll_interval_ms: u64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create, inspect and delete clusters.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Create or update clusters from a YAML or JSON file of cluster specs.
    Apply {
        /// The file (`-` for standard input). YAML documents separated by
        /// `---` are applied in order.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: String,
    },
    /// Join, inspect, cordon, drain and remove hypervisors.
    #[command(subcommand)]
    Hypervisor(HypervisorCmd),
    /// Worker nodes: join this machine to a cluster, list and remove nodes.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Inspect components (the pods of the control planes).
    #[command(subcommand)]
    Component(ComponentCmd),
    /// Print version information.
    Version {
        /// Also list the Kubernetes versions the coordinator can run.
        #[arg(long)]
        kubernetes: bool,
        #[command(flatten)]
        output: OutputArg,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Create a cluster.
    Create(CreateArgs),
    /// List clusters.
    List {
        #[command(flatten)]
        output: OutputArg,
    },
    /// Show one cluster: spec, status, conditions and components.
    Get {
        name: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Delete a cluster and every component of it.
    Delete {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Change the number of control-plane replicas: etcd members join or
    /// leave one at a time (the same as `oi apply` with another `replicas`).
    Scale {
        name: String,
        /// The new count (1-7; odd numbers keep etcd quorum).
        #[arg(long)]
        replicas: u32,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Node join tokens of a cluster: workers join with them (standard
    /// Kubernetes bootstrap tokens, also usable with `kubeadm join`).
    #[command(subcommand)]
    Token(NodeTokenCmd),
    /// Print an admin kubeconfig for the cluster (a fresh certificate).
    Kubeconfig {
        name: String,
        /// Write it to FILE (mode 0600) instead of standard output.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Cluster name (a DNS-1123 label, e.g. prod-1).
    pub name: String,
    /// Kubernetes version (`oi version --kubernetes` lists them); default:
    /// the coordinator's default, its newest.
    #[arg(long, value_name = "VERSION")]
    pub kubernetes_version: Option<String>,
    /// Control-plane replicas (odd numbers keep etcd quorum).
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,
    #[arg(long, value_name = "CIDR", default_value = DEFAULT_SERVICE_CIDR)]
    pub service_cidr: String,
    #[arg(long, value_name = "CIDR", default_value = DEFAULT_POD_CIDR)]
    pub pod_cidr: String,
    /// Extra name or address on the API server certificate (repeatable).
    #[arg(long = "api-server-san", value_name = "SAN")]
    pub api_server_sans: Vec<String>,
    /// Leave kube-proxy out (the add-on is on by default).
    #[arg(long)]
    pub no_kube_proxy: bool,
    /// Leave cluster DNS (CoreDNS) out (the add-on is on by default).
    #[arg(long)]
    pub no_dns: bool,
    /// Pod networking: bridge (routed across workers by `oi node network`)
    /// or none (bring your own CNI).
    #[arg(long, value_name = "CNI", default_value = "bridge", value_parser = ["bridge", "none"])]
    pub cni: String,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Args, Debug, Clone, Copy)]
pub struct WaitArgs {
    /// Wait until done, printing progress.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits (e.g. 90s, 10m, 1h).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = wait::parse_duration)]
    pub timeout: Duration,
}

#[derive(Subcommand, Debug)]
pub enum HypervisorCmd {
    /// List hypervisors with their capacity and what is placed on them.
    List {
        #[command(flatten)]
        output: OutputArg,
    },
    /// Make this machine a hypervisor (run it there, as root): checks the
    /// container runtime, gets a certificate with a join token, writes the
    /// agent's configuration and starts oi-agent.
    Join(Box<join::JoinArgs>),
    /// Join tokens: create one for each machine (or batch) to join.
    #[command(subcommand)]
    Token(TokenCmd),
    /// No new placements on the hypervisor; what runs there stays.
    Cordon { name: String },
    /// Allow placements on the hypervisor again.
    Uncordon { name: String },
    /// Cordon the hypervisor and move every cluster's pieces off it
    /// (refused, with nothing moved, if a cluster has nowhere else to go).
    Drain { name: String },
    /// Drain the hypervisor (clusters with nowhere to go become pending),
    /// revoke its certificates, disconnect its agent and forget it. Returns
    /// at once; while replicas move off (one etcd member at a time) the
    /// coordinator finishes it in the background: --wait follows it.
    Remove {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create a join token and print the command that joins a machine.
    Create {
        /// The role of the hypervisors that join with it.
        #[arg(long, value_parser = parse_role)]
        role: oi_proto::model::Role,
        /// How long it is valid (1s to 720h).
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = wait::parse_duration)]
        ttl: Duration,
        /// How many machines may join with it.
        #[arg(long, value_name = "N", default_value_t = 1)]
        uses: u32,
        #[command(flatten)]
        output: OutputArg,
    },
    /// List join tokens (never their secrets).
    List {
        #[command(flatten)]
        output: OutputArg,
    },
    /// Revoke a join token: no more joins with it.
    Revoke {
        /// The token's id (the part before the '.').
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// Make this machine a worker of a cluster (run it there, as root):
    /// discovers the cluster with a node token (pinning its CA), writes the
    /// kubelet's bootstrap kubeconfig and configuration, and starts the
    /// kubelet, which bootstraps its certificates.
    Join(Box<node_join::NodeJoinArgs>),
    /// List a cluster's nodes, as its API reports them.
    List {
        cluster: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Remove a node: revoke the node token it joined with, then delete it.
    /// Stop its kubelet on the machine first, or it registers again.
    Remove { cluster: String, name: String },
    /// Keep this worker's pod network as its cluster says (run on the
    /// worker, as root; `oi node join` starts it as a service): the bridge
    /// CNI configuration over the node's podCIDR, routes to the other
    /// nodes' podCIDRs.
    Network(node_network::NodeNetworkArgs),
}

#[derive(Subcommand, Debug)]
pub enum NodeTokenCmd {
    /// Create a node token and print the commands that join a worker.
    Create {
        cluster: String,
        /// How long it is valid (1m to 720h).
        #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = wait::parse_duration)]
        ttl: Duration,
        /// What it is for (shown in `list`, and in the cluster's Secret).
        #[arg(long, value_name = "TEXT", default_value = "")]
        description: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// List node tokens, of one cluster or of all (never their secrets).
    List {
        cluster: Option<String>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Revoke a node token: it leaves the cluster, no new node joins with it.
    Revoke {
        cluster: String,
        /// The token's id (the part before the '.').
        id: String,
    },
}

fn parse_role(s: &str) -> Result<oi_proto::model::Role, String> {
    s.parse()
}

#[derive(Subcommand, Debug)]
pub enum ComponentCmd {
    /// List components, of one cluster or of all.
    List {
        #[arg(long, value_name = "NAME")]
        cluster: Option<String>,
        #[command(flatten)]
        output: OutputArg,
    },
}

/// The streams a run reads and writes.
pub struct Io<'a> {
    pub stdin: &'a mut (dyn Read + Send),
    pub stdout: &'a mut (dyn Write + Send),
    pub stderr: &'a mut (dyn Write + Send),
}

/// What commands need: the streams and the connection settings.
pub struct Ctx<'a> {
    pub io: Io<'a>,
    pub config: Option<PathBuf>,
    pub endpoint: Option<String>,
    pub poll: Duration,
}

impl Ctx<'_> {
    /// Finds the admin credentials and connects.
    pub async fn connect(&self) -> CliResult<conn::Conn> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let xdg = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from);
        let candidates = conn::candidates(self.config.as_deref(), home.as_deref(), xdg.as_deref());
        let path = conn::resolve(&candidates, self.config.is_some(), |p| p.exists())?;
        let conf = conn::load(&path)?;
        conn::Conn::open(&conf, self.endpoint.as_deref()).await
    }

    /// Writes `text` to standard output.
    pub fn out(&mut self, text: &str) -> CliResult {
        self.io
            .stdout
            .write_all(text.as_bytes())
            .and_then(|_| self.io.stdout.flush())
            .map_err(|e| CliError::new(Exit::Error, format!("write output: {e}")))
    }

    /// Writes a note (not an error) to standard error.
    pub fn note(&mut self, text: &str) {
        let _ = writeln!(self.io.stderr, "{text}");
    }
}

/// Runs `oi` with `args` (the first is the program name) and returns the
/// exit code.
pub async fn run_with<I, T>(args: I, io: Io<'_>) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let text = e.render().to_string();
            let stream: &mut dyn Write = if e.use_stderr() { io.stderr } else { io.stdout };
            let _ = stream.write_all(text.as_bytes());
            let _ = stream.flush();
            return if e.exit_code() == 0 {
                Exit::Ok.code()
            } else {
                Exit::Usage.code()
            };
        }
    };
    let mut ctx = Ctx {
        io,
        config: cli.config,
        endpoint: cli.endpoint,
        poll: Duration::from_millis(cli.poll_interval_ms.max(1)),
    };
    match dispatch(cli.command, &mut ctx).await {
        Ok(()) => Exit::Ok.code(),
        Err(e) => {
            let line = e.message.replace('\n', " ");
            let _ = writeln!(ctx.io.stderr, "error: {line}");
            let _ = ctx.io.stderr.flush();
            e.exit.code()
        }
    }
}

async fn dispatch(command: Command, ctx: &mut Ctx<'_>) -> CliResult {
    match command {
        Command::Cluster(ClusterCmd::Create(args)) => cluster::create(ctx, args).await,
        Command::Cluster(ClusterCmd::List { output }) => cluster::list(ctx, output.format).await,
        Command::Cluster(ClusterCmd::Get { name, output }) => {
            cluster::get(ctx, &name, output.format).await
        }
        Command::Cluster(ClusterCmd::Delete { name, wait }) => {
            cluster::delete(ctx, &name, wait).await
        }
        Command::Cluster(ClusterCmd::Scale {
            name,
            replicas,
            wait,
        }) => cluster::scale(ctx, &name, replicas, wait).await,
        Command::Cluster(ClusterCmd::Kubeconfig { name, file }) => {
            cluster::kubeconfig(ctx, &name, file.as_deref()).await
        }
        Command::Cluster(ClusterCmd::Token(NodeTokenCmd::Create {
            cluster,
            ttl,
            description,
            output,
        })) => node_token::create(ctx, &cluster, ttl, &description, output.format).await,
        Command::Cluster(ClusterCmd::Token(NodeTokenCmd::List { cluster, output })) => {
            node_token::list(ctx, cluster.as_deref(), output.format).await
        }
        Command::Cluster(ClusterCmd::Token(NodeTokenCmd::Revoke { cluster, id })) => {
            node_token::revoke(ctx, &cluster, &id).await
        }
        Command::Apply { file } => cluster::apply(ctx, &file).await,
        Command::Hypervisor(HypervisorCmd::List { output }) => {
            fleet::hypervisors(ctx, output.format).await
        }
        Command::Hypervisor(HypervisorCmd::Join(args)) => join::join(ctx, *args).await,
        Command::Hypervisor(HypervisorCmd::Token(TokenCmd::Create {
            role,
            ttl,
            uses,
            output,
        })) => token::create(ctx, role, ttl, uses, output.format).await,
        Command::Hypervisor(HypervisorCmd::Token(TokenCmd::List { output })) => {
            token::list(ctx, output.format).await
        }
        Command::Hypervisor(HypervisorCmd::Token(TokenCmd::Revoke { id })) => {
            token::revoke(ctx, &id).await
        }
        Command::Hypervisor(HypervisorCmd::Cordon { name }) => {
            hypervisor::cordon(ctx, &name, true).await
        }
        Command::Hypervisor(HypervisorCmd::Uncordon { name }) => {
            hypervisor::cordon(ctx, &name, false).await
        }
        Command::Hypervisor(HypervisorCmd::Drain { name }) => hypervisor::drain(ctx, &name).await,
        Command::Hypervisor(HypervisorCmd::Remove { name, wait }) => {
            hypervisor::remove(ctx, &name, wait).await
        }
        Command::Node(NodeCmd::Join(args)) => node_join::join(ctx, *args).await,
        Command::Node(NodeCmd::List { cluster, output }) => {
            node::list(ctx, &cluster, output.format).await
        }
        Command::Node(NodeCmd::Network(args)) => node_network::run(ctx, args).await,
        Command::Node(NodeCmd::Remove { cluster, name }) => {
            node::remove(ctx, &cluster, &name).await
        }
        Command::Component(ComponentCmd::List { cluster, output }) => {
            fleet::components(ctx, cluster.as_deref(), output.format).await
        }
        Command::Version { kubernetes, output } => {
            fleet::version(ctx, kubernetes, output.format).await
        }
    }
}

/// The `oi` binary: runs on the process's arguments and streams.
pub fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start async runtime: {e}");
            return std::process::ExitCode::from(Exit::Error.code());
        }
    };
    let (mut stdin, mut stdout, mut stderr) =
        (std::io::stdin(), std::io::stdout(), std::io::stderr());
    let code = runtime.block_on(run_with(
        std::env::args_os(),
        Io {
            stdin: &mut stdin,
            stdout: &mut stdout,
            stderr: &mut stderr,
        },
    ));
    std::process::ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_node_network_command_join_prints_is_one_oi_parses() {
        use clap::Parser;
        let a = node_network::NodeNetworkArgs {
            kubeconfig: "/var/lib/oneinfra/node/kubelet.conf".into(),
            name: "w1".into(),
            cni_conf_dir: "/etc/cni/net.d".into(),
            cni_state_dir: "/var/lib/cni/networks".into(),
            once: false,
        };
        let cmd = a.command(std::path::Path::new("/usr/bin/oi"));
        let parsed = Cli::try_parse_from(&cmd).unwrap();
        let Command::Node(NodeCmd::Network(b)) = parsed.command else {
            panic!("{cmd:?} is not `oi node network`")
        };
        assert_eq!(
            (
                b.kubeconfig,
                b.name,
                b.cni_conf_dir,
                b.cni_state_dir,
                b.once
            ),
            (a.kubeconfig, a.name, a.cni_conf_dir, a.cni_state_dir, false)
        );
    }

    #[test]
    fn help_documents_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(
            help.contains("Exit codes:") && help.contains("7  timed out"),
            "{help}"
        );
        assert!(!help.contains("poll-interval"));
    }
}
