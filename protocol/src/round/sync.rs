//! Where a peer without a trustworthy state finds one: joining, catching up
//! after a missed manifest, and leaving a losing history after a partition.
//! Every decision counts what active peers say they applied (their hellos),
//! never a single signed manifest alone.

use super::*;
use std::cmp::Reverse;
use std::collections::BTreeSet;

/// Manifest fetches in progress at most when more are wanted: gossip loses
/// one or two manifests, a joiner needs one; made-up ids listed by fresh
/// keys before anyone has standing (when every lister counts) would
/// otherwise start two more fetches at every poll, each asked of every
/// active peer (issue 13 item 4).
const MAX_REPAIRS: usize = 16;

/// Hello intervals after which what a waiting peer heard of another is
/// current (see [`Peer::settle_time`]).
const SETTLE_HELLOS: u64 = 1;

impl Peer {
    pub(super) fn remember_foreign(&mut self, round: u64, known: KnownManifest) {
        if self.foreign.as_ref().is_none_or(|f| f.round <= round) {
            self.foreign = Some(Foreign { round, known });
        }
    }

    /// A majority of the active peers list, for a round we applied, a
    /// manifest other than ours: we are on the losing side of a split (a
    /// healed partition, or a lost manifest). Leave our history and sync to
    /// theirs. Only peers that vouch (contributed to one of the rounds we
    /// applied lately) count: fresh keys listing a made-up manifest must
    /// not send every peer back to waiting (issue 13 item 2). And only
    /// those that contributed before the histories parted, ourselves
    /// included: the other side cannot know our newcomers, nor we its.
    pub(super) fn on_minority_fork(&mut self) -> bool {
        let counted =
            |p: &PeerId, i: &members::PeerInfo| i.is_active() && !self.withholds(p) && self.history.vouches(p);
        let mut active = Vec::new();
        let mut voters: BTreeMap<AppliedManifest, Vec<PeerId>> = BTreeMap::new();
        for (p, i) in self.members.iter().filter(|(p, i)| counted(p, i)) {
            active.push(*p);
            for m in i.recent.iter().filter(|m| self.history.contradicts(m)) {
                voters.entry(*m).or_default().push(*p);
            }
        }
        // A newcomer that joined our history after it parted from theirs
        // never saw their peers contribute: when every active peer that
        // contributed here before it did (its seniors, who knew both sides)
        // and was still on our side at the contested round went over to the
        // other history, it follows them. (Seniors that were on the other
        // side all along tell nothing: the majority rule counts them.)
        let mine = self.history.first_of(&self.me);
        let seniors: Vec<PeerId> = active
            .iter()
            .filter(|p| mine.is_some_and(|m| self.history.first_of(p).is_some_and(|f| f < m)))
            .copied()
            .collect();
        let wins = |(m, them): (&AppliedManifest, &Vec<PeerId>)| {
            // They parted at the contested round at the latest, whatever a
            // peer that worked on both sides contributed here.
            let parted = self.history.parted_after(them).min(m.round);
            let before = |p: &PeerId| self.history.before_parting(p, parted);
            let n = active.iter().filter(|p| before(p)).count() + usize::from(before(&self.me));
            quorum::is_majority(them.iter().filter(|p| before(p)).count(), n) || {
                let ours_then: Vec<&PeerId> =
                    seniors.iter().filter(|s| self.history.last_of(s).is_some_and(|l| l >= m.round)).collect();
                !ours_then.is_empty() && ours_then.iter().all(|s| them.contains(s))
            }
        };
        if !voters.iter().any(wins) {
            return false;
        }
        self.stats.switched_history += 1;
        self.foreign = None;
        self.rounds.clear();
        self.history.forget_record();
        self.phase = Phase::Waiting;
        true
    }

    /// Whether `p` aggregated a manifest that nobody could collect in the
    /// last [`history::STANDING_ROUNDS`] rounds, or ever served us bytes
    /// that were not what we asked for (a lie: such a provider is never
    /// asked again either).
    pub(super) fn withholds(&self, p: &PeerId) -> bool {
        let floor = self.round.saturating_sub(history::STANDING_ROUNDS);
        self.fetcher.is_banned(p) || self.withheld.range(floor..).any(|(_, w)| w.contains(p))
    }

