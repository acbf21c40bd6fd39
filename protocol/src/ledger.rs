//! The ledger: who did what work, as a pure function of the applied
//! manifests. Per round a receipt per contributor (samples, verified, later
//! excluded); per epoch of `ledger.epoch_rounds` rounds, credits per peer by
//! the spec's rule, and a Merkle root of them that an EVM contract can check
//! (keccak256, OpenZeppelin-style sorted pairs). Every peer that applied the
//! same manifests computes the same roots; the root rides in the manifests
//! that follow, so a peer whose ledger differs finds out.
//!
//! Credit rule (per epoch e, rounds `e*E+1 ..= (e+1)*E`):
//! - a contributor earns `sample_credit` per sample of each of its entries in
//!   the epoch's manifests;
//! - a checker earns `check_permille / 1000` of the checked contribution's
//!   samples for each check a manifest of the epoch credits: a drawn
//!   verifier's passing finding (`Manifest::checks`), and in a decided
//!   dispute the verifier (if upheld) and each referee on the majority side;
//! - a peer excluded with evidence by any manifest up to the epoch's close
//!   (`settle_rounds` after its last round, so that reviews of its last
//!   rounds can land) earns nothing, and what it would have earned is
//!   recorded as its penalty.
//!
//! Each work item is credited once (a finding repeated by a later manifest
//! counts once). An epoch is computed only from a complete history: a peer
//! that synced past some of its rounds (or of the rounds before it that its
//! checks refer to) leaves it open and takes the root from the manifests.

use crate::id::{Hash, PeerId};
use crate::message::{Address, EthSignature, Evidence, Manifest};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

mod evm;
pub use evm::{keccak, leaf, merkle_proof, merkle_root, root_digest, verify_proof};

/// Manifests a check may refer back to (a finding lands a few rounds after
/// the contribution it is about).
const LOOKBACK: u64 = 8;

/// How credits are counted and when epochs close (`[ledger]` in a run spec).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSpec {
    /// Rounds per epoch.
    pub epoch_rounds: u64,
    /// Rounds after an epoch's last one before it closes (reviews land).
    pub settle_rounds: u64,
    /// Credits per training sample of an applied contribution.
    pub sample_credit: u64,
    /// A check earns this many thousandths of the checked contribution's
    /// samples (as sample credits).
    pub check_permille: u64,
}

impl Default for LedgerSpec {
    fn default() -> Self {
        LedgerSpec { epoch_rounds: 5, settle_rounds: 3, sample_credit: 1, check_permille: 100 }
    }
}

impl LedgerSpec {
    /// The epoch a round belongs to (round 0 has none).
    pub fn epoch_of(&self, round: u64) -> u64 {
        round.saturating_sub(1) / self.epoch_rounds.max(1)
    }

    /// First and last round of an epoch.
    pub fn rounds_of(&self, epoch: u64) -> (u64, u64) {
        let e = self.epoch_rounds.max(1);
        (epoch.saturating_mul(e).saturating_add(1), epoch.saturating_add(1).saturating_mul(e))
    }

    /// The round whose manifest closes an epoch.
    pub fn close_round(&self, epoch: u64) -> u64 {
        self.rounds_of(epoch).1.saturating_add(self.settle_rounds)
    }
}

/// One contributor's entry in one applied manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The manifest's round.
    pub round: u64,
    /// The contributor.
    pub peer: PeerId,
    /// Its samples.
    pub samples: u64,
    /// The verifier whose passing finding a later manifest carried.
    pub verified_by: Option<PeerId>,
    /// Excluded by a manifest (for this or another round's misbehaviour).
    pub excluded: bool,
}

/// A check credited to a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkKind {
    /// A drawn verifier's passing finding.
    Verifier,
    /// A verifier whose accusation the referees upheld.
    Accuser,
    /// A referee on the majority side of a dispute.
    Referee,
}

/// Checking work done, as credited by a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Work {
    /// The round of the manifest that credited it.
    pub round: u64,
    /// Who checked.
    pub peer: PeerId,
    /// As what.
    pub kind: WorkKind,
    /// The contributor checked and the round of its contribution.
    pub about: (PeerId, u64),
    /// The checked contribution's samples.
    pub samples: u64,
}

