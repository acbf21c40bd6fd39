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

#[derive(Clone, Debug, Default)]
pub(super) struct History {
    /// The last [`RECENT`] applied manifests, newest last.
    recent: VecDeque<AppliedManifest>,
    /// A longer record, by round.
    applied: BTreeMap<u64, Hash>,
    /// Contributors of the last manifest applied.
    last_contributors: BTreeSet<PeerId>,
}

impl History {
    /// Records an applied manifest.
    pub(super) fn record(&mut self, applied: AppliedManifest, contributors: BTreeSet<PeerId>) {
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