    /// Active peers that list any of our recently applied manifests.
    fn our_side(&self) -> Vec<PeerId> {
        self.members
            .iter()
            .filter(|(_, i)| i.is_active() && i.recent.iter().any(|m| self.history.is_recent(m)))
            .map(|(p, _)| *p)
            .collect()
    }

    /// After a partition heals, the side with fewer peers (ties: the side
    /// without the lowest peer id) gives up its history and syncs to the
    /// other's. Returns true if this peer switched.
    pub(super) fn consider_foreign(&mut self) -> bool {
        let Some(Foreign { round, known }) = self.foreign.clone() else { return false };
        if !self.history.has_recent() {
            return false;
        }
        // An aggregator whose manifest nobody could collect does not count
        // for its history (it would pull us back to what it withholds), nor
        // a provider that served wrong bytes (`withholds`).
        // Nor does a peer that does not vouch (a fresh key): a Sybil group
        // listing another candidate's second manifest must not pull us
        // onto it (issue 13 item 2).
        let mut theirs = self.members.supporters(&applied(round, known.id));
        theirs.retain(|p| !self.withholds(p) && self.history.vouches(p));
        // Compare like with like: who applied our manifest of that round, if
        // we applied one, else who shares our recent history; on both
        // sides, only peers that contributed before the histories parted
        // (see `on_minority_fork`).
        let parted = self.history.parted_after(&theirs).min(round);
        let before = |p: &PeerId| self.history.before_parting(p, parted);
        theirs.retain(|p| before(p));
        let mut ours = match self.history.recent_of(round) {
            Some(mine) => self.members.supporters(&mine),
            None => self.our_side(),
        };
        ours.retain(|p| self.history.vouches(p) && before(p));
        if before(&self.me) {
            ours.push(self.me);
        }
        let switch = quorum::other_side_wins(&theirs, &ours);
        if switch {
            self.stats.switched_history += 1;
            self.foreign = None;
            self.rounds.clear();
            self.rounds.entry(round).or_default().manifest = Some(known);
            self.phase = Phase::Waiting;
        }
        switch
    }

    /// Fetches (as blobs) manifests that peers say they applied for our
    /// round or later and that we never received: gossip can lose them.
    /// Ids that a peer with standing lists come first (newest first among
    /// them) and are fetched as any blob; ids that only peers without
    /// standing list (fresh keys, made-up rounds) come after, and are asked
    /// of their listers alone, once (issue 13 item 6; see `fetch.rs`).
    /// Before anyone's standing is known (round 1, a joiner), every lister
    /// counts.
    pub(super) fn repair_manifests(&mut self) {
        let from = if self.holds_state() { self.round } else { 0 };
        let mut wanted: BTreeMap<(bool, Reverse<u64>, Hash), Vec<PeerId>> = BTreeMap::new();
        let mut vouched: BTreeSet<Hash> = BTreeSet::new();
        for (p, i) in self.members.iter() {
            for m in &i.recent {
                if m.round >= from
                    && !self.knows_manifest(&m.id)
                    && !self.fetcher.has(&m.id)
                    && !self.fetcher.is_fetching(&m.id)
                    && !self.fetcher.gave_up_on(&m.id)
                {
                    if self.history.lists_vouched(p) {
                        vouched.insert(m.id);
                    }
                    wanted.entry((false, Reverse(m.round), m.id)).or_default().push(*p);
                }
            }
        }
        // Vouched ids sort first (`false` < `true`). An unvouched id nobody
        // served waits (a peer with standing listing it vouches for it: a
        // fresh key listing a real id first cannot hide it).
        let wanted: BTreeMap<_, _> = wanted
            .into_iter()
            .map(|((_, r, id), listers)| ((!vouched.contains(&id), r, id), listers))
            .filter(|((unvouched, _, id), _)| !*unvouched || !self.fetcher.is_unavailable(id))
            .collect();
        let mut started = 0;
        let in_flight = self.fetcher.manifests_in_flight();
        for ((unvouched, _, id), listers) in wanted {
            if started == 2 || in_flight + started >= MAX_REPAIRS {
                break;
            }
            if !unvouched {
                self.fetch(id, BlobKind::Manifest, listers);
                started += 1;
                continue;
            }
            let (asked, out) = self.fetcher.fetch_unvouched(id, listers, self.now);
            self.stats.requests += out.len() as u64;
            self.out.extend(out);
            started += usize::from(asked);
        }
    }

