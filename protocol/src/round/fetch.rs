//! Which blobs this peer holds and which it is asking for, of whom, and
//! when: the one fetch policy of the swarm (the node only carries requests
//! out).
//!
//! A blob has providers in order of preference. One request goes to the
//! first provider not asked yet (connected ones first: dialling a dead
//! address costs a handshake timeout). A request unanswered for
//! `fetch_hedge` gets a parallel one to the next provider, and so on: the
//! first good answer wins, and a slow or dead provider costs at most the
//! hedge delay. When every provider of an attempt has failed, the blob is
//! asked again after `fetch_retry`, of every active peer too, starting with
//! another provider; after `max_fetch_attempts` attempts the machine gives
//! up on it. A provider that served wrong bytes is never asked again.
//!
//! A manifest id that only peers without standing list (fresh keys, once
//! standing is known) is *unvouched*: it is asked of its listers alone, in
//! one attempt, at most [`UNVOUCHED_PER_LISTER`] at a time per lister, and a
//! lister whose unvouched listings went unserved [`MAX_UNSERVED`] times is
//! not asked again for [`UNSERVED_FOR`] (issue 13 item 6: made-up ids in
//! hellos were retried 20 times of every active peer by every node).

use super::types::{BlobKind, OutEvent};
use crate::id::{Hash, PeerId};
use crate::time::Time;
use std::collections::{BTreeMap, BTreeSet};

/// Unservable manifest ids remembered.
const MAX_UNAVAILABLE: usize = 256;
/// Attempts for the blobs of a check (a chain, an inner state): only their
/// contributor holds them, and one that does not serve them is at fault.
const REVIEW_ATTEMPTS: u32 = 3;
/// Unvouched manifest fetches in flight per listing peer.
pub(super) const UNVOUCHED_PER_LISTER: usize = 8;
/// Unserved unvouched listings after which a lister is not asked again ...
pub(super) const MAX_UNSERVED: u32 = 3;
/// ... for this long; an unvouched id nobody served is not asked for again
/// for as long either (then it may be: a healed partition's other side has
/// no standing here, and its manifests are real).
pub(super) const UNSERVED_FOR: Time = 60_000;
/// Listers and ids remembered as unserved.
const MAX_UNSERVED_ENTRIES: usize = 1_024;

/// Blobs only the peer that made them holds.
fn private(kind: BlobKind) -> bool {
    matches!(kind, BlobKind::Chain | BlobKind::InnerState)
}

#[derive(Clone, Debug)]
struct Fetch {
    kind: BlobKind,
    /// Everyone who may hold it, in order of preference.
    providers: Vec<PeerId>,
    /// Asked during the current attempt.
    asked: BTreeSet<PeerId>,
    /// Requests without an answer yet.
    pending: BTreeSet<PeerId>,
    /// Providers that answered they do not hold it.
    not_held: BTreeSet<PeerId>,
    /// Attempts so far (the first is 1).
    attempt: u32,
    /// When the next attempt starts, once every provider failed.
    retry_at: Option<Time>,
    /// When the last request went out (the hedging clock).
    last_sent: Time,
    /// Listed only by peers without standing: asked of them alone, once.
    unvouched: bool,
    /// The active peers were added as providers in this attempt (once per
    /// attempt: with thousands of members, adding them at every hedge of
    /// every fetch was most of a hello flood's cost, issue 13 item 4).
    widened: bool,
}

/// What a failed request led to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Failed {
    /// Another provider is being asked, or will be.
    Continuing,
    /// Every attempt failed: the blob is given up.
    GaveUp(GivenUp),
}

/// A blob nobody served: its kind, and the providers that were asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct GivenUp {
    pub hash: Hash,
    pub kind: BlobKind,
    pub providers: Vec<PeerId>,
    /// Those providers that answered they do not hold it (the others were
    /// unreachable).
    pub disowned: Vec<PeerId>,
}

/// The blob side of a peer: held blobs, fetches in progress, providers.
#[derive(Clone, Debug)]
pub(super) struct Fetcher {
    me: PeerId,
    retry: Time,
    max_attempts: u32,
    hedge: Time,
    have: BTreeSet<Hash>,
    fetches: BTreeMap<Hash, Fetch>,
    connected: BTreeSet<PeerId>,
    /// Providers that served wrong bytes.
    banned: BTreeSet<PeerId>,
    /// Manifest ids that no provider could serve.
    unavailable: BTreeSet<Hash>,
    /// Unvouched manifest ids nobody served, with when they were given up.
    unvouched_unserved: BTreeMap<Hash, Time>,
    /// Listers of unvouched ids nobody served: how many, since when.
    unserved_listers: BTreeMap<PeerId, (u32, Time)>,
}