/// One peer's line in a closed epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credit {
    /// The peer.
    pub peer: PeerId,
    /// Where its credits are paid (the latest `payee` it announced).
    pub payee: Option<Address>,
    /// Samples of its applied contributions in the epoch.
    pub samples: u64,
    /// Checks credited to it in the epoch.
    pub checks: u64,
    /// Its credits (0 for an excluded peer).
    pub credits: u64,
    /// What an excluded peer would have earned.
    pub penalty: u64,
}

/// A closed epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Epoch {
    /// The epoch number.
    pub epoch: u64,
    /// Its rounds.
    pub first_round: u64,
    /// Its rounds.
    pub last_round: u64,
    /// Receipts of its rounds.
    pub receipts: Vec<Receipt>,
    /// Checks credited in its rounds.
    pub work: Vec<Work>,
    /// Per peer, ascending by peer id.
    pub credits: Vec<Credit>,
    /// Sum of credits.
    pub total: u64,
    /// Merkle root over the leaves of peers with credits (see [`leaf`]).
    pub root: [u8; 32],
    /// Ascending distinct payees of peers with credits: who must sign the root.
    pub committee: Vec<Address>,
    /// Signatures of the root naming committee members' payees, as seen in
    /// manifests (every candidate: a peer may name another's payee, so
    /// whoever posts them keeps those that recover to their payee).
    pub attestations: Vec<(Address, EthSignature)>,
}

impl Epoch {
    /// The leaves in tree order (peers with credits, ascending by id).
    pub fn leaves(&self) -> Vec<(PeerId, Address, u64)> {
        self.credits.iter().filter(|c| c.credits > 0).map(|c| (c.peer, c.payee.unwrap_or([0; 20]), c.credits)).collect()
    }

    /// The Merkle proof of `peer`'s leaf, if it has one.
    pub fn proof(&self, peer: &PeerId) -> Option<Vec<[u8; 32]>> {
        let leaves = self.leaves();
        let i = leaves.iter().position(|l| l.0 == *peer)?;
        let hashed: Vec<[u8; 32]> = leaves.iter().map(|l| leaf(&l.0, &l.1, l.2)).collect();
        Some(merkle_proof(&hashed, i))
    }

    /// What the committee signs for run `run`.
    pub fn digest(&self, run: &Hash) -> [u8; 32] {
        root_digest(run, self.epoch, &self.root, self.total, &self.committee)
    }
}

/// A recent manifest's round, id, review draw seed and (contributor,
/// samples) entries.
type RecentManifest = (u64, Hash, Hash, Vec<(PeerId, u64)>);

/// The ledger of one peer.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ledger {
    spec: LedgerSpec,
    /// The run's review rate and referee count: a check is credited only to
    /// the peer the draw names (so nobody mints credit with made-up keys).
    verify_rate: f64,
    referees: u32,
    /// The last manifest round applied.
    last: u64,
    /// Rounds from here on were all applied (1 for a peer that saw them all).
    complete_from: u64,
    receipts: Vec<Receipt>,
    work: Vec<Work>,
    /// Excluded peers and the round of the manifest that excluded them.
    excluded: BTreeMap<PeerId, u64>,
    payees: BTreeMap<PeerId, Address>,
    /// (round, manifest id, entries' samples) of recent manifests.
    recent: Vec<RecentManifest>,
    /// Checks credited: (manifest id checked, contributor, checker).
    credited: BTreeSet<(Hash, PeerId, PeerId)>,
    /// Attestations seen: (epoch, peer) -> (root, signature).
    attested: BTreeMap<(u64, PeerId), ([u8; 32], EthSignature)>,
    closed: BTreeMap<u64, Epoch>,
}

impl Ledger {
    /// An empty ledger for a run's ledger spec.
    pub fn new(spec: LedgerSpec) -> Ledger {
        Ledger { spec, complete_from: 1, verify_rate: 0.0, referees: 0, ..Ledger::default() }
    }

    /// The run's review settings (`verify.rate`, `verify.referees`): checks
    /// are credited only to the verifiers and referees they draw.
    pub fn with_review(mut self, rate: f64, referees: u32) -> Ledger {
        self.verify_rate = rate;
        self.referees = referees;
        self
    }

