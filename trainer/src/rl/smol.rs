//! The RL policy `smollm2-135m`: SmolLM2-135M-Instruct (from its pulled
//! GGUF) asked the tasks in English ([`tasks::question`](super::tasks::question))
//! through its chat template, and fine-tuned **in full** with GRPO.
//!
//! Full fine-tuning, not LoRA: the policy's state is the flat vectors the
//! rest of the trainer uses (parameters and AdamW moments, hashed as one),
//! with no second code path for adapters. The price is memory: 134.5 M
//! parameters are 538 MB, the two moments twice that, and a step builds the
//! model once more and its gradients (about 2.7 GB before activations);
//! LoRA would keep the moments and gradients to a few MB, which is what a
//! consumer GPU with 4-6 GB would want (not done).
//!
//! Sampling prefills a prompt once, repeats its KV cache for the group's
//! rows and decodes them together. A completion is shared as text: the
//! decoded tokens with every character outside printable ASCII (newlines
//! too) turned into a space, cut at `max_tokens` characters (the run's
//! bound on a shared completion). Training re-tokenises that text, for
//! one's own groups as for others', so every peer trains on what was shared.

use std::path::Path;
use std::sync::Arc;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::policy::{Batch, Clip, Group, Sample, backend_err, grpo, pick};
use crate::bpe::{Tokenizer, chat_prompt};
use crate::error::TrainerError;
use crate::flat;
use crate::gguf::Gguf;
use crate::inner::InnerState;
use crate::llama::{KvCache, Llama, LlamaConfig, flat_from_gguf};
use crate::rng::Rng;

/// SmolLM2-Instruct fine-tuned in full, with its tokenizer.
#[derive(Clone)]
pub struct SmolPolicy {
    config: LlamaConfig,
    tokenizer: Arc<Tokenizer>,
    state: InnerState,
}

impl std::fmt::Debug for SmolPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmolPolicy").field("params", &self.state.params.len()).field("step", &self.state.step).finish()
    }
}

/// The text of a completion as it is shared: printable ASCII, at most `max_chars` characters.
pub fn shared_text(text: &str, max_chars: usize) -> String {
    text.chars().map(|c| if (' '..='~').contains(&c) { c } else { ' ' }).take(max_chars).collect()
}

impl SmolPolicy {
    /// Loads the pretrained model from the pulled package directory `dir`.
    pub fn load(dir: &Path) -> Result<SmolPolicy, TrainerError> {
        let g = Gguf::open(&dir.join(crate::packages::SMOLLM2_GGUF))?;
        let config = LlamaConfig::from_gguf(&g)?;
        let want = crate::smol::config();
        if (config.vocab, config.dim, config.layers, config.heads, config.kv_heads)
            != (want.vocab, want.dim, want.layers, want.heads, want.kv_heads)
        {
            return Err(TrainerError::Data(format!("smollm2-135m: the GGUF's shape is {config:?}")));
        }
        let tokenizer = Arc::new(Tokenizer::from_gguf(&g)?);
        let layout = flat::layout(&Llama::new(&config, &Device::flex()));
        let params = flat_from_gguf(&g, &layout)?;
        Ok(SmolPolicy { config, tokenizer, state: InnerState::fresh(&params) })
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        self.state.params.len()
    }

    /// Updates taken so far.
    pub fn steps(&self) -> u32 {
        self.state.step
    }

    /// The whole state (parameters, moments, step) hashed.
    pub fn state_hash(&self) -> [u8; 32] {
        self.state.hash()
    }

    /// The prompt's tokens: `question` in the chat template, ready for the answer.
    fn prompt(&self, question: &str) -> Vec<u32> {
        self.tokenizer.encode(&chat_prompt(question))
    }

    /// Whether a shared completion ended by itself: shorter than the
    /// character bound it is cut at, and in fewer tokens than the limit
    /// (one that reached either was cut, and is not followed by the end
    /// token in training).
    pub fn ended(&self, completion: &str, max_tokens: usize) -> bool {
        completion.chars().count() < max_tokens && self.tokenizer.encode_text(completion).len() < max_tokens
    }

