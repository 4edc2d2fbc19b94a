//! One PKI per managed cluster: its certificate authorities, the
//! service-account key pair, the leaf certificates of each control-plane
//! replica and admin kubeconfigs.
//!
//! Every key is ECDSA P-256 (rcgen with ring cannot generate RSA). The
//! kube-apiserver of every served version accepts a P-256
//! `--service-account-signing-key-file` and signs tokens with ES256 (checked
//! with the real binaries by `tests/tests/render_host.rs`, which asks for a
//! token through the TokenRequest API).
//!
//! Lifetimes: CAs 10 years, leaves 1 year. Rotation of leaves (and of the
//! service-account key) comes later; until then a cluster must be re-issued
//! within a year.
//!
//! [`ClusterPki`] and [`ReplicaCerts`] serialize their keys in clear: the
//! coordinator seals the whole blob with its key-encryption key before
//! storing it. Their `Debug` prints no key material.

use super::kubeconfig;
use super::model::{Allocation, ClusterSpec, ReplicaSlot};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Lifetime of every leaf certificate. Rotation comes later.
pub const LEAF_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// The user of the apiserver's client certificate towards kubelets. It is
/// NOT in `system:masters` (unlike kubeadm): a leaked key on a hypervisor
/// must not be cluster-admin. Kubelets authorize it through the API
/// (webhook), which needs [`KUBELET_API_ADMIN_BINDING`] applied once the
/// API is up.
pub const APISERVER_KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";
pub const CONTROLLER_MANAGER_USER: &str = "system:kube-controller-manager";
pub const SCHEDULER_USER: &str = "system:kube-scheduler";
pub const FRONT_PROXY_CLIENT_USER: &str = "front-proxy-client";
/// Common name and group of admin kubeconfigs.
pub const ADMIN_USER: &str = "oneinfra-admin";
pub const ADMIN_GROUP: &str = "system:masters";

/// Grants [`APISERVER_KUBELET_CLIENT_USER`] the built-in
/// `system:kubelet-api-admin` role (logs, exec, port-forward, metrics on
/// kubelets). Apply it with an admin kubeconfig when the cluster is ready.
pub const KUBELET_API_ADMIN_BINDING: &str = "\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: oneinfra:kube-apiserver-kubelet-client
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:kubelet-api-admin
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: kube-apiserver-kubelet-client
";

/// Why PKI material could not be made. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generate {what}: {source}")]
    Generate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("load {what} from the stored cluster PKI: {source}; restore the PKI from a backup")]
    Load {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("{name:?} cannot go on a certificate: use an IP address or a DNS name")]
    San { name: String },
    #[error(
        "service CIDR {0:?} has no first address for the kubernetes Service: validate the spec \
         before issuing certificates"
    )]
    ServiceIp(String),
    #[error(transparent)]
    Kubeconfig(#[from] kubeconfig::KubeconfigError),
}

pub type Result<T, E = PkiError> = std::result::Result<T, E>;

/// A PEM private key. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyPem(String);

impl KeyPem {
    pub fn new(pem: String) -> Self {
        Self(pem)
    }
    /// The PEM text; write it only to a 0600 file.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<key hidden>")
    }
}

/// A certificate (PEM) and its private key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertKey {
    pub cert_pem: String,
    pub key: KeyPem,
}

impl fmt::Debug for CertKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertKey")
            .field("cert_pem", &format_args!("<{} bytes>", self.cert_pem.len()))
            .field("key", &self.key)
            .finish()
    }
}

/// The key pair that signs and verifies service-account tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAccountKey {
    /// SPKI PEM (`PUBLIC KEY`): `--service-account-key-file`.
    pub public_pem: String,
    /// PKCS#8 PEM: `--service-account-signing-key-file` and the
    /// controller-manager's `--service-account-private-key-file`.
    pub private: KeyPem,
}

