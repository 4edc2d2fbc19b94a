//! The one mapping from [`OpError`] to gRPC status codes.

use crate::operations::OpError;
use tonic::{Code, Status};

pub fn code_of(e: &OpError) -> Code {
    match e {
        OpError::NotFound(_) => Code::NotFound,
        OpError::AlreadyExists(_) => Code::AlreadyExists,
        OpError::Invalid(_) => Code::InvalidArgument,
        OpError::FailedPrecondition(_) => Code::FailedPrecondition,
        OpError::Unavailable(_) => Code::Unavailable,
        OpError::Internal(_) => Code::Internal,
        OpError::Unauthenticated(_) => Code::Unauthenticated,
        OpError::PermissionDenied(_) => Code::PermissionDenied,
        OpError::ResourceExhausted(_) => Code::ResourceExhausted,
    }
}

/// The status an operation's error is answered with; the message is the
/// error's own (it already says what to do).
pub fn to_status(e: OpError) -> Status {
    if let OpError::Internal(m) = &e {
        tracing::error!(error = %m, "admin API operation failed");
    }
    Status::new(code_of(&e), e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_code_and_keeps_its_message() {
        let cases = [
            (OpError::NotFound("n".into()), Code::NotFound),
            (OpError::AlreadyExists("a".into()), Code::AlreadyExists),
            (OpError::Invalid("i".into()), Code::InvalidArgument),
            (
                OpError::FailedPrecondition("f".into()),
                Code::FailedPrecondition,
            ),
            (OpError::Unavailable("u".into()), Code::Unavailable),
            (OpError::Internal("x".into()), Code::Internal),
            (OpError::Unauthenticated("t".into()), Code::Unauthenticated),
            (
                OpError::PermissionDenied("p".into()),
                Code::PermissionDenied,
            ),
            (
                OpError::ResourceExhausted("r".into()),
                Code::ResourceExhausted,
            ),
        ];
        for (e, code) in cases {
            let msg = e.to_string();
            let s = to_status(e);
            assert_eq!(s.code(), code);
            assert_eq!(s.message(), msg);
        }
    }
}
