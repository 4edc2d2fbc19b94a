//! Joining hypervisors: join tokens (create, list, revoke) and the join
//! itself, which checks a token, signs the joining machine's CSR and
//! records the new identity with the role the token binds.
//!
//! The token's checks and the use it takes happen in one store transaction
//! ([`crate::store::Store::join`]); rate limiting happens before any of
//! this, in the API (`api/join.rs`).

use crate::coordinator::Coordinator;
use crate::link_pki::CsrError;
use crate::operations::{CreatedToken, JoinRequest, JoinTokenView, Joined, OpError};
use crate::store::{AgentIdentity, StoreError};
use crate::tokens::{is_token_id, JoinToken, TokenRefusal, TokenSecret};
use oi_proto::model::Role;
use std::time::Duration;

/// Bounds of `--ttl`.
pub const MIN_TOKEN_TTL: Duration = Duration::from_secs(1);
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Bound of `--uses`.
pub const MAX_TOKEN_USES: u32 = 1000;

pub(crate) use oi_proto::clock::unix_ms;

pub fn token_view(t: &JoinToken, now_unix_ms: u64) -> JoinTokenView {
    JoinTokenView {
        id: t.id.clone(),
        role: t.role,
        created_unix_ms: t.created_unix_ms,
        expires_unix_ms: t.expires_unix_ms,
        max_uses: t.max_uses,
        uses: t.uses,
        state: t.state(now_unix_ms),
    }
}

/// The error a join refusal is answered with, and its label for the log
/// and the metrics.
fn join_refusal(e: StoreError, name: &str) -> (OpError, &'static str) {
    match e {
        StoreError::TokenRefused(r @ TokenRefusal::Invalid) => {
            (OpError::Unauthenticated(r.to_string()), r.label())
        }
        StoreError::TokenRefused(r) => (OpError::PermissionDenied(r.to_string()), r.label()),
        StoreError::NameTaken { why, .. } => (
            OpError::AlreadyExists(format!(
                "hypervisor name {name:?} is in use ({why}): join with another --name, or \
                 remove it first on the coordinator with `oi hypervisor remove {name}`"
            )),
            "name_taken",
        ),
        other => (OpError::Internal(format!("join: {other}")), "internal"),
    }
}

impl Coordinator {
    pub async fn create_join_token(
        &self,
        role: Role,
        ttl: Duration,
        max_uses: u32,
    ) -> Result<CreatedToken, OpError> {
        let Some(join_address) = self.inner.endpoints.join.clone() else {
            return Err(OpError::FailedPrecondition(
                "the admin API is disabled (api_listen = \"\"), so hypervisors cannot join: \
                 enable it in the coordinator's configuration"
                    .into(),
            ));
        };
        if !(MIN_TOKEN_TTL..=MAX_TOKEN_TTL).contains(&ttl) {
            return Err(OpError::Invalid(format!(
                "--ttl {}s is out of range: use 1s to 720h",
                ttl.as_secs()
            )));
        }
        if !(1..=MAX_TOKEN_USES).contains(&max_uses) {
            return Err(OpError::Invalid(format!(
                "--uses {max_uses} is out of range: use 1 to {MAX_TOKEN_USES}"
            )));
        }
        let ca_cert_hash = self
            .inner
            .ca
            .cert_hash()
            .map_err(|e| OpError::Internal(format!("hash the CA certificate: {e:#}")))?;
        let now = unix_ms();
        // A 6-character id may collide (36^6 ids); draw again then.
        for _ in 0..5 {
            let secret = TokenSecret::generate();
            let token = JoinToken {
                id: secret.id().to_string(),
                secret_sha256: secret.secret_sha256(),
                role,
                created_unix_ms: now,
                expires_unix_ms: now + ttl.as_millis() as u64,
                max_uses,
                uses: 0,
                revoked: false,
            };
            match self.inner.store.create_join_token(&token).await {
                Ok(()) => {
                    tracing::info!(id = %token.id, %role, expires_unix_ms = token.expires_unix_ms,
                        max_uses, "join token created");
                    return Ok(CreatedToken {
                        view: token_view(&token, now),
                        token: secret.expose(),
                        join_address,
                        ca_cert_hash,
                    });
                }
                Err(StoreError::TokenExists(_)) => continue,
                Err(e) => return Err(OpError::Internal(format!("store join token: {e}"))),
            }
        }
        Err(OpError::Internal(
            "could not draw an unused join token id; retry".into(),
        ))
    }

