//! Collaborative RL (SAPO-style rollout sharing): the run spec of an RL run,
//! the rollout batches peers publish, and the pool a peer takes external
//! rollouts from.
//!
//! Each peer trains its own copy of the policy with GRPO. Every round it
//! generates rollouts (a group of completions per task), publishes them as a
//! [`RolloutBatch`] (a blob, announced on gossip by a signed [`Announce`])
//! and builds its training batch from `local` of its
//! own task groups and `external` ones taken from others. A task is
//! `(family, seed, level)`, so a receiver regenerates it and re-scores every
//! completion with its own checker: a peer whose claimed rewards differ is
//! dropped ([`Pool::drop_peer`]) and its rollouts are never used.
//!
//! No I/O here: the node feeds the pool the batches it fetched and checked
//! against their announcements (which come by gossip) and asks it for
//! candidates; the checker lives with the task families in `trainer`.

mod announce;

pub use announce::{Announce, MAX_BATCH_BYTES, PayloadError, batch_bound};

use crate::id::{Hash, PeerId};
use crate::rng::SplitMix64;
use crate::spec::SpecError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// At most this many task groups in one batch.
pub const MAX_ROLLOUTS: usize = 64;
/// At most this many completions per task group.
pub const MAX_GROUP: usize = 32;
/// At most this many bytes per completion.
pub const MAX_COMPLETION_BYTES: usize = 1024;
/// Number of task families a task reference may name.
pub const FAMILIES: u8 = 7;
/// Highest difficulty level.
pub const MAX_LEVEL: u8 = 3;
/// Completions kept in the pool per peer (its newest batches).
const KEEP_PER_PEER: usize = 4 * MAX_ROLLOUTS;
/// Publishers the pool keeps rollouts of (the least recently heard from
/// goes first): fresh keys cost nothing, memory does.
pub const MAX_POOL_PEERS: usize = 256;
/// Dropped peers remembered (the oldest are forgotten first).
pub const MAX_DROPPED: usize = 4096;
/// Version of the task families' generators and checkers (`trainer::rl::tasks`):
/// part of an RL run's id, so peers whose checkers differ never share a run
/// (they would take each other for liars). Bump it with any change there.
pub const TASKS_VERSION: u32 = 1;

/// Names a procedural task: anyone regenerates its question and answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskRef {
    /// The family (`0..FAMILIES`; names in `trainer::rl::tasks`).
    pub family: u8,
    /// The generator's seed.
    pub seed: u64,
    /// Difficulty, `1..=MAX_LEVEL`.
    pub level: u8,
}

/// One task and a group of sampled completions with the rewards the sender
/// claims its checker gave them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// The task.
    pub task: TaskRef,
    /// The completions (text after the prompt, up to the end token).
    #[serde(deserialize_with = "announce::de_completions")]
    pub completions: Vec<String>,
    /// The claimed reward of each completion.
    #[serde(deserialize_with = "announce::de_rewards")]
    pub rewards: Vec<f32>,
}

impl Rollout {
    /// Whether the rewards differ (a group whose rewards are all equal has
    /// zero advantage and teaches nothing).
    pub fn informative(&self) -> bool {
        self.rewards.iter().any(|&x| x != self.rewards[0])
    }
}

/// What a peer publishes each round: a blob, announced by a signed
/// [`Announce`] in [`Message::Rollouts`](crate::Message::Rollouts).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutBatch {
    /// The sender's session: when its process started (ms since the epoch).
    /// A restarted peer counts rounds from 1 again in a new session.
    pub session: u64,
    /// The sender's round in its session: the policy that sampled these is
    /// its policy after `round - 1` updates.
    pub round: u64,
    /// The task groups.
    #[serde(deserialize_with = "announce::de_groups")]
    pub rollouts: Vec<Rollout>,
}

/// Why a batch was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RolloutError {
    /// Over a size bound.
    #[error("rollout batch too large: {0}")]
    TooLarge(String),
    /// Inconsistent content.
    #[error("invalid rollout batch: {0}")]
    Invalid(String),
    /// From a peer whose claimed rewards did not match re-scoring.
    #[error("from a dropped peer")]
    Dropped,
    /// Not what this run's spec asks for (group count or size, level,
    /// family, completion length or characters).
    #[error("does not follow the run's spec: {0}")]
    OffSpec(String),
    /// A (session, round) not newer than one already seen from the sender.
    #[error("replayed: session {session} round {round}")]
    Replayed {
        /// The batch's session.
        session: u64,
        /// The batch's round.
        round: u64,
    },
    /// Claimed rewards that re-scoring does not confirm (the sender is dropped).
    #[error("claimed rewards {claimed:?} for task {task:?}, re-scored {rescored:?}")]
    Lied {
        /// The first group whose rewards differ.
        task: TaskRef,
        /// What the sender claimed.
        claimed: Vec<f32>,
        /// What the receiver's checker gives.
        rescored: Vec<f32>,
    },
}

