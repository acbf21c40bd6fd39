//! Blobs over the network, the node's side: it carries out the protocol's
//! requests (one provider each; which provider, when, and hedging are the
//! protocol's), checks what comes back (a provider whose bytes do not hash
//! to what was asked is disconnected and banned for the session), and
//! answers requests from the store.

use super::{EventLoop, Request};
use crate::net;
use libp2p::request_response;
use protocol::{BlobKind, FetchFailure, Hash, InEvent};
use std::sync::Arc;

impl EventLoop {
    /// Sends one request the protocol asked for.
    pub(super) fn request(&mut self, hash: Hash, kind: BlobKind, from: protocol::PeerId) {
        if let Some(b) = self.blobs.get(&hash) {
            self.queue.push_back(InEvent::BlobReady(hash));
            if kind == BlobKind::Chain {
                self.queue.push_back(chain_event(hash, &b));
            }
            return;
        }
        if self.plane_request(hash, kind, from) {
            return;
        }
        let Some(lp) = crate::identity::libp2p_peer(&from) else {
            return self.queue.push_back(InEvent::RequestFailed { hash, from, why: FetchFailure::Unreachable });
        };
        if self.banned.contains(&lp) {
            // It served bytes that did not verify (here or on the data
            // plane, where the protocol may not have heard of it): say so,
            // so that its claims stop counting too.
            return self.queue.push_back(InEvent::RequestFailed { hash, from, why: FetchFailure::WrongBytes });
        }
        let request = net::BlobRequest::bounded(hash.0, self.max_bytes(kind));
        let id = self.swarm.behaviour_mut().blobs.send_request(&lp, request);
        self.flow(kind).sent += 32;
        self.requests.insert(id, Request { hash, kind, from });
    }

    /// The most bytes a blob of `kind` may have: an answer is refused past
    /// it before it is read further (issue 13 item 3). Manifests are
    /// envelopes, chains a hash per segment end; the big kinds are bounded
    /// by the largest blob of the run's model.
    fn max_bytes(&self, kind: BlobKind) -> usize {
        match kind {
            BlobKind::Manifest => protocol::MAX_ENVELOPE_BYTES,
            BlobKind::Chain => 32 * (protocol::spec::MAX_SEGMENTS as usize + 1),
            _ => self.max_blob,
        }
    }

    /// Serves blob requests from the store and checks fetched blobs.
    pub(super) fn on_blob_event(&mut self, ev: request_response::Event<net::BlobRequest, Option<bytes::Bytes>>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } if request.hash == self.run.0 => {
                    // The run's spec (its hash is the run id): for joiners that know only the id.
                    let _ = self.swarm.behaviour_mut().blobs.send_response(channel, Some(self.spec_bytes.clone()));
                }
                request_response::Message::Request { request, channel, .. } => {
                    let kind = self.blobs.kind(&Hash(request.hash)).unwrap_or(BlobKind::Contribution);
                    let hide = self.lies(crate::adversary::Adversary::IgnoreDispute)
                        && matches!(kind, BlobKind::Chain | BlobKind::InnerState);
                    let blob = self
                        .blobs
                        .get(&Hash(request.hash))
                        .filter(|_| !hide)
                        .map(|b| bytes::Bytes::from_owner(crate::blobs::Shared(b)))
                        .map(|b| if self.lies(crate::adversary::Adversary::WrongBytes) { flipped(&b) } else { b });
                    let flow = self.flow(kind);
                    flow.received += 32;
                    flow.sent += blob.as_ref().map(|b| b.len() as u64 + 1).unwrap_or(1);
                    let _ = self.swarm.behaviour_mut().blobs.send_response(channel, blob);
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some(r) = self.requests.remove(&request_id) {
                        self.on_response(peer, r, response);
                    }
                }
            },
            request_response::Event::OutboundFailure { request_id, .. } => {
                if let Some(r) = self.requests.remove(&request_id) {
                    let failed = InEvent::RequestFailed { hash: r.hash, from: r.from, why: FetchFailure::Unreachable };
                    self.drive(failed);
                }
            }
            _ => {}
        }
    }

    /// An answer asked for as another kind that is a signed manifest: a
    /// liar announced a contribution under a manifest's id (or listed a
    /// contribution's hash as one). Taken in as gossip all the same: held
    /// as a blob, the manifest would never be read otherwise. (Over libp2p
    /// and over the data plane alike.)
    pub(super) fn read_if_manifest(&mut self, bytes: &[u8]) {
        if is_manifest(bytes) {
            self.on_gossip(bytes.to_vec(), None);
        }
    }

    fn on_response(&mut self, peer: libp2p::PeerId, r: Request, response: Option<bytes::Bytes>) {
        let Some(bytes) = response else {
            return self.drive(InEvent::RequestFailed { hash: r.hash, from: r.from, why: FetchFailure::NotFound });
        };
        self.flow(r.kind).received += bytes.len() as u64 + 1;
        if Hash::of(&bytes) != r.hash {
            self.banned.insert(peer);
            let _ = self.swarm.disconnect_peer_id(peer);
            self.info(format!(
                "peer {peer} served bytes that do not hash to {}; dropped ({} so far)",
                r.hash.short(),
                self.banned.len()
            ));
            return self.drive(InEvent::RequestFailed { hash: r.hash, from: r.from, why: FetchFailure::WrongBytes });
        }
        let bytes = Vec::from(bytes);
        if r.kind == BlobKind::Manifest {
            // A manifest we missed: a signed envelope, judged like gossip
            // (its signature vouches for it, whoever served it). One bigger
            // than an envelope is not stored (issue 13 item 3); the store
            // caps manifests in all.
            if bytes.len() > protocol::MAX_ENVELOPE_BYTES {
                return self.drive(InEvent::BlobReady(r.hash));
            }
            self.on_gossip(bytes.clone(), None);
        } else {
            self.read_if_manifest(&bytes);
        }
        let round = self.peer.round();
        let chain = (r.kind == BlobKind::Chain).then(|| chain_event(r.hash, &bytes));
        self.blobs.insert_verified(round, r.hash, r.kind, Arc::new(bytes));
        self.drive(InEvent::BlobReady(r.hash));
        if let Some(ev) = chain {
            self.drive(ev);
        }
    }
}

/// Whether `bytes` are a signed manifest envelope (of any run: `on_gossip`
/// judges the rest). Anything bigger than an envelope is refused first, in
/// constant time.
fn is_manifest(bytes: &[u8]) -> bool {
    protocol::Envelope::open(bytes)
        .ok()
        .and_then(|o| o.message().ok())
        .is_some_and(|m| matches!(m, protocol::Message::Manifest(_)))
}

/// The bytes with every one flipped (what a lying provider serves).
fn flipped(b: &[u8]) -> bytes::Bytes {
    b.iter().map(|x| !x).collect::<Vec<u8>>().into()
}

/// A chain blob's entries for the protocol (it checks them against the
/// hash and the expected count).
fn chain_event(hash: Hash, bytes: &[u8]) -> InEvent {
    let leaves = bytes.chunks(32).filter_map(|c| c.try_into().ok().map(Hash)).collect();
    InEvent::Chain { hash, leaves }
}
