//! Finding the admin credentials and connecting to the coordinator.

use super::exit::{one_line, CliError, CliResult, Exit};
use oi_api_types::admin_conf::AdminConfig;
use oi_proto::api::{
    clusters_client::ClustersClient, components_client::ComponentsClient,
    hypervisors_client::HypervisorsClient, info_client::InfoClient,
    join_tokens_client::JoinTokensClient, node_tokens_client::NodeTokensClient,
    nodes_client::NodesClient,
};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Where the coordinator writes admin credentials by default.
pub const SYSTEM_CONFIG: &str = "/var/lib/oneinfra/coordinator/admin.conf";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// Where to look for the admin config: the one given (flag or `$OI_CONFIG`),
/// or else the first of the defaults that exists.
pub fn candidates(given: Option<&Path>, home: Option<&Path>, xdg: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = given {
        return vec![p.to_path_buf()];
    }
    let mut out = Vec::new();
    match (xdg, home) {
        (Some(x), _) if x.is_absolute() => out.push(x.join("oneinfra/admin.conf")),
        (_, Some(h)) => out.push(h.join(".config/oneinfra/admin.conf")),
        _ => {}
    }
    out.push(PathBuf::from(SYSTEM_CONFIG));
    out
}

/// Picks the config file among `candidates` (see [`candidates`]).
pub fn resolve(
    candidates: &[PathBuf],
    explicit: bool,
    exists: impl Fn(&Path) -> bool,
) -> CliResult<PathBuf> {
    if explicit {
        return Ok(candidates[0].clone());
    }
    candidates
        .iter()
        .find(|p| exists(p))
        .cloned()
        .ok_or_else(|| {
            let looked = candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            CliError::new(
                Exit::Error,
                format!(
                    "no admin config found (looked at {looked}): the coordinator writes one to \
                     {SYSTEM_CONFIG}; run oi there as root, or copy it to \
                     ~/.config/oneinfra/admin.conf (chmod 600), or pass --config FILE"
                ),
            )
        })
}

pub fn load(path: &Path) -> CliResult<AdminConfig> {
    AdminConfig::load(path).map_err(|e| {
        let hint = if path.exists() {
            ""
        } else {
            "; pass --config FILE or set OI_CONFIG to the admin.conf the coordinator wrote"
        };
        CliError::new(Exit::Error, format!("{}{hint}", one_line(e.as_ref())))
    })
}

/// `https://` is assumed when the endpoint names no scheme.
pub fn normalize_endpoint(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("https://{endpoint}")
    }
}

/// An open connection to the admin API.
pub struct Conn {
    pub endpoint: String,
    channel: Channel,
}

impl Conn {
    pub async fn open(conf: &AdminConfig, endpoint: Option<&str>) -> CliResult<Conn> {
        let endpoint = normalize_endpoint(endpoint.unwrap_or(&conf.endpoint));
        let unreachable = |why: String| {
            CliError::new(
                Exit::Unavailable,
                format!(
                    "cannot reach the coordinator at {endpoint}: {why}; check that it runs and \
                     that the endpoint (--endpoint, or `endpoint` in the admin config) is right"
                ),
            )
        };
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&conf.ca_pem))
            .domain_name(conf.server_name.clone());
        if conf.has_client_cert() {
            tls = tls.identity(Identity::from_pem(&conf.cert_pem, &conf.key_pem));
        }
        let channel = Endpoint::from_shared(endpoint.clone())
            .map_err(|e| {
                CliError::new(
                    Exit::Invalid,
                    format!("endpoint {endpoint:?} is not a URL: {}", one_line(&e)),
                )
            })?
            .tls_config(tls)
            .map_err(|e| {
                CliError::new(
                    Exit::Error,
                    format!("load the admin credentials: {}", one_line(&e)),
                )
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(RPC_TIMEOUT)
            .connect()
            .await
            .map_err(|e| unreachable(one_line(&e)))?;
        Ok(Conn { endpoint, channel })
    }

    pub fn clusters(&self) -> ClustersClient<Channel> {
        ClustersClient::new(self.channel.clone())
    }
    pub fn hypervisors(&self) -> HypervisorsClient<Channel> {
        HypervisorsClient::new(self.channel.clone())
    }
    pub fn components(&self) -> ComponentsClient<Channel> {
        ComponentsClient::new(self.channel.clone())
    }
    pub fn info(&self) -> InfoClient<Channel> {
        InfoClient::new(self.channel.clone())
    }
    pub fn join_tokens(&self) -> JoinTokensClient<Channel> {
        JoinTokensClient::new(self.channel.clone())
    }
    pub fn node_tokens(&self) -> NodeTokensClient<Channel> {
        NodeTokensClient::new(self.channel.clone())
    }
    pub fn nodes(&self) -> NodesClient<Channel> {
        NodesClient::new(self.channel.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lookup_order() {
        let p = |s: &str| PathBuf::from(s);
        let given = candidates(Some(Path::new("/x.conf")), Some(Path::new("/home/a")), None);
        assert_eq!(given, [p("/x.conf")]);
        assert_eq!(resolve(&given, true, |_| false).unwrap(), p("/x.conf"));

        let defaults = candidates(None, Some(Path::new("/home/a")), None);
        assert_eq!(
            defaults,
            [p("/home/a/.config/oneinfra/admin.conf"), p(SYSTEM_CONFIG)]
        );
        let xdg = candidates(None, Some(Path::new("/home/a")), Some(Path::new("/cfg")));
        assert_eq!(xdg[0], p("/cfg/oneinfra/admin.conf"));
        assert_eq!(candidates(None, None, None), [p(SYSTEM_CONFIG)]);

        assert_eq!(resolve(&defaults, false, |_| true).unwrap(), defaults[0]);
        assert_eq!(
            resolve(&defaults, false, |q| q == Path::new(SYSTEM_CONFIG)).unwrap(),
            p(SYSTEM_CONFIG)
        );
        let err = resolve(&defaults, false, |_| false).unwrap_err();
        assert_eq!(err.exit, Exit::Error);
        assert!(
            err.message.contains("/home/a/.config/oneinfra/admin.conf")
                && err.message.contains(SYSTEM_CONFIG)
                && err.message.contains("--config"),
            "{}",
            err.message
        );
    }

    #[test]
    fn endpoints_default_to_https() {
        assert_eq!(normalize_endpoint("10.0.0.1:7444"), "https://10.0.0.1:7444");
        assert_eq!(normalize_endpoint("https://h:1"), "https://h:1");
    }
}
