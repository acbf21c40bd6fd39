//! Rollouts as blobs, the RL node's side. A peer publishes each round's
//! batch as a blob and gossips its signed [`Announce`]; a receiver holds
//! the announcement back from gossip (no verdict yet, so it is not relayed),
//! fetches the payload on the blob protocol from the peer that relayed it
//! (which holds it: peers relay only what they fetched and checked) or
//! else from its author, checks it against the announcement, re-scores it,
//! and only then accepts the announcement, which relays it. So a lie is
//! never relayed, and every relay serves what it relays.

use super::RlLoop;
use crate::net;
use libp2p::{gossipsub, request_response};
use protocol::PeerId;
use protocol::rollouts::{Announce, PayloadError, Rollout, RolloutBatch, RolloutError};
use std::collections::{BTreeMap, HashSet, VecDeque};

/// Payloads served at most, in bytes (ours and those we relay; the oldest
/// go first). Eight of the largest batches; a round of tasks-gpt's default
/// spec is about 1 KB a peer.
pub(super) const SERVE_BYTES: usize = 8 * protocol::rollouts::MAX_BATCH_BYTES;
/// And at most this many.
const SERVE_COUNT: usize = 1024;
/// Announcements of authors with nothing in our pool (strangers, fresh
/// keys among them) whose payload is being fetched or waits, at once; more
/// are ignored. Authors in the pool (at most 256) are not counted here, so
/// strangers that stall their answers cannot keep the others' rollouts out.
const MAX_STRANGER_FETCHES: usize = 64;
/// Fetches started per author in one of our rounds (a peer that announces
/// many rounds quickly gets no more of our bandwidth and re-scoring).
const FETCHES_PER_ROUND: u32 = 2;
/// Authors counted per round at most (fresh keys cost bounded memory).
const MAX_AUTHORS_PER_ROUND: usize = 4096;
/// Providers remembered for serving wrong bytes (never asked again).
const MAX_BANNED: usize = 4096;

/// What the exchange holds: the payloads it serves, the fetches in flight,
/// and what it fetched since the last report.
#[derive(Default)]
pub(super) struct Exchange {
    served: BTreeMap<protocol::Hash, bytes::Bytes>,
    order: VecDeque<protocol::Hash>,
    served_bytes: usize,
    fetches: BTreeMap<request_response::OutboundRequestId, Fetch>,
    /// The next announcement of an author whose fetch is in flight (one
    /// fetch per author at once; a newer announcement replaces it).
    queued: BTreeMap<PeerId, Fetch>,
    /// Our round, and the fetches started per author in it.
    started: (u64, BTreeMap<PeerId, u32>),
    /// Providers that served bytes that were not the announced ones.
    banned: HashSet<libp2p::PeerId>,
    /// Payloads fetched and checked, and their bytes, since the last report.
    pub fetched: (usize, u64),
    /// Announcements given up on since the last report: nobody served
    /// their payload.
    pub unserved: usize,
    /// Answers of bytes that were not the announced ones, since the last
    /// report.
    pub wrong: usize,
}

/// A payload being fetched for an announcement held back from gossip.
struct Fetch {
    announce: Announce,
    author: PeerId,
    message_id: gossipsub::MessageId,
    /// Who relayed the announcement to us (gossip's verdict goes to it).
    source: libp2p::PeerId,
    /// Who to ask next, in order.
    next: Vec<libp2p::PeerId>,
}

impl Exchange {
    /// Serves `bytes` under their hash (ours, or a payload we checked).
    pub(super) fn serve(&mut self, hash: protocol::Hash, bytes: bytes::Bytes) {
        if self.served.contains_key(&hash) {
            return;
        }
        self.served_bytes += bytes.len();
        self.served.insert(hash, bytes);
        self.order.push_back(hash);
        while self.served_bytes > SERVE_BYTES || self.order.len() > SERVE_COUNT {
            let Some(old) = self.order.pop_front() else { break };
            if let Some(b) = self.served.remove(&old) {
                self.served_bytes -= b.len();
            }
        }
    }
}

