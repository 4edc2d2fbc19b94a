//! Close codes: the QUIC application error code a side closes the
//! connection with, plus a reason text that tells the operator what to do.

use crate::pb::CloseCode;

impl CloseCode {
    /// The QUIC varint carried in the CONNECTION_CLOSE frame.
    pub fn varint(self) -> quinn::VarInt {
        quinn::VarInt::from_u32(self as i32 as u32)
    }

    /// Decodes a received application close code.
    pub fn from_varint(code: quinn::VarInt) -> Option<CloseCode> {
        i32::try_from(code.into_inner())
            .ok()
            .and_then(|c| CloseCode::try_from(c).ok())
    }

    /// Whether the peer should keep retrying after this close.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            CloseCode::CloseNormal
                | CloseCode::CloseSuperseded
                | CloseCode::CloseInternal
                | CloseCode::CloseHandshakeTimeout
        )
    }

    /// A stable, short label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            CloseCode::CloseNormal => "normal",
            CloseCode::CloseUnsupportedVersion => "unsupported_version",
            CloseCode::CloseNoCertificate => "no_certificate",
            CloseCode::CloseNameMismatch => "name_mismatch",
            CloseCode::CloseProtocolError => "protocol_error",
            CloseCode::CloseSuperseded => "superseded",
            CloseCode::CloseRoleMismatch => "role_mismatch",
            CloseCode::CloseRevoked => "revoked",
            CloseCode::CloseInternal => "internal",
            CloseCode::CloseHandshakeTimeout => "handshake_timeout",
        }
    }
}

/// Describes why a connection ended, for logs on the side that saw it end.
pub fn describe(err: &quinn::ConnectionError) -> String {
    match err {
        quinn::ConnectionError::ApplicationClosed(close) => {
            let reason = String::from_utf8_lossy(&close.reason);
            match CloseCode::from_varint(close.error_code) {
                Some(code) => format!("closed by peer ({}): {reason}", code.label()),
                None => format!("closed by peer (code {}): {reason}", close.error_code),
            }
        }
        quinn::ConnectionError::ConnectionClosed(close) => {
            format!(
                "closed by peer at transport level ({}): {}",
                close.error_code,
                String::from_utf8_lossy(&close.reason)
            )
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in [
            CloseCode::CloseNormal,
            CloseCode::CloseUnsupportedVersion,
            CloseCode::CloseNoCertificate,
            CloseCode::CloseNameMismatch,
            CloseCode::CloseProtocolError,
            CloseCode::CloseSuperseded,
            CloseCode::CloseRoleMismatch,
            CloseCode::CloseRevoked,
            CloseCode::CloseInternal,
            CloseCode::CloseHandshakeTimeout,
        ] {
            assert_eq!(CloseCode::from_varint(code.varint()), Some(code));
        }
        assert_eq!(CloseCode::from_varint(quinn::VarInt::from_u32(999)), None);
    }
}
