//! The blocking work of a round as plain functions of owned values: the
//! inner loop (train, encode the pseudo-gradient through the error
//! feedback) and the outer step (decode, average, Nesterov step, evaluate).
//! The worker runs them off the event loop; the compression bench calls them
//! directly, so both measure the node's own code path.

use super::error::WorkerError;
use crate::adversary::Adversary;
use protocol::codec::{self, Codec, ErrorFeedback};
use protocol::spec::RunSpec;
use protocol::{BlobKind, Hash, Manifest, PeerId};
use std::sync::Arc;
use trainer::aggregate::{self, Rule};
use trainer::{OuterOptimizer, TrainConfig, Trainer};

/// The replicated state: parameters and the outer optimizer.
#[derive(Clone, Debug)]
pub struct ModelState {
    /// Flat parameters.
    pub params: Vec<f32>,
    /// Outer optimizer (its velocity is part of the state).
    pub outer: OuterOptimizer,
}

impl ModelState {
    /// The state blob: parameters then velocity, little-endian f32. Its
    /// BLAKE3 hash is the state hash peers compare.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity((self.params.len() + self.outer.velocity.len()) * 4);
        for v in self.params.iter().chain(self.outer.velocity.iter()) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Reads a state blob of a model of `n` parameters into `self`.
    pub fn load(&mut self, bytes: &[u8], n: usize) -> Result<(), WorkerError> {
        if bytes.len() != n * 8 {
            return Err(WorkerError::StateSize { got: bytes.len(), expected: n * 8 });
        }
        let vals: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        if vals.iter().any(|v| !v.is_finite()) {
            return Err(WorkerError::NonFiniteState);
        }
        self.params = vals[..n].to_vec();
        self.outer.velocity = vals[n..].to_vec();
        Ok(())
    }

    /// The state hash.
    pub fn hash(&self) -> Hash {
        Hash(trainer::state_hash(&self.params, &self.outer.velocity))
    }
}

/// The public seed of a peer's batches in a round: anyone can re-create them.
pub fn batch_seed(run: &Hash, round: u64, peer: &PeerId) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"swarm/batches");
    h.update(&run.0);
    h.update(&round.to_le_bytes());
    h.update(&peer.0);
    *h.finalize().as_bytes()
}

/// Held-out evaluation of a state's parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy.
    pub loss: f32,
    /// Fraction correct, where the model has one.
    pub accuracy: Option<f32>,
}

/// What the inner loop produced: the encoded pseudo-gradient and what it
/// commits to.
#[derive(Clone, Debug)]
pub struct Trained {
    /// The round.
    pub round: u64,
    /// The encoded pseudo-gradient.
    pub blob: Vec<u8>,
    /// Samples seen.
    pub samples: u64,
    /// Mean training loss over the inner steps.
    pub train_loss: f32,
    /// BLAKE3 of the raw pseudo-gradient (f32 little-endian).
    pub raw: Hash,
    /// Largest magnitude of the error-feedback residual added before encoding.
    pub residual: f32,
    /// The chain blob: the BLAKE3 hashes of the inner states at steps 0, k,
    /// 2k, ..., H (encoded), in order.
    pub chain: Vec<u8>,
    /// Those inner states but the first (steps k, 2k, ..., H), encoded: the
    /// blobs a verifier or referee asks for (the first is computed from the
    /// round's start state, never fetched).
    pub states: Vec<Vec<u8>>,
    /// Wall-clock time of the inner loop and encoding, ms.
    pub train_ms: u64,
}

impl Trained {
    /// The chain and the inner states, as kept for verifiers.
    pub fn review_blobs(&self) -> Vec<(BlobKind, &[u8])> {
        let states = self.states.iter().map(|s| (BlobKind::InnerState, s.as_slice()));
        std::iter::once((BlobKind::Chain, self.chain.as_slice())).chain(states).collect()
    }
}

/// A lazy peer's chain: the states it has, copied (step counts forged) to
/// fill the steps it did not train.
fn pad_chain(chain: Vec<trainer::InnerState>, every: u32, h: u32) -> Vec<trainer::InnerState> {
    let mut steps: Vec<u32> = (0..h).step_by(every as usize).collect();
    steps.push(h);
    steps
        .into_iter()
        .map(|s| {
            let mut st = chain.iter().rev().find(|c| c.step <= s).unwrap_or(&chain[0]).clone();
            st.step = s;
            st
        })
        .collect()
}

