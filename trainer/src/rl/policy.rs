//! The small policy of `tasks-gpt`: a character-level GPT (the zoo's
//! [`Gpt`](crate::gpt::Gpt)) over printable ASCII, trained with flat AdamW
//! (the inner loop's), so its whole state is three vectors and a step count.
//!
//! Token 0 ends a completion; tokens 1..=95 are the characters `' '..='~'`.
//! Sampling runs the model without autodiff on the CPU backend, every row of
//! the batch at once (a forward over the longest row per new token: with a
//! context of 32 that costs less than a KV cache's bookkeeping would save).

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::error::TrainerError;
use crate::flat;
use crate::gpt::{Gpt, Shape};
use crate::inner::InnerState;
use crate::rng::Rng;

/// Vocabulary: the end token and 95 printable characters.
pub const VOCAB: usize = 96;
/// The end token.
pub const END: i64 = 0;
/// The policy's context (prompt and completion, in characters).
pub const SHAPE_CONTEXT: usize = 32;
/// The policy's size.
pub(crate) const SHAPE: Shape = Shape { context: SHAPE_CONTEXT, d_model: 96, layers: 3, heads: 4 };

/// A token of a character (`?` for anything outside printable ASCII).
fn token(c: char) -> i64 {
    if (' '..='~').contains(&c) { c as i64 - 31 } else { '?' as i64 - 31 }
}

/// Tokens of a text.
pub fn encode(s: &str) -> Vec<i64> {
    s.chars().map(token).collect()
}

/// The text of tokens (stops at the end token).
pub fn decode(tokens: &[i64]) -> String {
    tokens.iter().take_while(|&&t| t != END).map(|&t| char::from((t + 31).clamp(32, 126) as u8)).collect()
}

/// One sequence to learn from: a prompt, a completion, and its weight (the
/// advantage in GRPO, 1 in supervised training).
#[derive(Clone, Debug)]
pub struct Sample {
    /// The prompt.
    pub prompt: String,
    /// The completion.
    pub completion: String,
    /// Whether the completion ended with the end token (not cut at the token limit).
    pub ended: bool,
    /// The advantage.
    pub advantage: f32,
}

/// The sampled completions of one prompt: `(text, ended with the end token)`.
pub type Group = Vec<(String, bool)>;

/// GRPO's clipping and passes.
#[derive(Clone, Copy, Debug)]
pub struct Clip {
    /// Ratio floor `1 - low`.
    pub low: f32,
    /// Ratio ceiling `1 + high`.
    pub high: f32,
    /// Passes over the batch.
    pub epochs: u32,
}

/// The policy: parameters with their AdamW moments.
#[derive(Clone, Debug)]
pub struct Policy {
    state: InnerState,
}

/// Host-side inputs of a batch: tokens `[n, t]`, targets `[n, t]`, mask `[n, t]`.
pub(crate) struct Batch {
    pub(crate) n: usize,
    pub(crate) t: usize,
    pub(crate) x: Vec<i64>,
    pub(crate) y: Vec<i64>,
    pub(crate) mask: Vec<f32>,
}

impl Batch {
    /// Prompt + completion (+ end token), predicting the completion's tokens only.
    fn new(samples: &[Sample]) -> Batch {
        let seqs = samples
            .iter()
            .map(|s| {
                let mut tokens = encode(&s.prompt);
                let prompt = tokens.len();
                tokens.extend(encode(&s.completion));
                if s.ended {
                    tokens.push(END);
                }
                tokens.truncate(SHAPE.context + 1);
                (tokens, prompt)
            })
            .collect();
        Batch::of(seqs, END)
    }

    /// Sequences `(tokens, prompt length)`, right-padded with `pad` (causal
    /// attention: padding after a row's end changes none of its positions);
    /// the mask covers the positions that predict a completion token.
    pub(crate) fn of(seqs: Vec<(Vec<i64>, usize)>, pad: i64) -> Batch {
        let t = seqs.iter().map(|(s, _)| s.len().saturating_sub(1)).max().unwrap_or(1).max(1);
        let n = seqs.len();
        let (mut x, mut y, mut mask) = (vec![pad; n * t], vec![pad; n * t], vec![0f32; n * t]);
        for (i, (s, prompt)) in seqs.iter().enumerate() {
            for j in 0..s.len().saturating_sub(1) {
                x[i * t + j] = s[j];
                y[i * t + j] = s[j + 1];
                // Position j predicts token j + 1: a completion token when j + 1 >= prompt.
                mask[i * t + j] = if j + 1 >= *prompt { 1.0 } else { 0.0 };
            }
        }
        Batch { n, t, x, y, mask }
    }
}

