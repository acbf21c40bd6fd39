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

use crate::Time;
use crate::envelope::{DropReason, Envelope, Message, Status};
use crate::id::{Hash, Keypair, PeerId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Most entries one manifest may hold.
pub const MAX_MANIFEST_ENTRIES: usize = 1024;
/// Rounds ahead of our own that we keep messages for.
const LOOKAHEAD: u64 = 64;

/// One included contribution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// The contributor.
    pub peer: PeerId,
    /// BLAKE3 of its encoded pseudo-gradient.
    pub hash: Hash,
    /// Its sample count (averaging weight).
    pub samples: u64,
}

/// The aggregator's signed decision for a round (the round and aggregator are
/// the envelope's round and sender).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Hash of the state blob (parameters + outer optimizer) at the start of
    /// the round; late joiners fetch it.
    pub state: Hash,
    /// The contributions to apply, ordered by peer id.
    pub entries: Vec<ManifestEntry>,
}

/// Settings of the state machine (from the run spec and the node's flags).
#[derive(Clone, Debug)]
pub struct Config {
    /// The run id.
    pub run: Hash,
    /// Round 1 starts once this many peers (counting ourselves) are present.
    pub min_peers: u32,
    /// Contributions close this long after the peer started the round.
    pub round_timeout: Time,
    /// Each next aggregator candidate waits this much longer.
    pub aggregator_timeout: Time,
    /// Period of hello messages.
    pub hello_interval: Time,
    /// A peer not heard from for this long is no longer a member.
    pub peer_ttl: Time,
    /// Leave after this round is applied.
    pub last_round: u64,
    /// Hash of the initial state (the same for every peer of the run).
    pub genesis: Hash,
    /// Delay before a failed fetch is retried.
    pub fetch_retry: Time,
    /// Fetch attempts before giving up on a blob.
    pub max_fetch_attempts: u32,
}

impl Config {
    /// Defaults for the timers, given the spec's values.
    pub fn new(run: Hash, genesis: Hash, spec: &crate::RunSpec, last_round: u64) -> Config {
        Config {
            run,
            min_peers: spec.min_peers,
            round_timeout: spec.timing.round_timeout_ms,
            aggregator_timeout: spec.timing.aggregator_timeout_ms,
            hello_interval: 500,
            peer_ttl: 5_000,
            last_round,
            genesis,
            fetch_retry: 300,
            max_fetch_attempts: 20,
        }
    }
}

/// Inputs to the state machine.
#[derive(Clone, Debug)]
pub enum InEvent {
    /// Time passed; nothing else happened.
    Tick,
    /// A control message from the network (raw envelope bytes).
    Gossip(Vec<u8>),
    /// The node finished the inner loop of `round` and stored its encoded
    /// pseudo-gradient under `hash`.
    TrainingDone {
        /// The round trained.
        round: u64,
        /// Blob hash of the encoded pseudo-gradient.
        hash: Hash,
        /// Samples behind it.
        samples: u64,
    },
    /// A blob is now in the local store (fetched and verified).
    BlobReady(Hash),
    /// A fetch failed at every provider.
    BlobFailed(Hash),
    /// The node applied the manifest of `round`; `state` is the hash of the
    /// resulting state blob (now in the local store).
    Applied {
        /// The round applied.
        round: u64,
        /// The new state hash.
        state: Hash,
    },
    /// The node loaded the state blob of the manifest of `round`.
    StateLoaded {
        /// The round whose start state was loaded.
        round: u64,
    },
    /// Leave now (Ctrl+C).
    Shutdown,
}

