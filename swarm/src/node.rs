//! The node: one event loop that owns the libp2p swarm, the protocol state
//! machine, the blob store and the model state, and a cloneable [`Node`]
//! handle to talk to it.

use crate::Error;
use crate::blobs::BlobStore;
use crate::net::{self, Behaviour, BehaviourEvent};
use crate::report::{Flow, RoundReport, Traffic};
use crate::store::PeerStore;
use crate::work::{self, ModelState};
use libp2p::futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Swarm, gossipsub, identify, kad, request_response};
use protocol::codec::{Codec, ErrorFeedback};
use protocol::{BlobKind, Config, Hash, InEvent, OutEvent, Peer, RunSpec};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use trainer::Trainer;

mod net_blobs;

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
}

/// What the node tells its owner.
#[derive(Clone, Debug)]
pub enum NodeEvent {
    /// Listening on this full address (with `/p2p/<id>`).
    Listening(String),
    /// A human-readable status line (joins, syncs, drops).
    Info(String),
    /// One inner step done.
    TrainStep {
        /// The round.
        round: u64,
        /// Step, from 1.
        step: u32,
        /// Steps in the round.
        total: u32,
        /// The step's loss.
        loss: f32,
    },
    /// A round was applied.
    Round(Box<RoundReport>),
    /// The node left the run.
    Finished,
}

enum Command {
    Shutdown,
    Stats(oneshot::Sender<protocol::round::Stats>),
}

/// A handle to a running node.
#[derive(Clone, Debug)]
pub struct Node {
    cmd: mpsc::UnboundedSender<Command>,
}

impl Node {
    /// Asks the node to leave the run (announces departure, then stops).
    pub fn shutdown(&self) {
        let _ = self.cmd.send(Command::Shutdown);
    }

    /// The protocol counters (drops, manifests, resyncs).
    pub async fn stats(&self) -> Result<protocol::round::Stats, Error> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Command::Stats(tx)).map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)
    }
}

enum Job {
    Trained(Result<work::Trained, String>),
    Applied(Result<work::Applied, String>),
    Step { round: u64, step: u32, loss: f32 },
}

/// One chain of requests for a blob: its providers are asked in turn.
struct Fetch {
    hash: Hash,
    kind: BlobKind,
    /// Providers not asked yet.
    providers: VecDeque<protocol::PeerId>,
    /// When the current request was sent.
    asked_at: Instant,
    /// Whether a parallel chain was started for the current request.
    hedged: bool,
}

/// A started node: its handle, its events, and the task to await.
pub type Started = (Node, mpsc::UnboundedReceiver<NodeEvent>, tokio::task::JoinHandle<Result<(), Error>>);

