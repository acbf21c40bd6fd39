//! The inner loop as a chain of states anyone can check: AdamW on flat
//! vectors (the same formulas, in the same order, as burn's `AdamW`), an
//! [`InnerState`] that holds everything a step depends on (parameters,
//! both moments, the step count), and segments of steps that can be
//! re-executed from any saved state, bit for bit, in another process.
//!
//! The batches of step `i` are drawn from the round's batch seed by sampling
//! steps `0..i` first (sampling is cheap host-side index drawing), so a
//! segment that starts at step `i` needs only the state at `i`.

use burn::optim::GradientsParams;
use burn::tensor::Device;

use crate::config::TrainConfig;
use crate::error::TrainerError;
use crate::flat;
use crate::rng::Rng;
use crate::task::Task;

/// AdamW's fixed settings (burn's defaults; the learning rate and weight
/// decay come from the run spec).
const BETA_1: f32 = 0.9;
const BETA_2: f32 = 0.999;
const EPSILON: f32 = 1e-5;

/// Everything the next inner step depends on besides the data: the model's
/// parameters, AdamW's moments, and how many steps were taken.
#[derive(Clone, Debug, PartialEq)]
pub struct InnerState {
    /// Steps taken so far (0 at the start of a round).
    pub step: u32,
    /// Flat parameters.
    pub params: Vec<f32>,
    /// First moment.
    pub m: Vec<f32>,
    /// Second moment.
    pub v: Vec<f32>,
}

impl InnerState {
    /// The state at the start of a round: `params`, zero moments.
    pub fn fresh(params: &[f32]) -> InnerState {
        let n = params.len();
        InnerState { step: 0, params: params.to_vec(), m: vec![0.0; n], v: vec![0.0; n] }
    }

    /// Bytes: `step` (u32 LE), then parameters, first and second moment
    /// (f32 LE each). Its BLAKE3 hash is the state's commitment.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 12 * self.params.len());
        out.extend_from_slice(&self.step.to_le_bytes());
        for x in self.params.iter().chain(&self.m).chain(&self.v) {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out
    }

    /// Reads [`InnerState::encode`]'s bytes for a model of `n` parameters.
    pub fn decode(bytes: &[u8], n: usize) -> Result<InnerState, TrainerError> {
        if bytes.len() != 4 + 12 * n {
            return Err(TrainerError::ParamLength {
                what: "an inner state".to_string(),
                expected: 4 + 12 * n,
                got: bytes.len(),
            });
        }
        let step = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let vals: Vec<f32> = bytes[4..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        if vals.iter().any(|x| !x.is_finite()) {
            return Err(TrainerError::InvalidConfig("an inner state holds non-finite values".to_string()));
        }
        Ok(InnerState { step, params: vals[..n].to_vec(), m: vals[n..2 * n].to_vec(), v: vals[2 * n..].to_vec() })
    }

    /// BLAKE3 of [`InnerState::encode`].
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(&self.encode()).as_bytes()
    }

    /// One AdamW step with gradient `grad`: burn's `AdamW` (no AMSGrad, no
    /// cautious decay), element by element in f32.
    pub(crate) fn adamw(&mut self, grad: &[f32], lr: f64, weight_decay: f64) {
        self.step += 1;
        let t = self.step as i32;
        let (f1, f2) = (1.0 - BETA_1, 1.0 - BETA_2);
        let (c1, c2) = (1f32 - BETA_1.powi(t), 1f32 - BETA_2.powi(t));
        // burn keeps the decay as an f32 and multiplies in f64.
        let decay_rate = lr * f64::from(weight_decay as f32);
        let keep = (1.0 - decay_rate) as f32;
        let lr = lr as f32;
        let first = t == 1;
        for (((p, m), v), &g) in self.params.iter_mut().zip(&mut self.m).zip(&mut self.v).zip(grad) {
            if first {
                *m = g * f1;
                *v = (g * g) * f2;
            } else {
                *m = *m * BETA_1 + g * f1;
                *v = *v * BETA_2 + (g * g) * f2;
            }
            let delta = (*m / c1) / ((*v / c2).sqrt() + EPSILON);
            let decayed = if decay_rate == 0.0 { *p } else { *p * keep };
            *p = decayed - delta * lr;
        }
    }
}

/// What [`run_steps`] needs besides the state.
pub(crate) struct Steps<'a> {
    lr: f64,
    weight_decay: f64,
    batch_size: usize,
    batch_seed: [u8; 32],
    /// Run until the state has taken this many steps.
    until: u32,
    /// Called with every state whose step count is a multiple of this
    /// (0 = never), and with the last.
    checkpoint_every: u32,
    on_checkpoint: &'a mut dyn FnMut(&InnerState),
    progress: &'a mut dyn FnMut(u32, f32),
}

impl<'a> Steps<'a> {
    pub(crate) fn new(
        cfg: &TrainConfig,
        batch_seed: [u8; 32],
        until: u32,
        checkpoint_every: u32,
        on_checkpoint: &'a mut dyn FnMut(&InnerState),
        progress: &'a mut dyn FnMut(u32, f32),
    ) -> Steps<'a> {
        Steps {
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            batch_size: cfg.batch_size,
            batch_seed,
            until,
            checkpoint_every,
            on_checkpoint,
            progress,
        }
    }
}

