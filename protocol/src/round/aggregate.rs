//! The aggregator's side of a round: who is waited for, who may sign, and
//! when the manifest is published.

use super::*;

impl Peer {
    /// Whether the aggregator of `round` should wait for `peer`'s
    /// contribution: it contributed last round, or says it is active in this
    /// round or the one before, or (round 1) is waiting for the start.
    pub(super) fn expects(&self, peer: &PeerId, info: &PeerInfo, round: u64) -> bool {
        (self.last_contributors.contains(peer) && *peer != self.me)
            || (info.status == Status::Active && info.round + 1 >= round && info.round <= round)
            || (info.status == Status::Waiting && round == 1)
    }
    /// Aggregator candidates of `round`: active members and ourselves,
    /// ranked by BLAKE3(run, round, peer).
    ///
    /// Every peer that applied the same manifest knows the same contributors,
    /// so they are the candidates (those still alive): all peers rank the
    /// same few the same way even when their views of the swarm differ. With
    /// no such contributor alive (round 1, or all gone), every active peer is
    /// a candidate.
    pub(super) fn candidates(&self, round: u64) -> Vec<PeerId> {
        let alive = |p: &PeerId| *p == self.me || self.peers.get(p).is_some_and(|i| i.status == Status::Active);
        let mut c: Vec<PeerId> = self.last_contributors.iter().copied().filter(alive).collect();
        if c.is_empty() {
            c = self.active_peers();
            c.push(self.me);
        }
        c.sort_by_key(|p| rank_key(&self.cfg.run, round, p));
        c
    }
    pub(super) fn poll_gathering(&mut self, round: u64, now: Time) {
        let Some(data) = self.rounds.get(&round) else {
            return;
        };
        // Only contributions trained from our state: another history's
        // pseudo-gradients do not belong in ours (and their peers are not
        // waited for).
        let ours: BTreeMap<&PeerId, &(Hash, u64, Hash)> =
            data.contributions.iter().filter(|(_, (_, _, b))| *b == self.state).collect();
        let elsewhere = |p: &PeerId| data.contributions.get(p).is_some_and(|(_, _, b)| *b != self.state);
        let ready: Vec<ManifestEntry> = ours
            .iter()
            .filter(|(_, (h, _, _))| self.have.contains(h))
            .map(|(p, (h, s, _))| ManifestEntry { peer: **p, hash: *h, samples: *s })
            .collect();
        let all_in = self
            .peers
            .iter()
            .filter(|(p, i)| self.expects(p, i, round) && !elsewhere(p))
            .all(|(p, _)| ours.contains_key(p))
            && ready.len() == ours.len();
        let deadline = self.round_started + self.deadline.current();
        if !all_in && now < deadline {
            return;
        }
        let Some(k) = self.candidates(round).iter().position(|p| *p == self.me) else {
            return; // not a candidate this round
        };
        let k = k as u64;
        let go = if k == 0 { all_in || now >= deadline } else { now >= deadline + k * self.cfg.aggregator_timeout };
        // Peers already moved past this round: its manifest exists and we
        // missed it. Publishing another would split the swarm; wait for the
        // next manifest and sync from it instead. More than a third of the
        // active peers must say so: one peer claiming a later round (a liar)
        // cannot stop every aggregator.
        let active: Vec<&PeerInfo> =
            self.peers.values().chain(self.departed.values()).filter(|i| i.status == Status::Active).collect();
        let past = active.iter().filter(|i| i.round > round || i.recent.iter().any(|(r, _)| *r >= round)).count();
        let closed = past > 0 && past * 3 > active.len();
        if !go || ready.is_empty() || closed {
            return;
        }
        let manifest = Manifest { state: self.state, entries: ready };
        let Ok(bytes) = Envelope::seal(&self.key, self.cfg.run, round, &Message::Manifest(manifest.clone())) else {
            return;
        };
        let id = Hash::of(&bytes);
        self.keep(&bytes);
        self.out.push(OutEvent::Broadcast(bytes));
        self.stats.manifests_published += 1;
        self.accept_manifest(round, self.me, manifest, id, now);
    }
}