    /// The spec.
    pub fn spec(&self) -> &LedgerSpec {
        &self.spec
    }

    /// Closed epochs, in order.
    pub fn epochs(&self) -> impl Iterator<Item = &Epoch> {
        self.closed.values()
    }

    /// A closed epoch.
    pub fn epoch(&self, e: u64) -> Option<&Epoch> {
        self.closed.get(&e)
    }

    /// The last manifest round applied.
    pub fn last_round(&self) -> u64 {
        self.last
    }

    /// Applies the manifest of `round` (id: BLAKE3 of its envelope);
    /// returns the epochs it closes. Rounds must come in increasing order; a
    /// skipped round (the peer synced past it) makes the epochs it touches
    /// uncomputable here.
    ///
    /// Another manifest for a round already applied here (this peer left a
    /// losing history after two aggregators published for one round) undoes
    /// what the losing history added from that round on: the epochs it
    /// touches, and those whose checks refer back to it, become uncomputable
    /// here (before, the losing manifest stayed in and the epoch's root
    /// differed from everyone else's).
    pub fn apply(&mut self, round: u64, id: Hash, m: &Manifest) -> Vec<u64> {
        if round <= self.last && !self.replaces(round, &id) {
            return Vec::new();
        }
        if round != self.last + 1 {
            // A gap: epochs up to the one after the gap's lookback are lost.
            self.complete_from = round;
            self.receipts.clear();
            self.work.clear();
        }
        self.last = round;
        for e in &m.entries {
            if let Some(p) = e.contribution.payee {
                self.payees.insert(e.peer, p);
            }
            // Only for epochs that can still be closed or were just closed
            // (the epoch number is the sender's: bound what it can fill).
            let newest = self.closed.keys().next_back().copied().unwrap_or(0);
            if let Some(a) = e.contribution.attest.filter(|a| a.epoch <= newest.saturating_add(2)) {
                self.attested.insert((a.epoch, e.peer), (a.root, a.signature));
            }
            let samples = e.samples();
            self.receipts.push(Receipt { round, peer: e.peer, samples, verified_by: None, excluded: false });
        }
        for c in &m.checks {
            let f = &c.finding;
            if f.finding.fault.is_some() {
                continue;
            }
            let (contributor, manifest) = (f.finding.contributor, f.finding.manifest);
            if self.drawn_verifier(&manifest, &contributor) != Some(f.by) {
                continue;
            }
            if let Some(samples) = self.samples_of(&manifest, &contributor) {
                let about_round = c.round;
                if self.credited.insert((manifest, contributor, f.by)) {
                    self.work.push(Work {
                        round,
                        peer: f.by,
                        kind: WorkKind::Verifier,
                        about: (contributor, about_round),
                        samples,
                    });
                    if let Some(r) = self.receipts.iter_mut().find(|r| r.round == about_round && r.peer == contributor)
                    {
                        r.verified_by = Some(f.by);
                    }
                }
            }
        }
        for x in &m.exclusions {
            self.excluded.entry(x.peer).or_insert(round);
            if let Evidence::Dispute { accusation, findings } = &x.evidence {
                let (contributor, manifest) = (accusation.finding.contributor, accusation.finding.manifest);
                let Some(samples) = self.samples_of(&manifest, &contributor) else { continue };
                if self.drawn_verifier(&manifest, &contributor) != Some(accusation.by) {
                    continue;
                }
                let committee = self.committee_of(&manifest, &contributor, &accusation.by);
                let upheld = x.peer == contributor;
                let mut credit = |peer: PeerId, kind: WorkKind| {
                    if self.credited.insert((manifest, contributor, peer)) {
                        self.work.push(Work { round, peer, kind, about: (contributor, x.round), samples });
                    }
                };
                if upheld {
                    credit(accusation.by, WorkKind::Accuser);
                }
                for f in findings.iter().filter(|f| f.finding.fault.is_some() == upheld && committee.contains(&f.by)) {
                    credit(f.by, WorkKind::Referee);
                }
            }
        }
        for r in self.receipts.iter_mut() {
            r.excluded = self.excluded.contains_key(&r.peer);
        }
        let seed = crate::review::draw_seed(round, &m.entries);
        self.recent.push((round, id, seed, m.entries.iter().map(|e| (e.peer, e.samples())).collect()));
        self.recent.retain(|(r, _, _, _)| *r + LOOKBACK > round);
        self.credited.retain(|(h, _, _)| self.recent.iter().any(|(_, id, _, _)| id == h));
        self.close_due(round)
    }