    /// Without a state, manifests are what matters: keep the `2 * RECENT`
    /// that most active peers confirm (newest first among equals), so
    /// messages for made-up rounds cannot crowd out the one to sync to.
    fn trim_waiting_rounds(&mut self, vouched_only: bool) {
        if self.rounds.len() <= 2 * RECENT {
            return;
        }
        // With `vouched_only`, fresh keys confirm nothing here either: made-up
        // rounds they list must not crowd out the real one.
        let counts = |p: &PeerId| !vouched_only || self.history.vouches(p);
        let mut ranked: Vec<(usize, u64)> = self
            .rounds
            .iter()
            .filter(|(_, d)| d.manifests().next().is_some())
            .map(|(r, d)| {
                let support = d
                    .manifests()
                    .map(|k| self.members.supporters(&applied(*r, k.id)).iter().filter(|p| counts(p)).count());
                (support.max().unwrap_or(0), *r)
            })
            .collect();
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        // Announcements for the rounds right after the newest confirmed one
        // are kept too: they are the next rounds' contributions.
        let confirmed = ranked.iter().filter(|(s, _)| *s > 0).map(|(_, r)| *r).max().unwrap_or(0);
        let keep: BTreeSet<u64> = ranked.into_iter().take(2 * RECENT).map(|(_, r)| r).collect();
        self.rounds.retain(|r, d| {
            keep.contains(r) || (d.manifests().next().is_none() && (confirmed..=confirmed + 2).contains(r))
        });
    }

    /// Whether peers that do not vouch are left out of the sync quorum:
    /// when the user named peers to trust (`swarm join --trust`), always;
    /// when this peer applied rounds, in this life or in an earlier one
    /// (it knows who contributed), while some active peer vouches. A joiner
    /// that trusts nobody, or a peer whose peers all left while it was
    /// away, has no better anchor than the head count.
    fn vouched_only(&self) -> bool {
        self.history.anchored()
            || self.history.knows_vouchers()
                && self.members.active_with_departed_ids().any(|(p, _)| self.history.vouches(p))
    }

    /// The newest manifest that enough active peers (and peers that just
    /// left) confirm having applied, and whether a newer confirmed one is on
    /// its way (being fetched). With `vouched_only`, fresh keys confirm
    /// nothing: a Sybil majority must not hand a resyncing peer its made-up
    /// manifest and state (issue 13 item 2).
    fn confirmed_manifest(&self, need: usize, vouched_only: bool) -> (Option<(u64, KnownManifest)>, bool) {
        let counts = |p: &PeerId| !vouched_only || self.history.vouches(p);
        let best = self.rounds.iter().rev().find_map(|(r, d)| {
            d.manifests().find_map(|k| {
                let m = applied(*r, k.id);
                let support = self.members.supporters(&m).iter().filter(|p| counts(p)).count()
                    + self.members.departed_supporter_ids(&m).iter().filter(|p| counts(p)).count();
                (support >= need).then(|| (*r, k.clone()))
            })
        });
        let mut confirmations: BTreeMap<AppliedManifest, usize> = BTreeMap::new();
        for (_, i) in self.members.all_with_departed().filter(|(p, _)| counts(p)) {
            for m in &i.recent {
                *confirmations.entry(*m).or_default() += 1;
            }
        }
        let coming = confirmations
            .iter()
            .filter(|(_, n)| **n >= need)
            .any(|(m, _)| best.as_ref().is_none_or(|(r, _)| m.round > *r) && self.fetcher.is_fetching(&m.id));
        (best, coming)
    }

    /// How long a peer heard of only just is not taken at its word for
    /// starting the run from genesis: a hello interval, by which its current
    /// hello has normally replaced any old one gossip's cache handed us (a
    /// peer reached only through the mesh may take longer; two intervals
    /// changed how the churn simulation heals, see the note of the change).
    pub(super) fn settle_time(&self) -> Time {
        SETTLE_HELLOS * self.cfg.hello_interval
    }

