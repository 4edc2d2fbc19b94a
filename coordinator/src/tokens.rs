//! Join tokens, like kubeadm's bootstrap tokens: `<id>.<secret>`, the id 6
//! and the secret 16 characters of `[a-z0-9]`, drawn from the system's
//! CSPRNG. The store keeps the id, the SHA-256 of the secret (never the
//! secret), the role the token binds, its expiry and its use count.
//!
//! Everything here is pure: generating and parsing tokens, and deciding
//! whether a presented secret may use a stored token ([`JoinToken::check`]).
//! The store applies that check and counts the use in one transaction.

use oi_proto::model::Role;
use subtle::ConstantTimeEq;

pub use oi_api_types::token::{
    is_token_id, TokenFormatError, TokenSecret, TokenState, ID_LEN, SECRET_LEN,
};

/// A join token as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub id: String,
    pub secret_sha256: [u8; 32],
    /// The role a hypervisor joined with this token gets.
    pub role: Role,
    pub created_unix_ms: u64,
    pub expires_unix_ms: u64,
    pub max_uses: u32,
    pub uses: u32,
    pub revoked: bool,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("expires_unix_ms", &self.expires_unix_ms)
            .field("uses", &format_args!("{}/{}", self.uses, self.max_uses))
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

/// Why a presented token may not be used. The messages never contain the
/// secret; the first says nothing about whether the id exists.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    /// No token with that id, or the secret does not match.
    #[error(
        "the join token is not valid (unknown, or the secret is wrong): create one on the \
         coordinator with `oi hypervisor token create --role ROLE` and copy the printed join \
         command"
    )]
    Invalid,
    #[error(
        "join token {id} was revoked: create a new one with `oi hypervisor token create --role ROLE`"
    )]
    Revoked { id: String },
    #[error(
        "join token {id} expired: create a new one with `oi hypervisor token create --role ROLE \
         [--ttl DURATION]`"
    )]
    Expired { id: String },
    #[error(
        "join token {id} was used {uses} of {uses} times: create a new one with `oi hypervisor \
         token create --role ROLE [--uses N]`"
    )]
    UsedUp { id: String, uses: u32 },
}

impl TokenRefusal {
    /// A short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            TokenRefusal::Invalid => "invalid_token",
            TokenRefusal::Revoked { .. } => "revoked_token",
            TokenRefusal::Expired { .. } => "expired_token",
            TokenRefusal::UsedUp { .. } => "used_token",
        }
    }
}

impl JoinToken {
    pub fn state(&self, now_unix_ms: u64) -> TokenState {
        if self.revoked {
            TokenState::Revoked
        } else if now_unix_ms >= self.expires_unix_ms {
            TokenState::Expired
        } else if self.uses >= self.max_uses {
            TokenState::Used
        } else {
            TokenState::Active
        }
    }

    /// Whether a secret hashing to `presented` may use this token now. The
    /// hashes are compared in constant time, and before anything else, so
    /// a caller without the secret learns nothing about the token.
    pub fn check(&self, presented: &[u8; 32], now_unix_ms: u64) -> Result<(), TokenRefusal> {
        if !bool::from(self.secret_sha256.ct_eq(presented)) {
            return Err(TokenRefusal::Invalid);
        }
        let id = self.id.clone();
        match self.state(now_unix_ms) {
            TokenState::Active => Ok(()),
            TokenState::Revoked => Err(TokenRefusal::Revoked { id }),
            TokenState::Expired => Err(TokenRefusal::Expired { id }),
            TokenState::Used => Err(TokenRefusal::UsedUp {
                id,
                uses: self.max_uses,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_compares_the_secret_first_then_the_state() {
        let secret = TokenSecret::parse("abcdef.0123456789abcdef").unwrap();
        let wrong = TokenSecret::parse("abcdef.0123456789abcdeg").unwrap();
        let base = JoinToken {
            id: "abcdef".into(),
            secret_sha256: secret.secret_sha256(),
            role: Role::Private,
            created_unix_ms: 0,
            expires_unix_ms: 1_000,
            max_uses: 2,
            uses: 0,
            revoked: false,
        };
        let with = |f: fn(&mut JoinToken)| {
            let mut t = base.clone();
            f(&mut t);
            t
        };
        let id = || "abcdef".to_string();
        // (case, stored token, presented secret, now, want)
        type Case<'a> = (
            &'a str,
            JoinToken,
            &'a TokenSecret,
            u64,
            Result<(), TokenRefusal>,
        );
        let cases: Vec<Case> = vec![
            ("fresh", base.clone(), &secret, 10, Ok(())),
            ("one use left", with(|t| t.uses = 1), &secret, 10, Ok(())),
            (
                "wrong secret",
                base.clone(),
                &wrong,
                10,
                Err(TokenRefusal::Invalid),
            ),
            (
                "wrong secret on a revoked token says nothing more",
                with(|t| t.revoked = true),
                &wrong,
                10,
                Err(TokenRefusal::Invalid),
            ),
            (
                "expired at the instant",
                base.clone(),
                &secret,
                1_000,
                Err(TokenRefusal::Expired { id: id() }),
            ),
            (
                "used up",
                with(|t| t.uses = 2),
                &secret,
                10,
                Err(TokenRefusal::UsedUp { id: id(), uses: 2 }),
            ),
            (
                "revoked beats expired and used",
                with(|t| {
                    t.revoked = true;
                    t.uses = 2
                }),
                &secret,
                5_000,
                Err(TokenRefusal::Revoked { id: id() }),
            ),
        ];
        for (what, token, presented, now, want) in cases {
            assert_eq!(token.check(&presented.secret_sha256(), now), want, "{what}");
        }
        assert_eq!(base.state(10), TokenState::Active);
        assert_eq!(with(|t| t.uses = 2).state(10), TokenState::Used);
        assert_eq!(base.state(2_000), TokenState::Expired);
        for s in ["active", "expired", "used", "revoked"] {
            assert_eq!(TokenState::parse(s).unwrap().as_str(), s);
        }
        assert!(!format!("{base:?}").contains("secret_sha256"));
    }
}