    /// Whether `id` is another manifest than the one applied here for
    /// `round`; if so, forgets everything from `round` on, and the next
    /// apply starts after a gap.
    fn replaces(&mut self, round: u64, id: &Hash) -> bool {
        let ours = self.recent.iter().find(|(r, _, _, _)| *r == round).map(|(_, h, _, _)| *h);
        if ours.is_none_or(|h| h == *id) || round == 0 {
            return false;
        }
        self.recent.retain(|(r, _, _, _)| *r < round);
        self.credited.retain(|(h, _, _)| self.recent.iter().any(|(_, id, _, _)| id == h));
        self.excluded.retain(|_, r| *r < round);
        // Epochs that closed at `round` or later may hold what the losing
        // history added (an exclusion counts until its epoch closes).
        let spec = self.spec.clone();
        self.closed.retain(|e, _| spec.close_round(*e) < round);
        // A gap right before `round`: every epoch from `round`'s on is
        // uncomputable here (its root comes from the manifests).
        self.last = round - 1;
        self.complete_from = round.saturating_add(1);
        self.receipts.clear();
        self.work.clear();
        true
    }

    fn samples_of(&self, manifest: &Hash, contributor: &PeerId) -> Option<u64> {
        let (_, _, _, entries) = self.recent.iter().find(|(_, id, _, _)| id == manifest)?;
        entries.iter().find(|(p, _)| p == contributor).map(|(_, s)| *s)
    }

    fn drawn_verifier(&self, manifest: &Hash, contributor: &PeerId) -> Option<PeerId> {
        let (_, _, seed, entries) = self.recent.iter().find(|(_, id, _, _)| id == manifest)?;
        let peers: Vec<PeerId> = entries.iter().map(|(p, _)| *p).collect();
        crate::review::verifier(seed, contributor, &peers, self.verify_rate)
    }

    fn committee_of(&self, manifest: &Hash, contributor: &PeerId, accuser: &PeerId) -> Vec<PeerId> {
        let Some((_, _, seed, entries)) = self.recent.iter().find(|(_, id, _, _)| id == manifest) else {
            return Vec::new();
        };
        let peers: Vec<PeerId> = entries.iter().map(|(p, _)| *p).collect();
        crate::review::referees(seed, contributor, accuser, &peers, self.referees as usize)
    }

    fn close_due(&mut self, round: u64) -> Vec<u64> {
        let mut out = Vec::new();
        loop {
            let next = self.closed.keys().next_back().map_or(0, |e| e + 1);
            let (first, last) = self.spec.rounds_of(next);
            if round < self.spec.close_round(next) {
                break;
            }
            // Checks refer back up to LOOKBACK rounds: those must be here too.
            let complete =
                first >= self.complete_from.saturating_add(if self.complete_from > 1 { LOOKBACK } else { 0 });
            if complete {
                let epoch = self.compute(next, first, last);
                self.closed.insert(next, epoch);
                out.push(next);
            } else {
                // Not computable here: skip it (its root comes from others).
                self.closed.insert(next, Epoch::unknown(next, first, last));
            }
            self.receipts.retain(|r| r.round > last);
            self.work.retain(|w| w.round > last);
        }
        out
    }

