//! Collaborative RL: GRPO on verifiable tasks (the [`tasks`] families), for
//! peers that share rollouts (see `protocol::rollouts`).
//!
//! A [`Learner`] is one peer's policy and its round work: [`Learner::generate`]
//! samples `generate` tasks and a group of completions for each, scored by
//! the checker; [`Learner::rescore`] re-scores someone else's groups;
//! [`Learner::train`] takes one GRPO update on chosen groups (advantages
//! normalised within each group; groups whose rewards are all equal carry no
//! signal and are skipped); [`Learner::evaluate`] decodes greedily on
//! held-out tasks.
//!
//! Two policies: `tasks-gpt` (see [`policy`]) starts from a supervised
//! warm-up on the task text (`rl.sft_steps`), the same for every peer of a
//! run (a pure function of the spec's seed); `smollm2-135m` (see [`smol`])
//! starts from the pretrained SmolLM2-135M-Instruct, asked the tasks in
//! English through its chat template (it needs `swarm pull smollm2-135m`).

pub mod policy;
pub mod smol;
pub mod tasks;

use crate::error::TrainerError;
use crate::rng::Rng;
use policy::{Clip, Group, Policy, Sample};
use protocol::rollouts::{MAX_LEVEL, RlParams, RlSpec, Rollout, Rules, TaskRef};
use smol::SmolPolicy;

/// The small policy's name in the zoo.
pub const TASKS_GPT: &str = "tasks-gpt";
/// The pretrained language model as an RL policy (`swarm join smollm2-135m --rl`).
pub const SMOLLM2_135M: &str = crate::SMOLLM2_135M;
/// Held-out tasks per family in [`Learner::evaluate`] (`tasks-gpt`).
pub const EVAL_PER_FAMILY: u64 = 32;
/// Held-out tasks per family for `smollm2-135m` (a greedy decode of the
/// 135 M model per task: seconds each on a CPU).
pub const SMOL_EVAL_PER_FAMILY: u64 = 8;
/// The most tokens a `smollm2-135m` completion may have (`rl.max_tokens`).
pub const SMOL_MAX_TOKENS: u32 = 64;
/// Held-out task seeds have this bit set; training seeds never do.
const HELD_OUT: u64 = 1 << 63;
/// Sequences per supervised warm-up step, and its learning rate.
const SFT_BATCH: usize = 64;
const SFT_LR: f64 = 0.003;

/// The default RL run of a policy (`None` for a model that is not one).
/// `tasks-gpt` is only an RL policy; `smollm2-135m` is one with `--rl`.
pub fn default_spec(model: &str) -> Option<RlSpec> {
    let tasks_gpt = RlSpec {
        model: TASKS_GPT.to_string(),
        seed: 0,
        rounds: 60,
        min_peers: 1,
        rl: RlParams {
            generate: 8,
            local: 4,
            external: 4,
            select: "informative".into(),
            group: 8,
            temperature: 1.0,
            max_tokens: 8,
            // The families this small policy learns from RL in a few dozen
            // rounds (README, "RL swarm"); all seven are in `tasks::NAMES`.
            families: ["base", "count", "sort", "calendar"].map(String::from).to_vec(),
            level: 2,
            lr: 0.0003,
            clip_low: 0.2,
            clip_high: 0.28,
            epochs: 2,
            kl: 0.0,
            sft_steps: 150,
            max_age: 2,
            wait_ms: 3_000,
            start_wait_ms: 30_000,
            eval_every: 5,
        },
    };
    match model {
        TASKS_GPT => Some(tasks_gpt),
        // Sized for a CPU: a round generates 4 x 4 completions of at most
        // 24 characters (and tokens) and trains on 16 of them (a minute or more on 2 cores);
        // a GPU takes `generate = group = 8` and more. The learning rate is
        // a fine-tuning one: the model is pretrained.
        SMOLLM2_135M => Some(RlSpec {
            model: SMOLLM2_135M.to_string(),
            rounds: 20,
            rl: RlParams {
                generate: 4,
                local: 2,
                external: 2,
                group: 4,
                temperature: 0.8,
                max_tokens: 24,
                families: ["arithmetic", "sort", "count", "calendar"].map(String::from).to_vec(),
                level: 1,
                lr: 2e-6,
                epochs: 1,
                sft_steps: 0,
                wait_ms: 30_000,
                start_wait_ms: 120_000,
                ..tasks_gpt.rl
            },
            ..tasks_gpt
        }),
        _ => None,
    }
}