/// Runs inner steps from `state` until `s.until`; returns the final state
/// and the sum of the step losses.
pub(crate) fn run_steps<T: Task>(
    task: &T,
    mut state: InnerState,
    s: Steps<'_>,
    device: &Device,
) -> Result<(InnerState, f64), TrainerError> {
    let device = device.clone().autodiff();
    // Nothing here draws from burn's generator; seed it anyway so that nothing could differ.
    device.seed(Rng::from_bytes(s.batch_seed).next_u64());
    let mut rng = Rng::from_bytes(s.batch_seed);
    for _ in 0..state.step {
        task.sample(&mut rng, s.batch_size);
    }
    let mut loss_sum = 0f64;
    while state.step < s.until {
        let model = flat::load(task.build(&device), &state.params)?;
        let batch = task.sample(&mut rng, s.batch_size);
        let loss = task.batch_loss(&model, &batch, &device); // [1]
        let value = loss
            .clone()
            .try_into_scalar::<f32>()
            .map_err(|e| TrainerError::Backend(format!("reading the loss: {e:?}")))?;
        let step = state.step + 1;
        if !value.is_finite() {
            return Err(TrainerError::NonFiniteLoss { step, loss: value });
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let grad = flat::grads(&model, &grads)?;
        state.adamw(&grad, s.lr, s.weight_decay);
        loss_sum += f64::from(value);
        (s.progress)(step, value);
        if (s.checkpoint_every > 0 && state.step.is_multiple_of(s.checkpoint_every)) || state.step == s.until {
            (s.on_checkpoint)(&state);
        }
    }
    Ok((state, loss_sum))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpt::LipsumTask;
    use crate::mlp::DigitsTask;
    use burn::optim::AdamWConfig;

    /// burn's own AdamW over the same batches (the inner loop before it was
    /// made checkable).
    fn with_burn_adamw<T: Task>(task: &T, global: &[f32], cfg: &TrainConfig, seed: [u8; 32]) -> Vec<f32> {
        let device = Device::flex().autodiff();
        device.seed(Rng::from_bytes(seed).next_u64());
        let mut model = flat::load(task.build(&device), global).unwrap();
        let mut optim = AdamWConfig::new().with_weight_decay(cfg.weight_decay as f32).init();
        let mut rng = Rng::from_bytes(seed);
        for _ in 0..cfg.inner_steps {
            let batch = task.sample(&mut rng, cfg.batch_size);
            let loss = task.batch_loss(&model, &batch, &device);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(cfg.lr, model, grads);
        }
        flat::read(&model).unwrap()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// The flat AdamW gives burn's AdamW's bits exactly (so every figure
    /// measured before it replaced burn's optimizer still holds).
    #[test]
    fn flat_adamw_gives_burns_bits() {
        let seed = [9u8; 32];
        let digits = crate::Trainer::new(crate::DIGITS_MLP).unwrap();
        let global = digits.init_params(1);
        for wd in [0.0, 0.01] {
            let cfg = TrainConfig { inner_steps: 20, lr: 0.002, batch_size: 32, weight_decay: wd };
            let theirs = with_burn_adamw(&DigitsTask::new().unwrap(), &global, &cfg, seed);
            let ours = digits.inner_loop(&global, &cfg, seed, &mut |_, _| {}).unwrap().params;
            assert_eq!(bits(&ours), bits(&theirs), "digits-mlp, weight decay {wd}");
        }
        let gpt = crate::Trainer::new(crate::LIPSUM_GPT).unwrap();
        let global = gpt.init_params(1);
        let cfg = TrainConfig { inner_steps: 4, lr: 0.003, batch_size: 4, weight_decay: 0.01 };
        let theirs = with_burn_adamw(&LipsumTask::new().unwrap(), &global, &cfg, seed);
        let ours = gpt.inner_loop(&global, &cfg, seed, &mut |_, _| {}).unwrap().params;
        assert_eq!(bits(&ours), bits(&theirs), "lipsum-gpt");
    }

    #[test]
    fn a_segment_replayed_from_its_saved_state_is_the_chain_s_next_state() {
        let t = crate::Trainer::new(crate::DIGITS_MLP).unwrap();
        let cfg = TrainConfig { inner_steps: 12, lr: 0.002, batch_size: 16, weight_decay: 0.0 };
        let seed = [3u8; 32];
        let (out, chain) = t.inner_loop_checkpointed(&t.init_params(2), &cfg, seed, 4, &mut |_, _| {}).unwrap();
        assert_eq!(chain.iter().map(|s| s.step).collect::<Vec<_>>(), vec![0, 4, 8, 12]);
        assert_eq!(chain.last().unwrap().params, out.params);
        for w in chain.windows(2) {
            let replayed = t.replay(w[0].clone(), &cfg, seed, w[1].step).unwrap();
            assert_eq!(replayed.hash(), w[1].hash(), "segment from step {}", w[0].step);
        }
        // Another seed's batches give another state.
        let other = t.replay(chain[1].clone(), &cfg, [4u8; 32], 8).unwrap();
        assert_ne!(other.hash(), chain[2].hash());
        // A state round-trips through its bytes.
        let n = t.num_params();
        assert_eq!(InnerState::decode(&chain[2].encode(), n).unwrap(), chain[2]);
        assert!(InnerState::decode(&chain[2].encode()[1..], n).is_err());
    }
}
