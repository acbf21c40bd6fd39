//! Blobs over the network, the node's side: asking providers in turn and
//! checking what they send (a provider whose bytes do not hash to what was
//! asked is dropped for the session), and answering requests from the store.

use super::{EventLoop, Fetch};
use libp2p::request_response;
use protocol::{BlobKind, Hash, InEvent};
use std::sync::Arc;

impl EventLoop {
    /// Asks the first provider left (connected ones first); with none left,
    /// tells the protocol the fetch failed.
    pub(super) fn request(&mut self, mut f: Fetch) {
        if self.blobs.get(&f.hash).is_some() {
            return; // another request for it (a hedge) already brought it
        }
        // Ask the providers we are connected to first: a dialled provider
        // may be a killed process, which costs a handshake timeout.
        let connected =
            |p: &protocol::PeerId| crate::identity::libp2p_peer(p).is_some_and(|lp| self.swarm.is_connected(&lp));
        if let Some(i) = f.providers.iter().position(connected) {
            f.providers.rotate_left(i);
        }
        while let Some(p) = f.providers.pop_front() {
            if p == self.peer.id() {
                continue;
            }
            let Some(lp) = crate::identity::libp2p_peer(&p) else {
                continue;
            };
            if self.banned.contains(&lp) {
                continue;
            }
            let id = self.swarm.behaviour_mut().blobs.send_request(&lp, f.hash.0);
            self.flow(f.kind).sent += 32;
            self.fetches.insert(id, f);
            return;
        }
        tracing::debug!(hash = %f.hash.short(), "no provider left");
        self.queue.push_back(InEvent::BlobFailed(f.hash));
    }

    /// Serves blob requests from the store and checks fetched blobs.
    pub(super) fn on_blob_event(&mut self, ev: request_response::Event<[u8; 32], Option<bytes::Bytes>>) {
        match ev {
            request_response::Event::Message { peer: from, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    let kind = self.blobs.kind(&Hash(request)).unwrap_or(BlobKind::Contribution);
                    let blob =
                        self.blobs.get(&Hash(request)).map(|b| bytes::Bytes::from_owner(crate::blobs::Shared(b)));
                    let flow = self.flow(kind);
                    flow.received += 32;
                    flow.sent += blob.as_ref().map(|b| b.len() as u64 + 1).unwrap_or(1);
                    let _ = self.swarm.behaviour_mut().blobs.send_response(channel, blob);
                }
                request_response::Message::Response { request_id, response } => {
                    let Some(f) = self.fetches.remove(&request_id) else {
                        return;
                    };
                    match response {
                        Some(bytes) if Hash::of(&bytes) == f.hash => {
                            let bytes = Vec::from(bytes);
                            self.flow(f.kind).received += bytes.len() as u64 + 1;
                            let round = self.peer.round();
                            if f.kind == BlobKind::Manifest {
                                // A manifest we missed: it is a signed envelope, checked like gossip.
                                self.drive(InEvent::Gossip(bytes.clone()));
                            }
                            self.blobs.insert_verified(round, f.hash, f.kind, Arc::new(bytes));
                            self.drive(InEvent::BlobReady(f.hash));
                        }
                        Some(bytes) => {
                            self.flow(f.kind).received += bytes.len() as u64 + 1;
                            self.bad_blobs += 1;
                            self.banned.insert(from);
                            let _ = self.swarm.disconnect_peer_id(from);
                            self.info(format!(
                                "peer {from} served bytes that do not hash to {}; dropped ({} so far)",
                                f.hash.short(),
                                self.bad_blobs
                            ));
                            self.request(f);
                            self.drain();
                        }
                        None => {
                            self.request(f);
                            self.drain();
                        }
                    }
                }
            },
            request_response::Event::OutboundFailure { request_id, .. } => {
                if let Some(f) = self.fetches.remove(&request_id) {
                    self.request(f);
                    self.drain();
                }
            }
            _ => {}
        }
    }
}
