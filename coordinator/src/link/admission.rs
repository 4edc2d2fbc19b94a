//! Whether a hypervisor certificate that passed TLS may link: the pure
//! decision the link session applies after the hello (see
//! `link/session.rs`), from what the store knows of the certificate's
//! serial and of the hypervisor's other certificates.

use crate::store::AgentIdentity;
use oi_proto::model::Role;

/// What to do with a connecting certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let it link. `record`: the certificate is not known yet (issued
    /// without a join, e.g. by `oi-coordinator issue-agent-cert`); record it
    /// so that removing the hypervisor can revoke it.
    Accept { record: bool },
    /// Close with `CLOSE_REVOKED`; the text says what to do.
    Revoked(String),
    /// Close with `CLOSE_ROLE_MISMATCH`; the text says what to do.
    RoleMismatch(String),
}

/// `known`: the store's record of the certificate's serial. `others`: every
/// identity of hypervisor `name`. `registered`: a hypervisor of that name
/// is in the registry.
pub fn judge(
    name: &str,
    serial: &str,
    known: Option<&AgentIdentity>,
    others: &[AgentIdentity],
    registered: bool,
    hello_role: Role,
) -> Verdict {
    let rejoin = format!(
        "join it again: `oi hypervisor token create --role {hello_role}` on the coordinator, then \
         `oi hypervisor join ...` on the hypervisor"
    );
    match known {
        Some(id) if id.revoked_unix_ms.is_some() => Verdict::Revoked(format!(
            "the certificate of hypervisor {name:?} (serial {serial}) was revoked when the \
             hypervisor was removed; {rejoin}"
        )),
        Some(id) => match id.role {
            Some(bound) if bound != hello_role => Verdict::RoleMismatch(format!(
                "hypervisor {name:?} joined with a {bound} token but its agent says role = \
                 {hello_role:?}; set role = \"{bound}\" in the agent's config.toml, or remove \
                 the hypervisor (`oi hypervisor remove {name}`) and join it with a \
                 {hello_role} token",
                hello_role = hello_role.as_str()
            )),
            _ => Verdict::Accept { record: false },
        },
        None => {
            let removed = !registered
                && !others.is_empty()
                && others.iter().all(|o| o.revoked_unix_ms.is_some());
            if removed {
                Verdict::Revoked(format!(
                    "hypervisor {name:?} was removed and this certificate (serial {serial}) was \
                     not issued by a join since; {rejoin}"
                ))
            } else {
                Verdict::Accept { record: true }
            }
        }
    }
}

/// The role a renewed certificate is bound to: the current one's, or else
/// the role the hypervisor is registered with.
pub fn renewed_role(current: Option<&AgentIdentity>, registered: Role) -> Role {
    current.and_then(|c| c.role).unwrap_or(registered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(serial: &str, role: Option<Role>, revoked: bool) -> AgentIdentity {
        AgentIdentity {
            serial: serial.into(),
            name: "hv".into(),
            role,
            issued_unix_ms: 1,
            not_after_unix_ms: 2,
            revoked_unix_ms: revoked.then_some(3),
        }
    }

    #[test]
    fn verdicts() {
        let bound = id("a", Some(Role::Private), false);
        let unbound = id("b", None, false);
        let revoked = id("c", Some(Role::Private), true);
        let p = Role::Private;
        // (case, known, others, registered, hello role, want)
        type Case<'a> = (
            &'a str,
            Option<&'a AgentIdentity>,
            Vec<AgentIdentity>,
            bool,
            Role,
            &'a str,
        );
        let cases: Vec<Case> = vec![
            (
                "joined, same role",
                Some(&bound),
                vec![bound.clone()],
                true,
                p,
                "accept",
            ),
            (
                "joined, first connect",
                Some(&bound),
                vec![bound.clone()],
                false,
                p,
                "accept",
            ),
            (
                "joined, other role",
                Some(&bound),
                vec![],
                true,
                Role::Public,
                "role",
            ),
            (
                "unbound, any role",
                Some(&unbound),
                vec![],
                true,
                Role::Public,
                "accept",
            ),
            (
                "revoked",
                Some(&revoked),
                vec![revoked.clone()],
                false,
                p,
                "revoked",
            ),
            (
                "revoked even if registered again",
                Some(&revoked),
                vec![],
                true,
                p,
                "revoked",
            ),
            ("unknown, new name", None, vec![], false, p, "record"),
            (
                "unknown, registered",
                None,
                vec![revoked.clone()],
                true,
                p,
                "record",
            ),
            (
                "unknown, name removed",
                None,
                vec![revoked.clone()],
                false,
                p,
                "revoked",
            ),
            (
                "unknown, name removed and joined again",
                None,
                vec![revoked.clone(), bound.clone()],
                false,
                p,
                "record",
            ),
        ];
        for (what, known, others, registered, role, want) in cases {
            let got = match judge("hv", "ab", known, &others, registered, role) {
                Verdict::Accept { record: false } => "accept",
                Verdict::Accept { record: true } => "record",
                Verdict::Revoked(why) => {
                    assert!(why.contains("oi hypervisor join"), "{what}: {why}");
                    "revoked"
                }
                Verdict::RoleMismatch(why) => {
                    assert!(
                        why.contains("private token") && why.contains("role = \"private\""),
                        "{what}: {why}"
                    );
                    "role"
                }
            };
            assert_eq!(got, want, "{what}");
        }
        assert_eq!(renewed_role(Some(&bound), Role::Public), Role::Private);
        assert_eq!(renewed_role(Some(&unbound), Role::Public), Role::Public);
        assert_eq!(renewed_role(None, Role::Public), Role::Public);
    }
}
