//! `lipsum-gpt`: a small character-level causal transformer on `LIBER_PRIMUS`.
//!
//! Pre-LayerNorm blocks, learned positional embedding, no dropout (so training is a pure
//! function of its inputs). Attention is written out by hand with an additive causal mask.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::data::Corpus;
use crate::error::TrainerError;
use crate::rng::Rng;
use crate::task::{Eval, Task, cross_entropy, eval_logits, int_tensor};

/// Context length (tokens per window).
pub(crate) const CONTEXT: usize = 64;
/// Model width.
pub(crate) const D_MODEL: usize = 64;
/// Number of transformer blocks.
pub(crate) const LAYERS: usize = 2;
/// Attention heads per block.
pub(crate) const HEADS: usize = 4;
/// Hidden width of the block MLP (4x).
pub(crate) const D_FF: usize = 4 * D_MODEL;
/// At most this many held-out windows are evaluated.
pub(crate) const EVAL_WINDOWS: usize = 64;

/// Multi-head causal self-attention.
#[derive(Module, Debug)]
pub(crate) struct Attention {
    qkv: Linear,
    proj: Linear,
}

impl Attention {
    fn new(device: &Device) -> Self {
        Self {
            qkv: LinearConfig::new(D_MODEL, 3 * D_MODEL).init(device),
            proj: LinearConfig::new(D_MODEL, D_MODEL).init(device),
        }
    }

    /// `x`: `[b, t, d]`, `mask`: `[t, t]` additive (0 on and below the diagonal, a large
    /// negative number above) -> `[b, t, d]`.
    fn forward(&self, x: Tensor<3>, mask: Tensor<2>) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let dh = d / HEADS;
        let qkv = self.qkv.forward(x); // [b, t, 3d]
        let heads = |i: usize| {
            qkv.clone()
                .narrow(2, i * d, d) // [b, t, d]
                .reshape([b, t, HEADS, dh])
                .swap_dims(1, 2) // [b, h, t, dh]
        };
        let (q, k, v) = (heads(0), heads(1), heads(2));
        let scale = 1.0 / (dh as f32).sqrt();
        let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale); // [b, h, t, t]
        let scores = scores + mask.reshape([1, 1, t, t]);
        let weights = softmax(scores, 3); // [b, h, t, t]
        let y = weights.matmul(v); // [b, h, t, dh]
        let y = y.swap_dims(1, 2).reshape([b, t, d]); // [b, t, d]
        self.proj.forward(y)
    }
}

/// One pre-LayerNorm transformer block.
#[derive(Module, Debug)]
pub(crate) struct Block {
    ln1: LayerNorm,
    attn: Attention,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl Block {
    fn new(device: &Device) -> Self {
        Self {
            ln1: LayerNormConfig::new(D_MODEL).init(device),
            attn: Attention::new(device),
            ln2: LayerNormConfig::new(D_MODEL).init(device),
            fc1: LinearConfig::new(D_MODEL, D_FF).init(device),
            fc2: LinearConfig::new(D_FF, D_MODEL).init(device),
        }
    }

    /// `x`: `[b, t, d]` -> `[b, t, d]`.
    fn forward(&self, x: Tensor<3>, mask: Tensor<2>) -> Tensor<3> {
        let x = x.clone() + self.attn.forward(self.ln1.forward(x), mask);
        let h = gelu(self.fc1.forward(self.ln2.forward(x.clone()))); // [b, t, 4d]
        x + self.fc2.forward(h)
    }
}

/// The character-level GPT.
#[derive(Module, Debug)]
pub(crate) struct Gpt {
    tok_emb: Embedding,
    pos_emb: Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    head: Linear,
}

impl Gpt {
    /// The structure with lazy parameters, for a vocabulary of `vocab` characters.
    pub fn new(vocab: usize, device: &Device) -> Self {
        Self {
            tok_emb: EmbeddingConfig::new(vocab, D_MODEL).init(device),
            pos_emb: EmbeddingConfig::new(CONTEXT, D_MODEL).init(device),
            blocks: (0..LAYERS).map(|_| Block::new(device)).collect(),
            ln_f: LayerNormConfig::new(D_MODEL).init(device),
            head: LinearConfig::new(D_MODEL, vocab).init(device),
        }
    }

