//! Blobs over the network, the node's side: asking providers in turn and
//! checking what they send (a provider whose bytes do not hash to what was
//! asked is dropped for the session), and answering requests from the store.

use super::{EventLoop, Fetch};
use libp2p::request_response;
use protocol::{BlobKind, Hash, InEvent};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A request unanswered this long gets a parallel one to the chain's next
/// provider (the first good answer wins).
const HEDGE_AFTER: Duration = Duration::from_secs(1);

impl EventLoop {
    /// Starts a chain of requests for a blob the protocol asked for.
    pub(super) fn start_fetch(&mut self, hash: Hash, kind: BlobKind, providers: Vec<protocol::PeerId>) {
        *self.chains.entry(hash).or_default() += 1;
        let f = Fetch { hash, kind, providers: providers.into(), asked_at: Instant::now(), hedged: false };
        self.request(f);
    }

    /// A chain ended: with the blob, or without it (its providers ran out).
    /// The protocol hears of a failure when no other chain for the blob runs.
    fn end_chain(&mut self, hash: Hash, failed: bool) {
        let Some(n) = self.chains.get_mut(&hash) else { return };
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.chains.remove(&hash);
            if failed {
                tracing::debug!(hash = %hash.short(), "no provider left");
                self.queue.push_back(InEvent::BlobFailed(hash));
            }
        }
    }

    /// Asks the chain's next provider (connected ones first); with none
    /// left, ends the chain.
    pub(super) fn request(&mut self, mut f: Fetch) {
        if self.blobs.get(&f.hash).is_some() {
            return self.end_chain(f.hash, false); // another chain brought it
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
            (f.asked_at, f.hedged) = (Instant::now(), false);
            self.fetches.insert(id, f);
            return;
        }
        self.end_chain(f.hash, true);
    }

    /// Requests unanswered for [`HEDGE_AFTER`] hand the rest of their
    /// providers to a parallel chain: a slow or dead provider (a stale
    /// address costs a handshake timeout) does not hold the blob up.
    pub(super) fn hedge_requests(&mut self) {
        let mut hedges = Vec::new();
        for f in self.fetches.values_mut() {
            if !f.hedged && !f.providers.is_empty() && f.asked_at.elapsed() >= HEDGE_AFTER {
                f.hedged = true;
                let providers = std::mem::take(&mut f.providers);
                hedges.push(Fetch { hash: f.hash, kind: f.kind, providers, asked_at: Instant::now(), hedged: false });
            }
        }
        for f in hedges {
            *self.chains.entry(f.hash).or_default() += 1;
            self.request(f);
        }
        self.drain();
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
                            self.end_chain(f.hash, false);
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
