//! Control messages in: checks (run, round, signer, content) before they
//! change anything, and membership bookkeeping.

use super::*;

impl Peer {
    pub(super) fn on_gossip(&mut self, bytes: &[u8], now: Time) -> Result<(), DropReason> {
        let opened = match Envelope::open(bytes) {
            Ok(o) => o,
            Err(why) => return self.drop_msg(why),
        };
        if opened.run != self.cfg.run {
            return self.drop_msg(DropReason::WrongRun);
        }
        if opened.sender == self.me {
            return Ok(());
        }
        let msg = match opened.message() {
            Ok(m) => m,
            Err(why) => return self.drop_msg(why),
        };
        let (sender, round) = (opened.sender, opened.round);
        let far_ahead = round > self.round.saturating_add(LOOKAHEAD) && self.round > 0;
        match msg {
            Message::Hello { status, recent, .. } => {
                if far_ahead && status == Status::Active {
                    return self.drop_msg(DropReason::StaleRound);
                }
                if recent.len() > 2 * RECENT {
                    return self.drop_msg(DropReason::Invalid);
                }
                self.peers.insert(sender, PeerInfo { status, round, last_seen: now, recent });
            }
            Message::Leave { recent } => {
                if recent.len() > 2 * RECENT {
                    return self.drop_msg(DropReason::Invalid);
                }
                if let Some(mut info) = self.peers.remove(&sender)
                    && info.status == Status::Active
                {
                    if recent.iter().any(|(r, _)| *r >= self.cfg.last_round) && self.finished.len() < MAX_FINISHED {
                        self.finished.insert(sender);
                    }
                    info.recent = recent;
                    info.last_seen = now;
                    self.departed.insert(sender, info);
                }
            }
            Message::Contribution { hash, samples, base_state } => {
                if round < self.round || far_ahead {
                    return self.drop_msg(DropReason::StaleRound);
                }
                if samples == 0 || (self.cfg.max_samples > 0 && samples > self.cfg.max_samples) {
                    return self.drop_msg(DropReason::Invalid);
                }
                self.touch(sender, round, now);
                let data = self.rounds.entry(round).or_default();
                if data.contributions.contains_key(&sender) {
                    return Ok(());
                }
                data.contributions.insert(sender, (hash, samples, base_state));
                if round == self.round && self.holds_state() && base_state == self.state {
                    self.fetch(hash, BlobKind::Contribution, vec![sender]);
                }
            }
            Message::Manifest(m) => {
                if round == 0 || far_ahead {
                    return self.drop_msg(DropReason::StaleRound);
                }
                if !manifest_is_well_formed(&m)
                    || (self.cfg.max_samples > 0 && m.entries.iter().any(|e| e.samples > self.cfg.max_samples))
                {
                    return self.drop_msg(DropReason::Invalid);
                }
                if round < self.round && self.holds_state() {
                    // Old news, unless it is another history's version of a
                    // round we applied (a partition that healed).
                    let mine = self.recent_applied.iter().find(|(r, _)| *r == round).map(|(_, id)| *id);
                    if mine.is_some_and(|id| id != Hash::of(bytes)) {
                        self.stats.foreign_manifests += 1;
                        self.keep(bytes);
                        self.remember_foreign(round, sender, m, Hash::of(bytes));
                        return Ok(());
                    }
                    return self.drop_msg(DropReason::StaleRound);
                }
                self.touch(sender, round, now);
                self.keep(bytes);
                self.accept_manifest(round, sender, m, Hash::of(bytes), now);
            }
        }
        Ok(())
    }
    /// A contribution or manifest from `peer` shows it active in `round`.
    pub(super) fn touch(&mut self, peer: PeerId, round: u64, now: Time) {
        let info = self.peers.entry(peer).or_insert(PeerInfo {
            status: Status::Active,
            round,
            last_seen: now,
            recent: Vec::new(),
        });
        info.last_seen = now;
        info.status = Status::Active;
        info.round = info.round.max(round);
    }
}