/// The authorities of one cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterPki {
    /// "kubernetes-ca": signs apiserver serving certificates; what clients
    /// (kubeconfigs, pods via `--root-ca-file`) trust.
    pub apiserver_ca: CertKey,
    /// Signs every client of the API (admins, components, nodes); also the
    /// controller-manager's signer for kubelet client CSRs.
    pub client_ca: CertKey,
    pub etcd_server_ca: CertKey,
    pub etcd_peer_ca: CertKey,
    pub etcd_client_ca: CertKey,
    /// Signs kubelet serving certificates (the controller-manager's signer
    /// for `kubernetes.io/kubelet-serving` CSRs); the apiserver verifies
    /// kubelets with it.
    pub kubelet_serving_ca: CertKey,
    /// Signs the apiserver's client certificate towards kubelets; kubelets'
    /// `--client-ca-file`.
    pub kubelet_client_ca: CertKey,
    pub front_proxy_ca: CertKey,
    pub service_account: ServiceAccountKey,
}

/// The leaf certificates of one control-plane replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaCerts {
    pub apiserver: CertKey,
    pub apiserver_etcd_client: CertKey,
    pub apiserver_kubelet_client: CertKey,
    pub front_proxy_client: CertKey,
    pub etcd_server: CertKey,
    pub etcd_peer: CertKey,
    pub controller_manager: CertKey,
    pub scheduler: CertKey,
}

#[derive(Clone, Copy)]
enum Usage {
    Server,
    Client,
    /// etcd peers dial each other with the same certificate they serve.
    ServerAndClient,
}

struct Leaf<'a> {
    what: &'a str,
    common_name: &'a str,
    organization: Option<&'a str>,
    sans: Vec<SanType>,
    usage: Usage,
}

fn set_validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = time::OffsetDateTime::now_utc();
    // Tolerate clock skew between machines.
    params.not_before = now - Duration::from_secs(3600);
    params.not_after = now + lifetime;
    params.serial_number = Some(SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
}

fn new_key(what: &str) -> Result<KeyPair> {
    KeyPair::generate().map_err(|source| PkiError::Generate {
        what: format!("{what} key"),
        source,
    })
}

fn new_ca(cluster: &str, common_name: &str) -> Result<CertKey> {
    let key = new_key(common_name)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::OrganizationName,
        format!("oneinfra cluster {cluster}"),
    );
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, CA_LIFETIME);
    let cert = params
        .self_signed(&key)
        .map_err(|source| PkiError::Generate {
            what: common_name.into(),
            source,
        })?;
    Ok(CertKey {
        cert_pem: cert.pem(),
        key: KeyPem(key.serialize_pem()),
    })
}

fn issuer(ca: &CertKey, what: &'static str) -> Result<Issuer<'static, KeyPair>> {
    let load = |source| PkiError::Load { what, source };
    let key = KeyPair::from_pem(ca.key.expose()).map_err(load)?;
    Issuer::from_ca_cert_pem(&ca.cert_pem, key).map_err(load)
}

fn issue(ca: &CertKey, ca_name: &'static str, leaf: Leaf<'_>) -> Result<CertKey> {
    let issuer = issuer(ca, ca_name)?;
    let key = new_key(leaf.what)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(o) = leaf.organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn.push(DnType::CommonName, leaf.common_name);
    params.distinguished_name = dn;
    params.subject_alt_names = leaf.sans;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match leaf.usage {
        Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Usage::ServerAndClient => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    };
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, LEAF_LIFETIME);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|source| PkiError::Generate {
            what: leaf.what.into(),
            source,
        })?;
    Ok(CertKey {
        cert_pem: cert.pem(),
        key: KeyPem(key.serialize_pem()),
    })
}

/// SANs from names and addresses, in order, without duplicates.
fn sans<S: AsRef<str>>(names: &[S]) -> Result<Vec<SanType>> {
    let mut out: Vec<SanType> = Vec::new();
    for name in names {
        let name = name.as_ref();
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.to_string().try_into().map_err(|_| PkiError::San {
                name: name.to_string(),
            })?),
        };
        if !out.contains(&san) {
            out.push(san);
        }
    }
    Ok(out)
}

