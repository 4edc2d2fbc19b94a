//! `link.json` in the agent's state directory: what the link is doing, for
//! people and for `oi hypervisor join`, which waits on it for the agent it
//! started to connect with the certificate it got (it has no admin
//! credentials to ask the coordinator). Written atomically on every change
//! of [`LinkStatus`].

use anyhow::{Context, Result};
use oi_proto::pb::CloseCode;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;

/// Why the last connection attempt or link ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkError {
    /// The coordinator's close code, when it closed the link on purpose.
    pub code: Option<CloseCode>,
    pub reason: String,
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(code) => write!(f, "{} ({})", self.reason, code.label()),
            None => f.write_str(&self.reason),
        }
    }
}

/// What the link is doing, for status reporting and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkStatus {
    Connecting {
        attempt: u64,
        last_error: Option<LinkError>,
    },
    Connected {
        peer: SocketAddr,
        /// Serial of the certificate this connection was made with.
        certificate_serial: String,
    },
    Stopped,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkFile {
    /// `connecting`, `connected` or `stopped`.
    pub state: String,
    /// The coordinator's link address.
    pub coordinator: String,
    /// Serial of the certificate the agent uses.
    pub certificate_serial: String,
    /// When this state began.
    pub since_unix_ms: u64,
    /// Connecting: the attempts so far, the last error, its close code
    /// label (when the coordinator closed the link on purpose) and whether
    /// the agent keeps trying by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
}

impl LinkFile {
    pub fn new(status: &LinkStatus, coordinator: &str, serial: &str, now_unix_ms: u64) -> Self {
        let mut f = LinkFile {
            coordinator: coordinator.to_string(),
            certificate_serial: serial.to_string(),
            since_unix_ms: now_unix_ms,
            ..Default::default()
        };
        match status {
            LinkStatus::Connecting {
                attempt,
                last_error,
            } => {
                f.state = "connecting".into();
                f.attempt = Some(*attempt);
                if let Some(e) = last_error {
                    f.error = Some(e.reason.clone());
                    f.code = e.code.map(|c| c.label().to_string());
                    f.retryable = Some(e.code.is_none_or(|c| c.is_retryable()));
                }
            }
            LinkStatus::Connected { .. } => f.state = "connected".into(),
            LinkStatus::Stopped => f.state = "stopped".into(),
        }
        f
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_vec_pretty(self).context("encode link status")?;
        oi_proto::fsutil::write_atomic(path, &text, 0o644)
    }

    /// `None` when there is no file yet.
    pub fn read(path: &Path) -> Result<Option<Self>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("parse {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
        }
    }
}

/// Where an agent started with certificate `serial` stands, judged from its
/// link file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Not there yet (no file, another certificate's file, or connecting
    /// with errors the agent retries by itself).
    Waiting(String),
    Connected,
    /// The coordinator refused it for a reason only an operator can fix.
    Refused(String),
}

pub fn progress(file: Option<&LinkFile>, serial: &str) -> Progress {
    let Some(f) = file else {
        return Progress::Waiting("the agent has not written its link status yet".into());
    };
    if f.certificate_serial != serial {
        return Progress::Waiting("the agent still runs with its previous certificate".into());
    }
    match (f.state.as_str(), f.retryable) {
        ("connected", _) => Progress::Connected,
        ("connecting", Some(false)) => Progress::Refused(format!(
            "{} ({})",
            f.error.clone().unwrap_or_default(),
            f.code.clone().unwrap_or_default()
        )),
        ("connecting", _) => Progress::Waiting(match &f.error {
            Some(e) => format!("connecting (attempt {}): {e}", f.attempt.unwrap_or(0)),
            None => "connecting".into(),
        }),
        (other, _) => Progress::Waiting(format!("the agent is {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oi_proto::pb::CloseCode;

    #[test]
    fn progress_of_a_started_agent() {
        let connecting = |code: Option<CloseCode>| LinkStatus::Connecting {
            attempt: 2,
            last_error: Some(LinkError {
                code,
                reason: "why".into(),
            }),
        };
        let connected = LinkStatus::Connected {
            peer: "127.0.0.1:7443".parse().unwrap(),
            certificate_serial: "ab".into(),
        };
        let file = |s: &LinkStatus, serial: &str| LinkFile::new(s, "c:1", serial, 5);
        let cases = [
            (None, "waiting"),
            (Some(file(&connected, "old")), "waiting"),
            (Some(file(&connected, "ab")), "connected"),
            (Some(file(&connecting(None), "ab")), "waiting"),
            (
                Some(file(&connecting(Some(CloseCode::CloseInternal)), "ab")),
                "waiting",
            ),
            (
                Some(file(&connecting(Some(CloseCode::CloseRoleMismatch)), "ab")),
                "refused",
            ),
            (Some(file(&LinkStatus::Stopped, "ab")), "waiting"),
        ];
        for (f, want) in cases {
            let got = match progress(f.as_ref(), "ab") {
                Progress::Waiting(_) => "waiting",
                Progress::Connected => "connected",
                Progress::Refused(why) => {
                    assert!(
                        why.contains("why") && why.contains("role_mismatch"),
                        "{why}"
                    );
                    "refused"
                }
            };
            assert_eq!(got, want, "{f:?}");
        }
    }

    #[test]
    fn written_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("link.json");
        assert_eq!(LinkFile::read(&path).unwrap(), None);
        let f = LinkFile::new(&LinkStatus::Stopped, "c:1", "ab", 7);
        f.write(&path).unwrap();
        assert_eq!(LinkFile::read(&path).unwrap(), Some(f));
    }
}