impl Fetcher {
    pub(super) fn new(me: PeerId, retry: Time, max_attempts: u32, hedge: Time) -> Fetcher {
        Fetcher {
            me,
            retry,
            max_attempts: max_attempts.max(1),
            hedge,
            have: BTreeSet::new(),
            fetches: BTreeMap::new(),
            connected: BTreeSet::new(),
            banned: BTreeSet::new(),
            unavailable: BTreeSet::new(),
            unvouched_unserved: BTreeMap::new(),
            unserved_listers: BTreeMap::new(),
        }
    }

    pub(super) fn has(&self, hash: &Hash) -> bool {
        self.have.contains(hash)
    }

    /// Records a blob held locally (trained, applied, or the genesis state).
    pub(super) fn hold(&mut self, hash: Hash) {
        self.have.insert(hash);
    }

    pub(super) fn lose(&mut self, hash: &Hash) {
        self.have.remove(hash);
    }

    pub(super) fn is_fetching(&self, hash: &Hash) -> bool {
        self.fetches.contains_key(hash)
    }

    /// Whether nobody served this manifest id: given up on as a vouched id
    /// (for good), or as an unvouched one (for [`UNSERVED_FOR`]).
    pub(super) fn is_unavailable(&self, hash: &Hash) -> bool {
        self.gave_up_on(hash) || self.unvouched_unserved.contains_key(hash)
    }

    /// Whether this manifest id was given up on as a vouched id.
    pub(super) fn gave_up_on(&self, hash: &Hash) -> bool {
        self.unavailable.contains(hash)
    }

    /// Starts fetching a manifest id that only peers without standing list,
    /// of them alone (see the module's notes); false if none of them may be
    /// asked now (too many of their listings in flight or unserved).
    pub(super) fn fetch_unvouched(&mut self, hash: Hash, listers: Vec<PeerId>, now: Time) -> (bool, Vec<OutEvent>) {
        let open: Vec<PeerId> = listers
            .into_iter()
            .filter(|p| {
                *p != self.me
                    && !self.banned.contains(p)
                    && self.unvouched_in_flight(p) < UNVOUCHED_PER_LISTER
                    && self
                        .unserved_listers
                        .get(p)
                        .is_none_or(|(n, since)| *n < MAX_UNSERVED || now >= since + UNSERVED_FOR)
            })
            .collect();
        if open.is_empty() || self.have.contains(&hash) || self.fetches.contains_key(&hash) {
            return (false, Vec::new());
        }
        let out = self.fetch(hash, BlobKind::Manifest, open, now);
        if let Some(f) = self.fetches.get_mut(&hash) {
            f.unvouched = true;
        }
        (true, out)
    }

    /// Manifest fetches in progress, unvouched ones not counted (they are
    /// capped per lister).
    pub(super) fn manifests_in_flight(&self) -> usize {
        self.fetches.values().filter(|f| f.kind == BlobKind::Manifest && !f.unvouched).count()
    }

    /// Unvouched fetches in flight that ask `p`.
    fn unvouched_in_flight(&self, p: &PeerId) -> usize {
        self.fetches.values().filter(|f| f.unvouched && f.providers.contains(p)).count()
    }

    pub(super) fn connected(&mut self, peer: PeerId, up: bool) {
        if up {
            self.connected.insert(peer);
        } else {
            self.connected.remove(&peer);
        }
    }

