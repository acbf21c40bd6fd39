//! The node: one event loop that owns the libp2p swarm, the protocol state
//! machine and the blob store, and a cloneable [`Node`] handle to talk to it.
//! The model side is the [`worker`](crate::worker)'s: the event loop sends it
//! jobs and turns its results into protocol events.

use crate::adversary::Adversary;
use crate::blobs::BlobStore;
use crate::error::Error;
use crate::events::NodeEvent;
use crate::net::{self, Behaviour};
use crate::peer_store::PeerStore;
use crate::report::{Flow, Traffic};
use crate::worker::{self, Worker, WorkerEvent};
use libp2p::futures::StreamExt;
use libp2p::{Swarm, gossipsub, request_response};
use protocol::{BlobKind, Config, Gossip, InEvent, OutEvent, Peer, RunSpec, Verdict};
use records::{Bans, Contributors, Signed, hello_counter_base};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

mod ledger;
mod lies;
mod plane;
mod records;
mod requests;
mod rounds;
mod swarm_events;

/// How a node is started.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The run to join.
    pub spec: RunSpec,
    /// Where the key, and the run's checkpoints, live.
    pub data_dir: PathBuf,
    /// Bootstrap addresses (`/ip4/../udp/../quic-v1/p2p/<id>`).
    pub bootstrap: Vec<String>,
    /// Listen address.
    pub listen: String,
    /// Leave after this round (at most the spec's `rounds`).
    pub last_round: Option<u64>,
    /// Dial attempts per bootstrap address before giving up.
    pub bootstrap_attempts: u32,
    /// Misbehave this way (the attack suite; `None` for an honest peer).
    pub adversary: Option<Adversary>,
    /// Where the model computes (CPU or wgpu).
    pub device: crate::worker::Backend,
    /// Models whose parameters take at least this many bytes move their
    /// states, inner states and contributions over the data plane
    /// (iroh-blobs); smaller ones over libp2p only.
    pub data_plane_min: usize,
    /// Peers the user trusts for the run's history (`--trust`): the
    /// joiner's sync quorum counts only them (and, once this peer applied
    /// rounds, the peers it saw contribute), not heads.
    pub trust: Vec<protocol::PeerId>,
}

/// A handle to a running node.
#[derive(Clone, Debug)]
pub struct Node {
    shutdown: mpsc::UnboundedSender<()>,
}

impl Node {
    /// Asks the node to leave the run (announces departure, then stops).
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(());
    }
}

/// A started node: its handle, its events, and the task to await.
pub type Started = (Node, mpsc::UnboundedReceiver<NodeEvent>, tokio::task::JoinHandle<Result<(), Error>>);

/// How long a node that left keeps serving blobs, so slower peers finish.
const LINGER: Duration = Duration::from_secs(2);