/// Replaces `delta` with noise 100 times its RMS.
fn noise(delta: &mut [f32], seed: [u8; 32]) {
    let rms = (delta.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / delta.len().max(1) as f64).sqrt() as f32;
    let mut rng = trainer::rng::Rng::from_bytes(seed);
    delta.iter_mut().for_each(|x| *x = rng.uniform_sym(1.0) * 100.0 * rms);
}

/// BLAKE3 of f32 values as little-endian bytes.
pub fn hash_f32(values: &[f32]) -> Hash {
    let mut h = blake3::Hasher::new();
    for chunk in values.chunks(4096) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|x| x.to_le_bytes()).collect();
        h.update(&bytes);
    }
    Hash(*h.finalize().as_bytes())
}

/// What the outer step did to a state.
#[derive(Debug)]
pub struct Stepped {
    /// Entries whose blob did not decode (skipped by every honest peer alike).
    pub rejected: Vec<PeerId>,
    /// Held-out evaluation of the new parameters (none if it failed).
    pub eval: Option<Evaluation>,
}

/// A run's model with everything the spec fixes: the trainer (model and
/// data), the inner-loop settings and the codec. Converted and checked once,
/// from the spec.
#[derive(Debug)]
pub struct Model {
    trainer: Trainer,
    spec: RunSpec,
    train: TrainConfig,
    codec: Codec,
    rule: Rule,
    /// Lie this way (the attack suite's misbehaving peers).
    adversary: Option<Adversary>,
}

impl Model {
    /// Loads the spec's model and data.
    pub fn new(spec: &RunSpec) -> Result<Model, WorkerError> {
        spec.validate()?;
        let codec = spec.codec.codec()?;
        let train = TrainConfig {
            inner_steps: spec.train.inner_steps,
            lr: spec.train.inner_lr,
            batch_size: spec.train.batch_size as usize,
            weight_decay: spec.train.weight_decay,
        };
        let rule = match spec.aggregate.as_str() {
            "mean" => Rule::Mean,
            "trimmed-mean" => Rule::TrimmedMean { fraction: 0.2 },
            _ => Rule::CenteredClip { factor: 2.0, iterations: 3 },
        };
        Ok(Model { trainer: Trainer::new(&spec.model)?, spec: spec.clone(), train, codec, rule, adversary: None })
    }

    /// The same model computing on `backend` (checked to come up).
    pub fn with_backend(mut self, backend: trainer::Backend) -> Result<Model, WorkerError> {
        self.trainer = self.trainer.with_backend(backend)?;
        Ok(self)
    }

    /// The same model, lying in training the way `adversary` says.
    pub fn with_adversary(mut self, adversary: Option<Adversary>) -> Model {
        self.adversary = adversary;
        self
    }

    /// Parameters of the model.
    pub fn params(&self) -> usize {
        self.trainer.num_params()
    }

    /// The pseudo-gradient codec.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The run spec.
    pub fn spec(&self) -> &RunSpec {
        &self.spec
    }

    pub(super) fn trainer(&self) -> &Trainer {
        &self.trainer
    }

    pub(super) fn train_config(&self) -> TrainConfig {
        self.train.clone()
    }

    /// The initial state of the run.
    pub fn genesis(&self) -> ModelState {
        let params = self.trainer.init_params(self.spec.seed);
        let o = &self.spec.outer;
        let outer = OuterOptimizer::new(o.lr as f32, o.momentum as f32, o.nesterov, params.len());
        ModelState { params, outer }
    }

    /// A state holding `params` and `velocity` (a checkpoint's), with the
    /// spec's outer optimizer.
    pub fn state_from(&self, params: Vec<f32>, velocity: Vec<f32>) -> ModelState {
        let mut s = self.genesis();
        s.params = params;
        s.outer.velocity = velocity;
        s
    }

    /// A fresh error-feedback residual.
    pub fn feedback(&self) -> ErrorFeedback {
        ErrorFeedback::new(self.params())
    }