impl RolloutBatch {
    /// Checks the bounds and the consistency of every group.
    pub fn validate(&self) -> Result<(), RolloutError> {
        if self.rollouts.len() > MAX_ROLLOUTS {
            return Err(RolloutError::TooLarge(format!(
                "{} task groups (at most {MAX_ROLLOUTS})",
                self.rollouts.len()
            )));
        }
        for r in &self.rollouts {
            let t = r.task;
            if t.family >= FAMILIES || t.level == 0 || t.level > MAX_LEVEL {
                return Err(RolloutError::Invalid(format!("no task family {} at level {}", t.family, t.level)));
            }
            if r.completions.is_empty() || r.completions.len() > MAX_GROUP {
                return Err(RolloutError::TooLarge(format!("{} completions (1..={MAX_GROUP})", r.completions.len())));
            }
            if r.rewards.len() != r.completions.len() {
                return Err(RolloutError::Invalid(format!(
                    "{} rewards for {} completions",
                    r.rewards.len(),
                    r.completions.len()
                )));
            }
            if let Some(c) = r.completions.iter().find(|c| c.len() > MAX_COMPLETION_BYTES) {
                return Err(RolloutError::TooLarge(format!("a completion of {} bytes", c.len())));
            }
            if r.rewards.iter().any(|x| !x.is_finite()) {
                return Err(RolloutError::Invalid("a reward that is not a finite number".into()));
            }
        }
        Ok(())
    }
}

/// What a receiver's spec allows in a batch, beyond the wire bounds.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    /// Task groups per batch at most (`rl.generate`).
    pub generate: usize,
    /// Completions per group (`rl.group`).
    pub group: usize,
    /// Most characters per completion (`rl.max_tokens`: the small policy
    /// reads one token per character).
    pub max_chars: usize,
    /// The task level (`rl.level`).
    pub level: u8,
    /// The family indices the run samples from.
    pub families: Vec<u8>,
    /// Received groups stay candidates for this many of the receiver's rounds.
    pub max_age: u64,
}

impl Rules {
    /// The most bytes a batch of this run encodes to: an announcement of
    /// more is refused before its payload is fetched.
    pub fn max_batch_bytes(&self) -> usize {
        batch_bound(self.generate, self.group, self.max_chars)
    }

    /// Checks every group of a (validated) batch against the spec: a
    /// completion must be printable ASCII of at most `max_chars` (what the
    /// receiver's policy can read back exactly as scored).
    pub fn check(&self, batch: &RolloutBatch) -> Result<(), RolloutError> {
        if batch.rollouts.len() > self.generate {
            return Err(RolloutError::OffSpec(format!(
                "{} task groups, more than the {} a round generates",
                batch.rollouts.len(),
                self.generate
            )));
        }
        for r in &batch.rollouts {
            let t = r.task;
            if t.level != self.level || !self.families.contains(&t.family) {
                return Err(RolloutError::OffSpec(format!("family {} level {} is not this run's", t.family, t.level)));
            }
            if r.completions.len() != self.group {
                return Err(RolloutError::OffSpec(format!("{} completions, not {}", r.completions.len(), self.group)));
            }
            for c in &r.completions {
                if c.len() > self.max_chars || !c.bytes().all(|b| (b' '..=b'~').contains(&b)) {
                    return Err(RolloutError::OffSpec(format!(
                        "a completion of {} bytes that is not printable ASCII of at most {}",
                        c.len(),
                        self.max_chars
                    )));
                }
            }
        }
        Ok(())
    }
}

/// An RL run: who trains what, on which tasks, how rollouts are shared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlSpec {
    /// The policy's model name in the zoo.
    pub model: String,
    /// Seed of the initial policy (and of its supervised warm-up).
    pub seed: u64,
    /// Rounds (policy updates) per peer.
    pub rounds: u64,
    /// A peer starts once this many peers (itself included) are present, or
    /// after `start_wait_ms`.
    pub min_peers: u32,
    /// GRPO and sharing.
    pub rl: RlParams,
}