    fn compute(&self, epoch: u64, first: u64, last: u64) -> Epoch {
        let in_epoch = |r: u64| (first..=last).contains(&r);
        let receipts: Vec<Receipt> = self.receipts.iter().filter(|r| in_epoch(r.round)).cloned().collect();
        let work: Vec<Work> = self.work.iter().filter(|w| in_epoch(w.round)).cloned().collect();
        let mut lines: BTreeMap<PeerId, Credit> = BTreeMap::new();
        for r in &receipts {
            let c = lines.entry(r.peer).or_insert_with(|| self.blank(r.peer));
            c.samples = c.samples.saturating_add(r.samples);
            c.credits = c.credits.saturating_add(r.samples.saturating_mul(self.spec.sample_credit));
        }
        for w in &work {
            let c = lines.entry(w.peer).or_insert_with(|| self.blank(w.peer));
            c.checks += 1;
            let earned =
                w.samples.saturating_mul(self.spec.sample_credit).saturating_mul(self.spec.check_permille) / 1000;
            c.credits = c.credits.saturating_add(earned);
        }
        for c in lines.values_mut() {
            if self.excluded.contains_key(&c.peer) {
                c.penalty = c.credits;
                c.credits = 0;
            }
        }
        let credits: Vec<Credit> = lines.into_values().collect();
        let total = credits.iter().map(|c| c.credits).fold(0u64, u64::saturating_add);
        let hashed: Vec<[u8; 32]> = credits
            .iter()
            .filter(|c| c.credits > 0)
            .map(|c| leaf(&c.peer, &c.payee.unwrap_or([0; 20]), c.credits))
            .collect();
        let committee: BTreeSet<Address> =
            credits.iter().filter(|c| c.credits > 0).filter_map(|c| c.payee).filter(|a| *a != [0; 20]).collect();
        let mut e = Epoch {
            epoch,
            first_round: first,
            last_round: last,
            receipts,
            work,
            credits,
            total,
            root: merkle_root(&hashed),
            committee: committee.into_iter().collect(),
            attestations: Vec::new(),
        };
        self.fill_attestations(&mut e);
        e
    }

    fn blank(&self, p: PeerId) -> Credit {
        Credit { peer: p, payee: self.payees.get(&p).copied(), samples: 0, checks: 0, credits: 0, penalty: 0 }
    }

    fn fill_attestations(&self, e: &mut Epoch) {
        for ((_, peer), (root, sig)) in self.attested.range((e.epoch, PeerId([0; 32]))..=(e.epoch, PeerId([255; 32]))) {
            if *root != e.root {
                continue;
            }
            if let Some(payee) = self.payees.get(peer).filter(|a| e.committee.contains(a))
                && !e.attestations.contains(&(*payee, *sig))
                && e.attestations.len() < 4 * e.committee.len()
            {
                e.attestations.push((*payee, *sig));
            }
        }
    }

    /// Attestations arrive in manifests after their epoch closed: folds the
    /// ones seen so far into the closed epochs.
    pub fn refresh_attestations(&mut self) {
        // Signatures come within a few rounds of an epoch's close: only the
        // last 16 epochs are still looked at.
        let newest = self.closed.keys().next_back().copied().unwrap_or(0);
        let epochs: Vec<u64> = self.closed.range(newest.saturating_sub(16)..).map(|(e, _)| *e).collect();
        for e in epochs {
            let mut epoch = self.closed.remove(&e).expect("listed");
            if !epoch.is_unknown() {
                self.fill_attestations(&mut epoch);
            }
            self.closed.insert(e, epoch);
        }
        let oldest = self.closed.keys().next_back().map_or(0, |e| e.saturating_sub(16));
        self.attested.retain(|(e, _), _| *e >= oldest);
    }
}

impl Epoch {
    fn unknown(epoch: u64, first_round: u64, last_round: u64) -> Epoch {
        Epoch {
            epoch,
            first_round,
            last_round,
            receipts: Vec::new(),
            work: Vec::new(),
            credits: Vec::new(),
            total: 0,
            root: [0; 32],
            committee: Vec::new(),
            attestations: Vec::new(),
        }
    }

