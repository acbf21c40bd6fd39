//! The RL node: collaborative GRPO with shared rollouts (SAPO-style).
//!
//! One event loop owns the libp2p swarm (the same behaviour as a DiLoCo
//! node: bootstrap, Kademlia, gossipsub) and the [`Pool`] of external
//! rollouts; a learner thread ([`learner`]) owns the policy. Each round the
//! node asks for its rollouts, publishes them as a blob announced by a
//! signed [`Message::Rollouts`] on the run's topic ([`exchange`]: receivers
//! fetch the payload on the blob protocol), waits (at most `rl.wait_ms`)
//! for enough fresh external groups, and has the learner train on `local` of
//! its own groups and up to `external` taken ones, each re-scored with the
//! learner's own checker first. A peer whose claimed rewards differ is
//! dropped for the rest of the run (its later announcements are refused at
//! the gossip layer, which also stops relaying them).
//!
//! Peers do not wait for each other beyond that: a slow or silent peer only
//! means fewer external groups.

mod exchange;
mod learner;
mod report;

pub use report::{RlEvent, RlRound};

use crate::error::Error;
use crate::net::{self, Behaviour};
use crate::peer_store::PeerStore;
use learner::{Done, Job};
use libp2p::futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Swarm, gossipsub};
use protocol::rollouts::{Pool, RolloutBatch, Rules};
use protocol::{Envelope, Keypair, Message, PeerId, RlSpec, Status};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How an RL node is started.
#[derive(Clone, Debug)]
pub struct RlConfig {
    /// The run.
    pub spec: RlSpec,
    /// Where the key lives.
    pub data_dir: PathBuf,
    /// Bootstrap addresses.
    pub bootstrap: Vec<String>,
    /// Listen address.
    pub listen: String,
    /// Dial attempts per bootstrap address.
    pub bootstrap_attempts: u32,
    /// How this peer lies (the attack suite): `InflateRewards` claims
    /// reward 1 for every published completion, `WrongBytes` serves
    /// corrupted rollout payloads; the others are DiLoCo attacks.
    pub adversary: Option<crate::adversary::Adversary>,
}

/// A started RL node: its events and the task to await.
pub type Started = (mpsc::UnboundedReceiver<RlEvent>, tokio::task::JoinHandle<Result<(), Error>>);

/// Peers whose hellos are remembered (for the start quorum).
const MAX_HELLO_PEERS: usize = 1024;

/// The largest blob an RL node accepts on the blob protocol: a rollout
/// batch (each request is bounded by its announced size, too).
const MAX_BLOB: usize = protocol::rollouts::MAX_BATCH_BYTES;

/// Starts an RL node: key, swarm, bootstrap, learner thread; then the event
/// loop in a task. `stop` ends it after the round in progress.
pub async fn start(cfg: RlConfig, stop: mpsc::UnboundedReceiver<()>) -> Result<Started, Error> {
    let rules = trainer::rl::rules(&cfg.spec).map_err(|e| Error::Rl(e.to_string()))?;
    let key = crate::identity::load_or_create(&cfg.data_dir.join("key"))?;
    let run = cfg.spec.run_id();
    let mut swarm = net::build_rl(&key, MAX_BLOB)?;
    swarm.listen_on(net::parse_addr(&cfg.listen)?).map_err(|e| Error::Net(e.to_string()))?;
    let topic = gossipsub::IdentTopic::new(format!("swarm/rl/{}", run.to_hex()));
    swarm.behaviour_mut().gossipsub.subscribe(&topic).map_err(|e| Error::Net(e.to_string()))?;
    let (events, events_rx) = mpsc::unbounded_channel();
    let (node_events, mut node_rx) = mpsc::unbounded_channel();
    let store = PeerStore::load(&cfg.data_dir.join("peers.json"));
    crate::dial::reach_bootstrap(&mut swarm, &cfg.bootstrap, cfg.bootstrap_attempts, &store, &node_events).await?;
    while let Ok(ev) = node_rx.try_recv() {
        match ev {
            crate::NodeEvent::Listening(a) => events.send(RlEvent::Listening(a)).ok(),
            crate::NodeEvent::Info(s) => events.send(RlEvent::Info(s)).ok(),
            _ => None,
        };
    }
    let me = key.peer_id();
    let seed = u64::from_le_bytes(me.0[..8].try_into().expect("8 bytes"));
    let (jobs, done) = learner::start(cfg.spec.clone(), seed);
    events
        .send(RlEvent::Info(format!(
            "peer {} joined RL run {} ({}, rounds 1..={}, I/J = {}/{}, G = {}); {}",
            me.short(),
            &run.to_hex()[..16],
            cfg.spec.model,
            cfg.spec.rounds,
            cfg.spec.rl.local,
            cfg.spec.rl.external,
            cfg.spec.rl.group,
            match cfg.spec.rl.sft_steps {
                0 => "loading the policy".to_string(),
                n => format!("warming up the policy ({n} steps)"),
            }
        )))
        .ok();
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64);
    let lp = RlLoop {
        run,
        rules,
        session: now_ms.unwrap_or(1),
        spec: cfg.spec,
        key,
        swarm,
        topic,
        events,
        jobs: Some(jobs),
        done,
        stop,
        pool: Pool::new(),
        exchange: exchange::Exchange::default(),
        phase: Phase::Warming,
        round: 0,
        current: Current::default(),
        warned_alone: false,
        adversary: cfg.adversary,
        rejected: 0,
        hellos: BTreeMap::new(),
        seq: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1),
    };
    Ok((events_rx, tokio::spawn(lp.run())))
}

