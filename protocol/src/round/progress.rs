//! A round from start to applied: training, a manifest arriving, collecting
//! its blobs, applying it; and syncing to a manifest's state.

use super::fetch::{Failed, GivenUp};
use super::*;

impl Peer {
    pub(super) fn accept_manifest(&mut self, round: u64, known: KnownManifest, now: Time) {
        // A manifest of our round that starts from another state belongs to
        // another history: never apply it to ours.
        if self.holds_state() && round == self.round && known.manifest.state != self.state {
            self.stats.foreign_manifests += 1;
            self.remember_foreign(round, known);
            return;
        }
        // Its aggregator published a manifest of this round that nobody
        // could collect: not again.
        if self.withheld.get(&round).is_some_and(|w| w.contains(&known.aggregator)) {
            return;
        }
        let holds = self.holds_state() && round <= self.round;
        let data = self.rounds.entry(round).or_default();
        if let Some(existing) = &data.manifest {
            if existing.id != known.id {
                self.stats.conflicting_manifests += 1;
                if data.alternatives.len() < 4 && !data.alternatives.iter().any(|a| a.id == known.id) {
                    data.alternatives.push(known.clone());
                }
                if holds {
                    self.remember_foreign(round, known);
                }
            }
            return;
        }
        data.manifest = Some(known);
        if let Phase::Training(r) | Phase::Gathering(r) = self.phase
            && r == round
        {
            self.deadline.observe(now.saturating_sub(self.round_started));
            self.collect(round);
        }
        // Manifests of later rounds wait in `rounds`; a peer that fell
        // behind notices in `poll` (most peers are past its round) and syncs.
    }

    /// Providers of a blob named by a manifest: `first`, then the others
    /// that may hold it (active peers, then peers that just left).
    fn providers(&self, first: &[PeerId]) -> Vec<PeerId> {
        let mut p = first.to_vec();
        p.extend(
            self.members.active().into_iter().chain(self.members.departed().copied()).filter(|x| !first.contains(x)),
        );
        p
    }

    pub(super) fn start_sync(&mut self, round: u64) {
        let Some(k) = self.manifest_of(round).cloned() else {
            return;
        };
        self.phase = Phase::Syncing(round);
        self.round = round;
        self.foreign = None;
        // Whatever we applied before belongs to a history we are leaving (or
        // is older than this sync): stop advertising it.
        self.history.forget_applied();
        self.rounds.retain(|r, _| *r >= round);
        if self.fetcher.has(&k.manifest.state) {
            self.out.push(OutEvent::LoadState { round, state: k.manifest.state });
        } else {
            let providers = self.providers(&[k.aggregator]);
            self.fetch(k.manifest.state, BlobKind::State, providers);
        }
    }

    pub(super) fn on_loaded(&mut self, round: u64, now: Time) {
        if self.phase != Phase::Syncing(round) {
            return;
        }
        let Some(k) = self.manifest_of(round).cloned() else {
            return;
        };
        // The exclusions of the manifests we skipped.
        self.learn_excluded(round, &k.manifest.excluded);
        self.state = k.manifest.state;
        self.round = round;
        self.round_started = now;
        self.synced_round = Some(round);
        self.collect(round);
    }

    pub(super) fn collect(&mut self, round: u64) {
        self.phase = Phase::Collecting(round);
        let Some(k) = self.manifest_of(round).cloned() else {
            return;
        };
        for e in &k.manifest.entries {
            if !self.fetcher.has(&e.hash()) {
                let providers = self.providers(&[e.peer, k.aggregator]);
                self.fetch(e.hash(), BlobKind::Contribution, providers);
            }
        }
    }

    /// Every blob of the manifest being collected is here: apply it.
    pub(super) fn apply_when_collected(&mut self, round: u64) {
        let Some(k) = self.manifest_of(round) else { return };
        if k.manifest.entries.iter().all(|e| self.fetcher.has(&e.hash())) {
            let (aggregator, manifest) = (k.aggregator, k.manifest.clone());
            self.phase = Phase::Applying(round);
            self.out.push(OutEvent::Apply { round, aggregator, manifest });
        }
    }

    pub(super) fn on_trained(&mut self, round: u64, mut contribution: Contribution) {
        self.fetcher.hold(contribution.hash);
        if self.phase != Phase::Training(round) {
            return; // the round closed without us
        }
        if round <= self.contributed {
            return; // announced from another history: a second one would equivocate
        }
        self.contributed = round;
        contribution.base_state = self.state;
        self.out.push(OutEvent::Signing { round });
        let Some(signature) = self.broadcast(round, &Message::Contribution(contribution)) else { return };
        self.rounds.entry(round).or_default().contributions.insert(self.me, Announced { contribution, signature });
        self.phase = Phase::Gathering(round);
        self.fetch_announced(round);
    }

