//! The manifests this peer applied: the last few it lists in its hellos, a
//! longer record to recognise another history in others' hellos, and the
//! contributors of the last one (expected again, and the next aggregator
//! candidates).

use crate::id::{Hash, PeerId};
use crate::message::AppliedManifest;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Applied manifests a peer lists in its hellos.
pub const RECENT: usize = 4;
/// Applied manifests a peer remembers to recognise another history.
const LONG: usize = 64;
/// A peer has standing while it contributed to one of the manifests of the
/// last this many rounds applied here.
pub const STANDING_ROUNDS: u64 = 8;

#[derive(Clone, Debug, Default)]
pub(super) struct History {
    /// The last [`RECENT`] applied manifests, newest last.
    recent: VecDeque<AppliedManifest>,
    /// A longer record, by round.
    applied: BTreeMap<u64, Hash>,
    /// Contributors of the last manifest applied.
    last_contributors: BTreeSet<PeerId>,
    /// Contributors of the manifests of the last [`LONG`] rounds applied
    /// here, with their first and last round: those of the last
    /// [`STANDING_ROUNDS`] have standing, all of them vouch for a history.
    contributed: BTreeMap<PeerId, Span>,
    /// The round of the last manifest applied.
    newest: u64,
    /// Contributors an earlier life of this peer recorded (the node keeps
    /// them in its run dir), with their first and last round: they vouch
    /// too, until they fall out of the [`LONG`] window.
    earlier: BTreeMap<PeerId, Span>,
    /// Peers the user named (`swarm join --trust`): they vouch whatever
    /// this peer saw, and they are the joiner's trust anchor (see
    /// [`History::anchored`]).
    trusted: BTreeSet<PeerId>,
}

/// The first and last round a peer contributed to, among those applied
/// here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub first: u64,
    pub last: u64,
}

