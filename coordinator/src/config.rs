//! Coordinator configuration: parsed from TOML, then validated into
//! [`Config`]. Every field has a default, so an empty file is valid.

use crate::cluster::render::Profile;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file as written by an operator.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Store, CA and other state. Default `/var/lib/oneinfra/coordinator`.
    pub data_dir: Option<PathBuf>,
    /// UDP address agents dial (QUIC). Default `0.0.0.0:7443`.
    pub listen: Option<String>,
    /// TCP address of `/metrics` and `/healthz`; empty to disable.
    /// Default `127.0.0.1:9441`.
    pub metrics_listen: Option<String>,
    /// TCP address of the admin API (gRPC over TLS); empty to disable.
    /// Default `0.0.0.0:7444`.
    pub api_listen: Option<String>,
    /// Names and IP addresses agents use to reach the coordinator; they go
    /// into its serving certificate. Default `["localhost", "127.0.0.1"]`.
    #[serde(default)]
    pub server_names: Vec<String>,
    /// How often agents send heartbeats. Default 10.
    pub heartbeat_interval_secs: Option<u64>,
    /// Key-encryption key sealing the store's secrets (0600). Default
    /// `<data_dir>/kek`, created with a new store. Back it up with the store.
    pub kek_file: Option<PathBuf>,
    /// Registry and path for every control-plane image (air-gapped or
    /// side-loaded images), e.g. `registry.example.com/k8s`.
    pub image_repository: Option<String>,
    /// How control-plane components are sized: "default" (close to
    /// kubeadm) or "dense" (many small control planes per hypervisor).
    pub profile: Option<String>,
    /// Seconds between attempts to place clusters that found no room.
    /// Default 5.
    pub pending_retry_secs: Option<u64>,
    /// Receive and send buffer of the link's UDP socket, in bytes (capped
    /// by net.core.rmem_max/wmem_max). 0 keeps the OS default. Default 8 MiB.
    pub link_socket_buffer_bytes: Option<usize>,
    /// Agent handshakes accepted per second; more are refused at once and
    /// the agents retry with backoff. 0 (default): no limit.
    pub link_accept_rate: Option<u32>,
    /// The name or IP address joining hypervisors and agents reach this
    /// coordinator on; `oi hypervisor token create` prints it in the join
    /// command (with the API port), and joins hand it to agents (with the
    /// link port). One of `server_names`. Default: the first of them.
    pub advertise_address: Option<String>,
    /// Lifetime of the certificates hypervisors get by joining or renewing,
    /// in seconds (at least 600). Default one year; agents renew when a
    /// third is left.
    pub agent_cert_lifetime_secs: Option<u64>,
    /// Join attempts one source address may make per minute. Default 5.
    pub join_rate_per_minute: Option<u32>,
    /// Join attempts one source address may make at once. Default 5.
    pub join_burst: Option<u32>,
    /// Join attempts from all sources per second. Default 50.
    pub join_global_per_second: Option<u32>,
}

/// How many join attempts are evaluated; the rest are refused with
/// RESOURCE_EXHAUSTED before the token is looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JoinLimits {
    pub per_address_per_minute: NonZeroU32,
    pub per_address_burst: NonZeroU32,
    pub global_per_second: NonZeroU32,
}

impl Default for JoinLimits {
    fn default() -> Self {
        let n = |v: u32| NonZeroU32::new(v).expect("nonzero literal");
        Self {
            per_address_per_minute: n(5),
            per_address_burst: n(5),
            global_per_second: n(50),
        }
    }
}

/// Validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    /// The admin API's address; `None` when disabled.
    pub api_listen: Option<SocketAddr>,
    pub server_names: Vec<String>,
    pub heartbeat_interval: Duration,
    /// How long a new connection may take to send its hello.
    pub handshake_timeout: Duration,
    pub kek_file: PathBuf,
    pub image_repository: Option<String>,
    pub profile: Profile,
    pub pending_retry: Duration,
    pub link_socket_buffer_bytes: usize,
    /// Handshakes per second; `None`: no limit.
    pub link_accept_rate: Option<std::num::NonZeroU32>,
    /// Host (name or IP address) in join commands and link addresses.
    pub advertise_address: String,
    pub agent_cert_lifetime: Duration,
    pub join_limits: JoinLimits,
}

