//! A seeded discrete-event simulator: N [`Peer`] state machines on a virtual
//! clock, with latency, message loss, crashes and late joins.
//!
//! The "node" around each peer is a stand-in: training produces a blob whose
//! hash depends on (peer, round, base state), applying a manifest hashes the
//! state with the manifest's entries in order. Honest peers that apply the
//! same manifests from the same state therefore hold the same state hash,
//! exactly the property the real node has with real parameters.

use crate::id::{Hash, Keypair, PeerId};
use crate::message::{Contribution, Fault};
use crate::rng::SplitMix64;
use crate::round::{BlobKind, Config, FetchFailure, Gossip, InEvent, Manifest, OutEvent, Peer, Phase};
use crate::time::Time;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

/// The simulator's generator: [`SplitMix64`] with a fixed offset on the seed.
pub type Rng = SplitMix64;

/// The simulator's generator for `seed`.
pub fn rng(seed: u64) -> Rng {
    SplitMix64::new(seed ^ 0x9E37_79B9_7F4A_7C15)
}

/// Simulation settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Peers present from the start.
    pub peers: usize,
    /// Seed of everything random.
    pub seed: u64,
    /// One-way latency range in ms.
    pub latency: (Time, Time),
    /// Probability that one delivery of a broadcast is lost.
    pub loss: f64,
    /// Inner-loop duration range in ms.
    pub train_time: (Time, Time),
    /// Time to apply a manifest or load a state, ms.
    pub apply_time: Time,
    /// `min_peers` of the run.
    pub min_peers: u32,
    /// Rounds in the run.
    pub rounds: u64,
    /// Round deadline, ms.
    pub round_timeout: Time,
    /// Aggregator takeover step, ms.
    pub aggregator_timeout: Time,
    /// Floor of the adaptive deadline, ms.
    pub min_round: Time,
    /// Hello period, ms.
    pub hello_interval: Time,
    /// Peers silent this long are dropped, ms.
    pub peer_ttl: Time,
    /// How long a request to a provider that does not hold the blob (or
    /// over a slow link) takes to fail, ms.
    pub fetch_timeout: Time,
    /// After this long without an answer a request gets a parallel one to
    /// the next provider (the protocol's `fetch_hedge`), ms.
    pub fetch_hedge: Time,
    /// Probability that a contribution gets a verifier (0 = no review).
    pub verify_rate: f64,
    /// Segments of a commitment chain.
    pub segments: u32,
    /// Referees of a dispute.
    pub referees: u32,
    /// How long a check takes, ms.
    pub check_time: Time,
}

impl SimConfig {
    /// Sensible defaults for `peers` peers.
    pub fn new(peers: usize, seed: u64) -> SimConfig {
        SimConfig {
            peers,
            seed,
            latency: (5, 40),
            loss: 0.0,
            train_time: (800, 1200),
            apply_time: 20,
            min_peers: peers.min(3) as u32,
            rounds: 10,
            round_timeout: 4_000,
            aggregator_timeout: 1_500,
            min_round: 1_500,
            hello_interval: 500,
            peer_ttl: 3_000,
            fetch_timeout: 100,
            fetch_hedge: 1_000,
            verify_rate: 0.0,
            segments: 4,
            referees: 3,
            check_time: 100,
        }
    }
}

#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
enum Ev {
    /// A gossip message from a peer (or, `None`, a fetched envelope).
    Deliver(Vec<u8>, Option<PeerId>),
    In(InEvent),
    /// The node's timer, set from [`Peer::next_timeout`]; only the newest
    /// one set fires.
    Timer,
}

/// One simulated node.
#[derive(Debug)]
pub struct SimNode {
    /// The state machine.
    pub peer: Peer,
    /// The node's state hash.
    pub state: Hash,
    /// Whether the peer has left the run.
    pub finished: bool,
    /// False once crashed.
    pub alive: bool,
    /// Bumped on restart; events of an earlier life are dropped.
    generation: u32,
    /// The pending timer: (when, event sequence number).
    timer: Option<(Time, u64)>,
    /// Timer events handled (the machine asked to be woken this often).
    pub ticks: u64,
}

