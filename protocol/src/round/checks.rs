//! Peer review as one peer runs it: after a manifest is applied, the
//! contributions this peer must check (as the verifier the manifest drew,
//! or as a referee of a dispute), the blobs each check needs, the findings
//! it broadcasts and receives, disputes, and the exclusions they decide.

use super::reviews::{Check, Dispute, EARLY_FINDINGS, REVIEW_WINDOW, Reviewed};
use super::*;
use crate::message::Fault;
use crate::message::{CheckRecord, Evidence, Exclusion, Finding, SignedContribution, SignedFinding};
use crate::review;

/// Passing findings a manifest credits at most (the rest wait for the next).
pub(super) const MAX_CHECKS: usize = 64;

/// The inner states a check fetches: the start of each segment it
/// re-executes (the first is computed, not fetched) and the last state.
fn needed_states(leaves: &[Hash], replay: &[u32]) -> Vec<Hash> {
    let n = leaves.len();
    let mut need = vec![leaves[n - 1]];
    for i in replay.iter().map(|s| *s as usize) {
        if i > 0 && i < n - 1 && !need.contains(&leaves[i]) {
            need.push(leaves[i]);
        }
    }
    need
}

impl Peer {
    fn segments(&self) -> u32 {
        self.cfg.segments.max(1)
    }

    /// A manifest was applied: remember it, and start the checks this peer
    /// was drawn for.
    pub(super) fn review_applied(&mut self, round: u64, id: Hash, manifest: &Manifest) {
        let seed = review::draw_seed(round, &manifest.entries);
        let r = Reviewed { round, id, seed, state: manifest.state, entries: manifest.entries.clone() };
        let peers = r.peers();
        for e in &r.entries {
            if review::verifier(&seed, &e.peer, &peers, self.cfg.verify_rate) == Some(self.me) {
                let drawn = review::segment(&seed, &e.peer, self.segments());
                let last = self.segments() - 1;
                let replay = if drawn == last { vec![drawn] } else { vec![drawn, last] };
                self.start_check(&r, e.peer, replay);
            }
        }
        self.reviews.applied.push_back(r);
        while self.reviews.applied.len() > REVIEW_WINDOW {
            if let Some(old) = self.reviews.applied.pop_front() {
                self.reviews.checks.retain(|(m, _), _| *m != old.id);
                self.reviews.disputes.retain(|(m, _), _| *m != old.id);
            }
        }
        self.retry_early_findings();
    }

    /// Takes the findings that were waiting for a manifest or a dispute.
    fn retry_early_findings(&mut self) {
        let early: Vec<(u64, SignedFinding)> = self.reviews.early.drain(..).collect();
        for (round, f) in early {
            let _ = self.take_finding(round, f);
        }
    }

    fn keep_early(&mut self, round: u64, f: SignedFinding) {
        if self.reviews.early.len() == EARLY_FINDINGS {
            self.reviews.early.pop_front();
        }
        self.reviews.early.push_back((round, f));
    }

    fn start_check(&mut self, r: &Reviewed, contributor: PeerId, replay: Vec<u32>) {
        let Some(e) = r.entry(&contributor) else { return };
        let key = (r.id, contributor);
        if self.reviews.checks.contains_key(&key) {
            return;
        }
        let segment = review::segment(&r.seed, &contributor, self.segments());
        let check = Check {
            round: r.round,
            contribution: e.contribution,
            start: r.state,
            segment,
            replay,
            leaves: None,
            running: false,
        };
        self.reviews.checks.insert(key, check);
        self.stats.checks_started += 1;
        let chain = e.contribution.chain;
        match self.reviews.chains.iter().find(|(h, _)| *h == chain).map(|(_, l)| l.clone()) {
            Some(leaves) => self.on_chain(chain, leaves),
            None => self.fetch(chain, BlobKind::Chain, vec![contributor]),
        }
    }

    /// The node read a chain blob: the hashes it lists.
    pub(super) fn on_chain(&mut self, hash: Hash, leaves: Vec<Hash>) {
        let concat: Vec<u8> = leaves.iter().flat_map(|h| h.0).collect();
        let valid = Hash::of(&concat) == hash && leaves.len() == self.segments() as usize + 1;
        if valid && !self.reviews.chains.iter().any(|(h, _)| *h == hash) {
            if self.reviews.chains.len() == EARLY_FINDINGS {
                self.reviews.chains.pop_front();
            }
            self.reviews.chains.push_back((hash, leaves.clone()));
        }
        let waiting: Vec<(Hash, PeerId)> = self
            .reviews
            .checks
            .iter()
            .filter(|(_, c)| c.leaves.is_none() && c.contribution.chain == hash)
            .map(|(k, _)| *k)
            .collect();
        for key in waiting {
            if !valid {
                self.finish_check(key, Some(Fault::Malformed));
                continue;
            }
            let Some(c) = self.reviews.checks.get_mut(&key) else { continue };
            c.leaves = Some(leaves.clone());
            let need = needed_states(&leaves, &c.replay);
            for h in need {
                self.fetch(h, BlobKind::InnerState, vec![key.1]);
            }
        }
    }

