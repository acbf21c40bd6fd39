//! The DiLoCo round state machine of one peer.
//!
//! Driven by [`Peer::handle`]: an [`InEvent`] and the current time in, the
//! [`OutEvent`]s the node must carry out. [`Peer::next_timeout`] says when
//! the machine next wants an [`InEvent::Tick`] (the node sleeps until then,
//! the simulator jumps its clock there). A round `r`, as one peer sees it:
//!
//! 1. `Training`: the node runs H inner steps from the round's state and
//!    answers `TrainingDone` with the hash of its encoded pseudo-gradient.
//! 2. `Gathering`: the peer announces its contribution and fetches everybody
//!    else's. The aggregator (the first of the round's candidates, ranked by
//!    `BLAKE3(run, round, peer)`) publishes a signed manifest once every
//!    active peer has announced and been fetched, or at the round deadline;
//!    candidate `k` takes over at `deadline + k * aggregator_timeout`.
//! 3. `Collecting` / `Applying`: with a manifest, the peer fetches the blobs
//!    it lacks and the node applies exactly the manifest's set, in order.
//!
//! A peer with no state (late joiner) waits for a manifest, fetches the state
//! blob it names (the state at the start of that round), applies the manifest
//! and contributes from the next round on.
//!
//! The peer's state is split by concern: [`members`] (who is there),
//! [`fetch`] (which blobs it holds and asks for), [`history`] (what it
//! applied), the rounds' announcements and manifests, and the rules that
//! count peers ([`quorum`]).

mod aggregate;
mod checks;
mod deadline;
mod fetch;
mod history;
mod members;
mod progress;
pub mod quorum;
mod receive;
mod reviews;
mod sync;
mod types;

pub use crate::message::{Manifest, ManifestEntry};
pub use deadline::Deadline;
pub use history::{RECENT, Span};
pub use types::*;

use crate::envelope::{DropReason, Envelope};
use crate::id::{Hash, Keypair, PeerId};
use crate::ledger::Ledger;
use crate::message::{AppliedManifest, Contribution, Message, Signature, SignedFinding, Status};
use crate::time::Time;
use fetch::Fetcher;
use history::History;
use members::{MAX_MEMBERS, Members};
use reviews::Reviews;
use std::collections::BTreeMap;

/// Most entries one manifest may hold (each quotes a signed announcement,
/// ~230 bytes: 256 fit in one envelope).
pub const MAX_MANIFEST_ENTRIES: usize = 256;
/// Rounds ahead of our own that we keep messages for.
const LOOKAHEAD: u64 = 64;
/// A hello is acted on within this long (hellos arriving together are acted
/// on together).
const HELLO_POLL_DELAY: Time = 20;

/// A manifest as received: who signed it, what it says, and its id (the
/// BLAKE3 of its signed envelope).
#[derive(Clone, Debug)]
struct KnownManifest {
    aggregator: PeerId,
    manifest: Manifest,
    id: Hash,
}

/// A manifest of another history than ours (a healed partition, a liar).
#[derive(Clone, Debug)]
struct Foreign {
    round: u64,
    known: KnownManifest,
}

/// A contribution as announced: what, and the announcer's signature (which
/// manifest entries quote).
#[derive(Clone, Copy, Debug)]
struct Announced {
    contribution: Contribution,
    signature: Signature,
}

#[derive(Clone, Debug, Default)]
struct RoundData {
    /// Announced contributions by peer.
    contributions: BTreeMap<PeerId, Announced>,
    manifest: Option<KnownManifest>,
    /// Other valid manifests for the round (another history's), kept so a
    /// syncing peer can pick the one a quorum confirms.
    alternatives: Vec<KnownManifest>,
}

impl RoundData {
    fn manifests(&self) -> impl Iterator<Item = &KnownManifest> {
        self.manifest.iter().chain(self.alternatives.iter())
    }
}

/// Our hellos: when the next is due and what the last one said.
#[derive(Clone, Debug)]
struct Hellos {
    next: Time,
    seq: u64,
    last_status: Status,
}

