//! `oi hypervisor join`: make this machine a hypervisor in one command.
//!
//! 1. Checks what can be checked locally: the arguments, that it has not
//!    joined already, systemd's `oi-agent.service` (unless `--no-systemd`),
//!    the CRI socket (unless `--skip-cri-check`).
//! 2. Generates the agent's private key here; it never leaves the machine.
//! 3. Connects to the coordinator's API over TLS checked against the pinned
//!    CA hash ([`super::pinned`]), and sends the token and a CSR.
//! 4. Writes `ca.pem`, `agent.pem`, `agent.key` (0600) and, last,
//!    `config.toml` into the config directory (0700): the unit starts only
//!    once `config.toml` exists.
//! 5. Enables and starts `oi-agent.service` and waits until the agent's
//!    `link.json` says it is connected with the new certificate; or, with
//!    `--no-systemd`, prints the command that runs the agent.

use super::exit::{one_line, CliError, CliResult, Exit};
use super::pinned;
use super::Ctx;
use clap::Args;
use oi_agent_files::identity::{self, IdentityFiles};
use oi_agent_files::link_file::{self, LinkFile, Progress};
use oi_api_types::cert::{ca_cert_hash, validate_hypervisor_name};
use oi_api_types::token::TokenSecret;
use oi_proto::api as pb;
use oi_proto::model::{PortRange, Role};
use serde::Serialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the packaged unit reads its configuration.
pub const UNIT_CONFIG_DIR: &str = "/etc/oneinfra/agent";
pub const UNIT: &str = "oi-agent.service";

#[derive(Args)]
pub struct JoinArgs {
    /// The coordinator's API, HOST:PORT, as in the join command that
    /// `oi hypervisor token create` printed.
    #[arg(long, value_name = "HOST:PORT")]
    pub coordinator: String,
    /// The join token, <id>.<secret>.
    #[arg(
        long,
        env = "OI_JOIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: String,
    /// The coordinator's CA: sha256:<hex> of its public key. The join is
    /// refused if the coordinator presents another CA.
    #[arg(long, value_name = "sha256:HEX")]
    pub ca_cert_hash: String,
    /// This hypervisor's name (a DNS-1123 label). Default: the host name.
    #[arg(long)]
    pub name: Option<String>,
    /// The IP address other machines reach this one on. Default: the
    /// address this machine uses to reach the coordinator.
    #[arg(long, value_name = "IP")]
    pub address: Option<String>,
    /// Host ports the coordinator may allocate here.
    #[arg(long, value_name = "LOW-HIGH", default_value = "30000-32767")]
    pub port_range: String,
    /// containerd's CRI socket.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/run/containerd/containerd.sock"
    )]
    pub cri_socket: PathBuf,
    /// Join even if the CRI socket does not answer yet (the agent waits
    /// for it).
    #[arg(long)]
    pub skip_cri_check: bool,
    /// Only write the configuration and print the command that runs the
    /// agent; do not touch systemd.
    #[arg(long)]
    pub no_systemd: bool,
    /// Where the agent's config.toml, ca.pem, agent.pem and agent.key go.
    #[arg(long, value_name = "DIR", default_value = UNIT_CONFIG_DIR)]
    pub config_dir: PathBuf,
    /// The agent's state directory.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/oneinfra/agent")]
    pub state_dir: PathBuf,
    /// How long to wait for the started agent to connect.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = super::wait::parse_duration)]
    pub timeout: Duration,
}

/// Shows everything but the token.
impl std::fmt::Debug for JoinArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinArgs")
            .field("coordinator", &self.coordinator)
            .field("ca_cert_hash", &self.ca_cert_hash)
            .field("name", &self.name)
            .field("address", &self.address)
            .field("config_dir", &self.config_dir)
            .field("no_systemd", &self.no_systemd)
            .finish_non_exhaustive()
    }
}

fn invalid(message: String) -> CliError {
    CliError::new(Exit::Invalid, message)
}

/// The agent's config.toml, as `oi-agent` reads it (`oi_agent_files::config`).
#[derive(Serialize)]
struct AgentToml<'a> {
    name: &'a str,
    role: &'a str,
    coordinator: &'a str,
    server_name: &'a str,
    address: &'a str,
    port_range: &'a str,
    pki_dir: &'a Path,
    state_dir: &'a Path,
    cri_socket: &'a Path,
}