/// Starts a node: loads the key, the model (and its newest checkpoint),
/// listens, reaches a bootstrap node (bounded retries), then runs the event
/// loop in a task.
pub async fn start(cfg: NodeConfig) -> Result<Started, Error> {
    cfg.spec.validate()?;
    let key = crate::identity::load_or_create(&cfg.data_dir.join("key"))?;
    let run = cfg.spec.run_id();
    let run_dir = cfg.data_dir.join("runs").join(&run.to_hex()[..16]);
    let _ = std::fs::create_dir_all(&run_dir);
    let _ = std::fs::write(run_dir.join("spec.toml"), cfg.spec.to_toml());
    let (worker, worker_rx, init) =
        worker::start(&cfg.spec, key.peer_id(), Some(run_dir.clone()), cfg.adversary, cfg.device)?;
    // The largest blob: an inner state (parameters and two moments).
    let max_blob = init.params * 12 + (1 << 20);
    let dp = if init.params.saturating_mul(4) >= cfg.data_plane_min {
        let ip = net::listen_ip(&cfg.listen)?;
        let lie = cfg.adversary == Some(Adversary::WrongBytes);
        Some(crate::dataplane::DataPlane::bind(key.secret(), ip, lie).await?)
    } else {
        None
    };
    let mut swarm = net::build_with(&key, max_blob, dp.as_ref().map(|d| d.port()))?;
    swarm.listen_on(net::parse_addr(&cfg.listen)?).map_err(|e| Error::Net(e.to_string()))?;
    let topic = gossipsub::IdentTopic::new(format!("swarm/run/{}", run.to_hex()));
    swarm.behaviour_mut().gossipsub.subscribe(&topic).map_err(|e| Error::Net(e.to_string()))?;
    let (events, events_rx) = mpsc::unbounded_channel();
    let mut blobs = BlobStore::with_plane(dp.clone());
    let (plane, plane_rx) = match dp {
        Some(dp) => {
            let (p, rx) = plane::Plane::new(dp, max_blob);
            (Some(p), Some(rx))
        }
        None => (None, None),
    };
    let last_round = cfg.last_round.unwrap_or(cfg.spec.rounds).min(cfg.spec.rounds);
    let (params, codec, language) = (init.params, init.codec.clone(), init.language);
    let (peer, records) = protocol_peer(&cfg, &key, last_round, init, &mut blobs, &run_dir, &events);
    let (bans, signed, contributors) = records;
    let settlement = crate::payee::SettlementKey::load_or_create(&cfg.data_dir.join("settlement.key"))?;
    let (ledger, records) = crate::ledger_log::rebuild(&run_dir.join("manifests.log"), &cfg.spec);
    if records > 0 {
        let epochs = ledger.epochs().count();
        events.send(NodeEvent::Info(format!("ledger: {records} applied manifests kept, {epochs} epochs closed"))).ok();
    }
    let mut peer = peer;
    peer.set_ledger(ledger);
    let kept = crate::kept::load(&run_dir.join("review"), &mut blobs);
    if kept > 0 {
        events.send(NodeEvent::Info(format!("{kept} review blobs of recent rounds restored"))).ok();
    }
    let peer_store_path = cfg.data_dir.join("peers.json");
    let peer_store = PeerStore::load(&peer_store_path);
    if !peer.resumed_after_the_end() {
        crate::dial::reach_bootstrap(&mut swarm, &cfg.bootstrap, cfg.bootstrap_attempts, &peer_store, &events).await?;
        // Joiners that know only the run id find us (and its spec) here.
        let _ = swarm.behaviour_mut().kad.start_providing(crate::runs::run_key(&run));
    }
    events
        .send(NodeEvent::Info(format!(
            "peer {} joined run {} ({}, {} parameters, rounds 1..={last_round})",
            key.peer_id().short(),
            &run.to_hex()[..16],
            cfg.spec.model,
            params,
        )))
        .ok();
    let full_id = crate::identity::to_libp2p(&key).public().to_peer_id();
    events.send(NodeEvent::Info(format!("peer id {full_id} (what others pass to --trust)"))).ok();
    let (shutdown, shutdown_rx) = mpsc::unbounded_channel();
    let lp = EventLoop {
        swarm,
        topic,
        peer,
        worker,
        worker_rx,
        blobs,
        requests: HashMap::new(),
        events,
        shutdown_rx: Some(shutdown_rx),
        queue: VecDeque::new(),
        started: Instant::now(),
        linger_until: None,
        traffic: Meter::default(),
        model: ModelInfo { params, codec, language },
        rounds: BTreeMap::new(),
        banned: HashSet::new(),
        peers: PeerBook { store: peer_store, path: peer_store_path, dirty: true, saving: None },
        bans,
        signed,
        contributors,
        adversary: cfg.adversary.map(|kind| Lies::new(kind, key.clone())),
        connections: HashMap::new(),
        resubscribe: swarm_events::Resubscribe::default(),
        run,
        run_dir,
        payee: Some(settlement.address()),
        settlement,
        attestation: None,
        spec_bytes: bytes::Bytes::from(crate::runs::spec_bytes(&cfg.spec)),
        max_blob,
        plane,
        plane_rx,
    };
    let mut lp = lp;
    lp.attest();
    let handle = tokio::spawn(lp.run());
    Ok((Node { shutdown }, events_rx, handle))
}