/// GRPO, sampling and sharing settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlParams {
    /// Task groups generated (and published) per round.
    pub generate: u32,
    /// I: own task groups in a training batch.
    pub local: u32,
    /// J: external task groups in a training batch.
    pub external: u32,
    /// How groups are chosen: `informative` (groups whose rewards differ
    /// first: the others have zero advantage) or `random`.
    pub select: String,
    /// G: completions per task.
    pub group: u32,
    /// Sampling temperature.
    pub temperature: f64,
    /// Most tokens per completion.
    pub max_tokens: u32,
    /// Task families (by name) the peer samples from.
    pub families: Vec<String>,
    /// Difficulty of sampled tasks, `1..=3`.
    pub level: u8,
    /// Policy learning rate (AdamW).
    pub lr: f64,
    /// PPO clip below 1 (eps).
    pub clip_low: f64,
    /// PPO clip above 1 (DAPO's clip-higher when larger than `clip_low`).
    pub clip_high: f64,
    /// Optimisation passes over each batch (1 = on-policy: the ratio is 1
    /// and clipping never binds).
    pub epochs: u32,
    /// KL penalty (0: none, as in SAPO; only 0 is implemented).
    pub kl: f64,
    /// Supervised warm-up steps on the task text before RL (the small
    /// policy's pre-training; 0 for a pretrained policy).
    pub sft_steps: u32,
    /// External rollouts at most this many rounds older than ours.
    pub max_age: u64,
    /// After publishing, wait at most this long for `external` groups.
    pub wait_ms: u64,
    /// Wait at most this long for `min_peers` before round 1.
    pub start_wait_ms: u64,
    /// Greedy held-out evaluation every this many rounds (0 = only at the end).
    pub eval_every: u64,
}

impl RlSpec {
    /// The run id: BLAKE3 of a tag (with [`TASKS_VERSION`]) and the spec's
    /// encoding (never equal to a DiLoCo run's id). The tag's `2` is the
    /// exchange's version: rollouts as announced blobs (`1` gossiped whole
    /// batches), so peers of the two never share a run.
    pub fn run_id(&self) -> Hash {
        let mut bytes = format!("swarm/rl/2/tasks/{TASKS_VERSION}").into_bytes();
        bytes.extend(
            bincode::serde::encode_to_vec(self, bincode::config::standard()).expect("an RlSpec always encodes"),
        );
        Hash::of(&bytes)
    }