/// The configuration text; checked by parsing it the way the agent will.
fn agent_config(t: &AgentToml<'_>) -> CliResult<String> {
    let body = toml::to_string(t)
        .map_err(|e| CliError::new(Exit::Error, format!("encode agent config: {e}")))?;
    let text = format!(
        "# Written by `oi hypervisor join`. Keys: see \
         /usr/share/doc/oneinfra-agent/examples/agent.toml\n{body}"
    );
    let raw: oi_agent_files::config::RawConfig = toml::from_str(&text)
        .map_err(|e| CliError::new(Exit::Error, format!("agent config does not parse: {e}")))?;
    raw.validate()
        .map_err(|e| invalid(format!("the agent configuration would be invalid: {e:#}")))?;
    Ok(text)
}

/// This machine's name as a hypervisor name: the host name's first label,
/// lowercased.
pub(crate) fn default_name() -> CliResult<String> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map_err(|e| CliError::new(Exit::Error, format!("read the host name: {e}; pass --name")))?;
    let name = host
        .trim()
        .split('.')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    validate_hypervisor_name(&name).map_err(|e| invalid(format!("{e}; pass --name")))?;
    Ok(name)
}

/// The local address this machine uses to reach `addr` (no packet is sent).
/// `flags` names the command's flags for `addr` and for the address, for
/// the error message.
pub(crate) async fn local_address_towards(addr: &str, flags: (&str, &str)) -> CliResult<IpAddr> {
    let target = tokio::net::lookup_host(addr)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            CliError::new(
                Exit::Unavailable,
                format!("cannot resolve {addr}; check {}", flags.0),
            )
        })?;
    let bind = if target.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let failed = |e: std::io::Error| {
        CliError::new(
            Exit::Error,
            format!(
                "find the local address towards {addr}: {e}; pass {}",
                flags.1
            ),
        )
    };
    let socket = tokio::net::UdpSocket::bind(bind).await.map_err(failed)?;
    socket.connect(target).await.map_err(failed)?;
    socket.local_addr().map(|a| a.ip()).map_err(failed)
}

