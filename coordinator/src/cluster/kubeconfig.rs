//! Kubeconfig files built from kube's typed `Kubeconfig` (client-go's
//! `Config`, v1): admin kubeconfigs and the controller-manager's and
//! scheduler's. A kubeconfig with a client key is key material: write it 0600.
//!
//! They are emitted as JSON, which is YAML too: client-go reads kubeconfigs
//! with YAML 1.1 rules, where plain scalars such as `y`, `n`, `on`, `null`
//! or `1.20` are not strings, so a cluster named `y` written as plain YAML
//! made kube-controller-manager fail to load its kubeconfig. JSON strings
//! are always quoted; tests parse the output with kubectl where it exists.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use kube::config::{
    AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
};

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("encode kubeconfig: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("parse kubeconfig: {0}")]
    Parse(#[source] kube::config::KubeconfigError),
}

fn named_cluster(name: &str, server: &str, ca_pem: &str) -> NamedCluster {
    NamedCluster {
        name: name.into(),
        cluster: Some(Cluster {
            server: Some(server.into()),
            certificate_authority_data: Some(B64.encode(ca_pem)),
            ..Default::default()
        }),
        other: Default::default(),
    }
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
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        clusters: vec![named_cluster(cluster, server, ca_pem)],
        contexts: vec![NamedContext {
            name: context.clone(),
            context: Some(Context {
                cluster: cluster.into(),
                user: Some(user.into()),
                ..Default::default()
            }),
            other: Default::default(),
        }],
        current_context: Some(context),
        auth_infos: vec![NamedAuthInfo {
            name: user.into(),
            auth_info: Some(AuthInfo {
                client_certificate_data: Some(B64.encode(&client.cert_pem)),
                client_key_data: Some(B64.encode(client.key.expose()).into()),
                ..Default::default()
            }),
            other: Default::default(),
        }],
        ..Default::default()
    };
    let mut text = serde_json::to_string_pretty(&cfg).map_err(KubeconfigError::Encode)?;
    text.push('\n');
    Ok(text)
}

/// The kubeconfig of `kube-public/cluster-info`, as kubeadm writes it: one
/// unnamed cluster (server and CA), no user, no context. Joining nodes
/// trust it only once its JWS signature (the bootstrap signer's, keyed by
/// a token) and their CA pin check out.
pub fn cluster_info_kubeconfig(server: &str, ca_pem: &str) -> Result<String, KubeconfigError> {
    let cfg = Kubeconfig {
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        clusters: vec![named_cluster("", server, ca_pem)],
        ..Default::default()
    };
    let mut text = serde_json::to_string_pretty(&cfg).map_err(KubeconfigError::Encode)?;
    text.push('\n');
    Ok(text)
}

/// Parses a kubeconfig as kube (and client-go) read one.
pub fn parse(text: &str) -> Result<Kubeconfig, KubeconfigError> {
    Kubeconfig::from_yaml(text).map_err(KubeconfigError::Parse)
}

/// The first cluster's server address.
pub fn server(cfg: &Kubeconfig) -> Option<&str> {
    cfg.clusters.first()?.cluster.as_ref()?.server.as_deref()
}

/// The first cluster's CA (PEM).
pub fn ca_pem(cfg: &Kubeconfig) -> Option<String> {
    decode(
        cfg.clusters
            .first()?
            .cluster
            .as_ref()?
            .certificate_authority_data
            .as_deref()?,
    )
}

/// The first user's client certificate (PEM).
pub fn client_cert_pem(cfg: &Kubeconfig) -> Option<String> {
    decode(
        cfg.auth_infos
            .first()?
            .auth_info
            .as_ref()?
            .client_certificate_data
            .as_deref()?,
    )
}

fn decode(b64: &str) -> Option<String> {
    String::from_utf8(B64.decode(b64).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::pki::{CertKey, KeyPem};

    fn client() -> CertKey {
        CertKey {
            cert_pem: "CERT".into(),
            key: KeyPem::new("KEY".into()),
        }
    }

    #[test]
    fn kubeconfig_has_client_go_field_names() {
        let text =
            client_kubeconfig("c1", "admin", "https://[fd00::1]:6443", "CA", &client()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["kind"], "Config");
        assert_eq!(v["current-context"], "admin@c1");
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"],
            "Q0E="
        );
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://[fd00::1]:6443"
        );
        assert_eq!(v["users"][0]["user"]["client-certificate-data"], "Q0VSVA==");
        assert_eq!(v["users"][0]["user"]["client-key-data"], "S0VZ");
        let back = parse(&text).unwrap();
        assert_eq!(
            back.contexts[0].context.as_ref().unwrap().user.as_deref(),
            Some("admin")
        );
        assert_eq!(ca_pem(&back).unwrap(), "CA");
        assert_eq!(client_cert_pem(&back).unwrap(), "CERT");
        assert!(!format!("{back:?}").contains("S0VZ"));
    }

    /// Names that YAML 1.1 (client-go) reads as booleans, numbers or null
    /// when written plain. kubectl, when present, parses each file as
    /// client-go does and must see the name as a string.
    #[test]
    fn yaml_1_1_scalars_stay_strings_for_client_go() {
        let kubectl = std::process::Command::new("kubectl")
            .arg("version")
            .arg("--client")
            .output()
            .is_ok_and(|o| o.status.success());
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "y", "n", "yes", "no", "on", "off", "true", "null", "1", "1e3", "0x1f",
        ] {
            let text = client_kubeconfig(name, "admin", "https://127.0.0.1:6443", "CA", &client())
                .unwrap();
            let back = parse(&text).unwrap();
            assert_eq!(back.clusters[0].name, name);
            if !kubectl {
                continue;
            }
            let path = dir.path().join(format!("{name}.conf"));
            std::fs::write(&path, &text).unwrap();
            let out = std::process::Command::new("kubectl")
                .args(["config", "view", "--raw", "-o", "json", "--kubeconfig"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "kubectl refused the kubeconfig of cluster {name:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["clusters"][0]["name"], name, "{v}");
            assert_eq!(v["contexts"][0]["context"]["cluster"], name, "{v}");
            assert_eq!(v["current-context"], format!("admin@{name}"), "{v}");
        }
    }
}
