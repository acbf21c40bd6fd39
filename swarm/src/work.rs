//! The blocking work of a round, run off the event loop: the inner loop
//! (train + encode the pseudo-gradient) and the outer step (decode, average,
//! Nesterov step, evaluate, checkpoint).

use protocol::codec::{Codec, ErrorFeedback};
use protocol::spec::RunSpec;
use protocol::{Hash, Manifest, PeerId};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use trainer::{Eval, OuterOptimizer, TrainConfig, Trainer, checkpoint};

/// The replicated state: parameters and the outer optimizer.
#[derive(Clone, Debug)]
pub struct ModelState {
    /// Flat parameters.
    pub params: Vec<f32>,
    /// Outer optimizer (its velocity is part of the state).
    pub outer: OuterOptimizer,
}

impl ModelState {
    /// The initial state of a run.
    pub fn genesis(trainer: &Trainer, spec: &RunSpec) -> ModelState {
        let params = trainer.init_params(spec.seed);
        let outer =
            OuterOptimizer::new(spec.outer.lr as f32, spec.outer.momentum as f32, spec.outer.nesterov, params.len());
        ModelState { params, outer }
    }

    /// The state blob: parameters then velocity, little-endian f32. Its
    /// BLAKE3 hash is the state hash peers compare.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity((self.params.len() + self.outer.velocity.len()) * 4);
        for v in self.params.iter().chain(self.outer.velocity.iter()) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Reads a state blob for a model of `n` parameters into `self`.
    pub fn load(&mut self, bytes: &[u8], n: usize) -> Result<(), String> {
        if bytes.len() != n * 8 {
            return Err(format!("state blob has {} bytes, expected {}", bytes.len(), n * 8));
        }
        let vals: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        if vals.iter().any(|v| !v.is_finite()) {
            return Err("state blob holds non-finite values".into());
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

/// What the inner loop produced.
#[derive(Debug)]
pub struct Trained {
    /// The round.
    pub round: u64,
    /// The encoded pseudo-gradient.
    pub blob: Vec<u8>,
    /// Samples seen.
    pub samples: u64,
    /// Mean training loss over the inner steps.
    pub train_loss: f32,
}

/// The train config of a spec.
pub fn train_config(spec: &RunSpec) -> TrainConfig {
    TrainConfig {
        inner_steps: spec.train.inner_steps,
        lr: spec.train.inner_lr,
        batch_size: spec.train.batch_size as usize,
        weight_decay: spec.train.weight_decay,
    }
}

/// Runs H inner steps from `global` and encodes global - local through the
/// error feedback (which carries the codec's residual to the next round).
#[allow(clippy::too_many_arguments)]
pub fn train(
    trainer: &Mutex<Trainer>,
    cfg: &TrainConfig,
    codec: &Codec,
    feedback: &Mutex<ErrorFeedback>,
    round: u64,
    global: &[f32],
    seed: [u8; 32],
    progress: &mut dyn FnMut(u32, f32),
) -> Result<Trained, String> {
    let t = trainer.lock().map_err(|_| "trainer poisoned".to_string())?;
    let out = t.inner_loop(global, cfg, seed, progress).map_err(|e| e.to_string())?;
    drop(t);
    let delta = trainer::pseudo_gradient(global, &out.params);
    let mut ef = feedback.lock().map_err(|_| "error feedback poisoned".to_string())?;
    if ef.residual().len() != delta.len() {
        *ef = ErrorFeedback::new(delta.len());
    }
    let (blob, _) = ef.encode(codec, &delta).map_err(|e| e.to_string())?;
    Ok(Trained { round, blob, samples: out.samples, train_loss: out.mean_loss })
}

/// What the outer step produced.
#[derive(Debug)]
pub struct Applied {
    /// The round.
    pub round: u64,
    /// The new state.
    pub state: ModelState,
    /// Its blob.
    pub blob: Vec<u8>,
    /// Its hash.
    pub hash: Hash,
    /// Held-out evaluation of the new parameters.
    pub eval: Option<Eval>,
    /// Entries whose blob did not decode (skipped by every honest peer alike).
    pub rejected: Vec<PeerId>,
}

/// Decodes the manifest's pseudo-gradients (in manifest order), averages
/// them by sample count, takes the outer step, evaluates and checkpoints.
pub fn apply(
    trainer: &Mutex<Trainer>,
    mut state: ModelState,
    round: u64,
    manifest: &Manifest,
    blobs: &[Arc<Vec<u8>>],
    checkpoint_dir: Option<(PathBuf, String)>,
) -> Result<Applied, String> {
    let n = state.params.len();
    let mut grads = Vec::new();
    let mut rejected = Vec::new();
    for (e, b) in manifest.entries.iter().zip(blobs) {
        match protocol::codec::decode(b, n as u64) {
            Ok(g) => grads.push((g, e.samples)),
            Err(_) => rejected.push(e.peer),
        }
    }
    if !grads.is_empty() {
        let refs: Vec<(&[f32], u64)> = grads.iter().map(|(g, s)| (g.as_slice(), *s)).collect();
        let avg = trainer::weighted_average(&refs).map_err(|e| e.to_string())?;
        let mut params = std::mem::take(&mut state.params);
        state.outer.step(&mut params, &avg);
        state.params = params;
    }
    let blob = state.encode();
    let hash = Hash::of(&blob);
    let t = trainer.lock().map_err(|_| "trainer poisoned".to_string())?;
    let eval = t.evaluate(&state.params).ok();
    if let Some((run_dir, model)) = checkpoint_dir {
        let dir = crate::store::slot_dir(&run_dir, round);
        let ck = checkpoint::Checkpoint {
            round,
            params: state.params.clone(),
            velocity: state.outer.velocity.clone(),
            model,
        };
        checkpoint::save(&dir, &t.param_layout(), &ck).map_err(|e| e.to_string())?;
    }
    Ok(Applied { round, state, blob, hash, eval, rejected })
}