    /// Parses TOML and checks every field.
    pub fn from_toml(s: &str) -> Result<RlSpec, SpecError> {
        let spec: RlSpec = toml::from_str(s).map_err(|e| SpecError::Parse(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// TOML that [`RlSpec::from_toml`] reads back to the same spec.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("an RlSpec always serialises")
    }

    /// Checks every field's range (family names are checked by the trainer).
    pub fn validate(&self) -> Result<(), SpecError> {
        fn bad(field: &'static str, reason: impl Into<String>) -> Result<(), SpecError> {
            Err(SpecError::Invalid { field, reason: reason.into() })
        }
        let r = &self.rl;
        if self.model.is_empty() {
            return bad("model", "must not be empty");
        }
        if self.rounds == 0 || self.rounds > 1_000_000 {
            return bad("rounds", "must be between 1 and 1000000");
        }
        if self.min_peers == 0 || self.min_peers > 10_000 {
            return bad("min_peers", "must be between 1 and 10000");
        }
        if r.generate == 0 || r.generate as usize > MAX_ROLLOUTS {
            return bad("rl.generate", format!("must be between 1 and {MAX_ROLLOUTS}"));
        }
        if r.local > r.generate {
            return bad("rl.local", "must not exceed rl.generate");
        }
        let batch = r.local.saturating_add(r.external);
        if batch == 0 || batch as usize > 2 * MAX_ROLLOUTS {
            return bad("rl.external", "rl.local + rl.external must be between 1 and 128");
        }
        if !matches!(r.select.as_str(), "informative" | "random") {
            return bad("rl.select", "must be `informative` or `random`");
        }
        if r.group < 2 || r.group as usize > MAX_GROUP {
            return bad("rl.group", format!("must be between 2 and {MAX_GROUP} (advantages compare a group)"));
        }
        if !(r.temperature.is_finite() && r.temperature > 0.0 && r.temperature <= 10.0) {
            return bad("rl.temperature", "must be in (0, 10]");
        }
        if r.max_tokens == 0 || r.max_tokens > 256 {
            return bad("rl.max_tokens", "must be between 1 and 256");
        }
        if r.families.is_empty() {
            return bad("rl.families", "must name at least one family");
        }
        if r.level == 0 || r.level > MAX_LEVEL {
            return bad("rl.level", format!("must be between 1 and {MAX_LEVEL}"));
        }
        if !(r.lr.is_finite() && r.lr > 0.0 && r.lr < 1.0) {
            return bad("rl.lr", "must be in (0, 1)");
        }
        let clip = |x: f64| x.is_finite() && x > 0.0 && x < 1.0;
        if !clip(r.clip_low) || !clip(r.clip_high) {
            return bad("rl.clip_low", "rl.clip_low and rl.clip_high must be in (0, 1)");
        }
        if r.epochs == 0 || r.epochs > 16 {
            return bad("rl.epochs", "must be between 1 and 16");
        }
        if r.kl != 0.0 {
            return bad("rl.kl", "only 0 (no KL penalty) is implemented");
        }
        if r.sft_steps > 100_000 {
            return bad("rl.sft_steps", "must be at most 100000");
        }
        // A round's batch is a blob: with generate, group and max_tokens
        // bounded above, at most 64 x 32 x 256 characters (about 540 KB),
        // under MAX_BATCH_BYTES.
        if r.max_age == 0 || r.max_age > 1_000 {
            return bad("rl.max_age", "must be between 1 and 1000");
        }
        if r.eval_every > 1_000_000 {
            return bad("rl.eval_every", "must be at most 1000000");
        }
        if r.wait_ms > 600_000 || r.start_wait_ms > 3_600_000 {
            return bad("rl.wait_ms", "rl.wait_ms at most 10 min, rl.start_wait_ms at most 1 h");
        }
        Ok(())
    }
}

/// External rollouts received, per peer, plus the peers dropped for lying.
///
/// Groups age in the receiver's rounds (from when they arrived), not in the
/// sender's: peers count rounds on their own, a late joiner from 1.
#[derive(Debug, Default)]
pub struct Pool {
    peers: BTreeMap<PeerId, Publisher>,
    /// Dropped peers: when (a counter) and why.
    dropped: BTreeMap<PeerId, (u64, String)>,
    drops: u64,
}

#[derive(Debug)]
struct Publisher {
    /// The newest (session, round) seen.
    last: (u64, u64),
    /// The receiver's round when it was last heard from.
    heard: u64,
    /// Its groups, oldest first.
    groups: Vec<Held>,
}

#[derive(Debug)]
struct Held {
    /// The receiver's round when it arrived.
    arrived: u64,
    /// The sender's round.
    round: u64,
    rollout: Rollout,
    used: bool,
}

/// A candidate external task group.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// Who published it.
    pub peer: PeerId,
    /// Its round (the sender's).
    pub round: u64,
    /// The group.
    pub rollout: Rollout,
}

impl Pool {
    /// An empty pool.
    pub fn new() -> Pool {
        Pool::default()
    }

    /// Takes a batch `from` a peer (whose signature the caller checked) in
    /// the receiver's round `ours`. Checks, in order: a dropped sender, the
    /// wire bounds, the run's `rules`, then re-scores every group with the
    /// receiver's checker `rescore` (a sender whose claimed rewards differ
    /// anywhere is dropped), then refuses a replay. Returns the groups kept.
    pub fn offer(
        &mut self,
        from: PeerId,
        batch: RolloutBatch,
        ours: u64,
        rules: &Rules,
        rescore: &dyn Fn(&Rollout) -> Vec<f32>,
    ) -> Result<usize, RolloutError> {
        if self.dropped.contains_key(&from) {
            return Err(RolloutError::Dropped);
        }
        batch.validate()?;
        rules.check(&batch)?;
        for g in &batch.rollouts {
            let rescored = rescore(g);
            if rescored != g.rewards {
                let lie = RolloutError::Lied { task: g.task, claimed: g.rewards.clone(), rescored };
                self.drop_peer(from, lie.to_string());
                return Err(lie);
            }
        }
        let key = (batch.session, batch.round);
        if let Some(p) = self.peers.get(&from)
            && key <= p.last
        {
            return Err(RolloutError::Replayed { session: batch.session, round: batch.round });
        }
        self.prune(ours, rules.max_age);
        if !self.peers.contains_key(&from) && self.peers.len() >= MAX_POOL_PEERS {
            let quietest = self.peers.iter().min_by_key(|(_, p)| p.heard).map(|(k, _)| *k);
            if let Some(k) = quietest {
                self.peers.remove(&k);
            }
        }
        let p = self.peers.entry(from).or_insert(Publisher { last: key, heard: ours, groups: Vec::new() });
        (p.last, p.heard) = (key, ours);
        let n = batch.rollouts.len();
        let round = batch.round;
        p.groups.extend(batch.rollouts.into_iter().map(|rollout| Held { arrived: ours, round, rollout, used: false }));
        let excess = p.groups.len().saturating_sub(KEEP_PER_PEER);
        p.groups.drain(..excess);
        Ok(n)
    }