    /// Hands every check whose blobs are all here to the node.
    pub(super) fn run_ready_checks(&mut self) {
        let ready: Vec<((Hash, PeerId), Check)> = self
            .reviews
            .checks
            .iter()
            .filter(|(_, c)| !c.running)
            .filter_map(|(k, c)| {
                let leaves = c.leaves.as_ref()?;
                let held = |h: &Hash| self.fetcher.has(h);
                let all =
                    needed_states(leaves, &c.replay).iter().all(held) && held(&c.start) && held(&c.contribution.hash);
                all.then(|| (*k, c.clone()))
            })
            .collect();
        for ((manifest, contributor), c) in ready {
            if let Some(x) = self.reviews.checks.get_mut(&(manifest, contributor)) {
                x.running = true;
            }
            self.out.push(OutEvent::Check(CheckJob {
                round: c.round,
                manifest,
                contributor,
                contribution: c.contribution,
                start: c.start,
                segment: c.segment,
                replay: c.replay,
                leaves: c.leaves.unwrap_or_default(),
            }));
        }
    }

    /// A blob checks need was not served by `asked`: the checks of those
    /// contributors end (another contributor that names the same blob, a
    /// copier say, is not blamed for it, nor spared). A contributor that
    /// answered it does not hold what it committed to is at fault; one that
    /// could not be reached (it may have crashed, and will serve from disk
    /// when back) is not judged: its check is dropped without a finding.
    pub(super) fn checks_lost(&mut self, hash: &Hash, asked: &[PeerId], disowned: &[PeerId]) {
        let lost: Vec<(Hash, PeerId)> = self
            .reviews
            .checks
            .iter()
            .filter(|((_, contributor), _)| asked.contains(contributor))
            .filter(|(_, c)| c.contribution.chain == *hash || c.leaves.as_ref().is_some_and(|l| l.contains(hash)))
            .map(|(k, _)| *k)
            .collect();
        for key in lost {
            if disowned.contains(&key.1) {
                self.finish_check(key, Some(Fault::Unavailable));
            } else {
                self.reviews.checks.remove(&key);
                self.stats.checks_unreachable += 1;
            }
        }
    }

    /// The node finished a check.
    pub(super) fn on_checked(&mut self, manifest: Hash, contributor: PeerId, fault: Option<Fault>) {
        self.finish_check((manifest, contributor), fault);
    }

    fn finish_check(&mut self, key: (Hash, PeerId), fault: Option<Fault>) {
        let Some(c) = self.reviews.checks.remove(&key) else { return };
        self.stats.checks_done += 1;
        if fault.is_some() {
            self.stats.faults_found += 1;
        }
        let finding = Finding { manifest: key.0, contributor: key.1, segment: c.segment, fault };
        if let Some(signature) = self.broadcast(c.round, &Message::Verdict(finding)) {
            let signed = SignedFinding { by: self.me, finding, signature };
            let _ = self.take_finding(c.round, signed);
        }
    }

    /// A finding (ours or received, signature checked): a verifier's opens a
    /// dispute when it accuses; a referee's counts towards a decision.
    pub(super) fn take_finding(&mut self, round: u64, f: SignedFinding) -> Result<(), DropReason> {
        let key = (f.finding.manifest, f.finding.contributor);
        let Some(r) = self.reviews.reviewed(&key.0).cloned() else {
            // Not applied here yet (or long ago): keep it while it may come.
            if round + REVIEW_WINDOW as u64 >= self.round {
                self.keep_early(round, f);
            }
            return Ok(());
        };
        if r.round != round || r.entry(&key.1).is_none() {
            return Err(DropReason::Invalid);
        }
        let peers = r.peers();
        let verifier = review::verifier(&r.seed, &key.1, &peers, self.cfg.verify_rate);
        if verifier == Some(f.by) {
            if f.finding.segment != review::segment(&r.seed, &key.1, self.segments()) {
                return Err(DropReason::Invalid);
            }
            self.stats.verdicts_seen += 1;
            if f.finding.fault.is_none() && self.reviews.passed.len() < MAX_CHECKS {
                self.reviews.passed.insert(key, CheckRecord { round, finding: f });
            }
            if f.finding.fault.is_some() && !self.reviews.disputes.contains_key(&key) {
                self.open_dispute(&r, f);
                self.retry_early_findings();
            }
            return Ok(());
        }
        let Some(d) = self.reviews.disputes.get_mut(&key) else {
            // A referee's finding before the accusation reached us.
            self.keep_early(round, f);
            return Ok(());
        };
        if !d.committee.contains(&f.by) || f.finding.segment != d.accusation.finding.segment {
            return Err(DropReason::Invalid);
        }
        d.findings.insert(f.by, f);
        let findings: Vec<SignedFinding> = d.findings.values().copied().collect();
        if let Some(guilty) = review::verdict(&d.accusation, &findings, d.committee.len()) {
            let (accusation, round) = (d.accusation, d.round);
            self.reviews.disputes.remove(&key);
            self.convict(guilty, round, Evidence::Dispute { accusation, findings });
        }
        Ok(())
    }

