//! Which `kubernetes.io/kubelet-serving` CSRs the coordinator approves
//! (pure). The controller-manager signs them once approved, but never
//! approves them itself: the API servers verify kubelets with the
//! kubelet-serving CA, so an approved certificate is what lets `kubectl
//! logs`, `exec` and `port-forward` reach a node.
//!
//! Approved only when all of these hold:
//! * the requester is `system:node:<name>` and in the group `system:nodes`
//!   (a node's own credential, not a bootstrap token's);
//! * the request's subject is that user in the organization
//!   `system:nodes`, and nothing else;
//! * its usages are server auth, with digital signature and, for RSA keys,
//!   key encipherment; nothing else;
//! * it names at least one subject alternative name, every DNS name and
//!   IP address among them is one of that node's addresses (as its Node
//!   object reports them, plus the node's VPN address when it has one),
//!   and it names no e-mail address or URI.
//!
//! A request for a node not registered yet waits; everything else is
//! denied, with the reason in the CSR's Denied condition.

use std::collections::BTreeSet;
use std::net::IpAddr;
use x509_parser::prelude::*;

pub const SIGNER: &str = "kubernetes.io/kubelet-serving";
/// The signer of kubelets' client certificates (TLS bootstrap).
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
const NODE_USER_PREFIX: &str = "system:node:";
const NODES_GROUP: &str = "system:nodes";

/// What a CSR says about itself and its requester (from the API).
#[derive(Clone, Debug, Default)]
pub struct ServingCsr<'a> {
    pub signer_name: &'a str,
    pub username: &'a str,
    pub groups: &'a [String],
    pub usages: &'a [String],
    /// `spec.request`: a PEM `CERTIFICATE REQUEST`.
    pub request_pem: &'a [u8],
}

/// A node's addresses: what its Node object reports, and its VPN address.
#[derive(Clone, Debug, Default)]
pub struct NodeAddresses {
    pub names: BTreeSet<String>,
    pub ips: BTreeSet<IpAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Deny(String),
    /// Not decided yet (the node is not registered).
    Wait(String),
    /// Another signer's request: not ours to decide.
    NotOurs,
}

/// The node a requester claims to be, if it is a node's credential.
pub fn requesting_node<'a>(username: &'a str, groups: &[String]) -> Option<&'a str> {
    let name = username.strip_prefix(NODE_USER_PREFIX)?;
    (!name.is_empty() && groups.iter().any(|g| g == NODES_GROUP)).then_some(name)
}

/// Decides one CSR. `node` is the requesting node's addresses, `None`
/// when no Node of that name exists.
pub fn judge(csr: &ServingCsr<'_>, node: Option<&NodeAddresses>) -> Verdict {
    if csr.signer_name != SIGNER {
        return Verdict::NotOurs;
    }
    let Some(name) = requesting_node(csr.username, csr.groups) else {
        return Verdict::Deny(format!(
            "requested by {:?}, not by a node (system:node:<name> in system:nodes)",
            csr.username
        ));
    };
    let allowed = ["digital signature", "key encipherment", "server auth"];
    if !csr.usages.iter().any(|u| u == "server auth")
        || csr.usages.iter().any(|u| !allowed.contains(&u.as_str()))
    {
        return Verdict::Deny(format!(
            "usages {:?}: only server auth (with digital signature, key encipherment) is allowed",
            csr.usages
        ));
    }
    let parsed = match parse(csr.request_pem) {
        Ok(p) => p,
        Err(e) => return Verdict::Deny(format!("unreadable request: {e}")),
    };
    if parsed.common_names != [csr.username.to_string()]
        || parsed.organizations != [NODES_GROUP.to_string()]
        || parsed.other_subject
    {
        return Verdict::Deny(format!(
            "the subject must be CN={} O={NODES_GROUP} and nothing else",
            csr.username
        ));
    }
    if parsed.other_sans {
        return Verdict::Deny("e-mail and URI subject alternative names are not allowed".into());
    }
    if parsed.names.is_empty() && parsed.ips.is_empty() {
        return Verdict::Deny("no subject alternative name".into());
    }
    let Some(node) = node else {
        return Verdict::Wait(format!("node {name:?} is not registered yet"));
    };
    let foreign: Vec<String> = parsed
        .names
        .iter()
        .filter(|n| !node.names.contains(*n))
        .cloned()
        .chain(
            parsed
                .ips
                .iter()
                .filter(|ip| !node.ips.contains(*ip))
                .map(IpAddr::to_string),
        )
        .collect();
    if !foreign.is_empty() {
        return Verdict::Deny(format!(
            "{} {} not among node {name:?}'s addresses",
            foreign.join(", "),
            if foreign.len() == 1 { "is" } else { "are" }
        ));
    }
    Verdict::Approve
}