    pub async fn list_join_tokens(&self) -> Result<Vec<JoinTokenView>, OpError> {
        let now = unix_ms();
        let tokens = self
            .inner
            .store
            .list_join_tokens()
            .await
            .map_err(|e| OpError::Internal(format!("list join tokens: {e}")))?;
        Ok(tokens.iter().map(|t| token_view(t, now)).collect())
    }

    pub async fn revoke_join_token(&self, id: &str) -> Result<(), OpError> {
        if !is_token_id(id) {
            return Err(OpError::Invalid(format!(
                "{id:?} is not a join token id (6 characters of a-z and 0-9, the part before \
                 the '.'): `oi hypervisor token list` shows them"
            )));
        }
        match self.inner.store.revoke_join_token(id).await {
            Ok(()) => {
                tracing::info!(%id, "join token revoked");
                Ok(())
            }
            Err(StoreError::UnknownToken(_)) => Err(OpError::NotFound(format!(
                "join token {id} not found; `oi hypervisor token list` shows them"
            ))),
            Err(e) => Err(OpError::Internal(format!("revoke join token: {e}"))),
        }
    }

    /// See [`crate::operations::Operations::join_hypervisor`]. Logs every refusal
    /// with the source address and the reason (never the token).
    pub async fn join_hypervisor(&self, req: JoinRequest) -> Result<Joined, OpError> {
        let peer = req
            .peer
            .map(|p| p.to_string())
            .unwrap_or_else(|| "unknown".into());
        let result = self.join_checked(&req).await;
        match &result {
            Ok(joined) => {
                self.inner.metrics.join_attempt("joined");
                // The name is a validated DNS-1123 label by now.
                tracing::info!(%peer, hypervisor = %req.name, role = %joined.role, "hypervisor joined");
            }
            Err((e, label)) => {
                self.inner.metrics.join_attempt(label);
                // The name is not validated yet: Debug escapes it.
                tracing::warn!(%peer, hypervisor = ?req.name, reason = label, "join refused: {e}");
            }
        }
        result.map_err(|(e, _)| e)
    }

    async fn join_checked(&self, req: &JoinRequest) -> Result<Joined, (OpError, &'static str)> {
        let secret = TokenSecret::parse(&req.token)
            .map_err(|e| (OpError::Unauthenticated(e.to_string()), "malformed_token"))?;
        let signed = self
            .inner
            .ca
            .sign_agent_csr(
                &req.name,
                &req.csr_pem,
                self.inner.config.agent_cert_lifetime,
            )
            .map_err(|e| match e {
                CsrError::Invalid(why) => (OpError::Invalid(why), "invalid_request"),
                CsrError::Sign(why) => (OpError::Internal(why), "internal"),
            })?;
        let now = unix_ms();
        let identity = AgentIdentity {
            serial: signed.serial.clone(),
            name: req.name.clone(),
            role: None, // the store sets the token's
            issued_unix_ms: now,
            not_after_unix_ms: signed.not_after_unix_ms,
            revoked_unix_ms: None,
        };
        let token = self
            .inner
            .store
            .join(secret.id(), secret.secret_sha256(), now, &identity)
            .await
            .map_err(|e| join_refusal(e, &req.name))?;
        Ok(Joined {
            certificate_pem: signed.cert_pem,
            ca_pem: self.inner.ca.cert_pem().to_string(),
            link_address: self.inner.endpoints.link.clone(),
            server_name: self.inner.config.advertise_address.clone(),
            role: token.role,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_codes_that_say_what_to_do() {
        let cases = [
            (
                StoreError::TokenRefused(TokenRefusal::Invalid),
                "invalid_token",
                "token create",
            ),
            (
                StoreError::TokenRefused(TokenRefusal::Expired { id: "abc".into() }),
                "expired_token",
                "token create",
            ),
            (
                StoreError::NameTaken {
                    name: "hv".into(),
                    why: "registered".into(),
                },
                "name_taken",
                "oi hypervisor remove hv",
            ),
        ];
        for (e, want_label, hint) in cases {
            let (op, label) = join_refusal(e, "hv");
            assert_eq!(label, want_label);
            assert!(op.to_string().contains(hint), "{op}");
        }
        assert!(matches!(
            join_refusal(StoreError::TokenRefused(TokenRefusal::Invalid), "x").0,
            OpError::Unauthenticated(_)
        ));
        assert!(matches!(
            join_refusal(
                StoreError::TokenRefused(TokenRefusal::Revoked { id: "a".into() }),
                "x"
            )
            .0,
            OpError::PermissionDenied(_)
        ));
    }
}