/// The model built from flat parameters on a device, with the per-token
/// log-probabilities `[n, t]` of a batch's targets under it.
pub(crate) type Forward<'a, M> = dyn Fn(&[f32], &Device) -> Result<(M, Tensor<2>), TrainerError> + 'a;

/// One AdamW step of `state` on the loss `loss_of(logp [n, t], mask [n, t])`.
fn step<M: Module>(
    state: &mut InnerState,
    b: &Batch,
    lr: f64,
    forward: &Forward<'_, M>,
    loss_of: &mut dyn FnMut(Tensor<2>, Tensor<2>, &Device) -> Tensor<1>,
) -> Result<f32, TrainerError> {
    let device = Device::flex().autodiff();
    let (model, logp) = forward(&state.params, &device)?;
    let mask = Tensor::<2>::from_data(TensorData::new(b.mask.clone(), [b.n, b.t]), &device);
    let loss = loss_of(logp, mask, &device);
    let value = loss.clone().try_into_scalar::<f32>().map_err(backend_err("reading the loss"))?;
    if !value.is_finite() {
        return Err(TrainerError::NonFiniteLoss { step: state.step + 1, loss: value });
    }
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let grad = flat::grads(&model, &grads)?;
    state.adamw(&grad, lr, 0.0);
    Ok(value)
}

/// GRPO on a batch (advantages `adv` already group-normalised, one per
/// row): per token `min(r A, clip(r, 1 - low, 1 + high) A)` with `r` the
/// ratio to the policy before the first pass, averaged over each
/// completion's tokens, then over completions; `epochs` passes. Returns the
/// last pass's loss and the fraction of completion tokens whose ratio was
/// clipped in it.
pub(crate) fn grpo<M: Module>(
    state: &mut InnerState,
    b: &Batch,
    adv: &[f32],
    lr: f64,
    clip: Clip,
    forward: &Forward<'_, M>,
) -> Result<(f32, f32), TrainerError> {
    let lens: Vec<f32> = (0..b.n).map(|i| b.mask[i * b.t..(i + 1) * b.t].iter().sum::<f32>().max(1.0)).collect();
    let mut old: Option<Vec<f32>> = None;
    let (mut loss, mut clipped) = (0.0, 0.0);
    for _ in 0..clip.epochs {
        let mut old_out = None;
        let mut clipped_out = 0f32;
        loss = step(state, b, lr, forward, &mut |logp, mask, device| {
            let old_t = match &old {
                Some(v) => Tensor::<2>::from_data(TensorData::new(v.clone(), [b.n, b.t]), device),
                None => logp.clone().detach(),
            };
            if old.is_none() {
                old_out = old_t.clone().into_data().try_to_vec::<f32>().ok();
            }
            let a = Tensor::<2>::from_data(TensorData::new(adv.to_vec(), [b.n, 1]), device);
            let inv_len =
                Tensor::<2>::from_data(TensorData::new(lens.iter().map(|l| 1.0 / l).collect(), [b.n, 1]), device);
            let ratio = (logp - old_t).exp();
            let bounded = ratio.clone().clamp(1.0 - clip.low, 1.0 + clip.high);
            let out_of_range = ratio.clone().sub(bounded.clone()).abs().greater_elem(1e-6).float() * mask.clone();
            clipped_out = out_of_range.sum().into_scalar::<f32>() / b.mask.iter().sum::<f32>().max(1.0);
            let objective = (ratio * a.clone()).min_pair(bounded * a);
            (objective * mask * inv_len).sum().div_scalar(b.n as f32).neg()
        })?;
        clipped = clipped_out;
        if old.is_none() {
            old = Some(old_out.ok_or_else(|| TrainerError::Backend("reading old log-probabilities".into()))?);
        }
    }
    Ok((loss, clipped))
}

