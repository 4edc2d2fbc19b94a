//! Join token strings, like kubeadm's bootstrap tokens: `<id>.<secret>`,
//! the id 6 and the secret 16 characters of `[a-z0-9]`, drawn from the
//! system's CSPRNG; and where a stored token stands. Shared by the CLI
//! (which parses tokens) and the coordinator (which checks them).

use serde::Serialize;
use sha2::Digest;

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
}
