//! Control messages in: checks (size, signature and signer, run, round,
//! content) before they change anything, then what each message changes.

use super::*;

impl Peer {
    /// Judges one envelope and, if it passes, takes it in. Every drop is
    /// counted in [`Stats::dropped`].
    pub(super) fn on_gossip(&mut self, bytes: &[u8], source: Option<PeerId>, now: Time) -> Verdict {
        let opened = match Envelope::open(bytes) {
            Ok(o) => o,
            Err(why) => return self.drop_msg(why),
        };
        // The envelope's signer must be the peer that published it: one
        // connection cannot speak for other identities.
        if source.is_some_and(|s| s != opened.sender) {
            return self.drop_msg(DropReason::SignerMismatch);
        }
        if opened.run != self.cfg.run {
            return self.drop_msg(DropReason::WrongRun);
        }
        if opened.round > self.cfg.run_rounds {
            return self.drop_msg(DropReason::BeyondRun);
        }
        let msg = match opened.message() {
            Ok(m) => m,
            Err(why) => return self.drop_msg(why),
        };
        // Our own messages reach us only as fetched blobs (gossipsub does
        // not deliver them); a manifest we signed is news then (signed in a
        // life before a restart, and not applied in it).
        if opened.sender == self.me && !matches!(msg, Message::Manifest(_)) {
            return Verdict::Ignore(None);
        }
        if self.reviews.excluded.contains(&opened.sender) || self.reviews.banned.contains(&opened.sender) {
            return self.drop_msg(DropReason::Excluded);
        }
        let (sender, round) = (opened.sender, opened.round);
        let result = match msg {
            Message::Hello { status, seq, recent } => self.on_hello(sender, round, status, seq, recent, now),
            Message::Leave { seq, recent } => self.on_leave(sender, seq, recent, now),
            Message::Contribution(c) => {
                let announced = Announced { contribution: c, signature: opened.signature };
                self.on_contribution(sender, round, announced, now)
            }
            Message::Manifest(m) => self.on_manifest(sender, round, m, bytes, now),
            Message::Verdict(finding) => {
                self.take_finding(round, SignedFinding { by: sender, finding, signature: opened.signature })
            }
            Message::Rollouts(_) => Err(DropReason::Invalid),
        };
        match result {
            Ok(()) => Verdict::Accept,
            Err(why) => self.drop_msg(why),
        }
    }

    fn drop_msg(&mut self, why: DropReason) -> Verdict {
        *self.stats.dropped.entry(why).or_default() += 1;
        drop_reason_verdict(why)
    }

    fn far_ahead(&self, round: u64) -> bool {
        round > self.round.saturating_add(LOOKAHEAD) && self.round > 0
    }

    fn on_hello(
        &mut self,
        sender: PeerId,
        round: u64,
        status: Status,
        seq: u64,
        recent: Vec<AppliedManifest>,
        now: Time,
    ) -> Result<(), DropReason> {
        if self.far_ahead(round) && status == Status::Active {
            return Err(DropReason::StaleRound);
        }
        if recent.len() > 2 * RECENT {
            return Err(DropReason::Invalid);
        }
        if recent.iter().any(|m| m.round > self.cfg.run_rounds) {
            return Err(DropReason::BeyondRun);
        }
        self.admit(&sender)?;
        self.members.newer(sender, seq)?;
        self.members.hello(sender, status, round, recent, now);
        Ok(())
    }

    /// Whether a message of `sender` may make it a member: members without
    /// standing are capped at [`MAX_MEMBERS`] (a flood of fresh keys; issue
    /// 13 item 4). Past the cap, a new key is ignored (it may be an honest
    /// newcomer), and peers with standing, or trusted by name, always get
    /// in.
    fn admit(&self, sender: &PeerId) -> Result<(), DropReason> {
        if !self.members.contains(sender)
            && !self.has_standing(sender)
            && !self.history.is_trusted(sender)
            && self.without_standing() >= MAX_MEMBERS
        {
            return Err(DropReason::Crowded);
        }
        Ok(())
    }

    /// Whether `p` has standing here (known, and earned).
    fn has_standing(&self, p: &PeerId) -> bool {
        self.history.has_standing() && self.history.counts(p)
    }

    /// Members without standing (all members before anyone's standing is
    /// known).
    fn without_standing(&self) -> usize {
        let n = self.members.len();
        if n < MAX_MEMBERS || !self.history.has_standing() {
            return n;
        }
        n - self.history.standing().filter(|p| self.members.contains(p)).count()
    }

