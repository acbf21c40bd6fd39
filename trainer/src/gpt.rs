//! The GPT of the zoo: `lipsum-gpt` (characters of `LIBER_PRIMUS`) and, with another
//! [`Shape`], `brown-gpt` (see [`crate::brown`]).
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

/// The size of a GPT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Context length (tokens per window).
    pub context: usize,
    /// Model width.
    pub d_model: usize,
    /// Number of transformer blocks.
    pub layers: usize,
    /// Attention heads per block.
    pub heads: usize,
}

/// `lipsum-gpt`'s shape.
pub(crate) const LIPSUM: Shape = Shape { context: 64, d_model: 64, layers: 2, heads: 4 };
/// Context length of `lipsum-gpt`.
const CONTEXT: usize = LIPSUM.context;
/// At most this many held-out windows are evaluated.
pub(crate) const EVAL_WINDOWS: usize = 64;

/// Multi-head causal self-attention.
#[derive(Module, Debug)]
pub(crate) struct Attention {
    qkv: Linear,
    proj: Linear,
    heads: usize,
}

impl Attention {
    fn new(s: &Shape, device: &Device) -> Self {
        Self {
            qkv: LinearConfig::new(s.d_model, 3 * s.d_model).init(device),
            proj: LinearConfig::new(s.d_model, s.d_model).init(device),
            heads: s.heads,
        }
    }

    /// `x`: `[b, t, d]`, `mask`: `[t, t]` additive (0 on and below the diagonal, a large
    /// negative number above) -> `[b, t, d]`.
    fn forward(&self, x: Tensor<3>, mask: Tensor<2>) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let heads = self.heads;
        let dh = d / heads;
        let qkv = self.qkv.forward(x); // [b, t, 3d]
        let heads = |i: usize| {
            qkv.clone()
                .narrow(2, i * d, d) // [b, t, d]
                .reshape([b, t, heads, dh])
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
    fn new(s: &Shape, device: &Device) -> Self {
        let d = s.d_model;
        Self {
            ln1: LayerNormConfig::new(d).init(device),
            attn: Attention::new(s, device),
            ln2: LayerNormConfig::new(d).init(device),
            fc1: LinearConfig::new(d, 4 * d).init(device),
            fc2: LinearConfig::new(4 * d, d).init(device),
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
    /// The structure with lazy parameters, for a vocabulary of `vocab` tokens.
    pub fn new(vocab: usize, s: &Shape, device: &Device) -> Self {
        Self {
            tok_emb: EmbeddingConfig::new(vocab, s.d_model).init(device),
            pos_emb: EmbeddingConfig::new(s.context, s.d_model).init(device),
            blocks: (0..s.layers).map(|_| Block::new(s, device)).collect(),
            ln_f: LayerNormConfig::new(s.d_model).init(device),
            head: LinearConfig::new(s.d_model, vocab).init(device),
        }
    }

    /// `tokens`: `[b, t]` with `t <= context` -> logits `[b, t, vocab]`.
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
}

/// Inputs `[n, context]` and flattened targets (`n * context`) for windows of `tokens`
/// starting at `starts`.
pub(crate) fn windows<T: Copy + Into<i64>>(
    tokens: &[T],
    context: usize,
    starts: &[usize],
    device: &Device,
) -> (Tensor<2, Int>, Vec<i64>) {
    let mut x = Vec::with_capacity(starts.len() * context);
    let mut y = Vec::with_capacity(starts.len() * context);
    for &s in starts {
        x.extend(tokens[s..s + context].iter().map(|&t| t.into()));
        y.extend(tokens[s + 1..s + context + 1].iter().map(|&t| t.into()));
    }
    let x = Tensor::from_data(TensorData::new(x, [starts.len(), context]), device);
    (x, y)
}

/// Logits flattened to `[n * t, vocab]`.
pub(crate) fn flat_logits(model: &Gpt, x: Tensor<2, Int>) -> Tensor<2> {
    let logits = model.forward(x); // [n, t, vocab]
    let [n, t, v] = logits.dims();
    logits.reshape([n * t, v])
}

/// Size of the vocabulary of `lipsum-gpt`.
pub(crate) fn vocab_size() -> usize {
    Corpus::vocab().len()
}

impl Task for LipsumTask {
    type Model = Gpt;

    fn build(&self, device: &Device) -> Gpt {
        Gpt::new(self.corpus.vocab.len(), &LIPSUM, device)
    }

    fn sample(&self, rng: &mut Rng, batch_size: usize) -> Vec<usize> {
        let span = self.corpus.train.len() - CONTEXT; // > 0, checked by Corpus::load
        (0..batch_size).map(|_| rng.below(span)).collect()
    }

    fn batch_loss(&self, model: &Gpt, batch: &[usize], device: &Device) -> Tensor<1> {
        let (x, y) = windows(&self.corpus.train, CONTEXT, batch, device);
        cross_entropy(flat_logits(model, x), int_tensor(y, device))
    }

    fn evaluate(&self, model: &Gpt, device: &Device) -> Result<Eval, TrainerError> {
        // Non-overlapping windows from the start of the held-out tail, at most EVAL_WINDOWS.
        let n = ((self.corpus.heldout.len() - 1) / CONTEXT).min(EVAL_WINDOWS);
        let starts: Vec<usize> = (0..n).map(|i| i * CONTEXT).collect();
        let (x, y) = windows(&self.corpus.heldout, CONTEXT, &starts, device);
        eval_logits(flat_logits(model, x), &y, device)
    }
}
