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
    /// here, with their last round: those of the last [`STANDING_ROUNDS`]
    /// have standing, all of them vouch for a history.
    contributed: BTreeMap<PeerId, u64>,
    /// The newest round applied here (kept when a sync forgets the rest).
    newest: u64,
}

impl History {
    /// Records an applied manifest.
    pub(super) fn record(&mut self, applied: AppliedManifest, contributors: BTreeSet<PeerId>) {
        self.newest = self.newest.max(applied.round);
        for p in &contributors {
            let last = self.contributed.entry(*p).or_default();
            *last = (*last).max(applied.round);
        }
        let newest = self.newest;
        self.contributed.retain(|_, r| r.saturating_add(LONG as u64) > newest);
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
        self.contributed.is_empty() || self.contributed.get(p).is_some_and(|r| self.recent_enough(*r))
    }

    /// Whether `p` counts in the rules that choose between histories (the
    /// minority fork, a healed partition, a resync): it contributed to one
    /// of the last [`LONG`] rounds applied here, or nobody's standing is
    /// known and everyone counts. Longer than standing, so that the peers
    /// of the other side of a partition that lasted more than
    /// [`STANDING_ROUNDS`] rounds still count; fresh keys never do.
    pub(super) fn vouches(&self, p: &PeerId) -> bool {
        self.contributed.is_empty() || self.contributed.contains_key(p)
    }

    fn recent_enough(&self, round: u64) -> bool {
        round.saturating_add(STANDING_ROUNDS) > self.newest
    }

    /// The peers with standing.
    pub(super) fn standing(&self) -> impl Iterator<Item = &PeerId> {
        self.contributed.iter().filter(|(_, r)| self.recent_enough(**r)).map(|(p, _)| p)
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