    /// Whether this peer could not compute the epoch (it synced past some
    /// of its rounds).
    pub fn is_unknown(&self) -> bool {
        self.root == [0; 32]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::message::{CheckRecord, Contribution, Manifest, ManifestEntry, Signature};

    /// Peer `i`'s entry of `samples` samples (made-up hashes and signature).
    fn entry(i: u8, samples: u64) -> ManifestEntry {
        let h = Hash::of(&[i]);
        let c = Contribution {
            hash: h,
            samples,
            base_state: h,
            raw: h,
            residual: 0.0,
            chain: h,
            payee: None,
            attest: None,
        };
        ManifestEntry { peer: PeerId([i; 32]), contribution: c, signature: Signature([i; 64]) }
    }

    fn manifest(entries: Vec<ManifestEntry>, checks: Vec<CheckRecord>) -> Manifest {
        Manifest { state: Hash::of(b"s"), entries, exclusions: vec![], excluded: vec![], checks, ledger: None }
    }

    #[test]
    fn checks_are_credited_only_to_the_drawn_verifier() {
        use crate::message::{Finding, SignedFinding};
        let peer = |i: u8| PeerId([i; 32]);
        let entry = |i: u8| entry(i, 100);
        let spec = LedgerSpec { epoch_rounds: 2, settle_rounds: 0, ..Default::default() };
        let mut l = Ledger::new(spec).with_review(1.0, 3);
        let m1 = manifest(vec![entry(1), entry(2), entry(3)], vec![]);
        let id1 = Hash::of(b"m1");
        l.apply(1, id1, &m1);
        let seed = crate::review::draw_seed(1, &m1.entries);
        let peers = [peer(1), peer(2), peer(3)];
        let drawn = crate::review::verifier(&seed, &peer(1), &peers, 1.0).unwrap();
        let check = |by: PeerId| CheckRecord {
            round: 1,
            finding: SignedFinding {
                by,
                finding: Finding { manifest: id1, contributor: peer(1), segment: 0, fault: None },
                signature: Signature([0; 64]),
            },
        };
        // A made-up key, a contributor that was not drawn, and the drawn verifier.
        let other = peers.iter().copied().find(|p| *p != drawn && *p != peer(1)).unwrap();
        let m2 = manifest(vec![entry(1), entry(2), entry(3)], vec![check(peer(9)), check(other), check(drawn)]);
        let closed = l.apply(2, Hash::of(b"m2"), &m2);
        assert_eq!(closed, vec![0]);
        let e = l.epoch(0).unwrap();
        assert_eq!(e.work.iter().map(|w| w.peer).collect::<Vec<_>>(), vec![drawn]);
        let credits = |p: PeerId| e.credits.iter().find(|c| c.peer == p).map_or(0, |c| c.credits);
        assert_eq!(credits(drawn), 200 + 10, "two rounds of 100 samples and one check of a tenth of 100");
        assert_eq!(credits(peer(9)), 0);
    }

    #[test]
    fn a_manifest_replacing_one_applied_here_leaves_its_epochs_unknown() {
        let manifest = |entries: Vec<ManifestEntry>| manifest(entries, vec![]);
        let spec = LedgerSpec { epoch_rounds: 2, settle_rounds: 1, ..Default::default() };
        let id = |r: u64, side: &str| Hash::of(format!("{side} {r}").as_bytes());
        // Rounds 1-4 on one history; round 3 by another aggregator on the
        // losing side (a peer that had 2 entries where the others had 3).
        let (mut ours, mut theirs) = (Ledger::new(spec.clone()), Ledger::new(spec));
        for r in 1..=2 {
            let m = manifest(vec![entry(1, 10), entry(2, 10), entry(3, 10)]);
            ours.apply(r, id(r, "both"), &m);
            theirs.apply(r, id(r, "both"), &m);
        }
        ours.apply(3, id(3, "losing"), &manifest(vec![entry(1, 10), entry(2, 10)]));
        assert!(ours.epoch(0).is_some_and(|e| !e.is_unknown()), "epoch 0 closed at round 3");
        // Leaving the losing history: round 3 again, from the winning side.
        for r in 3..=6 {
            let m = manifest(vec![entry(1, 10), entry(2, 10), entry(3, 10)]);
            ours.apply(r, id(r, "winning"), &m);
            theirs.apply(r, id(r, "winning"), &m);
        }
        assert!(ours.epoch(0).unwrap().is_unknown(), "closed with the losing manifest's round: reopened, unknown");
        assert!(ours.epoch(1).unwrap().is_unknown(), "round 3's epoch");
        assert!(!theirs.epoch(1).unwrap().is_unknown());
        assert_eq!(ours.last_round(), 6);
        // The same manifest again changes nothing.
        assert!(ours.apply(6, id(6, "winning"), &manifest(vec![])).is_empty());
    }
}