    /// Fetches what others announced for `round` from our state.
    fn fetch_announced(&mut self, round: u64) {
        let pending: Vec<(PeerId, Hash)> = self
            .rounds
            .get(&round)
            .map(|d| {
                d.contributions
                    .iter()
                    .filter(|(p, a)| **p != self.me && a.contribution.base_state == self.state)
                    .map(|(p, a)| (*p, a.contribution.hash))
                    .collect()
            })
            .unwrap_or_default();
        for (p, h) in pending {
            self.fetch(h, BlobKind::Contribution, vec![p]);
        }
    }

    pub(super) fn on_applied(&mut self, round: u64, state: Hash, now: Time) {
        if self.phase != Phase::Applying(round) {
            return;
        }
        self.state = state;
        self.fetcher.hold(state);
        self.stats.rounds_applied += 1;
        if let Some(k) = self.manifest_of(round).cloned() {
            let contributors = k.manifest.entries.iter().map(|e| e.peer).collect();
            self.history.record(applied(round, k.id), contributors);
            self.apply_exclusions(&k.manifest.exclusions);
            self.review_applied(round, k.id, &k.manifest);
            self.ledger_applied(round, &k);
        }
        if round >= self.cfg.last_round {
            self.phase = Phase::Finishing(round);
            self.finish_at = now + 2 * self.cfg.hello_interval;
            self.hellos.next = now;
            return;
        }
        self.start_round(round + 1, now);
    }

    /// The ledger takes the applied manifest; its root is compared with ours.
    fn ledger_applied(&mut self, round: u64, k: &KnownManifest) {
        for c in &k.manifest.checks {
            self.reviews.passed.remove(&(c.finding.finding.manifest, c.finding.finding.contributor));
        }
        let oldest = self.reviews.applied.front().map_or(0, |r| r.round);
        self.reviews.passed.retain(|_, c| c.round >= oldest);
        let closed = self.ledger.apply(round, k.id, &k.manifest);
        self.out.push(OutEvent::Record { round, id: k.id, manifest: Box::new(k.manifest.clone()) });
        self.ledger.refresh_attestations();
        if !closed.is_empty() {
            self.out.push(OutEvent::EpochsClosed(closed));
        }
        if let Some(theirs) = k.manifest.ledger
            && let Some(ours) = self.ledger.epoch(theirs.epoch).filter(|e| !e.is_unknown())
            && (ours.root != theirs.root || ours.total != theirs.total)
        {
            self.stats.ledger_mismatches += 1;
            let (epoch, ours) = (theirs.epoch, ours.root);
            self.out.push(OutEvent::LedgerDiffers { epoch, ours, theirs: theirs.root, signer: k.aggregator });
        }
    }

    pub(super) fn start_round(&mut self, round: u64, now: Time) {
        self.round = round;
        self.round_started = now;
        self.rounds.retain(|r, _| *r >= round);
        self.screen_early_manifests(round);
        if let Some(k) = self.manifest_of(round).cloned() {
            if k.manifest.state == self.state {
                // We are late: the round closed without us. Apply it directly.
                self.collect(round);
                return;
            }
            self.stats.foreign_manifests += 1;
            self.remember_foreign(round, k);
            if let Some(d) = self.rounds.get_mut(&round) {
                d.manifest = None;
            }
        }
        self.phase = Phase::Training(round);
        if round <= self.sit_out || round <= self.contributed {
            return; // signed for already (in an earlier life, or from another history)
        }
        self.out.push(OutEvent::StartTraining { round, base_state: self.state });
        self.fetch_announced(round);
    }

    /// Manifests of `round` that came before we could tell who may sign it
    /// (the round before was not applied here yet): those whose signer may
    /// not are dropped, as on arrival; the first
    /// that may sign stays.
    fn screen_early_manifests(&mut self, round: u64) {
        let Some(d) = self.rounds.get_mut(&round) else { return };
        let known: Vec<KnownManifest> =
            d.manifest.take().into_iter().chain(std::mem::take(&mut d.alternatives)).collect();
        let (ok, unauthorized): (Vec<_>, Vec<_>) = known.into_iter().partition(|k| self.may_sign(&k.aggregator, round));
        self.stats.unauthorized_manifests += unauthorized.len() as u64;
        if let Some(d) = self.rounds.get_mut(&round) {
            let mut ok = ok.into_iter();
            d.manifest = ok.next();
            d.alternatives = ok.collect();
        }
    }

    pub(super) fn on_blob(&mut self, hash: Hash) {
        if !self.fetcher.ready(hash) {
            return; // a second answer (hedged requests): already handled
        }
        if let Phase::Syncing(round) = self.phase
            && self.manifest_of(round).is_some_and(|k| k.manifest.state == hash)
        {
            self.out.push(OutEvent::LoadState { round, state: hash });
        }
    }