/// The node a kubelet client CSR (`kubernetes.io/kube-apiserver-client-
/// kubelet`) asks a certificate for: its subject's `system:node:<name>`.
/// No signature check: only used to label what the controller-manager
/// already approved.
pub fn client_request_node(pem: &[u8]) -> Option<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let (_, csr) = X509CertificationRequest::from_der(&pem.contents).ok()?;
    let cn = csr
        .certification_request_info
        .subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?;
    cn.strip_prefix(NODE_USER_PREFIX)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

/// The token id of a bootstrap identity (`system:bootstrap:<id>`).
pub fn bootstrap_token_id(username: &str) -> Option<&str> {
    username
        .strip_prefix("system:bootstrap:")
        .filter(|id| oi_api_types::token::is_token_id(id))
}

struct Parsed {
    common_names: Vec<String>,
    organizations: Vec<String>,
    /// Subject attributes other than CN and O.
    other_subject: bool,
    names: Vec<String>,
    ips: Vec<IpAddr>,
    /// SANs other than DNS names and IP addresses.
    other_sans: bool,
}

fn parse(pem: &[u8]) -> Result<Parsed, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("PEM: {e}"))?;
    if pem.label != "CERTIFICATE REQUEST" {
        return Err(format!("a PEM {:?}, not a CERTIFICATE REQUEST", pem.label));
    }
    let (_, csr) =
        X509CertificationRequest::from_der(&pem.contents).map_err(|e| format!("DER: {e}"))?;
    csr.verify_signature()
        .map_err(|e| format!("signature does not verify: {e}"))?;
    let info = &csr.certification_request_info;
    let text = |a: &AttributeTypeAndValue<'_>| a.as_str().map(str::to_string).unwrap_or_default();
    let mut out = Parsed {
        common_names: info.subject.iter_common_name().map(text).collect(),
        organizations: info.subject.iter_organization().map(text).collect(),
        other_subject: false,
        names: vec![],
        ips: vec![],
        other_sans: false,
    };
    let known = [
        x509_parser::oid_registry::OID_X509_COMMON_NAME,
        x509_parser::oid_registry::OID_X509_ORGANIZATION_NAME,
    ];
    out.other_subject = info
        .subject
        .iter_attributes()
        .any(|a| !known.contains(a.attr_type()));
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(n) => out.names.push(n.to_string()),
                    GeneralName::IPAddress(b) => match ip(b) {
                        Some(a) => out.ips.push(a),
                        None => out.other_sans = true,
                    },
                    _ => out.other_sans = true,
                }
            }
        }
    }
    Ok(out)
}

