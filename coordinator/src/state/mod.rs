//! The coordinator's in-memory state and its one commit path: the index
//! (what every hypervisor holds, and what its agent reports) and the
//! writer, the only code that changes durable state the index mirrors.

pub mod index;
mod writer;

pub(crate) use writer::{WriteTxn, Writer};
