//! Collaborative RL (SAPO-style rollout sharing): the run spec of an RL run,
//! the rollout batches peers publish, and the pool a peer takes external
//! rollouts from.
//!
//! Each peer trains its own copy of the policy with GRPO. Every round it
//! generates rollouts (a group of completions per task), publishes them as a
//! signed [`RolloutBatch`] and builds its training batch from `local` of its
//! own task groups and `external` ones taken from others. A task is
//! `(family, seed, level)`, so a receiver regenerates it and re-scores every
//! completion with its own checker: a peer whose claimed rewards differ is
//! dropped ([`Pool::drop_peer`]) and its rollouts are never used.
//!
//! No I/O here: the node feeds the pool what gossip delivered and asks it for
//! candidates; the checker lives with the task families in `trainer`.

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
    pub completions: Vec<String>,
    /// The claimed reward of each completion.
    pub rewards: Vec<f32>,
}

/// What a peer publishes each round (the payload of
/// [`Message::Rollouts`](crate::Message::Rollouts)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutBatch {
    /// The sender's round: the policy that sampled these is its policy after
    /// `round - 1` updates.
    pub round: u64,
    /// The task groups.
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
    /// Older than the pool keeps.
    #[error("stale: round {round}, ours {ours}")]
    Stale {
        /// The batch's round.
        round: u64,
        /// The receiver's round.
        ours: u64,
    },
    /// A round not newer than one already seen from the sender.
    #[error("replayed round {0}")]
    Replayed(u64),
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
    /// The run id: BLAKE3 of a tag and the spec's encoding (never equal to a
    /// DiLoCo run's id).
    pub fn run_id(&self) -> Hash {
        let mut bytes = b"swarm/rl/1".to_vec();
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
        if r.local + r.external == 0 || (r.local + r.external) as usize > 2 * MAX_ROLLOUTS {
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
        if r.wait_ms > 600_000 || r.start_wait_ms > 3_600_000 {
            return bad("rl.wait_ms", "rl.wait_ms at most 10 min, rl.start_wait_ms at most 1 h");
        }
        Ok(())
    }
}

/// External rollouts received, per peer, plus the peers dropped for lying.
#[derive(Debug, Default)]
pub struct Pool {
    /// Per peer: the newest round seen and its task groups, newest last.
    peers: BTreeMap<PeerId, (u64, Vec<(u64, Rollout)>)>,
    /// Dropped peers and why.
    dropped: BTreeMap<PeerId, String>,
    /// Groups already used for training (never twice).
    used: BTreeMap<PeerId, Vec<(u64, TaskRef)>>,
}

/// A candidate external task group.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// Who published it.
    pub peer: PeerId,
    /// Its round.
    pub round: u64,
    /// The group.
    pub rollout: Rollout,
}

impl Pool {
    /// An empty pool.
    pub fn new() -> Pool {
        Pool::default()
    }

    /// Takes a batch `from` a peer (whose signature the caller checked).
    /// `ours` is the receiver's round, `max_age` how old a batch may be;
    /// `rescore` is the receiver's checker: every group is re-scored, stale
    /// ones too, and a sender whose claimed rewards differ anywhere is
    /// dropped. Returns the number of groups kept.
    pub fn offer(
        &mut self,
        from: PeerId,
        batch: RolloutBatch,
        ours: u64,
        max_age: u64,
        rescore: &dyn Fn(&Rollout) -> Vec<f32>,
    ) -> Result<usize, RolloutError> {
        if self.dropped.contains_key(&from) {
            return Err(RolloutError::Dropped);
        }
        batch.validate()?;
        for g in &batch.rollouts {
            let rescored = rescore(g);
            if rescored != g.rewards {
                let lie = RolloutError::Lied { task: g.task, claimed: g.rewards.clone(), rescored };
                self.drop_peer(from, lie.to_string());
                return Err(lie);
            }
        }
        if batch.round + max_age < ours {
            return Err(RolloutError::Stale { round: batch.round, ours });
        }
        let entry = self.peers.entry(from).or_insert((0, Vec::new()));
        if batch.round <= entry.0 {
            return Err(RolloutError::Replayed(batch.round));
        }
        entry.0 = batch.round;
        let n = batch.rollouts.len();
        entry.1.extend(batch.rollouts.into_iter().map(|r| (batch.round, r)));
        let excess = entry.1.len().saturating_sub(KEEP_PER_PEER);
        entry.1.drain(..excess);
        Ok(n)
    }