/// The state machine of one peer.
#[derive(Debug)]
pub struct Peer {
    cfg: Config,
    key: Keypair,
    me: PeerId,
    phase: Phase,
    round: u64,
    /// The state at the start of `round`.
    state: Hash,
    round_started: Time,
    members: Members,
    fetcher: Fetcher,
    history: History,
    reviews: Reviews,
    ledger: Ledger,
    rounds: BTreeMap<u64, RoundData>,
    /// The latest manifest seen from another history.
    foreign: Option<Foreign>,
    /// Aggregators whose manifest of a round named a blob nobody served:
    /// not candidates of that round any more, and no voice for their
    /// history (the last `STANDING_ROUNDS` rounds are kept).
    withheld: BTreeMap<u64, std::collections::BTreeSet<PeerId>>,
    /// When we went back to gathering a round after giving up its manifest:
    /// the candidates' turns count from then.
    regathered: Option<(u64, Time)>,
    hellos: Hellos,
    /// The round whose state we synced to (we do not contribute to it).
    synced_round: Option<u64>,
    /// A checkpoint the node resumed from: (round applied, state after it).
    resumed: Option<(u64, Hash)>,
    /// Rounds up to this one were signed for in an earlier life: this peer
    /// neither contributes to nor aggregates them again.
    sit_out: u64,
    /// The last round this peer announced a contribution for, in this life:
    /// after a switch to another history it does not announce a second one.
    contributed: u64,
    deadline: Deadline,
    /// When a finishing peer leaves.
    finish_at: Time,
    /// A poll is due by then (set by hellos, which are acted on in batches).
    poll_at: Option<Time>,
    stats: Stats,
    out: Vec<OutEvent>,
    /// The time of the event being handled.
    now: Time,
}

impl Peer {
    /// A peer with no state yet; it starts in [`Phase::Waiting`].
    pub fn new(cfg: Config, key: Keypair) -> Peer {
        let me = key.peer_id();
        let deadline = Deadline::new(cfg.min_round, cfg.round_timeout, cfg.deadline_k);
        let fetcher = Fetcher::new(me, cfg.fetch_retry, cfg.max_fetch_attempts, cfg.fetch_hedge);
        Peer {
            ledger: Ledger::new(cfg.ledger.clone()).with_review(cfg.verify_rate, cfg.referees),
            state: cfg.genesis,
            cfg,
            me,
            key,
            phase: Phase::Waiting,
            round: 0,
            round_started: 0,
            members: Members::default(),
            fetcher,
            history: History::default(),
            reviews: Reviews::default(),
            rounds: BTreeMap::new(),
            foreign: None,
            withheld: BTreeMap::new(),
            regathered: None,
            hellos: Hellos { next: 0, seq: 0, last_status: Status::Waiting },
            synced_round: None,
            resumed: None,
            sit_out: 0,
            contributed: 0,
            deadline,
            finish_at: 0,
            poll_at: None,
            stats: Stats::default(),
            out: Vec::new(),
            now: 0,
        }
    }

    /// The ledger of the manifests applied here.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Restores a ledger rebuilt from the manifests a node kept (on restart).
    pub fn set_ledger(&mut self, ledger: Ledger) {
        self.ledger = ledger;
    }

