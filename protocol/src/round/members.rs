//! Who is in the run, as this peer hears it: members from their hellos and
//! messages, peers that left recently, and peers that left after the last
//! round.

use crate::envelope::DropReason;
use crate::id::PeerId;
use crate::message::{AppliedManifest, Status};
use crate::time::Time;
use std::collections::{BTreeMap, BTreeSet};

/// Members a peer keeps, peers with standing not counted against it: a
/// hello from a new peer without standing beyond it is dropped (issue 13
/// item 4: every poll scans the members, and fresh keys cost nothing).
/// Before anyone's standing is known (round 1, a joiner) every peer counts
/// against it.
pub const MAX_MEMBERS: usize = 2048;
/// Finished peers remembered.
const MAX_FINISHED: usize = 1024;
/// Peers whose last hello counter is remembered (beyond that, only those
/// of members and recently departed peers are kept).
const MAX_SEQS: usize = 4096;

/// What we know of one other peer.
#[derive(Clone, Debug)]
pub(super) struct PeerInfo {
    pub(super) status: Status,
    /// The newest round it spoke in.
    pub(super) round: u64,
    pub(super) last_seen: Time,
    /// When this peer first heard of it (kept across hellos): see
    /// [`Members::settled`].
    pub(super) first_seen: Time,
    /// The manifests it applied last (from its hellos).
    pub(super) recent: Vec<AppliedManifest>,
}

impl PeerInfo {
    pub(super) fn is_active(&self) -> bool {
        self.status == Status::Active
    }

    pub(super) fn lists(&self, m: &AppliedManifest) -> bool {
        self.recent.contains(m)
    }
}

/// The membership view of one peer.
#[derive(Clone, Debug, Default)]
pub(super) struct Members {
    peers: BTreeMap<PeerId, PeerInfo>,
    /// Peers that left recently: they still confirm manifests for
    /// stragglers, and may still serve blobs for a moment.
    departed: BTreeMap<PeerId, PeerInfo>,
    /// Active peers that left after the last round (kept after `departed`
    /// forgets them): a peer still waiting when nobody is left knows the
    /// run is over.
    finished: BTreeSet<PeerId>,
    /// The highest hello/leave counter seen from each peer (kept after the
    /// peer expires, so a replay of its old messages does not bring it
    /// back, for up to [`MAX_SEQS`] peers; past that, only members' and
    /// recently departed peers' are kept).
    seqs: BTreeMap<PeerId, u64>,
}

impl Members {
    /// Records `peer`'s message counter if it is above the last one seen;
    /// a replayed (or reordered) older message is refused.
    pub(super) fn newer(&mut self, peer: PeerId, seq: u64) -> Result<(), DropReason> {
        if self.seqs.get(&peer).is_some_and(|last| seq <= *last) {
            return Err(DropReason::Replayed);
        }
        // Forget the counters of peers that are gone, when that frees a
        // quarter of the table: with more members than it holds, a retain
        // at every new sender scanned it at every hello (issue 13 item 4).
        if self.seqs.len() >= MAX_SEQS
            && !self.seqs.contains_key(&peer)
            && self.peers.len() + self.departed.len() + MAX_SEQS / 4 <= self.seqs.len()
        {
            let (peers, departed) = (&self.peers, &self.departed);
            self.seqs.retain(|p, _| peers.contains_key(p) || departed.contains_key(p));
        }
        if self.seqs.len() < MAX_SEQS || self.seqs.contains_key(&peer) {
            self.seqs.insert(peer, seq);
        }
        Ok(())
    }

    /// A hello: the sender's status, round and recent manifests.
    pub(super) fn hello(&mut self, peer: PeerId, status: Status, round: u64, recent: Vec<AppliedManifest>, now: Time) {
        let first_seen = self.peers.get(&peer).map_or(now, |i| i.first_seen);
        self.peers.insert(peer, PeerInfo { status, round, last_seen: now, first_seen, recent });
    }

    /// A leave: an active member moves to `departed` (and to `finished` if it
    /// applied the run's last round).
    /// Returns whether the peer was an active member.
    pub(super) fn leave(&mut self, peer: PeerId, recent: Vec<AppliedManifest>, now: Time, last_round: u64) -> bool {
        let Some(mut info) = self.peers.remove(&peer) else { return false };
        let active = info.is_active();
        if active {
            if recent.iter().any(|m| m.round >= last_round) && self.finished.len() < MAX_FINISHED {
                self.finished.insert(peer);
            }
            info.recent = recent;
            info.last_seen = now;
            self.departed.insert(peer, info);
        }
        active
    }