    /// Starts fetching `hash` from `providers` (in order of preference), or
    /// adds them to a fetch in progress.
    pub(super) fn fetch(&mut self, hash: Hash, kind: BlobKind, providers: Vec<PeerId>, now: Time) -> Vec<OutEvent> {
        if self.have.contains(&hash) {
            return Vec::new();
        }
        let f = self.fetches.entry(hash).or_insert(Fetch {
            kind,
            providers: Vec::new(),
            asked: BTreeSet::new(),
            pending: BTreeSet::new(),
            not_held: BTreeSet::new(),
            attempt: 1,
            retry_at: None,
            last_sent: now,
            unvouched: false,
            widened: false,
        });
        // Asked for as an ordinary fetch (a peer with standing lists it, or
        // another part of the round needs it): vouched for from now on.
        f.unvouched = false;
        if f.kind == BlobKind::Manifest && kind != BlobKind::Manifest {
            // The round needs as its state (or a contribution, ...) a hash
            // that hellos listed as a manifest id: a liar can list a real
            // state's hash as one. Fetched as what the round needs from now
            // on, afresh: everyone is asked again under that kind's size
            // bound (requests in flight under the manifest's bound fail on
            // its size). The other way round (a contribution announced under
            // a manifest's id) loses nothing either: the node reads any
            // answer that is a signed manifest as one, whatever it was
            // asked as.
            f.kind = kind;
            f.asked.clear();
            f.not_held.clear();
            f.widened = false;
            f.attempt = 1;
            f.retry_at = None;
        }
        add_providers(f, providers);
        let mut out = Vec::new();
        let idle = f.pending.is_empty() && f.retry_at.is_none();
        if idle && !self.ask_next(hash, now, &mut out) {
            // Nobody to ask yet: try again (with the active peers) later.
            self.fetches.entry(hash).and_modify(|f| f.retry_at = Some(now + self.retry));
        }
        out
    }

    /// Sends one request to the best provider of `hash` not asked in this
    /// attempt; false if there is none.
    fn ask_next(&mut self, hash: Hash, now: Time, out: &mut Vec<OutEvent>) -> bool {
        let Some(f) = self.fetches.get_mut(&hash) else { return false };
        let open = |p: &&PeerId| !f.asked.contains(*p) && !self.banned.contains(*p) && **p != self.me;
        let next = f
            .providers
            .iter()
            .filter(open)
            .find(|p| self.connected.contains(*p))
            .or_else(|| f.providers.iter().find(open))
            .copied();
        let Some(from) = next else { return false };
        f.asked.insert(from);
        f.pending.insert(from);
        f.last_sent = now;
        out.push(OutEvent::Request { hash, kind: f.kind, from });
        true
    }

    /// A blob arrived; false if it was already held (a hedged duplicate).
    pub(super) fn ready(&mut self, hash: Hash) -> bool {
        self.fetches.remove(&hash);
        self.unvouched_unserved.remove(&hash);
        self.have.insert(hash)
    }

    /// One request failed: ask the next provider, wait to retry, or give up.
    /// `not_held`: the provider answered that it does not hold the blob;
    /// once every provider of a private blob said so, its fetch ends at
    /// once (its makers are the only ones meant to hold it).
    pub(super) fn failed(
        &mut self,
        hash: Hash,
        from: PeerId,
        banned: bool,
        not_held: bool,
        now: Time,
    ) -> (Failed, Vec<OutEvent>) {
        if banned {
            self.banned.insert(from);
        }
        let mut out = Vec::new();
        let Some(f) = self.fetches.get_mut(&hash) else { return (Failed::Continuing, out) };
        if not_held {
            f.not_held.insert(from);
        }
        if !f.pending.remove(&from) || !f.pending.is_empty() || self.ask_next(hash, now, &mut out) {
            return (Failed::Continuing, out);
        }
        // Every provider of this attempt failed.
        let Some(f) = self.fetches.get_mut(&hash) else { return (Failed::Continuing, out) };
        if f.unvouched {
            return (Failed::GaveUp(self.give_up_unvouched(hash, now)), out);
        }
        let max = if private(f.kind) { REVIEW_ATTEMPTS } else { self.max_attempts };
        // A private blob that every provider says it does not hold is given
        // up at once (its maker is the only one meant to hold it).
        let disowned = private(f.kind) && f.providers.iter().all(|p| f.not_held.contains(p));
        if f.attempt < max && !disowned {
            f.retry_at = Some(now + self.retry);
            return (Failed::Continuing, out);
        }
        (Failed::GaveUp(self.give_up(hash)), out)
    }

    /// An unvouched id that its listers did not serve: not asked for again
    /// for [`UNSERVED_FOR`], and counted against each lister.
    fn give_up_unvouched(&mut self, hash: Hash, now: Time) -> GivenUp {
        let f = self.fetches.remove(&hash);
        let (providers, disowned) =
            f.map_or_else(|| (Vec::new(), Vec::new()), |f| (f.providers, f.not_held.into_iter().collect()));
        self.unvouched_unserved.retain(|_, at| now < *at + UNSERVED_FOR);
        self.unserved_listers.retain(|_, (_, since)| now < *since + UNSERVED_FOR);
        if self.unvouched_unserved.len() >= MAX_UNSERVED_ENTRIES {
            self.unvouched_unserved.pop_first();
        }
        self.unvouched_unserved.insert(hash, now);
        for p in &providers {
            if self.unserved_listers.len() >= MAX_UNSERVED_ENTRIES && !self.unserved_listers.contains_key(p) {
                self.unserved_listers.pop_first();
            }
            let e = self.unserved_listers.entry(*p).or_insert((0, now));
            e.0 += 1;
            e.1 = now;
        }
        GivenUp { hash, kind: BlobKind::Manifest, providers, disowned }
    }

