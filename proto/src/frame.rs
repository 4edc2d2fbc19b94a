//! Length-prefixed protobuf frames over one QUIC stream.

use futures::StreamExt;
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

/// Largest frame either side accepts. A placement snapshot carries key
/// material and configuration files for every component of a hypervisor.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Initial read buffer; it grows to the largest frame received. (The
/// codec's default, 8 KiB per reader and per writer, was the largest item
/// of the coordinator's memory per connected agent: see bench/README.md.)
const READ_BUFFER_BYTES: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("read frame: {0}")]
    Io(#[from] std::io::Error),
    #[error("decode frame: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("stream closed by peer")]
    Closed,
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec()
}

/// Reads typed frames.
pub struct FrameReader<R, M> {
    inner: FramedRead<R, LengthDelimitedCodec>,
    _msg: std::marker::PhantomData<fn() -> M>,
}

impl<R: AsyncRead + Unpin, M: Message + Default> FrameReader<R, M> {
    pub fn new(io: R) -> Self {
        Self {
            inner: FramedRead::with_capacity(io, codec(), READ_BUFFER_BYTES),
            _msg: std::marker::PhantomData,
        }
    }

    /// The next frame; `Err(Closed)` when the peer finished the stream.
    pub async fn next(&mut self) -> Result<M, FrameError> {
        match self.inner.next().await {
            Some(Ok(buf)) => Ok(M::decode(buf.freeze())?),
            Some(Err(e)) => Err(FrameError::Io(e)),
            None => Err(FrameError::Closed),
        }
    }
}

/// Writes typed frames. Each frame is written straight to the stream, so
/// no buffer outlives a send (a buffered writer keeps one as large as the
/// largest frame it ever sent, e.g. a whole placement snapshot).
pub struct FrameWriter<W, M> {
    io: W,
    _msg: std::marker::PhantomData<fn(M)>,
}

impl<W: AsyncWrite + Unpin, M: Message> FrameWriter<W, M> {
    pub fn new(io: W) -> Self {
        Self {
            io,
            _msg: std::marker::PhantomData,
        }
    }

    pub async fn send(&mut self, msg: &M) -> Result<(), FrameError> {
        let len = msg.encoded_len();
        if len > MAX_FRAME_BYTES {
            return Err(FrameError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("frame of {len} bytes is over the {MAX_FRAME_BYTES}-byte limit"),
            )));
        }
        let mut buf = Vec::with_capacity(4 + len);
        buf.extend_from_slice(&(len as u32).to_be_bytes());
        msg.encode(&mut buf)
            .expect("the buffer was sized to fit the message");
        self.io.write_all(&buf).await?;
        self.io.flush().await?;
        Ok(())
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.io
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    #[tokio::test]
    async fn frames_round_trip_and_oversize_is_refused() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let mut w: FrameWriter<_, pb::AgentMessage> = FrameWriter::new(a);
        let mut r: FrameReader<_, pb::AgentMessage> = FrameReader::new(b);
        let msg = pb::AgentMessage {
            msg: Some(pb::agent_message::Msg::Heartbeat(pb::Heartbeat {
                sent_unix_ms: 7,
            })),
        };
        w.send(&msg).await.unwrap();
        assert_eq!(r.next().await.unwrap(), msg);

        // A length prefix past the limit is an error, not an allocation.
        let (mut a, b) = tokio::io::duplex(64);
        let mut r: FrameReader<_, pb::AgentMessage> = FrameReader::new(b);
        use tokio::io::AsyncWriteExt;
        a.write_all(&(u32::MAX).to_be_bytes()).await.unwrap();
        assert!(matches!(r.next().await, Err(FrameError::Io(_))));
    }
}