#[derive(Debug, PartialEq)]
enum Phase {
    /// The learner is warming up the policy.
    Warming,
    /// Waiting for `min_peers` (until the deadline).
    Starting(Instant),
    /// The learner generates this round's rollouts.
    Generating,
    /// Rollouts published; waiting for external groups until the deadline.
    Waiting(Instant),
    /// The learner trains.
    Training,
    /// Done (or stopping).
    Over,
}

/// This round's figures so far.
#[derive(Default)]
struct Current {
    started: Option<Instant>,
    local: Vec<protocol::rollouts::Rollout>,
    tokens: usize,
    gen_secs: f64,
    /// Groups published this round.
    shared: usize,
}

struct RlLoop {
    run: protocol::Hash,
    rules: Rules,
    /// Our session (start time in ms): rounds count from 1 in each.
    session: u64,
    spec: RlSpec,
    key: Keypair,
    swarm: Swarm<Behaviour>,
    topic: gossipsub::IdentTopic,
    events: mpsc::UnboundedSender<RlEvent>,
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    done: mpsc::UnboundedReceiver<Done>,
    stop: mpsc::UnboundedReceiver<()>,
    pool: Pool,
    /// Rollout payloads served and being fetched.
    exchange: exchange::Exchange,
    phase: Phase,
    round: u64,
    current: Current,
    warned_alone: bool,
    adversary: Option<crate::adversary::Adversary>,
    /// Groups of batches rejected by re-scoring since the last report.
    rejected: usize,
    /// Per peer on the topic: its last hello's counter and whether it is
    /// ready (warmed up).
    hellos: BTreeMap<PeerId, (u64, bool)>,
    /// Our hello counter (starts from the clock, so it grows across restarts).
    seq: u64,
}