    /// Fresh, unused groups (`round + max_age >= ours`) in selection order:
    /// shuffled with `seed`; with `informative`, groups whose claimed rewards
    /// differ come first (a group whose rewards are all equal has zero
    /// advantage and teaches nothing). Newer rounds first within each class.
    pub fn candidates(&self, ours: u64, max_age: u64, informative: bool, seed: u64) -> Vec<Candidate> {
        let mut out: Vec<Candidate> = Vec::new();
        for (peer, (_, groups)) in &self.peers {
            let used = self.used.get(peer);
            for (round, r) in groups {
                if round + max_age < ours || used.is_some_and(|u| u.contains(&(*round, r.task))) {
                    continue;
                }
                out.push(Candidate { peer: *peer, round: *round, rollout: r.clone() });
            }
        }
        let mut rng = SplitMix64::new(seed);
        for i in (1..out.len()).rev() {
            let j = rng.range(0, i as u64) as usize;
            out.swap(i, j);
        }
        let varied = |c: &Candidate| c.rollout.rewards.iter().any(|&x| x != c.rollout.rewards[0]);
        out.sort_by_key(|c| (informative && !varied(c), std::cmp::Reverse(c.round)));
        out
    }

    /// Marks a group as used for training.
    pub fn mark_used(&mut self, peer: PeerId, round: u64, task: TaskRef) {
        self.used.entry(peer).or_default().push((round, task));
        let u = self.used.get_mut(&peer).expect("just inserted");
        let excess = u.len().saturating_sub(KEEP_PER_PEER);
        u.drain(..excess);
    }

    /// Drops a peer whose claimed rewards did not survive re-scoring: its
    /// rollouts go, and it is refused from now on. Returns whether it was new.
    pub fn drop_peer(&mut self, peer: PeerId, why: String) -> bool {
        self.peers.remove(&peer);
        self.used.remove(&peer);
        self.dropped.insert(peer, why).is_none()
    }

    /// The dropped peers and why.
    pub fn dropped(&self) -> &BTreeMap<PeerId, String> {
        &self.dropped
    }

