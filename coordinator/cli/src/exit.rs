//! Exit codes scripts can rely on, and the one place gRPC codes map to them.

use tonic::Code;

/// `oi`'s exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// Anything not listed below.
    Error = 1,
    /// Bad command line (clap).
    Usage = 2,
    NotFound = 3,
    AlreadyExists = 4,
    /// Bad input (a spec the coordinator refused, a file that does not parse).
    Invalid = 5,
    /// The coordinator could not be reached, or said it is unavailable.
    Unavailable = 6,
    /// `--wait` ran out of time.
    TimedOut = 7,
    /// No admin certificate, or one that is not an admin's; or a join
    /// token the coordinator refused.
    NotAuthorized = 8,
    /// `oi hypervisor join`: the coordinator's CA does not match
    /// `--ca-cert-hash` (an impostor, or a mistyped hash). Nothing was sent.
    Untrusted = 9,
}

/// The text `oi --help` shows about exit codes.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  other error
  2  usage error (bad command line)
  3  not found
  4  already exists
  5  invalid input (refused spec, unreadable file)
  6  coordinator unreachable or unavailable
  7  timed out waiting (--wait)
  8  not authorized (no admin certificate, not an admin's, or a join token refused)
  9  the coordinator's CA does not match --ca-cert-hash (hypervisor join)";

impl Exit {
    /// The exit code for a gRPC status code.
    pub fn from_code(code: Code) -> Exit {
        match code {
            Code::Ok => Exit::Ok,
            Code::NotFound => Exit::NotFound,
            Code::AlreadyExists => Exit::AlreadyExists,
            Code::InvalidArgument | Code::OutOfRange => Exit::Invalid,
            Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted => {
                Exit::Unavailable
            }
            Code::Unauthenticated | Code::PermissionDenied => Exit::NotAuthorized,
            _ => Exit::Error,
        }
    }

    pub fn code(self) -> u8 {
        self as u8
    }
}

/// A failed command: the exit code and the one line to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
}

pub type CliResult<T = ()> = Result<T, CliError>;

impl CliError {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
        }
    }
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        // A status made from a failed connection rather than sent by the
        // coordinator (e.g. the server's TLS refused the client certificate).
        if let Some(cause) = std::error::Error::source(&s) {
            if matches!(
                s.code(),
                Code::Unknown | Code::Cancelled | Code::Unavailable
            ) {
                return CliError::new(
                    Exit::Unavailable,
                    format!(
                        "the connection to the coordinator failed: {}; check the endpoint, and \
                         that the certificate in the admin config was issued by this coordinator",
                        one_line(cause)
                    ),
                );
            }
        }
        let message = if s.message().is_empty() {
            format!("the coordinator answered {:?}", s.code())
        } else {
            s.message().to_string()
        };
        CliError::new(Exit::from_code(s.code()), message)
    }
}

impl From<oi_api_types::convert::ConvertError> for CliError {
    fn from(e: oi_api_types::convert::ConvertError) -> Self {
        CliError::new(Exit::Error, e.to_string())
    }
}

/// An error and its causes on one line: "a: b: c".
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_map_to_documented_exit_codes() {
        let cases = [
            (Code::Ok, 0),
            (Code::NotFound, 3),
            (Code::AlreadyExists, 4),
            (Code::InvalidArgument, 5),
            (Code::Unavailable, 6),
            (Code::DeadlineExceeded, 6),
            (Code::ResourceExhausted, 6),
            (Code::Unauthenticated, 8),
            (Code::PermissionDenied, 8),
            (Code::FailedPrecondition, 1),
            (Code::Internal, 1),
            (Code::Unknown, 1),
        ];
        for (code, want) in cases {
            assert_eq!(Exit::from_code(code).code(), want, "{code:?}");
        }
        for n in 0..=9 {
            assert!(EXIT_CODES_HELP.contains(&format!("  {n}  ")), "{n}");
        }
    }

    #[test]
    fn statuses_keep_their_message() {
        let e = CliError::from(tonic::Status::not_found("cluster \"x\" not found"));
        assert_eq!(e, CliError::new(Exit::NotFound, "cluster \"x\" not found"));
        let e = CliError::from(tonic::Status::internal(""));
        assert!(e.message.contains("Internal"));
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, "fatal alert");
        let e = CliError::from(tonic::Status::from_error(Box::new(io)));
        assert_eq!(e.exit, Exit::Unavailable);
        assert!(e.message.contains("fatal alert"), "{}", e.message);
    }

    #[test]
    fn causes_join_on_one_line() {
        let e = anyhow::anyhow!("inner\ncause").context("outer");
        assert_eq!(one_line(e.as_ref()), "outer: inner cause");
    }
}
