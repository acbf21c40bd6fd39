//! The DiLoCo round state machine of one peer.
//!
//! Driven by [`Peer::handle`]: an [`InEvent`] and the current time in, the
//! [`OutEvent`]s the node must carry out. A round `r`, as one peer sees it:
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

mod aggregate;
mod deadline;
mod fetch;
mod receive;
mod sync;
mod types;

pub use deadline::Deadline;
pub use types::*;

use crate::Time;
use crate::envelope::{DropReason, Envelope, Message, Status};
use crate::id::{Hash, Keypair, PeerId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Most entries one manifest may hold.
pub const MAX_MANIFEST_ENTRIES: usize = 1024;
/// Rounds ahead of our own that we keep messages for.
const LOOKAHEAD: u64 = 64;
/// Applied manifests a peer lists in its hellos.
pub const RECENT: usize = 4;
/// Applied manifests a peer remembers to recognise another history.
const HISTORY: usize = 64;
/// Finished peers remembered.
const MAX_FINISHED: usize = 1024;
/// Unservable manifest ids remembered.
const MAX_UNAVAILABLE: usize = 256;

#[derive(Clone, Debug)]
struct PeerInfo {
    status: Status,
    round: u64,
    last_seen: Time,
    /// The manifests it applied last (from its hellos).
    recent: Vec<(u64, Hash)>,
}

#[derive(Clone, Debug, Default)]
struct RoundData {
    /// Announced contributions: (blob, samples, the state they trained from).
    contributions: BTreeMap<PeerId, (Hash, u64, Hash)>,
    manifest: Option<(PeerId, Manifest, Hash)>,
    /// Other valid manifests for the round (another history's), kept so a
    /// syncing peer can pick the one a quorum confirms.
    alternatives: Vec<(PeerId, Manifest, Hash)>,
}

#[derive(Clone, Debug)]
struct Fetching {
    kind: BlobKind,
    providers: Vec<PeerId>,
    attempts: u32,
    retry_at: Option<Time>,
    /// When the node was last asked for it.
    asked_at: Time,
    /// Providers the node was given so far (a prefix of `providers`).
    asked: usize,
}

/// The state machine of one peer.
#[derive(Debug)]
pub struct Peer {
    cfg: Config,
    key: Keypair,
    me: PeerId,
    phase: Phase,
    round: u64,
    state: Hash,
    round_started: Time,
    peers: BTreeMap<PeerId, PeerInfo>,
    rounds: BTreeMap<u64, RoundData>,
    have: BTreeSet<Hash>,
    fetching: BTreeMap<Hash, Fetching>,
    next_hello: Time,
    seq: u64,
    /// The round whose state we synced to (we do not contribute to it).
    synced_round: Option<u64>,
    /// Contributors of the last manifest we applied: expected again.
    last_contributors: BTreeSet<PeerId>,
    /// Ids of the last manifests we applied, newest last.
    recent_applied: VecDeque<(u64, Hash)>,
    /// A longer local record of applied manifests, to recognise another
    /// history in peers' hellos.
    history: BTreeMap<u64, Hash>,
    /// Peers that left recently: they still confirm manifests for
    /// stragglers, and may still serve blobs for a moment.
    departed: BTreeMap<PeerId, PeerInfo>,
    /// Active peers that left after the last round (kept after `departed`
    /// forgets them): a peer still waiting when nobody is left knows the
    /// run is over.
    finished: BTreeSet<PeerId>,
    /// Manifest ids that no provider could serve.
    unavailable: BTreeSet<Hash>,
    /// The latest manifest seen from another history (round, signer, it, id).
    foreign: Option<(u64, PeerId, Manifest, Hash)>,
    deadline: Deadline,
    /// When a finishing peer leaves.
    finish_at: Time,
    /// The status of our last hello.
    last_status: Status,
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
        Peer {
            state: cfg.genesis,
            cfg,
            me,
            key,
            phase: Phase::Waiting,
            round: 0,
            round_started: 0,
            peers: BTreeMap::new(),
            rounds: BTreeMap::new(),
            have: BTreeSet::new(),
            fetching: BTreeMap::new(),
            next_hello: 0,
            seq: 0,
            synced_round: None,
            last_contributors: BTreeSet::new(),
            recent_applied: VecDeque::new(),
            history: BTreeMap::new(),
            foreign: None,
            departed: BTreeMap::new(),
            finished: BTreeSet::new(),
            unavailable: BTreeSet::new(),
            deadline,
            finish_at: 0,
            last_status: Status::Waiting,
            stats: Stats::default(),
            out: Vec::new(),
            now: 0,
        }
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
        self.peers.len()
    }
    /// Known peer ids (for providers lists and logs).
    pub fn peer_ids(&self) -> Vec<PeerId> {
        self.peers.keys().copied().collect()
    }
    /// Blobs being fetched: (hash, attempts, retry time if waiting to retry).
    pub fn pending_fetches(&self) -> Vec<(Hash, u32, Option<Time>)> {
        self.fetching.iter().map(|(h, f)| (*h, f.attempts, f.retry_at)).collect()
    }
    /// Records a blob the node already holds (e.g. the genesis state).
    pub fn add_local_blob(&mut self, hash: Hash) {
        self.have.insert(hash);
    }
    /// The earliest time at which the machine wants a [`InEvent::Tick`].
    pub fn next_timeout(&self) -> Time {
        let mut t = self.next_hello;
        for f in self.fetching.values() {
            t = t.min(f.retry_at.unwrap_or(f.asked_at + self.cfg.fetch_hedge));
        }
        if let Phase::Gathering(_) = self.phase {
            t = t.min(self.round_started + self.deadline.current());
        }
        t
    }

    /// The current round deadline (adaptive), from the round's start.
    pub fn round_deadline(&self) -> Time {
        self.deadline.current()
    }

    /// Feeds one event; returns what the node must do.
    pub fn handle(&mut self, ev: InEvent, now: Time) -> Vec<OutEvent> {
        self.now = now;
        if self.phase != Phase::Done {
            match ev {
                InEvent::Tick => {}
                InEvent::Gossip(bytes) => {
                    // Hellos only update membership; the next tick acts on it.
                    if self.on_gossip(&bytes, now).is_err() || is_hello(&bytes) {
                        return std::mem::take(&mut self.out);
                    }
                }
                InEvent::TrainingDone { round, hash, samples } => self.on_trained(round, hash, samples),
                InEvent::BlobReady(hash) => self.on_blob(hash),
                InEvent::BlobFailed(hash) => self.on_blob_failed(hash, now),
                InEvent::BlobLost(hash) => {
                    self.have.remove(&hash);
                    if let Phase::Applying(r) = self.phase {
                        self.collect(r);
                    }
                }
                InEvent::Applied { round, state } => self.on_applied(round, state, now),
                InEvent::StateLoaded { round } => self.on_loaded(round, now),
                InEvent::Shutdown => self.leave(),
            }
            if self.phase != Phase::Done {
                self.poll(now);
            }
        }
        std::mem::take(&mut self.out)
    }

    /// Feeds one control message and tells whether it was accepted (the
    /// node forwards accepted messages and rejects the rest). Drops are
    /// counted in [`Stats::dropped`].
    pub fn handle_gossip(&mut self, bytes: &[u8], now: Time) -> Result<Vec<OutEvent>, DropReason> {
        self.now = now;
        if self.phase == Phase::Done {
            return Ok(Vec::new());
        }
        let verdict = self.on_gossip(bytes, now);
        if verdict.is_ok() && !is_hello(bytes) {
            self.poll(now);
        }
        let out = std::mem::take(&mut self.out);
        verdict.map(|()| out)
    }

    fn broadcast(&mut self, round: u64, msg: &Message) {
        if let Ok(bytes) = Envelope::seal(&self.key, self.cfg.run, round, msg) {
            self.out.push(OutEvent::Broadcast(bytes));
        }
    }

    fn drop_msg(&mut self, why: DropReason) -> Result<(), DropReason> {
        *self.stats.dropped.entry(why).or_default() += 1;
        Err(why)
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
        let recent = self.recent_applied.iter().copied().collect();
        self.broadcast(self.round, &Message::Leave { recent });
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
        self.rounds.values().any(|d| d.manifest.iter().chain(d.alternatives.iter()).any(|(_, _, h)| h == id))
            || self.foreign.as_ref().is_some_and(|f| f.3 == *id)
            || self.recent_applied.iter().any(|(_, h)| h == id)
    }

    fn accept_manifest(&mut self, round: u64, aggregator: PeerId, m: Manifest, id: Hash, now: Time) {
        // A manifest of our round that starts from another state belongs to
        // another history: never apply it to ours.
        if self.holds_state() && round == self.round && m.state != self.state {
            self.stats.foreign_manifests += 1;
            self.remember_foreign(round, aggregator, m, id);
            return;
        }
        let holds = self.holds_state() && round <= self.round;
        let data = self.rounds.entry(round).or_default();
        if let Some((_, _, existing)) = &data.manifest {
            if *existing != id {
                self.stats.conflicting_manifests += 1;
                if data.alternatives.len() < 4 && !data.alternatives.iter().any(|(_, _, a)| *a == id) {
                    data.alternatives.push((aggregator, m.clone(), id));
                }
                if holds {
                    self.remember_foreign(round, aggregator, m, id);
                }
            }
            return;
        }
        data.manifest = Some((aggregator, m, id));
        if let Phase::Training(r) | Phase::Gathering(r) = self.phase
            && r == round
        {
            self.deadline.observe(now.saturating_sub(self.round_started));
            self.collect(round);
        }
        // Manifests of later rounds wait in `rounds`; a peer that fell
        // behind notices in `poll` (most peers are past its round) and syncs.
    }

    fn start_sync(&mut self, round: u64) {
        let Some((agg, m, _)) = self.rounds.get(&round).and_then(|d| d.manifest.clone()) else {
            return;
        };
        self.phase = Phase::Syncing(round);
        self.round = round;
        self.foreign = None;
        // Whatever we applied before belongs to a history we are leaving (or
        // is older than this sync): stop advertising it.
        self.recent_applied.clear();
        self.history.clear();
        self.rounds.retain(|r, _| *r >= round);
        if self.have.contains(&m.state) {
            self.out.push(OutEvent::LoadState { round, state: m.state });
        } else {
            let mut providers = vec![agg];
            providers
                .extend(self.active_peers().into_iter().chain(self.departed.keys().copied()).filter(|p| *p != agg));
            self.fetch(m.state, BlobKind::State, providers);
        }
    }

    fn on_loaded(&mut self, round: u64, now: Time) {
        if self.phase != Phase::Syncing(round) {
            return;
        }
        let Some((_, m, _)) = self.rounds.get(&round).and_then(|d| d.manifest.clone()) else {
            return;
        };
        self.state = m.state;
        self.round = round;
        self.round_started = now;
        self.synced_round = Some(round);
        self.collect(round);
    }

    fn collect(&mut self, round: u64) {
        self.phase = Phase::Collecting(round);
        let Some((agg, m, _)) = self.rounds.get(&round).and_then(|d| d.manifest.clone()) else {
            return;
        };
        for e in &m.entries {
            if !self.have.contains(&e.hash) {
                let mut providers = vec![e.peer, agg];
                providers.extend(
                    self.active_peers()
                        .into_iter()
                        .chain(self.departed.keys().copied())
                        .filter(|p| *p != e.peer && *p != agg),
                );
                self.fetch(e.hash, BlobKind::Contribution, providers);
            }
        }
    }

    fn on_trained(&mut self, round: u64, hash: Hash, samples: u64) {
        self.have.insert(hash);
        if self.phase != Phase::Training(round) {
            return; // the round closed without us
        }
        let base_state = self.state;
        self.rounds.entry(round).or_default().contributions.insert(self.me, (hash, samples, base_state));
        self.broadcast(round, &Message::Contribution { hash, samples, base_state });
        self.phase = Phase::Gathering(round);
        // Fetch what others announced while we trained.
        let others: Vec<(PeerId, Hash)> = self.rounds[&round]
            .contributions
            .iter()
            .filter(|(p, (_, _, b))| **p != self.me && *b == base_state)
            .map(|(p, (h, _, _))| (*p, *h))
            .collect();
        for (p, h) in others {
            self.fetch(h, BlobKind::Contribution, vec![p]);
        }
    }

    fn on_applied(&mut self, round: u64, state: Hash, now: Time) {
        if self.phase != Phase::Applying(round) {
            return;
        }
        self.state = state;
        self.have.insert(state);
        self.stats.rounds_applied += 1;
        if let Some((_, m, id)) = self.rounds.get(&round).and_then(|d| d.manifest.as_ref()) {
            self.last_contributors = m.entries.iter().map(|e| e.peer).collect();
            let id = *id;
            self.recent_applied.retain(|(r, _)| *r != round);
            self.history.insert(round, id);
            while self.history.len() > HISTORY {
                self.history.pop_first();
            }
            if self.recent_applied.len() == RECENT {
                self.recent_applied.pop_front();
            }
            self.recent_applied.push_back((round, id));
        }
        if round >= self.cfg.last_round {
            self.phase = Phase::Finishing(round);
            self.finish_at = now + 2 * self.cfg.hello_interval;
            self.next_hello = now;
            return;
        }
        self.start_round(round + 1, now);
    }

    fn start_round(&mut self, round: u64, now: Time) {
        self.round = round;
        self.round_started = now;
        self.rounds.retain(|r, _| *r >= round);
        if let Some((agg, m, id)) = self.rounds.get(&round).and_then(|d| d.manifest.clone()) {
            if m.state == self.state {
                // We are late: the round closed without us. Apply it directly.
                self.collect(round);
                return;
            }
            self.stats.foreign_manifests += 1;
            self.remember_foreign(round, agg, m, id);
            if let Some(d) = self.rounds.get_mut(&round) {
                d.manifest = None;
            }
        }
        self.phase = Phase::Training(round);
        self.out.push(OutEvent::StartTraining { round, base_state: self.state });
        let pending: Vec<(PeerId, Hash)> = self
            .rounds
            .get(&round)
            .map(|d| {
                d.contributions
                    .iter()
                    .filter(|(_, (_, _, b))| *b == self.state)
                    .map(|(p, (h, _, _))| (*p, *h))
                    .collect()
            })
            .unwrap_or_default();
        for (p, h) in pending {
            self.fetch(h, BlobKind::Contribution, vec![p]);
        }
    }

    fn active_peers(&self) -> Vec<PeerId> {
        self.peers.iter().filter(|(_, i)| i.status == Status::Active).map(|(p, _)| *p).collect()
    }

    fn poll(&mut self, now: Time) {
        // Hello on schedule, and at once when our status changes (a peer that
        // just synced must be expected in the very next round).
        if now >= self.next_hello || self.status() != self.last_status {
            self.last_status = self.status();
            self.seq += 1;
            let recent = self.recent_applied.iter().copied().collect();
            let msg = Message::Hello { status: self.status(), seq: self.seq, recent };
            self.broadcast(self.round, &msg);
            self.next_hello = now + self.cfg.hello_interval;
        }
        let ttl = self.cfg.peer_ttl;
        self.peers.retain(|_, i| i.last_seen + ttl >= now);
        self.departed.retain(|_, i| i.last_seen + ttl >= now);
        self.retry_due_fetches(now);
        self.hedge_stalled_fetches(now);
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
        // Most active peers are past our round: we missed its manifest (or,
        // collecting for longer than the shortest round, its blobs are slow
        // to come and the swarm moved on two rounds): sync to where they are.
        let behind = match self.phase {
            Phase::Training(r) | Phase::Gathering(r) => Some(r),
            Phase::Collecting(r) if now >= self.round_started + self.cfg.min_round => Some(r + 1),
            _ => None,
        };
        if let Some(r) = behind {
            let active = self.peers.values().filter(|i| i.status == Status::Active).count();
            let ahead = self.peers.values().filter(|i| i.status == Status::Active && i.round > r).count();
            if active > 0 && ahead * 2 > active {
                self.stats.resyncs += 1;
                self.phase = Phase::Waiting;
            }
        }
        self.repair_manifests();
        match self.phase {
            Phase::Waiting => self.poll_waiting(now),
            Phase::Gathering(r) => self.poll_gathering(r, now),
            Phase::Collecting(r) => {
                let ready = self
                    .rounds
                    .get(&r)
                    .and_then(|d| d.manifest.clone())
                    .filter(|(_, m, _)| m.entries.iter().all(|e| self.have.contains(&e.hash)));
                if let Some((aggregator, manifest, _)) = ready {
                    self.phase = Phase::Applying(r);
                    self.out.push(OutEvent::Apply { round: r, aggregator, manifest });
                }
            }
            _ => {}
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

/// Whether envelope bytes carry a hello (payload tag 0), without decoding.
fn is_hello(bytes: &[u8]) -> bool {
    bytes.get(crate::envelope::HEADER) == Some(&0)
}

fn manifest_is_well_formed(m: &Manifest) -> bool {
    !m.entries.is_empty()
        && m.entries.len() <= MAX_MANIFEST_ENTRIES
        && m.entries.windows(2).all(|w| w[0].peer < w[1].peer)
        && m.entries.iter().all(|e| e.samples > 0)
}
