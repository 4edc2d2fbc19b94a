//! The oneinfra wire protocol between agents and the coordinator.
//!
//! * [`pb`]: types generated from `proto/link.proto`. They stay inside the
//!   link code of the coordinator and the agent, which convert them at once.
//! * [`model`]: the domain types both sides work with.
//! * [`frame`]: length-prefixed framing of the envelopes over a QUIC stream.
//! * [`close`]: the connection close codes and their meaning.
//! * [`tls`]: rustls/quinn configuration for the mutually authenticated link.

pub mod clock;
pub mod close;
pub mod convert;
pub mod frame;
pub mod fsutil;
pub mod model;
pub mod tls;

/// Generated protobuf types (`oneinfra.link.v1`).
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/oneinfra.link.v1.rs"));
}

/// Generated types and gRPC stubs of the administrative API
/// (`oneinfra.api.v1`). They stay in the API server and the CLI.
#[allow(clippy::all, missing_docs)]
pub mod api {
    include!(concat!(env!("OUT_DIR"), "/oneinfra.api.v1.rs"));
}

/// The link protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// ALPN identifier of the link; it carries the major protocol version too.
pub const ALPN: &[u8] = b"oneinfra-link/1";