pub(crate) fn backend_err<E: std::fmt::Debug>(what: &str) -> impl Fn(E) -> TrainerError + '_ {
    move |e| TrainerError::Backend(format!("{what}: {e:?}"))
}

impl Policy {
    /// A fresh policy with parameters drawn from `seed`.
    pub fn new(seed: u64) -> Policy {
        let layout = flat::layout(&Gpt::new(VOCAB, &SHAPE, &Device::flex()));
        let params = crate::init_flat(&layout, seed);
        Policy { state: InnerState::fresh(&params) }
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        self.state.params.len()
    }

    /// The parameters.
    pub fn params(&self) -> &[f32] {
        &self.state.params
    }

    /// Starts the optimizer afresh (zero moments, step 0), keeping the
    /// parameters: RL's gradients are not on the warm-up's scale, and
    /// AdamW's second moment would remember that scale for ~1000 steps.
    pub fn reset_optimizer(&mut self) {
        self.state = InnerState::fresh(&self.state.params);
    }

    /// Updates taken so far.
    pub fn steps(&self) -> u32 {
        self.state.step
    }

    /// The whole state (parameters, moments, step) as bytes; its BLAKE3 is the policy's hash.
    pub fn state_hash(&self) -> [u8; 32] {
        self.state.hash()
    }

    fn model(&self, device: &Device) -> Result<Gpt, TrainerError> {
        flat::load(Gpt::new(VOCAB, &SHAPE, device), &self.state.params)
    }

    /// The model on `device` and the per-token log-probabilities `[n, t]` of `b`'s targets.
    fn forward(b: &Batch) -> impl Fn(&[f32], &Device) -> Result<(Gpt, Tensor<2>), TrainerError> + '_ {
        move |params, device| {
            let model = flat::load(Gpt::new(VOCAB, &SHAPE, device), params)?;
            let x = Tensor::<2, Int>::from_data(TensorData::new(b.x.clone(), [b.n, b.t]), device);
            let y = Tensor::<3, Int>::from_data(TensorData::new(b.y.clone(), [b.n, b.t, 1]), device);
            let logp = log_softmax(model.forward(x), 2).gather(2, y).reshape([b.n, b.t]);
            Ok((model, logp))
        }
    }

    /// One supervised step: mean cross-entropy of the completions' tokens.
    pub fn supervised_step(&mut self, samples: &[Sample], lr: f64) -> Result<f32, TrainerError> {
        let b = Batch::new(samples);
        step(&mut self.state, &b, lr, &Self::forward(&b), &mut |logp, mask, _| {
            let count = mask.clone().sum();
            (logp * mask).sum().div(count).neg()
        })
    }

    /// GRPO on `samples` (advantages already group-normalised; see [`grpo`]).
    pub fn grpo_step(&mut self, samples: &[Sample], lr: f64, clip: Clip) -> Result<(f32, f32), TrainerError> {
        let b = Batch::new(samples);
        let adv: Vec<f32> = samples.iter().map(|s| s.advantage).collect();
        grpo(&mut self.state, &b, &adv, lr, clip, &Self::forward(&b))
    }

    /// Samples `group` completions of each prompt at `temperature` (greedy
    /// when `temperature` is 0), at most `max_tokens` tokens each. Returns,
    /// per prompt, `(completion, ended)` pairs, and the number of generated tokens.
    pub fn sample(
        &self,
        prompts: &[String],
        group: usize,
        temperature: f64,
        max_tokens: usize,
        seed: u64,
    ) -> Result<(Vec<Group>, usize), TrainerError> {
        let device = Device::flex();
        let model = self.model(&device)?;
        let mut rng = Rng::from_u64(seed);
        struct Row {
            tokens: Vec<i64>,
            prompt: usize,
            ended: bool,
        }
        let mut rows: Vec<Row> = prompts
            .iter()
            .flat_map(|p| {
                let mut t = encode(p);
                t.truncate(SHAPE.context - 1);
                (0..group).map(move |_| Row { prompt: t.len(), tokens: t.clone(), ended: false })
            })
            .collect();
        let mut generated = 0;
        loop {
            let live: Vec<usize> = (0..rows.len())
                .filter(|&i| {
                    let r = &rows[i];
                    !r.ended && r.tokens.len() - r.prompt < max_tokens && r.tokens.len() < SHAPE.context
                })
                .collect();
            if live.is_empty() {
                break;
            }
            let t = live.iter().map(|&i| rows[i].tokens.len()).max().unwrap_or(1);
            let mut x = vec![END; live.len() * t];
            for (k, &i) in live.iter().enumerate() {
                x[k * t..k * t + rows[i].tokens.len()].copy_from_slice(&rows[i].tokens);
            }
            let x = Tensor::<2, Int>::from_data(TensorData::new(x, [live.len(), t]), &device);
            let logits = model.forward(x).into_data().try_to_vec::<f32>().map_err(backend_err("reading logits"))?;
            for (k, &i) in live.iter().enumerate() {
                let at = (k * t + rows[i].tokens.len() - 1) * VOCAB;
                let next = pick(&logits[at..at + VOCAB], temperature, &mut rng);
                generated += 1;
                if next == END {
                    rows[i].ended = true;
                } else {
                    rows[i].tokens.push(next);
                }
            }
        }
        let mut out = Vec::with_capacity(prompts.len());
        let mut it = rows.into_iter();
        for _ in prompts {
            out.push(it.by_ref().take(group).map(|r| (decode(&r.tokens[r.prompt..]), r.ended)).collect());
        }
        Ok((out, generated))
    }
}