/// The protocol state machine of a starting node: the genesis state (and
/// a restored checkpoint) in the store, the exclusions, the last signed
/// round and the contributors this peer's run dir remembers.
fn protocol_peer(
    cfg: &NodeConfig,
    key: &protocol::Keypair,
    last_round: u64,
    init: worker::WorkerInit,
    blobs: &mut BlobStore,
    run_dir: &std::path::Path,
    events: &mpsc::UnboundedSender<NodeEvent>,
) -> (Peer, (Bans, Signed, Contributors)) {
    let genesis = blobs.add(0, BlobKind::State, init.genesis);
    let mut peer = Peer::new(Config::new(cfg.spec.run_id(), genesis, &cfg.spec, last_round), key.clone());
    peer.add_local_blob(genesis);
    for note in init.notes {
        events.send(NodeEvent::Info(note)).ok();
    }
    if let Some((round, blob)) = init.restored {
        let hash = blobs.add(round, BlobKind::State, blob);
        events.send(NodeEvent::Info(format!("restored the checkpoint of round {round} ({})", hash.short()))).ok();
        peer.resume(round, hash);
    }
    peer.start_seq(hello_counter_base(&run_dir.join("seq")));
    let bans = Bans::load(run_dir.join("excluded.json"));
    peer.exclude(bans.peers.iter().copied());
    let signed = Signed::load(run_dir.join("signed"));
    peer.sit_out(signed.round);
    if cfg.trust.contains(&key.peer_id()) {
        events.send(NodeEvent::Info("--trust names this peer itself: ignored".into())).ok();
    }
    let trust: Vec<protocol::PeerId> = cfg.trust.iter().copied().filter(|p| *p != key.peer_id()).collect();
    if !trust.is_empty() {
        let n = trust.len();
        peer.trust(trust);
        let what = format!("trusting {n} named peer{} for the run's history", if n == 1 { "" } else { "s" });
        events.send(NodeEvent::Info(format!("{what}: it syncs only to manifests they confirm"))).ok();
    }
    let contributors = Contributors::load(run_dir.join("contributors.json"));
    peer.remember_contributors(contributors.spans.iter().map(|(p, s)| (*p, *s)));
    (peer, (bans, signed, contributors))
}

/// A blob request on its way: which blob, of whom.
struct Request {
    hash: protocol::Hash,
    kind: BlobKind,
    from: protocol::PeerId,
}

/// The model as the event loop knows it (for reports).
struct ModelInfo {
    params: usize,
    codec: String,
    /// A language model: rounds report the held-out perplexity too.
    language: bool,
}

/// Bytes moved: the running total and where the current round started.
#[derive(Default)]
struct Meter {
    total: Traffic,
    mark: Traffic,
}

/// The peer store and where it is saved.
struct PeerBook {
    store: PeerStore,
    path: PathBuf,
    /// Changed since the last save.
    dirty: bool,
    /// The save in flight: one at a time (two would race on the temp
    /// file, and an older snapshot could land after a newer one).
    saving: Option<tokio::task::JoinHandle<()>>,
}

impl PeerBook {
    /// Saves the store in the background if it changed and no save is in
    /// flight (else at a later call).
    fn save_if_changed(&mut self) {
        if !self.dirty || self.saving.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        self.dirty = false;
        self.saving = Some(self.store.save_in_background(&self.path));
    }
}

/// A misbehaving node's means: its kind of lie, its key (to sign forged
/// manifests), the contributions it saw by round (to copy).
struct Lies {
    kind: Adversary,
    key: protocol::Keypair,
    seen: BTreeMap<u64, protocol::Contribution>,
    /// A copying liar's own result, held until it has something to copy.
    held: Option<crate::worker::Trained>,
    /// The rounds a forger has forged a manifest for.
    forged: std::collections::BTreeSet<u64>,
}

/// What the event loop notes about one round, for its report.
#[derive(Default)]
struct RoundNotes {
    /// Peers (ourselves included) seen when the round started.
    peers: usize,
    /// Our own contribution: mean train loss, payload bytes, training ms.
    own: Option<(f32, u64, u64)>,
    /// The manifest being applied.
    applying: Option<Applying>,
}

/// The manifest of a round being applied, as the report shows it.
struct Applying {
    contributed: bool,
    contributors: usize,
    aggregator: String,
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    topic: gossipsub::IdentTopic,
    peer: Peer,
    worker: Worker,
    worker_rx: mpsc::UnboundedReceiver<WorkerEvent>,
    blobs: BlobStore,
    requests: HashMap<request_response::OutboundRequestId, Request>,
    events: mpsc::UnboundedSender<NodeEvent>,
    /// None once every [`Node`] handle is gone (that was a shutdown too).
    shutdown_rx: Option<mpsc::UnboundedReceiver<()>>,
    /// Protocol events produced while carrying out others.
    queue: VecDeque<InEvent>,
    /// The protocol's clock starts here.
    started: Instant,
    linger_until: Option<Instant>,
    traffic: Meter,
    model: ModelInfo,
    rounds: BTreeMap<u64, RoundNotes>,
    /// Peers that served bytes that do not match the hash asked for.
    banned: HashSet<libp2p::PeerId>,
    peers: PeerBook,
    /// Peers excluded from the run, persisted.
    bans: Bans,
    /// The last round this peer signed for, persisted.
    signed: Signed,
    /// Contributors of the rounds applied here, persisted.
    contributors: Contributors,
    /// How this peer misbehaves, if it does (the attack suite).
    adversary: Option<Lies>,
    /// Open connections by peer, oldest first.
    connections: HashMap<libp2p::PeerId, Vec<libp2p::swarm::ConnectionId>>,
    /// Rate limit on leaving and rejoining the topic for restarted peers.
    resubscribe: swarm_events::Resubscribe,
    run: protocol::Hash,
    run_dir: PathBuf,
    /// Where this peer's credits are paid (the settlement key's address).
    payee: Option<protocol::message::Address>,
    settlement: crate::payee::SettlementKey,
    /// This peer's signature of the last epoch root it computed.
    attestation: Option<protocol::message::Attestation>,
    /// The run's spec as served to joiners that know only its id.
    spec_bytes: bytes::Bytes,
    /// The largest blob of the run's model (an inner state).
    max_blob: usize,
    /// The data plane, for a model with big states.
    plane: Option<plane::Plane>,
    plane_rx: Option<mpsc::UnboundedReceiver<plane::Done>>,
}