    /// Whether `peer` has rollouts in the pool (or had, and was not
    /// evicted): a publisher whose batches passed re-scoring.
    pub fn knows(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// Whether a batch `(session, round)` from `peer` would be refused as a
    /// replay (checked before its payload is fetched).
    pub fn is_replay(&self, peer: &PeerId, session: u64, round: u64) -> bool {
        self.peers.get(peer).is_some_and(|p| (session, round) <= p.last)
    }

    /// Forgets groups older than `max_age` of our rounds.
    fn prune(&mut self, ours: u64, max_age: u64) {
        for p in self.peers.values_mut() {
            p.groups.retain(|g| g.arrived.saturating_add(max_age) >= ours);
        }
    }

    fn fresh(&self, ours: u64, max_age: u64) -> impl Iterator<Item = (&PeerId, &Held)> {
        self.peers
            .iter()
            .flat_map(|(k, p)| p.groups.iter().map(move |g| (k, g)))
            .filter(move |(_, g)| !g.used && g.arrived.saturating_add(max_age) >= ours)
    }

    /// How many unused groups arrived at most `max_age` of our rounds ago.
    pub fn fresh_count(&self, ours: u64, max_age: u64) -> usize {
        self.fresh(ours, max_age).count()
    }

    /// Fresh, unused groups in selection order: shuffled with `seed`; with
    /// `informative`, groups whose claimed (and re-scored) rewards differ
    /// come first. The newest arrivals first within each class.
    pub fn candidates(&self, ours: u64, max_age: u64, informative: bool, seed: u64) -> Vec<Candidate> {
        let mut out: Vec<(u64, Candidate)> = self
            .fresh(ours, max_age)
            .map(|(k, g)| (g.arrived, Candidate { peer: *k, round: g.round, rollout: g.rollout.clone() }))
            .collect();
        let mut rng = SplitMix64::new(seed);
        for i in (1..out.len()).rev() {
            let j = rng.range(0, i as u64) as usize;
            out.swap(i, j);
        }
        out.sort_by_key(|(arrived, c)| (informative && !c.rollout.informative(), std::cmp::Reverse(*arrived)));
        out.into_iter().map(|(_, c)| c).collect()
    }

    /// Marks a group as used for training (it is never a candidate again).
    pub fn mark_used(&mut self, peer: PeerId, round: u64, task: TaskRef) {
        if let Some(p) = self.peers.get_mut(&peer) {
            for g in p.groups.iter_mut().filter(|g| g.round == round && g.rollout.task == task) {
                g.used = true;
            }
        }
    }

    /// Drops a peer whose claimed rewards did not survive re-scoring: its
    /// rollouts go, and it is refused from now on (the [`MAX_DROPPED`]
    /// most recent are remembered). Returns whether it was new.
    pub fn drop_peer(&mut self, peer: PeerId, why: String) -> bool {
        self.peers.remove(&peer);
        self.drops += 1;
        let why: String = why.chars().take(300).collect();
        let new = self.dropped.insert(peer, (self.drops, why)).is_none();
        if self.dropped.len() > MAX_DROPPED {
            let oldest = self.dropped.iter().min_by_key(|(_, (n, _))| *n).map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.dropped.remove(&k);
            }
        }
        new
    }

    /// Whether a peer was dropped (and is remembered).
    pub fn is_dropped(&self, peer: &PeerId) -> bool {
        self.dropped.contains_key(peer)
    }

    /// How many peers were dropped (and are remembered).
    pub fn dropped(&self) -> usize {
        self.dropped.len()
    }

    /// Peers with rollouts in the pool.
    pub fn peers(&self) -> usize {
        self.peers.values().filter(|p| !p.groups.is_empty()).count()
    }
}