impl RawConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parse {}", path.display()))
    }

    pub fn validate(self) -> Result<Config> {
        let parse_addr = |field: &str, v: &str| -> Result<SocketAddr> {
            v.parse().with_context(|| {
                format!("{field} = {v:?} is not an address: write it as IP:PORT, e.g. 0.0.0.0:7443")
            })
        };
        let listen = parse_addr("listen", self.listen.as_deref().unwrap_or("0.0.0.0:7443"))?;
        let metrics_listen = match self.metrics_listen.as_deref() {
            None => Some(parse_addr("metrics_listen", "127.0.0.1:9441")?),
            Some("") => None,
            Some(v) => Some(parse_addr("metrics_listen", v)?),
        };
        let api_listen = match self.api_listen.as_deref() {
            None => Some(parse_addr("api_listen", "0.0.0.0:7444")?),
            Some("") => None,
            Some(v) => Some(parse_addr("api_listen", v)?),
        };
        let server_names = if self.server_names.is_empty() {
            vec!["localhost".to_string(), "127.0.0.1".to_string()]
        } else {
            self.server_names
        };
        for n in &server_names {
            if n.trim().is_empty() || n.contains(char::is_whitespace) {
                bail!("server_names entry {n:?} is not a DNS name or IP address");
            }
        }
        let hb = self.heartbeat_interval_secs.unwrap_or(10);
        if !(1..=300).contains(&hb) {
            bail!("heartbeat_interval_secs = {hb} is out of range: use 1 to 300");
        }
        if let Some(repo) = &self.image_repository {
            if let Err(why) = crate::cluster::versions::check_image_repository(repo) {
                bail!(
                    "image_repository = {repo:?} is not a repository prefix ({why}): write it \
                     like registry.example.com/k8s or registry.example.com:5000/k8s (no tag, \
                     no digest, no trailing '/')"
                );
            }
        }
        let profile: Profile = match self.profile.as_deref() {
            None => Profile::Default,
            Some(p) => p
                .parse()
                .map_err(|e: String| anyhow::anyhow!("profile: {e}"))?,
        };
        let retry = self.pending_retry_secs.unwrap_or(5);
        if !(1..=3600).contains(&retry) {
            bail!("pending_retry_secs = {retry} is out of range: use 1 to 3600");
        }
        let advertise_address = match self.advertise_address {
            None => server_names[0].clone(),
            Some(a) if server_names.contains(&a) => a,
            Some(a) => bail!(
                "advertise_address = {a:?} is not one of server_names ({}): add it there, so \
                 that the coordinator's certificate names it",
                server_names.join(", ")
            ),
        };
        let lifetime = self
            .agent_cert_lifetime_secs
            .unwrap_or(crate::link_pki::AGENT_CERT_LIFETIME.as_secs());
        if !(600..=10 * 365 * 24 * 3600).contains(&lifetime) {
            bail!("agent_cert_lifetime_secs = {lifetime} is out of range: use 600 to 315360000");
        }
        let defaults = JoinLimits::default();
        let limit = |field: &str, v: Option<u32>, default: NonZeroU32| -> Result<NonZeroU32> {
            match v {
                None => Ok(default),
                Some(v) => NonZeroU32::new(v)
                    .filter(|v| v.get() <= 100_000)
                    .with_context(|| format!("{field} = {v} is out of range: use 1 to 100000")),
            }
        };
        let join_limits = JoinLimits {
            per_address_per_minute: limit(
                "join_rate_per_minute",
                self.join_rate_per_minute,
                defaults.per_address_per_minute,
            )?,
            per_address_burst: limit("join_burst", self.join_burst, defaults.per_address_burst)?,
            global_per_second: limit(
                "join_global_per_second",
                self.join_global_per_second,
                defaults.global_per_second,
            )?,
        };
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| PathBuf::from("/var/lib/oneinfra/coordinator"));
        Ok(Config {
            advertise_address,
            agent_cert_lifetime: Duration::from_secs(lifetime),
            join_limits,
            kek_file: self.kek_file.unwrap_or_else(|| data_dir.join("kek")),
            image_repository: self.image_repository,
            profile,
            pending_retry: Duration::from_secs(retry),
            link_socket_buffer_bytes: self.link_socket_buffer_bytes.unwrap_or(8 << 20),
            link_accept_rate: self.link_accept_rate.and_then(std::num::NonZeroU32::new),
            data_dir,
            listen,
            metrics_listen,
            api_listen,
            server_names,
            heartbeat_interval: Duration::from_secs(hb),
            handshake_timeout: Duration::from_secs(10),
        })
    }
}

