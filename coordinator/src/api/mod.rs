//! The coordinator's administrative API: gRPC (tonic) over TLS, serving
//! [`Operations`]. Every RPC requires an admin client certificate issued by
//! the coordinator's CA (see [`auth`]); TLS itself lets clients without a
//! certificate through so that they get a clear refusal per RPC. The one
//! exception is the Join service ([`join`]): joining machines have no
//! certificate yet and present a join token, rate-limited.
//!
//! The server sends its certificate chain with the CA certificate, so that
//! a joining machine, which trusts no CA yet, can find the CA and check it
//! against the hash it was given (`--ca-cert-hash`).
//!
//! Protobuf types stay in this module and the CLI: [`convert`] turns them
//! into the operations' view types, [`status`] maps [`crate::operations::OpError`]
//! to gRPC codes.

pub use oi_api_types::admin_conf;
pub mod auth;
pub use oi_api_types::convert;
pub mod join;
pub mod service;
pub mod status;

pub use admin_conf::{local_endpoint, AdminConfig};

/// Writes admin credentials (`issued`) for the API at `endpoint` to `path`.
pub fn write_admin_config(
    path: &std::path::Path,
    endpoint: &str,
    server_name: &str,
    ca_pem: &str,
    issued: &crate::link_pki::IssuedCert,
) -> anyhow::Result<()> {
    AdminConfig {
        endpoint: endpoint.to_string(),
        server_name: server_name.to_string(),
        ca_pem: ca_pem.to_string(),
        cert_pem: issued.cert_pem.clone(),
        key_pem: issued.key_pem.clone(),
    }
    .write(path)
}

use crate::link_pki::{IssuedCert, LinkCa};
use crate::operations::Operations;
use anyhow::{Context, Result};
use join::{JoinApi, JoinLimiter, JoinSettings};
use oi_proto::api::{
    clusters_server::ClustersServer, components_server::ComponentsServer,
    hypervisors_server::HypervisorsServer, info_server::InfoServer, join_server::JoinServer,
    join_tokens_server::JoinTokensServer, node_tokens_server::NodeTokensServer,
    nodes_server::NodesServer,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The API's serving certificate and the CA its clients' certificates must
/// chain to. `Debug` hides the key.
pub struct ApiTls {
    serving: IssuedCert,
    ca_pem: String,
    admin_conf: Option<PathBuf>,
}

impl std::fmt::Debug for ApiTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiTls(key hidden)")
    }
}

impl ApiTls {
    pub fn new(serving: IssuedCert, ca_pem: &str) -> Self {
        Self {
            serving,
            ca_pem: ca_pem.to_string(),
            admin_conf: None,
        }
    }

    /// A serving certificate for `server_names` from `ca`, which also
    /// issues the admins' client certificates.
    pub fn from_ca(ca: &LinkCa, server_names: &[String]) -> Result<Self> {
        let serving = ca
            .issue_server(server_names)
            .context("issue admin API serving certificate")?;
        Ok(Self::new(serving, ca.cert_pem()))
    }

    /// Where the coordinator wrote the admin credentials; refusals name it.
    pub fn admin_conf_path(mut self, path: &Path) -> Self {
        self.admin_conf = Some(path.to_path_buf());
        self
    }

    fn server_config(&self) -> ServerTlsConfig {
        // The chain: the serving certificate, then the CA's.
        let chain = format!(
            "{}\n{}",
            self.serving.cert_pem.trim_end(),
            self.ca_pem.trim_end()
        );
        ServerTlsConfig::new()
            .identity(Identity::from_pem(chain, &self.serving.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(true)
            .timeout(HANDSHAKE_TIMEOUT)
    }
}

/// Serves the admin API on `listener` until `shutdown` turns true; then
/// stops accepting and lets in-flight calls finish. Joins are limited by
/// the default [`crate::config::JoinLimits`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: ApiTls,
    ops: Arc<dyn Operations>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    serve_with(listener, tls, ops, JoinSettings::default(), shutdown).await
}

/// [`serve`], with the join limits and metrics given.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    tls: ApiTls,
    ops: Arc<dyn Operations>,
    join: JoinSettings,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let addr = listener.local_addr().context("read admin API address")?;
    let admin_conf = match &tls.admin_conf {
        Some(p) => p.display().to_string(),
        None => "admin.conf in its data directory".to_string(),
    };
    let auth = auth::AdminOnly::new(&admin_conf);
    let joins = JoinApi {
        ops: ops.clone(),
        limiter: Arc::new(JoinLimiter::new(join.limits)),
        metrics: join.metrics,
    };
    let api = service::Api { ops };
    tracing::info!(%addr, "admin API listening");
    Server::builder()
        .tls_config(tls.server_config())
        .context("configure admin API TLS")?
        .add_service(ClustersServer::with_interceptor(api.clone(), auth.clone()))
        .add_service(HypervisorsServer::with_interceptor(
            api.clone(),
            auth.clone(),
        ))
        .add_service(ComponentsServer::with_interceptor(
            api.clone(),
            auth.clone(),
        ))
        .add_service(JoinTokensServer::with_interceptor(
            api.clone(),
            auth.clone(),
        ))
        .add_service(NodeTokensServer::with_interceptor(
            api.clone(),
            auth.clone(),
        ))
        .add_service(NodesServer::with_interceptor(api.clone(), auth.clone()))
        .add_service(InfoServer::with_interceptor(api, auth))
        // No interceptor: the join token is the credential.
        .add_service(JoinServer::new(joins))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), async move {
            crate::stopped(&mut shutdown).await
        })
        .await
        .with_context(|| format!("serve admin API on {addr}"))
}