fn ip(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    fn request(cn: &str, org: Option<&str>, sans: Vec<SanType>, extra_dn: bool) -> Vec<u8> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        if let Some(o) = org {
            dn.push(DnType::OrganizationName, o);
        }
        if extra_dn {
            dn.push(DnType::CountryName, "ZZ");
        }
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        params
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap()
            .into_bytes()
    }

    fn node() -> NodeAddresses {
        NodeAddresses {
            names: BTreeSet::from(["w1".to_string()]),
            ips: BTreeSet::from(["10.77.0.21".parse().unwrap(), "10.99.0.2".parse().unwrap()]),
        }
    }

    fn dns(n: &str) -> SanType {
        SanType::DnsName(n.try_into().unwrap())
    }

    fn ipsan(a: &str) -> SanType {
        SanType::IpAddress(a.parse().unwrap())
    }

    /// (what, signer, user, groups, usages, request, node, verdict)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        &'a [String],
        &'a [String],
        &'a [u8],
        Option<&'a NodeAddresses>,
        &'a str,
    );

    #[test]
    fn the_rules_in_a_table() {
        let node_groups = vec!["system:nodes".to_string(), "system:authenticated".into()];
        let boot_groups = vec!["system:bootstrappers".to_string()];
        let serving = vec!["digital signature".to_string(), "server auth".into()];
        let rsa = vec![
            "digital signature".to_string(),
            "key encipherment".into(),
            "server auth".into(),
        ];
        let client = vec!["digital signature".to_string(), "client auth".into()];
        let good = request(
            "system:node:w1",
            Some("system:nodes"),
            vec![dns("w1"), ipsan("10.77.0.21"), ipsan("10.99.0.2")],
            false,
        );
        let foreign_ip = request(
            "system:node:w1",
            Some("system:nodes"),
            vec![ipsan("10.77.0.99")],
            false,
        );
        let foreign_name = request(
            "system:node:w1",
            Some("system:nodes"),
            vec![dns("kubernetes.default")],
            false,
        );
        let email = request(
            "system:node:w1",
            Some("system:nodes"),
            vec![
                ipsan("10.77.0.21"),
                SanType::Rfc822Name("a@b.c".try_into().unwrap()),
            ],
            false,
        );
        let other_cn = request(
            "system:node:w2",
            Some("system:nodes"),
            vec![ipsan("10.77.0.21")],
            false,
        );
        let no_org = request("system:node:w1", None, vec![ipsan("10.77.0.21")], false);
        let extra_dn = request(
            "system:node:w1",
            Some("system:nodes"),
            vec![ipsan("10.77.0.21")],
            true,
        );
        let no_san = request("system:node:w1", Some("system:nodes"), vec![], false);
        let n = node();
        let cases: Vec<Case<'_>> = vec![
            (
                "approve",
                SIGNER,
                "system:node:w1",
                &node_groups,
                &serving,
                &good,
                Some(&n),
                "approve",
            ),
            (
                "approve rsa usages",
                SIGNER,
                "system:node:w1",
                &node_groups,
                &rsa,
                &good,
                Some(&n),
                "approve",
            ),
            (
                "another signer",
                "kubernetes.io/kube-apiserver-client-kubelet",
                "system:bootstrap:abcdef",
                &boot_groups,
                &client,
                &good,
                None,
                "ours",
            ),
            (
                "bootstrap token",
                SIGNER,
                "system:bootstrap:abcdef",
                &boot_groups,
                &serving,
                &good,
                Some(&n),
                "deny",
            ),
            (
                "node user outside system:nodes",
                SIGNER,
                "system:node:w1",
                &boot_groups,
                &serving,
                &good,
                Some(&n),
                "deny",
            ),
            (
                "client usage",
                SIGNER,
                "system:node:w1",
                &node_groups,
                &client,
                &good,
                Some(&n),
                "deny",
            ),
            (
                "foreign ip",
                SIGNER,
                "system:node:w1",
                &node_groups,
                &serving,
                &foreign_ip,
                Some(&n),
                "deny",
            ),
            (
                "foreign name",
                SIGNER,
                "system:node:w1",
                &node_groups,
                &serving,
                &foreign_name,
                Some(&n),
                "deny",
            ),
            (
                "e-mail san",
                SIGNER,
                "system:node:w1",
                &node_groups,
                &serving,
                &email,
                Some(&n),
                "deny",
            ),
            (
                "another node's name",
                SIGNER,
                "system:node:w1",
                &node_groups,
                &serving,
                &other_cn,
                Some(&n),
                "deny",
            ),
            (
                "no organization",
                SIGNER,
                "system:node:w1",
                &node_groups,
                &serving,
                &no_org,
                Some(&n),
                "deny",
            ),
            (
                "extra subject",
                SIGNER,
                "system:node:w1",
                &node_groups,
                &serving,
                &extra_dn,
                Some(&n),
                "deny",
            ),
            (
                "no san",
                SIGNER,
                "system:node:w1",
                &node_groups,
                &serving,
                &no_san,
                Some(&n),
                "deny",
            ),
            (
                "garbage",
                SIGNER,
                "system:node:w1",
                &node_groups,
                &serving,
                b"junk",
                Some(&n),
                "deny",
            ),
            (
                "node not registered",
                SIGNER,
                "system:node:w1",
                &node_groups,
                &serving,
                &good,
                None,
                "wait",
            ),
        ];
        for (what, signer, user, groups, usages, pem, node, want) in cases {
            let v = judge(
                &ServingCsr {
                    signer_name: signer,
                    username: user,
                    groups,
                    usages,
                    request_pem: pem,
                },
                node,
            );
            let got = match &v {
                Verdict::Approve => "approve",
                Verdict::Deny(_) => "deny",
                Verdict::Wait(_) => "wait",
                Verdict::NotOurs => "ours",
            };
            assert_eq!(got, want, "{what}: {v:?}");
        }
    }

    #[test]
    fn client_requests_name_their_node_and_token() {
        let pem = request("system:node:w1", Some("system:nodes"), vec![], false);
        assert_eq!(client_request_node(&pem).as_deref(), Some("w1"));
        let other = request("admin", None, vec![], false);
        assert_eq!(client_request_node(&other), None);
        assert_eq!(
            bootstrap_token_id("system:bootstrap:abcdef"),
            Some("abcdef")
        );
        assert_eq!(bootstrap_token_id("system:bootstrap:ABC"), None);
        assert_eq!(bootstrap_token_id("system:node:w1"), None);
    }

    #[test]
    fn a_denial_names_what_is_wrong() {
        let groups = vec!["system:nodes".to_string()];
        let usages = vec!["server auth".to_string()];
        let pem = request(
            "system:node:w1",
            Some("system:nodes"),
            vec![ipsan("10.77.0.99")],
            false,
        );
        let v = judge(
            &ServingCsr {
                signer_name: SIGNER,
                username: "system:node:w1",
                groups: &groups,
                usages: &usages,
                request_pem: &pem,
            },
            Some(&node()),
        );
        assert_eq!(
            v,
            Verdict::Deny("10.77.0.99 is not among node \"w1\"'s addresses".into())
        );
    }
}
