//! Blobs this peer asks the node for: who to ask, retries, and what a
//! blob arriving (or failing everywhere) changes.

use super::*;

impl Peer {
    pub(super) fn fetch(&mut self, hash: Hash, kind: BlobKind, providers: Vec<PeerId>) {
        if self.have.contains(&hash) {
            return;
        }
        if let Some(f) = self.fetching.get_mut(&hash) {
            for p in providers {
                if !f.providers.contains(&p) {
                    f.providers.push(p);
                }
            }
            return;
        }
        let mut providers = providers;
        let mut seen = BTreeSet::new();
        providers.retain(|p| seen.insert(*p));
        let (asked_at, asked) = (self.now, providers.len());
        self.fetching.insert(
            hash,
            Fetching { kind, providers: providers.clone(), attempts: 1, retry_at: None, asked_at, asked },
        );
        self.out.push(OutEvent::Fetch { hash, kind, providers });
    }

    pub(super) fn on_blob(&mut self, hash: Hash) {
        self.fetching.remove(&hash);
        if !self.have.insert(hash) {
            return; // a second answer (hedged requests): already handled
        }
        if let Phase::Syncing(round) = self.phase {
            let wanted = self.rounds.get(&round).and_then(|d| d.manifest.as_ref()).map(|(_, m, _)| m.state);
            if wanted == Some(hash) {
                self.out.push(OutEvent::LoadState { round, state: hash });
            }
        }
    }

    pub(super) fn on_blob_failed(&mut self, hash: Hash, now: Time) {
        let give_up = match self.fetching.get_mut(&hash) {
            None => return,
            Some(f) if f.attempts >= self.cfg.max_fetch_attempts => true,
            Some(f) => {
                f.retry_at = Some(now + self.cfg.fetch_retry);
                false
            }
        };
        if give_up {
            let kind = self.fetching.remove(&hash).map(|f| f.kind);
            if kind == Some(BlobKind::Manifest) {
                // A manifest id from a hello that nobody serves (a lie, or
                // its holders left): not asked for again, and no reason to
                // drop what we are doing.
                if self.unavailable.len() >= MAX_UNAVAILABLE {
                    self.unavailable.clear();
                }
                self.unavailable.insert(hash);
                return;
            }
            // A blob the current step needs is gone everywhere: wait for
            // the next manifest and sync its state instead. (A blob nothing
            // needs any more, say an announcement of a peer that died, is
            // just dropped.)
            if self.needed_now(&hash) {
                self.stats.resyncs += 1;
                self.phase = Phase::Waiting;
            }
        }
    }

    /// Whether the phase waits for this blob: the state to sync to, or an
    /// entry of the manifest being collected.
    fn needed_now(&self, hash: &Hash) -> bool {
        let manifest = |r: u64| self.rounds.get(&r).and_then(|d| d.manifest.as_ref()).map(|(_, m, _)| m);
        match self.phase {
            Phase::Syncing(r) => manifest(r).is_some_and(|m| m.state == *hash),
            Phase::Collecting(r) => manifest(r).is_some_and(|m| m.entries.iter().any(|e| e.hash == *hash)),
            _ => false,
        }
    }

    /// Asks again for blobs whose retry time has come, from every active
    /// peer too, starting with another provider than last time.
    pub(super) fn retry_due_fetches(&mut self, now: Time) {
        let due: Vec<Hash> =
            self.fetching.iter().filter(|(_, f)| f.retry_at.is_some_and(|t| t <= now)).map(|(h, _)| *h).collect();
        for h in due {
            let active = self.active_peers();
            if let Some(f) = self.fetching.get_mut(&h) {
                f.attempts += 1;
                f.retry_at = None;
                for p in active {
                    if !f.providers.contains(&p) {
                        f.providers.push(p);
                    }
                }
                // Rotate so the next attempt starts with another provider.
                if f.providers.len() > 1 {
                    f.providers.rotate_left(1);
                }
                (f.asked_at, f.asked) = (now, f.providers.len());
                let providers = f.providers.clone();
                let kind = f.kind;
                self.out.push(OutEvent::Fetch { hash: h, kind, providers });
            }
        }
    }

    /// A fetch the node has been working on for `fetch_hedge` without an
    /// answer is also asked of every provider it was not given yet (the
    /// active peers included): the first good answer wins.
    pub(super) fn hedge_stalled_fetches(&mut self, now: Time) {
        let active = self.active_peers();
        for (hash, f) in self.fetching.iter_mut() {
            if f.retry_at.is_some() || now < f.asked_at + self.cfg.fetch_hedge {
                continue;
            }
            for p in &active {
                if !f.providers.contains(p) {
                    f.providers.push(*p);
                }
            }
            f.asked_at = now;
            if f.providers.len() > f.asked {
                let providers = f.providers[f.asked..].to_vec();
                f.asked = f.providers.len();
                self.stats.hedged_fetches += 1;
                self.out.push(OutEvent::Fetch { hash: *hash, kind: f.kind, providers });
            }
        }
    }
}