/// Whether `swarm join MODEL` means an RL run without `--rl` (a model that
/// is only an RL policy).
pub fn rl_only(model: &str) -> bool {
    model == TASKS_GPT
}

/// Checks an RL spec against what this trainer has (the policy, the task
/// families); returns the families' indices.
pub fn check_spec(spec: &RlSpec) -> Result<Vec<u8>, TrainerError> {
    spec.validate().map_err(|e| TrainerError::InvalidConfig(e.to_string()))?;
    match spec.model.as_str() {
        TASKS_GPT => {
            let (max_prompt, context) = (tasks::MAX_PROMPT_CHARS, policy::SHAPE_CONTEXT);
            let room = context - max_prompt - 1;
            if spec.rl.max_tokens as usize > room {
                return Err(TrainerError::InvalidConfig(format!(
                    "rl.max_tokens: at most {room} for `{TASKS_GPT}` (context {context}, prompts up to {max_prompt} characters)"
                )));
            }
        }
        SMOLLM2_135M => {
            if spec.rl.max_tokens > SMOL_MAX_TOKENS {
                return Err(TrainerError::InvalidConfig(format!(
                    "rl.max_tokens: at most {SMOL_MAX_TOKENS} for `{SMOLLM2_135M}`"
                )));
            }
            if spec.rl.sft_steps != 0 {
                return Err(TrainerError::InvalidConfig(format!(
                    "rl.sft_steps: `{SMOLLM2_135M}` starts from its pretrained weights (no warm-up): set it to 0"
                )));
            }
        }
        other => {
            return Err(TrainerError::InvalidConfig(format!(
                "no RL policy `{other}`: the RL policies are `{TASKS_GPT}` and `{SMOLLM2_135M}`"
            )));
        }
    }
    spec.rl
        .families
        .iter()
        .map(|n| {
            tasks::family(n).ok_or_else(|| {
                TrainerError::InvalidConfig(format!(
                    "rl.families: no task family `{n}` (have: {})",
                    tasks::NAMES.join(", ")
                ))
            })
        })
        .collect()
}

/// What a peer of this run accepts from others (see `Pool::offer`).
pub fn rules(spec: &RlSpec) -> Result<Rules, TrainerError> {
    Ok(Rules {
        generate: spec.rl.generate as usize,
        group: spec.rl.group as usize,
        max_chars: spec.rl.max_tokens as usize,
        level: spec.rl.level,
        families: check_spec(spec)?,
        max_age: spec.rl.max_age,
    })
}

/// What one round's generation gave.
#[derive(Clone, Debug)]
pub struct Generated {
    /// The task groups with the checker's rewards.
    pub rollouts: Vec<Rollout>,
    /// Tokens generated.
    pub tokens: usize,
}

/// What one GRPO update did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Update {
    /// The surrogate loss (0 when no group carried signal).
    pub loss: f32,
    /// Fraction of completion tokens whose ratio was clipped (last pass).
    pub clipped: f32,
    /// Completions trained on.
    pub samples: usize,
    /// Groups skipped for equal rewards.
    pub flat_groups: usize,
}

/// The checker of a run's rewards (it follows from the policy; see [`tasks::Checker`]).
pub fn checker(spec: &RlSpec) -> tasks::Checker {
    if spec.model == SMOLLM2_135M { tasks::Checker::LastWord } else { tasks::Checker::Exact }
}

/// A policy of either kind.
#[derive(Clone, Debug)]
enum Model {
    Tiny(Policy),
    Smol(Box<SmolPolicy>),
}

impl Model {
    /// What the policy is shown for a task.
    fn prompt(&self, t: TaskRef) -> String {
        let text = match self {
            Model::Tiny(_) => tasks::generate(t).map(|p| p.prompt),
            Model::Smol(_) => tasks::question(t),
        };
        text.unwrap_or_default()
    }

    fn sample(
        &self,
        prompts: &[String],
        group: usize,
        temperature: f64,
        max_tokens: usize,
        seed: u64,
    ) -> Result<(Vec<Group>, usize), TrainerError> {
        match self {
            Model::Tiny(p) => p.sample(prompts, group, temperature, max_tokens, seed),
            Model::Smol(p) => p.sample(prompts, group, temperature, max_tokens, seed),
        }
    }