    pub(super) fn on_request_failed(&mut self, hash: Hash, from: PeerId, why: FetchFailure) {
        let banned = why == FetchFailure::WrongBytes;
        if banned {
            self.stats.bad_providers += 1;
            // Bytes that do not hash to what was asked are a lie (an honest
            // peer serves what it stored, checked): the fetcher bans the
            // provider for good, and with that its claims never count again
            // (`withholds`) nor is it an aggregator candidate. With three
            // peers, its claim to be past our round alone closed the round,
            // and the two honest peers stalled for good (a data-plane test).
        }
        let (result, requests) = self.fetcher.failed(hash, from, banned, why == FetchFailure::NotFound, self.now);
        self.stats.requests += requests.len() as u64;
        self.out.extend(requests);
        if let Failed::GaveUp(g) = result {
            self.on_given_up(g);
        }
    }

    /// No provider served `hash`, however often asked.
    pub(super) fn on_given_up(&mut self, g: GivenUp) {
        let (hash, kind) = (g.hash, g.kind);
        // A manifest id from a hello that nobody serves (a lie, or its
        // holders left) is not asked for again (the fetcher remembers), and
        // is no reason to drop what we are doing. A blob the current step
        // needs is gone everywhere: wait for the next manifest and sync its
        // state instead. (A blob nothing needs any more, say an announcement
        // of a peer that died, is just dropped.)
        if matches!(kind, BlobKind::Chain | BlobKind::InnerState) {
            return self.checks_lost(&hash, &g.providers, &g.disowned);
        }
        if kind != BlobKind::Manifest && self.needed_now(&hash) {
            // Nobody but its aggregator applied the manifest: a peer that
            // trained this round goes back to gathering it. If others
            // applied it (the blob existed, and we lost it), or we synced to
            // this round (no contribution of our own, and maybe the last one
            // left), we wait for the next manifest and sync, as before.
            if let Phase::Collecting(r) = self.phase
                && self.contributed == r
                && self.synced_round != Some(r)
                && !self.applied_by_others(r)
            {
                return self.manifest_unservable(r, hash);
            }
            self.stats.resyncs += 1;
            self.phase = Phase::Waiting;
        }
    }

    /// Whether a peer other than its aggregator lists the manifest of
    /// `round` as applied.
    fn applied_by_others(&self, round: u64) -> bool {
        self.manifest_of(round).is_some_and(|k| {
            let m = applied(round, k.id);
            let by = self.members.supporters(&m);
            by.iter().chain(self.members.departed_supporter_ids(&m).iter()).any(|p| *p != k.aggregator)
        })
    }

    /// Records that `p` withheld in `round` (see [`Peer::withholds`]):
    /// not a candidate of that round, and not counted in the rules that
    /// close a round or choose a history for the standing window.
    fn withheld_in(&mut self, round: u64, p: PeerId) {
        let floor = self.round.saturating_sub(history::STANDING_ROUNDS);
        self.withheld.retain(|r, _| *r >= floor);
        self.withheld.entry(round).or_default().insert(p);
    }

    /// An entry of the manifest being collected is served by nobody (its
    /// contributor and the aggregator withhold it, or they are gone): the
    /// manifest cannot be applied by anyone who lacks it. We still hold the
    /// round's state, so we go back to gathering without that manifest and
    /// its aggregator: the next candidate publishes one of the entries it
    /// holds. (Going back to waiting, as before, let an aggregator that
    /// withheld its own contribution stall every other peer for good: they
    /// resynced to its next manifest, which named the next unserved one.)
    fn manifest_unservable(&mut self, round: u64, missing: Hash) {
        let Some(k) = self.rounds.get_mut(&round).and_then(|d| d.manifest.take()) else { return };
        self.stats.unservable_manifests += 1;
        self.withheld_in(round, k.aggregator);
        let data = self.rounds.entry(round).or_default();
        data.contributions.retain(|_, a| a.contribution.hash != missing);
        let state = self.state;
        data.alternatives.retain(|a| {
            a.aggregator != k.aggregator
                && a.manifest.state == state
                && a.manifest.entries.iter().all(|e| e.hash() != missing)
        });
        self.phase = Phase::Gathering(round);
        // The candidates' turns start again from now, one after the other
        // (the deadline has passed: all would publish at once).
        self.regathered = Some((round, self.now));
        // Another candidate's manifest of the round, if one came: take it.
        if let Some(alt) =
            self.rounds.get_mut(&round).and_then(|d| (!d.alternatives.is_empty()).then(|| d.alternatives.remove(0)))
        {
            self.rounds.entry(round).or_default().manifest = Some(alt);
            self.collect(round);
        }
    }

    /// Whether the phase waits for this blob: the state to sync to, or an
    /// entry of the manifest being collected.
    fn needed_now(&self, hash: &Hash) -> bool {
        match self.phase {
            Phase::Syncing(r) => self.manifest_of(r).is_some_and(|k| k.manifest.state == *hash),
            Phase::Collecting(r) => {
                self.manifest_of(r).is_some_and(|k| k.manifest.entries.iter().any(|e| e.hash() == *hash))
            }
            _ => false,
        }
    }
}
