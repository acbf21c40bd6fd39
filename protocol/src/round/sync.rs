//! Where a peer without a trustworthy state finds one: joining, catching up
//! after a missed manifest, and leaving a losing history after a partition.
//! Every decision counts what active peers say they applied (their hellos),
//! never a single signed manifest alone.

use super::{Peer, PeerInfo, Phase, RECENT};
use crate::Time;
use crate::envelope::Status;
use crate::id::{Hash, PeerId};
use crate::round::{BlobKind, Manifest};
use std::collections::{BTreeMap, BTreeSet};

impl Peer {
    pub(super) fn remember_foreign(&mut self, round: u64, aggregator: PeerId, m: Manifest, id: Hash) {
        if self.foreign.as_ref().is_none_or(|f| f.0 <= round) {
            self.foreign = Some((round, aggregator, m, id));
        }
    }

    /// A majority of the active peers list, for a round we applied, a
    /// manifest other than ours: we are on the losing side of a split (a
    /// healed partition, or a lost manifest). Leave our history and sync to
    /// theirs.
    pub(super) fn on_minority_fork(&mut self) -> bool {
        let active: Vec<&PeerInfo> = self.peers.values().filter(|i| i.status == Status::Active).collect();
        let mut votes: BTreeMap<(u64, Hash), usize> = BTreeMap::new();
        for i in &active {
            for (r, id) in &i.recent {
                if self.history.get(r).is_some_and(|mine| mine != id) {
                    *votes.entry((*r, *id)).or_default() += 1;
                }
            }
        }
        // We count ourselves among the active peers.
        let n = active.len() + 1;
        if !votes.values().any(|v| v * 2 > n) {
            return false;
        }
        self.stats.switched_history += 1;
        self.foreign = None;
        self.rounds.clear();
        self.history.clear();
        self.phase = Phase::Waiting;
        true
    }

    /// Active peers that list any of our recently applied manifests.
    pub(super) fn our_side(&self) -> Vec<PeerId> {
        self.peers
            .iter()
            .filter(|(_, i)| i.status == Status::Active && i.recent.iter().any(|x| self.recent_applied.contains(x)))
            .map(|(p, _)| *p)
            .collect()
    }

    /// Active peers whose recent manifests include `id`.
    pub(super) fn supporters(&self, round: u64, id: Hash) -> Vec<PeerId> {
        self.peers
            .iter()
            .filter(|(_, i)| i.status == Status::Active && i.recent.contains(&(round, id)))
            .map(|(p, _)| *p)
            .collect()
    }

    /// After a partition heals, the side with fewer peers (ties: the side
    /// without the lowest peer id) gives up its history and syncs to the
    /// other's. Returns true if this peer switched.
    pub(super) fn consider_foreign(&mut self) -> bool {
        let Some((round, agg, m, id)) = self.foreign.clone() else { return false };
        if self.recent_applied.is_empty() {
            return false;
        }
        let theirs = self.supporters(round, id);
        // Compare like with like: who applied our manifest of that round, if
        // we applied one, else who shares our recent history.
        let mut ours = match self.recent_applied.iter().find(|(r, _)| *r == round) {
            Some(&(r, id)) => self.supporters(r, id),
            None => self.our_side(),
        };
        ours.push(self.me);
        let switch = theirs.len() > ours.len()
            || (theirs.len() == ours.len() && !theirs.is_empty() && theirs.iter().min() < ours.iter().min());
        if switch {
            self.stats.switched_history += 1;
            self.foreign = None;
            self.rounds.clear();
            self.rounds.entry(round).or_default().manifest = Some((agg, m, id));
            self.phase = Phase::Waiting;
        }
        switch
    }

    /// Fetches (as blobs) manifests that peers say they applied for our
    /// round or later and that we never received: gossip can lose them.
    pub(super) fn repair_manifests(&mut self) {
        let from = if self.holds_state() { self.round } else { 0 };
        // Newest rounds first: a joiner syncs to the newest confirmed one.
        let mut wanted: BTreeMap<(std::cmp::Reverse<u64>, Hash), Vec<PeerId>> = BTreeMap::new();
        for (p, i) in &self.peers {
            for (r, id) in &i.recent {
                if *r >= from
                    && !self.knows_manifest(id)
                    && !self.fetching.contains_key(id)
                    && !self.unavailable.contains(id)
                {
                    wanted.entry((std::cmp::Reverse(*r), *id)).or_default().push(*p);
                }
            }
        }
        for ((_, id), providers) in wanted.into_iter().take(2) {
            self.fetch(id, BlobKind::Manifest, providers);
        }
    }