    /// Whether a shared completion ended by itself (not cut at `max_tokens`).
    fn ended(&self, completion: &str, max_tokens: usize) -> bool {
        match self {
            Model::Tiny(_) => completion.chars().count() < max_tokens,
            Model::Smol(p) => p.ended(completion, max_tokens),
        }
    }

    fn grpo_step(&mut self, samples: &[Sample], lr: f64, clip: Clip) -> Result<(f32, f32), TrainerError> {
        match self {
            Model::Tiny(p) => p.grpo_step(samples, lr, clip),
            Model::Smol(p) => p.grpo_step(samples, lr, clip),
        }
    }
}

/// One peer's policy and its RL round work.
#[derive(Clone, Debug)]
pub struct Learner {
    model: Model,
    checker: tasks::Checker,
    spec: RlSpec,
    families: Vec<u8>,
    me: u64,
}

impl Learner {
    /// The run's initial policy, for the peer whose tasks and samples are
    /// drawn from `me`. `tasks-gpt`: random parameters, then the supervised
    /// warm-up (`progress(step, steps, loss)`); `smollm2-135m`: the
    /// pretrained model, from the pulled packages under
    /// [`packages::default_root`](crate::packages::default_root).
    pub fn new(spec: &RlSpec, me: u64, progress: &mut dyn FnMut(u32, u32, f32)) -> Result<Learner, TrainerError> {
        Self::open(spec, me, &crate::packages::default_root(), progress)
    }

    /// [`Learner::new`] with the pulled packages under `packages`.
    pub fn open(
        spec: &RlSpec,
        me: u64,
        packages: &std::path::Path,
        progress: &mut dyn FnMut(u32, u32, f32),
    ) -> Result<Learner, TrainerError> {
        let families = rules(spec)?.families;
        if spec.model == SMOLLM2_135M {
            let policy = SmolPolicy::load(&crate::packages::pulled(packages, crate::packages::SMOLLM2)?)?;
            let model = Model::Smol(Box::new(policy));
            return Ok(Learner { model, checker: checker(spec), spec: spec.clone(), families, me });
        }
        let mut policy = Policy::new(spec.seed);
        let mut rng = Rng::from_u64(spec.seed ^ 0x5f70_7761_726d);
        let steps = spec.rl.sft_steps;
        for step in 1..=steps {
            let batch: Vec<Sample> = (0..SFT_BATCH)
                .map(|_| {
                    let t = TaskRef {
                        family: families[rng.below(families.len())],
                        seed: rng.next_u64() & !HELD_OUT,
                        level: 1 + rng.below(usize::from(spec.rl.level)) as u8,
                    };
                    let p = tasks::generate(t).expect("a checked family and level");
                    Sample { prompt: p.prompt, completion: p.answer, ended: true, advantage: 1.0 }
                })
                .collect();
            let loss = policy.supervised_step(&batch, SFT_LR)?;
            progress(step, steps, loss);
        }
        policy.reset_optimizer();
        Ok(Learner { model: Model::Tiny(policy), checker: checker(spec), spec: spec.clone(), families, me })
    }

    /// The same policy for another peer (the warm-up is a function of the
    /// spec alone, so peers of one process share it).
    pub fn for_peer(&self, me: u64) -> Learner {
        Learner { me, ..self.clone() }
    }

    /// This policy (as it stands: warm-up and training so far) put to
    /// `spec`'s run for the peer `me`: its families, level, checker and
    /// settings. The sharing bench warms peers up differently (another
    /// seed, or without one family) and then runs them all on one spec.
    pub fn with_spec(&self, spec: &RlSpec, me: u64) -> Result<Learner, TrainerError> {
        let families = rules(spec)?.families;
        Ok(Learner { model: self.model.clone(), checker: checker(spec), spec: spec.clone(), families, me })
    }

    /// The policy's whole state (parameters, optimizer moments, step), hashed.
    pub fn state_hash(&self) -> [u8; 32] {
        match &self.model {
            Model::Tiny(p) => p.state_hash(),
            Model::Smol(p) => p.state_hash(),
        }
    }