    /// Runs H inner steps from `global` on the batches of `seed` and encodes
    /// global - local through the error feedback (which carries the codec's
    /// residual to the next round).
    pub fn train(
        &self,
        feedback: &mut ErrorFeedback,
        global: &[f32],
        round: u64,
        seed: [u8; 32],
        progress: &mut dyn FnMut(u32, f32),
    ) -> Result<Trained, WorkerError> {
        let started = std::time::Instant::now();
        let h = self.train.inner_steps;
        let every = self.spec.verify.every(h);
        let lazy = self.adversary == Some(Adversary::Lazy);
        let cfg = TrainConfig { inner_steps: if lazy { (h / 2).max(1) } else { h }, ..self.train.clone() };
        let (out, mut chain) = self.trainer.inner_loop_checkpointed(global, &cfg, seed, every, progress)?;
        if lazy {
            chain = pad_chain(chain, every, h);
        }
        if self.adversary == Some(Adversary::BadChain) {
            chain[0].params[0] += 1.0;
        }
        let last = chain.last().map_or(out.params.as_slice(), |s| s.params.as_slice());
        let mut delta = trainer::pseudo_gradient(global, last);
        match self.adversary {
            Some(Adversary::Noise) => noise(&mut delta, seed),
            Some(a) => {
                if let Some(f) = a.update_factor() {
                    delta.iter_mut().for_each(|x| *x *= f);
                }
            }
            None => {}
        }
        if feedback.residual().len() != delta.len() {
            *feedback = ErrorFeedback::new(delta.len());
        }
        let residual = feedback.residual().iter().fold(0f32, |m, x| m.max(x.abs()));
        let (blob, _) = feedback.encode(&self.codec, &delta)?;
        // Each state is encoded as the chain is consumed (for a big model a
        // state is three parameter-sized vectors: no second copy of the
        // chain). The first (step 0) is only hashed: no check fetches it,
        // its verifiers compute it from the round's start state, and keeping
        // it cost smollm2-135m 1.6 GB per kept round.
        let mut leaves = Vec::with_capacity(32 * chain.len());
        let mut states = Vec::with_capacity(chain.len().saturating_sub(1));
        for (i, s) in chain.into_iter().enumerate() {
            let bytes = s.encode();
            drop(s);
            leaves.extend_from_slice(blake3::hash(&bytes).as_bytes());
            if i > 0 {
                states.push(bytes);
            }
        }
        let chain = leaves;
        Ok(Trained {
            round,
            blob,
            samples: u64::from(h) * self.train.batch_size as u64,
            train_loss: out.mean_loss,
            raw: hash_f32(&delta),
            residual,
            chain,
            states,
            train_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Decodes the manifest's pseudo-gradients (in manifest order), averages
    /// them by sample count and takes the outer step on `state`, then
    /// evaluates the new parameters.
    pub fn apply(
        &self,
        state: &mut ModelState,
        manifest: &Manifest,
        blobs: &[Arc<Vec<u8>>],
    ) -> Result<Stepped, WorkerError> {
        let n = state.params.len();
        let mut grads = Vec::new();
        let mut rejected = Vec::new();
        for (e, b) in manifest.entries.iter().zip(blobs) {
            match codec::decode(b, n as u64) {
                Ok(g) => grads.push((g, e.samples())),
                Err(_) => rejected.push(e.peer),
            }
        }
        if !grads.is_empty() {
            let refs: Vec<(&[f32], u64)> = grads.iter().map(|(g, s)| (g.as_slice(), *s)).collect();
            let avg = aggregate::aggregate(self.rule, &refs)?;
            state.outer.try_step(&mut state.params, &avg)?;
        }
        let eval = self.trainer.evaluate(&state.params).ok().map(|e| Evaluation { loss: e.loss, accuracy: e.accuracy });
        Ok(Stepped { rejected, eval })
    }

    /// Held-out evaluation of `params`.
    pub fn evaluate(&self, params: &[f32]) -> Result<Evaluation, WorkerError> {
        let e = self.trainer.evaluate(params)?;
        Ok(Evaluation { loss: e.loss, accuracy: e.accuracy })
    }
}