    /// Without a state, manifests are what matters: keep the `2 * RECENT`
    /// that most active peers confirm (newest first among equals), so
    /// messages for made-up rounds cannot crowd out the one to sync to.
    fn trim_waiting_rounds(&mut self) {
        if self.rounds.len() <= 2 * RECENT {
            return;
        }
        let mut ranked: Vec<(usize, u64)> = self
            .rounds
            .iter()
            .filter(|(_, d)| d.manifest.is_some() || !d.alternatives.is_empty())
            .map(|(r, d)| {
                let support =
                    d.manifest.iter().chain(d.alternatives.iter()).map(|(_, _, id)| self.supporters(*r, *id).len());
                (support.max().unwrap_or(0), *r)
            })
            .collect();
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        // Announcements for the rounds right after the newest confirmed one
        // are kept too: they are the next rounds' contributions.
        let confirmed = ranked.iter().filter(|(s, _)| *s > 0).map(|(_, r)| *r).max().unwrap_or(0);
        let keep: BTreeSet<u64> = ranked.into_iter().take(2 * RECENT).map(|(_, r)| r).collect();
        self.rounds.retain(|r, d| {
            keep.contains(r)
                || (d.manifest.is_none() && d.alternatives.is_empty() && (confirmed..=confirmed + 2).contains(r))
        });
    }

    pub(super) fn poll_waiting(&mut self, now: Time) {
        // Sync to the newest manifest that a quorum of the active peers
        // confirm having applied (a signed manifest alone is not enough).
        self.trim_waiting_rounds();
        let active = self.peers.values().chain(self.departed.values()).filter(|i| i.status == Status::Active).count();
        if active > 0 {
            let need = ((self.cfg.sync_quorum * active as f64).floor() as usize + 1).min(active);
            let best = self.rounds.iter().rev().find_map(|(r, d)| {
                d.manifest.iter().chain(d.alternatives.iter()).find_map(|(agg, m, id)| {
                    let gone = self.departed.values().filter(|i| i.recent.contains(&(*r, *id))).count();
                    (self.supporters(*r, *id).len() + gone >= need).then(|| (*r, *agg, m.clone(), *id))
                })
            });
            // A newer manifest that a quorum confirms is still on its way
            // (being fetched): wait for it rather than sync to an older one
            // and replay the rounds in between.
            let mut confirmed: BTreeMap<(u64, Hash), usize> = BTreeMap::new();
            for i in self.peers.values().chain(self.departed.values()) {
                for x in &i.recent {
                    *confirmed.entry(*x).or_default() += 1;
                }
            }
            let coming = confirmed
                .iter()
                .filter(|(_, n)| **n >= need)
                .any(|((r, id), _)| best.as_ref().is_none_or(|b| *r > b.0) && self.fetching.contains_key(id));
            if coming {
                return;
            }
            if let Some((r, agg, m, id)) = best {
                if let Some(d) = self.rounds.get_mut(&r) {
                    d.manifest = Some((agg, m, id));
                    d.alternatives.clear();
                }
                return self.start_sync(r);
            }
        }
        // The run is over: everyone left after its last round. Nothing to
        // sync to any more; leave too.
        let run_over = !self.finished.is_empty();
        if run_over && !self.peers.values().any(|i| i.status == Status::Active) {
            return self.leave();
        }
        // Someone is past round 1: the run is under way, wait for a manifest.
        if self.peers.values().any(|i| i.status == Status::Active && i.round > 1) {
            return;
        }
        let present = 1 + self.peers.values().filter(|i| i.status != Status::Syncing).count();
        if present as u64 >= u64::from(self.cfg.min_peers) {
            self.state = self.cfg.genesis;
            self.start_round(1, now);
        }
    }
}
