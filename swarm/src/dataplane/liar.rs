//! A provider that lies: it answers like an honest iroh-blobs provider (the
//! same request handling, the right sizes) but flips a byte in everything it
//! sends after the size header. For the attack suite and the data-plane
//! bench; nothing uses it unless asked to.

use bytes::Bytes;
use iroh::endpoint::{Connection, VarInt};
use iroh::protocol::{AcceptError, ProtocolHandler};
use iroh_blobs::api::Store;
use iroh_blobs::provider::StreamPair;
use iroh_blobs::provider::events::EventSender;
use iroh_blobs::util::SendStream;
use std::io;

/// Serves the store's blobs, corrupted.
#[derive(Debug, Clone)]
pub struct Liar(pub Store);

impl ProtocolHandler for Liar {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        while let Ok((send, recv)) = conn.accept_bi().await {
            let pair = StreamPair::new(conn.stable_id() as u64, recv, Corrupt(send), EventSender::DEFAULT);
            tokio::spawn(iroh_blobs::provider::handle_stream(pair, self.0.clone()));
        }
        Ok(())
    }
}

/// A send stream that flips the middle byte of every write of 64 bytes or
/// more (hash pairs and chunk data; the 8-byte size header goes through).
struct Corrupt(iroh::endpoint::SendStream);

fn corrupt(buf: &[u8]) -> Bytes {
    let mut v = buf.to_vec();
    if v.len() >= 64 {
        let i = v.len() / 2;
        v[i] ^= 0x5a;
    }
    Bytes::from(v)
}

impl SendStream for Corrupt {
    async fn send_bytes(&mut self, bytes: Bytes) -> io::Result<()> {
        SendStream::send_bytes(&mut self.0, corrupt(&bytes)).await
    }

    async fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        SendStream::send(&mut self.0, &corrupt(buf)).await
    }

    async fn sync(&mut self) -> io::Result<()> {
        SendStream::sync(&mut self.0).await
    }

    fn reset(&mut self, code: VarInt) -> io::Result<()> {
        SendStream::reset(&mut self.0, code)
    }

    async fn stopped(&mut self) -> io::Result<Option<VarInt>> {
        SendStream::stopped(&mut self.0).await
    }

    fn id(&self) -> u64 {
        SendStream::id(&self.0)
    }
}