    fn open_dispute(&mut self, r: &Reviewed, accusation: SignedFinding) {
        let contributor = accusation.finding.contributor;
        let committee = review::referees(&r.seed, &contributor, &accusation.by, &r.peers(), self.cfg.referees as usize);
        self.stats.disputes += 1;
        let d = Dispute { round: r.round, accusation, committee: committee.clone(), findings: BTreeMap::new() };
        self.reviews.disputes.insert((r.id, contributor), d);
        if committee.contains(&self.me) {
            // A referee re-executes only what the accusation is about.
            let (drawn, last) = (accusation.finding.segment, self.segments() - 1);
            let replay = match accusation.finding.fault {
                Some(Fault::Segment) => vec![drawn],
                Some(Fault::LastSegment) => vec![last],
                Some(Fault::BadStart | Fault::RawMismatch | Fault::BlobMismatch) => Vec::new(),
                // Unserved or malformed blobs: everything the verifier needed.
                _ if drawn == last => vec![drawn],
                _ => vec![drawn, last],
            };
            self.start_check(r, contributor, replay);
        }
    }

    /// Two different signed announcements for one round.
    pub(super) fn equivocation(&mut self, peer: PeerId, round: u64, a: Announced, b: Announced) {
        self.stats.equivocations += 1;
        let signed =
            |x: Announced| Box::new(SignedContribution { contribution: x.contribution, signature: x.signature });
        self.convict(peer, round, Evidence::Equivocation { a: signed(a), b: signed(b) });
    }

    fn convict(&mut self, peer: PeerId, round: u64, evidence: Evidence) {
        if !self.reviews.excluded.contains(&peer) {
            self.reviews.pending.entry(peer).or_insert(Exclusion { peer, round, evidence });
        }
    }

    /// Whether an exclusion in a manifest holds: its evidence checks out as
    /// far as this peer can tell (a peer that did not apply the round of a
    /// dispute cannot check the committee and takes the signatures alone).
    pub(super) fn exclusion_holds(&self, x: &Exclusion) -> bool {
        match &x.evidence {
            Evidence::Equivocation { a, b } => {
                let signed = |s: &SignedContribution| {
                    Envelope::verify_detached(
                        self.cfg.run,
                        x.round,
                        x.peer,
                        &Message::Contribution(s.contribution),
                        &s.signature,
                    )
                };
                a.contribution != b.contribution && signed(a) && signed(b)
            }
            Evidence::Dispute { accusation, findings } => {
                let run = self.cfg.run;
                let signed = review::finding_is_signed(accusation, run, x.round)
                    && findings.iter().all(|f| review::finding_is_signed(f, run, x.round));
                let Some(r) = self.reviews.reviewed(&accusation.finding.manifest) else { return signed };
                let c = accusation.finding.contributor;
                let peers = r.peers();
                let committee = review::referees(&r.seed, &c, &accusation.by, &peers, self.cfg.referees as usize);
                signed
                    && review::verifier(&r.seed, &c, &peers, self.cfg.verify_rate) == Some(accusation.by)
                    && findings.iter().all(|f| committee.contains(&f.by) && f.finding.manifest == r.id)
                    && review::verdict(accusation, findings, committee.len()) == Some(x.peer)
            }
        }
    }

    /// Whether a passing finding a manifest credits holds: signed by its
    /// checker and, where this peer applied the manifest it is about, by
    /// that contribution's drawn verifier, for the drawn segment.
    pub(super) fn check_holds(&self, c: &CheckRecord) -> bool {
        let f = &c.finding;
        if !review::finding_is_signed(f, self.cfg.run, c.round) {
            return false;
        }
        let Some(r) = self.reviews.reviewed(&f.finding.manifest) else { return true };
        let contributor = f.finding.contributor;
        r.round == c.round
            && r.entry(&contributor).is_some()
            && review::verifier(&r.seed, &contributor, &r.peers(), self.cfg.verify_rate) == Some(f.by)
            && f.finding.segment == review::segment(&r.seed, &contributor, self.segments())
    }

    /// A manifest with exclusions was applied: from here on these peers'
    /// contributions and messages are refused.
    pub(super) fn apply_exclusions(&mut self, exclusions: &[Exclusion]) {
        for x in exclusions {
            self.reviews.pending.remove(&x.peer);
            if self.reviews.excluded.insert(x.peer) {
                self.stats.excluded += 1;
                self.out.push(OutEvent::Excluded { peer: x.peer, round: x.round });
            }
        }
    }

    /// Peers a manifest we synced to lists as excluded earlier in its
    /// history (we skipped the manifests that excluded them).
    pub(super) fn learn_excluded(&mut self, round: u64, peers: &[PeerId]) {
        for p in peers {
            self.reviews.pending.remove(p);
            if *p != self.me && self.reviews.excluded.insert(*p) {
                self.stats.excluded += 1;
                self.out.push(OutEvent::Excluded { peer: *p, round });
            }
        }
    }

    /// Exclusions to put in a manifest this peer signs.
    pub(super) fn exclusions_to_publish(&self) -> Vec<Exclusion> {
        self.reviews.pending.values().cloned().collect()
    }
}