    fn give_up(&mut self, hash: Hash) -> GivenUp {
        let (kind, providers, disowned) = self.fetches.remove(&hash).map_or_else(
            || (BlobKind::Contribution, Vec::new(), Vec::new()),
            |f| (f.kind, f.providers, f.not_held.into_iter().collect()),
        );
        if kind == BlobKind::Manifest {
            if self.unavailable.len() >= MAX_UNAVAILABLE {
                self.unavailable.clear();
            }
            self.unavailable.insert(hash);
        }
        GivenUp { hash, kind, providers, disowned }
    }

    /// Whether `p` served wrong bytes (it is never asked again).
    pub(super) fn is_banned(&self, p: &PeerId) -> bool {
        self.banned.contains(p)
    }

    /// Starts due attempts and hedges slow requests. `active` are the peers
    /// that hold the current state: each of them may have any blob of it.
    /// Returns the requests to send and the blobs given up (an attempt with
    /// nobody left to ask).
    pub(super) fn poll(&mut self, now: Time, active: &[PeerId], hedged: &mut u64) -> (Vec<OutEvent>, Vec<GivenUp>) {
        let mut out = Vec::new();
        let mut gave_up = Vec::new();
        let hashes: Vec<Hash> = self.fetches.keys().copied().collect();
        for hash in hashes {
            let Some(f) = self.fetches.get_mut(&hash) else { continue };
            if f.retry_at.is_some_and(|t| t <= now) {
                // A new attempt: everyone again, starting with another provider.
                f.retry_at = None;
                f.attempt += 1;
                f.asked.clear();
                f.widened = false;
                widen(f, active);
                if f.providers.len() > 1 {
                    f.providers.rotate_left(1);
                }
                if !self.ask_next(hash, now, &mut out) {
                    let max = self
                        .fetches
                        .get(&hash)
                        .map_or(0, |f| if private(f.kind) { REVIEW_ATTEMPTS } else { self.max_attempts });
                    if f_attempt(&self.fetches, &hash) >= max {
                        gave_up.push(self.give_up(hash));
                    } else {
                        self.fetches.entry(hash).and_modify(|f| f.retry_at = Some(now + self.retry));
                    }
                }
            } else if !f.pending.is_empty() && now >= f.last_sent + self.hedge {
                widen(f, active);
                f.last_sent = now;
                if self.ask_next(hash, now, &mut out) {
                    *hedged += 1;
                }
            }
        }
        (out, gave_up)
    }

    /// When [`Fetcher::poll`] has work: the next retry or hedge.
    pub(super) fn next_timeout(&self) -> Option<Time> {
        self.fetches
            .values()
            .filter_map(|f| match f.retry_at {
                Some(t) => Some(t),
                None if !f.pending.is_empty() => Some(f.last_sent + self.hedge),
                None => None,
            })
            .min()
    }
}

fn f_attempt(fetches: &BTreeMap<Hash, Fetch>, hash: &Hash) -> u32 {
    fetches.get(hash).map_or(0, |f| f.attempt)
}

/// Adds the active peers as providers of a public, vouched blob, once per
/// attempt: each of them may hold any blob of the current state.
fn widen(f: &mut Fetch, active: &[PeerId]) {
    if !private(f.kind) && !f.unvouched && !f.widened {
        f.widened = true;
        add_providers(f, active.to_vec());
    }
}

/// Appends the providers not listed yet. With a set of those listed, not a
/// scan of the list per provider: a fetch retried with every active peer
/// cost active x providers comparisons per hedge, quadratic in a flood of
/// fresh keys (issue 13 item 4).
fn add_providers(f: &mut Fetch, providers: Vec<PeerId>) {
    if providers.is_empty() {
        return;
    }
    let mut listed: BTreeSet<PeerId> = f.providers.iter().copied().collect();
    for p in providers {
        if listed.insert(p) {
            f.providers.push(p);
        }
    }
}

#[cfg(test)]
mod tests;