impl History {
    /// Records an applied manifest.
    pub(super) fn record(&mut self, applied: AppliedManifest, contributors: BTreeSet<PeerId>) {
        let round = applied.round;
        self.newest = round;
        for p in &contributors {
            let s = self.contributed.entry(*p).or_insert(Span { first: round, last: round });
            (s.first, s.last) = (s.first.min(round), s.last.max(round));
        }
        let kept = |r: u64| r.saturating_add(LONG as u64) > round;
        self.contributed.retain(|_, s| kept(s.last));
        self.earlier.retain(|_, s| kept(s.last));
        self.last_contributors = contributors;
        self.recent.retain(|m| m.round != applied.round);
        self.applied.insert(applied.round, applied.id);
        while self.applied.len() > LONG {
            self.applied.pop_first();
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(applied);
    }

    /// What our hellos list.
    pub(super) fn recent(&self) -> Vec<AppliedManifest> {
        self.recent.iter().copied().collect()
    }

    pub(super) fn is_recent(&self, m: &AppliedManifest) -> bool {
        self.recent.contains(m)
    }

    /// The round of the last manifest applied.
    pub(super) fn last_round(&self) -> Option<u64> {
        self.recent.back().map(|m| m.round)
    }

    pub(super) fn has_recent(&self) -> bool {
        !self.recent.is_empty()
    }

    /// The id of the manifest we applied for `round`, among the recent ones.
    pub(super) fn recent_of(&self, round: u64) -> Option<AppliedManifest> {
        self.recent.iter().find(|m| m.round == round).copied()
    }

    /// Whether `m` is another manifest than ours for a round we applied.
    pub(super) fn contradicts(&self, m: &AppliedManifest) -> bool {
        self.applied.get(&m.round).is_some_and(|mine| *mine != m.id)
    }

    pub(super) fn lists_id(&self, id: &Hash) -> bool {
        self.recent.iter().any(|m| m.id == *id)
    }

    /// Whether any peer's standing is known here (this peer applied a
    /// round).
    pub(super) fn has_standing(&self) -> bool {
        !self.contributed.is_empty()
    }

    /// Whether `p` counts in the rules that count heads of a round: it has
    /// standing, or nobody has yet (round 1, a joiner), and everyone counts.
    pub(super) fn counts(&self, p: &PeerId) -> bool {
        self.contributed.is_empty() || self.contributed.get(p).is_some_and(|s| self.recent_enough(s.last))
    }

    /// Whether `p` counts in the rules that choose between histories (the
    /// minority fork, a healed partition, a resync): it contributed to one
    /// of the last [`LONG`] rounds applied here, or nobody's standing is
    /// known and everyone counts. Longer than standing, so that the peers
    /// of the other side of a partition that lasted more than
    /// [`STANDING_ROUNDS`] rounds still count; fresh keys never do.
    pub(super) fn vouches(&self, p: &PeerId) -> bool {
        !self.knows_vouchers()
            || self.contributed.contains_key(p)
            || self.earlier.contains_key(p)
            || self.trusted.contains(p)
    }

    /// Whether this peer knows who vouches: it applied a round, in this
    /// life or an earlier one, or the user named peers to trust.
    pub(super) fn knows_vouchers(&self) -> bool {
        self.knows_contributors() || !self.trusted.is_empty()
    }

    /// Peers the user named to trust: they vouch for a history from the
    /// start (a joiner knows nobody else), and they get in past the member
    /// cap like peers with standing.
    pub(super) fn trust(&mut self, peers: impl IntoIterator<Item = PeerId>) {
        self.trusted.extend(peers);
    }

    /// Whether this peer knows contributors of its own: it applied a
    /// round, in this life or an earlier one.
    pub(super) fn knows_contributors(&self) -> bool {
        !self.contributed.is_empty() || !self.earlier.is_empty()
    }

    /// Whether the user named peers to trust: then only vouching peers
    /// ever confirm a manifest to sync to, even when none of them is
    /// around (the peer waits for one rather than count heads).
    pub(super) fn anchored(&self) -> bool {
        !self.trusted.is_empty()
    }

    pub(super) fn is_trusted(&self, p: &PeerId) -> bool {
        self.trusted.contains(p)
    }

    /// Whether a manifest id `p` lists is fetched as a vouched one (ahead
    /// of ids only others list, of any active peer): `p` has standing or
    /// is trusted; before anyone's standing is known, everyone counts
    /// unless the user named peers to trust.
    pub(super) fn lists_vouched(&self, p: &PeerId) -> bool {
        self.trusted.contains(p) || if self.contributed.is_empty() { self.trusted.is_empty() } else { self.counts(p) }
    }

    /// Contributors (with their first and last round) that an earlier
    /// life of this peer recorded: a restarted peer does not start as blind
    /// as a joiner. Only the last [`LONG`] rounds of the record are kept.
    pub(super) fn remember(&mut self, record: impl IntoIterator<Item = (PeerId, Span)>) {
        for (p, r) in record {
            let s = self.earlier.entry(p).or_insert(r);
            (s.first, s.last) = (s.first.min(r.first), s.last.max(r.last));
        }
        let newest = self.earlier.values().map(|s| s.last).max().unwrap_or(0).max(self.newest);
        self.earlier.retain(|_, s| s.last.saturating_add(LONG as u64) > newest);
    }

    /// The first round `p` contributed to here, in this life or an
    /// earlier one (which came first).
    pub(super) fn first_of(&self, p: &PeerId) -> Option<u64> {
        let (now, before) = (self.contributed.get(p), self.earlier.get(p));
        now.into_iter().chain(before).map(|s| s.first).min()
    }

    /// The last round `p` contributed to here, in this life or an earlier
    /// one.
    pub(super) fn last_of(&self, p: &PeerId) -> Option<u64> {
        let (now, before) = (self.contributed.get(p), self.earlier.get(p));
        now.into_iter().chain(before).map(|s| s.last).max()
    }

    /// The round after the last one that any of `them` (peers on another
    /// history) contributed to here: where that history and ours parted,
    /// as far as this peer can tell (`u64::MAX` if it cannot).
    pub(super) fn parted_after(&self, them: &[PeerId]) -> u64 {
        if !self.knows_vouchers() {
            return u64::MAX;
        }
        them.iter().filter_map(|p| self.last_of(p)).max().map_or(u64::MAX, |r| r.saturating_add(1))
    }

    /// Whether `p` counts when two histories that parted at `parted` are
    /// compared: it contributed here before then (or nobody's standing is
    /// known). Peers that first contributed after the parting are counted
    /// by neither side (the other side does not know them, just as we do
    /// not know its newcomers), so both sides count the same peers and
    /// reach the same verdict.
    pub(super) fn before_parting(&self, p: &PeerId, parted: u64) -> bool {
        if !self.knows_vouchers() {
            return true;
        }
        self.first_of(p).is_some_and(|f| f < parted)
    }

    fn recent_enough(&self, round: u64) -> bool {
        round.saturating_add(STANDING_ROUNDS) > self.newest
    }

    /// The peers with standing.
    pub(super) fn standing(&self) -> impl Iterator<Item = &PeerId> {
        self.contributed.iter().filter(|(_, s)| self.recent_enough(s.last)).map(|(p, _)| p)
    }

    pub(super) fn last_contributors(&self) -> &BTreeSet<PeerId> {
        &self.last_contributors
    }

    /// Forgets the long record (we leave this history).
    pub(super) fn forget_record(&mut self) {
        self.applied.clear();
    }

    /// Forgets what we applied (a sync starts a history anew); the last
    /// contributors stay expected.
    pub(super) fn forget_applied(&mut self) {
        self.recent.clear();
        self.applied.clear();
    }
}