impl EventLoop {
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn info(&self, s: String) {
        self.events.send(NodeEvent::Info(s)).ok();
    }

    /// When the protocol wants its next tick (or the linger ends).
    fn wake_at(&self) -> Instant {
        let at = self.started + Duration::from_millis(self.peer.next_timeout().min(self.now() + 3_600_000));
        self.linger_until.map_or(at, |l| l.min(at))
    }

    async fn run(mut self) -> Result<(), Error> {
        let mut discover = tokio::time::interval(Duration::from_secs(2));
        // The peer store is saved at most this often, when it changed (off
        // the event loop): often enough that a peer killed a second after it
        // met the swarm gets back in through it with the bootstrap down.
        let mut save_peers = tokio::time::interval(Duration::from_millis(500));
        save_peers.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.linger_until.is_some_and(|t| Instant::now() >= t) {
                if let Some(saving) = self.peers.saving.take() {
                    let _ = saving.await;
                }
                if self.peers.dirty {
                    let _ = self.peers.store.save(&self.peers.path);
                }
                return Ok(());
            }
            let wake = tokio::time::Instant::from_std(self.wake_at());
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm(ev),
                Some(ev) = self.worker_rx.recv() => self.on_worker(ev),
                done = plane::next_done(&mut self.plane_rx) => self.on_plane_done(done),
                () = shutdown(&mut self.shutdown_rx) => self.drive(InEvent::Shutdown),
                _ = tokio::time::sleep_until(wake) => self.drive(InEvent::Tick),
                _ = discover.tick() => {
                    let me = *self.swarm.local_peer_id();
                    self.swarm.behaviour_mut().kad.get_closest_peers(me);
                    if self.resubscribe.due(Instant::now()) {
                        self.resubscribe_now();
                    }
                }
                _ = save_peers.tick() => self.peers.save_if_changed(),
            }
        }
    }

    /// Feeds an event to the state machine and carries out what it asks,
    /// including the events that carrying out produces.
    fn drive(&mut self, ev: InEvent) {
        self.queue.push_back(ev);
        self.run_queue();
    }

    fn run_queue(&mut self) {
        while let Some(ev) = self.queue.pop_front() {
            let outs = self.handle(ev);
            for out in outs {
                self.execute(out);
            }
        }
    }

    fn handle(&mut self, ev: InEvent) -> Vec<OutEvent> {
        let now = self.now();
        let before = (self.peer.phase(), self.peer.round());
        let outs = self.peer.handle(ev, now);
        if before != (self.peer.phase(), self.peer.round()) {
            tracing::debug!(phase = ?self.peer.phase(), round = self.peer.round(), "phase");
        }
        outs
    }

    /// A control message: the protocol judges it, the verdict goes back to
    /// gossipsub (forward, drop, or count against the sender).
    fn on_gossip(&mut self, bytes: Vec<u8>, source: Option<protocol::PeerId>) -> Verdict {
        let outs = self.handle(InEvent::Gossip(Gossip { bytes, source }));
        let mut verdict = Verdict::Ignore(None);
        for out in outs {
            match out {
                OutEvent::Verdict(v) => verdict = v,
                other => self.execute(other),
            }
        }
        if !matches!(verdict, Verdict::Accept) {
            tracing::debug!(?verdict, ?source, "gossip not accepted");
        }
        self.run_queue();
        verdict
    }

    fn execute(&mut self, out: OutEvent) {
        if !matches!(out, OutEvent::Broadcast(_) | OutEvent::KeepBlob { .. } | OutEvent::Verdict(_)) {
            tracing::debug!(?out, "protocol asks");
        }
        match out {
            OutEvent::Broadcast(bytes) => self.publish(bytes),
            // Of a manifest fetched as a blob: nobody to tell.
            OutEvent::Verdict(v) => {
                if !matches!(v, Verdict::Accept) {
                    tracing::debug!(verdict = ?v, "fetched manifest not accepted");
                }
            }
            OutEvent::Request { hash, kind, from } => self.request(hash, kind, from),
            OutEvent::KeepBlob { hash, bytes } => {
                let round = self.peer.round();
                self.blobs.insert_verified(round, hash, BlobKind::Manifest, Arc::new(bytes));
            }
            OutEvent::StartTraining { round, base_state } => {
                self.rounds.entry(round).or_default().peers = self.peer.members() + 1;
                if !self.lies(Adversary::ForgeManifest) {
                    self.worker.train(round, base_state);
                }
            }
            OutEvent::LoadState { round, state } => match self.blobs.get(&state) {
                Some(blob) => self.worker.load(round, state, blob),
                None => self.info(format!("cannot load state {}: the blob is gone", state.short())),
            },
            OutEvent::Apply { round, aggregator, manifest } => self.start_apply(round, aggregator, manifest),
            OutEvent::Check(job) => self.start_check(job),
            OutEvent::Excluded { peer, round } => self.on_excluded(peer, round),
            OutEvent::Signing { round } => {
                if let Err(e) = self.signed.record(round) {
                    self.info(format!("cannot record round {round} as signed for: {e}"));
                }
            }
            OutEvent::RunOver { round, state } => {
                self.events.send(NodeEvent::RunOver { round, state_hash: state.to_hex() }).ok();
                self.linger_until = Some(Instant::now());
            }
            OutEvent::Record { round, id, manifest } => self.on_record(round, id, &manifest),
            OutEvent::EpochsClosed(epochs) => self.on_epochs_closed(epochs),
            OutEvent::LedgerDiffers { epoch, ours, theirs, signer } => {
                self.on_ledger_differs(epoch, ours, theirs, signer)
            }
            OutEvent::Finished => {
                self.events.send(NodeEvent::Finished).ok();
                // Keep serving blobs briefly so slower peers can finish.
                self.linger_until.get_or_insert(Instant::now() + LINGER);
            }
        }
    }

    pub(super) fn lies(&self, kind: Adversary) -> bool {
        self.adversary.as_ref().is_some_and(|l| l.kind == kind)
    }

    pub(super) fn publish(&mut self, bytes: Vec<u8>) {
        if self.lies(Adversary::WrongBytes)
            && protocol::Envelope::open(&bytes).is_ok_and(|o| matches!(o.message(), Ok(protocol::Message::Manifest(_))))
        {
            // A peer that serves nobody the right bytes does not aggregate:
            // a manifest naming its own contribution cannot be applied by
            // anyone else, and the protocol does not yet move past such a
            // manifest (the round loops on it; see the data-plane notes).
            return;
        }
        let topic = self.topic.hash();
        let fanout = self.swarm.behaviour().gossipsub.all_peers().filter(|(_, t)| t.contains(&&topic)).count();
        let len = bytes.len() as u64;
        if self.swarm.behaviour_mut().gossipsub.publish(self.topic.clone(), bytes).is_ok() {
            self.traffic.total.control.sent += len * fanout as u64;
        }
    }

    fn flow(&mut self, kind: BlobKind) -> &mut Flow {
        let t = &mut self.traffic.total;
        match kind {
            BlobKind::Contribution => &mut t.grads,
            BlobKind::State => &mut t.state,
            BlobKind::Manifest => &mut t.control,
            BlobKind::Chain | BlobKind::InnerState => &mut t.verify,
        }
    }
}

/// Resolves on a shutdown request, or once when the last handle is dropped.
async fn shutdown(rx: &mut Option<mpsc::UnboundedReceiver<()>>) {
    match rx {
        Some(r) => {
            if r.recv().await.is_none() {
                *rx = None;
            }
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_restarted_peer_counts_its_hellos_on_from_its_last_life_even_if_the_clock_went_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seq");
        let first = super::hello_counter_base(&path);
        assert!(first > 1_700_000_000_000_000, "from the clock in µs: {first}");
        // The clock goes back a day: the file says where the last life began.
        std::fs::write(&path, (first + 86_400_000_000).to_string()).unwrap();
        let second = super::hello_counter_base(&path);
        assert!(second >= first + 86_400_000_000 + (1 << 32), "{second}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), second.to_string());
    }
}
