//! Agent configuration: parsed from TOML, then validated into [`Config`].
//! The private key is read from a file whose permissions are checked.

use anyhow::{bail, Context, Result};
use oi_proto::model::{PortRange, Role};
use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file as written by an operator (or by `oi hypervisor join`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Hypervisor name; must match the certificate's common name.
    pub name: String,
    /// "private" or "public".
    pub role: String,
    /// Coordinator link address, `HOST:PORT`.
    pub coordinator: String,
    /// Name on the coordinator's certificate; default: the HOST part.
    pub server_name: Option<String>,
    /// Address other machines reach this hypervisor on.
    pub address: String,
    /// Host ports the coordinator may allocate here, e.g. "30000-32767".
    pub port_range: String,
    /// Defaults: what this machine has.
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
    /// Default `/etc/oneinfra/agent`: holds ca.pem, agent.pem, agent.key.
    pub pki_dir: Option<PathBuf>,
    /// Default `/var/lib/oneinfra/agent`.
    pub state_dir: Option<PathBuf>,
    /// CRI socket. Default `/run/containerd/containerd.sock`.
    pub cri_socket: Option<PathBuf>,
    /// Full resync period in seconds. Default 10.
    pub resync_secs: Option<u64>,
    /// How long the directory of a removed component (its files and data,
    /// etcd's among them) is kept, moved aside under `<state_dir>/retired`,
    /// before it is purged. Default 604800 (7 days); at least 60.
    pub retired_retention_secs: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub name: String,
    pub role: Role,
    pub coordinator: String,
    pub server_name: String,
    pub address: String,
    pub port_range: PortRange,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub ca_path: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub state_dir: PathBuf,
    pub cri_socket: PathBuf,
    pub resync: Duration,
    pub retired_retention: Duration,
}

impl RawConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parse {}", path.display()))
    }

    pub fn validate(self) -> Result<Config> {
        let role: Role = self.role.parse().map_err(anyhow::Error::msg)?;
        let (host, port) = self.coordinator.rsplit_once(':').with_context(|| {
            format!(
                "coordinator = {:?}: write it as HOST:PORT, e.g. coordinator.example.com:7443",
                self.coordinator
            )
        })?;
        if port.parse::<u16>().is_err() || host.is_empty() {
            bail!(
                "coordinator = {:?}: write it as HOST:PORT, e.g. coordinator.example.com:7443",
                self.coordinator
            );
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if self.address.parse::<IpAddr>().is_err() {
            bail!(
                "address = {:?} is not an IP address: give the address other machines reach this hypervisor on",
                self.address
            );
        }
        let port_range: PortRange = self
            .port_range
            .parse()
            .map_err(|e: String| anyhow::anyhow!("port_range: {e}"))?;
        let pki = self
            .pki_dir
            .unwrap_or_else(|| PathBuf::from("/etc/oneinfra/agent"));
        let resync = self.resync_secs.unwrap_or(10);
        if !(1..=3600).contains(&resync) {
            bail!("resync_secs = {resync} is out of range: use 1 to 3600");
        }
        let retention = self.retired_retention_secs.unwrap_or(7 * 24 * 3600);
        if retention < 60 {
            bail!(
                "retired_retention_secs = {retention} is too short: use at least 60 (removed \
                 components' data is kept this long so that a mistake can be undone)"
            );
        }
        Ok(Config {
            name: self.name,
            role,
            server_name: self.server_name.unwrap_or_else(|| host.to_string()),
            coordinator: self.coordinator,
            address: self.address,
            port_range,
            cpu_millis: self.cpu_millis.unwrap_or_else(detect_cpu_millis),
            memory_bytes: self.memory_bytes.unwrap_or_else(detect_memory_bytes),
            ca_path: pki.join("ca.pem"),
            cert_path: pki.join("agent.pem"),
            key_path: pki.join("agent.key"),
            state_dir: self
                .state_dir
                .unwrap_or_else(|| PathBuf::from("/var/lib/oneinfra/agent")),
            cri_socket: self
                .cri_socket
                .unwrap_or_else(|| PathBuf::from("/run/containerd/containerd.sock")),
            resync: Duration::from_secs(resync),
            retired_retention: Duration::from_secs(retention),
        })
    }
}

impl Config {
    pub fn placement_path(&self) -> PathBuf {
        self.state_dir.join("placement.json")
    }

    /// `link.json`: the link's status, for people and `oi hypervisor join`.
    pub fn link_file_path(&self) -> PathBuf {
        self.state_dir.join("link.json")
    }
}

fn detect_cpu_millis() -> u64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u64 * 1000)
        .unwrap_or(1000)
}

fn detect_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "hv-1"
role = "private"
coordinator = "127.0.0.1:7443"
address = "10.0.0.5"
port_range = "30000-30100"
"#;

    #[test]
    fn parses_and_refuses_with_clear_errors() {
        let c = toml::from_str::<RawConfig>(GOOD)
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(c.server_name, "127.0.0.1");
        assert_eq!(c.port_range.len(), 101);
        assert!(c.cpu_millis >= 1000);

        let cases = [
            ("role = \"private\"", "role = \"middle\"", "unknown role"),
            ("127.0.0.1:7443", "nohost", "HOST:PORT"),
            ("10.0.0.5", "not-an-ip", "not an IP address"),
            ("30000-30100", "3-1", "port_range"),
        ];
        for (from, to, needle) in cases {
            let text = GOOD.replace(from, to);
            let err = toml::from_str::<RawConfig>(&text)
                .unwrap()
                .validate()
                .unwrap_err();
            assert!(format!("{err:#}").contains(needle), "{to}: {err:#}");
        }
    }
}