/// The simulator.
#[derive(Debug)]
pub struct Sim {
    /// Settings.
    pub cfg: SimConfig,
    /// Virtual time, ms.
    pub now: Time,
    rng: Rng,
    run: Hash,
    genesis: Hash,
    /// All nodes ever started, by index.
    pub nodes: Vec<SimNode>,
    index: BTreeMap<PeerId, usize>,
    queue: BinaryHeap<Reverse<(Time, u64, usize)>>,
    events: BTreeMap<u64, (Ev, u32)>,
    seq: u64,
    blobs: BTreeMap<Hash, BTreeSet<usize>>,
    /// State hash of each node after applying each round.
    pub applied: BTreeMap<u64, BTreeMap<usize, Hash>>,
    /// The manifest each node applied in each round, with its aggregator.
    pub manifests: BTreeMap<u64, BTreeMap<usize, (PeerId, Manifest)>>,
    /// Nodes that applied a manifest whose start state differed from theirs.
    pub divergent: Vec<(usize, u64)>,
    /// When some node first applied each round.
    pub first_applied: BTreeMap<u64, Time>,
    /// While set, messages and fetches between this group and the rest fail.
    partition: Option<BTreeSet<usize>>,
    /// (fetcher, provider) pairs whose requests hang for `fetch_timeout`
    /// and then fail (a stale address, a half-dead connection).
    slow_links: BTreeSet<(usize, usize)>,
    /// Manifest envelopes nodes keep, by hash.
    envelopes: BTreeMap<Hash, Vec<u8>>,
    /// Commitment chains by hash: the state hashes they list.
    chains: BTreeMap<Hash, Vec<Hash>>,
    /// Nodes whose contributions fail every check (they lie).
    pub liars: BTreeSet<usize>,
    /// Nodes that report a fault in every contribution they check.
    pub framers: BTreeSet<usize>,
    /// Nodes that never serve their own contributions (withholders).
    pub withholders: BTreeSet<usize>,
    /// Exclusions each node applied: node -> excluded nodes.
    pub excluded: BTreeMap<usize, BTreeSet<usize>>,
    /// Checks each node ran (as verifier or referee).
    pub checks: BTreeMap<usize, u64>,
    /// The last round each node signed for (what its disk would keep).
    signed: BTreeMap<usize, u64>,
    /// Per node, the epochs its ledger closed: epoch -> (root, total).
    pub roots: BTreeMap<usize, BTreeMap<u64, ([u8; 32], u64)>>,
    /// Applied manifests whose epoch root differed from the applier's.
    pub ledger_mismatches: u64,
}

impl Sim {
    /// Builds the simulator with `cfg.peers` peers (not started yet).
    pub fn new(cfg: SimConfig) -> Sim {
        let run = Hash::of(format!("sim-run-{}", cfg.seed).as_bytes());
        let genesis = Hash::of(b"genesis");
        let mut sim = Sim {
            rng: rng(cfg.seed),
            cfg,
            now: 0,
            run,
            genesis,
            nodes: Vec::new(),
            index: BTreeMap::new(),
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            seq: 0,
            blobs: BTreeMap::new(),
            applied: BTreeMap::new(),
            manifests: BTreeMap::new(),
            divergent: Vec::new(),
            first_applied: BTreeMap::new(),
            partition: None,
            slow_links: BTreeSet::new(),
            envelopes: BTreeMap::new(),
            chains: BTreeMap::new(),
            liars: BTreeSet::new(),
            withholders: BTreeSet::new(),
            framers: BTreeSet::new(),
            excluded: BTreeMap::new(),
            checks: BTreeMap::new(),
            signed: BTreeMap::new(),
            roots: BTreeMap::new(),
            ledger_mismatches: 0,
        };
        for _ in 0..sim.cfg.peers {
            sim.add_node();
        }
        sim
    }