impl RlLoop {
    async fn run(mut self) -> Result<(), Error> {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut hello = tokio::time::interval(Duration::from_secs(1));
        let mut stopping = false;
        while self.phase != Phase::Over {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm(ev),
                done = self.done.recv() => match done {
                    Some(d) => self.on_done(d, stopping)?,
                    None => return Err(Error::Rl("the learner thread ended".into())),
                },
                _ = tick.tick() => self.on_tick(),
                _ = hello.tick() => self.hello(),
                Some(()) = self.stop.recv(), if !stopping => {
                    stopping = true;
                    self.say("leaving after this round".into());
                    if matches!(self.phase, Phase::Warming | Phase::Starting(_)) {
                        self.phase = Phase::Over;
                    }
                }
            }
        }
        self.jobs = None;
        // Relay a little longer so the last batch reaches everyone.
        let linger = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(linger);
        loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm(ev),
                _ = &mut linger => break,
            }
        }
        self.events.send(RlEvent::Finished).ok();
        Ok(())
    }

    fn say(&self, s: String) {
        self.events.send(RlEvent::Info(s)).ok();
    }

    fn send(&self, job: Job) {
        if let Some(j) = &self.jobs {
            let _ = j.send(job);
        }
    }

    /// Says every second whether we are ready (warmed up): peers start
    /// round 1 once `min_peers` are.
    fn hello(&mut self) {
        self.seq += 1;
        let status = if self.phase == Phase::Warming { Status::Waiting } else { Status::Active };
        let msg = Message::Hello { status, seq: self.seq, recent: Vec::new() };
        if let Ok(bytes) = Envelope::seal(&self.key, self.run, 0, &msg) {
            let _ = self.swarm.behaviour_mut().gossipsub.publish(self.topic.clone(), bytes);
        }
    }

    /// Peers (us included) that said they are ready.
    fn ready_peers(&self) -> usize {
        1 + self.hellos.values().filter(|(_, ready)| *ready).count()
    }

    fn on_tick(&mut self) {
        match self.phase {
            Phase::Starting(deadline) => {
                let ready = self.ready_peers();
                if ready >= self.spec.min_peers as usize || Instant::now() >= deadline {
                    self.say(format!("starting round 1 with {ready} ready peer(s)"));
                    self.next_round();
                }
            }
            Phase::Waiting(deadline) => {
                let want = self.spec.rl.external as usize;
                let fresh = self.pool.fresh_count(self.round, self.spec.rl.max_age);
                // Alone on the topic: nobody to wait for.
                let alone = self.swarm.behaviour().gossipsub.all_peers().all(|(_, t)| !t.contains(&&self.topic.hash()));
                if fresh >= want || alone || Instant::now() >= deadline {
                    self.train();
                }
            }
            _ => {}
        }
    }

    fn candidates(&self) -> Vec<protocol::rollouts::Candidate> {
        let r = &self.spec.rl;
        self.pool.candidates(self.round, r.max_age, r.select == "informative", self.round)
    }

    fn next_round(&mut self) {
        if self.round >= self.spec.rounds {
            self.phase = Phase::Over;
            return;
        }
        self.round += 1;
        self.current = Current { started: Some(Instant::now()), ..Current::default() };
        self.phase = Phase::Generating;
        self.send(Job::Generate(self.round));
    }

    fn train(&mut self) {
        let r = &self.spec.rl;
        let local =
            trainer::rl::Learner::choose_local(&self.current.local, r.local as usize, r.select == "informative");
        let evaluate = self.round == self.spec.rounds || (r.eval_every > 0 && self.round.is_multiple_of(r.eval_every));
        let candidates = if r.external > 0 { self.candidates() } else { Vec::new() };
        let external = r.external as usize;
        self.phase = Phase::Training;
        self.send(Job::Train { round: self.round, local, candidates, external, evaluate });
    }

    fn on_done(&mut self, d: Done, stopping: bool) -> Result<(), Error> {
        match d {
            Done::Warmup { step, total, loss } => {
                self.events.send(RlEvent::Warmup { step, total, loss }).ok();
            }
            Done::Ready { accuracy, secs } => {
                let mean = accuracy.iter().map(|(_, a)| a).sum::<f32>() / accuracy.len().max(1) as f32;
                self.say(format!("policy ready in {secs:.1} s: held-out accuracy {mean:.3}"));
                if self.phase == Phase::Warming {
                    self.phase = Phase::Starting(Instant::now() + Duration::from_millis(self.spec.rl.start_wait_ms));
                }
            }
            Done::Generated { round, mut rollouts, tokens, secs } => {
                let mut published = rollouts.clone();
                if self.adversary == Some(crate::adversary::Adversary::InflateRewards) {
                    for g in &mut published {
                        g.rewards.iter_mut().for_each(|x| *x = 1.0);
                    }
                }
                let batch = RolloutBatch { session: self.session, round, rollouts: published };
                self.publish(round, batch);
                self.current.tokens += tokens;
                self.current.gen_secs = secs;
                self.current.local = std::mem::take(&mut rollouts);
                self.phase = Phase::Waiting(Instant::now() + Duration::from_millis(self.spec.rl.wait_ms));
                self.on_tick();
            }
            Done::Trained(t) => {
                for (peer, r, task) in &t.taken {
                    self.pool.mark_used(*peer, *r, *task);
                }
                self.report(t);
                if stopping {
                    self.phase = Phase::Over;
                } else {
                    self.next_round();
                }
            }
            Done::Failed(e) => return Err(Error::Rl(e)),
        }
        Ok(())
    }

    fn report(&mut self, t: learner::Trained) {
        let learner::Trained { round, update, taken, accuracy: eval, tokens, secs: train_secs } = t;
        let rejected = std::mem::take(&mut self.rejected);
        let (fetched, fetched_bytes) = std::mem::take(&mut self.exchange.fetched);
        let unserved = std::mem::take(&mut self.exchange.unserved);
        let wrong_bytes = std::mem::take(&mut self.exchange.wrong);
        let local = &self.current.local;
        let mut by_family: BTreeMap<u8, (f32, usize)> = BTreeMap::new();
        let (mut sum, mut n) = (0f32, 0usize);
        for g in local {
            let e = by_family.entry(g.task.family).or_default();
            e.0 += g.rewards.iter().sum::<f32>();
            e.1 += g.rewards.len();
            sum += g.rewards.iter().sum::<f32>();
            n += g.rewards.len();
        }
        let reward = sum / n.max(1) as f32;
        let work = self.current.gen_secs + train_secs;
        let r = RlRound {
            round,
            reward,
            reward_by_family: by_family
                .into_iter()
                .map(|(f, (s, k))| (trainer::rl::tasks::family_name(f).to_string(), s / k.max(1) as f32))
                .collect(),
            eval: eval.map(|v| v.into_iter().map(|(f, a)| (f.to_string(), a)).collect()),
            tokens_per_s: (self.current.tokens + tokens) as f64 / work.max(1e-9),
            shared: self.current.shared,
            taken: taken.len(),
            rejected,
            fetched,
            fetched_bytes,
            unserved,
            wrong_bytes,
            dropped_peers: self.pool.dropped(),
            pool_peers: self.pool.peers(),
            loss: update.loss,
            samples: update.samples,
            secs: self.current.started.map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0),
        };
        self.events.send(RlEvent::Round(Box::new(r))).ok();
    }

    fn on_swarm(&mut self, ev: SwarmEvent<net::BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                let id = *self.swarm.local_peer_id();
                self.events.send(RlEvent::Listening(format!("{address}/p2p/{id}"))).ok();
            }
            SwarmEvent::Behaviour(net::BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                let source = message.source.as_ref().and_then(crate::identity::protocol_peer);
                // An announcement's verdict waits for its payload.
                if let Some(verdict) = self.on_gossip(&message.data, source, &message_id, propagation_source) {
                    self.swarm.behaviour_mut().gossipsub.report_message_validation_result(
                        &message_id,
                        &propagation_source,
                        verdict,
                    );
                }
            }
            SwarmEvent::Behaviour(net::BehaviourEvent::Blobs(ev)) => self.on_blob_event(ev),
            SwarmEvent::Behaviour(net::BehaviourEvent::Identify(libp2p::identify::Event::Received {
                peer_id,
                info,
                ..
            })) if info.protocols.contains(&net::KAD_PROTOCOL) => {
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(net::BehaviourEvent::Kad(libp2p::kad::Event::RoutingUpdated { peer, .. }))
                if !self.swarm.is_connected(&peer) =>
            {
                let _ = self.swarm.dial(peer);
            }
            _ => {}
        }
    }

    /// Checks a gossip message in order: size and signature, signer is the
    /// author (where gossip names one; it is anonymous), run, then content.
    /// A hello is judged at once; a rollout announcement once its payload
    /// is fetched and checked (`None` here).
    fn on_gossip(
        &mut self,
        data: &[u8],
        source: Option<protocol::PeerId>,
        message_id: &gossipsub::MessageId,
        via: libp2p::PeerId,
    ) -> Option<gossipsub::MessageAcceptance> {
        use gossipsub::MessageAcceptance::{Accept, Ignore, Reject};
        let Ok(opened) = Envelope::open(data) else { return Some(Reject) };
        if source.is_some_and(|s| s != opened.sender) || opened.run != self.run {
            return Some(Reject);
        }
        match opened.message() {
            Ok(Message::Rollouts(a)) => self.on_announce(opened.sender, opened.round, a, message_id, via),
            Ok(Message::Hello { status, seq, .. }) => {
                if !self.hellos.contains_key(&opened.sender) && self.hellos.len() >= MAX_HELLO_PEERS {
                    return Some(Ignore);
                }
                let last = self.hellos.entry(opened.sender).or_insert((0, false));
                if seq <= last.0 {
                    return Some(Ignore);
                }
                *last = (seq, status == Status::Active);
                Some(Accept)
            }
            _ => Some(Reject),
        }
    }
}
