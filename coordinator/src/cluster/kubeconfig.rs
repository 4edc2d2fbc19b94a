//! Kubeconfig files (client-go's `Config`, v1) built from typed structs:
//! admin kubeconfigs and the controller-manager's and scheduler's.
//! A kubeconfig with a client key is key material: write it 0600.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("encode kubeconfig: {0}")]
    Encode(#[source] yaml_serde::Error),
    #[error("parse kubeconfig: {0}")]
    Parse(#[source] yaml_serde::Error),
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Kubeconfig {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub clusters: Vec<NamedCluster>,
    pub contexts: Vec<NamedContext>,
    pub current_context: String,
    pub users: Vec<NamedUser>,
}

impl fmt::Debug for Kubeconfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kubeconfig")
            .field("clusters", &self.clusters)
            .field("contexts", &self.contexts)
            .field("current_context", &self.current_context)
            .field(
                "users",
                &self.users.iter().map(|u| &u.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedCluster {
    pub name: String,
    pub cluster: Cluster,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    pub server: String,
    /// Base64 of the PEM of the CA that signed the server's certificate.
    pub certificate_authority_data: String,
}

impl Cluster {
    pub fn ca_pem(&self) -> Option<String> {
        decode(&self.certificate_authority_data)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedContext {
    pub name: String,
    pub context: Context,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    pub cluster: String,
    pub user: String,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedUser {
    pub name: String,
    pub user: User,
}

/// Client certificate credentials. `Debug` hides the key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct User {
    pub client_certificate_data: String,
    pub client_key_data: String,
}

impl User {
    pub fn cert_pem(&self) -> Option<String> {
        decode(&self.client_certificate_data)
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("User(key hidden)")
    }
}

fn decode(b64: &str) -> Option<String> {
    String::from_utf8(B64.decode(b64).ok()?).ok()
}

/// A kubeconfig with one cluster, one user (client certificate) and one
/// context `<user>@<cluster>`, which is current.
pub fn client_kubeconfig(
    cluster: &str,
    user: &str,
    server: &str,
    ca_pem: &str,
    client: &super::pki::CertKey,
) -> Result<String, KubeconfigError> {
    let context = format!("{user}@{cluster}");
    let cfg = Kubeconfig {
        api_version: "v1".into(),
        kind: "Config".into(),
        clusters: vec![NamedCluster {
            name: cluster.into(),
            cluster: Cluster {
                server: server.into(),
                certificate_authority_data: B64.encode(ca_pem),
            },
        }],
        contexts: vec![NamedContext {
            name: context.clone(),
            context: Context {
                cluster: cluster.into(),
                user: user.into(),
            },
        }],
        current_context: context,
        users: vec![NamedUser {
            name: user.into(),
            user: User {
                client_certificate_data: B64.encode(&client.cert_pem),
                client_key_data: B64.encode(client.key.expose()),
            },
        }],
    };
    yaml_serde::to_string(&cfg).map_err(KubeconfigError::Encode)
}

pub fn parse(yaml: &str) -> Result<Kubeconfig, KubeconfigError> {
    yaml_serde::from_str(yaml).map_err(KubeconfigError::Parse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::pki::{CertKey, KeyPem};

    #[test]
    fn kubeconfig_has_client_go_field_names() {
        let client = CertKey {
            cert_pem: "CERT".into(),
            key: KeyPem::new("KEY".into()),
        };
        let yaml =
            client_kubeconfig("c1", "admin", "https://[fd00::1]:6443", "CA", &client).unwrap();
        for field in [
            "apiVersion: v1",
            "kind: Config",
            "current-context: admin@c1",
            "certificate-authority-data: Q0E=",
            "client-certificate-data: Q0VSVA==",
            "client-key-data: S0VZ",
            "server: https://[fd00::1]:6443",
        ] {
            assert!(yaml.contains(field), "{field} in\n{yaml}");
        }
        let back = parse(&yaml).unwrap();
        assert_eq!(back.contexts[0].context.user, "admin");
        assert_eq!(back.clusters[0].cluster.ca_pem().unwrap(), "CA");
        assert!(!format!("{back:?}").contains("S0VZ"));
    }
}