    /// `tokens`: `[b, t]` with `t <= CONTEXT` -> logits `[b, t, vocab]`.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let [_, t] = tokens.dims();
        let device = tokens.device();
        let positions = Tensor::<1, Int>::arange(0..t as i64, &device).reshape([1, t]);
        let mut x = self.tok_emb.forward(tokens) + self.pos_emb.forward(positions); // [b, t, d]
        let mask = causal_mask(t, &device);
        for block in &self.blocks {
            x = block.forward(x, mask.clone());
        }
        self.head.forward(self.ln_f.forward(x)) // [b, t, vocab]
    }
}

/// `[t, t]` additive causal mask: 0 where key <= query, -1e9 where the key is in the future.
fn causal_mask(t: usize, device: &Device) -> Tensor<2> {
    let values: Vec<f32> = (0..t * t).map(|i| if i % t > i / t { -1.0e9 } else { 0.0 }).collect();
    Tensor::from_data(TensorData::new(values, [t, t]), device)
}

/// Next-character prediction on `LIBER_PRIMUS`.
pub(crate) struct LipsumTask {
    corpus: Corpus,
}

impl LipsumTask {
    /// Tokenises and splits the text.
    pub fn new() -> Result<Self, TrainerError> {
        Ok(Self { corpus: Corpus::load(CONTEXT + 1)? })
    }

    /// Inputs `[n, CONTEXT]` and flattened targets (`n * CONTEXT`) for windows of `tokens`
    /// starting at `starts`.
    fn windows(tokens: &[i64], starts: &[usize], device: &Device) -> (Tensor<2, Int>, Vec<i64>) {
        let mut x = Vec::with_capacity(starts.len() * CONTEXT);
        let mut y = Vec::with_capacity(starts.len() * CONTEXT);
        for &s in starts {
            x.extend_from_slice(&tokens[s..s + CONTEXT]);
            y.extend_from_slice(&tokens[s + 1..s + CONTEXT + 1]);
        }
        let x = Tensor::from_data(TensorData::new(x, [starts.len(), CONTEXT]), device);
        (x, y)
    }

    /// Logits flattened to `[n * CONTEXT, vocab]`.
    fn flat_logits(model: &Gpt, x: Tensor<2, Int>) -> Tensor<2> {
        let logits = model.forward(x); // [n, CONTEXT, vocab]
        let [n, t, v] = logits.dims();
        logits.reshape([n * t, v])
    }
}

/// Size of the vocabulary of `lipsum-gpt`.
pub(crate) fn vocab_size() -> usize {
    Corpus::vocab().len()
}

impl Task for LipsumTask {
    type Model = Gpt;

    fn build(&self, device: &Device) -> Gpt {
        Gpt::new(self.corpus.vocab.len(), device)
    }

    fn sample(&self, rng: &mut Rng, batch_size: usize) -> Vec<usize> {
        let span = self.corpus.train.len() - CONTEXT; // > 0, checked by Corpus::load
        (0..batch_size).map(|_| rng.below(span)).collect()
    }

    fn batch_loss(&self, model: &Gpt, batch: &[usize], device: &Device) -> Tensor<1> {
        let (x, y) = Self::windows(&self.corpus.train, batch, device);
        cross_entropy(Self::flat_logits(model, x), int_tensor(y, device))
    }

    fn evaluate(&self, model: &Gpt, device: &Device) -> Result<Eval, TrainerError> {
        // Non-overlapping windows from the start of the held-out tail, at most EVAL_WINDOWS.
        let n = ((self.corpus.heldout.len() - 1) / CONTEXT).min(EVAL_WINDOWS);
        let starts: Vec<usize> = (0..n).map(|i| i * CONTEXT).collect();
        let (x, y) = Self::windows(&self.corpus.heldout, &starts, device);
        eval_logits(Self::flat_logits(model, x), &y, device)
    }
}