    /// Samples `group` completions of each question at `temperature` (greedy
    /// at 0), at most `max_tokens` tokens each, shared as text (see the
    /// module's notes). Returns `(completion, ended)` per question, and the
    /// number of generated tokens.
    pub fn sample(
        &self,
        questions: &[String],
        group: usize,
        temperature: f64,
        max_tokens: usize,
        seed: u64,
    ) -> Result<(Vec<Group>, usize), TrainerError> {
        let device = Device::flex();
        let model = flat::load(Llama::new(&self.config, &device), &self.state.params)?;
        let vocab = self.config.vocab;
        let mut rng = Rng::from_u64(seed);
        let mut out = Vec::with_capacity(questions.len());
        let mut generated = 0;
        for q in questions {
            let ids: Vec<i64> = self.prompt(q).into_iter().map(i64::from).collect();
            let n = ids.len();
            let mut cache = KvCache::default();
            let x = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), &device);
            let logits = model.forward(&self.config, x, &mut cache).narrow(1, n - 1, 1).reshape([1, vocab]);
            let first = logits.into_data().try_to_vec::<f32>().map_err(backend_err("reading logits"))?;
            let mut last = first.repeat(group);
            cache.repeat(group);
            // Per row: its tokens, whether it ended (the end token), and
            // whether it is done (ended, or its text reached the character
            // bound it is shared with: decoding further would be cut off).
            let mut rows: Vec<(Vec<u32>, bool, bool)> = vec![(Vec::new(), false, false); group];
            for step in 0..max_tokens {
                let mut next = vec![i64::from(self.tokenizer.eos); group];
                for (i, (tokens, ended, done)) in rows.iter_mut().enumerate() {
                    if *done {
                        continue;
                    }
                    let t = pick(&last[i * vocab..(i + 1) * vocab], temperature, &mut rng);
                    generated += 1;
                    if t as u32 == self.tokenizer.eos {
                        (*ended, *done) = (true, true);
                    } else {
                        tokens.push(t as u32);
                        next[i] = t;
                        *done = self.tokenizer.decode(tokens).chars().count() >= max_tokens;
                    }
                }
                if step + 1 == max_tokens || rows.iter().all(|r| r.2) {
                    break;
                }
                let x = Tensor::<2, Int>::from_data(TensorData::new(next, [group, 1]), &device);
                last = model
                    .forward(&self.config, x, &mut cache)
                    .reshape([group, vocab])
                    .into_data()
                    .try_to_vec::<f32>()
                    .map_err(backend_err("reading logits"))?;
            }
            out.push(
                rows.into_iter()
                    .map(|(tokens, ended, _)| {
                        let text = shared_text(&self.tokenizer.decode(&tokens), max_tokens);
                        let ended = ended && self.ended(&text, max_tokens);
                        (text, ended)
                    })
                    .collect(),
            );
        }
        Ok((out, generated))
    }

    /// The log-probability of `completion` (then the end token when
    /// `ended`) as the answer to `question`.
    pub fn logprob(&self, question: &str, completion: &str, ended: bool) -> Result<f32, TrainerError> {
        let b = self.batch(&[Sample { prompt: question.into(), completion: completion.into(), ended, advantage: 0.0 }]);
        let device = Device::flex();
        let model = flat::load(Llama::new(&self.config, &device), &self.state.params)?;
        let logp = token_logp(&self.config, &model, &b, &device)
            .into_data()
            .try_to_vec::<f32>()
            .map_err(backend_err("logp"))?;
        Ok(logp.iter().zip(&b.mask).map(|(l, m)| l * m).sum())
    }

    /// Question (in the chat template) + completion (+ end token) per sample.
    fn batch(&self, samples: &[Sample]) -> Batch {
        let seqs = samples
            .iter()
            .map(|s| {
                let mut tokens: Vec<i64> = self.prompt(&s.prompt).into_iter().map(i64::from).collect();
                let prompt = tokens.len();
                tokens.extend(self.tokenizer.encode_text(&s.completion).into_iter().map(i64::from));
                if s.ended {
                    tokens.push(i64::from(self.tokenizer.eos));
                }
                (tokens, prompt)
            })
            .collect();
        Batch::of(seqs, i64::from(self.tokenizer.eos))
    }

    /// GRPO on `samples` (prompts are questions, completions shared text;
    /// advantages group-normalised). See [`grpo`].
    pub fn grpo_step(&mut self, samples: &[Sample], lr: f64, clip: Clip) -> Result<(f32, f32), TrainerError> {
        let b = self.batch(samples);
        let adv: Vec<f32> = samples.iter().map(|s| s.advantage).collect();
        let config = self.config.clone();
        let forward = |params: &[f32], device: &Device| {
            let model = flat::load(Llama::new(&config, device), params)?;
            let logp = token_logp(&config, &model, &b, device);
            Ok((model, logp))
        };
        grpo(&mut self.state, &b, &adv, lr, clip, &forward)
    }
}

/// Per-token log-probabilities `[n, t]` of `b`'s targets under `model`.
fn token_logp(config: &LlamaConfig, model: &Llama, b: &Batch, device: &Device) -> Tensor<2> {
    let x = Tensor::<2, Int>::from_data(TensorData::new(b.x.clone(), [b.n, b.t]), device);
    let y = Tensor::<3, Int>::from_data(TensorData::new(b.y.clone(), [b.n, b.t, 1]), device);
    let logits = model.forward(config, x, &mut KvCache::default());
    log_softmax(logits, 2).gather(2, y).reshape([b.n, b.t])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_text_is_printable_ascii_within_the_bound() {
        assert_eq!(shared_text("25\nok é", 20), "25 ok  ");
        assert_eq!(shared_text("abcdef", 3), "abc");
    }
}
