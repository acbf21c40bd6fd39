//! The aggregator's side of a round: who is waited for, who may sign, and
//! when the manifest is published.

use super::members::PeerInfo;
use super::*;
use crate::message::EpochRoot;

impl Peer {
    /// Whether the aggregator of `round` should wait for `peer`'s
    /// contribution: it contributed last round, or says it is active in this
    /// round or the one before, or (round 1) is waiting for the start.
    fn expects(&self, peer: &PeerId, info: &PeerInfo, round: u64) -> bool {
        if self.reviews.excluded.contains(peer) {
            return false;
        }
        // Only peers with standing are waited for: a fresh key that says it
        // is active and never contributes must not hold every round to its
        // deadline (a newcomer's contribution is taken if it comes in time).
        (self.history.last_contributors().contains(peer) && *peer != self.me)
            || (info.is_active()
                && info.round.saturating_add(1) >= round
                && info.round <= round
                && self.history.counts(peer))
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
    fn candidates(&self, round: u64) -> Vec<PeerId> {
        // Nor a provider that served wrong bytes: its manifest would name
        // a contribution nobody gets from it.
        let withheld =
            |p: &PeerId| self.fetcher.is_banned(p) || self.withheld.get(&round).is_some_and(|w| w.contains(p));
        let alive = |p: &PeerId| {
            (*p == self.me || self.members.is_active(p)) && !self.reviews.excluded.contains(p) && !withheld(p)
        };
        let mut c: Vec<PeerId> = self.history.last_contributors().iter().copied().filter(alive).collect();
        if c.is_empty() {
            c = self.members.active().into_iter().filter(|p| !withheld(p)).collect();
            c.push(self.me);
        }
        c.sort_by_key(|p| rank_key(&self.cfg.run, round, p));
        c
    }

    /// Whether `signer` may sign the manifest of `round`: a contributor of
    /// the manifest of the round before, which we applied (common knowledge
    /// among the peers that applied it, unlike who is alive). Anyone may in
    /// round 1, for a peer that did not apply the round before (a joiner
    /// relies on confirmations instead), and when none of those contributors
    /// is alive any more (else the swarm could not go on).
    pub(super) fn may_sign(&self, signer: &PeerId, round: u64) -> bool {
        if self.history.last_round().is_none_or(|r| r + 1 != round) {
            return true;
        }
        if self.reviews.excluded.contains(signer) {
            return false;
        }
        let last = self.history.last_contributors();
        let alive = |p: &PeerId| (*p == self.me || self.members.is_active(p)) && !self.reviews.excluded.contains(p);
        last.contains(signer) || !last.iter().any(alive)
    }

    /// A late manifest of a round we applied that starts from the same
    /// state as ours (so the same history before it), signed by a peer
    /// that did not contribute to the round before, as its signer had to
    /// (known while that round is in the review window). A manifest of
    /// another history (a partition that healed) is not judged by ours.
    pub(super) fn forged_late(&self, signer: &PeerId, round: u64, m: &Manifest) -> bool {
        let ours = self.reviews.applied_of(round);
        let before = self.reviews.contributors_of(round.saturating_sub(1));
        match (ours, before) {
            (Some(ours), Some(before)) => ours.state == m.state && !before.contains(signer),
            _ => false,
        }
    }

    /// When this peer may next publish the manifest of `round`: the round
    /// deadline, or its takeover time as the k-th candidate; `None` once
    /// both have passed (only news can change anything then).
    pub(super) fn aggregator_time(&self, round: u64) -> Option<Time> {
        let deadline = self.round_started + self.deadline.current();
        if self.now < deadline {
            return Some(deadline);
        }
        let k = self.candidates(round).iter().position(|p| *p == self.me)? as u64;
        let takeover = self.turns_from(round, deadline) + k * self.cfg.aggregator_timeout;
        (self.now < takeover).then_some(takeover)
    }

    /// When the candidates' turns of `round` start: the deadline, or the
    /// moment we went back to gathering it after giving up its manifest.
    fn turns_from(&self, round: u64, deadline: Time) -> Time {
        match self.regathered {
            Some((r, at)) if r == round => deadline.max(at),
            _ => deadline,
        }
    }

    /// The contributions of `round` trained from our state, and whether
    /// everyone we wait for has announced and been fetched.
    fn ready_entries(&self, round: u64) -> (Vec<ManifestEntry>, bool) {
        let Some(data) = self.rounds.get(&round) else { return (Vec::new(), false) };
        // Only contributions trained from our state: another history's
        // pseudo-gradients do not belong in ours (and their peers are not
        // waited for).
        let ours: BTreeMap<&PeerId, &Announced> = data
            .contributions
            .iter()
            .filter(|(p, a)| a.contribution.base_state == self.state && !self.reviews.excluded.contains(p))
            .collect();
        let elsewhere = |p: &PeerId| data.contributions.get(p).is_some_and(|a| a.contribution.base_state != self.state);
        let ready: Vec<ManifestEntry> = ours
            .iter()
            .filter(|(_, a)| self.fetcher.has(&a.contribution.hash))
            .map(|(p, a)| ManifestEntry { peer: **p, contribution: a.contribution, signature: a.signature })
            .collect();
        let all_in = self
            .members
            .iter()
            .filter(|(p, i)| self.expects(p, i, round) && !elsewhere(p))
            .all(|(p, _)| ours.contains_key(p))
            && ready.len() == ours.len();
        (ready, all_in)
    }

    /// Peers already moved past this round: its manifest exists and we
    /// missed it. Publishing another would split the swarm; wait for the
    /// next manifest and sync from it instead.
    pub(super) fn round_is_closed(&self, round: u64) -> bool {
        // Heads with standing only: fresh keys claiming a later round must
        // not outvote the peers that did the work.
        let active: Vec<&PeerInfo> = self
            .members
            .active_with_departed_ids()
            .filter(|(p, _)| self.history.counts(p) && !self.withholds(p))
            .map(|(_, i)| i)
            .collect();
        let past = active.iter().filter(|i| i.round > round || i.recent.iter().any(|m| m.round >= round)).count();
        quorum::round_is_over(past, active.len())
    }

    pub(super) fn poll_gathering(&mut self, round: u64, now: Time) {
        let (ready, all_in) = self.ready_entries(round);
        let deadline = self.round_started + self.deadline.current();
        if !all_in && now < deadline {
            return;
        }
        let Some(k) = self.candidates(round).iter().position(|p| *p == self.me) else {
            return; // not a candidate this round
        };
        if round <= self.sit_out {
            return; // signed for in an earlier life
        }
        let k = k as u64;
        let start = self.turns_from(round, deadline);
        let go = if k == 0 { all_in || now >= start } else { now >= start + k * self.cfg.aggregator_timeout };
        if !go || ready.is_empty() || self.round_is_closed(round) {
            return;
        }
        let manifest = Manifest {
            state: self.state,
            entries: ready,
            exclusions: self.exclusions_to_publish(),
            excluded: self.reviews.excluded.iter().take(MAX_MANIFEST_ENTRIES).copied().collect(),
            checks: self.reviews.passed.values().take(super::checks::MAX_CHECKS).copied().collect(),
            ledger: self.ledger.epochs().filter(|e| !e.is_unknown()).last().map(|e| EpochRoot {
                epoch: e.epoch,
                root: e.root,
                total: e.total,
            }),
        };
        let mut manifest = manifest;
        let bytes = match Envelope::seal(&self.key, self.cfg.run, round, &Message::Manifest(manifest.clone())) {
            Ok(b) => b,
            Err(_) => {
                // Too big: the credited checks wait for a later manifest.
                manifest.checks.clear();
                let Ok(b) = Envelope::seal(&self.key, self.cfg.run, round, &Message::Manifest(manifest.clone())) else {
                    return;
                };
                b
            }
        };
        let id = Hash::of(&bytes);
        self.keep(&bytes);
        self.out.push(OutEvent::Signing { round });
        self.out.push(OutEvent::Broadcast(bytes));
        self.stats.manifests_published += 1;
        self.accept_manifest(round, KnownManifest { aggregator: self.me, manifest, id }, now);
    }
}