    /// Peers with rollouts in the pool.
    pub fn peers(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(family: u8, seed: u64, rewards: &[f32]) -> Rollout {
        Rollout {
            task: TaskRef { family, seed, level: 1 },
            completions: rewards.iter().map(|r| format!("{r}")).collect(),
            rewards: rewards.to_vec(),
        }
    }

    fn batch(round: u64, groups: Vec<Rollout>) -> RolloutBatch {
        RolloutBatch { round, rollouts: groups }
    }

    /// A checker that agrees with every claim.
    fn honest(r: &Rollout) -> Vec<f32> {
        r.rewards.clone()
    }

    #[test]
    fn a_claim_that_does_not_rescore_drops_the_sender_even_in_a_stale_batch() {
        let mut pool = Pool::new();
        let (p, q) = (PeerId([1; 32]), PeerId([2; 32]));
        // This checker says every completion is wrong.
        let strict = |r: &Rollout| vec![0.0; r.rewards.len()];
        assert_eq!(pool.offer(q, batch(9, vec![group(0, 1, &[0.0, 0.0])]), 9, 2, &strict), Ok(1));
        let stale = batch(1, vec![group(0, 1, &[0.0, 0.0]), group(0, 2, &[1.0, 0.0])]);
        let got = pool.offer(p, stale, 9, 2, &strict);
        assert!(matches!(got, Err(RolloutError::Lied { task: TaskRef { seed: 2, .. }, .. })), "{got:?}");
        assert!(pool.dropped().contains_key(&p));
        assert_eq!(pool.offer(p, batch(10, vec![group(0, 3, &[0.0, 0.0])]), 9, 2, &strict), Err(RolloutError::Dropped));
        assert_eq!(pool.candidates(9, 2, false, 0).len(), 1, "only the honest peer's group");
    }

    #[test]
    fn bounds_and_consistency_are_checked_before_anything_is_kept() {
        let mut pool = Pool::new();
        let p = PeerId([1; 32]);
        let too_many = batch(1, (0..=MAX_ROLLOUTS as u64).map(|s| group(0, s, &[1.0, 0.0])).collect());
        assert!(matches!(pool.offer(p, too_many, 1, 2, &honest), Err(RolloutError::TooLarge(_))));
        let mut short = group(0, 1, &[1.0, 0.0]);
        short.rewards.pop();
        assert!(matches!(pool.offer(p, batch(1, vec![short]), 1, 2, &honest), Err(RolloutError::Invalid(_))));
        let unknown = group(FAMILIES, 1, &[1.0, 0.0]);
        assert!(matches!(pool.offer(p, batch(1, vec![unknown]), 1, 2, &honest), Err(RolloutError::Invalid(_))));
        let mut long = group(0, 1, &[1.0, 0.0]);
        long.completions[0] = "x".repeat(MAX_COMPLETION_BYTES + 1);
        assert!(matches!(pool.offer(p, batch(1, vec![long]), 1, 2, &honest), Err(RolloutError::TooLarge(_))));
        let nan = group(0, 1, &[f32::NAN, 0.0]);
        assert!(matches!(pool.offer(p, batch(1, vec![nan]), 1, 2, &honest), Err(RolloutError::Invalid(_))));
        assert_eq!(pool.peers(), 0);
        assert!(pool.candidates(1, 2, true, 0).is_empty());
    }

    #[test]
    fn stale_and_replayed_batches_are_refused_and_dropped_peers_stay_out() {
        let mut pool = Pool::new();
        let p = PeerId([1; 32]);
        assert_eq!(pool.offer(p, batch(5, vec![group(0, 1, &[1.0, 0.0])]), 5, 2, &honest), Ok(1));
        assert_eq!(
            pool.offer(p, batch(5, vec![group(0, 2, &[1.0, 0.0])]), 5, 2, &honest),
            Err(RolloutError::Replayed(5))
        );
        assert!(matches!(pool.offer(p, batch(2, vec![]), 5, 2, &honest), Err(RolloutError::Stale { .. })));
        // Old groups age out of the candidates.
        assert_eq!(pool.candidates(7, 2, true, 0).len(), 1);
        assert!(pool.candidates(8, 2, true, 0).is_empty());
        assert!(pool.drop_peer(p, "lied".into()));
        assert!(!pool.drop_peer(p, "again".into()));
        assert!(pool.candidates(5, 2, true, 0).is_empty());
        assert_eq!(pool.offer(p, batch(6, vec![group(0, 3, &[1.0, 0.0])]), 6, 2, &honest), Err(RolloutError::Dropped));
    }

    #[test]
    fn informative_groups_come_first_and_used_groups_never_return() {
        let mut pool = Pool::new();
        let (a, b) = (PeerId([1; 32]), PeerId([2; 32]));
        let flat = (0..6).map(|s| group(0, s, &[0.0, 0.0])).collect();
        pool.offer(a, batch(1, flat), 1, 2, &honest).unwrap();
        pool.offer(b, batch(1, vec![group(1, 9, &[1.0, 0.0]), group(1, 10, &[1.0, 1.0])]), 1, 2, &honest).unwrap();
        for seed in 0..20 {
            let c = pool.candidates(1, 2, true, seed);
            assert_eq!(c.len(), 8);
            assert_eq!((c[0].peer, c[0].rollout.task.seed), (b, 9), "seed {seed}");
        }
        // Random selection: the varied group is not always first.
        let firsts: std::collections::BTreeSet<_> =
            (0..20).map(|s| pool.candidates(1, 2, false, s)[0].rollout.task).collect();
        assert!(firsts.len() > 1);
        pool.mark_used(b, 1, TaskRef { family: 1, seed: 9, level: 1 });
        let c = pool.candidates(1, 2, true, 3);
        assert_eq!(c.len(), 7);
        assert!(c.iter().all(|c| c.rollout.task.seed != 9));
    }
}