/// Starts a node: loads the key, builds the model, listens, reaches a
/// bootstrap node (bounded retries), then runs the event loop in a task.
pub async fn start(cfg: NodeConfig) -> Result<Started, Error> {
    cfg.spec.validate()?;
    let trainer = Trainer::new(&cfg.spec.model)?;
    let key = crate::identity::load_or_create(&cfg.data_dir.join("key"))?;
    let run = cfg.spec.run_id();
    let state = ModelState::genesis(&trainer, &cfg.spec);
    let n = trainer.num_params();
    let max_blob = n * 8 + (1 << 20);
    let mut swarm = net::build(&key, max_blob)?;
    swarm.listen_on(net::parse_addr(&cfg.listen)?).map_err(|e| Error::Net(e.to_string()))?;
    let topic = gossipsub::IdentTopic::new(format!("swarm/run/{}", run.to_hex()));
    swarm.behaviour_mut().gossipsub.subscribe(&topic).map_err(|e| Error::Net(e.to_string()))?;
    let (events, events_rx) = mpsc::unbounded_channel();
    let peer_store_path = cfg.data_dir.join("peers.json");
    let peer_store = PeerStore::load(&peer_store_path);
    crate::dial::reach_bootstrap(&mut swarm, &cfg, &peer_store, &events).await?;

    let mut blobs = BlobStore::default();
    let genesis = blobs.add(0, BlobKind::State, state.encode());
    let run_dir = cfg.data_dir.join("runs").join(&run.to_hex()[..16]);
    let (restored, notes) = crate::store::load_latest(&run_dir, &cfg.spec.model, n);
    for note in notes {
        events.send(NodeEvent::Info(note)).ok();
    }
    let restored = restored.map(|(round, st)| {
        let hash = blobs.add(round, BlobKind::State, st.encode());
        events
            .send(NodeEvent::Info(format!("restored the checkpoint of round {round} ({}); syncing", hash.short())))
            .ok();
        hash
    });
    let codec = Codec::from_spec(&cfg.spec.codec).map_err(|e| Error::Net(e.to_string()))?;
    let last_round = cfg.last_round.unwrap_or(cfg.spec.rounds).min(cfg.spec.rounds);
    let mut peer = Peer::new(Config::new(run, genesis, &cfg.spec, last_round), key.clone());
    peer.add_local_blob(genesis);
    if let Some(h) = restored {
        peer.add_local_blob(h);
    }
    let (cmd, cmd_rx) = mpsc::unbounded_channel();
    let (jobs, jobs_rx) = mpsc::unbounded_channel();
    let _ = std::fs::create_dir_all(&run_dir);
    let _ = std::fs::write(run_dir.join("spec.toml"), cfg.spec.to_toml());
    events
        .send(NodeEvent::Info(format!(
            "peer {} joined run {} ({}, {} parameters, rounds {}..={last_round})",
            key.peer_id().short(),
            &run.to_hex()[..16],
            cfg.spec.model,
            n,
            1
        )))
        .ok();
    let lp = EventLoop {
        swarm,
        topic,
        peer,
        trainer: Arc::new(Mutex::new(trainer)),
        // A second instance for the outer step and evaluation, so applying a
        // round never waits for a stale inner loop still running.
        eval_trainer: Arc::new(Mutex::new(Trainer::new(&cfg.spec.model)?)),
        state: Some(state),
        blobs,
        run_dir,
        spec: cfg.spec,
        events,
        cmd_rx,
        jobs,
        jobs_rx,
        queue: VecDeque::new(),
        fetches: HashMap::new(),
        chains: HashMap::new(),
        started: Instant::now(),
        linger_until: None,
        traffic: Traffic::default(),
        traffic_mark: Traffic::default(),
        feedback: Arc::new(Mutex::new(ErrorFeedback::new(n))),
        codec,
        trained: BTreeMap::new(),
        bad_blobs: 0,
        pending_apply_meta: None,
        round_peers: BTreeMap::new(),
        banned: Default::default(),
        peer_store,
        peer_store_path,
        connections: HashMap::new(),
    };
    let handle = tokio::spawn(lp.run());
    Ok((Node { cmd }, events_rx, handle))
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    topic: gossipsub::IdentTopic,
    peer: Peer,
    trainer: Arc<Mutex<Trainer>>,
    eval_trainer: Arc<Mutex<Trainer>>,
    /// None while a blocking job owns it.
    state: Option<ModelState>,
    blobs: BlobStore,
    run_dir: PathBuf,
    spec: RunSpec,
    events: mpsc::UnboundedSender<NodeEvent>,
    cmd_rx: mpsc::UnboundedReceiver<Command>,
    jobs: mpsc::UnboundedSender<Job>,
    jobs_rx: mpsc::UnboundedReceiver<Job>,
    queue: VecDeque<InEvent>,
    fetches: HashMap<request_response::OutboundRequestId, Fetch>,
    /// Request chains running per blob; the protocol hears of a failure
    /// only when the last one ends without the blob.
    chains: HashMap<Hash, usize>,
    started: Instant,
    linger_until: Option<Instant>,
    traffic: Traffic,
    traffic_mark: Traffic,
    /// The codec residual carried from round to round.
    feedback: Arc<Mutex<ErrorFeedback>>,
    codec: Codec,
    /// Per round: (train loss, payload bytes, own blob hash).
    trained: BTreeMap<u64, (f32, u64, Hash)>,
    bad_blobs: u64,
    /// (own contribution included, contributors, aggregator) of the round being applied.
    pending_apply_meta: Option<(bool, usize, String)>,
    /// Peers (ourselves included) seen when each round started.
    round_peers: BTreeMap<u64, usize>,
    /// Peers that served bytes that do not match the hash asked for.
    banned: std::collections::HashSet<libp2p::PeerId>,
    peer_store: PeerStore,
    peer_store_path: PathBuf,
    /// Open connections by peer, oldest first.
    connections: HashMap<libp2p::PeerId, Vec<libp2p::swarm::ConnectionId>>,
}