impl RlLoop {
    /// Publishes a round's batch: the payload into the store, the signed
    /// announcement on gossip.
    pub(super) fn publish(&mut self, round: u64, batch: RolloutBatch) {
        let n = batch.rollouts.len();
        let sealed = Announce::of(&batch).and_then(|(a, bytes)| {
            let env = protocol::Envelope::seal(&self.key, self.run, round, &protocol::Message::Rollouts(a))
                .map_err(|e| RolloutError::Invalid(format!("{e:?}")))?;
            Ok((a, bytes, env))
        });
        let (a, bytes, env) = match sealed {
            Ok(s) => s,
            Err(e) => return self.say(format!("round {round}: rollouts not published: {e}")),
        };
        self.exchange.serve(a.hash, bytes.into());
        match self.swarm.behaviour_mut().gossipsub.publish(self.topic.clone(), env) {
            Ok(_) => self.current.shared = n,
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) if !self.warned_alone => {
                self.warned_alone = true;
                self.say(format!("round {round}: no peer on the run's topic yet; {n} groups not shared"));
            }
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
            Err(e) => self.say(format!("round {round}: publishing rollouts failed: {e}")),
        }
    }

    /// An announcement that passed the envelope's checks: fetch its payload
    /// (the verdict comes with it), or judge it now. Checked in order: our
    /// own (replayed to us), bounds (the wire's, then this run's), a
    /// dropped author, a replay, then the fetch limits.
    pub(super) fn on_announce(
        &mut self,
        author: PeerId,
        envelope_round: u64,
        a: Announce,
        message_id: &gossipsub::MessageId,
        source: libp2p::PeerId,
    ) -> Option<gossipsub::MessageAcceptance> {
        use gossipsub::MessageAcceptance::{Ignore, Reject};
        if author == self.key.peer_id() {
            return Some(Ignore);
        }
        let off_spec = a.groups as usize > self.rules.generate || a.bytes as usize > self.rules.max_batch_bytes();
        if a.check(envelope_round).is_err() || off_spec || self.pool.is_dropped(&author) {
            return Some(Reject);
        }
        if self.pool.is_replay(&author, a.session, a.round) {
            return Some(Ignore);
        }
        let e = &mut self.exchange;
        if !self.pool.knows(&author) {
            let pool = &self.pool;
            let strangers = e.fetches.values().chain(e.queued.values()).filter(|f| !pool.knows(&f.author)).count();
            if strangers >= MAX_STRANGER_FETCHES {
                return Some(Ignore);
            }
        }
        if e.started.0 != self.round {
            e.started = (self.round, BTreeMap::new());
        }
        let known = e.started.1.contains_key(&author);
        let count = e.started.1.get(&author).copied().unwrap_or(0);
        if count >= FETCHES_PER_ROUND || (!known && e.started.1.len() >= MAX_AUTHORS_PER_ROUND) {
            return Some(Ignore);
        }
        e.started.1.insert(author, count + 1);
        let mut next = vec![source];
        if let Some(lp) = crate::identity::libp2p_peer(&author).filter(|lp| *lp != source) {
            next.push(lp);
        }
        next.reverse();
        let fetch = Fetch { announce: a, author, message_id: message_id.clone(), source, next };
        if e.fetches.values().any(|f| f.author == author) {
            if let Some(old) = e.queued.insert(author, fetch) {
                self.tell_gossip(&old, Ignore);
            }
            return None;
        }
        self.fetch(fetch);
        None
    }

    /// Asks the next provider, or gives up (gossip ignores the announcement:
    /// nobody could serve it, which proves nothing against its author).
    fn fetch(&mut self, mut f: Fetch) {
        // Providers banned since the announcement came (a queued one) too.
        let banned = &self.exchange.banned;
        f.next.retain(|p| !banned.contains(p));
        let Some(to) = f.next.pop() else {
            self.exchange.unserved += 1;
            return self.finish(f, gossipsub::MessageAcceptance::Ignore);
        };
        let request = net::BlobRequest::bounded(f.announce.hash.0, f.announce.bytes as usize);
        let id = self.swarm.behaviour_mut().blobs.send_request(&to, request);
        self.exchange.fetches.insert(id, f);
    }

    /// Gives gossip its verdict on a fetched announcement, and starts the
    /// author's queued one.
    fn finish(&mut self, f: Fetch, v: gossipsub::MessageAcceptance) {
        self.tell_gossip(&f, v);
        if let Some(q) = self.exchange.queued.remove(&f.author) {
            self.fetch(q);
        }
    }

    /// A dropped author's queued announcement is refused, not fetched.
    fn drop_queued(&mut self, author: &PeerId) {
        if let Some(q) = self.exchange.queued.remove(author) {
            self.tell_gossip(&q, gossipsub::MessageAcceptance::Reject);
        }
    }

    fn tell_gossip(&mut self, f: &Fetch, v: gossipsub::MessageAcceptance) {
        self.swarm.behaviour_mut().gossipsub.report_message_validation_result(&f.message_id, &f.source, v);
    }

    /// Serves payloads and takes fetched ones.
    pub(super) fn on_blob_event(&mut self, ev: request_response::Event<net::BlobRequest, Option<bytes::Bytes>>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    let mut blob = self.exchange.served.get(&protocol::Hash(request.hash)).cloned();
                    if self.adversary == Some(crate::adversary::Adversary::WrongBytes) {
                        blob = blob.map(|b| b.iter().map(|x| !x).collect::<Vec<u8>>().into());
                    }
                    let _ = self.swarm.behaviour_mut().blobs.send_response(channel, blob);
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some(f) = self.exchange.fetches.remove(&request_id) {
                        self.on_payload(peer, f, response);
                    }
                }
            },
            request_response::Event::OutboundFailure { request_id, .. } => {
                if let Some(f) = self.exchange.fetches.remove(&request_id) {
                    self.fetch(f);
                }
            }
            _ => {}
        }
    }

    fn on_payload(&mut self, provider: libp2p::PeerId, f: Fetch, response: Option<bytes::Bytes>) {
        use gossipsub::MessageAcceptance::{Accept, Ignore, Reject};
        let Some(bytes) = response else { return self.fetch(f) };
        let batch = match f.announce.open(&bytes) {
            Ok(b) => b,
            Err(PayloadError::WrongBytes(n)) => {
                self.exchange.wrong += 1;
                if self.exchange.banned.len() < MAX_BANNED && self.exchange.banned.insert(provider) {
                    self.say(format!(
                        "peer {provider} served {n} bytes that are not the rollouts {} of peer {}; never asked again",
                        f.announce.hash.short(),
                        f.author.short()
                    ));
                }
                return self.fetch(f);
            }
            Err(PayloadError::Bad(e)) => {
                self.rejected += f.announce.groups as usize;
                self.drop_queued(&f.author);
                if self.pool.drop_peer(f.author, e.to_string()) {
                    self.say(format!(
                        "dropped peer {}: it announced rollouts that are not a batch: {e}",
                        f.author.short()
                    ));
                }
                return self.finish(f, Reject);
            }
        };
        self.exchange.fetched.0 += 1;
        self.exchange.fetched.1 += bytes.len() as u64;
        let v = match self.offer(f.author, batch) {
            Ok(()) => {
                self.exchange.serve(f.announce.hash, bytes);
                Accept
            }
            Err(RolloutError::Replayed { .. }) => Ignore,
            Err(_) => Reject,
        };
        self.finish(f, v);
    }

    /// Gives a checked batch to the pool (the run's rules, then re-scoring
    /// with our checker: a peer whose claims differ is dropped).
    fn offer(&mut self, author: PeerId, batch: RolloutBatch) -> Result<(), RolloutError> {
        let groups = batch.rollouts.len();
        let checker = trainer::rl::checker(&self.spec);
        let rescore = |r: &Rollout| checker.rescore(r.task, &r.completions);
        let offered = self.pool.offer(author, batch, self.round, &self.rules, &rescore);
        if let Err(RolloutError::Lied { task, claimed, rescored }) = &offered {
            self.drop_queued(&author);
            self.rejected += groups;
            self.say(format!(
                "dropped peer {}: claimed rewards {claimed:?} for {} task {} (level {}), re-scored {rescored:?}",
                author.short(),
                trainer::rl::tasks::family_name(task.family),
                task.seed,
                task.level,
            ));
        }
        offered.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::Hash;
    use protocol::rollouts::MAX_BATCH_BYTES;

    #[test]
    fn served_payloads_are_bounded_in_bytes_and_count_oldest_first() {
        let mut e = Exchange::default();
        let big = bytes::Bytes::from(vec![0u8; MAX_BATCH_BYTES]);
        for i in 0..10u8 {
            e.serve(Hash([i; 32]), big.clone());
            e.serve(Hash([i; 32]), big.clone());
        }
        assert_eq!(e.served_bytes, SERVE_BYTES);
        assert_eq!(e.served.len(), 8);
        assert!(!e.served.contains_key(&Hash([1; 32])) && e.served.contains_key(&Hash([2; 32])));
        let mut e = Exchange::default();
        for i in 0..(SERVE_COUNT as u32 + 10) {
            let mut h = [0u8; 32];
            h[..4].copy_from_slice(&i.to_le_bytes());
            e.serve(Hash(h), bytes::Bytes::from_static(b"x"));
        }
        assert_eq!((e.served.len(), e.order.len(), e.served_bytes), (SERVE_COUNT, SERVE_COUNT, SERVE_COUNT));
        assert!(!e.served.contains_key(&Hash([0; 32])));
    }
}
