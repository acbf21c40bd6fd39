//! The review state of one peer: the applied manifests open to review,
//! its checks and disputes, exclusions decided and pending, and findings
//! or chains that arrived early. What the peer does with them is in
//! `checks.rs`.

use crate::id::{Hash, PeerId};
use crate::message::{CheckRecord, Contribution, Exclusion, ManifestEntry, SignedFinding};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Applied manifests open to review.
pub(super) const REVIEW_WINDOW: usize = 4;
/// Findings kept until the manifest (or the dispute) they are about is
/// known here: a finding can overtake the manifest it refers to.
pub(super) const EARLY_FINDINGS: usize = 256;

/// An applied manifest, as review needs it.
#[derive(Clone, Debug)]
pub(super) struct Reviewed {
    pub(super) round: u64,
    pub(super) id: Hash,
    /// The randomness of its review draws ([`crate::review::draw_seed`]).
    pub(super) seed: Hash,
    pub(super) state: Hash,
    pub(super) entries: Vec<ManifestEntry>,
}

impl Reviewed {
    pub(super) fn peers(&self) -> Vec<PeerId> {
        self.entries.iter().map(|e| e.peer).collect()
    }

    pub(super) fn entry(&self, p: &PeerId) -> Option<&ManifestEntry> {
        self.entries.iter().find(|e| e.peer == *p)
    }
}

/// One check this peer runs.
#[derive(Clone, Debug)]
pub(super) struct Check {
    pub(super) round: u64,
    pub(super) contribution: Contribution,
    pub(super) start: Hash,
    pub(super) segment: u32,
    /// The segments to re-execute.
    pub(super) replay: Vec<u32>,
    /// The chain, once fetched and parsed.
    pub(super) leaves: Option<Vec<Hash>>,
    /// Handed to the node.
    pub(super) running: bool,
}

/// A verifier's accusation and the referees' findings so far.
#[derive(Clone, Debug)]
pub(super) struct Dispute {
    pub(super) round: u64,
    pub(super) accusation: SignedFinding,
    pub(super) committee: Vec<PeerId>,
    pub(super) findings: BTreeMap<PeerId, SignedFinding>,
}

/// The review state of one peer.
#[derive(Clone, Debug, Default)]
pub(super) struct Reviews {
    pub(super) applied: VecDeque<Reviewed>,
    /// By (manifest id, contributor).
    pub(super) checks: BTreeMap<(Hash, PeerId), Check>,
    pub(super) disputes: BTreeMap<(Hash, PeerId), Dispute>,
    pub(super) excluded: BTreeSet<PeerId>,
    /// Peers this peer caught signing a manifest they may not sign: their
    /// messages are dropped here (a local ban: not evidence for others).
    pub(super) banned: BTreeSet<PeerId>,
    /// Decided, not yet in an applied manifest.
    pub(super) pending: BTreeMap<PeerId, Exclusion>,
    /// Findings that arrived before what they are about.
    pub(super) early: VecDeque<(u64, SignedFinding)>,
    /// Passing findings of drawn verifiers, for the next manifest this peer
    /// signs (the ledger credits them); by (manifest id, contributor).
    pub(super) passed: BTreeMap<(Hash, PeerId), CheckRecord>,
    /// Chains read so far (two checks may name one chain: a copier's).
    pub(super) chains: VecDeque<(Hash, Vec<Hash>)>,
}

impl Reviews {
    pub(super) fn reviewed(&self, id: &Hash) -> Option<&Reviewed> {
        self.applied.iter().find(|r| r.id == *id)
    }

    /// The contributors of the manifest of `round` applied here, while it
    /// is in the review window.
    pub(super) fn contributors_of(&self, round: u64) -> Option<Vec<PeerId>> {
        self.applied_of(round).map(|r| r.peers())
    }

    /// The manifest of `round` applied here, while in the review window.
    pub(super) fn applied_of(&self, round: u64) -> Option<&Reviewed> {
        self.applied.iter().find(|r| r.round == round)
    }
}