impl EventLoop {
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn info(&self, s: String) {
        self.events.send(NodeEvent::Info(s)).ok();
    }

    async fn run(mut self) -> Result<(), Error> {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut discover = tokio::time::interval(Duration::from_secs(2));
        loop {
            if let Some(t) = self.linger_until
                && Instant::now() >= t
            {
                return Ok(());
            }
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm(ev),
                Some(job) = self.jobs_rx.recv() => self.on_job(job),
                cmd = self.cmd_rx.recv() => match cmd {
                    Some(Command::Shutdown) | None => self.drive(InEvent::Shutdown),
                    Some(Command::Stats(tx)) => { let _ = tx.send(self.peer.stats().clone()); }
                },
                _ = tick.tick() => {
                    self.hedge_requests();
                    self.drive(InEvent::Tick);
                }
                _ = discover.tick() => {
                    let me = *self.swarm.local_peer_id();
                    self.swarm.behaviour_mut().kad.get_closest_peers(me);
                    let _ = self.peer_store.save(&self.peer_store_path);
                }
            }
        }
    }

    /// Feeds an event to the state machine and carries out what it asks,
    /// including the events that carrying out produces.
    fn drive(&mut self, ev: InEvent) {
        self.queue.push_back(ev);
        while let Some(ev) = self.queue.pop_front() {
            let now = self.now();
            let before = (self.peer.phase(), self.peer.round());
            let outs = self.peer.handle(ev, now);
            if before != (self.peer.phase(), self.peer.round()) {
                tracing::debug!(phase = ?self.peer.phase(), round = self.peer.round(), "phase");
            }
            for out in outs {
                self.execute(out);
            }
        }
    }

    fn execute(&mut self, out: OutEvent) {
        if !matches!(out, OutEvent::Broadcast(_) | OutEvent::KeepBlob { .. }) {
            tracing::debug!(?out, "protocol asks");
        }
        match out {
            OutEvent::Broadcast(bytes) => {
                let fanout = self
                    .swarm
                    .behaviour()
                    .gossipsub
                    .all_peers()
                    .filter(|(_, t)| t.contains(&&self.topic.hash()))
                    .count();
                let len = bytes.len() as u64;
                if self.swarm.behaviour_mut().gossipsub.publish(self.topic.clone(), bytes).is_ok() {
                    self.traffic.control.sent += len * fanout as u64;
                }
            }
            OutEvent::Fetch { hash, kind, providers } => {
                if self.blobs.get(&hash).is_some() {
                    self.queue.push_back(InEvent::BlobReady(hash));
                } else {
                    self.start_fetch(hash, kind, providers);
                }
            }
            OutEvent::KeepBlob { hash, bytes } => {
                let round = self.peer.round();
                self.blobs.insert_verified(round, hash, BlobKind::Manifest, Arc::new(bytes));
            }
            OutEvent::StartTraining { round, base_state } => self.start_training(round, base_state),
            OutEvent::LoadState { round, state } => {
                let n = self.spec_params();
                let loaded = match (self.blobs.get(&state), self.state.as_mut()) {
                    (Some(bytes), Some(s)) => s.load(&bytes, n),
                    _ => Err("state blob or model state missing".into()),
                };
                match loaded {
                    Ok(()) => {
                        self.info(format!("synced to the state of round {round} ({})", state.short()));
                        self.queue.push_back(InEvent::StateLoaded { round });
                    }
                    Err(e) => self.info(format!("cannot load state {}: {e}", state.short())),
                }
            }
            OutEvent::Apply { round, aggregator, manifest } => self.start_apply(round, aggregator, manifest),
            OutEvent::Finished => {
                self.events.send(NodeEvent::Finished).ok();
                // Keep serving blobs briefly so slower peers can finish.
                self.linger_until = Some(Instant::now() + Duration::from_secs(2));
            }
        }
    }

    fn flow(&mut self, kind: BlobKind) -> &mut Flow {
        match kind {
            BlobKind::Contribution => &mut self.traffic.grads,
            BlobKind::State => &mut self.traffic.state,
            BlobKind::Manifest => &mut self.traffic.control,
        }
    }

    fn spec_params(&self) -> usize {
        self.state.as_ref().map(|s| s.params.len()).unwrap_or_default()
    }

    fn start_training(&mut self, round: u64, base_state: Hash) {
        self.round_peers.insert(round, self.peer.members() + 1);
        let Some(state) = self.state.as_ref() else {
            return;
        };
        if state.hash() != base_state {
            self.info(format!("round {round}: local state differs from the protocol's; training anyway"));
        }
        let global = state.params.clone();
        let trainer = self.trainer.clone();
        let jobs = self.jobs.clone();
        let cfg = work::train_config(&self.spec);
        let codec = self.codec;
        let feedback = self.feedback.clone();
        let seed = work::batch_seed(&self.spec.run_id(), round, &self.peer.id());
        tokio::task::spawn_blocking(move || {
            let j2 = jobs.clone();
            let mut progress = |step: u32, loss: f32| {
                let _ = j2.send(Job::Step { round, step, loss });
            };
            let r = work::train(&trainer, &cfg, &codec, &feedback, round, &global, seed, &mut progress);
            let _ = jobs.send(Job::Trained(r));
        });
    }

    fn start_apply(&mut self, round: u64, aggregator: protocol::PeerId, manifest: protocol::Manifest) {
        let Some(state) = self.state.take() else {
            return;
        };
        let mut bytes = Vec::new();
        for e in &manifest.entries {
            self.blobs.retag(&e.hash, round);
            match self.blobs.get(&e.hash) {
                Some(b) => bytes.push(b),
                None => {
                    // The protocol only asks to apply once every blob is here.
                    self.info(format!("round {round}: blob {} was evicted; fetching it again", e.hash.short()));
                    self.state = Some(state);
                    self.queue.push_back(InEvent::BlobLost(e.hash));
                    return;
                }
            }
        }
        let trainer = self.eval_trainer.clone();
        let jobs = self.jobs.clone();
        let dir = Some((self.run_dir.clone(), self.spec.model.clone()));
        if aggregator == self.peer.id() {
            self.info(format!("round {round}: I aggregated {} contributions", manifest.entries.len()));
        }
        let contributed = manifest.entries.iter().any(|e| e.peer == self.peer.id());
        let contributors = manifest.entries.len();
        tokio::task::spawn_blocking(move || {
            let r = work::apply(&trainer, state, round, &manifest, &bytes, dir);
            let _ = jobs.send(Job::Applied(r));
        });
        self.pending_apply_meta = Some((contributed, contributors, aggregator.short()));
    }

    fn on_job(&mut self, job: Job) {
        match job {
            Job::Step { round, step, loss } => {
                let total = self.spec.train.inner_steps;
                self.events.send(NodeEvent::TrainStep { round, step, total, loss }).ok();
            }
            Job::Trained(Ok(t)) => {
                let payload = t.blob.len() as u64;
                let hash = self.blobs.add(t.round, BlobKind::Contribution, t.blob);
                self.trained.insert(t.round, (t.train_loss, payload, hash));
                self.drive(InEvent::TrainingDone { round: t.round, hash, samples: t.samples });
            }
            Job::Trained(Err(e)) => self.info(format!("training failed: {e}")),
            Job::Applied(Ok(a)) => self.on_applied(a),
            Job::Applied(Err(e)) => {
                self.info(format!("applying the round failed: {e}"));
                self.drive(InEvent::Shutdown);
            }
        }
    }

    fn on_applied(&mut self, a: work::Applied) {
        let round = a.round;
        let hash = a.hash;
        self.blobs.insert_verified(round, hash, BlobKind::State, Arc::new(a.blob));
        self.state = Some(a.state);
        self.blobs.evict_before(round);
        self.trained.retain(|r, _| *r >= round);
        self.round_peers.retain(|r, _| *r >= round);
        if !a.rejected.is_empty() {
            self.info(format!("round {round}: {} contributions did not decode and were skipped", a.rejected.len()));
        }
        let (contributed, contributors, aggregator) = self.pending_apply_meta.take().unwrap_or_default();
        let own = self.trained.get(&round).copied();
        let eval = a.eval.unwrap_or(trainer::Eval { loss: f32::NAN, accuracy: None });
        let traffic = self.traffic.since(&self.traffic_mark);
        let report = RoundReport {
            round,
            state_hash: hash.to_hex(),
            eval_loss: eval.loss,
            eval_accuracy: eval.accuracy,
            bytes_sent: traffic.total().sent,
            bytes_received: traffic.total().received,
            traffic,
            peers: self.round_peers.get(&round).copied().unwrap_or(0).max(self.peer.members() + 1),
            contributors,
            aggregator,
            contributed,
            train_loss: own.map(|o| o.0),
            payload_bytes: own.map(|o| o.1).unwrap_or(0),
            params: self.spec_params(),
            codec: self.codec.label(),
            peer: self.peer.id().short(),
            elapsed_ms: self.now(),
        };
        self.traffic_mark = self.traffic;
        self.events.send(NodeEvent::Round(Box::new(report))).ok();
        self.drive(InEvent::Applied { round, state: hash });
    }

    fn on_swarm(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                let id = *self.swarm.local_peer_id();
                self.events.send(NodeEvent::Listening(format!("{address}/p2p/{id}"))).ok();
            }
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                tracing::debug!(%peer_id, ?connection_id, dialer = endpoint.is_dialer(), "connection established");
                // A peer that restarted dials in anew while our old connection
                // to its dead process may linger: drop the old ones, or gossip
                // keeps going down the dead one.
                let conns = self.connections.entry(peer_id).or_default();
                let restarted = !conns.is_empty();
                for old in conns.drain(..) {
                    self.swarm.close_connection(old);
                }
                self.connections.entry(peer_id).or_default().push(connection_id);
                if restarted {
                    // gossipsub tells a peer our subscriptions only on its
                    // first connection; the restarted process never got them.
                    let gs = &mut self.swarm.behaviour_mut().gossipsub;
                    gs.unsubscribe(&self.topic);
                    let _ = gs.subscribe(&self.topic);
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, cause, .. } => {
                tracing::debug!(%peer_id, ?connection_id, ?cause, "connection closed");
                if let Some(c) = self.connections.get_mut(&peer_id) {
                    c.retain(|x| *x != connection_id);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                self.traffic.control.received += message.data.len() as u64;
                let now = self.now();
                // The envelope's signer must be the peer that published it on
                // gossipsub: one connection cannot speak for other identities.
                let signer = protocol::Envelope::open(&message.data).ok().map(|o| o.sender);
                let source = message.source.as_ref().and_then(crate::identity::protocol_peer);
                tracing::debug!(from = %propagation_source, signer = ?signer.map(|s| s.short()), "gossip");
                let verdict = if signer.is_some() && signer != source {
                    gossipsub::MessageAcceptance::Reject
                } else {
                    match self.peer.handle_gossip(&message.data, now) {
                        Ok(outs) => {
                            for o in outs {
                                self.execute(o);
                            }
                            self.drive(InEvent::Tick);
                            gossipsub::MessageAcceptance::Accept
                        }
                        Err(protocol::DropReason::StaleRound) => gossipsub::MessageAcceptance::Ignore,
                        Err(_) => gossipsub::MessageAcceptance::Reject,
                    }
                };
                self.swarm.behaviour_mut().gossipsub.report_message_validation_result(
                    &message_id,
                    &propagation_source,
                    verdict,
                );
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }))
                if info.protocols.contains(&net::KAD_PROTOCOL) =>
            {
                let addrs: Vec<String> = info.listen_addrs.iter().map(|a| format!("{a}/p2p/{peer_id}")).collect();
                if self.peer_store.peers.get(&peer_id.to_string()) != Some(&addrs) {
                    self.peer_store.remember(peer_id.to_string(), addrs);
                    let _ = self.peer_store.save(&self.peer_store_path);
                }
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::RoutingUpdated { peer, .. }))
                if !self.swarm.is_connected(&peer) =>
            {
                let _ = self.swarm.dial(peer);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Blobs(ev)) => self.on_blob_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(ev)) => tracing::debug!(?ev, "gossipsub"),
            _ => {}
        }
    }

    /// Runs queued events without adding one.
    fn drain(&mut self) {
        if let Some(ev) = self.queue.pop_front() {
            self.drive(ev);
        }
    }
}