/// What the node must do.
#[derive(Clone, Debug, PartialEq)]
pub enum OutEvent {
    /// Publish these envelope bytes to the run's topic.
    Broadcast(Vec<u8>),
    /// Fetch a blob from any of these peers (in order of preference).
    Fetch {
        /// The blob.
        hash: Hash,
        /// What it is (for accounting).
        kind: BlobKind,
        /// Who should have it.
        providers: Vec<PeerId>,
    },
    /// Run the inner loop of `round` from the current state.
    StartTraining {
        /// The round.
        round: u64,
        /// The state it starts from.
        base_state: Hash,
    },
    /// Load the state blob `state` (the start state of `round`).
    LoadState {
        /// The round.
        round: u64,
        /// The state blob.
        state: Hash,
    },
    /// Apply the manifest of `round`: average the entries' pseudo-gradients
    /// in order, take the outer step, store the new state blob, then answer
    /// [`InEvent::Applied`].
    Apply {
        /// The round.
        round: u64,
        /// Who signed the manifest.
        aggregator: PeerId,
        /// The manifest.
        manifest: Manifest,
    },
    /// The peer has left the run (its last round is applied, or Shutdown).
    Finished,
}

/// What a blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BlobKind {
    /// An encoded pseudo-gradient.
    Contribution,
    /// Parameters + outer-optimizer state.
    State,
}

/// Where this peer is in the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// No state yet: waiting for `min_peers` or for a manifest to sync from.
    Waiting,
    /// Fetching and loading the start state of `round`.
    Syncing(u64),
    /// Inner loop of the round running.
    Training(u64),
    /// Own contribution announced; waiting for the manifest (or making it).
    Gathering(u64),
    /// Manifest known; fetching the blobs it names.
    Collecting(u64),
    /// The node is applying the manifest.
    Applying(u64),
    /// Left the run.
    Done,
}

/// Counters a node shows and tests assert on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Dropped messages by reason.
    pub dropped: BTreeMap<DropReason, u64>,
    /// Manifests this peer published.
    pub manifests_published: u64,
    /// Valid manifests that differed from the one already accepted.
    pub conflicting_manifests: u64,
    /// Times this peer fell back to a state sync.
    pub resyncs: u64,
    /// Rounds applied.
    pub rounds_applied: u64,
}

#[derive(Clone, Debug)]
struct PeerInfo {
    status: Status,
    round: u64,
    last_seen: Time,
}

#[derive(Clone, Debug, Default)]
struct RoundData {
    contributions: BTreeMap<PeerId, (Hash, u64)>,
    manifest: Option<(PeerId, Manifest)>,
}

#[derive(Clone, Debug)]
struct Fetching {
    kind: BlobKind,
    providers: Vec<PeerId>,
    attempts: u32,
    retry_at: Option<Time>,
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
    stats: Stats,
    out: Vec<OutEvent>,
}

