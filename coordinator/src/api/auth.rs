//! Who may call the admin API: clients whose certificate, issued by the
//! coordinator's CA, names organization [`ADMIN_ORG`]. TLS already checked
//! that a presented certificate chains to the CA; this checks what it says.
//! Connections without a certificate pass TLS (so that an unauthenticated
//! join RPC can be served later) and are refused here, per RPC.

use crate::link_pki::{common_name, organizations, ADMIN_ORG};
use rustls::pki_types::CertificateDer;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The authenticated administrator, put into each admitted request's
/// extensions for handlers to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admin(pub String);

/// Why a caller is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    NoCertificate,
    /// A valid certificate of this CA, but not an admin's (e.g. an agent's).
    NotAdmin {
        name: String,
        orgs: Vec<String>,
    },
    Unreadable(String),
}

/// Decides from the verified peer chain (leaf first).
pub fn check(chain: Option<&[CertificateDer<'_>]>) -> Result<Admin, Refusal> {
    let leaf = match chain {
        Some([leaf, ..]) => leaf,
        _ => return Err(Refusal::NoCertificate),
    };
    let orgs = organizations(leaf).map_err(|e| Refusal::Unreadable(e.to_string()))?;
    let name = common_name(leaf).map_err(|e| Refusal::Unreadable(e.to_string()))?;
    if orgs.iter().any(|o| o == ADMIN_ORG) {
        Ok(Admin(name))
    } else {
        Err(Refusal::NotAdmin { name, orgs })
    }
}

/// The status a refusal is answered with. `admin_conf` is where the
/// coordinator wrote the admin credentials.
pub fn refusal_status(r: &Refusal, admin_conf: &str) -> Status {
    match r {
        Refusal::NoCertificate => Status::unauthenticated(format!(
            "no client certificate: the admin API needs an admin certificate; use the admin \
             credentials the coordinator wrote to {admin_conf} (`oi --config {admin_conf}`)"
        )),
        Refusal::NotAdmin { name, orgs } => Status::permission_denied(format!(
            "certificate {name:?} (organization {}) is not an admin's; use the admin \
             credentials the coordinator wrote to {admin_conf}",
            if orgs.is_empty() {
                "none".to_string()
            } else {
                orgs.join(", ")
            }
        )),
        Refusal::Unreadable(why) => Status::permission_denied(format!(
            "cannot read the client certificate ({why}); use the admin credentials the \
             coordinator wrote to {admin_conf}"
        )),
    }
}

/// The per-RPC check, as a tonic interceptor.
#[derive(Clone)]
pub struct AdminOnly {
    admin_conf: std::sync::Arc<str>,
}

impl AdminOnly {
    pub fn new(admin_conf: &str) -> Self {
        Self {
            admin_conf: admin_conf.into(),
        }
    }
}

impl Interceptor for AdminOnly {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let chain = req.peer_certs();
        match check(chain.as_deref().map(Vec::as_slice)) {
            Ok(admin) => {
                req.extensions_mut().insert(admin);
                Ok(req)
            }
            Err(r) => {
                tracing::info!(peer = ?req.remote_addr(), refusal = ?r, "admin API call refused");
                Err(refusal_status(&r, &self.admin_conf))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link_pki::LinkCa;
    use tonic::Code;

    fn der(pem: &str) -> Vec<CertificateDer<'static>> {
        oi_proto::tls::parse_certs(pem.as_bytes()).unwrap()
    }

    #[test]
    fn only_admin_certificates_pass() {
        let ca = LinkCa::generate().unwrap();
        let admin = der(&ca.issue_admin("alice").unwrap().cert_pem);
        let agent = der(&ca.issue_agent("hv-1").unwrap().cert_pem);
        let server = der(&ca.issue_server(&["localhost".into()]).unwrap().cert_pem);

        assert_eq!(check(Some(&admin)), Ok(Admin("alice".into())));
        assert_eq!(check(None), Err(Refusal::NoCertificate));
        assert_eq!(check(Some(&[])), Err(Refusal::NoCertificate));
        assert_eq!(
            check(Some(&agent)),
            Err(Refusal::NotAdmin {
                name: "hv-1".into(),
                orgs: vec!["oneinfra:hypervisors".into()]
            })
        );
        assert!(matches!(
            check(Some(&server)),
            Err(Refusal::NotAdmin { .. })
        ));
        let junk = [CertificateDer::from(vec![1u8, 2, 3])];
        assert!(matches!(check(Some(&junk)), Err(Refusal::Unreadable(_))));
    }

    #[test]
    fn refusals_say_what_to_do() {
        let conf = "/var/lib/oneinfra/coordinator/admin.conf";
        let s = refusal_status(&Refusal::NoCertificate, conf);
        assert_eq!(s.code(), Code::Unauthenticated);
        assert!(s.message().contains(conf), "{}", s.message());
        let s = refusal_status(
            &Refusal::NotAdmin {
                name: "hv-1".into(),
                orgs: vec!["oneinfra:hypervisors".into()],
            },
            conf,
        );
        assert_eq!(s.code(), Code::PermissionDenied);
        assert!(s.message().contains("hv-1") && s.message().contains(conf));
    }
}