/// Runs `systemctl ARGS`; the error says what failed.
pub(crate) async fn systemctl(args: &[&str]) -> CliResult<String> {
    let out = tokio::process::Command::new("systemctl")
        .args(args)
        .output()
        .await
        .map_err(|e| {
            CliError::new(
                Exit::Error,
                format!(
                    "run systemctl: {e}; without systemd, pass --no-systemd and start the agent \
                     yourself"
                ),
            )
        })?;
    if !out.status.success() {
        return Err(CliError::new(
            Exit::Error,
            format!(
                "`systemctl {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Refuses to overwrite a joined machine's configuration.
fn check_not_joined(config_dir: &Path) -> CliResult {
    let config = config_dir.join("config.toml");
    if config.exists() {
        return Err(CliError::new(
            Exit::AlreadyExists,
            format!(
                "{} exists: this machine has joined already. To join it again, stop the agent \
                 (systemctl disable --now oi-agent), remove config.toml, agent.pem, agent.key \
                 and ca.pem from {}, and run this again",
                config.display(),
                config_dir.display()
            ),
        ));
    }
    Ok(())
}

pub async fn join(ctx: &mut Ctx<'_>, a: JoinArgs) -> CliResult {
    // 1. Everything that can be checked here, before the token is used.
    let secret = TokenSecret::parse(&a.token).map_err(|e| invalid(e.to_string()))?;
    let pin = pinned::parse_pin(&a.ca_cert_hash)?;
    if pinned::split_host_port(&a.coordinator).is_none() {
        return Err(invalid(format!(
            "--coordinator {:?} is not HOST:PORT, e.g. 192.0.2.1:7444",
            a.coordinator
        )));
    }
    let name = match &a.name {
        Some(n) => {
            validate_hypervisor_name(n).map_err(|e| invalid(e.to_string()))?;
            n.clone()
        }
        None => default_name()?,
    };
    let port_range: PortRange = a
        .port_range
        .parse()
        .map_err(|e: String| invalid(format!("--port-range: {e}")))?;
    if let Some(addr) = &a.address {
        addr.parse::<IpAddr>().map_err(|_| {
            invalid(format!(
                "--address {addr:?} is not an IP address: give the address other machines \
                 reach this one on"
            ))
        })?;
    }
    check_not_joined(&a.config_dir)?;
    if !a.no_systemd {
        if a.config_dir != Path::new(UNIT_CONFIG_DIR) {
            return Err(invalid(format!(
                "{UNIT} reads {UNIT_CONFIG_DIR}/config.toml, not {}: drop --config-dir, or pass \
                 --no-systemd and run the agent yourself",
                a.config_dir.display()
            )));
        }
        systemctl(&["cat", UNIT]).await.map_err(|e| {
            CliError::new(
                Exit::Error,
                format!(
                    "{UNIT} is not installed ({}): install the oneinfra-agent package, or pass \
                     --no-systemd",
                    e.message
                ),
            )
        })?;
    }
    if !a.skip_cri_check {
        let cri = oi_cri_client::CriClient::new(&a.cri_socket)
            .map_err(|e| CliError::new(Exit::Error, e.to_string()))?;
        let version = cri.check().await.map_err(|e| {
            CliError::new(
                Exit::Error,
                format!("{e} (or pass --cri-socket PATH, or --skip-cri-check to join anyway)"),
            )
        })?;
        ctx.note(&format!(
            "container runtime: {} {} at {}",
            version.runtime_name,
            version.runtime_version,
            a.cri_socket.display()
        ));
    }
    let address = match &a.address {
        Some(addr) => addr.clone(),
        None => local_address_towards(&a.coordinator, ("--coordinator", "--address"))
            .await?
            .to_string(),
    };

    // 2. The key stays here; the coordinator gets a CSR.
    let (key_pem, csr_pem) = identity::new_key_and_csr(&name)
        .map_err(|e| CliError::new(Exit::Error, one_line(e.as_ref())))?;

    // 3. Only a coordinator holding the pinned CA sees the token.
    let channel = pinned::connect(&a.coordinator, &pin).await?;
    let joined = oi_proto::api::join_client::JoinClient::new(channel)
        .join(pb::JoinRequest {
            token: secret.expose(),
            name: name.clone(),
            csr_pem,
        })
        .await?
        .into_inner();
    let ca_der = oi_proto::tls::parse_certs(joined.ca_pem.as_bytes())
        .map_err(|e| CliError::new(Exit::Error, format!("the coordinator's CA: {e:#}")))?;
    let got = ca_cert_hash(&ca_der[0])
        .map_err(|e| CliError::new(Exit::Error, format!("the coordinator's CA: {e:#}")))?;
    if got != pin {
        return Err(pinned::mismatch_error(&a.coordinator, &pin, &[got]));
    }
    let role: Role = joined
        .role
        .parse()
        .map_err(|e: String| CliError::new(Exit::Error, format!("the coordinator sent {e}")))?;
    identity::check_pair(joined.certificate_pem.as_bytes(), key_pem.as_bytes()).map_err(|e| {
        CliError::new(
            Exit::Error,
            format!("the coordinator's certificate: {}", one_line(e.as_ref())),
        )
    })?;
    let cert_der = oi_proto::tls::parse_certs(joined.certificate_pem.as_bytes())
        .map_err(|e| CliError::new(Exit::Error, format!("the certificate: {e:#}")))?;
    let cert = identity::cert_info(&cert_der[0])
        .map_err(|e| CliError::new(Exit::Error, format!("the certificate: {e:#}")))?;

    // 4. Files: the identity, then the configuration that starts the unit.
    let text = agent_config(&AgentToml {
        name: &name,
        role: role.as_str(),
        coordinator: &joined.link_address,
        server_name: &joined.server_name,
        address: &address,
        port_range: &port_range.to_string(),
        pki_dir: &a.config_dir,
        state_dir: &a.state_dir,
        cri_socket: &a.cri_socket,
    })?;
    let write_err = |e: anyhow::Error| {
        CliError::new(
            Exit::Error,
            format!(
                "{}; the coordinator has issued the certificate, so this name is taken until \
                 `oi hypervisor remove {name}` there",
                one_line(e.as_ref())
            ),
        )
    };
    oi_proto::fsutil::create_private_dir(&a.config_dir).map_err(write_err)?;
    IdentityFiles::in_dir(&a.config_dir)
        .replace(joined.certificate_pem.as_bytes(), key_pem.as_bytes())
        .map_err(write_err)?;
    oi_proto::fsutil::write_atomic(
        &a.config_dir.join("ca.pem"),
        joined.ca_pem.as_bytes(),
        0o644,
    )
    .map_err(write_err)?;
    let config_path = a.config_dir.join("config.toml");
    oi_proto::fsutil::write_atomic(&config_path, text.as_bytes(), 0o600).map_err(write_err)?;
    ctx.out(&format!(
        "joined as hypervisor {name} (role {role}, address {address}); wrote {}, ca.pem, \
         agent.pem and agent.key (certificate serial {})\n",
        config_path.display(),
        cert.serial
    ))?;

    // 5. Start the agent, or say how.
    if a.no_systemd {
        return ctx.out(&format!(
            "start the agent with:\n  oi-agent --config {}\n",
            config_path.display()
        ));
    }
    systemctl(&["enable", UNIT]).await?;
    systemctl(&["restart", UNIT]).await?;
    ctx.out(&format!("started {UNIT}; waiting for it to connect\n"))?;
    wait_connected(ctx, &a.state_dir.join("link.json"), &cert.serial, a.timeout).await
}

/// Waits until the agent's link file says it is connected with `serial`.
async fn wait_connected(
    ctx: &mut Ctx<'_>,
    path: &Path,
    serial: &str,
    timeout: Duration,
) -> CliResult {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let file =
            LinkFile::read(path).map_err(|e| CliError::new(Exit::Error, one_line(e.as_ref())))?;
        match link_file::progress(file.as_ref(), serial) {
            Progress::Connected => {
                return ctx.out(
                    "the agent is connected; `oi hypervisor list` on the coordinator shows it\n",
                )
            }
            Progress::Refused(why) => {
                return Err(CliError::new(
                    Exit::Error,
                    format!("the coordinator refused the agent: {why}"),
                ))
            }
            Progress::Waiting(why) => {
                if why != last {
                    ctx.out(&format!("  {why}\n"))?;
                    last = why;
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(CliError::new(
                Exit::TimedOut,
                format!(
                    "the agent did not connect within {}s ({last}); see `journalctl -u {UNIT}` \
                     and {}",
                    timeout.as_secs(),
                    path.display()
                ),
            ));
        }
        tokio::time::sleep(ctx.poll.min(Duration::from_millis(500))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_config_is_what_the_agent_reads() {
        let t = AgentToml {
            name: "hv-1",
            role: "public",
            coordinator: "[::1]:7443",
            server_name: "::1",
            address: "192.0.2.5",
            port_range: "30000-30100",
            pki_dir: Path::new("/etc/oneinfra/agent"),
            state_dir: Path::new("/var/lib/oneinfra/agent"),
            cri_socket: Path::new("/run/containerd/containerd.sock"),
        };
        let text = agent_config(&t).unwrap();
        let c = toml::from_str::<oi_agent_files::config::RawConfig>(&text)
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(c.role, Role::Public);
        assert_eq!(c.server_name, "::1");
        assert_eq!(c.key_path, Path::new("/etc/oneinfra/agent/agent.key"));
        assert_eq!(
            c.link_file_path(),
            Path::new("/var/lib/oneinfra/agent/link.json")
        );
        let bad = AgentToml {
            address: "not-an-ip",
            ..t
        };
        assert_eq!(agent_config(&bad).unwrap_err().exit, Exit::Invalid);
    }

    #[test]
    fn a_joined_machine_is_not_joined_twice() {
        let dir = tempfile::tempdir().unwrap();
        check_not_joined(dir.path()).unwrap();
        std::fs::write(dir.path().join("config.toml"), "").unwrap();
        let e = check_not_joined(dir.path()).unwrap_err();
        assert_eq!(e.exit, Exit::AlreadyExists);
        assert!(
            e.message.contains("systemctl disable --now oi-agent"),
            "{}",
            e.message
        );
    }
}