/// A token from `logits`: the largest at temperature 0, else a draw from
/// `softmax(logits / temperature)`.
pub(crate) fn pick(logits: &[f32], temperature: f64, rng: &mut Rng) -> i64 {
    let best = logits.iter().enumerate().fold(0, |b, (i, &l)| if l > logits[b] { i } else { b });
    if temperature <= 0.0 {
        return best as i64;
    }
    let max = f64::from(logits[best]);
    let weights: Vec<f64> = logits.iter().map(|&l| ((f64::from(l) - max) / temperature).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut u = f64::from(rng.next_f32()) * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i as i64;
        }
        u -= w;
    }
    best as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_sampling_is_seeded() {
        assert_eq!(decode(&encode("bin 5=101")), "bin 5=101");
        assert_eq!(decode(&[token('a'), END, token('b')]), "a");
        let p = Policy::new(3);
        let prompts = vec!["1+2=".to_string(), "sort 321=".to_string()];
        let (a, n) = p.sample(&prompts, 4, 1.0, 6, 7).unwrap();
        let (b, _) = p.sample(&prompts, 4, 1.0, 6, 7).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 2);
        assert!(a.iter().all(|g| g.len() == 4 && g.iter().all(|(c, _)| c.len() <= 6)));
        assert!(n > 0 && n <= 2 * 4 * 6);
        let (c, _) = p.sample(&prompts, 4, 1.0, 6, 8).unwrap();
        assert_ne!(a, c, "another seed, other samples");
    }

    #[test]
    fn supervised_steps_learn_a_completion_and_grpo_moves_towards_the_advantage() {
        let mut p = Policy::new(1);
        let s = |c: &str, a: f32| Sample { prompt: "2+2=".into(), completion: c.into(), ended: true, advantage: a };
        for _ in 0..60 {
            p.supervised_step(&[s("4", 1.0)], 0.01).unwrap();
        }
        let (g, _) = p.sample(&["2+2=".to_string()], 1, 0.0, 4, 0).unwrap();
        assert_eq!(g[0][0], ("4".to_string(), true));
        // GRPO with a positive advantage on "5" and a negative one on "4" moves greedy to "5".
        let clip = Clip { low: 0.2, high: 0.28, epochs: 2 };
        for _ in 0..60 {
            p.grpo_step(&[s("5", 1.0), s("4", -1.0)], 0.01, clip).unwrap();
        }
        let (g, _) = p.sample(&["2+2=".to_string()], 1, 0.0, 4, 0).unwrap();
        assert_eq!(g[0][0].0, "5");
        assert_eq!(p.steps(), 60 + 120);
    }
}