    /// A contribution or manifest from `peer` shows it active in `round`.
    pub(super) fn touch(&mut self, peer: PeerId, round: u64, now: Time) {
        let info = self.peers.entry(peer).or_insert(PeerInfo {
            status: Status::Active,
            round,
            last_seen: now,
            first_seen: now,
            recent: Vec::new(),
        });
        info.last_seen = now;
        info.status = Status::Active;
        info.round = info.round.max(round);
    }

    /// Forgets peers not heard from for `ttl`.
    pub(super) fn expire(&mut self, now: Time, ttl: Time) {
        self.peers.retain(|_, i| i.last_seen + ttl >= now);
        self.departed.retain(|_, i| i.last_seen + ttl >= now);
    }

    /// When the next member or departed peer expires.
    pub(super) fn next_expiry(&self, ttl: Time) -> Option<Time> {
        self.peers.values().chain(self.departed.values()).map(|i| i.last_seen + ttl + 1).min()
    }

    pub(super) fn len(&self) -> usize {
        self.peers.len()
    }

    pub(super) fn contains(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    pub(super) fn is_active(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(PeerInfo::is_active)
    }

    /// Members heard of for at least `settle`, and what we know of them.
    /// Gossip hands a peer that just subscribed messages of the last few
    /// heartbeats (its neighbours' caches), so the first hello it hears
    /// from a peer may be seconds old: one that says "round 1, nothing
    /// applied" while the run is at round 3. A newer hello replaces it (and
    /// an older one is refused by its counter), and hellos come every
    /// hello interval: after one (the caller's `settle`) what we know of a
    /// live peer is normally current.
    pub(super) fn settled(&self, now: Time, settle: Time) -> impl Iterator<Item = (&PeerId, &PeerInfo)> {
        self.peers.iter().filter(move |(_, i)| i.first_seen.saturating_add(settle) <= now)
    }

    /// When the next member heard of less than `settle` ago settles.
    pub(super) fn next_settled(&self, now: Time, settle: Time) -> Option<Time> {
        self.peers.values().map(|i| i.first_seen.saturating_add(settle)).filter(|t| *t > now).min()
    }

    /// Members and what we know of them.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&PeerId, &PeerInfo)> {
        self.peers.iter()
    }

    /// Active members and active peers that left recently, with their ids.
    pub(super) fn active_with_departed_ids(&self) -> impl Iterator<Item = (&PeerId, &PeerInfo)> {
        self.peers.iter().chain(self.departed.iter()).filter(|(_, i)| i.is_active())
    }

    /// Members and recently departed peers, whatever their status.
    pub(super) fn all_with_departed(&self) -> impl Iterator<Item = (&PeerId, &PeerInfo)> {
        self.peers.iter().chain(self.departed.iter())
    }

    /// Active members.
    pub(super) fn active(&self) -> Vec<PeerId> {
        self.peers.iter().filter(|(_, i)| i.is_active()).map(|(p, _)| *p).collect()
    }

    pub(super) fn departed(&self) -> impl Iterator<Item = &PeerId> {
        self.departed.keys()
    }

    /// Active members whose recent manifests include `m`.
    pub(super) fn supporters(&self, m: &AppliedManifest) -> Vec<PeerId> {
        self.peers.iter().filter(|(_, i)| i.is_active() && i.lists(m)).map(|(p, _)| *p).collect()
    }

    /// Recently departed peers that had applied `m`, by id.
    pub(super) fn departed_supporter_ids(&self, m: &AppliedManifest) -> Vec<PeerId> {
        self.departed.iter().filter(|(_, i)| i.lists(m)).map(|(p, _)| *p).collect()
    }

    /// Peers that left after the run's last round.
    pub(super) fn finished(&self) -> impl Iterator<Item = &PeerId> {
        self.finished.iter()
    }

    /// Everyone left after the run's last round and nobody active is left;
    /// and at least as many peers left that way as wait here (`me` counted):
    /// one peer saying "active" and then "I left after the last round" must
    /// not end a swarm of waiting peers (issue 13 item 1).
    pub(super) fn run_is_over(&self) -> bool {
        let waiting = 1 + self.peers.values().filter(|i| i.status == Status::Waiting).count();
        !self.finished.is_empty() && !self.peers.values().any(PeerInfo::is_active) && self.finished.len() >= waiting
    }
}