    /// This peer's id.
    pub fn id(&self) -> PeerId {
        self.me
    }
    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }
    /// The round being worked on (0 before the first).
    pub fn round(&self) -> u64 {
        self.round
    }
    /// The state hash at the start of the current round.
    pub fn state(&self) -> Hash {
        self.state
    }
    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    /// Peers heard from recently, not counting ourselves.
    pub fn members(&self) -> usize {
        self.members.len()
    }
    /// Records a blob the node already holds (e.g. the genesis state).
    pub fn add_local_blob(&mut self, hash: Hash) {
        self.fetcher.hold(hash);
    }
    /// The node restored a checkpoint: the state after `round` is `state`
    /// (a local blob). A peer that resumes after the run's last round
    /// reports the run over and leaves; any other syncs as usual.
    pub fn resume(&mut self, round: u64, state: Hash) {
        self.fetcher.hold(state);
        self.resumed = Some((round, state));
    }

    /// Starts this peer's hello counter at `base` (the node passes its clock
    /// in microseconds): a restarted peer's messages must count on from its
    /// last life's, or the others drop them as replays.
    pub fn start_seq(&mut self, base: u64) {
        self.hellos.seq = self.hellos.seq.max(base);
    }

    /// This peer signed a contribution or manifest for `round` in an earlier
    /// life (the node persisted [`OutEvent::Signing`]): it takes no part in
    /// rounds up to `round` (a second, different signature for one round is
    /// an equivocation, and gets a peer excluded).
    pub fn sit_out(&mut self, round: u64) {
        self.sit_out = self.sit_out.max(round);
    }

    /// Contributors of the rounds an earlier life of this peer applied,
    /// with the first and last round of each (the node keeps them in its run dir):
    /// they vouch for a history here from the start, so a restarted peer
    /// does not sync to whatever a majority of fresh keys confirms (issue
    /// 13 item 2). Only the last 64 rounds of the record count.
    pub fn remember_contributors(&mut self, record: impl IntoIterator<Item = (PeerId, Span)>) {
        self.history.remember(record);
    }

    /// Peers the user named to trust (`swarm join --trust`), the trust
    /// anchor of a joiner that knows nobody: only they (and, once it
    /// applied rounds, the peers it saw contribute) confirm a manifest to
    /// sync to, whatever the head count; ids they list are fetched first;
    /// they get in past the member cap; a waiting peer takes the run as over
    /// only when one of them (or a peer it saw contribute) left after its
    /// last round; and before it applied a round it starts round 1 only
    /// with a trusted peer that waits too.
    pub fn trust(&mut self, peers: impl IntoIterator<Item = PeerId>) {
        self.history.trust(peers);
    }

    /// Peers excluded earlier (a persisted ban): their messages and
    /// contributions are refused from the start.
    pub fn exclude(&mut self, peers: impl IntoIterator<Item = PeerId>) {
        self.reviews.excluded.extend(peers);
    }

    /// Whether the peer resumed after the run's last round: there is nothing
    /// left to join (the first event reports [`OutEvent::RunOver`]).
    pub fn resumed_after_the_end(&self) -> bool {
        self.resumed.is_some_and(|(round, _)| round >= self.cfg.last_round)
    }

    /// The earliest time at which the machine wants an [`InEvent::Tick`].
    pub fn next_timeout(&self) -> Time {
        let mut t = [Some(self.hellos.next), self.poll_at, self.fetcher.next_timeout()]
            .into_iter()
            .flatten()
            .chain(self.members.next_expiry(self.cfg.peer_ttl))
            .min()
            .unwrap_or(Time::MAX);
        match self.phase {
            Phase::Gathering(r) => {
                if let Some(at) = self.aggregator_time(r) {
                    t = t.min(at);
                }
            }
            // The moment a slow collect may count as behind (once).
            Phase::Collecting(_) if self.round_started + self.cfg.min_round > self.now => {
                t = t.min(self.round_started + self.cfg.min_round)
            }
            Phase::Finishing(_) => t = t.min(self.finish_at),
            // A peer heard of only just may tip the start from genesis once
            // it settles.
            Phase::Waiting => {
                if let Some(at) = self.members.next_settled(self.now, self.settle_time()) {
                    t = t.min(at);
                }
            }
            Phase::Done => t = Time::MAX,
            _ => {}
        }
        // Overdue work (a hello, a retry) is done at once.
        t.max(self.now + 1)
    }

    /// Feeds one event; returns what the node must do.
    pub fn handle(&mut self, ev: InEvent, now: Time) -> Vec<OutEvent> {
        self.now = now;
        if self.phase == Phase::Done {
            if let InEvent::Gossip(_) = ev {
                self.out.push(OutEvent::Verdict(Verdict::Ignore(None)));
            }
            return std::mem::take(&mut self.out);
        }
        match ev {
            InEvent::Tick => {}
            InEvent::Gossip(g) => {
                let hello = Envelope::is_hello(&g.bytes);
                let verdict = self.on_gossip(&g.bytes, g.source, now);
                self.out.push(OutEvent::Verdict(verdict));
                if verdict != Verdict::Accept {
                    return std::mem::take(&mut self.out);
                }
                // Hellos only update membership; a poll acts on them shortly
                // (a burst of hellos costs one poll, not one each).
                if hello {
                    let at = now + HELLO_POLL_DELAY;
                    self.poll_at = Some(self.poll_at.map_or(at, |t| t.min(at)));
                    return std::mem::take(&mut self.out);
                }
            }
            InEvent::TrainingDone { round, contribution } => self.on_trained(round, contribution),
            InEvent::BlobReady(hash) => self.on_blob(hash),
            InEvent::RequestFailed { hash, from, why } => self.on_request_failed(hash, from, why),
            InEvent::BlobLost(hash) => {
                self.fetcher.lose(&hash);
                if let Phase::Applying(r) = self.phase {
                    self.collect(r);
                }
            }
            InEvent::Chain { hash, leaves } => self.on_chain(hash, leaves),
            InEvent::Checked { manifest, contributor, fault } => self.on_checked(manifest, contributor, fault),
            InEvent::Connected(p) => self.fetcher.connected(p, true),
            InEvent::Disconnected(p) => self.fetcher.connected(p, false),
            InEvent::Applied { round, state } => self.on_applied(round, state, now),
            InEvent::StateLoaded { round } => self.on_loaded(round, now),
            InEvent::Shutdown => self.leave(),
        }
        if self.phase != Phase::Done {
            self.poll(now);
        }
        std::mem::take(&mut self.out)
    }

    /// Signs and sends; returns the signature.
    fn broadcast(&mut self, round: u64, msg: &Message) -> Option<Signature> {
        let bytes = Envelope::seal(&self.key, self.cfg.run, round, msg).ok()?;
        let sig = Envelope::open(&bytes).ok().map(|o| o.signature);
        self.out.push(OutEvent::Broadcast(bytes));
        sig
    }

    fn fetch(&mut self, hash: Hash, kind: BlobKind, providers: Vec<PeerId>) {
        let out = self.fetcher.fetch(hash, kind, providers, self.now);
        self.stats.requests += out.len() as u64;
        self.out.extend(out);
    }

    fn status(&self) -> Status {
        match self.phase {
            Phase::Waiting => Status::Waiting,
            Phase::Syncing(_) => Status::Syncing,
            _ if self.synced_round == Some(self.round) => Status::Syncing,
            _ => Status::Active,
        }
    }

    fn leave(&mut self) {
        let recent = self.history.recent();
        self.hellos.seq += 1;
        let _ = self.broadcast(self.round, &Message::Leave { seq: self.hellos.seq, recent });
        self.phase = Phase::Done;
        self.out.push(OutEvent::Finished);
    }

    /// Whether this peer holds the state of its current round.
    fn holds_state(&self) -> bool {
        matches!(
            self.phase,
            Phase::Training(_) | Phase::Gathering(_) | Phase::Collecting(_) | Phase::Applying(_) | Phase::Finishing(_)
        )
    }

    /// Asks the node to keep (and serve) a manifest envelope.
    fn keep(&mut self, bytes: &[u8]) {
        self.out.push(OutEvent::KeepBlob { hash: Hash::of(bytes), bytes: bytes.to_vec() });
    }

    /// Whether a manifest with this envelope hash is known.
    fn knows_manifest(&self, id: &Hash) -> bool {
        self.rounds.values().any(|d| d.manifests().any(|k| k.id == *id))
            || self.foreign.as_ref().is_some_and(|f| f.known.id == *id)
            || self.history.lists_id(id)
    }

    fn manifest_of(&self, round: u64) -> Option<&KnownManifest> {
        self.rounds.get(&round).and_then(|d| d.manifest.as_ref())
    }

    fn poll(&mut self, now: Time) {
        self.poll_at = None;
        self.say_hello(now);
        self.members.expire(now, self.cfg.peer_ttl);
        let active = self.members.active();
        let (requests, gave_up) = self.fetcher.poll(now, &active, &mut self.stats.hedged_requests);
        self.stats.requests += requests.len() as u64;
        self.out.extend(requests);
        for g in gave_up {
            self.on_given_up(g);
        }
        // Not while the node applies a round: it holds the model state then,
        // and a sync must wait for it to come back (checked on the next poll).
        let applying = matches!(self.phase, Phase::Applying(_));
        if self.holds_state() && !applying && (self.on_minority_fork() || self.consider_foreign()) {
            return self.poll_waiting(now);
        }
        if let Phase::Finishing(_) = self.phase
            && now >= self.finish_at
        {
            return self.leave();
        }
        self.check_behind(now);
        self.repair_manifests();
        self.run_ready_checks();
        match self.phase {
            Phase::Waiting => self.poll_waiting(now),
            Phase::Gathering(r) => self.poll_gathering(r, now),
            Phase::Collecting(r) => self.apply_when_collected(r),
            _ => {}
        }
    }

    /// Hello on schedule, and at once when our status changes (a peer that
    /// just synced must be expected in the very next round).
    fn say_hello(&mut self, now: Time) {
        let status = self.status();
        if now < self.hellos.next && status == self.hellos.last_status {
            return;
        }
        self.hellos.last_status = status;
        self.hellos.seq += 1;
        let msg = Message::Hello { status, seq: self.hellos.seq, recent: self.history.recent() };
        let _ = self.broadcast(self.round, &msg);
        self.hellos.next = now + self.cfg.hello_interval;
    }

    /// Most active peers are past our round: we missed its manifest (or,
    /// collecting for longer than the shortest round, its blobs are slow to
    /// come and the swarm moved on two rounds): sync to where they are.
    fn check_behind(&mut self, now: Time) {
        let behind = match self.phase {
            Phase::Training(r) | Phase::Gathering(r) => Some(r),
            Phase::Collecting(r) if now >= self.round_started + self.cfg.min_round => Some(r + 1),
            _ => None,
        };
        let Some(r) = behind else { return };
        // Heads with standing only (see `round_is_closed`). With nobody's
        // standing known (round 1, just synced), every peer present counts,
        // and a peer counts as ahead only with a manifest to show that we
        // have not given up on: one peer claiming a later round must not
        // send everyone back to waiting (issue 13 item 1).
        let (active, ahead) = if self.history.has_standing() {
            let counted =
                |p: &PeerId, i: &members::PeerInfo| i.is_active() && self.history.counts(p) && !self.withholds(p);
            let active = self.members.iter().filter(|(p, i)| counted(p, i)).count();
            (active, self.members.iter().filter(|(p, i)| counted(p, i) && i.round > r).count())
        } else {
            let shows = |i: &members::PeerInfo| i.recent.iter().any(|m| !self.fetcher.is_unavailable(&m.id));
            let present = self.members.iter().filter(|(_, i)| i.status != Status::Syncing).count();
            let ahead =
                |p: &PeerId, i: &members::PeerInfo| i.is_active() && i.round > r && shows(i) && !self.withholds(p);
            (present, self.members.iter().filter(|(p, i)| ahead(p, i)).count())
        };
        // A round that peers with standing closed (more than a third of
        // them are past it) is not ours to publish, and its manifest should
        // come; when it has not come by the deadline plus two aggregator
        // timeouts, we missed it: sync as the comment of `round_is_closed`
        // says. Without this, between a third and a half of the peers past
        // our round left us gathering for ever (a healed even split whose
        // other side ran on: it ended the run on two histories). Only peers
        // past our round that show a manifest of it or later that we have
        // not given up on count for this: a peer with standing that just
        // claims a later round closes the round for us (a stall), but must
        // not send us back to waiting. (And a peer that applied rounds never
        // starts the run over from genesis: see `poll_waiting`.)
        let shows_past = |i: &members::PeerInfo| {
            i.round > r && i.recent.iter().any(|m| m.round >= r && !self.fetcher.is_unavailable(&m.id))
        };
        let closed_long_ago = matches!(self.phase, Phase::Gathering(_))
            && now >= self.round_started + self.deadline.current() + 2 * self.cfg.aggregator_timeout
            && self.round_is_closed(r)
            && self
                .members
                .iter()
                .any(|(p, i)| i.is_active() && self.history.counts(p) && !self.withholds(p) && shows_past(i));
        if quorum::is_behind(ahead, active) || closed_long_ago {
            self.stats.resyncs += 1;
            self.phase = Phase::Waiting;
        }
    }
}