    /// Starts one more node now; returns its index.
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        let key = Keypair::from_seed(self.cfg.seed.wrapping_mul(1000).wrapping_add(i as u64));
        let mut peer = Peer::new(self.peer_config(), key);
        peer.add_local_blob(self.genesis);
        self.index.insert(peer.id(), i);
        self.blobs.entry(self.genesis).or_default().insert(i);
        self.nodes.push(SimNode {
            peer,
            state: self.genesis,
            finished: false,
            alive: true,
            generation: 0,
            timer: None,
            ticks: 0,
        });
        let jitter = self.rng.range(0, 50);
        self.set_timer(i, jitter);
        i
    }

    fn peer_config(&self) -> Config {
        Config {
            run: self.run,
            min_peers: self.cfg.min_peers,
            round_timeout: self.cfg.round_timeout,
            aggregator_timeout: self.cfg.aggregator_timeout,
            hello_interval: self.cfg.hello_interval,
            peer_ttl: self.cfg.peer_ttl,
            last_round: self.cfg.rounds,
            run_rounds: self.cfg.rounds,
            genesis: self.genesis,
            fetch_retry: 200,
            max_fetch_attempts: 10,
            fetch_hedge: self.cfg.fetch_hedge,
            max_samples: 64,
            sync_quorum: 0.5,
            min_round: self.cfg.min_round,
            deadline_k: 4.0,
            verify_rate: self.cfg.verify_rate,
            segments: self.cfg.segments,
            referees: self.cfg.referees,
            ledger: crate::ledger::LedgerSpec { epoch_rounds: 3, settle_rounds: 2, ..Default::default() },
        }
    }

    /// The peer id of node `i`.
    pub fn peer_id(&self, i: usize) -> PeerId {
        self.nodes[i].peer.id()
    }

    /// The node index of a peer id.
    pub fn node_of(&self, p: &PeerId) -> Option<usize> {
        self.index.get(p).copied()
    }

    /// The run id.
    pub fn run_id(&self) -> Hash {
        self.run
    }

    /// Kills node `i` (no goodbye, its blobs are gone with it).
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].alive = false;
        for holders in self.blobs.values_mut() {
            holders.remove(&i);
        }
        self.blobs.entry(self.genesis).or_default().insert(i);
    }

    /// Restarts a crashed node: same identity, nothing else (it syncs).
    pub fn restart(&mut self, i: usize) {
        if self.nodes[i].alive {
            return;
        }
        let key = Keypair::from_seed(self.cfg.seed.wrapping_mul(1000).wrapping_add(i as u64));
        let mut peer = Peer::new(self.peer_config(), key);
        peer.add_local_blob(self.genesis);
        peer.sit_out(self.signed.get(&i).copied().unwrap_or(0));
        // As a node counts its hellos on from its clock.
        peer.start_seq(self.now.saturating_mul(1000));
        let generation = self.nodes[i].generation + 1;
        self.nodes[i] =
            SimNode { peer, state: self.genesis, finished: false, alive: true, generation, timer: None, ticks: 0 };
        self.set_timer(i, 1);
    }

    /// Every node forgets the contributions named by the manifests of
    /// rounds up to `round` (as the node's blob store evicts old rounds).
    pub fn forget_contributions_up_to(&mut self, round: u64) {
        let hashes: BTreeSet<Hash> = self
            .manifests
            .range(..=round)
            .flat_map(|(_, by_node)| by_node.values().flat_map(|(_, m)| m.entries.iter().map(|e| e.hash())))
            .collect();
        for h in hashes {
            self.blobs.remove(&h);
        }
    }

    /// Fetches by `fetcher` from `provider` hang for `fetch_timeout`, then fail.
    pub fn slow_link(&mut self, fetcher: usize, provider: usize) {
        self.slow_links.insert((fetcher, provider));
    }

    /// Cuts `group` off from everyone else until [`Sim::heal`].
    pub fn partition(&mut self, group: BTreeSet<usize>) {
        self.partition = Some(group);
    }

    /// Ends the partition.
    pub fn heal(&mut self) {
        self.partition = None;
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        self.partition.as_ref().is_none_or(|g| g.contains(&a) == g.contains(&b))
    }

    /// The longest time between two consecutive rounds being first applied.
    pub fn longest_stall(&self) -> Time {
        let t: Vec<Time> = self.first_applied.values().copied().collect();
        t.windows(2).map(|w| w[1].saturating_sub(w[0])).max().unwrap_or(0)
    }

    /// Like [`Sim::first_disagreement`] on states only, from round `from` on.
    pub fn first_disagreement_from(&self, from: u64) -> Option<u64> {
        for (r, states) in self.applied.range(from..) {
            let mut s = states.values();
            let first = s.next();
            if s.any(|x| Some(x) != first) {
                return Some(*r);
            }
        }
        None
    }

    fn schedule(&mut self, delay: Time, node: usize, ev: Ev) -> u64 {
        self.seq += 1;
        let generation = self.nodes.get(node).map(|n| n.generation).unwrap_or(0);
        self.events.insert(self.seq, (ev, generation));
        self.queue.push(Reverse((self.now + delay, self.seq, node)));
        self.seq
    }

    /// Sets node `i`'s timer `delay` from now, replacing the pending one.
    fn set_timer(&mut self, i: usize, delay: Time) {
        let seq = self.schedule(delay, i, Ev::Timer);
        self.nodes[i].timer = Some((self.now + delay, seq));
    }

    /// After node `i` handled an event: its timer follows the machine's
    /// [`Peer::next_timeout`] (the clock jumps there, no periodic ticks).
    fn follow_timer(&mut self, i: usize) {
        let at = self.nodes[i].peer.next_timeout().max(self.now + 1);
        if self.nodes[i].timer.is_none_or(|(t, _)| t != at) && at < Time::MAX / 2 {
            self.set_timer(i, at - self.now);
        }
    }

    /// Runs until virtual time `until` or until every live node finished.
    pub fn run_until(&mut self, until: Time) {
        while let Some(Reverse((t, seq, node))) = self.queue.peek().copied() {
            if t > until || self.all_finished() {
                break;
            }
            self.queue.pop();
            self.now = t;
            let Some((ev, generation)) = self.events.remove(&seq) else {
                continue;
            };
            let n = &self.nodes[node];
            if !n.alive || n.finished || generation != n.generation {
                continue;
            }
            let input = match ev {
                Ev::Timer => {
                    if self.nodes[node].timer.is_none_or(|(_, s)| s != seq) {
                        continue; // replaced by a newer timer
                    }
                    self.nodes[node].timer = None;
                    self.nodes[node].ticks += 1;
                    InEvent::Tick
                }
                Ev::Deliver(bytes, source) => InEvent::Gossip(Gossip { bytes, source }),
                Ev::In(e) => e,
            };
            let now = self.now;
            let outs = self.nodes[node].peer.handle(input, now);
            for o in outs {
                self.execute(node, o);
            }
            if self.nodes[node].alive {
                self.follow_timer(node);
            }
        }
        if self.queue.peek().is_none_or(|Reverse((t, _, _))| *t > until) {
            self.now = self.now.max(until);
        }
    }

    /// Runs until `pred` holds (checked after each event) or `until`.
    pub fn run_while(&mut self, until: Time, mut pred: impl FnMut(&Sim) -> bool) {
        while pred(self) && self.now < until && !self.all_finished() {
            let Some(Reverse((t, _, _))) = self.queue.peek().copied() else {
                break;
            };
            self.run_until(t);
        }
    }

    /// True when every live node has left the run.
    pub fn all_finished(&self) -> bool {
        self.nodes.iter().all(|n| !n.alive || n.finished)
    }

    fn execute(&mut self, i: usize, o: OutEvent) {
        match o {
            OutEvent::Broadcast(bytes) => {
                let from = self.nodes[i].peer.id();
                for j in 0..self.nodes.len() {
                    if j == i || !self.nodes[j].alive || !self.reachable(i, j) || self.rng.chance(self.cfg.loss) {
                        continue;
                    }
                    let d = self.rng.range(self.cfg.latency.0, self.cfg.latency.1);
                    self.schedule(d, j, Ev::Deliver(bytes.clone(), Some(from)));
                }
            }
            OutEvent::Verdict(_) => {}
            OutEvent::KeepBlob { hash, bytes } => {
                self.envelopes.insert(hash, bytes);
                self.blobs.entry(hash).or_default().insert(i);
            }
            OutEvent::Request { hash, kind, from } => self.request(i, hash, kind, from),
            OutEvent::StartTraining { round, base_state } => {
                let mut h = blake3::Hasher::new();
                h.update(b"grad");
                h.update(&self.nodes[i].peer.id().0);
                h.update(&round.to_le_bytes());
                h.update(&base_state.0);
                let hash = Hash(*h.finalize().as_bytes());
                if !self.withholders.contains(&i) {
                    self.blobs.entry(hash).or_default().insert(i);
                }
                let chain = self.make_chain(i, hash);
                let d = self.rng.range(self.cfg.train_time.0, self.cfg.train_time.1);
                let contribution = Contribution {
                    hash,
                    samples: 64,
                    base_state,
                    raw: Hash::of(&hash.0),
                    residual: 0.0,
                    chain,
                    payee: None,
                    attest: None,
                };
                self.schedule(d, i, Ev::In(InEvent::TrainingDone { round, contribution }));
            }
            OutEvent::LoadState { round, state } => {
                self.nodes[i].state = state;
                self.schedule(self.cfg.apply_time, i, Ev::In(InEvent::StateLoaded { round }));
            }
            OutEvent::Apply { round, aggregator, manifest } => self.apply(i, round, aggregator, manifest),
            OutEvent::RunOver { .. } => {}
            OutEvent::Check(job) => {
                *self.checks.entry(i).or_default() += 1;
                let liar = self.node_of(&job.contributor).is_some_and(|c| self.liars.contains(&c));
                let fault = (liar || self.framers.contains(&i)).then_some(Fault::Segment);
                let ev = InEvent::Checked { manifest: job.manifest, contributor: job.contributor, fault };
                self.schedule(self.cfg.check_time, i, Ev::In(ev));
            }
            OutEvent::Signing { round } => {
                let s = self.signed.entry(i).or_default();
                *s = (*s).max(round);
            }
            OutEvent::Excluded { peer, .. } => {
                if let Some(j) = self.node_of(&peer) {
                    self.excluded.entry(i).or_default().insert(j);
                }
            }
            OutEvent::Finished => self.nodes[i].finished = true,
            OutEvent::Record { .. } => {}
            OutEvent::EpochsClosed(epochs) => {
                for e in epochs {
                    if let Some(ep) = self.nodes[i].peer.ledger().epoch(e) {
                        self.roots.entry(i).or_default().insert(e, (ep.root, ep.total));
                    }
                }
            }
            OutEvent::LedgerDiffers { .. } => self.ledger_mismatches += 1,
        }
    }

    /// One request from node `i` to a provider: answered after a round trip
    /// if the provider holds the blob; a provider that does not hold it, or a
    /// slow link, costs `fetch_timeout`; a dead or cut-off provider fails
    /// after a round trip (its connection is known to be gone).
    fn request(&mut self, i: usize, hash: Hash, kind: BlobKind, from: PeerId) {
        let rtt = 2 * self.rng.range(self.cfg.latency.0, self.cfg.latency.1);
        let failed = |why| Ev::In(InEvent::RequestFailed { hash, from, why });
        let Some(j) = self.index.get(&from).copied() else {
            self.schedule(rtt, i, failed(FetchFailure::Unreachable));
            return;
        };
        if !self.nodes[j].alive || !self.reachable(i, j) {
            self.schedule(rtt, i, failed(FetchFailure::Unreachable));
        } else if self.slow_links.contains(&(i, j)) {
            self.schedule(self.cfg.fetch_timeout, i, failed(FetchFailure::Unreachable));
        } else if !self.blobs.get(&hash).is_some_and(|s| s.contains(&j)) {
            self.schedule(rtt + self.cfg.fetch_timeout, i, failed(FetchFailure::NotFound));
        } else {
            self.blobs.entry(hash).or_default().insert(i);
            if kind == BlobKind::Manifest
                && let Some(bytes) = self.envelopes.get(&hash).cloned()
            {
                self.schedule(rtt + 10, i, Ev::Deliver(bytes, None));
            }
            self.schedule(rtt + 10, i, Ev::In(InEvent::BlobReady(hash)));
            if kind == BlobKind::Chain
                && let Some(leaves) = self.chains.get(&hash).cloned()
            {
                self.schedule(rtt + 10, i, Ev::In(InEvent::Chain { hash, leaves }));
            }
        }
    }

    /// The commitment chain of node `i`'s contribution `blob`: made-up state
    /// hashes, held (with the chain blob) by node `i`.
    fn make_chain(&mut self, i: usize, blob: Hash) -> Hash {
        let leaves: Vec<Hash> =
            (0..=self.cfg.segments).map(|s| Hash::of(&[&blob.0[..], &s.to_le_bytes()].concat())).collect();
        let concat: Vec<u8> = leaves.iter().flat_map(|h| h.0).collect();
        let chain = Hash::of(&concat);
        for h in leaves.iter().chain([&chain]) {
            self.blobs.entry(*h).or_default().insert(i);
        }
        self.chains.insert(chain, leaves);
        chain
    }

    fn apply(&mut self, i: usize, round: u64, aggregator: PeerId, manifest: Manifest) {
        if self.nodes[i].state != manifest.state {
            self.divergent.push((i, round));
        }
        let mut h = blake3::Hasher::new();
        h.update(&self.nodes[i].state.0);
        for e in &manifest.entries {
            h.update(&e.hash().0);
            h.update(&e.samples().to_le_bytes());
        }
        let state = Hash(*h.finalize().as_bytes());
        self.nodes[i].state = state;
        self.blobs.entry(state).or_default().insert(i);
        self.applied.entry(round).or_default().insert(i, state);
        self.first_applied.entry(round).or_insert(self.now);
        self.manifests.entry(round).or_default().insert(i, (aggregator, manifest));
        self.schedule(self.cfg.apply_time, i, Ev::In(InEvent::Applied { round, state }));
    }

    /// Rounds in which every node that applied the round holds the same
    /// state and the same manifest; returns the first round that breaks it.
    pub fn first_disagreement(&self) -> Option<u64> {
        for (r, states) in &self.applied {
            let mut s = states.values();
            let first = s.next();
            if s.any(|x| Some(x) != first) {
                return Some(*r);
            }
            // The content must agree; who signed it may differ when a
            // fallback aggregator published the same set.
            let mut m = self.manifests[r].values().map(|(_, m)| m);
            let first = m.next();
            if m.any(|x| Some(x) != first) {
                return Some(*r);
            }
        }
        None
    }

    /// The node indices included in the manifest of `round`.
    pub fn contributors(&self, round: u64) -> BTreeSet<usize> {
        self.manifests
            .get(&round)
            .and_then(|m| m.values().next())
            .map(|(_, m)| m.entries.iter().filter_map(|e| self.node_of(&e.peer)).collect())
            .unwrap_or_default()
    }

    /// The phase of node `i`.
    pub fn phase(&self, i: usize) -> Phase {
        self.nodes[i].peer.phase()
    }
}