    pub(super) fn poll_waiting(&mut self, now: Time) {
        if let Some((round, state)) = self.resumed
            && self.resumed_after_the_end()
        {
            // Resumed after the run's last round: nothing left to do.
            self.out.push(OutEvent::RunOver { round, state });
            return self.leave();
        }
        // Sync to the newest manifest that a quorum of the active peers
        // confirm having applied (a signed manifest alone is not enough).
        let vouched_only = self.vouched_only();
        self.trim_waiting_rounds(vouched_only);
        let active =
            self.members.active_with_departed_ids().filter(|(p, _)| !vouched_only || self.history.vouches(p)).count();
        if active > 0 {
            let need = quorum::sync_confirmations(active, self.cfg.sync_quorum);
            let (best, coming) = self.confirmed_manifest(need, vouched_only);
            // A newer manifest that a quorum confirms is still on its way:
            // wait for it rather than sync to an older one and replay the
            // rounds in between.
            if coming {
                return;
            }
            if let Some((r, known)) = best {
                if let Some(d) = self.rounds.get_mut(&r) {
                    d.manifest = Some(known);
                    d.alternatives.clear();
                }
                return self.start_sync(r);
            }
        }
        // The run is over: everyone left after its last round. Nothing to
        // sync to any more; leave too.
        // A peer that trusts named peers takes it only from peers that vouch
        // (fresh keys saying they finished must not end its wait).
        if self.members.run_is_over()
            && (!self.history.anchored() || self.members.finished().any(|p| self.history.vouches(p)))
        {
            return self.leave();
        }
        // At least half of the peers present (syncing ones included) are past
        // round 1 and do not list only manifests nobody could serve (an empty
        // list counts: a peer that just synced lists nothing yet): the run is
        // under way, wait for a manifest. One peer saying so, with made-up
        // manifests or none, must not keep everyone waiting for ever (issue
        // 13 item 1): it is a minority of those present.
        // What we know of a peer heard of only just may be an old hello
        // from gossip's cache ("round 1, nothing applied" while the run is
        // at round 3; see `Members::settled`): such a peer counts once it
        // settled, or at once if even that old news says it is past round 1.
        let settle = self.settle_time();
        let looks_past = |i: &members::PeerInfo| {
            i.is_active()
                && i.round > 1
                && (i.recent.is_empty() || i.recent.iter().any(|m| !self.fetcher.is_unavailable(&m.id)))
        };
        let settled: BTreeSet<PeerId> = self.members.settled(now, settle).map(|(p, _)| *p).collect();
        let counted: Vec<(&PeerId, &members::PeerInfo)> =
            self.members.iter().filter(|(p, i)| settled.contains(p) || looks_past(i)).collect();
        let past = counted.iter().filter(|(_, i)| looks_past(i)).count();
        if quorum::run_is_under_way(past, counted.len() + 1) {
            return;
        }

        // A peer that trusts named peers and has applied nothing starts the
        // run only together with one of them (waiting too, or just gone into
        // round 1 with nothing applied: founders that trust each other hear
        // each other's start a hello late): peers it cannot judge may be
        // past round 1 on the run it should sync to, and starting from
        // genesis without them would fork it off for good.
        let starting = |i: &members::PeerInfo| {
            i.recent.is_empty() && (i.status == Status::Waiting || i.is_active() && i.round <= 1)
        };
        if self.history.anchored()
            && !self.history.knows_contributors()
            && !counted.iter().any(|(p, i)| self.history.is_trusted(p) && starting(i))
        {
            return;
        }
        // A peer that applied rounds in this life never starts the run over
        // from genesis: it waits for a manifest to sync to. (It would sit
        // out the rounds it already signed for, and peers that only claim a
        // later round could otherwise send it there.)
        if self.history.has_standing() {
            return;
        }
        let present = 1 + counted.iter().filter(|(_, i)| i.status != Status::Syncing).count();
        if present as u64 >= u64::from(self.cfg.min_peers) {
            self.state = self.cfg.genesis;
            self.start_round(1, now);
        }
    }
}
