//! Join tokens, like kubeadm's bootstrap tokens: `<id>.<secret>`, the id 6
//! and the secret 16 characters of `[a-z0-9]`, drawn from the system's
//! CSPRNG. The store keeps the id, the SHA-256 of the secret (never the
//! secret), the role the token binds, its expiry and its use count.
//!
//! Everything here is pure: generating and parsing tokens, and deciding
//! whether a presented secret may use a stored token ([`JoinToken::check`]).
//! The store applies that check and counts the use in one transaction.

use oi_proto::model::Role;
use serde::Serialize;
use sha2::Digest;
use subtle::ConstantTimeEq;

pub const ID_LEN: usize = 6;
pub const SECRET_LEN: usize = 16;
const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A token as handed to an operator: id and secret. `Debug` and `Display`
/// show the id only; [`TokenSecret::expose`] gives the whole token.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret {
    id: String,
    secret: String,
}

impl std::fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSecret({}.<hidden>)", self.id)
    }
}

/// A string that is not a join token; the message never repeats it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the join token is not of the form <id>.<secret> ({ID_LEN} and {SECRET_LEN} characters of \
     a-z and 0-9): copy it whole from the output of `oi hypervisor token create`"
)]
pub struct TokenFormatError;

/// `n` characters of [`ALPHABET`], uniformly, from the system's CSPRNG.
fn random_chars(n: usize) -> String {
    use ring::rand::SecureRandom;
    let rng = ring::rand::SystemRandom::new();
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 32];
    while out.len() < n {
        rng.fill(&mut buf)
            .expect("the system random number generator failed");
        // 252 = 7 * 36: rejecting bytes above it keeps the choice uniform.
        for b in buf.iter().filter(|b| **b < 252) {
            if out.len() == n {
                break;
            }
            out.push(ALPHABET[(*b % 36) as usize] as char);
        }
    }
    out
}

fn is_token_part(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| ALPHABET.contains(&b))
}

impl TokenSecret {
    pub fn generate() -> Self {
        Self {
            id: random_chars(ID_LEN),
            secret: random_chars(SECRET_LEN),
        }
    }

    pub fn parse(token: &str) -> Result<Self, TokenFormatError> {
        let (id, secret) = token.trim().split_once('.').ok_or(TokenFormatError)?;
        if !is_token_part(id, ID_LEN) || !is_token_part(secret, SECRET_LEN) {
            return Err(TokenFormatError);
        }
        Ok(Self {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// What the store keeps instead of the secret.
    pub fn secret_sha256(&self) -> [u8; 32] {
        sha2::Sha256::digest(self.secret.as_bytes()).into()
    }

    /// The whole token, `<id>.<secret>`: for the operator, never for logs.
    pub fn expose(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

/// Whether `id` looks like a token id (for `oi hypervisor token revoke`).
pub fn is_token_id(id: &str) -> bool {
    is_token_part(id, ID_LEN)
}

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

/// Where a token stands. Revoked wins over expired wins over used up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenState {
    Active,
    Expired,
    Used,
    Revoked,
}

impl TokenState {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Active => "active",
            TokenState::Expired => "expired",
            TokenState::Used => "used",
            TokenState::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            TokenState::Active,
            TokenState::Expired,
            TokenState::Used,
            TokenState::Revoked,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
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
    fn generated_tokens_have_the_format_and_parse_back() {
        let mut ids = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let t = TokenSecret::generate();
            let text = t.expose();
            assert_eq!(text.len(), ID_LEN + 1 + SECRET_LEN);
            assert!(text.bytes().all(|b| b == b'.' || ALPHABET.contains(&b)));
            assert_eq!(TokenSecret::parse(&text).unwrap(), t);
            assert!(is_token_id(t.id()));
            ids.insert(t.id().to_string());
            assert!(!format!("{t:?}").contains(&t.secret));
        }
        assert_eq!(ids.len(), 200, "ids repeat: not random");
    }

    #[test]
    fn malformed_tokens_are_refused_without_echoing_them() {
        for bad in [
            "",
            "abcdef",
            "abcdef.",
            "abcdef.0123456789abcde",
            "abcdef.0123456789abcdefg",
            "ABCDEF.0123456789abcdef",
            "abcde.0123456789abcdef0",
            "abcdef-0123456789abcdef",
            "abcdef.0123456789abcde_",
        ] {
            let err = TokenSecret::parse(bad).unwrap_err().to_string();
            assert!(bad.len() < 6 || !err.contains(bad), "{err}");
        }
        assert!(TokenSecret::parse(" abcdef.0123456789abcdef\n").is_ok());
    }

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