/// The names on a replica's apiserver serving certificate.
pub fn apiserver_names(
    spec: &ClusterSpec,
    allocation: &Allocation,
    slot: &ReplicaSlot,
) -> Result<Vec<String>> {
    let service_ip = spec
        .kubernetes_service_ip()
        .ok_or_else(|| PkiError::ServiceIp(spec.service_cidr.clone()))?;
    let mut names = vec![
        allocation.ingress.address.clone(),
        slot.address.clone(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        "kubernetes.default.svc.cluster.local".into(),
        service_ip.to_string(),
        "localhost".into(),
        "127.0.0.1".into(),
    ];
    names.extend(spec.api_server_extra_sans.iter().cloned());
    Ok(names)
}

/// etcd member name of a replica: `<cluster>-<index>`.
pub fn etcd_member_name(cluster: &str, index: u32) -> String {
    format!("{cluster}-{index}")
}

impl ClusterPki {
    /// New authorities and service-account key for cluster `cluster_name`.
    pub fn generate(cluster_name: &str) -> Result<Self> {
        let ca = |cn: &str| new_ca(cluster_name, cn);
        let sa = new_key("service-account")?;
        Ok(Self {
            apiserver_ca: ca("kubernetes-ca")?,
            client_ca: ca("kubernetes-client-ca")?,
            etcd_server_ca: ca("etcd-server-ca")?,
            etcd_peer_ca: ca("etcd-peer-ca")?,
            etcd_client_ca: ca("etcd-client-ca")?,
            kubelet_serving_ca: ca("kubelet-serving-ca")?,
            kubelet_client_ca: ca("kubelet-client-ca")?,
            front_proxy_ca: ca("front-proxy-ca")?,
            service_account: ServiceAccountKey {
                public_pem: sa.public_key_pem(),
                private: KeyPem(sa.serialize_pem()),
            },
        })
    }

    /// Leaf certificates for the replica in `slot` of `allocation`.
    pub fn issue_replica(
        &self,
        spec: &ClusterSpec,
        allocation: &Allocation,
        slot: &ReplicaSlot,
    ) -> Result<ReplicaCerts> {
        let member = etcd_member_name(&spec.name, slot.index);
        let client = |what, common_name, organization| Leaf {
            what,
            common_name,
            organization,
            sans: vec![],
            usage: Usage::Client,
        };
        Ok(ReplicaCerts {
            apiserver: issue(
                &self.apiserver_ca,
                "kubernetes-ca",
                Leaf {
                    what: "apiserver serving certificate",
                    common_name: "kube-apiserver",
                    organization: None,
                    sans: sans(&apiserver_names(spec, allocation, slot)?)?,
                    usage: Usage::Server,
                },
            )?,
            apiserver_etcd_client: issue(
                &self.etcd_client_ca,
                "etcd-client-ca",
                client(
                    "apiserver etcd client certificate",
                    "kube-apiserver-etcd-client",
                    None,
                ),
            )?,
            apiserver_kubelet_client: issue(
                &self.kubelet_client_ca,
                "kubelet-client-ca",
                client(
                    "apiserver kubelet client certificate",
                    APISERVER_KUBELET_CLIENT_USER,
                    None,
                ),
            )?,
            front_proxy_client: issue(
                &self.front_proxy_ca,
                "front-proxy-ca",
                client(
                    "front-proxy client certificate",
                    FRONT_PROXY_CLIENT_USER,
                    None,
                ),
            )?,
            etcd_server: issue(
                &self.etcd_server_ca,
                "etcd-server-ca",
                Leaf {
                    what: "etcd serving certificate",
                    common_name: &member,
                    organization: None,
                    sans: sans(&[slot.address.as_str(), "127.0.0.1", "localhost"])?,
                    // Also a client certificate, as kubeadm's: etcd 3.6's
                    // gRPC gateway dials the member's own client port with
                    // it, and etcd rejects it without clientAuth ("certificate
                    // specifies an incompatible key usage").
                    usage: Usage::ServerAndClient,
                },
            )?,
            etcd_peer: issue(
                &self.etcd_peer_ca,
                "etcd-peer-ca",
                Leaf {
                    what: "etcd peer certificate",
                    common_name: &member,
                    organization: None,
                    sans: sans(&[slot.address.as_str()])?,
                    usage: Usage::ServerAndClient,
                },
            )?,
            controller_manager: issue(
                &self.client_ca,
                "kubernetes-client-ca",
                client(
                    "controller-manager client certificate",
                    CONTROLLER_MANAGER_USER,
                    None,
                ),
            )?,
            scheduler: issue(
                &self.client_ca,
                "kubernetes-client-ca",
                client("scheduler client certificate", SCHEDULER_USER, None),
            )?,
        })
    }

    /// A fresh client certificate for the API, signed by the client CA.
    /// `organization` is the user's group.
    pub fn issue_client(&self, common_name: &str, organization: Option<&str>) -> Result<CertKey> {
        issue(
            &self.client_ca,
            "kubernetes-client-ca",
            Leaf {
                what: "client certificate",
                common_name,
                organization,
                sans: vec![],
                usage: Usage::Client,
            },
        )
    }

    /// An admin kubeconfig for `cluster` at `endpoint`
    /// (`https://ADDRESS:PORT`) with a fresh `system:masters` certificate.
    pub fn admin_kubeconfig(&self, cluster: &str, endpoint: &str) -> Result<String> {
        let cert = self.issue_client(ADMIN_USER, Some(ADMIN_GROUP))?;
        Ok(kubeconfig::client_kubeconfig(
            cluster,
            ADMIN_USER,
            endpoint,
            &self.apiserver_ca.cert_pem,
            &cert,
        )?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cluster::model::{IngressSlot, ReplicaPorts};
    use x509_parser::prelude::*;

    pub(crate) fn allocation(replicas: u32) -> Allocation {
        Allocation {
            replicas: (0..replicas)
                .map(|i| ReplicaSlot {
                    etcd: Default::default(),
                    index: i,
                    hypervisor: format!("hv-{i}"),
                    address: format!("192.0.2.{}", 10 + i),
                    ports: ReplicaPorts::from_slice(
                        &(0..6)
                            .map(|p| 30000 + i as u16 * 10 + p)
                            .collect::<Vec<_>>(),
                    )
                    .unwrap(),
                })
                .collect(),
            ingress: IngressSlot {
                hypervisor: "pub-0".into(),
                address: "198.51.100.7".into(),
                port: 31000,
            },
        }
    }

    pub(crate) fn pem_der(pem: &str) -> Vec<u8> {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        p.contents
    }

    pub(crate) fn with_cert<T>(pem: &str, f: impl FnOnce(&X509Certificate<'_>) -> T) -> T {
        let der = pem_der(pem);
        let (_, cert) = parse_x509_certificate(&der).unwrap();
        f(&cert)
    }

    fn subject(pem: &str) -> (String, Vec<String>) {
        with_cert(pem, |c| {
            let cn = c
                .subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap()
                .to_string();
            let orgs = c
                .subject()
                .iter_organization()
                .map(|o| o.as_str().unwrap().to_string())
                .collect();
            (cn, orgs)
        })
    }

    fn san_strings(pem: &str) -> Vec<String> {
        with_cert(pem, |c| {
            c.subject_alternative_name()
                .unwrap()
                .map(|s| {
                    s.value
                        .general_names
                        .iter()
                        .map(|g| match g {
                            GeneralName::DNSName(d) => d.to_string(),
                            GeneralName::IPAddress(b) if b.len() == 4 => {
                                IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()).to_string()
                            }
                            other => format!("{other:?}"),
                        })
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    /// Whether `leaf` verifies against `ca` (signature and key identifiers).
    fn signed_by(leaf: &str, ca: &str) -> bool {
        let ca_der = pem_der(ca);
        let (_, ca_cert) = parse_x509_certificate(&ca_der).unwrap();
        with_cert(leaf, |l| {
            let aki = l
                .extensions()
                .iter()
                .find_map(|e| match e.parsed_extension() {
                    ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.clone(),
                    _ => None,
                });
            let ski = ca_cert
                .extensions()
                .iter()
                .find_map(|e| match e.parsed_extension() {
                    ParsedExtension::SubjectKeyIdentifier(s) => Some(s.clone()),
                    _ => None,
                });
            l.verify_signature(Some(ca_cert.public_key())).is_ok()
                && aki.map(|a| a.0.to_vec()) == ski.map(|s| s.0.to_vec())
                && l.issuer() == ca_cert.subject()
        })
    }

    #[test]
    fn replica_certificates_carry_the_right_names_and_issuers() {
        let mut spec = ClusterSpec::new("c1", "1.37.2", 3);
        spec.api_server_extra_sans = vec!["api.example.com".into(), "203.0.113.9".into()];
        let alloc = allocation(3);
        let pki = ClusterPki::generate("c1").unwrap();
        let certs = pki
            .issue_replica(&spec, &alloc, &alloc.replicas[1])
            .unwrap();

        let api_sans = san_strings(&certs.apiserver.cert_pem);
        for want in [
            "198.51.100.7",
            "192.0.2.11",
            "10.96.0.1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "localhost",
            "127.0.0.1",
            "api.example.com",
            "203.0.113.9",
        ] {
            assert!(
                api_sans.contains(&want.to_string()),
                "{want} in {api_sans:?}"
            );
        }
        assert_eq!(
            san_strings(&certs.etcd_server.cert_pem),
            vec!["192.0.2.11", "127.0.0.1", "localhost"]
        );
        assert_eq!(san_strings(&certs.etcd_peer.cert_pem), vec!["192.0.2.11"]);
        assert_eq!(subject(&certs.etcd_peer.cert_pem).0, "c1-1");

        assert_eq!(
            subject(&certs.controller_manager.cert_pem),
            ("system:kube-controller-manager".into(), vec![])
        );
        assert_eq!(
            subject(&certs.scheduler.cert_pem),
            ("system:kube-scheduler".into(), vec![])
        );
        assert_eq!(
            subject(&certs.apiserver_kubelet_client.cert_pem),
            ("kube-apiserver-kubelet-client".into(), vec![])
        );
        assert_eq!(
            subject(&certs.front_proxy_client.cert_pem).0,
            "front-proxy-client"
        );

        let pairs = [
            (&certs.apiserver, &pki.apiserver_ca),
            (&certs.apiserver_etcd_client, &pki.etcd_client_ca),
            (&certs.apiserver_kubelet_client, &pki.kubelet_client_ca),
            (&certs.front_proxy_client, &pki.front_proxy_ca),
            (&certs.etcd_server, &pki.etcd_server_ca),
            (&certs.etcd_peer, &pki.etcd_peer_ca),
            (&certs.controller_manager, &pki.client_ca),
            (&certs.scheduler, &pki.client_ca),
        ];
        let cas = [
            &pki.apiserver_ca,
            &pki.client_ca,
            &pki.etcd_server_ca,
            &pki.etcd_peer_ca,
            &pki.etcd_client_ca,
            &pki.kubelet_serving_ca,
            &pki.kubelet_client_ca,
            &pki.front_proxy_ca,
        ];
        for (leaf, issuer) in pairs {
            // Signed by its CA and by no other CA of the cluster.
            for ca in cas {
                assert_eq!(signed_by(&leaf.cert_pem, &ca.cert_pem), ca == issuer);
            }
        }
    }

    #[test]
    fn authorities_are_distinct_and_long_lived() {
        let pki = ClusterPki::generate("c1").unwrap();
        let cas = [
            &pki.apiserver_ca,
            &pki.client_ca,
            &pki.etcd_server_ca,
            &pki.etcd_peer_ca,
            &pki.etcd_client_ca,
            &pki.kubelet_serving_ca,
            &pki.kubelet_client_ca,
            &pki.front_proxy_ca,
        ];
        let mut names: Vec<String> = cas.iter().map(|c| subject(&c.cert_pem).0).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), cas.len());
        for ca in cas {
            with_cert(&ca.cert_pem, |c| {
                assert!(c.is_ca());
                let days = (c.validity().not_after.timestamp()
                    - c.validity().not_before.timestamp())
                    / 86400;
                assert!(days >= 3650, "{days}");
            });
        }
        let certs = pki
            .issue_replica(
                &ClusterSpec::new("c1", "1.37.2", 1),
                &allocation(1),
                &allocation(1).replicas[0],
            )
            .unwrap();
        with_cert(&certs.apiserver.cert_pem, |c| {
            let days =
                (c.validity().not_after.timestamp() - c.validity().not_before.timestamp()) / 86400;
            assert!((365..=366).contains(&days), "{days}");
        });
        assert!(pki.service_account.public_pem.contains("BEGIN PUBLIC KEY"));
        assert!(pki
            .service_account
            .private
            .expose()
            .contains("BEGIN PRIVATE KEY"));
    }

    #[test]
    fn debug_hides_keys_and_serde_round_trips() {
        let pki = ClusterPki::generate("c1").unwrap();
        let alloc = allocation(1);
        let certs = pki
            .issue_replica(
                &ClusterSpec::new("c1", "1.37.2", 1),
                &alloc,
                &alloc.replicas[0],
            )
            .unwrap();
        let dbg = format!("{pki:?} {certs:?}");
        assert!(!dbg.contains("PRIVATE KEY"), "{dbg}");
        let body: String = pki
            .client_ca
            .key
            .expose()
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        assert!(!dbg.contains(&body[..32]), "{dbg}");
        assert!(dbg.contains("<key hidden>"));

        let json = serde_json::to_string(&pki).unwrap();
        let back: ClusterPki = serde_json::from_str(&json).unwrap();
        assert_eq!(back, pki);
        let json = serde_json::to_string(&certs).unwrap();
        let back: ReplicaCerts = serde_json::from_str(&json).unwrap();
        assert_eq!(back, certs);
        // A deserialized PKI still issues.
        let again = back_issue(&pki);
        assert!(signed_by(&again.cert_pem, &pki.client_ca.cert_pem));
    }

    fn back_issue(pki: &ClusterPki) -> CertKey {
        let restored: ClusterPki =
            serde_json::from_str(&serde_json::to_string(pki).unwrap()).unwrap();
        restored.issue_client("someone", None).unwrap()
    }

    #[test]
    fn admin_kubeconfig_names_the_endpoint_and_is_a_master() {
        let pki = ClusterPki::generate("c1").unwrap();
        let yaml = pki
            .admin_kubeconfig("c1", "https://198.51.100.7:31000")
            .unwrap();
        let cfg = kubeconfig::parse(&yaml).unwrap();
        assert_eq!(kubeconfig::server(&cfg), Some("https://198.51.100.7:31000"));
        assert_eq!(cfg.current_context.as_ref(), Some(&cfg.contexts[0].name));
        let ca = kubeconfig::ca_pem(&cfg).unwrap();
        assert_eq!(ca, pki.apiserver_ca.cert_pem);
        let cert = kubeconfig::client_cert_pem(&cfg).unwrap();
        assert_eq!(
            subject(&cert),
            ("oneinfra-admin".into(), vec!["system:masters".into()])
        );
        assert!(signed_by(&cert, &pki.client_ca.cert_pem));
    }

    #[test]
    fn bad_extra_san_is_refused() {
        let mut spec = ClusterSpec::new("c1", "1.37.2", 1);
        spec.api_server_extra_sans = vec!["not a name\u{7f}é".into()];
        let alloc = allocation(1);
        let pki = ClusterPki::generate("c1").unwrap();
        let err = pki
            .issue_replica(&spec, &alloc, &alloc.replicas[0])
            .unwrap_err();
        assert!(
            err.to_string().contains("IP address or a DNS name"),
            "{err}"
        );
    }
}