impl Config {
    /// A configuration for tests: everything on 127.0.0.1 with free ports.
    pub fn for_tests(data_dir: &Path) -> Config {
        Config {
            data_dir: data_dir.to_path_buf(),
            listen: "127.0.0.1:0".parse().expect("literal address"),
            metrics_listen: Some("127.0.0.1:0".parse().expect("literal address")),
            api_listen: Some("127.0.0.1:0".parse().expect("literal address")),
            server_names: vec!["localhost".into(), "127.0.0.1".into()],
            heartbeat_interval: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            kek_file: data_dir.join("kek"),
            image_repository: None,
            profile: Profile::Default,
            pending_retry: Duration::from_secs(1),
            link_socket_buffer_bytes: 0,
            link_accept_rate: None,
            advertise_address: "127.0.0.1".into(),
            agent_cert_lifetime: crate::link_pki::AGENT_CERT_LIFETIME,
            join_limits: JoinLimits::default(),
        }
    }

    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("state.db")
    }

    /// Where the coordinator writes the admin credentials `oi` uses.
    pub fn admin_conf_path(&self) -> PathBuf {
        self.data_dir.join("admin.conf")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_refusals() {
        let c: RawConfig = toml::from_str("").unwrap();
        let c = c.validate().unwrap();
        assert_eq!(c.listen.port(), 7443);
        assert_eq!(c.metrics_listen.unwrap().port(), 9441);
        assert_eq!(c.api_listen.unwrap().to_string(), "0.0.0.0:7444");
        assert_eq!(c.advertise_address, "localhost");
        assert_eq!(c.join_limits, JoinLimits::default());
        let raw: RawConfig = toml::from_str(
            "server_names = [\"10.0.0.1\", \"coord.example.com\"]\n\
             advertise_address = \"coord.example.com\"\njoin_global_per_second = 7",
        )
        .unwrap();
        let c = raw.validate().unwrap();
        assert_eq!(c.advertise_address, "coord.example.com");
        assert_eq!(c.join_limits.global_per_second.get(), 7);

        let bad = [
            ("listen = \"nope\"", "listen"),
            ("api_listen = \"7444\"", "api_listen"),
            ("heartbeat_interval_secs = 0", "heartbeat_interval_secs"),
            ("server_names = [\"a b\"]", "server_names"),
            ("image_repository = \"x/\"", "image_repository"),
            (
                "image_repository = \"r.example.com/k8s:v1\"",
                "image_repository",
            ),
            (
                "image_repository = \"r.example.com:port/k8s\"",
                "image_repository",
            ),
            (
                "image_repository = \"r.example.com/K8s\"",
                "image_repository",
            ),
            (
                "image_repository = \"r.example.com/k8s@sha256\"",
                "image_repository",
            ),
            ("profile = \"tiny\"", "profile"),
            ("advertise_address = \"elsewhere\"", "server_names"),
            ("agent_cert_lifetime_secs = 10", "agent_cert_lifetime_secs"),
            ("join_burst = 0", "join_burst"),
        ];
        for (text, needle) in bad {
            let raw: RawConfig = toml::from_str(text).unwrap();
            let err = format!("{:#}", raw.validate().unwrap_err());
            assert!(err.contains(needle), "{text}: {err}");
        }
        assert!(toml::from_str::<RawConfig>("bogus = 1").is_err());
    }

    #[test]
    fn api_listen_can_be_set_or_disabled() {
        let raw: RawConfig = toml::from_str("api_listen = \"127.0.0.1:9000\"").unwrap();
        assert_eq!(raw.validate().unwrap().api_listen.unwrap().port(), 9000);
        let raw: RawConfig = toml::from_str("api_listen = \"\"").unwrap();
        assert_eq!(raw.validate().unwrap().api_listen, None);
        let tests = Config::for_tests(Path::new("/tmp/x"));
        assert_eq!(tests.api_listen.unwrap().to_string(), "127.0.0.1:0");
        assert_eq!(tests.admin_conf_path(), Path::new("/tmp/x/admin.conf"));
    }
}