impl Peer {
    /// A peer with no state yet; it starts in [`Phase::Waiting`].
    pub fn new(cfg: Config, key: Keypair) -> Peer {
        let me = key.peer_id();
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
            stats: Stats::default(),
            out: Vec::new(),
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
    /// Records a blob the node already holds (e.g. the genesis state).
    pub fn add_local_blob(&mut self, hash: Hash) {
        self.have.insert(hash);
    }
    /// The earliest time at which the machine wants a [`InEvent::Tick`].
    pub fn next_timeout(&self) -> Time {
        let mut t = self.next_hello;
        for f in self.fetching.values() {
            if let Some(r) = f.retry_at {
                t = t.min(r);
            }
        }
        if let Phase::Gathering(_) = self.phase {
            t = t.min(self.round_started + self.cfg.round_timeout);
        }
        t
    }

    /// Feeds one event; returns what the node must do.
    pub fn handle(&mut self, ev: InEvent, now: Time) -> Vec<OutEvent> {
        if self.phase != Phase::Done {
            match ev {
                InEvent::Tick => {}
                InEvent::Gossip(bytes) => {
                    let _ = self.on_gossip(&bytes, now);
                }
                InEvent::TrainingDone { round, hash, samples } => self.on_trained(round, hash, samples),
                InEvent::BlobReady(hash) => self.on_blob(hash),
                InEvent::BlobFailed(hash) => self.on_blob_failed(hash, now),
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
        if self.phase == Phase::Done {
            return Ok(Vec::new());
        }
        let verdict = self.on_gossip(bytes, now);
        if verdict.is_ok() {
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
        self.broadcast(self.round, &Message::Leave);
        self.phase = Phase::Done;
        self.out.push(OutEvent::Finished);
    }

    fn on_gossip(&mut self, bytes: &[u8], now: Time) -> Result<(), DropReason> {
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
            Message::Hello { status, .. } => {
                if far_ahead && status == Status::Active {
                    return self.drop_msg(DropReason::StaleRound);
                }
                self.peers.insert(sender, PeerInfo { status, round, last_seen: now });
            }
            Message::Leave => {
                self.peers.remove(&sender);
            }
            Message::Contribution { hash, samples, .. } => {
                if round < self.round || far_ahead {
                    return self.drop_msg(DropReason::StaleRound);
                }
                if samples == 0 {
                    return self.drop_msg(DropReason::Invalid);
                }
                self.touch(sender, round, now);
                let data = self.rounds.entry(round).or_default();
                if data.contributions.contains_key(&sender) {
                    return Ok(());
                }
                data.contributions.insert(sender, (hash, samples));
                if round == self.round && self.holds_state() {
                    self.fetch(hash, BlobKind::Contribution, vec![sender]);
                }
            }
            Message::Manifest(m) => {
                if round == 0 || far_ahead || (round < self.round && self.holds_state()) {
                    return self.drop_msg(DropReason::StaleRound);
                }
                if !manifest_is_well_formed(&m) {
                    return self.drop_msg(DropReason::Invalid);
                }
                self.touch(sender, round, now);
                self.accept_manifest(round, sender, m);
            }
        }
        Ok(())
    }

    /// A contribution or manifest from `peer` shows it active in `round`.
    fn touch(&mut self, peer: PeerId, round: u64, now: Time) {
        let info = self.peers.entry(peer).or_insert(PeerInfo { status: Status::Active, round, last_seen: now });
        info.last_seen = now;
        info.status = Status::Active;
        info.round = info.round.max(round);
    }

    /// Whether the aggregator of `round` should wait for `peer`'s
    /// contribution: it contributed last round, or says it is active in this
    /// round or the one before, or (round 1) is waiting for the start.
    fn expects(&self, peer: &PeerId, info: &PeerInfo, round: u64) -> bool {
        self.last_contributors.contains(peer)
            || (info.status == Status::Active && info.round + 1 >= round)
            || (info.status == Status::Waiting && round == 1)
    }

    /// Whether this peer holds the state of its current round.
    fn holds_state(&self) -> bool {
        matches!(self.phase, Phase::Training(_) | Phase::Gathering(_) | Phase::Collecting(_) | Phase::Applying(_))
    }

    fn accept_manifest(&mut self, round: u64, aggregator: PeerId, m: Manifest) {
        let data = self.rounds.entry(round).or_default();
        if let Some((_, existing)) = &data.manifest {
            if *existing != m {
                self.stats.conflicting_manifests += 1;
            }
            return;
        }
        data.manifest = Some((aggregator, m));
        match self.phase {
            Phase::Training(r) | Phase::Gathering(r) if r == round => self.collect(round),
            Phase::Training(r) | Phase::Gathering(r) if r < round => {
                // We missed the manifest of our own round: replaying is
                // impossible, so sync from this one.
                self.stats.resyncs += 1;
                self.start_sync(round);
            }
            Phase::Waiting => self.start_sync(round),
            _ => {}
        }
    }

    fn start_sync(&mut self, round: u64) {
        let Some((agg, m)) = self.rounds.get(&round).and_then(|d| d.manifest.clone()) else {
            return;
        };
        self.phase = Phase::Syncing(round);
        self.round = round;
        self.rounds.retain(|r, _| *r >= round);
        if self.have.contains(&m.state) {
            self.out.push(OutEvent::LoadState { round, state: m.state });
        } else {
            let mut providers = vec![agg];
            providers.extend(self.active_peers().into_iter().filter(|p| *p != agg));
            self.fetch(m.state, BlobKind::State, providers);
        }
    }

    fn on_loaded(&mut self, round: u64, now: Time) {
        if self.phase != Phase::Syncing(round) {
            return;
        }
        let Some((_, m)) = self.rounds.get(&round).and_then(|d| d.manifest.clone()) else {
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
        let Some((agg, m)) = self.rounds.get(&round).and_then(|d| d.manifest.clone()) else {
            return;
        };
        for e in &m.entries {
            if !self.have.contains(&e.hash) {
                let mut providers = vec![e.peer, agg];
                providers.extend(self.active_peers().into_iter().filter(|p| *p != e.peer && *p != agg));
                self.fetch(e.hash, BlobKind::Contribution, providers);
            }
        }
    }

    fn fetch(&mut self, hash: Hash, kind: BlobKind, providers: Vec<PeerId>) {
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
        self.fetching.insert(hash, Fetching { kind, providers: providers.clone(), attempts: 1, retry_at: None });
        self.out.push(OutEvent::Fetch { hash, kind, providers });
    }

    fn on_blob(&mut self, hash: Hash) {
        self.fetching.remove(&hash);
        self.have.insert(hash);
        if let Phase::Syncing(round) = self.phase {
            let wanted = self.rounds.get(&round).and_then(|d| d.manifest.as_ref()).map(|(_, m)| m.state);
            if wanted == Some(hash) {
                self.out.push(OutEvent::LoadState { round, state: hash });
            }
        }
    }

    fn on_blob_failed(&mut self, hash: Hash, now: Time) {
        let give_up = match self.fetching.get_mut(&hash) {
            None => return,
            Some(f) if f.attempts >= self.cfg.max_fetch_attempts => true,
            Some(f) => {
                f.retry_at = Some(now + self.cfg.fetch_retry);
                false
            }
        };
        if give_up {
            self.fetching.remove(&hash);
            // A blob we need is gone everywhere: wait for the next manifest
            // and sync its state instead.
            if matches!(self.phase, Phase::Collecting(_) | Phase::Syncing(_)) {
                self.stats.resyncs += 1;
                self.phase = Phase::Waiting;
            }
        }
    }

    fn on_trained(&mut self, round: u64, hash: Hash, samples: u64) {
        self.have.insert(hash);
        if self.phase != Phase::Training(round) {
            return; // the round closed without us
        }
        let base_state = self.state;
        self.rounds.entry(round).or_default().contributions.insert(self.me, (hash, samples));
        self.broadcast(round, &Message::Contribution { hash, samples, base_state });
        self.phase = Phase::Gathering(round);
        // Fetch what others announced while we trained.
        let others: Vec<(PeerId, Hash)> = self.rounds[&round]
            .contributions
            .iter()
            .filter(|(p, _)| **p != self.me)
            .map(|(p, (h, _))| (*p, *h))
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
        self.last_contributors = self
            .rounds
            .get(&round)
            .and_then(|d| d.manifest.as_ref())
            .map(|(_, m)| m.entries.iter().map(|e| e.peer).filter(|p| *p != self.me).collect())
            .unwrap_or_default();
        if round >= self.cfg.last_round {
            self.leave();
            return;
        }
        self.start_round(round + 1, now);
    }

    fn start_round(&mut self, round: u64, now: Time) {
        self.round = round;
        self.round_started = now;
        self.rounds.retain(|r, _| *r >= round);
        let known = self.rounds.get(&round).and_then(|d| d.manifest.as_ref()).is_some();
        if known {
            // We are late: the round closed without us. Apply it directly.
            self.collect(round);
            return;
        }
        self.phase = Phase::Training(round);
        self.out.push(OutEvent::StartTraining { round, base_state: self.state });
        let pending: Vec<(PeerId, Hash)> = self
            .rounds
            .get(&round)
            .map(|d| d.contributions.iter().map(|(p, (h, _))| (*p, *h)).collect())
            .unwrap_or_default();
        for (p, h) in pending {
            self.fetch(h, BlobKind::Contribution, vec![p]);
        }
    }

    fn active_peers(&self) -> Vec<PeerId> {
        self.peers.iter().filter(|(_, i)| i.status == Status::Active).map(|(p, _)| *p).collect()
    }

    /// Aggregator candidates of `round`: active members and ourselves,
    /// ranked by BLAKE3(run, round, peer).
    fn candidates(&self, round: u64) -> Vec<PeerId> {
        let mut c = self.active_peers();
        c.push(self.me);
        c.sort_by_key(|p| rank_key(&self.cfg.run, round, p));
        c
    }

    fn poll(&mut self, now: Time) {
        if now >= self.next_hello {
            self.seq += 1;
            let msg = Message::Hello { status: self.status(), seq: self.seq };
            self.broadcast(self.round, &msg);
            self.next_hello = now + self.cfg.hello_interval;
        }
        let ttl = self.cfg.peer_ttl;
        self.peers.retain(|_, i| i.last_seen + ttl >= now);
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
                let providers = f.providers.clone();
                let kind = f.kind;
                self.out.push(OutEvent::Fetch { hash: h, kind, providers });
            }
        }
        match self.phase {
            Phase::Waiting => self.poll_waiting(now),
            Phase::Gathering(r) => self.poll_gathering(r, now),
            Phase::Collecting(r) => {
                let ready = self
                    .rounds
                    .get(&r)
                    .and_then(|d| d.manifest.clone())
                    .filter(|(_, m)| m.entries.iter().all(|e| self.have.contains(&e.hash)));
                if let Some((aggregator, manifest)) = ready {
                    self.phase = Phase::Applying(r);
                    self.out.push(OutEvent::Apply { round: r, aggregator, manifest });
                }
            }
            _ => {}
        }
    }

    fn poll_waiting(&mut self, now: Time) {
        if let Some(r) = self.rounds.iter().rev().find(|(_, d)| d.manifest.is_some()).map(|(r, _)| *r) {
            return self.start_sync(r);
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

    fn poll_gathering(&mut self, round: u64, now: Time) {
        let cands = self.candidates(round);
        let k = cands.iter().position(|p| *p == self.me).unwrap_or(0) as u64;
        let Some(data) = self.rounds.get(&round) else {
            return;
        };
        let ready: Vec<ManifestEntry> = data
            .contributions
            .iter()
            .filter(|(_, (h, _))| self.have.contains(h))
            .map(|(p, (h, s))| ManifestEntry { peer: *p, hash: *h, samples: *s })
            .collect();
        let all_in = self
            .peers
            .iter()
            .filter(|(p, i)| self.expects(p, i, round))
            .all(|(p, _)| data.contributions.contains_key(p))
            && ready.len() == data.contributions.len();
        let deadline = self.round_started + self.cfg.round_timeout;
        let go = if k == 0 { all_in || now >= deadline } else { now >= deadline + k * self.cfg.aggregator_timeout };
        // Someone already moved past this round: its manifest exists and we
        // missed it. Publishing another would split the swarm; wait for the
        // next manifest and sync from it instead.
        let closed = self.peers.values().any(|i| i.status == Status::Active && i.round > round);
        if !go || ready.is_empty() || closed {
            return;
        }
        let manifest = Manifest { state: self.state, entries: ready };
        self.broadcast(round, &Message::Manifest(manifest.clone()));
        self.stats.manifests_published += 1;
        self.accept_manifest(round, self.me, manifest);
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

fn manifest_is_well_formed(m: &Manifest) -> bool {
    !m.entries.is_empty()
        && m.entries.len() <= MAX_MANIFEST_ENTRIES
        && m.entries.windows(2).all(|w| w[0].peer < w[1].peer)
        && m.entries.iter().all(|e| e.samples > 0)
}