    fn on_leave(
        &mut self,
        sender: PeerId,
        seq: u64,
        recent: Vec<AppliedManifest>,
        now: Time,
    ) -> Result<(), DropReason> {
        if recent.len() > 2 * RECENT {
            return Err(DropReason::Invalid);
        }
        if recent.iter().any(|m| m.round > self.cfg.run_rounds) {
            return Err(DropReason::BeyondRun);
        }
        self.members.newer(sender, seq)?;
        if self.members.leave(sender, recent, now, self.cfg.last_round) {
            self.stats.departures += 1;
        }
        Ok(())
    }

    fn on_contribution(&mut self, sender: PeerId, round: u64, a: Announced, now: Time) -> Result<(), DropReason> {
        if round < self.round || self.far_ahead(round) {
            return Err(DropReason::StaleRound);
        }
        let c = a.contribution;
        let residual_ok = c.residual.is_finite() && c.residual >= 0.0;
        if c.samples == 0 || (self.cfg.max_samples > 0 && c.samples > self.cfg.max_samples) || !residual_ok {
            return Err(DropReason::Invalid);
        }
        self.admit(&sender)?;
        self.members.touch(sender, round, now);
        let data = self.rounds.entry(round).or_default();
        if let Some(first) = data.contributions.get(&sender).copied() {
            if first.contribution != c {
                // Two signed announcements for one round: provable misbehaviour.
                self.equivocation(sender, round, first, a);
            }
            return Ok(());
        }
        data.contributions.insert(sender, a);
        if round == self.round && self.holds_state() && c.base_state == self.state {
            self.fetch(c.hash, BlobKind::Contribution, vec![sender]);
        }
        Ok(())
    }

    fn on_manifest(
        &mut self,
        sender: PeerId,
        round: u64,
        m: Manifest,
        bytes: &[u8],
        now: Time,
    ) -> Result<(), DropReason> {
        if round == 0 || self.far_ahead(round) {
            return Err(DropReason::StaleRound);
        }
        if !manifest_is_well_formed(self.cfg.run, round, &m)
            || (self.cfg.max_samples > 0 && m.entries.iter().any(|e| e.samples() > self.cfg.max_samples))
        {
            return Err(DropReason::Invalid);
        }
        // An aggregator signs only once it has contributed (it gathers after
        // its own training): a manifest without its signer's entry is forged
        // by its own evidence, and its signer's messages are dropped from now
        // on. Who else may sign depends on the history a peer saw (a peer
        // that synced rather than applied knows fewer contributors), so a
        // manifest from a signer that may not sign is dropped, its signer
        // not banned.
        if !m.entries.iter().any(|e| e.peer == sender) {
            if self.reviews.banned.insert(sender) {
                self.stats.forgeries += 1;
            }
            return Err(DropReason::NotCandidate);
        }
        if !self.may_sign(&sender, round) || self.forged_late(&sender, round, &m) {
            self.stats.unauthorized_manifests += 1;
            return Err(DropReason::NotCandidate);
        }
        // `m.excluded` is not judged here: a peer that switched history (or
        // restarted with an older `excluded.json`) may hold exclusions the
        // others do not, and refusing its manifests for them would split the
        // swarm over something peer review already decided elsewhere.
        let excluded = |p: &PeerId| self.reviews.excluded.contains(p);
        if m.entries.iter().any(|e| excluded(&e.peer))
            || !m.exclusions.iter().all(|x| self.exclusion_holds(x))
            || !m.checks.iter().all(|c| self.check_holds(c))
            || m.exclusions.len() > MAX_MANIFEST_ENTRIES
        {
            return Err(DropReason::Invalid);
        }
        let known = KnownManifest { aggregator: sender, manifest: m, id: Hash::of(bytes) };
        if round < self.round && self.holds_state() {
            // Old news, unless it is another history's version of a round
            // we applied (a partition that healed).
            if self.history.recent_of(round).is_some_and(|mine| mine.id != known.id) {
                self.stats.foreign_manifests += 1;
                self.keep(bytes);
                self.remember_foreign(round, known);
                return Ok(());
            }
            return Err(DropReason::StaleRound);
        }
        if sender != self.me {
            self.members.touch(sender, round, now);
        }
        self.keep(bytes);
        self.accept_manifest(round, known, now);
        Ok(())
    }
}