/// The ranking key of a peer as aggregator candidate of a round.
pub fn rank_key(run: &Hash, round: u64, peer: &PeerId) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&run.0);
    h.update(&round.to_le_bytes());
    h.update(&peer.0);
    *h.finalize().as_bytes()
}

/// Entries sorted by peer, each the contributor's own announcement for
/// `round` (signature checked), trained from the manifest's state.
fn manifest_is_well_formed(run: Hash, round: u64, m: &Manifest) -> bool {
    !m.entries.is_empty()
        && m.entries.len() <= MAX_MANIFEST_ENTRIES
        && m.entries.windows(2).all(|w| w[0].peer < w[1].peer)
        && m.excluded.len() <= MAX_MANIFEST_ENTRIES
        && m.excluded.windows(2).all(|w| w[0] < w[1])
        && m.checks.len() <= checks::MAX_CHECKS
        && m.checks.iter().all(|c| c.finding.finding.fault.is_none() && c.round < round)
        && m.entries.iter().all(|e| {
            e.samples() > 0
                && e.contribution.base_state == m.state
                && Envelope::verify_detached(run, round, e.peer, &Message::Contribution(e.contribution), &e.signature)
        })
}

fn drop_reason_verdict(why: DropReason) -> Verdict {
    match why {
        // Old news that an honest peer may relay.
        // A crowded hello may be an honest newcomer's: not its fault.
        DropReason::StaleRound | DropReason::Replayed | DropReason::Crowded => Verdict::Ignore(Some(why)),
        _ => Verdict::Reject(why),
    }
}

fn applied(round: u64, id: Hash) -> AppliedManifest {
    AppliedManifest { round, id }
}