    /// Samples this round's tasks (the run's families in turn) and `group`
    /// completions for each, scored.
    pub fn generate(&self, round: u64) -> Result<Generated, TrainerError> {
        let r = &self.spec.rl;
        let mut rng = Rng::from_u64(self.me ^ round.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        // Families in turn (from a random offset), so that every round has
        // the same mix and round rewards compare.
        let offset = rng.below(self.families.len());
        let tasks: Vec<TaskRef> = (0..r.generate as usize)
            .map(|i| TaskRef {
                family: self.families[(offset + i) % self.families.len()],
                seed: rng.next_u64() & !HELD_OUT,
                level: r.level.clamp(1, MAX_LEVEL),
            })
            .collect();
        let prompts: Vec<String> = tasks.iter().map(|t| self.model.prompt(*t)).collect();
        let (groups, tokens) =
            self.model.sample(&prompts, r.group as usize, r.temperature, r.max_tokens as usize, rng.next_u64())?;
        let rollouts = tasks
            .into_iter()
            .zip(groups)
            .map(|(task, group)| {
                let completions: Vec<String> = group.into_iter().map(|(c, _)| c).collect();
                let rewards = self.checker.rescore(task, &completions);
                Rollout { task, completions, rewards }
            })
            .collect();
        Ok(Generated { rollouts, tokens })
    }

    /// The rewards this peer's checker gives a group (compare with the claimed ones).
    pub fn rescore(&self, rollout: &Rollout) -> Vec<f32> {
        self.checker.rescore(rollout.task, &rollout.completions)
    }

    /// Picks `n` of this round's own groups: with `informative`, groups whose
    /// rewards differ first; otherwise in generation order.
    pub fn choose_local(rollouts: &[Rollout], n: usize, informative: bool) -> Vec<Rollout> {
        let mut order: Vec<&Rollout> = rollouts.iter().collect();
        if informative {
            order.sort_by_key(|r| !r.informative());
        }
        order.into_iter().take(n).cloned().collect()
    }

    /// One GRPO update on `groups` (rewards as this peer's checker gives them).
    pub fn train(&mut self, groups: &[Rollout]) -> Result<Update, TrainerError> {
        let r = &self.spec.rl;
        let mut samples = Vec::new();
        let mut flat_groups = 0;
        for g in groups {
            let n = g.rewards.len() as f32;
            let mean = g.rewards.iter().sum::<f32>() / n;
            let std = (g.rewards.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n).sqrt();
            if std < 1e-6 {
                flat_groups += 1;
                continue;
            }
            let prompt = self.model.prompt(g.task);
            for (c, x) in g.completions.iter().zip(&g.rewards) {
                let ended = self.model.ended(c, r.max_tokens as usize);
                samples.push(Sample {
                    prompt: prompt.clone(),
                    completion: c.clone(),
                    ended,
                    advantage: (x - mean) / std,
                });
            }
        }
        if samples.is_empty() {
            return Ok(Update { flat_groups, ..Update::default() });
        }
        let clip = Clip { low: r.clip_low as f32, high: r.clip_high as f32, epochs: r.epochs };
        let (loss, clipped) = self.model.grpo_step(&samples, r.lr, clip)?;
        Ok(Update { loss, clipped, samples: samples.len(), flat_groups })
    }

    /// Greedy accuracy on [`EVAL_PER_FAMILY`] held-out tasks of each of the
    /// run's families ([`SMOL_EVAL_PER_FAMILY`] for `smollm2-135m`), in the
    /// spec's order.
    pub fn evaluate(&self) -> Result<Vec<(&'static str, f32)>, TrainerError> {
        let level = self.spec.rl.level;
        let per_family = match self.model {
            Model::Tiny(_) => EVAL_PER_FAMILY,
            Model::Smol(_) => SMOL_EVAL_PER_FAMILY,
        };
        let mut out = Vec::new();
        for &f in &self.families {
            let tasks: Vec<TaskRef> =
                (0..per_family).map(|i| TaskRef { family: f, seed: HELD_OUT | i, level }).collect();
            let prompts: Vec<String> = tasks.iter().map(|t| self.model.prompt(*t)).collect();
            let (groups, _) = self.model.sample(&prompts, 1, 0.0, self.spec.rl.max_tokens as usize, 0)?;
            let right: f32 = tasks.iter().zip(&groups).map(|(t, g)| self.checker.reward(*t, &g[0].0)).sum();
            out.push((tasks::family_name(f), right / per_family as f32));
        }
        Ok(out)
    }
}
