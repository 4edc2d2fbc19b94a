//! Node join tokens of a managed cluster, as the coordinator keeps them:
//! Kubernetes bootstrap tokens (`<id>.<secret>`, the format kubeadm uses),
//! each bound to one cluster, with a description, an expiry and a
//! revocation time. The coordinator is their source of truth; while one is
//! active, the cluster holds it as the Secret
//! `kube-system/bootstrap-token-<id>` (see [`crate::cluster::node_bootstrap`]).
//!
//! Unlike hypervisor join tokens, the whole token is stored (sealed): the
//! coordinator must write its secret into the cluster, and write it again
//! when the Secret is lost.

use oi_api_types::token::{TokenSecret, TokenState};
use oi_api_types::views::NodeTokenView;
use std::time::Duration;

/// `--ttl` default, as kubeadm's.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Bounds of `--ttl`: a token that never expires is not offered.
pub const MIN_TTL: Duration = Duration::from_secs(60);
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest `--description`.
pub const MAX_DESCRIPTION: usize = 200;
/// How long an expired or revoked token stays listed before it is
/// forgotten.
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Clone, PartialEq, Eq)]
pub struct NodeToken {
    pub cluster: String,
    pub token: TokenSecret,
    pub description: String,
    pub created_unix_ms: u64,
    pub expires_unix_ms: u64,
    /// When `oi cluster token revoke` revoked it; `None`: not revoked.
    pub revoked_unix_ms: Option<u64>,
}

impl std::fmt::Debug for NodeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeToken")
            .field("cluster", &self.cluster)
            .field("id", &self.id())
            .field("expires_unix_ms", &self.expires_unix_ms)
            .field("revoked_unix_ms", &self.revoked_unix_ms)
            .finish_non_exhaustive()
    }
}

impl NodeToken {
    pub fn id(&self) -> &str {
        self.token.id()
    }

    /// Revoked wins over expired.
    pub fn state(&self, now_unix_ms: u64) -> TokenState {
        if self.revoked_unix_ms.is_some() {
            TokenState::Revoked
        } else if now_unix_ms >= self.expires_unix_ms {
            TokenState::Expired
        } else {
            TokenState::Active
        }
    }

    pub fn view(&self, now_unix_ms: u64) -> NodeTokenView {
        NodeTokenView {
            cluster: self.cluster.clone(),
            id: self.id().to_string(),
            description: self.description.clone(),
            created_unix_ms: self.created_unix_ms,
            expires_unix_ms: self.expires_unix_ms,
            state: self.state(now_unix_ms),
        }
    }

    /// Whether it may be forgotten: expired or revoked longer than
    /// [`RETENTION`] ago.
    pub fn forgettable(&self, now_unix_ms: u64) -> bool {
        let ended = match self.revoked_unix_ms {
            Some(r) => r.min(self.expires_unix_ms),
            None => self.expires_unix_ms,
        };
        now_unix_ms >= ended.saturating_add(RETENTION.as_millis() as u64)
    }
}

/// Checks a description: printable, one line, bounded (it is shown in
/// tables and stored in a Secret).
pub fn check_description(d: &str) -> Result<(), String> {
    if d.chars().count() > MAX_DESCRIPTION {
        return Err(format!(
            "--description is longer than {MAX_DESCRIPTION} characters: shorten it"
        ));
    }
    if d.chars().any(char::is_control) {
        return Err("--description must be one line of printable characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(revoked: Option<u64>) -> NodeToken {
        NodeToken {
            cluster: "c".into(),
            token: TokenSecret::generate(),
            description: String::new(),
            created_unix_ms: 0,
            expires_unix_ms: 1_000,
            revoked_unix_ms: revoked,
        }
    }

    #[test]
    fn states_and_retention() {
        let week = RETENTION.as_millis() as u64;
        let cases = [
            // (revoked, now, state, forgettable)
            (None, 999, TokenState::Active, false),
            (None, 1_000, TokenState::Expired, false),
            (None, 1_000 + week, TokenState::Expired, true),
            (Some(500), 600, TokenState::Revoked, false),
            (Some(500), 500 + week, TokenState::Revoked, true),
            // Revoked after it expired: retention runs from the expiry.
            (Some(5_000), 1_000 + week, TokenState::Revoked, true),
        ];
        for (revoked, now, state, forget) in cases {
            let t = token(revoked);
            assert_eq!(t.state(now), state, "{revoked:?} at {now}");
            assert_eq!(t.forgettable(now), forget, "{revoked:?} at {now}");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let t = token(None);
        let text = format!("{t:?}");
        assert!(text.contains(t.id()));
        assert!(!text.contains(&t.token.expose()));
    }

    #[test]
    fn descriptions() {
        assert!(check_description("rack 4 workers").is_ok());
        assert!(check_description("").is_ok());
        assert!(check_description("a\nb").is_err());
        assert!(check_description(&"x".repeat(MAX_DESCRIPTION + 1)).is_err());
    }
}
